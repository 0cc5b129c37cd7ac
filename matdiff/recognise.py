"""Recognising matrix notation in index-form IR.

``recognise(node)`` gives the matrix-notation tree of a node of order at most 2, or an
``Index`` node when there is none (orders above 2, or products no matrix formula writes).
A contraction is read by merging its factors, each a scalar, a column, a row or a
matrix with its axes' labels, one rule at a time:

- factors over the same labels are an element-wise product: A_ij B_ij → (A ⊙ B)_ij;
- a summed label shared by two factors is a matrix product: A_ij B_jk → (AB)_ik;
- a summed label in one factor is a sum, 1ᵀA, or — on both of its axes — a trace;
- a summed label in three factors, one of them a vector d, is a diag: Xᵀdiag(d)X;
- an output label shared with a vector v scales rows or columns: diag(v)A, A diag(v);
- factors with disjoint labels are outer products: a_i b_j → (abᵀ)_ij.

Rules only ever rewrite a product into an equal one, so a recognised form means exactly
what the IR means; when no rule applies the result is ``Index``.
"""
from __future__ import annotations

from fractions import Fraction
from itertools import chain

import weakref

from . import dims as D
from . import notation as N
from .functions import TABLE as F_TABLE, Function
from .ir import (GENERAL_FUNCTIONS, Basis, Cholesky, Const, Contract, Delta, Det, DivDiff, DivDiff2, DivDiff3,
                 DivDiff3Apply, EigGap, Eigh, Elementwise, Frechet, Funm, Inv, LogDet, LogSumExp, MatFn, Node,
                 Phi, Pinv, Reshape, ScalarFn, Softmax, Sum, Svd, Var, is_ones, walk)
from .simplify import simplify

KIND = {0: "s", 1: "c", 2: "m"}


def recognise(node: Node) -> N.M:
    """The matrix-notation tree of ``node`` (``Index`` where it has none)."""
    cache = _STORED.get(_ref(node))  # (_CACHE.get(node), without its Python frame)
    if cache is None:  # setdefault: threads racing here all keep the first tree stored,
        # so a repeated subexpression is one object, which printing names once
        cache = _CACHE.setdefault(node, (RULES[type(node)](node) if len(node.shape) <= 2 else None) or
                                  N.Index("t", node, ""))
    return cache


_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # node -> its notation
_STORED = _CACHE.data  # the dictionary under it, keyed by weak references (cleared with it)
_ref = weakref.ref


def _sym(node: Var):
    return N._leaf(KIND[node.ndim], node.name, "var", node.symmetric, node.shape)


def _delta(node: Delta):
    if node.order == 1:
        return N.Sym("c", "1", "one", dims=node.shape)
    if node.order == 2:
        return N.Sym("m", "I", "eye", dims=node.shape)
    return None


def _sum(node: Sum):
    if not node.terms:
        return N.Sym(KIND[node.ndim], "0", "zero", dims=node.shape)
    parts = [(c, recognise(t)) for c, t in node.terms]
    if any(isinstance(p, N.Index) for _, p in parts):
        return None
    return N.add(parts)


def _elementwise(node: Elementwise):
    arg = recognise(node.arg)
    if isinstance(arg, N.Index):
        return None
    fn: Function = node.fn
    if fn.builtin and fn.name == "pow":
        return N.Pow(arg.kind, arg, fn.param)
    return N.Call(arg.kind, fn.name, arg, fn.order, fn=fn)


def _unary(name, kind=None):
    def rule(node):
        arg = recognise(node.arg)
        if isinstance(arg, N.Index):
            return None
        return N.Call(kind or KIND[node.ndim], name, arg, axis=getattr(node, "axis", None))
    return rule


MATRIX_FUNCTIONS = {"exp": "expm", "log": "logm", "sqrt": "sqrtm"}


def _matfn(node: MatFn):
    """expm(S), logm(S), sqrtm(S); another f as f(S) applied to the matrix: tanhₘ(S)."""
    arg = recognise(node.arg)
    if isinstance(arg, N.Index):
        return None
    if node.fn.name == "pow":  # S², S⁻¹, sqrtm(S): powers of a symmetric matrix
        p = node.fn.param
        if float(p).is_integer():
            return N.prod(1.0, [N.Inv("m", arg)] * int(-p)) if p < 0 else N.prod(1.0, [arg] * int(p))
        if p in (0.5, -0.5):  # sqrtm(S), sqrtm(S)⁻¹
            root = N.Call("m", "sqrtm", arg)
            return root if p > 0 else N.Inv("m", root)
        return N.Call("m", f"pow{p:g}ₘ", arg)
    if defined_by_trace(node.fn):  # fₘ(S)  where f(u) = u³: printing names f and defines it
        return N.Call("m", f"{node.fn.name}ₘ", arg, fn=node.fn)
    return N.Call("m", MATRIX_FUNCTIONS.get(node.fn.name, f"{node.fn.name}ₘ"), arg)


def definition(fn, param: str) -> N.M:
    """The notation of a traced function's expression of one scalar ``param``: u³ of
    f(u) = u³ (``defined_by_trace``)."""
    return recognise(simplify(fn.deriv.at(Var(param, (), False))))


def defined_by_trace(fn) -> bool:
    """Whether fn is a traced function (md.matrix_function's Python callables, diff's
    composite functions of eigenvalues) that the printed text defines in its where-clause —
    fₘ(S)  where f(u) = u³, Δh(λ)  where h(u) = u·exp(u) + exp(u) — rather than by its name
    alone, as the derivatives of table functions (sigmoid′) are."""
    d = getattr(fn, "deriv", None)
    if getattr(fn, "builtin", True) or not isinstance(getattr(d, "on_entries", None), Node) \
            or not isinstance(getattr(d, "t", None), Node) or not callable(getattr(d, "at", None)):
        return False
    return not (fn.name.endswith("′") and fn.name.rstrip("′") in F_TABLE)


def _eigh(node: Eigh):
    arg = recognise(node.arg)
    if isinstance(arg, N.Index):
        return None
    return N.Call("c", "eigvalsh", arg) if node.part == "values" else N.Call("m", "Q", arg)


def _svd(node: Svd):
    arg = recognise(node.arg)
    if isinstance(arg, N.Index):
        return None
    name, kind = {"values": ("svdvals", "c"), "left": ("U", "m"), "right": ("V", "m"),
                  "top": ("spectral", "s"), "top_left": ("u₁", "c"), "top_right": ("v₁", "c")}[node.part]
    return N.Call(kind, name, arg)


def _funm(node: Funm):
    arg = recognise(node.arg)
    return None if isinstance(arg, N.Index) else N.Call("m", GENERAL_FUNCTIONS[node.fn], arg)


def _frechet(node: Frechet):
    """L_f(X, E), the Fréchet derivative of f at X along E, as one matrix: a leaf whose
    ``params`` hold f and the notation of X and E (None where either has none)."""
    x, e = recognise(node.arg), recognise(node.dir)
    if isinstance(x, N.Index) or isinstance(e, N.Index):
        return None
    return N.Sym("m", f"L_{node.fn}", "frechet", dims=node.shape, params=(node.fn, x, e))


def _named(name: str, node):
    """A matrix of a vector with no operator of its own: Γ(eigvalsh(S)), the eigenvalue gaps."""
    arg = recognise(node.arg)
    return None if isinstance(arg, N.Index) else N.Call("m", name, arg)


def _divdiff(node: DivDiff):
    arg = recognise(node.arg)
    if isinstance(arg, N.Index):
        return None
    if defined_by_trace(node.fn):
        return N.Call("m", f"Δ{node.fn.name}", arg, fn=node.fn)
    return N.Call("m", f"Δ{_divdiff_name(node.fn)}", arg)


SUPERSCRIPTS = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def _divdiff_name(fn) -> str:
    """The function a divided-difference matrix is of: exp, or [u²] for the power u ↦ u²
    (its exponent printed: Δ[u²](λ), not Δpow(λ))."""
    if fn.name != "pow" or fn.param is None:
        return fn.name
    p = fn.param
    if float(p).is_integer():
        return f"[u{str(int(p)).translate(SUPERSCRIPTS)}]"
    q = Fraction(p).limit_denominator(1000)
    shown = f"{q.numerator}/{q.denominator}" if float(q) == p else repr(float(p))
    return f"[u^({shown.replace('-', '−')})]"


def _divdiff3_apply(node: DivDiff3Apply):
    """Δ²f(λ)[X, Y], the matrix M_pc = Σ_q f[λ_p, λ_q, λ_c] X_pq Y_qc (docs/matrix-functions.md):
    a leaf whose ``params`` hold f's printed name and the notation of λ, X and Y.  It is
    bilinear in X and Y, so their numeric coefficients stand in front: Δ²f(λ)[½X, Y] is
    ½Δ²f(λ)[X, Y]; and a factor of X or Y on q alone may move to the other side
    (``_placed``): Δ²f(λ)[X diag(d), 1bᵀ] is Δ²f(λ)[X, dbᵀ]."""
    node = _rebalanced(node)
    lam, x, y = recognise(node.arg), recognise(node.x), recognise(node.y)
    if any(isinstance(m, N.Index) for m in (lam, x, y)):
        return None
    coef = 1.0
    parts = []
    for m in (x, y):
        if isinstance(m, N.Prod) and m.coef != 1:
            coef *= m.coef
            m = N.prod(1.0, m.factors)
        parts.append(m)
    name = node.fn if defined_by_trace(node.fn) else _divdiff_name(node.fn)  # (printing names f)
    leaf = N.Sym("m", f"Δ²{name}", "divdiff3", dims=node.shape, params=(name, lam, *parts))
    return N.prod(coef, [leaf])


def _factors(node: Node, labels: tuple, fresh: int):
    """node as the factors of a product over ``labels`` — its operands where it is a
    contraction (summed labels renamed from ``fresh`` on), else itself — and the next fresh."""
    if isinstance(node, Sum) and len(node.terms) == 1:  # cX: the constant and X's factors
        (coef, term), = node.terms
        inner, fresh = _factors(term, labels, fresh)
        return [(Const(coef), ())] + inner, fresh
    if not isinstance(node, Contract):
        return [(node, labels)], fresh
    names = dict(zip(node.out, labels))
    for x in sorted({x for lab in node.labels for x in lab} - set(node.out)):
        names[x], fresh = fresh, fresh + 1
    return [(op, tuple(names[x] for x in lab)) for op, lab in zip(node.operands, node.labels)], fresh


def _rebalanced(node: DivDiff3Apply) -> DivDiff3Apply:
    """node with the factors of X and Y placed as ``_placed`` places them (an equal node)."""
    xs, fresh = _factors(node.x, (0, 1), 3)
    ys, fresh = _factors(node.y, (1, 2), fresh)
    groups = _groups(xs + ys, {0, 1, 2})
    side = {id(f): k for k, fs in enumerate((xs, ys)) for f in fs}
    placed = _placed([(ends, members, side[id(members[0])]) for ends, members in groups], 0, 1, 2)
    if placed is None:
        return node
    dims = {x: d for op, lab in xs + ys for x, d in zip(lab, op.shape)}
    x, y = (_product(part, need, dims) for part, need in zip(placed, ((0, 1), (1, 2))))
    return DivDiff3Apply(node.fn, node.arg, x, y)


def _product(part: list, need: tuple, dims: dict) -> Node:
    """The product of the factors ``part`` over the labels ``need`` (a missing one by 1)."""
    held = {x for _, lab in part for x in lab}
    part = list(part) + [(Delta(dims[x], 1), (x,)) for x in need if x not in held]  # X = x1ᵀ
    if len(part) == 1 and part[0][1] == need:
        return part[0][0]
    return Contract(tuple(op for op, _ in part), tuple(lab for _, lab in part), need)


def _groups(factors: list, edge: set) -> list:
    """The factors (op, labels) in groups tied by the labels not in ``edge``: [(the edge
    labels a group holds, its factors)]."""
    parent = list(range(len(factors)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict = {}
    for i, (_, lab) in enumerate(factors):
        for x in lab:
            if x not in edge:
                if x in first:
                    parent[find(i)] = find(first[x])
                else:
                    first[x] = i
    groups: dict = {}
    for i in range(len(factors)):
        groups.setdefault(find(i), []).append(factors[i])
    return [({x for _, lab in members for x in lab} & edge, members) for members in groups.values()]


def _placed(groups: list, o1, mid, o2):
    """The factor groups of Σ_q T_pqr X_pq Y_qr — (edge labels, factors, side: 0 X, 1 Y,
    None free) — placed in X or Y: those on p in X, on r in Y; those on q alone (and free
    scalars) where the other side's q is only a vector of ones, so that Δ²f(λ)[X diag(d), 1bᵀ]
    reads Δ²f(λ)[X, dbᵀ]; 1s dropped (``_product`` puts back those still needed).  None
    where a group holds both p and r."""
    xs, ys, loose = [], [], []
    for ends, members, side in groups:
        if len(members) == 1 and isinstance(members[0][0], Delta) and members[0][0].order == 1 and ends:
            continue  # 1 on p, q or r (never a 1 summed alone: that is a dim)
        if o1 in ends and o2 in ends:
            return None
        if o1 in ends:
            xs.append(members)
        elif o2 in ends:
            ys.append(members)
        else:
            loose.append((ends, members, side))
    real = [any(mid in {x for _, lab in m for x in lab} for m in side) for side in (xs, ys)]
    for ends, members, side in loose:
        if real[0] != real[1]:
            side = 1 if real[0] else 0
        (ys if side == 1 else xs).append(members)
    return [f for m in xs for f in m], [f for m in ys for f in m]


def _with_divdiff3_applied(c: Contract):
    """A product holding the second divided differences T_pqr = f[λ_p, λ_q, λ_r] (DivDiff3),
    written with T applied to two matrices over one summed index: Σ_q T_pqr X_pq Y_qr is
    Δ²f(λ)[X, Y]_pr (T is symmetric in its three indices, so any of them may be the middle
    one).  The other factors are grouped by the labels that tie them: a group on p and q
    alone (or p alone) joins X, one on q and r (or r) alone Y; the rest, with no q, stay
    outside with the new factor M_pr.  The rewritten product (equal to c), or None where no
    index splits them."""
    ks = [k for k, op in enumerate(c.operands) if isinstance(op, DivDiff3)]
    if len(ks) != 1 or len(set(c.labels[ks[0]])) != 3:
        return None
    t, tlab = c.operands[ks[0]], c.labels[ks[0]]
    rest = [(op, lab) for k, (op, lab) in enumerate(zip(c.operands, c.labels)) if k != ks[0]]
    dims = c.label_dims()
    for mid in tlab:
        if mid in c.out:
            continue
        o1, o2 = (x for x in tlab if x != mid)
        inner, outside = [], []
        for ends, members in _groups(rest, {o1, mid, o2} | set(c.out)):
            if ends & set(c.out) or not ends & {o1, mid, o2}:
                if mid in ends:
                    break  # q beside a result label: no split at this q
                outside.extend(members)
            else:
                inner.append((ends, members, None))
        else:
            placed = _placed(inner, o1, mid, o2)
            if placed is None:
                continue
            x, y = (_product(part, need, dims) for part, need in zip(placed, ((o1, mid), (mid, o2))))
            m = DivDiff3Apply(t.fn, t.arg, x, y)
            return Contract(tuple(op for op, _ in outside) + (m,),
                            tuple(lab for _, lab in outside) + ((o1, o2),), c.out)
    return None


def _inlinable(op) -> bool:
    return isinstance(op, Contract) and (op.ndim > 2 or _holds_divdiff3(op))


def _holds_divdiff3(op) -> bool:
    """Whether op is T = DivDiff3, or a product holding one among its (nested) factors."""
    return isinstance(op, DivDiff3) or isinstance(op, Contract) and any(map(_holds_divdiff3, op.operands))


def _inlined(c: Contract) -> Contract:
    """c with the products among its factors that hold T, or have more than two axes (no
    matrix notation writes them as factors), written out as its own factors (their summed
    labels renamed apart): a Hessian applied to a direction V is V_kl (Σ … T_pqr …)_ijkl,
    one product only once flattened."""
    if not any(_inlinable(op) for op in c.operands):
        return c
    fresh = max([x for lab in c.labels for x in lab] + list(c.out) + [-1]) + 1
    ops, labs = [], []
    for op, lab in zip(c.operands, c.labels):
        if not _inlinable(op):
            ops.append(op)
            labs.append(lab)
            continue
        inner = _inlined(op)
        names = dict(zip(inner.out, lab))
        for x in sorted({x for il in inner.labels for x in il} - set(inner.out)):
            names[x], fresh = fresh, fresh + 1
        ops.extend(inner.operands)
        labs.extend(tuple(names[x] for x in il) for il in inner.labels)
    return Contract(tuple(ops), tuple(labs), c.out)


# --------------------------------------------------------------------------- Fréchet derivatives
# diff.py writes the second Fréchet derivative with 2 × 2 block matrices (Higham, Functions of
# Matrices, §3.2) and a Jacobian's Fréchet derivatives, one per entry of the output, as one of a
# block-diagonal matrix; these read those layouts back as L_f and L²_f of d × d matrices.


def _terms(node: Node, limit: int = 64):
    """node as Σ cₖ termₖ with no sum among a product's factors: [(cₖ, termₖ)], None past
    ``limit`` terms."""
    out, stack = [], [(1.0, node)]
    while stack:
        c, x = stack.pop()
        if isinstance(x, Sum):
            stack.extend((c * k, t) for k, t in x.terms)
        elif isinstance(x, Contract) and any(isinstance(op, Sum) for op in x.operands):
            at = next(i for i, op in enumerate(x.operands) if isinstance(op, Sum))
            for k, t in x.operands[at].terms:
                stack.append((c * k, Contract(x.operands[:at] + (t,) + x.operands[at + 1:], x.labels, x.out)))
        else:
            out.append((c, x))
        if len(out) + len(stack) > limit:
            return None
    return out


def _blocks(node: Node):
    """The blocks of a 2d × 2d matrix laid out from a (2, d, 2, d) array whose block row and
    column are picked by unit vectors e₁, e₂ of length 2 (or tied by I₂: a block diagonal), or
    a sum of multiples of such: {(r, c): the d × d block}, the zero blocks left out; None where
    it is not so laid out."""
    laid = node.terms if isinstance(node, Sum) else ((1.0, node),)
    def laid_out(z):
        return isinstance(z, Reshape) and z.arg.ndim == 4 and z.arg.shape[0] == z.arg.shape[2] == 2 and \
            z.arg.shape[1] == z.arg.shape[3]

    if not laid or not all(laid_out(z) for _, z in laid):
        return None
    terms = []
    for k, z in laid:
        more = _terms(z.arg)
        if more is None:
            return None
        terms.extend((k * c, t) for c, t in more)
    parts: dict = {}
    for coef, t in terms:
        if not isinstance(t, Contract):
            return None
        t = _flat(t)
        r, a, col, b = t.out
        held = [k for k, lab in enumerate(t.labels) if r in lab or col in lab]
        if any(t.labels[k].count(x) > 1 for k in held for x in (r, col)):
            return None
        ops = [(t.operands[k], t.labels[k]) for k in held]
        if len(ops) == 1 and isinstance(ops[0][0], Delta) and ops[0][0].shape == (2, 2) and \
                set(ops[0][1]) == {r, col}:
            places = [(0, 0), (1, 1)]  # I₂ ⊗ B: B on the diagonal
        elif len(ops) == 2 and all(isinstance(op, Basis) and op.dim == 2 for op, _ in ops) and \
                {ops[0][1], ops[1][1]} == {(r,), (col,)}:
            pos = {lab[0]: op.pos % 2 for op, lab in ops}
            places = [(pos[r], pos[col])]
        else:
            return None
        rest = [(op, lab) for k, (op, lab) in enumerate(zip(t.operands, t.labels)) if k not in held]
        if not rest:
            return None
        block = Contract(tuple(op for op, _ in rest), tuple(lab for _, lab in rest), (a, b))
        for place in places:
            parts.setdefault(place, []).append((coef, block))
    out = {place: simplify(Sum(tuple(ts), ts[0][1].shape)) for place, ts in parts.items()}
    return {place: x for place, x in out.items() if not (isinstance(x, Sum) and not x.terms)}


def _flat(c: Contract) -> Contract:
    """c with the products among its factors written out as its own factors (an equal
    product: nested products simplify keeps past its flattening limit)."""
    if not any(isinstance(op, Contract) for op in c.operands):
        return c
    fresh = max([x for lab in c.labels for x in lab] + list(c.out) + [-1]) + 1
    ops = []
    for op, lab in zip(c.operands, c.labels):
        if isinstance(op, Contract):
            inner, fresh = _factors(_flat(op), lab, fresh)
            ops.extend(inner)
        else:
            ops.append((op, lab))
    return Contract(tuple(op for op, _ in ops), tuple(lab for _, lab in ops), c.out)


def _second(fn, x, e1, e2):
    """L²_f(X; E₁, E₂) as a leaf of the notation (``frechet2``), or None where X, E₁ or E₂
    has no matrix notation.  It is bilinear in E₁ and E₂, so their numeric coefficients stand
    in front: L²_f(X; ½E₁, E₂) is ½L²_f(X; E₁, E₂)."""
    parts = [recognise(p) for p in (x, e1, e2)]
    if any(isinstance(p, N.Index) for p in parts):
        return None
    coef = 1.0
    for k in (1, 2):
        if isinstance(parts[k], N.Prod) and parts[k].coef != 1:
            coef *= parts[k].coef
            parts[k] = N.prod(1.0, parts[k].factors)
    return N.prod(coef, [N.Sym("m", f"L²_{fn}", "frechet2", dims=x.shape, params=(fn, *parts))])


def _second_frechet(op: Node, lab: tuple, c: Contract, everywhere: list):
    """Where op, labelled ``lab`` in the product c, is L_f(M, F) of 2 × 2 block matrices
    (reshaped to (2, d, 2, d)) that diff.py builds for second derivatives: (its notation as a
    matrix, row label, column label, the indices of the unit vectors it consumes); else None.

    - M = [[X, E₁], [0, X]], F = [[E₂, 0], [0, E₂]], block (1, 2) picked by e₁ and e₂:
      L²_f(X; E₁, E₂), the derivative of L_f(X, E₁) along E₂ (block (1, 1) or (2, 2): L_f(X, E₂));
    - M = [[X, 0], [C, X]], F = [[0, V], [0, 0]], its diagonal blocks summed (the transposed
      form reverse mode makes): L²_f(X; C, V), since ⟨W, Σ_p L_f(M, F)_pp⟩ = ⟨L_f(Mᵀ,
      I₂ ⊗ W), F⟩ = ⟨L²_f(Xᵀ; Cᵀ, W), V⟩ = ⟨W, L²_f(X; C, V)⟩."""
    if not (isinstance(op, Reshape) and isinstance(op.arg, Frechet) and op.ndim == 4 and
            op.shape[0] == op.shape[2] == 2 and op.shape[1] == op.shape[3]):
        return None
    f = op.arg
    m, e = _blocks(f.arg), _blocks(f.dir)
    if m is None or e is None or m.get((0, 0)) is None or m.get((0, 0)) is not m.get((1, 1)):
        return None
    x = m[(0, 0)]
    r, a, col, b = lab
    if r in c.out or col in c.out or {r, col} & {a, b}:  # a = b: its diagonal
        return None
    if r == col:  # Σ_p L_f(M, F)_pp
        if everywhere.count(r) != 2 or (0, 1) in m or set(e) != {(0, 1)} or (1, 0) not in m:
            return None
        leaf = _second(f.fn, x, m[(1, 0)], e[(0, 1)])
        return None if leaf is None else (leaf, a, b, ())
    if everywhere.count(r) != 2 or everywhere.count(col) != 2:
        return None
    units = {}
    for k, (o, ol) in enumerate(zip(c.operands, c.labels)):
        if o is not op and (r in ol or col in ol):
            if not (isinstance(o, Basis) and o.dim == 2 and len(ol) == 1):
                return None
            units[ol[0]] = (k, o.pos % 2)
    if set(units) != {r, col} or (1, 0) in m or set(e) != {(0, 0), (1, 1)} or e[(0, 0)] is not e[(1, 1)]:
        return None
    place = (units[r][1], units[col][1])
    if place == (1, 0):
        leaf = N.Sym("m", "0", "zero", dims=x.shape)
    elif place[0] == place[1]:
        leaf = _frechet(Frechet(f.fn, x, e[(0, 0)]))
    elif (0, 1) not in m:
        return None
    else:
        leaf = _second(f.fn, x, m[(0, 1)], e[(0, 0)])
    return None if leaf is None else (leaf, a, b, (units[r][0], units[col][0]))


def _second_frechets(c: Contract, everywhere: list):
    """{operand index: (notation, row label, column label), unit vector's index: None} for the
    second Fréchet derivatives among c's factors; None where one holds a Fréchet derivative of
    block matrices that has no matrix notation."""
    out: dict = {}
    for k, (op, lab) in enumerate(zip(c.operands, c.labels)):
        if isinstance(op, Reshape) and isinstance(op.arg, Frechet):
            found = _second_frechet(op, lab, c, everywhere)
            if found is None:
                return None
            leaf, a, b, units = found
            out[k] = (leaf, a, b)
            out.update(dict.fromkeys(units))
    return out


def _split(shape: tuple, sizes: tuple):
    """shape cut into consecutive parts of the given sizes, or None."""
    parts, at = [], 0
    for size in sizes:
        for end in range(at, len(shape) + 1):
            if D.size(shape[at:end]) == size and (end > at or size == 1):
                break
        else:
            return None
        parts.append(tuple(shape[at:end]))
        at = end
    return parts if at == len(shape) else None


def _diagonal_copies(z: Node, m, keep_batch: bool):
    """For z of shape (m,) + P + (m,) + P, the product δ_ee′ Z[e, A, B] (a block-diagonal
    layout): Z (with e where ``keep_batch``), as a node of shape ((m,) if kept) + P + P; else None."""
    if isinstance(z, Sum):  # I ⊗ (Y + diag(x)): a sum of such layouts, term by term
        parts = [(c, _diagonal_copies(t, m, keep_batch)) for c, t in z.terms]
        if not parts or any(p is None for _, p in parts):
            return None
        return simplify(Sum(tuple(parts), parts[0][1].shape))
    k = (z.ndim - 2) // 2
    if not isinstance(z, Contract) or z.ndim != 2 * k + 2 or z.shape[0] != m or z.shape[k + 1] != m:
        return None
    e, e2 = z.out[0], z.out[k + 1]
    ties = [i for i, (op, lab) in enumerate(zip(z.operands, z.labels))
            if isinstance(op, Delta) and op.order >= 2 and {e, e2} <= set(lab)]
    if not ties:
        return None
    rest = [(op, lab) for i, (op, lab) in enumerate(zip(z.operands, z.labels)) if i != ties[0]]
    tie, lab = z.operands[ties[0]], z.labels[ties[0]]
    if tie.order > 2:  # δ_ee′b = δ_ee′ δ_eb: the tie of e and e′, and the rest kept on e
        rest.append((Delta(tie.dim, tie.order - 1), tuple(x for x in lab if x != e2)))
    held = {x for _, lab in rest for x in lab}
    if e2 in held or (e in held) != keep_batch or not rest:
        return None
    out = ((e,) if keep_batch else ()) + z.out[1:k + 1] + z.out[k + 2:]
    return simplify(Contract(tuple(op for op, _ in rest), tuple(lab for _, lab in rest), out))


def _batched(op: Node):
    """Where op is diff.py's [L_f(X, Gₑ) for each e] (``_batched_frechet``: the Fréchet
    derivative of I ⊗ X along blockdiag(Gₑ), its diagonal blocks): (f, X, G, the batch axes'
    dims, A's, B's), op[e, A, B] = L_f(X, Gₑ)[A, B], G laid out as op; else None."""
    if not (isinstance(op, Reshape) and isinstance(op.arg, Contract) and len(op.arg.operands) == 1):
        return None
    inner = op.arg
    lab, = inner.labels
    if len(lab) != 4 or lab[0] != lab[2] or len(set(lab)) != 3 or inner.out != (lab[0], lab[1], lab[3]):
        return None
    r = inner.operands[0]
    if not (isinstance(r, Reshape) and isinstance(r.arg, Frechet) and r.ndim == 4):
        return None
    f = r.arg
    m, d = r.shape[0], r.shape[1]
    dirs = f.dir.terms if isinstance(f.dir, Sum) else ((1.0, f.dir),)  # linear in the Gₑ
    if not isinstance(f.arg, Reshape) or not dirs or not all(isinstance(t, Reshape) for _, t in dirs):
        return None
    x = _diagonal_copies(f.arg.arg, m, False)
    gs = [(c, _diagonal_copies(t.arg, m, True)) for c, t in dirs]
    parts = _split(op.shape, (m, d, d))
    if x is None or any(g is None for _, g in gs) or parts is None:
        return None
    g = simplify(Sum(tuple((c, Reshape(g, op.shape)) for c, g in gs), op.shape))
    return f.fn, simplify(Reshape(x, (d, d))), g, *parts


def _batched_inline(op: Node, lab: tuple):
    """Where op is the Fréchet derivative of I ⊗ X along blockdiag(Gₑ) laid out as
    (e, A, e′, B) and labelled (e, A, e, B) in a product — ``_batched_frechet``'s diagonal
    blocks taken by the product's labels, as simplify merges them: (``_batched``'s reading,
    op's labels without the second e); else None."""
    if not (isinstance(op, Reshape) and isinstance(op.arg, Frechet) and op.arg.ndim == 2) or \
            op.ndim != len(lab):
        return None
    rows = op.arg.shape[0]
    for k in range(1, len(lab)):
        for j in range(1, len(lab) - 2 * k):
            el, ab, again = lab[:k], lab[k:k + j], lab[k + j:2 * k + j]
            eshape, ashape, bshape = op.shape[:k], op.shape[k:k + j], op.shape[2 * k + j:]
            if el != again or len(set(el)) != k or op.shape[k + j:2 * k + j] != eshape or \
                    D.size(eshape + ashape) != rows or D.size(bshape) != D.size(ashape) or \
                    set(el) & set(ab + lab[2 * k + j:]):
                continue
            m, d = D.size(eshape), D.size(ashape)
            blocks = Contract((Reshape(op.arg, (m, d, m, d)),), ((0, 1, 0, 2),), (0, 1, 2))
            found = _batched(Reshape(blocks, eshape + ashape + bshape))
            if found is not None:
                return found, el + ab + lab[2 * k + j:]
    return None


def _with_frechet_applied(c: Contract):
    """c with a factor [L_f(X, Gₑ)]ₑ (``_batched``) applied to what it is contracted with, as
    one Fréchet derivative (an equal product; None where none is so applied):

    - over A, B (a Jacobian or Hessian applied to a direction; e result axes, or summed
      with other factors):
      Σ_AB L_f(X, Gₑ)_AB W_AB = ⟨L_f(X, Gₑ), W⟩ = ⟨Gₑ, L_f(Xᵀ, W)⟩;
    - over e (the batch summed with weights Zₑ): Σₑ Zₑ L_f(X, Gₑ) = L_f(X, Σₑ Zₑ Gₑ)."""
    for k, (op, lab) in enumerate(zip(c.operands, c.labels)):
        found = _batched(op)
        if found is None:
            inline = _batched_inline(op, lab)
            if inline is None:
                continue
            found, lab = inline
        fn, x, g, eshape, ashape, bshape = found
        el = lab[:len(eshape)]
        ab = lab[len(eshape):]
        if set(el) & set(ab) or len(set(el)) != len(el):
            continue
        others = [(op2, lab2) for j, (op2, lab2) in enumerate(zip(c.operands, c.labels)) if j != k]
        fresh = max([x_ for lb in c.labels for x_ in lb] + list(c.out)) + 1
        free = tuple(range(fresh, fresh + len(ab)))  # A′, B′: A and B's axes, renamed apart
        dims = c.label_dims()
        size = D.size(ashape)
        group, outside = _tied(others, set(ab), set(c.out) | set(el))
        if not set(ab) & set(c.out) and not {x_ for _, lb in group for x_ in lb} & (set(el) | set(c.out)):
            ties = [(Delta(dims[y], 2), (z, y)) for z, y in zip(free, ab)]
            w = Contract(tuple(o for o, _ in group + ties), tuple(lb for _, lb in group + ties), free)
            xt = _block_transpose(x, ashape)
            applied = Reshape(Frechet(fn, xt, Reshape(w, (size, size))), ashape + bshape)
            ops = outside + [(g, el + free), (applied, free)]
        elif not set(el) & set(c.out):
            group, outside = _tied(others, set(el), set(c.out))
            if {x_ for _, lb in group for x_ in lb} & (set(ab) | set(c.out)):
                continue
            w = Contract(tuple(o for o, _ in group) + (g,), tuple(lb for _, lb in group) + (el + free,), free)
            applied = Reshape(Frechet(fn, x, Reshape(w, (size, size))), ashape + bshape)
            ops = outside + [(applied, ab)]
        else:
            continue
        out = Contract(tuple(o for o, _ in ops), tuple(lb for _, lb in ops), c.out)
        terms = _terms(out) if isinstance(g, Sum) else None  # Gₑ a sum: term by term
        return out if terms is None else Sum(tuple(terms), out.shape)
    return None


def _tied(factors: list, start: set, out: set):
    """The factors tied to the labels ``start`` through labels summed among them (not in
    ``out``), and the others."""
    reach, group, rest = set(start), [], list(factors)
    grew = True
    while grew:
        grew = False
        for f in list(rest):
            if set(f[1]) & reach:
                group.append(f)
                rest.remove(f)
                reach |= set(f[1]) - out
                grew = True
    return group, rest


def _block_transpose(x: Node, ashape: tuple) -> Node:
    """Xᵀ of a d × d matrix X whose rows and columns are laid out as ``ashape`` (2 × 2 block
    matrices as (2, d′)): the transpose of the array of that shape twice, laid out again, so
    that its blocks stay readable."""
    k = len(ashape)
    z = Reshape(x, ashape + ashape)
    t = Contract((z,), (tuple(range(2 * k)),), tuple(range(k, 2 * k)) + tuple(range(k)))
    return simplify(Reshape(simplify(t), x.shape))


def _inv(node: Inv):
    arg = recognise(node.arg)
    return None if isinstance(arg, N.Index) else N.Inv("m", arg)


def _scalar_fn(node: ScalarFn):
    arg = recognise(node.arg)
    if isinstance(arg, N.Index):
        return None
    return N.Call(KIND[node.ndim], node.fn.name, arg, node.order, fn=node.fn)


def _reshape(node: Reshape):
    """Kronecker products: (P ⊗ Q)_(ac)(bd) = P_ab Q_cd is the reshape of a product laid out
    as (a, c, b, d) — as ∂vec(AXB)/∂vec(X) = Bᵀ ⊗ A is."""
    arg = node.arg
    parts = arg.terms if isinstance(arg, Sum) else ((1.0, arg),)
    if not parts:
        return None
    krons = [(c, _kron(t, node.shape)) for c, t in parts]
    if any(k is None for _, k in krons):
        return None
    return N.add(krons)


def _kron(c, shape):
    """A contraction laid out as a matrix of Kronecker products: P ⊗ Q (or P ⊗ Q ⊗ R) — the
    result's row axes, then its column axes, each factor contributing at most one of each, in
    the factors' order (xᵀ ⊗ I is x_a δ_bc laid out as (b, a, c)); with the columns of two
    factors swapped, (P ⊗ Q)K, K the commutation matrix (∂vec(Xᵀ)/∂vec(X) = K); and factors
    carrying exactly the row axes on the left as diag(vec(V)) (∂vec(σ(XW))/∂vec(W) =
    diag(vec(σ′(XW)))(I ⊗ X))."""
    ndim = len(shape)
    if not isinstance(c, Contract) or ndim not in (1, 2) or len(c.out) <= ndim:
        return None
    scalars = [op for op, lab in zip(c.operands, c.labels) if op.ndim == 0]
    pairs = _summed_groups([(op, lab) for op, lab in zip(c.operands, c.labels) if op.ndim > 0], c.out)
    if pairs is None or any(len(set(lab)) != len(lab) or not set(lab) <= set(c.out) for _, lab in pairs):
        return None
    rows, cols = (c.out, ()) if ndim == 1 else _split_rows(c, shape)
    if rows is None:
        return None
    left = []
    if ndim == 2 and len(rows) in (1, 2):  # diag(v) over one row axis; diag(vec(V)) over two
        diag = [k for k, (_, lab) in enumerate(pairs) if len(lab) == len(rows) and set(lab) == set(rows)]
        if diag and len(diag) < len(pairs):
            vs = []
            for k in diag:
                op, lab = pairs[k]
                m = recognise(op)
                if isinstance(m, N.Index):
                    return None
                vs.append(m if len(rows) == 1 or tuple(lab) == (rows[1], rows[0]) else N.transpose(m))
            pairs = [p for k, p in enumerate(pairs) if k not in diag]
            v = vs[0] if len(vs) == 1 else N.had(vs)
            left = [N.Call("m", "diag", v if len(rows) == 1 else N.Call("c", "vec", v))]
    if not 2 <= len(pairs) <= 3 or sorted(x for _, lab in pairs for x in lab) != sorted(c.out):
        return None  # each result axis from exactly one factor: δ_ip S_iq is no P ⊗ Q
    placed = []
    for op, lab in pairs:
        r = [x for x in lab if x in rows]
        k = [x for x in lab if x in cols]
        if len(r) > 1 or len(k) > 1:
            return None
        placed.append((rows.index(r[0]) if r else None, cols.index(k[0]) if k else None, op, lab, r, k))
    def follows(order, key):
        seq = [p[key] for p in order if p[key] is not None]
        return seq == sorted(seq)

    orders = [sorted(placed, key=lambda p: (p[0] if p[0] is not None else p[1])),
              sorted(placed, key=lambda p: (p[1] if p[1] is not None else p[0]))]
    order = next((o for o in orders if follows(o, 0) and follows(o, 1)), orders[0])
    right = []
    for key in (0, 1):  # rows and columns must both follow the factors' order
        if follows(order, key):
            continue
        if key == 0 or len(order) != 2 or not all(p[4] and p[5] for p in order):
            return None
        dims = c.label_dims()  # (P ⊗ Q)_(ac)(bd) read as (a c)(d b): (P ⊗ Q)K_{|b|,|d|}
        right = [_commutation(dims[order[0][5][0]], dims[order[1][5][0]])]
    factors = []
    for _, _, op, lab, r, k in order:
        m = recognise(op)
        if isinstance(m, N.Index):
            return None
        if r and k:
            factors.append(m if tuple(lab) == (r[0], k[0]) else N.transpose(m))
        elif k and ndim == 2:
            factors.append(N.transpose(m))
        else:
            factors.append(m)
    rest = [recognise(op) for op in scalars]
    if all(isinstance(f, N.Sym) and f.role == "eye" for f in factors):  # I ⊗ I = I
        kron = N.Sym("m", "I", "eye", dims=(shape[1], shape[1]))
        return N.prod(1.0, rest + left + right) if left or right else N.prod(1.0, rest + [kron])
    return N.prod(1.0, rest + left + [N.Kron(KIND[ndim], tuple(factors))] + right)


def _summed_groups(pairs, out):
    """Factors tied by a summed label become one factor, their product: in the vec Hessian
    of ‖XW − Y‖², δ_ab X_cd X_ce (c summed) is I ⊗ XᵀX. None where a group is not a matrix."""
    summed = {x for _, lab in pairs for x in lab if x not in out}
    if not summed:
        return pairs
    parent = list(range(len(pairs)))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for x in summed:
        holders = [i for i, (_, lab) in enumerate(pairs) if x in lab]
        for i in holders[1:]:
            parent[find(i)] = find(holders[0])
    groups: dict = {}
    for i in range(len(pairs)):
        groups.setdefault(find(i), []).append(i)
    merged = []
    for members in groups.values():
        if len(members) == 1:
            merged.append(pairs[members[0]])
            continue
        ops = tuple(pairs[i][0] for i in members)
        labs = tuple(pairs[i][1] for i in members)
        free = tuple(x for x in out if any(x in lab for lab in labs))
        if not 1 <= len(free) <= 2:
            return None
        merged.append((Contract(ops, labs, free), free))
    return merged


def _commutation(p, q):
    """K_{p,q}: the pq × pq permutation with K vec(A) = vec(Aᵀ) for a p × q matrix A."""
    n = D.mul(p, q)
    return N.Sym("m", "K", "commutation", False, (n, n), (p, q))


def _split_rows(c, shape):
    """The result labels that make up the reshaped matrix's rows (a prefix of ``c.out``
    whose dims multiply to the row count), and those of its columns; None where no prefix
    does, or more than one does (a dim of 1)."""
    dims = c.label_dims()
    splits = [(c.out[:k], c.out[k:]) for k in range(len(c.out) + 1)
              if D.size([dims[x] for x in c.out[:k]]) == shape[0]
              and D.size([dims[x] for x in c.out[k:]]) == shape[1]]
    return splits[0] if len(splits) == 1 else (None, None)


# --------------------------------------------------------------------------- contractions


class _Item:
    """A factor of a product, with the labels of its rows and columns (None: absent) and
    the set of those labels (``place`` sets the three)."""

    __slots__ = ("m", "rows", "cols", "labels")

    def __init__(self, m, rows, cols):
        self.m, self.rows, self.cols = m, rows, cols
        if rows is None:
            self.labels = frozenset() if cols is None else frozenset((cols,))
        else:
            self.labels = frozenset((rows,)) if cols is None else frozenset((rows, cols))

    def place(self, rows, cols):
        self.rows, self.cols = rows, cols
        if rows is None:
            self.labels = frozenset() if cols is None else frozenset((cols,))
        else:
            self.labels = frozenset((rows,)) if cols is None else frozenset((rows, cols))

    def with_cols(self, lab):
        """(matrix, other label) oriented so that ``lab`` indexes the columns."""
        if self.cols == lab:
            return self.m, self.rows
        return N.transpose(self.m), self.cols

    def with_rows(self, lab):
        if self.rows == lab:
            return self.m, self.cols
        return N.transpose(self.m), self.rows


class _LabelDims(dict):
    """A product's dimension of each label, read off the product at the first look-up: most
    products are read without one."""

    __slots__ = ("_of",)

    def __init__(self, c: Contract):
        super().__init__()
        self._of = c

    def __missing__(self, lab):
        for x, d in self._of.label_dims().items():
            self.setdefault(x, d)
        if lab not in self:
            raise KeyError(lab)
        return dict.get(self, lab)


def _contract(c: Contract):
    # the rules for Fréchet derivatives, second divided differences and products among the
    # factors are asked only where a factor of their type is there: most products have none
    kinds = set(map(type, c.operands))
    if Contract in kinds:
        c = _inlined(c)  # V_kl (Σ … T_pqr …)_ijkl: a product of order above 2 among the factors
        kinds = {type(op) for op in c.operands}
    if Reshape in kinds:
        applied = _with_frechet_applied(c)  # [L_f(X, Gₑ)]ₑ applied to a direction: one L_f
        if applied is not None:
            return recognise(simplify(applied))
    at = None
    if Sum in kinds:
        at = next((k for k, op in enumerate(c.operands) if isinstance(op, Sum) and op.ndim > 2 and
                   any(isinstance(x, Frechet) for x in walk(op))), None)
    if at is not None:  # (L_f(M, F) + L_f(M, F)ᵀ)_…: term by term, each simplified alone
        # (together, simplify would factor them back into this product)
        ops = c.operands
        parts = [(k, recognise(simplify(Contract(ops[:at] + (t,) + ops[at + 1:], c.labels, c.out))))
                 for k, t in ops[at].terms]
        if not parts or any(isinstance(m, N.Index) for _, m in parts):
            return None
        return N.add(parts)
    if DivDiff3 in kinds:  # Σ_q T_pqr X_pq Y_qr = Δ²f(λ)[X, Y]
        applied = _with_divdiff3_applied(c)
        return None if applied is None else recognise(applied)
    if kinds <= {Delta} and is_ones(c) and c.ndim == 2:
        return N.Sym("m", "1", "one", dims=c.shape)  # 11ᵀ, the all-ones matrix
    scalars, items = [], []
    dims = _LabelDims(c)
    everywhere = list(chain.from_iterable(c.labels))
    # L²_f(X; E₁, E₂), read off 2 × 2 block matrices (reshaped Fréchet derivatives)
    blocks = _second_frechets(c, everywhere) if Reshape in kinds else {}
    if blocks is None:
        return None
    for k, (op, lab) in enumerate(zip(c.operands, c.labels)):
        if blocks and k in blocks:
            if blocks[k] is not None:
                leaf, a, b = blocks[k]
                if a != b:
                    items.append(_Item(leaf, a, b))
                elif a in c.out or everywhere.count(a) > 2:  # its diagonal, or its trace
                    items.append(_Item(N.Call("c", "diag", leaf), a, None))
                else:
                    scalars.append(N.trace(leaf))
            continue
        ndim = len(op.shape)
        if ndim == 0 and _scalar_product(op):  # a·a·…·a typed: its leaves, not each level
            leaves = [recognise(x) for x in _scalar_leaves(op)]
            if any(isinstance(x, N.Index) for x in leaves):
                return None
            scalars.extend(N.fewest_transposes(x) for x in leaves)
            continue
        m = recognise(op)
        if type(m) is N.Index:
            return None
        if ndim == 0:
            scalars.append(m)
        elif ndim == 1:
            items.append(_Item(m, lab[0], None))
        elif lab[0] == lab[1]:  # A_ii: its diagonal, or (alone and summed) its trace
            if lab[0] in c.out or everywhere.count(lab[0]) > 2:
                items.append(_Item(N.Call("c", "diag", m), lab[0], None))
            else:
                scalars.append(N.trace(m))
        else:
            items.append(_Item(m, lab[0], lab[1]))
    out = list(c.out)
    fresh = max(everywhere + out + [-1]) + 1
    result = set(out)
    while True:
        if not items or len(items) == 1 and items[0].labels <= result:
            break  # one factor over result labels, or none: no rule applies (_merge_once's False)
        step = _merge_once(items, scalars, out, dims, fresh)
        if step is None:
            return None
        if step is False:
            break
        fresh += 1
    if len(items) > 1:
        return None
    if not items:
        return N.prod(1.0, [N.fewest_transposes(x) for x in scalars])
    it = items[0]
    if len(out) == 2:
        m = it.m if (it.rows, it.cols) == tuple(out) else N.transpose(it.m)
    elif len(out) == 1:
        m = it.m if it.rows == out[0] else N.transpose(it.m)
    else:
        m = it.m
    return N.prod(1.0, scalars + [m])


def _scalar_product(node) -> bool:
    """A product of scalars alone (einsum(',->', a, b)), such as a nested chain a·a·…·a."""
    return isinstance(node, Contract) and all(op.ndim == 0 for op in node.operands)


def _scalar_leaves(node) -> list:
    """The factors of nested products of scalars, left to right, read without recursion: a
    chain of k products is read in O(k), where recognising each level built a flat product
    of every level's factors again (O(k²))."""
    leaves, stack = [], [node]
    while stack:
        x = stack.pop()
        if _scalar_product(x):
            stack.extend(reversed(x.operands))
        else:
            leaves.append(x)
    return leaves


def _squared(m):
    """A where m is A^∘2 (possibly transposed), else None."""
    if isinstance(m, N.T):
        inner = _squared(m.arg)
        return None if inner is None else N.transpose(inner)
    return m.arg if isinstance(m, N.Pow) and m.p == 2 else None


def _ones_row(dim):
    return N.transpose(N.Sym("c", "1", "one", dims=(dim,)))


def _merge_once(items, scalars, out, dims, fresh):
    """Apply one merging rule; False when none is left to apply, None when stuck."""
    # element-wise products: two factors over the same labels (unless those labels are
    # summed between the two alone: that is aᵀb or tr(AᵀB), read by the product rules)
    # one pass indexes the factors by their label sets and each label by its holders, so a
    # rule finds its pair in O(factors), not by comparing every pair
    groups, holding, after = {}, {}, {}
    for it in items:
        labs = it.labels
        group = groups.setdefault(labs, [])
        if group:
            after[id(group[-1])] = it  # the next factor over the same labels
        group.append(it)
        for x in labs:
            holding.setdefault(x, []).append(it)
    labels = set(holding)
    if after:
        def twice(labs):  # every label held by exactly two factors
            return all(len(holding[x]) == 2 for x in labs)

        for p in items:
            q = after.get(id(p))  # the next factor over the same labels
            if q is not None and not (p.labels.isdisjoint(out) and twice(p.labels)):
                qm = q.m if (q.rows, q.cols) == (p.rows, p.cols) else N.transpose(q.m)
                items.remove(q)
                p.m = N.had([p.m, qm])
                return True
        for p in items:  # A_ij B_ji → tr(AB), A_ij B_ij → tr(AᵀB)
            q = after.get(id(p))
            both = p.labels
            if q is not None and len(both) == 2 and p.rows != p.cols and both.isdisjoint(out) and \
                    twice(both):
                qm = q.m if (q.rows, q.cols) == (p.cols, p.rows) else N.transpose(q.m)
                items.remove(p)
                items.remove(q)
                scalars.append(N.trace(N.prod(1.0, [p.m, qm])))
                return True
    for lab in sorted(labels - set(out)):
        holders = holding[lab]  # (read, never changed: a rule that changes the factors returns)
        if len(holders) == 1:
            h = holders[0]
            items.remove(h)
            square = _squared(h.m)
            if square is not None and (h.cols is None or h.rows is None):  # Σ xᵢ² = xᵀx
                a = square if h.cols is None else N.transpose(square)
                scalars.append(N.prod(1.0, [N.transpose(a), a]))
                return True
            if square is not None and h.labels <= set(labels) - set(out) and \
                    all(sum(x in it.labels for it in items) == 0 for x in h.labels):
                scalars.append(N.trace(N.prod(1.0, [N.transpose(square), square])))
                return True  # Σᵢⱼ Aᵢⱼ² = tr(AᵀA)
            if h.rows == h.cols == lab:  # a closed loop: (ABC)_ii
                scalars.append(N.trace(h.m))
            elif h.rows is None:  # Σ_j r_j = r1 for a row r
                scalars.append(N.prod(1.0, [h.m, N.Sym("c", "1", "one", dims=(dims[lab],))]))
            else:
                m, other = h.with_rows(lab)  # Σ_i A_ij = (1ᵀA)_j
                summed = N.prod(1.0, [_ones_row(dims[lab]), m])
                if other is None:
                    scalars.append(summed)
                else:
                    items.append(_Item(summed, None, other))
            return True
        if len(holders) == 2:
            p, q = holders
            pm, prow = p.with_cols(lab)
            qm, qcol = q.with_rows(lab)
            items.remove(q)
            p.m = N.prod(1.0, [pm, qm])
            p.place(prow, qcol)
            if p.rows is None and p.cols is None:
                items.remove(p)
                scalars.append(p.m)
            return True
        vectors = [h for h in holders if h.labels == {lab}]
        if vectors:  # d_i X_ia X_ib → Xᵀ diag(d) X
            v = vectors[0]
            others = [h for h in holders if h is not v]
            last = others[-1]
            dims[fresh] = dims[lab]  # the diag's second axis: a new label of lab's dim
            if last.rows == lab:
                last.place(fresh, last.cols)
            else:
                last.place(last.rows, fresh)
            v.m = N.Call("m", "diag", v.m if v.rows == lab else N.transpose(v.m))
            v.place(lab, fresh)
            return True
        # three matrices share the label: another label's product may merge two of them
        # into one Hadamard factor first (X_pi A_pj (RW₂ᵀ)_pj → Xᵀ(A ⊙ RW₂ᵀ))
    for lab in out:  # (no rule has changed the factors since ``holding`` was made)
        holders = holding.get(lab) or []
        if len(holders) < 2:
            continue
        vectors = [h for h in holders if h.labels == {lab}]
        mats = [h for h in holders if h not in vectors]
        if not vectors or not mats:
            return None
        v, a = vectors[0], mats[0]  # v_i A_ij → (diag(v) A)_ij
        d = N.Call("m", "diag", v.m if v.rows == lab else N.transpose(v.m))
        items.remove(v)
        a.m = N.prod(1.0, [d, a.m]) if a.rows == lab else N.prod(1.0, [a.m, d])
        return True
    if len(items) == 2 and all(len(it.labels) == 1 for it in items):  # a_i b_j → (abᵀ)_ij
        p, q = items
        pm, _ = p.with_rows(next(iter(p.labels)))
        qm, _ = q.with_cols(next(iter(q.labels)))
        items.remove(q)
        p.m = N.prod(1.0, [pm, qm])
        p.place(next(iter(p.labels)), next(iter(q.labels)))
        return True
    return False


RULES = {
    Var: _sym,
    Const: lambda n: N.Num("s", n.value),
    Delta: _delta,
    Basis: lambda node: N.Sym("c", node.subscript(), "basis", dims=node.shape),
    Contract: _contract,
    Sum: _sum,
    Elementwise: _elementwise,
    Softmax: _unary("softmax"),
    LogSumExp: _unary("logsumexp"),
    Inv: _inv,
    Pinv: _unary("pinv"),
    MatFn: _matfn,
    Eigh: _eigh,
    DivDiff: _divdiff,
    EigGap: lambda node: _named("Γ", node),
    DivDiff2: lambda node: None,  # f[λᵢ, λᵢ, λⱼ]: index notation
    DivDiff3: lambda node: None,  # f[λᵢ, λⱼ, λₖ]: index notation, Δ²f(λ)_ijk (printing)
    DivDiff3Apply: _divdiff3_apply,  # Σ_q f[λ_p, λ_q, λ_c] X_pq Y_qc: Δ²f(λ)[X, Y]
    Svd: _svd,
    Funm: _funm,
    Frechet: _frechet,
    Cholesky: _unary("chol"),  # chol(S), MATLAB's name: S = LLᵀ with L lower triangular
    Phi: _unary("Φ"),  # Φ(X): the lower triangle, diagonal halved
    Det: _unary("det", "s"),
    LogDet: _unary("logdet", "s"),
    ScalarFn: _scalar_fn,
    Reshape: _reshape,
}
