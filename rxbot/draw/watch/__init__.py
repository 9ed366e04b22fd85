"""The live view of a run: ``BotFrame.run(watch=True)`` or ``rxbot run --watch``.

A page on 127.0.0.1 (a free port unless one is given; another interface only when the
user names it) shows the graph of the running pipes and, pushed a few times a second,
every step's counts, rate, items in flight and failures, the dead letters and the run's
state, then the final report. Nothing of this is imported or started unless asked for.
"""
from __future__ import annotations

import asyncio
import itertools
import sys
from typing import Any, Awaitable, Callable, Optional, Sequence

from .server import WatchServer, close_all, parse_address, server_for
from .snapshot import Sampler, holding_steps

#: seconds between two snapshots while a run goes on
INTERVAL = 0.5

_runs = itertools.count(1)

Start = Callable[[Callable[[Any], None]], Awaitable[Any]]


async def follow(watch: Any, pipes: Sequence[Any], start: Start) -> Any:
    """Run ``start(observe)`` (the engine, calling ``observe(report)`` once its report
    exists) while publishing snapshots of that report to the server for ``watch``;
    return what ``start`` returns. The final report goes out as the run ends; the process
    waits for open pages to get it when it exits (see :meth:`WatchServer.close`)."""
    server, new = server_for(watch)
    if new:
        print(f"rxbot: watch the run at {server.url}", file=sys.stderr, flush=True)
    run = next(_runs)
    from ..render import outline

    shape = outline(pipes)
    sampler = Sampler(run, f"{hash(shape) & 0xFFFFFFFF:08x}", holding_steps(pipes))
    server.new_run(run, pipes, shape)
    seen: list = []
    ticker: Optional[asyncio.Task] = None

    def observe(report: Any) -> None:
        nonlocal ticker
        seen.append(report)
        ticker = asyncio.get_running_loop().create_task(_tick(server, sampler, report))

    try:
        result = await start(observe)
    except BaseException as exc:
        _stop(ticker)
        if seen:
            state = "cancelled" if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)) else "failed"
            server.publish_final(sampler.snapshot(seen[0], state, error=exc))
        raise
    _stop(ticker)
    if seen:
        server.publish_final(sampler.snapshot(seen[0], "finished"))
    return result


async def _tick(server: WatchServer, sampler: Sampler, report: Any) -> None:
    while True:
        server.publish(sampler.snapshot(report))
        await asyncio.sleep(INTERVAL)


def _stop(ticker: Optional[asyncio.Task]) -> None:
    if ticker is not None:
        ticker.cancel()


__all__ = ["follow", "server_for", "close_all", "parse_address", "INTERVAL"]
