"""W1/W3 — what the live view costs: B1 and B3 with ``watch`` off and on, in one run.

* W1: B1's 200,000 ints through ``inc -> keep_even -> triple -> acc`` (all sync, fused).
* W3: B3's 200,000-item generator into an async sink (32 in flight).

Each is timed with the live view off and on, round-robin, best of N. "On" means what a
user has: the server running and a page connected — a client reads the event
stream the whole time (a separate process, as a browser is) and fetches the
graph when it changes, so every snapshot is built, serialised and sent. Target: on
costs < 5% (ratio on/off < 1.05). The server starts once per process (the first run
prints its address), so it is started before timing, as it would be for the second
run of a notebook; its start-up (~ tens of ms, a thread and a socket) is printed apart.

Run: ``python benchmarks/bench_watch.py [--quick] [--repeat N]``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``rxbot`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_core import b1_expected, b1_rxbot, b3_expected, b3_rxbot
from benchmarks.common import Row, best_of_each, print_rows, quick_from_env, unjudged
from rxbot import config

TARGET = 1.05


def watched(run: Callable[[int], Any], watch: Any) -> Callable[[int], Any]:
    """B1/B3's own rxbot function, run with ``config.watch`` set (what ``--watch`` does)."""

    def go(n: int) -> Any:
        saved, config.watch = config.watch, watch
        try:
            return run(n)
        finally:
            config.watch = saved

    return go


VIEWER = r"""
import json, sys, urllib.request
url, tally = sys.argv[1], sys.argv[2]
graph = ""
events = graphs = 0
with urllib.request.urlopen(url + "events") as stream:
    for line in stream:
        if line.startswith(b"data: "):
            events += 1
            snapshot = json.loads(line[6:])
            if snapshot["run"] and snapshot["graph"] != graph:  # as the page does
                graph = snapshot["graph"]
                urllib.request.urlopen(url + "graph.json").read()
                graphs += 1
            with open(tally, "a") as fh:  # appended: a kill mid-write loses one line only
                fh.write(f"{events} {graphs} {snapshot['run']} {snapshot['state']}\n")
"""


class Viewer:
    """A page's worth of load, in its own process as a browser would be: reads the
    event stream and fetches the graph when it changes, as the page does."""

    def __init__(self, url: str) -> None:
        self.tally = tempfile.NamedTemporaryFile(prefix="rxbot-viewer-", delete=False).name
        self.proc = subprocess.Popen([sys.executable, "-c", VIEWER, url, self.tally])
        deadline = time.monotonic() + 60
        while os.path.getsize(self.tally) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # connected: it has read the server's first snapshot

    def lines(self) -> List[List[str]]:
        with open(self.tally, encoding="utf-8") as fh:
            return [line.split() for line in fh if line.endswith("\n")]

    def close(self, last_run: int) -> Tuple[int, int]:
        """Stop once it has read the end of run ``last_run`` (at most 30 s); return the
        snapshots and pictures it read."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lines = self.lines()
            if lines and lines[-1][2:] == [str(last_run), "finished"]:
                break
            time.sleep(0.05)
        self.proc.terminate()
        self.proc.wait()
        lines = self.lines()
        os.unlink(self.tally)
        return (int(lines[-1][0]), int(lines[-1][1])) if lines else (0, 0)


def start_server() -> tuple:
    """Start the process's live-view server (as a first watched run would); return the
    server and the seconds it took."""
    from rxbot.draw.watch import server_for

    t0 = time.perf_counter()
    server, _ = server_for(True)
    return server, time.perf_counter() - t0


def compare(case: str, run: Callable[[int], Any], n: int, expected: Any, repeat: int) -> List[Row]:
    """Wall time (best of ``repeat``, round-robin) and the process's CPU time (every
    thread, so the server's work counts; less disturbed by other load on the machine)."""
    cpu: Dict[str, List[float]] = {"off": [], "on": []}

    def timed(name: str, go: Callable[[int], Any]) -> Callable[[], Any]:
        def call() -> Any:
            t0 = time.process_time()
            result = go(n)
            cpu[name].append(time.process_time() - t0)
            return result
        return call

    timings = best_of_each({"off": timed("off", watched(run, None)), "on": timed("on", watched(run, True))},
                           repeat=repeat)
    rows = []
    for name, t in timings.items():
        wrong = "" if t.result == expected else f" WRONG result {t.result!r}"
        rows.append(Row("W", f"{case} watch {name}", t.best * 1e6 / n, "µs/item",
                        note=f"wall, best of {repeat}; CPU {min(cpu[name]) * 1e6 / n:.3f} µs/item" + wrong))
    for what, ratio in (("wall", timings["on"].best / timings["off"].best),
                        ("CPU", min(cpu["on"]) / min(cpu["off"]))):
        rows.append(Row("W", f"{case} on/off ({what})", ratio, "x", ratio=ratio, vs="watch off",
                        target=f"< {TARGET}", ok=ratio < TARGET, note="slower" if ratio > 1 else "not slower"))
    return rows


def main(argv: Sequence[str] | None = None) -> List[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not a measurement)")
    parser.add_argument("--repeat", type=int, default=7, help="runs per figure; the best is kept (default 7)")
    args = parser.parse_args(list(argv) if argv is not None else sys.argv[1:])
    quick = args.quick or quick_from_env()
    n = 20_000 if quick else 200_000
    server, startup = start_server()
    viewer = Viewer(server.url)
    try:
        rows = compare(f"B1 {n:,} ints", b1_rxbot, n, b1_expected(n), args.repeat)
        rows += compare(f"B3 {n:,} into async sink", b3_rxbot, n, b3_expected(n), args.repeat)
    finally:
        events, graphs = viewer.close(server.latest["run"])
    rows.append(Row("W", "server start (once per process)", startup * 1e3, "ms",
                    note=f"the viewer read {events} snapshots and {graphs} graphs"))
    tag = " [--quick: sizes too small to judge targets]" if quick else ""
    print_rows(f"W live view cost: watch on (a page connected) vs off, same run{tag}",
               unjudged(rows) if quick else rows)
    return rows


if __name__ == "__main__":
    main()
