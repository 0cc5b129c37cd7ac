"""Second derivatives through functions of a general matrix print in matrix notation (issue 21).

diff.py writes the second Fréchet derivative with 2 × 2 block matrices, and a Jacobian's or
Hessian's Fréchet derivatives, one per entry of the output, as one Fréchet derivative of a
block-diagonal matrix. Printed, these are L²_f(X; E₁, E₂) — the derivative of L_f(X, E₁) along
E₂ (docs/matrix-functions.md) — and, for a 4-index Hessian or Jacobian, the linear map it
applies to a direction: V ↦ L²_exp(Yᵀ; abᵀ, Vᵀ), V ↦ L_exp(Y, V).

Each row is checked three ways: the printed text is the expected one; the printed tree, read
by an evaluator that computes L_f and L²_f from their documented meaning — the top-right block
of f applied to [[X, E], [0, X]] and to the 4 × 4 block matrix [[X, E₁, E₂, 0], [0, X, 0, E₂],
[0, 0, X, E₁], [0, 0, 0, X]], with SciPy's expm, logm, sqrtm, sinm, cosm, tanhm (no Fréchet
code of matdiff's) — equals md.hvp and the Hessian's Σ_kl H_ijkl V_kl; and md.hvp equals
central differences of the gradient along V."""
import numpy as np
import pytest
import scipy.linalg as sl

import matdiff as md
from matdiff import notation as N
from matdiff.ir import GENERAL_FUNCTIONS, Contract
from matdiff.parse import declarations
from matdiff.recognise import recognise
from matdiff.simplify import simplify

from . import notation_eval

n = "n"
Y = md.matrix("Y", n, n)
B = md.matrix("B", n, n)
V = md.matrix("V", n, n)
a, b = md.vector("a", n), md.vector("b", n)


def _f(fn):
    return {"exp": md.expm, "log": md.logm, "sqrt": md.sqrtm}.get(fn) or (lambda x: md.matrix_function(x, fn))


# (id, f of Y, md.hvp(f, Y, V) printed, md.hessian(f, Y) printed)
CASES = [
    ("aᵀexpm(Y)b", lambda: a.T @ md.expm(Y) @ b, "L²_exp(Yᵀ; abᵀ, Vᵀ)", "V ↦ L²_exp(Yᵀ; abᵀ, Vᵀ)"),
    ("aᵀlogm(Y)b", lambda: a.T @ md.logm(Y) @ b, "L²_log(Yᵀ; abᵀ, Vᵀ)", "V ↦ L²_log(Yᵀ; abᵀ, Vᵀ)"),
    ("aᵀsqrtm(Y)b", lambda: a.T @ md.sqrtm(Y) @ b, "L²_sqrt(Yᵀ; abᵀ, Vᵀ)", "V ↦ L²_sqrt(Yᵀ; abᵀ, Vᵀ)"),
    ("aᵀsinₘ(Y)a", lambda: a.T @ _f("sin")(Y) @ a, "L²_sin(Yᵀ; aaᵀ, Vᵀ)", "V ↦ L²_sin(Yᵀ; aaᵀ, Vᵀ)"),
    ("aᵀtanhₘ(Y)b", lambda: a.T @ _f("tanh")(Y) @ b, "L²_tanh(Yᵀ; abᵀ, Vᵀ)", "V ↦ L²_tanh(Yᵀ; abᵀ, Vᵀ)"),
    ("tr(B expm(Y))", lambda: md.trace(B @ md.expm(Y)), "L²_exp(Yᵀ; Bᵀ, Vᵀ)", "V ↦ L²_exp(Yᵀ; Bᵀ, Vᵀ)"),
    ("tr(B logm(Y))", lambda: md.trace(B @ md.logm(Y)), "L²_log(Yᵀ; Bᵀ, Vᵀ)", "V ↦ L²_log(Yᵀ; Bᵀ, Vᵀ)"),
    ("tr(B cosₘ(Y))", lambda: md.trace(B @ _f("cos")(Y)), "L²_cos(Yᵀ; Bᵀ, Vᵀ)", "V ↦ L²_cos(Yᵀ; Bᵀ, Vᵀ)"),
    ("tr(B σₘ(Y))", lambda: md.trace(B @ _f("sigmoid")(Y)), "L²_sigmoid(Yᵀ; Bᵀ, Vᵀ)",
     "V ↦ L²_sigmoid(Yᵀ; Bᵀ, Vᵀ)"),
    ("tr expm(Y)", lambda: md.trace(md.expm(Y)), "L_exp(Y, V)ᵀ", "V ↦ L_exp(Yᵀ, Vᵀ)"),
    ("tr sinₘ(Y)", lambda: md.trace(_f("sin")(Y)), "L_cos(Y, V)ᵀ", "V ↦ L_cos(Yᵀ, Vᵀ)"),
    ("tr cosₘ(Y)", lambda: md.trace(_f("cos")(Y)), "L_sin(Y, −V)ᵀ", "V ↦ −L_sin(Yᵀ, Vᵀ)"),
    ("tr sqrtm(Y)", lambda: md.trace(md.sqrtm(Y)), "L_sqrt(Y, −(1/2)sqrtm(Yᵀ)⁻ᵀV sqrtm(Yᵀ)⁻ᵀ)ᵀ",
     "V ↦ −(1/2)sqrtm(Y)⁻ᵀL_sqrt(Yᵀ, Vᵀ)sqrtm(Y)⁻ᵀ"),
    ("tr(expm(Y)expm(Y))", lambda: md.trace(md.expm(Y) @ md.expm(Y)),
     "2L²_exp(Yᵀ; expm(Y)ᵀ, Vᵀ) + L_exp(Yᵀ, 2L_exp(Y, V)ᵀ)",
     "V ↦ 2(L²_exp(Yᵀ; expm(Y)ᵀ, Vᵀ) + L_exp(Yᵀ, L_exp(Y, V)ᵀ))"),
    # bilinear in E₁ and E₂: their coefficients stand in front
    ("tr(B expm(Y/4))", lambda: md.trace(B @ md.expm(Y / 4)), "(1/16)L²_exp((1/4)Yᵀ; Bᵀ, Vᵀ)",
     "V ↦ (1/16)L²_exp((1/4)Yᵀ; Bᵀ, Vᵀ)"),
    ("‖sqrtm(Y)‖_F²", lambda: md.norm(md.sqrtm(Y)) ** 2, "L_sqrt(Yᵀ, 2L_sqrt(Y, V)) + 2L²_sqrt(Yᵀ; sqrtm(Y), Vᵀ)",
     "V ↦ 2(L²_sqrt(Yᵀ; sqrtm(Y), Vᵀ) + L_sqrt(Yᵀ, L_sqrt(Y, V)))"),
]
IDS = [c[0] for c in CASES]

# (id, F of Y, md.jacobian(F, Y) printed): a Jacobian applies L_f(Y, ·)
JACOBIANS = [(fn, _f(fn), f"V ↦ L_{fn}(Y, V)") for fn in ("exp", "log", "sqrt", "sin", "tanh", "sigmoid")]

BY_CALL = {name: fn for fn, name in GENERAL_FUNCTIONS.items()}  # expm → exp, sinₘ → sin


def _funm(fn, x):
    """f(X) of a general matrix, with SciPy (principal branches)."""
    if fn == "sigmoid":
        return np.linalg.solve(np.eye(len(x)) + sl.expm(-x), np.eye(len(x)))
    return np.real({"exp": sl.expm, "log": sl.logm, "sqrt": sl.sqrtm, "sin": sl.sinm, "cos": sl.cosm,
                    "tanh": sl.tanhm}[fn](x))


def _frechet(fn, x, e):
    """L_f(X, E): the top-right block of f([[X, E], [0, X]])."""
    k, z = len(x), np.zeros_like(x)
    return _funm(fn, np.block([[x, e], [z, x]]))[:k, k:]


def _frechet2(fn, x, e1, e2):
    """L²_f(X; E₁, E₂): the top-right block of f of the 4 × 4 block matrix below, whose
    (1, 4) block sums the words of f's Taylor series with one E₁ and one E₂ in them."""
    k, z = len(x), np.zeros_like(x)
    big = np.block([[x, e1, e2, z], [z, x, z, e2], [z, z, x, e1], [z, z, z, x]])
    return _funm(fn, big)[:k, 3 * k:]


def _reader():
    original = notation_eval.evaluate

    def read(m, env, sizes, functions):
        ev = lambda x: np.asarray(read(x, env, sizes, functions), float)  # noqa: E731
        if isinstance(m, N.Sym) and m.role == "frechet":
            return _frechet(m.params[0], *map(ev, m.params[1:]))
        if isinstance(m, N.Sym) and m.role == "frechet2":
            return _frechet2(m.params[0], *map(ev, m.params[1:]))
        if isinstance(m, N.Call) and m.fn is None and m.name in BY_CALL:
            return _funm(BY_CALL[m.name], ev(m.arg))
        if isinstance(m, N.Sym) and m.role == "basis":  # eₖ of an entry form: k given as env["#k"]
            e = np.zeros(sizes["n"])
            e[env["#" + m.name]] = 1.0
            return e
        return original(m, env, sizes, functions)

    return read


def _read(m, values, monkeypatch):
    read = _reader()
    monkeypatch.setattr(notation_eval, "evaluate", read)  # its recursion comes back here
    try:
        return np.asarray(read(m, values, {"n": 3}, {}), float)
    finally:
        monkeypatch.undo()


def _values(seed=0):
    """Y with its eigenvalues near 1.5 (in the right half-plane: logm and sqrtm are defined),
    not symmetric; a, b, B, and a direction V."""
    rng = np.random.default_rng(seed)
    return {"Y": 1.5 * np.eye(3) + 0.4 * rng.standard_normal((3, 3)), "B": rng.standard_normal((3, 3)),
            "a": rng.standard_normal(3), "b": rng.standard_normal(3), "V": rng.standard_normal((3, 3))}


def _used(e, values):
    return {v.node.name: values[v.node.name] for v in e.variables}


def test_the_table_has_at_least_eight_cases():
    assert len(CASES) >= 8 and len(set(IDS)) == len(CASES)
    assert sum("L²_" in c[2] for c in CASES) >= 8


@pytest.mark.parametrize("name, build, hvp_text, hessian_text", CASES, ids=IDS)
def test_hvp_and_hessian_print_as_frechet_derivatives(name, build, hvp_text, hessian_text):
    f = build()
    assert str(md.hvp(f, Y, V)) == hvp_text
    assert str(md.hessian(f, Y)) == hessian_text
    assert "reshape" not in md.hessian(f, Y).latex() and "reshape" not in md.hvp(f, Y, V).latex()


@pytest.mark.parametrize("name, build, hvp_text, hessian_text", CASES, ids=IDS)
def test_printed_forms_mean_the_hessian_applied_to_v(name, build, hvp_text, hessian_text, monkeypatch):
    f = build()
    values = _values()
    hvp, hess = md.hvp(f, Y, V), md.hessian(f, Y)
    want = np.einsum("ijkl,kl->ij", hess.evaluate(_used(hess, values)), values["V"])
    np.testing.assert_allclose(hvp.evaluate(_used(hvp, values)), want, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(_read(hvp.notation(), values, monkeypatch), want, rtol=1e-7, atol=1e-9)
    letter, m = hess._linear_map()
    assert letter == "V"
    np.testing.assert_allclose(_read(m, values, monkeypatch), want, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name, build, hvp_text, hessian_text", CASES, ids=IDS)
def test_hvp_equals_central_differences_of_the_gradient(name, build, hvp_text, hessian_text):
    f = build()
    values = _values(1)
    g, hvp = md.grad(f, Y), md.hvp(f, Y, V)
    h, step = 1e-5, values["V"]
    up = g.evaluate(_used(g, {**values, "Y": values["Y"] + h * step}))
    down = g.evaluate(_used(g, {**values, "Y": values["Y"] - h * step}))
    np.testing.assert_allclose(hvp.evaluate(_used(hvp, values)), (up - down) / (2 * h), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("fn, build, text", JACOBIANS, ids=[j[0] for j in JACOBIANS])
def test_jacobian_prints_as_the_frechet_derivative_it_applies(fn, build, text, monkeypatch):
    F = build(Y)
    jac = md.jacobian(F, Y)
    assert str(jac) == text
    values = _values(2)
    want = np.einsum("ijkl,kl->ij", jac.evaluate(Y=values["Y"]), values["V"])
    h = 1e-5  # central differences of F along V
    fd = (F.evaluate(Y=values["Y"] + h * values["V"]) - F.evaluate(Y=values["Y"] - h * values["V"])) / (2 * h)
    np.testing.assert_allclose(want, fd, rtol=1e-6, atol=1e-8)
    letter, m = jac._linear_map()
    np.testing.assert_allclose(_read(m, {"Y": values["Y"], letter: values["V"]}, monkeypatch), want,
                               rtol=1e-7, atol=1e-9)


def test_the_reader_catches_a_misprint(monkeypatch):
    """The reader is not blind: the two directions of L²_f at a wrong point, or L_f read in
    place of L²_f, give other values."""
    values = _values()
    m = md.hvp(a.T @ md.expm(Y) @ b, Y, V).notation()
    right = _read(m, values, monkeypatch)
    fn, x, e1, e2 = m.params
    wrong = N.Sym("m", m.name, "frechet2", dims=m.dims, params=(fn, N.transpose(x), e1, e2))
    assert not np.allclose(_read(wrong, values, monkeypatch), right, rtol=1e-3)
    swapped = N.Sym("m", m.name, "frechet2", dims=m.dims, params=(fn, x, e2, e1))  # L² is symmetric
    np.testing.assert_allclose(_read(swapped, values, monkeypatch), right, rtol=1e-9)


def test_latex_writes_the_second_frechet_derivative_as_higham_does():
    f = a.T @ md.expm(Y) @ b
    assert md.hvp(f, Y, V).latex() == "L^{(2)}_{\\exp}\\left(Y^\\top; a b^\\top, V^\\top\\right)"
    assert md.hessian(f, Y).latex() == "V \\mapsto L^{(2)}_{\\exp}\\left(Y^\\top; a b^\\top, V^\\top\\right)"
    assert md.jacobian(md.sqrtm(Y), Y).latex() == "V \\mapsto L_{\\operatorname{sqrt}}\\left(Y, V\\right)"


@pytest.mark.parametrize("e", [md.hvp(a.T @ md.logm(Y) @ b, Y, V), md.hessian(a.T @ md.logm(Y) @ b, Y),
                               md.jacobian(md.expm(Y), Y)], ids=["hvp", "hessian", "jacobian"])
def test_printed_frechet_forms_are_display_only(e):
    """L²_f and V ↦ … are refused when read, with a caret, and repr says so with <…>; the
    other dialects refuse to write them."""
    text = str(e)
    with pytest.raises(md.ParseError, match="for reading only") as err:
        md.parse(text, dialect="matdiff", result_shape=e.shape, **declarations(e))
    assert str(err.value).rstrip().endswith("^")
    assert repr(e) == f"<{text}>"
    for dialect in ("mc", "numpy"):
        with pytest.raises(md.NotSupportedError):
            e.text(dialect)


def test_index_form_of_a_map_is_its_entries_at_unit_directions(monkeypatch):
    """.index() of a 4-index result printed as a map V ↦ H[V] writes its entries H_ijkl as
    H[eₖeₗᵀ]_ij; read with eₖ and eₗ at each k, l, they are the Hessian's (Jacobian's) entries."""
    values = _values(3)
    for e, text in ((md.hessian(a.T @ md.expm(Y) @ b, Y), "L²_exp(Yᵀ; abᵀ, eₗeₖᵀ)_ij"),
                    (md.jacobian(md.expm(Y), Y), "L_exp(Y, eₖeₗᵀ)_ij"),
                    (md.hessian(md.trace(md.sqrtm(Y)), Y), "(−(1/2)sqrtm(Y)⁻ᵀL_sqrt(Yᵀ, eₗeₖᵀ)sqrtm(Y)⁻ᵀ)_ij")):
        assert e.index() == text
        _check_entries(e, values, monkeypatch)


def _check_entries(e, values, monkeypatch):
    """The tree .index() prints, read at every unit direction, equals e's entries."""
    want = e.evaluate(_used(e, values))
    letter, m = e._linear_map()
    nout = {"s": 0, "c": 1, "r": 1, "m": 2}[m.kind]
    entry, letters = md.printing.map_entry(m, letter, e.shape[nout:])
    assert len(letters) == nout
    units = [u for u in "ijklm"[nout:e.ndim]]
    for at in np.ndindex(*want.shape[nout:]):
        env = {**values, **{"#" + u: k for u, k in zip(units, at)}}
        got = _read(entry, env, monkeypatch)
        np.testing.assert_allclose(got, want[(Ellipsis,) + at], rtol=1e-7, atol=1e-9)


def test_hvp_index_and_bracket_name_the_second_frechet_derivative(monkeypatch):
    """.index() and .bracket() of md.hvp write L²_f(X; E₁, E₂) (and L_f) on the row and
    column indices of the block matrices it is read from — never reshape(…frechet(…)) — and
    that leaf, read, is md.hvp's value (transposed where its indices are)."""
    values = _values(5)
    for name, build, *_ in CASES:
        h = md.hvp(build(), Y, V)
        text, bracket = h.index(), h.bracket()
        for raw in ("reshape", "frechet", "unit("):
            assert raw not in text + bracket, (name, text, bracket)
        node = simplify(h.node)
        written = md.printing._second_frechet_leaves(node) if isinstance(node, Contract) else []
        if len(written) != 1:  # a sum, or a coefficient beside the leaf: printed above
            continue
        leaf, lab = written[0]
        leaf = leaf if isinstance(leaf, N.M) else recognise(leaf)  # L_f(X, E) of no block matrices
        value = _read(leaf, values, monkeypatch)
        want = h.evaluate(_used(h, values))
        np.testing.assert_allclose(value if lab == node.out else value.T, want, rtol=1e-7, atol=1e-9)
        assert text.startswith(md.printing.render(leaf, md.printing.TEXT)), (name, text)
    e = md.hvp(a.T @ md.expm(Y) @ b, Y, V)
    assert e.index() == "L²_exp(Y; baᵀ, V)_ji"
    assert e.bracket() == "(L²_exp(Y; baᵀ, V))₂(L²_exp(Y; baᵀ, V))₁"
    assert e.bracket(latex=True).startswith("\\left(L^{(2)}_{\\exp}\\left(Y; b a^\\top, V\\right)\\right)_{2}")
    with pytest.raises(md.NotSupportedError, match="entries at the unit directions"):
        md.hessian(a.T @ md.expm(Y) @ b, Y).bracket()


COMPOSITE = [  # (id, f of Y): products, squares and sums inside and around the matrix function
    ("(aᵀexpm(Y)b)²", lambda: (a.T @ md.expm(Y) @ b) ** 2),
    ("aᵀexpm(Y)expm(Y)b", lambda: a.T @ md.expm(Y) @ md.expm(Y) @ b),
    ("aᵀsqrtm(4I + B/2 + YYᵀ)b", lambda: a.T @ md.sqrtm(4 * md.eye(n) + B / 2 + Y @ Y.T) @ b),
    ("aᵀexpm(YY)b", lambda: a.T @ md.expm(Y @ Y) @ b),
    ("tr(expm(Y)B logm(B + Y))", lambda: md.trace(md.expm(Y) @ B @ md.logm(3 * md.eye(n) + Y))),
]


@pytest.mark.parametrize("name, build", COMPOSITE, ids=[c[0] for c in COMPOSITE])
def test_composite_hessians_print_as_maps_that_mean_them(name, build, monkeypatch):
    f = build()
    values = _values(4)
    hvp, hess = md.hvp(f, Y, V), md.hessian(f, Y)
    assert str(hess).startswith("V ↦ ") and "reshape" not in str(hess) + str(hvp)
    want = np.einsum("ijkl,kl->ij", hess.evaluate(_used(hess, values)), values["V"])
    np.testing.assert_allclose(hvp.evaluate(_used(hvp, values)), want, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(_read(hvp.notation(), values, monkeypatch), want, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(_read(hess._linear_map()[1], values, monkeypatch), want, rtol=1e-7, atol=1e-9)
    g, h = md.grad(f, Y), 1e-5
    up = g.evaluate(_used(g, {**values, "Y": values["Y"] + h * values["V"]}))
    down = g.evaluate(_used(g, {**values, "Y": values["Y"] - h * values["V"]}))
    np.testing.assert_allclose(want, (up - down) / (2 * h), rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- Jacobians by a vector

x = md.vector("x", n)

# (id, F, the variable, "jacobian" or "hessian", printed, .index()): a Jacobian through a
# Fréchet derivative by a vector, or of a vector by a matrix, prints as the map it applies
MAPS = [
    ("expm(Y + diag(x))a by x", lambda: md.expm(Y + md.diag(x)) @ a, x, "jacobian",
     "v ↦ L_exp(Y + diag(x), diag(v))a", "(L_exp(Y + diag(x), eⱼeⱼᵀ)a)_i"),
    ("logm(Y + diag(x))a by x", lambda: md.logm(Y + md.diag(x)) @ a, x, "jacobian",
     "v ↦ L_log(Y + diag(x), diag(v))a", "(L_log(Y + diag(x), eⱼeⱼᵀ)a)_i"),
    ("sqrtm(Y + diag(x))b by x", lambda: md.sqrtm(Y + md.diag(x)) @ b, x, "jacobian",
     "v ↦ L_sqrt(Y + diag(x), diag(v))b", "(L_sqrt(Y + diag(x), eⱼeⱼᵀ)b)_i"),
    ("sinₘ(Y + xxᵀ)a by x", lambda: md.matrix_function(Y + md.outer(x, x), "sin") @ a, x, "jacobian",
     "v ↦ L_sin(Y + xxᵀ, xvᵀ + vxᵀ)a", "(L_sin(Y + xxᵀ, xeⱼᵀ + eⱼxᵀ)a)_i"),  # L_f linear in E
    ("expm(Y + diag(x)) by x", lambda: md.expm(Y + md.diag(x)), x, "jacobian",
     "v ↦ L_exp(Y + diag(x), diag(v))", "L_exp(Y + diag(x), eₖeₖᵀ)_ij"),
    ("expm(Y)a by Y", lambda: md.expm(Y) @ a, Y, "jacobian", "V ↦ L_exp(Y, V)a", "(L_exp(Y, eⱼeₖᵀ)a)_i"),
    ("aᵀexpm(Y + diag(x))a by x, twice", lambda: a.T @ md.expm(Y + md.diag(x)) @ a, x, "hessian",
     "v ↦ diag(L²_exp(diag(x) + Yᵀ; aaᵀ, diag(v)))", "diag(L²_exp(diag(x) + Yᵀ; aaᵀ, eⱼeⱼᵀ))_i"),
]


def _map_values(seed=6):
    """_values with x small: Y + diag(x) and Y + xxᵀ keep their eigenvalues in the right
    half-plane (logm and sqrtm are defined)."""
    return {**_values(seed), "x": 0.3 * np.random.default_rng(seed + 1).standard_normal(3)}


@pytest.mark.parametrize("name, build, var, how, text, index", MAPS, ids=[m[0] for m in MAPS])
def test_jacobians_by_a_vector_print_as_the_map_they_apply(name, build, var, how, text, index, monkeypatch):
    """The printed map, read at a direction, is the Jacobian applied to it; the Jacobian is
    central differences of F (of the gradient, for a Hessian); .index() is its entries."""
    F = build()
    jac = md.jacobian(F, var) if how == "jacobian" else md.hessian(F, var)
    assert str(jac) == text
    assert jac.index() == index
    values = _map_values()
    value = jac.evaluate(_used(jac, values))
    direction = np.random.default_rng(8).standard_normal(np.shape(values[var.node.name]))
    applied = np.tensordot(value, direction, axes=direction.ndim)
    f = F if how == "jacobian" else md.grad(F, var)
    h = 1e-5
    up = f.evaluate(_used(f, {**values, var.node.name: values[var.node.name] + h * direction}))
    down = f.evaluate(_used(f, {**values, var.node.name: values[var.node.name] - h * direction}))
    np.testing.assert_allclose(applied, (up - down) / (2 * h), rtol=1e-6, atol=1e-8)
    letter, m = jac._linear_map()
    assert text.startswith(letter + " ↦ ")
    np.testing.assert_allclose(_read(m, {**values, letter: direction}, monkeypatch), applied, rtol=1e-7, atol=1e-9)
    _check_entries(jac, values, monkeypatch)
    with pytest.raises(md.ParseError, match="for reading only"):
        md.parse(text, dialect="matdiff", result_shape=jac.shape, **declarations(jac))
    assert repr(jac) == f"<{text}>"


def test_a_misread_map_is_caught(monkeypatch):
    """The check can fail: the map of expm(Y + diag(x))a read with diag(v) as vvᵀ, or at Y in
    place of Y + diag(x), is another vector."""
    jac = md.jacobian(md.expm(Y + md.diag(x)) @ a, x)
    values = _map_values()
    letter, m = jac._linear_map()
    direction = np.random.default_rng(8).standard_normal(3)
    right = _read(m, {**values, letter: direction}, monkeypatch)
    leaf, tail = m.factors  # L_exp(Y + diag(x), diag(v)), a
    assert leaf.role == "frechet" and tail == N.Sym("c", "a", dims=("n",))
    fn, point, along = leaf.params
    vvt = N.prod(1.0, [along.arg, N.transpose(along.arg)])
    for wrong in (N.Sym("m", leaf.name, "frechet", dims=leaf.dims, params=(fn, point, vvt)),
                  N.Sym("m", leaf.name, "frechet", dims=leaf.dims, params=(fn, N.Sym("m", "Y", dims=leaf.dims), along))):
        read = _read(N.prod(1.0, [wrong, tail]), {**values, letter: direction}, monkeypatch)
        assert not np.allclose(read, right, rtol=1e-3)
