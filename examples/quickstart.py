"""A first tour of matdiff: gradients, a Hessian, a Jacobian, each checked numerically."""
import numpy as np

import matdiff as md

X, w, y = md.matrix("X", "n", "k"), md.vector("w", "k"), md.vector("y", "n")
A, x = md.matrix("A", "n", "n"), md.vector("x", "n")

examples = {
    "∇_w ‖Xw − y‖²": (md.norm(X @ w - y) ** 2, w),
    "∇_x xᵀAx": (x.T @ A @ x, x),
    "∇_A log det A": (md.logdet(A), A),
    "∇_w Σ log(1 + exp(−y ⊙ Xw))": (md.sum(md.log(1 + md.exp(-y * (X @ w)))), w),
}
for name, (f, v) in examples.items():
    g = md.grad(f, v)
    err = md.check(f, v, kinds={"A": "invertible"})
    print(f"{name}\n    = {g}\n    checked against finite differences: relative error {err:.1e}")

H = md.hessian(md.sum(md.softplus(-y * (X @ w))), w)
rng = np.random.default_rng(0)
Xv, wv, yv = rng.normal(size=(6, 3)), rng.normal(size=3), np.sign(rng.normal(size=6))
print("Hessian of the logistic loss at random data:\n", H.evaluate(X=Xv, w=wv, y=yv).round(4))
print("Jacobian of softmax(x), shape", md.jacobian(md.softmax(x), x).shape)
