"""gated_ticker: Timer as a pulled source — ticks 1, 2, 3, ... every ``delay`` seconds,
held back while the downstream is full (the gated variant of ``interval``)."""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from ...tree.node import Timer
from ..gate import Gate
from ._pull_source import Produce


def gated_ticker(timer: Timer) -> Produce:
    """The ``produce`` of a Timer's :func:`~._pull_source.pull_source`, databot's Timer:
    tick 1 at once, then sleep ``delay`` between ticks; ``until()`` is asked once after
    each tick (so one tick always comes out); ``max_time`` counts ticks. Its rate is
    bounded by the clock; a closed gate (a full step downstream) delays the next tick
    instead of queueing it. A halted gate (the run failed, or the subscription was
    disposed, e.g. by ``take`` inside this very tick) ends the ticks at once, without
    asking ``until()`` again, as the unfused ``gated_interval`` does."""

    async def produce(item: Any, emit: Callable[[Any], None], gate: Gate, stats: Any) -> None:
        n = 0
        until, limit = timer.until, timer.max_time
        while True:
            if gate.blocked:
                if gate.halted:
                    return
                await gate.wait()
            n += 1
            stats.out += 1
            emit(n)
            if gate.halted:
                return
            if (until is not None and until()) or (limit is not None and n >= limit):
                return
            await asyncio.sleep(timer.delay)

    return produce


__all__ = ["gated_ticker"]
