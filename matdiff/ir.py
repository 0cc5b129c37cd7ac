"""The intermediate representation: a small closed set of immutable tensor nodes.

Every node has a ``shape`` (a tuple of dims) and is hash-consed: building a node equal to
an existing one returns that very object, so equality is identity, hashing is O(1) and
equal subexpressions are shared.  Axes are positional at the edges; inside a
``Contract`` they are named by integer labels, so products, transposes, traces, diagonals,
outer and Hadamard products and sums over axes are all one einsum-like node.

Nodes hold data and check their own consistency; they hold no algorithms.  Each algorithm
(simplify, differentiate, evaluate, print) is a table of rules keyed by node type in its
own module.
"""
from __future__ import annotations

import hashlib
import math
import operator
import threading
import weakref

from . import dims as D
from .errors import MatdiffError, ShapeError


_TABLE_LOCK = threading.Lock()
_SECOND = operator.itemgetter(1)  # a sum's term of a (coefficient, term) pair


class _Stored:
    """A property computed once per node and kept in the node's own attributes: a
    non-data descriptor, so later reads find the stored value without a call (nodes are
    immutable, so it never changes)."""

    def __init__(self, f):
        self.f, self.name, self.__doc__ = f, f.__name__, f.__doc__

    def __get__(self, node, cls=None):
        if node is None:
            return self
        value = node.__dict__[self.name] = self.f(node)
        return value


class Node:
    """Base class of all IR nodes; subclasses list their ``fields`` and compute a shape."""

    __slots__ = ("args", "shape", "_skey", "_vars", "_simple", "__weakref__")
    fields: tuple = ()
    _table: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()

    def __new__(cls, *args):
        key = (cls, args)
        ref = _REFS.get(key)  # the table's own dict: a C-level look-up, not the mapping's get
        if ref is not None:
            node = ref()
            if node is not None:
                return node
        return cls._insert(key, None)

    @classmethod
    def _insert(cls, key, shape):
        """The node of ``key`` = (cls, args), made where no live one is in the table; with
        its ``shape`` where the caller knows it (else computed, and the args checked)."""
        with _TABLE_LOCK:  # look-up and insertion in one step: threads share equal nodes
            ref = _REFS.get(key)
            node = ref() if ref is not None else None
            if node is not None:
                return node
            args = key[1]
            node = object.__new__(cls)
            node.args = args
            node.shape = cls._shape(*args) if shape is None else shape
            node._skey = None
            node._vars = None
            node._simple = None
            if cls.fields:  # the fields as plain attributes: read faster than a property
                cls._set_fields(node, args)
            # the table's own entry, as its __setitem__ writes it (a removal it deferred while
            # iterating deletes only a dead reference, so it cannot remove this one)
            # (made as KeyedRef.__new__ makes it, without its two Python-level calls)
            ref = _NEW_REF(weakref.KeyedRef, node, _REMOVE)
            ref.key = key
            _REFS[key] = ref
            return node

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        # each field is an instance attribute that ``__new__`` sets (``args[i]``); a base
        # class's property of that name (``Unary.arg``) is shadowed here, so the instance's
        # own attribute is read
        for name in cls.fields:
            if isinstance(getattr(cls, name, None), property):
                setattr(cls, name, None)
        if cls.fields:
            cls._set_fields = staticmethod(_field_setter(cls.fields, cls.__dict__.get("_children_of")
                                                         or _inherited_children(cls)))

    @property
    def skey(self) -> bytes:
        """A digest of the structure, independent of object ids: a reproducible sort key."""
        if self._skey is None:
            stack = [self]  # children first, without recursion: expressions may be deep
            while stack:
                n = stack[-1]
                pending = [c for c in n.children if c._skey is None]
                if pending:
                    stack.extend(pending)
                    continue
                stack.pop()
                if n._skey is None:
                    n._skey = _stable_key(type(n).__name__, n.args)
        return self._skey

    def __reduce__(self):
        return (type(self), self.args)

    @staticmethod
    def _shape(*args):
        raise NotImplementedError

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @_Stored
    def children(self) -> tuple:
        """The operand nodes, in order."""
        return ()

    def with_children(self, children) -> "Node":
        """The same operation applied to other operands."""
        return self

    def __repr__(self):
        text = _TEXT_FORM[0](self) if _TEXT_FORM else "…"
        return f"<{type(self).__name__} {text} : {D.fmt_shape(self.shape)}>"


def _field_setter(fields: tuple, children: str | None = None):
    """``set(node, args)``: node's fields set from its args as plain attributes, in one tuple
    assignment (``node.operands, node.labels, node.out = args``), which is quicker than
    filling the node's ``__dict__`` from a zip of names and values; and, where ``children``
    (an expression of args, as the class's ``_children_of`` writes it) is given, its children
    too, which the ``_Stored`` property would otherwise compute at the first read."""
    if not all(name.isidentifier() for name in fields):
        raise ValueError(f"node fields must be identifiers: {fields}")
    targets = ", ".join(f"node.{name}" for name in fields)
    namespace: dict = {"_SECOND": _SECOND}
    body = f"    {targets}, = args\n" + (f"    node.children = {children}\n" if children else "")
    exec(f"def set_fields(node, args):\n{body}", namespace)  # noqa: S102
    return namespace["set_fields"]


def _inherited_children(cls) -> str | None:
    """The ``_children_of`` of the nearest class that defines ``children`` for cls, where
    that class also says how to compute it from the args (else None: computed when read)."""
    for base in cls.__mro__:
        if "children" in base.__dict__:
            return base.__dict__.get("_children_of")
    return None


# the weak references of Node._table, keyed alike: a live node is found without a lock
# (a node once in the table stays there while it lives, so any thread finds the same one)
_REFS = Node._table.data
_REMOVE = Node._table._remove
_NEW_REF = weakref.ref.__new__


# The one-line text a repr shows (show.index_form), registered by show.py when it is
# imported, so that ir imports nothing above it: show depends on ir, never the reverse.
# Importing any part of matdiff runs the package's __init__, which imports show.
_TEXT_FORM: list = []


def register_text_form(form) -> None:
    """Make ``form(node) -> str`` the text of every node's repr (show.py registers its
    ``index_form``)."""
    _TEXT_FORM[:] = [form]


def _stable_key(name, args) -> bytes:
    """A digest independent of object ids, so that sorting by it is reproducible.  The text
    hashed: the name, then each argument — a node's own key, a tuple as ( … ), anything else
    as its repr (a function as its name) and a comma — written out first and hashed at once.
    A repr here must hold no object address: ``functions.Function`` writes a user's callables
    by name and a digest of their code (``functions.stable_text``)."""
    parts = [name.encode()]
    append = parts.append

    def feed(a):
        if type(a) is int:
            append(b"%d," % a)
        elif isinstance(a, Node):
            append(a.skey)
        elif isinstance(a, tuple):
            append(b"(")
            for x in a:
                if type(x) is int:
                    append(b"%d," % x)  # repr(x) and a comma
                else:
                    feed(x)
            append(b")")
        else:
            append(repr(a).encode() if not callable(a) else getattr(a, "__name__", "f").encode())
            append(b",")

    for a in args:
        feed(a)
    return hashlib.blake2b(b"".join(parts), digest_size=8).digest()


def contract_key(operands: tuple, labels: tuple, out: tuple) -> bytes:
    """The ``skey`` that ``Contract(operands, labels, out)`` has, without building it."""
    return _stable_key("Contract", (operands, labels, out))


def free_vars(node: Node) -> frozenset:
    """The variables (and holes) a node depends on; cached on the node."""
    if node._vars is not None:
        return node._vars
    stack = [node]
    while stack:  # children before parents, each node once: linear in the DAG, not its tree
        n = stack[-1]
        if n._vars is not None:
            stack.pop()
            continue
        kids = n.children
        sets = [c._vars for c in kids]
        if None in sets:  # (a set never equals None)
            stack.extend([c for c in kids if c._vars is None])
            continue
        stack.pop()
        if len(sets) == 1:  # one operand: its set, shared
            n._vars = sets[0]
        else:
            n._vars = frozenset((n,)) if isinstance(n, (Var, Hole)) else frozenset().union(*sets)
    return node._vars


def walk(*roots: Node):
    """Every node reachable from ``roots``, each once (in no particular order)."""
    seen, stack = set(), list(roots)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            yield n
            stack.extend(n.children)


def dag_size(*roots: Node) -> int:
    """The number of distinct nodes reachable from ``roots`` (shared nodes count once)."""
    return sum(1 for _ in walk(*roots))


def merge_deltas(c: "Contract"):
    """A contraction with its Kronecker deltas merged into labels, for code that must not
    build them: (non-delta operands with renamed labels, the renamed output, the distinct
    output labels, the labels only a delta carried and that are summed — each a factor of
    its dim)."""
    parent = {}

    def find(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    kept, ones = [], []
    for op, lab in zip(c.operands, c.labels):
        if isinstance(op, Delta):
            for x in lab[1:]:
                ra, rb = find(lab[0]), find(x)
                if ra != rb:
                    parent[rb] = ra
            ones.append(lab[0])
        else:
            kept.append((op, lab))
    kept = [(op, tuple(find(x) for x in lab)) for op, lab in kept]
    out = [find(x) for x in c.out]
    carried = {x for _, lab in kept for x in lab}
    uniq = list(dict.fromkeys(out))
    summed_only = [r for r in {find(x) for x in ones} if r not in carried and r not in uniq]
    return kept, out, uniq, summed_only


def is_ones(n: Node) -> bool:
    """Whether n is the all-ones tensor (a ones vector, or an outer product of them). A
    product of ones vectors that sums a label is not: Σ_c 1_a 1_b 1_c = n·1_a 1_b (11ᵀ11ᵀ)."""
    if isinstance(n, Delta):
        return n.order == 1
    return isinstance(n, Contract) and all(isinstance(o, Delta) and o.order == 1 for o in n.operands) \
        and all(lab[0] in n.out for lab in n.labels)


def clear_caches() -> None:
    """Forget every node's memoised simplification and variable set (for benchmarks)."""
    for node in list(Node._table.values()):
        node._simple = None
        node._vars = None


# --------------------------------------------------------------------------- leaves


class Var(Node):
    """A named input tensor. ``symmetric`` tags a square matrix equal to its transpose: True,
    or "spd" where it is also declared positive definite; on a scalar, "positive" declares
    it positive (a 1 × 1 positive-definite matrix)."""

    fields = ("name", "dims", "symmetric")

    @staticmethod
    def _shape(name, dims, symmetric):
        if symmetric == "positive":
            if dims:
                raise ShapeError(f"positive=True is for a scalar, but {name} is {D.fmt_shape(dims)}; "
                                 f"declare a matrix positive definite with spd=True")
            return ()
        if symmetric and (len(dims) != 2 or dims[0] != dims[1]):
            raise ShapeError(f"{'spd' if symmetric == 'spd' else 'symmetric'}=True needs a square "
                             f"matrix, but {name} is {D.fmt_shape(dims)}")
        return tuple(dims)


class Hole(Node):
    """A placeholder: the differential dX while a derivative rule is transposed, or (when
    ``symmetric``) the factor being factored out of a sum, read in any axis order."""

    fields = ("dims", "symmetric")

    @staticmethod
    def _shape(dims, symmetric=False):
        return tuple(dims)


class Const(Node):
    """A scalar constant."""

    fields = ("value",)

    @staticmethod
    def _shape(value):
        if not math.isfinite(value):
            raise MatdiffError(f"a constant of the expression is {value}: it overflowed or is "
                               f"undefined, and an expression with it has no value to stand behind")
        return ()


class Delta(Node):
    """The generalised Kronecker delta δ_{i…i} with ``order`` axes of one dim.

    Order 1 is the vector of ones, order 2 the identity matrix, order 3 the tensor that
    builds diag(v).  Deltas are never materialised by the evaluator.
    """

    fields = ("dim", "order")

    @staticmethod
    def _shape(dim, order):
        return (dim,) * order


class Basis(Node):
    """The unit vector e_pos of length ``dim``: 1 at ``pos`` (from the end where negative,
    as in Python's indexing), 0 elsewhere; x[i] = eᵢᵀx."""

    fields = ("dim", "pos")

    @staticmethod
    def _shape(dim, pos):
        if isinstance(dim, int) and not -dim <= pos < dim:
            raise ShapeError(f"index {pos} is out of range for length {dim}")
        return (dim,)

    def subscript(self) -> str:
        """The printed index, counted from 1: 1, 2, …; n, n−1, … from the end."""
        if self.pos >= 0:
            return str(self.pos + 1)
        if isinstance(self.dim, int):
            return str(self.dim + self.pos + 1)
        return D.fmt(self.dim) + (f"−{-self.pos - 1}" if self.pos < -1 else "")


# --------------------------------------------------------------------------- multilinear


class Contract(Node):
    """Σ over labels not in ``out`` of the product of operands, as ``einsum``.

    ``labels[k]`` names the axes of ``operands[k]`` (repeats take a diagonal); ``out`` names
    the axes of the result, each label at most once and carried by some operand.
    """

    fields = ("operands", "labels", "out")

    @staticmethod
    def _shape(operands, labels, out):
        if len(operands) != len(labels):
            raise ShapeError("contract: one label tuple per operand is needed")
        size = {}
        for op, labs in zip(operands, labels):
            shape = op.shape
            if len(labs) != len(shape):
                raise ShapeError(f"contract: {len(labs)} labels for an operand of order {op.ndim}")
            for lab, d in zip(labs, shape):
                e = size.setdefault(lab, d)
                if e is not d and e != d:
                    raise ShapeError(f"contract: axis {lab} is {D.fmt(size[lab])} in one operand "
                                     f"and {D.fmt(d)} in another")
        if len(set(out)) != len(out):
            raise ShapeError("contract: repeated output label")
        try:
            return tuple([size[lab] for lab in out])
        except KeyError:
            missing = [lab for lab in out if lab not in size]
            raise ShapeError(f"contract: output labels {missing} are carried by no operand") from None

    _children_of = "args[0]"  # children from the args, set when the node is made

    @_Stored
    def children(self):
        return self.args[0]

    def with_children(self, children):
        return Contract(tuple(children), self.labels, self.out)

    def label_dims(self) -> dict:
        return {lab: d for op, labs in zip(self.operands, self.labels)
                for lab, d in zip(labs, op.shape)}

    @staticmethod
    def of_shape(operands: tuple, labels: tuple, out: tuple, shape: tuple) -> "Contract":
        """``Contract(operands, labels, out)`` where the caller knows its shape, as a
        product rewritten into an equal one with the same output axes: not checked again."""
        key = (Contract, (operands, labels, out))
        ref = _REFS.get(key)
        if ref is not None:
            node = ref()
            if node is not None:
                return node
        return Contract._insert(key, shape)


class Sum(Node):
    """Σ c_k · term_k over terms of one shape; the empty sum is the zero tensor."""

    fields = ("terms", "dims")

    @staticmethod
    def _shape(terms, dims):
        for c, t in terms[_CHECKED.__dict__.get("prefix", 0):]:  # a checked sum's terms: once
            if not math.isfinite(c):
                raise MatdiffError(f"a coefficient of the expression is {c}: it overflowed "
                                   f"(as in 1e200·1e200·x), and an expression with it has no "
                                   f"value to stand behind")
            if t.shape != tuple(dims):
                raise ShapeError(f"sum: a term of shape {D.fmt_shape(t.shape)} "
                                 f"in a sum of shape {D.fmt_shape(dims)}")
        return tuple(dims)

    _children_of = "tuple(map(_SECOND, args[0]))"  # children from the args, set when the node is made

    @_Stored
    def children(self):
        return tuple(map(_SECOND, self.args[0]))

    def with_children(self, children):
        return Sum(tuple((c, t) for (c, _), t in zip(self.terms, children)), self.dims)


_CHECKED = threading.local()  # the number of leading terms of a Sum being built that are checked


def extended(s: Sum, more) -> Sum:
    """s with more (c, term) pairs after its own: a + b + c typed as a chain builds one flat
    sum, and each step checks only the terms it adds (a chain of k terms: O(k) checks)."""
    _CHECKED.prefix = len(s.terms)
    try:
        return Sum(s.terms + tuple((float(c), t) for c, t in more), s.dims)
    finally:
        _CHECKED.prefix = 0


class Reshape(Node):
    """The entries of ``arg`` in row-major order, laid out with a new shape of equal size."""

    fields = ("arg", "dims")

    @staticmethod
    def _shape(arg, dims):
        if D.size(arg.shape) != D.size(dims):
            raise ShapeError(f"reshape: {D.fmt_shape(arg.shape)} cannot become {D.fmt_shape(dims)}")
        return tuple(dims)

    _children_of = "(args[0],)"  # children from the args, set when the node is made

    @_Stored
    def children(self):
        return (self.args[0],)

    def with_children(self, children):
        return Reshape(children[0], self.dims)


# --------------------------------------------------------------------------- nonlinear


class Unary(Node):
    """A node with one tensor operand, ``arg``, as its last field."""

    _children_of = "(args[-1],)"  # children from the args, set when the node is made

    @_Stored
    def children(self):
        return (self.args[-1],)

    def with_children(self, children):
        return type(self)(*self.args[:-1], children[0])

    @property
    def arg(self):
        return self.args[-1]


class Binary(Node):
    """A node with two tensor operands as its last two fields (and parameters before them)."""

    _children_of = "args[-2:]"  # children from the args, set when the node is made

    @_Stored
    def children(self):
        return self.args[-2:]

    def with_children(self, children):
        return type(self)(*self.args[:-2], *children)


class Elementwise(Unary):
    """f(x) applied entry by entry; ``fn`` is a ``functions.Function``."""

    fields = ("fn", "arg")

    @staticmethod
    def _shape(fn, arg):
        return arg.shape


class Softmax(Unary):
    """exp(x) / Σ_axis exp(x), along one axis."""

    fields = ("axis", "arg")

    @staticmethod
    def _shape(axis, arg):
        _check_axis("softmax", axis, arg)
        return arg.shape


class LogSumExp(Unary):
    """log Σ_axis exp(x); the axis is removed."""

    fields = ("axis", "arg")

    @staticmethod
    def _shape(axis, arg):
        _check_axis("logsumexp", axis, arg)
        return arg.shape[:axis] + arg.shape[axis + 1:]


def _check_axis(name, axis, arg):
    if not 0 <= axis < arg.ndim:
        raise ShapeError(f"{name}: axis {axis} is out of range for shape {D.fmt_shape(arg.shape)}")


def _square(name, arg):
    if arg.ndim != 2 or arg.shape[0] != arg.shape[1]:
        raise ShapeError(f"{name} needs a square matrix, got shape {D.fmt_shape(arg.shape)}")


class Inv(Unary):
    """The matrix inverse X⁻¹."""

    fields = ("arg",)

    @staticmethod
    def _shape(arg):
        _square("inv", arg)
        return arg.shape


class Pinv(Unary):
    """The Moore–Penrose pseudo-inverse X⁺ of an (n, k) matrix, (k, n). matdiff evaluates and
    differentiates it at full rank, min(n, k), where the rank is locally constant (the
    Golub–Pereyra derivative); a rank-deficient X is refused, since there X⁺ jumps."""

    fields = ("arg",)

    @staticmethod
    def _shape(arg):
        if arg.ndim != 2:
            raise ShapeError(f"pinv needs a matrix, got shape {D.fmt_shape(arg.shape)}")
        return arg.shape[::-1]


class Det(Unary):
    """The determinant det X."""

    fields = ("arg",)

    @staticmethod
    def _shape(arg):
        _square("det", arg)
        return ()


class LogDet(Unary):
    """log |det X| (log det X where the determinant is positive)."""

    fields = ("arg",)

    @staticmethod
    def _shape(arg):
        _square("logdet", arg)
        return ()


class Cholesky(Unary):
    """The Cholesky factor L of a symmetric positive-definite matrix S = LLᵀ: lower
    triangular, with a positive diagonal."""

    fields = ("arg",)

    @staticmethod
    def _shape(arg):
        _square("cholesky", arg)
        return arg.shape


class Phi(Unary):
    """Φ(X), the lower triangle of X with its diagonal halved, over the last two axes (a
    square pair): linear, and its own adjoint, ⟨Φ(X), Y⟩ = ⟨X, Φ(Y)⟩. The Cholesky
    factor's differential is dL = L Φ(L⁻¹ dS L⁻ᵀ)."""

    fields = ("arg",)

    @staticmethod
    def _shape(arg):
        if arg.ndim < 2 or arg.shape[-1] != arg.shape[-2]:
            raise ShapeError(f"Φ (the lower triangle, diagonal halved) needs square last axes, "
                             f"got shape {D.fmt_shape(arg.shape)}")
        return arg.shape


class Eigh(Unary):
    """The eigen-decomposition S = U diag(λ) Uᵀ of a symmetric matrix: ``part`` "values"
    (λ, ascending) or "vectors" (U, orthonormal columns)."""

    fields = ("part", "arg")

    @staticmethod
    def _shape(part, arg):
        _square("eigh", arg)
        if part not in ("values", "vectors"):
            raise ShapeError(f"eigh: part is 'values' or 'vectors', not {part!r}")
        return arg.shape[:1] if part == "values" else arg.shape


class Svd(Unary):
    """The thin singular value decomposition X = U diag(σ) Vᵀ, r = ``rank`` (the smaller of
    X's dims): ``part`` "values" (σ, descending, length r), "left" (U, m × r), "right"
    (V, n × r), "top" (σ₁), "top_left" (u₁), "top_right" (v₁)."""

    fields = ("part", "rank", "arg")

    @staticmethod
    def _shape(part, rank, arg):
        if arg.ndim != 2:
            raise ShapeError(f"svd needs a matrix, got shape {D.fmt_shape(arg.shape)}")
        shapes = {"values": (rank,), "left": (arg.shape[0], rank), "right": (arg.shape[1], rank),
                  "top": (), "top_left": arg.shape[:1], "top_right": arg.shape[1:]}
        if part not in shapes:
            raise ShapeError(f"svd: no part {part!r}")
        return shapes[part]


# fn → the printed name: the analytic functions of the function table (funm.ANALYTIC)
GENERAL_FUNCTIONS = {"exp": "expm", "log": "logm", "sqrt": "sqrtm",
                     **{f: f + "ₘ" for f in ("sin", "cos", "tan", "tanh", "sinh", "cosh", "sigmoid",
                                             "softplus", "log1p", "expm1", "arctan")}}


class Funm(Unary):
    """f(X) of a general square matrix, for ``fn`` "exp" (scaling and squaring), "log" or
    "sqrt" (principal branches: no eigenvalue of X on the closed negative real axis), or
    another analytic function of the table computed from those and solves (``funm``)."""

    fields = ("fn", "arg")

    @staticmethod
    def _shape(fn, arg):
        if fn not in GENERAL_FUNCTIONS:
            raise ShapeError(f"matrix function of a general matrix: fn is one of "
                             f"{', '.join(GENERAL_FUNCTIONS)}, not {fn!r}")
        _square(GENERAL_FUNCTIONS[fn], arg)
        return arg.shape


class Frechet(Binary):
    """L_f(X, E), the Fréchet derivative of ``fn`` (as in Funm) at X in the direction E:
    linear in E, with adjoint L_f(Xᵀ, ·) (f has real Taylor coefficients)."""

    fields = ("fn", "arg", "dir")

    @staticmethod
    def _shape(fn, arg, dir):  # noqa: A002
        Funm._shape(fn, arg)
        if dir.shape != arg.shape:
            raise ShapeError(f"{GENERAL_FUNCTIONS[fn]}'s Fréchet derivative: direction "
                             f"{D.fmt_shape(dir.shape)} for a matrix {D.fmt_shape(arg.shape)}")
        return arg.shape


class MatFn(Unary):
    """f(S) = U f(Λ) Uᵀ of a symmetric matrix S, for an element-wise f (expm, logm, sqrtm)."""

    fields = ("fn", "arg")

    @staticmethod
    def _shape(fn, arg):
        _square(f"matrix function {fn}", arg)
        return arg.shape


class DivDiff(Unary):
    """The divided differences of f at a vector λ: F_ij = (f(λᵢ) − f(λⱼ))/(λᵢ − λⱼ), and
    f′(λᵢ) where λᵢ = λⱼ — the Daleckii–Krein matrix of d f(S)."""

    fields = ("fn", "arg")

    @staticmethod
    def _shape(fn, arg):
        if arg.ndim != 1:
            raise ShapeError(f"divided differences take a vector, got shape {D.fmt_shape(arg.shape)}")
        return arg.shape * 2


class DivDiff2(Binary):
    """The confluent second divided differences of f at λ: A_ij = f[λᵢ, λᵢ, λⱼ] =
    (f′(λᵢ) − F_ij)/(λᵢ − λⱼ), and f″/2 where λᵢ = λⱼ (``second`` is f″(λ)) — so that
    dF_ij = A_ij dλᵢ + A_ji dλⱼ for the divided differences F."""

    fields = ("fn", "arg", "second")

    @staticmethod
    def _shape(fn, arg, second):
        if arg.ndim != 1 or second.shape != arg.shape:
            raise ShapeError("second divided differences take a vector and f″ at it")
        return arg.shape * 2


class DivDiff3(Unary):
    """The second divided differences of f at λ over every three points: T_ijk =
    f[λᵢ, λⱼ, λₖ] = (f[λᵢ, λⱼ] − f[λⱼ, λₖ])/(λᵢ − λₖ), with its confluent limits (f″(λᵢ)/2
    where all three agree) — fully symmetric.  The second-order Daleckii–Krein rule:
    d²f(S)[V, W] = U (Σₖ T_ijk (V̂ᵢₖŴₖⱼ + ŴᵢₖV̂ₖⱼ)) Uᵀ with V̂ = UᵀVU, Ŵ = UᵀWU."""

    fields = ("fn", "arg")
    # the built-in functions whose derivatives of every order evaluate and codegen know in
    # closed form (the Taylor series of f[λᵢ, λⱼ, λₖ] where the three are close)
    SERIES = ("exp", "log", "sqrt", "pow", "sin", "cos", "sinh", "cosh", "tanh", "sigmoid",
              "softplus", "log1p", "expm1", "arctan", "tan")
    KINKS = ("relu", "abs", "step", "sign")  # affine on each side of 0, not differentiable there

    @staticmethod
    def has_series(fn) -> bool:
        """Whether f's divided differences of first and second order are computed exactly at
        every gap: a function of SERIES, relu, |·|, step or sign, or a traced callable
        (library._traced) built from them (relu, |·|, step and sign are affine on each side of
        their kink at 0: exact away from it, and refused at it), constants, sums and products
        (by the chain rule of divided differences)."""
        if fn.builtin:  # relu, |·|, step and sign themselves: as a traced callable of one kink
            return fn.name in DivDiff3.SERIES + DivDiff3.KINKS
        if getattr(fn.deriv, "on_entries", None) is None:  # a user's md.function: a Taylor
            return DivDiff3.user_orders(fn) >= 2  # series from its derivatives near confluence
        trace = getattr(fn.deriv, "on_entries", None)
        return isinstance(trace, Node) and all(
            n.fn.builtin and n.fn.name in DivDiff3.SERIES + DivDiff3.KINKS
            for n in walk(trace) if type(n) is Elementwise)

    USER_ORDERS = 6  # f′ … f⁽⁶⁾ of a user's f′ written with matdiff's functions, symbolically

    @staticmethod
    def user_orders(fn) -> int:
        """How many derivatives f′, f″, … of a user's ``md.function`` are known in closed form:
        for ``numpy=[f, f′, f″, …]`` (no ``derivative=``) as many as the list gives; for a
        ``derivative=`` written with the analytic functions of SERIES, constants, sums,
        products, powers and f itself, USER_ORDERS (f′ differentiated symbolically); else 0
        (a kink, another user function: no series)."""
        if fn.builtin or getattr(fn.deriv, "on_entries", None) is not None:
            return 0
        if fn.deriv is None:
            return len(fn.numpy) - 1 - fn.order if isinstance(fn.numpy, tuple) else 0
        if fn not in _USER_ORDERS:
            t = Var("_t", ("_n",), False)
            try:
                slope = fn.derivative(t)
            except Exception:  # noqa: BLE001  # a derivative that does not build: no series
                slope = None
            ok = slope is not None and all(
                (type(n) is Var and n is t) or type(n) in (Const, Delta, Sum, Contract) or
                (type(n) is Elementwise and ((n.fn.builtin and n.fn.name in DivDiff3.SERIES) or n.fn == fn))
                for n in walk(slope))
            _USER_ORDERS[fn] = DivDiff3.USER_ORDERS if ok else 0
        return _USER_ORDERS[fn]

    @staticmethod
    def _shape(fn, arg):
        if arg.ndim != 1:
            raise ShapeError(f"divided differences take a vector, got shape {D.fmt_shape(arg.shape)}")
        return arg.shape * 3


_USER_ORDERS: dict = {}  # DivDiff3.user_orders of a user's function with a derivative, once


class DivDiff3Apply(Node):
    """M_pc = Σ_q f[λ_p, λ_q, λ_c] X_pq Y_qc: the second divided differences T = DivDiff3
    contracted over their middle index with two matrices, without T (n³): for λ_p, λ_c apart
    T_pqc = (F_pq − F_qc)/(λ_p − λ_c), so M = G ⊙ ((F ⊙ X)Y − X(F ⊙ Y)) with G_pc =
    1/(λ_p − λ_c) (F the first divided differences); T's own values on the pairs (p, c) that
    are close (p = c among them).  A Hessian-vector product's second-order Daleckii–Krein rule."""

    fields = ("fn", "arg", "x", "y")

    @_Stored
    def children(self):
        return self.args[-3:]

    def with_children(self, children):
        return type(self)(self.args[0], *children)

    @staticmethod
    def _shape(fn, arg, x, y):
        if arg.ndim != 1:
            raise ShapeError(f"divided differences take a vector, got shape {D.fmt_shape(arg.shape)}")
        if x.shape != arg.shape * 2 or y.shape != arg.shape * 2:
            raise ShapeError("DivDiff3Apply takes two square matrices of λ's length")
        return arg.shape * 2


class EigGap(Unary):
    """The eigenvector-derivative matrix of eigenvalues λ: G_ij = 1/(λⱼ − λᵢ) for i ≠ j, 0 on
    the diagonal, so that dU = U (G ⊙ (Uᵀ dS U)) for distinct eigenvalues."""

    fields = ("arg",)

    @staticmethod
    def _shape(arg):
        if arg.ndim != 1:
            raise ShapeError(f"eigenvalue gaps take a vector, got shape {D.fmt_shape(arg.shape)}")
        return arg.shape * 2


class ScalarFn(Unary):
    """The ``order``-th derivative tensor of an abstract scalar function λ of a tensor.

    Order 0 is λ(X) itself (a scalar), order 1 the gradient ∇λ(X) (X's shape), order 2
    the Hessian (X's shape twice), and so on.
    """

    fields = ("fn", "order", "arg")

    @staticmethod
    def _shape(fn, order, arg):
        return arg.shape * order

