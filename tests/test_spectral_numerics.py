"""Issue 21: spectral derivatives stay right at hard spectra — tiny, huge, widely spread,
nearly repeated — in `evaluate` and in generated NumPy, JAX and PyTorch code, against the
same formula evaluated in 60-digit arithmetic (mpmath) on the same eigenvectors; and points
outside a function's domain are refused, never answered with NaN."""
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import matdiff as md
from matdiff.evaluate import _divided_differences, _second_divided_differences
from matdiff import functions as F

from .test_spectral_codegen_ties import _module  # NumPy, or JAX in float64, or PyTorch

mp = pytest.importorskip("mpmath")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

S = md.matrix("S", "n", "n", symmetric=True)
a = md.vector("a", "n")
BUILD = {"log": md.logm, "sqrt": md.sqrtm, "exp": md.expm,
         "sin": lambda s: md.matrix_function(s, "sin"), "tanh": lambda s: md.matrix_function(s, "tanh")}
MP = {"log": mp.log, "sqrt": mp.sqrt, "exp": mp.exp, "sin": mp.sin, "tanh": mp.tanh}
POSITIVE = {"log", "sqrt"}


def _mp_divided(f, lam):
    mp.mp.dps = 400  # f(1e-150) − f(3e-150) needs its digits
    L = [mp.mpf(float(x)) for x in lam]
    return [[mp.diff(f, L[i]) if L[i] == L[j] else (f(L[i]) - f(L[j])) / (L[i] - L[j])
             for j in range(len(L))] for i in range(len(L))]


def _reference_gradient(name, s, av):
    """∇ aᵀf(S)a = U (F ⊙ UᵀaaᵀU) Uᵀ, F in 60 digits, on NumPy's eigenvectors of s."""
    lam, U = np.linalg.eigh(s)
    F_ = _mp_divided(MP[name], lam)
    mp.mp.dps = 60
    Um, A = mp.matrix(U.tolist()), mp.matrix(av.tolist())
    B = Um.T * A * A.T * Um
    G = mp.matrix(len(lam), len(lam))
    for i in range(len(lam)):
        for j in range(len(lam)):
            G[i, j] = F_[i][j] * B[i, j]
    return np.array((Um * G * Um.T).tolist(), dtype=float)


def _matrix(spectrum, seed=0):
    q = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(spectrum),) * 2))[0]
    s = (q * np.asarray(spectrum, float)) @ q.T
    return (s + s.T) / 2


HARD = {  # the families of the issue: tiny, widely spread, huge, nearly and exactly repeated
    "tiny": [1e-9, 2e-9, 3e-9],
    "spread": [1.0, 50.0, 1e10],
    "huge": [1e8, 2e8, 5e8],
    "near": [1.0, 1.0 + 1e-10, 2.0],
    "repeated": [0.5, 2.0, 2.0],
    "moderate": [0.3, 1.1, 2.5],
}
CASES = [(name, family) for name in BUILD for family in HARD
         if not (name in ("exp", "sin", "tanh") and max(HARD[family]) > 50)]


@pytest.mark.parametrize("name,family", CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_spectral_gradients_are_right_at_hard_spectra(name, family):
    s = _matrix(HARD[family])
    av = np.array([0.3, -1.2, 0.8])
    g = md.grad(a.T @ BUILD[name](S) @ a, S)
    want = _reference_gradient(name, s, av)
    scale = np.abs(want).max()
    got = g.evaluate(S=s, a=av)
    assert np.abs(got - want).max() <= 1e-12 * scale, (name, family)
    # generated code: NumPy's eigh is the reference's; the others decompose on their own,
    # within the eigenvectors' conditioning (‖S‖ε/gap)
    gaps = np.diff(np.unique(HARD[family]))
    cond = max(HARD[family]) / gaps.min() if len(gaps) else 1.0
    for backend in ("numpy", "jax", "torch"):
        _module(backend)
        code = np.asarray(md.compile(g, backend=backend)(S=s, a=av), dtype=float)
        tol = 1e-12 if backend == "numpy" else max(1e-12, 1e-15 * cond)
        assert np.abs(code - want).max() <= tol * scale, (name, family, backend)


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "sin", "tanh"])
@pytest.mark.parametrize("pair", [(3e-9, 1e-9), (1.0, 1.0 + 1e-12), (1.0, 50.0), (1e10, 50.0),
                                  (2.0, 2.0), (5.0, 4.9999999), (1e-150, 3e-150)])
def test_divided_differences_are_accurate_at_every_gap(name, pair):
    if name in ("exp", "sin", "tanh") and max(pair) > 50:
        pytest.skip("f overflows or oscillates past double precision there")
    lam = np.array(pair)
    got = _divided_differences(F.fn(name), lam, {})
    want = _mp_divided(MP[name], lam)
    for i in range(2):
        for j in range(2):
            assert abs(got[i, j] - float(want[i][j])) <= 1e-14 * abs(float(want[i][j])) + 1e-300


@pytest.mark.parametrize("p", [3.0, -1.0, 0.5, 2.5])
def test_divided_differences_of_powers(p):
    for pair in [(3e-9, 1e-9), (1.0, 1.0 + 1e-12), (1.0, 50.0), (2.0, 2.0), (5.0, 4.9999999)]:
        lam = np.array(pair)
        got = _divided_differences(F.fn("pow", p), lam, {})
        want = _mp_divided(lambda t: t ** p, lam)
        assert abs(got[0, 1] - float(want[0][1])) <= 1e-13 * abs(float(want[0][1]))


@pytest.mark.parametrize("name", ["exp", "log", "sqrt"])
def test_second_divided_differences_near_and_far(name):
    """f[λᵢ, λᵢ, λⱼ] (Hessians through a matrix function): the quotient far apart, its limit
    to second order within CLOSE, both right to 1e-9 against 60 digits."""
    mp.mp.dps = 60
    f = MP[name]
    for pair in [(1.0, 2.0), (1.0, 1.0 + 1e-7), (1.0, 1.0 + 1e-4), (2.0, 2.0), (0.3, 5.0)]:
        lam = np.array(pair)
        second = np.array([float(mp.diff(f, mp.mpf(x), 2)) for x in pair])
        got = _second_divided_differences(F.fn(name), lam, second, {})
        a_, b_ = (mp.mpf(x) for x in pair)
        want = mp.diff(f, a_, 2) / 2 if a_ == b_ else (mp.diff(f, a_) - (f(a_) - f(b_)) / (a_ - b_)) / (a_ - b_)
        assert abs(got[0, 1] - float(want)) <= 1e-9 * abs(float(want)), (name, pair)


@given(family=st.sampled_from(["tiny", "huge", "spread", "near", "repeated"]),
       scale=st.floats(-2, 2), seed=st.integers(0, 10_000),
       name=st.sampled_from(["log", "sqrt"]))
@settings(max_examples=25, deadline=None)
def test_hard_spectra_drawn_at_random(family, scale, seed, name):
    """Spectra drawn from the hard families (scaled by 10^±2 more), every gradient within
    1e-11 of the 60-digit reference, in evaluate and generated NumPy code."""
    rng = np.random.default_rng(seed)
    spread = 10.0 ** rng.uniform(0, 12, 3)  # condition up to 1e12: what a stored matrix resolves
    base = {"tiny": 10.0 ** rng.uniform(-150, -21) * spread, "huge": 10.0 ** rng.uniform(0, 100) * spread,
            "spread": spread, "near": 1.0 + np.array([0, 1e-10, 1.0]),
            "repeated": np.array([1.0, 1.0, 3.0])}[family] * 10.0 ** scale
    s = _matrix(np.sort(base), seed)
    av = rng.standard_normal(3)
    g = md.grad(a.T @ BUILD[name](S) @ a, S)
    want = _reference_gradient(name, s, av)
    got = g.evaluate(S=s, a=av)
    code = np.asarray(md.compile(g)(S=s, a=av), dtype=float)
    scale_ = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-11 * scale_
    assert np.abs(code - want).max() <= 1e-11 * scale_


# --------------------------------------------------------------------------- domains

@pytest.mark.parametrize("build,spectrum,words", [
    (md.sqrtm, [-1.0, 1.0, 2.0], "square root"),
    (md.logm, [-1.0, 1.0, 2.0], "logarithm"),
    (md.logm, [0.0, 1.0, 2.0], "logarithm"),
    (lambda s: md.matrix_function(s, lambda u: u ** 1.5), [-1.0, 1.0, 2.0], "not defined"),
])
def test_outside_the_domain_is_an_error_naming_the_eigenvalue(build, spectrum, words):
    s = np.diag(spectrum)  # exactly these eigenvalues (a rotated 0 may round to ±1e-17)
    with pytest.raises(md.EvaluationError, match=words):
        build(S).evaluate(S=s)
    with pytest.raises(md.EvaluationError, match=words):
        md.grad(a.T @ build(S) @ a, S).evaluate(S=s, a=np.ones(3))


def test_a_zero_eigenvalue_has_a_square_root():
    s = _matrix([0.0, 1.0, 4.0])
    lam, U = np.linalg.eigh(s)
    np.testing.assert_allclose(md.sqrtm(S).evaluate(S=s), (U * np.sqrt(np.maximum(lam, 0))) @ U.T,
                               atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_compiled_functions_refuse_a_nonsymmetric_matrix_declared_symmetric(backend):
    """The decompositions read one triangle; a matrix whose triangles disagree was answered
    for a matrix the caller did not give (22.17 or 43.98 against 40.64)."""
    _module(backend)
    f = md.compile(md.hessian(a.T @ md.expm(S) @ a, S), backend=backend)
    s = np.array([[1.0, 2.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 3.0]])
    with pytest.raises(md.EvaluationError, match="declared symmetric"):
        f(S=s, a=np.ones(3))
    sym = (s + s.T) / 2
    want = md.hessian(a.T @ md.expm(S) @ a, S).evaluate(S=sym, a=np.ones(3))
    np.testing.assert_allclose(np.asarray(f(S=sym, a=np.ones(3)), dtype=float), want, rtol=1e-9)
    if backend == "jax":  # under jit the values are not known: the check stands aside
        import jax
        np.testing.assert_allclose(np.asarray(jax.jit(f)(S=sym, a=np.ones(3))), want, rtol=1e-9)


@pytest.mark.parametrize("scale", [1e-9, 1.0, 1e9])
def test_hessians_through_eigenvectors_at_any_scale(scale):
    """Distinct eigenvalues of 10⁻⁹ are not 'repeated' (the test is relative): the Hessian of
    λ_max there is the directional difference of its gradient, as at scale 1."""
    s = _matrix(np.array([1.0, 2.0, 3.0]) * scale, seed=3)
    H = md.hessian(md.eigvalsh(S)[-1], S)
    g = md.grad(md.eigvalsh(S)[-1], S)
    rng = np.random.default_rng(4)
    v = rng.standard_normal((3, 3))
    v = (v + v.T) / 2
    h = 1e-6 * scale
    fd = (g.evaluate(S=s + h * v) - g.evaluate(S=s - h * v)) / (2 * h)
    got = np.einsum("ijkl,kl->ij", H.evaluate(S=s), v)
    np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-7 * np.abs(fd).max())
    with pytest.raises(md.EvaluationError, match="coincide"):
        H.evaluate(S=np.diag([1.0, 2.0, 2.0]) * scale)


# --------------------------------------------------------------------------- non-smooth points

X = md.matrix("X", "m", "k")
LAM = md.eigvalsh(S)


def _directional(f, x, e, h=1e-6):
    """(f(x + he) − f(x − he))/2h, Richardson-extrapolated: a one-sided kink shows as a
    mismatch, a smooth f agrees to ~1e-9."""
    d = lambda t: (f(x + t * e) - f(x - t * e)) / (2 * t)  # noqa: E731
    return (4 * d(h / 2) - d(h)) / 3


def _symmetric_direction(size, seed=1):
    e = np.random.default_rng(seed).standard_normal((size, size))
    return (e + e.T) / 2


def _tall(singular, rows=5, seed=2):
    """A rows × len(singular) matrix with exactly these singular values."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((rows, len(singular))))[0]
    v = np.linalg.qr(rng.standard_normal((len(singular),) * 2))[0]
    return (u * np.asarray(singular, float)) @ v.T


@pytest.mark.parametrize("f, spectrum, what", [
    (lambda: LAM[-1], [1.0, 2.0, 2.0], "λ = 2 "),                # λ_max at a repeated top eigenvalue
    (lambda: LAM[0], [0.0, 0.0, 2.0], "λ = 0 "),                 # λ_min at a repeated zero one
    (lambda: LAM[1], [1.0, 1.0, 1.0], "λ = 1 "),                 # any single eigenvalue at S = I
    (lambda: md.vector("w", "n").T @ LAM, [1.0, 2.0, 2.0], "λ = 2 "),  # w differs on the repeated pair
])
def test_a_single_eigenvalue_at_a_tie_is_refused(f, spectrum, what):
    """Issue 21: ∇λ_max(S) at diag(1, 2, 2) was e₃e₃ᵀ, one subgradient, silently."""
    s = _matrix(spectrum)
    values = {"S": s, "w": np.array([0.5, -1.0, 3.0])}
    g = md.grad(f(), S)
    used = {k: v for k, v in values.items() if k in {u.node.name for u in g.variables}}
    with pytest.raises(md.EvaluationError, match="not differentiable here.*repeated eigenvalue, " + what):
        g.evaluate(used)


@pytest.mark.parametrize("f, numpy_f, spectrum, w", [
    (lambda: LAM[-1] + LAM[-2], lambda m: np.linalg.eigvalsh(m)[-2:].sum(), [1.0, 2.0, 2.0], None),
    (lambda: md.vector("w", "n").T @ LAM, lambda m: np.linalg.eigvalsh(m) @ [0.5, 3.0, 3.0],
     [1.0, 2.0, 2.0], [0.5, 3.0, 3.0]),
    (lambda: LAM[-1], lambda m: np.linalg.eigvalsh(m)[-1], [2.0, 2.0, 3.0], None),   # the tie is below
    (lambda: a.T @ md.expm(S) @ a, lambda m: _av @ _funm(m, np.exp) @ _av, [0.5, 2.0, 2.0], None),
    (lambda: md.trace(md.logm(S) @ md.logm(S)), lambda m: np.sum(_funm(m, np.log) ** 2), [1.0, 1.0, 1.0], None),
], ids=["λ₂ + λ₃", "wᵀλ, w equal on the tie", "λ_max above a tie", "aᵀexpm(S)a", "‖logm(S)‖²"])
def test_spectral_functions_symmetric_in_a_tie_are_differentiated_there(f, numpy_f, spectrum, w):
    """A function of the eigenvalues that treats a repeated group alike is differentiable at
    the tie; its gradient does not depend on the eigenvectors chosen, and is given."""
    s = _matrix(spectrum, seed=4)
    values = {"S": s, "a": _av}
    if w is not None:
        values["w"] = np.array(w)
    g = md.grad(f(), S)
    used = {k: v for k, v in values.items() if k in {u.node.name for u in g.variables}}
    got = g.evaluate(used)
    e = _symmetric_direction(3)
    np.testing.assert_allclose(np.sum(got * e), _directional(numpy_f, s, e), rtol=1e-7, atol=1e-8)


_av = np.array([0.3, -1.2, 0.8])


def _funm(s, f):
    lam, u = np.linalg.eigh(s)
    return (u * f(lam)) @ u.T


def test_nearly_repeated_eigenvalues_are_not_a_tie():
    """A gap of 10⁻¹⁰ (relative) is a simple eigenvalue: ∇λ_max = uₙuₙᵀ, finite and right
    to the eigenvectors' conditioning (ε/gap)."""
    q = np.linalg.qr(np.random.default_rng(5).standard_normal((3, 3)))[0]
    s = (q * [1.0, 2.0, 2.0 + 2e-10]) @ q.T
    s = (s + s.T) / 2
    got = md.grad(LAM[-1], S).evaluate(S=s)
    np.testing.assert_allclose(got, np.outer(q[:, 2], q[:, 2]), atol=1e-5)


def _nuclear(x):
    return np.linalg.svd(x, compute_uv=False).sum()


@pytest.mark.parametrize("f, numpy_f, singular", [
    (lambda: md.norm(X, "nuc", smaller="k"), _nuclear, [2.0, 2.0, 1.0]),                 # repeated σ, full rank
    (lambda: md.norm(X, "nuc", smaller="k"), _nuclear, [1.5, 1.5, 1.5]),
    (lambda: md.sum(md.svdvals(X, smaller="k") ** 3), lambda x: np.sum(np.linalg.svd(x, compute_uv=False) ** 3),
     [2.0, 2.0, 1.0]),
    (lambda: md.sum(md.svdvals(X, smaller="k") ** 3), lambda x: np.sum(np.linalg.svd(x, compute_uv=False) ** 3),
     [2.0, 1.0, 0.0]),                                                      # rank-deficient: σ³ is smooth
    (lambda: md.norm(X, 2, smaller="k") ** 2, lambda x: np.linalg.norm(x, 2) ** 2, [0.0, 0.0, 0.0]),  # X = 0: ∇ = 0
    (lambda: md.norm(X, 2, smaller="k"), lambda x: np.linalg.norm(x, 2), [3.0, 1.0, 1.0]),  # the tie is below σ₁
], ids=["‖X‖_* at σ = (2, 2, 1)", "‖X‖_* at σ = 1.5(1, 1, 1)", "Σσ³ at σ = (2, 2, 1)", "Σσ³ at rank 2",
        "‖X‖₂² at 0", "‖X‖₂ above a tie"])
def test_singular_value_functions_at_ties_that_are_smooth(f, numpy_f, singular):
    """Issue 21: the nuclear norm and Σσᵢ³ at repeated singular values of a full-rank X, and
    ∇‖X‖₂² at X = 0 (which is 0: ‖hE‖₂² = O(h²)), were refused; they are differentiable."""
    x = _tall(singular)
    got = md.grad(f(), X).evaluate(X=x)
    assert np.all(np.isfinite(got))
    for seed in range(3):
        e = np.random.default_rng(seed).standard_normal(x.shape)
        np.testing.assert_allclose(np.sum(got * e), _directional(numpy_f, x, e), rtol=1e-7, atol=1e-8)
    if not any(singular):
        assert np.all(got == 0)


@pytest.mark.parametrize("f, singular, words", [
    (lambda: md.norm(X, "nuc", smaller="k"), [2.0, 1.0, 0.0], "rank-deficient"),
    (lambda: md.norm(X, "nuc", smaller="k"), [0.0, 0.0, 0.0], "rank-deficient"),
    (lambda: md.norm(X, 2, smaller="k"), [0.0, 0.0, 0.0], "rank-deficient"),            # ‖X‖₂ at X = 0
    (lambda: md.norm(X, 2, smaller="k"), [3.0, 3.0, 1.0], "largest singular value is repeated"),
    (lambda: md.norm(X, 2, smaller="k") ** 2, [3.0, 3.0, 1.0], "largest singular value is repeated"),
    (lambda: md.svdvals(X, smaller="k")[1], [3.0, 2.0, 2.0], r"σ = 2 \(2 times\)"),
])
def test_non_smooth_singular_value_functions_are_refused(f, singular, words):
    x = _tall(singular)
    with pytest.raises(md.EvaluationError, match="not differentiable here.*" + words):
        md.grad(f(), X).evaluate(X=x)


def test_second_derivatives_through_singular_vectors_at_a_rank_deficient_x():
    """At σ = 0 the nuclear norm has no derivative (refused); ‖X‖₂, ‖X‖₂² (σ₁ simple) and
    Σσᵢ³ (a C² function of the singular values) have Hessians there, which do not depend on
    the null-space vectors chosen: given, and equal to differences of the gradient."""
    x = _tall([2.0, 1.0, 0.0])
    with pytest.raises(md.EvaluationError, match="not differentiable here.*rank-deficient"):
        md.hessian(md.norm(X, "nuc", smaller="k"), X).evaluate(X=x)
    for f in (md.norm(X, 2, smaller="k"), md.norm(X, 2, smaller="k") ** 2,
              md.sum(md.svdvals(X, smaller="k") ** 3)):
        H, g = md.hessian(f, X).evaluate(X=x), md.grad(f, X)
        e = np.random.default_rng(0).standard_normal(x.shape)
        fd = _directional(lambda y: g.evaluate(X=y), x, e, h=1e-7)  # Σσ³ is C², not C³, at σ = 0:
        np.testing.assert_allclose(np.einsum("ijkl,kl->ij", H, e), fd, rtol=1e-5, atol=1e-6)  # O(h)


# --------------------------------------------------------------------------- Hessians at repeated eigenvalues

jax = pytest.importorskip("jax")
jsl = pytest.importorskip("jax.scipy.linalg")
T = md.matrix("T", "n", "n", symmetric=True)


def _sym4(h):
    return (h + h.transpose(1, 0, 2, 3) + h.transpose(0, 1, 3, 2) + h.transpose(1, 0, 3, 2)) / 4


@pytest.mark.parametrize("spectrum", [[1.0, 2.0, 2.0], [1.0, 1.0, 1.0], [0.5, 0.5, 3.0], [1.0, 1.0 + 1e-12, 2.0]],
                         ids=["(1, 2, 2)", "I", "(0.5, 0.5, 3)", "gap 1e-12"])
@pytest.mark.parametrize("build, jax_f", [
    (lambda: a.T @ md.expm(S) @ a, lambda m, v: v["a"] @ jsl.expm(m) @ v["a"]),
    (lambda: md.trace(md.expm(S / 2) @ T), lambda m, v: jax.numpy.trace(jsl.expm(m / 2) @ v["T"])),
], ids=["aᵀexpm(S)a", "tr(expm(S/2)T)"])
def test_the_hessian_through_a_matrix_function_at_a_repeated_eigenvalue(spectrum, build, jax_f):
    """Issue 21: the Hessian of aᵀexpm(S)a exists at a repeated eigenvalue (a smooth function
    of a symmetric matrix is twice differentiable everywhere) but was refused ("coincide"), and
    generated code gave 15.8, 21.1 or 16.4 for 24.1. evaluate now takes its limit from split
    spectra; it equals jax.hessian through jax.scipy.linalg.expm (Padé, no eigenvectors)."""
    s = _matrix(spectrum, seed=6)
    t_ = _matrix([0.7, 1.3, 2.1], seed=7)
    values = {"S": s, "a": _av, "T": t_}
    f = build()
    used = {k: v for k, v in values.items() if k in {u.node.name for u in f.variables}}
    got = md.hessian(f, S).evaluate(used)
    with jax.enable_x64(True):
        want = np.asarray(jax.hessian(lambda m: jax_f((m + m.T) / 2, {k: jax.numpy.asarray(v) for k, v in values.items()}))(s))
    np.testing.assert_allclose(_sym4(got), _sym4(want), rtol=1e-9, atol=1e-9 * np.abs(want).max())


def test_the_issue_s_example_hessian_at_a_repeated_eigenvalue():
    """⟨V, ∇²[aᵀexpm(S)a] V⟩ at S = diag(1, 2, 2) against second differences of the value."""
    s, av = np.diag([1.0, 2.0, 2.0]), np.array([1.0, 2.0, 3.0])
    H = md.hessian(a.T @ md.expm(S) @ a, S).evaluate(S=s, a=av)
    v = _symmetric_direction(3, seed=3)
    f = lambda m: av @ _funm(m, np.exp) @ av  # noqa: E731
    h = 1e-4
    second = (f(s + h * v) - 2 * f(s) + f(s - h * v)) / h ** 2
    np.testing.assert_allclose(np.einsum("ij,ijkl,kl->", v, H, v), second, rtol=1e-6)


@pytest.mark.parametrize("f, spectrum", [
    (lambda: md.vector("w", "n").T @ LAM, [1.0, 2.0, 2.0]),     # w equal on the tie: Σ over it is smooth
    (lambda: LAM[-1] + LAM[-2], [1.0, 2.0, 2.0]),
    (lambda: md.sum(md.sigmoid(LAM) * LAM), [1.0, 1.0, 1.0]),   # a gradient that is not a matrix function
], ids=["wᵀλ", "λ₂ + λ₃", "Σσ(λ)λ at I"])
def test_hessians_through_eigenvectors_that_exist_at_a_tie(f, spectrum):
    s = _matrix(spectrum, seed=2)
    values = {"S": s, "w": np.array([0.5, 3.0, 3.0])}
    g = md.grad(f(), S)
    used = {k: v for k, v in values.items() if k in {u.node.name for u in g.variables}}
    H = md.hessian(f(), S).evaluate(used)
    e = _symmetric_direction(3, seed=5)
    fd = _directional(lambda m: g.evaluate({**used, "S": m}), s, e, h=1e-5)
    np.testing.assert_allclose(np.einsum("ijkl,kl->ij", H, e), fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("f, spectrum", [
    (lambda: LAM[-1], [1.0, 2.0, 2.0]),
    (lambda: LAM[0] * LAM[-1], [1.0, 1.0, 2.0]),
    (lambda: md.vector("w", "n").T @ LAM, [1.0, 2.0, 2.0]),     # w differs on the tie
], ids=["λ_max", "λ₁λₙ", "wᵀλ"])
def test_hessians_with_no_limit_at_a_tie_are_refused(f, spectrum):
    values = {"S": _matrix(spectrum, seed=2), "w": np.array([0.5, 1.0, 3.0])}
    H = md.hessian(f(), S)
    used = {k: v for k, v in values.items() if k in {u.node.name for u in H.variables}}
    with pytest.raises(md.EvaluationError, match="not differentiable here"):
        H.evaluate(used)


def test_the_nuclear_norm_hessian_at_a_repeated_singular_value():
    """A full-rank X with σ = (2, 2, 1): ‖X‖_* = tr((XᵀX)^½) is smooth there; its Hessian equals
    differences of the gradient."""
    x = _tall([2.0, 2.0, 1.0])
    f = md.norm(X, "nuc")
    H, g = md.hessian(f, X).evaluate(X=x), md.grad(f, X)
    e = np.random.default_rng(4).standard_normal(x.shape)
    fd = _directional(lambda y: g.evaluate(X=y), x, e, h=1e-5)
    np.testing.assert_allclose(np.einsum("ijkl,kl->ij", H, e), fd, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- Hessians at hard spectra

def _mp_dd3(f, x, y, z):
    """f[x, y, z] in the working precision: confluent where arguments repeat."""
    x, y, z = sorted([x, y, z])
    d = lambda u, v: mp.diff(f, u) if u == v else (f(u) - f(v)) / (u - v)  # noqa: E731
    return mp.diff(f, x, 2) / 2 if x == z else (d(x, y) - d(y, z)) / (x - z)


def _reference_hvp(name, s, av, v):
    """∇²[aᵀf(S)a][V] = U M Uᵀ, Mᵢⱼ = Σₖ f[λᵢ, λⱼ, λₖ](V̂ᵢₖŴₖⱼ + ŴᵢₖV̂ₖⱼ) with V̂ = UᵀVU and
    Ŵ = UᵀaaᵀU — the second-order Daleckii–Krein formula, in 400 then 60 digits, on NumPy's
    eigenvectors of s."""
    lam, U = np.linalg.eigh(s)
    mp.mp.dps = 400
    L = [mp.mpf(float(x)) for x in lam]
    k = len(L)
    T3 = [[[_mp_dd3(MP[name], L[i], L[j], L[m]) for m in range(k)] for j in range(k)] for i in range(k)]
    mp.mp.dps = 60
    Um, A, Vm = mp.matrix(U.tolist()), mp.matrix(av.tolist()), mp.matrix(v.tolist())
    W, Vh = Um.T * A * A.T * Um, Um.T * Vm * Um
    M = mp.matrix(k, k)
    for i in range(k):
        for j in range(k):
            M[i, j] = sum(T3[i][j][m] * (Vh[i, m] * W[m, j] + W[i, m] * Vh[m, j]) for m in range(k))
    return np.array((Um * M * Um.T).tolist(), dtype=float)


@pytest.mark.parametrize("name,family", CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_spectral_hessians_are_right_at_hard_spectra(name, family):
    """Issue 21: ∇²[aᵀf(S)a][V] in evaluate against the second-order Daleckii–Krein formula in
    extended precision, at tiny, spread, huge, nearly (gap 10⁻¹⁰, which the eigenvectors' gaps
    turned into 4·10⁻⁶ errors before evaluate took the limit) and exactly repeated spectra."""
    s = _matrix(HARD[family])
    v = _symmetric_direction(3, seed=11)
    h = md.hvp(a.T @ BUILD[name](S) @ a, S, md.matrix("V", "n", "n", symmetric=True))
    want = _reference_hvp(name, s, _av, v)
    got = h.evaluate(S=s, a=_av, V=v)
    assert np.abs(got - want).max() <= 1e-10 * np.abs(want).max(), (name, family)


# --------------------------------------------------------------------------- second divided differences

MP3 = {**MP, "cos": mp.cos, "sinh": mp.sinh, "cosh": mp.cosh}
THREE = {  # spectra whose every triple f[λᵢ, λⱼ, λₖ] is checked, confluent ones included
    "tiny": [1e-9, 2e-9, 3e-9], "tinier": [1e-150, 3e-150, 2e-150], "near": [1.0, 1.0 + 1e-10, 2.0],
    "repeated": [0.5, 2.0, 2.0], "cluster": [1.0, 1.005, 1.02, 0.999], "moderate": [0.3, 1.1, 2.5],
    "spread": [1.0, 50.0, 1e10], "negative": [-2.0, -1.999, 0.5],
}


def _fn(name):
    return {"cube": F.fn("pow", 3.0), "inverse": F.fn("pow", -1.0), "pow2.5": F.fn("pow", 2.5)}.get(name) or F.fn(name)


def _mp_fn(name):
    return {"cube": lambda t: t ** 3, "inverse": lambda t: 1 / t, "pow2.5": lambda t: t ** mp.mpf(2.5)}.get(name) \
        or MP3[name]


def _three_cases():
    for name in ["exp", "log", "sqrt", "sin", "cos", "sinh", "cosh", "tanh", "cube", "inverse", "pow2.5"]:
        for family, spectrum in THREE.items():
            if name in ("log", "sqrt", "inverse", "pow2.5") and min(spectrum) <= 0:
                continue
            if name not in ("log", "sqrt", "inverse", "pow2.5", "cube") and max(spectrum) > 50:
                continue  # f overflows or oscillates past double precision there
            if name == "inverse" and family == "tinier":
                continue  # 1/(λᵢλⱼλₖ) = 1e450 overflows
            yield name, family


@pytest.mark.parametrize("name,family", list(_three_cases()))
def test_divided_differences_over_three_points(name, family):
    """Tᵢⱼₖ = f[λᵢ, λⱼ, λₖ] (DivDiff3, the second-order Daleckii–Krein rule) against 400-digit
    arithmetic at every triple: far apart, close in absolute terms (1e-9, 1e-150), nearly and
    exactly repeated (f″/2), and clustered, to 1e-13."""
    from matdiff.evaluate import _divided_differences3
    lam = np.array(THREE[family])
    got = _divided_differences3(_fn(name), lam, {})
    mp.mp.dps = 400
    L = [mp.mpf(float(x)) for x in lam]
    f = _mp_fn(name)
    for i in range(len(L)):
        for j in range(len(L)):
            for k in range(len(L)):
                want = float(_mp_dd3(f, L[i], L[j], L[k]))
                assert abs(got[i, j, k] - want) <= 1e-13 * abs(want) + 1e-300, (i, j, k, got[i, j, k], want)


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_generated_second_divided_differences_match_evaluate(backend, dtype):
    """The generated DivDiff3 computes evaluate's values (in float32 to its precision)."""
    from matdiff.expr import Expr
    from matdiff.ir import DivDiff3, Eigh
    _module(backend)
    for name in ["exp", "log", "sqrt", "sin", "cos", "sinh", "cosh", "tanh", "cube", "inverse", "pow2.5"]:
        node = DivDiff3(_fn(name), Eigh("values", S.node))
        f = md.compile(Expr(node), backend=backend)
        for family in ("tiny", "near", "repeated", "cluster", "moderate"):
            spectrum = THREE[family]
            if dtype is np.float32 and family == "tiny":
                spectrum = [1e-4, 2e-4, 3e-4]  # float32's eigh resolves these (1e-9 is below its ε)
            s = _matrix(spectrum, seed=1)
            want = Expr(node).evaluate(S=s)
            got = np.asarray(f(S=s.astype(dtype)), dtype=float)
            tol = 1e-12 if dtype is np.float64 else 2e-4
            assert np.abs(got - want).max() <= tol * np.abs(want).max(), (name, family)


APPLY = {  # DivDiff3Apply's spectra: pairs apart only, close pairs besides (1e-4 apart, repeated), all close
    "apart": [0.1, 0.7, 1.3, 2.2, 3.0, 4.1, 5.5, 7.0],
    "mixed": [0.1, 0.1001, 0.7, 1.3, 1.3, 2.2, 3.0, 3.005, 5.5, 9.0],
    "tiny": [1e-9, 2e-9, 3e-9, 4e-9],
    "spread": [0.5, 20.0, 300.0, 300.0 * (1 + 1e-7)],
}


@pytest.mark.parametrize("backend", ["evaluate", "numpy", "jax", "torch"])
def test_second_divided_differences_applied_without_the_tensor(backend):
    """Issue 21: M_pc = Σ_q f[λ_p, λ_q, λ_c] X_pq Y_qc (DivDiff3Apply: a Hessian-vector
    product's second-order Daleckii–Krein rule) from the first divided differences where λ_p
    and λ_c are apart and from T's own values where they are close, equals the contraction
    of the full T (evaluate's, 1e-13 against 400 digits) to 1e-12 — in evaluate and in
    generated code — and md.hvp of aᵀf(S)a builds it instead of T (n³)."""
    from matdiff.evaluate import _divided_differences3
    from matdiff.expr import Expr
    from matdiff.ir import DivDiff3, DivDiff3Apply, Eigh, walk
    if backend != "evaluate":
        _module(backend)
    X, Y = md.matrix("X", "n", "n"), md.matrix("Y", "n", "n")
    rng = np.random.default_rng(7)
    # JAX and PyTorch run the same generated code with another function's series: three of
    # them (every function's series is compared in each backend by the test above)
    names = ["exp", "log", "sqrt", "sin", "tanh", "cube", "pow2.5"] if backend in ("evaluate", "numpy") \
        else ["exp", "log", "cube"]
    for name in names:
        node = DivDiff3Apply(_fn(name), Eigh("values", S.node), X.node, Y.node)
        f = Expr(node).evaluate if backend == "evaluate" else md.compile(Expr(node), backend=backend)
        for family, spectrum in APPLY.items():
            if backend == "jax" and len(spectrum) != 4:  # each new size is a compile of every
                continue  # operation; test_spectral_codegen_ties covers JAX's gather at more
            s = np.diag(spectrum)  # λ exact in every backend's eigh: T compared at the same points
            x, y = rng.standard_normal((2, len(spectrum), len(spectrum)))
            T = _divided_differences3(_fn(name), np.array(spectrum), {})
            want = np.einsum("pqc,pq,qc->pc", T, x, y)
            got = np.asarray(f(S=s, X=x, Y=y), dtype=float)
            assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max(), (name, family)
    h = md.hvp(a.T @ md.expm(S) @ a, S, md.matrix("V", "n", "n", symmetric=True))
    kinds = {type(n) for n in walk(h.node)}
    assert DivDiff3Apply in kinds and DivDiff3 not in kinds


GENERATED = [(name, family) for name, family in CASES if family in ("tiny", "spread", "near", "repeated")]


@pytest.mark.parametrize("name,family", GENERATED, ids=[f"{n}-{f}" for n, f in GENERATED])
def test_generated_spectral_hessians_at_hard_spectra(name, family):
    """Issue 21: md.hvp of aᵀf(S)a in generated NumPy, JAX and PyTorch code against the
    second-order Daleckii–Krein formula in extended precision — float64 to 1e-10 (JAX and
    PyTorch decompose on their own: within the eigenvectors' conditioning ‖S‖ε/gap), and
    float32 to 1e-4 where float32 resolves the spectrum."""
    s = _matrix(HARD[family])
    v = _symmetric_direction(3, seed=11)
    h = md.hvp(a.T @ BUILD[name](S) @ a, S, md.matrix("V", "n", "n", symmetric=True))
    want = _reference_hvp(name, s, _av, v)
    scale = np.abs(want).max()
    gaps = np.diff(np.unique(HARD[family]))
    cond = max(HARD[family]) / gaps.min() if len(gaps) else 1.0
    for backend in ("numpy", "jax", "torch"):
        _module(backend)
        f = md.compile(h, backend=backend)
        got = np.asarray(f(S=s, a=_av, V=v), dtype=float)
        tol = 1e-10 if backend == "numpy" else max(1e-10, 1e-15 * cond)
        assert np.abs(got - want).max() <= tol * scale, (name, family, backend)
        if family in ("tiny", "near", "repeated"):  # float32 (near: a tie to float32)
            s32 = s if family != "tiny" else _matrix(np.array(HARD[family]) * 1e5)  # 1e-4 apart
            want32 = want if family != "tiny" else _reference_hvp(name, s32, _av, v)
            got = f(S=s32.astype(np.float32), a=_av.astype(np.float32), V=v.astype(np.float32))
            assert str(got.dtype).endswith("float32")
            got = np.asarray(got, dtype=float)
            assert np.abs(got - want32).max() <= 1e-4 * np.abs(want32).max(), (name, family, backend, "float32")


@pytest.mark.parametrize("name", ["exp", "log", "tanh"])
@pytest.mark.parametrize("family", ["tiny", "repeated", "moderate"])
def test_full_spectral_hessians_are_the_second_order_daleckii_krein_form(name, family):
    """md.hessian (the 4-index tensor) applied to V equals the extended-precision reference,
    and holds no eigenvalue gap 1/(λⱼ − λᵢ): the second derivative of f(S) is T = f[λᵢ, λⱼ, λₖ]
    and eigenvectors alone, so it needs no limit at repeated eigenvalues."""
    from matdiff.ir import DivDiff3, EigGap, walk
    s = _matrix(HARD[family])
    v = _symmetric_direction(3, seed=11)
    H = md.hessian(a.T @ BUILD[name](S) @ a, S)
    kinds = {type(n) for n in walk(H.node)}
    assert DivDiff3 in kinds and EigGap not in kinds
    want = _reference_hvp(name, s, _av, v)
    got = np.einsum("ijkl,kl->ij", H.evaluate(S=s, a=_av), v)
    assert np.abs(got - want).max() <= 1e-10 * np.abs(want).max()
    code = np.einsum("ijkl,kl->ij", np.asarray(md.compile(H)(S=s, a=_av), dtype=float), v)
    assert np.abs(code - want).max() <= 1e-10 * np.abs(want).max()


def test_every_analytic_function_takes_the_second_divided_differences():
    """Issue 21: every analytic function md.matrix_function takes on a symmetric S — the
    table's and Python functions built from them — has exact first and second divided
    differences (DivDiff3.has_series): its Hessian is the second-order Daleckii–Krein form
    (DivDiff3, no eigenvalue gap Γ(λ)), its HVP DivDiff3Apply; relu, |·|, step and sign, and
    callables using them, take DivDiff3Apply too (their chain rule, by the kinks' pieces),
    refused where an eigenvalue sits at their kink, and the divided differences of a kink by
    series are refused naming the functions that have one."""
    from matdiff.evaluate import _divided_differences3
    from matdiff.ir import DivDiff3, DivDiff3Apply, EigGap, walk
    V = md.matrix("V", "n", "n", symmetric=True)
    smooth = [k for k in F.TABLE if k not in ("relu", "abs", "step", "sign", "pow")]
    for f in smooth + list(CALLABLES.values()):
        e = a.T @ md.matrix_function(S, f) @ a
        hvp, hessian = (md.hvp(e, S, V), md.hessian(e, S))
        kinds, full = {type(n) for n in walk(hvp.node)}, {type(n) for n in walk(hessian.node)}
        assert DivDiff3Apply in kinds and EigGap not in kinds, f
        assert DivDiff3 in full and EigGap not in full, f
    s, v = _matrix(HARD["moderate"]), _symmetric_direction(3, seed=11)
    for f in ["relu", "abs", lambda u: md.relu(u - 1.0) * u]:
        e = a.T @ md.matrix_function(S, f) @ a
        h = md.hvp(e, S, V)
        kinds = {type(n) for n in walk(h.node)}
        assert EigGap not in kinds and DivDiff3Apply in kinds, f
        g = md.grad(e, S)
        fd = _directional(lambda m: g.evaluate(S=m, a=_av), s, v, h=1e-5)
        np.testing.assert_allclose(h.evaluate(S=s, a=_av, V=v), fd, rtol=1e-7, atol=1e-9)
        kink = np.diag([0.0, 0.5, 2.0]) if not callable(f) else np.diag([1.0, 0.5, 2.0])
        with pytest.raises(md.EvaluationError, match="not differentiable here.*kink"):
            g.evaluate(S=kink, a=_av)
    # relu(u)·u is C¹ and not C² at 0: its gradient exists at a zero eigenvalue, its Hessian not
    f = a.T @ md.matrix_function(S, lambda u: md.relu(u) * u) @ a
    kink, g = _matrix([0.0, 0.5, 2.0], seed=5), md.grad(f, S)
    kink[np.diag_indices(3)] -= np.linalg.eigvalsh(kink)[0]  # λ = 0 to rounding
    numeric = lambda m: _av @ _funm(m, lambda t: np.maximum(t, 0) * t) @ _av  # noqa: E731
    np.testing.assert_allclose(np.sum(g.evaluate(S=kink, a=_av) * v), _directional(numeric, kink, v),
                               rtol=1e-7, atol=1e-9)
    with pytest.raises(md.EvaluationError, match="not differentiable here twice.*kink"):
        md.hessian(f, S).evaluate(S=kink, a=_av)
    lam = np.array([-0.1, 0.2, 0.5])  # relu's second divided differences across its kink, exact

    def first(x, y):
        return (max(x, 0) - max(y, 0)) / (x - y) if x != y else float(x > 0)

    def second(x, y, z):
        x, y, z = sorted((x, y, z), key=lambda t: (t == y, t))  # two unequal points outside, if any
        return 0.0 if x == z else (first(x, y) - first(y, z)) / (x - z)
    want = [[[second(p, q, r) for r in lam] for q in lam] for p in lam]
    np.testing.assert_allclose(_divided_differences3(F.fn("relu"), lam, {}), want, rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------- every analytic function

CALLABLES = {  # Python functions, traced on a scalar: their divided differences by the chain rule
    "u³ + sin u": lambda u: u ** 3 + md.sin(u),
    "eᵘ/(1 + u²)": lambda u: md.exp(u) / (1 + u * u),
    "√u tanh u": lambda u: md.sqrt(u) * md.tanh(u),
    "σ(2u) − log1p(u²)/3": lambda u: md.sigmoid(2 * u) - md.log1p(u * u) / 3,
}
CALLABLES_MP = {
    "u³ + sin u": lambda t: t ** 3 + mp.sin(t),
    "eᵘ/(1 + u²)": lambda t: mp.exp(t) / (1 + t * t),
    "√u tanh u": lambda t: mp.sqrt(t) * mp.tanh(t),
    "σ(2u) − log1p(u²)/3": lambda t: 1 / (1 + mp.exp(-2 * t)) - mp.log1p(t * t) / 3,
}
MORE_MP = {"sigmoid": lambda t: 1 / (1 + mp.exp(-t)), "softplus": lambda t: mp.log(1 + mp.exp(t)),
           "log1p": mp.log1p, "expm1": mp.expm1, "arctan": mp.atan, "tan": mp.tan, **CALLABLES_MP}
GROWS = {"expm1", "eᵘ/(1 + u²)"}  # overflow past 700: not at huge or spread spectra
OSCILLATES = {"tan"}  # poles at (k + ½)π: only at spectra below 50


def _more_fn(name):
    return CALLABLES[name] if name in CALLABLES else name


def _more_cases(families):
    for name in MORE_MP:
        for family in families:
            big = max(HARD[family]) > 50
            if big and (name in GROWS or name in OSCILLATES):
                continue
            yield name, family


def _mp_dd3_separated(f, x, y, z):
    """f[x, y, z] in 1500 digits, repeated points moved apart by 10⁻¹⁵⁰ relative (an error
    far below double precision; mp.diff loses the digits of f near 1e-150)."""
    mp.mp.dps = 1500
    given = [mp.mpf(p) for p in (x, y, z)]
    x, y, z = (p if p not in given[:k] else p * (1 + k * mp.mpf(10) ** -150) if p else k * mp.mpf(10) ** -300
               for k, p in enumerate(given))
    d = lambda u, v: (f(u) - f(v)) / (u - v)  # noqa: E731
    return (d(x, y) - d(y, z)) / (x - z)


def _mp_dd2_separated(f, x, y):
    mp.mp.dps = 1500
    x, y = mp.mpf(x), mp.mpf(y)
    if x == y:
        y = x * (1 + mp.mpf(10) ** -150) if x else mp.mpf(10) ** -300
    return (f(x) - f(y)) / (x - y)


def _reference_more(f, s, av, v, decomposition=None):
    """(∇, ∇²[V]) of aᵀf(S)a by the Daleckii–Krein formulas in extended precision, on NumPy's
    eigenvectors of s (or on ``decomposition``, another backend's (λ, U))."""
    lam, U = np.linalg.eigh(s) if decomposition is None else decomposition
    k = len(lam)
    F2 = [[_mp_dd2_separated(f, lam[i], lam[j]) for j in range(k)] for i in range(k)]
    T3 = [[[_mp_dd3_separated(f, lam[i], lam[j], lam[m]) for m in range(k)] for j in range(k)]
          for i in range(k)]
    mp.mp.dps = 60
    Um, A, Vm = mp.matrix(U.tolist()), mp.matrix(av.tolist()), mp.matrix(v.tolist())
    W, Vh = Um.T * A * A.T * Um, Um.T * Vm * Um
    G, M = mp.matrix(k, k), mp.matrix(k, k)
    for i in range(k):
        for j in range(k):
            G[i, j] = F2[i][j] * W[i, j]
            M[i, j] = sum(T3[i][j][m] * (Vh[i, m] * W[m, j] + W[i, m] * Vh[m, j]) for m in range(k))
    return (np.array((Um * G * Um.T).tolist(), dtype=float), np.array((Um * M * Um.T).tolist(), dtype=float))


def _drawn_spectrum(family, scale, rng, name):
    """Three eigenvalues of a hard family drawn with ``rng`` (tiny to 1e-150, huge to 1e100,
    condition to 1e12, nearly and exactly repeated), scaled by 10^scale, kept where the
    function ``name`` is finite in double precision."""
    spread = 10.0 ** rng.uniform(0, 12, 3)
    base = {"tiny": 10.0 ** rng.uniform(-150, -21) * spread, "huge": 10.0 ** rng.uniform(0, 100) * spread,
            "spread": spread, "near": 1.0 + np.array([0, 1e-10, 1.0]),
            "repeated": np.array([1.0, 1.0, 3.0])}[family] * 10.0 ** scale
    if name == "tan":
        base = base / max(1.0, base.max()) * 1.2  # below the first pole π/2
    if (name in GROWS or name == "σ(2u) − log1p(u²)/3") and base.max() > 300:
        base = base / base.max() * 300  # e^λ finite; log1p(λ²) of 1e200 overflows λ²
    return base


MORE = list(_more_cases(["tiny", "spread", "huge", "near", "repeated", "moderate"]))


@pytest.mark.parametrize("name,family", MORE, ids=[f"{n}-{f}" for n, f in MORE])
def test_every_analytic_function_at_hard_spectra(name, family):
    """Issue 21: the gradient, Hessian-vector product and Hessian of aᵀf(S)a for σ, softplus,
    log1p, expm1, arctan, tan and Python functions (traced: the chain rule of divided
    differences) at tiny, spread, huge, nearly and exactly repeated spectra, against the
    Daleckii–Krein formulas in extended precision — evaluate, and generated NumPy, JAX and
    PyTorch code (JAX and PyTorch decompose on their own: within ‖S‖ε/gap)."""
    s = _matrix(HARD[family])
    v = _symmetric_direction(3, seed=11)
    f = a.T @ md.matrix_function(S, _more_fn(name)) @ a
    want_g, want_h = _reference_more(MORE_MP[name], s, _av, v)
    g, h = md.grad(f, S), md.hvp(f, S, md.matrix("V", "n", "n", symmetric=True))
    H = md.hessian(f, S)
    scale_g, scale_h = np.abs(want_g).max(), max(np.abs(want_h).max(), 1e-300)
    assert np.abs(g.evaluate(S=s, a=_av) - want_g).max() <= 1e-12 * scale_g, "gradient"
    assert np.abs(h.evaluate(S=s, a=_av, V=v) - want_h).max() <= 1e-10 * scale_h, "hvp"
    full = np.einsum("ijkl,kl->ij", H.evaluate(S=s, a=_av), v)
    assert np.abs(full - want_h).max() <= 1e-10 * scale_h, "hessian"
    gaps = np.diff(np.unique(HARD[family]))
    cond = max(HARD[family]) / gaps.min() if len(gaps) else 1.0
    for backend in ("numpy", "jax", "torch"):
        _module(backend)
        tol = 1e-10 if backend == "numpy" else max(1e-10, 1e-15 * cond)
        got = np.asarray(md.compile(g, backend=backend)(S=s, a=_av), dtype=float)
        assert np.abs(got - want_g).max() <= tol * scale_g, (backend, "gradient")
        got = np.asarray(md.compile(h, backend=backend)(S=s, a=_av, V=v), dtype=float)
        assert np.abs(got - want_h).max() <= tol * scale_h, (backend, "hvp")
        if backend == "numpy":
            got = np.einsum("ijkl,kl->ij", np.asarray(md.compile(H)(S=s, a=_av), dtype=float), v)
            assert np.abs(got - want_h).max() <= tol * scale_h, (backend, "hessian")


MORE_THREE = [(name, family) for name in MORE_MP for family in THREE
              if not (name in ("log1p", "√u tanh u") and min(THREE[family]) < 0)
              and not (max(THREE[family]) > 50 and (name in GROWS or name in OSCILLATES or name == "σ(2u) − log1p(u²)/3"))
              and not (name == "tan" and max(THREE[family]) > 1.5)]


@pytest.mark.parametrize("name,family", MORE_THREE, ids=[f"{n}-{f}" for n, f in MORE_THREE])
def test_first_and_second_divided_differences_of_every_analytic_function(name, family):
    """F = f[λᵢ, λⱼ] and T = f[λᵢ, λⱼ, λₖ] at every pair and triple — 1e-150 apart, 1e-9
    apart, clustered, nearly and exactly repeated, spread to 1e10 — against 1500-digit
    arithmetic, in evaluate and in generated NumPy, JAX and PyTorch code: each entry to
    5e-13 of itself for the table's functions (the quotient over gaps of 10⁻² costs
    ε|F|/(10⁻²|T|)), to 5e-13 of the largest for callables (whose terms may cancel)."""
    from matdiff.evaluate import _divided_differences3
    from matdiff.expr import Expr
    from matdiff.ir import DivDiff, DivDiff3, Eigh
    from matdiff.library import _elementwise_fn
    fn = _elementwise_fn(_more_fn(name))
    lam = np.array(THREE[family])
    got = {"F": _divided_differences(fn, lam, {}), "T": _divided_differences3(fn, lam, {})}
    k = len(lam)
    want = {"F": np.array([[float(_mp_dd2_separated(MORE_MP[name], lam[i], lam[j])) for j in range(k)]
                           for i in range(k)]),
            "T": np.array([[[float(_mp_dd3_separated(MORE_MP[name], lam[i], lam[j], lam[m]))
                             for m in range(k)] for j in range(k)] for i in range(k)])}
    values = np.array([float(MORE_MP[name](mp.mpf(x))) for x in lam])
    for part in ("F", "T"):  # a callable's terms may cancel: to the size of its terms
        terms = np.abs(values).max() / max(1.0, np.abs(lam).max()) ** (1 if part == "F" else 2)
        floor = max(np.abs(want[part]).max(), terms) if name in CALLABLES else 0.0
        err = np.abs(got[part] - want[part]) <= 5e-13 * np.maximum(np.abs(want[part]), floor) + 1e-300
        assert err.all(), (part, got[part][~err], want[part][~err])
    s = np.diag(lam)  # λ exact in every backend's eigh
    for backend in ("numpy", "jax", "torch"):
        _module(backend)
        for part, node in (("F", DivDiff(fn, Eigh("values", S.node))), ("T", DivDiff3(fn, Eigh("values", S.node)))):
            code = np.asarray(md.compile(Expr(node), backend=backend)(S=s), dtype=float)
            order = np.argsort(lam)  # eigh sorts the eigenvalues
            w = want[part][np.ix_(*[order] * (2 if part == "F" else 3))]
            terms = np.abs(values).max() / max(1.0, np.abs(lam).max()) ** (1 if part == "F" else 2)
            floor = max(np.abs(w).max(), terms) if name in CALLABLES else 0.0
            assert np.all(np.abs(code - w) <= 5e-13 * np.maximum(np.abs(w), floor) + 1e-300), (backend, part)


@given(family=st.sampled_from(["tiny", "huge", "spread", "near", "repeated"]),
       scale=st.floats(-2, 2), seed=st.integers(0, 10_000), name=st.sampled_from(sorted(MORE_MP)))
@settings(max_examples=20, deadline=None)
def test_every_analytic_function_at_hard_spectra_drawn_at_random(family, scale, seed, name):
    """Spectra drawn from the hard families (tiny to 1e-150, huge to 1e100, condition to 1e12,
    nearly and exactly repeated, scaled by 10^±2): the gradient and Hessian-vector product of
    aᵀf(S)a in evaluate and generated NumPy code within 1e-10 of the extended-precision
    reference, wherever f is finite there (a refusal is a failure)."""
    rng = np.random.default_rng(seed)
    base = _drawn_spectrum(family, scale, rng, name)
    s = _matrix(np.sort(base), seed)
    av = rng.standard_normal(3)
    v = _symmetric_direction(3, seed=seed)
    f = a.T @ md.matrix_function(S, _more_fn(name)) @ a
    want_g, want_h = _reference_more(MORE_MP[name], s, av, v)
    g, h = md.grad(f, S), md.hvp(f, S, md.matrix("V", "n", "n", symmetric=True))
    for got_g, got_h in ((g.evaluate(S=s, a=av), h.evaluate(S=s, a=av, V=v)),
                         (md.compile(g)(S=s, a=av), md.compile(h)(S=s, a=av, V=v))):
        assert np.abs(np.asarray(got_g) - want_g).max() <= 1e-10 * np.abs(want_g).max()
        assert np.abs(np.asarray(got_h) - want_h).max() <= 1e-10 * max(np.abs(want_h).max(), 1e-300)


EVERY_MP = {**MP, **MORE_MP}  # the five of BUILD and every other analytic function
BOUNDED = {"exp", "sin", "tanh"}  # overflow or oscillate past double precision above 50


@given(family=st.sampled_from(["tiny", "huge", "spread", "near", "repeated"]),
       scale=st.floats(-2, 2), seed=st.integers(0, 10_000), name=st.sampled_from(sorted(EVERY_MP)),
       backend=st.sampled_from(["evaluate", "numpy", "jax", "torch"]))
@settings(max_examples=30, deadline=None)
def test_every_spectral_function_drawn_at_random_in_every_backend(family, scale, seed, name, backend):
    """Issue 21's sweep: spectra drawn from the hard families (tiny to 1e-150, huge to 1e100,
    condition to 1e12, nearly and exactly repeated, scaled by 10^±2), every function of
    md.matrix_function (expm, logm, sqrtm, sin, tanh, σ, softplus, log1p, expm1, arctan, tan
    and traced callables), the gradient and the Hessian-vector product of aᵀf(S)a against the
    Daleckii–Krein formulas in 1500-digit arithmetic, in evaluate or one backend's generated
    code (drawn): within 1e-10 of the largest entry — for JAX and PyTorch, which decompose S
    on their own, the formulas on their own eigendecomposition. A refusal is a failure: f is
    finite at every spectrum drawn."""
    rng = np.random.default_rng(seed)
    base = _drawn_spectrum(family, scale, rng, name)
    if name in BOUNDED and base.max() > 50:
        base = base / base.max() * 50
    spectrum = np.sort(base)
    s = _matrix(spectrum, seed)
    av, v = rng.standard_normal(3), _symmetric_direction(3, seed=seed)
    build = BUILD[name] if name in BUILD else lambda m: md.matrix_function(m, _more_fn(name))
    f = a.T @ build(S) @ a
    g, h = md.grad(f, S), md.hvp(f, S, md.matrix("V", "n", "n", symmetric=True))
    decomposition = None  # evaluate and NumPy: NumPy's eigh, the reference's
    if backend == "evaluate":
        got_g, got_h = g.evaluate(S=s, a=av), h.evaluate(S=s, a=av, V=v)
    else:
        module = _module(backend)
        got_g = md.compile(g, backend=backend)(S=s, a=av)
        got_h = md.compile(h, backend=backend)(S=s, a=av, V=v)
        if backend != "numpy":
            # JAX and PyTorch decompose s on their own, and the result is ill-conditioned in s
            # itself: each backward-stable eigh moves λ by up to ε‖S‖, so at {1e-76, 1e-67, 1e-64}
            # NumPy's smallest λ is 1e-4 (relative) from s's exact one, and ∇aᵀ√S a moves with
            # it; the formulas are checked on the backend's own (λ, U) instead
            lam, vectors = module.numpy.linalg.eigh(module.numpy.asarray(s)) if backend == "jax" else \
                module.linalg.eigh(module.tensor(s))
            decomposition = (np.asarray(lam, dtype=float), np.asarray(vectors, dtype=float))
    want_g, want_h = _reference_more(EVERY_MP[name], s, av, v, decomposition)
    for got, want, what in ((got_g, want_g, "gradient"), (got_h, want_h, "hvp")):
        got = np.asarray(got, dtype=float)
        assert np.abs(got - want).max() <= 1e-10 * max(np.abs(want).max(), 1e-300), (what, name, family, backend)


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_every_analytic_function_in_float32(backend):
    """Generated code for σ, softplus, log1p, expm1, arctan, tan and traced callables keeps
    float32 (no constant promotes it) and agrees with evaluate's float64 gradient and HVP to
    float32's precision, at eigenvalues 10⁻³ apart (where their series are taken)."""
    _module(backend)
    s, v = _matrix([0.3, 1.1, 1.1 + 1e-3], seed=2), _symmetric_direction(3, seed=3)
    V = md.matrix("V", "n", "n", symmetric=True)
    values = {"S": s, "a": _av, "V": v}
    for name in MORE_MP:
        f = a.T @ md.matrix_function(S, _more_fn(name)) @ a
        for x in (md.grad(f, S), md.hvp(f, S, V)):
            used = {k: values[k] for k in {u.node.name for u in x.variables}}
            want = x.evaluate(used)
            got = md.compile(x, backend=backend)(**{k: np.asarray(w, np.float32) for k, w in used.items()})
            assert str(got.dtype).endswith("float32"), (name, backend)
            got = np.asarray(got, dtype=float)
            assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), (name, backend)
