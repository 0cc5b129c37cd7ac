"""An independent oracle for values: random expressions built in pairs, the matdiff expression
and a NumPy function computing the same value directly, by one mirror grammar (each rule makes
both). The property tests compare derivatives with finite differences of matdiff's own
values, so a wrong value (from evaluation or from a rewrite of simplify) goes unseen there;
here every value is NumPy's.

Leaves: scalars, vectors of n and k, n × n matrices (general and symmetric), an n × k matrix,
and constants — md.ones of every shape, md.eye, md.zeros, md.unit and numbers. Arguments of
inv, solve, det and logdet are 5I + tanh(M) (eigenvalues with real part ≥ 2 at n = 3).

For each expression, at n = 3 and k = 2:
1. ``evaluate`` gives NumPy's value;
2. the code of ``md.codegen`` gives it;
3. ``str(e)`` read back by ``md.parse`` (matdiff dialect) gives it;
4. for a scalar, ``md.grad`` by each variable matches central differences of the NumPy
   function, and the gradient's text read back gives the gradient's value.

A text that does not fix the size of a constant in it (‖t1 + 1‖², tr(A ⊗ 1), 1ᵀsin(1/n)) is
refused by the reader, never read as another value; the tests at the end pin the texts the
sweep found read back wrong before, each minimised. No wrong value of evaluate, codegen or a
gradient is known here."""
from __future__ import annotations

import collections
import functools
import random
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import matdiff as md
from matdiff.expr import lift
from matdiff.parse import declarations

N_, K_ = 3, 2
SIZES = {"n": N_, "k": K_}
SEEDS = range(400)

s, t = md.scalar("s"), md.scalar("t")
x, y, w = md.vector("x", "n"), md.vector("y", "n"), md.vector("w", "k")
A, B = md.matrix("A", "n", "n"), md.matrix("B", "n", "n")
S = md.matrix("S", "n", "n", symmetric=True)
X = md.matrix("X", "n", "k")
VARIABLES = [s, t, x, y, w, A, B, S, X]


def _values() -> dict:
    rng = np.random.default_rng(20261207)
    out = {}
    for v in VARIABLES:
        shape = tuple(SIZES[d] for d in v.shape)
        a = rng.standard_normal(shape) * 0.8
        out[v.node.name] = (a + a.T) / 2 if v.node.name == "S" else a
    return out


VALUES = _values()


@dataclass(frozen=True)
class Pair:
    e: md.Expr  # the expression
    f: Callable  # its value from a dict of NumPy arrays, computed by NumPy alone
    src: str  # how it was built, for the failure message


def _leaf(e, value, src: str) -> Pair:
    return Pair(e, lambda env: value, src)


def _var(v) -> Pair:
    name = v.node.name
    return Pair(v, lambda env: env[name], name)


ONE = np.ones
VARIABLE_LEAVES = {"S": [_var(s), _var(t)], "Vn": [_var(x), _var(y)], "Vk": [_var(w)],
                   "Mnn": [_var(A), _var(B), _var(S)], "Mnk": [_var(X)]}
CONSTANT_LEAVES = {
    "S": [_leaf(lift(2.5), 2.5, "2.5"), _leaf(lift(-1), -1.0, "-1"), _leaf(md.ones(), 1.0, "md.ones()")],
    "Vn": [_leaf(md.ones("n"), ONE(N_), "md.ones('n')"), _leaf(md.zeros("n"), np.zeros(N_), "md.zeros('n')"),
           _leaf(md.unit("n", 1), np.eye(N_)[1], "md.unit('n', 1)")],
    "Vk": [_leaf(md.ones("k"), ONE(K_), "md.ones('k')"), _leaf(md.zeros("k"), np.zeros(K_), "md.zeros('k')")],
    "Mnn": [_leaf(md.ones("n", "n"), ONE((N_, N_)), "md.ones('n', 'n')"), _leaf(md.eye("n"), np.eye(N_), "md.eye('n')"),
            _leaf(md.zeros("n", "n"), np.zeros((N_, N_)), "md.zeros('n', 'n')")],
    "Mnk": [_leaf(md.ones("n", "k"), ONE((N_, K_)), "md.ones('n', 'k')"),
            _leaf(md.zeros("n", "k"), np.zeros((N_, K_)), "md.zeros('n', 'k')")],
}
KINDS = list(VARIABLE_LEAVES)


@dataclass(frozen=True)
class Rule:
    kind: str  # the kind it makes
    args: tuple  # the kinds of its arguments
    md_: Callable  # the matdiff expression from the arguments' expressions
    np_: Callable  # NumPy's value from the arguments' values
    src: str  # a template for the message


def _sig(u):
    return 1 / (1 + np.exp(-u))


def _softmax(u, axis=0):
    z = np.exp(u - u.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def _lse(u, axis=None):
    m = u.max(axis=axis, keepdims=True)
    return (np.log(np.exp(u - m).sum(axis=axis, keepdims=True)) + m).squeeze(axis=axis)


def _dom(m):  # well conditioned: eigenvalues with real part ≥ 5 − ‖tanh M‖₂ ≥ 2 at n = 3
    return md.tanh(m) + 5 * md.eye("n")


def _np_dom(m):
    return np.tanh(m) + 5 * np.eye(N_)


# element-wise functions: (matdiff, NumPy, name); bounded where they would explode
FUNCTIONS = [
    (md.tanh, np.tanh, "tanh"), (md.sigmoid, _sig, "sigmoid"), (md.softplus, lambda u: np.logaddexp(0, u), "softplus"),
    (lambda e: md.exp(md.tanh(e)), lambda u: np.exp(np.tanh(u)), "exp∘tanh"),
    (lambda e: md.log(1 + e * e), lambda u: np.log(1 + u * u), "log(1+u²)"),
    (lambda e: md.sqrt(1 + e * e), lambda u: np.sqrt(1 + u * u), "sqrt(1+u²)"),
    (md.sin, np.sin, "sin"), (lambda e: md.cos(md.tanh(e)), lambda u: np.cos(np.tanh(u)), "cos∘tanh"),
    (md.arctan, np.arctan, "arctan"), (lambda e: md.log1p(md.sigmoid(e)), lambda u: np.log1p(_sig(u)), "log1p∘σ"),
    (lambda e: md.expm1(md.tanh(e)), lambda u: np.expm1(np.tanh(u)), "expm1∘tanh"),
    (lambda e: md.sinh(md.tanh(e)), lambda u: np.sinh(np.tanh(u)), "sinh∘tanh"),
    (lambda e: md.cosh(md.tanh(e)), lambda u: np.cosh(np.tanh(u)), "cosh∘tanh"),
    (lambda e: md.relu(e) * e, lambda u: np.maximum(u, 0) * u, "relu(u)u"),
    (lambda e: md.abs(e) * e, lambda u: np.abs(u) * u, "|u|u"),
    (lambda e: md.sign(e) * e ** 2, lambda u: np.sign(u) * u ** 2, "sign(u)u²"),
    (lambda e: md.step(e) * e, lambda u: (u > 0) * u, "step(u)u"),
    (lambda e: e ** 2, lambda u: u ** 2, "u²"), (lambda e: e ** 3, lambda u: u ** 3, "u³"),
    (lambda e: (1 + e * e) ** -1.5, lambda u: (1 + u * u) ** -1.5, "(1+u²)^-1.5"),
    (lambda e: 1 / (1 + e * e), lambda u: 1 / (1 + u * u), "1/(1+u²)"),
]


def _common(kind: str) -> list:
    k = (kind,)
    rules = [
        Rule(kind, k * 2, lambda a, b: a + b, lambda a, b: a + b, "({} + {})"),
        Rule(kind, k * 2, lambda a, b: a - b, lambda a, b: a - b, "({} - {})"),
        Rule(kind, k * 2, lambda a, b: a * b, lambda a, b: a * b, "({} * {})"),
        Rule(kind, k, lambda a: a + a, lambda a: a + a, "(lambda u: u + u)({})"),
        Rule(kind, k, lambda a: a - a, lambda a: a - a, "(lambda u: u - u)({})"),
        Rule(kind, k, lambda a: a * a, lambda a: a * a, "(lambda u: u * u)({})"),
        Rule(kind, k, lambda a: -0.5 * a, lambda a: -0.5 * a, "(-0.5 * {})"),
        Rule(kind, k, lambda a: 3 * a - 2, lambda a: 3 * a - 2, "(3 * {} - 2)"),
        Rule(kind, k, lambda a: 1 - a, lambda a: 1 - a, "(1 - {})"),
        Rule(kind, k, lambda a: a / 4, lambda a: a / 4, "({} / 4)"),
        Rule(kind, k * 2, lambda a, b: a / (1 + b * b), lambda a, b: a / (1 + b * b), "({} / (1 + {}**2))"),
        Rule(kind, ("S",) + k, lambda c, a: c * a, lambda c, a: c * a, "({} * {})"),
        Rule(kind, k + ("S",), lambda a, c: a + c, lambda a, c: a + c, "({} + {})"),
    ]
    rules += [Rule(kind, k, lambda a, f=f: f(a), lambda a, g=g: g(a), name + "({})") for f, g, name in FUNCTIONS]
    return rules


SPECIFIC = [
    # scalars
    Rule("S", ("Mnn",), md.trace, np.trace, "md.trace({})"),
    Rule("S", ("Vn", "Vn"), lambda a, b: a.T @ b, lambda a, b: a @ b, "({}.T @ {})"),
    Rule("S", ("Mnk",), md.sum, np.sum, "md.sum({})"),
    Rule("S", ("Mnn",), md.sum, np.sum, "md.sum({})"),
    Rule("S", ("Vk",), lambda a: md.norm(a) ** 2, lambda a: a @ a, "md.norm({})**2"),
    Rule("S", ("Vn",), lambda a: md.sqrt(1 + md.norm(a) ** 2), lambda a: np.sqrt(1 + a @ a), "sqrt(1 + md.norm({})**2)"),
    Rule("S", ("Mnn",), lambda a: md.norm(a) ** 2, lambda a: (a * a).sum(), "md.norm({})**2"),
    Rule("S", ("Mnk", "Mnk"), md.dot, lambda a, b: (a * b).sum(), "md.dot({}, {})"),
    Rule("S", ("Vn",), md.logsumexp, _lse, "md.logsumexp({})"),
    Rule("S", ("Mnn",), lambda a: md.logdet(_dom(a)), lambda a: np.linalg.slogdet(_np_dom(a))[1], "md.logdet(dom({}))"),
    Rule("S", ("Mnn",), lambda a: md.det(_dom(a)) / 100, lambda a: np.linalg.det(_np_dom(a)) / 100, "md.det(dom({}))/100"),
    Rule("S", ("Mnk",), lambda a: md.sum(md.logsumexp(a, axis=1)), lambda a: _lse(a, 1).sum(),
         "md.sum(md.logsumexp({}, axis=1))"),
    Rule("S", ("Vn", "Mnk", "Vk"), lambda a, m, b: a.T @ m @ b, lambda a, m, b: a @ m @ b, "({}.T @ {} @ {})"),
    Rule("S", ("Mnn", "Vk"), lambda m, a: md.sum(md.kron(m, a)), lambda m, a: np.kron(m, a[:, None]).sum(),
         "md.sum(md.kron({}, {}))"),
    Rule("S", ("Mnn", "Mnn"), lambda a, b: md.trace(md.kron(a, b)), lambda a, b: np.trace(np.kron(a, b)),
         "md.trace(md.kron({}, {}))"),
    Rule("S", ("Vn",), md.mean, np.mean, "md.mean({})"),
    Rule("S", ("Vn", "Vn"), lambda a, b: md.trace(a @ b.T), lambda a, b: np.trace(np.outer(a, b)), "md.trace({} @ {}.T)"),
    Rule("S", ("Vn", "Vn", "Mnn"), lambda a, b, m: md.trace(md.outer(a, b) @ m),
         lambda a, b, m: np.trace(np.outer(a, b) @ m), "md.trace(md.outer({}, {}) @ {})"),
    Rule("S", ("Mnn", "Mnn"), lambda a, b: md.trace(a @ b), lambda a, b: np.trace(a @ b), "md.trace({} @ {})"),
    Rule("S", ("Mnk", "Mnk"), lambda a, b: md.trace(a.T @ b), lambda a, b: np.trace(a.T @ b), "md.trace({}.T @ {})"),
    Rule("S", ("Vn", "Mnn", "Vn"), lambda a, m, b: a.T @ md.inv(_dom(m)) @ b,
         lambda a, m, b: a @ np.linalg.inv(_np_dom(m)) @ b, "({}.T @ md.inv(dom({})) @ {})"),
    Rule("S", ("Mnn", "Vn"), lambda m, a: md.sum(m, axis=0) @ a, lambda m, a: m.sum(0) @ a, "(md.sum({}, axis=0) @ {})"),
    Rule("S", ("Vn",), lambda a: md.sum(md.diag(a)), lambda a: np.diag(a).sum(), "md.sum(md.diag({}))"),
    Rule("S", ("Mnn",), lambda m: md.trace(md.matrix_power(m, 3)), lambda m: np.trace(m @ m @ m),
         "md.trace(md.matrix_power({}, 3))"),
    Rule("S", ("S",), lambda a: 1 / (2 + md.sin(a)), lambda a: 1 / (2 + np.sin(a)), "1/(2 + md.sin({}))"),
    Rule("S", ("Mnn", "Mnk", "Vk"), lambda m, a, b: md.sum(md.hadamard(m @ a, b, [1], [0])),
         lambda m, a, b: ((m @ a) * b[None, :]).sum(), "md.sum(md.hadamard({} @ {}, {}, [1], [0]))"),
    Rule("S", ("Vn", "Vn"), lambda a, b: md.sum(md.softmax(a) * b), lambda a, b: (_softmax(a) * b).sum(),
         "md.sum(md.softmax({}) * {})"),
    Rule("S", ("Mnn",), lambda m: md.einsum("ii->", m), np.trace, "md.einsum('ii->', {})"),
    Rule("S", ("Vn",), lambda a: md.trace(md.diag(a)), np.sum, "md.trace(md.diag({}))"),
    Rule("S", ("Mnn",), lambda m: md.sum(md.softmax(m, axis=1)), lambda m: _softmax(m, 1).sum(),
         "md.sum(md.softmax({}, axis=1))"),
    Rule("S", ("Mnn", "Mnn"), lambda a, b: md.tensordot(a, b, 2), lambda a, b: (a * b).sum(), "md.tensordot({}, {}, 2)"),
    Rule("S", ("Mnn", "Mnn"), lambda a, b: md.logdet(_dom(a) @ _dom(b)),
         lambda a, b: np.linalg.slogdet(_np_dom(a) @ _np_dom(b))[1], "md.logdet(dom({}) @ dom({}))"),
    Rule("S", ("Mnn",), lambda a: md.det(md.inv(_dom(a))), lambda a: np.linalg.det(np.linalg.inv(_np_dom(a))),
         "md.det(md.inv(dom({})))"),
    # vectors of n
    Rule("Vn", ("Mnn", "Vn"), lambda m, a: m @ a, lambda m, a: m @ a, "({} @ {})"),
    Rule("Vn", ("Mnn", "Vn"), lambda m, a: m.T @ a, lambda m, a: m.T @ a, "({}.T @ {})"),
    Rule("Vn", ("Mnk", "Vk"), lambda m, a: m @ a, lambda m, a: m @ a, "({} @ {})"),
    Rule("Vn", ("Vn",), md.softmax, _softmax, "md.softmax({})"),
    Rule("Vn", ("Vn",), lambda a: md.log(md.softmax(a)), lambda a: np.log(_softmax(a)), "md.log(md.softmax({}))"),
    Rule("Vn", ("Mnn",), md.diag, np.diag, "md.diag({})"),
    Rule("Vn", ("Mnk",), lambda m: md.sum(m, axis=1), lambda m: m.sum(1), "md.sum({}, axis=1)"),
    Rule("Vn", ("Mnn",), lambda m: md.sum(m, axis=0).T, lambda m: m.sum(0), "md.sum({}, axis=0).T"),
    Rule("Vn", ("Mnn",), lambda m: md.mean(m, axis=1), lambda m: m.mean(1), "md.mean({}, axis=1)"),
    Rule("Vn", ("Mnn",), lambda m: md.logsumexp(m, axis=1), lambda m: _lse(m, 1), "md.logsumexp({}, axis=1)"),
    Rule("Vn", ("Mnn", "Vn"), lambda m, a: md.inv(_dom(m)) @ a, lambda m, a: np.linalg.solve(_np_dom(m), a),
         "(md.inv(dom({})) @ {})"),
    Rule("Vn", ("Mnn", "Vn"), lambda m, a: md.solve(_dom(m), a), lambda m, a: np.linalg.solve(_np_dom(m), a),
         "md.solve(dom({}), {})"),
    Rule("Vn", ("Mnn", "Mnk", "Vk"), lambda m, a, b: md.einsum("ij,jk,k->i", m, a, b),
         lambda m, a, b: np.einsum("ij,jk,k->i", m, a, b), "md.einsum('ij,jk,k->i', {}, {}, {})"),
    Rule("Vn", ("S", "Vn"), lambda c, a: c * md.ones("n") + a, lambda c, a: c + a, "({} * md.ones('n') + {})"),
    Rule("Vn", ("Vn",), lambda a: md.sum(a) * md.ones("n"), lambda a: a.sum() * np.ones(N_), "(md.sum({}) * md.ones('n'))"),
    Rule("Vn", ("Vn", "Vn"), lambda a, b: md.diag(a @ b.T), lambda a, b: np.diag(np.outer(a, b)), "md.diag({} @ {}.T)"),
    # vectors of k
    Rule("Vk", ("Mnk", "Vn"), lambda m, a: m.T @ a, lambda m, a: m.T @ a, "({}.T @ {})"),
    Rule("Vk", ("Mnk",), lambda m: md.sum(m, axis=0).T, lambda m: m.sum(0), "md.sum({}, axis=0).T"),
    Rule("Vk", ("Mnk",), lambda m: md.mean(m, axis=0).T, lambda m: m.mean(0), "md.mean({}, axis=0).T"),
    Rule("Vk", ("Vk",), md.softmax, _softmax, "md.softmax({})"),
    Rule("Vk", ("Mnk", "Mnn", "Vn"), lambda a, m, b: a.T @ m @ b, lambda a, m, b: a.T @ m @ b, "({}.T @ {} @ {})"),
    Rule("Vk", ("Mnk", "Vn"), lambda m, a: md.dot(m, a, [0], [0]), lambda m, a: m.T @ a, "md.dot({}, {}, [0], [0])"),
    # n × n matrices
    Rule("Mnn", ("Mnn", "Mnn"), lambda a, b: a @ b, lambda a, b: a @ b, "({} @ {})"),
    Rule("Mnn", ("Mnn",), lambda a: a.T, lambda a: a.T, "{}.T"),
    Rule("Mnn", ("Mnn", "Mnn"), lambda a, b: (a @ b).T, lambda a, b: (a @ b).T, "({} @ {}).T"),
    Rule("Mnn", ("Vn", "Vn"), lambda a, b: a @ b.T, np.outer, "({} @ {}.T)"),
    Rule("Mnn", ("Vn",), md.diag, np.diag, "md.diag({})"),
    Rule("Mnn", ("Mnk", "Mnk"), lambda a, b: a @ b.T, lambda a, b: a @ b.T, "({} @ {}.T)"),
    Rule("Mnn", ("Mnn",), lambda m: md.inv(_dom(m)), lambda m: np.linalg.inv(_np_dom(m)), "md.inv(dom({}))"),
    Rule("Mnn", ("Mnn",), lambda m: md.matrix_power(_dom(m), -2) * 4,
         lambda m: np.linalg.matrix_power(np.linalg.inv(_np_dom(m)), 2) * 4, "md.matrix_power(dom({}), -2) * 4"),
    Rule("Mnn", ("Mnn",), lambda m: md.matrix_power(m, 2), lambda m: m @ m, "md.matrix_power({}, 2)"),
    Rule("Mnn", ("Mnn",), lambda m: md.matrix_power(m, 0), lambda m: np.eye(N_), "md.matrix_power({}, 0)"),
    Rule("Mnn", ("Mnn",), lambda m: md.softmax(m, axis=0), lambda m: _softmax(m, 0), "md.softmax({}, axis=0)"),
    Rule("Mnn", ("Mnn",), lambda m: md.softmax(m, axis=1), lambda m: _softmax(m, 1), "md.softmax({}, axis=1)"),
    Rule("Mnn", ("Mnn", "Vn"), lambda m, a: md.hadamard(m, a, [1], [0]), lambda m, a: m * a[None, :],
         "md.hadamard({}, {}, [1], [0])"),
    Rule("Mnn", ("Mnn", "Mnn"), lambda m, a: md.det(_dom(m)) * a / 100, lambda m, a: np.linalg.det(_np_dom(m)) * a / 100,
         "(md.det(dom({})) * {} / 100)"),
    Rule("Mnn", ("Mnn",), lambda m: m + m.T, lambda m: m + m.T, "(lambda u: u + u.T)({})"),
    Rule("Mnn", ("Mnn",), lambda m: md.expm(md.tanh(m) / 2), lambda m: _expm(np.tanh(m) / 2), "md.expm(tanh({})/2)"),
    Rule("Mnn", ("S",), lambda c: c * md.eye("n"), lambda c: c * np.eye(N_), "({} * md.eye('n'))"),
    Rule("Mnn", ("Mnn",), lambda m: md.diag(md.diag(m)), lambda m: np.diag(np.diag(m)), "md.diag(md.diag({}))"),
    Rule("Mnn", ("Mnn", "Mnn"), lambda a, b: md.inv(_dom(a)) @ _dom(a) @ b,
         lambda a, b: np.linalg.inv(_np_dom(a)) @ _np_dom(a) @ b, "(lambda d: md.inv(d) @ d)(dom({})) @ {}"),
    Rule("Mnn", ("Mnn",), lambda m: m * md.eye("n"), lambda m: m * np.eye(N_), "({} * md.eye('n'))"),
    Rule("Mnn", ("Mnn",), lambda m: md.inv(_dom(m)).T, lambda m: np.linalg.inv(_np_dom(m)).T, "md.inv(dom({})).T"),
    Rule("Mnn", ("Mnn", "Mnn"), lambda a, b: md.tensordot(a, b, 1), lambda a, b: a @ b, "md.tensordot({}, {}, 1)"),
    # n × k matrices
    Rule("Mnk", ("Mnn", "Mnk"), lambda a, b: a @ b, lambda a, b: a @ b, "({} @ {})"),
    Rule("Mnk", ("Vn", "Vk"), lambda a, b: a @ b.T, np.outer, "({} @ {}.T)"),
    Rule("Mnk", ("Vn", "Vk"), md.outer, np.outer, "md.outer({}, {})"),
    Rule("Mnk", ("Vn", "Vk"), lambda a, b: md.kron(a, b.T), lambda a, b: np.kron(a[:, None], b[None, :]),
         "md.kron({}, {}.T)"),
    Rule("Mnk", ("Mnk",), lambda m: md.softmax(m, axis=1), lambda m: _softmax(m, 1), "md.softmax({}, axis=1)"),
    Rule("Mnk", ("Mnk", "Vk"), lambda m, a: m * a, lambda m, a: m * a, "({} * {})"),
    Rule("Mnk", ("Mnk", "Vn"), lambda m, a: md.hadamard(m, a, [0], [0]), lambda m, a: m * a[:, None],
         "md.hadamard({}, {}, [0], [0])"),
    Rule("Mnk", ("Mnn", "Mnk"), lambda m, a: md.solve(_dom(m), a), lambda m, a: np.linalg.solve(_np_dom(m), a),
         "md.solve(dom({}), {})"),
    Rule("Mnk", ("Mnk", "Mnk", "Mnk"), lambda a, b, c: a @ (b.T @ c), lambda a, b, c: a @ (b.T @ c), "({} @ ({}.T @ {}))"),
]


def _expm(m):
    """exp(M) by its Taylor series (‖M‖ < 2 here: entries of tanh(·)/2); an eigen-decomposition
    would be wrong where M is defective, as step(B) ⊙ B often is."""
    out = term = np.eye(len(m))
    for k in range(1, 30):
        term = term @ m / k
        out = out + term
    return out


RULES = {kind: _common(kind) + [r for r in SPECIFIC if r.kind == kind] for kind in KINDS}


def _random_pair(kind: str, depth: int, r: random.Random, constants: float) -> Pair:
    """A random pair of a kind; a leaf is a constant with probability ``constants``."""
    if depth == 0 or r.random() < 0.25:
        return r.choice(CONSTANT_LEAVES[kind] if r.random() < constants else VARIABLE_LEAVES[kind])
    rule = r.choice(RULES[kind])
    args = [_random_pair(a, depth - 1, r, constants) for a in rule.args]
    fs = [a.f for a in args]
    return Pair(rule.md_(*[a.e for a in args]), lambda env: rule.np_(*[f(env) for f in fs]),
                rule.src.format(*[a.src for a in args]))


@functools.cache
def _pairs() -> list:
    """The seeded expressions, half of them rich in constants (products and functions of
    ones, identities and zeros are where rewrites have gone wrong)."""
    out = []
    for seed in SEEDS:
        r = random.Random(seed)
        kind = r.choice(["S", "S", "S", "Vn", "Vk", "Mnn", "Mnk"])
        out.append(_random_pair(kind, r.randint(1, 4), r, r.choice([0.85, 0.4])))
    return out


def _close(got, want, what: str, p: Pair, rtol: float = 1e-10) -> None:
    want = np.asarray(want, dtype=float)
    got = np.asarray(got, dtype=float).reshape(want.shape)
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    if not np.allclose(got, want, rtol=rtol, atol=rtol * scale):  # the message only then: printing costs
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=f"{what} of {p.src} = {p.e}")


def _used(e) -> dict:
    names = {v.node.name for v in e.variables}
    return {k: v for k, v in VALUES.items() if k in names}


def _generated(e):
    """The value of md.codegen's NumPy code, every variable an argument (so each dim is fixed)."""
    scope: dict = {}
    exec(md.codegen(e, args=VARIABLES, sizes=SIZES), scope)  # noqa: S102 — our own generated code
    return scope["f"](*[VALUES[v.node.name] for v in VARIABLES])


# a constant whose size only its use fixes: 1, 0, I, eₖ (not a digit of a number)
CONSTANT = re.compile(r"(?<![\d.])[01](?![\d.])|11ᵀ|I(?![A-Za-z_])|e[₀-₉]")  # sI, 5I and I


def _read_back(e) -> tuple:
    """str(e) read by the matdiff dialect, and how it went: "read"; "refused" where a constant
    in the text has no size the text fixes (refused, never misread); "skipped" for text that
    is for reading only (index notation, Fréchet derivatives, where-clauses)."""
    text = str(e)
    if "[" in text or "Σ" in text or "where" in text or "L_" in text:
        return None, "skipped"
    try:
        return md.parse(text, dialect="matdiff", result_shape=e.shape, **declarations(e)), "read"
    except md.MatdiffError as err:
        assert CONSTANT.search(text), (text, err)  # a text of variables alone is always read
        return None, "refused"


def _central(p: Pair, name: str) -> np.ndarray:
    """∂f/∂name of the NumPy function, by central differences entry by entry (symmetric pairs
    of entries moved together for S, and halved off the diagonal, so that ⟨G, E⟩ is read)."""
    base = VALUES[name]
    h = 1e-6
    out = np.zeros_like(base, dtype=float)
    for idx in np.ndindex(*np.shape(base)):
        d = np.zeros_like(base, dtype=float)
        d[idx] = h
        if name == "S":
            d[idx[::-1]] = h
        plus, minus = dict(VALUES), dict(VALUES)
        plus[name], minus[name] = base + d, base - d
        out[idx] = (float(p.f(plus)) - float(p.f(minus))) / (2 * h)
        if name == "S" and idx[0] != idx[1]:
            out[idx] /= 2
    return out


def _check(p: Pair, counts: collections.Counter) -> None:
    want = p.f(VALUES)
    _close(p.e.evaluate(_used(p.e), sizes=SIZES), want, "evaluate", p)
    _close(_generated(p.e), want, "codegen", p)
    back, how = _read_back(p.e)
    counts[how] += 1
    if back is not None:
        _close(back.evaluate(_used(back), sizes=SIZES), want, f"read back from {str(p.e)!r}", p)
    if p.e.ndim != 0:
        return
    for v in p.e.variables:
        g = md.grad(p.e, v)
        value = np.asarray(g.evaluate(_used(g), sizes=SIZES), dtype=float)
        if v.node.name == "S":
            value = (value + value.T) / 2  # the symmetric gradient, whichever convention
        _close(value, _central(p, v.node.name), f"∇_{v.node.name}", p, rtol=1e-5)
        counts["gradients"] += 1
        back, how = _read_back(g)
        counts[how] += 1
        if back is not None:
            _close(back.evaluate(_used(back), sizes=SIZES), value if v.node.name != "S" else
                   g.evaluate(_used(g), sizes=SIZES), f"∇_{v.node.name} = {g} read back", p)


@pytest.mark.parametrize("chunk", range(6))
def test_values_codegen_read_back_and_gradients_agree_with_numpy(chunk):
    counts = collections.Counter()
    for p in _pairs()[chunk::6]:
        _check(p, counts)
    # most texts are read back: refusals and skips do not hollow the check out
    assert counts["read"] >= 3 * (counts["refused"] + counts["skipped"]), counts
    assert counts["gradients"] >= 8, counts


def test_the_sweep_reaches_every_rule_and_constant():
    """Guards against a rule list silently shrinking: every rule and leaf can be drawn."""
    assert sum(len(r) for r in RULES.values()) >= 150
    made = {p.src for p in _pairs()}
    for c in ("md.ones('n', 'n')", "md.eye('n')", "md.zeros('n', 'k')", "md.ones('k')", "md.unit('n', 1)"):
        assert any(c in m for m in made), c


# ------------------------------------------------------------------ faults the sweep found
# Each is a printed text that the matdiff dialect read as a different value (or refused though
# its use fixes every size): it reads back with its value now, or is refused where the text does
# not fix a constant's size. The value, codegen and gradients here are right.


def _read_value(e):
    """The value of str(e) read back by the matdiff dialect, or None where it is refused."""
    try:
        back = md.parse(str(e), dialect="matdiff", result_shape=e.shape, **declarations(e))
    except md.MatdiffError:
        return None
    return back.evaluate(_used(back), sizes=SIZES)


def test_a_kronecker_product_with_ones_reads_back_with_its_value_or_is_refused():
    J = md.ones("n", "n")
    for e, want in ((md.trace(md.kron(A, J)), np.trace(np.kron(VALUES["A"], np.ones((N_, N_))))),  # 3 tr A
                    (md.trace(md.kron(md.sqrt(2 * J), B)), np.sqrt(2) * N_ * np.trace(VALUES["B"]))):
        assert CONSTANT.search(str(e)) and "⊗" in str(e)  # "tr(A ⊗ 1 ⊗ 1ᵀ)", "tr(√(2·1) ⊗ B)"
        np.testing.assert_allclose(e.evaluate(_used(e), sizes=SIZES), want, rtol=1e-12)
        got = _read_value(e)
        if got is not None:  # a refusal is right too: the text does not say how long 1 is
            np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=str(e))  # got tr(A), √2 tr(B)


def test_a_norm_over_ones_reads_back_with_its_value_or_is_refused():
    xv, tv, one = VALUES["x"], VALUES["t"], np.ones(N_)
    for e, want in ((md.norm(md.sin(x @ md.ones("n").T)) ** 2, np.linalg.norm(np.sin(np.outer(xv, one))) ** 2),
                    (md.norm(t * md.ones("n") + 1) ** 2, np.linalg.norm(tv * one + 1) ** 2),
                    (md.norm(md.sinh(0.5 * md.ones("n"))) ** 2, np.linalg.norm(np.sinh(0.5 * one)) ** 2),
                    (md.norm(md.exp(md.tanh(md.ones("n", "k")))) ** 2, N_ * K_ * np.exp(2 * np.tanh(1.0)))):
        assert "‖" in str(e)  # ‖sin(x1ᵀ)‖_F², ‖t1 + 1‖², ‖sinh((1/2)1)‖², ‖exp(0.76…·1)‖_F²
        np.testing.assert_allclose(e.evaluate(_used(e), sizes=SIZES), want, rtol=1e-12)
        got = _read_value(e)
        if got is not None:
            np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=str(e))  # got 1/n (1/(nk)) of it


def test_the_softmax_of_a_constant_vector_over_n_reads_back():
    e = x.T @ md.softmax(md.mean(md.eye("n"), axis=1))  # softmax(1/n)ᵀx = mean of x
    assert str(e) == "softmax(n⁻¹·1)ᵀx"  # printed softmax(1/n)ᵀx, refused: 1/n reads as a number
    want = VALUES["x"].mean()
    np.testing.assert_allclose(e.evaluate(_used(e), sizes=SIZES), want, rtol=1e-12)
    back = md.parse(str(e), dialect="matdiff", result_shape=e.shape, **declarations(e))
    np.testing.assert_allclose(back.evaluate(_used(back), sizes=SIZES), want, rtol=1e-12)


def test_the_vector_1_over_n_inside_a_function_reads_back_with_its_value_or_is_refused():
    e = md.sum(md.sin(md.mean(md.eye("n"), axis=1)))  # Σᵢ sin(1/n) = n sin(1/n)
    assert str(e) == "1ᵀsin(n⁻¹·1)"  # printed 1ᵀsin(1/n), read as sin(1/n)
    want = N_ * np.sin(1 / N_)
    np.testing.assert_allclose(e.evaluate(sizes=SIZES), want, rtol=1e-12)
    got = _read_value(e)
    if got is not None:
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=str(e))  # got sin(1/n)


def test_the_diagonal_of_a_constant_matrix_reads_back_with_its_value_or_is_refused():
    J, K = md.ones("n", "n"), md.ones("n", "k")
    e = md.hadamard(K, md.diag(md.expm1(md.tanh(J))), [0], [0]).T @ md.unit("n", 1)  # diag(d) K, row e₂: d₂ 1
    assert str(e) == "(diag(expm1(0.7615941559557649·11ᵀ))ᵀe₂)1"  # was read as expm1(c·1) ⊙ e₂
    want = np.expm1(np.tanh(1.0)) * np.ones(K_)
    np.testing.assert_allclose(e.evaluate(sizes=SIZES), want, rtol=1e-12)
    # no variable gives the n of 11ᵀ (e₂ does not): refused under its first 1, which was read
    # as the vector 1 and then as the number (the caret under 1ᵀ)
    with pytest.raises(md.ParseError, match="the size of this 1 is not fixed by its use") as info:
        md.parse(str(e), dialect="matdiff", result_shape=e.shape, **declarations(e))
    assert info.value.column == str(e).index("11ᵀ")


def test_the_diagonal_of_an_outer_product_of_ones_reads_back_with_its_value():
    """diag of c·11ᵀ, x1ᵀ, 1xᵀ or 11ᵀXᵀ under a function: the argument is a square matrix (an
    outer product has no dim 1), so diag gives a vector; it was read as the diagonal matrix of a
    vector (refused, or diag(sin(x)) where the value is sin(x))."""
    J, K = md.ones("n", "n"), md.ones("n", "k")
    xv, Xv, c = VALUES["x"], VALUES["X"], np.expm1(np.tanh(1.0))
    for e, want in ((md.diag(md.expm1(md.tanh(J))).T @ x, c * xv.sum()),  # diag(expm1(c·11ᵀ))ᵀx
                    (md.hadamard(K, md.diag(md.expm1(md.tanh(J))), [0], [0]).T @ x,  # (…ᵀx)1: the
                     c * xv.sum() * np.ones(K_)),  # result alone sizes this 1, so result_shape
                    (md.diag(md.sin(x @ md.ones("n").T)), np.sin(xv)),  # diag(sin(x1ᵀ))
                    (md.diag(md.sin(md.ones("n") @ x.T)), np.sin(xv)),  # diag(sin(1xᵀ))
                    (md.diag(md.sin(K @ X.T)), np.sin(Xv.sum(axis=1)))):  # diag(sin(11ᵀXᵀ))
        assert re.search(r"diag\(\w+\(.*(11ᵀ|x1ᵀ|1xᵀ)", str(e)), str(e)
        np.testing.assert_allclose(e.evaluate(_used(e), sizes=SIZES), want, rtol=1e-12)
        for shape in (e.shape,) if "k" in e.shape else (e.shape, None):  # else variables size all
            back = md.parse(str(e), dialect="matdiff", result_shape=shape, **declarations(e))
            got = back.evaluate(_used(back), sizes=SIZES)
            assert np.shape(got) == np.shape(want), (str(e), shape, str(back))
            np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=str(e))


def test_a_gradient_through_logsumexp_of_a_quotient_is_found():
    M = (X @ (X.T @ X)) * (X.T @ A @ x)
    f = md.sum(md.logsumexp((X + s) / (1 + M ** 2), axis=1))

    def value(env):
        Xv = env["X"]
        m = (Xv @ Xv.T @ Xv) * (Xv.T @ env["A"] @ env["x"])
        return _lse((Xv + env["s"]) / (1 + m ** 2), 1).sum()

    p = Pair(f, value, "Σ logsumexp((X + s) ⊘ (1 + M^∘2), axis=1)")
    _close(f.evaluate(_used(f)), value(VALUES), "evaluate", p)
    g = md.grad(f, x)  # RecursionError
    _close(g.evaluate(_used(g)), _central(p, "x"), "∇_x", p, rtol=1e-5)


def test_the_row_logsumexp_of_a_constant_matrix_reads_back_with_its_value_or_is_refused():
    for e, fill in ((x + md.logsumexp(md.zeros("n", "k"), axis=1), 0.0),
                    (md.logsumexp(md.ones("n", "k"), axis=1) + x, 1.0)):
        want = VALUES["x"] + _lse(np.full((N_, K_), fill), 1)
        assert "logsumexp(" in str(e)  # x + logsumexp(0, axis=1), logsumexp(1, axis=1) + x
        np.testing.assert_allclose(e.evaluate(_used(e), sizes=SIZES), want, rtol=1e-12)
        got = _read_value(e)
        if got is not None:
            np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=str(e))  # got x + log n (+ 1)


def test_a_product_of_two_ones_matrices_through_a_function_reads_back_with_its_value_or_is_refused():
    K = md.ones("n", "k")
    c = np.logaddexp(0, 1.0)  # softplus(1)
    for e, want in ((K @ md.abs(md.softplus(K)).T, K_ * c * np.ones((N_, N_))),  # 1.31…·11ᵀ1ᵀ
                    (K @ (0.5 * K - md.abs(md.softplus(K)) * md.softplus(K)).T,  # 11ᵀ((1/2)1 − 1.72…·1ᵀ)
                     K_ * (0.5 - c * c) * np.ones((N_, N_)))):
        assert re.search(r"11ᵀ(1ᵀ|\(\()|k11ᵀ", str(e)), str(e)  # 11ᵀ1ᵀ was read as 11ᵀ
        np.testing.assert_allclose(e.evaluate(sizes=SIZES), want, rtol=1e-12)
        got = _read_value(e)
        if got is not None:
            np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=str(e))  # got 1/k of it
