"""The code generator against the evaluator: random expressions and their derivatives,
compiled for NumPy, JAX and PyTorch, in float64 and float32.

Three ways of computing one result check one another here: the interpreter
(``Expr.evaluate``), the generated code of each backend, and the printed text read back
(by the matdiff dialect) and evaluated.  Gradients, Jacobians and Hessian-vector products
are also compared with central differences of the compiled function itself, so a
derivative that all three compute alike but wrongly is caught too.  Every generated
function must return the dtype it was given: float32 in, float32 out.

The draws are in tests/codegen_draws.py; each slice of ``CHUNK`` examples has a fixed
seed, so these ``EXAMPLES`` expressions are the same on every run.  benchmarks/codegen_differential.py
runs the same check on a larger, random sample.
"""
from __future__ import annotations

import inspect
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import seed as fixed_seed
from hypothesis import strategies as st

import matdiff as md
from matdiff.functions import TABLE
from matdiff.ir import Elementwise, walk

from .codegen_draws import NONSMOOTH, draws, inputs
from .test_properties import CONSTANT_ARGUMENT

BACKENDS = ("numpy", "jax", "torch")
SIZES = {"n": 3, "k": 2}  # one size: JAX compiles each operation once per shape
EXAMPLES = {"value": 300, "grad": 400, "jacobian": 300, "hessian": 100, "hvp": 300}  # 1,400


def _setup_backends():
    jax = pytest.importorskip("jax")
    pytest.importorskip("torch")
    jax.config.update("jax_enable_x64", True)


def _as_numpy(a):
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _call(fn, values: dict, backend: str, dtype, numbers=()):
    """fn at the values cast to the dtype (the backend's arrays), those named in ``numbers``
    given as Python floats."""
    args = {}
    for p in inspect.signature(fn).parameters:
        if p in numbers:
            args[p] = float(values[p])
            continue
        a = np.asarray(values[p], dtype=dtype)
        if backend == "torch":
            import torch
            a = torch.from_numpy(a)
        args[p] = a
    return fn(**args)


def _dtype_name(a) -> str:
    return str(a.dtype).replace("torch.", "")


def _assert_close(got, want, dtype):
    got = _as_numpy(got).astype(np.float64)
    scale = max(1.0, float(np.max(np.abs(want)))) if np.size(want) else 1.0
    if dtype == np.float64:
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9 * scale)
    else:  # float32: about 7 digits, a few lost to the rounding of each intermediate
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4 * scale)


def _reference(expr, values: dict):
    used = {v.node.name for v in expr.variables}
    with np.errstate(all="ignore"):
        return np.asarray(expr.evaluate({k: v for k, v in values.items() if k in used}, sizes=SIZES),
                          dtype=np.float64)


def check_draw(dr, seed: int) -> None:
    """Every backend and dtype against the evaluator; the derivative against differences of
    the compiled value; the printed text read back against the compiled result."""
    assume(dr.f.variables)  # a constant: codegen refuses to size it, and says so
    sizes = SIZES
    variables = {v.node.name: v for e in (dr.f, dr.d) for v in e.variables}
    if dr.what == "hvp":  # the direction, also where the product does not depend on it
        variables["u"] = md.tensor("u", *dr.wrt.shape)
    values = inputs(variables.values(), sizes, seed)
    same = dr.d is dr.f  # a "value" draw compiles f beside itself: one reference serves both
    try:
        want_f = _reference(dr.f, values)
        want_d = want_f if same else _reference(dr.d, values)
    except md.EvaluationError:  # a repeated eigenvalue, say: refused, and not the point here
        assume(False)
    assume(np.all(np.isfinite(want_f)) and np.all(np.isfinite(want_d)))
    assume(np.max(np.abs(want_d), initial=0.0) < 1e6 and np.max(np.abs(want_f), initial=0.0) < 1e6)
    references = {np.float64: (want_f, want_d)}
    # float32 is compared with float64 arithmetic at the same (rounded) point
    point = {k: np.asarray(v, dtype=np.float32).astype(np.float64) for k, v in values.items()}
    ref_f = _reference(dr.f, point)
    references[np.float32] = (ref_f, ref_f if same else _reference(dr.d, point))
    compiled = {}
    # JAX on every third draw (by the seed): its per-operation compiles are most of this
    # test's time; some 470 draws still reach its code, and NumPy's and PyTorch's run on all
    for backend in BACKENDS if seed % 3 == 0 else ("numpy", "torch"):
        try:
            fn = compiled[backend] = md.compile([dr.f, dr.d], backend=backend)
        except md.MatdiffError as e:  # 0 ⊙ a: an output no argument gives a size to
            assert "no argument fixes the size" in str(e), e
            assume(False)
        for dtype, (ref_f, ref_d) in references.items():
            got_f, got_d = _call(fn, point if dtype == np.float32 else values, backend, dtype)
            for got, want, which in ((got_f, ref_f, "f"), (got_d, ref_d, dr.what)):
                try:
                    assert _dtype_name(got) == np.dtype(dtype).name, f"returns {got.dtype}"
                    assert np.shape(got) == np.shape(want), f"returns shape {np.shape(got)}"
                    _assert_close(got, want, dtype)
                except AssertionError as e:  # the expression is printed only when it fails
                    raise AssertionError(f"{backend} {np.dtype(dtype).name} {which}: {dr.what} of "
                                         f"{dr.f!r} by {dr.wrt!r}: {dr.d}\n{e}") from None
    smooth = not any(isinstance(n, Elementwise) and n.fn.name in NONSMOOTH for n in walk(dr.f.node))
    if dr.what in ("grad", "jacobian", "hvp") and smooth:
        _differences_agree(dr, compiled["numpy"], values, want_d, seed)
    _printed_text_agrees(dr, want_d, values, sizes)


def _differences_agree(dr, fn, values: dict, d, seed: int) -> None:
    """A directional derivative against a central difference of compiled code: ⟨∇f, v⟩ or
    J·v of the compiled value along a random v, H·u of the compiled gradient along u; ``d`` is
    the derivative's value at ``values`` (the evaluator's, which the compiled code matched)."""
    name = dr.wrt.node.name
    if dr.what == "hvp":  # the gradient's difference along u is the Hessian times u
        v, fn = values["u"], md.compile(md.grad(dr.f, dr.wrt))
    else:
        v = np.random.default_rng(seed + 1).standard_normal(np.shape(values[name]))
    if name == "S":
        v = (v + v.T) / 2
    params = list(inspect.signature(fn).parameters)

    def at(t):
        moved = dict(values, **{name: values[name] + t * v})
        out = fn(**{p: moved[p] for p in params})
        return np.asarray(out[0] if isinstance(out, tuple) else out, dtype=np.float64)

    h = 1e-4  # Richardson-extrapolated central difference, error O(h⁴)
    want = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h)
    got = d if dr.what == "hvp" else np.tensordot(d, v, axes=np.ndim(v))
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    if not np.allclose(got, want, rtol=1e-5, atol=1e-6 * scale):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * scale,
                                   err_msg=f"{dr.what} of {dr.f!r} by {name} against differences")


def _display_only(d) -> bool:
    """Index notation, and the parts of a decomposition that have no constructor (Q(S), Δ,
    L_exp), are printed for reading only: repr says so, and the text is not read back."""
    import dataclasses

    from matdiff.notation import Index
    stack = [d.notation()]
    while stack:
        m = stack.pop()
        if isinstance(m, Index):
            return True
        if dataclasses.is_dataclass(m):
            for f in dataclasses.fields(m):
                v = getattr(m, f.name)
                for x in v if isinstance(v, tuple) else (v,):
                    stack.extend(y for y in (x if isinstance(x, tuple) else (x,)) if dataclasses.is_dataclass(y))
    try:
        return "<" in repr(d)
    except md.NotSupportedError:
        return True


def _printed_text_agrees(dr, want, values: dict, sizes: dict) -> None:
    """The result as printed, read back by the matdiff dialect, has the compiled value."""
    from matdiff.parse import declarations
    if _display_only(dr.d):
        return
    text = str(dr.d)
    try:
        back = md.parse(text, dialect="matdiff", result_shape=dr.d.shape, **declarations(dr.d))
    except md.MatdiffError as e:  # a printed 1 or 0 whose size only the reader's context
        # fixes (logsumexp(0), det(5I)), or a text past the parser's length limit: refused,
        # never misread
        assert "is not fixed by its use" in str(e) or "characters long; the limit is" in str(e) or \
            re.search(CONSTANT_ARGUMENT, text), (text, e)  # or longer than the parser reads
        return
    got = _reference(back, values)
    np.testing.assert_allclose(got.reshape(np.shape(want)), want, rtol=1e-7,
                               atol=1e-9 * max(1.0, float(np.max(np.abs(want), initial=0.0))),
                               err_msg=f"{text!r} read back")


# the examples in slices of CHUNK, each with a seed of its own, so that parallel workers share
# them evenly; each slice is the same on every run
CHUNK = 100
SLICES = [(what, k) for what, count in EXAMPLES.items() for k in range(count // CHUNK)]


@pytest.mark.parametrize("what,chunk", SLICES, ids=[f"{w}-{k}" for w, k in SLICES])
def test_generated_code_equals_the_evaluator(what, chunk):
    _setup_backends()

    @fixed_seed(1000 * chunk + list(EXAMPLES).index(what))
    @settings(max_examples=CHUNK, derandomize=False, database=None,
              suppress_health_check=list(HealthCheck))
    @given(dr=draws((what,)), seed=st.integers(0, 2 ** 16))
    def run(dr, seed):
        check_draw(dr, seed)

    run()


FUNCTIONS = sorted(set(TABLE) - {"pow"}) + ["pow"]
POSITIVE_DOMAIN = {"log", "sqrt", "pow"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", FUNCTIONS)
def test_every_function_returns_the_dtype_it_is_given(name, backend):
    """f(X), its gradient and its Hessian-vector product, for every function of the table
    (step and sign included), in float32 and float64: the dtype out is the dtype in, and
    the values are the evaluator's, also with a scalar argument given as a Python number."""
    _setup_backends()
    X, a = md.matrix("X", "n", "k"), md.scalar("a")
    f = (lambda e: e ** 1.5) if name == "pow" else getattr(md, name)
    loss = md.sum(f(X) * a) + f(a)
    outputs = [loss, md.grad(loss, X), md.hvp(loss, X, md.matrix("u", "n", "k"))]
    fn = md.compile(outputs, backend=backend)
    rng = np.random.default_rng(7)
    values = {"X": rng.uniform(0.5, 1.5, (3, 2)), "u": rng.normal(size=(3, 2)), "a": 0.75}
    if name not in POSITIVE_DOMAIN:
        values["X"] -= 1.0  # both signs, away from 0
        values["X"][values["X"] == 0] = 0.25
    for dtype in (np.float32, np.float64):
        point = {k: np.asarray(v, dtype=dtype).astype(np.float64) for k, v in values.items()}
        for numbers in ((), ("a",)):  # a given as an array of the dtype, then as a Python float
            got = _call(fn, point, backend, dtype, numbers)
            for g, e in zip(got, outputs):
                assert _dtype_name(g) == np.dtype(dtype).name, (name, backend, numbers, str(e))
                _assert_close(g, _reference(e, point), dtype)
