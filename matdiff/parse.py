"""Text input: three dialects, one hand-written parser, shapes inferred by unification.

``parse(text, dialect="matrixcalculus" | "numpy" | "matdiff", **declarations)`` reads an
expression without evaluating any Python.  It runs in three steps, each in a module of
its own:

1. read the text into a small syntax tree (``syntax.py``: a Pratt parser; each dialect is a
   table of operators with their binding powers in ``dialects.py``, and matdiff's printed
   text has a reader of its own, ``printed.py``);
2. infer every variable's kind and dims (``shapes.py``): kinds come from declarations or the
   naming convention of matrixcalculus.org (a–g scalars, h–z vectors, A–Z matrices) unless
   the use of an a–g name says otherwise (``a'*X*b`` and ``A*x - b`` make vectors, ``tr(c)``
   a matrix: the dialects' evidence table), dims are unknowns unified by use, so ``x'*A*x``
   makes A square;
3. build the expression through the public API (here), which checks everything once more.

Every error is a ``ParseError`` (or a ``ShapeError``) that quotes the input with a caret
under the offending column.
"""
from __future__ import annotations

import sys

import re
import warnings

from . import dims as D
from . import library as L
from .dialects import DIALECTS as TABLES, MATRIXCALCULUS, Dialect, evidence, read
from .errors import MatdiffError, NotSupportedError, ParseNote, ShapeError
from .expr import Expr, lift
from .ir import Reshape
from .shapes import ONE, Inference
from .syntax import OPERATIONS, ParseError, constant, parse_declaration

MAX_LENGTH = 10_000
DIALECTS = tuple(TABLES)  # matrixcalculus, numpy, matdiff


class Builder:
    """Builds a parsed tree through the public API, with the kinds and dims inferred."""

    def __init__(self, inferred: Inference, open_dims=frozenset()):
        self.inferred, self.text = inferred, inferred.text
        self.dims, self.shapes = inferred.dims, inferred.shapes
        # the result's own dims that nothing fixed (no result_shape): a constant sized by them
        # alone is read at size 1, which shows in the result's shape, not in a value — unless
        # entries mix along the dim (a product sums over it, softmax or diag takes it: mixed),
        # where it is refused
        self.open_dims = open_dims
        self.mixed = {self.dims.find(k) for k in (*inferred.inner, *inferred.mixed)}

    def _open(self, node) -> bool:
        shape = self.shapes[id(node)]
        return any(self.dims.find(k) in self.open_dims for k in (shape.rows, shape.cols))

    def build(self, node, names) -> Expr:
        return BUILDERS[node.op](self, node, names)

    def variable(self, name, names) -> Expr:
        kind, keys, symmetric = self.inferred.vars[name]
        dims = [self.dims.resolve(k) for k in keys]
        dims = [names.get(self.dims.find(k), d) if isinstance(d, tuple) else d
                for k, d in zip(keys, dims)]
        if kind == "scalar":
            return L.scalar(name, positive=symmetric == "positive")
        if kind == "vector":
            return L.vector(name, dims[0])
        return L.matrix(name, dims[0], dims[1], symmetric=bool(symmetric), spd=symmetric == "spd")

    def _b_num(self, node, names):
        return lift(node.value)

    def _b_size(self, node, names):
        return L.sum(L.ones(node.value))

    def _b_var(self, node, names):
        return self.variable(node.value, names)

    def _b_neg(self, node, names):
        return -self.build(node.args[0], names)

    def _b_transpose(self, node, names):
        out = self.build(node.args[0], names)
        if out.ndim == 0 and node.args[0].op in ("ones", "zeros") and not self._open(node.args[0]):
            c = "1" if node.args[0].op == "ones" else "0"
            raise ParseError(f"the length of this {c}ᵀ is not fixed by its use: {c}ᵀ is a row, and "
                             f"nothing beside it gives its length (reading it as the number {c} could "
                             f"change the value); write it beside a vector or matrix that sizes it "
                             f"({c}ᵀx, {c}ᵀX)", self.text, node.args[0].col)
        return out.T

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
        value = constant(node.args[1])
        return base ** (value if value is not None else exp)

    def _b_ones(self, node, names):
        shape = self.shapes[id(node)]
        c = "1" if node.op == "ones" else "0"
        dims = []
        for k in (shape.rows, shape.cols):
            d = self.dims.resolve(k)
            if d != ONE and not isinstance(d, tuple):
                dims.append(d)
            elif isinstance(d, tuple) and self.dims.find(k) in names:
                dims.append(names[self.dims.find(k)])
            elif isinstance(d, tuple) and (self.dims.find(k) not in self.open_dims or self.dims.find(k)
                                           in self.mixed):
                # ‖t1 + 1‖², tr(A ⊗ 1), 1ᵀ1, 1ᵀsin(1/n): a length that only other constants
                # share and no variable gives; reading it as 1 (the number) would change the value
                # (and so would a dim of the result that a product sums over or entries mix
                # along: 1ᵀ(11ᵀ), softmax(1, axis=1), diag(1))
                raise ParseError(f"the size of this {c} is not fixed by its use: nothing beside it "
                                 f"gives its length (it could be the number {c}, or a vector or matrix "
                                 f"of {c}s, and the value depends on which); write it beside a variable "
                                 f"that sizes it (x + {c}, X{c}, {c}ᵀx)", self.text, node.col)
        value = 1.0 if node.op == "ones" else 0.0
        if not dims:
            return lift(value)
        out = L.ones(*dims) if value else L.zeros(*dims)
        rows = self.dims.resolve(shape.rows)  # a row where its rows are 1 or read at 1 (open)
        if rows == ONE or (isinstance(rows, tuple) and self.dims.find(shape.rows) not in names
                           and len(dims) == 1):
            return out.T
        return out

    def _rows_fixed(self, node, names, what: str):
        """The dim of a constant's rows (I, eₖ) as its use fixed it, or a ParseError."""
        rows = self.shapes[id(node)].rows
        d = self.dims.resolve(rows)
        d = names.get(self.dims.find(rows), d) if isinstance(d, tuple) else d
        if isinstance(d, tuple):
            raise ParseError(f"the {what} is not fixed by its use", self.text, node.col)
        return d

    def _b_unit(self, node, names):
        return L.unit(self._rows_fixed(node, names, "length of this unit vector"), node.value[1])

    def _b_eye(self, node, names):
        return L.eye(self._rows_fixed(node, names, "size of I"))

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

    def _b_solve(self, node, names):  # A \ B
        return L.solve(*(self.build(a, names) for a in node.args))

    def _b_pinv(self, node, names):  # X⁺
        return L.pinv(self.build(node.args[0], names))

    def _b_kronop(self, node, names):
        return L.kron(*(self.build(a, names) for a in node.args))

    def _b_call(self, node, names):
        order = node.kwargs.get("__order")  # a definition used twice is one shared node
        if order is not None:
            return self._derivative_call(node, names, order)
        build = self.inferred.functions()[node.value].build
        if isinstance(build, str):  # the builders that read the syntax (axis=, c)
            return SYNTAX_BUILDERS[build](self, node, names)
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
        fn = self.inferred.functions()[node.value]
        x = self.build(node.args[0], names)
        if fn.derivative == "gradient":  # a declared scalar function: ∇λ(X), ∇²λ(x)
            return fn.build.gradient(x) if order == 1 else fn.build.hessian(x)
        if fn.derivative == "elementwise":  # a declared function: σ′(x)
            return fn.build.derivative(x, order)
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

    def _build_eye(self, node, names):
        return L.eye(self.inferred.sized(node))

    def _build_vec(self, node, names):  # vec(X): the columns stacked, as md.vec(X)
        x = self.build(node.args[0], names)
        if x.ndim < 2:
            return x
        return Expr(Reshape(x.T.node, (D.size(x.shape),)), src=f"vec({x.src})")

    def _build_softmax(self, node, names):
        x = self.build(node.args[0], names)
        if x.ndim == 1:  # a vector's axis= is not read
            return L.softmax(x, axis=None)
        axis = self.inferred.axis(node)
        return L.softmax(x, axis=axis if axis is not None else 1)

    def _build_logsumexp(self, node, names):
        x = self.build(node.args[0], names)
        if x.ndim == 1:  # a vector's axis= is not read
            return L.logsumexp(x, axis=None)
        axis = self.inferred.axis(node)
        return L.logsumexp(x, axis=axis if axis is not None else 1)

    def _build_sum(self, node, names):
        return L.sum(self.build(node.args[0], names), axis=self.inferred.axis(node))

    def _build_defined(self, node, names):
        """fₘ(S)  where f(u) = u³: md.matrix_function of the function the text defines."""
        param, body, col = self.inferred.decls[node.value].definition
        f = _defined_function(node.value[:-1], param, body, self.text, col)
        return L.matrix_function(self.build(node.args[0], names), f)

    def _build_norm(self, node, names):
        x = self.build(node.args[0], names)
        if len(node.args) == 2:
            order = node.args[1]
            if order.op != "num":
                raise ParseError("the order of a norm must be a number", self.text, order.col)
            return L.norm(x, int(order.value) if float(order.value).is_integer() else order.value)
        return L.norm(x)


# each node's builder, by its operation (syntax.OPERATIONS), and the builders of the
# functions that read their syntax (axis=, a constant's value), named in the dialects' tables
BUILDERS = {op: getattr(Builder, "_b_" + operation) for op, operation in OPERATIONS.items()}
SYNTAX_BUILDERS = {"const": Builder._build_const, "eye": Builder._build_eye, "vec": Builder._build_vec,
                   "softmax": Builder._build_softmax, "logsumexp": Builder._build_logsumexp,
                   "sum": Builder._build_sum, "norm": Builder._build_norm, "defined": Builder._build_defined}


def _defined_function(name: str, param: str, body: str, text: str, col: int):
    """The Python function of one scalar that printed text's where-clause defines (f(u) =
    u exp(u)), for md.matrix_function to trace: the body read in the matdiff dialect with
    ``param`` a scalar, and nothing else in it."""
    try:
        e = parse(body, dialect="matdiff", **{param: "scalar"})
    except (ParseError, ShapeError) as err:
        raise ParseError(f"in the definition of {name}: {getattr(err, 'message', None) or err}",
                         text, col + (getattr(err, "column", None) or 0)) from None
    others = sorted(v.node.name for v in e.variables if v.node.name != param)
    if e.ndim != 0 or others:
        raise ParseError(f"{name}({param}) must be a scalar expression of {param} alone, but it "
                         f"uses {', '.join(others) or 'a ' + e.describe_shape()}", text, col)
    u = next((v.node for v in e.variables), None)

    def f(z):
        return e if u is None else Expr(L._vectorised(e.node, u, z.node))

    f.__name__ = name
    return f


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
    if result_shape is not None and (isinstance(result_shape, (str, int)) or
                                     not hasattr(result_shape, "__iter__")):
        raise MatdiffError(f"parse: result_shape must be a tuple of dims, such as ('n',) or "
                           f"('n', 'k'), not {result_shape!r}")
    try:
        return _parse(text, TABLES[dialect], result_shape, decls, declarations)
    except RecursionError:  # a chain a*a*…*a is a tree as deep as it is long
        raise ParseError(f"the expression is too long to read within Python's recursion limit "
                         f"of {sys.getrecursionlimit()} (each operator of a chain adds a level); "
                         f"raise it with sys.setrecursionlimit (the command line allows 20,000), "
                         f"or write the chain in parts", text, 0) from None


def _parse(text, table, result_shape, decls, declarations) -> Expr:
    tree = read(table, text, decls)
    if table.evidence:  # what the syntax alone says: a' is a vector, tr(c) a matrix
        decls = {**decls, **evidence(table, tree, None, decls)}
    b = Inference(text, table, decls)
    root = b.shape(tree)
    for _ in range(3):  # a–g are scalars by name, unless their use says otherwise (a'*X*b)
        promoted = evidence(table, tree, b, decls)
        if not promoted:
            break
        trial = Inference(text, table, {**decls, **promoted})
        try:
            trial_root = trial.shape(tree)
        except (ParseError, ShapeError):
            break  # the evidence does not make a consistent reading: keep the first
        b, root, decls = trial, trial_root, {**decls, **promoted}
    if result_shape is not None and root.scalar and tuple(result_shape):  # 1/a as 1ₙ/a
        tensor = Inference(text, table, decls, scalar_ones=False)
        try:
            tensor_root = tensor.shape(tree)
            if not tensor_root.scalar:
                b, root = tensor, tensor_root
        except (ParseError, ShapeError):
            pass
    if result_shape is not None:  # I or 1 alone take their size from the caller
        b.expect(root, result_shape)
    open_dims = frozenset() if result_shape is not None or root.scalar else \
        frozenset(b.dims.find(k) for k in (root.rows, root.cols) if isinstance(b.dims.resolve(k), tuple))
    out = Builder(b, open_dims).build(tree, b.dim_names())
    _note_spread(b, out, set(declarations), table)
    if result_shape is not None and out.ndim != len(tuple(result_shape)):
        # inference and building disagreed (a constant's size the text leaves open)
        raise ShapeError(f"the expression reads as {out.describe_shape()}, but result_shape asks "
                         f"for {len(tuple(result_shape))} axes; the text does not fix the size "
                         f"of every constant in it")
    return out


def _note_spread(b: Inference, out: Expr, declared: set, dialect: Dialect) -> None:
    """A ParseNote for each scalar added to every entry of a lone name the user did not
    declare (x'*A*x + y, y a vector by its name): valid, but often a misspelt scalar."""
    if not dialect.notes:
        return
    kinds = {v.node.name: v for v in out.variables}
    for name, scalar in b.spread:
        if name in declared or name not in kinds or kinds[name].ndim == 0:
            continue
        if scalar is None or constant(scalar) is not None:
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
    sym = {"spd": " spd", "positive": " positive", True: " symmetric"}.get(node.symmetric, "")
    return (f"{kind}({dims})" if dims else kind) + sym


def _equals(text: str, dialect: str) -> int:
    """The column of the one '=' outside parentheses (not in axis=1), or a ParseError."""
    depth, found = 0, []
    for col, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "=" and depth == 0:
            found.append(col)
    if len(found) != 1:
        example = (TABLES[dialect] if dialect in DIALECTS else MATRIXCALCULUS).fact_example
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
