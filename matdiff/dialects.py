"""The dialects of text input, one table each: ``MATRIXCALCULUS`` (``x'*A*x``, as on
matrixcalculus.org), ``NUMPY`` (``x.T @ A @ x``) and ``MATDIFF`` (matdiff's printed text).

A table holds what its dialect says, and nothing else: its operators with their binding
powers and the nodes they build (read by the Pratt parser of ``syntax.py``), its functions
with their shape rules (named in ``shapes.py``) and builders, and its inference rules —
whether a vector meets each row of a matrix (NumPy's bias broadcasting), what an a–g name
used as a bias is, whether evidence of use can make an a–g name more than a scalar.  The
rules every dialect shares are tables here too: the naming convention (``NAMING``: a–g
scalars) and the evidence of use (``EVIDENCE``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from . import library as L
from .printed import GREEK_NAMES, MATRIX_FUNCTION_NAMES, read as read_printed
from .syntax import Decl, Node, Parser


class Fn(NamedTuple):
    """A function of a dialect: its shape rule (a name in shapes.FUNCTION_RULES), its
    builder (a library function, or the name of a builder in parse.py that reads the
    syntax: axis=, a constant's value), and, for a declared function, what its derivative
    is (σ′(x) is "elementwise", ∇λ(X) a "gradient")."""

    shape: str
    build: object
    derivative: str | None = None


@dataclass(frozen=True)
class Dialect:
    name: str
    infix: dict  # operator → (left binding power, right binding power, the node it builds)
    postfix: dict  # operator → (binding power, the node it builds)
    functions: dict  # name → Fn, before the declared ones (functions())
    keywords: frozenset  # the functions that take axis=
    broadcast_rows: bool  # a vector meets each row of a matrix (X @ W + b), as NumPy broadcasts
    bias: dict  # what an a–g name added to a row, a column or a matrix is (EVIDENCE)
    evidence: bool = True  # whether an a–g name's use can make it more than a scalar
    constants: dict = field(default_factory=dict)  # undeclared names that are constants: I
    notes: bool = True  # a ParseNote for a scalar spread over a lone undeclared name
    transpose_hint: str = ""  # added where a product's inner dims differ by a vector's 1
    fact_example: str = ""  # two facts, in the message for text that is not one
    foreign: dict = field(default_factory=dict)  # operator → the other dialect it belongs to


# --------------------------------------------------------------------------- naming

# An undeclared name's kind by its first letter (matrixcalculus.org's convention); the first
# row that applies decides.  Evidence of use (below) may still make an a–g name more.
NAMING = (
    (str.isupper, "matrix"),  # A, X, W, Σ
    (lambda c: c in "abcdefg", "scalar"),  # a–g
    (lambda c: True, "vector"),  # h–z
)


def kind_by_name(name: str) -> str:
    """matrixcalculus.org's convention: a–g scalars, h–z vectors, A–Z matrices."""
    c = name[0]
    for applies, kind in NAMING:
        if applies(c):
            return kind


# --------------------------------------------------------------------------- evidence of use

MATRIX_ARGUMENT = ("inv", "det", "logdet", "tr", "trace", "expm", "logm", "sqrtm", "eigvalsh", "pinv")

# Where an undeclared a–g name stands in the tree, and what that place reads it as, in
# matrixcalculus.org's manner; the first rule that applies decides.  A rule is given the
# parent node, the name's position among its operands, the kind of another operand
# ("scalar", "row", "vector" or "matrix", by the shapes inferred so far) and the dialect.
EVIDENCE = (
    # a': a transposed name is a vector
    lambda n, i, kind, d: "vector" if n.op == "transpose" else None,
    # inv(c), det(c), tr(c): the argument of a function of a square matrix is a matrix
    lambda n, i, kind, d: "matrix" if n.op == "call" and n.value in MATRIX_ARGUMENT else None,
    # A*x - b, X @ W + b: a name added to a tensor is what the dialect's bias table says
    lambda n, i, kind, d: d.bias[kind(n.args[1 - i])] if n.op in ("+", "-") and len(n.args) == 2
    and kind(n.args[1 - i]) != "scalar" else None,
    # X*b, a'*X*b: a name multiplied by a matrix or a row on its left is a vector
    lambda n, i, kind, d: "vector" if n.op in ("@mc", "@") and i == 1
    and kind(n.args[0]) in ("matrix", "row") else None,
    # A \ b, solve(A, b), lstsq(A, b): the matrix first, the right-hand side a vector
    lambda n, i, kind, d: ("matrix" if i == 0 else "vector") if n.op == "\\"
    or (n.op == "call" and n.value in ("solve", "lstsq")) else None,
)


def evidence(dialect: Dialect, tree: Node, inferred, decls: dict) -> dict:
    """Names that NAMING makes scalars (a–g, undeclared) but whose use gives evidence of
    more (EVIDENCE), as declarations; ``inferred`` is the shape inference so far (or None:
    the syntax alone)."""
    out = {}
    if not dialect.evidence:
        return out
    kind = inferred.kind if inferred is not None else _scalar
    stack = [tree]
    while stack:
        n = stack.pop()
        stack.extend(n.args)
        for i, c in enumerate(n.args):
            if c.op != "var" or c.value in decls or c.value in out or kind_by_name(c.value) != "scalar":
                continue
            for rule in EVIDENCE:
                found = rule(n, i, kind, dialect)
                if found is not None:
                    out[c.value] = found
                    break
    return {name: Decl(k) for name, k in out.items()}


def _scalar(node) -> str:
    return "scalar"


# --------------------------------------------------------------------------- functions

ELEMENTWISE = ("exp", "log", "sin", "cos", "tan", "tanh", "sigmoid", "relu", "softplus", "cosh",
               "sinh", "log1p", "expm1", "arctan", "abs", "sqrt", "sign", "step")
COMMON = {
    **{n: Fn("same", getattr(L, n)) for n in ELEMENTWISE},
    "det": Fn("square_scalar", L.det), "logdet": Fn("square_scalar", L.logdet),
    "inv": Fn("square_same", L.inv), "solve": Fn("solve", L.solve),
    "pinv": Fn("pinv", L.pinv), "lstsq": Fn("lstsq", L.lstsq), "diag": Fn("diag", L.diag),
    "softmax": Fn("softmax", "softmax"), "logsumexp": Fn("logsumexp", "logsumexp"),
    "kron": Fn("kron", L.kron), "eye": Fn("eye", "eye"),  # eye(n), eye(n*k): I of that size
    "vec": Fn("vec", "vec"),  # vec(X): the columns stacked, as the dialects write a vec layout
    # matrix functions (docs/matrix-functions.md); eigvalsh needs a symmetric argument
    "expm": Fn("square_same", L.expm), "logm": Fn("square_same", L.logm),
    "sqrtm": Fn("square_same", L.sqrtm), "eigvalsh": Fn("eigenvalues", L.eigvalsh),
    # the Cholesky factor (chol(S) as printed, cholesky(S) as NumPy names it) and Φ(X), the
    # lower triangle with the diagonal halved, of its differential
    "chol": Fn("square_same", L.cholesky), "cholesky": Fn("square_same", L.cholesky),
    "phi": Fn("square_same", L.phi),
}
NUMPY_FUNCTIONS = {
    "trace": Fn("square_scalar", L.trace), "sum": Fn("np_sum", "sum"), "norm": Fn("np_norm", "norm"),
    "dot": Fn("dot", L.dot), "outer": Fn("outer", L.outer),
}


def _norm1(x):
    return L.norm(x, 1) if x.ndim <= 1 else L.sum(L.abs(x))


def _matrix_function(f):
    return lambda x: L.matrix_function(x, f)


# --------------------------------------------------------------------------- the tables

MATRIXCALCULUS = Dialect(
    "matrixcalculus",
    infix={"+": (10, 11, "+"), "-": (10, 11, "-"), "*": (20, 21, "@mc"),  # * is the matrix product
           ".*": (20, 21, ".*"), "./": (20, 21, "./"), "/": (20, 21, "/"),
           "^": (41, 40, "^"), ".^": (41, 40, ".^"),  # ^ of a matrix is its power
           "\\": (20, 21, "\\")},  # A \\ B = A⁻¹B, MATLAB's left division
    postfix={"'": (50, "transpose")},
    functions={**COMMON, "tr": Fn("square_scalar", L.trace), "sum": Fn("scalar", L.sum),
               "norm1": Fn("scalar", _norm1), "norm2": Fn("scalar", L.norm),
               "vector": Fn("const_vector", "const"), "matrix": Fn("const_matrix", "const")},
    keywords=frozenset({"softmax", "logsumexp"}),
    broadcast_rows=False,  # like shapes add: write b*vector(1)' for a bias over rows
    bias={"row": "vector", "vector": "vector", "matrix": "matrix"},
    constants={"eye": "eye", "I": "eye"},  # the identity, unless declared
    transpose_hint=" (transpose the vector with ')",
    fact_example="'Y*vector(1) = 1' (each row of Y sums to 1) or 'y.*y = y'",
)

NUMPY = Dialect(
    "numpy",
    infix={"+": (10, 11, "+"), "-": (10, 11, "-"), "*": (20, 21, "*"), "/": (20, 21, "/"),
           "@": (20, 21, "@"), "**": (41, 40, "**")},
    postfix={".T": (50, "transpose")},
    functions={**COMMON, **NUMPY_FUNCTIONS},
    keywords=frozenset({"softmax", "logsumexp", "sum"}),
    broadcast_rows=True,
    bias={"row": "vector", "vector": "vector", "matrix": "vector"},  # a bias over the rows
    transpose_hint=" (a vector is a column: transpose it with .T, as in x.T @ A)",
    fact_example="'sum(Y, axis=1) = 1' (each row of Y sums to 1) or 'y * y = y'",
)

MATDIFF = Dialect(  # read by printed.py: juxtaposition is the product, as ·
    "matdiff",
    infix={"+": (10, 11, "+"), "-": (10, 11, "-"), "⊙": (15, 16, ".*"), "⊘": (15, 16, "./"),
           "⊗": (15, 16, "kron"), "·": (20, 21, "@mc"), "/": (20, 21, "./"),
           "^∘": (41, 40, ".^"), "^(": (41, 40, "**")},
    postfix={"ᵀ": (50, "transpose"), "⁻¹": (50, "inverse"), "⁻ᵀ": (50, "inverse_t"),
             "⁺": (50, "pinv")},
    functions={**COMMON, "tr": Fn("square_scalar", L.trace), "step": Fn("same", L.step),
               "σ": Fn("same", L.sigmoid), "Φ": Fn("square_same", L.phi),
               "nuclear": Fn("scalar", lambda x: L.norm(x, "nuc")),  # ‖X‖_*
               "spectral": Fn("scalar", lambda x: L.norm(x, 2)),  # ‖X‖₂
               # tanhₘ(S): an element-wise function of a symmetric matrix (U tanh(Λ) Uᵀ)
               **{f + "ₘ": Fn("square_same", _matrix_function(f)) for f in MATRIX_FUNCTION_NAMES},
               **NUMPY_FUNCTIONS},
    keywords=frozenset({"softmax", "logsumexp"}),
    broadcast_rows=False,
    bias={},
    evidence=False,  # printed text comes with its declarations
    notes=False,
    fact_example=MATRIXCALCULUS.fact_example,
)

for _a, _b in ((MATRIXCALCULUS, NUMPY), (NUMPY, MATRIXCALCULUS)):
    _a.foreign.update({op: _b.name for op in (*_b.infix, *_b.postfix)})

DIALECTS = {d.name: d for d in (MATRIXCALCULUS, NUMPY, MATDIFF)}


def functions(dialect: Dialect, decls: dict) -> dict:
    """The dialect's functions and the declared ones (σ is sigma where sigma is declared)."""
    fns = dict(dialect.functions)
    greek = {v: k for k, v in GREEK_NAMES.items()}
    for fname, decl in decls.items():
        if decl.kind == "function":
            fns[fname] = Fn("same", L.function(fname), "elementwise")
        elif decl.kind == "scalar_function":
            fns[fname] = Fn("scalar", L.scalar_function(fname), "gradient")
        elif decl.kind == "matrix_function":  # fₘ(S)  where f(u) = u³, in printed text
            fns[fname] = Fn("square_same", "defined")
        if decl.kind in ("function", "scalar_function") and fname in greek:
            fns[greek[fname]] = fns[fname]
    return fns


def read(dialect: Dialect, text: str, decls: dict) -> Node:
    """The syntax tree of ``text`` in the dialect (declared names are never constants)."""
    if dialect is MATDIFF:
        return read_printed(text, dialect, decls)
    tree = Parser(text, dialect).parse()
    if dialect.constants:
        stack = [tree]
        while stack:
            n = stack.pop()
            if n.op == "var" and n.value in dialect.constants and n.value not in decls:
                n.op, n.value = dialect.constants[n.value], None
            stack.extend(n.args)
    return tree
