"""The syntax of text input: tokens, the syntax tree, the Pratt parser and declarations.

``Parser(text, dialect).parse()`` reads text into a tree of ``Node``s.  The parser is one
loop over binding powers; the operators, their powers and the nodes they build are the
dialect's table (``dialects.py``), so the loop knows no dialect.  Nothing here knows shapes
or builds expressions.  Every error is a ``ParseError`` that quotes the input with a caret
under the offending column.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .errors import WINDOW, MatdiffError, ShapeError, with_caret

MAX_DEPTH = 100
PREFIX_MINUS = 30  # prefix minus binds like a product's operand: -x*y is (-x)*y


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


def shape_error(message, text, column) -> ShapeError:
    """A ShapeError that quotes the text with a caret, as a ParseError does."""
    err = ShapeError(message)
    err.text, err.column, err.message = text, column, message
    err.args = (str(ParseError(message, text, column)),)
    return err


# --------------------------------------------------------------------------- tokens

TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<op>\.\*|\./|\.\^|\*\*|\.T\b|[-+*/^@'(),=\\])
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


# What each node of a tree is: the name of its shape rule (shapes.py) and of its builder
# (parse.py).  Binary nodes keep their dialect's operator, so that messages quote it.
OPERATIONS = {
    "num": "num", "size": "size", "var": "var", "neg": "neg", "transpose": "transpose",
    "call": "call", "ones": "ones", "zeros": "ones", "eye": "eye", "unit": "unit", "inverse": "inverse",
    "inverse_t": "inverse", "sup": "sup", "kron": "kronop",
    "+": "add", "-": "add", ".*": "hadamard", "./": "hadamard", "*": "hadamard", "/": "hadamard",
    "^": "power", ".^": "power", "**": "power", "@": "matmul", "@mc": "matmul",
    "\\": "solve", "pinv": "pinv",
}


def source(node: Node, limit: int = 40) -> str:
    """A short text of a syntax tree, for messages: x', A*x, tr(X)."""
    if node.op == "num":
        text = f"{node.value:g}"
    elif node.op == "var":
        text = node.value
    elif node.op == "call":
        text = f"{node.value}({', '.join(source(a) for a in node.args)})"
    elif node.op == "transpose":
        text = source(node.args[0]) + "'"
    elif node.op == "neg":
        text = "-" + source(node.args[0])
    elif node.op == "unit":
        text = "e" + str(node.value[1] + 1 if node.value[1] >= 0 else node.value[0])
    elif node.op in ("ones", "zeros", "eye"):
        text = {"ones": "1", "zeros": "0", "eye": "I"}[node.op]
    elif len(node.args) == 2:
        op = node.value if isinstance(node.value, str) else node.op
        text = f"({source(node.args[0])} {op} {source(node.args[1])})"
    else:
        text = "…"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def constant(node: Node):
    """The value of a numeric subtree (−1/2), or None."""
    if node.op == "num":
        return float(node.value)
    if node.op == "neg":
        v = constant(node.args[0])
        return None if v is None else -v
    if node.op in ("./", "/") and len(node.args) == 2:
        a, b = (constant(x) for x in node.args)
        return None if a is None or b is None or b == 0 else a / b
    return None


# --------------------------------------------------------------------------- the Pratt parser


class Parser:
    """A Pratt parser over a dialect's operators: ``dialect.infix`` maps an operator to its
    left and right binding powers and the node it builds, ``dialect.postfix`` to its power
    and node, ``dialect.foreign`` names the other dialect an unknown operator belongs to."""

    def __init__(self, text: str, dialect):
        self.text, self.dialect = text, dialect
        self.infix, self.postfix = dialect.infix, dialect.postfix
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
            post = self.postfix.get(tok.text)
            if post is not None and tok.kind == "op":
                if post[0] < min_bp:
                    break
                self.take()
                left = Node(post[1], tok.col, [left])
                continue
            bp = self.infix.get(tok.text) if tok.kind == "op" else None
            if bp is None or bp[0] < min_bp:
                if tok.kind == "op" and tok.text not in (")", ",") and bp is None and post is None:
                    other = self.dialect.foreign.get(tok.text)
                    extra = f"; {tok.text!r} belongs to the {other} dialect" if other else ""
                    raise ParseError(f"unexpected {tok.text!r}{extra}", self.text, tok.col)
                break
            self.take()
            right = self.expression(bp[1])
            op = bp[2]  # the node the operator builds; it keeps the operator where they differ
            left = Node(op, tok.col, [left, right], None if op == tok.text else tok.text)
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
                  r"(?P<sym>symmetric|spd|positive definite|symmetric positive definite|positive)?\s*$")


@dataclass
class Decl:
    kind: str  # scalar, vector, matrix, function, scalar_function
    dims: tuple = ()
    symmetric: bool | str = False  # True, "spd" (symmetric positive definite), "positive" (a scalar)
    definition: tuple = ()  # a "matrix_function"'s (u, "u³", column) (printed fₘ(S)  where f(u) = u³)


def parse_declaration(text: str, name: str | None = None) -> tuple:
    """'A: matrix(n, n) symmetric' (or 'symmetric matrix', 'vector(n)') → (name, Decl)."""
    words = " ".join(text.split())
    for lead in ("symmetric positive definite ", "positive definite ", "spd ", "symmetric ", "positive "):
        if words.startswith(lead):  # 'spd matrix(n, n)' as 'matrix(n, n) spd'
            words = words[len(lead):] + " " + lead.strip()
            break
    m = DECL.match(words)
    if m is None or (name is None and m.group("name") is None):
        raise ParseError(f"cannot read the declaration {text!r}; write e.g. "
                         f"'A: matrix(n, n) symmetric', 'x: vector(n)' or 'sigma: function'")
    kind = m.group("kind").replace(" ", "_")
    dims = tuple(d.strip() for d in (m.group("dims") or "").split(",") if d.strip())
    dims = tuple(int(d) if d.isascii() and d.isdigit() else d for d in dims)  # not "²"
    if kind in KIND_WORDS and dims and len(dims) != KIND_WORDS[kind]:
        raise ParseError(f"a {kind} has {KIND_WORDS[kind]} dims, but {text!r} gives {len(dims)}")
    if m.group("sym") == "positive" and kind != "scalar":
        raise ParseError(f"only a scalar can be positive: {text!r}; a matrix is 'spd' (symmetric "
                         f"positive definite)")
    if m.group("sym") and m.group("sym") != "positive" and kind != "matrix":
        raise ParseError(f"only a matrix can be {m.group('sym')}: {text!r}")
    for d in dims:
        if isinstance(d, str) and not d.isidentifier():
            raise ParseError(f"a dim must be a name or a number, not {d!r}, in {text!r}")
    sym = m.group("sym")
    tag = sym if sym in ("symmetric", "positive", None) else "spd"
    return (m.group("name") or name), Decl(kind, dims, {"symmetric": True, None: False}.get(tag, tag))
