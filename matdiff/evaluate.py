"""Evaluation on arrays: one interpreter over the IR, with the numeric operations in a table.

Contractions go through opt_einsum.  Kronecker deltas, identities and ones vectors are
never materialised inside a product: their labels are merged before the contraction, and
only an output that *is* diagonal (diag(v) itself) is written out as one.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import string
from math import prod

import numpy as np
import opt_einsum as oe

from . import dims as D
from . import funm
from .errors import EvaluationError, NotSupportedError, ShapeError
from .ir import (GENERAL_FUNCTIONS, Basis, Cholesky, Const, Contract, Delta, Det, DivDiff, DivDiff2, DivDiff3,
                 DivDiff3Apply, EigGap, Eigh, Elementwise, Frechet, Funm, Hole, Inv, LogDet, LogSumExp, MatFn,
                 Node, Phi, Pinv, Reshape, ScalarFn, Softmax, Sum, Svd, Unary, Var, free_vars, merge_deltas,
                 walk)

LETTERS = string.ascii_letters


def variables(*nodes: Node) -> list:
    """The variables of expressions, sorted by name; two different ones of one name are an error."""
    found = {}
    for v in frozenset().union(*(free_vars(n) for n in nodes)):
        if isinstance(v, Hole):
            continue
        other = found.setdefault(v.name, v)
        if other is not v:
            raise ShapeError(f"two different variables are named {v.name!r}: "
                             f"{D.fmt_shape(other.shape)} and {D.fmt_shape(v.shape)}")
    return [found[k] for k in sorted(found)]


def is_min_dim(d) -> bool:
    """Whether d names the dim min(a, b, …), the number of singular values of a matrix whose
    dims do not say which is smaller (``library.min_dim``)."""
    return isinstance(d, str) and d.startswith("min(") and d.endswith(")")


def min_arguments(d: str) -> list:
    """The arguments of a min dim, as text: "min(k, n)" → ["k", "n"] (split where no
    parenthesis is open)."""
    parts, depth, current = [], 0, ""
    for ch in d[4:-1]:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    return parts + [current.strip()]


class Sizes(dict):
    """Dim name → size, where a min dim's size is the least of its arguments' (each a name,
    an int, or their product "k·n"), found when first asked for."""

    def __missing__(self, key):
        if not is_min_dim(key):
            raise KeyError(key)
        values = []
        for arg in min_arguments(key):
            size = 1
            for f in _top_level_factors(arg):
                size *= int(f) if f.isdigit() else self[f]
            values.append(size)
        self[key] = min(values)
        return self[key]


def _top_level_factors(text: str) -> list:
    out, depth, current = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "·" and depth == 0:
            out.append(current)
            current = ""
        else:
            current += ch
    return out + [current]


def check_sizes(sizes) -> dict:
    """``sizes`` as a dict of dim name → positive int, or an error naming the bad entry."""
    if sizes is None:
        return Sizes()
    if not isinstance(sizes, dict):
        raise EvaluationError(f"sizes must be a dict such as {{'n': 3}}, not {type(sizes).__name__}")
    for d, n in sizes.items():
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
            raise EvaluationError(f"sizes[{d!r}] is {n!r}; a size is a positive integer")
    return Sizes({d: int(n) for d, n in sizes.items()})


def check_shapes(vs: list, shapes: dict, sizes: dict | None = None) -> dict:
    """Check arrays' shapes (``shapes``: variable → shape tuple) against the variables'
    declarations; the sizes of the symbolic dims they fix.  Shared by ``evaluate`` and by
    compiled functions, so both refuse a wrong shape with the same message."""
    sizes = check_sizes(sizes)
    origin = {d: "sizes" for d in sizes}
    for v in vs:
        shape = shapes[v]
        if len(shape) != v.ndim:
            raise ShapeError(f"{v.name} is declared {D.fmt_shape(v.shape)} but its array has "
                             f"shape {tuple(shape)}")
        for d, n in zip(v.shape, shape):
            if isinstance(d, str):
                if d in sizes and sizes[d] != n:
                    raise ShapeError(f"{d} is {sizes[d]} from {origin[d]} but {n} from {v.name}")
                sizes.setdefault(d, n)
                origin.setdefault(d, v.name)
    for v in vs:  # fixed and product dims, once every name is bound
        shape = tuple(shapes[v])
        for d, n in zip(v.shape, shape):
            if not isinstance(d, str) and D.resolve(d, sizes) != n:
                raise ShapeError(f"{v.name} is declared {D.fmt_shape(v.shape)} but its array has "
                                 f"shape {shape}: {D.fmt(d)} is {D.resolve(d, sizes)}, not {n}")
    return sizes


def bind(node: Node, values: dict, scope=frozenset(), sizes=None) -> tuple[dict, dict]:
    """Arrays for the variables of ``node`` (checked against their declarations) and the
    sizes of the symbolic dims they fix.  Variables in ``scope`` (those of the expression a
    derivative was taken of) may be given too, and are checked, though not used."""
    used = variables(node)
    vs = list(used) + sorted((v for v in scope if v not in used and v.name in values),
                             key=lambda v: v.name)
    names = {v.name for v in vs}
    unknown = sorted(set(values) - names)
    if unknown:
        raise EvaluationError(f"values were given for {', '.join(map(repr, unknown))}, which the "
                              f"expression does not use; it uses "
                              f"{', '.join(sorted(names)) or 'no variables'}")
    arrays = {}
    for v in vs:
        if v.name not in values:
            if v in used:
                raise EvaluationError(f"no value for {v.name} {D.fmt_shape(v.shape)}; "
                                      f"pass evaluate({{{v.name!r}: array, ...}})")
            continue
        arrays[v] = as_real_array(v.name, values[v.name])
    sizes = check_shapes(list(arrays), {v: a.shape for v, a in arrays.items()}, sizes)
    for v, a in arrays.items():
        if v.symmetric:
            check_symmetric(v.name, a)
        if v.symmetric == "spd":
            check_positive_definite(v.name, a)
        if v.symmetric == "positive":
            check_positive(v.name, a)
    return arrays, sizes


def check_positive(name: str, a) -> None:
    """An EvaluationError where the value given for a scalar declared positive (positive=True)
    is not (NaN included): XᵀX + λI is taken as positive definite, and solved with by
    Cholesky, because λ > 0."""
    if "Tracer" in type(a).__name__:  # inside jax.jit: values are not known yet
        return
    if not a > 0:
        raise EvaluationError(f"{name} is declared positive (positive=True) but its value "
                              f"is {float(a)!r}")


def check_positive_definite(name: str, a) -> None:
    """An EvaluationError where the array given for a variable declared positive definite
    (spd=True) is not: its Cholesky factor, which generated code solves with, does not exist."""
    try:
        cholesky(a)
    except EvaluationError as e:
        raise EvaluationError(f"{name} is declared positive definite (spd=True) but its array is "
                              f"not: {str(e).partition(' — ')[2] or e}") from None


_EPS = {np.dtype(t): float(np.finfo(t).eps) for t in (np.float16, np.float32, np.float64)}


def _asymmetry(m) -> float:
    """max |M − Mᵀ| over the upper triangle's blocks against the lower's: each block of rows
    read against the same columns, cache-friendly (M − M.T reads one operand across rows;
    3–6× slower at n = 400–3000, which beside a solve made a compiled function 1.5× slower)."""
    if m.dtype.kind != "f":  # booleans do not subtract, and unsigned integers wrap around
        m = m.astype(np.float64)
    if m.shape[0] != m.shape[1]:
        return float(np.abs(m - m.T).max(initial=0.0))
    gap, step = 0.0, 64
    for i in range(0, m.shape[0], step):
        d = m[i:i + step, i:] - m[i:, i:i + step].T
        gap = max(gap, float(np.abs(d, out=d).max(initial=0.0)))
    return gap


def _exactly_symmetric(m) -> bool:
    """Whether M = Mᵀ entry for entry: each 128 × 128 tile above the diagonal compared with
    the one below it, both read from cache (one pass over M, which a matrix computed as
    symmetric, QQᵀ or (A + Aᵀ)/2, passes; 2.5× faster than ``_asymmetry`` with its scale at
    n = 1000). NaN is not equal to itself: such a matrix is left to the tolerance test."""
    n, b = m.shape[0], 128
    for i in range(0, n, b):
        for j in range(i, n, b):
            if not (m[i:i + b, j:j + b] == m[j:j + b, i:i + b].T).all():
                return False
    return True


def check_symmetric(name: str, a) -> None:
    """An EvaluationError where the array given for a variable declared symmetric is not
    (to 100 units of its precision): an eigen-decomposition would read one triangle of it and
    answer for a matrix the caller did not give. Every entry is compared: first for equality
    (one pass), and only where some pair differs against the tolerance (three more)."""
    if "Tracer" in type(a).__name__:  # inside jax.jit: values are not known yet
        return
    m = np.asarray(a.detach().cpu() if hasattr(a, "detach") else a)
    if m.ndim != 2:
        return
    if m.shape[0] == m.shape[1] and _exactly_symmetric(m):
        return
    eps = _EPS.get(m.dtype) or (np.finfo(m.dtype).eps if m.dtype.kind == "f" else _EPS[np.dtype(float)])
    scale = max(float(m.max(initial=0.0)), -float(m.min(initial=0.0)))
    gap = _asymmetry(m)
    if not gap <= max(100 * eps * scale, 1e-12 * scale, 1e-300):
        raise EvaluationError(f"{name} is declared symmetric but its array is not (largest "
                              f"|{name} − {name}ᵀ| is {gap:.3g}); pass ({name} + {name}.T) / 2 if "
                              f"that is the matrix meant")


def complex_value(name: str) -> EvaluationError:
    """The error for a complex array given for a variable (evaluate and compiled code)."""
    return EvaluationError(f"the value for {name} is complex; matdiff differentiates real "
                           f"functions of real arrays (pass the real part, or split real and "
                           f"imaginary parts into two variables)")


def as_real_array(name: str, value) -> np.ndarray:
    """``value`` as a float array, refusing complex numbers (matdiff's calculus is real):
    float32 and float16 arrays keep their dtype, integers and booleans become float64 (as
    NumPy promotes them)."""
    try:
        complex_ = np.iscomplexobj(value)
        a = np.asarray(value)
    except (TypeError, ValueError):  # a ragged list: rows of different lengths
        raise EvaluationError(f"the value for {name} is not an array of numbers (a nested list "
                              f"whose rows differ in length?)") from None
    if complex_:
        raise complex_value(name)
    try:
        return a if a.dtype.kind == "f" else np.asarray(a, dtype=float)
    except (TypeError, ValueError):
        raise EvaluationError(f"the value for {name} is not an array of numbers") from None


# --------------------------------------------------------------------------- interpreter


def interpret(root: Node, leaves: dict, sizes: dict, ops: dict):
    """Evaluate ``root`` bottom-up with each node type's operation from ``ops``; values of
    shared subexpressions are computed once."""
    return _interpreted(root, leaves, sizes, ops)[0][root]


def _interpreted(root: Node, leaves: dict, sizes: dict, ops: dict) -> tuple:
    """(every value ``interpret`` computes, keyed by node, the nodes in the order computed)."""
    memo, order = dict(leaves), []
    stack = [root]
    while stack:
        n = stack[-1]
        if n in memo:
            stack.pop()
            continue
        pending = [c for c in _inputs(n) if c not in memo]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        memo[n] = ops[type(n)](n, [memo[c] for c in _inputs(n)], sizes)
        order.append(n)
    return memo, order


def _inputs(n: Node):
    if isinstance(n, Contract):  # deltas inside a product are handled symbolically
        return [c for c in n.operands if not isinstance(c, Delta)]
    return n.children


def contract_with_deltas(n: Contract, arrays: list, sizes: dict, einsum, zeros):
    """The value of a contraction whose Delta factors are merged into labels, never built."""
    kept, out, uniq, summed_only = merge_deltas(n)
    labels = [lab for _, lab in kept]
    dim = n.label_dims()
    carried = {x for lab in labels for x in lab}
    # a merged label only a delta carries: a broadcast if it is an output, else a factor n
    factor = prod(D.resolve(dim[r], sizes) for r in summed_only)
    inner = [x for x in uniq if x in carried]
    value = einsum(labels, arrays, inner) if arrays else np.asarray(1.0)
    if factor != 1:
        value = value * factor
    if len(inner) < len(uniq):  # broadcast along the output labels only ones vectors carry
        new_axes = tuple(i for i, x in enumerate(uniq) if x not in carried)
        value = np.broadcast_to(np.expand_dims(value, new_axes),
                                [D.resolve(dim[x], sizes) for x in uniq])
    if len(uniq) < len(out):  # a diagonal output: write the values on its diagonal
        sym = {x: LETTERS[i] for i, x in enumerate(uniq)}
        full = zeros([D.resolve(dim[x], sizes) for x in out])
        np.einsum("".join(sym[x] for x in out) + "->" + "".join(sym[x] for x in uniq),
                  full)[...] = value
        value = full
    return value


def _np_einsum(labels, arrays, out):
    sym = {}
    for x in [x for lab in labels for x in lab]:
        sym.setdefault(x, oe.get_symbol(len(sym)))
    eq = ",".join("".join(sym[x] for x in lab) for lab in labels) + "->" + "".join(sym[x] for x in out)
    return np.asarray(oe.contract(eq, *arrays, optimize=_path(eq, tuple(np.shape(a) for a in arrays))))


@functools.lru_cache(maxsize=4096)
def _path(eq: str, shapes: tuple) -> list:
    """opt_einsum's contraction order for an equation at these shapes, searched once: checks
    and the derivative tests evaluate one expression at many points of one size."""
    return oe.contract_path(eq, *shapes, shapes=True)[0]


def _basis(n: Basis, sizes: dict):
    k = D.resolve(n.dim, sizes)
    if not -k <= n.pos < k:
        raise EvaluationError(f"index {n.pos} is out of range for length {k}")
    out = np.zeros(k)
    out[n.pos] = 1.0
    return out


def _materialise(n: Node, sizes: dict):
    """A standalone delta (not inside a product), as an array."""
    k = D.resolve(n.dim, sizes)
    if n.order == 1:
        return np.ones(k)
    out = np.zeros((k,) * n.order)
    out[(np.arange(k),) * n.order] = 1.0
    return out


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _logsumexp(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.exp(x - m).sum(axis=axis))


def _logdet(x):
    sign, value = np.linalg.slogdet(x)
    if sign == 0:
        return np.asarray(-np.inf)
    return np.asarray(value)


def _impl(fn, order, functions):
    """The NumPy implementation of an abstract function's ``order``-th derivative."""
    given = functions.get(fn.name)
    if given is None and getattr(fn, "numpy", None) is not None:
        given = fn.numpy
    if callable(given):
        given = [given]
    if given is None or order >= len(given):
        what = fn.name + "′" * order
        raise NotSupportedError(f"{what} has no numeric implementation; pass "
                                f"functions={{{fn.name!r}: [f, f′, …]}} to evaluate it")
    return given[order]


def _scalar_fn(n: ScalarFn, x, functions):
    out = np.asarray(_impl(n.fn, n.order, functions)(x), dtype=float)
    want = np.shape(x) * n.order
    if out.shape != want:
        raise EvaluationError(f"the implementation of {n.fn}" + "′" * n.order + f" returned "
                              f"shape {out.shape}; for an argument of shape {np.shape(x)} it "
                              f"must be {want}")
    return out


def _values_of(fn, order: int, x, functions):
    """f(x) (order 0) or f′(x) (order 1) entry by entry, for a built-in or user function:
    f′ as the function table builds it, then evaluated."""
    from .ir import Var
    x = np.asarray(x, dtype=float)
    t = Var("_t", ("_n",), False)
    node = fn.derivative(t) if order else Elementwise(fn, t)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = interpret(node, {t: x.ravel()}, {"_n": x.size}, numpy_ops(functions))
    return np.broadcast_to(out, x.ravel().shape).reshape(x.shape)


CLOSE = 1e-5  # λᵢ, λⱼ this close (relative to the larger) take a divided difference's limit


C_SERIES = {"sinh": 1 / 6, "sin": -1 / 6, "tanh": -1 / 3, "artanh": 1 / 3}  # g(x)/x ≈ 1 + c·x²


def _c(kind: str, x):
    """sinh(x)/x, sin(x)/x, tanh(x)/x or artanh(x)/x, with their limit 1 at x = 0 (a Taylor
    term where |x| < 10⁻⁴, exact to rounding there)."""
    small = np.abs(x) < 1e-4
    safe = np.where(small, 0.5, x)  # any value the function takes well (artanh(1) = ∞)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        full = {"sinh": np.sinh, "sin": np.sin, "tanh": np.tanh, "artanh": np.arctanh}[kind](safe) / safe
    return np.where(small, 1.0 + C_SERIES[kind] * (x * x), full)


def _exact_divided(name: str, param, a, b):
    """f[a, b] = (f(a) − f(b))/(a − b) in a form accurate at every gap (no cancellation where
    a ≈ b, or where f(a) ≈ f(b) ≈ f(0) at tiny eigenvalues), and f′(a) at a = b; None where f
    has no such form here.  Higham, Functions of Matrices, §11 (and the identities of sinh,
    sin and tanh of sums)."""
    m, h = (a + b) / 2, (a - b) / 2
    if name == "exp":
        return np.exp(m) * _c("sinh", h)
    if name == "log":  # log a − log b = 2 artanh((a − b)/(a + b)), near; the quotient, far
        z = h / m
        far = np.abs(z) > 0.5
        with np.errstate(divide="ignore", invalid="ignore"):
            quotient = (np.log(a) - np.log(b)) / np.where(far, a - b, 1.0)
        return np.where(far, quotient, _c("artanh", np.where(far, 0.0, z)) / m)
    if name == "sqrt":
        return 1.0 / (np.sqrt(a) + np.sqrt(b))
    if name in ("sin", "cos", "sinh", "cosh"):
        outer = {"sin": np.cos, "cos": lambda t: -np.sin(t), "sinh": np.cosh, "cosh": np.sinh}[name]
        return outer(m) * _c("sin" if name in ("sin", "cos") else "sinh", h)
    if name == "tanh":  # tanh a − tanh b = sinh(a − b)/(cosh a cosh b)
        return _tanh_divided(a, b)
    if name == "sigmoid":  # σ(x) = (1 + tanh(x/2))/2
        return _tanh_divided(a / 2, b / 2) / 4
    if name == "expm1":  # expm1 a − expm1 b = exp a − exp b
        return np.exp(m) * _c("sinh", h)
    if name == "log1p":  # log1p a − log1p b = 2 artanh(h/(1 + m)), near; the quotient, far
        one = 1.0 + m
        z = h / one
        far = np.abs(z) > 0.5
        with np.errstate(divide="ignore", invalid="ignore"):
            quotient = (np.log1p(a) - np.log1p(b)) / np.where(far, a - b, 1.0)
        return np.where(far, quotient, _c("artanh", np.where(far, 0.0, z)) / one)
    if name == "arctan":  # arctan a − arctan b = arctan((a − b)/(1 + ab)) where 1 + ab > 0
        p = 1.0 + a * b
        ok = p > 0  # elsewhere a, b have opposite signs and |a − b| ≥ 2: the quotient
        w = (a - b) / np.where(ok, p, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            quotient = (np.arctan(a) - np.arctan(b)) / np.where(ok, 1.0, a - b)
        return np.where(ok, _ratio(np.arctan, w) / np.where(ok, p, 1.0), quotient)
    if name == "tan":  # tan a − tan b = sin(a − b)/(cos a cos b)
        return _c("sin", 2 * h) / (np.cos(a) * np.cos(b))
    if name == "softplus":
        return _softplus_divided(a, b)
    if name == "pow" and float(param).is_integer() and abs(param) <= 8:
        p = int(param)
        if p == 0:
            return np.zeros_like(m)
        q = abs(p)  # aᵖ − bᵖ = (a − b) Σ aᵏ bᵖ⁻¹⁻ᵏ; a⁻ᵠ − b⁻ᵠ = −(aᵠ − bᵠ)/(aᵠbᵠ)
        total = sum(a ** k * b ** (q - 1 - k) for k in range(q))
        return total if p > 0 else -total / (a ** q * b ** q)
    if name == "pow":  # a, b > 0: b^(p−1) (rᵖ − 1)/(r − 1), r = a/b, through expm1
        with np.errstate(divide="ignore", invalid="ignore"):
            L = np.log(a) - np.log(b)
            ratio = np.where(L == 0, param, np.expm1(param * L) / np.where(L == 0, 1.0, np.expm1(L)))
            return ratio * b ** (param - 1)
    return None


def _ratio(g, x):
    """g(x)/x with its limit 1 at x = 0, for g = log1p or arctan (relatively accurate at tiny x)."""
    zero = x == 0
    return np.where(zero, 1.0, g(np.where(zero, 1.0, x)) / np.where(zero, 1.0, x))


def _tanh_divided(a, b):
    """tanh[a, b] = sinh(a − b)/((a − b) cosh a cosh b), numerator and denominator scaled by
    e^(−|a|−|b|): relatively accurate at every gap, and finite where cosh overflows (|a| > 710)."""
    s, d = np.abs(a) + np.abs(b), a - b
    near = np.abs(d) <= 1
    dn = np.where(near, d, 0.0)
    # ±d − s as 2(min(±a, 0) − max(±b, 0)): terms ≤ 0, exact where |a| ≫ |b| (a − b − |a| − |b|
    # at {4.7e10, 0.1} cancelled to 1e-5 of −0.2)
    lo, hi = 2 * (np.minimum(a, 0.0) - np.maximum(b, 0.0)), 2 * (np.minimum(b, 0.0) - np.maximum(a, 0.0))
    num = np.where(near, _c("sinh", dn) * np.exp(-s),
                   (np.exp(lo) - np.exp(hi)) / (2 * np.where(near, 1.0, d)))
    return num * 4 / ((1 + np.exp(-2 * np.abs(a))) * (1 + np.exp(-2 * np.abs(b))))


def _softplus_divided(a, b):
    """softplus[a, b]: within 2 of each other, softplus a − softplus b = log1p(σ(b) expm1(a − b))
    (each factor relatively accurate: σ(b) e^(d/2) sinh(d/2)/(d/2) · log1p(y)/y); farther apart
    the quotient — of 1 − σ's integral from the other side where a + b ≥ 0, so that neither
    cancels (softplus x = x + softplus(−x))."""
    d = a - b
    near = np.abs(d) <= 2
    dn = np.where(near, d, 0.0)
    sb = np.exp(-np.logaddexp(0.0, -b))  # σ(b), finite and relatively accurate everywhere
    close = _ratio(np.log1p, sb * np.expm1(dn)) * sb * np.exp(dn / 2) * _c("sinh", dn / 2)
    dd = np.where(near, 1.0, d)
    sp = lambda t: np.logaddexp(0.0, t)  # noqa: E731
    far = np.where(a + b >= 0, 1.0 - (sp(-b) - sp(-a)) / dd, (sp(a) - sp(b)) / dd)
    return np.where(near, close, far)


def _divided_differences(fn, lam, functions):
    """Fᵢⱼ = f[λᵢ, λⱼ] = (f(λᵢ) − f(λⱼ))/(λᵢ − λⱼ), f′(λᵢ) on the diagonal: for the built-in
    functions in a form accurate at every gap (``_exact_divided``), for a traced callable by
    the chain rule of divided differences (``_traced_divided``; relu, |·|, step and sign in it by
    their pieces, ``_kink_compose``); for a user's md.function the quotient, and near the
    diagonal the Taylor series about the midpoint from its known derivatives
    (``_user_divided``); for the others the quotient, or f′ at the midpoint where λᵢ and λⱼ
    agree to CLOSE relative to the larger."""
    lam = _in_domain(fn, lam)
    _refuse_kinks(fn, lam, functions)
    a, b = lam[:, None], lam[None, :]
    if fn.builtin or (_trace(fn) is not None and DivDiff3.has_series(fn)):
        if not fn.builtin:
            _at_eigenvalues(fn, lam, functions)  # an EvaluationError where f is not defined
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            exact = _exact_divided(fn.name, fn.param, a, b) if fn.builtin and fn.name not in KINKS else \
                _traced_divided(fn, (a, b), functions)[2]
        if exact is not None:
            return np.broadcast_to(exact, (lam.size, lam.size)).copy()
    f = _at_eigenvalues(fn, lam, functions)
    if not fn.builtin and _trace(fn) is None:
        return _user_divided(fn, lam, f, functions)
    gap = a - b
    close = np.abs(gap) <= CLOSE * np.maximum(np.abs(a), np.abs(b))
    middle = (a + b) / 2
    slope = np.reshape(_values_of(fn, 1, np.broadcast_to(middle, gap.shape).ravel(), functions), gap.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(close, slope, (f[:, None] - f[None, :]) / np.where(close, 1.0, gap))


KINKS = DivDiff3.KINKS  # not differentiable at 0


def _refuse_kinks(fn, lam, functions, order: int = 1):
    """An EvaluationError where f(S) has no derivative of this order: an eigenvalue at a kink
    of relu, |·|, step or sign (0 to 64ε of the largest |λ|, how a zero eigenvalue computes)
    — for f itself, or inside a traced callable where an eigenvalue puts the kink's argument
    at 0 and f or its first ``order`` derivatives differ on the two sides (relu(u)·u is C¹:
    its gradient exists there, its Hessian does not). Between kinks their divided differences
    are exact, and f(S) is smooth."""
    floor = 64 * np.finfo(float).eps * float(np.abs(lam).max(initial=0.0))
    if fn.builtin:
        at = (np.abs(lam) <= floor) if fn.name in KINKS else np.zeros(lam.shape, dtype=bool)
        kind = fn.name
    elif _trace(fn) is not None:
        node, t = _trace(fn)
        at, kind = np.zeros(lam.shape, dtype=bool), None
        for n in walk(node):
            if type(n) is Elementwise and n.fn.builtin and n.fn.name in KINKS:
                arg = np.broadcast_to(interpret(n.arg, {t: lam}, {"_n": lam.size}, numpy_ops(functions)),
                                      lam.shape)
                hit = np.abs(arg) <= floor
                kind, at = (n.fn.name if np.any(hit & ~at) else kind), at | hit
        if np.any(at):  # (f and its slopes beside the kinks: only where one is hit)
            at &= _one_sided_differ(fn, lam, functions, order)
    else:
        return
    if np.any(at):
        raise EvaluationError(f"{fn.name}(S) is not differentiable here{' twice' if order > 1 else ''}: "
                              f"{kind} has a kink at 0, and the eigenvalue λ = {float(lam[at][0]):.6g} "
                              f"puts its argument there; matdiff returns no value silently")


def _one_sided_differ(fn, lam, functions, order: int):
    """Whether f, f′ (and, for order 2, f″ by one-sided differences of f′) differ to the left and
    right of each λ, 10⁻⁷·max(1, |λ|) away: a jump of O(1) against a smooth f's O(10⁻⁷)."""
    d = 1e-7 * np.maximum(1.0, np.abs(lam))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        value, slope = ((lambda k, m=m: _values_of(fn, m, lam + k * d, functions)) for m in (0, 1))
        jumps = [(value(1), value(-1)), (slope(1), slope(-1))]
        if order > 1:
            jumps.append(((slope(2) - slope(1)) / d, (slope(-1) - slope(-2)) / d))
    out = np.zeros(lam.shape, dtype=bool)
    for right, left in jumps:
        out |= ~(np.abs(right - left) <= 1e-4 * (np.abs(right) + np.abs(left)) + 1e-6 * (1 + np.abs(right)))
    return out


def _second_divided_differences(fn, lam, second, functions):
    """Aᵢⱼ = f[λᵢ, λᵢ, λⱼ] = (f′(λᵢ) − Fᵢⱼ)/(λᵢ − λⱼ); for the functions with second divided
    differences accurate at every gap (``DivDiff3.has_series``) T_iij as ``_divided_differences3``
    computes it (the quotient cancels where F ≈ f′ ≈ 1: softplus's at λ = {30, 30.001}, about
    5·10⁻¹⁴, was 4 times off; T takes softplus at −λ there); for the others, where λᵢ and λⱼ
    agree to CLOSE relative to the larger, its limit to second order, (2f″(λᵢ) + f″(λⱼ))/6
    (= f″ at (2λᵢ + λⱼ)/3, over 2)."""
    _refuse_kinks(fn, lam, functions, order=2)
    if DivDiff3.has_series(fn):
        lam = _in_domain(fn, np.asarray(lam, dtype=float))
        r = np.arange(lam.size)
        return _divided_differences3_at(fn, lam, _divided_differences(fn, lam, functions), r[:, None],
                                        r[:, None], r[None, :], functions)
    slope = _values_of(fn, 1, lam, functions)
    a, b = lam[:, None], lam[None, :]
    F = _divided_differences(fn, lam, functions)
    gap = a - b
    close = np.abs(gap) <= CLOSE * np.maximum(np.abs(a), np.abs(b))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(close, (2 * second[:, None] + second[None, :]) / 6,
                        (slope[:, None] - F) / np.where(close, 1.0, gap))


TAYLOR_CLOSE = 1e-2  # three points this close (relative to f's scale) take f[x, y, z]'s Taylor series
PAIR_CLOSE = 1e-3  # λ_p, λ_c this close (relative to f's scale) take T's own values in DivDiff3Apply
TAYLOR_ORDER = 10  # up to f⁽¹⁰⁾: the series' error (1e-2)⁹ relative, the quotient's ε/1e-2
_ENTIRE = ("exp", "sin", "cos", "sinh", "cosh", "tanh", "sigmoid", "softplus", "expm1")
# scale 1: entire, or the nearest singularity at least π/2 away in the complex plane (tanh's
# poles at iπ/2, σ's at iπ, softplus's branch points at iπ)


def _taylor_scale(fn):
    """f's scale for the Taylor series of f[x, y, z] about x: the distance within which the
    series converges fast, as a function of x — "one" (1) for exp, sin, cos, sinh, cosh,
    tanh, σ, softplus and expm1; "relative" (|x|) for log and the powers (a singularity at
    0); "unit" (``_taylor_unit``: |1 + x| for log1p, √(1 + x²) for arctan, the distance to
    the singularities at −1 and ±i); "pole" (min(1, the distance to tan's nearest pole));
    and "polynomial" for the integer powers 0 … 8 (a finite series: exact everywhere)."""
    if not fn.builtin:
        return None
    if fn.name in _ENTIRE:
        return "one"
    if fn.name == "pow" and float(fn.param).is_integer() and 0 <= fn.param <= 8:
        return "polynomial"
    if fn.name in ("log", "sqrt", "pow"):
        return "relative"
    if fn.name in ("log1p", "arctan"):
        return "unit"
    if fn.name == "tan":
        return "pole"
    return None


def _taylor_unit(fn, x):
    """The unit of f's series about x (``_in_units``): x for log and the powers, 1 + x for
    log1p, √(1 + x²) for arctan — each the distance to f's nearest singularity."""
    if fn.name == "log1p":
        return 1.0 + x
    if fn.name == "arctan":
        return np.hypot(1.0, x)
    return x


def _pole_distance(x):
    """The distance from x to tan's nearest pole (k + ½)π."""
    return np.abs(x - (np.round(x / np.pi - 0.5) + 0.5) * np.pi)


def _tanh_polynomials(order: int) -> list:
    """Coefficients (lowest first) of Pₙ with tanh⁽ⁿ⁾(x) = Pₙ(tanh x), n ≤ order:
    P₀ = t, Pₙ₊₁ = Pₙ′ (1 − t²)."""
    return _derivative_polynomials(order, -1.0)


def _derivative_polynomials(order: int, sign: float) -> list:
    """Pₙ with g⁽ⁿ⁾(x) = Pₙ(g(x)) for g′ = 1 + sign·g² (tanh: −1; tan: +1), n ≤ order."""
    out = [np.array([0.0, 1.0])]
    for _ in range(order):
        p = out[-1]
        d = np.array([k * p[k] for k in range(1, len(p))] or [0.0])
        out.append(np.convolve(d, [1.0, 0.0, sign]))
    return out


def _sech2_polynomials(order: int) -> list:
    """Rₙ (lowest first) with tanh⁽ⁿ⁾(x) = sech²(x) Rₙ(tanh x), 1 ≤ n ≤ order (index n; R₀
    unused): R₁ = 1, Rₙ₊₁ = −2t Rₙ + (1 − t²) Rₙ′. Relatively accurate where tanh x rounds
    to ±1 (Pₙ(t) = (1 − t²) Rₙ(t) is 0 there), with sech² from e^(−2|x|)."""
    out = [np.array([0.0]), np.array([1.0])]
    for _ in range(1, order):
        r = out[-1]
        d = np.array([k * r[k] for k in range(1, len(r))] or [0.0])
        nxt = np.zeros(len(r) + 2)
        nxt[1:len(r) + 1] -= 2 * r
        nxt[:len(d)] += d
        nxt[2:len(d) + 2] -= d
        out.append(nxt)
    return out


def _sech2(x):
    """sech²(x) = 4e/(1 + e)², e = e^(−2|x|): no overflow, relatively accurate at any x."""
    e = np.exp(-2 * np.abs(x))
    return 4 * e / ((1 + e) * (1 + e))


def _in_units(fn) -> bool:
    """Whether f's series is taken in units of ``_taylor_unit`` (log, log1p, arctan and the
    powers): f⁽ⁿ⁾(x)/n! = x^(p−n) cₙ (x⁻ⁿ for log), so T = x^(p−2) Σ cₙ hₙ₋₂(u/x, v/x), finite
    where xⁿ is not (x = 1e-150). Not the integer powers 0 … 8 ("polynomial"): their finite
    series (p choose n) x^(p−n) is taken as it is, right at x = 0 (where a relu's argument is)."""
    return fn.builtin and fn.name in ("log", "sqrt", "pow", "log1p", "arctan") and \
        _taylor_scale(fn) != "polynomial"


def _taylor_prefactor(fn, x):
    """x^(p−2) for a power (x^(−3/2) for sqrt), x⁻² for log (and the unit⁻² of log1p and
    arctan): the factor of a series in units of x."""
    p = -2.0 if fn.name in ("log", "log1p", "arctan") else \
        (0.5 if fn.name == "sqrt" else float(fn.param)) - 2.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.power(x, p) if p != -2.0 else (1.0 / x) * (1.0 / x)


def _taylor_coefficients(fn, x, functions) -> list:
    """[f⁽ⁿ⁾(x)/n! for n = 2 … TAYLOR_ORDER], entry by entry (in units of x for log and the
    powers: ``_in_units``), in closed form for the functions of ``DivDiff3.SERIES``: σ and
    softplus through tanh (σ⁽ⁿ⁾(x) = tanh⁽ⁿ⁾(x/2)/2ⁿ⁺¹), tan by its own polynomials in tan x,
    arctan as (−1)ⁿ⁻¹ sin(nφ)/n in units of r = √(1 + x²), φ = atan2(1, x) (arctan′ = Im 1/(x − i))."""
    from math import factorial
    name, p = (fn.name, fn.param) if fn.builtin else (None, None)
    orders = range(2, TAYLOR_ORDER + 1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if name in ("exp", "expm1"):
            e = np.exp(x)
            return [e / factorial(n) for n in orders]
        if name in ("sin", "cos", "sinh", "cosh"):
            cycle = {"sin": (np.sin, np.cos, lambda t: -np.sin(t), lambda t: -np.cos(t)),
                     "cos": (np.cos, lambda t: -np.sin(t), lambda t: -np.cos(t), np.sin),
                     "sinh": (np.sinh, np.cosh) * 2, "cosh": (np.cosh, np.sinh) * 2}[name]
            return [cycle[n % 4](x) / factorial(n) for n in orders]
        if name == "tan":
            t, polys = np.tan(x), _derivative_polynomials(TAYLOR_ORDER, 1.0)
            return [np.polynomial.polynomial.polyval(t, polys[n]) / factorial(n) for n in orders]
        if name in ("tanh", "sigmoid", "softplus"):  # tanh⁽ᵏ⁾ = sech² Rₖ(tanh); σ⁽ᵏ⁾(x) =
            y = x if name == "tanh" else x / 2  # tanh⁽ᵏ⁾(x/2)/2ᵏ⁺¹; softplus⁽ⁿ⁾ = σ⁽ⁿ⁻¹⁾
            t, s2, polys = np.tanh(y), _sech2(y), _sech2_polynomials(TAYLOR_ORDER)
            k = {"tanh": lambda n: n, "sigmoid": lambda n: n, "softplus": lambda n: n - 1}[name]
            div = (lambda n: 1.0) if name == "tanh" else (lambda n: 2.0 ** (k(n) + 1))
            return [s2 * np.polynomial.polynomial.polyval(t, polys[k(n)]) / (div(n) * factorial(n))
                    for n in orders]
        if name in ("log", "log1p"):  # unit⁻² (−1)ⁿ⁻¹/n in units (see _divided_differences3)
            return [np.full_like(x, (-1.0) ** (n - 1) / n) for n in orders]
        if name == "arctan":  # sin(nφ) = sin(nπ/2 − nψ), ψ = arctan x, where |x| < 1 (φ near π/2)
            phi, psi, small = np.arctan2(1.0, x), np.arctan(x), np.abs(x) < 1
            turn = {0: lambda t: -np.sin(t), 1: np.cos, 2: np.sin, 3: lambda t: -np.cos(t)}
            return [(-1.0) ** (n - 1) * np.where(small, turn[n % 4](n * psi), np.sin(n * phi)) / n
                    for n in orders]
        if name in ("sqrt", "pow"):  # x^(p−2) (p choose n) in units of x
            p = 0.5 if name == "sqrt" else float(p)
            if not _in_units(fn):  # p = 0 … 8: (p choose n) x^(p−n) up to n = p (no terms past
                # it: hₙ₋₂(u, v) may overflow where they would be 0), 0 for p < 2
                return [np.prod([(p - k) / (k + 1) for k in range(n)]) * x ** (p - n) if n <= p
                        else np.zeros_like(x) for n in range(2, max(int(p), 2) + 1)]
            return [np.full_like(x, np.prod([(p - k) / (k + 1) for k in range(n)])) for n in orders]
    raise NotSupportedError(f"the second divided differences of {fn} are not computed (functions: "
                            f"{', '.join(DivDiff3.SERIES)}, and Python functions built from them); "
                            f"its second derivatives go through the eigenvectors instead")


def _user_derivatives(fn, x, functions, count: int) -> list:
    """[f′(x), f″(x), …] entry by entry, at most ``count`` of them, for a user's md.function:
    the entries of its list [f, f′, f″, …] (``functions[name]`` or ``numpy=``), or its
    ``derivative=`` expression and that differentiated again (``DivDiff3.user_orders``) — as
    many as are known and evaluate."""
    x = np.asarray(x, dtype=float)
    out = []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if fn.deriv is None:
            given = functions.get(fn.name, fn.numpy)
            known = len(given) - 1 - fn.order if isinstance(given, (list, tuple)) else 0
            for k in range(1, min(count, known) + 1):
                value = np.asarray(_impl(fn, fn.order + k, functions)(x), dtype=float)
                out.append(np.broadcast_to(value, x.shape))
            return out
        t, nodes = _user_nodes(fn)
        for node in nodes[:count]:
            try:
                value = interpret(node, {t: x.ravel()}, {"_n": x.size}, numpy_ops(functions))
            except NotSupportedError:  # f⁽ᵏ⁾ holds a function with no values: the ones before
                break
            out.append(np.broadcast_to(value, x.ravel().shape).reshape(x.shape))
    return out


def _user_nodes(fn):
    """(t, [f′(t), f″(t), …]): a user's ``derivative=`` expression of the vector t and its
    derivatives along 1, DivDiff3.user_orders of them (at least f′), built once (by
    library._UserDerivative.derivatives)."""
    return fn.deriv.derivatives(max(1, DivDiff3.user_orders(fn)))


def _user_coefficients(fn, x, functions) -> list:
    """[f⁽ⁿ⁾(x)/n! for n = 2 … N] for a user's md.function, N − 1 the derivatives past f′
    known (at most TAYLOR_ORDER); a NotSupportedError where f″ is not known."""
    from math import factorial
    d = _user_derivatives(fn, x, functions, TAYLOR_ORDER)
    if len(d) < 2:
        raise NotSupportedError(f"the second divided differences of {fn.name} are not computed: give "
                                f"its second derivative (md.function(..., numpy=[f, f′, f″, …]))")
    return [d[n - 1] / factorial(n) for n in range(2, len(d) + 1)]


def _user_scale(c, x):
    """The distance ρ within which a user's f has its Taylor series about x converge fast,
    estimated from its coefficients c = [c₂ … c_N] there (the root test): the largest
    (|cⱼ|/|c_K|)^(1/(K − j)), j < K, c_K the last that is not 0 — |x| for log (cₙ ∝ x⁻ⁿ),
    about N for exp — and at most max(|x|, 1), which is ρ where only c₂ is not 0; 0 where
    every cⱼ before c_K is 0 (u³ at 0: the quotient, and the series only at repeated points)."""
    cap = np.maximum(np.abs(np.asarray(x, dtype=float)), 1.0)
    rho, found = np.zeros(cap.shape), np.zeros(cap.shape, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        for K in range(len(c) - 1, 0, -1):
            last = np.abs(c[K])
            use = ~found & (last > 0) & np.isfinite(last)
            if not np.any(use):
                continue
            safe = np.where(use, last, 1.0)
            est = np.max([np.nan_to_num((np.abs(c[j]) / safe) ** (1.0 / (K - j)), posinf=np.inf)
                          for j in range(K)], axis=0)
            rho, found = np.where(use, est, rho), found | use
    return np.where(found, np.minimum(rho, cap), cap)


def _user_radius(order: int) -> float:
    """The spread (in units of ``_user_scale``) within which a series of f's derivatives up to
    ``order``, its error r^(order − 1) (relative), is taken over the quotient, whose error is ε/r:
    r = ε^(1/order) balances the two (10⁻⁸ with f″ alone, 6·10⁻⁶ with f‴, 1.2·10⁻⁴ with f⁗),
    at most TAYLOR_CLOSE."""
    return min(TAYLOR_CLOSE, float(np.finfo(float).eps) ** (1.0 / order))


def _user_divided(fn, lam, f, functions):
    """F = f[λᵢ, λⱼ] for a user's md.function (values f at λ): the quotient, and near the
    diagonal the Taylor series about the midpoint m, f[m + h, m − h] = Σ f⁽ᵏ⁾(m) h^(k−1)/k!
    over the odd k ≤ K known — where |λᵢ − λⱼ| ≤ ``_user_radius``(K + 2) of f's scale
    (``_user_scale``, from f″ … at λ), the series' error and the quotient's both about
    ε^((K+1)/(K+2)) relative (3·10⁻¹³ with f‴); with f′ alone (K = 1) f′(m) where λᵢ, λⱼ
    agree to CLOSE relative to the larger (error ~10⁻¹⁰)."""
    from math import factorial
    a, b = lam[:, None], lam[None, :]
    gap = a - b
    known = _user_derivatives(fn, lam, functions, TAYLOR_ORDER)
    c = [known[n - 1] / factorial(n) for n in range(2, len(known) + 1)]
    K = len(known) if len(known) % 2 else len(known) - 1  # the highest odd order known
    if K >= 3:
        rho = _user_scale(c, lam)
        close = (np.abs(gap) <= _user_radius(K + 2) * np.minimum(rho[:, None], rho[None, :])) | (gap == 0)
    else:
        close = np.abs(gap) <= CLOSE * np.maximum(np.abs(a), np.abs(b))
    i, j = np.nonzero(close)  # the series only at the close pairs: the diagonal and few more
    d = _user_derivatives(fn, (lam[i] + lam[j]) / 2, functions, K)
    if not d:
        raise NotSupportedError(f"{fn.name}′ has no numeric implementation; pass functions="
                                f"{{{fn.name!r}: [f, f′, …]}} to evaluate it")
    h2 = (gap[i, j] / 2) ** 2
    series, power = d[0].copy(), np.ones_like(h2)
    for k in range(3, K + 1, 2):
        power = power * h2
        series = series + d[k - 1] * power / factorial(k)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (f[:, None] - f[None, :]) / np.where(close, 1.0, gap)
    out[i, j] = series
    return out


def _divided_differences3(fn, lam, functions):
    """Tᵢⱼₖ = f[λᵢ, λⱼ, λₖ], accurate at every gap: the quotient of first divided differences
    (``_divided_differences``, accurate themselves) over the two points farthest apart, and
    where the three lie within TAYLOR_CLOSE of f's scale (``_taylor_scale``: 1 for exp, the
    size of λ for log), the Taylor series about λᵢ, Σₙ f⁽ⁿ⁾(λᵢ)/n! hₙ₋₂(λⱼ − λᵢ, λₖ − λᵢ) with
    hₘ the complete homogeneous polynomials — which is f″/2 where all three agree, and has
    no cancellation where they are close in absolute terms (1e-9 apart for exp). A traced
    callable's by the chain rule of divided differences (``_traced_divided``), refused where
    one with a kink has no second derivative (``_refuse_kinks``)."""
    if not DivDiff3.has_series(fn):
        _taylor_coefficients(fn, lam, functions)  # raises: no closed-form series
    lam = _in_domain(fn, np.asarray(lam, dtype=float))
    _refuse_kinks(fn, lam, functions, order=2)
    F = _divided_differences(fn, lam, functions)
    r = np.arange(lam.size)
    return _divided_differences3_at(fn, lam, F, r[:, None, None], r[None, :, None], r[None, None, :],
                                    functions)


def _divided_differences3_at(fn, lam, F, i, j, k, functions):
    """f[λᵢ, λⱼ, λₖ] for index arrays i, j and k (broadcast together), as
    ``_divided_differences3`` computes it, from the first divided differences F."""
    i, j, k = np.broadcast_arrays(i, j, k)
    if not fn.builtin and _trace(fn) is None:  # a user's md.function: from its derivatives
        c = _user_coefficients(fn, lam, functions)
        x, y, z = lam[i], lam[j], lam[k]
        spread = np.maximum(np.maximum(np.abs(y - x), np.abs(z - x)), np.abs(z - y))
        near = spread <= _user_radius(len(c) + 1) * _user_scale(c, lam)[i]
        return _three_points(fn, x, y, z, F[i, j], F[i, k], F[j, k],
                             lambda where: [cn[i[where]] for cn in c], near)
    if not fn.builtin or fn.name in KINKS:  # (relu(S) itself: the traced relu(u), by its pieces)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return _traced_divided(fn, (lam[i], lam[j], lam[k]), functions)[-1]
    coefficients = []

    def at(where):  # f's Taylor coefficients at λᵢ, for the entries ``where``
        if not coefficients:
            coefficients.extend(_taylor_coefficients(fn, lam, functions))
        return [c[i[where]] for c in coefficients]

    return _three_points(fn, lam[i], lam[j], lam[k], F[i, j], F[i, k], F[j, k], at)


def _three_points(fn, x, y, z, Fij, Fik, Fjk, coefficients, near=None):
    """f[x, y, z] (arrays of one shape) from f[x, y], f[x, z] and f[y, z]: their quotient over
    the pair farthest apart, and the Taylor series about x where the three are within
    TAYLOR_CLOSE of f's scale (``coefficients(where)``: f⁽ⁿ⁾(x)/n! at those entries), or
    where ``near`` says (a user's function: ``_user_divided``)."""
    if fn.builtin and fn.name == "softplus":  # softplus[x, y, z] = softplus[−x, −y, −z]
        # (softplus t = t + softplus(−t)): where the points lie mostly above 0 their F ≈ 1
        # would cancel in the quotient; at −x, −y, −z it is ≈ 0, and relatively accurate
        sign = np.where(x + y + z > 0, -1.0, 1.0)
        x, y, z = sign * x, sign * y, sign * z
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            Fij, Fik, Fjk = (_softplus_divided(p, q) for p, q in ((x, y), (x, z), (y, z)))
        coefficients = (lambda x_: lambda where: _taylor_coefficients(fn, x_[where], {}))(x)
    u, v = y - x, z - x
    w = np.abs(u - v)
    spread = np.maximum(np.maximum(np.abs(u), np.abs(v)), w)
    xz = np.abs(v) >= np.maximum(np.abs(u), w)  # the pair farthest apart: (i, k), (j, k) or (i, j)
    yz = ~xz & (w >= np.abs(u))
    num = np.where(xz, Fij - Fjk, np.where(yz, Fij - Fik, Fik - Fjk))
    den = np.where(xz, x - z, np.where(yz, y - z, x - y))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = np.asarray(num / np.where(den == 0, 1.0, den), dtype=float)
    scale = _taylor_scale(fn)
    if near is not None:
        close = np.array(near, dtype=bool)
    elif scale == "polynomial":
        close = np.ones(spread.shape, dtype=bool)
    elif scale == "one":
        close = spread <= TAYLOR_CLOSE
    elif scale == "pole":
        close = spread <= TAYLOR_CLOSE * np.minimum(1.0, _pole_distance(x))
    else:
        close = spread <= TAYLOR_CLOSE * np.abs(_taylor_unit(fn, x))
    close |= spread == 0
    where = np.nonzero(close)
    if where[0].size:
        c = coefficients(where)
        xx, uu, vv = x[where], u[where], v[where]
        if _in_units(fn):
            unit = _taylor_unit(fn, xx)
            with np.errstate(divide="ignore", invalid="ignore"):
                uu, vv = uu / unit, vv / unit
        h, vm = np.ones_like(uu), np.ones_like(uu)
        with np.errstate(invalid="ignore", over="ignore"):
            total = c[0] * h
            for cn in c[1:]:  # hₘ(u, v) = u hₘ₋₁ + vᵐ
                vm = vm * vv
                h = uu * h + vm
                total = total + cn * h
        out[where] = total * _taylor_prefactor(fn, _taylor_unit(fn, xx)) if _in_units(fn) else total
    return out


def _trace(fn):
    """(node, t) for a Python function traced by md.matrix_function (library._traced): its
    expression of the vector t, entry by entry; relu, |·|, step and sign themselves as the
    trace f(t) (so that relu(S)'s divided differences go by its pieces, as a traced callable's
    with a kink do: ``_kink_compose``); None for any other function."""
    if fn.builtin:
        if fn.name not in KINKS:
            return None
        t = Var("_t", ("_n",), False)
        return Elementwise(fn, t), t
    d = fn.deriv
    node, t = getattr(d, "on_entries", None), getattr(d, "t", None)
    return (node, t) if isinstance(node, Node) and isinstance(t, Node) else None


def _less_cancelled(first: list, second: list):
    """Σ first or Σ second, two sums equal in exact arithmetic, entry by entry the one whose
    terms are smaller in absolute value (Leibniz's rule for a product gh of functions of one
    M, written as GH or as HG: g(x)h[x, y] + g[x, y]h(y) cancels where g(x) ≫ g(y), the other
    form does not)."""
    size = lambda terms: sum(np.abs(t) for t in terms)  # noqa: E731
    return np.where(size(first) <= size(second), sum(first), sum(second))


def _traced_divided(fn, points, functions):
    """f and its divided differences at two points (x, y) — (f(x), f(y), f[x, y]) — or three
    (x, y, z) — (f(x), f(y), f(z), f[x, y], f[y, z], f[x, y, z]) — for a traced callable f,
    by the chain rule of divided differences.

    Why this is exact: for the bidiagonal M with x, y, z on its diagonal and ones above it,
    g(M) is upper triangular with g(x), g(y), g(z) on its diagonal, g[x, y] and g[y, z] above
    it and g[x, y, z] in its corner (Opitz). A traced f is built from u, constants, sums,
    products and functions of the table (library._traced), and f(M) follows its expression
    with matrix operations on such triangular matrices (functions of one M commute): a sum
    adds them, a product multiplies them (Leibniz's rule, (gh)[x, y] = g(x)h[x, y] + g[x, y]h(y)),
    and h(G) of G = g(M) has h[a, b]·g[x, y] above its diagonal and h[a, c]·g[x, y, z] +
    h[a, b, c]·g[x, y]·g[y, z] in its corner (a, b, c = g(x), g(y), g(z)): the chain rule,
    with each table function's own divided differences, accurate at every gap
    (``_exact_divided``, ``_three_points``). Divided differences are smooth in their points,
    so the rounding of a, b and c costs ε relative, never ε/gap: no quotient of close values
    is formed anywhere. Every operation is entry by entry, over arrays of points."""
    node, t = _trace(fn)
    three = len(points) == 3
    zero = np.zeros(np.broadcast(*points).shape)
    width = 6 if three else 3
    memo: dict = {}

    def constant(c):
        return (zero + c,) * len(points) + (zero,) * (width - len(points))

    def compose(g, G):  # g(G), G = (a, b[, c], G12[, G23, G13]), G13 the corner g[x, y, z]
        f = tuple(g.implementation()(v) for v in G[:len(points)])
        if not three:
            return (*f, G[2] * _pair(g, G[0], G[1]))
        a, b, c, g12, g23, g13 = G
        F12, F23, F13 = (_pair(g, p, q) for p, q in ((a, b), (b, c), (a, c)))
        T = _three_points(g, a, b, c, F12, F13, F23,
                          lambda where: _taylor_coefficients(g, a[where], functions))
        return (*f, g12 * F12, g23 * F23, g13 * F13 + g12 * g23 * T)

    def product(G, H):  # GH = HG (functions of one M): of the two, the one that cancels less
        if not three:
            return (G[0] * H[0], G[1] * H[1],
                    _less_cancelled([G[0] * H[2], G[2] * H[1]], [H[0] * G[2], H[2] * G[1]]))
        a, b, c, g12, g23, g13 = G
        p, q, r, h12, h23, h13 = H
        return (a * p, b * q, c * r, _less_cancelled([a * h12, g12 * q], [p * g12, h12 * b]),
                _less_cancelled([b * h23, g23 * r], [q * g23, h23 * c]),
                _less_cancelled([a * h13, g12 * h23, g13 * r], [p * g13, h12 * g23, h13 * c]))

    def go(n):
        if n in memo:
            return memo[n]
        if n is t:  # u itself: M
            out = (*(zero + p for p in points), zero + 1.0) + ((zero + 1.0, zero) if three else ())
        elif isinstance(n, Const):
            out = constant(float(n.value))
        elif isinstance(n, Delta) and n.order == 1:
            out = constant(1.0)
        elif isinstance(n, Sum):
            parts = [(c, go(term)) for c, term in n.terms]
            out = tuple(sum((c * part[m] for c, part in parts), zero) for m in range(width))
        elif isinstance(n, Contract) and all(lab in ((), n.out) for lab in n.labels):
            out = constant(1.0)
            for op in n.operands:
                out = product(out, go(op))
        elif isinstance(n, Elementwise) and n.fn.builtin and n.fn.name in DivDiff3.SERIES:
            out = compose(n.fn, go(n.arg))
        elif isinstance(n, Elementwise) and n.fn.builtin and n.fn.name in KINKS:
            out = _kink_compose(n.fn.name, go(n.arg), three)
        else:
            raise traced_unsupported(n, f"the divided differences of {fn.name} are not computed",
                                     "has no exact divided differences here", "powers")
        memo[n] = out
        return out

    return go(node)


# relu, |·|, step and sign are affine on each side of 0: by the sign c (−1, 0, 1) of their
# argument, the slope and offset of the piece there (at 0 itself value 0 and slope 0, the
# one-sided slope generated code takes too)
KINK_PIECES = {"relu": (lambda c: (c > 0) * 1.0, lambda c: 0.0 * c), "abs": (lambda c: c, lambda c: 0.0 * c),
               "step": (lambda c: 0.0 * c, lambda c: (c > 0) * 1.0), "sign": (lambda c: 0.0 * c, lambda c: c)}


def traced_unsupported(n: Node, doing: str, why: str, others: str, where: str = "in it") -> NotSupportedError:
    """The error for a node of a traced function that a walk over it (divided differences here
    and in generated code, a derivative='s code) has no rule for: what was being done, the
    node, why, and what is supported."""
    what = n.fn if isinstance(n, Elementwise) else type(n).__name__
    return NotSupportedError(f"{doing}: {what} {where} {why} (functions: {', '.join(DivDiff3.SERIES)}, "
                             f"constants, +, ·, {others})")


def _kink_compose(name: str, G: tuple, three: bool) -> tuple:
    """h(G) for a kink h (relu, |·|, step, sign) of G = (a, b[, c], G12[, G23, G13]), as
    ``_traced_divided``'s compose: h[a, b] is the slope of the piece where a and b lie on one
    side (or both at 0), the quotient across (no cancellation: a − b spans 0); h[a, b, c] is 0
    on one side, and where p, r share a side and q lies on another (Δ(q) = h(q) − L(q), L the
    piece of p and r: h[p, r] − h[r, q] = Δ(q)/(r − q)) Δ(q)/((p − q)(r − q)), each factor with
    no cancellation; where a, b and c lie below, at and above 0, Lagrange's Σ h(xₖ)/Πⱼ(xₖ − xⱼ).
    Exact away from the kink; at it the derivative may not exist (``_refuse_kinks``)."""
    h = {"relu": lambda t: np.maximum(t, 0.0), "abs": np.abs, "step": lambda t: (t > 0) * 1.0,
         "sign": np.sign}[name]
    slope, offset = KINK_PIECES[name]
    k = 3 if three else 2
    x, s = G[:k], [np.sign(p) for p in G[:k]]
    f = tuple(h(p) for p in x)

    def pair(i, j):
        same = s[i] == s[j]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(same, slope(s[i]), (f[i] - f[j]) / np.where(same, 1.0, x[i] - x[j]))
    if not three:
        return (*f, G[2] * pair(0, 1))
    a, b, c = x
    ab, bc, ac = s[0] == s[1], s[1] == s[2], s[0] == s[2]
    p, r, q = np.where(ab, a, np.where(bc, b, a)), np.where(ab, b, c), np.where(ab, c, np.where(bc, a, b))
    cp = np.sign(p)
    apart = ~(ab | bc | ac)  # below, at and above 0
    alone = (np.sign(q) != cp) & ~apart
    delta = h(q) - slope(cp) * q - offset(cp)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = np.where(alone, delta / np.where(alone, (p - q) * (r - q), 1.0), 0.0)
        terms = [f[m] / np.where(apart, (x[m] - x[(m + 1) % 3]) * (x[m] - x[(m + 2) % 3]), 1.0)
                 for m in range(3)]
    H123 = np.where(apart, terms[0] + terms[1] + terms[2], out)
    g12, g23, g13 = G[3:]
    return (*f, g12 * pair(0, 1), g23 * pair(1, 2), g13 * pair(0, 2) + g12 * g23 * H123)


def _pair(fn, a, b):
    """f[a, b] for a function of the table, accurate at every gap (``_exact_divided``)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = _exact_divided(fn.name, fn.param, a, b)
    if out is None:
        raise NotSupportedError(f"the divided differences of {fn} are not computed exactly")
    return np.broadcast_to(out, np.broadcast(a, b).shape)


def _divided_differences3_apply(fn, lam, X, Y, functions):
    """M_pc = Σ_q f[λ_p, λ_q, λ_c] X_pq Y_qc in O(n²) memory (``DivDiff3Apply``): for λ_p, λ_c
    apart, f[λ_p, λ_q, λ_c] = (F_pq − F_qc)/(λ_p − λ_c), so that M = G ⊙ ((F ⊙ X)Y − X(F ⊙ Y)),
    G_pc = 1/(λ_p − λ_c); on the pairs within PAIR_CLOSE of f's scale (p = c among them),
    where that quotient loses digits, the sum over q of ``_divided_differences3_at``'s values."""
    if not DivDiff3.has_series(fn):
        _taylor_coefficients(fn, lam, functions)  # raises: no closed-form series
    lam = _in_domain(fn, np.asarray(lam, dtype=float))
    _refuse_kinks(fn, lam, functions, order=2)  # a traced callable with a kink: as DivDiff2
    X, Y = np.asarray(X, dtype=float), np.asarray(Y, dtype=float)
    F = _divided_differences(fn, lam, functions)
    near = _near_pairs(fn, lam)
    gap = lam[:, None] - lam[None, :]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        G = np.where(near, 0.0, 1.0 / np.where(near, 1.0, gap))
        M = G * ((F * X) @ Y - X @ (F * Y))
        if fn.builtin and fn.name == "softplus":  # softplus t = t + softplus(−t): the linear
            # part's second divided differences are 0, so where λ_p + λ_c > 0 the quotient takes
            # F − 1 = −softplus[−λ_p, −λ_q] (≈ 0, relatively accurate) for F ≈ 1, which cancels
            # (a constant added to F leaves (F_pq − F_qc) unchanged)
            F1 = -_softplus_divided(-lam[:, None], -lam[None, :])
            M = np.where(lam[:, None] + lam[None, :] > 0, G * ((F1 * X) @ Y - X @ (F1 * Y)), M)
    p, c = np.nonzero(near)
    q = np.arange(lam.size)[None, :]
    step = max(1, (1 << 22) // max(lam.size, 1))  # T in blocks of ≤ 4M entries: O(n²) memory
    for s in range(0, p.size, step):
        pp, cc = p[s:s + step], c[s:s + step]
        T = _divided_differences3_at(fn, lam, F, pp[:, None], q, cc[:, None], functions)
        M[pp, cc] = np.einsum("kq,kq,qk->k", T, X[pp], Y[:, cc])
    return M


def _near_pairs(fn, lam):
    """The pairs (p, c) whose quotient (F_pq − F_qc)/(λ_p − λ_c) may lose digits: within
    PAIR_CLOSE of f's scale (1 for exp …, |λ| for log and the powers) — p = c among them.
    Apart, the quotient's error is ε(|F_pq| + |F_qc|)/|λ_p − λ_c|: at most 10³ε|F|."""
    gap = np.abs(lam[:, None] - lam[None, :])
    larger = np.maximum(np.abs(lam[:, None]), np.abs(lam[None, :]))
    if _grows(fn):
        larger = np.maximum(larger, float(np.abs(lam).max(initial=0.0)))
    return (gap <= PAIR_CLOSE * np.maximum(larger, 1.0 if _taylor_scale(fn) != "relative" else 0.0)) \
        | (gap == 0)


def _grows(fn) -> bool:
    """Whether F_pq may grow with a third point λ_q far from λ_p and λ_c (powers above 1, and
    Python functions and md.functions, which may hold one): then F_pq − F_qc cancels to ε|λ_q|/|λ_p − λ_c|
    (u³ at {1, 50, 10¹⁰}: 10⁻⁸), and DivDiff3Apply's pairs are near within PAIR_CLOSE of the
    largest |λ|, not of their own."""
    return not fn.builtin or (fn.name == "pow" and fn.param > 1)


class Coincident(EvaluationError):
    """Two eigenvalues (or singular values) coincide where a second derivative through the
    decomposition divides by their gap (``EigGap``)."""


GAP_COINCIDE = 1e-10  # eigenvalues this close, relative to the larger, are one for EigGap


GAP_NEAR = 1e-7  # closer than this, 1/(λⱼ − λᵢ) times a difference loses ε/gap: evaluate takes the limit


def _coinciding(lam, tol: float = GAP_COINCIDE):
    """Pairs (i, j), i ≠ j, of eigenvalues that coincide for the eigenvectors' derivative: within
    ``tol`` of the larger (distinct eigenvalues of 10⁻⁹ are not refused), or within 64ε of the
    largest |λ| (a repeated 0)."""
    gap = np.abs(lam[None, :] - lam[:, None])
    larger = np.maximum(np.abs(lam[None, :]), np.abs(lam[:, None]))
    floor = 64 * np.finfo(float).eps * float(np.abs(lam).max(initial=0.0))
    return (gap <= np.maximum(tol * larger, floor)) & ~np.eye(lam.size, dtype=bool)


def _eigenvalue_gaps(lam, spectra=None, squares=False):
    """G_ij = 1/(λⱼ − λᵢ), 0 on the diagonal; ``Coincident`` where two eigenvalues coincide, as
    the eigenvectors have no derivative there (``evaluate`` then takes the limit where the
    result has one: ``_split_limit``). With ``squares`` λ = σ², the singular vectors' gaps:
    coincidence is σ's (σ₁/σᵢ of 10⁸ puts σᵢ² below 64ε of σ₁², yet σᵢ is resolved)."""
    gap = lam[None, :] - lam[:, None]
    off = ~np.eye(lam.size, dtype=bool)
    values = np.sqrt(np.maximum(lam, 0.0)) if squares else lam
    if lam.size > 1 and np.any(_coinciding(values)):
        raise Coincident("the eigenvectors (or singular vectors) are not differentiable here: "
                         "two eigenvalues (or singular values) coincide, and a second "
                         "derivative through the decomposition needs distinct ones; matdiff "
                         "returns no value silently")
    if spectra is not None and lam.size > 1 and np.any(_coinciding(values, GAP_NEAR)):
        spectra.near = True  # finite, but ε/gap off: evaluate tries the limit (_split_limit)
    return np.where(off, 1.0 / np.where(off, gap, 1.0), 0.0)


def _svd_squares(n: Node) -> bool:
    """Whether n is σ² for the singular values σ of a matrix (the argument of the singular
    vectors' gaps, EigGap(σ²)), or (cσ)² for σ scaled by a scalar c (``_rescaled``)."""
    if not (isinstance(n, Elementwise) and n.fn.builtin and n.fn.name == "pow" and n.fn.param == 2.0):
        return False
    n = n.arg
    if isinstance(n, Sum) and len(n.terms) == 1:
        n = n.terms[0][1]
    elif isinstance(n, Contract) and len(n.operands) == 2 and n.operands[0].shape == ():
        n = n.operands[1]
    return isinstance(n, Svd) and n.part == "values"


def _in_domain(fn, lam):
    """lam, where f is defined at every eigenvalue — log needs λ > 0, a square root or a
    fractional power λ ≥ 0 (−10⁻¹²·max|λ| from rounding counts as 0) — else an
    EvaluationError naming the eigenvalue: f(S) of such an S is not real, and NaN is no answer."""
    name = fn.name if fn.builtin else None
    fractional = name == "pow" and not float(fn.param).is_integer()
    if name == "log1p" and np.any(lam <= -1):
        raise EvaluationError(f"log1p of a symmetric matrix needs eigenvalues > −1, but this one has "
                              f"λ = {float(lam[lam <= -1][0]):.6g}: f(S) is not real there")
    if name not in ("log", "sqrt") and not fractional:
        return lam
    floor = 1e-12 * float(np.abs(lam).max(initial=0.0))
    bad = lam <= 0 if name == "log" else lam < -floor
    if np.any(bad):
        what = {"log": "a logarithm (logm)", "sqrt": "a square root (sqrtm)"}.get(name) or \
            f"the power {fn.param:g}"
        raise EvaluationError(f"{what} of a symmetric matrix needs eigenvalues "
                              f"{'> 0' if name == 'log' else '≥ 0'}, but this one has "
                              f"λ = {float(lam[bad][0]):.6g}: f(S) is not real there")
    return np.maximum(lam, 0.0) if name != "log" else lam


def _at_eigenvalues(fn, lam, functions):
    """f(λ) at the eigenvalues, or an EvaluationError naming one where f is not defined."""
    values = _values_of(fn, 0, lam, functions)
    bad = np.isnan(values) & np.isfinite(lam)
    if np.any(bad):  # a user's f, undefined at an eigenvalue
        raise EvaluationError(f"{fn.name}(S) needs f at each eigenvalue of S, but f is not defined "
                              f"at λ = {float(lam[bad][0]):.6g}")
    return values


def _matrix_function(fn, s, functions):
    lam, u = np.linalg.eigh(s)
    return (u * _at_eigenvalues(fn, _in_domain(fn, lam), functions)) @ u.T


CLUSTER = 1e-11  # eigenvalues (singular values) this close, relative to the larger, are one


def _clusters(values, scale: float) -> list:
    """Index groups of (sorted) values that coincide: neighbours within CLUSTER of the larger,
    or within 64ε of ``scale`` (the largest in magnitude: a repeated 0 computes as ±10⁻¹⁷)."""
    groups, current = [], [0] if len(values) else []
    floor = 64 * np.finfo(float).eps * scale
    for i in range(1, len(values)):
        a, b = float(values[i - 1]), float(values[i])
        if abs(a - b) <= max(CLUSTER * max(abs(a), abs(b)), floor):
            current.append(i)
        else:
            groups.append(current)
            current = [i]
    if current:
        groups.append(current)
    return [g for g in groups if len(g) > 1]


def _shown(values, group) -> float:
    """A repeated value as an error message shows it: the group's mean, 0 within rounding."""
    mean = float(np.mean(values[group]))
    return 0.0 if abs(mean) <= 64 * np.finfo(float).eps * float(np.abs(values).max()) else mean


def _random_orthogonal(k: int, rng):
    q, r = np.linalg.qr(rng.standard_normal((k, k)))
    return q * np.sign(np.diag(r))


def _complement_basis(kept, old, rng, sign: float):
    """Random orthonormal columns, as many as ``old`` has, orthogonal to the columns of
    ``kept``; where they span the space ``old`` spans, turned so that det(oldᵀ new) has
    ``sign`` (so that a null space of one dimension is flipped on one side only)."""
    g = rng.standard_normal(old.shape)
    for _ in range(2):  # projected twice: orthogonal to rounding
        g = g - kept @ (kept.T @ g)
    new = np.linalg.qr(g)[0]
    if kept.shape[1] + old.shape[1] == old.shape[0] and np.linalg.det(old.T @ new) * sign < 0:
        new[:, -1] = -new[:, -1]
    return new


class _Spectra:
    """The decompositions one evaluation uses, each matrix decomposed once for all its parts.

    Eigenvectors at a repeated eigenvalue, and singular vectors at a repeated or zero singular
    value, are not determined by the matrix: any rotation within the repeated group (and, for
    σ = 0, any orthonormal basis of the null spaces, left and right apart) is as good.  Where
    such vectors are used, ``degenerate`` says so; with ``rng`` the parts are computed with
    such a rotation drawn at random, so that a second evaluation shows whether the result
    depends on the choice (then the function is not differentiable there)."""

    def __init__(self, rng=None):
        self.rng, self.memo, self.degenerate, self.near = rng, {}, [], False

    def _cached(self, node, x, compute):
        hit = self.memo.get(node)
        if hit is not None and hit[0] is x:  # the same array (kept alive here): the same values
            return hit[1]
        out = compute(x)
        self.memo[node] = (x, out)
        return out

    def eigh(self, node, x, part: str):
        lam, u, groups = self._cached(node, x, self._eigh)
        if part == "values":
            return lam
        if groups:
            self._note(node, "eigenvalue", [_shown(lam, g) for g in groups], [len(g) for g in groups])
        return u

    def _eigh(self, x):
        lam, u = np.linalg.eigh(x)
        groups = _clusters(lam, float(np.abs(lam).max(initial=0.0)))
        if self.rng is not None and groups:
            u = u.copy()
            for g in groups:
                u[:, g] = u[:, g] @ _random_orthogonal(len(g), self.rng)
        return lam, u, groups

    def svd(self, node, x, part: str, rank: int):
        u, s, v, groups, zero = self._cached(node, x, self._svd)
        if s.size != rank:  # smaller= named the larger dim
            raise EvaluationError(f"{_short(node.arg)} is {x.shape[0]} × {x.shape[1]}, so it has "
                                  f"{s.size} singular values, but its svdvals were declared of "
                                  f"length {D.fmt(node.rank)} = {rank}: smaller= names the dim "
                                  f"that is smaller (or leave it out)")
        if part in ("values", "top"):
            return s if part == "values" else np.asarray(s[0] if s.size else 0.0)
        if zero or groups:
            self._note(node, "singular value", [_shown(s, g) for g in groups], [len(g) for g in groups],
                       zero, any(0 in g for g in groups))
        return {"left": u, "right": v, "top_left": u[:, 0], "top_right": v[:, 0]}[part]

    def _svd(self, x):
        u, s, vt = np.linalg.svd(x, full_matrices=False)
        v = vt.T
        largest = float(s[0]) if s.size else 0.0
        nonzero = s > CLUSTER * largest if largest > 0 else np.zeros(s.shape, bool)
        zero = int(s.size - nonzero.sum())
        groups = [g for g in _clusters(s[nonzero][::-1], largest)]
        r = int(nonzero.sum())  # σ descending: the nonzero ones first
        groups = [sorted(r - 1 - i for i in g) for g in groups]
        if self.rng is not None and (groups or zero):
            u, v = u.copy(), v.copy()
            for g in groups:  # U and V turn together: X = UΣVᵀ is kept
                q = _random_orthogonal(len(g), self.rng)
                u[:, g], v[:, g] = u[:, g] @ q, v[:, g] @ q
            if zero:  # any orthonormal bases of the two null spaces, drawn apart
                u[:, r:] = _complement_basis(u[:, :r], u[:, r:], self.rng, -1.0)
                v[:, r:] = _complement_basis(v[:, :r], v[:, r:], self.rng, 1.0)
        return u, s, v, groups, zero

    def _note(self, node, what, values, counts, zero=0, top=False):
        self.degenerate.append((node, what, values, counts, zero, top))

    def refusal(self, node: Node, finite: bool = True) -> EvaluationError:
        """The error for a result that depends on the choice of eigen- or singular vectors (or,
        not ``finite``, that divides by their coincidence)."""
        parts = []
        for arg, what, values, counts, zero, top in self.degenerate:
            name = _short(arg.arg)
            if what == "eigenvalue":
                said = ", ".join(f"λ = {float(v):.6g} ({c} times)" for v, c in zip(values, counts))
                parts.append(f"{name} has a repeated eigenvalue, {said}")
            else:
                said = [f"σ = {float(v):.6g} ({c} times)" for v, c in zip(values, counts)]
                if zero:
                    said.append(f"σ = 0 ({zero} time{'s' if zero > 1 else ''}: it is rank-deficient)")
                parts.append(f"{name} has a repeated or zero singular value, {', '.join(said)}"
                             + (" (its largest singular value is repeated)" if top else ""))
        eigen = any(what == "eigenvalue" for _, what, *_ in self.degenerate)
        singular = any(what != "eigenvalue" for _, what, *_ in self.degenerate)
        examples = (["the gradient of one eigenvalue at a tie (λ_max at a repeated top eigenvalue)"]
                    if eigen else []) + \
            (["the spectral norm's at a repeated σ₁", "the nuclear norm's at a rank-deficient matrix"]
             if singular else [])
        vectors = " or ".join((["eigenvectors"] if eigen else []) +
                              (["singular vectors"] if singular else []))
        if not finite:
            return EvaluationError(
                f"{'; '.join(dict.fromkeys(parts))}: the {vectors} are not differentiable here, "
                f"and this result, which differentiates them (dividing by σ or by the gaps between "
                f"the values), is not finite; matdiff returns no value silently")
        return EvaluationError(
            f"not differentiable here: {'; '.join(dict.fromkeys(parts))}, and this result depends "
            f"on which {vectors} are chosen for it, as {' or '.join(examples)} does; matdiff "
            f"returns no subgradient silently")


def _short(node: Node) -> str:
    if isinstance(node, Var):
        return node.name
    text = repr(node)
    return text if len(text) <= 40 else "the decomposed matrix"


def _scipy_linalg():
    try:
        import scipy.linalg
    except ImportError:  # pragma: no cover - scipy comes with jax and the linalg extra
        raise NotSupportedError("expm, logm and sqrtm of a general matrix need SciPy: pip install "
                                "'matdiff[linalg]'") from None
    return scipy.linalg


def full_rank_tolerance(shape) -> float:
    """σ_min at or below this times σ_max counts as a rank deficiency (NumPy's matrix_rank)."""
    return max(shape[-2:]) * np.finfo(float).eps


def _pinv(x):
    """X⁺ at full rank: where σ_min ≤ max(n, k)·ε·σ_max the rank is not min(n, k), X⁺ jumps
    under a perturbation, and neither it nor its derivative is a number to stand behind."""
    x = np.asarray(x, dtype=float)
    if not np.all(np.isfinite(x)):
        raise EvaluationError("pinv: the matrix has a NaN or infinite entry")
    u, s, vt = np.linalg.svd(x, full_matrices=False)  # one SVD: the check and X⁺ = VΣ⁻¹Uᵀ
    if np.any(s[..., -1] <= full_rank_tolerance(x.shape) * s[..., 0]):
        rank = int(np.min(np.sum(s > full_rank_tolerance(x.shape) * s[..., :1], axis=-1)))
        raise EvaluationError(
            f"pinv of a rank-deficient matrix: rank {rank} < min{x.shape[-2:]} "
            f"(σ_min/σ_max = {s[..., -1].min() / max(s[..., 0].max(), 1e-300):.1e}); there the "
            f"pseudo-inverse jumps under any perturbation that restores the rank, so matdiff "
            f"evaluates pinv and its derivatives only at full rank; for a truncated pseudo-inverse "
            f"call numpy.linalg.pinv with rcond= yourself")
    return np.swapaxes(vt, -1, -2) / s[..., None, :] @ np.swapaxes(u, -1, -2)


def cholesky(s):
    """The lower Cholesky factor of a symmetric positive-definite s; a matrix that is not
    positive definite is an EvaluationError naming the first leading minor that fails."""
    s = np.asarray(s)
    if not np.all(np.isfinite(s)):
        raise EvaluationError("cholesky: the matrix has a NaN or infinite entry")
    try:
        return np.linalg.cholesky(s)
    except np.linalg.LinAlgError:
        pass
    n = s.shape[-1]
    for k in range(1, n + 1):  # the first leading principal submatrix that is not definite
        try:
            np.linalg.cholesky(s[..., :k, :k])
        except np.linalg.LinAlgError:
            minor = np.linalg.det(s[..., :k, :k])
            raise EvaluationError(
                f"cholesky: the matrix is not positive definite — its leading {k} × {k} minor "
                f"is {np.min(minor):.3g}{', positive only by rounding' if np.min(minor) > 0 else ''}"
                f", and a "
                f"Cholesky factor S = LLᵀ exists only where every leading minor is positive") from None
    raise EvaluationError("cholesky: the matrix is not positive definite")


def phi(x):
    """Φ(x): the lower triangle of x's last two axes with the diagonal halved."""
    return 0.5 * (np.tril(x) + np.tril(x, -1))


def _principal_domain(fn: str, x, derivative: bool) -> None:
    """Refuse X with an eigenvalue on the closed negative real axis for the principal logm
    and sqrtm (sqrtm's value allows 0, its derivative does not), and X with an eigenvalue
    where another general matrix function has a pole or leaves its principal branch
    (``_general_domain``)."""
    if fn == "exp":
        return
    if fn not in ("log", "sqrt"):
        _general_domain(fn, x)
        return
    lam = _eigenvalues(x)
    tol = 1e-12 * float(np.abs(lam).max(initial=0.0))  # relative: logm(10⁻¹⁰⁰X) is logm(X) − 230I
    edge = tol if fn == "log" or derivative else -tol
    bad = lam[(np.abs(lam.imag) <= tol) & (lam.real <= edge)]
    if bad.size:
        name = GENERAL_FUNCTIONS[fn]
        what = "not differentiable here" if fn == "sqrt" and derivative and bad.real.min() > -tol \
            else "not defined here"
        raise EvaluationError(f"{name}(X) is {what}: X has the eigenvalue {bad.real.min():.6g} on "
                              f"the closed negative real axis, where the principal "
                              f"{'logarithm' if fn == 'log' else 'square root'} has no (real, "
                              f"differentiable) value")


# where each general matrix function is not defined, as a test on X's eigenvalues λ (given
# the tolerance t): the poles of tan, tanh and σ (cos λ = 0, cosh λ = 0, 1 + e^−λ = 0), and
# the eigenvalues the principal logarithm inside log1p, softplus and arctan cannot take
_OUTSIDE = {
    "tan": (lambda lam, t: np.abs(np.cos(lam)) <= t, "where cos λ = 0 (a pole of tan)"),
    "tanh": (lambda lam, t: np.abs(np.cosh(lam)) <= t, "where cosh λ = 0 (a pole of tanh)"),
    "sigmoid": (lambda lam, t: np.abs(np.cosh(lam / 2)) <= t, "where 1 + e^(−λ) = 0 (a pole of σ)"),
    "log1p": (lambda lam, t: (np.abs(lam.imag) <= t) & (lam.real <= -1 + t),
              "where 1 + λ is on the closed negative real axis (outside the principal log)"),
    "softplus": (lambda lam, t: (np.abs(np.imag(1 + np.exp(lam))) <= t) & (np.real(1 + np.exp(lam)) <= t),
                 "where 1 + e^λ is on the closed negative real axis (outside the principal log)"),
    "arctan": (lambda lam, t: (np.abs(lam.real) <= t) & (np.abs(lam.imag) >= 1 - t),
               "on the imaginary axis at or beyond ±i (outside arctan's principal branch)"),
}


def _eigenvalues(x):
    """X's eigenvalues, from the diagonal blocks of its block-triangular form by a permutation
    (the strongly connected parts of its nonzero pattern): exact on a triangular X, and as
    accurate as X's own on the block matrices [[X, E], [0, X]] and I ⊗ X of second and batched
    Fréchet derivatives, whose repeated eigenvalues eigvals would spread by √ε."""
    from scipy.sparse.csgraph import connected_components
    x = np.asarray(x)
    count, labels = connected_components(x != 0, directed=True, connection="strong")
    if count == 1:
        return np.linalg.eigvals(x)
    return np.concatenate([np.linalg.eigvals(x[np.ix_(part, part)])
                           for part in (np.flatnonzero(labels == k) for k in range(count))])


def _general_domain(fn: str, x) -> None:
    """Refuse X with an eigenvalue where f has a pole or leaves its principal branch."""
    if fn not in _OUTSIDE:
        return
    lam = _eigenvalues(x)
    test, where = _OUTSIDE[fn]
    with np.errstate(over="ignore", invalid="ignore"):
        bad = lam[test(lam, 1e-12 * max(1.0, float(np.abs(lam).max(initial=0.0))))]
    if bad.size:
        raise EvaluationError(f"{GENERAL_FUNCTIONS[fn]}(X) is not defined here: X has the "
                              f"eigenvalue {_complex_text(bad[0])}, {where}")


def _complex_text(z) -> str:
    z = complex(z)
    return f"{z.real:.6g}" if z.imag == 0 else f"{z.real:.6g} {'+-'[z.imag < 0]} {abs(z.imag):.6g}i"


def _finite(fn: str, out):
    if not np.all(np.isfinite(out)):
        raise EvaluationError(f"{GENERAL_FUNCTIONS[fn]}(X) overflowed: X's eigenvalues are too large "
                              f"for the method (through expm) in float64")
    return out


def _general_function(fn: str, x):
    """expm (scaling and squaring), logm (inverse scaling and squaring), sqrtm (Schur); the
    other analytic functions from those and solves (``funm``)."""
    _principal_domain(fn, x, derivative=False)
    linalg = _scipy_linalg()
    if fn not in ("exp", "log", "sqrt"):  # the others through expm, logm and solves
        return _finite(fn, funm._matfun(fn, np.asarray(x, dtype=float)))
    if fn == "exp":  # past λ ≈ 709 e^λ overflows float64: an error, not inf
        return _finite(fn, linalg.expm(x))
    return np.real_if_close({"exp": linalg.expm, "log": linalg.logm, "sqrt": linalg.sqrtm}[fn](x))


def _frechet(fn: str, x, e):
    """L_f(X, E): SciPy's expm_frechet; the (1, 2) block of logm([[X, E], [0, X]]); the
    solution L of the Sylvester equation sqrtm(X) L + L sqrtm(X) = E."""
    linalg = _scipy_linalg()
    if fn == "exp":
        return linalg.expm_frechet(x, e, compute_expm=False)
    _principal_domain(fn, x, derivative=True)
    if fn not in ("log", "sqrt"):  # the (1, 2) block of f([[X, sE], [0, X]]), over s
        return _finite(fn, funm._matfun(fn, np.asarray(x, dtype=float), np.asarray(e, dtype=float)))
    if fn == "log":  # E scaled to 10⁻³‖X‖: then SciPy's error estimate stays quiet (and small)
        n, s = x.shape[0], 1e-3 * np.linalg.norm(x) / max(np.linalg.norm(e), 1e-300)
        block = np.block([[x, s * e], [np.zeros_like(x), x]])
        return np.real_if_close(linalg.logm(block)[:n, n:] / s)
    root = np.real_if_close(linalg.sqrtm(x))
    return linalg.solve_sylvester(root, root, e)


def numpy_ops(functions: dict, spectra: _Spectra | None = None) -> dict:
    """NumPy's operation for each node type; ``spectra`` keeps the decompositions (by default
    a new one, with no rotation)."""
    spectra = spectra if spectra is not None else _Spectra()

    def elementwise(n, a, s):
        impl = n.fn.implementation()
        if impl is None:
            impl = _impl(n.fn, n.fn.order, functions)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out = np.asarray(impl(a[0]), dtype=float)
        if out.shape != np.shape(a[0]):
            raise EvaluationError(f"the implementation of {n.fn} returned shape {out.shape} for "
                                  f"an argument of shape {np.shape(a[0])}; an element-wise "
                                  f"function keeps its argument's shape")
        return out

    return {
        Const: lambda n, a, s: np.asarray(n.value),
        Delta: lambda n, a, s: _materialise(n, s),
        Basis: lambda n, a, s: _basis(n, s),
        Contract: lambda n, a, s: contract_with_deltas(n, a, s, _np_einsum, np.zeros),
        Sum: lambda n, a, s: (sum(c * v for (c, _), v in zip(n.terms, a)) if n.terms
                              else np.zeros([D.resolve(d, s) for d in n.shape])),
        Elementwise: elementwise,
        Softmax: lambda n, a, s: _softmax(a[0], n.axis),
        LogSumExp: lambda n, a, s: _logsumexp(a[0], n.axis),
        Inv: lambda n, a, s: np.linalg.inv(a[0]),
        Pinv: lambda n, a, s: _pinv(a[0]),
        Cholesky: lambda n, a, s: cholesky(a[0]),
        Phi: lambda n, a, s: phi(a[0]),
        Det: lambda n, a, s: np.asarray(np.linalg.det(a[0])),
        LogDet: lambda n, a, s: _logdet(a[0]),
        ScalarFn: lambda n, a, s: _scalar_fn(n, a[0], functions),
        Reshape: lambda n, a, s: np.reshape(a[0], [D.resolve(d, s) for d in n.shape]),
        Eigh: lambda n, a, s: spectra.eigh(Eigh("values", n.arg), a[0], n.part),
        MatFn: lambda n, a, s: _matrix_function(n.fn, a[0], functions),
        DivDiff: lambda n, a, s: _divided_differences(n.fn, a[0], functions),
        DivDiff3: lambda n, a, s: _divided_differences3(n.fn, a[0], functions),
        DivDiff3Apply: lambda n, a, s: _divided_differences3_apply(n.fn, a[0], a[1], a[2], functions),
        EigGap: lambda n, a, s: _eigenvalue_gaps(a[0], spectra, _svd_squares(n.arg)),
        DivDiff2: lambda n, a, s: _second_divided_differences(n.args[0], a[0], a[1], functions),
        Svd: lambda n, a, s: spectra.svd(Svd("values", n.rank, n.arg), a[0], n.part,
                                         min(np.shape(a[0])) if n.rank is None else D.resolve(n.rank, s)),
        Funm: lambda n, a, s: _general_function(n.fn, a[0]),
        Frechet: lambda n, a, s: _frechet(n.args[0], a[0], a[1]),
        _OffDiagonal: lambda n, a, s: np.where(np.eye(len(a[0]), dtype=bool), 0.0, a[0]),
        _Complementary: lambda n, a, s: np.asarray(float(a[0].shape[0] > a[0].shape[1])),
    }


MAX_BYTES = 4 * 2 ** 30  # the largest array evaluate builds, unless the caller says otherwise


def _check_memory(root: Node, sizes: dict, limit: int) -> None:
    """Refuse, before any work, an evaluation whose result or an intermediate array would
    take more than ``limit`` bytes (the Hessian of sum(X ⊙ X) for a 1000 × 1000 X is 8 TB)."""
    seen, stack = set(), [root]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        entries = prod(D.resolve(d, sizes) for d in n.shape)
        if entries * 8 > limit:
            what = "the result" if n is root else f"an intermediate {D.fmt_shape(n.shape)} array"
            raise EvaluationError(
                f"{what} would have {entries:,} entries ({_bytes(entries * 8)}), over the limit "
                f"of {_bytes(limit)}; for a Hessian, md.hvp(f, x, v) gives its product with a "
                f"vector without building it; or raise the limit with evaluate(..., max_bytes=…)")
        stack.extend(_inputs(n))


def _bytes(b: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if b < 1024 or unit == "PiB":
            return f"{b:.3g} {unit}" if unit != "bytes" else f"{int(b)} bytes"
        b /= 1024


CHOICE_TOLERANCE = 1e-8  # a result that moves this much (relative) with the vectors chosen is refused


SCALE_FROM = 128  # rescale a decomposition whose matrix's largest entry is below 2⁻¹²⁸ or above 2¹²⁸


def _scaled_singular(node: Node, arrays: dict) -> Node:
    """node, computed with the singular values of each matrix X it decomposes through the
    singular vectors (``EigGap``) scaled by 2ᵏ, k = −the exponent of max|X|, where max|X| is
    below 2⁻¹²⁸ or above 2¹²⁸: the second derivative multiplies up to three singular values
    before dividing by σⱼ² − σᵢ², which underflows (or overflows) where σ is below 10⁻¹⁰⁰
    (above 10¹⁰⁰) though the result is representable (``_rescaled``); and so the eigenvalues
    of each matrix it decomposes through the eigenvectors (Σwᵢλᵢ³'s Hessian, λ² over λⱼ − λᵢ)."""
    scales = {}
    for m in _singular_gap_matrices(node):
        top = float(np.abs(np.asarray(arrays.get(m, 0.0), float)).max(initial=0.0))
        if np.isfinite(top) and top > 0:
            k = -int(np.frexp(top)[1])
            if abs(k) >= SCALE_FROM:
                scales[m] = max(-1000, min(1000, k))
    if not scales:
        return node
    return _rescaled(node, {m: (lambda x, d, k=k: Sum(((2.0 ** (k if d > 0 else -k), x),), x.shape))
                           for m, k in scales.items()})


def _singular_gap_matrices(node: Node) -> list:
    """The variables X whose singular vectors' gaps (EigGap(σ²)) node divides by, and the
    variables S whose eigenvectors' gaps (EigGap(λ)) it divides by: Σwᵢλᵢ³'s Hessian multiplies
    λ² before dividing by λⱼ − λᵢ, which underflows below 10⁻¹⁵⁴ (overflows above 10¹⁵⁴)."""
    return list(dict.fromkeys(
        [g.arg.arg.arg for g in walk(node) if isinstance(g, EigGap) and _svd_squares(g.arg)
         and isinstance(g.arg.arg, Svd) and isinstance(g.arg.arg.arg, Var)] +
        [g.arg.arg for g in walk(node) if isinstance(g, EigGap) and isinstance(g.arg, Eigh)
         and isinstance(g.arg.arg, Var)]))


def _rescaled(node: Node, matrices: dict, rule=None) -> Node:
    """node with the singular values σ (and σ₁), or the eigenvalues, of each matrix X of
    ``matrices`` scaled by c, a power of 2 (``matrices[X](x, d)``: x times c for d > 0, times
    1/c for d < 0, exactly), each node carrying its degree d in σ — σ: 1, σᵖ for an integer p:
    p d, a product: the sum of its factors', a sum: its terms' where they agree, EigGap(λ):
    −λ's, ``rule(n, degrees)`` for
    other node types (None: not homogeneous; (0, kept): n takes the children ``kept`` marks as
    they are, scale-free, and the others scaled back), U, V, X and what does not hold σ: 0 —
    and scaled back by c⁻ᵈ (one factor c^∓1 at a time, so that none overflows) where it meets
    a sum of other degrees, any other operation, another matrix's σ, or the result.  Where
    nothing underflows or overflows the values are those of node, bit for bit (every scaling
    is exact)."""
    new, degree, owner, back = {}, {}, {}, {}

    def unscaled(n):  # new[n] scaled back to degree 0
        d = degree[n]
        if d == 0:
            return new[n]
        if n not in back:
            x = new[n]
            for _ in range(abs(d)):
                x = matrices[owner[n]](x, -d)
            back[n] = x
        return back[n]

    for n in _children_first(node):
        kids = list(n.children)
        if n.children and n.children[0] in matrices and (isinstance(n, Svd) and n.part in ("values", "top")
                                                         or isinstance(n, Eigh) and n.part == "values"):
            new[n], degree[n], owner[n] = matrices[n.arg](n, 1), 1, n.arg
            continue
        owners = {owner[c] for c in kids if degree[c] != 0}
        d, degrees = None, [degree[c] for c in kids]
        if len(owners) <= 1:
            if isinstance(n, Elementwise) and n.fn.builtin and n.fn.name == "pow" \
                    and float(n.fn.param).is_integer():
                d = int(n.fn.param) * degrees[0]
            elif isinstance(n, Contract):
                d = sum(degrees)
            elif isinstance(n, Sum):
                d = degrees[0] if len(set(degrees)) == 1 else (0 if not kids else None)
            elif isinstance(n, EigGap):
                d = -degrees[0]
            elif isinstance(n, Reshape):
                d = degrees[0]
            elif rule is not None and owners:
                d = rule(n, degrees)
            elif not owners:
                d = 0
        if isinstance(d, tuple):  # some children read as they are (their scale cancels)
            children, d = [new[c] if kept else unscaled(c) for c, kept in zip(kids, d[1])], d[0]
        elif d is None:  # another operation, or degrees (matrices) that mix: scaled back first
            children, d = [unscaled(c) for c in kids], 0
        else:
            children = [new[c] for c in kids]
        new[n] = n if all(a is b for a, b in zip(children, kids)) else n.with_children(children)
        degree[n] = d
        owner.update({n: next(iter(owners))} if owners else {})
    return unscaled(node)


def _children_first(root: Node) -> list:
    """The nodes below root, each once, every one after its operands."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        n, done = stack.pop()
        if done:
            order.append(n)
        elif n not in seen:
            seen.add(n)
            stack.append((n, True))
            stack.extend((c, False) for c in n.children if c not in seen)
    return order


# --------------------------------------------------------------------------- singular-value pairs


class _OffDiagonal(Unary):
    """A square matrix with its diagonal set to 0 (a diagonal that is not finite too): the pair
    coefficients of ``_singular_divided``, 0 on the diagonal as the gaps EigGap are."""

    fields = ("arg",)

    @staticmethod
    def _shape(arg):
        return arg.shape


class _Complementary(Unary):
    """1 where the orthonormal columns ``arg`` (singular vectors U or V) have a complement (fewer
    columns than rows), 0 where they span the space: (I − UUᵀ)Y is then 0, and
    ``_singular_divided`` leaves out its two terms, Y − UUᵀY, each of the size of Y."""

    fields = ("arg",)

    @staticmethod
    def _shape(arg):
        return ()


PAIR_LABELS = 6  # at most this many summed labels in a term whose pair coefficients are combined


def _flat_factors(c: Contract, fresh: list) -> tuple:
    """(coefficient, operands, labels) of the product c with its nested products (and scaled
    single terms) written out as its own factors, their summed labels renamed apart from
    ``fresh[0]`` on."""
    coef, ops, labs = 1.0, [], []
    for op, lab in zip(c.operands, c.labels):
        while isinstance(op, Sum) and len(op.terms) == 1:
            coef, op = coef * op.terms[0][0], op.terms[0][1]
        if not isinstance(op, Contract):
            ops.append(op)
            labs.append(tuple(lab))
            continue
        inner, inner_ops, inner_labs = _flat_factors(op, fresh)
        names = dict(zip(op.out, lab))
        for il in inner_labs:
            for x in il:
                if x not in names:
                    names[x], fresh[0] = fresh[0], fresh[0] + 1
        coef *= inner
        ops.extend(inner_ops)
        labs.extend(tuple(names[x] for x in il) for il in inner_labs)
    return coef, ops, labs


def _canonical(ops, labs, fixed: dict):
    """A key equal for two products of the same factors whose labels differ only in the names
    of the summed ones (``fixed`` names the others); None where there are too many to try."""
    inner = sorted({x for lab in labs for x in lab} - fixed.keys())
    if len(inner) > PAIR_LABELS:
        return None
    best = None
    for order in itertools.permutations(range(len(inner))):
        names = {**fixed, **{x: (1, k) for x, k in zip(inner, order)}}
        key = tuple(sorted((op.skey, tuple(names[x] for x in lab)) for op, lab in zip(ops, labs)))
        best = key if best is None or key < best else best
    return best


def _sigma_atom(op: Node, sigma: Node):
    """("pow", k) for σᵏ (k an integer), ("fn", f) for f(σ), f of the table with divided
    differences exact at every gap, σ the singular values; else None."""
    if op is sigma:
        return ("pow", 1)
    if isinstance(op, Elementwise) and op.arg is sigma and op.fn.builtin:
        if op.fn.name == "pow":
            k = float(op.fn.param)
            return ("pow", int(k)) if k.is_integer() and 0 < abs(k) <= 8 else None
        probe = np.array([[0.5, 2.0]])  # f has a closed form of f[a, b]
        if op.fn.name in DivDiff3.SERIES and _exact_divided(op.fn.name, op.fn.param, probe, probe.T) \
                is not None:
            return ("fn", op.fn)
    return None


def _projection_pairs(terms: list) -> dict:
    """{term index: U} for pairs of terms c·Y and −c·UUᵀY (UUᵀ: two factors U, the same
    singular vectors, whose column label nothing else carries), U singular vectors of X that
    span the space where X is square: both are multiplied by ``_Complementary(U)``, 0 there."""
    keys, flagged = {}, {}
    for k, (c, ops, labs, out) in enumerate(terms):
        if ops is not None:
            keys.setdefault(_canonical(ops, labs, {x: (0, i) for i, x in enumerate(out)}), []).append(k)
    for k, (c, ops, labs, out) in enumerate(terms):
        if ops is None or k in flagged:
            continue
        count = {}
        for lab in labs:
            for x in lab:
                count[x] = count.get(x, 0) + 1
        for i, j in itertools.combinations(range(len(ops)), 2):
            u = ops[i]
            if not (ops[j] is u and isinstance(u, Svd) and u.part in ("left", "right")):
                continue
            col = labs[i][1]
            if not (labs[j][1] == col
                    and count[col] == 2 and col not in out and col not in (labs[i][0], labs[j][0])):
                continue
            a, b = labs[i][0], labs[j][0]
            if a == b:
                continue
            rest_ops = [o for m, o in enumerate(ops) if m not in (i, j)]
            rest_labs = [lab for m, lab in enumerate(labs) if m not in (i, j)]
            if b in out and a in out:
                rest_ops.append(Delta(u.shape[0], 2))
                rest_labs.append((a, b))
            else:
                old, new = (b, a) if b not in out else (a, b)
                rest_labs = [tuple(new if x == old else x for x in lab) for lab in rest_labs]
            key = _canonical(rest_ops, rest_labs, {x: (0, i) for i, x in enumerate(out)})
            partner = next((m for m in keys.get(key, ()) if m not in flagged and m != k
                            and terms[m][0] == -c), None) if key is not None else None
            if partner is not None:
                flagged[k] = flagged[partner] = u
                break
    return flagged


def _gap_groups(terms: list) -> tuple:
    """The terms that divide by the singular vectors' gaps, G_PQ = 1/(σ_Q² − σ_P²), in groups of
    one product R_PQ (up to the names of summed labels; P and Q turned where G's labels are, G
    antisymmetric) times c·u(σ_P)·v(σ_Q), u and v products of powers and functions of σ:
    {(G, key): [(k, sign·c, u atoms, v atoms, R factors, R labels, (P, Q), out)]}."""
    groups = {}
    for k, (c, ops, labs, out) in enumerate(terms):
        if ops is None:
            continue
        gaps = [m for m, o in enumerate(ops) if isinstance(o, EigGap)]
        if len(gaps) != 1 or not _svd_squares(ops[gaps[0]].arg) or not isinstance(ops[gaps[0]].arg.arg, Svd):
            continue
        g = ops[gaps[0]]
        sigma = g.arg.arg
        p, q = labs[gaps[0]]
        if p == q or p in out or q in out:
            continue
        atoms, rest_ops, rest_labs = {p: [], q: []}, [], []
        for m, (o, lab) in enumerate(zip(ops, labs)):
            if m == gaps[0]:
                continue
            atom = _sigma_atom(o, sigma) if len(lab) == 1 and lab[0] in (p, q) else None
            if atom is not None:
                atoms[lab[0]].append(atom)
            else:
                rest_ops.append(o)
                rest_labs.append(lab)
        fixed = {x: (0, i) for i, x in enumerate(out)}
        turns = []
        for sign, (P, Q) in ((1.0, (p, q)), (-1.0, (q, p))):
            key = _canonical(rest_ops, rest_labs, {**fixed, P: (2, 0), Q: (2, 1)})
            if key is not None:
                turns.append((key, sign, P, Q))
        if not turns:
            continue
        key, sign, P, Q = min(turns, key=lambda t: t[0])
        groups.setdefault((g, key), []).append((k, sign * c, atoms[P], atoms[Q], rest_ops, rest_labs, (P, Q),
                                                out))
    return groups


def _cancels_at_ties(members) -> bool:
    """Whether N(x, y) = Σ c u(x) v(y) of a group's members vanishes at x = y identically (its
    monomials' coefficients sum to 0): the pair coefficient N/(y² − x²) is then smooth."""
    total = {}
    for _, c, u, v, *_ in members:
        power = sum(k for kind, k in u + v if kind == "pow")
        fns = tuple(sorted(repr(f) for kind, f in u + v if kind == "fn"))
        total[power, fns] = total.get((power, fns), 0.0) + c
    scale = max(abs(m[1]) for m in members)
    return len(members) > 1 and all(abs(t) <= 1e-12 * scale for t in total.values())


def _pair_coefficients(members, lam2: Node) -> Node:
    """K_PQ = Σ c u(σ_P) v[σ_P, σ_Q] / (σ_P + σ_Q), 0 on the diagonal: a group's Σ c u(σ_P) v(σ_Q)
    over σ_Q² − σ_P² where it vanishes at σ_P = σ_Q (``_cancels_at_ties``), subtracting
    N(σ_P, σ_P) = 0: v[x, y] by the product rule of divided differences, each factor's exact at
    every gap (DivDiff), 1/(σ_P + σ_Q) as 1/t²[σ_P, σ_Q]: no difference over a small gap, and
    the limit at a tie (Lewis–Sendov's (f′(σᵢ) ∓ f′(σⱼ))/(σᵢ ∓ σⱼ) terms, exactly)."""
    sigma, square = lam2.arg, lam2.fn
    r = sigma.shape[0]

    def power(k):
        return sigma if k == 1 else Elementwise(dataclasses.replace(square, param=float(k)), sigma)

    def value(atom):
        return power(atom[1]) if atom[0] == "pow" else Elementwise(atom[1], sigma)

    def divided(atom):
        if atom == ("pow", 1):
            return None  # t[x, y] = 1
        fn = dataclasses.replace(square, param=float(atom[1])) if atom[0] == "pow" else atom[1]
        return DivDiff(fn, sigma)

    between = Elementwise(dataclasses.replace(square, param=-1.0), DivDiff(square, sigma))  # 1/(x + y)
    terms = []
    for _, c, u, v, *_ in members:
        k = sum(a[1] for a in v if a[0] == "pow")
        factors = ([("pow", k)] if k else []) + [a for a in v if a[0] == "fn"]
        for i, atom in enumerate(factors):  # (ab)[x, y] = a[x, y] b(y) + a(x) b[x, y]
            ops = [value(a) for a in u + factors[:i]] + [value(a) for a in factors[i + 1:]]
            labs = [(0,)] * (len(u) + i) + [(1,)] * (len(factors) - i - 1)
            dd = divided(atom)
            ops, labs = ops + ([dd] if dd is not None else []) + [between], \
                labs + ([(0, 1)] if dd is not None else []) + [(0, 1)]
            terms.append((c, Contract(tuple(ops), tuple(labs), (0, 1))))
    return _OffDiagonal(Sum(tuple(terms), (r, r)))


def _singular_terms(n: Sum) -> Sum:
    """The sum n with its terms through singular vectors combined where they cancel
    (``_singular_divided``)."""
    fresh = [10 ** 6]
    terms = []
    for c, t in n.terms:
        if isinstance(t, Contract) and any(isinstance(x, (EigGap, Svd)) for x in walk(t)):
            inner, ops, labs = _flat_factors(t, fresh)
            terms.append((c * inner, ops, labs, tuple(t.out)))
        else:
            terms.append((c, None, None, None))
    flagged = _projection_pairs(terms)
    groups = {key: ms for key, ms in _gap_groups(terms).items() if _cancels_at_ties(ms)}
    if not flagged and not groups:
        return n
    grouped = {m[0] for ms in groups.values() for m in ms}
    out = []
    for k, (c, t) in enumerate(n.terms):
        if k in flagged:
            labels = tuple(range(t.ndim))
            out.append((c, Contract((_Complementary(flagged[k]), t), ((), labels), labels)))
        elif k not in grouped:
            out.append((c, t))
    for (g, _), members in groups.items():
        _, _, _, _, ops, labs, pq, axes = members[0]
        K = _pair_coefficients(members, g.arg)
        out.append((1.0, Contract(tuple(ops) + (K,), tuple(labs) + (pq,), axes)))
    return Sum(tuple(out), n.shape)


@functools.lru_cache(maxsize=256)
def _singular_divided(node: Node) -> Node:
    """node with each second derivative through singular vectors written as Lewis and Sendov
    write it: the terms that divide by the gaps σⱼ² − σᵢ² (EigGap(σ²)) and cancel at a tie, as
    one product with the pair coefficients in exact divided differences of σ
    (``_pair_coefficients``: their difference over a gap of 10⁻⁹ was √ε off, and at a tie took
    the limit); and the pairs of terms Y − UUᵀY of (I − UUᵀ)Y, 0 where U spans the space
    (X square, or V of a tall X), multiplied by 0 there (``_Complementary``): each of the size
    of Y, they cancelled to ε‖Y‖ (εσ₁/σₙ relative, for ‖X‖_*'s (I − UUᵀ)EVΣ⁻¹Vᵀ)."""
    if not any(isinstance(x, EigGap) and _svd_squares(x.arg) for x in walk(node)) and \
            not any(isinstance(x, Svd) and x.part in ("left", "right") for x in walk(node)):
        return node
    new = {}
    for n in _children_first(node):
        kids = [new[c] for c in n.children]
        m = n if all(a is b for a, b in zip(kids, n.children)) else n.with_children(kids)
        new[n] = _singular_terms(m) if isinstance(m, Sum) and m.terms else m
    return new[node]


def interpret_checked(node: Node, arrays: dict, sizes: dict, functions: dict, split: bool = True):
    """``interpret`` with NumPy's operations, refusing a result that depends on a choice of
    eigen- or singular vectors (``_refuse_choices``), and taking the limit of a second
    derivative through a decomposition at coinciding eigenvalues where it has one
    (``_split_limit``): evaluate's and md.check's evaluation."""
    if split:
        node = _scaled_singular(_singular_divided(node), arrays)
    spectra = _Spectra()
    try:
        out = interpret(node, arrays, sizes, numpy_ops(functions, spectra))
    except Coincident as e:
        if not split:
            raise
        if _tie_terms_cancel(node, arrays, sizes, functions) is False:  # no limit: no value
            raise _no_limit(node) from None
        return _split_limit(node, arrays, sizes, functions, e)
    if spectra.degenerate:
        _refuse_choices(node, out, arrays, sizes, functions, spectra)
    if spectra.near and split:  # gaps below GAP_NEAR: the limit is more accurate, where it exists
        if _tie_terms_cancel(node, arrays, sizes, functions) is False:  # it does not: the formula
            return out
        try:
            return _split_limit(node, arrays, sizes, functions, None)
        except EvaluationError:  # no limit (λ_max's Hessian near a tie): the formula's value
            return out
    return out


SPLIT = 1e-4  # the relative spread _split_limit gives a repeated eigenvalue (and then twice that)
SPLIT_AGREE = 1e-5  # the two estimates must agree this well (relative) for a limit to exist


def _scaled_variable(m: Node):
    """(V, c) where m is the variable V times a constant c (S, S/2), else None."""
    if isinstance(m, Var):
        return m, 1.0
    if isinstance(m, Sum) and len(m.terms) == 1 and isinstance(m.terms[0][1], Var) and m.terms[0][0] != 0:
        return m.terms[0][1], float(m.terms[0][0])
    return None


def _decomposed_variables(node: Node):
    """The variables whose eigenvalue (or singular value) gaps node divides by, each with the
    decomposition ("eigh" or "svd") and the constant c of the matrix decomposed, cV; None where
    a gap is of a matrix that is not a multiple of a variable."""
    found = {}
    for x in walk(node):
        if isinstance(x, EigGap):
            lam = x.arg
            args = {c.arg for c in walk(lam) if isinstance(c, Svd)}
            eigen = {c for c in walk(lam) if isinstance(c, Eigh)}  # λ, or λ scaled (_rescaled)
            kind = "eigh" if isinstance(lam, Eigh) or (len(eigen) == 1 and not args) else "svd"
            m = next(iter(eigen)).arg if kind == "eigh" else (next(iter(args)) if len(args) == 1 else None)
            scaled = _scaled_variable(m) if m is not None else None
            if scaled is None or found.get(scaled[0], (kind, scaled[1])) != (kind, scaled[1]):
                return None
            found[scaled[0]] = (kind, scaled[1])
    return found or None


def _split_direction(kind: str, m):
    """A direction P that splits each group of coinciding eigenvalues (singular values) of m,
    moving nothing else: U diag(p) Uᵀ (U diag(p) Vᵀ), p spread evenly within each group (above
    0 for a group of zero singular values); and the spread the others leave room for."""
    if kind == "eigh":
        lam, u = np.linalg.eigh(m)
        v = u
    else:
        u, lam, vt = np.linalg.svd(m, full_matrices=False)
        v = vt.T
    together = _coinciding(np.asarray(lam, float), GAP_NEAR)
    p = np.zeros(lam.size)
    done = np.zeros(lam.size, dtype=bool)
    scale = float(np.abs(lam).max(initial=0.0)) or 1.0
    room = np.inf
    for i in range(lam.size):
        if done[i] or not together[i].any():
            continue
        group = np.flatnonzero(together[i] | (np.arange(lam.size) == i))
        done[group] = True
        zero = kind == "svd" and abs(float(lam[group].mean())) <= GAP_COINCIDE * scale
        offsets = np.arange(1.0, group.size + 1) if zero else np.arange(group.size) - (group.size - 1) / 2
        p[group] = offsets
        others = np.delete(lam, group)
        if others.size:
            room = min(room, float(np.abs(others - lam[group].mean()).min()) / (4 * group.size))
    return (u * p) @ v.T, min(SPLIT * scale, room)


def _split_limit(node, arrays, sizes, functions, refusal):
    """A second derivative through a decomposition where eigenvalues (singular values) coincide:
    the eigenvectors have no derivative there, yet the result may have a limit (the Hessian of
    aᵀexpm(S)a at S = I does: a smooth function of a symmetric matrix is twice differentiable
    at any S). It is evaluated at M ± hP, P splitting each group of coinciding values, for
    h = δ and 2δ; the averages c(h) = H(S) + O(h²) agree where the limit exists (they grow as
    1/h where it does not: the Hessian of λ_max at a repeated top eigenvalue) and give it by
    Richardson's extrapolation, (4c(δ) − c(2δ))/3, to about 10⁻¹⁰ relative."""
    found = _decomposed_variables(node)
    refusal = refusal or EvaluationError("no limit")
    if found is None:
        raise refusal
    directions = {}
    for v, (kind, c) in found.items():  # split cV's values; V moves by that over c
        direction, room = _split_direction(kind, c * arrays[v])
        directions[v] = (direction / c, room)
    delta = min(h for _, h in directions.values())
    if not delta > 0:
        raise refusal

    def average(h):
        total = 0
        for sign in (1.0, -1.0):
            moved = dict(arrays)
            for v, (direction, _) in directions.items():
                moved[v] = arrays[v] + sign * h * direction
                if v.symmetric:
                    moved[v] = (moved[v] + moved[v].T) / 2
            try:
                total = total + np.asarray(interpret_checked(node, moved, sizes, functions, split=False),
                                           dtype=float)
            except Coincident:
                raise refusal from None
        return total / 2

    near, far = average(delta), average(2 * delta)
    scale = max(float(np.abs(near).max(initial=0.0)), float(np.abs(far).max(initial=0.0)), 1e-300)
    if not (np.all(np.isfinite(near)) and np.all(np.isfinite(far))) or \
            float(np.abs(near - far).max(initial=0.0)) > SPLIT_AGREE * scale:
        raise _no_limit(node) from None
    return (4 * near - far) / 3


def _no_limit(node) -> EvaluationError:
    """The error for a second derivative through a decomposition that has no limit where its
    eigenvalues (singular values) coincide."""
    found = _decomposed_variables(node)
    names = ", ".join(v.name for v in found) if found else "the decomposed matrix"
    return EvaluationError(f"the eigenvectors (or singular vectors) are not differentiable here: "
                           f"two eigenvalues (or singular values) of {names} coincide, and this "
                           f"second derivative has no limit there (it grows as they split "
                           f"apart), as the Hessian of one eigenvalue at a tie does; matdiff "
                           f"returns no value silently")



def _merged(values):
    """values (sorted) with each run that coincides for the eigenvectors' derivative within
    GAP_NEAR (``_coinciding``) set to its first member, exactly: one value per run."""
    if values.size < 2:
        return values
    together = _coinciding(np.asarray(values, float), GAP_NEAR) | np.eye(values.size, dtype=bool)
    return values[np.argmax(together, axis=1)]


class _MergedSpectra(_Spectra):
    """The decompositions with each run of nearly coinciding values made one (``_merged``) and
    the vectors kept: the point of the tie that ``_tie_terms_cancel`` looks at."""

    def _eigh(self, x):
        lam, u, groups = super()._eigh(x)
        return _merged(lam), u, groups

    def _svd(self, x):
        u, s, v, groups, zero = super()._svd(x)
        return u, _merged(s), v, groups, zero


TIE_CANCEL = 64  # the tie terms cancel where they sum to within this many ε of their sizes


def _tie_terms_cancel(node, arrays, sizes, functions):
    """Whether a second derivative through eigenvectors (singular vectors) near or at a tie has
    a limit there, decided by its structure rather than by the size of its terms.  The result R
    is affine in G = EigGap(λ) (1/(λⱼ − λᵢ)); its part linear in the tie pairs' gaps,
    L(T) = Σ_ij T_ij ∂R/∂G_ij, is evaluated at the tie itself (each run of nearly coinciding
    values made one, ``_MergedSpectra``, the vectors kept) for T antisymmetric (±1 on the tie
    pairs, as G is) and symmetric (1).  The terms that diverge as 1/gap cancel where
    |L(T_anti)| ≤ 64ε |L(T_sym)| (equal weights on the tie, f′(λᵢ) = f′(λⱼ) there: the limit
    exists); otherwise (unequal weights, λ_max at a tie) they do not, and the limit would drop
    a term of about |L(T_anti)|/gap.  Where the limit is taken its error from this test is at
    most 64ε |L(T_sym)|/gap, the formula's own rounding error.  None where R is not affine in
    the gaps (a gap squared, a gap inside a function), or the test is not finite."""
    gaps = {x for x in walk(node) if isinstance(x, EigGap)}
    if not gaps:
        return None
    spectra = _MergedSpectra()
    ops = dict(numpy_ops(functions, spectra))
    ops[EigGap] = lambda n, a, s: np.zeros((np.size(a[0]),) * 2)  # their values are never used
    try:
        with np.errstate(all="ignore"):
            memo, order = _interpreted(node, arrays, sizes, ops)
    except (EvaluationError, np.linalg.LinAlgError):
        return None

    def linear(sign):
        tangent = {}
        for g in gaps:
            lam = np.asarray(memo[g.arg], float)
            tie = (lam[:, None] == lam[None, :]) & ~np.eye(lam.size, dtype=bool)
            upper = np.triu(np.ones(tie.shape, dtype=bool), 1)
            tangent[g] = np.where(tie, np.where(upper, 1.0, sign), 0.0)
        for n in order:
            if n in tangent:
                continue
            kids = _inputs(n)
            moving = [k for k, c in enumerate(kids) if tangent.get(c) is not None]
            if not moving:
                continue
            if isinstance(n, Contract) and len(moving) == 1:
                values = [memo[c] for c in kids]
                values[moving[0]] = tangent[kids[moving[0]]]
                tangent[n] = contract_with_deltas(n, values, sizes, _np_einsum, np.zeros)
            elif isinstance(n, Sum):
                tangent[n] = sum(c * tangent[k] for (c, _), k in zip(n.terms, kids)
                                 if tangent.get(k) is not None)
            elif isinstance(n, Reshape):
                tangent[n] = np.reshape(tangent[kids[0]], np.shape(memo[n]))
            else:
                return None  # not affine in the gaps here
        out = tangent.get(node)
        return np.zeros(np.shape(memo[node])) if out is None else np.asarray(out, float)

    with np.errstate(all="ignore"):
        anti, sym = linear(-1.0), linear(1.0)
    if anti is None or sym is None or not (np.all(np.isfinite(anti)) and np.all(np.isfinite(sym))):
        return None
    size = float(np.abs(sym).max(initial=0.0))
    return bool(float(np.abs(anti).max(initial=0.0)) <= TIE_CANCEL * float(np.finfo(float).eps) * size)



def _refuse_choices(node, out, arrays, sizes, functions, spectra) -> None:
    """Where eigen- or singular vectors at a repeated (or zero) value were used, evaluate again
    with them rotated at random within their freedom: a result that moves depends on the
    choice, so the function is not differentiable here (a subgradient, not a derivative), and
    a result that is not finite there is no answer either.  A result that does not move is
    the derivative (∇‖X‖₂² = 0 at X = 0, UVᵀ at a repeated σ of a full-rank X, any smooth
    spectral function at a repeated eigenvalue)."""
    rotated = _Spectra(np.random.default_rng(0))
    again = interpret(node, arrays, sizes, numpy_ops(functions, rotated))
    a, b = np.asarray(out, dtype=float), np.asarray(again, dtype=float)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise spectra.refusal(node, finite=False)
    scale = max(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)))
    if float(np.abs(a - b).max(initial=0.0)) > CHOICE_TOLERANCE * scale:
        raise spectra.refusal(node)


def evaluate(node: Node, values: dict, functions: dict | None = None,
             scope=frozenset(), sizes: dict | None = None, max_bytes: int | None = None) -> np.ndarray:
    """The value of ``node`` for arrays keyed by variable name; ``sizes`` gives dims that
    no array fixes (as in ``md.eye("n")``); ``max_bytes`` bounds the arrays it may build
    (``MAX_BYTES`` by default)."""
    arrays, sizes = bind(node, values, scope, sizes)
    _check_memory(node, sizes, MAX_BYTES if max_bytes is None else max_bytes)
    try:
        out = interpret_checked(node, arrays, sizes, functions or {})
    except np.linalg.LinAlgError as e:
        raise EvaluationError(f"a matrix function failed on these values: {e}") from None
    inputs = [a for a in arrays.values() if isinstance(a, np.ndarray)]
    return np.asarray(out, dtype=np.result_type(*inputs) if inputs else float)  # as the inputs
