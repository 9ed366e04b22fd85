"""Scale-out benchmark (issue 17): a whole pipe sharded over a Dask LocalCluster against
one local run of the same pipe, in the same process run.

* SC1 cpu — ``Pipe(range(N), burn, aiofile('out-{index}.txt'))``, ``burn`` ≈ 5 ms of pure
  Python per item (calibrated at start), N = 2,000:

  - ``local``: ``BotFrame.run()``, one process (the baseline);
  - ``sharded x2, running cluster``: ``BotFrame.run(cluster=address, shards=2)`` on a
    2-worker LocalCluster (processes, 127.0.0.1) started beforehand. Target on a
    machine with ≥ 2 cores: ≥ 1.6× faster than local;
  - ``sharded x2, own cluster``: ``BotFrame.run(shards=2)``, which starts a local cluster
    and closes it, so the figure includes a few seconds of cluster start and stop.

  Each run's output files are summed and compared with the local run's (WRONG if not).
* SC2 io — a local aiohttp server (bench_http's, in a subprocess) → ``HttpLoader`` →
  parse → ``Insert`` into MySQL (127.0.0.1:3306 when it answers, else SQLite), local and
  sharded 2 ways: the table must hold every row exactly once (WRONG if not).

Run: ``python benchmarks/bench_scale.py [--quick] [--items N] [--repeat N]``. The local
and running-cluster SC1 runs alternate, best of 3 each (one local run takes ~10 s on a
quiet core); the own-cluster and SC2 figures are one run each. The load average is
printed with the table: on a shared machine read the ratios, measured back to back.

A shared Linux machine can hide any speed-up: with ``kernel.sched_autogroup_enabled``
(the default on desktop kernels and on the project's machine) the CPU is shared fairly
between *sessions*, and the LocalCluster's workers are in the benchmark's session. While
other sessions keep the cores busy, this session gets the same CPU time whether it runs
one process or three, and the sharded run cannot be faster than the local one. The
table says so when autogroup is on and the load average is above the core count.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, List, Sequence

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``rxbot`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Row, best_of_each, compared, print_rows, quick_from_env, unjudged
from rxbot import BotFrame, HttpLoader, Pipe, aiofile

TARGET_SPEEDUP = 1.6


# ---------------------------------------------------------------------------- SC1 cpu
def burn(rounds: int, item: int) -> int:
    """Pure-Python CPU work that holds the GIL: ``rounds`` multiply-adds."""
    total = item
    for i in range(rounds):
        total = (total * 31 + i) % 1_000_003
    return total


def calibrate(seconds: float) -> int:
    """How many rounds of :func:`burn` take about ``seconds`` here (best of 5)."""
    probe = 20_000
    best = min(_timed(lambda: burn(probe, 1)) for _ in range(5))
    return max(1, int(probe * seconds / best))


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cpu_run(folder: Path, items: int, rounds: int, cores: list | None = None, **sharding: Any) -> tuple[float, tuple]:
    """(wall seconds, (lines, sum of the lines) of every output file) of one run; the
    cores it kept busy on average (CPU seconds of this process and its children, e.g.
    the cluster's workers, per wall second) are appended to ``cores``."""
    import functools

    for old in folder.glob("out-*.txt"):
        old.unlink()
    step = functools.partial(burn, rounds)
    Pipe(range(items), step, aiofile(str(folder / "out-{index}.txt")))
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    BotFrame.run(**sharding)
    seconds = time.perf_counter() - t0
    if cores is not None:
        cores.append((_cpu_seconds() - cpu0) / seconds)
    lines = [int(x) for p in folder.glob("out-*.txt") for x in p.read_text().split()]
    return seconds, (len(lines), sum(lines))


def _cpu_seconds() -> float:
    """User + system CPU time of this process and every live descendant."""
    import psutil

    total = 0.0
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:  # ended meanwhile
            continue
        total += times.user + times.system
    return total


def measure_cpu(items: int, per_item: float, address: str | None, repeat: int) -> List[Row]:
    """Local and sharded-on-a-running-cluster runs interleaved, best of ``repeat`` each
    (noise on a shared machine only ever adds time); the own-cluster run once."""
    rounds = calibrate(per_item)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cores: dict = {"local": [], "sharded x2, running cluster": []}
        runs = {"local": lambda: cpu_run(folder, items, rounds, cores["local"])}
        if address is not None:
            runs["sharded x2, running cluster"] = lambda: cpu_run(
                folder, items, rounds, cores["sharded x2, running cluster"], cluster=address, shards=2)
        timed = best_of_each({name: _split_time(run) for name, run in runs.items()}, repeat=repeat)
        results = {name: (t.best, t.result) for name, t in timed.items()}
        if address is not None:
            # (its workers end with the run: their CPU time cannot be read afterwards)
            results["sharded x2, own cluster"] = cpu_run(folder, items, rounds, shards=2)
    base, expected = results["local"]
    cpus = os.cpu_count() or 1
    rows = []
    for name, (seconds, checksum) in results.items():
        right = checksum == expected
        target, ok = "", None
        if name == "sharded x2, running cluster" and cpus >= 2:
            target, ok = f">= {TARGET_SPEEDUP}x faster", base / seconds >= TARGET_SPEEDUP
        if not right:
            ok = False
        best = f"best of {repeat}" if name in timed else "one run"
        rows.append(Row("SC1 cpu", name, seconds, "s", seconds / base, "local", target, ok,
                        ("" if right else "WRONG output; ") + sc1_note(name, seconds, base)
                        + f"{items} items x {per_item * 1000:.0f} ms, {best}"
                        + (f", cores busy {max(cores[name]):.2f}" if name in timed else "")))
    return rows


def sc1_note(name: str, seconds: float, local: float) -> str:
    """The start of an SC1 row's note: how a sharded run does against the local run, a
    factor of at least 1 with its direction in words (``sharded run 1.88x faster than the
    local run``); nothing for the local baseline itself."""
    if name == "local":
        return ""
    return compared("sharded run", seconds, "the local run", local, digits=2) + ", "


def _split_time(run: Callable[[], tuple]) -> Callable[[], tuple]:
    """Keep only the checksum: best_of_each times the call (and checks the checksums of
    every round agree)."""
    return lambda: run()[1]


# ----------------------------------------------------------------------------- SC2 io
def _parse(response: Any) -> dict:
    return {"id": int(response.text), "body": f"row {response.text}"}


class _Table:
    """The SC2 sink: a fresh MySQL table when MariaDB answers, else a SQLite file."""

    def __init__(self, folder: Path) -> None:
        from benchmarks.bench_db import MYSQL, mysql_up

        self.name = f"rxbot_scale_{uuid.uuid4().hex[:10]}"
        self.mysql = MYSQL if mysql_up() else None
        self.path = str(folder / "scale.db")
        self.sql(f"create table {self.name} (id integer primary key, body varchar(40))")

    @property
    def kind(self) -> str:
        return "MySQL" if self.mysql else "SQLite"

    def insert(self) -> Any:
        sql = f"insert into {self.name} (id, body) values ({{id}}, {{body}})"
        if self.mysql:
            from rxbot.db.mysql import Insert

            return Insert(sql, **self.mysql)
        from rxbot.db.sqlite import Insert

        return Insert(sql, path=self.path)

    def sql(self, statement: str) -> list:
        if self.mysql:
            import pymysql

            conn = pymysql.connect(host=self.mysql["host"], port=self.mysql["port"], user=self.mysql["user"],
                                   password=self.mysql["password"], database=self.mysql["db"], autocommit=True)
            try:
                with conn.cursor() as cur:
                    cur.execute(statement)
                    return list(cur.fetchall())
            finally:
                conn.close()
        with sqlite3.connect(self.path, isolation_level=None) as conn:
            return conn.execute(statement).fetchall()

    def rows(self) -> tuple:
        [(count, distinct, total)] = self.sql(f"select count(*), count(distinct id), sum(id) from {self.name}")
        self.sql(f"delete from {self.name}")
        return int(count), int(distinct), int(total or 0)


def measure_io(items: int, address: str | None) -> List[Row]:
    from benchmarks.bench_http import ServerProcess

    runs = {"local": {}}
    if address is not None:
        runs["sharded x2, running cluster"] = {"cluster": address, "shards": 2}
    with tempfile.TemporaryDirectory() as tmp, ServerProcess() as base_url:
        table = _Table(Path(tmp))
        urls = [f"{base_url}/n/{i}?latency=0.005" for i in range(items)]
        results = {}
        try:
            for name, kw in runs.items():
                Pipe(urls, HttpLoader(concurrency=50), _parse, table.insert())
                t0 = time.perf_counter()
                BotFrame.run(**kw)
                results[name] = (time.perf_counter() - t0, table.rows())
        finally:
            table.sql(f"drop table {table.name}")
    expected = (items, items, sum(range(items)))
    base = results["local"][0]
    rows = []
    for name, (seconds, found) in results.items():
        right = found == expected
        rows.append(Row("SC2 io", f"{name} -> {table.kind}", seconds, "s", seconds / base, "local",
                        "every row once", right,
                        (f"{found[0]} rows, {found[1]} distinct" if right else
                         f"WRONG rows: {found} instead of {expected}")))
    return rows


# ---------------------------------------------------------------------------- driver
def measure(cpu_items: int, per_item: float, io_items: int, repeat: int = 3) -> List[Row]:
    try:
        from distributed import LocalCluster

        from rxbot.engine.dask_boost import LOCAL_CLUSTER_OPTIONS
    except ImportError:
        print("bench_scale: Dask distributed is not installed; only the local runs are measured")
        LocalCluster = None  # noqa: N806
    cluster = LocalCluster(**LOCAL_CLUSTER_OPTIONS) if LocalCluster else None  # 2 workers x 1 thread
    try:
        address = cluster.scheduler_address if cluster else None
        return measure_cpu(cpu_items, per_item, address, repeat) + measure_io(io_items, address)
    finally:
        if cluster is not None:
            cluster.close()


def main(argv: Sequence[str] | None = None) -> List[Row]:
    """Run SC1 and SC2, print their table, return the rows (for run_all)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not a measurement)")
    parser.add_argument("--items", type=int, default=None, help="SC1 items (default 2000; 100 with --quick)")
    parser.add_argument("--ms", type=float, default=5.0, help="SC1 CPU time per item in ms (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="SC1 runs per figure, best kept (default 3)")
    parser.add_argument("--io-items", type=int, default=None, help="SC2 requests (default 2000; 100 with --quick)")
    args = parser.parse_args(list(argv) if argv is not None else sys.argv[1:])
    quick = args.quick or quick_from_env()
    items = args.items or (100 if quick else 2000)
    io_items = args.io_items or (100 if quick else 2000)
    per_item = (1.0 if quick else args.ms) / 1000
    rows = measure(items, per_item, io_items, 1 if quick else args.repeat)
    tag = " [--quick: sizes too small to judge targets]" if quick else ""
    print_rows(f"SC scale-out: {os.cpu_count()} CPUs, {machine_load()}{tag}", unjudged(rows) if quick else rows)
    return rows


def machine_load() -> str:
    """The load average at the end, and whether the kernel shares CPU per session (see
    the module docstring): a busy shared machine then caps this session's CPU time."""
    if not hasattr(os, "getloadavg"):
        return "load unknown"
    load = os.getloadavg()[0]
    text = f"load average {load:.1f} at the end"
    try:
        autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        autogroup = False
    if autogroup and load > (os.cpu_count() or 1):
        text += (" - the kernel shares CPU per session (autogroup): while other sessions keep "
                 "the cores busy, the workers share this session's CPU time and a speed-up "
                 "cannot show (compare 'cores busy')")
    return text


if __name__ == "__main__":  # Dask's worker processes re-import this file: keep the guard
    main()
