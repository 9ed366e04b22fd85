"""The live view: ``BotFrame.run(watch=True)`` and ``rxbot run --watch`` serve a page
with the graph and every step's numbers, updated while the run goes on.

The in-process tests read the Server-Sent Events stream with aiohttp, as the page does;
``test_browser_sees_counts_grow_then_the_final_report`` drives a real headless Chromium
against ``rxbot run --watch`` and saves the screenshot shown in docs/visualization.md
(copied there when ``RXBOT_DOCS_SCREENSHOT`` names the file to write).
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import select
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import aiohttp
import pytest

from rxbot import BotFrame, Loop, Pipe, Step, config
from rxbot.observe.report_io import counters
from rxbot.draw.watch import close_all, parse_address

from browser import Browser, find_browser
from launch import kill_group, popen

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _stop_servers():
    yield
    close_all()


async def slow(x):
    await asyncio.sleep(0.05)
    return x


def bad(x):
    if x == 3:
        raise ValueError("three")
    return x


async def read_events(url: str, until: set, seen: list) -> None:
    """Append every snapshot of ``url``'s event stream to ``seen`` until a state in ``until``."""
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "events") as reply:
            assert reply.headers["Content-Type"] == "text/event-stream"
            async for raw in reply.content:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    if seen[-1]["state"] in until:
                        return


async def printed_url(capsys) -> str:
    """The address a watched run prints (before any item flows)."""
    for _ in range(500):
        err = capsys.readouterr().err
        if "watch the run at " in err:
            return err.split("watch the run at ", 1)[1].split()[0]
        await asyncio.sleep(0.01)
    raise AssertionError("no address printed")


KEYS = ("inp", "out", "filtered", "consumed", "dropped", "failed")


def counts(snapshot: dict) -> dict:
    return {s["path"]: {k: s[k] for k in KEYS} for s in snapshot["steps"]}


def reported(report) -> dict:
    """The report's own counters (a sink's None is 'consumed', see rxbot.observe.report_io)."""
    return {str(key): {k: v for k, v in counters(report, key).items() if k in KEYS} for key in report.steps}


async def test_a_watched_run_streams_growing_counts_then_its_report(capsys):
    Pipe(Loop(range(30)), Step(bad, on_error="ignore"), Step(slow, concurrency=2), print)
    seen: list = []
    run = asyncio.ensure_future(BotFrame.run_async(watch=True))
    url = await printed_url(capsys)
    assert url.startswith("http://127.0.0.1:")
    reader = asyncio.ensure_future(read_events(url, {"finished", "failed"}, seen))
    report = await run
    await asyncio.wait_for(reader, 10)
    outs = [counts(s).get("P1[3] slow", {}).get("out", 0) for s in seen if s["state"] == "running"]
    assert outs == sorted(outs) and any(0 < o < 29 for o in outs), outs  # seen growing
    # so does the source (it publishes its count each time it pauses) ...
    emitted = [counts(s).get("P1[1] Loop(range(0, 30))", {}).get("out", 0) for s in seen
               if s["state"] == "running"]
    assert emitted == sorted(emitted) and any(0 < e < 30 for e in emitted), emitted
    # ... and an inline sync step counted (its policy is 'ignore')
    ins = [counts(s).get("P1[2] bad", {}).get("inp", 0) for s in seen if s["state"] == "running"]
    assert ins == sorted(ins) and any(0 < i < 30 for i in ins), ins
    final = seen[-1]
    assert final["state"] == "finished" and final["error"] is None
    assert counts(final) == reported(report)
    assert final["dead_letters"] == 1 and "three" in final["last_dead_letters"][0]
    assert [s["path"] for s in final["steps"]] == ["P1[1] Loop(range(0, 30))", "P1[2] bad", "P1[3] slow",
                                                  "P1[4] print"]
    step = {s["path"]: s for s in final["steps"]}["P1[3] slow"]
    assert step["in_flight"] == 0 and step["rate"] == pytest.approx(29 / report.seconds, rel=0.01)
    # totals, ETA and capacity where known: 30 items of 30, 'slow' holds up to 2
    running = [s for s in seen if s["state"] == "running"]
    assert all(s["expected"] == 30 for s in seen) and final["items"] == 30 and final["eta"] is None
    assert any(s["eta"] is not None and s["eta"] >= 0 for s in running)
    assert [s["items"] for s in running] == sorted(s["items"] for s in running)
    assert final["summary"].startswith("finished in ") and "30 items, 1 failed" in final["summary"]
    capacity = {s["path"]: s["capacity"] for s in final["steps"]}
    assert capacity == {"P1[1] Loop(range(0, 30))": None, "P1[2] bad": None, "P1[3] slow": 2, "P1[4] print": None}
    held = [{r["path"]: r for r in s["steps"]}["P1[3] slow"]["in_flight"] for s in running]
    assert max(held) <= 2
    assert step["lines"][0] == "in=29 out=29"
    # the page's picture: every step's node is found by its id in the SVG
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "graph.json") as reply:
            graph = await reply.json()
        async with session.get(url) as reply:
            page = await reply.text()
    ids = {g.get("id") for g in ET.fromstring(graph["svg"]).iter("{http://www.w3.org/2000/svg}g")}
    assert set(graph["nodes"].values()) == set(report.steps) and set(graph["nodes"]) <= ids
    # one static file, nothing fetched from elsewhere
    assert "EventSource(\"events\")" in page and "http://" not in page and "https://" not in page
    assert "<link" not in page and " src=" not in page


async def test_a_failed_run_is_shown_failed_with_its_error(capsys):
    config.watch = True  # what 'rxbot run --watch' sets
    Pipe(Loop(range(5)), Step(slow, concurrency=1), bad)
    run = asyncio.ensure_future(BotFrame.run_async())
    url = await printed_url(capsys)
    seen: list = []
    reader = asyncio.ensure_future(read_events(url, {"failed"}, seen))
    with pytest.raises(ValueError, match="three"):
        await run
    await asyncio.wait_for(reader, 10)
    assert seen[-1]["state"] == "failed" and seen[-1]["error"].startswith("ValueError: three")


def test_addresses_default_to_loopback_and_bad_ones_are_named():
    assert parse_address(True) == ("127.0.0.1", 0)
    assert parse_address(8765) == ("127.0.0.1", 8765)
    assert parse_address(":8765") == ("127.0.0.1", 8765)
    assert parse_address("0.0.0.0:80") == ("0.0.0.0", 80)
    with pytest.raises(ValueError, match="watch: port in 'host:http' is not a number"):
        parse_address("host:http")
    with pytest.raises(ValueError, match="watch: port must be 0..65535; got 70000"):
        parse_address(70000)
    with pytest.raises(TypeError, match="argument 'watch' must be True, a port or 'HOST:PORT'"):
        parse_address(1.5)


def test_without_watch_nothing_is_imported_or_started():
    code = ("import sys, threading; from rxbot import BotFrame, Loop, Pipe; "
            "Pipe(Loop(range(3)), print); BotFrame.run(); "
            "print(sorted(m for m in sys.modules if m.startswith(('rxbot.draw.watch', 'rxbot.draw.render', 'aiohttp.web'))), "
            "[t.name for t in threading.enumerate() if t.name.startswith('rxbot')])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[] []"


# ----------------------------------------------------------------------------- browser
SCRIPT = """
    import asyncio, json, os, sys
    from rxbot import BotFrame, Loop, Pipe, Step
    from rxbot.observe.report_io import counters

    GO, OUT = sys.argv[1], sys.argv[2]

    async def wait_for_go(x):
        while not os.path.exists(GO):      # the test starts the flow once the page is up
            await asyncio.sleep(0.02)
        return x

    async def fetch(x):                    # the slow step
        await asyncio.sleep(0.15)
        return x

    def check(x):
        if x == 5:
            raise ValueError("five is not allowed")
        return x

    Pipe(wait_for_go, Loop(range(30)), Step(fetch, concurrency=2), Step(check, on_error="ignore"),
         print, name="slow fetch")
    report = BotFrame.run()
    with open(OUT, "w") as fh:
        json.dump({str(k): counters(report, k) for k in report.steps}, fh)
"""

ROWS = """Array.from(document.querySelectorAll('#steps tbody tr')).map(tr => [tr.dataset.path,
    Object.fromEntries(Array.from(tr.querySelectorAll('td[class]')).map(td => [td.className, td.textContent]))])"""


def read_url(proc: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.2)
        if ready:
            line = proc.stderr.readline()
            text += line
            if "watch the run at " in line:
                return line.split("watch the run at ", 1)[1].strip()
        if proc.poll() is not None:
            break
    raise AssertionError(f"no address printed; stderr: {text}{proc.stderr.read() if proc.poll() is not None else ''}")


async def wait_for(page: Browser, expression: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await page.eval(expression)
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"page never satisfied {expression}")


async def test_browser_sees_counts_grow_then_the_final_report(tmp_path):
    find_browser()
    job = tmp_path / "job.py"
    job.write_text(textwrap.dedent(SCRIPT))
    go, out = tmp_path / "go", tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = popen([sys.executable, "-m", "rxbot", "run", "--watch", str(job), "--", str(go), str(out)],
                 cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = read_url(proc)
        assert url.startswith("http://127.0.0.1:")
        async with Browser() as page:
            await page.goto(url)
            await wait_for(page, "document.getElementById('state').textContent === 'running'")
            await wait_for(page, "document.querySelector('tr[data-path=\"P1[3] fetch\"]') !== null")
            go.write_text("go")
            seen, held, progress = [], [], []
            shot = None
            while True:
                state = await page.eval("document.getElementById('state').textContent")
                rows = dict(await page.eval(ROWS))
                if state != "running":
                    break
                seen.append(int(rows["P1[3] fetch"]["out"]))
                held.append(rows["P1[3] fetch"]["in_flight"])
                progress.append(await page.eval("document.getElementById('progress').textContent"))
                if shot is None and seen[-1] >= 10:
                    shot = await page.screenshot(str(tmp_path / "watch.png"))
                await asyncio.sleep(0.05)
            assert state == "finished"
            final_rows = dict(await page.eval(ROWS))
            node_text = await page.eval(
                "Array.from(document.getElementById('P1[3]').querySelectorAll('text')).map(t => t.textContent)")
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        kill_group(proc)
        proc.stderr.close()
    # the counts on the page grew while the run went on ...
    # (the last running snapshot may already show all 30: the run then still shuts down)
    assert seen == sorted(seen) and len({x for x in seen if 0 < x < 30}) >= 2, seen
    # the step's capacity beside what it holds ('in flight 2/2'); the items so far, with no
    # total: the source is a Loop behind a function, whose size is not known up front
    assert "2/2" in held and all(re.fullmatch(r"[012]/2", h) for h in held), held
    assert all(re.fullmatch(r"\d+ items", p) for p in progress) and progress[-1] != "0 items", progress
    # ... and the page ends on the run's own report
    report = json.loads(out.read_text())
    assert set(final_rows) == set(report)
    for path, stats in report.items():
        for key in ("inp", "out", "failed", "dropped", "filtered", "consumed"):
            assert int(final_rows[path][key]) == stats[key], (path, key)
    assert report["P1[3] fetch"]["out"] == 30 and report["P1[4] check"]["failed"] == 1
    assert node_text[0] == "fetch" and node_text[1] == "in=30 out=30"
    assert shot is not None and shot[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("RXBOT_DOCS_SCREENSHOT")
    if target:
        Path(target).write_bytes(shot)


def test_the_watch_benchmark_runs_and_its_viewer_sees_the_runs():
    from benchmarks import bench_watch

    rows = bench_watch.main(["--quick", "--repeat", "1"])
    assert [r.case for r in rows] == [
        "B1 20,000 ints watch off", "B1 20,000 ints watch on", "B1 20,000 ints on/off (wall)",
        "B1 20,000 ints on/off (CPU)", "B3 20,000 into async sink watch off", "B3 20,000 into async sink watch on",
        "B3 20,000 into async sink on/off (wall)", "B3 20,000 into async sink on/off (CPU)",
        "server start (once per process)"]
    assert not any("WRONG" in r.note for r in rows)
    events, graphs = map(int, re.match(r"the viewer read (\d+) snapshots and (\d+) graphs", rows[-1].note).groups())
    # each picture is fetched once at most; a --quick run can start and end between two
    # snapshots (sent twice a second), so the viewer may see one of the two graphs only
    assert 1 <= graphs <= 2 and events >= graphs
