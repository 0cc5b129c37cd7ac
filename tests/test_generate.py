"""Generated NumPy code: agrees with the evaluator on every case of the derivative table,
shares subexpressions, never builds deltas, and stands alone."""
import inspect
import re
import warnings

import numpy as np
import pytest

import matdiff as md
from matdiff.check import _sample
from matdiff.dims import factors as dims_of
from matdiff.evaluate import variables
from matdiff.functions import Function
from matdiff.ir import Elementwise, ScalarFn, walk

from .cases import CASES, Case


def _abstract(e) -> bool:
    return any(isinstance(n, ScalarFn) or (isinstance(n, Elementwise) and isinstance(n.fn, Function)
                                           and not n.fn.builtin and n.fn.numpy is None)
               for n in walk(md.expr.lift(e).node))


CONCRETE = [c for c in CASES if not _abstract(c.f)]


def _check_backend(case, backend, hessian=False, hint=None):
    f = md.expr.lift(case.f)
    d = md.hessian(f, case.wrt) if hessian else md.jacobian(f, case.wrt)
    fn = md.compile([f, d], backend=backend, sizes=hint)
    rng = np.random.default_rng(4)
    size = {"n": 4, "k": 3, "m": 2, **case.sizes}
    vs = {v.name: v for v in variables(f.node, *d.scope)}
    values = {k: _sample(v, case.kinds.get(k, "normal"), size, rng) for k, v in vs.items()}
    if case.prepare:
        values = case.prepare(values)
    params = list(inspect.signature(fn).parameters)
    got_f, got_d = fn(**{p: values[p] for p in params})
    fvals = {k: v for k, v in values.items() if k in {u.name for u in variables(f.node)}}
    got_f, got_d = (np.asarray(g.cpu() if hasattr(g, "cpu") else g) for g in (got_f, got_d))
    np.testing.assert_allclose(got_f, f.evaluate(fvals), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got_d, d.evaluate(values), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CONCRETE, ids=[c.name for c in CONCRETE])
def test_compiled_code_agrees_with_the_evaluator(case):
    _check_backend(case, "numpy")


SECOND = [c for c in CONCRETE if c.order == 2]


def _skewed_sizes(case) -> dict:
    """Each dim of the case a size between 2 and 5000 (seeded by its name), so that the
    generator's size-driven choices (contraction order, distributing a sum) take other turns."""
    f = md.expr.lift(case.f)
    dims = sorted({x for v in variables(f.node) for d in v.shape for x in dims_of(d)
                   if isinstance(x, str)})
    rng = np.random.default_rng(sum(map(ord, case.name)))
    return {x: int(rng.choice([2, 30, 5000])) for x in dims}


@pytest.mark.parametrize("case", CONCRETE, ids=[c.name for c in CONCRETE])
def test_code_tuned_for_other_sizes_still_agrees(case):
    _check_backend(case, "numpy", hessian=case.order == 2, hint=_skewed_sizes(case))


@pytest.mark.parametrize("case", SECOND, ids=[c.name for c in SECOND])
def test_compiled_hessians_agree_with_the_evaluator(case):
    _check_backend(case, "numpy", hessian=True)


@pytest.mark.parametrize("case", CONCRETE, ids=[c.name for c in CONCRETE])
def test_every_line_is_needed_and_numbered_in_order(case):
    f = md.expr.lift(case.f)
    src = md.codegen([md.jacobian(f, case.wrt)] + ([md.hessian(f, case.wrt)] if case.order == 2 else []))
    assigned = re.findall(r"^    (t\d+) = ", src, flags=re.M)
    assert assigned == [f"t{i}" for i in range(1, len(assigned) + 1)]
    code = "\n".join(line.partition("  # ")[0] for line in src.splitlines())
    for name in assigned:  # each temporary is read after it is written (or returned)
        assert len(re.findall(rf"\b{name}\b", code)) >= 2, name


def test_a_gram_product_is_formed_once_and_agrees():
    """Σ_p X_pi P_pj M_jl X_pk P_pl: Z = X ⊙ P formed once, then ZᵀZ (a symmetric update),
    as the matrix product of Z reshaped (``_lead_dot``, np.tensordot less its Python)."""
    X, W1, W2, Y = (md.matrix("X", "n", "d"), md.matrix("W1", "d", "h"), md.matrix("W2", "h", "c"),
                    md.matrix("Y", "n", "c"))
    loss = md.norm(md.sigmoid(X @ W1) @ W2 - Y) ** 2
    H = md.hessian(loss, W1)
    src = md.codegen(H, sizes={"n": 2000, "d": 40, "h": 20, "c": 5})
    assert re.search(r"_lead_dot\((t\d+), \1\)", src), src
    _check_backend(Case("net", loss, W1, sizes={"d": 3, "h": 2, "c": 2}), "numpy", hessian=True)


def test_a_variable_named_like_a_temporary_is_not_overwritten():
    t1, A = md.vector("t1", "n"), md.matrix("A", "n", "n")
    fn = md.compile(md.grad(t1.T @ A @ t1, t1))
    assert "_t1 = " in fn.source
    rng = np.random.default_rng(0)
    Av, xv = rng.normal(size=(4, 4)), rng.normal(size=4)
    np.testing.assert_allclose(fn(A=Av, t1=xv), (Av + Av.T) @ xv)


def test_a_scaled_diagonal_output_is_scaled_before_it_is_spread():
    """2 δ_ik (VᵀV)_jl: the factor 2 multiplies the r × r block, not the (m·r)² output."""
    T, U, V = md.matrix("T", "m", "n"), md.matrix("U", "m", "r"), md.matrix("V", "n", "r")
    H = md.hessian(md.norm(T - U @ V.T) ** 2, U)
    src = md.codegen(H)
    full = re.search(r"(t\d+) = np.zeros", src).group(1)
    assert src.rstrip().endswith(f"return {full}") and "2.0 * (V.T @ V)" in src
    _check_backend(Case("UVᵀ", md.norm(T - U @ V.T) ** 2, U, sizes={"r": 2}), "numpy", hessian=True)


# user functions with NumPy values run eagerly, not in JAX
JAX_CASES = [c for c in CONCRETE if "softsign" not in c.name]


@pytest.mark.parametrize("case", JAX_CASES, ids=[c.name for c in JAX_CASES])
def test_jax_code_agrees_with_the_evaluator(case):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    _check_backend(case, "jax")


@pytest.mark.parametrize("case", JAX_CASES, ids=[c.name for c in JAX_CASES])
def test_torch_code_agrees_with_the_evaluator(case):
    pytest.importorskip("torch")
    _check_backend(case, "torch")


def test_torch_code_follows_its_arguments_device():
    """Constants (zeros, aranges) are made on the arguments' device, so CUDA tensors work."""
    torch = pytest.importorskip("torch")
    Xm, A = md.matrix("X", "n", "m"), md.matrix("A", "n", "n")
    H = md.hessian(md.trace(Xm.T @ A @ Xm), Xm)  # (A + Aᵀ)_ik δ_jl: zeros, then its diagonal
    src = md.codegen(H, backend="torch")
    assert "device=_device" in src and "_device = A.device" in src and "np." not in src
    fn = md.compile(H, backend="torch")
    rng = np.random.default_rng(0)
    Av, Xv = rng.normal(size=(4, 4)), rng.normal(size=(4, 3))
    got = fn(A=torch.tensor(Av), X=torch.tensor(Xv))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), H.evaluate(A=Av, X=Xv), rtol=1e-10)
    if torch.cuda.is_available():  # where a GPU is present (not in CI)
        got = fn(A=torch.tensor(Av, device="cuda"), X=torch.tensor(Xv, device="cuda"))
        assert got.device.type == "cuda"
        np.testing.assert_allclose(got.cpu().numpy(), H.evaluate(A=Av, X=Xv), rtol=1e-10)


def test_jax_code_runs_under_jit():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    fn = jax.jit(md.compile(md.hessian(LOGISTIC, w), backend="jax"))
    rng = np.random.default_rng(0)
    Xv, wv, yv = rng.normal(size=(6, 3)), rng.normal(size=3), np.sign(rng.normal(size=6))
    np.testing.assert_allclose(fn(X=Xv, w=wv, y=yv), md.hessian(LOGISTIC, w).evaluate(X=Xv, w=wv, y=yv),
                               rtol=1e-10)


X, w, y = md.matrix("X", "n", "k"), md.vector("w", "k"), md.vector("y", "n")
LOGISTIC = md.sum(md.softplus(-y * (X @ w)))


def test_shared_subexpressions_are_computed_once():
    src = md.codegen([LOGISTIC, md.grad(LOGISTIC, w), md.hessian(LOGISTIC, w)])
    assert src.count("np.exp(") == 1  # σ(−y ⊙ Xw), used by all three
    assert src.count("X @ w") == 1


@pytest.mark.parametrize("expr,present,absent", [
    (md.hessian(LOGISTIC, w), "X * ", "np.diag"),  # Xᵀ(d ⊙ X), no n × n diagonal
    (md.diag(md.vector("a", "n")) @ md.matrix("B", "n", "n"), "[:, None]", "np.diag"),
    (md.trace(md.matrix("A", "n", "n") @ md.matrix("B", "n", "n")), "np.sum(", "np.trace"),
    (md.grad(md.vector("x", "n").T @ md.matrix("A", "n", "n") @ md.vector("x", "n"),
             md.vector("x", "n")), "@", "np.eye"),
])
def test_no_delta_or_diagonal_is_built(expr, present, absent):
    src = md.codegen(expr)
    assert present in src and absent not in src


def test_source_is_a_standalone_readable_module():
    src = md.codegen([LOGISTIC, md.grad(LOGISTIC, w)])
    assert "matdiff" not in src and src.startswith("import numpy as np")
    assert "# σ(−(y ⊙ Xw))" in src  # each intermediate commented with its notation
    namespace = {}
    exec(compile(src, "generated.py", "exec"), namespace)  # only numpy is imported
    rng = np.random.default_rng(0)
    Xv, wv, yv = rng.normal(size=(6, 3)), rng.normal(size=3), np.sign(rng.normal(size=6))
    value, gradient = namespace["f"](X=Xv, w=wv, y=yv)
    np.testing.assert_allclose(gradient, md.grad(LOGISTIC, w).evaluate(X=Xv, w=wv, y=yv))


def test_hvp_equals_the_hessian_times_v():
    v = md.vector("v", "k")
    hv = md.hvp(LOGISTIC, w, v)
    rng = np.random.default_rng(1)
    vals = {"X": rng.normal(size=(7, 3)), "w": rng.normal(size=3), "y": np.sign(rng.normal(size=7))}
    vv = rng.normal(size=3)
    H = md.hessian(LOGISTIC, w).evaluate(vals)
    np.testing.assert_allclose(hv.evaluate({**vals, "v": vv}), H @ vv, rtol=1e-12)
    assert md.check(md.dot(md.grad(LOGISTIC, w), v), w) < 1e-6
    with pytest.raises(md.MatdiffError, match="must have w's shape"):
        md.hvp(LOGISTIC, w, md.vector("v", "n"))


def test_unsupported():
    with pytest.raises(md.NotSupportedError, match="abstract"):
        md.codegen(md.sum(md.function("sigma")(X @ w)))
    with pytest.raises(md.NotSupportedError, match="not available yet"):
        md.codegen(LOGISTIC, backend="tensorflow")


def test_a_matrix_sum_times_a_vector_is_distributed():
    """(A + Aᵀ)x is written Ax + Aᵀx: two matrix-vector products, no n × n temporary."""
    x, A = md.vector("x", "n"), md.matrix("A", "n", "n")
    src = md.codegen(md.grad(x.T @ A @ x, x))
    assert "x @ A + A @ x" in src and "t1 + A" not in src and "A + t1" not in src
    fn = md.compile(md.grad(x.T @ A @ x, x))
    rng = np.random.default_rng(0)
    Av, xv = rng.normal(size=(5, 5)), rng.normal(size=5)
    np.testing.assert_allclose(fn(A=Av, x=xv), (Av + Av.T) @ xv)


_T, _U, _V = md.matrix("T", "m", "n"), md.matrix("U", "m", "r"), md.matrix("V", "n", "r")
_A, _B, _C = md.matrix("A", "n", "n"), md.matrix("B", "n", "n"), md.matrix("C", "n", "n")


@pytest.mark.parametrize("expr,sizes,distributed,formed,reference", [
    # (UVᵀ − T)V as U(VᵀV) − TV: never the m × n residual, half the multiply-adds
    ((_U @ _V.T - _T) @ _V, {"m": 1000, "n": 800, "r": 20}, True, "U @ V.T",
     lambda v: (v["U"] @ v["V"].T - v["T"]) @ v["V"]),
    # with r as large as m and n, forming the residual first is cheaper
    ((_U @ _V.T - _T) @ _V, {"m": 100, "n": 100, "r": 100}, False, "U @ V.T",
     lambda v: (v["U"] @ v["V"].T - v["T"]) @ v["V"]),
    (_V.T @ (_U @ _V.T - _T).T, {"m": 1000, "n": 800, "r": 20}, True, "V @ U.T",
     lambda v: v["V"].T @ (v["U"] @ v["V"].T - v["T"]).T),
    # a sum of matrices times a matrix: one product
    ((_A + _B) @ _C, {"n": 500}, False, "B + A", lambda v: (v["A"] + v["B"]) @ v["C"]),
])
def test_a_sum_is_distributed_over_a_product_where_that_costs_less(expr, sizes, distributed,
                                                                   formed, reference):
    src = md.codegen(expr, sizes=sizes)
    code = "\n".join(line.partition("  # ")[0] for line in src.splitlines()[5:])
    assert (formed not in code) == distributed, src
    rng = np.random.default_rng(1)
    values = {v.name: rng.normal(size=tuple({"m": 5, "n": 4, "r": 3}[d] for d in v.shape))
              for v in variables(expr.node)}
    got = md.compile(expr, sizes=sizes)(**values)
    np.testing.assert_allclose(got, reference(values), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, expr.evaluate(values), rtol=1e-12, atol=1e-12)


def test_a_gram_matrix_is_read_either_way_round_without_a_transpose():
    expr = [_U @ (_V.T @ _V), (_V.T @ _V) @ _U.T]
    src = md.codegen(expr, sizes={"m": 1000, "n": 800, "r": 20})
    assert re.search(r"(t\d+) = V\.T @ V\n", src) and not re.search(r"t\d+\.T", src), src
    rng = np.random.default_rng(2)
    U, V = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    got = md.compile(expr, sizes={"m": 1000, "n": 800, "r": 20})(U=U, V=V)
    np.testing.assert_allclose(got[0], U @ V.T @ V, rtol=1e-12)
    np.testing.assert_allclose(got[1], V.T @ V @ U.T, rtol=1e-12)


def test_a_nonnegative_weighted_gram_product_is_a_symmetric_update():
    """Xᵀdiag(d)X with d ≥ 0 provably (logistic Hessian) is (√d ⊙ X)ᵀ(√d ⊙ X); with d of
    unknown sign it stays Xᵀ(d ⊙ X)."""
    src = md.codegen(md.hessian(LOGISTIC, w))
    assert "np.sqrt(" in src and re.search(r"(t\d+)\.T @ \1\b", src), src
    d = md.vector("d", "n")
    src = md.codegen(X.T @ md.diag(d) @ X)
    assert "np.sqrt(" not in src
    src = md.codegen(X.T @ md.diag(md.exp(d) * d ** 2) @ X)
    assert "np.sqrt(" in src
    rng = np.random.default_rng(0)
    Xv, dv = rng.normal(size=(6, 3)), rng.normal(size=6)
    got = md.compile(X.T @ md.diag(md.exp(d) * d ** 2) @ X)(X=Xv, d=dv)
    np.testing.assert_allclose(got, Xv.T @ ((np.exp(dv) * dv ** 2)[:, None] * Xv), rtol=1e-12)


@pytest.mark.parametrize("expr,nonnegative", [
    (md.exp(y), True), (y ** 2, True), (md.sigmoid(y) * (1 - md.sigmoid(y)), True),
    (md.softplus(y) + md.abs(y), True), (y, False), (y ** 3, False), (1 - md.exp(y), False),
    (md.tanh(y), False), (md.sqrt(md.exp(y)), True),
])
def test_nonnegative_by_structure(expr, nonnegative):
    from matdiff.generate import _nonnegative
    from matdiff.simplify import simplify

    assert _nonnegative(simplify(expr.node)) is nonnegative


def test_jax_code_reads_transposes_in_products_instead_of_building_a_plus_a_transposed():
    """XLA on the CPU builds A + Aᵀ slowly; the JAX code writes (A + Aᵀ)X as AᵀX + AX."""
    Xm, A = md.matrix("X", "n", "m"), md.matrix("A", "n", "n")
    g = md.grad(md.trace(Xm.T @ A @ Xm), Xm)
    assert "A.T @ X + A @ X" in md.codegen(g, backend="jax")
    assert "A.T + A" in md.codegen(g)  # NumPy adds first: one product, not two
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    _check_backend(Case("tr XᵀAX", md.trace(Xm.T @ A @ Xm), Xm, sizes={"m": 2}), "jax")


def test_numpy_sigmoid_at_large_arguments_is_exact_and_quiet():
    """σ(−1000) = 0 and σ(1000) = 1 with no overflow warning from exp(1000) (issue 12's note)."""
    import warnings

    x = md.vector("x", "n")
    f = md.compile([md.sigmoid(x), md.grad(md.sum(md.log(md.sigmoid(x))), x)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, grad = f(np.array([-1000.0, 0.0, 1000.0]))
    np.testing.assert_array_equal(value, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(grad, [1.0, 0.5, 0.0])
    assert "def _sigmoid(x):" in md.codegen(md.sigmoid(x)) and "_sigmoid" not in md.codegen(md.exp(x))


# A sum whose terms share a coefficient, 2(y − Xw), used once inside a scaled product
# (−Xᵀ(2(y − Xw) ⊘ s)): the sum is written without its 2, which the product must apply on
# every path that lowers it.  These losses returned half their gradient in all backends.
_Xd, _wd, _yn, _sn = md.matrix("X", "n", "d"), md.vector("w", "d"), md.vector("y", "n"), md.vector("s", "n")
_nu, _c = md.scalar("nu"), md.scalar("c")
_r = _yn - _Xd @ _wd
COMMON_COEFFICIENT_LOSSES = [
    ("weighted least squares", md.sum(_r ** 2 / _sn), _wd),
    ("Gaussian NLL, variance exp(s), by w", md.sum(_sn / 2 + _r ** 2 / (2 * md.exp(_sn))), _wd),
    ("Gaussian NLL, variance exp(s), by s", md.sum(_sn / 2 + _r ** 2 / (2 * md.exp(_sn))), _sn),
    ("Student-t NLL", md.sum((_nu + 1) / 2 * md.log(1 + _r ** 2 / _nu)), _wd),
    ("pseudo-Huber", md.sum(_c ** 2 * (md.sqrt(1 + _r ** 2 / _c ** 2) - 1)), _wd),
]


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
@pytest.mark.parametrize("name,loss,wrt", COMMON_COEFFICIENT_LOSSES,
                         ids=[c[0] for c in COMMON_COEFFICIENT_LOSSES])
def test_a_coefficient_common_to_a_sum_inside_a_scaled_product_is_kept(name, loss, wrt, backend):
    if backend == "jax":
        pytest.importorskip("jax").config.update("jax_enable_x64", True)
    pytest.importorskip(backend)
    g = md.grad(loss, wrt)
    rng = np.random.default_rng(1)
    values = {"X": rng.normal(size=(5, 3)), "w": rng.normal(size=3), "y": rng.normal(size=5),
              "s": rng.uniform(0.5, 1.5, 5), "nu": 3.0, "c": 1.5}
    fn = md.compile(g, backend=backend)
    args = {p: values[p] for p in inspect.signature(fn).parameters}
    got = np.asarray(fn(**args))
    np.testing.assert_allclose(got, g.evaluate(args), rtol=1e-12, atol=1e-14)
    # and the gradient is the gradient: a central difference of the loss along a direction
    v = rng.normal(size=np.shape(values[wrt.node.name]))
    f = md.compile(loss)
    h = 1e-6
    up, down = dict(args, **{wrt.node.name: args[wrt.node.name] + h * v}), \
        dict(args, **{wrt.node.name: args[wrt.node.name] - h * v})
    assert np.isclose(np.dot(got, v), (f(**up) - f(**down)) / (2 * h), rtol=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_float32_arrays_with_python_number_scalars_compute_in_float32(backend):
    """Scalars follow the arrays' dtype, as Python numbers do in NumPy: ν = 3.0 with float32
    data gives a float32 gradient, and with float64 data 1/ν is not rounded to float32."""
    if backend == "jax":
        pytest.importorskip("jax").config.update("jax_enable_x64", True)
    pytest.importorskip(backend)
    name, loss, wrt = COMMON_COEFFICIENT_LOSSES[3]
    g = md.grad(loss, wrt)
    fn = md.compile(g, backend=backend)
    rng = np.random.default_rng(2)
    arrays = {"X": rng.normal(size=(5, 3)), "w": rng.normal(size=3), "y": rng.normal(size=5)}
    for dtype in (np.float32, np.float64):
        typed = {k: v.astype(dtype) for k, v in arrays.items()}
        if backend == "torch":
            import torch
            typed = {k: torch.from_numpy(v) for k, v in typed.items()}
        got = fn(nu=3.0, **typed)
        assert str(got.dtype).endswith(np.dtype(dtype).name)
        want = g.evaluate(nu=3.0, **{k: v.astype(dtype).astype(np.float64) for k, v in arrays.items()})
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5 if dtype == np.float32 else 1e-13)


# losses built on step, relu, abs and mean: float32 data gives float32 values and gradients
_Xf, _wf, _yf = md.matrix("X", "n", "d"), md.vector("w", "d"), md.vector("y", "n")
_af, _pf, _qf, _xf = (md.vector(n, "d") for n in "apqx")
_zf = _Xf @ _wf
_rf = _yf - _zf
_cf = _xf - md.mean(_xf)
FLOAT32_LOSSES = [
    ("hinge", md.sum(md.relu(1 - _yf * _zf)), _wf),
    ("squared hinge", md.sum(md.relu(1 - _yf * _zf) ** 2), _wf),
    ("quantile", md.sum(0.3 * md.relu(_rf) + 0.7 * md.relu(-_rf)), _wf),
    ("Huber", md.sum(md.step(1 - md.abs(_rf)) * _rf ** 2 / 2 + md.step(md.abs(_rf) - 1) * (md.abs(_rf) - 0.5)), _wf),
    ("contrastive", md.sum(_yf * _zf ** 2 + (1 - _yf) * md.relu(1 - _zf) ** 2), _wf),
    ("triplet", md.relu(md.norm(_af - _pf) ** 2 - md.norm(_af - _qf) ** 2 + 1), _af),
    ("layer norm", md.sum(md.tanh(_cf / md.sqrt(md.mean(_cf * _cf) + 1e-5))), _xf),
]


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
@pytest.mark.parametrize("name,loss,wrt", FLOAT32_LOSSES, ids=[c[0] for c in FLOAT32_LOSSES])
def test_float32_losses_stay_float32(name, loss, wrt, backend):
    if backend == "jax":
        pytest.importorskip("jax").config.update("jax_enable_x64", True)
    pytest.importorskip(backend)
    outputs = [loss, md.grad(loss, wrt)]
    fn = md.compile(outputs, backend=backend)
    rng = np.random.default_rng(3)
    values = {"X": rng.normal(size=(6, 3)), "w": rng.normal(size=3), "y": (rng.normal(size=6) > 0) * 1.0,
              "a": rng.normal(size=3), "p": rng.normal(size=3), "q": rng.normal(size=3) * 2, "x": rng.normal(size=3)}
    args = {p: values[p].astype(np.float32) for p in inspect.signature(fn).parameters}
    if backend == "torch":
        import torch
        args = {p: torch.from_numpy(v) for p, v in args.items()}
    for got, e in zip(fn(**args), outputs):
        assert str(got.dtype).endswith("float32"), (name, backend, got.dtype)
        point = {p: np.asarray(v, dtype=np.float64) for p, v in args.items()}
        np.testing.assert_allclose(np.asarray(got), e.evaluate(point), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("c", [-1 / 3, 2.0, -1.0])
def test_a_scaled_weighted_gram_product_keeps_its_sign(c):
    """cX diag(w²)Xᵀ: the square root of the weight is taken before the scaling moves onto a
    factor (once √(−w²/3) gave NaN, found by the differential test)."""
    X, w = md.matrix("X", "n", "k"), md.vector("w", "k")
    e = c * X @ md.diag(w ** 2) @ X.T
    rng = np.random.default_rng(0)
    Xv, wv = rng.normal(size=(4, 3)), rng.normal(size=3)
    got = md.compile(e)(X=Xv, w=wv)
    np.testing.assert_allclose(got, c * Xv @ np.diag(wv ** 2) @ Xv.T, rtol=1e-12, atol=1e-14)


def test_a_sum_a_product_holds_twice_is_not_distributed():
    """t ⊙ t for t = yᵀ(X − √(X^∘2 + 1))v: the square is one product holding the matrix sum
    twice; distributing over one copy once left the other unwritten (KeyError), found by the
    nightly differential run."""
    X, y, w = md.matrix("X", "n", "k"), md.vector("y", "n"), md.vector("w", "k")
    t = y.T @ (X - md.sqrt(X ** 2 + 1)) @ (w * md.relu(2 * w))
    e = t * t
    rng = np.random.default_rng(0)
    v = {"X": rng.normal(size=(4, 3)), "y": rng.normal(size=4), "w": rng.normal(size=3)}
    for backend in ("numpy", "torch"):
        pytest.importorskip(backend)
        fn = md.compile(e, backend=backend)
        np.testing.assert_allclose(np.asarray(fn(**v)), e.evaluate(v), rtol=1e-12)


def test_the_frechet_derivative_of_expm_is_accurate_when_the_direction_is_large():
    """∇(xᵀexpm(M)y)⁴: L_exp(M, E) with ‖E‖ ≫ ‖M‖.  PyTorch's block exponential
    [[M, E], [0, M]] is scaled by E's size unless E is first scaled to M's (linearity): it
    lost 6% in float32 and 1e-8 in float64 before."""
    torch = pytest.importorskip("torch")
    A, x, y = md.matrix("A", "n", "n"), md.vector("x", "n"), md.vector("y", "n")
    g = md.grad((x.T @ md.expm(0.5 * md.tanh(A)) @ y) ** 4, A)
    rng = np.random.default_rng(0)
    v = {"A": rng.normal(size=(3, 3)), "x": rng.normal(size=3) * 4, "y": rng.normal(size=3) * 4}
    want = g.evaluate(v)
    fn = md.compile(g, backend="torch")
    for dtype, tol in ((torch.float64, 1e-13), (torch.float32, 1e-5)):
        got = fn(**{k: torch.tensor(a, dtype=dtype) for k, a in v.items()}).numpy()
        assert np.abs(got - want).max() <= tol * np.abs(want).max()


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_a_label_one_factor_alone_sums_is_summed_there_first(backend):
    """diag(Y1)S (the softmax cross-entropy's gradient, Y's rows unknown to sum to 1): Y's
    row sums are formed once and broadcast, t[:, None] * S, not an einsum over Y and S."""
    pytest.importorskip(backend)
    if backend == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
    X, W, Y = md.matrix("X", "n", "k"), md.matrix("W", "k", "c"), md.matrix("Y", "n", "c")
    loss = -md.sum(Y * md.log(md.softmax(X @ W, axis=1)))
    g = md.grad(loss, W)
    body = md.codegen(g, backend=backend)
    assert "einsum" not in body and body.count("Y.sum(axis=1)") == 1, body
    rng = np.random.default_rng(0)
    v = {"X": rng.normal(size=(7, 4)), "W": rng.normal(size=(4, 3)), "Y": rng.random((7, 3))}
    Z = v["X"] @ v["W"]
    S = np.exp(Z - Z.max(axis=1, keepdims=True))
    S /= S.sum(axis=1, keepdims=True)
    want = v["X"].T @ (v["Y"].sum(axis=1)[:, None] * S - v["Y"])
    fn = md.compile(g, backend=backend)
    args = v
    if backend == "torch":
        import torch
        args = {k: torch.from_numpy(a) for k, a in v.items()}
    got = fn(**args)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)
    np.testing.assert_allclose(g.evaluate(v), want, rtol=1e-12)
    assert md.check(loss, W) < 1e-6


def test_numpy_sigmoid_helper_computes_the_same_values_in_one_buffer():
    """The helper's in-place 1 / (1 + exp(−x)) gives the same bits as the plain formula, in
    every float dtype, for arrays, 0-d arrays and scalars, with no overflow warning."""
    import warnings

    x, s = md.vector("x", "n"), md.scalar("s")
    vector, scalar = md.compile(md.sigmoid(x)), md.compile(md.sigmoid(s))
    rng = np.random.default_rng(0)
    for dtype, big in ((np.float64, 1000.0), (np.float32, 100.0), (np.float16, 60000.0)):
        a = (rng.normal(size=200) * 40).astype(dtype)
        a[:3] = [-big, 0.0, big]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = vector(a)
            got_scalar = [scalar(dtype(t)) for t in a[:5]]
        with np.errstate(over="ignore"):
            want = 1.0 / (1.0 + np.exp(-a))
        assert got.dtype == dtype and got is not a
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.asarray(got_scalar, dtype=dtype), want[:5])
    assert float(scalar(2.0)) == 1.0 / (1.0 + np.exp(-2.0))


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_the_wrapper_fast_path_checks_what_the_general_path_checks(backend):
    """Arrays of the backend passed by keyword or in order take a straight-line check; every
    call it does not accept (a wrong shape, a complex or integer array, a list, a name of the
    variable's own) takes the general path, with the same answers and the same errors."""
    lib = pytest.importorskip({"numpy": "numpy", "torch": "torch", "jax": "jax.numpy"}[backend])
    if backend == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    X, w, y = md.matrix("X", "n", 3), md.vector("w", 3), md.vector("y", "n")
    g = md.grad(md.sum(md.softplus(-y * (X @ w))), w)
    fn = md.compile(g, backend=backend)
    params = list(inspect.signature(fn).parameters)
    rng = np.random.default_rng(1)
    values = {"X": rng.normal(size=(5, 3)), "w": rng.normal(size=3), "y": np.sign(rng.normal(size=5))}
    want = g.evaluate(values)

    def arr(a, dtype=np.float64):
        return lib.asarray(np.asarray(a, dtype=dtype)) if backend != "torch" else lib.as_tensor(np.asarray(a, dtype))

    def out(r):
        return np.asarray(r.cpu() if hasattr(r, "cpu") else r)

    args = {k: arr(a) for k, a in values.items()}
    np.testing.assert_allclose(out(fn(**args)), want, rtol=1e-12)
    np.testing.assert_allclose(out(fn(*(args[p] for p in params))), want, rtol=1e-12)
    got32 = fn(**{k: arr(a, np.float32) for k, a in values.items()})
    assert str(got32.dtype).endswith("float32")
    np.testing.assert_allclose(out(got32), want, rtol=1e-5)
    np.testing.assert_allclose(out(fn(**dict(args, y=values["y"].astype(int)))), want, rtol=1e-12)  # cast
    np.testing.assert_allclose(out(fn(**dict(args, w=list(values["w"])))), want, rtol=1e-12)
    with pytest.raises(md.ShapeError):
        fn(**dict(args, y=arr(np.ones(4))))  # n is 5 from X but 4 from y
    with pytest.raises(md.ShapeError):
        fn(**dict(args, X=arr(np.ones((5, 4)))))  # a declared integer dim
    with pytest.raises(md.ShapeError):
        fn(**dict(args, w=arr(np.ones((3, 1)))))
    with pytest.raises(md.EvaluationError, match="complex"):
        fn(**dict(args, w=arr(values["w"], np.complex128)))
    with pytest.raises(md.EvaluationError, match="takes"):
        fn(*(args[p] for p in params[:2]))


def test_the_wrapper_fast_path_takes_any_parameter_name():
    """The straight-line check names its own locals apart from the parameters, so variables
    named like them (or like the builtins it calls) are checked and passed as they are."""
    names = ["type", "len", "_fits_", "_fits_T", "_fits_s0", "fits"]
    vs = [md.vector(n, "n") for n in names]
    e = vs[0].T @ vs[1] + sum((float(i) * md.sum(v) for i, v in enumerate(vs[2:])), 0.0)
    fn = md.compile(e)
    params = list(inspect.signature(fn).parameters)
    assert {"_fits_", "_fits_T", "_fits_s0", "fits"} <= set(params)
    rng = np.random.default_rng(2)
    values = {n: rng.normal(size=4) for n in names}
    want = e.evaluate(values)
    np.testing.assert_allclose(fn(**values), want, rtol=1e-12)  # by the variables' names
    in_order = [values[p] if p in values else values[p.rstrip("_")] for p in params]  # type_, len_
    np.testing.assert_allclose(fn(*in_order), want, rtol=1e-12)
    np.testing.assert_allclose(fn(**dict(zip(params, in_order))), want, rtol=1e-12)
    with pytest.raises(md.ShapeError):
        fn(**dict(values, len=np.ones(3)))


def test_compiled_sigmoid_matches_its_printed_source_and_the_callers_error_state():
    """md.compile runs the helper _sigmoid with the error state set directly rather than
    through np.errstate: the values are those of the printed source, overflow is quiet, and
    the caller's other settings (here underflow raising) hold as they do in the source."""
    x = md.vector("x", "n")
    e = md.sigmoid(x)
    fn = md.compile(e)
    namespace: dict = {}
    exec(md.codegen(e), namespace)  # the printed module, with np.errstate
    a = np.array([-1000.0, -30.0, 0.0, 2.5, 1000.0])
    np.testing.assert_array_equal(fn(a), namespace["f"](a))
    np.testing.assert_array_equal(fn(a.astype(np.float32)), namespace["f"](a.astype(np.float32)))
    for f in (fn, fn.unchecked, namespace["f"]):
        with np.errstate(under="raise"), pytest.raises(FloatingPointError):
            f(a)  # exp(−1000) underflows
        with np.errstate(over="raise"):
            np.testing.assert_array_equal(f(a[:1]), [0.0])  # overflow stays ignored inside
    assert np.geterr()["over"] == "warn"  # and the caller's state is restored


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_the_sigmoids_slope_is_one_exponential_and_keeps_its_relative_accuracy(backend):
    """σ(u) ⊙ σ(−u) (the gradient of Σσ(XW), the BCE Hessian's weight) is one _dsigmoid(u)
    in NumPy and JAX, e / (1 + e)² for e = exp(−|u|): at u = ±40 in float64 it keeps the
    product's relative accuracy (s(1 − s) would give 0), and it is finite at ±1000 (float64)
    and ±100 (float32).  PyTorch, whose kernels do not fuse, keeps the two sigmoids."""
    pytest.importorskip(backend)
    if backend == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
    X, W = md.matrix("X", "n", "k"), md.matrix("W", "k", "c")
    g = md.grad(md.sum(md.sigmoid(X @ W)), W)
    src = md.codegen(g, backend=backend)
    assert (src.count("_dsigmoid(") == 2) == (backend != "torch"), src  # defined and called once
    fn = md.compile(g, backend=backend)
    z = np.array([[-1000.0, -100.0, -40.0, -3.0, 0.0, 1e-9, 2.5, 40.0, 100.0, 1000.0]])
    e = np.exp(-np.abs(z))
    want = e / (1 + e) ** 2  # σ(z)σ(−z), accurate in relative terms (and 0 past underflow)
    for dtype, rtol in ((np.float64, 4e-16), (np.float32, 4e-7)):
        zz = z.astype(dtype) if dtype == np.float64 else np.clip(z, -100, 100).astype(dtype)
        w = np.exp(-np.abs(zz.astype(np.float64)))
        w = w / (1 + w) ** 2
        args = {"X": np.ones((1, 1), dtype=dtype), "W": zz}
        if backend == "torch":
            import torch
            args = {k: torch.from_numpy(a) for k, a in args.items()}
        got = np.asarray(fn(**args), dtype=np.float64)
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, w, rtol=8 * rtol, atol=np.finfo(dtype).tiny)  # below: subnormal
    assert want[0, 2] > 0 and want[0, 7] == want[0, 2]


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_a_min_dim_of_singular_values_is_sized_from_the_arguments(backend):
    """svdvals of an (n, k) X has min(k, n) entries: compiled code sizes it from X's shape,
    for tall and wide X alike (σ_min's gradient, ‖X‖₂'s Hessian; codegen refused them)."""
    pytest.importorskip(backend)
    X = md.matrix("X", "n", "k")
    outputs = [md.grad(md.svdvals(X)[-1], X), md.hessian(md.norm(X, 2), X)]
    fn = md.compile(outputs, backend=backend)
    rng = np.random.default_rng(5)
    tol = 1e-5 if backend == "jax" else 1e-10  # JAX computes in float32 unless x64 is enabled
    for shape in ((5, 3), (3, 5)):
        Xv = rng.normal(size=shape)
        for got, e in zip(fn(X=Xv), outputs):
            np.testing.assert_allclose(np.asarray(got, dtype=float), e.evaluate(X=Xv), rtol=tol, atol=tol)
    assert md.check(md.svdvals(X)[-1], X) < 1e-5


def test_an_element_wise_product_reads_its_operands_in_their_stored_order():
    """Issue 25: in ∇_W₁‖σ(XW₁)W₂ − Y‖² = Xᵀ(2(σ(XW₁)W₂ − Y)W₂ᵀ ⊙ σ′(XW₁)) the product RW₂ᵀ is
    computed as R @ W2.T, in the order the Hadamard product reads it, not as W2 @ R.T read
    through a transpose (a strided pass over n × h entries)."""
    X, W1, W2, Y = (md.matrix("X", "n", "d"), md.matrix("W1", "d", "h"), md.matrix("W2", "h", "c"),
                    md.matrix("Y", "n", "c"))
    g = md.grad(md.norm(md.sigmoid(X @ W1) @ W2 - Y) ** 2, W1)
    source = md.codegen(g)
    assert not re.search(r"\* t\d+\.T\b|\bt\d+\.T \*", source), source
    rng = np.random.default_rng(0)
    v = {"X": rng.normal(size=(7, 4)), "W1": rng.normal(size=(4, 3)), "W2": rng.normal(size=(3, 2)),
         "Y": rng.normal(size=(7, 2))}
    np.testing.assert_allclose(md.compile(g)(**v), g.evaluate(v), rtol=1e-12)


def _network_gradient():
    X, W1, W2, Y = (md.matrix("X", "n", "d"), md.matrix("W1", "d", "h"), md.matrix("W2", "h", "c"),
                    md.matrix("Y", "n", "c"))
    return md.grad(md.norm(md.sigmoid(X @ W1) @ W2 - Y) ** 2, W1)


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_a_sigmoid_and_its_slope_share_one_exponential(backend):
    """Issue 25: ∇_W₁‖σ(XW₁)W₂ − Y‖² needs σ(u) and σ′(u) = σ(u) ⊙ σ(−u) of u = XW₁; NumPy
    computes σ(u) and σ(−u) together, ``_sigmoids(u)``, from one exponential (not two
    sigmoids), JAX from one logistic, σ(−|u|), whose pair also holds the slope t(1 − t);
    PyTorch keeps its own sigmoid twice, faster there.  The values are evaluate's."""
    pytest.importorskip(backend)
    if backend == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
    g = _network_gradient()
    source = md.codegen(g, backend=backend)
    body = source.partition("\ndef f(")[2]
    if backend == "torch":
        assert body.count("torch.sigmoid(") == 2, source
    else:
        assert body.count("_sigmoids(") == 1 and "sigmoid(" not in body.replace("_sigmoids(", ""), source
        transcendental = {"numpy": "exp(", "jax": "jax.nn.sigmoid("}[backend]
        assert source.count(transcendental) == 1, source  # the helper's one
        if backend == "jax":  # σ(u) ⊙ σ(−u) read as the pair's own product t(1 − t)
            assert re.search(r"= (t\d+)\[2\]  # σ\(X W1\) ⊙ σ\(−X W1\)", body), source
    rng = np.random.default_rng(1)
    v = {"X": rng.normal(size=(7, 4)), "W1": 3 * rng.normal(size=(4, 3)), "W2": rng.normal(size=(3, 2)),
         "Y": rng.normal(size=(7, 2))}
    args = v
    if backend == "torch":
        import torch
        args = {k: torch.from_numpy(a) for k, a in v.items()}
    np.testing.assert_allclose(np.asarray(md.compile(g, backend=backend)(**args)), g.evaluate(v), rtol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_sigmoids_of_u_and_minus_u_keep_their_relative_accuracy(backend):
    """σ(u), σ(−u) and σ(u)σ(−u) + σ(u) computed together (``_sigmoids``) are accurate in
    relative terms where σ(−u) is tiny (u = 40: 1 − σ(u) would be 0), 1 and 0 where exp(−u)
    overflows or underflows (u = ±1000, float32 ±100), with no warning, in float64 and
    float32; NumPy's helper in the generated module (np.errstate) and as compiled code runs it,
    and JAX's, whose derivatives through jax.grad are ±σ′, also at u = 0."""
    pytest.importorskip(backend)
    if backend == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
    X, W = md.matrix("X", "n", "k"), md.matrix("W", "k", "c")
    u = X @ W
    outputs = [md.sigmoid(u), md.sigmoid(-u), md.sigmoid(u) * md.sigmoid(-u) + md.sigmoid(u)]
    source = md.codegen(outputs, backend=backend)
    assert (source.partition("\ndef f(")[2].count("_sigmoids(") == 1) == (backend != "torch"), source
    module: dict = {}
    exec(source, module)  # noqa: S102  # the module as codegen writes it
    compiled = md.compile(outputs, backend=backend)
    convert = np.asarray
    if backend == "torch":
        import torch
        convert = torch.from_numpy
    z = np.array([[-1000.0, -709.5, -100.0, -40.0, -3.0, 0.0, 1e-9, 2.5, 40.0, 100.0, 709.5, 1000.0]])
    for dtype in (np.float64, np.float32):
        zz = (z if dtype == np.float64 else np.clip(z, -100, 100)).astype(dtype)
        exact = zz.astype(np.longdouble)
        s, t = 1 / (1 + np.exp(-exact)), 1 / (1 + np.exp(exact))
        want = [s, t, s * t + s]
        tiny = np.finfo(dtype).tiny  # below it subnormal (XLA's CPU code flushes them to 0)
        for fn in (module["f"], compiled):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                got = fn(X=convert(np.ones((1, 1), dtype=dtype)), W=convert(zz))
            for g, w in zip(got, want):
                g = np.asarray(g)
                assert g.dtype == dtype and np.all(np.isfinite(g))
                np.testing.assert_allclose(g.astype(np.longdouble), w, rtol=4 * np.finfo(dtype).eps, atol=tiny)
    assert want[1][0, 8] > 0  # σ(−40), relative accuracy checked above
    if backend == "jax":  # jax.grad through the helper, also at u = 0 (where |u| has no slope)
        import jax
        zz = np.array([[-3.0, 0.0, 2.5]])
        for k, sign in ((0, 1.0), (1, -1.0)):  # d σ(±u)/du = ±σ′(u)
            slope = jax.grad(lambda W: compiled(X=np.ones((1, 1)), W=W)[k].sum())(zz)
            sig = 1 / (1 + np.exp(-zz))
            np.testing.assert_allclose(np.asarray(slope), sign * sig * (1 - sig), rtol=1e-12)
