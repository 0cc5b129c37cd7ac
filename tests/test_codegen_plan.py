"""What generated code computes, and the checks around it, where a hand-written closed form
sets the pace (issue 25): a declared-symmetric argument checked in one pass where it is
exactly symmetric (and against the tolerance, every entry, where it is not); one Cholesky
factorisation where the results hold chol(S) beside S⁻¹, a solve with S or log det S; a
scalar declared positive refused, as evaluate refuses it, where its value is not; NumPy and
PyTorch code that deletes each temporary after its last use."""
import inspect
import re

import numpy as np
import pytest

import matdiff as md
from matdiff.evaluate import check_symmetric

from .test_cholesky import _run, _used
from .test_solves import BACKENDS, _backend


def _tolerance(m):
    scale = np.abs(m).max()
    return max(100 * np.finfo(m.dtype).eps * scale, 1e-12 * scale)


def _spd(rng, n):
    q = rng.standard_normal((n, n))
    return q @ q.T / n + np.eye(n)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_symmetry_check_reads_every_entry(dtype):
    """A matrix over three 128-wide tiles (n = 300), one entry moved in turn anywhere above or
    below the diagonal, by a little (within 100 units of its precision: passes, as before) or
    by more (refused): the check's verdict is max |S − Sᵀ| against the tolerance every time."""
    rng = np.random.default_rng(1)
    base = _spd(rng, 300).astype(dtype)
    assert np.array_equal(base, base.T)
    check_symmetric("S", base)  # exactly symmetric: the one pass
    tol = _tolerance(base)
    for i, j in [(0, 1), (5, 299), (299, 5), (130, 129), (140, 260), (299, 298), (200, 10)]:
        for step in (0.2 * tol, 5 * tol):
            m = base.copy()
            m[i, j] += dtype(step)
            refused = not np.abs(m.astype(float) - m.T.astype(float)).max() <= tol
            assert refused == (step > tol), (i, j, step)
            if refused:
                with pytest.raises(md.EvaluationError, match="declared symmetric but its array is not"):
                    check_symmetric("S", m)
            else:
                check_symmetric("S", m)
    m = base.copy()
    m[7, 7] = np.nan  # on the diagonal: equal to its transpose's entry, but not to itself
    with pytest.raises(md.EvaluationError, match="declared symmetric"):
        check_symmetric("S", m)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_compiled_function_checks_symmetry_on_its_fast_path(backend):
    """The Gaussian NLL's gradient by μ with Σ spd, called as the benchmark calls it (arrays of
    the backend's type): an asymmetric S in the last tile is refused, a symmetric one gives
    evaluate's value."""
    _backend(backend)
    x, mu, S = md.vector("x", "n"), md.vector("mu", "n"), md.matrix("S", "n", "n", spd=True)
    g = md.grad((x - mu).T @ md.inv(S) @ (x - mu) / 2 + md.logdet(S) / 2, mu)
    fn = md.compile(g, backend=backend)
    rng = np.random.default_rng(2)
    values = {"x": rng.standard_normal(200), "mu": rng.standard_normal(200), "S": _spd(rng, 200)}
    np.testing.assert_allclose(_run(fn, backend, values, np.float64), g.evaluate(values), rtol=1e-10)
    bad = values["S"].copy()
    bad[190, 40] += 1e-6
    with pytest.raises(md.EvaluationError, match="S is declared symmetric but its array is not"):
        _run(fn, backend, dict(values, S=bad), np.float64)
    assert md.check(md.sum(md.inv(S) @ (x - mu)), mu) < 1e-6


def _factorisations(source: str) -> int:
    body = source.partition("\ndef f(")[2]
    return len(re.findall(r"cholesky\(|cho_factor\(|cholesky_ex\(|lu_factor\(|\binv\(", body))


S = md.matrix("S", "n", "n", spd=True)
a = md.vector("a", "n")
SHARED = {
    "chol(S), S⁻¹": lambda: [md.cholesky(S), md.inv(S)],
    "chol(S), S⁻¹a, log det S": lambda: [md.cholesky(S), md.inv(S) @ a, md.logdet(S)],
    "chol(S)S⁻¹": lambda: md.cholesky(S) @ md.inv(S),
    "f = log det S + aᵀchol(S)a, ∇f": lambda: [md.cholesky(S), md.grad(md.logdet(S) + a.T @ md.cholesky(S) @ a, S)],
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(SHARED))
def test_chol_beside_an_inverse_factorises_once(name, backend):
    """chol(S) and S⁻¹ (or a solve with S, or log det S) in one compiled function: the L of
    chol(S) serves the solves, so the source factorises S once; values are evaluate's."""
    _backend(backend)
    outputs = SHARED[name]()
    source = md.codegen(outputs, backend=backend)
    assert _factorisations(source) == 1, source
    rng = np.random.default_rng(3)
    values = {"S": _spd(rng, 5), "a": rng.standard_normal(5)}
    exprs = outputs if isinstance(outputs, list) else [outputs]
    fn = md.compile(exprs, backend=backend)
    got = _call(fn, backend, {k: v for k, v in values.items() if k in inspect.signature(fn).parameters},
                len(exprs))
    for e, out in zip(exprs, got, strict=True):
        np.testing.assert_allclose(out, e.evaluate(_used(e, values)), rtol=1e-10, atol=1e-12)
    f = md.logdet(S) + a.T @ md.cholesky(S) @ a
    assert md.check(f, S, order=1) < 1e-6 and md.check(md.sum(md.inv(S) @ a), S) < 1e-6


def _call(fn, backend, values, count):
    """fn's ``count`` outputs, as NumPy arrays, for float64 values as the backend's arrays."""
    if backend == "jax":
        import jax

        with jax.enable_x64(True):
            got = fn(**_native(backend, values))
    else:
        got = fn(**_native(backend, values))
    return [np.asarray(r) for r in (got if count > 1 else [got])]


M, z = md.matrix("M", "m", "k"), md.vector("z", "m")
LAM = md.scalar("lam", positive=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_compiled_function_refuses_a_positive_scalar_that_is_not(backend):
    """∇ zᵀM(MᵀM + λI)⁻¹Mᵀz with λ declared positive solves by Cholesky; λ ≤ 0 or NaN is
    refused with evaluate's message (λ = −0.5 leaves MᵀM + λI definite here, so the
    factorisation alone would not tell), λ > 0 gives evaluate's value."""
    _backend(backend)
    f = z.T @ M @ md.inv(M.T @ M + LAM * md.eye("k")) @ M.T @ z
    g = md.grad(f, z)
    fn = md.compile(g, backend=backend)
    assert "cho" in fn.source
    rng = np.random.default_rng(4)
    values = {"M": rng.standard_normal((12, 3)), "z": rng.standard_normal(12), "lam": 0.7}
    np.testing.assert_allclose(_run(fn, backend, values, np.float64), g.evaluate(values), rtol=1e-10)
    assert md.check(f, z) < 1e-6
    for bad in (-0.5, 0.0, np.nan):
        with pytest.raises(md.EvaluationError) as want:
            g.evaluate(dict(values, lam=bad))
        assert "is declared positive (positive=True)" in str(want.value)
        with pytest.raises(md.EvaluationError) as got:
            _run(fn, backend, dict(values, lam=bad), np.float64)
        assert str(got.value) == str(want.value)
        with pytest.raises(md.EvaluationError, match="declared positive"):  # a Python float
            fn(**{k: (float(bad) if k == "lam" else v) for k, v in _native(backend, values).items()})


def _native(backend, values):
    """The values as the backend's own arrays (the compiled function's fast path)."""
    if backend == "numpy":
        return {k: np.asarray(v) for k, v in values.items()}
    if backend == "torch":
        import torch

        return {k: torch.as_tensor(np.asarray(v)) for k, v in values.items()}
    import jax.numpy as jnp

    return {k: jnp.asarray(v) for k, v in values.items()}


NX, W1, W2, NY = md.matrix("X", "n", "d"), md.matrix("W1", "d", "h"), md.matrix("W2", "h", "c"), md.matrix("Y", "n", "c")


@pytest.mark.parametrize("backend", BACKENDS)
def test_temporaries_are_freed_after_their_last_use(backend):
    """∇W₁‖σ(XW₁)W₂ − Y‖²: NumPy and PyTorch code deletes each temporary after the line that
    reads it last (never an argument or a result, and none just before the return), so that
    the next n × h array reuses its memory; JAX's code, which jit plans, has no ``del``.
    Values are evaluate's, and the gradient is checked by differences."""
    _backend(backend)
    f = md.norm(md.sigmoid(NX @ W1) @ W2 - NY) ** 2
    g = md.grad(f, W1)
    source = md.codegen(g, backend=backend)
    body = source.partition("\ndef f(")[2].splitlines()
    deleted = [x for line in body if line.strip().startswith("del ") for x in line.strip()[4:].split(", ")]
    if backend == "jax":
        assert not deleted, source
    else:
        assert len(deleted) >= 5 and all(re.fullmatch(r"t\d+", x) for x in deleted), source
        returned = body[-1].strip().removeprefix("return ")
        assert returned not in deleted and not body[-2].strip().startswith("del "), source
        for x in deleted:  # deleted after its last use, once
            at = next(i for i, line in enumerate(body) if line.strip().startswith("del ") and re.search(rf"\b{x}\b", line))
            assert deleted.count(x) == 1 and not any(re.search(rf"\b{x}\b", line) for line in body[at + 1:]), x
    rng = np.random.default_rng(5)
    values = {"X": rng.standard_normal((30, 4)), "W1": rng.standard_normal((4, 3)),
              "W2": rng.standard_normal((3, 2)), "Y": rng.standard_normal((30, 2))}
    fn = md.compile(g, backend=backend)
    np.testing.assert_allclose(_run(fn, backend, values, np.float64), g.evaluate(values), rtol=1e-10)
    assert md.check(f, W1) < 1e-6


def _written_into(body: str) -> list:
    """The temporaries a product is written into: each is named on two lines but its
    ``del``, its own (an arithmetic result, another product written in place, or an entry of
    _sigmoids' pair) and the product's."""
    into = re.findall(r"_mul_into\((t\d+), t\d+\)", body)
    for x in into:
        lines = [line.split("  # ")[0] for line in body.splitlines()
                 if re.search(rf"\b{x}\b", line.split("  # ")[0]) and not line.strip().startswith("del ")]
        assert len(lines) == 2 and lines[0].strip().startswith(f"{x} = "), body
        assert re.search(r" [*@+-] |\[[01]\]$| = _mul_into\(", lines[0]), body
    return into


def test_a_dying_temporary_takes_its_product_in_place():
    """∇W₁‖σ(XW₁)W₂ − Y‖² in NumPy: σ(u) ⊙ σ(−u) is written into σ(−u) and its product with
    the back-propagated error into that, ``_mul_into`` (two n × h arrays fewer); σ(u), which
    another product reads, and the arguments are never written.  Values are evaluate's in
    float64 and float32, and mixed dtypes fall back to a new array of the promoted dtype."""
    f = md.norm(md.sigmoid(NX @ W1) @ W2 - NY) ** 2
    g = md.grad(f, W1)
    source = md.codegen(g)
    body = source.partition("\ndef f(")[2]
    into = _written_into(body)
    assert len(into) == 2, source
    sigma = re.search(r"(t\d+) = t\d+\[0\]", body).group(1)
    assert sigma not in into, source
    rng = np.random.default_rng(6)
    values = {"X": rng.standard_normal((300, 4)), "W1": rng.standard_normal((4, 3)),
              "W2": rng.standard_normal((3, 2)), "Y": rng.standard_normal((300, 2))}
    copies = {k: v.copy() for k, v in values.items()}
    fn = md.compile(g)
    want = g.evaluate(values)
    for dtype, tol in ((np.float64, 1e-10), (np.float32, 1e-4)):
        got = fn(**{k: v.astype(dtype) for k, v in values.items()})
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    mixed = dict(values, W2=values["W2"].astype(np.float32))
    np.testing.assert_allclose(fn(**mixed), want, rtol=1e-6)
    assert fn(**mixed).dtype == np.float64
    for k, v in values.items():
        np.testing.assert_array_equal(v, copies[k])
    assert md.check(f, W1) < 1e-6


def test_a_temporary_read_twice_or_a_view_is_not_written_into():
    """(XW)ᵀ ⊙ (XW)ᵀ… : products whose operands another line reads, or that are views (a
    transpose), keep ``a * b``."""
    A, B = md.matrix("A", "n", "n"), md.matrix("B", "n", "n")
    e = md.sum((A @ B) * (A @ B).T * md.exp(A @ B))
    source = md.codegen(e)
    assert len(_written_into(source.partition("\ndef f(")[2])) == 1, source  # BᵀAᵀ, not AB
    rng = np.random.default_rng(2)
    values = {"A": rng.standard_normal((5, 5)), "B": rng.standard_normal((5, 5))}
    np.testing.assert_allclose(md.compile(e)(**values), e.evaluate(values), rtol=1e-12)


# products whose greedy order (the pair with the smallest result first) builds a 4- or
# 5-index intermediate where summing a label first does not, found in the solve sweep's
# 4-index Jacobians, and matrix chains and a star, where the greedy order is optimal
ORDERS = ["eb,de,ac,ae->abcd", "ef,eg,abef,cg,fd->abcd", "ef,ed,abef,cg,fg->abcd",
          "ef,eg,hd,abef,ci,fi,hg->abcd", "b,c,c,ba->ab", "ab,bc,cd,de->ae", "a,ab,bc,c->",
          "ab,ac,ad,ae->bcde", "abc,cd,de,e->ab"]


@pytest.mark.parametrize("equation", ORDERS)
def test_a_product_is_multiplied_in_its_cheapest_order(equation):
    """plan._steps orders a product of up to eight factors (no inverse among them) at the
    optimum of opt_einsum's exhaustive search, priced by one cost model, where the greedy
    order cost up to 66 times as much; and its steps, carried out with np.einsum, give the
    product."""
    oe = pytest.importorskip("opt_einsum")
    from matdiff.plan import _labels_code, _steps

    inputs, out = equation.split("->")
    code = {c: i for i, c in enumerate(sorted(set(equation) - set(",->")))}
    labs = [tuple(code[c] for c in term) for term in inputs.split(",")]
    out = tuple(code[c] for c in out)
    size = dict.fromkeys(code.values(), 100)
    steps = _steps(labs, out, size)
    shapes = [(100,) * len(lab) for lab in labs]
    planned = oe.contract_path(equation, *shapes, shapes=True, optimize=[(i, j) for i, j, *_ in steps])[1]
    best = oe.contract_path(equation, *shapes, shapes=True, optimize="optimal")[1]
    assert float(planned.opt_cost) <= 1.1 * float(best.opt_cost), (steps, planned.opt_cost, best.opt_cost)
    rng = np.random.default_rng(0)
    small = [rng.standard_normal((3,) * len(lab)) for lab in labs]
    arrays, current = list(small), list(labs)
    for n, (i, j, keep, _) in enumerate(steps):
        keep = keep if n < len(steps) - 1 else out
        eq = f"{_labels_code(current[i])},{_labels_code(current[j])}->{_labels_code(keep)}"
        result = np.einsum(eq, arrays[i], arrays[j])
        for k in (j, i):
            del arrays[k], current[k]
        arrays.append(result)
        current.append(tuple(keep))
    np.testing.assert_allclose(arrays[0], np.einsum(equation, *small), rtol=1e-12, atol=1e-12)
