"""Fuzzing the command line and md.parse: mutated valid inputs in every dialect.

Each input must end in one of two ways: exit 0 with derivatives that check by finite
differences, or a clear refusal (exit 2: one message line, the text and a caret for text
that does not parse); never a traceback, an internal error, or more than 10 s.  The inputs
are drawn from a fixed seed, so a failure names its input and reproduces.
"""
import contextlib
import io
import random
import time

import pytest

import matdiff as md
from matdiff.cli import main

SEEDS = {
    "matrixcalculus": ["x'*A*x", "sum(log(1 + exp(-y.*(X*w))))", "norm2(X*w - y)^2", "tr(A*X*B)",
                       "logdet(X'*X)", "a*x + b", "sigmoid(X*w)", "inv(A)*x", "det(A)^2",
                       "exp(x)./(1 + exp(x))", "A^3", "x'*(A + A')*x", "tanh(W*x).^2",
                       "sum(softmax(x))", "norm1(x - y)", "tr(inv(X'*W))", "a*0", "-a"],
    "numpy": ["x.T @ A @ x", "sum(log(1 + exp(-y * (X @ w))))", "norm(X @ w - y)**2",
              "trace(A @ X @ B)", "logdet(X.T @ X)", "sigmoid(X @ w)", "inv(A) @ x",
              "dot(x, y) * a", "outer(x, y) @ z", "softmax(X @ W, axis=1)", "sum(X, axis=0)"],
}
ALPHABET = "xyzwAXWab12.*+-/^'() ,@T_"
INPUTS_PER_DIALECT = 2000


def _mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 3)):
        pos = rng.randint(0, len(text))
        how = rng.choice(("insert", "delete", "replace", "swap"))
        char = rng.choice(ALPHABET)
        if how == "insert":
            text = text[:pos] + char + text[pos:]
        elif how == "delete":
            text = text[:pos] + text[pos + 1:]
        elif how == "replace":
            text = text[:pos] + char + text[pos + 1:]
        elif pos + 1 < len(text):
            text = text[:pos] + text[pos + 1] + text[pos] + text[pos + 2:]
    return text


def _inputs(dialect: str):
    rng = random.Random(f"fuzz-{dialect}")
    seeds = SEEDS[dialect]
    out = list(seeds)
    while len(out) < INPUTS_PER_DIALECT:
        out.append(_mutate(rng.choice(seeds), rng))
    return out


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - start


@pytest.mark.parametrize("dialect", sorted(SEEDS))
def test_the_command_line_answers_or_refuses_every_mutated_input(dialect):
    flags = ["--numpy"] if dialect == "numpy" else []
    outcomes = {0: 0, 2: 0}
    for k, text in enumerate(_inputs(dialect)):
        if not text.strip() or text.startswith(("-", "@")) and text not in SEEDS[dialect]:
            continue  # an argument starting with - is an option to argparse's eyes, @ a file
        code, out, err, seconds = _run([text] + flags)
        assert seconds < 10, text
        assert code in (0, 2), (text, err)
        assert "Traceback" not in out + err and "internal error" not in err, (text, err)
        outcomes[code] += 1
        if code == 2:
            assert err.startswith("matdiff: error: "), (text, err)
            try:
                md.parse(text, dialect=dialect)
            except md.ParseError as e:   # text that does not parse: a caret under a column
                if e.column is not None:
                    assert err.rstrip().endswith("^"), (text, err)
            except md.MatdiffError:
                pass
            continue
        f = md.parse(text, dialect=dialect)
        if k % 3 or not f.variables or f.ndim:  # every third answer is checked numerically
            continue
        x = f.variables[0].node.name
        code, out, err, seconds = _run([text, "--wrt", x, "--check"] + flags)
        assert seconds < 10, text
        assert code in (0, 2) and "internal error" not in err, (text, err)
        if code == 0:
            assert "checked: relative error" in out, (text, out)
            _reads_back(md.grad(f, f.variables[0]))
        else:   # a refusal may only say it could not check, never that it disagrees
            assert "disagrees" not in err, (text, err)
    assert outcomes[0] > 100 and outcomes[2] > 100, outcomes  # the fuzzer reaches both


def _reads_back(d):
    """The printed derivative, read by the matdiff dialect, has the derivative's value."""
    import numpy as np

    from matdiff.parse import declarations

    text = str(d)
    if "Σ" in text or "[" in text:
        return  # index notation is for reading only
    try:
        back = md.parse(text, dialect="matdiff", result_shape=d.shape, **declarations(d))
    except md.MatdiffError as e:  # only where the text leaves a constant's size open
        assert "not fixed" in str(e) or "size of every constant" in str(e), (text, e)
        return
    rng = np.random.default_rng(0)
    sizes = {"n": 3, "m": 3, "k": 3}  # square, so that XᵀX and the like are invertible
    values = {}
    for v in d.variables:
        shape = tuple(sizes.get(x, 3) if isinstance(x, str) else x for x in v.shape)
        a = rng.uniform(0.5, 1.5, shape)
        values[v.node.name] = a + 3 * np.eye(3) if a.shape == (3, 3) else a
    used = {v.node.name for v in back.variables}
    try:
        want = d.evaluate(values, sizes=sizes)
    except md.MatdiffError:
        return
    got = back.evaluate({k: a for k, a in values.items() if k in used}, sizes=sizes)
    np.testing.assert_allclose(np.reshape(got, np.shape(want)), want, rtol=1e-8, atol=1e-10,
                               err_msg=text)


PRINTED_ALPHABET = "XWxyASσλ∇′ᵀ⁻¹⊙⊘⊗·√|()12/−+ ^∘,=²eₙ₁UΛΔ‖_*₂"
PRINTED_DECLS = dict(X="matrix(n, k)", W="matrix(k, m)", x="vector(n)", y="vector(n)",
                     A="matrix(n, n)", S="matrix(n, n) symmetric", sigma="function",
                     **{"lambda": "scalar_function"})
PRINTED_SEEDS = ["Xᵀ(∇λ(σ(XW)) ⊙ σ′(XW))", "diag(s) − ssᵀ  where s = softmax(x)", "(A + Aᵀ)x",
                 "−A⁻ᵀxyᵀA⁻ᵀ", "|x|^∘(3/4) ⊘ x", "2Xᵀ(XW − 1·1ᵀ)", "tr(A²)I", "(1/2)√(xᵀx)",
                 # printed spectral results: some read back, the decomposition's parts are display only
                 "eₙᵀeigvalsh(S)", "uₙuₙᵀ  where S = UΛUᵀ", "U(UᵀxxᵀU ⊙ Δexp(λ))Uᵀ  where S = UΛUᵀ",
                 "‖A‖_* + ‖A‖₂", "L_sqrt(Aᵀ, xyᵀ)", "expm(A)ᵀ + logm(S)⁻¹", "Se₁ + xᵀe_(n−1)x"]


def test_md_parse_answers_or_refuses_every_mutated_printed_input():
    rng = random.Random("fuzz-matdiff")
    for k in range(INPUTS_PER_DIALECT):
        text = PRINTED_SEEDS[k] if k < len(PRINTED_SEEDS) else \
            _mutate_printed(rng.choice(PRINTED_SEEDS), rng)
        start = time.perf_counter()
        try:
            md.parse(text, dialect="matdiff", **PRINTED_DECLS)
        except md.ParseError as e:
            if e.column is not None and text.strip():
                assert str(e).rstrip().endswith("^"), text
        except md.MatdiffError:
            pass
        assert time.perf_counter() - start < 10, text


def _mutate_printed(text, rng):
    for _ in range(rng.randint(1, 3)):
        pos = rng.randint(0, len(text))
        text = rng.choice([text[:pos] + rng.choice(PRINTED_ALPHABET) + text[pos:],
                           text[:pos] + text[pos + 1:]])
    return text
