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
from .library import (abs, arctan, cos, cosh, derivative, det, diag, exp, expm1, eye, function,
                      grad, hessian, inv, jacobian, kron, log, log1p, logdet, logsumexp, matrix,
                      matrix_power, mean, norm, ones, outer, relu, scalar, scalar_function, sigmoid, sign,
                      sin, sinh, softmax, softplus, sqrt, step, sum, tan, tanh, tensor, trace, vector,
                      zeros)
from .tensors import apply, dot, einsum, hadamard, permute, reshape, tensordot, transpose, vec
from .check import check
from .generate import codegen, compile, hvp
from .derivation import derivation
from .parse import ParseError, parse
from .explicit import explicit
from .sympy_io import from_sympy, to_sympy


def latex(expr) -> str:
    """The LaTeX of an expression's matrix notation (index notation above order 2)."""
    return lift(expr).latex()


def to_index(expr) -> str:
    """An expression in index notation, with explicit sums: Σ_p A_ip x_p."""
    return lift(expr).index()

__version__ = "0.1.0"

__all__ = [
    "Expr", "MatdiffError", "ShapeError", "NotSupportedError", "EvaluationError", "CheckError",
    "UncheckableError",
    "tensor", "matrix", "vector", "scalar", "ones", "zeros", "eye",
    "trace", "det", "logdet", "inv", "matrix_power", "diag", "sum", "mean",
    "kron", "outer", "dot", "norm", "einsum",
    "hadamard", "permute", "transpose", "tensordot", "reshape", "vec", "apply",
    "exp", "log", "sin", "cos", "tan", "tanh", "sigmoid", "softplus", "relu", "abs", "sqrt",
    "sign", "step", "cosh", "sinh", "log1p", "expm1", "arctan",
    "softmax", "logsumexp", "function", "scalar_function",
    "grad", "jacobian", "derivative", "hessian", "check", "explicit", "latex", "to_index",
    "derivation", "parse", "ParseError", "codegen", "compile", "hvp", "to_sympy", "from_sympy",
]
