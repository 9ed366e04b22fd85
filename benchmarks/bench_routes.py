"""Route benchmarks (issue 4): what fan-out and merge cost per item, and whether flow
control holds across a fan-out.

* R1 — ``Join(f1, f2, f3)`` (a Fork whose three branch outputs merge back), 100k items,
  against a plain loop doing the same work (each item through f1, f2 and f3, every
  result summed) and raw reactivex ``publish`` + ``merge``.
* R2 — ``Branch(f1, side)`` then ``f2`` on the main pipe (a side flow), 100k items,
  against its plain loop.
* R4 — ``BlockedJoin(f1, f2)`` (every branch per item, one tuple out), 100k items of
  sync steps against its plain loop; and of async steps (50k) against
  ``asyncio.gather(f1(x), f2(x))`` per item.
* R3 — memory: a generator forked into a fast sync branch and a slow async branch,
  in a fresh interpreter; the slow branch must throttle the source (bounded RSS).

Run: ``python benchmarks/bench_routes.py [--quick] [--repeat N]``.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``rxbot`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import reactivex
from reactivex import operators as ops

from benchmarks.bench_core import make_acc, unfused
from benchmarks.common import Row, best_of_each, compared, print_rows, quick_from_env, run_in_subprocess, unjudged
from rxbot import BlockedJoin, BotFrame, Branch, Fork, Join, Pipe


def f1(x: int) -> int:
    return x + 1


def f2(x: int) -> int:
    return x * 2


def f3(x: int) -> int:
    return x - 1


# ============================================================================ R1 Join


def join_expected(n: int) -> int:
    """sum over x < n of (x+1) + 2x + (x-1) = 4 * sum(x)."""
    return 4 * (n * (n - 1) // 2)


def join_plain(n: int) -> int:
    acc, box = make_acc()
    for x in range(n):
        acc(f1(x))
        acc(f2(x))
        acc(f3(x))
    return box[0]


def join_rxbot(n: int) -> int:
    acc, box = make_acc()
    Pipe(range(n), Join(f1, f2, f3), acc)
    BotFrame.run()
    return box[0]


def join_rx_sync(n: int) -> int:
    """The textbook Rx fan-out/fan-in: multicast the source, merge the branches."""
    acc, box = make_acc()
    reactivex.from_iterable(range(n)).pipe(
        ops.publish(lambda s: reactivex.merge(s.pipe(ops.map(f1)), s.pipe(ops.map(f2)), s.pipe(ops.map(f3))))
    ).subscribe(acc)
    return box[0]


# ========================================================================== R2 Branch


def branch_expected(n: int) -> int:
    """side: sum(x+1); main: sum(2x); together 3*sum(x) + n."""
    return 3 * (n * (n - 1) // 2) + n


def branch_plain(n: int) -> int:
    acc, box = make_acc()
    side, side_box = make_acc()
    for x in range(n):
        side(f1(x))
        acc(f2(x))
    return box[0] + side_box[0]


def branch_rxbot(n: int) -> int:
    acc, box = make_acc()
    side, side_box = make_acc()
    Pipe(range(n), Branch(f1, side), f2, acc)
    BotFrame.run()
    return box[0] + side_box[0]


# ===================================================================== R4 BlockedJoin


def pair_sum(t: tuple) -> int:
    return t[0] + t[1]


def blocked_expected(n: int) -> int:
    """sum over x < n of (x+1) + 2x = 3*sum(x) + n."""
    return 3 * (n * (n - 1) // 2) + n


def blocked_plain(n: int) -> int:
    acc, box = make_acc()
    for x in range(n):
        acc(pair_sum((f1(x), f2(x))))
    return box[0]


def blocked_rxbot(n: int) -> int:
    acc, box = make_acc()
    Pipe(range(n), BlockedJoin(f1, f2), pair_sum, acc)
    BotFrame.run()
    return box[0]


async def af1(x: int) -> int:
    return x + 1


async def af2(x: int) -> int:
    return x * 2


def blocked_async_gather(n: int) -> int:
    """The hand-written equivalent: both coroutines per item with asyncio.gather."""
    acc, box = make_acc()

    async def go() -> None:
        for x in range(n):
            acc(pair_sum(await asyncio.gather(af1(x), af2(x))))

    asyncio.run(go())
    return box[0]


def blocked_async_rxbot(n: int) -> int:
    acc, box = make_acc()
    Pipe(range(n), BlockedJoin(af1, af2), pair_sum, acc)
    BotFrame.run()
    return box[0]


#: group -> (row id, baseline name, target ratio or None)
GROUPS = {
    "Join": ("R1", "Join: plain loop", 2.0),
    "Branch": ("R2", "Branch: plain loop", 2.0),
    "BlockedJoin": ("R4", "BlockedJoin: plain loop", 3.0),
    "async BlockedJoin": ("R4", "async BlockedJoin: asyncio.gather per item", None),
}


def bench_cpu(n: int = 100_000, repeat: int = 3) -> List[Row]:
    n_async = max(1, n // 2)
    runs: Dict[str, Callable[[], Any]] = {
        "Join: plain loop": lambda: join_plain(n),
        "Join: rxbot Join(f1, f2, f3)": lambda: join_rxbot(n),
        "Join: reactivex publish+merge": lambda: join_rx_sync(n),
        "Join: rxbot unfused graph (publish+merge)": lambda: unfused(join_rxbot)(n),
        "Branch: plain loop": lambda: branch_plain(n),
        "Branch: rxbot Branch(f1, side), f2": lambda: branch_rxbot(n),
        "Branch: rxbot unfused graph": lambda: unfused(branch_rxbot)(n),
        "BlockedJoin: plain loop": lambda: blocked_plain(n),
        "BlockedJoin: rxbot BlockedJoin(f1, f2)": lambda: blocked_rxbot(n),
        "BlockedJoin: rxbot unfused graph (fork_join per item)": lambda: unfused(blocked_rxbot)(n // 10),
        "async BlockedJoin: asyncio.gather per item": lambda: blocked_async_gather(n_async),
        "async BlockedJoin: rxbot BlockedJoin(af1, af2)": lambda: blocked_async_rxbot(n_async),
    }
    expected = {"Join": join_expected(n), "Branch": branch_expected(n), "BlockedJoin": blocked_expected(n),
                "async BlockedJoin": blocked_expected(n_async)}
    timings = best_of_each(runs, repeat)

    def items_of(name: str) -> int:
        """How many items the row's run pushed (the unfused BlockedJoin runs a tenth)."""
        return n_async if name.startswith("async") else n // 10 if "fork_join" in name else n

    per_item = {name: t.best / items_of(name) for name, t in timings.items()}
    # each group's fused rxbot row: what its unfused row is compared with
    fused = {name.split(":")[0]: per_item[name] for name in timings if "rxbot" in name and "unfused" not in name}
    rows = []
    for name, t in timings.items():
        group = name.split(":")[0]
        row_id, base_name, limit = GROUPS[group]
        base = timings[base_name].best
        baseline = base_name.split(": ")[1] if group.startswith("async") else "the plain loop"
        right = t.result == (blocked_expected(n // 10) if "fork_join" in name else expected[group])
        judged = limit is not None and "rxbot" in name and "unfused" not in name
        note = "" if right else f"WRONG SUM {t.result} != {expected[group]}"
        if "unfused" in name:
            comparison = compared("unfused graph", per_item[name], "the fused build", fused[group])
        elif "rxbot" in name:
            comparison = compared("rxbot", per_item[name], baseline, per_item[base_name])
        elif name != base_name:  # a peer (reactivex): how rxbot does against it
            comparison = compared("rxbot", fused[group], name.split(": ")[1], per_item[name])
        else:
            comparison = ""  # the baseline itself
        if comparison:
            note += f"{'; ' if note else ''}{comparison}"
        rows.append(Row(
            row_id, name, per_item[name] * 1e6, "µs/item",
            per_item[name] / per_item[base_name], base_name.split(": ")[1]
            if group.startswith("async") else f"{group} plain loop",
            target=f"<= {limit:g}x" if judged else "",
            ok=(right and t.best / base <= limit) if judged and limit is not None else (None if right else False),
            note=note,
        ))
    return rows


# ====================================================================== R3 fan-out memory


def fork_memory(n: int) -> list:
    """A generator forked into a fast sync branch and a slow async one (fresh interpreter)."""
    fast, fast_box = make_acc()
    seen = [0, 0]

    async def slow(x: int) -> None:
        await asyncio.sleep(0)
        seen[0] += 1
        seen[1] += x

    Pipe((i for i in range(n)), Fork(fast, slow))
    BotFrame.run()
    return [seen[0], seen[1], fast_box[0]]


def fork_memory_expected(n: int) -> list:
    s = n * (n - 1) // 2
    return [n, s, s]


def bench_memory(n: int = 200_000) -> List[Row]:
    run_in_subprocess("benchmarks.bench_core:b3_baseline")  # warm-up (see bench_core.bench_b3)
    base = run_in_subprocess("benchmarks.bench_core:b3_baseline").peak_rss_mb
    run = run_in_subprocess("benchmarks.bench_routes:fork_memory", {"n": n})
    above = run.peak_rss_mb - base
    right = run.result == fork_memory_expected(n)
    return [Row("R3", f"Fork(fast, slow async) mem @{n:,}", above, "MB above base", vs="baseline",
                target="< 100 MB", ok=right and above < 100,
                note=f"{run.seconds:.2f} s" + ("" if right else f"; WRONG {run.result}"))]


def main(argv: Sequence[str] | None = None) -> List[Row]:
    """Run R1-R3, print the tables, return all rows (for run_all)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not a measurement)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is kept (default 3)")
    args = parser.parse_args(list(argv) if argv is not None else sys.argv[1:])
    quick = args.quick or quick_from_env()
    tag = " [--quick: sizes too small to judge targets]" if quick else ""
    n = 10_000 if quick else 100_000
    cpu = bench_cpu(n, args.repeat)
    print_rows(f"R1/R2 routes: {n:,} ints (ratios vs the plain loop doing the same work){tag}",
               unjudged(cpu) if quick else cpu)
    mem = bench_memory(20_000 if quick else 200_000)
    print_rows(f"R3 flow control across a fan-out (fresh interpreter){tag}", unjudged(mem) if quick else mem)
    return cpu + mem


if __name__ == "__main__":
    main()
