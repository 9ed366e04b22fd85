"""pull_source: Loop, generator steps and Timer — for each input, a sequence pulled
only while the downstream has demand; and ``trigger``, the pipe's one-item source.

rxbot's own operator, not ``from_iterable``: RxPY's ``from_iterable`` runs the whole
iterable in one scheduler callback and cannot be paused (DESIGN §3's measured trap).
Here an asyncio task pulls the next element only while the downstream gate is open,
and yields to the loop every ``config.yield_every`` elements, or sooner when they
take time (:class:`~rxbot.engine.gate.Pace`).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from itertools import islice
from types import GeneratorType
from typing import Any, Awaitable, Callable, List

import reactivex
from reactivex.disposable import Disposable

from ...config import config
from ..fuse import taken_in
from ..gate import FIRST_LOOK, TURN_SECONDS, Boundary, Gate, Pace
from ..policy import StepRuntime
from ..slots import Slots
from ._subscription import InputQueue, Operator, fast_on_next, operator_of

#: ``produce(item, emit, gate, stats)``: push the sequence for one input
Produce = Callable[[Any, Callable[[Any], None], Gate, Any], Awaitable[None]]


@dataclass
class PullPlan:
    """What the compiler decided for one iterating step (shared by subscriptions)."""

    rt: StepRuntime
    produce: Produce
    downstream: List[Boundary]
    boundary: Boundary = field(default_factory=Boundary)


def pull_source(ctx: Any, plan: PullPlan) -> Operator:
    """The operator producing ``plan.produce``'s sequence for each input, in order.
    While an input waits, the step's boundary is full, which pauses its upstream."""
    return operator_of(lambda observer: _Pulled(ctx, plan, observer))


class _Pulled(InputQueue):
    def __init__(self, ctx: Any, plan: PullPlan, observer: Any) -> None:
        super().__init__(ctx, observer, plan.rt, plan.boundary, plan.downstream)
        self.produce = plan.produce
        self.running = False
        #: what the input being iterated has pushed so far (one input at a time)
        self.tally = _Tally(plan.rt.stats)
        ctx.segments.add(self.tally)  # BotFrame.debug(), progress and pauses publish it

    def start(self) -> None:
        if not self.running:
            self.running = True
            self.spawn(self._drain())

    def idle(self) -> bool:
        return not self.running and not self.jobs

    def _piped(self, error: Any) -> None:
        """pipein: the failure goes on as an item (counted out, as every step counts it)."""
        self.rt.stats.out += 1
        self.observer.on_next(error)

    async def _drain(self) -> None:
        gate = self.gate
        try:
            while self.jobs and not gate.halted and not self.ctx.stopped:
                item = self.jobs.popleft()
                stats = self.rt.stats
                # the ledger: this input's sequence is its fan-out. Counted apart from the
                # step's stats, which another subscription of the step (a merge of the
                # source with itself) may be adding to meanwhile
                tally = self.tally
                tally.start(stats)
                try:
                    try:
                        await self.produce(item, fast_on_next(self.observer), gate, tally)
                    finally:
                        tally.publish()
                except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                    # its sequence was cut short: the run was cancelled, or a signal
                    # interrupted a step this push was in (rxbot.stopping)
                    stats.cancelled += 1
                    stats.fanout += tally.out
                    raise
                except Exception as exc:
                    stats.fanout += tally.out  # the failure settles the input
                    if not self.settle(self.rt, exc, item, self._piped):
                        return
                else:
                    if gate.halted:  # produce returned early: the run failed or take had enough
                        stats.cancelled += 1
                        stats.fanout += tally.out
                    else:
                        stats.fanout += tally.out - 1
                finally:
                    self.rt.in_flight -= 1
        finally:
            if (self.ctx.stopped or self.disposed) and self.jobs:  # inputs never iterated
                self.rt.stats.cancelled += len(self.jobs)
                self.rt.in_flight -= len(self.jobs)
                self.jobs.clear()
            self.running = False
            self.set_full(bool(self.jobs))
            self.maybe_complete()


class _Tally:
    """What the input a source is iterating has pushed so far: ``out``, a plain counter
    the hot loops add to per element. Like a fused segment's counters it is added to the
    step's stats on request — by the run's pauses, ``BotFrame.debug()``, progress and
    the stats hook, which publish everything in ``RunContext.segments`` — and when the
    input is done. Counted apart from those stats, which another subscription of the
    step (a merge of the source with itself) may be adding to meanwhile: the input's
    fan-out is ``out``."""

    __slots__ = ("stats", "out", "published", "__weakref__")
    #: what the live views ask of a member of ``RunContext.segments``: these counts are real
    counting = True
    runtimes = ()

    def __init__(self, stats: Any) -> None:
        self.stats = stats
        self.out = 0
        self.published = 0

    def start(self, stats: Any) -> None:
        """A new input: count from zero into ``stats``."""
        self.stats = stats
        self.out = self.published = 0

    def publish(self) -> None:
        self.stats.out += self.out - self.published
        self.published = self.out

    def publish_counts(self, final: bool = True) -> None:
        self.publish()


def _unpublished() -> None:
    """``publish`` of stats that are the step's own (nothing to add)."""


async def iterate(iterable: Any, emit: Callable[[Any], None], gate: Gate, stats: Any, trace: Any = None) -> None:
    """Push every element of ``iterable``, yielding to the loop regularly and pausing
    whenever the downstream gate closes (the hot loop of every Loop source); return
    without pulling another element once the gate is halted (the run failed, or the
    subscription was disposed, e.g. by ``take``, possibly from inside this push). The
    check costs nothing per element: a halted gate is closed, so it is made only where
    the loop would pause anyway.

    Any iterable feeding a fused segment (a list, a range, a generator, an iterator) is
    handed over in slices (``itertools.islice`` of its iterator): the segment's chunk
    entry loops over a slice in generated code, one call per slice instead of one per
    item, and stops before pulling an item the downstream has no room for.

    While the gate is closed by an async step's full slots alone, that step's workers
    take the elements themselves (:meth:`Slots.draw`): right after the source, or
    through the fused segment between them.

    ``trace``: the pipe's source is traced (:class:`rxbot.observe.trace.TracedSource`).
    Where its plan put the trace's check into the fused segment ``emit`` enters
    (``trace.check``), the segment slices the source's own iterator with the check
    inline; every other way of taking an element goes through the trace's wrapping
    generator."""
    every = config.yield_every
    it = raw = iter(iterable)
    many = None
    if trace is not None:
        it = trace.wrap(raw)
        if trace.check is not None:  # the plan put the check into the fused steps ``emit`` enters
            many = getattr(emit, "__rxbot_traced_many__")(trace.check, trace.hooks)
    try:
        await _pull(it, emit, gate, stats, every, many, raw)
    finally:
        for made in (it, raw) if it is not raw else (it,):
            if isinstance(made, GeneratorType):
                # a generator given as the source (or returned by a step) that the run stops
                # early (take had enough, a failure, a cancel) runs its finally/with blocks
                # now, as a ``for`` loop's break would leave them to the garbage collector
                made.close()


async def _pull(it: Any, emit: Callable[[Any], None], gate: Gate, stats: Any, every: int,
                many: Any = None, sliced: Any = None) -> None:
    """:func:`iterate`'s loop over the source's iterator ``it``; ``many`` (default: the
    fused segment's chunk entry, if ``emit`` is one) takes its slices of ``sliced``
    (default ``it``): a traced source's own iterator, ``it`` its wrapper."""
    if many is None:
        many, sliced = getattr(emit, "__rxbot_many__", None), it
    publish = getattr(stats, "publish", _unpublished)
    ended = False
    fed = 0

    def feeder() -> bool:
        """While this source waits at its closed gate, the async step that closed it
        pulls the next element through here as soon as it frees a slot (see
        :meth:`Boundary.feed`): one element per freed slot, in order, from the same iterator."""
        nonlocal ended, fed
        for v in it:
            break
        else:
            ended = True  # no more elements: the source returns in its own task
            return False
        emit(v)
        stats.out += 1
        if gate.halted:  # this push ended the run or the subscription: stop, as below
            ended = True
            return False
        fed += 1
        if fed >= every and gate.on_pause is not None:  # live counts, as at a pause
            fed = 0
            publish()
            gate.on_pause()
        return True

    # an async step right below (or below the fused segment right below) takes the
    # elements itself while it is full
    drawing, segment = _drawer(emit)

    async def blocked() -> bool:
        """The gate is closed: draw, or wait with the feeder. True: the source is done."""
        if gate.halted:
            return True
        publish()
        if gate.on_pause is not None:
            gate.on_pause()
        if drawing is not None and drawing.drawable(gate, segment):
            if await drawing.draw(it, gate, stats, segment):
                return True  # the workers found the end of ``it``
            if gate.halted:
                return True
        await gate.wait(feeder)
        return ended

    if many is not None:
        # a slice of plain sync work takes well under a millisecond: yielding after
        # every one would cost more than the work (a loop pass is ~3 µs). Yield when
        # the gate closes, or once ``SLICE_SECONDS`` have passed. A slice is at most
        # ``every`` items and at most about a turn's worth of work (``TURN_SECONDS``):
        # the first ones are small, each one doubles while it takes under half a
        # turn, so a step costing milliseconds an item still yields in time
        clock = time.perf_counter
        size = min(every, FIRST_LOOK)
        paused = began = clock()
        while True:
            try:
                taken = many(islice(sliced, size), gate)
            except (KeyboardInterrupt, SystemExit) as exc:
                stats.out += finished_in_slice(exc, many)
                raise
            stats.out += taken
            publish()  # the report grows while the run goes on
            if taken < size and not gate.blocked:
                return  # the iterator ended
            now = clock()
            if size < every or now - began >= TURN_SECONDS / 2:  # else next_slice keeps it
                size = next_slice(size, taken, now - began, every)
            if gate.blocked:
                if await blocked():
                    return
                paused = now = clock()
            elif now - paused >= SLICE_SECONDS:
                await gate.pause()
                paused = now = clock()
            began = now
    pace: Pace | None = None  # made at the first look: most sequences are short
    look = min(every, FIRST_LOOK)
    n = 0
    try:
        for v in it:
            emit(v)
            n += 1
            if gate.blocked or n >= look:
                if not gate.blocked:
                    if pace is None:
                        pace = Pace(every, gate.beat)
                    look = pace.look(n)
                    if look:  # neither ``every`` items nor a turn's time yet
                        continue
                stats.out += n
                publish()  # at each pause, so live views see it grow
                n = 0
                if not gate.blocked:
                    await gate.pause()
                elif await blocked():
                    return
                look = pace.turned() if pace is not None else min(every, FIRST_LOOK)
    finally:
        stats.out += n


def next_slice(size: int, taken: int, spent: float, most: int) -> int:
    """The next slice's size after one of ``taken`` items took ``spent`` seconds: double
    while under half a turn (at most ``most``), cut to a turn's worth when over one.
    (:func:`_pull` asks only when this may change the size: below ``most``, or once a
    slice took half a turn.)"""
    if spent < TURN_SECONDS / 2:
        return min(most, 2 * size)
    if spent > TURN_SECONDS and taken:
        return max(1, min(most, int(taken * TURN_SECONDS / spent)))
    return size


def finished_in_slice(exc: BaseException, many: Callable[..., int]) -> int:
    """How many items of a slice ``many`` had finished when a signal interrupted a step
    inside it (``KeyboardInterrupt``/``SystemExit`` raised in the main thread, see
    :mod:`rxbot.stopping`): its count of items taken, read from its frame, less the one
    that was cut; so the report counts what went through without the hot loop counting
    anything more."""
    taken, _ = taken_in(exc, many)
    return max(0, taken - 1)


def _drawer(emit: Callable[[Any], None]) -> tuple:
    """The async step whose slots ``emit`` reaches (``Slots.submit`` itself, or a fused
    segment emitting straight into it) and that segment, or ``(None, None)``."""
    target = getattr(emit, "__self__", None)
    if isinstance(target, Slots):
        return target, None
    segment = getattr(emit, "__rxbot_segment__", None)
    if segment is not None:
        target = getattr(segment.emit, "__self__", None)
        if isinstance(target, Slots):
            return target, segment
    return None, None


#: how long a source feeding a fused segment in slices runs before it yields to the loop
SLICE_SECONDS = 0.001


def trigger(ctx: Any, value: Any = 0) -> reactivex.Observable:
    """The pipe's source: one item (databot's trigger ``0``), emitted from a task so that
    every subscriber (e.g. all branches of a route) is attached before data flows.
    Cold: every subscription gets its own trigger."""

    def subscribe(observer: Any, scheduler: Any = None) -> Disposable:
        async def emit() -> None:
            observer.on_next(value)
            observer.on_completed()

        task = ctx.spawn(emit())
        return Disposable(task.cancel)

    return reactivex.create(subscribe)


__all__ = ["PullPlan", "pull_source", "iterate", "trigger", "Produce"]
