"""Declared facts (issue 20, item 3): equalities the user knows, applied as rewrite rules to
derivatives, in the API, both text dialects, the command line and the JSON API.

Every result is checked numerically at points where its facts hold (md.check moves random
values there), and each fact is shown to matter: the rewritten derivative equals the plain
one where the facts hold and differs where they do not."""
import json
import subprocess
import sys

import numpy as np
import pytest

import matdiff as md
from matdiff import facts as FA
from matdiff.cli import main

X, W, Y = md.matrix("X", "m", "n"), md.matrix("W", "n", "k"), md.matrix("Y", "m", "k")
w, y = md.vector("w", "n"), md.vector("y", "m")
Q, b, A = md.matrix("Q", "m", "n"), md.vector("b", "m"), md.matrix("A", "n", "n")
ROWS = md.fact(Y @ md.ones("k"), 1)              # each row of Y sums to 1
SOFTMAX_CE = -md.sum(Y * md.log(md.softmax(X @ W, axis=1)))

# (name, f, variable, facts, golden gradient, golden Hessian or None)
CASES = [
    ("softmax CE, rows of Y sum to 1", SOFTMAX_CE, W, [ROWS],
     "Xᵀ(softmax(XW, axis=1) − Y)",
     "Σ_p δ_jl X_pi softmax(XW, axis=1)_pj X_pk − Σ_p X_pi softmax(XW, axis=1)_pj X_pk "
     "softmax(XW, axis=1)_pl"),
    ("softmax CE by the inputs", SOFTMAX_CE, X, [ROWS], "(softmax(XW, axis=1) − Y)Wᵀ", None),
    ("logistic loss, labels ±1", md.sum(md.softplus(-y * (X @ w))), w, [md.fact(y * y, 1)],
     "−Xᵀ(y ⊙ σ(−(y ⊙ Xw)))", "Xᵀdiag(σ(y ⊙ Xw) ⊙ (1 − σ(y ⊙ Xw)))X"),
    ("labels in {0, 1}", md.sum(y * y * md.sigmoid(X @ w)), w, [md.fact(y * y, y)],
     "Xᵀ(y ⊙ σ(Xw) ⊙ (1 − σ(Xw)))", None),
    ("weights on the simplex", md.sum(w) * md.sum(md.exp(w)), w, [md.fact(md.sum(w), 1)],
     "(1ᵀexp(w))1 + exp(w)", None),
    ("orthonormal columns", md.norm(Q @ w - b) ** 2, w, [md.fact(Q.T @ Q, md.eye("n"))],
     "2(w − Qᵀb)", "2I"),
    ("a quadratic form on the sphere", (w.T @ w) * (w.T @ A @ w), w, [md.fact(w.T @ w, 1)],
     "2(wᵀAw)w + (A + Aᵀ)w", None),
]


@pytest.mark.parametrize("name,f,x,facts,gradient,hessian", CASES, ids=[c[0] for c in CASES])
def test_facts_shorten_derivatives_that_still_check(name, f, x, facts, gradient, hessian):
    assert str(md.grad(f, x, facts=facts)) == gradient
    if hessian is not None:
        assert str(md.hessian(f, x, facts=facts)) == hessian
    assert md.check(f, x, facts=facts, order=2 if hessian else 1, sizes={"m": 5, "n": 3, "k": 3}) < 1e-6


@pytest.mark.parametrize("name,f,x,facts,gradient,hessian", CASES, ids=[c[0] for c in CASES])
def test_each_fact_matters_and_holds_where_md_check_samples(name, f, x, facts, gradient, hessian):
    """The rewritten derivative (the Hessian where the case has one) equals the plain one
    exactly where the facts hold: at random values it differs, so a check that ignored the
    facts would fail."""
    derive = md.hessian if hessian is not None else md.grad
    plain, given = derive(f, x), derive(f, x, facts=facts)
    assert str(plain) != str(given)
    rng = np.random.default_rng(3)
    sizes = {"m": 5, "n": 3, "k": 3}
    names = {v.node.name: v.node for v in f.variables}
    for fa in facts:
        names.update({v.name: v for v in fa.variables})
    values = {n: rng.standard_normal(tuple(sizes[d] for d in v.shape)) for n, v in names.items()}
    values = {n: (a + a.T) / 2 if names[n].symmetric else a for n, a in values.items()}
    assert not np.allclose(plain.evaluate(values), given.evaluate(values))
    from matdiff.check import _on_facts
    on = _on_facts(facts, values, sizes, {})
    for fa in facts:  # the sampled point satisfies each fact …
        lhs, rhs = md.Expr(fa.lhs), md.Expr(fa.rhs)
        used = lambda e: {k: v for k, v in on.items() if k in {u.node.name for u in e.variables}}  # noqa: E731
        np.testing.assert_allclose(lhs.evaluate(used(lhs), sizes=sizes), rhs.evaluate(used(rhs), sizes=sizes),
                                   atol=1e-10)
    # … and there the two derivatives agree
    np.testing.assert_allclose(plain.evaluate(on), given.evaluate(on), rtol=1e-9, atol=1e-10)


def test_a_fact_is_not_applied_where_its_summed_axis_is_used_elsewhere():
    """Y_pq summed over q is (Y1)_p only where q appears in no other factor: in tr(YᵀY) it
    does, and nothing is rewritten."""
    f = md.trace(Y.T @ Y @ W.T @ W)
    assert str(md.grad(f, W, facts=[ROWS])) == str(md.grad(f, W))


def test_facts_reach_second_derivatives_and_generated_code():
    H = md.hessian(SOFTMAX_CE, W, facts=[ROWS])
    assert "Y" not in str(H)
    g = md.grad(SOFTMAX_CE, W, facts=[ROWS])
    fn = md.compile(g)
    rng = np.random.default_rng(0)
    Xv, Wv = rng.standard_normal((6, 4)), rng.standard_normal((4, 3))
    Yv = np.eye(3)[rng.integers(0, 3, 6)]  # one-hot labels
    np.testing.assert_allclose(fn(W=Wv, X=Xv, Y=Yv), g.evaluate(W=Wv, X=Xv, Y=Yv), rtol=1e-12)
    plain = md.grad(SOFTMAX_CE, W).evaluate(W=Wv, X=Xv, Y=Yv)
    np.testing.assert_allclose(g.evaluate(W=Wv, X=Xv, Y=Yv), plain, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- bad facts

BAD = [
    (lambda: md.fact(y, md.vector("y", "n")), md.ShapeError, "one shape"),
    (lambda: md.fact(md.sum(y), md.sum(md.vector("y", "n"))), md.ShapeError, "two different variables"),
    (lambda: md.fact(md.ones("n"), 1), md.MatdiffError, "has no variable"),
    (lambda: md.fact(y, y), md.MatdiffError, "holds for any values"),
    (lambda: md.fact(Y @ md.ones("k"), md.ones("k")), md.ShapeError, "both sides of a fact need one shape"),
    (lambda: md.grad(md.sum(y), y, facts=["y = 1"]), md.MatdiffError, "made with md.fact"),
    (lambda: md.grad(md.sum(y), y, facts=[md.fact(md.vector("y", "n"), 0)]), md.ShapeError,
     "two different variables"),
]


@pytest.mark.parametrize("call,error,words", BAD)
def test_bad_facts_are_refused_with_a_reason(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_facts_that_cannot_hold_together_are_reported_by_check():
    z = md.vector("z", "n")
    facts = [md.fact(z.T @ z, 1), md.fact(z.T @ z, 2)]
    with pytest.raises(md.MatdiffError, match="could not find values"):
        md.check(md.sum(md.exp(z)), z, facts=facts)


def test_satisfy_projects_onto_each_kind_of_fact():
    rng = np.random.default_rng(1)
    sizes = {"m": 4, "n": 3, "k": 3}
    for fact, check in [
        (ROWS, lambda v: np.allclose(v["Y"].sum(axis=1), 1)),
        (md.fact(y * y, y), lambda v: np.allclose(v["y"] * (1 - v["y"]), 0, atol=1e-9)),
        (md.fact(Q.T @ Q, md.eye("n")), lambda v: np.allclose(v["Q"].T @ v["Q"], np.eye(3))),
    ]:
        values = {v.name: rng.standard_normal(tuple(sizes[d] for d in v.shape)) for v in fact.variables}
        from matdiff.check import _on_facts
        assert check(_on_facts([fact], values, sizes, {}))


def test_rewriting_stops_where_a_fact_would_grow_forever():
    """sum(w) = 2 sum(w) rewrites its own right side; the passes are bounded."""
    g = md.grad(md.sum(w) ** 2, w, facts=[md.fact(md.sum(w), 2 * md.sum(w))])
    assert FA.MAX_PASSES < 20 and "1ᵀw" in str(g)


# --------------------------------------------------------------------------- text

PARSED = [
    ("Y*vector(1) = 1", "matrixcalculus", {"Y": "matrix(m, k)"}, "Y1 = 1"),
    ("sum(Y, axis=1) = 1", "numpy", {"Y": "matrix(m, k)"}, "Y1 = 1"),
    ("y.*y = y", "matrixcalculus", {}, "y^∘2 = y"),
    ("y * y = y", "numpy", {}, "y^∘2 = y"),
    ("X'*X = I", "matrixcalculus", {"X": "matrix(n, k)"}, "XᵀX = I"),
    ("X.T @ X = I", "numpy", {"X": "matrix(n, k)"}, "XᵀX = I"),
    ("sum(w) = 1", "matrixcalculus", {}, "1ᵀw = 1"),
]


@pytest.mark.parametrize("text,dialect,decls,shown", PARSED)
def test_facts_read_in_both_dialects(text, dialect, decls, shown):
    assert md.parse_fact(text, dialect, **decls).text == shown


PARSE_ERRORS = [
    ("Y*vector(1)", "matrixcalculus", "one '='", None),
    ("sum(Y, axis=1)", "numpy", "sum\\(Y, axis=1\\) = 1", None),
    ("Y*vector(1) = ", "matrixcalculus", "empty", 14),
    ("Y*vector(1) = 1 = 2", "matrixcalculus", "one '='", 16),
    ("x = A", "matrixcalculus", "one shape", 4),
    ("x = )", "matrixcalculus", "found '\\)'", 4),
]


@pytest.mark.parametrize("text,dialect,words,column", PARSE_ERRORS)
def test_unreadable_facts_point_at_the_column(text, dialect, words, column):
    with pytest.raises(md.ParseError, match=words) as e:
        md.parse_fact(text, dialect)
    assert e.value.column == column
    if column is not None:
        assert str(e.value).splitlines()[-1] == " " * (column + 2) + "^"


def run_cli(*argv, capsys):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_line_takes_facts_with_fact_and_var(capsys):
    expr = "-sum(Y .* log(softmax(X*W)))"
    code, out, _ = run_cli(expr, "--fact", "Y*vector(1) = 1", "--wrt", "W", "--check", capsys=capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == "given Y1 = 1"
    assert lines[2] == "∂f/∂W = Xᵀ(softmax(XW, axis=1) − Y)"
    assert "checked" in lines[3]
    code, out2, _ = run_cli(expr, "--var", "Y*vector(1) = 1", "--wrt", "W", "--check", capsys=capsys)
    assert code == 0 and out2.splitlines()[2] == lines[2]
    code, out, _ = run_cli("-sum(Y * log(softmax(X @ W, axis=1)))", "--numpy", "--fact",
                           "sum(Y, axis=1) = 1", "--wrt", "W", "--json", capsys=capsys)
    data = json.loads(out)
    assert data["facts"] == ["Y1 = 1"] and data["derivatives"][0]["text"] == lines[2].split(" = ")[1]


def test_a_bad_fact_on_the_command_line_is_one_line_with_a_caret(capsys):
    code, out, err = run_cli("x'*x", "--fact", "x = A", "--wrt", "x", capsys=capsys)
    assert code == 2 and out == ""
    assert err.splitlines() == ["matdiff: error: --fact: the two sides of a fact need one shape, but "
                                "the left is a column vector (n,) and the right (n, m)",
                                "  x = A", "      ^"]


def test_the_installed_command_reads_a_fact():
    r = subprocess.run([sys.executable, "-m", "matdiff", "sum(log(1 + exp(-y.*(X*w))))", "--fact",
                        "y.*y = vector(1)", "--wrt", "w", "--hessian"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "∂²f/∂w² = Xᵀdiag(σ(y ⊙ Xw) ⊙ (1 − σ(y ⊙ Xw)))X"


def test_the_json_api_takes_facts_and_names_a_bad_one():
    from matdiff import service
    r = service.derive({"expression": "-sum(Y .* log(softmax(X*W)))", "wrt": ["W"],
                        "facts": ["Y*vector(1) = 1"], "code": False})
    assert r["facts"] == ["Y1 = 1"]
    assert r["results"][0]["text"] == "Xᵀ(softmax(XW, axis=1) − Y)"
    assert r["results"][0]["check"]["ok"] is True
    with pytest.raises(service.RequestError) as e:
        service.inspect({"expression": "x'*x", "facts": ["x'*x = 1", "x = A"]})
    assert e.value.status == 400 and e.value.body["fact"] == 1 and e.value.body["column"] == 4
    with pytest.raises(service.RequestError) as e:
        service.inspect({"expression": "x'*x", "facts": "x'*x = 1"})
    assert e.value.status == 400
