"""The element-wise normal form of the presentation algebra (present.py, issue 20) never
changes a value where the input is defined.

Hypothesis draws element-wise expressions over vectors as notation trees — sums with
coefficients, ⊙, numeric multiples, integer powers (negative ones too), fractional powers
of positive expressions, σ(±u), 1 − σ(u), exp, log, tanh, softplus, relu, step, |u|,
sign, and a factor met with its own reciprocal — and checks, at random points where the
drawn expression is finite, that the form ``present.simplest`` chooses has the same value
(by an evaluator of notation independent of matdiff's), that it is never costlier, and
that its printed text reads back through the matdiff dialect to that value too.  The range
analysis is checked against the values it bounds.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import matdiff as md
from matdiff import notation as N
from matdiff import present as P
from matdiff.functions import fn

from . import notation_eval
from .codegen_draws import typed_expressions

SIZES = {"n": 4}


def _var(name):
    return N.Sym("c", name, "var", False, ("n",))


x, y, p = _var("x"), _var("y"), _var("p")  # p is positive
ONE = N.Sym("c", "1", "one", False, ("n",))


def call(name, u):
    return N.Call("c", name, u, fn=fn(name))


def plus(*terms):
    return N.Add("c", tuple(terms))


def neg(u):
    return N.Prod("c", -1.0, (u,))


def positive(u):  # expressions > 0 by structure, to divide by and take roots of
    return [call("exp", call("tanh", u)), call("sigmoid", u), plus((1.0, ONE), (1.0, N.Pow("c", u, 2.0))), p]


COEFS = [1.0, -1.0, 2.0, 0.5, -3.0]
LEAVES = {"v": [x, y, p, ONE]}
RULES = {"v": [
    lambda e: plus((1.0, e("v")), (1.0, e("v"))),
    lambda e: plus((1.0, e("v")), (-1.0, e("v"))),
    lambda e: plus((2.0, e("v")), (-0.5, e("v")), (1.0, e("v"))),
    lambda e: N.Had("c", (e("v"), e("v"))),
    lambda e: N.Had("c", (e("v"), e("v"), e("v"))),
    lambda e: N.Prod("c", 2.0, (e("v"),)),
    lambda e: N.Prod("c", -0.5, (e("v"),)),
    lambda e: N.Pow("c", e("v"), 2.0),
    lambda e: N.Pow("c", e("v"), 3.0),
    lambda e: N.Had("c", (e("v"), N.Pow("c", positive(e("v"))[0], -1.0))),  # ⊘ a positive
    lambda e: N.Had("c", (e("v"), N.Pow("c", positive(e("v"))[2], -2.0))),
    lambda e: N.Pow("c", positive(e("v"))[2], -0.5),
    lambda e: N.Pow("c", positive(e("v"))[1], 1.5),
    lambda e: N.Had("c", (N.Pow("c", p, 0.5), N.Pow("c", p, -1.5), e("v"))),
    lambda e: (lambda u: N.Had("c", (u, e("v"), N.Pow("c", u, -1.0))))(e("v")),  # u ⊙ v ⊘ u
    lambda e: (lambda u: N.Had("c", (u, u, N.Pow("c", u, -2.0))))(e("v")),
    lambda e: call("sigmoid", e("v")),
    lambda e: call("sigmoid", neg(e("v"))),
    lambda e: plus((1.0, ONE), (-1.0, call("sigmoid", e("v")))),
    lambda e: (lambda u: N.Had("c", (call("sigmoid", u), plus((1.0, ONE), (-1.0, call("sigmoid", u))))))(e("v")),
    lambda e: plus((1.0, ONE), (-1.0, N.Pow("c", call("tanh", e("v")), 2.0))),
    lambda e: call("exp", call("tanh", e("v"))),
    lambda e: call("log", positive(e("v"))[2]),
    lambda e: call("softplus", e("v")),
    lambda e: call("tanh", e("v")),
    lambda e: call("relu", e("v")),
    lambda e: (lambda u: N.Had("c", (call("relu", u), call("step", u), e("v"))))(e("v")),
    lambda e: N.Had("c", (call("step", e("v")), call("step", e("v")))),
    lambda e: call("abs", e("v")),
    lambda e: call("abs", positive(e("v"))[1]),
    lambda e: N.Had("c", (call("sign", e("v")), e("v"))),
]}


def expressions(depth=4):
    return typed_expressions(LEAVES, RULES, "v", depth, 2)


def _points(seeds=3):
    out = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        out.append({"x": rng.normal(size=4) * 1.5, "y": rng.normal(size=4), "p": rng.uniform(0.3, 2.0, 4)})
    return out


def _value(m, env):
    with np.errstate(all="ignore"):
        return np.asarray(notation_eval.evaluate(m, env, SIZES, {}), dtype=float) * np.ones(4)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(expressions())
def test_the_chosen_form_has_the_value_of_the_input_wherever_that_is_defined(m):
    chosen = P.simplest(m)
    assert P.cost_of(chosen) <= P.cost_of(m) + 1e-9
    text = md.printing.render(chosen, md.printing.TEXT)
    back = md.parse(text, dialect="matdiff", result_shape=("n",), x="vector(n)", y="vector(n)", p="vector(n)")
    for env in _points():
        want = _value(m, env)
        defined = np.isfinite(want)
        if not defined.any():
            continue
        got = _value(chosen, env)
        np.testing.assert_allclose(got[defined], want[defined], rtol=1e-9, atol=1e-9,
                                   err_msg=f"{text} for {md.printing.render(m, md.printing.TEXT)}")
        used = {v.node.name for v in back.variables}
        with np.errstate(all="ignore"):
            read = np.asarray(back.evaluate({k: a for k, a in env.items() if k in used}, sizes=SIZES),
                              dtype=float) * np.ones(4)
        np.testing.assert_allclose(read[defined], want[defined], rtol=1e-9, atol=1e-9, err_msg=f"{text!r} read back")


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(expressions())
def test_every_class_lies_in_its_range(m):
    """The range analysis bounds every class it has a range for: every value of every
    subexpression at random points lies in it (where it is defined)."""
    g = P.EGraph()
    seen: dict = {}
    P.ingest(g, m, seen)
    P.saturate(g)
    nodes: dict = {}
    stack = [m]
    while stack:
        node = stack.pop()
        nodes[id(node)] = node
        stack.extend(N.children(node))
    for env in _points():
        for key, cid in seen.items():
            lo, lo_open, hi, hi_open = g.range[g.find(cid)]
            v = _value(nodes[key], env)
            v = v[np.isfinite(v)]
            assert np.all(v > lo if lo_open else v >= lo - 1e-12 * abs(lo)), (nodes[key], lo, v)
            assert np.all(v < hi if hi_open else v <= hi + 1e-12 * abs(hi)), (nodes[key], hi, v)


def test_the_range_analysis_knows_the_signs_the_rules_need():
    g = P.EGraph()
    cls = {name: P.ingest(g, m, {}) for name, m in {
        "σ": call("sigmoid", x), "1 − σ": plus((1.0, ONE), (-1.0, call("sigmoid", x))),
        "exp": call("exp", x), "softplus": call("softplus", x), "x²": N.Pow("c", x, 2.0),
        "‖x‖": N.Call("s", "norm", x), "σ ⊙ exp": N.Had("c", (call("sigmoid", x), call("exp", y))),
        "x": x, "tanh": call("tanh", x), "x³": N.Pow("c", x, 3.0)}.items()}
    g.rebuild()
    rng = lambda name: g.range[g.find(cls[name])]  # noqa: E731
    assert rng("σ") == (0.0, True, 1.0, True)
    assert rng("1 − σ") == (0.0, True, 1.0, True)
    for name in ("exp", "softplus", "σ ⊙ exp"):
        assert P._positive_range(g, cls[name]), name
    for name in ("x²", "‖x‖"):
        assert P._nonnegative(g, cls[name]) and not P._positive_range(g, cls[name]), name
    for name in ("x", "tanh", "x³"):
        assert not P._nonnegative(g, cls[name]), name


def test_cancelling_never_invents_a_value_where_the_input_had_none():
    """(x − x) ⊘ (x − x) is 0/0: its factors do not cancel to 1, and the engine refuses it;
    x ⊘ x, which holds x⁻¹, is 1 where it is defined."""
    zero = plus((1.0, x), (-1.0, x))
    m = N.Had("c", (zero, N.Pow("c", zero, -1.0)))
    chosen = P.simplest(m)
    assert not np.any(np.isfinite(_value(chosen, _points()[0])))
    with pytest.raises(md.MatdiffError, match="not finite"):
        xv = md.vector("x", "n")
        str((xv - xv) / (xv - xv))
    assert md.printing.render(P.simplest(N.Had("c", (x, N.Pow("c", x, -1.0)))), md.printing.TEXT) == "1"


@pytest.mark.parametrize("typed,text", [
    (lambda u: md.abs(md.sigmoid(u)), "σ(u)"),
    (lambda u: md.abs(md.exp(u)), "exp(u)"),
    (lambda u: md.abs(u), "|u|"),
    (lambda u: md.relu(md.softplus(u)), "softplus(u)"),
    (lambda u: md.relu(u) * md.step(u), "relu(u)"),
    (lambda u: md.sqrt(md.sigmoid(u) ** 2), "σ(u)"),
    (lambda u: md.sqrt(u ** 2), "√(u^∘2)"),  # |u|: u's sign is not known
    (lambda u: md.sqrt(md.norm(u) ** 6), "‖u‖³"),
])
def test_identities_that_need_a_sign_apply_where_the_sign_is_known(typed, text):
    u = md.vector("u", "n")
    e = typed(u)
    assert str(e) == text
    rng = np.random.default_rng(0)
    uv = rng.normal(size=5)
    back = md.parse(text, dialect="matdiff", u="vector(n)", result_shape=e.shape)
    np.testing.assert_allclose(back.evaluate(u=uv), e.evaluate(u=uv), rtol=1e-12)


@pytest.mark.parametrize("typed,text", [
    # the inner sum u − v stays whole in the numerator: 4(u² − 2uv + v²) would be longer
    (lambda u, v: 4 / 3 / (1 + (u - v) ** 2 / 3) - 8 / 9 * (u - v) ** 2 / (1 + (u - v) ** 2 / 3) ** 2,
     "(12·1 − 4(u − v)^∘2) ⊘ ((u − v)^∘2 + 3·1)^∘2"),
    (lambda u, v: 0.5 / v - 0.5 * u ** 2 / v ** 2, "(1/2)(v − u^∘2) ⊘ v^∘2"),
    (lambda u, v: 2 / (u ** 2 + 4) - u ** 2 / (u ** 2 + 4) ** 2, "(u^∘2 + 8·1) ⊘ (u^∘2 + 4·1)^∘2"),
])
def test_terms_over_a_common_denominator_with_fractions_cleared(typed, text):
    u, v = md.vector("u", "n"), md.vector("v", "n")
    e = typed(u, v)
    assert str(e) == text
    rng = np.random.default_rng(1)
    uv, vv = rng.normal(size=5), rng.uniform(0.5, 2, 5)
    values = {k: x for k, x in {"u": uv, "v": vv}.items() if k in {w.node.name for w in e.variables}}
    back = md.parse(text, dialect="matdiff", u="vector(n)", v="vector(n)", result_shape=e.shape)
    np.testing.assert_allclose(back.evaluate(**values), e.evaluate(**values), rtol=1e-12)
