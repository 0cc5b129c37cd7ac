"""Losses at extreme logits: finite where the mathematics is finite, and equal to the stable
references of the ecosystem (jax.nn, optax).

Each loss is typed as people type it — log(σ(Xw)), log(1 − σ(Xw)), log(softmax(XW)) —
and evaluated at logits of about ±1000 in float64 and ±100 in float32, where σ and softmax
underflow to 0 and a naive logarithm is −∞: the value, the gradient and a Hessian-vector
product, by ``evaluate`` and by the generated NumPy, JAX and PyTorch code, against the
same loss written with jax.nn and optax and differentiated by JAX.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest

import matdiff as md

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")
pytest.importorskip("torch")

X, w, y = md.matrix("X", "n", "d"), md.vector("w", "d"), md.vector("y", "n")
W, Y = md.matrix("W", "d", "c"), md.matrix("Y", "n", "c")
s = md.sigmoid(X @ w)
Z = X @ W

# name, loss, variable, reference(params: dict of jnp arrays) -> scalar, labels
LOSSES = [
    ("BCE via log σ", -(y.T @ md.log(s) + (1 - y).T @ md.log(1 - s)), w,
     lambda v: optax.sigmoid_binary_cross_entropy(v["X"] @ v["w"], v["y"]).sum(), "binary"),
    ("BCE via log σ, mean", -md.mean(y * md.log(s) + (1 - y) * md.log(1 - s)), w,
     lambda v: optax.sigmoid_binary_cross_entropy(v["X"] @ v["w"], v["y"]).mean(), "binary"),
    ("log σ", md.sum(md.log(s)), w, lambda v: jax.nn.log_sigmoid(v["X"] @ v["w"]).sum(), None),
    ("log(1 − σ)", md.sum(md.log(1 - s)), w, lambda v: jax.nn.log_sigmoid(-v["X"] @ v["w"]).sum(), None),
    ("logistic via softplus", md.sum(md.softplus(-y * (X @ w))), w,
     lambda v: jax.nn.softplus(-v["y"] * (v["X"] @ v["w"])).sum(), "sign"),
    ("focal, γ = 2", -md.sum(y * (1 - s) ** 2 * md.log(s) + (1 - y) * s ** 2 * md.log(1 - s)), w,
     lambda v: optax.sigmoid_focal_loss(v["X"] @ v["w"], v["y"], gamma=2.0).sum(), "binary"),
    ("softmax CE via log softmax", -md.sum(Y * md.log(md.softmax(Z, axis=1))), W,
     lambda v: optax.softmax_cross_entropy(v["X"] @ v["W"], v["Y"]).sum(), "onehot"),
    ("softmax CE via logsumexp", md.sum(md.logsumexp(Z, axis=1)) - md.sum(Y * Z), W,
     lambda v: optax.softmax_cross_entropy(v["X"] @ v["W"], v["Y"]).sum(), "onehot"),
    ("label-smoothed CE", -md.sum(Y * md.log(md.softmax(Z, axis=1))), W,
     lambda v: optax.softmax_cross_entropy(v["X"] @ v["W"], v["Y"]).sum(), "smooth"),
    ("log softmax of a vector", -(y.T @ md.log(md.softmax(X @ w))), w,
     lambda v: -(v["y"] @ jax.nn.log_softmax(v["X"] @ v["w"])), "simplex"),
    ("logsumexp", md.logsumexp(X @ w), w, lambda v: jax.nn.logsumexp(v["X"] @ v["w"]), None),
    ("log Σ exp, typed", md.log(md.sum(md.exp(X @ w))), w, lambda v: jax.nn.logsumexp(v["X"] @ v["w"]), None),
    ("softmax CE via log Σ exp by rows", md.sum(md.log(md.sum(md.exp(Z), axis=1))) - md.sum(Y * Z), W,
     lambda v: optax.softmax_cross_entropy(v["X"] @ v["W"], v["Y"]).sum(), "onehot"),
]


def _values(loss, wrt, labels, scale, rng):
    """Inputs whose logits reach ±scale: X's rows normalised so that Xw spans the range."""
    n, d, c = 6, 3, 4
    values = {"X": rng.normal(size=(n, d)), "w": rng.normal(size=d), "W": rng.normal(size=(d, c))}
    logits = values["X"] @ (values["w"] if wrt is w else values["W"])
    values["X"] *= scale / np.abs(logits).max()
    values["y"] = {"binary": (rng.normal(size=n) > 0) * 1.0, "sign": np.sign(rng.normal(size=n)),
                   "simplex": rng.dirichlet(np.ones(n)), None: np.zeros(n)}[labels if wrt is w else None]
    onehot = np.eye(c)[rng.integers(0, c, n)]
    values["Y"] = onehot * 0.9 + 0.1 / c if labels == "smooth" else onehot
    values["u"] = rng.normal(size=np.shape(values[wrt.node.name]))
    return values


def _reference(ref, wrt, values, dtype):
    """The loss, its gradient and H·u by JAX on the jax.nn/optax form."""
    name = wrt.node.name
    v = {k: jnp.asarray(a, dtype=dtype) for k, a in values.items()}

    def f(p):
        return ref({**v, name: p})

    grad = jax.grad(f)
    hvp = jax.jvp(grad, (v[name],), (v["u"],))[1]
    return [np.asarray(f(v[name]), dtype=np.float64), np.asarray(grad(v[name]), dtype=np.float64),
            np.asarray(hvp, dtype=np.float64)]


def _close(got, want, dtype, what, reference_error=0.0):
    """got equals the float64 reference to 1e-9 (float64), or to 1e-4 relative to the
    largest entry (float32) — or, where the quantity is ill-conditioned in float32 (an HVP
    through logits of 100 cancels terms of that size), to 16 times the error of the same
    quantity computed by JAX in float32."""
    got = np.asarray(got.detach().cpu().numpy() if hasattr(got, "detach") else got, dtype=np.float64)
    assert np.all(np.isfinite(got)), f"{what}: not finite: {got}"
    scale = max(1.0, float(np.max(np.abs(want))))
    tol = 1e-9 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(got, want, rtol=tol, atol=max(tol * scale, 16 * reference_error),
                               err_msg=what)


@pytest.mark.parametrize("dtype,scale", [(np.float64, 1000.0), (np.float32, 100.0)], ids=["float64", "float32"])
@pytest.mark.parametrize("name,loss,wrt,ref,labels", LOSSES, ids=[c[0] for c in LOSSES])
def test_losses_at_extreme_logits_are_finite_and_match_jax(name, loss, wrt, ref, labels, dtype, scale):
    jax.config.update("jax_enable_x64", True)
    values = _values(loss, wrt, labels, scale, np.random.default_rng(0))
    values = {k: np.asarray(a, dtype=dtype) for k, a in values.items()}  # the point, in the dtype
    outputs = [loss, md.grad(loss, wrt), md.hvp(loss, wrt, md.tensor("u", *wrt.shape))]
    want = _reference(ref, wrt, {k: a.astype(np.float64) for k, a in values.items()}, jnp.float64)
    errors = [0.0] * 3 if dtype == np.float64 else \
        [float(np.max(np.abs(a - b))) for a, b in zip(_reference(ref, wrt, values, jnp.float32), want)]
    for backend in ("numpy", "jax", "torch"):
        fn = md.compile(outputs, backend=backend)
        args = {p: values[p] for p in inspect.signature(fn).parameters}
        if backend == "torch":
            import torch
            args = {p: torch.from_numpy(a) for p, a in args.items()}
        for got, ref_value, error, what in zip(fn(**args), want, errors, ("value", "gradient", "Hessian·u")):
            assert str(got.dtype).endswith(np.dtype(dtype).name), (backend, what, got.dtype)
            _close(got, ref_value, dtype, f"{name}: {backend} {what}", error)
    if dtype == np.float64:  # the evaluator computes in float64
        point = {k: a.astype(np.float64) for k, a in values.items()}
        for e, ref_value, what in zip(outputs, want, ("value", "gradient", "Hessian·u")):
            used = {x.node.name for x in e.variables}
            _close(e.evaluate({k: a for k, a in point.items() if k in used}), ref_value, dtype,
                   f"{name}: evaluate {what}")


def test_logarithms_of_sigmoid_and_softmax_are_taken_in_log_space():
    """The identities that make the table finite, as the engine simplifies them."""
    u = md.vector("u", "n")
    assert str(md.log(md.sigmoid(u)).simplify()) == "−softplus(−u)"
    assert str(md.log(1 - md.sigmoid(u)).simplify()) == "−softplus(u)"
    assert "logsumexp" in str(md.log(md.softmax(u)).simplify())
    assert str(md.log(md.sum(md.exp(u))).simplify()) == "logsumexp(u)"
    rng = np.random.default_rng(1)
    uv = rng.normal(size=5) * 3
    for e, ref in [(md.log(md.sigmoid(u)), jax.nn.log_sigmoid(uv)),
                   (md.log(1 - md.sigmoid(u)), jax.nn.log_sigmoid(-uv)),
                   (md.log(md.softmax(u)), jax.nn.log_softmax(uv))]:
        np.testing.assert_allclose(e.simplify().evaluate(u=uv), np.asarray(ref), rtol=1e-6)


# log(1 + u) and exp(u) − 1 at small u: computed as log1p and expm1 (simplify.numerical_forms)
v, a = md.vector("v", "n"), md.scalar("a")
SMALL = [  # name, expression, variable, value(x), gradient(x), by NumPy's log1p and expm1
    ("log(1 + v)", md.log(1 + v), None, np.log1p, None),
    ("exp(v) − 1", md.exp(v) - 1, None, np.expm1, None),
    ("1 − exp(v)", 1 - md.exp(v), None, lambda x: -np.expm1(x), None),
    ("‖log(1 + v)‖²", md.sum(md.log(1 + v) ** 2), v, lambda x: np.sum(np.log1p(x) ** 2),
     lambda x: 2 * np.log1p(x) / (1 + x)),
    ("‖exp(v) − 1‖²", md.sum((md.exp(v) - 1) ** 2), v, lambda x: np.sum(np.expm1(x) ** 2),
     lambda x: 2 * np.expm1(x) * np.exp(x)),
    ("vᵀlog(1 + v)", v.T @ md.log(1 + v), v, lambda x: x @ np.log1p(x),
     lambda x: np.log1p(x) + x / (1 + x)),
    ("log(1 + a)²", md.log(1 + a) ** 2, a, lambda x: np.log1p(x) ** 2, lambda x: 2 * np.log1p(x) / (1 + x)),
    ("(exp(a) − 1)²", (md.exp(a) - 1) ** 2, a, lambda x: np.expm1(x) ** 2, lambda x: 2 * np.expm1(x) * np.exp(x)),
]


@pytest.mark.parametrize("dtype,size", [(np.float64, 1e-10), (np.float32, 1e-5)], ids=["float64", "float32"])
@pytest.mark.parametrize("name,e,wrt,value,gradient", SMALL, ids=[c[0] for c in SMALL])
def test_log1p_and_expm1_keep_small_arguments_exact(name, e, wrt, value, gradient, dtype, size):
    """At |u| of 1e-10 (float64) or 1e-5 (float32), 1 + u keeps only the leading digits of u:
    log(1 + u) and exp(u) − 1 computed as written err by 1e-6 (float64) and 1e-3 (float32)
    relative to the answer.  Values and gradients, in evaluate and the three backends, agree
    with NumPy's log1p and expm1 (computed in float64 at the same point) to a few units of the
    dtype's rounding; the printed form stays the one typed."""
    jax.config.update("jax_enable_x64", True)
    assert "log1p" not in str(e) and "expm1" not in str(e)
    rng = np.random.default_rng(3)
    var = wrt if wrt is not None else v
    x = rng.normal(size=() if var is a else 5) * size
    x = np.asarray(x, dtype=dtype)
    x64 = x.astype(np.float64)  # the same point, exactly
    outputs = [e] if wrt is None else [e, md.grad(e, wrt)]
    wants = [value(x64)] + ([] if wrt is None else [gradient(x64)])
    rtol = 1e-14 if dtype == np.float64 else 4e-7
    name_of = var.node.name
    for backend in ("numpy", "jax", "torch"):
        fn = md.compile(outputs, backend=backend)
        arg = x
        if backend == "torch":
            import torch
            arg = torch.from_numpy(np.atleast_1d(x)).reshape(np.shape(x))
        got = fn(**{name_of: arg})
        got = got if isinstance(got, (list, tuple)) else [got]
        for out, want in zip(got, wants):
            out = np.asarray(out.detach().numpy() if hasattr(out, "detach") else out)
            assert out.dtype == dtype, (backend, out.dtype)
            np.testing.assert_allclose(out.astype(np.float64), want, rtol=rtol, err_msg=f"{name}: {backend}")
    if dtype == np.float64:
        for out, want in zip(outputs, wants):
            np.testing.assert_allclose(out.evaluate(**{name_of: x64}), want, rtol=rtol, err_msg=f"{name}: evaluate")
    if wrt is not None:  # the derivative against central differences, away from the small point
        assert md.check(e, wrt, kinds={name_of: "positive"}) < 1e-6


def test_log1p_and_expm1_are_what_the_code_computes():
    """The generated code calls log1p and expm1 where log(1 + u) and exp(u) − 1 were typed,
    and keeps log and exp where there is no 1 to absorb."""
    for e, has, lacks in [(md.log(1 + v), "log1p(", "log("), (md.exp(v) - 1, "expm1(", "exp("),
                          (md.log(2 + v), "log(", "log1p("), (md.exp(v) - 2, "exp(", "expm1(")]:
        source = md.codegen(e)
        body = source[source.index("def f"):]
        assert has in body and lacks not in body.replace(has, ""), body


def test_bce_gradient_computes_one_sigmoid():
    """(1 − y) ⊙ σ(u) − y ⊙ σ(−u) is computed as σ(u) − y, one sigmoid as in the closed form
    (simplify._one_sigmoid); a ⊙ σ(u) + b ⊙ σ(−u) with a − b not cancelling keeps both, from
    one exponential (``_sigmoids``), and σ(u) + σ(−u) is 1.  Each against its value computed
    directly."""
    bce = -(y.T @ md.log(s) + (1 - y).T @ md.log(1 - s))
    source = md.codegen(md.grad(bce, w))
    assert source.count("_sigmoid(") == 2, source  # the helper's definition and one call
    b = md.vector("b", "n")
    t = X @ w
    rng = np.random.default_rng(4)
    values = {"X": rng.normal(size=(6, 3)) * 20, "w": rng.normal(size=3), "y": rng.normal(size=6),
              "b": rng.normal(size=6)}
    u = values["X"] @ values["w"]
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    for e, calls, want in [
            (y * md.sigmoid(t) + b * md.sigmoid(-t), 1, values["y"] * sig(u) + values["b"] * sig(-u)),
            (md.sigmoid(t) + md.sigmoid(-t), 0, np.ones(6)),
            ((1 - y) * md.sigmoid(t) - y * md.sigmoid(-t), 1, sig(u) - values["y"])]:
        source = md.codegen(e)
        body = source[source.index("def f"):]
        assert body.count("_sigmoid(") + body.count("_sigmoids(") == calls, body  # exponentials
        fn = md.compile(e)
        got = fn(**{p: values[p] for p in inspect.signature(fn).parameters})
        np.testing.assert_allclose(np.broadcast_to(got, (6,)), want, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(e.evaluate(**{k: values[k] for k in ("X", "w", "y", "b")
                                                  if k in {x.node.name for x in e.variables}}),
                                   want, rtol=1e-12, atol=1e-15)
    assert md.check(md.sum((1 - y) * md.sigmoid(t) - y * md.sigmoid(-t)), w) < 1e-6


def test_weighted_and_multilabel_bce_gradients_compute_one_sigmoid():
    """The cancellation is found through other factors and in matrices: weighted BCE's
    gradient is Xᵀ(s ⊙ (σ(Xw) − y)), multi-label BCE's Xᵀ(σ(XW) − Y); each computes one
    sigmoid, equals its closed form at logits of ±30, and passes the numerical check."""
    sw = md.vector("s", "n")
    p, P = md.sigmoid(X @ w), md.sigmoid(Z)
    rng = np.random.default_rng(5)
    vals = {"X": rng.normal(size=(6, 3)) * 10, "w": rng.normal(size=3), "W": rng.normal(size=(3, 4)),
            "y": (rng.random(6) > 0.5) * 1.0, "s": rng.random(6), "Y": (rng.random((6, 4)) > 0.5) * 1.0}
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    cases = [(-md.sum(sw * (y * md.log(p) + (1 - y) * md.log(1 - p))), w,
              vals["X"].T @ (vals["s"] * (sig(vals["X"] @ vals["w"]) - vals["y"]))),
             (-md.sum(Y * md.log(P) + (1 - Y) * md.log(1 - P)), W,
              vals["X"].T @ (sig(vals["X"] @ vals["W"]) - vals["Y"]))]
    for loss, wrt, want in cases:
        g = md.grad(loss, wrt)
        body = md.codegen(g)
        body = body[body.index("def f"):]
        assert body.count("_sigmoid(") == 1, body
        fn = md.compile(g)
        np.testing.assert_allclose(fn(**{k: vals[k] for k in inspect.signature(fn).parameters}), want,
                                   rtol=1e-12, atol=1e-12)
        assert md.check(loss, wrt) < 1e-6
