"""Never wrong, never stuck: each input gets a right answer or a clear refusal.

Regression tests for inputs that once returned a wrong value silently, hung, or ended in
a traceback; each names what it once did.
"""
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import matdiff as md


# --------------------------------------------------------------------------- silent wrong values


@pytest.mark.parametrize("build", [
    lambda a, x: 0 / md.expr.lift(0.0) * a,          # printed "f = 0"
    lambda a, x: (x - x) / (x - x),                   # evaluated to [0, 0]
    lambda a, x: md.log(x - x) * 0,
    lambda a, x: a * (1 / (x - x)).T @ (x - x),
])
def test_a_constant_division_by_zero_is_refused_not_dropped(build):
    a, x = md.scalar("a"), md.vector("x", 2)
    with pytest.raises(md.MatdiffError, match="not finite"):
        build(a, x).evaluate({"a": 1.0, "x": np.ones(2)})


def test_eight_threads_building_the_same_expression_share_nodes_and_prints():
    """Hash-consing once raced: equal variables built at once became distinct nodes."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for r in range(80):
            got, barrier = [None] * 8, threading.Barrier(8)

            def work(i, r=r):
                barrier.wait()
                X, w, y = md.matrix(f"X{r}", "n", "k"), md.vector(f"w{r}", "k"), md.vector(f"y{r}", "n")
                f = md.sum(md.log(1 + md.exp(-y * (X @ w))))
                got[i] = (X.node, f.node, str(md.grad(f, w)), str(md.hessian(f, w)))

            threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert all(g is not None for g in got)
            assert len({(id(X), id(f), g, h) for X, f, g, h in got}) == 1, f"round {r}"
    finally:
        sys.setswitchinterval(old)


@pytest.mark.parametrize("text,dialect,decls", [
    ("sqrt(sqrt(abs(x)))", "matrixcalculus", {}),       # printed |x|^∘3/4, read as (x³)/4
    ("(b + 1)x", "matdiff", {"b": "scalar", "x": "vector(n)"}),   # read as a scalar
])
def test_printed_results_read_back_to_the_same_value(text, dialect, decls):
    from matdiff.parse import declarations

    f = md.parse(text, dialect=dialect, **decls)
    x = f.variables[-1]
    rng = np.random.default_rng(0)
    for e in (f, md.grad(md.sum(f), x)):
        back = md.parse(str(e), dialect="matdiff", result_shape=e.shape, **declarations(e))
        assert back.shape == e.shape
        values = {v.node.name: rng.uniform(0.5, 2.0, size=3 if v.ndim else None) for v in e.variables}
        np.testing.assert_allclose(back.evaluate(values, sizes={"n": 3}),
                                   e.evaluate(values, sizes={"n": 3}), rtol=1e-12)


def test_compiled_functions_check_shapes_as_evaluate_does():
    A, X, w = md.matrix("A", "n", "n"), md.matrix("X", 5, 3), md.vector("w", 3)
    trace_grad = md.compile(md.grad(md.trace(A), A))
    with pytest.raises(md.ShapeError) as compiled:   # once returned a 3 × 3 identity
        trace_grad(A=np.ones((3, 4)))
    with pytest.raises(md.ShapeError) as evaluated:
        md.grad(md.trace(A), A).evaluate(A=np.ones((3, 4)))
    assert str(compiled.value) == str(evaluated.value) == "n is 3 from A but 4 from A"
    product = md.compile(X @ w)
    with pytest.raises(md.ShapeError, match=r"w is declared \(3,\) but its array has shape \(3, 1\)"):
        product(X=np.ones((5, 3)), w=np.ones((3, 1)))     # once a (5, 3) result
    with pytest.raises(md.EvaluationError, match="takes X, w"):
        product(np.ones((5, 3)))
    with pytest.raises(md.EvaluationError, match="complex"):
        product(X=np.ones((5, 3)), w=np.ones(3) * 1j)
    np.testing.assert_allclose(product(np.ones((5, 3)), np.ones(3)), 3 * np.ones(5))


@pytest.mark.parametrize("name", ["ｔ1", "t1", "np", "float", "inf", "class", "_device", "f"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_generated_code_agrees_with_evaluate_for_any_variable_name(name, backend):
    """A name that NFKC-normalises to a temporary, or shadows what the code uses, once
    computed something else than the expression."""
    if backend == "torch":
        pytest.importorskip("torch")
    v = md.vector(name, "n")
    e = md.sum(v * v) + md.exp(v).T @ v + 2.0
    fn = md.compile([e, md.grad(e, v)], backend=backend)
    x = np.arange(1.0, 4.0)
    value, grad = (np.asarray(r) for r in fn(**{name: x}))
    np.testing.assert_allclose(value, e.evaluate({name: x}), rtol=1e-12)
    np.testing.assert_allclose(grad, md.grad(e, v).evaluate({name: x}), rtol=1e-12)
    np.testing.assert_allclose(fn(x)[0], value)  # positionally too


@pytest.mark.parametrize("bad", ["f(): pass\nimport os\ndef g", "class", "np", "1f", 3])
def test_codegen_refuses_a_function_name_that_is_not_a_safe_identifier(bad):
    x = md.vector("x", "n")
    with pytest.raises(md.MatdiffError, match="codegen: name must be"):
        md.codegen(x.T @ x, name=bad)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e309, -np.inf])
def test_non_finite_constants_are_refused(value):
    with pytest.raises(md.MatdiffError, match="not a finite number"):
        md.vector("x", "n") + value


@pytest.mark.parametrize("sizes", [{"n": -1}, {"n": 2.5}, {"n": 0}, {"n": True}, [("n", 2)]])
def test_evaluate_refuses_bad_sizes(sizes):
    with pytest.raises(md.EvaluationError, match="size"):
        md.sum(md.ones("n")).evaluate(sizes=sizes)


def test_evaluate_refuses_complex_arrays_and_misshapen_user_functions():
    x = md.vector("x", "n")
    with pytest.raises(md.EvaluationError, match="complex"):
        md.sum(x).evaluate(x=np.array([1 + 2j, 2.0]))   # once dropped the imaginary part
    f = md.function("f", numpy=lambda a: a.sum())
    with pytest.raises(md.EvaluationError, match="returned shape"):
        md.sum(f(x)).evaluate(x=[1.0, 2.0])
    lam = md.scalar_function("lam", numpy=[lambda a: a.sum(), lambda a: a.sum()])
    with pytest.raises(md.EvaluationError, match="returned shape"):
        md.grad(lam(x), x).evaluate(x=[1.0, 2.0])


@pytest.mark.parametrize("result_shape,message", [
    (("n", "n"), "result_shape asks for"), ((), "result_shape asks for a scalar"),
    (5, "must be a tuple"), (("a", "b", "c"), "has 3 dims"), ((-1,), "positive int")])
def test_parse_result_shape_mistakes_are_matdiff_errors(result_shape, message):
    with pytest.raises(md.MatdiffError, match=message):
        md.parse("x", result_shape=result_shape)


# --------------------------------------------------------------------------- md.check


@pytest.mark.parametrize("seed", range(6))
def test_check_draws_well_conditioned_points(seed):
    """logdet(XᵀX) once failed with relative error 1 wherever the random X was wide."""
    f = md.parse("logdet(X'*X)")
    assert md.check(f, f.variables[0], seed=seed) < 1e-6
    g = md.parse("tr(inv(X'*W))")
    assert md.check(g, *[v for v in g.variables if v.node.name == "W"], seed=seed) < 1e-6


def test_check_steps_follow_the_function_and_ignore_unused_variables():
    x, a, b = md.vector("x", "n"), md.scalar("a"), md.scalar("b")
    assert md.check(md.sum(md.sin(1000 * x)), x) < 1e-6     # once 2e-5 on a right gradient
    assert md.check(a * x + b, x, order=2) < 1e-6            # once refused: b unused by ∂²


def test_check_says_when_it_cannot_check_apart_from_disagreeing():
    x = md.vector("x", "n")
    with pytest.raises(md.UncheckableError, match="could not check"):
        md.check(md.logdet(x @ x.T + md.outer(x, x)), x)   # rank one: singular at every point
    cube = md.function("g", derivative=lambda z: 2 * z, numpy=lambda a: a ** 3)  # wrong g′
    with pytest.raises(md.CheckError, match=r"disagrees .* \(largest at entry \(\d+,\): symbolic"):
        md.check(md.sum(cube(x)), x)
    assert not issubclass(md.UncheckableError, md.CheckError)


# --------------------------------------------------------------------------- the command line


def _cli(*argv):
    import contextlib
    import io

    from matdiff.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv,status,expected", [
    (["1e400*a"], 2, "too large for a float"),                           # was OverflowError
    (["0/0*a", "--wrt", "a"], 2, "not finite"),                          # printed f = 0
    (["a*0", "--wrt", "a", "--steps"], 0, "∇_a = 0"),                     # was IndexError
    (["tr(inv(X'*W))", "--wrt", "W", "--check"], 0, "checked"),         # was LinAlgError
    (["x'*A*x", "--wrt", "x", "--hessian", "--steps"], 2, "--steps shows"),  # was ignored
    (["a*x + b", "--wrt", "x", "--hessian", "--check"], 0, "checked"),  # refused: b unused
])
def test_command_lines_that_once_failed(argv, status, expected):
    code, out, err = _cli(*argv)
    assert code == status, err
    assert expected in (out if status == 0 else err)
    assert "Traceback" not in out + err and "internal error" not in err


@pytest.mark.parametrize("argv,status,expected", [
    (["-a"], 0, "f = −a"),                                                # "expression missing"
    (["+".join(f"x{i}" for i in range(360)), "--wrt", "x1"], 0, "∂f/∂x1 = I"),  # RecursionError
    (["x'*A*x", "--var", "A: matrix(n, n)", "--var", "A: matrix(m, m)"], 2, "declares A twice"),
    (["x\t+ \x1b[31m"], 2, "\n  x + \ufffd[31m\n      ^"),                 # tab, raw ESC
    (["+".join(["x"] * 150) + " + ) "], 2, "(at column 303)\n  …x+x+"),     # a window, not no caret
    (["A^3333"], 0, "f = A³³³³"),                                          # RecursionError
])
def test_command_line_messages(argv, status, expected):
    code, out, err = _cli(*argv)
    assert code == status, err
    assert expected in (out if status == 0 else err)
    assert "\x1b" not in err


@pytest.mark.parametrize("show", [str, repr, lambda e: e.latex(), md.codegen])
def test_printing_a_very_deep_expression_is_a_clear_error_or_a_result(show):
    x = md.vector("x", "n")
    e = x
    for _ in range(2000):
        e = md.sin(e)
    try:
        assert show(e).count("sin") >= 1
    except md.MatdiffError as err:   # once a raw RecursionError
        assert "sys.setrecursionlimit" in str(err)
    assert np.isfinite(e.evaluate(x=[0.5])).all()   # evaluation walks the DAG without recursion


def test_a_dense_result_too_large_to_build_is_refused_before_any_work():
    X = md.matrix("X", "n", "n")
    H = md.hessian(md.sum(X * X), X)
    with pytest.raises(md.EvaluationError, match=r"1,000,000,000,000 entries \(7.28 TiB\).*md.hvp"):
        H.evaluate(X=np.ones((1000, 1000)))                 # once a raw MemoryError
    with pytest.raises(md.EvaluationError, match="over the limit of 1000 bytes"):
        H.evaluate(X=np.ones((20, 20)), max_bytes=1000)
    np.testing.assert_allclose(H.evaluate(X=np.ones((2, 2))).reshape(4, 4), 2 * np.eye(4))


# --------------------------------------------------------------------------- growth


@pytest.mark.parametrize("k", [0, 1, 2, 3, 5, 8, -1, -3])
def test_matrix_power_values_derivatives_and_print(k):
    from matdiff.parse import declarations

    A = md.matrix("A", "n", "n")
    P = md.matrix_power(A, k)
    rng = np.random.default_rng(k + 10)
    a = rng.standard_normal((3, 3)) / 2 + 2 * np.eye(3)
    np.testing.assert_allclose(_at(P, a), np.linalg.matrix_power(a, k), rtol=1e-10)
    f = md.trace(P)
    if k:
        assert md.check(f, A, kinds={"A": "invertible"}) < 1e-6
        g = md.grad(f, A)   # ∂tr(Aᵏ)/∂A = k(Aᵏ⁻¹)ᵀ
        np.testing.assert_allclose(g.evaluate(A=a), k * np.linalg.matrix_power(a, k - 1).T,
                                   rtol=1e-9)
        for e in (P, g):   # A³, (Aᵀ)², (A⁻¹)² read back, as text and as Python
            back = md.parse(str(e), dialect="matdiff", result_shape=e.shape, **declarations(e))
            np.testing.assert_allclose(_at(back, a), _at(e, a), rtol=1e-10)
            rebuilt = md.expr.lift(eval(repr(e), {"md": md, "A": A}))
            np.testing.assert_allclose(_at(rebuilt, a), _at(e, a), rtol=1e-10)


def _at(e, a):
    """e's value at A = a (n = 3), where e may no longer use A (A⁰ = I)."""
    return e.evaluate({"A": a} if e.variables else {}, sizes={"n": 3})


def test_matrix_powers_are_compact_and_limited():
    from matdiff.ir import dag_size

    A = md.matrix("A", "n", "n")
    assert str(md.parse("A^400")) == "A⁴⁰⁰"
    sizes = [dag_size(md.jacobian(md.matrix_power(A, k), A).simplify().node) for k in (64, 4096)]
    assert sizes[1] < 3 * sizes[0]          # O(log k) distinct products, not O(k)
    with pytest.raises(md.MatdiffError, match="limited to 100,000"):
        md.parse("A^1000000")
    with pytest.raises(md.MatdiffError, match="must be an integer"):
        md.matrix_power(A, 2.5)
    code, out, err = _cli("A^400", "--wrt", "A")   # once 90 s and 2.9 GB
    assert code == 0 and out.startswith("f = A⁴⁰⁰")


def test_a_declared_dim_of_one_is_refused_not_replaced():
    with pytest.raises(md.ParseError, match="dim of 1"):
        md.parse("x'*A*x", x="vector(1)")       # once silently read as vector(n)
    assert md.parse("x'*A*x", x="vector(3)").variables[1].shape == (3,)


IDENTIFIERS = st.text(alphabet=st.characters(categories=("Lu", "Ll", "Lo", "Nd")), min_size=1,
                      max_size=4).filter(lambda s: s.isidentifier())


@settings(max_examples=60, deadline=None)
@given(a=IDENTIFIERS, b=IDENTIFIERS)
def test_generated_code_agrees_with_evaluate_for_any_identifier(a, b):
    import unicodedata

    if unicodedata.normalize("NFKC", a) == unicodedata.normalize("NFKC", b):
        return
    x, A = md.vector(a, "n"), md.matrix(b, "n", "n")
    e = md.sum(md.tanh(A @ x)) + x.T @ A @ x
    fn = md.compile([e, md.grad(e, x)])
    rng = np.random.default_rng(0)
    xv, Av = rng.standard_normal(3), rng.standard_normal((3, 3))
    value, grad = fn(**{a: xv, b: Av})
    np.testing.assert_allclose(value, e.evaluate({a: xv, b: Av}), rtol=1e-12)
    np.testing.assert_allclose(grad, md.grad(e, x).evaluate({a: xv, b: Av}), rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 4), cols=st.integers(1, 4), extra=st.integers(0, 1), vec=st.integers(1, 5))
def test_compiled_functions_reject_wrong_shapes_with_evaluate_s_message(rows, cols, extra, vec):
    X, w = md.matrix("X", "n", 3), md.vector("w", 3)
    e = md.sum(md.sigmoid(X @ w))
    fn = md.compile(e)
    values = {"X": np.ones((rows, cols) + (1,) * extra), "w": np.ones(vec)}
    try:
        want = e.evaluate(values)
    except md.MatdiffError as err:
        with pytest.raises(type(err)) as got:
            fn(**values)
        assert str(got.value) == str(err)
    else:
        np.testing.assert_allclose(fn(**values), want, rtol=1e-12)


def test_numeric_warnings_do_not_reach_the_command_line_s_stderr():
    import subprocess

    script = ("import sys, warnings\n"
              "from matdiff import cli\n"
              "def run(argv, out=None):\n"
              "    warnings.warn('overflow encountered in exp', RuntimeWarning)\n"
              "    return 0\n"
              "cli.run = run\n"
              "sys.exit(cli.main(['x']))\n")
    done = subprocess.run([sys.executable, "-W", "always", "-c", script], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr


@pytest.mark.parametrize("build", [lambda x: x * 1e200 * 1e200, lambda x: 1e200 * (1e200 * md.sum(x))])
def test_a_coefficient_that_overflows_is_refused(build):
    """Once printed as an OverflowError traceback and generated as a bare inf."""
    with pytest.raises(md.MatdiffError, match="overflowed"):
        md.codegen(build(md.vector("x", "n")))
    code, out, err = _cli("1e200*1e200*a", "--wrt", "a")
    assert code == 2 and "overflowed" in err


def test_names_past_the_pools_never_read_as_numbers():
    """A ninth scalar name was E8, and 2E8⁻² read back as 2·10⁸ to the power −2."""
    from matdiff.parse import declarations

    s, sigma = md.scalar("s"), md.function("sigma")
    f = sigma(md.tanh(md.sin(md.tanh(md.tanh(s) ** 2.0)) * s * (s ** 2.0 + 2) ** -1.0))
    d = md.grad(f, s)
    text = str(d)
    assert "E8" not in text
    back = md.parse(text, dialect="matdiff", **declarations(d))
    stand_in = {"sigma": [np.tanh, lambda z: 1 - np.tanh(z) ** 2]}
    np.testing.assert_allclose(back.evaluate({"s": 0.7}, stand_in), d.evaluate({"s": 0.7}, stand_in),
                               rtol=1e-12)


def test_the_inverse_of_a_matrix_that_is_zero_for_all_values_is_refused():
    S = md.matrix("S", "n", "n", symmetric=True)
    with pytest.raises(md.MatdiffError, match="simplifies to 0"):
        str(md.inv(S - S.T))
    with pytest.raises(md.MatdiffError, match="simplifies to 0"):
        md.inv(md.zeros("n", "n")).evaluate(sizes={"n": 2})


# --------------------------------------------------------------------------- issue 22, generated code and the API

def _compile_user_function(name, variable):
    import numpy as np
    g = md.function(name, numpy=np.sin)
    return md.compile(md.sum(g(md.vector(variable, "n"))))


def test_generated_code_reserves_the_names_of_users_functions():
    """md.function("ｇ") is called as _g (Python's NFKC reading), and a variable named _g
    beside a function g gets a parameter of its own."""
    import numpy as np
    x = np.array([0.1, 0.2, 0.3])
    assert _compile_user_function("ｇ", "x")(x=x) == pytest.approx(np.sin(x).sum())
    f = _compile_user_function("g", "_g")
    assert f(_g=x) == pytest.approx(np.sin(x).sum())
    assert "def f(_g_):" in f.source


RAW = [  # (call, error, words): each was a raw Python or NumPy exception
    (lambda: md.vector("x", "n") + 10 ** 400, md.MatdiffError, "too large for a float"),
    (lambda: md.sum(md.vector("x", "n")).evaluate([[1.0, 2.0]]), md.EvaluationError, "as a dict"),
    (lambda: md.sum(md.vector("x", "n")).evaluate(x=[[1, 2], [3]]), md.EvaluationError, "differ in length"),
    (lambda: md.compile(md.grad(md.trace(md.logm(md.matrix("A", "n", "n"))), md.matrix("A", "n", "n")))(
        A=[[0.0, 0.0], [0.0, 0.0]]), md.EvaluationError, "singular matrix"),
]


@pytest.mark.parametrize("call,error,words", RAW)
def test_raw_exceptions_become_matdiff_errors(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_a_singular_matrix_in_compiled_torch_code_is_an_evaluation_error():
    pytest.importorskip("torch")
    import numpy as np
    A = md.matrix("A", "n", "n")
    f = md.compile(md.grad(md.logdet(A), A), backend="torch")
    with pytest.raises(md.EvaluationError, match="singular matrix"):
        f(A=np.zeros((3, 3)))


def test_a_superscript_digit_in_a_declaration_is_refused_clearly():
    """vector(²) passed str.isdigit and then failed int(): a 500 in the JSON API."""
    from matdiff import service
    with pytest.raises(md.ParseError, match="a dim must be a name or a number"):
        md.parse("x", x="vector(²)")
    with pytest.raises(service.RequestError) as e:
        service.inspect({"expression": "x", "declarations": {"x": "vector(²)"}})
    assert e.value.status == 400


def test_a_chain_longer_than_the_recursion_limit_is_refused_with_a_caret_not_a_traceback():
    """a*a*…*a is a tree as deep as it is long: past what Python's recursion limit allows,
    md.parse says so (the command line raises the limit and reads it)."""
    long_chain = "*".join(["a"] * (sys.getrecursionlimit() + 50))
    with pytest.raises(md.ParseError, match="recursion limit") as err:
        md.parse(long_chain)
    assert str(err.value).rstrip().endswith("^")
    e = md.parse("*".join(["a"] * 200))
    assert str(e) == "a²⁰⁰" and str(md.grad(e, e.variables[0])) == "200a¹⁹⁹"


@pytest.mark.parametrize("shape", [3, "n", 2.5])
def test_a_result_shape_that_is_not_a_tuple_of_dims_is_refused_with_a_message(shape):
    with pytest.raises(md.MatdiffError, match="result_shape must be a tuple of dims"):
        md.parse("a", result_shape=shape)
    e = md.parse("x'*x", result_shape=())  # a tuple of dims is read as before
    assert e.shape == () and str(md.grad(e, e.variables[0])) == "2x"
    assert md.check(e, e.variables[0]) < 1e-6
