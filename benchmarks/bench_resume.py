"""The cost of checkpointing (resume, issue 25): HTTP -> parse -> MariaDB Insert of N
pages from a local aiohttp server, run without and with ``resume=True`` in the same
process, alternating, best of ``--repeat``. Target: with resume at most 10% more time.
Both the wall time and this process's CPU time are shown (the machine may be shared:
CPU time is the steadier of the two; the server and MariaDB run in other processes).

    python -m benchmarks.bench_resume            # 100,000 pages
    python -m benchmarks.bench_resume --quick    # 5,000 pages
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from typing import Any, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing

from benchmarks.bench_db import MYSQL, mysql_up  # noqa: E402
from benchmarks.bench_http import ServerProcess  # noqa: E402
from benchmarks.common import Row, quick_from_env  # noqa: E402

TARGET = 1.10


def run_once(base: str, n: int, table: str, resume: bool, durable_dir: str) -> Tuple[float, float]:
    """One run: (wall seconds, CPU seconds of this process)."""
    from rxbot import BotFrame, HttpLoader, Pipe, config
    from rxbot.db.mysql import Insert

    config.durable_dir = durable_dir

    def parse(response: Any) -> dict:
        return {"n": int(response.text), "body": response.text}

    Pipe([f"{base}/n/{i}" for i in range(n)], HttpLoader(concurrency=64), parse,
         Insert(f"INSERT INTO {table} (n, body) VALUES ({{n}}, {{body}})", **MYSQL))
    started, cpu = time.perf_counter(), time.process_time()
    BotFrame.run(resume=resume)
    return time.perf_counter() - started, time.process_time() - cpu


def main(argv: List[str] | None = None) -> List[Dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    quick = args.quick or quick_from_env()
    n = args.n or (5000 if quick else 100_000)
    if not mysql_up():
        print("bench_resume: MariaDB not reachable; skipped")
        return []
    import pymysql

    raw = pymysql.connect(host=MYSQL["host"], port=MYSQL["port"], user=MYSQL["user"], password=MYSQL["password"],
                          database=MYSQL["db"], autocommit=True)
    times: Dict[str, List[float]] = {"plain": [], "resume": []}
    cpus: Dict[str, List[float]] = {"plain": [], "resume": []}
    print(f"bench_resume: {n} pages HTTP -> parse -> MariaDB, best of {args.repeat}, alternating; "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    began = time.time()
    with ServerProcess() as base, tempfile.TemporaryDirectory() as folder:
        for r in range(args.repeat):
            for mode in (("plain", "resume") if r % 2 == 0 else ("resume", "plain")):
                table = f"bench_resume_{uuid.uuid4().hex[:10]}"
                with raw.cursor() as cur:
                    cur.execute(f"CREATE TABLE {table} (n INT NOT NULL, body VARCHAR(20))")
                try:
                    seconds, cpu = run_once(base, n, table, mode == "resume", folder)
                    with raw.cursor() as cur:
                        cur.execute(f"SELECT COUNT(*), COUNT(DISTINCT n) FROM {table}")
                        count, distinct = cur.fetchone()
                    if (count, distinct) != (n, n):
                        raise AssertionError(f"{mode}: {count} rows, {distinct} distinct, expected {n}")
                    times[mode].append(seconds)
                    cpus[mode].append(cpu)
                    print(f"  {mode:6s} run {r + 1}: {seconds:.2f} s wall ({n / seconds:,.0f} pages/s), "
                          f"{cpu:.2f} s CPU")
                finally:
                    with raw.cursor() as cur:
                        cur.execute(f"DROP TABLE IF EXISTS {table}")
                        cur.execute("DELETE FROM rxbot_checkpoints WHERE run_key LIKE %s AND updated >= %s",
                                    ("%/P1", began))
    raw.close()
    best = {k: min(v) for k, v in times.items()}
    best_cpu = {k: min(v) for k, v in cpus.items()}
    ratio = best["resume"] / best["plain"]
    cpu_ratio = best_cpu["resume"] / best_cpu["plain"]
    print(f"resume / plain: {ratio:.3f} wall, {cpu_ratio:.3f} CPU (target <= {TARGET}; "
          f"{'slower' if ratio > 1 else 'not slower'})")
    case = f"HTTP->parse->MariaDB {n}"
    return [Row("resume", f"{case}, resume=True", best["resume"], "s", ratio, "resume=False",
                f"<= {TARGET}", ratio <= TARGET).as_dict(),
            Row("resume", f"{case}, resume=False", best["plain"], "s").as_dict(),
            Row("resume", f"{case}, resume=True, CPU", best_cpu["resume"], "s CPU", cpu_ratio,
                "resume=False CPU", f"<= {TARGET}", cpu_ratio <= TARGET).as_dict(),
            Row("resume", f"{case}, resume=False, CPU", best_cpu["plain"], "s CPU").as_dict()]


if __name__ == "__main__":
    main()
