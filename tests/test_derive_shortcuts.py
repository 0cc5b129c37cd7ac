"""Shortcuts of the derive phase that skip simplifications (issue 24), each checked against
the simplification it skips: ``keeps_variables`` for sums, inverses and entry-wise functions,
``_read_alike``'s axis-by-axis reads, ``viewed_as_itself``, the reverse pass's seeds and the
normal forms it builds directly (``normal_identity``, ``normal_ones``, ``normal_scaled``,
entry-wise adjoints)."""
import matdiff as md
from matdiff import build as B
from matdiff import diff
from matdiff.ir import Contract, Delta, Elementwise, Hole, free_vars, walk
from matdiff.simplify import (_canonical_order, _read_alike, keeps_variables, normal_identity, normal_ones,
                              normal_scaled, simplify, viewed_as_itself)

A, B_, X, Y = (md.matrix(s, "n", "n") for s in "ABXY")
S = md.matrix("S", "n", "n", symmetric=True)
x, y, a, b = (md.vector(s, "n") for s in "xyab")
M, w = md.matrix("M", "n", "d"), md.vector("w", "d")

KEPT = [a.T @ md.inv(X) @ b, md.trace(A @ md.inv(X) @ B_), (M @ w - y).T @ (M @ w - y),
        md.norm(A @ x - b) ** 2, md.sum(md.tan(0.3 * x)), md.sum(x / y), md.sum(md.sigmoid(x) ** 2),
        md.trace((A @ B_ - X) @ (A @ B_ - X).T), md.inv(X) @ A @ md.inv(X)]
CANCELLING = [md.inv(X) @ X, md.trace(md.inv(X) @ (X @ A)), x * (1 / x), md.sum(md.sqrt(x) * x ** -0.5),
              A @ x + B_ @ x - A @ x, x.T @ (y - y), (X + Y) @ a - X @ a, md.sum((A @ x) * (1 / (A @ x))),
              md.sum(md.exp(x) * x - x * md.exp(x)), (x + y) - x,
              # an inverse beside a sum, or inside one, that reads its variable: B⁻¹(2B) = 2I
              md.inv(B_) @ (2 * B_), md.inv(B_) @ -(B_ @ A), (2 * (A @ B_)) @ md.inv(B_),
              md.inv(S) @ (3 * S @ A), md.inv(B_).T @ (2 * B_.T @ A), md.inv(B_) @ (B_ @ A + B_ @ X)]


def test_keeps_variables_claims_only_what_simplification_keeps():
    """Every node of these expressions that ``keeps_variables`` claims keeps its variables
    when simplified; the products, sums and functions of KEPT are claimed, and none of
    CANCELLING, where a factor or term may cancel another (most of them do)."""
    lost = 0
    for e in KEPT + CANCELLING:
        memo: dict = {}
        for n in walk(e.node):
            if keeps_variables(n, memo):
                assert free_vars(n) <= free_vars(simplify(n)), (e, n)
    for e in KEPT:
        assert keeps_variables(e.node, {}), e
    for e in CANCELLING:
        assert not keeps_variables(e.node, {}), e
        lost += bool(free_vars(e.node) - free_vars(simplify(e.node)))
    assert lost >= 8


def test_read_alike_keeps_every_pair_the_canonical_order_groups():
    """``_read_alike`` (a necessary condition) keeps each (term, factor) pair that another
    term's pair shares canonical parts with once the factor is a hole, and drops x's pairs in
    Bx + Bᵀx: B read transposed is no hole's partner."""
    sums = [[B_ @ x, B_.T @ x], [x.T @ A, A @ x], [X.T @ A @ X, X.T @ A.T @ X], [S @ x, A @ x],
            [A @ X @ B_, A @ X.T @ B_, B_ @ X @ A], [md.inv(X).T @ A @ md.inv(X).T, md.inv(X).T @ A.T]]
    for exprs in sums:
        terms = [(1.0, simplify(e.node)) for e in exprs]
        pairs = {(i, k) for i, (_, t) in enumerate(terms) if type(t) is Contract
                 for k, (op, lab) in enumerate(zip(t.operands, t.labels))
                 if type(op) is not Delta and len(set(lab)) == len(lab)}
        groups: dict = {}
        for i, k in pairs:
            t = terms[i][1]
            hole = Hole(t.operands[k].shape, True)
            parts, _ = _canonical_order(t.operands[:k] + (hole,) + t.operands[k + 1:], t.labels, t.out)
            groups.setdefault(parts[:3], []).append((i, k))
        needed = {p for g in groups.values() if len({i for i, _ in g}) > 1 for p in g}
        assert needed <= _read_alike(terms, pairs), exprs
    terms = [(1.0, simplify((B_ @ x).node)), (1.0, simplify((B_.T @ x).node))]
    kept = _read_alike(terms, {(0, 0), (0, 1), (1, 0), (1, 1)})
    assert {(i, k) for i, k in kept if terms[i][1].operands[k] is x.node} == set()
    assert len(kept) == 2


def test_shortcuts_build_the_normal_forms_of_what_they_skip():
    """A normal form that ``viewed_as_itself`` names is what it read in its own axis order
    (and times 1) simplifies to; the reverse pass's seed 1 times the one other factor, and
    a trace's seed, are the normal forms of the adjoints they stand for."""
    for e in [A, md.inv(X), md.exp(A @ x), x, md.sigmoid(X) ** 2]:
        n = e.node
        labs = tuple(range(n.ndim))
        assert viewed_as_itself(n)
        assert simplify(Contract((n,), (labs,), labs)) is simplify(n)
        assert simplify(Contract((B.ONE, n), ((), labs), labs)) is simplify(n)
    assert not viewed_as_itself((md.exp(x) * y).node) and not viewed_as_itself((2 * (A @ x)).node)
    for e in [x.T @ y, md.sum(md.exp(x) * y), md.trace(X), md.trace(A @ X), a.T @ md.inv(X) @ b]:
        n = e.node
        for k in range(len(n.operands)):
            full = B.contract((B.ONE,) + n.operands[:k] + n.operands[k + 1:],
                              (n.out,) + n.labels[:k] + n.labels[k + 1:], n.labels[k], n.label_dims(),
                              n.operands[k].shape)
            assert simplify(diff._contract_adjoint(n, k, B.ONE, ())) is simplify(full), (e, k)


def test_seeds_and_ones_are_built_as_their_normal_forms():
    """The identity seed of a Jacobian and the all-ones tensor, for shapes of one to three
    axes with named, numeric and repeated dims, are the normal forms of B.identity_tensor and
    B.ones (each simplified first, so the direct builds cannot lend it their memo); the seed
    1 of Σ of all entries is that all-ones tensor, as the full adjoint simplifies."""
    shapes = [(), ("n",), (3,), ("n", "k"), ("k", "n"), ("n", "n"), (2, "n"), ("n", "k", "m"),
              ("n", "n", "k"), (2, 2, 2)]
    for shape in shapes:
        slow_seed, slow_ones = simplify(B.identity_tensor(shape)), simplify(B.ones(shape))
        assert normal_identity(shape) is slow_seed, shape
        assert normal_ones(shape) is slow_ones, shape
        assert simplify(normal_identity(shape)) is slow_seed and simplify(normal_ones(shape)) is slow_ones
    T3 = md.tensor("T", "n", "k", "m")
    for e in [md.sum(x), md.sum(A), md.sum(M), md.sum(T3), md.sum(md.exp(x))]:
        n = e.node
        full = B.contract((B.ONE,), (n.out,), n.labels[0], n.label_dims(), n.operands[0].shape)
        assert simplify(full) is simplify(diff._contract_adjoint(n, 0, B.ONE, ())), e


def test_a_variable_cancelled_inside_a_sum_is_no_dependence():
    """xᵀ√(B⁻¹(2BA))y does not depend on B (B⁻¹(2B) = 2I): its gradient is 0, also where A has
    a zero entry (a gradient built through the cancelled factor would be 0 ⊘ √0 there)."""
    import numpy as np
    n = 3
    Bm, Am = md.matrix("B", n, n), md.matrix("A", n, n)
    xv, yv = md.vector("x", n), md.vector("y", n)
    for f in (xv.T @ md.sqrt(md.inv(Bm) @ (2 * Bm @ Am)) @ yv,
              xv.T @ md.sqrt(md.inv(Bm) @ (Bm @ Am + Bm @ Am.T)) @ yv):
        g = md.grad(f, Bm)
        rng = np.random.default_rng(0)
        values = {"B": rng.normal(size=(n, n)) + 3 * np.eye(n), "A": np.abs(rng.normal(size=(n, n))),
                  "x": rng.normal(size=n), "y": rng.normal(size=n)}
        values["A"][0, 1] = values["A"][1, 0] = 0.0
        assert np.all(np.asarray(g.evaluate(values)) == 0), g
        h, E = 1e-6, rng.normal(size=(n, n))  # f itself does not move with B
        up, down = (f.evaluate({**values, "B": values["B"] + t * E}) for t in (h, -h))
        assert abs(up - down) / (2 * h) < 1e-6


def _random_expression(kind: str, depth: int, r):
    """A random expression of kind "S" (scalar), "V" (vector) or "M" (matrix), rich in what
    may cancel: e − e, (a + b) − a, a ⊙ (1/a), X⁻¹X, X⁻¹ beside or inside sums reading X."""
    leaves = {"S": [md.scalar("s")], "V": [x, y], "M": [A, B_, S, md.matrix("P", "n", "n", spd=True)]}
    if depth == 0 or r.random() < 0.25:
        return r.choice(leaves[kind])

    def e(k=kind):
        return _random_expression(k, depth - 1, r)

    def var():
        return r.choice(leaves["M"])

    common = [lambda: e() + e(), lambda: e() - e(), lambda: (lambda u: u - u)(e()),
              lambda: (lambda u, v: (u + v) - u)(e(), e()), lambda: e() * e(),
              lambda: (lambda u: u * (1 / u))(e()), lambda: (lambda u: md.sqrt(u) * u ** -0.5)(e()),
              lambda: 3 * e(), lambda: e("S") * e(), lambda: md.tanh(e()), lambda: md.sigmoid(e()),
              lambda: md.sin(e() - e())]
    special = {
        "S": [lambda: md.trace(e("M")), lambda: e("V").T @ e("V"), lambda: e("V").T @ e("M") @ e("V"),
              lambda: md.sum(e("V")), lambda: md.trace(md.inv(var()) @ e("M"))],
        "V": [lambda: e("M") @ e("V"), lambda: e("M").T @ e("V"), lambda: md.inv(var()) @ e("V")],
        "M": [lambda: e("M") @ e("M"), lambda: e("M").T, lambda: md.outer(e("V"), e("V")),
              lambda: md.inv(var()), lambda: (lambda X: md.inv(X) @ X)(var()),
              lambda: (lambda X: md.inv(X) @ (2 * X @ e("M")))(var()),
              lambda: (lambda X: md.inv(X) @ (X @ e("M") + X @ e("M")))(var()),
              lambda: (lambda X: (e("S") * (e("M") @ X)) @ md.inv(X))(var()),
              lambda: (lambda X: md.inv(X).T @ (X.T @ e("M")))(var()),
              lambda: (lambda m: m - m.T)(e("M"))],
    }
    for _ in range(10):
        try:
            return r.choice(common + special[kind])()
        except md.MatdiffError:  # shapes that do not combine, a constant divided by zero
            continue
    return r.choice(leaves[kind])


def test_the_shortcuts_claim_nothing_simplification_denies_over_random_expressions():
    """Over 600 seeded random expressions (~4,000 nodes), every node ``keeps_variables``
    claims keeps its variables once simplified; every node ``viewed_as_itself`` claims
    simplifies, read in its own order alone, times 1, times ones entry by entry, or times the
    identity seed over its first axes, to simplify(n); a normal form s of a tensor is the
    normal form of the sum of it alone, and ``normal_scaled(c, s)`` normalises as c·s in a sum alone does;
    the adjoint of each entry-wise function's operand, for the seed 1, ones, the identity
    seed or another cotangent, is the normal form of the transposition it skips."""
    import random
    claimed = views = entrywise = 0
    for seed in range(600):
        r = random.Random(seed)
        try:
            e = _random_expression(r.choice("SVM"), r.randint(2, 4), r)
            nodes = list(walk(e.node))
            memo: dict = {}
            for n in nodes:
                if keeps_variables(n, memo):
                    claimed += 1
                    assert free_vars(n) <= free_vars(simplify(n)), (seed, n)
                s = simplify(n)
                if n.ndim:  # (a scalar 0 alone in a sum is the empty sum)
                    assert simplify(B.add(s)) is s, (seed, n)
                for c in (-1.0, 2.5):
                    slow = simplify(B.add(B.scale(c, s)))  # first: normal_scaled may prebuild c·s
                    assert simplify(normal_scaled(c, s)) is slow, (seed, n, c)
                if viewed_as_itself(n):
                    views += 1
                    labs = tuple(range(n.ndim))
                    assert simplify(Contract((n,), (labs,), labs)) is s, (seed, n)
                    assert simplify(Contract((B.ONE, n), ((), labs), labs)) is s, (seed, n)
                    if n.ndim:
                        assert simplify(Contract((normal_ones(n.shape), n), (labs, labs), labs)) is s, (seed, n)
                    for m in range(1, n.ndim + 1):  # I_(e, o) n_(o, r) → (e, r): n read as it is
                        ext = tuple(range(n.ndim, n.ndim + m))
                        seed_ = normal_identity(n.shape[:m])
                        product = Contract((seed_, n), (ext + labs[:m], labs), ext + labs[m:])
                        assert simplify(product) is s, (seed, n, m)
                if type(n) is Elementwise and not any(type(v) is Hole for v in free_vars(n)):
                    entrywise += 1
                    cots = [(B.ONE if not n.ndim else normal_ones(n.shape), ()),
                            (normal_identity(n.shape), n.shape), (simplify(md.sigmoid(x).node), ())]
                    for cot, extra in cots:
                        if cot.shape != extra + n.shape:
                            continue
                        hole = Hole(n.shape, False)
                        slow = simplify(diff.transpose(diff._d_elementwise(n, 0, hole), hole, cot, extra))
                        assert simplify(diff._elementwise_adjoint(n, cot, extra)) is slow, (seed, n, cot)
        except md.MatdiffError:  # 0⁻¹ and the like: refused, as it should be
            continue
    assert claimed > 1000 and views > 500 and entrywise > 200, (claimed, views, entrywise)
