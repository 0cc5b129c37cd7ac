"""matdiff: symbolic matrix and tensor calculus, checked numerically.

>>> import matdiff as md
>>> X, w, y = md.matrix("X", "n", "k"), md.vector("w", "k"), md.vector("y", "n")
>>> g = md.grad(md.norm(X @ w - y) ** 2, w)
>>> g.shape
('k',)
"""
from .errors import (CheckError, EvaluationError, MatdiffError, NotSupportedError, ShapeError,
                     UncheckableError)
from .expr import Expr, lift
from .library import (abs, arctan, cholesky, cos, cosh, derivative, det, diag, eigvalsh, exp, expm, expm1,
                      eye, fact, function, grad, hessian, inv, jacobian, kron, log, log1p, logdet,
                      logm, logsumexp, lstsq, matrix, matrix_function, matrix_power, mean, norm, ones,
                      outer, phi, pinv, positive_definite, relu, scalar, scalar_function, sigmoid, sign,
                      sin, sinh, softmax, softplus, solve, sqrt, sqrtm, step, sum, svdvals, tan, tanh,
                      tensor, trace, unit, vector, zeros)
from .tensors import apply, dot, einsum, hadamard, permute, reshape, tensordot, transpose, vec
from .check import check
from .generate import codegen, compile, hvp
from .derivation import derivation
from .parse import ParseError, parse, parse_fact
from .explicit import explicit
from .sympy_io import from_sympy, to_sympy


def latex(expr) -> str:
    """The LaTeX of an expression's matrix notation (index notation above order 2)."""
    return lift(expr).latex()


def to_index(expr) -> str:
    """An expression in index notation, with explicit sums: Σ_p A_ip x_p."""
    return lift(expr).index()

def _latex_of_sequence(seq):
    """LaTeX for a list or tuple of results, so Jupyter typesets [∇f, ∇²f] as it does one."""
    if not seq or not all(isinstance(e, Expr) for e in seq):
        return None  # anything else displays as Python prints it
    body = ",\\; ".join(e.latex() for e in seq)
    return f"$$\\left[{body}\\right]$$" if isinstance(seq, list) else f"$$\\left({body}\\right)$$"


def _register_ipython() -> None:
    """In IPython or Jupyter (already running: matdiff never imports IPython itself), lists
    and tuples of results display typeset."""
    import sys
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return
    formatter = shell.display_formatter.formatters["text/latex"]
    for kind in (list, tuple):
        formatter.for_type(kind, _latex_of_sequence)


_register_ipython()

__version__ = "0.1.0"

__all__ = [
    "Expr", "MatdiffError", "ShapeError", "NotSupportedError", "EvaluationError", "CheckError",
    "UncheckableError",
    "tensor", "matrix", "vector", "scalar", "ones", "zeros", "eye", "unit",
    "trace", "det", "logdet", "inv", "solve", "pinv", "lstsq", "matrix_power", "expm", "logm", "sqrtm",
    "matrix_function",
    "cholesky", "phi", "positive_definite",
    "eigvalsh", "svdvals", "diag", "sum", "mean",
    "kron", "outer", "dot", "norm", "einsum",
    "hadamard", "permute", "transpose", "tensordot", "reshape", "vec", "apply",
    "exp", "log", "sin", "cos", "tan", "tanh", "sigmoid", "softplus", "relu", "abs", "sqrt",
    "sign", "step", "cosh", "sinh", "log1p", "expm1", "arctan",
    "softmax", "logsumexp", "function", "scalar_function",
    "grad", "jacobian", "derivative", "hessian", "fact", "check", "explicit", "latex", "to_index",
    "derivation", "parse", "parse_fact", "ParseError", "codegen", "compile", "hvp", "to_sympy", "from_sympy",
]
