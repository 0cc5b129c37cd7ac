"""The command line: ``matdiff "x'*A*x" --wrt x``.

Exit status 0 on success, 2 for a mistake in the input (with a message, and a caret under
the column for text that does not parse), 1 for an internal error.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

from . import __version__
from . import library as L
from .check import check
from .derivation import derivation
from .errors import MatdiffError
from .expr import Expr
from .parse import parse, parse_declaration

EXAMPLES = """examples:
  matdiff "x'*A*x" --wrt x                     gradient in matrix notation
  matdiff "x'*A*x" --wrt x --hessian           Hessian
  matdiff "X*W" --wrt X --layout vec           ∂vec(XW)/∂vec(X) as a Kronecker product
  matdiff "norm2(X*w - y)^2" --wrt w --latex   LaTeX
  matdiff "sum(log(1 + exp(-y.*(X*w))))" --wrt w --check
  matdiff "a'*X*b" --wrt X --steps             step-by-step derivation
  matdiff "x'*A*x" --wrt x --json              everything as JSON
  matdiff "x.T @ A @ x" --numpy --wrt x        the NumPy dialect
  matdiff "x'*A*x" --var "A: matrix(n, n) symmetric" --wrt x
  matdiff "lambda(sigma(X*W))" --function sigma --scalar-function lambda --wrt W

variables: a–g are scalars, h–z vectors, A–Z matrices unless declared with --var;
dims are inferred from use.  The language: docs/language.md."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="matdiff", description="Symbolic matrix calculus: derivatives in matrix notation, "
        "checked numerically.", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("expression", nargs="?", help="the expression, e.g. \"x'*A*x\"")
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
                   help="declare a variable: \"A: matrix(n, n) symmetric\", \"x: vector(n)\"")
    p.add_argument("--function", action="append", default=[], metavar="NAME",
                   help="an abstract element-wise function (σ with derivative σ′)")
    p.add_argument("--scalar-function", action="append", default=[], metavar="NAME",
                   help="an abstract scalar function of a tensor (λ with gradient ∇λ)")
    p.add_argument("--latex", action="store_true", help="print LaTeX")
    p.add_argument("--check", action="store_true", help="check each derivative numerically")
    p.add_argument("--steps", action="store_true", help="show the derivation step by step")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--version", action="version", version=f"matdiff {__version__}")
    return p


def _declarations(args) -> dict:
    decls = {}
    for text in args.var:
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


def _kind(v: Expr) -> str:
    node = v.node
    kind = {0: "scalar", 1: "vector", 2: "matrix"}.get(node.ndim, "tensor")
    dims = ", ".join(str(d) for d in node.shape)
    return f"{kind}({dims})" + (" symmetric" if node.symmetric else "") if dims else kind


def run(argv, out=None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.expression is None and len(extra) == 1:  # "-a" is an expression, not an option
        args.expression, extra = extra[0], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.expression is None:
        parser.error("the expression is missing, e.g. matdiff \"x'*A*x\" --wrt x")
    f = parse(args.expression, dialect="numpy" if args.numpy else "matrixcalculus",
              **_declarations(args))
    variables = {v.node.name: v for v in f.variables}
    shapes = ", ".join(f"{name}: {_kind(v)}" for name, v in variables.items())
    if args.steps and (args.hessian or f.ndim != 0):
        raise MatdiffError("--steps shows the derivation of a gradient, d f = ⟨∇f, dX⟩ for a "
                           "scalar f; for a Jacobian or a Hessian there is no such one-line "
                           "form: drop --steps, or derive a scalar (e.g. sum(...) or a'*f)")
    results = []
    for name in args.wrt:
        if name not in variables:
            raise MatdiffError(f"--wrt {name}: {name} is not a variable of the expression "
                               f"(its variables: {', '.join(variables) or 'none'})")
        x = variables[name]
        if args.hessian:
            d, label, order = L.hessian(f, x), f"∂²f/∂{name}²", 2
        else:
            d, label, order = L.jacobian(f, x, layout=args.layout, vec=args.vec), f"∂f/∂{name}", 1
        err = check(f, x, order=order) if args.check else None
        steps = derivation(f, x) if args.steps else None
        results.append((name, label, d, err, steps))
    if args.json:
        json.dump({
            "input": args.expression, "dialect": "numpy" if args.numpy else "matrixcalculus",
            "expression": str(f), "latex": f.latex(),
            "variables": {n: _kind(v) for n, v in variables.items()},
            "derivatives": [{"wrt": n, "label": label, "shape": [str(s) for s in d.shape],
                             "text": str(d), "latex": d.latex(), "index": d.index(),
                             "python": repr(d), "check": err,
                             "steps": str(steps) if steps is not None else None}
                            for n, label, d, err, steps in results]},
                  out, ensure_ascii=False, indent=2)
        out.write("\n")
        return 0
    out.write(f"f = {f.latex() if args.latex else f}    where {shapes}\n")
    for name, label, d, err, steps in results:
        if steps is not None:
            out.write((steps.latex() if args.latex else str(steps)) + "\n")
        else:
            out.write(f"{label} = {d.latex() if args.latex else d}\n")
        if err is not None:
            out.write(f"  checked: relative error {err:.1e} against finite differences\n")
    return 0


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
