"""Latency and throughput of `matdiff serve` (issue 15).

1. From request to typeset result, in headless Chromium: for each example of the page's menu,
   the page is opened at the example's shared link and timed until KaTeX has typeset every
   result (median and p95 over the runs; the numeric check and code generation included).
2. The same requests through the JSON API alone (median and p95).
3. Throughput: 8 concurrent clients posting the examples round-robin for a fixed time.

Run: python benchmarks/web.py [--runs 5] [--seconds 10] [--workers 2]
Needs the web extra, Playwright and Debian's chromium (as the tests).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import platform
import shutil
import statistics
import threading
import time
import urllib.parse

import httpx

from matdiff import service
from matdiff.server import create_app, start_in_thread


def _p95(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


def _fmt(t):
    return f"{t * 1e3:.0f} ms" if t >= 0.1 else f"{t * 1e3:.1f} ms"


def _link(example) -> str:
    p = {"e": example["expression"], "w": ",".join(example["wrt"]), "o": str(example.get("order", 1))}
    if example.get("dialect"):
        p["d"] = example["dialect"]
    if example.get("layout"):
        p["l"] = example["layout"]
    if example.get("declarations"):
        import json
        p["v"] = json.dumps(example["declarations"])
    return "#" + urllib.parse.urlencode(p, quote_via=urllib.parse.quote)


def _body(example) -> dict:
    return {k: v for k, v in example.items() if k != "name"} | {"check": True, "code": True}


def browser_latency(url, runs, chromium):
    from playwright.sync_api import sync_playwright

    rows = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(url + "/")
        page.wait_for_selector(".result .katex")
        for example in service.EXAMPLES:
            times = []
            for _ in range(runs + 1):  # the first run warms the worker's caches: not counted
                page.goto("about:blank")
                t = time.perf_counter()
                page.goto(url + "/" + _link(example))
                page.wait_for_function(
                    f"document.querySelectorAll('.result .formula .katex').length === {len(example['wrt'])}")
                times.append(time.perf_counter() - t)
            rows[example["name"]] = times[1:]
        browser.close()
    return rows


def api_latency(url, runs):
    rows = {}
    with httpx.Client(timeout=120) as client:
        for example in service.EXAMPLES:
            times = []
            for _ in range(runs + 1):
                t = time.perf_counter()
                r = client.post(url + "/api/derive", json=_body(example))
                times.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
            rows[example["name"]] = times[1:]
    return rows


def throughput(url, clients, seconds):
    done, stop = [], threading.Event()

    def client(k):
        with httpx.Client(timeout=120) as c:
            i = k
            while not stop.is_set():
                r = c.post(url + "/api/derive", json=_body(service.EXAMPLES[i % len(service.EXAMPLES)]))
                assert r.status_code == 200, r.text
                done.append(time.perf_counter())
                i += 1

    with concurrent.futures.ThreadPoolExecutor(clients) as ex:
        t0 = time.perf_counter()
        futures = [ex.submit(client, k) for k in range(clients)]
        time.sleep(seconds)
        stop.set()
        for f in futures:
            f.result()
    return len([t for t in done if t - t0 <= seconds]) / seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    a = ap.parse_args(argv)
    url, stop = start_in_thread(create_app(workers=a.workers, time_limit=60))
    try:
        print(f"Machine: {platform.machine()}, {a.workers} workers; Python {platform.python_version()}; "
              f"{time.strftime('%Y-%m-%d')}; {a.runs} runs after a warm-up, numeric check and code "
              f"included\n")
        page = browser_latency(url, a.runs, a.chromium)
        api = api_latency(url, a.runs)
        print("| example | page: median | page: p95 | API: median | API: p95 |")
        print("|---|---|---|---|---|")
        for name in page:
            print(f"| {name} | {_fmt(statistics.median(page[name]))} | {_fmt(_p95(page[name]))} | "
                  f"{_fmt(statistics.median(api[name]))} | {_fmt(_p95(api[name]))} |")
        every_page = [t for ts in page.values() for t in ts]
        every_api = [t for ts in api.values() for t in ts]
        print(f"| all examples | {_fmt(statistics.median(every_page))} | {_fmt(_p95(every_page))} | "
              f"{_fmt(statistics.median(every_api))} | {_fmt(_p95(every_api))} |")
        rate = throughput(url, 8, a.seconds)
        print(f"\nThroughput, 8 concurrent clients posting the examples round-robin for "
              f"{a.seconds:g} s: {rate:.1f} derivations per second")
    finally:
        stop()


if __name__ == "__main__":
    main()
