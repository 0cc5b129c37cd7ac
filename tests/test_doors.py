"""Issue 23: the API, the command line and the JSON API give the same answer, and each door's
own output runs (the NumPy-dialect text in plain NumPy, --code as a module)."""
import importlib.util
import subprocess
import sys
import warnings

import numpy as np
import pytest

import matdiff as md
from matdiff import service
from matdiff.cli import main


def cli(argv, capsys):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- layouts of Hessians

@pytest.mark.parametrize("text,layout,vec", [
    ("tr(X'*X)", "vec", "column"), ("logdet(X)", "vec", "column"), ("logdet(X)", "vec", "row"),
    ("tr(X*A*X')", "denominator", "column"), ("x'*A*x", "vec", "column"),
])
def test_hessians_take_the_layout_in_every_door(text, layout, vec, capsys):
    f = md.parse(text)
    x = next(v for v in f.variables if v.node.name in ("X", "x"))
    want = md.hessian(f, x, layout=layout, vec=vec)
    name = x.node.name
    code, out, _ = cli([text, "--wrt", name, "--hessian", "--layout", layout, "--vec", vec], capsys)
    assert code == 0 and out.splitlines()[-1] == f"∂²f/∂{name}² = {want}"
    r = service.derive({"expression": text, "wrt": [name], "order": 2, "layout": layout, "vec": vec,
                        "check": False, "code": False})["results"][0]
    assert r["text"] == str(want) and r["shape"] == [str(d) for d in want.shape]
    assert md.check(f, x, order=2) < 1e-6


# --------------------------------------------------------------------------- NumPy text runs in NumPy

def _numpy_namespace():
    def softmax(v):
        e = np.exp(v - v.max())
        return e / e.sum()

    ns = {k: getattr(np, k) for k in ("outer", "diag", "exp", "log", "tanh", "sum", "trace", "kron", "dot")}
    ns.update(inv=np.linalg.inv, det=np.linalg.det, softmax=softmax)
    return ns


NUMPY_TEXT = [
    ("x'*A*x", "A", "outer(x, x)"),
    ("softmax(x)", "x", "diag(softmax(x)) - outer(softmax(x), softmax(x))"),
    ("x'*A*B*y", "A", "outer(x, y.T @ B.T)"),
    ("x'*A*B*y", "B", "outer(A.T @ x, y)"),
    ("x'*A*x", "x", None),
    ("tanh(A*x)", "x", None),
]


@pytest.mark.parametrize("text,wrt,want", NUMPY_TEXT)
def test_format_numpy_runs_in_plain_numpy_with_1d_arrays(text, wrt, want, capsys):
    """x @ x.T is a number for a 1-D x in NumPy: an outer product is written outer(x, x)."""
    f = md.parse(text)
    variables = {v.node.name: v for v in f.variables}
    d = md.jacobian(f, variables[wrt]) if f.ndim else md.grad(f, variables[wrt])
    printed = d.text("numpy")
    if want is not None:
        assert printed == want
    code, out, _ = cli([text, "--wrt", wrt, "--format", "numpy"], capsys)
    assert code == 0 and out.splitlines()[-1].split(" = ", 1)[1] == printed
    rng = np.random.default_rng(0)
    values = {n: rng.standard_normal((3,) * v.ndim) for n, v in variables.items()}
    got = eval(printed, _numpy_namespace(), dict(values))  # noqa: S307 - the test's own text
    used = {v.node.name for v in d.variables}
    np.testing.assert_allclose(got, d.evaluate({n: a for n, a in values.items() if n in used},
                                               sizes={"n": 3}), rtol=1e-12)


# --------------------------------------------------------------------------- --code

@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_code_prints_a_module_that_imports_and_runs(backend, tmp_path, capsys):
    if backend != "numpy":
        pytest.importorskip(backend)
    code, out, _ = cli(["x'*A*x + sum(tanh(A*x))", "--wrt", "x", "--wrt", "A", "--code", backend], capsys)
    assert code == 0
    path = tmp_path / "derivative_module.py"
    path.write_text(out)
    spec = importlib.util.spec_from_file_location("derivative_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(1)
    A, x = rng.standard_normal((4, 4)), rng.standard_normal(4)
    gx, gA = (np.asarray(t) for t in module.derivative(A=A, x=x))
    f = md.parse("x'*A*x + sum(tanh(A*x))")
    vs = {v.node.name: v for v in f.variables}
    np.testing.assert_allclose(gx, md.grad(f, vs["x"]).evaluate(A=A, x=x), rtol=1e-6)
    np.testing.assert_allclose(gA, md.grad(f, vs["A"]).evaluate(A=A, x=x), rtol=1e-6)


def test_every_door_takes_the_checks_of_the_code(tmp_path, capsys):
    """md.codegen's ``checks`` through each door: the command line's --no-checks and the JSON
    API's "checks" write md.codegen's module with and without the checks, and each runs: at a
    repeated largest eigenvalue the checked one refuses, the unchecked one returns a subgradient
    of unit trace (λ_max's subgradients are the convex hull of u uᵀ over the top eigenspace)."""
    text, declared = "w'*eigvalsh(S)", {"S": "matrix(n, n) symmetric", "w": "vector(n)"}
    S, w = md.matrix("S", "n", "n", symmetric=True), md.vector("w", "n")
    g = md.grad(w.T @ md.eigvalsh(S), S)
    s, wv = np.diag([1.0, 2.0, 2.0]), np.array([0.0, 0.0, 1.0])  # wᵀλ(S) = λ_max(S), tied
    for checks in (True, False):
        want = md.codegen(g, name="derivative", checks=checks)
        argv = [text, "--var", "S: matrix(n, n) symmetric", "--var", "w: vector(n)", "--wrt", "S",
                "--code", "numpy"]
        code, out, _ = cli(argv + ([] if checks else ["--no-checks"]), capsys)
        assert code == 0 and out.strip() == want.strip()
        body = {"expression": text, "declarations": declared, "wrt": ["S"],
                "check": False, "code": True, **({} if checks else {"checks": False})}
        api = service.derive(body)["code"]["numpy"]["source"]
        assert ("_checking_choices(" in api) is checks and ("_checking_choices(" in want) is checks
        path = tmp_path / f"module_{checks}.py"
        path.write_text(out)
        spec = importlib.util.spec_from_file_location(f"module_{checks}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if checks:
            with pytest.raises(Exception, match="repeated"):
                module.derivative(S=s, w=wv)
        else:
            got = np.asarray(module.derivative(S=s, w=wv))
            assert np.isclose(np.trace(got), 1.0) and np.allclose(got, got.T)
            np.testing.assert_allclose(got, md.compile(g, checks=False)(S=s, w=wv))
    code, _, err = cli([text, "--var", "S: matrix(n, n) symmetric", "--var", "w: vector(n)", "--wrt", "S",
                        "--no-checks"], capsys)
    assert code == 2 and "--no-checks leaves the runtime checks out of the code --code writes" in err


def test_code_without_wrt_says_what_to_add(capsys):
    code, out, err = cli(["x'*A*x", "--code", "numpy"], capsys)
    assert code == 2 and "--code writes the derivatives' code: add --wrt x" in err


# --------------------------------------------------------------------------- hints and notes

def test_no_wrt_prints_f_and_a_hint_on_stderr(capsys):
    code, out, err = cli(["x'*A*x"], capsys)
    assert code == 0 and out.startswith("f = xᵀAx")
    assert err == "matdiff: hint: add --wrt x to differentiate (variables: A, x)\n"


def test_a_scalar_spread_over_an_undeclared_name_is_a_note(capsys):
    code, out, err = cli(["x'*A*x + y", "--wrt", "x"], capsys)
    assert code == 0
    assert err.startswith("matdiff: note: y is read as a vector(m) by its name, so the scalar added")
    code, out, err = cli(["x'*A*x + y", "--wrt", "x", "--var", "y: vector(m)"], capsys)
    assert code == 0 and err == ""  # declared: silent
    code, out, err = cli(["x + 1", "--wrt", "x"], capsys)
    assert err == ""  # a number added to each entry is meant
    notes = service.inspect({"expression": "x'*A*x + y"})["notes"]
    assert len(notes) == 1 and notes[0].startswith("y is read as a vector(m)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        md.parse("x'*A*x + y")
    assert [w.category for w in caught] == [md.errors.ParseNote]


# --------------------------------------------------------------------------- printed text

def test_the_echo_writes_a_quotient_by_a_number():
    x = md.vector("x", "n")
    assert md.parse("exp(-x'*x/2)").echo() == "exp(−xᵀx/2)"
    assert (x.T @ x / 2).echo(latex=True) == "\\frac{x^\\top x}{2}"
    assert md.parse("x'*x/2 + a/b").echo() == "xᵀx/2 + a/b"
    assert md.parse("exp(-x'*x/2)").evaluate(x=np.ones(4)) == pytest.approx(np.exp(-2.0))


def test_latex_keywords_are_upright_and_greek_names_are_letters():
    X = md.matrix("X", "n", "k")
    assert md.softmax(X, axis=1).latex() == "\\operatorname{softmax}\\left(X, \\mathrm{axis}=1\\right)"
    Sigma, mu, x = md.matrix("Sigma", "n", "n", symmetric=True), md.vector("mu", "n"), md.vector("x", "n")
    g = md.grad((x - mu).T @ md.inv(Sigma) @ (x - mu), mu)
    assert "Σ⁻¹" in str(g) and "\\Sigma^{-1}" in g.latex() and "\\mu" in g.latex()
    assert "Σ⁻¹" in md.codegen(g)  # the code's comments write the letters too
    back = md.parse(str(g), "matdiff", Sigma="matrix(n, n) symmetric", mu="vector(n)", x="vector(n)")
    rng = np.random.default_rng(0)
    s = rng.standard_normal((3, 3))
    values = dict(Sigma=s @ s.T + np.eye(3), mu=rng.standard_normal(3), x=rng.standard_normal(3))
    np.testing.assert_allclose(back.evaluate(values), g.evaluate(values))


@pytest.mark.parametrize("index,hint", [
    ((1, 2), "md.unit('m', 1).T @ Y @ md.unit('k', 2)"),
    (1, "md.unit('m', 1).T @ Y"),
    ((slice(None), 1), "Y @ md.unit('k', 1)"),
    ((1, slice(None)), "md.unit('m', 1).T @ Y"),
])
def test_indexing_a_matrix_suggests_code_that_works(index, hint):
    Y = md.matrix("Y", "m", "k")
    with pytest.raises(md.MatdiffError) as e:
        Y[index]
    assert str(e.value).endswith(hint)
    picked = eval(hint, {"md": md, "Y": Y})  # noqa: S307 - the message's own suggestion
    y = np.arange(12.0).reshape(3, 4)
    np.testing.assert_allclose(picked.evaluate(Y=y), y[index])


def test_ascii_reads_well_and_files_take_comments(tmp_path, capsys):
    path = tmp_path / "loss.txt"
    path.write_text("# logistic loss\nsum(log(1 + exp(-y.*(X*w))))  \n")
    code, out, _ = cli([f"@{path}", "--wrt", "w", "--steps", "--ascii"], capsys)
    assert code == 0 and out.isascii()
    assert out.splitlines()[-1].startswith("=> grad_w = ")


def test_the_installed_command_prints_code():
    r = subprocess.run([sys.executable, "-m", "matdiff", "x'*A*x", "--wrt", "x", "--code", "numpy"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("import numpy as np")
    namespace: dict = {}
    exec(compile(r.stdout, "derivative.py", "exec"), namespace)  # noqa: S102 - our own output
    A, x = np.eye(3) * 2, np.arange(3.0)
    np.testing.assert_allclose(namespace["derivative"](A=A, x=x), 4 * x)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_compile_without_the_backend_says_which_extra_to_install(backend, monkeypatch):
    monkeypatch.setitem(sys.modules, backend, None)  # as if it were not installed
    x = md.vector("x", "n")
    with pytest.raises(md.NotSupportedError, match=f'pip install "matdiff\\[{backend}\\]"'):
        md.compile(md.sum(md.exp(x)), backend=backend)
