"""Parse time: random and long inputs in every dialect (the goal: under 100 ms for any input
up to 1,000 characters).  Run: python benchmarks/parse.py

Times are CPU time of this process (``time.process_time``): parsing is single-threaded, so
on an idle machine they are the wall time, and on a shared one other processes do not count.
The random inputs are the same on every run (seeded), so two versions of the parser can be
compared: run this script from each checkout, in alternation, and keep each cell's best."""
from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matdiff as md  # noqa: E402

ALPHABETS = {
    "matrixcalculus": "xyzAXWab12.*+-/^'() ,",
    "numpy": "xyzAXWab12.*+-/@() ,T",
    "matdiff": "XWxyAσλ∇′ᵀ⁻¹⊙⊘⊗·√|()12/−+ ^∘,=²",
}
VALID = {
    "matrixcalculus": "x'*A*x + norm2(X*w - y)^2",
    "numpy": "x.T @ A @ x + norm(X @ w - y)**2",
    "matdiff": "Xᵀ(σ(XW) ⊙ (1 − σ(XW))) + 2Xᵀ(XW − Y)",
}
DECLS = {"matdiff": dict(X="matrix(n, k)", W="matrix(k, m)", Y="matrix(n, m)", x="vector(n)",
                         y="vector(n)", A="matrix(n, n)")}


def timed(text, dialect):
    t = time.process_time()
    try:
        md.parse(text, dialect=dialect, **DECLS.get(dialect, {}))
    except md.MatdiffError:
        pass
    return time.process_time() - t


def main():
    rng = random.Random(0)
    print("| dialect | random inputs (≤ 1,000 chars): median | max | valid input of ~1,000 chars |")
    print("|---|---|---|---|")
    for dialect, alphabet in ALPHABETS.items():
        times = [timed("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 1000))), dialect)
                 for _ in range(2000)]
        long = " + ".join([VALID[dialect]] * (1000 // (len(VALID[dialect]) + 3)))
        t_long = statistics.median(timed(long, dialect) for _ in range(21))
        print(f"| {dialect} | {statistics.median(times) * 1e6:.1f} µs | {max(times) * 1e3:.2f} ms | "
              f"{t_long * 1e3:.2f} ms ({len(long)} chars) |")


if __name__ == "__main__":
    main()
