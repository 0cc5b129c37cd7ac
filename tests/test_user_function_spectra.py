"""Issue 21: md.matrix_function(S, f) for a user's md.function — given as a list
numpy=[f, f′, f″, …] or with a derivative= expression — differentiates through divided
differences accurate at every gap, the way the built-in functions do: near confluence a Taylor
series from the derivatives known, so that gradients, Hessian-vector products and Hessians at
gaps of 10⁻¹⁰ and 3·10⁻¹¹ (relative), at repeated and at widely spread eigenvalues match the
Daleckii–Krein formulas in 1500-digit arithmetic, in evaluate and in generated NumPy, JAX and
PyTorch code (before, they went through the eigenvectors' gaps and were ε/gap off: 3·10⁻¹⁰ for a
cubic at a gap of 10⁻¹⁰). And DivDiff2, f[λᵢ, λᵢ, λⱼ], of softplus at large λ against the same
arithmetic (its quotient cancelled there)."""
import numpy as np
import pytest

import matdiff as md
from matdiff import functions as F
from matdiff.ir import DivDiff3
from matdiff.evaluate import _divided_differences, _divided_differences3, _second_divided_differences

from .test_spectral_codegen_ties import _module, _symmetric_direction
from .test_spectral_numerics import _matrix, _mp_dd2_separated, _mp_dd3_separated, _reference_more

mp = pytest.importorskip("mpmath")

S = md.matrix("S", "n", "n", symmetric=True)
V = md.matrix("V", "n", "n", symmetric=True)
a = md.vector("a", "n")
AV = np.array([0.3, -1.2, 0.8])

FUNCTIONS = {  # name: (md.function, the same function in mpmath)
    "cube list": (md.function("cube", numpy=[lambda t: t ** 3, lambda t: 3 * t ** 2, lambda t: 6 * t,
                                             lambda t: 6 + 0 * t]), lambda t: t ** 3),
    "cube derivative": (md.function("cubed", derivative=lambda z: 3 * z ** 2, numpy=lambda t: t ** 3),
                        lambda t: t ** 3),
    "log list": (md.function("lg", numpy=[np.log, lambda t: 1 / t, lambda t: -1 / t ** 2,
                                          lambda t: 2 / t ** 3, lambda t: -6 / t ** 4]), mp.log),
    "log derivative": (md.function("lgd", derivative=lambda z: 1 / z, numpy=np.log), mp.log),
    "exp list": (md.function("ex", numpy=[np.exp] * 6), mp.exp),
}
SPECTRA = {  # gaps of 10⁻¹⁰ and 3·10⁻¹¹ relative, exactly repeated, widely spread
    "gap 1e-10": [1.0, 1.0 + 1e-10, 2.0],
    "gap 3e-11": [0.5, 0.5 + 1.5e-11, 3.0],
    "repeated": [0.5, 2.0, 2.0],
    "spread": [1.0, 50.0, 1e4],
}
CASES = [("cube list", s) for s in SPECTRA] + [("log list", "gap 3e-11"), ("log list", "repeated"),
                                              ("cube derivative", "gap 1e-10"), ("log derivative", "gap 3e-11"),
                                              ("exp list", "gap 1e-10")]


_REFERENCES: dict = {}


def _reference(name, family, decomposition=None):
    """(∇, ∇²[V]) of aᵀf(S)a in extended precision (``_reference_more``) on these eigenvectors,
    computed once for a function (its list and its derivative= alike) and spectrum."""
    s, v = _matrix(SPECTRA[family]), _symmetric_direction(3, seed=11)
    lam, U = decomposition if decomposition is not None else np.linalg.eigh(s)
    key = (name.split()[0], family, np.asarray(U).tobytes())
    if key not in _REFERENCES:
        _REFERENCES[key] = _reference_more(FUNCTIONS[name][1], s, AV, v, (lam, U))
    return s, v, _REFERENCES[key]


def _relative(got, want):
    return np.abs(np.asarray(got, dtype=float) - want).max() / np.abs(want).max()


@pytest.mark.parametrize("name,family", CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_user_function_derivatives_in_evaluate(name, family):
    """∇, ∇²[V] and the Hessian of aᵀf(S)a to 10⁻¹² (they were 3·10⁻¹⁰ off at a gap of 10⁻¹⁰)."""
    s, v, (want_g, want_h) = _reference(name, family)
    f = a.T @ md.matrix_function(S, FUNCTIONS[name][0]) @ a
    assert _relative(md.grad(f, S).evaluate(S=s, a=AV), want_g) <= 1e-12
    assert _relative(md.hvp(f, S, V).evaluate(S=s, a=AV, V=v), want_h) <= 1e-12
    full = np.einsum("ijkl,kl->ij", md.hessian(f, S).evaluate(S=s, a=AV), v)
    assert _relative(full, want_h) <= 1e-12


BACKEND_CASES = [("numpy", f, s) for f, s in CASES if "list" in f] + \
    [("torch", "cube list", s) for s in ("gap 1e-10", "spread")] + [("torch", "log list", "gap 3e-11")] + \
    [("jax", "cube list", "gap 1e-10")] + \
    [("numpy", "cube derivative", "gap 1e-10"), ("numpy", "log derivative", "gap 3e-11"),
     ("torch", "log derivative", "repeated"), ("jax", "cube derivative", "gap 1e-10")]
# (JAX: one size, one spectrum: each new one recompiles)


@pytest.mark.parametrize("backend,name,family", BACKEND_CASES, ids=[" ".join(c) for c in BACKEND_CASES])
def test_user_function_derivatives_in_generated_code(backend, name, family):
    """The same in generated code, which calls the list's entries f, f′, f″, … (compile()
    supplies them), or writes out a derivative= expression and its derivatives (they were
    refused: NotSupportedError): the eigenvectors are the backend's own, so the reference
    takes them."""
    module = _module(backend)
    s = _matrix(SPECTRA[family])
    if backend == "jax":
        import jax.numpy as jnp
        decomposition = jnp.linalg.eigh(jnp.asarray(s))
    else:
        decomposition = module.linalg.eigh(module.tensor(s) if backend == "torch" else s)
    s, v, (want_g, want_h) = _reference(name, family, tuple(np.asarray(x, dtype=float) for x in decomposition))
    f = a.T @ md.matrix_function(S, FUNCTIONS[name][0]) @ a
    got_g = md.compile(md.grad(f, S), backend=backend)(S=s, a=AV)
    got_h = md.compile(md.hvp(f, S, V), backend=backend)(S=s, a=AV, V=v)
    assert _relative(got_g, want_g) <= 1e-12
    assert _relative(got_h, want_h) <= 1e-12
    if backend == "numpy":
        full = np.einsum("ijkl,kl->ij", md.compile(md.hessian(f, S))(S=s, a=AV), v)
        assert _relative(full, want_h) <= 1e-12


ENTRY_SPECTRA = {  # every pair and triple: close in absolute terms, clustered, near 100 (1500 digits: few)
    "cube list": {"tiny": [1e-9, 2e-9, 3e-9], "cluster": [1.0, 1.005, 0.999]},
    "log list": {"cluster": [1.0, 1.005, 0.999]},
    "exp list": {"cluster": [1.0, 1.005, 0.999], "hundred": [100.0, 100.001, 101.0]},
}


@pytest.mark.parametrize("name", list(ENTRY_SPECTRA))
def test_user_divided_differences_entry_by_entry(name):
    """F = f[λᵢ, λⱼ] and T = f[λᵢ, λⱼ, λₖ] at every pair and triple, each entry to the accuracy
    docs/matrix-functions.md states for N derivatives known, ε^((N−1)/N) (times 10; at least
    10⁻¹¹, the quotients' near the series' reach): 4·10⁻¹⁰ with f‴ (the series' reach is f's own scale, estimated from
    its derivatives: |λ| for log, about 5 for exp, so exp's at 100 keeps its series short)."""
    fn, f_mp = FUNCTIONS[name]
    known = DivDiff3.user_orders(fn.fn)
    tol = max(1e-11, 10 * np.finfo(float).eps ** ((known - 1) / known))
    for family, spectrum in ENTRY_SPECTRA[name].items():
        lam = np.array(spectrum)
        got_F, got_T = _divided_differences(fn.fn, lam, {}), _divided_differences3(fn.fn, lam, {})
        r = range(len(lam))
        for i in r:
            for j in r:
                want = float(_mp_dd2_separated(f_mp, lam[i], lam[j]))
                assert abs(got_F[i, j] - want) <= tol * abs(want), (family, i, j)
                for k in r:
                    want = float(_mp_dd3_separated(f_mp, lam[i], lam[j], lam[k]))
                    assert abs(got_T[i, j, k] - want) <= tol * abs(want) + 1e-300, (family, i, j, k)


def test_a_short_list_is_as_accurate_as_the_docs_say():
    """With f″ alone past f′ (numpy=[f, f′, f″]) T's series is f″/2, taken within ε^½ ≈ 1.5·10⁻⁸
    of f's scale: its error and the quotient's are about 10⁻⁸ (docs/matrix-functions.md)."""
    fn = md.function("cube2", numpy=[lambda t: t ** 3, lambda t: 3 * t ** 2, lambda t: 6 * t]).fn
    for spectrum in ([1.0, 1.0 + 1e-10, 2.0], [1.0, 1.0 + 1e-8, 2.0], [1.0, 1.0 + 1e-6, 2.0]):
        lam = np.array(spectrum)
        got = _divided_differences3(fn, lam, {})
        for i in range(3):
            for j in range(3):
                want = float(_mp_dd3_separated(lambda t: t ** 3, lam[i], lam[j], lam[j]))
                assert abs(got[i, j, j] - want) <= 1e-7 * abs(want), (spectrum, i, j)


def test_a_derivative_expression_with_no_code_is_refused_by_name():
    """Generated code writes out a derivative= expression entry by entry; one that holds a
    function with no values (an abstract md.function) is refused, naming it."""
    g = md.function("g_abstract")
    h = md.function("h_user", derivative=lambda z: g(z) * z, numpy=np.sin)
    f = a.T @ md.matrix_function(S, h) @ a
    with pytest.raises(md.NotSupportedError, match="g_abstract in its derivative= has no code"):
        md.compile(md.grad(f, S))


@pytest.mark.parametrize("name,spectrum", [("softplus", [30.0, 30.001, 40.0]), ("softplus", [74.0, 74.5, 147.0]),
                                           ("softplus", [-3.0, 1.0, 2.0]), ("sigmoid", [20.0, 20.0001, 25.0]),
                                           ("exp", [1e-9, 2e-9, 3e-9])])
def test_confluent_second_divided_differences(name, spectrum):
    """DivDiff2, Aᵢⱼ = f[λᵢ, λᵢ, λⱼ], to 10⁻¹³ of each entry: softplus's quotient
    (f′(λᵢ) − Fᵢⱼ)/(λᵢ − λⱼ) cancelled where F ≈ f′ ≈ 1 (4 times its size at {30, 30.001})."""
    lam = np.array(spectrum)
    f_mp = {"softplus": lambda t: mp.log(1 + mp.exp(t)), "sigmoid": lambda t: 1 / (1 + mp.exp(-t)),
            "exp": mp.exp}[name]
    got = _second_divided_differences(F.fn(name), lam, np.zeros_like(lam), {})
    for i in range(len(lam)):
        for j in range(len(lam)):
            want = float(_mp_dd3_separated(f_mp, lam[i], lam[i], lam[j]))
            assert abs(got[i, j] - want) <= 1e-13 * abs(want), (i, j, got[i, j], want)
