"""HTTP benchmark: 2,000 GETs at 100 in flight, rxbot's HttpLoader vs plain aiohttp.

The baseline is what one would write by hand: one ``ClientSession``, an
``asyncio.Semaphore(100)`` and ``asyncio.gather``, reading every body. Both clients hit
the same local aiohttp server, which runs in a **subprocess** so that its CPU time is
not charged to whichever client is measured. Each client runs ``--repeat`` times,
alternating which goes first; the best run of each is compared (target: rxbot ≤ 1.3×).

Two scenarios: ``latency 0`` (the server answers at once: pure client overhead) and
``latency 10 ms`` (each answer takes 10 ms: floor = n / concurrency × 10 ms).

Run: ``python benchmarks/bench_http.py [--n 2000] [--concurrency 100] [--repeat 3]``.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing


# ---- the server (subprocess) -----------------------------------------------------------

def serve() -> None:
    """Serve ``GET /n/{i}?latency=s`` on a free port; print ``PORT <n>``; stop on stdin EOF."""
    from aiohttp import web

    async def number(request: web.Request) -> web.Response:
        latency = float(request.query.get("latency", "0"))
        if latency:
            await asyncio.sleep(latency)
        return web.Response(text=request.match_info["i"])

    async def run() -> None:
        app = web.Application()
        app.router.add_get("/n/{i}", number)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        print("PORT", runner.addresses[0][1], flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # parent closes stdin to stop us
        await runner.cleanup()

    asyncio.run(run())


class ServerProcess:
    def __enter__(self) -> str:
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "PORT":
            self.proc.kill()
            raise RuntimeError(f"benchmark server did not start (said {line!r})")
        return f"http://127.0.0.1:{line[1]}"

    def __exit__(self, *exc: Any) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---- the two clients -------------------------------------------------------------------

def run_rxbot(urls: List[str], concurrency: int) -> tuple[float, list]:
    from rxbot import BotFrame, HttpLoader, Pipe

    bodies: list = []
    Pipe(urls, HttpLoader(concurrency=concurrency), lambda r: r.text, bodies.append)
    started = time.perf_counter()
    BotFrame.run()
    return time.perf_counter() - started, bodies


def run_plain(urls: List[str], concurrency: int) -> tuple[float, list]:
    import aiohttp

    async def main() -> list:
        sem = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession() as session:
            async def fetch(url: str) -> str:
                async with sem:
                    async with session.get(url) as resp:
                        resp.raise_for_status()
                        return await resp.text()

            return await asyncio.gather(*(fetch(u) for u in urls))

    started = time.perf_counter()
    bodies = asyncio.run(main())
    return time.perf_counter() - started, bodies


def scenario(base: str, n: int, concurrency: int, repeat: int, latency: float) -> Dict[str, Any]:
    query = f"?latency={latency}" if latency else ""
    urls = [f"{base}/n/{i}{query}" for i in range(n)]
    expected = Counter(str(i) for i in range(n))
    runs: Dict[str, list] = {"rxbot": [], "aiohttp": []}
    clients = [("rxbot", run_rxbot), ("aiohttp", run_plain)]
    run_plain(urls[:concurrency], concurrency)  # warm up: imports, server accept queue
    run_rxbot(urls[:concurrency], concurrency)
    for r in range(repeat):
        for name, client in (clients if r % 2 == 0 else clients[::-1]):
            seconds, bodies = client(urls, concurrency)
            if Counter(bodies) != expected:
                raise AssertionError(f"{name}: wrong responses ({len(bodies)} of {n})")
            runs[name].append(seconds)
    best = {k: min(v) for k, v in runs.items()}
    return {
        "latency": latency,
        "floor": n / concurrency * latency,
        "best": best,
        "median": {k: statistics.median(v) for k, v in runs.items()},
        "ratio": best["rxbot"] / best["aiohttp"],
    }


def main(argv: List[str] | None = None) -> List[Dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency", type=float, action="append",
                        help="server latency in seconds (repeatable; default: 0 and 0.01)")
    args = parser.parse_args(argv)
    latencies = args.latency or [0.0, 0.01]
    results = []
    print(f"bench_http: {args.n} GETs, {args.concurrency} in flight, best of {args.repeat}, "
          f"server in a subprocess; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    with ServerProcess() as base:
        for latency in latencies:
            res = scenario(base, args.n, args.concurrency, args.repeat, latency)
            results.append(res)
            floor = f", floor {res['floor']:.3f} s" if latency else ""
            print(f"latency {latency * 1000:g} ms{floor}:")
            for name in ("aiohttp", "rxbot"):
                label = "aiohttp + Semaphore + gather" if name == "aiohttp" else "rxbot HttpLoader"
                print(f"  {label:30s} best {res['best'][name]:.3f} s  median {res['median'][name]:.3f} s  "
                      f"({args.n / res['best'][name]:,.0f} req/s)")
            verdict = "ok" if res["ratio"] <= 1.3 else "ABOVE TARGET"
            print(f"  ratio rxbot / aiohttp           {res['ratio']:.2f}x  (target <= 1.3x: {verdict})")
    return results


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        main()
