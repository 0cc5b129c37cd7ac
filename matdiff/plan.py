"""The code generator's planner: how each product is computed, in NumPy's spelling.

A contraction's deltas are merged into its labels, then it is split into pairwise steps,
smallest result first, each written as the NumPy primitive it is (``_contract``, ``_plan``,
``_pair_steps``, ``_pairwise``); a factor met twice is formed once (``_gram``,
``_weighted_gram``); a product with an inverse is a solve, one LU or Cholesky factorisation
per matrix, and X⁺b goes through one thin SVD (``_solve_step``, ``_cho_factor``, ``_from_lu``,
``_pinv_step``).  Before writing, ``generate._codegen`` asks it which of equal forms to write:
sums distributed over a product where that costs fewer multiply-adds (``_distributed_sums``,
``_flops``), scalings moved to the smallest factor (``_scaled_products``), a coefficient that
all terms of a sum share applied once (``_common_factors``), diagonal outputs added onto a sum
in place (``_folded_spreads``).  Every product is lowered by one function, ``_product``.
"""
from __future__ import annotations

import heapq
import math

import numpy as np

from . import dims as D
from .expr import Expr
from .ir import (Cholesky, Const, Contract, Delta, Elementwise, Inv, LogDet, MatFn, Node, Sum, is_ones,
                 merge_deltas, walk)
from .simplify import rewrite, simplify
from .writer import LETTERS, SCATTER, _comment, _Writer


# --------------------------------------------------------------------------- contractions


def _labels_code(labels) -> str:
    return "".join(LETTERS[i % 52] for i in labels)


def _pairwise(w: _Writer, a: str, la: tuple, b: str, lb: tuple, out: tuple) -> str:
    """The code of Σ a_la b_lb → out for two operands, as a NumPy primitive where one fits."""
    sa, sb, so = set(la), set(lb), set(out)
    if len(sa) == len(la) and len(sb) == len(lb):
        own_a, own_b = sa - sb - so, sb - sa - so
        if own_a or own_b:  # a label one operand alone sums is summed there first (Y1 ⊙ …),
            ka = tuple(x for x in la if x not in own_a)  # on a line of its own, so shared
            kb = tuple(x for x in lb if x not in own_b)
            a, b = (w.emit(_single(a, la, ka)) if own_a else a), (w.emit(_single(b, lb, kb)) if own_b else b)
            return _pairwise(w, a, ka, b, kb, out)
        summed = (sa & sb) - so
        batch = sa & sb & so
        if not summed and sa | sb == so:  # a broadcasting element-wise product
            return f"{_expand(a, la, out)} * {_expand(b, lb, out)}"
        if summed and not batch and (sa | sb) - summed == so and not (sa - sb - so) and \
                not (sb - sa - so):
            return _tensordot(a, la, b, lb, out, summed, w.symmetric, w.functions.get("__lead_dot"))
    eq = f"{_labels_code(la)},{_labels_code(lb)}->{_labels_code(out)}"
    return f"np.einsum({eq!r}, {a}, {b}, optimize=True)"


def _expand(name: str, labels: tuple, out: tuple) -> str:
    """name with its axes in out's order and None where out has labels it lacks."""
    order = [x for x in out if x in labels]
    if list(labels) != order:
        perm = tuple(labels.index(x) for x in order)
        name = f"{name}.T" if len(perm) == 2 else f"np.transpose({name}, {perm})"
    if len(order) == len(out):
        return name
    index = ", ".join(":" if x in labels else "None" for x in out)
    return f"{name}[{index}]"


def _tensordot(a, la, b, lb, out, summed, symmetric=frozenset(), lead=None) -> str:
    summed = sorted(summed, key=la.index)
    fa = [x for x in la if x not in summed]
    fb = [x for x in lb if x not in summed]
    if len(summed) == len(la) == len(lb):  # a full contraction: Σ a ⊙ b
        bb = _expand(b, lb, la)
        return f"np.sum({a} * {bb})" if len(la) > 1 else f"{a} @ {b}"
    if len(la) == 1 and len(lb) == 2 and lb[1] == summed[0]:  # Xw rather than wXᵀ
        return _tensordot(b, lb, a, la, out, set(summed), symmetric, lead)
    if len(la) <= 2 and len(lb) <= 2 and len(summed) == 1:  # a matrix product, fewest .T
        s = summed[0]
        options = []
        for x, lx, y, ly in ((a, la, b, lb), (b, lb, a, la)):
            left = x if lx[-1] == s or x in symmetric else (f"{x}.T" if len(lx) == 2 else x)
            right = y if ly[0] == s or y in symmetric else (f"{y}.T" if len(ly) == 2 else y)
            got = [v for v in lx if v != s] + [v for v in ly if v != s]
            code = f"{left} @ {right}"
            code = code if got == list(out) else f"({code}).T"
            # transposed operands are free in BLAS; a transposed result is a strided view
            # that slows every later use, so it counts for more
            options.append((code.count(".T") + 2 * code.endswith(").T"), code))
        return min(options)[1]
    axes = ([la.index(x) for x in summed], [lb.index(x) for x in summed])
    code = f"np.tensordot({a}, {b}, axes={axes})" if lead is None or axes != ([0], [0]) else \
        lead.format(a, b)  # the backend's own way to sum over both first axes
    got = fa + fb
    if got != list(out):
        code = f"np.transpose({code}, {tuple(got.index(x) for x in out)})"
    return code


def _contract(w: _Writer, n: Contract, args: dict, size_of, coef: float = 1.0) -> str:
    """Deltas merged into labels, then a pairwise plan, each step a line; ``coef`` scales
    the entries before they are spread into a diagonal output.  A factor written without
    its common coefficient (``_common_factors``) has it applied here, whichever path lowers
    the product, so no caller can drop it."""
    for op in n.operands:
        coef *= w.common.get(op, 1.0)
    kept, out, uniq, summed_only = merge_deltas(n)
    ops, labs = [args[op] for op, _ in kept], [lab for _, lab in kept]
    dim = n.label_dims()
    carried = {x for lab in labs for x in lab}
    factors = [size_of(dim[r]) for r in summed_only]
    inner = tuple(x for x in uniq if x in carried)
    _sigmoid_slopes(w, kept, ops, labs, args)
    # the Gram rewrite reads the factors' IR (a weight must be ≥ 0), so it comes before the
    # scaling is moved onto a factor's code: −(1/3)Xdiag(w²)Xᵀ never takes √(−w²/3)
    _weighted_gram(w, kept, ops, labs, inner)
    plain = [k for k, op in enumerate(ops) if not _solvable_with(w, op) and op not in w.pinvs]
    if coef != 1.0 and plain and len(uniq) == len(out):  # (a scaled inverse, −X⁻¹, would
        # no longer be known as one, and would be formed where it is solved with)
        size = _sizes(w, dim)
        small = min(plain, key=lambda k: np.prod([size[x] for x in set(labs[k])]))
        if np.prod([size[x] for x in set(labs[small])]) < np.prod([size[x] for x in inner]):
            ops[small] = f"({_scaled(coef, ops[small])})"
            coef = 1.0
    if not ops:
        code = "np.asarray(1.0)"
    elif len(ops) == 1:
        if ops[0] in w.inverses and len(set(labs[0])) == 2:  # 1ᵀX⁻¹1, X⁻¹1: a solve with ones
            _inverse_sums(w, ops, labs, inner)
        code = _inverse_trace(w, ops[0], labs[0], inner) or _single(ops[0], labs[0], inner)
    else:
        code = _plan(w, ops, labs, inner, dim)
    for f in factors:
        code = f"({code}) * {f}"
    if coef != 1.0:
        code = _scaled(coef, f"({code})")
    if len(uniq) < len(out):  # an output that is itself diagonal: write its diagonal only
        return _spread(w, code, inner, out, dim, size_of)
    if len(inner) < len(uniq):  # broadcast along labels only ones vectors carry
        shape = ", ".join(size_of(dim[x]) for x in uniq)
        code = f"np.broadcast_to({_expand(w.emit(code), inner, tuple(uniq))}, ({shape},))"
    return code


def _inverse_trace(w: _Writer, a: str, lab: tuple, out: tuple) -> str | None:
    """tr(S⁻¹) of a positive-definite S whose inverse nothing else reads, from S's Cholesky
    factor (‖U⁻¹‖_F² for S = UᵀU, the backend's ``CHOLESKY`` entry): S⁻¹ itself is never
    formed.  None where that does not apply (then the inverse's trace is taken)."""
    if a not in w.inverses or len(lab) != 2 or lab[0] != lab[1] or out or w.cho is None or \
            w.cho[5] is None:
        return None
    x, inv = w.inverses[a]
    if inv.arg not in w.spd or w.uses.get(inv) != 1:  # S⁻¹ formed for another reader anyway
        return None
    return w.cho[5].format(_cho_factor(w, inv.arg, x))


def _negated(a: Node, b: Node) -> bool:
    """Whether b is −a (a sum of the one term −1·a)."""
    return isinstance(b, Sum) and len(b.terms) == 1 and b.terms[0] == (-1.0, a)


def _is_sigmoid(n: Node) -> bool:
    return isinstance(n, Elementwise) and n.fn.builtin and n.fn.name == "sigmoid"


def _sigmoid_slopes(w: _Writer, kept: list, ops: list, labs: list, args: dict) -> None:
    """σ(u) ⊙ σ(−u) among a product's factors (σ′(u): the derivative of any sigmoid, the
    BCE Hessian's weight) as one factor, the backend's ``_dsigmoid(u)``, where it has one:
    one exponential instead of two, where no other node needs either sigmoid.  ``kept`` gets
    the product σ(u) ⊙ σ(−u) as its node.  Where the code computes both sigmoids together
    anyway (``_sigmoid_pairs``) and the backend's pair holds their product too (JAX's, at
    index ``__sigmoids_slope``), the factor is that product."""
    code = w.functions.get("__dsigmoid")
    if code is None:
        return
    slope = w.functions.get("__sigmoids_slope")
    for i in range(len(kept)):
        for j in range(i + 1, len(kept)):
            a, b = kept[i][0], kept[j][0]
            if labs[i] != labs[j] or not (_is_sigmoid(a) and _is_sigmoid(b)):
                continue
            u = a.arg if _negated(a.arg, b.arg) else b.arg if _negated(b.arg, a.arg) else None
            if u is None or u not in args:
                continue
            alone = w.uses.get(a) == 1 and w.uses.get(b) == 1  # else one is needed elsewhere,
            # computed anyway: the other is then the cheaper (one exp either way), or the pair's
            paired = not alone and slope is not None and w.sigmoid_pairs.get(a, (None,))[0] is u \
                and w.sigmoid_pairs.get(b, (None,))[0] is u
            if not (alone or paired):
                continue
            lab = tuple(range(len(labs[i])))
            kept[i] = (Contract((a, b), (lab, lab), lab), kept[i][1])
            if paired:  # the pair's own product, from the one logistic both came from
                pair = w.emit(w.functions["__sigmoids"].format(args[u]))
                ops[i] = w.emit(f"{pair}[{slope}]", _comment(kept[i][0]))
            else:
                ops[i] = w.emit(code.format(args[u]), _comment(kept[i][0]))
            del kept[j], ops[j], labs[j]
            return _sigmoid_slopes(w, kept, ops, labs, args)  # another pair, if any


def _sigmoid_pairs(order) -> dict:
    """σ(u) and σ(−u) both among the nodes: each → (u, 0 for σ(u), 1 for σ(−u)), which the
    backend's ``_sigmoids(u)`` computes together from one exponential (σ′(u) = σ(u) ⊙ σ(−u)
    beside σ(u) itself, in a network's gradient)."""
    sigmoids = [n for n in order if _is_sigmoid(n)]
    pairs = {}
    for a in sigmoids:
        for b in sigmoids:
            if _negated(a.arg, b.arg):
                pairs[a], pairs[b] = (a.arg, 0), (a.arg, 1)
    return pairs


def _scaled(coef: float, code: str) -> str:
    return f"-{code}" if coef == -1.0 else f"{coef!r} * {code}"


def _spread(w: _Writer, code: str, inner: tuple, out: list, dim: dict, size_of) -> str:
    """Zeros of the output's shape with the entries written where its repeated labels agree
    (δ_ik (VᵀV)_jl: H[i, :, i, :] = VᵀV).  A repeated label is indexed by one arange, every
    other axis by a slice; the values are laid out in the order that advanced indexing (the
    same in NumPy, JAX and PyTorch) gives, and broadcast where only ones vectors carry a label."""
    rep = list(dict.fromkeys(x for x in out if out.count(x) > 1))
    pos = [i for i, x in enumerate(out) if x in rep]
    if pos == list(range(pos[0], pos[-1] + 1)):  # adjacent indexed axes stay in place
        order = list(out[:pos[0]]) + rep + list(out[pos[-1] + 1:])
    else:  # otherwise they come first
        order = rep + [x for x in out if x not in rep]
    while order and order[0] not in inner:  # leading axes come from broadcasting
        order = order[1:]
    values = _expand(w.emit(code), inner, tuple(order))
    shape = ", ".join(size_of(dim[x]) for x in out)
    full = w.into or w.emit(f"np.zeros(({shape},))", pure=False)
    index = {}
    for k, x in enumerate(rep):
        axes = "" if len(rep) == 1 else \
            "[" + ", ".join(":" if j == k else "None" for j in range(len(rep))) + "]"
        index[x] = w.emit(f"np.arange({size_of(dim[x])}){axes}")
    w.lines.append(SCATTER.format(op="_add" if w.into else "", full=full,
                                  index=", ".join(index.get(x, ":") for x in out), values=values))
    return full


def _single(a: str, lab: tuple, out: tuple) -> str:
    if len(set(lab)) != len(lab):
        return f"np.einsum({_labels_code(lab) + '->' + _labels_code(out)!r}, {a})"
    summed = [i for i, x in enumerate(lab) if x not in out]
    if summed:
        kept = [x for x in lab if x in out]
        a = f"{a}.sum()" if not kept else f"{a}.sum(axis={tuple(summed) if len(summed) > 1 else summed[0]})"
        lab = tuple(kept)
    return _expand(a, lab, out) if lab != tuple(out) else a


def _plan(w: _Writer, ops, labs, out, dim, gram: bool = True) -> str:
    """Pairwise steps, each time the pair whose result is smallest (then cheapest): vectors
    meet first and no step builds a tensor larger than it must (XᵀDX never makes n×k×k)."""
    size = _sizes(w, dim)
    ops, labs = list(ops), [tuple(lab) for lab in labs]
    _inverse_sums(w, ops, labs, out)
    if sum(_solvable_with(w, op) for op in ops) > 1:  # S⁻¹BS⁻¹: B meets an inverse first, so
        # each inverse is solved with (S⁻¹ times S⁻¹ first would form the one it solves for)
        last = sorted(range(len(ops)), key=lambda k: _solvable_with(w, ops[k]))
        ops, labs = [ops[k] for k in last], [labs[k] for k in last]
    if gram:
        _gram(w, ops, labs, out, dim)
    inverses = {k for k, op in enumerate(ops) if _solvable_with(w, op)}
    if inverses and len(ops) > 1:  # a diagonal read beside an inverse is taken first, a vector
        for k, lab in enumerate(labs):  # to solve with: S⁻¹diag(B), not S⁻¹ formed and then read
            if k not in inverses and len(set(lab)) < len(lab):
                diagonal = tuple(dict.fromkeys(lab))
                ops[k], labs[k] = w.emit(_single(ops[k], lab, diagonal)), diagonal
    for i, j, keep, _ in _steps(labs, out, size, inverses):
        lb, la = labs.pop(j), labs.pop(i)
        b, a = ops.pop(j), ops.pop(i)
        keep = keep if ops else tuple(out)
        first, second = ((b, lb), (a, la)) if a in w.pinvs and b in w.inverses else ((a, la), (b, lb))
        # (X⁺Y⁻¹: Y solves with X⁺, never formed for X⁺'s SVD)
        solved = _solve_step(w, *first, *second, keep) or _solve_step(w, *second, *first, keep) or \
            _diagonal_solve(w, a, la, b, lb, keep, ops, labs, out)
        step = _single(*solved, keep) if solved else _pairwise(w, a, la, b, lb, keep)
        if not ops:
            return step
        ops.append(w.emit(step))
        labs.append(keep)
        if a == b and _is_gram(la, lb, keep):
            w.symmetric.add(ops[-1])  # read either way round, without .T
    return _single(ops[0], labs[0], tuple(out))


def _diagonal_solve(w: _Writer, a: str, la: tuple, b: str, lb: tuple, keep: tuple, ops: list,
                    labs: list, out):
    """An inverse times a vector over a label the step keeps because one other inverse holds
    it, X⁻¹diag(d)·Y⁻¹ (S⁻ᵀdiag(d)S⁻¹, a Hessian's inner block), as a solve with the
    diagonal matrix diag(d): each inverse is then solved with a matrix, where scaling one by
    d would form it (n³ either way, and the inverse is never formed).  ``ops`` and ``labs``:
    the factors the product has left.  (the solution's code, its labels), or None."""
    for (x, lx), (d, ld) in (((a, la), (b, lb)), ((b, lb), (a, la))):
        if not (_solvable_with(w, x) and len(ld) == 1 and ld[0] in lx and ld[0] in keep) or \
                ld[0] in out or _solvable_with(w, d):
            continue
        q = ld[0]
        held = [k for k, lab in enumerate(labs) if q in lab]
        if len(held) != 1 or not _solvable_with(w, ops[held[0]]):
            continue
        mark = max(y for lab in (la, lb, keep, tuple(out), *labs) for y in lab) + 1  # diag(d)'s
        # second label, q again once solved
        solved = _solve_step(w, x, lx, w.emit(f"np.diag({d})"), (q, mark),
                             tuple(mark if y == q else y for y in keep))
        if solved is not None:
            return solved[0], tuple(q if y == mark else y for y in solved[1])
    return None


def _solvable_with(w: _Writer, op: str) -> bool:
    """Whether a product's factor is an inverse, or a sum of inverses, that it solves with."""
    return op in w.inverses or op in w.inverse_sums


def _solve_step(w: _Writer, a: str, la: tuple, b: str, lb: tuple, keep: tuple):
    """Σ (X⁻¹)_pq b_q… as a solve, X⁻¹b (or X⁻ᵀb, summing over p), where ``a`` is an
    inverse and b a vector, matrix or tensor (its other labels flattened into one, so that
    X⁻¹ meeting a 3-index factor is a solve too): (the solution's code, its labels), or None.  The
    inverse itself is then never formed unless another line reads it.  Where products read
    the same inverse twice or more, one LU factorisation serves every solve."""
    if a in w.pinvs:
        return _pinv_step(w, a, la, b, lb, keep)
    if a in w.inverse_sums:
        return _sum_of_solves(w, a, la, b, lb, keep)
    if a not in w.inverses or len(la) != 2 or la[0] == la[1]:
        return None
    x, inv = w.inverses[a]
    p, q = la
    for summed, other, trans in ((q, p, 0), (p, q, 1)):
        if summed in keep or lb.count(summed) != 1:
            continue
        rest = tuple(y for y in lb if y != summed)
        rhs, wide = _right_side(w, b, lb, summed)
        if w.cho is not None and inv.arg in w.spd:  # S⁻¹b = S⁻ᵀb by Cholesky, S = LLᵀ
            code = w.cho[1].format(_cho_factor(w, inv.arg, x), rhs)
        elif w.tri is not None and isinstance(inv.arg, Cholesky):  # L⁻¹b, L⁻ᵀb: triangular
            code = w.tri.format(x, rhs, trans)
        elif w.lu is not None and w.inverse_uses.get(inv, 0) > 1:
            factor = w.emit(w.lu[0].format(x), f"LU of {_comment(inv.arg)}")
            code = w.lu[1].format(factor, rhs, trans)
        else:
            code = f"np.linalg.solve({x}.T, {rhs})" if trans else f"np.linalg.solve({x}, {rhs})"
        if wide is not None:
            code = f"{w.emit(code)}.reshape({wide}.shape)"
        return w.emit(code), (other,) + rest
    return None


def _sum_of_solves(w: _Writer, a: str, la: tuple, b: str, lb: tuple, keep: tuple):
    """Σ (U)_pq b_q… for a sum of inverses U = Σ cᵢXᵢ⁻¹ (or Xᵢ⁻ᵀ), and of outer products
    uvᵀ, as Σ cᵢ·Xᵢ⁻¹b + Σ cⱼ·uⱼ(vⱼᵀb), one solve per inverse (``_solve_step``, one LU per
    matrix where U is read more than once), so that no inverse is formed: (the code's name,
    its labels), or None where b is not solved with."""
    codes, coefs, labels = [], [], None
    terms = w.inverse_sums[a]
    for coef, inverse, kind in terms:
        if kind == "outer":
            continue
        solved = _solve_step(w, inverse, la[::-1] if kind == "transposed" else la, b, lb, keep)
        if solved is None or labels not in (None, solved[1]):
            return None
        codes.append(solved[0])
        coefs.append(coef)
        labels = solved[1]
    for coef, uv, kind in terms:
        if kind != "outer":
            continue
        u, v = uv
        p, q = la  # U_pq = u_p v_q: summed over q, u(vᵀb); over p, v(uᵀb)
        (near, far) = (u, v) if labels[0] == p else (v, u)
        summed = q if labels[0] == p else p
        rest = labels[1:]
        inner = w.emit(_pairwise(w, far, (summed,), b, lb, rest))
        codes.append(w.emit(_pairwise(w, near, labels[:1], inner, rest, labels)))
        coefs.append(coef)
    return w.emit(_sum_text(codes, coefs)), labels


def _outer_factors(t: Node):
    """A matrix product term that is an outer product u_p v_q (zzᵀ with z = V⁻¹s: no factor,
    nor chain of factors sharing labels, joins p to q): the products u and v as Contract
    nodes (scalar factors go with u), or None."""
    if not isinstance(t, Contract) or len(t.out) != 2 or len(t.operands) < 2 or \
            any(isinstance(o, Delta) for o in t.operands) or \
            any(len(set(lab)) != len(lab) for lab in t.labels):
        return None
    p, q = t.out
    side: dict = {}  # operand index → "p" or "q", grown along shared summed labels
    for start, mark in ((p, "p"), (q, "q")):
        stack = [k for k, lab in enumerate(t.labels) if start in lab]
        while stack:
            k = stack.pop()
            if side.setdefault(k, mark) != mark:
                return None
            for x in t.labels[k]:
                if x not in t.out:
                    stack.extend(j for j, lab in enumerate(t.labels) if x in lab and j not in side)
    if not any(m == "q" for m in side.values()):
        return None
    groups = {"p": [], "q": []}
    for k in range(len(t.operands)):
        groups[side.get(k, "p")].append(k)
    return tuple(Contract(tuple(t.operands[k] for k in groups[m]),
                          tuple(t.labels[k] for k in groups[m]), (x,))
                 for m, x in (("p", p), ("q", q)))


def _sums_of_inverses(order, roots, inlined, args: dict) -> dict:
    """The sums of inverses ((S + λI)⁻¹ − (S + VSVᵀ)⁻¹, X⁻¹ + X⁻ᵀ: matrices), with outer
    products beside them or not (V⁻¹ − V⁻¹ssᵀV⁻¹, a Gaussian's gradient by Σ), that only
    products of two factors or more read and no product is distributed over: sum node →
    [(coefficient, the Inv node or the outer product's (u, v) nodes, "inverse", "transposed"
    or "outer")].  Each product applies such a sum as a sum of solves (``_sum_of_solves``),
    so its inverses are never formed — also where one product reads it twice (yᵀUSUy),
    which distributing would make four products, or where a Hadamard product inside it
    would make distributing repeat its other products."""
    readers = _readers(order)
    out = {}
    for n in order:
        if not isinstance(n, Sum) or n.ndim != 2 or n in roots or n in inlined or n in args or \
                len(n.terms) < 2:
            continue
        terms = []
        for c, t in n.terms:
            if isinstance(t, Inv):
                terms.append((c, t, "inverse"))
            elif _is_transpose(t) and isinstance(t.operands[0], Inv):
                terms.append((c, t.operands[0], "transposed"))
            elif (outer := _outer_factors(t)) is not None:
                terms.append((c, outer, "outer"))
            else:
                break
        else:
            rs = readers.get(n, [])
            if rs and all(isinstance(r, Contract) and len(r.operands) > 1 for r in rs) and \
                    any(kind != "outer" for _, _, kind in terms):
                out[n] = terms
    return out


def _right_side(w: _Writer, b: str, lb: tuple, summed) -> tuple:
    """b as the right-hand side of a solve over its label ``summed``: (its code, and for a
    tensor of 3 labels or more, the name of b with that label first, whose shape the
    solution takes back; else None)."""
    if len(lb) <= 2:
        return (b if lb[0] == summed else f"{b}.T"), None
    k = lb.index(summed)
    wide = w.emit(b if k == 0 else f"np.moveaxis({b}, {k}, 0)")
    return f"{wide}.reshape({wide}.shape[0], -1)", wide


def _pinv_step(w: _Writer, a: str, la: tuple, b: str, lb: tuple, keep: tuple):
    """Σ (X⁺)_pq b_q… as V(Σ⁻¹(Uᵀb)) from X's thin SVD (or X⁺ᵀb = U(Σ⁻¹(Vᵀb)), summing
    over p): with b in X's range this is as accurate as a least-squares solve, where the
    product with a formed X⁺ loses what its large entries cancel."""
    if len(la) != 2 or la[0] == la[1]:
        return None
    f = w.pinvs[a]
    p, q = la
    for summed, other, trans in ((q, p, 0), (p, q, 1)):
        if summed in keep or lb.count(summed) != 1:
            continue
        rhs, wide = _right_side(w, b, lb, summed)
        s = f"{f}[1]" if len(lb) == 1 else f"{f}[1][:, None]"
        code = f"{f}[2].T @ (({f}[0].T @ {rhs}) / {s})" if not trans else \
            f"{f}[0] @ (({f}[2] @ {rhs}) / {s})"
        if wide is not None:  # X⁺ is k × n: the solution's first axis is X⁺'s
            code = f"{w.emit(code)}.reshape((-1,) + {wide}.shape[1:])"
        return w.emit(code), (other,) + tuple(y for y in lb if y != summed)
    return None


def _cho_factor(w: _Writer, s: Node, x: str) -> str:
    """S's Cholesky factorisation (``x`` its name) as the backend's solves take it: where the
    results also hold chol(S), from the L that line computes (written here or there first,
    the same line), so that S is factorised once."""
    if s in w.cholesky:
        lower = w.emit(f"np.linalg.cholesky({x})", _comment(w.cholesky[s]))
        return w.emit(w.cho[4].format(lower))
    return w.emit(w.cho[0].format(x), f"Cholesky of {_comment(s)}")


def _from_lu(w: _Writer, n: Inv | LogDet, args: dict) -> str:
    """log |det X| as Σ log |Uᵢᵢ| of X's LU factorisation, and X⁻¹ from the same factors
    (LAPACK's getri in NumPy, or getrs for I past n ≈ 560 where that is faster; JAX and
    PyTorch solve for I with the factors, a third faster than their inverse's second LU)."""
    x = args[n.arg]
    if w.cho is not None and n.arg in w.spd:  # S = LLᵀ: log det S = 2 Σ log Lᵢᵢ, S⁻¹ from L
        factor = _cho_factor(w, n.arg, x)
        return w.cho[3].format(factor) if isinstance(n, LogDet) else w.cho[2].format(factor, x)
    factor = w.emit(w.lu[0].format(x), f"LU of {_comment(n.arg)}")
    if isinstance(n, LogDet):
        return f"np.log(np.abs(np.diagonal({factor}[0]))).sum()"
    return w.functions["__lu_inverse"].format(factor, x)


def _inverse_sums(w: _Writer, ops: list, labs: list, out) -> None:
    """An inverse summed over a label no other factor holds (1ᵀX⁻¹, X⁻¹1: a ones vector the
    labels merged away) as a solve with ones, in place in ``ops`` and ``labs``."""
    for k, (a, la) in enumerate(zip(ops, labs)):
        if a not in w.inverses or len(la) != 2 or la[0] == la[1]:
            continue
        others = {x for j, lab in enumerate(labs) if j != k for x in lab} | set(out)
        for summed, kept in ((la[1], la[0]), (la[0], la[1])):
            if summed not in others:
                x = w.inverses[a][0]
                ones = f"np.ones({x}.shape[0])"
                solved = _solve_step(w, a, la, ones, (summed,), (kept,))
                if solved:
                    ops[k], labs[k] = solved
                break


def _integer_power(n: Node) -> int | None:
    """k, where n is the matrix function Sᵏ of a small nonzero integer k (S⁻¹, S², S³)."""
    if isinstance(n, MatFn) and n.fn.builtin and n.fn.name == "pow" and n.fn.param is not None:
        k = float(n.fn.param)
        if k.is_integer() and 0 < abs(k) <= 8:
            return int(k)
    return None


def _rational_functions(roots: list) -> list:
    """A matrix function of S that is an integer power (∇Σ log λᵢ(S) = S⁻¹, ∇Σλᵢ³ = 3S²) as
    products of S or of its inverse, not through eigh: an inverse that products then read as
    solves, or a few matrix products, instead of a symmetric eigendecomposition."""
    if not any(_integer_power(n) is not None for n in walk(*roots)):
        return roots
    from .library import matrix_power

    def product(m: Node) -> Node:
        k = _integer_power(m)
        return simplify(matrix_power(Expr(m.arg), k).node) if k is not None else m
    return [rewrite(r, product) for r in roots]


def _has_scipy() -> bool:
    import importlib.util

    return importlib.util.find_spec("scipy") is not None


def _is_gram(la: tuple, lb: tuple, keep: tuple) -> bool:
    """Whether one matrix times itself over these labels is ZᵀZ or ZZᵀ (symmetric): the
    one summed label stands at the same axis in both."""
    summed = [x for x in la if x not in keep]
    return len(la) == len(lb) == len(keep) == 2 and len(summed) == 1 and \
        summed[0] in lb and la.index(summed[0]) == lb.index(summed[0])


def _solvable(la: tuple, lb: tuple, keep: tuple) -> bool:
    """Whether a step of an inverse (labels ``la``) and b is a solve (``_solve_step``): b
    holding once a label of the inverse that the step sums."""
    return len(la) == 2 and la[0] != la[1] and \
        any(q not in keep and lb.count(q) == 1 for q in la)


EXACT_LIMIT = 8  # products of up to this many factors are also ordered exactly (3ᵏ subsets)


def _steps(labs: list, out, size: dict, inverses=frozenset()) -> list:
    """The pairwise steps of a product (``_pair_steps``' form): the greedy order, or, for a
    product of 3 to ``EXACT_LIMIT`` factors with no inverse among them (whose steps the greedy
    order keeps solvable), the cheapest order where it costs less than two thirds of the
    greedy one (``_cheapest_steps``).  The greedy order is optimal on all but one product of
    the derivative table; it misses where a step that is cheap now leaves an expensive one:
    ab·ac·bd·ce → abde… builds a 4-index result from two 3-index ones (n⁵) where summing one
    label first costs n⁴ (benchmarks/plan_order.py)."""
    greedy = list(_pair_steps(labs, out, size, inverses))
    if inverses or not 3 <= len(labs) <= EXACT_LIMIT or \
            any(len(set(lab)) != len(lab) for lab in labs):
        return greedy
    best = _cheapest_steps(labs, out, size)
    return best if 3 * sum(c for *_, c in best) < 2 * sum(c for *_, c in greedy) else greedy


def _cheapest_steps(labs: list, out, size: dict) -> list:
    """The pairwise steps of least total multiply-adds (each step: the product of the sizes
    of the labels its two factors hold), by dynamic programming over subsets of factors;
    each step's result keeps the labels that the output or a factor outside it holds."""
    k, outs = len(labs), set(out)
    sets = [frozenset(lab) for lab in labs]
    full = (1 << k) - 1
    held = {0: frozenset()}
    for mask in range(1, full + 1):
        low = mask & -mask
        held[mask] = held[mask ^ low] | sets[low.bit_length() - 1]
    keeps = {mask: frozenset(x for x in held[mask] if x in outs or x in held[full ^ mask])
             for mask in range(1, full + 1)}

    best: dict = {1 << i: (0.0, None) for i in range(k)}
    for mask in sorted(range(1, full + 1), key=lambda m: bin(m).count("1")):
        if mask in best:
            continue
        choice = None
        sub = (mask - 1) & mask
        while sub:
            other = mask ^ sub
            if sub < other:  # each split once
                cost = best[sub][0] + best[other][0] + math.prod(size[x] for x in keeps[sub] | keeps[other])
                if choice is None or cost < choice[0]:
                    choice = (cost, (sub, other))
            sub = (sub - 1) & mask
        best[mask] = choice
    steps, current = [], [1 << i for i in range(k)]  # the caller's list, as masks
    labels = {1 << i: tuple(lab) for i, lab in enumerate(labs)}  # each item's axes, in order

    def emit(mask) -> None:
        split = best[mask][1]
        if split is None:
            return
        for part in split:
            emit(part)
        i, j = sorted(current.index(part) for part in split)
        first, second = current[i], current[j]
        keep = tuple(x for x in dict.fromkeys(labels[first] + labels[second]) if x in keeps[mask])
        keep = _read_order(keep, [labels[m] for m in current if m not in split], out)
        steps.append((i, j, keep, math.prod(size[x] for x in set(labels[first]) | set(labels[second]))))
        labels[mask] = keep
        current.pop(j)
        current.pop(i)
        current.append(mask)

    emit(full)
    return steps


def _pair_steps(labs: list, out, size: dict, inverses=frozenset()):
    """The pairs a plan multiplies, step by step: (i, j, the labels the result keeps, the
    step's multiply-adds), i < j positions in the caller's list, which drops i and j and
    appends the result after each step.  Each time the pair that shares a label (if any
    does), then whose result is smallest, then one that is not an inverse (a position in
    ``inverses``) met where it cannot be solved with — X⁻¹ scaled by a vector (its label
    kept) or beside another inverse, one would be formed, where X⁻¹ times another factor
    is a solve — then cheapest, the first in list order on ties.
    Candidate pairs live in a heap and only those next to a merge are re-scored, so a
    product of k factors is planned in O(k log k), not O(k³)."""
    outs, labs = set(out), {k: tuple(lab) for k, lab in enumerate(labs)}
    sets = {k: set(lab) for k, lab in labs.items()}
    holders: dict = {}
    for k, lab in sets.items():
        for x in lab:
            holders.setdefault(x, set()).add(k)
    order, stamp, heap = list(labs), dict.fromkeys(labs, 0), []

    def score(i, j):
        keep = tuple(dict.fromkeys(  # a label stays if the output or a third factor holds it
            x for x in labs[i] + labs[j]
            if x in outs or len(holders[x]) > (x in sets[i]) + (x in sets[j])))
        cost = math.prod(size[x] for x in sets[i] | sets[j])
        formed = i in inverses and j in inverses or \
            any(a in inverses and not _solvable(labs[a], labs[b], keep) for a, b in ((i, j), (j, i)))
        return (sets[i].isdisjoint(sets[j]), math.prod(size[x] for x in keep), formed, cost), keep, cost

    def push_neighbours(a):
        for x in sets[a]:
            for b in holders[x]:
                if b != a:
                    i, j = min(a, b), max(a, b)
                    key, keep, cost = score(i, j)
                    heapq.heappush(heap, (key, i, j, stamp[i], stamp[j], keep, cost))

    for k in labs:
        push_neighbours(k)
    fresh = len(labs)
    while len(order) > 1:
        while heap and not (heap[0][1] in stamp and heap[0][2] in stamp and
                            stamp[heap[0][1]] == heap[0][3] and stamp[heap[0][2]] == heap[0][4]):
            heapq.heappop(heap)
        if heap:
            _, i, j, _, _, keep, cost = heapq.heappop(heap)
        else:  # no two factors share a label: every pair is a candidate
            _, i, j = min((score(i, j)[0], i, j) for n, i in enumerate(order) for j in order[n + 1:])
            _, keep, cost = score(i, j)
        keep = _read_order(keep, [labs[k] for k in order if k not in (i, j)], out)
        yield order.index(i), order.index(j), keep, cost
        changed = sets[i] | sets[j]
        for k in (i, j):
            order.remove(k)
            del stamp[k]
            for x in sets.pop(k):
                holders[x].discard(k)
        labs[fresh], sets[fresh], stamp[fresh] = keep, set(keep), 0
        order.append(fresh)
        for x in keep:
            holders[x].add(fresh)
        affected = set().union(*(holders[x] for x in changed))
        for a in affected:
            stamp[a] += 1
        for a in affected:
            push_neighbours(a)
        fresh += 1


def _read_order(keep: tuple, others: list, out) -> tuple:
    """The labels of a step's result in the order its reader holds them: the other factor
    that holds them all (then the result is read contiguously: (σ(XW)W₂ − Y)W₂ᵀ ⊙ P as
    R @ W2.T, not the transpose of W2 @ R.T, which a Hadamard product reads strided), else
    the output's order, else as the step found them."""
    kept = set(keep)
    for lab in others:
        if kept <= set(lab) and len(set(lab)) == len(lab):
            return tuple(x for x in lab if x in kept)
    if kept <= set(out):
        return tuple(x for x in out if x in kept)
    return keep


def _flops(n: Contract, size_hint: dict) -> float:
    """Multiply-adds of a product as ``_plan`` orders it (deltas merged away), plus the
    entries of its result."""
    kept, _, uniq, _ = merge_deltas(n)
    labs = [tuple(lab) for _, lab in kept]
    size = {x: _size(d, size_hint) for x, d in n.label_dims().items()}
    total = 0.0
    inverses = {k for k, (op, _) in enumerate(kept) if isinstance(op, Inv)}  # as _plan orders them
    for i, j, keep, cost in _steps(labs, uniq, size, inverses):
        labs = [lab for k, lab in enumerate(labs) if k not in (i, j)] + [keep]
        total += cost
    return total + (np.prod([size[x] for x in labs[0]]) if labs else 0.0)


NONNEGATIVE = {"exp", "sigmoid", "softplus", "abs", "relu", "step", "sqrt"}


def _nonnegative(n: Node) -> bool:
    """Whether every entry of n is ≥ 0 for all inputs (a sufficient test, by structure)."""
    if isinstance(n, Delta):
        return True
    if isinstance(n, Const):
        return n.value >= 0
    if isinstance(n, Elementwise) and n.fn.builtin:
        if n.fn.name == "pow":
            p = n.fn.param
            return (float(p).is_integer() and p % 2 == 0) or _nonnegative(n.arg)
        return n.fn.name in NONNEGATIVE
    if isinstance(n, Contract):
        return all(_nonnegative(o) for o in n.operands)
    if isinstance(n, Sum):
        if all(c >= 0 and _nonnegative(t) for c, t in n.terms):
            return True
        if len(n.terms) == 2:  # c(1 − σ): σ ≤ 1
            (c1, t1), (c2, t2) = sorted(n.terms, key=lambda p: p[0], reverse=True)
            return c1 > 0 and c2 == -c1 and is_ones(t1) and isinstance(t2, Elementwise) and \
                t2.fn.builtin and t2.fn.name == "sigmoid"
    return False


def _weighted_gram(w: _Writer, kept, ops: list, labs: list, out) -> None:
    """Σ_p X_pi d_p X_pk with d ≥ 0 (the Hessian of a logistic loss, Xᵀdiag(d)X): written
    Z = √d ⊙ X, then ZᵀZ, which NumPy computes as a symmetric rank-k update in half the
    time of Xᵀ(d ⊙ X). p must stand at the same axis of both factors: X diag(d) X (S⁻¹
    diag(σ) S⁻¹ in a derivative) is not a Gram matrix."""
    n = len(ops)
    for i in range(n):
        for k in range(i + 1, n):
            if kept[i][0] is not kept[k][0] or len(labs[i]) != 2 or _solvable_with(w, ops[i]):
                continue  # X⁻ᵀdiag(d)X⁻¹ is solved with, never formed for its Gram matrix
            shared = set(labs[i]) & set(labs[k])
            if len(shared) != 1 or shared & set(out) or len(set(labs[i] + labs[k])) != 3:
                continue
            p = next(iter(shared))
            if labs[i].index(p) != labs[k].index(p):  # X diag(d) X, not Xᵀdiag(d)X: √d would
                continue  # scale X's columns where it is read for its rows
            weights = [j for j in range(n) if j not in (i, k) and p in labs[j]]
            if not weights or any(tuple(labs[j]) != (p,) or not _nonnegative(kept[j][0])
                                  for j in weights):  # M_pp is no weight vector: diag(diag(M))
                continue
            root = w.emit(f"np.sqrt({' * '.join(ops[j] for j in weights)})")
            z = w.emit(_pairwise(w, ops[i], labs[i], root, (p,), labs[i]))
            ops[i] = ops[k] = z
            labs[k] = tuple(p if x == p else x for x in labs[k])
            for j in sorted(weights, reverse=True):
                del ops[j], labs[j], kept[j]
            return


def _size(d, hint: dict) -> int:
    """A dim's size: from ``sizes`` given to codegen, else 100 for each unknown factor."""
    return int(np.prod([f if isinstance(f, int) else hint.get(f, 100) for f in D.factors(d)]))


def _sizes(w: _Writer, dim: dict) -> dict:
    """Each label's size (see ``_size``)."""
    return {x: _size(d, w.hint) for x, d in dim.items()}


def _gram(w: _Writer, ops: list, labs: list, out, dim) -> None:
    """Where the factors carrying a summed label p hold one product twice with other free
    labels (X_pi σ_pj and X_pk σ_pl), form it once as Z_pij: the sum over p of Z_pij Z_pkl
    is then a Gram matrix ZᵀZ, which NumPy computes as a symmetric rank-k update in half
    the time of a general product."""
    n = len(ops)
    for i, k in ((i, k) for i in range(n) for k in range(n) if i != k and ops[i] == ops[k]):
        shared = set(labs[i]) & set(labs[k]) - set(out)
        if not shared:
            continue
        g1, g2, rename = [i], [k], dict(zip(labs[i], labs[k]))
        grown = True
        while grown:
            grown = False
            for a in range(n):
                if a in g1 or a in g2 or not set(labs[a]) & shared:  # Z_p… holds p's factors
                    continue
                for b in range(n):
                    if b in g1 or b in g2 or b == a or ops[b] != ops[a]:
                        continue
                    trial = dict(rename)
                    if all(trial.setdefault(x, y) == y for x, y in zip(labs[a], labs[b])):
                        g1.append(a), g2.append(b)
                        rename, grown = trial, True
                        break
        if len(g1) < 2 or len(set(rename.values())) != len(rename):
            continue
        codes = []
        for g in (g1, g2):
            rest = {x for c, lab in enumerate(labs) if c not in g for x in lab} | set(out)
            keep = tuple(x for x in dict.fromkeys(x for c in g for x in labs[c]) if x in rest)
            codes.append((_plan(w, [ops[c] for c in g], [labs[c] for c in g], keep, dim,
                                gram=False), keep))
        if codes[0][0] != codes[1][0] or not shared <= set(codes[0][1]):
            continue  # lines written for the attempt are dropped as unused
        name = w.emit(codes[0][0])
        for c in sorted(g1 + g2, reverse=True):
            del ops[c], labs[c]
        ops.extend([name, name])
        labs.extend([codes[0][1], codes[1][1]])
        return


def _is_spread(n: Node) -> bool:
    """Whether n is a product whose output is itself diagonal (δ_jl D_ijk), lowered by
    ``_spread`` as zeros with its entries written on the diagonal."""
    if not isinstance(n, Contract):
        return False
    _, out, uniq, _ = merge_deltas(n)
    return len(uniq) < len(out)


def _folded_spreads(order, roots, uses, inlined, common) -> set:
    """Diagonal outputs (``_is_spread``) used once, by a sum whose other terms make a new
    array (two or more of them, or one scaled, as written: −ZᵀZ, never a bare name): the sum adds
    their entries onto that array in place (``_sum_onto``), rather than writing them into
    zeros and adding the dense terms in one more pass over the whole output (the softmax
    cross-entropy's Hessian δ_jl D − ZᵀZ is −ZᵀZ, then D added on its diagonal)."""
    out = set()
    for n in order:
        if not isinstance(n, Sum) or n in inlined or len(n.terms) < 2:
            continue
        spreads = {t for _, t in n.terms if _is_spread(t) and uses.get(t) == 1 and t not in roots
                   and not any(o in inlined for o in t.operands)}
        rest = [c / common.get(n, 1.0) for c, t in n.terms if t not in spreads]
        others = [t for _, t in n.terms if t not in spreads]
        # one unscaled term is a new array where it is a product of two or more factors that
        # only this sum reads (λI + MᵀM: MᵀM, then λ added on its diagonal); a bare name is not
        fresh = len(others) == 1 and isinstance(others[0], Contract) and _new_array(others[0]) \
            and uses.get(others[0]) == 1 and others[0] not in roots and others[0] not in inlined
        if spreads and (len(rest) >= 2 or (len(rest) == 1 and (rest[0] != 1.0 or fresh))):
            out |= spreads
    return out


def _new_array(t: Contract) -> bool:
    """Whether a product's code makes a new, writable array: two or more factors once its
    deltas merge, and no label that only a ones vector carries (np.broadcast_to is a view)."""
    kept, _, uniq, _ = merge_deltas(t)
    carried = {x for _, lab in kept for x in lab}
    return len(kept) >= 2 and all(x in carried for x in uniq)


def _sum_text(codes: list, coefs: list) -> str:
    """Σ c_k · code_k, a coefficient that all terms share written once: 2.0 * (a - b), and
    a positive term first: a - b, not -b + a."""
    if coefs[0] < 0 and any(c > 0 for c in coefs):
        first = next(i for i, c in enumerate(coefs) if c > 0)
        codes = [codes[first]] + codes[:first] + codes[first + 1:]
        coefs = [coefs[first]] + coefs[:first] + coefs[first + 1:]
    k = abs(coefs[0])
    common = len(coefs) > 1 and k != 1 and all(abs(c) == k for c in coefs)
    if common:
        coefs = [c / k for c in coefs]
    parts = [a if c == 1 else _scaled(c, a) for a, c in zip(codes, coefs)]
    text = " + ".join(parts).replace("+ -", "- ")
    return f"{k!r} * ({text})" if common else text


def _readers(order) -> dict:
    """node -> the nodes of ``order`` that read it (each reader once)."""
    readers: dict = {}
    for n in order:
        for c in set(n.children):
            readers.setdefault(c, []).append(n)
    return readers


def _uses(order) -> dict:
    uses: dict = {}
    for n in order:
        for c in set(n.children):
            uses[c] = uses.get(c, 0) + 1
    return uses


def _scaled_products(order, roots, uses) -> dict:
    """Products used once, by a scaling c·(…): the scaling is applied where it costs least,
    to the smallest factor or to a diagonal output's entries, not to the whole result."""
    out = {}
    for n in order:
        if isinstance(n, Sum) and len(n.terms) == 1:
            c, t = n.terms[0]
            if isinstance(t, Contract) and uses.get(t) == 1 and t not in roots and t.operands:
                out[t] = n
    return out


def _common_factors(order, roots, uses, inlined) -> dict:
    """Sums whose terms share one coefficient, used once, by a product: the product applies
    the coefficient where it costs least (2(UVᵀ − T)V scales the m × r result, not m × n)."""
    out = {}
    for n in order:
        if not isinstance(n, Contract):
            continue
        for op in n.operands:
            if isinstance(op, Sum) and len(op.terms) > 1 and uses.get(op) == 1 and op not in roots \
                    and op not in inlined and abs(op.terms[0][0]) != 1 and \
                    all(abs(c) == abs(op.terms[0][0]) for c, _ in op.terms):
                out[op] = abs(op.terms[0][0])
    return out


def _inline(code: str) -> str:
    return f"({code})" if " " in code else code


def _distributed_sums(order, roots, uses, known, hint: dict, transposes: bool = False) -> set:
    """Sums used once, by a product, that the product is cheaper distributed over: (A + Aᵀ)x
    as Ax + Aᵀx never builds the n × n sum, and (UVᵀ − T)V as U(VᵀV) − TV never builds
    the m × n one (multiply-adds counted for ``hint``'s sizes).  With ``transposes`` (the
    JAX backend) also every matrix sum holding a transpose, times matrices: XLA on the CPU
    builds A + Aᵀ slowly (a strided copy), while its products read Aᵀ for free."""
    out = set()
    readers = _readers(order)
    multiplied = _only_multiplied_inverses(readers)
    solved = multiplied | {c for c, rs in readers.items() if isinstance(c, Inv) and c.ndim == 2 and
                           all(isinstance(r, Contract) and len(r.operands) > 1 for r in rs)}
    for n in order:
        if not isinstance(n, Contract):
            continue
        for k, op in enumerate(n.operands):
            others = [o for o in n.operands if o is not op]
            if not (isinstance(op, Sum) and op.ndim >= 2 and uses.get(op) == 1 and
                    op not in roots and len(op.terms) > 1 and others and
                    n.operands.count(op) == 1):  # (yᵀSv)² holds S twice: not distributed
                if _solved_in_every_product(op, readers, roots, multiplied):
                    out.add(op)
                continue
            if all(o.ndim <= 1 for o in others) or \
                    (transposes and any(_is_transpose(t) for _, t in op.terms)) or \
                    _cheaper_distributed(n, k, known, uses, roots, hint, multiplied, solved):
                out.add(op)
                break
    return out


def _solved_in_every_product(op, readers: dict, roots, multiplied) -> bool:
    """A sum of inverses (X⁻ᵀ + X⁻¹: X not known symmetric) that two or more products read,
    each holding it once: distributed over every one of them, the inverse is only solved
    with, where forming the sum would form it."""
    rs = readers.get(op, [])
    return isinstance(op, Sum) and op.ndim == 2 and op not in roots and len(rs) > 1 and \
        any(t in multiplied for _, t in op.terms) and \
        all(isinstance(r, Contract) and r.operands.count(op) == 1 and len(r.operands) > 1 for r in rs)


def _only_multiplied_inverses(readers: dict) -> set:
    """Inverses (matrices) and their transposes that products read and at most one sum:
    distributed over that sum's product, each is then only multiplied, so solved with and
    never formed (X⁻ᵀ as X⁻¹: products solve with either).  ``readers``: node -> its readers."""
    return {c for c, rs in readers.items()
            if (isinstance(c, Inv) and c.ndim == 2 or _is_transpose(c) and isinstance(c.operands[0], Inv))
            and sum(isinstance(r, Sum) for r in rs) == 1 and all(isinstance(r, (Sum, Contract)) for r in rs)}


def _cheaper_distributed(n: Contract, k: int, known, uses, roots, hint, multiplied=frozenset(),
                         solved=frozenset()) -> bool:
    """Whether n, distributed over its k-th factor (a sum), costs less than four fifths of
    forming the sum and then n; or no more than five fourths of it, where a term is an
    inverse that only this sum and products read (X(S⁻¹ − uuᵀ)ᵀ as XS⁻ᵀ − (Xu)uᵀ: S⁻¹ is
    then never formed, each product with it a solve, which is also the more accurate, so
    a near tie goes to the solves; ``multiplied``, from ``_only_multiplied_inverses``).  A
    term whose product is an inverse itself, (c1 − I)L⁻ᵀ's I·L⁻ᵀ, costs that inverse where
    it is otherwise only solved with (``solved``): distributing would form it."""
    s = n.operands[k]

    def alone(t) -> float:  # a term's own product, computed only for this sum
        return _flops(t, hint) if isinstance(t, Contract) and uses.get(t) == 1 and \
            t not in roots else 0.0

    inverses = [t for _, t in s.terms if t in multiplied and t not in roots]
    fused = _flops(n, hint) + len(s.terms) * _size_of_shape(s.shape, hint)
    fused += sum(alone(t) for _, t in s.terms)
    fused += sum(2 * _size_of_shape(t.shape, hint) * _size(t.shape[0], hint) for t in inverses)
    split = (len(s.terms) - 1) * _size_of_shape(n.shape, hint)
    for _, t in s.terms:
        node = _term_product(n, k, t, known)
        split += _flops(node, hint) + (alone(t) if t in node.operands else 0.0)
        bare = node.operands[0] if _is_transpose(node) else node
        if bare in solved and bare is not t:
            split += 2 * _size_of_shape(bare.shape, hint) * _size(bare.shape[0], hint)
    return split <= 1.25 * fused if inverses else split < 0.8 * fused


def _size_of_shape(shape, hint: dict) -> float:
    return float(np.prod([_size(d, hint) for d in shape]))


def _term_product(n: Contract, k: int, term: Node, known) -> Contract:
    """n with its k-th factor replaced by ``term``, simplified (a transposed or product
    term is read in place: x @ A, not A.T then @ x; U(VᵀV), not (UVᵀ)V) where every factor of
    the simplified product is among the ``known`` (computed) nodes."""
    labels = n.labels
    if _is_transpose(term) and isinstance(term.operands[0], Inv):  # X⁻ᵀ as X⁻¹, labels swapped:
        axis = dict(zip(term.out, labels[k]))  # the product solves with X
        labels = labels[:k] + (tuple(axis[x] for x in term.labels[0]),) + labels[k + 1:]
        term = term.operands[0]
    raw = Contract(n.operands[:k] + (term,) + n.operands[k + 1:], labels, n.out)
    node = simplify(raw)
    if isinstance(node, Contract) and all(o in known or isinstance(o, Delta)
                                          for o in node.operands):
        return node
    return raw


def _is_transpose(n: Node) -> bool:
    return isinstance(n, Contract) and len(n.operands) == 1 and tuple(n.labels[0]) != tuple(n.out)


def _product(w: _Writer, n: Contract, args: dict, size_of, coef: float = 1.0) -> str:
    """The code of a product scaled by ``coef``, whichever rewrites apply to it: the one
    path every product is lowered by, so that none of them drops a coefficient."""
    inlined = [(k, op) for k, op in enumerate(n.operands) if op in w.inlined]
    if not inlined:
        return _contract(w, n, args, size_of, coef)
    (k, s), = inlined[:1]  # distributed over its sum: Σ cₜ·(n with t in the sum's place),
    # each term's product flattened where its factors are computed or distributed in turn
    # (tr(V⁻ᵀV⁻¹(SUyyᵀ)) as yᵀUᵀSV⁻ᵀV⁻¹y, never the outer product, where U is a sum distributed)
    known = args.keys() | w.inlined
    codes = [_product(w, _term_product(n, k, t, known), args, size_of) for _, t in s.terms]
    return _sum_text([_inline(c) if " + " in c or " - " in c else c for c in codes],
                     [coef * c for c, _ in s.terms])
