"""The simplifier's rewrites, as a table of equalities between normal forms, and the size
guarantees derivatives rely on."""
import numpy as np
import pytest

import matdiff as md
from matdiff.ir import Delta, dag_size, walk
from matdiff.simplify import simplify

from .cases import tanh_network

A, B = md.matrix("A", "n", "n"), md.matrix("B", "n", "n")
S = md.matrix("S", "n", "n", symmetric=True)
x, y = md.vector("x", "n"), md.vector("y", "n")
I = md.eye("n")

# lhs and rhs simplify to the very same node
SAME = [
    ("x + x → 2x", x + x, 2 * x),
    ("Aᵀᵀ → A", A.T.T, A),
    ("Ix → x", I @ x, x),
    ("AI → A", A @ I, A),
    ("x − x → 0", x - x, md.zeros("n")),
    ("0·A → 0", 0 * A, md.zeros("n", "n")),
    ("(AB)ᵀ → BᵀAᵀ", (A @ B).T, B.T @ A.T),
    ("tr AB = tr BA", md.trace(A @ B), md.trace(B @ A)),
    ("aᵀb = bᵀa", x.T @ y, y.T @ x),
    ("Sᵀ → S", S.T @ x, S @ x),
    ("xᵀSy = yᵀSx", x.T @ S @ y, y.T @ S @ x),
    ("diag(x) y → x ⊙ y", md.diag(x) @ y, x * y),
    ("tr(diag(x) A) → Σ x ⊙ diag(A)", md.trace(md.diag(x) @ A), md.sum(x * md.diag(A))),
    ("(√x)² → x", md.sqrt(x) ** 2, x),
    ("x ⊙ x → x²", x * x, x ** 2),
    ("x ⊙ x⁻¹ → 1", x * (1 / x), md.ones("n")),
    ("(X⁻¹)⁻¹ → X", md.inv(md.inv(A)), A),
    ("2(3x) → 6x", 2 * (3 * x), 6 * x),
    ("(x + y) − y → x", (x + y) - y, x),
    ("exp(0) → 1", md.exp(md.zeros("n")), md.ones("n")),
    ("Bx + Bᵀx → (B + Bᵀ)x", B @ x + B.T @ x, (B + B.T) @ x),
    ("Ax + Ay → A(x + y)", A @ x + A @ y, A @ (x + y)),
    ("1ᵀ(x − x̄1) → 0", md.sum(x - md.mean(x)), 0 * md.sum(x)),
    ("1ᵀ(x − x̄1 + y) → 1ᵀy", md.sum(x - md.mean(x) + y), md.sum(y)),
    ("(1ᵀ(x − x̄1))(1ᵀy) → 0", md.sum(x - md.mean(x)) * md.sum(y), 0 * md.sum(y)),
    ("column sums of A − 1āᵀ → 0", md.sum(A - md.mean(A, axis=0), axis=0), md.zeros("n")),
]


@pytest.mark.parametrize("name,lhs,rhs", SAME, ids=[s[0] for s in SAME])
def test_rewrites_reach_one_normal_form(name, lhs, rhs):
    assert simplify(lhs.node) is simplify(rhs.node)
    rng = np.random.default_rng(0)
    vals = {"A": rng.normal(size=(4, 4)), "B": rng.normal(size=(4, 4)), "x": rng.uniform(1, 2, 4),
            "y": rng.normal(size=4), "S": np.eye(4) + 1}
    used = {v.node.name for v in lhs.variables}
    ev = {k: v for k, v in vals.items() if k in used}
    np.testing.assert_allclose(lhs.evaluate(ev, sizes={"n": 4}), rhs.evaluate(
        {k: v for k, v in vals.items() if k in {v.node.name for v in rhs.variables}}, sizes={"n": 4}))


def test_dims_as_values():
    assert md.trace(I).evaluate(sizes={"n": 4}) == 4
    assert md.sum(md.ones("n")).evaluate(sizes={"n": 7}) == 7
    assert md.sum(md.ones("n", "k")).evaluate(sizes={"n": 2, "k": 3}) == 6


def test_derivatives_carry_no_deltas_a_product_absorbs():
    X, w = md.matrix("X", "n", "k"), md.vector("w", "k")
    H = md.hessian(md.sum(md.softplus(X @ w)), w)  # Xᵀ diag(σ(Xw)(1 − σ(Xw))) X
    assert not any(isinstance(o, Delta) for o in H.node.operands)


def test_a_delta_inside_a_sum_factor_is_distributed_away():
    """(δ P + Q) R → δ P R + Q R, where the delta then merges with R's labels: the Hessians
    of tr(AX⁻¹B) and of a sigmoid layer carry no delta their products can absorb."""
    X = md.matrix("X", "n", "n")
    H = md.hessian(md.trace(A @ md.inv(X) @ B), X)
    assert not any(isinstance(n, Delta) for n in walk(H.node))
    assert md.check(md.grad(md.trace(A @ md.inv(X) @ B), X), X, kinds={"X": "invertible"}) < 1e-6
    Xd, W1, W2, Y = (md.matrix("X", "n", "d"), md.matrix("W1", "d", "h"), md.matrix("W2", "h", "c"),
                     md.matrix("Y", "n", "c"))
    loss = md.norm(md.sigmoid(Xd @ W1) @ W2 - Y) ** 2
    H = md.hessian(loss, W1)  # δ_jl stays only where it ties two axes of the result
    for n in walk(H.node):
        if isinstance(n, md.ir.Contract):
            for op, lab in zip(n.operands, n.labels):
                assert not isinstance(op, Delta) or set(lab) <= set(n.out)
    assert md.check(md.grad(loss, W1), W1) < 1e-6


def test_network_gradients_grow_linearly_with_depth():
    sizes = {}
    for L in (4, 16, 64):
        f, Ws = tanh_network(L)
        sizes[L] = dag_size(*(g.node for g in md.grad(f, Ws)))
    # each layer adds a bounded number of nodes: (size(64) − size(16)) / 48 ≈ (size(16) − size(4)) / 12
    per_layer_late = (sizes[64] - sizes[16]) / 48
    per_layer_early = (sizes[16] - sizes[4]) / 12
    assert per_layer_late <= 1.1 * per_layer_early
    assert sizes[64] <= 10 * 64


def test_gradients_by_several_variables_at_once_equal_one_by_one():
    f, Ws = tanh_network(3)
    together = md.grad(f, Ws)
    for W, g in zip(Ws, together):
        assert simplify(md.grad(f, W).node) is g.node


def test_a_typed_chain_of_sums_builds_one_flat_sum_and_keeps_each_step():
    """a + b + c + … links its terms and builds one flat Sum when asked (O(k), not O(k²)); a
    step of the chain, used again later, is still the sum of its own terms."""
    xs = [md.vector(f"x{i}", "n") for i in range(6)]
    e = xs[0] + xs[1]
    steps = [e]
    for v in xs[2:]:
        e = e - v if len(steps) % 2 else e + v
        steps.append(e)
    from matdiff.ir import Sum
    assert isinstance(e.node, Sum) and len(e.node.terms) == 6
    rng = np.random.default_rng(3)
    values = {f"x{i}": rng.normal(size=4) for i in range(6)}
    signs = [1, 1, -1, 1, -1, 1]
    for k, s in enumerate(steps):  # each step built after the last: its own terms only
        want = sum(signs[i] * values[f"x{i}"] for i in range(k + 2))
        np.testing.assert_allclose(s.evaluate({f"x{i}": values[f"x{i}"] for i in range(k + 2)}), want)
    assert str(steps[1]) == "x0 + x1 − x2"
    assert md.check(e.T @ e, xs[3]) < 1e-6
