"""The public functions: variables, constants, matrix functions, element-wise functions and
derivatives.  Each checks its operands' shapes and builds IR through ``build``."""
from __future__ import annotations

import numbers
import weakref

import numpy as np

from typing import Callable, Optional

from . import build as B
from . import dims as D
from . import functions as F
from . import notation as N
from . import facts as FA
from .facts import Fact
from .diff import jacobians
from .errors import MatdiffError, NotSupportedError, ShapeError
from .evaluate import interpret, is_min_dim, min_arguments, numpy_ops, variables
from .simplify import simplify
from .expr import ATOM, PRODUCT, Expr, lift
from .ir import (GENERAL_FUNCTIONS, Basis, Cholesky, Contract, Det, Eigh, Funm, Inv, LogDet, LogSumExp, MatFn,
                 Node, Phi, Pinv, Reshape, ScalarFn, Softmax, Sum, Svd, Var, free_vars)

# --------------------------------------------------------------------------- variables


def _dims(name, dims):
    if not isinstance(name, str) or not name.isidentifier():
        raise MatdiffError(f"a variable name must be an identifier such as 'X', not {name!r}")
    return tuple(D.check_dim(d) for d in dims)


def tensor(name: str, *dims, symmetric: bool = False) -> Expr:
    """A variable tensor with the given dims: ``md.tensor("T", "i", "j", "k")``."""
    return Expr(Var(name, _dims(name, dims), bool(symmetric)), src=name)


def matrix(name: str, rows, cols, symmetric: bool = False, spd: bool = False) -> Expr:
    """A variable matrix: ``md.matrix("X", "n", "k")``; ``symmetric=True`` for X = Xᵀ;
    ``spd=True`` for a symmetric positive-definite X (it implies ``symmetric``): its
    Cholesky factor exists, and generated code solves with it by Cholesky, not LU.

    >>> S = md.matrix("S", "n", "n", spd=True)
    >>> print(md.grad(md.logdet(S), S))
    S⁻¹
    """
    if not spd:
        return tensor(name, rows, cols, symmetric=symmetric)
    dims = _dims(name, (rows, cols))
    return Expr(Var(name, dims, "spd"), src=name)


def vector(name: str, n) -> Expr:
    """A variable column vector: ``md.vector("w", "k")``; its transpose ``w.T`` is a row."""
    return tensor(name, n)


def scalar(name: str, positive: bool = False) -> Expr:
    """A variable scalar; ``positive=True`` declares it positive, so that XᵀX + λI is known
    positive definite (``md.positive_definite``) and generated code solves with it by
    Cholesky. Evaluation and compiled functions refuse a value that is not positive.

    >>> lam, X = md.scalar("lam", positive=True), md.matrix("X", "n", "k")
    >>> md.positive_definite(X.T @ X + lam * md.eye("k"))
    True
    """
    if not positive:
        return tensor(name)
    return Expr(Var(name, _dims(name, ()), "positive"), src=name)


# --------------------------------------------------------------------------- constants


def ones(*dims) -> Expr:
    """The all-ones scalar, column vector, matrix or tensor."""
    dims = tuple(D.check_dim(d) for d in dims)
    return Expr(B.ones(dims), src=f"ones{D.fmt_shape(dims)}")


def zeros(*dims) -> Expr:
    """The zero scalar, vector, matrix or tensor of the given dims."""
    dims = tuple(D.check_dim(d) for d in dims)
    return Expr(B.zeros(dims), src=f"zeros{D.fmt_shape(dims)}")


def unit(n, i: int) -> Expr:
    """The unit vector eᵢ of length n: 1 at index i (counted from 0, and from the end where
    negative, as in Python), 0 elsewhere. ``x[i]`` of a vector x is ``unit(n, i) @ x``."""
    n = D.check_dim(n)
    if isinstance(i, bool) or not isinstance(i, numbers.Integral):
        raise MatdiffError(f"unit({n}, {i!r}): the index must be an integer")
    return Expr(Basis(n, int(i)), src=f"unit({n}, {i})")


def eye(n) -> Expr:
    """The n × n identity matrix."""
    return Expr(B.identity_tensor((D.check_dim(n),)), src=f"eye({n})")


# --------------------------------------------------------------------------- matrix functions


def _call(name: str, node, *args, row=False) -> Expr:
    return Expr(node, row, f"{name}({', '.join(a.src for a in args)})", ATOM)


def _square(name: str, x: Expr):
    if x.ndim != 2 or x.shape[0] != x.shape[1]:
        raise ShapeError(f"{name}({x.src}): {name} needs a square matrix, but {x.src} is "
                         f"{x.describe_shape()}")


def _square_fn(name: str, build, doc: str):
    """A function of one square matrix: checks the operand, then builds its node."""
    def f(x) -> Expr:
        x = lift(x)
        _square(name, x)
        return _call(name, build(x.node), x)

    f.__name__, f.__doc__ = name, doc
    return f


trace = _square_fn("trace", lambda n: B.einsum("ii->", n), "tr X = Σᵢ Xᵢᵢ.")
det = _square_fn("det", Det, "The determinant det X.")
logdet = _square_fn("logdet", LogDet, "log |det X|: log det X wherever det X > 0; its gradient is X⁻ᵀ.")
inv = _square_fn("inv", Inv, "The matrix inverse X⁻¹.")


def solve(a, b) -> Expr:
    """A⁻¹B: the solution X of AX = B (``numpy.linalg.solve``), for a square matrix A and a
    vector or matrix B with as many rows. It is printed A⁻¹B and differentiated as such;
    generated code computes it with a solve (one LU factorisation shared by every solve with
    A), never forming A⁻¹.

    >>> A, b = md.matrix("A", "n", "n"), md.vector("b", "n")
    >>> print(md.solve(A, b))
    A⁻¹b
    >>> print(md.codegen(md.solve(A, b)).splitlines()[-2].strip())
    t1 = np.linalg.solve(A, b)
    """
    a, b = lift(a), lift(b)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ShapeError(f"solve({a.src}, {b.src}): solve needs a square matrix first, but {a.src} is "
                         f"{a.describe_shape()}")
    if b.ndim not in (1, 2) or b.shape[0] != a.shape[0]:
        raise ShapeError(f"solve({a.src}, {b.src}): needs a vector or matrix with as many rows as "
                         f"{a.src} ({D.fmt(a.shape[0])}), but {b.src} is {b.describe_shape()}")
    if b.row:
        raise ShapeError(f"solve({a.src}, {b.src}): {b.src} is a row vector; solve takes a column "
                         f"vector or a matrix")
    return Expr((inv(a) @ b).node, src=f"solve({a.src}, {b.src})")


def pinv(x) -> Expr:
    """The Moore–Penrose pseudo-inverse X⁺ of an (n, k) matrix: (XᵀX)⁻¹Xᵀ for a tall X of full
    column rank, Xᵀ(XXᵀ)⁻¹ for a wide one of full row rank, whichever of n and k is smaller.
    Differentiated by the Golub–Pereyra formula, dX⁺ = −X⁺dX X⁺ + X⁺X⁺ᵀdXᵀ(I − XX⁺) +
    (I − X⁺X)dXᵀX⁺ᵀX⁺, which holds where the rank is constant: matdiff evaluates X⁺ and its
    derivatives only at full rank, min(n, k), and refuses a rank-deficient X (there X⁺ jumps).

    >>> X, y = md.matrix("X", "n", "k"), md.vector("y", "n")
    >>> print(md.pinv(X))
    X⁺
    >>> md.check(md.norm(md.pinv(X) @ y) ** 2, X, order=2) < 1e-6
    True
    """
    x = lift(x)
    if x.ndim != 2:
        raise ShapeError(f"pinv({x.src}): pinv takes a matrix, but {x.src} is {x.describe_shape()}"
                         + ("; for a vector write it as a one-column matrix, or use xᵀ/‖x‖²"
                            if x.ndim == 1 else ""))
    return Expr(Pinv(x.node), src=f"pinv({x.src})")


def lstsq(x, y) -> Expr:
    """X⁺y: the least-squares solution of Xb ≈ y of least norm (``numpy.linalg.lstsq``), for an
    (n, k) matrix X of full rank and a vector or matrix y with n rows. Printed X⁺y and
    differentiated as such (see ``md.pinv``).

    >>> X, y = md.matrix("X", "n", "k"), md.vector("y", "n")
    >>> print(md.grad(md.sum(md.lstsq(X, y)), y))
    X⁺ᵀ1
    """
    x, y = lift(x), lift(y)
    if x.ndim != 2:
        raise ShapeError(f"lstsq({x.src}, {y.src}): lstsq needs a matrix first, but {x.src} is "
                         f"{x.describe_shape()}")
    if y.ndim not in (1, 2) or y.shape[0] != x.shape[0] or y.row:
        raise ShapeError(f"lstsq({x.src}, {y.src}): needs a column vector or a matrix with as many "
                         f"rows as {x.src} ({D.fmt(x.shape[0])}), but {y.src} is {y.describe_shape()}")
    return Expr((pinv(x) @ y).node, src=f"lstsq({x.src}, {y.src})")


def positive_definite(x) -> bool:
    """Whether the square matrix x is symmetric positive definite by declaration
    (``spd=True``) or by structure: XᵀX + λI and XᵀX + S for λ > 0 known positive and S
    known positive definite, S⁻¹ and positive multiples of such an S, I, sums of
    positive-definite and semidefinite terms with positive coefficients. A Gram XᵀX or
    congruence XᵀSX alone is only semidefinite (X may lack full column rank), so it is not
    counted (``facts.definiteness``)."""
    x = lift(x)
    return x.ndim == 2 and x.shape[0] == x.shape[1] and FA.positive_definite(x.node)


def cholesky(s) -> Expr:
    """The Cholesky factor L of a symmetric positive-definite S: lower triangular with a
    positive diagonal, S = LLᵀ (``numpy.linalg.cholesky``), printed chol(S). S must be
    symmetric by declaration or by structure; its value must be positive definite where it
    is evaluated. The differential is dL = L Φ(L⁻¹ dS L⁻ᵀ), Φ taking the lower triangle with
    the diagonal halved (``md.phi``).

    >>> S = md.matrix("S", "n", "n", spd=True)
    >>> print(md.cholesky(S))
    chol(S)
    >>> print(md.grad(md.trace(md.cholesky(S)), S))
    (1/2)L⁻ᵀ(Φ(Lᵀ) + Φ(Lᵀ)ᵀ)L⁻¹  where L = chol(S)
    >>> md.check(md.trace(md.cholesky(S)), S, order=2) < 1e-6
    True
    """
    s = _symmetric_argument("cholesky", s, "symmetric positive definite",
                            "md.matrix(..., spd=True) or symmetric=True", "XᵀX + λI", "cholesky")
    return Expr(Cholesky(s.node), src=f"cholesky({s.src})")


def phi(x) -> Expr:
    """Φ(X): the lower triangle of a square matrix X with its diagonal halved, the
    projection in the Cholesky factor's differential dL = L Φ(L⁻¹ dS L⁻ᵀ). Linear, and its
    own adjoint: ⟨Φ(X), Y⟩ = ⟨X, Φ(Y)⟩."""
    x = lift(x)
    if x.ndim != 2 or x.shape[0] != x.shape[1]:
        raise ShapeError(f"phi({x.src}): needs a square matrix, but {x.src} is {x.describe_shape()}")
    return Expr(Phi(x.node), src=f"phi({x.src})")


MAX_MATRIX_POWER = 100_000  # |k| in Xᵏ; a larger one is refused, not built


def symmetric(x: Expr) -> bool:
    """Whether the square matrix x is symmetric by declaration or by structure — the one
    test wherever symmetry is required or exploited: the notation's analysis (XᵀX, XSXᵀ,
    A + Aᵀ, diag(v), inverses and functions of those), or x's normal form equal to that of
    xᵀ (A + tB for symmetric A and B, (A + tB)⁻¹, I + GᵀSG). Both are sound: equal normal
    forms are equal for every value."""
    if x.ndim != 2 or x.shape[0] != x.shape[1]:
        return False  # the normal form's test first: it does not run the presentation
    return simplify(B.transpose(x.node)) is simplify(x.node) or N.symmetric(x.notation())


def _symmetric_argument(name: str, s, need="symmetric", declared="md.matrix(..., symmetric=True)",
                        structure="XᵀX, A + Aᵀ, XSXᵀ", numpy="eigh") -> Expr:
    """s, if it is a symmetric matrix by declaration or by structure; else a clear error
    saying what ``name`` needs, how to declare it, and NumPy's function that reads one
    triangle instead."""
    s = lift(s)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ShapeError(f"{name}({s.src}): needs a square matrix, but {s.src} is {s.describe_shape()}")
    if not symmetric(s):
        raise NotSupportedError(
            f"{name}({s.src}): {s.src} must be {need} — declared ({declared}) or by structure "
            f"({structure}); matdiff does not read one triangle of a general matrix as NumPy's "
            f"{numpy} does")
    return s


def eigvalsh(s) -> Expr:
    """The eigenvalues of a symmetric matrix, ascending (``numpy.linalg.eigvalsh``). Their
    derivative dλᵢ = uᵢᵀ dS uᵢ holds where λᵢ is simple; Σf(λᵢ) is differentiable
    everywhere for a smooth f (its gradient is U diag(f′(λ)) Uᵀ)."""
    s = _symmetric_argument("eigvalsh", s)
    return Expr(Eigh("values", s.node), src=f"eigvalsh({s.src})")


def matrix_function(s, f) -> Expr:
    """f(S) = U f(Λ) Uᵀ for a symmetric S and an element-wise f — a built-in name ("exp",
    "log", "sqrt", "tanh", …), a function of the library (md.exp), an ``md.function`` with
    a derivative, or a Python function of one scalar written with matdiff's operations
    (``lambda u: u**3``), traced once on a placeholder, and printed with its definition
    (which md.parse reads back). Its differential is Daleckii–Krein's: d f(S) = U (F ⊙ (Uᵀ dS
    U)) Uᵀ, F the divided differences of f at the eigenvalues (f′ on the diagonal).

    >>> S = md.matrix("S", "n", "n", symmetric=True)
    >>> def cube(u):
    ...     return u**3
    >>> print(md.matrix_function(S, cube))
    cubeₘ(S)  where cube(u) = u³
    >>> md.check(md.trace(md.matrix_function(S, cube)), S, order=2) < 1e-6
    True

    A general square X (not symmetric) takes the analytic functions of the table (exp, log,
    sqrt, sin, cos, tan, tanh, sinh, cosh, sigmoid, softplus, log1p, expm1, arctan), computed
    without diagonalising X; the derivative is the Fréchet derivative L_f(X, dX)
    (docs/matrix-functions.md):

    >>> X = md.matrix("X", "n", "n")
    >>> a, b = md.vector("a", "n"), md.vector("b", "n")
    >>> print(md.matrix_function(X, "sin"))
    sinₘ(X)
    >>> print(md.grad(a.T @ md.matrix_function(X, "sin") @ b, X))
    L_sin(Xᵀ, abᵀ)
    """
    s = lift(s)
    fn = _elementwise_fn(f)
    if s.ndim == 2 and s.shape[0] == s.shape[1] and not symmetric(s):
        return Expr(Funm(_general_fn("matrix_function", fn, s), s.node),
                    src=f"matrix_function({s.src}, {fn.name})")
    s = _symmetric_argument("matrix_function", s)
    return Expr(MatFn(fn, s.node), src=f"matrix_function({s.src}, {fn.name})")


def _general_fn(name: str, fn, x) -> str:
    """fn's name, if it is an analytic function of the table that a general (not symmetric)
    square matrix takes; else a clear error saying why not."""
    if fn.builtin and fn.name in GENERAL_FUNCTIONS:
        return fn.name
    if fn.builtin and fn.name != "pow":
        why = (f"{fn.name} is not analytic, so it has no primary matrix function off the "
               f"symmetric path (there it is U {fn.name}(Λ) Uᵀ)")
    elif fn.builtin:
        why = "for a power use md.matrix_power (integer) or md.sqrtm"
    else:
        why = (f"{fn.name} is not a built-in function; a general matrix needs a built-in analytic "
               f"one ({', '.join(GENERAL_FUNCTIONS)})")
    raise NotSupportedError(f"{name}({x.src}, {fn.name}): {x.src} is not symmetric (by declaration "
                            f"or structure) and {why}; declare a symmetric matrix with "
                            f"md.matrix(..., symmetric=True)")


def _elementwise_fn(f):
    if isinstance(f, str):
        if f not in F.TABLE or f == "pow":
            raise MatdiffError(f"matrix_function: no element-wise function {f!r}; use one of "
                               f"{', '.join(k for k in F.TABLE if k != 'pow')} or md.function(…)")
        return F.fn(f)
    if isinstance(f, F.Function):
        return f
    if callable(f) and getattr(f, "__name__", None) in F.TABLE:
        return F.fn(f.__name__)
    fn = getattr(f, "fn", None)  # md.function(...) objects
    if isinstance(fn, F.Function):
        return fn
    if callable(f):
        return _traced(f)
    raise MatdiffError(f"matrix_function: f must be an element-wise function (a name such as "
                       f"'exp', md.exp, md.function(...), or a Python function of one scalar "
                       f"such as lambda u: u**3), not {f!r}")


class _Traced:
    """A Python function f of one scalar, traced once on a placeholder u: its value and f′
    at any tensor z are the traced expressions with u replaced entry by entry by z."""

    def __init__(self, f, body: Node, u: Var):
        self.f, self.u, self.body = f, u, body
        self.slope = simplify(jacobians(body, [u])[0])
        self.t = Var("_t", ("_n",), False)  # f over a vector of entries, built once: its values
        self.on_entries = simplify(_vectorised(body, u, self.t))  # (and a refusal if f is not
        # element-wise, raised here)

    def __call__(self, z: Node) -> Node:  # f′(z), as a builder of the function table
        return _vectorised(self.slope, self.u, z)

    def at(self, u: Node) -> Node:
        """f(u), its expression of a scalar u (the where-clause's definition f(u) = …)."""
        return _vectorised(self.body, self.u, u)

    def __repr__(self) -> str:  # by what was traced, not where it lives: the repr of the
        # Function holding it feeds nodes' sort keys (ir._stable_key), which must not vary by run
        return f"traced({self.on_entries.skey.hex()})"

    def values(self, x):
        """f at the entries of the array x."""
        x = np.asarray(x, dtype=float)
        out = interpret(self.on_entries, {self.t: x.ravel()}, {"_n": x.size}, numpy_ops({}))
        return np.broadcast_to(out, x.ravel().shape).reshape(x.shape)


_TRACED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # a callable's Function


def _traced(f) -> F.Function:
    """The element-wise function of a Python callable, traced on a scalar placeholder (as
    jax.jit traces): ``lambda u: u**3`` is f(u) = u³ with f′(u) = 3u²."""
    try:
        if f in _TRACED:
            return _TRACED[f]
    except TypeError:  # a callable that takes no weak reference is traced each time
        pass
    u = Var("u", (), False)
    try:
        out = lift(f(Expr(u, src="u")))
    except MatdiffError as e:
        raise MatdiffError(f"matrix_function: tracing {getattr(f, '__name__', f)!r} on a scalar u "
                           f"failed: {e}") from None
    except Exception as e:  # noqa: BLE001 - the user's function may raise anything
        raise MatdiffError(f"matrix_function: tracing {getattr(f, '__name__', f)!r} on a scalar u "
                           f"raised {type(e).__name__}: {e}; write f with matdiff's functions "
                           f"(md.exp, md.log, +, *, **)") from None
    if out.ndim != 0 or free_vars(out.node) - {u}:
        names = ", ".join(sorted(v.name for v in free_vars(out.node)))
        raise MatdiffError(f"matrix_function: f(u) must be a scalar expression of u alone, but it "
                           f"is {out.describe_shape()} in {names}")
    traced = _Traced(f, simplify(out.node), u)
    name = getattr(f, "__name__", "f")
    name = name if name.isidentifier() and name not in F.TABLE else "f"
    fn = F.Function(name, numpy=traced.values, deriv=traced)
    try:
        _TRACED[f] = fn
    except TypeError:
        pass
    return fn


def _vectorised(node: Node, u: Var, z: Node) -> Node:
    """The scalar expression node of u applied entry by entry to the tensor z."""
    memo: dict = {}

    def go(n: Node) -> Node:
        if n in memo:
            return memo[n]
        if n is u:
            out = z
        elif u not in free_vars(n):
            out = B.broadcast(n, z.shape)
        elif isinstance(n, Sum):
            out = Sum(tuple((c, go(t)) for c, t in n.terms), z.shape)
        elif isinstance(n, Contract) and all(not labs for labs in n.labels):
            out = B.hadamard(*(go(op) for op in n.operands))
        elif isinstance(n, F.Elementwise):
            out = F.Elementwise(n.fn, go(n.arg))
        else:
            raise NotSupportedError(f"matrix_function: f must apply element-wise operations to "
                                    f"its argument (+, −, *, /, **, md.exp, md.log, …); "
                                    f"{type(n).__name__} is not one")
        memo[n] = out
        return out

    return go(node)


def expm(x) -> Expr:
    """The matrix exponential: of a symmetric matrix by its eigen-decomposition (with
    Daleckii–Krein derivatives), of any other square matrix by scaling and squaring (SciPy),
    whose derivative is the Fréchet derivative L(X, dX); ∂tr(expm(X))/∂X = expm(X)ᵀ."""
    x = lift(x)
    return _matrix_function_of("expm", "exp", x)


def logm(x) -> Expr:
    """The principal matrix logarithm: of a symmetric positive definite matrix by its
    eigen-decomposition (Daleckii–Krein derivatives, Hessians included), of any other square
    matrix with no eigenvalue on the closed negative real axis by inverse scaling and squaring
    (SciPy), whose derivative is the Fréchet derivative L(X, dX); ∂tr(logm(X))/∂X = X⁻ᵀ."""
    return _matrix_function_of("logm", "log", x)


def sqrtm(x) -> Expr:
    """The principal matrix square root: of a symmetric positive semi-definite matrix by its
    eigen-decomposition, of any other square matrix with no eigenvalue on the closed negative
    real axis by the Schur method (SciPy); its Fréchet derivative solves the Sylvester equation
    sqrtm(X) L + L sqrtm(X) = dX."""
    return _matrix_function_of("sqrtm", "sqrt", x)


def _matrix_function_of(name, f, x):
    x = lift(x)
    _square(name, x)
    if not symmetric(x):
        return Expr(Funm(f, x.node), src=f"{name}({x.src})")
    return Expr(MatFn(F.fn(f), _symmetric_argument(name, x).node), src=f"{name}({x.src})")


def matrix_power(x, k) -> Expr:
    """Xᵏ for an integer k: X⁰ = I and X⁻ᵏ = (X⁻¹)ᵏ.  Built by repeated squaring, so Xᵏ and
    its derivatives hold O(log k) distinct products (A⁴⁰⁰ is nine squarings and three
    products, not 399 products)."""
    x = lift(x)
    _square("matrix_power", x)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise MatdiffError(f"matrix_power({x.src}, {k!r}): the exponent must be an integer; use "
                           f"** for an element-wise power")
    if not -MAX_MATRIX_POWER <= k <= MAX_MATRIX_POWER:  # (abs is md.abs here)
        raise MatdiffError(f"matrix_power({x.src}, {k}): |k| is limited to {MAX_MATRIX_POWER:,}")
    if k == 0:
        return eye(x.shape[0])
    base, k, result = (inv(x) if k < 0 else x), int(k if k > 0 else -k), None
    while k:
        if k & 1:
            result = base if result is None else result @ base
        k >>= 1
        if k:
            base = base @ base
    return result


def diag(x) -> Expr:
    """A vector's diagonal matrix, or a square matrix's diagonal as a column vector."""
    x = lift(x)
    if x.ndim == 1:
        return _call("diag", B.contract([x.node], [(0,)], (0, 0)), x)
    _square("diag", x)
    return _call("diag", B.einsum("ii->i", x.node), x)


def sum(x, axis: Optional[int] = None) -> Expr:  # noqa: A001 - mirrors numpy.sum
    """Σ of all entries, or along one axis: for a matrix, axis=0 gives the column sums 1ᵀX
    (a row vector) and axis=1 the row sums X1 (a column vector)."""
    x = lift(x)
    lab = tuple(range(x.ndim))
    if axis is None:
        return _call("sum", B.contract([x.node], [lab], ()), x)
    a = _axis("sum", x, axis)
    node = B.contract([x.node], [lab], lab[:a] + lab[a + 1:])
    return Expr(node, x.ndim == 2 and a == 0, f"sum({x.src}, axis={axis})")


def mean(x, axis: Optional[int] = None) -> Expr:
    """The mean of all entries, or along one axis (as ``numpy.mean``): Σ divided by the
    number of entries summed."""
    x = lift(x)
    total = sum(x, axis)
    count = D.size(x.shape) if axis is None else x.shape[_axis("mean", x, axis)]
    out = total / _count(count)
    out.src = f"mean({x.src})" if axis is None else f"mean({x.src}, axis={axis})"
    return out


def _sum_method(self, axis=None) -> Expr:
    """Σ of all entries, or along ``axis`` (as ``md.sum``; NumPy's ``x.sum(axis)``)."""
    return sum(self, axis)


def _mean_method(self, axis=None) -> Expr:
    """The mean of all entries, or along ``axis`` (as ``md.mean``; NumPy's ``x.mean(axis)``)."""
    return mean(self, axis)


Expr.sum, Expr.mean = _sum_method, _mean_method  # methods defined where the functions are



def _count(d) -> Expr:
    """A dim's size as an expression: an int, or 1ᵀ1 over a named dim (printed n)."""
    out = lift(1.0)
    for f in D.factors(d):
        out = out * (lift(float(f)) if isinstance(f, int) else
                     Expr(B.contract([B.ones((f,))], [(0,)], ()), src=f))
    return out


def _axis(name: str, x: Expr, axis) -> int:
    if x.ndim == 0:
        raise ShapeError(f"{name}({x.src}): a scalar has no axes")
    if not isinstance(axis, int) or not -x.ndim <= axis < x.ndim:
        raise ShapeError(f"{name}({x.src}, axis={axis!r}): axis must be an int in "
                         f"[{-x.ndim}, {x.ndim - 1}] for {x.describe_shape()}")
    return axis % x.ndim


def _vector_axis(name: str, x: Expr, axis) -> int:
    if axis is None:
        if x.ndim != 1:
            raise ShapeError(f"{name}({x.src}): {x.src} is {x.describe_shape()}; say along "
                             f"which axis, e.g. axis=1 for each row, axis=0 for each column")
        return 0
    return _axis(name, x, axis)


def softmax(x, axis: Optional[int] = None) -> Expr:
    """exp(x) / Σ exp(x) along one axis (a vector's only axis; axis=1: each row)."""
    x = lift(x)
    a = _vector_axis("softmax", x, axis)
    return Expr(Softmax(a, x.node), x.row, f"softmax({x.src})")


def logsumexp(x, axis: Optional[int] = None) -> Expr:
    """log Σ exp(x) along one axis; for a matrix, axis=1 gives a column of row values."""
    x = lift(x)
    a = _vector_axis("logsumexp", x, axis)
    return Expr(LogSumExp(a, x.node), x.ndim == 2 and a == 0, f"logsumexp({x.src})")


def _as_matrix(x: Expr):
    """A vector seen as a matrix: (rows, cols) label groups over its axes."""
    if x.ndim == 2:
        return [0], [1]
    if x.ndim == 1:
        return ([], [0]) if x.row else ([0], [])
    if x.ndim == 0:
        return [], []
    raise ShapeError(f"kron: {x.src} has order {x.ndim}; use md.outer for tensors")


def kron(a, b) -> Expr:
    """The Kronecker product A ⊗ B: blocks Aᵢⱼ B, of shape (mp, nq)."""
    a, b = lift(a), lift(b)
    (ra, ca), (rb, cb) = _as_matrix(a), _as_matrix(b)
    shift = a.ndim
    rows, cols = ra + [shift + i for i in rb], ca + [shift + i for i in cb]
    node = B.contract([a.node, b.node], [tuple(range(a.ndim)), tuple(range(shift, shift + b.ndim))],
                      tuple(rows + cols))
    nr = len(rows)
    new = tuple(D.size(node.shape[part]) for part, group in
                ((slice(0, nr), rows), (slice(nr, None), cols)) if group)
    out = node if node.ndim == len(new) else Reshape(node, new)
    return Expr(out, bool(cols) and not rows, f"kron({a.src}, {b.src})")


def outer(a, b) -> Expr:
    """The outer product: abᵀ for vectors, and for tensors the tensor of all products
    Aᵢⱼ Bₖₗ with A's axes first."""
    a, b = lift(a), lift(b)
    la, lb = tuple(range(a.ndim)), tuple(range(a.ndim, a.ndim + b.ndim))
    return Expr(B.contract([a.node, b.node], [la, lb], la + lb), src=f"outer({a.src}, {b.src})")


def dot(a, b) -> Expr:
    """The inner product aᵀb of two vectors, or Σ Aᵢⱼ Bᵢⱼ of two tensors of one shape."""
    a, b = lift(a), lift(b)
    if a.shape != b.shape:
        raise ShapeError(f"dot({a.src}, {b.src}): {a.src} is {a.describe_shape()} but "
                         f"{b.src} is {b.describe_shape()}")
    lab = tuple(range(a.ndim))
    return _call("dot", B.contract([a.node, b.node], [lab, lab], ()), a, b)


def _rank(name: str, x: Expr, smaller=None):
    """The number of singular values, min(m, n), where the dims decide it."""
    m, n = x.shape
    if smaller is not None:
        if smaller not in (m, n):
            raise MatdiffError(f"{name}({x.src}, smaller={smaller!r}): smaller names one of "
                               f"{x.src}'s dims, {D.fmt(m)} or {D.fmt(n)}")
        return smaller
    return min_dim(m, n)


def min_dim(m, n):
    """The dim min(m, n): m where m = n, the int where both are ints, else a dim of its own,
    named "min(k, n)" (its arguments flattened and sorted, so that X and Xᵀ, or min(m, min(k, n)),
    name one dim), whose size evaluation takes from m's and n's (``evaluate.Sizes``)."""
    if m == n:
        return m
    if isinstance(m, int) and isinstance(n, int):
        return min(m, n)
    args = set()
    for d in (m, n):
        text = D.fmt(d)
        args.update(min_arguments(text) if is_min_dim(text) else [text])
    return "min(" + ", ".join(sorted(args)) + ")"


def svdvals(x, smaller=None) -> Expr:
    """The singular values of a matrix, descending (``numpy.linalg.svd(x, compute_uv=False)``),
    min(m, n) of them: their dim is ``smaller`` where given (the dim of X that is the smaller,
    checked when evaluated), else min(m, n) itself — a dim of its own, "min(k, n)", where
    symbolic dims do not decide it. dσᵢ = uᵢᵀ dX vᵢ where σᵢ is simple and nonzero;
    evaluation refuses a result that depends on the singular vectors chosen at a tie."""
    x = lift(x)
    if x.ndim != 2:
        raise ShapeError(f"svdvals({x.src}): needs a matrix, but {x.src} is {x.describe_shape()}")
    return Expr(Svd("values", _rank("svdvals", x, smaller), x.node), src=f"svdvals({x.src})")


def norm(x, ord=None, smaller=None) -> Expr:  # noqa: A002 - mirrors numpy.linalg.norm
    """‖x‖₂ of a vector or the Frobenius norm of a matrix; ``ord=1``: Σ|xᵢ| of a vector;
    for a matrix, ``ord="nuc"`` the nuclear norm Σσᵢ (gradient UVᵀ) and ``ord=2`` the spectral
    norm σ₁ (gradient u₁v₁ᵀ), as NumPy. Where a norm is not differentiable (a rank-deficient
    X for the nuclear norm, a repeated σ₁ for the spectral norm) evaluating its derivative
    says so."""
    x = lift(x)
    if x.ndim == 2 and ord == "nuc":
        return Expr(sum(svdvals(x, smaller)).node, src=f"norm({x.src}, 'nuc')")
    if x.ndim == 2 and ord == 2:  # the rank serves second derivatives (u₁, v₁ move)
        return Expr(Svd("top", _rank("norm", x, smaller), x.node), src=f"norm({x.src}, 2)")
    if ord in (None, 2, "fro") and not (ord == 2 and x.ndim == 2):
        return Expr(F.power(dot(x, x).node, 0.5), src=f"norm({x.src})")
    if ord == 1 and x.ndim <= 1:
        return Expr(sum(abs(x)).node, src=f"norm({x.src}, 1)")
    raise NotSupportedError(f"norm({x.src}, {ord!r}): only the 2-norm of vectors, the "
                            f"Frobenius norm of matrices and the 1-norm of vectors are supported"
                            + ("; for the entry-wise 1-norm of a matrix write md.sum(md.abs(X))"
                               if ord == 1 else ""))


# --------------------------------------------------------------------------- element-wise


def _elementwise(name: str):
    def f(x) -> Expr:
        x = lift(x)
        return Expr(F.apply(name, x.node), x.row, f"{name}({x.src})")

    f.__name__ = name
    f.__doc__ = f"{name}(x), entry by entry."
    return f


exp, log, sin, cos, tan, tanh, sigmoid, softplus, relu, step, abs, sqrt, sign = (  # noqa: A001
    _elementwise(n) for n in ("exp", "log", "sin", "cos", "tan", "tanh", "sigmoid", "softplus",
                              "relu", "step", "abs", "sqrt", "sign"))
cosh, sinh, log1p, expm1, arctan = (
    _elementwise(n) for n in ("cosh", "sinh", "log1p", "expm1", "arctan"))


class ElementwiseFunction:
    """A user's element-wise function, abstract (σ, with σ′ unknown) or with a derivative."""

    def __init__(self, name: str, derivative: Optional[Callable] = None,
                 numpy: Optional[Callable] = None):
        if not isinstance(name, str) or not name.isidentifier():
            raise MatdiffError(f"a function name must be an identifier, not {name!r}")
        if name in F.TABLE:
            raise MatdiffError(f"{name!r} is a built-in function: use md.{name}")
        deriv = None if derivative is None else _UserDerivative(derivative)
        self.fn = F.Function(name, numpy=_implementations(numpy), deriv=deriv)

    def __call__(self, x) -> Expr:
        x = lift(x)
        return Expr(F.Elementwise(self.fn, x.node), x.row, f"{self.fn.name}({x.src})")

    def derivative(self, x, order: int = 1) -> Expr:
        """σ⁽ᵏ⁾(x): the ``order``-th derivative, applied to x entry by entry."""
        x = lift(x)
        if order == 1:
            node = self.fn.derivative(x.node)
        elif self.fn.abstract and isinstance(order, int) and order >= 0:
            node = F.Elementwise(F.Function(self.fn.name, order, numpy=self.fn.numpy), x.node)
        else:
            raise NotSupportedError(f"{self.fn.name}.derivative(x, {order!r}): only the first "
                                    f"derivative of a function with a given derivative")
        return Expr(node, x.row, f"{self.fn.name}{'′' * order}({x.src})")

    def __repr__(self):
        return f"md.function({self.fn.name!r})"


def _implementations(numpy):
    """A callable, or a tuple of callables for the function and its derivatives."""
    if numpy is None or callable(numpy):
        return numpy
    impls = tuple(numpy)
    if not impls or not all(callable(f) for f in impls):
        raise MatdiffError("numpy= takes a function, or a list [f, f′, f″, …] of functions")
    return impls


class _UserDerivative:
    """Wraps a user's f′ written with matdiff functions as a node → node builder."""

    def __init__(self, f):
        self.f = f
        self.__name__ = getattr(f, "__name__", "derivative")

    def __call__(self, node):
        out = lift(self.f(Expr(node)))
        if out.shape != node.shape:
            raise ShapeError(f"the derivative given for a function returned shape "
                             f"{D.fmt_shape(out.shape)} for an argument of shape {D.fmt_shape(node.shape)}")
        return out.node

    def derivatives(self, count: int) -> tuple:
        """(t, [f′(t), f″(t), …]): f′ of the vector t entry by entry and its derivatives along 1,
        ``count`` in all, built once (evaluate's divided differences take their values)."""
        from .diff import _along_ones
        from .ir import Var
        cached = getattr(self, "_derivatives", None)
        if cached is None or len(cached[1]) < count:
            t = Var("_t", ("_n",), False)
            nodes = [simplify(self(t))]
            while len(nodes) < count:
                nodes.append(simplify(_along_ones(nodes[-1], t)))
            self._derivatives = cached = (t, nodes)
        return cached

    def __eq__(self, other):
        return isinstance(other, _UserDerivative) and other.f is self.f

    def __hash__(self):
        return hash(self.f)


class ScalarFunctionHandle:
    """A user's abstract scalar function λ of one tensor; ∇λ(X) appears in derivatives."""

    def __init__(self, name: str, numpy=None):
        if not isinstance(name, str) or not name.isidentifier():
            raise MatdiffError(f"a function name must be an identifier, not {name!r}")
        self.fn = F.ScalarFunction(name, _implementations(numpy))

    def __call__(self, x) -> Expr:
        x = lift(x)
        return Expr(ScalarFn(self.fn, 0, x.node), src=f"{self.fn.name}({x.src})")

    def gradient(self, x) -> Expr:
        """∇λ(x), of x's shape."""
        x = lift(x)
        return Expr(ScalarFn(self.fn, 1, x.node), x.row, f"∇{self.fn.name}({x.src})")

    def hessian(self, x) -> Expr:
        """∇²λ(x), of x's shape twice."""
        x = lift(x)
        return Expr(ScalarFn(self.fn, 2, x.node), src=f"∇²{self.fn.name}({x.src})")

    def __repr__(self):
        return f"md.scalar_function({self.fn.name!r})"


def function(name: str, derivative: Optional[Callable] = None,
             numpy: Optional[Callable] = None) -> ElementwiseFunction:
    """An element-wise function: abstract (derivatives appear as σ′, σ″) or with a given
    derivative, e.g. ``md.function("softsign", derivative=lambda z: 1 / (1 + md.abs(z))**2)``.
    ``numpy`` gives its values (a callable, or a list [f, f′, f″, …]) for evaluation."""
    return ElementwiseFunction(name, derivative, numpy)


def scalar_function(name: str, numpy=None) -> ScalarFunctionHandle:
    """An abstract scalar function of a tensor, λ(X); its gradient appears as ∇λ(X)."""
    return ScalarFunctionHandle(name, numpy)


# --------------------------------------------------------------------------- derivatives


def _variable(x, what: str) -> Var:
    if not isinstance(x, Expr) or not isinstance(x.node, Var):
        shown = x.src if isinstance(x, Expr) else repr(x)
        raise MatdiffError(f"{what}: can only differentiate with respect to a variable "
                           f"(made with md.matrix, md.vector, md.scalar or md.tensor), "
                           f"not {shown}")
    return x.node


LAYOUTS = ("numerator", "denominator", "vec")


def fact(lhs, rhs) -> Fact:
    """A declared fact lhs = rhs about variables, which derivatives may use to simplify:
    ``md.fact(Y @ md.ones("k"), 1)`` (each row of Y sums to 1), ``md.fact(y * y, y)``
    (y is in {0, 1}), ``md.fact(md.sum(w), 1)``, ``md.fact(X.T @ X, md.eye("k"))``.
    A number on the right stands for a tensor of the left side's shape filled with it.

    Pass facts to md.grad, md.jacobian, md.hessian and md.check with ``facts=[...]``. The
    derivative is the ordinary one; a fact only rewrites it, so the result equals the
    derivative wherever the facts hold (and md.check samples such points).

    >>> X, W, Y = md.matrix("X", "m", "n"), md.matrix("W", "n", "k"), md.matrix("Y", "m", "k")
    >>> loss = -md.sum(Y * md.log(md.softmax(X @ W, axis=1)))
    >>> print(md.grad(loss, W, facts=[md.fact(Y @ md.ones("k"), 1)]))
    Xᵀ(softmax(XW, axis=1) − Y)
    """
    lhs = lift(lhs)
    if isinstance(rhs, numbers.Real) and not isinstance(rhs, bool) and lhs.ndim:
        rhs = Expr(B.const(float(lift(rhs).node.value), lhs.shape), lhs.row, repr(rhs))
    rhs = lift(rhs)
    text = f"{lhs.src} = {rhs.src}"
    if lhs.shape != rhs.shape:
        raise ShapeError(f"md.fact({text}): {lhs.src} is {lhs.describe_shape()} but {rhs.src} is "
                         f"{rhs.describe_shape()}; both sides of a fact need one shape")
    variables(lhs.node, *variables(rhs.node))  # two different variables of one name are an error
    return FA.Fact(lhs.node, rhs.node, text)


def _facts(facts, *nodes) -> list:
    """The facts as a list, each checked to be about the variables of these nodes."""
    if facts is None:
        return []
    if isinstance(facts, FA.Fact):
        facts = [facts]
    facts = list(facts)
    for f in facts:
        if not isinstance(f, FA.Fact):
            raise MatdiffError(f"facts: expected facts made with md.fact(lhs, rhs), not "
                               f"{type(f).__name__} {f!r:.40}")
        variables(*nodes, *f.variables)  # a variable of the same name must be the same
    return facts


def _one_variable_per_name(node, vs) -> None:
    """``variables(node, *vs)``'s check, that no two different variables share a name,
    without its sorted list: where the names are as many as the variables, none is shared
    (else ``variables`` raises its error)."""
    found = [v for v in free_vars(node).union(vs) if type(v) is Var]
    if len({v.name for v in found}) != len(found):
        variables(node, *vs)


def jacobian(f, x, layout: str = "numerator", vec: str = "column", facts=None):
    """∂f/∂x, with f's axes first and then x's (as jax.jacobian): shape f.shape + x.shape.
    With a list of variables, the list of derivatives, from one reverse pass.

    ``layout="denominator"`` puts x's axes first (rows indexed by x, as in the MIT 6.390
    notes); ``layout="vec"`` gives the matrix ∂vec(f)/∂vec(x) (column-major vec, as Magnus
    and Neudecker; ``vec="row"`` for row-major), printed as Kronecker products.
    ``facts`` (made with md.fact) rewrite the result where they apply."""
    if layout not in LAYOUTS:
        raise MatdiffError(f"jacobian: layout must be one of {', '.join(map(repr, LAYOUTS))}, "
                           f"not {layout!r}")
    if vec not in ("column", "row"):
        raise MatdiffError(f"jacobian: vec must be 'column' or 'row', not {vec!r}")
    f = lift(f)
    many = isinstance(x, (list, tuple))
    xs = list(x) if many else [x]
    if many and not xs:
        raise MatdiffError("jacobian: the list of variables is empty")
    vs = [_variable(v, "jacobian") for v in xs]
    _one_variable_per_name(f.node, vs)  # two different variables of one name are an error
    facts = _facts(facts, f.node, *vs)
    out = []
    for v, var, node in zip(xs, vs, jacobians(f.node, vs)):
        node = FA.apply(node, facts)
        node = _layout(node, f.ndim, var.ndim, layout, vec)
        row = (f.row if f.ndim == 1 else v.row) if node.ndim == 1 else False
        e = Expr(node, row, f"∂({f.src})/∂{var.name}", PRODUCT)
        e.scope = f.scope | free_vars(f.node) | {var}
        e.source = f.source if f.source is not None else f.node  # the input, whose order it prints in
        e.wrt = var.ndim if layout == "numerator" else None  # its last axes are the variable's
        out.append(e)
    return out if many else out[0]


def _layout(node, p: int, q: int, layout: str, vec: str):
    """Rearrange a Jacobian with f's p axes first and x's q axes after."""
    if layout == "denominator":
        return simplify(B.transpose(node, tuple(range(p, p + q)) + tuple(range(p))))
    if layout == "vec":
        if p == 0 or q == 0:  # a gradient has x's shape, a derivative by a scalar f's shape
            return node
        if vec == "column":  # column-major vec is row-major on the reversed axes
            node = B.transpose(node, tuple(reversed(range(p))) + tuple(reversed(range(p, p + q))))
        rows, cols = D.size(node.shape[:p]), D.size(node.shape[p:])
        return simplify(Reshape(node, (rows, cols)))
    return node


derivative = jacobian


def grad(f, x, facts=None):
    """∇ₓf of a scalar f: an expression of x's shape (a list of them for a list of x).
    ``facts`` (made with md.fact) rewrite the result where they apply."""
    f = lift(f)
    if f.ndim != 0:
        raise ShapeError(f"grad({f.src}, …): the gradient needs a scalar, but {f.src} is "
                         f"{f.describe_shape()}; use md.jacobian for the derivative of a "
                         f"vector or matrix")
    return jacobian(f, x, facts=facts)


def hessian(f, x, layout: str = "numerator", vec: str = "column", facts=None) -> Expr:
    """∂²f/∂x² with shape f.shape + x.shape + x.shape; for a scalar f, x.shape twice.
    ``layout`` and ``vec`` are md.jacobian's: ``layout="vec"`` gives the matrix
    ∂vec(∇f)/∂vec(x) of a scalar f (for a matrix x, Kronecker products). ``facts`` (made
    with md.fact) rewrite the gradient and the Hessian where they apply."""
    if isinstance(x, (list, tuple)):
        raise MatdiffError("hessian takes one variable; for mixed second derivatives use "
                           "md.jacobian(md.grad(f, x), y)")
    return jacobian(jacobian(f, x, facts=facts), x, layout=layout, vec=vec, facts=facts)
