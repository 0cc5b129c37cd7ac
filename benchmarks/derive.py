"""Derivation speed: build, differentiate and simplify every case of the test table, the
growth with depth of a deep network's gradient, and SymPy on the cases it can do.

Run: python benchmarks/derive.py [table] [slow] [scaling] [growth] [sympy] [sympy-table] [-v]
                                        (prints markdown tables; see docs/benchmarks.md)
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import matdiff as md  # noqa: E402
from matdiff.build import is_zero  # noqa: E402
from matdiff.ir import clear_caches, dag_size  # noqa: E402
from tests.cases import tanh_network  # noqa: E402


def _clear_printing():
    from matdiff import present, recognise
    recognise._CACHE.clear()
    present._CACHE.clear()


def timed(f, repeat=7, clear=clear_caches):
    """Median CPU seconds of f(), with matdiff's memo caches cleared before each run."""
    times = []
    for _ in range(repeat):
        clear()
        t = time.process_time()  # CPU time: the machine may be shared
        f()
        times.append(time.process_time() - t)
    return statistics.median(times)


def _clear_all():
    clear_caches()
    _clear_printing()


PHASES = ("derive", "recognise", "presentation", "text + LaTeX")


def _phases(job, repeat=5):
    """CPU seconds (``time.process_time``) of each phase of one result, each the median over
    ``repeat`` runs with every memo cache cleared: derive (``job()``), recognise the matrix
    notation, choose its form (``present.simplest``, the e-graph), and print text and LaTeX
    (which then find the notation and the chosen form in their caches)."""
    from matdiff.recognise import recognise
    from matdiff.simplify import simplify
    runs = []
    for _ in range(repeat):
        _clear_all()
        t0 = time.process_time()
        d = job()
        t1 = time.process_time()
        recognise(simplify(d.node))
        t2 = time.process_time()
        d.notation()
        t3 = time.process_time()
        str(d)
        d.latex()
        t4 = time.process_time()
        runs.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))
    return [statistics.median(r[i] for r in runs) for i in range(len(PHASES))]


def _quantiles(xs) -> str:
    q = np.percentile(xs, [50, 90, 100]) * 1e3
    return " | ".join(f"{v:.2f} ms" for v in q)


def table_cases(repeat=5):
    """Every case of the test table, one result each (its first derivative) and, for scalar
    cases, its Hessian: build + derive + text + LaTeX, the presentation phase apart."""
    import importlib.util
    spec = importlib.util.find_spec("tests.cases")
    code = spec.loader.get_code("tests.cases")  # compiled here, untimed: no .pyc may be written
    module = {"__name__": "tests.cases", "__package__": "tests", "__file__": spec.origin}
    t = time.process_time()
    exec(code, module)  # building every expression of the table
    build = (time.process_time() - t) / len(module["CASES"])
    CASES = module["CASES"]
    rows = {"first derivative": [], "Hessian (scalar cases)": []}
    for c in CASES:
        rows["first derivative"].append((c.name, _phases(lambda: md.jacobian(c.f, c.wrt), repeat)))
        if md.expr.lift(c.f).ndim == 0:
            rows["Hessian (scalar cases)"].append((c.name, _phases(lambda: md.hessian(c.f, c.wrt), repeat)))
    rows["all results"] = rows["first derivative"] + rows["Hessian (scalar cases)"]
    print("## Time per result over the test table\n")
    print(f"{len(CASES)} cases; building an expression takes {build * 1e3:.3f} ms on average (CPU time),")
    print("counted in every result's total. Each phase is the median of")
    print(f"{repeat} runs with every memo cache cleared; CPU time (`time.process_time`).\n")
    print("| results | count | what | median | 90th percentile | max |")
    print("|---|---|---|---|---|---|")
    for name, results in rows.items():
        totals = [build + sum(p) for _, p in results]
        print(f"| {name} | {len(results)} | build + derive + text + LaTeX | {_quantiles(totals)} |")
        for i, phase in enumerate(PHASES):
            print(f"| | | {phase} | {_quantiles([p[i] for _, p in results])} |")
    results = rows["all results"]
    share = sum(p[2] for _, p in results) / sum(build + sum(p) for _, p in results)
    print(f"\nThe presentation phase is {share:.0%} of the total time over all results.\n")
    print("The slowest results (build + derive + text + LaTeX; presentation):\n")
    kinds = [(k, r) for k in ("first derivative", "Hessian (scalar cases)") for r in rows[k]]
    for kind, (name, p) in sorted(kinds, key=lambda x: -sum(x[1][1]))[:8]:
        print(f"- {name} ({'Hessian' if kind.startswith('H') else 'first derivative'}): "
              f"{(build + sum(p)) * 1e3:.2f} ms; {p[2] * 1e3:.2f} ms")
    print()


def slow_results(repeat=3):
    """The results issue 24 names as slow, phase by phase."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from present import slow_cases
    print("## The results issue 24 names as slow\n")
    print("| result | " + " | ".join(PHASES) + " |")
    print("|---|" + "---|" * len(PHASES))
    for name, job in slow_cases():
        p = _phases(job, repeat)
        print(f"| {name} | " + " | ".join(f"{v * 1e3:.2f} ms" for v in p) + " |")
    print()


def scaling():
    print("## Gradient of an L-layer tanh network by every weight matrix\n")
    print("`md.grad(f, [W1, …, WL])`: one reverse pass gives all L gradients.\n")
    print("| L | derivation | per layer | nodes (all gradients) | nodes per layer |")
    print("|---|---|---|---|---|")
    for L in (1, 2, 4, 8, 16, 32, 64):
        f, Ws = tanh_network(L)
        t = timed(lambda: md.grad(f, Ws), repeat=3 if L >= 32 else 5)
        size = dag_size(*(g.node for g in md.grad(f, Ws)))
        print(f"| {L} | {t * 1e3:.1f} ms | {t / L * 1e3:.2f} ms | {size} | {size / L:.1f} |")
    print()


def _slope(sizes, times) -> float:
    """The exponent b of time ≈ a·sizeᵇ, a least-squares fit on log-log axes (1 is linear)."""
    return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


def growth(issue22_only=False):
    """Families that once grew superlinearly (issue 11): each row is one size; the slope is
    the exponent fitted between the two largest sizes."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
    A, X, x = md.matrix("A", "n", "n"), md.matrix("X", "n", "n"), md.vector("x", "n")

    def nested(d):
        e = x
        for _ in range(d):
            e = md.sigmoid(e)
        return md.sum(e)

    def softmaxes(d):
        e = x
        for _ in range(d):
            e = md.softmax(e)
        return e

    def sum_of(k):
        e = md.scalar("a0") * md.sum(md.exp(x))
        for i in range(1, k):
            e = e + md.scalar(f"a{i}") * md.sum(md.exp(x))
        return e

    def chain(k):
        e = X
        for _ in range(k - 1):
            e = e @ X
        return md.trace(e)

    families = [
        ("Jacobian of the matrix power Aᵏ", (100, 400, 1600, 6400),
         lambda k: md.jacobian(md.matrix_power(A, k), A).simplify()),
        ("the same, printed in index notation", (100, 200, 400, 800),
         lambda k: str(md.jacobian(md.matrix_power(A, k), A))),
        ("Hessian of Σσ(σ(…σ(x))), depth d", (20, 40, 80, 160),
         lambda d: md.hessian(nested(d), x)),
        ("the same, printed", (10, 20, 40),
         lambda d: str(md.hessian(nested(d), x))),
        ("md.codegen of ∇tr(X·X·…·X), k factors", (32, 64, 128, 256),
         lambda k: md.codegen(md.grad(chain(k), X))),
        ("md.derivation of Σσ(…σ(x)), depth d, printed", (50, 100, 200),
         lambda d: str(md.derivation(nested(d), x))),
        # issue 22's families
        ("the echo of a·a·…·a, k factors (parsed)", (50, 100, 200, 400),
         lambda k: md.parse("*".join(["a"] * k)).echo()),
        ("∇ yᵀsoftmax(…softmax(x)), depth d, printed", (10, 20, 40, 80),
         lambda d: str(md.grad(md.vector("y", "n").T @ softmaxes(d), x))),
        ("∇ of a sum of k terms aᵢ1ᵀexp(x), printed", (500, 1000, 2000, 4000),
         lambda k: str(md.grad(sum_of(k), x))),
        ("the Hessian of tr(Aᵏ), printed", (16, 32, 64, 128),
         lambda k: str(md.hessian(md.trace(md.matrix_power(A, k)), A))),
    ]
    first22 = len(families) - 4  # issue 22's rows are timed with the printing caches cleared too
    if issue22_only:
        families, first22 = families[-4:], 0
    print("## Growth of the families that once hung (issues 11 and 22)\n")
    print("Each family at sizes growing geometrically, median of three runs; the slope b of")
    print("time ≈ a·sizeᵇ is fitted over all sizes (1 is linear).\n")
    print("The output column counts what the family produces (characters of text or code, or the")
    print("operand references of the result's DAG); the last slope is time against it.\n")
    print("| family | sizes | times | slope | output | slope against output |")
    print("|---|---|---|---|---|---|")
    for row, (name, sizes, job) in enumerate(families):
        clear = _clear_all if row >= first22 else clear_caches
        times = [timed(lambda k=k: job(k), repeat=3, clear=clear) for k in sizes]
        outs = [_output_size(job(k)) for k in sizes]
        shown = ", ".join(f"{t:.2f} s" if t >= 0.1 else f"{t * 1e3:.0f} ms" for t in times)
        print(f"| {name} | {', '.join(map(str, sizes))} | {shown} | {_slope(sizes, times):.2f} | "
              f"{', '.join(f'{o:,}' for o in outs)} | {_slope(outs, times):.2f} |")
    print()


def _output_size(result) -> int:
    """Characters of a text, or operand references in an expression's DAG."""
    if isinstance(result, str):
        return len(result)
    from matdiff.ir import walk
    return sum(max(1, len(n.children)) for n in walk(result.node))


def sympy_comparison():
    try:
        import sympy as sp
        from sympy.core.cache import clear_cache
    except ImportError:
        print("SymPy is not installed: no comparison.\n")
        return
    n = sp.Symbol("n")
    A, B, X = (sp.MatrixSymbol(s, n, n) for s in "ABX")
    x, a, b = (sp.MatrixSymbol(s, n, 1) for s in "xab")
    Am, Bm, Xm = (md.matrix(s, "n", "n") for s in "ABX")
    xm, am, bm = (md.vector(s, "n") for s in "xab")
    pairs = [
        ("xᵀAx by x", lambda: (x.T * A * x).diff(x), lambda: md.grad(xm.T @ Am @ xm, xm)),
        ("aᵀXb by X", lambda: (a.T * X * b).diff(X), lambda: md.grad(am.T @ Xm @ bm, Xm)),
        ("tr(AXB) by X", lambda: sp.Trace(A * X * B).diff(X), lambda: md.grad(md.trace(Am @ Xm @ Bm), Xm)),
        ("tr(AX⁻¹B) by X", lambda: sp.Trace(A * X.I * B).diff(X),
         lambda: md.grad(md.trace(Am @ md.inv(Xm) @ Bm), Xm)),
        ("aᵀX⁻¹b by X", lambda: (a.T * X.I * b).diff(X), lambda: md.grad(am.T @ md.inv(Xm) @ bm, Xm)),
        ("‖Ax − b‖² by x", lambda: ((A * x - b).T * (A * x - b)).diff(x),
         lambda: md.grad(md.norm(Am @ xm - bm) ** 2, xm)),
        ("det X by X", lambda: sp.Determinant(X).diff(X), lambda: md.grad(md.det(Xm), Xm)),
        ("Hessian of xᵀAx", lambda: (x.T * A * x).diff(x).diff(x), lambda: md.hessian(xm.T @ Am @ xm, xm)),
    ]
    print("## Against SymPy (matrix-symbol differentiation, caches cleared each run)\n")
    print("| case | SymPy | matdiff | ratio |")
    print("|---|---|---|---|")
    ratios = []
    for name, sym, mat in pairs:
        def sym_run():
            clear_cache()
            sym()
        ts, tm = timed(sym_run, 5), timed(mat, 5)
        ratios.append(ts / tm)
        print(f"| {name} | {ts * 1e3:.2f} ms | {tm * 1e3:.2f} ms | {_ratio(ts / tm)} |")
    print(f"\nMedian ratio: {_ratio(statistics.median(ratios))}.\n")


def _sympy_result(f, x, hessian: bool):
    """A thunk deriving f by x (twice for the Hessian) with SymPy's matrix expressions and
    printing the result as text and LaTeX, or None where SymPy has no form for f or fails
    (or takes over 10 s) on it."""
    import signal

    import sympy as sp
    from sympy.core.cache import clear_cache
    try:
        fs, xs = md.expr.lift(f).to_sympy(), md.expr.lift(x).to_sympy()
    except Exception:  # no SymPy form (abstract or element-wise functions, index results)
        return None

    def run():
        clear_cache()
        d = fs.diff(xs)
        if hessian:
            d = d.diff(xs)
        str(d)
        sp.latex(d)
        return d

    def timeout(*_):
        raise TimeoutError
    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(10)
    try:
        d = run()
    except Exception:  # SymPy's own failures: NotImplementedError, RecursionError, …
        return None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    from sympy.tensor.array.array_derivatives import ArrayDerivative
    if d.has(sp.Derivative, ArrayDerivative):
        return None  # left unevaluated (det X by X)
    mine = (md.hessian(f, x) if hessian else md.jacobian(f, x)).node
    if (d == 0 or isinstance(d, (sp.ZeroMatrix,)) or getattr(d, "is_zero_matrix", False)) and \
            not is_zero(mine):
        return None  # a wrong 0 (∂ log det X/∂X, ∂(tr X + 1)/∂X in SymPy 1.14)
    return run


def sympy_table(repeat=3):
    """SymPy against matdiff on every result of the test table that SymPy can derive:
    derive and print text and LaTeX, caches cleared, CPU time, median of ``repeat`` runs."""
    try:
        import sympy  # noqa: F401
    except ImportError:
        print("SymPy is not installed: no comparison.\n")
        return
    import importlib
    import warnings

    import tests.cases
    warnings.filterwarnings("ignore")  # SymPy's deprecation notes on its own internals
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))
    rows, tried = [], 0
    for c in importlib.reload(tests.cases).CASES:
        kinds = [("first derivative", False)] + \
            ([("Hessian", True)] if md.expr.lift(c.f).ndim == 0 else [])
        for kind, hessian in kinds:
            tried += 1
            sym = _sympy_result(c.f, c.wrt, hessian)
            if sym is None:
                continue
            ts = timed(sym, repeat, clear=lambda: None)
            job = (lambda c=c: md.hessian(c.f, c.wrt)) if hessian else (lambda c=c: md.jacobian(c.f, c.wrt))
            tm = sum(_phases(job, repeat))
            rows.append((c.name, kind, ts, tm))
    ratios = [ts / tm for _, _, ts, tm in rows]
    print("## Against SymPy over the test table\n")
    print(f"SymPy derives {len(rows)} of the table's {tried} results (first derivatives, and Hessians")
    print("of scalars) with its matrix expressions; the others it has no form for (element-wise")
    print("functions, index results), fails on, leaves unevaluated or gets wrong as 0. Each side")
    print("derives and prints text and LaTeX")
    print(f"with its caches cleared; CPU time, median of {repeat} runs (matdiff: derive, recognise,")
    print("presentation, text and LaTeX; the build is left out on both sides).\n")
    print("| | SymPy | matdiff | ratio |")
    print("|---|---|---|---|")
    for q, name in ((50, "median"), (10, "10th percentile"), (90, "90th percentile")):
        print(f"| {name} | {np.percentile([r[2] for r in rows], q) * 1e3:.2f} ms | "
              f"{np.percentile([r[3] for r in rows], q) * 1e3:.2f} ms | {_ratio(np.percentile(ratios, q))} |")
    print(f"\nMedian per-case ratio: {_ratio(statistics.median(ratios))} "
          f"(lowest {_ratio(min(ratios))}, highest {_ratio(max(ratios))}).\n")
    if "-v" in sys.argv:
        for name, kind, ts, tm in rows:
            print(f"- {name} ({kind}): SymPy {ts * 1e3:.2f} ms, matdiff {tm * 1e3:.2f} ms, {_ratio(ts / tm)}")
        print()


def _ratio(r: float) -> str:
    return f"{r:.0f}×" if r >= 10 else f"{r:.1f}×"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu}, {cores} cores, Python {platform.python_version()}, NumPy {np.__version__}, "
            f"matdiff {md.__version__}")


def main():
    parts = {"table": table_cases, "slow": slow_results, "scaling": scaling, "growth": growth,
             "growth22": lambda: growth(issue22_only=True), "sympy": sympy_comparison,
             "sympy-table": sympy_table}
    chosen = [a for a in sys.argv[1:] if a != "-v"] or list(parts)  # e.g. derive.py table slow
    print(f"Machine: {machine()}; {time.strftime('%Y-%m-%d')}\n")
    for name in chosen:
        parts[name]()


if __name__ == "__main__":
    main()
