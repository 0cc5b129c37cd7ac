"""SymPy interop: ``Expr.to_sympy()`` writes a result as a SymPy matrix expression, and
``md.from_sympy(e)`` reads SymPy's MatrixSymbol expressions, so a SymPy user can check
matdiff's answers in SymPy and move over.

Vectors are n × 1 MatrixSymbols in SymPy (a row is a transposed one); dims are SymPy
Symbols named as matdiff's dims.  What either side cannot write raises NotSupportedError
naming it.  SymPy is imported only when these are called.
"""
from __future__ import annotations

from fractions import Fraction

from . import dims as D
from . import library as L
from . import notation as N
from .errors import MatdiffError, NotSupportedError
from .expr import Expr, lift

ELEMENTWISE = ("exp", "log", "sin", "cos", "tan", "tanh", "cosh", "sinh", "sqrt", "abs", "sign")


def _sympy():
    try:
        import sympy
    except ImportError:  # pragma: no cover - sympy is in the test extra
        raise NotSupportedError("SymPy interop needs SymPy: pip install 'matdiff[sympy]'") from None
    return sympy


def _dim(sp, d):
    if isinstance(d, int):
        return sp.Integer(d)
    return sp.Mul(*[sp.Integer(f) if isinstance(f, int) else sp.Symbol(f, positive=True, integer=True)
                    for f in D.factors(d)])


def to_sympy(e) -> object:
    """The SymPy matrix expression of ``e`` (its matrix notation): MatrixSymbols, MatMul,
    MatAdd, Transpose, Inverse, HadamardProduct, KroneckerProduct, Trace, Determinant,
    elementwise functions as ``applyfunc``."""
    sp = _sympy()
    e = lift(e)
    return _to(sp, e.notation())


def _to(sp, m):  # noqa: C901 - one case per notation node, as the printers' tables
    from sympy.matrices.expressions.diagonal import DiagMatrix
    go = lambda x: _to(sp, x)  # noqa: E731
    if isinstance(m, N.Sym):
        shape = [_dim(sp, d) for d in m.dims]
        if m.role == "var":
            if m.kind == "s":
                return sp.Symbol(m.name, real=True)
            rows, cols = (shape + [sp.Integer(1)])[:2] if m.kind == "c" else shape
            return sp.MatrixSymbol(m.name, rows, cols)
        if m.role == "eye":
            return sp.Identity(shape[0])
        if m.role == "dim":
            return shape[0]
        if m.role == "commutation":
            raise NotSupportedError("to_sympy: the commutation matrix K has no SymPy matrix expression")
        if m.role == "basis":
            raise NotSupportedError(f"to_sympy: the unit vector e_{m.name} (an indexed entry) has no "
                                    f"SymPy matrix expression")
        cls = sp.OneMatrix if m.role == "one" else sp.ZeroMatrix
        if m.kind == "s":
            return sp.Integer(1 if m.role == "one" else 0)
        return cls(shape[0], sp.Integer(1)) if m.kind == "c" else \
            cls(sp.Integer(1), shape[0]) if m.kind == "r" else cls(*shape)
    if isinstance(m, N.Num):
        f = Fraction(m.value).limit_denominator(1000)  # 1/2 as a rational, as the printers do
        return sp.Rational(f.numerator, f.denominator) if float(f) == m.value else sp.Float(m.value)
    if isinstance(m, N.T):
        return sp.Transpose(go(m.arg))
    if isinstance(m, N.Inv):
        return sp.Inverse(go(m.arg))
    if isinstance(m, N.MatPow):
        base = go(m.arg) if m.k > 0 else sp.Inverse(go(m.arg))
        return sp.MatPow(base, abs(m.k))
    if isinstance(m, N.Prod):
        factors = [go(f) for f in m.factors]
        scalars = [f for f, x in zip(factors, m.factors) if x.kind == "s"]
        mats = [f for f, x in zip(factors, m.factors) if x.kind != "s"]
        coef = go(N.Num("s", m.coef))
        scalar = sp.Mul(coef, *[_scalar(sp, s) for s in scalars])
        if not mats:
            return scalar
        return sp.MatMul(*mats) if scalar == 1 else sp.MatMul(scalar, *mats)
    if isinstance(m, N.Add):
        terms = [go(N.prod(c, [t])) for c, t in m.terms]
        return sp.MatAdd(*terms) if m.kind != "s" else sp.Add(*[_scalar(sp, t) for t in terms])
    if isinstance(m, N.Had):
        if m.kind == "s":
            return sp.Mul(*[_scalar(sp, go(f)) for f in m.factors])
        return sp.HadamardProduct(*[go(f) for f in m.factors])
    if isinstance(m, N.Kron):
        return sp.KroneckerProduct(*[go(f) for f in m.factors])
    if isinstance(m, N.Pow):
        if m.kind == "s":
            return sp.Pow(_scalar(sp, go(m.arg)), sp.nsimplify(m.p))
        return sp.HadamardPower(go(m.arg), sp.nsimplify(m.p))
    if isinstance(m, N.Call) and not m.order and (m.fn is None or getattr(m.fn, "builtin", False)):
        arg = go(m.arg)
        if m.name == "tr":
            return sp.Trace(arg)
        if m.name == "det":
            return sp.Determinant(arg)
        if m.name == "logdet":
            return sp.log(sp.Determinant(arg))
        if m.name == "diag" and m.kind == "m":
            return DiagMatrix(arg)
        if m.name == "norm":
            inner = sp.MatMul(sp.Transpose(arg), arg) if m.arg.kind == "c" else \
                sp.Trace(sp.MatMul(sp.Transpose(arg), arg))
            return sp.sqrt(_scalar(sp, inner))
        if m.name in ELEMENTWISE or m.name == "sigmoid":
            f = (lambda t: 1 / (1 + sp.exp(-t))) if m.name == "sigmoid" else getattr(sp, m.name)
            if m.kind == "s":
                return f(_scalar(sp, arg))
            d = sp.Dummy("d")
            return arg.applyfunc(sp.Lambda(d, f(d)))
    raise NotSupportedError(f"SymPy has no matrix expression for {_what(m)}; use "
                            f"md.explicit(expr) for an entry-by-entry SymPy matrix")


Expr.to_sympy = lambda self: to_sympy(self)  # noqa: E731 - the method, where the function is
Expr.to_sympy.__doc__ = "The SymPy matrix expression of this expression (``md.to_sympy``)."


def _scalar(sp, s):
    """A 1 × 1 matrix expression (xᵀy) as SymPy's scalar: its trace, which stays symbolic."""
    return sp.Trace(s) if getattr(s, "is_MatrixExpr", False) else s


def _what(m) -> str:
    if isinstance(m, N.Index):
        return "an index-notation result (order above 2)"
    if isinstance(m, N.Call):
        return f"{m.name}{'′' * m.order}"
    return type(m).__name__


def from_sympy(e) -> Expr:
    """A matdiff expression from a SymPy matrix expression over MatrixSymbols (n × 1 ones
    are vectors) and Symbols (scalars)."""
    sp = _sympy()
    return lift(_from(sp, sp.sympify(e), {}))


def _from_dim(sp, d):
    d = sp.sympify(d)
    if d.is_Integer:
        return int(d)
    if d.is_Symbol:
        return d.name
    if d.is_Mul:
        out = 1
        for f in d.args:
            out = D.mul(out, _from_dim(sp, f))
        return out
    raise NotSupportedError(f"the dim {d} is neither a number, a name nor a product of those")


def _from(sp, e, memo):  # noqa: C901 - one case per SymPy class
    from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
    from sympy.matrices.expressions.diagonal import DiagMatrix
    from sympy.matrices.expressions.matexpr import MatrixElement
    go = lambda x: _from(sp, x, memo)  # noqa: E731
    if isinstance(e, sp.MatrixSymbol):
        rows, cols = (_from_dim(sp, d) for d in e.shape)
        key = ("m", e.name)
        if key not in memo:
            memo[key] = L.vector(e.name, rows) if cols == 1 else \
                L.vector(e.name, cols).T if rows == 1 else L.matrix(e.name, rows, cols)
        return memo[key]
    if isinstance(e, sp.Symbol):
        key = ("s", e.name)
        if key not in memo:
            memo[key] = L.scalar(e.name)
        return memo[key]
    if e.is_Number:
        return lift(float(e))
    if isinstance(e, sp.Identity):
        return L.eye(_from_dim(sp, e.shape[0]))
    if isinstance(e, sp.ZeroMatrix):
        return L.zeros(*[_from_dim(sp, d) for d in e.shape if d != 1])
    if isinstance(e, sp.OneMatrix):
        return L.ones(*[_from_dim(sp, d) for d in e.shape if d != 1])
    if isinstance(e, sp.Transpose):
        return go(e.arg).T
    if isinstance(e, sp.Inverse):
        return L.inv(go(e.arg))
    if isinstance(e, sp.MatPow):
        base, k = e.args
        return L.matrix_power(go(base), int(k))
    if isinstance(e, sp.MatMul):
        out = None
        for a in e.args:
            x = go(a)
            out = x if out is None else (out * x if out.ndim == 0 or x.ndim == 0 else out @ x)
        return out
    if isinstance(e, (sp.MatAdd, sp.Add)):
        out = go(e.args[0])
        for a in e.args[1:]:
            out = out + go(a)
        return out
    if isinstance(e, sp.Mul):
        out = go(e.args[0])
        for a in e.args[1:]:
            out = out * go(a)
        return out
    if isinstance(e, sp.HadamardProduct):
        out = go(e.args[0])
        for a in e.args[1:]:
            out = out * go(a)
        return out
    if isinstance(e, sp.KroneckerProduct):
        return L.kron(*[go(a) for a in e.args])
    if isinstance(e, sp.Trace):
        return L.trace(go(e.arg))
    if isinstance(e, sp.Determinant):
        return L.det(go(e.arg))
    if isinstance(e, DiagMatrix):
        return L.diag(go(e.args[0]))
    if isinstance(e, MatrixElement) and tuple(e.args[1:]) == (0, 0):
        return go(e.args[0])  # (xᵀy)[0, 0]: the scalar
    if isinstance(e, sp.Trace) and e.arg.shape == (1, 1):
        return go(e.arg)  # tr of a 1 × 1 product: the scalar itself
    if isinstance(e, (sp.Pow, sp.HadamardPower)):
        base, p = e.args
        return go(base) ** float(p)
    if isinstance(e, sp.log) and isinstance(e.args[0], sp.Determinant):
        return L.logdet(go(e.args[0].arg))
    if isinstance(e, ElementwiseApplyFunction):
        f = e.function
        probe = f(sp.Symbol("_t"))
        for name in ELEMENTWISE:
            if probe == getattr(sp, name)(sp.Symbol("_t")):
                return getattr(L, name)(go(e.expr))
        raise NotSupportedError(f"from_sympy: no matdiff function for the element-wise {f}")
    for name in ELEMENTWISE:  # a scalar function: exp(t), log(t), …
        cls = getattr(sp, name, None)
        if isinstance(cls, type) and isinstance(e, cls):
            return getattr(L, name)(go(e.args[0]))
    raise MatdiffError(f"from_sympy: cannot read {type(e).__name__} ({e}); matdiff reads "
                       f"MatrixSymbol expressions with products, sums, transposes, inverses, "
                       f"traces, determinants, Hadamard and Kronecker products")
