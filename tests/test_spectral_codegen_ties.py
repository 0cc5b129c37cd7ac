"""Issue 21: generated code (NumPy, JAX, PyTorch) at repeated eigenvalues.  A second derivative
through eigenvectors divides by eigenvalue gaps; where the derivative has a limit at a tie the
generated code computes it (the same value as ``evaluate``, and as differences of the gradient
or as jax.hessian through jax.scipy.linalg.expm); where it has none (one eigenvalue of a
repeated group), NumPy and PyTorch functions raise ``EvaluationError`` as ``evaluate`` does,
and JAX's return NaN (under jit no value can raise: JAX's own convention).  The tie terms run
under a branch (an if block; lax.cond in JAX), only at a tie.  With checks (md.compile's
default) a result that depends on which vectors a decomposition chose at a tie (∇λ_max at a
repeated top eigenvalue) is refused, as evaluate refuses it."""
import functools
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


_COMPILED: dict = {}  # (id(expr), backend, jit): (expr, its function), for a test that runs it twice


def _run(expr, backend, values, jit=False):
    """The compiled function's value, which must come without a RuntimeWarning (1/0, 0·∞);
    an expression is compiled (and jitted: seconds in XLA) once, at its first run."""
    _module(backend)
    key = (id(expr), backend, jit)
    if key not in _COMPILED:  # the expression is kept with it: its id is not reused
        f = md.compile(expr, backend=backend)
        if jit:
            import jax
            f = jax.jit(f.unchecked)
        _COMPILED[key] = (expr, f)
    f = _COMPILED[key][1]
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


@pytest.mark.parametrize("jit", [False, True], ids=["", "jit"])
@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("second", ["hvp", "hessian"])
def test_second_derivatives_of_the_nuclear_norm_at_a_rank_deficient_matrix(backend, jit, second):
    """At a rank-deficient X (σ₃ ≈ 10⁻¹⁶, not 0) the nuclear norm's HVP and Hessian divide by σ
    and have no tie terms: the output is finite but 10¹⁵ wrong, so compiled code computes it
    again with σ₃ at two tiny values, finds that it moves (no limit at σ = 0) and refuses
    (NumPy, PyTorch, JAX outside jit; JAX under jit gives NaN), as evaluate does (Σσᵢ³'s, which
    has a limit there, is answered: tests/test_spectral_sweep.py); at full rank it answers
    evaluate's value, which finite differences of the gradient confirm."""
    if jit and backend != "jax":
        pytest.skip("jit is JAX's")
    X, V = md.matrix("X", 4, 3), md.matrix("V", 4, 3)
    f = md.norm(X, "nuc")
    out = md.hvp(f, X, V) if second == "hvp" else md.hessian(f, X)
    rng = np.random.default_rng(3)
    low = rng.standard_normal((4, 2)) @ rng.standard_normal((2, 3))
    v = rng.standard_normal((4, 3))
    used = _used(out, {"X": low, "V": v})
    with pytest.raises(md.EvaluationError, match="rank-deficient"):
        out.evaluate(used)
    if jit:
        assert np.all(np.isnan(_run(out, backend, used, jit)))
    else:
        with pytest.raises(md.EvaluationError, match="not differentiable here.*rank-deficient"):
            _run(out, backend, used)
    full = {**used, "X": low + 0.5 * rng.standard_normal((4, 3))}
    np.testing.assert_allclose(_run(out, backend, full, jit), out.evaluate(full), rtol=1e-8, atol=1e-10)
    g = md.grad(f, X)
    fd = _directional(lambda m: g.evaluate(X=m), full["X"], v)
    hv = out.evaluate(full) if second == "hvp" else np.einsum("ijkl,kl->ij", out.evaluate(full), v)
    np.testing.assert_allclose(hv, fd, rtol=1e-6, atol=1e-8)


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


TIE_SPECTRA = [
    ([1.0, 2.0, 3.0], np.float64, False),
    ([1.0, 2.0, 2.0], np.float64, True),
    ([1.0, 2.0, 2.0 + 1e-9], np.float64, True),       # within √ε: the tie terms matter
    ([1.0, 2.0, 2.0 + 1e-6], np.float64, False),
    ([1.0, 2.0, 2.0 + 1e-6], np.float32, True),       # float32's √ε is 3.5e-4
    ([1.0, 1.0 + 1e-2, 5.0], np.float32, False),
    ([1e-300, 2e-300, 3e-300], np.float64, False),    # the test is relative: scale does not tie
]
TIE_SPECTRA_IDS = ["apart", "tie", "near", "split", "float32 near", "float32 apart", "tiny apart"]


def _spying(source, backend):
    """The function ``source`` defines, and the list of the branches its calls took (True:
    the tie terms): a line is added to each arm of NumPy's and PyTorch's if block, JAX's
    ``_tie_cond`` is wrapped.  (With checks the function's body is ``_f_spectra``'s.)"""
    taken = []
    if backend == "jax":
        namespace = {}
        exec(source, namespace)
        cond = namespace["_tie_cond"]

        def spy(tied, with_ties, without):
            taken.append(bool(tied))
            return cond(tied, with_ties, without)
        namespace["_tie_cond"] = spy
        return namespace["f"], taken
    lines = source.splitlines()
    body = next(k for k, line in enumerate(lines) if line.startswith(("def _f_spectra(", "def f(")))
    at = [k for k, line in enumerate(lines) if k > body and line.startswith("    if ") and line.endswith(":")]
    otherwise = [k for k, line in enumerate(lines) if k > body and line == "    else:"]
    assert len(at) == 1 and len(otherwise) == 1, source
    lines.insert(otherwise[0] + 1, "        _taken.append(False)")
    lines.insert(at[0] + 1, "        _taken.append(True)")
    namespace = {"_taken": taken}
    exec("\n".join(lines), namespace)
    return namespace["f"], taken


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("spectrum, dtype, tied", TIE_SPECTRA, ids=TIE_SPECTRA_IDS)
def test_the_tie_terms_run_only_at_a_tie(backend, spectrum, dtype, tied):
    """The tie terms cost 2–5× the rest of a Hessian through eigenvectors, so the generated
    code (md.codegen's source, and md.compile's function, one and the same) runs them under a
    branch on "two eigenvalues within √ε": an if block in NumPy and PyTorch, lax.cond in JAX.
    Either arm gives evaluate's value."""
    _module(backend)
    H = md.hessian(LAM[-1] + LAM[-2], S)  # through the eigenvectors (w = e₂ + e₃: a limit at a tie)
    source = md.codegen(H, backend=backend)
    assert ("_tie_cond(" in source and "def _tie_terms():" in source) if backend == "jax" else \
        ("    else:" in source and "_tie_cond" not in source)
    assert md.compile(H, backend=backend).source == source
    f, taken = _spying(source, backend)
    s = _matrix(spectrum, seed=6)
    got = f(S=s.astype(dtype))
    assert taken == [tied]
    assert str(got.dtype).endswith("float32" if dtype == np.float32 else "float64")
    want = H.evaluate(S=s)
    tol = 1e-4 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(np.asarray(got, dtype=float), want, rtol=tol, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("spectrum", [[1.0, 2.0, 2.0], [1.0, 2.0, 3.0]], ids=["tie", "apart"])
def test_jax_s_branch_is_traced_and_differentiated(spectrum):
    """Under jit (and under jax.jvp) the branch is lax.cond: the compiled Hessian of wᵀλ(S)
    (w equal on the tie: it has a limit there) differentiated along w, against central
    differences of the same function."""
    jax = _module("jax")
    H = md.hessian(w.T @ LAM, S)
    f = md.compile(H, backend="jax")
    s, wv, b = _matrix(spectrum, seed=6), np.array([0.5, 3.0, 3.0]), np.array([0.4, 0.1, 0.1])
    jitted = jax.jit(lambda S, w: f(S=S, w=w))
    np.testing.assert_allclose(np.asarray(jitted(s, wv)), H.evaluate(S=s, w=wv), rtol=1e-8, atol=1e-9)
    _, tangent = jax.jvp(lambda x: jitted(s, x), (wv,), (b,))
    fd = _directional(lambda x: np.asarray(jitted(s, x)), wv, b)
    np.testing.assert_allclose(np.asarray(tangent), fd, rtol=1e-7, atol=1e-8)


# --------------------------------------------------------------------------- checks: a choice of vectors

X = md.matrix("X", "n", "k")


def _singular(values, seed=5):
    """A square matrix with these singular values."""
    rng = np.random.default_rng(seed)
    u, v = (np.linalg.qr(rng.standard_normal((len(values),) * 2))[0] for _ in range(2))
    return (u * np.asarray(values, float)) @ v.T


CHOICES = [  # f, its NumPy twin, a point where ∇f depends on the vectors chosen, +1 convex / −1 concave
    (lambda: LAM[-1], lambda m: np.linalg.eigvalsh(m)[-1], lambda: {"S": _matrix([1.0, 2.0, 2.0], 3)}, 1.0),
    (lambda: LAM[0], lambda m: np.linalg.eigvalsh(m)[0], lambda: {"S": _matrix([-1.0, -1.0, 2.0], 3)}, -1.0),
    (lambda: md.norm(X, 2), lambda m: np.linalg.norm(m, 2),
     lambda: {"X": _singular([2.0, 2.0, 1.0])}, 1.0),
    (lambda: md.norm(X, "nuc"), lambda m: np.linalg.norm(m, "nuc"), lambda: {"X": _matrix([0.0, 1.0, 2.0], 3)}, 1.0),
]
CHOICE_IDS = ["∇λ_max", "∇λ_min", "∇‖X‖₂ at a repeated σ₁", "∇‖X‖_* at rank 2"]


@pytest.mark.parametrize("with_value", [False, True], ids=["", "with its value"])
@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("build, twin, point, convex", CHOICES, ids=CHOICE_IDS)
def test_compiled_code_refuses_a_choice_of_vectors_as_evaluate_does(backend, build, twin, point, convex,
                                                                    with_value):
    """evaluate refuses these gradients (a subgradient, not a derivative); so does compiled code
    with checks (the default where it decomposes): NumPy and PyTorch raise evaluate's error,
    JAX raises outside jit and gives NaN under it.  checks=False gives the subgradient the
    decomposition's own vectors make, which the subgradient inequality checks."""
    _module(backend)
    values = point()
    (name, m), = values.items()
    g = md.grad(build(), S if name == "S" else X)
    result = [build(), g] if with_value else g
    with pytest.raises(md.EvaluationError, match="not differentiable here"):
        g.evaluate(values)
    f = md.compile(result, backend=backend)
    with pytest.raises(md.EvaluationError, match="not differentiable here: .* depends on which"):
        f(**values)
    if backend == "jax":
        import jax
        out = jax.jit(f)(**values)
        assert np.all(np.isnan(np.asarray(out[1] if with_value else out)))
        if with_value:  # the value does not depend on the vectors
            np.testing.assert_allclose(np.asarray(out[0]), twin(m), rtol=1e-12)
    out = md.compile(result, backend=backend, checks=False)(**values)
    sub = np.asarray(out[1] if with_value else out, dtype=float)
    assert np.all(np.isfinite(sub))
    rng = np.random.default_rng(8)
    for _ in range(8):  # f(x + e) ≥ f(x) + ⟨g, e⟩ for a convex f (≤ for a concave one)
        e = rng.standard_normal(m.shape) * 1e-2
        e = (e + e.T) / 2 if name == "S" else e
        assert convex * (twin(m + e) - twin(m) - np.sum(sub * e)) >= -1e-12
    # away from the tie the same checked function answers: evaluate's value, and differences'
    apart = {name: m + np.diag([0.0, 0.3, 0.7])}
    got = np.asarray(f(**apart)[1] if with_value else f(**apart), dtype=float)
    np.testing.assert_allclose(got, g.evaluate(apart), rtol=1e-10, atol=1e-12)
    e = rng.standard_normal(m.shape)
    e = (e + e.T) / 2 if name == "S" else e
    np.testing.assert_allclose(np.sum(got * e), _directional(twin, apart[name], e), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("backend", _backends())
def test_codegen_prints_the_checked_function_that_compile_runs(backend):
    """md.codegen takes md.compile's checks (default True): the printed module is the code the
    compiled function runs, checks included, and runs on its own — exec'd in a fresh namespace
    it refuses ∇λ_max at a repeated top eigenvalue as md.compile's function does (JAX: raises
    outside jit, NaN under it), and away from the tie answers central differences' gradient.
    checks=False prints (and compiles) the code without them, which returns a subgradient."""
    module = _module(backend)
    g = md.grad(LAM[-1], S)
    source = md.codegen(g, backend=backend)
    assert source == md.compile(g, backend=backend).source
    assert "_checking_choices(" in source and "_spectra.eigh(S, 'S')" in source
    bare = md.codegen(g, backend=backend, checks=False)
    assert bare == md.compile(g, backend=backend, checks=False).source
    assert "_checking_choices" not in bare and "_spectra" not in bare
    printed, plain = {}, {}
    exec(source, printed)
    exec(bare, plain)
    tie, apart = _matrix([1.0, 2.0, 2.0], 3), _matrix([1.0, 2.0, 3.0], 3)
    arg = (lambda m: module.tensor(m)) if backend == "torch" else (lambda m: m)
    with pytest.raises(md.EvaluationError, match="S has a repeated eigenvalue, λ = 2 \\(2 times\\)"):
        printed["f"](arg(tie))
    if backend == "jax":
        assert np.isnan(np.asarray(module.jit(printed["f"])(tie))).all()
    assert np.isfinite(np.asarray(plain["f"](arg(tie)))).all()
    got = np.asarray(printed["f"](arg(apart)), dtype=float)
    np.testing.assert_array_equal(got, np.asarray(md.compile(g, backend=backend)(S=apart), dtype=float))
    e = _symmetric_direction(3, seed=9)
    np.testing.assert_allclose(np.sum(got * e), _directional(lambda m: np.linalg.eigvalsh(m)[-1], apart, e),
                               rtol=1e-7, atol=1e-9)


NO_CHOICE = [  # differentiable at a repeated (or zero) value: the vectors' choice cancels
    (lambda: LAM[-1] + LAM[-2], lambda m: np.linalg.eigvalsh(m)[-2:].sum(), {"S": _matrix([1.0, 2.0, 2.0], 3)}),
    (lambda: md.trace(md.logm(S) @ md.logm(S)), lambda m: np.sum(_funm(m, np.log) ** 2),
     {"S": _matrix([1.0, 1.0, 1.0], 3)}),
    (lambda: md.norm(X, "nuc"), lambda m: np.linalg.norm(m, "nuc"),
     {"X": _singular([2.0, 2.0, 1.0])}),
    (lambda: md.norm(X, 2) ** 2, lambda m: np.linalg.norm(m, 2) ** 2, {"X": np.zeros((3, 3))}),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("build, twin, values", NO_CHOICE,
                         ids=["λ₂ + λ₃ at a tie", "‖logm(S)‖² at I", "‖X‖_* at a repeated σ", "‖X‖₂² at 0"])
def test_checks_pass_a_derivative_that_exists_at_a_tie(backend, build, twin, values, dtype):
    """Where the gradient exists at a repeated value, checked code answers, as evaluate does,
    in both dtypes: turning the vectors within the tie does not move it."""
    _module(backend)
    (name, m), = values.items()
    g = md.grad(build(), S if name == "S" else X)
    got = md.compile(g, backend=backend)(**{name: m.astype(dtype)})
    want = g.evaluate(values)
    tol = 1e-4 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(np.asarray(got, dtype=float), want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))
    e = np.random.default_rng(2).standard_normal(m.shape)
    e = (e + e.T) / 2 if name == "S" else e
    if name == "X" and not m.any():
        return  # ‖X‖₂² at 0: its gradient 0, from differences of a quadratic below
    np.testing.assert_allclose(np.sum(want * e), _directional(twin, m, e), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", _backends())
def test_float32_at_a_tie_is_refused_too(backend):
    _module(backend)
    f = md.compile(md.grad(LAM[-1], S), backend=backend)
    with pytest.raises(md.EvaluationError, match="S has a repeated eigenvalue, λ = 2 \\(2 times\\)"):
        f(S=_matrix([1.0, 2.0, 2.0], 3).astype(np.float32))


def test_the_compiled_hessian_is_right_on_either_side_of_the_branch():
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


# --------------------------------------------------------------------------- JAX's HVP in O(n²) memory

CLUSTERED = {  # sorted spectra whose close pairs (within 10⁻³) lie 0 to 5 places apart
    "apart": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0],
    "chain": [0.5, 1.0, 1.0002, 1.0004, 1.0006, 1.0008, 1.001, 2.0, 2.5, 3.0, 3.5, 4.0],
    "repeated": [0.5, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.5, 4.0, 4.5],
    "gap 1e-10": [-1.0, -1.0 + 1e-10, 0.0, 1e-10, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0 + 1e-10, 4.0],
}


@pytest.mark.parametrize("spectrum", CLUSTERED.values(), ids=CLUSTERED.keys())
def test_jax_hvp_through_second_divided_differences_holds_no_n3_array(spectrum):
    """md.hvp of aᵀexpm(S)a in generated JAX code applies the second divided differences
    T = f[λ_p, λ_q, λ_c] without forming T (n³), under jit as well: the close pairs' rows are
    computed by offset |p − c| in the sorted eigenvalues, only for the offsets that hold one
    (lax.scan with lax.cond).  Checked against central differences of the compiled NumPy
    gradient along V, eager and jitted, and jax.grad through the jitted HVP against central
    differences of it; no array in the jitted program has three axes of n."""
    jax = _module("jax")
    h, grad, fj, jitted, loss = _jax_hvp_functions()
    source = md.codegen(h, backend="jax")
    assert "_by_offsets(" in source and "[:, None, None]" not in source
    n = len(spectrum)
    s, v = _matrix(spectrum, seed=3), _symmetric_direction(n, seed=5)
    av = np.random.default_rng(2).standard_normal(n)
    want = _directional(lambda m: grad(S=m, a=av), s, v, h=1e-4)
    for got in (fj(S=s, a=av, V=v), jitted(S=s, a=av, V=v)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-7, atol=1e-7 * np.abs(want).max())
    program = str(jax.make_jaxpr(lambda m, x, d: jitted(S=m, a=x, V=d))(s, av, v))
    assert "scan[" in program and f"[{n},{n},{n}]" not in program
    b = np.random.default_rng(4).standard_normal(n)
    g = lambda x: float(np.sum(np.asarray(jitted(S=s, a=x, V=v)) ** 2))  # noqa: E731
    np.testing.assert_allclose(float(np.asarray(loss(av, s, v)) @ b), _directional(g, av, b, h=1e-4), rtol=1e-7)


@functools.lru_cache(maxsize=None)
def _jax_hvp_functions():
    """md.hvp of aᵀexpm(S)a (S, V symmetric n × n), compiled for JAX, jitted, and jax.grad of
    Σ HVP² along a (S and V arguments, not constants), jitted; and NumPy's compiled gradient.
    Made once: the spectra above share a shape, so each jit compiles once for all of them."""
    jax = _module("jax")
    import jax.numpy as jnp
    V = md.matrix("V", "n", "n", symmetric=True)
    f = a.T @ md.expm(S) @ a
    h = md.hvp(f, S, V)
    fj = md.compile(h, backend="jax")
    jitted = jax.jit(fj.unchecked)
    loss = jax.jit(jax.grad(lambda x, m, d: jnp.sum(jitted(S=m, a=x, V=d) ** 2)))
    return h, md.compile(md.grad(f, S)), fj, jitted, loss
