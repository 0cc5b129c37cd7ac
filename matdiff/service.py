"""One request model for every door: the command line, the local web page and its JSON API
describe a request as a ``Request`` (expression, dialect, declarations, variables, facts,
order, layout, vec, index form, steps, check, output format, code) and ``answer`` answers it
with the library's own calls (parse, jacobian, hessian, check, derivation, codegen) — an
``Answer`` holding the expressions themselves, which each door only writes out: the CLI as
lines of text (cli.py), the JSON API as a dict (``derive``, ``inspect``).  Nothing
differentiates, lays out or prints along a path of its own.

The JSON handlers take JSON-like dicts and return a dict, or raise ``RequestError`` with an
HTTP status and a JSON body ``{"error": …, "column": …}`` — the server (server.py) runs them
in worker processes under a time limit; here there is no web framework, so the tests and
other tools can call them directly.  No user text is ever evaluated as code: expressions go
through the parser.

>>> derive({"expression": "x'*A*x", "wrt": ["x"], "check": False, "code": False})["results"][0]["text"]
'(A + Aᵀ)x'
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field, replace

from .check import check
from .derivation import derivation
from .errors import CheckError, MatdiffError, NotSupportedError
from .expr import Expr
from .generate import codegen
from .library import hessian, jacobian
from .parse import ParseError, declaration_of, parse_declaration, parse_fact, parse_noting

MAX_EXPRESSION = 2_000  # characters of an expression the server reads
MAX_VARIABLES = 12      # derivatives one request may ask for
MAX_DECLARED = 1_000_000  # entries of a variable whose declaration gives its dims as numbers
DIALECTS = {"matrixcalculus": "matrixcalculus", "mc": "matrixcalculus", "numpy": "numpy"}
LAYOUTS = ("numerator", "denominator", "vec")
VECS = ("column", "row")
FORMATS = ("text", "latex", "mc", "numpy")  # the notations a result is written in
BACKENDS = ("numpy", "jax", "torch")
FIELDS = ("expression", "dialect", "declarations", "facts", "wrt", "order", "layout", "vec", "format",
          "index", "steps", "check", "code", "checks")  # a request's fields (docs/web.md)
KINDS = ("scalar", "positive scalar", "vector", "matrix", "symmetric matrix", "spd matrix", "function",
         "scalar_function")

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


class Refused(MatdiffError):
    """A request ``answer`` cannot answer: ``where`` the problem is ("expression",
    "declaration", "fact", "wrt" or "derivative"), ``name`` (the variable, or the fact's
    position), and ``cause``, the library's own error.  Each door words it its own way (the
    CLI names its option, the JSON API chooses a status)."""

    def __init__(self, where: str, cause: Exception, name=None, notes=()):
        super().__init__(str(cause))
        self.where, self.cause, self.name, self.notes = where, cause, name, list(notes)


# --------------------------------------------------------------------------- the request model

@dataclass(frozen=True)
class Request:
    """What a door asks for.  ``wrt`` is None for every variable (the JSON API's default) and
    () for none (the CLI without --wrt); ``code`` names the backends whose code to write,
    ``function`` the generated function's name, ``checks`` whether that code holds md.compile's
    runtime checks (md.codegen's ``checks``); ``format`` the notation of ``output`` (text,
    latex, mc or numpy: the last two are input of those dialects)."""

    expression: str
    dialect: str = "matrixcalculus"
    declarations: tuple = ()   # ((name, "matrix(n, n) symmetric"), …), in the order given
    wrt: tuple | None = None
    facts: tuple = ()          # ("Y*vector(1) = 1", …)
    order: int = 1
    layout: str = "numerator"
    vec: str = "column"
    index: bool = False
    steps: bool = False
    check: bool = False
    format: str = "text"
    code: tuple = ()
    function: str = "f"
    checks: bool = True

    def __post_init__(self):
        if isinstance(self.declarations, dict):
            object.__setattr__(self, "declarations", tuple(self.declarations.items()))
        for name in ("facts", "code") + (("wrt",) if self.wrt is not None else ()):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "dialect", DIALECTS.get(self.dialect, self.dialect))
        for name, allowed in (("dialect", ("matrixcalculus", "numpy")), ("order", (1, 2)),
                              ("layout", LAYOUTS), ("vec", VECS), ("format", FORMATS)):
            if getattr(self, name) not in allowed:
                raise MatdiffError(f"{name} is one of {', '.join(map(str, allowed))}, "
                                   f"not {getattr(self, name)!r}")
        unknown = [b for b in self.code if b not in BACKENDS]
        if unknown:
            raise MatdiffError(f"code is written for {', '.join(BACKENDS)}, not {unknown[0]!r}")

    @classmethod
    def from_json(cls, payload) -> Request:
        """The request a JSON body describes (docs/web.md), or a RequestError (400, 413)."""
        if not isinstance(payload, dict):
            raise RequestError(400, "the request body must be a JSON object")
        unknown = [k for k in payload if k not in FIELDS]
        if unknown:  # a misspelt or foreign option is refused, never dropped in silence
            raise RequestError(400, f"{str(unknown[0])[:40]!r} is not a field of a request; the "
                                    f"fields are {', '.join(FIELDS)} (docs/web.md)")
        text = _field(payload, "expression", str, required=True)
        if len(text) > MAX_EXPRESSION:
            raise RequestError(413, f"the expression has {len(text):,} characters; the server "
                                    f"reads at most {MAX_EXPRESSION:,}")
        if not text.strip():
            raise RequestError(400, "the expression is empty; type one, e.g. x'*A*x", column=0)
        dialect = _field(payload, "dialect", str, "matrixcalculus")
        if dialect not in DIALECTS:
            raise RequestError(400, f"'dialect' is one of matrixcalculus, numpy; not {dialect!r}")
        wrt = _field(payload, "wrt", list, None)
        if wrt is not None:
            if not wrt:
                raise RequestError(400, "'wrt' is empty; name the variables to differentiate by")
            if len(wrt) > MAX_VARIABLES:
                raise RequestError(413, f"'wrt' names {len(wrt)} variables; at most {MAX_VARIABLES}")
            for name in wrt:
                if not isinstance(name, str):
                    raise RequestError(400, f"'wrt' holds variable names, not {name!r}")
        order = _field(payload, "order", int, 1)
        if order not in (1, 2):
            raise RequestError(400, f"'order' is 1 (gradient or Jacobian) or 2 (Hessian), not {order}")
        layout = _field(payload, "layout", str, "numerator")
        if layout not in LAYOUTS:
            raise RequestError(400, f"'layout' is one of {', '.join(LAYOUTS)}, not {layout!r}")
        vec = _field(payload, "vec", str, "column")
        if vec not in VECS:
            raise RequestError(400, f"'vec' is 'column' or 'row' (how vec stacks a matrix), not {vec!r}")
        fmt = _field(payload, "format", str, "text")
        if fmt not in FORMATS:
            raise RequestError(400, f"'format' is one of {', '.join(FORMATS)}, not {fmt!r}")
        flags = {k: _field(payload, k, bool, k in ("check", "code", "checks"))
                 for k in ("index", "steps", "check", "code", "checks")}
        return cls(expression=text, dialect=DIALECTS[dialect], declarations=_declarations(payload),
                   wrt=None if wrt is None else tuple(wrt), facts=_fact_texts(payload),
                   order=order, layout=layout, vec=vec, index=flags["index"],
                   steps=flags["steps"], check=flags["check"], format=fmt,
                   code=BACKENDS if flags["code"] else (), checks=flags["checks"])


STEPS_FOR_A_GRADIENT = ("steps show the derivation of a gradient, d f = ⟨∇f, dX⟩, for a scalar "
                        "f; this is a Jacobian or a Hessian")
STEPS_WITHOUT_FACTS = ("steps show the engine's rules, which do not use facts; the result uses them")


@dataclass(frozen=True)
class Result:
    """One derivative: ``check`` is the relative error, or the error that says why there is
    none (UncheckableError, CheckError), or None where not asked; ``steps`` the derivation,
    or the reason there is none (a string), or None where not asked."""

    wrt: str
    order: int
    derivative: Expr
    check: float | MatdiffError | None = None
    steps: object = None

    @property
    def label(self) -> str:
        return f"∂²f/∂{self.wrt}²" if self.order == 2 else f"∂f/∂{self.wrt}"

    @property
    def label_latex(self) -> str:
        return (f"\\frac{{\\partial^2 f}}{{\\partial {self.wrt}^2}}" if self.order == 2
                else f"\\frac{{\\partial f}}{{\\partial {self.wrt}}}")

    @property
    def shape(self) -> list:
        return [str(s) for s in self.derivative.shape]

    def output(self, fmt: str = "text") -> str:
        return written(self.derivative, fmt)


@dataclass(frozen=True)
class Answer:
    """The answer to a Request: the parsed expression, its variables and inferred
    declarations, the facts, one Result per variable, and the code (backend → source, or the
    NotSupportedError that says why not)."""

    request: Request
    f: Expr
    notes: list
    variables: dict
    declarations: dict
    facts: list
    results: list = field(default_factory=list)
    code: dict = field(default_factory=dict)

    def output(self, fmt: str = "text") -> str:
        """The expression in a notation: the echo of the input (text, LaTeX), or the dialect's
        — where that dialect cannot write it (the NumPy dialect has no ones vector) and the
        input is in that dialect, the input itself."""
        if fmt in ("text", "latex"):
            return self.f.echo(latex=fmt == "latex")
        try:
            return written(self.f, fmt)
        except NotSupportedError:
            if DIALECTS[fmt] != self.request.dialect:
                raise
            return " ".join(self.request.expression.split())


def written(e: Expr, fmt: str) -> str:
    """An expression in one of FORMATS: matdiff's text, LaTeX, or input of a dialect."""
    return {"text": str, "latex": Expr.latex, "mc": lambda d: d.text("matrixcalculus"),
            "numpy": lambda d: d.text("numpy")}[fmt](e)


def _functions(decls: dict) -> set:
    return {n for n, d in decls.items() if d.strip() in ("function", "scalar_function")}


def answer(request: Request) -> Answer:
    """Answer a request with the library's own calls; a Refused error where it cannot."""
    decls = {name: decl for name, decl in request.declarations if decl.strip()}
    try:
        f, notes = parse_noting(request.expression, request.dialect, **decls)
    except MatdiffError as e:
        raise Refused("expression", e) from None
    variables = {v.node.name: v for v in f.variables}
    unused = sorted(set(decls) - set(variables) - _functions(decls))
    if unused:
        raise Refused("declaration", MatdiffError(
            f"the declarations name {', '.join(unused)}, which the expression does not use "
            f"(its variables: {', '.join(variables) or 'none'})"), unused[0], notes)
    facts = []
    for i, text in enumerate(request.facts):
        if not text.strip():
            continue
        try:
            fact = parse_fact(text, request.dialect, about=f, **decls)
        except MatdiffError as e:
            raise Refused("fact", e, i, notes) from None
        strangers = sorted({v.name for v in fact.variables} - set(variables))
        if strangers:  # it could never apply: refused as an unused declaration is
            raise Refused("fact", MatdiffError(
                f"the fact names {', '.join(strangers)}, which the expression does not use (its "
                f"variables: {', '.join(variables) or 'none'}), so it could never apply"), i, notes)
        facts.append(fact)
    out = Answer(request, f, notes, variables,
                 {**{n: declaration_of(v) for n, v in variables.items()},
                  **{n: decls[n].strip() for n in sorted(_functions(decls))}}, facts)
    wrt = list(variables) if request.wrt is None else request.wrt
    for name in wrt:
        if name not in variables:
            raise Refused("wrt", MatdiffError(
                f"{name} is not a variable of the expression (its variables: "
                f"{', '.join(variables) or 'none'})"), name, notes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name in wrt:
            x = variables[name]
            derive_by = hessian if request.order == 2 else jacobian
            try:
                d = derive_by(f, x, layout=request.layout, vec=request.vec, facts=facts)
            except MatdiffError as e:
                raise Refused("derivative", e, name, notes) from None
            out.results.append(Result(
                name, request.order, d,
                check=_checked(f, x, request.order, facts) if request.check else None,
                steps=_derived(f, x, request.order, facts) if request.steps else None))
    for backend in request.code:
        try:
            out.code[backend] = codegen([r.derivative for r in out.results], backend,
                                        name=request.function, checks=request.checks)
        except NotSupportedError as e:
            out.code[backend] = e
    return out


def _checked(f, x, order, facts=()):
    try:
        return check(f, x, order=order, facts=facts)
    except MatdiffError as e:  # UncheckableError, CheckError, or a point that cannot be drawn
        return e


def _derived(f, x, order, facts):
    if order != 1 or f.ndim != 0:
        return STEPS_FOR_A_GRADIENT
    if facts:
        return STEPS_WITHOUT_FACTS
    try:
        return derivation(f, x)
    except MatdiffError as e:
        return str(e)


# --------------------------------------------------------------------------- reading JSON

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


def _declarations(payload: dict) -> tuple:
    out = []
    for name, decl in _field(payload, "declarations", dict, {}).items():
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
            out.append((name, decl))
    return tuple(out)


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


def _fact_texts(payload: dict) -> tuple:
    """The request's facts ("facts": ["Y*vector(1) = 1"]) as texts; an error names the fact by
    its position ("fact": i)."""
    texts = _field(payload, "facts", list, [])
    if len(texts) > MAX_FACTS:
        raise RequestError(413, f"'facts' holds {len(texts)} facts; at most {MAX_FACTS}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise RequestError(400, f"a fact is a string such as 'Y*vector(1) = 1', not {text!r:.40}",
                               fact=i)
        if len(text) > MAX_EXPRESSION:
            raise RequestError(413, f"fact {i + 1} has {len(text):,} characters; at most "
                                    f"{MAX_EXPRESSION:,}", fact=i)
    return tuple(texts)


def _refusal(e: Refused) -> RequestError:
    """A Refused answer as the JSON API words it: 400 for text that does not parse, 422 for
    what parses but cannot be answered, with the column and the fact's position."""
    cause = e.cause
    message = getattr(cause, "message", None) or str(cause).split("\n")[0]
    column = getattr(cause, "column", None)
    if e.where == "expression":
        return RequestError(400 if isinstance(cause, ParseError) else 422, message, column)
    if e.where == "fact":
        return RequestError(400 if isinstance(cause, ParseError) else 422,
                            f"fact {e.name + 1}: {message}", column, fact=e.name)
    if e.where == "derivative":
        return RequestError(422, f"∂/∂{e.name}: {cause}")
    return RequestError(422, str(cause))


def _answered(request: Request) -> Answer:
    try:
        return answer(request)
    except Refused as e:
        raise _refusal(e) from None


# --------------------------------------------------------------------------- writing JSON

def output_fields(x, fmt: str) -> dict:
    """{"output": …} of the expression or a result ``x`` in ``fmt``; where that dialect cannot
    write it, {"output": None, "output_error": why} (the rest of the answer is kept)."""
    try:
        return {"output": x.output(fmt)}
    except NotSupportedError as e:
        return {"output": None, "output_error": str(e)}


def _summary(a: Answer) -> dict:
    expression = {"text": a.output("text"), "latex": a.output("latex")}
    if a.request.format != "text":
        expression.update(output_fields(a, a.request.format))
    return {"expression": expression, "notes": a.notes, "declarations": a.declarations,
            "facts": [fa.text for fa in a.facts]}


def as_json(a: Answer) -> dict:
    """The answer as the JSON API writes it (docs/web.md)."""
    out = {**_summary(a), "results": [_result(a.request, r) for r in a.results]}
    if a.request.code:
        out["code"] = {b: {"error": str(c)} if isinstance(c, Exception) else {"source": c}
                       for b, c in a.code.items()}
    return out


def _result(request: Request, r: Result) -> dict:
    out = {"wrt": r.wrt, "label": r.label, "label_latex": r.label_latex, "shape": r.shape,
           "text": r.output("text"), "latex": r.output("latex")}
    if request.format != "text":
        out.update(output_fields(r, request.format))
    if request.index:
        out["index"] = {"text": r.derivative.index()}
    if request.steps:
        out["steps"] = ({"reason": r.steps} if isinstance(r.steps, str) else
                        {"text": str(r.steps), "latex": r.steps.latex()})
    if request.check:
        out["check"] = _verdict(r.check)
    return out


def _verdict(err) -> dict:
    if isinstance(err, CheckError):
        return {"ok": False, "reason": str(err)}
    if isinstance(err, Exception):  # UncheckableError, or another reason it could not check
        return {"ok": None, "reason": str(err)}
    return {"ok": bool(math.isfinite(err)), "error": float(err)}


def _check(f, x, order, facts=()) -> dict:
    """The numeric check's verdict as the JSON API writes it."""
    return _verdict(_checked(f, x, order, facts))


# --------------------------------------------------------------------------- handlers

def inspect(payload: dict) -> dict:
    """Parse the expression: its echo and the variables' inferred declarations, or a 4xx
    error with the column (the page calls this as the user types)."""
    request = Request.from_json(payload)
    return _summary(_answered(replace(request, wrt=(), code=())))


def derive(payload: dict) -> dict:
    """Derivatives of the expression by each of ``wrt``: text, LaTeX, optional index form,
    steps, numeric check, the result in another notation, and generated code.

    Fields: expression (required), wrt (list of names; all variables if absent), order
    (1 or 2), dialect ("matrixcalculus" or "numpy"), declarations ({name: "matrix(n, n)
    symmetric"}), facts (["Y*vector(1) = 1"]: equations the derivatives may use), layout
    ("numerator", "denominator", "vec"), vec ("column" or "row": how layout "vec" stacks),
    format ("text", "latex", "mc", "numpy": adds "output" in that notation), index, steps,
    check, code (booleans; check and code default to true)."""
    return as_json(_answered(Request.from_json(payload)))


HANDLERS = {"derive": derive, "inspect": inspect}
