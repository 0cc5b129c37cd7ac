"""Property tests: random well-typed expressions whose symbolic gradient and Hessian-vector
product agree with finite differences.

Expressions are drawn by type (scalar, vectors of n and k, n×n and n×k matrices) from
every operation of the engine, up to depth 5.  Arguments of inv and logdet are kept
diagonally dominant (5I + tanh(M), n ≤ 4) so that finite differences are well conditioned.
"""
import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import matdiff as md

from .codegen_draws import typed_expressions

n, k = "n", "k"
LEAVES = {
    "S": [md.scalar("s"), md.scalar("t")],
    "Vn": [md.vector("x", n), md.vector("y", n)],
    "Vk": [md.vector("w", k)],
    "Mnn": [md.matrix("A", n, n), md.matrix("B", n, n), md.matrix("S", n, n, symmetric=True)],
    "Mnk": [md.matrix("X", n, k)],
}
SHAPES = {"S": (), "Vn": (n,), "Vk": (k,), "Mnn": (n, n), "Mnk": (n, k)}
sigma, lam = md.function("sigma"), md.scalar_function("lambda")  # checked via stand-ins
# Oscillating and exploding functions get bounded arguments: finite differences cannot
# follow sin(10⁶ s) or exp(exp(s)), whatever the engine does.
SMOOTH = [lambda e: md.sin(md.tanh(e)), lambda e: md.cos(md.tanh(e)), md.tanh, md.sigmoid,
          md.softplus, lambda e: md.exp(md.tanh(e)), lambda e: md.sqrt(1 + e * e),
          lambda e: md.tanh(e) ** 2, lambda e: e / (2 + e * e), lambda e: md.log(1 + e * e),
          lambda e: md.abs(e) * e, lambda e: md.relu(e) * e, lambda e: md.tan(md.tanh(e) / 2),
          lambda e: sigma(md.tanh(e)), lambda e: md.sign(e) * e ** 2]


def _dominant(m):
    return md.tanh(m) + 5 * md.eye(n)


def _rules(kind):
    common = [
        lambda e: e(kind) + e(kind),
        lambda e: e(kind) - e(kind),
        lambda e: e(kind) * e(kind),
        lambda e: -0.5 * e(kind),
        lambda e: e("S") * e(kind) if kind != "S" else e("S") * e("S"),
    ]
    specific = {
        "S": [lambda e: md.trace(e("Mnn")), lambda e: e("Vn").T @ e("Vn"),
              lambda e: md.sum(e("Mnk")), lambda e: md.norm(e("Vk")) ** 2,
              lambda e: md.dot(e("Mnk"), e("Mnk")), lambda e: md.logsumexp(e("Vn")),
              lambda e: md.logdet(_dominant(e("Mnn"))), lambda e: md.det(_dominant(e("Mnn"))) / 100,
              lambda e: md.sum(md.logsumexp(e("Mnk"), axis=1)), lambda e: e("Vn").T @ e("Mnk") @ e("Vk"),
              lambda e: md.sum(md.kron(e("Mnn"), e("Vk"))), lambda e: md.norm(e("Vn"), 1),
              lambda e: lam(md.tanh(e("Mnk")))],
        "Vn": [lambda e: e("Mnn") @ e("Vn"), lambda e: e("Mnk") @ e("Vk"),
               lambda e: md.softmax(e("Vn")), lambda e: md.diag(e("Mnn")),
               lambda e: md.sum(e("Mnk"), axis=1), lambda e: md.logsumexp(e("Mnn"), axis=1),
               lambda e: md.einsum("ij,jk,k->i", e("Mnn"), e("Mnk"), e("Vk"))],
        "Vk": [lambda e: e("Mnk").T @ e("Vn"), lambda e: md.sum(e("Mnk"), axis=0).T,
               lambda e: md.softmax(e("Vk"))],
        "Mnn": [lambda e: e("Mnn") @ e("Mnn"), lambda e: e("Mnn").T,
                lambda e: e("Vn") @ e("Vn").T, lambda e: md.diag(e("Vn")),
                lambda e: e("Mnk") @ e("Mnk").T, lambda e: md.inv(_dominant(e("Mnn"))),
                lambda e: md.softmax(e("Mnn"), axis=0)],
        "Mnk": [lambda e: e("Mnn") @ e("Mnk"), lambda e: e("Vn") @ e("Vk").T,
                lambda e: md.softmax(e("Mnk"), axis=1), lambda e: md.outer(e("Vn"), e("Vk"))],
    }
    return common + specific[kind] + [lambda e, f=f: f(e(kind)) for f in SMOOTH]


RULES = {kind: _rules(kind) for kind in SHAPES}


def expressions(kind="S", depth=5):
    return typed_expressions(LEAVES, RULES, kind, depth, 4)


@settings(max_examples=300)
@given(f=expressions(), pick=st.integers(0, 100), seed=st.integers(0, 2 ** 16))
def test_gradient_and_hvp_match_finite_differences(f, pick, seed):
    variables = f.variables
    if not variables:
        return
    v = variables[pick % len(variables)]
    sizes = {"n": 2 + seed % 3, "k": 1 + seed % 4}
    assert md.check(f, v, seed=seed, sizes=sizes, tol=1e-5) <= 1e-5
    # Hessian-vector product: the gradient of ⟨∇f, u⟩, checked against differences of ∇f
    u = md.tensor("u_dir", *v.shape)
    hvp_source = md.dot(md.grad(f, v), u)
    assert md.check(hvp_source, v, seed=seed + 1, sizes=sizes, tol=1e-5) <= 1e-5


def test_generator_reaches_every_operation():
    """The strategy can produce each rule; guards against a rule list silently shrinking."""
    assert sum(len(r) for r in RULES.values()) >= 60
    e = RULES["S"][7](lambda kind: LEAVES[kind][0])  # det of a dominant matrix
    assert np.isfinite(md.check(e, LEAVES["Mnn"][0]))


# a call whose argument is a constant tensor: 0, 1, 5I, −(1/2)1, 2·1
CONSTANT_ARGUMENT = r"\([−-]?(\(\d+/\d+\)|\d+·?)?[01I][,)]|\(\d+I[,)]"


def _values(e, sizes, seed):
    from matdiff.check import _stand_ins
    from matdiff.evaluate import variables as node_vars

    rng = np.random.default_rng(seed)
    vs = node_vars(e.node, *e.scope)
    values = {}
    for v in vs:
        a = rng.standard_normal(tuple(sizes.get(d, d) for d in v.shape))
        values[v.name] = (a + a.T) / 2 if getattr(v, "symmetric", False) else a
    return values, _stand_ins(e.node)


def _read_back_agrees(d, back, sizes, seed, text=""):
    from matdiff.evaluate import variables as node_vars

    values, functions = _values(d, sizes, seed)
    used = {v.name for v in node_vars(back.node)}
    want = d.evaluate(values, functions, sizes=sizes)
    got = back.evaluate({k: v for k, v in values.items() if k in used}, functions, sizes=sizes)
    np.testing.assert_allclose(np.asarray(got).reshape(np.shape(want)), want, rtol=1e-8, atol=1e-10,
                               err_msg=f"{d} read back from {text or 'its repr'}")


@settings(max_examples=80, deadline=None)
@given(f=expressions(), pick=st.integers(0, 100), seed=st.integers(0, 2 ** 16))
def test_printed_text_and_repr_of_results_read_back_to_the_same_value(f, pick, seed):
    """Every printed notation that can be read is read back: the text by the matdiff dialect,
    the matrixcalculus and NumPy dialects' texts by those dialects, repr as Python; each gives
    the value of the expression and of its gradient."""
    from matdiff.parse import declarations
    variables = f.variables
    if not variables:
        return
    v = variables[pick % len(variables)]
    sizes = {"n": 2 + seed % 3, "k": 1 + seed % 4}
    for d in (f, md.grad(f, v)):
        text = str(d)
        if "[" in text or "Σ" in text:  # index notation is for reading only
            continue
        try:
            back = md.parse(text, dialect="matdiff", result_shape=d.shape, **declarations(d))
        except md.MatdiffError as e:  # det(5I), logsumexp(0, axis=1): the text has no size
            # for the constant; refused, never misread
            assert any(m in str(e) for m in ("not fixed by its use", "a scalar has no axes",
                                              "does not fix the size")) or \
                re.search(CONSTANT_ARGUMENT, text), (text, e)
            back = None
        if back is not None:
            _read_back_agrees(d, back, sizes, seed, text)
        for short, dialect in (("mc", "matrixcalculus"), ("numpy", "numpy")):
            try:  # the input dialects: written where they can say it, and then read back
                written = d.text(short)
            except md.NotSupportedError:
                continue
            try:
                back = md.parse(written, dialect=dialect, result_shape=d.shape, **declarations(d))
            except md.MatdiffError as e:  # as above: a constant whose size the text leaves open
                assert "not fixed by its use" in str(e) or "size" in str(e), (written, e)
                continue
            _read_back_agrees(d, back, sizes, seed, written)
        scope = {"md": md, "sigma": sigma, "lambda_": lam}
        for x in d.variables:
            scope[x.node.name] = x
        code = repr(d).replace("lambda(", "lambda_(").replace("lambda.", "lambda_.")
        if "<" in code:  # no API constructor for this tensor: said so in the text
            continue
        _read_back_agrees(d, md.expr.lift(eval(code, scope)), sizes, seed)
