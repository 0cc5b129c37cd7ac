"""A centred sum inside a product too large to flatten (more than FLATTEN_LIMIT factors), the
product summed alone along an axis: the normal form ends (it once summed the product apart
into the very node it was normalising, without end), and the sum cancels where the axis is
the centred sum's own."""
import numpy as np

import matdiff as md
from matdiff.simplify import simplify

N, K = 3, 2
SIZES = {"n": N, "k": K}
A, B, C, D, E, F = (md.matrix(name, "n", "k") for name in "ABCDEF")
X = md.matrix("X", "n", "k")
y = md.vector("y", "n")
CENTRED = X - md.outer(md.ones("n"), md.mean(X, axis=0))  # X − 1(1ᵀX/n): its columns sum to 0
FACTORS = (A, B, C, D, E, F)


def _values():
    rng = np.random.default_rng(7)
    return {v.node.name: rng.standard_normal(tuple(SIZES[d] for d in v.shape)) for v in (*FACTORS, X)}


def test_the_row_sums_of_a_long_hadamard_product_with_a_centred_matrix_end_with_their_value():
    p = CENTRED
    for f in FACTORS:
        p = p * f  # seven factors in one product: it stays nested in a product around it
    e = md.einsum("ji->i", p.T)  # its row sums, taken alone through the transpose
    simplify(e.node)  # (raised RecursionError)
    v = _values()
    xv = v["X"]
    want = np.prod([v[f.node.name] for f in FACTORS], axis=0) * (xv - xv.mean(axis=0))
    np.testing.assert_allclose(e.evaluate(v), want.sum(axis=1), rtol=1e-12)
    md.check(y.T @ e, X, y, sizes=SIZES)  # the gradients, by finite differences


def test_a_long_product_summed_along_its_centred_axis_alone_is_zero():
    t = md.einsum("ab,cd,cd,cd,cd,cd,cd->abcd", CENTRED, *FACTORS)  # an outer product: axis a is the centred one's
    e = md.einsum("abcd->bcd", t)
    assert md.build.is_zero(simplify(e.node))
    v = _values()
    xv = v["X"]
    want = np.einsum("ab,cd,cd,cd,cd,cd,cd->bcd", xv - xv.mean(axis=0), *(v[f.node.name] for f in FACTORS))
    np.testing.assert_allclose(want, 0.0, atol=1e-12)  # (NumPy's value: the sum cancels)
    np.testing.assert_allclose(e.evaluate(v), want, atol=1e-12)
    np.testing.assert_allclose(t.evaluate(v), np.einsum("ab,cd,cd,cd,cd,cd,cd->abcd", xv - xv.mean(axis=0),
                                                        *(v[f.node.name] for f in FACTORS)), rtol=1e-12)
