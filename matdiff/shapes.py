"""Shape inference for text input, as a small constraint solver of its own.

Every dim of a parsed expression is an unknown; each operation states constraints on
them — a sum's operands have equal dims, a product's inner dims are equal, tr's argument
is square — and ``Dims``, a union-find over the unknowns, solves them as they come, so
``x'*A*x`` makes A square.  A scalar has no dims; a vector is a matrix with the literal 1
on one side (a column is (n, 1), a row (1, n)).  ``Inference`` walks the tree once with
one rule per operation (``RULES``) and per function (``FUNCTION_RULES``, named in the
dialects' tables), and keeps what the builder needs: each node's shape, the variables'
kinds and dims, the dims a product sums over and those along which entries mix.  An
outer product's dims (the n and k of 11ᵀ, x1ᵀ) are never 1.
"""
from __future__ import annotations

from dataclasses import dataclass

from .dialects import functions, kind_by_name
from . import dims as D
from .errors import MatdiffError, ShapeError
from .syntax import KIND_WORDS, OPERATIONS, Node, ParseError, shape_error, source

ONE = 1  # a vector's other side


class Dims:
    """The solver: union-find over unknown dims, each class bound to at most one value (a
    name or an int).  ``unify(a, b)`` states a = b and answers whether that is consistent;
    a conflict is never recorded, so the caller reports it where it was found.  A vector's
    literal 1 (``ONE``) unifies only with itself and with flexible unknowns (the dims of a
    printed 1 or 0, which may be a vector's 1), never with a variable's dim: x*A is an error,
    not a 1 × 1 A."""

    def __init__(self):
        self.parent, self.value, self.count, self.flexible = {}, {}, 0, set()

    def fresh(self, flexible=False):
        """A new unknown; a flexible one (the dims of a printed 1 or 0) may also be 1."""
        self.count += 1
        key = ("?", self.count)
        self.parent[key] = key
        if flexible:
            self.flexible.add(key)
        return key

    def find(self, d):
        if not isinstance(d, tuple):
            return d
        while self.parent[d] != d:
            self.parent[d] = self.parent[self.parent[d]]
            d = self.parent[d]
        return d

    def not_one(self, d) -> None:
        """States that unknown ``d`` is not a vector's 1 (an outer product's dim, the n of
        11ᵀ): it is no longer flexible, so unifying it with 1 fails."""
        r = self.find(d)
        if isinstance(r, tuple):
            self.flexible.discard(r)

    def resolve(self, d):
        r = self.find(d)
        return self.value.get(r, r) if isinstance(r, tuple) else r

    def unify(self, a, b) -> bool:
        ra, rb = self.find(a), self.find(b)
        va = self.value.get(ra, ra) if isinstance(ra, tuple) else ra
        vb = self.value.get(rb, rb) if isinstance(rb, tuple) else rb
        if not isinstance(va, tuple) and not isinstance(vb, tuple):
            return va == vb
        if ONE in (va, vb):  # a vector's 1 never becomes a variable's dim: x*A is an error
            free = ra if va is not ONE else rb
            if va == vb:
                return True
            if not (isinstance(free, tuple) and free in self.flexible):
                return False
        if isinstance(ra, tuple) and isinstance(rb, tuple):
            if not isinstance(va, tuple) and not isinstance(vb, tuple) and va != vb:
                return False
            if not (ra in self.flexible and rb in self.flexible):
                self.flexible.discard(rb)
            self.parent[ra] = rb
            if not isinstance(va, tuple):
                self.value[rb] = va
            return True
        key, val = (ra, vb) if isinstance(ra, tuple) else (rb, va)
        if not isinstance(self.value.get(key, key), tuple) and self.value.get(key) != val:
            return False
        self.value[key] = val
        return True


@dataclass(slots=True)
class Shape:
    """A scalar (rows = cols = None) or a rows × cols matrix; a vector has the literal 1
    on one side: a column is (n, 1), a row (1, n)."""

    rows: object = None
    cols: object = None

    @property
    def scalar(self):
        return self.rows is None


# --------------------------------------------------------------------------- inference


class Inference:
    """Infers the kinds and dims of a parsed tree in one pass, stating each operation's
    constraints to the solver (``self.dims``) as it meets them; the first that fails is a
    ShapeError (or a ParseError) with a caret under that operation.

    ``scalar_ones``: a printed 1 or 0 beside a scalar (b + 1, 1/a) is the number; where the
    caller says the result is a vector or matrix and that reading makes it a scalar, it is
    the ones tensor (False)."""

    def __init__(self, text, dialect, decls, scalar_ones=True):
        self.text, self.dialect, self.decls = text, dialect, decls
        self.scalar_ones = scalar_ones
        self.dims = Dims()
        self._fns = None
        self.vars: dict = {}  # name -> (Decl kind, [dim keys], symmetric)
        self.shapes: dict = {}  # id(node) -> Shape
        self.inner: list = []  # dim keys a product sums over
        # dim keys along which entries mix (diag, tr, softmax, ‖·‖, ⊗, ⁻¹, A²): a constant
        # there differs from the same constant at size 1 by more than its shape
        self.mixed: list = []
        self.spread: list = []  # (name, the scalar's node): a scalar added to each entry
        self.outer: list = []  # the dims of outer products (x1ᵀ, 11ᵀ), none of them 1

    # ---- the rules of the nodes (RULES)
    def var_shape(self, node) -> Shape:
        name = node.value
        if name not in self.vars:
            decl = self.decls.get(name)
            if decl is not None and decl.kind in ("function", "scalar_function"):
                raise ParseError(f"{name} is declared a function; call it as {name}(…)",
                                 self.text, node.col)
            if decl is not None and decl.kind == "dim":
                raise ParseError(f"{name} is declared a dim (a size), not a variable; declare it "
                                 f"'scalar' to use it as a number", self.text, node.col)
            kind = decl.kind if decl else kind_by_name(name)
            n = KIND_WORDS[kind]
            keys = [self.dims.fresh() for _ in range(n)]
            if decl is not None:
                for k, d in zip(keys, decl.dims):
                    if d == 1:  # the text dialects keep 1 for a vector's other side
                        raise ParseError(f"{name} is declared with a dim of 1, which the text "
                                         f"dialects read as a vector's orientation; declare a "
                                         f"vector, or a scalar, instead", self.text, node.col)
                    self.dims.unify(k, d)
                if decl.symmetric in (True, "spd"):  # square ("positive" is a scalar's)
                    self.dims.unify(keys[0], keys[1])
            self.vars[name] = (kind, keys, decl.symmetric if decl and decl.symmetric in ("spd", "positive")
                               else bool(decl and decl.symmetric))
        kind, keys, _ = self.vars[name]
        if kind == "scalar":
            return Shape()
        return Shape(keys[0], ONE) if kind == "vector" else Shape(*keys)

    def shape(self, node) -> Shape:
        s = RULES[node.op](self, node)
        self.shapes[id(node)] = s
        return s

    def _fail(self, node, message):
        raise shape_error(message, self.text, node.col)

    def _same(self, node, a: Shape, b: Shape, what: str):
        spread = self._broadcast_rows(node, a, b)
        if spread is not None:
            return spread
        if a.scalar or b.scalar:
            args = node.args or [None]
            other, shape = (args[-1], b) if a.scalar else (args[0], a)
            while other is not None and other.op == "neg" and other.args:
                other = other.args[0]
            # b + 1 with b a scalar: the 1 is a scalar too
            if other is not None and len(node.args) == 2 and other.op in ("ones", "zeros") and \
                    self.scalar_ones:
                self.dims.unify(shape.rows, ONE)
                self.dims.unify(shape.cols, ONE)
                return Shape()
            if other is not None and other.op == "var" and len(node.args) == 2 and node.op in "+-":
                self.spread.append((other.value, args[0] if a.scalar else args[-1]))
            return shape
        if not (self.dims.unify(a.rows, b.rows) and self.dims.unify(a.cols, b.cols)):
            left, right = (source(x) for x in node.args[:2])
            self._fail(node, f"{what}: {left} is {self.fmt(a)} but {right} is {self.fmt(b)}")
        return a

    def _broadcast_rows(self, node, a: Shape, b: Shape):
        """NumPy's rule for a matrix and a vector (X @ W + b): the vector meets each row, so
        its length is the matrix's number of columns.  Where the dialect's table says so (the
        NumPy dialect); the matrixcalculus dialect adds like shapes (write b*ones(n)' or a
        rank-one update there)."""
        if not self.dialect.broadcast_rows or a.scalar or b.scalar:
            return None
        r = self.dims.resolve

        def length(s):  # a vector's one dim (either orientation), else None
            if r(s.cols) == ONE and r(s.rows) != ONE:
                return s.rows
            if r(s.rows) == ONE and r(s.cols) != ONE:
                return s.cols
            return None

        def matrix(s):
            return r(s.rows) != ONE and r(s.cols) != ONE and \
                self.dims.find(s.rows) not in self.dims.flexible and \
                self.dims.find(s.cols) not in self.dims.flexible
        for m, v in ((a, b), (b, a)):
            if matrix(m) and length(v) is not None and not matrix(v):
                if self.dims.unify(length(v), m.cols):
                    return m
                left, right = (source(x) for x in node.args[:2])
                self._fail(node, f"{node.op!r}: {left} is {self.fmt(a)} and {right} is {self.fmt(b)}; "
                                 f"a vector meets each row of a matrix, as NumPy broadcasts, so its "
                                 f"length must be the matrix's number of columns")
        return None

    def fmt(self, s: Shape) -> str:
        if s.scalar:
            return "a scalar"
        r, c = self.dims.resolve(s.rows), self.dims.resolve(s.cols)
        names = self.dim_names()

        def name(key):
            d = self.dims.resolve(key)
            return names.get(self.dims.find(key), "?") if isinstance(d, tuple) else str(d)

        r_, c_ = s.rows, s.cols
        if c == ONE:
            return f"a column vector ({name(r_)})"
        if r == ONE:
            return f"a row vector ({name(c_)})"
        return f"a matrix ({name(r_)} × {name(c_)})"

    def _s_num(self, node):
        return Shape()

    def _s_size(self, node):  # a dim's name read as its size, n = 1ᵀ1 (printed dialect)
        return Shape()

    def _s_var(self, node):
        return self.var_shape(node)

    def _s_neg(self, node):
        return self.shape(node.args[0])

    def _s_transpose(self, node):
        s = self.shape(node.args[0])
        return s if s.scalar else Shape(s.cols, s.rows)

    def _s_add(self, node):
        a, b = (self.shape(x) for x in node.args)
        return self._same(node, a, b, f"{node.op!r} needs operands of one shape")

    def _s_hadamard(self, node):
        a, b = (self.shape(x) for x in node.args)
        return self._same(node, a, b, f"{node.op!r} is element-wise and needs operands of one shape")

    def _s_matmul(self, node):
        a, b = (self.shape(x) for x in node.args)
        for i, x in enumerate(node.args):  # a printed 1 that a product uses is a column (1ᵀx,
            x, transposed = self._factor_ones(x)  # X1, 1·1ᵀ, xᵀlog(2·1): the all-ones matrix
            # prints 11ᵀ there); beside a scalar only 1ᵀ is surely one (2·1 may be a matrix),
            # except where the side it meets is an outer product's (11ᵀ1ᵀ: (n × k)(k × n)),
            # which is not 1: there it is the matrix, sized by use
            if x.op in ("ones", "zeros") and (transposed or not (a.scalar or b.scalar)) and \
                    not (transposed == (i == 1) and self._outer(b.rows if i == 0 else a.cols)):
                self.dims.unify(self.shapes[id(x)].cols, ONE)
        if a.scalar or b.scalar:
            if node.op == "@":
                self._fail(node, "@ multiplies vectors and matrices; use * with a scalar")
            return b if a.scalar else a
        self.inner.append(a.cols)
        if not self.dims.unify(a.cols, b.rows):
            left, right = (source(x) for x in node.args)
            self._fail(node, f"{node.value or node.op!r} multiplies {left}, {self.fmt(a)}, by "
                             f"{right}, {self.fmt(b)}: the inner "
                             f"dims differ" + (self.dialect.transpose_hint if ONE in
                                               (self.dims.resolve(a.cols), self.dims.resolve(b.rows))
                                               else ""))
        out = Shape(a.rows, b.cols)
        if self.dims.resolve(out.rows) == ONE and self.dims.resolve(out.cols) == ONE:
            return Shape()
        if self.dims.resolve(a.cols) == ONE:  # an outer product: were a dim of it 1, the text
            for k in (out.rows, out.cols):  # would have been printed without that factor
                self.dims.not_one(k)
                self.outer.append(k)
        return out

    def _factor_ones(self, x) -> tuple:
        """The printed 1 or 0 that factor ``x`` is, through ᵀ, −, element-wise functions and
        scalar multiples (−1ᵀ, log(2·1)ᵀ), and whether it is transposed; else (x, False)."""
        transposed, top = False, x
        while True:
            if x.op in ("transpose", "neg") and x.args:
                transposed ^= x.op == "transpose"
                x = x.args[0]
            elif x.op == "call" and len(x.args) == 1 and not x.kwargs and \
                    getattr(self.functions().get(x.value), "shape", None) == "same":
                x = x.args[0]
            elif x.op in ("@mc", "@", "*", ".*", "/", "./") and len(x.args) == 2 and \
                    self.shapes[id(x.args[1])].scalar:  # 1·c, 1/c
                x = x.args[0]
            elif x.op in ("@mc", "@", "*", ".*") and len(x.args) == 2 and self.shapes[id(x.args[0])].scalar:
                x = x.args[1]  # c·1
            elif x.op in ("+", "-") and len(x.args) == 2:  # s1 + 1: both sides such a 1
                (u, ut), (v, vt) = (self._factor_ones(a) for a in x.args)
                if not (u.op in ("ones", "zeros") and v.op in ("ones", "zeros") and ut == vt):
                    break
                x, transposed = u, transposed ^ ut
            else:
                break
        return (x, transposed) if x.op in ("ones", "zeros") else (top, False)

    def _outer(self, d) -> bool:
        """Whether dim ``d`` is an outer product's that no variable sized (the k of 11ᵀ)."""
        return isinstance(self.dims.resolve(d), tuple) and \
            self.dims.find(d) in {self.dims.find(k) for k in self.outer}

    def _s_power(self, node):
        base, exp = (self.shape(x) for x in node.args)
        if not exp.scalar:
            self._fail(node, "the exponent must be a scalar")
        if node.op == "^" and not base.scalar:
            if node.args[1].op != "num" or not float(node.args[1].value).is_integer() or \
                    node.args[1].value < 1:
                self._fail(node, "^ of a matrix is a matrix power and needs a positive integer "
                                 "exponent; use .^ for an element-wise power")
            if not self.dims.unify(base.rows, base.cols) or self.dims.resolve(base.cols) == ONE:
                self._fail(node, f"^ is a matrix power, but the base is {self.fmt(base)}; "
                                 f"use .^ for an element-wise power")
            self._mix(base)
        return base

    def _s_ones(self, node):
        return Shape(self.dims.fresh(True), self.dims.fresh(True))

    def _s_unit(self, node):  # e₃, eₙ (printed dialect): a column, its length fixed by use
        dim, _ = node.value
        d = self.dims.fresh()
        if dim is not None:
            self.dims.unify(d, dim)
        return Shape(d, ONE)

    def _s_eye(self, node):
        d = self.dims.fresh()
        return Shape(d, d)

    def _s_inverse(self, node):
        s = self.shape(node.args[0])
        self._mix(s)
        if not s.scalar:
            self._square(Node("call", node.col, value="inverse"), s)
        return s

    def _s_sup(self, node):
        s = self.shape(node.args[0])
        if not node.kwargs.get("__entrywise"):  # A³, not tanh²(A)
            self._mix(s)
        return s

    def _s_solve(self, node):  # A \ B = A⁻¹B
        return self._solve(node, self.shape(node.args[0]), self.shape(node.args[1]))

    def _f_solve(self, node):  # solve(A, B) = A⁻¹B
        return self._solve(node, *self._args(node, 2))

    def _solve(self, node, a, b):
        self._mix(a, b)
        name = "solve(A, B)" if node.op == "call" else "A \\ B"
        if a.scalar or not self.dims.unify(a.rows, a.cols) or self.dims.resolve(a.cols) == ONE:
            self._fail(node, f"{name} needs a square matrix A, but A is {self.fmt(a)}")
        if b.scalar or not self.dims.unify(a.cols, b.rows):
            self._fail(node, f"{name} needs a vector or matrix with as many rows as the square matrix "
                             f"{self.fmt(a)}, but the right-hand side is {self.fmt(b)}")
        return b

    def _s_pinv(self, node):  # X⁺
        return self._pinv(node, self.shape(node.args[0]))

    def _f_pinv(self, node):  # pinv(X)
        return self._pinv(node, *self._args(node, 1))

    def _pinv(self, node, s):
        self._mix(s)
        if s.scalar or ONE in (self.dims.resolve(s.rows), self.dims.resolve(s.cols)):
            self._fail(node, f"pinv needs a matrix, but its argument is {self.fmt(s)}")
        return Shape(s.cols, s.rows)

    def _f_lstsq(self, node):  # lstsq(X, y) = X⁺y
        x, y = self._args(node, 2)
        self._pinv(node, x)
        if y.scalar or not self.dims.unify(x.rows, y.rows):
            self._fail(node, f"lstsq(X, y) needs a vector or matrix y with as many rows as X, "
                             f"{self.fmt(x)}, but y is {self.fmt(y)}")
        return Shape(x.cols, y.cols)

    def _s_kronop(self, node):
        self._mix(self.shape(node.args[0]), self.shape(node.args[1]))
        return Shape(self.dims.fresh(), self.dims.fresh())

    def _mix(self, *shapes: Shape) -> None:
        """States that entries mix along these shapes' dims (see ``mixed``)."""
        self.mixed.extend(k for s in shapes if not s.scalar for k in (s.rows, s.cols))

    def _s_call(self, node):
        name = node.value
        rule = self.functions().get(name)
        if rule is not None and node.kwargs.get("__order"):
            if len(node.args) != 1:
                raise ParseError(f"a derivative of {name} takes one argument, not "
                                 f"{len(node.args)}", self.text, node.col)
            (s,) = [self.shape(a) for a in node.args]
            if rule.derivative != "elementwise":
                self._mix(s)
            if node.kwargs["__order"] > 1 and rule.derivative == "gradient" and \
                    not s.scalar and ONE not in (self.dims.resolve(s.rows), self.dims.resolve(s.cols)):
                raise ParseError("∇²λ of a matrix has order 4 and no matrix form", self.text, node.col)
            return s if rule.derivative == "elementwise" or node.kwargs["__order"] == 1 \
                else Shape(s.rows, s.rows)
        if rule is None:
            raise ParseError(f"unknown function {name!r}; known: "
                             f"{', '.join(sorted(self.functions()))}", self.text, node.col)
        out = FUNCTION_RULES[rule.shape](self, node)
        if rule.shape != "same":  # all but the element-wise functions
            self._mix(*(self.shapes[id(a)] for a in node.args if id(a) in self.shapes))
        return out

    def functions(self) -> dict:
        """The dialect's functions and the declared ones, made when a call is first met."""
        if self._fns is None:
            self._fns = functions(self.dialect, self.decls)
        return self._fns

    # ---- functions' shape rules (FUNCTION_RULES): the dialects name them
    def _args(self, node, n):
        if len(node.args) != n or (node.kwargs and node.value not in self.dialect.keywords) or \
                set(node.kwargs) - {"axis"}:
            raise ParseError(f"{node.value} takes {n} argument{'s' if n > 1 else ''}",
                             self.text, node.col)
        return [self.shape(a) for a in node.args]

    def _f_same(self, node):  # exp(X), σ(X): the argument's shape
        (s,) = self._args(node, 1)
        return s

    def _f_scalar(self, node):  # sum(X), norm2(x), λ(X)
        self._args(node, 1)
        return Shape()

    def _square(self, node, s):
        if s.scalar or not self.dims.unify(s.rows, s.cols) or self.dims.resolve(s.cols) == ONE:
            self._fail(node, f"{node.value} needs a square matrix, but its argument is {self.fmt(s)}")

    def _f_square_scalar(self, node):
        (s,) = self._args(node, 1)
        self._square(node, s)
        return Shape()

    def _f_square_same(self, node):
        (s,) = self._args(node, 1)
        self._square(node, s)
        return s

    def _f_eigenvalues(self, node):
        (s,) = self._args(node, 1)
        self._square(node, s)
        return Shape(s.rows, ONE)

    def _f_diag(self, node):
        (s,) = self._args(node, 1)
        if s.scalar:
            self._fail(node, "diag needs a vector or a square matrix")
        r, c = self.dims.resolve(s.rows), self.dims.resolve(s.cols)
        for side in (s.cols, s.rows) if ONE not in (r, c) else ():  # a printed 1 in diag(Y1)
            if isinstance(self.dims.resolve(side), tuple) and self.dims.find(side) in self.dims.flexible:
                self.dims.unify(side, ONE)  # makes a vector (not the 11ᵀ of diag(c·11ᵀ))
                break
        r, c = self.dims.resolve(s.rows), self.dims.resolve(s.cols)
        if c == ONE or r == ONE:
            n = s.rows if c == ONE else s.cols
            return Shape(n, n)
        self._square(node, s)
        return Shape(s.rows, ONE)

    def axis(self, node):
        axis = node.kwargs.get("axis")
        if axis is None:
            return None
        if axis.op in ("ones", "zeros"):  # the printed dialect reads a bare 1 or 0 as a constant
            return 1 if axis.op == "ones" else 0
        if axis.op != "num" or not float(axis.value).is_integer():
            raise ParseError("axis must be an integer", self.text, axis.col)
        return int(axis.value)

    def _f_softmax(self, node):
        (s,) = self._args(node, 1)
        if s.scalar:
            self._fail(node, "softmax needs a vector or a matrix")
        self._vector_without_axis(node, s)
        return s

    def _vector_without_axis(self, node, s: Shape) -> None:
        """softmax(c·1), logsumexp(0): without axis= the printed 1 or 0 is a column (the
        matdiff dialect prints axis= for a matrix, and the API asks for it)."""
        if "axis" not in node.kwargs and ONE not in (self.dims.resolve(s.rows), self.dims.resolve(s.cols)):
            for side in (s.cols, s.rows):
                if isinstance(self.dims.resolve(side), tuple) and self.dims.find(side) in self.dims.flexible:
                    self.dims.unify(side, ONE)
                    return

    def _f_logsumexp(self, node):
        (s,) = self._args(node, 1)
        if s.scalar:
            self._fail(node, "logsumexp needs a vector or a matrix")
        self._vector_without_axis(node, s)
        r, c = self.dims.resolve(s.rows), self.dims.resolve(s.cols)
        if ONE in (r, c):
            return Shape()
        axis = self.axis(node)
        axis = 1 if axis is None else axis
        return Shape(s.rows, ONE) if axis in (1, -1) else Shape(ONE, s.cols)

    def _f_kron(self, node):
        a, b = self._args(node, 2)
        if a.scalar or b.scalar:
            return b if a.scalar else a
        return Shape(self.dims.fresh(), self.dims.fresh())  # the API computes product dims

    def _f_vec(self, node):  # vec(X): its entries as one column, of a length the API computes
        (s,) = self._args(node, 1)
        return s if s.scalar else Shape(self.dims.fresh(), ONE)

    def _f_eye(self, node):  # eye(n), eye(n*k), eye(3): the identity of that size
        d = self.dims.fresh()
        self.dims.unify(d, self.sized(node))
        return Shape(d, d)

    def sized(self, node):
        """The dim written as eye's argument: a dim's name, a positive integer, or a product."""
        def dim(a):
            if a.op == "var" and (a.value not in self.decls or self.decls[a.value].kind == "dim"):
                return a.value
            if a.op == "num" and float(a.value).is_integer() and a.value >= 1:
                return int(a.value)
            if a.op in ("*", "@mc", "@", "·") and len(a.args) == 2:
                return D.mul(dim(a.args[0]), dim(a.args[1]))
            raise ParseError("eye(…) takes a size: a dim's name (n), a positive integer, or a "
                             "product of them (n*k)", self.text, a.col)
        if len(node.args) != 1:
            raise ParseError("eye(…) takes one size, as in eye(n)", self.text, node.col)
        return dim(node.args[0])

    def _f_const_vector(self, node):
        self._const_arg(node)
        return Shape(self.dims.fresh(), ONE)

    def _f_const_matrix(self, node):
        self._const_arg(node)
        return Shape(self.dims.fresh(), self.dims.fresh())

    def _const_arg(self, node):
        if len(node.args) != 1 or node.args[0].op not in ("num", "neg"):
            raise ParseError(f"{node.value}(c) takes one number, the value of every entry",
                             self.text, node.col)

    def _f_np_sum(self, node):
        (s,) = self._args(node, 1)
        axis = self.axis(node)
        if axis is None or s.scalar:
            return Shape()
        r, c = self.dims.resolve(s.rows), self.dims.resolve(s.cols)
        if ONE in (r, c):
            return Shape()
        return Shape(ONE, s.cols) if axis in (0, -2) else Shape(s.rows, ONE)

    def _f_np_norm(self, node):
        if len(node.args) not in (1, 2):
            raise ParseError("norm takes a tensor and an optional order", self.text, node.col)
        self.shape(node.args[0])
        return Shape()

    def _f_dot(self, node):
        a, b = self._args(node, 2)
        self._same(node, a, b, "dot needs operands of one shape")
        return Shape()

    def _f_outer(self, node):
        a, b = self._args(node, 2)  # NumPy's 1-D arrays: a row vector's length is its columns

        def length(s):
            if s.scalar:
                return self.dims.fresh()
            return s.cols if self.dims.resolve(s.rows) == ONE else s.rows
        return Shape(length(a), length(b))

    # ---- what the other steps ask
    def kind(self, node) -> str:
        """"scalar", "row", "vector" or "matrix": a node's kind as inferred so far."""
        shape = self.shapes.get(id(node))
        if shape is None or shape.scalar:
            return "scalar"
        text = self.fmt(shape)
        return "row" if "row vector" in text else "vector" if "vector" in text else "matrix"

    def dim_names(self) -> dict:
        """Names for the dims no declaration named: n, m, k, p, q, … in order of appearance."""
        taken = {str(self.dims.resolve(k)) for _, keys, _ in self.vars.values() for k in keys}
        pool = [c for c in "nmkpqrdlhst" if c not in taken and c not in self.vars]
        names = {}
        for _, keys, _ in self.vars.values():
            for k in keys:
                r = self.dims.find(k)
                v = self.dims.resolve(k)
                if isinstance(v, tuple) and r not in names:
                    names[r] = pool.pop(0) if pool else f"d{len(names)}"
        return names

    def expect(self, root: Shape, result_shape) -> None:
        """Unify the parsed shape with ``result_shape``, or raise naming both."""
        if isinstance(result_shape, (str, int)) or not hasattr(result_shape, "__iter__"):
            raise MatdiffError(f"parse: result_shape must be a tuple of dims, such as ('n',) or "
                               f"('n', 'k'), not {result_shape!r}")
        dims = tuple(result_shape)
        if len(dims) > 2:
            raise MatdiffError(f"parse: result_shape {dims} has {len(dims)} dims; text expressions "
                               f"are scalars, vectors and matrices")
        for d in dims:
            if not (isinstance(d, str) and d.isidentifier()) and not (
                    isinstance(d, int) and not isinstance(d, bool) and d > 0):
                raise MatdiffError(f"parse: result_shape holds {d!r}; a dim is a name or a positive int")
        want = Shape() if not dims else Shape(self.dims.fresh(True), self.dims.fresh(True))
        for key, d in zip((want.rows, want.cols), dims + (ONE,)):
            if not want.scalar:
                self.dims.unify(key, d)
        if want.scalar and not root.scalar:  # a printed 1 or 0 alone: the scalar constant
            root = root if not (self.dims.unify(root.rows, ONE) and self.dims.unify(root.cols, ONE)) \
                else Shape()
        fits = root.scalar == want.scalar and (root.scalar or (
            self.dims.unify(root.rows, want.rows) and self.dims.unify(root.cols, want.cols)))
        if not fits:
            raise ShapeError(f"the expression is {self.fmt(root)}, but result_shape asks for "
                             f"{'a scalar' if not dims else '(' + ' × '.join(map(str, dims)) + ')'}")


# each node's rule, by its operation (syntax.OPERATIONS), and each function's, by name
RULES = {op: getattr(Inference, "_s_" + operation) for op, operation in OPERATIONS.items()}
FUNCTION_RULES = {name[3:]: rule for name, rule in vars(Inference).items() if name.startswith("_f_")}
