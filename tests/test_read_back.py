"""Printed text reads back as what it means, in every dialect: the matdiff text, the
matrixcalculus dialect and the NumPy dialect.  Each printed form either reads back to an
expression of equal value, or is refused — when it is written (the dialect cannot say it)
or when it is read (display-only text, such as a decomposition's named parts) — with a
MatdiffError that says so.  Never a misreading, never a raw exception."""
import numpy as np
import pytest

import matdiff as md
from matdiff.functions import PRINTED_FUNCTIONS
from matdiff.parse import declarations

DIALECTS = {"matdiff": "matdiff", "mc": "matrixcalculus", "numpy": "numpy"}


def _values(e, rng, n=3):
    out = {}
    for v in e.variables:
        shape = tuple(n if isinstance(d, str) else d for d in v.shape)
        a = rng.normal(size=shape)
        if v.node.symmetric:
            a = a @ a.T + n * np.eye(n)  # symmetric positive definite: logm, sqrtm, log λ
        elif len(shape) == 2 and shape[0] == shape[1]:
            a = a + 3 * np.eye(n)
        out[v.node.name] = a
    return out


def _reads_back_or_refuses(e, seed=0):
    """e's text in each dialect reads back to e's value, or is refused with a MatdiffError;
    returns the dialects that read back."""
    rng = np.random.default_rng(seed)
    values = _values(e, rng)
    want = e.evaluate(values)
    read = []
    for short, dialect in DIALECTS.items():
        try:
            text = str(e) if short == "matdiff" else e.text(short)
        except md.NotSupportedError:
            continue  # the dialect cannot write it: said when it is written
        try:
            back = md.parse(text, dialect=dialect, result_shape=e.shape, **declarations(e))
        except md.ParseError as err:  # display-only text, refused when read
            assert "for reading only" in str(err) or "not fixed by its use" in str(err), (text, err)
            continue
        used = {v.node.name for v in back.variables}
        got = back.evaluate({k: a for k, a in values.items() if k in used})
        np.testing.assert_allclose(np.reshape(got, np.shape(want)), want, rtol=1e-8, atol=1e-10,
                                   err_msg=f"{dialect}: {text}")
        read.append(short)
    return read


# every name the reader knows as a function, as a variable's name (σ is sigma's letter)
COLLIDING = sorted({"sigma" if f == "σ" else f for f in PRINTED_FUNCTIONS if f.isascii() or f == "σ"} |
                   {"norm", "sum", "sqrt", "mean", "inv", "kron", "logdet", "lambda"})


def _uses(c):
    x, y = md.vector("x", "n"), md.vector("y", "n")
    A = md.matrix("A", "n", "n")
    return [c * (x + y), (x + y) * c, md.sum(c * x) * c ** 2, md.exp(c) * x, c * md.log(c) * x,
            c ** 3 * md.sum(md.sigmoid(c * x)), md.grad(md.sum(md.tanh(c * A @ x)), c),
            md.grad(c ** 3 * md.sum(md.sigmoid(x * c)), x)]


@pytest.mark.parametrize("name", COLLIDING)
def test_a_variable_named_like_a_function_reads_back_as_the_variable(name):
    c = md.scalar(name)
    for e in _uses(c):
        assert "matdiff" in _reads_back_or_refuses(e), str(e)
    x = md.vector("x", "n")  # the derivatives among the uses, checked numerically
    assert md.check(c ** 3 * md.sum(md.sigmoid(x * c)), x) < 1e-6
    assert md.check(md.sum(md.tanh(c * md.matrix("A", "n", "n") @ x)), c) < 1e-6
    assert str(c * (md.vector("x", "n") + md.vector("y", "n"))).endswith("·(y + x)") == \
        (name in PRINTED_FUNCTIONS or name == "sigma")


def test_logdet_reads_back_in_the_matrixcalculus_dialect_where_det_is_negative():
    X = md.matrix("X", "n", "n")
    e = md.logdet(X)
    back = md.parse(e.text("mc"), dialect="matrixcalculus", X="matrix(n, n)")
    Xv = np.diag([-1.0, 2.0, 3.0])  # det < 0: log|det X| = log 6; log(det(X)) would be NaN
    assert np.isclose(back.evaluate(X=Xv), np.log(6.0))
    assert np.isclose(e.evaluate(X=Xv), np.log(6.0))


S = md.matrix("S", "n", "n", symmetric=True)
X = md.matrix("X", "n", "n")
a = md.vector("a", "n")
SPECTRAL = [
    ("Σ log λ(S)", lambda: md.sum(md.log(md.eigvalsh(S))), S),
    ("λ(S)ᵀλ(S)", lambda: md.eigvalsh(S).T @ md.eigvalsh(S), S),
    ("Σ λ³", lambda: md.sum(md.eigvalsh(S) ** 3), S),
    ("largest eigenvalue", lambda: md.eigvalsh(S)[-1], S),
    ("aᵀexp(S)a", lambda: a.T @ md.expm(S) @ a, S),
    ("tr sqrtm(S)", lambda: md.trace(md.sqrtm(S)), S),
    ("tr logm(S)", lambda: md.trace(md.logm(S)), S),
    ("aᵀ f(S) a, f = exp", lambda: a.T @ md.matrix_function(S, "exp") @ a, S),
    ("tr expm(X)", lambda: md.trace(md.expm(X)), X),
    ("tr logm(X)", lambda: md.trace(md.logm(X)), X),
    ("aᵀ sqrtm(X) a", lambda: a.T @ md.sqrtm(X) @ a, X),
    ("‖X‖_*", lambda: md.sum(md.svdvals(X)), X),
    ("σ₁(X)", lambda: md.norm(X, 2), X),
]


@pytest.mark.parametrize("name,build,wrt", SPECTRAL, ids=[s[0] for s in SPECTRAL])
def test_spectral_results_read_back_or_are_marked_display_only(name, build, wrt):
    f = build()
    assert "matdiff" in _reads_back_or_refuses(f), str(f)
    g = md.grad(f, wrt)
    _reads_back_or_refuses(g)
    assert md.check(f, wrt, kinds={"S": "spd", "X": "spd"}) < 1e-5


def test_a_decomposition_clause_is_refused_as_display_only_with_a_caret():
    g = md.grad(a.T @ md.expm(S) @ a, S)
    text = str(g)
    assert "where S = UΛUᵀ" in text
    with pytest.raises(md.ParseError, match="for reading only") as err:
        md.parse(text, dialect="matdiff", **declarations(g))
    assert str(err.value).rstrip().endswith("^")


def test_a_product_dim_in_a_repr_rebuilds_the_same_dim():
    """repr writes a product dim as "k·n"; md.ones("k·n") (or "k*n") is that product, not a
    new dim named k·n (which 1ᵀ(A ⊗ w)1 could not be rebuilt with: k·n ≠ k·n)."""
    A, w = md.matrix("A", "n", "n"), md.vector("w", "k")
    e = md.sum(md.kron(A, w))
    back = eval(repr(e), {"md": md, "A": A, "w": w})
    assert back.shape == e.shape and md.ones("k·n").shape == md.ones("n*k").shape == md.kron(A, w).shape[:1]
    rng = np.random.default_rng(0)
    values = {"A": rng.normal(size=(3, 3)), "w": rng.normal(size=2)}
    np.testing.assert_allclose(back.evaluate(values), e.evaluate(values))
    assert md.check(e, A) < 1e-8
    with pytest.raises(md.MatdiffError, match="identifier"):
        md.ones("k··n")


def _nested_norms():
    x, y, z = md.vector("x", "n"), md.vector("y", "n"), md.vector("z", "n")
    A = md.matrix("A", "n", "n")
    inner = md.norm(2 * (md.norm(y) * x) - 0.75 * y)
    return [("‖2‖y‖x − (3/4)y‖", inner), ("its gradient by x", md.grad(inner, x)),
            ("‖‖y‖x + z‖", md.norm(md.norm(y) * x + z)), ("‖3‖y‖Ax‖", md.norm(3 * md.norm(y) * (A @ x))),
            ("‖x‖y‖ − z‖", md.norm(x * md.norm(y) - z)), ("‖xᵀAx‖y‖x‖", md.norm((x.T @ A @ x) * md.norm(y) * x)),
            ("‖A + 2‖y‖A‖₂", md.norm(A + 2 * md.norm(y) * A, 2)),
            ("‖A + 2‖y‖A‖_*", md.norm(A + 2 * md.norm(y) * A, "nuc"))]


NESTED_NORMS = _nested_norms()


@pytest.mark.parametrize("name, e", NESTED_NORMS, ids=[c[0] for c in NESTED_NORMS])
def test_a_norm_inside_a_norm_reads_back_as_it_means(name, e):
    """Within bars, a norm after a factor is set off by ·: ‖2·‖y‖x − (3/4)y‖, where
    ‖2‖y‖x − (3/4)y‖ read back as ‖2‖ times y times ‖x − (3/4)y‖ (a shape error), and
    ‖A + 2‖y‖A‖₂ as ‖A + 2‖ times y times ‖A‖₂ (a wrong value)."""
    text = str(e)
    assert "·‖" in text or text.count("‖") < 4 or "‖‖" in text, text
    assert "matdiff" in _reads_back_or_refuses(e), text
