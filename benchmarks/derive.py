"""Derivation speed: build, differentiate and simplify every case of the test table, the
growth with depth of a deep network's gradient, and SymPy on the cases it can do.

Run: python benchmarks/derive.py        (prints markdown tables; see docs/benchmarks.md)
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
from matdiff.ir import clear_caches, dag_size  # noqa: E402
from tests.cases import tanh_network  # noqa: E402


def _clear_printing():
    from matdiff import present, recognise
    recognise._CACHE.clear()
    present._CACHE.clear()


def timed(f, repeat=7, clear=clear_caches):
    """Median seconds of f(), with matdiff's memo caches cleared before each run."""
    times = []
    for _ in range(repeat):
        clear()
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def table_cases():
    import importlib

    import tests.cases
    t = time.perf_counter()
    CASES = importlib.reload(tests.cases).CASES  # building every expression of the table
    build = (time.perf_counter() - t) / len(CASES)
    grads, hessians, printing = [], [], []
    for c in CASES:
        scalar = md.expr.lift(c.f).ndim == 0
        grads.append(timed(lambda: md.jacobian(c.f, c.wrt)))
        if scalar:
            hessians.append(timed(lambda: md.hessian(c.f, c.wrt)))
        d = md.jacobian(c.f, c.wrt)
        printing.append(timed(lambda: (str(d), d.latex()), clear=_clear_printing))
    print("## Derivation time over the test table\n")
    print(f"{len(CASES)} cases; building an expression takes {build * 1e3:.3f} ms on average.\n")
    print("| what | cases | median | 90th percentile | max |")
    print("|---|---|---|---|---|")
    for name, ts in (("first derivative", grads), ("Hessian (scalar cases)", hessians),
                     ("matrix notation: recognise, choose the form (e-graph), print text and LaTeX",
                      printing)):
        q = np.percentile(ts, [50, 90, 100]) * 1e3
        print(f"| {name} | {len(ts)} | {q[0]:.2f} ms | {q[1]:.2f} ms | {q[2]:.2f} ms |")
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


def growth():
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
        ("∇ yᵀsoftmax(…softmax(x)), depth d, printed", (5, 10, 20, 40),
         lambda d: str(md.grad(md.vector("y", "n").T @ softmaxes(d), x))),
        ("∇ of a sum of k terms aᵢ1ᵀexp(x), printed", (500, 1000, 2000, 4000),
         lambda k: str(md.grad(sum_of(k), x))),
        ("the Hessian of tr(Aᵏ), printed", (16, 32, 64, 128),
         lambda k: str(md.hessian(md.trace(md.matrix_power(A, k)), A))),
    ]
    print("## Growth of the families that once hung (issues 11 and 22)\n")
    print("Each family at sizes growing geometrically, median of three runs; the slope b of")
    print("time ≈ a·sizeᵇ is fitted over all sizes (1 is linear).\n")
    print("The output column counts what the family produces (characters of text or code, or the")
    print("operand references of the result's DAG); the last slope is time against it.\n")
    print("| family | sizes | times | slope | output | slope against output |")
    print("|---|---|---|---|---|---|")
    for name, sizes, job in families:
        times = [timed(lambda k=k: job(k), repeat=3) for k in sizes]
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
    print(f"Machine: {machine()}; {time.strftime('%Y-%m-%d')}\n")
    table_cases()
    scaling()
    growth()
    sympy_comparison()


if __name__ == "__main__":
    main()
