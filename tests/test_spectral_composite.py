"""Issue 21: Σ g(λᵢ(S)) for a g built from functions of the table whose g′ is no function of
the table itself (Σλᵢe^λᵢ, Σσ(λᵢ)λᵢ, Σ log(1 + λᵢ²), …): its gradient U diag(g′(λ))Uᵀ is
the matrix function h(S), h = g′ traced, so its Hessian is Daleckii–Krein's U(Δh(λ) ⊙ UᵀVU)Uᵀ
with exact divided differences — right to 1e-12 at eigenvalues 1e-10 and 1e-8 apart, in
evaluate and in generated NumPy, JAX and PyTorch code, against 400-digit arithmetic (the
eigenvectors' rule, with Γ(λ), lost ε/gap there). The printed forms define h in the
where-clause, and md.matrix_function's traced callables read back from theirs."""
import numpy as np
import pytest

import matdiff as md
from matdiff.ir import DivDiff, EigGap, walk

from .test_read_back import _reads_back_or_refuses
from .test_spectral_codegen_ties import _matrix, _module, _symmetric_direction, _used  # _module: NumPy, JAX in float64, PyTorch
from .test_spectral_sweep import _eigen_reference

mp = pytest.importorskip("mpmath")

S = md.matrix("S", "n", "n", symmetric=True)
V = md.matrix("V", "n", "n", symmetric=True)
LAM = md.eigvalsh(S)

# name: (Σ g(λᵢ) built, g in mpmath, whether g needs positive eigenvalues)
CASES = {
    "Σλe^λ": (lambda: md.sum(LAM * md.exp(LAM)), lambda u: u * mp.exp(u), False),
    "Σσ(λ)λ": (lambda: md.sum(md.sigmoid(LAM) * LAM), lambda u: u / (1 + mp.exp(-u)), False),
    "Σlog(1+λ²)": (lambda: md.sum(md.log(1 + LAM ** 2)), lambda u: mp.log(1 + u ** 2), False),
    "Σtanh(λ)λ²": (lambda: md.sum(md.tanh(LAM) * LAM ** 2), lambda u: mp.tanh(u) * u ** 2, False),
    "Σe^λ/(1+λ²)": (lambda: md.sum(md.exp(LAM) / (1 + LAM ** 2)), lambda u: mp.exp(u) / (1 + u ** 2), False),
    "Σλlogλ": (lambda: md.sum(LAM * md.log(LAM)), lambda u: u * mp.log(u), True),
}
SPECTRA = {  # eigenvalues 1e-10 and 1e-8 apart (positive, and about zero), and apart
    "gap1e-10": [1.0, 1.0 + 1e-10, 2.0],
    "gap1e-8": [0.5, 0.5 + 1e-8, -1.0],
    "gap1e-8+": [0.5, 0.5 + 1e-8, 3.0],
    "random": [0.3, 1.1, 2.5],
}


def _direction(seed=1):
    return 2 * _symmetric_direction(3, seed)


def _reference(g, s, v):
    """(∇f, ∇²f[V]) of f = Σ g(λᵢ(S)) on NumPy's eigenvectors of s: U diag(g′(λ))Uᵀ and
    U(G ⊙ UᵀVU)Uᵀ, Gᵢⱼ = g′[λᵢ, λⱼ] (g″ where they agree), in extended precision (the sweep's
    reference, g′ by mpmath's differentiation)."""
    lam, u = np.linalg.eigh(s)
    return _eigen_reference(np.ones(len(lam)), lambda t: mp.diff(g, t), lam, u, v)


def _cases(spectra):
    return [(c, sp) for c in CASES for sp in spectra if not (CASES[c][2] and min(SPECTRA[sp]) <= 0)]


def _close(got, want, tol=1e-12):
    return np.abs(np.asarray(got, float) - want).max() <= tol * np.abs(want).max()


@pytest.mark.parametrize("case,spectrum", _cases(SPECTRA))
def test_composite_spectral_derivatives_in_evaluate(case, spectrum):
    build, g, _ = CASES[case]
    f = build()
    s, v = _matrix(SPECTRA[spectrum]), _direction()
    grad_want, hvp_want = _reference(g, s, v)
    hvp = md.hvp(f, S, V)
    assert any(isinstance(x, DivDiff) for x in walk(hvp.node))  # Δh(λ), not the eigenvectors' Γ(λ)
    assert not any(isinstance(x, EigGap) for x in walk(hvp.node))
    assert _close(md.grad(f, S).evaluate(S=s), grad_want)
    assert _close(hvp.evaluate(S=s, V=v), hvp_want), case
    hessian = md.hessian(f, S).evaluate(S=s)
    assert _close(np.einsum("ijkl,kl->ij", hessian, v), hvp_want), case


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("case", list(CASES))
def test_composite_spectral_derivatives_in_generated_code(case, backend):
    _module(backend)
    build, g, positive = CASES[case]
    f = build()
    hvp, grad = md.compile(md.hvp(f, S, V), backend=backend), md.compile(md.grad(f, S), backend=backend)
    v = _direction()
    for spectrum in ("gap1e-10", "gap1e-8+" if positive else "gap1e-8", "random"):
        s = _matrix(SPECTRA[spectrum])
        grad_want, hvp_want = _reference(g, s, v)
        assert _close(grad(S=s), grad_want), (spectrum, "gradient")
        assert _close(hvp(S=s, V=v), hvp_want), spectrum


@pytest.mark.parametrize("case", ["Σλe^λ", "Σlog(1+λ²)"])
def test_composite_spectral_hessians_in_jax(case):
    _module("jax")
    build, g, _ = CASES[case]
    hvp = md.compile(md.hvp(build(), S, V), backend="jax")
    v = _direction()
    for spectrum in ("gap1e-10", "gap1e-8"):
        s = _matrix(SPECTRA[spectrum])
        assert _close(hvp(S=s, V=v), _reference(g, s, v)[1]), spectrum


# --------------------------------------------------------------------------- scalar weights

T, W = md.scalar("t"), md.scalar("w")  # weights that S does not change, valued 0.7 and −1.3
WEIGHTS = {"t": 0.7, "w": -1.3}
# name: (α Σ g(λᵢ) or a sum of such terms, built; the whole Σ g in mpmath, weights included)
WEIGHTED = {
    "2Σλe^λ": (lambda: 2 * md.sum(LAM * md.exp(LAM)), lambda u: 2 * u * mp.exp(u)),
    "tΣlog(1+λ²)": (lambda: T * md.sum(md.log(1 + LAM ** 2)), lambda u: 0.7 * mp.log(1 + u ** 2)),
    "Σλe^λ·w": (lambda: md.sum(LAM * md.exp(LAM)) * W, lambda u: -1.3 * u * mp.exp(u)),
    "Σ(tλ³)w": (lambda: md.sum(T * LAM ** 3 * W), lambda u: 0.7 * -1.3 * u ** 3),
    "Σe^λ+Σλ³": (lambda: md.sum(md.exp(LAM)) + md.sum(LAM ** 3), lambda u: mp.exp(u) + u ** 3),
    "tΣe^λ+wΣλtanhλ": (lambda: T * md.sum(md.exp(LAM)) + W * md.sum(LAM * md.tanh(LAM)),
                       lambda u: 0.7 * mp.exp(u) - 1.3 * u * mp.tanh(u)),
}


def _weights(e):
    return {k: v for k, v in WEIGHTS.items() if k in {x.node.name for x in e.variables}}


@pytest.mark.parametrize("case", list(WEIGHTED))
def test_weighted_composite_spectral_derivatives_in_evaluate(case):
    """α·Σg(λᵢ), α a constant or a scalar variable, and sums of such terms: each weight's
    g(S) by divided differences (Δh(λ), no Γ(λ)), exact at gaps 1e-10 and 1e-8; the weights'
    own derivatives (∂/∂t of ∇_S f) right too."""
    build, g = WEIGHTED[case]
    f = build()
    v = _direction()
    hvp, grad, hessian = md.hvp(f, S, V), md.grad(f, S), md.hessian(f, S)
    assert any(isinstance(x, DivDiff) for x in walk(hvp.node)), str(hvp)
    assert not any(isinstance(x, EigGap) for x in walk(hvp.node)), str(hvp)
    pairing = md.sum(grad * V)  # ⟨∇_S f, V⟩, and its derivatives in the weights (mixed Hessians)
    by_weight = {x: md.grad(pairing, x) for x in (T, W) if x.node.name in _weights(f)}
    for spectrum in ("gap1e-10", "gap1e-8", "random"):
        s = _matrix(SPECTRA[spectrum])
        grad_want, hvp_want = _reference(g, s, v)
        values = {"S": s, **_weights(f)}
        assert _close(grad.evaluate(values), grad_want), (spectrum, "gradient")
        assert _close(hvp.evaluate(dict(values, V=v)), hvp_want), spectrum
        assert _close(np.einsum("ijkl,kl->ij", hessian.evaluate(values), v), hvp_want), spectrum
        for x, d in by_weight.items():  # ⟨∇_S f, V⟩ is linear in each weight: central differences exact
            name, h = x.node.name, 1e-3
            ends = [pairing.evaluate(dict(values, V=v, **{name: values[name] + k * h})) for k in (1, -1)]
            assert abs(d.evaluate(dict(values, V=v)) - (ends[0] - ends[1]) / (2 * h)) <= 1e-8 * abs(ends[0]), name
    for e in (grad, hvp):
        _reads_back_or_refuses(e)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("case", list(WEIGHTED))
def test_weighted_composite_spectral_derivatives_in_generated_code(case, backend):
    _module(backend)
    build, g = WEIGHTED[case]
    f = build()
    hvp, grad = md.compile(md.hvp(f, S, V), backend=backend), md.compile(md.grad(f, S), backend=backend)
    v = _direction()
    for spectrum in ("gap1e-10", "gap1e-8", "random"):
        s = _matrix(SPECTRA[spectrum])
        grad_want, hvp_want = _reference(g, s, v)
        assert _close(grad(S=s, **_weights(f)), grad_want), (spectrum, "gradient")
        assert _close(hvp(S=s, V=v, **_weights(f)), hvp_want), spectrum


def test_a_weighted_composite_hessian_in_jax():
    _module("jax")
    build, g = WEIGHTED["tΣe^λ+wΣλtanhλ"]
    f = build()
    hvp = md.compile(md.hvp(f, S, V), backend="jax")
    v = _direction()
    for spectrum in ("gap1e-10", "random"):
        s = _matrix(SPECTRA[spectrum])
        assert _close(hvp(S=s, V=v, **_weights(f)), _reference(g, s, v)[1]), spectrum


# --------------------------------------------------------------------------- printing

def test_the_hessian_prints_with_h_defined():
    f = md.sum(LAM * md.exp(LAM))
    text = str(md.hessian(f, S))
    assert text == "V ↦ U(UᵀVU ⊙ Δh(λ))Uᵀ  where S = UΛUᵀ, h(u) = u exp(u) + exp(u)", text
    assert str(md.hvp(f, S, V)).endswith("where S = UΛUᵀ, h(u) = u exp(u) + exp(u)")
    tex = md.hessian(f, S).latex()
    assert r"\Delta_{h}\left(\lambda\right)" in tex and r"h\left(u\right) = u \exp\left(u\right)" in tex, tex
    index = md.hessian(f, S).index()
    assert "Δh(λ)_pq" in index and index.endswith("h(u) = u exp(u) + exp(u)"), index
    with pytest.raises(md.ParseError, match="for reading only"):  # S = UΛUᵀ: display only
        md.parse(str(md.hvp(f, S, V)), dialect="matdiff", S="matrix(n, n) symmetric",
                 V="matrix(n, n) symmetric")
    h = md.matrix("h", "n", "n", symmetric=True)  # a variable named h: the function takes another name
    assert str(md.hvp(f, S, h)) == "U(UᵀhU ⊙ Δf(λ))Uᵀ  where S = UΛUᵀ, f(u) = u exp(u) + exp(u)"


@pytest.mark.parametrize("case, text", [
    ("2Σλe^λ", "V ↦ 2U(UᵀVU ⊙ Δh(λ))Uᵀ  where S = UΛUᵀ, h(u) = u exp(u) + exp(u)"),
    ("tΣlog(1+λ²)", "V ↦ 2tU(UᵀVU ⊙ Δh(λ))Uᵀ  where S = UΛUᵀ, h(u) = u(u² + 1)⁻¹"),
    ("Σλe^λ·w", "V ↦ wU(UᵀVU ⊙ Δh(λ))Uᵀ  where S = UΛUᵀ, h(u) = u exp(u) + exp(u)"),
    ("Σe^λ+Σλ³", "V ↦ U(UᵀVU ⊙ Δh(λ))Uᵀ  where S = UΛUᵀ, h(u) = 3u² + exp(u)"),
    ("tΣe^λ+wΣλtanhλ", "V ↦ U(t(UᵀVU ⊙ Δexp(λ)) + w(UᵀVU ⊙ Δh(λ)))Uᵀ  where S = UΛUᵀ, "
                       "h(u) = (1 − tanh(u)²)u + tanh(u)"),
])
def test_weighted_hessians_print_the_weight_outside_h(case, text):
    """A weight — a constant, a scalar variable, common to the terms of g′ — multiplies
    U(UᵀVU ⊙ Δh(λ))Uᵀ; h(u) is the rest (the lead's 2 of 2(u exp(u) + exp(u)) too)."""
    assert str(md.hessian(WEIGHTED[case][0](), S)) == text


def cube(u):
    return u ** 3


CALLABLES = [lambda u: u ** 3, lambda u: u * md.exp(u), cube, lambda u: md.sigmoid(u) * u + 2,
             lambda u: md.log1p(u ** 2) - md.tanh(u)]


@pytest.mark.parametrize("k", range(len(CALLABLES)))
def test_traced_matrix_functions_print_their_definition_and_read_back(k):
    a = md.vector("a", "n")
    m = md.matrix_function(S, CALLABLES[k])
    text = str(m)
    name = "cube" if CALLABLES[k] is cube else "f"
    assert text.startswith(f"{name}ₘ(S)  where {name}(u) = "), text
    for e in (m, a.T @ m @ a, md.trace(m) * m):
        assert "matdiff" in _reads_back_or_refuses(e), str(e)
        back = eval(e.python(), {"md": md, "S": S, "a": a})  # lambda u: …
        values = {"S": _matrix([0.3, 1.1, 2.5]), "a": np.array([1.0, -2.0, 0.5])}
        np.testing.assert_allclose(back.evaluate(_used(back, values)), e.evaluate(_used(e, values)), rtol=1e-12)
    assert md.check(a.T @ m @ a, S, order=2) < 1e-6


def test_names_of_traced_functions_never_collide():
    f, u = md.scalar("f"), md.scalar("u")
    two = md.matrix_function(S, lambda t: t ** 3) + md.matrix_function(S, lambda t: md.exp(t) * t)
    assert str(two) == "fₘ(S) + gₘ(S)  where f(u) = u³, g(u) = u exp(u)", str(two)
    scaled = f * md.matrix_function(S, lambda t: t ** 3)  # the scalar f: the function is g
    assert str(scaled) == "fgₘ(S)  where g(u) = u³", str(scaled)
    by_u = u * md.matrix_function(S, lambda t: t ** 3)  # the scalar u: the bound variable is t
    assert str(by_u).endswith("where f(t) = t³"), str(by_u)
    for e in (two, scaled, by_u):
        assert "matdiff" in _reads_back_or_refuses(e), str(e)


def test_identical_definitions_share_one_name():
    X = md.matrix("X", "n", "n", symmetric=True)
    two = md.matrix_function(S, lambda t: t ** 3) + md.matrix_function(X, lambda t: t ** 3)
    assert str(two) in ("fₘ(S) + fₘ(X)  where f(u) = u³", "fₘ(X) + fₘ(S)  where f(u) = u³"), str(two)
    assert two.index().endswith("where f(u) = u³") and "g" not in two.index(), two.index()
    named = md.matrix_function(X, lambda t: t ** 3) @ md.matrix_function(S, cube)  # a def's name first
    assert str(named) == "cubeₘ(X)cubeₘ(S)  where cube(u) = u³", str(named)
    other = two + md.matrix_function(S, lambda t: t ** 2)
    assert str(other).endswith("where f(u) = u³, g(u) = u²") or str(other).endswith("where f(u) = u², g(u) = u³")
    a = md.vector("a", "n")
    for e in (two, named, other, a.T @ two @ a):
        assert "matdiff" in _reads_back_or_refuses(e), str(e)
    assert md.check(a.T @ two @ a, X, order=2) < 1e-6


@pytest.mark.parametrize("text, words", [
    ("fₘ(S)", "does not define"),  # once read as the variable fₘ times S
    ("cubeₘ(S)", "does not define"),
    ("fₘ(S)  where f(u) = u + x", "of u alone"),
    ("fₘ(S)  where f(u) = u +", "definition of f"),
])
def test_undefined_or_wrong_definitions_are_refused(text, words):
    with pytest.raises(md.ParseError, match=words):
        md.parse(text, dialect="matdiff", S="matrix(n, n) symmetric", x="scalar")
