"""Generated code against hand-written closed forms and autodiff, on the CPU (or GPU).

For each problem of issue 5 (and the cross-entropies of issue 20), its gradient and its
Hessian, at three sizes each: matdiff's generated NumPy, JAX and PyTorch code against the
hand-written closed form in the same backend (JAX's under jax.jit, like matdiff's), in
float64 and float32; jax.grad / jax.hessian under jax.jit; torch.func.grad /
torch.func.hessian.  Every result is checked against the closed form (to 1e-8, float32 to
1e-3) before it is timed.  Derivation and code generation, and JAX's jit compilation, are
reported apart from evaluation.  A second table gives matdiff / closed form per backend and
dtype, and where the compiled call checks its arguments (a matrix declared symmetric, a scalar
declared positive, eigenvalue ties) also "unchecked" columns: the generated function without
those checks (``fn.unchecked`` of ``md.compile(..., checks=False)``), which the closed forms
do not make either.

With --spectral, issue 21's rows instead: gradients, Hessians (where n⁴ entries fit) and
Hessian-vector products of spectral functions of a symmetric S at n = 50, 200 and 500,
matdiff's NumPy and JAX code against jax.grad / jax.hessian / jax.jvp of jax.grad through
jnp.linalg.eigh (a few minutes; --only and --what select rows).

Run: python benchmarks/autodiff.py [--quick] [--only NAME] [--what gradient|Hessian|HVP]
     [--rounds R] [--runs N] [--clock cpu] [--device cuda] [--spectral]
With --device cuda the NumPy columns are left out and JAX and PyTorch run on the GPU.
"""
from __future__ import annotations

import argparse
import inspect
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import matdiff as md  # noqa: E402


# ----------------------------------------------------------------------------- helpers
# The closed forms and the values are written once for NumPy, JAX and PyTorch: ``lib`` is
# the array module, and the few calls that differ go through these helpers.

def _sigmoid(lib, z):
    if lib.__name__ == "torch":
        return z.sigmoid()
    if lib.__name__.startswith("jax"):
        import jax

        return jax.nn.sigmoid(z)  # what a JAX user writes
    return 1.0 / (1.0 + lib.exp(-z))


def _softplus(lib, z):
    return lib.nn.functional.softplus(z) if lib.__name__ == "torch" else lib.logaddexp(z, 0.0 * z)


def _zeros(lib, shape, like):
    if lib.__name__ == "torch":
        return lib.zeros(shape, dtype=like.dtype, device=like.device)
    return lib.zeros(shape, dtype=like.dtype)  # float32 stays float32


def _put(lib, H, index, values, add=False):
    """H[index] = values (or += values), in place in NumPy and PyTorch, a new array in JAX."""
    if lib.__name__.startswith("jax"):
        return H.at[index].add(values) if add else H.at[index].set(values)
    if add:
        H[index] += values
    else:
        H[index] = values
    return H


def _permute(lib, a, axes):
    return lib.permute(a, axes) if lib.__name__ == "torch" else a.transpose(axes)


def _arange(lib, n, like):
    return lib.arange(n, device=like.device) if lib.__name__ == "torch" else lib.arange(n)


# ----------------------------------------------------------------------------- problems

@dataclass
class Problem:
    name: str
    variable: str
    build: Callable  # () -> scalar expression
    data: Callable  # (rng, size) -> {name: ndarray}
    value: Callable  # (lib, values) -> scalar, for autodiff
    grad: Callable  # (lib, values) -> closed-form gradient
    hessian: Callable | None  # (lib, values) -> closed-form Hessian; None: gradients only
    grad_sizes: tuple
    hessian_sizes: tuple  # smaller where the Hessian is a 4-index tensor
    quick_sizes: tuple
    facts: Callable | None = None  # () -> facts the derivatives are taken with (md.fact)
    with_value: bool = False  # the value and the gradient compiled together: grad returns both


def _quadratic():
    x, A = md.vector("x", "n"), md.matrix("A", "n", "n")
    return Problem(
        "xᵀAx", "x", lambda: x.T @ A @ x,
        lambda rng, n: {"x": rng.normal(size=n), "A": rng.normal(size=(n, n))},
        lambda lib, v: v["x"] @ v["A"] @ v["x"],
        lambda lib, v: (v["A"] + v["A"].T) @ v["x"],
        lambda lib, v: v["A"] + v["A"].T,
        (100, 400, 800), (100, 400, 800), (50,))


def _least_squares():
    X, w, y = md.matrix("X", "n", "k"), md.vector("w", "k"), md.vector("y", "n")
    return Problem(
        "least squares", "w", lambda: md.norm(X @ w - y) ** 2,
        lambda rng, s: {"X": rng.normal(size=s), "w": rng.normal(size=s[1]), "y": rng.normal(size=s[0])},
        lambda lib, v: lib.sum((v["X"] @ v["w"] - v["y"]) ** 2),
        lambda lib, v: 2 * v["X"].T @ (v["X"] @ v["w"] - v["y"]),
        lambda lib, v: 2 * v["X"].T @ v["X"],
        ((500, 50), (2000, 200), (8000, 400)), ((500, 50), (2000, 200), (8000, 400)), ((200, 20),))


def _logistic(typed_with_exp: bool = False):
    """The logistic loss; ``typed_with_exp`` writes it log(1 + exp(−y ⊙ Xw)), which the
    simplifier rewrites to softplus, so it compiles to the same code (issue 12)."""
    X, w, y = md.matrix("X", "n", "k"), md.vector("w", "k"), md.vector("y", "n")
    build = (lambda: md.sum(md.log(1 + md.exp(-y * (X @ w))))) if typed_with_exp else \
        (lambda: md.sum(md.softplus(-y * (X @ w))))

    def hessian(lib, v):
        z = v["y"] * (v["X"] @ v["w"])
        d = _sigmoid(lib, z) * _sigmoid(lib, -z)
        return v["X"].T @ (d[:, None] * v["X"])

    return Problem(
        "logistic regression" + (", typed log(1 + exp)" if typed_with_exp else ""), "w", build,
        lambda rng, s: {"X": rng.normal(size=s) / np.sqrt(s[1]), "w": rng.normal(size=s[1]),
                        "y": np.sign(rng.normal(size=s[0]))},
        lambda lib, v: lib.sum(_softplus(lib, -v["y"] * (v["X"] @ v["w"]))),
        lambda lib, v: -v["X"].T @ (v["y"] * _sigmoid(lib, -v["y"] * (v["X"] @ v["w"]))),
        hessian,
        ((500, 50), (2000, 200), (8000, 400)), ((500, 50), (2000, 200), (8000, 400)), ((200, 20),))


def _factorisation():
    T, U, V = md.matrix("T", "m", "n"), md.matrix("U", "m", "r"), md.matrix("V", "n", "r")

    def hessian(lib, v):  # 2 δ_ik (VᵀV)_jl
        m, r = v["U"].shape
        H = _zeros(lib, (m, r, m, r), v["U"])
        i = _arange(lib, m, v["U"])
        return _put(lib, H, (i, slice(None), i, slice(None)), 2 * (v["V"].T @ v["V"]))

    return Problem(
        "factorisation ‖T − UVᵀ‖²", "U", lambda: md.norm(T - U @ V.T) ** 2,
        lambda rng, s: {"T": rng.normal(size=s[:2]), "U": rng.normal(size=(s[0], s[2])),
                        "V": rng.normal(size=(s[1], s[2]))},
        lambda lib, v: lib.sum((v["T"] - v["U"] @ v["V"].T) ** 2),
        lambda lib, v: 2 * (v["U"] @ v["V"].T - v["T"]) @ v["V"],
        hessian,
        ((200, 150, 10), (1000, 800, 20), (3000, 2000, 50)),
        ((50, 40, 4), (200, 150, 10), (400, 300, 10)), ((40, 30, 3),))


def _network():
    X, W1, W2, Y = (md.matrix("X", "n", "d"), md.matrix("W1", "d", "h"), md.matrix("W2", "h", "c"),
                    md.matrix("Y", "n", "c"))

    def parts(lib, v):
        S = _sigmoid(lib, v["X"] @ v["W1"])
        R = 2 * (S @ v["W2"] - v["Y"]) @ v["W2"].T
        return S, S * (1 - S), R

    def grad(lib, v):
        S, P, R = parts(lib, v)
        return v["X"].T @ (R * P)

    def hessian(lib, v):  # 2 Σ_p X_pi P_pj (W2W2ᵀ)_jl P_pl X_pk + δ_jl Σ_p X_pi Q_pj X_pk
        S, P, R = parts(lib, v)
        X = v["X"]
        (n, d), h = X.shape, P.shape[1]
        Z = (X[:, :, None] * P[:, None, :]).reshape(n, d * h)
        H = 2 * (Z.T @ Z).reshape(d, h, d, h) * (v["W2"] @ v["W2"].T)[None, :, None, :]
        Q = R * P * (1 - 2 * S)
        H2 = ((X[:, :, None] * Q[:, None, :]).reshape(n, d * h).T @ X).reshape(d, h, d)
        j = _arange(lib, h, X)
        return _put(lib, H, (slice(None), j, slice(None), j), _permute(lib, H2, (1, 0, 2)), add=True)

    return Problem(
        "network ‖σ(XW₁)W₂ − Y‖²", "W1", lambda: md.norm(md.sigmoid(X @ W1) @ W2 - Y) ** 2,
        lambda rng, s: {"X": rng.normal(size=s[:2]), "W1": rng.normal(size=s[1:3]) / np.sqrt(s[1]),
                        "W2": rng.normal(size=s[2:]), "Y": rng.normal(size=(s[0], s[3]))},
        lambda lib, v: lib.sum((_sigmoid(lib, v["X"] @ v["W1"]) @ v["W2"] - v["Y"]) ** 2),
        grad, hessian,
        ((500, 20, 10, 3), (2000, 50, 30, 5), (8000, 100, 50, 10)),
        ((200, 10, 5, 3), (1000, 20, 10, 5), (2000, 40, 20, 5)), ((100, 5, 4, 2),))


def _square(rng, n):
    return rng.normal(size=(n, n)) / np.sqrt(n) + 2 * np.eye(n)  # well conditioned


def _logdet():
    X = md.matrix("X", "n", "n")

    def hessian(lib, v):  # −(X⁻¹)_li (X⁻¹)_jk
        Xi = lib.linalg.inv(v["X"])
        return -(Xi.T[:, None, None, :] * Xi[None, :, :, None])

    return Problem(
        "log det X", "X", lambda: md.logdet(X),
        lambda rng, n: {"X": _square(rng, n)},
        lambda lib, v: lib.linalg.slogdet(v["X"])[1],
        lambda lib, v: lib.linalg.inv(v["X"]).T,
        hessian,
        (100, 400, 1000), (10, 30, 60), (20,))


def _logdet_and_gradient():
    """log det X and X⁻ᵀ from one function: generated code shares one LU between them, as the
    hand-written form does (lu_factor; the log of U's diagonal; X⁻ᵀ by solves)."""
    X = md.matrix("X", "n", "n")

    def both(lib, v):
        f = _lu(lib, v["X"])
        lu = f[0]
        diagonal = lib.diagonal(lu) if lib.__name__ != "torch" else lib.diagonal(lu, 0)
        eye = _eye(lib, lu.shape[0], lu)
        return lib.sum(lib.log(lib.abs(diagonal))), _lu_solve(lib, f, eye, 1)

    return Problem(
        "log det X with its gradient", "X", lambda: md.logdet(X),
        lambda rng, n: {"X": _square(rng, n)},
        lambda lib, v: lib.linalg.slogdet(v["X"])[1],
        both, None, (100, 400, 1000), (), (20,), with_value=True)


def _trace_inverse():
    A, X, B = md.matrix("A", "n", "n"), md.matrix("X", "n", "n"), md.matrix("B", "n", "n")

    def hessian(lib, v):  # (X⁻¹)_jk M_li + M_jk (X⁻¹)_li, M = X⁻¹BAX⁻¹
        Xi = lib.linalg.inv(v["X"])
        M = Xi @ v["B"] @ v["A"] @ Xi
        return Xi[None, :, :, None] * M.T[:, None, None, :] + M[None, :, :, None] * Xi.T[:, None, None, :]

    return Problem(
        "tr(AX⁻¹B)", "X", lambda: md.trace(A @ md.inv(X) @ B),
        lambda rng, n: {"A": rng.normal(size=(n, n)), "X": _square(rng, n), "B": rng.normal(size=(n, n))},
        lambda lib, v: lib.trace(v["A"] @ lib.linalg.inv(v["X"]) @ v["B"]),
        lambda lib, v: -(lib.linalg.inv(v["X"]) @ v["B"] @ v["A"] @ lib.linalg.inv(v["X"])).T,
        hessian,
        (100, 400, 1000), (10, 30, 60), (20,))


def _trace_quadratic():
    X, A = md.matrix("X", "n", "m"), md.matrix("A", "n", "n")

    def hessian(lib, v):  # (A + Aᵀ)_ik δ_jl
        n, m = v["X"].shape
        H = _zeros(lib, (n, m, n, m), v["X"])
        j = _arange(lib, m, v["X"])
        return _put(lib, H, (slice(None), j, slice(None), j), v["A"] + v["A"].T)

    return Problem(
        "tr(XᵀAX)", "X", lambda: md.trace(X.T @ A @ X),
        lambda rng, s: {"X": rng.normal(size=s), "A": rng.normal(size=(s[0], s[0]))},
        lambda lib, v: lib.trace(v["X"].T @ v["A"] @ v["X"]),
        lambda lib, v: (v["A"] + v["A"].T) @ v["X"],
        hessian,
        ((100, 20), (400, 50), (1000, 100)), ((20, 5), (60, 10), (100, 20)), ((20, 4),))


def _svd(lib, x):  # the thin SVD, in NumPy, JAX and PyTorch alike
    return lib.linalg.svd(x, full_matrices=False)


def _nuclear_norm():
    """‖X‖_* = Σσᵢ, gradient UVᵀ (issue 14); no Hessian (it needs dU, not supported)."""
    X = md.matrix("X", "m", "n")

    def grad(lib, v):
        u, _, vt = _svd(lib, v["X"])
        return u @ vt

    return Problem(
        "nuclear norm ‖X‖_*", "X", lambda: md.norm(X, "nuc", smaller="n"),
        lambda rng, s: {"X": rng.normal(size=s)},
        lambda lib, v: _svd(lib, v["X"])[1].sum(),
        grad, None,
        ((100, 50), (400, 200), (1000, 500)), (), ((40, 20),))


def _log_eigenvalues():
    """Σ log λᵢ(S) of a symmetric S (= log det S, through eigvalsh; issue 14): gradient S⁻¹,
    Hessian −½(S⁻¹_il S⁻¹_jk + S⁻¹_ik S⁻¹_jl) on symmetric directions, which autodiff
    reproduces by differentiating f((S + Sᵀ)/2)."""
    S = md.matrix("S", "n", "n", symmetric=True)

    def hessian(lib, v):
        Si = lib.linalg.inv(v["S"])
        return -0.5 * (Si[:, None, None, :] * Si[None, :, :, None]
                       + Si[:, None, :, None] * Si[None, :, None, :])

    return Problem(
        "Σ log λᵢ(S)", "S", lambda: md.sum(md.log(md.eigvalsh(S))),
        lambda rng, n: {"S": (lambda q: q @ q.T / n + np.eye(n))(rng.normal(size=(n, n)))},
        lambda lib, v: lib.sum(lib.log(lib.linalg.eigvalsh((v["S"] + v["S"].T) / 2))),
        lambda lib, v: lib.linalg.inv(v["S"]),
        hessian,
        (100, 400, 1000), (10, 30, 60), (20,))


def _binary_cross_entropy():
    """BCE typed with logarithms, −(yᵀlog σ(Xw) + (1 − y)ᵀlog(1 − σ(Xw))), which matdiff takes in
    log space (issue 20); closed forms Xᵀ(σ(Xw) − y) and Xᵀdiag(σ ⊙ (1 − σ))X."""
    X, w, y = md.matrix("X", "n", "k"), md.vector("w", "k"), md.vector("y", "n")

    def build():
        s = md.sigmoid(X @ w)
        return -(y.T @ md.log(s) + (1 - y).T @ md.log(1 - s))

    def hessian(lib, v):
        s = _sigmoid(lib, v["X"] @ v["w"])
        return v["X"].T @ ((s * (1 - s))[:, None] * v["X"])

    return Problem(
        "binary cross-entropy, typed with log σ", "w", build,
        lambda rng, s: {"X": rng.normal(size=s) / np.sqrt(s[1]), "w": rng.normal(size=s[1]),
                        "y": (rng.random(s[0]) > 0.5) * 1.0},
        lambda lib, v: lib.sum(_softplus(lib, v["X"] @ v["w"]) - v["y"] * (v["X"] @ v["w"])),
        lambda lib, v: v["X"].T @ (_sigmoid(lib, v["X"] @ v["w"]) - v["y"]),
        hessian,
        ((500, 50), (2000, 200), (8000, 400)), ((500, 50), (2000, 200), (8000, 400)), ((200, 20),))


def _log_softmax_rows(lib, Z):
    if lib.__name__ == "torch":
        return lib.log_softmax(Z, dim=1)
    M = Z.max(axis=1, keepdims=True)
    return Z - M - lib.log(lib.exp(Z - M).sum(axis=1, keepdims=True))


def _softmax_rows(lib, Z):
    if lib.__name__ == "torch":
        return lib.softmax(Z, dim=1)
    E = lib.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def _softmax_cross_entropy(declared: bool = False):
    """−Σ Y ⊙ log softmax(XW) (rows), typed with log; closed form Xᵀ(diag(Y1)softmax(XW) − Y),
    and Xᵀ(softmax(XW) − Y) for one-hot Y.  With ``declared`` the derivatives are taken given
    Y1 = 1 (md.fact), as the closed form assumes, and the Hessian
    Σ_p X_pi X_pk (δ_jl S_pj − S_pj S_pl) is timed too: the block diagonal Xᵀdiag(S_:j)X
    less ZᵀZ for Z_p(ij) = X_pi S_pj."""
    X, W, Y = md.matrix("X", "n", "k"), md.matrix("W", "k", "c"), md.matrix("Y", "n", "c")

    def grad(lib, v):
        S = _softmax_rows(lib, v["X"] @ v["W"])
        if declared:  # one-hot (or probability) rows: Y1 = 1
            return v["X"].T @ (S - v["Y"])
        # Any Y: the gradient of −Σ Y ⊙ log softmax(XW) is Xᵀ(diag(Y1)S − Y); the one-hot form
        # above is another function's gradient wherever a row of Y does not sum to 1
        return v["X"].T @ (S * v["Y"].sum(axis=1, keepdims=True) - v["Y"])

    def hessian(lib, v):
        X = v["X"]
        S = _softmax_rows(lib, X @ v["W"])
        (n, k), c = X.shape, S.shape[1]
        Z = (X[:, :, None] * S[:, None, :]).reshape(n, k * c)
        H = -(Z.T @ Z).reshape(k, c, k, c)
        D = (X.T @ Z).reshape(k, k, c)  # Σ_p X_pi X_pk S_pj
        j = _arange(lib, c, X)
        return _put(lib, H, (slice(None), j, slice(None), j), _permute(lib, D, (2, 0, 1)), add=True)

    return Problem(
        "softmax cross-entropy, typed with log softmax" + (", Y1 = 1 declared" if declared else ""), "W",
        lambda: -md.sum(Y * md.log(md.softmax(X @ W, axis=1))),
        lambda rng, s: {"X": rng.normal(size=s[:2]), "W": rng.normal(size=s[1:]) / np.sqrt(s[1]),
                        "Y": np.eye(s[2])[rng.integers(0, s[2], s[0])]},
        lambda lib, v: -(v["Y"] * _log_softmax_rows(lib, v["X"] @ v["W"])).sum(),
        grad, hessian if declared else None,
        ((500, 50, 10), (2000, 200, 20), (8000, 400, 50)),
        ((200, 20, 5), (1000, 50, 10), (2000, 100, 10)), ((200, 20, 5),),
        (lambda: [md.fact(Y @ md.ones("c"), 1)]) if declared else None)


# --- solves (issue 25): closed forms written with a factorisation, as a numerical analyst would

def _scipy_linalg(lib):
    """SciPy's linalg for NumPy arrays, jax.scipy's for JAX's, with the keywords each takes."""
    if lib.__name__ == "numpy":
        import scipy.linalg

        return scipy.linalg, {"check_finite": False}
    import jax.scipy.linalg

    return jax.scipy.linalg, {}


def _lu(lib, x):
    """x's LU factorisation in the backend: SciPy's, jax.scipy's or torch.linalg's."""
    if lib.__name__ == "torch":
        return lib.linalg.lu_factor(x)
    linalg, kw = _scipy_linalg(lib)
    return linalg.lu_factor(x, **kw)


def _lu_solve(lib, f, b, trans=0):
    """X⁻¹b (X⁻ᵀb with trans=1) from X's factorisation ``f``."""
    if lib.__name__ == "torch":
        column = b if b.ndim > 1 else b[:, None]
        x = lib.linalg.lu_solve(f[0], f[1], column, adjoint=bool(trans))
        return x if b.ndim > 1 else x[:, 0]
    linalg, kw = _scipy_linalg(lib)
    return linalg.lu_solve(f, b, trans=trans, **kw)


def _bilinear_inverse():
    """aᵀX⁻¹b by X: −X⁻ᵀabᵀX⁻ᵀ, two solves with one LU of X."""
    a, X, b = md.vector("a", "n"), md.matrix("X", "n", "n"), md.vector("b", "n")

    def grad(lib, v):
        f = _lu(lib, v["X"])
        return -_lu_solve(lib, f, v["a"], 1)[:, None] * _lu_solve(lib, f, v["b"])[None, :]

    return Problem(
        "aᵀX⁻¹b", "X", lambda: a.T @ md.inv(X) @ b,
        lambda rng, n: {"a": rng.normal(size=n), "X": _square(rng, n), "b": rng.normal(size=n)},
        lambda lib, v: v["a"] @ lib.linalg.solve(v["X"], v["b"]),
        grad, None, (100, 400, 1000), (), (20,))


def _gaussian_nll(x, mu, S):
    """The Gaussian negative log-likelihood, up to its constant: ½(x − μ)ᵀS⁻¹(x − μ) + ½ log det S."""
    return (x - mu).T @ md.inv(S) @ (x - mu) / 2 + md.logdet(S) / 2


def _gaussian_data(rng, n):
    return {"x": rng.normal(size=n), "mu": rng.normal(size=n),
            "S": (lambda q: q @ q.T / n + np.eye(n))(rng.normal(size=(n, n)))}


def _gaussian_value(lib, v):
    r = v["x"] - v["mu"]
    return r @ lib.linalg.solve(v["S"], r) / 2 + lib.linalg.slogdet(v["S"])[1] / 2


def _gaussian_mean():
    """The Gaussian NLL by μ: Σ⁻¹(μ − x), one solve."""
    x, mu, S = md.vector("x", "n"), md.vector("mu", "n"), md.matrix("S", "n", "n", symmetric=True)
    return Problem(
        "Gaussian NLL by μ", "mu", lambda: _gaussian_nll(x, mu, S),
        _gaussian_data, _gaussian_value,
        lambda lib, v: lib.linalg.solve(v["S"], v["mu"] - v["x"]),
        None, (100, 400, 1000), (), (20,))


def _cho(lib, x):
    """x's Cholesky factorisation in the backend, as cho_solve takes it (torch: the factor)."""
    if lib.__name__ == "torch":
        return lib.linalg.cholesky(x)
    linalg, kw = _scipy_linalg(lib)
    return linalg.cho_factor(x, **kw)


def _cho_solve(lib, f, b):
    """S⁻¹b from S's Cholesky factorisation ``f``."""
    if lib.__name__ == "torch":
        return lib.cholesky_solve(b[:, None], f)[:, 0]
    linalg, kw = _scipy_linalg(lib)
    return linalg.cho_solve(f, b, **kw)


def _gaussian_covariance():
    """The Gaussian NLL by a symmetric Σ: ½(Σ⁻¹ − uuᵀ), u = Σ⁻¹(x − μ). The result holds Σ⁻¹
    itself and a solve with Σ: the hand-written form takes both from one LU, as generated code
    does since the inverse comes from the solves' factors."""
    x, mu, S = md.vector("x", "n"), md.vector("mu", "n"), md.matrix("S", "n", "n", symmetric=True)

    def grad(lib, v):
        f = _lu(lib, v["S"])
        u = _lu_solve(lib, f, v["x"] - v["mu"])
        inverse = _lu_solve(lib, f, _eye(lib, v["S"].shape[0], v["S"]))
        return (inverse - u[:, None] * u[None, :]) / 2

    return Problem(
        "Gaussian NLL by Σ", "S", lambda: _gaussian_nll(x, mu, S),
        _gaussian_data, _gaussian_value,
        grad, None, (100, 400, 1000), (), (20,))


def _gaussian_mean_spd():
    """The Gaussian NLL by μ with Σ declared positive definite: Σ⁻¹(μ − x) by Cholesky, against
    the hand-written cho_factor/cho_solve form."""
    x, mu, S = md.vector("x", "n"), md.vector("mu", "n"), md.matrix("S", "n", "n", spd=True)
    return Problem(
        "Gaussian NLL by μ (Σ spd)", "mu", lambda: _gaussian_nll(x, mu, S),
        _gaussian_data, _gaussian_value,
        lambda lib, v: _cho_solve(lib, _cho(lib, v["S"]), v["mu"] - v["x"]),
        None, (100, 400, 1000), (), (20,))


def _ridge():
    """zᵀM(MᵀM + λI)⁻¹Mᵀz by z: 2M(MᵀM + λI)⁻¹Mᵀz, one solve with the k × k Gram matrix."""
    M, z, lam = md.matrix("M", "m", "k"), md.vector("z", "m"), md.scalar("lam")

    def grad(lib, v):
        m = v["M"]
        return 2 * (m @ lib.linalg.solve(m.T @ m + v["lam"] * _eye(lib, m.shape[1], m), m.T @ v["z"]))

    return Problem(
        "ridge zᵀM(MᵀM + λI)⁻¹Mᵀz", "z", lambda: z.T @ M @ md.inv(M.T @ M + lam * md.eye("k")) @ M.T @ z,
        lambda rng, s: {"M": rng.normal(size=s), "z": rng.normal(size=s[0]), "lam": 0.5},
        lambda lib, v: v["z"] @ v["M"] @ lib.linalg.solve(
            v["M"].T @ v["M"] + v["lam"] * _eye(lib, v["M"].shape[1], v["M"]), v["M"].T @ v["z"]),
        grad, None, ((500, 50), (2000, 200), (8000, 400)), (), ((200, 20),))


def _trace_of_inverse():
    """∂/∂λ log det(MᵀM + λI) = tr(G⁻¹), G = MᵀM + λI (λ declared positive: G is positive
    definite): ‖L⁻¹‖_F² from G's Cholesky factor and a triangular solve for I, G⁻¹ never formed."""
    M, lam = md.matrix("M", "m", "k"), md.scalar("lam", positive=True)

    def gram(lib, v):
        m = v["M"]
        return m.T @ m + v["lam"] * _eye(lib, m.shape[1], m)

    def grad(lib, v):
        g = gram(lib, v)
        eye = _eye(lib, g.shape[0], g)
        if lib.__name__ == "torch":
            return lib.linalg.solve_triangular(lib.linalg.cholesky(g), eye, upper=False).square().sum()
        linalg, kw = _scipy_linalg(lib)
        lower = linalg.cholesky(g, lower=True, **kw)
        return (linalg.solve_triangular(lower, eye, lower=True, **kw) ** 2).sum()

    return Problem(
        "tr(G⁻¹) = ∂ log det(MᵀM + λI)/∂λ", "lam", lambda: md.logdet(M.T @ M + lam * md.eye("k")),
        lambda rng, s: {"M": rng.normal(size=s), "lam": 0.5},
        lambda lib, v: lib.linalg.slogdet(gram(lib, v))[1],
        grad, None, ((200, 100), (800, 400), (2000, 1000)), (), ((40, 20),))


def _sum_of_inverses(by: str = "y"):
    """½yᵀUSUy with U = (S + λI)⁻¹ − (S + ABAᵀ)⁻¹, a sum of inverses one product reads twice.
    By y: ½(USU + UᵀSUᵀ)y. By λ: −½(yᵀV⁻²SUy + yᵀUSV⁻²y), V = S + λI. Solves with one LU of
    each matrix, every right-hand side a vector."""
    S, A, B = md.matrix("S", "n", "n", symmetric=True), md.matrix("A", "n", "n"), md.matrix("B", "n", "n")
    y, lam = md.vector("y", "n"), md.scalar("lam")

    def build():
        U = md.inv(S + lam * md.eye("n")) - md.inv(S + A @ B @ A.T)
        return y.T @ U @ S @ U @ y / 2

    def data(rng, n):
        q = rng.normal(size=(n, n))
        return {"S": q @ q.T / n + np.eye(n), "A": rng.normal(size=(n, n)) / np.sqrt(n),
                "B": np.eye(n) + rng.normal(size=(n, n)) / 10, "y": rng.normal(size=n),
                "lam": np.asarray(0.5)}

    def matrices(lib, v):
        first = v["S"] + v["lam"] * _eye(lib, v["S"].shape[0], v["S"])
        return first, v["S"] + v["A"] @ v["B"] @ v["A"].T

    def value(lib, v):
        M1, M2 = matrices(lib, v)
        u = lib.linalg.solve(M1, v["y"]) - lib.linalg.solve(M2, v["y"])
        return v["y"] @ (lib.linalg.solve(M1, v["S"] @ u) - lib.linalg.solve(M2, v["S"] @ u)) / 2

    def grad(lib, v):
        f1, f2 = (_lu(lib, M) for M in matrices(lib, v))
        u = _lu_solve(lib, f1, v["y"]) - _lu_solve(lib, f2, v["y"])         # Uy
        ut = _lu_solve(lib, f1, v["y"], 1) - _lu_solve(lib, f2, v["y"], 1)  # Uᵀy
        if by == "lam":
            a = _lu_solve(lib, f1, _lu_solve(lib, f1, v["y"], 1), 1)       # V⁻ᵀV⁻ᵀy
            b = _lu_solve(lib, f1, _lu_solve(lib, f1, v["y"]))             # V⁻¹V⁻¹y
            return -(a @ (v["S"] @ u) + ut @ (v["S"] @ b)) / 2
        right, left = v["S"] @ u, v["S"] @ ut
        return (_lu_solve(lib, f1, right) - _lu_solve(lib, f2, right)
                + _lu_solve(lib, f1, left, 1) - _lu_solve(lib, f2, left, 1)) / 2

    return Problem(f"½yᵀUSUy by {'λ' if by == 'lam' else by}, U a sum of inverses", by, build, data, value,
                   grad, None, (100, 400, 1000), (), (20,))


def _diagonal_between_solves():
    """Σ sin(X⁻¹a) by a: the gradient X⁻ᵀcos(X⁻¹a), the Hessian −X⁻ᵀdiag(sin(X⁻¹a))X⁻¹,
    with one LU of X; the Hessian solves with the diagonal matrix and then with the
    transpose of that solution, so X⁻¹ is never formed."""
    a, X = md.vector("a", "n"), md.matrix("X", "n", "n")

    def grad(lib, v):
        f = _lu(lib, v["X"])
        return _lu_solve(lib, f, lib.cos(_lu_solve(lib, f, v["a"])), 1)

    def hessian(lib, v):
        f = _lu(lib, v["X"])
        left = _lu_solve(lib, f, lib.diag(-lib.sin(_lu_solve(lib, f, v["a"]))), 1)  # −X⁻ᵀdiag(…)
        return _lu_solve(lib, f, left.T, 1).T

    return Problem(
        "Σ sin(X⁻¹a)", "a", lambda: md.sum(md.sin(md.solve(X, a))),
        lambda rng, n: {"a": rng.normal(size=n), "X": _square(rng, n)},
        lambda lib, v: lib.sin(lib.linalg.solve(v["X"], v["a"])).sum(),
        grad, hessian, (100, 400, 1000), (100, 400, 1000), (20,))


def _eye(lib, n, like):
    if lib.__name__ == "torch":
        return lib.eye(n, dtype=like.dtype, device=like.device)
    return lib.eye(n, dtype=like.dtype)


PROBLEMS = [_quadratic, _least_squares, _logistic, lambda: _logistic(typed_with_exp=True),
            _binary_cross_entropy, _softmax_cross_entropy, lambda: _softmax_cross_entropy(declared=True),
            _factorisation, _network, _logdet, _logdet_and_gradient, _trace_inverse, _trace_quadratic,
            _nuclear_norm, _log_eigenvalues, _bilinear_inverse, _gaussian_mean, _gaussian_covariance,
            _gaussian_mean_spd, _ridge,
            _trace_of_inverse, _sum_of_inverses, lambda: _sum_of_inverses("lam"),
            _diagonal_between_solves]


# ----------------------------------------------------------------------------- timing

CLOCK = time.perf_counter  # --clock cpu: the process's CPU time, for a shared busy machine


def median_time(f, sync=lambda r: r, repeat=7, min_time=0.05):
    t = CLOCK()
    sync(f())
    if CLOCK() - t > 0.5:  # seconds per call: three calls are enough
        repeat = 3
    times = []
    for _ in range(repeat):
        t, count = CLOCK(), 0
        while True:
            sync(f())
            count += 1
            if CLOCK() - t > min_time / repeat:
                break
        times.append((CLOCK() - t) / count)
    return statistics.median(times)


ROUNDS = 3  # alternations per pair (--rounds): more on a busy machine


def _pair(*fs, sync=lambda r: r):
    """Timings to compare, taken in alternation (f, g, f, g, …) and the best of each: on a
    shared machine a slow moment then falls on all of them, not on one."""
    times = [[] for _ in fs]
    for _ in range(ROUNDS):
        for f, t in zip(fs, times):
            t.append(median_time(f, sync))
    return tuple(min(t) for t in times)


def _close(got, want, dtype=None, rtol=1e-8):
    if isinstance(want, tuple):  # a value with its gradient
        for g, w in zip(got, want, strict=True):
            _close(g, w, dtype, rtol)
        return
    got = np.asarray(got.cpu() if hasattr(got, "cpu") else got)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, np.abs(want).max()))


def _close32(got, want, dtype):
    """A float32 result: float32 still (generated code follows its inputs' dtype), and
    within 1e-3 of the float64 answer."""
    if isinstance(want, tuple):  # a value with its gradient
        for g, w in zip(got, want, strict=True):
            _close32(g, w, dtype)
        return
    assert str(got.dtype).endswith("float32"), got.dtype
    _close(np.asarray(got.cpu() if hasattr(got, "cpu") else got, dtype=np.float64), want, rtol=1e-3)


class Runner:
    def __init__(self, device: str):
        self.device = device
        self.jax = self.torch = None
        try:
            import jax
            jax.config.update("jax_enable_x64", True)
            import jax.numpy as jnp
            self.jax = (jax, jnp, jax.devices("gpu" if device == "cuda" else "cpu")[0])
        except (ImportError, RuntimeError):
            pass
        try:
            import torch
            if device == "cpu" or torch.cuda.is_available():
                self.torch = torch
        except ImportError:
            pass

    def versions(self) -> str:
        return (f"Python {platform.python_version()}, NumPy {np.__version__}"
                + (f", JAX {self.jax[0].__version__}" if self.jax else "")
                + (f", PyTorch {self.torch.__version__}" if self.torch else ""))

    def row(self, p: Problem, what: str, size, rng) -> dict:
        v = p.data(rng, size)
        closed = p.grad if what == "gradient" else p.hessian
        want = closed(np, v)
        out = {}
        t0 = time.perf_counter()
        f = p.build()
        var = next(u for u in f.variables if u.node.name == p.variable)
        facts = p.facts() if p.facts else None
        d = md.grad(f, var, facts=facts) if what == "gradient" else md.hessian(f, var, facts=facts)
        if p.with_value:
            d = [f, d]
        sizes = {dim: k for u in f.variables for dim, k in zip(u.node.shape, np.shape(v[u.node.name]))}
        fn = md.compile(d, sizes=sizes)  # the sizes choose the contraction order
        out["derive"] = time.perf_counter() - t0
        params = list(inspect.signature(fn).parameters)
        bare = _unchecked(d, f, fn, sizes)
        if self.device == "cpu":
            args = {q: v[q] for q in params}
            _close(fn(**args), want)
            out.update(_timed("numpy", fn, bare, args, lambda: closed(np, v)))
            v32 = {k: np.asarray(a, dtype=np.float32) for k, a in v.items()}  # results stay float32
            args32 = {q: v32[q] for q in params}
            _close32(fn(**args32), want, np.float32)
            out.update(_timed("numpy32", fn, bare, args32, lambda: closed(np, v32)))
        if self.jax:
            out.update(self._jax(p, d, v, params, closed, what, want, sizes))
        if self.torch:
            out.update(self._torch(p, d, v, params, closed, what, want, sizes, f))
        return out

    def _jax(self, p, d, v, params, closed, what, want, sizes):
        jax, jnp, dev = self.jax
        ready = jax.block_until_ready  # arrays and tuples of them alike
        out = {}
        for suffix, dtype in (("", np.float64), ("32", np.float32)):
            vj = {k: jax.device_put(jnp.asarray(np.asarray(a, dtype=dtype)), dev) for k, a in v.items()}
            t0 = time.perf_counter()
            fn = jax.jit(md.compile(d, backend="jax", sizes=sizes))
            args = {q: vj[q] for q in params}
            got = ready(fn(**args))
            jit_md = time.perf_counter() - t0
            cf = jax.jit(lambda **kw: closed(jnp, kw))  # the closed form in JAX, jitted alike
            (_close32 if suffix else _close)(got, want, dtype)
            (_close32 if suffix else _close)(ready(cf(**vj)), want, dtype)
            if suffix:
                out["md jax32"], out["cf jax32"] = _pair(lambda: fn(**args), lambda: cf(**vj), sync=ready)
                continue

            def f(x, rest):
                return p.value(jnp, dict(rest, **{p.variable: x}))

            rest = {k: a for k, a in vj.items() if k != p.variable}
            t0 = time.perf_counter()
            g = jax.jit(jax.value_and_grad(f) if p.with_value else jax.grad(f) if what == "gradient"
                        else jax.hessian(f))
            x = vj[p.variable]
            got = ready(g(x, rest))
            jit_ad = time.perf_counter() - t0
            _close(got, want)
            out["md jax"], out["cf jax"], out["jax"] = _pair(
                lambda: fn(**args), lambda: cf(**vj), lambda: g(x, rest), sync=ready)
            out["jit md"], out["jit jax"] = jit_md, jit_ad
        return out

    def _torch(self, p, d, v, params, closed, what, want, sizes, f):
        torch = self.torch
        from torch.func import grad, grad_and_value, hessian

        sync = (lambda r: torch.cuda.synchronize()) if self.device == "cuda" else (lambda r: r)
        fn = md.compile(d, backend="torch", sizes=sizes)
        bare = _unchecked(d, f, fn, sizes, "torch")
        out = {}
        for suffix, dtype in (("", torch.float64), ("32", torch.float32)):
            vt = {k: torch.as_tensor(a, dtype=dtype, device=self.device) for k, a in v.items()}
            args = {q: vt[q] for q in params}
            check = _close32 if suffix else _close
            check(fn(**args), want, dtype)
            check(closed(torch, vt), want, dtype)
            out.update(_timed("torch" + suffix, fn, bare, args, lambda: closed(torch, vt), sync))
            if suffix:
                continue

            def f(x):
                return p.value(torch, dict(vt, **{p.variable: x}))

            g = grad(f) if what == "gradient" else hessian(f)
            if p.with_value:  # torch.func gives (gradient, value)
                g = (lambda h: lambda x: h(x)[::-1])(grad_and_value(f))
            x = vt[p.variable]
            _close(g(x), want)
            out["torch.func"] = median_time(lambda: g(x), sync)
        return out


def _unchecked(d, f, fn, sizes, backend="numpy"):
    """The generated function without the checks a call makes (``fn.unchecked`` of
    ``md.compile(..., checks=False)``: no check that a declared-symmetric argument is, that a
    positive scalar is, nor of eigenvalue ties), where ``fn`` makes any: else None."""
    declared = any(u.node.symmetric for u in f.variables)
    bare = md.compile(d, backend=backend, sizes=sizes, checks=False)
    return bare.unchecked if declared or bare.source != fn.source else None


def _timed(key, fn, bare, args, closed, sync=lambda r: r) -> dict:
    """matdiff as a user calls it ("md <key>"), the closed form ("cf <key>"), and where the
    call checks its arguments also the generated function without the checks ("mu <key>"),
    timed in alternation."""
    if bare is None:
        return dict(zip(("md " + key, "cf " + key), _pair(lambda: fn(**args), closed, sync=sync)))
    return dict(zip(("md " + key, "mu " + key, "cf " + key),
                    _pair(lambda: fn(**args), lambda: bare(**args), closed, sync=sync)))


COLUMNS = [("derive", "derive + codegen"), ("md numpy", "matdiff NumPy"),
           ("cf numpy", "closed form NumPy"), ("md numpy32", "matdiff NumPy float32"),
           ("cf numpy32", "closed form NumPy float32"),
           ("md jax", "matdiff JAX (jit)"), ("jit md", "its jit"), ("cf jax", "closed form JAX (jit)"),
           ("md jax32", "matdiff JAX float32"), ("cf jax32", "closed form JAX float32"),
           ("jax", "jax.grad / jax.hessian (jit)"), ("jit jax", "its jit"),
           ("md torch", "matdiff PyTorch"), ("cf torch", "closed form PyTorch"),
           ("md torch32", "matdiff PyTorch float32"), ("cf torch32", "closed form PyTorch float32"),
           ("torch.func", "torch.func.grad / hessian")]
RATIOS = [("NumPy", "numpy"), ("NumPy float32", "numpy32"), ("JAX", "jax"), ("JAX float32", "jax32"),
          ("PyTorch", "torch"), ("PyTorch float32", "torch32")]  # matdiff / closed form
# the same without the call's argument checks (JAX checks nothing under jit), where a row has them
UNCHECKED = [("NumPy unchecked", "numpy"), ("NumPy float32 unchecked", "numpy32"),
             ("PyTorch unchecked", "torch"), ("PyTorch float32 unchecked", "torch32")]


def _fmt(t):
    if t is None:
        return "—"
    return f"{t * 1e3:.3f} ms" if t < 1e-3 else f"{t * 1e3:.2f} ms" if t < 1 else f"{t:.2f} s"


def _size(s):
    return "×".join(map(str, s)) if isinstance(s, tuple) else f"n={s}"


def _median_row(rs: list) -> dict:
    """Several measurements of one row: each time the median, and each ratio of matdiff to
    the closed form the median of the runs' own ratios (keys "ratio <backend>")."""
    out = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
    for _, b in RATIOS:
        for m in ("md", "mu"):
            if f"{m} {b}" in rs[0] and "cf " + b in rs[0]:
                out[f"ratio{'' if m == 'md' else ' mu'} {b}"] = \
                    statistics.median(r[f"{m} {b}"] / r["cf " + b] for r in rs)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one small size per problem")
    ap.add_argument("--only", help="problems whose name contains this text")
    ap.add_argument("--what", choices=["gradient", "Hessian", "HVP"],
                    help="only gradients, Hessians or (with --spectral) Hessian-vector products")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternations of each timed pair, the best kept (more on a busy machine)")
    ap.add_argument("--runs", type=int, default=1,
                    help="measure each row this many times; cells are medians over the runs")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="cpu: time by the process's CPU time (with one BLAS thread, e.g. "
                         "OMP_NUM_THREADS=1, on a machine other work shares)")
    ap.add_argument("--spectral", action="store_true",
                    help="the spectral rows of issue 21 (matdiff against jax.grad / jax.hessian "
                         "through eigh) instead of the closed-form table")
    a = ap.parse_args(argv)
    global ROUNDS, CLOCK
    ROUNDS = a.rounds
    CLOCK = time.process_time if a.clock == "cpu" else time.perf_counter
    run = Runner(a.device)
    rng = np.random.default_rng(0)
    print(f"Machine: {platform.machine()}, {a.device}; {run.versions()}; "
          f"{time.strftime('%Y-%m-%d')}; medians; {a.clock} clock\n")
    if a.spectral:
        return spectral(run, a)
    cols = [c for c in COLUMNS if a.device == "cpu" or "numpy" not in c[0]]
    print("| problem | size | what | " + " | ".join(h for _, h in cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    rows = []
    for make in PROBLEMS:
        p = make()
        if a.only and a.only.lower() not in p.name.lower():
            continue
        for what, sizes in (("gradient", p.grad_sizes), ("Hessian", p.hessian_sizes)):
            if what == "Hessian" and p.hessian is None or a.what not in (None, what):
                continue
            for level, size in enumerate(p.quick_sizes if a.quick else sizes):
                r = _median_row([run.row(p, what, size, rng) for _ in range(a.runs)])
                rows.append((p.name, what, level, r, size))
                print(f"| {p.name} | {_size(size)} | {what} | "
                      + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |", flush=True)
    ratio_cols = [(h, "ratio " + b) for h, b in RATIOS if a.device == "cpu" or "numpy" not in b]
    ratio_cols += [(h, "ratio mu " + b) for h, b in UNCHECKED
                   if any("ratio mu " + b in r for _, _, _, r, _ in rows)]
    runs = f" (median of {a.runs} runs)" if a.runs > 1 else ""
    print(f"\nmatdiff / closed form, same backend and dtype{runs}:\n")
    print("| problem | size | what | " + " | ".join(h for h, _ in ratio_cols) + " |")
    print("|---|---|---|" + "---:|" * len(ratio_cols))
    for name, what, _, r, size in rows:
        print(f"| {name} | {_size(size)} | {what} | "
              + " | ".join(f"{r[k]:.2f}" if k in r else "—" for _, k in ratio_cols) + " |")
    summary([row[:4] for row in rows], a.quick)


# ----------------------------------------------------------------------------- spectral rows
# Issue 21: gradients, Hessians and Hessian-vector products of spectral functions of a
# symmetric S, matdiff's generated NumPy and JAX code against jax.grad / jax.hessian (and
# jax.jvp of jax.grad) of the same function written with jnp.linalg.eigh.  Autodiff takes
# f((S + Sᵀ)/2), so that its derivatives are those on symmetric matrices, as matdiff's are.

SPECTRAL_SIZES = (50, 200, 500)
HESSIAN_BYTES = 2 ** 30  # full Hessians (n⁴ float64 entries) up to 1 GiB: n = 50 (50 MB), not 200 (12.8 GB)


def _spectral_problems():
    import jax.numpy as jnp

    S, a = md.matrix("S", "n", "n", symmetric=True), md.vector("a", "n")

    def eigh(v):
        return jnp.linalg.eigh((v["S"] + v["S"].T) / 2)

    def a_expm_a(v):
        lam, U = eigh(v)
        return jnp.exp(lam) @ (U.T @ v["a"]) ** 2

    return [
        ("Σ log λᵢ(S)", lambda: md.sum(md.log(md.eigvalsh(S))), lambda v: jnp.sum(jnp.log(eigh(v)[0]))),
        ("tr expm(S)", lambda: md.trace(md.matrix_function(S, "exp")),
         lambda v: jnp.sum(jnp.exp(eigh(v)[0]))),
        ("λ_max(S)", lambda: md.eigvalsh(S)[-1], lambda v: eigh(v)[0][-1]),
        ("aᵀexpm(S)a", lambda: a.T @ md.matrix_function(S, "exp") @ a, a_expm_a),
    ]


def _spectral_data(rng, n):
    q = rng.normal(size=(n, n))
    V = rng.normal(size=(n, n))
    # positive definite with distinct eigenvalues in about [1, 5], so that exp stays moderate
    return {"S": q @ q.T / n + np.eye(n), "a": rng.normal(size=n) / np.sqrt(n), "V": (V + V.T) / 2}


def spectral(run: Runner, a) -> None:
    if not run.jax:
        raise SystemExit("the spectral rows compare against JAX: pip install 'matdiff[jax]'")
    S, V = md.matrix("S", "n", "n", symmetric=True), md.matrix("V", "n", "n", symmetric=True)
    print("| function | n | what | derive + codegen | matdiff NumPy | matdiff JAX (jit) | its jit | "
          "JAX autodiff (jit) | its jit | autodiff / matdiff NumPy | autodiff / matdiff JAX |")
    print("|---|---|---|---|---|---|---|---|---|---:|---:|")
    rng = np.random.default_rng(0)
    for name, build, value in _spectral_problems():
        if a.only and a.only.lower() not in name.lower():
            continue
        for n in (SPECTRAL_SIZES[:1] if a.quick else SPECTRAL_SIZES):
            v = _spectral_data(rng, n)
            for what in ("gradient", "Hessian", "HVP"):
                if a.what not in (None, what):
                    continue
                if what == "Hessian" and 8 * n ** 4 > HESSIAN_BYTES:
                    print(f"| {name} | {n} | {what} | infeasible: n⁴ = {n ** 4:.3g} entries, "
                          f"{8 * n ** 4 / 2 ** 30:.3g} GiB in float64 (see the HVP row) |"
                          + " |" * 7, flush=True)
                    continue
                print(_spectral_row(run, name, build, value, v, what, n, S, V), flush=True)


def _spectral_row(run, name, build, value, v, what, n, S, V) -> str:
    jax, jnp, dev = run.jax
    ready = lambda r: r.block_until_ready()  # noqa: E731
    t0 = time.perf_counter()
    f = build()
    d = {"gradient": lambda: md.grad(f, S), "Hessian": lambda: md.hessian(f, S),
         "HVP": lambda: md.hvp(f, S, V)}[what]()
    sizes = {"n": n}
    fn = md.compile(d, sizes=sizes)
    derive = time.perf_counter() - t0
    params = list(inspect.signature(fn).parameters)
    args = {q: v[q] for q in params}
    got = fn(**args)
    vj = {k: jax.device_put(jnp.asarray(x), dev) for k, x in v.items()}
    argsj = {q: vj[q] for q in params}
    t0 = time.perf_counter()
    fj = jax.jit(md.compile(d, backend="jax", sizes=sizes))
    got_j = ready(fj(**argsj))
    jit_md = time.perf_counter() - t0

    def g(x, rest):
        return value(dict(rest, S=x))

    rest = {k: x for k, x in vj.items() if k in ("a",)}
    t0 = time.perf_counter()
    if what == "gradient":
        ad = jax.jit(jax.grad(g))
        call = lambda: ad(vj["S"], rest)  # noqa: E731
    elif what == "Hessian":
        ad = jax.jit(jax.hessian(g))
        call = lambda: ad(vj["S"], rest)  # noqa: E731
    else:
        ad = jax.jit(lambda x, t, rest: jax.jvp(lambda y: jax.grad(g)(y, rest), (x,), (t,))[1])
        call = lambda: ad(vj["S"], vj["V"], rest)  # noqa: E731
    want = np.asarray(ready(call()))
    jit_ad = time.perf_counter() - t0
    _close(got, want, rtol=1e-6)
    _close(got_j, want, rtol=1e-6)
    t_np, t_jax, t_ad = _pair(lambda: fn(**args), lambda: fj(**argsj), call, sync=ready_any)
    return (f"| {name} | {n} | {what} | {_fmt(derive)} | {_fmt(t_np)} | {_fmt(t_jax)} | {_fmt(jit_md)} | "
            f"{_fmt(t_ad)} | {_fmt(jit_ad)} | {t_ad / t_np:.2f} | {t_ad / t_jax:.2f} |")


def ready_any(r):
    return r.block_until_ready() if hasattr(r, "block_until_ready") else r


def summary(rows, quick):
    """The issue's goals, as ratios: generated code against closed forms at the two larger
    sizes; Hessians against autodiff at the medium size; gradients against jax.grad."""
    def ratios(what, a, b, levels):
        return [(name, r[a] / r[b]) for name, w, level, r in rows
                if w == what and level in levels and a in r and b in r]

    big = (0,) if quick else (1, 2)
    print()
    for a, b, what in (("md numpy", "cf numpy", "gradient"), ("md numpy", "cf numpy", "Hessian"),
                       ("md torch", "cf torch", "gradient"), ("md torch", "cf torch", "Hessian")):
        rs = ratios(what, a, b, big)
        if rs:
            worst = max(rs, key=lambda t: t[1])
            print(f"- {what}s, {a} / {b}, larger sizes: at most {worst[1]:.2f} ({worst[0]})")
    mid = (0,) if quick else (1,)
    for fast in ("md numpy", "md jax", "md torch"):
        for slow in ("jax", "torch.func"):
            rs = ratios("Hessian", slow, fast, mid)
            if rs:
                least = min(rs, key=lambda t: t[1])
                print(f"- Hessians, medium size, {slow} / {fast}: at least {least[1]:.1f}× "
                      f"({least[0]}), median {statistics.median(x for _, x in rs):.1f}×")
    for fast in ("md numpy", "md jax"):
        rs = ratios("gradient", fast, "jax", (0, 1, 2))
        if rs:
            worst = max(rs, key=lambda t: t[1])
            print(f"- gradients, {fast} / jax.grad: at most {worst[1]:.2f} ({worst[0]}), "
                  f"median {statistics.median(x for _, x in rs):.2f}")


if __name__ == "__main__":
    main()
