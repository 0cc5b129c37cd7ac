"""Numeric verification of symbolic derivatives: central differences and the dot-product test.

``check(f, x)`` draws random sizes for the symbolic dims and random inputs, then compares
∂f/∂x with central differences of f, entry by entry, and ⟨u, J v⟩ with the directional
difference ⟨u, (f(x + hv) − f(x − hv)) / 2h⟩ for random u, v.  Abstract functions (σ, λ)
are replaced by fixed smooth stand-ins whose derivatives of every order are known.
"""
from __future__ import annotations

import zlib
from math import factorial, pi, prod

import numpy as np

from . import dims as D
from .errors import CheckError, EvaluationError, MatdiffError, NotSupportedError, UncheckableError
from .evaluate import Sizes, bind, interpret, interpret_checked, is_min_dim, numpy_ops, variables
from .expr import Expr, lift
from .ir import Det, Elementwise, Inv, LogDet, ScalarFn, Var, walk
from . import facts as FA
from .library import _facts, jacobian

KINDS = ("normal", "positive", "spd", "invertible", "symmetric")


def check(f, *wrt, sizes: dict | None = None, seed: int = 0, kinds: dict | None = None,
          order: int = 1, tol: float = 1e-6, step: float = 1e-5, facts=None) -> float:
    """Compare the derivatives of ``f`` by each variable in ``wrt`` (all of f's variables if
    none is named) with finite differences; return the largest relative error, or raise
    ``md.CheckError`` if it exceeds ``tol``.  ``order=2`` checks the Hessians too.

    ``sizes`` fixes dims ({"n": 4}); ``kinds`` chooses inputs per variable name: "normal"
    (default), "positive", "spd", "invertible" or "symmetric".  With ``facts`` (made with
    md.fact) the derivatives are taken with them, and compared at random points moved onto
    the set where the facts hold.

    >>> X, w = md.matrix("X", "n", "k"), md.vector("w", "k")
    >>> md.check(md.sum(md.sigmoid(X @ w)), w) < 1e-6
    True
    """
    f = lift(f)
    if order not in (1, 2):
        raise MatdiffError(f"check: order must be 1 or 2, not {order!r}")
    rng = np.random.default_rng(seed)
    vs = variables(f.node)
    targets = [_var(x) for x in wrt] or vs
    for t in targets:
        if t not in vs and t.name in {v.name for v in vs}:
            raise MatdiffError(f"check: {t.name} is not the variable of that name in the expression")
    kinds = dict(kinds or {})
    for name, kind in kinds.items():
        if kind not in KINDS:
            raise MatdiffError(f"check: unknown input kind {kind!r} for {name}; use one of {KINDS}")
    facts = _facts(facts, f.node, *targets)
    functions = _stand_ins(f.node)
    for attempt in range(ATTEMPTS):  # sizes and values are redrawn where a point is singular
        size = _sizes(f.node, targets, sizes, rng)
        _refuse_huge(f.node, targets, size, order)  # vector(100000000): an error, not 800 MB
        try:
            values = _inputs(f.node, vs + [t for t in targets if t not in vs], size, kinds, rng,
                             functions)
            if facts:
                values = _on_facts(facts, values, size, functions, rng)
                if not _finite(f.node, values, size, functions):
                    raise UncheckableError("check: f is not finite where the facts hold")
            break
        except UncheckableError:
            if attempt == ATTEMPTS - 1:
                raise
    worst = 0.0
    try:
        for x in targets:
            J = jacobian(f, Expr(x), facts=facts)
            _refuse_huge(J.node, [], size, 1, f"∂f/∂{x.name}")
            worst = max(worst, _compare(f.node, J.node, x, values, size, functions, rng, step,
                                        tol, "∂"))
            if order == 2:
                H = jacobian(J, Expr(x), facts=facts)
                _refuse_huge(H.node, [], size, 1, f"∂²f/∂{x.name}²")
                worst = max(worst, _compare(J.node, H.node, x, values, size, functions, rng,
                                            step, tol, "∂²"))
    except np.linalg.LinAlgError as e:
        raise UncheckableError(f"check: could not check at this point ({e}: a matrix is "
                               f"singular between the finite-difference steps)") from None
    except EvaluationError as e:
        if "not differentiable here" not in str(e):
            raise
        raise UncheckableError(f"check: the point is degenerate, so there is no derivative to "
                               f"compare: {e}") from None
    return worst


MAX_ENTRIES = 10_000_000  # entries of one array md.check makes (80 MB of float64)


def _refuse_huge(node, targets, size, order, what="f"):
    """A MatdiffError, before anything is allocated, where an array md.check would make (a
    variable, a subexpression, f, or its derivatives of up to ``order``) has over MAX_ENTRIES
    entries at these sizes: declared dims such as vector(100000000) are refused, not drawn."""
    def entries(shape):
        try:
            dims = tuple(D.resolve(d, size) for d in shape)
        except EvaluationError:  # a dim no size fixes is reported where it is evaluated
            return 0, ()
        return prod(dims), dims

    def refuse(name, count, dims):
        raise MatdiffError(
            f"check: {name} would have {count:,} entries (shape {dims}); md.check makes arrays "
            f"of at most {MAX_ENTRIES:,} entries, so check at smaller sizes (give the dims "
            f"names and sizes={{name: n}})")

    for n in walk(node, *targets):
        count, dims = entries(n.shape)
        if count > MAX_ENTRIES:
            refuse(n.name if isinstance(n, Var) else what if n is node else
                   f"a part of {what}", count, dims)
    out, fdims = entries(node.shape)
    for t in targets:  # the derivatives md.check compares entry by entry
        xs, xdims = entries(t.shape)
        for k in range(1, order + 1):
            if out * xs ** k > MAX_ENTRIES:
                refuse(f"∂{'²' if k == 2 else ''}f/∂{t.name}{'²' if k == 2 else ''}",
                       out * xs ** k, fdims + xdims * k)


ATTEMPTS = 8  # random points drawn before md.check says it cannot check
CONDITION_LIMIT = 1e6  # a matrix inverted or whose determinant is taken must be better conditioned


def _well_conditioned(node, arrays, sizes, ops) -> bool:
    """Whether every matrix that node inverts (or takes the determinant of) is far from
    singular at these values: finite differences across a near-singular matrix mean nothing."""
    for n in walk(node):
        if isinstance(n, (Inv, Det, LogDet)):
            m = interpret(n.arg, arrays, sizes, ops)
            if not np.all(np.isfinite(m)) or np.linalg.cond(m) > CONDITION_LIMIT:
                return False
    return True


def _on_facts(facts, values, size, functions, rng=None) -> dict:
    """values moved onto the set where the facts hold (facts.satisfy); the variables the
    facts name but f does not are drawn first (from ``rng``: md.check's own)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    values = dict(values)
    for v in sorted(set().union(*(fa.variables for fa in facts)), key=lambda v: v.name):
        if v.name not in values:
            values[v.name] = _sample(v, "normal", size, rng)
    return FA.satisfy(facts, values, lambda node, vals: _value(node, vals, size, functions))


def _value(node, values, size, functions):
    used = variables(node)
    names = {v.name for v in used}
    arrays, s = bind(node, {k: a for k, a in values.items() if k in names}, frozenset(used), size)
    return np.asarray(interpret(node, arrays, s, numpy_ops(functions)), dtype=float)


def _finite(node, values, size, functions) -> bool:
    with np.errstate(all="ignore"):
        return bool(np.all(np.isfinite(_value(node, values, size, functions))))


def _var(x) -> Var:
    if isinstance(x, Expr) and isinstance(x.node, Var):
        return x.node
    raise MatdiffError(f"check: {getattr(x, 'src', x)!r} is not a variable")


def _sizes(node, targets, given, rng) -> dict:
    """Random sizes for every symbolic dim of the expression (a dim may appear in no
    variable, as in ones(k)), overridden by the given ones."""
    names = sorted(d for d in set().union(*(D.names(n.shape) for n in walk(node, *targets)))
                   if not is_min_dim(d))  # min(k, n) follows from k and n
    out = Sizes({n: int(rng.integers(2, 5)) for n in names})
    for k, v in (given or {}).items():
        if not isinstance(v, int) or v < 1:
            raise MatdiffError(f"check: sizes[{k!r}] must be a positive int, not {v!r}")
        out[k] = v
    return out


def _sample(v: Var, kind: str, size: dict, rng):
    shape = tuple(D.resolve(d, size) for d in v.shape)
    square = len(shape) == 2 and shape[0] == shape[1]
    if kind in ("spd", "invertible") and not square:
        raise MatdiffError(f"check: {v.name} is {D.fmt_shape(v.shape)}; kind {kind!r} needs a square matrix")
    a = rng.standard_normal(shape)
    if kind == "positive":
        return rng.uniform(0.5, 2.0, shape)
    if kind == "spd":
        return a @ a.T / shape[0] + np.eye(shape[0])
    if kind == "invertible":
        return a + shape[0] * np.eye(shape[0]) * np.sign(rng.standard_normal())
    if v.symmetric or kind == "symmetric":
        return (a + a.T) / 2
    return a


def _inputs(node, vs, size, kinds, rng, functions):
    """Random inputs; where f is not finite on normal ones, positive then SPD ones are tried."""
    ops = numpy_ops(functions)
    for fallback in ("normal", "positive", "spd"):
        values = {}
        for v in vs:
            kind = kinds.get(v.name, fallback)
            if kind == "spd" and not (v.ndim == 2 and v.shape[0] == v.shape[1]):
                kind = "positive"
            if v.symmetric == "positive":
                kind = "positive"  # a positive scalar is drawn so
            elif v.symmetric and kind == "positive" or v.symmetric == "spd":
                kind = "spd"  # a positive-definite declaration is drawn so
            values[v.name] = _sample(v, kind, size, rng)
        arrays, s = bind(node, values, frozenset(vs), size)
        with np.errstate(all="ignore"):
            try:
                ok = np.all(np.isfinite(interpret(node, arrays, s, ops))) and \
                    _well_conditioned(node, arrays, s, ops)
            except (np.linalg.LinAlgError, EvaluationError):  # outside logm's domain, say
                ok = False
        if ok:
            return values
    raise UncheckableError("check: could not check: on normal, positive and SPD random inputs the "
                           "expression is not finite or inverts a singular matrix (as "
                           "logdet(XᵀX) does for a wide X); choose inputs with kinds={name: kind} "
                           "or sizes={dim: n}")


def _compare(f, J, x, values, size, functions, rng, h, tol, what) -> float:
    all_vars = frozenset(v for v in variables(f) + variables(J) + [x])

    names = {v.name for v in all_vars}

    def at(node, xval):  # values of variables a second derivative no longer uses are dropped
        vals = {k: a for k, a in dict(values, **{x.name: xval}).items() if k in names}
        arrays, s = bind(node, vals, all_vars, size)
        return np.asarray(interpret_checked(node, arrays, s, functions), dtype=float)

    x0 = np.asarray(values[x.name], dtype=float)
    jac = at(J, x0)
    # differences of f carry rounding noise ~ ε|f|/h: derivatives far below |f| are judged
    # on that scale rather than their own
    floor = 1e-3 * max(1.0, float(np.abs(at(f, x0)).max(initial=0.0)))
    fd = np.zeros_like(jac)
    sym = bool(x.symmetric) and x.ndim == 2  # a positive scalar is tagged, but has no transpose
    fshape = jac.shape[:jac.ndim - x0.ndim]
    for idx in np.ndindex(*x0.shape):
        e = np.zeros_like(x0)
        e[idx] = 1.0
        if sym:
            e[idx[::-1]] = 1.0
        d = _difference(lambda t: at(f, x0 + t * e), h * max(1.0, abs(x0[idx])))
        if sym and idx[0] != idx[1]:
            d = d / 2  # a symmetric direction moves two entries; the gradient is their mean
        fd[(Ellipsis,) + idx] = d
    err = _relative(jac, fd, floor)
    # dot-product test: ⟨u, J v⟩ against the directional difference
    u = rng.standard_normal(fshape)
    v = rng.standard_normal(x0.shape)
    if sym:
        v = (v + v.T) / 2
    jv = np.tensordot(jac, v, axes=x0.ndim)
    dv = _difference(lambda t: at(f, x0 + t * v), h * max(1.0, float(np.abs(x0).max(initial=0.0))))
    err = max(err, _relative(np.sum(u * jv), np.sum(u * dv), floor * float(np.abs(u).sum())))
    if not err <= tol:
        gap = np.abs(np.nan_to_num(jac - fd, nan=np.inf))
        at_ = np.unravel_index(int(np.argmax(gap)), gap.shape) if gap.size else ()
        raise CheckError(f"check: {what}/∂{x.name} disagrees with finite differences: relative "
                         f"error {err:.3g} > {tol:g} (largest at entry {tuple(map(int, at_))}: "
                         f"symbolic {float(jac[at_]):.6g}, numeric {float(fd[at_]):.6g})")
    return err


def _difference(g, step):
    """g′(0) by central differences at steps h and h/2, Richardson-extrapolated: an error
    O(h⁴), so steep functions (sin 1000x) are judged on their derivative, not on the step."""
    d1 = (g(step) - g(-step)) / (2 * step)
    d2 = (g(step / 2) - g(-step / 2)) / step
    return (4 * d2 - d1) / 3


def _relative(a, b, floor: float) -> float:
    """max |a − b| relative to the larger of max |a|, max |b| and ``floor``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return float("inf")
    a, b = np.where(np.isfinite(a), a, 0.0), np.where(np.isfinite(b), b, 0.0)
    diff = float(np.abs(a - b).max(initial=0.0))
    scale = max(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)), floor)
    return diff / scale


# --------------------------------------------------------------------------- stand-ins


def _phase(name: str) -> float:
    return (zlib.crc32(name.encode()) % 1000) / 1000 * 2 * pi


class _ElementwiseStandIn:
    """σ(z) = sin(z + c) + 0.3 z², with c fixed by σ's name: smooth, not symmetric."""

    def __init__(self, name):
        self.c = _phase(name)

    def __len__(self):
        return 16

    def __getitem__(self, k):
        c = self.c

        def f(z):
            s = np.sin(z + c + k * pi / 2)
            return s + (0.3 * z ** 2 if k == 0 else 0.6 * z if k == 1 else 0.6 if k == 2 else 0.0)

        return f


class _ScalarStandIn:
    """λ(X) = Σ wᵢ sin(Xᵢ) + (Σ bᵢ Xᵢ)³/6, with w, b fixed by λ's name and X's shape."""

    def __init__(self, name):
        self.name = name

    def __len__(self):
        return 16

    def _weights(self, shape):
        rng = np.random.default_rng(zlib.crc32(f"{self.name}{shape}".encode()))
        return rng.uniform(0.5, 1.5, shape), rng.standard_normal(shape) / np.sqrt(max(1, np.prod(shape)))

    def __getitem__(self, k):
        def f(X):
            w, b = self._weights(X.shape)
            t = float(np.sum(b * X))
            out = np.zeros(X.shape * k) if k else np.asarray(0.0)
            diag = w * np.sin(X + k * pi / 2)
            if k == 0:
                out = out + np.sum(diag)
            else:
                idx = np.indices(X.shape).reshape(X.ndim, -1)
                out[tuple(idx) * k] = diag.ravel()
            if k <= 3:
                term = t ** (3 - k) / factorial(3 - k)
                for _ in range(k):
                    term = np.multiply.outer(term, b)
                out = out + term
            return out

        return f


def _stand_ins(node) -> dict:
    """Stand-ins for the abstract functions of an expression (and their derivatives)."""
    out = {}
    for n in walk(node):
        if isinstance(n, Elementwise) and not n.fn.builtin:
            if n.fn.deriv is not None and n.fn.numpy is None:
                raise NotSupportedError(f"check: {n.fn.name} has a derivative but no values; "
                                        f"give md.function({n.fn.name!r}, ..., numpy=f)")
            if n.fn.numpy is None:
                out[n.fn.name] = _ElementwiseStandIn(n.fn.name)
        elif isinstance(n, ScalarFn) and n.fn.numpy is None:
            out[n.fn.name] = _ScalarStandIn(n.fn.name)
    return out

