"""Generated code solves where the formula has an inverse (issue 25): an inverse multiplied by
something is a solve, an inverse read by several products is one LU factorisation, and
an explicit inverse is formed only where the result itself is one.  Every case is checked
against evaluate in each backend, and its derivative against central differences."""
import inspect
import re

import numpy as np
import pytest

import matdiff as md

n, k = "n", "k"
X, A, B = md.matrix("X", n, n), md.matrix("A", n, n), md.matrix("B", n, n)
S = md.matrix("S", n, n, symmetric=True)
M = md.matrix("M", "m", n)
a, b, x, mu, y = (md.vector(s, n) for s in ("a", "b", "x", "mu", "y"))
z = md.vector("z", "m")
lam = md.scalar("lam")


def _ridge():
    G = M.T @ M + lam * md.eye(n)
    return z.T @ M @ md.inv(G) @ M.T @ z


# (name, function, variable, whether the result itself holds an inverse)
CASES = [
    ("aᵀX⁻¹b by a", lambda: a.T @ md.inv(X) @ b, a, False),
    ("aᵀX⁻¹b by b", lambda: a.T @ md.inv(X) @ b, b, False),
    ("aᵀX⁻¹b by X", lambda: a.T @ md.inv(X) @ b, X, False),
    ("xᵀA⁻¹x by x", lambda: x.T @ md.inv(A) @ x, x, False),
    ("Gaussian NLL by μ", lambda: (x - mu).T @ md.inv(S) @ (x - mu) / 2 + md.logdet(S) / 2, mu, False),
    ("Gaussian NLL by Σ", lambda: (x - mu).T @ md.inv(S) @ (x - mu) / 2 + md.logdet(S) / 2, S, True),
    ("‖A⁻¹x − b‖² by x", lambda: md.norm(md.inv(A) @ x - b) ** 2, x, False),
    ("tr(AX⁻¹B) by X", lambda: md.trace(A @ md.inv(X) @ B), X, False),
    ("tr(X⁻¹A) by A", lambda: md.trace(md.inv(X) @ A), A, True),
    ("ridge zᵀM(MᵀM + λI)⁻¹Mᵀz by z", _ridge, z, False),
    ("ridge by λ", _ridge, lam, False),
    ("log det X by X", lambda: md.logdet(X), X, True),
]
BACKENDS = ["numpy", "jax", "torch"]


def _values(rng, size=4):
    q = np.linalg.qr(rng.standard_normal((size, size)))[0]
    spd = (q * rng.uniform(1.0, 3.0, size)) @ q.T
    return {
        "X": rng.standard_normal((size, size)) + 3 * np.eye(size),
        "A": rng.standard_normal((size, size)) + 3 * np.eye(size),
        "B": rng.standard_normal((size, size)),
        "S": (spd + spd.T) / 2,
        "M": rng.standard_normal((size + 2, size)),
        **{v: rng.standard_normal(size) for v in ("a", "b", "x", "mu", "y")},
        "z": rng.standard_normal(size + 2),
        "lam": 0.7,
    }


def _arguments(fn, values):
    return {p: values[p] for p in inspect.signature(fn).parameters}


def _used(e, values):
    names = {v.node.name for v in e.variables}
    return {key: val for key, val in values.items() if key in names}


def _run(fn, backend, values):
    if backend == "numpy":
        return np.asarray(fn(**values))
    if backend == "jax":
        import jax

        with jax.enable_x64(True):
            return np.asarray(fn(**values))
    import torch

    return fn(**{key: torch.as_tensor(np.asarray(val, dtype=float)) for key, val in values.items()}).numpy()


def _backend(backend):
    if backend != "numpy":
        pytest.importorskip(backend)


@pytest.mark.parametrize("name, build, wrt, inverse", CASES, ids=[c[0] for c in CASES])
def test_the_gradient_is_right(name, build, wrt, inverse):
    """The derivative against central differences (md.check), at random points."""
    kinds = {"X": "invertible", "A": "invertible", "S": "spd", "lam": "positive"}
    assert md.check(build(), wrt, seed=3, kinds=kinds, order=2 if wrt.ndim < 2 else 1) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, build, wrt, inverse", CASES, ids=[c[0] for c in CASES])
def test_generated_code_solves_instead_of_inverting(name, build, wrt, inverse, backend):
    _backend(backend)
    g = md.grad(build(), wrt)
    source = md.codegen(g, backend=backend)
    formed = re.findall(r"\binv\(|_lu_inverse\(", _code(source))  # (from the solves' LU, where they share it)
    assert bool(formed) == inverse, source
    values = _values(np.random.default_rng(7))
    fn = md.compile(g, backend=backend)
    got = _run(fn, backend, _arguments(fn, values))
    np.testing.assert_allclose(got, g.evaluate(_used(g, values)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_factorisation_serves_every_solve_with_one_matrix(backend):
    """∇_X aᵀX⁻¹b = −X⁻ᵀabᵀX⁻ᵀ solves with X and with Xᵀ: one LU for both."""
    _backend(backend)
    if backend == "numpy":
        pytest.importorskip("scipy")
    source = md.codegen(md.grad(a.T @ md.inv(X) @ b, X), backend=backend)
    assert len(re.findall(r"lu_factor\w*\(X\)", source)) == 1, source
    assert len(re.findall(r"lu_solve\(", source)) >= 2, source


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_inverse_formed_beside_solves_with_its_matrix_comes_from_their_lu(backend):
    """J_a sin(X⁻¹a) = diag(cos(X⁻¹a))X⁻¹ solves with X and still forms X⁻¹ (a vector scales
    it, so its entries are the result's): the inverse is computed from the solves' LU, one
    factorisation where the code made two (inv and lu_factor), in float64 and float32."""
    _backend(backend)
    if backend == "numpy":
        pytest.importorskip("scipy")
    f = md.sin(md.solve(X, a))
    jac = md.jacobian(f, a)
    source = md.codegen(jac, backend=backend)
    assert len(re.findall(r"lu_factor\w*\(X\)", source)) == 1 and "_lu_inverse(t" in source, source
    assert not re.search(r"\binv\(", _code(source)), source
    fn = md.compile(jac, backend=backend)
    rng = np.random.default_rng(3)
    xv, av = rng.standard_normal((5, 5)) + 3 * np.eye(5), rng.standard_normal(5)
    want = jac.evaluate(X=xv, a=av)
    for dtype, tol in ((np.float64, 1e-10), (np.float32, 2e-4)):
        got = np.asarray(_run_typed(fn, backend, {"X": xv.astype(dtype), "a": av.astype(dtype)}))
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    step = 1e-6
    cols = [(f.evaluate(X=xv, a=av + step * e) - f.evaluate(X=xv, a=av - step * e)) / (2 * step)
            for e in np.eye(5)]
    np.testing.assert_allclose(want, np.array(cols).T, rtol=1e-6, atol=1e-8)


P = md.matrix("P", n, n, spd=True)


def _chol_inverse_sums():
    """(3/5)tr L⁻¹ − 2·1ᵀL⁻¹1 with L = chol(P + λI): its gradient holds (2·1 − (3/5)I)L⁻ᵀ."""
    inverse = md.inv(md.cholesky(P + lam * md.eye(n)))
    return 0.6 * md.trace(inverse) - 2 * md.sum(inverse)


def _nll_through_hadamard():
    """½(yᵀV⁻¹y + log det V), V = TPTᵀ + P, T = tanh(P⁻¹B^∘2P⁻¹): its gradient by B holds
    (V⁻¹ − V⁻¹yyᵀV⁻¹)ᵀTP inside a Hadamard product, between solves with P."""
    T = md.tanh(md.inv(P) @ (B * B) @ md.inv(P))
    V = T @ P @ T.T + P
    return (y.T @ md.inv(V) @ y + md.logdet(V)) / 2


# (name, function, variable): derivatives that only multiply their inverses
NEVER_FORMED = [
    ("∇²_a Σ sin(X⁻¹a) = −X⁻ᵀdiag(sin(X⁻¹a))X⁻¹", lambda: md.sum(md.sin(md.solve(X, a))), a),
    ("∇_P (3/5)tr L⁻¹ − 2·1ᵀL⁻¹1", _chol_inverse_sums, P),
    ("∇_B ½(yᵀV⁻¹y + log det V), V⁻¹ − V⁻¹yyᵀV⁻¹ inside ⊙", _nll_through_hadamard, B),
]


def _agrees_in_both_precisions(d, backend, values) -> None:
    """d's compiled code gives evaluate's value in float64, and in float32 within 2e-3 of the
    largest entry, in the argument's dtype."""
    fn = md.compile(d, backend=backend)
    args = _arguments(fn, values)
    want = d.evaluate(_used(d, values))
    for dtype, tol in ((np.float64, 1e-10), (np.float32, 2e-3)):
        got = np.asarray(_run_typed(fn, backend, {key: np.asarray(v, dtype=dtype) for key, v in args.items()}))
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.max(np.abs(want)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, build, wrt", NEVER_FORMED, ids=[c[0] for c in NEVER_FORMED])
def test_inverses_that_a_derivative_only_multiplies_are_never_formed(name, build, wrt, backend):
    """An inverse on both sides of a diagonal (X⁻ᵀdiag(d)X⁻¹: diag(d) is solved with, where
    scaling X⁻¹ by d formed it), a sum whose term I·L⁻ᵀ would be the inverse itself once
    distributed (the sum is solved with instead), and a sum of an inverse and an outer
    product V⁻¹ − zzᵀ that a product with a Hadamard factor reads (applied as V⁻¹b − z(zᵀb)):
    no inverse in the code, the values of evaluate in float64 and float32, and the
    derivative right by central differences."""
    _backend(backend)
    if backend == "numpy":
        pytest.importorskip("scipy")
    d = md.hessian(build(), wrt) if wrt.ndim < 2 else md.grad(build(), wrt)
    source = md.codegen(d, backend=backend)
    assert not _forms_inverse(source), source
    values = _values(np.random.default_rng(13))
    values["P"] = values["S"]
    _agrees_in_both_precisions(d, backend, values)
    kinds = {"X": "invertible", "P": "spd", "lam": "positive"}
    assert md.check(build(), wrt, seed=5, kinds=kinds, order=2 if wrt.ndim < 2 else 1) < 1e-6


def _sum_of_inverses():
    """U = (S + λI)⁻¹ − (S + ABAᵀ)⁻¹, a difference of two inverses."""
    return md.inv(S + lam * md.eye(n)) - md.inv(S + A @ B @ A.T)


def _twice_through_x():
    W = md.inv(X) + md.inv(X).T
    return y.T @ W @ B @ W @ y


# a sum of inverses that one product reads twice, and the matrices it solves with
READ_TWICE = [
    ("∇_y ½yᵀUSUy", lambda: y.T @ _sum_of_inverses() @ S @ _sum_of_inverses() @ y / 2, y, 2),
    ("∇_y yᵀ(X⁻¹ + X⁻ᵀ)B(X⁻¹ + X⁻ᵀ)y", _twice_through_x, y, 1),
    ("∇_B yᵀ(X⁻¹ + X⁻ᵀ)B(X⁻¹ + X⁻ᵀ)y", _twice_through_x, B, 1),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, build, wrt, matrices", READ_TWICE, ids=[c[0] for c in READ_TWICE])
def test_a_sum_of_inverses_read_twice_is_solved_with_and_never_formed(name, build, wrt, matrices, backend):
    """A product that reads a sum of inverses twice (yᵀUSUy) solves with each inverse of the
    sum, where forming the sum formed every inverse in it: no inv(, one LU per matrix shared
    by its solves, the values of evaluate in float64 and float32, and the derivative right."""
    _backend(backend)
    if backend == "numpy":
        pytest.importorskip("scipy")
    g = md.grad(build(), wrt)
    code = _code(md.codegen(g, backend=backend))
    assert not re.search(r"\binv\(|_lu_inverse\(", code), code
    assert len(re.findall(r"lu_factor\w*\(", code)) == matrices, code
    assert len(re.findall(r"lu_solve\(", code)) >= 2 * matrices, code
    _agrees_in_both_precisions(g, backend, _values(np.random.default_rng(11)))
    kinds = {"X": "invertible", "S": "spd", "lam": "positive"}
    assert md.check(build(), wrt, seed=5, kinds=kinds, order=2 if wrt.ndim < 2 else 1) < 1e-6


def test_the_derivative_by_lambda_through_a_sum_of_inverses_solves_with_vectors_only(monkeypatch):
    """∂/∂λ ½yᵀUSUy = tr(½V⁻ᵀV⁻¹(−SUᵀyyᵀ − yyᵀUᵀS)), V = S + λI: the product is distributed
    over the sum of outer products and each term over U, so every solve has a vector on its
    right (yᵀUᵀSV⁻ᵀV⁻¹y), never the n × n outer product: one LU per matrix, no inverse."""
    scipy_linalg = pytest.importorskip("scipy.linalg")
    f = y.T @ _sum_of_inverses() @ S @ _sum_of_inverses() @ y / 2
    g = md.grad(f, lam)
    code = _code(md.codegen(g))
    assert not re.search(r"\binv\(|_lu_inverse\(", code), code
    assert len(re.findall(r"lu_factor\w*\(", code)) == 2, code
    sides = []
    lu_solve, solve = scipy_linalg.lu_solve, np.linalg.solve
    monkeypatch.setattr(scipy_linalg, "lu_solve", lambda f, b, **kw: (sides.append(np.ndim(b)), lu_solve(f, b, **kw))[1])
    monkeypatch.setattr(np.linalg, "solve", lambda a, b: (sides.append(np.ndim(b)), solve(a, b))[1])
    values = _values(np.random.default_rng(5))
    fn = md.compile(g)
    got = fn(**_arguments(fn, values))
    monkeypatch.undo()
    assert len(sides) >= 4 and set(sides) == {1}, sides
    np.testing.assert_allclose(got, g.evaluate(_used(g, values)), rtol=1e-10)
    assert md.check(f, lam, seed=5, kinds={"S": "spd", "lam": "positive"}, order=2) < 1e-6


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_singular_matrix_in_a_solve_is_an_evaluation_error(backend):
    _backend(backend)
    for f in (md.grad(a.T @ md.inv(X) @ b, a), md.grad(a.T @ md.inv(X) @ b, X)):
        fn = md.compile(f, backend=backend)
        values = _arguments(fn, {"X": np.zeros((3, 3)), "a": np.ones(3), "b": np.ones(3)})
        with pytest.raises(md.EvaluationError, match="singular matrix"):
            _run(fn, backend, values)


def _ill_conditioned(cond, size=12, seed=0):
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((size, size)))[0]
    v = np.linalg.qr(rng.standard_normal((size, size)))[0]
    return (u * np.logspace(0, -np.log10(cond), size)) @ v.T


def _exact_solve(m, rhs):
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(60):
        sol = mpmath.lu_solve(mpmath.matrix(m.tolist()), mpmath.matrix(rhs.tolist()))
        return np.array([float(sol[i]) for i in range(len(rhs))])


@pytest.mark.parametrize("cond", [1e8, 1e12])
@pytest.mark.parametrize("in_range", [True, False], ids=["b = Xc", "b random"])
def test_generated_solves_are_as_accurate_as_a_hand_written_solve(cond, in_range):
    """X⁻¹b (∇_a aᵀX⁻¹b) at cond(X) = 10⁸ and 10¹²: the generated code's error is within 2× of
    np.linalg.solve's, against the exact solution of the same float64 system (mpmath)."""
    m = _ill_conditioned(cond)
    rng = np.random.default_rng(1)
    rhs = m @ rng.standard_normal(len(m)) if in_range else rng.standard_normal(len(m))
    exact = _exact_solve(m, rhs)
    fn = md.compile(md.grad(a.T @ md.inv(X) @ b, a))
    err = np.linalg.norm(fn(X=m, b=rhs, a=rhs) - exact)
    hand = np.linalg.norm(np.linalg.solve(m, rhs) - exact)
    assert err <= 2 * hand + 1e-300 * np.linalg.norm(exact), (err, hand)


@pytest.mark.parametrize("cond", [1e8, 1e12])
def test_the_gradient_by_x_is_as_accurate_as_a_hand_written_factorisation(cond):
    """−X⁻ᵀabᵀX⁻ᵀ against the same from one LU, and the exact solutions."""
    scipy_linalg = pytest.importorskip("scipy.linalg")
    m = _ill_conditioned(cond, seed=2)
    rng = np.random.default_rng(3)
    av, bv = m.T @ rng.standard_normal(len(m)), rng.standard_normal(len(m))
    exact = -np.outer(_exact_solve(m.T, av), _exact_solve(m, bv))
    fn = md.compile(md.grad(a.T @ md.inv(X) @ b, X))
    lu = scipy_linalg.lu_factor(m)
    hand = -np.outer(scipy_linalg.lu_solve(lu, av, trans=1), scipy_linalg.lu_solve(lu, bv))
    err = np.linalg.norm(fn(X=m, a=av, b=bv) - exact)
    assert err <= 2 * np.linalg.norm(hand - exact) + 1e-15 * np.linalg.norm(exact)


# --------------------------------------------------------------------------- md.solve and its text

def test_solve_is_the_inverse_times_the_right_hand_side():
    M = md.matrix("M", n, k)
    for rhs in (b, M):
        e = md.solve(A, rhs)
        assert e.shape == rhs.shape and str(e) == f"A⁻¹{rhs.node.name}"
        values = _values(np.random.default_rng(2))
        values["M"] = np.random.default_rng(3).standard_normal((4, 3))
        got = e.evaluate(A=values["A"], **{rhs.node.name: values[rhs.node.name]})
        np.testing.assert_allclose(got, np.linalg.solve(values["A"], values[rhs.node.name]))
        assert md.check(md.sum(md.sin(md.solve(A, rhs))), kinds={"A": "invertible"}, order=2) < 1e-6
        assert "np.linalg.solve(A, " in md.codegen(e) and "inv(" not in md.codegen(e)


@pytest.mark.parametrize("call, words", [
    (lambda: md.solve(md.matrix("M", n, k), b), "solve needs a square matrix first"),
    (lambda: md.solve(A, md.vector("v", k)), "as many rows as A"),
    (lambda: md.solve(A, b.T), "row vector"),
])
def test_solve_refuses_shapes_that_do_not_fit(call, words):
    with pytest.raises(md.ShapeError, match=words):
        call()


@pytest.mark.parametrize("text, dialect", [
    ("x' * (A \\ b)", "matrixcalculus"),
    ("x' * solve(A, b)", "matrixcalculus"),
    ("x.T @ solve(A, b)", "numpy"),
])
def test_solve_in_text(text, dialect):
    """A \\ b (MATLAB's left division) and solve(A, b); b is a vector by its use."""
    e = md.parse(text, dialect=dialect)
    assert str(e) == "xᵀA⁻¹b"
    for short, name in (("matdiff", "matdiff"), ("mc", "matrixcalculus"), ("numpy", "numpy")):
        printed = str(e) if short == "matdiff" else e.text(short)  # each dialect's text reads back
        back = md.parse(printed, dialect=name, x="vector(n)", b="vector(n)", A="matrix(n, n)")
        assert str(back) == "xᵀA⁻¹b", (short, printed)


@pytest.mark.parametrize("text, dialect, words, column", [
    ("x \\ A", "matrixcalculus", "needs a square matrix A", 2),
    ("A \\ b", "numpy", "belongs to the matrixcalculus dialect", 2),
    ("solve(A, x*y)", "matrixcalculus", "inner dims differ", 10),
])
def test_solve_text_errors_point_at_the_column(text, dialect, words, column):
    with pytest.raises(md.MatdiffError, match=words) as info:
        md.parse(text, dialect=dialect)
    assert str(info.value).splitlines()[-1].index("^") - 2 == column


# --------------------------------------------------------------------------- the derivative table

# (case, "d" or "H"): results that hold the inverse itself — X⁻ᵀ, det(X)X⁻ᵀ, X⁻² (a power of
# it), tr of it, or an entry (X⁻¹)_jk of an outer product — so the code forms it once
INVERSE_RESULTS = {
    ("aᵀX⁻¹b", "H"), ("tr X⁻¹", "d"), ("sum X⁻¹", "H"), ("∂X⁻¹/∂X", "d"), ("logdet X⁻¹", "d"),
    ("det X", "d"), ("det X", "H"), ("log det X", "d"), ("log det X", "H"), ("log det S (symmetric)", "d"),
    ("log det S (symmetric)", "H"), ("log det (A + sI)", "d"),
}
# An inverse formed in the generated function's body, however: inv(X), X⁻¹ from X's LU or
# Cholesky factors, or a solve (LU, Cholesky, triangular) with the identity
FORMS_INVERSE = re.compile(r"\binv\(|_lu_inverse\(|cholesky_inverse\(|"
                           r"\b(solve|lu_solve|cho_solve|solve_triangular|_cho_solve|_tri_solve)\([^\n]*\beye\(")


def _code(source: str) -> str:
    """The generated function's body without its docstring and comments (which print inv(…)
    in index form)."""
    body = source.partition("\ndef f(")[2]
    return "\n".join(line.partition("  # ")[0] for line in body.splitlines() if not line.lstrip().startswith('"""'))


def _forms_inverse(source: str) -> bool:
    return bool(FORMS_INVERSE.search(_code(source)))


def test_generated_code_for_the_derivative_table_forms_no_inverse_it_does_not_need():
    from .test_generate import CONCRETE

    formed, checked = set(), 0
    for case in CONCRETE:
        f = md.expr.lift(case.f)
        results = [("d", md.jacobian(f, case.wrt))] + ([("H", md.hessian(f, case.wrt))] if case.order == 2 else [])
        for label, d in results:
            checked += 1
            if _forms_inverse(md.codegen(d)):
                formed.add((case.name, label))
    assert checked > 150
    assert formed == INVERSE_RESULTS


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("build, printed", [
    (lambda: md.sum(md.log(md.eigvalsh(S))), "S⁻¹"),
    (lambda: md.sum(md.eigvalsh(S) ** 3), "3S²"),
    (lambda: md.trace(md.inv(S) @ md.inv(S)), None),
    (lambda: md.sum(md.eigvalsh(S) ** -1) * 2, None),
], ids=["Σ log λ", "Σ λ³", "tr S⁻²", "2Σ 1/λ"])
def test_rational_spectral_results_compute_without_eigh(build, printed, backend):
    """∇Σ log λᵢ(S) = S⁻¹ and ∇Σλᵢ³ = 3S² are rational functions of S: generated code forms
    the inverse or the products, not a symmetric eigendecomposition (issue 25)."""
    _backend(backend)
    g = md.grad(build(), S)
    if printed:
        assert str(g) == printed
    source = md.codegen(g, backend=backend)
    assert "eigh(" not in source, source
    values = _values(np.random.default_rng(5))
    fn = md.compile(g, backend=backend)
    np.testing.assert_allclose(_run(fn, backend, _arguments(fn, values)), g.evaluate(S=values["S"]),
                               rtol=1e-10, atol=1e-12)
    assert md.check(build(), S, kinds={"S": "spd"}) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_scaled_identity_is_added_onto_the_gram_matrix_in_place(backend):
    """λI + MᵀM: MᵀM, then λ added on its diagonal — no n × n zeros, no second pass."""
    _backend(backend)
    g = md.grad(_ridge(), z)
    source = md.codegen(g, backend=backend)
    assert "zeros(" not in source and re.search(r"\+= lam|\.add\(lam\)", source), source


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_compiled_function_still_refuses_an_asymmetric_array_for_a_symmetric_variable(backend):
    """The solve reads all of S, but the gradient's formula assumes S = Sᵀ: the common call's
    fast path checks the declaration as the general path does."""
    _backend(backend)
    g = md.grad((x - mu).T @ md.inv(S) @ (x - mu) / 2 + md.logdet(S) / 2, mu)
    fn = md.compile(g, backend=backend)
    values = _values(np.random.default_rng(8))
    good = _arguments(fn, values)
    np.testing.assert_allclose(_run(fn, backend, good), g.evaluate(_used(g, values)), rtol=1e-10)
    bad = dict(good, S=good["S"] + np.triu(np.ones_like(good["S"]), 1))
    with pytest.raises(md.EvaluationError, match="declared symmetric but its array is not"):
        _run(fn, backend, bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_det_and_its_gradient_share_one_factorisation(backend):
    """log |det X| and X⁻ᵀ compiled together: one LU, log |det X| = Σ log |Uᵢᵢ| from it (and in
    NumPy the inverse too, LAPACK's getri), in float64 and float32."""
    _backend(backend)
    f = md.logdet(X)
    source = md.codegen([f, md.grad(f, X)], backend=backend)
    assert len(re.findall(r"lu_factor\(X\)", source)) == 1 and "slogdet" not in source, source
    if backend == "numpy":
        assert not re.search(r"\binv\(", source), source
    fn = md.compile([f, md.grad(f, X)], backend=backend)
    m = np.random.default_rng(9).standard_normal((5, 5)) + 0.5 * np.eye(5)
    m[0] *= -1  # det < 0: log |det X|
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        value, grad = (np.asarray(r) for r in _run_typed(fn, backend, {"X": m.astype(dtype)}))
        assert grad.dtype == dtype
        np.testing.assert_allclose(value, np.linalg.slogdet(m)[1], rtol=tol)
        np.testing.assert_allclose(grad, np.linalg.inv(m).T, rtol=tol * 10, atol=tol)


def _run_typed(fn, backend, values):
    """fn's results on these arrays, kept in their dtype, as NumPy arrays."""
    if backend == "numpy":
        return fn(**values)
    if backend == "jax":
        import jax

        with jax.enable_x64(True):
            return [np.asarray(r) for r in fn(**values)]
    import torch

    return [r.numpy() for r in fn(**{k: torch.as_tensor(v) for k, v in values.items()})]


# ------------------------------------------------------ inverses through a Cholesky factorisation

LAM_POS = md.scalar("lam", positive=True)
SPD = md.matrix("S", n, n, spd=True)


def _gram():  # MᵀM + λI with λ > 0: positive definite, so factorised by Cholesky
    return M.T @ M + LAM_POS * md.eye(n)


# (name, function, variable, derivative order, whether its inverse must be formed: L⁻¹'s
# entries themselves, in the Hessian through chol(S), by a triangular solve with I)
CHOLESKY_CASES = [
    ("∇_M log det G + zᵀMG⁻¹Mᵀz", lambda: md.logdet(_gram()) + z.T @ M @ md.inv(_gram()) @ M.T @ z, M, 1, False),
    ("∂²‖G⁻¹Mᵀz‖²/∂λ²", lambda: md.norm(md.inv(_gram()) @ M.T @ z) ** 2, LAM_POS, 2, False),
    ("∂‖MG⁻¹Mᵀz − z‖²/∂λ", lambda: md.norm(M @ md.inv(_gram()) @ M.T @ z - z) ** 2, LAM_POS, 1, False),
    ("∇²_S aᵀchol(S)b", lambda: a.T @ md.cholesky(SPD) @ b, SPD, 2, True),
]


def _derivative(build, wrt, order):
    return md.hessian(build(), wrt) if order == 2 else md.grad(build(), wrt)


@pytest.mark.parametrize("name, build, wrt, order, triangular", CHOLESKY_CASES, ids=[c[0] for c in CHOLESKY_CASES])
def test_derivatives_through_a_cholesky_factor_are_right(name, build, wrt, order, triangular):
    """The derivative against central differences (md.check), at random points."""
    kinds = {"S": "spd", "lam": "positive"}
    assert md.check(build(), wrt, seed=5, kinds=kinds, order=order) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, build, wrt, order, triangular", CHOLESKY_CASES, ids=[c[0] for c in CHOLESKY_CASES])
def test_an_inverse_through_a_cholesky_factor_is_solved_with(name, build, wrt, order, triangular, backend):
    """The ridge matrix's inverse, only multiplied (inside a sum the product is distributed
    over, or twice around another factor), is a Cholesky solve with the right-hand side; the
    Cholesky factor's inverse, where the Hessian's entries are its entries, a triangular solve
    with I rather than an LU inverse.  Values are evaluate's."""
    _backend(backend)
    if backend == "numpy":
        pytest.importorskip("scipy")
    d = _derivative(build, wrt, order)
    source = md.codegen(d, backend=backend)
    body = _code(source)
    if triangular:
        assert re.search(r"(solve_triangular|_tri_solve)\([^\n]*\beye\(", body), source
        assert not re.search(r"\binv\(|_lu_inverse\(|cholesky_inverse\(|cho_solve\([^\n]*\beye\(", body), source
    else:
        assert not _forms_inverse(source) and re.search(r"cho_solve\(", body), source
    values = _values(np.random.default_rng(7))
    values["S"] = values["S"] + np.eye(4)
    fn = md.compile(d, backend=backend)
    got = _run(fn, backend, _arguments(fn, values))
    np.testing.assert_allclose(got, d.evaluate(_used(d, values)), rtol=1e-9, atol=1e-11)


def test_the_ridge_gradient_by_m_is_as_accurate_as_a_hand_written_cholesky_solve():
    """∇_M (log det G + zᵀMG⁻¹Mᵀz) = 2MG⁻¹ + 2zuᵀ − 2Muuᵀ, u = G⁻¹Mᵀz, at cond(G) = 10⁸: within
    2× of the same from SciPy's cho_factor/cho_solve, against the exact value (mpmath)."""
    scipy_linalg = pytest.importorskip("scipy.linalg")
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(11)
    q = np.linalg.qr(rng.standard_normal((9, 6)))[0]
    m = (q * np.logspace(0, -4, 6)) @ np.linalg.qr(rng.standard_normal((6, 6)))[0].T  # cond(MᵀM) = 10⁸
    zv, lv = rng.standard_normal(9), 1e-14
    with mpmath.workdps(60):
        mm, zz = mpmath.matrix(m.tolist()), mpmath.matrix(zv.tolist())
        gi = (mm.T * mm + lv * mpmath.eye(6)) ** -1
        u = gi * (mm.T * zz)
        ex = 2 * mm * gi + 2 * zz * u.T - 2 * (mm * u) * u.T
        exact = np.array([[float(ex[i, j]) for j in range(6)] for i in range(9)])
    f = _derivative(CHOLESKY_CASES[0][1], M, 1)
    got = md.compile(f)(M=m, z=zv, lam=lv)
    factor = scipy_linalg.cho_factor(m.T @ m + lv * np.eye(6))
    uh = scipy_linalg.cho_solve(factor, m.T @ zv)
    hand = 2 * scipy_linalg.cho_solve(factor, m.T).T + 2 * np.outer(zv, uh) - 2 * np.outer(m @ uh, uh)
    err, herr = np.linalg.norm(got - exact), np.linalg.norm(hand - exact)
    assert err <= 2 * herr + 1e-15 * np.linalg.norm(exact), (err, herr)


# ------------------------------------------------------ traces of a positive-definite inverse

# functions of λ whose derivative is the trace of a positive-definite inverse
LOG_DETS = [("log det G", lambda: md.logdet(_gram())),
            ("log det(S + λI)", lambda: md.logdet(SPD + LAM_POS * md.eye(n)))]
# (name, results): an inverse whose only reader is a trace, tr(S⁻¹) = ‖U⁻¹‖_F² for S = UᵀU
TRACE_CASES = [
    ("∂ log det G/∂λ = tr(G⁻¹)", lambda: md.grad(LOG_DETS[0][1](), LAM_POS)),
    ("∂ log det(S + λI)/∂λ", lambda: md.grad(LOG_DETS[1][1](), LAM_POS)),
    ("tr(S⁻¹)", lambda: md.trace(md.inv(SPD))),
    ("chol(S) and tr(S⁻¹)", lambda: [md.cholesky(SPD), md.trace(md.inv(SPD))]),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, build", TRACE_CASES, ids=[c[0] for c in TRACE_CASES])
def test_the_trace_of_a_positive_definite_inverse_forms_no_inverse(name, build, backend):
    """tr(S⁻¹) from S's Cholesky factor U as ‖U⁻¹‖_F² (NumPy: LAPACK's trtri; JAX: a
    triangular solve for I), where the code formed S⁻¹ by solving for I and took its trace;
    PyTorch keeps cholesky_inverse, the faster there.  Values are evaluate's, in float64 and
    (NumPy) float32; S is factorised once where chol(S) is a result too."""
    _backend(backend)
    if backend == "numpy":
        pytest.importorskip("scipy")
    results = build()
    source = md.codegen(results, backend=backend)
    body = _code(source)
    assert not re.search(r"cho_solve\([^\n]*\beye\(|\binv\(|_lu_inverse\(", body), source
    if backend == "numpy":
        assert not _forms_inverse(source) and "_cho_inverse_trace(" in body, source
    if backend == "torch":  # the trace itself by torch.trace, not torch.einsum's parser
        assert "torch.trace(" in body and "einsum" not in body, source
    assert len(re.findall(r"cho_factor\(|cholesky\(", body)) == 1, source
    values = _values(np.random.default_rng(13))
    values["S"] = values["S"] + np.eye(4)
    fn = md.compile(results, backend=backend)
    args = _arguments(fn, values)
    want = [np.asarray(r.evaluate(_used(r, values))) for r in _as_results(results)]
    got = _run_typed(fn, backend, args) if isinstance(results, list) else [_run(fn, backend, args)]
    for g, e in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), e, rtol=1e-10, atol=1e-12)
    if backend == "numpy":
        got32 = fn(**{k: np.asarray(v, dtype=np.float32) for k, v in args.items()})
        for g, e in zip(got32 if isinstance(results, list) else [got32], want, strict=True):
            assert g.dtype == np.float32
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def _as_results(results):
    return results if isinstance(results, list) else [results]


@pytest.mark.parametrize("name, build", LOG_DETS, ids=[c[0] for c in LOG_DETS])
def test_the_trace_derivatives_are_right(name, build):
    """∂ log det G/∂λ = tr(G⁻¹) (and the second derivative) against central differences."""
    assert md.check(build(), LAM_POS, seed=5, kinds={"S": "spd", "lam": "positive"}, order=2) < 1e-6
