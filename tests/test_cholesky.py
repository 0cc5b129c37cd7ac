"""The Cholesky factor and positive-definite declarations (issue 25): md.cholesky(S), printed
chol(S) (L where it repeats, "where L = chol(S)"), differentiated as dL = L Φ(L⁻¹ dS L⁻ᵀ);
md.matrix(..., spd=True) and "matrix(n, n) spd" in every door; positive definiteness by
structure (XᵀX + λI with λ > 0 known); generated code that factorises a positive-definite
matrix by Cholesky rather than LU.  Every derivative is checked by central differences to
second order, against jax.grad and jax.hessian, read back from its printed form, and
compiled in three backends and two precisions against evaluate."""
import inspect
import re

import numpy as np
import pytest

import matdiff as md
from matdiff import service
from matdiff.cli import main
from matdiff.ir import Var

from .test_read_back import _reads_back_or_refuses
from .test_solves import _exact_solve  # the exact solution of the float64 system (mpmath)

n = "n"
S = md.matrix("S", n, n, spd=True)
X = md.matrix("X", "m", n)
a, b, x, mu = (md.vector(s, n) for s in ("a", "b", "x", "mu"))
y = md.vector("y", "m")
lam = md.scalar("lam")
I = md.eye(n)  # noqa: E741
L = md.cholesky(S)


def _nll():
    return md.logdet(S) / 2 + (x - mu).T @ md.inv(S) @ (x - mu) / 2


def _ridge():
    return md.norm(md.inv(X.T @ X + 0.5 * I) @ X.T @ y) ** 2


def _ridge_exp():
    return y.T @ X @ md.inv(X.T @ X + md.exp(lam) * I) @ X.T @ y


# JAX's versions of the same functions (S symmetrised first: see _jax_check)
def _j(name):
    import jax.numpy as jnp

    chol, inv = jnp.linalg.cholesky, jnp.linalg.inv
    eye = jnp.eye
    return {
        "tr L": lambda v: jnp.trace(chol(v["S"])),
        "aᵀLa": lambda v: v["a"] @ chol(v["S"]) @ v["a"],
        "aᵀLb by a": lambda v: v["a"] @ chol(v["S"]) @ v["b"],
        "sum L": lambda v: jnp.sum(chol(v["S"])),
        "‖L‖²": lambda v: jnp.sum(chol(v["S"]) ** 2),
        "log det via L": lambda v: 2 * jnp.sum(jnp.log(jnp.diag(chol(v["S"])))),
        "aᵀL⁻¹b": lambda v: v["a"] @ inv(chol(v["S"])) @ v["b"],
        "‖L⁻¹a‖²": lambda v: jnp.sum((inv(chol(v["S"])) @ v["a"]) ** 2),
        "‖L⁻¹a‖² by a": lambda v: jnp.sum((inv(chol(v["S"])) @ v["a"]) ** 2),
        "Σ sin(L)": lambda v: jnp.sum(jnp.sin(chol(v["S"]))),
        "aᵀS⁻¹a": lambda v: v["a"] @ inv(v["S"]) @ v["a"],
        "aᵀS⁻¹a by a": lambda v: v["a"] @ inv(v["S"]) @ v["a"],
        "Gaussian NLL by Σ": lambda v: jnp.linalg.slogdet(v["S"])[1] / 2 +
        (v["x"] - v["mu"]) @ inv(v["S"]) @ (v["x"] - v["mu"]) / 2,
        "Gaussian NLL by μ": lambda v: jnp.linalg.slogdet(v["S"])[1] / 2 +
        (v["x"] - v["mu"]) @ inv(v["S"]) @ (v["x"] - v["mu"]) / 2,
        "ridge by X": lambda v: jnp.sum((inv(v["X"].T @ v["X"] + 0.5 * eye(v["X"].shape[1])) @ v["X"].T
                                         @ v["y"]) ** 2),
        "ridge by y": lambda v: jnp.sum((inv(v["X"].T @ v["X"] + 0.5 * eye(v["X"].shape[1])) @ v["X"].T
                                         @ v["y"]) ** 2),
        "ridge by λ = log of the weight": lambda v: v["y"] @ v["X"] @ inv(
            v["X"].T @ v["X"] + jnp.exp(v["lam"]) * eye(v["X"].shape[1])) @ v["X"].T @ v["y"],
        "tr chol(XᵀX + I)": lambda v: jnp.trace(chol(v["X"].T @ v["X"] + eye(v["X"].shape[1]))),
        "aᵀchol(XᵀX + I)a": lambda v: v["a"] @ chol(v["X"].T @ v["X"] + eye(v["X"].shape[1])) @ v["a"],
        "tr chol(S + e^λ I)": lambda v: jnp.trace(chol(v["S"] + jnp.exp(v["lam"]) * eye(v["S"].shape[0]))),
    }[name]


# (name, function, variable)
CASES = [
    ("tr L", lambda: md.trace(L), S),
    ("aᵀLa", lambda: a.T @ L @ a, S),
    ("aᵀLb by a", lambda: a.T @ L @ b, a),
    ("sum L", lambda: md.sum(L), S),
    ("‖L‖²", lambda: md.sum(L * L), S),
    ("log det via L", lambda: 2 * md.sum(md.log(md.diag(L))), S),
    ("aᵀL⁻¹b", lambda: a.T @ md.inv(L) @ b, S),
    ("‖L⁻¹a‖²", lambda: md.norm(md.inv(L) @ a) ** 2, S),
    ("‖L⁻¹a‖² by a", lambda: md.norm(md.inv(L) @ a) ** 2, a),
    ("Σ sin(L)", lambda: md.sum(md.sin(L)), S),
    ("aᵀS⁻¹a", lambda: a.T @ md.inv(S) @ a, S),
    ("aᵀS⁻¹a by a", lambda: a.T @ md.inv(S) @ a, a),
    ("Gaussian NLL by Σ", _nll, S),
    ("Gaussian NLL by μ", _nll, mu),
    ("ridge by X", _ridge, X),
    ("ridge by y", _ridge, y),
    ("ridge by λ = log of the weight", _ridge_exp, lam),
    ("tr chol(XᵀX + I)", lambda: md.trace(md.cholesky(X.T @ X + I)), X),
    ("aᵀchol(XᵀX + I)a", lambda: a.T @ md.cholesky(X.T @ X + I) @ a, X),
    ("tr chol(S + e^λ I)", lambda: md.trace(md.cholesky(S + md.exp(lam) * I)), lam),
]
IDS = [c[0] for c in CASES]
BACKENDS = ["numpy", "jax", "torch"]


def _values(seed=0, size=4):
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.standard_normal((size, size)))[0]
    spd = (q * rng.uniform(1.0, 3.0, size)) @ q.T
    return {"S": (spd + spd.T) / 2, "X": rng.standard_normal((size + 2, size)),
            **{v: rng.standard_normal(size) for v in ("a", "b", "x", "mu")},
            "y": rng.standard_normal(size + 2), "lam": 0.3}


def _used(e, values):
    names = {v.node.name for v in e.variables}
    return {k: v for k, v in values.items() if k in names}


def test_the_table_has_at_least_fifteen_cases():
    assert len(CASES) >= 15


@pytest.mark.parametrize("name, build, wrt", CASES, ids=IDS)
def test_first_and_second_derivatives_match_central_differences(name, build, wrt):
    assert md.check(build(), wrt, order=2, seed=5) < 1e-6


@pytest.mark.parametrize("name, build, wrt", CASES, ids=IDS)
def test_derivatives_match_jax(name, build, wrt):
    """jax.grad and jax.hessian of the same function, S read through (S + Sᵀ)/2, whose
    derivative is the symmetric one matdiff gives (and the Hessian's, applied to symmetric
    directions, too)."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    f, values = build(), _values(1)
    used = _used(f, values)
    key = wrt.node.name

    def h(arg):
        v = {k: jnp.asarray(val) for k, val in used.items()}
        v[key] = arg
        if "S" in v:
            v["S"] = (v["S"] + v["S"].T) / 2
        return _j(name)(v)

    with jax.enable_x64(True):
        x0 = jnp.asarray(used[key], dtype=jnp.float64)
        g, hess = np.asarray(jax.grad(h)(x0)), np.asarray(jax.hessian(h)(x0))
    np.testing.assert_allclose(md.grad(f, wrt).evaluate(used), g, rtol=1e-9, atol=1e-11)
    H = np.asarray(md.hessian(f, wrt).evaluate(used))
    if wrt.node.symmetric:  # both apply to symmetric directions alike
        rng = np.random.default_rng(2)
        for _ in range(3):
            v = rng.standard_normal(x0.shape)
            v = (v + v.T) / 2
            np.testing.assert_allclose(np.tensordot(H, v, 2), np.tensordot(hess, v, 2), rtol=1e-8, atol=1e-10)
    else:
        np.testing.assert_allclose(H.reshape(hess.shape), hess, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name, build, wrt", CASES, ids=IDS)
def test_the_printed_derivatives_read_back(name, build, wrt):
    f = build()
    assert "matdiff" in _reads_back_or_refuses(md.grad(f, wrt), seed=3), str(md.grad(f, wrt))
    assert "matdiff" in _reads_back_or_refuses(f, seed=3), str(f)
    hess = md.hessian(f, wrt)
    if wrt.ndim < 2 and hess.variables:  # a Hessian by a vector or scalar is a matrix: it reads back too
        assert "matdiff" in _reads_back_or_refuses(hess, seed=3), str(hess)


def _run(fn, backend, values, dtype):
    if backend == "numpy":
        return np.asarray(fn(**{k: np.asarray(v, dtype=dtype) for k, v in values.items()}))
    if backend == "jax":
        import jax

        with jax.enable_x64(dtype == np.float64):
            return np.asarray(fn(**{k: np.asarray(v, dtype=dtype) for k, v in values.items()}))
    import torch

    return fn(**{k: torch.as_tensor(np.asarray(v, dtype=dtype)) for k, v in values.items()}).numpy()


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, build, wrt", CASES, ids=IDS)
def test_compiled_derivatives_agree_with_evaluate(name, build, wrt, backend, dtype):
    if backend != "numpy":
        pytest.importorskip(backend)
    f = build()
    values = _values(4)
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == np.float64 else dict(rtol=2e-3, atol=2e-4)
    for d in (md.grad(f, wrt), md.hessian(f, wrt)):
        fn = md.compile(d, backend=backend)
        args = {p: values[p] for p in inspect.signature(fn).parameters}
        got = _run(fn, backend, args, dtype)
        want = np.asarray(d.evaluate(_used(d, values), sizes={"n": 4, "m": 6}))
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got / scale, want / scale, **tol)
        assert got.dtype == dtype


# --------------------------------------------------------------------------- generated code


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_positive_definite_matrix_is_factorised_by_cholesky_not_lu(backend):
    if backend != "numpy":
        pytest.importorskip(backend)
    else:
        pytest.importorskip("scipy")
    for build, wrt in ((_nll, mu), (_nll, S), (lambda: a.T @ md.inv(S) @ b, a), (_ridge, y)):
        source = md.codegen(md.grad(build(), wrt), backend=backend)
        assert re.search(r"cho_factor\(", source), source
        assert not re.search(r"lu_factor|linalg\.solve\(|slogdet", source), source
        assert len(re.findall(r"^ +\w+ = \S*cho_factor\(", source, re.M)) == 1, source  # one factor
    # a symmetric matrix not known to be definite keeps LU
    T = md.matrix("T", n, n, symmetric=True)
    source = md.codegen(md.grad(a.T @ md.inv(T) @ a, a), backend=backend)
    assert "cho" not in source and "solve(" in source


def test_log_det_and_the_inverse_share_one_cholesky_factor():
    """∇ of ½ log det S + ½ (x − μ)ᵀS⁻¹(x − μ) by S holds S⁻¹ itself: it comes from the
    factor the solves use, and log det S compiled beside it is 2 Σ log Lᵢᵢ of that factor."""
    pytest.importorskip("scipy")
    f = _nll()
    source = md.codegen([f, md.grad(f, S)])
    assert source.count("cho_factor(") == 1 and "inv(" not in source and "slogdet" not in source
    assert "2.0 * np.log(np.diagonal(" in source
    values = _values(6)
    got = md.compile([f, md.grad(f, S)])(**_used(f, values))
    for g, e in zip(got, (f, md.grad(f, S))):
        np.testing.assert_allclose(g, e.evaluate(_used(e, values)), rtol=1e-12, atol=1e-13)


def test_solves_with_the_cholesky_factor_are_triangular():
    pytest.importorskip("scipy")
    source = md.codegen(md.grad(a.T @ md.inv(L) @ b, S))
    assert "solve_triangular(" in source and "inv(" not in source, source
    assert "np.linalg.cholesky(S)" in source


def test_the_structural_test_of_definiteness_is_conservative():
    T, Y = md.matrix("T", n, n, symmetric=True), md.matrix("Y", n, n)
    assert md.positive_definite(S) and md.positive_definite(md.inv(S)) and md.positive_definite(3 * S)
    assert md.positive_definite(X.T @ X + 0.5 * I) and md.positive_definite(X.T @ X + md.exp(lam) * I)
    assert md.positive_definite(Y.T @ S @ Y + S) and md.positive_definite(md.inv(S) + X.T @ X)
    for m in (T, X.T @ X, Y.T @ S @ Y, X.T @ X + lam * I, X.T @ X - 0.5 * I, -S, S - I, Y, md.inv(T)):
        assert not md.positive_definite(m), str(m)
    # each positive definite one is so at random values: its Cholesky factor exists
    values = _values(8)
    values["Y"] = np.random.default_rng(9).standard_normal((4, 4))
    for m in (X.T @ X + 0.5 * I, Y.T @ S @ Y + S, md.inv(S) + X.T @ X):
        np.linalg.cholesky(m.evaluate(_used(m, values)))


# --------------------------------------------------------------------------- accuracy


def _spd_with_condition(cond, size=12, seed=0):
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.standard_normal((size, size)))[0]
    m = (q * np.logspace(0, -np.log10(cond), size)) @ q.T
    return (m + m.T) / 2


@pytest.mark.parametrize("cond", [1e8, 1e12])
@pytest.mark.parametrize("in_range", [True, False], ids=["b = Sc", "b random"])
def test_cholesky_solves_are_as_accurate_as_a_hand_written_solve(cond, in_range):
    """∇_a aᵀS⁻¹b = S⁻¹b at cond(S) = 10⁸ and 10¹², S declared spd, against the exact solution
    (mpmath): within 2× of the hand-written Cholesky solve (scipy's cho_factor and
    cho_solve) at every point, and of np.linalg.solve (LU) in the median over sixteen points —
    at single points either can be the more accurate, by up to 15× at cond 10¹², as rounding
    falls."""
    scipy_linalg = pytest.importorskip("scipy.linalg")
    fn = md.compile(md.grad(a.T @ md.inv(S) @ b, a))
    ratios = []
    for seed in range(16):
        m = _spd_with_condition(cond, seed=seed)
        rng = np.random.default_rng(seed)
        rhs = m @ rng.standard_normal(len(m)) if in_range else rng.standard_normal(len(m))
        exact = _exact_solve(m, rhs)
        err = np.linalg.norm(fn(S=m, b=rhs, a=rhs) - exact)
        hand = np.linalg.norm(scipy_linalg.cho_solve(scipy_linalg.cho_factor(m), rhs) - exact)
        assert err <= 2 * hand + 1e-300, (seed, err, hand)
        ratios.append(err / np.linalg.norm(np.linalg.solve(m, rhs) - exact))
    assert np.median(ratios) <= 2, ratios


@pytest.mark.parametrize("cond", [1e8])
def test_the_cholesky_gradient_is_accurate_where_s_is_ill_conditioned(cond):
    """∇_S aᵀLa at cond(S) = 10⁸ against the same formula in 60-digit arithmetic."""
    mpmath = pytest.importorskip("mpmath")
    m = _spd_with_condition(cond, size=6, seed=3)
    av = np.random.default_rng(4).standard_normal(6)
    g = md.grad(a.T @ L @ a, S)
    with mpmath.workdps(60):
        Sm = mpmath.matrix(m.tolist())
        Lm = mpmath.cholesky(Sm)
        am = mpmath.matrix(av.tolist())
        G = Lm.T * am * am.T  # ∇ = L⁻ᵀ sym(Φ(LᵀaaᵀG)) L⁻¹ with Ḡ = aaᵀ
        P = mpmath.matrix(6, 6)
        for i in range(6):
            for j in range(i + 1):
                P[i, j] = G[i, j] / (2 if i == j else 1)
        Li = mpmath.inverse(Lm)
        E = Li.T * (P + P.T) * Li / 2
        exact = np.array([[float(E[i, j]) for j in range(6)] for i in range(6)])
    for got in (g.evaluate(S=m, a=av), md.compile(g)(S=m, a=av)):
        assert np.linalg.norm(got - exact) <= 1e-6 * np.linalg.norm(exact) * cond * 1e-2 + 1e-300


# --------------------------------------------------------------------------- refusals


def test_cholesky_of_a_matrix_not_known_symmetric_is_refused():
    A = md.matrix("A", n, n)
    with pytest.raises(md.NotSupportedError, match="must be symmetric positive definite"):
        md.cholesky(A)
    with pytest.raises(md.ShapeError, match="needs a square matrix"):
        md.cholesky(X)
    with pytest.raises(md.ShapeError, match="spd=True needs a square matrix"):
        md.matrix("Z", "m", n, spd=True)
    with pytest.raises(md.MatdiffError, match="only a matrix can be spd"):
        md.parse("sum(v)", v="vector(n) spd")


def test_a_value_that_is_not_positive_definite_names_the_leading_minor():
    bad = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [0.0, 3.0, 1.0]])
    T = md.matrix("T", n, n, symmetric=True)  # symmetric only: cholesky's own refusal
    with pytest.raises(md.EvaluationError, match="cholesky: the matrix is not positive definite — its "
                                                  "leading 3 × 3 minor is -16"):
        md.cholesky(T).evaluate(T=bad)
    with pytest.raises(md.EvaluationError, match="leading 1 × 1 minor is -1"):
        md.grad(md.trace(md.cholesky(T)), T).evaluate(T=-np.eye(3))
    np.testing.assert_allclose(md.cholesky(T).evaluate(T=np.diag([4.0, 9.0])), np.diag([2.0, 3.0]))
    # an spd declaration is checked as a symmetric one is, whatever the expression does with S
    with pytest.raises(md.EvaluationError, match="S is declared positive definite .* leading 3 × 3 minor"):
        (a.T @ md.inv(S) @ a).evaluate(S=bad, a=np.ones(3))
    with pytest.raises(md.EvaluationError, match="S is declared positive definite"):
        L.evaluate(S=-np.eye(2))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_compiled_code_refuses_a_value_that_is_not_positive_definite(backend):
    if backend != "numpy":
        pytest.importorskip(backend)
    import_torch = backend == "torch"
    for g in (md.grad(md.trace(L), S), md.grad(_nll(), mu)):
        fn = md.compile(g, backend=backend)
        values = {"S": -np.eye(3), "x": np.ones(3), "mu": np.zeros(3)}
        args = {p: values[p] for p in inspect.signature(fn).parameters}
        if import_torch:
            import torch

            args = {k: torch.as_tensor(v) for k, v in args.items()}
        with pytest.raises(md.EvaluationError, match="not positive definite"):
            fn(**args)


# --------------------------------------------------------------------------- the doors


@pytest.mark.parametrize("text, dialect, decl", [
    ("tr(chol(S))", "matrixcalculus", "matrix(n, n) spd"),
    ("trace(cholesky(S))", "numpy", "spd matrix(n, n)"),
    ("tr(chol(S))", "matrixcalculus", "symmetric positive definite matrix(n, n)"),
    ("tr(chol(S))", "matrixcalculus", "matrix(n, n) positive definite"),
])
def test_the_text_dialects_declare_and_read_cholesky(text, dialect, decl):
    e = md.parse(text, dialect=dialect, S=decl)
    assert e.variables[0].node.symmetric == "spd" and str(e) == "tr(chol(S))"
    assert md.check(e, e.variables[0], order=2) < 1e-6


def test_a_symmetric_declaration_suffices_for_cholesky_but_not_for_cholesky_solves():
    e = md.parse("tr(chol(S))", S="matrix(n, n) symmetric")
    assert e.variables[0].node.symmetric is True
    with pytest.raises(md.NotSupportedError, match="symmetric positive definite"):
        md.parse("tr(chol(A))", A="matrix(n, n)")


def test_every_door_accepts_the_spd_declaration(capsys):
    want = md.grad(md.trace(L), S)
    code = main(["tr(chol(S))", "--var", "S: matrix(n, n) spd", "--wrt", "S"])
    out, _ = capsys.readouterr()
    assert code == 0 and out.splitlines()[-1].endswith(str(want)), out
    r = service.derive({"expression": "tr(chol(S))", "wrt": ["S"], "declarations": {"S": "matrix(n, n) spd"},
                        "check": True, "code": True})["results"][0]
    assert r["text"] == str(want)
    assert "spd matrix" in service.KINDS
    # the code the page shows solves by Cholesky where the matrix is declared so
    code = service.derive({"expression": "x'*inv(S)*x", "wrt": ["x"], "declarations": {"S": "matrix(n, n) spd"},
                           "check": False, "code": True})["code"]
    assert all("cho_solve(" in code[b]["source"] for b in ("numpy", "jax", "torch")), code


def test_declarations_print_as_spd_and_read_back():
    from matdiff.parse import declarations

    g = md.grad(a.T @ L @ a, S)
    assert declarations(g)["S"] == "matrix(n, n) spd"
    back = md.parse(str(g), dialect="matdiff", **declarations(g))
    assert back.variables[0].node.symmetric == "spd" or any(v.node.symmetric == "spd" for v in back.variables)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_gradient_of_the_table_forms_an_inverse(backend):
    """Every gradient of the table solves (Cholesky, triangular) rather than inverting: an
    explicit inverse appears only in Hessians, whose entries hold (L⁻¹)_jk themselves, and
    the Gaussian NLL's gradient by Σ, which holds Σ⁻¹ and takes it from the Cholesky factor."""
    if backend != "numpy":
        pytest.importorskip(backend)
    else:
        pytest.importorskip("scipy")
    for name, build, wrt in CASES:
        source = md.codegen(md.grad(build(), wrt), backend=backend)
        assert not re.search(r"\binv\(|lu_factor|slogdet", source), (name, source)
        if name == "Gaussian NLL by Σ":
            assert re.search(r"cho_solve\(\w+, \w+\.eye|cholesky_inverse\(", source), source


def test_symbolic_entries_agree_with_sympy():
    """md.explicit writes chol(S) and Φ entry by entry; the gradient's entries are SymPy's
    derivatives of tr chol(S) (halved off the diagonal, S being symmetric)."""
    sp = pytest.importorskip("sympy")
    S2 = md.matrix("S", 2, 2, spd=True)
    f = md.explicit(md.trace(md.cholesky(S2)))
    g = md.explicit(md.grad(md.trace(md.cholesky(S2)), S2))
    s11, s12, s22 = sp.symbols("S_11 S_12 S_22")
    assert sp.simplify(f - (sp.sqrt(s11) + sp.sqrt(s22 - s12 ** 2 / s11))) == 0
    at = {s11: 2.0, s12: 0.5, s22: 3.0}
    want = [[sp.diff(f, s11), sp.diff(f, s12) / 2], [sp.diff(f, s12) / 2, sp.diff(f, s22)]]
    for i in range(2):
        for j in range(2):
            assert abs(float(g[i, j].subs(at)) - float(want[i][j].subs(at))) < 1e-12


def test_phi_prints_in_latex_as_a_greek_capital():
    text = md.latex(md.grad(md.trace(L), S))
    assert "\\Phi\\left(" in text and "Φ" not in text and "\\operatorname{chol}" in text


@pytest.mark.parametrize("name, build, wrt", [c for c in CASES if c[2] is S], ids=[c[0] for c in CASES if c[2] is S])
def test_hessian_vector_products_in_matrix_notation(name, build, wrt):
    """md.hvp through chol(S) is matrix notation (Φ of products, L where it repeats), equal to
    the Hessian applied to a symmetric V, and reads back."""
    V = md.matrix("V", n, n, symmetric=True)
    h = md.hvp(build(), S, V)
    values = _values(11)
    v = np.random.default_rng(12).standard_normal((4, 4))
    values["V"] = (v + v.T) / 2
    H = np.asarray(md.hessian(build(), S).evaluate(_used(build(), values)))
    np.testing.assert_allclose(h.evaluate(_used(h, values)), np.tensordot(H, values["V"], 2),
                               rtol=1e-9, atol=1e-11)
    assert "_ij" not in str(h) and "matdiff" in _reads_back_or_refuses(h, seed=4), str(h)


# --- positive scalars: XᵀX + λI with λ declared positive is known positive definite (issue 25)

LAM, MU, Z = md.scalar("lam", positive=True), md.scalar("mu"), md.vector("z", "k")
XK = md.matrix("X", "n", "k")
GRAM = XK.T @ XK


@pytest.mark.parametrize("build, definite", [
    (lambda: GRAM + LAM * md.eye("k"), True),
    (lambda: GRAM + MU * md.eye("k"), False),  # μ's sign is not known
    (lambda: GRAM - LAM * md.eye("k"), False),
    (lambda: LAM * S + S, True),
    (lambda: LAM * md.exp(MU) * md.eye("k") + GRAM, True),  # a product of positive scalars
    (lambda: GRAM, False),  # only semidefinite: X may lack full column rank
], ids=["XᵀX + λI", "XᵀX + μI", "XᵀX − λI", "λS + S", "λe^μ I + XᵀX", "XᵀX"])
def test_a_positive_scalar_makes_a_gram_matrix_definite(build, definite):
    assert md.positive_definite(build()) is definite


RIDGE = Z.T @ md.inv(GRAM + LAM * md.eye("k")) @ Z


@pytest.mark.parametrize("backend", BACKENDS)
def test_ridge_with_a_positive_lambda_solves_by_cholesky(backend):
    """zᵀ(XᵀX + λI)⁻¹z by z, X and λ: Cholesky solves in every backend, values equal to the
    evaluator's, and the derivatives checked by differences to second order."""
    if backend != "numpy":
        pytest.importorskip(backend)
    rng = np.random.default_rng(3)
    values = {"X": rng.normal(size=(5, 3)), "z": rng.normal(size=3), "lam": 0.7}
    for v in (Z, XK, LAM):
        g = md.grad(RIDGE, v)
        source = md.codegen(g, backend=backend)
        assert "cho" in source and "inv(" not in source, source
        used = {u.node.name for u in g.variables}
        got = _run(md.compile(g, backend=backend), backend, {k: a for k, a in values.items() if k in used},
                   np.float64)
        np.testing.assert_allclose(got, g.evaluate(values), rtol=1e-10, atol=1e-12)
        assert md.check(RIDGE, v, order=2) < 1e-6


def test_a_value_that_is_not_positive_is_refused():
    with pytest.raises(md.EvaluationError, match=r"lam is declared positive \(positive=True\) but its value is -0.5"):
        RIDGE.evaluate(X=np.ones((4, 2)), z=np.ones(2), lam=-0.5)


@pytest.mark.parametrize("decl, message", [
    ("positive matrix(n, n)", "only a scalar can be positive"),
    ("vector(n) positive", "only a scalar can be positive"),
])
def test_positive_is_for_scalars(decl, message):
    with pytest.raises(md.ParseError, match=message):
        md.parse("x'*x", x=decl)
    with pytest.raises(md.ShapeError, match="positive=True is for a scalar"):
        Var("A", ("n", "n"), "positive")


def test_every_door_accepts_a_positive_scalar(capsys):
    text = "z'*inv(X'*X + lam*eye(k))*z"
    decls = {"z": "vector(k)", "X": "matrix(n, k)"}
    want = md.grad(RIDGE, LAM)
    for decl in ("scalar positive", "positive scalar"):
        e = md.parse(text, lam=decl, **decls)
        assert e.variables[[v.node.name for v in e.variables].index("lam")].node.symmetric == "positive"
        assert str(md.grad(e, md.scalar("lam", positive=True))) == str(want)
    code = main([text, "--var", "lam: scalar positive", "--var", "z: vector(k)", "--var", "X: matrix(n, k)",
                 "--wrt", "lam"])
    out, _ = capsys.readouterr()
    assert code == 0 and out.splitlines()[-1].endswith(str(want)), out
    r = service.derive({"expression": text, "wrt": ["z"], "check": True, "code": True,
                        "declarations": dict(decls, lam="scalar positive")})
    assert all("cho_solve(" in r["code"][b]["source"] for b in ("numpy", "jax", "torch")), r["code"]
    assert "positive scalar" in service.KINDS
    # the declaration prints, and the printed result reads back with it
    from matdiff.parse import declarations
    assert declarations(want)["lam"] == "scalar positive"
    back = md.parse(str(want), dialect="matdiff", **declarations(want))
    assert [v.node.symmetric for v in back.variables if v.node.name == "lam"] == ["positive"]
    values = {"X": np.eye(3, 2) + 0.1, "z": np.array([0.3, -0.4]), "lam": 0.9}
    np.testing.assert_allclose(back.evaluate(values), want.evaluate(values), rtol=1e-12)


def test_the_jacobian_of_chol_ts_by_t_prints_as_the_textbook_writes_it():
    """Built in reverse, the Jacobian of a matrix by a scalar held Φ of a 4-index tensor
    contracted with L⁻¹SL⁻ᵀ over Φ's own two axes; Φ is an entry-wise mask, its own adjoint,
    so it moves onto that matrix: L Φ(L⁻¹SL⁻ᵀ) (Murray's dL = LΦ(L⁻¹dSL⁻ᵀ) with dS = S dt),
    and no code masks an n⁴ tensor."""
    from matdiff.ir import Phi, walk
    from matdiff.simplify import simplify

    t = md.scalar("t")
    J = md.jacobian(md.cholesky(t * S), t)
    assert str(J) == "LΦ(L⁻¹SL⁻ᵀ)  where L = chol(tS)"
    assert all(n.ndim == 2 for n in walk(simplify(J.node)) if isinstance(n, Phi))
    v = _values()
    got = J.evaluate(S=v["S"], t=0.7)
    want = (np.linalg.cholesky((0.7 + 1e-6) * v["S"]) - np.linalg.cholesky((0.7 - 1e-6) * v["S"])) / 2e-6
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert "matdiff" in _reads_back_or_refuses(J, seed=3)
    for backend in BACKENDS:
        value = _run(md.compile(J, backend=backend), backend, {"S": v["S"], "t": 0.7}, np.float64)
        np.testing.assert_allclose(value, got, rtol=1e-10)


def test_phi_of_a_tensor_prints_as_its_entries_times_the_mask_phi_11t():
    """A Jacobian by S through chol(S) holds Φ of a 3- or 4-index tensor, which index notation
    printed as raw IR text (tril_half(einsum('ab,c->abc', cholesky(S), x))); Φ masks the last
    two axes as the entries of Φ(11ᵀ) do, so Φ(T)_ipq prints T_ipq Φ(11ᵀ)_pq.  The printed
    formula, computed by hand from its text, is the Jacobian's value."""
    J = md.jacobian(L @ x, S)
    text = str(J)
    assert text == "Σ_p Σ_q [1/2 [chol(S)_iq x_p] Φ(11ᵀ)_qp + 1/2 [chol(S)_ip x_q] Φ(11ᵀ)_pq] " \
                   "(chol(S)⁻¹)_pj (chol(S)⁻¹)_qk", text
    assert "\\Phi\\left(\\mathbf{1} \\mathbf{1}^\\top\\right)_{pq}" in J.latex()
    v = _values()
    lv, li = np.linalg.cholesky(v["S"]), np.linalg.inv(np.linalg.cholesky(v["S"]))
    mask = np.tril(np.ones((4, 4))) - np.eye(4) / 2  # Φ(11ᵀ)
    inner = 0.5 * np.einsum("iq,p,qp->ipq", lv, v["x"], mask) + 0.5 * np.einsum("ip,q,pq->ipq", lv, v["x"], mask)
    np.testing.assert_allclose(np.einsum("ipq,pj,qk->ijk", inner, li, li), J.evaluate(S=v["S"], x=v["x"]),
                               rtol=1e-10, atol=1e-12)
    for e in (md.jacobian(L, S), md.jacobian(md.tanh(L.T @ x), S)):
        assert "tril_half" not in str(e) and "einsum" not in str(e) and "Φ(11ᵀ)_pq" in str(e), str(e)
