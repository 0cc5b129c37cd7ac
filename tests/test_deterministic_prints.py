"""Prints that are the same in every run (issue 21): a user's md.function given by Python
callables (numpy=…, derivative=…) once had object addresses (``<function <lambda> at
0x7f…>``) in the text that feeds the nodes' sort keys (ir._stable_key), so a sum holding it
printed its terms in an order that changed from run to run.  Its key is now its name, the
qualified names of its callables and a digest of their code; every other function keeps the
text it had, so no other print changes."""
import os
import subprocess
import sys
import textwrap

import numpy as np

import matdiff as md
from matdiff import functions as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# builds f, a sum of terms whose printed order is their sort keys', and prints f and ∇f
BUILD = textwrap.dedent("""
    import numpy as np
    import matdiff as md
    g = md.function("g", numpy=[lambda z: z ** 3, lambda z: 3 * z ** 2])
    h = md.function("h", derivative=lambda z: 1 / (1 + z * z), numpy=np.arctan)
    x, y, A = md.vector("x", "n"), md.vector("y", "n"), md.matrix("A", "n", "n")
    f = md.sum(g(A @ x)) + md.sum(g(A @ y)) + md.sum(h(A @ x)) + md.sum(h(y)) + md.sum(g(x)) + x.T @ y
""")
PRINT = "print(f); print(md.grad(f, x)); print(md.grad(f, A))"


def _printed(seed: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": str(seed), "PYTHONPATH": ROOT}
    return subprocess.Popen([sys.executable, "-c", BUILD + PRINT], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_sum_with_user_functions_prints_alike_in_two_processes():
    """Two fresh interpreters (other hash seeds, other addresses) print f, ∇ₓf and ∇_A f with
    the terms in one order; the gradients printed are checked by finite differences."""
    runs = [_printed(seed) for seed in (1, 2)]
    (one, err1), (two, err2) = (p.communicate(timeout=60) for p in runs)
    assert runs[0].returncode == 0 and runs[1].returncode == 0, err1 + err2
    assert "g(" in one and "h(" in one and len(one.splitlines()) == 3, one
    assert one == two
    scope: dict = {}
    exec(BUILD, scope)  # noqa: S102 - the test's own text
    assert md.check(scope["f"], scope["x"], scope["A"], sizes={"n": 3}) < 1e-6


def test_the_key_of_a_user_function_has_no_address_and_tells_functions_apart():
    """The repr (the key's text) of a user function: no address; the same for a function
    built twice from the same code; another for other code, another constant in a closure,
    or another derivative under one name."""
    def make(c):
        return md.function("g", numpy=lambda z: c * z)

    one, again, other = make(2.0), make(2.0), make(3.0)
    cubic = md.function("g", numpy=lambda z: z ** 3)
    derived = md.function("g", derivative=lambda z: 2 * z, numpy=lambda z: z * z)
    derived_other = md.function("g", derivative=lambda z: 3 * z, numpy=lambda z: z * z)
    texts = [repr(f.fn) for f in (one, again, other, cubic, derived, derived_other)]
    assert not any("0x" in t for t in texts), texts
    assert texts[0] == texts[1]
    assert len(set(texts[1:])) == 5, texts
    x = md.vector("x", "n")
    assert one(x).node.skey == again(x).node.skey != other(x).node.skey
    assert "test_deterministic_prints.test_the_key_of_a_user_function_has_no_address" in texts[0]
    # the values stay the functions' own
    np.testing.assert_allclose(other(x).evaluate(x=np.array([1.0, 2.0])), [3.0, 6.0])


def test_other_functions_keep_the_text_of_their_keys():
    """Built-in, abstract and traced functions write the dataclass's own text (no address in
    it), so the key of every node without a user callable is what it was."""
    def dataclass_text(f):
        return f"{type(f).__qualname__}(" + ", ".join(
            f"{k}={getattr(f, k)!r}" for k in f.__dataclass_fields__) + ")"

    traced = md.matrix_function(md.matrix("S", "n", "n", symmetric=True), lambda u: u ** 3).node.fn
    for f in (F.fn("exp"), F.fn("pow", 2), F.Function("sigma", 2), F.ScalarFunction("lam"), traced):
        assert repr(f) == dataclass_text(f)
    assert repr(F.fn("exp")) == "Function(name='exp', order=0, param=None, numpy=None, deriv=None)"
