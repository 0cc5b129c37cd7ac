"""The code generator's association order against the optimal one (issue 25).

``plan._pair_steps`` multiplies a product's factors pairwise, greedily: the pair sharing a
label whose result is smallest first; ``plan._steps`` replaces that order by the cheapest
one where that costs less than two thirds as much and no factor is an inverse.  This
script records every product the generator orders while compiling the derivative table
(tests/cases.py: each case's derivative and Hessian) and the solve sweep's expressions
with one gradient or Jacobian each (tests/test_solve_sweep.py), and prices each product of
three factors or more, at the sizes the generator assumed (100 per unknown dim), along the
greedy order, the order as planned and opt_einsum's optimal order (exhaustive search, or its
dynamic programming past 7 factors; one cost model for all three).

Run: python benchmarks/plan_order.py [--worst 10] [--time 40,20]
Prints how many products each order prices at the optimum, within 10 %, within 2× and
beyond, and the worst ones as einsum equations; with --time n,k, the NumPy code of each
solve-sweep derivative whose order changed, timed at those sizes (one BLAS thread is
fairer: OMP_NUM_THREADS=1) with the greedy order and as planned.
"""
from __future__ import annotations

import argparse
import collections
import platform
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import opt_einsum as oe  # noqa: E402

import matdiff as md  # noqa: E402
from matdiff import plan  # noqa: E402


def _recorded(build_all) -> list:
    """(labels, out, sizes, inverses) of every product ordered while ``build_all`` runs."""
    seen, original = [], plan._steps

    def spy(labs, out, size, inverses=frozenset()):
        seen.append(([tuple(lab) for lab in labs], tuple(out), dict(size), frozenset(inverses)))
        return original(labs, out, size, inverses)

    plan._steps = spy
    try:
        build_all()
    finally:
        plan._steps = original
    return seen


def _table() -> None:
    from tests.cases import CASES

    for c in CASES:
        for derivative in (md.jacobian, md.hessian):
            try:
                md.codegen(derivative(c.f, c.wrt))
            except md.MatdiffError:
                pass  # refused (a Hessian through a decomposition in code): nothing planned


def _solve_sweep() -> None:
    from tests import test_solve_sweep as sweep

    for p in sweep._pairs():
        if not p.e.variables:
            continue
        md.codegen(_sweep_derivative(p), args=sweep.VARIABLES)


def _priced(labs, out, size, paths) -> tuple | None:
    """(the cost of each path, the optimal cost, the equation) in opt_einsum's flop count, or
    None for a factor with a repeated label (a diagonal: no plain einsum path)."""
    eq = ",".join(plan._labels_code(lab) for lab in labs) + "->" + plan._labels_code(out)
    shapes = [tuple(size[x] for x in lab) for lab in labs]
    try:
        costs = [float(oe.contract_path(eq, *shapes, shapes=True, optimize=p)[1].opt_cost) for p in paths]
        search = "optimal" if len(labs) <= 7 else "dp"  # (dp: also exact, faster past 7 factors)
        best = float(oe.contract_path(eq, *shapes, shapes=True, optimize=search)[1].opt_cost)
    except ValueError:
        return None
    return costs, best, eq


def _bin(ratio: float) -> str:
    return "optimum" if ratio <= 1.0 + 1e-9 else "1.1" if ratio <= 1.1 else "2" if ratio <= 2 else "beyond"


def _greedy_only(labs, out, size, inverses=frozenset()):
    return list(plan._pair_steps(labs, out, size, inverses))


def _sweep_derivative(p):
    variables = sorted(p.e.variables, key=lambda v: v.node.name)
    return md.grad(p.e, variables[0]) if p.e.ndim == 0 else md.jacobian(p.e, variables[0])


def _timed(source: str, args: list, rounds: int = 5) -> tuple:
    scope: dict = {}
    exec(source, scope)  # noqa: S102 - matdiff's own generated code
    f = scope["f"]
    value = f(*args)
    start = time.perf_counter()
    for _ in range(rounds):
        f(*args)
    return (time.perf_counter() - start) / rounds, value


def _time_reordered(n: int, k: int) -> None:
    """The solve sweep's derivatives with a product the planned order prices at less than
    two thirds of the greedy one, their NumPy code timed both ways at n, k."""
    from tests import test_solve_sweep as sweep

    rng = np.random.default_rng(0)
    values = {v.node.name: rng.standard_normal(tuple({"n": n, "k": k}[d] for d in v.shape)) / 2
              for v in sweep.VARIABLES}
    q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    values["S"] = (q * np.linspace(1.0, 3.0, n)) @ q.T
    values["X"] = 1.2 * np.linalg.qr(rng.standard_normal((n, k)))[0]  # full column rank
    values["lam"] = np.asarray(0.7)
    args = [values[v.node.name] for v in sweep.VARIABLES]
    print("\n| solve-sweep draw | derivative | greedy order | as planned | speed-up |")
    print("|---|---|---:|---:|---:|")
    for index, p in enumerate(sweep._pairs()):
        if not p.e.variables:
            continue
        d = _sweep_derivative(p)
        planned = md.codegen(d, args=sweep.VARIABLES)
        original, plan._steps = plan._steps, _greedy_only
        try:
            greedy = md.codegen(d, args=sweep.VARIABLES)
        finally:
            plan._steps = original
        if greedy == planned:
            continue
        (t_greedy, v_greedy), (t_planned, v_planned) = _timed(greedy, args), _timed(planned, args)
        np.testing.assert_allclose(v_planned, v_greedy, rtol=1e-9, atol=1e-12)
        shape = "×".join(map(str, np.shape(v_planned)))
        print(f"| {index} `{p.src[:60]}…` | {shape} | {t_greedy * 1e3:.1f} ms | {t_planned * 1e3:.1f} ms "
              f"| {t_greedy / t_planned:.2f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worst", type=int, default=10, help="how many of the worst products to list")
    ap.add_argument("--time", default=None, help="n,k: time the reordered solve-sweep derivatives")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    print(f"{platform.machine()}, Python {platform.python_version()}, NumPy {np.__version__}, "
          f"opt_einsum {oe.__version__}, matdiff {md.__version__}\n")
    print("| corpus | order | products of 3+ factors | at the optimum | within 1.1× | within 2× "
          "| beyond 2× |")
    print("|---|---|---:|---:|---:|---:|---:|")
    worst = []
    for name, build in (("derivative table", _table), ("solve sweep", _solve_sweep)):
        bins = {"greedy": collections.Counter(), "as planned": collections.Counter()}
        for labs, out, size, inverses in _recorded(build):
            if not 3 <= len(labs) <= 10:  # (the optimal search is exponential)
                continue
            orders = (plan._pair_steps(labs, out, size, inverses),
                      plan._steps(labs, out, size, inverses))
            paths = [[(i, j) for i, j, *_ in steps] for steps in orders]
            priced = _priced(labs, out, size, paths)
            if priced is None:
                continue
            (greedy, planned), best, eq = priced
            for order, cost in (("greedy", greedy), ("as planned", planned)):
                bins[order]["all"] += 1
                bins[order][_bin(cost / max(best, 1.0))] += 1
            worst.append((greedy / max(best, 1.0), planned / max(best, 1.0), best, eq, name))
        for order, b in bins.items():
            print(f"| {name} | {order} | {b['all']} | {b['optimum']} | {b['1.1']} | {b['2']} "
                  f"| {b['beyond']} |")
    worst.sort(reverse=True)
    print("\n| greedy / optimal | as planned / optimal | optimal flops | product | corpus |")
    print("|---:|---:|---:|---|---|")
    for greedy, planned, best, eq, name in worst[:a.worst]:
        print(f"| {greedy:.2f} | {planned:.2f} | {best:.3g} | `{eq}` | {name} |")
    if a.time:
        _time_reordered(*(int(x) for x in a.time.split(",")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
