"""gated_interval: Timer on the honest (unfused) graph — ticks 1, 2, 3, ... timed by
``reactivex.timer`` on the run's ``AsyncIOScheduler``, each tick held back while the
downstream gate is closed.

Why not ``reactivex.interval(delay)`` as it is: an interval is fixed-*rate* (tick k is
due at ``k * delay`` whatever happened in between) and cannot be paused, while databot's
Timer — which rxbot reproduces exactly (DESIGN §2b) — is fixed-*delay*: tick 1 at once,
then a sleep of ``delay`` after each tick has gone downstream, and a full queue
downstream delayed the next tick instead of letting ticks pile up. So each tick arms a
one-shot ``reactivex.timer`` for the next one (due 0 for tick 1): an interval whose next
period starts only when the previous tick was delivered. When a tick falls due while a
step downstream is full, it waits for the gate (the credit-based flow control every
rxbot source obeys) and is emitted as soon as there is room.

``until()`` is asked once after each tick (so one tick always comes out) and
``max_time`` counts ticks; the run does not wait one more ``delay`` after the last tick.
A Timer in the middle of a pipe ticks a whole sequence for each input, one input after
the other; while it ticks, its boundary is full, which pauses its upstream (as a pulled
source does). The fused build keeps the pulled ticker (``_gated_ticker``); both give the
same ticks and counts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

import reactivex
from reactivex.abc import DisposableBase

from ...tree.node import Timer
from ..gate import Boundary
from ..policy import StepRuntime
from ._subscription import InputQueue, Operator, fast_on_next, operator_of


@dataclass
class TimerPlan:
    """What the compiler decided for one Timer step (shared by its subscriptions)."""

    rt: StepRuntime
    timer: Timer
    downstream: List[Boundary]
    boundary: Boundary = field(default_factory=Boundary)


def gated_interval(ctx: Any, plan: TimerPlan) -> Operator:
    """The operator emitting ``plan.timer``'s ticks for each input, in order (see the
    module's docstring for the timing rules)."""
    return operator_of(lambda observer: _Ticking(ctx, plan, observer))


class _Ticking(InputQueue):
    """One subscription: the inputs waiting for their ticks, the sequence ticking now
    (``n`` ticks so far), and its pending one-shot timer."""

    def __init__(self, ctx: Any, plan: TimerPlan, observer: Any) -> None:
        super().__init__(ctx, observer, plan.rt, plan.boundary, plan.downstream)
        self.timer = plan.timer
        self.emit = fast_on_next(observer)
        self.current: Any = None  # the input whose ticks are being emitted
        self.active = False
        self.n = 0
        self.pending: Optional[DisposableBase] = None
        # a run that ends (fails, is cancelled, or never ends by itself: a Timer without
        # max_time or until) stops the pending timer, which is not one of its tasks
        ctx.on_shutdown(self.stop)

    def start(self) -> None:
        if not self.active:
            self._start_next()

    def idle(self) -> bool:
        return not self.active and not self.jobs

    # -- ticking --------------------------------------------------------------------------
    def _start_next(self) -> None:
        """Begin the next input's sequence, or, with none waiting, complete if upstream did."""
        if self.jobs and not self.ctx.stopped and not self.disposed:
            self.current = self.jobs.popleft()
            self.active = True
            self.n = 0
            self._arm(0.0)  # tick 1 at once
            return
        self.active = False
        self.set_full(bool(self.jobs))
        self.maybe_complete()
        if self.completed:
            self.ctx.forget(self.stop)

    def _arm(self, delay: float) -> None:
        self.pending = reactivex.timer(delay, scheduler=self.ctx.scheduler).subscribe(
            lambda _: self._due(), scheduler=self.ctx.scheduler)

    def _due(self) -> None:
        """The timer fired: tick now if the downstream has room, else when it has."""
        self.pending = None
        if self.ctx.stopped or self.disposed:
            return
        if self.gate.blocked:
            self.spawn(self._when_open())
        else:
            self._tick()

    async def _when_open(self) -> None:
        await self.gate.wait()
        if not self.ctx.stopped and not self.disposed:
            self._tick()

    def _tick(self) -> None:
        until, limit = self.timer.until, self.timer.max_time
        try:
            self.n += 1
            self.rt.stats.out += 1
            self.emit(self.n)
            if self.ctx.stopped or self.disposed:  # the tick ended the run or the subscription
                return
            done = (until is not None and bool(until())) or (limit is not None and self.n >= limit)
        except Exception as exc:  # ``until()`` failed (or an engine error on the way down)
            self._end_sequence()
            if self.settle(self.rt, exc, self.current, self.observer.on_next):
                self._start_next()
            return
        if done:
            self._end_sequence()
            self._start_next()
        else:
            self._arm(self.timer.delay)

    def _end_sequence(self) -> None:
        self.rt.in_flight -= 1
        self.active = False
        self.current = None

    # -- the end --------------------------------------------------------------------------
    def dispose(self) -> None:
        super().dispose()
        self.stop()

    def stop(self) -> None:
        """The run ended or the subscription was disposed before the ticks did: the
        pending tick never comes; the sequence cut short and the inputs never started
        are counted as cancelled (as the pulled ticker counts them)."""
        self.ctx.forget(self.stop)
        if self.pending is not None:
            self.pending.dispose()
            self.pending = None
        stats = self.rt.stats
        if self.active:
            stats.cancelled += 1
            self._end_sequence()
        if self.jobs:
            stats.cancelled += len(self.jobs)
            self.rt.in_flight -= len(self.jobs)
            self.jobs.clear()


__all__ = ["TimerPlan", "gated_interval"]
