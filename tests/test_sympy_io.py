"""SymPy interop (issue 13): results written as SymPy matrix expressions and evaluated by
SymPy equal matdiff's values; SymPy's own matrix derivatives read back equal matdiff's."""
import numpy as np
import pytest

import matdiff as md

sp = pytest.importorskip("sympy")

n, k = "n", "k"
x, y = md.vector("x", n), md.vector("y", n)
A, X = md.matrix("A", n, n), md.matrix("X", n, k)
w = md.vector("w", k)
SIZES = {"n": 3, "k": 2}


def _values(seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.uniform(0.5, 1.5, 3), "y": rng.standard_normal(3), "A": rng.standard_normal((3, 3)) + 3 * np.eye(3),
            "X": rng.standard_normal((3, 2)), "w": rng.standard_normal(2)}


def _sympy_value(s, values):
    """A SymPy matrix expression evaluated with numbers for its MatrixSymbols and dims."""
    subs = {}
    for sym in s.free_symbols:
        if isinstance(sym, sp.MatrixSymbol):
            v = np.atleast_2d(values[sym.name])
            subs[sym] = sp.Matrix(v.T if v.shape[0] == 1 and sym.shape[1] == 1 else v)
        elif sym.name in SIZES:
            subs[sym] = SIZES[sym.name]
    dims = {sp.Symbol(d, positive=True, integer=True): v for d, v in SIZES.items()}
    out = s.subs(subs).subs(dims).doit()
    out = out.as_explicit() if hasattr(out, "as_explicit") else out
    return np.array(sp.N(out), dtype=float).squeeze()


CASES = [
    md.grad(x.T @ A @ x, x), md.grad(md.logdet(A), A), md.grad(md.norm(A @ x - y), x),
    md.grad(md.sum(md.sigmoid(X @ w)), w), md.grad(md.trace(md.inv(A)), A), md.hessian(md.sum(md.exp(X @ w)), w),
    md.grad(md.det(A @ A), A), x.T @ A @ x, md.kron(A, A.T), md.grad(md.sum(md.tanh(X @ w) ** 2), w),
]


@pytest.mark.parametrize("k", range(len(CASES)))
def test_a_result_written_in_sympy_has_the_same_value(k):
    e = CASES[k]
    values = {v.node.name: _values()[v.node.name] for v in e.variables}
    np.testing.assert_allclose(_sympy_value(e.to_sympy(), values), e.evaluate(values), rtol=1e-9)


@pytest.mark.parametrize("build", [
    lambda S, sx, sy, SX: (sx.T * S * sx).diff(sx),
    lambda S, sx, sy, SX: (sx.T * S * sy).diff(S),
    lambda S, sx, sy, SX: sp.Trace(S * S.T).diff(S),
    lambda S, sx, sy, SX: sp.Determinant(S) * sp.Trace(S.I * sx * sy.T),  # SymPy leaves d det unevaluated
    lambda S, sx, sy, SX: (sx.T * S.I * sy).diff(S),
])
def test_sympy_derivatives_read_back_equal_matdiffs(build):
    dn = sp.Symbol("n", positive=True, integer=True)
    S, sx, sy = sp.MatrixSymbol("A", dn, dn), sp.MatrixSymbol("x", dn, 1), sp.MatrixSymbol("y", dn, 1)
    d = md.from_sympy(build(S, sx, sy, None))
    values = {v.node.name: _values(1)[v.node.name] for v in d.variables}
    np.testing.assert_allclose(d.evaluate(values), _sympy_value(build(S, sx, sy, None), values), rtol=1e-9)


def test_from_sympy_reads_an_expression_matdiff_can_differentiate():
    dn = sp.Symbol("n", positive=True, integer=True)
    S, sx = sp.MatrixSymbol("A", dn, dn), sp.MatrixSymbol("x", dn, 1)
    f = md.from_sympy(sx.T * S * sx)
    xv = next(v for v in f.variables if v.node.name == "x")
    assert str(md.grad(f, xv)) == "(A + Aᵀ)x"


def test_what_has_no_sympy_form_says_so():
    sigma = md.function("sigma")
    with pytest.raises(md.NotSupportedError, match="SymPy"):
        md.grad(md.sum(sigma(X @ w)), w).to_sympy()
    with pytest.raises(md.MatdiffError, match="from_sympy"):
        md.from_sympy(sp.Symbol("t") < 1)


@pytest.mark.parametrize("build, what", [
    (lambda: md.trace(md.expm(md.matrix("X", 2, 2))), "a matrix function of a general matrix"),
    (lambda: md.eigvalsh(md.matrix("S", 2, 2, symmetric=True))[0], "an eigen-decomposition"),
])
def test_explicit_names_what_it_cannot_write(build, what):
    """A node with no entry-by-entry SymPy form is a NotSupportedError naming it (it was a
    KeyError naming an IR class)."""
    pytest.importorskip("sympy")
    with pytest.raises(md.NotSupportedError, match=what):
        md.explicit(build())
