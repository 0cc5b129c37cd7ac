"""The requests behind the local web page (and any other client of `matdiff serve`), as plain
functions of JSON-like dicts: ``derive``, ``inspect`` (parse and infer declarations) and
``EXAMPLES``.  No user text is ever evaluated as code: expressions go through the parser.

Each handler returns a dict, or raises ``RequestError`` with an HTTP status and a JSON body
``{"error": …, "column": …}`` — the server (server.py) runs them in worker processes under a
time limit; here there is no web framework, so the tests and other tools can call them
directly.

>>> derive({"expression": "x'*A*x", "wrt": ["x"], "check": False, "code": False})["results"][0]["text"]
'(A + Aᵀ)x'
"""
from __future__ import annotations

import math
import re
import warnings

from .check import check
from .derivation import derivation
from .errors import CheckError, MatdiffError, NotSupportedError, UncheckableError
from .expr import Expr
from .generate import codegen
from .library import hessian, jacobian
from .parse import ParseError, declaration_of, parse_declaration, parse_fact, parse_noting

MAX_EXPRESSION = 2_000  # characters of an expression the server reads
MAX_VARIABLES = 12      # derivatives one request may ask for
MAX_DECLARED = 1_000_000  # entries of a variable whose declaration gives its dims as numbers
DIALECTS = {"matrixcalculus": "matrixcalculus", "mc": "matrixcalculus", "numpy": "numpy"}
LAYOUTS = ("numerator", "denominator", "vec")
BACKENDS = ("numpy", "jax", "torch")
KINDS = ("scalar", "vector", "matrix", "symmetric matrix", "function", "scalar_function")

# the seed documents' cases, for the page's menu
EXAMPLES = [
    {"name": "quadratic form xᵀAx", "expression": "x'*A*x", "wrt": ["x"], "order": 1},
    {"name": "least squares ‖Xw − y‖²", "expression": "norm2(X*w - y)^2", "wrt": ["w"], "order": 1},
    {"name": "Hessian of least squares", "expression": "norm2(X*w - y)^2", "wrt": ["w"], "order": 2},
    {"name": "log det X", "expression": "log(det(X))", "wrt": ["X"], "order": 1},
    {"name": "sum σ(XW)", "expression": "sum(sigmoid(X*W))", "wrt": ["W"], "order": 1},
    {"name": "λ(σ(XW)), abstract functions", "expression": "lambda(sigma(X*W))", "wrt": ["W"],
     "order": 1, "declarations": {"sigma": "function", "lambda": "scalar_function"}},
    {"name": "logistic loss", "expression": "sum(log(1 + exp(-y .* (X*w))))", "wrt": ["w"],
     "order": 1},
    {"name": "Hessian of the logistic loss", "expression": "sum(log(1 + exp(-y .* (X*w))))",
     "wrt": ["w"], "order": 2},
    {"name": "softmax cross-entropy", "expression": "-sum(Y .* log(softmax(X*W)))", "wrt": ["W"],
     "order": 1, "facts": ["Y*vector(1) = 1"]},
    {"name": "two-layer network", "expression": "-sum(Y .* log(softmax(tanh(X*W1)*W2)))",
     "wrt": ["W1", "W2"], "order": 1},
    {"name": "Jacobian of XW, vec layout", "expression": "X*W", "wrt": ["X"], "order": 1,
     "layout": "vec"},
    {"name": "Jacobian of a softmax", "expression": "softmax(x)", "wrt": ["x"], "order": 1},
    {"name": "log det through eigenvalues, Σ log λᵢ(S)", "expression": "sum(log(eigvalsh(S)))",
     "wrt": ["S"], "order": 1, "declarations": {"S": "matrix(n, n) symmetric"}},
    {"name": "matrix exponential, tr expm(A)", "expression": "tr(expm(A))", "wrt": ["A"], "order": 1},
    {"name": "NumPy dialect: logistic loss", "expression": "sum(softplus(-y * (X @ w)))",
     "wrt": ["w"], "order": 1, "dialect": "numpy"},
]


class RequestError(Exception):
    """A request the server answers with ``status`` and ``{"error": message, "column": …}``."""

    def __init__(self, status: int, message: str, column: int | None = None, **extra):
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **({"column": column} if column is not None else {}), **extra}


# --------------------------------------------------------------------------- reading a request

def _field(payload: dict, name: str, kind, default=None, required=False):
    if name not in payload:
        if required:
            raise RequestError(400, f"the request has no {name!r}; it needs e.g. "
                                    f'{{"expression": "x\'*A*x", "wrt": ["x"]}}')
        return default
    value = payload[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RequestError(400, f"{name!r} must be a {want}, not {type(value).__name__}")
    return value


def _expression(payload: dict):
    if not isinstance(payload, dict):
        raise RequestError(400, "the request body must be a JSON object")
    text = _field(payload, "expression", str, required=True)
    if len(text) > MAX_EXPRESSION:
        raise RequestError(413, f"the expression has {len(text):,} characters; the server reads "
                                f"at most {MAX_EXPRESSION:,}")
    if not text.strip():
        raise RequestError(400, "the expression is empty; type one, e.g. x'*A*x", column=0)
    dialect = _field(payload, "dialect", str, "matrixcalculus")
    if dialect not in DIALECTS:
        raise RequestError(400, f"'dialect' is one of matrixcalculus, numpy; not {dialect!r}")
    declarations = _field(payload, "declarations", dict, {})
    decls = {}
    for name, decl in declarations.items():
        if not isinstance(decl, str):
            raise RequestError(400, f"the declaration of {name} must be a string such as "
                                    f"'matrix(n, n) symmetric', not {type(decl).__name__}")
        if not name.isidentifier():
            raise RequestError(400, f"{name!r} is not a variable name")
        if decl.strip():
            _refuse_huge(name, decl)
            try:
                _, declared = parse_declaration(decl, name)
            except ParseError as e:
                raise RequestError(400, f"declaration of {name}: {e.message}") from None
            _refuse_huge(name, decl, declared.dims)
            decls[name] = decl
    try:
        f, notes = parse_noting(text, DIALECTS[dialect], **decls)
    except ParseError as e:
        raise RequestError(400, e.message, e.column) from None
    except MatdiffError as e:  # a shape error names its column where it has one
        raise RequestError(422, getattr(e, "message", None) or str(e).split("\n")[0],
                           getattr(e, "column", None)) from None
    variables = {v.node.name: v for v in f.variables}
    unused = sorted(set(decls) - set(variables) - _functions(decls))
    if unused:
        raise RequestError(422, f"the declarations name {', '.join(unused)}, which the expression "
                                f"does not use (its variables: {', '.join(variables) or 'none'})")
    return f, notes, DIALECTS[dialect], variables, decls


def _refuse_huge(name: str, decl: str, dims: tuple = ()) -> None:
    """A 413 before any work where a declaration's number dims make a variable of over
    MAX_DECLARED entries (the numeric check would draw vector(100000000)); without ``dims``,
    where its text holds a number too long to read as one."""
    longest = max((n.lstrip("0") for n in re.findall(r"\d+", decl)), key=len, default="")
    entries = math.prod(d for d in dims if isinstance(d, int))
    if len(longest) > len(str(MAX_DECLARED)) or entries > MAX_DECLARED:
        size = (f"{entries:,} entries" if entries > MAX_DECLARED else
                f"a dim of {int(longest):,}" if len(longest) < 30 else
                f"a dim of {len(longest):,} digits")
        raise RequestError(413, f"declaration of {name}: {decl.strip()[:40]} has {size}; the "
                                f"server takes variables of at most {MAX_DECLARED:,} entries (name "
                                f"the dims, as in vector(n), for a size the derivative leaves open)")


MAX_FACTS = 16


def _facts(payload: dict, f: Expr, dialect: str, decls: dict) -> list:
    """The request's facts ("facts": ["Y*vector(1) = 1"]), about the expression's variables;
    an error names the fact by its position ("fact": i) and its column."""
    texts = _field(payload, "facts", list, [])
    if len(texts) > MAX_FACTS:
        raise RequestError(413, f"'facts' holds {len(texts)} facts; at most {MAX_FACTS}")
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise RequestError(400, f"a fact is a string such as 'Y*vector(1) = 1', not {text!r:.40}",
                               fact=i)
        if len(text) > MAX_EXPRESSION:
            raise RequestError(413, f"fact {i + 1} has {len(text):,} characters; at most "
                                    f"{MAX_EXPRESSION:,}", fact=i)
        if not text.strip():
            continue
        try:
            out.append(parse_fact(text, dialect, about=f, **decls))
        except ParseError as e:
            raise RequestError(400, f"fact {i + 1}: {e.message}", e.column, fact=i) from None
        except MatdiffError as e:
            raise RequestError(422, f"fact {i + 1}: {getattr(e, 'message', None) or e}",
                               getattr(e, "column", None), fact=i) from None
    return out


def _functions(decls: dict) -> set:
    return {n for n, d in decls.items() if d.strip() in ("function", "scalar_function")}


def _summary(f: Expr, variables: dict, decls: dict, notes: list) -> dict:
    return {"expression": {"text": f.echo(), "latex": f.echo(latex=True)}, "notes": notes,
            "declarations": {**{n: declaration_of(v) for n, v in variables.items()},
                             **{n: decls[n].strip() for n in sorted(_functions(decls))}}}


# --------------------------------------------------------------------------- handlers

def inspect(payload: dict) -> dict:
    """Parse the expression: its echo and the variables' inferred declarations, or a 4xx
    error with the column (the page calls this as the user types)."""
    f, notes, dialect, variables, decls = _expression(payload)
    facts = _facts(payload, f, dialect, decls)
    return {**_summary(f, variables, decls, notes), "facts": [fa.text for fa in facts]}


def derive(payload: dict) -> dict:
    """Derivatives of the expression by each of ``wrt``: text, LaTeX, optional index form,
    steps, numeric check and generated code.

    Fields: expression (required), wrt (list of names; all variables if absent), order
    (1 or 2), dialect ("matrixcalculus" or "numpy"), declarations ({name: "matrix(n, n)
    symmetric"}), facts (["Y*vector(1) = 1"]: equations the derivatives may use), layout
    ("numerator", "denominator", "vec"), vec ("column" or "row": how layout "vec" stacks),
    index, steps, check, code (booleans; check and code default to true)."""
    f, notes, dialect, variables, decls = _expression(payload)
    facts = _facts(payload, f, dialect, decls)
    wrt = _field(payload, "wrt", list, list(variables))
    if not wrt:
        raise RequestError(400, "'wrt' is empty; name the variables to differentiate by")
    if len(wrt) > MAX_VARIABLES:
        raise RequestError(413, f"'wrt' names {len(wrt)} variables; at most {MAX_VARIABLES}")
    for name in wrt:
        if not isinstance(name, str):
            raise RequestError(400, f"'wrt' holds variable names, not {name!r}")
        if name not in variables:
            raise RequestError(422, f"{name} is not a variable of the expression (its variables: "
                                    f"{', '.join(variables) or 'none'})")
    order = _field(payload, "order", int, 1)
    if order not in (1, 2):
        raise RequestError(400, f"'order' is 1 (gradient or Jacobian) or 2 (Hessian), not {order}")
    layout = _field(payload, "layout", str, "numerator")
    if layout not in LAYOUTS:
        raise RequestError(400, f"'layout' is one of {', '.join(LAYOUTS)}, not {layout!r}")
    vec = _field(payload, "vec", str, "column")
    if vec not in ("column", "row"):
        raise RequestError(400, f"'vec' is 'column' or 'row' (how vec stacks a matrix), not {vec!r}")
    flags = {k: _field(payload, k, bool, k in ("check", "code"))
             for k in ("index", "steps", "check", "code")}
    results, derivatives = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name in wrt:
            x = variables[name]
            try:
                d = hessian(f, x, layout=layout, vec=vec, facts=facts) if order == 2 else \
                    jacobian(f, x, layout=layout, vec=vec, facts=facts)
            except MatdiffError as e:
                raise RequestError(422, f"∂/∂{name}: {e}") from None
            derivatives.append(d)
            results.append(_result(f, x, name, d, order, flags, facts))
    out = {**_summary(f, variables, decls, notes), "facts": [fa.text for fa in facts],
           "results": results}
    if flags["code"]:
        out["code"] = _code(derivatives)
    return out


def _result(f, x, name, d, order, flags, facts) -> dict:
    label = f"∂²f/∂{name}²" if order == 2 else f"∂f/∂{name}"
    label_latex = (f"\\frac{{\\partial^2 f}}{{\\partial {name}^2}}" if order == 2
                   else f"\\frac{{\\partial f}}{{\\partial {name}}}")
    r = {"wrt": name, "label": label, "label_latex": label_latex,
         "shape": [str(s) for s in d.shape], "text": str(d), "latex": d.latex()}
    if flags["index"]:
        r["index"] = {"text": d.index()}
    if flags["steps"]:
        r["steps"] = _steps(f, x, order) if not facts else {
            "reason": "steps show the engine's rules, which do not use facts; the result uses them"}
    if flags["check"]:
        r["check"] = _check(f, x, order, facts)
    return r


def _steps(f, x, order) -> dict:
    if order != 1 or f.ndim != 0:
        return {"reason": "steps show the derivation of a gradient, d f = ⟨∇f, dX⟩, for a scalar "
                          "f; this is a Jacobian or a Hessian"}
    try:
        s = derivation(f, x)
    except MatdiffError as e:
        return {"reason": str(e)}
    return {"text": str(s), "latex": s.latex()}


def _check(f, x, order, facts=()) -> dict:
    try:
        err = check(f, x, order=order, facts=facts)
    except UncheckableError as e:
        return {"ok": None, "reason": str(e)}
    except CheckError as e:
        return {"ok": False, "reason": str(e)}
    except MatdiffError as e:
        return {"ok": None, "reason": str(e)}
    return {"ok": bool(math.isfinite(err)), "error": float(err)}


def _code(derivatives) -> dict:
    out = {}
    for backend in BACKENDS:
        try:
            out[backend] = {"source": codegen(derivatives, backend)}
        except NotSupportedError as e:
            out[backend] = {"error": str(e)}
    return out


HANDLERS = {"derive": derive, "inspect": inspect}
