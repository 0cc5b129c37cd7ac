"""Element-wise functions and abstract scalar functions: one table row per function.

A row gives the NumPy implementation and the derivative f′ as an IR builder, so the single
differentiation rule d f(X) = f′(X) ⊙ dX covers every element-wise function.
"""
from __future__ import annotations

import functools
import hashlib
import types
from dataclasses import dataclass, fields
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

    def __repr__(self):  # the dataclass's text, with no object address in it: it feeds the
        return _stable_repr(self)  # sort keys of nodes (ir._stable_key), the same in every run


@dataclass(frozen=True)
class ScalarFunction:
    """An abstract function λ mapping a tensor to a scalar; ∇λ, ∇²λ, … stay symbolic."""

    name: str
    numpy: Optional[Callable] = None

    def __str__(self):
        return self.name

    def __repr__(self):
        return _stable_repr(self)


def _stable_repr(f) -> str:
    """``Function(name='exp', order=0, param=None, numpy=None, deriv=None)``, as the
    dataclass writes it, but each field whose repr holds an object address (``<function
    <lambda> at 0x7f…>``) written as its qualified name and a digest of what it computes
    (``stable_text``): a user's function sorts the same in every run, and every other
    function keeps its text, so no other node's sort key changes.  Cached on f."""
    text = f.__dict__.get("_repr")
    if text is None:
        text = f"{type(f).__qualname__}(" + ", ".join(
            f"{x.name}={stable_text(getattr(f, x.name))}" for x in fields(f)) + ")"
        object.__setattr__(f, "_repr", text)  # not a field: equality and hashing ignore it
    return text


def stable_text(value, depth: int = 0) -> str:
    """repr(value), unless that holds an object address (`` at 0x``), which varies from run
    to run: then ``<module.qualname #digest>``, the digest of the code, constants, defaults,
    closure values and simple globals of a Python function, the attributes of a callable
    object, the function and arguments of a partial (two lambdas of one name differ by it)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a user's object may fail to write itself
        return f"<{_qualified_name(type(value))}>"
    if " at 0x" not in text:  # None, numbers, ufuncs, traced(…): already the same every run
        return text
    if type(value) is tuple:
        return "(" + ", ".join(stable_text(v, depth) for v in value) + ("," if len(value) == 1 else "") + ")"
    digest = hashlib.blake2b(_identity(value, depth).encode(), digest_size=6).hexdigest()
    return f"<{_qualified_name(value)} #{digest}>"


def _qualified_name(value) -> str:
    if isinstance(value, functools.partial):
        return f"partial({_qualified_name(value.func)})"
    if isinstance(value, types.MethodType):
        return _qualified_name(value.__func__)
    named = value if hasattr(value, "__qualname__") else type(value)
    return f"{getattr(named, '__module__', None) or '?'}.{getattr(named, '__qualname__', '?')}"


def _identity(value, depth: int) -> str:
    """The text the digest of ``stable_text`` hashes: what tells value from another callable
    of its name, with no object address in it."""
    if depth > 3:  # (a function that refers to itself, or a deep chain of helpers)
        return _qualified_name(value)
    deeper = functools.partial(stable_text, depth=depth + 1)
    if isinstance(value, functools.partial):
        return f"{deeper(value.func)}{tuple(map(deeper, value.args))}" \
               f"{sorted((k, deeper(v)) for k, v in value.keywords.items())}"
    if isinstance(value, types.MethodType):
        return f"{deeper(value.__self__)}.{deeper(value.__func__)}"
    if isinstance(value, types.FunctionType):
        cells = []
        for cell in value.__closure__ or ():
            try:
                cells.append(deeper(cell.cell_contents))
            except ValueError:  # an empty cell
                cells.append("<empty>")
        names = value.__code__.co_names
        glob = [(k, deeper(value.__globals__[k]) if not isinstance(value.__globals__[k], types.ModuleType)
                 else value.__globals__[k].__name__) for k in names if k in value.__globals__]
        return "|".join((_code_text(value.__code__), deeper(value.__defaults__),
                         deeper(value.__kwdefaults__ and sorted(value.__kwdefaults__.items())),
                         ",".join(cells), repr(glob)))
    if isinstance(value, np.ndarray):
        return f"{value.dtype}{value.shape}{hashlib.blake2b(value.tobytes()).hexdigest()}"
    attributes = getattr(value, "__dict__", None)
    if isinstance(attributes, dict):  # a callable object: its public attributes (not caches)
        return repr([(k, deeper(v)) for k, v in sorted(attributes.items()) if not k.startswith("_")])
    return _qualified_name(value)


def _code_text(code: types.CodeType) -> str:
    """A code object's bytecode, constants (nested code and sets in a fixed order), names
    and arguments: the same text in every run."""
    def const(c):
        if isinstance(c, types.CodeType):
            return _code_text(c)
        if isinstance(c, frozenset):
            return "{" + ",".join(sorted(map(const, c))) + "}"
        if isinstance(c, tuple):
            return "(" + ",".join(map(const, c)) + ")"
        return repr(c)
    return f"{code.co_code.hex()}{[const(c) for c in code.co_consts]}{code.co_names}{code.co_varnames}"


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
                     "eigvalsh", "chol", "Φ", "vec"} | {f + "ₘ" for f in MATRIX_FUNCTION_NAMES}

# subscripts as printing writes them (e₁, eₙ, Kₘₙ) and the reader reads them back
SUBSCRIPTS = "₀₁₂₃₄₅₆₇₈₉"
LETTER_SUBSCRIPTS = dict(zip("aehijklmnoprstuvx", "ₐₑₕᵢⱼₖₗₘₙₒₚᵣₛₜᵤᵥₓ"))
UNSUBSCRIPT = {v: k for k, v in {**dict(zip("0123456789", SUBSCRIPTS)), **LETTER_SUBSCRIPTS}.items()}
