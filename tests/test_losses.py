"""The table of everyday losses and layers (tests/losses.py, issue 20), row by row: each
gradient and Hessian prints exactly as the table says; equals central differences of the
loss (and of the gradient) on random inputs in the loss's domain; reads back from its
printed text through the matdiff dialect to the same value; the NumPy-dialect text of the
loss parses to the same loss; and a loss on logits is finite at logits of ±1000 (float64)
and ±100 (float32) and equal to its jax.nn/optax form there."""
from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

import matdiff as md
from matdiff import notation as N
from matdiff.parse import declarations

from .losses import DECLS, TABLE

SIZES = {"n": 5, "d": 3, "c": 4, "h": 3, "t": 3, "e": 2}
IDS = [row.name for row in TABLE]


def _values(row, seed=0):
    """Random values of every variable of the row: normal, or uniform in the row's domain;
    labels as the row says; a symmetric matrix positive definite."""
    rng = np.random.default_rng(seed)
    out = {}
    for v in row.build().variables:
        name, shape = v.node.name, tuple(SIZES[d] for d in v.shape)
        kind = row.labels.get(name)
        if kind == "binary":
            out[name] = (rng.normal(size=shape) > 0) * 1.0
        elif kind == "sign":
            out[name] = np.sign(rng.normal(size=shape))
        elif kind == "simplex":
            out[name] = rng.dirichlet(np.ones(shape[0]))
        elif kind == "onehot":
            out[name] = np.eye(shape[1])[rng.integers(0, shape[1], shape[0])]
        elif name in row.domain:
            out[name] = rng.uniform(*row.domain[name], size=shape)
        elif v.node.symmetric:
            a = rng.normal(size=shape)
            out[name] = a @ a.T / shape[0] + np.eye(shape[0])
        else:
            out[name] = rng.normal(size=shape)
    return out


def _evaluate(e, values):
    names = {v.node.name for v in e.variables}
    return np.asarray(e.evaluate({k: a for k, a in values.items() if k in names}, sizes=SIZES), dtype=float)


def _direction(var, values, rng):
    d = rng.normal(size=np.shape(values[var.node.name]))
    return (d + d.T) / 2 if var.node.symmetric else d


def test_the_table_has_the_everyday_losses():
    assert len(TABLE) >= 40
    assert len({row.name for row in TABLE}) == len(TABLE)
    names = " ".join(IDS)
    for needed in ("BCE on probabilities", "BCE on logits", "log softmax", "logsumexp", "focal",
                   "label smoothing", "KL", "JS", "Poisson", "Gaussian NLL, diagonal",
                   "Gaussian NLL, full covariance", "Student-t", "hinge", "squared hinge", "Huber",
                   "pseudo-Huber", "log-cosh", "quantile", "contrastive", "triplet", "cosine",
                   "ridge", "lasso", "elastic net", "log link", "logit link", "MLP with biases",
                   "residual block", "RNN step", "attention", "layer norm"):
        assert needed in names, needed
    attention = next(row for row in TABLE if row.name == "attention")
    assert {v.node.name for v in attention.wrt} == {"Q", "K", "V"}


@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_the_gradient_and_hessian_print_as_the_table_says(row):
    f = row.build()
    assert len(row.grads) == len(row.wrt)
    facts = row.facts()
    for var, text in zip(row.wrt, row.grads):
        assert str(md.grad(f, var, facts=facts)) == text, var.node.name
    if row.hessian is not None:
        assert str(md.hessian(f, row.wrt[0], facts=facts)) == row.hessian


@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_the_derivatives_equal_central_differences(row):
    """⟨∇f, V⟩ against (f(x + hV) − f(x − hV))/2h for random directions V (symmetric for
    a symmetric variable), and H·V against the same differences of the gradient, at
    points where the row's declared facts hold."""
    f, facts = row.build(), row.facts()
    values = _values(row, seed=1)
    rng = np.random.default_rng(2)
    h = 1e-6
    for var in row.wrt:
        name = var.node.name
        g = _evaluate(md.grad(f, var, facts=facts), values)
        for _ in range(3):
            d = _direction(var, values, rng)
            up, down = ({**values, name: values[name] + s * h * d} for s in (1, -1))
            numeric = (_evaluate(f, up) - _evaluate(f, down)) / (2 * h)
            np.testing.assert_allclose(np.sum(g * d), numeric, rtol=1e-6, atol=1e-7 * (1 + np.abs(g).sum()),
                                       err_msg=f"{row.name}: ∇_{name}")
    if row.hessian is not None:
        var = row.wrt[0]
        name = var.node.name
        grad, hess = md.grad(f, var, facts=facts), _evaluate(md.hessian(f, var, facts=facts), values)
        for _ in range(3):
            d = _direction(var, values, rng)
            up, down = ({**values, name: values[name] + s * h * d} for s in (1, -1))
            numeric = (_evaluate(grad, up) - _evaluate(grad, down)) / (2 * h)
            np.testing.assert_allclose(hess @ d, numeric, rtol=1e-5, atol=1e-6 * (1 + np.abs(hess).sum()),
                                       err_msg=f"{row.name}: ∇²_{name}")


def _display_only(d) -> bool:
    """Index notation is printed for reading only."""
    stack = [d.notation()]
    while stack:
        m = stack.pop()
        if isinstance(m, N.Index):
            return True
        stack.extend(N.children(m))
    return False


@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_the_printed_text_reads_back_to_the_same_value(row):
    f, facts = row.build(), row.facts()
    values = _values(row, seed=3)
    results = [md.grad(f, var, facts=facts) for var in row.wrt] + \
        ([md.hessian(f, row.wrt[0], facts=facts)] if row.hessian is not None else [])
    for d in results:
        assert not _display_only(d), str(d)  # every row prints in matrix notation
        text = str(d)
        back = md.parse(text, dialect="matdiff", result_shape=d.shape, **declarations(d))
        np.testing.assert_allclose(_evaluate(back, values), _evaluate(d, values), rtol=1e-10, atol=1e-12,
                                   err_msg=f"{row.name}: {text!r} read back")


NUMPY_ROWS = [row for row in TABLE if row.numpy is not None]


@pytest.mark.parametrize("row", NUMPY_ROWS, ids=[row.name for row in NUMPY_ROWS])
def test_the_numpy_dialect_text_is_the_same_loss(row):
    names = set(re.findall(r"[A-Za-z_]\w*", row.numpy))
    typed = md.parse(row.numpy, dialect="numpy", **{k: v for k, v in DECLS.items() if k in names})
    f = row.build()
    assert {v.node.name for v in typed.variables} == {v.node.name for v in f.variables}
    values = _values(row, seed=4)
    np.testing.assert_allclose(_evaluate(typed, values), _evaluate(f, values), rtol=1e-12)
    for var, text in zip(row.wrt, row.grads):
        mine = next(v for v in typed.variables if v.node.name == var.node.name)
        assert str(md.grad(typed, mine, facts=row.facts())) == text


def test_at_least_the_issues_rows_are_typed_in_the_numpy_dialect():
    assert len(NUMPY_ROWS) >= 25


# --------------------------------------------------------------------------- extreme logits

STABLE = [row for row in TABLE if row.reference is not None]
EXTREME = {"n": 6, "d": 3, "c": 4}


def _extreme_values(row, scale, rng):
    """Inputs whose logits X·wrt reach ±scale (X's rows scaled so that they span the range),
    labels as the row says, and a direction u for the Hessian-vector product."""
    n, d, c = EXTREME["n"], EXTREME["d"], EXTREME["c"]
    values = {"X": rng.normal(size=(n, d)), "w": rng.normal(size=d), "W": rng.normal(size=(d, c))}
    name = row.wrt[0].node.name
    logits = values["X"] @ values[name]
    values["X"] *= scale / np.abs(logits).max()
    kind = row.labels.get("y")
    values["y"] = {"binary": (rng.normal(size=n) > 0) * 1.0, "sign": np.sign(rng.normal(size=n)),
                   "simplex": rng.dirichlet(np.ones(n)), None: rng.normal(size=n)}[kind]
    values["Y"] = np.eye(c)[rng.integers(0, c, n)]
    values["u"] = rng.normal(size=np.shape(values[name]))
    values.update({k: rng.uniform(*bounds) for k, bounds in row.domain.items() if k not in values})
    return values


def test_extreme_values_reach_the_scale_and_carry_the_labels():
    row = next(r for r in STABLE if r.name == "BCE on probabilities σ(Xw)")
    v = _extreme_values(row, 1000.0, np.random.default_rng(0))
    assert np.isclose(np.abs(v["X"] @ v["w"]).max(), 1000.0)
    assert set(np.unique(v["y"])) <= {0.0, 1.0} and v["y"].any()


@pytest.mark.filterwarnings("ignore:overflow encountered")
@pytest.mark.parametrize("dtype,scale", [(np.float64, 1000.0), (np.float32, 100.0)], ids=["float64", "float32"])
@pytest.mark.parametrize("row", STABLE, ids=[row.name for row in STABLE])
def test_losses_on_logits_are_finite_and_match_jax_at_extreme_logits(row, dtype, scale):
    """The value, gradient and Hessian-vector product at logits of ±scale, by the generated
    NumPy code in the dtype and by ``evaluate`` (float64), against the row's jax.nn/optax
    form differentiated by JAX (tests/test_stability.py's helpers)."""
    stability = pytest.importorskip("tests.test_stability")
    jax, jnp, optax = stability.jax, stability.jnp, stability.optax
    jax.config.update("jax_enable_x64", True)
    loss, wrt = row.build(), row.wrt[0]
    values = _extreme_values(row, scale, np.random.default_rng(0))
    values = {k: np.asarray(a, dtype=dtype) for k, a in values.items()}
    outputs = [loss, md.grad(loss, wrt, facts=row.facts()), md.hvp(loss, wrt, md.tensor("u", *wrt.shape))]

    def reference(v):
        return row.reference(v, jax.nn, optax)

    want = stability._reference(reference, wrt, {k: a.astype(np.float64) for k, a in values.items()},
                                jnp.float64)
    errors = [0.0] * 3 if dtype == np.float64 else \
        [float(np.max(np.abs(a - b))) for a, b in zip(stability._reference(reference, wrt, values, jnp.float32),
                                                     want)]
    fn = md.compile(outputs, backend="numpy")
    args = {p: values[p] for p in inspect.signature(fn).parameters}
    for got, ref, error, what in zip(fn(**args), want, errors, ("value", "gradient", "Hessian·u")):
        assert np.asarray(got).dtype == dtype, (what, np.asarray(got).dtype)
        stability._close(got, ref, dtype, f"{row.name}: numpy {what}", error)
    if dtype == np.float64:
        point = {k: a.astype(np.float64) for k, a in values.items()}
        for e, ref, what in zip(outputs, want, ("value", "gradient", "Hessian·u")):
            used = {x.node.name for x in e.variables}
            stability._close(e.evaluate({k: a for k, a in point.items() if k in used}, sizes=EXTREME), ref, dtype,
                             f"{row.name}: evaluate {what}")
