"""Issue 22: `matdiff serve` answers only its own page and clients that are not web pages
(Host and Origin checks against DNS rebinding and cross-origin posts, JSON bodies only),
refuses declared dims too large to compute with (as md.check does), lets cheap requests
overtake slow ones, survives a worker that died while idle, and handles clients that leave
mid-body or hold a connection open without sending."""
import asyncio
import logging
import socket
import threading
import time

import pytest

import matdiff as md
from matdiff import service

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from matdiff import server  # noqa: E402
from matdiff.server import Workers, create_app, start_in_thread  # noqa: E402

INSPECT = {"expression": "x'*A*x"}
# finite differences over 90,000 entries: minutes of work, so always stopped at the time limit
SLOW = {"expression": "x'*A*x", "wrt": ["A"], "declarations": {"A": "matrix(300, 300)"},
        "code": False}


@pytest.fixture(scope="module")
def served():
    app = create_app(workers=1, time_limit=60, hosts=["matdiff.test"])
    address, stop = start_in_thread(app, head_timeout=0.5)
    yield address, int(address.rsplit(":", 1)[1]), app
    stop()


def post(url, path, body, **kw):
    return httpx.post(url + path, json=body, timeout=60, **kw)


# --------------------------------------------------------------------------- Host

@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "localhost", "127.0.0.1",
                                  "localhost:1", "127.0.0.1:{port}.evil.example", "localhost.:{port}",
                                  "[::1]:{port}", "0.0.0.0:{port}", "matdiff.test:1", ""])
def test_a_host_other_than_the_servers_is_refused(served, host):
    url, port, _ = served
    host = host.format(port=port)
    for r in (post(url, "/api/derive", {"expression": "x'*x"}, headers={"Host": host}),
              post(url, "/api/inspect", INSPECT, headers={"Host": host}),
              httpx.get(url + "/", headers={"Host": host}),
              httpx.get(url + "/static/app.js", headers={"Host": host}),
              httpx.get(url + "/api/examples", headers={"Host": host})):
        assert r.status_code == 403, (host, r.text)
        assert "DNS rebinding" in r.json()["error"] and f"127.0.0.1:{port}" in r.json()["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LocalHost:{port}",
                                  "matdiff.test:{port}"])
def test_the_bound_address_and_localhost_with_the_port_are_answered(served, host):
    url, port, _ = served
    r = post(url, "/api/inspect", INSPECT, headers={"Host": host.format(port=port)})
    assert r.status_code == 200 and r.json()["expression"]["text"] == "xᵀAx"
    assert httpx.get(url + "/", headers={"Host": host.format(port=port)}).status_code == 200


def test_two_host_headers_are_refused(served):
    url, port, _ = served
    head = (f"GET /api/examples HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\n"
            f"Connection: close\r\n\r\n")
    assert _raw(port, head.encode()).startswith((b"HTTP/1.1 400", b"HTTP/1.1 403"))


# --------------------------------------------------------------------------- Origin and Content-Type

@pytest.mark.parametrize("origin", ["null", "https://evil.example", "http://evil.example:{port}",
                                    "http://127.0.0.1:1", "https://127.0.0.1:{port}",
                                    "http://127.0.0.1:{port}.evil.example", "file://"])
def test_a_request_from_another_origin_is_refused(served, origin):
    url, port, _ = served
    origin = origin.format(port=port)
    for r in (post(url, "/api/derive", {"expression": "x'*x"}, headers={"Origin": origin}),
              post(url, "/api/inspect", INSPECT, headers={"Origin": origin}),
              httpx.get(url + "/api/examples", headers={"Origin": origin})):
        assert r.status_code == 403, (origin, r.text)
        assert repr(origin) in r.json()["error"]


@pytest.mark.parametrize("origin", ["http://127.0.0.1:{port}", "http://localhost:{port}", None])
def test_the_page_itself_and_clients_without_an_origin_are_answered(served, origin):
    """A browser sends Origin with the page's POSTs (same-origin fetch included); curl and
    scripts send none."""
    url, port, _ = served
    headers = {"Origin": origin.format(port=port)} if origin else {}
    r = post(url, "/api/derive", {"expression": "x'*x", "wrt": ["x"], "code": False}, headers=headers)
    assert r.status_code == 200 and r.json()["results"][0]["text"] == "2x"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "text/json",
                                          "application/jsonx"])
def test_a_post_whose_body_is_not_declared_json_is_415(served, content_type):
    url, _, _ = served
    headers = {"Content-Type": content_type} if content_type else {}
    for path in ("/api/derive", "/api/inspect"):
        r = httpx.post(url + path, content=b'{"expression": "x\'*x"}', headers=headers)
        assert r.status_code == 415, (content_type, r.text)
        assert "Content-Type: application/json" in r.json()["error"]


def test_json_with_a_charset_is_answered(served):
    url, _, _ = served
    r = httpx.post(url + "/api/inspect", content=b'{"expression": "x\'*x"}',
                   headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert r.status_code == 200


# --------------------------------------------------------------------------- declared dims

HUGE = ["vector(100000000)", "matrix(100000, 100000)", "matrix(1001, 1000)",
        "vector(99999999999999999999999999)", "vector(" + "9" * 5000 + ")",
        "matrix(n, 10000000)"]


@pytest.mark.parametrize("decl", HUGE, ids=lambda d: d[:30])
def test_a_huge_declared_dim_is_refused_before_any_work(served, decl):
    url, _, _ = served
    expression = "x'*x" if decl.startswith("vector") else "sum(x)"
    for path in ("/api/derive", "/api/inspect"):
        start = time.monotonic()
        r = post(url, path, {"expression": expression, "declarations": {"x": decl}})
        assert r.status_code == 413, r.text
        assert "declaration of x" in r.json()["error"] and "at most 1,000,000 entries" in r.json()["error"]
        assert time.monotonic() - start < 5


def test_the_size_guard_is_in_the_service_too():
    with pytest.raises(service.RequestError, match="has a dim of 100,000,000") as e:
        service.derive({"expression": "x'*x", "declarations": {"x": "vector(100000000)"}})
    assert e.value.status == 413
    ok = service.inspect({"expression": "sum(X)", "declarations": {"X": "matrix(1000, 1000)"}})
    assert ok["declarations"]["X"] == "matrix(1000, 1000)"  # a million entries is allowed


def test_md_check_refuses_absurd_sizes_before_allocating():
    x = md.vector("x", 100_000_000)
    with pytest.raises(md.MatdiffError, match=r"x would have 100,000,000 entries.*at most 10,000,000"):
        md.check(x.T @ x, x)
    y = md.vector("y", 10 ** 30)
    with pytest.raises(md.MatdiffError, match="y would have"):
        md.check(md.sum(md.sigmoid(y)), y)
    z = md.vector("z", "n")
    with pytest.raises(md.MatdiffError, match=r"a part of f would have 1,000,000,000,000"):
        md.check(md.sum(md.outer(z, z)), z, sizes={"n": 10 ** 6})
    w = md.vector("w", 5000)
    with pytest.raises(md.MatdiffError, match=r"∂²f/∂w² would have 25,000,000 entries"):
        md.check(w.T @ w, w, order=2)
    v = md.vector("v", 40)
    assert md.check(v.T @ v, v, order=2) < 1e-6  # number dims of a sensible size are checked


# --------------------------------------------------------------------------- the two 500s

def test_a_lone_surrogate_is_a_400(served):
    url, _, _ = served
    for raw in (b'{"expression": "x\'*x", "wrt": ["\\ud800"]}',
                b'{"expression": "x\'*x\\udc00"}',
                b'{"expression": "x\'*x", "declarations": {"\\ud83d": "vector(n)"}}'):
        for path in ("/api/derive", "/api/inspect"):
            r = httpx.post(url + path, content=raw, headers={"Content-Type": "application/json"})
            assert r.status_code == 400, r.text
            assert "lone surrogate" in r.json()["error"]


def test_an_answer_that_cannot_be_utf8_is_escaped_not_a_500():
    body = server._json("no \ud800 here", 422).body
    assert body == b'{"error":"no \\ud800 here"}'


def test_an_overflowing_declared_dim_is_a_413(served):
    url, _, _ = served
    r = post(url, "/api/derive", {"expression": "x'*x", "declarations": {"x": "vector(99999999999999999999999999)"}})
    assert r.status_code == 413 and "99,999,999,999,999,999,999,999,999" in r.json()["error"]


# --------------------------------------------------------------------------- lanes and workers

def test_cheap_requests_overtake_two_slow_ones():
    """With both workers busy on requests that run to the time limit, an inspect and a cheap
    derivation are answered at once, and the slow ones are still stopped at the limit."""
    app = create_app(workers=2, time_limit=6)
    url, stop = start_in_thread(app)
    try:
        with httpx.Client(timeout=60) as client:
            done = []

            def run_slow():
                r = client.post(url + "/api/derive", json=SLOW)
                done.append((time.monotonic(), r))

            threads = [threading.Thread(target=run_slow) for _ in range(2)]
            start = time.monotonic()
            for t in threads:
                t.start()
                time.sleep(0.3)
            r = client.post(url + "/api/inspect", json=INSPECT)
            d = client.post(url + "/api/derive", json={"expression": "x'*x", "wrt": ["x"], "code": False})
            cheap = time.monotonic()
            assert r.status_code == 200 and d.status_code == 200
            assert d.json()["results"][0]["text"] == "2x"
            assert not done  # answered while both slow requests still ran
            for t in threads:
                t.join()
            for finished, answer in done:
                assert answer.status_code == 422 and answer.json()["timeout"] is True, answer.text
                assert 6 <= finished - start < 30
            assert cheap < min(finished for finished, _ in done)
    finally:
        stop()


def test_a_slow_request_in_the_fast_lane_waits_for_the_main_lane_and_keeps_its_limit():
    async def go():
        pool = Workers(1, time_limit=2, fast=1, fast_limit=0.3)
        await pool.start()
        try:
            first = asyncio.ensure_future(pool.run("derive", SLOW))
            await asyncio.sleep(0.3)
            started = time.monotonic()
            second = asyncio.ensure_future(pool.run("derive", SLOW))  # fast lane, then main
            await asyncio.sleep(1.0)
            status, body = await pool.run("inspect", INSPECT)  # the fast lane's new worker
            assert status == 200
            assert not second.done()  # it waits for the main lane, and then has 2 s there
            for job in (first, second):
                status, body = await job
                assert status == 422 and body["timeout"] and "limit of 2 s" in body["error"]
            assert time.monotonic() - started >= 2  # the demoted one had the full limit
        finally:
            pool.stop()

    asyncio.run(go())


def test_a_worker_that_died_while_idle_is_replaced_and_the_request_answered(served):
    url, _, app = served
    pool = app.state.workers
    assert post(url, "/api/inspect", INSPECT).status_code == 200
    for join in (True, False):  # dead and reaped, or killed a moment ago
        before = set(pool.all)
        for p, _ in before:
            p.kill()
            if join:
                p.join()
        r = post(url, "/api/derive", {"expression": "x'*x", "wrt": ["x"], "code": False})
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["text"] == "2x"
        deadline = time.monotonic() + 30
        while len(pool.all) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pool.all) == 2 and not before & pool.all  # both lanes have fresh workers


# --------------------------------------------------------------------------- connections

def _raw(port, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_a_client_that_leaves_mid_body_writes_no_traceback(served):
    url, port, _ = served
    handler = _Records()
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).addHandler(handler)
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(f"POST /api/derive HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: "
                          f"application/json\r\nContent-Length: 1000\r\n\r\n{{\"expr".encode())
                time.sleep(0.2)
        time.sleep(0.5)
        assert post(url, "/api/inspect", INSPECT).status_code == 200  # the server goes on
    finally:
        for name in ("uvicorn", "uvicorn.error"):
            logging.getLogger(name).removeHandler(handler)
    assert not [r for r in handler.records if r.exc_info or r.levelno >= logging.ERROR], \
        [r.getMessage() for r in handler.records]


@pytest.mark.parametrize("sent", [b"", b"POST /api/derive HTTP/1.1\r\nHo"])
def test_a_connection_that_sends_no_request_head_is_closed(served, sent):
    _, port, _ = served
    start = time.monotonic()
    assert _raw(port, sent) == b""  # closed by the server, not held until our own timeout
    assert time.monotonic() - start < 5


def test_a_connection_idle_after_an_answer_is_closed(served):
    _, port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET /api/examples HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /api/exa")  # half a second head, then silence
        start = time.monotonic()
        while s.recv(65536):
            pass
        assert time.monotonic() - start < 8


def test_a_body_that_stops_arriving_is_a_408(served, monkeypatch):
    _, port, _ = served
    monkeypatch.setattr(server, "BODY_TIMEOUT", 0.5)
    start = time.monotonic()
    answer = _raw(port, f"POST /api/derive HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: "
                        f"application/json\r\nContent-Length: 100\r\n\r\n{{\"expr".encode())
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in answer
    assert time.monotonic() - start < 5
