"""Issue 14's table: matrix powers, expm/logm/sqrtm, eigenvalue and singular-value functions,
each derivative checked by finite differences (md.check) and compared with JAX's autodiff
through jax.numpy.linalg (eigh, svd) and jax.scipy.linalg.expm, in float64.

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
