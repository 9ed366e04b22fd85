"""HTTP benchmark: 2,000 GETs at 100 in flight, rxbot's HttpLoader vs plain aiohttp.

The baseline is what one would write by hand: one ``ClientSession``, an
``asyncio.Semaphore(100)`` and ``asyncio.gather``, reading every body. Both clients hit
the same local aiohttp server, which runs in a **subprocess** so that its CPU time is
not charged to whichever client is measured. Each client runs ``--repeat`` times,
alternating which goes first; the best run of each is compared (target: rxbot ≤ 1.3×).

Two scenarios: ``latency 0`` (the server answers at once: pure client overhead) and
``latency 10 ms`` (each answer takes 10 ms: floor = n / concurrency × 10 ms).

Then the crawling-politely scenarios (issue 28), on servers at 127.0.0.2-5: H1 the cost
of the per-host machinery on the same 2,000 GETs (same run, with and without; target
<= 5 %), H2 a slow host in the stream (the fast hosts' throughput within 10 % of a run
without it), H3 ``throttle=True`` against a server answering 429 above N requests/s
(settles at >= 0.9 N with < 1 % refusals).

Run: ``python benchmarks/bench_http.py [--n 2000] [--concurrency 100] [--repeat 3] [--only polite]``.
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

def serve(addresses: List[str]) -> None:
    """Serve on each address (a free port each): ``GET /n/{i}?latency=s`` and
    ``GET /limited/{i}?rate=N`` (a token bucket of N requests/s per address, burst N/10:
    429 when empty; refusals take no token). Print ``PORT <address> <port>`` per address,
    then ``READY``; stop on stdin EOF."""
    from aiohttp import web

    buckets: Dict[str, list] = {}

    async def number(request: web.Request) -> web.Response:
        latency = float(request.query.get("latency", "0"))
        if latency:
            await asyncio.sleep(latency)
        return web.Response(text=request.match_info["i"])

    async def limited(request: web.Request) -> web.Response:
        rate = float(request.query["rate"])
        host = request.transport.get_extra_info("sockname")[0]
        now = time.monotonic()
        burst = max(1.0, rate / 10)
        tokens, then = buckets.get(host, [burst, now])
        tokens = min(burst, tokens + (now - then) * rate)
        if tokens < 1:
            buckets[host] = [tokens, now]
            return web.Response(status=429, text="slow down")
        buckets[host] = [tokens - 1, now]
        return web.Response(text=request.match_info["i"])

    async def run() -> None:
        runners = []
        for address in addresses:
            app = web.Application()
            app.router.add_get("/n/{i}", number)
            app.router.add_get("/limited/{i}", limited)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            site = web.TCPSite(runner, address, 0, backlog=1024)
            await site.start()
            runners.append(runner)
            print("PORT", address, runner.addresses[0][1], flush=True)
        print("READY", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # parent closes stdin to stop us
        for runner in runners:
            await runner.cleanup()

    asyncio.run(run())


class ServerProcess:
    """The server in a subprocess; ``with ServerProcess(addresses) as bases`` gives
    ``{address: 'http://address:port'}`` (one address: the base URL itself)."""

    def __init__(self, addresses: List[str] | None = None) -> None:
        self.addresses = addresses or ["127.0.0.1"]

    def __enter__(self) -> Any:
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", ",".join(self.addresses)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        bases: Dict[str, str] = {}
        while True:
            line = self.proc.stdout.readline().split()
            if line == ["READY"]:
                break
            if len(line) != 3 or line[0] != "PORT":
                self.proc.kill()
                raise RuntimeError(f"benchmark server did not start (said {line!r})")
            bases[line[1]] = f"http://{line[1]}:{line[2]}"
        return bases if len(self.addresses) > 1 else bases[self.addresses[0]]

    def __exit__(self, *exc: Any) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---- the two clients -------------------------------------------------------------------

def run_rxbot(urls: List[str], concurrency: int, **politeness: Any) -> tuple[float, list]:
    from rxbot import BotFrame, HttpLoader, Pipe

    bodies: list = []
    Pipe(urls, HttpLoader(concurrency=concurrency, **politeness), lambda r: r.text, bodies.append)
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


# ---- crawling politely (issue 28) -------------------------------------------------------

def per_host_cost(base: str, n: int, concurrency: int, repeat: int) -> Dict[str, Any]:
    """H1: the per-host machinery's cost. The same GETs, the same run, round-robin:
    HttpLoader() against HttpLoader(per_host=concurrency) — the host gate on every
    request, its limit never reached, so only its cost shows (target <= 5 %)."""
    urls = [f"{base}/n/{i}" for i in range(n)]
    expected = Counter(str(i) for i in range(n))
    runs: Dict[str, list] = {"plain": [], "per_host": []}
    cpu: Dict[str, list] = {"plain": [], "per_host": []}
    clients: List[tuple] = [("plain", {}), ("per_host", {"per_host": concurrency})]
    run_rxbot(urls[:concurrency], concurrency)
    for r in range(repeat):
        for name, politeness in (clients if r % 2 == 0 else clients[::-1]):
            used = time.process_time()
            seconds, bodies = run_rxbot(urls, concurrency, **politeness)
            cpu[name].append(time.process_time() - used)
            if Counter(bodies) != expected:
                raise AssertionError(f"{name}: wrong responses ({len(bodies)} of {n})")
            runs[name].append(seconds)
    best = {k: min(v) for k, v in runs.items()}
    best_cpu = {k: min(v) for k, v in cpu.items()}
    # the client's own CPU time is the cost itself, and other load on the machine
    # moves it far less than the wall-clock time
    return {"best": best, "ratio": best["per_host"] / best["plain"], "cpu": best_cpu,
            "cpu_ratio": best_cpu["per_host"] / best_cpu["plain"]}


def fast_hosts_done(urls: List[str], fast: List[str], **loader: Any) -> float:
    """Seconds until the last response from the ``fast`` base URLs arrived."""
    from rxbot import BotFrame, HttpLoader, Pipe

    last = [0.0]
    started = time.perf_counter()

    def seen(r: Any) -> None:
        if r.url.startswith(tuple(fast)):
            last[0] = time.perf_counter() - started

    Pipe(urls, HttpLoader(**loader), seen)
    BotFrame.run()
    return last[0]


def slow_host(bases: Dict[str, str], n: int, repeat: int) -> Dict[str, Any]:
    """H2: head-of-line blocking. Two fast hosts (10 ms answers), ``n`` GETs each, with
    a slow host (1 s answers, n/10 GETs) mixed into the stream; per_host=8,
    concurrency=32 (more than the three hosts' limits together: the global cap never
    binds, so only head-of-line blocking could slow the fast hosts). The fast hosts' time with the slow one in the stream against without
    it (target: throughput within 10 %), and without per-host limits for contrast."""
    slow, fast = list(bases)[0], list(bases)[1:3]
    fast_urls = [u for i in range(n) for u in (f"{bases[fast[0]]}/n/{i}?latency=0.01",
                                                 f"{bases[fast[1]]}/n/{i}?latency=0.01")]
    slow_urls = [f"{bases[slow]}/n/{i}?latency=1" for i in range(n // 10)]
    mixed: List[str] = []
    for i, url in enumerate(fast_urls):
        mixed.append(url)
        if i % 20 == 0 and slow_urls:
            mixed.append(slow_urls.pop())
    mixed += slow_urls
    fast_bases = [bases[h] for h in fast]
    runs: Dict[str, list] = {"alone": [], "with slow": [], "with slow, no per_host": []}
    for _ in range(repeat):
        runs["alone"].append(fast_hosts_done(fast_urls, fast_bases, per_host=8, concurrency=32))
        runs["with slow"].append(fast_hosts_done(mixed, fast_bases, per_host=8, concurrency=32))
        runs["with slow, no per_host"].append(fast_hosts_done(mixed, fast_bases, concurrency=32))
    best = {k: min(v) for k, v in runs.items()}
    return {"best": best, "ratio": best["alone"] / best["with slow"],
            "ratio_plain": best["alone"] / best["with slow, no per_host"]}


def throttled(bases: Dict[str, str], n: int, rate: float) -> Dict[str, Any]:
    """H3: a server refusing (429, no Retry-After) above ``rate`` requests/s. Settled:
    the last 80 % of the crawl's pages (target: >= 0.9 x rate, < 1 % refusals).
    ``throttle_target=8`` (= per_host): the latency-driven pace alone would allow 8
    requests in flight, so what is measured is the adaptation to the refusals (with
    Scrapy's default target of 1, the pace is one request per latency, which on a busy
    machine can be below the server's limit by itself)."""
    from rxbot import BotFrame, HttpLoader, Pipe

    base = bases[list(bases)[3]]
    settings = dict(per_host=8, throttle=True, throttle_target=8, concurrency=16)
    # what this client reaches at all right now, with the same settings, unlimited
    free: List[float] = []
    Pipe([f"{base}/n/{i}" for i in range(min(n, 500))], HttpLoader(**settings),
         lambda r: free.append(time.perf_counter()))
    BotFrame.run()
    capacity = (len(free) - 1) / (max(free) - min(free))
    urls = [f"{base}/limited/{i}?rate={rate:g}" for i in range(n)]
    times: List[float] = []
    loader = HttpLoader(**settings)
    Pipe(urls, loader, lambda r: times.append(time.perf_counter()) if r.status == 200 else None)
    started = time.perf_counter()
    BotFrame.run()
    seconds = time.perf_counter() - started
    (numbers,) = loader.hosts.values()
    refused = numbers["statuses"].get("429", 0)
    settled = sorted(times)[len(times) // 5:]
    settled_rate = (len(settled) - 1) / (settled[-1] - settled[0])
    return {"rate": rate, "seconds": seconds, "requests": numbers["requests"], "refused": refused,
            "refused_share": refused / numbers["requests"], "settled_rate": settled_rate,
            "settled_ratio": settled_rate / rate, "pages": len(times), "capacity": capacity,
            "reachable_ratio": settled_rate / min(rate, capacity)}


def shard_status(response: Any) -> int:
    return response.status


def sharded(base: str, n: int) -> Dict[str, Any]:
    """H4: the cost of dividing per-host limits among shards. ``n`` GETs to one host
    answering in 50 ms, ``per_host=4``: a local run (4 in flight) against a run of 2
    shards on a LocalCluster (2 in flight each, 4 in all), after a warm-up sharded run
    of 8 GETs (workers import rxbot once). The floor of both is n / 4 × 50 ms; what the
    sharded run takes beyond the local one is its fixed cost plus what the division
    leaves unused (at the end, one shard's share is done while the other still has
    URLs)."""
    import distributed

    from rxbot import BotFrame, HttpLoader, Pipe
    from rxbot.engine.dask_boost import LOCAL_CLUSTER_OPTIONS

    urls = [f"{base}/n/{i}?latency=0.05" for i in range(n)]
    out: Dict[str, Any] = {"floor": n / 4 * 0.05}
    started = time.perf_counter()
    Pipe(urls, HttpLoader(per_host=4), shard_status)
    BotFrame.run()
    out["local"] = time.perf_counter() - started
    with distributed.LocalCluster(**{**LOCAL_CLUSTER_OPTIONS, "n_workers": 2, "threads_per_worker": 1}) as cluster:
        for name, count in (("fixed", 8), ("sharded", n)):
            Pipe(urls[:count], HttpLoader(per_host=4), shard_status)
            started = time.perf_counter()
            BotFrame.run(cluster=cluster.scheduler_address, shards=2)
            out[name] = time.perf_counter() - started
    out["ratio"] = out["sharded"] / out["local"]
    return out


def politeness(args: argparse.Namespace) -> List[Dict[str, Any]]:
    results: List[Dict[str, Any]] = []
    n = args.n
    with ServerProcess(["127.0.0.1"]) as base:
        cost = per_host_cost(base, n, args.concurrency, args.repeat)
    print(f"H1 per-host machinery, {n} GETs at {args.concurrency} in flight, best of {args.repeat}, same run, "
          f"round-robin:")
    print(f"  HttpLoader()                         best {cost['best']['plain']:.3f} s")
    print(f"  HttpLoader(per_host={args.concurrency:<3})             best {cost['best']['per_host']:.3f} s")
    print(f"  client CPU time                      {cost['cpu']['plain']:.3f} s / {cost['cpu']['per_host']:.3f} s")
    verdict = "ok" if cost["ratio"] <= 1.05 else "ABOVE TARGET"
    print(f"  cost of the per-host machinery       {(cost['ratio'] - 1) * 100:+.1f} % wall, "
          f"{(cost['cpu_ratio'] - 1) * 100:+.1f} % CPU  (target <= 5 %: {verdict})")
    results.append({"scenario": "per_host_cost", **cost})
    with ServerProcess(["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]) as bases:
        size = max(50, n // 4)
        blocking = slow_host(bases, size, max(1, args.repeat - 1))
        print(f"H2 slow host: two fast hosts x {size} GETs (10 ms), a slow host (1 s) mixed in; "
              f"per_host=8, concurrency=32:")
        for name, seconds in blocking["best"].items():
            print(f"  fast hosts done, {name:24s} {seconds:.3f} s")
        verdict = "ok" if blocking["ratio"] >= 0.9 else "BELOW TARGET"
        print(f"  fast throughput with / without slow  {blocking['ratio']:.2f}  (target >= 0.90: {verdict}); "
              f"without per_host: {blocking['ratio_plain']:.2f}")
        results.append({"scenario": "slow_host", **blocking})
        limit = throttled(bases, args.throttle_n, args.rate)
        ok = limit["reachable_ratio"] >= 0.9 and limit["refused_share"] < 0.01
        print(f"H3 throttle=True, server refusing above {args.rate:g} req/s: {limit['pages']} pages, "
              f"{limit['requests']} requests in {limit['seconds']:.2f} s; settled {limit['settled_rate']:.1f} req/s "
              f"= {limit['settled_ratio']:.2f} x the limit; 429s {limit['refused']} = "
              f"{limit['refused_share'] * 100:.2f} %; this client unlimited: {limit['capacity']:.1f} req/s, "
              f"so {limit['reachable_ratio']:.2f} x what was reachable  "
              f"(target >= 0.90 x, < 1 %: {'ok' if ok else 'MISSED'})")
        results.append({"scenario": "throttle", **limit})
    if args.shards:
        with ServerProcess(["127.0.0.6"]) as base:
            split = sharded(base, args.shards_n)
        print(f"H4 per_host=4 divided among 2 shards, {args.shards_n} GETs of 50 ms to one host (floor "
              f"{split['floor']:.2f} s): local {split['local']:.2f} s, 2 shards {split['sharded']:.2f} s "
              f"(warm-up run of 8 GETs: {split['fixed']:.2f} s); sharded / local = {split['ratio']:.2f}")
        results.append({"scenario": "shards", **split})
    return results


def main(argv: List[str] | None = None) -> List[Dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency", type=float, action="append",
                        help="server latency in seconds (repeatable; default: 0 and 0.01)")
    parser.add_argument("--rate", type=float, default=100.0, help="H3: the server's limit (requests/s)")
    parser.add_argument("--throttle-n", type=int, default=2000, help="H3: pages crawled")
    parser.add_argument("--only", default="", help="'polite' for H1-H3 only, 'aiohttp' for the comparison only")
    parser.add_argument("--quick", action="store_true", help="small sizes (targets not judged)")
    parser.add_argument("--shards", action="store_true", help="H4: per-host limits divided among 2 shards "
                        "(starts a Dask LocalCluster)")
    parser.add_argument("--shards-n", type=int, default=400, help="H4: GETs")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.repeat, args.throttle_n, args.rate = 300, 1, 150, 50.0
    if args.only == "polite":
        return politeness(args)
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
    if args.only != "aiohttp":
        results += politeness(args)
    return results


if __name__ == "__main__":  # (the guard also keeps H4's LocalCluster workers from running main)
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2].split(","))
    else:
        main()
