"""``rxbot demo``: the showcase that runs offline in a few seconds.

A local price server (127.0.0.1, random port) stands in for coindesk; a Timer polls it
through HttpLoader, each response is parsed, and a Fork sends every quote to the
terminal, to an SQLite table and to a JSON-lines file. The graph of that very pipe,
with each step's counts and throughput from the run, is drawn to ``rxbot-demo.svg``
afterwards. Everything it writes goes to ``out_dir``.
"""
from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from .botframe import BotFrame
from .config import config
from .db.aiofile import aiofile
from .db.sqlite import Insert
from .demo_server import PriceServer
from .tree.flow import Fork, Pipe
from .http import HttpLoader
from .tree.node import Timer
from .draw.render import render


@dataclass
class DemoResult:
    svg: str
    database: str
    jsonl: str
    rows: int
    lines: int
    report: Any


def parse(response: Any) -> dict:
    """coindesk-shaped JSON -> one flat quote."""
    bpi = response.json["bpi"]
    return {"usd": bpi["USD"]["rate_float"], "eur": bpi["EUR"]["rate_float"],
            "updated": response.json["time"]["updated"], "fetched_at": time.time()}


def show(quote: dict) -> None:
    print(f"BTC  {quote['usd']:>12,.2f} USD  {quote['eur']:>12,.2f} EUR   ({quote['updated']})")


async def demo(out_dir: str = ".", ticks: int = 10, delay: float = 0.3) -> DemoResult:
    """Run the showcase; return where its outputs are and the run report."""
    os.makedirs(out_dir, exist_ok=True)
    db_path = os.path.join(out_dir, "rxbot-demo.db")
    jsonl_path = os.path.join(out_dir, "rxbot-demo.jsonl")
    svg_path = os.path.join(out_dir, "rxbot-demo.svg")
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("create table if not exists prices "
                     "(usd real, eur real, updated text, fetched_at real)")
        conn.execute("delete from prices")

    async with PriceServer(seed=7) as server:
        pipe = Pipe(
            Timer(delay=delay, max_time=ticks),
            server.price_url,
            HttpLoader(timeout=5),
            parse,
            Fork(
                show,
                Insert("insert into prices (usd, eur, updated, fetched_at) "
                       "values ({usd}, {eur}, {updated}, {fetched_at})", path=db_path, batch_size=4),
                aiofile(jsonl_path, format="json"),
            ),
            name="price ticker",
        )
        saved, config.metrics = config.metrics, True  # count every step for the report
        try:
            report = await BotFrame.run_async(pipes=[pipe])
        finally:
            config.metrics = saved
        svg = str(render([pipe], svg_path, report=report))  # the picture with the run's numbers

    with closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute("select count(*) from prices").fetchone()[0]
    with open(jsonl_path, encoding="utf-8") as fh:
        lines = sum(1 for _ in fh)
    return DemoResult(svg, db_path, jsonl_path, rows, lines, report)


def main(out_dir: str = ".", ticks: int = 10, delay: float = 0.3) -> int:
    result = asyncio.run(demo(out_dir, ticks, delay))
    print()
    print(f"graph of the pipe:   {result.svg}")
    print(f"SQLite table prices: {result.database} ({result.rows} rows)")
    print(f"JSON lines:          {result.jsonl} ({result.lines} lines)")
    print(result.report)
    return 0


__all__ = ["demo", "main", "DemoResult"]
