"""A seeded random sweep of the presentation e-graph's speed paths (issue 24), each checked
against the slow path it stands for, on the gradients of random expressions (element-wise
parts with σ, tanh, relu and its step, products, transposes, inverses, traces):

- ``KINDS``: ``saturate`` does not call a rule on a kind of term it returns nothing for at
  once (xᵀx = ‖x‖² on a matrix product, the element-wise normal form on a scalar);
- ``REDUCE_SHORTCUT``: ``_reduced`` keeps each monomial as it is in a graph without step(u);
- ``NORMAL_SHORTCUT``: the element-wise normal form of a sum already in its normal form (a
  class's only term, distinct atoms with coefficients 1 then −1) is the sum's own class, its
  polynomial not computed (``_plain_sum``);
- ``_product``, the range of x·y written out for its four endpoint pairs, against the loop
  it replaced, over special values (±∞, ±0, NaN, open and closed ends);
- ``_poly``'s per-round memo: a class's element-wise polynomial, asked after others, is the
  one computed with the memo cleared.

With each path on and off, the saturated graph is the same (classes, ids, terms, the term
index, shapes, symmetry, ranges) and ``simplest`` chooses the same tree; every gradient
printed is checked against central differences of its expression."""
import itertools
import random

import numpy as np
import pytest

import matdiff as md
from matdiff import notation as N
from matdiff import present as P
from matdiff.functions import fn
from matdiff.recognise import recognise
from matdiff.simplify import simplify

from . import notation_eval

A, B = md.matrix("A", "n", "n"), md.matrix("B", "n", "n")
S = md.matrix("S", "n", "n", symmetric=True)
x, y = md.vector("x", "n"), md.vector("y", "n")
SIZES = {"n": 3}
SEEDS = 80


def _vector(r, depth):
    """A random column of the grammar (element-wise parts and products)."""
    if depth == 0 or r.random() < 0.25:
        return r.choice([x, y, A @ x, S @ y])
    u, v = _vector(r, depth - 1), _vector(r, depth - 1)
    m = r.choice([A, B, S, A.T, B.T])
    return r.choice([lambda: u + v, lambda: u - 2 * v, lambda: u * v, lambda: u * u, lambda: m @ u,
                     lambda: md.sigmoid(u), lambda: md.tanh(u), lambda: md.relu(u), lambda: md.relu(u) * u,
                     lambda: 1 - md.sigmoid(u), lambda: (A @ B).T @ u, lambda: (m + m.T) @ u,
                     lambda: u ** 2 - v, lambda: md.sigmoid(u) - v, lambda: u - 3 * (m @ v)])()


def _scalar(r):
    u, v = _vector(r, 2), _vector(r, 2)
    return r.choice([lambda: u.T @ v, lambda: md.sum(u * u), lambda: md.norm(u) ** 2, lambda: md.sum(u),
                     lambda: u.T @ A @ v, lambda: md.trace(md.outer(u, v) @ A), lambda: md.sum(md.relu(u) * v)])()


def _values(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((3, 3))
    return {"A": np.eye(3) + 0.3 * rng.standard_normal((3, 3)), "B": np.eye(3) + 0.3 * rng.standard_normal((3, 3)),
            "S": np.eye(3) + 0.2 * (q + q.T), "x": rng.standard_normal(3), "y": rng.standard_normal(3)}


def _central(f, values, name, h=1e-6):
    """∂f/∂(name) by central differences."""
    used = {u.node.name for u in f.variables}
    values = {k: val for k, val in values.items() if k in used}
    base = values[name]
    out = np.zeros_like(base)
    for i in np.ndindex(base.shape):
        step = np.zeros_like(base)
        step[i] = h
        hi = float(f.evaluate({**values, name: base + step}, sizes=SIZES))
        lo = float(f.evaluate({**values, name: base - step}, sizes=SIZES))
        out[i] = (hi - lo) / (2 * h)
    return out


def _sweep():
    """(seed, expression, variable, notation tree of its gradient) over the seeds."""
    out = []
    for seed in range(SEEDS):
        r = random.Random(seed)
        try:
            f = _scalar(r)
            v = r.choice([x, A])
            d = md.grad(f, v)
        except md.MatdiffError:
            continue
        m = recognise(simplify(d.node))
        if not isinstance(m, N.Index) and N.children(m):
            out.append((seed, f, v, m))
    return out


def _state(g: P.EGraph, rounds: int):
    """Everything saturation leaves in a graph (NaN bounds as text, so equal graphs compare
    equal)."""
    def bound(b):
        return "nan" if isinstance(b, float) and b != b else b
    return (rounds, [g.find(i) for i in range(len(g.parent))], {c: frozenset(ts) for c, ts in g.nodes.items()},
            dict(g.memo), dict(g.sym), {c: tuple(map(bound, r)) for c, r in g.range.items()}, dict(g.dims),
            {c: g.ordered(c) for c in g.nodes})


def _saturated(m):
    g = P.EGraph()
    root = P.ingest(g, m, {})
    g.rebuild()
    root = g.find(root)
    return g, _state(g, P.saturate(g, root=root, cost=P.length))


@pytest.fixture(scope="module")
def sweep():
    return _sweep()


def test_speed_paths_build_the_graphs_and_choose_the_forms_of_the_slow_paths(sweep, monkeypatch):
    assert len(sweep) >= 40
    fast, steps, changed = [], 0, 0
    for seed, f, v, m in sweep:
        g, state = _saturated(m)
        P._CACHE.clear()
        fast.append((state, P.simplest(m)))
        steps += ("call", "step") in g.features
        changed += g.unions > 0
    assert steps >= 5 and changed >= 20  # both sides of ``_reduced``'s shortcut, graphs that grow
    monkeypatch.setattr(P, "REDUCE_SHORTCUT", False)
    monkeypatch.setattr(P, "NORMAL_SHORTCUT", False)
    monkeypatch.setattr(P, "KINDS", {})
    monkeypatch.setattr(P, "_LISTS", {})
    for (seed, f, v, m), (state, chosen) in zip(sweep, fast):
        _, slow = _saturated(m)
        assert slow == state, f"seed {seed}: the graph of {m} differs without the speed paths"
        P._CACHE.clear()
        assert P.simplest(m) == chosen, f"seed {seed}: {m} is written differently without the speed paths"
    P._CACHE.clear()


def test_the_chosen_forms_are_the_gradients(sweep):
    """Each chosen form evaluates (as printed) to central differences of its expression."""
    checked = 0
    for seed, f, v, m in sweep[::3]:
        P._CACHE.clear()
        chosen = P.simplest(m)
        values = _values(seed)
        with np.errstate(all="ignore"):
            got = np.asarray(notation_eval.evaluate(chosen, values, SIZES, {}), float)
        want = _central(f, values, v.node.name)
        got = np.broadcast_to(got, want.shape) if got.size == 1 else got.reshape(want.shape)
        assert np.allclose(got, want, rtol=1e-5, atol=1e-6), f"seed {seed}: {chosen}"
        checked += 1
    assert checked >= 8


def _product_reference(a, b):
    """``present._product`` as a loop over the endpoint pairs (its form before issue 24's
    speed work)."""
    values, shuts = [], []
    for p, p_open in ((a[0], a[1]), (a[2], a[3])):
        for q, q_open in ((b[0], b[1]), (b[2], b[3])):
            v = 0.0 if p == 0 or q == 0 else p * q
            values.append(v)
            shuts.append(((not p_open and not q_open) or (not p_open and p == 0) or (not q_open and q == 0))
                         and abs(v) != P.INF)
    lo, hi = min(values), max(values)
    return (lo, not any([s for v, s in zip(values, shuts) if v == lo]),
            hi, not any([s for v, s in zip(values, shuts) if v == hi]))


def test_product_range_matches_the_loop_it_replaced():
    ends = [-P.INF, -2.5, -0.0, 0.0, 1.0, P.INF, float("nan")]
    flags = list(itertools.product([False, True], repeat=2))
    for lo_a, hi_a, lo_b, hi_b in itertools.product(ends, repeat=4):
        for (oa, ca), (ob, cb) in itertools.product(flags, repeat=2):
            a, b = (lo_a, oa, hi_a, ca), (lo_b, ob, hi_b, cb)
            # repr: -0.0 and 0.0, and NaN, told apart
            assert repr(P._product(a, b)) == repr(_product_reference(a, b)), (a, b)


def _cycle():
    """relu(|y|) ⊙ step(|y|) ⊙ 2(p + (x − p)): saturation puts x and p + (x − p) in one class,
    and x − p, a term of another, expands through it (a cycle of the graph)."""
    y_, p_, x_ = (N.Sym("c", name, dims=("n",)) for name in "ypx")
    call = lambda name, u: N.Call("c", name, u, fn=fn(name))  # noqa: E731
    return N.Had("c", (call("relu", call("abs", y_)), call("step", call("abs", y_)),
                       N.Prod("c", 2.0, (N.Add("c", ((1.0, p_), (1.0, N.Add("c", ((1.0, x_), (-1.0, p_)))))),))))


def test_an_elementwise_polynomial_does_not_depend_on_what_was_expanded_before(sweep):
    """``_poly``'s per-round memo answers what the expansion made afresh would be: on each
    saturated graph, and on an element-wise cycle's graph after each round, every column
    class's polynomial, asked in a shuffled order of one memo, is the one computed with the
    memo cleared — so a rule's match adds the same terms whichever matches ran before it in
    the round (``LOCAL`` skips some).  (The memo kept the expansion of x inside that of
    x − p, where x − p is an atom, and answered it for x.)"""
    graphs = [(seed, m, _saturated(m)[0]) for seed, f, v, m in sweep]
    for rounds in (1, 2, 3):
        g = P.EGraph()
        P.ingest(g, _cycle(), {})
        g.rebuild()
        P.saturate(g, max_rounds=rounds)
        graphs.append((-rounds, _cycle(), g))
    compared = 0
    for seed, m, g in graphs:
        classes = [c for c in g.nodes if g.kind(c) == "c"]
        fresh = {}
        for c in classes:
            g.polys, ones = {}, []
            fresh[c] = (P._poly(g, c, "c", ones), sorted(ones))
        for order in (classes, random.Random(seed).sample(classes, len(classes))):
            g.polys = {}
            for c in order:
                ones = []
                assert (P._poly(g, c, "c", ones), sorted(ones)) == fresh[c], f"seed {seed}: class {c}"
                compared += 1
    assert compared > 1000, compared
