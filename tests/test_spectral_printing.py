"""Spectral Hessians and Hessian-vector products print in matrix notation (issue 21).

A Hessian through a matrix function of a symmetric S is the second-order Daleckii–Krein
form: ∇²f[V] = U M Uᵀ with M a sum of Δ²f(λ)[X, Y], the second divided differences
T_pqc = f[λ_p, λ_q, λ_c] applied to two matrices, M_pc = Σ_q T_pqc X_pq Y_qc
(docs/matrix-functions.md). `md.hvp` prints that matrix at a given V; `md.hessian` prints
the linear map V ↦ … it applies.

Each row of the table is checked three ways: the printed text is the expected one; the
printed tree, read by an independent evaluator that computes U, λ and Δ²f(λ)[X, Y] from
their documented meaning (T from mpmath in 40 digits), equals the Hessian's einsum with V
and `md.hvp`'s value; and that value equals central differences of the gradient along V."""
import mpmath as mp
import numpy as np
import pytest

import matdiff as md
from matdiff import notation as N

from . import notation_eval

n = "n"
S = md.matrix("S", n, n, symmetric=True)
T = md.matrix("T", n, n, symmetric=True)
B = md.matrix("B", n, n)
V = md.matrix("V", n, n, symmetric=True)
a, b, w = md.vector("a", n), md.vector("b", n), md.vector("w", n)

MP = {"exp": mp.exp, "log": mp.log, "sqrt": mp.sqrt, "sin": mp.sin, "tanh": mp.tanh,
      "sigmoid": lambda u: 1 / (1 + mp.exp(-u)), "f": lambda u: u ** 3, "[u⁻¹]": lambda u: 1 / u,
      "[u^(−1/2)]": lambda u: 1 / mp.sqrt(u), "sigmoid′": lambda u: mp.exp(-u) / (1 + mp.exp(-u)) ** 2,
      "tanh′": lambda u: 1 / mp.cosh(u) ** 2}
W = "  where S = UΛUᵀ"

# (id, f of S, f's printed name (MP's key), md.hvp(f, S, V) printed, md.hessian(f, S) printed)
CASES = [
    ("aᵀexpm(S)a", lambda: a.T @ md.expm(S) @ a,
     "U(Δ²exp(λ)[UᵀVU, UᵀaaᵀU] + Δ²exp(λ)[UᵀaaᵀU, UᵀVU])Uᵀ" + W,
     "V ↦ U(Δ²exp(λ)[UᵀaaᵀU, UᵀVU] + Δ²exp(λ)[UᵀVU, UᵀaaᵀU])Uᵀ" + W),
    ("aᵀexpm(S)b", lambda: a.T @ md.expm(S) @ b,
     "(1/2)U(Δ²exp(λ)[UᵀVU, UᵀabᵀU] + Δ²exp(λ)[UᵀabᵀU, UᵀVU] + Δ²exp(λ)[UᵀVU, UᵀbaᵀU] + "
     "Δ²exp(λ)[UᵀbaᵀU, UᵀVU])Uᵀ" + W,
     "V ↦ (1/2)U(Δ²exp(λ)[UᵀVU, UᵀabᵀU] + Δ²exp(λ)[UᵀabᵀU, UᵀVU] + Δ²exp(λ)[UᵀbaᵀU, UᵀVU] + "
     "Δ²exp(λ)[UᵀVU, UᵀbaᵀU])Uᵀ" + W),
    ("tr(B expm(S))", lambda: md.trace(B @ md.expm(S)),
     "(1/2)U(Δ²exp(λ)[Uᵀ(B + Bᵀ)U, UᵀVU] + Δ²exp(λ)[UᵀVU, Uᵀ(B + Bᵀ)U])Uᵀ" + W,
     "V ↦ (1/2)U(Δ²exp(λ)[UᵀVU, Uᵀ(B + Bᵀ)U] + Δ²exp(λ)[Uᵀ(B + Bᵀ)U, UᵀVU])Uᵀ" + W),
    ("tr(T expm(S))", lambda: md.trace(T @ md.expm(S)),
     "U(Δ²exp(λ)[UᵀTU, UᵀVU] + Δ²exp(λ)[UᵀVU, UᵀTU])Uᵀ" + W,
     "V ↦ U(Δ²exp(λ)[UᵀTU, UᵀVU] + Δ²exp(λ)[UᵀVU, UᵀTU])Uᵀ" + W),
    ("aᵀlogm(S)a", lambda: a.T @ md.logm(S) @ a,
     "U(Δ²log(λ)[UᵀaaᵀU, UᵀVU] + Δ²log(λ)[UᵀVU, UᵀaaᵀU])Uᵀ" + W,
     "V ↦ U(Δ²log(λ)[UᵀVU, UᵀaaᵀU] + Δ²log(λ)[UᵀaaᵀU, UᵀVU])Uᵀ" + W),
    ("aᵀsqrtm(S)b", lambda: a.T @ md.sqrtm(S) @ b,
     "(1/2)U(Δ²sqrt(λ)[UᵀVU, UᵀbaᵀU] + Δ²sqrt(λ)[UᵀbaᵀU, UᵀVU] + Δ²sqrt(λ)[UᵀVU, UᵀabᵀU] + "
     "Δ²sqrt(λ)[UᵀabᵀU, UᵀVU])Uᵀ" + W,
     "V ↦ (1/2)U(Δ²sqrt(λ)[UᵀabᵀU, UᵀVU] + Δ²sqrt(λ)[UᵀbaᵀU, UᵀVU] + Δ²sqrt(λ)[UᵀVU, UᵀbaᵀU] + "
     "Δ²sqrt(λ)[UᵀVU, UᵀabᵀU])Uᵀ" + W),
    ("aᵀsin(S)a", lambda: a.T @ md.matrix_function(S, "sin") @ a,
     "U(Δ²sin(λ)[UᵀaaᵀU, UᵀVU] + Δ²sin(λ)[UᵀVU, UᵀaaᵀU])Uᵀ" + W,
     "V ↦ U(Δ²sin(λ)[UᵀVU, UᵀaaᵀU] + Δ²sin(λ)[UᵀaaᵀU, UᵀVU])Uᵀ" + W),
    ("tr(B tanh(S))", lambda: md.trace(B @ md.matrix_function(S, "tanh")),
     "(1/2)U(Δ²tanh(λ)[UᵀVU, Uᵀ(B + Bᵀ)U] + Δ²tanh(λ)[Uᵀ(B + Bᵀ)U, UᵀVU])Uᵀ" + W,
     "V ↦ (1/2)U(Δ²tanh(λ)[Uᵀ(B + Bᵀ)U, UᵀVU] + Δ²tanh(λ)[UᵀVU, Uᵀ(B + Bᵀ)U])Uᵀ" + W),
    ("aᵀσ(S)a", lambda: a.T @ md.matrix_function(S, "sigmoid") @ a,
     "U(Δ²sigmoid(λ)[UᵀVU, UᵀaaᵀU] + Δ²sigmoid(λ)[UᵀaaᵀU, UᵀVU])Uᵀ" + W,
     "V ↦ U(Δ²sigmoid(λ)[UᵀaaᵀU, UᵀVU] + Δ²sigmoid(λ)[UᵀVU, UᵀaaᵀU])Uᵀ" + W),
    ("aᵀf(S)a, f = u³", lambda: a.T @ md.matrix_function(S, lambda u: u ** 3) @ a,
     "U(Δ²f(λ)[UᵀaaᵀU, UᵀVU] + Δ²f(λ)[UᵀVU, UᵀaaᵀU])Uᵀ" + W + ", f(u) = u³",
     "V ↦ U(Δ²f(λ)[UᵀaaᵀU, UᵀVU] + Δ²f(λ)[UᵀVU, UᵀaaᵀU])Uᵀ" + W + ", f(u) = u³"),
    ("tr(S logm(S))", lambda: md.trace(S @ md.logm(S)),
     "U(2(UᵀVU ⊙ Δlog(λ)) + Δ²log(λ)[UᵀVU, UᵀSU] + Δ²log(λ)[UᵀSU, UᵀVU])Uᵀ" + W,
     "V ↦ U(2(UᵀVU ⊙ Δlog(λ)) + Δ²log(λ)[UᵀVU, UᵀSU] + Δ²log(λ)[UᵀSU, UᵀVU])Uᵀ" + W),
    ("Σ log λ(S)", lambda: md.sum(md.log(md.eigvalsh(S))),
     "U(Δ[u⁻¹](λ) ⊙ UᵀVU)Uᵀ" + W, "V ↦ U(Δ[u⁻¹](λ) ⊙ UᵀVU)Uᵀ" + W),
    ("wᵀλ(S)", lambda: w.T @ md.eigvalsh(S),
     "U(Γ(λ) ⊙ UᵀVU diag(w) + diag(w)(UᵀVU ⊙ Γ(λ)ᵀ))Uᵀ" + W, None),
]
IDS = [c[0] for c in CASES]


def _point(seed=0, size=4):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((size, size))
    t = rng.standard_normal((size, size))
    d = rng.standard_normal((size, size))
    return {"S": q @ q.T / size + np.diag(np.arange(1.0, size + 1)), "T": t @ t.T / size + np.eye(size),
            "B": rng.standard_normal((size, size)), "a": rng.standard_normal(size),
            "b": rng.standard_normal(size), "w": rng.standard_normal(size), "V": (d + d.T) / 2}


def _used(e, values):
    return {k: values[k] for k in (v.node.name for v in e.variables)}


# --------------------------------------------------------------------------- the notation's meaning

def _divided_differences(name, lam):
    """F_pq = f[λ_p, λ_q] and T_pqc = f[λ_p, λ_q, λ_c] in 40 digits, from f alone (mpmath's
    derivatives where points agree), as docs/matrix-functions.md defines them."""
    f = MP[name]
    with mp.workdps(40):
        x = [mp.mpf(float(v)) for v in lam]

        def dd(*pts):
            pts = sorted(pts)
            if pts[0] == pts[-1]:
                return mp.diff(f, pts[0], len(pts) - 1) / mp.factorial(len(pts) - 1)
            return (dd(*pts[1:]) - dd(*pts[:-1])) / (pts[-1] - pts[0])

        k = len(x)
        F = np.array([[float(dd(x[p], x[q])) for q in range(k)] for p in range(k)])
        T3 = np.array([[[float(dd(x[p], x[q], x[c])) for c in range(k)] for q in range(k)] for p in range(k)])
    return F, T3


def _read(m, env):
    """The value of a printed notation tree: notation_eval's, with the eigen-decomposition's
    parts, Γ, Δf(λ) and Δ²f(λ)[X, Y] computed here from their definitions."""
    original = notation_eval.evaluate

    def read(x, env, sizes, functions):
        ev = lambda y: read(y, env, sizes, functions)  # noqa: E731
        if isinstance(x, N.Sym) and x.role == "divdiff3":  # Δ²f(λ)[X, Y]_pc = Σ_q T_pqc X_pq Y_qc
            lam, X, Y = (np.asarray(ev(p), float) for p in x.params[1:])
            return np.einsum("pqc,pq,qc->pc", _divided_differences(str(x.params[0]), lam)[1], X, Y)
        if isinstance(x, N.Call) and x.fn is None and x.name in ("Q", "eigvalsh"):
            lam, u = np.linalg.eigh(ev(x.arg))
            return u if x.name == "Q" else lam
        if isinstance(x, N.Call) and x.fn is None and x.name == "Γ":
            lam = ev(x.arg)
            gap = lam[None, :] - lam[:, None]
            return np.where(np.eye(lam.size) > 0, 0.0, 1.0 / np.where(gap == 0, 1.0, gap))
        if isinstance(x, N.Call) and x.fn is None and x.name.startswith("Δ"):
            return _divided_differences(x.name[1:], ev(x.arg))[0]
        if isinstance(x, N.Call) and x.fn is not None and x.name.startswith("Δ"):  # Δh(λ), h traced
            from matdiff.evaluate import _divided_differences as divided  # (h defined in the text)
            return divided(x.fn, ev(x.arg), {})
        if isinstance(x, N.Call) and x.fn is None and x.name in ("U", "V", "svdvals"):  # X = UΣVᵀ
            u, sv, vt = np.linalg.svd(ev(x.arg), full_matrices=False)
            return {"U": u, "V": vt.T, "svdvals": sv}[x.name]
        if isinstance(x, N.Call) and x.fn is None and x.name == "sqrtm":  # of a symmetric matrix
            lam, u = np.linalg.eigh(ev(x.arg))
            return (u * np.sqrt(lam)) @ u.T
        if isinstance(x, N.Sym) and x.role == "basis":  # e₁, eₙ
            e = np.zeros(sizes["n"])
            e[0 if x.name == "1" else -1] = 1.0
            assert x.name in ("1", "n"), x.name
            return e
        return original(x, env, sizes, functions)

    notation_eval.evaluate = read  # its recursion comes back here
    try:
        sizes = {"n": np.shape(env["S"])[0], "k": np.shape(env.get("X", np.zeros((0, 0))))[-1]}
        return np.asarray(read(m, env, sizes, {}), float)
    finally:
        notation_eval.evaluate = original


# --------------------------------------------------------------------------- the table

def test_the_table_has_ten_cases_through_second_divided_differences():
    assert len(CASES) >= 10 and len(set(IDS)) == len(CASES)
    assert sum("Δ²" in c[2] for c in CASES) >= 10


@pytest.mark.parametrize("name, build, hvp_text, hessian_text", CASES, ids=IDS)
def test_hvp_and_hessian_print_in_matrix_notation(name, build, hvp_text, hessian_text):
    f = build()
    got = str(md.hvp(f, S, V))
    assert _terms_sorted(got) == _terms_sorted(hvp_text), got
    if hessian_text is not None:
        got = str(md.hessian(f, S))
        assert _terms_sorted(got) == _terms_sorted(hessian_text), got


def _terms_sorted(text: str) -> str:
    """text with the terms of each sum in sorted order, inside every bracket: the order of
    a sum's terms follows the order its IR terms were first built in."""
    def group(i, close):
        pieces, cur = [], ""
        while i < len(text) and text[i] != close:
            ch = text[i]
            if ch in "([":
                inner, i = group(i + 1, ")" if ch == "(" else "]")
                cur += ch + inner + (")" if ch == "(" else "]")
            elif text.startswith(" + ", i):
                pieces.append(cur)
                cur, i = "", i + 3
                continue
            else:
                cur += ch
            i += 1
        pieces.append(cur)
        return " + ".join(sorted(pieces)), i

    return group(0, None)[0]


def test_sorting_terms_keeps_other_differences():
    assert _terms_sorted("U(A + B[X, Y])Uᵀ") == _terms_sorted("U(B[X, Y] + A)Uᵀ")
    assert _terms_sorted("U(A + B[X, Y])Uᵀ") != _terms_sorted("U(A + B[Y, X])Uᵀ")


@pytest.mark.parametrize("name, build, hvp_text, hessian_text", CASES, ids=IDS)
def test_hvp_equals_central_differences_of_the_gradient(name, build, hvp_text, hessian_text):
    values = _point()
    f = build()
    g, h = md.grad(f, S), md.hvp(f, S, V)
    step = 1e-5
    plus = g.evaluate(_used(g, {**values, "S": values["S"] + step * values["V"]}))
    minus = g.evaluate(_used(g, {**values, "S": values["S"] - step * values["V"]}))
    np.testing.assert_allclose(h.evaluate(_used(h, values)), (plus - minus) / (2 * step), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name, build, hvp_text, hessian_text", CASES, ids=IDS)
def test_printed_forms_mean_the_hessian_applied_to_v(name, build, hvp_text, hessian_text):
    """The printed HVP tree and the printed linear map V ↦ …, evaluated from the notation's
    meaning, equal Σ_kl H_ijkl V_kl of the Hessian and md.hvp's value."""
    values = _point()
    f = build()
    hess, h = md.hessian(f, S), md.hvp(f, S, V)
    want = np.einsum("ijkl,kl->ij", hess.evaluate(_used(hess, values)), values["V"])
    np.testing.assert_allclose(h.evaluate(_used(h, values)), want, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(_read(h.notation(), values), want, rtol=1e-8, atol=1e-10)
    linear = hess._linear_map()
    assert linear is not None and linear[0] == "V"
    np.testing.assert_allclose(_read(linear[1], values), want, rtol=1e-8, atol=1e-10)


def test_the_reader_catches_a_misprint():
    """The check can fail: the printed sum with one Δ²f(λ)[X, Y] term left out, or with f
    read as another function, is another matrix."""
    values = _point()
    h = md.hvp(a.T @ md.expm(S) @ b, S, V)
    right = _read(h.notation(), values)

    def edit(m, change):
        if isinstance(m, N.Sym) and m.role == "divdiff3":
            return change(m)
        if isinstance(m, N.Prod):
            return N.Prod(m.kind, m.coef, tuple(edit(x, change) for x in m.factors))
        if isinstance(m, N.Add):
            return N.Add(m.kind, tuple((c, edit(t, change)) for c, t in m.terms[:-1]))  # one term less
        return m

    fewer = _read(edit(h.notation(), lambda m: m), values)
    sine = _read(edit(h.notation(), lambda m: N.Sym(m.kind, m.name, m.role, False, m.dims, ("sin",) + m.params[1:])),
                 values)
    assert not np.allclose(fewer, right, rtol=1e-3) and not np.allclose(sine, right, rtol=1e-3)


Xn = md.matrix("X", n, n)
LAM = md.eigvalsh(S)
# Hessians through a decomposition that printed in index form before: as the linear map
LINEAR = [
    ("tr sqrtm(S + XᵀX) by X", lambda: md.trace(md.sqrtm(S + Xn.T @ Xn)), Xn),
    ("λ₁(S)λₙ(S)", lambda: LAM[0] * LAM[-1], S),
    ("logsumexp λ(S)", lambda: md.logsumexp(LAM), S),
    ("Σσ(λᵢ)λᵢ", lambda: md.sum(md.sigmoid(LAM) * LAM), S),
    ("‖X‖_*", lambda: md.norm(Xn, "nuc"), Xn),
    ("PCA: λ_max(XᵀX)", lambda: md.eigvalsh(Xn.T @ Xn)[-1], Xn),
    ("λ_max(S⁻¹)", lambda: md.eigvalsh(md.inv(S))[-1], S),
    ("λ_max(XSXᵀ) by S", lambda: md.eigvalsh(Xn @ S @ Xn.T)[-1], S),
    ("W₂²(S, T) by S (two decompositions)", lambda: md.trace(S + T - 2 * md.sqrtm(md.sqrtm(S) @ T @ md.sqrtm(S))), S),
    # f′ the derivative of a function of the table: Daleckii–Krein's form, Δsigmoid′(λ)
    ("Σσ(λᵢ)", lambda: md.sum(md.sigmoid(LAM)), S),
    ("Σtanh(λᵢ)", lambda: md.sum(md.tanh(LAM)), S),
]


@pytest.mark.parametrize("name, build, var", LINEAR, ids=[c[0] for c in LINEAR])
def test_spectral_hessians_print_as_linear_maps_that_mean_them(name, build, var):
    values = _point(3)
    values["X"] = np.random.default_rng(5).standard_normal((4, 4)) + 2 * np.eye(4)
    hess = md.hessian(build(), var)
    text = str(hess)
    assert " ↦ " in text and "divided_differences" not in text, text
    if "two decompositions" not in name:  # one: its parts are named U, λ, …
        assert "Q(" not in text and "eigvalsh" not in text, text
    letter, m = hess._linear_map()
    assert text.startswith(letter + " ↦ ")
    rng = np.random.default_rng(9)
    direction = rng.standard_normal((4, 4))
    if var.node.symmetric:
        direction = (direction + direction.T) / 2
    want = np.einsum("ijkl,kl->ij", hess.evaluate(_used(hess, values)), direction)
    np.testing.assert_allclose(_read(m, {**values, letter: direction}), want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name, build, var", [LINEAR[i] for i in (0, 4, 5, 6, 7)],
                         ids=[LINEAR[i][0] for i in (0, 4, 5, 6, 7)])
def test_the_direction_is_symmetric_exactly_where_the_hessian_is(name, build, var, monkeypatch):
    """V of the map V ↦ H[V] is symmetric exactly where H_ijkl = H_ijlk (here at 4 × 4
    values), whether or not simplify brings H's transpose in k, l to H's own node (its
    canonical order may not: with the structural test made to fail, the answer stands)."""
    import matdiff.expr as E

    hess = md.hessian(build(), var)
    values = _point(3)
    values["X"] = np.random.default_rng(5).standard_normal((4, 4)) + 2 * np.eye(4)
    h = hess.evaluate(_used(hess, values))
    symmetric = bool(np.allclose(h, np.swapaxes(h, 2, 3), rtol=1e-9, atol=1e-9 * np.abs(h).max()))
    letter, m = hess._linear_map()
    assert any(isinstance(x, N.Sym) and x.name == letter and x.symmetric for x in E._leaves(m)) == symmetric
    node = E.simplify(hess.node)
    monkeypatch.setattr(E, "_SYMMETRIC_LAST_TWO", {})
    monkeypatch.setattr(E, "simplify", lambda x: x)  # Hᵀ⁽ᵏˡ⁾ left as built: never H's own node
    assert E._symmetric_in_last_two(node) == symmetric


# --------------------------------------------------------------------------- LaTeX, index form, refusals

def test_latex_writes_the_second_divided_differences_as_delta_squared():
    text = md.hvp(a.T @ md.expm(S) @ a, S, V).latex()
    assert text == (r"U \left(\Delta^{2}_{\exp}\left(\lambda\right)\left[U^\top V U, U^\top a a^\top U\right] + "
                    r"\Delta^{2}_{\exp}\left(\lambda\right)\left[U^\top a a^\top U, U^\top V U\right]\right) U^\top"
                    r" \quad\text{where } S = U \Lambda U^\top")
    hess = md.hessian(a.T @ md.logm(S) @ a, S).latex()
    assert hess.startswith(r"V \mapsto U \left(\Delta^{2}_{\log}")
    assert not set(hess) & set("ΔΓλᵀ")


def test_the_index_form_names_the_decomposition_parts():
    """.index() keeps the index form, with U_ip and Δ²exp(λ)_pqr (never Q(S) or eigvalsh(S))."""
    text = md.hessian(a.T @ md.expm(S) @ a, S).index()
    assert "Δ²exp(λ)_" in text and "U_i" in text and text.endswith("where S = UΛUᵀ" + text.split(W)[-1])
    for raw in ("Q(S)", "eigvalsh", "divided_differences", "eigh("):
        assert raw not in text, text
    hvp = md.hvp(a.T @ md.expm(S) @ a, S, V).index()
    assert "Δ²exp(λ)[" in hvp and "Q(S)" not in hvp and "divided_differences" not in hvp, hvp


def test_spectral_forms_are_display_only():
    """The parts of a decomposition have no constructor: repr says so in angle brackets, the
    input dialects refuse to write the form, and the text is refused when read back."""
    from matdiff.parse import declarations
    h = md.hvp(a.T @ md.expm(S) @ a, S, V)
    assert repr(h).startswith("<") and repr(h).endswith(">")
    for dialect in ("numpy", "mc"):
        with pytest.raises(md.NotSupportedError):
            h.text(dialect)
    with pytest.raises(md.ParseError, match="for reading only"):
        md.parse(str(h), dialect="matdiff", **declarations(h))


# --------------------------------------------------------------------------- powers of Σ and Λ

Xr = md.matrix("X", n, "k")  # not square: X = UΣVᵀ with min(n, k) singular values
# (id, f, the variable, ∇f printed): diag(σ^∘k) prints as Σᵏ (present.py's "diag(σᵏ) = Σᵏ")
POWERS = [
    ("Σσᵢ³", lambda: md.sum(md.svdvals(Xn) ** 3), Xn, "3UΣ²Vᵀ  where X = UΣVᵀ"),
    ("Σσᵢ⁴ of a wide X", lambda: md.sum(md.svdvals(Xr) ** 4), Xr, "4UΣ³Vᵀ  where X = UΣVᵀ"),
    ("Σσᵢ³/3", lambda: md.sum(md.svdvals(Xn) ** 3) / 3, Xn, "UΣ²Vᵀ  where X = UΣVᵀ"),
]


@pytest.mark.parametrize("name, build, var, text", POWERS, ids=[p[0] for p in POWERS])
def test_powers_of_singular_values_print_as_powers_of_sigma(name, build, var, text):
    """The printed tree read from its meaning (U, V, σ by NumPy's SVD) is the gradient, and
    the gradient is central differences of f."""
    f = build()
    g = md.grad(f, var)
    assert str(g) == text
    assert "\\Sigma^{" in g.latex() and "diag" not in str(g)
    rng = np.random.default_rng(11)
    point = rng.standard_normal((4, 4)) + 2 * np.eye(4) if var is Xn else rng.standard_normal((4, 3))
    values = {**_point(), "X": point}
    want = g.evaluate(X=point)
    np.testing.assert_allclose(_read(g.notation(), values), want, rtol=1e-9, atol=1e-11)
    step, d = 1e-6, rng.standard_normal(point.shape)
    fd = (f.evaluate(X=point + step * d) - f.evaluate(X=point - step * d)) / (2 * step)
    np.testing.assert_allclose(np.sum(want * d), fd, rtol=1e-6)
    with pytest.raises(md.ParseError, match="for reading only"):  # U, Σ, V have no constructor
        from matdiff.parse import declarations
        md.parse(str(g), dialect="matdiff", **declarations(g))


def test_the_eigenvalues_power_reads_as_a_power_of_lambda():
    """diag(λ^∘2) of a symmetric S's eigenvalues prints Λ², and is the same matrix."""
    from matdiff.printing import TEXT, render
    lam = N.Call("c", "eigvalsh", N.Sym("m", "S", symmetric=True, dims=(n, n)))
    q = N.Call("m", "Q", lam.arg)
    m = N.prod(1.0, [q, N.Call("m", "diag", N.Pow("c", lam, 2.0)), N.Sym("m", "B", dims=(n, n))])
    shown = md.present.simplest(m)
    assert render(shown, TEXT) == "UΛ²B  where S = UΛUᵀ"
    values = _point()
    np.testing.assert_allclose(_read(shown, values), _read(m, values), rtol=1e-12)
