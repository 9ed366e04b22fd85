"""What an item trace (``config.trace`` / ``rxbot run --trace``, issue 29.4) costs on
B1's shape (benchmarks/bench_core.py: N ints through ``x+1`` -> keep even -> ``x*3`` ->
sum, fused).

Rows, each against the same pipe without a trace, in the same run:

* T0 — ``config.trace = None``: nothing is built for traces (the row checks the cost is
  none: the same code runs; the 1% allows for the noise of two runs of it);
* T1 — a trace matching 1 item in 10,000 (``item % 10000 == 7``): the fused steps'
  chunk entry evaluates the expression inline per element (see :mod:`rxbot.observe.trace`)
  and the matching items are followed. Target: <= 1.05x (the issue's 5%).
* T2 — the same expression matching nothing (``item % 10000 == -1``): the price of the
  per-element check alone (T1 - T2 is what following the matching items costs);
* T3 — a trivial expression matching nothing (``item is None``): the floor of the
  mechanism (the cheapest test and its jump, per element).

The machine is shared, so the default measure is CPU time (``time.process_time``, best
of ``--repeat``, the sides interleaved; ``--wall`` for wall time); ``--instructions``
counts instructions per item under callgrind instead (needs valgrind), the steadiest
measure, with the time-based turns off in the counted process
(:func:`benchmarks.common.steady_turns`: under callgrind they would come ~50 times more
often per item than in a real run).

Run: ``python benchmarks/bench_trace.py [--quick] [--repeat N] [--wall] [--instructions] [--expr EXPR]``
(``--expr``: one more row, TX, tracing with ``EXPR``).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``rxbot`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_core import b1_expected, b1_rxbot
from benchmarks.common import (Row, best_of_each, callgrind_per_item, configured, measured, print_rows,
                               quick_from_env, steady_turns, unjudged)

#: row -> (what it traces, the expression or None, target ratio against no trace)
ROWS: Dict[str, tuple] = {
    "T0": ("no trace (config.trace None)", None, 1.01),
    "T1": ("trace matching 1 in 10,000", "item % 10000 == 7", 1.05),
    "T2": ("the same check, matching nothing", "item % 10000 == -1", None),
    "T3": ("a trivial check, matching nothing", "item is None", None),
}


def run(expr: Optional[str], n: int) -> int:
    """B1 with ``config.trace = expr``; the sum (checked against the plain formula)."""
    with configured(trace=expr):
        return b1_rxbot(n)


def cpu_times(n: int, repeat: int, clock: Callable[[], float] = time.process_time) -> Dict[str, float]:
    """Best seconds of each side (``base``: no trace; then each row), interleaved; CPU
    time unless ``clock`` says otherwise."""
    sides: Dict[str, Optional[str]] = {"base": None, **{row: ROWS[row][1] for row in ROWS}}
    timings = best_of_each({side: (lambda expr=expr: run(expr, n)) for side, expr in sides.items()}, repeat,
                           clock=clock)
    for side, timing in timings.items():
        if timing.result != b1_expected(n):
            raise SystemExit(f"bench_trace {side}: wrong sum {timing.result}, want {b1_expected(n)}")
    return {side: timing.best for side, timing in timings.items()}


def one_side(side: str, n: int) -> None:
    """One side under callgrind: warm up, then a run of ``n // 10`` and one of ``n``,
    each counted (see :func:`benchmarks.common.callgrind_per_item`)."""
    steady_turns()
    expr = None if side == "base" else ROWS[side][1]
    run(expr, max(1, n // 10))
    for size in (n // 10, n):
        if measured(lambda: run(expr, size)) != b1_expected(size):
            raise SystemExit(f"bench_trace {side}: wrong sum")


def instructions(side: str, n: int) -> float:
    """Instructions per item of one side (see :func:`benchmarks.common.callgrind_per_item`)."""
    extra = ["--expr", ROWS["TX"][1]] if side == "TX" else []
    return callgrind_per_item(["benchmarks.bench_trace", "--one", side, *extra], n, f"trace {side}")


def rows_from(per_item: Dict[str, float], unit: str, note: Callable[[str], str]) -> List[Row]:
    rows = []
    for row, (case, expr, target) in ROWS.items():
        ratio = per_item[row] / per_item["base"]
        rows.append(Row(row, case, per_item[row], unit, ratio, "B1 without a trace",
                        f"<= {target:g}x" if target else "", (ratio <= target) if target else None,
                        note(row)))
    return rows


def main(argv: Sequence[str] | None = None) -> List[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not a measurement)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per side; the best is kept (default 5)")
    parser.add_argument("--n", type=int, default=None, help="items per run (default 500,000)")
    parser.add_argument("--instructions", action="store_true", help="count instructions per item (callgrind)")
    parser.add_argument("--wall", action="store_true", help="wall time (time.perf_counter) instead of CPU time")
    parser.add_argument("--expr", help="one more row, TX: a trace with this expression (no target)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv) if argv is not None else sys.argv[1:])
    if args.expr:
        ROWS["TX"] = (f"trace {args.expr!r}", args.expr, None)
    if args.one:
        one_side(args.one, args.n or 200_000)
        return []
    quick = args.quick or quick_from_env()
    if args.instructions:
        if shutil.which("valgrind") is None:
            raise SystemExit("--instructions needs valgrind on PATH")
        n = args.n or (20_000 if quick else 200_000)
        per = {side: instructions(side, n) for side in ("base", *ROWS)}
        rows = rows_from(per, "instr/item", lambda row: f"{per['base']:.0f} instr/item without a trace")
        print_rows(f"item traces on B1, instructions per item (callgrind, {n:,} items)", rows)
        return rows
    n = args.n or (20_000 if quick else 500_000)
    repeat = 1 if quick else args.repeat
    clock, what = (time.perf_counter, "wall time") if args.wall else (time.process_time, "CPU time")
    best = cpu_times(n, repeat, clock)
    per = {side: seconds / n * 1e9 for side, seconds in best.items()}
    rows = rows_from(per, "ns/item", lambda row: f"{per['base']:.0f} ns/item without a trace ({what})")
    print_rows(f"item traces on B1: {n:,} items, {what}, best of {repeat}, interleaved"
               + (" [--quick: sizes too small to judge targets]" if quick else ""),
               unjudged(rows) if quick else rows)
    return rows


if __name__ == "__main__":
    main()
