"""Matrix notation: the small tree that results are printed from.

The recogniser (``recognise.py``) turns index-form IR into these nodes; the printers
(``printing.py``) turn them into text or LaTeX by table.  Each node knows its kind —
scalar ``s``, column ``c``, row ``r``, matrix ``m`` — so that transposes can be pushed
inward (``(AB)ᵀ → BᵀAᵀ``) and scalars pulled to the front of a product.

Constructors here apply only identities that hold for every value (IIᵀ = I, (Xᵀ)ᵀ = X,
1 ⊙ X = X, …), so a printed form always means what the IR means.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .ir import Node

_T = {"s": "s", "c": "r", "r": "c", "m": "m"}


@dataclass(frozen=True)
class M:
    """Base of matrix-notation nodes; ``kind`` is one of s, c, r, m."""

    kind: str


@dataclass(frozen=True)
class Sym(M):
    """A variable, or a constant: ``one`` (1, of any shape), ``eye`` (I), ``zero`` (0),
    ``commutation`` (K_{p,q}, the pq × pq matrix with K vec(A) = vec(Aᵀ) for a p × q A;
    ``params`` = (p, q)); ``frechet`` (L_f(X, E); ``params`` = (f, X, E)); ``frechet2``
    (L²_f(X; E₁, E₂), the second Fréchet derivative; ``params`` = (f, X, E₁, E₂)); ``divdiff3``
    (Δ²f(λ)[X, Y], M_pc = Σ_q f[λ_p, λ_q, λ_c] X_pq Y_qc; ``params`` = (f's printed name, λ,
    X, Y))."""

    name: str
    role: str = "var"
    symmetric: bool = False
    dims: tuple = ()
    params: tuple = ()


@dataclass(frozen=True)
class Num(M):
    value: float


@dataclass(frozen=True)
class T(M):
    """Transpose."""

    arg: M


@dataclass(frozen=True)
class Prod(M):
    """A product written by juxtaposition, with a numeric coefficient in front."""

    coef: float
    factors: tuple


@dataclass(frozen=True)
class Had(M):
    """Element-wise product A ⊙ B ⊙ …"""

    factors: tuple


@dataclass(frozen=True)
class Kron(M):
    factors: tuple


@dataclass(frozen=True)
class Add(M):
    """Σ cₖ termₖ."""

    terms: tuple


@dataclass(frozen=True)
class Call(M):
    """A named function of one argument: tr, det, logdet, diag, exp, σ′, ∇λ, softmax, …

    ``order`` counts derivatives (σ′, ∇λ), ``axis`` is softmax's, ``fn`` the IR function."""

    name: str
    arg: M
    order: int = 0
    axis: Any = None
    fn: Any = None


@dataclass(frozen=True)
class Inv(M):
    arg: M


@dataclass(frozen=True)
class Pow(M):
    """An element-wise power (an ordinary power for a scalar)."""

    arg: M
    p: float


@dataclass(frozen=True)
class MatPow(M):
    """The matrix power Aᵏ (k ≥ 2, or k ≤ −1 for (A⁻¹)⁻ᵏ)."""

    arg: M
    k: int


@dataclass(frozen=True)
class Index(M):
    """No matrix form: the expression in index notation (for orders above 2)."""

    node: Node
    text: str


def _cached_hash(structural):
    """A node's structural hash, computed once: the trees share subtrees, and ``add`` keys
    terms by them, so an uncached hash walked the whole subtree at every look-up."""
    def __hash__(self):
        value = self.__dict__.get("_hash")
        if value is None:
            value = structural(self)
            object.__setattr__(self, "_hash", value)
        return value
    return __hash__


for _cls in (Sym, Num, T, Prod, Had, Kron, Add, Call, Inv, Pow, MatPow, Index):
    _cls.__hash__ = _cached_hash(_cls.__hash__)


# --------------------------------------------------------------------------- constructors


def transpose(a: M) -> M:
    """aᵀ, pushed inward: (AB)ᵀ = BᵀAᵀ, (A + B)ᵀ = Aᵀ + Bᵀ, (Aᵀ)ᵀ = A, Sᵀ = S."""
    k = a.kind
    if k == "s":
        return a
    kind = type(a)  # (the notation classes have no subclasses: one test per class)
    if kind is T:
        return a.arg
    if kind is Sym:
        role = a.role
        if role == "var":  # a variable: itself where symmetric, else Aᵀ
            return a if k == "m" and a.symmetric else _t(_T[k], a)
        if k == "m" and (a.symmetric or role == "eye" or symmetric(a)):
            return a
        if role == "divdiff3":  # Δ²f(λ)[X, Y]ᵀ = Δ²f(λ)[Yᵀ, Xᵀ] (T symmetric)
            fn, lam, x, y = a.params
            return Sym(k, a.name, a.role, False, a.dims, (fn, lam, transpose(y), transpose(x)))
        if role == "frechet2":  # L²_f(X; E₁, E₂)ᵀ = L²_f(Xᵀ; E₁ᵀ, E₂ᵀ)
            fn, x, e1, e2 = a.params  # (f has real Taylor coefficients: each word reversed)
            return Sym(k, a.name, a.role, False, a.dims, (fn, transpose(x), transpose(e1), transpose(e2)))
        if role == "commutation":  # K_{p,q}ᵀ = K_{q,p}
            return Sym(k, a.name, a.role, False, a.dims, tuple(reversed(a.params)))
        if k == "m" and role in ("one", "zero"):  # 11ᵀ and 0 read alike
            return Sym(k, a.name, a.role, False, tuple(reversed(a.dims)))
        return _t(_T[k], a)
    if k == "m" and symmetric(a):  # Sᵀ = S: XᵀX, A + Aᵀ, (XᵀX)⁻¹, S⁻¹, diag(v)
        return a
    if kind is Prod:
        return prod(a.coef, [transpose(f) for f in reversed(a.factors)])
    if kind is Add and all(type(t) in (Sym, T) for _, t in a.terms):
        return add([(c, transpose(t)) for c, t in a.terms])  # (A + Bᵀ)ᵀ = Aᵀ + B
    if kind is Had:
        return Had(_T[k], tuple(transpose(f) for f in a.factors))
    if kind is Call and a.name == "diag" and k == "m":
        return a
    if kind is MatPow:  # (Aᵏ)ᵀ = (Aᵀ)ᵏ, (A⁻ᵏ)ᵀ = (A⁻ᵀ)ᵏ
        base = a.arg if a.k > 0 else Inv(a.arg.kind, a.arg)
        return MatPow(k, transpose(base), abs(a.k))
    return _t(_T[k], a)


_new = object.__new__  # the constructors below build the node that T(kind, arg), Prod(kind,
# coef, factors) and Inv(kind, arg) build, without the frozen dataclass's __init__ (one
# object.__setattr__ per field): notation is built many times per printed result


def _unary(cls):
    """The constructor of a node of one argument (T or Inv), as ``cls(kind, arg)`` builds it."""
    def make(kind: str, arg: M):
        x = _new(cls)
        d = x.__dict__
        d["kind"] = kind
        d["arg"] = arg
        return x
    return make


_t, _inv = _unary(T), _unary(Inv)


def _leaf(kind: str, name: str, role: str = "var", symmetric: bool = False, dims: tuple = (),
          params: tuple = ()) -> "Sym":
    """Sym(kind, name, role, symmetric, dims, params), built as ``_t`` builds T."""
    x = _new(Sym)
    d = x.__dict__
    d["kind"] = kind
    d["name"] = name
    d["role"] = role
    d["symmetric"] = symmetric
    d["dims"] = dims
    d["params"] = params
    return x


def _prod(kind: str, coef: float, factors: tuple) -> "Prod":
    x = _new(Prod)
    d = x.__dict__
    d["kind"] = kind
    d["coef"] = coef
    d["factors"] = factors
    return x


def symmetric(m: M) -> bool:
    """Whether the matrix m equals its transpose by structure: a symmetric variable, I, 0,
    diag(v), a palindrome of transposes (XᵀX, XSXᵀ with S symmetric), a sum of symmetric
    terms or of a term and its transpose, an inverse or power of a symmetric matrix."""
    if m.kind != "m":
        return False
    cached = m.__dict__.get("_symmetric")
    if cached is None:
        cached = _symmetric_by_structure(m)
        object.__setattr__(m, "_symmetric", cached)
    return cached


def _symmetric_by_structure(m: M) -> bool:
    if type(m) is Prod:  # (the commonest: a product just built; the classes are exclusive)
        fs = m.factors
        for i in range((len(fs) + 1) // 2):
            if not _mirror(fs[i], fs[-1 - i]):
                return False
        return True
    if isinstance(m, Sym) and m.role == "divdiff3":  # Δ²f(λ)[X, Xᵀ]
        return m.params[3] == transpose(m.params[2])
    if isinstance(m, Sym):
        return m.symmetric or m.role == "eye" or (m.role in ("one", "zero") and
                                                  len(m.dims) == 2 and m.dims[0] == m.dims[1])
    if isinstance(m, Call):  # diag(v); Δf(λ), divided differences; f(S) of a symmetric S
        return m.name == "diag" or m.name.startswith("Δ") or (
            m.name in ("expm", "logm", "sqrtm") or m.name.endswith("ₘ")) and symmetric(m.arg)
    if isinstance(m, (Inv, MatPow)):
        return symmetric(m.arg)
    if isinstance(m, Add):
        terms = {t: c for c, t in m.terms}
        return all(symmetric(t) or terms.get(_flip(t)) == c for c, t in m.terms)
    if isinstance(m, Had):
        return all(symmetric(f) for f in m.factors)
    return False


def _flip(m: M) -> M:
    """mᵀ without simplifying: the form a sum's other term takes (A + Aᵀ)."""
    return m.arg if isinstance(m, T) else T(_T[m.kind], m)


def _mirror(a: M, b: M) -> bool:
    """Whether b is aᵀ (for the middle factor of an odd product, whether a is symmetric)."""
    if a is b:
        return a.kind == "s" or symmetric(a)
    return _flips(b, a) or _flips(a, b) or (a.kind == "s" and a == b)


def _flips(b: M, a: M) -> bool:
    """b == _flip(a), asked without building _flip(a) (most factors are no transpose)."""
    if type(a) is T:
        return b == a.arg
    return type(b) is T and b.kind == _T[a.kind] and (b.arg is a or b.arg == a)


def _product_kind(kinds) -> str:
    """The kind of a juxtaposition: the first non-scalar's rows, the last one's columns."""
    ks = [k for k in kinds if k != "s"]
    if not ks:
        return "s"
    return _KINDS[ks[0] in ("c", "m"), ks[-1] in ("r", "m")]


_KINDS = {(True, True): "m", (True, False): "c", (False, True): "r", (False, False): "s"}  # by rows, columns


def prod(coef: float, factors) -> M:
    """coef · f₁f₂…, with scalars first, nested products flattened, I dropped."""
    if len(factors) == 2 and coef != 0:  # two matrices joined (most calls): what the loop builds
        a, b = factors
        ta, tb = type(a), type(b)
        if (ta in _PLAIN or ta is Add and _common(a) in (1.0, None)) and a.kind != "s" and \
                (tb in _PLAIN or tb is Add and _common(b) in (1.0, None)) and b.kind != "s" and \
                not (ta is Sym and a.role in ("eye", "zero") or tb is Sym and b.role in ("eye", "zero")):
            if ta is Inv:
                if tb is Inv or a.arg.kind != a.kind:
                    return _prod_of(coef, factors)
                a = _inv(a.arg.kind, a.arg)  # (_powers builds each inverse afresh)
            elif tb is Inv:
                if b.arg.kind != b.kind:
                    return _prod_of(coef, factors)
                b = _inv(b.arg.kind, b.arg)
            elif ta is tb and a.kind == "m" and (a is b or a == b):
                return _prod_of(coef, factors)  # A·A: a power
            return _prod(_KINDS[a.kind in ("c", "m"), b.kind in ("r", "m")], coef, (a, b))
    elif len(factors) == 1 and type(factors[0]) is Prod and factors[0].kind != "s":
        p = factors[0]  # a product taken again (a scale, a sum's one term): its factors as they are
        fs, prev = p.factors, None
        for x in fs:  # where none is a scalar, inverse or run, or another class the loop reads apart
            t = type(x)
            if t not in _PLAIN and t is not Add or t is Inv or x.kind == "s" or \
                    t is Sym and x.role in ("eye", "zero") or \
                    prev is not None and type(prev) is t and x.kind == "m" and (prev is x or prev == x):
                break
            prev = x
        else:
            c = coef * p.coef
            if c != 0 and not (c == 1 and len(fs) == 1):
                return _prod(_KINDS[fs[0].kind in ("c", "m"), fs[-1].kind in ("r", "m")], c, fs)
    return _prod_of(coef, factors)


# the classes ``prod`` joins matrices of without ``_prod_of``'s loop: no product, number or
# power, which the loop reads apart, nor I (dropped) or 0 (which absorbs the rest); a sum
# where no common number is taken out of it (2Xw − 2y is 2(Xw − y))
_PLAIN = frozenset((Sym, T, Call, Had, Kron, Pow, Inv))


def _prod_of(coef: float, factors) -> M:
    """``prod``, factor by factor."""
    scalars, mats = [], []
    eye = False  # whether I is among the matrices
    for f in factors:
        kind = type(f)  # (the notation classes have no subclasses)
        if kind is Prod:
            if f.kind == "s" and any(x.kind != "s" for x in f.factors):
                coef *= f.coef  # xᵀAx stays one scalar factor: (xᵀAx)Ax, never xᵀAxAx
                scalars.append(fewest_transposes(prod(1.0, f.factors)))
            else:
                coef *= f.coef
                for x in f.factors:
                    if x.kind == "s":
                        scalars.append(x)
                    else:
                        mats.append(x)
                        eye = eye or type(x) is Sym and x.role == "eye"
        elif kind is Num:
            coef *= f.value
        elif f.kind == "s":
            scalars.append(f)
        elif kind is Add and (c := _common(f)) not in (1.0, None):
            coef *= c  # 2Xw − 2y → 2(Xw − y)
            mats.append(Add(f.kind, tuple((k / c, t) for k, t in f.terms)))
        else:
            mats.append(f)
            eye = eye or kind is Sym and f.role == "eye"
    if len(mats) > 1:
        if eye:
            mats = [m for m in mats if not (type(m) is Sym and m.role == "eye")] or mats[:1]
        items = scalars + _powers(mats)
    elif mats and type(mats[0]) not in (Inv, MatPow):  # one matrix: its own power
        items = scalars + mats
    else:
        items = scalars + _powers(mats)
    if not items:
        return Num("s", coef)
    first = last = None  # the kind: the first non-scalar's rows, the last one's columns
    zero = coef == 0
    for x in items:
        k = x.kind
        if k != "s":
            last = k
            if first is None:
                first = k
        if type(x) is Sym and x.role == "zero":
            zero = True
    kind = "s" if first is None else _KINDS[first in ("c", "m"), last in ("r", "m")]
    if zero:  # 2·0·C⁻¹ is 0
        return Sym(kind, "0", "zero")
    if coef == 1 and len(items) == 1:
        return items[0]
    return _prod(kind, coef, tuple(items))


def _powers(mats: list) -> list:
    """Runs of one matrix as its power: AAA → A³, A⁻¹A⁻¹ → A⁻², A²A → A³ (constants stay)."""
    prev = None  # most products have no power, inverse or run: the matrices themselves
    for m in mats:
        kind = type(m)
        if kind is Inv or kind is MatPow or prev is not None and type(prev) is kind and \
                m.kind == "m" and not (kind is Sym and m.role != "var") and (prev is m or prev == m):
            break  # (nodes of different classes are never equal: the comparison is asked of one class)
        prev = m
    else:
        return list(mats)
    out = []
    powers = False
    last = None  # out's last [base, exponent]
    for m in mats:
        kind = type(m)
        base, k = (m.arg, m.k) if kind is MatPow else (m, 1)
        if kind is Inv or kind is MatPow and type(base) is Inv:
            base, k = base.arg, -k
        # (nodes of different classes are never equal: the comparison is asked of one class)
        if last is not None and base.kind == "m" and (last[1] > 0) == (k > 0) and \
                not (type(base) is Sym and base.role != "var") and \
                (last[0] is base or type(last[0]) is type(base) and last[0] == base):
            last[1] += k
            powers = True
        else:
            last = [base, k]
            out.append(last)
            powers = powers or k != 1
    if not powers:  # no power, inverse or run: the matrices themselves
        return [b for b, _ in out]
    return [b if k == 1 else _inv(b.kind, b) if k == -1 else MatPow(b.kind, b, k) for b, k in out]


def _common(a: Add):
    """The common magnitude of an Add's coefficients, if they share one."""
    mags = {abs(c) for c, _ in a.terms}
    return mags.pop() if len(mags) == 1 else None


def _constant(m: M) -> bool:
    return isinstance(m, Num) or (isinstance(m, Sym) and m.role != "var")


def had(factors) -> M:
    fs = []
    for f in factors:
        fs.extend(f.factors if isinstance(f, Had) else [f])
    fs = [f for f in fs if not (isinstance(f, Sym) and f.role == "one")] or fs[:1]
    fs.sort(key=lambda f: isinstance(f, Add))  # σ(XW) ⊙ (1 − σ(XW)): sums last
    return fs[0] if len(fs) == 1 else Had(fs[0].kind, tuple(fs))


LONG = 4  # a product of this many matrices is long: a sum holding one keeps its numbers


def _long(m: M) -> bool:
    """Whether m is a product of ``LONG`` matrices or more: the terms of the product rule,
    written apart with their numbers, −2CX(XᵀCX)⁻¹XᵀBX(XᵀCX)⁻¹ + 2BX(XᵀCX)⁻¹ (Matrix
    Cookbook, 126); the presentation may still take the number out where that is cheaper."""
    return isinstance(m, Prod) and sum(f.kind == "m" for f in m.factors) >= LONG


def add(terms) -> M:
    """Σ cₖ termₖ: nested sums flattened, equal terms merged, a common factor pulled out
    (2Xw − 2y → 2(Xw − y)) unless a term is long (``_long``), positive terms first and B
    before Bᵀ."""
    acc: dict = {}
    for c, t in terms:
        if isinstance(t, Add):
            for k, u in t.terms:
                acc[u] = acc.get(u, 0.0) + c * k
        elif isinstance(t, Prod) and t.coef != 1:
            u = prod(1.0, t.factors)
            acc[u] = acc.get(u, 0.0) + c * t.coef
        else:
            acc[t] = acc.get(t, 0.0) + c
    flat = [(c, t) for t, c in acc.items() if c != 0]
    if not flat:
        kind = terms[0][1].kind
        return Sym(kind, "0", "zero")
    if len(flat) == 1:
        return prod(flat[0][0], [flat[0][1]])
    flat.sort(key=lambda p: (p[0] < 0, _constant(p[1]), isinstance(p[1], T)))
    common = {abs(c) for c, _ in flat}
    if len(common) == 1 and (c := common.pop()) != 1 and not any(map(_long, (t for _, t in flat))):
        return Prod(flat[0][1].kind, c, (Add(flat[0][1].kind, tuple((k / c, t) for k, t in flat)),))
    return Add(flat[0][1].kind, tuple(flat))


def fewest_transposes(m):
    """A scalar equals its transpose: write xᵀAx rather than xᵀAᵀx."""
    if m.kind != "s" or not isinstance(m, Prod):
        return m
    flipped = prod(m.coef, [transpose(f) for f in reversed(m.factors)])
    return min((m, flipped), key=_transposes)


def children(m: M) -> tuple:
    """The notation nodes directly inside m."""
    how = _CHILDREN.get(type(m))
    if how is None:  # a subclass
        how = next((v for k, v in _CHILDREN.items() if isinstance(m, k)), 0)
    if how == 0:
        return ()
    if how == 1:
        return (m.arg,)
    if how == 2:
        return tuple([t for _, t in m.terms])
    return m.factors


# how each node holds its children (``children``): 0 none, 1 one argument, 2 a sum's terms,
# 3 the factors of a product
_CHILDREN = {Sym: 0, Num: 0, Index: 0, T: 1, Call: 1, Inv: 1, Pow: 1, MatPow: 1, Add: 2,
             Prod: 3, Had: 3, Kron: 3}


def occurrences(m: M) -> dict:
    """How many times each subtree (by id) is written in m: a shared subtree counts once per
    place that holds it."""
    counts, stack = {}, [m]
    while stack:
        x = stack.pop()
        counts[id(x)] = counts.get(id(x), 0) + 1
        if counts[id(x)] == 1:
            stack.extend(children(x))
    return counts


def _transposes(m) -> int:
    """The number of transposed matrices written in m (memoised on the node: subtrees are
    shared, and a walk per call made printing deep results quadratic)."""
    cached = m.__dict__.get("_transposes")
    if cached is None:
        own = isinstance(m, T) and m.arg.kind == "m"
        cached = own + sum(_transposes(k) for k in children(m))
        object.__setattr__(m, "_transposes", cached)
    return cached


def trace(m: M) -> M:
    """tr(m), written with the fewer transposes of tr(m) = tr(mᵀ)."""
    return Call("s", "tr", min((m, transpose(m)), key=_transposes))
