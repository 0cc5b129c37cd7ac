"""``viewed_as_itself`` for sums and plain products, and the scalar seed of an entry-wise
function (issue 24): each claim checked against the simplification it stands for, and each
derivative that uses it against central differences."""
import numpy as np

import matdiff as md
from matdiff import build as B
from matdiff import diff
from matdiff.ir import Contract, Elementwise, Hole, Sum
from matdiff.simplify import simplify, viewed_as_itself

A, X, Y = (md.matrix(s, "n", "n") for s in "AXY")
x, y = md.vector("x", "n"), md.vector("y", "n")
M, w = md.matrix("M", "n", "d"), md.vector("w", "d")


def _views(n):
    labs = tuple(range(n.ndim))
    return (simplify(Contract((n,), (labs,), labs)), simplify(Contract((B.ONE, n), ((), labs), labs)))


def test_sums_and_plain_products_are_their_own_views():
    """A sum of several terms, c·u for a variable, inverse or function u, and a product of
    variables and inverses of others simplify, read in their own order alone or times 1,
    to their own normal forms; a product with a nested product, a cancelling inverse or
    a factor read twice alike is not claimed, nor one holding a delta or a function, nor c·u
    for a product or sum u."""
    claimed = [A + X, M @ w - y, 2 * md.exp(x), -3 * md.inv(X), A @ x, x.T @ A, A @ md.inv(X) @ Y,
               md.outer(x, y), A + A.T]
    for e in claimed:
        n = e.node
        assert viewed_as_itself(n), e
        assert _views(n) == (simplify(n), simplify(n)), e
    assert viewed_as_itself((md.inv(X) @ X @ A).node)  # its normal form A
    kinds = {type(simplify(e.node)) for e in claimed}
    assert kinds == {Sum, Contract}
    for e in [md.inv(X) @ X, md.exp(x) * y, 2 * (A @ x), 2 * md.inv(X) @ X]:
        assert not viewed_as_itself(e.node), e


def test_entrywise_seed_is_the_transposed_rule():
    """The adjoint of a scalar f(u) under the seed 1 is ``transpose``'s of f′(u) ⊙ dX,
    up to simplification, for functions whose f′(u) is and is not its own view."""
    for e in [md.norm(x) ** 2, md.sqrt(x.T @ x), md.exp(md.sum(x)), md.log(x.T @ A @ x)]:
        n = e.node
        assert type(n) is Elementwise and n.ndim == 0
        hole = Hole(n.arg.shape, False)
        full = diff.transpose(diff._d_elementwise(n, 0, hole), hole, B.ONE, ())
        short = diff._contract_adjoint(diff._d_elementwise(n, 0, hole), 1, B.ONE, ())
        assert simplify(short) is simplify(full), e


def _central(f, env, name, eps=1e-6):
    base = env[name]
    g = np.zeros_like(base)
    for idx in np.ndindex(base.shape):
        plus, minus = base.copy(), base.copy()
        plus[idx] += eps
        minus[idx] -= eps
        g[idx] = (f.evaluate({**env, name: plus}) - f.evaluate({**env, name: minus})) / (2 * eps)
    return g


def test_derivatives_through_the_views_match_central_differences():
    rng = np.random.default_rng(7)
    env = {"A": rng.normal(size=(3, 3)), "X": rng.normal(size=(3, 3)) + 3 * np.eye(3),
           "x": rng.normal(size=3), "y": rng.normal(size=3), "M": rng.normal(size=(3, 2)),
           "w": rng.normal(size=2)}
    for f, v in [(x.T @ A @ x, x), (x.T @ md.inv(X) @ x, x), ((M @ w - y).T @ (M @ w - y), w),
                 (md.norm(x) ** 2, x), (md.sqrt(x.T @ x), x), (md.trace(X.T @ A @ X), X)]:
        used = {u.src: env[u.src] for u in f.variables}
        got = np.asarray(md.grad(f, v).evaluate(used))
        assert np.allclose(got, _central(f, used, v.node.name), rtol=1e-5, atol=1e-6), f
