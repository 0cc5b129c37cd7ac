"""Text input: two dialects, one hand-written parser, shapes inferred by unification.

``parse(text, dialect="matrixcalculus" | "numpy", **declarations)`` reads an expression
without evaluating any Python.  It runs in three steps:

1. tokenise and parse into a small syntax tree (a Pratt parser; each dialect is a table of
   operators with their binding powers);
2. infer every variable's kind and dims: kinds come from declarations or the naming
   convention of matrixcalculus.org (a–g scalars, h–z vectors, A–Z matrices) unless the
   use of an a–g name says otherwise (``a'*X*b`` and ``A*x - b`` make vectors, ``tr(c)`` a
   matrix), dims are unknowns unified by use, so ``x'*A*x`` makes A square;
3. build the expression through the public API, which checks everything once more.

Every error is a ``ParseError`` (or a ``ShapeError``) that quotes the input with a caret
under the offending column.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field

from . import library as L
from .errors import WINDOW, MatdiffError, NotSupportedError, ParseNote, ShapeError, with_caret
from .expr import Expr, lift
from .functions import GREEK

MAX_LENGTH = 10_000
MAX_DEPTH = 100
DIALECTS = ("matrixcalculus", "numpy", "matdiff")


class ParseError(MatdiffError, SyntaxError):
    """Text that is not an expression of the dialect; ``str`` shows where, with a caret."""

    def __init__(self, message: str, text: str = "", column: int | None = None):
        self.message, self.text, self.column = message, text, column
        super().__init__(message)

    def __str__(self):
        if self.column is None or not self.text:
            return self.message
        where = f" (at column {self.column + 1})" if len(self.text) > 2 * WINDOW else ""
        return with_caret(self.message + where, self.text, self.column)


def _shape_error(message, text, column):
    err = ShapeError(message)
    err.text, err.column, err.message = text, column, message
    err.args = (str(ParseError(message, text, column)),)
    return err


# --------------------------------------------------------------------------- tokens

TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<op>\.\*|\./|\.\^|\*\*|\.T\b|[-+*/^@'(),=])
""", re.VERBOSE)


@dataclass
class Tok:
    kind: str  # number, name, op, end
    text: str
    col: int


def tokenize(text: str) -> list:
    out, pos = [], 0
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if m is None:
            raise ParseError(f"unexpected character {text[pos]!r}", text, pos)
        if m.lastgroup != "space":
            out.append(Tok(m.lastgroup, m.group(), pos))
        pos = m.end()
    out.append(Tok("end", "", len(text)))
    return out


# --------------------------------------------------------------------------- syntax tree


@dataclass
class Node:
    op: str  # num, var, call, neg, binary operators, transpose
    col: int
    args: list = field(default_factory=list)
    value: object = None  # number, name
    kwargs: dict = field(default_factory=dict)


# binding powers: (left, right) for infix; prefix minus binds like a product's operand
INFIX = {
    "matrixcalculus": {"+": (10, 11), "-": (10, 11), "*": (20, 21), ".*": (20, 21),
                       "./": (20, 21), "/": (20, 21), "^": (41, 40), ".^": (41, 40)},
    "numpy": {"+": (10, 11), "-": (10, 11), "*": (20, 21), "/": (20, 21), "@": (20, 21),
              "**": (41, 40)},
}
POSTFIX = {"matrixcalculus": {"'": 50}, "numpy": {".T": 50}}
PREFIX_MINUS = 30


class Parser:
    def __init__(self, text: str, dialect: str):
        self.text, self.dialect = text, dialect
        self.toks, self.i, self.depth = tokenize(text), 0, 0

    def peek(self) -> Tok:
        return self.toks[self.i]

    def take(self) -> Tok:
        tok = self.toks[self.i]
        if tok.kind != "end":  # the end token is never passed
            self.i += 1
        return tok

    def expect(self, text: str) -> Tok:
        tok = self.peek()
        if tok.text != text:
            found = "the end of the input" if tok.kind == "end" else repr(tok.text)
            raise ParseError(f"expected {text!r} but found {found}", self.text, tok.col)
        return self.take()

    def parse(self) -> Node:
        node = self.expression(0)
        tok = self.peek()
        if tok.kind != "end":
            hint = " (a missing operator?)" if tok.kind in ("name", "number") or tok.text == "(" else ""
            raise ParseError(f"unexpected {tok.text!r}{hint}", self.text, tok.col)
        return node

    def expression(self, min_bp: int) -> Node:
        left = self.enter()
        while True:
            tok = self.peek()
            post = POSTFIX[self.dialect].get(tok.text)
            if post is not None and tok.kind == "op":
                if post < min_bp:
                    break
                self.take()
                left = Node("transpose", tok.col, [left])
                continue
            bp = INFIX[self.dialect].get(tok.text) if tok.kind == "op" else None
            if bp is None or bp[0] < min_bp:
                if tok.kind == "op" and tok.text not in (")", ",") and bp is None and post is None:
                    other = "numpy" if self.dialect == "matrixcalculus" else "matrixcalculus"
                    extra = (f"; {tok.text!r} belongs to the {other} dialect"
                             if tok.text in INFIX[other] or tok.text in POSTFIX[other] else "")
                    raise ParseError(f"unexpected {tok.text!r}{extra}", self.text, tok.col)
                break
            self.take()
            right = self.expression(bp[1])
            left = Node(tok.text, tok.col, [left, right])
        self.depth -= 1
        return left

    def enter(self) -> Node:
        """One level deeper (refused past MAX_DEPTH), and the expression's first operand."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError(f"the expression nests deeper than {MAX_DEPTH} levels", self.text,
                             self.peek().col)
        return self.prefix()

    def prefix(self) -> Node:
        tok = self.take()
        if tok.kind == "number":
            if not math.isfinite(float(tok.text)):
                raise ParseError(f"the number {tok.text} is too large for a float", self.text, tok.col)
            return Node("num", tok.col, value=float(tok.text))
        if tok.text == "-":
            return Node("neg", tok.col, [self.expression(PREFIX_MINUS)])
        if tok.text == "+":
            return self.expression(PREFIX_MINUS)
        if tok.text == "(":
            inner = self.expression(0)
            self.expect(")")
            return inner
        if tok.kind == "name":
            if self.peek().text == "(":
                return self.call(tok)
            return Node("var", tok.col, value=tok.text)
        found = "the end of the input" if tok.kind == "end" else repr(tok.text)
        raise ParseError(f"expected a number, a name or '(' but found {found}", self.text, tok.col)

    def call(self, name: Tok) -> Node:
        self.expect("(")
        args, kwargs = [], {}
        if self.peek().text != ")":
            while True:
                tok = self.peek()
                if tok.kind == "name" and self.toks[min(self.i + 1, len(self.toks) - 1)].text == "=":
                    self.take()
                    self.take()
                    kwargs[tok.text] = self.expression(0)
                else:
                    args.append(self.expression(0))
                if self.peek().text != ",":
                    break
                self.take()
        self.expect(")")
        return Node("call", name.col, args, name.text, kwargs)


# --------------------------------------------------------------------------- declarations

KIND_WORDS = {"scalar": 0, "vector": 1, "matrix": 2}
DECL = re.compile(r"^\s*(?:(?P<name>[A-Za-z_]\w*)\s*:)?\s*(?P<kind>scalar|vector|matrix|function|"
                  r"scalar_function|scalar function|dim)\s*(?:\((?P<dims>[^)]*)\))?\s*"
                  r"(?P<sym>symmetric)?\s*$")


@dataclass
class Decl:
    kind: str  # scalar, vector, matrix, function, scalar_function
    dims: tuple = ()
    symmetric: bool = False


def parse_declaration(text: str, name: str | None = None) -> tuple:
    """'A: matrix(n, n) symmetric' (or 'symmetric matrix', 'vector(n)') → (name, Decl)."""
    words = text.strip()
    if words.startswith("symmetric "):
        words = words[len("symmetric "):] + " symmetric"
    m = DECL.match(words)
    if m is None or (name is None and m.group("name") is None):
        raise ParseError(f"cannot read the declaration {text!r}; write e.g. "
                         f"'A: matrix(n, n) symmetric', 'x: vector(n)' or 'sigma: function'")
    kind = m.group("kind").replace(" ", "_")
    dims = tuple(d.strip() for d in (m.group("dims") or "").split(",") if d.strip())
    dims = tuple(int(d) if d.isascii() and d.isdigit() else d for d in dims)  # not "²"
    if kind in KIND_WORDS and dims and len(dims) != KIND_WORDS[kind]:
        raise ParseError(f"a {kind} has {KIND_WORDS[kind]} dims, but {text!r} gives {len(dims)}")
    if m.group("sym") and kind != "matrix":
        raise ParseError(f"only a matrix can be symmetric: {text!r}")
    for d in dims:
        if isinstance(d, str) and not d.isidentifier():
            raise ParseError(f"a dim must be a name or a number, not {d!r}, in {text!r}")
    return (m.group("name") or name), Decl(kind, dims, bool(m.group("sym")))


# --------------------------------------------------------------------------- shapes


class _Dims:
    """Union-find over unknown dims; a class may be bound to a name or an int."""

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


@dataclass
class Shape:
    """A scalar (rows = cols = None) or a rows × cols matrix; a vector has the literal 1
    on one side: a column is (n, 1), a row (1, n)."""

    rows: object = None
    cols: object = None

    @property
    def scalar(self):
        return self.rows is None


ONE = 1


# --------------------------------------------------------------------------- building


class Builder:
    """Infers kinds and dims of a parsed tree, then builds it with the public API."""

    # a printed 1 or 0 beside a scalar (b + 1, 1/a) is the number; where the caller says the
    # result is a vector or matrix and that reading makes it a scalar, it is the ones tensor
    scalar_ones = True

    def __init__(self, text, dialect, decls):
        self.text, self.dialect, self.decls = text, dialect, decls
        self.dims = _Dims()
        self.vars: dict = {}  # name -> (Decl kind, [dim keys], symmetric)
        self.shapes: dict = {}  # id(node) -> Shape
        self.inner: list = []  # dim keys a product sums over
        self.spread: list = []  # (name, the scalar's node): a scalar added to each entry

    # ---- pass 1: shapes
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
            kind = decl.kind if decl else _kind_by_name(name)
            n = KIND_WORDS[kind]
            keys = [self.dims.fresh() for _ in range(n)]
            if decl is not None:
                for k, d in zip(keys, decl.dims):
                    if d == 1:  # the text dialects keep 1 for a vector's other side
                        raise ParseError(f"{name} is declared with a dim of 1, which the text "
                                         f"dialects read as a vector's orientation; declare a "
                                         f"vector, or a scalar, instead", self.text, node.col)
                    self.dims.unify(k, d)
                if decl.symmetric:
                    self.dims.unify(keys[0], keys[1])
            self.vars[name] = (kind, keys, bool(decl and decl.symmetric))
        kind, keys, _ = self.vars[name]
        if kind == "scalar":
            return Shape()
        return Shape(keys[0], ONE) if kind == "vector" else Shape(*keys)

    def shape(self, node) -> Shape:
        s = getattr(self, "_s_" + _method(node.op))(node)
        self.shapes[id(node)] = s
        return s

    def _fail(self, node, message):
        raise _shape_error(message, self.text, node.col)

    def _same(self, node, a: Shape, b: Shape, what: str):
        spread = self._numpy_broadcast(node, a, b)
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
            left, right = (_source(x) for x in node.args[:2])
            self._fail(node, f"{what}: {left} is {self.fmt(a)} but {right} is {self.fmt(b)}")
        return a

    def _numpy_broadcast(self, node, a: Shape, b: Shape):
        """NumPy's rule for a matrix and a vector (X @ W + b): the vector meets each row, so
        its length is the matrix's number of columns.  In the NumPy dialect only; the
        matrixcalculus dialect adds like shapes (write b*ones(n)' or a rank-one update there)."""
        if self.dialect != "numpy" or a.scalar or b.scalar:
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
                left, right = (_source(x) for x in node.args[:2])
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
        for x in node.args:  # a printed 1 that a product uses is a column (1ᵀx, X1, 1·1ᵀ);
            transposed = False  # beside a scalar only 1ᵀ is surely one (2·1 may be a matrix)
            while x.op in ("transpose", "neg") and x.args:
                transposed ^= x.op == "transpose"
                x = x.args[0]
            if x.op in ("ones", "zeros") and (transposed or not (a.scalar or b.scalar)):
                self.dims.unify(self.shapes[id(x)].cols, ONE)
        if a.scalar or b.scalar:
            if node.op == "@":
                self._fail(node, "@ multiplies vectors and matrices; use * with a scalar")
            return b if a.scalar else a
        self.inner.append(a.cols)
        if not self.dims.unify(a.cols, b.rows):
            left, right = (_source(x) for x in node.args)
            self._fail(node, f"{node.value or node.op!r} multiplies {left}, {self.fmt(a)}, by "
                             f"{right}, {self.fmt(b)}: the inner "
                             f"dims differ" + (" (transpose the vector with ')" if ONE in
                                               (self.dims.resolve(a.cols), self.dims.resolve(b.rows))
                                               and self.dialect == "matrixcalculus" else ""))
        out = Shape(a.rows, b.cols)
        if self.dims.resolve(out.rows) == ONE and self.dims.resolve(out.cols) == ONE:
            return Shape()
        return out

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
        return base

    def _s_ones(self, node):
        return Shape(self.dims.fresh(True), self.dims.fresh(True))

    def _s_eye(self, node):
        d = self.dims.fresh()
        return Shape(d, d)

    def _s_inverse(self, node):
        s = self.shape(node.args[0])
        if not s.scalar:
            self._square(Node("call", node.col, value="inverse"), s)
        return s

    def _s_sup(self, node):
        return self.shape(node.args[0])

    def _s_kronop(self, node):
        self.shape(node.args[0])
        self.shape(node.args[1])
        return Shape(self.dims.fresh(), self.dims.fresh())

    def _s_call(self, node):
        name = node.value
        rule = self.functions().get(name)
        if rule is not None and node.kwargs.get("__order"):
            if len(node.args) != 1:
                raise ParseError(f"a derivative of {name} takes one argument, not "
                                 f"{len(node.args)}", self.text, node.col)
            (s,) = [self.shape(a) for a in node.args]
            if node.kwargs["__order"] > 1 and isinstance(rule[1], L.ScalarFunctionHandle) and \
                    not s.scalar and ONE not in (self.dims.resolve(s.rows), self.dims.resolve(s.cols)):
                raise ParseError("∇²λ of a matrix has order 4 and no matrix form", self.text, node.col)
            return s if isinstance(rule[1], L.ElementwiseFunction) or node.kwargs["__order"] == 1 \
                else Shape(s.rows, s.rows)
        if rule is None:
            raise ParseError(f"unknown function {name!r}; known: "
                             f"{', '.join(sorted(self.functions()))}", self.text, node.col)
        return rule[0](node)

    # ---- functions: name -> (shape rule, builder)
    def functions(self) -> dict:
        if hasattr(self, "_fns"):
            return self._fns
        same = lambda node: self._unary(node, lambda s: s)  # noqa: E731
        scalar = lambda node: self._unary(node, lambda s: Shape())  # noqa: E731
        elementwise = ["exp", "log", "sin", "cos", "tan", "tanh", "sigmoid", "relu", "softplus",
                       "cosh", "sinh", "log1p", "expm1", "arctan",
                       "abs", "sqrt", "sign"]
        fns = {n: (same, getattr(L, n)) for n in elementwise}
        fns.update({
            "det": (self._square_scalar, L.det), "logdet": (self._square_scalar, L.logdet),
            "inv": (self._square_same, L.inv), "diag": (self._diag, L.diag),
            "softmax": (self._softmax, self._build_softmax),
            "logsumexp": (self._logsumexp, self._build_logsumexp),
            "kron": (self._kron, L.kron),
            # matrix functions (docs/matrix-functions.md); eigvalsh needs a symmetric argument
            "expm": (self._square_same, L.expm), "logm": (self._square_same, L.logm),
            "sqrtm": (self._square_same, L.sqrtm), "eigvalsh": (self._eigenvalues, L.eigvalsh),
        })
        if self.dialect == "matdiff":
            fns.update({"tr": (self._square_scalar, L.trace), "step": (same, L.step),
                        "σ": (same, L.sigmoid)})
            # tanhₘ(S): an element-wise function applied to a symmetric matrix (U tanh(Λ) Uᵀ)
            fns.update({f + "ₘ": (self._square_same, lambda x, f=f: L.matrix_function(x, f))
                        for f in MATRIX_FUNCTION_NAMES})
        if self.dialect == "matrixcalculus":
            fns.update({"tr": (self._square_scalar, L.trace), "sum": (scalar, L.sum),
                        "norm1": (scalar, lambda x: L.norm(x, 1) if x.ndim <= 1 else
                                  L.sum(L.abs(x))),
                        "norm2": (scalar, L.norm),
                        "vector": (self._const_vector, self._build_const),
                        "matrix": (self._const_matrix, self._build_const)})
        else:
            fns.update({"trace": (self._square_scalar, L.trace), "sum": (self._np_sum, self._build_sum),
                        "norm": (self._np_norm, self._build_norm), "dot": (self._dot, L.dot),
                        "outer": (self._outer, L.outer)})
        greek = {v: k for k, v in GREEK_NAMES.items()}
        for fname, decl in self.decls.items():
            if decl.kind == "function":
                fns[fname] = (same, L.function(fname))
            elif decl.kind == "scalar_function":
                fns[fname] = (scalar, L.scalar_function(fname))
            if decl.kind in ("function", "scalar_function") and fname in greek:
                fns[greek[fname]] = fns[fname]  # σ is sigma when sigma is declared
        self._fns = fns
        return fns

    def _args(self, node, n):
        keywords = {"softmax", "logsumexp"} | ({"sum"} if self.dialect == "numpy" else set())
        if len(node.args) != n or (node.kwargs and node.value not in keywords) or \
                set(node.kwargs) - {"axis"}:
            raise ParseError(f"{node.value} takes {n} argument{'s' if n > 1 else ''}",
                             self.text, node.col)
        return [self.shape(a) for a in node.args]

    def _unary(self, node, f):
        (s,) = self._args(node, 1)
        return f(s)

    def _square(self, node, s):
        if s.scalar or not self.dims.unify(s.rows, s.cols) or self.dims.resolve(s.cols) == ONE:
            self._fail(node, f"{node.value} needs a square matrix, but its argument is {self.fmt(s)}")

    def _square_scalar(self, node):
        (s,) = self._args(node, 1)
        self._square(node, s)
        return Shape()

    def _square_same(self, node):
        (s,) = self._args(node, 1)
        self._square(node, s)
        return s

    def _eigenvalues(self, node):
        (s,) = self._args(node, 1)
        self._square(node, s)
        return Shape(s.rows, ONE)

    def _diag(self, node):
        (s,) = self._args(node, 1)
        if s.scalar:
            self._fail(node, "diag needs a vector or a square matrix")
        for side in (s.cols, s.rows):  # a printed 1 in diag(Y1) makes a vector
            if isinstance(self.dims.resolve(side), tuple) and self.dims.find(side) in self.dims.flexible:
                self.dims.unify(side, ONE)
                break
        r, c = self.dims.resolve(s.rows), self.dims.resolve(s.cols)
        if c == ONE or r == ONE:
            n = s.rows if c == ONE else s.cols
            return Shape(n, n)
        self._square(node, s)
        return Shape(s.rows, ONE)

    def _axis(self, node):
        axis = node.kwargs.get("axis")
        if axis is None:
            return None
        if axis.op in ("ones", "zeros"):  # the printed dialect reads a bare 1 or 0 as a constant
            return 1 if axis.op == "ones" else 0
        if axis.op != "num" or not float(axis.value).is_integer():
            raise ParseError("axis must be an integer", self.text, axis.col)
        return int(axis.value)

    def _softmax(self, node):
        (s,) = self._args(node, 1)
        if s.scalar:
            self._fail(node, "softmax needs a vector or a matrix")
        return s

    def _logsumexp(self, node):
        (s,) = self._args(node, 1)
        if s.scalar:
            self._fail(node, "logsumexp needs a vector or a matrix")
        r, c = self.dims.resolve(s.rows), self.dims.resolve(s.cols)
        if ONE in (r, c):
            return Shape()
        axis = self._axis(node)
        axis = 1 if axis is None else axis
        return Shape(s.rows, ONE) if axis in (1, -1) else Shape(ONE, s.cols)

    def _kron(self, node):
        a, b = self._args(node, 2)
        if a.scalar or b.scalar:
            return b if a.scalar else a
        return Shape(self.dims.fresh(), self.dims.fresh())  # the API computes product dims

    def _const_vector(self, node):
        self._const_arg(node)
        return Shape(self.dims.fresh(), ONE)

    def _const_matrix(self, node):
        self._const_arg(node)
        return Shape(self.dims.fresh(), self.dims.fresh())

    def _const_arg(self, node):
        if len(node.args) != 1 or node.args[0].op not in ("num", "neg"):
            raise ParseError(f"{node.value}(c) takes one number, the value of every entry",
                             self.text, node.col)

    def _np_sum(self, node):
        (s,) = self._args(node, 1)
        axis = self._axis(node)
        if axis is None or s.scalar:
            return Shape()
        r, c = self.dims.resolve(s.rows), self.dims.resolve(s.cols)
        if ONE in (r, c):
            return Shape()
        return Shape(ONE, s.cols) if axis in (0, -2) else Shape(s.rows, ONE)

    def _np_norm(self, node):
        if len(node.args) not in (1, 2):
            raise ParseError("norm takes a tensor and an optional order", self.text, node.col)
        self.shape(node.args[0])
        return Shape()

    def _dot(self, node):
        a, b = self._args(node, 2)
        self._same(node, a, b, "dot needs operands of one shape")
        return Shape()

    def _outer(self, node):
        a, b = self._args(node, 2)
        return Shape(a.rows if not a.scalar else self.dims.fresh(),
                     b.rows if not b.scalar else self.dims.fresh())

    # ---- pass 2: build
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

    def build(self, node, names) -> Expr:
        return getattr(self, "_b_" + _method(node.op))(node, names)

    def variable(self, name, names) -> Expr:
        kind, keys, symmetric = self.vars[name]
        dims = [self.dims.resolve(k) for k in keys]
        dims = [names.get(self.dims.find(k), d) if isinstance(d, tuple) else d
                for k, d in zip(keys, dims)]
        if kind == "scalar":
            return L.scalar(name)
        if kind == "vector":
            return L.vector(name, dims[0])
        return L.matrix(name, dims[0], dims[1], symmetric=symmetric)

    def _b_num(self, node, names):
        return lift(node.value)

    def _b_size(self, node, names):
        return L.sum(L.ones(node.value))

    def _b_var(self, node, names):
        return self.variable(node.value, names)

    def _b_neg(self, node, names):
        return -self.build(node.args[0], names)

    def _b_transpose(self, node, names):
        return self.build(node.args[0], names).T

    def _b_add(self, node, names):
        a, b = (self.build(x, names) for x in node.args)
        return a + b if node.op == "+" else a - b

    def _b_hadamard(self, node, names):
        a, b = (self.build(x, names) for x in node.args)
        return a * b if node.op in (".*", "*") else a / b

    def _b_matmul(self, node, names):
        a, b = (self.build(x, names) for x in node.args)
        if a.ndim == 0 or b.ndim == 0:
            return a * b
        return a @ b

    def _b_power(self, node, names):
        base, exp = (self.build(x, names) for x in node.args)
        if node.op == "^" and base.ndim == 2:
            k = int(node.args[1].value)
            if k > L.MAX_MATRIX_POWER:
                raise ParseError(f"a matrix power is limited to {L.MAX_MATRIX_POWER:,}", self.text,
                                 node.args[1].col)
            return L.matrix_power(base, k)
        value = _constant(node.args[1])
        return base ** (value if value is not None else exp)

    def _b_ones(self, node, names):
        shape = self.shapes[id(node)]
        dims = []
        for k in (shape.rows, shape.cols):
            d = self.dims.resolve(k)
            if d != ONE and not isinstance(d, tuple):
                dims.append(d)
            elif isinstance(d, tuple) and self.dims.find(k) in names:
                dims.append(names[self.dims.find(k)])
            elif isinstance(d, tuple) and (self.dims.find(k) not in self.dims.flexible or
                                           self.dims.find(k) in {self.dims.find(x) for x in self.inner}):
                # (1ᵀ1): a length no variable gives; reading it as 1 would change the value
                raise ParseError(f"the size of this {'1' if node.op == 'ones' else '0'} is not "
                                 f"fixed by its use", self.text, node.col)
        value = 1.0 if node.op == "ones" else 0.0
        if not dims:
            return lift(value)
        out = L.ones(*dims) if value else L.zeros(*dims)
        if self.dims.resolve(shape.rows) == ONE or (isinstance(self.dims.resolve(shape.rows), tuple)
                                                    and self.dims.find(shape.rows) in self.dims.flexible
                                                    and len(dims) == 1):
            return out.T
        return out

    def _b_eye(self, node, names):
        shape = self.shapes[id(node)]
        d = self.dims.resolve(shape.rows)
        d = names.get(self.dims.find(shape.rows), d) if isinstance(d, tuple) else d
        if isinstance(d, tuple):
            raise ParseError("the size of I is not fixed by its use", self.text, node.col)
        return L.eye(d)

    def _b_inverse(self, node, names):
        x = self.build(node.args[0], names)
        if x.ndim == 0:
            return x ** -1
        return L.inv(x).T if node.op == "inverse_t" else L.inv(x)

    def _b_sup(self, node, names):
        base = self.build(node.args[0], names)
        if base.ndim == 2 and not node.kwargs.get("__entrywise"):  # A³, (Aᵀ)²; tanh²(A) is not
            return L.matrix_power(base, int(node.value))
        return base ** node.value

    def _b_kronop(self, node, names):
        return L.kron(*(self.build(a, names) for a in node.args))

    def _b_call(self, node, names):
        order = node.kwargs.get("__order")  # a definition used twice is one shared node
        if order is not None:
            return self._derivative_call(node, names, order)
        build = self.functions()[node.value][1]
        if build in (self._build_const, self._build_softmax, self._build_logsumexp,
                     self._build_sum, self._build_norm):  # these read the syntax (axis=, c)
            return build(node, names)
        args = [self.build(a, names) for a in node.args]
        try:
            return build(*args)
        except NotSupportedError:
            if node.value != "eigvalsh":
                raise
            raise ParseError("eigvalsh needs a symmetric matrix, and its argument is not one by "
                             "structure: declare the variable symmetric (S: matrix(n, n) symmetric), "
                             "or take it of a symmetric form such as X'*X or A + A'",
                             self.text, node.col) from None

    def _derivative_call(self, node, names, order):
        fn = self.functions()[node.value][1]
        x = self.build(node.args[0], names)
        if isinstance(fn, L.ScalarFunctionHandle):
            return fn.gradient(x) if order == 1 else fn.hessian(x)
        if isinstance(fn, L.ElementwiseFunction):
            return fn.derivative(x, order)
        raise ParseError(f"{node.value} has no symbolic derivative to read", self.text, node.col)

    def _build_const(self, node, names):
        value = node.args[0].value if node.args[0].op == "num" else -node.args[0].args[0].value
        shape = self.shapes[id(node)]
        dims = [names.get(self.dims.find(k), self.dims.resolve(k)) for k in (shape.rows, shape.cols)
                if self.dims.resolve(k) != ONE]
        if any(isinstance(d, tuple) for d in dims):
            raise ParseError(f"the size of {node.value}({value:g}) is not fixed by its use",
                             self.text, node.col)
        return float(value) * L.ones(*dims)

    def _build_softmax(self, node, names):
        x = self.build(node.args[0], names)
        return L.softmax(x, axis=None if x.ndim == 1 else (self._axis(node) if self._axis(node)
                                                           is not None else 1))

    def _build_logsumexp(self, node, names):
        x = self.build(node.args[0], names)
        return L.logsumexp(x, axis=None if x.ndim == 1 else (self._axis(node) if self._axis(node)
                                                             is not None else 1))

    def _build_sum(self, node, names):
        return L.sum(self.build(node.args[0], names), axis=self._axis(node))

    def _build_norm(self, node, names):
        x = self.build(node.args[0], names)
        if len(node.args) == 2:
            order = node.args[1]
            if order.op != "num":
                raise ParseError("the order of a norm must be a number", self.text, order.col)
            return L.norm(x, int(order.value) if float(order.value).is_integer() else order.value)
        return L.norm(x)


OPS = {"num": "num", "size": "size", "var": "var", "neg": "neg", "transpose": "transpose", "call": "call",
       "ones": "ones", "zeros": "ones", "eye": "eye", "inverse": "inverse", "inverse_t": "inverse",
       "sup": "sup", "kron": "kronop",
       "+": "add", "-": "add", ".*": "hadamard", "./": "hadamard", "^": "power", ".^": "power",
       "**": "power", "@": "matmul"}


def _method(op: str) -> str:
    return OPS.get(op, op)


def _source(node, limit: int = 40) -> str:
    """A short text of a syntax tree, for messages: x', A*x, tr(X)."""
    if node.op == "num":
        text = f"{node.value:g}"
    elif node.op == "var":
        text = node.value
    elif node.op == "call":
        text = f"{node.value}({', '.join(_source(a) for a in node.args)})"
    elif node.op == "transpose":
        text = _source(node.args[0]) + "'"
    elif node.op == "neg":
        text = "-" + _source(node.args[0])
    elif node.op in ("ones", "zeros", "eye"):
        text = {"ones": "1", "zeros": "0", "eye": "I"}[node.op]
    elif len(node.args) == 2:
        op = node.value if isinstance(node.value, str) else node.op
        text = f"({_source(node.args[0])} {op} {_source(node.args[1])})"
    else:
        text = "…"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _constant(node):
    """The value of a numeric subtree (−1/2), or None."""
    if node.op == "num":
        return float(node.value)
    if node.op == "neg":
        v = _constant(node.args[0])
        return None if v is None else -v
    if node.op in ("./", "/") and len(node.args) == 2:
        a, b = (_constant(x) for x in node.args)
        return None if a is None or b is None or b == 0 else a / b
    return None


def _kind_by_name(name: str) -> str:
    """matrixcalculus.org's convention: a–g scalars, h–z vectors, A–Z matrices."""
    c = name[0]
    if c.isupper():
        return "matrix"
    return "scalar" if c in "abcdefg" else "vector"


def parse(text: str, dialect: str = "matrixcalculus", result_shape=None, **declarations) -> Expr:
    """An expression from text, without evaluating any code.

    >>> print(md.parse("x'*A*x"))
    xᵀAx
    >>> md.parse("x'*A*x", A="symmetric matrix").variables[0].node.symmetric
    True
    >>> print(md.parse("sum(sigmoid(X @ w))", dialect="numpy"))
    1ᵀσ(Xw)

    ``dialect="matdiff"`` reads matdiff's own text output (give the variables' declarations,
    and ``result_shape`` where the text alone cannot size an I or a 1).
    """
    if dialect not in DIALECTS:
        raise MatdiffError(f"parse: dialect must be one of {DIALECTS}, not {dialect!r}")
    if not isinstance(text, str):
        raise ParseError(f"parse needs a string, not {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ParseError(f"the input is {len(text)} characters long; the limit is {MAX_LENGTH}")
    if not text.strip():
        raise ParseError("the input is empty", text, 0)
    decls = {}
    for name, d in declarations.items():
        _, decl = parse_declaration(d if isinstance(d, str) else str(d), name)
        decls[name] = decl
    if dialect == "matdiff":
        tree = _parse_printed(text, decls)
    else:
        tree = Parser(text, dialect).parse()
        if dialect == "matrixcalculus":  # eye and I are the identity unless declared
            stack = [tree]
            while stack:
                n = stack.pop()
                if n.op == "var" and n.value in ("eye", "I") and n.value not in decls:
                    n.op, n.value = "eye", None
                stack.extend(n.args)
    if dialect == "matrixcalculus":
        _rename_ops(tree)
    if dialect != "matdiff":  # what the syntax alone says: a' is a vector, tr(c) a matrix
        decls = {**decls, **_promotions(tree, None, decls)}
    b = Builder(text, dialect, decls)
    root = b.shape(tree)
    for _ in range(3):  # a–g are scalars by name, unless their use says otherwise (a'*X*b)
        promoted = _promotions(tree, b, decls) if dialect != "matdiff" else {}
        if not promoted:
            break
        trial = Builder(text, dialect, {**decls, **promoted})
        try:
            trial_root = trial.shape(tree)
        except (ParseError, ShapeError):
            break  # the evidence does not make a consistent reading: keep the first
        b, root, decls = trial, trial_root, {**decls, **promoted}
    if result_shape is not None and root.scalar and tuple(result_shape):  # 1/a as 1ₙ/a
        tensor = Builder(text, dialect, decls)
        tensor.scalar_ones = False
        try:
            tensor_root = tensor.shape(tree)
            if not tensor_root.scalar:
                b, root = tensor, tensor_root
        except (ParseError, ShapeError):
            pass
    if result_shape is not None:  # I or 1 alone take their size from the caller
        _expect_shape(b, root, result_shape)
    try:
        out = b.build(tree, b.dim_names())
    except RecursionError:  # pragma: no cover - guarded by MAX_DEPTH
        raise ParseError("the expression is too deeply nested") from None
    _note_spread(b, out, set(declarations), dialect)
    if result_shape is not None and out.ndim != len(tuple(result_shape)):
        # inference and building disagreed (a constant's size the text leaves open)
        raise ShapeError(f"the expression reads as {out.describe_shape()}, but result_shape asks "
                         f"for {len(tuple(result_shape))} axes; the text does not fix the size "
                         f"of every constant in it")
    return out


def _note_spread(b: "Builder", out: Expr, declared: set, dialect: str) -> None:
    """A ParseNote for each scalar added to every entry of a lone name the user did not
    declare (x'*A*x + y, y a vector by its name): valid, but often a misspelt scalar."""
    if dialect == "matdiff":
        return
    kinds = {v.node.name: v for v in out.variables}
    for name, scalar in b.spread:
        if name in declared or name not in kinds or kinds[name].ndim == 0:
            continue
        if scalar is None or _constant(scalar) is not None:
            continue  # x + 1: a number added to each entry is meant
        decl = declaration_of(kinds[name])
        warnings.warn(ParseNote(
            f"{name} is read as a {decl} by its name, so the scalar added to it goes to each of "
            f"its entries; declare {name} (\"{name}: {decl}\", or \"{name}: scalar\") to silence "
            f"this"), stacklevel=3)


def declaration_of(v: Expr) -> str:
    """A variable's declaration as the parser reads it: 'matrix(n, k) symmetric'."""
    node = v.node
    kind = {0: "scalar", 1: "vector", 2: "matrix"}.get(node.ndim, "tensor")
    dims = ", ".join(str(d) for d in node.shape)
    return f"{kind}({dims})" + (" symmetric" if node.symmetric else "") if dims else kind


def _equals(text: str, dialect: str) -> int:
    """The column of the one '=' outside parentheses (not in axis=1), or a ParseError."""
    depth, found = 0, []
    for col, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "=" and depth == 0:
            found.append(col)
    if len(found) != 1:
        example = "'sum(Y, axis=1) = 1' (each row of Y sums to 1) or 'y * y = y'" \
            if dialect == "numpy" else "'Y*vector(1) = 1' (each row of Y sums to 1) or 'y.*y = y'"
        raise ParseError(f"a fact is an equation with one '=', such as {example}" if not found else
                         "a fact has one '=' between its two sides", text,
                         found[1] if len(found) > 1 else None)
    return found[0]


def parse_noting(text: str, dialect: str = "matrixcalculus", **declarations) -> tuple:
    """``parse``, and the texts of the ParseNotes it raised (the command line writes them on
    standard error, the JSON API returns them), instead of warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ParseNote)
        expr = parse(text, dialect, **declarations)
    return expr, [str(w.message) for w in caught if issubclass(w.category, ParseNote)]


def parse_fact(text: str, dialect: str = "matrixcalculus", about=None, **declarations):
    """A declared fact ``lhs = rhs`` from text, read in the dialect with these declarations;
    ``about`` (an expression) declares its variables as they are, so the fact is about the
    same ones. A number on the right fills the left side's shape, and ``I`` alone is the
    identity.

    >>> print(md.parse_fact("Y*vector(1) = 1", Y="matrix(m, k)").text)
    Y1 = 1
    """
    if not isinstance(text, str):
        raise ParseError(f"a fact must be a string, not {type(text).__name__}")
    at = _equals(text, dialect)
    if about is not None:
        declarations = {**{v.node.name: declaration_of(v) for v in about.variables}, **declarations}
    left, right = text[:at], text[at + 1:]
    for start, part in ((0, left), (at + 1, right)):
        if not part.strip():
            raise ParseError("this side of the fact is empty", text, start if start == 0 else len(text))
    lhs = _fact_side(text, 0, lambda: parse(left, dialect, **declarations))
    rhs = right.strip()
    if re.fullmatch(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", rhs):
        rhs = float(rhs)
    elif rhs == "I" and "I" not in declarations and lhs.ndim == 2:
        rhs = L.eye(lhs.shape[0])  # the identity, in either dialect
    else:  # an expression of the left side's shape, about the same variables
        known = {**{v.node.name: declaration_of(v) for v in lhs.variables}, **declarations}
        rhs = _fact_side(text, at + 1, lambda: _right_side(right, dialect, lhs, known))
    fact = L.fact(lhs, rhs)
    fact.text = f"{lhs} = {rhs if isinstance(rhs, Expr) else f'{rhs:g}'}"
    return fact


def _fact_side(text: str, start: int, job):
    """job() (the parse of one side of a fact), its errors placed in the whole fact's text."""
    try:
        return job()
    except (ParseError, ShapeError) as e:
        column = getattr(e, "column", None)
        if column is None:
            raise
        raise ParseError(getattr(e, "message", None) or str(e), text, start + column) from None


def _right_side(part: str, dialect: str, lhs: Expr, declarations: dict) -> Expr:
    """A fact's right side, read with the left side's shape (1 is ones there)."""
    try:
        return parse(part, dialect, result_shape=lhs.shape, **declarations)
    except ShapeError as e:
        if getattr(e, "column", None) is not None:
            raise
        right = parse(part, dialect, **declarations)
        raise ParseError(f"the two sides of a fact need one shape, but the left is "
                         f"{lhs.describe_shape()} and the right {right.describe_shape()}", part,
                         len(part) - len(part.lstrip())) from None


def _expect_shape(b: "Builder", root: Shape, result_shape) -> None:
    """Unify the parsed shape with ``result_shape``, or raise naming both."""
    if isinstance(result_shape, (str, int)) or not hasattr(result_shape, "__iter__"):
        raise MatdiffError(f"parse: result_shape must be a tuple of dims, such as ('n',) or "
                           f"('n', 'k'), not {result_shape!r}")
    dims = tuple(result_shape)
    if len(dims) > 2:
        raise MatdiffError(f"parse: result_shape {dims} has {len(dims)} dims; text expressions are "
                           f"scalars, vectors and matrices")
    for d in dims:
        if not (isinstance(d, str) and d.isidentifier()) and not (
                isinstance(d, int) and not isinstance(d, bool) and d > 0):
            raise MatdiffError(f"parse: result_shape holds {d!r}; a dim is a name or a positive int")
    want = Shape() if not dims else Shape(b.dims.fresh(True), b.dims.fresh(True))
    for key, d in zip((want.rows, want.cols), dims + (ONE,)):
        if not want.scalar:
            b.dims.unify(key, d)
    if want.scalar and not root.scalar:  # a printed 1 or 0 alone: the scalar constant
        root = root if not (b.dims.unify(root.rows, ONE) and b.dims.unify(root.cols, ONE)) \
            else Shape()
    fits = root.scalar == want.scalar and (root.scalar or (
        b.dims.unify(root.rows, want.rows) and b.dims.unify(root.cols, want.cols)))
    if not fits:
        raise ShapeError(f"the expression is {b.fmt(root)}, but result_shape asks for "
                         f"{'a scalar' if not dims else '(' + ' × '.join(map(str, dims)) + ')'}")


def _promotions(tree: Node, b: "Builder", decls: dict) -> dict:
    """Names that matrixcalculus.org's convention makes scalars (a–g, undeclared) but whose
    use gives evidence of more, as that site reads them: a transposed name is a vector (a'),
    so is one added to a vector (A*x − b) or multiplied by a matrix or a row on its left
    (X*b, a'*X*b); an
    inverted, traced or determinant name is a matrix."""
    out = {}

    def kind(node):
        if b is None:
            return "scalar"
        shape = b.shapes.get(id(node))
        if shape is None or shape.scalar:
            return "scalar"
        text = b.fmt(shape)
        return "row" if "row vector" in text else "vector" if "vector" in text else "matrix"

    stack = [tree]
    while stack:
        n = stack.pop()
        stack.extend(n.args)
        for i, c in enumerate(n.args):
            if c.op != "var" or c.value in decls or c.value in out or _kind_by_name(c.value) != "scalar":
                continue
            if n.op == "transpose":
                out[c.value] = "vector"
            elif n.op == "call" and n.value in ("inv", "det", "logdet", "tr", "trace", "expm", "logm",
                                                "sqrtm", "eigvalsh"):
                out[c.value] = "matrix"
            elif n.op in ("+", "-") and len(n.args) == 2 and kind(n.args[1 - i]) != "scalar":
                # a bias added to a matrix: a vector over its rows in NumPy, as NumPy broadcasts
                other = kind(n.args[1 - i])
                out[c.value] = "vector" if other == "row" or (other == "matrix" and
                                                              b.dialect == "numpy") else other
            elif n.op in ("@mc", "@") and i == 1 and kind(n.args[0]) in ("matrix", "row"):
                out[c.value] = "vector"  # X*b, a'*X*b: b a vector
    return {name: Decl(k) for name, k in out.items()}


def _rename_ops(tree: Node):
    """In the matrixcalculus dialect, * is the matrix product."""
    stack = [tree]
    while stack:
        n = stack.pop()
        if n.op == "*":
            n.op, n.value = "@mc", "*"
        stack.extend(n.args)
        stack.extend(n.kwargs.values())


OPS["@mc"] = "matmul"
OPS["*"] = "hadamard"
OPS["/"] = "hadamard"


# --------------------------------------------------------------------------- printed text

SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹"
PRINTED_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<op>⁻ᵀ|⁻¹(?![⁰¹²³⁴⁵⁶⁷⁸⁹])|\^∘|\^\(|‖_F|[ᵀ⊙⊘⊗·√∇|‖+\-−/(),=])
  | (?P<sup>⁻?[⁰¹²³⁴⁵⁶⁷⁸⁹]+)
  | (?P<primes>[′″‴]+)
  | (?P<name>[A-Za-zα-ωΑ-Ω_][A-Za-z0-9_α-ω]*ₘ?)
""", re.VERBOSE)
GREEK_NAMES = {letter: name for name, letter in GREEK.items()}  # σ → sigma, Σ → Sigma
MATRIX_FUNCTION_NAMES = ("exp", "log", "sin", "cos", "tan", "tanh", "sigmoid", "softplus", "cosh",
                         "sinh", "log1p", "expm1", "arctan", "abs", "sqrt", "relu", "sign", "step")
PRINTED_FUNCTIONS = {"tr", "det", "log", "diag", "exp", "sin", "cos", "tan", "tanh", "softplus",
                     "relu", "step", "sign", "softmax", "logsumexp", "σ", "abs", "sigmoid",
                     "cosh", "sinh", "log1p", "expm1", "arctan", "expm", "logm", "sqrtm",
                     "eigvalsh"} | {f + "ₘ" for f in MATRIX_FUNCTION_NAMES}


def _superscript(text: str) -> int:
    digits = "".join(str(SUPERSCRIPTS.index(c)) for c in text if c in SUPERSCRIPTS)
    return -int(digits) if text.startswith("⁻") else int(digits)


class PrintedParser(Parser):
    """Reads matdiff's own text output: juxtaposition, ᵀ, ⁻¹, ⊙, ⊘, ⊗, σ′, ∇λ, 1, I, …

    Names are split by the known variables and functions (XW is X times W); a printed 1
    or 0 takes the shape its use gives it.
    """

    IMPLICIT = 20

    def __init__(self, text, variables: set, functions: set, definitions: dict, sizes=frozenset()):
        self.text, self.dialect, self.depth, self.i = text, "matdiff", 0, 0
        self.variables, self.fns, self.definitions = variables, functions | PRINTED_FUNCTIONS, definitions
        self.sizes = set(sizes) - variables - set(definitions) - functions  # dims read as sizes: n
        self.known = variables | set(definitions) | functions | self.sizes
        self.numeric = self.bars = self.norms = 0
        self.toks = self.tokenize(text)

    def tokenize(self, text):
        out, pos = [], 0
        while pos < len(text):
            m = PRINTED_TOKEN.match(text, pos)
            if m is None:
                raise ParseError(f"unexpected character {text[pos]!r}", text, pos)
            kind, word = m.lastgroup, m.group()
            if kind == "name" and text[m.end():].lstrip().startswith("="):
                out.append(Tok("name", word, m.start()))  # axis=1: a keyword, not x·i·s
            elif kind == "name" and word.endswith("ₘ"):  # tanhₘ: one name, after what precedes it
                toks = self.split(word[:-1], m.start())
                out.extend(toks[:-1] + [Tok("name", toks[-1].text + "ₘ", toks[-1].col)])
            elif kind == "name":
                out.extend(self.split(word, m.start()))
            elif kind != "space":
                out.append(Tok(kind, {"−": "-"}.get(word, word), m.start()))
            pos = m.end()
        out.append(Tok("end", "", len(text)))
        return out

    def split(self, word, col):
        """XW → X, W: the reading with the fewest unknown names, then the fewest pieces
        (trelu(t) is t·relu(t), not tr·e·l·u); an unknown name is one letter and its digits,
        digits alone are a number (X1: X times the ones vector)."""
        words = self.known | PRINTED_FUNCTIONS
        best = [(0, 0, [])] + [None] * len(word)  # best[i]: (unknown, pieces, tokens) of word[:i]
        for i in range(len(word)):
            if best[i] is None:
                continue
            unknown, pieces, toks = best[i]
            options = [(w, "name", 0) for w in words if word.startswith(w, i)]
            j = i + 1
            while j < len(word) and word[j].isdigit():
                j += 1
            if word[i].isdigit():
                options.append((word[i:j], "number", 0))
            elif not any(w == word[i:j] for w, _, _ in options):
                options.append((word[i:j], "name", 1))
            for text, kind, cost in options:
                k = i + len(text)
                cand = (unknown + cost, pieces + 1, toks + [Tok(kind, text, col + i)])
                if best[k] is None or cand[:2] < best[k][:2]:
                    best[k] = cand
        return best[len(word)][2]

    def starts_atom(self, tok) -> bool:
        return tok.kind in ("number", "name") or tok.text in ("(", "√", "∇", "|") or \
            (tok.text == "‖" and not self.norms)

    def expression(self, min_bp: int) -> Node:
        left = self.enter()
        while True:
            tok = self.peek()
            if tok.text in ("ᵀ", "⁻¹", "⁻ᵀ") or tok.kind == "sup":
                self.take()
                left = Node({"ᵀ": "transpose", "⁻¹": "inverse", "⁻ᵀ": "inverse_t"}.get(
                    tok.text, "sup"), tok.col, [left], value=_superscript(tok.text)
                    if tok.kind == "sup" else None)
                continue
            bp = {"+": (10, 11), "-": (10, 11), "⊙": (15, 16), "⊘": (15, 16), "⊗": (15, 16),
                  "·": (20, 21), "/": (20, 21), "^∘": (41, 40), "^(": (41, 40)}.get(tok.text)
            if bp is None and self.starts_atom(tok) and (tok.text != "|" or not self.bars):
                if self.IMPLICIT < min_bp:
                    break
                left = Node("@mc", tok.col, [left, self.expression(self.IMPLICIT + 1)], value="·")
                continue
            if bp is None or bp[0] < min_bp:
                break
            self.take()
            if tok.text == "^(":  # an exponent is a number: its 1 is not a ones vector
                self.numeric += 1
                right = self.expression(0)
                self.numeric -= 1
                self.expect(")")
            else:
                right = self.expression(bp[1])
            op = {"⊙": ".*", "⊘": "./", "⊗": "kron", "·": "@mc", "/": "./", "^∘": ".^",
                  "^(": "**"}.get(tok.text, tok.text)
            left = Node(op, tok.col, [left, right], value=tok.text)
        self.depth -= 1
        return left

    def prefix(self) -> Node:
        tok = self.peek()
        t = self.toks[self.i:self.i + 5]
        if len(t) == 5 and [x.text for x in t[::2]] == ["(", "/", ")"] and \
                t[1].kind == t[3].kind == "number":  # (1/2): a coefficient, never a ones vector
            self.i += 5
            return Node("num", tok.col, value=float(t[1].text) / float(t[3].text))
        if tok.text == "√":
            self.take()
            return Node("call", tok.col, [self.expression(self.IMPLICIT + 1)], "sqrt")
        if tok.text == "|":  # within bars, a | closes them (the printer writes abs(x) there)
            self.take()
            self.bars += 1
            inner = self.expression(0)
            self.bars -= 1
            self.expect("|")
            return Node("call", tok.col, [inner], "abs")
        if tok.text == "‖":  # ‖x‖, ‖X‖_F
            self.take()
            self.norms += 1
            inner = self.expression(0)
            self.norms -= 1
            end = self.take()
            if end.text not in ("‖", "‖_F"):
                raise ParseError("a norm ‖…‖ is not closed", self.text, end.col)
            return Node("call", tok.col, [inner], "norm")
        if tok.text == "∇":
            self.take()
            order = _superscript(self.take().text) if self.peek().kind == "sup" else 1
            name = self.take()
            if name.kind != "name":
                raise ParseError("∇ needs a function name, as in ∇λ(X)", self.text, name.col)
            node = self.call(name)
            node.kwargs["__order"] = order
            return node
        if tok.kind == "number" and tok.text in ("1", "0") and not self.numeric:
            self.take()
            return Node("ones" if tok.text == "1" else "zeros", tok.col)
        if tok.kind == "name" and tok.text == "I" and "I" not in self.known:
            self.take()
            return Node("eye", tok.col)
        nxt = self.toks[min(self.i + 1, len(self.toks) - 1)]
        if tok.kind == "name" and tok.text in self.fns and (
                nxt.kind in ("primes", "sup") or nxt.text == "(" or
                (tok.text == "log" and nxt.text == "det")):
            self.take()
            if tok.text == "log" and self.peek().text == "det":  # log det(X)
                self.take()
                tok = Tok("name", "logdet", tok.col)
            mark = self.take() if self.peek().kind in ("primes", "sup") else None
            node = self.call(tok)
            if mark is not None and mark.kind == "primes":
                node.kwargs["__order"] = sum({"′": 1, "″": 2, "‴": 3}[c] for c in mark.text)
            elif mark is not None:  # tanh²(A): the function's power, entry-wise
                power = Node("sup", mark.col, [node], value=_superscript(mark.text))
                power.kwargs["__entrywise"] = True
                return power
            return node
        if tok.kind == "name":
            self.take()
            if tok.text in self.definitions:
                return self.definitions[tok.text]
            if tok.text in self.sizes:
                return Node("size", tok.col, value=tok.text)
            return Node("var", tok.col, value=tok.text)
        return super().prefix()


class _Definitions(dict):
    """The "where" names of printed text, each parsed when first used: a definition may
    use one listed after it (α = relu(β), β = sin(t))."""

    def __init__(self, bodies, variables, functions):
        super().__init__()
        self.bodies, self.variables, self.functions, self.open = bodies, variables, functions, set()

    def __contains__(self, name):
        return name in self.bodies

    def __iter__(self):
        return iter(self.bodies)

    def __len__(self):
        return len(self.bodies)

    def __getitem__(self, name):
        if not dict.__contains__(self, name):
            if name in self.open:
                raise ParseError(f"the definition of {name} uses itself", self.bodies[name], 0)
            self.open.add(name)
            dict.__setitem__(self, name, PrintedParser(self.bodies[name], self.variables,
                                                       self.functions, self, self.sizes).parse())
            self.open.discard(name)
        return dict.__getitem__(self, name)


def _parse_printed(text: str, decls: dict) -> Node:
    """matdiff's text output, its "  where s = …" definitions included."""
    main, _, where = text.partition("  where ")
    variables = {n for n, d in decls.items() if d.kind in KIND_WORDS}
    variables |= {g for g, n in GREEK_NAMES.items() if n in variables}
    functions = {n for n, d in decls.items() if d.kind not in KIND_WORDS and d.kind != "dim"}
    functions |= {g for g, n in GREEK_NAMES.items() if n in functions}
    bodies = {}
    for part in filter(None, (p.strip() for p in re.split(r",\s(?=\S+ = )", where))):
        name, _, body = part.partition(" = ")
        bodies[name.strip()] = body
    definitions = _Definitions(bodies, variables, functions)
    definitions.sizes = {x for d in decls.values() if d.kind in KIND_WORDS for x in (d.dims or ())
                         if isinstance(x, str) and x.isidentifier()}
    definitions.sizes |= {n for n, d in decls.items() if d.kind == "dim"}
    tree = PrintedParser(main, variables, functions, definitions, definitions.sizes).parse()
    stack = [tree]
    while stack:  # Greek letters back to the names they print
        n = stack.pop()
        if n.op == "var" and n.value in GREEK_NAMES and GREEK_NAMES[n.value] in variables:
            n.value = GREEK_NAMES[n.value]
        if n.op == "call" and n.value in GREEK_NAMES and GREEK_NAMES[n.value] in functions:
            n.value = GREEK_NAMES[n.value]
        stack.extend(n.args)
    return tree


def declarations(expr) -> dict:
    """Declarations that make ``parse`` read an expression's variables and functions as
    they are: {"A": "matrix(n, n) symmetric", "sigma": "function", …}."""
    from .functions import Function, ScalarFunction
    from .ir import Elementwise, ScalarFn, walk

    out = {}
    for v in lift(expr).variables:
        if v.ndim > 2:
            raise MatdiffError(f"{v.node.name} has order {v.ndim}; the text dialects have "
                               f"scalars, vectors and matrices")
        out[v.node.name] = declaration_of(v)
    from . import dims as D
    for n in walk(lift(expr).node):
        for name in sorted(D.names(n.shape) - set(out)):  # sizes the text may name: 2sn²
            out[name] = "dim"
        if isinstance(n, Elementwise) and isinstance(n.fn, Function) and not n.fn.builtin:
            out[n.fn.name] = "function"
        elif isinstance(n, ScalarFn) and isinstance(n.fn, ScalarFunction):
            out[n.fn.name] = "scalar_function"
    return out
