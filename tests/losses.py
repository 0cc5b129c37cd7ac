"""Everyday losses and layers, typed as people type them (issue 20): one table.

Each row names a loss, builds it with the Python API (and, where the NumPy dialect writes
it naturally, gives that text too, which must parse to the same expression), names the
variables to differentiate by, and gives the golden printed gradient by each of them and,
where one is used (Newton steps, Laplace approximations, GLMs), the printed Hessian by
the first.  ``domain`` bounds a variable's random values where the loss is defined only
there (probabilities in (0, 1), positive rates and variances); ``labels`` says what a
label holds.  A loss of logits Xw or XW has a ``reference``, its jax.nn/optax form (a
function of a dict of jnp arrays, jax.nn and optax), and is also evaluated at logits of
±1000 (float64) and ±100 (float32) against it.

tests/test_losses.py checks every row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import matdiff as md

# the variables every row shares: n samples, d features, c classes
X, W, Y = md.matrix("X", "n", "d"), md.matrix("W", "d", "c"), md.matrix("Y", "n", "c")
w, y = md.vector("w", "d"), md.vector("y", "n")
z, p, q, mu, v = (md.vector(s, "n") for s in ("z", "p", "q", "mu", "v"))
lam, eps = md.scalar("lam"), md.scalar("epsilon")
S = md.matrix("S", "n", "n", symmetric=True)
a, u, r = md.vector("a", "n"), md.vector("u", "n"), md.vector("r", "n")
W1, b1, w2 = md.matrix("W1", "d", "h"), md.vector("b1", "h"), md.vector("w2", "h")
A, U, hs, xs, bh, g = (md.matrix("A", "h", "h"), md.matrix("U", "h", "d"), md.vector("hs", "h"),
                       md.vector("xs", "d"), md.vector("bh", "h"), md.vector("g", "h"))
Q, K, V, G = (md.matrix(s, "t", "e") for s in "QKVG")
x = md.vector("x", "n")

DECLS = {"X": "matrix(n, d)", "W": "matrix(d, c)", "Y": "matrix(n, c)", "w": "vector(d)",
         "y": "vector(n)", "z": "vector(n)", "p": "vector(n)", "q": "vector(n)",
         "mu": "vector(n)", "v": "vector(n)", "lam": "scalar", "S": "matrix(n, n) symmetric",
         "a": "vector(n)", "u": "vector(n)", "r": "vector(n)", "W1": "matrix(d, h)",
         "b1": "vector(h)", "w2": "vector(h)", "A": "matrix(h, h)", "U": "matrix(h, d)",
         "hs": "vector(h)", "xs": "vector(d)", "bh": "vector(h)", "g": "vector(h)",
         "Q": "matrix(t, e)", "K": "matrix(t, e)", "V": "matrix(t, e)", "G": "matrix(t, e)",
         "x": "vector(n)", "epsilon": "scalar"}


@dataclass(frozen=True)
class Loss:
    name: str
    build: Callable[[], md.Expr]
    wrt: tuple
    grads: tuple                       # the golden printed gradient by each of wrt
    hessian: Optional[str] = None      # the golden printed Hessian by wrt[0]
    numpy: Optional[str] = None        # the NumPy-dialect text of the same loss
    domain: dict = field(default_factory=dict)  # name -> (low, high) of uniform values
    labels: dict = field(default_factory=dict)  # name -> "binary", "sign", "onehot", "simplex"
    facts: Callable = lambda: []       # declared facts the derivatives are taken with (md.fact)
    reference: Optional[Callable] = None  # (values, jax.nn, optax) -> the loss, stably; the
    # logits are X times wrt[0]


# stable references: functions of a dict of jnp arrays, jax.nn and optax
def R_BCE(v, nn, optax):
    return optax.sigmoid_binary_cross_entropy(v["X"] @ v["w"], v["y"]).sum()


def R_BCE_MEAN(v, nn, optax):
    return optax.sigmoid_binary_cross_entropy(v["X"] @ v["w"], v["y"]).mean()


def R_LOGISTIC(v, nn, optax):
    return nn.softplus(-v["y"] * (v["X"] @ v["w"])).sum()


def R_FOCAL(v, nn, optax):
    return optax.sigmoid_focal_loss(v["X"] @ v["w"], v["y"], gamma=2.0).sum()


def R_CE(v, nn, optax):
    return optax.softmax_cross_entropy(v["X"] @ v["W"], v["Y"]).sum()


def R_CE_ONE(v, nn, optax):
    return -(v["y"] @ nn.log_softmax(v["X"] @ v["w"]))


def R_SMOOTH(v, nn, optax):
    return optax.softmax_cross_entropy(v["X"] @ v["W"], 0.9 * v["Y"] + 0.025).sum()


def R_SMOOTH_EPS(v, nn, optax):
    c = v["Y"].shape[1]
    return optax.softmax_cross_entropy(v["X"] @ v["W"], (1 - v["epsilon"]) * v["Y"] + v["epsilon"] / c).sum()


def R_HINGE(v, nn, optax):
    return nn.relu(1 - v["y"] * (v["X"] @ v["w"])).sum()


def R_SQUARED_HINGE(v, nn, optax):
    return (nn.relu(1 - v["y"] * (v["X"] @ v["w"])) ** 2).sum()


def _s():
    return md.sigmoid(X @ w)


TABLE = [
    # ---------------------------------------------------------------- classification
    Loss("BCE on probabilities σ(Xw)",
         lambda: -(y.T @ md.log(_s()) + (1 - y).T @ md.log(1 - _s())), (w,),
         ("Xᵀ(σ(Xw) − y)",), "Xᵀdiag(σ(Xw) ⊙ (1 − σ(Xw)))X",
         numpy="-(y.T @ log(sigmoid(X @ w)) + (1 - y).T @ log(1 - sigmoid(X @ w)))",
         labels={"y": "binary"}, reference=R_BCE),
    Loss("BCE on probabilities, mean",
         lambda: -md.mean(y * md.log(_s()) + (1 - y) * md.log(1 - _s())), (w,),
         ("Xᵀ(σ(Xw) − y)/n",), "Xᵀdiag(σ(Xw) ⊙ (1 − σ(Xw)))X/n", labels={"y": "binary"}, reference=R_BCE_MEAN),
    Loss("BCE of a probability vector", lambda: -(y.T @ md.log(p) + (1 - y).T @ md.log(1 - p)), (p,),
         ("(p − y) ⊘ (p ⊙ (1 − p))",), "diag(y ⊘ p^∘2 + (1 − y) ⊘ (1 − p)^∘2)", numpy="-(y.T @ log(p) + (1 - y).T @ log(1 - p))",
         domain={"p": (0.05, 0.95)}, labels={"y": "binary"}),
    Loss("BCE on logits", lambda: md.sum(md.softplus(X @ w)) - y.T @ (X @ w), (w,),
         ("Xᵀ(σ(Xw) − y)",), "Xᵀdiag(σ(Xw) ⊙ (1 − σ(Xw)))X", numpy="sum(softplus(X @ w)) - y.T @ X @ w", labels={"y": "binary"}, reference=R_BCE),
    Loss("logistic loss, ±1 labels", lambda: md.sum(md.softplus(-y * (X @ w))), (w,),
         ("−Xᵀ(y ⊙ σ(−(y ⊙ Xw)))",), "Xᵀdiag(y^∘2 ⊙ σ(y ⊙ Xw) ⊙ (1 − σ(y ⊙ Xw)))X", numpy="sum(softplus(-y * (X @ w)))", labels={"y": "sign"}, reference=R_LOGISTIC),
    Loss("logistic loss typed with exp", lambda: md.sum(md.log(1 + md.exp(-y * (X @ w)))), (w,),
         ("−Xᵀ(y ⊙ σ(−(y ⊙ Xw)))",), None, numpy="sum(log(1 + exp(-y * (X @ w))))", labels={"y": "sign"}, reference=R_LOGISTIC),
    Loss("BCE of logits z", lambda: -(y.T @ md.log(md.sigmoid(z)) + (1 - y).T @ md.log(1 - md.sigmoid(z))),
         (z,), ("σ(z) − y",), "diag(σ(z) ⊙ (1 − σ(z)))", labels={"y": "binary"}),
    Loss("focal loss, γ = 2",
         lambda: -md.sum(y * (1 - _s()) ** 2 * md.log(_s()) + (1 - y) * _s() ** 2 * md.log(1 - _s())),
         (w,), ("Xᵀ(u^∘3 ⊙ s + 2(u ⊙ v ⊙ (u ⊙ softplus(g) ⊙ s − softplus(−Xw) ⊙ y ⊙ v)) − v^∘3 ⊙ y)  where s = 1 − y, u = σ(g), v = 1 − u, g = Xw",), None, labels={"y": "binary"}, reference=R_FOCAL),
    Loss("softmax cross-entropy via log softmax", lambda: -md.sum(Y * md.log(md.softmax(X @ W, axis=1))),
         (W,), ("Xᵀ(diag(Y1)softmax(XW, axis=1) − Y)",), None, numpy="-sum(Y * log(softmax(X @ W, axis=1)))",
         labels={"Y": "onehot"}, reference=R_CE),
    Loss("softmax cross-entropy via logsumexp",
         lambda: md.sum(md.logsumexp(X @ W, axis=1)) - md.sum(Y * (X @ W)), (W,), ("Xᵀ(softmax(XW, axis=1) − Y)",), None,
         numpy="sum(logsumexp(X @ W, axis=1)) - sum(Y * (X @ W))", labels={"Y": "onehot"}, reference=R_CE),
    Loss("softmax cross-entropy of one sample", lambda: -(y.T @ md.log(md.softmax(X @ w))), (w,),
         ("Xᵀ((1ᵀy)softmax(Xw) − y)",), "(1ᵀy)Xᵀ(diag(s) − ssᵀ)X  where s = softmax(Xw)", labels={"y": "simplex"}, reference=R_CE_ONE),
    Loss("softmax cross-entropy, rows of Y summing to 1", lambda: -md.sum(Y * md.log(md.softmax(X @ W, axis=1))),
         (W,), ("Xᵀ(softmax(XW, axis=1) − Y)",), None, numpy="-sum(Y * log(softmax(X @ W, axis=1)))",
         labels={"Y": "onehot"}, facts=lambda: [md.fact(Y @ md.ones("c"), 1)], reference=R_CE),
    Loss("softmax cross-entropy of one sample, 1ᵀy = 1", lambda: -(y.T @ md.log(md.softmax(X @ w))), (w,),
         ("Xᵀ(softmax(Xw) − y)",), "Xᵀ(diag(s) − ssᵀ)X  where s = softmax(Xw)",
         numpy="-(y.T @ log(softmax(X @ w)))", labels={"y": "simplex"}, facts=lambda: [md.fact(md.sum(y), 1)],
         reference=R_CE_ONE),
    Loss("logistic loss, y ⊙ y = 1 declared", lambda: md.sum(md.softplus(-y * (X @ w))), (w,),
         ("−Xᵀ(y ⊙ σ(−(y ⊙ Xw)))",), "Xᵀdiag(σ(y ⊙ Xw) ⊙ (1 − σ(y ⊙ Xw)))X",
         numpy="sum(softplus(-y * (X @ w)))", labels={"y": "sign"}, facts=lambda: [md.fact(y * y, 1)],
         reference=R_LOGISTIC),
    Loss("label smoothing, ε = 0.1",
         lambda: -md.sum((0.9 * Y + 0.025) * md.log(md.softmax(X @ W, axis=1))), (W,), ("Xᵀ(diag(((9/10)Y + (1/40)1)1)softmax(XW, axis=1) − (9/10)Y − (1/40)1)",), None,
         labels={"Y": "onehot"}, reference=R_SMOOTH),
    Loss("label smoothing, ε and c classes, rows of Y summing to 1",
         lambda: -md.sum(((1 - eps) * Y + eps / md.sum(md.ones("c"))) * md.log(md.softmax(X @ W, axis=1))), (W,),
         ("Xᵀ(softmax(XW, axis=1) + ε(Y − 11ᵀ/c) − Y)",), None, domain={"epsilon": (0.05, 0.2)},
         labels={"Y": "onehot"}, facts=lambda: [md.fact(Y @ md.ones("c"), 1)], reference=R_SMOOTH_EPS),
    Loss("exponential loss", lambda: md.sum(md.exp(-y * (X @ w))), (w,), ("−Xᵀ(y ⊙ exp(−(y ⊙ Xw)))",), "Xᵀdiag(y^∘2 ⊙ exp(−(y ⊙ Xw)))X",
         labels={"y": "sign"}),
    Loss("hinge", lambda: md.sum(md.relu(1 - y * (X @ w))), (w,), ("−Xᵀ(y ⊙ step(1 − y ⊙ Xw))",), None,
         numpy="sum(relu(1 - y * (X @ w)))", labels={"y": "sign"}, reference=R_HINGE),
    Loss("squared hinge", lambda: md.sum(md.relu(1 - y * (X @ w)) ** 2), (w,), ("−2Xᵀ(y ⊙ relu(1 − y ⊙ Xw))",), None,
         numpy="sum(relu(1 - y * (X @ w)) ** 2)", labels={"y": "sign"}, reference=R_SQUARED_HINGE),
    # ---------------------------------------------------------------- divergences
    Loss("KL divergence", lambda: md.sum(p * md.log(p / q)), (p, q), ("log(p ⊘ q) + 1", "−(p ⊘ q)"), "diag(1 ⊘ p)",
         numpy="sum(p * log(p / q))", domain={"p": (0.1, 1.0), "q": (0.1, 1.0)}),
    Loss("JS divergence",
         lambda: 0.5 * md.sum(p * md.log(2 * p / (p + q))) + 0.5 * md.sum(q * md.log(2 * q / (p + q))),
         (p,), ("(1/2)log(2(p ⊘ (p + q)))",), None, domain={"p": (0.1, 1.0), "q": (0.1, 1.0)}),
    Loss("entropy", lambda: -md.sum(p * md.log(p)), (p,), ("−log(p) − 1",), "−diag(1 ⊘ p)", numpy="-sum(p * log(p))",
         domain={"p": (0.1, 1.0)}),
    Loss("cross-entropy of distributions", lambda: -(p.T @ md.log(q)), (q,), ("−(p ⊘ q)",), "diag(p ⊘ q^∘2)",
         domain={"p": (0.1, 1.0), "q": (0.1, 1.0)}),
    # ---------------------------------------------------------------- likelihoods
    Loss("Poisson NLL of a rate", lambda: md.sum(v - y * md.log(v)), (v,), ("1 − y ⊘ v",), "diag(y ⊘ v^∘2)",
         numpy="sum(v - y * log(v))", domain={"v": (0.2, 2.0), "y": (0.0, 3.0)}),
    Loss("Poisson regression (GLM, log link)", lambda: md.sum(md.exp(X @ w) - y * (X @ w)), (w,),
         ("Xᵀ(exp(Xw) − y)",), "Xᵀdiag(exp(Xw))X", numpy="sum(exp(X @ w) - y * (X @ w))", domain={"y": (0.0, 3.0)}),
    Loss("Gamma regression (GLM, log link)", lambda: md.sum(y * md.exp(-(X @ w)) + X @ w), (w,),
         ("Xᵀ(1 − y ⊙ exp(−Xw))",), "Xᵀdiag(y ⊙ exp(−Xw))X", domain={"y": (0.2, 3.0)}),
    Loss("logistic regression (GLM, logit link)",
         lambda: md.sum(md.log(1 + md.exp(X @ w))) - y.T @ X @ w, (w,), ("Xᵀ(σ(Xw) − y)",), "Xᵀdiag(σ(Xw) ⊙ (1 − σ(Xw)))X",
         numpy="sum(log(1 + exp(X @ w))) - y.T @ X @ w", labels={"y": "binary"}, reference=R_BCE),
    Loss("Gaussian NLL, diagonal, by the mean",
         lambda: 0.5 * md.sum(md.log(v) + (y - mu) ** 2 / v), (mu, v), ("(μ − y) ⊘ v", "(1/2)(v − (y − μ)^∘2) ⊘ v^∘2"), "diag(1 ⊘ v)",
         numpy="0.5 * sum(log(v) + (y - mu) ** 2 / v)", domain={"v": (0.2, 2.0)}),
    Loss("Gaussian NLL, log-variance", lambda: 0.5 * md.sum(z + (y - mu) ** 2 * md.exp(-z)), (z, mu),
         ("(1/2)(1 − (y − μ)^∘2 ⊙ exp(−z))", "exp(−z) ⊙ (μ − y)"), "(1/2)diag((y − μ)^∘2 ⊙ exp(−z))"),
    Loss("Gaussian NLL, full covariance",
         lambda: 0.5 * md.logdet(S) + 0.5 * (y - mu).T @ md.inv(S) @ (y - mu), (mu, S), ("−S⁻¹(y − μ)", "(1/2)(S⁻¹ − S⁻¹(y − μ)(y − μ)ᵀS⁻¹)"), "S⁻¹",
         numpy="0.5 * logdet(S) + 0.5 * (y - mu).T @ inv(S) @ (y - mu)"),
    Loss("Student-t NLL, ν = 3", lambda: 2 * md.sum(md.log(1 + (y - mu) ** 2 / 3)), (mu,), ("4(μ − y) ⊘ (3·1 + (y − μ)^∘2)",), "diag((12·1 − 4(y − μ)^∘2) ⊘ (3·1 + (y − μ)^∘2)^∘2)",
         numpy="2 * sum(log(1 + (y - mu) ** 2 / 3))"),
    # ---------------------------------------------------------------- regression
    Loss("least squares", lambda: md.norm(X @ w - y) ** 2, (w,), ("2Xᵀ(Xw − y)",), "2XᵀX",
         numpy="norm(X @ w - y) ** 2"),
    Loss("mean squared error", lambda: md.mean((X @ w - y) ** 2), (w,), ("2Xᵀ(Xw − y)/n",), "2XᵀX/n"),  # mean is not in the NumPy dialect
    Loss("ridge", lambda: md.norm(X @ w - y) ** 2 + lam * md.norm(w) ** 2, (w,), ("2(Xᵀ(Xw − y) + lam w)",), "2(XᵀX + lam I)",
         numpy="norm(X @ w - y) ** 2 + lam * norm(w) ** 2", domain={"lam": (0.1, 2.0)}),
    Loss("lasso, smoothed", lambda: md.norm(X @ w - y) ** 2 + lam * md.sum(md.sqrt(w ** 2 + 0.01)), (w,),
         ("2Xᵀ(Xw − y) + lam(w ⊘ √(w^∘2 + (1/100)1))",), "2XᵀX + lam diag((1/100)(1 ⊘ (w^∘2 + (1/100)1)^∘(3/2)))", numpy="norm(X @ w - y) ** 2 + lam * sum(sqrt(w ** 2 + 0.01))",
         domain={"lam": (0.1, 2.0)}),
    Loss("elastic net, smoothed",
         lambda: md.norm(X @ w - y) ** 2 + lam * md.sum(md.sqrt(w ** 2 + 0.01)) + 0.5 * md.norm(w) ** 2,
         (w,), ("2Xᵀ(Xw − y) + lam(w ⊘ √(w^∘2 + (1/100)1)) + w",), "2XᵀX + lam diag((1/100)(1 ⊘ (w^∘2 + (1/100)1)^∘(3/2))) + I", domain={"lam": (0.1, 2.0)}),
    Loss("weighted least squares", lambda: (X @ w - y).T @ md.diag(v) @ (X @ w - y), (w,), ("2Xᵀ(v ⊙ (Xw − y))",), "2Xᵀdiag(v)X",
         domain={"v": (0.2, 2.0)}),
    Loss("absolute error", lambda: md.sum(md.abs(X @ w - y)), (w,), ("Xᵀsign(Xw − y)",), None,
         numpy="sum(abs(X @ w - y))"),
    Loss("Huber, δ = 1", lambda: md.sum(0.5 * r ** 2 - 0.5 * md.relu(md.abs(r) - 1) ** 2), (r,), ("r − relu(|r| − 1) ⊙ sign(r)",), None,
         numpy="sum(0.5 * r ** 2 - 0.5 * relu(abs(r) - 1) ** 2)"),
    Loss("pseudo-Huber, δ = 1", lambda: md.sum(md.sqrt(1 + (X @ w - y) ** 2) - 1), (w,), ("Xᵀ((Xw − y) ⊘ √(1 + (Xw − y)^∘2))",), "Xᵀdiag(1 ⊘ (1 + (Xw − y)^∘2)^∘(3/2))X",
         numpy="sum(sqrt(1 + (X @ w - y) ** 2) - 1)"),
    Loss("log-cosh", lambda: md.sum(md.log(md.cosh(X @ w - y))), (w,), ("Xᵀtanh(Xw − y)",), "Xᵀdiag(1 − tanh²(Xw − y))X",
         numpy="sum(log(cosh(X @ w - y)))"),
    Loss("quantile, τ = 0.3", lambda: md.sum(0.3 * md.relu(r) + 0.7 * md.relu(-r)), (r,), ("(3/10)step(r) − (7/10)step(−r)",), None,
         numpy="sum(0.3 * relu(r) + 0.7 * relu(-r))"),
    # ---------------------------------------------------------------- metric learning
    Loss("contrastive, similar pair", lambda: md.norm(a - u) ** 2, (a,), ("2(a − u)",), "2I"),
    Loss("contrastive, dissimilar pair", lambda: md.relu(1 - md.norm(a - u)) ** 2, (a,), ("−2relu(1 − ‖a − u‖)(a − u)/‖a − u‖",), None,
         domain={"a": (0.0, 0.3), "u": (0.0, 0.3)}),
    Loss("triplet", lambda: md.relu(md.norm(a - u) ** 2 - md.norm(a - r) ** 2 + 1), (a,), ("2step(‖a − u‖² − ‖a − r‖² + 1)(r − u)",), None),
    Loss("cosine similarity", lambda: a.T @ u / (md.norm(a) * md.norm(u)), (a,), ("u/(‖a‖‖u‖) − (aᵀu)a/(‖u‖‖a‖³)",), None,
         numpy="a.T @ u / (norm(a) * norm(u))"),
    Loss("cosine embedding loss", lambda: 1 - a.T @ u / (md.norm(a) * md.norm(u)), (a,), ("(aᵀu)a/(‖u‖‖a‖³) − u/(‖a‖‖u‖)",), None),
    # ---------------------------------------------------------------- layers
    Loss("MLP with biases",
         lambda: md.norm(md.tanh(X @ W1 + b1) @ w2 - y) ** 2, (W1, b1, w2), ("Xᵀ(2(S w2 − y)w2ᵀ ⊙ (1 − S^∘2))  where S = tanh(X W1 + 1 b1ᵀ)", "2(1 − tanh²(X W1 + 1 b1ᵀ))ᵀ(tanh(X W1 + 1 b1ᵀ)w2 − y) ⊙ w2", "2tanh(X W1 + 1 b1ᵀ)ᵀ(tanh(X W1 + 1 b1ᵀ)w2 − y)"), None,
         numpy="norm(tanh(X @ W1 + b1) @ w2 - y) ** 2"),
    Loss("tanh layer", lambda: md.sum(md.tanh(X @ W1 + b1)), (b1,), ("(1 − tanh²(X W1 + 1 b1ᵀ))ᵀ1",), None,
         numpy="sum(tanh(X @ W1 + b1))"),
    Loss("residual block", lambda: md.norm(hs + A @ md.tanh(hs) - g) ** 2, (A, hs), ("2(hs + A tanh(hs) − g)tanh(hs)ᵀ", "2(Aᵀ(hs + s − g) ⊙ (1 − u^∘2) + hs + s − g)  where s = Au, u = tanh(hs)"), None),
    Loss("RNN step", lambda: g.T @ md.tanh(A @ hs + U @ xs + bh), (A, U, bh), ("(g ⊙ (1 − tanh²(A hs + U xs + bh)))hsᵀ", "(g ⊙ (1 − tanh²(A hs + U xs + bh)))xsᵀ", "g ⊙ (1 − tanh²(A hs + U xs + bh))"), None,
         numpy="g.T @ tanh(A @ hs + U @ xs + bh)"),
    Loss("attention", lambda: md.sum(G * (md.softmax(Q @ K.T / 2.0, axis=1) @ V)), (V, Q, K),
         ("softmax((1/2)QKᵀ, axis=1)ᵀG", "(1/2)(GVᵀ ⊙ S − diag((GVᵀ ⊙ S)1)S)K  where S = softmax((1/2)QKᵀ, axis=1)", "(1/2)(GVᵀ ⊙ S − diag((GVᵀ ⊙ S)1)S)ᵀQ  where S = softmax((1/2)QKᵀ, axis=1)"), None, numpy="sum(G * (softmax(Q @ K.T / 2.0, axis=1) @ V))"),
    Loss("layer norm",
         lambda: a.T @ ((x - md.mean(x)) / md.sqrt(md.mean((x - md.mean(x)) ** 2) + 0.001)), (x,),
         ("αa − β(α(1ᵀa)1 + γ^(−3/2)(sᵀa)s)  where α = γ^(−1/2), β = n⁻¹, γ = β‖s‖² + 1/1000, s = x − β(1ᵀx)1",), None),
    Loss("softmax layer", lambda: a.T @ md.softmax(x), (x,), ("s ⊙ a − (sᵀa)s  where s = softmax(x)",), None, numpy="a.T @ softmax(x)"),
]
