"""The command line: golden outputs, exit codes, and no traceback for a user mistake."""
import json
import subprocess
import sys

import pytest

from matdiff.cli import main

GOLDEN = [
    (["x'*A*x", "--wrt", "x"], 0,
     "f = xᵀAx    where A: matrix(n, n), x: vector(n)\n∂f/∂x = (A + Aᵀ)x\n", ""),
    (["x'*A*x", "--wrt", "x", "--hessian"], 0,
     "f = xᵀAx    where A: matrix(n, n), x: vector(n)\n∂²f/∂x² = A + Aᵀ\n", ""),
    (["X*W", "--wrt", "X", "--jacobian", "--layout", "vec"], 0,
     "f = XW    where W: matrix(m, k), X: matrix(n, m)\n∂f/∂X = Wᵀ ⊗ I\n", ""),
    (["norm2(X*w - y)^2", "--wrt", "w", "--latex"], 0,
     "f = \\lVert X w - y \\rVert^{2}\n\\frac{\\partial f}{\\partial w} = "
     "2 X^\\top \\left(X w - y\\right)\n", ""),
    (["x'*A*x", "--wrt", "x", "--wrt", "A"], 0,
     "f = xᵀAx    where A: matrix(n, n), x: vector(n)\n∂f/∂x = (A + Aᵀ)x\n∂f/∂A = xxᵀ\n", ""),
    (["x'*A*x", "--var", "A: matrix(d, d) symmetric", "--wrt", "x"], 0,
     "f = xᵀAx    where A: matrix(d, d) symmetric, x: vector(d)\n∂f/∂x = 2Ax\n", ""),
    (["x.T @ A @ x", "--numpy", "--wrt", "x"], 0,
     "f = xᵀAx    where A: matrix(n, n), x: vector(n)\n∂f/∂x = (A + Aᵀ)x\n", ""),
    (["lambda(sigma(X*W))", "--function", "sigma", "--scalar-function", "lambda", "--wrt", "W"], 0,
     "f = λ(σ(XW))    where W: matrix(m, k), X: matrix(n, m)\n∂f/∂W = Xᵀ(∇λ(σ(XW)) ⊙ σ′(XW))\n", ""),
    (["x'*A*x", "--var", "x: vector(n)", "--steps", "--wrt", "A"], 0,
     "f = xᵀAx    where A: matrix(n, n), x: vector(n)\nd(xᵀAx) = xᵀ dA x\n        = ⟨xxᵀ, dA⟩\n⇒ ∇_A = xxᵀ\n", ""),
    (["x'*A*"], 2, "", "matdiff: error: expected a number, a name or '(' but found the end of the input\n"
                      "  x'*A*\n       ^\n"),
    (["x*A", "--wrt", "x"], 2, "", "matdiff: error: '*' multiplies x, a column vector (n), by A, a matrix (m × k): "
                                 "the inner dims differ (transpose the vector with ')\n  x*A\n   ^\n"),
    (["x'*A*x", "--wrt", "z"], 2, "", "matdiff: error: --wrt z: z is not a variable of the expression "
                                    "(its variables: A, x)\n"),
    (["x'*A*x", "--var", "A: tensor"], 2, "", "matdiff: error: cannot read the declaration 'A: tensor'; write "
                                            "e.g. 'A: matrix(n, n) symmetric', 'x: vector(n)' or 'sigma: function'\n"),
]


@pytest.mark.parametrize("argv,code,out,err", GOLDEN, ids=[" ".join(g[0]) for g in GOLDEN])
def test_golden(argv, code, out, err, capsys):
    assert main(argv) == code
    captured = capsys.readouterr()
    assert captured.out == out
    assert captured.err == err


def test_check_reports_the_error(capsys):
    assert main(["sum(log(1 + exp(-y.*(X*w))))", "--wrt", "w", "--check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "∂f/∂w = −Xᵀ(y ⊙ σ(−(y ⊙ Xw)))"
    assert lines[2].startswith("  checked: relative error ") and float(lines[2].split()[3]) < 1e-6


def test_json(capsys):
    assert main(["x'*A*x", "--wrt", "x", "--json", "--check"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["expression"] == "xᵀAx" and data["variables"] == {"A": "matrix(n, n)", "x": "vector(n)"}
    (d,) = data["derivatives"]
    assert d["text"] == "(A + Aᵀ)x" and d["latex"] == "\\left(A + A^\\top\\right) x"
    assert d["python"] == "(A + A.T) @ x" and d["shape"] == ["n"] and d["check"] < 1e-6


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--wrt VAR" in out and "examples:" in out and "--numpy" in out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("matdiff ")


def test_module_entry_point_has_no_traceback():
    r = subprocess.run([sys.executable, "-m", "matdiff", "x'*A*", "--wrt", "x"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "^" in r.stderr


def test_a_bias_in_the_numpy_dialect_is_a_vector_over_the_rows(capsys):
    """sum(tanh(X @ W1 + b1)) by b1, as the Python API reads it, in the CLI and the page's API."""
    from matdiff import service
    assert main(["sum(tanh(X @ W1 + b1))", "--numpy", "--wrt", "b1", "--check"]) == 0
    out = capsys.readouterr().out
    assert "b1: vector(k)" in out and "∂f/∂b1 = (1 − tanh²(X W1 + 1 b1ᵀ))ᵀ1" in out and "checked" in out
    data = service.derive({"expression": "sum(tanh(X @ W1 + b1))", "wrt": ["b1"], "dialect": "numpy"})
    assert data["declarations"]["b1"] == "vector(k)" and data["results"][0]["check"]["ok"]


def test_the_cli_and_the_json_api_share_one_request_model(capsys):
    """Issue 23: the command line builds a service.Request and prints service.answer's Answer."""
    from matdiff import cli, service
    args = cli.build_parser().parse_args(["x'*A*x", "--wrt", "x", "--hessian", "--layout", "vec",
                                          "--var", "A: matrix(n, n) symmetric", "--check"])
    request = cli.request_of(args, "mc")
    assert request == service.Request("x'*A*x", declarations={"A": " matrix(n, n) symmetric"},
                                      wrt=("x",), order=2, layout="vec", check=True, format="mc",
                                      function="derivative")
    a = service.answer(request)
    assert [r.output("mc") for r in a.results] == ["2*A"] and a.results[0].check < 1e-6
    assert main(["x'*A*x", "--wrt", "x", "--hessian", "--layout", "vec", "--var",
                 "A: matrix(n, n) symmetric", "--check", "--format", "mc"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "∂²f/∂x² = 2*A"


def test_index_prints_the_index_form(capsys):
    assert main(["x*x'", "--wrt", "x", "--index"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["∂f/∂x = δ_ik x_j + δ_jk x_i",
                                                         "  index form: δ_ik x_j + δ_jk x_i"]


def test_a_declaration_of_an_unused_name_is_refused_as_the_json_api_refuses_it(capsys):
    assert main(["x'*x", "--var", "B: matrix(n, n)", "--wrt", "x"]) == 2
    assert capsys.readouterr().err == ("matdiff: error: the declarations name B, which the expression "
                                       "does not use (its variables: x)\n")


def test_steps_with_facts_print_the_result_that_uses_them(capsys):
    """The derivation shows the engine's rules, without the facts: the CLI prints the result
    (which uses them) and says why there are no steps, as the JSON API does."""
    assert main(["-sum(Y .* log(softmax(X*W)))", "--fact", "Y*vector(1) = 1", "--wrt", "W", "--steps"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == "∂f/∂W = Xᵀ(softmax(XW, axis=1) − Y)"
    assert err.startswith("matdiff: note: no steps for ∂f/∂W: steps show the engine's rules")
