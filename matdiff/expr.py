"""``Expr``: the user's handle on an expression, with linear-algebra operators.

An ``Expr`` wraps an IR node and adds what only the user-facing notation needs: whether a
1-d expression is a column or a row (``x.T``), and a short source text for messages.
Shapes are checked here, when the expression is built, with messages naming the operands.
"""
from __future__ import annotations

import numbers
import sys

import numpy as np

from . import build as B
from . import dims as D
from . import functions as F
from .errors import EvaluationError, MatdiffError, NotSupportedError, ShapeError
from .evaluate import bind, evaluate, interpret, numpy_ops, variables
from .ir import (Basis, Const, Contract, DivDiff, DivDiff2, DivDiff3, DivDiff3Apply, EigGap, Eigh, Frechet,
                 Funm, MatFn, Node, Sum, Svd, Var, extended, free_vars, walk)
from . import notation as N
from .present import simplest
from .printing import (bracket, dialect_code, in_input_order, LATEX, TEXT, index_notation, map_entries,
                       python_code, render)
from .recognise import _inlined as inlined, recognise
from .show import index_form
from .simplify import numerical_forms, simplify

# precedence of the source text, for parentheses in messages
ATOM, POWER, UNARY, PRODUCT, SUM = 9, 8, 7, 6, 5
MAX_SRC = 60


SPECTRAL = (Eigh, MatFn, DivDiff, DivDiff2, DivDiff3, DivDiff3Apply, EigGap, Svd)  # nodes of a decomposition


class Expr:
    """A matrix or tensor expression.  Build with ``md.matrix``, ``md.vector``, operators
    and functions; differentiate with ``md.grad``, ``md.jacobian``, ``md.hessian``."""

    __slots__ = ("_node", "_chain", "_dims", "row", "src", "prec", "scope", "source", "wrt", "_types",
                 "_notation")
    __array_priority__ = 1000  # NumPy scalars defer to Expr's operators

    def __init__(self, node: Node, row: bool = False, src: str | None = None, prec: int = ATOM):
        self._node, self._chain, self._dims = node, None, node.shape
        self.row, self.prec = bool(row and node.ndim == 1), prec
        self.scope = frozenset()  # variables a derivative came from, accepted at evaluation
        self.source = None  # the input node a derivative was taken of: its sums print in its order
        self.wrt = None  # a Jacobian's: how many of its last axes are the variable's (None: unknown)
        self.src = src if src is not None else _short(node)

    @property
    def node(self) -> Node:
        """The expression's IR node (``matdiff.ir``).

        A sum typed as a chain a + b + c + … is built once, when first asked for: each +
        only links its term, so a chain of k terms costs O(k), not O(k²)."""
        if self._node is None:
            links, e = [], self
            while e._node is None:
                links.append(e._chain[1:])
                e = e._chain[0]
            self._node = extended(e._node, reversed(links))
            self._chain = None
        return self._node

    # ------------------------------------------------------------------ description
    @property
    def shape(self) -> tuple:
        """The dims of the expression (ints or names); a vector is (n,), row or column."""
        return self._dims

    @property
    def ndim(self) -> int:
        """The number of axes: 0 for a scalar, 1 for a vector, 2 for a matrix."""
        return len(self._dims)

    def describe_shape(self) -> str:
        """The shape in words, as error messages give it: "a column vector (n,)"."""
        kind = ""
        if self.ndim == 1:
            kind = "a row vector " if self.row else "a column vector "
        return kind + D.fmt_shape(self.shape)

    @property
    def variables(self) -> list:
        """The variables the expression depends on, sorted by name."""
        return [Expr(v, src=v.name) for v in variables(self.node)]

    def __repr__(self):
        """Python code that rebuilds the expression: ``(A + A.T) @ x``; where none can (a
        result with the parts of a decomposition, U(X)V(X)ᵀ), the text in angle brackets."""
        try:
            return self.python()
        except NotSupportedError:
            return f"<{self}>"

    def text(self, dialect: str = "matdiff") -> str:
        """The expression as text of a dialect: "matdiff" (as ``str``), "matrixcalculus"
        (x'*A*x) or "numpy" (x.T @ A @ x) — valid input to paste back."""
        if dialect == "matdiff":
            return str(self)
        return _shallow(lambda: dialect_code(self.notation(), dialect))

    def python(self, functions: dict | None = None) -> str:
        """The expression as matdiff code, given the variables (and abstract functions,
        renamed by ``functions``) in scope: eval(e.python()) == e in value."""
        if self._linear_map() is not None:  # printed as V ↦ H[V]: for reading only
            raise NotSupportedError("a Hessian or Jacobian printed as the linear map V ↦ … it "
                                    "applies has no constructor; use the text form, or md.hvp")
        return _shallow(lambda: python_code(self.notation(), functions or {}))

    def __str__(self):
        """Matrix notation: Xᵀ(σ(XW) ⊙ (1 − σ(XW))); index notation above order 2, except
        for a second derivative through a decomposition, written as the linear map it is:
        V ↦ U(Δ[u²](λ) ⊙ UᵀVU)Uᵀ  where S = UΛUᵀ."""
        return _shallow(lambda: self._render(TEXT))

    def _render(self, style) -> str:
        linear = self._linear_map()
        if linear is None:
            return render(self.notation(), style, _Names(self))
        name, m = linear
        arrow = " \\mapsto " if style is LATEX else " ↦ "
        return name + arrow + render(m, style, self._names() | {name})

    def _has(self, classes) -> bool:
        """Whether a node of the expression's DAG is an instance of ``classes``; the types
        are found in one walk, when first asked for (text and LaTeX both ask)."""
        try:
            types = self._types
        except AttributeError:
            found, seen, stack = set(), set(), [self.node]  # walk's nodes, without its generator
            while stack:
                x = stack.pop()
                if x not in seen:
                    seen.add(x)
                    found.add(type(x))
                    stack.extend(x.children)
            types = self._types = frozenset(found)
        for t in types:
            if issubclass(t, classes):
                return True
        return False

    def _linear_map(self):
        """(V, the matrix notation of H[V]) for a 4-index H whose last two axes take a
        matrix direction and which passes through an eigen- or singular-value decomposition
        (a spectral Hessian) or a Fréchet derivative of a general matrix function (a Jacobian
        V ↦ L_exp(Y, V), a Hessian V ↦ L²_exp(Yᵀ; abᵀ, Vᵀ)) and has no matrix notation of its
        own; else None.  V is symmetric where H is symmetric in those axes (then H[V] is
        meant for symmetric V).  A Jacobian through a Fréchet derivative by a vector, or of a
        vector by a matrix, is the map it applies too: v ↦ L_exp(Y + diag(x), diag(v))a."""
        n = self.node
        if n.ndim == 4 and n.shape[:2] == n.shape[2:]:
            axes, through = 2, SPECTRAL + (Frechet,)
        elif getattr(self, "wrt", None) in (1, 2) and n.ndim - self.wrt in (1, 2):
            axes, through = self.wrt, (Frechet,)  # the direction takes the variable's axes, the last ones
        else:
            return None  # (asked before the notation: repr of a 2000-deep sin(x) recognises nothing)
        made = self._made_notation()
        if made is not None and not isinstance(made, N.Index):
            return None  # (the notation, made already, is matrix notation: no walk is needed)
        if not self._has(through) or not self._has(SPECTRAL + (Frechet,)):
            return None
        if not isinstance(self.notation(), N.Index):
            return None
        svd = self._has(Svd)  # V is X = UΣVᵀ's: the direction is W
        letters = ("V", "W", "E", "H", "Z") if axes == 2 else ("v", "w", "u", "z", "h")
        name = next(c for c in letters if c not in self._names() and not (svd and c in "Vv"))
        h = simplify(n)
        out = n.ndim - axes
        sym = axes == 2 and _symmetric_in_last_two(h)
        v = Var(name, n.shape[out:], sym)
        spec = "ij"[:out] + "kl"[:axes] + "," + "kl"[:axes] + "->" + "ij"[:out]
        terms = h.terms if isinstance(h, Sum) else ((1.0, h),)  # H[V] term by term
        m = recognise(simplify(B.linear([(c, B.einsum(spec, t, v)) for c, t in terms],
                                        n.shape[:out])))
        if isinstance(m, N.Index):  # simplified together, the terms may share a factor no
            # product writes (T_ijkl + T_ijlk with V as one bracket): term by term, each product
            # of a sum of order above 2 distributed over it
            acc: dict = {}  # each simplified alone, in its canonical form: equal ones merge
            for c, t in terms:
                for k, y in _distributed(simplify(B.einsum(spec, t, v))):
                    acc[y] = acc.get(y, 0.0) + c * k
            parts = [(c, recognise(y)) for y, c in acc.items() if c != 0]
            if parts and not any(isinstance(p, N.Index) for _, p in parts):
                m = N.add(parts)
        return None if isinstance(m, N.Index) else (name, simplest(m))

    def echo(self, latex: bool = False) -> str:
        """The expression in the order it was typed or built — tr(AXB), not the normal
        form's tr(BAX) — where that reads no longer than the normal form (which it is else)."""
        style = LATEX if latex else TEXT
        normal = render(self.notation(), style, self._names())
        if self.node.ndim > 2:
            return normal
        raw = recognise(self.node)
        if isinstance(raw, N.Index):
            return normal
        raw = simplest(N.transpose(raw) if self.row and raw.kind == "c" else raw)
        typed = _shallow(lambda: render(raw, style, self._names()))
        return typed if len(typed) <= len(normal) else normal

    def latex(self) -> str:
        """LaTeX of the matrix notation: X^\\top \\left(…\\right)."""
        return _shallow(lambda: self._render(LATEX))

    def _repr_latex_(self) -> str:
        return f"${self.latex()}$"

    def index(self) -> str:
        """Index notation with explicit sums: Σ_j A_ij x_j; a map V ↦ H[V], H[eₖeₗᵀ]_ij.

        A Jacobian or Hessian through a Fréchet derivative, printed as the map V ↦ H[V], has
        the entries of H at the unit directions: L_exp(Y, eₖeₗᵀ)_ij."""
        linear = None if self._has(SPECTRAL) else self._linear_map()
        if linear is not None:
            name, m = linear
            if not any(isinstance(x, N.Sym) and x.name == name and x.symmetric for x in _leaves(m)):
                return _shallow(lambda: map_entries(m, name, self.node.shape[_order(m):]))
        return index_notation(simplify(self.node))

    def bracket(self, latex: bool = False) -> str:
        """The bracket notation of "Matrix Differential Calculus with Tensors" for a
        contraction: each result axis is the group of operand axes it ties, summed groups
        barred; AᵀB is ``A₂B₂[A̅₁ B₁]`` (``printing.bracket``)."""
        if not self._has(SPECTRAL) and self._linear_map() is not None:
            raise NotSupportedError(f"bracket notation writes a contraction of tensors, and {self} applies a "
                                    "Fréchet derivative to its direction, which no tensor of its own writes; "
                                    ".index() gives its entries at the unit directions")
        return bracket(simplify(self.node), LATEX if latex else TEXT)

    def notation(self):
        """The matrix-notation tree the printers render (``matdiff.notation``)."""
        made = self._made_notation()
        if made is not None:
            return made
        node, row, source = self.node, self.row, self.source
        m = recognise(simplify(node))
        m = simplest(N.transpose(m) if row and m.kind == "c" else m)
        m = m if source is None else in_input_order(m, source)
        self._notation = (node, row, source, m)
        return m

    def _made_notation(self):
        """The notation ``notation`` made already (kept with the node, row and input it was
        made of: text, LaTeX and the other printers each ask), or None."""
        try:
            node, row, source, m = self._notation
        except AttributeError:
            return None
        return m if node is self._node and row == self.row and source is self.source else None  # (a node
        # still to be built from its chain is None: no notation was made of it)

    def __getstate__(self):
        """The fields a pickle keeps: not the notation made for printing, whose memos are
        keyed by the identity of its nodes (a copy makes it again)."""
        return None, {k: getattr(self, k) for k in self.__slots__ if k != "_notation" and hasattr(self, k)}

    def _names(self):
        return {v.name for v in free_vars(self.node) if hasattr(v, "name")}

    def __eq__(self, other):
        return isinstance(other, Expr) and self.node is other.node and self.row == other.row

    def __hash__(self):
        return hash((self.node, self.row))

    def __bool__(self):
        raise MatdiffError("an expression has no truth value; compare nodes with ==, "
                           "or evaluate it first")

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, values: dict | None = None, functions: dict | None = None,
                 sizes: dict | None = None, *, max_bytes: int | None = None, **arrays):
        """The value as a NumPy array, for arrays keyed by variable name or variable.
        ``functions`` gives values of abstract functions ({"sigma": [σ, σ′, …]}); ``sizes``
        gives dims that no array fixes ({"n": 3} for ``md.eye("n")``); an evaluation that
        would build an array over ``max_bytes`` (4 GiB by default) is refused before it starts.

        >>> x = md.vector("x", "n"); (x.T @ x).evaluate({"x": [3.0, 4.0]})
        array(25.)
        """
        if values is not None and not isinstance(values, dict):
            raise EvaluationError(f"evaluate takes the values as a dict {{name: array}} or as "
                                  f"keywords (x=...), not a {type(values).__name__}")
        # the normal form has its deltas merged into products, so none is materialised
        e = self.simplify()  # and 1 − σ(u) computed as σ(−u): exact where σ(u) rounds to 1
        return evaluate(numerical_forms(e.node), _keys({**(values or {}), **arrays}), functions,
                        e.scope, sizes, max_bytes)

    def simplify(self) -> "Expr":
        """The expression in matdiff's normal form (as every result already is)."""
        out = Expr(simplify(self.node), self.row, self.src, self.prec)
        out.scope = self.scope | free_vars(self.node)
        return out

    # ------------------------------------------------------------------ operators
    @property
    def T(self) -> "Expr":
        """The transpose: rows and columns swap; a column vector becomes a row."""
        src = _wrap(self, POWER) + ".T"
        if self.ndim == 1:
            return Expr(self.node, not self.row, src, POWER)
        if self.ndim < 2:
            return self
        if isinstance(self.node, Var) and self.node.symmetric:
            return Expr(self.node, src=src, prec=POWER)
        return Expr(B.transpose(self.node), src=src, prec=POWER)

    def __neg__(self):
        return Expr(B.scale(-1, self.node), self.row, "-" + _wrap(self, UNARY), UNARY)

    def __pos__(self):
        return self

    def __add__(self, other):
        return _combine(self, other, "+", 1)

    def __radd__(self, other):
        return _combine(lift(other), self, "+", 1)

    def __sub__(self, other):
        return _combine(self, other, "-", -1)

    def __rsub__(self, other):
        return _combine(lift(other), self, "-", -1)

    def __mul__(self, other):
        return _hadamard(self, other, "*")

    def __rmul__(self, other):
        return _hadamard(lift(other), self, "*")

    def __truediv__(self, other):
        other = lift(other)
        recip = Expr(F.power(other.node, -1), other.row, other.src, other.prec)
        return _hadamard(self, recip, "/", other)

    def __rtruediv__(self, other):
        return lift(other) / self

    def __pow__(self, p):
        if isinstance(p, numbers.Real) and not isinstance(p, bool):
            return Expr(F.power(self.node, float(p)), self.row,
                        f"{_wrap(self, POWER + 1)}**{p}", POWER)
        p = lift(p)  # x**y = exp(y log x), for x > 0
        log_x = Expr(F.apply("log", self.node), self.row, f"log({self.src})")
        e = p * log_x
        return Expr(F.apply("exp", e.node), e.row, f"{_wrap(self, POWER + 1)}**{_wrap(p, POWER)}", POWER)

    def __rpow__(self, base):
        base = lift(base)
        return base ** self

    def __matmul__(self, other):
        return matmul(self, lift(other))

    def __rmatmul__(self, other):
        return matmul(lift(other), self)

    def __getitem__(self, i):
        """x[i], an entry of a vector expression (i from 0; negative from the end):
        md.eigvalsh(S)[-1] is λ_max.  It is eᵢᵀx, so it has a derivative."""
        if self.ndim != 1 or isinstance(i, bool) or not isinstance(i, numbers.Integral):
            parts = i if isinstance(i, tuple) else (i,)
            what = ", ".join(":" if k == slice(None) else "a slice" if isinstance(k, slice) else
                             repr(k) for k in parts)
            raise MatdiffError(f"{_wrap(self, ATOM)}[{what}]: indexing takes one integer into a vector "
                               f"expression; {self.src} is {self.describe_shape()}."
                               f"{_index_hint(self, i)}")
        out = Expr(Basis(self.shape[0], int(i))) @ self
        return Expr(out.node, False, f"{_wrap(self, ATOM)}[{int(i)}]", ATOM)

    def __iter__(self):  # x[i] must not make an Expr iterable (its length may be a symbol)
        raise TypeError("a matdiff expression is not iterable; index a vector with x[i]")

    __array_ufunc__ = None  # keep NumPy from broadcasting over an Expr


class _Names:
    """An expression's variable names, found when first iterated: most texts choose no name
    (``render`` reads them only to name a repeated subterm or a function apart from them)."""

    __slots__ = ("expr", "names")

    def __init__(self, expr: Expr):
        self.expr, self.names = expr, None

    def __iter__(self):
        if self.names is None:
            self.names = self.expr._names()
        return iter(self.names)


def _index_hint(x: "Expr", i) -> str:
    """What to write instead of x[i], in the user's names, where a product with unit vectors
    says it: Y[1, 2] is md.unit("m", 1).T @ Y @ md.unit("k", 2)."""
    def unit(d, k):
        return f"md.unit({d!r}, {k})"

    def integer(k):
        return isinstance(k, numbers.Integral) and not isinstance(k, bool)

    every = slice(None)
    name = _wrap(x, ATOM)
    if x.ndim == 2:
        rows, cols = x.shape
        if isinstance(i, tuple) and len(i) == 2 and all(map(integer, i)):
            return f" For the entry, write {unit(rows, i[0])}.T @ {name} @ {unit(cols, i[1])}"
        if integer(i) or isinstance(i, tuple) and len(i) == 2 and integer(i[0]) and i[1] == every:
            k = i if integer(i) else i[0]
            return f" For row {k}, write {unit(rows, k)}.T @ {name}"
        if isinstance(i, tuple) and len(i) == 2 and i[0] == every and integer(i[1]):
            return f" For column {i[1]}, write {name} @ {unit(cols, i[1])}"
    if x.ndim == 1 and isinstance(i, slice):
        return (f" For entries, index one at a time ({name}[0]), or multiply by a selection "
                f"matrix as a variable")
    return " Write a product with md.unit(n, i) vectors for an entry, a row or a column"


def _order(m) -> int:
    """The number of axes of a matrix-notation tree: 0, 1 or 2."""
    return {"s": 0, "c": 1, "r": 1, "m": 2}[m.kind]


def _leaves(m) -> list:
    """The nodes of a matrix-notation tree, the arguments its leaves carry included."""
    out, stack = [], [m]
    while stack:
        x = stack.pop()
        out.append(x)
        stack.extend(N.children(x))
        if isinstance(x, N.Sym):
            stack.extend(p for p in x.params if isinstance(p, N.M))
    return out


_SYMMETRIC_LAST_TWO: dict = {}  # a tensor node -> whether it is symmetric in its last two axes


def _symmetric_in_last_two(h: Node) -> bool:
    """Whether H_…kl = H_…lk for the simplified tensor h: its transpose in those axes
    simplifies to h itself, or (where the canonical order of simplify does not bring the two
    to one node) H equals its transpose at two random points, at sizes 3 — square matrices
    near 2I (logm and sqrtm are defined), declared symmetric ones positive definite,
    vectors and scalars in (½, 1).  A point where H cannot be evaluated says no.

    An H through Fréchet derivatives of general matrix functions (f of n³-wide block
    matrices: SciPy's logm of one takes a second) is first evaluated with each f replaced by
    a random polynomial p, whose L_p(X, E) (the (1, 2) block of p([[X, E], [0, X]])) takes a
    few NumPy products (milliseconds, no SciPy): where that H is not symmetric the answer is
    no (a direction left general is never wrong); only where it is, H with the functions
    themselves decides, as above."""
    hit = _SYMMETRIC_LAST_TWO.get(h)
    if hit is not None:
        return hit
    k = h.ndim
    if simplify(B.transpose(h, tuple(range(k - 2)) + (k - 1, k - 2))) is h:
        answer = True
    else:
        answer = h.shape[-1] == h.shape[-2] and \
            (not any(isinstance(x, Frechet) for x in walk(h)) or _numerically_symmetric(h, 0, True)) and \
            all(_numerically_symmetric(h, seed) for seed in (0, 1))
    if len(_SYMMETRIC_LAST_TWO) > 256:
        _SYMMETRIC_LAST_TWO.clear()
    _SYMMETRIC_LAST_TWO[h] = answer
    return answer


def _numerically_symmetric(h: Node, seed: int, stand_in: bool = False, size: int = 3) -> bool:
    """Whether H_…kl = H_…lk (to rounding) at one random point (``_symmetric_in_last_two``);
    with ``stand_in``, H with each general matrix function replaced by a random polynomial."""
    rng = np.random.default_rng(seed)
    try:
        vs = variables(h)
        sizes = {d: size for v in vs for d in D.names(v.shape)}
        values = {}
        for v in vs:
            shape = tuple(D.resolve(d, sizes) for d in v.shape)
            if len(shape) == 2 and shape[0] == shape[1]:
                q = rng.standard_normal(shape)
                values[v.name] = q @ q.T / shape[0] + np.eye(shape[0]) if v.symmetric else \
                    2 * np.eye(shape[0]) + 0.25 * q
            elif len(shape) == 2:
                values[v.name] = 0.5 * rng.standard_normal(shape)
            else:
                values[v.name] = rng.uniform(0.5, 1.0, shape)
        with np.errstate(all="ignore"):
            value = np.asarray(_with_polynomials(numerical_forms(h), values, sizes, rng) if stand_in
                               else evaluate(numerical_forms(h), values, sizes=sizes))
    except (MatdiffError, ArithmeticError, ValueError, np.linalg.LinAlgError):
        return False
    if value.dtype.kind not in "fi" or not np.all(np.isfinite(value)):
        return False
    return bool(np.allclose(value, np.swapaxes(value, -1, -2), rtol=1e-9,
                            atol=1e-9 * max(1.0, float(np.max(np.abs(value), initial=0.0)))))


def _with_polynomials(form: Node, values: dict, sizes: dict, rng, degree: int = 8):
    """The value of ``form`` with f(X) and L_f(X, E) of each general matrix function f
    computed for p(x) = Σ uⱼxʲ/j! (j ≤ degree, uⱼ random in (½, 3/2), one p per f): NumPy
    products of the matrices' own size only, no SciPy and no domain to leave."""
    coefficients = {}
    for fn in sorted({x.args[0] for x in walk(form) if isinstance(x, (Funm, Frechet))}):
        u = rng.uniform(0.5, 1.5, degree + 1)
        coefficients[fn] = u / np.cumprod([1.0] + list(range(1, degree + 1)))

    def p(fn, x, e=None):  # p(X) by Horner's rule, and with E its derivative L_p(X, E)
        c, eye = coefficients[fn], np.eye(len(x))
        out, slope = c[-1] * eye, np.zeros_like(x)
        for cj in c[-2::-1]:
            if e is not None:
                slope = slope @ x + out @ e
            out = out @ x + cj * eye
        return out if e is None else slope

    ops = {**numpy_ops({}), Funm: lambda n, a, s: p(n.fn, a[0]),
           Frechet: lambda n, a, s: p(n.args[0], a[0], a[1])}
    arrays, sizes = bind(form, values, sizes=sizes)
    return interpret(form, arrays, sizes, ops)


def _distributed(node: Node, limit: int = 64) -> list:
    """node as Σ cₖ termₖ with no sum of order above 2 among a product's factors (a product
    holding one is distributed over it, each product simplified again): [(cₖ, termₖ)], or
    [(1, node)] where that takes more than ``limit`` terms."""
    out, stack = [], [(1.0, node)]
    while stack:
        c, x = stack.pop()
        if isinstance(x, Sum):
            stack.extend((c * k, t) for k, t in reversed(x.terms))
            continue
        if isinstance(x, Contract):
            x = inlined(x)  # (Σ … (T + R)_ijts …)_ijkl: the product that holds the sum, written out
        at = next((i for i, op in enumerate(x.operands) if isinstance(op, Sum) and op.ndim > 2), None) \
            if isinstance(x, Contract) else None
        if at is None:
            out.append((c, x))
        else:
            for k, t in reversed(x.operands[at].terms):
                ops = x.operands[:at] + (t,) + x.operands[at + 1:]
                stack.append((c * k, simplify(Contract(ops, x.labels, x.out))))
        if len(out) + len(stack) > limit:
            return [(1.0, node)]
    return out


def _shallow(job):
    """job(), with Python's recursion limit turned into a clear error: the printers recurse
    once per level of nesting."""
    try:
        return job()
    except RecursionError:
        raise MatdiffError(f"the expression is nested too deeply to print with Python's "
                           f"recursion limit of {sys.getrecursionlimit()}; raise it with "
                           f"sys.setrecursionlimit (the command line allows 20,000)") from None


def _keys(values: dict) -> dict:
    out = {}
    for k, v in values.items():
        if isinstance(k, Expr):
            if not isinstance(k.node, Var):
                raise MatdiffError(f"evaluate: the key {k.src} is not a variable")
            k = k.node.name
        out[k] = v
    return out


def _short(node: Node) -> str:
    if isinstance(node, Var):
        return node.name
    text = index_form(node, 2 * MAX_SRC)
    return text if len(text) <= MAX_SRC else text[:MAX_SRC - 1] + "…"


def _wrap(e: Expr, prec: int) -> str:
    return f"({e.src})" if e.prec < prec else e.src


def _join(a: Expr, op: str, b: Expr, prec: int) -> str:
    text = f"{_wrap(a, prec)} {op} {_wrap(b, prec + 1)}"
    return text if len(text) <= MAX_SRC else text[:MAX_SRC - 1] + "…"


def lift(x) -> Expr:
    """An Expr for x: an Expr itself, or a Python or NumPy real number as a constant."""
    if isinstance(x, Expr):
        return x
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        try:
            value = float(x)
        except OverflowError:
            raise MatdiffError(f"the constant {x!r:.40} is too large for a float (over 1.8e308); "
                               f"an expression with it has no value to differentiate") from None
        if not np.isfinite(value):
            raise MatdiffError(f"the constant {x!r} is not a finite number; an expression with "
                               f"it has no value to differentiate")
        return Expr(Const(value), src=repr(x) if not isinstance(x, np.generic) else str(x))
    if isinstance(x, np.ndarray) and x.ndim == 0:
        return lift(float(x))
    raise MatdiffError(f"cannot use {type(x).__name__} {x!r:.40} in an expression: only "
                       f"numbers and matdiff expressions mix (declare arrays as variables, "
                       f"e.g. md.matrix('A', 'n', 'n'), and give their values to evaluate)")


def _mismatch(a: Expr, b: Expr, what: str) -> ShapeError:
    msg = f"{what}: {a.src} is {a.describe_shape()} but {b.src} is {b.describe_shape()}"
    if a.ndim == b.ndim and a.shape != b.shape:
        msg += ": " + ", ".join(f"{D.fmt(x)} ≠ {D.fmt(y)}" for x, y in zip(a.shape, b.shape) if x != y)
    elif a.ndim == 1 and b.ndim == 1 and a.row != b.row:
        msg += " (transpose one of them with .T)"
    return ShapeError(msg)


def _broadcast(a: Expr, b: Expr, what: str):
    """Operands of an element-wise operation: equal shapes, one of them a scalar, or — as
    NumPy broadcasts — a matrix and a vector as long as its rows, repeated over the rows
    (X @ W + b is XW + 1bᵀ)."""
    if a.ndim == 0 and b.ndim > 0:
        return B.broadcast(a.node, b.shape), b.node, b.row
    if b.ndim == 0 and a.ndim > 0:
        return a.node, B.broadcast(b.node, a.shape), a.row
    if {a.ndim, b.ndim} == {1, 2}:
        m, v = (a, b) if a.ndim == 2 else (b, a)
        if v.shape[0] != m.shape[1]:
            raise ShapeError(f"{what}: {m.src} is {m.describe_shape()} and {v.src} is "
                             f"{v.describe_shape()}; a vector is added to each row, as NumPy "
                             f"broadcasts, so its length must be {D.fmt(m.shape[1])}"
                             + (f" (to add it to each column, use md.outer({v.src}, "
                                f"md.ones({D.fmt(m.shape[1])!r}))" if v.shape[0] == m.shape[0] else ""))
        rows = B.contract([B.ones((m.shape[0],)), v.node], [(0,), (1,)], (0, 1))  # 1vᵀ
        return (m.node, rows, False) if a.ndim == 2 else (rows, m.node, False)
    if a.shape != b.shape or a.row != b.row:
        raise _mismatch(a, b, what)
    return a.node, b.node, a.row


def _combine(a, b, op: str, sign: int) -> Expr:
    a, b = lift(a), lift(b)
    src = _join(a, op, b, SUM)
    if a.prec == SUM and (a._node is None or isinstance(a._node, Sum)) and a._dims == b._dims and \
            a.row == b.row:  # the next term of a typed chain: linked, built once
        out = Expr.__new__(Expr)
        out._node, out._chain, out._dims = None, (a, sign, b.node), a._dims
        out.row, out.prec, out.scope, out.src, out.source = a.row, SUM, frozenset(), src, None
        out.wrt = None
        return out
    x, y, row = _broadcast(a, b, src)
    if isinstance(x, Sum) and x is a.node and a.prec == SUM:  # a + b + c as one sum, typed so:
        # a chain of n terms is then one node, not n nested ones (simplified in O(n), not O(n²))
        return Expr(extended(x, [(sign, y)]), row, src, SUM)
    return Expr(B.linear([(1, x), (sign, y)], x.shape), row, src, SUM)


def _hadamard(a, b, op: str, shown: Expr | None = None) -> Expr:
    a, b = lift(a), lift(b)
    src = _join(a, op, shown if shown is not None else b, PRODUCT)
    if isinstance(a.node, Const) and a.ndim == 0 and b.ndim:
        return Expr(B.scale(a.node.value, b.node), b.row, src, PRODUCT)
    if isinstance(b.node, Const) and b.ndim == 0 and a.ndim:
        return Expr(B.scale(b.node.value, a.node), a.row, src, PRODUCT)
    x, y, row = _broadcast(a, b, src)
    return Expr(B.hadamard(x, y), row, src, PRODUCT)


def matmul(a: Expr, b: Expr) -> Expr:
    """The matrix product, with columns (x) and rows (x.T) as in linear algebra."""
    src = _join(a, "@", b, PRODUCT)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"{src}: @ multiplies vectors and matrices; "
                         f"use * to multiply by the scalar {a.src if a.ndim == 0 else b.src}")
    if a.ndim > 2 or b.ndim > 2:
        raise ShapeError(f"{src}: @ takes vectors and matrices, but "
                         f"{a.src if a.ndim > 2 else b.src} has order {max(a.ndim, b.ndim)}; "
                         f"contract tensors with md.einsum")
    kind = ("c" if not a.row else "r") if a.ndim == 1 else "m", \
           ("c" if not b.row else "r") if b.ndim == 1 else "m"
    if kind not in MATMUL:
        hint = (f"did you mean {a.src}.T @ {b.src}?" if kind[0] == "c"
                else f"did you mean {a.src} @ {b.src}.T?")
        raise ShapeError(f"{src}: {a.src} is {a.describe_shape()} and {b.src} is "
                         f"{b.describe_shape()}, which @ cannot multiply; {hint}")
    inner_a = a.shape[-1] if kind[0] != "c" or kind[1] == "c" else None
    inner_b = b.shape[0] if kind[1] != "r" or kind[0] == "r" else None
    if inner_a is not None and inner_b is not None and inner_a != inner_b:
        raise ShapeError(f"{src}: {a.src} is {a.describe_shape()} but {b.src} is "
                         f"{b.describe_shape()}: {D.fmt(inner_a)} ≠ {D.fmt(inner_b)}")
    labels, out = MATMUL[kind]
    return Expr(Contract((a.node, b.node), labels, out), kind == ("r", "m"), src, PRODUCT)


# the labels and output of each product of matrices (m), columns (c) and rows (r), as
# B.einsum("ij,jk->ik", …) numbers them; x @ y of two vectors is NumPy's dot
MATMUL = {("m", "m"): (((0, 1), (1, 2)), (0, 2)), ("m", "c"): (((0, 1), (1,)), (0,)),
          ("r", "m"): (((0,), (0, 1)), (1,)), ("r", "c"): (((0,), (0,)), ()),
          ("c", "r"): (((0,), (1,)), (0, 1)), ("c", "c"): (((0,), (0,)), ()),
          ("r", "r"): (((0,), (0,)), ())}
