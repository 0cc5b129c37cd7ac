"""Printing: the text form of every derivative of the table (golden), each also read back
numerically from the notation tree it is printed from, plus LaTeX, index notation and the
naming of repeated subexpressions."""
import numpy as np
import pytest

import matdiff as md
from matdiff import notation as N
from matdiff.check import _sample, _stand_ins
from matdiff.evaluate import variables

from . import notation_eval
from .cases import CASES

BY_NAME = {c.name: c for c in CASES}

# derivative case -> its printed form
GOLDEN = [
    ('tr X', 'I'),
    ('‖σ(XW)W₂ − Y‖² by W', 'Xᵀ(2(S W2 − Y)W2ᵀ ⊙ S ⊙ (1 − S))  where S = σ(XW)'),
    ('Σ softplus(tanh(XW)W₂) by W', 'Xᵀ(σ(tanh(XW)W2)W2ᵀ ⊙ (1 − tanh²(XW)))'),
    ('tr X + 1', 'I'),
    ('tr AX', 'Aᵀ'),
    ('tr AXB', 'AᵀBᵀ'),
    ('tr XᵀA', 'A'),
    ('tr XXᵀ', '2X'),
    ('tr XᵀAX', 'AX + AᵀX'),
    ('tr X²', '2Xᵀ'),
    ('tr X³', '3(X²)ᵀ'),  # the Matrix Cookbook's k(Xᵏ⁻¹)ᵀ (121)
    ('tr AX⁻¹B', '−X⁻ᵀAᵀBᵀX⁻ᵀ'),
    ('tr (AB−C)(AB−C)ᵀ', '2Aᵀ(AB − C)'),
    ('tr kron(A,B)', 'tr(B)I'),
    ('tr Xᵀ X by sum', '2X'),
    ('aᵀX⁻¹b', '−X⁻ᵀabᵀX⁻ᵀ'),
    ('tr X⁻¹', '−(X⁻²)ᵀ'),  # the Matrix Cookbook's −((X + A)⁻¹(X + A)⁻¹)ᵀ at A = 0 (64)
    ('sum X⁻¹', '−X⁻ᵀ11ᵀX⁻ᵀ'),
    ('∂X⁻¹/∂X', '−(X⁻¹)_ik (X⁻¹)_lj'),
    ('logdet X⁻¹', '−X⁻ᵀ'),
    ('xᵀX⁻¹x', '(X⁻¹ + X⁻ᵀ)x'),
    ('(A + X)⁻¹ by X', '−(A + X)⁻ᵀ11ᵀBᵀ(A + X)⁻ᵀ'),
    ('det X', 'det(X)X⁻ᵀ'),
    ('log det X', 'X⁻ᵀ'),
    ('log det XᵀX', '2X(XᵀX)⁻¹'),
    ('det AXB', 'det(AXB)X⁻ᵀ'),
    ('det sX', 'det(sX)n/s'),
    ('log det S (symmetric)', 'S⁻¹'),
    ('log det (A + sI)', 'tr((A + sI)⁻¹)'),
    ('aᵀx', 'a'),
    ('xᵀa', 'a'),
    ('xᵀAx', '(A + Aᵀ)x'),
    ('xᵀAx by A', 'xxᵀ'),
    ('xᵀSx', '2Sx'),
    ('xᵀSx by S', 'xxᵀ'),
    ('aᵀSb by S', '(1/2)(abᵀ + baᵀ)'),
    ('tr AS by S', '(1/2)(A + Aᵀ)'),
    ('aᵀXb', 'abᵀ'),
    ('aᵀXXᵀa', '2aaᵀX'),
    ('xᵀx', '2x'),
    ('(Xw − y)ᵀ(Xw − y)', '2Xᵀ(Xw − y)'),
    ('(Ax + b)ᵀ(Ax + b)', '2Aᵀ(Ax + b)'),
    ('aᵀAb by A', 'abᵀ'),
    ('s·xᵀx by s', 'xᵀx'),
    ('s·xᵀx by x', '2sx'),
    ('xᵀAy by y', 'Aᵀx'),
    ('xᵀ(A + Aᵀ)x', '2(A + Aᵀ)x'),
    ('(xᵀAx)²', '2(xᵀAx)(A + Aᵀ)x'),
    ('xᵀAx / xᵀx', '(A + Aᵀ)x/‖x‖² − 2(xᵀAx)x/‖x‖⁴'),
    ('‖x‖', 'x/‖x‖'),
    ('‖x‖²', '2x'),
    ('‖X‖_F', 'X/‖X‖_F'),
    ('‖Xw − y‖² by w', '2Xᵀ(Xw − y)'),
    ('‖Xw − y‖² by X', '2(Xw − y)wᵀ'),
    ('‖x‖₁', 'sign(x)'),
    ('‖Ax − b‖', 'Aᵀ(Ax − b)/‖Ax − b‖'),
    ('‖T − UVᵀ‖²_F by U', '−2(T − UVᵀ)V'),
    ('Σ exp x', 'exp(x)'),
    ('Σ log x', '1 ⊘ x'),
    ('Σ sin X', 'cos(X)'),
    ('Σ cos x', '−sin(x)'),
    ('Σ tan x', '(3/10)(tan²((3/10)x) + 1)'),
    ('Σ tanh Xw', 'Xᵀ(1 − tanh²(Xw))'),
    ('Σ σ(XW) concrete', 'Xᵀ(σ(XW) ⊙ (1 − σ(XW)))'),
    ('Σ softplus x', 'σ(x)'),
    ('Σ relu x', 'step(x)'),
    ('Σ |x|', 'sign(x)'),
    ('Σ √x', '(1/2)(1 ⊘ √x)'),
    ('Σ x³', '3x^∘2'),
    ('Σ x/y by y', '−(x ⊘ y^∘2)'),
    ('Σ eˣ sin x', 'exp(x) ⊙ (sin(x) + cos(x))'),
    ('xᵀ exp(Ax)', 'Aᵀ(x ⊙ exp(Ax)) + exp(Ax)'),
    ('Σ σ(x)²', '2(σ²(x) ⊙ (1 − σ(x)))'),
    ('Σ log(1 + eˣ)', 'σ(x)'),
    ('sign x (zero derivative)', 'sign(x)'),
    ('x ** y (exponent an expression)', 'exp(y ⊙ log(x)) ⊙ log(x)'),
    ('2 ** x', '0.6931471805599453·exp(0.6931471805599453·x)'),
    ('logistic loss', '−Xᵀ(y ⊙ σ(−(y ⊙ Xw)))'),
    ('logistic loss Hessian', 'Xᵀdiag(y^∘2 ⊙ σ(y ⊙ Xw) ⊙ (1 − σ(y ⊙ Xw)))X'),
    ('∂softmax(x)/∂x', 'diag(s) − ssᵀ  where s = softmax(x)'),
    ('logsumexp x', 'softmax(x)'),
    ('∇² logsumexp x', 'diag(s) − ssᵀ  where s = softmax(x)'),
    ('Σ logsumexp rows', 'softmax(X, axis=1)'),
    ('Σ logsumexp columns', 'softmax(X, axis=0)'),
    ('∂softmax rows/∂X', 'δ_ik δ_jl softmax(X, axis=1)_ij − δ_ik softmax(X, axis=1)_ij softmax(X, axis=1)_il'),
    ('∂softmax columns/∂X', '−δ_jl softmax(X, axis=0)_ij softmax(X, axis=0)_kj + δ_ik δ_jl softmax(X, axis=0)_ij'),
    ('wᵀ softmax(Aw)', 'Aᵀ(s ⊙ x − (sᵀx)s) + s  where s = softmax(Ax)'),
    ('softmax cross-entropy over rows', '(1/4)(diag(Y1)softmax(X, axis=1) − Y)'),
    ('Σ kron(A, B) by A', '(1ᵀB1)11ᵀ'),
    ('aᵀ kron(A, B) b', 'Σ_r Σ_s (pqᵀ)_(ri)(sj) A_rs'),
    ('∂kron(x, y)/∂x', 'I ⊗ z'),
    ('∂kron(A, B)/∂B', 'Σ_p Σ_q [δ_i(pk) δ_j(ql)] A_pq'),
    ('‖kron(A, B)‖²', '2‖B‖_F²A'),
    ('Σ σ(XW) by W', 'Xᵀσ′(XW)'),
    ('Σ σ(XW) by X', 'σ′(XW)Wᵀ'),
    ('λ(σ(XW)) by W', 'Xᵀ(∇λ(σ(XW)) ⊙ σ′(XW))'),
    ('λ(σ(XW)) by X', '(∇λ(σ(XW)) ⊙ σ′(XW))Wᵀ'),
    ('g(f(X))', 'g′(f(X)) ⊙ f′(X)'),
    ('g(f(Xᵀ)) (transposed argument)', 'diag(v)(f′(Xᵀ)ᵀ ⊙ g′(f(Xᵀ))ᵀ)'),
    ('Σ σ(Xw) Hessian', 'Xᵀdiag(σ″(Xw))X'),
    ('λ(X)', '∇λ(X)'),
    ('λ(Aᵀ)', '∇λ(Aᵀ)ᵀ'),
    ('softsign (given derivative)', '1 ⊘ (|x| + 1)^∘2'),
    ('∂XW/∂X', 'δ_ik W_lj'),
    ('∂Aᵀ/∂A', 'δ_il δ_jk'),
    ('∂WX/∂W (Y = WX)', 'δ_ik X_lj'),
    ('∂f(Wx)/∂W', 'δ_ij f′(Wx)_i x_k'),
    ('∂xxᵀ/∂x', 'δ_ik x_j + δ_jk x_i'),
    ('∂AX/∂X', 'δ_jl A_ik'),
    ('∂σ(Xw)/∂w', 'diag(σ(Xw) ⊙ (1 − σ(Xw)))X'),
    ('∂Z/∂A for Z = WᵀA', 'Wᵀ'),
    ('∂Z/∂W for Z = WᵀA', 'δ_ik A_j'),
    ('∂A/∂Z for A = f(Z)', 'diag(f′(Z))'),
    ('∂A/∂Z for A = tanh(Z)', 'diag(1 − tanh²(Z))'),
    ('∂(x ⊙ y)/∂x', 'diag(y)'),
    ('∂ outer(x, y)/∂y', 'δ_jk x_i'),
    ('∂ s·x/∂s', 'x'),
    ('∂ diag(x)/∂x', 'δ_ijk'),
    ('Σ T ⊙ T', '2 T_ijk'),
    ('∂ T·w/∂T', 'δ_ik δ_jm w_l'),
    ('T(a, w, z)', 'a_i w_j z_k'),
    ('Σ T³ Hessian', 'cos(T_ijk)'),
    ('Σ diag(x) A', 'A1'),
    ('tr diag(x) A', 'diag(A)'),
    ('Σ diag A', 'I'),
    ('Σ (1ᵀX)²', '2·11ᵀX'),
    ('Σ (X1)²', '2X11ᵀ'),
    ('dot(x, y)', 'y'),
    ('dot(X, A)', 'A'),
    ('1ᵀx', '1'),
    ('third derivative of Σ x⁴', '24 δ_ijk x_i'),
    ('zero derivative', '0'),
    ('t² s', '2ts'),
]

# expressions (not derivatives) -> printed form
FORMS = [
    (lambda A, B, X, x, y, a, b: A @ B.T, "ABᵀ"),
    (lambda A, B, X, x, y, a, b: (A @ B).T, "BᵀAᵀ"),
    (lambda A, B, X, x, y, a, b: x.T @ A @ x, "xᵀAx"),
    (lambda A, B, X, x, y, a, b: x @ y.T, "xyᵀ"),
    (lambda A, B, X, x, y, a, b: x.T, "xᵀ"),
    (lambda A, B, X, x, y, a, b: A.T @ x, "Aᵀx"),
    (lambda A, B, X, x, y, a, b: md.inv(A).T, "A⁻ᵀ"),
    (lambda A, B, X, x, y, a, b: md.trace(A @ B), "tr(BA)"),
    (lambda A, B, X, x, y, a, b: md.logdet(A) + 1, "log det(A) + 1"),
    (lambda A, B, X, x, y, a, b: A * B - 2 * A, "B ⊙ A − 2A"),
    (lambda A, B, X, x, y, a, b: md.sigmoid(x) * (1 - md.sigmoid(x)), "σ(x) ⊙ (1 − σ(x))"),
    (lambda A, B, X, x, y, a, b: md.kron(A, B), "A ⊗ B"),
    (lambda A, B, X, x, y, a, b: md.diag(x) @ A, "diag(x)A"),
    (lambda A, B, X, x, y, a, b: md.sum(X, axis=1), "X1"),
    (lambda A, B, X, x, y, a, b: md.sum(X, axis=0), "1ᵀX"),
    (lambda A, B, X, x, y, a, b: md.sum(x), "1ᵀx"),
    (lambda A, B, X, x, y, a, b: md.norm(x), "‖x‖"),
    (lambda A, B, X, x, y, a, b: md.sqrt(x), "√x"),
    (lambda A, B, X, x, y, a, b: x / y, "x ⊘ y"),
    (lambda A, B, X, x, y, a, b: md.abs(x), "|x|"),
    (lambda A, B, X, x, y, a, b: md.exp(A @ x) + md.tanh(x), "tanh(x) + exp(Ax)"),
    (lambda A, B, X, x, y, a, b: A @ md.inv(A), "I"),
    (lambda A, B, X, x, y, a, b: md.softmax(X, axis=1), "softmax(X, axis=1)"),
    (lambda A, B, X, x, y, a, b: md.logsumexp(x), "logsumexp(x)"),
    (lambda A, B, X, x, y, a, b: md.det(A) * md.inv(A), "det(A)A⁻¹"),
    (lambda A, B, X, x, y, a, b: 0.5 * (A + A.T), "(1/2)(A + Aᵀ)"),
]
SYMBOLS = dict(A=md.matrix("A", "n", "n"), B=md.matrix("B", "n", "n"), X=md.matrix("X", "n", "k"),
               x=md.vector("x", "n"), y=md.vector("y", "n"), a=md.vector("a", "n"),
               b=md.vector("b", "n"))


@pytest.mark.parametrize("name,text", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_derivative_prints_as(name, text):
    c = BY_NAME[name]
    d = md.jacobian(c.f, c.wrt)
    assert str(d) == text
    _read_back(d, c)


def test_a_reshaped_index_is_written_as_a_compound_index_that_means_what_it_says():
    """Index notation writes an axis of n·m that a reshape splits into n and m as the compound
    (pk), row-major as the reshape is, as (A ⊗ B)_(ik)(jl) = A_ij B_kl: the printed formulas of
    ∂kron(A, B)/∂B and of ∂(pᵀ kron(A, B) q)/∂B, computed by hand from their text, are the
    derivatives' values (their summed letters avoid the vectors' names p and q)."""
    A_, B_ = md.matrix("A", "n", "n"), md.matrix("B", "m", "m")
    p_, q_ = md.vector("p", md.kron(A_, B_).shape[0]), md.vector("q", md.kron(A_, B_).shape[0])
    rng = np.random.default_rng(4)
    n_, m_ = 3, 2
    v = {"A": rng.standard_normal((n_, n_)), "B": rng.standard_normal((m_, m_)),
         "p": rng.standard_normal(n_ * m_), "q": rng.standard_normal(n_ * m_)}
    J = md.jacobian(md.kron(A_, B_), B_)
    assert str(J) == "Σ_p Σ_q [δ_i(pk) δ_j(ql)] A_pq"
    d = np.eye(n_ * m_).reshape(n_ * m_, n_, m_)  # δ_i(pk)
    np.testing.assert_allclose(np.einsum("ipk,jql,pq->ijkl", d, d, v["A"]), J.evaluate(A=v["A"], B=v["B"]),
                               rtol=1e-12)
    g = md.grad(p_.T @ md.kron(A_, B_) @ q_, B_)
    assert str(g) == "Σ_r Σ_s (pqᵀ)_(ri)(sj) A_rs"
    outer = np.outer(v["p"], v["q"]).reshape(n_, m_, n_, m_)  # (pqᵀ)_(ri)(sj)
    np.testing.assert_allclose(np.einsum("risj,rs->ij", outer, v["A"]), g.evaluate(v), rtol=1e-12)


def test_a_merged_index_is_written_by_its_parts_that_mean_what_they_say():
    """An index i of length n·k that a reshape merges from two, n then k, is read by its parts
    i₁ and i₂ (i = (i₁, i₂), row-major): the Jacobian of kron(x, softmax(2w)) by w prints so,
    and that text, computed by hand, is its value; a tensor's differential in a derivation
    step is read by the same parts (it printed as reshape(__d4, …))."""
    x_, w_ = md.vector("x", "n"), md.vector("w", "k")
    J = md.jacobian(md.kron(x_, md.softmax(2 * w_)), w_)
    assert str(J) == "2 [δ_i₂j x_i₁ softmax(2w)_i₂] − 2 ((x ⊗ I)softmax(2w))_i softmax(2w)_j"
    assert "\\delta_{i_2j} x_{i_1}" in J.latex()
    rng = np.random.default_rng(6)
    xv, wv = rng.standard_normal(3), rng.standard_normal(2)
    sv = np.exp(2 * wv) / np.exp(2 * wv).sum()
    parts = np.einsum("bj,a,b->abj", np.eye(2), xv, sv).reshape(6, 2)  # δ_i₂j x_i₁ s_i₂ at i = (i₁, i₂)
    want = 2 * parts - 2 * np.outer(np.kron(xv, sv), sv)  # (x ⊗ I)s = x ⊗ s
    np.testing.assert_allclose(J.evaluate(x=xv, w=wv), want, rtol=1e-12)
    A_, B_ = md.matrix("A", "n", "n"), md.matrix("B", "m", "m")
    assert "Σ_p d(A_p₁p₁ B_p₂p₂)" in str(md.derivation(md.trace(md.kron(A_, B_)), A_))


@pytest.mark.parametrize("name", ["λ(Aᵀ)", "λ(σ(XW)) by W", "λ(σ(XW)) by X"])
def test_an_abstract_functions_hessian_by_a_matrix_prints_its_name(name):
    """The 4-index Hessian of an abstract λ is ∇²λ(·) at its indices in index notation, as its
    gradient is ∇λ(·)_ij (it printed as the IR's text, ∇2lambda(einsum('ab->ba', A))); the
    derivatives themselves are checked against central differences in test_derivatives."""
    c = BY_NAME[name]
    h = md.hessian(c.f, c.wrt)
    assert "einsum" not in str(h) and "∇²λ(" in str(h) and "\\nabla ^{2}\\lambda" in h.latex(), str(h)
    if name == "λ(Aᵀ)":
        assert str(h) == "∇²λ(Aᵀ)_jilk"


@pytest.mark.parametrize("build,text", FORMS, ids=[f[1] for f in FORMS])
def test_expression_prints_as(build, text):
    e = build(**SYMBOLS)
    assert str(e) == text
    _read_back(e, None)


def _read_back(e, case):
    """The printed tree, evaluated on its own, equals the engine's value."""
    m = e.notation()
    if _has_index(m):
        return
    rng = np.random.default_rng(0)
    vs = {v.name: v for v in variables(e.node, *e.scope)}
    size = {"n": 3, "k": 2, "m": 4, "p": 5, "q": 2}
    kinds = case.kinds if case else {}
    values = {k: _sample(v, kinds.get(k, "positive" if k in "xy" else "normal"), size, rng)
              for k, v in vs.items()}
    if case and case.prepare:
        values = case.prepare(values)
    functions = _stand_ins(e.node)
    for v in e.scope:
        functions.update(_stand_ins(v))
    if case:
        functions.update(_stand_ins(md.expr.lift(case.f).node))
    want = e.evaluate(values, functions, sizes=size)
    got = notation_eval.evaluate(m, values, size, functions)
    np.testing.assert_allclose(np.asarray(got, dtype=float), want, rtol=1e-9, atol=1e-12)


def _has_index(m):
    if isinstance(m, N.Index):
        return True
    return any(_has_index(k) for k in N.children(m))


def test_table_is_large_enough():
    assert len(GOLDEN) + len(FORMS) >= 80


LATEX = [
    ("tr AXB", r"A^\top B^\top"),
    ("aᵀX⁻¹b", r"-X^{-\top} a b^\top X^{-\top}"),
    ("λ(σ(XW)) by W", r"X^\top \left(\nabla \lambda\left(\sigma\left(X W\right)\right) \odot \sigma'\left(X W\right)\right)"),
    ("log det X", r"X^{-\top}"),
    ("‖Xw − y‖² by w", r"2 X^\top \left(X w - y\right)"),
    ("∂softmax(x)/∂x", r"\operatorname{diag}\left(s\right) - s s^\top \quad\text{where } s = \operatorname{softmax}\left(x\right)"),
    ("∂xxᵀ/∂x", r"\delta_{ik} x_{j} + \delta_{jk} x_{i}"),
]


@pytest.mark.parametrize("name,tex", LATEX, ids=[x[0] for x in LATEX])
def test_latex(name, tex):
    c = BY_NAME[name]
    d = md.jacobian(c.f, c.wrt)
    assert d.latex() == tex
    assert d._repr_latex_() == f"${tex}$"


def test_index_notation():
    A, x = SYMBOLS["A"], SYMBOLS["x"]
    assert (A @ x).index() == "Σ_p A_ip x_p"
    assert md.jacobian(x @ x.T, x).index() == "δ_ik x_j + δ_jk x_i"
    assert (x.T @ A @ x).index() == "Σ_p Σ_q x_p A_pq x_q"  # Σ x_p A_pq x_q = xᵀAx


CHAINED = [  # index results whose factors chain print as the matrices inside, as the Cookbook does
    ("∂(XᵀBX)/∂X", lambda X, B, A: (md.jacobian(X.T @ B @ X, X), X), "δ_jl (XᵀB)_ik + δ_il (BX)_kj"),
    ("∂(XBX)/∂X", lambda X, B, A: (md.jacobian(X @ B @ X, X), X), "δ_ik (BX)_lj + δ_jl (XB)_ik"),
    ("∇²tr(A⁴)", lambda X, B, A: (md.hessian(md.trace(md.matrix_power(A, 4)), A), A),
     "4 δ_jk (A²)_li + 4 A_li A_jk + 4 δ_il (A²)_jk"),
    ("∂X⁻¹/∂X", lambda X, B, A: (md.jacobian(md.inv(X), X), X), "−(X⁻¹)_ik (X⁻¹)_lj"),
]


@pytest.mark.parametrize("name,build,text", CHAINED, ids=[c[0] for c in CHAINED])
def test_index_forms_group_the_factors_whose_indices_chain(name, build, text):
    X, B, A = (md.matrix(s, "n", "n") for s in "XBA")
    d, wrt = build(X, B, A)
    assert d.index() == text
    f = {"∂(XᵀBX)/∂X": X.T @ B @ X, "∂(XBX)/∂X": X @ B @ X, "∇²tr(A⁴)": md.trace(md.matrix_power(A, 4)),
         "∂X⁻¹/∂X": md.inv(X)}[name]
    assert md.check(f, wrt, kinds={"X": "invertible"}, order=2 if "∇²" in name else 1) < 1e-5


def test_rows_print_transposed():
    A, x = SYMBOLS["A"], SYMBOLS["x"]
    assert str(x.T @ A) == "xᵀA"
    assert str(md.grad(x.T @ A @ x, x).T) == "xᵀ(A + Aᵀ)"


def test_repeated_subexpressions_are_named_in_long_results():
    X, y = md.matrix("X", "n", "k"), md.vector("y", "n")
    w = md.vector("w", "k")
    H = md.hessian(md.sum(md.softplus(-y * (X @ w))) + md.sum(md.sigmoid(-y * (X @ w)) ** 2), w)
    text = str(H)
    assert "  where s = σ(y ⊙ Xw)" in text
    assert text.count("σ(y ⊙ Xw)") == 1


@pytest.mark.parametrize("name,text", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_repr_is_python_that_rebuilds_the_value(name, text):
    """repr(d) is matdiff code: evaluated with the variables in scope it gives d's values."""
    c = BY_NAME[name]
    d = md.jacobian(c.f, c.wrt)
    code = repr(d)
    if "<" in code:  # no constructor for this tensor in the API (δ_ijk, reshape): stated
        assert "<" in code and ">" in code
        return
    scope = {"md": md}
    for v in variables(d.node, *d.scope):
        scope[v.name] = md.Expr(v, src=v.name)
    for fn in ("sigma", "f", "g", "softsign"):
        scope.setdefault(fn, md.function(fn))
    scope.setdefault("lambda_", md.scalar_function("lambda"))
    rebuilt = eval(code.replace("lambda.", "lambda_.").replace("lambda(", "lambda_("), scope)
    values, size, functions = _case_inputs(c, d, seed=1)
    used = {v.name for v in variables(rebuilt.node)}
    got = rebuilt.evaluate({k: v for k, v in values.items() if k in used}, functions, sizes=size)
    np.testing.assert_allclose(got, d.evaluate(values, functions, sizes=size), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name,text", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_printed_text_parses_back_to_the_same_values(name, text):
    """The text form read by md.parse(dialect="matdiff") evaluates to the engine's values."""
    from matdiff.parse import declarations

    c = BY_NAME[name]
    d = md.jacobian(c.f, c.wrt)
    if _has_index(d.notation()):
        return  # index notation is for reading; it has no text dialect
    if any(not isinstance(x, (int, str)) for x in d.shape):
        return  # a dim that is a product (m·n) has no declaration in the text dialects
    back = md.parse(str(d), dialect="matdiff", result_shape=d.shape, **declarations(d))
    values, size, functions = _case_inputs(c, d, seed=2)
    used = {v.name for v in variables(back.node)}
    got = back.evaluate({k: v for k, v in values.items() if k in used}, functions, sizes=size)
    np.testing.assert_allclose(got, d.evaluate(values, functions, sizes=size), rtol=1e-9, atol=1e-12)


def _case_inputs(c, d, seed):
    """Random inputs for a case's derivative d, with stand-ins for abstract functions."""
    rng = np.random.default_rng(seed)
    size = {"n": 3, "k": 2, "m": 4, "p": 5, "q": 2}
    vs = {v.name: v for v in variables(d.node, *d.scope)}
    values = {k: _sample(v, c.kinds.get(k, "positive" if k in "xy" else "normal"), size, rng)
              for k, v in vs.items()}
    if c.prepare:
        values = c.prepare(values)
    return values, size, {**_stand_ins(md.expr.lift(c.f).node), **_stand_ins(d.node)}


def test_a_named_function_call_raised_to_a_power_prints_as_a_power_of_its_name():
    """tanh²(SW2) where U = tanh(SW2) is U^∘2 (it once printed as U²(), unbalanced)."""
    X, W1, W2, Y = (md.matrix("X", "N", "d"), md.matrix("W1", "d", "h"), md.matrix("W2", "h", "c"),
                    md.matrix("Y", "N", "c"))
    J = md.norm(md.tanh(md.tanh(X @ W1) @ W2) - Y) ** 2
    text = str(md.grad(J, W2))
    assert text == "Sᵀ(2(U − Y) ⊙ (1 − U^∘2))  where S = tanh(X W1), U = tanh(S W2)"
    assert text.count("(") == text.count(")")


def test_the_inverse_of_a_symmetric_matrix_prints_untransposed():
    """(S⁻¹)ᵀ = S⁻¹ for a symmetric S: −S⁻¹aaᵀS⁻¹, not −S⁻¹aaᵀS⁻ᵀ (issue 12's first row)."""
    from matdiff.parse import declarations

    S, a = md.matrix("S", "n", "n", symmetric=True), md.vector("a", "n")
    g = md.grad(a.T @ md.inv(S) @ a, S)
    assert str(g) == "−S⁻¹aaᵀS⁻¹"
    assert md.check(a.T @ md.inv(S) @ a, S, kinds={"S": "spd"}) < 1e-6
    rng = np.random.default_rng(0)
    m = rng.standard_normal((3, 3))
    values = {"S": m @ m.T + 3 * np.eye(3), "a": rng.standard_normal(3)}
    back = md.parse(str(g), dialect="matdiff", **declarations(g))
    np.testing.assert_allclose(back.evaluate(values), g.evaluate(values), rtol=1e-12)


def test_every_where_definition_is_used():
    """A subexpression written inside x ⊘ y was named and then never referred to
    (where …, U = 1 ⊘ (X^∘2 + 2·1), … with no U in the result; issue 12)."""
    X = md.matrix("X", "n", "k")
    ones = md.ones("n", "k")
    f = md.trace(md.log(X ** 2.0 * (X ** 2.0 + 2 * ones) ** -2.0 + ones) @ md.tan(X).T)
    text = str(md.grad(f, X))
    main, _, where = text.partition("  where ")
    definitions = dict(part.split(" = ", 1) for part in where.split(", ") if " = " in part)
    assert definitions
    for name in definitions:
        others = main + " ".join(body for other, body in definitions.items() if other != name)
        assert name in others, (name, text)


def _symmetric_cases():
    A, B, S = md.matrix("A", "n", "n"), md.matrix("B", "n", "n"), md.matrix("S", "n", "n", symmetric=True)
    X, Y, x = md.matrix("X", "n", "k"), md.matrix("Y", "n", "k"), md.vector("x", "n")
    return [
        ("XᵀX", X.T @ X, True), ("XXᵀ", X @ X.T, True), ("A + Aᵀ", A + A.T, True),
        ("XᵀSX", X.T @ S @ X, True), ("(XᵀX)⁻¹", md.inv(X.T @ X), True), ("S⁻¹", md.inv(S), True),
        ("diag(x)", md.diag(x), True), ("xxᵀ", x @ x.T, True), ("I", md.eye("n"), True),
        ("A", A, False), ("XᵀY", X.T @ Y, False), ("AB", A @ B, False), ("A + B", A + B, False),
        ("AAᵀB", A @ A.T @ B, False), ("XᵀAX", X.T @ A @ X, False), ("A⁻¹", md.inv(A), False),
    ]


@pytest.mark.parametrize("name,e,expected", _symmetric_cases(), ids=[c[0] for c in _symmetric_cases()])
def test_symmetry_by_structure_is_sound(name, e, expected):
    """notation.symmetric decides Mᵀ = M in print; it must never call a matrix symmetric that
    is not (checked on random values), and it finds the structural cases of issue 12."""
    from matdiff.recognise import recognise
    from matdiff.simplify import simplify

    m = recognise(simplify(e.node))
    assert N.symmetric(m) == expected
    rng = np.random.default_rng(0)
    values = {}
    for v in e.variables:
        a = rng.standard_normal(tuple({"n": 4, "k": 3}[d] for d in v.shape))
        values[v.node.name] = (a + a.T) if v.node.symmetric else a
    value = e.evaluate(values, sizes={"n": 4})
    assert np.allclose(value, value.T) == expected


@pytest.mark.parametrize("build,text", [
    (lambda X, S: md.grad(md.trace(md.inv(X @ X.T)), X), "−2(XXᵀ)⁻²X"),   # issue 12's second row
    (lambda X, S: md.grad(md.trace(md.inv(S)), S), "−S⁻²"),
    (lambda X, S: md.matrix_power(S, -3), "S⁻³"),
])
def test_powers_of_inverses_print_as_negative_powers_and_read_back(build, text):
    from matdiff.parse import declarations

    X, S = md.matrix("X", "n", "k"), md.matrix("S", "n", "n", symmetric=True)
    e = build(X, S)
    assert str(e) == text
    rng = np.random.default_rng(1)
    m = rng.standard_normal((3, 3))
    values = {"X": rng.standard_normal((3, 4)), "S": m @ m.T + 3 * np.eye(3)}
    values = {k: v for k, v in values.items() if k in {u.node.name for u in e.variables}}
    back = md.parse(text, dialect="matdiff", **declarations(e))
    np.testing.assert_allclose(back.evaluate(values), e.evaluate(values), rtol=1e-10)
    np.testing.assert_allclose(md.expr.lift(eval(repr(e), {"md": md, "X": X, "S": S})).evaluate(values),
                               e.evaluate(values), rtol=1e-10)


@pytest.mark.parametrize("build,text", [
    (lambda X, w, y, x: md.grad(md.sum(md.log(1 + md.exp(-y * (X @ w)))), w), "−Xᵀ(y ⊙ σ(−(y ⊙ Xw)))"),
    (lambda X, w, y, x: md.hessian(md.sum(md.log(1 + md.exp(-y * (X @ w)))), w),
     "Xᵀdiag(y^∘2 ⊙ σ(y ⊙ Xw) ⊙ (1 − σ(y ⊙ Xw)))X"),
    (lambda X, w, y, x: md.exp(x) / (1 + md.exp(x)), "σ(x)"),
    (lambda X, w, y, x: 1 / (1 + md.exp(-x)), "σ(x)"),
])
def test_the_logistic_function_is_recognised(build, text):
    """1 ⊘ (1 + exp(u)) = σ(−u) and exp(u) ⊙ σ(−u) = σ(u) (issue 12's logistic-loss rows),
    checked against the unsimplified expression on large arguments too (σ stays finite
    where exp(u)/(1 + exp(u)) overflows)."""
    X, w, y, x = md.matrix("X", "n", "k"), md.vector("w", "k"), md.vector("y", "n"), md.vector("x", "n")
    e = build(X, w, y, x)
    assert str(e) == text
    rng = np.random.default_rng(2)
    values = {"X": rng.standard_normal((4, 3)), "w": rng.standard_normal(3),
              "y": rng.standard_normal(4), "x": np.array([-3.0, 0.5, 2.0, 700.0])}
    values = {k: v for k, v in values.items() if k in {u.node.name for u in e.variables}}
    got = e.evaluate(values)
    assert np.all(np.isfinite(got))
    if "x" in values:
        np.testing.assert_allclose(got, 1 / (1 + np.exp(-values["x"])), rtol=1e-12)


@pytest.mark.parametrize("build,text", [
    (lambda A, B, X: md.inv(A @ B), "B⁻¹A⁻¹"), (lambda A, B, X: md.inv(A.T @ B), "B⁻¹A⁻ᵀ"),
    (lambda A, B, X: md.inv(A @ B.T), "B⁻ᵀA⁻¹"), (lambda A, B, X: md.inv(A.T @ B.T), "B⁻ᵀA⁻ᵀ"),
    (lambda A, B, X: md.grad(md.det(X @ X), X), "2det(X)²X⁻ᵀ"),       # issue 12's det(XX) row
    (lambda A, B, X: md.grad(md.trace(md.inv(A @ X)), X), "−X⁻ᵀA⁻ᵀX⁻ᵀ"),
])
def test_the_inverse_of_a_product_of_square_matrices_is_split(build, text):
    """(A′B′)⁻¹ = B′⁻¹A′⁻¹ for square A, B (either transposed), so inverses cancel."""
    A, B, X = (md.matrix(s, "n", "n") for s in "ABX")
    e = build(A, B, X)
    assert str(e) == text
    rng = np.random.default_rng(3)
    values = {s: rng.standard_normal((3, 3)) + 3 * np.eye(3) for s in "ABX"}
    values = {k: v for k, v in values.items() if k in {u.node.name for u in e.variables}}
    a, b, x = (values.get(s) for s in "ABX")
    expected = {"B⁻¹A⁻¹": lambda: np.linalg.inv(a @ b), "B⁻¹A⁻ᵀ": lambda: np.linalg.inv(a.T @ b),
                "B⁻ᵀA⁻¹": lambda: np.linalg.inv(a @ b.T), "B⁻ᵀA⁻ᵀ": lambda: np.linalg.inv(a.T @ b.T),
                "2det(X)²X⁻ᵀ": lambda: 2 * np.linalg.det(x @ x) * np.linalg.inv(x).T,
                "−X⁻ᵀA⁻ᵀX⁻ᵀ": lambda: -(np.linalg.inv(x) @ np.linalg.inv(a) @ np.linalg.inv(x)).T}
    np.testing.assert_allclose(e.evaluate(values), expected[text](), rtol=1e-9)


def test_the_parts_of_a_decomposition_are_named_apart_from_the_users_names():
    """With the user's V beside X = UΣVᵀ, the textbook names cannot all be used; U(X) is then
    U and V(X) a letter no part prints as — never U = V(X) (read as the other factor)."""
    X, V = md.matrix("X", "n", "k"), md.matrix("V", "n", "k")
    h = md.hvp(md.norm(X, "nuc"), X, V)
    text = str(h)
    assert "U = U(X)" in text and "U = V(X)" not in text and "V = V(X)" not in text
    assert md.check(md.norm(X, "nuc"), X, order=2) < 1e-5


def test_a_result_that_cancels_to_zero_prints_0_not_a_product_with_0():
    """For square X, tr((XᵀCX)⁻¹XᵀBX) = tr(C⁻¹B) does not depend on X: the presentation finds
    its gradient's terms cancel, and a product with a 0 factor is 0 (it printed 2·0C⁻¹X⁻ᵀ)."""
    X = md.matrix("X", "n", "n")
    C, B = md.matrix("C", "n", "n", symmetric=True), md.matrix("B", "n", "n", symmetric=True)
    f = md.trace(md.inv(X.T @ C @ X) @ (X.T @ B @ X))
    g = md.grad(f, X)
    assert str(g) == "0"
    rng = np.random.default_rng(2)
    q = rng.normal(size=(4, 4))
    values = {"X": rng.normal(size=(4, 4)) + 4 * np.eye(4), "C": q @ q.T + np.eye(4), "B": q + q.T}
    assert np.max(np.abs(g.evaluate(values))) < 1e-10
    assert md.check(f, X, kinds={"C": "spd", "X": "invertible"}) < 1e-5


def test_a_scalar_stays_outside_a_trace_as_the_cookbook_writes_it():
    """∂²det(A + xB)/∂x² = det(Y)(tr(Y⁻¹B)² − tr(Y⁻¹BY⁻¹B)), Y = A + xB (Matrix Cookbook,
    the second derivative of a determinant): tr(sM) = s·tr(M) and tr(M + N) = tr M + tr N."""
    A, B, x = md.matrix("A", "n", "n"), md.matrix("B", "n", "n"), md.scalar("x")
    f = md.det(A + x * B)
    assert str(md.hessian(f, x)) == "det(S)(tr(S⁻¹B)² − tr(S⁻¹BS⁻¹B))  where S = A + xB"
    assert md.check(f, x, order=2) < 1e-5
