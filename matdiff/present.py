"""The presentation algebra: of all the equal ways to write a result, the simplest.

``simplest(m)`` puts a matrix-notation tree (``notation.py``) into a small e-graph — a set
of equivalence classes of terms, as in egg/egglog — applies every identity of ``RULES`` to
every class until nothing new appears (or a size limit is reached), and extracts from each
class its cheapest member by a cost:

- ``length``: the printed length, each variable counted once more (so a factored
  (A + Aᵀ)x is preferred to Ax + Aᵀx) and each character inside a function's parentheses
  weighing 1.1 (so det(X)² is preferred to det(X²));
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

import itertools
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


# --------------------------------------------------------------------------- the e-graph

class EGraph:
    """Classes of equal terms.  A term (an e-node) is ``(op, data, kids)``: ``data`` holds
    the kind (s, c, r, m) first, then what the op needs (a coefficient, a function name);
    ``kids`` are class ids.  ``find`` gives a class's representative id."""

    def __init__(self):
        self.parent: list = []
        self.nodes: dict = {}     # class -> set of e-nodes
        self.memo: dict = {}      # e-node -> class
        self.dims: dict = {}      # class -> shape (tuple of dims), or None where unknown
        self.sym: dict = {}       # class -> symmetric by structure
        self.size = 0

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def add(self, op: str, data: tuple, kids=()) -> int:
        kids = tuple(self.find(k) for k in kids)
        key = (op, data, kids)
        hit = self.memo.get(key)
        if hit is not None:
            return self.find(hit)
        cid = len(self.parent)
        self.parent.append(cid)
        self.nodes[cid] = {key}
        self.memo[key] = cid
        self.dims[cid] = _dims(self, key)
        self.sym[cid] = False
        self.size += 1
        return cid

    def union(self, a: int, b: int) -> bool:
        a, b = self.find(a), self.find(b)
        if a == b:
            return False
        if a > b:
            a, b = b, a
        self.parent[b] = a
        self.nodes[a] |= self.nodes.pop(b)
        self.dims[a] = self.dims[a] or self.dims.pop(b)
        self.sym[a] = self.sym[a] or self.sym.pop(b, False)
        return True

    def rebuild(self) -> None:
        """Restore congruence (equal kids make equal terms) and recompute the analyses."""
        while True:
            memo, merges = {}, []
            for c in list(self.nodes):
                fresh = set()
                for op, data, kids in self.nodes[c]:
                    key = (op, data, tuple(self.find(k) for k in kids))
                    fresh.add(key)
                    other = memo.get(key)
                    if other is not None and self.find(other) != c:
                        merges.append((other, c))
                    else:
                        memo[key] = c
                self.nodes[c] = fresh
            if not merges:
                self.memo = memo
                break
            for a, b in merges:
                self.union(a, b)
        changed = True
        while changed:  # symmetry is a least fixpoint: a class is symmetric once one term is
            changed = False
            for c, terms in self.nodes.items():
                if not self.sym[c] and any(_symmetric_term(self, t) for t in terms):
                    self.sym[c] = changed = True

    def kind(self, c: int) -> str:
        return next(iter(self.nodes[self.find(c)]))[1][0]

    def terms(self, c: int, op: str) -> list:
        """The terms of class c with operator op, in a fixed order."""
        return sorted((t for t in self.nodes[self.find(c)] if t[0] == op), key=_order_key)


def _order_key(t):
    op, data, kids = t
    return (op, repr(data), kids)


def _dims(g: EGraph, key) -> tuple | None:
    """The shape of a term from its kids' shapes (None where a kid's is unknown)."""
    op, data, kids = key
    kind = data[0]
    if kind == "s":
        return ()
    if op == "leaf":
        m = data[1]
        if isinstance(m, N.Sym):
            return tuple(m.dims) if len(m.dims) == {"c": 1, "r": 1, "m": 2}[kind] else None
        if isinstance(m, N.Index):
            return tuple(m.node.shape)
        return None
    ks = [g.dims.get(g.find(k)) for k in kids]
    if op in ("T",):
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
    if op == "prod":
        shaped = [(g.kind(k), s) for k, s in zip(kids, ks) if g.kind(k) != "s"]
        if any(s is None for _, s in shaped) or not shaped:
            return None
        (k0, s0), (k1, s1) = shaped[0], shaped[-1]
        rows = s0[:1] if k0 in ("c", "m") else ()
        cols = s1[-1:] if k1 in ("r", "m") else ()
        return rows + cols
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
        fs = [k for k in kids if g.kind(k) != "s"]
        return all(_transposes(g, fs[i], fs[-1 - i]) for i in range((len(fs) + 1) // 2))
    if op == "add":
        coefs = dict(zip(data[1], kids))
        return all(g.sym[g.find(k)] or any(g.find(coefs.get(c, -1)) == g.find(k2) if c in coefs else False
                                            for k2 in _transposed(g, k)) for c, k in zip(data[1], kids))
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
    a, b = g.find(a), g.find(b)
    if a == b and g.sym[a]:
        return True
    return b in _transposed(g, a) or a in _transposed(g, b)


# --------------------------------------------------------------------------- notation in and out

_T = {"s": "s", "c": "r", "r": "c", "m": "m"}


def ingest(g: EGraph, m: N.M, seen: dict) -> int:
    """The class of m, adding its terms (shared subtrees once)."""
    hit = seen.get(id(m))
    if hit is not None:
        return hit
    k = m.kind
    if isinstance(m, N.T):
        cid = g.add("T", (k,), (ingest(g, m.arg, seen),))
    elif isinstance(m, N.Prod):
        cid = g.add("prod", (k, m.coef), tuple(ingest(g, f, seen) for f in m.factors))
    elif isinstance(m, (N.Had, N.Kron)):
        cid = g.add("had" if isinstance(m, N.Had) else "kron", (k,),
                    tuple(ingest(g, f, seen) for f in m.factors))
    elif isinstance(m, N.Add):
        cid = g.add("add", (k, tuple(c for c, _ in m.terms)), tuple(ingest(g, t, seen) for _, t in m.terms))
    elif isinstance(m, N.Call):
        cid = g.add("call", (k, m.name, m.order, m.axis, m.fn), (ingest(g, m.arg, seen),))
    elif isinstance(m, N.Inv):
        cid = g.add("inv", (k,), (ingest(g, m.arg, seen),))
    elif isinstance(m, N.Pow):
        cid = g.add("pow", (k, m.p), (ingest(g, m.arg, seen),))
    elif isinstance(m, N.MatPow):
        cid = g.add("matpow", (k, m.k), (ingest(g, m.arg, seen),))
    else:  # Sym, Num, Index
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

def _number_length(c: float) -> int:
    if float(c).is_integer():
        return len(str(int(abs(c))))
    f = Fraction(c).limit_denominator(1000)
    return len(f"({abs(f.numerator)}/{f.denominator})") if float(f) == c else len(repr(abs(c)))


COMPOUND = {"prod", "add", "had", "kron"}
PAREN = 0.5          # a parenthesis (half a character: (x − a)ᵀ is preferred to xᵀ − aᵀ,
                     # but a transpose of a product costs one more: AᵀBᵀ, not (BA)ᵀ)
MARK = 1.25          # a ᵀ or ⁻¹ mark


def length(g, t, kid_costs: list, kid_ops: list) -> float:
    """Printed characters of term t given its kids' (costs, head ops); the characters in a
    function's parentheses weigh ``NESTED``."""
    op, data, kids = t
    wrap = [2 * PAREN if o in COMPOUND else 0 for o in kid_ops]
    if op == "leaf":
        m = data[1]
        if isinstance(m, N.Sym):  # a name read once more costs one more: (A + Aᵀ)x, not Ax + Aᵀx
            return len(m.name) + 1 if m.role in ("var", "dim") else 1
        if isinstance(m, N.Num):
            return _number_length(m.value) + (m.value < 0)
        return 40 + len(getattr(m, "text", ""))
    if op == "T":  # over a product one more: a reader distributes it, AᵀBᵀ rather than (BA)ᵀ
        if kid_ops[0] == "inv":  # X⁻ᵀ: one mark, as X⁻¹ (a hair more: a symmetric S⁻¹'s class
            return kid_costs[0] + 1e-6  # holds (S⁻¹)ᵀ, which must never be its own best term)
        return kid_costs[0] + MARK + wrap[0] + (kid_ops[0] == "prod")
    if op == "inv":
        return kid_costs[0] + 2 * MARK + wrap[0]
    if op == "matpow":
        return kid_costs[0] + len(str(data[1])) + wrap[0]
    if op == "pow":
        p = data[1]
        mark = 1 if p == 0.5 else (len(str(int(p))) if float(p).is_integer() else 2 + _number_length(p))
        return kid_costs[0] + mark + (data[0] != "s") * 2 + wrap[0]
    if op == "call":
        name = data[1]
        frame = 3 if name in ("norm", "nuclear", "spectral") else len(name) + 2  # ‖x‖, ‖X‖_F, ‖X‖_*
        return frame + NESTED * kid_costs[0]
    if op == "prod":
        coef = data[1]
        lead = 0 if coef == 1 else 1 if coef == -1 else _number_length(coef) + (coef < 0)
        return lead + sum(c + (2 * PAREN if o == "add" else 0) for c, o in zip(kid_costs, kid_ops))
    if op in ("had", "kron"):
        body = sum(c + (2 * PAREN if o == "add" else 0) for c, o in zip(kid_costs, kid_ops))
        return body + 3 * (len(kids) - 1)
    if op == "add":
        coefs = data[1]
        return sum(kid_costs) + 3 * (len(kids) - 1) + sum(
            0 if abs(c) == 1 else _number_length(c) for c in coefs) + (coefs[0] < 0)
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
    kids = list(kids)
    if len(kids) == 1 and coef == 1:
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
    options = [[k2[0] for _, _, k2 in g.terms(k, "T")] for k in t[2]]
    if t[1][0] == "s" or not all(options) or len(list(itertools.product(*options))) > 8:
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


PRIMARY = ("expm", "logm", "sqrtm")  # matrix functions of a power series with real coefficients


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
        scaled = [(d[1], kk) for _, d, kk in g.terms(k, "prod") if d[1] != 1]
        if scaled and not changed:
            (s, kk) = scaled[0]
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
    """a(bc) = abc, with coefficients multiplied: products stay flat."""
    kind, coef = t[1]
    out = []
    for i, k in enumerate(t[2]):
        for _, d, kk in g.terms(k, "prod"):
            if d[0] == "s" and any(g.kind(x) != "s" for x in kk) and len(t[2]) > 1:
                continue  # xᵀAx stays one scalar factor: (xᵀAx)Ax, never xᵀAxAx
            out.append(_prod(g, kind, coef * d[1], t[2][:i] + kk + t[2][i + 1:]))
            break
    return out[:2]


def _halves(g, c, kind):
    """For a class holding PᵀP or PPᵀ written as a palindrome of transposes (xᵀx,
    xᵀAᵀAx, AWWᵀAᵀ): the classes of the halves whose norm it is the square of."""
    out = []
    for _, d, kk in g.terms(c, "prod"):
        if d[0] != kind or d[1] != 1 or len(kk) % 2 or any(g.kind(k) == "s" for k in kk):
            continue
        h = len(kk) // 2
        if any(op == "leaf" and isinstance(d2[1], N.Sym) and d2[1].role == "one"
               for k in kk for op, d2, _ in g.nodes[g.find(k)]):
            continue  # 1ᵀ1 is n, not ‖1‖²
        if all(_transposes(g, kk[i], kk[-1 - i]) for i in range(h)):
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


def _positive(g, c) -> bool:
    """Whether class c is ≥ 0 by structure: a norm, or an even power of one (xᵀx)."""
    return any(d[1] == "norm" for _, d, _ in g.terms(c, "call")) or any(
        float(d[1]).is_integer() and d[1] % 2 == 0 for _, d, _ in g.terms(c, "pow") if d[0] == "s")


def _scalar_powers(g, c, t):
    """sᵖsᵠ = sᵖ⁺ᵠ among a product's scalar factors (integer powers, or s ≥ 0)."""
    kind, coef = t[1]
    options = []
    for k in t[2]:
        own = [(g.find(kk[0]), d[1]) for _, d, kk in g.terms(k, "pow") if d[0] == "s"]
        options.append(own + [(g.find(k), 1.0)] if g.kind(k) == "s" else [])
    out = []
    for i, j in itertools.combinations(range(len(options)), 2):
        for (b, p), (b2, q) in itertools.product(options[i], options[j]):
            if b != b2 or not (float(p).is_integer() and float(q).is_integer() or _positive(g, b)):
                continue
            merged = b if p + q == 1 else None if p + q == 0 else g.add("pow", ("s", p + q), (b,))
            rest = [k for n, k in enumerate(t[2]) if n not in (i, j)]
            rest += [merged] if merged is not None else []
            out.append(_prod(g, kind, coef, rest) if rest else g.add("leaf", ("s", N.Num("s", coef))))
    return out[:4]


def _power_of_power(g, c, t):
    """(sᵖ)ᵠ = sᵖᵠ for a scalar s and an integer q, or any q where s ≥ 0 by structure
    ((‖x‖⁴)^(−1/2) = ‖x‖⁻²; not (x²)^(1/2), which is |x|)."""
    q = t[1][1]
    if t[1][0] != "s":
        return []
    return [g.add("pow", ("s", d[1] * q), kk) for _, d, kk in g.terms(t[2][0], "pow")
            if d[0] == "s" and (float(q).is_integer() or _positive(g, kk[0]))]


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

    def base(k):
        if g.kind(k) != "m":
            return []
        out = [(g.find(k), 1)]
        out += [(g.find(kk[0]), d[1]) for _, d, kk in g.terms(k, "matpow")]
        out += [(g.find(kk[0]), -1) for _, _, kk in g.terms(k, "inv")]
        for _, _, kk in g.terms(k, "inv"):
            out += [(g.find(k2[0]), -d[1]) for _, d, k2 in g.terms(kk[0], "matpow")]
        return out

    results = []
    kids = t[2]
    for i in range(len(kids) - 1):
        for (a, p), (b, q) in itertools.product(base(kids[i]), base(kids[i + 1])):
            if a != b:
                continue
            n = p + q
            power = a if n == 1 else g.add("inv", ("m",), (a,)) if n == -1 else \
                None if n == 0 else g.add("matpow", ("m", n), (a,))
            rest = kids[:i] + ((power,) if power is not None else ()) + kids[i + 2:]
            if rest:
                results.append(_prod(g, kind, coef, rest))
        if len(results) > 4:
            break
    return results


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
    options = [[kk[0] for _, _, kk in g.terms(k, "T")] if g.kind(k) != "s" else [k] for k in t[2]]
    if not all(options) or len(list(itertools.product(*options))) > 8:
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
        da = [kk[0] for _, d, kk in g.terms(kids[i], "call") if d[1] == "diag" and d[0] == "m"]
        db = [kk[0] for _, d, kk in g.terms(kids[i + 1], "call") if d[1] == "diag" and d[0] == "m"]
        if da and db:
            merged = g.add("call", ("m", "diag", 0, None, None), (g.add("had", ("c",), (da[0], db[0])),))
            return [_prod(g, kind, coef, kids[:i] + (merged,) + kids[i + 2:])]
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
            if d[1] == -1 and g.find(kk[0]) in kids:
                j = kids.index(g.find(kk[0]))
                rest = [x for n, x in enumerate(kids) if n not in (i, j)]
                if rest:
                    return [rest[0] if len(rest) == 1 else g.add("had", (t[1][0],), tuple(rest))]
    return []


def _common_scalar(g, c, t):
    """sP + sQ = s(P + Q) for a scalar factor s of every term: det(M)P + det(M)Q."""
    kind, coefs = t[1]
    prods = []
    for k in t[2]:
        ps = [(d[1], kk) for _, d, kk in g.terms(k, "prod")]
        if not ps:
            return []
        prods.append(ps[0])
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
    return out


def _common_matrix(g, c, t):
    """AP + AQ = A(P + Q) and PA + QA = (P + Q)A."""
    kind, coefs = t[1]
    prods = []
    for k in t[2]:
        ps = [(d[1], kk) for _, d, kk in g.terms(k, "prod") if len([x for x in kk if g.kind(x) != "s"]) >= 2]
        if not ps:
            return []
        prods.append(ps[0])
    out = []
    for side in (0, -1):
        ends = {g.find([x for x in kk if g.kind(x) != "s"][side]) for _, kk in prods}
        if len(ends) != 1:
            continue
        end = ends.pop()
        terms = []
        for d, kk in prods:
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


def _distribute(g, c, t):
    """A(P + Q) = AP + AQ: the inverse of the last rule, so that a cost can choose."""
    kind, coef = t[1]
    kids = t[2]
    for i, k in enumerate(kids):
        for _, d, kk in g.terms(k, "add"):
            if len(kk) > MAX_SUM:
                continue
            terms = [_prod(g, kind, 1.0, kids[:i] + (x,) + kids[i + 1:]) for x in kk]
            return [g.add("add", (kind, tuple(coef * e for e in d[1])), tuple(terms))]
    return []


MAX_MONOMIALS = 12  # an element-wise normal form with more terms is not offered
MAX_DEGREE = 4      # nor one that raises a factor to a higher power


def _negated(g, c):
    """u where class c holds −u written as a product with a negative coefficient, else None."""
    for _, d, kk in g.terms(c, "prod"):
        if d[1] < 0:
            return _prod(g, d[0], -d[1], kk)
    return None


def _poly(g, c, kind, ones, depth=0):
    """Class c as a Laurent polynomial over atom classes, entry by entry: {monomial: coef}
    with a monomial a tuple of (atom, exponent).  Sums, ⊙ and integer powers of c's kind
    expand; σ(−u) is 1 − σ(u); a ones leaf of the kind is 1 (noted in ``ones``); every other
    class is an atom.  None where the form would grow past the limits."""
    if depth > 6:
        return {((g.find(c), 1),): 1.0}
    for op, d, kk in sorted(g.nodes[g.find(c)], key=_order_key):
        if d[0] != kind:
            continue
        if op == "leaf" and isinstance(d[1], N.Sym) and d[1].role == "one":
            ones.append(g.find(c))
            return {(): 1.0}
        if op == "add":
            out: dict = {}
            for coef, k in zip(d[1], kk):
                p = _poly(g, k, kind, ones, depth + 1)
                if p is None:
                    return None
                for m, v in p.items():
                    out[m] = out.get(m, 0.0) + coef * v
            return out if len(out) <= MAX_MONOMIALS else None
        if op == "had" or (op == "pow" and float(d[1]).is_integer() and 1 <= d[1] <= MAX_DEGREE):
            factors = kk if op == "had" else kk * int(d[1])
            out = {(): 1.0}
            for k in factors:
                p = _poly(g, k, kind, ones, depth + 1)
                if p is None:
                    return None
                out = _poly_product(out, p)
                if out is None:
                    return None
            return out
        if op == "call" and d[1] == "sigmoid" and d[2] == 0:
            u = _negated(g, kk[0])
            if u is not None:  # σ(−u) = 1 − σ(u)
                positive = g.add("call", d, (u,))
                return {(): 1.0, ((positive, 1),): -1.0}
    for _, d, kk in g.terms(c, "pow"):  # x⁻¹, x⁻²: atoms to negative powers, so that s ⊙ (y ⊘ s) = y
        if d[0] == kind and float(d[1]).is_integer() and -MAX_DEGREE <= d[1] < 0:
            p = _poly(g, kk[0], kind, ones, depth + 1)
            if p is not None and len(p) == 1:  # 1 ⊘ ((x ⊘ z) ⊙ z) = x⁻¹: a monomial inverts
                (m, v), = p.items()
                if v != 0 and all(abs(e * d[1]) <= MAX_DEGREE for _, e in m):
                    return {tuple((a, int(e * d[1])) for a, e in m): v ** d[1]}
            return {((g.find(kk[0]), int(d[1])),): 1.0}
    return {((g.find(c), 1),): 1.0}


def _complement(g, t) -> bool:
    """Whether term t is 1 − σ(v): the form σ′ = σ ⊙ (1 − σ) is written in, kept as it is."""
    if t[0] != "add" or tuple(t[1][1]) != (1.0, -1.0):
        return False
    one, other = t[2]
    ones = any(op == "leaf" and isinstance(d[1], N.Sym) and d[1].role == "one"
               for op, d, _ in g.nodes[g.find(one)])
    calls = g.terms(other, "call")
    return ones and bool(calls) and calls[0][1][1] == "sigmoid"


def _ones_leaf(g, c, kind):
    """The ones vector of class c's shape (a column), where the shape analysis knows it."""
    dims = g.dims.get(g.find(c))
    if kind == "c" and dims is not None and len(dims) == 1:
        return g.add("leaf", ("c", N.Sym("c", "1", role="one", dims=tuple(dims))))
    return None


def _poly_product(a: dict, b: dict):
    out: dict = {}
    for ma, va in a.items():
        for mb, vb in b.items():
            powers = dict(ma)
            for atom, e in mb:
                powers[atom] = powers.get(atom, 0) + e
            if any(abs(e) > MAX_DEGREE for e in powers.values()):
                return None
            m = tuple(sorted((x, e) for x, e in powers.items() if e != 0))
            out[m] = out.get(m, 0.0) + va * vb
    return out if len(out) <= MAX_MONOMIALS else None


def _monomial(g, kind, m, one):
    """The class of a monomial ∏ atomᵉ (⊙ and entry-wise powers); () is the ones leaf."""
    if not m:
        return one
    factors = [a if e == 1 else g.add("pow", (kind, float(e)), (a,)) for a, e in m]
    return factors[0] if len(factors) == 1 else g.add("had", (kind,), tuple(factors))


def _polynomial(g, kind, poly, one):
    """The class of Σ coef·monomial; None where it needs a 1 and none is at hand."""
    items = [(v, m) for m, v in sorted(poly.items(), key=lambda p: (len(p[0]), p[0])) if abs(v) > 1e-12]
    if any(not m for _, m in items) and one is None:
        return None
    if not items:
        return None  # a zero: left to the engine's own simplification
    terms = [_monomial(g, kind, m, one) for _, m in items]
    if len(items) == 1 and items[0][0] == 1:
        return terms[0]
    if len(items) == 1:
        return _prod(g, kind, items[0][0], terms)
    return g.add("add", (kind, tuple(float(v) for v, _ in items)), tuple(terms))


def _elementwise_normal(g, c, t):
    """An element-wise part (⊙, ⊘, +, −, integer powers, σ(−u)) as a polynomial over its
    atoms, expanded with like monomials merged, and with the factor common to every
    monomial taken out: y ⊙ (1 − σ) − σ ⊙ (… ) collapses to σ(Xw) − y, and u − u² to
    u ⊙ (1 − u).  Valid for all values where the input is defined (a factor cancels only
    against its own reciprocal, which the input holds)."""
    kind = t[1][0]
    if kind == "s" or _complement(g, t):
        return []
    ones: list = []
    poly = _poly(g, c, kind, ones)
    if poly is None:
        return []
    if len(poly) == 1 and t[0] == "had" and next(iter(poly.values())) == 1 and \
            sorted(next(iter(poly))) == sorted((g.find(k), 1) for k in t[2]):
        return []  # a product of atoms, already as it is: nothing to expand or cancel
    one = ones[0] if ones else _ones_leaf(g, c, kind)
    atoms = [dict(m) for m in poly if poly[m] != 0]
    common = {}
    if len(atoms) > 1:
        common = {a: min(p.get(a, 0) for p in atoms) for a in atoms[0]}
        common = {a: e for a, e in common.items() if e > 0}
    if not common:  # nothing common to every term: the expanded form, σ(Xw) − y
        expanded = _polynomial(g, kind, poly, one)
        return [] if expanded is None else [expanded]
    # the largest monomial dividing every term, taken out: u − u² = u ⊙ (1 − u)
    rest: dict = {}
    for m, v in poly.items():
        if v != 0:
            key = tuple(sorted((a, e - common.get(a, 0)) for a, e in m if e - common.get(a, 0) != 0))
            rest[key] = rest.get(key, 0.0) + v
    inner = _polynomial(g, kind, rest, one)
    if inner is None:
        return []
    factor = _monomial(g, kind, tuple(sorted(common.items())), one)
    if t[0] == "had" and sorted(g.find(k) for k in (factor, inner)) == sorted(g.find(k) for k in t[2]):
        return []  # the product as it was, its factors in another order
    return [g.add("had", (kind,), (factor, inner))]

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
    Rule("diag(a)diag(b) = diag(a ⊙ b)", "element-wise", "prod", _diag_product),
    Rule("diag(a) + diag(b) = diag(a + b)", "element-wise", "add", _diag_sum),
    Rule("a(bc) = abc", "scalars", "prod", _flatten_product),
    Rule("(xᵀx)ᵖ = ‖x‖²ᵖ, tr(XᵀX)ᵖ = ‖X‖_F²ᵖ", "scalars", "pow", _norm),
    Rule("xᵀx = ‖x‖²", "scalars", "prod", _norm_square),
    Rule("tr(XᵀX) = ‖X‖_F²", "scalars", "call", _trace_square),
    Rule("1ᵀ1 = n", "scalars", "prod", _count),
    Rule("tr(I) = n", "scalars", "call", _count),
    Rule("1ᵀsvdvals(X) = ‖X‖_*", "scalars", "prod", _singular_values),
    Rule("‖svdvals(X)‖ = ‖X‖_F", "scalars", "call", _singular_values),
    Rule("sᵖsᵠ = sᵖ⁺ᵠ", "scalars", "prod", _scalar_powers),
    Rule("(sᵖ)ᵠ = sᵖᵠ", "scalars", "pow", _power_of_power),
    Rule("sP + sQ = s(P + Q)", "scalars", "add", _common_scalar),
    Rule("AP + AQ = A(P + Q)", "scalars", "add", _common_matrix),
    Rule("A(P + Q) = AP + AQ", "scalars", "prod", _distribute),
    Rule("(A⁻¹)⁻¹ = A", "inverses", "inv", _double_inverse),
    Rule("det(AB) = det(A)det(B), det(Aᵏ) = det(A)ᵏ", "inverses", "call", _det_product),
    Rule("AʲAᵏ = Aʲ⁺ᵏ", "inverses", "prod", _matrix_powers),
    Rule("(Aᵏ)⁻¹ = A⁻ᵏ", "inverses", "inv", _inverse_of_power),
    Rule("(Aᵏ)ᵀ = (Aᵀ)ᵏ", "inverses", "T", _transpose_power),
    Rule("(Aᵀ)ᵏ = (Aᵏ)ᵀ", "inverses", "matpow", _power_transpose),
    Rule("BᵀAᵀ = (AB)ᵀ", "symmetry", "prod", _product_of_transposes),
    Rule("(AB)⁻¹ = B⁻¹A⁻¹", "inverses", "inv", _inverse_of_product),
    Rule("tr(AB) = tr(BA)", "scalars", "call", _trace_rotation),
    Rule("tr(A ⊗ B) = tr(A)tr(B)", "kronecker", "call", _kron_call),
    Rule("(A ⊗ B)ᵀ = Aᵀ ⊗ Bᵀ", "kronecker", "T", _kron_transpose),
    Rule("(A ⊗ B)⁻¹ = A⁻¹ ⊗ B⁻¹", "kronecker", "inv", _kron_inverse),
    Rule("(A ⊗ B)(C ⊗ D) = AC ⊗ BD", "kronecker", "prod", _kron_mixed),
]


# --------------------------------------------------------------------------- saturation and extraction

def saturate(g: EGraph, rules=None, max_nodes=MAX_NODES, max_rounds=MAX_ROUNDS) -> int:
    """Apply every rule to every term until nothing changes; returns the rounds run.  Each
    round matches on a snapshot, so the rules' order does not matter."""
    rules = RULES if rules is None else rules
    by_op: dict = {}
    for r in rules:
        by_op.setdefault(r.op, []).append(r)
    g.rebuild()
    for n in range(max_rounds):
        snapshot = [(c, t) for c, ts in g.nodes.items() for t in ts]
        found = []
        for c, t in snapshot:
            for r in by_op.get(t[0], ()):
                found.extend((c, x) for x in r.apply(g, c, t))
        size = g.size
        changed = False
        for c, x in found:
            changed |= g.union(c, x)
        g.rebuild()
        if (not changed and g.size == size) or g.size > max_nodes:
            return n + 1
    return max_rounds


def extract(g: EGraph, root: int, cost=length):
    """The cheapest term of every class (ties broken by a structural key): the chosen
    notation tree of ``root`` and its cost."""
    best: dict = {}
    for _ in range(len(g.nodes) + 2):  # costs only fall; a pass without change ends it
        changed = False
        for c, ts in g.nodes.items():
            for t in ts:
                kids = [g.find(k) for k in t[2]]
                if any(k not in best or k == c for k in kids):  # a term is never its own part
                    continue
                value = round(cost(g, t, [best[k][0] for k in kids], [best[k][2] for k in kids]), 9)
                key = (t[0], repr(t[1][:2]) if t[0] != "leaf" else repr(t[1][1]),
                       tuple(best[k][1] for k in kids))
                old = best.get(c)
                if old is None or (value, key) < old[:2]:
                    best[c] = (value, key, t[0], t)
                    changed = True
        if not changed:
            break
    built: dict = {}

    def tree(c):
        c = g.find(c)
        if c not in built:
            t = best[c][3]
            built[c] = build(t, [tree(k) for k in t[2]])
        return built[c]

    return tree(root), best[g.find(root)][0]


def cost_of(m: N.M, cost=length) -> float:
    """The cost of m as written (no rule applied)."""
    g = EGraph()
    root = ingest(g, m, {})
    g.rebuild()
    return extract(g, root, cost)[1]


_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def simplest(m: N.M, rules=None, cost=None) -> N.M:
    """The shortest equal way to write m (m itself where nothing is shorter); with
    ``cost=flops(sizes)``, the equal form cheapest to compute at those sizes."""
    if isinstance(m, N.Index) or not N.children(m):
        return m
    plain = rules is None and cost is None
    if plain:
        hit = _CACHE.get(m)
        if hit is not None:
            return hit
    cost = cost or length
    g = EGraph()
    root = ingest(g, m, {})
    saturate(g, rules)
    out, value = extract(g, root, cost)
    if value > cost_of(m, cost) - 1e-9:  # never costlier than what came in
        out = m
    if plain:
        with _LOCK:
            out = _CACHE.setdefault(m, out)
    return out
