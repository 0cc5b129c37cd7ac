"""A guard for the presentation e-graph's skipped matches (issue 24), by counting, not timing:
``present.saturate`` does not run a ``LOCAL`` rule again on a term it matched the round
before where none of the term's kids' classes has moved (a ``NEAR`` rule: where none is in
``present._near``; a ``DEEP`` rule: where no class below the term's has changed). On a
few results whose graphs take several rounds, that must leave the saturated graph exactly as
matching every rule every round does (classes, ids, terms, analyses) while calling the LOCAL
rules far less often: a change that loses the skip (a rule list rebuilt without it,
``EGraph.moved`` never filled) fails here, where only ``python benchmarks/present.py
--graphs`` and the timings saw it."""
import sys

import pytest

import matdiff as md
import matdiff.expr
from matdiff import notation as N
from matdiff import present as P

n = "n"
A = md.matrix("A", "m", n)
S = md.matrix("S", n, n)
b = md.vector("b", "m")
x = md.vector("x", n)

# name, f, how; the skip leaves out 69 %, 60 % and 53 % of their LOCAL rule calls, and of those
# of NEAR (one level further down) 71 %, 68 % and 60 % (2026-12-07)
CASES = [
    ("∇‖Ax − b‖", lambda: md.norm(A @ x - b), "grad"),
    ("Hessian of (xᵀSx)²", lambda: (x.T @ S @ x) ** 2, "hessian"),
    ("Hessian of xᵀSx / xᵀx", lambda: (x.T @ S @ x) / (x.T @ x), "hessian"),
]
SKIPPED_AT_LEAST = 0.4  # of the LOCAL rules' calls, over each result's graphs
DEEP_SKIPPED_AT_LEAST = 0.2  # of the DEEP rule's (the element-wise normal form): 50 %, 44 %, 28 %


def _trees(result):
    """The (tree, rules) of every ``simplest`` call that printing ``result`` makes."""
    got, original = {}, P.simplest

    def spy(m, rules=None, cost=None):
        if not isinstance(m, N.Index) and N.children(m):
            r = rules
            if r is None and P._larger_than(m, P.NORMAL_FORM_LIMIT):
                r = P.WITHOUT_NORMAL_FORM
            got.setdefault(id(m), (m, r))
        return original(m, rules, cost)
    matdiff.expr.simplest = spy
    try:
        P._CACHE.clear()
        str(result)
    finally:
        matdiff.expr.simplest = original
    return list(got.values())


def _saturated(m, rules, local):
    """The graph of m saturated with ``local`` as the LOCAL rules, its state, and the calls of
    the rules' functions made (all, and those of ``P.LOCAL``'s)."""
    rule_codes = {r.apply.__code__ for r in P.RULES}
    local_codes = {f.__code__ for f in P.LOCAL}
    near_codes = {f.__code__ for f in P.NEAR}
    deep_codes = {f.__code__ for f in P.DEEP}
    calls = {"all": 0, "local": 0, "near": 0, "deep": 0}

    def count(frame, event, arg):
        if event == "call" and frame.f_code in rule_codes:
            calls["all"] += 1
            calls["local"] += frame.f_code in local_codes
            calls["near"] += frame.f_code in near_codes
            calls["deep"] += frame.f_code in deep_codes

    saved = P.LOCAL
    g = P.EGraph()
    P.ingest(g, m, {})
    g.rebuild()
    P.LOCAL = local
    sys.setprofile(count)
    try:
        rounds = P.saturate(g, rules)
    finally:
        sys.setprofile(None)
        P.LOCAL = saved
    state = (rounds, [g.find(i) for i in range(len(g.parent))],
             {c: frozenset(ts) for c, ts in g.nodes.items()}, dict(g.memo), dict(g.sym),
             {c: tuple("nan" if v != v else v for v in r) for c, r in g.range.items()}, dict(g.dims))
    return state, calls


@pytest.mark.parametrize("name,f,how", CASES, ids=[c[0] for c in CASES])
def test_local_rules_skip_repeated_matches_and_leave_the_graph_unchanged(name, f, how):
    result = md.grad(f(), x) if how == "grad" else md.hessian(f(), x)
    md.check(f(), x, order=2 if how == "hessian" else 1)  # the result these graphs print
    trees = _trees(result)
    assert trees, "printing made no simplest call: nothing to guard"
    skipped = every = rounds = near_skipped = near_every = deep_skipped = deep_every = 0
    for m, rules in trees:
        state, calls = _saturated(m, rules, P.LOCAL)
        full_state, full_calls = _saturated(m, rules, frozenset())
        assert state == full_state, f"{name}: skipping LOCAL matches changed the graph"
        assert full_calls["all"] - calls["all"] == full_calls["local"] - calls["local"]
        rounds = max(rounds, state[0])
        skipped += full_calls["local"] - calls["local"]
        every += full_calls["local"]
        near_skipped += full_calls["near"] - calls["near"]
        near_every += full_calls["near"]
        deep_skipped += full_calls["deep"] - calls["deep"]
        deep_every += full_calls["deep"]
    assert rounds >= 3, f"{name}: saturated in {rounds} rounds, too few to guard the skip"
    assert every and skipped >= SKIPPED_AT_LEAST * every, (
        f"{name}: {skipped} of {every} LOCAL rule calls skipped (at least "
        f"{SKIPPED_AT_LEAST:.0%} expected): the skipped-match optimisation is lost")
    assert near_every and near_skipped >= SKIPPED_AT_LEAST * near_every, (
        f"{name}: {near_skipped} of {near_every} NEAR rule calls skipped (at least "
        f"{SKIPPED_AT_LEAST:.0%} expected): the skip one level down (``present._near``) is lost")
    assert deep_every and deep_skipped >= DEEP_SKIPPED_AT_LEAST * deep_every, (
        f"{name}: {deep_skipped} of {deep_every} DEEP rule calls skipped (at least "
        f"{DEEP_SKIPPED_AT_LEAST:.0%} expected): the skip where nothing below a class changed "
        "(``present._below_changed``) is lost")


def _graph_sizes(result, monkeypatch):
    """The terms and rounds of every graph ``simplest`` saturates while ``result`` prints."""
    sizes, original = [], P.saturate

    def spy(g, *args, **kwargs):
        rounds = original(g, *args, **kwargs)
        sizes.append((g.size, rounds))
        return rounds
    monkeypatch.setattr(P, "saturate", spy)
    P._CACHE.clear()
    if hasattr(result, "_notation"):  # the notation the Expr made when it was last printed
        del result._notation
    text = str(result)
    monkeypatch.setattr(P, "saturate", original)
    P._CACHE.clear()
    return text, sizes


def test_patience_bounds_the_graph_of_the_norm_hessian(monkeypatch):
    """The Hessian of ‖Ax − b‖ (issue 24), with s = Ax − b multiplied out everywhere as it once
    was (``_distribute`` told no sum is shared): its graph grew to 1,043 terms in 8 rounds and
    finds its printed form in round 3 at 155; saturation stops once ``PATIENCE`` rounds past
    ``PATIENCE_NODES`` terms leave the root's cost as it was, with the same printed form."""
    f = md.norm(A @ x - b)
    result = md.hessian(f, x)
    md.check(f, x, order=2)
    monkeypatch.setattr(P, "_shared_sums", lambda g: [])
    text, sizes = _graph_sizes(result, monkeypatch)
    biggest, rounds = max(sizes)
    assert biggest <= 700 and rounds < P.MAX_ROUNDS, (
        f"the graph of the Hessian of ‖Ax − b‖ grew to {biggest} terms in {rounds} rounds")
    monkeypatch.setattr(P, "PATIENCE_NODES", 10 ** 9)  # saturation as it was: 8 rounds
    full_text, full_sizes = _graph_sizes(result, monkeypatch)
    assert max(full_sizes)[0] > 1.4 * biggest  # the bound cut something
    assert text == full_text


def test_the_term_cap_holds_inside_a_round(monkeypatch):
    """``MAX_NODES`` is checked while a round matches, not only after it (issue 24): a round
    that crosses the cap stops matching, so a graph ends a few terms past it, where it grew
    to 300 terms under a cap of 200 (and one corpus graph to 5,904 under 2,000).  The graph
    is the Hessian of ‖Ax − b‖'s with s = Ax − b multiplied out everywhere (see above)."""
    f = md.norm(A @ x - b)
    result = md.hessian(f, x)
    md.check(f, x, order=2)
    monkeypatch.setattr(P, "_shared_sums", lambda g: [])
    cap, capped = 200, 0
    for m, rules in _trees(result):
        g = P.EGraph()
        P.ingest(g, m, {})
        g.rebuild()
        P.saturate(g, rules, max_nodes=cap)
        assert g.size <= cap + 20, f"a graph grew to {g.size} terms under a cap of {cap}"
        capped += g.size > cap
    assert capped, "no graph reached the cap: nothing was checked"


@pytest.mark.parametrize("name,f,bound", [
    ("Hessian of ‖Ax − b‖", lambda: md.norm(A @ x - b), 100),
    ("Hessian of (xᵀSx)²", lambda: (x.T @ S @ x) ** 2, 30),
], ids=["‖Ax − b‖", "(xᵀSx)²"])
def test_a_shared_sum_is_not_multiplied_out_twice(name, f, bound, monkeypatch):
    """The Hessian of ‖Ax − b‖ holds s = Ax − b in several places, and products holding s and
    sᵀ (Aᵀssᵀ); ``_distribute`` multiplied them out over both, and the regroupings of the
    parts grew its graph to 695 terms, none of them printed (issue 24); that of (xᵀSx)², with
    (S + Sᵀ)xxᵀ(S + Sᵀ), to 100.  A sum the input uses in two places or more is now not
    distributed over in a product holding two such vectors or one such matrix twice: the
    graph stays small, and the printed form is the one the full graph found."""
    result = md.hessian(f(), x)
    md.check(f(), x, order=2)
    text, sizes = _graph_sizes(result, monkeypatch)
    monkeypatch.setattr(P, "_shared_sums", lambda g: [])
    full_text, full_sizes = _graph_sizes(result, monkeypatch)
    assert max(sizes)[0] <= bound, f"{name}: the graph grew to {max(sizes)[0]} terms"
    assert max(full_sizes)[0] > 3 * max(sizes)[0]  # the restriction cut something
    assert text == full_text


def test_a_product_holding_its_own_class_is_not_flattened_into_another(monkeypatch):
    """∂det(AXB)/∂X (issue 24): once (AXB)⁻¹ = B⁻¹X⁻¹A⁻¹ and X⁻¹ = B(AXB)⁻¹A are known, the
    class of (AXB)⁻¹ holds (AXB)⁻¹AA⁻¹, and ``_flatten_product`` put that product in place of
    (AXB)⁻¹ inside others: products one factor pair longer every round (B⁻¹BB⁻¹B(AXB)⁻¹A…),
    none ever chosen, 138 terms after 8 rounds.  Such a product is not flattened now: the
    graph stops growing before the round limit, and prints the Cookbook's det(AXB)X⁻ᵀ."""
    Am, Xm, Bm = (md.matrix(v, n, n) for v in "AXB")
    f = md.det(Am @ Xm @ Bm)
    result = md.grad(f, Xm)
    md.check(f, Xm)
    text, sizes = _graph_sizes(result, monkeypatch)
    biggest, rounds = max(sizes)
    assert biggest <= 80 and rounds < P.MAX_ROUNDS, (
        f"the graph of ∂det(AXB)/∂X grew to {biggest} terms in {rounds} rounds")
    assert text.replace(" ", "") == "det(AXB)X⁻ᵀ"
