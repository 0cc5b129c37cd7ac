"""md.matrix_function(X, f) of a general (not symmetric) square X, for every analytic function
of the function table (issue 21): values without diagonalising X, so defective matrices work;
the Fréchet derivative L_f(X, E) and the second derivative by the block-triangular identity;
generated code in NumPy, JAX and PyTorch; the domain refused where f has a pole or leaves its
principal branch. Every value is checked against mpmath in 40 digits (by eigenvalues where
X is diagonalisable, by the Jordan form's Taylor series where it is defective), every
derivative by central differences (to second order for Hessians) and, where JAX can
differentiate the same function, against jax.grad and jax.hessian."""
import warnings

import numpy as np
import pytest

import matdiff as md
import sys
import os
from matdiff.parse import declarations

sys.path.insert(0, os.path.dirname(__file__))
from test_read_back import _reads_back_or_refuses  # noqa: E402

mp = pytest.importorskip("mpmath")
pytest.importorskip("scipy.linalg")

FUNCTIONS = ["sin", "cos", "tan", "tanh", "sinh", "cosh", "sigmoid", "softplus", "log1p", "expm1", "arctan"]
LOGM_FAMILY = ["softplus", "log1p", "arctan"]  # through the principal logarithm (JAX, PyTorch: funm's roots)

X = md.matrix("X", "n", "n")
a, b = md.vector("a", "n"), md.vector("b", "n")

MP = {"sin": mp.sin, "cos": mp.cos, "tan": mp.tan, "tanh": mp.tanh, "sinh": mp.sinh, "cosh": mp.cosh,
      "sigmoid": lambda z: 1 / (1 + mp.exp(-z)), "softplus": lambda z: mp.log(1 + mp.exp(z)),
      "log1p": lambda z: mp.log(1 + z), "expm1": lambda z: mp.exp(z) - 1, "arctan": mp.atan,
      "exp": mp.exp}


def _random(n=4, seed=5):
    """A well-conditioned non-symmetric matrix, its spectrum inside every function's domain."""
    x = np.random.default_rng(seed).standard_normal((n, n)) / 4
    assert np.abs(np.linalg.eigvals(x)).max() < 1.0 and not np.allclose(x, x.T)
    return x


JORDAN = 0.3 * np.eye(3) + np.diag([1.0, 1.0], 1)  # one Jordan block: defective
_S = np.eye(3) + 0.3 * np.random.default_rng(8).standard_normal((3, 3))
SIMILAR = _S @ JORDAN @ np.linalg.inv(_S)  # defective and not triangular


def _reference(fn, x):
    """f(X) in 40 digits: V f(Λ) V⁻¹ for a diagonalisable X; at the defective points, the
    Jordan block's f(λ)I + f′(λ)N + f″(λ)/2 N², moved by the similarity S."""
    f = MP[fn]
    with mp.workdps(40):
        if x is JORDAN or x is SIMILAR:
            lam, nil = mp.mpf("0.3"), mp.matrix(np.diag([1.0, 1.0], 1).tolist())
            fj = (f(lam) * mp.eye(3) + mp.diff(f, lam, 1) * nil + mp.diff(f, lam, 2) / 2 * nil * nil)
            if x is SIMILAR:
                s = mp.matrix(_S.tolist())
                fj = s * fj * mp.inverse(s)
            return np.array(fj.tolist(), dtype=float)
        lam, v = mp.eig(mp.matrix(x.tolist()))
        out = v * mp.diag([f(z) for z in lam]) * mp.inverse(v)
        return np.array(out.apply(mp.re).tolist(), dtype=float)


POINTS = {"random": _random(), "jordan": JORDAN, "similar jordan": SIMILAR}


def _vectors(n):
    rng = np.random.default_rng(n)
    return rng.standard_normal(n), rng.standard_normal(n)


def _values(x):
    av, bv = _vectors(x.shape[0])
    return {"X": x, "a": av, "b": bv}


def _scalar(fn):
    return a.T @ md.matrix_function(X, fn) @ b


def _central_gradient(g, x, h=1e-5):
    """∂g/∂X by central differences, entry by entry."""
    out = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        out[idx] = (g(x + e) - g(x - e)) / (2 * h)
    return out


# --------------------------------------------------------------------------- the table

@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("fn", FUNCTIONS + ["exp"])
def test_the_value_equals_mpmath(fn, point):
    x = POINTS[point]
    got = md.matrix_function(X, fn).evaluate(X=x)
    np.testing.assert_allclose(got, _reference(fn, x), rtol=1e-12, atol=1e-12 * np.abs(got).max())


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("fn", FUNCTIONS)
def test_the_gradient_is_the_frechet_derivative_and_equals_central_differences(fn, point):
    values = _values(POINTS[point])
    f = _scalar(fn)
    g = md.grad(f, X)
    assert str(g) == f"L_{fn}(Xᵀ, abᵀ)"
    want = _central_gradient(lambda x: float(f.evaluate({**values, "X": x})), values["X"])
    np.testing.assert_allclose(g.evaluate(values), want, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("point", ["random", "similar jordan"])
@pytest.mark.parametrize("fn", FUNCTIONS)
def test_the_hessian_equals_central_differences_of_the_gradient(fn, point):
    """Second order: the Hessian (the second Fréchet derivative, by the block-triangular
    identity) against central differences of the gradient along random directions, and
    md.check to second order."""
    values = _values(POINTS[point])
    f = _scalar(fn)
    g, H = md.grad(f, X), md.hessian(f, X)
    n = values["X"].shape[0]
    got = H.evaluate(values)
    assert got.shape == (n, n, n, n)
    h = 1e-5
    for v in np.random.default_rng(2).standard_normal((3, n, n)):  # H[V] = ∂G/∂X along V
        moved = [g.evaluate({**values, "X": values["X"] + s * h * v}) for s in (1, -1)]
        np.testing.assert_allclose(np.einsum("ijkl,kl->ij", got, v), (moved[0] - moved[1]) / (2 * h),
                                   rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got, np.transpose(got, (2, 3, 0, 1)), atol=1e-10)  # symmetric
    assert md.check(f, X, order=2) < 1e-6


@pytest.mark.parametrize("fn", ["sin", "tanh", "log1p", "arctan"])
def test_hvp_equals_central_differences_of_the_gradient(fn):
    """md.hvp: one Fréchet derivative of a 2n × 2n block, no n⁴ Hessian; evaluated and compiled."""
    V = md.matrix("V", "n", "n")
    values = _values(POINTS["random"])
    v = np.random.default_rng(4).standard_normal(values["X"].shape)
    f = _scalar(fn)
    g, hv = md.grad(f, X), md.hvp(f, X, V)
    h = 1e-5
    moved = [g.evaluate({**values, "X": values["X"] + s * h * v}) for s in (1, -1)]
    got = hv.evaluate({**values, "V": v})
    np.testing.assert_allclose(got, (moved[0] - moved[1]) / (2 * h), rtol=1e-6, atol=1e-7)
    code = md.compile(hv, backend="numpy")
    np.testing.assert_allclose(code(**values, V=v), got, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_the_jacobian_of_the_matrix_equals_central_differences(fn):
    x = POINTS["random"][:3, :3]
    J = md.jacobian(md.matrix_function(X, fn), X).evaluate(X=x)
    h = 1e-5
    for i, j in np.ndindex(3, 3):
        e = np.zeros((3, 3))
        e[i, j] = h
        fd = (md.matrix_function(X, fn).evaluate(X=x + e) - md.matrix_function(X, fn).evaluate(X=x - e)) / (2 * h)
        np.testing.assert_allclose(J[:, :, i, j], fd, rtol=1e-7, atol=1e-8)


# --------------------------------------------------------------------------- against JAX

def _jax_functions(jnp, jsl):
    """The same functions written for jax.grad: from jax.scipy.linalg.expm (of a complex
    matrix for sin, cos, tan) and solves; JAX has no matrix logarithm, so no log1p,
    softplus, arctan."""
    def eye(x):
        return jnp.eye(x.shape[0], dtype=x.dtype)
    return {
        "sin": lambda x: jsl.expm(1j * x).imag, "cos": lambda x: jsl.expm(1j * x).real,
        "tan": lambda x: jnp.linalg.solve(jsl.expm(1j * x).real, jsl.expm(1j * x).imag),
        "sinh": lambda x: (jsl.expm(x) - jsl.expm(-x)) / 2, "cosh": lambda x: (jsl.expm(x) + jsl.expm(-x)) / 2,
        "tanh": lambda x: jnp.linalg.solve(jsl.expm(2 * x) + eye(x), jsl.expm(2 * x) - eye(x)),
        "sigmoid": lambda x: jnp.linalg.inv(eye(x) + jsl.expm(-x)), "expm1": lambda x: jsl.expm(x) - eye(x),
    }


@pytest.mark.parametrize("fn", [f for f in FUNCTIONS if f not in LOGM_FAMILY])
def test_gradient_and_hessian_equal_jax(fn):
    jax = pytest.importorskip("jax")
    jnp, jsl = pytest.importorskip("jax.numpy"), pytest.importorskip("jax.scipy.linalg")
    values = _values(POINTS["random"])
    f = _scalar(fn)
    ref = _jax_functions(jnp, jsl)[fn]
    with jax.enable_x64(True):
        def scalar(x):
            return values["a"] @ ref(x) @ values["b"]
        # jax.hessian is jacfwd(jax.grad): one pass gives both, the gradient as its primal value
        hess, grad = jax.jacfwd(lambda x: (jax.grad(scalar)(x),) * 2, has_aux=True)(values["X"])
        hess, grad = np.asarray(hess), np.asarray(grad)
    np.testing.assert_allclose(md.grad(f, X).evaluate(values), grad, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(md.hessian(f, X).evaluate(values), hess, rtol=1e-9, atol=1e-11)


# --------------------------------------------------------------------------- generated code

def _call(code, backend, values, dtype):
    arrays = {k: v.astype(dtype) for k, v in values.items()}
    if backend == "torch":
        import torch
        arrays = {k: torch.tensor(v) for k, v in arrays.items()}
    return [np.asarray(r, dtype=float) for r in code(**arrays)]


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
@pytest.mark.parametrize("fn", FUNCTIONS)
def test_generated_code_computes_values_gradients_and_hessians(fn, backend):
    """float64 to 1e-10 and float32 to 1e-4 of evaluate, at a random and at a defective
    point; the logarithm's family in JAX and PyTorch by square roots (funm's
    ``_mf_log1p_roots``), which have no matrix log. No Hessians in JAX: XLA takes about 25 s
    to compile one (expm of complex 216 × 216 blocks), per dtype."""
    pytest.importorskip({"numpy": "numpy", "jax": "jax", "torch": "torch"}[backend])
    f = _scalar(fn)
    # JAX: values and gradients (XLA compiles a 4-index Hessian through the block construction
    # for half a minute; its source is NumPy's, checked with PyTorch's in the other backends)
    outs = [f, md.grad(f, X)] + ([md.hessian(f, X)] if backend != "jax" else [])
    code = md.compile(outs, backend=backend)
    for x in (_random(3, seed=6), SIMILAR):  # 3 × 3: a Hessian's blocks have 8n³ rows
        values = _values(x)
        want = [o.evaluate(values) for o in outs]
        if backend == "jax":
            import jax
            with jax.enable_x64(True):
                got64 = _call(code, backend, values, np.float64)
        else:
            got64 = _call(code, backend, values, np.float64)
        got32 = _call(code, backend, values, np.float32)
        for g64, g32, w in zip(got64, got32, want):
            scale = max(1.0, np.abs(w).max())
            np.testing.assert_allclose(g64, w, rtol=1e-10, atol=1e-10 * scale)
            np.testing.assert_allclose(g32, w, rtol=1e-4, atol=1e-4 * scale)


LOG_POINTS = {**POINTS, "large": 30 * _random() + 40 * np.eye(4),  # ‖X‖ ≈ 60: six square roots
              "huge": 1e100 * (30 * _random() + 40 * np.eye(4))}  # each root scaled by 2ˢ (_mf_sqrt)


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("fn", LOGM_FAMILY)
def test_the_logarithm_s_family_without_a_matrix_log(fn, backend):
    """JAX and PyTorch have no matrix logarithm: log1p, softplus and arctan go through funm's
    ``_mf_log1p_roots`` — square roots by Denman–Beavers until ‖W‖₁ ≤ 1/2, then the artanh
    series — which needs no diagonalisable X.  Values against mpmath (40 digits) at random,
    defective and large X, in float64 (1e-12) and float32 (1e-4), eager and (JAX) under jit,
    and gradients of aᵀf(X)b against central differences of the value; outside the principal
    branch checked code refuses (the roots do not settle) where evaluate does."""
    module = pytest.importorskip(backend)
    if backend == "jax":
        module.config.update("jax_enable_x64", True)
    f = md.compile(md.matrix_function(X, fn), backend=backend)  # one function for every point:
    runs = [f] + ([module.jit(f.unchecked)] if backend == "jax" else [])  # jit compiles once a shape
    for name, x in LOG_POINTS.items():
        if fn == "softplus" and name in ("large", "huge"):
            continue  # e^(40 + …): mpmath's reference by eigenvalues is not the point here
        want = _reference(fn, x)
        for g in runs:
            got = np.asarray(g(X=x), dtype=float)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max(), err_msg=name)
        if name == "huge":
            continue  # past float32's range
        arg = module.tensor(x.astype(np.float32)) if backend == "torch" else x.astype(np.float32)
        got32 = np.asarray(f(X=arg), dtype=float)
        np.testing.assert_allclose(got32, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=name)
    x = POINTS["similar jordan"]
    values = _values(x)
    grad = md.compile(md.grad(_scalar(fn), X), backend=backend)
    got = np.asarray(grad(**values), dtype=float)
    fd = _central_gradient(lambda m: float(_scalar(fn).evaluate(dict(values, X=m))), x)
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-8 * np.abs(fd).max())
    if fn == "softplus":  # its real X outside the branch make I + e^X a multiple of I: rounding decides
        return
    outside = {"log1p": np.array([[-2.0, 1.0], [0.0, 0.5]]),  # 1 + λ = −1; 1 + iλ = −1 (λ = ±2i)
               "arctan": np.array([[0.0, 2.0], [-2.0, 0.0]])}[fn]
    with pytest.raises(md.EvaluationError):
        _quiet(md.matrix_function(X, fn).evaluate, X=outside)
    with pytest.raises(md.EvaluationError):
        _quiet(f, X=outside)


def test_generated_code_is_one_helper_for_every_function():
    source = md.codegen([_scalar("sin"), md.grad(_scalar("tanh"), X)], backend="numpy")
    assert "_matfun('sin', X)" in source and "_matfun('tanh', " in source
    assert "np.linalg.eig(" not in source  # no diagonalisation


# --------------------------------------------------------------------------- accuracy

@pytest.mark.parametrize("fn, series", [
    ("expm1", lambda x: x + x @ x / 2), ("sinh", lambda x: x + x @ x @ x / 6),
    ("sin", lambda x: x - x @ x @ x / 6), ("tanh", lambda x: x - x @ x @ x / 3),
    ("tan", lambda x: x + x @ x @ x / 3), ("log1p", lambda x: x - x @ x / 2),
    ("arctan", lambda x: x - x @ x @ x / 3),
])
def test_small_matrices_keep_their_relative_accuracy(fn, series):
    """No cancellation where X is small (e^X − I formed from e^X would lose it all)."""
    x = 1e-9 * _random()
    got = md.matrix_function(X, fn).evaluate(X=x)
    np.testing.assert_allclose(got, series(x), rtol=1e-14, atol=0)


# --------------------------------------------------------------------------- printing

@pytest.mark.parametrize("fn", FUNCTIONS)
def test_the_value_prints_as_f_subscript_m_and_reads_back(fn):
    e = md.matrix_function(X, fn)
    assert str(e) == f"{fn}ₘ(X)" and isinstance(e.node, md.ir.Funm)
    assert "matdiff" in _reads_back_or_refuses(_scalar(fn), seed=1)  # tolerates a refusal, never a misreading
    back = md.parse(str(e), dialect="matdiff", **declarations(e))
    x = POINTS["random"]
    np.testing.assert_allclose(back.evaluate(X=x), e.evaluate(X=x), rtol=1e-14)


@pytest.mark.parametrize("fn, text", [
    ("sin", "cosₘ(X)ᵀ"), ("cos", "−sinₘ(X)ᵀ"), ("sinh", "coshₘ(X)ᵀ"), ("cosh", "sinhₘ(X)ᵀ"),
    ("expm1", "expm(X)ᵀ"), ("softplus", "sigmoidₘ(X)ᵀ"), ("log1p", "(Xᵀ + I)⁻¹"),
])
def test_trace_gradients_print_f_prime_and_read_back(fn, text):
    """∂tr f(X)/∂X = f′(X)ᵀ, as L_f(X, I) = f′(X)."""
    f = md.trace(md.matrix_function(X, fn))
    g = md.grad(f, X)
    assert str(g) == text
    assert "matdiff" in _reads_back_or_refuses(g)
    assert md.check(f, X) < 1e-6


def test_the_frechet_derivative_is_display_only_with_a_clear_error():
    g = md.grad(_scalar("tanh"), X)
    with pytest.raises(md.ParseError, match="for reading only"):
        md.parse(str(g), dialect="matdiff", **declarations(g))
    assert g.latex() == "L_{\\tanh}\\left(X^\\top, a b^\\top\\right)"


# --------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("fn, x, where", [
    ("tan", np.array([[np.pi / 2, 1.0], [0.0, 0.3]]), "cos λ = 0"),
    ("tanh", np.array([[0.0, np.pi / 2], [-np.pi / 2, 0.0]]), "cosh λ = 0"),
    ("sigmoid", np.array([[0.0, np.pi], [-np.pi, 0.0]]), "pole of σ"),
    ("log1p", np.array([[-2.0, 1.0], [0.0, 0.5]]), "closed negative real axis"),
    ("log1p", np.array([[-1.0, 1.0], [0.0, 0.5]]), "closed negative real axis"),
    ("softplus", np.array([[0.0, np.pi], [-np.pi, 0.0]]), "closed negative real axis"),
    ("arctan", np.array([[0.0, 2.0], [-2.0, 0.0]]), "imaginary axis"),
])
def test_outside_the_domain_is_refused_for_the_value_and_its_derivatives(fn, x, where):
    values = {"X": x, "a": np.ones(2), "b": np.array([1.0, -1.0])}
    with pytest.raises(md.EvaluationError, match=where):
        md.matrix_function(X, fn).evaluate(X=x)
    for e in (md.grad(_scalar(fn), X), md.hessian(_scalar(fn), X)):
        with pytest.raises(md.EvaluationError, match=where):
            e.evaluate(values)
    assert md.check(_scalar(fn), X) < 1e-6  # check draws a point inside the domain


def _quiet(f, *args, **kwargs):
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return f(*args, **kwargs)


@pytest.mark.parametrize("backend", ["evaluate", "numpy", "jax", "torch"])
@pytest.mark.parametrize("fn", ["sinh", "cosh", "exp"])
def test_an_overflow_is_an_error_not_a_nan(fn, backend):
    """e^800 overflows float64: evaluate raises, and so does compiled code with checks (md.compile's
    default; JAX outside jit, and NaN under it, where no value can raise); checks=False gives inf."""
    x = np.array([[800.0, 1.0], [0.0, -800.0]])
    e = md.matrix_function(X, fn)
    if backend == "evaluate":
        with pytest.raises(md.EvaluationError, match="overflowed"):
            _quiet(e.evaluate, X=x)
        return
    module = pytest.importorskip(backend)
    if backend == "jax":
        module.config.update("jax_enable_x64", True)
    f = md.compile(e, backend=backend)
    assert "_finite_value(" in f.source == md.codegen(e, backend=backend)
    with pytest.raises(md.EvaluationError, match=f"{md.ir.GENERAL_FUNCTIONS[fn]}\\(X\\) overflowed.*float64"):
        _quiet(f, X=x)
    if backend == "jax":
        assert np.isnan(np.asarray(_quiet(module.jit(f.unchecked), X=x))).all()
    unchecked = md.compile(e, backend=backend, checks=False)
    assert "_finite_value(" not in unchecked.source == md.codegen(e, backend=backend, checks=False)
    assert not np.isfinite(np.asarray(_quiet(unchecked, X=x))).all()
    small = np.array([[1.0, 2.0], [0.5, -1.0]])
    want = _reference(fn, small)
    np.testing.assert_allclose(np.asarray(f(X=small)), want, rtol=1e-12, atol=1e-14 * np.abs(want).max())


LARGE = {  # eigenvalues past tanh's overflow (355 through expm1(2X)), of both signs, and large
    # ones beside small ones, where (expm1(2X) + 2I)⁻¹ expm1(2X) solved a system as ill
    # conditioned as e^(2|λ|) (wrong by 10⁰ at λ = 20 and −20)
    "800, −800": [800.0, -800.0, 0.5], "400, −300": [400.0, -300.0, 1.0], "20, −20": [20.0, -20.0, 1.0],
    "40 beside 0.1": [40.0, 0.5, 0.1],
}


@pytest.mark.parametrize("backend", ["evaluate", "numpy", "jax", "torch"])
@pytest.mark.parametrize("fn", ["tanh", "sigmoid"])
@pytest.mark.parametrize("spectrum", LARGE.values(), ids=LARGE.keys())
def test_tanh_and_sigmoid_of_large_eigenvalues_are_finite_and_right(spectrum, fn, backend):
    """tanh X and σ(X) are bounded however large X's eigenvalues: computed by double angles
    from tanh(X/2ˢ) (funm), they equal mpmath's V f(Λ) V⁻¹ (40 digits) in evaluate and in every
    backend, with no error; the gradient of aᵀf(X)b equals central differences of the value."""
    v = np.eye(3) + 0.3 * np.random.default_rng(3).standard_normal((3, 3))  # not normal
    x = v @ np.diag(spectrum) @ np.linalg.inv(v)
    want = _reference(fn, x)
    e = md.matrix_function(X, fn)
    if backend == "evaluate":
        got = e.evaluate(X=x)
    else:
        module = pytest.importorskip(backend)
        if backend == "jax":
            module.config.update("jax_enable_x64", True)
        got = np.asarray(md.compile(e, backend=backend)(X=x), dtype=float)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11 * np.abs(want).max())
    if backend == "evaluate":
        values = _values(x)
        grad = md.grad(_scalar(fn), X).evaluate(values)
        fd = _central_gradient(lambda m: float(_scalar(fn).evaluate(dict(values, X=m))), x, h=1e-6)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7 * np.abs(grad).max())


@pytest.mark.parametrize("fn", ["relu", "step", "abs", "sign"])
def test_non_analytic_functions_are_refused_for_a_general_matrix(fn):
    with pytest.raises(md.NotSupportedError, match="not analytic"):
        md.matrix_function(X, fn)
    S = md.matrix("S", "n", "n", symmetric=True)
    assert isinstance(md.matrix_function(S, fn).node, md.ir.MatFn)  # the symmetric path stays


def test_user_functions_and_powers_are_refused_for_a_general_matrix():
    with pytest.raises(md.NotSupportedError, match="a general matrix needs a built-in analytic"):
        md.matrix_function(X, lambda u: u ** 3)
    with pytest.raises(md.NotSupportedError, match="matrix_power"):
        md.matrix_function(X, md.functions.fn("pow", 3))
    with pytest.raises(md.ShapeError):
        md.matrix_function(md.matrix("Y", "n", "k"), "sin")


def test_symmetric_matrices_keep_the_eigendecomposition_path():
    S = md.matrix("S", "n", "n", symmetric=True)
    assert isinstance(md.matrix_function(S, "sin").node, md.ir.MatFn)
    assert isinstance(md.matrix_function(X + X.T, "sin").node, md.ir.MatFn)  # symmetric by structure
    s = POINTS["random"] + POINTS["random"].T
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(md.matrix_function(X + X.T, "sin").evaluate(X=POINTS["random"]),
                                   _reference("sin", s), rtol=1e-12, atol=1e-14)


# --- logm and sqrtm of a general X in generated JAX and PyTorch code: no eigendecomposition

ROOT_POINTS = {  # defective, scaled far from 1 both ways, and a plain random matrix
    "jordan": np.array([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 2.0]]),
    "similar jordan": SIMILAR + np.eye(3),
    "random": np.random.default_rng(0).standard_normal((3, 3)) + 3 * np.eye(3),
    "1e-100 jordan": 1e-100 * np.array([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 2.0]]),
    "1e100 random": 1e100 * (np.random.default_rng(0).standard_normal((3, 3)) + 3 * np.eye(3)),
    "1e-9 random": 1e-9 * (np.random.default_rng(0).standard_normal((3, 3)) + 3 * np.eye(3)),
}


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("build", [md.logm, md.sqrtm], ids=["logm", "sqrtm"])
@pytest.mark.parametrize("point", sorted(ROOT_POINTS))
def test_logm_and_sqrtm_of_a_general_matrix_in_jax_and_pytorch(point, build, backend):
    """Issue 21: JAX and PyTorch have no logm, and their square root through eig is wrong for
    a defective X (a Jordan block's aᵀlogm(X)a came out 9.70 against 13.33). Generated code
    takes log X = s log 2 I + log1p(X/2ˢ − I) by inverse scaling and squaring and X^(1/2) =
    2^(s/2)(X/2ˢ)^(1/2) by Denman–Beavers, scaled to ‖X/2ˢ‖₁ in (1/2, 1] either way: the value
    and the gradient (L_f by the block construction) equal SciPy's to 1e-12 at defective X
    and at X scaled by 10^±100, where evaluate answers too (its domain test is relative)."""
    mod = pytest.importorskip(backend)
    if backend == "jax":
        mod.config.update("jax_enable_x64", True)
    x, av = ROOT_POINTS[point], np.array([1.0, -2.0, 0.5])
    f = a.T @ build(X) @ a
    g = md.grad(f, X)
    want_f, want_g = f.evaluate(X=x, a=av), g.evaluate(X=x, a=av)
    got_f, got_g = _call(md.compile([f, g], backend=backend), backend, {"X": x, "a": av}, np.float64)
    got_f = float(got_f)
    assert abs(got_f - want_f) <= 1e-12 * abs(want_f)
    assert np.abs(got_g - want_g).max() <= 1e-12 * np.abs(want_g).max()
    if point == "jordan":  # and the gradient is the derivative: central differences
        np.testing.assert_allclose(want_g, _central_gradient(lambda m: f.evaluate(X=m, a=av), x),
                                   rtol=1e-6, atol=1e-8)


def test_a_traced_callable_s_sort_key_does_not_depend_on_where_it_lives():
    """The sort keys of nodes (ir._stable_key) read a traced callable's Function by its repr:
    that repr names what was traced, not object addresses, so two tracings of the same body
    key alike and printed factor orders do not vary from run to run."""
    from matdiff.ir import walk
    S = md.matrix("S", "n", "n", symmetric=True)
    one, two = (md.matrix_function(S, lambda u: u ** 3 + md.sin(u)) for _ in range(2))
    fns = [[n.fn for n in walk(e.node) if hasattr(n, "fn")] for e in (one, two)]
    assert fns[0] and fns[0][0] is not fns[1][0] and "0x" not in repr(fns[0][0])
    assert one.node.skey == two.node.skey
    other = md.matrix_function(S, lambda u: u ** 3 + md.cos(u))
    assert other.node.skey != one.node.skey
