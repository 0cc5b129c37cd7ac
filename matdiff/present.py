"""The presentation algebra: of all the equal ways to write a result, the simplest.

``simplest(m)`` puts a matrix-notation tree (``notation.py``) into a small e-graph — a set
of equivalence classes of terms, as in egg/egglog — applies every identity of ``RULES`` to
every class until nothing new appears (or a size limit is reached), and extracts from each
class its cheapest member by a cost:

- ``length``: the printed length, each variable counted once more (so a factored
  (A + Aᵀ)x is preferred to Ax + Aᵀx) and each character inside a function's parentheses
  weighing 1.1 (so det(X)² is preferred to det(X²)), with the Matrix Cookbook's conventions
  as cost terms (``REVERSE``: AᵀXᵀBᵀ + BᵀXᵀAᵀ; ``SPREAD``: BX + BᵀX; ``EXPAND``: the
  product rule's long terms apart; docs/conventions.md);
- ``flops(sizes)``: the multiply-adds to compute it at the given sizes (100 per unknown
  dim), products in their best order.

All matches of all rules are found on a snapshot of the graph before any is applied, and
ties between equally cheap forms are broken by a structural key, so the order in which
the rules are written never decides the result.  The index-form IR stays the calculus:
this layer only chooses how a result that is already right is written.

Every rule is an identity that holds for all values where both sides are defined; rules
that need square or symmetric matrices consult the graph's analyses (``dims``, ``sym``).
Each has a numeric test in tests/test_presentation.py.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import threading
import weakref
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

from . import dims as D
from . import notation as N

MAX_NODES = 2000     # saturation stops once the graph holds this many terms …
MAX_ROUNDS = 8       # … or after this many rounds of applying every rule
MAX_SUM = 4          # a sum of more terms is not distributed over a product
NESTED = 1.1         # the weight of a character inside a function's parentheses
COMPLEMENT = 8       # what σ(−u) costs more in a class that holds 1 − σ(u)


# --------------------------------------------------------------------------- the e-graph

class EGraph:
    """Classes of equal terms.  A term (an e-node) is ``(op, data, kids)``: ``data`` holds
    the kind (s, c, r, m) first, then what the op needs (a coefficient, a function name);
    ``kids`` are class ids.  ``find`` gives a class's representative id.

    Kept cheap (issue 24): each class's terms are indexed by operator, sorted once until the
    class changes (``terms``); each id knows its kind; each class knows the classes that use
    it as a kid (``uses``), so that ``rebuild`` re-keys only the terms above a merge and
    recomputes the analyses only where an input changed."""

    def __init__(self):
        self.parent: list = []
        self.kinds: list = []     # id -> the kind of the term that made it (a class's kind)
        self.uses: list = []      # id -> ids of classes holding a term with it as a kid
        self.nodes: dict = {}     # class -> set of e-nodes
        self.memo: dict = {}      # e-node -> class
        self.dims: dict = {}      # class -> shape (tuple of dims), or None where unknown
        self.sym: dict = {}       # class -> symmetric by structure
        self.range: dict = {}     # class -> the interval every entry lies in (``_interval``)
        self.polys: dict = {}     # (class, kind) -> its element-wise polynomial, this round
        self.poly_stack: list = [0, _NONE_MET, []]  # ``_poly``'s expansions under way
        self.poly_busy: set = set()  # … and their keys
        self.ones_leaves: dict = {}  # dims -> the class of the ones vector of them (``_ones_leaf``)
        self.readings: dict = {}  # (rule, class) -> what a rule reads off a class, this round:
        # a class keeps its terms, kind and analyses while a round matches (rules only add new
        # classes; unions wait for the round's end), and ``rebuild`` clears it
        self.index: dict = {}     # class -> {op: its terms of op, sorted}, until it changes
        self.mixed: set = set()   # classes whose terms differ in kind (see ``kind``)
        self.touched: list = []   # ids made or merged since the last rebuild
        self.merged: list = []    # classes merged since the last rebuild (their users re-key)
        self.stale: set = set()   # classes whose range the last rebuild's passes left to redo
        self.changed: set = set()  # … and the classes whose range changed before they were redone
        self.moved: set = set()   # classes the last rebuild merged or re-keyed (``saturate``)
        self.narrowed: set = set()  # … whose range the last rebuild narrowed
        self.flipped: set = set()   # … and the classes it found symmetric
        self.above: set = set()     # the classes using one it merged or re-keyed
        self.shared: set = set()    # the sums the graph held when saturation began that two
        # classes or more use (and their transposes), as representatives (``_distribute``)
        self.extracted = None  # saturate's last extraction (root, cost, size, unions, terms)
        self.features: set = set()  # what the graph's terms hold (``_features``): rules whose
        # ``NEEDS`` are missing cannot match anywhere and are not run
        self.pristine = None  # called once, just before the graph first changes (a class made
        # or merged): ``simplest`` prices its input there, where a rule has changed nothing yet
        self.size = 0
        self.unions = 0
        self.kind = self.kinds.__getitem__  # while no class is mixed (``kind``): a list look-up

    def find(self, a: int) -> int:
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def add(self, op: str, data: tuple, kids=()) -> int:
        parent = self.parent
        kids = tuple([k if parent[k] == k else self.find(k) for k in kids]) if kids else ()
        key = (op, data, kids)
        hit = self.memo.get(key)
        if hit is not None:
            return hit if parent[hit] == hit else self.find(hit)
        if self.pristine is not None:
            self._spoil()
        cid = len(parent)
        parent.append(cid)
        self.kinds.append(data[0])
        uses = self.uses
        uses.append([])
        for k in kids:
            uses[k].append(cid)
        self.nodes[cid] = {key}
        self.memo[key] = cid
        if op == "call" or op == "leaf" or op not in self.features:
            self.features.update(_features(key))
        self.dims[cid] = _dims(self, key)
        self.sym[cid] = False
        self.range[cid] = _interval(self, key)
        self.size += 1
        self.touched.append(cid)
        return cid

    def union(self, a: int, b: int) -> bool:
        parent = self.parent
        if parent[a] != a:
            a = self.find(a)
        if parent[b] != b:
            b = self.find(b)
        if a == b:
            return False
        if self.pristine is not None:
            self._spoil()
        if a > b:
            a, b = b, a
        self.parent[b] = a
        if self.kinds[a] != self.kinds[b] or a in self.mixed or b in self.mixed:
            self.mixed.add(a)
            self.mixed.discard(b)
            self.kind = self._kind
        self.nodes[a] |= self.nodes.pop(b)
        self.dims[a] = self.dims[a] or self.dims.pop(b)
        self.sym[a] = self.sym[a] or self.sym.pop(b, False)
        self.range[a] = _meet(self.range[a], self.range.pop(b, FULL))
        self.uses[a].extend(self.uses[b])
        self.uses[b] = []
        self.index.pop(a, None)
        self.index.pop(b, None)
        if self.readings:
            self.readings = {}
        self.touched.append(a)
        self.merged.append(a)
        self.unions += 1
        return True

    def _spoil(self) -> None:
        """Call ``pristine`` (once): the graph is about to change."""
        hook, self.pristine = self.pristine, None
        hook()

    def _users(self, c: int) -> set:
        """The classes holding a term with class c as a kid (c a representative)."""
        find, parent = self.find, self.parent
        out = {p if parent[p] == p else find(p) for p in self.uses[c]}
        self.uses[c] = list(out)
        return out

    def rebuild(self) -> None:
        """Restore congruence (equal kids make equal terms) and bring the analyses up to
        date.  Only the terms above a merged class are re-keyed, and an analysis is
        recomputed only for a class whose terms or whose kids' analyses changed: the same
        result as re-keying and recomputing everything (ranges in the same class order and
        number of passes), without the cost."""
        self.polys = {}
        self.poly_stack, self.poly_busy = [0, _NONE_MET, []], set()
        self.readings = {}
        if not (self.touched or self.merged or self.stale):  # nothing to bring up to date
            self.changed = set()
            self.moved = set()
            self.narrowed = set()
            self.flipped = set()
            self.above = set()
            return
        find, nodes, memo = self.find, self.nodes, self.memo
        made = self.touched     # made or merged since the last rebuild
        self.touched = []
        moved: set = set()      # merged, or holding a term re-keyed
        while self.merged:
            todo = set()
            for m in self.merged:
                moved.add(m)
                todo |= self._users(find(m))
            self.merged = []
            merges = []
            for c in sorted(todo):
                fresh, rekeyed = set(), False
                for key in nodes[c]:
                    op, data, kids = key
                    canon = tuple(map(find, kids))
                    if canon != kids:
                        rekeyed = True
                        if memo.get(key) is not None:
                            del memo[key]
                        key = (op, data, canon)
                    fresh.add(key)
                if not rekeyed:
                    continue
                nodes[c] = fresh
                self.index.pop(c, None)
                moved.add(c)
                for key in fresh:
                    other = memo.get(key)
                    if other is not None and find(other) != c:
                        merges.append((other, c))
                    else:
                        memo[key] = c
            for a, b in merges:
                self.union(a, b)
        parent = self.parent
        made = {c if parent[c] == c else find(c) for c in made}
        made.update([c if parent[c] == c else find(c) for c in self.touched])
        self.touched = []
        moved = self.moved = {c if parent[c] == c else find(c) for c in moved}
        above: set = set()      # the classes using a moved one
        for c in moved:
            above |= self._users(c)
        self.above = above
        # symmetry, a least fixpoint: a class becomes symmetric once one term is.  A term's
        # verdict reads its kids' symmetry and their transposes (the class of T(kid), the
        # T-terms of a kid's class), which change only where a class is made, merged or
        # re-keyed, or for the classes above those; so only these are looked at
        mixed = self.mixed
        sym, kinds = self.sym, self.kinds
        work = sorted([c for c in made | moved | above if not sym[c] and (kinds[c] == "m" or c in mixed)])
        flipped = self.flipped = set()
        while work:
            c = work.pop()
            if sym[c]:
                continue
            for t in nodes[c]:
                if _symmetric_term(self, t):
                    sym[c] = True
                    flipped.add(c)
                    work.extend([u for u in self._users(c) if not sym[u]])
                    break
        # ranges only narrow: passes in class order carry them upwards, as many as before,
        # each visiting only the classes whose terms or kids' ranges changed since they were
        # last computed (a class made since the last rebuild was computed when it was made)
        # (and of such a class only the terms with a kid whose range changed: the others'
        # intervals are already met into its range)
        stale = {c if parent[c] == c else find(c) for c in self.stale} | moved | above
        changed = {c if parent[c] == c else find(c) for c in self.changed} | moved
        narrowed = self.narrowed = set()
        for _ in range(RANGE_PASSES):
            narrowing = False
            for c in nodes:
                if c not in stale:
                    continue
                stale.discard(c)
                old = self.range[c]
                new = old
                for t in nodes[c]:
                    for k in t[2]:
                        if k in changed:
                            new = _meet(new, _interval(self, t))
                            break
                if new != old:
                    self.range[c] = new
                    narrowing = True
                    changed.add(c)
                    narrowed.add(c)
                    stale |= self._users(c)
            if not narrowing:
                break
        self.stale = stale
        self.changed = changed if stale else set()  # what the classes left stale must see

    def _kind(self, c: int) -> str:
        """The kind of class c's terms (a class whose terms differ in kind — a matrix rule
        merged with a scalar — answers with one of its terms', as it always has).  Each graph
        answers ``kind`` with its list of kinds until a class is mixed, then with this."""
        if self.mixed:
            r = self.find(c)
            if r in self.mixed:
                return next(iter(self.nodes[r]))[1][0]
        return self.kinds[c]

    kind = _kind

    def ordered(self, c: int) -> list:
        """All terms of class c, in a fixed order."""
        return self.terms(c, None)

    def terms(self, c: int, op: str) -> list:
        """The terms of class c with operator op (all of them for None), in a fixed order."""
        parent = self.parent
        while parent[c] != c:
            c = parent[c]
        idx = self.index.get(c)
        if idx is None:
            idx = self._index(c)
        return idx.get(op, _NONE)

    def _index(self, c: int) -> dict:
        idx = self.index.get(c)
        if idx is None:
            ts = self.nodes[c]
            if len(ts) == 1:  # most classes: nothing to sort
                everything = list(ts)
                idx = {None: everything, everything[0][0]: everything}
            else:
                everything = sorted(ts, key=_order_key)
                idx = {None: everything}
                for t in everything:
                    idx.setdefault(t[0], []).append(t)
            self.index[c] = idx
        return idx


_NONE: list = []  # no terms (never mutated)


def _features(t) -> tuple:
    """What term t brings to the graph for ``NEEDS``: its operator, a call's function name,
    a symbol's role (a vector of ones, the identity)."""
    op, data, _ = t
    if op == "call":
        return op, ("call", data[1])
    if op == "leaf" and isinstance(data[1], N.Sym):
        if data[1].role == "one" and data[1].kind == "m":
            return op, ("role", "one"), _ONES_MATRIX
        return op, ("role", data[1].role)
    return op,


_ONES_MATRIX = ("ones", "m")  # the feature of a graph holding the all-ones matrix J


def _ones_matrices(g, kids, kid_ops) -> int:
    """How many of a product's factors are the all-ones matrix J, which beside another factor
    is written 11ᵀ (alone, or as a term of a sum, 1)."""
    return sum(1 for k, o in zip(kids, kid_ops) if o == "leaf" and _ones_dims(g, k, "m") is not None)


def _ones_dims(g, c, kind):
    """The dims of class c's all-ones leaf of this kind ("c" the vector, "m" the matrix J), or
    None where it holds none."""
    for op, d, _ in g.nodes[g.find(c)]:
        if op == "leaf" and isinstance(d[1], N.Sym) and d[1].role == "one" and d[1].kind == kind:
            return d[1].dims
    return None


def _order_key(t):
    op, data, kids = t
    return (op, repr(data), kids)


_RANK = {"c": 1, "r": 1, "m": 2}  # the dims a leaf of each kind has


def _dims(g: EGraph, key) -> tuple | None:
    """The shape of a term from its kids' shapes (None where a kid's is unknown)."""
    op, data, kids = key
    kind = data[0]
    if kind == "s":
        return ()
    if op == "leaf":
        m = data[1]
        if isinstance(m, N.Sym):
            return tuple(m.dims) if len(m.dims) == _RANK[kind] else None
        if isinstance(m, N.Index):
            return tuple(m.node.shape)
        return None
    get, find, parent = g.dims.get, g.find, g.parent
    ks = [get(k if parent[k] == k else find(k)) for k in kids]
    if op == "prod":
        kind_of = g.kind
        shaped = []
        for k, s in zip(kids, ks):
            kk = kind_of(k)
            if kk != "s":
                shaped.append((kk, s))
        if not shaped:
            return None
        for _, s in shaped:
            if s is None:
                return None
        (k0, s0), (k1, s1) = shaped[0], shaped[-1]
        rows = s0[:1] if k0 in ("c", "m") else ()
        cols = s1[-1:] if k1 in ("r", "m") else ()
        return rows + cols
    if op == "T" or op == "call" and data[1] == "pinv":  # Xᵀ and X⁺ are (k, n) for an (n, k) X
        return tuple(reversed(ks[0])) if ks[0] is not None else None
    if op in ("inv", "matpow", "pow", "had") or (op == "call" and data[1] not in ("diag", "tr", "det")):
        return next((k for k in ks if k is not None), None)
    if op == "add":
        return next((k for k in ks if k is not None), None)
    if op == "call" and data[1] == "diag":
        if kind == "m" and ks[0] is not None:
            return (ks[0][0], ks[0][0])
        if kind == "c" and ks[0] is not None:
            return (ks[0][0],)
        return None
    if op == "kron":
        if any(s is None for s in ks):
            return None
        kinds = [g.kind(k) for k in kids]
        rows, cols = 1, 1
        for k, s in zip(kinds, ks):
            if k in ("c", "m"):
                rows = D.mul(rows, s[0])
            if k in ("r", "m"):
                cols = D.mul(cols, s[-1])
        return {"c": (rows,), "r": (cols,), "m": (rows, cols)}[kind]
    return None


def _square(g: EGraph, c: int) -> bool:
    s = g.dims.get(g.find(c))
    return g.kind(c) == "m" and s is not None and s[0] == s[1]


def _symmetric_term(g: EGraph, t) -> bool:
    op, data, kids = t
    if data[0] != "m":
        return False
    if op == "leaf":
        return N.symmetric(data[1])
    if op in ("inv", "matpow"):
        return g.sym[g.find(kids[0])]
    if op == "call":
        return data[1] == "diag"
    if op == "had":
        return all(g.sym[g.find(k)] for k in kids)
    if op == "prod":
        kind = g.kind
        fs = [k for k in kids if kind(k) != "s"]
        for i in range((len(fs) + 1) // 2):
            if not _transposes(g, fs[i], fs[-1 - i]):
                return False
        return True
    if op == "add":
        coefs = dict(zip(data[1], kids))
        find, sym = g.find, g.sym
        for c, k in zip(data[1], kids):
            k = find(k)
            if not (sym[k] or _transpose_of(g, k, find(coefs[c]))):
                return False
        return True
    return False


def _transposed(g: EGraph, c: int) -> list:
    """Classes known to be cᵀ: the class of T(c), and a if c holds T(a)."""
    out = []
    hit = g.memo.get(("T", (_T[g.kind(c)],), (g.find(c),)))
    if hit is not None:
        out.append(g.find(hit))
    out.extend(g.find(k[0]) for _, _, k in g.terms(c, "T"))
    return out


def _transposes(g: EGraph, a: int, b: int) -> bool:
    """Whether b is aᵀ (for the middle factor of a palindrome, whether a is symmetric)."""
    parent = g.parent
    if parent[a] != a:
        a = g.find(a)
    if parent[b] != b:
        b = g.find(b)
    if a == b and g.sym[a]:
        return True
    return _transpose_of(g, a, b) or _transpose_of(g, b, a)


def _transpose_of(g: EGraph, c: int, x: int) -> bool:
    """Whether x is among ``_transposed(g, c)``, without making the list (c a representative)."""
    hit = g.memo.get(("T", (_T[g.kind(c)],), (c,)))
    if hit is not None and g.find(hit) == x:
        return True
    for _, _, k in g.terms(c, "T"):
        if g.find(k[0]) == x:
            return True
    return False


# --------------------------------------------------------------------------- the range analysis

INF = float("inf")
FULL = (-INF, False, INF, False)  # (low, low open, high, high open): every entry lies between
RANGE_PASSES = 4                   # passes of rebuild that carry narrowed ranges upwards
# the ranges of built-in element-wise functions (σ in (0, 1); exp, softplus, softmax > 0; …)
FUNCTION_RANGES = {
    "sigmoid": (0.0, True, 1.0, True), "softmax": (0.0, True, 1.0, True),
    "exp": (0.0, True, INF, False), "softplus": (0.0, True, INF, False),
    "tanh": (-1.0, True, 1.0, True), "cosh": (1.0, False, INF, False),
    "relu": (0.0, False, INF, False), "step": (0.0, False, 1.0, False),
    "abs": (0.0, False, INF, False), "sign": (-1.0, False, 1.0, False),
    "sqrt": (0.0, False, INF, False), "norm": (0.0, False, INF, False),
    "nuclear": (0.0, False, INF, False), "spectral": (0.0, False, INF, False),
    "svdvals": (0.0, False, INF, False), "expm1": (-1.0, True, INF, False),
    "arctan": (-1.5707963267948966, True, 1.5707963267948966, True),
}


def _meet(a, b):
    """The intersection of two ranges of one value (both hold, so the narrower bounds do)."""
    lo = max((a[0], a[1]), (b[0], b[1]))
    hi = min((a[2], not a[3]), (b[2], not b[3]))
    return (lo[0], lo[1], hi[0], not hi[1])


def _hull(a, b):
    """The smallest range holding both."""
    lo = min((a[0], a[1]), (b[0], b[1]))
    hi = max((a[2], not a[3]), (b[2], not b[3]))
    return (lo[0], lo[1], hi[0], not hi[1])


def _pw(x, p):
    """xᵖ of a bound, ∞ where it overflows or divides by 0."""
    try:
        return x ** p
    except (OverflowError, ZeroDivisionError):
        return INF


def _scale(c, r):
    if c == 0:
        return (0.0, False, 0.0, False)
    lo, lo_open, hi, hi_open = r
    return (c * lo, lo_open, c * hi, hi_open) if c > 0 else (c * hi, hi_open, c * lo, lo_open)


def _sum(a, b):
    return (a[0] + b[0], a[1] or b[1], a[2] + b[2], a[3] or b[3])


def _product(a, b):
    """The range of x·y for x in a and y in b: the extremes of the endpoints' products; an
    extreme is attained where both its endpoints are, or where one of them is an attained 0."""
    x0, o0, x1, o1 = a
    y0, p0, y1, p1 = b
    # the four endpoint pairs, (x0, y0), (x0, y1), (x1, y0), (x1, y1), written out: x·y with
    # 0·∞ read as 0, and whether it is attained (a finite product of attained endpoints, or
    # of an attained 0)
    v0 = 0.0 if x0 == 0 or y0 == 0 else x0 * y0
    s0 = ((not o0 and not p0) or (not o0 and x0 == 0) or (not p0 and y0 == 0)) and abs(v0) != INF
    v1 = 0.0 if x0 == 0 or y1 == 0 else x0 * y1
    s1 = ((not o0 and not p1) or (not o0 and x0 == 0) or (not p1 and y1 == 0)) and abs(v1) != INF
    v2 = 0.0 if x1 == 0 or y0 == 0 else x1 * y0
    s2 = ((not o1 and not p0) or (not o1 and x1 == 0) or (not p0 and y0 == 0)) and abs(v2) != INF
    v3 = 0.0 if x1 == 0 or y1 == 0 else x1 * y1
    s3 = ((not o1 and not p1) or (not o1 and x1 == 0) or (not p1 and y1 == 0)) and abs(v3) != INF
    lo, hi = min(v0, v1, v2, v3), max(v0, v1, v2, v3)
    return (lo, not ((s0 and v0 == lo) or (s1 and v1 == lo) or (s2 and v2 == lo) or (s3 and v3 == lo)),
            hi, not ((s0 and v0 == hi) or (s1 and v1 == hi) or (s2 and v2 == hi) or (s3 and v3 == hi)))


def _power_range(r, p):
    """The range of xᵖ, where it is defined, for x in r."""
    lo, lo_open, hi, hi_open = r
    if p == 0:
        return (1.0, False, 1.0, False)
    integer = float(p).is_integer()
    if not integer or lo >= 0:  # a non-integer power is defined for x ≥ 0 only
        if lo < 0:
            lo, lo_open = 0.0, False
        if p > 0:
            return (_pw(lo, p), lo_open, _pw(hi, p), hi_open)
        if lo > 0 or lo_open:  # x > 0: xᵖ falls as x grows
            return (0.0 if hi == INF else _pw(hi, p), True if hi == INF else hi_open,
                    INF if lo == 0 else _pw(lo, p), False if lo == 0 else lo_open)
        return (0.0, True, INF, False)
    if int(p) % 2 == 0:  # an even power: ≥ 0, and > 0 where x ≠ 0 is known
        nonzero = hi < 0 or (hi == 0 and hi_open)
        return (0.0, nonzero or p < 0, INF, False)
    if p > 0:  # an odd power is increasing
        return (-INF if lo == -INF else -_pw(-lo, p) if lo < 0 else _pw(lo, p), lo_open, _pw(hi, p), hi_open)
    return FULL


ROLE_RANGES = {"one": (1.0, False, 1.0, False), "zero": (0.0, False, 0.0, False),
               "dim": (1.0, False, INF, False), "eye": (0.0, False, 1.0, False)}


def _interval(g, t):
    """The range of term t's entries from its kids' ranges (FULL where nothing is known):
    the sign analysis that licenses (sᵖ)ᵠ = sᵖᵠ, (st)ᵖ = sᵖtᵖ and |s| = s."""
    op, data, kids = t
    if op == "leaf":
        m = data[1]
        if isinstance(m, N.Num):
            return (m.value, False, m.value, False)
        return ROLE_RANGES.get(getattr(m, "role", "var"), FULL)
    get, find, parent = g.range.get, g.find, g.parent
    rs = [get(k if parent[k] == k else find(k), FULL) for k in kids]
    if op == "prod":
        kind_of = g.kind
        kinds = [kind_of(k) for k in kids]
        mats = [r for kk, r in zip(kinds, rs) if kk != "s"]
        if len(mats) > 1:
            for r in mats:
                if not r[0] >= 0:
                    return FULL  # what the scalar factors give is lost in the matrix product (below)
        out = (data[1], False, data[1], False)
        for kk, r in zip(kinds, rs):
            if kk == "s" or len(mats) == 1:
                out = _product(out, r)
        if len(mats) > 1:  # a matrix product: sums of products, ≥ 0 where every factor is
            out = _product(out, (0.0, False, INF, False))
        return out
    if op == "T":
        return rs[0]
    if op == "call":
        name, order, fn = data[1], data[2], data[4]
        if order != 0 or (fn is not None and not getattr(fn, "builtin", True)):
            return FULL  # σ′, a user's function named like a built-in
        if name == "sqrt":
            return _power_range(rs[0], 0.5)
        if name == "abs":  # > 0 where the argument is known to be ≠ 0
            lo, lo_open, hi, hi_open = rs[0]
            return (0.0, lo > 0 or (lo == 0 and lo_open) or hi < 0 or (hi == 0 and hi_open), INF, False)
        if name == "diag":  # diag(A) holds A's entries; diag(v) v's and zeros
            return rs[0] if data[0] == "c" else _hull(rs[0], (0.0, False, 0.0, False))
        return FUNCTION_RANGES.get(name, FULL)
    if op == "pow":
        return _power_range(rs[0], data[1])
    if op == "add":
        out = (0.0, False, 0.0, False)
        for c, r in zip(data[1], rs):
            out = _sum(out, _scale(c, r))
        return out
    if op in ("had", "kron"):
        out = (1.0, False, 1.0, False)
        for r in rs:
            out = _product(out, r)
        return out
    return FULL


def _nonnegative(g, c) -> bool:
    """Whether every entry of class c is ≥ 0 by the range analysis."""
    return g.range.get(g.find(c), FULL)[0] >= 0


def _positive_range(g, c) -> bool:
    """Whether every entry of class c is > 0 by the range analysis."""
    lo, lo_open = g.range.get(g.find(c), FULL)[:2]
    return lo > 0 or (lo == 0 and lo_open)


# --------------------------------------------------------------------------- notation in and out

_T = {"s": "s", "c": "r", "r": "c", "m": "m"}


_LEAVES = (N.Sym, N.Num, N.Index)


def ingest(g: EGraph, m: N.M, seen: dict) -> int:
    """The class of m, adding its terms (shared subtrees once)."""
    hit = seen.get(id(m))
    if hit is not None:
        return hit
    k = m.kind
    if isinstance(m, _LEAVES):
        cid = g.add("leaf", (k, m))
    elif isinstance(m, N.T):
        cid = g.add("T", (k,), (ingest(g, m.arg, seen),))
    elif isinstance(m, N.Prod):
        cid = g.add("prod", (k, m.coef), [ingest(g, f, seen) for f in m.factors])
    elif isinstance(m, (N.Had, N.Kron)):
        cid = g.add("had" if isinstance(m, N.Had) else "kron", (k,),
                    [ingest(g, f, seen) for f in m.factors])
    elif isinstance(m, N.Add):
        cid = g.add("add", (k, tuple([c for c, _ in m.terms])), [ingest(g, t, seen) for _, t in m.terms])
    elif isinstance(m, N.Call):
        cid = g.add("call", (k, m.name, m.order, m.axis, m.fn), (ingest(g, m.arg, seen),))
    elif isinstance(m, N.Inv):
        cid = g.add("inv", (k,), (ingest(g, m.arg, seen),))
    elif isinstance(m, N.Pow):
        cid = g.add("pow", (k, m.p), (ingest(g, m.arg, seen),))
    elif isinstance(m, N.MatPow):
        cid = g.add("matpow", (k, m.k), (ingest(g, m.arg, seen),))
    else:  # any other leaf
        cid = g.add("leaf", (k, m))
    seen[id(m)] = cid
    return cid


def build(t, kids: list) -> N.M:
    """The notation node of term t with its kids' chosen nodes."""
    op, data, _ = t
    k = data[0]
    if op == "leaf":
        return data[1]
    if op == "T":
        return kids[0] if kids[0].kind == "s" else N.T(k, kids[0])
    if op == "prod":
        return N.prod(data[1], kids)
    if op == "had":
        return N.had(kids)
    if op == "kron":
        return N.Kron(k, tuple(kids))
    if op == "add":
        return N.add(list(zip(data[1], kids)))
    if op == "call":
        return N.Call(k, data[1], kids[0], data[2], data[3], data[4])
    if op == "inv":
        return N.Inv(k, kids[0])
    if op == "pow":
        return N.Pow(k, kids[0], data[1])
    if op == "matpow":
        return N.MatPow(k, kids[0], data[1])
    raise AssertionError(op)


# --------------------------------------------------------------------------- costs

def _memo_by_value(f):
    """f memoised on its numeric argument (and its type, which repr shows): the costs and the
    element-wise normal form ask for the same few numbers again and again."""
    table: dict = {}

    def memo(v):
        key = (type(v), v)
        hit = table.get(key, table)
        if hit is table:
            if len(table) > 4096:
                table.clear()
            hit = table[key] = f(v)
        return hit
    memo.__doc__ = f.__doc__
    return memo


def _memo_by_identity(f):
    """f memoised on its argument's identity (the leaf itself is kept, so its id is not reused
    while the entry lives): a notation leaf's cost or text, asked for in every extraction."""
    table: dict = {}  # id(leaf) -> (leaf, f(leaf))

    def memo(m):
        hit = table.get(id(m))
        if hit is None or hit[0] is not m:
            if len(table) > 4096:
                table.clear()
            hit = table[id(m)] = (m, f(m))
        return hit[1]
    memo.__doc__ = f.__doc__
    return memo


@_memo_by_value
def _number_length(c: float) -> int:
    if float(c).is_integer():
        return len(str(int(abs(c))))
    f = Fraction(c).limit_denominator(1000)
    return len(f"({abs(f.numerator)}/{f.denominator})") if float(f) == c else len(repr(abs(c)))


COMPOUND = {"prod", "add", "had", "kron"}
PAREN = 0.5          # a parenthesis (half a character: (x − a)ᵀ is preferred to xᵀ − aᵀ,
                     # but a transpose of a product costs one more: AᵀBᵀ, not (BA)ᵀ)
MARK = 1.25          # a ᵀ or ⁻¹ mark
OUTSIDE = 0.01       # a power of a transpose, a hair more than the transpose of the power:
                     # (X²)ᵀ, as the Matrix Cookbook writes ∂tr(Xᵏ)/∂X = k(Xᵏ⁻¹)ᵀ (121)
SIGN = 0.01          # a sum whose terms are all negative, a hair more than the sum with the
                     # sign taken out: the sign leads a product, −AX(B + C), not AX(−B − C)
REVERSE = 3          # a transpose over a product of k > 2 matrices, (k − 2)·REVERSE more (over
                     # a sum, its terms' sum): the reader reverses the product to read it, so it
                     # is distributed, AᵀXᵀBᵀ + BᵀXᵀAᵀ, not (AXB + BXA)ᵀ (Matrix Cookbook, 114),
                     # while two stay transposed, (XB + BX)ᵀ (107)
SPREAD = 8           # M + Mᵀ beside a matrix in a product: the Cookbook writes BX + BᵀX and
                     # CᵀXBBᵀ + CXBBᵀ (108)–(113), (116), but (B + Bᵀ)x beside a vector (81), (83),
                     # and keeps the sum where distributing would repeat more, (125)
EXPAND = 16          # a sum holding a product of ``notation.LONG`` matrices or more, as a factor of a
                     # product or under a number: the terms of the product rule are written
                     # apart, −2CX(XᵀCX)⁻¹XᵀBX(XᵀCX)⁻¹ + 2BX(XᵀCX)⁻¹ (126), but 2Aᵀ(AXB + C)Bᵀ (119)


def _matrices(g, kids) -> int:
    return sum(g.kind(k) != "s" for k in kids)


def _reversed_matrices(g, c) -> int:
    """The matrices beyond two of a product in class c (the longest reading)."""
    return max((_matrices(g, kk) - 2 for _, _, kk in g.terms(c, "prod")), default=0) if \
        g.terms(c, "prod") else 0


def _reversal(g, c, op: str) -> int:
    """What a reader reverses to read class c, written with head op, transposed: a product's
    matrices beyond two, or the sum of those of a sum's terms."""
    if op == "prod":
        return max(0, _reversed_matrices(g, c))
    if op == "add":
        return min((sum(max(0, _reversed_matrices(g, k)) for k in kk) for _, _, kk in g.terms(c, "add")),
                   default=0)
    return 0


def _transpose_pair(g, c) -> bool:
    """Whether class c holds M + Mᵀ (or −M − Mᵀ), or a product with such a factor,
    (C + Cᵀ)X = CX + CᵀX."""
    terms = g.terms
    for _, d, kk in terms(c, "add"):
        if len(kk) == 2 and d[1][0] == d[1][1] and _transposes(g, kk[0], kk[1]):
            return True
    for _, _, kk in terms(c, "prod"):
        for k in kk:
            for _, d2, k2 in terms(k, "add"):
                if len(k2) == 2 and d2[1][0] == d2[1][1] and _transposes(g, k2[0], k2[1]):
                    return True
    return False


def _long_terms(g, c) -> bool:
    """Whether class c holds a sum with a term that is a product of ``notation.LONG`` or more
    matrices (vectors and scalars not counted)."""
    kind, terms = g.kind, g.terms
    for _, _, kk in terms(c, "add"):
        for k in kk:
            for _, _, k2 in terms(k, "prod"):
                if len(k2) >= N.LONG and sum([kind(x) == "m" for x in k2]) >= N.LONG:
                    return True
    return False


def _sum_factors(g, coef, kids, kid_ops) -> float:
    """The textbook terms of a product's factors that are sums (``SPREAD``, ``EXPAND``)."""
    extra = 0.0
    kind, last = g.kind, len(kids) - 1
    for i, (k, o) in enumerate(zip(kids, kid_ops)):
        if o != "add" or kind(k) == "s":
            continue
        beside = (i > 0 and kind(kids[i - 1]) == "m") or (i < last and kind(kids[i + 1]) == "m")
        if beside and kind(k) == "m" and _transpose_pair(g, k):  # a matrix beside it
            extra += SPREAD
        others = any([n != i and kind(x) != "s" for n, x in enumerate(kids)])
        if (others or abs(coef) != 1) and _long_terms(g, k):
            extra += EXPAND
    return extra


@_memo_by_identity
def _frechet_length(m: N.Sym) -> float:
    """What L_f(X, E) or L²_f(X; E₁, E₂) costs as printed: its name, parentheses and
    separators, and X and the directions as written, inside parentheses (``NESTED``)."""
    inner = m.params[1:]
    return len(m.name) + 2 + 2 * (len(inner) - 1) + NESTED * sum(cost_of(p) for p in inner)


_WRAPPED = ("add", "had", "kron")


def length(g, t, kid_costs: list, kid_ops: list) -> float:
    """Printed characters of term t given its kids' (costs, head ops); the characters in a
    function's parentheses weigh ``NESTED``."""
    op, data, kids = t
    if op == "leaf":
        m = data[1]
        if isinstance(m, N.Sym):  # a name read once more costs one more: (A + Aᵀ)x, not Ax + Aᵀx
            if m.role in ("frechet", "frechet2"):
                return _frechet_length(m)
            return len(m.name) + 1 if m.role in ("var", "dim") else 1
        if isinstance(m, N.Num):
            return _number_length(m.value) + (m.value < 0)
        return 40 + len(getattr(m, "text", ""))
    if op == "prod":
        coef = data[1]
        lead = 0 if coef == 1 else 1 if coef == -1 else _number_length(coef) + (coef < 0)
        # 4(r ⊘ s) is longer than 4r ⊘ s
        return lead + sum([c + (2 * PAREN if o in _WRAPPED else 0) for c, o in zip(kid_costs, kid_ops)]) + \
            (_sum_factors(g, coef, kids, kid_ops) if "add" in kid_ops else 0) + \
            (2 * _ones_matrices(g, kids, kid_ops) if _ONES_MATRIX in g.features else 0)
    if op == "add":
        coefs = data[1]
        return sum(kid_costs) + 3 * (len(kids) - 1) + sum(
            [0 if abs(c) == 1 else _number_length(c) for c in coefs]) + (coefs[0] < 0) + \
            SIGN * all([c < 0 for c in coefs])
    wrap = [2 * PAREN if kid_ops[0] in COMPOUND else 0]  # the parentheses around a single
    # argument (T, inv, matpow, pow)
    if op == "T":  # over a product one more: a reader distributes it, AᵀBᵀ rather than (BA)ᵀ
        if kid_ops[0] == "inv":  # X⁻ᵀ: one mark, as X⁻¹ (a hair more: a symmetric S⁻¹'s class
            # holds (S⁻¹)ᵀ, which must never be its own best term); over a long product, what
            # the reader reverses: (XᵀAᵀX)⁻¹, not (XᵀAX)⁻ᵀ (Matrix Cookbook, 54)
            return kid_costs[0] + 1e-6 + REVERSE * sum(
                max(0, _reversed_matrices(g, k[0])) for _, _, k in g.terms(kids[0], "inv")[:1])
        return kid_costs[0] + MARK + wrap[0] + (kid_ops[0] == "prod") + \
            REVERSE * _reversal(g, kids[0], kid_ops[0])
    if op == "inv":
        return kid_costs[0] + 2 * MARK + wrap[0]
    if op == "matpow":
        return kid_costs[0] + len(str(data[1])) + wrap[0] + (kid_ops[0] == "T") * OUTSIDE
    if op == "pow":
        p = data[1]
        mark = 1 if p == 0.5 else (len(str(int(p))) if float(p).is_integer() else 2 + _number_length(p))
        return kid_costs[0] + mark + (data[0] != "s") * 2 + wrap[0]
    if op == "call":
        name = data[1]
        frame = 3 if name in ("norm", "nuclear", "spectral") else len(name) + 2  # ‖x‖, ‖X‖_F, ‖X‖_*
        home = g.memo.get(t) if name == "sigmoid" else None
        if home is not None and any(_complement(g, other) for other in g.nodes[g.find(home)]):
            frame += COMPLEMENT  # σ(−u) beside σ(u): written 1 − σ(u)
        return frame + NESTED * kid_costs[0]
    if op in ("had", "kron"):
        body = sum([c + (2 * PAREN if o == "add" else 0) for c, o in zip(kid_costs, kid_ops)])
        return body + 3 * (len(kids) - 1)
    raise AssertionError(op)


def flops(sizes: dict | None = None, default: int = 100):
    """The multiply-adds to compute a term at ``sizes`` (``default`` for a dim not given):
    a product in its best order (matrix-chain), inverses and determinants n³, sums and
    element-wise operations one per entry."""
    sizes = dict(sizes or {})

    def number(d):
        return D.resolve(d, {**{f: default for f in D.names((d,))}, **sizes})

    def entries(g, c):
        shape = g.dims.get(g.find(c))
        if shape is None:
            return {"s": 1, "c": default, "r": default, "m": default * default}[g.kind(c)]
        out = 1
        for d in shape:
            out *= number(d)
        return out

    def side(g, c):
        """(rows, columns) of a factor as numbers."""
        shape, kind = g.dims.get(g.find(c)), g.kind(c)
        n = [number(d) for d in shape] if shape is not None else [default] * {"c": 1, "r": 1, "m": 2}[kind]
        return {"c": (n[0], 1), "r": (1, n[0]), "m": (n[0], n[-1])}[kind]

    def chain(g, kids):
        ms = [side(g, k) for k in kids if g.kind(k) != "s"]
        if len(ms) < 2:
            return 0
        best = {(i, i): 0 for i in range(len(ms))}
        for span in range(1, len(ms)):
            for i in range(len(ms) - span):
                j = i + span
                best[i, j] = min(best[i, k] + best[k + 1, j] + ms[i][0] * ms[k][1] * ms[j][1]
                                 for k in range(i, j))
        return best[0, len(ms) - 1]

    def cost(g, t, kid_costs, kid_ops):
        op, data, kids = t
        own = 0
        if op in ("inv", "matpow") or op == "call" and data[1] in ("det", "logdet"):
            r = side(g, kids[0])[0]
            own = r ** 3 * (1 if op != "matpow" else max(1, abs(int(data[1])).bit_length()))
        elif op == "call" and data[1] in ("tr", "diag"):
            own = side(g, kids[0])[0]
        elif op in ("call", "pow", "kron"):
            own = entries(g, kids[0]) if op != "kron" else 0
        elif op in ("had", "add"):
            n = entries(g, kids[0])
            own = n * (len(kids) - 1) + (n * sum(abs(c) != 1 for c in data[1]) if op == "add" else 0)
        elif op == "prod":
            scalars = sum(g.kind(k) == "s" for k in kids) + (data[1] != 1)
            mats = [k for k in kids if g.kind(k) != "s"]
            own = chain(g, kids) + scalars * (entries(g, mats[-1]) if mats else 1)
        return own + sum(kid_costs)

    return cost


# --------------------------------------------------------------------------- rules

@dataclass(frozen=True)
class Rule:
    """One identity: its name as written in docs/conventions.md, its group (the issue's six),
    and ``apply(g, c, t)`` giving the classes equal to class c by term t."""

    name: str
    group: str
    op: str
    apply: Callable


def _T_of(g, c):
    k = g.kind(c)
    return c if k == "s" else g.add("T", (_T[k],), (c,))


def _prod(g, kind, coef, kids):
    if coef == 1 and len(kids) == 1:
        return g.find(kids[0])
    return g.add("prod", (kind, coef), kids)


def _double_transpose(g, c, t):
    return [k[0] for _, _, k in g.terms(t[2][0], "T")]


def _symmetric_transpose(g, c, t):
    return [t[2][0]] if g.sym[g.find(t[2][0])] else []


def _transpose_product(g, c, t):
    out = []
    for _, data, kids in g.terms(t[2][0], "prod"):
        out.append(_prod(g, t[1][0], data[1], [_T_of(g, k) for k in reversed(kids)]))
    return out


def _transpose_sum(g, c, t):
    return [g.add("add", (t[1][0], data[1]), tuple(_T_of(g, k) for k in kids))
            for _, data, kids in g.terms(t[2][0], "add")]


def _sum_of_transposes(g, c, t):
    """Aᵀ + Bᵀ = (A + B)ᵀ: (x − a)ᵀ rather than xᵀ − aᵀ."""
    if t[1][0] == "s":
        return []
    options = []
    for k in t[2]:
        ts = g.terms(k, "T")
        if not ts:
            return []
        options.append([k2[0] for _, _, k2 in ts])
    if math.prod(map(len, options)) > 8:
        return []
    inner = _T[t[1][0]]
    return [g.add("T", (t[1][0],), (g.add("add", (inner, t[1][1]), combo),))
            for combo in itertools.product(*options)]


def _inverse_transpose(g, c, t):
    """(Aᵀ)⁻¹ = (A⁻¹)ᵀ, both ways."""
    out = [g.add("T", ("m",), (g.add("inv", ("m",), (k[0],)),)) for _, _, k in g.terms(t[2][0], "T")]
    return out


def _transpose_inverse(g, c, t):
    return [g.add("inv", ("m",), (g.add("T", ("m",), (k[0],)),)) for _, _, k in g.terms(t[2][0], "inv")]


# matrix functions of a power series with real coefficients: f(Aᵀ) = f(A)ᵀ
PRIMARY = ("expm", "logm", "sqrtm") + tuple(f + "ₘ" for f in (
    "sin", "cos", "tan", "tanh", "sinh", "cosh", "sigmoid", "softplus", "log1p", "expm1", "arctan"))


def _function_of_transpose(g, c, t):
    """f(Aᵀ) = f(A)ᵀ for expm, logm, sqrtm."""
    if t[1][1] not in PRIMARY:
        return []
    return [g.add("T", ("m",), (g.add("call", t[1], (k[0],)),)) for _, _, k in g.terms(t[2][0], "T")]


def _transpose_of_function(g, c, t):
    return [g.add("call", d, (g.add("T", ("m",), (k[0],)),)) for _, d, k in g.terms(t[2][0], "call")
            if d[1] in PRIMARY]


def _double_inverse(g, c, t):
    return [k[0] for _, _, k in g.terms(t[2][0], "inv")]


def _like_terms(g, c, t):
    """cA + dA = (c + d)A, and the coefficient of a scaled term moves onto the sum."""
    kind, coefs = t[1]
    acc: dict = {}
    changed = False
    for coef, k in zip(coefs, t[2]):
        k = g.find(k)
        scaled = None
        if not changed:
            for _, d, kk in g.terms(k, "prod"):
                if d[1] != 1:
                    scaled = (d[1], kk)
                    break
        if scaled is not None:
            (s, kk) = scaled
            k = _prod(g, kind, 1.0, kk)
            coef *= s
            changed = True
        changed |= k in acc
        acc[k] = acc.get(k, 0.0) + coef
    if not changed:
        return []
    items = [(d, k) for k, d in acc.items() if d != 0]
    if not items:
        return []
    if len(items) == 1:
        d, k = items[0]
        return [_prod(g, kind, d, [k])]
    return [g.add("add", (kind, tuple(d for d, _ in items)), tuple(k for _, k in items))]


def _flatten_product(g, c, t):
    """a(bc) = abc, with coefficients multiplied: products stay flat.  A kid whose first
    product holds the kid's own class is not flattened."""
    kind, coef = t[1]
    out = []
    for i, k in enumerate(t[2]):
        for _, d, kk in g.terms(k, "prod"):
            if d[0] == "s" and any(g.kind(x) != "s" for x in kk) and len(t[2]) > 1:
                continue  # xᵀAx stays one scalar factor: (xᵀAx)Ax, never xᵀAxAx
            if g.find(k) in map(g.find, kk):
                break  # k = B·k·A (det AXB's (AXB)⁻¹ = (AXB)⁻¹AA⁻¹): never chosen, and put
                # in place of k it made ever-longer products every round (issue 24)
            out.append(_prod(g, kind, coef * d[1], t[2][:i] + kk + t[2][i + 1:]))
            break
    return out[:2]


def _halves(g, c, kind):
    """For a class holding PᵀP or PPᵀ written as a palindrome of transposes (xᵀx,
    xᵀAᵀAx, AWWᵀAᵀ): the classes of the halves whose norm it is the square of."""
    out = []
    kind_of = g.kind
    for _, d, kk in g.terms(c, "prod"):
        if d[0] != kind or d[1] != 1 or len(kk) % 2 or "s" in [kind_of(k) for k in kk]:
            continue
        h = len(kk) // 2
        if True in [_is_ones(g, k) for k in kk]:
            continue  # 1ᵀ1 is n, not ‖1‖²
        for i in range(h):
            if not _transposes(g, kk[i], kk[-1 - i]):
                break
        else:
            left, right = kk[:h], kk[h:]
            for half in (right, left) if kind == "s" else (left, right):
                hk = N._product_kind([g.kind(x) for x in half])
                if (kind == "s" and hk == "c") or (kind == "m" and hk in ("m", "c")):
                    out.append(_prod(g, hk, 1.0, half))
    return out


def _norm(g, c, t):
    """(xᵀx)ᵖ = ‖x‖²ᵖ and tr(XᵀX)ᵖ = ‖X‖_F²ᵖ (both bases are ≥ 0)."""
    p = t[1][1]
    base = t[2][0]
    targets = _halves(g, base, "s")
    for _, d, kk in g.terms(base, "call"):
        if d[1] == "tr":
            targets += _halves(g, kk[0], "m")
    out = []
    for x in targets[:2]:
        norm = g.add("call", ("s", "norm", 0, None, None), (x,))
        out.append(norm if 2 * p == 1 else g.add("pow", ("s", 2 * p), (norm,)))
    return out


def _norm_square(g, c, t):
    """xᵀx = ‖x‖² (the class of a norm's square then meets (xᵀx)ᵖ's)."""
    if t[1][0] != "s":
        return []
    return [g.add("pow", ("s", 2.0), (g.add("call", ("s", "norm", 0, None, None), (x,)),))
            for x in _halves(g, c, "s")[:1]]


def _trace_square(g, c, t):
    """tr(XᵀX) = ‖X‖_F²."""
    if t[1][1] != "tr":
        return []
    return [g.add("pow", ("s", 2.0), (g.add("call", ("s", "norm", 0, None, None), (x,)),))
            for x in _halves(g, t[2][0], "m")[:2]]  # ‖P‖_F and ‖Pᵀ‖_F: the cost picks


def _dim_leaf(g, dim):
    return g.add("leaf", ("s", N.Sym("s", D.fmt(dim), "dim", False, (dim,))))


def _ones_matrix_factor(g, c, t):
    """J1 = n1, 1ᵀJ = n1ᵀ and JJ = n·J (J the all-ones matrix, n the dim summed over): beside
    another factor the 1 that J prints as alone would read as the number, and 11ᵀ1 does not
    say which n its 1ᵀ1 is."""
    kids, out = t[2], []

    def is_ones_row(k):  # whether class k holds 1ᵀ
        return any(_ones_dims(g, kk[0], "c") is not None for _, _, kk in g.terms(k, "T"))

    for i, k in enumerate(kids):
        dims = _ones_dims(g, k, "m")
        if dims is None:
            continue
        rows, cols = dims
        if i + 1 < len(kids):
            after = _ones_dims(g, kids[i + 1], "c") if g.kind(kids[i + 1]) == "c" else None
            if after is not None:  # J1 = n1
                made = (_dim_leaf(g, cols), g.add("leaf", ("c", _ones((rows,)))))
                out.append(_prod(g, t[1][0], t[1][1], kids[:i] + made + kids[i + 2:]))
            after = _ones_dims(g, kids[i + 1], "m")
            if after is not None:  # JJ = nJ
                j = N.Sym("m", "1", "one", dims=(rows, after[1]))
                made = (_dim_leaf(g, cols), g.add("leaf", ("m", j)))
                out.append(_prod(g, t[1][0], t[1][1], kids[:i] + made + kids[i + 2:]))
        if i and g.kind(kids[i - 1]) == "r" and is_ones_row(kids[i - 1]):  # 1ᵀJ = n1ᵀ
            made = (_dim_leaf(g, rows), _T_of(g, g.add("leaf", ("c", _ones((cols,))))))
            out.append(_prod(g, t[1][0], t[1][1], kids[:i - 1] + made + kids[i + 1:]))
    return out


def _count(g, c, t):
    """1ᵀ1 = n and tr(I) = n: the size of a dim."""
    def ones(k, kind):
        return [d[1] for op, d, _ in g.nodes[g.find(k)] if op == "leaf" and isinstance(d[1], N.Sym)
                and d[1].role == kind]
    if t[0] == "prod" and t[1][0] == "s" and t[1][1] == 1 and len(t[2]) == 2:
        rows = [ones(kk[0], "one") for _, _, kk in g.terms(t[2][0], "T")]
        col = ones(t[2][1], "one")
        if any(rows) and col and col[0].kind == "c":
            return [_dim_leaf(g, col[0].dims[0])]
    if t[0] == "call" and t[1][1] == "tr":
        eye = ones(t[2][0], "eye")
        if eye:
            return [_dim_leaf(g, eye[0].dims[0])]
    return []


def _singular_values(g, c, t):
    """1ᵀsvdvals(X) = ‖X‖_* and ‖svdvals(X)‖ = ‖X‖_F."""
    kind = t[1][0]
    out = []
    if t[0] == "prod" and kind == "s" and t[1][1] == 1 and len(t[2]) == 2:
        ones = [k for _, _, k in g.terms(t[2][0], "T")
                if any(op == "leaf" and getattr(d[1], "role", None) == "one"
                       for op, d, _ in g.nodes[g.find(k[0])])]
        for _, d, kk in g.terms(t[2][1], "call"):
            if ones and d[1] == "svdvals":
                out.append(g.add("call", ("s", "nuclear", 0, None, None), kk))
    if t[0] == "call" and t[1][1] == "norm":
        for _, d, kk in g.terms(t[2][0], "call"):
            if d[1] == "svdvals":
                out.append(g.add("call", ("s", "norm", 0, None, None), kk))
    return out


def _scalar_powers(g, c, t):
    """sᵖsᵠ = sᵖ⁺ᵠ among a product's scalar factors (integer powers, or s ≥ 0): every factor
    on one base merged at once, one result per base (linear in the factors: a product of
    100 a's is a¹⁰⁰ in one step, not 4,950 pairwise merges)."""
    kind, coef = t[1]
    scalars = [n for n, k in enumerate(t[2]) if g.kind(k) == "s"]
    if len(scalars) < 2:  # one scalar factor (or none): nothing to merge
        return []
    groups: dict = {}
    for n in scalars:
        k = t[2][n]
        readings = g.readings.get((_scalar_powers, k))
        if readings is None:
            readings = g.readings[(_scalar_powers, k)] = [
                (g.find(kk[0]), d[1]) for _, d, kk in g.terms(k, "pow") if d[0] == "s"] + [(g.find(k), 1.0)]
        for b, p in readings:
            items = groups.setdefault(b, {})
            items.setdefault(n, p)  # each factor once per base, by its first reading
    out = []
    for b, items in groups.items():
        if len(items) < 2:
            continue
        powers = list(items.values())
        if not (all(float(p).is_integer() for p in powers) or _nonnegative(g, b)):
            continue
        total = sum(powers)
        merged = b if total == 1 else None if total == 0 else g.add("pow", ("s", total), (b,))
        rest = [k for n, k in enumerate(t[2]) if n not in items]
        rest += [merged] if merged is not None else []
        out.append(_prod(g, kind, coef, rest) if rest else g.add("leaf", ("s", N.Num("s", coef))))
        if len(out) == 4:
            break
    return out


def _power_of_power(g, c, t):
    """(sᵖ)ᵠ = sᵖᵠ, entry by entry, for an integer q, or any q where s ≥ 0 by the range
    analysis ((‖x‖⁴)^(−1/2) = ‖x‖⁻², √(σ(u)²) = σ(u); not (x²)^(1/2), which is |x|)."""
    kind, q = t[1]
    return [g.find(kk[0]) if d[1] * q == 1 else g.add("pow", (kind, d[1] * q), kk)
            for _, d, kk in g.terms(t[2][0], "pow")
            if d[0] == kind and d[1] * q != 0 and (float(q).is_integer() or _nonnegative(g, kk[0]))]


def _det_product(g, c, t):
    """det(AB) = det(A)det(B) for square A and B; det(Aᵀ) = det(A); det(A⁻¹) = det(A)⁻¹;
    det(Aᵏ) = det(A)ᵏ."""
    if t[1][1] != "det":
        return []
    arg = t[2][0]
    det = lambda k: g.add("call", ("s", "det", 0, None, None), (k,))  # noqa: E731
    out = []
    for _, d, kk in g.terms(arg, "prod"):
        if d[1] == 1 and all(_square(g, k) for k in kk) and len(kk) > 1:
            out.append(_prod(g, "s", 1.0, [det(k) for k in kk]))
    out.extend(det(k[0]) for _, _, k in g.terms(arg, "T"))
    out.extend(g.add("pow", ("s", -1.0), (det(k[0]),)) for _, _, k in g.terms(arg, "inv"))
    out.extend(g.add("pow", ("s", float(d[1])), (det(k[0]),)) for _, d, k in g.terms(arg, "matpow"))
    return out


def _matrix_powers(g, c, t):
    """AʲAᵏ = Aʲ⁺ᵏ for neighbours of a product (A⁻¹ is A to the −1): X(X³)⁻¹ = X⁻²."""
    kind, coef = t[1]
    kids = t[2]
    kind_of = g.kind
    kinds = [kind_of(k) for k in kids]
    for a, b in zip(kinds, kinds[1:]):
        if a == "m" == b:
            break
    else:
        return []  # no two matrices side by side (a factor of another kind has no base)

    readings = g.readings

    def base(k):
        key = (_matrix_powers, k)
        out = readings.get(key)
        if out is not None:
            return out
        if g.kind(k) != "m":
            out = []
        else:
            out = [(g.find(k), 1)]
            out += [(g.find(kk[0]), d[1]) for _, d, kk in g.terms(k, "matpow")]
            out += [(g.find(kk[0]), -1) for _, _, kk in g.terms(k, "inv")]
            for _, _, kk in g.terms(k, "inv"):
                out += [(g.find(k2[0]), -d[1]) for _, d, k2 in g.terms(kk[0], "matpow")]
        readings[key] = out
        return out

    results = []
    bases: dict = {}  # each factor's readings, once (reading adds nothing to the graph)
    for i in range(len(kids) - 1):
        for j in (i, i + 1):
            if j not in bases:
                bases[j] = base(kids[j])
        for (a, p), (b, q) in itertools.product(bases[i], bases[i + 1]):
            if a != b:
                continue
            n = p + q
            power = a if n == 1 else g.add("inv", ("m",), (a,)) if n == -1 else \
                None if n == 0 else g.add("matpow", ("m", n), (a,))
            if power is None and all(k == "s" for j, k in enumerate(kinds) if j != i and j != i + 1):
                # A⁰ beside scalars only (or alone): the identity keeps the product a matrix
                power = _eye_leaf(g, a)
                if power is None:  # its size unknown: no form without it
                    continue
            rest = kids[:i] + ((power,) if power is not None else ()) + kids[i + 2:]
            results.append(_prod(g, kind, coef, rest))
        if len(results) > 4:
            break
    return results


def _eye_leaf(g, a):
    """The identity of square class a's size, where the shape analysis knows it."""
    dims = g.dims.get(g.find(a))
    if dims is None or len(dims) != 2:
        return None
    return g.add("leaf", ("m", _eye(dims[0])))


@_memo_by_value
def _eye(dim) -> N.Sym:
    """The identity of this size (made once, as ``_ones``)."""
    return N.Sym("m", "I", "eye", dims=(dim, dim))


def _transpose_power(g, c, t):
    """(Aᵏ)ᵀ = (Aᵀ)ᵏ, both ways (k < 0 included: (A⁻ᵏ)ᵀ = (A⁻ᵀ)ᵏ)."""
    out = [g.add("matpow", ("m", d[1]), (_T_of(g, kk[0]),)) for _, d, kk in g.terms(t[2][0], "matpow")]
    return out


def _power_transpose(g, c, t):
    return [g.add("T", ("m",), (g.add("matpow", ("m", t[1][1]), (kk[0],)),))
            for _, _, kk in g.terms(t[2][0], "T")]


def _product_of_transposes(g, c, t):
    """BᵀAᵀ = (AB)ᵀ: a product whose every matrix factor is a transpose."""
    kind, coef = t[1]
    if kind not in ("m", "c", "r"):
        return []
    options = []
    for k in t[2]:
        if g.kind(k) == "s":
            options.append([k])
            continue
        ts = g.terms(k, "T")
        if not ts:
            return []
        options.append([kk[0] for _, _, kk in ts])
    if math.prod(map(len, options)) > 8:
        return []
    out = []
    for combo in itertools.product(*options):
        inner = [k for k in reversed(combo) if g.kind(k) != "s"]
        scalars = [k for k in combo if g.kind(k) == "s"]
        ik = N._product_kind([g.kind(k) for k in inner])
        out.append(_prod(g, kind, coef, scalars + [g.add("T", (kind,), (_prod(g, ik, 1.0, inner),))]))
    return out


def _inverse_of_power(g, c, t):
    """(Aᵏ)⁻¹ = A⁻ᵏ."""
    return [g.add("matpow", ("m", -d[1]), kk) for _, d, kk in g.terms(t[2][0], "matpow") if d[1] > 0]


def _power_of_inverse(g, c, t):
    """(A⁻¹)ᵏ = A⁻ᵏ: with (Aᵀ)ᵏ = (Aᵏ)ᵀ, −(X⁻ᵀ)² is also −(X⁻²)ᵀ, which the cost (``OUTSIDE``)
    writes as the Matrix Cookbook writes −((X + A)⁻¹(X + A)⁻¹)ᵀ (64)."""
    k = t[1][1]
    out = []
    for _, _, kk in g.terms(t[2][0], "inv"):
        out.append(g.find(kk[0]) if k == -1 else g.add("matpow", ("m", -k), kk))
    return out


def _inverse_of_product(g, c, t):
    """(AB)⁻¹ = B⁻¹A⁻¹ for square A and B."""
    out = []
    for _, d, kk in g.terms(t[2][0], "prod"):
        if d[1] == 1 and len(kk) > 1 and all(_square(g, k) for k in kk):
            out.append(_prod(g, "m", 1.0, [g.add("inv", ("m",), (k,)) for k in reversed(kk)]))
    return out


def _trace_rotation(g, c, t):
    """tr(AB) = tr(BA): every rotation of a product inside a trace (a scalar where the
    rotation is one, tr(xyᵀ) = yᵀx)."""
    if t[1][1] != "tr":
        return []
    out = []
    for _, d, kk in g.terms(t[2][0], "prod"):
        if any(g.kind(k) == "s" for k in kk) or len(kk) > 8:
            continue
        for r in range(1, len(kk)):
            turned = kk[r:] + kk[:r]
            kind = N._product_kind([g.kind(k) for k in turned])
            inner = _prod(g, kind, d[1], turned)
            out.append(inner if kind == "s" else g.add("call", ("s", "tr", 0, None, None), (inner,)))
    return out


def _trace_linear(g, c, t):
    """tr(sA) = s·tr(A) for scalar factors s (and numbers), tr(A + B) = tr(A) + tr(B): a
    scalar stays outside a trace, as the Cookbook writes det(Y)(tr(Y⁻¹B)² − tr(Y⁻¹BY⁻¹B))."""
    if t[1][1] != "tr" or t[1][2] != 0:
        return []
    out = []
    arg = t[2][0]
    for _, d, kk in g.terms(arg, "prod"):
        scalars = [k for k in kk if g.kind(k) == "s"]
        rest = [k for k in kk if g.kind(k) != "s"]
        if (scalars or d[1] != 1) and rest:
            inner = g.add("call", t[1], (_prod(g, N._product_kind([g.kind(k) for k in rest]), 1.0, rest),))
            out.append(_prod(g, "s", d[1], scalars + [inner]))
    for _, d, kk in g.terms(arg, "add"):
        if len(kk) <= MAX_SUM:
            out.append(g.add("add", ("s", d[1]), tuple(g.add("call", t[1], (k,)) for k in kk)))
    return out


def _kron_call(g, c, t):
    """tr(A ⊗ B) = tr(A)tr(B); det of a Kronecker product is not written (its powers are
    dims)."""
    if t[1][1] != "tr":
        return []
    return [_prod(g, "s", 1.0, [g.add("call", ("s", "tr", 0, None, None), (k,)) for k in kk])
            for _, d, kk in g.terms(t[2][0], "kron") if all(g.kind(k) == "m" for k in kk)]


def _kron_transpose(g, c, t):
    """(A ⊗ B)ᵀ = Aᵀ ⊗ Bᵀ."""
    return [g.add("kron", (t[1][0],), tuple(_T_of(g, k) for k in kk))
            for _, _, kk in g.terms(t[2][0], "kron")]


def _kron_inverse(g, c, t):
    """(A ⊗ B)⁻¹ = A⁻¹ ⊗ B⁻¹ for square A and B."""
    return [g.add("kron", ("m",), tuple(g.add("inv", ("m",), (k,)) for k in kk))
            for _, _, kk in g.terms(t[2][0], "kron") if all(_square(g, k) for k in kk)]


def _kron_mixed(g, c, t):
    """(A ⊗ B)(C ⊗ D) = AC ⊗ BD where A's columns match C's rows."""
    kind, coef = t[1]
    kids = t[2]
    for i in range(len(kids) - 1):
        for (_, _, l), (_, _, r) in itertools.product(g.terms(kids[i], "kron"), g.terms(kids[i + 1], "kron")):
            if len(l) != 2 or len(r) != 2 or any(g.kind(k) != "m" for k in l + r):
                continue
            sl, sr = [g.dims.get(g.find(k)) for k in l], [g.dims.get(g.find(k)) for k in r]
            if None in sl + sr or sl[0][1] != sr[0][0] or sl[1][1] != sr[1][0]:
                continue
            merged = g.add("kron", ("m",), (_prod(g, "m", 1.0, [l[0], r[0]]),
                                            _prod(g, "m", 1.0, [l[1], r[1]])))
            return [_prod(g, kind, coef, kids[:i] + (merged,) + kids[i + 2:])]
    return []


def _diag_product(g, c, t):
    """diag(a)diag(b) = diag(a ⊙ b)."""
    kind, coef = t[1]
    kids = t[2]
    for i in range(len(kids) - 1):
        da, db = _diag_of(g, kids[i]), _diag_of(g, kids[i + 1])
        if da is not None and db is not None:
            merged = g.add("call", ("m", "diag", 0, None, None), (g.add("had", ("c",), (da, db)),))
            return [_prod(g, kind, coef, kids[:i] + (merged,) + kids[i + 2:])]
    return []


def _is_ones(g, c) -> bool:
    for op, d, _ in g.nodes[g.find(c)]:
        if op == "leaf" and isinstance(d[1], N.Sym) and d[1].role == "one":
            return True
    return False


def _diag_of(g, c):
    """u where class c holds diag(u) (a matrix from a vector), else None."""
    return next((kk[0] for _, d, kk in g.terms(c, "call") if d[1] == "diag" and d[0] == "m"), None)


def _diag_ones(g, c, t):
    """diag(u)1 = u and 1ᵀdiag(u) = uᵀ among a product's factors (1ᵀdiag(uₙ)B diag(uₙ)1 is
    uₙᵀBuₙ)."""
    kind, coef = t[1]
    kids = list(t[2])
    for i in range(len(kids) - 1):
        u = _diag_of(g, kids[i])
        if u is not None and g.kind(kids[i + 1]) == "c" and _is_ones(g, kids[i + 1]):
            return [_prod(g, kind, coef, kids[:i] + [u] + kids[i + 2:])]
        v = _diag_of(g, kids[i + 1])
        if v is not None and g.kind(kids[i]) == "r" and any(
                _is_ones(g, kk[0]) for _, _, kk in g.terms(kids[i], "T")):
            return [_prod(g, kind, coef, kids[:i] + [_T_of(g, v)] + kids[i + 2:])]
    return []


def _diag_sandwich(g, c, t):
    """diag(u)M diag(v) = (uvᵀ) ⊙ M for a matrix M: the two forms of one Daleckii–Krein
    term (UᵀaaᵀU ⊙ Δ and diag(Uᵀa)Δdiag(Uᵀa)) become like terms."""
    kind, coef = t[1]
    kids = list(t[2])
    for i in range(len(kids) - 2):
        u, v = _diag_of(g, kids[i]), _diag_of(g, kids[i + 2])
        if u is None or v is None or g.kind(kids[i + 1]) != "m":
            continue
        outer = g.add("prod", ("m", 1.0), (u, _T_of(g, v)))
        had = g.add("had", ("m",), (outer, kids[i + 1]))
        return [_prod(g, kind, coef, kids[:i] + [had] + kids[i + 3:])]
    return []


def _eigen_power(g, h, arg):
    """(coefficient, k) where class h is c·λᵏ with λ = eigvalsh(arg) and k a positive
    integer (λ itself is k = 1), else None."""
    coef = 1.0
    for _, d, kk in g.terms(h, "prod"):
        if len(kk) == 1 and g.kind(kk[0]) == "c":
            coef, h = d[1], kk[0]
            break
    for _, d, kk in g.terms(h, "pow"):
        if float(d[1]).is_integer() and 1 <= d[1] <= MAX_DEGREE and _is_eigenvalues(g, kk[0], arg):
            return coef, int(d[1])
    return (coef, 1) if _is_eigenvalues(g, h, arg) else None


def _is_eigenvalues(g, c, arg) -> bool:
    return any(d[1] == "eigvalsh" and g.find(kk[0]) == g.find(arg) for _, d, kk in g.terms(c, "call"))


def _spectral_power(g, c, t):
    """U diag(c·λᵏ) Uᵀ = c·Sᵏ where S = UΛUᵀ (a polynomial of S written through its
    eigendecomposition: ∇tr(S³) is 3S², not (3/2)S² + (1/2)U diag(3λ^∘2)Uᵀ)."""
    kind, coef = t[1]
    kids = list(t[2])
    for i in range(len(kids) - 2):
        qs = [kk[0] for _, d, kk in g.terms(kids[i], "call") if d[1] == "Q"]
        if not qs or not any(g.find(kk[0]) == g.find(kids[i]) for _, _, kk in g.terms(kids[i + 2], "T")):
            continue
        h = _diag_of(g, kids[i + 1])
        found = _eigen_power(g, h, qs[0]) if h is not None else None
        if found is None:
            continue
        power = qs[0] if found[1] == 1 else g.add("matpow", ("m", found[1]), (qs[0],))
        return [_prod(g, kind, coef * found[0], kids[:i] + [power] + kids[i + 3:])]
    return []


def _values_power(g, c, t):
    """diag(vᵏ) = diag(v)ᵏ for v the eigenvalues or singular values of a matrix and k an
    integer from 2 to ``MAX_DEGREE``: the gradient of Σσᵢ³ reads 3UΣ²Vᵀ where X = UΣVᵀ (the
    printer names diag(σ) Σ), not 3U diag(σ^∘2)Vᵀ."""
    if t[1][0] != "m" or t[1][1] != "diag" or t[1][2] != 0:
        return []
    for _, d, kk in g.terms(t[2][0], "pow"):
        if float(d[1]).is_integer() and 2 <= d[1] <= MAX_DEGREE and any(
                e[1] in ("eigvalsh", "svdvals") and e[0] == "c" for _, e, _ in g.terms(kk[0], "call")):
            diagonal = g.add("call", ("m", "diag", 0, None, None), (kk[0],))
            return [g.add("matpow", ("m", int(d[1])), (diagonal,))]
    return []


def _diag_sum(g, c, t):
    """diag(a) ± diag(b) = diag(a ± b)."""
    if t[1][0] != "m":
        return []
    inner = []
    for k in t[2]:
        ds = [kk[0] for _, d, kk in g.terms(k, "call") if d[1] == "diag" and d[0] == "m"]
        if not ds:
            return []
        inner.append(ds[0])
    return [g.add("call", ("m", "diag", 0, None, None), (g.add("add", ("c", t[1][1]), tuple(inner)),))]


def _hadamard_cancel(g, c, t):
    """s ⊙ (y ⊘ s) = y: a factor and its reciprocal cancel in an element-wise product."""
    kids = [g.find(k) for k in t[2]]
    for i, k in enumerate(kids):
        for _, d, kk in g.terms(k, "pow"):
            if d[1] == -1 and g.find(kk[0]) in kids and not _zero(g, kk[0]):
                j = kids.index(g.find(kk[0]))
                rest = [x for n, x in enumerate(kids) if n not in (i, j)]
                if rest:
                    return [rest[0] if len(rest) == 1 else g.add("had", (t[1][0],), tuple(rest))]
    return []


def _common_scalar(g, c, t):
    """sP + sQ = s(P + Q) for a scalar factor s of every term: det(M)P + det(M)Q; and of
    some terms, the others beside them: A + λP − λQ = A + λ(P − Q)."""
    kind, coefs = t[1]
    prods = []
    for k in t[2]:
        ps = g.terms(k, "prod")
        if not ps:
            return _common_scalar_of_some(g, kind, coefs, t[2])
        prods.append((ps[0][1][1], ps[0][2]))
    shared = set(g.find(x) for x in prods[0][1] if g.kind(x) == "s")
    for _, kk in prods[1:]:
        shared &= {g.find(x) for x in kk}
    out = []
    for s in sorted(shared)[:1]:
        terms = []
        for coef, (d, kk) in zip(coefs, prods):
            rest = list(kk)
            rest.remove(next(x for x in rest if g.find(x) == s))
            terms.append(_prod(g, kind, d, rest) if rest else g.add("leaf", ("s", N.Num("s", d))))
        out.append(_prod(g, kind, 1.0, [s, g.add("add", (kind, coefs), tuple(terms))]))
    return out or _common_scalar_of_some(g, kind, coefs, t[2])


def _common_scalar_of_some(g, kind, coefs, kids):
    """A + sP + sQ = A + s(P + Q): the terms of a sum (at most ``MAX_SUM`` + 2) that share a
    scalar factor, grouped; the first such factor only."""
    if len(kids) < 3 or len(kids) > MAX_SUM + 2:
        return []
    holders: dict = {}
    for n, k in enumerate(kids):
        for _, d, kk in g.terms(k, "prod")[:1]:
            for x in {g.find(x) for x in kk if g.kind(x) == "s"}:
                holders.setdefault(x, []).append(n)
    for s_, ns in sorted(holders.items()):
        if len(ns) < 2 or len(ns) == len(kids):
            continue
        inner = []
        for n in ns:
            d, kk = next((d[1], kk) for _, d, kk in g.terms(kids[n], "prod"))
            rest = list(kk)
            rest.remove(next(x for x in rest if g.find(x) == s_))
            inner.append((coefs[n] * d, _prod(g, kind, 1.0, rest) if rest else None))
        if any(k is None for _, k in inner):
            continue
        group = _prod(g, kind, 1.0, [s_, g.add("add", (kind, tuple(v for v, _ in inner)),
                                               tuple(k for _, k in inner))])
        others = [n for n in range(len(kids)) if n not in ns]
        return [g.add("add", (kind, tuple(coefs[n] for n in others) + (1.0,)),
                      tuple(kids[n] for n in others) + (group,))]
    return []


def _common_matrix(g, c, t):
    """AP + AQ = A(P + Q) and PA + QA = (P + Q)A."""
    kind, coefs = t[1]
    prods = []
    readings = g.readings
    for k in t[2]:
        first = readings.get((_common_matrix, k))
        if first is None:  # the first product of two matrices or more in k, and its matrices
            first = ()
            for _, d, kk in g.terms(k, "prod"):
                mats = [x for x in kk if g.kind(x) != "s"]
                if len(mats) >= 2:
                    first = (d[1], kk, mats)
                    break
            readings[(_common_matrix, k)] = first
        if not first:
            return []
        prods.append(first)
    out = []
    for side in (0, -1):
        ends = {g.find(mats[side]) for _, _, mats in prods}
        if len(ends) != 1:
            continue
        end = ends.pop()
        terms = []
        for d, kk, _ in prods:
            rest = list(kk)
            idx = max(n for n, x in enumerate(rest) if g.find(x) == end) if side == -1 else \
                min(n for n, x in enumerate(rest) if g.find(x) == end)
            del rest[idx]
            rest_kind = N._product_kind([g.kind(x) for x in rest])
            terms.append(_prod(g, rest_kind, d, rest))
        kinds = {g.kind(x) for x in terms}
        if len(kinds) != 1:
            continue
        inner = g.add("add", (kinds.pop(), coefs), tuple(terms))
        out.append(_prod(g, kind, 1.0, [end, inner] if side == 0 else [inner, end]))
    return out


def _pair_negated_sums(g) -> None:
    """U + V − S − I = −(S + I − U − V): where the input holds a sum and its negation (terms in
    any order), the second joins the first's class as −1 times it, so that a factor shared up
    to sign can be taken out: M·D + (−M)·ssᵀ = M(D − ssᵀ) (the Hessian of xᵀsoftmax(Ax)).
    Once, as the graph is made (``simplest``), and only for sums of three terms or more: run
    as a rule every round, or on two-term sums (−A − Aᵀ beside A + Aᵀ), it opened groupings
    that doubled the time of the slowest results and were never chosen."""
    seen: dict = {}
    find = g.find
    for c in list(g.nodes):
        for t in g.terms(c, "add"):
            kind, coefs = t[1]
            if kind == "s" or len(t[2]) < 3:
                continue
            mine = tuple(sorted(zip(map(find, t[2]), coefs)))
            other = seen.get((kind, tuple((k, -e) for k, e in mine)))
            if other is not None and find(other) != find(c):
                g.union(c, _prod(g, kind, -1.0, [other]))
            else:
                seen.setdefault((kind, mine), c)
    g.rebuild()


def _sign_leads(g, c, t):
    """A(−B − C)D = −A(B + C)D: a sum whose terms are all negative gives its sign to the
    product it stands in, which the cost (``SIGN``) then writes first, as the Matrix
    Cookbook writes −Y⁻¹(∂Y/∂x)Y⁻¹ (59) and −(CX(XᵀCX)⁻¹)(A + Aᵀ)(XᵀCX)⁻¹ (125)."""
    kind, coef = t[1]
    out = []
    for i, k in enumerate(t[2]):
        for _, d, kk in g.terms(k, "add"):
            if all(e < 0 for e in d[1]):
                inner = g.add("add", (d[0], tuple(-e for e in d[1])), kk)
                out.append(_prod(g, kind, -coef, t[2][:i] + (inner,) + t[2][i + 1:]))
                break
    return out[:2]


def _sign_out_of_transpose(g, c, t):
    """(−A − B)ᵀ = −(A + B)ᵀ: the sign leads, as in −(X⁻¹BAX⁻¹)ᵀ (Matrix Cookbook, 63)."""
    return [_prod(g, t[1][0], -1.0, [_T_of(g, g.add("add", (d[0], tuple(-e for e in d[1])), kk))])
            for _, d, kk in g.terms(t[2][0], "add") if all(e < 0 for e in d[1])][:1]


def _distribute(g, c, t):
    """A(P + Q) = AP + AQ: the inverse of the last rule, so that a cost can choose.  Not over
    a sum the input writes in two places or more (``EGraph.shared``: s = Ax − b, which
    printing names) in a product holding two such vectors (Aᵀssᵀ) or one such matrix twice
    ((A + Aᵀ)xxᵀ(A + Aᵀ)): multiplied out over both and each part regrouped every way, they
    grew the graph of the Hessian of ‖Ax − b‖ to 695 terms, none of them chosen (issue 24);
    there only a negative coefficient goes in, −(a − u)… = (u − a)….  Two different matrix
    sums still multiply out: A(X − A)(X − A)ᵀ is written A(X − A)(AX − A²)ᵀ, but not where one
    of them has three terms or more: (Aᵀdiag(x) + I − (sᵀx)Aᵀ − Aᵀsxᵀ)(S − ssᵀ)A, the Hessian of
    xᵀsoftmax(Ax), made 8 × 2 products that the other rules regrouped every way, none chosen,
    and doubled its time.  (Whether a kid is in ``shared`` changes only where the kid's class
    merges, and its terms' sums with it, so the rule stays ``LOCAL``.)"""
    kind, coef = t[1]
    kids = t[2]
    shared = g.shared
    held = False
    if shared:
        mine = [k for k in map(g.find, kids) if k in shared]
        held = len(mine) >= 2 and (len(set(mine)) < len(mine) or all(g.kind(k) in "cr" for k in mine))
    signs = []
    adds = [g.terms(k, "add") for k in kids]
    sums = [len(ts[0][2]) for k, ts in zip(kids, adds) if ts and g.kind(k) != "s"]
    if len(sums) >= 2 and max(sums) >= 3:  # (Aᵀdiag(x) + I − U − V)(S − ssᵀ)A stays as it is
        return signs
    for i, k in enumerate(kids):
        if held and g.find(k) in shared:
            if coef < 0 and not signs:
                for _, d, kk in adds[i][:1]:
                    inner = g.add("add", (d[0], tuple(-e for e in d[1])), kk)
                    signs.append(_prod(g, kind, -coef, kids[:i] + (inner,) + kids[i + 1:]))
            continue
        for _, d, kk in adds[i]:
            if len(kk) > MAX_SUM:
                continue
            terms = [_prod(g, kind, 1.0, kids[:i] + (x,) + kids[i + 1:]) for x in kk]
            return [g.add("add", (kind, tuple([coef * e for e in d[1]])), tuple(terms))]
    return signs


MAX_MONOMIALS = 12  # an element-wise normal form with more terms is not offered
MAX_DEGREE = 4      # nor one that raises a factor to a higher power


def _negated(g, c):
    """u where class c holds −u written as a product with a negative coefficient, else None."""
    for _, d, kk in g.terms(c, "prod"):
        if d[1] < 0:
            return _prod(g, d[0], -d[1], kk)
    return None


@_memo_by_value
def _exponent(p):
    """A power's exponent as a fraction (None where it is not a simple one)."""
    f = Fraction(p).limit_denominator(12)
    return f if float(f) == float(p) else None


def _atom_power(g, base, e, kind, ones, depth, shallow=False):
    """baseᵉ as a polynomial: positive integer powers expand, a monomial's negative or
    fractional power distributes over its atoms (the fractional one only where every atom
    is ≥ 0 by the range analysis: (ab)^½ = a^½b^½ needs a, b ≥ 0), and any other is an atom
    to that power."""
    if e == 1:
        return _poly(g, base, kind, ones, depth + 1, shallow)
    if e.denominator == 1 and 1 < e <= MAX_DEGREE:
        p = _poly(g, base, kind, ones, depth + 1, shallow)
        out = {(): 1.0}
        for _ in range(int(e)):
            if p is None or out is None:
                return None
            out = _poly_product(g, out, p)
        return out
    p = _poly(g, base, kind, ones, depth + 1, shallow)
    if shallow and e < 0 and e.denominator == 1 and abs(e) <= MAX_DEGREE:
        scaled = _without_content(g, base, e)
        if scaled is not None:
            return scaled
    if p is not None and all(abs(v) <= 1e-12 for v in p.values()) and e < 0:
        return None  # a negative power of 0: left as it is, refused where it is evaluated
    if p is not None and len(p) == 1:  # 1 ⊘ ((x ⊘ z) ⊙ z) = x⁻¹: a monomial inverts
        (m, v), = p.items()
        whole = e.denominator == 1
        if v != 0 and (whole or (v > 0 and all(_nonnegative(g, a) for a, _ in m))) and \
                all(abs(k * e) <= MAX_DEGREE for _, k in m):
            return _reduced(g, {tuple(sorted((a, k * e) for a, k in m)): float(v) ** float(e)})
    if abs(e) > MAX_DEGREE:
        return None
    scaled = _without_content(g, base, e) if e < 0 and e.denominator == 1 else None
    return scaled if scaled is not None else {((g.find(base), e),): 1.0}


def _without_content(g, base, e):
    """(x²/3 + 1)⁻¹ = 3(x² + 3)⁻¹: a denominator's common factor and fractions taken out
    (None where base is not a sum with one)."""
    for _, d, kk in g.terms(base, "add"):
        content = _content(d[1])
        if content is not None and content != 1:
            scaled = g.add("add", (d[0], tuple(v / content for v in d[1])), kk)
            return {((scaled, e),): content ** float(e)}
    return None


def _content(coefs):
    """The rational factor common to coefficients (gcd of numerators over lcm of
    denominators, the sign of the first): (1/3, 1) → 1/3, (2, −4) → 2; None where one is
    not a simple fraction."""
    fs = []
    for v in coefs:
        f = Fraction(v).limit_denominator(1000)
        if abs(float(f) - v) > 1e-12 * abs(v) or f == 0:  # 8.000000000000004 is 8
            return None
        fs.append(f)
    num, den = 0, 1
    for f in fs:
        num = math.gcd(num, f.numerator)
        den = den * f.denominator // math.gcd(den, f.denominator)
    return float(Fraction(num, den)) * (1 if fs[0] > 0 else -1)


def _factors(g, kids, depth=0):
    """A ⊙-product's factors as (base class, exponent), a factor and a power of it merged
    before anything expands: s ⊙ s ⊘ s² has no factor left (the input held the reciprocal,
    so nothing is cancelled where it was undefined)."""
    plain = {g.find(k) for k in kids}
    out: dict = {}
    for k in kids:
        base, e = g.find(k), 1
        for _, d, kk in g.terms(k, "pow"):
            f = _exponent(d[1])
            if f is not None and g.find(kk[0]) in plain | set(out) and not _zero(g, kk[0], depth):
                base, e = g.find(kk[0]), f  # 0 ⊘ 0 stays as it is: refused, never 1
                break
        out[base] = out.get(base, 0) + e
    return [(b, e) for b, e in out.items() if e != 0]


def _zero(g, c, depth=0) -> bool:
    """Whether class c is 0 by structure: its range is {0}, or its polynomial has no term
    (x − x)."""
    if g.range.get(g.find(c), FULL)[::2] == (0.0, 0.0):
        return True
    kind = g.kind(c)
    p = _poly(g, c, kind, [], depth + 1) if kind != "s" else None
    return p is not None and all(abs(v) <= 1e-12 for v in p.values())


_BUSY = object()


def _poly(g, c, kind, ones, depth=0, shallow=False):
    """``_poly_of`` memoised per class for one round of matching (the graph's classes do
    not change until the round's unions; ``rebuild`` clears the memo).  A class met again
    inside its own expansion (a cycle of the graph) is an atom.  ``shallow``: a sum inside
    the top one is an atom, (y − μ)² stays a square of y − μ.

    What a class expands to does not depend on the matches run before it in the round
    (``LOCAL`` skips some of them): a memo is answered only where it is what the expansion
    made there would be.  An expansion that met no class being expanded is (its classes are
    on no cycle); one that met only classes of its own expansion is, where no class it
    reached is being expanded (``reach``); one that met a class being expanded further up
    (an atom only there) is that context's, and is not kept."""
    if g.parent[c] != c:
        c = g.find(c)
    key = (c, kind, 0 if not shallow else 1 if depth == 0 else 2)
    polys = g.polys
    stack = g.poly_stack  # [height, the lowest height of a class being expanded met, reached]
    hit = polys.get(key)
    if hit is not None and hit.__class__ is int:  # being expanded, at that height of the stack
        if hit < stack[1]:
            stack[1] = hit
        return {((c, 1),): 1.0}
    if depth > 60:
        return {((c, 1),): 1.0}
    if hit is not None:  # (no copy: no caller changes a polynomial it is given)
        reach = hit[2]
        if reach is None or reach.isdisjoint(g.poly_busy):
            if reach is not None and stack[0]:
                stack[2].extend(reach)
            if hit[1]:
                ones.extend(hit[1])
            return hit[0]
    height, low, reached = stack
    start = len(reached)
    reached.append(key)
    polys[key] = height
    busy = g.poly_busy
    busy.add(key)
    stack[0], stack[1] = height + 1, _NONE_MET
    found: list = []
    out = _poly_of(g, c, kind, found, depth, shallow)
    met = stack[1]
    busy.discard(key)
    stack[0], stack[1] = height, met if met < low else low
    if met < height:  # it met a class being expanded below it: not kept (a memo it was
        if hit is None:  # not answered from stays)
            del polys[key]
        else:
            polys[key] = hit
    else:
        polys[key] = (out, tuple(found) if found else (),
                      None if met == _NONE_MET else frozenset(reached[start:]))
    if height == 0:
        reached.clear()
    if found:
        ones.extend(found)
    return out


_NONE_MET = 1 << 30


def _poly_of(g, c, kind, ones, depth=0, shallow=False):
    """Class c as a Laurent polynomial over atom classes, entry by entry: {monomial: coef}
    with a monomial a tuple of (atom, exponent), exponents fractions (or plain integers:
    1, 0 — ints compare and hash faster, and mix exactly with fractions).  Sums, ⊙, numeric
    multiples and powers of c's kind expand; σ(−u) is 1 − σ(u); a ones leaf of the kind is 1
    (noted in ``ones``); every other class is an atom.  None where the form would grow past
    the limits."""
    c = g.find(c)
    idx = g.index.get(c)
    for op, d, kk in (idx if idx is not None else g._index(c))[None]:
        if d[0] != kind:
            continue
        if op == "leaf":
            if isinstance(d[1], N.Sym) and d[1].role == "one":
                ones.append(c)
                return {(): 1.0}
        elif op == "add":
            if not (shallow and depth > 0):
                out: dict = {}
                for coef, k in zip(d[1], kk):
                    p = _poly(g, k, kind, ones, depth + 1, shallow)
                    if p is None:
                        return None
                    for m, v in p.items():
                        out[m] = out.get(m, 0.0) + coef * v
                return out if len(out) <= MAX_MONOMIALS else None
        elif op == "prod":
            if len(kk) == 1 and g.kind(kk[0]) == kind:  # 2(y − μ)
                p = _poly(g, kk[0], kind, ones, depth + 1, shallow)
                return None if p is None else {m: d[1] * v for m, v in p.items()}
            if d[1] != 1:  # 2Aᵀr: twice the atom Aᵀr
                return {((_prod(g, kind, 1.0, kk), 1),): d[1]}
        elif op == "had":
            out = {(): 1.0}
            for base, e in _factors(g, kk, depth + 1):
                p = _atom_power(g, base, e, kind, ones, depth, shallow)
                if p is None:
                    return None
                out = _poly_product(g, out, p)
                if out is None:
                    return None
            return out
        elif op == "pow":
            e = _exponent(d[1])
            if e is not None and e != 0:
                return _atom_power(g, kk[0], e, kind, ones, depth, shallow)
        elif op == "call" and d[1] == "sigmoid" and d[2] == 0:
            u = _negated(g, kk[0])
            if u is not None:  # σ(−u) = 1 − σ(u)
                positive = g.add("call", d, (u,))
                return {(): 1.0, ((positive, 1),): -1.0}
    return {((c, 1),): 1.0}


def _complement(g, t) -> bool:
    """Whether term t is 1 − σ(v): the form σ′ = σ ⊙ (1 − σ) is written in, kept as it is."""
    if t[0] != "add" or tuple(t[1][1]) != (1.0, -1.0):
        return False
    one, other = t[2]
    calls = g.terms(other, "call")
    return bool(calls) and calls[0][1][1] == "sigmoid" and _is_ones(g, one)


def _ones_leaf(g, c, kind):
    """The ones vector of class c's shape (a column), where the shape analysis knows it."""
    if kind != "c":
        return None
    dims = g.dims.get(g.find(c))
    if dims is not None and len(dims) == 1:
        hit = g.ones_leaves.get(dims)  # the leaf added once: a leaf is never re-keyed, only merged
        if hit is None:
            hit = g.ones_leaves[dims] = g.add("leaf", ("c", _ones(tuple(dims))))
        return g.find(hit)
    return None


@_memo_by_value
def _ones(dims: tuple) -> N.Sym:
    """The ones vector of these dims (made once: the same leaf, its text written once)."""
    return N.Sym("c", "1", role="one", dims=dims)


def _step_of(g, a):
    """u where atom a is step(u), else None."""
    for _, d, kk in g.terms(a, "call"):
        if d[1] == "step" and d[2] == 0 and getattr(d[4], "builtin", True):
            return g.find(kk[0])
    return None


REDUCE_SHORTCUT = True  # tests turn it off to compare the graphs with and without it


def _reduced(g, poly):
    """Each monomial with step(u)ᵏ = step(u) (k ≥ 1) and relu(u) ⊙ step(u) = relu(u): both
    hold everywhere, 0 included.  (A graph without step(u) has nothing to reduce: each
    monomial is kept as it is — each is sorted, an atom once — its coefficient added to 0.0
    as below.)"""
    if ("call", "step") not in g.features and REDUCE_SHORTCUT:
        return {m: 0.0 + v for m, v in poly.items()}
    out: dict = {}
    for m, v in poly.items():
        powers = dict(m)
        relus = {g.find(kk[0]) for a, e in m if e > 0 for _, d, kk in g.terms(a, "call")
                 if d[1] == "relu" and d[2] == 0 and getattr(d[4], "builtin", True)}
        for a, e in m:
            u = _step_of(g, a)
            if u is not None and e > 0 and e.denominator == 1:
                if u in relus:
                    del powers[a]
                else:
                    powers[a] = 1
        key = tuple(sorted(powers.items()))
        out[key] = out.get(key, 0.0) + v
    return out


def _poly_product(g, a: dict, b: dict):
    out: dict = {}
    for ma, va in a.items():
        for mb, vb in b.items():
            powers = dict(ma)
            for atom, e in mb:
                powers[atom] = powers.get(atom, 0) + e
            for e in powers.values():
                if abs(e) > MAX_DEGREE:
                    return None
            m = tuple(sorted([(x, e) for x, e in powers.items() if e != 0]))
            out[m] = out.get(m, 0.0) + va * vb
    out = _reduced(g, out)
    return out if len(out) <= MAX_MONOMIALS else None


def _monomial(g, kind, m, one):
    """The class of a monomial ∏ atomᵉ (⊙ and entry-wise powers); () is the ones leaf."""
    if not m:
        return one
    factors = [a if e == 1 else g.add("pow", (kind, float(e)), (a,)) for a, e in m]
    return factors[0] if len(factors) == 1 else g.add("had", (kind,), tuple(factors))


@_memo_by_value
def _snap(v: float) -> float:
    """v as the simple fraction it differs from by rounding only (4.000000000000002 → 4)."""
    f = float(Fraction(v).limit_denominator(1000))
    return f if abs(f - v) <= 1e-12 * abs(v) else v


def _polynomial(g, kind, poly, one):
    """Σ coef·monomial as (scale, class of the sum divided by it): the terms with a positive
    coefficient first and a coefficient common to every term taken out, 2(a − b);
    None where it needs a 1 and none is at hand, or is 0."""
    positive, negative = [], []
    for m, v in sorted(poly.items(), key=_by_size) if len(poly) > 1 else poly.items():
        if abs(v) > 1e-12:
            if v == 1.0:  # what ``_snap`` gives for ±1, without asking it
                v = 1.0
            elif v == -1.0:
                v = -1.0
            else:
                v = _snap(v)
            if v > 0:
                positive.append((v, m))
            elif v < 0:
                negative.append((v, m))
    items = positive + negative
    if not items:
        return None  # a zero: left to the engine's own simplification
    if one is None:
        for _, m in items:
            if not m:
                return None
    # a monomial of one atom to the first power is that atom (``_monomial``, without the call)
    terms = [m[0][0] if len(m) == 1 and m[0][1] == 1 else _monomial(g, kind, m, one) for _, m in items]
    if len(items) == 1:
        return items[0][0], terms[0]
    first = items[0][0]
    scale = abs(first)
    for v, _ in items:
        if abs(abs(v) - scale) > 1e-12 * scale:
            scale = 1.0
            break
    if first < 0:  # 2(a − b), −2(a + b)
        scale = -scale
    coefs = tuple([v for v, _ in items]) if scale == 1.0 else tuple([float(v / scale) for v, _ in items])
    return scale, g.add("add", (kind, coefs), tuple(terms))


def _by_size(item):
    """A monomial's place in a written polynomial: fewer factors first, then by atom."""
    return len(item[0]), item[0]


def _over_common_denominator(g, kind, poly, ones, one, shallow=False):
    """Σ terms over different denominators as one fraction: every term multiplied by the
    product D of the denominators' largest powers, the powers of D's bases that this leaves
    in a numerator expanded through the bases, and the numerator over D — so that it can
    cancel: 1 ⊘ √s − w² ⊘ s^(3/2) with s = w² + c is c ⊘ s^(3/2).  Defined exactly where
    the input is (the input holds every reciprocal in D).  (scale, numerator class or None
    for a constant, denominator class, the numerator's number of terms), or None."""
    lowest: dict = {}
    for m in poly:
        for a, e in m:
            if e < 0:
                lowest[a] = min(lowest.get(a, 0), e)
    if not lowest or len({tuple((a, e) for a, e in m if a in lowest) for m in poly}) < 2:
        return None  # no denominator, or one every term shares (taken out elsewhere)
    numerator: dict = {}
    for m, v in poly.items():
        powers = dict(m)
        for a, e in lowest.items():
            powers[a] = powers.get(a, 0) - e
        term = {(): v}
        for a, k in sorted(powers.items()):
            if k == 0:
                continue
            p = {((a, k),): 1.0}
            if a in lowest and k.denominator == 1 and 0 < k <= MAX_DEGREE:
                base = _poly(g, a, kind, ones, 0 if shallow else 1, shallow)
                if base is not None:
                    p = {(): 1.0}
                    for _ in range(int(k)):
                        p = _poly_product(g, p, base) if p is not None else None
                    if p is None:
                        return None
            term = _poly_product(g, term, p)
            if term is None:
                return None
        for mm, vv in term.items():
            numerator[mm] = numerator.get(mm, 0.0) + vv
        if len(numerator) > 2 * MAX_MONOMIALS:
            return None
    numerator = {m: v for m, v in numerator.items() if abs(v) > 1e-12}
    if not numerator or len(numerator) > MAX_MONOMIALS:
        return None  # a zero numerator is left to the engine's own simplification
    denominator = _monomial(g, kind, tuple(sorted(lowest.items())), one)
    if list(numerator) == [()]:
        return numerator[()], None, denominator, 1
    content = abs(_content(list(numerator.values())) or 1.0)  # 12 − 4u² = 4(3 − u²)
    parts = _polynomial(g, kind, {m: v / content for m, v in numerator.items()}, one)
    if parts is None:
        return None
    return content * parts[0], parts[1], denominator, len(numerator)


def _normal_head(g, c, kind, poly, ones):
    """``_elementwise_normal``'s work on class c's polynomial before a term's own: the 1 at
    hand, the monomial common to every term, and the forms over a common denominator."""
    one = ones[0] if ones else _ones_leaf(g, c, kind)
    for m in poly:
        if len(m) != 1 or m[0][1] != 1:
            break
    else:  # a sum of distinct atoms: no monomial common to every term, no denominator (what
        return one, {}, ()  # the code below finds)
    atoms = [dict(m) for m in poly if poly[m] != 0]
    common = {}
    if len(atoms) > 1:  # the power of each atom that divides every term: u in u − u², v⁻¹ in (a − b) ⊘ v
        for a in atoms[0]:
            es = [p.get(a, 0) for p in atoms]
            common[a] = min(es) if min(es) > 0 else max(es) if max(es) < 0 else 0
        common = {a: e for a, e in common.items() if e != 0}
    out = []
    combined = _over_common_denominator(g, kind, poly, ones, one)
    for shallow in (False, True):
        if shallow:  # where the numerator over a common denominator came out long (the inner
            # sums expanded), the same with them whole: (12 − 4(y − μ)²) ⊘ ((y − μ)² + 3)²
            if combined is None or combined[3] < 3:
                break
            inner: list = []
            shallow_poly = _poly(g, c, kind, inner, 0, True)
            if shallow_poly is None or len(shallow_poly) >= len(poly):
                break
            one = one or (inner[0] if inner else None)
            combined = _over_common_denominator(g, kind, shallow_poly, inner, one, True)
        if combined is not None:  # (1 − y) ⊘ (1 − p) − y ⊘ p = (p − y) ⊘ (p ⊙ (1 − p))
            scale, numerator, denominator, _ = combined
            if numerator is None:
                out.append(_prod(g, kind, scale, [denominator]))
            else:
                out.append(g.add("had", (kind,), (_prod(g, kind, scale, [numerator]), denominator)))
    return one, common, tuple(out)


def _normal_tail(g, kind, poly, one, common):
    """``_elementwise_normal``'s expanded form of a class's polynomial: with nothing common to
    every term, the class of the whole (None where there is none); else (scale, the sum left
    when the common monomial is taken out, that monomial's class), or None."""
    if not common:  # nothing common to every term: the expanded form, σ(Xw) − y
        parts = _polynomial(g, kind, poly, one)
        return None if parts is None else _prod(g, kind, parts[0], [parts[1]])
    # the largest monomial dividing every term, taken out: u − u² = u ⊙ (1 − u)
    rest: dict = {}
    for m, v in poly.items():
        if v != 0:
            key = tuple(sorted((a, e - common.get(a, 0)) for a, e in m if e - common.get(a, 0) != 0))
            rest[key] = rest.get(key, 0.0) + v
    parts = _polynomial(g, kind, rest, one)
    if parts is None:
        return None
    scale, inner = parts
    return scale, inner, _monomial(g, kind, tuple(sorted(common.items())), one)


NORMAL_SHORTCUT = True  # tests turn it off to compare the graphs with and without it


def _plain_sum(g, c, kind) -> bool:
    """Whether class c is already its own element-wise normal form as a sum: the term its
    polynomial is read from (``_poly_of``: the first of its terms of this kind that expands)
    is a sum of distinct atoms (classes none of whose terms of this kind expands: no sum,
    ⊙-product, power, multiple, ones vector or σ) with coefficients 1 then −1, each group in
    class order — what ``_polynomial`` writes, so the full path would find c itself.  Its
    polynomial is then not computed: a sum of atoms reads the same wherever it is asked for
    (an atom expands nothing), so the per-round memo only saves time."""
    for u in g.terms(c, None):
        op, d, kk = u
        if d[0] != kind:
            continue
        if op == "add":
            return _plain_terms(g, c, u, kind)
        if _expands(g, op, d, kk, kind):
            return False
    return False


def _expands(g, op, d, kk, kind) -> bool:
    """Whether ``_poly_of`` may expand a term (op, d, kk) of this kind (σ: always said to)."""
    return op in ("add", "had") or (op == "call" and d[1] == "sigmoid") or \
        (op == "leaf" and isinstance(d[1], N.Sym) and d[1].role == "one") or \
        (op == "prod" and (d[1] != 1 or (len(kk) == 1 and g.kind(kk[0]) == kind))) or \
        (op == "pow" and _exponent(d[1]) not in (None, 0))


def _plain_terms(g, c, u, kind) -> bool:
    """Whether sum term u of class c is a sum of distinct atoms, coefficients 1 then −1, each
    group in class order (``_plain_sum``)."""
    hit = g.memo.get(u)
    if hit is None or g.find(hit) != c:  # (the sum ``_polynomial`` would look up)
        return False
    coefs, kids = u[1][1], u[2]
    if not 2 <= len(kids) <= MAX_MONOMIALS or len(set(kids)) != len(kids):
        return False
    last, sign = -1, 1.0
    for v, k in zip(coefs, kids):
        if v != sign:
            if sign == 1.0 and v == -1.0 and last >= 0:
                sign, last = -1.0, -1  # the terms with −1, after those with 1
            else:
                return False
        if k <= last or g.parent[k] != k:
            return False
        last = k
        for op, d, kk in g.nodes[k]:
            if d[0] == kind and _expands(g, op, d, kk, kind):
                return False
    return True


def _elementwise_normal(g, c, t):
    """An element-wise part (⊙, ⊘, +, −, numeric multiples, powers, σ(−u)) as a polynomial
    over its atoms, expanded with like monomials merged, and with the factor common to every
    monomial taken out (a denominator common to every term too): y ⊙ (1 − σ) − σ ⊙ (… )
    collapses to σ(Xw) − y, and u − u² to u ⊙ (1 − u).  Valid for all values where the
    input is defined: a factor cancels only against its own reciprocal, which the input
    holds, and a fractional power distributes only over factors ≥ 0."""
    kind = t[1][0]
    if kind == "s":
        return []
    if t[0] == "prod":
        if len(t[2]) != 1 or g.kind(t[2][0]) != kind:
            return []
    elif t[0] == "add" and _complement(g, t):
        return []
    if t[0] != "had" and NORMAL_SHORTCUT and _plain_sum(g, c, kind):
        _ones_leaf(g, c, kind)  # (made where the full path makes it)
        return [c]
    # the work that reads the class and not the term, done once per class and round: the
    # terms of a class share its polynomial, and the graph's classes do not change until the
    # round's unions (``rebuild`` clears ``g.polys``, and with it this memo).  Each part is
    # computed where the unmemoised code computed it, so the classes it adds get the same ids
    key = (g.find(c), kind, "normal")
    memo = g.polys.get(key)
    if memo is None:  # [polynomial, the ones it met, head, tail]
        ones: list = []
        memo = g.polys[key] = [_poly(g, c, kind, ones), ones, None, _BUSY]
    poly = memo[0]
    if poly is None:
        return []
    if len(poly) == 1 and t[0] == "had" and next(iter(poly.values())) == 1 and \
            sorted(next(iter(poly))) == sorted((g.find(k), 1) for k in t[2]):
        return []  # a product of atoms, already as it is: nothing to expand or cancel
    head = memo[2]
    if head is None:
        head = memo[2] = _normal_head(g, c, kind, poly, memo[1])
    one, common, combined_out = head
    out = list(combined_out)
    if t[0] == "had":  # the factors collected, nothing expanded: u ⊙ u = u², s ⊘ s = 1
        collected = _factors(g, t[2])
        if all(e.denominator == 1 for _, e in collected) and len(collected) < len(t[2]) and \
                all(abs(e) <= MAX_DEGREE for _, e in collected):
            out.append(_monomial(g, kind, tuple(sorted(collected)), one) if collected else one)
    tail = memo[3]
    if tail is _BUSY:  # not yet made
        tail = memo[3] = _normal_tail(g, kind, poly, one, common)
    if not common:  # nothing common to every term: the expanded form, σ(Xw) − y
        if tail is not None:
            out.append(tail)
        return [k for k in out if k is not None]
    if tail is None:
        return [k for k in out if k is not None]
    scale, inner, factor = tail
    if not (t[0] == "had" and scale == 1 and
            sorted(g.find(k) for k in (factor, inner)) == sorted(g.find(k) for k in t[2])):
        # the scale on the sum, 2(y − μ) ⊘ v, or in front, where a product's coefficient meets it
        out.append(g.add("had", (kind,), (factor, _prod(g, kind, scale, [inner]))))
        if scale != 1:
            out.append(_prod(g, kind, scale, [g.add("had", (kind,), (factor, inner))]))
    return [k for k in out if k is not None]



def _common_coefficient(g, c, t):
    """cA + cB − cC = c(A + B − C): a coefficient every term shares in size, its own or its
    product's (2Aᵀr + 2h − 2g = 2(Aᵀr + h − g))."""
    kind, coefs = t[1]
    scaled = []
    for coef, k in zip(coefs, t[2]):
        own = [(d[1], kk) for _, d, kk in g.terms(k, "prod") if d[1] != 1]
        scaled.append((coef * own[0][0], _prod(g, kind, 1.0, own[0][1])) if own else (coef, g.find(k)))
    size = abs(scaled[0][0])
    if size == 1 or any(abs(abs(v) - size) > 1e-12 * size for v, _ in scaled):
        return []
    size = size if scaled[0][0] > 0 else -size
    return [_prod(g, kind, size, [g.add("add", (kind, tuple(v / size for v, _ in scaled)),
                                        tuple(k for _, k in scaled))])]


def _power_of_product(g, c, t):
    """(st)ᵖ = sᵖtᵖ for scalars: for an integer p, or any p where every factor is ≥ 0 by
    the range analysis ((‖a‖‖u‖)² = ‖a‖²‖u‖²)."""
    kind, p = t[1]
    if kind != "s":
        return []
    out = []
    for _, d, kk in g.terms(t[2][0], "prod"):
        if d[0] != "s" or any(g.kind(k) != "s" for k in kk):
            continue
        if not float(p).is_integer() and not (d[1] > 0 and all(_nonnegative(g, k) for k in kk)):
            continue
        if d[1] == 0 or (d[1] < 0 and not float(p).is_integer()):
            continue
        out.append(_prod(g, "s", d[1] ** p, [g.add("pow", ("s", p), (k,)) for k in kk]))
    return out[:2]


def _builtin_call(g, c, name):
    """u where class c holds the built-in name(u), else None."""
    for _, d, kk in g.terms(c, "call"):
        if d[1] == name and d[2] == 0 and getattr(d[4], "builtin", True):
            return g.find(kk[0])
    return None


def _sigmoid_of_negation(g, c, t):
    """σ(−u) = 1 − σ(u) (a column of them: the ones vector must be at hand), so that σ(−Xw)
    and 1 − σ(Xw) are one class where the normal form is too large to say so.  The cost
    then prefers 1 − σ(u), which reads against the σ(u) beside it (``length``)."""
    d = t[1]
    if d[1] != "sigmoid" or d[2] != 0 or not getattr(d[4], "builtin", True):
        return []
    u = _negated(g, t[2][0])
    if u is None or g.memo.get(("call", d, (g.find(u),))) is None:
        return []  # only where σ(u) is written too: the two then share one name
    one = _ones_leaf(g, c, d[0])
    if one is None:
        return []
    return [g.add("add", (d[0], (1.0, -1.0)), (one, g.add("call", d, (u,))))]


def _coefficient_out_of_hadamard(g, c, t):
    """a ⊙ (cb) = c(a ⊙ b): a factor's numeric multiple taken in front of the product."""
    kind = t[1][0]
    kids = [g.find(k) for k in t[2]]
    for i, k in enumerate(kids):
        for _, d, kk in g.terms(k, "prod"):
            if d[1] != 1 and len(kk) == 1 and g.kind(kk[0]) == kind:
                rest = kids[:i] + [g.find(kk[0])] + kids[i + 1:]
                return [_prod(g, kind, d[1], [g.add("had", (kind,), tuple(rest))])]
    return []


def _relu_step(g, c, t):
    """relu(s)step(s) = relu(s) among a product's scalar factors (at s = 0 both are 0)."""
    kind, coef = t[1]
    kids = [g.find(k) for k in t[2]]
    relus = {_builtin_call(g, k, "relu") for k in kids if g.kind(k) == "s"} - {None}
    for i, k in enumerate(kids):
        if g.kind(k) == "s" and _builtin_call(g, k, "step") in relus:
            return [_prod(g, kind, coef, kids[:i] + kids[i + 1:])]
    return []


def _nonnegative_argument(g, c, t):
    """|s| = s and relu(s) = s where s ≥ 0 by the range analysis (|σ(u)| = σ(u))."""
    name = t[1][1]
    if name in ("abs", "relu") and t[1][2] == 0 and getattr(t[1][4], "builtin", True) and \
            _nonnegative(g, t[2][0]):
        return [t[2][0]]
    return []


def _frechet_leaf(g, c):
    """L_f(X, E) where class c holds that leaf (``notation.Sym``, role ``frechet``), else None."""
    for _, d, _ in g.terms(c, "leaf"):
        if isinstance(d[1], N.Sym) and d[1].role == "frechet":
            return d[1]
    return None


def _along(leaf, e: N.M) -> N.Sym:
    """L_f(X, E) at the same f and X along the direction e, written as simply as it can be."""
    return dataclasses.replace(leaf, params=(*leaf.params[:2], simplest(e)))


def _frechet_sum(g, c, t):
    """c₁L_f(X, E₁) + c₂L_f(X, E₂) = L_f(X, c₁E₁ + c₂E₂): L_f is linear in its direction, so
    the Fréchet derivatives at one point in a sum are one (the other terms stay beside it)."""
    kind, coefs = t[1]
    groups: dict = {}  # (f, X, shape) -> [(coef, kid, leaf)]
    for coef, k in zip(coefs, t[2]):
        leaf = _frechet_leaf(g, k)
        if leaf is not None:
            groups.setdefault((leaf.params[0], leaf.params[1], leaf.dims), []).append((coef, g.find(k), leaf))
    out = []
    for found in groups.values():
        if len(found) < 2:
            continue
        e = N.add([(coef, leaf.params[2]) for coef, _, leaf in found])
        if isinstance(e, N.Sym) and e.role == "zero":
            continue  # the directions cancel: L_f(X, 0) = 0, which the sum has no leaf for
        merged = g.add("leaf", (kind, _along(found[0][2], e)))
        used = {k for _, k, _ in found}
        rest = [(coef, k) for coef, k in zip(coefs, t[2]) if g.find(k) not in used]
        if not rest:
            out.append(merged)
        else:
            out.append(g.add("add", (kind, (1.0, *(d for d, _ in rest))), (merged, *(k for _, k in rest))))
    return out[:1]


def _frechet_scale(g, c, t):
    """c·L_f(X, E) = L_f(X, cE): the cost keeps the number in front unless inside it is
    shorter (it merges with E's own coefficient, 3L_f(X, 2E) = L_f(X, 6E))."""
    kind, coef = t[1]
    if coef == 1 or len(t[2]) != 1:
        return []
    leaf = _frechet_leaf(g, t[2][0])
    if leaf is None:
        return []
    return [g.add("leaf", (kind, _along(leaf, N.prod(coef, [leaf.params[2]]))))]


RULES = [
    Rule("(Aᵀ)ᵀ = A", "symmetry", "T", _double_transpose),
    Rule("Sᵀ = S for symmetric S", "symmetry", "T", _symmetric_transpose),
    Rule("(AB)ᵀ = BᵀAᵀ", "symmetry", "T", _transpose_product),
    Rule("(A + B)ᵀ = Aᵀ + Bᵀ", "symmetry", "T", _transpose_sum),
    Rule("Aᵀ + Bᵀ = (A + B)ᵀ", "symmetry", "add", _sum_of_transposes),
    Rule("(Aᵀ)⁻¹ = (A⁻¹)ᵀ", "symmetry", "inv", _inverse_transpose),
    Rule("(A⁻¹)ᵀ = (Aᵀ)⁻¹", "symmetry", "T", _transpose_inverse),
    Rule("f(Aᵀ) = f(A)ᵀ for expm, logm, sqrtm", "symmetry", "call", _function_of_transpose),
    Rule("f(A)ᵀ = f(Aᵀ) for expm, logm, sqrtm", "symmetry", "T", _transpose_of_function),
    Rule("cA + dA = (c + d)A", "element-wise", "add", _like_terms),
    Rule("s ⊙ (y ⊘ s) = y", "element-wise", "had", _hadamard_cancel),
    Rule("element-wise normal form: expand, merge like monomials, σ(−u) = 1 − σ(u)",
         "element-wise", "add", _elementwise_normal),
    Rule("element-wise normal form of a product", "element-wise", "had", _elementwise_normal),
    Rule("element-wise normal form of a multiple", "element-wise", "prod", _elementwise_normal),
    Rule("|s| = s, relu(s) = s for s ≥ 0", "element-wise", "call", _nonnegative_argument),
    Rule("σ(−u) = 1 − σ(u)", "element-wise", "call", _sigmoid_of_negation),
    Rule("a ⊙ (cb) = c(a ⊙ b)", "element-wise", "had", _coefficient_out_of_hadamard),
    Rule("relu(s)step(s) = relu(s)", "scalars", "prod", _relu_step),
    Rule("cA + cB = c(A + B)", "scalars", "add", _common_coefficient),
    Rule("(st)ᵖ = sᵖtᵖ", "scalars", "pow", _power_of_product),
    Rule("diag(a)diag(b) = diag(a ⊙ b)", "element-wise", "prod", _diag_product),
    Rule("diag(a) + diag(b) = diag(a + b)", "element-wise", "add", _diag_sum),
    Rule("diag(u)1 = u, 1ᵀdiag(u) = uᵀ", "element-wise", "prod", _diag_ones),
    Rule("diag(u)M diag(v) = (uvᵀ) ⊙ M", "element-wise", "prod", _diag_sandwich),
    Rule("U diag(cλᵏ)Uᵀ = cSᵏ for S = UΛUᵀ", "inverses", "prod", _spectral_power),
    Rule("diag(λᵏ) = Λᵏ, diag(σᵏ) = Σᵏ", "inverses", "call", _values_power),
    Rule("a(bc) = abc", "scalars", "prod", _flatten_product),
    Rule("(xᵀx)ᵖ = ‖x‖²ᵖ, tr(XᵀX)ᵖ = ‖X‖_F²ᵖ", "scalars", "pow", _norm),
    Rule("xᵀx = ‖x‖²", "scalars", "prod", _norm_square),
    Rule("tr(XᵀX) = ‖X‖_F²", "scalars", "call", _trace_square),
    Rule("1ᵀ1 = n", "scalars", "prod", _count),
    Rule("J1 = n1, 1ᵀJ = n1ᵀ, JJ = nJ (J all ones)", "scalars", "prod", _ones_matrix_factor),
    Rule("tr(I) = n", "scalars", "call", _count),
    Rule("1ᵀsvdvals(X) = ‖X‖_*", "scalars", "prod", _singular_values),
    Rule("‖svdvals(X)‖ = ‖X‖_F", "scalars", "call", _singular_values),
    Rule("sᵖsᵠ = sᵖ⁺ᵠ", "scalars", "prod", _scalar_powers),
    Rule("(sᵖ)ᵠ = sᵖᵠ", "scalars", "pow", _power_of_power),
    Rule("sP + sQ = s(P + Q)", "scalars", "add", _common_scalar),
    Rule("AP + AQ = A(P + Q)", "scalars", "add", _common_matrix),
    Rule("A(P + Q) = AP + AQ", "scalars", "prod", _distribute),
    Rule("A(−B − C)D = −A(B + C)D", "scalars", "prod", _sign_leads),
    Rule("(−A − B)ᵀ = −(A + B)ᵀ", "scalars", "T", _sign_out_of_transpose),
    Rule("(A⁻¹)⁻¹ = A", "inverses", "inv", _double_inverse),
    Rule("det(AB) = det(A)det(B), det(Aᵏ) = det(A)ᵏ", "inverses", "call", _det_product),
    Rule("AʲAᵏ = Aʲ⁺ᵏ", "inverses", "prod", _matrix_powers),
    Rule("(Aᵏ)⁻¹ = A⁻ᵏ", "inverses", "inv", _inverse_of_power),
    Rule("(A⁻¹)ᵏ = A⁻ᵏ", "inverses", "matpow", _power_of_inverse),
    Rule("(Aᵏ)ᵀ = (Aᵀ)ᵏ", "inverses", "T", _transpose_power),
    Rule("(Aᵀ)ᵏ = (Aᵏ)ᵀ", "inverses", "matpow", _power_transpose),
    Rule("BᵀAᵀ = (AB)ᵀ", "symmetry", "prod", _product_of_transposes),
    Rule("(AB)⁻¹ = B⁻¹A⁻¹", "inverses", "inv", _inverse_of_product),
    Rule("tr(AB) = tr(BA)", "scalars", "call", _trace_rotation),
    Rule("tr(sA) = s tr(A), tr(A + B) = tr(A) + tr(B)", "scalars", "call", _trace_linear),
    Rule("tr(A ⊗ B) = tr(A)tr(B)", "kronecker", "call", _kron_call),
    Rule("(A ⊗ B)ᵀ = Aᵀ ⊗ Bᵀ", "kronecker", "T", _kron_transpose),
    Rule("(A ⊗ B)⁻¹ = A⁻¹ ⊗ B⁻¹", "kronecker", "inv", _kron_inverse),
    Rule("(A ⊗ B)(C ⊗ D) = AC ⊗ BD", "kronecker", "prod", _kron_mixed),
    Rule("L_f(X, E₁) + L_f(X, E₂) = L_f(X, E₁ + E₂)", "matrix functions", "add", _frechet_sum),
    Rule("cL_f(X, E) = L_f(X, cE)", "matrix functions", "prod", _frechet_scale),
]


# the functions a rule on calls can rewrite: on any other it returns nothing and adds
# nothing to the graph, so saturation does not call it there
CALL_NAMES = {_function_of_transpose: PRIMARY, _nonnegative_argument: ("abs", "relu"),
              _sigmoid_of_negation: ("sigmoid",), _trace_square: ("tr",), _count: ("tr",),
              _singular_values: ("norm",), _det_product: ("det",), _trace_rotation: ("tr",),
              _trace_linear: ("tr",), _kron_call: ("tr",), _values_power: ("diag",)}


# what a rule cannot match without (the operator index, issue 24): alternatives, each a set
# of ``_features`` that must all be in the graph; a rule not listed may match anything.
# Read off each rule's function: it returns nothing unless it finds such terms (a rule on
# ⊙-products, say, only runs on ⊙-products anyway).  The graph's features only grow, and
# ``saturate`` looks again whenever they do, so a rule is skipped only where it would
# return nothing (rules that would return something for a term without kids — Aᵀ + Bᵀ =
# (A + B)ᵀ, diag(a) + diag(b), BᵀAᵀ over no factors — are left out, however odd such a term).
_KRON = [("kron",)]
_TRANSPOSE = [("T",)]
_FRECHET = [(("role", "frechet"),)]
NEEDS = {
    _relu_step: [(("call", "relu"), ("call", "step"))],
    _diag_product: [(("call", "diag"),)],
    _diag_ones: [(("call", "diag"), ("role", "one"))],
    _diag_sandwich: [(("call", "diag"),)],
    _spectral_power: [(("call", "Q"), ("call", "diag"), ("call", "eigvalsh"))],
    _values_power: [(("call", "diag"), ("call", "eigvalsh")), (("call", "diag"), ("call", "svdvals"))],
    _kron_call: _KRON, _kron_transpose: _KRON, _kron_inverse: _KRON, _kron_mixed: _KRON,
    _singular_values: [(("call", "svdvals"),)],
    _count: [(("role", "one"),), (("role", "eye"),)],
    _ones_matrix_factor: [(_ONES_MATRIX,)],
    _transpose_of_function: [(("call", f),) for f in PRIMARY],
    _function_of_transpose: _TRANSPOSE,
    _power_of_inverse: [("inv",)],
    _frechet_sum: _FRECHET, _frechet_scale: _FRECHET,
}


def _can_match(apply, features) -> bool:
    needs = NEEDS.get(apply)
    return needs is None or any(all(f in features for f in alt) for alt in needs)


# the kinds of term (data[0]) a rule can match, where it returns nothing, at once, for the
# others (xᵀx = ‖x‖² on a scalar product only, the element-wise normal form on no scalar):
# ``saturate`` does not call it on those.  A rule not listed is called on every kind
KINDS = {_norm_square: "s", _power_of_product: "s", _count: "s", _singular_values: "s",
         _elementwise_normal: "crm", _sum_of_transposes: "crm", _product_of_transposes: "crm",
         _diag_sum: "m"}

_LISTS: dict = {}  # (id of RULES or WITHOUT_NORMAL_FORM, features) -> ``_rule_lists``


def _rule_lists(rules, features) -> tuple:
    """The functions of the rules that can match in a graph with these features: by
    operator and kind of term (``KINDS``), in order, and for calls by function name
    (``CALL_NAMES``)."""
    shared = rules is RULES or rules is WITHOUT_NORMAL_FORM
    if shared:
        key = (id(rules), len(rules), frozenset(features), id(KINDS))
        hit = _LISTS.get(key)
        if hit is not None:
            return hit
    by_op: dict = {}
    for r in rules:
        if _can_match(r.apply, features):
            by_op.setdefault(r.op, []).append(r.apply)
    calls = by_op.pop("call", [])
    by_call = {name: [f for f in calls if name in CALL_NAMES.get(f, (name,))]
               for name in {f[1] for f in features if f[0] == "call"}}
    by_kind = {(op, kind): [f for f in fs if kind in KINDS.get(f, kind)]
               for op, fs in by_op.items() for kind in "scrm"}
    out = by_kind, by_call
    if shared:
        if len(_LISTS) > 1024:
            _LISTS.clear()
        _LISTS[key] = out
    return out


# --------------------------------------------------------------------------- saturation and extraction

WITHOUT_NORMAL_FORM = [r for r in RULES if r.apply is not _elementwise_normal]

# the rules whose matches read only the term, the terms of its kids' classes, and the kinds
# and classes of those terms' kids — no analysis, no lookup of a term elsewhere, no decision
# on the class of a term they make.  Between rounds a class's terms change only where the
# round's unions or the rebuild merge or re-key it (``EGraph.moved``), and a kid of a kid
# merged re-keys the kid's term; kinds change only where a class is mixed.  Such a match on a
# term the round before matched, none of whose kids has moved, reads what it read then, so
# it makes the same terms (all in the graph: every key it added is still in ``memo``, re-keyed
# where its kids merged) and finds classes already merged with the term's: skipping it
# leaves the graph as it would be, ids included (issue 24)
#
# The same holds one level further down (semi-naive matching, as egg and egglog rematch only
# what changed): a rule of ``NEAR`` also reads the terms of its kids' kids' classes, or the
# analyses (shape, symmetry, range) of its kids' classes or of theirs.  A kid's kid's class
# whose terms change without its id changing (it absorbed another) re-keys nothing above it,
# and an analysis changes without a merge, so such a rule is not run again on a term only
# where none of its kids is in ``near``: the classes moved, narrowed (range) or found
# symmetric by the last rebuild, and the classes holding a term with one of those as a kid.
# Rules that look a term up elsewhere (``_transposes``: is there a T(x)?) or read a class's
# whole element-wise expansion are in neither set
NEAR = frozenset({_matrix_powers, _scalar_powers, _power_of_power, _power_of_product,
                  _inverse_of_product, _det_product, _count, _symmetric_transpose,
                  _nonnegative_argument, _kron_inverse, _kron_mixed, _diag_ones, _values_power})
LOCAL = frozenset({_distribute, _common_matrix, _common_scalar, _flatten_product, _sign_leads,
                   _product_of_transposes, _sum_of_transposes, _common_coefficient,
                   _double_transpose, _transpose_product, _transpose_sum, _inverse_transpose,
                   _transpose_inverse, _function_of_transpose, _transpose_of_function,
                   _double_inverse, _like_terms, _coefficient_out_of_hadamard, _transpose_power,
                   _power_transpose, _inverse_of_power, _power_of_inverse, _trace_rotation,
                   _trace_linear, _sign_out_of_transpose, _kron_call, _kron_transpose,
                   _diag_product, _diag_sum, _relu_step, _diag_sandwich}) | NEAR
# A rule of ``DEEP`` reads class c's whole element-wise expansion: the terms of every class
# below c, and their ranges.  Between rounds such a class can change only where one below c
# (or c) was merged, re-keyed, narrowed or found symmetric by the last rebuild, so the rule is
# not run again on a term it matched the round before where c is above none of those
# (``_below_changed``): it would read the same polynomial and make the same terms
DEEP = frozenset({_elementwise_normal})
LOCAL = LOCAL | DEEP
LOCAL_OPS = frozenset(r.op for r in RULES if r.apply in LOCAL)


def _near(g: EGraph) -> set:
    """The classes a ``NEAR`` rule's match on a term with a kid among them may read
    differently than the round before (see ``NEAR``)."""
    out = g.moved | g.above | g.narrowed | g.flipped
    for c in (g.narrowed | g.flipped) - g.moved:
        out |= g._users(g.find(c))
    return out


def _below_changed(g: EGraph) -> set:
    """The classes a ``DEEP`` rule's match may read differently than the round before: those
    the last rebuild moved, narrowed or found symmetric, and every class above one of them."""
    out = set(g.moved | g.narrowed | g.flipped)
    work = list(out)
    while work:
        for u in g._users(g.find(work.pop())):
            if u not in out:
                out.add(u)
                work.append(u)
    return out


def saturate(g: EGraph, rules=None, max_nodes=MAX_NODES, max_rounds=MAX_ROUNDS, root=None,
             cost=None) -> int:
    """Apply every rule to every term until nothing changes; returns the rounds run.  Each
    round matches on a snapshot, so the rules' order does not matter.  A rule whose
    ``NEEDS`` the graph lacks is not run (it would return nothing), nor on a kind of term it
    returns nothing for (``KINDS``); the list of rules that can run is made again whenever a
    term brings something new.  A ``LOCAL`` rule is not run
    again on a term it matched the round before where none of the term's kids' classes has
    changed since (see ``LOCAL``; for a ``NEAR`` rule, where none is in ``_near``; for a
    ``DEEP`` one, where the term's class is not in ``_below_changed``): it would
    make the same terms, all in the graph already, and find the classes it found then,
    merged with the term's already.  ``max_nodes`` is
    checked as each term is matched: a round that passes it stops matching, merges what it
    found, and is the last.

    Given the class ``root`` (and its ``cost``), saturation also stops where more rounds
    have stopped paying (``_Patience``): once the graph holds over ``PATIENCE_NODES`` terms,
    root's best cost is extracted, and again every ``PATIENCE`` rounds; a cost no lower than
    the one before ends it (the last extraction is kept for ``extract``)."""
    rules = RULES if rules is None else rules
    watch = _Patience(root, cost) if root is not None else None
    features = g.features
    seen = -1        # len(features) the lists were made for
    g.rebuild()
    before: set = set()  # the terms the last round matched
    shared = _shared_sums(g)
    for n in range(max_rounds):
        if shared:
            g.shared = {g.find(x) for x in shared}
        snapshot = [(c, t) for c, ts in g.nodes.items() for t in ts]
        found = []
        moved = g.moved
        near = _near(g) if before else set()
        deep = _below_changed(g) if before else set()
        again = bool(before) and not g.mixed  # a mixed class's kind may change: no rule is
        # skipped then (nor in the first round, which matches every term)
        for c, t in snapshot:
            if len(features) != seen:
                by_op, by_call = _rule_lists(rules, features)
                rest: dict = {}  # (rule list key, NEAR ones kept) -> the list without the skipped
                seen = len(features)
            op = t[0]
            fs = by_call[t[1][1]] if op == "call" else by_op.get((op, t[1][0]), _NONE)
            if again and op in LOCAL_OPS and t in before and moved.isdisjoint(t[2]):
                key = (op, t[1][1] if op == "call" else t[1][0], near.isdisjoint(t[2]), c not in deep)
                left = rest.get(key)
                if left is None:  # the LOCAL rules matched it the round before
                    left = rest[key] = [f for f in fs if f not in LOCAL or (f in NEAR and not key[2])
                                        or (f in DEEP and not key[3])]
                fs = left
            for apply in fs:
                out = apply(g, c, t)
                if out:
                    found.extend([(c, x) for x in out])
            if g.size > max_nodes:  # the cap holds inside a round too: the terms matched so
                break               # far are merged, and saturation ends with this round
        size = g.size
        changed = False
        for c, x in found:
            changed |= g.union(c, x)
        g.rebuild()
        if (not changed and g.size == size) or g.size > max_nodes:
            return n + 1
        if watch is not None and n + 1 < max_rounds and watch.stalled(g):
            return n + 1
        before = {t for _, t in snapshot if t[0] in LOCAL_OPS}
    return max_rounds


def _shared_sums(g: EGraph) -> list:
    """The classes of sums that two classes or more use, the parts of the input that printing
    names, and the classes of their transposes (``_distribute``)."""
    def is_sum(c):
        return any(t[0] == "add" for t in g.nodes[g.find(c)])
    uses = g.uses
    out = [c for c, ts in g.nodes.items() if len(uses[c]) >= 2
           and any(t[0] == "add" or (t[0] == "T" and is_sum(t[2][0])) for t in ts)
           and len({g.find(u) for u in uses[c]}) >= 2]
    named = set(out)
    return out + [u for c in out for u in uses[c] if u not in named and
                  any(t[0] == "T" and g.find(t[2][0]) == c for t in g.nodes[g.find(u)])]


PATIENCE_NODES = 200  # over this many terms, saturation stops where …
PATIENCE = 2          # … this many more rounds have not lowered the root's best cost


class _Patience:
    """``saturate``'s stopping rule for large graphs (issue 24), egg's node limit made
    patient.  After the first round that leaves the graph over ``PATIENCE_NODES`` terms, the
    root's best cost is extracted, and again every ``PATIENCE`` rounds: where it is no lower
    than the time before, later rounds are not run.  Graphs grow where rules multiply out and
    re-group a sum (A(P + Q) = AP + AQ and back) over every grouping of a product: the
    Hessian of ‖Ax − b‖ reaches its printed form in round 3 at 155 terms, and grew to 1,043
    terms in 8 rounds without finding a cheaper one (patience stopped it after round 6, at 695;
    ``_distribute`` now keeps it at 45 terms).
    Over ``benchmarks/present.py``'s corpus this stops 4 of 819 graphs before the form the
    full 8 rounds find, each then printing a form that costs the same or less on its own
    (docs/benchmarks.md); a plain node limit (stop past N terms) printed costlier forms at
    every N up to 800, and so did stopping after one round without gain at N ≤ 500."""

    def __init__(self, root, cost):
        self.root, self.cost = root, cost or length
        self.best = None   # the root's cost at the last extraction
        self.waited = 0    # rounds since

    def stalled(self, g: EGraph) -> bool:
        if self.best is None:
            if g.size <= PATIENCE_NODES:
                return False
        else:
            self.waited += 1
            if self.waited < PATIENCE:
                return False
        out = extract(g, self.root, self.cost)
        g.extracted = (self.root, self.cost, g.size, g.unions, out)
        if self.best is not None and out[1] >= self.best - 1e-9:
            return True
        self.best, self.waited = out[1], 0
        return False


def extract(g: EGraph, root: int, cost=length):
    """The cheapest term of every class (ties broken by a structural key): the chosen
    notation tree of ``root`` and its cost."""
    last = g.extracted  # saturate's last extraction, if nothing changed since
    if last is not None and last[:4] == (root, cost, g.size, g.unions):
        return last[4]
    best = _best(g, cost)
    return _tree(g, best, root), best[g.find(root)][0]


def _tree(g: EGraph, best: dict, root: int) -> N.M:
    """The notation tree of root's cheapest terms (``_best``)."""
    built: dict = {}

    def tree(c):
        c = g.find(c)
        if c not in built:
            t = best[c][3]
            built[c] = build(t, [tree(k) for k in t[2]])
        return built[c]

    return tree(root)


def _best(g: EGraph, cost) -> dict:
    """class -> (cost, tie-break key, op, term) of its cheapest term."""
    best: dict = {}
    # the terms in the order of the passes, and for each class the terms using it: a pass
    # looks again only at the terms whose kids' best changed since they were last looked at
    # (the others would find what they found then), so the passes end as they always have
    # (a term with its own class as a kid is never its own part: it is left out; the
    # comparison below is the tuple comparison (value, key) < (old value, old key), the key
    # made only where the value does not already decide it)
    entries, users = [], {}
    find, parent = g.find, g.parent
    for c, ts in g.nodes.items():
        for t in ts:
            kids = t[2]
            if kids:
                kids = [k if parent[k] == k else find(k) for k in kids]
                if c in kids:
                    continue
                n = len(entries)
                for k in kids if len(kids) == 1 else set(kids):
                    users.setdefault(k, []).append(n)
            entries.append((c, t, kids))
    dirty = [True] * len(entries)
    heads: list = [None] * len(entries)  # each term's own part of the tie-break key, made once
    get = best.get
    for _ in range(len(g.nodes) + 2):  # costs only fall; a pass without change ends it
        changed = False
        for i, (c, t, kids) in enumerate(entries):
            if not dirty[i]:
                continue
            dirty[i] = False
            if len(kids) == 1:
                b = get(kids[0])
                if b is None:  # a kid without a best term yet
                    continue
                parts = (b,)
                value = round(cost(g, t, [b[0]], [b[2]]), 9)
            elif kids:
                parts = [get(k) for k in kids]
                if None in parts:  # a kid without a best term yet
                    continue
                value = round(cost(g, t, [b[0] for b in parts], [b[2] for b in parts]), 9)
            else:  # a leaf
                parts = ()
                value = round(cost(g, t, [], []), 9)
            old = get(c)
            if old is not None and value > old[0]:
                continue
            head = heads[i]
            if head is None:
                head = heads[i] = repr(t[1][:2]) if t[0] != "leaf" else _leaf_text(t[1][1])
            key = (t[0], head, tuple([b[1] for b in parts]))
            if old is None or value < old[0] or (value == old[0] and key < old[1]):
                best[c] = (value, key, t[0], t)
                changed = True
                for j in users.get(c, ()):
                    dirty[j] = True
        if not changed:
            break
    return best


def _own_cost(g: EGraph, root: int, cost) -> float:
    """``_best(g, cost)[root][0]`` on a graph as ingested (no union yet): each class holds
    one term, made after its kids', so one pass in class order finds each class's cost."""
    if g.unions:
        return _best(g, cost)[root][0]
    done: dict = {}  # class -> (cost, op)
    for c, ts in g.nodes.items():
        for t in ts:
            kids = t[2]
            if len(kids) == 1:
                b = done[kids[0]]
                done[c] = (round(cost(g, t, [b[0]], [b[1]]), 9), t[0])
            else:
                done[c] = (round(cost(g, t, [done[k][0] for k in kids], [done[k][1] for k in kids]), 9), t[0])
    return done[root][0]


@_memo_by_identity
def _leaf_text(m: N.M) -> str:
    """A leaf's tie-break text, written once."""
    return repr(m)


def cost_of(m: N.M, cost=length) -> float:
    """The cost of m as written (no rule applied)."""
    g = EGraph()
    root = ingest(g, m, {})
    g.rebuild()
    return _own_cost(g, g.find(root), cost)


_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


NORMAL_FORM_LIMIT = 400  # a tree of more nodes (shared ones counted each time) is not expanded


def _larger_than(m: N.M, limit: int) -> bool:
    """Whether the tree of m, each use of a shared subtree counted, has over limit nodes."""
    count, stack = 0, [m]
    while stack:
        count += 1
        if count > limit:
            return True
        stack.extend(N.children(stack.pop()))
    return False


def _shared(m: N.M) -> list:
    """The subtrees of m used more than once (the ones printing names), innermost first: not
    a transpose (its argument is named) nor the inverse of a variable (S⁻¹ is as short as a
    name, and rules such as S⁻¹S = I must see it)."""
    counts = N.occurrences(m)
    order, seen, stack = [], set(), [(m, False)]
    while stack:  # post-order: a subtree after everything inside it
        x, done = stack.pop()
        if done:
            order.append(x)
        elif id(x) not in seen:
            seen.add(id(x))
            stack.append((x, True))
            stack.extend((k, False) for k in N.children(x))
    return [x for x in order if x is not m and counts[id(x)] >= 2 and N.children(x) and
            not isinstance(x, N.T) and not (isinstance(x, N.Inv) and isinstance(x.arg, N.Sym))]


def _substituted(m: N.M, table: dict, memo: dict) -> N.M:
    """m with each subtree whose id (or, for a stand-in, name) ``table`` holds replaced; the
    nodes above a replacement are rebuilt as they were written, the rest kept (shared)."""
    hit = table.get(id(m)) or (table.get(m.name) if isinstance(m, N.Sym) else None)
    if hit is not None:
        return hit
    if id(m) in memo:
        return memo[id(m)]
    kids = N.children(m)
    new = [_substituted(k, table, memo) for k in kids]
    if all(a is b for a, b in zip(kids, new)):
        out = m
    elif isinstance(m, N.Prod):
        out = N.Prod(m.kind, m.coef, tuple(new))
    elif isinstance(m, (N.Had, N.Kron)):
        out = type(m)(m.kind, tuple(new))
    elif isinstance(m, N.Add):
        out = N.Add(m.kind, tuple((c, t) for (c, _), t in zip(m.terms, new)))
    else:  # T, Call, Inv, Pow, MatPow: one argument
        out = dataclasses.replace(m, arg=new[0])
    memo[id(m)] = out
    return out


def _by_parts(m: N.M, rules) -> N.M:
    """m written part by part: each subtree used more than once is chosen on its own, with
    the shared subtrees inside it standing as opaque variables of their shape and symmetry,
    then put back, so each is still one object that printing names once.  For long results
    with repeated parts (a derivative through a chain of softmaxes), whose graph as a whole
    would grow with the result until ``MAX_NODES`` stops it (time, and forms that depend on
    where it stopped), the work is linear in the parts."""
    stand, back = {}, {}  # id(shared subtree) -> its stand-in; stand-in's name -> chosen form
    for r in _shared(m):
        piece = _substituted(r, stand, {})
        g = EGraph()
        root = ingest(g, piece, {})
        g.rebuild()
        root = g.find(root)
        name = f"\x00{len(stand)}"  # no name a user can write
        stand[id(r)] = N.Sym(r.kind, name, "var", bool(g.sym.get(root)), tuple(g.dims.get(root) or ()))
        back[name] = _substituted(simplest(piece, rules), back, {})
    return _substituted(simplest(_substituted(m, stand, {}), rules), back, {})


PARTS_LIMIT = 10 * MAX_NODES  # a tree with repeated subtrees that, written out (shared ones
# counted each time), has ten times the nodes the graph may hold is written part by part
# (``_by_parts``); below it, the whole tree's graph also finds equalities between the parts


def simplest(m: N.M, rules=None, cost=None) -> N.M:
    """The shortest equal way to write m (m itself where nothing is shorter); with
    ``cost=flops(sizes)``, the equal form cheapest to compute at those sizes."""
    if isinstance(m, N.Index) or not N.children(m):
        return m
    plain = rules is None and cost is None
    if plain:
        hit = _CACHE.get(m)
        if hit is not None:
            return m if hit is _SAME else hit
    cost = cost or length
    if rules is None and _larger_than(m, NORMAL_FORM_LIMIT):
        rules = WITHOUT_NORMAL_FORM  # a long result (a deep network's derivation step) is
        # written without expanding its element-wise parts, whose cost grows with their size
        if plain and _larger_than(m, PARTS_LIMIT) and _shared(m):
            out = _by_parts(m, rules)
            with _LOCK:
                return _cached(m, out)
    g = EGraph()
    root = ingest(g, m, {})
    g.rebuild()
    size = g.size
    root = g.find(root)
    # m's own cost (``cost_of``) on the graph as ingested, priced just before a rule first
    # makes or merges a class (where none does, m is kept and its cost is not needed)
    priced: list = []
    g.pristine = lambda: priced.append(_own_cost(g, root, cost))
    _pair_negated_sums(g)
    saturate(g, rules, root=root, cost=cost)
    g.pristine = None
    if g.size == size and not g.unions:  # no rule changed anything: m is its simplest form
        out = m
    else:
        own = priced[0]
        last = g.extracted  # saturate's last extraction, if nothing changed since
        if last is not None and last[:4] == (root, cost, g.size, g.unions):
            out, value = last[4]
        else:  # ``extract``, the tree built only where it is chosen
            best = _best(g, cost)
            value = best[g.find(root)][0]
            out = _tree(g, best, root) if value <= own - 1e-9 else m
        if value > own - 1e-9:  # never costlier than what came in
            out = m
        elif out is not m and cost_of(out, cost) > own - 1e-9:
            out = m  # nor the tree built: the graph prices a product among a product's factors
            # (a sum among a sum's terms) apart, the tree flattens it (``N.prod``, ``N.add``)
    if plain:
        with _LOCK:
            out = _cached(m, out)
    return out


_SAME = object()  # in _CACHE: the tree is its own simplest form


def _cached(m: N.M, out: N.M) -> N.M:
    """``out`` for m, stored (the first answer stored wins, so threads agree); an m that is
    its own simplest form is stored as _SAME and answered with the caller's m itself, the
    same object (an equal tree cached earlier is another object, and a value that held its
    weak key would keep it alive)."""
    hit = _CACHE.setdefault(m, _SAME if out is m else out)
    return m if hit is _SAME else hit
