"""Never wrong, never stuck: each input gets a right answer or a clear refusal.

Regression tests for inputs that once returned a wrong value silently, hung, or ended in
a traceback; each names what it once did.
"""
import sys
import threading

import numpy as np
import pytest

import matdiff as md


# --------------------------------------------------------------------------- silent wrong values


@pytest.mark.parametrize("build", [
    lambda a, x: 0 / md.expr.lift(0.0) * a,          # printed "f = 0"
    lambda a, x: (x - x) / (x - x),                   # evaluated to [0, 0]
    lambda a, x: md.log(x - x) * 0,
    lambda a, x: a * (1 / (x - x)).T @ (x - x),
])
def test_a_constant_division_by_zero_is_refused_not_dropped(build):
    a, x = md.scalar("a"), md.vector("x", 2)
    with pytest.raises(md.MatdiffError, match="not finite"):
        build(a, x).evaluate({"a": 1.0, "x": np.ones(2)})


def test_eight_threads_building_the_same_expression_share_nodes_and_prints():
    """Hash-consing once raced: equal variables built at once became distinct nodes."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for r in range(300):
            got, barrier = [None] * 8, threading.Barrier(8)

            def work(i, r=r):
                barrier.wait()
                X, w, y = md.matrix(f"X{r}", "n", "k"), md.vector(f"w{r}", "k"), md.vector(f"y{r}", "n")
                f = md.sum(md.log(1 + md.exp(-y * (X @ w))))
                got[i] = (X.node, f.node, str(md.grad(f, w)), str(md.hessian(f, w)))

            threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert all(g is not None for g in got)
            assert len({(id(X), id(f), g, h) for X, f, g, h in got}) == 1, f"round {r}"
    finally:
        sys.setswitchinterval(old)
