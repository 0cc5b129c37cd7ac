"""Products of all-ones matrices and vectors: 11ᵀ11ᵀ sums a label over ones, so it is n·11ᵀ,
not 11ᵀ. Each expression's value (``evaluate``), its printed text read back, and the
gradient through it are checked against NumPy."""
import numpy as np
import pytest

import matdiff as md
from matdiff.parse import declarations

N_, K_ = 3, 2
J, K = md.ones("n", "n"), md.ones("n", "k")
one = md.ones("n")
B = md.matrix("B", "n", "n")
x = md.vector("x", "n")


def _ones(*shape):
    return np.ones(shape)


CASES = {  # name: (expression, its value from B and x)
    "JJ": (J @ J, lambda B, x: _ones(N_, N_) @ _ones(N_, N_)),
    "JJJ": (J @ J @ J, lambda B, x: _ones(N_, N_) @ _ones(N_, N_) @ _ones(N_, N_)),
    "JK": (J @ K, lambda B, x: _ones(N_, N_) @ _ones(N_, K_)),
    "KᵀJ": (K.T @ J, lambda B, x: _ones(N_, K_).T @ _ones(N_, N_)),
    "JKKᵀ": (J @ K @ K.T, lambda B, x: _ones(N_, N_) @ _ones(N_, K_) @ _ones(N_, K_).T),
    "J + JJ": (J + J @ J, lambda B, x: _ones(N_, N_) + _ones(N_, N_) @ _ones(N_, N_)),
    "J1": (J @ one, lambda B, x: _ones(N_, N_) @ _ones(N_)),
    "xᵀexp(JJ)x": (x.T @ md.exp(J @ J) @ x, lambda B, x: x @ np.exp(_ones(N_, N_) @ _ones(N_, N_)) @ x),
    "xᵀσ(JJ)x": (x.T @ md.sigmoid(J @ J) @ x,
                 lambda B, x: x @ (1 / (1 + np.exp(-_ones(N_, N_) @ _ones(N_, N_)))) @ x),
    "xᵀ(JJ)^∘2 x": (x.T @ ((J @ J) ** 2) @ x, lambda B, x: x @ ((_ones(N_, N_) @ _ones(N_, N_)) ** 2) @ x),
    "Σ (JJ − σ(B))": (md.sum(J @ J - md.sigmoid(B)),
                      lambda B, x: (_ones(N_, N_) @ _ones(N_, N_) - 1 / (1 + np.exp(-B))).sum()),
    "xᵀ(JJ ⊙ B)x": (x.T @ ((J @ J) * B) @ x, lambda B, x: x @ ((_ones(N_, N_) @ _ones(N_, N_)) * B) @ x),
}
RNG = np.random.default_rng(7)
VALUES = {"B": RNG.standard_normal((N_, N_)), "x": RNG.standard_normal(N_)}


def _evaluate(e):
    used = {k: v for k, v in VALUES.items() if k in declarations(e)}
    return np.asarray(e.evaluate(used, sizes={"n": N_, "k": K_}))


@pytest.mark.parametrize("name", CASES)
def test_products_of_ones_have_their_values_and_read_back(name):
    e, reference = CASES[name]
    want = reference(VALUES["B"], VALUES["x"])
    np.testing.assert_allclose(_evaluate(e), want, rtol=1e-12)
    back = md.parse(str(e), dialect="matdiff", result_shape=e.shape, **declarations(e))
    np.testing.assert_allclose(_evaluate(back), want, rtol=1e-12, err_msg=str(e))


def test_the_gradient_through_a_product_of_ones_matches_central_differences():
    f = md.sum(md.sigmoid(J @ J - B) * B)  # Σ σ(n − B) ⊙ B
    g = md.grad(f, B)
    Bv, h = VALUES["B"], 1e-6

    def value(b):  # NumPy's, not matdiff's: JJ = n11ᵀ
        return float((b / (1 + np.exp(-(_ones(N_, N_) @ _ones(N_, N_) - b)))).sum())

    assert np.isclose(float(f.evaluate({"B": Bv})), value(Bv), rtol=1e-12)

    fd = np.zeros_like(Bv)
    for i in range(N_):
        for j in range(N_):
            d = np.zeros_like(Bv)
            d[i, j] = h
            fd[i, j] = (value(Bv + d) - value(Bv - d)) / (2 * h)
    np.testing.assert_allclose(np.asarray(g.evaluate({"B": Bv})), fd, rtol=1e-6, atol=1e-9)



FOLDS = {  # the all-ones matrix J beside a ones vector or another J: the dim it sums over
    "J(n×k)1 = k1": ("c", (("m", ("n", "k")), ("c", ("k",)))),
    "J(n×k)J(k×p) = kJ": ("m", (("m", ("n", "k")), ("m", ("k", "p")))),
    "1ᵀJ(n×k) = n1ᵀ": ("r", (("r", ("n",)), ("m", ("n", "k")))),
}


def _ones_leaf(kind, dims):
    from matdiff import notation as N
    if kind == "r":
        return N.T("r", N.Sym("c", "1", "one", dims=dims))
    return N.Sym(kind, "1", "one", dims=dims)


@pytest.mark.parametrize("name", FOLDS)
def test_the_all_ones_matrix_beside_ones_folds_to_the_dim_it_sums(name):
    """simplest writes J1 as k1, JJ as kJ and 1ᵀJ as n1ᵀ (11ᵀ1 would not say which 1ᵀ1 is
    summed): the same value, read by the independent notation evaluator."""
    from matdiff import notation as N
    from matdiff import present

    from . import notation_eval
    kind, factors = FOLDS[name]
    m = N.Prod(kind, 1.0, tuple(_ones_leaf(k, d) for k, d in factors))
    chosen = present.simplest(m)
    assert any(isinstance(f, N.Sym) and f.role == "dim" for f in chosen.factors), chosen
    sizes = {"n": 3, "k": 4, "p": 2}
    np.testing.assert_allclose(notation_eval.evaluate(chosen, {}, sizes, {}),
                               notation_eval.evaluate(m, {}, sizes, {}))


def test_a_sum_with_the_all_ones_matrix_beside_other_factors_reads_back():
    """(J − σ(B))ᵀ1 beside A⁻¹x: J in a product is 11ᵀ (not the number 1), and a sum with
    it stays one factor: 1ᵀ(1 − σ(B))ᵀA⁻¹x, which reads back as its value."""
    A = md.matrix("A", "n", "n")
    e = md.sum((J - md.sigmoid(B)).T @ (md.inv(A) @ x))
    rng = np.random.default_rng(3)
    values = {"A": rng.standard_normal((N_, N_)) + 4 * np.eye(N_), "B": VALUES["B"], "x": VALUES["x"]}
    want = np.ones(N_) @ (np.ones((N_, N_)) - 1 / (1 + np.exp(-values["B"]))).T @ np.linalg.solve(
        values["A"], values["x"])
    back = md.parse(str(e), dialect="matdiff", result_shape=e.shape, **declarations(e))
    np.testing.assert_allclose(float(back.evaluate(values)), want, rtol=1e-12, err_msg=str(e))
    assert "1·1" not in str(e)
