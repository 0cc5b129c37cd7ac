"""Declared facts: equalities among variables that the user knows and the algebra cannot see.

A fact ``lhs = rhs`` (each row of Y sums to 1: Y1 = 1; y is in {0, 1}: y ⊙ y = y; 1ᵀw = 1;
XᵀX = I) is a rewrite rule applied to a derivative after it is taken (``apply``): the
derivative is the ordinary one, and a fact only changes how it is written, so the result
equals the derivative wherever the facts hold.  ``satisfy`` moves random values onto the
set where the facts hold, so that ``md.check`` compares at points where the rewritten
result is meant to be right.

Matching is structural, on the simplified IR:

- a left side that is a contraction matches any sub-product of a contraction: its factors
  among the product's factors, with labels that correspond one to one, and each axis the
  left side sums over summed by those factors alone (Y_pq summed over q, in any product
  where q appears nowhere else, is (Y1)_p = 1);
- any other left side (y ⊙ y simplifies to y², a whole node) matches where that very node
  occurs.
"""
from __future__ import annotations

import functools

import numpy as np

from .build import add, scale, transpose
from .diff import jacobian
from .errors import MatdiffError
from .ir import Const, Contract, Delta, Elementwise, Inv, Node, Sum, Var, free_vars
from .simplify import rewrite, simplify

MAX_PASSES = 8  # rewriting stops at a fixed point, or after this many passes
MAX_FACTORS = 8  # a left side with more factors is matched only as a whole node
MAX_SUM = 4  # a sum of more terms is not distributed to find a match
MAX_DEPTH = 2  # nor more than this many sums of one product at once


class Fact:
    """lhs = rhs between two simplified nodes of one shape; ``text`` is how it is shown."""

    __slots__ = ("lhs", "rhs", "text")

    def __init__(self, lhs: Node, rhs: Node, text: str):
        if lhs.shape != rhs.shape:
            raise MatdiffError(f"the fact {text}: its two sides have different shapes")
        if not free_vars(lhs):
            raise MatdiffError(f"the fact {text}: its left side has no variable, so there is "
                               f"nothing it could tell about one")
        self.lhs, self.rhs, self.text = simplify(lhs), simplify(rhs), text
        if self.lhs is self.rhs:
            raise MatdiffError(f"the fact {text} holds for any values: it says nothing")

    @property
    def variables(self) -> frozenset:
        return free_vars(self.lhs) | free_vars(self.rhs)

    def __repr__(self):
        return f"<fact {self.text}>"


def apply(root: Node, facts) -> Node:
    """root with every occurrence of a fact's left side replaced by its right side, then
    simplified, until nothing changes."""
    facts = list(facts or ())
    for _ in range(MAX_PASSES):
        new = root
        for fact in facts:
            new = rewrite(new, lambda n, f=fact: _replace(n, f), renormalise=True)
            new = simplify(new)
        if new is root:
            return root
        root = new
    return root


def _replace(n: Node, fact: Fact, depth: int = 0) -> Node:
    if n is fact.lhs:
        return fact.rhs
    if isinstance(n, Contract) and isinstance(fact.lhs, Contract) and \
            len(fact.lhs.operands) <= MAX_FACTORS:
        m = _match(fact.lhs, n)
        if m is not None:
            used, phi = m
            keep = [k for k in range(len(n.operands)) if k not in used]
            rhs_labels = tuple(phi[lab] for lab in fact.lhs.out)
            ops = [n.operands[k] for k in keep] + [fact.rhs]
            labs = [n.labels[k] for k in keep] + [rhs_labels]
            return simplify(Contract(tuple(ops), tuple(labs), n.out))
        return _distributed(n, fact, depth)
    return n


def _distributed(n: Contract, fact: Fact, depth: int = 0) -> Node:
    """n with one sum among its factors distributed, where the fact then matches a term:
    Qᵀ(Qw − b) with QᵀQ = I is w − Qᵀb; a term that still holds a sum (a coefficient 1 − ε)
    is distributed in turn, up to MAX_DEPTH sums.  n itself where no term matches."""
    if depth >= MAX_DEPTH:
        return n
    for k, op in enumerate(n.operands):
        if not isinstance(op, Sum) or len(op.terms) > MAX_SUM:
            continue
        terms, hit = [], False
        for c, t in op.terms:
            ops = n.operands[:k] + (t,) + n.operands[k + 1:]
            term = simplify(Contract(ops, n.labels, n.out))
            new = _replace(term, fact, depth + 1) if isinstance(term, Contract) else term
            hit = hit or new is not term
            terms.append((c, new))
        if hit:
            return simplify(Sum(tuple(terms), n.shape))
    return n


def _match(pattern: Contract, target: Contract):
    """(target operand positions, label map) where pattern is a sub-product of target, else
    None."""
    P, T = pattern.operands, target.operands
    if len(P) > len(T):
        return None
    summed = set(lab for labs in pattern.labels for lab in labs) - set(pattern.out)

    def extend(i, used, phi):
        if i == len(P):
            outside = [lab for k, labs in enumerate(target.labels) if k not in used for lab in labs]
            outside += list(target.out)
            if any(phi[lab] in outside for lab in summed):
                return None
            return used, phi
        for k, op in enumerate(T):
            if k in used or op is not P[i]:
                continue
            new = dict(phi)
            ok = True
            for a, b in zip(pattern.labels[i], target.labels[k]):
                if new.setdefault(a, b) != b:
                    ok = False
                    break
            if not ok or len(set(new.values())) != len(new):  # labels correspond one to one
                continue
            found = extend(i + 1, used + [k], new)
            if found is not None:
                return found
        return None

    return extend(0, [], {})


# --------------------------------------------------------------------------- sampling

def residual(facts) -> list:
    """The nodes lhs − rhs of the facts, each zero where its fact holds."""
    return [simplify(add(f.lhs, scale(-1.0, f.rhs))) for f in facts]


def satisfy(facts, values: dict, evaluate, tol: float = 1e-12, steps: int = 100) -> dict:
    """values with the facts' variables moved to a nearby point where every fact holds, by
    Gauss–Newton steps on Σ‖lhs − rhs‖² (the minimum-norm step: it moves the values as little
    as the facts require).  ``evaluate(node, values)`` gives a node's value.  Raises
    MatdiffError where no such point is found."""
    facts = list(facts or ())
    if not facts:
        return values
    rs = residual(facts)
    vs = sorted(set().union(*(f.variables for f in facts)), key=lambda v: v.name)
    js = [[jacobian(r, v) for v in vs] for r in rs]
    values = dict(values)
    shapes = [np.shape(values[v.name]) for v in vs]
    sizes_ = [int(np.prod(s)) for s in shapes]
    norm = np.inf
    for _ in range(steps):
        r = np.concatenate([np.ravel(evaluate(n, values)) for n in rs])
        norm = float(np.abs(r).max(initial=0.0))
        if norm <= tol:
            return values
        J = np.concatenate([np.concatenate(
            [np.reshape(evaluate(j, values), (-1, size)) for j, size in zip(row, sizes_)], axis=1)
            for row in js], axis=0)
        step = np.linalg.lstsq(J, -r, rcond=None)[0]
        for v, shape, part in zip(vs, shapes, np.split(step, np.cumsum(sizes_)[:-1])):
            x = np.asarray(values[v.name], dtype=float) + part.reshape(shape)
            values[v.name] = (x + x.T) / 2 if v.symmetric else x
    raise MatdiffError(f"could not find values where {', '.join(f.text for f in facts)} "
                       f"hold{'s' if len(facts) == 1 else ''} (the residual stays at {norm:.3g}); "
                       f"check that the facts can hold together at these sizes")


# --------------------------------------------------------------------------- definiteness

POSITIVE_FUNCTIONS = {"exp", "softplus", "sigmoid", "cosh"}  # f(u) > 0 for every real u


def positive_definite(node: Node) -> bool:
    """Whether the square matrix ``node`` is symmetric positive definite for every value of
    its variables (where it is defined): by declaration (``md.matrix(..., spd=True)``) or by
    structure (``definiteness``)."""
    return node.ndim == 2 and node.shape[0] == node.shape[1] and definiteness(simplify(node)) == 2


@functools.lru_cache(maxsize=4096)  # nodes are hash-consed: each is asked about once
def definiteness(n: Node) -> int:
    """2 where the simplified square matrix n is positive definite by structure, 1 where it is
    positive semidefinite, 0 where neither is known. Conservative: a Gram XᵀX and a
    congruence XᵀSX are only semidefinite (X need not have full column rank); adding a
    positive-definite term (λI with λ > 0 known positive, an spd variable) makes a sum
    definite. Positive definite: an spd variable, I, the inverse of one, a positive multiple
    or a sum with positive coefficients of semidefinite terms one of which is definite."""
    if n.ndim != 2 or n.shape[0] != n.shape[1]:
        return 0
    if isinstance(n, Var):
        return 2 if n.symmetric == "spd" else 0
    if isinstance(n, Delta):
        return 2
    if isinstance(n, Inv):
        return 2 if definiteness(n.arg) == 2 else 0
    if isinstance(n, Sum):
        if not n.terms:
            return 0
        kinds = [definiteness(t) if c > 0 else 0 for c, t in n.terms]
        return 0 if min(kinds) == 0 else max(kinds)
    if isinstance(n, Contract):
        return _contract_definiteness(n)
    return 0


def _contract_definiteness(n: Contract) -> int:
    scalars = [op for op in n.operands if op.ndim == 0]
    if not all(_positive_scalar(s) for s in scalars):
        return 0
    ops = [(op, lab) for op, lab in zip(n.operands, n.labels) if op.ndim != 0]
    i, j = n.out
    if len(ops) == 1:  # cS or cSᵀ: c > 0 and S definite
        op, lab = ops[0]
        return definiteness(op) if set(lab) == {i, j} and len(set(lab)) == 2 else 0
    if len(ops) == 2:  # XᵀX (or XXᵀ): the summed label at the same axis of both
        (a, la), (b, lb) = ops
        if a is not b and a.ndim == 2 and simplify(transpose(a)) is b:
            a, la = b, la[::-1]  # (X + Y)ᵀ simplified to Xᵀ + Yᵀ, a node of its own: read as Xᵀ
        if a is b and a.ndim == 2 and len(set(la) | set(lb)) == 3:
            summed = [x for x in la if x not in (i, j)]
            if len(summed) == 1 and summed[0] in lb and la.index(summed[0]) == lb.index(summed[0]) \
                    and set(la + lb) == {i, j, summed[0]} and la != lb:
                return 1
        return 0
    if len(ops) == 3:  # XᵀSX with S semidefinite (symmetric): semidefinite, in any operand order
        for m in range(3):
            (a, la), (b, lb) = [ops[k] for k in range(3) if k != m]
            s, ls = ops[m]
            if a is not b or a.ndim != 2 or len(set(ls)) != 2 or definiteness(s) == 0:
                continue
            for ax in (0, 1):  # x_{p i} s_{p q} y_{q j}, p and q summed (or X's axes swapped)
                p, q, i2, j2 = la[ax], lb[ax], la[1 - ax], lb[1 - ax]
                if {p, q} == set(ls) and p != q and {i2, j2} == {i, j} and i2 != j2:
                    return 1
        return 0
    return 0


def _positive_scalar(s: Node) -> bool:
    """Whether the scalar s is positive for every value: a positive constant, a variable
    declared positive (``md.scalar(..., positive=True)``), exp, softplus, σ or cosh of
    anything, a product of such."""
    if isinstance(s, Const):
        return s.value > 0
    if isinstance(s, Var):
        return s.symmetric == "positive"
    if isinstance(s, Elementwise):
        return s.fn.builtin and s.fn.name in POSITIVE_FUNCTIONS
    if isinstance(s, Contract):
        return all(_positive_scalar(o) for o in s.operands)
    return False
