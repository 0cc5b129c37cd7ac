"""Issue 13: matdiff in the NumPy, JAX and PyTorch world — argument order of compiled
functions, the command line's input and output formats, NumPy habits in the Python API."""
import inspect
import subprocess
import sys

import numpy as np
import pytest

import matdiff as md

X, w, y = md.matrix("X", "n", "k"), md.vector("w", "k"), md.vector("y", "n")
LOSS = md.sum(md.softplus(-y * (X @ w)))


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((5, 3)), rng.standard_normal(3), np.sign(rng.standard_normal(5))


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_compiled_parameters_follow_first_appearance_or_args(backend):
    pytest.importorskip({"numpy": "numpy", "jax": "jax", "torch": "torch"}[backend])
    Xv, wv, yv = _data()
    want = np.logaddexp(0, -yv * (Xv @ wv)).sum()
    f = md.compile(LOSS, backend=backend)
    assert list(inspect.signature(f).parameters) == ["y", "X", "w"]  # −y ⊙ (Xw): y first
    np.testing.assert_allclose(float(f(yv, Xv, wv)), want, rtol=1e-6)
    g = md.compile([LOSS, md.grad(LOSS, w)], backend=backend, args=[w, X, y])
    assert list(inspect.signature(g).parameters) == ["w", "X", "y"]
    value, grad = g(wv, Xv, yv)
    np.testing.assert_allclose(float(value), want, rtol=1e-6)
    assert "def f(w, X, y):" in md.codegen(LOSS, backend=backend, args=["w", "X", "y"])


def test_args_must_list_every_variable_once():
    with pytest.raises(md.MatdiffError, match="leaves out y"):
        md.compile(LOSS, args=[w, X])
    with pytest.raises(md.MatdiffError, match="twice"):
        md.compile(LOSS, args=[w, X, y, w])
    with pytest.raises(md.MatdiffError, match="no variable"):
        md.compile(LOSS, args=[w, X, "z"])
    with pytest.raises(md.MatdiffError, match="not a variable"):
        md.compile(LOSS, args=[w, X, y, X @ w])
    extra = md.compile(md.grad(LOSS, w), args=[w, X, y, md.vector("b", "k")])  # extras allowed
    assert list(inspect.signature(extra).parameters) == ["w", "X", "y", "b"]


# --------------------------------------------------------------------------- dialect output

A, x = md.matrix("A", "n", "n"), md.vector("x", "n")
RESULTS = [
    md.grad(x.T @ A @ x, x), md.grad(md.sum(md.log(1 + md.exp(-y * (X @ w)))), w),
    md.hessian(md.sum(md.softplus(X @ w)), w), md.grad(md.norm(A @ x - x), x),
    md.grad(md.logdet(A), A), md.grad(md.sum(md.sigmoid(X @ w)), w), md.sum(md.log(1 + md.exp(x))),
    md.grad(x.T @ md.inv(A) @ x, A), md.grad(md.det(A @ A), A), md.kron(A, A.T),
    md.grad(md.sum(md.tanh(X @ w) ** 2), w), md.grad(md.sqrt(x.T @ x) + md.sum(x / (1 + x * x)), x),
]


@pytest.mark.parametrize("dialect", ["matrixcalculus", "numpy"])
@pytest.mark.parametrize("k", range(len(RESULTS)))
def test_results_print_as_input_of_each_dialect_and_read_back(dialect, k):
    from matdiff.parse import declarations
    e = RESULTS[k]
    text = e.text(dialect)
    decls = {n: d for n, d in declarations(e).items() if d != "dim"}
    back = md.parse(text, dialect=dialect, **decls)
    rng = np.random.default_rng(k)
    values = {"A": rng.standard_normal((3, 3)) + 3 * np.eye(3), "x": rng.uniform(0.5, 1.5, 3),
              "X": rng.standard_normal((3, 2)), "w": rng.standard_normal(2), "y": rng.standard_normal(3)}
    used = {v.node.name for v in e.variables}
    np.testing.assert_allclose(back.evaluate({n: values[n] for n in {v.node.name for v in back.variables}}),
                               e.evaluate({n: values[n] for n in used}), rtol=1e-10)


def test_a_dialect_without_a_form_says_so():
    sigma = md.function("sigma")
    with pytest.raises(md.NotSupportedError, match="matrixcalculus dialect"):
        md.grad(md.sum(sigma(X @ w)), w).text("matrixcalculus")
    with pytest.raises(md.NotSupportedError, match="no text dialect"):
        RESULTS[0].text("fortran")


# --------------------------------------------------------------------------- the command line

def _cli(*argv, stdin=None, env=None):
    import os
    full = dict(os.environ, **(env or {}))
    r = subprocess.run([sys.executable, "-m", "matdiff", *argv], input=stdin, capture_output=True,
                       text=True, env=full, encoding="utf-8", errors="replace")
    return r.returncode, r.stdout, r.stderr


def test_the_expression_comes_from_standard_input_or_a_file(tmp_path):
    rc, out, _ = _cli("-", "--wrt", "x", stdin="x'*A*x\n")
    assert rc == 0 and "∂f/∂x = (A + Aᵀ)x" in out
    path = tmp_path / "loss.txt"
    path.write_text("sum(log(1 + exp(-y.*(X*w))))\n", encoding="utf-8")
    rc, out, _ = _cli(f"@{path}", "--wrt", "w")
    assert rc == 0 and "−Xᵀ(y ⊙ σ(−(y ⊙ Xw)))" in out
    rc, _, err = _cli(f"@{tmp_path / 'missing.txt'}", "--wrt", "w")
    assert rc == 2 and "cannot read the expression" in err
    rc, _, err = _cli("-", "--wrt", "x", stdin="  \n")
    assert rc == 2 and "holds no expression" in err


def test_ascii_output_by_flag_and_on_terminals_that_cannot_encode_unicode():
    rc, out, _ = _cli("x'*A*x", "--wrt", "x", "--ascii")
    assert rc == 0 and out.isascii() and "df/dx = (A + A')x" in out
    rc, out, err = _cli("sum(sigmoid(X*w))", "--wrt", "w", env={"PYTHONIOENCODING": "ascii"})
    assert rc == 0 and out.isascii() and "X'(sigma(Xw) .* (1 - sigma(Xw)))" in out, err
    rc, out, _ = _cli("x'*inv(X)*x", "--wrt", "X", env={"PYTHONIOENCODING": "cp1252"})
    assert rc == 0 and "X^-T" in out


@pytest.mark.parametrize("fmt,want", [("mc", "df/dx = (A + A')*x"), ("numpy", "df/dx = (A + A.T) @ x")])
def test_format_prints_pasteable_dialect_text(fmt, want):
    rc, out, _ = _cli("x'*A*x", "--wrt", "x", "--format", fmt, "--ascii")
    assert rc == 0 and want in out


def test_latex_prints_only_latex():
    rc, out, _ = _cli("x'*A*x", "--wrt", "x", "--latex")
    assert rc == 0 and out.splitlines() == ["f = x^\\top A x",
                                            "\\frac{\\partial f}{\\partial x} = \\left(A + A^\\top\\right) x"]
    rc, _, err = _cli("x'*A*x", "--wrt", "x", "--latex", "--format", "mc")
    assert rc == 2 and "keep one" in err


def test_the_matrixcalculus_dialect_reads_eye_and_I_as_the_identity():
    e = md.parse("x'*(A + eye)*x")
    xv = next(v for v in e.variables if v.node.name == "x")
    assert str(md.grad(e, xv)) == "(A + Aᵀ + 2I)x"
    assert str(md.parse("tr(I*X)")) == "tr(X)"
    assert md.parse("I*x", I="matrix(n, n)").shape == ("n",)  # declared: a variable


@pytest.mark.parametrize("text,shapes", [
    ("a'*inv(X)*b", {"a": ("n",), "b": ("n",), "X": ("n", "n")}),   # was a 4-index tensor
    ("norm2(A*x - b)", {"A": ("n", "m"), "b": ("n",), "x": ("m",)}),
    ("X*b", {"X": ("n", "m"), "b": ("m",)}),
    ("tr(c)", {"c": ("n", "n")}),
    ("a'*b", {"a": ("n",), "b": ("n",)}),
    ("b*X", {"b": (), "X": ("n", "m")}),                             # nothing says otherwise
    ("a*x + c*x", {"a": (), "c": (), "x": ("n",)}),
    ("x'*A*x + c", {"c": (), "x": ("n",), "A": ("n", "n")}),
])
def test_the_matrixcalculus_dialect_follows_the_evidence_of_use(text, shapes):
    e = md.parse(text)
    assert {v.node.name: v.shape for v in e.variables} == shapes
    wrt = e.variables[0]
    kinds = {n: "invertible" for n, s in shapes.items() if len(s) == 2 and s[0] == s[1]}
    md.check(e if e.ndim == 0 else md.sum(e), wrt, kinds=kinds)


def test_declarations_still_decide():
    e = md.parse("a'*inv(X)*b", b="scalar")
    assert {v.node.name: v.shape for v in e.variables}["b"] == ()


# --------------------------------------------------------------------------- NumPy habits

def test_a_vector_added_to_a_matrix_broadcasts_over_rows_as_numpy_does():
    Xm, W, b = md.matrix("X", "n", "k"), md.matrix("W", "k", "m"), md.vector("b", "m")
    h = Xm @ W + b
    assert str(h) == "XW + 1bᵀ"
    rng = np.random.default_rng(1)
    v = {"X": rng.standard_normal((4, 3)), "W": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    np.testing.assert_allclose(h.evaluate(v), v["X"] @ v["W"] + v["b"])
    np.testing.assert_allclose((Xm @ W * b).evaluate(v), (v["X"] @ v["W"]) * v["b"])
    loss = md.sum(md.tanh(h))
    assert str(md.grad(loss, b)) == "(1 − tanh²(XW + 1bᵀ))ᵀ1"
    md.check(loss, b)
    md.check(loss, W)
    with pytest.raises(md.ShapeError, match="added to each row"):
        Xm + md.vector("c", "n")


def test_matmul_of_two_vectors_is_their_dot_product():
    a, b = md.vector("a", "n"), md.vector("b", "n")
    rng = np.random.default_rng(2)
    v = {"a": rng.standard_normal(3), "b": rng.standard_normal(3)}
    assert (a @ b).shape == () and np.isclose((a @ b).evaluate(v), v["a"] @ v["b"])
    assert str(md.grad(a @ b, a)) == "b"
    with pytest.raises(md.ShapeError):
        a @ md.vector("c", "m")


def test_sum_and_mean_methods_and_md_mean():
    Xm = md.matrix("X", "n", "k")
    v = {"X": np.arange(6.0).reshape(2, 3)}
    for got, want in [(Xm.sum(), v["X"].sum()), (Xm.sum(axis=0), v["X"].sum(axis=0)),
                      (Xm.mean(), v["X"].mean()), (Xm.mean(axis=1), v["X"].mean(axis=1)),
                      (md.mean(Xm, axis=0), v["X"].mean(axis=0))]:
        np.testing.assert_allclose(got.evaluate(v), want)
    assert str(Xm.mean()) == "1ᵀX1/(kn)"
    md.check(md.mean(md.tanh(Xm)), Xm)


def test_hessian_takes_a_layout():
    xv, Am = md.vector("x", "n"), md.matrix("A", "n", "n")
    f = xv.T @ Am @ Am.T @ xv + md.sum(md.exp(xv)) * md.sum(xv)
    rng = np.random.default_rng(3)
    v = {"x": rng.standard_normal(3), "A": rng.standard_normal((3, 3))}
    numerator = md.hessian(f, xv).evaluate(v)
    np.testing.assert_allclose(md.hessian(f, xv, layout="denominator").evaluate(v), numerator.T)
    np.testing.assert_allclose(md.hessian(f, xv, layout="vec").evaluate(v), numerator)
    md.check(f, xv, order=2)
    with pytest.raises(md.MatdiffError, match="layout"):
        md.hessian(f, xv, layout="sideways")


# --------------------------------------------------------------------------- dtypes

def _cast(backend, a, dtype):
    if backend == "torch":
        import torch
        return torch.as_tensor(a).to(getattr(torch, dtype))
    if backend == "jax":
        import jax.numpy as jnp
        return jnp.asarray(a, dtype=dtype)
    return np.asarray(a, dtype=dtype)


def _dtype_name(a) -> str:
    return str(a.dtype).replace("torch.", "")


DTYPES = [("numpy", "float32"), ("numpy", "float16"), ("numpy", "float64"), ("numpy", "int64"),
          ("jax", "float32"), ("jax", "bfloat16"), ("torch", "float32"), ("torch", "bfloat16"),
          ("torch", "float64"), ("torch", "int64")]
TOLERANCE = {"float16": 2e-2, "bfloat16": 5e-2, "float32": 1e-5, "float64": 1e-7, "int64": 1e-7}  # torch softplus: ~1e-8


@pytest.mark.parametrize("backend,dtype", DTYPES, ids=[f"{b}-{d}" for b, d in DTYPES])
def test_generated_code_follows_the_inputs_dtype(backend, dtype):
    pytest.importorskip({"numpy": "numpy", "jax": "jax", "torch": "torch"}[backend])
    rng = np.random.default_rng(4)
    Xv = rng.integers(-2, 3, (6, 3)) if dtype == "int64" else rng.standard_normal((6, 3)) / 2
    wv = rng.integers(-2, 3, 3) if dtype == "int64" else rng.standard_normal(3)
    yv = np.sign(rng.standard_normal(6))
    f = md.compile([LOSS, md.grad(LOSS, w), md.hessian(LOSS, w)], backend=backend, args=[w, X, y])
    out = f(*(_cast(backend, a, dtype) for a in (wv, Xv, yv)))
    reference = md.compile([LOSS, md.grad(LOSS, w), md.hessian(LOSS, w)], args=[w, X, y])(
        *(np.asarray(a, dtype=np.float64) for a in (wv, Xv, yv)))
    want_dtype = "float64" if dtype == "int64" else dtype
    for got, want in zip(out, reference):
        assert _dtype_name(got) == want_dtype
        np.testing.assert_allclose(np.asarray(got.float() if backend == "torch" else got, dtype=np.float64),
                                   want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float16", "int64"])
def test_evaluate_follows_the_inputs_dtype(dtype):
    rng = np.random.default_rng(5)
    v = {"X": (rng.standard_normal((6, 3)) * 2).astype(dtype), "w": rng.standard_normal(3).astype(dtype),
         "y": np.sign(rng.standard_normal(6)).astype(dtype)}
    for e in (LOSS, md.grad(LOSS, w), md.hessian(LOSS, w)):
        got = e.evaluate(v)
        assert got.dtype == (np.float64 if dtype == "int64" else np.dtype(dtype))
        want = e.evaluate({k: a.astype(np.float64) for k, a in v.items()})
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


# --------------------------------------------------------------------------- composition

def test_generated_jax_code_runs_sharded_over_four_devices_and_composes():
    """X sharded by rows over 4 host devices: no all-gather of X, results replicated and
    equal to NumPy's; the same function under jit, vmap and grad (tests/scripts/jax_sharding.py)."""
    pytest.importorskip("jax")
    import json
    import os
    from pathlib import Path
    script = Path(__file__).parent / "scripts" / "jax_sharding.py"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["devices"] == 4 and report["input_shards"] == 4
    assert report["all_gathers"] == 0 and report["all_reduces"] >= 1  # partial sums, then reduced
    assert all(report["replicated"]) and all(report["equal"])
    assert report["vmap"] and report["grad"]


def test_generated_torch_code_compiles_without_graph_breaks():
    torch = pytest.importorskip("torch")
    f = md.compile([LOSS, md.grad(LOSS, w), md.hessian(LOSS, w)], backend="torch", args=[w, X, y])
    rng = np.random.default_rng(6)
    args = (torch.tensor(rng.standard_normal(4)), torch.tensor(rng.standard_normal((30, 4))),
            torch.tensor(np.sign(rng.standard_normal(30))))
    compiled = torch.compile(f.unchecked, backend="aot_eager", fullgraph=True)  # fullgraph: no breaks
    for got, want in zip(compiled(*args), f(*args)):
        assert torch.allclose(got, want)


def test_the_help_examples_work():
    """Every example line of --help runs and answers (the --steps one printed no steps)."""
    from matdiff.cli import EXAMPLES
    rc, out, _ = _cli("a'*X*b", "--wrt", "X", "--steps")
    assert rc == 0 and "= ⟨abᵀ, dX⟩" in out
    for line in EXAMPLES.splitlines():
        line = line.strip()
        if not line.startswith("matdiff ") or "<" in line or "@" in line or " - " in line:
            continue
        import shlex
        argv = shlex.split(line.split("   ")[0])[1:]
        rc, out, err = _cli(*argv)
        assert rc == 0, (line, err)


# --------------------------------------------------------------------------- packaging

def test_the_package_is_typed_and_described():
    import tomllib
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert (root / "matdiff" / "py.typed").exists()
    assert "py.typed" in meta["tool"]["setuptools"]["package-data"]["matdiff"]
    assert any(c.startswith("Typing ::") for c in meta["project"]["classifiers"])
    torch_extra = meta["project"]["optional-dependencies"]["torch"]
    assert torch_extra and "==" not in torch_extra[0]  # a range; CI pins through constraints
    pinned = (root / ".ci" / "constraints.txt").read_text()
    assert "torch==" in pinned
    readme_test_command = (root / "README.md").read_text().split("```bash")[1].splitlines()[2]
    assert "-c .ci/constraints.txt" in readme_test_command
    assert readme_test_command.split("  #")[0].strip() in (root / ".ci" / "run").read_text()


@pytest.mark.parametrize("text,echo", [
    ("tr(A*X*B)", "tr(AXB)"), ("a'*b", "aᵀb"), ("x'*A*x + c", "xᵀAx + c"), ("det(X)*tr(X)", "det(X)tr(X)"),
    ("a*x + b", "ax + b"), ("norm2(A*x - b)^2", "‖Ax − b‖²"),
])
def test_the_input_is_echoed_as_typed(text, echo):
    assert md.parse(text).echo() == echo
    rc, out, _ = _cli(text, "--wrt", md.parse(text).variables[0].node.name)
    assert rc == 0 and out.startswith(f"f = {echo}    where")
