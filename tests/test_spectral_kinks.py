"""Issue 21: relu, |·|, step and sign of a symmetric S in generated code.  Where an eigenvalue
sits at the kink (0), f(S) has no derivative: ``evaluate`` refuses, and so does generated code
with checks (md.compile's default) — NumPy and PyTorch raise evaluate's EvaluationError, JAX
raises outside jit and returns NaN under it.  10⁻³ away every backend gives evaluate's value,
checked by central differences.  And generated arctan code at |λ| ~ 1e200 (its Taylor unit
√(1 + λ²) as hypot) against mpmath."""
import os
import warnings

import numpy as np
import pytest

import matdiff as md

from .test_spectral_codegen_ties import _module
from .test_spectral_numerics import _matrix

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

S = md.matrix("S", "n", "n", symmetric=True)
a = md.vector("a", "n")
AV = np.array([0.3, -1.2, 0.8])
BACKENDS = ["numpy", "jax", "torch"]
KINKED = {"relu": lambda t: np.maximum(t, 0.0), "abs": np.abs,
          "step": lambda t: (t > 0).astype(float), "sign": np.sign}
ORDERS = ["gradient", "hessian"]
REFUSED = "not differentiable here.*kink"




def _direction(seed=1):
    e = np.random.default_rng(seed).standard_normal((3, 3))
    return (e + e.T) / 2


def _funm(s, f):
    lam, u = np.linalg.eigh(s)
    return (u * f(lam)) @ u.T


def _derivative(name, order):
    e = a.T @ md.matrix_function(S, name) @ a
    return md.grad(e, S) if order == "gradient" else md.hessian(e, S)


def _compiled(d, backend, s, jit=False, strict=True):
    """The compiled value; ``strict``: with no RuntimeWarning (1/0, 0·∞, overflow)."""
    module = _module(backend)
    f = md.compile(d, backend=backend)
    if jit:
        f = module.jit(f.unchecked)
    with warnings.catch_warnings():
        warnings.simplefilter("error" if strict else "ignore", RuntimeWarning)
        return np.asarray(f(S=s, a=AV), dtype=float)


def _at_kink():
    s = _matrix([0.0, 0.5, 2.0], seed=5)
    return s, np.linalg.eigvalsh(s)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name", list(KINKED))
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_eigenvalue_at_the_kink_is_refused_as_evaluate_refuses(backend, name, order):
    d = _derivative(name, order)
    s, lam = _at_kink()
    assert np.abs(lam).min() <= 1e-15  # an eigenvalue at the kink, to rounding
    with pytest.raises(md.EvaluationError, match=REFUSED):
        d.evaluate(S=s, a=AV)
    with pytest.raises(md.EvaluationError, match=REFUSED):
        _compiled(d, backend, s)
    if backend == "jax":  # under jit no value can raise: NaN, as the other checks give
        assert np.all(np.isnan(_compiled(d, backend, s, jit=True)))


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name", list(KINKED))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("near", [1e-3, -1e-3])
def test_an_eigenvalue_beside_the_kink_gives_the_derivative(backend, name, order, near):
    d = _derivative(name, order)
    s, e = _matrix([near, 0.5, 2.0], seed=5), _direction()
    want = d.evaluate(S=s, a=AV)
    h = 1e-6
    if order == "gradient":  # ⟨∇, E⟩ against central differences of aᵀf(S)a
        value = lambda m: AV @ _funm(m, KINKED[name]) @ AV  # noqa: E731
        fd = (value(s + h * e) - value(s - h * e)) / (2 * h)
        np.testing.assert_allclose(np.sum(want * e), fd, rtol=1e-6, atol=1e-8)
    else:  # Σ_kl H_ijkl E_kl against central differences of the gradient
        g = _derivative(name, "gradient")
        fd = (g.evaluate(S=s + h * e, a=AV) - g.evaluate(S=s - h * e, a=AV)) / (2 * h)
        np.testing.assert_allclose(np.einsum("ijkl,kl->ij", want, e), fd, rtol=1e-6, atol=1e-7)
    got = _compiled(d, backend, s)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    if backend == "jax":
        np.testing.assert_allclose(_compiled(d, backend, s, jit=True), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(KINKED))
def test_without_checks_the_code_has_no_kink_test(name):
    """checks=False keeps the code as it was: no test of the eigenvalues, a value at the kink."""
    d = _derivative(name, "gradient")
    assert "_finite_value(" in md.codegen(d) and "_finite_value(" not in md.codegen(d, checks=False)
    s, _ = _at_kink()
    assert np.all(np.isfinite(md.compile(d, checks=False)(S=s, a=AV)))


def test_the_printed_module_refuses_on_its_own():
    """md.codegen's checked module, exec'd without md.compile, refuses too (a FloatingPointError
    naming the kink: md.compile turns it into evaluate's EvaluationError)."""
    namespace: dict = {}
    exec(md.codegen(_derivative("relu", "gradient")), namespace)  # our own generated code
    s, _ = _at_kink()
    with pytest.raises((FloatingPointError, md.EvaluationError), match="relu has a kink at 0"):
        namespace["f"](s, AV)


# --------------------------------------------------------------------------- traced callables with a kink

TRACED = {  # name: (callable, its NumPy values, the eigenvalue at its kink, refused there)
    "relu(u - 1)·u": (lambda u: md.relu(u - 1.0) * u, lambda t: np.maximum(t - 1.0, 0.0) * t, 1.0, True),
    "relu(u)·u": (lambda u: md.relu(u) * u, lambda t: np.maximum(t, 0.0) * t, 0.0, False),  # C¹ at 0
    "|u|·u + sin u": (lambda u: md.abs(u) * u + md.sin(u), lambda t: np.abs(t) * t + np.sin(t), 0.0, False),
    "step(u)·exp(u)": (lambda u: md.step(u) * md.exp(u), lambda t: (t > 0) * np.exp(t), 0.0, True),
}


def _traced_gradient(key):
    return md.grad(a.T @ md.matrix_function(S, TRACED[key][0]) @ a, S)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("key", list(TRACED))
@pytest.mark.parametrize("offset", [0.0, 1e-3, -1e-3])
def test_traced_callables_with_a_kink(backend, key, offset):
    """Gradients of a callable using a kink: generated by the chain rule of divided differences
    (each kink's one-sided slope on one side, the quotient across), refused with evaluate where an
    eigenvalue puts the kink's argument at 0 and f or f′ jump there; given (C¹ at the kink, or
    10⁻³ away) with evaluate's value, checked by central differences."""
    _, numpy_f, kink, refused = TRACED[key]
    g = _traced_gradient(key)
    s = _matrix([0.0, 0.5, 2.0], seed=5)
    s = s + (kink + offset - np.linalg.eigvalsh(s)[0]) * np.eye(3)  # the eigenvalue kink + offset
    if offset == 0.0 and refused:
        with pytest.raises(md.EvaluationError, match=REFUSED):
            g.evaluate(S=s, a=AV)
        with pytest.raises(md.EvaluationError, match=REFUSED):
            _compiled(g, backend, s)
        if backend == "jax":
            assert np.all(np.isnan(_compiled(g, backend, s, jit=True)))
        return
    want, e, h = g.evaluate(S=s, a=AV), _direction(), 1e-6
    value = lambda m: AV @ _funm(m, numpy_f) @ AV  # noqa: E731
    fd = (value(s + h * e) - value(s - h * e)) / (2 * h)
    np.testing.assert_allclose(np.sum(want * e), fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(_compiled(g, backend, s), want, rtol=1e-9, atol=1e-11)
    if backend == "jax":
        np.testing.assert_allclose(_compiled(g, backend, s, jit=True), want, rtol=1e-9, atol=1e-11)


# --------------------------------------------------------------------------- arctan at |λ| ~ 1e200

def _arctan_dd3(x, y, z, mp):
    """arctan[x, y, z] in mpmath, confluent points by their derivatives."""
    f1 = lambda t: 1 / (1 + t * t)  # noqa: E731

    def dd(p, q):
        return f1(p) if p == q else (mp.atan(p) - mp.atan(q)) / (p - q)
    if x == y == z:
        return -x / (1 + x * x) ** 2
    if x == z:
        x, y = y, x
    if x == y:
        return (f1(x) - dd(x, z)) / (x - z)
    return (dd(x, y) - dd(y, z)) / (x - z)


@pytest.mark.parametrize("backend", BACKENDS)
def test_arctan_hessian_at_huge_eigenvalues_against_mpmath(backend):
    """∇²[aᵀarctan(S)a][V] at S = diag(0.5, −3e199, 1e200): the Taylor series' unit √(1 + λ²)
    was computed directly, inf past 1e154, so every triple about 1e200 took the series and the
    Hessian lost its entries of order 1e-201 (and its symmetry); hypot keeps it finite."""
    mp = pytest.importorskip("mpmath")
    s, v = np.diag([0.5, -3e199, 1e200]), _direction(seed=2)
    H = md.hessian(a.T @ md.matrix_function(S, "arctan") @ a, S)
    lam = np.diag(s)
    mp.mp.dps = 50
    L = [mp.mpf(float(x)) for x in lam]
    W = [[mp.mpf(float(AV[i])) * mp.mpf(float(AV[j])) for j in range(3)] for i in range(3)]
    Vm = [[mp.mpf(float(v[i, j])) for j in range(3)] for i in range(3)]
    want = np.array([[float(sum(_arctan_dd3(L[i], L[j], L[m], mp) * (Vm[i][m] * W[m][j] + W[i][m] * Vm[m][j])
                                for m in range(3))) for j in range(3)] for i in range(3)])
    assert np.abs(want[0, 1]) > 1e-202  # entries far below 1, far above the underflow
    # (1 + λᵢλⱼ overflows in arctan[λᵢ, λⱼ] where it is below 1e-308, as in evaluate: 0)
    for got in (H.evaluate(S=s, a=AV), _compiled(H, backend, s, strict=False)):
        got = np.einsum("ijkl,kl->ij", got, v)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=0.0)
