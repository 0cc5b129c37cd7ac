"""Issue 15: the JSON API behind `matdiff serve` — every endpoint, bad input of each kind, a
derivation that overruns its time limit, and 50 concurrent requests answered like the
library answers."""
import concurrent.futures
import json

import numpy as np
import pytest

import matdiff as md
from matdiff import service

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from matdiff.server import MAX_BODY, Workers, create_app, start_in_thread  # noqa: E402


@pytest.fixture(scope="module")
def url():
    address, stop = start_in_thread(create_app(workers=2, time_limit=60))
    yield address
    stop()


def post(url, path, body, **kw):
    return httpx.post(url + path, json=body, timeout=120, **kw)


# --------------------------------------------------------------------------- the endpoints

LIBRARY = [  # (request, the library's answer for each wrt)
    ({"expression": "x'*A*x", "wrt": ["x"]},
     lambda: [md.grad(md.parse("x'*A*x"), md.parse("x'*A*x").variables[1])]),
    ({"expression": "norm2(X*w - y)^2", "wrt": ["w"], "order": 2},
     lambda: [md.hessian(f := md.parse("norm2(X*w - y)^2"), _var(f, "w"))]),
    ({"expression": "X*W", "wrt": ["X"], "layout": "vec"},
     lambda: [md.jacobian(f := md.parse("X*W"), _var(f, "X"), layout="vec")]),
    ({"expression": "-sum(Y .* log(softmax(tanh(X*W1)*W2)))", "wrt": ["W1", "W2"]},
     lambda: [md.grad(f := md.parse("-sum(Y .* log(softmax(tanh(X*W1)*W2)))"), _var(f, "W1")),
              md.grad(f, _var(f, "W2"))]),
    ({"expression": "sum(softplus(-y * (X @ w)))", "wrt": ["w"], "dialect": "numpy"},
     lambda: [md.grad(f := md.parse("sum(softplus(-y * (X @ w)))", dialect="numpy"), _var(f, "w"))]),
    ({"expression": "x'*A*x", "wrt": ["x"], "declarations": {"A": "matrix(n, n) symmetric"}},
     lambda: [md.grad(f := md.parse("x'*A*x", A="matrix(n, n) symmetric"), _var(f, "x"))]),
]


def _var(f, name):
    return next(v for v in f.variables if v.node.name == name)


@pytest.mark.parametrize("request_, want", LIBRARY, ids=[r["expression"] for r, _ in LIBRARY])
def test_derive_answers_as_the_library(url, request_, want):
    r = post(url, "/api/derive", request_)
    assert r.status_code == 200, r.text
    data = r.json()
    expected = want()
    assert [x["wrt"] for x in data["results"]] == request_["wrt"]
    for got, d in zip(data["results"], expected):
        assert got["text"] == str(d) and got["latex"] == d.latex()
        assert got["check"]["ok"] is True and got["check"]["error"] < 1e-6
        assert "steps" not in got  # asked for only
    assert set(data["code"]) == {"numpy", "jax", "torch"}
    namespace = {}
    exec(data["code"]["numpy"]["source"], namespace)  # the generated code runs and agrees
    assert callable(namespace["f"])


def test_the_issues_request_and_answer(url):
    r = post(url, "/api/derive", {"expression": "x'*A*x", "wrt": ["x"], "order": 1})
    data = r.json()
    assert data["results"][0]["wrt"] == "x" and data["results"][0]["text"] == "(A + Aᵀ)x"
    assert data["results"][0]["latex"] == "\\left(A + A^\\top\\right) x"
    assert data["declarations"] == {"A": "matrix(n, n)", "x": "vector(n)"}


def test_optional_parts_index_steps_no_check_no_code(url):
    r = post(url, "/api/derive", {"expression": "a'*X*b", "wrt": ["X"], "index": True, "steps": True,
                                  "check": False, "code": False})
    res = r.json()["results"][0]
    assert res["text"] == "abᵀ" and res["index"]["text"] == "a_i b_j"
    assert "⇒ ∇_X = abᵀ" in res["steps"]["text"] and "\\begin{aligned}" in res["steps"]["latex"]
    assert "check" not in res and "code" not in r.json()
    hess = post(url, "/api/derive", {"expression": "x'*A*x", "wrt": ["x"], "order": 2, "steps": True})
    assert "reason" in hess.json()["results"][0]["steps"]  # no one-line form for a Hessian


def test_check_reports_why_it_could_not_check():
    """The verdict is the reason where md.check cannot compare (a degenerate point)."""
    got = service._check(md.norm(md.outer(x := md.vector("x", "n"), x), "nuc"), x, 2)  # the Hessian
    assert got["ok"] is None and "degenerate" in got["reason"]


def test_inspect_infers_declarations_and_functions(url):
    r = post(url, "/api/inspect", {"expression": "lambda(sigma(X*W))",
                                   "declarations": {"sigma": "function", "lambda": "scalar_function"}})
    assert r.status_code == 200
    assert r.json()["declarations"] == {"W": "matrix(m, k)", "X": "matrix(n, m)",
                                        "lambda": "scalar_function", "sigma": "function"}
    assert r.json()["expression"]["text"] == "λ(σ(XW))"


def test_examples_all_derive_and_check(url):
    examples = httpx.get(url + "/api/examples").json()["examples"]
    names = " ".join(e["name"] for e in examples)
    for needed in ("σ(XW)", "λ(σ(XW))", "softmax cross-entropy", "two-layer network"):
        assert needed in names
    for e in examples:
        body = {k: v for k, v in e.items() if k != "name"}
        r = post(url, "/api/derive", body)
        assert r.status_code == 200, (e["name"], r.text)
        for res in r.json()["results"]:
            assert res["check"]["ok"] is not False, (e["name"], res["check"])


def test_the_page_and_its_assets_are_served_locally(url):
    page = httpx.get(url + "/")
    assert page.status_code == 200 and "matdiff" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from elsewhere
    for asset in ("/static/app.js", "/static/app.css", "/static/katex/katex.min.js",
                  "/static/katex/katex.min.css", "/static/katex/fonts/KaTeX_Main-Regular.woff2"):
        assert httpx.get(url + asset).status_code == 200, asset


# --------------------------------------------------------------------------- bad requests

BAD = [
    ("unparsable", {"expression": "x'*A*"}, 400, "found the end of the input", 5),
    ("unbalanced", {"expression": "(x'*A*x"}, 400, "", None),
    ("wrong shapes", {"expression": "A*x + x'"}, 422, "needs operands of one shape", 4),
    ("not square", {"expression": "det(x)"}, 422, "square matrix", 0),
    ("unknown variable", {"expression": "x'*A*x", "wrt": ["q"]}, 422, "q is not a variable", None),
    ("no expression", {"wrt": ["x"]}, 400, "no 'expression'", None),
    ("empty expression", {"expression": "  "}, 400, "empty", 0),
    ("wrong type", {"expression": 3}, 400, "must be a str", None),
    ("wrong wrt type", {"expression": "x'*x", "wrt": "x"}, 400, "must be a list", None),
    ("bad order", {"expression": "x'*x", "order": 3}, 400, "'order' is 1", None),
    ("bad layout", {"expression": "x'*x", "layout": "sideways"}, 400, "'layout' is one of", None),
    ("bad dialect", {"expression": "x'*x", "dialect": "fortran"}, 400, "'dialect'", None),
    ("bad declaration", {"expression": "x'*x", "declarations": {"x": "banana"}}, 400, "declaration of x", None),
    ("unused declaration", {"expression": "x'*x", "declarations": {"B": "matrix(n, n)"}}, 422, "does not use", None),
    ("oversized expression", {"expression": "x+" * 1500 + "x"}, 413, "at most", None),
    ("too many variables", {"expression": "x'*x", "wrt": ["x"] * 20}, 413, "at most", None),
]


@pytest.mark.parametrize("name, body, status, message, column", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_4xx_and_a_message(url, name, body, status, message, column):
    r = post(url, "/api/derive", body)
    assert r.status_code == status, r.text
    data = r.json()
    assert message in data["error"] and "Traceback" not in data["error"]
    if column is not None:
        assert data["column"] == column
    if name in ("wrong shapes", "unbalanced"):
        assert isinstance(data.get("column"), int)


def test_malformed_bodies_and_unknown_endpoints(url):
    r = httpx.post(url + "/api/derive", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    assert post(url, "/api/derive", ["x"]).status_code == 400
    big = httpx.post(url + "/api/derive", content=b"{" + b" " * (MAX_BODY + 10) + b"}",
                     headers={"Content-Type": "application/json"})
    assert big.status_code == 413 and "KiB" in big.json()["error"]
    missing = httpx.get(url + "/api/nothing")
    assert missing.status_code == 404 and "/api/derive" in missing.json()["error"]
    wrong_method = httpx.get(url + "/api/derive")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


# --------------------------------------------------------------------------- limits and load

HEAVY = {"expression": "-sum(Y .* log(softmax(tanh(tanh(X*W1)*W2)*W3)))", "wrt": ["W1", "W2", "W3"],
         "order": 2}


def test_a_derivation_over_the_time_limit_is_stopped_and_the_server_goes_on():
    app = create_app(workers=1, time_limit=0.05)
    address, stop = start_in_thread(app)
    try:
        pool = app.state.workers
        before = {p.pid for p, _ in pool.all}
        r = post(address, "/api/derive", HEAVY)
        assert r.status_code == 422 and r.json()["timeout"] is True and "limit of 0.05 s" in r.json()["error"]
        after = {p.pid for p, _ in pool.all}
        assert len(before - after) == 1  # the overrunning worker was killed (and is replaced)
        pool.time_limit = 60  # a fresh worker's first answer may take over 0.05 s on a busy machine
        ok = post(address, "/api/inspect", {"expression": "x'*A*x"})
        assert ok.status_code == 200  # the next request is answered (an inspect is quick)
    finally:
        stop()


def test_workers_kill_an_overrunning_job_directly():
    import asyncio

    async def go():
        pool = Workers(1, 0.05, fast=0)
        await pool.start()
        try:
            (p, _), = pool.all
            status, body = await pool.run("derive", HEAVY)
            assert status == 422 and body["timeout"]
            assert not p.is_alive()
            pool.time_limit = 60
            status, body = await pool.run("derive", {"expression": "x'*x", "wrt": ["x"], "code": False})
            assert status == 200 and body["results"][0]["text"] == "2x"
        finally:
            pool.stop()

    asyncio.run(go())


def test_fifty_concurrent_requests_are_all_answered_as_the_library_does(url):
    exprs = ["x'*A*x", "norm2(X*w - y)^2", "sum(sigmoid(X*W))", "log(det(X))", "a'*X*b"]
    bodies = [{"expression": exprs[i % len(exprs)], "wrt": [["x"], ["w"], ["W"], ["X"], ["X"]][i % len(exprs)],
               "check": False, "code": i % 2 == 0} for i in range(50)]
    with concurrent.futures.ThreadPoolExecutor(50) as ex:
        answers = list(ex.map(lambda b: post(url, "/api/derive", b), bodies))
    assert len(answers) == 50 and all(a.status_code == 200 for a in answers)
    for body, answer in zip(bodies, answers):
        f = md.parse(body["expression"])
        want = md.grad(f, _var(f, body["wrt"][0]))
        assert answer.json()["results"][0]["text"] == str(want)


def test_service_answers_are_json_and_carry_no_arrays():
    data = service.derive({"expression": "x'*A*x", "wrt": ["x"]})
    assert json.loads(json.dumps(data)) == data
    assert isinstance(data["results"][0]["check"]["error"], float)
    assert np.isfinite(data["results"][0]["check"]["error"])


def test_serve_without_the_web_extra_says_how_to_install(monkeypatch):
    import sys

    from matdiff.server import serve

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    with pytest.raises(md.MatdiffError, match=r"matdiff\[web\]"):
        serve([])


def test_matdiff_serve_prints_its_address_and_serves_the_page():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "matdiff", "serve", "--port", "0", "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("matdiff is serving http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")
        address = line.split()[3]
        assert httpx.get(address, timeout=30).status_code == 200
        r = httpx.post(address + "api/derive", json={"expression": "x'*x", "wrt": ["x"], "code": False}, timeout=60)
        assert r.json()["results"][0]["text"] == "2x"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_busy_or_invalid_port_is_a_clear_error():
    import socket

    from matdiff.server import serve

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(md.MatdiffError, match="cannot serve on 127.0.0.1:.*choose another port"):
            serve(["--port", str(taken.getsockname()[1])])
    finally:
        taken.close()
    with pytest.raises(md.MatdiffError, match="0 to 65535"):
        serve(["--port", "70000"])


def test_format_adds_the_output_in_that_notation():
    """Issue 23: "format" (text, latex, mc, numpy), as the CLI's --format; a result the dialect
    cannot write has output null and the reason, and the rest of the answer."""
    data = service.derive({"expression": "x'*A*x", "wrt": ["x", "A"], "format": "numpy", "code": False,
                           "check": False})
    assert data["expression"]["output"] == "x.T @ A @ x"
    assert [r["output"] for r in data["results"]] == ["(A + A.T) @ x", "outer(x, x)"]
    assert "output" not in service.derive({"expression": "x'*x", "code": False})["results"][0]
    data = service.derive({"expression": "tr(X'*X)", "wrt": ["X"], "order": 2, "layout": "vec",
                           "format": "numpy", "code": False, "check": False})
    assert data["results"][0]["output"] == "2 * eye(m*n)"  # I, sized: it reads back
    data = service.derive({"expression": "sum(x)", "wrt": ["x"], "format": "numpy", "code": False,
                           "check": False})
    (r,) = data["results"]
    assert r["text"] == "1" and r["output"] is None and "no way to write a ones vector" in r["output_error"]
    with pytest.raises(service.RequestError) as e:
        service.derive({"expression": "x'*x", "format": "fortran"})
    assert e.value.status == 400 and "'format' is one of" in e.value.body["error"]
