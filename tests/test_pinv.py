"""The pseudo-inverse X⁺ and least squares X⁺y as symbols (issue 25): the Golub–Pereyra
derivative at full rank, to second order, against central differences and against JAX's
own derivatives of jnp.linalg.pinv; printed text that reads back in every dialect;
generated code in three backends that agrees with evaluate; and a clear refusal wherever
the rank is not full, since there X⁺ jumps."""
import inspect

import numpy as np
import pytest

import matdiff as md
from tests.test_read_back import _reads_back_or_refuses

TALL, WIDE = (6, 3), (3, 5)
X = md.matrix("X", "n", "k")
Q = md.matrix("Q", "n", "n")  # square: X⁺ = X⁻¹
A = md.matrix("A", "n", "k")
Y = md.matrix("Y", "n", "m")
y = md.vector("y", "n")
b = md.vector("b", "k")


# (name, matdiff function, the same in JAX (jax.numpy, values by name → scalar), variable,
# X's shape)
def _cases():
    return [
        ("‖X⁺y‖² by X, tall", lambda: md.norm(md.pinv(X) @ y) ** 2,
         lambda j, v: j.sum((j.linalg.pinv(v["X"]) @ v["y"]) ** 2), X, TALL),
        ("‖X⁺y‖² by X, wide", lambda: md.norm(md.pinv(X) @ y) ** 2,
         lambda j, v: j.sum((j.linalg.pinv(v["X"]) @ v["y"]) ** 2), X, WIDE),
        ("‖X⁺y‖² by y", lambda: md.norm(md.pinv(X) @ y) ** 2,
         lambda j, v: j.sum((j.linalg.pinv(v["X"]) @ v["y"]) ** 2), y, TALL),
        ("1ᵀlstsq(X, y) by y", lambda: md.sum(md.lstsq(X, y)),
         lambda j, v: j.sum(j.linalg.pinv(v["X"]) @ v["y"]), y, TALL),
        ("1ᵀlstsq(X, y) by X", lambda: md.sum(md.lstsq(X, y)),
         lambda j, v: j.sum(j.linalg.pinv(v["X"]) @ v["y"]), X, TALL),
        ("bᵀX⁺y by X, tall", lambda: b.T @ md.pinv(X) @ y,
         lambda j, v: v["b"] @ j.linalg.pinv(v["X"]) @ v["y"], X, TALL),
        ("bᵀX⁺y by X, wide", lambda: b.T @ md.pinv(X) @ y,
         lambda j, v: v["b"] @ j.linalg.pinv(v["X"]) @ v["y"], X, WIDE),
        ("tr(AX⁺) by X", lambda: md.trace(A @ md.pinv(X)),
         lambda j, v: j.trace(v["A"] @ j.linalg.pinv(v["X"])), X, TALL),
        ("‖X⁺‖_F² by X", lambda: md.norm(md.pinv(X)) ** 2,
         lambda j, v: j.sum(j.linalg.pinv(v["X"]) ** 2), X, WIDE),
        ("residual ‖XX⁺y − y‖² by X", lambda: md.norm(X @ md.lstsq(X, y) - y) ** 2,
         lambda j, v: j.sum((v["X"] @ j.linalg.pinv(v["X"]) @ v["y"] - v["y"]) ** 2), X, TALL),
        ("residual ‖XX⁺y − y‖² by y", lambda: md.norm(X @ md.lstsq(X, y) - y) ** 2,
         lambda j, v: j.sum((v["X"] @ j.linalg.pinv(v["X"]) @ v["y"] - v["y"]) ** 2), y, TALL),
        ("‖lstsq(X, Y)‖_F² by X", lambda: md.norm(md.lstsq(X, Y)) ** 2,
         lambda j, v: j.sum((j.linalg.pinv(v["X"]) @ v["Y"]) ** 2), X, TALL),
        ("tr(X⁺X) by X (the rank: constant)", lambda: md.trace(md.pinv(X) @ X),
         lambda j, v: j.trace(j.linalg.pinv(v["X"]) @ v["X"]), X, TALL),
        ("tr((XᵀX)⁺) by X", lambda: md.trace(md.pinv(X.T @ X)),
         lambda j, v: j.trace(j.linalg.pinv(v["X"].T @ v["X"])), X, TALL),
        ("1ᵀ(X⁺ ⊙ Aᵀ)1 by X", lambda: md.sum(md.pinv(X) * A.T),
         lambda j, v: j.sum(j.linalg.pinv(v["X"]) * v["A"].T), X, TALL),
        ("aᵀQ⁺y, Q square, by Q", lambda: md.vector("a", "n").T @ md.pinv(Q) @ y,
         lambda j, v: v["a"] @ j.linalg.pinv(v["Q"]) @ v["y"], Q, (4, 4)),
        ("‖X⁺ᵀb‖² by X", lambda: md.norm(md.pinv(X).T @ b) ** 2,
         lambda j, v: j.sum((j.linalg.pinv(v["X"]).T @ v["b"]) ** 2), X, WIDE),
    ]


CASES = _cases()
IDS = [c[0] for c in CASES]


def _values(shape, seed=0):
    rng = np.random.default_rng(seed)
    n, k = shape
    return {"X": rng.standard_normal(shape), "Q": rng.standard_normal((4, 4)) + 3 * np.eye(4),
            "A": rng.standard_normal((n, k)), "Y": rng.standard_normal((n, 2)),
            "y": rng.standard_normal(n), "b": rng.standard_normal(k), "a": rng.standard_normal(4)}


def _used(e, values):
    names = {v.node.name for v in e.variables}
    return {key: val for key, val in values.items() if key in names}


@pytest.mark.parametrize("name, build, jax_f, wrt, shape", CASES, ids=IDS)
def test_second_order_against_central_differences(name, build, jax_f, wrt, shape):
    """md.check: the gradient and the Hessian against central differences of the value."""
    sizes = {"n": shape[0], "k": shape[1], "m": 2}
    assert md.check(build(), wrt, sizes=sizes, seed=1, kinds={"Q": "invertible"}, order=2) < 1e-6, name


@pytest.mark.parametrize("name, build, jax_f, wrt, shape", CASES, ids=IDS)
def test_gradient_and_hessian_match_jax(name, build, jax_f, wrt, shape):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    values = _values(shape, seed=2)
    e = build()
    used = _used(e, values)
    v_name = wrt.node.name

    def f(v):
        return jax_f(jnp, {**used, v_name: v})

    with jax.enable_x64(True):
        point = jnp.asarray(used[v_name])
        want_g = np.asarray(jax.jit(jax.grad(f))(point))  # jitted: 3× faster than op by op
        want_h = np.asarray(jax.jit(jax.hessian(f))(point))
    got_g = md.grad(e, wrt).evaluate(used)
    got_h = md.hessian(e, wrt).evaluate(used)
    scale = max(1.0, np.abs(want_g).max())
    np.testing.assert_allclose(got_g, want_g, rtol=1e-8, atol=1e-9 * scale)
    np.testing.assert_allclose(np.reshape(got_h, want_h.shape), want_h, rtol=1e-7,
                               atol=1e-8 * max(1.0, np.abs(want_h).max()))


@pytest.mark.parametrize("name, build, jax_f, wrt, shape", CASES, ids=IDS)
def test_the_gradient_reads_back_in_every_dialect(name, build, jax_f, wrt, shape):
    g = md.grad(build(), wrt)
    assert {"matdiff", "mc"} <= set(_reads_back_or_refuses(g)), str(g)  # NumPy may refuse 1


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
@pytest.mark.parametrize("name, build, jax_f, wrt, shape", CASES, ids=IDS)
def test_generated_code_agrees_with_evaluate(name, build, jax_f, wrt, shape, backend):
    """Gradients and Hessians, float64 and float32, against evaluate (JAX: the gradients; its
    jit of a 4-index Hessian through an SVD takes half a minute, and the NumPy source is the
    same)."""
    if backend != "numpy":
        pytest.importorskip(backend)
    values = _values(shape, seed=3)
    e = build()
    for result in (md.grad(e, wrt),) + ((md.hessian(e, wrt),) if backend != "jax" else ()):
        fn = md.compile(result, backend=backend)
        used = {p: values[p] for p in inspect.signature(fn).parameters}
        want = result.evaluate(used)
        for dtype, tol in ((np.float64, 1e-9), (np.float32, 2e-3)):
            got = _run(fn, backend, {key: np.asarray(v, dtype=dtype) for key, v in used.items()})
            scale = max(1.0, np.abs(want).max())
            assert np.abs(np.reshape(got, np.shape(want)) - want).max() <= tol * scale, (name, dtype)


def _run(fn, backend, values):
    if backend == "numpy":
        return np.asarray(fn(**values))
    if backend == "jax":
        import jax

        with jax.enable_x64(True):
            return np.asarray(fn(**values))
    import torch

    return fn(**{key: torch.as_tensor(v) for key, v in values.items()}).numpy()


# --------------------------------------------------------------------------- rank and refusals

def _rank_deficient(shape=TALL, seed=0):
    rng = np.random.default_rng(seed)
    n, k = shape
    return rng.standard_normal((n, k - 1)) @ rng.standard_normal((k - 1, k))  # rank k − 1


def test_a_rank_deficient_matrix_is_refused_by_evaluate():
    g = md.grad(md.norm(md.lstsq(X, y)) ** 2, X)
    with pytest.raises(md.EvaluationError, match=r"rank-deficient matrix: rank 2 < min\(6, 3\)"):
        g.evaluate(X=_rank_deficient(), y=np.ones(6))
    with pytest.raises(md.EvaluationError, match="rank-deficient"):
        md.pinv(X).evaluate(X=np.zeros((6, 3)))
    with pytest.raises(md.EvaluationError, match="NaN or infinite"):
        md.pinv(X).evaluate(X=np.full((6, 3), np.nan))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_rank_deficient_matrix_is_refused_by_generated_code(backend):
    pytest.importorskip(backend)
    fn = md.compile(md.grad(md.norm(md.lstsq(X, y)) ** 2, X), backend=backend)
    with pytest.raises(md.EvaluationError, match="pinv of a rank-deficient matrix"):
        _run(fn, backend, {"X": _rank_deficient(), "y": np.ones(6)})
    # full rank, however badly conditioned, is answered
    x = _rank_deficient() + 1e-6 * np.random.default_rng(1).standard_normal(TALL)
    assert np.isfinite(_run(fn, backend, {"X": x, "y": np.ones(6)})).all()


def test_a_rank_deficient_matrix_gives_nan_under_jax():
    pytest.importorskip("jax")
    fn = md.compile(md.grad(md.norm(md.lstsq(X, y)) ** 2, X), backend="jax")
    assert np.isnan(_run(fn, "jax", {"X": _rank_deficient(), "y": np.ones(6)})).all()


def test_generated_least_squares_is_accurate_at_high_condition():
    """X⁺y at cond(X) = 1e8 against mpmath, y in and out of X's range, over 12 matrices: every
    error within the backward-stable bound 20·κ·ε·‖X⁺y‖, and the median within 2.5× of
    numpy.linalg.lstsq's (LAPACK's gelsd); X⁺y is V(Σ⁻¹(Uᵀy)), never the product with a
    formed X⁺, which is 3.4× (tests measure; docs/conventions.md)."""
    mp = pytest.importorskip("mpmath")
    fn = md.compile(md.lstsq(X, y))
    ratios = {True: [], False: []}
    for seed in range(12):
        rng = np.random.default_rng(seed)
        u = np.linalg.qr(rng.standard_normal((8, 4)))[0]
        v = np.linalg.qr(rng.standard_normal((4, 4)))[0]
        x = (u * np.logspace(0, -8, 4)) @ v.T
        for inside in (True, False):
            yy = x @ rng.standard_normal(4) if inside else rng.standard_normal(8)
            mp.mp.dps = 50
            xm, ym = mp.matrix(x.tolist()), mp.matrix(yy.tolist())
            exact = np.array(((xm.T * xm) ** -1 * xm.T * ym).tolist(), dtype=float).ravel()
            ours = np.abs(fn(X=x, y=yy) - exact).max()
            hand = np.abs(np.linalg.lstsq(x, yy, rcond=None)[0] - exact).max()
            assert ours <= 20 * 1e8 * np.finfo(float).eps * np.abs(exact).max(), (seed, inside, ours)
            ratios[inside].append(ours / hand)
    assert np.median(ratios[True]) <= 2.5 and np.median(ratios[False]) <= 1.1, ratios


def test_shapes_and_messages():
    with pytest.raises(md.ShapeError, match="pinv takes a matrix.*one-column matrix"):
        md.pinv(y)
    with pytest.raises(md.ShapeError, match="as many rows as X"):
        md.lstsq(X, b)
    assert md.pinv(X).shape == ("k", "n") and md.lstsq(X, Y).shape == ("k", "m")
    with pytest.raises(md.ShapeError) as err:
        md.parse("lstsq(X, b)", X="matrix(n, k)", b="vector(k)")
    assert "as many rows as X" in str(err.value) and "^" in str(err.value)
    with pytest.raises(md.NotSupportedError, match="SymPy has no matrix expression for pinv"):
        md.to_sympy(md.pinv(X))


@pytest.mark.parametrize("text, dialect", [("pinv(X)*y", "matrixcalculus"), ("lstsq(X, y)", "matrixcalculus"),
                                           ("pinv(X) @ y", "numpy"),
                                           ("X⁺y", "matdiff")])
def test_every_dialect_reads_it(text, dialect):
    e = md.parse(text, dialect=dialect, X="matrix(n, k)", y="vector(n)")
    values = _values(TALL)
    np.testing.assert_allclose(e.evaluate(X=values["X"], y=values["y"]),
                               np.linalg.pinv(values["X"]) @ values["y"], rtol=1e-12)


def test_printed_as_a_person_writes_it():
    assert str(md.lstsq(X, y)) == "X⁺y"
    assert md.latex(md.pinv(X).T) == "X^{+\\top}"
    assert str(md.grad(md.sum(md.lstsq(X, y)), y)) == "X⁺ᵀ1"
    # X⁺ is a symbol and a mark: never named "S where S = X⁺"
    assert "where" not in str(md.grad(md.norm(md.lstsq(X, y)) ** 2, X))


def test_the_derivative_of_the_rank_is_zero():
    """tr(X⁺X) = rank X = k at full column rank: its gradient vanishes."""
    g = md.grad(md.trace(md.pinv(X) @ X), X)
    assert np.abs(g.evaluate(X=_values(TALL)["X"])).max() < 1e-12


def test_a_pseudo_inverse_meeting_a_tensor_is_applied_from_its_svd():
    """J_S of X⁺tanh(chol(S)): X⁺ meets the Cholesky factor's 3-index differential, which the
    code now reads as a matrix (its other labels flattened) to apply V Σ⁻¹ Uᵀ, X⁺ not formed."""
    S = md.matrix("S", "n", "n", spd=True)
    X = md.matrix("X", "n", "k")
    J = md.jacobian(md.pinv(X) @ md.tanh(md.cholesky(S)), S)
    source = md.codegen(J)
    assert "reshape((-1,)" in source and "_pinv_factors" in source
    rng = np.random.default_rng(0)
    q = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    s = (q * [1.0, 2.0, 3.0]) @ q.T
    values = {"S": (s + s.T) / 2, "X": rng.standard_normal((3, 2))}
    scope: dict = {}
    exec(source, scope)  # noqa: S102 — our own generated code
    got = scope["f"](**values)
    np.testing.assert_allclose(got, J.evaluate(values), rtol=1e-10, atol=1e-14)
    d = rng.standard_normal((3, 3))
    d = (d + d.T) / 2

    def f(sv):
        return np.linalg.pinv(values["X"]) @ np.tanh(np.linalg.cholesky(sv))
    central = (f(values["S"] + 1e-6 * d) - f(values["S"] - 1e-6 * d)) / 2e-6
    np.testing.assert_allclose(np.tensordot(got, d, 2), central, rtol=1e-6, atol=1e-9)
