"""The presentation algebra's cost: e-graph size and time over the derivative table, and
our own e-graph against the egglog package on the same rule subset.

Run: python benchmarks/present.py        (prints markdown tables; see docs/benchmarks.md)
Needs `pip install egglog` for the comparison (skipped without it).
"""
from __future__ import annotations

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
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
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


def versus_egglog(trees):
    try:
        import egglog.bindings as eb
    except ImportError:
        print("egglog is not installed: comparison skipped.\n")
        return
    rules = [r for r in P.RULES if r.name in SUBSET]
    ours, theirs = [], []
    for m in trees:
        def own():
            g = P.EGraph()
            root = P.ingest(g, m, {})
            P.saturate(g, rules)
            P.extract(g, root)

        program = EGGLOG_RULES + f"(let $root {_egglog_term(m)})\n(run 8)\n(extract $root)\n"

        def egg():
            e = eb.EGraph()
            e.run_program(*e.parse_program(program))
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


def main():
    trees = [m for m in (notation_of(c) for c in CASES) if m is not None]
    own_full(trees)
    versus_egglog(trees)


if __name__ == "__main__":
    main()
