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
s, t = md.scalar("s"), md.scalar("t")

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
    ("(sA)⁻¹ → s⁻¹A⁻¹", md.inv(s * A), md.inv(A) / s),
    ("(2stAᵀ)⁻¹ → ½s⁻¹t⁻¹A⁻ᵀ", md.inv(2 * s * (t * A.T)), 0.5 * md.inv(A.T) / t / s),
    ("tr(A⁻¹A) → n", md.trace(md.inv(A) @ A), md.sum(md.ones("n"))),
    ("tr((sA)⁻¹A) → n/s", md.trace(md.inv(s * A) @ A), md.sum(md.ones("n")) / s),
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
            "y": rng.normal(size=4), "S": np.eye(4) + 1,
            "s": rng.uniform(1, 2), "t": rng.uniform(-2, -1)}
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


# --------------------------------------------------------------------------- issue 21: equal
# contractions written differently (operands reordered, labels renamed, symmetric factors read
# the other way) are one node; a sum then merges them as like terms.

def _vars():
    from matdiff.ir import Var
    return {"A": Var("A", ("n", "n"), False), "B": Var("B", ("n", "n"), False),
            "S": Var("S", ("n", "n"), True), "U": Var("U", ("n", "n"), False),
            "D": Var("D", ("n", "n"), True), "x": Var("x", ("n",), False), "a": Var("a", ("n",), False)}


def _cycle(names, start=0):
    """tr of the product of ``names``, its labels a cycle starting at ``start``."""
    k = len(names)
    return names, tuple((start + i, start + (i + 1) % k) for i in range(k)), ()


# each row: two (operand names, labels, output labels) of one contraction
EQUAL_CONTRACTIONS = [
    ("xᵀAᵀAx, factors reordered", (("A", "x", "A", "x"), ((0, 1), (1,), (0, 2), (2,)), ()),
     (("x", "A", "x", "A"), ((5,), (7, 5), (9,), (7, 9)), ())),
    ("tr ABAB = tr BABA", _cycle(("A", "B", "A", "B")), _cycle(("B", "A", "B", "A"))),
    ("tr AAᵀAAᵀ = tr AᵀAAᵀA", (("A",) * 4, ((0, 1), (2, 1), (2, 3), (0, 3)), ()),
     (("A",) * 4, ((1, 0), (1, 2), (3, 2), (3, 0)), ())),
    ("tr A³ rotated", _cycle(("A",) * 3), (("A",) * 3, ((4, 2), (3, 4), (2, 3)), ())),
    ("tr A⁶ rotated (past the orderings' bound: refined)", _cycle(("A",) * 6),
     (("A",) * 6, ((13, 14), (11, 12), (15, 10), (10, 11), (12, 13), (14, 15)), ())),
    ("(xᵀAx)(xᵀAx), the two products interleaved",
     (("x", "A", "x", "x", "A", "x"), ((0,), (0, 1), (1,), (2,), (2, 3), (3,)), ()),
     (("A", "A", "x", "x", "x", "x"), ((8, 9), (6, 7), (9,), (6,), (8,), (7,)), ())),
    ("(AᵀB)ᵢⱼ(AᵀB)ₖₗ, the factors of the two products swapped",
     (("A", "B", "A", "B"), ((4, 0), (4, 1), (5, 2), (5, 3)), (0, 1, 2, 3)),
     (("B", "A", "B", "A"), ((5, 3), (5, 2), (4, 1), (4, 0)), (0, 1, 2, 3))),
    ("xᵀSASx, S read either way", (("x", "S", "A", "S", "x"), ((0,), (0, 1), (1, 2), (2, 3), (3,)), ()),
     (("S", "x", "S", "A", "x"), ((1, 0), (0,), (3, 2), (1, 2), (3,)), ())),
    ("the Daleckii–Krein term Uᵢₚ Uⱼ_q U_kq U_lp a_k a_l D_pq, its U's paired two ways",
     (("U", "U", "U", "U", "a", "a", "D"), ((0, 4), (1, 5), (2, 5), (3, 4), (2,), (3,), (4, 5)), (0, 1)),
     (("U", "U", "U", "U", "a", "a", "D"), ((0, 4), (1, 5), (2, 4), (3, 5), (3,), (2,), (5, 4)), (0, 1))),
]

NOT_EQUAL = [  # alike operands, a different contraction: never merged
    ("tr ABAB ≠ tr AABB", _cycle(("A", "B", "A", "B")), _cycle(("A", "A", "B", "B"))),
    ("xᵀAᵀAx ≠ xᵀAAx", (("A", "x", "A", "x"), ((0, 1), (1,), (0, 2), (2,)), ()),
     (("A", "A", "x", "x"), ((0, 1), (1, 2), (0,), (2,)), ())),
    ("tr AAᵀAAᵀ ≠ tr A⁴", (("A",) * 4, ((0, 1), (2, 1), (2, 3), (0, 3)), ()), _cycle(("A",) * 4)),
]


def _contract(spec, nodes):
    from matdiff.ir import Contract
    names, labels, out = spec
    return Contract(tuple(nodes[v] for v in names), labels, out)


def _einsum(spec, values):
    """The contraction in NumPy, from its spec: independent of matdiff."""
    names, labels, out = spec
    letters = "abcdefghijklmnopqrstuvwxyz"
    text = ",".join("".join(letters[x] for x in lab) for lab in labels) + "->" + "".join(letters[x] for x in out)
    return np.einsum(text, *(values[v] for v in names))


def _values(rng, n=4):
    s = rng.normal(size=(n, n))
    d = rng.normal(size=(n, n))
    return {"A": rng.normal(size=(n, n)), "B": rng.normal(size=(n, n)), "S": s + s.T,
            "U": rng.normal(size=(n, n)), "D": d + d.T, "x": rng.normal(size=n), "a": rng.normal(size=n)}


def _close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.max(np.abs(want)))


def _value(node, values):
    from matdiff.expr import Expr
    e = Expr(node)
    return np.asarray(e.evaluate({v.node.name: values[v.node.name] for v in e.variables}, sizes={"n": 4}))


@pytest.mark.parametrize("name,one,other", EQUAL_CONTRACTIONS, ids=[r[0] for r in EQUAL_CONTRACTIONS])
def test_equal_contractions_are_one_node(name, one, other):
    nodes, values = _vars(), _values(np.random.default_rng(21))
    _close(_einsum(one, values), _einsum(other, values))  # the row is right
    p, q = simplify(_contract(one, nodes)), simplify(_contract(other, nodes))
    assert p is q
    _close(_value(p, values), _einsum(one, values))
    # as terms of a sum they merge: p − q = 0 and p + q = 2p, whichever form each term has
    from matdiff import build as B
    assert simplify(B.linear([(1.0, _contract(one, nodes)), (-1.0, _contract(other, nodes))], p.shape)) \
        is simplify(B.zeros(p.shape))
    assert simplify(B.linear([(1.0, _contract(one, nodes)), (1.0, _contract(other, nodes))], p.shape)) \
        is simplify(B.scale(2.0, p))


@pytest.mark.parametrize("name,one,other", NOT_EQUAL, ids=[r[0] for r in NOT_EQUAL])
def test_different_contractions_stay_apart(name, one, other):
    nodes, values = _vars(), _values(np.random.default_rng(22))
    assert abs(_einsum(one, values) - _einsum(other, values)) > 1e-6  # the row is right
    p, q = simplify(_contract(one, nodes)), simplify(_contract(other, nodes))
    assert p is not q
    _close(_value(p, values), _einsum(one, values))
    _close(_value(q, values), _einsum(other, values))


def test_a_nested_product_and_its_flat_form_merge_in_a_sum():
    """U(aaᵀ)… holds the outer product as one factor (the product is past FLATTEN_LIMIT),
    U…a a… holds it flat: as terms of one sum they are like terms."""
    from matdiff import build as B
    from matdiff.ir import Contract
    v = _vars()
    aa = Contract((v["a"], v["a"]), ((0,), (1,)), (0, 1))
    nested = Contract((v["U"], v["U"], v["U"], v["U"], aa, v["D"]),
                      ((0, 2), (1, 3), (4, 2), (5, 3), (4, 5), (2, 3)), (0, 1))
    flat = ("U", "U", "U", "U", "a", "a", "D"), ((0, 4), (1, 5), (2, 5), (3, 4), (2,), (3,), (4, 5)), (0, 1)
    total = simplify(B.linear([(0.5, nested), (0.5, _contract(flat, v))], (("n"), ("n"))))
    assert isinstance(total, Contract) and len(total.operands) == 7  # one term, the flat one
    values = _values(np.random.default_rng(23))
    _close(_value(total, values), _einsum(flat, values))
    assert simplify(B.linear([(0.5, nested), (-0.5, _contract(flat, v))], ("n", "n"))) \
        is simplify(B.zeros(("n", "n")))


def test_spectral_gradient_computes_its_daleckii_krein_term_once():
    """∇ aᵀexpm(S)a was ½U(UᵀaaᵀU ⊙ Δexp(λ))Uᵀ + ½U diag(Uᵀa)Δexp(λ)diag(Uᵀa)Uᵀ, one
    matrix written two ways (issue 21): now one term, whose NumPy code forms Uᵀa and two
    n×n products; its value is the central difference of aᵀexpm(S)a."""
    from scipy.linalg import expm

    from matdiff.ir import Contract, DivDiff
    Sm, a = md.matrix("S", "n", "n", symmetric=True), md.vector("a", "n")
    g = md.grad(a.T @ md.matrix_function(Sm, "exp") @ a, Sm)
    terms = [t for t in walk(g.node) if isinstance(t, Contract) and any(isinstance(o, DivDiff) for o in t.operands)]
    assert len(terms) == 1  # the Daleckii–Krein product, once
    source = md.codegen(g, sizes={"n": 5}, checks=False)  # the computation, without the checks
    assert source.count(" @ ") <= 3, source  # Uᵀa, then two n×n products (there were six)
    rng = np.random.default_rng(24)
    q = rng.normal(size=(5, 5))
    s, av = q @ q.T / 5 + np.eye(5), rng.normal(size=5)
    got = md.compile(g, sizes={"n": 5})(S=s, a=av)
    np.testing.assert_allclose(got, g.evaluate({"S": s, "a": av}), rtol=1e-12)
    f = lambda m: av @ expm(m) @ av  # noqa: E731
    h = 1e-5
    for _ in range(3):
        v = rng.normal(size=(5, 5))
        v = v + v.T
        fd = (f(s + h * v) - f(s - h * v)) / (2 * h)
        assert abs(np.sum(got * v) - fd) <= 1e-7 * max(1.0, abs(fd))


def test_keeps_variables_claims_only_what_simplification_keeps():
    """``simplify.keeps_variables`` lets differentiation skip simplifying a node to ask whether
    it depends on x (issue 24): wherever it says yes, the normal form reads every variable the
    node reads — over every node of the test table's inputs — and it says no where a factor
    may cancel another (X⁻¹X = I, x ⊙ x⁻¹ = 1, x − x = 0, f(c) a constant)."""
    from matdiff.ir import free_vars
    from matdiff.simplify import keeps_variables

    from .cases import CASES
    memo: dict = {}
    claimed = 0
    for case in CASES:
        for n in walk(md.expr.lift(case.f).node):
            if keeps_variables(n, memo):
                claimed += 1
                assert free_vars(simplify(n)) == free_vars(n), (case.name, n)
    assert claimed >= 100  # the shortcut is taken (products, sums and functions of them)
    kept = [A @ B @ A.T, md.sum(md.exp(A @ x)), md.sqrt(x.T @ x), x * x, md.trace(A @ S)]
    for e in kept:
        assert keeps_variables(e.node, {}), e
        assert free_vars(simplify(e.node)) == free_vars(e.node)
    cancelling = [md.inv(A) @ A, x * (1 / x), x - x, md.sum(x * (1 / x)), md.exp(x - x),
                  md.trace(md.inv(A) @ A)]
    for e in cancelling:
        assert not keeps_variables(e.node, {}), e
    assert not free_vars(simplify((md.inv(A) @ A).node)) & {A.node}


def _not_normal(root) -> list:
    """The nodes of ``simplify(root)`` that their own normaliser would still change, but for a
    scaled sum c·(A + B), kept whole so that its coefficient prints outside the sum."""
    from matdiff.ir import Sum
    from matdiff.simplify import NORMALISE

    out = []
    for n in walk(simplify(root)):
        if isinstance(n, Sum) and len(n.terms) == 1 and isinstance(n.terms[0][1], Sum):
            continue
        normalise = NORMALISE.get(type(n))
        if normalise is not None and normalise(n) is not n:
            out.append(n)
    return out


def test_the_normal_form_of_every_table_derivative_is_its_own():
    """A normal form normalises to itself: where merging labels by a delta made two factors
    powers of one (σ_i σ²_j δ_ij), met an inverse with its matrix (X_ab X⁻¹_ba), or left a
    nested product small enough to flatten, the product is normalised again (these were
    left as they were, and simplify marks its output final)."""
    from .cases import CASES

    checked = 0
    for case in CASES:
        for derive in (md.jacobian, md.hessian):
            if derive is md.hessian and case.f.ndim:
                continue
            d = derive(case.f, case.wrt)
            assert not _not_normal(d.node), (case.name, derive.__name__, _not_normal(d.node)[:1])
            checked += 1
    assert checked > 200


def test_a_trace_over_a_nested_product_is_flattened_into_it():
    """J_λ of (5I + tanh((S + λI)⁻¹A))⁻¹: the delta of dG/dλ = I tied two labels of a product
    too large to flatten, leaving a trace over its last two labels that the code generator
    computed through an n⁴ tensor; it is now one product of six factors."""
    from matdiff.ir import Contract

    S = md.matrix("S", "n", "n", spd=True)
    A = md.matrix("A", "n", "n")
    lam = md.scalar("lam", positive=True)
    J = md.jacobian(md.inv(5 * md.eye("n") + md.tanh(md.solve(S + lam * md.eye("n"), A))), lam)
    node = simplify(J.node)
    assert isinstance(node, Contract) and len(node.operands) == 6, node
    assert not any(isinstance(o, Contract) for o in node.operands), node
    rng = np.random.default_rng(0)
    q = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    values = {"S": (q * [1.0, 2.0, 3.0]) @ q.T, "A": rng.standard_normal((3, 3)), "lam": 0.5}
    values["S"] = (values["S"] + values["S"].T) / 2

    def f(lv):
        g = np.linalg.solve(values["S"] + lv * np.eye(3), values["A"])
        return np.linalg.inv(5 * np.eye(3) + np.tanh(g))
    central = (f(0.5 + 1e-6) - f(0.5 - 1e-6)) / 2e-6
    np.testing.assert_allclose(J.evaluate(values), central, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("expr, wrt, want", [
    (lambda x: md.sum(md.sigmoid(x) ** 2), "x", "sigmoid(x)**3"),
    (lambda x: md.sum(x ** md.exp(x)), "x", None),
])
def test_powers_of_one_factor_met_through_a_delta_are_merged(expr, wrt, want):
    x = md.vector("x", "n")
    h = md.hessian(expr(x), x)
    assert not _not_normal(h.node)
    if want:
        assert want in repr(simplify(h.node)), repr(simplify(h.node))
    rng = np.random.default_rng(1)
    xv = rng.uniform(0.5, 1.5, 4)
    grad = md.grad(expr(x), x)
    cols = [(grad.evaluate(x=xv + 1e-6 * e) - grad.evaluate(x=xv - 1e-6 * e)) / 2e-6 for e in np.eye(4)]
    np.testing.assert_allclose(h.evaluate(x=xv), np.array(cols).T, rtol=1e-6, atol=1e-8)


def test_a_number_beside_a_nested_product_does_not_stop_it_flattening():
    """−tr(P) for a product P of six factors was kept as a trace over nested P: the −1, an
    operand of the outer product until it joins the coefficient, counted against
    FLATTEN_LIMIT (seen in ∂/∂λ of expm1(tanh(yᵀ(S + λI)⁻¹softplus(y))), a sweep case)."""
    from matdiff.ir import Contract

    S = md.matrix("S", "n", "n", spd=True)
    y = md.vector("y", "n")
    lam = md.scalar("lam", positive=True)
    e = md.expm1(md.tanh(y.T @ md.inv(S + lam * md.eye("n")) @ md.softplus(y)))
    g = md.grad(e, lam)
    assert not _not_normal(g.node)
    assert not any(isinstance(n, Contract) and any(isinstance(o, Contract) and len(o.operands) > 4
                                                   for o in n.operands) for n in walk(simplify(g.node)))
    rng = np.random.default_rng(2)
    q = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    sv, yv = (q * [1.0, 2.0, 3.0]) @ q.T, rng.standard_normal(3)
    sv = (sv + sv.T) / 2

    def f(lv):
        return np.expm1(np.tanh(yv @ np.linalg.solve(sv + lv * np.eye(3), np.logaddexp(0, yv))))
    np.testing.assert_allclose(g.evaluate(S=sv, y=yv, lam=0.4), (f(0.4 + 1e-6) - f(0.4 - 1e-6)) / 2e-6, rtol=1e-6)
