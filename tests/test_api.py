"""The public API: linear-algebra semantics, shapes, evaluation, and precise errors."""
import numpy as np
import pytest

import matdiff as md

rng = np.random.default_rng(0)
X, w, y = md.matrix("X", "n", "k"), md.vector("w", "k"), md.vector("y", "n")
A, x, a, b = md.matrix("A", "n", "n"), md.vector("x", "n"), md.vector("a", "n"), md.vector("b", "n")
Xv, wv, yv = rng.normal(size=(5, 3)), rng.normal(size=3), rng.normal(size=5)
Av, xv, av, bv = rng.normal(size=(5, 5)), rng.normal(size=5), rng.normal(size=5), rng.normal(size=5)
VALUES = {"X": Xv, "w": wv, "y": yv, "A": Av, "x": xv, "a": av, "b": bv}


def ev(e):
    used = {v.node.name for v in e.variables}
    return e.evaluate({k: v for k, v in VALUES.items() if k in used})


# ----------------------------------------------------------------------------- semantics
SEMANTICS = [
    ("aᵀXb is a scalar", a.T @ A @ b, av @ Av @ bv),
    ("x yᵀ is an outer product", x @ y.T, np.outer(xv, yv)),
    ("x.T is a row", x.T @ A, xv @ Av),
    ("X w", X @ w, Xv @ wv),
    ("Xᵀ y", X.T @ y, Xv.T @ yv),
    ("* is Hadamard", A * A, Av * Av),
    ("/ is element-wise", x / (1 + x * x), xv / (1 + xv * xv)),
    ("** is element-wise", A ** 3, Av ** 3),
    ("numbers mix in", 1 + md.exp(x), 1 + np.exp(xv)),
    ("2 - x", 2 - x, 2 - xv),
    ("x / 2", x / 2, xv / 2),
    ("unary minus", -A, -Av),
    ("trace", md.trace(A), np.trace(Av)),
    ("det", md.det(A), np.linalg.det(Av)),
    ("logdet", md.logdet(A @ A.T), np.linalg.slogdet(Av @ Av.T)[1]),
    ("inv", md.inv(A), np.linalg.inv(Av)),
    ("diag of a vector", md.diag(x), np.diag(xv)),
    ("diag of a matrix", md.diag(A), np.diag(Av)),
    ("sum", md.sum(X), Xv.sum()),
    ("column sums", md.sum(X, axis=0), Xv.sum(0)),
    ("row sums", md.sum(X, axis=1), Xv.sum(1)),
    ("negative axis", md.sum(X, axis=-1), Xv.sum(1)),
    ("kron", md.kron(A, X), np.kron(Av, Xv)),
    ("kron of vectors", md.kron(x, y), np.kron(xv, yv)),
    ("kron of a column and a row", md.kron(x, w.T), np.kron(xv[:, None], wv[None, :])),
    ("outer", md.outer(x, w), np.outer(xv, wv)),
    ("dot", md.dot(x, y), xv @ yv),
    ("norm", md.norm(x), np.linalg.norm(xv)),
    ("Frobenius norm", md.norm(X), np.linalg.norm(Xv)),
    ("1-norm", md.norm(x, 1), np.abs(xv).sum()),
    ("ones", md.ones("n") * x, xv),
    ("eye", md.eye("n") @ x, xv),
    ("zeros", md.zeros("n") + x, xv),
    ("softmax", md.softmax(x), np.exp(xv) / np.exp(xv).sum()),
    ("softmax rows", md.softmax(X, axis=1), np.exp(Xv) / np.exp(Xv).sum(1, keepdims=True)),
    ("softmax columns", md.softmax(X, axis=0), np.exp(Xv) / np.exp(Xv).sum(0)),
    ("logsumexp rows", md.logsumexp(X, axis=1), np.log(np.exp(Xv).sum(1))),
    ("logsumexp", md.logsumexp(x), np.log(np.exp(xv).sum())),
    ("sigmoid", md.sigmoid(x), 1 / (1 + np.exp(-xv))),
    ("softplus", md.softplus(x), np.log1p(np.exp(xv))),
    ("relu", md.relu(x), np.maximum(xv, 0)),
    ("sign", md.sign(x), np.sign(xv)),
    ("abs", md.abs(x), np.abs(xv)),
    ("sqrt", md.sqrt(md.abs(x)), np.sqrt(np.abs(xv))),
    ("tan", md.tan(x), np.tan(xv)),
    ("einsum", md.einsum("ij,jk->ik", A, X), Av @ Xv),
    ("transpose twice", A.T.T, Av),
]


@pytest.mark.parametrize("name,expr,want", SEMANTICS, ids=[s[0] for s in SEMANTICS])
def test_semantics(name, expr, want):
    got = ev(expr)
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_shapes_and_orientation():
    assert (a.T @ A @ b).shape == ()
    assert (x @ w.T).shape == ("n", "k")
    assert x.T.row and not x.row and x.T.T == x
    assert md.sum(X, axis=0).row and not md.sum(X, axis=1).row
    assert md.jacobian(md.sigmoid(X @ w), w).shape == ("n", "k")
    assert md.hessian(md.norm(X @ w - y) ** 2, w).shape == ("k", "k")
    assert md.grad(md.norm(X @ w - y) ** 2, w).shape == ("k",)
    assert md.jacobian(X, X).shape == ("n", "k", "n", "k")
    assert md.hessian(md.sigmoid(x), x).shape == ("n", "n", "n")
    assert md.derivative is md.jacobian
    assert md.tensor("T", "i", "j", 3).shape == ("i", "j", 3)


def test_equal_expressions_are_shared():
    assert (X @ w).node is (X @ w).node
    assert md.grad(x.T @ A @ x, x) == md.grad(x.T @ A @ x, x)


def test_evaluate_keys_may_be_variables_and_kwargs():
    f = md.norm(X @ w - y) ** 2
    want = np.sum((Xv @ wv - yv) ** 2)
    assert np.isclose(f.evaluate({X: Xv, w: wv, y: yv}), want)
    assert np.isclose(f.evaluate(X=Xv, w=wv, y=yv), want)
    assert isinstance(f.evaluate(X=Xv, w=wv, y=yv), np.ndarray)


def test_derivative_accepts_values_of_the_original_expression():
    f = md.norm(X @ w - y) ** 2
    H = md.hessian(f, w)  # 2XᵀX uses X only, but w and y may be passed along
    np.testing.assert_allclose(H.evaluate(X=Xv, w=wv, y=yv), 2 * Xv.T @ Xv)


def test_symmetric_gradient_convention():
    S = md.matrix("S", "n", "n", symmetric=True)
    g = md.grad(md.trace(A @ S), S)  # (A + Aᵀ)/2: the gradient within symmetric matrices
    Sv = Av + Av.T
    np.testing.assert_allclose(g.evaluate(A=Av, S=Sv), (Av + Av.T) / 2)
    assert md.check(md.logdet(S), S, kinds={"S": "spd"}) < 1e-6


def test_higher_orders():
    f = md.sum(md.sin(x))
    third = md.jacobian(md.hessian(f, x), x)
    got = third.evaluate(x=xv)
    want = np.zeros((5, 5, 5))
    want[np.arange(5), np.arange(5), np.arange(5)] = -np.cos(xv)
    np.testing.assert_allclose(got, want, atol=1e-14)


def test_no_delta_is_materialised():
    """The logistic-loss Hessian Xᵀdiag(d)X on 200 000 samples: an n × n diagonal would
    need 320 GB, so this only runs if the diagonal stays symbolic."""
    yl = md.vector("y", "n")
    H = md.hessian(md.sum(md.softplus(-yl * (X @ w))), w)
    n = 200_000
    Xbig, ybig = rng.normal(size=(n, 2)), np.sign(rng.normal(size=n))
    wsmall = rng.normal(size=2)
    z = ybig * (Xbig @ wsmall)
    d = 1 / (1 + np.exp(-z)) / (1 + np.exp(z))
    np.testing.assert_allclose(H.evaluate(X=Xbig, w=wsmall, y=ybig), Xbig.T @ (d[:, None] * Xbig),
                               rtol=1e-10)
    big = md.vector("v", "n")
    np.testing.assert_allclose(md.sum(md.diag(big) @ big).evaluate(v=z), z @ z, rtol=1e-12)


def test_abstract_functions_evaluate_with_given_implementations():
    sigma = md.function("sigma", numpy=[np.tanh, lambda t: 1 - np.tanh(t) ** 2])
    g = md.grad(md.sum(sigma(X @ w)), w)
    np.testing.assert_allclose(g.evaluate(X=Xv, w=wv), Xv.T @ (1 - np.tanh(Xv @ wv) ** 2))
    lam = md.scalar_function("lambda")
    g = md.grad(lam(x), x)
    np.testing.assert_allclose(g.evaluate(x=xv, functions={"lambda": [np.sum, np.ones_like]}),
                               np.ones(5))


def test_check_returns_the_error_and_raises_on_a_wrong_derivative():
    f = md.sum(md.sin(x))
    assert md.check(f, x) < 1e-8
    # a function whose declared derivative is wrong is caught
    wrong = md.function("wrong", derivative=lambda z: md.cos(z) * 2, numpy=np.sin)
    with pytest.raises(md.CheckError, match="disagrees with finite differences"):
        md.check(md.sum(wrong(x)), x)


# ----------------------------------------------------------------------------- errors
S2 = md.matrix("S", "n", "n", symmetric=True)
ERRORS = [
    ("matmul mismatch", lambda: X @ md.vector("w", "m"), md.ShapeError,
     r"X @ w: X is \(n, k\) but w is a column vector \(m,\): k ≠ m"),
    ("column on the left", lambda: x @ A, md.ShapeError, r"did you mean x.T @ A\?"),
    ("row on the right", lambda: A @ x.T, md.ShapeError, r"did you mean A @ x.T.T\?|A @ x"),
    ("scalar with @", lambda: md.scalar("s") @ A, md.ShapeError, "use \\* to multiply by the scalar s"),
    ("add mismatch", lambda: x + w, md.ShapeError, r"x \+ w: x is a column vector \(n,\) but w is a column vector \(k,\): n ≠ k"),
    ("row plus column", lambda: x + x.T, md.ShapeError, r"transpose one of them"),
    ("hadamard mismatch", lambda: X * A, md.ShapeError, r"X \* A: X is \(n, k\) but A is \(n, n\): k ≠ n"),
    ("trace non-square", lambda: md.trace(X), md.ShapeError, r"trace needs a square matrix, but X is \(n, k\)"),
    ("det non-square", lambda: md.det(X), md.ShapeError, "det needs a square matrix"),
    ("inv non-square", lambda: md.inv(X), md.ShapeError, "inv needs a square matrix"),
    ("inv of a vector", lambda: md.inv(x), md.ShapeError, "inv needs a square matrix"),
    ("grad of a vector", lambda: md.grad(X @ w, w), md.ShapeError, "the gradient needs a scalar.*use md.jacobian"),
    ("grad by an expression", lambda: md.grad(md.sum(X @ w), X @ w), md.MatdiffError,
     "can only differentiate with respect to a variable"),
    ("grad by a number", lambda: md.grad(md.sum(x), 3), md.MatdiffError, "with respect to a variable"),
    ("symmetric non-square", lambda: md.matrix("S", "n", "k", symmetric=True), md.ShapeError,
     r"symmetric=True needs a square matrix, but S is \(n, k\)"),
    ("zero dim", lambda: md.matrix("Z", 0, 3), md.MatdiffError, "must be positive"),
    ("bad dim name", lambda: md.vector("z", "n k"), md.MatdiffError, "dimension name must be an identifier"),
    ("bad variable name", lambda: md.vector("2x", "n"), md.MatdiffError, "variable name must be an identifier"),
    ("softmax needs an axis", lambda: md.softmax(X), md.ShapeError, "axis=1 for each row"),
    ("axis out of range", lambda: md.sum(X, axis=2), md.ShapeError, r"axis must be an int in \[-2, 1\]"),
    ("norm 1 of a matrix", lambda: md.norm(X, 1), md.NotSupportedError, r"md.sum\(md.abs\(X\)\)"),
    ("norm 3", lambda: md.norm(x, 3), md.NotSupportedError, "only the 2-norm"),
    ("numpy array", lambda: x + np.ones(3), md.MatdiffError, "declare arrays as variables"),
    ("truth value", lambda: bool(x), md.MatdiffError, "no truth value"),
    ("builtin name", lambda: md.function("exp"), md.MatdiffError, "built-in function"),
    ("same name, other shape", lambda: md.grad(md.sum(x) + md.sum(md.vector("x", "k")), x),
     md.ShapeError, "two different variables are named 'x'"),
    ("missing value", lambda: (X @ w).evaluate(X=Xv), md.EvaluationError, r"no value for w \(k,\)"),
    ("extra value", lambda: (X @ w).evaluate(X=Xv, w=wv, q=1), md.EvaluationError,
     "values were given for 'q', which the expression does not use"),
    ("wrong rank", lambda: (X @ w).evaluate(X=Xv, w=Xv), md.ShapeError, r"w is declared \(k,\) but its array has shape \(5, 3\)"),
    ("inconsistent dims", lambda: (md.sum(X) + md.sum(y)).evaluate(X=Xv, y=np.ones(6)), md.ShapeError,
     "n is 5 from X but 6 from y"),
    ("not symmetric", lambda: md.trace(S2).evaluate(S=Av), md.EvaluationError, "declared symmetric but its array is not"),
    ("not numbers", lambda: md.sum(x).evaluate(x=["a", "b"]), md.EvaluationError, "not an array of numbers"),
    ("abstract without values", lambda: md.sum(md.function("sigma")(x)).evaluate(x=xv), md.NotSupportedError,
     r"sigma has no numeric implementation"),
    ("unknown dim size", lambda: md.eye("n").evaluate(), md.EvaluationError, r"pass sizes=\{'n': …\}"),
    ("singular inverse", lambda: md.inv(A).evaluate(A=np.zeros((3, 3))), md.EvaluationError, "matrix function failed"),
    ("check kind", lambda: md.check(md.sum(x), x, kinds={"x": "weird"}), md.MatdiffError, "unknown input kind"),
    ("explicit sizes", lambda: md.explicit(md.sum(x)), md.MatdiffError, "give sizes for n"),
    ("einsum ellipsis", lambda: md.einsum("...j,jk->k", A, X), md.NotSupportedError, r"'\.\.\.'.*\n  \.\.\.j,jk->k\n  \^"),
    ("einsum shapes", lambda: md.einsum("ij,jk->ik", X, X), md.ShapeError, r"axis j is k in one operand and n in X\n  ij,jk->ik\n     \^"),
    ("einsum letters", lambda: md.einsum("ij,j2->i", A, X), md.ShapeError, r"'2' is not an axis letter\n  ij,j2->i\n      \^"),
    ("einsum order", lambda: md.einsum("ijk,jk->i", A, X), md.ShapeError, "'ijk' names 3 axes but A is"),
    ("einsum output", lambda: md.einsum("ij,jk->iz", A, X), md.ShapeError, r"output axis z is in no operand\n  ij,jk->iz\n          \^"),
]


@pytest.mark.parametrize("name,make,exc,pattern", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(name, make, exc, pattern):
    with pytest.raises(exc, match=pattern) as info:
        make()
    assert isinstance(info.value, md.MatdiffError)
