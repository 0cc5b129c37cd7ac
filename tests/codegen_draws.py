"""Random expressions, derivatives and inputs for the differential test of the code generator
(tests/test_codegen_differential.py and benchmarks/codegen_differential.py).

An expression is drawn by type — scalar, vectors of n and k, n × n and n × k matrices —
from the operations whose lowering to code can go wrong: element-wise operations, ⊘ with
coefficients on either side, powers, sums inside products, broadcasting of scalars,
reductions, softmax and logsumexp, inverses, determinants, eigenvalues and matrix
functions.  Then one of its derivatives is taken: the expression itself, a gradient, a
Jacobian, a Hessian or a Hessian-vector product.

Arguments that need a domain get it by construction, never by luck: p is a positive
vector, S a symmetric positive-definite matrix with eigenvalues in [1, 3] (spaced, so that
eigenvector derivatives are well conditioned), and what is inverted, divided by or put
under a logarithm is positive or diagonally dominant.  Functions that explode or oscillate
get bounded arguments (exp(tanh(e))), so every value stays within a few orders of
magnitude and float32 has digits to compare.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import reject
from hypothesis import strategies as st

import matdiff as md

n, k = "n", "k"
LEAVES = {
    "S": [md.scalar("a"), md.scalar("b")],
    "Vn": [md.vector("x", n), md.vector("y", n), md.vector("p", n)],
    "Vk": [md.vector("w", k)],
    "Mnn": [md.matrix("A", n, n), md.matrix("B", n, n), md.matrix("S", n, n, symmetric=True)],
    "Mnk": [md.matrix("X", n, k)],
}
P = LEAVES["Vn"][2]  # positive
SPD = LEAVES["Mnn"][2]  # symmetric positive definite
I = md.eye(n)
COEFFICIENTS = [2, -3, 0.5, 1.5]


# positive expressions of e, to divide by: 1 + e², exp(tanh e), softplus(e) + ½
POSITIVE = [lambda u: 1 + u * u, lambda u: md.exp(md.tanh(u)), lambda u: md.softplus(u) + 0.5]


def _dominant(m):
    return md.tanh(m) + 4 * I


def _spd(m):  # symmetric positive definite by structure: S + tanh(M)ᵀ tanh(M)/n
    t = md.tanh(m)
    return SPD + t.T @ t / 4


# element-wise functions, each kept where its value and slope are moderate
FUNCTIONS = [
    md.tanh, md.sigmoid, md.softplus, lambda e: md.exp(md.tanh(e)), lambda e: md.log(1 + e * e),
    lambda e: md.sqrt(1 + e * e), lambda e: md.sin(md.tanh(e)), lambda e: md.cos(2 * md.tanh(e)),
    lambda e: md.arctan(e), lambda e: md.log1p(md.sigmoid(e)), lambda e: md.expm1(md.tanh(e)),
    lambda e: md.sinh(md.tanh(e)), lambda e: md.cosh(md.tanh(e)), lambda e: md.tan(md.tanh(e) / 2),
    lambda e: md.relu(e) * e, lambda e: md.abs(e) * e, lambda e: md.sign(e) * e ** 2,
    lambda e: md.step(e) * e, lambda e: e ** 3, lambda e: e ** 2, lambda e: (1 + e * e) ** -1.5,
    lambda e: (1 + e * e) ** 0.5,
]
NONSMOOTH = ("relu", "abs", "sign", "step")  # derivatives compared with evaluate only


def _rules(kind):
    pos = POSITIVE
    common = [
        lambda e: e(kind) + e(kind),
        lambda e: e(kind) - e(kind),
        lambda e: e(kind) * e(kind),
        lambda e, c=COEFFICIENTS: c[0] * e(kind) - c[2] * e(kind),
        lambda e: e(kind) / pos[0](e(kind)),  # ⊘
        lambda e: 2 * e(kind) / pos[1](e(kind)),  # ⊘ with a coefficient above (the WLS shape)
        lambda e: e(kind) / (2 * pos[2](e(kind))),  # and below
        lambda e: (e(kind) - 3 * e(kind)) ** 2 / pos[0](e(kind)),  # a sum with coefficients, squared
        lambda e: -e(kind) / 3,
        lambda e: e("S") * e(kind) if kind != "S" else e("S") * e("S"),
        lambda e: e(kind) + e("S") if kind != "S" else e("S") / 2 + 1,  # a scalar broadcast
        lambda e: 1 - e(kind),
        lambda e: md.sqrt(pos[1](e(kind))) * e(kind),
    ]
    specific = {
        "S": [lambda e: md.trace(e("Mnn")), lambda e: e("Vn").T @ e("Vn"),
              lambda e: md.sum(e("Mnk")), lambda e: md.norm(e("Vk")) ** 2, lambda e: md.norm(e("Vn")),
              lambda e: md.sum((e("Vn") - 2 * e("Vn")) ** 2 / P),
              lambda e: md.dot(e("Mnk"), e("Mnk")), lambda e: md.logsumexp(e("Vn")),
              lambda e: md.sum(md.logsumexp(e("Mnk"), axis=1)), lambda e: md.mean(e("Vn")),
              lambda e: md.logdet(_dominant(e("Mnn"))), lambda e: md.det(_dominant(e("Mnn"))) / 50,
              lambda e: md.logdet(_spd(e("Mnn"))), lambda e: e("Vn").T @ md.inv(_spd(e("Mnn"))) @ e("Vn"),
              lambda e: e("Vn").T @ e("Mnk") @ e("Vk"), lambda e: md.sum(md.eigvalsh(_spd(e("Mnn"))) ** 3),
              lambda e: md.sum(md.log(md.eigvalsh(_spd(e("Mnn"))))),
              lambda e: md.trace(md.matrix_function(_spd(e("Mnn")), "tanh") @ e("Mnn")),
              lambda e: e("Vn").T @ md.expm(md.tanh(e("Mnn")) / 2) @ e("Vn"),
              lambda e: md.sum(md.softmax(e("Vn")) * e("Vn")), lambda e: md.sum(md.kron(e("Mnn"), e("Vk")))],
        "Vn": [lambda e: e("Mnn") @ e("Vn"), lambda e: e("Mnk") @ e("Vk"), lambda e: (e("Mnn") + e("Mnn")) @ e("Vn"),
               lambda e: md.softmax(e("Vn")), lambda e: md.diag(e("Mnn")), lambda e: md.log(md.softmax(e("Vn"))),
               lambda e: md.sum(e("Mnk"), axis=1), lambda e: md.logsumexp(e("Mnn"), axis=1),
               lambda e: md.inv(_dominant(e("Mnn"))) @ e("Vn"), lambda e: md.eigvalsh(_spd(e("Mnn"))),
               lambda e: md.einsum("ij,jk,k->i", e("Mnn"), e("Mnk"), e("Vk"))],
        "Vk": [lambda e: e("Mnk").T @ e("Vn"), lambda e: md.sum(e("Mnk"), axis=0).T,
               lambda e: md.softmax(e("Vk")), lambda e: e("Mnk").T @ (e("Vn") / P)],
        "Mnn": [lambda e: e("Mnn") @ e("Mnn"), lambda e: e("Mnn").T, lambda e: e("Vn") @ e("Vn").T,
                lambda e: md.diag(e("Vn")), lambda e: e("Mnk") @ e("Mnk").T, lambda e: md.inv(_dominant(e("Mnn"))),
                lambda e: md.softmax(e("Mnn"), axis=0), lambda e: md.inv(_spd(e("Mnn"))),
                lambda e: md.det(_dominant(e("Mnn"))) * e("Mnn") / 50,
                lambda e: md.matrix_function(_spd(e("Mnn")), "log"), lambda e: md.sqrtm(_spd(e("Mnn"))),
                lambda e: md.expm(md.tanh(e("Mnn")) / 2), lambda e: (e("Mnn") - 2 * e("Mnn")) @ e("Mnn")],
        "Mnk": [lambda e: e("Mnn") @ e("Mnk"), lambda e: e("Vn") @ e("Vk").T,
                lambda e: md.softmax(e("Mnk"), axis=1), lambda e: md.outer(e("Vn"), e("Vk")),
                lambda e: e("Mnk") * e("Vk"), lambda e: e("Mnk") / (1 + e("Vk") * e("Vk"))],
    }
    return common + specific[kind] + [lambda e, f=f: f(e(kind)) for f in FUNCTIONS]


RULES = {kind: _rules(kind) for kind in LEAVES}


@st.composite
def typed_expressions(draw, leaves: dict, rules: dict, kind: str, depth: int, leaf_odds: int):
    """An expression of a kind, from a table of leaves and a table of rules (each a function
    of a callback that draws a subexpression of a named kind): a leaf at depth 0, or one time
    in ``leaf_odds + 1``, else a rule applied to drawn subexpressions.  The property tests
    (tests/test_properties.py) draw from their own tables with it."""
    if depth == 0 or draw(st.integers(0, leaf_odds)) == 0:
        return draw(st.sampled_from(leaves[kind]))
    rule = draw(st.sampled_from(rules[kind]))
    return rule(lambda sub: draw(typed_expressions(leaves, rules, sub, depth - 1, leaf_odds)))


def expressions(kind="S", depth=4):
    return typed_expressions(LEAVES, RULES, kind, depth, 3)


@dataclass
class Draw:
    f: md.Expr  # the expression
    d: md.Expr  # what is compiled beside it: f itself or one of its derivatives
    what: str  # "value", "grad", "jacobian", "hessian", "hvp"
    wrt: md.Expr | None


WHATS = ("value", "grad", "jacobian", "hessian", "hvp")


@st.composite
def draws(draw, whats=WHATS):
    """An expression and one of its derivatives (of the kinds in ``whats`` that fit)."""
    what = draw(st.sampled_from(whats))
    kind = "S" if what in ("grad", "hessian", "hvp") else draw(st.sampled_from(sorted(LEAVES)))
    f = draw(expressions(kind))
    if what == "value" or not f.variables:
        return Draw(f, f, "value", None)
    v = draw(st.sampled_from(f.variables))
    try:
        if what == "hvp":
            return Draw(f, md.hvp(f, v, md.tensor("u", *v.shape)), what, v)
        return Draw(f, {"grad": md.grad, "jacobian": md.jacobian, "hessian": md.hessian}[what](f, v),
                    what, v)
    except md.NotSupportedError:  # Jacobians through expm of a general matrix: refused, said so
        reject()


def inputs(variables, sizes: dict, seed: int) -> dict:
    """Float64 values of the variables: p positive, S SPD with spread eigenvalues in [1, 3]."""
    rng = np.random.default_rng(seed)
    out = {}
    for v in variables:
        shape = tuple(sizes.get(d, d) for d in v.node.shape)
        if v.node.name == "p":
            out["p"] = rng.uniform(0.5, 2.0, shape)
        elif v.node.name == "S":
            q, _ = np.linalg.qr(rng.standard_normal(shape))
            lam = np.linspace(1.0, 3.0, shape[0]) + rng.uniform(-0.2, 0.2, shape[0])
            out["S"] = (q * lam) @ q.T
            out["S"] = (out["S"] + out["S"].T) / 2
        else:
            out[v.node.name] = rng.standard_normal(shape) * 0.7
    return out
