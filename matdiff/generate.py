"""Generated code: expressions compiled into a readable NumPy, JAX or PyTorch function.

``codegen(outputs)`` writes one line per intermediate, each commented with its matrix
notation; subexpressions shared between outputs (a loss, its gradient, its Hessian) are
computed once, because equal IR nodes are the same node.  A contraction of several factors
is split into pairwise steps, smallest result first, and each step is written
with the NumPy primitive it is — ``a @ b``, ``a.T @ b``, ``a[:, None] * b``, ``(a * b).sum()``
— with ``np.einsum`` only where none fits.  Kronecker deltas, identities and diag(·) are
never built: their labels are merged before the split.  The output is a standalone module
(it imports numpy, jax.numpy or torch only).  This module is the planner: it lowers the IR
to steps written in NumPy's spelling; the backends differ only in their emitter tables
(``emitters.py``), which say how each spells them.
"""
from __future__ import annotations

import builtins
import functools
import heapq
import inspect
import keyword
import math
import re
import string
import sys
import unicodedata

import numpy as np

from . import dims as D
from .emitters import BACKENDS, CHOLESKY, HELPERS, NOT_FINITE, NUMPY_FUNCTIONS, RANK_MESSAGE, TRIANGULAR
from .errors import EvaluationError, MatdiffError, NotSupportedError
from .evaluate import (C_SERIES, CHOICE_TOLERANCE, CLOSE, CLUSTER, GAP_COINCIDE, _scaled_variable, _shown,
                       _svd_squares, check_positive, check_shapes, check_symmetric, complex_value, is_min_dim,
                       min_arguments, variables, TIE_CANCEL, _children_first, _rescaled,
                       _singular_gap_matrices)
from .expr import Expr, lift
from .ir import (GENERAL_FUNCTIONS, Basis, Cholesky, Const, Contract, Delta, Det, DivDiff, DivDiff2, DivDiff3,
                 DivDiff3Apply, EigGap, Eigh, Elementwise, Frechet, Funm, Inv, LogDet, LogSumExp, MatFn, Node,
                 Phi, Pinv, Reshape, ScalarFn, Softmax, Sum, Svd, Unary, free_vars, is_ones, merge_deltas,
                 walk)
from .printing import TEXT, render
from .recognise import recognise
from .show import FORMS, index_form
from .simplify import numerical_forms, rewrite, simplify
from .library import positive_definite
from .evaluate import (KINKS, PAIR_CLOSE, TAYLOR_CLOSE, TAYLOR_ORDER, _derivative_polynomials, _in_units,
                       _grows, _sech2_polynomials, _taylor_scale, _trace, _user_radius)
from .evaluate import _Complementary, _OffDiagonal, _singular_divided, _user_nodes, traced_unsupported

LETTERS = string.ascii_letters
SCATTER = "    <scatter{op} {full}|{index}|{values}>"  # a backend's way to write or add entries


class _Writer:
    def __init__(self, sizes_hint: dict, functions: dict):
        self.lines, self.count, self.hint, self.written = [], 0, sizes_hint, {}
        self.prefix = "t"  # codegen picks another where a variable is named like t1
        self.code_of: dict = {}  # name → its code, for terms written inline
        self.uses: dict = {}
        self.sigmoid_pairs: dict = {}  # σ(u) and σ(−u) computed together (``_sigmoid_pairs``)
        self.symmetric: set = set()  # names of symmetric matrices (Gram products)
        # sums written without the coefficient all their terms share (2(a − b) as a − b):
        # every product that reads one applies that factor itself (``_contract``)
        self.common: dict = {}
        self.inlined: set = set()  # sums a product is distributed over (``_product``)
        # diagonal outputs a sum adds onto its other terms (``_sum_onto``), and the array
        # that the one being lowered adds into (None: zeros, its own)
        self.folded: set = set()
        self.into: str | None = None
        self.functions = {**NUMPY_FUNCTIONS, **functions}  # the backend's element-wise ones
        # inverses a product may use as solves: the inverse's name → the matrix's; how many
        # products read each Inv node; the backend's (factorise, solve) templates, or None
        self.inverses: dict = {}
        self.inverse_uses: dict = {}
        self.pinvs: dict = {}  # X⁺'s name → the name of X's thin SVD (``_pinv_step``)
        self.lu: tuple | None = None
        self.shared_lu: set = set()  # matrices whose log-determinant and inverse share one LU
        # Cholesky instead of LU for the symmetric positive-definite matrices (``spd``, nodes)
        # that are inverted, solved with or under a log det; triangular solves with a Cholesky
        # factor: the backend's templates (CHOLESKY, TRIANGULAR), or None
        self.cho: tuple | None = None
        self.tri: str | None = None
        self.spd: set = set()
        self.cholesky: dict = {}  # S → chol(S) where the results hold it and S is in ``spd``
        self.checks = False  # md.codegen's checks: f(X) of a general X that is not finite refused

    def fresh(self) -> str:
        self.count += 1
        return f"{self.prefix}{self.count}"

    def emit(self, code: str, comment: str = "", pure: bool = True) -> str:
        """A line ``tN = code``; code already written (pure) is not written twice, and a
        bare name is not copied."""
        if code.isidentifier():
            return code
        if pure and code in self.written:
            return self.written[code]
        name = self.fresh()
        self.lines.append(f"    {name} = {code}" + (f"  # {comment}" if comment else ""))
        if pure:
            self.written[code] = name
            self.code_of[name] = code
        return name

    def live_lines(self, results: list) -> tuple:
        """The lines that the results need (a matrix sum that was distributed leaves its
        transposes unused), numbered afresh, and the results' new names."""
        name = re.compile(rf"\b{self.prefix}\d+\b")
        assigned = re.compile(rf"\s*({self.prefix}\d+) = ")
        used, kept = set(results), []
        for line in reversed(self.lines):
            m = assigned.match(line)
            if m and m.group(1) not in used:
                continue
            used.update(name.findall(line.partition("  # ")[0]))
            kept.append(line)
        new: dict = {}
        for line in reversed(kept):
            m = assigned.match(line)
            if m and m.group(1) not in new:  # a name the tie branch assigns in both arms: one number
                new[m.group(1)] = f"{self.prefix}{len(new) + 1}"

        def rename(text):
            return name.sub(lambda m: new.get(m.group(0), m.group(0)), text)

        lines = []
        for line in reversed(kept):
            code, hash_, comment = line.partition("  # ")
            lines.append(rename(code) + hash_ + comment)
        return lines, [rename(r) for r in results]


COMMENT_REFERENCES = 200  # larger intermediates are commented from their index form, cut short


def _references_over(node: Node, limit: int) -> bool:
    """Whether the DAG below node holds more than ``limit`` operand references."""
    total = 0
    for n in walk(node):
        total += len(n.children)
        if total > limit:
            return True
    return False


@functools.lru_cache(maxsize=8192)
def _comment(node: Node) -> str:
    """A line's comment: the node's matrix notation (nodes are immutable and hash-consed, so
    the three backends' code for one expression share it)."""
    try:  # the notation of a large intermediate costs more than the 70 characters shown
        text = index_form(node, 80) if _references_over(node, COMMENT_REFERENCES) else \
            render(recognise(node), TEXT, {v.name for v in free_vars(node) if hasattr(v, "name")})
    except Exception:  # noqa: BLE001 - a comment must never stop code generation
        text = index_form(node, 80)
    text = text if "\n" not in text else text.splitlines()[0]
    return text if len(text) <= 70 else text[:69] + "…"


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
    if coef != 1.0 and ops and len(uniq) == len(out):
        size = _sizes(w, dim)
        small = min(range(len(ops)), key=lambda k: np.prod([size[x] for x in set(labs[k])]))
        if np.prod([size[x] for x in set(labs[small])]) < np.prod([size[x] for x in inner]):
            ops[small] = f"({_scaled(coef, ops[small])})"
            coef = 1.0
    if not ops:
        code = "np.asarray(1.0)"
    elif len(ops) == 1:
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
    the product σ(u) ⊙ σ(−u) as its node."""
    code = w.functions.get("__dsigmoid")
    if code is None:
        return
    for i in range(len(kept)):
        for j in range(i + 1, len(kept)):
            a, b = kept[i][0], kept[j][0]
            if labs[i] != labs[j] or not (_is_sigmoid(a) and _is_sigmoid(b)) or \
                    w.uses.get(a) != 1 or w.uses.get(b) != 1:  # a sigmoid needed elsewhere is
                continue  # computed anyway: the other one is then the cheaper (one exp either way)
            u = a.arg if _negated(a.arg, b.arg) else b.arg if _negated(b.arg, a.arg) else None
            if u is None or u not in args:
                continue
            lab = tuple(range(len(labs[i])))
            kept[i] = (Contract((a, b), (lab, lab), lab), kept[i][1])
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
    if sum(op in w.inverses for op in ops) > 1:  # S⁻¹BS⁻¹: B meets an inverse first, so each
        # inverse is solved with (S⁻¹ times S⁻¹ first would form the one it solves for)
        last = sorted(range(len(ops)), key=lambda k: ops[k] in w.inverses)
        ops, labs = [ops[k] for k in last], [labs[k] for k in last]
    if gram:
        _gram(w, ops, labs, out, dim)
    for i, j, keep, _ in _pair_steps(labs, out, size):
        lb, la = labs.pop(j), labs.pop(i)
        b, a = ops.pop(j), ops.pop(i)
        keep = keep if ops else tuple(out)
        solved = _solve_step(w, a, la, b, lb, keep) or _solve_step(w, b, lb, a, la, keep)
        step = _single(*solved, keep) if solved else _pairwise(w, a, la, b, lb, keep)
        if not ops:
            return step
        ops.append(w.emit(step))
        labs.append(keep)
        if a == b and _is_gram(la, lb, keep):
            w.symmetric.add(ops[-1])  # read either way round, without .T
    return _single(ops[0], labs[0], tuple(out))


def _solve_step(w: _Writer, a: str, la: tuple, b: str, lb: tuple, keep: tuple):
    """Σ (X⁻¹)_pq b_q… as a solve, X⁻¹b (or X⁻ᵀb, summing over p), where ``a`` is an
    inverse and b a vector or matrix: (the solution's code, its labels), or None.  The
    inverse itself is then never formed unless another line reads it.  Where products read
    the same inverse twice or more, one LU factorisation serves every solve."""
    if a in w.pinvs:
        return _pinv_step(w, a, la, b, lb, keep)
    if a not in w.inverses or len(la) != 2 or la[0] == la[1] or len(lb) > 2:
        return None
    x, inv = w.inverses[a]
    p, q = la
    for summed, other, trans in ((q, p, 0), (p, q, 1)):
        if summed in keep or lb.count(summed) != 1:
            continue
        rhs = b if lb[0] == summed else f"{b}.T"
        rest = tuple(y for y in lb if y != summed)
        if w.cho is not None and inv.arg in w.spd:  # S⁻¹b = S⁻ᵀb by Cholesky, S = LLᵀ
            code = w.cho[1].format(_cho_factor(w, inv.arg, x), rhs)
        elif w.tri is not None and isinstance(inv.arg, Cholesky):  # L⁻¹b, L⁻ᵀb: triangular
            code = w.tri.format(x, rhs, trans)
        elif w.lu is not None and w.inverse_uses.get(inv, 0) > 1:
            factor = w.emit(w.lu[0].format(x), f"LU of {_comment(inv.arg)}")
            code = w.lu[1].format(factor, rhs, trans)
        else:
            code = f"np.linalg.solve({x}.T, {rhs})" if trans else f"np.linalg.solve({x}, {rhs})"
        return w.emit(code), (other,) + rest
    return None


def _pinv_step(w: _Writer, a: str, la: tuple, b: str, lb: tuple, keep: tuple):
    """Σ (X⁺)_pq b_q… as V(Σ⁻¹(Uᵀb)) from X's thin SVD (or X⁺ᵀb = U(Σ⁻¹(Vᵀb)), summing
    over p): with b in X's range this is as accurate as a least-squares solve, where the
    product with a formed X⁺ loses what its large entries cancel."""
    if len(la) != 2 or la[0] == la[1] or len(lb) > 2:
        return None
    f = w.pinvs[a]
    p, q = la
    for summed, other, trans in ((q, p, 0), (p, q, 1)):
        if summed in keep or lb.count(summed) != 1:
            continue
        rhs = b if lb[0] == summed else f"{b}.T"
        s = f"{f}[1]" if len(lb) == 1 else f"{f}[1][:, None]"
        code = f"{f}[2].T @ (({f}[0].T @ {rhs}) / {s})" if not trans else \
            f"{f}[0] @ (({f}[2] @ {rhs}) / {s})"
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


def _pair_steps(labs: list, out, size: dict):
    """The pairs a plan multiplies, step by step: (i, j, the labels the result keeps, the
    step's multiply-adds), i < j positions in the caller's list, which drops i and j and
    appends the result after each step.  Each time the pair that shares a label (if any
    does), then whose result is smallest, then cheapest, the first in list order on ties.
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
        return (sets[i].isdisjoint(sets[j]), math.prod(size[x] for x in keep), cost), keep, cost

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
    for i, j, keep, cost in _pair_steps(labs, uniq, size):
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
    time of Xᵀ(d ⊙ X)."""
    n = len(ops)
    for i in range(n):
        for k in range(i + 1, n):
            if kept[i][0] is not kept[k][0] or len(labs[i]) != 2:
                continue
            shared = set(labs[i]) & set(labs[k])
            if len(shared) != 1 or shared & set(out) or len(set(labs[i] + labs[k])) != 3:
                continue
            p = next(iter(shared))
            weights = [j for j in range(n) if j not in (i, k) and p in labs[j]]
            if not weights or any(set(labs[j]) != {p} or not _nonnegative(kept[j][0])
                                  for j in weights):
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


# --------------------------------------------------------------------------- other nodes


def _elementwise(w: _Writer, n: Elementwise, a: str) -> str:
    fn = n.fn
    if fn.builtin and fn.name == "pow":
        p = fn.param
        return {2.0: f"{a} * {a}", -1.0: f"1.0 / {a}", 0.5: f"np.sqrt({a})"}.get(p, f"{a} ** {p!r}")
    if fn.builtin:
        return w.functions[fn.name].format(a)
    if fn.numpy is not None and (fn.order == 0 or not callable(fn.numpy) and fn.order < len(fn.numpy)):
        # a user's function (or f′, f″, … of its list [f, f′, f″, …]): compile() supplies it
        return f"{user_function_name(fn)}({a})"
    raise NotSupportedError(f"codegen: {fn} is abstract; give it values (md.function(..., numpy=…)) "
                            f"before generating code")


SLOPES = {  # f′ of the functions a divided-difference matrix may need, as code
    "exp": "np.exp({})", "log": "1.0 / {}", "sqrt": "0.5 / np.sqrt({})", "sin": "np.cos({})",
    "cos": "-np.sin({})", "tanh": "1.0 - np.tanh({}) ** 2", "cosh": "np.sinh({})", "sinh": "np.cosh({})",
    # the kinks' one-sided slopes: exact away from 0, where checked code refuses (_kinks_refused)
    "relu": "(({0}) > 0) + 0.0 * ({0})", "abs": "np.sign({0})", "step": "0.0 * ({0})", "sign": "0.0 * ({0})",
}


def _slope(fn) -> str:
    """f′ as code (a format string), for the divided differences of f."""
    if fn.builtin and fn.name == "pow":
        return f"{fn.param!r} * np.power({{}}, {fn.param - 1 if fn.param else 0.0!r})"
    if not fn.builtin or fn.name not in SLOPES:
        raise NotSupportedError(f"codegen: the divided differences of {fn} are not generated "
                                f"yet (functions: {', '.join(SLOPES)}); evaluate() computes them")
    return SLOPES[fn.name]


C_FULL = {"sinh": "np.sinh({0})", "sin": "np.sin({0})", "artanh": "np.arctanh({0})"}


def _c_code(w: _Writer, kind: str, x: str) -> str:
    """sinh(x)/x, sin(x)/x or artanh(x)/x as code, 1 at x = 0 (evaluate's ``_c``)."""
    x = w.emit(x)
    small = w.emit(f"np.abs({x}) < 1e-4")
    safe = w.emit(f"np.where({small}, 0.5, {x})")  # artanh(1) = ∞
    taylor = f"1.0 + {C_SERIES[kind]!r} * ({x} * {x})"
    return f"np.where({small}, {taylor}, {C_FULL[kind].format(safe)} / {safe})"


def _exact_divided_code(w: _Writer, fn, a: str, b: str):
    """evaluate's ``_exact_divided`` as code: f[a, b] accurate at every gap; None where f
    has no such form."""
    name, param = fn.name, fn.param
    if not fn.builtin or name in KINKS:  # (relu(S) itself: the traced relu(u), by its pieces)
        return _traced_divided_code(w, fn, (a, b))[2] if _trace(fn) is not None and \
            (DivDiff3.has_series(fn) or _kinked(fn)) else None
    if name in ("exp", "log", "sin", "cos", "sinh", "cosh", "tanh", "expm1", "log1p", "tan"):
        m, h = w.emit(f"({a} + {b}) / 2"), w.emit(f"({a} - {b}) / 2")
    if name in ("exp", "expm1"):
        return f"np.exp({m}) * {_c_code(w, 'sinh', h)}"
    if name in ("tanh", "sigmoid", "softplus", "log1p", "arctan", "tan"):
        return _more_divided_code(w, name, a, b, m if name in ("log1p", "tan") else None,
                                  h if name in ("log1p", "tan") else None)
    if name == "log":
        z = w.emit(f"{h} / {m}")
        far = w.emit(f"np.abs({z}) > 0.5")
        quotient = f"(np.log({a}) - np.log({b})) / np.where({far}, {a} - {b}, 1.0)"
        near = f"{_c_code(w, 'artanh', f'np.where({far}, 0.0, {z})')} / {m}"
        return f"np.where({far}, {quotient}, {near})"
    if name == "sqrt":
        return f"1.0 / (np.sqrt({a}) + np.sqrt({b}))"
    if name in ("sin", "cos", "sinh", "cosh"):
        outer = {"sin": "np.cos({})", "cos": "-np.sin({})", "sinh": "np.cosh({})", "cosh": "np.sinh({})"}
        return f"{outer[name].format(m)} * {_c_code(w, 'sin' if name in ('sin', 'cos') else 'sinh', h)}"
    if name == "pow" and float(param).is_integer() and abs(param) <= 8:
        p, q = int(param), abs(int(param))
        if p == 0:
            return f"0.0 * ({a} + {b})"
        total = " + ".join(f"{a} ** {k} * {b} ** {q - 1 - k}" for k in range(q))
        return f"({total})" if p > 0 else f"-({total}) / ({a} ** {q} * {b} ** {q})"
    if name == "pow":
        L = w.emit(f"np.log({a}) - np.log({b})")
        same = w.emit(f"{L} == 0")
        return (f"np.where({same}, {param!r}, np.expm1({param!r} * {L}) / "
                f"np.where({same}, 1.0, np.expm1({L}))) * {b} ** {param - 1!r}")
    return None


def _divided_differences(w: _Writer, n: DivDiff, lam: str) -> str:
    """F_ij = f[λᵢ, λⱼ] as evaluate computes it: a form accurate at every gap for the
    built-in functions, else the quotient with f′ at the midpoint where λᵢ, λⱼ agree to
    CLOSE relative to the larger."""
    if w.checks and (n.fn.builtin and n.fn.name in KINKS or not n.fn.builtin and _kinked(n.fn)):
        lam = _kinks_refused(w, n.fn, lam)
    a, b = w.emit(f"{lam}[:, None]"), w.emit(f"{lam}[None, :]")
    if not n.fn.builtin and _trace(n.fn) is None:  # a user's md.function
        return _user_divided_code(w, n, lam, a, b)
    exact = _exact_divided_code(w, n.fn, a, b)
    if exact is not None:  # each form takes both λᵢ and λⱼ: it is the full matrix already
        return exact
    gap = w.emit(f"{a} - {b}")
    values = w.emit(_elementwise(w, Elementwise(n.fn, n.arg), lam))
    close = w.emit(f"np.abs({gap}) <= {CLOSE!r} * np.maximum(np.abs({a}), np.abs({b}))")
    slope = _slope(n.fn).format(f"(({a} + {b}) / 2)")
    return (f"np.where({close}, {slope}, ({values}[:, None] - {values}[None, :]) / "
            f"np.where({close}, 1.0, {gap}))")


def _kinks_refused(w: _Writer, fn, lam: str, order: int = 1) -> str:
    """λ through ``_finite_value`` (md.codegen's checks), NaN where an eigenvalue sits at the kink
    of relu, |·|, step or sign (within 64ε of the largest |λ|, evaluate's ``_refuse_kinks``): NumPy
    and PyTorch raise, md.compile's functions evaluate's EvaluationError; JAX raises outside jit
    and gives NaN under it. O(n): it tests the eigenvalues only. ``order`` 2 (a Hessian's second
    divided differences): a traced callable's f″ too, as evaluate's ``_one_sided_differ``."""
    floor = w.emit(f"64 * np.finfo({lam}.dtype).eps * np.abs({lam}).max()")
    kinds = [fn.name] if fn.builtin else sorted({n.fn.name for n in walk(_trace(fn)[0])
                                                 if type(n) is Elementwise and n.fn.name in KINKS})
    why = (f"{fn.name}(S) is not differentiable here{' twice' if order > 1 else ''}: {' or '.join(kinds)} "
           "has a kink at 0, and an eigenvalue (within 64ε of the largest |λ|) puts its argument there")
    if fn.builtin:
        at = f"np.abs({lam}) <= {floor}"
    else:  # a traced callable: where a kink's argument is 0 and f or f′ differ on its two sides
        args: list = []
        _traced_divided_code(w, fn, (lam, lam), args)
        hit = " | ".join(f"(np.abs({g}) <= {floor})" for g in args)
        d = w.emit(f"1e-7 * np.maximum(1.0 + 0.0 * {lam}, np.abs({lam}))")
        sides = [_traced_divided_code(w, fn, (p, p))
                 for p in (w.emit(f"{lam} + {d}"), w.emit(f"{lam} - {d}"))]
        jumps = list(zip(sides[0][::2], sides[1][::2]))  # (f, f′) to the right and left
        if order > 1:  # f″ by one-sided differences of f′ at λ ± d, λ ± 2d
            far = [_traced_divided_code(w, fn, (p, p))[2]
                   for p in (w.emit(f"{lam} + 2 * {d}"), w.emit(f"{lam} - 2 * {d}"))]
            jumps.append((w.emit(f"({far[0]} - {sides[0][2]}) / {d}"),
                          w.emit(f"({sides[1][2]} - {far[1]}) / {d}")))
        differ = " | ".join(f"~(np.abs({r} - {q}) <= 1e-4 * (np.abs({r}) + np.abs({q})) + "
                            f"1e-6 * (1.0 + np.abs({r})))" for r, q in jumps)
        at = f"({hit}) & ({differ})"
    return w.emit(f"_finite_value(np.where({at}, np.nan, {lam}), {why!r})")


def _kinked(fn) -> bool:
    """A traced callable built from relu, |·|, step or sign besides DivDiff3.SERIES's functions,
    constants, sums and products: its first divided differences by the chain rule, exact away
    from the kinks (each kink's own: its one-sided slope on one side, the quotient across)."""
    trace = _trace(fn)  # relu, |·|, step and sign themselves: their own trace, f(t)
    kinds = [n.fn for n in walk(trace[0]) if type(n) is Elementwise] if trace is not None else []
    return any(f.builtin and f.name in KINKS for f in kinds) and \
        all(f.builtin and f.name in KINKS + DivDiff3.SERIES for f in kinds)


def _user_derivative_code(w: _Writer, fn, k: int, x: str) -> str:
    """f⁽ᵏ⁾(x) as code for a user's md.function: a call of its list's entry k (compile()
    supplies it, ``user_function_name``), or its ``derivative=`` expression (and that
    differentiated again: evaluate's ``_user_nodes``) written entry by entry at x."""
    if fn.deriv is not None and _trace(fn) is None:
        t, nodes = _user_nodes(fn)
        if k > len(nodes):
            raise NotSupportedError(f"codegen: {fn.name}" + "′" * k + " is not known in closed form: its "
                                    f"derivative= is differentiated {len(nodes) - 1} times (functions: "
                                    f"{', '.join(DivDiff3.SERIES)}, constants, +, ·, powers, "
                                    f"{fn.name} itself)")
        return _entries_code(w, nodes[k - 1], t, x, fn)
    if not isinstance(fn.numpy, tuple):
        raise NotSupportedError(f"codegen: the divided differences of {fn.name}(S) need its "
                                f"derivatives: give md.function({fn.name!r}, numpy=[f, f′, f″, …]) "
                                f"or derivative=")
    if fn.order + k >= len(fn.numpy):
        raise NotSupportedError(f"codegen: {fn.name}" + "′" * (fn.order + k) + " has no values; give "
                                f"md.function({fn.name!r}, numpy=[f, f′, f″, …])")
    return f"{user_function_name(type(fn)(fn.name, fn.order + k, numpy=fn.numpy))}({x})"


def _entries_code(w: _Writer, node: Node, t: Node, x: str, fn) -> str:
    """node, an expression of the vector t entry by entry (constants, sums, products, functions
    of the table and the user's f itself: a ``derivative=`` and its derivatives), as code at the
    array x (any shape)."""
    memo: dict = {}

    def go(n):
        if n in memo:
            return memo[n]
        if n is t:
            out = x
        elif isinstance(n, Const):
            out = w.emit(f"0.0 * ({x}) + {float(n.value)!r}")
        elif isinstance(n, Delta) and n.order == 1:
            out = w.emit(f"0.0 * ({x}) + 1.0")
        elif isinstance(n, Sum):
            out = w.emit(" + ".join(f"{float(c)!r} * {go(term)}" for c, term in n.terms) if n.terms
                         else f"0.0 * ({x})")
        elif isinstance(n, Contract) and all(lab in ((), n.out) for lab in n.labels):
            out = w.emit(" * ".join(f"({go(op)})" for op in n.operands))
        elif isinstance(n, Elementwise) and (n.fn.builtin or n.fn == fn):
            out = w.emit(_elementwise(w, n, go(n.arg)))
        else:
            raise traced_unsupported(n, f"codegen: {fn.name}′ is not generated", "has no code",
                                     f"powers, {fn.name} itself", where="in its derivative=")
        memo[n] = out
        return out

    return go(node)


def _user_scale_code(w: _Writer, c: list, lam: str) -> str:
    """evaluate's ``_user_scale`` as code: ρ at each λ from the coefficients c = [c₂ … c_N]
    there — the largest (|cⱼ|/|c_K|)^(1/(K − j)), c_K the last not 0, at most max(|λ|, 1)."""
    mag = w.emit(f"np.abs({lam})")
    cap = w.emit(f"np.where({mag} > 1.0, {mag}, 1.0)")
    rho, found = w.emit(f"0.0 * {lam}"), w.emit(f"{mag} < 0.0")
    for K in range(len(c) - 1, 0, -1):
        last = w.emit(f"np.abs({c[K]})")
        use = w.emit(f"~{found} & ({last} > 0.0) & ({last} * 0.0 == 0.0)")  # not 0, finite
        safe = w.emit(f"np.where({use}, {last}, 1.0)")
        est = None
        for j in range(K):
            r = w.emit(f"(np.abs({c[j]}) / {safe}) ** {1.0 / (K - j)!r}")
            est = r if est is None else w.emit(f"np.where({r} > {est}, {r}, {est})")
        rho = w.emit(f"np.where({use}, {est}, {rho})")
        found = w.emit(f"{found} | {use}")
    return w.emit(f"np.where({found} & ({rho} < {cap}), {rho}, {cap})")


def _user_divided_code(w: _Writer, n: DivDiff, lam: str, a: str, b: str) -> str:
    """evaluate's ``_user_divided`` as code: F = f[λᵢ, λⱼ] of a user's md.function, the
    quotient, and near the diagonal the Taylor series about the midpoint from the odd
    derivatives of its list."""
    fn = n.fn
    known = min(DivDiff3.user_orders(fn), TAYLOR_ORDER)
    if fn.deriv is not None:  # a derivative= expression: f′ at least (evaluate's _user_derivatives)
        known = max(1, known)
    K = known if known % 2 else known - 1
    gap = w.emit(f"{a} - {b}")
    if K >= 3:
        c = [w.emit(code) for code in _taylor_coefficients_code(w, fn, lam)]
        rho = _user_scale_code(w, c, lam)
        pair = w.emit(f"np.where({rho}[:, None] < {rho}[None, :], {rho}[:, None], {rho}[None, :])")
        close = w.emit(f"(np.abs({gap}) <= {_user_radius(K + 2)!r} * {pair}) | ({gap} == 0)")
    else:
        close = w.emit(f"np.abs({gap}) <= {CLOSE!r} * np.maximum(np.abs({a}), np.abs({b}))")
    at = w.emit(f"np.where({close}, ({a} + {b}) / 2, {a} + 0.0 * {b})")
    half = w.emit(f"np.where({close}, {gap} / 2, 0.0)")
    h2 = w.emit(f"{half} * {half}")
    series, power = w.emit(_user_derivative_code(w, fn, 1, at)), None
    for k in range(3, K + 1, 2):
        power = h2 if power is None else w.emit(f"{power} * {h2}")
        term = f"{_user_derivative_code(w, fn, k, at)} * {power} * {1 / math.factorial(k)!r}"
        series = w.emit(f"{series} + {term}")
    values = w.emit(_elementwise(w, Elementwise(fn, n.arg), lam))
    return (f"np.where({close}, {series}, ({values}[:, None] - {values}[None, :]) / "
            f"np.where({close}, 1.0, {gap}))")


def _taylor_coefficients_code(w: _Writer, fn, lam: str) -> list:
    """evaluate's ``_taylor_coefficients`` as code: [f⁽ⁿ⁾(λ)/n! for n = 2 … TAYLOR_ORDER]."""
    name = fn.name if fn.builtin else None
    orders = range(2, TAYLOR_ORDER + 1)
    if name in KINKS:
        return []  # relu(S) itself: as a traced callable, by its pieces
    if name is None and _trace(fn) is None and DivDiff3.has_series(fn):  # a user's md.function
        return [f"{_user_derivative_code(w, fn, n, lam)} * {1 / math.factorial(n)!r}"
                for n in range(2, min(DivDiff3.user_orders(fn), TAYLOR_ORDER) + 1)]
    if name is None and DivDiff3.has_series(fn):
        return []  # a traced callable: the chain rule (_traced_divided_code), no series of its own
    if name in ("exp", "expm1"):
        e = w.emit(f"np.exp({lam})")
        return [f"{e} * {1 / math.factorial(n)!r}" for n in orders]
    if name in ("tanh", "sigmoid", "softplus", "tan", "log1p", "arctan"):
        return _more_coefficients_code(w, name, lam)
    if name in ("sin", "cos", "sinh", "cosh"):
        first, second = {"sin": ("sin", "cos"), "cos": ("cos", "sin"),
                         "sinh": ("sinh", "cosh"), "cosh": ("cosh", "sinh")}[name]
        f0, f1 = w.emit(f"np.{first}({lam})"), w.emit(f"np.{second}({lam})")
        signs = {"sin": (1, 1, -1, -1), "cos": (1, -1, -1, 1)}.get(name, (1, 1, 1, 1))
        return [f"{f0 if n % 2 == 0 else f1} * {signs[n % 4] / math.factorial(n)!r}" for n in orders]
    if name == "log":  # in units of λ (evaluate's _in_units): constants
        return [f"{(-1.0) ** (n - 1) / n!r} + 0.0 * {lam}" for n in orders]
    if name in ("sqrt", "pow"):
        p = 0.5 if name == "sqrt" else float(fn.param)
        if not _in_units(fn):  # p = 0 … 8: (p choose n) x^(p−n) up to n = p (right at x = 0;
            # no terms past it, whose hₙ₋₂(u, v) may overflow), 0 for p < 2
            return [(f"{math.prod((p - k) / (k + 1) for k in range(n))!r} * {lam} ** {int(p) - n}"
                     if n < p else f"{1.0 if n == p else 0.0!r} + 0.0 * {lam}")
                    for n in range(2, max(int(p), 2) + 1)]
        return [f"{math.prod((p - k) / (k + 1) for k in range(n))!r} + 0.0 * {lam}" for n in orders]
    raise NotSupportedError(f"codegen: the second divided differences of {fn} are not generated "
                            f"(functions: {', '.join(DivDiff3.SERIES)}, and Python functions built "
                            f"from them); evaluate() computes them")


def _divided_differences3(w: _Writer, n: DivDiff3, lam: str, diagonal: bool = False, pairs=None) -> str:
    """T_ijk = f[λᵢ, λⱼ, λₖ] as evaluate computes it (``_divided_differences3``): the quotient
    of first divided differences over the two points farthest apart, and the Taylor series
    about λᵢ where the three lie within TAYLOR_CLOSE of f's scale; ``diagonal``: only
    T_iji = f[λᵢ, λⱼ, λᵢ], a matrix; ``pairs`` (index arrays P and C): T_PₘjCₘ, a matrix
    (``DivDiff3Apply``'s close pairs). A traced callable's by the chain rule of divided
    differences, and softplus's at the points themselves (``_three_points_code``)."""
    coefficients = _taylor_coefficients_code(w, n.fn, lam)  # refuses what has no series first
    if w.checks and not diagonal and not pairs and _kinked(n.fn):  # f″ jumps at a kink: refused
        lam = _kinks_refused(w, n.fn, lam, order=2)
    if diagonal:
        x, y = w.emit(f"{lam}[:, None]"), w.emit(f"{lam}[None, :]")
        z, pad, corner = x, "[:, None]", ("{0}[0]", "{0}[1]", "{0}[0]")
    elif pairs:
        P, C = pairs
        x, y, z = w.emit(f"{lam}[{P}][:, None]"), w.emit(f"{lam}[None, :]"), w.emit(f"{lam}[{C}][:, None]")
        pad, corner = f"[{P}][:, None]", (f"{P}[{{0}}[0]]", "{0}[1]", f"{C}[{{0}}[0]]")
    else:
        x, y, z = (w.emit(f"{lam}[{i}]") for i in (":, None, None", "None, :, None", "None, None, :"))
        pad, corner = "[:, None, None]", ("{0}[0]", "{0}[1]", "{0}[2]")
    user = not n.fn.builtin and _trace(n.fn) is None  # a user's md.function: its series' own reach
    if (not n.fn.builtin or n.fn.name in KINKS) and not user:  # relu(S) itself too: by its pieces
        return _traced_divided_code(w, n.fn, (x, y, z))[-1]
    if n.fn.name == "softplus":
        return _three_points_code(w, n.fn, x, y, z)
    F = w.emit(_divided_differences(w, DivDiff(n.fn, n.arg), lam))  # written once
    u, v = w.emit(f"{y} - {x}"), w.emit(f"{z} - {x}")
    au, av, aw = w.emit(f"np.abs({u})"), w.emit(f"np.abs({v})"), w.emit(f"np.abs({u} - {v})")
    spread = w.emit(f"np.maximum(np.maximum({au}, {av}), {aw})")
    xz = w.emit(f"{av} >= np.maximum({au}, {aw})")  # the pair farthest apart
    yz = w.emit(f"~{xz} & ({aw} >= {au})")
    Fij, Fik, Fjk = f"{F}[:, :, None]", f"{F}[:, None, :]", f"{F}[None, :, :]"
    if diagonal:
        Fij, Fik, Fjk = F, w.emit(f"{F}.diagonal()[:, None]"), f"{F}.T"
    elif pairs:  # F symmetric: F[j, Cₘ] = F[Cₘ, j]
        Fij, Fik, Fjk = f"{F}[{P}]", w.emit(f"{F}[{P}, {C}][:, None]"), f"{F}[{C}]"
    num = w.emit(f"np.where({xz}, {Fij} - {Fjk}, np.where({yz}, {Fij} - {Fik}, {Fik} - {Fjk}))")
    den = w.emit(f"np.where({xz}, {x} - {z}, np.where({yz}, {y} - {z}, {x} - {y}))")
    c = [w.emit(code) for code in coefficients]
    if user:
        reach = _user_radius(len(c) + 1)
        close = w.emit(f"({spread} <= {reach!r} * {_user_scale_code(w, c, lam)}{pad}) | ({spread} == 0)")
    else:
        close = _close_code(w, n.fn, spread, x)
    if close is not None and not w.functions.get("__expm", "").startswith("jax."):
        # NumPy and PyTorch: the series only where the three are close (a few of n³ entries,
        # λᵢ = λⱼ = λₖ at least), written into the quotient; JAX (under jit: static shapes)
        # computes it everywhere, in one fused pass
        out = w.emit(f"{num} / np.where({close}, 1.0, {den})", pure=False)
        where = w.emit(f"np.where({close})", pure=False)
        i, j, k = (w.emit(m.format(where), pure=False) for m in corner)
        lam_i = w.emit(f"{lam}[{i}]", pure=False)
        u1, v1 = w.emit(f"{lam}[{j}] - {lam_i}", pure=False), w.emit(f"{lam}[{k}] - {lam_i}", pure=False)
        unit = w.emit(_unit_code(n.fn, lam_i), pure=False)
        total = _taylor_series_code(w, n.fn, [w.emit(f"{x_}[{i}]", pure=False) for x_ in c], u1, v1, unit,
                                    pure=False)
        w.lines.append(SCATTER.format(op="", full=out, index=where, values=total))
        return out
    uu = w.emit(f"np.where({close}, {u}, 0.0)") if close else u  # no overflow where unused
    vv = w.emit(f"np.where({close}, {v}, 0.0)") if close else v
    total = _taylor_series_code(w, n.fn, [f"{x_}{pad}" for x_ in c], uu, vv, w.emit(_unit_code(n.fn, x)),
                                pure=True)
    if close is None:
        return total
    return f"np.where({close}, {total}, {num} / np.where({close}, 1.0, {den}))"


def _unit_code(fn, x: str) -> str:
    """evaluate's ``_taylor_unit`` as code: 1 + x for log1p, √(1 + x²) for arctan (as hypot:
    finite past |x| = 1e154), else x."""
    return {"log1p": f"(1.0 + {x})", "arctan": f"np.hypot(1.0 + 0.0 * {x}, {x})"}.get(fn.name, x)


def _close_code(w: _Writer, fn, spread: str, x: str):
    """Where three points with this spread about x take f's Taylor series (evaluate's
    ``_three_points``); None for a polynomial (everywhere)."""
    scale = _taylor_scale(fn)
    if scale == "polynomial":  # a finite series: exact everywhere
        return None
    if scale == "one":
        return w.emit(f"{spread} <= {TAYLOR_CLOSE!r}")
    if scale == "pole":  # min(1, the distance to tan's nearest pole)
        d = w.emit(f"np.abs({x} - (np.round({x} / {math.pi!r} - 0.5) + 0.5) * {math.pi!r})")
        size = w.emit(f"np.where({d} < 1.0, {d}, 1.0)")
    else:
        size = w.emit(f"np.abs({_unit_code(fn, x)})")
    return w.emit(f"({spread} <= {TAYLOR_CLOSE!r} * {size}) | ({spread} == 0)")


def _three_points_code(w: _Writer, fn, x: str, y: str, z: str) -> str:
    """evaluate's ``_three_points`` as code at any points x, y, z (broadcast together): the
    quotient of the pairs' ``_exact_divided_code`` over the pair farthest apart, the series
    about x where the three are close (computed everywhere, chosen by np.where); softplus
    at −x, −y, −z where x + y + z > 0 (its F ≈ 1 would cancel there)."""
    if fn.name == "softplus":
        flip = w.emit(f"{x} + {y} + {z} > 0")
        x, y, z = (w.emit(f"np.where({flip}, -{p}, {p})") for p in (x, y, z))
    Fij, Fik, Fjk = (w.emit(_exact_divided_code(w, fn, p, q)) for p, q in ((x, y), (x, z), (y, z)))
    u, v = w.emit(f"{y} - {x}"), w.emit(f"{z} - {x}")
    au, av, aw = w.emit(f"np.abs({u})"), w.emit(f"np.abs({v})"), w.emit(f"np.abs({u} - {v})")
    spread = w.emit(f"np.maximum(np.maximum({au}, {av}), {aw})")
    xz = w.emit(f"{av} >= np.maximum({au}, {aw})")
    yz = w.emit(f"~{xz} & ({aw} >= {au})")
    num = w.emit(f"np.where({xz}, {Fij} - {Fjk}, np.where({yz}, {Fij} - {Fik}, {Fik} - {Fjk}))")
    den = w.emit(f"np.where({xz}, {x} - {z}, np.where({yz}, {y} - {z}, {x} - {y}))")
    close = _close_code(w, fn, spread, x)
    c = [w.emit(code) for code in _taylor_coefficients_code(w, fn, x)]
    uu = w.emit(f"np.where({close}, {u}, 0.0)") if close else u
    vv = w.emit(f"np.where({close}, {v}, 0.0)") if close else v
    total = _taylor_series_code(w, fn, c, uu, vv, w.emit(_unit_code(fn, x)), pure=True)
    if close is None:
        return total
    return w.emit(f"np.where({close}, {total}, {num} / np.where({close}, 1.0, {den}))")


def _traced_divided_code(w: _Writer, fn, points: tuple, kinks: list | None = None) -> tuple:
    """evaluate's ``_traced_divided`` as code: a traced callable's values and divided
    differences at two points — (f(x), f(y), f[x, y]) — or three — (f(x), f(y), f(z), f[x, y],
    f[y, z], f[x, y, z]) — by the chain rule of divided differences on its expression (its
    justification there), entry by entry: the same lines in every backend."""
    node, t = _trace(fn)
    three = len(points) == 3
    width = 6 if three else 3
    zero = w.emit(f"0.0 * ({' + '.join(points)})")
    memo: dict = {}

    def constant(c):
        value = w.emit(f"{zero} + {float(c)!r}")
        return (value,) * len(points) + (zero,) * (width - len(points))

    def go(n):
        if n in memo:
            return memo[n]
        if n is t:
            one = w.emit(f"{zero} + 1.0")
            out = tuple(w.emit(f"{zero} + {p}") for p in points) + ((one, one, zero) if three else (one,))
        elif isinstance(n, Const):
            out = constant(n.value)
        elif isinstance(n, Delta) and n.order == 1:
            out = constant(1.0)
        elif isinstance(n, Sum):
            parts = [(c, go(term)) for c, term in n.terms]
            out = tuple(w.emit(" + ".join(f"{float(c)!r} * {part[m]}" for c, part in parts))
                        for m in range(width))
        elif isinstance(n, Contract) and all(lab in ((), n.out) for lab in n.labels):
            out = None
            for op in n.operands:
                G = go(op)
                out = G if out is None else _product_code(w, out, G, three)
        elif isinstance(n, Elementwise) and n.fn.builtin and n.fn.name in KINKS:
            G = go(n.arg)  # (kinks: each one's argument at the first point)
            if kinks is not None:
                kinks.append(G[0])
            out = _kink_code(w, n, G, three)
        elif isinstance(n, Elementwise) and n.fn.builtin and n.fn.name in DivDiff3.SERIES:
            G = go(n.arg)
            f = tuple(w.emit(_elementwise(w, n, v)) for v in G[:len(points)])
            if not three:
                out = (*f, w.emit(f"{G[2]} * {_exact_divided_code(w, n.fn, G[0], G[1])}"))
            else:
                a, b, c, g12, g23, g13 = G
                F12, F23, F13 = (w.emit(_exact_divided_code(w, n.fn, p, q))
                                 for p, q in ((a, b), (b, c), (a, c)))
                T = _three_points_code(w, n.fn, a, b, c)
                out = (*f, w.emit(f"{g12} * {F12}"), w.emit(f"{g23} * {F23}"),
                       w.emit(f"{g13} * {F13} + {g12} * {g23} * {T}"))
        else:
            raise traced_unsupported(n, f"codegen: the divided differences of {fn.name} are not generated",
                                     "has no exact divided differences", "powers")
        memo[n] = out
        return out

    return go(node)


KINK_PIECES = {  # relu, |·|, step and sign by the sign c of their argument: the piece's (slope, offset)
    "relu": ("(({0}) > 0) + 0.0 * ({0})", None), "abs": ("{0}", None),
    "step": (None, "(({0}) > 0) + 0.0 * ({0})"), "sign": (None, "{0}")}


def _kink_code(w: _Writer, n: Elementwise, G: tuple, three: bool) -> tuple:
    """evaluate's ``_kink_compose`` as code: h(G) for a kink h at two or three points —
    h[a, b] the slope of the piece where a, b share a side of 0, the quotient across; h[a, b, c]
    0 on one side, Δ(q)/((p − q)(r − q)) where p, r share a side and q lies on another
    (Δ(q) = h(q) − the piece of p and r at q), Lagrange's form where the three lie below, at
    and above 0."""
    k = 3 if three else 2
    x = G[:k]
    s = [w.emit(f"np.sign({p})") for p in x]
    f = tuple(w.emit(_elementwise(w, n, p)) for p in x)

    def pair(i, j):
        same = w.emit(f"{s[i]} == {s[j]}")
        return (f"np.where({same}, {SLOPES[n.fn.name].format(x[i])}, "
                f"({f[i]} - {f[j]}) / np.where({same}, 1.0, {x[i]} - {x[j]}))")
    if not three:
        return (*f, w.emit(f"{G[2]} * {pair(0, 1)}"))
    a, b, c = x
    ab, bc, ac = (w.emit(f"{s[i]} == {s[j]}") for i, j in ((0, 1), (1, 2), (0, 2)))
    p = w.emit(f"np.where({ab}, {a}, np.where({bc}, {b}, {a}))")
    r = w.emit(f"np.where({ab}, {b}, {c})")
    q = w.emit(f"np.where({ab}, {c}, np.where({bc}, {a}, {b}))")
    cp = w.emit(f"np.sign({p})")
    apart = w.emit(f"~({ab} | {bc} | {ac})")  # below, at and above 0
    alone = w.emit(f"(np.sign({q}) != {cp}) & ~{apart}")
    slope, offset = KINK_PIECES[n.fn.name]
    hq = w.emit(_elementwise(w, n, q))
    delta = w.emit(f"{hq} - ({slope.format(cp)}) * {q}" if slope else f"{hq} - ({offset.format(cp)})")
    one = w.emit(f"np.where({alone}, {delta} / np.where({alone}, ({p} - {q}) * ({r} - {q}), 1.0), 0.0 * {q})")
    terms = " + ".join(f"{f[m]} / np.where({apart}, ({x[m]} - {x[(m + 1) % 3]}) * "
                       f"({x[m]} - {x[(m + 2) % 3]}), 1.0)" for m in range(3))
    corner = w.emit(f"np.where({apart}, {terms}, {one})")
    g12, g23, g13 = G[3:]
    return (*f, w.emit(f"{g12} * {pair(0, 1)}"), w.emit(f"{g23} * {pair(1, 2)}"),
            w.emit(f"{g13} * {pair(0, 2)} + {g12} * {g23} * {corner}"))


def _product_code(w: _Writer, G: tuple, H: tuple, three: bool) -> tuple:
    """The product of two triangular matrices of values and divided differences (Leibniz's
    rule), each entry as GH or HG, whichever cancels less (evaluate's ``_less_cancelled``)."""
    def less_cancelled(first, second):
        sizes = [w.emit(" + ".join(f"np.abs({t})" for t in terms)) for terms in (first, second)]
        return w.emit(f"np.where({sizes[0]} <= {sizes[1]}, {' + '.join(first)}, {' + '.join(second)})")
    if not three:
        return (w.emit(f"{G[0]} * {H[0]}"), w.emit(f"{G[1]} * {H[1]}"),
                less_cancelled([f"{G[0]} * {H[2]}", f"{G[2]} * {H[1]}"],
                               [f"{H[0]} * {G[2]}", f"{H[2]} * {G[1]}"]))
    a, b, c, g12, g23, g13 = G
    p, q, r, h12, h23, h13 = H
    return (w.emit(f"{a} * {p}"), w.emit(f"{b} * {q}"), w.emit(f"{c} * {r}"),
            less_cancelled([f"{a} * {h12}", f"{g12} * {q}"], [f"{p} * {g12}", f"{h12} * {b}"]),
            less_cancelled([f"{b} * {h23}", f"{g23} * {r}"], [f"{q} * {g23}", f"{h23} * {c}"]),
            less_cancelled([f"{a} * {h13}", f"{g12} * {h23}", f"{g13} * {r}"],
                           [f"{p} * {g13}", f"{h12} * {g23}", f"{h13} * {c}"]))


def _more_divided_code(w: _Writer, name: str, a: str, b: str, m, h) -> str:
    """f[a, b] as code for tanh, σ, softplus, log1p, arctan and tan (evaluate's ``_exact_divided``)."""
    if name in ("tanh", "sigmoid"):  # tanh[a, b] scaled by e^(−|a|−|b|) (evaluate's _tanh_divided)
        if name == "sigmoid":
            a, b = w.emit(f"{a} / 2"), w.emit(f"{b} / 2")
        s, d = w.emit(f"np.abs({a}) + np.abs({b})"), w.emit(f"{a} - {b}")
        near = w.emit(f"np.abs({d}) <= 1.0")
        dn = w.emit(f"np.where({near}, {d}, 0.0)")
        lo = w.emit(f"2 * (np.where({a} < 0, {a}, 0.0) - np.where({b} > 0, {b}, 0.0))")  # d − s, exactly
        hi = w.emit(f"2 * (np.where({b} < 0, {b}, 0.0) - np.where({a} > 0, {a}, 0.0))")  # −d − s
        num = w.emit(f"np.where({near}, {_c_code(w, 'sinh', dn)} * np.exp(-{s}), (np.exp({lo}) - "
                     f"np.exp({hi})) / (2 * np.where({near}, 1.0, {d})))")
        out = f"{num} * 4.0 / ((1.0 + np.exp(-2 * np.abs({a}))) * (1.0 + np.exp(-2 * np.abs({b}))))"
        return out if name == "tanh" else f"{w.emit(out)} / 4"
    if name == "log1p":
        one = w.emit(f"1.0 + {m}")
        z = w.emit(f"{h} / {one}")
        far = w.emit(f"np.abs({z}) > 0.5")
        quotient = f"(np.log1p({a}) - np.log1p({b})) / np.where({far}, {a} - {b}, 1.0)"
        return f"np.where({far}, {quotient}, {_c_code(w, 'artanh', f'np.where({far}, 0.0, {z})')} / {one})"
    if name == "tan":
        return f"{_c_code(w, 'sin', f'2 * {h}')} / (np.cos({a}) * np.cos({b}))"
    if name == "arctan":
        p = w.emit(f"1.0 + {a} * {b}")
        ok = w.emit(f"{p} > 0")
        safe = w.emit(f"np.where({ok}, {p}, 1.0)")
        r = w.emit(f"({a} - {b}) / {safe}")
        quotient = f"(np.arctan({a}) - np.arctan({b})) / np.where({ok}, 1.0, {a} - {b})"
        return f"np.where({ok}, {_ratio_code(w, 'arctan', r)} / {safe}, {quotient})"
    # softplus (evaluate's _softplus_divided)
    d = w.emit(f"{a} - {b}")
    near = w.emit(f"np.abs({d}) <= 2.0")
    dn = w.emit(f"np.where({near}, {d}, 0.0)")
    sb = w.emit(w.functions["sigmoid"].format(b))
    half = w.emit(f"{dn} / 2")
    close = (f"{_ratio_code(w, 'log1p', f'{sb} * np.expm1({dn})')} * {sb} * np.exp({half}) * "
             f"{_c_code(w, 'sinh', half)}")
    dd = w.emit(f"np.where({near}, 1.0, {d})")
    sp = w.functions["softplus"]
    far = (f"np.where({a} + {b} >= 0, 1.0 - ({sp.format(f'-{b}')} - {sp.format(f'-{a}')}) / {dd}, "
           f"({sp.format(a)} - {sp.format(b)}) / {dd})")
    return f"np.where({near}, {close}, {far})"


def _ratio_code(w: _Writer, g: str, x: str) -> str:
    """g(x)/x with its limit 1 at 0, g = log1p or arctan (evaluate's ``_ratio``)."""
    x = w.emit(x)
    zero = w.emit(f"{x} == 0")
    safe = w.emit(f"np.where({zero}, 1.0, {x})")
    return f"np.where({zero}, 1.0, np.{g}({safe}) / {safe})"


def _more_coefficients_code(w: _Writer, name: str, lam: str) -> list:
    """evaluate's ``_taylor_coefficients`` as code for tanh, σ, softplus, tan, log1p and arctan."""
    orders = range(2, TAYLOR_ORDER + 1)
    if name == "log1p":  # in units of 1 + λ: constants
        return [f"{(-1.0) ** (n - 1) / n!r} + 0.0 * {lam}" for n in orders]
    if name == "arctan":  # (−1)ⁿ⁻¹ sin(nφ)/n in units of √(1 + λ²); sin(nπ/2 − nψ) where |λ| < 1
        small = w.emit(f"np.abs({lam}) < 1.0")
        psi = w.emit(f"np.arctan({lam})")
        phi = w.emit(f"np.arctan(1.0 / np.where({small}, 1.0, {lam})) + "
                     f"np.where({lam} < 0, {math.pi!r} + 0.0 * {lam}, 0.0 * {lam})")  # float64 in torch
        turn = {0: "-np.sin({})", 1: "np.cos({})", 2: "np.sin({})", 3: "-np.cos({})"}
        return [f"np.where({small}, {turn[n % 4].format(f'{n} * {psi}')}, np.sin({n} * {phi})) * "
                f"{(-1.0) ** (n - 1) / n!r}" for n in orders]

    def horner(poly, t, scale):
        code = repr(float(poly[-1]) / scale)
        for c in poly[-2::-1]:
            code = f"({code}) * {t} + {float(c) / scale!r}"
        return code

    if name == "tan":
        t = w.emit(f"np.tan({lam})")
        polys = _derivative_polynomials(TAYLOR_ORDER, 1.0)
        return [horner(polys[n], t, math.factorial(n)) for n in orders]
    y = lam if name == "tanh" else w.emit(f"{lam} / 2")  # tanh⁽ᵏ⁾ = sech² Rₖ(tanh)
    t, e = w.emit(f"np.tanh({y})"), w.emit(f"np.exp(-2 * np.abs({y}))")
    s2 = w.emit(f"4.0 * {e} / ((1.0 + {e}) * (1.0 + {e}))")
    polys = _sech2_polynomials(TAYLOR_ORDER)
    k = (lambda n: n - 1) if name == "softplus" else (lambda n: n)
    div = (lambda n: 1.0) if name == "tanh" else (lambda n: 2.0 ** (k(n) + 1))
    return [f"{s2} * ({horner(polys[k(n)], t, div(n) * math.factorial(n))})" for n in orders]


def _divided_differences3_apply(w: _Writer, n: DivDiff3Apply, args: dict) -> str:
    """M_pc = Σ_q f[λ_p, λ_q, λ_c] X_pq Y_qc as evaluate computes it
    (``_divided_differences3_apply``): G ⊙ ((F ⊙ X)Y − X(F ⊙ Y)) on the pairs (p, c) apart,
    and on the close pairs T's rows T_p:c — in NumPy and PyTorch gathered (a row per close
    pair, p = c among them); in JAX, with static shapes, the diagonal's rows, and the rows of
    the pairs (p, p ± d) for each offset d that holds a close pair (``_by_offsets``: under jit a
    lax.scan over d with a lax.cond in each step): O(n²) memory, exact at every gap."""
    lam, X, Y = (args[c] for c in n.children)
    node = DivDiff3(n.fn, n.arg)
    _taylor_coefficients_code(w, n.fn, lam)  # refuses what has no series
    if w.checks and _kinked(n.fn):  # a traced callable with a kink: refused where f″ jumps
        lam = _kinks_refused(w, n.fn, lam, order=2)
    F = w.emit(_divided_differences(w, DivDiff(n.fn, n.arg), lam))
    a, b = w.emit(f"{lam}[:, None]"), w.emit(f"{lam}[None, :]")
    gap = w.emit(f"{a} - {b}")
    larger = w.emit(f"np.maximum(np.abs({a}), np.abs({b}))")
    if _taylor_scale(n.fn) != "relative":  # f's scale is 1 (or f a polynomial): at least 1
        larger = w.emit(f"np.where({larger} > 1.0, {larger}, 1.0)")
    if _grows(n.fn):  # F_pq − F_qc cancels to ε|λ_q|/gap: near within 10⁻³ of the largest |λ|
        larger = w.emit(f"np.maximum({larger}, np.abs({lam}).max())")
    near = w.emit(f"(np.abs({gap}) <= {PAIR_CLOSE!r} * {larger}) | ({gap} == 0)")
    G = w.emit(f"np.where({near}, 0.0, 1.0 / np.where({near}, 1.0, {gap}))")
    far = w.emit(f"{G} * (({F} * {X}) @ {Y} - {X} @ ({F} * {Y}))")
    if n.fn.builtin and n.fn.name == "softplus":  # F − 1 = −softplus[−λ_p, −λ_q] where λ_p + λ_c > 0
        na, nb = w.emit(f"-{a}"), w.emit(f"-{b}")  # (evaluate's: F ≈ 1 would cancel there)
        F1 = w.emit(f"-({_more_divided_code(w, 'softplus', na, nb, None, None)})")
        far = w.emit(f"np.where({a} + {b} > 0, {G} * (({F1} * {X}) @ {Y} - {X} @ ({F1} * {Y})), {far})")
    if not w.functions.get("__expm", "").startswith("jax."):
        # NumPy and PyTorch: T's rows T_p:c on the close pairs (p, c) alone — p = c among them
        out = w.emit(f"{far} + 0.0", pure=False)
        where = w.emit(f"np.where({near})", "the close pairs (p, c): T's rows there", pure=False)
        P, C = (w.emit(f"{where}[{m}]", pure=False) for m in range(2))
        rows = _divided_differences3(w, node, lam, pairs=(P, C))
        values = w.emit(f"({rows} * {X}[{P}] * {Y}.T[{C}]).sum(1)", pure=False)
        w.lines.append(SCATTER.format(op="", full=out, index=where, values=values))
        return out
    # JAX (under jit: static shapes): T's rows T_p:p on the diagonal; then, for each offset
    # d = |p − c| that holds a close pair (the eigenvalues are sorted: close pairs lie near the
    # diagonal), the rows of the 2n pairs (p, p + d) and (p + d, p) (indices clipped, and
    # nothing added off the matrix or where the pair is not close): n² work per such offset
    D = w.emit(_divided_differences3(w, node, lam, diagonal=True))
    plain = w.emit(f"{far} + np.diag(({D} * {X} * {Y}.T).sum(1))")
    for code in _taylor_coefficients_code(w, n.fn, lam):  # written once, outside the steps
        w.emit(code)
    r = w.emit(f"np.arange({lam}.shape[0])")
    name, add, m, d = w.fresh(), *(f"_{w.fresh()}" for _ in range(3))
    written, code_of = dict(w.written), dict(w.code_of)
    w.lines.append(f"    def {add}({m}, {d}):  # the close pairs (p, p ± d): T's rows there")
    start = len(w.lines)
    c = w.emit(f"np.minimum({r} + {d}, {r}.shape[0] - 1)", pure=False)
    P, C = (w.emit(f"np.concatenate([{u}, {v}])", pure=False) for u, v in ((r, c), (c, r)))
    ok = w.emit(f"np.concatenate([{r} + {d} < {r}.shape[0]] * 2) & {near}[{P}, {C}]", pure=False)
    rows = _divided_differences3(w, node, lam, pairs=(P, C))
    values = w.emit(f"np.where({ok}, ({rows} * {X}[{P}] * {Y}.T[{C}]).sum(1), 0.0)", pure=False)
    w.lines.append(SCATTER.format(op="_add", full=m, index=f"{P}, {C}", values=values))
    w.lines.append(f"    return {m}")
    w.lines[start:] = ["    " + line for line in w.lines[start:]]
    w.written, w.code_of = written, code_of
    w.lines.append(f"    {name} = _by_offsets({add}, {plain}, {near})")
    return name


def _taylor_series_code(w: _Writer, fn, c: list, u: str, v: str, x: str, pure: bool) -> str:
    """Σₙ cₙ hₙ₋₂(u, v) about x (hₘ(u, v) = u hₘ₋₁ + vᵐ), in units of x for log and the powers;
    ``pure``: lines that other code may share (not the arrays gathered for one scatter)."""
    units = _in_units(fn)
    if units:
        u, v = w.emit(f"{u} / {x}", pure=pure), w.emit(f"{v} / {x}", pure=pure)
    total, h, power = w.emit(f"{c[0]} + 0.0 * ({u} + {v})", pure=pure), None, None
    for coefficient in c[1:]:
        power = v if power is None else w.emit(f"{power} * {v}", pure=pure)
        h = w.emit(f"{u} + {v}", pure=pure) if h is None else w.emit(f"{u} * {h} + {power}", pure=pure)
        total = w.emit(f"{total} + {coefficient} * {h}", pure=pure)
    if units:  # x: the unit (_unit_code)
        p = -2.0 if fn.name in ("log", "log1p", "arctan") else \
            (0.5 if fn.name == "sqrt" else float(fn.param)) - 2.0
        r = w.emit(f"1.0 / {x}", pure=pure)
        total = w.emit(f"{total} * {r} * {r}" if p == -2.0 else f"{total} * {x} ** {p!r}", pure=pure)
    return total


def _general_function(w: _Writer, n: Funm | Frechet, args: dict) -> str:
    """f(X) and L_f(X, E) of a general matrix: the backend's own function where its table has
    one (SciPy's expm, logm and sqrtm for NumPy; expm in JAX and PyTorch); the others by
    funm's helper ``_matfun``, from expm, square roots, series and solves, never diagonalising
    X (so a defective X is right), L_f by the block [[X, sE], [0, X]] — in JAX and PyTorch log
    by inverse scaling and squaring and sqrt by Denman–Beavers, scaled (``_mf_log``,
    ``_mf_sqrt``): NaN outside the principal branch, which checked code refuses."""
    fn, frechet = (n.args[0], True) if isinstance(n, Frechet) else (n.fn, False)
    x = args[n.children[0]]
    key = f"__{GENERAL_FUNCTIONS[fn]}{'_frechet' if frechet else ''}"
    if fn not in ("exp", "log", "sqrt") or key not in w.functions:  # funm's helper _matfun
        return f"_matfun({fn!r}, {', '.join(args[c] for c in n.children)})"
    template, operands = w.functions[key], [args[c] for c in n.children]
    # a direction E rescaled before a block construction (L is linear in E): {small} makes it
    # 10⁻³‖X‖ (logm's block), {unit} the size of X, at least 1 (expm's block)
    norm = f"max(np.linalg.norm({operands[-1]}), 1e-300)"
    scales = {name: w.emit(f"{factor} / {norm}") for name, factor in
              (("small", f"1e-3 * np.linalg.norm({x})"), ("unit", f"max(np.linalg.norm({x}), 1.0)"))
              if f"{{{name}}}" in template}
    return template.format(*operands, **scales)


ENTIRE = ("exp", "expm1", "sinh", "cosh", "sin", "cos")  # not finite only where they overflow


def _finite_code(w: _Writer, n: Funm | Frechet, code: str) -> str:
    """f(X) or L_f(X, E) of a general matrix through ``_finite_value`` (md.codegen's checks):
    where it is not finite, NumPy and PyTorch raise FloatingPointError (md.compile's functions
    evaluate's EvaluationError, ``_singular``), JAX raises outside jit and gives NaN under it."""
    fn = n.args[0] if isinstance(n, Frechet) else n.fn
    what = f"L_{fn}(X, E)" if isinstance(n, Frechet) else f"{GENERAL_FUNCTIONS[fn]}(X)"
    why = (f"{what} overflowed: X's eigenvalues are too large for the method (through expm)" if fn in ENTIRE
           else f"{what} is not finite here: X has an eigenvalue at a pole, outside the principal "
                f"branch, or too large for the method")
    return f"_finite_value({w.emit(code)}, {why!r})"


# --------------------------------------------------------------------------- repeated eigenvalues

TIE_AGREE = 1e-6  # |L(T)| above this, relative to the limit's scale: no limit at the tie


class _Tied(Unary):
    """What generated code needs of eigenvalues λ at a tie (``_tie_limits``): "split", the
    direction p = (1, 2, …, n) that moves each eigenvalue apart from those it coincides with;
    "tie", T_ij = 1/(p_j − p_i) where λᵢ and λⱼ are tied (i ≠ j), else 0; "regular", EigGap's
    1/(λⱼ − λᵢ) where they are not, else 0; "near", EigGap's where they are.  Eigenvalues are
    tied where they are within √ε of the larger (or 64ε of the largest |λ|, a repeated 0):
    there a difference over the gap loses ε/gap, and the limit is off by about the gap.
    "split_singular" (λ = σ², the singular vectors' gaps): p/(2σ) where σ is tied and not 0,
    else 0, the move of σ that moves σ² by p.  "tie_sym": |T|; "merged": λ with each run of
    tied values set to its first, exactly (the tie itself, where ``_Limit`` asks whether the
    terms that diverge as 1/gap cancel)."""

    fields = ("part", "arg")

    @staticmethod
    def _shape(part, arg):
        return arg.shape if part in ("split", "split_singular", "merged") else arg.shape * 2


class _AllChildren(Node):
    """A node of generated code's own whose arguments are all nodes, its children."""

    @property
    def children(self):
        return self.args

    def with_children(self, children):
        return type(self)(*children)


class _Limit(_AllChildren):
    """``regular`` + ``slope`` (the limit) where ``lin``, the part of a second derivative
    through eigenvectors that is linear in the tie gaps, vanishes (the derivative has a limit
    at the tie); where it does not, the formula (``regular`` + ``near``) for eigenvalues that
    are distinct as evaluate counts them (``GAP_COINCIDE``), else NaN: no limit, no value.
    ``anti`` and ``sym`` are ``lin`` at the tie itself (the tied values made one) for T and
    |T|: the terms cancel there, by structure (equal weights on the tie), where
    |anti| ≤ 64ε|sym| (evaluate's ``_tie_terms_cancel``); where they do not, the limit would
    drop a term of about |anti|/gap, and the formula is kept.  ``slope`` may be left out (0)."""

    @staticmethod
    def _shape(regular, lin, lam, near, anti, sym, *slope):
        return regular.shape


class _TieBranch(_AllChildren):
    """A second derivative through eigenvectors as generated code computes it: ``limit`` (a
    ``_Limit``: the formula with its tie terms) where two eigenvalues of λ are tied (within
    √ε), else ``plain``, the formula as written, which costs 2–5× less (``_tie_branch``)."""

    @staticmethod
    def _shape(limit, plain, lam):
        return plain.shape


class _Scale(Unary):
    """A power of 2, c, that brings a matrix X's largest entry into [1/2, 1) (1 where that is
    0, not finite, or outside the dtype's normal range), or its inverse (``inverse``): the
    scale of X's singular values for ``_scaled_singular_code``."""

    fields = ("inverse", "arg")

    @staticmethod
    def _shape(inverse, arg):
        return ()


def _scaled_singular_code(roots: list) -> list:
    """Second derivatives through singular vectors computed with σ scaled by c (``_Scale``),
    scaled back by its degree in σ (evaluate's ``_rescaled``): they multiply up to three
    singular values before dividing by σⱼ² − σᵢ², which underflows (overflows) where σ is
    below 10⁻¹⁰⁰ (above 10¹⁰⁰); every scaling is exact, so the values are otherwise the same."""
    out = []
    for r in roots:
        found = _singular_gap_matrices(r)
        if not found:
            out.append(r)
            continue
        matrices = {m: (lambda x, d, m=m: Contract((_Scale(d < 0, m), x), ((), tuple(range(x.ndim))),
                                                   tuple(range(x.ndim))))
                    for m in found}
        out.append(_rescaled(r, matrices, _tie_degree))
    return out


def _tie_degree(n: Node, degrees: list):
    """The degree in σ of a tie node (``_rescaled``'s rule) from its children's, or None."""
    if isinstance(n, _Tied):
        d = degrees[0]
        return {"split": 0, "tie": 0, "tie_sym": 0, "regular": -d, "near": -d, "merged": d,
                "split_singular": -d // 2 if d % 2 == 0 else None}[n.part]
    if isinstance(n, _Limit):
        regular, lin, lam, near, anti, sym, *slope = degrees
        ok = near == regular and lin == regular + lam and anti == sym and all(x == regular for x in slope)
        return regular if ok else None
    if isinstance(n, _TieBranch):  # each arm scaled back within it (the branch stays a result);
        return 0, (False, False, True)  # its ties, relative, read from σ² scaled
    return None


def _gap_degree(root: Node, gaps: set):
    """How many factors of the EigGap nodes ``gaps`` each term of root holds at most, or None
    where one sits inside a node that is not a product or a sum (not a polynomial in them)."""
    degree: dict = {}
    for n in _children_first(root):
        if n in gaps:
            degree[n] = 1
            continue
        kids = [degree[c] for c in n.children]
        if any(k is None for k in kids):
            degree[n] = None
        elif isinstance(n, Contract):
            degree[n] = sum(kids)
        elif isinstance(n, Sum):
            degree[n] = max(kids, default=0)
        else:
            degree[n] = None if any(kids) else 0
    return degree[root]


def _substituted(root: Node, swap: dict) -> Node:
    memo: dict = {}
    for n in _children_first(root):
        memo[n] = swap[n] if n in swap else n.with_children([memo[c] for c in n.children])
    return memo[root]


def _hadamard(a: Node, b: Node) -> Node:
    labels = tuple(range(a.ndim))
    return Contract((a, b), (labels, labels), labels)


def _tangent(root: Node, seeds: dict):
    """The derivative of root along the directions ``seeds`` gives its leaves (node → tangent;
    None: held fixed), forward, by the product, sum and chain rules: None where it is 0, and
    NotSupportedError at a node with no rule here."""
    memo: dict = dict(seeds)
    for n in _children_first(root):
        if n in memo:
            continue
        kids = [memo.get(c) for c in n.children]
        if not any(k is not None for k in kids):
            memo[n] = None
        elif isinstance(n, Contract):
            memo[n] = Sum(tuple((1.0, Contract(n.operands[:k] + (d,) + n.operands[k + 1:], n.labels, n.out))
                                for k, d in enumerate(kids) if d is not None), n.shape)
        elif isinstance(n, Sum):
            memo[n] = Sum(tuple((c, d) for (c, _), d in zip(n.terms, kids) if d is not None), n.shape)
        elif isinstance(n, Elementwise):
            slope = n.fn.derivative(n.arg)
            if slope.shape != n.shape:
                raise NotSupportedError("a slope of another shape")
            memo[n] = _hadamard(slope, kids[0])
        elif isinstance(n, DivDiff):  # dF_ij = A_ij dλᵢ + A_ji dλⱼ (A: f[λᵢ, λᵢ, λⱼ])
            second = _tangent(n.fn.derivative(n.arg), {n.arg: Delta(n.arg.shape[0], 1)})
            A = DivDiff2(n.fn, n.arg, simplify(second) if second is not None else Sum((), n.arg.shape))
            memo[n] = Sum(((1.0, Contract((A, kids[0]), ((0, 1), (0,)), (0, 1))),
                           (1.0, Contract((A, kids[0]), ((1, 0), (1,)), (0, 1)))), n.shape)
        elif isinstance(n, MatFn):  # Daleckii–Krein: U (F ⊙ (Uᵀ dS U)) Uᵀ
            U, F = Eigh("vectors", n.arg), DivDiff(n.fn, Eigh("values", n.arg))
            i, a, b, j, k, m = range(6)
            memo[n] = Contract((U, F, U, kids[0], U, U),
                               ((i, a), (a, b), (j, a), (j, k), (k, b), (m, b)), (i, m))
        else:
            raise NotSupportedError(f"no forward rule for {type(n).__name__} here")
    return memo[root]


def _tie_limits(roots: list) -> list:
    """Second derivatives through eigenvectors, written so that they keep their limit where
    eigenvalues coincide.  Such a result R is affine in G = EigGap(λ) (1/(λⱼ − λᵢ)); split G
    into its regular part and the tie pairs', which along S(h) = U diag(λ + hp) Uᵀ (U fixed: the
    path evaluate's split limit takes) are T/h.  Then R(h) = R[G_reg] + L(T)/h + O(h), where
    L(T) = R[T] − R[0] is the part linear in the gaps; the limit exists where L(T) = 0 at the
    tie, and is R[G_reg] + d/dh L(T), the last a forward derivative that moves λ by p and S by
    U diag(p) Uᵀ and holds U and T fixed.  Results where that does not apply (a gap of a matrix
    that is not a multiple of a variable, several decomposed matrices, a gap squared) are kept
    as they are.

    Through singular vectors the gaps are G = EigGap(σ²) (1/(σⱼ² − σᵢ²)), and the path is
    X(h) = U diag(√(σ² + hp)) Vᵀ (U, V fixed), along which σ² moves by hp: the same limit,
    the forward derivative moving σ by p/(2σ) where σ is tied (and not 0) and X by
    U diag(p/(2σ)) Vᵀ.  First the terms through singular vectors that cancel at a tie are
    combined, with exact divided differences of σ (evaluate's ``_singular_divided``)."""
    out = []
    for r in map(_singular_divided, roots):
        gaps = {n for n in walk(r)
                if isinstance(n, EigGap) and (isinstance(n.arg, Eigh) or _svd_squares(n.arg)
                                              and isinstance(n.arg.arg, Svd))}
        ms = {g.arg.arg if isinstance(g.arg, Eigh) else g.arg.arg.arg for g in gaps}
        lams = {g.arg for g in gaps}
        if len(ms) != 1 or len(lams) != 1 or _gap_degree(r, gaps) != 1:
            out.append(r)
            continue
        (m,), (lam,) = ms, lams
        scaled = _scaled_variable(m)
        if scaled is None:
            out.append(r)
            continue
        v, c = scaled
        p = _Tied("split", lam)
        regular = simplify(_substituted(r, {g: _Tied("regular", lam) for g in gaps}))
        zero = simplify(_substituted(r, {g: Sum((), g.shape) for g in gaps}))
        lin, near = (simplify(Sum(((1.0, simplify(_substituted(r, {g: _Tied(part, lam) for g in gaps}))),
                                   (-1.0, zero)), r.shape)) for part in ("tie", "near"))
        fixed = {t: None for t in walk(lin) if isinstance(t, _Tied)}
        source = lam if isinstance(lam, Eigh) else lam.arg  # λ, or σ for σ² (their ties: σ's)
        sym = _substituted(lin, {t: _Tied("tie_sym", t.arg) for t in fixed if t.part == "tie"})
        anti, sym = (simplify(_substituted(x, {source: _Tied("merged", source)})) for x in (lin, sym))
        if isinstance(lam, Eigh):
            U = Eigh("vectors", m)
            moved = Contract((U, p, U), ((0, 2), (2,), (1, 2)), (0, 1))
            seeds = {lam: p, U: None}
        else:  # σ moves by p/(2σ) where tied; u₁, v₁ and σ₁ (‖X‖₂) with U, V and σ
            sv = lam.arg
            U, Vr, moves = Svd("left", sv.rank, m), Svd("right", sv.rank, m), _Tied("split_singular", lam)
            moved = Contract((U, moves, Vr), ((0, 2), (2,), (1, 2)), (0, 1))
            seeds = {sv: moves, **{n: None for n in walk(lin) if isinstance(n, Svd) and n.arg is m
                                   and n.part in ("left", "right", "top_left", "top_right")},
                     **{n: Contract((moves, Basis(sv.rank, 0)), ((0,), (0,)), ()) for n in walk(lin)
                        if isinstance(n, Svd) and n.arg is m and n.part == "top"}}
        seeds = {**seeds, v: Sum(((1.0 / c, moved),), v.shape), **fixed}
        try:
            slope = _tangent(lin, seeds)
        except NotSupportedError:
            out.append(r)
            continue
        limit = _Limit(regular, lin, lam, near, anti, sym, *([simplify(slope)] if slope is not None else []))
        out.append(_TieBranch(limit, r, lam))  # r itself away from ties: the tie terms cost 2–5×
    return out


def _tied_code(w: _Writer, lam: str, tol: str) -> str:
    """Where λᵢ and λⱼ (i ≠ j) are within ``tol`` of the larger, or 64ε of the largest |λ|, as
    a boolean matrix: tied (tol √ε, ``_Tied``) or coinciding (evaluate's ``_coinciding``)."""
    a, b = w.emit(f"{lam}[:, None]"), w.emit(f"{lam}[None, :]")
    off = w.emit(f"np.eye({lam}.shape[0]) == 0")
    eps = w.emit(f"np.finfo({lam}.dtype).eps")
    return w.emit(f"(np.abs({a} - {b}) <= np.maximum({tol} * np.maximum(np.abs({a}), np.abs({b})), "
                  f"64 * {eps} * np.abs({lam}).max())) & {off}")


def _tie_values(w: _Writer, node: Node, code: str) -> str:
    """The values whose ties count for gaps of ``node``: σ where node is σ² (the singular
    vectors' gaps; σ₁/σᵢ of 10⁸ puts σᵢ² below 64ε of σ₁², yet σᵢ is resolved), else node's."""
    return w.emit(f"np.sqrt({code})") if _svd_squares(node) else code


def _tie_code(w: _Writer, n: Node, args: dict) -> str:
    if isinstance(n, _Limit):
        regular, lin, lam, near, anti, sym, *slope = (args[c] for c in n.children)
        value = w.emit(f"{regular} + {slope[0]}") if slope else regular
        eps = w.emit(f"np.finfo({lam}.dtype).eps")
        bad = w.emit(f"(np.abs({lin}).max() > max({TIE_AGREE!r}, 64 * {eps}) * np.abs({value}).max() * "
                     f"np.abs({lam}).max()) | (np.abs({anti}).max() > {TIE_CANCEL} * {eps} * "
                     f"np.abs({sym}).max())", "the 1/gap terms do not cancel at the tie: no limit")
        values = _tie_values(w, n.children[2], lam)
        coincide = w.emit(f"{_tied_code(w, values, repr(GAP_COINCIDE))}.any()", NO_LIMIT_COMMENT)
        return f"np.where({bad}, np.where({coincide}, np.nan, {regular} + {near}), {value})"
    lam = args[n.arg]
    if n.part == "split":
        return f"(0.0 * {lam} + 1.0).cumsum(0)"
    values = _tie_values(w, n.arg, lam)
    tied = _tied_code(w, values, f"{w.emit(f'np.finfo({lam}.dtype).eps')} ** 0.5")
    if n.part == "merged":  # each run of tied values (sorted) as its first
        first = w.emit(f"np.argmax(np.where({tied} | (np.eye({lam}.shape[0]) != 0), 1.0, 0.0), 1)")
        return f"{lam}[{first}]"
    if n.part == "split_singular":  # lam = σ²: σ's move p/(2σ) where tied and not 0, else 0
        p = w.emit(_tie_code(w, _Tied("split", n.arg), args))
        moving = w.emit(f"{tied}.any(1) & ({lam} > 0)")
        return f"np.where({moving}, {p} / (2 * np.sqrt(np.where({moving}, {lam}, 1.0))), 0.0)"
    if n.part in ("tie", "tie_sym"):
        p = w.emit(_tie_code(w, _Tied("split", n.arg), args))
        tie = f"np.where({tied}, 1.0 / np.where({tied}, {p}[None, :] - {p}[:, None], 1.0), 0.0)"
        return tie if n.part == "tie" else f"np.abs({tie})"
    if n.part == "near":  # used only where no pair coincides: those are 0, not inf
        tied = w.emit(f"{tied} & ~{_tied_code(w, values, repr(GAP_COINCIDE))}")
    else:
        tied = w.emit(f"(np.eye({lam}.shape[0]) == 0) & ~{tied}")
    return f"np.where({tied}, 1.0 / np.where({tied}, {lam}[None, :] - {lam}[:, None], 1.0), 0.0)"


NO_LIMIT_COMMENT = "no limit at a repeated eigenvalue: NaN"
TIE_BRANCH_COMMENT = "two eigenvalues within √ε: the tie terms"


def _tie_branch_order(order: list, roots: list) -> tuple:
    """``order`` (children before parents) in four parts, for ``_tie_branch``: the nodes computed
    before the branch (what the results need apart from the branches, and what both arms of
    one need), the nodes only the arms with tie terms need, those only the plain arms need,
    and the nodes that read a branch (none where the branches are the results)."""
    branches = [n for n in order if isinstance(n, _TieBranch)]
    if not branches:
        return order, [], [], []

    def below(starts, stop):
        found, stack = set(), list(starts)
        while stack:
            n = stack.pop()
            if n not in found and n not in stop:
                found.add(n)
                stack.extend((n.children[2],) if isinstance(n, _TieBranch) else n.children)
        return found
    main = below(roots, set())
    tied = below([b.children[0] for b in branches], main)
    plain = below([b.children[1] for b in branches], main)
    late: set = set()
    for n in order:
        if isinstance(n, _TieBranch) or any(c in late for c in n.children):
            late.add(n)
    before = [n for n in order if (n in main or (n in tied and n in plain)) and n not in late]
    return (before, [n for n in order if n in tied and n not in plain], [n for n in order if n in plain
            and n not in tied], [n for n in order if n in late and not isinstance(n, _TieBranch)])


def _tie_branch(w: _Writer, branches: list, arms: tuple, args: dict, lower, backend: str) -> None:
    """The ``_TieBranch`` nodes as one branch on "two eigenvalues of a decomposed matrix are
    tied" (within √ε, ``_tied_code``): one arm computes the nodes only their limits need (the
    tie terms), the other those only the plain formulas need, so that away from ties the code
    costs what it costs without the tie terms.  NumPy and PyTorch get an if block; JAX two
    functions of which ``_tie_cond`` runs one (``lax.cond`` under jit), so that the code stays
    traceable and differentiable."""
    tied = []
    for node in dict.fromkeys(b.children[2] for b in branches):
        lam = _tie_values(w, node, args[node])
        eps = w.emit(f"np.finfo({lam}.dtype).eps")
        tied.append(w.emit(f"{_tied_code(w, lam, f'{eps} ** 0.5')}.any()", TIE_BRANCH_COMMENT))
    condition = tied[0] if len(tied) == 1 else w.emit(" | ".join(tied))
    names = [w.fresh() for _ in branches]
    written, code_of = dict(w.written), dict(w.code_of)  # what an arm writes stays in it
    for arm, (nodes, header) in enumerate(zip(arms, ("    def _tie_terms():" if backend == "jax" else
                                                     f"    if {condition}:", "    def _plain_terms():"
                                                     if backend == "jax" else "    else:"))):
        w.lines.append(header)
        start = len(w.lines)
        for n in nodes:
            lower(n)
        results = [args[b.children[arm]] for b in branches]
        if backend == "jax":
            w.lines.append(f"    return {', '.join(results)}")
        else:
            w.lines += [f"    {name} = {result}" for name, result in zip(names, results)]
        w.lines[start:] = ["    " + line for line in w.lines[start:]]
        w.written, w.code_of = dict(written), dict(code_of)
    if backend == "jax":
        w.lines.append(f"    {', '.join(names)}{',' if len(names) > 1 else ''} = "
                       f"_tie_cond({condition}, _tie_terms, _plain_terms)")
    for b, name in zip(branches, names):
        args[b] = name


def _refusing_no_limit(fn, source: str, backend: str):
    """``fn``, raising evaluate's error where its code found that a second derivative through
    eigenvectors has no limit at a repeated eigenvalue (there the code returns NaN: JAX's
    functions do, as under jit no value can raise)."""
    if fn is None or backend == "jax" or NO_LIMIT_COMMENT not in source:
        return fn

    @functools.wraps(fn)
    def refusing(*args, **kwargs):
        out = fn(*args, **kwargs)
        for r in out if isinstance(out, tuple) else (out,):
            nan = r != r
            if bool(nan.any() if hasattr(nan, "any") else nan):
                raise EvaluationError(
                    "not differentiable here: a decomposed matrix has a repeated eigenvalue, and "
                    "this second derivative through its eigenvectors has no limit there (it grows "
                    "as they split apart), as the Hessian of one eigenvalue at a tie does; the "
                    "compiled function returns no value silently")
        return out
    return refusing


# ------------------------------------------------------------------ checks: a choice of vectors at a tie

DECOMPOSITION_CALL = re.compile(r"\b(?:np|jnp|torch)\.linalg\.(eigh|svd)\((\w+)(?:, full_matrices=False)?\)")


class _Decompositions:
    """eigh and the thin SVD as compiled functions with ``checks`` compute them: each notes
    whether its values have a tie (neighbours within CLUSTER of the larger, or 64ε of the
    largest; for the SVD also σ = 0).  With ``snap`` each tied group of values is made one
    (its mean; σ = 0 exactly), so that a function of them is constant on it, not different
    by rounding; with ``turn`` also the vectors are turned within each tie (U ← UR,
    R = (I − K)⁻¹(I + K) orthogonal for K skew and zero outside the tied pairs; for σ = 0 the
    left and right null vectors apart, the left ones flipped), as evaluate's
    ``_refuse_choices`` draws them.  Array operations only, so that JAX can trace them."""

    def __init__(self, backend: str, snap: bool = False, turn: bool = False, lift: float = 0.0):
        self.backend, self.snap, self.turn, self.ties, self.seen = backend, snap or turn, turn, [], []
        self.lift = lift  # > 0: each σ = 0 (within the tolerance) set to lift · tolerance · σ₁
        self.zeros = False  # whether an SVD met a σ = 0 (outside JAX's jit: a bool)
        # the backend's module, which the generated code has imported
        self.xp = np if backend == "numpy" else sys.modules["jax.numpy" if backend == "jax" else "torch"]

    def _eps(self, v) -> float:
        return float(self.xp.finfo(v.dtype).eps)

    def _close(self, a, b, v, rel):
        xp = self.xp
        floor = 64 * self._eps(v) * xp.abs(v).max()
        return xp.abs(a - b) <= xp.maximum(rel * xp.maximum(xp.abs(a), xp.abs(b)), floor)

    def _neighbours_tied(self, v, rel):
        """Whether two neighbours of the sorted values v are tied; outside JAX, a first test
        on the smallest gap alone (three operations) settles the common case, no tie."""
        if self.backend != "jax" and v.shape[0] > 1:
            gap = float(self.xp.abs(v[1:] - v[:-1]).min())
            if gap > rel * max(abs(float(v[0])), abs(float(v[-1]))):  # every tolerance is below this
                return False
        return self._close(v[1:], v[:-1], v, rel).any()

    def _tolerance(self, v) -> float:
        return max(CLUSTER, 256 * self._eps(v))

    def _like(self, a, v):
        if self.backend == "torch":
            return self.xp.as_tensor(a, dtype=v.dtype, device=v.device)
        return self.xp.asarray(a, dtype=v.dtype)

    def _rotation(self, mask, v, seed: int, flip=None):
        """Cayley's orthogonal matrix of a fixed random skew K kept where ``mask``, times a
        sign flip of the columns where ``flip``."""
        xp, n = self.xp, v.shape[0]
        k = np.random.default_rng(seed).standard_normal((n, n))
        k = self._like((k - k.T) / 2, v)
        k = xp.where(mask, k, xp.zeros_like(k))
        eye = self._like(np.eye(n), v)
        r = xp.linalg.solve(eye - k, eye + k)
        if flip is not None:
            r = r * xp.where(flip, -xp.ones_like(v), xp.ones_like(v))[None, :]
        return r

    def _pairs(self, v, rel):
        off = self._like(np.eye(v.shape[0]) == 0, v) > 0
        return self._close(v[:, None], v[None, :], v, rel) & off

    def eigh(self, x, label: str):
        lam, u = self.xp.linalg.eigh(x)
        rel = self._tolerance(lam)
        self.ties.append(self._neighbours_tied(lam, rel))
        self.seen.append((label, "eigenvalue", lam))
        if self.snap:
            pairs = self._pairs(lam, rel)
            lam = self._snapped(lam, pairs)
            if self.turn:
                u = u @ self._rotation(pairs, lam, 0)
        return lam, u

    def svd(self, x, label: str):
        u, s, vt = self.xp.linalg.svd(x, full_matrices=False)
        if s.shape[0] == 0:
            return u, s, vt
        rel = self._tolerance(s)
        zero = s <= rel * s[0]
        self.ties.append(self._neighbours_tied(s, rel) | zero.any())
        self.zeros = self.zeros | zero.any()
        self.seen.append((label, "singular value", s))
        if self.lift:
            s = self.xp.where(zero, self.lift * rel * s[0] * self.xp.ones_like(s), s)
        if self.snap:
            both = zero[:, None] & zero[None, :]
            tied = self._pairs(s, rel) & ~zero[:, None] & ~zero[None, :]
            s = self.xp.where(zero, self.xp.zeros_like(s), self._snapped(s, tied))
            if self.turn:
                u = u @ self._rotation(tied | both, s, 0, flip=zero)
                vt = self._rotation(tied, s, 0).T @ vt
                vt = self._rotation(both, s, 1).T @ vt
        return u, s, vt

    def _snapped(self, v, pairs):
        """Each value the mean of those it is tied with (and itself)."""
        xp = self.xp
        w = xp.where(pairs, xp.ones_like(pairs, dtype=v.dtype), xp.zeros_like(pairs, dtype=v.dtype)) + \
            self._like(np.eye(v.shape[0]), v)
        return (w @ v) / w.sum(1)

    def tied(self):
        out = False
        for t in self.ties:
            out = out | t
        return out

    def refusal(self, finite: bool = True) -> EvaluationError:
        """evaluate's error (``_Spectra.refusal``) for the ties this call met."""
        parts, kinds = [], set()
        for label, what, values in self.seen:
            v, eps = np.sort(_as_numpy(values).astype(float)), float(self.xp.finfo(values.dtype).eps)
            rel, scale = max(CLUSTER, 256 * eps), float(np.abs(v).max(initial=0.0))
            zero = v <= rel * scale if what != "eigenvalue" else np.zeros(v.shape, bool)
            said = [f"{'λ' if what == 'eigenvalue' else 'σ'} = {_shown(v[~zero], g):.6g} ({len(g)} times)"
                    for g in _groups(v[~zero], rel, 64 * eps * scale)]
            if zero.any():
                said.append(f"σ = 0 ({int(zero.sum())} time{'s' if zero.sum() > 1 else ''}: "
                            f"it is rank-deficient)")
            if said:
                kinds.add(what)
                parts.append(f"{label} has a repeated {'or zero ' if what != 'eigenvalue' else ''}{what}, "
                             f"{', '.join(said)}")
        vectors = " or ".join((["eigenvectors"] if "eigenvalue" in kinds else []) +
                              (["singular vectors"] if "singular value" in kinds else [])) or "vectors"
        where = "; ".join(dict.fromkeys(parts)) or "a decomposed matrix has a repeated value"
        if not finite:
            return EvaluationError(f"{where}: the {vectors} are not differentiable here, and this result, "
                                   f"which differentiates them, is not finite; the compiled function "
                                   f"returns no value silently")
        examples = (["the gradient of one eigenvalue at a tie (λ_max at a repeated top eigenvalue)"]
                    if "eigenvalue" in kinds else []) + \
            (["the spectral norm's at a repeated σ₁", "the nuclear norm's at a rank-deficient matrix"]
             if "singular value" in kinds else [])
        return EvaluationError(
            f"not differentiable here: {where}, and this result depends on which {vectors} are "
            f"chosen for it, as {' or '.join(examples) or 'a subgradient'} does; the compiled function "
            f"returns no subgradient silently (md.compile(..., checks=False) returns one)")


def _groups(v, rel: float, floor: float) -> list:
    """Index groups of sorted values whose neighbours are within ``rel`` of the larger or
    ``floor`` (evaluate's ``_clusters``, at a tolerance of the dtype's)."""
    groups, current = [], [0] if v.size else []
    for i in range(1, v.size):
        if abs(v[i] - v[i - 1]) <= max(rel * max(abs(v[i]), abs(v[i - 1])), floor):
            current.append(i)
        else:
            groups, current = groups + [current], [i]
    return [g for g in groups + [current] if len(g) > 1]


def _checking_choices(variant, fn, backend: str, compared: list, single: bool, limits: bool = False):
    """``fn`` (the generated function) as ``variant`` (its source with each decomposition
    through ``_Decompositions``) computes it, refusing a result that depends on the choice of
    eigen- or singular vectors where values tie, as evaluate does: where a call met a tie, the
    outputs ``compared`` (those that do not divide by eigenvalue gaps, which take their limit
    or are NaN) are computed again with the vectors turned within the ties, and one that moves
    (relative CHOICE_TOLERANCE, or 4096ε in float32) is refused; an output that is not finite
    at a tie is refused too.  NumPy and PyTorch raise EvaluationError; JAX raises outside jit
    and gives NaN under it (no value can raise there), and runs the second computation only at
    a tie (``lax.cond``).  With ``limits`` (the code has tie terms) an output that does not
    divide by gaps is left to ``_refusing_no_limit`` where it is NaN; without, at a zero σ such
    an output is computed again with that σ at two tiny values (``lift``: the tolerance times
    σ₁, and half that) and refused where the two differ or are not finite: it has no limit at
    σ = 0 (the nuclear norm's Hessian at a rank-deficient X: 1/σ terms, 10¹⁵ at σ = 10⁻¹⁶),
    where Σσᵢ³'s, whose terms vanish there, stays."""

    @functools.wraps(fn)
    def checking(*args, **kwargs):
        noted = _Decompositions(backend)
        out = variant(*args, _spectra=noted, **kwargs)
        tied = noted.tied()
        if backend == "jax":
            return _jax_choices(variant, args, kwargs, out, tied, noted, compared, single, limits) \
                if any(compared) or not limits else out
        if not bool(tied):
            return out
        if not any(compared):  # every result divides by gaps: only its finiteness is checked
            snapped = turned = out
        else:
            snapped, turned = (variant(*args, _spectra=_Decompositions(backend, snap=True, turn=turn),
                                       **kwargs) for turn in (False, True))
        lifted = [out] * 2 if limits or all(compared) or not bool(noted.zeros) else \
            [variant(*args, _spectra=_Decompositions(backend, lift=c), **kwargs)
             for c in (1.0, 0.5)]  # a limit at σ = 0? (read only by results that divide by σ)
        for o, a, b, p, q, c in zip(*((x,) if single else tuple(x) for x in (out, snapped, turned, *lifted)),
                                    compared):
            if (not limits or c) and not _all_finite(o) or c and not (_all_finite(a) and _all_finite(b)):
                raise noted.refusal(finite=False)  # (the tie terms' NaN: _refusing_no_limit's error)
            if not limits and not c and (not (_all_finite(p) and _all_finite(q)) or _moved(p, q)):
                raise noted.refusal()  # (no limit at σ = 0: evaluate's words)
            if c and _moved(a, b):
                raise noted.refusal()
        return out
    return checking


def _as_numpy(a):
    return np.asarray(a.detach().cpu() if hasattr(a, "detach") else a)


def _all_finite(a) -> bool:
    return bool(np.all(np.isfinite(_as_numpy(a))))


def _moved(a, b) -> bool:
    a, b = _as_numpy(a), _as_numpy(b)
    eps = float(np.finfo(a.dtype).eps) if a.dtype.kind == "f" else 0.0
    scale = max(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)))
    return float(np.abs(a.astype(float) - b).max(initial=0.0)) > max(CHOICE_TOLERANCE, 4096 * eps) * scale


def _jax_choices(variant, args, kwargs, out, tied, noted, compared, single, limits=False):
    jax, jnp = sys.modules["jax"], sys.modules["jax.numpy"]  # as the generated code imported them
    checked = [c or not limits for c in compared]  # (without tie terms: finite at the tie itself)

    def verdicts():  # per result checked: (moved with the vectors turned, or with a zero σ lifted; finite)
        a, b = (variant(*args, _spectra=_Decompositions("jax", snap=True, turn=turn), **kwargs)
                for turn in (False, True))
        p, q = (variant(*args, _spectra=_Decompositions("jax", lift=c), **kwargs) for c in (1.0, 0.5)) \
            if checked != compared else (a, b)  # (only results that divide by σ without tie terms read them)
        out = []
        for x, y, z, w, c, k in zip(*((r,) if single else tuple(r) for r in (a, b, p, q)), compared, checked):
            if c or k:
                x, y = (x, y) if c else (z, w)
                tol = jnp.maximum(CHOICE_TOLERANCE, 4096 * jnp.finfo(x.dtype).eps)
                finite = jnp.all(jnp.isfinite(x)) & jnp.all(jnp.isfinite(y))
                moved = ~(jnp.abs(x - y).max() <= tol * jnp.maximum(jnp.abs(x).max(), jnp.abs(y).max()))
                out.append((moved | ~finite, finite))
        return tuple(out)
    calm = tuple((jnp.asarray(False), jnp.asarray(True)) for k in checked if k)
    if isinstance(tied, jax.core.Tracer):  # under jit: computed only at a tie, and only verdicts
        found = iter(jax.lax.cond(tied, verdicts, lambda: calm))  # come out (no copies of a result)
    else:
        found = iter(verdicts() if bool(tied) else calm)
    kept = []
    for o, k in zip((out,) if single else tuple(out), checked):
        if not k:
            kept.append(o)
            continue
        moved, finite = next(found)
        if isinstance(moved, jax.core.Tracer):
            kept.append(jnp.where(moved, jnp.nan, o))  # under jit: NaN, as the tie terms give
        elif bool(moved):
            raise noted.refusal(finite=bool(finite))
        else:
            kept.append(o)
    return kept[0] if single else tuple(kept)


def _with_choices_noted(source: str, labels: dict, name: str = "f") -> str:
    """The generated source with each eigh and thin SVD through ``_spectra``
    (``_Decompositions``), a parameter added to the function."""
    head, sep, body = source.partition(f"\ndef {name}(")
    body = body.replace("):\n", ", _spectra=None):\n", 1)
    body = DECOMPOSITION_CALL.sub(lambda m: f"_spectra.{m.group(1)}({m.group(2)}, "
                                            f"{labels.get(m.group(2), 'a decomposed matrix')!r})", body)
    return head + sep + body


# what a checked module (``_with_checks``) defines ahead of its function: these, written out
# (their text read once, at import, as funm's helper is: the file may change under a long run)
CHECKS_RUNTIME = "".join("\n\n\n" + inspect.getsource(f).rstrip() for f in (
    _shown, _Decompositions, _groups, _checking_choices, _as_numpy, _all_finite, _moved, _jax_choices,
    _refusing_no_limit))


def _checks_runtime(backend: str) -> str:
    """The checks' code as generated code defines it (``CHECKS_RUNTIME`` and their constants):
    the same functions md.compile ran before, for one code printed and run."""
    imports = ["import functools", "import sys"] + (["import numpy as np"] if backend != "numpy" else [])
    lines = ["", ""] + imports + [
        "try:  # matdiff's error where matdiff is installed",
        "    from matdiff.errors import EvaluationError",
        "except ImportError:  # pragma: no cover - the module run on its own",
        "    class EvaluationError(ValueError):",
        "        pass",
        "",
        f"CLUSTER = {CLUSTER!r}  # values this close (relative) are one",
        f"CHOICE_TOLERANCE = {CHOICE_TOLERANCE!r}  # a result that moves this much with the vectors: refused",
        f"NO_LIMIT_COMMENT = {NO_LIMIT_COMMENT!r}"]
    return "\n".join(lines) + CHECKS_RUNTIME


def _with_checks(source: str, name: str, backend: str, exprs: list, vs: list, params: list) -> str:
    """``source`` with md.compile's checks written into it (``checks=True``, code that decomposes
    a matrix): its function, renamed, takes each eigh and thin SVD through ``_spectra``
    (``_Decompositions``), and ``name`` calls it through ``_checking_choices`` (and, in NumPy and
    PyTorch, ``_refusing_no_limit`` where tie terms can find no limit)."""
    q = f"_{name}"
    while any(p.startswith(q) for p in params):
        q += "_"
    head, sep, body = source.partition(f"\ndef {name}(")
    signature, _, rest = body.partition("\n")
    doc = rest.split("\n", 1)[0]
    noted = _with_choices_noted(source.replace(f"\ndef {name}(", f"\ndef {q}_spectra(", 1),
                                {p: v.name for v, p in zip(vs, params)}, f"{q}_spectra")
    head, sep, body = noted.partition(f"\ndef {q}_spectra(")
    compared = [not any(isinstance(n, EigGap) for n in walk(numerical_forms(simplify(e.node))))
                for e in exprs]  # a result that divides by gaps takes its limit, or is NaN
    limits = NO_LIMIT_COMMENT in source
    wrap = [f"{q}_checked = _checking_choices({q}_spectra, {q}_spectra, {backend!r}, {compared!r}, "
            f"{len(exprs) == 1!r}, {limits!r})"]
    if limits and backend != "jax":
        wrap.append(f"{q}_checked = _refusing_no_limit({q}_checked, {NO_LIMIT_COMMENT!r}, {backend!r})")
    return (head + _checks_runtime(backend) + "\n\n" + sep + body + "\n\n" + "\n".join(wrap) + "\n\n\n" +
            f"def {name}({signature}\n{doc}\n    return {q}_checked({', '.join(params)})\n")


SHOWN = {"split": "tie_split", "tie": "tie_gaps", "regular": "eigenvalue_gaps_apart",
         "near": "eigenvalue_gaps_tied", "split_singular": "tie_split_singular",
         "tie_sym": "tie_gaps_symmetric", "merged": "tie_merged"}
FORMS[_OffDiagonal] = lambda n: f"offdiag({index_form(n.arg, 40)})"
FORMS[_Complementary] = lambda n: f"[{index_form(n.arg, 20)} has a complement]"
FORMS[_Scale] = lambda n: f"{'1 / ' if n.inverse else ''}scale({index_form(n.arg, 40)})"
FORMS[_Tied] = lambda n: f"{SHOWN[n.part]}({index_form(n.arg, 40)})"  # the code's comments
FORMS[_Limit] = lambda n: index_form(Sum(tuple((1.0, t) for t in (n.args[:1] + n.args[6:])), n.shape), 80)


def _node_code(w: _Writer, n: Node, args: dict, size_of) -> str:
    a = [args[c] for c in n.children if c in args]
    if isinstance(n, Contract):
        return _contract(w, n, args, size_of)
    if isinstance(n, Sum):
        if not n.terms:
            return f"np.zeros(({', '.join(size_of(d) for d in n.shape)}{',' if n.shape else ''}))"
        if any(t in w.folded for _, t in n.terms):
            return _sum_onto(w, n, args, size_of)
        # a term used only here is written inline, so that NumPy adds into its temporary
        # instead of keeping it alive (an n⁴ Hessian is then one allocation, not three)
        names = [_inline(w.code_of[args[t]]) if w.uses.get(t) == 1 and args[t] in w.code_of
                 else args[t] for _, t in n.terms]
        if not all(is_ones(t) for _, t in n.terms):  # 1 − σ: the ones broadcast
            names = ["1.0" if is_ones(t) else a for a, (_, t) in zip(names, n.terms)]
        return _sum_text(names, [c for c, _ in n.terms])
    if isinstance(n, Elementwise):
        if n in w.sigmoid_pairs and w.sigmoid_pairs[n][0] in args:  # σ(u) and σ(−u): one exp
            u, k = w.sigmoid_pairs[n]
            return f"{w.emit(w.functions['__sigmoids'].format(args[u]))}[{k}]"
        return _elementwise(w, n, a[0])
    if isinstance(n, Softmax):
        if "__softmax" in w.functions:  # the backend's own, where it is as stable and faster
            return w.functions["__softmax"].format(a[0], n.axis)
        e = w.emit(f"np.exp({a[0]} - {a[0]}.max(axis={n.axis}, keepdims=True))")
        return f"{e} / {e}.sum(axis={n.axis}, keepdims=True)"
    if isinstance(n, LogSumExp):
        m = w.emit(f"{a[0]}.max(axis={n.axis}, keepdims=True)")
        return f"np.squeeze({m}, {n.axis}) + np.log(np.exp({a[0]} - {m}).sum(axis={n.axis}))"
    if isinstance(n, Eigh):  # one decomposition, its two parts
        return f"{w.emit(f'np.linalg.eigh({a[0]})')}[{0 if n.part == 'values' else 1}]"
    if isinstance(n, MatFn):  # U f(Λ) Uᵀ
        e = w.emit(f"np.linalg.eigh({a[0]})")
        values = _elementwise(w, Elementwise(n.fn, Eigh("values", n.arg)), f"{e}[0]")
        return f"({e}[1] * {values}) @ {e}[1].T"
    if isinstance(n, DivDiff):
        return _divided_differences(w, n, a[0])
    if isinstance(n, DivDiff3):  # f[λᵢ, λⱼ, λₖ] (the second-order Daleckii–Krein rule)
        return _divided_differences3(w, n, a[0])
    if isinstance(n, DivDiff3Apply):  # Σ_q f[λ_p, λ_q, λ_c] X_pq Y_qc without T where it can
        return _divided_differences3_apply(w, n, args)
    if isinstance(n, DivDiff2) and DivDiff3.has_series(n.args[0]):  # f[λᵢ, λᵢ, λⱼ] = T_iji (evaluate's)
        lam = args[n.children[0]]
        return _divided_differences3(w, DivDiff3(n.args[0], n.children[0]), lam, diagonal=True)
    if isinstance(n, DivDiff2):  # f[λᵢ, λᵢ, λⱼ]; (2f″ᵢ + f″ⱼ)/6 where λᵢ ≈ λⱼ (evaluate's)
        lam, second = (args[c] for c in n.children)
        F = w.emit(_divided_differences(w, DivDiff(n.args[0], n.children[0]), lam))  # written once
        slope = w.emit(_slope(n.args[0]).format(lam))
        a, b = f"{lam}[:, None]", f"{lam}[None, :]"
        gap = w.emit(f"{a} - {b}")
        close = w.emit(f"np.abs({gap}) <= {CLOSE!r} * np.maximum(np.abs({a}), np.abs({b}))")
        return (f"np.where({close}, (2 * {second}[:, None] + {second}[None, :]) / 6, "
                f"({slope}[:, None] - {F}) / np.where({close}, 1.0, {gap}))")
    if isinstance(n, (_Tied, _Limit)):  # at repeated eigenvalues (_tie_limits)
        return _tie_code(w, n, args)
    if isinstance(n, _OffDiagonal):  # a pair coefficient's diagonal, 0 (evaluate's _singular_divided)
        off = w.emit(f"np.eye({a[0]}.shape[0]) == 0")
        return f"np.where({off}, {a[0]}, 0.0)"
    if isinstance(n, _Complementary):  # 0 where the singular vectors span the space
        return f"np.ones(()) * float({a[0]}.shape[0] > {a[0]}.shape[1])"
    if isinstance(n, _Scale):  # 2⁻ᵉ for max|X| = m 2ᵉ, m in [1/2, 1): m / max|X|, exactly
        top = w.emit(f"np.abs({a[0]}).max()")
        tiny = w.emit(f"np.finfo({top}.dtype).tiny")
        ok = w.emit(f"({top} >= {tiny}) & ({top} <= 1 / {tiny})")
        c = w.emit(f"np.where({ok}, np.frexp({top})[0] / np.where({ok}, {top}, 1.0), 1.0)")
        return f"1 / {c}" if n.inverse else c
    if isinstance(n, EigGap):  # 1/(λⱼ − λᵢ) off the diagonal (inf where two coincide: unchecked)
        off = w.emit(f"np.eye({a[0]}.shape[0]) == 0")
        return f"np.where({off}, 1.0 / np.where({off}, {a[0]}[None, :] - {a[0]}[:, None], 1.0), 0.0)"
    if isinstance(n, (Funm, Frechet)):
        code = _general_function(w, n, args)
        return _finite_code(w, n, code) if w.checks else code
    if isinstance(n, Svd):  # one thin SVD, its parts
        e = w.emit(f"np.linalg.svd({a[0]}, full_matrices=False)")
        return {"values": f"{e}[1]", "left": f"{e}[0]", "right": f"{e}[2].T", "top": f"{e}[1][0]",
                "top_left": f"{e}[0][:, 0]", "top_right": f"{e}[2][0]"}[n.part]
    if isinstance(n, Inv):
        if w.tri is not None and isinstance(n.arg, Cholesky):  # L⁻¹ by a triangular solve, lower
            # triangular as L is (an LU inverse costs 6× and leaves rounding above the diagonal)
            return w.tri.format(a[0], f"np.eye({a[0]}.shape[0])", 0)
        return f"np.linalg.inv({a[0]})"
    if isinstance(n, Pinv):  # VΣ⁻¹Uᵀ
        f = w.emit(f"_pinv_factors({a[0]})", f"SVD of {_comment(n.arg)}")
        return f"({f}[2].T / {f}[1]) @ {f}[0].T"
    if isinstance(n, Cholesky):  # lower triangular, S = LLᵀ
        return f"np.linalg.cholesky({a[0]})"
    if isinstance(n, Phi):  # the lower triangle, the diagonal halved
        return f"0.5 * (np.tril({a[0]}) + np.tril({a[0]}, -1))"
    if isinstance(n, Det):
        return f"np.linalg.det({a[0]})"
    if isinstance(n, LogDet):
        return f"np.linalg.slogdet({a[0]})[1]"
    if isinstance(n, Reshape):
        return f"np.reshape({a[0]}, ({', '.join(size_of(d) for d in n.shape)},))"
    if isinstance(n, ScalarFn):
        raise NotSupportedError(f"codegen: {n.fn} is an abstract function; it has no code")
    if isinstance(n, Delta):
        k = size_of(n.dim)
        if n.order <= 2:
            return f"np.ones({k})" if n.order == 1 else f"np.eye({k})"
        spec = "a," + ",".join("a" + LETTERS[i + 1] for i in range(n.order - 1))
        spec += "->a" + "".join(LETTERS[i + 1] for i in range(n.order - 1))  # δ_abc = 1_a I_ab I_ac
        return f"np.einsum({spec!r}, np.ones({k}), {', '.join([f'np.eye({k})'] * (n.order - 1))})"
    if isinstance(n, Basis):
        return f"np.eye({size_of(n.dim)})[{n.pos}]"
    raise AssertionError(type(n).__name__)


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


def _sum_onto(w: _Writer, n: Sum, args: dict, size_of) -> str:
    """A sum holding diagonal outputs (``_folded_spreads``): its other terms computed into a
    new array, then each diagonal's entries added where its repeated labels agree."""
    rest = Sum(tuple((c, t) for c, t in n.terms if t not in w.folded), n.shape)
    code = _node_code(w, rest, args, size_of)
    if re.fullmatch(r"\(*\w+(\.T)?\)*", code) or \
            code.lstrip("(").startswith("np.broadcast_to("):  # another line's array, or a view,
        code = f"1.0 * {code}"  # which adding in place would change or refuse: add onto a copy
    full = w.emit(code, _comment(n), pure=False)
    for c, t in n.terms:
        if t in w.folded:
            w.into = full
            try:
                _product(w, t, args, size_of, coef=c)
            finally:
                w.into = None
    return full


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
    multiplied = _only_multiplied_inverses(order)
    for n in order:
        if not isinstance(n, Contract):
            continue
        for k, op in enumerate(n.operands):
            others = [o for o in n.operands if o is not op]
            if not (isinstance(op, Sum) and op.ndim >= 2 and uses.get(op) == 1 and
                    op not in roots and len(op.terms) > 1 and others and
                    n.operands.count(op) == 1):  # (yᵀSv)² holds S twice: not distributed
                continue
            if all(o.ndim <= 1 for o in others) or \
                    (transposes and any(_is_transpose(t) for _, t in op.terms)) or \
                    _cheaper_distributed(n, k, known, uses, roots, hint, multiplied):
                out.add(op)
                break
    return out


def _only_multiplied_inverses(order) -> set:
    """Inverses (matrices) that products read and at most one sum: distributed over that
    sum's product, each is then only multiplied, so solved with and never formed."""
    readers: dict = {}
    for n in order:
        for c in set(n.children):
            if isinstance(c, Inv) and c.ndim == 2:
                readers.setdefault(c, []).append(n)
    return {c for c, rs in readers.items()
            if sum(isinstance(r, Sum) for r in rs) == 1 and all(isinstance(r, (Sum, Contract)) for r in rs)}


def _cheaper_distributed(n: Contract, k: int, known, uses, roots, hint, multiplied=frozenset()) -> bool:
    """Whether n, distributed over its k-th factor (a sum), costs less than four fifths of
    forming the sum and then n; or no more, where a term is an inverse that only this sum
    and products read (X(S⁻¹ − uuᵀ)ᵀ as XS⁻ᵀ − (Xu)uᵀ: S⁻¹ is then never formed, each
    product with it a solve; ``multiplied``, from ``_only_multiplied_inverses``)."""
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
    return split <= fused if inverses else split < 0.8 * fused


def _size_of_shape(shape, hint: dict) -> float:
    return float(np.prod([_size(d, hint) for d in shape]))


def _term_product(n: Contract, k: int, term: Node, known) -> Contract:
    """n with its k-th factor replaced by ``term``, simplified (a transposed or product
    term is read in place: x @ A, not A.T then @ x; U(VᵀV), not (UVᵀ)V) where every factor of
    the simplified product is among the ``known`` (computed) nodes."""
    raw = Contract(n.operands[:k] + (term,) + n.operands[k + 1:], n.labels, n.out)
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
    (k, s), = inlined[:1]  # distributed over its sum: Σ cₜ·(n with t in the sum's place)
    codes = [_contract(w, _term_product(n, k, t, args), args, size_of) for _, t in s.terms]
    return _sum_text([_inline(c) if " + " in c or " - " in c else c for c in codes],
                     [coef * c for c, _ in s.terms])


# --------------------------------------------------------------------------- entry points


# names the generated code itself uses: a parameter never shadows them
RESERVED = {"np", "jnp", "jax", "torch", "scipy", "float", "_device", "_dtype", "_tie_terms",
            "_plain_terms"} | set(HELPERS) | \
    {h for table in BACKENDS.values() for h in table.get("helpers", ())} | \
    set(dir(builtins))


def user_function_name(fn) -> str:
    """The name generated code calls a user's function by: _ and its name as Python reads it
    (NFKC: md.function("ｇ") is called as _g, and looked up under that name); its k-th
    derivative, the list's entry numpy=[f, f′, f″, …][k], as _g_dk."""
    return "_" + unicodedata.normalize("NFKC", fn.name) + (f"_d{fn.order}" if fn.order else "")


def _parameters(vs: list, fn_name: str, functions=()) -> list:
    """One Python parameter per variable: its name as Python reads it (NFKC-normalised:
    ｔ1 is t1), with _ appended until it is no keyword, no name the code uses (the user's
    functions' _g included), and no other parameter's name."""
    taken, out = set(RESERVED) | {fn_name} | {user_function_name(f) for f in functions}, []
    for v in vs:
        p = unicodedata.normalize("NFKC", v.name)
        while keyword.iskeyword(p) or p in taken:
            p += "_"
        taken.add(p)
        out.append(p)
    return out


def _as_list(outputs) -> list:
    """The outputs (an expression or a list of them) as a list of Expr."""
    return [lift(e) for e in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


def _variables_of(exprs: list, args=None) -> list:
    """The variables a function computing ``exprs`` takes: in the order given by ``args``
    (variables or their names; it must hold every one the outputs use, and may hold more),
    else in the order they first appear in the expressions as written."""
    # every variable the outputs were written with, also one that simplifies away (a − a):
    # the function's signature, dtype and device follow what the user wrote
    used = variables(*(simplify(e.node) for e in exprs), *(e.node for e in exprs),
                     *(v for e in exprs for v in e.scope))
    if args is not None:
        return _ordered_by(args, used, exprs)
    seen, order = set(used), []
    stack = [e.node for e in reversed(exprs)]
    visited = set()
    while stack:  # depth first, left to right: x.T @ A @ x takes (x, A)
        n = stack.pop()
        if n in visited:
            continue
        visited.add(n)
        if n in seen:
            order.append(n)
            seen.discard(n)
        stack.extend(reversed(n.children))
    return order + [v for v in used if v in seen]


def _ordered_by(args, used: list, exprs: list) -> list:
    from .ir import Var
    if isinstance(args, (str, Expr)) or not hasattr(args, "__iter__"):
        raise MatdiffError(f"args must be a list of variables, such as [w, X, y], not {args!r}")
    everything = {v.name: v for v in variables(*(e.node for e in exprs))}
    everything.update({v.name: v for v in used})
    out = []
    for a in args:
        node = lift(a).node if isinstance(a, Expr) else everything.get(a) if isinstance(a, str) else None
        if isinstance(a, str) and node is None:
            raise MatdiffError(f"args names {a!r}, which is no variable of the outputs; they use "
                               f"{', '.join(v.name for v in used) or 'none'}")
        if not isinstance(node, Var):
            raise MatdiffError(f"args holds {a!r}, which is not a variable; list variables or names")
        if node in out:
            raise MatdiffError(f"args lists {node.name} twice")
        out.append(node)
    missing = [v.name for v in used if v not in out]
    if missing:
        raise MatdiffError(f"args leaves out {', '.join(missing)}, which the outputs use; list "
                           f"every variable (extra ones are allowed and ignored)")
    return out


def _check_name(name) -> None:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) or \
            unicodedata.normalize("NFKC", name) in RESERVED:
        raise MatdiffError(f"codegen: name must be a Python identifier that is no keyword and "
                           f"no name the generated code uses, not {name!r}")


def codegen(outputs, backend: str = "numpy", name: str = "f", sizes: dict | None = None,
            args=None, checks: bool = True) -> str:
    """Source code of a function computing ``outputs`` (an expression or a list of them) from
    the variables, in the order they first appear in the outputs (or the order of ``args``,
    a list of variables or names); ``sizes`` (dims to ints) tunes the contraction order.
    ``checks`` (the default, as md.compile's) writes md.compile's checks into the code: a
    result that depends on which eigen- or singular vectors a decomposition chose where values
    tie is refused, and so is f(X) of a general matrix that is not finite (an overflow);
    NumPy and PyTorch raise (matdiff's EvaluationError where matdiff is installed), JAX raises
    outside jit and gives NaN under it. The printed module is the code md.compile runs, and runs
    on its own; ``checks=False`` prints the code without them.

    >>> x, A = md.vector("x", "n"), md.matrix("A", "n", "n")
    >>> for line in md.codegen(md.grad(x.T @ A @ x, x)).splitlines()[5:]:
    ...     print(line)
        A = np.asarray(A)
        x = np.asarray(x)
        A = A if A.dtype.kind == 'f' else A.astype(np.float64)
        x = x if x.dtype.kind == 'f' else x.astype(np.float64)
        t1 = x @ A + A @ x  # (A + Aᵀ)x
        return t1
    >>> S = md.matrix("S", "n", "n", symmetric=True)
    >>> source = md.codegen(md.grad(md.eigvalsh(S)[-1], S))
    >>> "_checking_choices(" in source, source == md.compile(md.grad(md.eigvalsh(S)[-1], S)).source
    (True, True)
    >>> "_checking_choices(" in md.codegen(md.grad(md.eigvalsh(S)[-1], S), checks=False)
    False
    """
    return _source(outputs, backend, name, sizes, args, checks)


def _source(outputs, backend: str, name: str, sizes, args, checks: bool = True) -> str:
    """``codegen``'s source."""
    if backend not in BACKENDS:
        raise NotSupportedError(f"codegen: backend {backend!r} is not available yet; use one of "
                                f"{', '.join(map(repr, BACKENDS))}")
    _check_name(name)
    try:
        return _codegen(outputs, backend, name, sizes, args, checks)
    except RecursionError:
        raise MatdiffError(f"codegen: the expression is nested too deeply for Python's recursion "
                           f"limit of {sys.getrecursionlimit()}; raise it with "
                           f"sys.setrecursionlimit") from None


def _codegen(outputs, backend: str, name: str, sizes, order_args=None, checks: bool = True) -> str:
    table = BACKENDS[backend]
    exprs = _as_list(outputs)
    written = [numerical_forms(simplify(e.node)) for e in exprs]  # 1 − σ(u) as σ(−u)
    roots = _scaled_singular_code(_tie_limits(written))
    roots = _rational_functions(roots)
    vs = _variables_of(exprs, order_args)
    w = _Writer(dict(sizes or {}), table.get("functions", {}))
    w.checks = checks
    args: dict = {}
    params = _parameters(vs, name, _user_functions(exprs))
    while any(re.fullmatch(rf"{w.prefix}\d+", p) for p in params):
        w.prefix = "_" + w.prefix
    for v, p in zip(vs, params):
        args[v] = p
    dim_source = {}
    for v, p in zip(vs, params):
        for axis, d in enumerate(v.shape):
            for f in D.factors(d):
                if isinstance(f, str) and f not in dim_source and d == f:
                    dim_source[f] = f"{p}.shape[{axis}]"

    def size_of(d) -> str:
        if isinstance(d, int):
            return str(d)
        parts = []
        for f in D.factors(d):
            if isinstance(f, int):
                parts.append(str(f))
            elif f in dim_source:
                parts.append(dim_source[f])
            elif is_min_dim(f):  # min(k, n): the singular values of a matrix whose dims do not
                # say which is smaller, sized from the arguments' own sizes
                parts.append(f"min({', '.join(size_of(D.parse(a)) for a in min_arguments(f))})")
            else:
                raise MatdiffError(f"codegen: no argument fixes the size of {f!r}")
        return " * ".join(parts)

    order, seen = [], set()
    for r in roots:  # children before parents, each node once across all outputs
        stack = [(r, False)]
        while stack:
            n, done = stack.pop()
            if done:
                order.append(n)
                continue
            if n in seen or n in args:
                continue
            seen.add(n)
            stack.append((n, True))
            kids = [c for c in n.children if not (isinstance(n, Contract) and isinstance(c, Delta))]
            stack.extend((c, False) for c in reversed(kids) if c not in seen and c not in args)
    uses = _uses(order)
    ends = roots  # the results, and the results of each arm of a tie branch
    roots = [x for r in roots for x in (r.args[:2] if isinstance(r, _TieBranch) else (r,))]
    w.uses = {n: k for n, k in uses.items() if n not in roots}
    if "__sigmoids" in w.functions:
        w.sigmoid_pairs = _sigmoid_pairs(order)
    w.lu = table.get("lu") if backend != "numpy" or _has_scipy() else None
    if w.lu is not None:  # log|det X| beside X⁻¹ (or solves with X): one LU serves both
        w.shared_lu = {n.arg for n in order if isinstance(n, LogDet)} & \
            {n.arg for n in order if isinstance(n, Inv)}
    if backend != "numpy" or _has_scipy():  # Cholesky where the matrix is positive definite
        w.cho, w.tri = CHOLESKY[backend], TRIANGULAR[backend]
        w.spd = {n.arg for n in order if isinstance(n, (Inv, LogDet)) and
                 positive_definite(Expr(n.arg))}
        w.cholesky = {n.arg: n for n in order if isinstance(n, Cholesky) and n.arg in w.spd}
    for n in order:
        if isinstance(n, Contract):
            for op in n.operands:
                if isinstance(op, Inv):
                    w.inverse_uses[op] = w.inverse_uses.get(op, 0) + 1
    inlined = w.inlined = _distributed_sums(order, roots, uses, set(order) | set(args), w.hint,
                                            table.get("distribute_transposes", False))
    scaled = _scaled_products(order, roots, uses)
    common = w.common = _common_factors(order, roots, uses, inlined)
    folded = w.folded = _folded_spreads(order, roots, uses, inlined, common)

    def lower(n) -> None:
        if isinstance(n, Const):
            args[n] = repr(float(n.value))
            return
        if n in inlined or n in scaled or n in folded:
            return
        if isinstance(n, Sum) and n.terms and n.terms[0][1] in scaled:
            (c, t), = n.terms
            args[n] = w.emit(_product(w, t, args, size_of, coef=c), _comment(n))
            return
        if isinstance(n, Contract):
            args[n] = w.emit(_product(w, n, args, size_of), _comment(n))
            return
        if n in common:  # 2(UVᵀ − T)V: the sum without its factor, which its product takes
            args[n] = w.emit(_node_code(w, Sum(tuple((c / common[n], t) for c, t in n.terms),
                                                   n.shape), args, size_of))
            return
        shared = isinstance(n, (Inv, LogDet)) and (n.arg in w.shared_lu or n.arg in w.spd)
        args[n] = w.emit(_from_lu(w, n, args) if shared else _node_code(w, n, args, size_of), _comment(n))
        if isinstance(n, Inv):  # formed only if a line still reads it once products are planned
            w.inverses[args[n]] = (args[n.arg], n)
        if isinstance(n, Pinv):
            w.pinvs[args[n]] = w.emit(f"_pinv_factors({args[n.arg]})")

    before, tie_terms, plain_terms, after = _tie_branch_order(order, ends)
    for n in before:
        lower(n)
    if tie_terms or plain_terms:
        _tie_branch(w, [n for n in order if isinstance(n, _TieBranch)], (tie_terms, plain_terms), args, lower,
                    backend)
    for n in after:
        lower(n)
    for r in ends:  # a constant result is an array of the arguments' dtype, not a Python float
        if isinstance(r, Const):
            args[r] = w.emit(f"np.asarray({args[r]})", _comment(r))
    lines, results = w.live_lines([args[r] for r in ends])
    if backend == "numpy":
        lines = _in_place(lines, results, w.prefix)
    if backend != "jax":  # under jit XLA plans the memory itself
        lines = _freeing(lines, results, w.prefix)
    results = ", ".join(results)
    needs = sorted(user_function_name(fn) for fn in _user_functions(exprs))
    body = [_backend_line(line, table) for line in lines]
    helpers = {helper: source for helper, source in {**HELPERS, **table.get("helpers", {})}.items()
               if any(re.search(rf"(?<![\w.]){helper}\(", line) for line in body)}
    scipy_used = any(re.search(r"(?<![\w.])scipy\.linalg\.", line) for line in body + list(helpers.values()))
    imports = table["import"] + ("\nimport scipy.linalg" if scipy_used else "")
    for source in helpers.values():
        imports += source
    header = [
        imports + (f"  # and the user functions {', '.join(needs)}" if needs else ""),
        "",
        "",
        f"def {name}({', '.join(params)}):",
        f'    """{"; ".join(_comment(r) for r in written)[:90]}"""',  # as the user's results read
    ]
    casts = _prelude(table, backend, params, [v.ndim == 0 for v in vs],
                     any("_dtype" in line for line in body), any("_device" in line for line in body))
    source = "\n".join(header + casts + body + [f"    return {results}"]) + "\n"
    if checks and DECOMPOSITION_CALL.search(source.partition(f"\ndef {name}(")[2]):
        return _with_checks(source, name, backend, exprs, vs, params)
    return source


def _in_place(lines: list, results: list, prefix: str) -> list:
    """An element-wise product ``tK = tA * tB`` written into tA where this line is the only
    one that reads tA and tA's line made it afresh (an arithmetic result, or one of the two
    arrays ``_sigmoids`` returns): ``_mul_into`` (NumPy's ``out=``), which falls back to
    ``tA * tB`` unless both are arrays of one shape and dtype.  No new n × h array, no fresh
    pages: ∇W₁‖σ(XW₁)W₂ − Y‖² at 8000 × 100 × 50 × 10 writes two of its three products in place
    and took 14.7 ms where it took 16.4 (the closed form 15.6 and 14.7 ms; NumPy float64, one
    thread).  Code with blocks is left as written."""
    if any(re.match(r"    \s", line) for line in lines):
        return lines
    name = re.compile(rf"\b{prefix}\d+\b")
    assigned = re.compile(rf"    ({prefix}\d+) = (.*)")
    product = re.compile(rf"    ({prefix}\d+) = ({prefix}\d+) \* ({prefix}\d+)")
    kept = {x for r in results for x in name.findall(r)}
    code, reads, last = {}, {}, {}
    for i, line in enumerate(lines):
        body = line.split("  # ")[0]
        m = assigned.fullmatch(body)
        if m:
            code[m.group(1)] = (i, m.group(2))
        for x in set(name.findall(m.group(2) if m else body)):
            reads[x] = reads.get(x, 0) + 1
            last[x] = i

    def fresh(x: str, i: int) -> bool:
        if x in kept or reads.get(x) != 1 or x not in code:
            return False
        j, c = code[x]
        m = re.fullmatch(rf"({prefix}\d+)\[[01]\]", c)
        if m:  # σ(u) or σ(−u) of _sigmoids(u), the tuple read by nothing later
            return m.group(1) in code and code[m.group(1)][1].startswith("_sigmoids(") and \
                last[m.group(1)] < i
        return _top_level_arithmetic(c)

    out = list(lines)
    for i, line in enumerate(lines):
        body, hash_, comment = line.partition("  # ")
        m = product.fullmatch(body)
        if not m or m.group(2) == m.group(3):
            continue
        for a, b in ((m.group(2), m.group(3)), (m.group(3), m.group(2))):
            if fresh(a, i):
                out[i] = f"    {m.group(1)} = _mul_into({a}, {b})" + hash_ + comment
                break
    return out


def _top_level_arithmetic(code: str) -> bool:
    """Whether ``code`` is a binary arithmetic operation outside all brackets, or a negation
    of a bracket: its value is a new array, never a view of another."""
    if code.startswith("-(") and code.endswith(")"):
        return True
    depth = 0
    for k, ch in enumerate(code):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0 and code[k:k + 3] in (" * ", " @ ", " + ", " - ", " / "):
            return True
    return False


def _freeing(lines: list, results: list, prefix: str) -> list:
    """``lines`` with ``del`` after the line that reads a temporary last, where a later line
    computes more: NumPy and PyTorch free it there, and the next array of its size takes its
    memory, where one held to the return takes fresh pages (∇W₁ of ‖σ(XW₁)W₂ − Y‖² at 8000 ×
    50 held six n × h arrays; a page fault costs about 1.5 ms per 3.2 MB).  Code with blocks
    (tie branches) is left as written."""
    if any(re.match(r"    \s", line) for line in lines):
        return lines
    name = re.compile(rf"\b{prefix}\d+\b")
    kept = {x for r in results for x in name.findall(r)}
    last: dict = {}
    for i, line in enumerate(lines):
        for x in name.findall(line.split("  # ")[0]):
            last[x] = i
    dead: dict = {}
    for x, i in last.items():
        if x not in kept and i < len(lines) - 1:  # the return frees what the last line read
            dead.setdefault(i, []).append(x)
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        if i in dead:
            out.append(f"    del {', '.join(sorted(dead[i], key=lambda x: int(x[len(prefix):])))}")
    return out


def _prelude(table: dict, backend: str, params: list, scalar: list, constants: bool,
             device: bool = True) -> list:
    """The lines that cast the arguments.  Arrays become the backend's arrays, integers and
    booleans float64; the arrays' promoted dtype is ``_dtype``, and scalar arguments and
    constants take it, as Python numbers do in NumPy: float32 arrays with a scalar 0.5
    compute and return float32.  PyTorch's ``_device`` is read only where the body (or a
    scalar's cast) uses it: reading ``X.device`` costs a tenth of a microsecond a call."""
    arrays = [p for p, s in zip(params, scalar) if not s] or params
    scalars = [p for p in params if p not in arrays]
    lines = [f"    {p} = {table['cast'].format(p=p)}" for p in arrays]
    lines += [f"    {table['floating'].format(p=p)}" for p in arrays]
    if backend == "torch" and params and (device or scalars):  # constants go where the arguments are
        lines.append(f"    _device = {arrays[0]}.device")
    if scalars or constants:
        promoted = arrays[0] + ".dtype" if arrays else ""
        for p in arrays[1:]:
            promoted = f"torch.promote_types({promoted}, {p}.dtype)"
        lines.append("    _dtype = " + (table["dtype"].format(ps=", ".join(arrays), promoted=promoted)
                                        if arrays else table["default_dtype"]))
    lines += [f"    {p} = {table['scalar'].format(p=p)}" for p in scalars]
    return lines


def _backend_line(line: str, table: dict) -> str:
    """A generated line in a backend's names: np. → jnp., and its way to write entries."""
    m = re.fullmatch(r"(\s*)<scatter(_add)? (.*)\|(.*)\|(.*)>", line)
    if m:
        line = m.group(1) + table["scatter" + (m.group(2) or "")].format(
            full=m.group(3), index=m.group(4), values=m.group(5))
    code, hash_, comment = line.partition("  # ")
    code = re.sub(r"\bnp\.", table["module"] + ".", code)
    for pattern, replacement in table.get("rewrites", ()):
        code = re.sub(pattern, replacement, code)
    return code + hash_ + comment


def compile(outputs, backend: str = "numpy", sizes: dict | None = None, args=None,  # noqa: A001
            checks: bool = True):
    """A function of the variables computing ``outputs``; shared subexpressions are computed
    once. Its parameters are the variables in the order they first appear in the outputs,
    or in the order of ``args`` (``md.compile(loss, args=[w, X, y])``); ``inspect.signature``
    shows them, and each may also be passed by its variable's name.

    >>> x, A = md.vector("x", "n"), md.matrix("A", "n", "n")
    >>> f = md.compile([x.T @ A @ x, md.grad(x.T @ A @ x, x)])
    >>> value, gradient = f(x=[1.0, 1.0], A=[[1.0, 0.0], [0.0, 1.0]])
    >>> float(value), gradient.tolist()
    (2.0, [2.0, 2.0])

    With ``checks`` (the default), code that decomposes a matrix (eigh, svd) refuses, as
    ``evaluate`` does, a result that depends on which eigen- or singular vectors are chosen
    where values repeat: the gradient of λ_max at a repeated top eigenvalue, of ‖X‖₂ at a
    repeated σ₁. NumPy and PyTorch raise EvaluationError; JAX raises outside jit and returns
    NaN under it. A call with no repeated value costs what it would without checks; one with
    a repeated value computes its result again with the vectors turned. f(X) of a general
    matrix that is not finite (e^800 overflows) is refused too, and so is a second derivative
    through eigenvectors that has no limit at a tie. The checks are in the code (``.source``,
    md.codegen's with the same ``checks``). ``checks=False`` returns the value the
    decomposition's own vectors give (there, a subgradient), inf or NaN where those are.

    >>> S = md.matrix("S", "n", "n", symmetric=True)
    >>> g = md.compile(md.grad(md.eigvalsh(S)[-1], S))
    >>> g(S=np.diag([1.0, 2.0, 2.0]))
    Traceback (most recent call last):
    ...
    matdiff.errors.EvaluationError: not differentiable here: S has a repeated eigenvalue, λ = 2 (2 times), ...
    >>> md.compile(md.grad(md.eigvalsh(S)[-1], S), checks=False)(S=np.diag([1.0, 2.0, 2.0])).shape
    (3, 3)
    """
    source = _source(outputs, backend, "f", sizes, args, checks)
    fn = _compiled(source, outputs, backend, args)
    fn.source = source
    return fn


def _compiled(source: str, outputs, backend: str, args):
    """The function that ``source`` (generated for ``outputs``) defines, behind a check of its
    arguments (``_checked``); the checks of what it computes (a result that depends on a
    choice of vectors at a tie refused, f(X) that is not finite) are in the source."""
    namespace: dict = {user_function_name(fn): (fn.numpy if callable(fn.numpy) else fn.numpy[fn.order])
                       for fn in _user_functions(outputs)}
    try:
        exec(compile_source(source), namespace)  # our own generated code, never user text
    except ImportError as e:  # the backend (or SciPy) is an optional extra
        extra = {"jax": "jax", "torch": "torch", "scipy": "linalg"}.get((e.name or "").split(".")[0])
        hint = f'pip install "matdiff[{extra}]"' if extra else f"install {e.name}"
        raise NotSupportedError(f"md.compile(..., backend={backend!r}) needs {e.name}, which is not "
                                f"installed: {hint}") from None
    vs = _variables_of(_as_list(outputs), args)
    params = _parameters(vs, "f", _user_functions(outputs))
    _runtime_helpers(namespace, backend)
    fast, lean = None, _without_casts(source, backend, params)
    if lean is not None:
        lean_namespace = {k: v for k, v in namespace.items() if k != "f" and not k.startswith("__")}
        exec(compile_source(lean), lean_namespace)  # the same generated code, less its casts
        _runtime_helpers(lean_namespace, backend)
        fast = lean_namespace["f"]
    # with checks, the source checks what it computes (``_with_checks``): nothing is added here
    fn = _checked(namespace["f"], vs, params, fast, _native_types(backend))
    fn.source = source
    return fn


try:  # NumPy's floating-point error state, the context variable np.errstate sets (NumPy 2)
    from numpy._core._ufunc_config import _extobj_contextvar as _ERROR_STATE
    from numpy._core.umath import _make_extobj

    _ERROR_STATE.reset(_ERROR_STATE.set(_make_extobj(over="ignore")))  # works as np.errstate uses it
except Exception:  # noqa: BLE001  # pragma: no cover - another NumPy: compiled code keeps np.errstate
    _ERROR_STATE = _make_extobj = None
_overflow_ignored = (None, None)  # the last error state met, and it with overflow ignored


def _runtime_sigmoid(x):
    """The generated NumPy helper ``_sigmoid`` as compiled functions run it: the same
    operations, under the error state ``np.errstate(over="ignore")`` would set (the
    caller's, overflow ignored), set directly.  np.errstate costs 1.3 µs a call, and
    4–6 µs beside the matrix-vector product a BCE gradient does next (NumPy 2.4; a
    float32 gradient at 2000 × 200 takes 56 µs)."""
    global _overflow_ignored
    e = np.negative(x)
    out = e if type(e) is np.ndarray else None
    state = _ERROR_STATE.get()
    cached = _overflow_ignored
    if cached[0] is not state:
        cached = _overflow_ignored = (state, _make_extobj(over="ignore"))
    token = _ERROR_STATE.set(cached[1])
    try:
        e = np.exp(e, out=out)  # exp(−x) is inf for x ≪ 0, and σ(x) = 0 as it should be
    finally:
        _ERROR_STATE.reset(token)
    e += 1.0
    return np.reciprocal(e, out=out)


_invalid_ignored = (None, None)  # the same, with overflow and invalid operations ignored


def _runtime_sigmoids(x):
    """The generated NumPy helper ``_sigmoids`` as compiled functions run it: the same
    operations, its ``np.errstate`` set directly (as ``_runtime_sigmoid`` does)."""
    global _invalid_ignored
    e = np.negative(x)
    out = e if type(e) is np.ndarray else None
    state = _ERROR_STATE.get()
    cached = _invalid_ignored
    if cached[0] is not state:
        cached = _invalid_ignored = (state, _make_extobj(over="ignore", invalid="ignore"))
    token = _ERROR_STATE.set(cached[1])
    try:
        e = np.exp(e, out=out)
        s = e + 1.0
        s = np.reciprocal(s, out=s if out is not None else None)
        e = np.multiply(e, s, out=out)  # inf · 0 where exp overflowed: fmin makes it 1
    finally:
        _ERROR_STATE.reset(token)
    return s, np.fmin(e, 1.0, out=out)


def _runtime_helpers(namespace: dict, backend: str) -> None:
    """Swap the generated module's helpers for their equivalents above, where NumPy has them."""
    if backend == "numpy" and _ERROR_STATE is not None:
        for name, helper in (("_sigmoid", _runtime_sigmoid), ("_sigmoids", _runtime_sigmoids)):
            if name in namespace:
                namespace[name] = helper


def _native_types(backend: str) -> tuple:
    """The backend's own array types, which its generated code's casts leave as they are,
    and the real floating dtypes that need no cast: an argument of both may skip the casts."""
    floats = {np.dtype(t) for t in (np.float16, np.float32, np.float64, np.longdouble)}
    if backend == "numpy":
        return frozenset({np.ndarray}), frozenset(floats)
    if backend == "torch":
        torch = sys.modules.get("torch")  # the generated module has imported it
        if torch is None or not hasattr(torch, "Tensor"):
            return frozenset(), frozenset()
        floats = {getattr(torch, t) for t in ("float16", "bfloat16", "float32", "float64")
                  if hasattr(torch, t)}
        return frozenset({torch.Tensor}), frozenset(floats)
    # JAX's concrete array class, found without making an array (which would start a device);
    # where a JAX version keeps it elsewhere, its arrays take the general path, as tracers do
    array = getattr(sys.modules.get("jax._src.array"), "ArrayImpl", None)
    return (frozenset({array}) if isinstance(array, type) else frozenset()), frozenset(floats)


def _without_casts(source: str, backend: str, params: list) -> str | None:
    """The generated source less its array arguments' casts (``X = np.asarray(X)`` and the
    integer-to-float line), for arguments already of the backend's type and a floating dtype:
    the same code on the same arrays, without a few hundred nanoseconds per argument."""
    table = BACKENDS[backend]
    casts = {f"    {p} = {table['cast'].format(p=p)}" for p in params} | \
        {f"    {table['floating'].format(p=p)}" for p in params}
    lines = source.split("\n")
    kept = [line for line in lines if line not in casts]
    return "\n".join(kept) if len(kept) < len(lines) else None


def _singular(e: Exception) -> None:
    """NumPy's and PyTorch's LinAlgError (a singular matrix) as an EvaluationError; any
    other exception is left to propagate."""
    if isinstance(e, FloatingPointError) and str(e).endswith(NOT_FINITE):  # checks: f(X) not finite
        raise EvaluationError(str(e)) from None
    if "LinAlgError" in type(e).__name__ and str(e).startswith(RANK_MESSAGE):
        raise EvaluationError(f"the compiled function took the {e}") from None
    if "LinAlgError" in type(e).__name__ and re.search("positive.definite", str(e)):
        raise EvaluationError(f"the compiled function met a matrix that is not positive definite "
                              f"({e}): its Cholesky factor does not exist") from None
    if "LinAlgError" in type(e).__name__:
        raise EvaluationError(f"the compiled function met a singular matrix ({e}): an inverse, "
                              f"a solve or a logarithm is not defined at these values") from None


def _entry(vs: list, params: list, types: frozenset, floats: frozenset, fast, general, symmetric=()):
    """The compiled function's entry point: for arguments passed by parameter name or in
    order that are arrays of ``types`` with dtypes in ``floats`` and the declared shapes
    (the common call), ``fast`` on them; for any other call ``general(args, kwargs)``.
    It is written out for these parameters, in straight-line code: a loop over the
    declarations, and passing the keywords on twice, cost 1–3 µs a call, as much as the
    arithmetic of a small problem."""
    q = "_fits_"  # the prefix of the entry's own names, which no parameter may shadow
    while any(p.startswith(q) for p in params):
        q += "_"
    n = len(params)
    lines = [f"def {q}(*{q}args, **{q}kwargs):",
             f"    if {q}args:",
             f"        if {q}kwargs or {q}len({q}args) != {n}:",
             f"            return {q}general({q}args, {q}kwargs)",
             f"        {', '.join(params)}, = {q}args",
             f"    elif {q}len({q}kwargs) == {n}:"]
    lines += [f"        {p} = {q}kwargs.get({p!r}, {q}missing)" for p in params]
    lines += ["    else:",
              f"        return {q}general({q}args, {q}kwargs)",
              f"    if {' or '.join(f'{q}type({p}) not in {q}T' for p in params)} or \\",
              f"            {' or '.join(f'{p}.dtype not in {q}F' for p in params)}:",
              f"        return {q}general({q}args, {q}kwargs)",
              f"    {', '.join(f'{q}s{i}' for i in range(n))}, = {', '.join(f'{p}.shape' for p in params)},"]
    checks, first = [f"{q}len({q}s{i}) == {len(v.shape)}" for i, v in enumerate(vs)], {}
    for i, v in enumerate(vs):
        for j, d in enumerate(v.shape):
            if isinstance(d, int):
                checks.append(f"{q}s{i}[{j}] == {d}")
            elif d in first:
                checks.append(f"{q}s{i}[{j}] == {first[d]}")
            else:
                first[d] = f"{q}s{i}[{j}]"
    lines += [f"    if not ({' and '.join(checks)}):",
              f"        return {q}general({q}args, {q}kwargs)"]
    lines += [f"    {q}{'positive' if v.symmetric == 'positive' else 'symmetric'}({v.name!r}, {p})"
              for v, p in symmetric]  # one triangle is read; λ > 0 makes XᵀX + λI definite
    lines += ["    try:",
              f"        return {q}fast({', '.join(params)})",
              f"    except Exception as {q}e:",
              f"        {q}singular({q}e)",
              "        raise"]
    namespace = {q + "T": types, q + "F": floats, q + "type": type, q + "len": len, q + "fast": fast,
                 q + "general": general, q + "singular": _singular, q + "missing": object(),
                 q + "symmetric": check_symmetric, q + "positive": check_positive}
    exec(builtins.compile("\n".join(lines) + "\n", "<matdiff-entry>", "exec"), namespace)  # our own text
    return namespace[q]


def _checked(fn, vs: list, params: list, fast=None, native=(frozenset(), frozenset())):
    """``fn`` behind a check of its arguments' shapes against the variables' declarations,
    with evaluate's messages; arguments may also be passed by the variables' own names.
    The common call (arrays of the backend's own type and a real floating dtype, by keyword
    or in order, shapes that fit) is checked in well under a microsecond per argument and
    goes to ``fast``, the same function without the casts those arguments do not need."""
    sig = inspect.signature(fn)
    by_name = {v.name: p for v, p in zip(vs, params)}
    names = set(params)
    simple = all(isinstance(d, (str, int)) for v in vs for d in v.shape)
    symmetric = [(v, p) for v, p in zip(vs, params) if v.symmetric]

    def arguments(args, kwargs):
        if not args and kwargs.keys() == names:
            return kwargs
        kwargs = {by_name.get(k, k): a for k, a in kwargs.items()}
        try:
            return sig.bind(*args, **kwargs).arguments
        except TypeError as e:
            raise EvaluationError(f"the compiled function takes {', '.join(params)}: {e}") from None

    def general(args, kwargs):
        try:
            return call(args, kwargs)
        except Exception as e:
            _singular(e)
            raise

    def call(args, kwargs):
        given = arguments(args, kwargs)
        shapes, sizes, fits = {}, {}, simple
        for v, p in zip(vs, params):
            a = given[p]
            dtype = getattr(a, "dtype", None)
            if (dtype is None and np.iscomplexobj(a)) or getattr(dtype, "kind", "") == "c" or \
                    getattr(dtype, "is_complex", False):
                raise complex_value(v.name)
            shape = shapes[v] = tuple(a.shape) if dtype is not None else np.shape(a)
            if len(shape) != len(v.shape):
                fits = False
            for d, n in zip(v.shape, shape):
                if (sizes.setdefault(d, n) if isinstance(d, str) else d) != n:
                    fits = False
        if not fits:
            check_shapes(vs, shapes)  # raises with evaluate's message, or passes (n·k dims)
        for v, p in symmetric:  # the decompositions read one triangle: the other must agree
            (check_positive if v.symmetric == "positive" else check_symmetric)(v.name, given[p])
        return fn(**given)

    if fast is not None and native[0] and params and simple:
        checked = _entry(vs, params, *native, fast, general, symmetric)
    else:
        def checked(*args, **kwargs):
            return general(args, kwargs)
    functools.update_wrapper(checked, fn)
    checked.unchecked = fn  # the generated function itself, for callers that check once
    return checked


def _user_functions(outputs) -> set:
    """The user-defined element-wise functions with values that the outputs call: with the
    derivatives of their lists [f, f′, f″, …] where a divided difference of f (of f(S)) takes
    its series (``_user_divided_code``)."""
    roots = [simplify(e.node) for e in _as_list(outputs)]
    out = {n.fn for n in walk(*roots)
           if isinstance(n, Elementwise) and not n.fn.builtin and n.fn.numpy is not None}
    for n in walk(*roots):
        fn = n.args[0] if isinstance(n, (DivDiff, DivDiff2, DivDiff3, DivDiff3Apply)) else None
        if fn is not None and not fn.builtin and fn.deriv is None and isinstance(fn.numpy, tuple):
            out |= {type(fn)(fn.name, k, numpy=fn.numpy) for k in range(fn.order, len(fn.numpy))}
        elif fn is not None and not fn.builtin and fn.numpy is not None and _trace(fn) is None:
            out.add(fn)  # f with a derivative= expression: its values (f′, f″, … are written out)
    return out


def compile_source(source: str):
    import builtins

    return builtins.compile(source, "<matdiff-generated>", "exec")


def hvp(f, x, v) -> Expr:
    """The Hessian-vector product ∇²f(x)·v as an expression, without forming the Hessian:
    the gradient of ⟨∇f, v⟩.  ``v`` is a variable of x's shape."""
    from .library import _variable, dot, grad

    var = _variable(v, "hvp")
    xv = _variable(x, "hvp")
    if var.shape != xv.shape:
        raise MatdiffError(f"hvp: {var.name} must have {xv.name}'s shape "
                           f"{D.fmt_shape(xv.shape)}, not {D.fmt_shape(var.shape)}")
    return grad(dot(grad(f, x), v), x)
