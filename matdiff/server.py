"""`matdiff serve`: the local web page and its JSON API (docs/web.md).

A Starlette application served by uvicorn (the ``web`` extra).  Requests are handled by
service.py's functions in a pool of worker processes: each derivation runs under a time
limit, and a worker that overruns it is killed and replaced, so one pathological input
cannot hang the server.  A fast lane of one more worker takes requests while the others
are busy, for a short limit, so cheap requests overtake slow ones.  Only requests addressed
to this server (its Host) from its own page or from no page at all (its Origin), with a JSON
body, are answered: a web page elsewhere cannot use it.  Nothing is loaded from the
network: the page, its script and KaTeX (MIT, from its npm package) are package data under
static/.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing
import os
import socket
import sys
import threading
import time
import webbrowser
from pathlib import Path

from . import service

STATIC = Path(__file__).with_name("static")
MAX_BODY = 64 * 1024     # bytes of a request body
TIME_LIMIT = 10.0        # seconds for one derivation
FAST_LIMIT = 1.0         # seconds a request may take in the fast lane before it waits its turn
BODY_TIMEOUT = 10.0      # seconds a client has to send a request's body
HEAD_TIMEOUT = 10.0      # seconds a connection has to send a request's head
RECURSION_LIMIT = 20_000


# --------------------------------------------------------------------------- workers

def _work(conn) -> None:  # pragma: no cover - runs in the worker process
    """A worker's loop: (kind, payload) in, (status, body) out."""
    import warnings

    sys.setrecursionlimit(RECURSION_LIMIT)
    warnings.simplefilter("ignore")
    while True:
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError):
            return
        try:
            answer = (200, service.HANDLERS[kind](payload))
        except service.RequestError as e:
            answer = (e.status, e.body)
        except RecursionError:
            answer = (422, {"error": "the expression is nested too deeply to process; split it "
                                     "into named parts"})
        except Exception as e:  # noqa: BLE001 - a bug becomes a report, never a traceback
            answer = (500, {"error": f"internal error: {type(e).__name__}: {e}. This is a bug in "
                                     f"matdiff; please report it with the request"})
        conn.send(answer)


MAIN, FAST = "main", "fast"


class Workers:
    """Worker processes in two lanes, each worker taking one request at a time.

    A request takes an idle worker of the main lane (``size`` workers) and has the time limit
    there.  Where none is idle it takes the fast lane's worker (``fast``, default 1), which
    gives it ``fast_limit`` seconds: a cheap request is answered at once however long the
    main lane's requests run; one that needs longer has that worker killed and replaced and
    waits for the main lane.  A worker found dead (killed while idle, say) is replaced and
    the request goes to another; one that dies under a request is retried once on a fresh
    worker."""

    def __init__(self, size: int, time_limit: float, fast: int = 1, fast_limit: float = FAST_LIMIT):
        methods = multiprocessing.get_all_start_methods()
        self.ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods:
            self.ctx.set_forkserver_preload(["matdiff.service"])
        self.size, self.fast, self.time_limit, self.fast_limit = size, fast, time_limit, fast_limit
        self.idle: dict = {MAIN: [], FAST: []}
        self.waiting: list = []   # (lanes, future) of requests waiting for a worker, in order
        self.all: set = set()     # every live worker, (process, pipe)
        self.lane: dict = {}      # worker -> its lane
        self.tasks: set = set()   # replacements being started

    def _start(self):
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=_work, args=(child,), daemon=True, name="matdiff-worker")
        p.start()
        child.close()
        self.all.add((p, parent))
        return p, parent

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        lanes = [MAIN] * self.size + [FAST] * self.fast
        started = await asyncio.gather(*(loop.run_in_executor(None, self._start) for _ in lanes))
        for lane, w in zip(lanes, started):
            self._release(lane, w)

    def _release(self, lane: str, w) -> None:
        """Hand an idle worker to the first request waiting for its lane, or keep it idle."""
        self.lane[w] = lane
        for entry in self.waiting:
            lanes, future = entry
            if lane in lanes and not future.done():
                self.waiting.remove(entry)
                future.set_result((lane, w))
                return
        self.idle[lane].append(w)

    async def _acquire(self, lanes: tuple):
        for lane in lanes:
            if self.idle[lane]:
                return lane, self.idle[lane].pop()
        future = asyncio.get_running_loop().create_future()
        entry = (lanes, future)
        self.waiting.append(entry)
        try:
            return await future
        except BaseException:  # cancelled: a worker handed over meanwhile goes back
            if entry in self.waiting:
                self.waiting.remove(entry)
            if future.done() and not future.cancelled():
                self._release(*future.result())
            raise

    def _retire(self, w) -> None:
        p, conn = w
        self.all.discard(w)
        self.lane.pop(w, None)
        if p.is_alive():
            p.kill()
        p.join(timeout=5)
        conn.close()

    async def _replace(self, lane: str, w) -> None:
        """Kill w (if it lives), and start a new worker for its lane in the background."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._retire, w)

        async def fresh():
            while True:  # until it starts (the machine may be short of processes for a while)
                try:
                    w = await loop.run_in_executor(None, self._start)
                except OSError:
                    await asyncio.sleep(1)
                    continue
                return self._release(lane, w)

        task = asyncio.ensure_future(fresh())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _attempt(self, w, kind: str, payload, limit: float):
        """("answer", (status, body)), or "dead" (before taking the job), "died" or "overran"."""
        p, conn = w
        if not p.is_alive():
            return "dead", None
        try:
            conn.send((kind, payload))
        except (OSError, ValueError):  # a broken pipe: the worker is gone
            return "dead", None
        ready = await asyncio.get_running_loop().run_in_executor(None, conn.poll, limit)
        if not ready:
            return "overran", None
        try:
            return "answer", conn.recv()
        except (EOFError, OSError):  # the worker died (out of memory, say)
            return "died", None

    async def run(self, kind: str, payload) -> tuple:
        lanes = (MAIN, FAST) if self.fast else (MAIN,)
        retried = False
        while True:
            lane, w = await self._acquire(lanes)
            limit = self.time_limit if lane == MAIN else min(self.fast_limit, self.time_limit)
            try:
                outcome, answer = await self._attempt(w, kind, payload, limit)
            except BaseException:  # cancelled mid-job: its answer must not reach the next job
                await asyncio.shield(self._replace(lane, w))
                raise
            if outcome == "answer":
                self._release(lane, w)
                return answer
            await self._replace(lane, w)
            if outcome == "dead":
                continue  # it never took the job: another worker does
            if outcome == "died" and not retried:
                retried = True
                continue
            if outcome == "overran" and limit < self.time_limit:
                lanes = (MAIN,)  # not a cheap request: it waits for the main lane
                continue
            if outcome == "overran":
                return 422, {"error": f"the derivation took longer than the server's limit of "
                                      f"{self.time_limit:g} s and was stopped; simplify the "
                                      f"expression, or differentiate it in Python", "timeout": True}
            return 500, {"error": "the worker computing this request stopped unexpectedly, twice "
                                  "(out of memory?); the server has started new ones"}

    def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for w in list(self.all):
            self._retire(w)


# --------------------------------------------------------------------------- who may ask

def _allowed_hosts(scope, names) -> set:
    """The Host values this server answers: its address as the client reached it, localhost,
    and the names given to --host, each with the port (alone only for port 80)."""
    server = scope.get("server")
    if not server:
        return set()
    address, port = server[0], server[1]
    hosts = {f"[{h}]" if ":" in h else h for h in (address, "localhost", *names)}
    out = {f"{h.lower()}:{port}" for h in hosts}
    return out | ({h.lower() for h in hosts} if port == 80 else set())


def _guard(app, names=()):
    """ASGI middleware: a 403 for a Host that is not this server's (DNS rebinding) and for a
    request from a page of another origin (Origin, including "null"); a 415 for a POST whose
    body is not declared JSON (a form or text/plain post needs no CORS preflight)."""
    async def guarded(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        headers = {}
        for key, value in scope["headers"]:
            headers.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        allowed = _allowed_hosts(scope, names)
        listed = " and ".join(sorted(allowed)) or "none"
        host = headers.get("host", [""])
        refusal = None
        if len(host) != 1 or host[0].lower() not in allowed:
            refusal = 403, (f"the Host header {', '.join(map(repr, host)) or '(none)'} is not "
                            f"this server's; it answers {listed} only, so that a page on another "
                            f"site cannot reach it through DNS rebinding")
        elif foreign := [o for o in headers.get("origin", []) if o.lower() not in
                         {f"http://{h}" for h in allowed}]:
            refusal = 403, (f"a request from the page at {foreign[0]!r} is refused: this "
                            f"server answers its own page (http://{host[0]}) and clients that "
                            f"are not web pages")
        elif scope["method"] == "POST" and \
                headers.get("content-type", [""])[0].split(";")[0].strip().lower() != "application/json":
            refusal = 415, (f"the request body must be JSON, sent with Content-Type: "
                            f"application/json, not {headers.get('content-type', ['(none)'])[0]!r:.60}")
        if refusal is None:
            return await app(scope, receive, send)
        status, message = refusal
        await _json(message, status, close=True)(scope, receive, send)

    return guarded


def _json(message: str, status: int, close: bool = False, **extra):
    return _safe_json()({"error": message, **extra}, status_code=status,
                        headers={"Connection": "close"} if close else None)


@functools.cache
def _safe_json():
    from starlette.responses import JSONResponse

    class SafeJSON(JSONResponse):
        """JSON in UTF-8, escaped to ASCII where a string cannot be encoded (a lone surrogate)."""

        def render(self, content) -> bytes:
            try:
                return super().render(content)
            except UnicodeEncodeError:
                return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")

    return SafeJSON


def _protocol(head_timeout: float):
    """uvicorn's HTTP/1.1 protocol, with a deadline for each request's head: a connection
    that sends none (or a part) within ``head_timeout`` seconds of opening, or of its last
    answer, is closed, so half-open connections are not held forever."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._deadline()

        def _deadline(self) -> None:
            self.loop.call_later(head_timeout, self._expire, self.cycle)

        def _expire(self, cycle) -> None:
            idle = self.cycle is None or self.cycle.response_complete
            if self.cycle is cycle and idle and not self.transport.is_closing():
                self.transport.close()

    return Protocol


# --------------------------------------------------------------------------- the application

def create_app(workers: int = 2, time_limit: float = TIME_LIMIT, hosts=()):
    """The Starlette application: the page at /, assets under /static, the API under /api.
    ``hosts``: names besides the bound address and localhost that clients may call it by."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import FileResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    JSON = _safe_json()
    pool = Workers(workers, time_limit)

    def error(status, message, **extra):
        return _json(message, status, **extra)

    too_big = f"the request body is over {MAX_BODY // 1024} KiB; send a shorter expression"

    async def read(request: Request) -> bytes | None:
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                return None
        return raw

    async def body(request: Request):
        if int(request.headers.get("content-length") or 0) > MAX_BODY:
            return None, error(413, too_big)
        try:
            raw = await asyncio.wait_for(read(request), BODY_TIMEOUT)
        except asyncio.TimeoutError:
            return None, _json(f"the request body did not arrive within {BODY_TIMEOUT:g} s", 408,
                               close=True)
        except ClientDisconnect:  # the client left mid-body: nobody reads an answer
            return None, Response(status_code=400)
        if raw is None:
            return None, error(413, too_big)
        try:
            payload = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError) as e:
            return None, error(400, f"the request body is not JSON: {e}")
        if not isinstance(payload, dict):
            return None, error(400, "the request body must be a JSON object, e.g. "
                                    "{\"expression\": \"x'*A*x\", \"wrt\": [\"x\"]}")
        try:
            json.dumps(payload, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            return None, error(400, f"the request holds a lone surrogate, "
                                    f"{e.object[e.start:e.end].encode('unicode-escape').decode()}"
                                    f" (half of a UTF-16 pair), which is not a character")
        return payload, None

    def endpoint(kind):
        async def handle(request: Request):
            payload, failed = await body(request)
            if failed is not None:
                return failed
            status, answer = await pool.run(kind, payload)
            return JSON(answer, status_code=status)
        return handle

    async def examples(request: Request):
        return JSON({"examples": service.EXAMPLES})

    async def page(request: Request):
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def not_found(request: Request, exc):
        if request.url.path.startswith("/api/"):
            return error(exc.status_code, f"{request.method} {request.url.path}: "
                                          f"{'no such endpoint' if exc.status_code == 404 else exc.detail}; "
                                          f"the API has POST /api/derive, POST /api/inspect, "
                                          f"GET /api/examples")
        return error(exc.status_code, str(exc.detail))

    async def internal(request: Request, exc):
        return error(500, f"internal error: {type(exc).__name__}: {exc}")

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        await pool.start()
        try:
            yield
        finally:
            pool.stop()

    app = Starlette(
        routes=[Route("/", page), Route("/favicon.ico", lambda request: Response(status_code=204)),
                Route("/api/derive", endpoint("derive"), methods=["POST"]),
                Route("/api/inspect", endpoint("inspect"), methods=["POST"]),
                Route("/api/examples", examples, methods=["GET"]),
                Mount("/static", StaticFiles(directory=STATIC), name="static")],
        middleware=[Middleware(_guard, names=tuple(hosts))],
        exception_handlers={404: not_found, 405: not_found, 500: internal},
        lifespan=lifespan)
    app.state.workers = pool
    return app


# --------------------------------------------------------------------------- the command

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="matdiff serve",
        description="Serve matdiff's web page on this machine (needs: pip install 'matdiff[web]').",
        epilog="example: matdiff serve --open")
    p.add_argument("--port", type=int, default=8765, help="the port (default 8765; 0: any free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="the address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--open", action="store_true", help="open the page in the browser")
    p.add_argument("--workers", type=int, default=max(2, min(4, os.cpu_count() or 2)),
                   help="worker processes deriving in parallel (and one more, the fast lane, "
                        "for cheap requests while they are busy)")
    p.add_argument("--time-limit", type=float, default=TIME_LIMIT,
                   help=f"seconds one derivation may take (default {TIME_LIMIT:g})")
    return p


def start_in_thread(app, host: str = "127.0.0.1", port: int = 0,
                    head_timeout: float = HEAD_TIMEOUT):
    """Serve ``app`` from a background thread (tests and benchmarks); returns (url, stop)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           http=_protocol(head_timeout)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]

    def stop():
        server.should_exit = True
        thread.join(timeout=30)

    return f"http://{host}:{port}", stop


def serve(argv=None, out=None) -> int:
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    try:
        import uvicorn
    except ImportError:
        from .errors import MatdiffError

        raise MatdiffError("matdiff serve needs the web extra: pip install 'matdiff[web]'") from None
    from .errors import MatdiffError

    if args.workers < 1 or args.time_limit <= 0:
        raise MatdiffError("--workers must be at least 1 and --time-limit positive")
    if not 0 <= args.port <= 65535:
        raise MatdiffError(f"--port {args.port}: a port is 0 to 65535 (0: any free one)")
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        sock.close()
        raise MatdiffError(f"cannot serve on {args.host}:{args.port}: {e.strerror or e}; choose "
                           f"another port with --port (0: any free one)") from None
    config = uvicorn.Config(create_app(args.workers, args.time_limit,
                                       hosts=[args.host] if args.host not in ("0.0.0.0", "::") else []),
                            log_level="warning", http=_protocol(HEAD_TIMEOUT))
    server = uvicorn.Server(config)

    def announce():
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1] if server.servers else args.port
        url = f"http://{args.host}:{port}/"
        out.write(f"matdiff is serving {url} (Ctrl-C stops it)\n")
        out.flush()
        if args.open:
            webbrowser.open(url)

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])
    return 0
