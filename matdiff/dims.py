"""Dimensions: an int, a symbolic name (str), or a product of those (the size of a Kronecker factor).

Dims are plain hashable values so that shapes are tuples that compare and hash structurally.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

from .errors import EvaluationError, MatdiffError


@dataclass(frozen=True)
class Prod:
    """The product of several dims, kept as a sorted tuple of int and str factors."""

    factors: tuple

    def __str__(self) -> str:
        return "·".join(str(f) for f in self.factors)

    __repr__ = __str__  # shapes print as (n·n, k)



def check_dim(d):
    """Validate a user-given dim: a positive int or an identifier-like name."""
    if isinstance(d, bool) or not isinstance(d, (int, str, Prod)):
        raise MatdiffError(f"a dimension must be an int or a name, not {d!r}")
    if isinstance(d, int) and d < 1:
        raise MatdiffError(f"a dimension must be positive, not {d}")
    if isinstance(d, str) and ("*" in d or "·" in d):  # "k·n", as a product prints: that product
        return parse(d)
    if isinstance(d, str) and not d.isidentifier():
        raise MatdiffError(f"a dimension name must be an identifier such as 'n', not {d!r}")
    return d


def parse(d):
    """A user-given dim, where a product may be written as text: "n*k" (or "n·k", as a
    Prod prints)."""
    if isinstance(d, str) and ("*" in d or "·" in d):
        out = 1
        for f in d.replace("·", "*").split("*"):
            f = f.strip()
            out = mul(out, check_dim(int(f) if f.isdigit() else f))
        return out
    return check_dim(d)


def factors(d) -> tuple:
    return d.factors if isinstance(d, Prod) else (d,)


def mul(a, b):
    """The dim a·b, with int factors folded together."""
    fs = factors(a) + factors(b)
    num = prod(f for f in fs if isinstance(f, int))
    names = sorted(f for f in fs if isinstance(f, str))
    if not names:
        return num
    parts = ([num] if num != 1 else []) + names
    return parts[0] if len(parts) == 1 else Prod(tuple(parts))


def size(shape) -> object:
    """The number of entries of a shape, as a dim."""
    out = 1
    for d in shape:
        out = mul(out, d)
    return out


def fmt(d) -> str:
    return str(d)


def fmt_shape(shape) -> str:
    return "(" + ", ".join(fmt(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def resolve(d, env: dict) -> int:
    """The integer value of a dim, given the values of its names."""
    if isinstance(d, int):
        return d
    try:
        return prod(f if isinstance(f, int) else env[f] for f in factors(d))
    except KeyError as e:
        raise EvaluationError(f"no size is known for dimension {e.args[0]!r}; no array fixes it, "
                              f"so pass sizes={{{e.args[0]!r}: …}} to evaluate") from None


def names(shape) -> set:
    return {f for d in shape for f in factors(d) if isinstance(f, str)}
