"""The command line: ``matdiff "x'*A*x" --wrt x``.

Exit status 0 on success, 2 for a mistake in the input (with a message, and a caret under
the column for text that does not parse), 1 for an internal error.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from pathlib import Path

from . import __version__, service
from .errors import MatdiffError, NotSupportedError
from .parse import ParseError, parse_declaration
from .service import Refused, Request

EXAMPLES = """examples:
  matdiff "x'*A*x" --wrt x                     gradient in matrix notation
  matdiff "x'*A*x" --wrt x --hessian           Hessian
  matdiff "X*W" --wrt X --layout vec           ∂vec(XW)/∂vec(X) as a Kronecker product
  matdiff "norm2(X*w - y)^2" --wrt w --latex   LaTeX
  matdiff "sum(log(1 + exp(-y.*(X*w))))" --wrt w --check
  matdiff "a'*X*b" --wrt X --steps             step-by-step derivation
  matdiff "x*x'" --wrt x --index               the result in index notation too
  matdiff "x'*A*x" --wrt x --json              everything as JSON
  matdiff "x.T @ A @ x" --numpy --wrt x        the NumPy dialect
  matdiff "x'*A*x" --var "A: matrix(n, n) symmetric" --wrt x
  matdiff "-sum(Y .* log(softmax(X*W)))" --fact "Y*vector(1) = 1" --wrt W
  matdiff - --wrt x < expr.txt                 the expression from standard input
  matdiff @expr.txt --wrt x --format numpy     from a file; the result as NumPy-dialect text
  matdiff "x'*A*x" --wrt x --ascii             plain ASCII (chosen by itself on such terminals)
  matdiff "x'*A*x" --wrt x --code jax          the derivative as a JAX function (numpy, jax, torch)
  matdiff "lambda(sigma(X*W))" --function sigma --scalar-function lambda --wrt W

variables: a–g are scalars, h–z vectors, A–Z matrices unless declared with --var or
their use says otherwise (a'*X*b: a and b are vectors); dims are inferred from use.
The language: `python -m pydoc matdiff.parse`, and docs/language.md in the sources.
The local web page: matdiff serve [--port N] [--open]  (pip install "matdiff[web]")."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="matdiff", description="Symbolic matrix calculus: derivatives in matrix notation, "
        "checked numerically.", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("expression", nargs="?",
                   help="the expression, e.g. \"x'*A*x\"; - reads it from standard input, "
                        "@PATH from a file")
    p.add_argument("--wrt", action="append", default=[], metavar="VAR",
                   help="differentiate with respect to VAR (repeat for several)")
    p.add_argument("--hessian", action="store_true", help="the second derivative")
    p.add_argument("--jacobian", action="store_true",
                   help="the derivative of a vector or matrix (implied for non-scalars)")
    p.add_argument("--layout", choices=("numerator", "denominator", "vec"), default="numerator",
                   help="layout of Jacobians (default numerator)")
    p.add_argument("--vec", choices=("column", "row"), default="column",
                   help="with --layout vec: stack columns (default) or rows")
    p.add_argument("--numpy", action="store_true", help="read the NumPy dialect (@, *, **, .T)")
    p.add_argument("--var", action="append", default=[], metavar="DECL",
                   help="declare a variable: \"A: matrix(n, n) symmetric\", \"S: matrix(n, n) spd\" "
                        "(symmetric positive definite), \"x: vector(n)\", \"lam: scalar positive\"")
    p.add_argument("--fact", action="append", default=[], metavar="EQUATION",
                   help="a fact the derivative may use: \"Y*vector(1) = 1\" (each row of Y sums "
                        "to 1), \"y.*y = y\" (y in {0, 1}); also accepted by --var")
    p.add_argument("--function", action="append", default=[], metavar="NAME",
                   help="an abstract element-wise function (σ with derivative σ′)")
    p.add_argument("--scalar-function", action="append", default=[], metavar="NAME",
                   help="an abstract scalar function of a tensor (λ with gradient ∇λ)")
    p.add_argument("--latex", action="store_true", help="print only LaTeX (--format latex)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="the notation of the results: text (default), latex, mc (the "
                        "matrixcalculus dialect) or numpy (the NumPy dialect), both valid input")
    p.add_argument("--ascii", action="store_true",
                   help="plain ASCII output (the default where standard output cannot encode ᵀ)")
    p.add_argument("--code", choices=("numpy", "jax", "torch"), default=None,
                   help="print the Python module md.codegen writes for the derivatives (only "
                        "that: not with --json, --steps, --index or --format)")
    p.add_argument("--no-checks", dest="checks", action="store_false",
                   help="with --code: leave out md.compile's runtime checks (md.codegen(checks=False))")
    p.add_argument("--check", action="store_true", help="check each derivative numerically")
    p.add_argument("--steps", action="store_true", help="show the derivation step by step")
    p.add_argument("--index", action="store_true", help="also print each result in index notation")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--version", action="version", version=f"matdiff {__version__}")
    return p


FORMATS = ("text", "latex", "mc", "numpy")

# the text notation in plain ASCII: each symbol as the matrixcalculus dialect (or words) write it
ASCII = {"ᵀ": "'", "⁻ᵀ": "^-T", "⁻¹": "^-1", "⊙": ".*", "⊘": "./", "⊗": "(x)", "−": "-", "·": "*",
         "√": "sqrt", "‖": "||", "∇_": "grad_", "∇": "grad ", "∂": "d", "⟨": "<", "⟩": ">", "⇒": "=>",
         "Σ": "sum",
         "∘": "o", "′": "'", "″": "''", "‴": "'''", "²": "^2", "⁰": "^0", "¹": "^1",
         "³": "^3", "⁴": "^4", "⁵": "^5", "⁶": "^6", "⁷": "^7", "⁸": "^8", "⁹": "^9",
         "₀": "0", "₁": "1", "₂": "2", "₃": "3", "₄": "4", "₅": "5", "₆": "6", "₇": "7", "₈": "8",
         "₉": "9", "×": "x", "…": "...", "\u0305": ""}
GREEK_ASCII = dict(zip("αβγδεζηθικλμνξπρστφχψωΓΔΘΛΞΠΦΨΩ",
                       ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota",
                        "kappa", "lambda", "mu", "nu", "xi", "pi", "rho", "sigma", "tau", "phi", "chi",
                        "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Phi", "Psi",
                        "Omega"]))  # Σ stays "sum", as index sums print it
SUPERSCRIPT_DIGITS = str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")


def to_ascii(text: str) -> str:
    """matdiff's text output in plain ASCII: Xᵀ(σ(XW) ⊙ (1 − σ(XW))) becomes
    X'(sigma(XW) .* (1 - sigma(XW)))."""
    text = re.sub(r"⁻?[⁰¹²³⁴⁵⁶⁷⁸⁹]{2,}|⁻[⁰²³⁴⁵⁶⁷⁸⁹]",
                  lambda m: "^" + m.group().translate(SUPERSCRIPT_DIGITS), text)
    for k in sorted(ASCII, key=len, reverse=True):
        text = text.replace(k, ASCII[k])
    for k, v in GREEK_ASCII.items():
        text = text.replace(k, v)
    return text.encode("ascii", "replace").decode("ascii")


def _read_expression(expr: str, stdin) -> str:
    """The expression itself, or read from standard input (-) or a file (@path)."""
    if expr == "-":
        text = stdin.read()
    elif expr.startswith("@") and len(expr) > 1:
        try:
            text = Path(expr[1:]).read_text(encoding="utf-8")
        except OSError as e:
            raise MatdiffError(f"cannot read the expression from {expr[1:]!r}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise MatdiffError(f"{expr[1:]!r} is not UTF-8 text") from None
    else:
        return expr
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")).strip()
    if not text:
        raise MatdiffError(f"{'standard input' if expr == '-' else repr(expr[1:])} holds no expression")
    return text


def _usual(variables: dict) -> str:
    """The variable one most likely differentiates by, as the page picks it: w, W1, θ, x."""
    usual = [n for pattern in (r"[wW]\d*", r"theta|θ|beta|β", r"x") for n in variables
             if re.fullmatch(pattern, n)]
    return (usual or list(variables) or ["x"])[0]


def _is_fact(text: str) -> bool:
    """Whether a --var is an equation (a fact) rather than a declaration 'name: kind'."""
    return "=" in text and ":" not in text.split("=", 1)[0]


def _declarations(args) -> dict:
    decls = {}
    for text in (t for t in args.var if not _is_fact(t)):
        name, decl = parse_declaration(text)
        body = text.split(":", 1)[1] if ":" in text else text
        if name in decls and parse_declaration(decls[name], name)[1] != decl:
            raise MatdiffError(f"--var declares {name} twice, as {decls[name].strip()!r} and "
                               f"{body.strip()!r}; keep one")
        decls[name] = body
    for name in args.function:
        decls[name] = "function"
    for name in args.scalar_function:
        decls[name] = "scalar_function"
    return decls


def request_of(args, fmt: str) -> Request:
    """The command line's request, in the model every door shares (service.Request)."""
    return Request(
        expression=args.expression, dialect="numpy" if args.numpy else "matrixcalculus",
        declarations=_declarations(args), wrt=tuple(args.wrt),
        facts=tuple(args.fact) + tuple(t for t in args.var if _is_fact(t)),
        order=2 if args.hessian else 1, layout=args.layout, vec=args.vec,
        index=args.index or args.json,
        steps=args.steps, check=args.check, format=fmt,
        code=(args.code,) if args.code else (), function="derivative", checks=args.checks)


def _answer(request: Request):
    """service.answer, its refusals worded for the command line (the option at fault)."""
    try:
        return service.answer(request)
    except Refused as e:
        for note in e.notes:
            sys.stderr.write(f"matdiff: note: {note}\n")
        cause = e.cause
        if e.where == "fact":
            text = request.facts[e.name]
            if isinstance(cause, ParseError):
                raise ParseError(f"--fact: {cause.message}", cause.text, cause.column) from None
            raise MatdiffError(f"--fact {text!r}: {cause}") from None
        if e.where == "wrt":
            raise MatdiffError(f"--wrt {e.name}: {cause}") from None
        raise cause from None


def run(argv, out=None, stdin=None) -> int:
    out = out or sys.stdout
    if list(argv[:1]) == ["serve"]:  # matdiff serve [--port N] [--open]: the local web page
        from .server import serve

        return serve(list(argv[1:]), out)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.expression is None and len(extra) == 1:  # "-a" is an expression, not an option
        args.expression, extra = extra[0], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.expression is None:
        parser.error("the expression is missing, e.g. matdiff \"x'*A*x\" --wrt x")
    args.expression = _read_expression(args.expression, stdin or sys.stdin)
    fmt = args.format or ("latex" if args.latex else "text")
    if args.latex and args.format not in (None, "latex"):
        raise MatdiffError(f"--latex and --format {args.format} ask for two notations; keep one")
    plain = args.ascii or not _encodes(out)
    _refuse_dropped(args)
    request = request_of(args, fmt)
    a = _answer(request)
    for note in a.notes:
        sys.stderr.write(f"matdiff: note: {note}\n")
    if args.steps and (args.hessian or a.f.ndim != 0):
        raise MatdiffError("--steps shows the derivation of a gradient, d f = ⟨∇f, dX⟩ for a "
                           "scalar f; for a Jacobian or a Hessian there is no such one-line "
                           "form: drop --steps, or derive a scalar (e.g. sum(...) or a'*f)")
    if not args.checks and not args.code:
        raise MatdiffError("--no-checks leaves the runtime checks out of the code --code writes: "
                           "add --code numpy (or jax, torch), or drop --no-checks")
    if args.code and not args.wrt:
        raise MatdiffError(f"--code writes the derivatives' code: add --wrt {_usual(a.variables)}")
    if not args.wrt and not args.json and a.variables:
        sys.stderr.write(f"matdiff: hint: add --wrt {_usual(a.variables)} to differentiate "
                         f"(variables: {', '.join(a.variables)})\n")
    for r in a.results:
        if isinstance(r.check, Exception):  # the check's verdict is an error here
            raise r.check
        if isinstance(r.steps, str):
            sys.stderr.write(f"matdiff: note: no steps for {r.label}: {r.steps}\n")
    if args.code:
        source = a.code[args.code]
        if isinstance(source, Exception):
            raise source
        out.write(to_ascii(source) if plain else source)  # ASCII already, but for its docstrings
        return 0
    if args.json:
        json.dump(_json(a, args), out, ensure_ascii=plain, indent=2)  # \u1d40 reads back as ᵀ
        out.write("\n")
        return 0
    text = "\n".join(_lines(a, fmt)) + "\n"
    out.write(to_ascii(text) if plain and fmt != "latex" else text)
    return 0


def _refuse_dropped(args) -> None:
    """An option that the rest of the command line would leave without effect is refused,
    never dropped in silence."""
    if args.vec != "column" and args.layout != "vec":
        raise MatdiffError(f"--vec stacks a matrix only with --layout vec (the layout is "
                           f"{args.layout}): add --layout vec, or drop --vec {args.vec}")
    if args.jacobian and args.hessian:
        raise MatdiffError("--jacobian and --hessian ask for two derivatives; keep one")
    if args.code:
        given = [flag for flag, on in (("--json", args.json), ("--steps", args.steps),
                                       ("--index", args.index), ("--latex", args.latex),
                                       ("--format", args.format is not None)) if on]
        if given:
            raise MatdiffError(f"--code prints only the module md.codegen writes, so {given[0]} "
                               f"would have no effect; drop {given[0]}, or --code")


def _steps(r):
    """The derivation of a result, where there is one (else its reason is a note)."""
    return None if r.steps is None or isinstance(r.steps, str) else r.steps


def _json(a, args) -> dict:
    fmt = a.request.format
    return {
        "input": a.request.expression, "dialect": a.request.dialect,
        "expression": a.output("text"), "latex": a.output("latex"),
        **({"format": fmt, **service.output_fields(a, fmt)} if fmt != "text" else {}),
        "variables": {n: d for n, d in a.declarations.items() if n in a.variables},
        "facts": [fa.text for fa in a.facts],
        "derivatives": [{"wrt": r.wrt, "label": r.label, "shape": r.shape,
                         "text": r.output("text"), "latex": r.output("latex"),
                         **(service.output_fields(r, fmt) if fmt != "text" else {}),
                         "index": r.derivative.index(), "python": repr(r.derivative),
                         "check": r.check,
                         "steps": str(_steps(r)) if _steps(r) is not None else None}
                        for r in a.results]}


def _lines(a, fmt: str) -> list:
    """The answer as the command line prints it, in the notation ``fmt``."""
    if fmt == "latex":  # only LaTeX: the expression and each result
        lines = [f"f = {a.output('latex')}"]
        for r in a.results:
            steps = _steps(r)
            lines.append(steps.latex() if steps is not None else f"{r.label_latex} = {r.output('latex')}")
            if a.request.index:
                lines.append(f"% index form: {r.derivative.index()}")
        return lines
    shapes = ", ".join(f"{n}: {d}" for n, d in a.declarations.items() if n in a.variables)
    try:
        f = a.output(fmt)
    except NotSupportedError as e:  # the derivatives may still be written: f in matdiff's text
        f = a.output("text")
        sys.stderr.write(f"matdiff: note: f is in matdiff's text: {e}\n")
    lines = [f"f = {f}    where {shapes}"]
    lines.extend(f"given {fa.text}" for fa in a.facts)
    for r in a.results:
        steps = _steps(r)
        if steps is not None and fmt == "text":
            lines.append(str(steps))
        else:
            try:
                lines.append(f"{r.label} = {r.output(fmt)}")
            except NotSupportedError as e:  # the dialect cannot write this result
                raise NotSupportedError(f"--format {fmt}: {r.label}: {e}") from None
        if a.request.index:
            lines.append(f"  index form: {r.derivative.index()}")
        if r.check is not None:
            lines.append(f"  checked: relative error {r.check:.1e} against finite differences")
    return lines


def _encodes(out) -> bool:
    """Whether the stream can write matdiff's symbols (a cp1252 or ASCII terminal cannot)."""
    encoding = getattr(out, "encoding", None)
    if not encoding:
        return True
    try:
        "ᵀ⊙⊗−‖σ∂⁻¹".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


RECURSION_LIMIT = 20_000  # the printers recurse once per level of nesting


def main(argv=None) -> int:
    limit = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(max(limit, RECURSION_LIMIT))  # a 500-deep composition prints
        with warnings.catch_warnings():  # numeric warnings are the check's business, not the user's
            warnings.simplefilter("ignore", RuntimeWarning)
            return run(sys.argv[1:] if argv is None else argv)
    except MatdiffError as e:
        sys.stderr.write(f"matdiff: error: {e}\n")
        return 2
    except RecursionError:
        sys.stderr.write("matdiff: error: the expression is nested too deeply for matdiff to "
                         "process; split it into named parts, or differentiate it in Python\n")
        return 2
    except Exception as e:  # noqa: BLE001 - the one place that turns a bug into a report
        sys.stderr.write(f"matdiff: internal error: {type(e).__name__}: {e}\n"
                         "This is a bug in matdiff; please report it with the command line.\n")
        return 1
    finally:
        sys.setrecursionlimit(limit)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
