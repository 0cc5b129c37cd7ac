"""Layouts of derivatives: numerator (default), denominator, and vec with Kronecker forms."""
import numpy as np
import pytest

import matdiff as md

from .test_printing import _read_back

rng = np.random.default_rng(0)
A, X, B = md.matrix("A", "m", "n"), md.matrix("X", "n", "p"), md.matrix("B", "p", "q")
Y, C = md.matrix("Y", "n", "n"), md.matrix("C", "n", "n")
W, Xk = md.matrix("W", "m", "n"), md.matrix("X", "n", "k")
x = md.vector("x", "n")
VALUES = {"A": rng.normal(size=(2, 3)), "X": rng.normal(size=(3, 4)), "B": rng.normal(size=(4, 5)),
          "Y": rng.normal(size=(3, 3)) + 3 * np.eye(3), "C": rng.normal(size=(3, 3)),
          "W": rng.normal(size=(2, 3)), "x": rng.normal(size=3)}

VEC = [  # f, variable, printed ∂vec(f)/∂vec(x) (column-major), and row-major
    (A @ X @ B, X, "Bᵀ ⊗ A", "A ⊗ Bᵀ"),
    (Y @ C, Y, "Cᵀ ⊗ I", "I ⊗ Cᵀ"),
    (C @ Y, Y, "I ⊗ C", "C ⊗ I"),
    (md.inv(Y), Y, "−Y⁻ᵀ ⊗ Y⁻¹", "−Y⁻¹ ⊗ Y⁻ᵀ"),
    (W @ Xk, W, "Xᵀ ⊗ I", "I ⊗ Xᵀ"),  # the handwritten notes' Y = WX
    (2 * (Y @ C) + C @ Y, Y, "2(Cᵀ ⊗ I) + I ⊗ C", "C ⊗ I + 2(I ⊗ Cᵀ)"),
]


def _vals(e):
    used = {v.node.name for v in e.variables} | {v.name for v in e.scope}
    return {k: v for k, v in VALUES.items() if k in used}


@pytest.mark.parametrize("f,var,column,row", VEC, ids=[v[2] for v in VEC])
def test_vec_jacobians_are_kronecker_products(f, var, column, row):
    full = md.jacobian(f, var)
    J = full.evaluate(_vals(full))
    p = f.ndim
    for order, text in (("column", column), ("row", row)):
        d = md.jacobian(f, var, layout="vec", vec=order)
        assert str(d) == text
        got = d.evaluate(_vals(d))
        if order == "column":  # vec stacks columns: NumPy's order="F"
            want = J.transpose(tuple(reversed(range(p))) + tuple(reversed(range(p, J.ndim))))
        else:
            want = J
        want = want.reshape(got.shape)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        _read_back(d, None)


def test_column_vec_matches_numpy_fortran_order():
    # ∂vec(AXB)/∂vec(X) applied to vec(dX) is vec(A dX B), with vec = reshape(order="F")
    d = md.jacobian(A @ X @ B, X, layout="vec").evaluate(_vals(A @ X @ B))
    dX = rng.normal(size=(3, 4))
    lhs = d @ dX.reshape(-1, order="F")
    rhs = (VALUES["A"] @ dX @ VALUES["B"]).reshape(-1, order="F")
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


def test_denominator_layout_puts_the_variable_first():
    f = md.sigmoid(A @ x)
    num, den = md.jacobian(f, x), md.jacobian(f, x, layout="denominator")
    assert num.shape == ("m", "n") and den.shape == ("n", "m")
    vals = {"A": VALUES["A"], "x": VALUES["x"]}
    np.testing.assert_allclose(den.evaluate(vals), num.evaluate(vals).T)
    assert str(den) == "Aᵀdiag(σ(Ax) ⊙ (1 − σ(Ax)))"
    # a gradient has its variable's shape in every layout
    g = md.jacobian(md.sum(f), x, layout="denominator")
    assert g.shape == ("n",) and str(g) == str(md.grad(md.sum(f), x))


def test_seed_004_layer_derivatives_in_denominator_layout():
    Wl, a = md.matrix("W", "m", "n"), md.vector("A", "m")
    z = Wl.T @ a  # Z = WᵀA: ∂Z/∂A is W in the denominator layout, Wᵀ in the numerator one
    assert str(md.jacobian(z, a, layout="denominator")) == "W"
    assert str(md.jacobian(z, a)) == "Wᵀ"


def test_layout_errors():
    with pytest.raises(md.MatdiffError, match="layout must be one of 'numerator', 'denominator', 'vec'"):
        md.jacobian(A @ X, X, layout="mixed")
    with pytest.raises(md.MatdiffError, match="vec must be 'column' or 'row'"):
        md.jacobian(A @ X, X, layout="vec", vec="diagonal")


def test_latex_and_index_functions():
    assert md.latex(md.jacobian(md.inv(Y), Y, layout="vec")) == r"-Y^{-\top} \otimes Y^{-1}"
    assert md.to_index(md.jacobian(x @ x.T, x)) == "δ_ik x_j + δ_jk x_i"


# --------------------------------------------------------------------------- vec layout: K and diag(vec(·))

from . import notation_eval  # noqa: E402

VX, VW, VA, VB, VY = (md.matrix("X", "m", "n"), md.matrix("W", "n", "k"), md.matrix("A", "p", "m"),
                      md.matrix("B", "n", "q"), md.matrix("Y", "n", "n"))
VEC = [  # (f, wrt, printed with vec stacking columns, printed with vec stacking rows)
    (lambda: VX.T, VX, "Kₘₙ", "Kₙₘ"),
    (lambda: VX.T @ VX, VX, "(Xᵀ ⊗ I)Kₘₙ + I ⊗ Xᵀ", "Xᵀ ⊗ I + (I ⊗ Xᵀ)Kₙₘ"),
    (lambda: VX @ VX.T, VX, "X ⊗ I + (I ⊗ X)Kₘₙ", "I ⊗ X + (X ⊗ I)Kₙₘ"),
    (lambda: md.sigmoid(VX @ VW), VW, "diag(vec(σ(XW) ⊙ (1 − σ(XW))))(I ⊗ X)", None),
    (lambda: md.sigmoid(VX @ VW), VX, "diag(vec(σ(XW) ⊙ (1 − σ(XW))))(Wᵀ ⊗ I)", None),
    (lambda: VX * VX, VX, "2diag(vec(X))", "2diag(vec(Xᵀ))"),
    (lambda: md.exp(VX).T, VX, "diag(vec(exp(X)ᵀ))Kₘₙ", None),
    (lambda: VX.T @ VA.T, VX, "(A ⊗ I)Kₘₙ", None),
    (lambda: VY @ VY, VY, "Yᵀ ⊗ I + I ⊗ Y", None),
    (lambda: VA @ VX @ VB, VX, "Bᵀ ⊗ A", "A ⊗ Bᵀ"),
]
VSIZES = {"m": 2, "n": 3, "k": 4, "p": 2, "q": 3}


@pytest.mark.parametrize("f, wrt, column, row", VEC, ids=[c[2] for c in VEC])
def test_vec_jacobians_print_with_kronecker_commutation_and_diag_vec(f, wrt, column, row):
    """Each printed form is read back by the independent evaluator (K_{p,q} built from its
    definition K vec(A) = vec(Aᵀ)) and equals the Jacobian; the Jacobian itself is checked
    by finite differences."""
    rng = np.random.default_rng(2)
    values = {v.node.name: rng.standard_normal([VSIZES[d] for d in v.node.shape])
              for v in (VX, VW, VA, VB, VY)}
    for vec, text in (("column", column), ("row", row)):
        J = md.jacobian(f(), wrt, layout="vec", vec=vec)
        if text is not None:
            assert str(J) == text
        want = J.evaluate({v.node.name: values[v.node.name] for v in J.variables}, sizes=VSIZES)
        got = notation_eval.evaluate(J.notation(), values, VSIZES, {})
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert md.check(f(), wrt) < 1e-6


def test_commutation_matrices_have_no_dialect_or_python_form():
    J = md.jacobian(VX.T, VX, layout="vec")
    assert J.latex() == "K_{m,n}"
    with pytest.raises(md.NotSupportedError, match="commutation matrix"):
        J.text("matrixcalculus")
    assert repr(J) == "<Kₘₙ>"


HW, HX, HY = md.matrix("W", "m", "k"), md.matrix("X", "n", "m"), md.matrix("Y", "n", "k")


@pytest.mark.parametrize("f, text", [
    (lambda: md.norm(HX @ HW - HY) ** 2, "2I ⊗ XᵀX"),
    (lambda: md.trace(HW.T @ HW @ HW.T @ HW), "4((Wᵀ ⊗ W)Kₘₖ + WᵀW ⊗ I + I ⊗ WWᵀ)"),
], ids=["‖XW − Y‖²", "tr((WᵀW)²)"])
def test_vec_hessians_by_a_matrix_group_summed_factors_into_products(f, text):
    sizes = {"n": 4, "m": 3, "k": 2}
    rng = np.random.default_rng(5)
    values = {v.node.name: rng.standard_normal([sizes[d] for d in v.node.shape]) for v in (HW, HX, HY)}
    H = md.hessian(f(), HW, layout="vec")
    assert str(H) == text
    want = H.evaluate({v.node.name: values[v.node.name] for v in H.variables}, sizes=sizes)
    np.testing.assert_allclose(notation_eval.evaluate(H.notation(), values, sizes, {}), want, rtol=1e-12)
    assert md.check(f(), HW, order=2) < 1e-6


NW, nx = md.matrix("W", "m", "n"), md.vector("x", "n")


@pytest.mark.parametrize("vec, text", [("column", "diag(1 − tanh²(Wx))(xᵀ ⊗ I)"),
                                       ("row", "diag(1 − tanh²(Wx))(I ⊗ xᵀ)")])
def test_the_handwritten_notes_vec_jacobian_of_f_of_wx(vec, text):
    """z = f(Wx): ∂z/∂vec(W) = diag(f′(Wx))(xᵀ ⊗ I), as the handwritten notes derive it."""
    sizes = {"m": 3, "n": 2}
    rng = np.random.default_rng(8)
    values = {"W": rng.standard_normal((3, 2)), "x": rng.standard_normal(2)}
    J = md.jacobian(md.tanh(NW @ nx), NW, layout="vec", vec=vec)
    assert str(J) == text
    np.testing.assert_allclose(notation_eval.evaluate(J.notation(), values, sizes, {}),
                               J.evaluate(values), rtol=1e-12)
    f = md.function("f")
    assert str(md.jacobian(f(NW @ nx), NW, layout="vec", vec=vec)) == text.replace("1 − tanh²(Wx)", "f′(Wx)")
