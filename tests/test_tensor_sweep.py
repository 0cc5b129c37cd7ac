"""A seeded sweep of the derivatives of matrix- and vector-valued functions: random
expressions of a matrix X (n × n) and a vector x (n), with constants A (n × n), B (n × k) and
w (k), built in pairs by one mirror grammar — the matdiff expression and a NumPy function
computing the same value directly (as tests/test_value_oracle.py does for scalars).

For each expression f and each of X, x it depends on, at n = 3 and k = 2:
1. ``md.jacobian(f, v)`` (f's axes, then v's) equals central differences of the NumPy
   function, entry by entry; so does the denominator layout (v's axes first);
2. ``layout="vec"`` equals the finite-difference Jacobian of vec(f) by vec(v), vec stacking
   columns (NumPy's order "F"), and ``vec="row"`` that of the rows;
3. the NumPy code of ``md.codegen`` gives the Jacobian's value (``md.compile`` for JAX on one
   case, PyTorch on two);
4. every printed form (text, LaTeX, index) prints; a form in matrix notation is evaluated by
   tests/notation_eval.py and equals the Jacobian, and its text read back by ``md.parse``
   does too (or is refused); index forms have no evaluator here and are only printed.

Random einsum strings over two or three operands (repeated letters, diagonals, implicit
outputs, one tensor used twice) are checked against ``np.einsum``, with their Jacobians by
each operand and the gradient of a nonlinear scalar of them against central differences.

Faults found here are pinned at the end, each minimised."""
from __future__ import annotations

import collections
import functools
import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import matdiff as md
from matdiff import notation as N
from matdiff.parse import declarations

from . import notation_eval
from .test_value_oracle import Pair
from .test_value_oracle import _close as _oracle_close

N_, K_, M_ = 3, 2, 4
SIZES = {"n": N_, "k": K_, "m": M_}
SEEDS = range(300)

X, x = md.matrix("X", "n", "n"), md.vector("x", "n")
A, B, w = md.matrix("A", "n", "n"), md.matrix("B", "n", "k"), md.vector("w", "k")
ALL = [X, x, A, B, w]
WRT = [X, x]


def _values() -> dict:
    rng = np.random.default_rng(20261207)
    return {v.node.name: rng.standard_normal([SIZES[d] for d in v.shape]) * 0.7 for v in ALL}


VALUES = _values()


def _sig(u):
    return 1 / (1 + np.exp(-u))


def _softmax(u, axis=0):
    z = np.exp(u - u.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def _dom(m):  # well conditioned: eigenvalues with real part ≥ 5 − ‖tanh M‖₂ ≥ 2 at n = 3
    return md.tanh(m) + 5 * md.eye("n")


def _np_dom(m):
    return np.tanh(m) + 5 * np.eye(N_)


FUNCTIONS = [
    (md.tanh, np.tanh, "tanh"), (md.sin, np.sin, "sin"), (md.sigmoid, _sig, "sigmoid"),
    (lambda e: md.exp(md.tanh(e)), lambda u: np.exp(np.tanh(u)), "exp∘tanh"),
    (lambda e: e ** 2, lambda u: u ** 2, "u²"), (md.softplus, lambda u: np.logaddexp(0, u), "softplus"),
    (lambda e: md.log(1 + e * e), lambda u: np.log(1 + u * u), "log(1+u²)"),
    (lambda e: 1 / (1 + e * e), lambda u: 1 / (1 + u * u), "1/(1+u²)"),
]


@dataclass(frozen=True)
class Rule:
    kind: str  # M: n × n, R: n × k, V: n, W: k, K: a Kronecker product (only at the top)
    args: tuple
    md_: Callable
    np_: Callable
    src: str


RULES = [r for k in "MRVW" for r in (
    Rule(k, (k, k), lambda a, b: a + b, lambda a, b: a + b, "({} + {})"),
    Rule(k, (k, k), lambda a, b: a * b, lambda a, b: a * b, "({} * {})"),
    Rule(k, (k, k), lambda a, b: 0.5 * a - b, lambda a, b: 0.5 * a - b, "(0.5 * {} - {})"),
    *[Rule(k, (k,), lambda a, f=f: f(a), lambda a, g=g: g(a), name + "({})") for f, g, name in FUNCTIONS])]
RULES += [
    Rule("M", ("M", "M"), lambda a, b: a @ b, lambda a, b: a @ b, "({} @ {})"),
    Rule("M", ("M",), lambda a: a.T, lambda a: a.T, "{}.T"),
    Rule("M", ("M",), lambda a: md.inv(_dom(a)), lambda a: np.linalg.inv(_np_dom(a)), "md.inv(dom({}))"),
    Rule("M", ("M", "M"), lambda a, b: md.solve(_dom(a), b), lambda a, b: np.linalg.solve(_np_dom(a), b),
         "md.solve(dom({}), {})"),
    Rule("M", ("M",), lambda a: md.softmax(a, axis=0), lambda a: _softmax(a, 0), "md.softmax({}, axis=0)"),
    Rule("M", ("M",), lambda a: md.softmax(a, axis=1), lambda a: _softmax(a, 1), "md.softmax({}, axis=1)"),
    Rule("M", ("V",), md.diag, np.diag, "md.diag({})"),
    Rule("M", ("V", "V"), md.outer, np.outer, "md.outer({}, {})"),
    Rule("M", ("V", "V"), lambda a, b: a @ b.T, np.outer, "({} @ {}.T)"),
    Rule("M", ("R", "R"), lambda a, b: a @ b.T, lambda a, b: a @ b.T, "({} @ {}.T)"),
    Rule("M", ("M", "V"), lambda a, v: md.hadamard(a, v, [1], [0]), lambda a, v: a * v[None, :],
         "md.hadamard({}, {}, [1], [0])"),
    Rule("M", ("M",), md.permute, np.transpose, "md.permute({})"),
    Rule("M", ("M", "M"), lambda a, b: md.einsum("ij,kj->ik", a, b), lambda a, b: a @ b.T,
         "md.einsum('ij,kj->ik', {}, {})"),
    Rule("M", ("M",), lambda a: md.matrix_power(a, 2), lambda a: a @ a, "md.matrix_power({}, 2)"),
    Rule("M", ("M",), lambda a: md.trace(a) * a, lambda a: np.trace(a) * a, "(md.trace({0}) * {0})"),
    Rule("M", ("M",), lambda a: md.reshape(md.vec(a), "n", "n"), lambda a: a.T, "md.reshape(md.vec({}), n, n)"),
    Rule("R", ("M", "R"), lambda a, b: a @ b, lambda a, b: a @ b, "({} @ {})"),
    Rule("R", ("R",), lambda a: md.softmax(a, axis=1), lambda a: _softmax(a, 1), "md.softmax({}, axis=1)"),
    Rule("R", ("R",), lambda a: md.softmax(a, axis=0), lambda a: _softmax(a, 0), "md.softmax({}, axis=0)"),
    Rule("R", ("R", "W"), lambda a, v: a * v, lambda a, v: a * v, "({} * {})"),
    Rule("R", ("V", "W"), md.outer, np.outer, "md.outer({}, {})"),
    Rule("R", ("M", "R"), lambda a, b: md.solve(_dom(a), b), lambda a, b: np.linalg.solve(_np_dom(a), b),
         "md.solve(dom({}), {})"),
    Rule("R", ("R", "V"), lambda a, v: md.hadamard(a, v, [0], [0]), lambda a, v: a * v[:, None],
         "md.hadamard({}, {}, [0], [0])"),
    Rule("R", ("M", "R", "W"), lambda a, b, v: md.einsum("ij,jk,k->ik", a, b, v),
         lambda a, b, v: np.einsum("ij,jk,k->ik", a, b, v), "md.einsum('ij,jk,k->ik', {}, {}, {})"),
    Rule("V", ("M", "V"), lambda a, v: a @ v, lambda a, v: a @ v, "({} @ {})"),
    Rule("V", ("M", "V"), lambda a, v: a.T @ v, lambda a, v: a.T @ v, "({}.T @ {})"),
    Rule("V", ("R", "W"), lambda a, v: a @ v, lambda a, v: a @ v, "({} @ {})"),
    Rule("V", ("V",), md.softmax, _softmax, "md.softmax({})"),
    Rule("V", ("M",), md.diag, np.diag, "md.diag({})"),
    Rule("V", ("M",), lambda a: md.sum(a, axis=1), lambda a: a.sum(1), "md.sum({}, axis=1)"),
    Rule("V", ("M",), lambda a: md.sum(a, axis=0).T, lambda a: a.sum(0), "md.sum({}, axis=0).T"),
    Rule("V", ("R",), lambda a: md.sum(a, axis=1), lambda a: a.sum(1), "md.sum({}, axis=1)"),
    Rule("V", ("M", "V"), lambda a, v: md.solve(_dom(a), v), lambda a, v: np.linalg.solve(_np_dom(a), v),
         "md.solve(dom({}), {})"),
    Rule("V", ("M", "V"), lambda a, v: md.inv(_dom(a)) @ v, lambda a, v: np.linalg.solve(_np_dom(a), v),
         "(md.inv(dom({})) @ {})"),
    Rule("V", ("V",), lambda a: md.sum(a) * a, lambda a: a.sum() * a, "(md.sum({0}) * {0})"),
    Rule("V", ("M",), lambda a: md.logsumexp(a, axis=1), lambda a: np.log(np.exp(a).sum(1)),
         "md.logsumexp({}, axis=1)"),
    Rule("W", ("R", "V"), lambda a, v: a.T @ v, lambda a, v: a.T @ v, "({}.T @ {})"),
    Rule("W", ("R",), lambda a: md.sum(a, axis=0).T, lambda a: a.sum(0), "md.sum({}, axis=0).T"),
    Rule("W", ("W",), md.softmax, _softmax, "md.softmax({})"),
    # Kronecker products, at the top only (a vector is a column in one, as in NumPy's kron of n × 1)
    Rule("K", ("M", "M"), md.kron, np.kron, "md.kron({}, {})"),
    Rule("K", ("M", "R"), md.kron, np.kron, "md.kron({}, {})"),
    Rule("K", ("V", "M"), md.kron, lambda v, m: np.kron(v[:, None], m), "md.kron({}, {})"),
    Rule("K", ("V", "W"), md.kron, np.kron, "md.kron({}, {})"),
]
LEAVES = {"M": [X, A], "R": [B], "V": [x], "W": [w]}


def _leaf(v) -> Pair:
    name = v.node.name
    return Pair(v, lambda env: env[name], name)


def _random_pair(kind: str, depth: int, r: random.Random) -> Pair:
    if kind != "K" and (depth == 0 or r.random() < 0.2):
        return _leaf(r.choice(LEAVES[kind]))
    rule = r.choice([q for q in RULES if q.kind == kind])
    args = [_random_pair(a, depth - 1, r) for a in rule.args]
    fs = [a.f for a in args]
    return Pair(rule.md_(*[a.e for a in args]), lambda env: rule.np_(*[f(env) for f in fs]),
                rule.src.format(*[a.src for a in args]))


@functools.cache
def _pairs() -> list:
    """The seeded expressions that depend on X or x."""
    out = []
    for seed in SEEDS:
        r = random.Random(seed)
        p = _random_pair(r.choice("MMRVK"), r.randint(1, 3), r)
        if {v.node.name for v in p.e.variables} & {"X", "x"}:
            out.append(p)
    return out


def _close(got, want, what: str, p: Pair, rtol: float) -> None:
    """The oracle's comparison, the shapes required equal first (it reshapes)."""
    assert np.shape(got) == np.shape(want), (what, p.src, np.shape(got), np.shape(want))
    _oracle_close(got, want, what, p, rtol)


def _used(e) -> dict:
    names = {v.node.name for v in e.variables}
    return {k: v for k, v in VALUES.items() if k in names}


def _central(f: Callable, name: str) -> np.ndarray:
    """∂f/∂name of a NumPy function by central differences: f's axes, then the variable's."""
    base, h = VALUES[name], 1e-6
    out = None
    for idx in np.ndindex(*base.shape):
        d = np.zeros_like(base)
        d[idx] = h
        plus, minus = dict(VALUES), dict(VALUES)
        plus[name], minus[name] = base + d, base - d
        col = (np.asarray(f(plus), dtype=float) - np.asarray(f(minus), dtype=float)) / (2 * h)
        if out is None:
            out = np.zeros(col.shape + base.shape)
        out[(...,) + idx] = col
    return out


def _vec_jacobian(J: np.ndarray, p: int, order: str) -> np.ndarray:
    """∂vec(f)/∂vec(v) from the full Jacobian (f's p axes, then v's), built column by column:
    column j is vec(∂f/∂v_idx) for the idx that vec puts j-th. A gradient (f a scalar) and a
    derivative by a scalar keep their shapes, as in every layout."""
    fshape, vshape = J.shape[:p], J.shape[p:]
    if not fshape or not vshape:
        return J
    npord = "F" if order == "column" else "C"
    cols = []
    for j in range(int(np.prod(vshape, dtype=int))):
        idx = np.unravel_index(j, vshape, order=npord) if vshape else ()
        cols.append(np.reshape(J[(...,) + tuple(idx)], -1, order=npord))
    return np.stack(cols, axis=1).reshape(int(np.prod(fshape, dtype=int)), -1)


def _has_index(m) -> bool:
    return isinstance(m, N.Index) or any(_has_index(k) for k in N.children(m))


def _simple_shape(shape) -> tuple | None:
    """The shape to give md.parse, or None where a dim is a product (k·n), which it refuses."""
    return shape if all(isinstance(d, str) for d in shape) else None


def _printed(J, value, what: str, p, counts: collections.Counter, values: dict = VALUES) -> None:
    """Every printed form prints; matrix notation evaluates (and reads back) to ``value``."""
    text = str(J)
    J.latex()
    J.index()
    m = J.notation()
    if _has_index(m):
        counts["index forms"] += 1
        return
    got = notation_eval.evaluate(m, values, SIZES, {})
    _close(np.reshape(got, np.shape(value)), value, f"{what}, printed {text!r},", p, rtol=1e-9)
    counts["printed evaluated"] += 1
    if "where" in text:
        return
    try:
        back = md.parse(text, dialect="matdiff", result_shape=_simple_shape(J.shape), **declarations(J))
    except md.MatdiffError:  # a constant the text does not size (I ⊗ w), or K: refused, not misread
        counts["refused"] += 1
        return
    _close(back.evaluate({v.node.name: values[v.node.name] for v in back.variables}, sizes=SIZES), value, f"{what}, {text!r} read back,", p, rtol=1e-9)
    counts["read back"] += 1


def _generated(J):
    scope: dict = {}
    exec(md.codegen(J, args=ALL, sizes=SIZES), scope)  # noqa: S102 — our own generated code
    return scope["f"](*[VALUES[v.node.name] for v in ALL])


def _check(p: Pair, counts: collections.Counter) -> None:
    _close(p.e.evaluate(_used(p.e), sizes=SIZES), p.f(VALUES), "evaluate", p, rtol=1e-10)
    names = {u.node.name for u in p.e.variables}
    for v in WRT:
        name = v.node.name
        if name not in names:
            continue
        want = _central(p.f, name)
        J = md.jacobian(p.e, v)
        value = J.evaluate(_used(J), sizes=SIZES)
        _close(value, want, f"∂/∂{name}", p, rtol=1e-6)
        q = v.ndim
        den = md.jacobian(p.e, v, layout="denominator")
        _close(den.evaluate(_used(den), sizes=SIZES),
               want.transpose(tuple(range(p.e.ndim, p.e.ndim + q)) + tuple(range(p.e.ndim))),
               f"∂/∂{name} (denominator layout)", p, rtol=1e-6)
        _close(_generated(J), value, f"codegen of ∂/∂{name}", p, rtol=1e-10)
        _printed(J, value, f"∂/∂{name}", p, counts)
        for order in ("column", "row"):
            Jv = md.jacobian(p.e, v, layout="vec", vec=order)
            got = Jv.evaluate(_used(Jv), sizes=SIZES)
            _close(got, _vec_jacobian(want, p.e.ndim, order), f"∂vec/∂vec {name} ({order})", p, rtol=1e-6)
            _printed(Jv, got, f"∂vec/∂vec {name} ({order})", p, counts)
        counts["jacobians"] += 1


@pytest.mark.parametrize("chunk", range(4))
def test_jacobians_of_matrix_and_vector_functions_agree_with_numpy(chunk):
    counts = collections.Counter()
    for p in _pairs()[chunk::4]:
        _check(p, counts)
    assert counts["jacobians"] >= 50, counts
    # matrix notation is evaluated often enough that the printed check is not hollow
    assert counts["printed evaluated"] >= counts["jacobians"] // 2, counts
    assert counts["read back"] >= 10, counts


def test_the_sweep_reaches_every_rule_and_both_variables():
    made = " ".join(p.src for p in _pairs())
    for r in RULES:
        head = r.src.split("{")[0].strip("(")
        assert head in made, r.src
    assert len(_pairs()) >= 200
    kinds = collections.Counter((p.e.ndim, tuple(sorted(u.node.name for u in p.e.variables if u in WRT)))
                                for p in _pairs())
    assert all(kinds[(d, ("X",))] + kinds[(d, ("X", "x"))] > 5 for d in (1, 2)), kinds


@pytest.mark.parametrize("backend, case", [("jax", 0), ("torch", 0), ("torch", 1)])  # JAX's first call
def test_generated_code_of_a_jacobian_runs_in_jax_and_pytorch(backend, case):  # costs ~0.8 s: one case
    pytest.importorskip(backend)
    e, v = ((md.softmax(A @ X, axis=1), X), (md.inv(_dom(X)) @ md.sigmoid(B @ w * x), x))[case]
    J = md.jacobian(e, v)
    want = J.evaluate(_used(J), sizes=SIZES)
    np.testing.assert_allclose(want, _central(lambda env: e.evaluate({k: env[k] for k in _used(e)}, sizes=SIZES), v.node.name),
                               rtol=1e-6, atol=1e-8)
    fn = md.compile(J, backend=backend, args=ALL)
    got = np.asarray(fn(*[VALUES[u.node.name] for u in ALL]), dtype=float)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # JAX computes in float32 by default


# --------------------------------------------------------------------------- random einsum strings

LETTER_DIMS = {"a": "n", "b": "k", "c": "m", "d": "n"}  # a and d share a size: diagonals, traces


def _einsum_case(seed: int):
    """A random einsum over two or three operands of order 1 to 3 (letters may repeat within
    an operand, an operand may be used twice), its matdiff expression, NumPy's value, and the
    tensors and their values."""
    r = random.Random(seed)
    k = r.choice([2, 2, 3])
    specs = []
    for i in range(k):
        if specs and r.random() < 0.35:  # an operand of an earlier one's shape (often the same tensor)
            specs.append("".join(r.choice([c for c in "abcd" if LETTER_DIMS[c] == LETTER_DIMS[p]])
                                 for p in r.choice(specs)))
        else:
            specs.append("".join(r.choice("abcd") for _ in range(r.randint(1, 3))))
    used = sorted(set("".join(specs)))
    out = r.sample(used, r.randint(0, min(3, len(used))))
    spec = ",".join(specs) + ("" if r.random() < 0.15 else "->" + "".join(out))
    tensors, operands = {}, []
    for i, s in enumerate(specs):
        same = [t for t in tensors.values() if t.shape == tuple(LETTER_DIMS[c] for c in s)]
        t = same[0] if same and r.random() < 0.4 else md.tensor(f"T{i}", *[LETTER_DIMS[c] for c in s])
        tensors[t.node.name] = t
        operands.append(t)
    rng = np.random.default_rng(seed)
    values = {name: rng.standard_normal([SIZES[d] for d in t.shape]) for name, t in tensors.items()}
    names = [t.node.name for t in operands]
    return spec, md.einsum(spec, *operands), (lambda env: np.einsum(spec, *[env[nm] for nm in names])), \
        tensors, values


def _central_of(f, values, name):
    base, h = values[name], 1e-6
    out = None
    for idx in np.ndindex(*base.shape):
        d = np.zeros_like(base)
        d[idx] = h
        col = (np.asarray(f({**values, name: base + d})) - np.asarray(f({**values, name: base - d}))) / (2 * h)
        out = np.zeros(col.shape + base.shape) if out is None else out
        out[(...,) + idx] = col
    return out


@pytest.mark.parametrize("chunk", range(2))
def test_random_einsums_and_their_derivatives_agree_with_numpy(chunk):
    counts = collections.Counter()
    for seed in range(chunk, 80, 2):
        spec, e, f, tensors, values = _einsum_case(seed)
        msg = f"einsum({spec!r}, …) = {e}"
        want = f(values)
        case = Pair(e, f, f"einsum({spec!r}, …)")
        np.testing.assert_allclose(e.evaluate(values, sizes=SIZES), want, rtol=1e-10, atol=1e-10, err_msg=msg)
        e.bracket()
        _printed(e, want, "the value", case, counts, values)
        loss = md.sum(md.sin(e)) if e.ndim else md.sin(e)  # a nonlinear scalar of it
        for name, t in tensors.items():
            J = md.jacobian(e, t)
            np.testing.assert_allclose(J.evaluate(values, sizes=SIZES), _central_of(f, values, name),
                                       rtol=1e-6, atol=1e-6, err_msg=f"∂/∂{name} of {msg}")
            _printed(J, J.evaluate(values, sizes=SIZES), f"∂/∂{name}", case, counts, values)
            if e.ndim <= 2 and t.ndim <= 2:
                Jv = md.jacobian(e, t, layout="vec")
                np.testing.assert_allclose(
                    Jv.evaluate(values, sizes=SIZES), _vec_jacobian(_central_of(f, values, name), e.ndim, "column"),
                    rtol=1e-6, atol=1e-6, err_msg=f"∂vec/∂vec {name} of {msg}")
                _printed(Jv, Jv.evaluate(values, sizes=SIZES), f"∂vec/∂vec {name}", case, counts, values)
                counts["vec"] += 1
            g = md.grad(loss, t)
            np.testing.assert_allclose(g.evaluate(values, sizes=SIZES),
                                       _central_of(lambda env: np.sum(np.sin(f(env))), values, name),
                                       rtol=1e-6, atol=1e-6, err_msg=f"∇_{name} Σ sin of {msg}")
            counts["jacobians"] += 1
        scope: dict = {}
        exec(md.codegen(e, args=list(tensors.values()), sizes=SIZES), scope)  # noqa: S102
        np.testing.assert_allclose(scope["f"](*values.values()), want, rtol=1e-10, atol=1e-10, err_msg=msg)
        counts["three operands"] += spec.count(",") == 2
        counts["repeated operand"] += len(tensors) < spec.count(",") + 1
        counts["diagonal"] += any(len(set(s)) < len(s) for s in spec.split("->")[0].split(","))
    assert counts["jacobians"] >= 40 and counts["vec"] >= 15 and counts["printed evaluated"] >= 40, counts
    assert min(counts["three operands"], counts["repeated operand"], counts["diagonal"]) >= 3, counts


# ------------------------------------------------------------------ faults the sweep found

# A vec-layout Jacobian was printed as diag(vec(V))(P ⊗ Q) where two factors share a row axis
# (δ_ip S_iq, the softmax's −S_ij δ_ip S_iq): not a Kronecker product, and the printed value was
# wrong (evaluate, codegen and the 4-index Jacobian were right). recognise._kron counted the
# factors' labels instead of checking each result axis comes from exactly one factor; it now
# falls back to index notation there.


@pytest.mark.parametrize("f, wrt", [(lambda: md.softmax(X, axis=1), X),  # diag(vec(S)) − diag(vec(S))(S ⊗ I)
                                    (lambda: md.hadamard(A, md.tanh(x), [1], [0]), x)],  # …((1 − tanh²(x)) ⊗ I)
                         ids=["softmax(X, axis=1)", "A diag(tanh x)"])
def test_a_vec_jacobian_whose_factors_share_a_row_axis_prints_its_value(f, wrt):
    J = md.jacobian(f(), wrt, layout="vec")
    value = J.evaluate(_used(J), sizes=SIZES)
    name = wrt.node.name
    p = Pair(f(), lambda env: f().evaluate({k: env[k] for k in _used(f())}, sizes=SIZES), str(f()))
    _close(value, _vec_jacobian(_central(p.f, name), p.e.ndim, "column"), "∂vec/∂vec", p, rtol=1e-6)
    m = J.notation()
    if not _has_index(m):  # index notation is a right answer too
        _close(notation_eval.evaluate(m, VALUES, SIZES, {}), value, f"printed {J}", p, rtol=1e-9)


def test_the_notation_evaluator_reads_every_factor_of_a_kronecker_product():
    J = md.jacobian(md.einsum("ij,kj->ik", X, x @ x.T), X, layout="vec")  # ∂vec(X xxᵀ)/∂vec(X)
    assert str(J) == "x ⊗ xᵀ ⊗ I"
    value = J.evaluate(_used(J), sizes=SIZES)
    xv = VALUES["x"]
    np.testing.assert_allclose(value, np.kron(np.kron(xv[:, None], xv[None, :]), np.eye(N_)), rtol=1e-12)
    np.testing.assert_allclose(notation_eval.evaluate(J.notation(), VALUES, SIZES, {}), value, rtol=1e-12)
