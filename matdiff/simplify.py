"""Simplification to a normal form: one normaliser per node type, run bottom-up once.

What the normal form guarantees (each rule is named in the code where it acts):
- contractions are flattened into their parent while that keeps the parent small,
  so deltas meet the operands they act on and chains of transposes vanish;
- Kronecker deltas and identities are removed by merging the labels they tie;
- scalar constants and coefficients are pulled out of products into sums;
- sums are flat, like terms are merged (x + x → 2x), zeros dropped, and terms that differ
  in one factor are factored (Bx + Bᵀx → (B + Bᵀ)x);
- operands and labels are in a canonical order, so equal contractions are the same node.

Results never grow without bound: a contraction is only flattened into its parent when
the merged product has at most ``FLATTEN_LIMIT`` factors (or when it carries a delta that
the merge removes), so shared adjoints in deep networks stay shared.
"""
from __future__ import annotations

import collections
import functools
import itertools
import math
import operator
import weakref

import numpy as np

from . import build as B
from . import dims as D
from . import functions as F
from .errors import MatdiffError
from .ir import (Basis, Const, Contract, Delta, DivDiff, DivDiff3, Eigh, Elementwise, Frechet, Funm, Hole,
                 Inv, Phi, LogSumExp, MatFn, Node, Reshape, Softmax, Sum, Svd, Var, contract_key, free_vars,
                 is_ones, walk)

FLATTEN_LIMIT = 6


def simplify(root: Node) -> Node:
    """The normal form of ``root``; memoised on each node, so shared subgraphs cost once."""
    if root._simple is not None:
        return root._simple
    stack = [root]
    while stack:
        n = stack[-1]
        if n._simple is not None:
            stack.pop()
            continue
        kids = n.children
        if not kids and type(n) not in NORMALISE:  # a leaf: a variable, delta, constant, hole
            n._simple = n
            stack.pop()
            continue
        simple = [c._simple for c in kids]
        if None in simple:  # (nodes compare by identity)
            stack.extend([c for c in kids if c._simple is None])
            continue
        stack.pop()
        # the same operands build the same node (hash-consing): n itself, without the look-up;
        # a product of simplified operands has its shape (a normal form keeps the shape)
        rebuilt = n if all(map(operator.is_, simple, kids)) else \
            Contract.of_shape(tuple(simple), n.labels, n.out, n.shape) if type(n) is Contract else \
            n.with_children(simple)
        out = rebuilt._simple or NORMALISE.get(type(rebuilt), _keep)(rebuilt)
        n._simple = rebuilt._simple = out
        out._simple = out
    return root._simple


def _keep(n):
    return n


def keeps_variables(root: Node, memo: dict) -> bool:
    """Whether ``simplify(root)`` surely reads every variable root reads, decided without
    simplifying (``memo``: the answers, kept by the caller for one pass).  So it is where
    root is a product of variables, inverses of variables and deltas, products of them nested
    in it (no variable both a factor and inverted, so that none cancels another), an
    entry-wise function of such a product, or that function summed along axes (deltas times
    the one factor): the normalisers flatten, merge deltas, write x ⊙ x as x², order the
    factors and write √u as u^½, and the rewrites that drop a factor (X⁻¹X = I, x ⊙ x⁻¹ = 1,
    like terms cancelling, f(1) and f(c) evaluated) need a factor of another kind or X beside
    X⁻¹.  Beyond those, ``_kept_sums`` admits sums whose terms read different sets of
    variables, and entry-wise functions and powers among the factors.  Differentiation asks
    it before simplifying a node to learn whether the node depends on x (``diff._depends``)."""
    kind = type(root)
    if kind is Elementwise:
        if _kept(root.arg, memo):
            return True
    elif kind is Contract:
        if _kept(root, memo):
            return True
        others = [op for op in root.operands if type(op) is not Delta]
        if len(others) == 1 and type(others[0]) is Elementwise and _kept(others[0].arg, memo):
            return True
    elif kind is Var or kind is Hole or kind is Inv and type(root.arg) is Var:
        return True
    return (kind is Sum or kind is Contract or kind is Elementwise) and \
        _kept_sums(root, memo.setdefault(_kept_sums, {}), 0) is not None


_KEPT_DEPTH = 24  # _kept_sums looks no deeper (the iterative _kept answers for deep products)


def _kept_sums(n: Node, memo: dict, depth: int):
    """``keeps_variables`` for sums, entry-wise functions and powers: None where simplify(n)
    may drop a variable n reads, else (whether n's normal form may be a sum of several
    terms, whether a delta is among n's factors or terms).  It keeps them where

    - n is a variable, a hole, a delta or the inverse of a variable;
    - n = f(u) entry by entry, u kept and reading a variable, a power's exponent not 0;
    - n = Σ cₖ tₖ, each cₖ ≠ 0 and each tₖ kept, no sum or constant and never a sum of
      several terms, the terms' variable sets not empty and all different: like terms
      merge and factored terms cancel only where their variables are one set;
    - n is a product of kept factors, no sum among them holding a delta (so no factor is
      distributed over a sum and no centred sum cancels), and among its factors (nested
      products opened) no variable also inverted (X⁻¹X = I) and no entry-wise function
      reading a variable another factor reads (x ⊙ x⁻¹ = 1)."""
    got = memo.get(n, False)
    if got is not False:
        return got
    if depth > _KEPT_DEPTH:
        return None
    kind = type(n)
    out = None
    if kind is Var or kind is Hole:
        out = (False, False)
    elif kind is Delta:
        out = (False, True)
    elif kind is Inv:
        out = (False, False) if type(n.arg) is Var else None
    elif kind is Elementwise:
        if not (_is_builtin(n, "pow") and n.fn.param == 0) and free_vars(n.arg) and \
                _kept_sums(n.arg, memo, depth + 1) is not None:
            out = (not n.fn.builtin or n.fn.name == "log", False)  # (log σ(u): maybe a sum)
    elif kind is Sum:
        seen, delta = set(), False
        for c, t in n.terms:
            if c == 0 or type(t) is Sum or type(t) is Const:
                break
            got = _kept_sums(t, memo, depth + 1)
            vs = free_vars(t)
            if got is None or got[0] or not vs or vs in seen:
                break
            seen.add(vs)
            delta = delta or got[1]
        else:
            out = (len(n.terms) > 1, delta) if n.terms else None
    elif kind is Contract:
        out = _kept_product(n, memo, depth)
    memo[n] = out
    return out


def _kept_product(n: Contract, memo: dict, depth: int):
    """``_kept_sums`` of a product."""
    several = delta = False
    for op in n.operands:
        got = _kept_sums(op, memo, depth + 1)
        if got is None or type(op) is Sum and got[1]:
            return None
        several = several or got[0] or type(op) is Sum
        delta = delta or got[1]
    plain, inverted, powers, stack = set(), set(), [], list(n.operands)
    while stack:  # the factors, nested products opened
        op = stack.pop()
        kind = type(op)
        if kind is Contract:
            stack.extend(op.operands)
        elif kind is Inv:
            inverted.add(op.arg)
        elif kind is Elementwise:
            powers.append(op)
        elif kind is not Delta:
            plain.add(op)
    # a variable inverted anywhere in one factor and read by another may cancel: X⁻¹X = I, and
    # inside a sum too, B⁻¹(2B) = 2I, B⁻¹(BA + BC) = A + C once the sum is factored
    factors = [*plain, *powers, *(Inv(v) for v in inverted)]
    hidden = memo.setdefault(_inverted_in, {})
    for op in factors:
        kind = type(op)
        inside = (op.arg,) if kind is Inv else () if kind is Var or kind is Hole else _inverted_in(op, hidden)
        if inside and any(q is not op and not free_vars(q).isdisjoint(inside) for q in factors):
            return None
    if powers:  # an entry-wise function's variables read by no other factor: no power of
        # it merges with another factor's (x ⊙ x⁻¹ = 1, √x ⊙ x^(−½) = 1)
        factors = list(plain) + list(inverted) + powers
        for p in powers:
            vs = free_vars(p)
            if any(q is not p and not vs.isdisjoint(free_vars(q)) for q in factors):
                return None
    return several, delta


def _inverted_in(n: Node, memo: dict) -> frozenset:
    """The variables whose inverse n holds somewhere (``memo``: answers kept for one pass)."""
    got = memo.get(n)
    if got is None:
        got = memo[n] = frozenset(m.arg for m in walk(n) if type(m) is Inv)
    return got


def _kept(root: Node, memo: dict) -> bool:
    """Whether root is a ``_product_of_variables`` in which no variable is both a factor
    and the argument of an inverse factor (X⁻¹X = I drops X)."""
    found = _product_of_variables(root, memo)
    if found is not _INVERTED:
        return found
    plain, inverted, stack, seen = set(), set(), [root], set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        kind = type(n)
        if kind is Contract:
            stack.extend(n.operands)
        elif kind is Inv:
            inverted.add(n.arg)
        else:
            plain.add(n)
    return plain.isdisjoint(inverted)


_INVERTED = 2  # _product_of_variables: such a product, with an inverse among its factors


def _product_of_variables(root: Node, memo: dict):
    """Whether root is a variable, the inverse of one, a delta, or a product of those and of
    such products: True, or ``_INVERTED`` where an inverse is among its factors."""
    stack = [root]
    while stack:  # iteratively: a chain of products may nest deeply
        n = stack[-1]
        if n in memo:
            stack.pop()
            continue
        kind = type(n)
        if kind is not Contract:
            memo[n] = kind is Var or kind is Hole or kind is Delta or \
                (_INVERTED if kind is Inv and type(n.arg) is Var else False)
            stack.pop()
            continue
        pending = [op for op in n.operands if op not in memo]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        found = [memo[op] for op in n.operands]
        memo[n] = all(found) and (_INVERTED if _INVERTED in found else True)
    return memo[root]


def _fresh(*label_lists) -> int:
    return max([lab for labs in label_lists for lab in labs] + [-1]) + 1


# --------------------------------------------------------------------------- contractions


_OPENED = frozenset((Const, Sum, Contract))  # factors normalise_contract's loop may open


def _flattenable(inner: Contract, outer_size: int) -> bool:
    return outer_size - 1 + len(inner.operands) <= FLATTEN_LIMIT or \
        any(type(o) is Delta for o in inner.operands)


def normalise_contract(c: Contract) -> Node:
    operands = c.operands
    kinds = set(map(type, operands))  # (none of these node types has a subclass)
    if Reshape in kinds:
        lifted = _lift_reshape(c)
        if lifted is not None:
            return lifted
    if Phi in kinds:
        moved = _mask_onto_matrix(c)
        if moved is not None:
            return normalise_contract(moved)
    coef = 1.0
    if kinds.isdisjoint(_OPENED):  # no factor to open: the factors as the loop below takes them
        ops, labs = list(operands[::-1]), list(c.labels[::-1])
    else:
        ops, labs = [], []
        kinds = None
    fresh = None  # the first label no factor uses, found when a nested product needs it
    work = list(zip(operands, c.labels)) if kinds is None else ()
    # the factors that stay factors (a number joins the coefficient), against FLATTEN_LIMIT
    size = len(operands) - sum(type(o) is Const for o in operands) if kinds is None else 0
    while work:
        op, lab = work.pop()
        kind = type(op)  # (none of these node types has a subclass)
        if kind is Const:  # c·(…) → coefficient
            coef *= op.value
        elif kind is Sum and len(op.terms) <= 1:
            if not op.terms:  # 0·(…) → 0
                return B.zeros(c.shape)
            k, t = op.terms[0]  # (k·A)B → k·(AB)
            coef *= k
            work.append((t, lab))
        elif kind is Contract and _flattenable(op, size):
            if size - 1 + len(op.operands) > FLATTEN_LIMIT:
                op = _deltas_apart(op)  # only the deltas join: the rest stays one shared factor
            # (A_ij B_jk)_ik C_kl → A_ij B_jk C_kl, the inner summed labels made fresh
            rename = dict(zip(op.out, lab))
            if fresh is None:
                fresh = _fresh(c.out, *c.labels)
            for inner_lab in {x for ls in op.labels for x in ls} - set(op.out):
                rename[inner_lab], fresh = fresh, fresh + 1
            get = rename.__getitem__
            work.extend([(o, tuple(map(get, ls))) for o, ls in zip(op.operands, op.labels)])
        else:
            ops.append(op)
            labs.append(tuple(lab))
    if coef == 0:
        return B.zeros(c.shape)
    if kinds is None:
        kinds = set(map(type, ops))  # each step below changes nothing without its node type
    k = _distributable(ops) if Sum in kinds else None
    if k is not None:  # (δ_iq P + Q)_jq R_q… → δ_iq P R_q… + Q R_q…: the delta meets R
        return simplify(B.linear(
            [(coef * w, Contract(tuple(ops[:k]) + (t,) + tuple(ops[k + 1:]), tuple(labs), c.out))
             for w, t in ops[k].terms], c.shape))
    if Sum in kinds or Contract in kinds:
        cancelled = _centred(ops, labs, coef, c)
        if cancelled is not None:
            return cancelled
    if Elementwise in kinds or len(set(zip(ops, labs))) < len(ops) or \
            Delta in kinds and any(type(op) is Delta and op.order == 1 for op in ops):
        # (deltas of order 2 or more alone, each factor once: nothing to merge or count)
        before = ops
        ops, labs = _merge_powers(ops, labs, c.out)  # (the one step that needs no node type)
        if ops is not before:
            kinds = set(map(type, ops))
    merged = False  # whether deltas tied labels together
    if not _STEP_KINDS.isdisjoint(kinds):
        for step, needs in _STEPS:
            if not needs.isdisjoint(kinds):
                before, before_labs = ops, labs
                ops, labs = step(ops, labs, c.out)
                if ops is not before:
                    kinds = set(map(type, ops))
                    merged = merged or step is _remove_deltas and \
                        collections.Counter(zip(ops, labs)) != collections.Counter(zip(before, before_labs))
    if merged and _opened_by_deltas(ops, labs):
        # the merged labels made two factors equal (σ_i σ_j δ_ij → σ_i², merged as σ²), an
        # inverse meet its matrix (X_ij X⁻¹_jk δ_ik → n), or left a nested product small
        # enough to flatten: normalised again, so that the normal form is its own
        if coef != 1:
            ops, labs = [Const(coef)] + list(ops), [()] + list(labs)
        return normalise_contract(Contract.of_shape(tuple(ops), tuple(labs), c.out, c.shape))
    if not ops:
        return Const(coef)
    if len(ops) == 1 and _is_identity_view(ops[0], labs[0], c.out):
        return B.scale(coef, ops[0])
    if len(ops) == 1 and isinstance(ops[0], Sum) and sorted(labs[0]) == sorted(c.out) and \
            len(set(labs[0])) == len(labs[0]):  # (A + B)ᵀ → Aᵀ + Bᵀ: sums stay outermost
        return simplify(B.linear([(coef * k, Contract((t,), (labs[0],), tuple(c.out)))
                                  for k, t in ops[0].terms], c.shape))
    return B.scale(coef, _canonical_parts(tuple(ops), tuple(labs), c.out, c.shape)[0])


def _mask_onto_matrix(c: Contract):
    """Σ_pq Φ(T)_…pq M_pq = Σ_pq T_…pq Φ(M)_pq: Φ is an entry-wise mask over its last two
    axes, so its own adjoint.  Where the rest of a product meets Φ(T) only over T's last two
    labels, summed, Φ moves onto that rest (a matrix M) — the Jacobian of chol(tS) by t,
    built in reverse as Φ of a 4-index tensor, becomes L Φ(L⁻¹SL⁻ᵀ), and no n⁴ tensor is
    masked.  c with Φ moved (or None where no factor is such a Φ(T) of three axes or more)."""
    for k, (op, lab) in enumerate(zip(c.operands, c.labels)):
        if type(op) is not Phi or len(lab) < 3:
            continue
        p, q = lab[-2:]
        if p == q or p in c.out or q in c.out or p in lab[:-2] or q in lab[:-2]:
            continue
        rest = [j for j in range(len(c.operands)) if j != k]
        mine = set(lab)
        if not rest or any(x in c.out or (x in mine and x not in (p, q)) for j in rest for x in c.labels[j]):
            continue
        held = {x for j in rest for x in c.labels[j]}
        if p not in held or q not in held:
            continue
        dims = c.label_dims()
        m = simplify(B.contract(tuple(c.operands[j] for j in rest), tuple(c.labels[j] for j in rest),
                                (p, q), dims))
        return Contract.of_shape((op.arg, simplify(Phi(m))), (lab, (p, q)), c.out, c.shape)
    return None


def _opened_by_deltas(ops, labs) -> bool:
    """Whether factors that ``_remove_deltas`` left give ``normalise_contract`` more to do:
    two powers of one factor on the same labels, an inverse beside its matrix (which
    ``_cancel_inverses`` reads), a mask Φ that may move onto the matrix it now meets
    (``_mask_onto_matrix``), or a nested product that a product of this size flattens."""
    if len(ops) < 2 and not (ops and type(ops[0]) is Contract):
        return False
    return len({(_power_of(o)[0], lab) for o, lab in zip(ops, labs)}) < len(ops) or \
        any(type(o) is Inv and any(x is o.arg for x in ops) or type(o) is Phi for o in ops) or \
        any(type(o) is Contract and _flattenable(o, len(ops)) for o in ops)


def _steps():
    """The rewrites of a product's factors after ``_merge_powers``, in order, each with the
    node types one of which it needs among the factors to change anything."""
    return [(lambda ops, labs, out: _merge_sigmoids(ops, labs), {Elementwise}),
            (lambda ops, labs, out: _merge_tanh(ops, labs), {Elementwise}),
            (_cancel_inverses, {Inv}),
            (_orthonormal, {Eigh}),
            (_remove_deltas, {Delta}),
            (_spectral, {DivDiff, Eigh, Svd}),
            (_split_unit_vectors, {Basis})]


def _deltas_apart(inner: Contract) -> Contract:
    """inner as its deltas times one contraction of its other operands, which keeps the
    labels a delta or the output uses: merging the deltas into a parent then leaves the
    rest nested and shared (the Hessian of d nested σ would otherwise hold d products of
    d factors each)."""
    rest = [(o, lab) for o, lab in zip(inner.operands, inner.labels) if not isinstance(o, Delta)]
    deltas = [(o, lab) for o, lab in zip(inner.operands, inner.labels) if isinstance(o, Delta)]
    if len(rest) < 2:
        return inner
    visible = {x for _, lab in deltas for x in lab} | set(inner.out)
    rest_out = tuple(dict.fromkeys(x for _, lab in rest for x in lab if x in visible))
    kept = simplify(Contract(tuple(o for o, _ in rest), tuple(lab for _, lab in rest), rest_out))
    return Contract(tuple(o for o, _ in deltas) + (kept,),
                    tuple(lab for _, lab in deltas) + (rest_out,), inner.out)


def _distributable(ops):
    """The position of a sum factor to distribute the product over: one with a term that
    carries a Kronecker delta, so that distributing merges the delta with the other factors'
    labels (the Hessian of tr(AX⁻¹B) would otherwise build an n⁴ tensor and contract it
    twice; that of a sigmoid layer, a tensor n × k times larger than its result)."""
    if len(ops) < 2:
        return None
    for k, op in enumerate(ops):
        if isinstance(op, Sum) and any(
                isinstance(t, Contract) and any(isinstance(o, Delta) and o.order >= 2
                                                for o in t.operands) for _, t in op.terms):
            return k
    return None


def _centred(ops, labs, coef, c: Contract):
    """A centred sum summed along its axis cancels: 1ᵀ(x − (1ᵀx/n)1) = 0 (a layer norm's
    gradient).  Tried only where a sum or product that holds a centred sum (one with a term
    that carries a vector of ones) is summed over an axis no other factor reads; the sum is
    taken inside (distributed over a sum), and kept only when that leaves fewer terms and no
    centred sum (so the rewrite cannot repeat).  A product that is c's only factor (one too
    large to open, ``FLATTEN_LIMIT``) is not summed apart, which would build c itself again (up
    to its coefficient and the order of its axes) and ask this anew without end: its factors
    are tried instead, as c's factors under c's labels.  So each product this summing builds
    sums a node strictly inside c, and the normal forms it asks for end."""
    uses: dict = {}
    for lab in labs:
        for x in lab:
            uses[x] = uses.get(x, 0) + 1
    for k, op in enumerate(ops):
        if not isinstance(op, (Sum, Contract)):
            continue
        private = {x for x in labs[k] if uses[x] == 1 and x not in c.out}
        if not private or not _holds_centring(op):
            continue
        if len(ops) == 1 and isinstance(op, Sum):
            out = simplify(B.linear([(coef * w, Contract((t,), (labs[k],), c.out)) for w, t in op.terms],
                                    c.shape))
            if _term_count(out) < len(op.terms) and not _holds_centring(out):
                return out
            continue
        if len(ops) == 1:  # a product alone: its factors, its summed labels made fresh
            rename = dict(zip(op.out, labs[k]))
            fresh = _fresh(c.out, labs[k])
            for x in sorted({x for ls in op.labels for x in ls} - set(op.out)):
                rename[x], fresh = fresh, fresh + 1
            return _centred(list(op.operands), [tuple(map(rename.__getitem__, ls)) for ls in op.labels],
                            coef, c)
        kept = tuple(x for x in labs[k] if x not in private)
        inner = simplify(Contract((op,), (labs[k],), kept))
        if isinstance(inner, Sum) and not inner.terms:
            return B.zeros(c.shape)
        if isinstance(op, Sum) and _term_count(inner) < len(op.terms) and not _holds_centring(inner):
            return simplify(B.scale(coef, Contract(tuple(ops[:k]) + (inner,) + tuple(ops[k + 1:]),
                                                   tuple(labs[:k]) + (kept,) + tuple(labs[k + 1:]), c.out)))
    return None


def _term_count(n: Node) -> int:
    return len(n.terms) if isinstance(n, Sum) else 1


_CENTRING: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _centring(n: Node) -> bool:
    return isinstance(n, Sum) and len(n.terms) >= 2 and any(
        isinstance(t, Contract) and any(isinstance(o, Delta) and o.order == 1 for o in t.operands)
        for _, t in n.terms)


def _holds_centring(root: Node) -> bool:
    """Whether a centred sum (a sum with a term that carries a vector of ones) is inside
    root, through sums and products only; memoised per node."""
    stack = [root]
    while stack:
        n = stack[-1]
        if n in _CENTRING:
            stack.pop()
            continue
        kids = [k for k in n.children if isinstance(k, (Sum, Contract))] \
            if isinstance(n, (Sum, Contract)) else []
        pending = [k for k in kids if k not in _CENTRING]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        _CENTRING[n] = _centring(n) or any(_CENTRING[k] for k in kids)
    return _CENTRING[root]


def _power_of(op):
    if isinstance(op, Elementwise) and op.fn.builtin and op.fn.name == "pow":
        return op.arg, op.fn.param
    return op, 1.0


def _merge_powers(ops, labs, out=()):
    """xᵃ ⊙ xᵇ → xᵃ⁺ᵇ for factors read with the same labels (x ⊙ x → x²); a vector of ones
    summed alone is the count n of its dim, and meets a power of n written as 1ᵀ1."""
    if not any(type(op) is Elementwise or type(op) is Delta for op in ops) and \
            len(set(zip(ops, labs))) == len(ops):
        return ops, labs  # no power, no vector of ones, no factor twice with one reading
    exps: dict = {}
    ones = False
    for op, lab in zip(ops, labs):
        base, p = _power_of(op)
        exps[(base, lab)] = exps.get((base, lab), 0.0) + p
        ones = ones or (isinstance(op, Delta) and op.order == 1)
    if not ones and len(exps) == len(ops):  # nothing to merge, and no vector of ones
        return ops, labs
    uses: dict = {}
    for lab in labs:
        for x in lab:
            uses[x] = uses.get(x, 0) + 1
    counted = [(op, lab) for op, lab in zip(ops, labs)
               if isinstance(op, Delta) and op.order == 1 and uses[lab[0]] == 1 and lab[0] not in out]
    for op, lab in counted:
        n = Contract((op,), ((0,),), ())
        if (n, ()) in exps:  # (1ᵀ1)·n⁻¹ → 1
            exps[(n, ())] += 1.0
            if exps[(op, lab)] == 1.0:
                del exps[(op, lab)]
            else:
                exps[(op, lab)] -= 1.0
    if len(exps) == len(ops) and not counted:
        return ops, labs
    out_ops, out_labs, dims = [], [], {}
    for (base, lab), p in exps.items():
        dims.update(zip(lab, base.shape))
        if p != 0:
            out_ops.append(simplify(F.power(base, p)))
            out_labs.append(lab)
    kept = {x for lab in out_labs for x in lab}
    for x in dims.keys() - kept:  # x ⊙ x⁻¹ leaves ones along its axes (and Σ 1 = n)
        out_ops.append(Delta(dims[x], 1))
        out_labs.append((x,))
    return out_ops, out_labs


def _cancel_inverses(ops, labs, out):
    """X⁻¹_ab X_bc → δ_ac and X_ab X⁻¹_bc → δ_ac, where b is summed over these two only;
    X⁻¹_ab X_ba → Σ_a 1 = n, where a and b are summed over these two only."""
    everywhere = [x for lab in labs for x in lab] + list(out)
    for i, (op, lab) in enumerate(zip(ops, labs)):
        if not isinstance(op, Inv):
            continue
        for j, (other, olab) in enumerate(zip(ops, labs)):
            if other is not op.arg or j == i:
                continue
            if isinstance(other, Var) and other.symmetric and other.ndim == 2:  # X_cb = X_bc: X⁻¹Xᵀ = I
                pairs = ((lab, olab), (olab, lab), (lab, olab[::-1]), (olab[::-1], lab))
            else:
                pairs = ((lab, olab), (olab, lab))
            for (a, b), (b2, cc) in pairs:
                if b == b2 and everywhere.count(b) == 2 and len({a, b, cc}) == 3:
                    keep = [k for k in range(len(ops)) if k not in (i, j)]
                    return ([ops[k] for k in keep] + [Delta(op.shape[0], 2)],
                            [labs[k] for k in keep] + [(a, cc)])
                if b == b2 and a == cc != b and everywhere.count(b) == 2 and everywhere.count(a) == 2:
                    keep = [k for k in range(len(ops)) if k not in (i, j)]  # tr(X⁻¹X) = n
                    return ([ops[k] for k in keep] + [Delta(op.shape[0], 1)],
                            [labs[k] for k in keep] + [(a,)])
    return ops, labs


def _orthonormal(ops, labs, out):
    """UᵀU = UUᵀ = I for the eigenvectors U of a symmetric matrix: U_ba U_bc → δ_ac (and
    U_ab U_cb → δ_ac) where b is summed over these two only."""
    if sum(isinstance(op, Eigh) and op.part == "vectors" for op in ops) < 2:
        return ops, labs
    everywhere = [x for lab in labs for x in lab] + list(out)
    for i, j in ((i, j) for i in range(len(ops)) for j in range(i + 1, len(ops))):
        if ops[i] is ops[j] and isinstance(ops[i], Eigh) and ops[i].part == "vectors":
            for (b, a), (b2, cc) in ((labs[i], labs[j]), (labs[i][::-1], labs[j][::-1])):
                if b == b2 and everywhere.count(b) == 2 and len({a, b, cc}) == 3:  # UᵀU, UUᵀ
                    keep = [k for k in range(len(ops)) if k not in (i, j)]
                    return ([ops[k] for k in keep] + [Delta(ops[i].shape[0], 2)],
                            [labs[k] for k in keep] + [(a, cc)])
    return ops, labs


def _spectral(ops, labs, out):
    """The diagonal of a divided-difference matrix is f′(λ); U diag(f(λ)) Uᵀ over the
    eigen-decomposition of S is f(S) (expm(S) for f = exp); U diag(σ) Vᵀ over the thin SVD of
    X is X."""
    if not any(isinstance(op, (DivDiff, Eigh, Svd)) for op in ops):
        return ops, labs
    ops, labs = list(ops), list(labs)
    for k, (op, lab) in enumerate(zip(ops, labs)):
        if isinstance(op, DivDiff) and lab[0] == lab[1]:
            ops[k], labs[k] = simplify(op.fn.derivative(op.arg)), (lab[0],)
    everywhere = [x for lab in labs for x in lab] + list(out)
    for k, (op, lab) in enumerate(zip(ops, labs)):
        if len(lab) != 1 or everywhere.count(lab[0]) != 3:
            continue
        if isinstance(op, Eigh) and op.part == "values":  # U diag(λ) Uᵀ = S
            left = right = Eigh("vectors", op.arg)
            whole = op.arg
        elif isinstance(op, Svd) and op.part == "values":  # U diag(σ) Vᵀ = X
            left, right = Svd("left", op.rank, op.arg), Svd("right", op.rank, op.arg)
            whole = op.arg
        elif isinstance(op, Elementwise) and op.fn.builtin and isinstance(op.arg, Eigh) and \
                op.arg.part == "values":  # U diag(f(λ)) Uᵀ = f(S)
            left = right = Eigh("vectors", op.arg.arg)
            whole = MatFn(op.fn, op.arg.arg)
        else:
            continue
        ls = [i for i, (o, lb) in enumerate(zip(ops, labs)) if o is left and lb[1] == lab[0]]
        rs = [i for i, (o, lb) in enumerate(zip(ops, labs)) if o is right and lb[1] == lab[0]]
        pair = (ls if len(ls) == 2 and labs[ls[0]][0] != labs[ls[1]][0] else None) if left is right \
            else ((ls[0], rs[0]) if len(ls) == 1 and len(rs) == 1 else None)
        if pair:
            keep = [i for i in range(len(ops)) if i not in pair and i != k]
            return ([ops[i] for i in keep] + [whole],
                    [labs[i] for i in keep] + [(labs[pair[0]][0], labs[pair[1]][0])])
    return ops, labs


def _split_unit_vectors(ops, labs, out):
    """Σ_p A_ip e_p B_jp = (Σ_p A_ip e_p)(Σ_q B_jq e_q) for a unit vector e (e_p² = e_p): so
    ∂λₙ/∂S = U diag(eₙ)Uᵀ is written (Ueₙ)(Ueₙ)ᵀ, the eigenvector's outer product."""
    for k, (op, lab) in enumerate(zip(ops, labs)):
        if not isinstance(op, Basis):
            continue
        p = lab[0]
        sites = [(i, j) for i, lb in enumerate(labs) if i != k for j, x in enumerate(lb) if x == p]
        if p in out or len(sites) != 2 or sites[0][0] == sites[1][0]:
            continue
        q = _fresh(out, *labs)
        (i, j) = sites[1]
        labs = list(labs)
        labs[i] = labs[i][:j] + (q,) + labs[i][j + 1:]
        return list(ops) + [op], labs + [(q,)]
    return ops, labs


def _remove_deltas(ops, labs, out):
    """δ_ij A_jk → A_ik: each delta's labels are merged into one, preferring an output label.

    A delta that ties several output labels stays (as δ over those labels only); a merged
    label carried by no other factor keeps a ones vector (a broadcast, or a factor of n).
    """
    parent = {}

    def find(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    keep_ops, keep_labs, dim_of = [], [], {}
    for op, lab in zip(ops, labs):
        if type(op) is Delta:  # (Delta has no subclass)
            for x in lab[1:]:
                ra, rb = find(lab[0]), find(x)
                if ra != rb:
                    parent[rb] = ra
            dim = op.dim
            for x in lab:
                dim_of[x] = dim
        else:
            keep_ops.append(op)
            keep_labs.append(lab)
    if not dim_of:
        return ops, labs
    classes = {}
    for x in set(parent) | set(dim_of):
        classes.setdefault(find(x), set()).add(x)
    rename, tied = {}, []
    for root, members in classes.items():
        outs = [x for x in out if x in members]
        rep = outs[0] if outs else min(members)
        for x in members:
            rename[x] = rep
        if len(outs) > 1:
            tied.append((dim_of[root], tuple(outs)))
        else:
            tied.append((dim_of[root], (rep,)))
    keep_labs = [tuple(map(rename.get, lab, lab)) for lab in keep_labs]  # rename.get(x, x)
    carried = {x for lab in keep_labs for x in lab}
    for dim, group in tied:
        if len(group) > 1 or group[0] not in carried:
            keep_ops.append(Delta(dim, len(group)))
            keep_labs.append(group)
    return keep_ops, keep_labs


def _is_identity_view(op, lab, out) -> bool:
    """A single factor read in the output's own order (or a symmetric one, in any order)."""
    if tuple(lab) == tuple(out):
        return True
    return _symmetric(op) and len(set(lab)) == len(lab) and set(lab) == set(out) and op.ndim == 2


def _symmetric(op) -> bool:
    """Whether the factor is unchanged by any permutation of its axes."""
    kind = type(op)  # (none of these node types has a subclass)
    if kind is Delta or kind is DivDiff or kind is MatFn or kind is DivDiff3:  # T: f[λᵢ, λⱼ, λₖ]
        return True
    if kind is Var or kind is Hole:
        return bool(op.symmetric)
    if kind is Inv:
        return _symmetric(op.arg)
    return kind is Sum and _symmetric_sum(op)


def _symmetric_sum(op) -> bool:
    """A square sum whose terms come in transposed pairs (or are symmetric): H + Hᵀ."""
    if not (isinstance(op, Sum) and op.ndim == 2 and op.shape[0] == op.shape[1] and op.terms):
        return False
    return _pairs_with_transposes(op)


@functools.lru_cache(maxsize=8192)  # nodes are hash-consed: the question is asked once per sum
def _pairs_with_transposes(op) -> bool:
    terms = set(op.terms)
    return all((c, simplify(B.transpose(t))) in terms for c, t in op.terms)


SYMMETRIC_SWAPS = 4  # a product with up to this many symmetric matrices tries each reading


def canonical(c: Contract):
    """A contraction with operands sorted and labels renumbered (output labels 0…k-1 first),
    and the renumbering used.  Equal products written differently become one node: where
    symmetric matrices are factors, each reading of them (Sᵢⱼ or Sⱼᵢ) is tried and the
    least node kept."""
    return _canonical_parts(c.operands, c.labels, c.out, c.shape)


def _canonical_parts(operands, labels, out, shape):
    """``canonical`` of the contraction of these parts, without building it first (nor the
    readings that lose: they are compared by the structural key they would have); ``shape``
    is its shape (the caller's product, rewritten: its output axes are the same)."""
    parts, key = _canonical_order(operands, labels, out)
    node = Contract.of_shape(*parts[:3], shape)
    if key is not None and node._skey is None:
        node._skey = key
    return node, parts[3]


def _canonical_order(operands, labels, out):
    """The parts of ``_canonical_parts``' node (operands, labels, out), the renumbering, and
    the node's structural key where it was computed to choose a reading (else None)."""
    info, sym = [], None
    for k, op in enumerate(operands):
        kind = type(op)
        symmetric = True if kind is Delta else False if kind is Contract or kind is Elementwise else \
            _symmetric(op)
        info.append((op._skey or op.skey, symmetric))
        if symmetric and kind is not Delta:  # a summed S_ab: read either way
            shape, lab = op.shape, labels[k]
            if len(shape) == 2 and shape[0] == shape[1] and len(set(lab)) == 2 and \
                    not set(lab) & set(out):
                sym = [k] if sym is None else sym + [k]
    if not sym or len(sym) > SYMMETRIC_SWAPS:
        return _canonical(operands, labels, out, info), None
    best = None
    for mask in range(1 << len(sym)):
        read = list(labels)
        for bit, k in enumerate(sym):
            if mask >> bit & 1:
                read[k] = read[k][::-1]
        parts = _canonical(operands, tuple(read), out, info)
        key = contract_key(*parts[:3])  # the skey of the node these parts make
        if best is None or key < best[0]:
            best = key, parts
    return best[1], best[0]


def _canonical(operands, labels, out, info):
    """The canonical parts (operands, labels, out) and the renumbering, given each
    operand's structural key and symmetry (``info``)."""
    out_num = dict(zip(out, range(len(out))))
    n = len(info)
    if n == 1:
        order = (0,)
    elif n == 2 and info[0][0] != info[1][0]:
        order = (0, 1) if info[0][0] < info[1][0] else (1, 0)
    else:
        keys = list(map(_KEY, info))
        distinct = set(keys)
        if len(distinct) < n:  # equal operands: their order needs the labels' structure
            if n > CANONICAL_OPERANDS:
                return _canonical_sorted(operands, labels, out, info, out_num, keys)
            return _canonical_tied(operands, labels, out, info, out_num, distinct)
        order = sorted(range(n), key=keys.__getitem__)
    # where no two operands are equal, the structural keys alone decide the order, and the
    # labels are numbered by first appearance (a symmetric factor's labels then sorted by
    # those numbers, which keeps them numbered by first appearance: its labels are numbered
    # once it is reached)
    num = out_num
    get = num.__getitem__
    new_labels = []
    for i in order:
        lab = labels[i]
        for x in lab:
            if x not in num:
                num[x] = len(num)
        new_labels.append(tuple(map(get, _sort_symmetric(operands[i], lab, num.get) if info[i][1] else lab)))
    return tuple([operands[i] for i in order]), tuple(new_labels), tuple(range(len(out))), num


_KEY = operator.itemgetter(0)  # an operand's structural key in ``info``


CANONICAL_ORDERINGS = 120  # orderings of equal operands tried, at most
PERMUTED_ORDERINGS = 6  # up to this many, every ordering is tried; past it, those refinement leaves
CANONICAL_OPERANDS = 10  # products with more operands (deltas joined a product past the limit,
# the Jacobian of A¹⁰⁰) order equal ones by two sorting passes: cheap, not always the least


def _canonical_sorted(operands, labels, out, info, out_num, keys):
    """``_canonical`` of a large product with equal operands, by two sorting passes: the
    second orders equal operands by the numbers the first gave their labels.  Equal products
    may keep two forms (the order they came in decides some ties), but the cost is a sort,
    where the search of ``_canonical_tied`` grows with the number of operands."""
    count: dict = {}
    for k in keys:
        count[k] = count.get(k, 0) + 1
    pairs = [(k, op, lab, sym) for (k, sym), op, lab in zip(info, operands, labels)]
    num = out_num
    for _ in range(2):
        pairs.sort(key=lambda p: (p[0], tuple(num.get(x, -1) for x in p[2]) if count[p[0]] > 1 else ()))
        num = dict(out_num)
        for p in pairs:
            for x in p[2]:
                num.setdefault(x, len(num))
        pairs = [(k, op, _sort_symmetric(op, lab, num.get), True) if sym else (k, op, lab, False)
                 for k, op, lab, sym in pairs]
    return (tuple(p[1] for p in pairs), tuple(tuple(num[x] for x in p[2]) for p in pairs),
            tuple(range(len(out))), num)


def _canonical_tied(operands, labels, out, info, out_num, seen):
    """``_canonical`` where some operands are equal: every ordering of the equal ones is
    numbered (labels by first appearance) and the least labels win, so equal contractions —
    up to the order of their operands and the naming of their labels — get equal parts
    (the readings of summed symmetric matrices are ``_canonical_parts``' to try).  Where
    that would be more than ``PERMUTED_ORDERINGS`` orderings, the orderings tried are those
    ``_refined_orderings`` reaches, the equal operands told apart by their labels' structure
    (past ``CANONICAL_ORDERINGS``, the first ones only: a correct, perhaps not the least,
    form)."""
    n = len(operands)
    keys = [k for k, _ in info]
    order = sorted(range(n), key=keys.__getitem__)
    cells = _cells(order, keys)
    if len(cells) == n - 1:  # one pair of equal operands (the common case): two orderings
        k = next(j for j, cell in enumerate(cells) if len(cell) == 2)
        a, b = cells[k]
        flat = [cell[0] for cell in cells]
        orderings = (flat[:k] + [a, b] + flat[k + 1:], flat[:k] + [b, a] + flat[k + 1:])
    elif _orderings(cells) <= PERMUTED_ORDERINGS:
        orderings = ([i for cell in perm for i in cell]
                     for perm in itertools.product(*map(itertools.permutations, cells)))
    else:
        orderings = _refined_orderings(operands, labels, out_num, info, seen)
    best = None
    for seq in orderings:  # (every ordering lists the same operands: flat labels compare alike)
        num = dict(out_num)
        get, flat = num.__getitem__, []
        for i in seq:  # (a symmetric operand's labels are numbered once it is reached)
            lab = labels[i]
            for x in lab:
                if x not in num:
                    num[x] = len(num)
            flat.extend(map(get, _sort_symmetric(operands[i], lab, num.get) if info[i][1] else lab))
        if best is None or flat < best[0]:
            best = flat, seq, num
    flat, seq, num = best
    labs, at = [], 0
    for i in seq:
        labs.append(tuple(flat[at:at + len(labels[i])]))
        at += len(labels[i])
    return tuple(operands[i] for i in seq), tuple(labs), tuple(range(len(out))), num


def _cells(order, keys):
    """``order`` cut into runs of equal keys."""
    cells, last = [], object()
    for i in order:
        if keys[i] != last:
            cells.append([])
            last = keys[i]
        cells[-1].append(i)
    return cells


def _orderings(cells) -> int:
    total = 1
    for c in cells:
        total *= math.factorial(len(c))
    return total


def _refined_orderings(operands, labels, out_num, info, seen):
    """Orderings of the operands where equal ones are told apart by their labels' structure
    (Weisfeiler–Lehman refinement with individualisation): operands and labels, the two
    sides of a graph (a label joined to the operands that carry it, at an axis), start
    coloured by structural key and by output position; then, to a fixed point, a label is
    coloured by the colours and axes of the operands that carry it, and an operand by its
    labels' colours in axis order (a symmetric operand's: as a multiset over its axes of one
    dim).  Where equal operands keep one colour (tr(A⁶): a cycle), each of the first such
    class is singled out in turn and the colours refined again, until every operand has its
    own; each ordering reached is yielded, at most ``CANONICAL_ORDERINGS``.  Equal
    contractions reach the same orderings, operand for operand."""
    n = len(operands)
    rank = {k: r for r, k in enumerate(sorted(seen))}
    axes = []  # per operand: each axis's class (its position; for a symmetric one, its dim)
    for op, (_, sym) in zip(operands, info):
        first: dict = {}
        axes.append(tuple(first.setdefault(d, len(first)) for d in op.shape) if sym
                    else tuple(range(op.ndim)))
    occ: dict = {}
    for i, lab in enumerate(labels):
        for x, a in zip(lab, axes[i]):
            occ.setdefault(x, []).append((i, a))
    names = list(occ)
    index = {x: j for j, x in enumerate(names)}
    ops_labs = [[index[x] for x in lab] for lab in labels]
    occ_idx = [occ[x] for x in names]
    budget = [CANONICAL_ORDERINGS]

    def refine(op_col, lab_col):
        counts = (len(set(op_col)), len(set(lab_col)))
        while True:  # the labels by their operands, then the operands by those labels
            lab_col = _ranks([(lab_col[j], tuple(sorted([(op_col[i], a) for i, a in occ_idx[j]])))
                              for j in range(len(names))])
            op_col = _ranks([(op_col[i], tuple(sorted(zip(axes[i], [lab_col[j] for j in ops_labs[i]]))))
                             for i in range(n)])
            new = (len(set(op_col)), len(set(lab_col)))
            if new == counts or new[0] == n:  # stable, or every operand apart
                return op_col, lab_col
            counts = new

    def search(op_col, lab_col):
        op_col, lab_col = refine(op_col, lab_col)
        count: dict = {}
        for c in op_col:
            count[c] = count.get(c, 0) + 1
        tied = [c for c, k in count.items() if k > 1]
        if not tied:
            budget[0] -= 1
            yield sorted(range(n), key=op_col.__getitem__)
            return
        least = min(tied)
        for m in [i for i in range(n) if op_col[i] == least]:
            if budget[0] <= 0:
                return
            yield from search([2 * c + (i != m) for i, c in enumerate(op_col)], lab_col)

    yield from search([rank[k] for k, _ in info], [out_num.get(x, len(out_num)) for x in names])


def _ranks(sigs):
    """Each signature's rank among the distinct ones (so a refined colour keeps the order of
    the colour it refines: every signature starts with it)."""
    order = {s: r for r, s in enumerate(sorted(set(sigs)))}
    return [order[s] for s in sigs]


def _sort_symmetric(op, lab, key):
    """The labels of a symmetric factor in canonical order (axes of one dim only swap)."""
    shape = op.shape
    if len(shape) == 2 and shape[0] == shape[1]:  # a square matrix: its two labels in order
        a, b = lab
        return (b, a) if key(b) < key(a) else lab
    lab = list(lab)
    for d in set(shape):
        pos = [i for i, e in enumerate(op.shape) if e == d]
        for i, x in zip(pos, sorted((lab[i] for i in pos), key=key)):
            lab[i] = x
    return tuple(lab)


# --------------------------------------------------------------------------- sums


_SPECTRAL = frozenset((Eigh, DivDiff))  # factors of a product that a factored sum normalises again


def normalise_sum(s: Sum) -> Node:
    if len(s.terms) == 1:  # c·t of a simple t that is no sum, constant or spectral product: s
        c, t = s.terms[0]
        kind = type(t)
        if c != 0 and c != 1 and kind is not Sum and kind is not Const and not (
                kind is Contract and any(isinstance(o, (Eigh, DivDiff)) for o in t.operands)):
            return s
    terms = _factor(_hyperbolic(_merge_products(_combine(s.terms))), s.shape)
    if any(type(t) is Contract and not _SPECTRAL.isdisjoint(map(type, t.operands))
           for _, t in terms):  # a factored spectral product: UᵀU = I may apply to it now
        terms = _combine([(c, normalise_contract(t) if isinstance(t, Contract) else t) for c, t in terms])
    if not terms:
        return B.zeros(s.shape)
    if len(terms) == 1:
        c, t = terms[0]
        if t is B.ONE:
            return Const(c)
        if c == 1.0:
            return t
    terms.sort(key=lambda p: p[1]._skey or p[1].skey)
    return Sum(tuple(terms), s.shape)


def _merge_products(terms):
    """Like terms merged where one is a product nested in a product and another the same
    product flat (a product past ``FLATTEN_LIMIT`` keeps a nested factor, and a sum may hold
    it both ways): c₁·(A(ab)ᵀB) + c₂·(A a bᵀ B) → (c₁ + c₂)·(A a bᵀ B).  Only terms whose
    innermost factors are one multiset (hashed as a sum of node hashes) are flattened and
    put in canonical order; the flattest of equal ones stays."""
    if sum(type(t) is Contract for _, t in terms) < 2 or not any(
            type(t) is Contract and any(type(o) is Contract for o in t.operands) for _, t in terms):
        return terms
    leaves: dict = {}
    for i, (c, t) in enumerate(terms):
        if type(t) is Contract:
            ops = _leaves(t)
            if len(ops) <= CANONICAL_OPERANDS:  # (larger ones: not compared)
                leaves.setdefault((t.shape, len(ops), sum(map(hash, ops))), []).append(i)
    groups: dict = {}
    for members in leaves.values():
        if len(members) > 1:
            for i in members:
                groups.setdefault(_flat_canonical(terms[i][1]), []).append(i)
    merged, used = [], set()
    for members in groups.values():
        if len(members) > 1:
            keep = min((terms[i][1] for i in members), key=lambda t: (-len(t.operands), t.skey))
            merged.append((sum(terms[i][0] for i in members), keep))
            used.update(members)
    if not merged:
        return terms
    return [(c, t) for c, t in [p for i, p in enumerate(terms) if i not in used] + merged if c != 0.0]


def _leaves(t: Contract) -> list:
    """The factors of a product, nested products opened (stopping past
    ``CANONICAL_OPERANDS``: a shared nested product may hold many)."""
    out, work = [], list(t.operands)
    while work and len(out) <= CANONICAL_OPERANDS:
        op = work.pop()
        if type(op) is Contract:
            work.extend(op.operands)
        else:
            out.append(op)
    return out + work


def _flat_canonical(t: Contract) -> Contract:
    """A product with its nested products opened, in canonical order: equal products,
    nested alike or not, are one node."""
    fresh = _fresh(t.out, *t.labels)
    ops, labs, work = [], [], list(zip(t.operands, t.labels))
    while work:
        op, lab = work.pop()
        if type(op) is Contract:
            rename = dict(zip(op.out, lab))
            for x in sorted({x for ls in op.labels for x in ls} - set(op.out)):
                rename[x], fresh = fresh, fresh + 1
            get = rename.__getitem__
            work.extend([(o, tuple(map(get, ls))) for o, ls in zip(op.operands, op.labels)])
        else:
            ops.append(op)
            labs.append(lab)
    return _canonical_parts(tuple(ops), tuple(labs), t.out, t.shape)[0]


def _is_builtin(n: Node, name: str) -> bool:
    return isinstance(n, Elementwise) and n.fn.builtin and n.fn.name == name


def _hyperbolic(terms):
    """c·exp(u) + c·exp(−u) → 2c·cosh(u) and c·exp(u) − c·exp(−u) → 2c·sinh(u)."""
    if sum(_is_builtin(t, "exp") for _, t in terms) < 2:
        return terms
    terms = list(terms)
    for i, (c, t) in enumerate(terms):
        if not _is_builtin(t, "exp") or c <= 0:
            continue
        negated = simplify(B.scale(-1, t.arg))
        for j, (d, other) in enumerate(terms):
            if j != i and _is_builtin(other, "exp") and other.arg is negated and abs(d) == c:
                name = "cosh" if d == c else "sinh"
                rest = [p for k, p in enumerate(terms) if k not in (i, j)]
                return _hyperbolic(rest + [(2 * c, simplify(F.apply(name, t.arg)))])
    return terms


def _factor(terms, shape):
    """c₁·(A ∘ P) + c₂·(A′ ∘ P) → (c₁A + c₂A′) ∘ P for products that differ in one factor,
    where A′ may be A's factor read with its axes in another order (Bx + Bᵀx → (B + Bᵀ)x)."""
    products = [i for i, (_, t) in enumerate(terms) if type(t) is Contract and len(t.operands) > 1]
    if len(products) < 2:
        return terms
    # A cheap necessary condition first: two terms can share a factored form only if their
    # other operands are one multiset, so only (term, factor) pairs whose multiset (hashed as
    # a sum of node hashes) another term shares are canonicalised — linear, not T·F sorts.
    # (A factor that cannot be taken out — a delta, or one read with a repeated label — is
    # left out, and the factor's shape is part of the key: the hole that stands for it is.)
    coarse: dict = {}
    for i in products:
        t = terms[i][1]
        ops = t.operands
        total, size = sum(map(hash, ops)), len(ops)
        for k, (op, lab) in enumerate(zip(ops, t.labels)):
            if type(op) is not Delta and len(set(lab)) == len(lab):
                coarse.setdefault((total - hash(op), size, op.shape), []).append((i, k))
    candidates = {pair for members in coarse.values() if len({i for i, _ in members}) > 1
                  for pair in members}
    if not candidates:
        return terms
    candidates = _read_alike(terms, candidates)
    groups: dict = {}
    holes: dict = {}
    for i, k in sorted(candidates):  # (each a factor of a product, no delta, labels distinct)
        t = terms[i][1]
        op = t.operands[k]
        hole = holes.get(op.shape)
        if hole is None:
            hole = holes[op.shape] = Hole(op.shape, True)  # a factor read in any axis order
        parts, _ = _canonical_order(t.operands[:k] + (hole,) + t.operands[k + 1:], t.labels, t.out)
        groups.setdefault(parts[:3], []).append((i, k, parts[3]))  # the parts: no node built
    used, merged = set(), []
    for (key_ops, key_labs, key_out), members in groups.items():
        members = [m for m in members if m[0] not in used]
        if len({m[0] for m in members}) < 2:
            continue
        hole_pos = next(j for j, o in enumerate(key_ops) if isinstance(o, Hole))
        target = key_labs[hole_pos]
        parts = []
        for i, k, mapping in members:
            if i in used:
                continue
            used.add(i)
            c, t = terms[i]
            src = tuple(map(mapping.__getitem__, t.labels[k]))
            op = t.operands[k]
            if src == target and viewed_as_itself(op):  # its normal form
                parts.append((c, op._simple))
            else:
                parts.append((c, Contract((op,), (src,), target)))
        factor = simplify(B.linear(parts, key_ops[hole_pos].shape))
        ops = key_ops[:hole_pos] + (factor,) + key_ops[hole_pos + 1:]
        merged.append((1.0, simplify(Contract(ops, key_labs, key_out))))
    if not merged:
        return terms
    rest = [p for i, p in enumerate(terms) if i not in used]
    return _combine(rest + merged)


# node types whose normal form read in its own axis order, Contract((u,), (l,), l), simplifies
# to that normal form u itself: no rewrite of a product applies to one factor of these alone
_VIEWED_AS_ITSELF = frozenset((Var, Inv, Elementwise))


def viewed_as_itself(n: Node) -> bool:
    """Whether n read in its own axis order (distinct labels), alone or times the constant 1,
    simplifies to simplify(n), which it computes: so it does where the normal form is a
    variable, an inverse or an entry-wise function; a sum of several terms (or none), which
    a product of it alone leaves as it is, or c·u for u one of those three (the product
    takes c out and keeps u); or a product of variables and inverses of other variables,
    each factor read once with its labels, which the product's normaliser flattens into the
    same factors and canonical order (nothing merges, cancels or is distributed).  Another
    sum of one term, or a product holding products, constants, deltas or functions, may be
    rewritten."""
    s = simplify(n)
    kind = type(s)
    if kind in _VIEWED_AS_ITSELF:
        return True
    if kind is Sum:
        return len(s.terms) != 1 or type(s.terms[0][1]) in _VIEWED_AS_ITSELF
    return kind is Contract and _plain_product(s)


def _plain_product(c: Contract) -> bool:
    """Whether c's factors are variables and inverses of variables, none both a factor and
    inverted, and no factor read twice with the same labels."""
    plain, inverted = set(), set()
    for op in c.operands:
        kind = type(op)
        if kind is Var:
            plain.add(op)
        elif kind is Inv and type(op.arg) is Var:
            inverted.add(op.arg)
        else:
            return False
    return plain.isdisjoint(inverted) and len(set(zip(c.operands, c.labels))) == len(c.operands)


def normal_identity(shape: tuple) -> Node:
    """``simplify(B.identity_tensor(shape))``, built as that normal form (the seed of a
    Jacobian): each delta ties two output labels, which ``_remove_deltas`` keeps, and nothing
    else applies to a product of deltas alone, so the normal form is one delta, or the
    deltas in canonical order (which does not depend on the order they come in)."""
    return _normal_deltas(shape, 2)


def normal_ones(shape: tuple) -> Node:
    """``simplify(B.ones(shape))``, built as that normal form (the adjoint of a sum of all
    entries for the seed 1): a ones vector over each output label, which no rewrite of a
    product removes or merges, so the normal form is the one vector, or the vectors in
    canonical order (1 for a scalar)."""
    return _normal_deltas(shape, 1)


def _normal_deltas(shape: tuple, order: int) -> Node:
    """The product over ``shape``'s dims of one delta of ``order`` each (2: the identity
    tensor, its labels i and n + i; 1: the all-ones tensor), in its normal form."""
    n = len(shape)
    if n == 0:
        return B.ONE
    if n == 1:
        node = Delta(shape[0], order)
    else:
        labels = tuple((i, n + i) for i in range(n)) if order == 2 else tuple((i,) for i in range(n))
        node = _canonical_parts(tuple(Delta(d, order) for d in shape), labels,
                                tuple(range(order * n)), tuple(shape) * order)[0]
    node._simple = node
    return node


def normal_scaled(c: float, u: Node) -> Node:
    """A node whose normal form is that of ``B.add(B.scale(c, u))`` (c·u as the one term of a
    sum), for u a normal form: for c not 0 or 1, c·u itself, built as its normal form, where u
    is no sum, constant or product of eigenvectors or divided differences (which a sum's
    normaliser opens, gathers or normalises again), else the sum c·u, whose normal form a sum
    of it alone keeps (a normal form normalises to itself; c·u is never the scalar 0)."""
    kind = type(u)
    if c == 0 or c == 1:
        return B.add(B.scale(c, u))
    if kind is Sum or kind is Const or (
            kind is Contract and any(type(o) is Eigh or type(o) is DivDiff for o in u.operands)):
        return B.scale(c, u)
    node = Sum(((float(c), u),), u.shape)
    node._simple = node
    return node


def _read_alike(terms, candidates) -> set:
    """The (term, factor) pairs of ``candidates`` that another term's pair may share a
    factored form with, by a second necessary condition: equal canonical parts read each
    operand's axes alike — an output axis by its position, a summed one by how many axes
    read it (so a renaming of labels and the operands' order change nothing) — with the same
    operands besides the factor.  The reads of the factor (the hole) and of a symmetric
    operand are compared as multisets (either may be read in another axis order); another
    operand's labels keep their axis order in the canonical parts, so its reads are compared
    axis by axis (Bx and Bᵀx are not one product with a hole for x)."""
    readings, alike = {}, {}
    for i, k in candidates:
        reads = readings.get(i)
        if reads is None:  # per operand: (its hash, its reads as compared, its reads sorted)
            t = terms[i][1]
            read: dict = {}  # a summed label: minus the number of axes reading it
            for lab in t.labels:
                for x in lab:
                    read[x] = read.get(x, 0) - 1
            for p, x in enumerate(t.out):  # an output label: its position
                read[x] = p
            get, reads = read.__getitem__, []
            for op, lab in zip(t.operands, t.labels):
                r = tuple(map(get, lab))
                s = tuple(sorted(r))
                reads.append((hash(op), s if _symmetric(op) else r, s, op.shape))
            readings[i] = reads
        others = [(h, r) for j, (h, r, _, _) in enumerate(reads) if j != k]
        if len(others) > 1:
            others.sort()
        alike.setdefault((reads[k][3], reads[k][2], tuple(others)), []).append((i, k))
    return {pair for members in alike.values() if len({i for i, _ in members}) > 1 for pair in members}


def _combine(terms):
    """Nested sums flattened, constants gathered on the unit scalar, equal terms merged
    (x + x → 2x), zeros dropped."""
    acc: dict = {}
    for c, t in terms:
        parts = t.terms if isinstance(t, Sum) else [(1.0, t)]
        for k, u in parts:
            if isinstance(u, Const):
                k, u = k * u.value, B.ONE
            acc[u] = acc.get(u, 0.0) + c * k
    return [(c, t) for t, c in acc.items() if c != 0.0]


# --------------------------------------------------------------------------- others


def normalise_elementwise(e: Elementwise) -> Node:
    x = e.arg
    fn, kind = e.fn, type(x)
    if not (fn.builtin and fn.name in ("sqrt", "log", "log1p")) and (
            kind is Var or kind is Inv or kind is Contract and not is_ones(x) or
            kind is Elementwise and not (fn.name == "pow" and fn.builtin and _is_builtin(x, "pow"))):
        # no rewrite below applies: the argument is no constant, zero, ones, sum or power
        # of a power (√ always becomes a power, and a logarithm may take its stable form)
        return e
    if e.fn.builtin and e.fn.name == "sqrt":  # √x → x^½, so that powers merge
        return simplify(F.power(x, 0.5))
    if e.fn.builtin and e.fn.name == "pow" and isinstance(x, Elementwise) and \
            x.fn.builtin and x.fn.name == "pow":
        a, b = x.fn.param, e.fn.param
        if not float(a).is_integer() or float(b).is_integer():  # (xᵃ)ᵇ → xᵃᵇ where valid
            return simplify(F.power(x.arg, a * b))
    if _is_builtin(e, "pow") and isinstance(x, Sum) and len(x.terms) == 1 and \
            (x.terms[0][0] > 0 or float(e.fn.param).is_integer()) and \
            _plain(float(x.terms[0][0]) ** e.fn.param):  # (c·t)ᵖ → cᵖ·tᵖ where cᵖ prints plainly
        c, t = x.terms[0]
        return simplify(B.scale(float(c) ** e.fn.param, F.power(t, e.fn.param)))
    if _logistic(e) is not None:  # 1 ⊘ (1 + exp(u)) → σ(−u)
        return _as_sigmoid(e)
    stable = _stable_log(x) if e.fn.builtin and e.fn.name == "log" else None
    if e.fn.builtin and e.fn.name == "log1p":  # log1p(eᵘ) = softplus(u), log1p(−σ(u)) = −softplus(u)
        stable = _stable_log(simplify(B.linear([(1, B.ones(x.shape)), (1, x)], x.shape)))
    if stable is not None:
        return simplify(stable)
    impl = e.fn.implementation()
    if impl is not None and is_ones(x) and x.ndim:  # f(1) entry by entry: 1^∘3 = 1
        with np.errstate(all="ignore"):
            value = float(impl(np.float64(1.0)))
        if np.isfinite(value):
            return simplify(B.const(value, x.shape))
    if impl is None or not (isinstance(x, Const) or B.is_zero(x)):
        return e
    with np.errstate(all="ignore"):
        value = float(impl(np.float64(x.value if isinstance(x, Const) else 0.0)))
    if not np.isfinite(value):  # 1/0, log 0: no value to stand behind, and 0·(1/0) ≠ 0
        shown = x.value if isinstance(x, Const) else 0.0
        what = f"{shown:g}^{e.fn.param:g}" if e.fn.name == "pow" else f"{e.fn}({shown:g})"
        raise MatdiffError(f"{what} is not finite: the expression divides by zero, "
                           f"or takes a logarithm or negative power of zero (an argument that "
                           f"simplifies to the constant {shown:g})")
    return Const(value) if isinstance(x, Const) else simplify(B.const(value, x.shape))  # f(c) → value


@functools.lru_cache(maxsize=4096)  # nodes are hash-consed: one rewrite per node
def stable_forms(root: Node) -> Node:
    """root with each logarithm of σ(u), 1 − σ(u) or softmax(Z) in its log-space form
    (``_stable_log``) and every other node as built: what the derivative is taken of, so
    that the gradient of log σ(u) is σ(−u), never σ′(u) ⊘ σ(u), which is 0/0 at |u| ≈ 40;
    and 1 ⊘ (1 + exp(u)) as σ(−u), the product holding it simplified again (exp(u) ⊘ (1 +
    exp(u)) is σ(u)), so that the gradient is not exp(u) ⊘ (1 + exp(u))², inf/inf where
    exp(u) overflows."""
    logs = logistic = False
    for n in walk(root):
        logs = logs or _is_builtin(n, "log")
        logistic = logistic or _logistic(n) is not None
    if logs:
        root = rewrite(root, lambda m: _log_space(m) if _is_builtin(m, "log") else m)
    if logistic:
        root = rewrite(root, _as_sigmoid, renormalise=True)
    return root  # the common case: nothing to rewrite, and the DAG stays as it is


def _log_space(m: Node) -> Node:
    """A logarithm in its log-space form (``_stable_log``, or log(1 ± tanh u) as
    log 2 − softplus(∓2u)), else m itself."""
    x = simplify(m.arg)
    return _stable_log(x) or _log_one_plus_tanh(x) or m


def _logistic(m: Node):
    """u where m is 1 ⊘ (1 + exp(u)), else None."""
    return _one_plus_exp(simplify(m.arg)) if _is_builtin(m, "pow") and m.fn.param == -1 else None


def _as_sigmoid(m: Node) -> Node:
    """1 ⊘ (1 + exp(u)) as σ(−u) (normalised), else m itself."""
    u = _logistic(m)
    return m if u is None else simplify(F.apply("sigmoid", B.scale(-1, u)))


@functools.lru_cache(maxsize=4096)  # evaluate runs it once per node, not once per point
def numerical_forms(root: Node) -> Node:
    """root (simplified) in the form values are computed in, by ``Expr.evaluate`` and the
    code generator (printing keeps the form a person reads), each rewrite equal wherever the
    original is defined:
    1 − σ(u) as σ(−u), exact where σ(u) rounds to 1 (u ≳ 17 in float32, 37 in float64);
    a ⊙ σ(u) + b ⊙ σ(−u) as (a − b) ⊙ σ(u) + b where a − b cancels to something smaller than
    a and b (``_one_sigmoid``: BCE's gradient (1 − y) ⊙ σ(u) − y ⊙ σ(−u) is σ(u) − y);
    log(1 + u) as log1p(u) and c·exp(u) − c as c·expm1(u), exact where u is small;
    log(1 ± tanh u) as log 2 − softplus(∓2u) and log(c·cosh u) as log(c/2) + |u| +
    softplus(−2|u|), finite where tanh rounds to ∓1 or cosh overflows; σ(u) − 1 as −σ(−u)
    and softplus(u) − u as softplus(−u), which do not cancel to 0 (``_complements``)."""
    if not any(_value_form(n, probe=True) for n in walk(root)):
        return root
    return rewrite(root, _value_form, renormalise=True)


def _value_form(m: Node, probe: bool = False):
    """m in its value form (``numerical_forms``); with ``probe``, only whether one may apply."""
    u = _complement_of_sigmoid(m)
    if u is not None:
        return True if probe else simplify(F.apply("sigmoid", B.scale(-1, u)))
    if _is_builtin(m, "log"):
        stable = _log_one_plus_tanh(m.arg)
        if stable is not None:
            return True if probe else simplify(stable)
        rest = _one_plus(m.arg)
        if rest is not None:
            return True if probe else simplify(F.apply("log1p", rest))
        stable = _log_cosh(m.arg)
        if stable is not None:
            return True if probe else simplify(stable)
    if isinstance(m, Sum):
        if probe:
            return _exp_minus_one(m) is not None or _sigmoid_pair(m) is not None or \
                any(_is_builtin(t, "softplus") or _is_builtin(t, "sigmoid") for _, t in m.terms) or \
                _powers_of_sums(m)
        if _powers_of_sums(m):
            combined = _common_power(m)
            if combined is not None:
                return combined
        m = _one_sigmoid(m)
        if isinstance(m, Sum):
            replaced = _exp_minus_one(m)
            if replaced is not None:
                return simplify(replaced)
            replaced = _complements(m)
            if replaced is not None:
                return simplify(replaced)
    return False if probe else m


def _fractional_power_of_sum(n: Node) -> bool:
    base, e = _power_of(n)
    return base is not n and e is not None and not float(e).is_integer() and type(base) is Sum


def _powers_of_sums(s: Sum) -> bool:
    """Whether two terms or more of s hold a fractional power of a sum (the cheap test for
    ``_common_power``)."""
    return sum(_fractional_power_of_sum(t) or type(t) is Contract and
               any(_fractional_power_of_sum(o) for o in t.operands) for _, t in s.terms) > 1


def _times(m1: dict, m2: dict) -> dict:
    """The product of two monomials {atom: exponent}."""
    return {a: m1.get(a, 0.0) + m2.get(a, 0.0) for a in m1.keys() | m2.keys()}


def _monomial(t: Node):
    """An entry-wise term as (coefficient, {atom: exponent}): a product of entries (every
    factor read with the product's own labels), each factor a power of an atom (any other
    node: Xw, u, a sum); a sum proportional to another is that sum's multiple (2v − 2y is
    2(v − y)), or None where that needs a negative number to a fractional power."""
    if is_ones(t):
        return 1.0, {}
    if type(t) is Sum and len(t.terms) == 1:
        c, u = t.terms[0]
        inner = _monomial(u)
        return None if inner is None else (c * inner[0], inner[1])
    if type(t) is Contract and all(tuple(lab) == tuple(t.out) for lab in t.labels):
        coef, mono = 1.0, {}
        for o in t.operands:
            inner = _monomial(o)
            if inner is None:
                return None
            coef, mono = coef * inner[0], _times(mono, inner[1])
        return coef, mono
    base, e = _power_of(t)
    if e is None:
        return None
    e, coef = float(e), 1.0
    if type(base) is Sum and len(base.terms) > 1 and base.terms[0][0] != 1.0:
        lead = base.terms[0][0]
        if e != 1.0 and lead < 0:
            return None  # ((−1)·(…))^p: not a real factor for every p
        base = simplify(B.linear([(c / lead, x) for c, x in base.terms], base.shape))
        coef = lead ** e
    return coef, {base: e}


COMMON_POWER_STEPS = 2  # the largest integer gap between the powers of one base that is multiplied out


def _common_power(s: Sum):
    """Σ cᵢRᵢ ⊙ B^pᵢ, one sum B under powers that differ by integers (the Hessian of
    Σ√(1 + u²): (1 + u²)^−½ − u² ⊙ (1 + u²)^−3/2), as B^p ⊙ Σ cᵢRᵢ ⊙ B^(pᵢ − p) with p the least
    power, the polynomial multiplied out, where its terms cancel: (1 + u²)^−3/2.  Written
    the first way, each term is about u⁻¹ and their difference about u⁻³: it keeps a relative
    error of ε·u² (all digits of float32 at u ≈ 10⁴); the second keeps every digit.  Terms of
    matrices that differ only in a vector they are scaled by (Xᵀdiag(a)X − Xᵀdiag(b)X) are
    grouped first (``_scalings``).  None where no base cancels."""
    groups = _scalings(s)
    if not any(len(members) > 1 for members in groups.values()):  # entry-wise terms, or
        return _combined_powers(list(s.terms), s.shape)  # no two scaled alike
    changed, out = False, []
    for (rest_ops, rest_labs, out_labs, label, shape), members in groups.items():
        combined = _combined_powers([(c, vector) for c, vector, _ in members], shape) \
            if len(members) > 1 else None
        if combined is None:
            out.extend((c, t) for c, _, t in members)
            continue
        changed = True
        out.append((1.0, Contract(rest_ops + (combined,), rest_labs + ((label,),), out_labs)))
    if not changed:
        return None
    grouped = {id(t) for members in groups.values() for _, _, t in members}
    out.extend((c, t) for c, t in s.terms if id(t) not in grouped)
    return simplify(B.linear(out, s.shape))


def _scalings(s: Sum) -> dict:
    """The terms of s that are products scaled along one label by vectors (a diagonal),
    grouped by what they hold besides those vectors: {(the other factors, their labels,
    the output's labels, the label, the vectors' shape): [(coefficient, the vectors'
    product, the term)]}."""
    groups: dict = {}
    for c, t in s.terms:
        if type(t) is not Contract:
            continue
        single = [k for k, lab in enumerate(t.labels) if len(lab) == 1]
        labels = {t.labels[k][0] for k in single}
        if len(labels) != 1 or len(single) == len(t.operands):
            continue
        rest = [k for k in range(len(t.operands)) if k not in single]
        vectors = [t.operands[k] for k in single]
        key = (tuple(t.operands[k] for k in rest), tuple(tuple(t.labels[k]) for k in rest),
               tuple(t.out), labels.pop(), vectors[0].shape)
        groups.setdefault(key, []).append((c, _hadamard(vectors, vectors[0].shape), t))
    return groups


def _combined_powers(terms: list, shape):
    """``_common_power`` on entry-wise terms [(c, t)]: the combined node, or None."""
    monos = []
    for c, t in terms:
        m = _monomial(t)
        if m is None:
            return None
        monos.append((c * m[0], m[1]))
    bases = {a for _, m in monos for a, e in m.items() if type(a) is Sum and not float(e).is_integer()}
    for base in sorted(bases, key=lambda a: a.skey):
        powers = [m.get(base) for _, m in monos]
        if None in powers:
            continue
        low = min(powers)
        gaps = [p - low for p in powers]
        if not all(g.is_integer() and g <= COMMON_POWER_STEPS for g in gaps) or not any(gaps):
            continue
        expansion = [_monomial(x) for _, x in base.terms]
        if None in expansion:
            continue
        expansion = [(c * m[0], m[1]) for (c, _), m in zip(base.terms, expansion)]
        poly: dict = {}
        for (c, m), gap in zip(monos, gaps):
            parts = [(c, {a: e for a, e in m.items() if a is not base})]
            for _ in range(int(gap)):
                parts = [(c1 * c2, _times(m1, m2)) for c1, m1 in parts for c2, m2 in expansion]
            for c1, m1 in parts:
                key = frozenset((a, e) for a, e in m1.items() if e != 0.0)
                poly[key] = poly.get(key, 0.0) + c1
        scale = max(abs(c) for c in poly.values())
        kept = [(c, key) for key, c in poly.items() if abs(c) > 1e-12 * scale]
        if len(kept) >= len(monos):
            continue  # nothing cancelled: the form as it was
        rest = B.linear([(c, _hadamard([F.power(a, e) for a, e in sorted(key, key=lambda p: p[0].skey)],
                                        shape)) for c, key in kept], shape)
        return simplify(B.hadamard(F.power(base, low), rest))
    return None


def _hadamard(factors: list, shape) -> Node:
    """The entry-wise product of the factors (ones where there are none)."""
    if not factors:
        return B.ones(shape)
    return B.hadamard(*factors) if len(factors) > 1 else factors[0]


def _log_one_plus_tanh(x: Node):
    """log(1 ± tanh(u)) as log 2 − softplus(∓2u) (1 + tanh u = 2σ(2u)), else None: finite
    where tanh(u) rounds to ∓1 (|u| ≳ 19 in float64, 9 in float32), which gives −inf."""
    if not isinstance(x, Sum) or len(x.terms) != 2:
        return None
    for (c1, one), (c2, t) in (x.terms, x.terms[::-1]):
        u = t.arg if _is_builtin(t, "tanh") else None
        if c1 == 1 and abs(c2) == 1 and _is_unit(one) and u is not None:
            return B.linear([(math.log(2.0), B.ones(x.shape)),
                             (-1, F.apply("softplus", B.scale(-2 * c2, u)))], x.shape)
    return None


def _log_cosh(x: Node):
    """log(c·cosh(u)) for c > 0 as log(c/2) + |u| + softplus(−2|u|), finite where cosh(u)
    overflows (|u| > 710 in float64, 89 in float32), else None."""
    c, t = (x.terms[0] if isinstance(x, Sum) and len(x.terms) == 1 else (1.0, x))
    if not _is_builtin(t, "cosh") or not c > 0:
        return None
    a = F.apply("abs", t.arg)
    return B.linear([(1, a), (1, F.apply("softplus", B.scale(-2, a))), (math.log(c / 2), B.ones(x.shape))],
                    x.shape)


def _complements(s: Sum):
    """s with c·σ(u) − c·1 as −c·σ(−u), and c·softplus(u) − c·u as c·softplus(−u) (the first
    such pair), else None: σ(u) − 1 and softplus(u) − u cancel to nothing where σ(u) rounds
    to 1 (u ≳ 37 in float64), though their values, −σ(−u) and softplus(−u), are e⁻ᵘ."""
    units = {c: i for i, (c, t) in enumerate(s.terms) if _is_unit(t)}
    for i, (c, t) in enumerate(s.terms):
        if _is_builtin(t, "sigmoid") and -c in units:
            rest = [p for k, p in enumerate(s.terms) if k not in (i, units[-c])]
            return B.linear(rest + [(-c, F.apply("sigmoid", B.scale(-1, t.arg)))], s.shape)
        if _is_builtin(t, "softplus"):
            others = [p for k, p in enumerate(s.terms) if k != i]
            before = simplify(B.linear(others, s.shape)) if others else B.zeros(s.shape)
            after = simplify(B.linear(others + [(c, t.arg)], s.shape))
            if B.is_zero(after) or _size(after) < _size(before):  # the sum held −c·u
                return B.linear([(1, after), (c, F.apply("softplus", B.scale(-1, t.arg)))], s.shape)
    return None


def _is_unit(n: Node) -> bool:
    return is_ones(n) or (isinstance(n, Const) and n.value == 1)


def _one_plus(x: Node):
    """u where x is 1 + u (entry-wise, u not empty), else None."""
    if not isinstance(x, Sum) or len(x.terms) < 2:
        return None
    units = [i for i, (c, t) in enumerate(x.terms) if c == 1 and _is_unit(t)]
    if not units:
        return None
    return simplify(B.linear([p for i, p in enumerate(x.terms) if i != units[0]], x.shape))


def _exp_minus_one(s: Sum):
    """s with c·exp(u) − c·1 as c·expm1(u) (the first such pair), else None."""
    units = {c: i for i, (c, t) in enumerate(s.terms) if _is_unit(t)}
    for i, (c, t) in enumerate(s.terms):
        if _is_builtin(t, "exp") and -c in units:
            rest = [p for k, p in enumerate(s.terms) if k not in (i, units[-c])]
            return B.linear(rest + [(c, F.apply("expm1", t.arg))], s.shape)
    return None


def _factors(t: Node) -> list:
    """The entry-wise factors of a term of an entry-wise sum: a Hadamard product's operands,
    else the term itself."""
    if isinstance(t, Contract) and len(set(t.out)) == len(t.out) and all(lab == t.out for lab in t.labels):
        return list(t.operands)
    return [t]


def _sigmoid_pair(s: Sum):
    """u where the terms of s hold σ(u) and σ(−u) as entry-wise factors, else None; u is the
    argument of the two that is not written negated."""
    args = {f.arg for _, t in s.terms for f in _factors(t) if _is_builtin(f, "sigmoid")}
    if len(args) < 2:
        return None
    for u in args:
        negated = simplify(B.scale(-1, u))
        if negated in args:
            plain = not (isinstance(u, Sum) and len(u.terms) == 1 and u.terms[0][0] < 0)
            return u if plain else negated
    return None


def _size(n: Node) -> int:
    return sum(1 for _ in walk(n))


def _one_sigmoid(s: Sum) -> Node:
    """a ⊙ σ(u) + b ⊙ σ(−u) + r → (a − b) ⊙ σ(u) + b + r, by σ(−u) = 1 − σ(u), where a − b is a
    constant or smaller than a and than b: the coefficients cancel (BCE's gradient
    (1 − y) ⊙ σ(u) − y ⊙ σ(−u) is σ(u) − y), so one sigmoid is computed where two were, as
    the closed form does; else s.  Terms holding σ(±u) twice (σ(u) ⊙ σ(−u)) stay as they are."""
    u = _sigmoid_pair(s)
    if u is None:
        return s
    plus = simplify(F.apply("sigmoid", u))
    minus = simplify(F.apply("sigmoid", B.scale(-1, u)))
    a, b, rest = [], [], []
    for c, t in s.terms:
        fs = _factors(t)
        hits = [k for k, f in enumerate(fs) if f is plus or f is minus]
        if len(hits) != 1:
            rest.append((c, t))
            continue
        others = [f for k, f in enumerate(fs) if k != hits[0]]
        coef = B.hadamard(*others) if others else B.ones(s.shape)
        (a if fs[hits[0]] is plus else b).append((c, coef))
    if not a or not b:
        return s
    a, b = simplify(B.linear(a, s.shape)), simplify(B.linear(b, s.shape))
    merged = simplify(B.linear([(1, a), (-1, b)], s.shape))
    constant = isinstance(merged, Const) or B.is_zero(merged) or _is_unit(merged) or \
        (isinstance(merged, Sum) and len(merged.terms) == 1 and _is_unit(merged.terms[0][1]))
    if not constant and _size(merged) >= min(_size(a), _size(b)):
        return s  # a − b does not cancel: two sigmoids cost less than the cancellation risks
    return simplify(B.linear(rest + [(1, B.hadamard(merged, plus)), (1, b)], s.shape))


def _complement_of_sigmoid(n: Node):
    """u where n is 1 − σ(u), else None."""
    if isinstance(n, Sum) and len(n.terms) == 2:
        (ca, a), (cb, b) = n.terms
        for (c1, one), (c2, other) in (((ca, a), (cb, b)), ((cb, b), (ca, a))):
            if c1 == 1 and c2 == -1 and is_ones(one) and _is_builtin(other, "sigmoid"):
                return other.arg
    return None


def rewrite(root: Node, fn, renormalise: bool = False) -> Node:
    """root with fn applied to every node after its children, iteratively (deep DAGs); with
    ``renormalise``, a node whose children changed is simplified again (its terms may now
    merge: y ⊙ σ(u)σ(−u) + (1 − y) ⊙ σ(−u)σ(u) = σ(u)σ(−u))."""
    out: dict = {}
    stack = [(root, False)]
    while stack:  # children before parents, iteratively (deep expressions)
        n, done = stack.pop()
        if n in out:
            continue
        if not done:
            stack.append((n, True))
            stack.extend((c, False) for c in n.children if c not in out)
            continue
        kids = tuple(out[c] for c in n.children)
        m = n if all(k is c for k, c in zip(kids, n.children)) else n.with_children(kids)
        if renormalise and m is not n:
            m = simplify(m)
        out[n] = fn(m)
    return out[root]


def _stable_log(x: Node):
    """log of a quantity that underflows, in the log-space form that does not (all equal
    wherever the left side is defined):
    log σ(u) = −softplus(−u), log(1 − σ(u)) = −softplus(u), and
    log softmax(Z) = Z − logsumexp(Z) along the softmax's axis (broadcast back over it), and
    log Σ exp(u) = logsumexp(u) (a vector, or a matrix along one axis), and
    log(1 + exp(u)) = softplus(u), finite where exp(u) overflows, and log eᵘ = u."""
    u = _one_plus_exp(x)
    if u is not None:
        return F.apply("softplus", u)
    if _is_builtin(x, "sigmoid"):
        return B.scale(-1, F.apply("softplus", B.scale(-1, x.arg)))
    u = _complement_of_sigmoid(x)
    if u is not None:
        return B.scale(-1, F.apply("softplus", u))
    if _is_builtin(x, "exp"):  # log eᵘ = u, finite where eᵘ overflows or underflows
        return x.arg
    if isinstance(x, Contract) and len(x.operands) == 1 and _is_builtin(x.operands[0], "exp") and \
            len(x.labels[0]) == len(x.out) + 1 and x.operands[0].ndim in (1, 2):
        # log Σ exp(u) = logsumexp(u), over a vector or along a matrix's rows or columns
        lab = x.labels[0]
        summed = next(i for i, a in enumerate(lab) if a not in x.out)
        if tuple(a for a in lab if a != lab[summed]) == tuple(x.out):
            return LogSumExp(summed, x.operands[0].arg)
    if isinstance(x, Softmax):
        z, axis = x.arg, x.axis
        labels = tuple(range(z.ndim))
        lse = LogSumExp(axis, z)
        spread = Contract((lse, Delta(z.shape[axis], 1)), (labels[:axis] + labels[axis + 1:], (axis,)),
                          labels)
        return B.linear([(1, z), (-1, spread)], z.shape)
    return None


def _one_plus_exp(x: Node):
    """u where x is 1 + exp(u) (entry-wise), else None."""
    if not isinstance(x, Sum) or len(x.terms) != 2 or any(c != 1 for c, _ in x.terms):
        return None
    (_, a), (_, b) = x.terms
    for one, other in ((a, b), (b, a)):
        unit = is_ones(one) or (isinstance(one, Const) and one.value == 1)
        if unit and isinstance(other, Elementwise) and other.fn.builtin and \
                other.fn.name == "exp":
            return other.arg
    return None


def _merge_sigmoids(ops, labs):
    """exp(u) ⊙ σ(−u) → σ(u) for factors read with the same labels (eᵘ/(1 + eᵘ) = σ(u))."""
    if not any(isinstance(op, Elementwise) and op.fn.builtin and op.fn.name == "sigmoid"
               for op in ops):
        return ops, labs  # the common case, on every product: nothing to merge
    for i, (op, lab) in enumerate(zip(ops, labs)):
        if not (isinstance(op, Elementwise) and op.fn.builtin and op.fn.name == "exp"):
            continue
        negated = simplify(B.scale(-1, op.arg))
        for j, (other, olab) in enumerate(zip(ops, labs)):
            if j != i and olab == lab and isinstance(other, Elementwise) and \
                    other.fn.builtin and other.fn.name == "sigmoid" and other.arg is negated:
                keep = [k for k in range(len(ops)) if k not in (i, j)]
                return ([ops[k] for k in keep] + [simplify(F.apply("sigmoid", op.arg))],
                        [labs[k] for k in keep] + [lab])
    return ops, labs


def _plain(v: float) -> bool:
    """Whether v is a fraction with a small denominator (1/2, 4), not 0.8660254…"""
    from fractions import Fraction
    return np.isfinite(v) and float(Fraction(v).limit_denominator(1000)) == v


def _merge_tanh(ops, labs):
    """sinh(u) ⊙ cosh(u)⁻¹ → tanh(u) for factors read with the same labels."""
    if not any(_is_builtin(op, "sinh") for op in ops):
        return ops, labs
    for i, (op, lab) in enumerate(zip(ops, labs)):
        if not _is_builtin(op, "sinh"):
            continue
        for j, (other, olab) in enumerate(zip(ops, labs)):
            if j != i and olab == lab and _is_builtin(other, "pow") and other.fn.param == -1 and \
                    _is_builtin(other.arg, "cosh") and other.arg.arg is op.arg:
                keep = [k for k in range(len(ops)) if k not in (i, j)]
                return ([ops[k] for k in keep] + [simplify(F.apply("tanh", op.arg))],
                        [labs[k] for k in keep] + [lab])
    return ops, labs


def normalise_inv(n: Inv) -> Node:
    if B.is_zero(n.arg):  # inv(S − Sᵀ): no value to stand behind
        raise MatdiffError("the inverse of a matrix that simplifies to 0 does not exist (its "
                           "argument is the zero matrix for all values)")
    if isinstance(n.arg, Inv):  # (X⁻¹)⁻¹ → X
        return n.arg.arg
    if isinstance(n.arg, Delta):  # I⁻¹ → I
        return n.arg
    scaled = _scaled(n.arg)
    if scaled is not None:  # (cs·M)⁻¹ → c⁻¹s⁻¹·M⁻¹: a scalar factor leaves the inverse
        c, scalars, m = scaled
        return simplify(B.scale(1.0 / c, Contract(
            tuple(F.power(x, -1.0) for x in scalars) + (Inv(m),),
            ((),) * len(scalars) + ((0, 1),), (0, 1))))
    square = _square_product(n.arg)
    if square is not None:  # (A′B′)⁻¹ → B′⁻¹A′⁻¹ for square A and B, each maybe transposed
        (a, la), (b, lb), (i, j, k) = square
        m = _fresh(n.arg.out, *n.arg.labels)
        first = tuple({j: i, k: m}[x] for x in lb)   # B′⁻¹ runs i → m
        second = tuple({i: m, j: k}[x] for x in la)  # A′⁻¹ runs m → k
        return simplify(Contract((Inv(b), Inv(a)), (first, second), (i, k)))
    return n


def _scaled(m: Node):
    """(c, scalars, M) where m = c·Πscalars·M for a number c ≠ 0, scalar operands and a
    square matrix M (the matrix operand, transposed where the product reads it so), else
    None; (1, (), M) is never returned."""
    c, scalars = 1.0, ()
    if type(m) is Sum and len(m.terms) == 1 and m.terms[0][0] != 0:
        c, m = m.terms[0]
    if type(m) is Contract and len(m.out) == 2:
        rest = [(op, lab) for op, lab in zip(m.operands, m.labels) if lab]
        if len(rest) == 1 and len(set(rest[0][1])) == 2 and set(rest[0][1]) == set(m.out):
            scalars = tuple(op for op, lab in zip(m.operands, m.labels) if not lab)
            op, lab = rest[0]
            m = op if tuple(lab) == tuple(m.out) else simplify(
                Contract((op,), (lab,), m.out))
    if c == 1.0 and not scalars or m.ndim != 2:
        return None
    return c, scalars, m


def _square_product(c: Node):
    """The two factors (with labels) of c = AB, A and B square matrices, read as a chain
    i→j→k (transposes allowed), else None."""
    if not isinstance(c, Contract) or len(c.operands) != 2 or len(c.out) != 2:
        return None
    (a, la), (b, lb) = zip(c.operands, c.labels)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != a.shape[1] or b.shape[0] != b.shape[1] or \
            isinstance(a, Delta) or isinstance(b, Delta):
        return None
    i, k = c.out
    shared = set(la) & set(lb)
    if len(shared) != 1 or len(set(la)) != 2 or len(set(lb)) != 2:
        return None
    (j,) = shared
    if i == k or j in (i, k):
        return None
    if set(la) == {i, j} and set(lb) == {j, k}:
        return (a, la), (b, lb), (i, j, k)
    if set(lb) == {i, j} and set(la) == {j, k}:
        return (b, lb), (a, la), (i, j, k)
    return None


def _groups(src, dst):
    """For a reshape that only merges neighbouring axes, the source axes of each target
    axis ((0,), (1, 2), …); None for any other reshape (or a dim of 1, which is ambiguous)."""
    if any(d == 1 for d in tuple(src) + tuple(dst)):
        return None
    out, i = [], 0
    for d in dst:
        start, acc = i, 1
        while i < len(src) and acc != d:
            acc = D.mul(acc, src[i])
            i += 1
        if acc != d or i == start:
            return None
        out.append(tuple(range(start, i)))
    return out if i == len(src) else None


def _lift_reshape(c: Contract):
    """A factor that is a merging reshape, whose merged axes are result axes read by no
    other factor, is taken apart and the reshape done last: (reshape(P))_(ij)k z_j… becomes
    reshape(P_ijk z_j …), so its deltas meet the other factors and Kronecker forms show."""
    for n, (op, lab) in enumerate(zip(c.operands, c.labels)):
        if not isinstance(op, Reshape) or op.arg.ndim <= op.ndim:
            continue
        groups = _groups(op.arg.shape, op.shape)
        everywhere = [x for ls in c.labels for x in ls]
        if groups is None or any(len(g) > 1 and (everywhere.count(x) != 1 or x not in c.out)
                                 for g, x in zip(groups, lab)):
            continue
        fresh = _fresh(c.out, *c.labels)
        fine, split = [], {}
        for g, x in zip(groups, lab):
            if len(g) == 1:
                fine.append(x)
            else:
                split[x] = list(range(fresh, fresh + len(g)))
                fine.extend(split[x])
                fresh += len(g)
        out = tuple(y for x in c.out for y in split.get(x, [x]))
        inner = Contract(c.operands[:n] + (op.arg,) + c.operands[n + 1:],
                         c.labels[:n] + (tuple(fine),) + c.labels[n + 1:], out)
        return simplify(Reshape(inner, c.shape))
    return None


def normalise_reshape(r: Reshape) -> Node:
    if r.arg.shape == r.shape:
        return r.arg
    if isinstance(r.arg, Reshape):  # reshape(reshape(x)) → reshape(x)
        return simplify(Reshape(r.arg.arg, r.shape))
    if B.is_zero(r.arg):
        return B.zeros(r.shape)
    if isinstance(r.arg, Sum) and len(r.arg.terms) == 1:  # reshape(c·x) → c·reshape(x)
        (k, t), = r.arg.terms
        return simplify(B.scale(k, Reshape(t, r.shape)))
    if is_ones(r.arg):  # the all-ones tensor in any layout
        return simplify(B.ones(r.shape))
    half = len(r.shape) // 2
    if isinstance(r.arg, Delta) and r.arg.order == 2 and len(r.shape) == 2 * half and \
            r.shape[:half] == r.shape[half:] and D.size(r.shape[:half]) == r.arg.dim:
        # I of n·m laid out as (n, m, n, m) is δ_ik δ_jl: Kronecker products of identities
        return simplify(B.identity_tensor(r.shape[:half]))
    if isinstance(r.arg, Delta) and r.arg.order == 2 and len(r.shape) > 2:
        for head, tail in ((r.shape[:1], r.shape[1:]), (r.shape[:-1], r.shape[-1:])):
            fine = tail if len(tail) > 1 else head  # I of n·m as (n·m, n, m): δ_(ij),(kl) merged
            if (head == (r.arg.dim,) or tail == (r.arg.dim,)) and len(fine) > 1 and \
                    D.size(fine) == r.arg.dim:
                return simplify(Reshape(B.identity_tensor(fine), r.shape))
    return r


def _square_of(m: Node) -> Node:
    """The matrix product m m."""
    return B.contract((m, m), ((0, 1), (1, 2)), (0, 2))


def normalise_frechet(n: Frechet) -> Node:
    """L_f(X, I) = f′(X), as I commutes with X: expm(X), X⁻¹, ½ sqrtm(X)⁻¹, cosₘ(X), …
    (where f′ is a general matrix function itself; else L_f(X, I) stays)."""
    fn, x, d = n.args
    prime = {"exp": lambda: Funm("exp", x), "log": lambda: Inv(x),
             "sqrt": lambda: B.scale(0.5, Inv(Funm("sqrt", x))), "sin": lambda: Funm("cos", x),
             "cos": lambda: B.scale(-1.0, Funm("sin", x)), "sinh": lambda: Funm("cosh", x),
             "cosh": lambda: Funm("sinh", x), "expm1": lambda: Funm("exp", x),
             "softplus": lambda: Funm("sigmoid", x),
             "tanh": lambda: B.linear([(1, d), (-1, _square_of(Funm("tanh", x)))], x.shape),
             "tan": lambda: B.linear([(1, d), (1, _square_of(Funm("tan", x)))], x.shape),
             "sigmoid": lambda: B.linear([(1, Funm("sigmoid", x)), (-1, _square_of(Funm("sigmoid", x)))],
                                         x.shape),
             "log1p": lambda: Inv(B.add(d, x)),
             "arctan": lambda: Inv(B.add(d, _square_of(x)))}
    if isinstance(d, Delta) and d.order == 2 and fn in prime:
        return prime[fn]()
    if B.is_zero(d):
        return d
    return n


_STEPS = _steps()
_STEP_KINDS = frozenset().union(*(needs for _, needs in _STEPS))

NORMALISE = {
    Contract: normalise_contract,
    Sum: normalise_sum,
    Elementwise: normalise_elementwise,
    Inv: normalise_inv,
    Reshape: normalise_reshape,
    Frechet: normalise_frechet,
}
