"""The presentation algebra's cost: e-graph size and time over the derivative table, and
our own e-graph against the egglog package on the same rule subset.

Run: python benchmarks/present.py        (prints markdown tables; see docs/benchmarks.md)
Needs `pip install egglog` for the comparison (skipped without it).

The same file checks that a change to present.py changes no result (issue 24):

    python benchmarks/present.py --record before.json    # at the commit you start from
    python benchmarks/present.py --compare before.json   # after the change: exit 1 on a difference

    python benchmarks/present.py --graphs             # saturation with and without skipping
                                                      # LOCAL rules' repeated matches: exit 1
                                                      # where any graph differs

record every ``simplest(m)`` call (its input and output trees, dumped structurally) and the
printed text and LaTeX of a large corpus: every derivative of the test table (first and, for
scalars, second), their derivations, every gradient and Hessian of tests/losses.py, the
golden rows of tests/test_presentation.py, the issue's slow cases, and 300 random
expressions of the property test's grammar. ``--compare`` also prices each ``simplest``
output that differs from the record (``present.cost_of``: the length cost, each form on its
own) and counts the cheaper and the costlier ones, listing the costlier (a record made before
costs were recorded has none to compare).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import matdiff as md  # noqa: E402
from matdiff import notation as N  # noqa: E402
from matdiff import present as P  # noqa: E402
from matdiff.recognise import recognise  # noqa: E402
from matdiff.simplify import simplify  # noqa: E402
from tests.cases import CASES  # noqa: E402

# the subset both engines run: transposes, inverses, associativity, like terms
SUBSET = {"(Aᵀ)ᵀ = A", "(AB)ᵀ = BᵀAᵀ", "(A + B)ᵀ = Aᵀ + Bᵀ", "(Aᵀ)⁻¹ = (A⁻¹)ᵀ", "(A⁻¹)ᵀ = (Aᵀ)⁻¹",
          "a(bc) = abc", "cA + dA = (c + d)A"}
EGGLOG_RULES = r"""
(datatype M (V String) (T M) (Mul M M) (Add M M) (Inv M) (Scale String M) (F String M))
(rewrite (T (T a)) a)
(rewrite (T (Mul a b)) (Mul (T b) (T a)))
(rewrite (T (Add a b)) (Add (T a) (T b)))
(rewrite (Inv (T a)) (T (Inv a)))
(rewrite (T (Inv a)) (Inv (T a)))
(birewrite (Mul a (Mul b c)) (Mul (Mul a b) c))
(rewrite (Add a b) (Add b a))
(rewrite (Add a a) (Scale "2" a))
"""


def notation_of(case):
    d = md.jacobian(case.f, case.wrt)
    m = recognise(simplify(d.node))
    return None if isinstance(m, N.Index) else m


def _egglog_term(m) -> str:
    """The notation tree in the datatype above (what it has no constructor for is F)."""
    if isinstance(m, N.Sym):
        return f'(V "{m.name}")'
    if isinstance(m, N.T):
        return f"(T {_egglog_term(m.arg)})"
    if isinstance(m, N.Inv):
        return f"(Inv {_egglog_term(m.arg)})"
    if isinstance(m, N.Prod):
        terms = [_egglog_term(f) for f in m.factors]
        out = terms[0]
        for t in terms[1:]:
            out = f"(Mul {out} {t})"
        return out if m.coef == 1 else f'(Scale "{m.coef}" {out})'
    if isinstance(m, N.Add):
        terms = [t if c == 1 else f'(Scale "{c}" {t})' for c, t in ((c, _egglog_term(t)) for c, t in m.terms)]
        out = terms[0]
        for t in terms[1:]:
            out = f"(Add {out} {t})"
        return out
    kids = N.children(m)
    name = type(m).__name__ + str(getattr(m, "name", getattr(m, "p", getattr(m, "k", ""))))
    if not kids:
        return f'(V "{name}:{getattr(m, "value", "")}")'
    out = _egglog_term(kids[0])
    for k in kids[1:]:
        out = f"(Mul {out} {_egglog_term(k)})"
    return f'(F "{name}" {out})'


def _median(f, repeat=5):
    """Median CPU seconds (``time.process_time``) of f()."""
    times = []
    for _ in range(repeat):
        t = time.process_time()
        f()
        times.append(time.process_time() - t)
    return statistics.median(times)


def own_full(trees):
    print("## The e-graph over the derivative table (all rules)\n")
    sizes, rounds, times = [], [], []
    for m in trees:
        g = P.EGraph()
        root = P.ingest(g, m, {})
        rounds.append(P.saturate(g))
        P.extract(g, root)
        sizes.append(g.size)

        def run():
            g2 = P.EGraph()
            r2 = P.ingest(g2, m, {})
            P.saturate(g2)
            P.extract(g2, r2)
        times.append(_median(run))
    print(f"{len(trees)} derivatives with a matrix form.\n")
    print("| what | median | 90th percentile | max |")
    print("|---|---|---|---|")
    for name, xs, fmt in (("terms in the e-graph", sizes, "{:.0f}"), ("rounds", rounds, "{:.0f}"),
                          ("saturate + extract", [t * 1e3 for t in times], "{:.2f} ms")):
        q = np.percentile(xs, [50, 90, 100])
        print(f"| {name} | " + " | ".join(fmt.format(v) for v in q) + " |")
    print()


def _jobs(m, rules, eb):
    """The two timed jobs on one notation tree: our saturate-and-extract, and egglog's."""
    def own():
        g = P.EGraph()
        root = P.ingest(g, m, {})
        P.saturate(g, rules)
        P.extract(g, root)

    program = EGGLOG_RULES + f"(let $root {_egglog_term(m)})\n(run 8)\n(extract $root)\n"

    def egg():
        e = eb.EGraph()
        e.run_program(*e.parse_program(program))
    return own, egg


def versus_egglog(trees):
    try:
        import egglog.bindings as eb
    except ImportError:
        print("egglog is not installed: comparison skipped.\n")
        return
    rules = [r for r in P.RULES if r.name in SUBSET]
    ours, theirs = [], []
    for m in trees:
        own, egg = _jobs(m, rules, eb)
        ours.append(_median(own))
        theirs.append(_median(egg))
    print("## Our e-graph against egglog, on the same rules\n")
    print("Both build the graph from the notation tree, run at most 8 rounds of transposition,")
    print("inversion, associativity and like-term rules, and extract the smallest term.\n")
    print("| engine | median | 90th percentile | max | total |")
    print("|---|---|---|---|---|")
    for name, ts in (("present.py (Python)", ours), ("egglog 'bindings' (Rust)", theirs)):
        q = np.percentile(ts, [50, 90, 100]) * 1e3
        print(f"| {name} | {q[0]:.2f} ms | {q[1]:.2f} ms | {q[2]:.2f} ms | {sum(ts) * 1e3:.0f} ms |")
    print()


def dump(m) -> str:
    """A notation tree as text that differs wherever two trees differ (fn by its name)."""
    if isinstance(m, N.Index):
        return f"Index({m.text!r})"
    if isinstance(m, (N.Sym, N.Num)):
        return repr(m)
    fields = []
    for f in m.__dataclass_fields__:
        v = getattr(m, f)
        if isinstance(v, N.M):
            v = dump(v)
        elif isinstance(v, tuple) and f == "factors":
            v = "(" + ", ".join(dump(x) for x in v) + ")"
        elif isinstance(v, tuple) and f == "terms":
            v = "(" + ", ".join(f"{c!r}·{dump(t)}" for c, t in v) + ")"
        elif f == "fn":
            v = getattr(v, "name", v) if v is not None else None
        fields.append(f"{f}={v}")
    return f"{type(m).__name__}({', '.join(map(str, fields))})"


def _random_expressions(count=300, seed=11):
    """Expressions of the property test's grammar, drawn with a fixed seed."""
    rng = random.Random(seed)
    A, B, X = (md.matrix(s, "n", "n") for s in "ABX")
    S = md.matrix("S", "n", "n", symmetric=True)
    x, a = md.vector("x", "n"), md.vector("a", "n")

    def inverse(p):
        try:
            return md.inv(p).simplify()
        except md.MatdiffError:
            return p

    def draw(depth):
        if depth == 0 or rng.randint(0, 3) == 0:
            return rng.choice([A, B, S, X]), rng.choice([x, a])
        (p, u), (q, v) = draw(depth - 1), draw(depth - 1)
        mat = rng.choice([lambda: p @ q, lambda: p + q, lambda: p - q.T, lambda: inverse(p), lambda: p.T,
                          lambda: md.outer(u, v) + p, lambda: p @ p @ q])()
        vec = rng.choice([lambda: p @ u, lambda: u - v, lambda: u * v, lambda: q.T @ v])()
        return mat, vec

    out = []
    for n in range(count):
        mat, vec = draw(3)
        shape = rng.choice(["det", "norm", "quad", "tr", "logdet", "grad", "mat"])
        try:
            f = {"det": lambda: md.det(mat), "norm": lambda: md.norm(vec), "quad": lambda: vec.T @ mat @ vec,
                 "tr": lambda: md.trace(mat @ mat.T), "logdet": lambda: md.logdet(mat @ mat.T + S),
                 "grad": lambda: md.norm(mat @ vec), "mat": lambda: mat}[shape]()
        except md.MatdiffError:
            continue
        out.append((f"random {n} {shape}", f, x if shape == "grad" else None))
    return out


def slow_cases():
    """The results issue 24 names as slow (12–135 ms each before it)."""
    X, A = md.matrix("X", "n", "n"), md.matrix("A", "n", "n")
    S = md.matrix("Sigma", "p", "p", symmetric=True)
    x, a = md.vector("x", "n"), md.vector("a", "n")
    xp, mu = md.vector("x", "p"), md.vector("mu", "p")
    nu = md.scalar("nu")
    r = xp - mu
    t_nll = 0.5 * md.logdet(S) + (nu + 3) / 2 * md.log(1 + r.T @ md.inv(S) @ r / nu)  # p = 3
    return [
        ("multivariate-t NLL by Σ", lambda: md.grad(t_nll, S)),
        ("multivariate-t NLL by μ, Hessian", lambda: md.hessian(t_nll, mu)),
        ("det(X³) by X", lambda: md.grad(md.det(X @ X @ X), X)),
        ("det(X³) Hessian", lambda: md.hessian(md.det(X @ X @ X), X)),
        ("Hessian of ‖x − a‖", lambda: md.hessian(md.norm(x - a), x)),
        ("det(XᵀAX) by X", lambda: md.grad(md.det(X.T @ A @ X), X)),
    ]


def corpus():
    """(label, thunk giving the result's texts) for every result of the corpus."""
    import importlib

    import tests.cases
    import tests.losses
    import tests.test_presentation as TP
    out = []

    def texts(r):
        return [str(r), r.latex()]
    for c in importlib.reload(tests.cases).CASES:
        out.append((f"case {c.name}", lambda c=c: texts(md.jacobian(c.f, c.wrt))))
        if md.expr.lift(c.f).ndim == 0:
            out.append((f"case {c.name} Hessian", lambda c=c: texts(md.hessian(c.f, c.wrt))))
            out.append((f"case {c.name} derivation", lambda c=c: [str(md.derivation(c.f, c.wrt))]))
    for row in tests.losses.TABLE:
        for v in row.wrt:
            out.append((f"loss {row.name} by {v.node.name}",
                        lambda row=row, v=v: texts(md.grad(row.build(), v, facts=row.facts()))))
        if row.hessian is not None:
            out.append((f"loss {row.name} Hessian",
                        lambda row=row: texts(md.hessian(row.build(), row.wrt[0], facts=row.facts()))))
    for n, (_, f, wrt, how, _) in enumerate(TP.GOLDEN):
        out.append((f"golden {n}", lambda f=f, wrt=wrt, how=how: texts(TP._result(f, wrt, how)) +
                    [TP._result(f, wrt, how).echo()]))
    for n, (name, build, _) in enumerate(TP.EVERYDAY):
        out.append((f"everyday {name}", lambda build=build: texts(build())))
    for name, job in slow_cases():
        out.append((f"slow {name}", lambda job=job: texts(job())))
    for name, f, wrt in _random_expressions():
        out.append((name, lambda f=f, wrt=wrt: texts(md.grad(f, wrt) if wrt is not None else f) + [f.echo()]))
    return out


def record() -> dict:
    """Every result's texts and every simplest() call's input → output, over the corpus."""
    import matdiff.derivation
    import matdiff.expr
    calls: dict = {}
    costs: dict = {}  # simplest() call -> its output's length cost, priced on its own
    original = P.simplest

    def spy(m, rules=None, cost=None):
        out = original(m, rules, cost)
        key = dump(m) + (f" rules={len(rules)}" if rules is not None else "")
        calls[key] = dump(out)
        if cost is None and not isinstance(out, N.Index) and N.children(out):
            costs[key] = round(P.cost_of(out), 6)
        return out
    matdiff.expr.simplest = matdiff.derivation.simplest = spy
    results = {}
    try:
        for label, job in corpus():
            try:
                results[label] = job()
            except (md.MatdiffError, RecursionError) as e:  # what the engine refuses, recorded
                results[label] = [f"error: {type(e).__name__}: {str(e)[:200]}"]
    finally:
        matdiff.expr.simplest = matdiff.derivation.simplest = original
    return {"results": results, "simplest": calls, "costs": costs}


def compare(path: str) -> int:
    want = json.loads(Path(path).read_text())
    got = record()
    bad = 0
    for part in ("results", "simplest"):
        for key in sorted(set(want[part]) | set(got[part])):
            if want[part].get(key) != got[part].get(key):
                bad += 1
                if bad <= 20:
                    print(f"{part} differ: {key[:200]}\n  before: {str(want[part].get(key))[:300]}"
                          f"\n  after:  {str(got[part].get(key))[:300]}")
    print(f"{len(got['results'])} results, {len(got['simplest'])} simplest() calls; {bad} differ")
    # the simplest() calls that differ, by their outputs' length cost (records made before
    # costs were recorded have none): a change may print cheaper forms, never costlier ones
    was, now = want.get("costs", {}), got["costs"]
    moved = [(key, was[key], now[key]) for key in sorted(set(was) & set(now))
             if want["simplest"].get(key) != got["simplest"].get(key)]
    costlier = [x for x in moved if x[2] > x[1] + 1e-6]
    cheaper = [x for x in moved if x[2] < x[1] - 1e-6]
    for key, a, b in costlier:
        print(f"costlier: {a} -> {b}: {key[:200]}")
    if was:
        print(f"of the simplest() calls that differ: {len(cheaper)} cheaper, {len(costlier)} costlier, "
              f"{len(moved) - len(cheaper) - len(costlier)} the same cost")
    return 1 if bad else 0


def _graph_state(g: P.EGraph, rounds: int):
    """Everything saturation leaves in a graph: its classes (representatives), their terms, the
    term index, and the analyses (NaN bounds written as text, so that equal graphs compare
    equal)."""
    def bound(v):
        return "nan" if isinstance(v, float) and v != v else v
    return (rounds, [g.find(i) for i in range(len(g.parent))],
            {c: frozenset(ts) for c, ts in g.nodes.items()}, dict(g.memo), dict(g.sym),
            {c: tuple(map(bound, r)) for c, r in g.range.items()}, dict(g.dims))


def graphs() -> int:
    """Saturate the graph of every ``simplest`` call of the corpus twice, skipping the
    ``LOCAL`` rules' repeated matches (``present.saturate``) and matching everything each
    round: the graphs must be the same, class ids included (issue 24)."""
    import matdiff.derivation
    import matdiff.expr
    trees: dict = {}
    original = P.simplest

    def spy(m, rules=None, cost=None):
        if not isinstance(m, N.Index) and N.children(m):
            if rules is None and P._larger_than(m, P.NORMAL_FORM_LIMIT):
                rules = P.WITHOUT_NORMAL_FORM
            trees.setdefault((id(m), id(rules)), (m, rules))
        return original(m, rules, cost)
    matdiff.expr.simplest = matdiff.derivation.simplest = spy
    try:
        for _, job in corpus():
            try:
                job()
            except (md.MatdiffError, RecursionError):
                pass
    finally:
        matdiff.expr.simplest = matdiff.derivation.simplest = original
    local, bad = P.LOCAL, 0
    try:
        for m, rules in trees.values():
            states = []
            for skip in (local, frozenset()):
                P.LOCAL = skip
                g = P.EGraph()
                P.ingest(g, m, {})
                g.rebuild()
                states.append(_graph_state(g, P.saturate(g, rules)))
            if states[0] != states[1]:
                bad += 1
                print(f"graphs differ: {dump(m)[:200]}")
    finally:
        P.LOCAL = local
    print(f"{len(trees)} graphs; {bad} differ")
    return 1 if bad else 0


def versus_egglog_large():
    """The same comparison on the larger graphs of the issue's slow results (issue 24: does
    a compiled engine pay off once ours is indexed?)."""
    try:
        import egglog.bindings as eb
    except ImportError:
        return
    rules = [r for r in P.RULES if r.name in SUBSET]
    print("On the issue's slow results (the same rule subset; the terms are our graph's):\n")
    print("| result | terms | present.py | egglog |")
    print("|---|---|---|---|")
    for name, job in slow_cases():
        m = recognise(simplify(job().node))
        if isinstance(m, N.Index):
            continue
        g = P.EGraph()
        P.ingest(g, m, {})
        P.saturate(g, rules)
        own, egg = _jobs(m, rules, eb)
        print(f"| {name} | {g.size} | {_median(own) * 1e3:.2f} ms | {_median(egg, 3) * 1e3:.2f} ms |")
    print()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", metavar="FILE")
    parser.add_argument("--compare", metavar="FILE")
    parser.add_argument("--graphs", action="store_true")
    args = parser.parse_args()
    if args.graphs:
        sys.exit(graphs())
    if args.record:
        Path(args.record).write_text(json.dumps(record(), ensure_ascii=False, indent=0))
        return
    if args.compare:
        sys.exit(compare(args.compare))
    trees = [m for m in (notation_of(c) for c in CASES) if m is not None]
    own_full(trees)
    versus_egglog(trees)
    versus_egglog_large()


if __name__ == "__main__":
    main()
