"""Issue 21: Hessians of aᵀf(S)a for Python callables that use relu, |·|, step or sign, in
``evaluate`` and generated NumPy, JAX and PyTorch code.  Away from the kinks f is smooth and its
second divided differences come from the chain rule of divided differences, each kink by its
affine pieces (``evaluate._kink_compose``, ``spectral_code._kink_code``): checked against the
second-order Daleckii–Krein formula in extended precision (mpmath, on the piecewise function
itself) at spectra on both sides of a kink, repeated on one side, and beside it.  Where an
eigenvalue puts a kink's argument at 0 and f, f′ or f″ jumps there, evaluate and checked
generated code refuse alike; where f is C² there (relu(u − 1)³, |u|·u²) both answer."""
import os
import warnings
from functools import lru_cache

import numpy as np
import pytest

import matdiff as md

from .test_spectral_codegen_ties import _module
from .test_spectral_numerics import (_matrix, _mp_dd2_separated, _mp_dd3_separated, _reference_more,
                                     _symmetric_direction)

mp = pytest.importorskip("mpmath")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

S = md.matrix("S", "n", "n", symmetric=True)
V = md.matrix("V", "n", "n", symmetric=True)
a = md.vector("a", "n")
AV = np.array([0.3, -1.2, 0.8])
BACKENDS = ("numpy", "jax", "torch")
REFUSED = "not differentiable here.*kink"

KINKED = {  # name: (callable, the same in mpmath (its values at 1500 digits kept), its kink)
    "relu(u - 1)³": (lambda u: md.relu(u - 1.0) ** 3, lambda t: max(t - 1, 0) ** 3, 1.0),
    "|u|·u²": (lambda u: md.abs(u) * u ** 2, lambda t: abs(t) * t ** 2, 0.0),
    "u·sign(u - 2) + u²": (lambda u: u * md.sign(u - 2.0) + u ** 2, lambda t: t * mp.sign(t - 2) + t ** 2, 2.0),
    "step(u)·eᵘ": (lambda u: md.step(u) * md.exp(u), lru_cache(None)(lambda t: (1 if t > 0 else 0) * mp.exp(t)), 0.0),
    # the table's own, applied to S (md.matrix_function(S, "relu")): routed as the callables are
    # (their Hessians went through the eigenvectors: 2e-7 instead of 0 at eigenvalues 1e-9 apart)
    "relu": ("relu", lambda t: max(t, 0), 0.0),
    "|·|": ("abs", abs, 0.0),
    "sign": ("sign", mp.sign, 0.0),
    "step": ("step", lambda t: mp.mpf(1 if t > 0 else 0), 0.0),
}
SPECTRA = {  # about the kink k
    "both sides": [-0.7, 0.4, 1.9], "repeated above": [-0.7, 0.9, 0.9],
    "repeated below": [-1.3, -1.3, 0.6], "beside": [-1e-3, 1e-3, 1.2],
    "close above": [-0.7, 0.5, 0.5 + 1e-9],
}


@lru_cache(maxsize=None)
def _derivatives(name):
    """(∇, ∇²[V], ∇²) of aᵀf(S)a."""
    e = a.T @ md.matrix_function(S, KINKED[name][0]) @ a
    return md.grad(e, S), md.hvp(e, S, V), md.hessian(e, S)


_JITTED: dict = {}


@lru_cache(maxsize=None)
def _compiled(name, part, backend):
    _module(backend)
    return md.compile(_derivatives(name)[part], backend=backend)


def _run(name, part, backend, s, v=None, jit=False):
    """The compiled value, which must come without a RuntimeWarning (1/0, 0·∞, overflow)."""
    f = _compiled(name, part, backend)
    if jit:  # (jitted once: seconds to compile)
        import jax
        f = _JITTED.setdefault((name, part), jax.jit(f.unchecked))
    values = {"S": s, "a": AV} if part != 1 else {"S": s, "a": AV, "V": v}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = np.asarray(f(**values), dtype=float)
    return np.einsum("ijkl,kl->ij", out, v) if part == 2 else out


def _direction(seed=11):
    return _symmetric_direction(3, seed)


def _check_all(name, s, v, tol=1e-10):
    """∇ and ∇²[V] (HVP and full Hessian) in evaluate and generated code — NumPy: all three,
    PyTorch: the second derivatives, JAX: the HVP — against the extended-precision reference
    on NumPy's eigenvectors (JAX and PyTorch decompose on their own: within ‖S‖ε/gap)."""
    want_g, want_h = _reference_more(KINKED[name][1], s, AV, v)
    g, h, H = _derivatives(name)
    scale_g, scale_h = np.abs(want_g).max(), np.abs(want_h).max()
    assert np.abs(g.evaluate(S=s, a=AV) - want_g).max() <= 1e-12 * scale_g, "gradient"
    assert np.abs(h.evaluate(S=s, a=AV, V=v) - want_h).max() <= tol * scale_h, "hvp"
    full = np.einsum("ijkl,kl->ij", H.evaluate(S=s, a=AV), v)
    assert np.abs(full - want_h).max() <= tol * scale_h, "hessian"
    lam = np.linalg.eigvalsh(s)
    gaps = np.diff(lam)[np.diff(lam) > 1e-8 * np.abs(lam).max()]
    cond = np.abs(lam).max() / gaps.min() if gaps.size else 1.0
    assert np.abs(_run(name, 0, "numpy", s) - want_g).max() <= tol * scale_g, "gradient"
    for backend in BACKENDS:  # (JAX: the HVP alone, each new operation compiles once)
        bound = tol if backend == "numpy" else max(tol, 1e-15 * cond)
        assert np.abs(_run(name, 1, backend, s, v) - want_h).max() <= bound * scale_h, (backend, "hvp")
        if backend != "jax":
            assert np.abs(_run(name, 2, backend, s, v) - want_h).max() <= bound * scale_h, (backend, "hessian")


CASES = [(name, spectrum) for name in KINKED for spectrum in SPECTRA]


@pytest.mark.parametrize("name,spectrum", CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_hessians_of_kinked_callables_away_from_the_kink(name, spectrum):
    """Eigenvalues on both sides of the kink, repeated on one side, 10⁻⁹ apart on one side,
    and 10⁻³ beside it: the gradient, Hessian-vector product and full Hessian of aᵀf(S)a in evaluate and generated
    NumPy, JAX and PyTorch code, against the Daleckii–Krein formulas in extended precision."""
    kink = KINKED[name][2]
    _check_all(name, _matrix(np.array(SPECTRA[spectrum]) + kink, seed=5), _direction())


@pytest.mark.parametrize("name", ["relu(u - 1)³", "|u|·u²"])
@pytest.mark.parametrize("where", ["at", "at, repeated", "below, at and above"])
def test_c2_callables_are_answered_at_their_kink(name, where):
    """relu(u − 1)³ and |u|·u² are C² at the kink (f‴ jumps): their Hessians exist with an
    eigenvalue there — exactly there (a diagonal S: eigh's values are exact), repeated, and
    with the kink's argument below, at and above 0 at once (Lagrange's form) — and every
    backend gives the reference's value."""
    k = KINKED[name][2]
    s = {"at": _matrix([k, k + 0.5, k + 2.0], seed=5), "at, repeated": np.diag([k, k, k + 3.0]),
         "below, at and above": np.diag([k - 1.0, k, k + 1.5])}[where]
    _check_all(name, s, _direction())


def _at_kink(kink):
    s = _matrix([0.0, 0.5, 2.0], seed=5)
    return s + (kink - np.linalg.eigvalsh(s)[0]) * np.eye(3)


@pytest.mark.parametrize("name", ["u·sign(u - 2) + u²", "step(u)·eᵘ"])
def test_hessians_are_refused_at_a_jump(name):
    """f jumps where an eigenvalue puts sign's or step's argument at 0: evaluate refuses its
    Hessian, and so does checked generated code — NumPy and PyTorch raise evaluate's
    EvaluationError, JAX raises outside jit and gives NaN under it."""
    s, v = _at_kink(KINKED[name][2]), _direction()
    _, h, H = _derivatives(name)
    with pytest.raises(md.EvaluationError, match=REFUSED):
        h.evaluate(S=s, a=AV, V=v)
    with pytest.raises(md.EvaluationError, match=REFUSED):
        H.evaluate(S=s, a=AV)
    for backend in BACKENDS:
        with pytest.raises(md.EvaluationError, match=REFUSED):
            _run(name, 1, backend, s, v)
    with pytest.raises(md.EvaluationError, match=REFUSED):
        _run(name, 2, "numpy", s, v)
    if name.startswith("u·sign"):  # (one jit: seconds to compile) — and away from the kink, at
        assert np.all(np.isnan(_run(name, 1, "jax", s, v, jit=True)))  # a repeated eigenvalue
        s = _matrix(np.array(SPECTRA["repeated above"]) + KINKED[name][2], seed=5)  # (lax.scan's pairs)
        np.testing.assert_allclose(_run(name, 1, "jax", s, v, jit=True), h.evaluate(S=s, a=AV, V=v),
                                   rtol=1e-10, atol=1e-12)


def test_a_c1_callable_has_a_gradient_at_its_kink_and_no_hessian():
    """relu(u)·u is C¹ at 0: with a zero eigenvalue its gradient is given (and right: central
    differences), its Hessian refused ("twice") — by evaluate and by checked generated code
    alike (f″ jumps: the one-sided differences of f′ at λ ± 10⁻⁷, as evaluate takes them)."""
    e = a.T @ md.matrix_function(S, lambda u: md.relu(u) * u) @ a
    g, h = md.grad(e, S), md.hvp(e, S, V)
    s, v, step = _at_kink(0.0), _direction(), 1e-6

    def value(m):
        lam, u = np.linalg.eigh(m)
        return AV @ ((u * (np.maximum(lam, 0.0) * lam)) @ u.T) @ AV
    fd = (value(s + step * v) - value(s - step * v)) / (2 * step)
    np.testing.assert_allclose(np.sum(g.evaluate(S=s, a=AV) * v), fd, rtol=1e-5)  # f″ jumps: O(h)
    with pytest.raises(md.EvaluationError, match="not differentiable here twice.*kink"):
        h.evaluate(S=s, a=AV, V=v)
    for backend in ("numpy", "torch"):
        _module(backend)
        got = np.asarray(md.compile(g, backend=backend)(S=s, a=AV), dtype=float)
        np.testing.assert_allclose(got, g.evaluate(S=s, a=AV), rtol=1e-10, atol=1e-12)
        with pytest.raises(md.EvaluationError, match="not differentiable here twice.*kink"):
            md.compile(h, backend=backend)(S=s, a=AV, V=v)
    s = s + 1e-3 * np.eye(3)  # 10⁻³ away: the Hessian, right to central differences of ∇
    fd = (g.evaluate(S=s + step * v, a=AV) - g.evaluate(S=s - step * v, a=AV)) / (2 * step)
    np.testing.assert_allclose(h.evaluate(S=s, a=AV, V=v), fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(md.compile(h)(S=s, a=AV, V=v), h.evaluate(S=s, a=AV, V=v), rtol=1e-10, atol=1e-12)


POINTS = {  # diagonal S (exact eigenvalues), about the kink k: triples across it, 1e-9 beside it
    "beside": [-0.5, 1e-9, 2.0], "both beside": [-1e-9, 1e-9, 1.0], "repeated": [-1.0, -1.0, 0.5],
    "close pair across": [-0.3, 0.3, 0.3000001],
}


_NODES: dict = {}  # (name, backend, "F" or "T") → the compiled divided differences


@pytest.mark.parametrize("name", list(KINKED))
@pytest.mark.parametrize("points", list(POINTS))
def test_divided_differences_of_kinked_callables(name, points):
    """F = f[λᵢ, λⱼ] and T = f[λᵢ, λⱼ, λₖ] at every pair and triple — across the kink, 10⁻⁹
    beside it, repeated on one side — against 1500-digit arithmetic on the piecewise function,
    in evaluate and in generated NumPy and PyTorch code: each entry to 1e-12 of itself or of
    f's scale (T = Δ(q)/((p − q)(r − q)) across a kink has no cancellation)."""
    from matdiff.evaluate import _divided_differences, _divided_differences3
    from matdiff.expr import Expr
    from matdiff.ir import DivDiff, DivDiff3, Eigh
    from matdiff.library import _elementwise_fn
    f, f_mp, kink = KINKED[name]
    fn = _elementwise_fn(f)
    lam = np.array(POINTS[points]) + kink
    r = range(len(lam))
    want = {"F": np.array([[float(_mp_dd2_separated(f_mp, lam[i], lam[j])) for j in r] for i in r]),
            "T": np.array([[[float(_mp_dd3_separated(f_mp, lam[i], lam[j], lam[m])) for m in r] for j in r]
                           for i in r])}
    scale = {part: max(1.0, np.abs(w).max()) for part, w in want.items()}
    got = {"F": _divided_differences(fn, lam, {}), "T": _divided_differences3(fn, lam, {})}
    for part in ("F", "T"):
        assert np.all(np.abs(got[part] - want[part]) <= 1e-12 * np.maximum(np.abs(want[part]), scale[part])), part
    order = np.argsort(lam)  # eigh sorts the eigenvalues
    for backend in ("numpy", "torch"):
        _module(backend)
        for part, node in (("F", DivDiff), ("T", DivDiff3)):
            if (name, backend, part) not in _NODES:
                _NODES[name, backend, part] = md.compile(Expr(node(fn, Eigh("values", S.node))), backend=backend)
            code = np.asarray(_NODES[name, backend, part](S=np.diag(lam)), dtype=float)
            w = want[part][np.ix_(*[order] * (2 if part == "F" else 3))]
            assert np.all(np.abs(code - w) <= 1e-12 * np.maximum(np.abs(w), scale[part])), (backend, part)
