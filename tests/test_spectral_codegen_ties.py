"""Issue 21: generated code (NumPy, JAX, PyTorch) at repeated eigenvalues.  A second derivative
through eigenvectors divides by eigenvalue gaps; where the derivative has a limit at a tie the
generated code computes it (the same value as ``evaluate``, and as differences of the gradient
or as jax.hessian through jax.scipy.linalg.expm); where it has none (one eigenvalue of a
repeated group), NumPy and PyTorch functions raise ``EvaluationError`` as ``evaluate`` does,
and JAX's return NaN (under jit no value can raise: JAX's own convention)."""
import os
import warnings

import numpy as np
import pytest

import matdiff as md

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

S = md.matrix("S", "n", "n", symmetric=True)
T = md.matrix("T", "n", "n", symmetric=True)
a = md.vector("a", "n")
w = md.vector("w", "n")
LAM = md.eigvalsh(S)
AV = np.array([0.3, -1.2, 0.8])


def _backends():
    out = [pytest.param("numpy", id="numpy")]
    for name in ("jax", "torch"):
        out.append(pytest.param(name, id=name))
    return out


def _module(backend):
    if backend == "numpy":
        return np
    module = pytest.importorskip(backend)
    if backend == "jax":
        module.config.update("jax_enable_x64", True)
    return module


def _run(expr, backend, values, jit=False):
    """The compiled function's value, which must come without a RuntimeWarning (1/0, 0·∞)."""
    _module(backend)
    f = md.compile(expr, backend=backend)
    if jit:
        import jax
        f = jax.jit(f.unchecked)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        return np.asarray(f(**values), dtype=float)


def _matrix(spectrum, seed=0):
    q = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(spectrum),) * 2))[0]
    s = (q * np.asarray(spectrum, float)) @ q.T
    return (s + s.T) / 2


def _funm(s, f):
    lam, u = np.linalg.eigh(s)
    return (u * f(lam)) @ u.T


def _symmetric_direction(size, seed=1):
    e = np.random.default_rng(seed).standard_normal((size, size))
    return (e + e.T) / 2


def _directional(f, x, e, h=1e-5):
    """(f(x + he) − f(x − he))/2h, Richardson-extrapolated."""
    d = lambda t: (f(x + t * e) - f(x - t * e)) / (2 * t)  # noqa: E731
    return (4 * d(h / 2) - d(h)) / 3


def _used(expr, values):
    return {k: v for k, v in values.items() if k in {u.node.name for u in expr.variables}}


# --------------------------------------------------------------------------- gradients at ties

GRADIENTS = [
    (lambda: LAM[-1] + LAM[-2], lambda m: np.linalg.eigvalsh(m)[-2:].sum(), [1.0, 2.0, 2.0], None),
    (lambda: w.T @ LAM, lambda m: np.linalg.eigvalsh(m) @ [0.5, 3.0, 3.0], [1.0, 2.0, 2.0], [0.5, 3.0, 3.0]),
    (lambda: LAM[-1], lambda m: np.linalg.eigvalsh(m)[-1], [2.0, 2.0, 3.0], None),
    (lambda: a.T @ md.expm(S) @ a, lambda m: AV @ _funm(m, np.exp) @ AV, [0.5, 2.0, 2.0], None),
    (lambda: md.trace(md.logm(S) @ md.logm(S)), lambda m: np.sum(_funm(m, np.log) ** 2), [1.0, 1.0, 1.0], None),
]
GRADIENT_IDS = ["λ₂ + λ₃", "wᵀλ, w equal on the tie", "λ_max above a tie", "aᵀexpm(S)a", "‖logm(S)‖²"]


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("f, numpy_f, spectrum, wv", GRADIENTS, ids=GRADIENT_IDS)
def test_gradients_of_functions_symmetric_in_a_tie(backend, f, numpy_f, spectrum, wv):
    s = _matrix(spectrum, seed=4)
    values = {"S": s, "a": AV, "w": np.array(wv or [0.0, 0.0, 0.0])}
    g = md.grad(f(), S)
    used = _used(g, values)
    got = _run(g, backend, used)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, g.evaluate(used), rtol=1e-9, atol=1e-10)
    e = _symmetric_direction(3)
    np.testing.assert_allclose(np.sum(got * e), _directional(numpy_f, s, e), rtol=1e-7, atol=1e-8)


# --------------------------------------------------------------------------- Hessians through eigenvectors

THROUGH_EIGENVECTORS = [
    (lambda: w.T @ LAM, [1.0, 2.0, 2.0]),                        # w equal on the tie
    (lambda: LAM[-1] + LAM[-2], [1.0, 2.0, 2.0]),
    (lambda: md.sum(md.sigmoid(LAM) * LAM), [1.0, 1.0, 1.0]),   # a gradient that is not a matrix function
    (lambda: md.sum(md.sigmoid(LAM) * LAM), [0.5, 0.5, 3.0]),
    (lambda: LAM[-1] + LAM[-2], [1.0, 2.0, 2.0 + 1e-12]),       # nearly repeated: the limit, not ε/gap
]
EIGENVECTOR_IDS = ["wᵀλ", "λ₂ + λ₃", "Σσ(λ)λ at I", "Σσ(λ)λ at (0.5, 0.5, 3)", "λ₂ + λ₃ at gap 1e-12"]


@pytest.mark.parametrize("jit", [False, True], ids=["", "jit"])
@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("f, spectrum", THROUGH_EIGENVECTORS, ids=EIGENVECTOR_IDS)
def test_hessians_through_eigenvectors_at_a_tie(backend, jit, f, spectrum):
    if jit and backend != "jax":
        pytest.skip("jit is JAX's")
    s = _matrix(spectrum, seed=2)
    values = {"S": s, "w": np.array([0.5, 3.0, 3.0])}
    g, H = md.grad(f(), S), md.hessian(f(), S)
    used = _used(H, values)
    got = _run(H, backend, used, jit)
    assert np.all(np.isfinite(got)), got
    want = H.evaluate(used)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-8 * max(1.0, np.abs(want).max()))
    e = _symmetric_direction(3, seed=5)
    gu = _used(g, values)
    fd = _directional(lambda m: g.evaluate({**gu, "S": m}), s, e)
    np.testing.assert_allclose(np.einsum("ijkl,kl->ij", got, e), fd, rtol=1e-6, atol=1e-7)


NO_LIMIT = [
    (lambda: LAM[-1], [1.0, 2.0, 2.0]),
    (lambda: LAM[0] * LAM[-1], [1.0, 1.0, 2.0]),
    (lambda: w.T @ LAM, [1.0, 2.0, 2.0]),     # w differs on the tie
]


@pytest.mark.parametrize("jit", [False, True], ids=["", "jit"])
@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("f, spectrum", NO_LIMIT, ids=["λ_max", "λ₁λₙ", "wᵀλ"])
def test_hessians_with_no_limit_at_a_tie(backend, jit, f, spectrum):
    """NumPy and PyTorch raise evaluate's error; JAX returns NaN (it cannot raise under jit),
    never a finite number."""
    if jit and backend != "jax":
        pytest.skip("jit is JAX's")
    values = {"S": _matrix(spectrum, seed=2), "w": np.array([0.5, 1.0, 3.0])}
    H = md.hessian(f(), S)
    used = _used(H, values)
    with pytest.raises(md.EvaluationError, match="not differentiable here"):
        H.evaluate(used)
    if backend == "jax":
        assert np.all(np.isnan(_run(H, backend, used, jit)))
    else:
        with pytest.raises(md.EvaluationError, match="not differentiable here"):
            _run(H, backend, used)
    # away from the tie the same compiled function answers, and agrees with evaluate
    apart = {**used, "S": _matrix(np.array(spectrum) + [0.0, 0.0, 0.5] + [0.0, 0.25, 0.0], seed=2)}
    np.testing.assert_allclose(_run(H, backend, apart, jit), H.evaluate(apart), rtol=1e-8, atol=1e-10)


# --------------------------------------------------------------------------- Hessians through matrix functions

jax = None


def _jax_hessian(jax_f, s, values):
    jax_ = pytest.importorskip("jax")
    jsl = pytest.importorskip("jax.scipy.linalg")
    with jax_.enable_x64(True):
        v = {k: jax_.numpy.asarray(x) for k, x in values.items()}
        return np.asarray(jax_.hessian(lambda m: jax_f(jax_, jsl, (m + m.T) / 2, v))(s))


def _sym4(h):
    return (h + h.transpose(1, 0, 2, 3) + h.transpose(0, 1, 3, 2) + h.transpose(1, 0, 3, 2)) / 4


@pytest.mark.parametrize("jit", [False, True], ids=["", "jit"])
@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("spectrum", [[1.0, 2.0, 2.0], [1.0, 1.0, 1.0], [0.5, 0.5, 3.0], [1.0, 1.0 + 1e-12, 2.0]],
                         ids=["(1, 2, 2)", "I", "(0.5, 0.5, 3)", "gap 1e-12"])
@pytest.mark.parametrize("build, jax_f", [
    (lambda: a.T @ md.expm(S) @ a, lambda jx, jsl, m, v: v["a"] @ jsl.expm(m) @ v["a"]),
    (lambda: md.trace(md.expm(S / 2) @ T), lambda jx, jsl, m, v: jx.numpy.trace(jsl.expm(m / 2) @ v["T"])),
], ids=["aᵀexpm(S)a", "tr(expm(S/2)T)"])
def test_hessians_through_a_matrix_function_at_a_tie(backend, jit, spectrum, build, jax_f):
    """The issue's example: NumPy, JAX and PyTorch gave 15.8, 21.1 and 16.4 for 24.1."""
    if jit and backend != "jax":
        pytest.skip("jit is JAX's")
    s = _matrix(spectrum, seed=6)
    values = {"S": s, "a": AV, "T": _matrix([0.7, 1.3, 2.1], seed=7)}
    f = build()
    H = md.hessian(f, S)
    used = _used(H, values)
    got = _run(H, backend, used, jit)
    assert np.all(np.isfinite(got))
    want = _jax_hessian(jax_f, s, values)
    np.testing.assert_allclose(_sym4(got), _sym4(want), rtol=1e-9, atol=1e-9 * np.abs(want).max())
    np.testing.assert_allclose(got, H.evaluate(used), rtol=1e-8, atol=1e-9 * np.abs(want).max())


def test_the_issue_s_example_in_generated_code():
    """⟨V, ∇²[aᵀexpm(S)a] V⟩ at S = diag(1, 2, 2) (exactly repeated) against second differences."""
    s, av = np.diag([1.0, 2.0, 2.0]), np.array([1.0, 2.0, 3.0])
    v = _symmetric_direction(3, seed=3)
    f = lambda m: av @ _funm(m, np.exp) @ av  # noqa: E731
    h = 1e-4
    second = (f(s + h * v) - 2 * f(s) + f(s - h * v)) / h ** 2
    H = md.hessian(a.T @ md.expm(S) @ a, S)
    for backend in ("numpy", "jax", "torch"):
        if backend != "numpy" and not _available(backend):
            continue
        got = _run(H, backend, {"S": s, "a": av})
        np.testing.assert_allclose(np.einsum("ij,ijkl,kl->", v, got, v), second, rtol=1e-6)


def _available(name):
    try:
        _module(name)
    except pytest.skip.Exception:
        return False
    return True


@pytest.mark.parametrize("backend", _backends())
def test_near_a_tie_with_no_limit_the_formula_stands(backend):
    """Eigenvalues 2·10⁻⁹ apart (relative) are distinct for evaluate: λ_max's Hessian there is
    large (the gap divides) but exists, and the compiled function gives evaluate's value."""
    s = _matrix([1.0, 2.0, 2.0 + 4e-9], seed=2)
    H = md.hessian(LAM[-1], S)
    want = H.evaluate(S=s)
    np.testing.assert_allclose(_run(H, backend, {"S": s}), want, rtol=1e-6, atol=1e-9 * np.abs(want).max())


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("spectrum", [[1.0, 2.0, 2.0], [1.0, 1.0, 1.0]], ids=["(1, 2, 2)", "I"])
def test_float32_at_a_tie(backend, spectrum):
    """In float32 the limit is computed in float32: right to its precision, never NaN."""
    s = _matrix(spectrum, seed=6)
    H = md.hessian(a.T @ md.expm(S) @ a, S)
    want = H.evaluate(S=s, a=AV)
    _module(backend)
    got = md.compile(H, backend=backend)(S=s.astype(np.float32), a=AV.astype(np.float32))
    assert str(got.dtype).endswith("float32")
    np.testing.assert_allclose(np.asarray(got, dtype=float), want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("spectrum, dtype, tied", [
    ([1.0, 2.0, 3.0], np.float64, False),
    ([1.0, 2.0, 2.0], np.float64, True),
    ([1.0, 2.0, 2.0 + 1e-9], np.float64, True),       # within 4√ε: the tie terms matter
    ([1.0, 2.0, 2.0 + 1e-6], np.float64, False),
    ([1.0, 2.0, 2.0 + 1e-6], np.float32, True),       # float32's √ε is 3.5e-4
    ([1.0, 1.0 + 1e-2, 5.0], np.float32, False),
    ([1e-300, 2e-300, 3e-300], np.float64, False),    # the test is relative: scale does not tie
    ([float("nan"), 1.0, 2.0], np.float64, True),     # cannot tell: the tied code answers
], ids=["apart", "tie", "near", "split", "float32 near", "float32 apart", "tiny apart", "nan"])
def test_compiled_functions_take_the_tie_terms_only_near_a_tie(spectrum, dtype, tied):
    """The tie terms cost 2–5× the rest of a Hessian through eigenvectors, so NumPy and
    PyTorch code runs them only where the variable has two eigenvalues within 4√ε."""
    from matdiff.generate import _near_ties

    q = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))[0]
    m = (q * np.asarray(spectrum)) @ q.T if np.all(np.isfinite(spectrum)) else np.diag(spectrum)
    assert _near_ties(((m + m.T) / 2).astype(dtype)) is tied


def test_the_compiled_hessian_is_right_on_either_side_of_the_dispatch():
    S = md.matrix("S", "n", "n", symmetric=True)
    a = md.vector("a", "n")
    h = md.hessian(a.T @ md.expm(S) @ a, S)
    fn = md.compile(h)
    q = np.linalg.qr(np.random.default_rng(1).standard_normal((4, 4)))[0]
    av = np.array([0.3, -1.0, 0.7, 0.2])
    for spectrum in ([0.5, 1.0, 2.0, 3.0], [0.5, 2.0, 2.0, 3.0]):
        m = (q * spectrum) @ q.T
        m = (m + m.T) / 2
        np.testing.assert_allclose(fn(a=av, S=m), h.evaluate(a=av, S=m), rtol=1e-9, atol=1e-9)
    assert fn.__wrapped__ is not fn and callable(fn.unchecked)
