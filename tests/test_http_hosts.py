"""HttpLoader for crawlers (issue 28): per-host limits without head-of-line blocking,
adaptive throttling, robots.txt, the HTTP cache. Servers on 127.0.0.2, 127.0.0.3, ...
(tests/hosts_http.py), measured from the servers' side."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections import Counter

import pytest

from hosts_http import Hosts
from rxbot import BotFrame, HttpLoader, Pipe, config

A, B, C = "127.0.0.2", "127.0.0.3", "127.0.0.4"


def interleave(*lists):
    out = []
    for group in zip(*lists):
        out.extend(group)
    return out


# ---- per-host limits --------------------------------------------------------------------

async def test_peak_concurrency_per_host_never_above_its_limit_and_global_cap_holds():
    async with Hosts([A, B, C]) as hosts:
        urls = interleave(*[[hosts.url(h, f"/n/{i}?sleep=0.01") for i in range(30)] for h in (A, B, C)])
        out: list = []
        loader = HttpLoader(per_host=2, concurrency=5)
        Pipe(urls, loader, lambda r: r.text, out.append)
        report = await BotFrame.run_async()
    assert sorted(out) == sorted(str(i) for i in range(30) for _ in range(3))
    assert {h: hosts.peak[h] for h in (A, B, C)} == {A: 2, B: 2, C: 2}  # at the limit, never above
    assert hosts.peak_total <= 5
    assert report.find("HttpLoader").out == 90


async def test_per_host_delay_spaces_requests_to_one_host():
    async with Hosts([A, B]) as hosts:
        urls = interleave([hosts.url(A, f"/n/{i}") for i in range(4)], [hosts.url(B, f"/n/{i}") for i in range(4)])
        Pipe(urls, HttpLoader(per_host_delay=0.25), lambda r: None)
        await BotFrame.run_async()
    for host in (A, B):
        starts = sorted(t for t, h, p, s in hosts.requests(host, "/n/"))
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        # starts 0.25 s apart; the server sees them so, give or take a connection's set-up
        assert len(gaps) == 3 and min(gaps) >= 0.15
    a_starts, b_starts = (sorted(t for t, *_ in hosts.requests(h, "/n/")) for h in (A, B))
    assert b_starts[0] < a_starts[1]  # the other host did not wait for A's delay


async def test_a_slow_host_does_not_hold_the_others():
    """A's requests are held by its server until every request to B and C has arrived:
    they all arrive only if the loader keeps its request slots busy with B and C while A
    is at its limit (with A's waiting calls holding the slots, B and C would wait for A's
    10 s timeout)."""
    async with Hosts([A, B, C]) as hosts:
        slow = [hosts.url(A, f"/hold/{i}") for i in range(20)]
        fast = interleave([hosts.url(B, f"/n/{i}") for i in range(20)], [hosts.url(C, f"/n/{i}") for i in range(20)])
        urls = interleave(slow, fast[:20]) + fast[20:]

        out: list = []

        def seen(r):
            out.append(r.url)
            if sum(1 for *_, p, s in hosts.log if p.startswith("/n/")) == 40:
                hosts.release()  # every fast request has been answered: A may go on

        Pipe(urls, HttpLoader(per_host=2, concurrency=4), seen)
        await BotFrame.run_async()
    held = [e for e in hosts.requests(A, "/hold/")]
    assert len(held) == 20 and all(status == 200 for *_, status in held)  # released, not timed out
    finished = [h for t, h, p, s in hosts.log]  # the log is in the order requests finished
    assert finished[:40] == [h for h in finished if h != A]  # all 40 fast ones before any of A's
    assert hosts.peak[A] == 2


# ---- adaptive throttling ----------------------------------------------------------------

async def test_throttle_settles_under_a_rate_limited_server():
    """The server refuses (429, no Retry-After) above ``rate`` requests/s. The crawl's
    settled half must see under 2 % refusals and at least 80 % of what the server allows
    — or of what this client reaches at all on this machine right now, measured first
    with the same loader settings on an unlimited path (the benchmark, on a quiet
    machine, holds it to 90 % and 1 %)."""
    rate = 45.0
    # retries: before the throttle has learnt the rate, the first burst may see one item
    # refused more times than the default 3 retries; what is measured is the settled half
    settings = dict(per_host=4, throttle=True, throttle_target=4, backoff=0.05, retries=10)
    async with Hosts([A], rate=rate) as hosts:
        Pipe([hosts.url(A, f"/n/{i}") for i in range(60)], HttpLoader(**settings), lambda r: None)
        await BotFrame.run_async()
        free = sorted(t for t, *_ in hosts.requests(A, "/n/"))
        capacity = (len(free) - 1) / (free[-1] - free[0])
        urls = [hosts.url(A, f"/limited/{i}") for i in range(180)]
        out: list = []
        loader = HttpLoader(**settings)
        Pipe(urls, loader, lambda r: out.append(r.status))
        await BotFrame.run_async()
    assert out == [200] * 180  # every item got through in the end
    log = sorted(hosts.requests(A, "/limited/"))
    half = log[len(log) // 2:]  # the settled part of the crawl, by the server's own log
    refused = sum(1 for *_, s in half if s == 429)
    accepted = [t for t, *_, s in half if s == 200]
    assert refused / len(half) < 0.02
    served = (len(accepted) - 1) / (accepted[-1] - accepted[0])
    assert served >= 0.8 * min(rate, capacity)
    assert served <= rate * 1.1  # the server's own bound (burst included)
    (numbers,) = loader.host_report().values()
    assert numbers["statuses"]["200"] == 180
    assert numbers["delay_s"] > 0


async def test_retry_after_pauses_the_whole_host():
    async with Hosts([A], retry_after="1") as hosts:
        urls = [hosts.url(A, f"/ra/{i}") for i in range(6)]
        Pipe(urls, HttpLoader(per_host=3, throttle=True), lambda r: None)
        await BotFrame.run_async()
    log = sorted(hosts.requests(A, "/ra/"))
    refused_at = [t for t, *_, s in log if s == 429]
    assert len(refused_at) == 1
    later = [t for t, *_, s in log if s == 200 and t > refused_at[0]]
    # requests already in flight with the refused one may land; after them nothing for 1 s
    assert len(later) >= 3 and sorted(later)[2] - refused_at[0] >= 0.95


async def test_without_throttle_429_does_not_slow_the_host():
    async with Hosts([A], retry_after="1") as hosts:
        Pipe([hosts.url(A, f"/ra/{i}") for i in range(4)], HttpLoader(per_host=4), lambda r: None)
        await BotFrame.run_async()
    refused_at = [t for t, *_, s in hosts.log if s == 429][0]
    assert sum(1 for t, *_, s in hosts.log if s == 200 and t - refused_at < 0.9) >= 1


# ---- robots.txt ---------------------------------------------------------------------------

async def test_robots_disallowed_paths_are_never_requested():
    robots = "User-agent: *\nDisallow: /n/private\nCrawl-delay: 0.3\n"
    async with Hosts([A, B], robots=robots) as hosts:
        urls = []
        for h in (A, B):
            urls += [hosts.url(h, f"/n/{i}") for i in range(3)] + [hosts.url(h, f"/n/private{i}") for i in range(2)]
        out: list = []
        loader = HttpLoader(robots=True, concurrency=8)
        Pipe(urls, loader, lambda r: out.append(r.text))
        report = await BotFrame.run_async()
    assert sorted(out) == ["0", "0", "1", "1", "2", "2"]
    assert not [e for e in hosts.log if "private" in e[2]]  # the server never saw one
    assert Counter(h for t, h, p, s in hosts.log if p == "/robots.txt") == {A: 1, B: 1}
    assert loader.robots_disallowed == 4
    assert {h: v["robots_dropped"] for h, v in loader.host_report().items()} == \
        {hosts.base[A][7:]: 2, hosts.base[B][7:]: 2}
    assert report.find("HttpLoader").filtered == 4
    for h in (A, B):  # Crawl-delay: 0.3 honoured (give or take a connection's set-up)
        starts = sorted(t for t, hh, p, s in hosts.requests(h, "/n/"))
        assert min(b - a for a, b in zip(starts, starts[1:])) >= 0.2


async def test_robots_off_by_default():
    async with Hosts([A], robots="User-agent: *\nDisallow: /\n") as hosts:
        Pipe([hosts.url(A, "/n/1")], HttpLoader(), lambda r: None)
        await BotFrame.run_async()
    assert [p for t, h, p, s in hosts.log] == ["/n/1"]


async def test_robots_unavailable_means_nothing_is_fetched():
    async with Hosts([A]) as hosts:
        hosts.robots = None
    # a server that refuses connections: robots.txt cannot be read, nothing is requested
    from local_http import free_port

    out: list = []
    Pipe([f"http://127.0.0.2:{free_port()}/n/1"], HttpLoader(robots=True, retries=0), out.append)
    await BotFrame.run_async()
    assert out == []


# ---- the HTTP cache -------------------------------------------------------------------------

async def test_cached_rerun_makes_zero_requests(tmp_path):
    path = tmp_path / "http.sqlite"
    async with Hosts([A, B], robots="User-agent: *\nDisallow: /nothing\n") as hosts:
        urls = [hosts.url(h, f"/n/{i}") for h in (A, B) for i in range(10)]
        first: list = []
        Pipe(urls, HttpLoader(cache=str(path), robots=True), lambda r: first.append((r.url, r.text, r.from_cache)))
        await BotFrame.run_async()
        requests_first = len(hosts.log)
        second: list = []
        loader = HttpLoader(cache=str(path), robots=True)
        Pipe(urls, loader, lambda r: second.append((r.url, r.text, r.from_cache)))
        await BotFrame.run_async()
        assert len(hosts.log) == requests_first == 22  # 20 pages + 2 robots.txt, then nothing
    assert sorted((u, t) for u, t, _ in first) == sorted((u, t) for u, t, _ in second)
    assert not any(c for *_, c in first) and all(c for *_, c in second)
    assert sum(h["cached"] for h in loader.host_report().values()) == 22


async def test_config_http_cache_and_expiry(tmp_path, monkeypatch):
    path = tmp_path / "c.sqlite"
    monkeypatch.setattr(config, "http_cache", str(path))
    async with Hosts([A]) as hosts:
        url = hosts.url(A, "/n/7")
        for _ in range(2):
            Pipe([url], HttpLoader(cache_expire=60), lambda r: None)
            await BotFrame.run_async()
        assert len(hosts.log) == 1
        with sqlite3.connect(path) as db:  # the entry was stored two minutes ago
            db.execute("update responses set stored = stored - 120")
        Pipe([url], HttpLoader(cache_expire=60), lambda r: None)
        await BotFrame.run_async()
        assert len(hosts.log) == 2


async def test_cache_key_varies_with_vary_headers_method_and_body(tmp_path):
    path = str(tmp_path / "c.sqlite")
    async with Hosts([A]) as hosts:
        url = hosts.url(A, "/vary/1")
        texts: list = []
        for lang in ("en", "fr", "en"):
            Pipe([url], HttpLoader(cache=path, headers={"Accept-Language": lang}), lambda r: texts.append(r.text))
            await BotFrame.run_async()
        assert texts == ["1 en", "1 fr", "1 fr"][:2] + ["1 en"]
        assert len(hosts.log) == 3  # fr replaced en: the third is a miss again
        n_url = hosts.url(A, "/n/1")
        Pipe([{"url": n_url, "params": {"a": "1"}}, {"url": n_url, "params": {"a": "2"}}, {"url": n_url}],
             HttpLoader(cache=path), lambda r: None)
        await BotFrame.run_async()
        assert len(hosts.log) == 6


async def test_cache_is_bounded(tmp_path):
    path = tmp_path / "c.sqlite"
    async with Hosts([A]) as hosts:
        urls = [hosts.url(A, f"/n/{'x' * 1000}{i}") for i in range(20)]
        Pipe(urls, HttpLoader(cache=str(path), cache_max_size=5000, concurrency=1), lambda r: None)
        await BotFrame.run_async()
    with sqlite3.connect(path) as db:
        size, count = db.execute("select sum(size), count(*) from responses").fetchone()
    assert size <= 5000 and 0 < count < 20


def test_rxbot_cache_clear(tmp_path):
    import asyncio

    path = tmp_path / "c.sqlite"

    async def fill():
        async with Hosts([A]) as hosts:
            Pipe([hosts.url(A, f"/n/{i}") for i in range(3)], HttpLoader(cache=str(path)), lambda r: None)
            await BotFrame.run_async()

    asyncio.run(fill())
    done = subprocess.run([sys.executable, "-m", "rxbot", "cache", "clear", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "3" in done.stdout
    with sqlite3.connect(path) as db:
        assert db.execute("select count(*) from responses").fetchone()[0] == 0
    bad = tmp_path / "not-a-cache"
    bad.write_text("hello")
    done = subprocess.run([sys.executable, "-m", "rxbot", "cache", "clear", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "not an HttpLoader cache" in done.stderr


# ---- arguments --------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, arg", [
    (dict(per_host=0), ValueError, "per_host"),
    (dict(per_host="2"), TypeError, "per_host"),
    (dict(per_host_delay=-1), ValueError, "per_host_delay"),
    (dict(per_host_rate=0), ValueError, "per_host_rate"),
    (dict(throttle="yes"), TypeError, "throttle"),
    (dict(robots=1), TypeError, "robots"),
    (dict(cache=5), TypeError, "cache"),
    (dict(cache_expire=0), ValueError, "cache_expire"),
    (dict(backlog=-1), ValueError, "backlog"),
])
def test_bad_politeness_arguments(kwargs, error, arg):
    with pytest.raises(error, match=f"argument '{arg}'"):
        HttpLoader(**kwargs)


def test_per_host_gives_the_engine_backlog_slots_not_more_requests():
    loader = HttpLoader(per_host=2, concurrency=8, backlog=100)
    assert (loader.concurrency, loader.max_in_flight) == (108, 8)
    plain = HttpLoader(concurrency=8)
    assert (plain.concurrency, plain.max_in_flight) == (8, 8)


# ---- per-host numbers ----------------------------------------------------------------------

async def test_per_host_numbers_in_the_report_its_json_and_text():
    import json

    async with Hosts([A, B]) as hosts:
        urls = [hosts.url(A, f"/n/{i}") for i in range(5)] + [hosts.url(B, "/ra/1"), hosts.url(B, "/n/xyz")]
        loader = HttpLoader(per_host=2, throttle=True, backoff=0.01, retries=1)
        Pipe(urls, loader, lambda r: None)
        report = await BotFrame.run_async()
    a, b = hosts.base[A][7:], hosts.base[B][7:]
    numbers = report.nodes["HttpLoader"]["hosts"]
    assert set(numbers) == {a, b}
    assert (numbers[a]["requests"], numbers[a]["statuses"], numbers[a]["bytes"]) == (5, {"200": 5}, 5)
    assert (numbers[b]["requests"], numbers[b]["statuses"]) == (3, {"200": 2, "429": 1})
    assert numbers[b]["delay_s"] > 0  # the refusal slowed B down (throttle)
    assert numbers[a]["latency_ms"]["p50"] <= numbers[a]["latency_ms"]["p90"] <= numbers[a]["latency_ms"]["p99"]
    data = json.loads(report.to_json())
    assert data["nodes"]["HttpLoader"]["hosts"][a]["requests"] == 5
    assert f"HttpLoader {b}: requests=3 [200:2 429:1]" in str(report)


async def test_per_host_numbers_live_in_stats_progress_and_the_live_view(monkeypatch):
    from rxbot.observe.progress import node_text
    from rxbot.draw.watch.snapshot import Sampler

    async with Hosts([A]) as hosts:
        live: list = []
        urls = [hosts.url(A, f"/n/{i}?sleep=0.02") for i in range(30)]
        Pipe(urls, HttpLoader(per_host=1), lambda r: None)
        monkeypatch.setattr(config, "stats_hook", live.append)
        monkeypatch.setattr(config, "stats_interval", 0.05)
        report = await BotFrame.run_async()
    a = hosts.base[A][7:]
    running = [s["nodes"]["HttpLoader"]["hosts"][a]["requests"] for s in live
               if not s["final"] and s["nodes"].get("HttpLoader", {}).get("hosts")]
    assert running and 0 < min(running) and max(running) < 30  # seen while the crawl went on
    assert live[-1]["final"] and live[-1]["nodes"]["HttpLoader"]["hosts"][a]["requests"] == 30
    assert node_text(report, "HttpLoader").startswith(f" | {a} 30 req p50 ")
    snap = Sampler(1, "g").snapshot(report, state="finished")
    assert snap["nodes"]["HttpLoader"]["hosts"][a]["statuses"] == {"200": 30}


async def test_a_cached_error_status_raises_again_without_a_request(tmp_path):
    from rxbot.http import HttpError

    path = str(tmp_path / "c.sqlite")
    async with Hosts([A]) as hosts:
        url = hosts.url(A, "/missing")
        for _ in range(2):
            async with HttpLoader(cache=path, raise_for_status=True) as get:
                with pytest.raises(HttpError, match="HTTP 404"):
                    await get(url)
        assert len(hosts.log) == 1
