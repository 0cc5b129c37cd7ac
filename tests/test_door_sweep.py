"""A seeded random sweep across the doors: random expressions of test_value_oracle's grammar
(each with a NumPy mirror), written as input text in each input dialect (matrixcalculus,
numpy; the matdiff dialect, which only the library reads, is refused by the others with a
caret), derived through the library, the command line (``cli.main``, in-process) and the JSON
API (``service.derive``) with random options (dialect, wrt of one or two variables, order,
layout, vec, format, index, check, steps, declarations: symmetric, spd, positive), and
compared:

1. every door prints what the library's md.jacobian / md.hessian / md.derivation print, and
   each printed result (matdiff's text, the mc or numpy dialect) reads back to the
   derivative's value, which matches central differences of the NumPy mirror; matdiff's own
   text given to a door is read as the library reads it in the matrixcalculus dialect, or
   refused alike;
2. every option of the library's entry points is a flag of the command line and a field of
   the JSON API, or is left to the door; an option a door would drop (an unknown JSON field,
   --vec without --layout vec, --json with --code, a fact about a variable the expression
   does not use) is refused with a message;
3. random corruptions of valid input (a character deleted or doubled, an unknown function, a
   size mismatch) are refused by every door alike: a message with a caret, status 2 or a 4xx,
   never a traceback."""
from __future__ import annotations

import contextlib
import inspect
import io
import json
import random
import re
import warnings

import numpy as np
import pytest

import matdiff as md
from matdiff import service
from matdiff.cli import build_parser, main
from matdiff.parse import declarations
from tests import test_value_oracle as oracle

MC, NP = "matrixcalculus", "numpy"
READER = {"text": "matdiff", "mc": MC, "numpy": NP}
VALUES, SIZES = oracle.VALUES, oracle.SIZES


def cli(argv) -> tuple:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def api(body) -> tuple:
    """The JSON API's answer, or its error status and body (never another exception)."""
    try:
        return 200, json.loads(json.dumps(service.derive(json.loads(json.dumps(body)))))
    except service.RequestError as e:
        return e.status, e.body


def label(name: str, order: int, fmt: str) -> str:
    if fmt == "latex":
        return ("\\frac{\\partial^2 f}{\\partial " + name + "^2}" if order == 2
                else "\\frac{\\partial f}{\\partial " + name + "}")
    return f"∂²f/∂{name}²" if order == 2 else f"∂f/∂{name}"


# --------------------------------------------------------------------------- numbers

def _strong_point() -> dict:
    """A point where the stronger declarations hold: S positive definite, s and t positive."""
    out = dict(VALUES)
    out["S"] = VALUES["S"] @ VALUES["S"].T + np.eye(oracle.N_)
    out["s"], out["t"] = abs(VALUES["s"]) + 0.5, abs(VALUES["t"]) + 0.5
    return out


STRONG = {"matrix(n, n) symmetric": "matrix(n, n) spd", "scalar": "scalar positive"}
STRONG_VALUES = _strong_point()


def _value(e, env=VALUES) -> np.ndarray:
    names = {v.node.name for v in e.variables}
    return np.asarray(e.evaluate({k: v for k, v in env.items() if k in names}, sizes=SIZES), dtype=float)


def _numeric_jacobian(fun, name: str, env=VALUES) -> np.ndarray:
    """∂fun/∂name by central differences, shape fun's + the variable's (numerator layout); for
    the symmetric S, entries (i, j) and (j, i) move together and the off-diagonal is halved, so
    a gradient's symmetric part is read."""
    base, h = env[name], 1e-6
    out = None
    for idx in np.ndindex(*np.shape(base)):
        d = np.zeros_like(base, dtype=float)
        d[idx] = h
        if name == "S":
            d[idx[::-1]] = h
        plus, minus = dict(env), dict(env)
        plus[name], minus[name] = base + d, base - d
        col = (np.asarray(fun(plus), dtype=float) - np.asarray(fun(minus), dtype=float)) / (2 * h)
        if out is None:
            out = np.zeros(col.shape + np.shape(base))
        out[(...,) + idx] = col / (2 if name == "S" and idx[0] != idx[1] else 1)
    return out


def _laid_out(j: np.ndarray, p: int, layout: str, vec: str) -> np.ndarray:
    """A numerator-layout Jacobian (p axes of f first) in ``layout``, as docs/conventions.md
    defines them."""
    q = j.ndim - p
    if layout == "denominator":
        return j.transpose(tuple(range(p, p + q)) + tuple(range(p)))
    if layout == "vec":
        rows, cols = int(np.prod(j.shape[:p])), int(np.prod(j.shape[p:]))
        if vec == "column":
            j = j.transpose(tuple(reversed(range(p))) + tuple(reversed(range(p, p + q))))
        return j.reshape(rows, cols)
    return j


def _close(got, want, what: str, rtol: float = 1e-5) -> None:
    want = np.asarray(want, dtype=float)
    got = np.asarray(got, dtype=float)
    assert got.size == want.size, (what, got.shape, want.shape)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=rtol,
                               atol=rtol * max(1.0, float(np.max(np.abs(want), initial=0.0))), err_msg=what)


CONSTANT_TEXT = re.compile(r"vector\(|matrix\(|eye\(|ones|zeros|(?<![\d.])[01](?![\d.])|I(?![A-Za-z_])|e[₀-₉]")


def _read_back(text: str, fmt: str, d, env=VALUES) -> np.ndarray | None:
    """A printed result read back in its dialect and evaluated; None where the reader refuses
    it for a constant whose size the text does not fix (refused, never misread), or the text
    is for reading only (index notation: a tensor of more than two axes, where-clauses)."""
    if d.ndim > 2 or fmt == "text" and ("[" in text or "Σ" in text or "where" in text or "L_" in text):
        return None
    decls = {k: v for k, v in declarations(d).items() if v != "dim"}
    simple = all(isinstance(s, int) or re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*", str(s)) for s in d.shape)  # not k·n
    try:
        back = md.parse(text, dialect=READER[fmt], result_shape=d.shape if simple else None, **decls)
    except md.MatdiffError as err:
        assert CONSTANT_TEXT.search(text), (fmt, text, err)
        return None
    return _value(back, env)


# --------------------------------------------------------------------------- the sweep

# Fixed: layout="vec" of a derivative whose f or variable is a scalar printed a reshape in index
# notation that no dialect could write (library._layout now leaves it as it is: a gradient has
# its variable's shape), and no reader knew the vec(…) that every notation writes for a
# vec-layout Jacobian with element-wise factors.


@oracle.functools.cache
def _cases() -> list:
    """Seeded requests: (pair, dialect, text, wrt, order, layout, vec, format, index, check,
    strong: declare S spd and s, t positive, steps)."""
    out = []
    for i, p in enumerate(oracle._pairs()):
        r = random.Random(7000 + i)
        dialect = r.choice([MC, NP])
        names = {v.node.name for v in p.e.variables}
        if not names or (p.e.ndim and r.random() < 0.5) or r.random() < 0.1:
            continue
        try:
            text = p.e.text(dialect)
        except md.NotSupportedError:
            continue
        order = 2 if p.e.ndim == 0 and r.random() < 0.3 else 1
        out.append((p, dialect, text, r.sample(sorted(names), min(len(names), r.choice([1, 1, 2]))), order,
                    r.choice(["numerator", "numerator", "denominator", "vec"]), r.choice(["column", "row"]),
                    r.choice(["text", "text", "latex", "mc", "numpy"]),
                    r.random() < 0.2, r.random() < 0.1, r.random() < 0.3, r.random() < 0.2))
    return out


def test_the_sweep_draws_every_option():
    cases = _cases()
    assert len(cases) >= 60
    for k, values in ((1, {MC, NP}), (5, {"numerator", "denominator", "vec"}), (4, {1, 2}),
                      (7, {"text", "latex", "mc", "numpy"})):
        assert {c[k] for c in cases} == values
    assert any(len(c[3]) == 2 for c in cases) and any(c[8] for c in cases) and any(c[9] for c in cases)


def _argv(text, dialect, decls, wrt, order, layout, vec, fmt, index, check) -> list:
    argv = [text, "--format", fmt, "--layout", layout] + (["--vec", vec] if layout == "vec" else [])
    argv += ["--numpy"] if dialect == NP else []
    for name in wrt:
        argv += ["--wrt", name]
    argv += (["--hessian"] if order == 2 else []) + (["--index"] if index else []) + (["--check"] if check else [])
    for name, decl in decls.items():
        argv += ["--var", f"{name}: {decl}"]
    return argv


def _sweep(chunk: int, chunks: int) -> list:
    """Door disagreements of the chunk's cases, as messages."""
    faults, counts = [], {"refused": 0, "values": 0, "printed": 0, "read back": 0, "strong": 0, "steps": 0}
    for p, dialect, text, wrt, order, layout, vec, fmt, index, check, strong, steps in _cases()[chunk::chunks]:
        decls = {k: v for k, v in declarations(p.e).items() if v != "dim"}
        try:
            f = md.parse(text, dialect, **decls)
        except md.ParseError as e:  # a constant whose size the dialect's text leaves open
            assert CONSTANT_TEXT.search(text) and "is not fixed by its use" in e.message, (text, e)
            code, _, err = cli([text] + (["--numpy"] if dialect == NP else []) + [
                a for n in decls if re.search(rf"\b{n}\b", text) for a in ("--var", f"{n}: {decls[n]}")])
            status, body = api({"expression": text, "dialect": dialect, "check": False, "code": False,
                                "declarations": {n: d for n, d in decls.items() if re.search(rf"\b{n}\b", text)}})
            if code != 2 or e.message not in err or (status, body.get("column")) != (400, e.column):
                faults.append(f"{text!r} ({dialect}): the library refuses it ({e.message}); CLI {code} {err!r}, "
                              f"API {status} {body}")
            counts["refused"] += 1
            continue
        _close(_value(f), p.f(VALUES), f"the value of {text!r} ({dialect})", rtol=1e-9)
        names = {v.node.name: v for v in f.variables}
        wrt = [n for n in wrt if n in names] or sorted(names)[:1]
        if not wrt:
            continue
        decls = {n: declarations(v)[n] for n, v in names.items()}
        _matdiff_text_at_the_doors(str(f), decls, wrt[0], faults)
        env = VALUES
        if strong and set(decls.values()) & set(STRONG):  # spd, positive: derivatives may use them
            decls, env = {n: STRONG.get(d, d) for n, d in decls.items()}, STRONG_VALUES
            f = md.parse(text, dialect, **decls)
            names = {v.node.name: v for v in f.variables}
            counts["strong"] += 1
        where = f"{text!r} ({dialect}) by {wrt}, order {order}, {layout}/{vec}, {fmt}, {decls}"
        want = {}
        for n in wrt:
            derive = md.hessian if order == 2 else md.jacobian
            want[n] = derive(f, names[n], layout=layout, vec=vec)
        # 1. each derivative's value against the NumPy mirror (a symmetric S by its symmetric part)
        for n, d in want.items():
            got = _value(d, env)
            if n == "S" and order == 1 and f.ndim == 0:
                got = (got + got.T) / 2  # the symmetric gradient, whichever convention
                want_value = _numeric_jacobian(p.f, "S", env)
            elif n == "S":
                continue  # a Jacobian by a symmetric matrix has no entry-wise mirror
            elif order == 1:
                want_value = _laid_out(_numeric_jacobian(p.f, n, env), f.ndim, layout, vec)
            else:
                g = md.grad(f, names[n])
                want_value = _laid_out(_numeric_jacobian(lambda e, g=g: _value(g, e), n, env),
                                       names[n].ndim, layout, vec)
            _close(got, want_value, f"{where}: ∂/∂{n} = {d}")
            counts["values"] += 1
        written = {}
        for n, d in want.items():
            try:
                written[n] = service.written(d, fmt)
            except md.NotSupportedError as e:
                written[n] = e
        # 2. the command line
        code, out, err = cli(_argv(text, dialect, decls, wrt, order, layout, vec, fmt, index, check))
        refusal = next((e for e in written.values() if isinstance(e, Exception)), None)
        if refusal is not None:
            if code != 2 or str(refusal) not in err:
                faults.append(f"CLI, {where}: exit {code}, {err!r}; want the refusal {refusal}")
        elif code != 0:
            faults.append(f"CLI, {where}: exit {code}, {err!r}")
        else:
            for n, w in written.items():
                counts["printed"] += 1
                if f"{label(n, order, fmt)} = {w}" not in out.splitlines():
                    faults.append(f"CLI, {where}: printed {out!r}; want {label(n, order, fmt)} = {w}")
                if index and f"index form: {want[n].index()}" not in out:
                    faults.append(f"CLI, {where}: no index form in {out!r}")
            if check and fmt != "latex" and out.count("  checked: relative error") != len(wrt):
                faults.append(f"CLI, {where}: the check is missing: {out!r}")
        # 3. the JSON API
        status, data = api({"expression": text, "dialect": dialect, "wrt": wrt, "order": order, "layout": layout,
                            "vec": vec, "format": fmt, "index": index, "check": check, "code": False,
                            "declarations": decls})
        if status != 200:
            faults.append(f"API, {where}: {status} {data}")
            continue
        for r in data["results"]:
            d, w = want[r["wrt"]], written[r["wrt"]]
            if (r["text"], r["latex"], r["shape"]) != (str(d), d.latex(), [str(s) for s in d.shape]):
                faults.append(f"API, {where}: {r}; want {d}")
            if fmt != "text" and r["output"] != (None if isinstance(w, Exception) else w):
                faults.append(f"API, {where}: output {r['output']!r}; want {w!r}")
            if index and r["index"]["text"] != d.index():
                faults.append(f"API, {where}: index {r['index']}")
            if check and not (r["check"]["ok"] or r["check"]["ok"] is None):
                faults.append(f"API, {where}: check {r['check']}")
        if steps:
            _steps_at_the_doors(f, text, dialect, decls, names[wrt[0]], order, faults)
            counts["steps"] += 1
        # 4. each printed result reads back to the derivative's value
        for n, d in want.items():
            for how in {"text", fmt} - {"latex"}:
                shown = str(d) if how == "text" else written[n]
                if isinstance(shown, Exception):
                    continue
                back = _read_back(shown, how, d, env)
                if back is not None:
                    _close(back, _value(d, env), f"{where}: {shown!r} read back ({how})", rtol=1e-9)
                    counts["read back"] += 1
    return faults, counts


def _steps_at_the_doors(f, text, dialect, decls, x, order, faults) -> None:
    """--steps and "steps": md.derivation's steps for a gradient in both doors; for a Jacobian
    or a Hessian, the command line refuses --steps and the API says why there are none."""
    name = x.node.name
    argv = [text, "--wrt", name, "--steps"] + (["--numpy"] if dialect == NP else []) + (
        ["--hessian"] if order == 2 else []) + [a for n, d in decls.items() for a in ("--var", f"{n}: {d}")]
    code, out, err = cli(argv)
    status, data = api({"expression": text, "dialect": dialect, "wrt": [name], "order": order, "steps": True,
                        "check": False, "code": False, "declarations": decls})
    steps = data["results"][0]["steps"] if status == 200 else None
    if order == 2 or f.ndim:
        if code != 2 or "--steps shows the derivation of a gradient" not in err or not steps.get("reason"):
            faults.append(f"steps of {text!r} by {name}, order {order}: CLI {code} {err!r}, API {steps}")
        return
    try:
        want = md.derivation(f, x)
    except md.MatdiffError as e:  # no steps: both doors say why, and still give the gradient
        if code != 0 or str(e) not in err or steps != {"reason": str(e)}:
            faults.append(f"steps of {text!r} by {name}: {e}; CLI {code} {err!r}, API {steps}")
        return
    if code != 0 or str(want) not in out or steps != {"text": str(want), "latex": want.latex()}:
        faults.append(f"steps of {text!r} by {name}: want {want}; CLI {code} {out!r} {err!r}, API {steps}")
    if not str(want).endswith(f"= {md.grad(f, x)}"):  # the derivation ends in the gradient
        faults.append(f"steps of {text!r} by {name}: {want} does not end in ∇ = {md.grad(f, x)}")


def _matdiff_text_at_the_doors(text: str, decls: dict, name: str, faults: list) -> None:
    """matdiff's printed text, which the doors do not read as such (they read the input
    dialects): read as the matrixcalculus dialect where it is also that dialect's text (x + y,
    sin(x)) — the library's reading there — else refused by both doors as the library refuses
    it, with its message, never a traceback."""
    used = {n: d for n, d in decls.items() if re.search(rf"(?<![A-Za-z_]){n}(?![A-Za-z_])", text)}
    try:
        f = md.parse(text, MC, **used)
        x = next((v for v in f.variables if v.node.name == name), None)
        if x is None:
            return
        want = {"text": str(md.jacobian(f, x))}
    except md.MatdiffError as e:
        want = {"error": str(e).splitlines()[0].split(" (at column")[0]}
    code, out, err = cli([text, "--wrt", name] + [a for n, d in used.items() for a in ("--var", f"{n}: {d}")])
    status, body = api({"expression": text, "wrt": [name], "check": False, "code": False, "declarations": used})
    got = ({"text": out.splitlines()[-1].split(" = ", 1)[1]} if code == 0 else
           {"error": err.splitlines()[0].removeprefix("matdiff: error: ")} if code == 2 else {"crash": err})
    api_got = ({"text": body["results"][0]["text"]} if status == 200 else
               {"error": body["error"]} if status in (400, 413, 422) else {"crash": body})
    if got != want or api_got != want:
        faults.append(f"matdiff text {text!r} at the doors: library {want}, CLI {got}, API {api_got}")


CHUNKS = 3


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_every_door_answers_like_the_library(chunk):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        faults, counts = _sweep(chunk, CHUNKS)
    assert not faults, "\n".join(faults)
    # the doors answered most requests: refusals do not hollow the sweep out
    assert counts["values"] >= 15 and counts["printed"] >= 15 and counts["read back"] >= 15, counts
    assert counts["refused"] <= counts["printed"], counts


def test_the_vec_layout_of_a_gradient_is_a_matrix_a_dialect_writes():
    x, A = md.vector("x", "n"), md.matrix("A", "n", "n")
    f = x.T @ A @ x
    d = md.jacobian(f, x, layout="vec")
    np.testing.assert_allclose(_value(d).ravel(), _numeric_jacobian(lambda env: env["x"] @ env["A"] @ env["x"],
                                                                    "x").ravel(), rtol=1e-6)
    assert "[" not in str(d)  # [reshape(einsum('ab,b->a', …), (1, n))]_ij
    d.text(MC)  # was a NotSupportedError: the matrixcalculus dialect has no index notation


@pytest.mark.parametrize("dialect", [MC, NP])
def test_a_vec_layout_jacobian_reads_back_in_its_dialect(dialect):
    X = md.matrix("X", "n", "k")
    d = md.jacobian(md.cos(X), X, layout="vec")
    text = d.text(dialect)
    assert text == ("-diag(vec(sin(X)))")
    want = _laid_out(_numeric_jacobian(lambda env: np.cos(env["X"]), "X"), 2, "vec", "column")
    _close(_value(d), want, str(d))
    _close(_value(md.parse(text, dialect, X="matrix(n, k)")), want, text)  # was: unknown function 'vec'


# --------------------------------------------------------------------------- every option

# Each parameter of the library's entry points, and the command line flag and JSON field that
# carry it — or why a door has none (what it refuses instead).
OPTIONS = {
    ("parse", "text"): ("expression", "expression"),
    ("parse", "dialect"): ("--numpy", "dialect"),
    ("parse", "declarations"): ("--var", "declarations"),
    ("parse_fact", "text"): ("--fact", "facts"),
    ("jacobian", "x"): ("--wrt", "wrt"),
    ("jacobian", "layout"): ("--layout", "layout"),
    ("jacobian", "vec"): ("--vec", "vec"),
    ("jacobian", "facts"): ("--fact", "facts"),
    ("hessian", "x"): ("--hessian", "order"),
    ("hessian", "layout"): ("--layout", "layout"),
    ("hessian", "vec"): ("--vec", "vec"),
    ("hessian", "facts"): ("--fact", "facts"),
    ("check", "facts"): ("--fact", "facts"),
    ("check", "wrt"): ("--check", "check"),
    ("check", "order"): ("--hessian", "order"),
    ("derivation", "x"): ("--steps", "steps"),
    ("codegen", "backend"): ("--code", "code"),
    ("codegen", "checks"): ("--no-checks", "checks"),
}
NOT_OFFERED = {  # the door fixes it: the numbers of a check, the code's signature, the reader of printed text
    ("parse", "result_shape"), ("parse_fact", "dialect"), ("parse_fact", "about"), ("parse_fact", "declarations"),
    ("jacobian", "f"), ("hessian", "f"),  # the expression
    ("check", "f"), ("check", "sizes"), ("check", "seed"), ("check", "kinds"), ("check", "tol"), ("check", "step"),
    ("derivation", "f"), ("codegen", "outputs"), ("codegen", "name"), ("codegen", "sizes"),
    ("codegen", "args"),
}


def test_every_library_option_has_a_flag_and_a_field():
    params = {(fn, name) for fn in ("parse", "parse_fact", "jacobian", "hessian", "check", "derivation", "codegen")
              for name in inspect.signature(getattr(md, fn)).parameters}
    assert params == set(OPTIONS) | NOT_OFFERED
    flags = {a for action in build_parser()._actions for a in action.option_strings} | {"expression"}
    fields = set(service.FIELDS)
    for flag, field in OPTIONS.values():
        assert flag in flags and field in fields, (flag, field)
    # the dialects the library reads: the doors read the input dialects, and refuse matdiff's
    assert set(service.DIALECTS.values()) == {MC, NP}
    code, _, err = cli(["xᵀAx", "--wrt", "x"])
    assert code == 2 and "unexpected character 'ᵀ'" in err and "\n   ^" in err
    status, body = api({"expression": "xᵀAx", "dialect": "matdiff"})
    assert status == 400 and "'dialect' is one of matrixcalculus, numpy" in body["error"]


@pytest.mark.parametrize("body,message", [
    ({"hessian": True}, "'hessian' is not a field"),  # order: 2
    ({"layuot": "vec"}, "'layuot' is not a field"),
    ({"dialect": "matdiff"}, "'dialect' is one of matrixcalculus, numpy"),
    ({"order": 3}, "'order' is 1 (gradient or Jacobian) or 2 (Hessian)"),
])
def test_the_json_api_refuses_a_field_it_would_drop(body, message):
    status, data = api({"expression": "x'*A*x", "wrt": ["x"], "check": False, "code": False, **body})
    assert status == 400 and message in data["error"], data
    status, data = api({"expression": "x'*A*x", "wrt": ["x"], "order": 2, "check": False, "code": False,
                        "layout": "vec", "vec": "row"})
    assert status == 200 and data["results"][0]["text"] == str(md.hessian(
        md.parse("x'*A*x"), md.vector("x", "n"), layout="vec", vec="row"))


@pytest.mark.parametrize("extra,message", [
    (["--vec", "row"], "--vec stacks a matrix only with --layout vec"),
    (["--code", "numpy", "--json"], "--json"),
    (["--code", "numpy", "--steps"], "--steps"),
    (["--code", "numpy", "--index"], "--index"),
    (["--code", "numpy", "--format", "mc"], "--format"),
    (["--jacobian", "--hessian"], "--jacobian and --hessian"),
])
def test_the_command_line_refuses_an_option_it_would_drop(extra, message):
    code, out, err = cli(["x'*A*x", "--wrt", "x", *extra])
    assert code == 2 and out == "" and message in err, err


@pytest.mark.parametrize("fact,stranger", [("x'*q = 1", "q"), ("y = 1", "y")])
def test_a_fact_that_could_never_apply_is_refused_in_both_doors(fact, stranger):
    """The library takes a fact about any names; one that names a variable the expression
    does not use rewrites nothing, so the doors refuse it as they refuse an unused declaration."""
    f = md.parse("x'*A*x")
    assert stranger in {v.name for v in md.parse_fact(fact, about=f).variables}
    message = f"the fact names {stranger}, which the expression does not use (its variables: A, x)"
    code, out, err = cli(["x'*A*x", "--wrt", "x", "--fact", fact])
    assert code == 2 and out == "" and f"--fact {fact!r}: {message}" in err, err
    status, body = api({"expression": "x'*A*x", "wrt": ["x"], "facts": ["x'*x = 1", fact]})
    assert status == 422 and body["fact"] == 1 and body["error"].startswith(f"fact 2: {message}"), body
    status, body = api({"expression": "x'*A*x", "wrt": ["x"], "facts": ["x'*x = 1"], "check": False, "code": False})
    d = md.grad(f, md.vector("x", "n"), facts=[md.parse_fact("x'*x = 1", about=f)])
    assert status == 200 and body["results"][0]["text"] == str(d) == "(A + Aᵀ)x"
    _close(_value(d), _numeric_jacobian(lambda env: env["x"] @ env["A"] @ env["x"], "x"), str(d))


def test_ascii_json_is_ascii_and_reads_back_the_same():
    code, out, _ = cli(["x'*A*x", "--wrt", "x", "--json", "--ascii"])
    assert code == 0 and out.isascii()
    _, full, _ = cli(["x'*A*x", "--wrt", "x", "--json"])
    assert json.loads(out) == json.loads(full) and "ᵀ" in full
    d = md.grad(md.parse("x'*A*x"), md.vector("x", "n"))
    assert json.loads(out)["derivatives"][0]["text"] == str(d)
    _close(_read_back(str(d), "text", d), _value(d), "(A + Aᵀ)x")
    code, source, _ = cli(["x'*A*x", "--wrt", "x", "--code", "numpy", "--ascii"])
    assert code == 0 and source.isascii() and '"""(A + A\')x"""' in source
    scope: dict = {}
    exec(source, scope)  # noqa: S102 - the code matdiff wrote
    _close(scope["derivative"](VALUES["A"], VALUES["x"]), _value(d), source)


# --------------------------------------------------------------------------- bad input

def _corrupt(text: str, r: random.Random) -> str:
    how = r.choice(["delete", "double", "unknown", "mismatch"])
    i = r.randrange(len(text))
    if how == "delete":
        return text[:i] + text[i + 1:]
    if how == "double":
        return text[:i] + text[i] + text[i:]
    if how == "unknown":
        return f"frobnicate({text})" if r.random() < 0.5 else text + " + qq(x)"
    return f"({text}) + X*w*w'"  # an n × n or scalar plus a vector's outer product by a matrix


def _corrupted() -> list:
    out = []
    for i, (p, dialect, text, *_rest) in enumerate(_cases()[:60]):
        r = random.Random(9000 + i)
        out.append((dialect, _corrupt(text, r), {k: v for k, v in declarations(p.e).items() if v != "dim"}))
    return out


def test_bad_input_gets_a_message_with_a_caret_in_every_door():
    refused = 0
    for dialect, text, decls in _corrupted():
        try:
            f = md.parse(text, dialect, **decls)
        except (md.ParseError, md.ShapeError) as e:
            f, error = None, e
        if f is not None or not text.strip():
            continue  # the corruption is still an expression (or none: "the input is empty") (a doubled digit, 1 deleted from 1.5)
        refused += 1
        used = {n: d for n, d in decls.items() if re.search(rf"(?<![A-Za-z_]){n}(?![A-Za-z_])", text)}
        code, out, err = cli([text, "--wrt", "x"] + (["--numpy"] if dialect == NP else [])
                             + [a for n, d in used.items() for a in ("--var", f"{n}: {d}")])
        status, body = api({"expression": text, "dialect": dialect, "declarations": used, "check": False,
                            "code": False})
        where = f"{text!r} ({dialect}): {str(error).splitlines()[0]}"
        assert code == 2 and "Traceback" not in err and "internal error" not in err, (where, err)
        assert status in (400, 413, 422), (where, status, body)
        if "declarations name" in err:
            continue  # the corruption deleted a declared name: refused for that, by both doors
        column = getattr(error, "column", None)
        if column is not None:
            caret = err.splitlines()[-1]
            assert caret.strip() == "^", (where, err)
            assert len(caret) - 3 == column or len(text) > 60, (where, err)  # a long text is windowed
            assert body.get("column") == column, (where, body)
            assert str(error).splitlines()[0].split(" (at column")[0] in err, (where, err)
    assert refused >= 30
