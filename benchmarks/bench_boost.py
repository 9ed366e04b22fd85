"""Boost benchmark (issue 9): a CPU-bound step run inline, in threads, in processes and
on Dask, as ratios to the inline run.

* X1 — 40 items, each ``sum(i * i for i in range(200_000 + item))`` (≈10-20 ms of pure
  Python), ``Pipe(Loop(range(40)), Step(work, boost=...), acc)``:

  - ``inline``: a plain sync step on the event loop (the baseline);
  - ``thread``: ``boost='thread'``. The GIL serialises pure-Python work, so expect ≈1×
    or a bit worse. Threads are for *blocking I/O*, which releases the GIL;
  - ``process``: ``boost='process'``, a pool of min(32, CPUs) processes started by the
    run. Expect up to CPUs× faster, minus the pool start-up;
  - ``dask (own cluster)``: ``boost='cluster'`` with no address. The run starts a
    2-worker ``LocalCluster`` and closes it, so this figure includes about a second of
    cluster start and stop;
  - ``dask (running cluster)``: ``boost='cluster'`` pointed at a LocalCluster started once
    beforehand (``config.dask_address``), i.e. per-task overhead only.

Run: ``python benchmarks/bench_boost.py [--quick] [--repeat N] [--items N]``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Sequence

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``rxbot`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Row, best_of_each, compared, print_rows, quick_from_env, unjudged
from rxbot import BotFrame, Loop, Pipe, Step, config

SIZE = 200_000


def work(item: int) -> int:
    """The CPU-bound step: pure Python, holds the GIL the whole time."""
    return sum(i * i for i in range(SIZE + item))


def rxbot_run(items: int, boost: str | None) -> int:
    total = [0]

    def acc(x: int) -> None:
        total[0] += x

    step = work if boost is None else Step(work, boost=boost)
    Pipe(Loop(range(items)), step, acc)
    BotFrame.run()
    return total[0]


def plain_loop(items: int) -> int:
    return sum(work(i) for i in range(items))


def _with_address(address: str | None, fn: Callable[[], int]) -> Callable[[], int]:
    def run() -> int:
        saved = config.dask_address
        config.dask_address = address
        try:
            return fn()
        finally:
            config.dask_address = saved

    return run


def measure(items: int, repeat: int, dask: bool = True) -> List[Row]:
    runs: Dict[str, Callable[[], int]] = {
        "plain loop": lambda: plain_loop(items),
        "inline": lambda: rxbot_run(items, None),
        "thread": lambda: rxbot_run(items, "thread"),
        "process": lambda: rxbot_run(items, "process"),
    }
    cluster = None
    if dask:
        try:
            from distributed import LocalCluster

            from rxbot.engine.dask_boost import LOCAL_CLUSTER_OPTIONS
        except ImportError:
            dask = False
        else:
            cluster = LocalCluster(**LOCAL_CLUSTER_OPTIONS)
            runs["dask (own cluster)"] = _with_address(None, lambda: rxbot_run(items, "cluster"))
            runs["dask (running cluster)"] = _with_address(
                cluster.scheduler_address, lambda: rxbot_run(items, "cluster"))
    try:
        timings = best_of_each(runs, repeat=repeat)
    finally:
        if cluster is not None:
            cluster.close()
    expected = timings["plain loop"].result
    base = timings["inline"].best
    cpus = os.cpu_count() or 1
    rows = []
    for name, t in timings.items():
        right = t.result == expected
        target, ok = "", None
        if name == "process" and cpus > 1:
            target, ok = "< 1x inline", t.best < base
        if not right:
            ok = False
        rows.append(Row(
            bench="X1 boost", case=name, value=t.best, unit="s", ratio=t.best / base, vs="inline",
            target=target, ok=ok, note=("" if right else "WRONG result; ") + x1_note(name, t.best, base, items),
        ))
    return rows


def x1_note(name: str, seconds: float, inline: float, items: int) -> str:
    """An X1 row's note: its throughput and, but for the ``inline`` baseline itself, how
    it does against inline with the direction in words (``process N.NNx faster than
    inline``; a factor below 1 would read as its opposite)."""
    note = f"{items / seconds:.0f} items/s"
    if name == "inline":
        return note
    return f"{note}, {compared(name, seconds, 'inline', inline, digits=2)}"


def main(argv: Sequence[str] | None = None) -> List[Row]:
    """Run X1, print its table, return the rows (for run_all)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not a measurement)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is kept (default 3)")
    parser.add_argument("--items", type=int, default=None, help="items per run (default 40; 8 with --quick)")
    parser.add_argument("--no-dask", action="store_true", help="skip the two Dask cases")
    args = parser.parse_args(list(argv) if argv is not None else sys.argv[1:])
    quick = args.quick or quick_from_env()
    items = args.items or (8 if quick else 40)
    repeat = 1 if quick else args.repeat
    rows = measure(items, repeat, dask=not args.no_dask)
    tag = " [--quick: sizes too small to judge targets]" if quick else ""
    print_rows(f"X1 boost: {items} x sum of squares to {SIZE:,}, best of {repeat}, "
               f"{os.cpu_count()} CPUs{tag}", unjudged(rows) if quick else rows)
    return rows


if __name__ == "__main__":  # Dask's worker processes re-import this file: keep the guard
    main()
