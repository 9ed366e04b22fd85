"""A bounded pool of worker tasks: the flow-control heart of every async operator."""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable

from .gate import Boundary

_STOP = object()


class Slots:
    """At most ``limit`` works in flight, the rest queued; full when ``limit`` works are
    in flight or queued, which holds ``boundary`` full and so closes the gates of the
    stages upstream.

    One ``Slots`` belongs to one subscription of an operator (its workers and queue are
    that subscription's state); the :class:`Boundary` it reports to belongs to the build.

    Workers are tasks. A worker that finds no queued work parks on a future instead of
    exiting, and ``submit`` hands the next work to a parked worker, so a busy operator
    costs one Task per slot for the whole run rather than one per item. Parked workers
    are released by :meth:`close` once the subscription has completed (or cancelled with
    the run).
    """

    __slots__ = ("limit", "busy", "workers", "pending", "parked", "runner", "ctx", "on_idle", "closed",
                 "stats_of", "boundary", "full", "spawn")

    def __init__(self, limit: int, runner: Callable[[Any], Any], ctx: Any, on_idle: Callable[[], None],
                 stats_of: Callable[[Any], Any], boundary: Boundary,
                 spawn: Callable[[Any], Any] | None = None) -> None:
        self.limit = limit
        self.stats_of = stats_of  # work -> the StepStats that accepted it
        self.busy = 0
        self.workers = 0
        self.pending: deque = deque()
        self.parked: deque = deque()
        self.runner = runner
        self.ctx = ctx
        self.spawn = spawn or ctx.spawn
        self.on_idle = on_idle
        self.closed = False
        self.boundary = boundary
        self.full = False
        ctx.on_shutdown(self.abandon)

    def set_full(self, full: bool) -> None:
        if full is not self.full:
            self.full = full
            self.boundary.hold(full)

    def abandon(self) -> None:
        """The run stopped: queued work will never start; count it as cancelled."""
        while self.pending:
            self.stats_of(self.pending.popleft()).cancelled += 1

    def submit(self, work: Any) -> None:
        if self.parked:
            self.busy += 1
            self.parked.popleft().set_result(work)
        elif self.workers < self.limit:
            self.workers += 1
            self.busy += 1
            self.spawn(self._worker(work))
        else:
            self.pending.append(work)
        if self.busy + len(self.pending) >= self.limit:
            self.set_full(True)

    async def _worker(self, work: Any) -> None:
        try:
            while True:
                try:
                    await self.runner(work)
                except asyncio.CancelledError:
                    self.stats_of(work).cancelled += 1
                    raise
                finally:
                    self.busy -= 1
                if self.ctx.stopped:
                    return
                if self.pending:
                    self.busy += 1
                    work = self.pending.popleft()
                    self.set_full(self.busy + len(self.pending) >= self.limit)
                    continue
                self.set_full(self.busy >= self.limit)
                if not self.busy:
                    self.on_idle()
                if self.closed:
                    return
                parked = self.ctx.loop.create_future()
                self.parked.append(parked)
                try:
                    work = await parked
                except asyncio.CancelledError:
                    # work handed over just before the cancellation never started
                    if parked.done() and not parked.cancelled() and parked.result() is not _STOP:
                        self.busy -= 1
                        self.stats_of(parked.result()).cancelled += 1
                    raise
                if work is _STOP:
                    return
        finally:
            self.workers -= 1

    def close(self) -> None:
        """The subscription is done (or disposed): let parked workers end and stop
        holding the boundary full."""
        self.closed = True
        self.ctx.forget(self.abandon)
        while self.parked:
            self.parked.popleft().set_result(_STOP)
        self.set_full(False)

    def idle(self) -> bool:
        return not self.busy and not self.pending


__all__ = ["Slots"]
