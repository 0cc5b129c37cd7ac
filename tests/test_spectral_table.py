"""Issue 14's table: matrix powers, expm/logm/sqrtm, eigenvalue and singular-value functions,
each derivative checked by finite differences (md.check) and compared with JAX's autodiff
through jax.numpy.linalg (eigh, svd) and jax.scipy.linalg.expm, in float64. Issue 21's table
(ISSUE21, below): 45 new cases, checked to second order, against jax.hessian, and read back
from their printed form.

For a symmetric variable S the derivative is compared on symmetric directions: JAX
differentiates f((S + Sᵀ)/2), and both gradients are compared by their symmetric parts."""
import numpy as np
import pytest

import matdiff as md

jax = pytest.importorskip("jax")
jnp = jax.numpy
jsl = pytest.importorskip("jax.scipy.linalg")

n = "n"
S = md.matrix("S", n, n, symmetric=True)      # symmetric positive definite
T = md.matrix("T", n, n, symmetric=True)      # a second one (Wasserstein)
G = md.matrix("G", n, n)                      # general square, eigenvalues in the right half-plane
X = md.matrix("X", "m", n)                    # tall, distinct singular values
A = md.matrix("A", "m", "m")
a, b = md.vector("a", n), md.vector("b", n)


def _values(seed=0, size=4, rows=6):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((size, size))
    r = rng.standard_normal((size, size))
    return {"S": q @ q.T / size + np.diag(np.arange(1.0, size + 1)),   # spread eigenvalues
            "T": r @ r.T / size + np.eye(size),
            "G": size * np.eye(size) + rng.standard_normal((size, size)),
            "X": rng.standard_normal((rows, size)), "A": rng.standard_normal((rows, rows)),
            "a": rng.standard_normal(size), "b": rng.standard_normal(size)}


def _sym(m):
    return (m + m.T) / 2


def _jsqrtm(s):  # of a symmetric positive definite matrix, by eigh
    lam, u = jnp.linalg.eigh(s)
    return (u * jnp.sqrt(lam)) @ u.T


def _jlogm(s):
    lam, u = jnp.linalg.eigh(s)
    return (u * jnp.log(lam)) @ u.T


def _jfunm(s, f):
    lam, u = jnp.linalg.eigh(s)
    return (u * f(lam)) @ u.T


def _w2(s, t):  # tr(S + T − 2(S^½ T S^½)^½)
    r = _jsqrtm(s)
    return jnp.trace(s + t - 2 * _jsqrtm(_sym(r @ t @ r)))


mp = np.linalg.matrix_power
# (id, matdiff expression, variable, JAX function of the values dict — or None where JAX has no
# differentiable counterpart — and the kinds md.check draws)
CASES = [
    # powers, negative ones included
    ("tr G²", lambda: md.trace(md.matrix_power(G, 2)), G, lambda v: jnp.trace(v["G"] @ v["G"])),
    ("tr G³", lambda: md.trace(md.matrix_power(G, 3)), G, lambda v: jnp.trace(jnp.linalg.matrix_power(v["G"], 3))),
    ("tr G⁵", lambda: md.trace(md.matrix_power(G, 5)), G, lambda v: jnp.trace(jnp.linalg.matrix_power(v["G"], 5))),
    ("tr G⁻¹", lambda: md.trace(md.matrix_power(G, -1)), G, lambda v: jnp.trace(jnp.linalg.inv(v["G"]))),
    ("tr G⁻²", lambda: md.trace(md.matrix_power(G, -2)), G,
     lambda v: jnp.trace(jnp.linalg.matrix_power(jnp.linalg.inv(v["G"]), 2))),
    ("aᵀG⁵b", lambda: a.T @ md.matrix_power(G, 5) @ b, G,
     lambda v: v["a"] @ jnp.linalg.matrix_power(v["G"], 5) @ v["b"]),
    ("aᵀG⁻²b", lambda: a.T @ md.matrix_power(G, -2) @ b, G,
     lambda v: v["a"] @ jnp.linalg.matrix_power(jnp.linalg.inv(v["G"]), 2) @ v["b"]),
    ("‖G³‖_F²", lambda: md.norm(md.matrix_power(G, 3)) ** 2, G,
     lambda v: jnp.sum(jnp.linalg.matrix_power(v["G"], 3) ** 2)),
    ("aᵀS⁻²a", lambda: a.T @ md.matrix_power(S, -2) @ a, S,
     lambda v: v["a"] @ jnp.linalg.matrix_power(jnp.linalg.inv(v["S"]), 2) @ v["a"]),
    # the matrix exponential
    ("tr expm(G)", lambda: md.trace(md.expm(G)), G, lambda v: jnp.trace(jsl.expm(v["G"]))),
    ("aᵀexpm(G)b", lambda: a.T @ md.expm(G / 4) @ b, G, lambda v: v["a"] @ jsl.expm(v["G"] / 4) @ v["b"]),
    ("‖expm(G)‖_F²", lambda: md.norm(md.expm(G / 4)) ** 2, G, lambda v: jnp.sum(jsl.expm(v["G"] / 4) ** 2)),
    ("tr expm(S)", lambda: md.trace(md.expm(S)), S, lambda v: jnp.trace(jsl.expm(v["S"]))),
    ("aᵀexpm(S)a", lambda: a.T @ md.expm(S) @ a, S, lambda v: v["a"] @ jsl.expm(v["S"]) @ v["a"]),
    ("tr expm(XᵀX)", lambda: md.trace(md.expm(X.T @ X / 8)), X,
     lambda v: jnp.trace(jsl.expm(v["X"].T @ v["X"] / 8))),
    # logarithm and square root: symmetric (eigh) and general (Fréchet; no JAX counterpart)
    ("tr logm(S)", lambda: md.trace(md.logm(S)), S, lambda v: jnp.trace(_jlogm(v["S"]))),
    ("aᵀlogm(S)a", lambda: a.T @ md.logm(S) @ a, S, lambda v: v["a"] @ _jlogm(v["S"]) @ v["a"]),
    ("tr sqrtm(S)", lambda: md.trace(md.sqrtm(S)), S, lambda v: jnp.trace(_jsqrtm(v["S"]))),
    ("aᵀsqrtm(S)b", lambda: a.T @ md.sqrtm(S) @ b, S, lambda v: v["a"] @ _jsqrtm(v["S"]) @ v["b"]),
    ("tr logm(G)", lambda: md.trace(md.logm(G)), G, None),
    ("aᵀlogm(G)b", lambda: a.T @ md.logm(G) @ b, G, None),
    ("aᵀsqrtm(G)b", lambda: a.T @ md.sqrtm(G) @ b, G, None),
    ("‖logm(G)‖_F²", lambda: md.norm(md.logm(G)) ** 2, G, None),
    # functions of the eigenvalues
    ("Σ log λ(S)", lambda: md.sum(md.log(md.eigvalsh(S))), S, lambda v: jnp.sum(jnp.log(jnp.linalg.eigvalsh(v["S"])))),
    ("Σ exp λ(S)", lambda: md.sum(md.exp(md.eigvalsh(S))), S, lambda v: jnp.sum(jnp.exp(jnp.linalg.eigvalsh(v["S"])))),
    ("Σ √λ(S)", lambda: md.sum(md.sqrt(md.eigvalsh(S))), S, lambda v: jnp.sum(jnp.sqrt(jnp.linalg.eigvalsh(v["S"])))),
    ("Σ λ(S)³", lambda: md.sum(md.eigvalsh(S) ** 3), S, lambda v: jnp.sum(jnp.linalg.eigvalsh(v["S"]) ** 3)),
    ("Σ σ(λ(S))", lambda: md.sum(md.sigmoid(md.eigvalsh(S))), S,
     lambda v: jnp.sum(jax.nn.sigmoid(jnp.linalg.eigvalsh(v["S"])))),
    ("λ_max(S)", lambda: md.eigvalsh(S)[-1], S, lambda v: jnp.linalg.eigvalsh(v["S"])[-1]),
    ("λ_min(S)", lambda: md.eigvalsh(S)[0], S, lambda v: jnp.linalg.eigvalsh(v["S"])[0]),
    ("PCA: λ_max(XᵀX)", lambda: md.eigvalsh(X.T @ X)[-1], X, lambda v: jnp.linalg.eigvalsh(v["X"].T @ v["X"])[-1]),
    ("PCA: λₙ + λₙ₋₁ of XᵀX", lambda: md.eigvalsh(X.T @ X)[-1] + md.eigvalsh(X.T @ X)[-2], X,
     lambda v: jnp.sum(jnp.linalg.eigvalsh(v["X"].T @ v["X"])[-2:])),
    ("Σ λ(S)² = ‖S‖_F²", lambda: md.sum(md.eigvalsh(S) ** 2), S, lambda v: jnp.sum(jnp.linalg.eigvalsh(v["S"]) ** 2)),
    ("aᵀλ(S)", lambda: md.vector("c", n).T @ md.eigvalsh(S), S, None),
    # singular values and the norms built on them
    ("‖X‖_*", lambda: md.norm(X, "nuc", smaller=n), X, lambda v: jnp.sum(jnp.linalg.svd(v["X"], compute_uv=False))),
    ("‖X‖₂", lambda: md.norm(X, 2, smaller=n), X, lambda v: jnp.linalg.svd(v["X"], compute_uv=False)[0]),
    ("‖X‖₂²", lambda: md.norm(X, 2, smaller=n) ** 2, X, lambda v: jnp.linalg.svd(v["X"], compute_uv=False)[0] ** 2),
    ("Σ σ(X)³", lambda: md.sum(md.svdvals(X, smaller=n) ** 3), X, lambda v: jnp.sum(jnp.linalg.svd(v["X"], compute_uv=False) ** 3)),
    ("σ_min(X)", lambda: md.svdvals(X, smaller=n)[-1], X, lambda v: jnp.linalg.svd(v["X"], compute_uv=False)[-1]),
    ("‖AX‖_*", lambda: md.norm(A @ X, "nuc", smaller=n), X, lambda v: jnp.sum(jnp.linalg.svd(v["A"] @ v["X"], compute_uv=False))),
    ("‖G − S‖_*", lambda: md.norm(G - S, "nuc"), G, lambda v: jnp.sum(jnp.linalg.svd(v["G"] - v["S"], compute_uv=False))),
    # matrix functions of a symmetric matrix, Wasserstein-2 between Gaussians
    ("tr tanh(S)", lambda: md.trace(md.matrix_function(S, md.tanh)), S, lambda v: jnp.trace(_jfunm(v["S"], jnp.tanh))),
    ("aᵀsin(S)a", lambda: a.T @ md.matrix_function(S, "sin") @ a, S, lambda v: v["a"] @ _jfunm(v["S"], jnp.sin) @ v["a"]),
    ("W₂²(S, T) by S", lambda: md.trace(S + T - 2 * md.sqrtm(md.sqrtm(S) @ T @ md.sqrtm(S))), S,
     lambda v: _w2(v["S"], v["T"])),
    ("W₂²(S, T) by T", lambda: md.trace(S + T - 2 * md.sqrtm(md.sqrtm(S) @ T @ md.sqrtm(S))), T,
     lambda v: _w2(v["S"], v["T"])),
]
KINDS = {"S": "spd", "T": "spd"}


def test_the_table_has_forty_cases():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name, build, var, _", CASES, ids=[c[0] for c in CASES])
def test_derivative_matches_finite_differences(name, build, var, _):
    assert md.check(build(), var, kinds=KINDS) < 1e-6


@pytest.mark.parametrize("name, build, var, reference", [c for c in CASES if c[3] is not None],
                         ids=[c[0] for c in CASES if c[3] is not None])
def test_gradient_matches_jax_autodiff(name, build, var, reference):
    values = _values()
    f = build()
    used = {k: values[k] for k in (v.node.name for v in f.variables)}
    got = md.grad(f, var).evaluate(used)
    key = var.node.name
    symmetric = var.node.symmetric
    with jax.enable_x64(True):
        def g(x):
            v = {k: jnp.asarray(w) for k, w in values.items()}
            v[key] = _sym(x) if symmetric else x
            return reference(v)
        want = np.asarray(jax.grad(g)(jnp.asarray(values[key])))
        np.testing.assert_allclose(float(f.evaluate(used)), float(g(jnp.asarray(values[key]))), rtol=1e-9)
    if symmetric:
        got, want = _sym(got), _sym(want)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


def test_indexing_a_vector_expression():
    x = md.vector("x", n)
    assert str(md.grad(x[0] * x[-1], x)) == "(e₁ᵀx)eₙ + (eₙᵀx)e₁"
    assert md.check(x[1] ** 3, x) < 1e-6
    assert md.latex(x[-2]) == "x^\\top e_{n-1}"
    np.testing.assert_allclose(x[-2].evaluate({"x": np.arange(5.0)}), 3.0)
    with pytest.raises(md.EvaluationError, match="out of range"):
        x[7].evaluate({"x": np.arange(5.0)})
    with pytest.raises(md.MatdiffError, match="one integer into a vector"):
        X[0]
    with pytest.raises(md.MatdiffError, match="a slice"):
        x[1:3]
    with pytest.raises(TypeError, match="not iterable"):
        list(x)
    assert eval(repr(x[-1]), {"md": md, "x": x}).node is x[-1].node  # repr rebuilds it


# --------------------------------------------------------------------------- Hypothesis: Daleckii–Krein

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
W = md.matrix("W", n, n)
FUNCTIONS = {"exp": np.exp, "log": np.log, "sqrt": np.sqrt, "tanh": np.tanh, "sin": np.sin}
OBJECTIVES = {name: md.trace(W @ md.matrix_function(S, name)) for name in FUNCTIONS}
GRADIENTS = {name: md.grad(f, S) for name, f in OBJECTIVES.items()}


@st.composite
def spectra(draw):
    """Eigenvalues in [0.5, 3], some of them nearly repeated (gaps down to 1e-9)."""
    size = draw(st.integers(2, 5))
    lam = [draw(st.floats(0.5, 3.0))]
    for _ in range(size - 1):
        gap = draw(st.sampled_from([0.0, 1e-9, 1e-6, 1e-3, None]))
        lam.append(lam[-1] + gap if gap is not None else draw(st.floats(0.5, 3.0)))
    return np.array(lam)


@hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
@hypothesis.given(lam=spectra(), name=st.sampled_from(sorted(FUNCTIONS)), seed=st.integers(0, 2**16))
def test_daleckii_krein_differential_matches_finite_differences(lam, name, seed):
    """⟨∇ tr(W f(S)), E⟩ for symmetric E against central differences of U f(Λ) Uᵀ, on
    random symmetric S with well separated, nearly repeated and repeated eigenvalues."""
    rng = np.random.default_rng(seed)
    size = lam.size
    q, _ = np.linalg.qr(rng.standard_normal((size, size)))
    s = _sym(q @ np.diag(lam) @ q.T)
    w, e = rng.standard_normal((size, size)), _sym(rng.standard_normal((size, size)))
    f = FUNCTIONS[name]

    def objective(m):
        mu, u = np.linalg.eigh(m)
        return np.trace(w @ (u * f(mu)) @ u.T)

    h = 1e-5
    want = (objective(s + h * e) - objective(s - h * e)) / (2 * h)
    got = np.sum(GRADIENTS[name].evaluate({"S": s, "W": w}) * e)
    assert abs(got - want) <= 1e-6 * (1 + abs(want))


# --------------------------------------------------------------------------- issue 21's table
#
# 40+ cases new to issue 21: matrices symmetric by structure, matrix_function of Python callables
# and of more named functions, eigenvalue functions printed with the decomposition's parts, thin
# SVDs of symbolic non-square matrices with no smaller=, and Fréchet derivatives printed as
# L_f(Aᵀ, E). Each is checked by finite differences to second order, against jax.grad and
# jax.hessian where JAX differentiates it, and read back: its printed tree (the gradient's, and
# the Hessian-vector product's where that prints in matrix notation) evaluated by an independent
# reader of the notation, decomposition parts included, equals matdiff's value.

from matdiff import dims as D  # noqa: E402
from matdiff import notation as N  # noqa: E402
from matdiff import recognise as R  # noqa: E402
from matdiff.evaluate import Sizes, _values_of  # noqa: E402
from matdiff.ir import DivDiff, DivDiff2, DivDiff3, DivDiff3Apply, MatFn, walk  # noqa: E402

from . import notation_eval  # noqa: E402

A21 = md.matrix("A", n, n, symmetric=True)
B21 = md.matrix("B", n, n, symmetric=True)
X21 = md.matrix("X", "m", n)            # no smaller=: the singular values have the dim min(m, n)
Y21 = md.matrix("Y", "p", "m")
w21, t21 = md.vector("w", n), md.scalar("t")
LAM = md.eigvalsh(S)


def _softplus(u):
    return md.log(1 + md.exp(u))


def _jeig(m):
    return jnp.linalg.eigvalsh(_sym(m))


def _jsv(m):
    return jnp.linalg.svd(m, compute_uv=False)


# (id, matdiff expression, variable, JAX function of the values or None, order of the check)
ISSUE21 = [
    # symmetric by structure (refused before: "A + t * B must be symmetric")
    ("Σλ(A + tB)³ by t", lambda: md.sum(md.eigvalsh(A21 + t21 * B21) ** 3), t21,
     lambda v: jnp.sum(_jeig(v["A"] + v["t"] * v["B"]) ** 3), 2),
    ("λ_max(A + tB) by t", lambda: md.eigvalsh(A21 + t21 * B21)[-1], t21,
     lambda v: _jeig(v["A"] + v["t"] * v["B"])[-1], 2),
    ("Σ exp λ(A + tB) by B", lambda: md.sum(md.exp(md.eigvalsh(A21 + t21 * B21))), B21,
     lambda v: jnp.sum(jnp.exp(_jeig(v["A"] + v["t"] * v["B"]))), 2),
    ("tr expm((A + tB)/4) by A", lambda: md.trace(md.expm((A21 + t21 * B21) / 4)), A21,
     lambda v: jnp.trace(jsl.expm((v["A"] + v["t"] * v["B"]) / 4)), 2),
    ("tr sqrtm(S + XᵀX) by X", lambda: md.trace(md.sqrtm(S + X21.T @ X21)), X21,
     lambda v: jnp.trace(_jsqrtm(v["S"] + v["X"].T @ v["X"])), 2),
    ("Σ log λ(S + XᵀX) by X", lambda: md.sum(md.log(md.eigvalsh(S + X21.T @ X21))), X21,
     lambda v: jnp.sum(jnp.log(_jeig(v["S"] + v["X"].T @ v["X"]))), 2),
    ("λ_max(S⁻¹) by S", lambda: md.eigvalsh(md.inv(S))[-1], S, lambda v: _jeig(jnp.linalg.inv(v["S"]))[-1], 2),
    ("λ_max(XSXᵀ) by S", lambda: md.eigvalsh(X21 @ S @ X21.T)[-1], S,
     lambda v: _jeig(v["X"] @ v["S"] @ v["X"].T)[-1], 2),
    ("aᵀlogm(S⁻¹)a by S", lambda: a.T @ md.logm(md.inv(S)) @ a, S,
     lambda v: v["a"] @ _jlogm(_sym(jnp.linalg.inv(v["S"]))) @ v["a"], 2),
    ("aᵀsqrtm(XᵀX + S)a by X", lambda: a.T @ md.sqrtm(X21.T @ X21 + S) @ a, X21,
     lambda v: v["a"] @ _jsqrtm(v["X"].T @ v["X"] + v["S"]) @ v["a"], 2),
    # matrix_function of a Python callable (refused before), and more named functions
    ("tr f(S), f = u³", lambda: md.trace(md.matrix_function(S, lambda u: u ** 3)), S,
     lambda v: jnp.trace(_jfunm(v["S"], lambda x: x ** 3)), 2),
    ("aᵀf(S)a, f = 2u² − u + 1", lambda: a.T @ md.matrix_function(S, lambda u: 2 * u ** 2 - u + 1) @ a, S,
     lambda v: v["a"] @ _jfunm(v["S"], lambda x: 2 * x ** 2 - x + 1) @ v["a"], 2),
    ("tr f(S), f = softplus", lambda: md.trace(md.matrix_function(S, _softplus)), S,
     lambda v: jnp.trace(_jfunm(v["S"], jax.nn.softplus)), 2),
    ("aᵀf(S)b, f = e^(−u/2) sin u",
     lambda: a.T @ md.matrix_function(S, lambda u: md.exp(-u / 2) * md.sin(u)) @ b, S,
     lambda v: v["a"] @ _jfunm(v["S"], lambda x: jnp.exp(-x / 2) * jnp.sin(x)) @ v["b"], 2),
    ("aᵀcos(S)a", lambda: a.T @ md.matrix_function(S, "cos") @ a, S,
     lambda v: v["a"] @ _jfunm(v["S"], jnp.cos) @ v["a"], 2),
    ("tr cosh(S)", lambda: md.trace(md.matrix_function(S, "cosh")), S,
     lambda v: jnp.trace(_jfunm(v["S"], jnp.cosh)), 2),
    ("aᵀσ(S)b", lambda: a.T @ md.matrix_function(S, "sigmoid") @ b, S,
     lambda v: v["a"] @ _jfunm(v["S"], jax.nn.sigmoid) @ v["b"], 2),
    ("tr log1p(S)", lambda: md.trace(md.matrix_function(S, "log1p")), S,
     lambda v: jnp.trace(_jfunm(v["S"], jnp.log1p)), 2),
    ("‖expm1(S)‖_F²", lambda: md.norm(md.matrix_function(S, "expm1") / 4) ** 2, S,
     lambda v: jnp.sum(_jfunm(v["S"], jnp.expm1) ** 2) / 16, 2),
    ("tr(arctan(S)T)", lambda: md.trace(md.matrix_function(S, "arctan") @ T), S,
     lambda v: jnp.trace(_jfunm(v["S"], jnp.arctan) @ v["T"]), 2),
    ("tr(expm(S)T)", lambda: md.trace(md.expm(S / 4) @ T), S, lambda v: jnp.trace(jsl.expm(v["S"] / 4) @ v["T"]), 2),
    ("tr(S logm(S))", lambda: md.trace(S @ md.logm(S)), S, lambda v: jnp.trace(v["S"] @ _jlogm(v["S"])), 2),
    # functions of the eigenvalues, printed with the decomposition's parts
    ("wᵀλ(S)", lambda: w21.T @ LAM, S, lambda v: v["w"] @ _jeig(v["S"]), 2),
    ("λ_max(S)²", lambda: LAM[-1] ** 2, S, lambda v: _jeig(v["S"])[-1] ** 2, 2),
    ("λ_max(S) − λ_min(S)", lambda: LAM[-1] - LAM[0], S, lambda v: _jeig(v["S"])[-1] - _jeig(v["S"])[0], 2),
    ("λ₁(S)λₙ(S)", lambda: LAM[0] * LAM[-1], S, lambda v: _jeig(v["S"])[0] * _jeig(v["S"])[-1], 2),
    ("λₙ₋₁(S)", lambda: LAM[-2], S, lambda v: _jeig(v["S"])[-2], 2),
    ("Σσ(λᵢ)λᵢ", lambda: md.sum(md.sigmoid(LAM) * LAM), S,
     lambda v: jnp.sum(jax.nn.sigmoid(_jeig(v["S"])) * _jeig(v["S"])), 2),
    ("logsumexp λ(S)", lambda: md.logsumexp(LAM), S, lambda v: jax.scipy.special.logsumexp(_jeig(v["S"])), 2),
    ("Σλ(S)⁴", lambda: md.sum(LAM ** 4), S, lambda v: jnp.sum(_jeig(v["S"]) ** 4), 2),
    ("Σ 1/λ(S)", lambda: md.sum(1 / LAM), S, lambda v: jnp.sum(1 / _jeig(v["S"])), 2),
    ("Σ λ log λ(S)", lambda: md.sum(LAM * md.log(LAM)), S,
     lambda v: jnp.sum(_jeig(v["S"]) * jnp.log(_jeig(v["S"]))), 2),
    # singular values of a symbolic (m, n) X with no smaller= (refused before)
    ("‖X‖_*, X (m, n)", lambda: md.norm(X21, "nuc"), X21, lambda v: jnp.sum(_jsv(v["X"])), 2),
    ("‖X‖₂, X (m, n)", lambda: md.norm(X21, 2), X21, lambda v: _jsv(v["X"])[0], 2),
    ("‖X‖₂², X (m, n)", lambda: md.norm(X21, 2) ** 2, X21, lambda v: _jsv(v["X"])[0] ** 2, 2),
    ("Σσ(X)³", lambda: md.sum(md.svdvals(X21) ** 3), X21, lambda v: jnp.sum(_jsv(v["X"]) ** 3), 2),
    ("σ_min(X), X (m, n)", lambda: md.svdvals(X21)[-1], X21, lambda v: _jsv(v["X"])[-1], 2),
    ("Σ log σ(X)", lambda: md.sum(md.log(md.svdvals(X21))), X21, lambda v: jnp.sum(jnp.log(_jsv(v["X"]))), 2),
    ("Σ √(σ(X)² + 1)", lambda: md.sum(md.sqrt(md.svdvals(X21) ** 2 + 1)), X21,
     lambda v: jnp.sum(jnp.sqrt(_jsv(v["X"]) ** 2 + 1)), 2),
    ("‖YX‖_* by X", lambda: md.norm(Y21 @ X21, "nuc"), X21, lambda v: jnp.sum(_jsv(v["Y"] @ v["X"])), 2),
    ("‖Xᵀ‖₂ by X", lambda: md.norm(X21.T, 2), X21, lambda v: _jsv(v["X"].T)[0], 2),
    # general matrices: the Fréchet derivative printed as a matrix, L_f(Gᵀ, abᵀ); their second
    # derivatives through the block-triangular identity (refused before)
    ("aᵀlogm(G)a", lambda: a.T @ md.logm(G) @ a, G, None, 2),
    ("tr(logm(G)T)", lambda: md.trace(md.logm(G) @ T), G, None, 2),
    ("‖sqrtm(G)‖_F²", lambda: md.norm(md.sqrtm(G)) ** 2, G, None, 2),
    ("tr(expm(G)T)", lambda: md.trace(md.expm(G / 4) @ T), G, lambda v: jnp.trace(jsl.expm(v["G"] / 4) @ v["T"]), 2),
]
KINDS21 = {"S": "spd", "T": "spd", "A": "spd", "B": "symmetric"}
IDS21 = [c[0] for c in ISSUE21]


def _values21(seed=0, size=4, rows=3, p=2):
    """A point for issue 21's table: S, T, A positive definite, B small (A + tB stays so), G with
    its eigenvalues in the right half-plane, X wide (3 × 4: min(m, n) is m), YX of full rank."""
    rng = np.random.default_rng(seed)
    v = _values(seed, size)
    r = rng.standard_normal((size, size))
    v.update({"A": r @ r.T / size + np.diag(np.arange(1.0, size + 1)), "B": _sym(rng.standard_normal((size, size))) / 4,
              "t": 0.3, "w": rng.standard_normal(size), "X": rng.standard_normal((rows, size)),
              "Y": rng.standard_normal((p, rows))})
    return v


def test_issue_21s_table_has_forty_new_cases():
    assert len(ISSUE21) >= 40 and len(set(IDS21)) == len(ISSUE21)
    assert not set(IDS21) & {c[0] for c in CASES}
    assert all(c[4] == 2 for c in ISSUE21) and sum(c[3] is not None for c in ISSUE21) >= 40


@pytest.mark.parametrize("name, build, var, _, order", ISSUE21, ids=IDS21)
def test_issue_21_case_matches_finite_differences(name, build, var, _, order):
    assert md.check(build(), var, order=order, kinds=KINDS21) < 1e-6


def _sym4(h):
    """A Hessian by a symmetric matrix, compared on symmetric directions."""
    return (h + h.transpose(1, 0, 2, 3) + h.transpose(0, 1, 3, 2) + h.transpose(1, 0, 3, 2)) / 4


@pytest.mark.parametrize("name, build, var, reference, order", [c for c in ISSUE21 if c[3] is not None],
                         ids=[c[0] for c in ISSUE21 if c[3] is not None])
def test_issue_21_case_matches_jax_grad_and_hessian(name, build, var, reference, order):
    values = _values21()
    f = build()
    used = {k: values[k] for k in (u.node.name for u in f.variables)}
    key, symmetric = var.node.name, var.node.symmetric
    got_g = md.grad(f, var).evaluate(used)
    got_h = md.hessian(f, var).evaluate(used) if order == 2 else None
    with jax.enable_x64(True):
        def g(x):
            v = {k: jnp.asarray(u) for k, u in values.items()}
            v[key] = _sym(x) if symmetric else x
            return reference(v)
        x0 = jnp.asarray(values[key], dtype=jnp.float64)
        np.testing.assert_allclose(float(f.evaluate(used)), float(g(x0)), rtol=1e-9)
        want_g = np.asarray(jax.grad(g)(x0))
        want_h = np.asarray(jax.hessian(g)(x0)) if order == 2 else None
    if symmetric:
        got_g, want_g = _sym(got_g), _sym(want_g)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-7, atol=1e-9)
    if order == 2:
        if symmetric:
            got_h, want_h = _sym4(got_h), _sym4(want_h)
        np.testing.assert_allclose(got_h, want_h, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- reading the printed tree back

def _functions_by_printed_name(node):
    """The element-wise functions of node's matrix functions and divided differences, by the
    name their notation prints (tanhₘ(S), Δtanh(λ), Δ[u²](λ))."""
    out = {}
    for x in walk(node):
        if isinstance(x, MatFn):
            out[R.MATRIX_FUNCTIONS.get(x.fn.name, f"{x.fn.name}ₘ")] = x.fn
        if isinstance(x, DivDiff):
            out[f"Δ{R._divdiff_name(x.fn)}"] = x.fn
        if isinstance(x, (DivDiff3, DivDiff3Apply)):
            out[f"Δ²{R._divdiff_name(x.fn)}"] = x.fn
    return out


def _reader(fns):
    """notation_eval's evaluator, taught the decomposition parts and the spectral calls: each
    computed here with NumPy and SciPy, from the printed tree alone (matdiff's function table
    only for f and f′ of a matrix function)."""
    import scipy.linalg as sl
    original = notation_eval.evaluate

    def f_of(fn, x, order=0):
        return np.asarray(_values_of(fn, order, np.asarray(x, float), {}), float)

    def read(m, env, sizes, functions):
        ev = lambda x: read(x, env, sizes, functions)  # noqa: E731
        if isinstance(m, N.Sym) and m.role == "basis":
            size = D.resolve(m.dims[0], sizes)
            name = m.name
            pos = int(name) - 1 if name.isdigit() else (-int(name.split("−")[1]) - 1 if "−" in name else -1)
            e = np.zeros(size)
            e[pos] = 1.0
            return e
        if isinstance(m, N.Sym) and m.role == "frechet":  # L_f(X, E): the block [[X, E], [0, X]]
            fn, x, e = m.params
            xv, ev_ = np.asarray(ev(x), float), np.asarray(ev(e), float)
            k = xv.shape[0]
            block = np.block([[xv, ev_], [np.zeros_like(xv), xv]])
            return np.real({"exp": sl.expm, "log": sl.logm, "sqrt": sl.sqrtm}[fn](block)[:k, k:])
        if isinstance(m, N.Sym) and m.role == "frechet2":  # L²_f(X; E₁, E₂): f's 4 × 4 block matrix
            fn, x, e1, e2 = m.params
            xv, e1v, e2v = (np.asarray(ev(p), float) for p in (x, e1, e2))
            k, z = xv.shape[0], np.zeros_like(xv)
            block = np.block([[xv, e1v, e2v, z], [z, xv, z, e2v], [z, z, xv, e1v], [z, z, z, xv]])
            return np.real({"exp": sl.expm, "log": sl.logm, "sqrt": sl.sqrtm}[fn](block)[:k, 3 * k:])
        if isinstance(m, N.Sym) and m.role == "divdiff3":  # Δ²f(λ)[X, Y]_pc = Σ_q f[λ_p, λ_q, λ_c] X_pq Y_qc
            fn = fns[m.name]
            lam, x, y = (np.asarray(ev(p), float) for p in m.params[1:])
            return np.einsum("pqc,pq,qc->pc", _second_divided_differences(lambda u, k: f_of(fn, u, k), lam), x, y)
        if isinstance(m, N.Call) and (m.fn is None or R.defined_by_trace(m.fn)):  # (fₘ(S), Δh(λ): traced)
            name = m.name
            if name in ("Q", "eigvalsh", "Γ") or name in fns:
                arg = ev(m.arg)
                if name == "Γ":
                    gap = arg[None, :] - arg[:, None]
                    return np.where(np.eye(arg.size) > 0, 0.0, 1.0 / np.where(gap == 0, 1.0, gap))
                if name.startswith("Δ"):
                    fn, lam = fns[name], arg
                    gap = lam[:, None] - lam[None, :]
                    close = np.abs(gap) <= 1e-9 * np.maximum(np.abs(lam[:, None]), np.abs(lam[None, :]))
                    fl, slope = f_of(fn, lam), f_of(fn, (lam[:, None] + lam[None, :]) / 2, 1)
                    return np.where(close, slope, (fl[:, None] - fl[None, :]) / np.where(close, 1.0, gap))
                lam, u = np.linalg.eigh(arg)
                if name in fns:
                    return (u * f_of(fns[name], lam)) @ u.T
                return lam if name == "eigvalsh" else u
            if name in ("U", "V", "svdvals", "u₁", "v₁", "spectral"):
                u, s, vt = np.linalg.svd(ev(m.arg), full_matrices=False)
                return {"U": u, "V": vt.T, "svdvals": s, "u₁": u[:, 0], "v₁": vt[0], "spectral": s[0]}[name]
            if name in ("expm", "logm", "sqrtm"):
                return np.real({"expm": sl.expm, "logm": sl.logm, "sqrtm": sl.sqrtm}[name](ev(m.arg)))
        return original(m, env, sizes, functions)

    return read


def _second_divided_differences(f, lam):
    """T_pqc = f[λ_p, λ_q, λ_c] from f(u, k), the k-th derivative (k = 0, 1) at distinct λ:
    (f[x, y] − f[y, z])/(x − z), (f′(x) − f[x, z])/(x − z) where two agree, f″(x)/2 (central
    differences of f′) where all three do."""
    def first(x, y):
        return (f(x, 0) - f(y, 0)) / (x - y) if x != y else f(x, 1)

    def second(x, y, z):
        x, y, z = sorted((x, y, z))
        if x != z:
            return (first(x, y) - first(y, z)) / (x - z)
        h = 1e-5 * max(1.0, abs(x))
        return (f(x + h, 1) - f(x - h, 1)) / (4 * h)

    n = lam.size
    return np.array([[[second(lam[p], lam[q], lam[c]) for c in range(n)] for q in range(n)] for p in range(n)])


def _read_back(e, values, sizes, monkeypatch):
    """The printed tree of e, read by the reader, against matdiff's value; False where the
    tree is index notation (printed as such, not read)."""
    m = e.notation()
    if _has_index(m):
        return False
    read = _reader(_functions_by_printed_name(e.node))
    monkeypatch.setattr(notation_eval, "evaluate", read)  # its recursion comes back here
    got = read(m, values, sizes, {})
    monkeypatch.undo()
    want = e.evaluate(values)
    np.testing.assert_allclose(np.asarray(got, dtype=float), want, rtol=1e-8, atol=1e-10)
    return True


def _has_index(m):
    return isinstance(m, N.Index) or any(_has_index(k) for k in N.children(m))


READ_BACK = {}


@pytest.mark.parametrize("name, build, var, _, order", ISSUE21, ids=IDS21)
def test_issue_21_case_reads_back_from_its_printed_form(name, build, var, _, order, monkeypatch):
    values = _values21()
    f = build()
    g = md.grad(f, var)
    sizes = Sizes({"n": 4, "m": 3, "p": 2})
    used = {k: values[k] for k in (u.node.name for u in g.variables)}
    assert _read_back(g, used, sizes, monkeypatch), str(g)  # every gradient prints in matrix notation
    if order == 2:  # the Hessian as the linear map it applies to a direction: md.hvp
        V = md.matrix("V", *var.shape, symmetric=var.node.symmetric) if var.ndim == 2 else md.scalar("V")
        h = md.hvp(f, var, V)
        rng = np.random.default_rng(7)
        direction = rng.standard_normal(np.shape(values[var.node.name]))
        if var.node.symmetric:
            direction = _sym(direction)
        hv = {k: v for k, v in {**values, "V": direction}.items() if k in {u.node.name for u in h.variables}}
        READ_BACK[name] = _read_back(h, hv, sizes, monkeypatch)
        if not READ_BACK[name]:  # only a Hessian through the confluent f[λᵢ, λᵢ, λⱼ] prints in
            # index notation (it has no matrix notation yet); the second divided differences
            # print as Δ²f(λ)[X, Y], the block-triangular second Fréchet derivative as L²_f(X; E₁, E₂)
            assert any(isinstance(x, DivDiff2) for x in walk(md.hvp(f, var, V).simplify().node)), str(h)
