"""Analytic functions of a general square matrix X and their Fréchet derivatives, computed
without diagonalising X (so defective matrices are fine), from the matrix exponential, the
principal logarithm and linear solves (docs/matrix-functions.md):

    expm1(X) = X φ₁(X), φ₁(X) = Σ Xᵏ/(k+1)! the (1, 2) block of expm([[X, I], [0, 0]])
    sin X = Im expm1(iX), cos X = I + Re expm1(iX), tan X = (cos X)⁻¹ sin X      (X real)
    sinh X = (expm1(X) − expm1(−X))/2, cosh X = (expm(X) + expm(−X))/2
    tanh X by double angles: T = tanh(Y) = (expm1(2Y) + 2I)⁻¹ expm1(2Y) at Y = X/2ˢ, ‖Y‖₁ ≤ 1,
    then s times T ← (I + T²)⁻¹ 2T (tanh 2Y = 2 tanh Y (I + tanh² Y)⁻¹); σ(X) = (I + tanh(X/2))/2
    log1p(X) = logm(I + X) (a series where X is small; in JAX and PyTorch, which have no logm,
    2ᵏ log1p(W) with W ← (I + W)^(1/2) − I from W = X until ‖W‖₁ ≤ 1/2, square roots by
    Denman–Beavers), softplus(X) = log1p(expm(X)),
    arctan X = Im log1p(iX)                                                       (X real)
    log X = s log 2 I + log1p(X/2ˢ − I), X^(1/2) = 2^(s/2) (X/2ˢ)^(1/2), ‖X/2ˢ‖₁ ≤ 1   (JAX, PyTorch)

and L_f(X, E) as the (1, 2) block of f([[X, sE], [0, X]]) divided by s (E scaled to X's
size; Higham, Functions of Matrices, §3.2). The generic functions below (``_mf_*`` other
than the primitives) are also written into generated code, with each backend's primitives
(``PRIMITIVES``) in front of them: one implementation for evaluate and all three backends.
"""
from __future__ import annotations

import inspect

import numpy as np

# the analytic functions of the function table that a general matrix takes; exp, log and sqrt
# keep their own methods (SciPy's expm, logm and sqrtm) in evaluate and generated NumPy code;
# generated JAX and PyTorch code takes log and sqrt here (``_mf_log``, ``_mf_sqrt``): neither
# has a logm, and their square roots (eig) need a diagonalisable X
ANALYTIC = ("exp", "log", "sqrt", "sin", "cos", "tan", "tanh", "sinh", "cosh", "sigmoid", "softplus",
            "log1p", "expm1", "arctan")


def _linalg():
    import scipy.linalg  # evaluate's caller checks that SciPy is there
    return scipy.linalg


# ----------------------------------------------------------------------- NumPy's primitives

def _mf_eye(x):
    return np.eye(x.shape[0], dtype=x.dtype)


def _mf_block(a, b, c, d):
    return np.block([[a, b], [c, d]])


def _mf_expm(z):  # in double precision (float32 in, float32 out: _mf_like)
    return _linalg().expm(z.astype(np.promote_types(z.dtype, np.float64)))


def _mf_solve(a, b):
    return np.linalg.solve(a, b)


def _mf_logm(z):
    return _linalg().logm(z.astype(np.promote_types(z.dtype, np.float64)))


def _mf_like(r, x):
    return np.real(r).astype(x.dtype)


def _mf_small(x):  # ‖X‖₁ ≤ 1/2 (NumPy only: a branch on a value)
    return float(np.abs(x).sum(axis=0).max(initial=0.0)) <= 0.5


def _mf_exponent(x):  # the integer s with ‖X/2ˢ‖₁ in (1/2, 1], of either sign (0 for 0 or inf)
    norm = float(np.abs(x).sum(axis=0).max(initial=0.0))
    return int(np.ceil(np.log2(norm))) if 0.0 < norm < float("inf") else 0


def _mf_halvings(x):  # the s with ‖X/2ˢ‖₁ ≤ 1 (at most 1100; 0 where ‖X‖₁ is not finite)
    norm, s = float(np.abs(x).sum(axis=0).max(initial=0.0)), 0
    while 1.0 < norm < float("inf") and s < 1100:
        norm, s = norm / 2, s + 1
    return s


def _mf_repeat(step, t, s):  # step applied s times
    for _ in range(s):
        t = step(t)
    return t


def _mf_until(step, state, done, most):  # step until done(state), at most ``most`` times
    for _ in range(most):
        if done(state):
            break
        state = step(state)
    return state


def _mf_norm1(x):
    return np.abs(x).sum(axis=0).max(initial=0.0)


def _mf_eps(x):
    return float(np.finfo(np.real(x).dtype).eps)


def _mf_unless(bad, x):  # NaN where ``bad``
    return x * np.nan if bad else x


# ----------------------------------------------------------------------- generic

def _mf_expm1(x):
    n = x.shape[0]
    eye = _mf_eye(x)
    zero = 0 * eye
    return x @ _mf_expm(_mf_block(x, eye, zero, zero))[:n, n:]


def _mf_tanh(x):
    # tanh X = (expm1(2X) + 2I)⁻¹ expm1(2X) overflows past λ ≈ 355 and, where X has eigenvalues
    # of both signs or large ones (|λ| ≳ 20), solves a system as ill conditioned as e^(2|λ|): so
    # at Y = X/2ˢ (‖Y‖₁ ≤ 1), then s double angles, each a solve with I + T², whose eigenvalues
    # 1 + tanh²(λ/2ᵏ) lie in [1, 2] for real λ
    eye = _mf_eye(x)
    s = _mf_halvings(x)
    e = _mf_expm1(2 * (x / 2.0 ** s))
    return _mf_repeat(lambda t: _mf_solve(eye + t @ t, 2 * t), _mf_solve(e + 2 * eye, e), s)


def _mf_log1p_series(x):  # ‖X‖₁ ≤ 1/2
    eye = _mf_eye(x)
    z = _mf_solve(2 * eye + x, x)  # log(I + X) = 2 artanh(Z), Z = X(2I + X)⁻¹, ‖Z‖₁ ≤ 1/3
    z2, term, total = z @ z, z, z
    for k in range(3, 37, 2):  # 3⁻ᵏ/k < 2⁻⁶⁰ from k = 37 on
        term = term @ z2
        total = total + term / k
    return 2 * total


def _mf_log1p(x):  # NumPy: SciPy's logm, the series where X is small
    if not _mf_small(x):
        return _mf_logm(_mf_eye(x) + x)
    return _mf_log1p_series(x)


def _mf_sqrtm(a):
    # the principal square root by Denman–Beavers, Y ← (Y + Z⁻¹)/2, Z ← (Z + Y⁻¹)/2 from
    # Y = A, Z = I (Y → A^(1/2), quadratically wherever no eigenvalue lies on the closed
    # negative real axis, defective A too), until a step moves Y by 16nε; NaN where the last
    # step moved it by more than √ε (no convergence: outside the principal branch)
    eye = _mf_eye(a)

    def step(s):
        y, z, _ = s
        y1 = (y + _mf_solve(z, eye)) / 2
        return y1, (z + _mf_solve(y, eye)) / 2, _mf_norm1(y1 - y) / _mf_norm1(y1)
    settled = 16 * a.shape[0] * _mf_eps(a)
    y, _, moved = _mf_until(step, (a, eye, 1 + 0 * _mf_norm1(a)), lambda s: s[2] <= settled, 64)
    return _mf_unless(moved > _mf_eps(a) ** 0.5, y)


def _mf_log1p_roots(x):
    # log(I + X) by inverse scaling and squaring (JAX, PyTorch): W ← (I + W)^(1/2) − I, each
    # step halving the logarithm, until ‖W‖₁ ≤ 1/2 (so ‖W‖₁ ≥ 1/4 or W = X: no cancellation),
    # then 2ᵏ log(I + W) by the series; each root scaled by 2ˢ (_mf_sqrt): Denman–Beavers from
    # an unscaled I + X of norm 1e100 would need some 170 steps
    eye = _mf_eye(x)
    w, k = _mf_until(lambda s: (_mf_sqrt(eye + s[0]) - eye, s[1] + 1), (x, 0 * _mf_norm1(x)),
                     lambda s: _mf_norm1(s[0]) <= 0.5, 64)
    return 2.0 ** k * _mf_log1p_series(w)


def _mf_log(x):
    # the principal log X without a logm (JAX, PyTorch): X scaled to ‖X/2ˢ‖₁ in (1/2, 1], up
    # or down, then log X = s log 2 I + log1p(X/2ˢ − I), log1p by square roots and a series
    s = _mf_exponent(x)
    eye = _mf_eye(x)
    return (s * 0.6931471805599453) * eye + _mf_log1p(x / 2.0 ** s - eye)


def _mf_sqrt(x):
    # the principal square root X^(1/2) = 2^(s/2) (X/2ˢ)^(1/2) by Denman–Beavers at ‖X/2ˢ‖₁ in
    # (1/2, 1], where it converges in a few steps
    s = _mf_exponent(x)
    return 2.0 ** (s / 2) * _mf_sqrtm(x / 2.0 ** s)


def _mf_value(name, x):
    eye = _mf_eye(x)
    if name == "log":
        return _mf_log(x)
    if name == "sqrt":
        return _mf_sqrt(x)
    if name == "expm1":
        return _mf_expm1(x)
    if name == "sinh":
        return (_mf_expm1(x) - _mf_expm1(-x)) / 2
    if name == "cosh":
        return (_mf_expm(x) + _mf_expm(-x)) / 2
    if name == "tanh":
        return _mf_tanh(x)
    if name == "sigmoid":
        return (eye + _mf_tanh(x / 2)) / 2
    if name in ("sin", "cos", "tan"):
        c = _mf_expm1(1j * x)
        if name == "sin":
            return c.imag
        if name == "cos":
            return eye + c.real
        return _mf_solve(eye + c.real, c.imag)
    if name == "log1p":
        return _mf_log1p(x)
    if name == "softplus":
        return _mf_log1p(_mf_expm(x))
    if name == "arctan":
        return _mf_log1p(1j * x).imag
    raise ValueError(f"no general matrix function {name!r}")


def _matfun(name, x, e=None):
    """f(X), or L_f(X, E), the (1, 2) block of f([[X, sE], [0, X]]) over s, for ``name``."""
    if e is None:
        return _mf_like(_mf_value(name, x), x)
    n = x.shape[0]
    nx, ne = ((x * x).sum()) ** 0.5, ((e * e).sum()) ** 0.5
    # E scaled to X's size: at least 1, but for log and sqrt, singular at 0, exactly X's, so
    # that the block is no farther from normal than X is (logm(10⁻¹⁰⁰X) has a derivative)
    big = nx if name in ("log", "sqrt") else (nx + 1 + abs(nx - 1)) / 2
    floor = 1e-30 * big
    s = big / ((ne + floor + abs(ne - floor)) / 2)
    return _mf_like(_mf_value(name, _mf_block(x, s * e, 0 * x, x))[:n, n:] / s, x)


GENERIC = (_mf_expm1, _mf_tanh, _mf_log1p_series, _mf_log1p, _mf_sqrtm, _mf_log1p_roots, _mf_log, _mf_sqrt,
           _mf_value, _matfun)
ROOTS = (_mf_sqrtm, _mf_log1p_roots, _mf_log, _mf_sqrt)  # JAX's and PyTorch's log1p, log and sqrt
# (NumPy's: SciPy's logm and sqrtm, so generated NumPy code leaves these out)

# NumPy's primitives as generated code defines them: the functions above, with SciPy imported
# at the module's top (generated code imports it where it uses it) rather than on first use
NUMPY_PRIMITIVES = (_mf_eye, _mf_block, _mf_expm, _mf_solve, _mf_logm, _mf_like, _mf_small, _mf_halvings,
                    _mf_repeat)

PRIMITIVES = {  # each backend's primitives, as generated code defines them
    "numpy": "\n\n" + "\n\n".join(inspect.getsource(f).replace("_linalg().", "scipy.linalg.")
                                  for f in NUMPY_PRIMITIVES),
    "jax": '''

def _mf_eye(x):
    return jnp.eye(x.shape[0], dtype=x.dtype)


def _mf_block(a, b, c, d):
    return jnp.block([[a, b], [c, d]])


def _mf_expm(z):
    return jax.scipy.linalg.expm(z)


def _mf_solve(a, b):
    return jnp.linalg.solve(a, b)


def _mf_like(r, x):
    return r.astype(x.dtype)


def _mf_exponent(x):  # under jit traced (a float holding an integer)
    norm = jax.lax.stop_gradient(jnp.abs(x).sum(axis=0).max(initial=0.0))
    ok = jnp.isfinite(norm) & (norm > 0)
    return jnp.where(ok, jnp.ceil(jnp.log2(jnp.where(ok, norm, 1.0))), 0)


def _mf_halvings(x):  # under jit a traced count, at most 64 (‖X‖₁ up to 2⁶⁴)
    norm = jax.lax.stop_gradient(jnp.abs(x).sum(axis=0).max(initial=0.0))
    return jnp.where(jnp.isfinite(norm), jnp.clip(jnp.ceil(jnp.log2(norm)), 0, 64), 0)


def _mf_repeat(step, t, s):  # under jit 64 steps, each a lax.cond: differentiable
    if isinstance(s, jax.core.Tracer):
        return jax.lax.fori_loop(0, 64, lambda k, t: jax.lax.cond(k < s, step, lambda t: t, t), t)
    for _ in range(int(s)):
        t = step(t)
    return t


def _mf_until(step, state, done, most):  # under jit ``most`` steps, each a lax.cond
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(state)):
        return jax.lax.fori_loop(0, most, lambda k, s: jax.lax.cond(done(s), lambda s: s, step, s), state)
    for _ in range(most):
        if bool(done(state)):
            break
        state = step(state)
    return state


def _mf_norm1(x):
    return jnp.abs(x).sum(axis=0).max(initial=0.0)


def _mf_eps(x):
    return jnp.finfo(x.real.dtype).eps


def _mf_unless(bad, x):
    return jnp.where(bad, jnp.nan, x)


def _mf_log1p(x):
    return _mf_log1p_roots(x)
''',
    "torch": '''

def _mf_eye(x):
    return torch.eye(x.shape[0], dtype=x.dtype, device=x.device)


def _mf_block(a, b, c, d):
    return torch.cat([torch.cat([a, b], 1), torch.cat([c, d], 1)], 0)


def _mf_expm(z):
    return torch.linalg.matrix_exp(z)


def _mf_solve(a, b):
    return torch.linalg.solve(a, b)


def _mf_like(r, x):
    return r.to(x.dtype)


def _mf_exponent(x):
    norm = x.detach().abs().sum(0).max() if x.numel() else None
    ok = norm is not None and 0.0 < float(norm) < float("inf")
    return int(torch.ceil(torch.log2(norm)).item()) if ok else 0


def _mf_halvings(x):
    norm, s = float(x.abs().sum(0).max()) if x.numel() else 0.0, 0
    while 1.0 < norm < float("inf") and s < 1100:
        norm, s = norm / 2, s + 1
    return s


def _mf_repeat(step, t, s):
    for _ in range(s):
        t = step(t)
    return t


def _mf_until(step, state, done, most):
    for _ in range(most):
        if bool(done(state)):
            break
        state = step(state)
    return state


def _mf_norm1(x):
    return x.abs().sum(0).max()


def _mf_eps(x):
    return torch.finfo(x.real.dtype).eps


def _mf_unless(bad, x):
    return x * float("nan") if bool(bad) else x


def _mf_log1p(x):
    return _mf_log1p_roots(x)
''',
}


def source(backend: str) -> str:
    """The helper ``_matfun(name, x, e=None)`` of generated code for ``backend``."""
    functions = [f for f in GENERIC if (f not in ROOTS if backend == "numpy" else f is not _mf_log1p)]
    body = "\n\n".join(inspect.getsource(f).rstrip() + "\n" for f in functions)
    return PRIMITIVES[backend] + "\n\n" + body.rstrip()
