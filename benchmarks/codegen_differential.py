"""The code generator's differential test at nightly size: random expressions and their
derivatives, compiled for NumPy, JAX and PyTorch in float64 and float32, against the
evaluator, finite differences and the printed text read back — the check of
tests/test_codegen_differential.py, on a larger sample drawn afresh (not derandomized).

Run: python benchmarks/codegen_differential.py [--examples 10000] [--seed 0]
Prints a table: per kind of result, how many expressions were checked, how many draws
were set aside (a refused Jacobian through expm, a repeated eigenvalue, a value out of
range) and how many failed, with the first failures in full.  Exit status 1 if any failed.
"""
from __future__ import annotations

import argparse
import collections
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import seed as fixed_seed  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import UnsatisfiedAssumption  # noqa: E402

from tests.codegen_draws import draws  # noqa: E402
from tests.test_codegen_differential import EXAMPLES, check_draw  # noqa: E402


def run(what: str, examples: int, seed: int, failures: list) -> collections.Counter:
    """``examples`` draws of one kind of result, each checked; failures are collected."""
    count: collections.Counter = collections.Counter()

    @fixed_seed(seed)
    @settings(max_examples=examples, suppress_health_check=list(HealthCheck), deadline=None,
              database=None, derandomize=False, phases=["generate"])
    @given(dr=draws((what,)), point=st.integers(0, 2 ** 16))
    def one(dr, point):
        try:
            check_draw(dr, point)
            count["checked"] += 1
        except UnsatisfiedAssumption:
            count["set aside"] += 1
            raise
        except Exception as e:  # noqa: BLE001 - every failure is counted and shown
            count["failed"] += 1
            failures.append(f"{what} of {dr.f!r} by {dr.wrt!r} at point {point}: {type(e).__name__}: "
                            f"{str(e)[:2000]}\n"
                            f"{''.join(traceback.format_tb(e.__traceback__)[-3:])}")

    one()
    return count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=10_000, help="expressions in all (default 10,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=list(EXAMPLES), help="one kind of result")
    args = ap.parse_args()
    import jax
    import numpy as np
    import torch
    jax.config.update("jax_enable_x64", True)
    warnings.filterwarnings("ignore")
    share = sum(EXAMPLES.values())
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"NumPy {np.__version__}, JAX {jax.__version__}, PyTorch {torch.__version__}\n")
    print("| result | checked | set aside | failed | seconds |")
    print("|---|---:|---:|---:|---:|")
    failures: list = []
    totals: collections.Counter = collections.Counter()
    for what, n in EXAMPLES.items():
        if args.only and what != args.only:
            continue
        t = time.perf_counter()
        count = run(what, max(1, round(args.examples * n / share)), args.seed, failures)
        totals.update(count)
        print(f"| {what} | {count['checked']:,} | {count['set aside']:,} | {count['failed']:,} | "
              f"{time.perf_counter() - t:.0f} |", flush=True)
    print(f"| all | {totals['checked']:,} | {totals['set aside']:,} | {totals['failed']:,} | |")
    for f in failures[:10]:
        print("\n" + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
