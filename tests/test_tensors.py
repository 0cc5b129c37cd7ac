"""Tensors of any order: each operation against NumPy, its derivatives against finite
differences, random einsum expressions (Hypothesis), and the bracket and index printers
against golden text."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import matdiff as md

A, B = md.tensor("A", "n", "k", "m"), md.tensor("B", "m", "k", "p")
C = md.tensor("C", "p", "m", "k")
X, Y = md.matrix("X", "n", "k"), md.matrix("Y", "n", "m")
Q = md.matrix("Q", "k", "k")
x, v = md.vector("x", "n"), md.vector("v", "k")
SIZES = {"n": 4, "k": 3, "m": 2, "p": 5}

# name, expression, the same computed by NumPy from the values
OPERATIONS = [
    ("einsum AᵀB", md.einsum("ij,ik->jk", X, Y), lambda a: a["X"].T @ a["Y"]),
    ("einsum implicit", md.einsum("ij,ik", X, Y), lambda a: np.einsum("ij,ik", a["X"], a["Y"])),
    ("einsum order 3·3", md.einsum("ijk,kjl->ikl", A, B), lambda a: np.einsum("ijk,kjl->ikl", a["A"], a["B"])),
    ("einsum trace", md.einsum("ii->", Q), lambda a: np.trace(a["Q"])),
    ("einsum diagonal", md.einsum("ii->i", Q), lambda a: np.diag(a["Q"])),
    ("einsum three operands", md.einsum("ijk,j,i->k", A, v, x), lambda a: np.einsum("ijk,j,i->k", a["A"], a["v"], a["x"])),
    ("permute", md.permute(A, (2, 0, 1)), lambda a: np.transpose(a["A"], (2, 0, 1))),
    ("transpose reversed", md.transpose(A), lambda a: np.transpose(a["A"])),
    ("outer order 3⊗1", md.outer(A, x), lambda a: np.multiply.outer(a["A"], a["x"])),
    ("tensordot 1", md.tensordot(A, B, 1), lambda a: np.tensordot(a["A"], a["B"], 1)),
    ("tensordot axes", md.tensordot(A, C, ([1, 2], [2, 1])), lambda a: np.tensordot(a["A"], a["C"], ([1, 2], [2, 1]))),
    ("hadamard all", md.hadamard(X, X), lambda a: a["X"] * a["X"]),
    # A ²³⊙³² C: A's axes k, m entry-wise with C's axes k, m; then C's free axis p
    ("hadamard axes", md.hadamard(A, C, [1, 2], [2, 1]), lambda a: np.einsum("ikm,pmk->ikmp", a["A"], a["C"])),
    ("dot axes", md.dot(A, C, [1, 2], [2, 1]), lambda a: np.einsum("ikm,pmk->ip", a["A"], a["C"])),
    ("dot vectors", md.dot(x, x), lambda a: a["x"] @ a["x"]),
    ("reshape", md.reshape(A, "n", "k*m"), lambda a: a["A"].reshape(4, 6)),
    ("vec column", md.vec(X), lambda a: a["X"].reshape(-1, order="F")),
    ("vec row", md.vec(X, "row"), lambda a: a["X"].ravel()),
]


def _values(e, rng):
    return {u.node.name: rng.normal(size=[SIZES[d] for d in u.shape]) for u in e.variables}


@pytest.mark.parametrize("name,e,want", OPERATIONS, ids=[o[0] for o in OPERATIONS])
def test_operations_agree_with_numpy_and_their_derivatives_with_finite_differences(name, e, want):
    vals = _values(e, np.random.default_rng(0))
    np.testing.assert_allclose(e.evaluate(vals), want(vals), rtol=1e-12, atol=1e-12)
    assert md.check(e, sizes=SIZES) < 1e-6  # the Jacobian by every variable
    scalar = md.sum(md.sin(e)) if e.ndim else md.sin(e)  # a nonlinear scalar: its gradient too
    assert md.check(scalar, sizes=SIZES, order=2) < 1e-5


@pytest.mark.parametrize("e,text", [
    (md.einsum("ij,ik->jk", X, Y), "XᵀY"),
    (md.dot(X, Y, [0], [0]), "XᵀY"),
    (md.tensordot(X, md.matrix("W", "k", "m"), 1), "XW"),
    (md.hadamard(X, v, [1], [0]), "X diag(v)"),
    (md.einsum("ii->", Q), "tr(Q)"),
    (md.permute(X), "Xᵀ"),
])
def test_einsum_prints_matrix_notation_where_there_is_one(e, text):
    assert str(e) == text


# golden: bracket notation and index notation (each checked by hand against the definitions)
BRACKETS = [
    ("AᵀB", md.einsum("ij,ik->jk", X, Y), "X₂Y₂[X̅₁ Y₁]", "Σ_p X_pi Y_pj"),
    ("A·B over two axes", md.einsum("ijk,lkj->il", A, C), "A₁C₁[A̅₂ C₃][A̅₃ C₂]", "Σ_p Σ_q A_iqp C_jpq"),
    ("²³⊙³²", md.hadamard(A, C, [1, 2], [2, 1]), "A₁[A₂ C₃][A₃ C₂]C₁", "A_ijk C_lkj"),
    ("outer", md.outer(X, x), "X₁X₂x₁", "X_ij x_k"),
    ("permute", md.permute(A, (2, 0, 1)), "A₃A₁A₂", "A_jki"),
    ("∂xxᵀ/∂x", md.jacobian(x @ x.T, x), "I₁x₁I₂ + x₁I₁I₂", "δ_ik x_j + δ_jk x_i"),
    ("trace", md.trace(Q), "[Q̅₁ Q₂]", "Σ_p Q_pp"),
]


@pytest.mark.parametrize("name,e,bracket,index", BRACKETS, ids=[b[0] for b in BRACKETS])
def test_bracket_and_index_notation(name, e, bracket, index):
    assert e.bracket() == bracket
    assert e.index() == index


def test_bracket_latex_and_errors():
    assert md.einsum("ij,ik->jk", X, Y).bracket(latex=True) == \
        "X_{2}Y_{2}\\left[\\overline{X_{1}} Y_{1}\\right]"
    with pytest.raises(md.NotSupportedError, match="describes contractions"):
        md.inv(Q).bracket()


@pytest.mark.parametrize("make,exc,pattern", [
    (lambda: md.permute(A, (0, 0, 1)), md.ShapeError, "repeat an axis"),
    (lambda: md.permute(A, (0, 1, 5)), md.ShapeError, "axis 5 of x is out of range"),
    (lambda: md.hadamard(A, C, [1], [0]), md.ShapeError, "axis 1 of A is k but axis 0 of C is p"),
    (lambda: md.hadamard(A, C, [1], None), md.MatdiffError, "both operands, or of neither"),
    (lambda: md.hadamard(A, C), md.ShapeError, "give the axes to pair"),
    (lambda: md.dot(A, C, [1, 2], [2]), md.ShapeError, "2 axes of A paired with 1 of C"),
    (lambda: md.tensordot(A, B, 4), md.ShapeError, "cannot sum 4 axes"),
    (lambda: md.tensordot(A, B, "x"), md.MatdiffError, "an int or a pair"),
    (lambda: md.reshape(A, "n", "k"), md.ShapeError, "has k·m·n entries"),
    (lambda: md.vec(X, "diagonal"), md.MatdiffError, "'column' or 'row'"),
])
def test_errors_name_what_and_how_to_fix(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


# ----------------------------------------------------------------------------- random einsum

LETTERS = "abcde"
DIM = {c: d for c, d in zip(LETTERS, (2, 3, 4, 2, 3))}


@st.composite
def einsum_expressions(draw):
    """1–3 operands of order 0–4 over five letters (each letter one size), an output of
    distinct letters used by some operand."""
    specs = [draw(st.text(LETTERS, min_size=0, max_size=4)) for _ in range(draw(st.integers(1, 3)))]
    used = sorted(set("".join(specs)))
    out = draw(st.permutations(used).map(lambda p: "".join(p))) if used else ""
    out = out[:draw(st.integers(0, min(len(out), 3)))]
    return specs, out


@settings(max_examples=40, deadline=None, derandomize=True)
@given(einsum_expressions())
def test_random_einsum_values_and_derivatives(expr):
    specs, out = expr
    ops = [md.tensor(f"T{i}", *(DIM[c] for c in s)) if s else md.scalar(f"T{i}")
           for i, s in enumerate(specs)]
    e = md.einsum(",".join(specs) + "->" + out, *ops)
    rng = np.random.default_rng(len(specs))
    vals = {f"T{i}": rng.normal(size=[DIM[c] for c in s]) for i, s in enumerate(specs)}
    np.testing.assert_allclose(e.evaluate(vals), np.einsum(",".join(specs) + "->" + out,
                                                           *vals.values()), rtol=1e-10, atol=1e-12)
    assert md.check(e) < 1e-6
    assert md.check(md.sum(md.tanh(e)) if e.ndim else md.tanh(e), order=2) < 1e-5


# ----------------------------------------------------------------------------- md.apply

T = md.tensor("T", "a", "b", "c")
TS = {"a": 3, "b": 2, "c": 4}
APPLY = [  # name, f applied along axes, the same computed by NumPy, sub-tensor by sub-tensor
    ("softmax of rows", md.apply(md.softmax, X, [1]),
     lambda a: np.exp(a["X"]) / np.exp(a["X"]).sum(1, keepdims=True)),
    ("softmax along axis 0 of T", md.apply(md.softmax, T, [0]),
     lambda a: np.transpose(np.exp(a["T"]) / np.exp(a["T"]).sum(0), (1, 2, 0))),
    ("tr tanh(MMᵀ) of each matrix", md.apply(lambda m: md.sum(md.tanh(m @ m.T)), T, [1, 2]),
     lambda a: np.array([np.tanh(m @ m.T).sum() for m in a["T"]])),
    ("outer product of each column", md.apply(lambda r: r @ r.T, T, [0]),
     lambda a: np.einsum("ibc,jbc->bcij", a["T"], a["T"])),
    ("a constant", md.apply(lambda r: md.ones("c"), T, [2]), lambda a: np.ones((3, 2, 4))),
]


@pytest.mark.parametrize("name,e,want", APPLY, ids=[a[0] for a in APPLY])
def test_apply_agrees_with_numpy_and_finite_differences(name, e, want):
    rng = np.random.default_rng(0)
    vals = {u.node.name: rng.normal(size=[{**SIZES, **TS}[d] for d in u.shape]) for u in e.variables}
    sizes = {**SIZES, **TS}
    np.testing.assert_allclose(e.evaluate(vals, sizes=sizes), want(vals), rtol=1e-12)
    if e.variables:
        assert md.check(md.sum(md.sin(e)), sizes=sizes, order=2) < 1e-5


def test_apply_derivative_is_the_tutorials_identity_32():
    """df ᴾ(X) = ∇f ᴾ(X) ⊙ dX: for row-wise softmax, ∂s(A)_ij/∂A_kl = δ_ik ∇s(A_i)_lj with
    ∇s(a) = diag(s) − ssᵀ, built here by hand."""
    J = md.jacobian(md.apply(md.softmax, X, [1]), X)
    Xv = np.random.default_rng(1).normal(size=(4, 3))
    S = np.exp(Xv) / np.exp(Xv).sum(1, keepdims=True)
    grads = [np.diag(s) - np.outer(s, s) for s in S]
    want = np.einsum("ik,ilj->ijkl", np.eye(4), np.array(grads))
    np.testing.assert_allclose(J.evaluate(X=Xv), want, atol=1e-14)


def test_apply_errors():
    with pytest.raises(md.NotSupportedError, match="apply: f uses inv"):
        md.apply(md.inv, md.tensor("U", "a", "b", "b"), [1, 2])
    with pytest.raises(md.ShapeError, match="repeat an axis"):
        md.apply(md.softmax, T, [1, 1])


def test_nested_sums_use_their_own_letters():
    e = md.apply(lambda m: md.sum(md.tanh(m @ m.T)), T, [1, 2])
    assert e.index() == "Σ_p Σ_q tanh([Σ_r T_ipr T_iqr])"
