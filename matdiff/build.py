"""Node-level constructors shared by the API, the derivative rules and the simplifier.

They build raw IR (no simplification) in the vocabulary of the rules: ``einsum``,
``hadamard``, ``add``, ``scale``, ``ones``.  Shapes are assumed checked by the caller.
"""
from __future__ import annotations

from itertools import chain

from .ir import Const, Contract, Delta, Elementwise, Node, Sum

ONE = Const(1.0)


def contract(operands, labels, out, dims=None, shape=None) -> Node:
    """A Contract that may also repeat output labels (a diagonal embedding, via δ) and use
    output labels carried by no operand (broadcasting, via a ones vector of ``dims[label]``;
    ``dims`` may be a function returning that dictionary, called only where it is needed).
    ``shape``, where the caller knows it (an adjoint has its operand's), is not checked again."""
    labels, new_out = tuple(map(tuple, labels)), tuple(out)
    wanted = set(new_out)
    if len(wanted) == len(new_out) and wanted.issubset(chain.from_iterable(labels)):
        # (the common case: each output label once, and carried by an operand)
        if shape is not None:
            return Contract.of_shape(tuple(operands), labels, new_out, shape)
        return Contract(tuple(operands), labels, new_out)
    operands, labels = list(operands), list(labels)
    carried = {lab: d for op, labs in zip(operands, labels) for lab, d in zip(labs, op.shape)}
    size = {**((dims() if callable(dims) else dims) or {}), **carried}
    fresh = max([lab for labs in labels for lab in labs] + list(out) + [-1]) + 1
    new_out, seen = [], set()
    for lab in out:
        if lab not in carried and lab not in seen:
            operands.append(Delta(size[lab], 1))
            labels.append((lab,))
        if lab in seen:
            operands.append(Delta(size[lab], 2))
            labels.append((lab, fresh))
            lab, fresh = fresh, fresh + 1
        seen.add(lab)
        new_out.append(lab)
    if shape is not None:
        return Contract.of_shape(tuple(operands), tuple(labels), tuple(new_out), shape)
    return Contract(tuple(operands), tuple(labels), tuple(new_out))


def einsum(spec: str, *operands) -> Node:
    """``einsum("ij,jk->ik", A, B)`` with letters for labels; the output may repeat or add
    letters only through ``contract``'s rules (diagonals and broadcasts need known dims)."""
    ins, out = spec.replace(" ", "").split("->")
    letters = sorted(set(ins.replace(",", "") + out))
    num = {c: i for i, c in enumerate(letters)}
    labels = [tuple(num[c] for c in part) for part in ins.split(",")] if operands else []
    return contract(operands, labels, tuple(num[c] for c in out))


def transpose(x: Node, perm=None) -> Node:
    perm = tuple(reversed(range(x.ndim))) if perm is None else tuple(perm)
    return Contract((x,), (tuple(range(x.ndim)),), perm)


def hadamard(*xs) -> Node:
    """The entry-wise product of tensors of one shape."""
    labs = tuple(range(xs[0].ndim))
    return Contract(tuple(xs), (labs,) * len(xs), labs)


def scale(c: float, x: Node) -> Node:
    return x if c == 1 else Sum(((float(c), x),), x.shape)


def add(*xs) -> Node:
    return Sum(tuple((1.0, x) for x in xs), xs[0].shape)


def linear(terms, shape) -> Node:
    """Σ c·x over (c, x) pairs."""
    return Sum(tuple((float(c), x) for c, x in terms), tuple(shape))


def zeros(shape) -> Node:
    return Sum((), tuple(shape))


def ones(shape) -> Node:
    """The all-ones tensor, as an outer product of ones vectors (never materialised)."""
    if not shape:
        return ONE
    return Contract(tuple(Delta(d, 1) for d in shape), tuple((i,) for i in range(len(shape))),
                    tuple(range(len(shape))))


def broadcast(s: Node, shape) -> Node:
    """A scalar node repeated over ``shape``."""
    if not shape:
        return s
    n = len(shape)
    return Contract((s,) + tuple(Delta(d, 1) for d in shape), ((),) + tuple((i,) for i in range(n)),
                    tuple(range(n)))


def const(value: float, shape=()) -> Node:
    return broadcast(Const(float(value)), shape) if value != 1 or shape else ONE


def elementwise(fn, x: Node) -> Node:
    return Elementwise(fn, x)


def identity_tensor(shape) -> Node:
    """δ over ``shape`` twice: the seed of a Jacobian, I with axes (i…, i'…)."""
    n = len(shape)
    if n == 0:
        return ONE
    return Contract(tuple(Delta(d, 2) for d in shape), tuple((i, n + i) for i in range(n)),
                    tuple(range(2 * n)))


def is_zero(x: Node) -> bool:
    return isinstance(x, Sum) and not x.terms
