"""CPU-bound steps keep the event loop responsive (issue 25.5).

A loop that pushes items (a source, a step's many results, an async step drawing from
its source, a resumed pipe's checkpointing source) gives the event loop a turn every
``config.yield_every`` items **or** once it has worked ``rxbot.engine.gate.TURN_SECONDS``,
whichever comes first (:class:`rxbot.engine.gate.Pace`). So a parse costing milliseconds
an item never holds the loop for seconds: a Dask worker keeps its heartbeats, and a
cancel (Ctrl-C of the client, ``run.cancel()``) stops its shard at once.

The local tests set ``yield_every`` beyond the run's length, so only time can give the
loop its turns: another task on the loop sees the run's count between its start and its
end. The sharded test runs a CPU-bound shard on a real ``dask worker`` subprocess whose
"unresponsive event loop" warning is set to 1 s (Dask's default is 3 s), and cancels it.
"""
from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid

import pytest

from dask_procs import dask_processes
from rxbot import BotFrame, Loop, Pipe, config
from rxbot.db.sqlite import Insert

ITEMS = 300
COST = 0.002  # seconds of CPU per item: ITEMS of them are many turns' worth


def burn(seconds: float) -> None:
    """CPU work, as a parse of a big page (no sleep: nothing gives the loop a turn)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _pipe(shape: str, parsed: list, tmp_path) -> None:
    def parse(x):
        burn(COST)
        parsed.append(x)
        return {"n": x}

    def pages(_):
        yield from range(ITEMS)

    async def rows(_):  # Query-like rows that never wait: the parse's CPU is all there is
        for i in range(ITEMS):
            yield i

    if shape == "async generator step":
        Pipe([0], rows, parse, lambda row: None)
    elif shape == "loop":
        Pipe(Loop(range(ITEMS)), parse, lambda row: None)
    elif shape == "generator step":
        Pipe([0], pages, parse, lambda row: None)
    elif shape == "list step":  # one item whose step returns a list: its elements go on at once
        Pipe([0], lambda _: list(range(ITEMS)), parse, lambda row: None)
    else:  # an Insert drawing from the source through the fused parse; resumed: its checkpoints
        db = tmp_path / "out.db"
        with sqlite3.connect(db) as con:
            con.execute("CREATE TABLE t (n INT)")
        Pipe(list(range(ITEMS)), parse, Insert("INSERT INTO t (n) VALUES ({n})", str(db)))


@pytest.mark.parametrize("shape", ["loop", "generator step", "list step", "async generator step", "insert",
                                   "resumed insert"])
def test_a_cpu_bound_run_gives_the_loop_turns_by_time(shape, both_builds, tmp_path):
    config.yield_every = 10 * ITEMS  # never by count: only time can give the loop a turn
    config.durable_dir = str(tmp_path / "durable")
    parsed: list = []
    _pipe(shape, parsed, tmp_path)
    seen: list = []  # the run's count each time the other task had a turn

    async def main():
        run = asyncio.ensure_future(BotFrame.run_async(resume=shape == "resumed insert"))
        while not run.done():
            seen.append(len(parsed))
            await asyncio.sleep(0)
        return await run

    asyncio.run(main())
    assert len(parsed) == ITEMS
    assert [n for n in seen if 0 < n < ITEMS], f"the loop had no turn while the run worked: {sorted(set(seen))}"


# ---- a CPU-bound shard on a real Dask worker ----------------------------------------------------
@pytest.fixture(scope="module")
def strict_dask(tmp_path_factory):
    """One worker that logs an unresponsive event loop after 1 s (Dask's default is 3 s)."""
    yield from dask_processes(tmp_path_factory.mktemp("dask"), workers=1,
                              DASK_DISTRIBUTED__ADMIN__TICK__LIMIT="1s")


def _counted(report) -> int:
    """The most items any step of the shard has taken, as its counts reached the client."""
    return max([s.inp for s in report.steps.values()] + [0]) if report is not None else 0


def test_a_cpu_bound_shard_keeps_its_worker_responsive_and_stops_when_cancelled(strict_dask):
    address = strict_dask.address
    worker_log = strict_dask.logs[1]
    Pipe([0], lambda x: x, lambda x: None)
    BotFrame.run(cluster=address, shards=1)  # the worker has imported rxbot: its log is quiet from here
    BotFrame.clear()
    quiet_from = worker_log.stat().st_size

    def parse(x):
        # 10 ms of CPU a page (inline: the worker cannot import this module): 256 of them
        # (config.yield_every) would hold the worker's loop 2.5 s
        end = time.perf_counter() + 0.01
        while time.perf_counter() < end:
            pass
        return x

    config.metrics = True  # the fused steps count as they go, and the shard sends the counts
    pipe = Pipe(list(range(100_000)), parse, lambda x: None)
    pipe.report = None
    stopped: dict = {}

    def executing(dask_worker):
        return len(dask_worker.state.executing) + len(dask_worker.state.long_running)

    async def cancel_it():
        from distributed import Client

        async with Client(address, asynchronous=True, timeout=30) as client:
            await stop_run(client)

    async def stop_run(client):
        run = asyncio.ensure_future(BotFrame.run_async(cluster=address, shards=1))
        # the shard's counts arrive while it works (they are sent from the worker's loop)
        while _counted(pipe.report) < 500:
            assert not run.done(), run
            await asyncio.sleep(0.1)
        cancelled = time.perf_counter()
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        # the shard's task ends on the worker (the scheduler lets go of it at once; the
        # worker runs a cancelled task until the task returns)
        deadline = time.perf_counter() + 60
        while sum((await client.run(executing)).values()):
            assert time.perf_counter() < deadline, "the cancelled shard is still processing after 60 s"
            await asyncio.sleep(0.05)
        stopped["seconds"] = time.perf_counter() - cancelled

    asyncio.run(cancel_it())
    said = worker_log.read_text()[quiet_from:]
    assert "unresponsive" not in said, said
    assert 500 <= _counted(pipe.report) < 100_000
    print(f"cancelled shard stopped after {stopped['seconds']:.2f} s")  # (the report's number, -s)


def test_a_long_list_handed_on_by_time_keeps_the_order_of_a_plain_nested_loop(both_builds):
    """A step's long list result whose elements each cost time downstream is pushed in
    runs between looks at the clock and, once a turn's time has passed, the rest goes on
    from the segment's ordered lane: the outputs keep the order of a plain nested loop
    (the next source item's list comes after all of this one's), the other task on the
    loop gets turns meanwhile, and every element is counted once (the run's ledger is
    checked at its end)."""
    config.yield_every = 10 * ITEMS
    out: list = []

    def rows(k):
        return [(k, j) for j in range(ITEMS // 2)]

    def parse(row):
        burn(COST)
        return row

    Pipe([0, 1, 2], rows, parse, out.append)
    seen: list = []

    async def main():
        run = asyncio.ensure_future(BotFrame.run_async())
        while not run.done():
            seen.append(len(out))
            await asyncio.sleep(0)
        return await run

    report = asyncio.run(main())
    assert out == [(k, j) for k in range(3) for j in range(ITEMS // 2)]
    assert [n for n in seen if 0 < n < len(out)], "the loop had no turn while the lists were pushed"
    assert report.error is None
