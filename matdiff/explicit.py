"""Element-by-element expansion into SymPy, on small explicit sizes (SymPy is optional).

``explicit(expr, sizes={"n": 3, "k": 2})`` runs the evaluator with SymPy operations in
place of NumPy's: every variable becomes a matrix of symbols (X_11, X_12, …), abstract
functions become SymPy functions and their derivatives SymPy derivatives, so a closed-form
derivative can be compared symbolically with SymPy's component-wise one, as in the
notebooks matdiff grew from.
"""
from __future__ import annotations

from math import prod

import numpy as np

from . import dims as D
from .errors import MatdiffError, NotSupportedError
from .evaluate import contract_with_deltas, interpret, variables
from .expr import lift
from .ir import (Cholesky, Const, Contract, Delta, Det, Elementwise, Inv, LogDet, LogSumExp, Phi, Pinv,
                 Reshape, ScalarFn, Softmax, Sum, walk)


def _sympy():
    try:
        import sympy
    except ImportError:  # pragma: no cover - depends on the environment
        raise NotSupportedError("md.explicit needs SymPy: pip install sympy") from None
    return sympy


def _symbols(sp, v, size):
    shape = tuple(D.resolve(d, size) for d in v.shape)
    sep = "_" if max(shape, default=0) >= 10 else ""
    arr = np.empty(shape, dtype=object)
    for idx in np.ndindex(*shape):
        key = tuple(sorted(idx)) if v.symmetric else idx
        arr[idx] = sp.Symbol(v.name + ("_" + sep.join(str(i + 1) for i in key) if key else ""))
    return arr


def _elementwise_table(sp):
    return {
        "exp": sp.exp, "log": sp.log, "sin": sp.sin, "cos": sp.cos, "tan": sp.tan,
        "tanh": sp.tanh, "cosh": sp.cosh, "sinh": sp.sinh, "log1p": lambda x: sp.log(1 + x),
        "expm1": lambda x: sp.exp(x) - 1, "arctan": sp.atan, "sigmoid": lambda x: 1 / (1 + sp.exp(-x)),
        "softplus": lambda x: sp.log(1 + sp.exp(x)), "relu": lambda x: sp.Max(x, 0),
        "step": sp.Heaviside, "abs": sp.Abs, "sign": sp.sign, "sqrt": sp.sqrt,
    }


def _ops(sp):
    table = _elementwise_table(sp)
    z = sp.Symbol("z")

    def num(c):
        return sp.nsimplify(c, rational=True) if float(c) == float(sp.nsimplify(c, rational=True)) \
            else sp.Float(c)

    def elementwise(n, a, s):
        fn = n.fn
        if fn.builtin and fn.name == "pow":
            f = lambda x: x ** num(fn.param)  # noqa: E731
        elif fn.builtin:
            f = table[fn.name]
        else:  # σ⁽ᵏ⁾(x) as SymPy writes the k-th derivative of an undefined function
            g = sp.Function(fn.name)
            f = (lambda x: g(x)) if fn.order == 0 else \
                (lambda x: sp.Derivative(g(z), (z, fn.order)).subs(z, x))
        return np.vectorize(f, otypes=[object])(a[0])

    def along(n, x, f):
        return np.apply_along_axis(f, n.axis, x) if x.ndim > 1 else np.asarray(f(x), dtype=object)

    def softmax(v):
        e = [sp.exp(t) for t in v]
        total = sum(e)
        return np.array([t / total for t in e], dtype=object)

    def scalar_fn(n, a, s):
        x = a[0]
        dummies = np.array(sp.symbols(f"_u0:{max(1, x.size)}"), dtype=object)[:x.size]
        lam = sp.Function(n.fn.name)(*dummies)
        sub = dict(zip(dummies, x.ravel()))
        out, m = np.empty(x.shape * n.order, dtype=object), x.ndim
        for idx in np.ndindex(*out.shape):  # idx: n.order multi-indices into x, one after another
            wrt = [dummies[np.ravel_multi_index(idx[i * m:(i + 1) * m], x.shape) if m else 0]
                   for i in range(n.order)]
            out[idx] = (sp.diff(lam, *wrt) if wrt else lam).subs(sub)
        return out

    def matrix_fn(f):
        return lambda n, a, s: f(sp.Matrix(a[0]))

    return {
        Const: lambda n, a, s: np.asarray(num(n.value), dtype=object),
        Delta: lambda n, a, s: _delta(n, s),
        Contract: lambda n, a, s: contract_with_deltas(n, a, s, _object_einsum, _object_zeros),
        Sum: lambda n, a, s: (sum((num(c) * v for (c, _), v in zip(n.terms, a)),
                                  _object_zeros([D.resolve(d, s) for d in n.shape]))),
        Elementwise: elementwise,
        Softmax: lambda n, a, s: along(n, a[0], softmax),
        LogSumExp: lambda n, a, s: along(n, a[0], lambda v: sp.log(sum(sp.exp(t) for t in v))),
        Inv: lambda n, a, s: np.array(sp.Matrix(a[0]).inv(), dtype=object),
        Pinv: lambda n, a, s: np.array(_full_rank_pinv(sp.Matrix(a[0])), dtype=object),
        Det: matrix_fn(lambda m: np.asarray(m.det(), dtype=object)),
        LogDet: matrix_fn(lambda m: np.asarray(sp.log(m.det()), dtype=object)),
        Cholesky: lambda n, a, s: np.array(sp.Matrix(a[0]).cholesky(hermitian=False), dtype=object),
        Phi: lambda n, a, s: _phi(a[0]),
        ScalarFn: scalar_fn,
        Reshape: lambda n, a, s: np.reshape(a[0], [D.resolve(d, s) for d in n.shape]),
    }


def _object_zeros(shape):
    out = np.empty(shape, dtype=object)
    out[...] = 0
    return out


def _object_einsum(labels, arrays, out):
    sym = {}
    for x in [x for lab in labels for x in lab]:
        sym.setdefault(x, chr(ord("a") + len(sym)))
    eq = ",".join("".join(sym[x] for x in lab) for lab in labels) + "->" + "".join(sym[x] for x in out)
    return np.einsum(eq, *arrays)


def _delta(n, s):
    k = D.resolve(n.dim, s)
    out = _object_zeros((k,) * n.order)
    for i in range(k):
        out[(i,) * n.order] = 1
    return out


# what the node types ``explicit`` does not write are, in a message
UNWRITTEN = {"Funm": "a matrix function of a general matrix", "Frechet": "a Fréchet derivative",
             "Eigh": "an eigen-decomposition", "Svd": "a singular value decomposition",
             "MatFn": "a matrix function of a symmetric matrix", "Basis": "a unit vector"}


def explicit(expr, sizes: dict | None = None):
    """The expression entry by entry on explicit sizes, as a SymPy ``Matrix`` (scalars as
    a SymPy expression, tensors of order 3 and more as a SymPy ``Array``).

    >>> X = md.matrix("X", 2, 2); md.explicit(md.trace(X))
    X_11 + X_22
    """
    sp = _sympy()
    e = lift(expr)
    vs = variables(e.node)
    needed = sorted(set().union(*(D.names(v.shape) for v in vs), D.names(e.shape)))
    sizes = dict(sizes or {})
    missing = [n for n in needed if n not in sizes]
    if missing:
        raise MatdiffError(f"explicit: give sizes for {', '.join(missing)}, "
                           f"e.g. sizes={{{', '.join(f'{n!r}: 3' for n in missing)}}}")
    if prod(D.resolve(d, sizes) for v in vs for d in v.shape) > 10 ** 6:
        raise MatdiffError("explicit: these sizes are too large to expand symbolically")
    leaves = {v: _symbols(sp, v, sizes) for v in vs}
    ops = _ops(sp)
    unwritten = sorted({UNWRITTEN.get(type(n).__name__, type(n).__name__) for n in walk(e.node)
                        if type(n) not in ops and type(n).__name__ != "Var"})
    if unwritten:
        raise NotSupportedError(f"explicit: {' and '.join(unwritten)} has no entry-by-entry SymPy "
                                f"form here; evaluate it numerically (.evaluate, md.compile)")
    value = interpret(e.node, leaves, sizes, ops)
    value = np.asarray(value, dtype=object)
    if value.ndim == 0:
        return sp.sympify(value.item())
    if value.ndim == 1:
        m = sp.Matrix(list(value))
        return m.T if e.row else m
    if value.ndim == 2:
        return sp.Matrix(value.tolist())
    return sp.Array(value.tolist())


def _full_rank_pinv(m):
    """X⁺ as matdiff takes it, at full rank: (XᵀX)⁻¹Xᵀ for a tall X, Xᵀ(XXᵀ)⁻¹ for a wide one."""
    return (m.T * m).inv() * m.T if m.rows >= m.cols else m.T * (m * m.T).inv()


def _phi(x):
    """Φ(x) entry by entry: the lower triangle of x's last two axes, the diagonal halved."""
    out = np.array(x, dtype=object)
    for idx in np.ndindex(*out.shape):
        i, j = idx[-2:]
        out[idx] = 0 if j > i else out[idx] / 2 if i == j else out[idx]
    return out
