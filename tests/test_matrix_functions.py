"""Issue 14 (first part): spectral functions of symmetric matrices — eigvalsh, expm, logm,
sqrtm and matrix_function — with Daleckii–Krein first derivatives, checked against finite
differences, closed forms and NumPy; generated code in three backends."""
import numpy as np
import pytest

import matdiff as md

S = md.matrix("S", "n", "n", symmetric=True)
X = md.matrix("X", "n", "k")
a = md.vector("a", "n")


def _spd(n=4, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, n))
    return q @ q.T + n * np.eye(n)


def _compiled_matches(outputs, backend, args, values, rtol, atol=0.0):
    """The outputs compiled for ``backend`` (arguments in the order of ``args``) give the
    values ``evaluate`` gives."""
    pytest.importorskip({"numpy": "numpy", "jax": "jax", "torch": "torch"}[backend])
    fn = md.compile(outputs, backend=backend, args=args)
    arrays = [values[x.node.name] for x in args]
    if backend == "torch":
        import torch
        arrays = [torch.tensor(x) for x in arrays]
    for got, e in zip(fn(*arrays), outputs):
        np.testing.assert_allclose(np.asarray(got, dtype=float), e.evaluate(values), rtol=rtol, atol=atol)


def _funm(s, f):
    lam, u = np.linalg.eigh(s)
    return (u * f(lam)) @ u.T


@pytest.mark.parametrize("build,want", [
    (lambda: md.expm(S), lambda s: _funm(s, np.exp)),
    (lambda: md.logm(S), lambda s: _funm(s, np.log)),
    (lambda: md.sqrtm(S), lambda s: _funm(s, np.sqrt)),
    (lambda: md.matrix_function(S, "tanh"), lambda s: _funm(s, np.tanh)),
    (lambda: md.eigvalsh(S), lambda s: np.linalg.eigvalsh(s)),
])
def test_values_equal_numpy(build, want):
    s = _spd()
    np.testing.assert_allclose(build().evaluate({"S": s}), want(s), rtol=1e-10)
    m = md.sqrtm(S).evaluate({"S": s})
    np.testing.assert_allclose(m @ m, s, rtol=1e-10)  # the principal square root


@pytest.mark.parametrize("f,wrt,text", [
    (lambda: md.trace(md.expm(S)), S, "expm(S)"),                  # ∂tr f(S)/∂S = f′(S)
    (lambda: md.trace(md.expm(X.T @ X)), X, "2X expm(XᵀX)"),
    (lambda: md.sum(md.log(md.eigvalsh(S))), S, "S⁻¹"),                # as ∂logdet(S)/∂S
    (lambda: md.sum(md.eigvalsh(S) ** 3), S, "3S²"),
    (lambda: md.sum(md.eigvalsh(S) ** 2), S, "2S"),
    (lambda: md.sum(md.sqrt(md.eigvalsh(S))), S, "(1/2)sqrtm(S)⁻¹"),
    (lambda: md.sum(md.eigvalsh(S)), S, None),
    (lambda: a.T @ md.sqrtm(S) @ a, S, None),
    (lambda: md.trace(md.logm(X @ X.T + S)), X, None),
    (lambda: md.sum(md.exp(md.eigvalsh(X.T @ X))), X, "2X expm(XᵀX)"),
    (lambda: md.norm(md.matrix_function(S, md.tanh)) ** 2, S, None),
])
def test_first_derivatives_are_daleckii_krein_and_check(f, wrt, text):
    g = md.grad(f(), wrt)
    if text is not None:
        assert str(g) == text
    assert md.check(f(), wrt, kinds={"S": "spd"}) < 1e-6


def test_the_log_eigenvalue_sum_agrees_with_logdet():
    s = _spd(seed=1)
    g1 = md.grad(md.sum(md.log(md.eigvalsh(S))), S).evaluate({"S": s})
    g2 = md.grad(md.logdet(S), S).evaluate({"S": s})
    np.testing.assert_allclose(g1, g2, rtol=1e-9)
    np.testing.assert_allclose(g1, np.linalg.inv(s), rtol=1e-9)


def test_repeated_eigenvalues_are_handled_by_the_divided_differences():
    """At S = I every eigenvalue repeats: the divided differences take f′ there, and the
    gradient of a spectral function stays right (∂tr expm(S)/∂S = expm(S) = eI)."""
    g = md.grad(a.T @ md.expm(S) @ a, S)
    av = np.array([1.0, 2.0, -1.0])
    np.testing.assert_allclose(g.evaluate({"S": np.eye(3), "a": av}), np.e * np.outer(av, av), rtol=1e-9)


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_generated_code_computes_spectral_derivatives(backend):
    f = a.T @ md.sqrtm(S) @ a + md.trace(md.expm(S))
    values = {"S": _spd(seed=2) / 4, "a": np.random.default_rng(3).standard_normal(4)}
    _compiled_matches([f, md.grad(f, S)], backend, [S, a], values, 1e-5 if backend == "jax" else 1e-9)


def test_arguments_must_be_symmetric_and_second_derivatives_say_why_not():
    with pytest.raises(md.ShapeError, match="square"):
        md.sqrtm(md.matrix("A", "n", "k"))
    with pytest.raises(md.NotSupportedError, match="symmetric"):
        md.eigvalsh(md.matrix("A", "n", "n"))
    assert md.expm(X.T @ X).shape == ("k", "k")  # symmetric by structure
    with pytest.raises(md.NotSupportedError, match="third derivatives through a matrix function"):
        md.jacobian(md.hessian(a.T @ md.expm(S) @ a, S), S)


@pytest.mark.parametrize("f", [
    lambda: md.sum(md.eigvalsh(S) ** 3), lambda: md.sum(md.log(md.eigvalsh(S))),
    lambda: md.sum(md.sqrt(md.eigvalsh(S))), lambda: md.sum(md.exp(md.eigvalsh(S))),
])
def test_hessians_of_spectral_functions_are_daleckii_krein(f):
    """∇Σf(λᵢ) = f′(S) is a matrix function again, so the Hessian is Daleckii–Krein's."""
    assert "Δ" in str(md.hessian(f(), S))
    assert md.check(f(), S, order=2, kinds={"S": "spd"}) < 1e-6


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_generated_code_computes_spectral_hessians(backend):
    """The Hessian of Σ log λᵢ(S) needs the divided differences of a power (1/λ)."""
    f = md.sum(md.log(md.eigvalsh(S)))
    _compiled_matches([md.grad(f, S), md.hessian(f, S)], backend, [S], {"S": _spd()},
                      1e-4 if backend == "jax" else 1e-9, 1e-6 if backend == "jax" else 0.0)


def test_the_hessian_of_a_trace_function_is_daleckii_krein_again():
    """∇tr expm(S) = expm(S) is itself a matrix function, so its derivative is Daleckii–Krein's."""
    assert md.check(md.trace(md.expm(S)), S, order=2, kinds={"S": "spd"}) < 1e-6
    with pytest.raises(md.MatdiffError, match="element-wise function"):
        md.matrix_function(S, "nope")


# --------------------------------------------------------------------------- singular values

Xs = md.matrix("X", "n", "n")
M = md.matrix("M", "m", "n")


def _general(shape=(4, 4), seed=5):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("f,wrt,text", [
    (lambda: md.norm(Xs, "nuc"), Xs, "UVᵀ  where X = UΣVᵀ"),      # ∂‖X‖_*/∂X = UVᵀ
    (lambda: md.norm(Xs, 2), Xs, "u₁v₁ᵀ  where X = UΣVᵀ"),        # ∂‖X‖₂/∂X = u₁v₁ᵀ
    (lambda: md.sum(md.svdvals(M, smaller="n") ** 2), M, None),
    (lambda: md.norm(M @ Xs, "nuc", smaller="n"), Xs, "MᵀUVᵀ  where MX = UΣVᵀ"),
])
def test_singular_value_derivatives_check(f, wrt, text):
    if text is not None:
        assert str(md.grad(f(), wrt)) == text
    assert md.check(f(), wrt) < 1e-6


def test_singular_values_equal_numpy_and_their_norms_print_as_norms():
    x = _general()
    u, s, vt = np.linalg.svd(x)
    np.testing.assert_allclose(md.svdvals(Xs).evaluate({"X": x}), s, rtol=1e-12)
    np.testing.assert_allclose(md.grad(md.norm(Xs, "nuc"), Xs).evaluate({"X": x}), u @ vt, rtol=1e-9)
    np.testing.assert_allclose(md.grad(md.norm(Xs, 2), Xs).evaluate({"X": x}), np.outer(u[:, 0], vt[0]), rtol=1e-9)
    assert str(md.norm(Xs, "nuc")) == "‖X‖_*" and str(md.norm(Xs, 2)) == "‖X‖₂"
    assert str(md.norm(md.svdvals(Xs))) == "‖X‖_F"  # ‖σ‖ is the Frobenius norm


def test_non_smooth_points_are_reported_not_answered_with_a_subgradient():
    with pytest.raises(md.EvaluationError, match="rank-deficient"):
        md.grad(md.norm(Xs, "nuc"), Xs).evaluate({"X": np.diag([1.0, 2.0, 0.0, 3.0])})
    with pytest.raises(md.EvaluationError, match="largest singular value is repeated"):
        md.grad(md.norm(Xs, 2), Xs).evaluate({"X": np.diag([3.0, 3.0, 1.0, 2.0])})
    assert md.svdvals(M).shape == ("min(m, n)",)  # a dim of its own (issue 21), no refusal


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_generated_code_computes_singular_value_derivatives(backend):
    outputs = [md.norm(Xs, "nuc"), md.grad(md.norm(Xs, "nuc"), Xs), md.grad(md.norm(Xs, 2), Xs)]
    _compiled_matches(outputs, backend, [Xs], {"X": _general(seed=6)}, 1e-5, atol=1e-6)


# --------------------------------------------------------------------------- expm of a general matrix

G = md.matrix("A", "n", "n")
v = md.vector("v", "n")
scipy_linalg = pytest.importorskip("scipy.linalg")


def test_expm_of_a_general_matrix_equals_scipy_and_its_trace_gradient_is_expm_transposed():
    a = _general(seed=7) / 2
    np.testing.assert_allclose(md.expm(G).evaluate({"A": a}), scipy_linalg.expm(a), rtol=1e-12)
    g = md.grad(md.trace(md.expm(G)), G)
    assert str(g) == "expm(A)ᵀ"
    np.testing.assert_allclose(g.evaluate({"A": a}), scipy_linalg.expm(a).T, rtol=1e-12)


@pytest.mark.parametrize("f", [
    lambda: v.T @ md.expm(G) @ v,
    lambda: md.norm(md.expm(G)) ** 2,
    lambda: md.trace(md.expm(G) @ md.expm(G.T)),
])
def test_frechet_gradients_check(f):
    assert md.check(f(), G) < 1e-6


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_generated_code_computes_the_frechet_gradient(backend):
    f = v.T @ md.expm(G) @ v
    values = {"A": _general(seed=8) / 2, "v": np.random.default_rng(9).standard_normal(4)}
    _compiled_matches([f, md.grad(f, G)], backend, [G, v], values, 1e-5)


@pytest.mark.parametrize("backend,fn", [("torch", md.expm), ("numpy", md.logm)])
def test_a_frechet_derivative_along_a_vanishing_direction_in_float32(backend, fn):
    """L_f(X, E) by the block [[X, sE], [0, X]], E scaled to X's size by s = ‖X‖/‖E‖ (PyTorch's
    expm, SciPy's logm): where the direction's coefficient is 0 (a saturated tanh′) or tiny,
    s was inf in float32 and inf · 0 a NaN, which the checked function refused as an overflow.
    E is now divided by its norm first: the derivative is 0, or tiny and right, and float32
    (SciPy's logm of a float32 matrix works in single precision and answers complex128: the
    block is now widened to float64 first)."""
    pytest.importorskip(backend)
    if backend == "numpy":
        pytest.importorskip("scipy")
    c = md.scalar("c")
    f = c * (v.T @ fn(G) @ v)
    g = md.grad(f, G)  # c · L_f(Gᵀ, vvᵀ)
    fn32 = md.compile(g, backend=backend, args=[G, v, c])
    A = _general(seed=8) / 4 + 2 * np.eye(4)  # eigenvalues in logm's principal branch
    for coefficient in (1.0, 1e-39, 0.0):  # 1e-39: below float32's normal numbers
        values = {"A": A, "v": np.random.default_rng(9).standard_normal(4), "c": coefficient}
        arrays = [np.asarray(values[k], dtype=np.float32) for k in ("A", "v", "c")]
        if backend == "torch":
            import torch
            arrays = [torch.from_numpy(a) for a in arrays]
        got = fn32(*arrays)
        assert str(got.dtype).endswith("float32"), got.dtype  # SciPy's float32 logm is complex
        got = np.asarray(got, dtype=np.float64)
        want = g.evaluate({k: np.asarray(x, dtype=np.float32).astype(np.float64) for k, x in values.items()})
        assert np.all(np.isfinite(got)), (coefficient, got)
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.max(np.abs(want)))


@pytest.mark.parametrize("f", [
    lambda: v.T @ md.expm(G / 2) @ v, lambda: md.trace(md.logm(G)) ** 2, lambda: v.T @ md.logm(G) @ v,
    lambda: md.norm(md.sqrtm(G)) ** 2, lambda: md.trace(md.expm(G / 4) @ md.expm(G.T / 4)),
], ids=["vᵀexpm(A)v", "(tr logm(A))²", "vᵀlogm(A)v", "‖sqrtm(A)‖²", "tr(expm(A)expm(Aᵀ))"])
def test_second_derivatives_through_a_general_matrix_function(f):
    """Issue 21: refused before. d L_f(X, E)[dX] is the (1, 2) block of
    L_f([[X, E], [0, X]], [[dX, 0], [0, dX]]); a Jacobian's adjoints L_f(Xᵀ, Gₑ), one per output
    entry, are one Fréchet derivative of the block-diagonal I ⊗ Xᵀ. Checked to second order."""
    assert md.check(f(), G, order=2, kinds={"A": "invertible"}) < 1e-6


def test_jacobians_through_a_general_matrix_function():
    assert md.check(md.expm(G / 2) @ v, G) < 1e-6
    assert md.check(md.sqrtm(G) @ v, v, order=2) < 1e-6
    assert md.jacobian(md.logm(G), G).shape == ("n",) * 4


def test_the_hessian_through_a_general_expm_matches_jax_and_generated_code():
    jax = pytest.importorskip("jax")
    jsl = pytest.importorskip("jax.scipy.linalg")
    a, vv = _general(seed=8) / 2, np.random.default_rng(9).standard_normal(4)
    f = v.T @ md.expm(G) @ v
    H = md.hessian(f, G).evaluate({"A": a, "v": vv})
    with jax.enable_x64(True):
        want = np.asarray(jax.hessian(lambda m: vv @ jsl.expm(m) @ vv)(a))
    np.testing.assert_allclose(H, want, rtol=1e-8, atol=1e-10)
    for backend in ("numpy", "jax", "torch"):
        _compiled_matches([f, md.hessian(f, G)], backend, [G, v], {"A": a, "v": vv}, 1e-5, atol=1e-7)


# --------------------------------------------------------------------------- logm and sqrtm of a general matrix

def _principal(seed=3, n=4):
    """A non-symmetric matrix with its eigenvalues in the right half-plane."""
    rng = np.random.default_rng(seed)
    return n * np.eye(n) + rng.standard_normal((n, n))


def test_logm_and_sqrtm_of_a_general_matrix_equal_scipy():
    a = _principal()
    assert np.all(np.linalg.eigvals(a).real > 0) and not np.allclose(a, a.T)
    np.testing.assert_allclose(md.logm(G).evaluate({"A": a}), scipy_linalg.logm(a), rtol=1e-12)
    np.testing.assert_allclose(md.sqrtm(G).evaluate({"A": a}), scipy_linalg.sqrtm(a), rtol=1e-12)
    assert md.logm(G).evaluate({"A": a}).dtype == np.float64


@pytest.mark.parametrize("f, text", [
    (lambda: md.trace(md.logm(G)), "A⁻ᵀ"),                   # L_log(A, I) = A⁻¹
    (lambda: md.trace(md.sqrtm(G)), "(1/2)sqrtm(A)⁻ᵀ"),      # L_sqrt(A, I) = ½ sqrtm(A)⁻¹
    (lambda: md.trace(md.expm(G)), "expm(A)ᵀ"),
])
def test_trace_rules_print_f_prime_transposed(f, text):
    g = md.grad(f(), G)
    assert str(g) == text
    assert md.check(f(), G) < 1e-6


@pytest.mark.parametrize("f", [
    lambda: v.T @ md.logm(G) @ v,
    lambda: md.norm(md.logm(G)) ** 2,
    lambda: md.trace(md.logm(G) @ md.logm(G)),
    lambda: v.T @ md.sqrtm(G) @ v,
    lambda: md.sum(md.sqrtm(G @ G.T + G)),
    lambda: md.trace(md.sqrtm(G) @ md.expm(G / 4)),
])
def test_logm_and_sqrtm_frechet_gradients_check(f):
    assert md.check(f(), G) < 1e-6


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
@pytest.mark.parametrize("name", ["logm", "sqrtm"])
def test_generated_code_computes_logm_and_sqrtm_and_their_gradients(backend, name):
    f = v.T @ getattr(md, name)(G) @ v
    values = {"A": _principal(seed=11), "v": np.random.default_rng(12).standard_normal(4)}
    _compiled_matches([f, md.grad(f, G)], backend, [G, v], values, 1e-4 if backend == "jax" else 1e-8,
                      1e-6 if backend == "jax" else 0.0)


def test_outside_the_principal_branch_is_refused_and_check_avoids_it():
    a = _principal()
    a[0, 0] = -30.0  # a negative real eigenvalue
    assert np.any((np.abs(np.linalg.eigvals(a).imag) < 1e-12) & (np.linalg.eigvals(a).real < 0))
    for name in ("logm", "sqrtm"):
        with pytest.raises(md.EvaluationError, match="negative real axis"):
            getattr(md, name)(G).evaluate({"A": a})
        f = v.T @ getattr(md, name)(G) @ v
        with pytest.raises(md.EvaluationError, match="negative real axis"):
            md.grad(f, G).evaluate({"A": a, "v": np.ones(4)})
        assert md.check(f, G) < 1e-6  # it draws a point inside the branch
    code = md.compile(md.logm(G), backend="numpy")
    assert np.iscomplexobj(code(a))  # SciPy's answer is complex there; never silently real


def test_check_reports_a_degenerate_point_instead_of_a_wrong_derivative():
    """xxᵀ has rank one. Its nuclear norm ‖x‖² is differentiable by x all the same — the
    singular vectors of the zero singular values meet only vectors orthogonal to x — so the
    gradient (2x, whichever null-space vectors are chosen) is given and checks; its Hessian
    differentiates those singular vectors, which is not finite there, and md.check says the
    point is degenerate."""
    xv = md.vector("x", "n")
    f = md.norm(md.outer(xv, xv), "nuc")
    assert md.check(f, xv) < 1e-6
    x0 = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(md.grad(f, xv).evaluate(x=x0), 2 * x0, rtol=1e-12)
    with pytest.raises(md.UncheckableError, match="degenerate"):
        md.check(f, xv, order=2)


@pytest.mark.parametrize("f,text,latex", [
    (lambda: v.T @ md.logm(G) @ v, "L_log(Aᵀ, vvᵀ)", "L_{\\log}\\left(A^\\top, v v^\\top\\right)"),
    (lambda: v.T @ md.expm(G) @ md.vector("b", "n"), "L_exp(Aᵀ, vbᵀ)",
     "L_{\\exp}\\left(A^\\top, v b^\\top\\right)"),
    (lambda: md.sum(md.sqrtm(G) * G), "sqrtm(A) + L_sqrt(Aᵀ, A)",
     "\\operatorname{sqrtm}\\left(A\\right) + L_{\\operatorname{sqrt}}\\left(A^\\top, A\\right)"),
])
def test_frechet_gradients_print_as_l_f_matrices(f, text, latex):
    """Issue 21: ∂aᵀexpm(X)b/∂X is the matrix L_exp(Xᵀ, abᵀ) (docs/matrix-functions.md defines
    L_f), display-only (no input syntax), and checks numerically."""
    g = md.grad(f(), G)
    assert str(g) == text and g.latex() == latex
    assert repr(g) == f"<{text}>"
    with pytest.raises(md.NotSupportedError, match="Fréchet"):
        g.text("matrixcalculus")
    assert md.check(f(), G, kinds={"A": "spd"}) < 1e-6


@pytest.mark.parametrize("text, decls, wrt, printed", [
    ("tr(expm(A))", {}, "A", "expm(A)ᵀ"),
    ("tr(logm(A))", {}, "A", "A⁻ᵀ"),
    ("a'*sqrtm(A)*a", {}, "A", None),
    ("sum(log(eigvalsh(S)))", {"S": "matrix(n, n) symmetric"}, "S", "S⁻¹"),
    ("sum(exp(eigvalsh(S)))", {"S": "matrix(n, n) symmetric"}, "S", "expm(S)"),
])
def test_the_dialects_read_matrix_functions(text, decls, wrt, printed):
    f = md.parse(text, **decls)
    x = next(u for u in f.variables if u.node.name == wrt)
    if printed is not None:
        assert str(md.grad(f, x)) == printed
    kinds = {"S": "spd"} if decls else None
    assert md.check(f, x, kinds=kinds) < 1e-6
    numpy_text = text.replace("'", ".T").replace("*", " @ ").replace("tr(", "trace(")
    assert str(md.parse(numpy_text, dialect="numpy", **decls)) == str(f)


def test_dialect_output_of_spectral_results_reads_back_or_is_refused():
    g = md.grad(md.trace(md.expm(S)), S)
    assert g.text("matrixcalculus") == "expm(S)"
    assert str(md.parse(g.text("matrixcalculus"), S="matrix(n, n) symmetric")) == "expm(S)"
    with pytest.raises(md.NotSupportedError, match="cannot write U"):
        md.grad(md.norm(X, "nuc", smaller="k"), X).text("matrixcalculus")
    with pytest.raises(md.ParseError, match="eigvalsh needs a symmetric matrix") as e:
        md.parse("sum(eigvalsh(A))")
    assert e.value.column == 4 and "^" in str(e.value)  # a caret under eigvalsh


# --------------------------------------------------------------------------- second derivatives through eigenvectors

LAM = md.eigvalsh(S)


@pytest.mark.parametrize("f, wrt", [
    (lambda: md.sum(md.sigmoid(LAM) * LAM), S),           # a gradient that is not a matrix function
    (lambda: LAM[-1], S),                                 # λ_max: ∇ = uₙuₙᵀ
    (lambda: LAM[-1] - LAM[0], S),                        # the spectral spread
    (lambda: md.eigvalsh(X.T @ X)[-1], X),                # PCA's top variance, by the data
    (lambda: a.T @ md.grad(LAM[-1], S) @ a, S),           # (aᵀuₙ)²: its Hessian differentiates the gaps
], ids=["Σσ(λ)λ", "λ_max", "λ_max − λ_min", "λ_max(XᵀX)", "(aᵀuₙ)²"])
def test_hessians_through_eigenvectors_check(f, wrt):
    """dU = U (G ⊙ (Uᵀ dS U)) with G_ij = 1/(λⱼ − λᵢ), and dG_ij = G_ij²(dλᵢ − dλⱼ)."""
    assert md.check(f(), wrt, order=2, kinds={"S": "spd"}) < 1e-6


def test_the_hessian_of_lambda_max_matches_jax():
    jax = pytest.importorskip("jax")
    s = _spd()
    H = md.hessian(LAM[-1], S).evaluate({"S": s})
    with jax.enable_x64(True):
        want = np.asarray(jax.hessian(lambda m: jax.numpy.linalg.eigvalsh((m + m.T) / 2)[-1])(s))
    sym = lambda h: (h + h.transpose(1, 0, 2, 3) + h.transpose(0, 1, 3, 2) + h.transpose(1, 0, 3, 2)) / 4  # noqa: E731
    np.testing.assert_allclose(sym(H), sym(want), rtol=1e-7, atol=1e-9)


def test_eigenvectors_at_a_repeated_eigenvalue_are_refused():
    """The Hessian of λ_max at a repeated top eigenvalue has no limit: refused. Where the tie
    is below a simple λ_max (diag(1, 2, 2, 3)) the Hessian exists; it divides by the tie's gap,
    so evaluate takes its limit from split spectra (issue 21), and it equals differences of the
    gradient."""
    H = md.hessian(LAM[-1], S)
    with pytest.raises(md.EvaluationError, match="eigenvectors .or singular vectors. are not differentiable here"):
        H.evaluate({"S": np.diag([1.0, 2.0, 3.0, 3.0])})
    q = np.linalg.qr(np.random.default_rng(8).standard_normal((4, 4)))[0]
    s = q @ np.diag([1.0, 2.0, 2.0, 3.0]) @ q.T
    s = (s + s.T) / 2
    g = md.grad(LAM[-1], S)
    np.testing.assert_allclose(g.evaluate({"S": s}), np.outer(q[:, 3], q[:, 3]), atol=1e-12)  # λ_max is simple
    e = np.random.default_rng(9).standard_normal((4, 4))
    e = (e + e.T) / 2
    fd = (g.evaluate({"S": s + 1e-6 * e}) - g.evaluate({"S": s - 1e-6 * e})) / 2e-6
    np.testing.assert_allclose(np.einsum("ijkl,kl->ij", H.evaluate({"S": s}), e), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_generated_code_computes_hessians_through_eigenvectors(backend):
    f = LAM[-1]
    _compiled_matches([md.grad(f, S), md.hessian(f, S)], backend, [S], {"S": _spd()},
                      1e-4 if backend == "jax" else 1e-9, 1e-6 if backend == "jax" else 0.0)


# --------------------------------------------------------------------------- second derivatives through matrix functions

T2 = md.matrix("T", "n", "n", symmetric=True)
THROUGH_F = [
    lambda: a.T @ md.expm(S) @ a,
    lambda: a.T @ md.sqrtm(S) @ a,
    lambda: md.trace(md.matrix_function(S, "tanh") @ T2),
    lambda: md.trace(S + T2 - 2 * md.sqrtm(md.sqrtm(S) @ T2 @ md.sqrtm(S))),  # Wasserstein-2
]


@pytest.mark.parametrize("f", THROUGH_F, ids=["aᵀexpm(S)a", "aᵀsqrtm(S)a", "tr(tanh(S)T)", "W₂²"])
def test_hessians_through_matrix_functions_check(f):
    """dF_ij = A_ij dλᵢ + A_ji dλⱼ with A_ij = f[λᵢ, λᵢ, λⱼ], the confluent second divided
    differences (f″ from the function table, differentiated once more)."""
    assert md.check(f(), S, order=2, kinds={"S": "spd", "T": "spd"}) < 1e-6


def test_the_hessian_through_expm_matches_jax():
    jax = pytest.importorskip("jax")
    jsl = pytest.importorskip("jax.scipy.linalg")
    s, av = _spd(), np.random.default_rng(4).standard_normal(4)
    H = md.hessian(a.T @ md.expm(S) @ a, S).evaluate({"S": s, "a": av})
    with jax.enable_x64(True):
        want = np.asarray(jax.hessian(lambda m: av @ jsl.expm((m + m.T) / 2) @ av)(s))
    sym = lambda h: (h + h.transpose(1, 0, 2, 3) + h.transpose(0, 1, 3, 2) + h.transpose(1, 0, 3, 2)) / 4  # noqa: E731
    np.testing.assert_allclose(sym(H), sym(want), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_generated_code_computes_hessians_through_matrix_functions(backend):
    f = a.T @ md.expm(S) @ a
    values = {"S": _spd(), "a": np.random.default_rng(4).standard_normal(4)}
    _compiled_matches([md.grad(f, S), md.hessian(f, S)], backend, [S, a], values,
                      1e-4 if backend == "jax" else 1e-9, 1e-6 if backend == "jax" else 0.0)


def test_latex_of_spectral_results_is_valid_tex():
    r"""Names outside the function table print as operators (\operatorname{expm}), subscripts
    as subscripts (u_{1}), divided differences as \Delta_{\exp}; no Unicode subscript and no
    double subscript reaches LaTeX."""
    Xs = md.matrix("X", "m", "k")
    texts = [md.grad(md.norm(Xs, 2, smaller="k"), Xs).latex(),
             md.grad(md.sum(md.log(md.eigvalsh(S))) + md.trace(md.expm(S) @ S), S).latex(),
             md.hessian(md.eigvalsh(S)[-1], S).latex(),
             md.grad(v.T @ md.logm(G) @ v, G).latex()]
    assert texts[0] == r"u_{1} v_{1}^\top \quad\text{where } X = U \Sigma V^\top"
    assert r"\Delta_{\exp}" in texts[1] and (r"\operatorname{eigvalsh}" in texts[1] or r"\lambda" in texts[1])
    assert r"e_{n}" in texts[2]  # in index notation, e.g. (Q(S) e_{n})_{j}
    for t in texts:
        assert not set(t) & set("₀₁₂₃₄₅₆₇₈₉ₙΔΓ"), t


# --------------------------------------------------------------------------- second derivatives through singular vectors

@pytest.mark.parametrize("rows, cols", [("m", "n"), ("n", "m"), ("n", "n")], ids=["tall", "wide", "square"])
@pytest.mark.parametrize("f", [
    lambda Y: md.norm(Y, "nuc", smaller="n"),
    lambda Y: md.norm(Y, 2, smaller="n"),
    lambda Y: md.norm(Y, 2, smaller="n") ** 2,
    lambda Y: md.sum(md.svdvals(Y, smaller="n") ** 3),
], ids=["‖X‖_*", "‖X‖₂", "‖X‖₂²", "Σσ³"])
def test_hessians_through_singular_vectors_check(f, rows, cols):
    """dU = U(F ⊙ (PΣ + ΣPᵀ)) + (I − UUᵀ)dX VΣ⁻¹, dV likewise, P = UᵀdX V, Fᵢⱼ = 1/(σⱼ² − σᵢ²)."""
    Y = md.matrix("X", rows, cols)
    assert md.check(f(Y), Y, order=2, sizes={"m": 5, "n": 3}) < 1e-6


def test_the_nuclear_norm_hessian_matches_jax():
    jax = pytest.importorskip("jax")
    Y = md.matrix("X", 5, 3)
    x = np.random.default_rng(6).standard_normal((5, 3))
    H = md.hessian(md.norm(Y, "nuc"), Y).evaluate({"X": x})
    with jax.enable_x64(True):
        want = np.asarray(jax.hessian(lambda m: jax.numpy.linalg.svd(m, compute_uv=False).sum())(x))
    np.testing.assert_allclose(H, want, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_generated_code_computes_hessians_through_singular_vectors(backend):
    Y = md.matrix("X", 5, 3)
    f = md.norm(Y, "nuc")
    _compiled_matches([md.grad(f, Y), md.hessian(f, Y)], backend, [Y],
                      {"X": np.random.default_rng(6).standard_normal((5, 3))},
                      1e-4 if backend == "jax" else 1e-9, 1e-6 if backend == "jax" else 0.0)


@pytest.mark.parametrize("rows, cols", [(5, 3), (3, 5)], ids=["tall", "wide"])
@pytest.mark.parametrize("f, numpy_f", [
    (lambda Y: md.norm(Y, "nuc"), lambda x: np.linalg.norm(x, "nuc")),
    (lambda Y: md.norm(Y, 2), lambda x: np.linalg.norm(x, 2)),
    (lambda Y: md.sum(md.svdvals(Y) ** 3), lambda x: np.sum(np.linalg.svd(x, compute_uv=False) ** 3)),
    (lambda Y: md.svdvals(Y)[-1], lambda x: np.linalg.svd(x, compute_uv=False)[-1]),
], ids=["‖X‖_*", "‖X‖₂", "Σσ³", "σ_min"])
def test_thin_svds_of_symbolic_matrices_need_no_smaller(f, numpy_f, rows, cols):
    """Issue 21: md.norm(X, "nuc") of an (m, n) X was refused ("say it with smaller="): the
    singular values now have the dim min(m, n) of their own, sized when evaluated, and the
    first and second derivatives check for tall and wide X."""
    Y = md.matrix("X", "m", "n")
    assert md.svdvals(Y).shape == ("min(m, n)",) == md.svdvals(Y.T).shape
    x = np.random.default_rng(3).standard_normal((rows, cols))
    np.testing.assert_allclose(f(Y).evaluate(X=x), numpy_f(x), rtol=1e-12)
    assert md.check(f(Y), Y, order=2, sizes={"m": rows, "n": cols}) < 1e-6
    H = md.hessian(f(Y), Y).evaluate(X=x)
    assert H.shape == (rows, cols, rows, cols)


def test_smaller_naming_the_larger_dim_is_an_error_when_evaluated():
    """smaller='m' for a 5 × 3 X declared 3 values of length 5; evaluate returned them."""
    Y = md.matrix("X", "m", "n")
    x = np.random.default_rng(3).standard_normal((5, 3))
    with pytest.raises(md.EvaluationError, match="3 singular values.*m = 5"):
        md.svdvals(Y, smaller="m").evaluate(X=x)
    np.testing.assert_allclose(md.svdvals(Y, smaller="n").evaluate(X=x), np.linalg.svd(x, compute_uv=False))


def test_a_min_dim_takes_its_size_from_its_arguments():
    from matdiff.evaluate import Sizes, min_arguments
    sizes = Sizes({"k": 3, "n": 5, "p": 2})
    assert sizes["min(k, n)"] == 3 and sizes["min(k·p, n)"] == 5 and sizes["min(2, min(k, n))"] == 2
    assert min_arguments("min(k, min(m, n)·p)") == ["k", "min(m, n)·p"]
    assert md.library.min_dim("m", "n") == "min(m, n)" == md.library.min_dim("n", "m")
    assert md.library.min_dim("k", "min(m, n)") == "min(k, m, n)"
    assert md.library.min_dim(3, 5) == 3 and md.library.min_dim("n", "n") == "n"


_A = md.matrix("A", "n", "n", symmetric=True)
_B = md.matrix("B", "n", "n", symmetric=True)
_G, _t = md.matrix("G", "n", "n"), md.scalar("t")
STRUCTURAL = [  # symmetric by structure, though the notation's analysis alone did not see it
    _A + _t * _B, md.inv(_A + _t * _B), 2 * _A - _t * (_G @ _G.T), md.eye("n") + _G.T @ _A @ _G,
    md.expm(_A) + _t * _A,
]


@pytest.mark.parametrize("s", STRUCTURAL, ids=lambda s: s.src)
def test_spectral_functions_take_matrices_symmetric_by_structure(s):
    """Issue 21: eigvalsh(A + tB) with A, B symmetric is accepted; its derivatives by the
    scalar and by a symmetric variable check to second order, and the value is symmetric."""
    rng = np.random.default_rng(0)
    a, b, g = (rng.standard_normal((4, 4)) for _ in range(3))
    values = {"A": a + a.T + 8 * np.eye(4), "B": (b + b.T) / 4, "G": g / 4, "t": 0.3}
    used = {k: v for k, v in values.items() if k in {u.node.name for u in s.variables}}
    m = s.evaluate(used)
    np.testing.assert_allclose(m, m.T, rtol=1e-12, atol=1e-12)
    assert md.library.symmetric(s)
    for f in (md.sum(md.eigvalsh(s) ** 3), md.trace(md.expm(s / 10)), md.trace(md.matrix_function(s, "sin"))):
        assert md.check(f, _t, order=2) < 1e-6
        assert md.check(f, _A, sizes={"n": 3}) < 1e-6


def test_a_matrix_not_symmetric_by_structure_is_still_refused():
    for s in (_A @ _B, _G, _A + _t * _G):
        assert not md.library.symmetric(s)
        with pytest.raises(md.NotSupportedError, match="symmetric"):
            md.eigvalsh(s)
    assert isinstance(md.expm(_A @ _B).node, md.ir.Funm)  # the general-matrix path


def _soft(u):
    return md.log(1 + md.exp(u))


@pytest.mark.parametrize("f,numpy_f", [
    (lambda u: u ** 3, lambda lam: lam ** 3),
    (lambda u: 2 * u ** 2 - u + 1, lambda lam: 2 * lam ** 2 - lam + 1),
    (_soft, lambda lam: np.log1p(np.exp(lam))),
    (lambda u: md.exp(-u / 2) * md.sin(u), lambda lam: np.exp(-lam / 2) * np.sin(lam)),
], ids=["cube", "quadratic", "softplus", "damped sine"])
def test_matrix_function_traces_a_python_callable(f, numpy_f):
    """Issue 21: md.matrix_function(S, lambda u: u**3) traces the callable on a scalar
    placeholder, as JAX users expect; its value is U f(Λ) Uᵀ and its derivatives check to
    second order."""
    M = md.matrix_function(S, f)
    rng = np.random.default_rng(1)
    s = rng.standard_normal((4, 4))
    s = s + s.T
    lam, U = np.linalg.eigh(s)
    np.testing.assert_allclose(M.evaluate(S=s), U @ np.diag(numpy_f(lam)) @ U.T, atol=1e-12)
    assert md.check(a.T @ M @ a, S, order=2) < 1e-6
    assert md.check(md.trace(M), S, order=2) < 1e-6


def test_matrix_function_refuses_a_callable_that_is_not_element_wise():
    for f, words in [(lambda u: md.det(u), "tracing"), (lambda u: u * S, "scalar expression of u alone"),
                     (lambda u: 1 / 0, "ZeroDivisionError"), (lambda u: md.norm(u, 1), "")]:
        try:
            md.matrix_function(S, f)
        except md.MatdiffError as e:
            assert words in str(e)
        else:
            assert words == ""  # |u| is element-wise: accepted


_Xn = md.matrix("X", "n", "n")
TEXTBOOK = [  # issue 21: decomposition parts named once, as textbooks name them
    (v.T @ md.eigvalsh(S), S, "U diag(v)Uᵀ  where S = UΛUᵀ",
     r"U \operatorname{diag}\left(v\right) U^\top \quad\text{where } S = U \Lambda U^\top"),
    (md.eigvalsh(S)[-1], S, "uₙuₙᵀ  where S = UΛUᵀ",
     r"u_{n} u_{n}^\top \quad\text{where } S = U \Lambda U^\top"),
    (md.eigvalsh(S)[-2], S, "u_(n−1)u_(n−1)ᵀ  where S = UΛUᵀ", r"u_{n-1} u_{n-1}^\top \quad\text{where } S = U \Lambda U^\top"),
    (md.eigvalsh(S)[-1] ** 2, S, "2λₙuₙuₙᵀ  where S = UΛUᵀ",
     r"2 \lambda_{n} u_{n} u_{n}^\top \quad\text{where } S = U \Lambda U^\top"),
    (md.eigvalsh(S)[0] * md.eigvalsh(S)[-1], S, "U diag(λ₁eₙ + λₙe₁)Uᵀ  where S = UΛUᵀ", None),
    (md.norm(_Xn, 2), _Xn, "u₁v₁ᵀ  where X = UΣVᵀ", r"u_{1} v_{1}^\top \quad\text{where } X = U \Sigma V^\top"),
    (md.sum(md.svdvals(_Xn) ** 3), _Xn, "3UΣ²Vᵀ  where X = UΣVᵀ",
     r"3 U \Sigma^{2} V^\top \quad\text{where } X = U \Sigma V^\top"),
    # the parts of two decompositions keep their calls, and so do names the user took
    (md.eigvalsh(S)[-1] * md.eigvalsh(G + G.T)[-1], S, None, None),
    (md.trace(md.matrix("U", "n", "n") @ md.expm(S)) + md.eigvalsh(S)[-1], S, None, None),
]


@pytest.mark.parametrize("f,wrt,text,latex", TEXTBOOK)
def test_decomposition_parts_print_as_textbooks_write_them(f, wrt, text, latex):
    g = md.grad(f, wrt)
    shown = str(g)
    if text is None:
        assert "where S = UΛUᵀ" not in shown and "Q(S)" in shown, shown
    else:
        assert shown == text
        assert "<" in repr(g)  # display-only: a where-clause of parts is not read back as input
    if latex is not None:
        assert g.latex() == latex
    assert md.check(f, wrt, kinds={"G": "normal"}) < 1e-6


def test_eigenvalues_alone_keep_their_name():
    assert str(md.sum(md.log(md.eigvalsh(S)))) == "1ᵀlog(eigvalsh(S))"
    assert str(md.grad(md.sum(md.eigvalsh(S) ** 3), S)) == "3S²"


_V = md.matrix("V", "n", "n", symmetric=True)


@pytest.mark.parametrize("f,text", [
    (md.sum(md.eigvalsh(S) ** 3), "3U(UᵀVU ⊙ Δ[u²](λ))Uᵀ  where S = UΛUᵀ"),
    (md.sum(md.log(md.eigvalsh(S))), "U(Δ[u⁻¹](λ) ⊙ UᵀVU)Uᵀ  where S = UΛUᵀ"),
    (md.sum(md.sqrt(md.eigvalsh(S))), "(1/2)U(UᵀVU ⊙ Δ[u^(−1/2)](λ))Uᵀ  where S = UΛUᵀ"),
    (md.trace(md.expm(S)), "U(UᵀVU ⊙ Δexp(λ))Uᵀ  where S = UΛUᵀ"),
    # f′ not one function of the table: U diag(f′(λ))Uᵀ is still f′(S) (σ′ = σ(1 − σ))
    (md.sum(md.sigmoid(md.eigvalsh(S))), "U(Δsigmoid′(λ) ⊙ UᵀVU)Uᵀ  where S = UΛUᵀ"),
    (md.sum(md.tanh(md.eigvalsh(S))), "U(UᵀVU ⊙ Δtanh′(λ))Uᵀ  where S = UΛUᵀ"),
    (md.sum(md.arctan(md.eigvalsh(S))), "U(UᵀVU ⊙ Δarctan′(λ))Uᵀ  where S = UΛUᵀ"),
])
def test_spectral_hessians_print_as_the_daleckii_krein_linear_map(f, text):
    """Issue 21: ∇²f[V] = U(F ⊙ UᵀVU)Uᵀ, F the divided differences of f′ (its power shown:
    Δ[u²], never Δpow), and its value is the directional difference of the gradient."""
    h = md.hvp(f, S, _V)
    assert str(h) == text
    assert "pow" not in h.latex()
    H = md.hessian(f, S)  # the Hessian itself prints as the same linear map of a direction V
    assert str(H) == "V ↦ " + text and H.latex().startswith("V \\mapsto ")
    assert "Σ_p" in H.index()  # the index form stays available
    assert md.check(f, S, order=2, kinds={"S": "spd"}) < 1e-6
    rng = np.random.default_rng(2)
    q = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    s = q @ np.diag([0.5, 1.0, 2.0, 3.5]) @ q.T
    v = rng.standard_normal((4, 4))
    v = (v + v.T) / 2
    g = md.grad(f, S)
    eps = 1e-5
    fd = (g.evaluate(S=s + eps * v) - g.evaluate(S=s - eps * v)) / (2 * eps)
    np.testing.assert_allclose(h.evaluate(S=s, V=v), fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.einsum("ijkl,kl->ij", H.evaluate(S=s), v), fd, rtol=1e-6, atol=1e-8)
