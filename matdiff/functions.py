"""Element-wise functions and abstract scalar functions: one table row per function.

A row gives the NumPy implementation and the derivative f′ as an IR builder, so the single
differentiation rule d f(X) = f′(X) ⊙ dX covers every element-wise function.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from . import build as B
from .ir import Elementwise, Node


# names of Greek letters, as users spell variables and functions, and the letter each prints as
# (the printers and the printed dialect's reader share this one table)
GREEK = dict(zip(
    ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
     "lambda", "mu", "nu", "xi", "pi", "rho", "sigma", "tau", "phi", "chi", "psi", "omega",
     "Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Phi", "Psi", "Omega"],
    "αβγδεζηθικλμνξπρστφχψωΓΔΘΛΞΠΣΦΨΩ"))


@dataclass(frozen=True)
class Function:
    """An element-wise function: built in (``name`` in ``TABLE``), abstract, or user-defined.

    ``order`` counts derivatives taken of an abstract or user function (σ, σ′, σ″, …);
    ``param`` is the exponent of ``pow``.
    """

    name: str
    order: int = 0
    param: Optional[float] = None
    numpy: Optional[Callable] = None
    deriv: Optional[Callable] = None  # node -> node of f′, for user functions

    @property
    def builtin(self) -> bool:
        return self.name in TABLE and self.numpy is None and self.deriv is None

    @property
    def abstract(self) -> bool:
        """True when nothing is known of f but its name (σ, σ′, …)."""
        return not self.builtin and self.deriv is None

    def derivative(self, x: Node) -> Node:
        """f′(x) as a node."""
        if self.builtin:
            return TABLE[self.name][1](x, self)
        if self.deriv is not None:
            return self.deriv(x)
        return Elementwise(Function(self.name, self.order + 1, numpy=self.numpy), x)

    def implementation(self) -> Optional[Callable]:
        """The NumPy function of a built-in (None for abstract and user functions)."""
        if not self.builtin:
            return None
        return TABLE[self.name][0] if self.param is None else (lambda x: np.power(x, self.param))

    def __str__(self):
        return self.name + "′" * self.order if self.order < 4 else f"{self.name}^({self.order})"


@dataclass(frozen=True)
class ScalarFunction:
    """An abstract function λ mapping a tensor to a scalar; ∇λ, ∇²λ, … stay symbolic."""

    name: str
    numpy: Optional[Callable] = None

    def __str__(self):
        return self.name


def fn(name: str, param=None) -> Function:
    return Function(name, 0, None if param is None else float(param))


def apply(name: str, x: Node, param=None) -> Node:
    return Elementwise(fn(name, param), x)


def power(x: Node, p: float) -> Node:
    if p == 1:
        return x
    if p == 0:
        return B.ones(x.shape)
    return apply("pow", x, p)


def _sigmoid(x):
    return np.exp(-np.logaddexp(0.0, -x))


def _one_minus(y: Node) -> Node:
    return B.linear([(1, B.ones(y.shape)), (-1, y)], y.shape)


# name: (numpy implementation, derivative builder (x, fn) -> f′(x))
TABLE = {
    "exp": (np.exp, lambda x, f: apply("exp", x)),
    "log": (np.log, lambda x, f: power(x, -1)),
    "sin": (np.sin, lambda x, f: apply("cos", x)),
    "cos": (np.cos, lambda x, f: B.scale(-1, apply("sin", x))),
    "tan": (np.tan, lambda x, f: B.add(B.ones(x.shape), power(apply("tan", x), 2))),
    "tanh": (np.tanh, lambda x, f: _one_minus(power(apply("tanh", x), 2))),
    "sigmoid": (_sigmoid, lambda x, f: B.hadamard(apply("sigmoid", x), _one_minus(apply("sigmoid", x)))),
    "softplus": (lambda x: np.logaddexp(0.0, x), lambda x, f: apply("sigmoid", x)),
    "relu": (lambda x: np.maximum(x, 0.0), lambda x, f: apply("step", x)),
    # The derivatives of step and sign are zero wherever they exist (everywhere but 0).
    "step": (lambda x: (np.asarray(x) > 0).astype(float), lambda x, f: B.zeros(x.shape)),
    "abs": (np.abs, lambda x, f: apply("sign", x)),
    "sign": (np.sign, lambda x, f: B.zeros(x.shape)),
    "sqrt": (np.sqrt, lambda x, f: B.scale(0.5, power(x, -0.5))),
    "cosh": (np.cosh, lambda x, f: apply("sinh", x)),
    "sinh": (np.sinh, lambda x, f: apply("cosh", x)),
    "log1p": (np.log1p, lambda x, f: power(B.add(B.ones(x.shape), x), -1)),
    "expm1": (np.expm1, lambda x, f: apply("exp", x)),
    "arctan": (np.arctan, lambda x, f: power(B.add(B.ones(x.shape), power(x, 2)), -1)),
    "pow": (None, lambda x, f: B.scale(f.param, power(x, f.param - 1))),
}

# the names the reader of matdiff's own text takes as functions where a "(", a power or a
# prime follows; printing keeps a variable of such a name apart from a "(" after it
MATRIX_FUNCTION_NAMES = ("exp", "log", "sin", "cos", "tan", "tanh", "sigmoid", "softplus", "cosh",
                         "sinh", "log1p", "expm1", "arctan", "abs", "sqrt", "relu", "sign", "step")
PRINTED_FUNCTIONS = {"tr", "det", "log", "diag", "exp", "sin", "cos", "tan", "tanh", "softplus",
                     "relu", "step", "sign", "softmax", "logsumexp", "σ", "abs", "sigmoid",
                     "cosh", "sinh", "log1p", "expm1", "arctan", "expm", "logm", "sqrtm",
                     "eigvalsh", "chol", "Φ"} | {f + "ₘ" for f in MATRIX_FUNCTION_NAMES}

# subscripts as printing writes them (e₁, eₙ, Kₘₙ) and the reader reads them back
SUBSCRIPTS = "₀₁₂₃₄₅₆₇₈₉"
LETTER_SUBSCRIPTS = dict(zip("aehijklmnoprstuvx", "ₐₑₕᵢⱼₖₗₘₙₒₚᵣₛₜᵤᵥₓ"))
UNSUBSCRIPT = {v: k for k, v in {**dict(zip("0123456789", SUBSCRIPTS)), **LETTER_SUBSCRIPTS}.items()}
