"""The derivative table: expression, variable, and (where one is known) the closed form.

Every case is checked numerically against finite differences (``md.check``, first and,
where marked, second order); where a closed form is given — as a matdiff expression or
as a NumPy function of the inputs — the engine's derivative must equal it on random inputs.
Cases marked ``seed`` reproduce an example of the documents matdiff grew from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

import matdiff as md


@dataclass
class Case:
    name: str
    f: Any
    wrt: Any
    closed: Any = None  # Expr, or callable(values: dict[str, ndarray]) -> ndarray
    kinds: dict = field(default_factory=dict)
    order: int = 1  # 2: also check the Hessian numerically
    prepare: Optional[Callable] = None  # adjust random inputs (e.g. rows that sum to one)
    seed: str = ""  # the seed document the case comes from
    sizes: dict = field(default_factory=dict)


CASES: list[Case] = []


def case(*args, **kw):
    CASES.append(Case(*args, **kw))


def M(name, r="n", c="n", **kw):
    return md.matrix(name, r, c, **kw)


def V(name, n="n"):
    return md.vector(name, n)


# shared symbols
A, B, C, X = M("A"), M("B"), M("C"), M("X")
S = M("S", symmetric=True)
x, y, a, b = V("x"), V("y"), V("a"), V("b")
s, t = md.scalar("s"), md.scalar("t")
Xr, w, yr = M("X", "n", "k"), V("w", "k"), V("y", "n")
W = M("W", "k", "m")
I = md.eye("n")
one = md.ones("n")
sigma, f_, g_ = md.function("sigma"), md.function("f"), md.function("g")
lam = md.scalar_function("lambda")
T3 = md.tensor("T", "n", "k", "m")


def inv_t(v):
    return np.linalg.inv(v).T


# ----------------------------------------------------------------------------- traces
case("tr X", md.trace(X), X, I)
case("tr X + 1", md.trace(X) + 1, X, I)  # SymPy returns 0 here
case("tr AX", md.trace(A @ X), X, A.T)
case("tr AXB", md.trace(A @ X @ B), X, A.T @ B.T, order=2)
case("tr XᵀA", md.trace(Xr.T @ M("A", "n", "k")), Xr, M("A", "n", "k"))
case("tr XXᵀ", md.trace(Xr @ Xr.T), Xr, 2 * Xr, order=2)
case("tr XᵀAX", md.trace(Xr.T @ A @ Xr), Xr, (A + A.T) @ Xr, order=2)
case("tr X²", md.trace(X @ X), X, 2 * X.T, order=2)
case("tr X³", md.trace(X @ X @ X), X, 3 * (X @ X).T)
case("tr AX⁻¹B", md.trace(A @ md.inv(X) @ B), X,
     -md.inv(X).T @ A.T @ B.T @ md.inv(X).T, kinds={"X": "invertible"}, seed="002")
case("tr (AB−C)(AB−C)ᵀ", md.trace((A @ B - C) @ (A @ B - C).T), B, 2 * A.T @ (A @ B - C),
     order=2, seed="001")
case("tr kron(A,B)", md.trace(md.kron(A, M("B", "m", "m"))), A, md.trace(M("B", "m", "m")) * I)
case("tr Xᵀ X by sum", md.sum(X * X), X, 2 * X)

# ----------------------------------------------------------------------------- inverses
case("aᵀX⁻¹b", a.T @ md.inv(X) @ b, X, -md.inv(X).T @ a @ b.T @ md.inv(X).T,
     kinds={"X": "invertible"}, order=2)
case("tr X⁻¹", md.trace(md.inv(X)), X, -(md.inv(X) @ md.inv(X)).T, kinds={"X": "invertible"})
case("sum X⁻¹", md.sum(md.inv(X)), X, kinds={"X": "invertible"}, order=2)
case("∂X⁻¹/∂X", md.inv(X), X, lambda v: -np.einsum("ip,qj->ijpq", np.linalg.inv(v["X"]),
                                                     np.linalg.inv(v["X"])),
     kinds={"X": "invertible"})
case("logdet X⁻¹", md.logdet(md.inv(X)), X, -md.inv(X).T, kinds={"X": "invertible"})
case("xᵀX⁻¹x", x.T @ md.inv(X) @ x, x, (md.inv(X) + md.inv(X).T) @ x, kinds={"X": "invertible"})
case("(A + X)⁻¹ by X", md.sum(md.inv(A + X) @ B), X, kinds={"X": "invertible", "A": "spd"})

# ----------------------------------------------------------------------------- determinants
case("det X", md.det(X), X, md.det(X) * md.inv(X).T, kinds={"X": "invertible"}, order=2,
     seed="002")
case("log det X", md.logdet(X), X, md.inv(X).T, kinds={"X": "invertible"}, order=2, seed="002")
case("log det XᵀX", md.logdet(Xr.T @ Xr), Xr, 2 * Xr @ md.inv(Xr.T @ Xr),
     sizes={"n": 5, "k": 3})
case("det AXB", md.det(A @ X @ B), X,
     lambda v: np.linalg.det(v["A"] @ v["X"] @ v["B"]) * v["A"].T @ inv_t(v["A"] @ v["X"] @ v["B"]) @ v["B"].T,
     kinds={"A": "invertible", "B": "invertible", "X": "invertible"})
case("det sX", md.det(s * X), s, kinds={"X": "invertible"})
case("log det S (symmetric)", md.logdet(S), S, md.inv(S), kinds={"S": "spd"}, order=2)
case("log det (A + sI)", md.logdet(A + s * I), s, md.trace(md.inv(A + s * I)), kinds={"A": "spd"})

# ----------------------------------------------------------------------------- quadratic, bilinear
case("aᵀx", a.T @ x, x, a, seed="002")
case("xᵀa", x.T @ a, x, a)
case("xᵀAx", x.T @ A @ x, x, (A + A.T) @ x, order=2, seed="002")
case("xᵀAx by A", x.T @ A @ x, A, x @ x.T)
case("xᵀSx", x.T @ S @ x, x, 2 * S @ x, order=2)
case("xᵀSx by S", x.T @ S @ x, S, x @ x.T)
case("aᵀSb by S", a.T @ S @ b, S, (a @ b.T + b @ a.T) / 2)
case("tr AS by S", md.trace(A @ S), S, (A + A.T) / 2)
case("aᵀXb", a.T @ X @ b, X, a @ b.T, seed="002")
case("aᵀXXᵀa", a.T @ Xr @ Xr.T @ a, Xr, 2 * a @ a.T @ Xr, order=2, seed="002")
case("xᵀx", x.T @ x, x, 2 * x)
case("(Xw − y)ᵀ(Xw − y)", (Xr @ w - yr).T @ (Xr @ w - yr), w, 2 * Xr.T @ (Xr @ w - yr), order=2)
case("(Ax + b)ᵀ(Ax + b)", (A @ x + b).T @ (A @ x + b), x, 2 * A.T @ (A @ x + b), order=2)
case("aᵀAb by A", a.T @ A @ b, A, a @ b.T)
case("s·xᵀx by s", s * (x.T @ x), s, x.T @ x)
case("s·xᵀx by x", s * (x.T @ x), x, 2 * s * x)
case("xᵀAy by y", x.T @ A @ y, y, A.T @ x)
case("xᵀ(A + Aᵀ)x", x.T @ (A + A.T) @ x, x, 2 * (A + A.T) @ x, order=2)
case("(xᵀAx)²", (x.T @ A @ x) ** 2, x, 2 * (x.T @ A @ x) * (A + A.T) @ x, order=2)
case("xᵀAx / xᵀx", (x.T @ A @ x) / (x.T @ x), x, order=2)

# ----------------------------------------------------------------------------- norms
case("‖x‖", md.norm(x), x, x / md.norm(x), order=2)
case("‖x‖²", md.norm(x) ** 2, x, 2 * x, order=2)
case("‖X‖_F", md.norm(X), X, X / md.norm(X))
case("‖Xw − y‖² by w", md.norm(Xr @ w - yr) ** 2, w, 2 * Xr.T @ (Xr @ w - yr), order=2)
case("‖Xw − y‖² by X", md.norm(Xr @ w - yr) ** 2, Xr, 2 * (Xr @ w - yr) @ w.T)
case("‖x‖₁", md.norm(x, 1), x, md.sign(x))
case("‖Ax − b‖", md.norm(A @ x - b), x, order=2)
case("‖T − UVᵀ‖²_F by U", md.norm(M("T", "n", "m") - M("U", "n", "k") @ M("V", "m", "k").T) ** 2,
     M("U", "n", "k"), -2 * (M("T", "n", "m") - M("U", "n", "k") @ M("V", "m", "k").T) @ M("V", "m", "k"),
     order=2)

# ----------------------------------------------------------------------------- element-wise
case("Σ exp x", md.sum(md.exp(x)), x, md.exp(x), order=2)
case("Σ log x", md.sum(md.log(x)), x, 1 / x, kinds={"x": "positive"}, order=2)
case("Σ sin X", md.sum(md.sin(X)), X, md.cos(X), order=2)
case("Σ cos x", md.sum(md.cos(x)), x, -md.sin(x), order=2)
case("Σ tan x", md.sum(md.tan(0.3 * x)), x, 0.3 * (1 + md.tan(0.3 * x) ** 2), order=2)
case("Σ tanh Xw", md.sum(md.tanh(Xr @ w)), w, Xr.T @ (1 - md.tanh(Xr @ w) ** 2), order=2)
case("Σ σ(XW) concrete", md.sum(md.sigmoid(Xr @ W)), W,
     Xr.T @ (md.sigmoid(Xr @ W) * (1 - md.sigmoid(Xr @ W))), order=2)
case("Σ softplus x", md.sum(md.softplus(x)), x, md.sigmoid(x), order=2)
W2, Yc = M("W2", "m", "k"), M("Y", "n", "k")
H1 = md.sigmoid(Xr @ W)
case("‖σ(XW)W₂ − Y‖² by W", md.norm(H1 @ W2 - Yc) ** 2, W,
     Xr.T @ ((2 * (H1 @ W2 - Yc) @ W2.T) * H1 * (1 - H1)), order=2)
case("Σ softplus(tanh(XW)W₂) by W", md.sum(md.softplus(md.tanh(Xr @ W) @ W2)), W,
     Xr.T @ ((md.sigmoid(md.tanh(Xr @ W) @ W2) @ W2.T) * (1 - md.tanh(Xr @ W) ** 2)))
case("Σ relu x", md.sum(md.relu(x)), x, (md.sign(x) + 1) / 2)
case("Σ |x|", md.sum(md.abs(x)), x, md.sign(x))
case("Σ √x", md.sum(md.sqrt(x)), x, 0.5 / md.sqrt(x), kinds={"x": "positive"}, order=2)
case("Σ x³", md.sum(x ** 3), x, 3 * x ** 2, order=2)
case("Σ x/y by y", md.sum(x / y), y, -x / y ** 2, kinds={"y": "positive"}, order=2)
case("Σ eˣ sin x", md.sum(md.exp(x) * md.sin(x)), x, md.exp(x) * (md.sin(x) + md.cos(x)), order=2)
case("xᵀ exp(Ax)", x.T @ md.exp(A @ x), x, md.exp(A @ x) + A.T @ (x * md.exp(A @ x)), order=2)
case("Σ σ(x)²", md.sum(md.sigmoid(x) ** 2), x, order=2)
case("Σ log(1 + eˣ)", md.sum(md.log(1 + md.exp(x))), x, md.sigmoid(x), order=2)
case("sign x (zero derivative)", md.sum(md.sign(x) * x), x, md.sign(x))
case("x ** y (exponent an expression)", md.sum(x ** y), y, md.log(x) * x ** y,
     kinds={"x": "positive"})
case("2 ** x", md.sum(2 ** x), x, np.log(2) * 2 ** x)
case("logistic loss", md.sum(md.log(1 + md.exp(-yr * (Xr @ w)))), w,
     -Xr.T @ (yr * md.sigmoid(-yr * (Xr @ w))), order=2)
case("logistic loss Hessian", md.grad(md.sum(md.softplus(-yr * (Xr @ w))), w), w,
     Xr.T @ md.diag(yr * yr * md.sigmoid(yr * (Xr @ w)) * md.sigmoid(-yr * (Xr @ w))) @ Xr)

# ----------------------------------------------------------------------------- softmax, logsumexp
case("∂softmax(x)/∂x", md.softmax(x), x,
     md.diag(md.softmax(x)) - md.softmax(x) @ md.softmax(x).T, order=2, seed="002")
case("logsumexp x", md.logsumexp(x), x, md.softmax(x), order=2)
case("∇² logsumexp x", md.grad(md.logsumexp(x), x), x,
     md.diag(md.softmax(x)) - md.softmax(x) @ md.softmax(x).T)
case("Σ logsumexp rows", md.sum(md.logsumexp(Xr, axis=1)), Xr, md.softmax(Xr, axis=1), order=2)
case("Σ logsumexp columns", md.sum(md.logsumexp(Xr, axis=0)), Xr, md.softmax(Xr, axis=0), order=2)
case("∂softmax rows/∂X", md.softmax(Xr, axis=1), Xr,
     lambda v: _row_softmax_jacobian(v["X"]), seed="002")
case("∂softmax columns/∂X", md.softmax(Xr, axis=0), Xr,
     lambda v: _row_softmax_jacobian(v["X"].T).transpose(1, 0, 3, 2))
case("wᵀ softmax(Aw)", x.T @ md.softmax(A @ x), x, order=2)
case("softmax cross-entropy over rows", -md.sum(M("Y", "n", "k") * md.log(md.softmax(Xr, axis=1))) / 4,
     Xr, (md.softmax(Xr, axis=1) - M("Y", "n", "k")) / 4, sizes={"n": 4},
     prepare=lambda v: {**v, "Y": np.abs(v["Y"]) / np.abs(v["Y"]).sum(1, keepdims=True)}, seed="002")


def _row_softmax_jacobian(Xv):
    e = np.exp(Xv - Xv.max(1, keepdims=True))
    sm = e / e.sum(1, keepdims=True)
    n, k = Xv.shape
    out = np.zeros((n, k, n, k))
    for i in range(n):
        out[i, :, i, :] = np.diag(sm[i]) - np.outer(sm[i], sm[i])
    return out


# ----------------------------------------------------------------------------- Kronecker
Bm = M("B", "m", "m")
case("Σ kron(A, B) by A", md.sum(md.kron(A, Bm)), A, md.sum(Bm) * md.ones("n", "n"))
case("aᵀ kron(A, B) b", md.vector("p", md.kron(A, Bm).shape[0]).T @ md.kron(A, Bm)
     @ md.vector("q", md.kron(A, Bm).shape[0]), Bm, order=2)
case("∂kron(x, y)/∂x", md.kron(x, V("z", "m")), x,
     lambda v: np.einsum("ip,j->ijp", np.eye(len(v["x"])), v["z"]).reshape(-1, len(v["x"])))
case("∂kron(A, B)/∂B", md.kron(A, Bm), Bm)
case("‖kron(A, B)‖²", md.norm(md.kron(A, Bm)) ** 2, A, 2 * md.sum(Bm * Bm) * A)

# ----------------------------------------------------------------------------- abstract functions
case("Σ σ(XW) by W", md.sum(sigma(Xr @ W)), W, Xr.T @ sigma.derivative(Xr @ W), order=2, seed="000")
case("Σ σ(XW) by X", md.sum(sigma(Xr @ W)), Xr, sigma.derivative(Xr @ W) @ W.T, seed="000")
case("λ(σ(XW)) by W", lam(sigma(Xr @ W)), W,
     Xr.T @ (lam.gradient(sigma(Xr @ W)) * sigma.derivative(Xr @ W)), order=2, seed="000")
case("λ(σ(XW)) by X", lam(sigma(Xr @ W)), Xr,
     (lam.gradient(sigma(Xr @ W)) * sigma.derivative(Xr @ W)) @ W.T, order=2, seed="000")
case("g(f(X))", md.sum(g_(f_(X))), X, g_.derivative(f_(X)) * f_.derivative(X), order=2, seed="001")
case("g(f(Xᵀ)) (transposed argument)", md.sum(g_(f_(Xr.T)) @ V("v", "n")), Xr,
     md.diag(V("v", "n")) @ (g_.derivative(f_(Xr.T)) * f_.derivative(Xr.T)).T, seed="001")
case("Σ σ(Xw) Hessian", md.grad(md.sum(sigma(Xr @ w)), w), w,
     Xr.T @ md.diag(sigma.derivative(Xr @ w, 2)) @ Xr)
case("λ(X)", lam(X), X, lam.gradient(X), order=2)
case("λ(Aᵀ)", lam(A.T), A, lam.gradient(A.T).T, order=2)
case("softsign (given derivative)",
     md.sum(md.function("softsign", derivative=lambda z: 1 / (1 + md.abs(z)) ** 2,
                        numpy=lambda z: z / (1 + np.abs(z)))(x)),
     x, 1 / (1 + md.abs(x)) ** 2)

# ----------------------------------------------------------------------------- Jacobians of matrices
case("∂XW/∂X", Xr @ W, Xr, lambda v: np.einsum("ip,qj->ijpq", np.eye(v["X"].shape[0]), v["W"]),
     seed="001")
case("∂Aᵀ/∂A", A.T, A, lambda v: np.einsum("iq,jp->ijpq", *(np.eye(len(v["A"])),) * 2),
     seed="001")
case("∂WX/∂W (Y = WX)", M("W", "m", "n") @ Xr, M("W", "m", "n"),
     lambda v: np.einsum("ip,qj->ijpq", np.eye(v["W"].shape[0]), v["X"]), seed="003")
case("∂f(Wx)/∂W", f_(M("W", "m", "n") @ x), M("W", "m", "n"),
     md.einsum("i,ip,q->ipq", f_.derivative(M("W", "m", "n") @ x), md.eye("m"), x), seed="003")
case("∂xxᵀ/∂x", x @ x.T, x, lambda v: np.einsum("ip,j->ijp", np.eye(len(v["x"])), v["x"])
     + np.einsum("i,jp->ijp", v["x"], np.eye(len(v["x"]))), order=2, seed="002")
case("∂AX/∂X", A @ Xr, Xr, lambda v: np.einsum("ip,qj->ijpq", v["A"], np.eye(v["X"].shape[1])))
case("∂σ(Xw)/∂w", md.sigmoid(Xr @ w), w,
     md.diag(md.sigmoid(Xr @ w) * (1 - md.sigmoid(Xr @ w))) @ Xr, order=2)
case("∂Z/∂A for Z = WᵀA", M("W", "m", "n").T @ V("A", "m"), V("A", "m"),
     M("W", "m", "n").T, seed="004")
case("∂Z/∂W for Z = WᵀA", M("W", "m", "n").T @ V("A", "m"), M("W", "m", "n"),
     lambda v: np.einsum("ip,q->iqp", np.eye(v["W"].shape[1]), v["A"]), seed="004")
case("∂A/∂Z for A = f(Z)", f_(V("Z", "n")), V("Z", "n"), md.diag(f_.derivative(V("Z", "n"))),
     seed="004")
case("∂A/∂Z for A = tanh(Z)", md.tanh(V("Z", "n")), V("Z", "n"),
     md.diag(1 - md.tanh(V("Z", "n")) ** 2), seed="004")
case("∂(x ⊙ y)/∂x", x * y, x, md.diag(y))
case("∂ outer(x, y)/∂y", md.outer(x, V("z", "m")), V("z", "m"),
     lambda v: np.einsum("i,jp->ijp", v["x"], np.eye(len(v["z"]))))
case("∂ s·x/∂s", s * x, s, x)
case("∂ diag(x)/∂x", md.diag(x), x, lambda v: np.einsum("ij,jp->ijp", *(np.eye(len(v["x"])),) * 2))

# ----------------------------------------------------------------------------- tensors
case("Σ T ⊙ T", md.sum(T3 * T3), T3, 2 * T3)
case("∂ T·w/∂T", md.einsum("ijk,j->ik", T3, w), T3)
case("T(a, w, z)", md.einsum("ijk,i,j,k->", T3, a, w, V("z", "m")), T3,
     lambda v: np.einsum("i,j,k->ijk", v["a"], v["w"], v["z"]))
case("Σ T³ Hessian", md.sum(md.sin(T3)), T3, order=2)

# ----------------------------------------------------------------------------- structure, misc
case("Σ diag(x) A", md.sum(md.diag(x) @ A), x, md.sum(A, axis=1))
case("tr diag(x) A", md.trace(md.diag(x) @ A), x, md.diag(A))
case("Σ diag A", md.sum(md.diag(A)), A, I)
case("Σ (1ᵀX)²", md.sum(md.sum(Xr, axis=0) ** 2), Xr, 2 * md.ones("n") @ md.sum(Xr, axis=0))
case("Σ (X1)²", md.sum(md.sum(Xr, axis=1) ** 2), Xr, 2 * md.sum(Xr, axis=1) @ md.ones("k").T)
case("dot(x, y)", md.dot(x, y), x, y)
case("dot(X, A)", md.dot(X, A), X, A)
case("1ᵀx", one.T @ x, x, one)
case("third derivative of Σ x⁴", md.hessian(md.sum(x ** 4), x), x,
     lambda v: np.einsum("ij,jk,k->ijk", np.eye(len(v["x"])), np.eye(len(v["x"])), 24 * v["x"]))
case("zero derivative", md.trace(A), x, lambda v: np.zeros(len(v["x"])))
case("t² s", t ** 2 * s, t, 2 * t * s, order=2)


def tanh_network(L: int):
    """‖tanh(⋯tanh(tanh(X W₁) W₂)⋯ W_L) − Y‖²_F and its weights W₁ … W_L."""
    X, Y = md.matrix("X", "N", "d"), md.matrix("Y", "N", "d")
    Ws = [md.matrix(f"W{i}", "d", "d") for i in range(1, L + 1)]
    Z = X
    for W_ in Ws:
        Z = md.tanh(Z @ W_)
    return md.norm(Z - Y) ** 2, Ws
