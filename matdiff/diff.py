"""Differentiation by differentials: one rule per node type, and transposition.

Each rule gives the differential of a node contributed by its k-th operand, as an IR
expression linear in that operand's differential dX (a ``Hole``), written as in the
Tomassoli tutorial: d(AXB) = A dX B, d(X⁻¹) = −X⁻¹ dX X⁻¹, d det X = det X tr(X⁻¹ dX),
d f(X) = f′(X) ⊙ dX.

Derivatives are then read off by moving dX out of the differential: a linear expression
built of contractions, sums and reshapes is transposed mechanically (for a contraction,
the cotangent simply takes dX's place among the factors).  Applied from the output down
to the variable, this is reverse mode, so the cotangents of shared subexpressions (the
layers of a network) are computed once and derivatives grow linearly with depth.  A
Jacobian is the same pass with an identity seed; a Hessian differentiates a Jacobian.
"""
from __future__ import annotations

import numpy as np

from . import build as B
from . import dims as D_  # the sizes 2n and mn of the Fréchet derivatives' block matrices
from . import functions as F_
from .errors import NotSupportedError
from .ir import (Basis, Cholesky, Const, Contract, Delta, Det, DivDiff, DivDiff2, DivDiff3, DivDiff3Apply,
                 EigGap, Eigh, Elementwise, Frechet, Funm, Hole, Inv, LogDet, LogSumExp, MatFn, Node, Phi,
                 Pinv, Reshape, ScalarFn, Softmax, Sum, Svd, Var, free_vars, is_ones, walk)
from .simplify import (keeps_variables, normal_identity, normal_ones, normal_scaled, simplify, stable_forms,
                       viewed_as_itself)

RULES: dict = {}


def rule(node_type):
    def register(f):
        RULES[node_type] = f
        return f
    return register


@rule(Contract)  # d(A·B·C) = dA·B·C + A·dB·C + A·B·dC, the k-th term
def _d_contract(n, k, dx):
    return Contract(n.operands[:k] + (dx,) + n.operands[k + 1:], n.labels, n.out)


@rule(Sum)  # d(Σ cₖ Xₖ) = Σ cₖ dXₖ
def _d_sum(n, k, dx):
    return B.scale(n.terms[k][0], dx)


@rule(Elementwise)  # d f(X) = f′(X) ⊙ dX
def _d_elementwise(n, k, dx):
    return B.hadamard(n.fn.derivative(n.arg), dx)


@rule(Inv)  # d(X⁻¹) = −X⁻¹ dX X⁻¹
def _d_inv(n, k, dx):
    return B.scale(-1, B.einsum("ij,jk,kl->il", n, dx, n))


@rule(Pinv)  # Golub–Pereyra, at constant (full) rank; P = X⁺
def _d_pinv(n, k, dx):
    """dP = −P dX P + PPᵀdXᵀ(I − XP) + (I − PX)dXᵀPᵀP, written out term by term."""
    x = n.arg
    return B.linear([
        (-1, B.einsum("ia,ab,bj->ij", n, dx, n)),
        (1, B.einsum("ia,ba,jb->ij", n, n, dx)),
        (-1, B.einsum("ia,ba,cb,cd,dj->ij", n, n, dx, x, n)),
        (1, B.einsum("ai,ba,bj->ij", dx, n, n)),
        (-1, B.einsum("ia,ab,cb,dc,dj->ij", n, x, dx, n, n))], n.shape)


@rule(Det)  # d det X = det X · tr(X⁻¹ dX)
def _d_det(n, k, dx):
    return B.einsum(",ji,ij->", n, Inv(n.arg), dx)


@rule(LogDet)  # d log det X = tr(X⁻¹ dX)
def _d_logdet(n, k, dx):
    return B.einsum("ji,ij->", Inv(n.arg), dx)


@rule(Softmax)  # d s(X) = s ⊙ dX − s ⊙ Σ_axis(s ⊙ dX), s summed along the axis
def _d_softmax(n, k, dx):
    lab = tuple(range(n.ndim))
    other = lab[:n.axis] + (n.ndim,) + lab[n.axis + 1:]
    return B.linear([(1, B.hadamard(n, dx)),
                     (-1, Contract((n, n, dx), (lab, other, other), lab))], n.shape)


@rule(LogSumExp)  # d lse(X) = Σ_axis softmax(X) ⊙ dX
def _d_logsumexp(n, k, dx):
    lab = tuple(range(dx.ndim))
    return Contract((Softmax(n.axis, n.arg), dx), (lab, lab), lab[:n.axis] + lab[n.axis + 1:])


@rule(ScalarFn)  # d ∇ᵏλ(X) = ∇ᵏ⁺¹λ(X) · dX, contracting X's axes
def _d_scalar_fn(n, k, dx):
    p, m = n.ndim, dx.ndim
    return Contract((ScalarFn(n.fn, n.order + 1, n.arg), dx),
                    (tuple(range(p + m)), tuple(range(p, p + m))), tuple(range(p)))


@rule(MatFn)  # Daleckii–Krein: d f(S) = U (F ⊙ (Uᵀ dS U)) Uᵀ, F the divided differences of f
def _d_matfn(n, k, dx):
    U, lam = Eigh("vectors", n.arg), Eigh("values", n.arg)
    F = DivDiff(n.fn, lam)
    i, a, b, j, kk, l_ = range(6)
    return Contract((U, F, U, dx, U, U), ((i, a), (a, b), (j, a), (j, kk), (kk, b), (l_, b)), (i, l_))


@rule(Eigh)  # dλᵢ = uᵢᵀ dS uᵢ; dU = U (G ⊙ (Uᵀ dS U)), G_ij = 1/(λⱼ − λᵢ) (distinct λ)
def _d_eigh(n, k, dx):
    U = Eigh("vectors", n.arg)
    if n.part == "values":
        return Contract((U, dx, U), ((1, 0), (1, 2), (2, 0)), (0,))
    G = EigGap(Eigh("values", n.arg))  # dU_ij = Σ_k U_ik G_kj Σ_ab U_ak dS_ab U_bj
    return Contract((U, G, U, dx, U), ((0, 2), (2, 1), (3, 2), (3, 4), (4, 1)), (0, 1))


@rule(Svd)  # dσᵢ = uᵢᵀ dX vᵢ (simple, nonzero σᵢ); dσ₁ = u₁ᵀ dX v₁
def _d_svd(n, k, dx):
    if n.part == "values":
        U, V = Svd("left", n.rank, n.arg), Svd("right", n.rank, n.arg)
        return Contract((U, dx, V), ((1, 0), (1, 2), (2, 0)), (0,))
    if n.part == "top":
        u, v = Svd("top_left", n.rank, n.arg), Svd("top_right", n.rank, n.arg)
        return Contract((u, dx, v), ((0,), (0, 1), (1,)), ())
    if n.rank is None:
        raise NotSupportedError("the second derivative of the spectral norm ‖X‖₂ needs the number "
                                "of singular values: md.norm(X, 2, smaller='n'), or integer dims")
    dU, dV = _singular_vectors_differentials(n.rank, n.arg, dx)
    if n.part == "left":
        return dU
    if n.part == "right":
        return dV
    first = Basis(n.rank, 0)  # u₁ = U e₁, v₁ = V e₁
    return Contract((dU if n.part == "top_left" else dV, first), ((0, 1), (1,)), (0,))


def _singular_vectors_differentials(rank, x, dx):
    """dU = U (F ⊙ (PΣ + ΣPᵀ)) + (I − UUᵀ) dX V Σ⁻¹ and dV = V (F ⊙ (ΣP + PᵀΣ)) +
    (I − VVᵀ) dXᵀ U Σ⁻¹, with P = Uᵀ dX V and Fᵢⱼ = 1/(σⱼ² − σᵢ²) (distinct, nonzero σ)."""
    U, V, s = Svd("left", rank, x), Svd("right", rank, x), Svd("values", rank, x)
    F = EigGap(F_.apply("pow", s, 2.0))
    inv = F_.apply("pow", s, -1.0)
    i, k, m, p, q, a = range(6)
    dU = B.add(
        Contract((U, F, U, dx, V, s), ((i, k), (k, m), (p, k), (p, q), (q, m), (m,)), (i, m)),
        Contract((U, F, s, U, dx, V), ((i, k), (k, m), (k,), (p, m), (p, q), (q, k)), (i, m)),
        Contract((dx, V, inv), ((i, q), (q, m), (m,)), (i, m)),
        B.scale(-1.0, Contract((U, U, dx, V, inv), ((i, a), (p, a), (p, q), (q, m), (m,)), (i, m))))
    dV = B.add(
        Contract((V, F, s, U, dx, V), ((i, k), (k, m), (k,), (p, k), (p, q), (q, m)), (i, m)),
        Contract((V, F, U, dx, V, s), ((i, k), (k, m), (p, m), (p, q), (q, k), (m,)), (i, m)),
        Contract((dx, U, inv), ((q, i), (q, m), (m,)), (i, m)),
        B.scale(-1.0, Contract((V, V, dx, U, inv), ((i, a), (q, a), (p, q), (p, m), (m,)), (i, m))))
    return dU, dV


@rule(Funm)  # d f(X) = L_f(X, dX), the Fréchet derivative
def _d_funm(n, k, dx):
    return Frechet(n.fn, n.arg, dx)


@rule(Frechet)  # linear in E; in X, the block-triangular identity (below)
def _d_frechet(n, k, dx):
    fn, x, e = n.args
    if k == 1:  # the children are X and E
        return Frechet(fn, x, dx)
    return _second_frechet(fn, x, e, dx)


def _batched_frechet(fn, x, cot, extra):
    """[L_f(X, Gₑ) for each index e of ``extra``], Gₑ = cot[e], as one Fréchet derivative of a
    block-diagonal matrix: L_f(I ⊗ X, blockdiag(Gₑ)) = blockdiag(L_f(X, Gₑ)), f(I ⊗ X) being
    I ⊗ f(X). Its size is (m·d)², m the number of entries of ``extra``: a Jacobian or Hessian
    through a general matrix function costs that (md.hvp does not)."""
    d = x.shape[0]
    m = D_.size(extra)
    big = D_.mul(m, d)
    dims = {0: m, 2: m, 1: d, 3: d}
    g = Reshape(cot, (m, d, d))
    blocks = Reshape(B.contract((g, Delta(m, 2)), ((0, 1, 3), (0, 2)), (0, 1, 2, 3), dims), (big, big))
    copies = Reshape(B.contract((Delta(m, 2), x), ((0, 2), (1, 3)), (0, 1, 2, 3), dims), (big, big))
    out = Reshape(Frechet(fn, copies, blocks), (m, d, m, d))
    return Reshape(B.contract((out,), ((0, 1, 0, 2),), (0, 1, 2), {0: m, 1: d, 2: d}), extra + (d, d))


def _second_frechet(fn, x, e, dx):
    """d L_f(X, E)[dX], the second Fréchet derivative, as the (1, 2) block of
    L_f([[X, E], [0, X]], [[dX, 0], [0, dX]]): f of a block upper-triangular matrix has
    f(X) on its diagonal and L_f(X, E) above it, so differentiating it along dX on both
    diagonal blocks differentiates L_f(X, E) (Higham, Functions of Matrices, §3.2)."""
    d = x.shape[0]
    two = B.contract  # 2 × 2 block matrices, as (2, d, 2, d) arrays laid out as (2d, 2d)
    first, second = Basis(2, 0), Basis(2, 1)
    big, dims = D_.mul(2, d), {0: 2, 2: 2, 1: d, 3: d}

    def block(row, col, m):
        return two((row, col, m), ((0,), (2,), (1, 3)), (0, 1, 2, 3), dims)

    y = Reshape(B.add(block(first, first, x), block(first, second, e), block(second, second, x)), (big, big))
    diag = Reshape(two((Delta(2, 2), dx), ((0, 2), (1, 3)), (0, 1, 2, 3), dims), (big, big))
    out = Reshape(Frechet(fn, y, diag), (2, d, 2, d))
    return two((out, first, second), ((0, 1, 2, 3), (0,), (2,)), (1, 3))


@rule(EigGap)  # G_ij = 1/(λⱼ − λᵢ): dG_ij = G_ij² (dλᵢ − dλⱼ)
def _d_eiggap(n, k, dx):
    square = ((0, 1), (0, 1))
    return B.add(Contract((n, n, dx), square + ((0,),), (0, 1)),
                 B.scale(-1.0, Contract((n, n, dx), square + ((1,),), (0, 1))))


@rule(DivDiff)  # dF_ij = A_ij dλᵢ + A_ji dλⱼ, A the confluent second divided differences
def _d_divdiff(n, k, dx):
    lam = n.arg
    second = simplify(_along_ones(n.fn.derivative(lam), lam))  # f″(λ), entry by entry
    A = DivDiff2(n.fn, lam, second)
    return B.add(Contract((A, dx), ((0, 1), (0,)), (0, 1)), Contract((A, dx), ((1, 0), (1,)), (0, 1)))


@rule(DivDiff2)
@rule(DivDiff3)
@rule(DivDiff3Apply)
def _d_divdiff2(n, k, dx):
    raise NotSupportedError("third derivatives through a matrix function are not supported; "
                            "first and second derivatives are")


def _along_ones(node: Node, x: Node) -> Node:
    """The derivative of an element-wise expression of the vector x along 1 (forward mode):
    for node = g(x) entry by entry, g′(x)."""
    memo: dict = {}

    def go(n):
        if n is x:
            return B.ones(x.shape)
        if n in memo:
            return memo[n]
        parts = []
        for i, c in enumerate(n.children):
            if c is x or any(d is x for d in walk(c)):
                parts.append(RULES[type(n)](n, i, go(c)))
        memo[n] = B.add(*parts) if parts else B.zeros(n.shape)
        return memo[n]

    return go(node)


@rule(Cholesky)  # S = LLᵀ: dL = L Φ(L⁻¹ dS L⁻ᵀ), Φ the lower triangle with the diagonal halved
def _d_cholesky(n, k, dx):
    inv = Inv(n)
    return B.einsum("ia,aj->ij", n, phi(B.einsum("ab,bc,dc->ad", inv, dx, inv)))


@rule(Phi)  # linear: d Φ(X) = Φ(dX)
def _d_phi(n, k, dx):
    return phi(dx)


def phi(x: Node) -> Node:
    """Φ(x) over x's last two axes; Φ(0) = 0."""
    return x if B.is_zero(x) else Phi(x)


@rule(Reshape)  # d reshape(X) = reshape(dX)
def _d_reshape(n, k, dx):
    return Reshape(dx, n.shape)


# --------------------------------------------------------------------------- transposition


def transpose(lin: Node, hole: Hole, cot: Node, extra: tuple) -> Node:
    """The adjoint of ``hole`` in the linear expression ``lin``, given the cotangent ``cot``
    of ``lin`` (shape ``extra + lin.shape``): the G with ⟨cot, lin(dX)⟩ = ⟨G, dX⟩."""
    if lin is hole:
        return cot
    if isinstance(lin, Sum):
        if not lin.terms:
            return B.zeros(extra + hole.shape)
        parts = [transpose(t, hole, B.scale(c, cot), extra) for c, t in lin.terms if hole in free_vars(t)]
        # one part of a tensor: itself, whose normal form a sum of it alone has (a normal form
        # normalises to itself; a scalar 0 would not: the sum of it alone is the empty sum)
        return parts[0] if len(parts) == 1 and (extra or hole.shape) else B.add(*parts)
    if isinstance(lin, Contract):
        (k,) = [i for i, op in enumerate(lin.operands) if hole in free_vars(op)]
        first = max([x for lab in lin.labels for x in lab] + [-1]) + 1
        ext = tuple(range(first, first + len(extra)))
        others = [i for i in range(len(lin.operands)) if i != k]
        dims = {**lin.label_dims(), **dict(zip(ext, extra))}
        adj = B.contract((cot,) + tuple(lin.operands[i] for i in others),
                         (ext + lin.out,) + tuple(lin.labels[i] for i in others),
                         ext + lin.labels[k], dims)
        return transpose(lin.operands[k], hole, adj, extra)
    if isinstance(lin, Reshape):
        return transpose(lin.arg, hole, Reshape(cot, extra + lin.arg.shape), extra)
    if isinstance(lin, Phi):  # Φ is its own adjoint, entry by entry over the last two axes
        return transpose(lin.arg, hole, phi(cot), extra)
    if isinstance(lin, Frechet):  # ⟨G, L(X, E)⟩ = ⟨L(Xᵀ, G), E⟩
        fn, x, e = lin.args
        if extra:  # one adjoint per entry of the output: L(Xᵀ, Gₑ) for every e, all at once
            return transpose(e, hole, _batched_frechet(fn, B.transpose(x), cot, extra), extra)
        return transpose(e, hole, Frechet(fn, B.transpose(x), cot), extra)
    raise AssertionError(f"not linear in the differential: {type(lin).__name__}")


# --------------------------------------------------------------------------- derivatives


def jacobian(f: Node, x: Var) -> Node:
    """∂f/∂x with shape f.shape + x.shape, simplified."""
    return jacobians(f, [x])[0]


def jacobians(f: Node, xs: list) -> list:
    """[∂f/∂x for x in xs] from one reverse pass: cotangents of shared subexpressions are
    computed once for all variables, so the gradients of a deep network by each of its
    layers cost as much together as the deepest one alone.  Logarithms of σ, 1 − σ and
    softmax are first put in their log-space forms (``simplify.stable_forms``), so that the
    derivative is finite wherever the function is."""
    f = stable_forms(f)
    extra = f.shape
    products: dict = {}  # keeps_variables' answers for this pass
    wanted = {x for x in xs if _depends(f, {x}, products)}
    found = {}
    if wanted:
        depends = _dependence(wanted, products)
        holes = any(type(v) is Hole for v in free_vars(f))  # (none: no node of f holds one)
        cotangents = {f: [normal_identity(f.shape)]}  # the seed, as its normal form
        for n in _parents_first(f, depends):
            parts = cotangents.pop(n, None)
            if parts is None:  # U or F whose only use was a Daleckii–Krein group (below)
                continue
            cot = simplify(parts[0] if len(parts) == 1 else B.add(*parts))
            if isinstance(n, Var):
                found[n] = simplify(_symmetrise(cot, extra) if n.symmetric in (True, "spd") else cot)
                continue
            # both groupings read S's eigenvectors among n's operands: none, no grouping
            eigen = type(n) is Contract and Eigh in map(type, n.operands)
            groups = _daleckii_krein_groups(n) if eigen else ()
            for g in groups:  # the second-order Daleckii–Krein rule, straight to S
                if depends(g[-1]):
                    cotangents.setdefault(g[-1], []).append(_daleckii_krein_adjoint(n, g, cot, extra))
            grouped = {k for g in groups for k in g[:-1]} if groups else ()
            spectral = _matrix_function_groups(n) if eigen else ()
            for g in spectral:  # U diag(g(λ)) Uᵀ as g(S): Daleckii–Krein's rule, straight to S
                if depends(g[-1]):
                    cotangents.setdefault(g[-1], []).append(_matrix_function_adjoint(n, g, cot, extra))
                for w, adj in _matrix_function_weight_adjoints(n, g, cot, extra, depends):
                    cotangents.setdefault(w, []).append(adj)  # the scalar weights': t of tΣg(λᵢ)
            if spectral:
                grouped = set(grouped) | {k for g in spectral for k in (g[0], g[1], *g[2])}
            for k, child in enumerate(n.children):
                if k in grouped:
                    continue
                if depends(child):
                    if type(n) is Sum:  # d(Σ cₖ Xₖ) = cₖ dXₖ, transposed as transpose writes it
                        c = n.terms[k][0]
                        cotangents.setdefault(child, []).append(cot if c == 1 else normal_scaled(c, cot))
                        continue
                    if type(n) is Contract and not (holes and _holds_hole(n, child.shape)):
                        # the transposition of n with dX in place of operand k, without
                        # building that linear expression first
                        adj = _contract_adjoint(n, k, cot, extra)
                    elif type(n) is Elementwise and not holes:
                        # d f = f′(u) ⊙ dX transposed as ``transpose`` does it, without building
                        # that product: cot ⊙ f′(u) (f′(u) itself, for the seed 1 or a
                        # cotangent of ones, where that is its normal form)
                        adj = _elementwise_adjoint(n, cot, extra)
                    else:
                        hole = Hole(child.shape, False)
                        adj = transpose(RULES[type(n)](n, k, hole), hole, cot, extra)
                    cotangents.setdefault(child, []).append(adj)
    return [found[x] if x in found else B.zeros(extra + x.shape) for x in xs]


def _daleckii_krein_groups(n: Contract) -> list:
    """The groups (F, U₁, U₂, U₃, U₄, S) of n's operands that read U (F ⊙ (Uᵀ · U)) Uᵀ, the
    first derivative of a matrix function f(S) = U f(Λ) Uᵀ: a divided-difference matrix
    F_pq = f[λ_p, λ_q] of S's eigenvalues, each of its labels p and q read by exactly two
    more operands, S's eigenvectors, in their column — the projectors uₚuₚᵀ and u_qu_qᵀ — and
    by nothing else (positions in n's operands, then S); for the functions whose second divided
    differences are computed accurately (``DivDiff3.has_series``; others keep the rules of U and F)."""
    groups = []
    ops, labs = n.operands, n.labels
    for kf, (op, lab) in enumerate(zip(ops, labs)):
        if type(op) is not DivDiff or lab[0] == lab[1] or not isinstance(op.arg, Eigh) \
                or op.arg.part != "values" or lab[0] in n.out or lab[1] in n.out \
                or not DivDiff3.has_series(op.fn):
            continue
        s, pairs = op.arg.arg, []
        for p in lab:
            readers = [k for k, lb in enumerate(labs) if k != kf and p in lb]
            if len(readers) != 2 or not all(
                    type(ops[k]) is Eigh and ops[k].part == "vectors" and ops[k].arg is s
                    and labs[k][1] == p and labs[k][0] != p for k in readers):
                break
            pairs += readers
        else:
            groups.append((kf, *pairs, s))
    return groups


def _daleckii_krein_adjoint(n: Contract, group: tuple, cot: Node, extra: tuple) -> Node:
    """⟨cot, dn⟩ as a function of dS for the operands of one ``_daleckii_krein_groups``
    group, differentiated together: d Σ_pq F_pq P_p C P_q = Σ_pqk f[λ_p, λ_q, λ_k]
    (P_p dS P_k C P_q + P_p C P_k dS P_q), P_p = uₚuₚᵀ — the second-order Daleckii–Krein
    rule, with the second divided differences T = DivDiff3 in place of the eigenvectors'
    1/(λ_k − λ_p) times differences of F, which cancel to ε/gap where eigenvalues are close
    in absolute terms (Hessians of aᵀexpm(S)a at eigenvalues 1e-9 apart)."""
    kf, k1, k2, k3, k4, s = group
    ops, labs = list(n.operands), list(n.labels)
    p, q = labs[kf]
    U, T = ops[k1], DivDiff3(ops[kf].fn, ops[kf].arg)
    first = max([x for lab in labs for x in lab] + [-1]) + 1
    ext = tuple(range(first, first + len(extra)))
    a, b, c = first + len(extra), first + len(extra) + 1, first + len(extra) + 2  # dS_ab, the new k
    dims = {**n.label_dims(), **dict(zip(ext, extra)), a: s.shape[0], b: s.shape[1], c: s.shape[0]}
    rest = [k for k in range(len(ops)) if k not in group[:-1]]
    base_ops = [cot] + [ops[k] for k in rest]
    base_labs = [ext + n.out] + [labs[k] for k in rest]
    terms = []
    for (m1, m2), (o1, o2), col in (((k1, k2), (k3, k4), p), ((k3, k4), (k1, k2), q)):
        # P_col dS P_c in place of P_col: U(r₁, col) U(a, col) dS_ab U(b, c) U(r₂, c)
        r1, r2 = labs[m1][0], labs[m2][0]
        if not extra:  # where the rest splits in two, M = Σ_y T_xyc X_xy Y_yc without T (n³)
            split = _split_rest(base_ops, base_labs, r1, r2, (labs[o1][0], labs[o2][0]))
            if split is not None:
                x, y = c + 1, c + 2  # the points λ_col (x) and λ_other (y); c as above
                dims2 = {**dims, x: s.shape[0], y: s.shape[0]}
                sides = ([(U, (r1, x))], [(U, (r2, c))])
                for side, r in zip(split[2], (labs[o1][0], labs[o2][0])):
                    sides[side].append((U, (r, y)))
                X, Y = (B.contract(tuple(o for o, _ in part) + tuple(o for o, _ in extra_),
                                   tuple(lb for _, lb in part) + tuple(lb for _, lb in extra_), out, dims2)
                        for part, extra_, out in ((split[0], sides[0], (x, y)), (split[1], sides[1], (y, c))))
                M = DivDiff3Apply(ops[kf].fn, ops[kf].arg, X, Y)
                terms.append(B.contract((U, M, U), ((a, x), (x, c), (b, c)), (a, b), dims2))
                continue
        terms.append(B.contract(
            tuple(base_ops) + (U, U, U, U, ops[o1], ops[o2], T),
            tuple(base_labs) + ((r1, col), (a, col), (b, c), (r2, c), labs[o1], labs[o2], (p, q, c)),
            ext + (a, b), dims))
    return B.add(*terms)


def _matrix_function_groups(n: Contract) -> list:
    """The groups (U₁, U₂, (g₁, g₂, …), g, S) of n's operands that read U diag(g(λ)) Uᵀ: a
    label summed over, read by exactly two operands S's eigenvectors U, in their column (with
    different rows), and otherwise only by vectors gₖ(λ) over that label alone whose product g
    of S's eigenvalues λ is Σⱼ wⱼhⱼ(λ), wⱼ scalar weights (t, s of tλ ⊙ e^λ + sλ³) and hⱼ functions
    of the table or traced ones (``_weighted_eigenvalue_functions``: positions in n's operands,
    then ((wⱼ, hⱼ), …), then S). Such a product is the matrix
    function g(S) — the gradient U diag(f′(λ)) Uᵀ of Σf(λᵢ), f′ = σ(1 − σ) for f = σ — so its
    differential is Daleckii–Krein's, U (G ⊙ (Uᵀ dS U)) Uᵀ with G the exact divided
    differences of g, rather than the eigenvectors' rule, whose 1/(λⱼ − λᵢ) times differences
    of g(λ) cancels to ε/gap where eigenvalues are close in absolute terms."""
    ops, labs = n.operands, n.labels
    groups = []
    for a in sorted({x for lab in labs for x in lab} - set(n.out)):
        readers = [k for k, lab in enumerate(labs) if a in lab]
        us = [k for k in readers if type(ops[k]) is Eigh and ops[k].part == "vectors" and labs[k][1] == a]
        gs = tuple(k for k in readers if k not in us)
        if len(us) != 2 or ops[us[0]] is not ops[us[1]] or labs[us[0]][0] in (a, labs[us[1]][0]) \
                or labs[us[1]][0] == a or not gs or any(labs[k] != (a,) for k in gs):
            continue
        s = ops[us[0]].arg
        terms = _weighted_eigenvalue_functions(tuple(ops[k] for k in gs), Eigh("values", s))
        if terms is not None:
            groups.append((us[0], us[1], gs, terms, s))
    return groups


def _weighted_eigenvalue_functions(factors: tuple, lam: Node):
    """The product g(λ) of ``factors`` as Σₖ wₖ hₖ(λ): ((wₖ, hₖ), …), wₖ a tuple of scalar
    (0-dim) nodes not reading λ's matrix — t of t·λ ⊙ exp(λ), s of s·exp(λ) + s·λ³ — and hₖ
    an element-wise function (``_eigenvalue_function``) of the terms with those weights;
    None where some hₖ is none, or no term reads λ."""
    s = lam.arg
    combos = [((), ())]
    for g in factors:
        combos = [(w + w2, p + (p2,)) for w, p in combos for w2, p2 in _weighted_terms(g, s)]
    by_weight: dict = {}
    for w, parts in combos:
        w = tuple(sorted(w, key=lambda x: x.skey))
        by_weight.setdefault(w, []).append(parts[0] if len(parts) == 1 else B.hadamard(*parts))
    terms = []
    for w, parts in by_weight.items():
        body = parts[0] if len(parts) == 1 else B.add(*parts)
        if type(body) is Sum and len({c for c, _ in body.terms}) == 1 and body.terms[0][0] != 1:
            # 2λ ⊙ exp(λ) + 2exp(λ): the weight 2 and h(u) = u exp(u) + exp(u)
            w = w + (B.const(body.terms[0][0]),)
            body = B.linear([(1.0, x) for _, x in body.terms], body.shape)
        fn = _eigenvalue_function((body,), lam)
        if fn is None:
            return None
        terms.append((w, fn))
    return tuple(terms)


def _weighted_terms(g: Node, s: Node) -> list:
    """The vector g as Σₖ wₖ pₖ: [(wₖ, pₖ)], wₖ the tuple of g's scalar (0-dim, not constant)
    factors in which the matrix s does not occur, pₖ the rest of the term."""
    if type(g) is Sum:  # its terms by weight, each group a sum of the terms' rests (g itself if none)
        split = [(c, w, p) for c, term in g.terms for w, p in _weighted_terms(term, s)]
        if not any(w for _, w, _ in split):
            return [((), g)]
        by_weight: dict = {}
        for c, w, p in split:
            by_weight.setdefault(tuple(sorted(w, key=lambda x: x.skey)), []).append((c, p))
        return [(w, B.linear(terms, g.shape)) for w, terms in by_weight.items()]
    if type(g) is Contract and len(g.out) == 1 and all(lab in ((), g.out) for lab in g.labels):
        ks = [k for k, (op, lab) in enumerate(zip(g.operands, g.labels))
              if not lab and type(op) is not Const and s not in walk(op)]
        if ks:
            rest = [k for k in range(len(g.operands)) if k not in ks]
            part = B.contract(tuple(g.operands[k] for k in rest), tuple(g.labels[k] for k in rest),
                              g.out, g.label_dims())
            return [(tuple(g.operands[k] for k in ks) + w, p) for w, p in _weighted_terms(part, s)]
    return [((), g)]


def _matrix_function_whole(n: Contract, group: tuple, weights: tuple, fn) -> tuple:
    """(n's term with weights·fn(S) in place of U diag(g(λ)) Uᵀ, the position of fn(S) in it)."""
    k1, k2, gs, _, s = group
    ops, labs = n.operands, n.labels
    rest = [k for k in range(len(ops)) if k not in (k1, k2, *gs)]
    return Contract(tuple(ops[k] for k in rest) + weights + (MatFn(fn, s),),
                    tuple(labs[k] for k in rest) + ((),) * len(weights) + ((labs[k1][0], labs[k2][0]),),
                    n.out), len(rest) + len(weights)


def _matrix_function_adjoint(n: Contract, group: tuple, cot: Node, extra: tuple) -> Node:
    """⟨cot, dn⟩ as a function of dS for one ``_matrix_function_groups`` group: n with
    Σₖ wₖ hₖ(S) in place of U diag(g(λ)) Uᵀ, differentiated in each hₖ(S) by Daleckii–Krein's
    rule (MatFn's)."""
    s, parts = group[-1], []
    for weights, fn in group[3]:
        whole, k = _matrix_function_whole(n, group, weights, fn)
        adj = _contract_adjoint(whole, k, cot, extra)
        hole = Hole(s.shape, False)
        parts.append(transpose(_d_matfn(whole.operands[k], 0, hole), hole, adj, extra))
    return parts[0] if len(parts) == 1 else B.add(*parts)


def _matrix_function_weight_adjoints(n: Contract, group: tuple, cot: Node, extra: tuple, depends) -> list:
    """[(w, ⟨cot, dn⟩ as a function of dw)] for the weights w of one ``_matrix_function_groups``
    group that depend on a variable wanted (md.hessian of t·Σg(λᵢ) in (S, t))."""
    out = []
    for weights, fn in group[3]:
        for j, w in enumerate(weights):
            if depends(w):
                whole, k = _matrix_function_whole(n, group, weights, fn)
                out.append((w, _contract_adjoint(whole, k - len(weights) + j, cot, extra)))
    return out


# σ′ = σ(1 − σ) as ¼(1 − tanh²(u/2)), whose divided differences by the chain rule,
# −¼(tanh(x/2) + tanh(y/2))·tanh[x/2, y/2]/2 (the constant's are 0), keep their relative
# accuracy at every u: σ(1 − σ) is ¼ to rounding at tiny u, where its divided differences by
# Leibniz's rule, σ[x, y](1 − σ(x) − σ(y)), cancel to 0 (tanh′ = 1 − tanh² is in that form)
SLOPES = {"sigmoid": lambda t: B.linear([(0.25, B.ones(t.shape)),
                                          (-0.25, F_.power(F_.apply("tanh", B.scale(0.5, t)), 2))], t.shape)}
_EIGENVALUE_FUNCTIONS: dict = {}  # g(t) → its Function: one per expression, so that nodes share it


def _eigenvalue_function(factors: tuple, lam: Node):
    """The element-wise function g with g(λ) the product of ``factors``, where each is built
    from λ, constants, sums, products and analytic functions of the table (those with exact
    divided differences, ``DivDiff3.SERIES``); None for anything else (another variable, a
    kink — relu, |·|, step, sign — or a user's function: they keep the eigenvectors' rule).
    A single function of the table applied to λ is itself; the derivative of a function h of
    the table (σ(1 − σ), 1 − tanh², 1 + tan², (1 + u)⁻¹, (1 + u²)⁻¹) is a traced function
    (``TracedExpression``) named h′, printed Δsigmoid′(λ); any other g — u·eᵘ + eᵘ, the
    gradient of Σλᵢe^λᵢ — is a traced function named h, printed Δh(λ)  where h(u) = u·exp(u)
    + exp(u) (printing names it and writes its definition)."""
    if len(factors) == 1 and type(factors[0]) is Elementwise and factors[0].arg is lam \
            and factors[0].fn.builtin and factors[0].fn.name in DivDiff3.SERIES:
        return factors[0].fn
    t = Var("_t", ("_n",), False)
    parts = [_substituted(g, lam, t, strict=True) for g in factors]
    if any(p is None for p in parts) or not any(t in free_vars(p) for p in parts):
        return None
    body = simplify(parts[0] if len(parts) == 1 else B.hadamard(*parts))
    if t not in free_vars(body):
        return None
    if type(body) is Elementwise and body.arg is t:  # λ² written λ ⊙ λ: the table's u²
        return body.fn
    if body not in _EIGENVALUE_FUNCTIONS:
        h = next((h for h in F_.TABLE if h != "pow" and h not in DivDiff3.KINKS
                  and simplify(F_.fn(h).derivative(t)) is body), None)
        traced = TracedExpression(simplify(SLOPES[h](t)) if h in SLOPES else body, t)
        _EIGENVALUE_FUNCTIONS[body] = F_.Function("h" if h is None else f"{h}′", numpy=traced.values,
                                                  deriv=traced)
    return _EIGENVALUE_FUNCTIONS[body]


class TracedExpression:
    """An element-wise function given by its expression ``on_entries`` of the vector t, as
    md.matrix_function's traced callables are (evaluate and code generation read the same
    two attributes): its derivative by forward mode along ones (``_along_ones``), its values
    at an array entry by entry."""

    def __init__(self, on_entries: Node, t: Var):
        self.on_entries, self.t = on_entries, t
        self.slope = simplify(_along_ones(on_entries, t))

    def __call__(self, z: Node) -> Node:  # g′(z), as a builder of the function table
        return _substituted(self.slope, self.t, z)

    def at(self, u: Node) -> Node:
        """g(u), its expression of a scalar u (the where-clause's definition h(u) = …)."""
        return _substituted(self.on_entries, self.t, u)

    def __repr__(self):  # no object id: nodes holding g sort the same in every run
        return f"TracedExpression({self.on_entries.skey.hex()})"

    def values(self, x):
        """g at the entries of the array x."""
        x = np.asarray(x, dtype=float)
        memo: dict = {}

        def go(n):
            if n not in memo:
                if n is self.t:
                    memo[n] = x
                elif type(n) is Const:
                    memo[n] = float(n.value)
                elif type(n) is Delta:
                    memo[n] = np.ones_like(x)
                elif type(n) is Sum:
                    memo[n] = sum((c * go(term) for c, term in n.terms), np.zeros_like(x))
                elif type(n) is Contract:
                    memo[n] = np.prod(np.broadcast_arrays(*(go(op) for op in n.operands), x)[:-1], axis=0)
                else:  # an Elementwise node of the table
                    memo[n] = n.fn.implementation()(go(n.arg))
            return memo[n]

        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return np.broadcast_to(go(self.on_entries), x.shape).copy()


def _substituted(node: Node, old: Node, new: Node, strict: bool = False):
    """The element-wise expression ``node`` of the vector ``old`` with ``new`` (any shape) in
    its place, entry by entry; with ``strict``, None where node is not such an expression
    (of old, constants, ones, sums, entry-wise products and analytic functions of the table)."""
    memo: dict = {}
    axes = tuple(range(new.ndim))

    def go(n):
        if n in memo:
            return memo[n]
        if n is old:
            out = new
        elif type(n) is Const:
            out = n
        elif type(n) is Delta and n.order == 1 and n.shape == old.shape:
            out = B.ones(new.shape)
        elif type(n) is Sum and n.shape == old.shape:
            terms = [(c, go(t)) for c, t in n.terms]
            out = None if any(t is None for _, t in terms) else Sum(tuple(terms), new.shape)
        elif type(n) is Contract and n.shape == old.shape and all(
                lab == n.out or (not lab and type(op) is Const) for op, lab in zip(n.operands, n.labels)):
            ops = [op if not lab else go(op) for op, lab in zip(n.operands, n.labels)]
            out = None if any(op is None for op in ops) else \
                Contract(tuple(ops), tuple(axes if lab else () for lab in n.labels), axes)
        elif type(n) is Elementwise and n.shape == old.shape and n.fn.builtin and \
                (not strict or n.fn.name in DivDiff3.SERIES):
            arg = go(n.arg)
            out = None if arg is None else Elementwise(n.fn, arg)
        elif strict:
            out = None
        else:
            raise AssertionError(f"not an element-wise expression: {type(n).__name__}")
        memo[n] = out
        return out

    return go(node)


def _split_rest(ops: list, labs: list, r1, r2, others: tuple):
    """The operands (ops, labs) of a Daleckii–Krein term other than its eigenvectors, in two
    parts — ([(op, lab)] with r1, [(op, lab)] with r2) — that share no label, and for each of
    ``others`` (the labels at the other point) the part it is in (0 or 1); None where r1 and
    r2 are joined (the term needs T itself)."""
    parent: dict = {}

    def find(u):
        while parent.setdefault(u, u) != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    for lab in labs:
        for u in lab[1:]:
            parent[find(u)] = find(lab[0])
    if find(r1) == find(r2):
        return None
    xs, ys = [], []
    for op, lab in zip(ops, labs):
        (ys if lab and find(lab[0]) == find(r2) else xs).append((op, lab))
    return xs, ys, tuple(1 if find(r) == find(r2) else 0 for r in others)


def _holds_hole(n: Node, shape: tuple) -> bool:
    """Whether n reads the hole ``Hole(shape, False)``, asked without making that node."""
    return any(type(v) is Hole and v.shape == shape and not v.symmetric for v in free_vars(n))


def _contract_adjoint(n: Contract, k: int, cot: Node, extra: tuple) -> Node:
    """``transpose`` of ``_d_contract(n, k, dX)``: the cotangent contracted with every
    operand of n but the k-th, onto that operand's labels."""
    ops, labs = n.operands, n.labels
    if cot is B.ONE and not n.out and len(ops) == 2 and labs[1 - k] == labs[k] and \
            len(set(labs[k])) == len(labs[k]) and viewed_as_itself(ops[1 - k]):
        # a scalar's seed 1 times the other factor, read as the k-th is: the normal form of
        # the product 1·ops[1 - k] is that factor's own
        return ops[1 - k]
    if not extra and len(ops) == 2 and labs[0] == n.out and labs[1] == n.out and n.out and \
            len(set(n.out)) == len(n.out) and is_ones(cot) and viewed_as_itself(ops[1 - k]):
        # an entry-wise product's cotangent of ones (Σ f(x)'s seed at f(x)) times the other
        # factor: 1 ⊙ u, whose normal form is u's own
        return ops[1 - k]
    if extra and len(ops) == 2 and labs[1 - k] == n.out + labs[k] and len(n.out) == len(extra) and \
            len(set(labs[1 - k])) == len(labs[1 - k]) and _is_identity(cot, len(extra)) and \
            viewed_as_itself(ops[1 - k]):
        # a Jacobian's seed, the identity, times the other factor read with n's axes and then
        # the k-th operand's (the Hessian of xᵀAx: I·(Aᵀ + A)): that factor's normal form
        return ops[1 - k]
    if cot is B.ONE and len(ops) == 1 and not n.out:
        lab = labs[0]
        if len(lab) == 2 and lab[0] == lab[1]:
            return Delta(ops[0].shape[0], 2)  # a trace's seed 1 on the diagonal: I, as simplified
        if len(set(lab)) == len(lab):
            return normal_ones(ops[0].shape)  # a sum of all entries: the seed 1 on each, 1
    if extra:
        first = max([x for lab in n.labels for x in lab] + [-1]) + 1
        ext = tuple(range(first, first + len(extra)))
    else:
        ext = ()
    return B.contract((cot,) + ops[:k] + ops[k + 1:], (ext + n.out,) + labs[:k] + labs[k + 1:],
                      ext + labs[k], lambda: {**n.label_dims(), **dict(zip(ext, extra))},
                      extra + ops[k].shape)


def _elementwise_adjoint(n: Elementwise, cot: Node, extra: tuple) -> Node:
    """``_contract_adjoint(_d_elementwise(n, 0, dX), 1, cot, extra)``, the adjoint of f(u)'s
    operand, without building f′(u) ⊙ dX: cot times f′(u) entry by entry, f′(u) itself where
    cot is the seed 1 of a scalar, or ones (Σ f(x)'s), and f′(u) is its own normal form so read."""
    slope = n.fn.derivative(n.arg)
    lab = tuple(range(n.ndim))
    if (not lab and cot is B.ONE or lab and not extra and is_ones(cot)) and viewed_as_itself(slope):
        return slope
    ext = tuple(range(len(lab), len(lab) + len(extra)))
    return B.contract((cot, slope), (ext + lab, lab), ext + lab, None, extra + n.shape)


def _is_identity(cot: Node, m: int) -> bool:
    """Whether the normal form ``cot`` is the identity over m axes twice (a Jacobian's seed,
    ``normal_identity``): δ of order 2, or deltas of order 2 tying output axis j to m + j."""
    if type(cot) is Delta:
        return m == 1 and cot.order == 2
    return type(cot) is Contract and len(cot.operands) == m and cot.out == tuple(range(2 * m)) and \
        all(type(o) is Delta and o.order == 2 for o in cot.operands) and \
        sorted(tuple(sorted(lab)) for lab in cot.labels) == [(j, j + m) for j in range(m)]


def _symmetrise(g: Node, extra: tuple) -> Node:
    """(G + Gᵀ)/2 over the variable's two axes: the gradient within symmetric matrices."""
    e = len(extra)
    perm = tuple(range(e)) + (e + 1, e)
    return B.linear([(0.5, g), (0.5, B.transpose(g, perm))], g.shape)


def _parents_first(f: Node, depends) -> list:
    """Nodes of f that depend on the variables wanted (``depends``, of ``_dependence``), each
    after every node that uses it."""
    order, seen, stack = [], set(), [(f, False)]
    while stack:
        n, done = stack.pop()
        if done:
            order.append(n)
            continue
        if n in seen:
            continue
        seen.add(n)
        stack.append((n, True))
        stack.extend([(c, False) for c in n.children if c not in seen and depends(c)])
    return order[::-1]


def _depends(n: Node, xs: set, products: dict) -> bool:
    """Whether n depends on a variable in xs after simplification: x − x does not, so
    √(x − x) has the derivative 0 and no (x − x)^(−1/2) is ever built.  Where simplification
    surely keeps n's variables (``keeps_variables``: a product of variables and their
    inverses, a function of one, a sum of terms that read different variables), n is not
    simplified to ask: the reverse pass reads the normal forms of operands
    only (AX's in the adjoint of B in AXB, never AXB's), so that work would mostly be spent on
    the question alone (``products``: keeps_variables' memo)."""
    if xs.isdisjoint(free_vars(n)):
        return False
    if n._simple is None and keeps_variables(n, products):  # (a simplified node: asked at once)
        return True
    return not xs.isdisjoint(free_vars(simplify(n)))


def _dependence(xs: set, products: dict):
    """``_depends(·, xs)`` remembered per node for one reverse pass (each node is asked once
    by ``_parents_first`` and again for its adjoint)."""
    memo: dict = {}

    def depends(n: Node) -> bool:
        got = memo.get(n)
        if got is None:
            got = memo[n] = _depends(n, xs, products)
        return got
    return depends
