"""Tensors of any order: einsum, permutations, the generalised products over chosen axes,
reshapes.  Each builds one Contract (or Reshape) node, so everything the engine does —
derivatives, simplification, printing, generated code — applies unchanged.

The generalised products follow "Matrix Differential Calculus with Tensors" (Tomassoli),
with axes counted from 0 as in NumPy where the tutorial counts from 1:

- ``hadamard(A, B, P, Q)`` is A ᴾ⊙Q B: axis P[t] of A is multiplied entry-wise with axis
  Q[t] of B; the result has A's axes, in A's order, then B's other axes;
- ``dot(A, B, P, Q)`` is A ᴾ·Q B (the same, with the paired axes summed): A's other axes,
  then B's other axes;
- ``tensordot(A, B, k)`` is A ·ₖ B: A's last k axes with B's first k;
- ``permute(A, P)`` is A_P: axis t of the result is axis P[t] of A.
"""
from __future__ import annotations

from typing import Optional, Sequence

from . import build as B
from . import dims as D
from .errors import MatdiffError, NotSupportedError, ShapeError, with_caret
from .expr import Expr, lift
from .ir import Contract, Elementwise, LogSumExp, Node, Reshape, Softmax, Sum, Var, free_vars
from .library import dot as _inner


def _caret(spec: str, col: int, what: str, fix: str) -> str:
    return with_caret(f"einsum: {what}", spec, col) + f"\n{fix}"


def einsum(spec: str, *operands) -> Expr:
    """The contraction of tensors written as in NumPy: ``md.einsum("ij,jk->ik", A, B)``;
    without ``->`` the output is the letters used once, in alphabetical order.

    >>> A, B = md.matrix("A", "n", "k"), md.matrix("B", "n", "m")
    >>> print(md.einsum("ij,ik->jk", A, B))
    AᵀB
    """
    ops = [lift(o) for o in operands]
    if "." in spec:
        raise NotSupportedError(_caret(spec, spec.index("."), "'...' (broadcast axes) is not "
                                       "supported", "name every axis with a letter"))
    for col, c in enumerate(spec):
        if not (c.isalpha() or c in ",->" or c == " "):
            raise ShapeError(_caret(spec, col, f"{c!r} is not an axis letter",
                                    "use letters for axes, ',' between operands and '->' before "
                                    "the output"))
    ins, arrow, out = spec.partition("->")
    parts = ins.split(",")
    if len(parts) != len(ops):
        raise ShapeError(f"einsum({spec!r}): {len(parts)} operand spec(s) for {len(ops)} operand(s)")
    if not arrow:
        letters = ins.replace(",", "").replace(" ", "")
        out = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    size: dict = {}
    starts = [sum(len(q) + 1 for q in parts[:i]) for i in range(len(parts))]
    for p, o, start in zip(parts, ops, starts):
        col = start + len(p) - len(p.lstrip())
        p = p.strip()
        if len(p) != o.ndim:
            raise ShapeError(_caret(spec, col, f"{p!r} names {len(p)} axes but {o.src} is "
                                    f"{o.describe_shape()}", f"give {o.ndim} letters for {o.src}"))
        for k, (c, d) in enumerate(zip(p, o.shape)):
            if size.setdefault(c, d) != d:
                raise ShapeError(_caret(spec, col + k, f"axis {c} is {D.fmt(size[c])} in one "
                                        f"operand and {D.fmt(d)} in {o.src}",
                                        "axes with one letter must have one size"))
    out = out.strip()
    base = len(ins) + 2
    for k, c in enumerate(out):
        if c not in size:
            raise ShapeError(_caret(spec, base + k, f"output axis {c} is in no operand",
                                    "every output letter must name an axis of an operand"))
        if out.count(c) > 1:
            raise ShapeError(_caret(spec, base + k, f"output axis {c} appears twice",
                                    "name each output axis once"))
    return Expr(B.einsum(ins.replace(" ", "") + "->" + out, *(o.node for o in ops)),
                src=f"einsum({spec!r}, {', '.join(o.src for o in ops)})")


def _axes(name: str, x: Expr, axes, what: str) -> tuple:
    axes = tuple(int(a) for a in axes)
    for a in axes:
        if not -x.ndim <= a < x.ndim:
            raise ShapeError(f"{name}: axis {a} of {what} is out of range for {x.src}, which is "
                             f"{x.describe_shape()}")
    axes = tuple(a % x.ndim for a in axes) if x.ndim else axes
    if len(set(axes)) != len(axes):
        raise ShapeError(f"{name}: the axes {axes} of {what} repeat an axis")
    return axes


def permute(x, axes: Optional[Sequence[int]] = None) -> Expr:
    """The tensor with its axes permuted: axis t of the result is axis ``axes[t]`` of x (the
    tutorial's x_P); without ``axes`` the order is reversed (a matrix's transpose).

    >>> T = md.tensor("T", "a", "b", "c")
    >>> md.permute(T, (2, 0, 1)).shape
    ('c', 'a', 'b')
    """
    x = lift(x)
    axes = tuple(reversed(range(x.ndim))) if axes is None else _axes("permute", x, axes, "x")
    if sorted(axes) != list(range(x.ndim)):
        raise ShapeError(f"permute: {axes} is not a permutation of the {x.ndim} axes of {x.src}")
    lab = tuple(range(x.ndim))
    return Expr(B.contract([x.node], [lab], axes), src=f"permute({x.src}, {axes})")


transpose = permute


def _paired(name: str, a: Expr, b: Expr, axes_a, axes_b):
    pa, pb = _axes(name, a, axes_a, "the first operand"), _axes(name, b, axes_b, "the second operand")
    if len(pa) != len(pb):
        raise ShapeError(f"{name}: {len(pa)} axes of {a.src} paired with {len(pb)} of {b.src}")
    for i, j in zip(pa, pb):
        if a.shape[i] != b.shape[j]:
            raise ShapeError(f"{name}: axis {i} of {a.src} is {D.fmt(a.shape[i])} but axis {j} "
                             f"of {b.src} is {D.fmt(b.shape[j])}")
    la = tuple(range(a.ndim))
    fresh = iter(range(a.ndim, a.ndim + b.ndim))
    lb = tuple(la[pa[pb.index(j)]] if j in pb else next(fresh) for j in range(b.ndim))
    free_b = tuple(lb[j] for j in range(b.ndim) if j not in pb)
    return pa, la, lb, free_b


def hadamard(a, b, axes_a: Optional[Sequence[int]] = None,
             axes_b: Optional[Sequence[int]] = None) -> Expr:
    """The tutorial's A ᴾ⊙Q B: axes ``axes_a`` of A multiplied entry-wise with axes
    ``axes_b`` of B; the result has A's axes, then B's others.  Without axes: all of them
    (the entry-wise product of two tensors of one shape).

    >>> A, x = md.matrix("A", "n", "k"), md.vector("x", "k")
    >>> print(md.hadamard(A, x, [1], [0]))  # each row of A times x
    Adiag(x)
    """
    a, b = lift(a), lift(b)
    if axes_a is None and axes_b is None:
        if a.shape != b.shape:
            raise ShapeError(f"hadamard: {a.src} is {a.describe_shape()} but {b.src} is "
                             f"{b.describe_shape()}; give the axes to pair")
        axes_a = axes_b = range(a.ndim)
    elif axes_a is None or axes_b is None:
        raise MatdiffError("hadamard: give the axes of both operands, or of neither")
    _, la, lb, free_b = _paired("hadamard", a, b, axes_a, axes_b)
    return Expr(B.contract([a.node, b.node], [la, lb], la + free_b),
                src=f"hadamard({a.src}, {b.src})")


def dot(a, b, axes_a: Optional[Sequence[int]] = None,
        axes_b: Optional[Sequence[int]] = None) -> Expr:
    """Without axes: the inner product aᵀb, or Σ Aᵢⱼ Bᵢⱼ of two tensors of one shape.  With
    axes, the tutorial's A ᴾ·Q B: axes ``axes_a`` of A paired with ``axes_b`` of B and
    summed; the result has A's other axes, then B's.

    >>> A, B = md.matrix("A", "n", "k"), md.matrix("B", "n", "m")
    >>> print(md.dot(A, B, [0], [0]))
    AᵀB
    """
    if axes_a is None and axes_b is None:
        return _inner(a, b)
    if axes_a is None or axes_b is None:
        raise MatdiffError("dot: give the axes of both operands, or of neither")
    a, b = lift(a), lift(b)
    pa, la, lb, free_b = _paired("dot", a, b, axes_a, axes_b)
    out = tuple(x for i, x in enumerate(la) if i not in pa) + free_b
    return Expr(B.contract([a.node, b.node], [la, lb], out), src=f"dot({a.src}, {b.src}, …)")


def tensordot(a, b, axes=2) -> Expr:
    """As ``numpy.tensordot``: an int k is the tutorial's A ·ₖ B (A's last k axes summed
    with B's first k); a pair of axis lists names the axes to sum.

    >>> A, B = md.matrix("A", "n", "k"), md.matrix("B", "k", "m")
    >>> print(md.tensordot(A, B, 1))
    AB
    """
    a, b = lift(a), lift(b)
    if isinstance(axes, int):
        if not 0 <= axes <= min(a.ndim, b.ndim):
            raise ShapeError(f"tensordot: cannot sum {axes} axes of {a.src} "
                             f"({a.describe_shape()}) with {b.src} ({b.describe_shape()})")
        axes = (list(range(a.ndim - axes, a.ndim)), list(range(axes)))
    try:
        axes_a, axes_b = axes
    except (TypeError, ValueError):
        raise MatdiffError(f"tensordot: axes must be an int or a pair of axis lists, not {axes!r}") from None
    r = dot(a, b, axes_a, axes_b)
    return Expr(r.node, src=f"tensordot({a.src}, {b.src}, {axes!r})")


def reshape(x, *shape) -> Expr:
    """The entries of x in row-major (C) order, laid out with a new shape of equal size,
    as ``numpy.reshape``; dims may be symbols and products of them (``"n*k"``).

    >>> X = md.matrix("X", "n", "k")
    >>> md.reshape(X, "n*k").shape
    (k·n,)
    """
    x = lift(x)
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    dims = tuple(D.parse(d) for d in shape)
    if D.size(dims) != D.size(x.shape):
        raise ShapeError(f"reshape: {x.src} is {x.describe_shape()}, which has "
                         f"{D.fmt(D.size(x.shape))} entries; {D.fmt_shape(dims)} has "
                         f"{D.fmt(D.size(dims))}")
    return Expr(Reshape(x.node, dims), src=f"reshape({x.src}, {D.fmt_shape(dims)})")


def vec(x, order: str = "column") -> Expr:
    """The entries of a matrix (or tensor) as one column: ``order="column"`` stacks the
    columns (vec X of the matrix-calculus literature: the first index runs fastest),
    ``order="row"`` stacks the rows (NumPy's ravel).

    >>> X = md.matrix("X", "n", "k")
    >>> x = md.vec(X)
    >>> x.shape
    (k·n,)
    >>> import numpy as np
    >>> x.evaluate(X=np.array([[1.0, 2.0], [3.0, 4.0]])).tolist()
    [1.0, 3.0, 2.0, 4.0]
    """
    x = lift(x)
    if order not in ("column", "row"):
        raise MatdiffError(f"vec: order must be 'column' or 'row', not {order!r}")
    src = permute(x) if order == "column" else x
    return Expr(reshape(src, D.size(src.shape)).node, src=f"vec({x.src})")


# --------------------------------------------------------------------------- functions of sub-tensors

def apply(f, x, axes: Sequence[int]) -> Expr:
    """``f`` applied to every sub-tensor of x along ``axes``: f is a Python function from an
    expression of shape ``x.shape[axes]`` to an expression (``md.softmax``, or any function
    built from matdiff's operations).  The result has x's other axes first, in order, then
    f's result's axes — the tutorial's f ᴾ(X) with P the other axes (its definition 27), so
    ``md.apply(md.softmax, A, [1])`` is ``md.softmax(A, axis=1)``, its s¹(A).  Derivatives
    follow (its identity 32: df ᴾ(X) = ∇f ᴾ(X) ⊙ dX over the matching axes).

    >>> A = md.matrix("A", "N", "c")
    >>> md.apply(md.softmax, A, [1]).node is md.softmax(A, axis=1).node
    True
    >>> print(md.apply(lambda r: md.dot(r, r), A, [1]))  # the squared norm of each row
    A^∘2·1
    """
    x = lift(x)
    axes = _axes("apply", x, axes, "x")
    batch = tuple(i for i in range(x.ndim) if i not in axes)
    sub = Var("_sub", tuple(x.shape[i] for i in axes), False)
    out = lift(f(Expr(sub, src="·")))
    moved = x.node if batch + axes == tuple(range(x.ndim)) else \
        B.contract([x.node], [tuple(range(x.ndim))], batch + axes)  # batch axes first
    cache: dict = {}
    node = _batched(out.node, sub, moved, tuple(x.shape[i] for i in batch), cache)
    if node is None:  # f ignores its argument: the same value for every sub-tensor
        node = _repeat(out.node, tuple(x.shape[i] for i in batch))
    name = getattr(f, "__name__", "f")
    return Expr(node, src=f"apply({name}, {x.src}, {list(axes)})")


def _batched(n: Node, sub: Var, moved: Node, bshape: tuple, cache: dict):
    """n with the batch axes ``bshape`` in front, where ``sub`` becomes ``moved``; None
    where n does not depend on ``sub`` (the caller broadcasts)."""
    if n is sub:
        return moved
    if sub not in free_vars(n):
        return None
    if n in cache:
        return cache[n]
    nb = len(bshape)
    kids = [_batched(c, sub, moved, bshape, cache) for c in n.children]
    if isinstance(n, Contract):
        top = max([x for lab in n.labels for x in lab] + list(n.out) + [-1]) + 1
        blabs = tuple(range(top, top + nb))
        ops, labs = [], []
        for op, lab, k in zip(n.operands, n.labels, kids):
            ops.append(op if k is None else k)
            labs.append(tuple(lab) if k is None else blabs + tuple(lab))
        out = B.contract(ops, labs, blabs + tuple(n.out))
    elif isinstance(n, Sum):
        shape = bshape + n.shape
        terms = [(c, k if k is not None else _repeat(t, bshape)) for (c, t), k in zip(n.terms, kids)]
        out = B.linear(terms, shape)
    elif isinstance(n, Elementwise):
        out = Elementwise(n.fn, kids[0])
    elif isinstance(n, (Softmax, LogSumExp)):
        out = type(n)(n.axis + nb, kids[0])
    elif isinstance(n, Reshape):
        out = Reshape(kids[0], bshape + n.shape)
    else:
        raise NotSupportedError(f"apply: f uses {type(n).__name__.lower()}, which matdiff "
                                f"cannot apply to many sub-tensors at once yet")
    cache[n] = out
    return out


def _repeat(t: Node, bshape: tuple) -> Node:
    """t repeated along leading batch axes."""
    nb = len(bshape)
    lab = tuple(range(nb, nb + t.ndim))
    return B.contract([t], [lab], tuple(range(nb)) + lab, dict(enumerate(bshape)))
