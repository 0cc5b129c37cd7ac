"""Text input: both dialects, inferred shapes, declarations, precise errors, fuzzing."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import matdiff as md

# text, dialect, declarations, printed form, variables with their shapes
PARSED = [
    ("x'*A*x", "matrixcalculus", {}, "xᵀAx", {"A": ("n", "n"), "x": ("n",)}),
    ("norm2(X*w - y)^2", "matrixcalculus", {}, "‖Xw − y‖²",
     {"X": ("n", "m"), "w": ("m",), "y": ("n",)}),
    ("sum(log(1 + exp(-y.*(X*w))))", "matrixcalculus", {}, "1ᵀsoftplus(−(y ⊙ Xw))",
     {"X": ("n", "m"), "w": ("m",), "y": ("n",)}),
    ("tr(A*X*B)", "matrixcalculus", {}, None, {"A": ("n", "m"), "X": ("m", "k"), "B": ("k", "n")}),
    ("log(det(X))", "matrixcalculus", {}, "log(det(X))", {"X": ("n", "n")}),
    ("logdet(X) + tr(X) + 1", "matrixcalculus", {}, None, {"X": ("n", "n")}),
    ("x*y'", "matrixcalculus", {}, "xyᵀ", {"x": ("n",), "y": ("m",)}),
    ("a*x + b", "matrixcalculus", {}, None, {"a": (), "b": ("n",), "x": ("n",)}),
    ("A^2", "matrixcalculus", {}, "A²", {"A": ("n", "n")}),
    ("x.^2 ./ (1 + x.^2)", "matrixcalculus", {}, None, {"x": ("n",)}),
    ("sigmoid(X*W)", "matrixcalculus", {}, "σ(XW)", {"X": ("n", "m"), "W": ("m", "k")}),
    ("diag(x)*A*diag(x)", "matrixcalculus", {}, None, {"x": ("n",), "A": ("n", "n")}),
    ("vector(1)'*x", "matrixcalculus", {}, "1ᵀx", {"x": ("n",)}),
    ("matrix(2).*X", "matrixcalculus", {}, "2X", {"X": ("n", "m")}),
    ("kron(A, B)", "matrixcalculus", {}, "A ⊗ B", {"A": ("n", "m"), "B": ("k", "p")}),
    ("softmax(x)", "matrixcalculus", {}, "softmax(x)", {"x": ("n",)}),
    ("norm1(x) + norm2(x)", "matrixcalculus", {}, None, {"x": ("n",)}),
    ("x'*A*x", "matrixcalculus", {"A": "symmetric matrix"}, "xᵀAx", {"A": ("n", "n"), "x": ("n",)}),
    ("x'*A*x", "matrixcalculus", {"A": "matrix(d, d)", "x": "vector(d)"}, "xᵀAx",
     {"A": ("d", "d"), "x": ("d",)}),
    ("alpha*x", "matrixcalculus", {"alpha": "scalar"}, "αx", {"alpha": (), "x": ("n",)}),
    ("lambda(sigma(X*W))", "matrixcalculus", {"sigma": "function", "lambda": "scalar_function"},
     "λ(σ(XW))", {"X": ("n", "m"), "W": ("m", "k")}),
    ("x.T @ A @ x", "numpy", {}, "xᵀAx", {"A": ("n", "n"), "x": ("n",)}),
    ("sum(sigmoid(X @ w))", "numpy", {}, "1ᵀσ(Xw)", {"X": ("n", "m"), "w": ("m",)}),
    ("norm(X @ w - y)**2", "numpy", {}, "‖Xw − y‖²", {"X": ("n", "m"), "w": ("m",), "y": ("n",)}),
    ("sum(X, axis=0) @ w", "numpy", {}, None, {"X": ("n", "m"), "w": ("m",)}),
    ("trace(inv(A) @ B) + dot(x, x)", "numpy", {}, None, {"A": ("n", "n"), "B": ("n", "n"), "x": ("m",)}),
    ("softmax(X, axis=1) * X", "numpy", {}, None, {"X": ("n", "m")}),
]


@pytest.mark.parametrize("text,dialect,decls,printed,shapes", PARSED, ids=[p[0] + " " + p[1] for p in PARSED])
def test_parse(text, dialect, decls, printed, shapes):
    e = md.parse(text, dialect=dialect, **decls)
    if printed is not None:
        assert str(e) == printed
    assert {v.node.name: v.shape for v in e.variables} == shapes


def test_parsed_expression_equals_the_api_one():
    X, w, y = md.matrix("X", "n", "m"), md.vector("w", "m"), md.vector("y", "n")
    rng = np.random.default_rng(0)
    vals = {"X": rng.normal(size=(5, 3)), "w": rng.normal(size=3), "y": np.sign(rng.normal(size=5))}
    api = md.sum(md.log(1 + md.exp(-y * (X @ w))))
    for text, dialect in (("sum(log(1 + exp(-y.*(X*w))))", "matrixcalculus"),
                          ("sum(log(1 + exp(-y*(X@w))))", "numpy")):
        e = md.parse(text, dialect=dialect)
        np.testing.assert_allclose(e.evaluate(vals), api.evaluate(vals))
        g = md.grad(e, e.variables[1])
        np.testing.assert_allclose(g.evaluate(vals), md.grad(api, w).evaluate(vals))


def test_symmetric_declaration_reaches_the_derivative():
    e = md.parse("x'*A*x", A="symmetric matrix")
    A, x = e.variables
    assert A.node.symmetric and str(md.grad(e, x)) == "2Ax"


ERRORS = [
    ("x'*A*", "matrixcalculus", md.ParseError, "found the end of the input", 5),
    ("x'*A*x)", "matrixcalculus", md.ParseError, "unexpected '\\)'", 6),
    ("2 $ x", "matrixcalculus", md.ParseError, "unexpected character '\\$'", 2),
    ("f(x)", "matrixcalculus", md.ParseError, "unknown function 'f'", 0),
    ("x @ A", "matrixcalculus", md.ParseError, "belongs to the numpy dialect", 2),
    ("x'*A*x", "numpy", md.ParseError, "belongs to the matrixcalculus dialect", 1),
    ("x*A", "matrixcalculus", md.ShapeError, "multiplies x, a column vector \\(n\\), by A, a matrix", 1),
    ("A*x + y'", "matrixcalculus", md.ShapeError, "\\(A \\* x\\) is a column vector \\(n\\) but y' is a row vector", 4),
    ("tr(x)", "matrixcalculus", md.ShapeError, "tr needs a square matrix", 0),
    ("x^2", "matrixcalculus", md.ShapeError, "use .\\^ for an element-wise power", 1),
    ("sum(x, axis=1)", "matrixcalculus", md.ParseError, "sum takes 1 argument", 0),
    ("(x'*A*x", "matrixcalculus", md.ParseError, "expected '\\)'", 7),
    ("x y", "matrixcalculus", md.ParseError, "a missing operator", 2),
    ("", "matrixcalculus", md.ParseError, "empty", 0),
    ("x.T @ 2", "numpy", md.ShapeError, "use \\* with a scalar", 4),
]


@pytest.mark.parametrize("text,dialect,exc,pattern,column", ERRORS, ids=[e[0] or "empty" for e in ERRORS])
def test_errors_point_at_the_column(text, dialect, exc, pattern, column):
    with pytest.raises(exc, match=pattern) as info:
        md.parse(text, dialect=dialect)
    assert info.value.column == column
    if not text:
        return
    lines = str(info.value).splitlines()
    assert lines[1] == "  " + text and lines[2] == "  " + " " * column + "^"


def test_limits_and_declarations():
    with pytest.raises(md.ParseError, match="nests deeper than"):
        md.parse("(" * 150 + "x" + ")" * 150)
    with pytest.raises(md.ParseError, match="the limit is"):
        md.parse("x+" * 6000 + "x")
    with pytest.raises(md.ParseError, match="cannot read the declaration"):
        md.parse("x", x="tensor")
    with pytest.raises(md.ParseError, match="only a matrix can be symmetric"):
        md.parse("x", x="symmetric vector")
    with pytest.raises(md.MatdiffError, match="dialect must be one of"):
        md.parse("x", dialect="julia")


VALID = [p[0] for p in PARSED if p[1] == "matrixcalculus" and not p[2]]
ALPHABET = "xyzAXWab12.*+-/^'() ,"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=60))
def test_random_text_raises_only_matdiff_errors(text):
    try:
        md.parse(text)
    except md.MatdiffError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID), st.integers(0, 200), st.sampled_from(ALPHABET + "@#[]{}"),
       st.sampled_from(["insert", "delete", "replace"]))
def test_mutations_of_valid_input_raise_only_matdiff_errors(text, pos, char, how):
    pos %= len(text) + 1
    if how == "insert":
        text = text[:pos] + char + text[pos:]
    elif how == "delete":
        text = text[:pos] + text[pos + 1:]
    else:
        text = text[:pos] + char + text[pos + 1:]
    try:
        md.parse(text)
    except md.MatdiffError:
        pass


PRINTED_ALPHABET = "XWxyAσλ∇′ᵀ⁻¹⊙⊘⊗·√|()12/−+ ^∘,=²"
PRINTED_DECLS = dict(X="matrix(n, k)", W="matrix(k, m)", x="vector(n)", y="vector(n)",
                     A="matrix(n, n)", sigma="function", **{"lambda": "scalar_function"})


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=PRINTED_ALPHABET, max_size=80))
def test_random_printed_text_raises_only_matdiff_errors(text):
    try:
        md.parse(text, dialect="matdiff", **PRINTED_DECLS)
    except md.MatdiffError:
        pass


def test_printed_dialect_reads_the_notation():
    e = md.parse("Xᵀ(∇λ(σ(XW)) ⊙ σ′(XW))", dialect="matdiff", **PRINTED_DECLS)
    assert str(e) == "Xᵀ(∇λ(σ(XW)) ⊙ σ′(XW))" and e.shape == ("k", "m")
    e = md.parse("diag(s) − ssᵀ  where s = softmax(x)", dialect="matdiff", x="vector(n)")
    assert str(e) == "diag(s) − ssᵀ  where s = softmax(x)"
    assert str(md.parse("X1", dialect="matdiff", X="matrix(n, k)")) == "X1"
    assert md.parse("I", dialect="matdiff", result_shape=("n", "n")).shape == ("n", "n")
    with pytest.raises(md.ParseError, match="size of I is not fixed"):
        md.parse("I", dialect="matdiff")


# NumPy's broadcasting of a 1-D array over a matrix's rows: a bias, in the NumPy dialect
BIASES = [
    ("sum(tanh(X @ W1 + b1))", {}, {"b1": ("k",), "W1": ("m", "k")}, "b1"),
    ("sum(tanh(X @ W1 + b1))", {"b1": "vector(h)"}, {"b1": ("h",), "W1": ("m", "h")}, "b1"),
    ("sum(relu(X @ W1 + b1) @ W2 + b2)", {}, {"b2": ("p",), "W2": ("k", "p")}, "W1"),
    ("sum(sigmoid(b + X @ w2) * y)", {}, {"b": ("n",), "y": ("n",)}, "b"),
    ("sum((X - mu) ** 2)", {}, {"mu": ("m",), "X": ("n", "m")}, "mu"),
    ("sum(X * y)", {}, {"y": ("m",)}, "X"),
]


@pytest.mark.parametrize("text,decls,shapes,wrt", BIASES, ids=[b[0] for b in BIASES])
def test_a_vector_meets_each_row_of_a_matrix_in_the_numpy_dialect(text, decls, shapes, wrt):
    e = md.parse(text, dialect="numpy", **decls)
    got = {v.node.name: v.shape for v in e.variables}
    assert {k: got[k] for k in shapes} == shapes
    v = next(x for x in e.variables if x.node.name == wrt)
    assert md.check(e, v) < 1e-6


def test_a_bias_is_refused_where_its_declared_length_is_not_the_columns():
    with pytest.raises(md.ShapeError) as err:
        md.parse("X @ W + b", dialect="numpy", X="matrix(n, m)", W="matrix(m, k)", b="vector(n)")
    assert "(n × k)" in str(err.value) and "(n)" in str(err.value) and "number of columns" in str(err.value)


@pytest.mark.parametrize("text", ["x @ A @ x", "x @ y"])
def test_a_vector_on_the_left_of_at_is_told_to_transpose_in_the_numpy_dialect(text):
    """Vectors are columns, as in the Python API (whose message says x.T @ A): NumPy's 1-D
    reading of x @ A is refused with the fix, and the caret under the operator."""
    with pytest.raises(md.ShapeError, match=r"inner dims differ \(a vector is a column: transpose it with \.T") as e:
        md.parse(text, dialect="numpy")
    assert str(e.value).splitlines()[-1] == "    ^"
    fixed = text.replace("x @", "x.T @", 1)
    assert md.check(md.parse(fixed, dialect="numpy")) < 1e-6


# printed texts whose constant 1 or 0 has a size only other constants share: each was once read
# as the number (a different value); the column is the constant whose size is open
UNSIZED = [
    ("‖t1 + 1‖²", (), {"t": "scalar"}, "size of this 1", 2),  # ‖t1 + 1‖² of n, not (t + 1)²
    ("tr(A ⊗ 1)", (), {"A": "matrix(n, n)"}, "size of this 1", 7),  # tr(A ⊗ J), not tr A
    ("1ᵀsin(1/n)", (), {}, "length of this 1ᵀ", 0),  # Σᵢ sin(1/n), not sin(1/n)
    ("11ᵀ1ᵀ", ("n", "n"), {}, "size of this 1", 1),  # (n × k)(k × n): the middle 1ᵀ's k is open
    ("x + logsumexp(0, axis=1)", ("n",), {"x": "vector(n)"}, "size of this 0", 14),  # log k
]


@pytest.mark.parametrize("text,shape,decls,what,column", UNSIZED, ids=[u[0] for u in UNSIZED])
def test_a_constant_whose_size_its_use_leaves_open_is_refused_at_its_column(text, shape, decls, what, column):
    with pytest.raises(md.ParseError, match=f"the {what} is not fixed by its use") as info:
        md.parse(text, dialect="matdiff", result_shape=shape, n="dim", **decls)
    assert info.value.column == column
    lines = str(info.value).splitlines()
    assert lines[1] == "  " + text and lines[2] == "  " + " " * column + "^"
    assert "write it beside a" in lines[0]  # how to fix it


def test_constants_that_a_variable_or_the_result_sizes_read_back_with_their_values():
    rng = np.random.default_rng(7)
    xv, Bv, t = rng.standard_normal(3), rng.standard_normal((3, 3)), 0.3
    one, J = np.ones(3), np.ones((3, 3))
    for text, shape, want in (("‖t1 + x‖²", (), np.sum((t * one + xv) ** 2)),
                              ("softmax(n⁻¹·1)ᵀx", (), xv.mean()),  # the vector 1/n, as printed
                              ("(1ᵀB1)11ᵀ", ("n", "n"), Bv.sum() * J),
                              ("x + logsumexp(1ᵀ + xᵀ, axis=1)", ("n",), xv + np.log(np.exp(1 + xv).sum()))):
        e = md.parse(text, dialect="matdiff", result_shape=shape, x="vector(n)", B="matrix(n, n)",
                     t="scalar", n="dim")
        got = e.evaluate({k: v for k, v in {"x": xv, "B": Bv, "t": t}.items()
                          if k in {u.node.name for u in e.variables}}, sizes={"n": 3})
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=text)


def _read_back(e, result_shape):
    from matdiff.parse import declarations
    return md.parse(str(e), dialect="matdiff", result_shape=result_shape, **declarations(e))


def test_a_constant_that_only_the_result_sizes_is_refused_where_its_entries_mix():
    """Without result_shape a constant sized by the result's own open dim is read at size 1:
    (1ᵀx)1 reads as 1ᵀx, one entry of the vector.  Where entries mix along that dim (softmax,
    diag, tr, a product's inner dim) that reading changes the entries: softmax(1, axis=1)ᵀsin(x),
    each entry Σ sin(x)/k, was read as sin(x)ᵀsoftmax(1), Σ sin(x)/n.  It is refused there."""
    rng = np.random.default_rng(3)
    n, k = 3, 2
    xv = rng.standard_normal(n)
    x = md.vector("x", "n")
    e = md.softmax(md.ones("n", "k"), axis=1).T @ md.sin(x)
    assert str(e) == "softmax(1, axis=1)ᵀsin(x)"
    want = np.full(k, np.sin(xv).sum() / k)
    sizes = {"n": n, "k": k}
    np.testing.assert_allclose(e.evaluate({"x": xv}, sizes=sizes), want, rtol=1e-12)
    np.testing.assert_allclose(_read_back(e, e.shape).evaluate({"x": xv}, sizes=sizes), want, rtol=1e-12)
    with pytest.raises(md.ParseError, match="the size of this 1 is not fixed by its use") as info:
        _read_back(e, None)
    assert info.value.column == str(e).index("1")
    # (11ᵀ)², n11ᵀ, was read as the number 1: a matrix power mixes along both of its dims
    with pytest.raises(md.ParseError, match="the size of this 1 is not fixed by its use"):
        md.parse("(11ᵀ)²", dialect="matdiff", n="dim")
    got = md.parse("(11ᵀ)²", dialect="matdiff", result_shape=("n", "n"), n="dim").evaluate(sizes=sizes)
    np.testing.assert_allclose(got, np.linalg.matrix_power(np.ones((n, n)), 2), rtol=1e-12)
    # where nothing mixes, the open dim still reads at 1: the value is one entry of the result
    e = md.sum(x) * md.ones("k")
    assert str(e) == "(1ᵀx)1"
    back = _read_back(e, None)
    assert back.shape == () and np.isclose(back.evaluate({"x": xv}, sizes=sizes), xv.sum())


def test_a_function_of_a_constant_in_a_product_is_a_vector_as_printed():
    """f(c·1) beside another factor is a vector (the all-ones matrix prints 11ᵀ there), and so
    is the argument of softmax without axis= (a matrix prints with axis=): (1ᵀX log1p((1/2)1))B,
    a number times B, was read as the row 1ᵀX·log1p((1/2)11ᵀ)B, (yᵀsoftmax((1/2)1))x as the
    number yᵀsoftmax((1/2)11ᵀ, axis=1)x, and (log(2·1)ᵀx)y was refused."""
    rng = np.random.default_rng(4)
    n, k = 3, 2
    vals = {"x": rng.standard_normal(n), "y": rng.standard_normal(n), "X": rng.standard_normal((n, k)),
            "B": rng.standard_normal((n, n))}
    x, y = md.vector("x", "n"), md.vector("y", "n")
    X, B = md.matrix("X", "n", "k"), md.matrix("B", "n", "n")
    for e, text, want in (
            ((md.sum(X, axis=0) @ md.log1p(0.5 * md.ones("k"))) * B, "(1ᵀX log1p((1/2)1))B",
             vals["X"].sum() * np.log1p(0.5) * vals["B"]),
            ((x.T @ md.log(2 * md.ones("n"))) * y, "(log(2·1)ᵀx)y", np.log(2) * vals["x"].sum() * vals["y"]),
            ((y.T @ md.softmax(0.5 * md.ones("n"))) * x, "(yᵀsoftmax((1/2)1))x", vals["y"].mean() * vals["x"])):
        assert str(e) == text
        used = {v.node.name: vals[v.node.name] for v in e.variables}
        np.testing.assert_allclose(e.evaluate(used, sizes={"n": n, "k": k}), want, rtol=1e-12)
        for shape in (e.shape, None):
            got = _read_back(e, shape).evaluate(used, sizes={"n": n, "k": k})
            assert np.shape(got) == np.shape(want), (text, shape)
            np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=text)
    # so is a sum of such 1s: (s1 + 1)ᵀA(s1 + 1) is a number (it was read as a k × k matrix
    # of ones' multiple, (s1 + 1) as n × k, where the value is that number times I)
    e = md.parse("((s1 + 1)ᵀB(s1 + 1))I", dialect="matdiff", result_shape=("k", "k"), s="scalar",
                 B="matrix(n, n)", k="dim")
    c = 0.7 * np.ones(n) + 1
    np.testing.assert_allclose(e.evaluate({"s": 0.7, "B": vals["B"]}, sizes={"n": n, "k": k}),
                               c @ vals["B"] @ c * np.eye(k), rtol=1e-12)
