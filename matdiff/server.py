"""`matdiff serve`: the local web page and its JSON API (docs/web.md).

A Starlette application served by uvicorn (the ``web`` extra).  Requests are handled by
service.py's functions in a pool of worker processes: each derivation runs under a time
limit, and a worker that overruns it is killed and replaced, so one pathological input
cannot hang the server or slow it for others.  Nothing is loaded from the network: the
page, its script and KaTeX (MIT, from its npm package) are package data under static/.
"""
from __future__ import annotations

import argparse
import asyncio
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


class Workers:
    """A pool of worker processes, each taking one request at a time."""

    def __init__(self, size: int, time_limit: float):
        methods = multiprocessing.get_all_start_methods()
        self.ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods:
            self.ctx.set_forkserver_preload(["matdiff.service"])
        self.size, self.time_limit = size, time_limit
        self.idle: asyncio.Queue | None = None
        self.all: set = set()

    def _start(self):
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=_work, args=(child,), daemon=True, name="matdiff-worker")
        p.start()
        child.close()
        self.all.add((p, parent))
        return p, parent

    async def start(self) -> None:
        self.idle = asyncio.Queue()
        loop = asyncio.get_running_loop()
        started = await asyncio.gather(*(loop.run_in_executor(None, self._start)
                                         for _ in range(self.size)))
        for w in started:
            self.idle.put_nowait(w)

    def _retire(self, w) -> None:
        p, conn = w
        self.all.discard(w)
        if p.is_alive():
            p.kill()
        p.join(timeout=5)
        conn.close()

    async def run(self, kind: str, payload) -> tuple:
        loop = asyncio.get_running_loop()
        w = await self.idle.get()
        p, conn = w
        try:
            conn.send((kind, payload))
            ready = await loop.run_in_executor(None, conn.poll, self.time_limit)
            if not ready:
                raise TimeoutError
            answer = conn.recv()
        except TimeoutError:
            await loop.run_in_executor(None, self._retire, w)
            self.idle.put_nowait(await loop.run_in_executor(None, self._start))
            return 422, {"error": f"the derivation took longer than the server's limit of "
                                  f"{self.time_limit:g} s and was stopped; simplify the "
                                  f"expression, or differentiate it in Python", "timeout": True}
        except (EOFError, OSError, BrokenPipeError):  # the worker died (out of memory, say)
            await loop.run_in_executor(None, self._retire, w)
            self.idle.put_nowait(await loop.run_in_executor(None, self._start))
            return 500, {"error": "the worker computing this request stopped unexpectedly (out of "
                                  "memory?); the server has started a new one"}
        self.idle.put_nowait(w)
        return answer

    def stop(self) -> None:
        for w in list(self.all):
            self._retire(w)


# --------------------------------------------------------------------------- the application

def create_app(workers: int = 2, time_limit: float = TIME_LIMIT):
    """The Starlette application: the page at /, assets under /static, the API under /api."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    pool = Workers(workers, time_limit)

    def error(status, message, **extra):
        return JSONResponse({"error": message, **extra}, status_code=status)

    too_big = f"the request body is over {MAX_BODY // 1024} KiB; send a shorter expression"

    async def body(request: Request):
        if int(request.headers.get("content-length") or 0) > MAX_BODY:
            return None, error(413, too_big)
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                return None, error(413, too_big)
        try:
            payload = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError) as e:
            return None, error(400, f"the request body is not JSON: {e}")
        if not isinstance(payload, dict):
            return None, error(400, "the request body must be a JSON object, e.g. "
                                    "{\"expression\": \"x'*A*x\", \"wrt\": [\"x\"]}")
        return payload, None

    def endpoint(kind):
        async def handle(request: Request):
            payload, failed = await body(request)
            if failed is not None:
                return failed
            status, answer = await pool.run(kind, payload)
            return JSONResponse(answer, status_code=status)
        return handle

    async def examples(request: Request):
        return JSONResponse({"examples": service.EXAMPLES})

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
                   help="worker processes deriving in parallel")
    p.add_argument("--time-limit", type=float, default=TIME_LIMIT,
                   help=f"seconds one derivation may take (default {TIME_LIMIT:g})")
    return p


def start_in_thread(app, host: str = "127.0.0.1", port: int = 0):
    """Serve ``app`` from a background thread (tests and benchmarks); returns (url, stop)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
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
    config = uvicorn.Config(create_app(args.workers, args.time_limit), log_level="warning")
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
