"""The stage implementations behind each kind of step, each exposed as a reactivex
operator (``Observable -> Observable``) with per-subscription state.

* :class:`SyncSegment` — consecutive sync steps fused into straight-line code, run
  inline on the pushing call stack (no Task per item).
* :class:`AsyncStage` — an ``async def`` step, boosted step or async Node, with a fixed
  number of slots (items in flight).
* :class:`IterStage` — Loop and Timer: pull elements only while downstream has room.
"""
from __future__ import annotations

import asyncio
import inspect
from collections import deque
from typing import Any, Callable, List, Sequence

import reactivex
from reactivex.disposable import CompositeDisposable
from reactivex.observer.autodetachobserver import AutoDetachObserver

from ..config import config
from .fuse import fuse
from .gate import Boundary, Gate
from .policy import PIPEIN, RAISE, StepRuntime
from .results import AWAIT, MANY, ONE, SINGLE, kind_of


def _discard(_: Any) -> None:
    """Where a pipe's last results go."""


def fast_on_next(observer: Any) -> Callable[[Any], None]:
    """The function to call per item to reach ``observer``.

    reactivex wraps every subscriber in an ``AutoDetachObserver`` whose ``on_next`` only
    checks ``is_stopped`` and forwards. When the subscriber is one of our fused segments
    we call its entry point directly, saving a call per item on the hottest path; a
    failed run stops its sources through their gates instead (see ``RunContext.fail``).
    """
    if isinstance(observer, AutoDetachObserver):
        target = observer._on_next
        if getattr(target, "__rxbot_fused__", False):
            return target
    return observer.on_next


class Stage:
    """Common wiring: one downstream observer, upstream completion, idle detection."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.observer: Any = None
        self.upstream_done = False
        self.completed = False

    def operator(self, source: reactivex.Observable) -> reactivex.Observable:
        def subscribe(observer, scheduler=None):
            self.observer = observer
            self.on_subscribe()
            return source.subscribe(self.on_next, self.on_error, self.on_completed, scheduler=scheduler)

        return reactivex.create(subscribe)

    def on_subscribe(self) -> None:
        pass

    def on_next(self, item: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def on_error(self, exc: Exception) -> None:
        self.observer.on_error(exc)

    def on_completed(self) -> None:
        self.upstream_done = True
        self.maybe_complete()

    def idle(self) -> bool:
        return True

    def maybe_complete(self) -> None:
        if self.ctx.stopped:  # a failed or cancelled run completes nothing (no flushes)
            return
        if self.upstream_done and not self.completed and self.idle():
            self.completed = True
            self.release()
            self.observer.on_completed()

    def release(self) -> None:
        """Free what the stage holds once it has completed (parked workers)."""
        slots = getattr(self, "slots", None)
        if slots is not None:
            slots.close()

    def settle(self, rt: StepRuntime, exc: BaseException, item: Any, emit: Callable[[Any], None]) -> bool:
        """Apply ``rt``'s policy to a failure of ``item``: raise ends the stream, pipein
        sends the original (annotated) exception on through ``emit``, ignore drops it.
        Returns False when the stream has ended."""
        action, value = rt.final(exc, item)
        if action == RAISE:
            self.raise_(value)
            return False
        if action == PIPEIN:
            for error in value:  # one StepError per rejected item
                emit(error)
        return True

    def raise_(self, exc: BaseException) -> None:
        """The ``raise`` policy: end the stream with the (annotated) original exception.

        The run is failed at once (not only when the error reaches the pipe's end) so
        that every source stops before pushing another item."""
        self.ctx.fail(exc)
        self.observer.on_error(exc)


_STOP = object()


class Slots(Boundary):
    """At most ``limit`` works in flight, the rest queued; full when ``limit`` works are
    in flight or queued, which closes the gates of the stages upstream.

    Workers are tasks. A worker that finds no queued work parks on a future instead of
    exiting, and ``submit`` hands the next work to a parked worker, so a busy stage
    costs one Task per slot for the whole run rather than one per item. Parked workers
    are released by :meth:`close` once the stage has completed (or cancelled with the
    run).
    """

    __slots__ = ("limit", "busy", "workers", "pending", "parked", "runner", "ctx", "on_idle", "closed",
                 "stats_of")

    def __init__(self, limit: int, runner: Callable[[Any], Any], ctx: Any, on_idle: Callable[[], None],
                 stats_of: Callable[[Any], Any]) -> None:
        super().__init__()
        self.limit = limit
        self.stats_of = stats_of  # work -> the StepStats that accepted it
        self.busy = 0
        self.workers = 0
        self.pending: deque = deque()
        self.parked: deque = deque()
        self.runner = runner
        self.ctx = ctx
        self.on_idle = on_idle
        self.closed = False
        ctx.on_shutdown(self.abandon)

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
            self.ctx.spawn(self._worker(work))
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
        """The stage is done: let parked workers end."""
        self.closed = True
        self.ctx.forget(self.abandon)
        while self.parked:
            self.parked.popleft().set_result(_STOP)

    def idle(self) -> bool:
        return not self.busy and not self.pending


async def deliver(result: Any, emit: Callable[[Any], None], gate: Gate) -> bool:
    """Apply the return-value rules to a result produced in async context.

    Returns False when the result was None (the step dropped the item by its own rule)."""
    while True:
        if result is None:
            return False
        kind = ONE if type(result) in SINGLE else kind_of(result)
        if kind == ONE:
            emit(result)
            return True
        if kind == AWAIT:
            result = await result
            continue
        every = config.yield_every
        n = 0
        if kind == MANY:
            for v in result:
                emit(v)
                n += 1
                if gate.blocked or n >= every:
                    n = 0
                    await gate.pause()
        else:  # AGEN
            try:
                async for v in result:
                    emit(v)
                    if gate.blocked:
                        await gate.wait()
            finally:
                # an abandoned generator (failure, cancellation) runs its cleanup now,
                # before the run closes the nodes it may be using
                await result.aclose()
        return True


#: results iterated inline: already materialised, so expanding them costs no memory
_EAGER = (list, tuple, set, frozenset, dict)
#: kinds of work in a segment's ordered lane
_LAZY, _VALUE = "lazy", "value"


class SyncSegment(Stage):
    """A run of sync steps fused into one function (see :mod:`rxbot.engine.fuse`).

    Work that cannot finish inline — a coroutine or async generator returned by a sync
    callable, or a retry that needs a backoff sleep — goes to a bounded set of slots,
    which makes the segment a flow-control boundary like an async step.

    A *lazy* iterable returned by a sync callable (a generator object, ``range``,
    ``map``, an iterator) could be endless, so it is not expanded on the spot but in
    the segment's ordered **lane**: one worker that pulls its elements only while the
    downstream gate is open, yielding to the loop regularly. While the lane is busy the
    segment counts as full (its upstream pauses) and every result the segment produces
    meanwhile queues in the lane behind it, so outputs keep their input order. (A step
    that returns a lazy iterable for some items and single values for others may run
    later steps' side effects out of order within one burst; the outputs stay ordered.)
    """

    def __init__(self, ctx: Any, runtimes: Sequence[StepRuntime], shape: Sequence[str],
                 fns: Sequence[Any], consts: Sequence[Any], downstream: List[Boundary],
                 terminal: bool = False, flushes: Sequence[tuple] = ()) -> None:
        super().__init__(ctx)
        self.terminal = terminal
        # (position, node.flush) of sync nodes with an end-of-input hook, in order
        self.flushes = list(flushes)
        self.flushing = False
        self.runtimes = list(runtimes)
        self.shape = list(shape)
        self.fns = list(fns)
        self.consts = list(consts)
        self.conts: tuple = ()
        self.gate = ctx.gate(downstream)
        self.slots = Slots(min(rt.concurrency for rt in runtimes), self._run_deferred, ctx, self.maybe_complete,
                           lambda work: self.runtimes[work[2]].stats)
        self.lane = Slots(1, self._run_lane, ctx, self._lane_idle,
                          lambda work: self.runtimes[work[3] if work[0] is _LAZY else -1].stats)
        self.lane.gates = self.slots.gates  # one boundary: full when either is
        self.held = [False]  # results queue in the lane while it is busy
        self.captures: List[list] = []  # lazy results met while the lane worker runs code
        self.emit: Callable[[Any], None] = _discard
        counting = config.metrics if config.metrics is not None else config.counting() or any(
            rt.policy != "raise" for rt in self.runtimes)
        n = len(self.runtimes)
        self.counters = ([0] * n, [0] * n, [0] * n) if counting else None
        self.counting = counting
        ctx.segments.add(self)  # BotFrame.debug() publishes counts mid-run or says there are none
        if counting:
            ctx.on_shutdown(self.publish_counts)

    @property
    def boundary(self) -> Boundary:
        return self.slots

    def operator(self, source: reactivex.Observable) -> reactivex.Observable:
        def subscribe(observer, scheduler=None):
            self.observer = observer
            self.emit = emit = _discard if self.terminal else fast_on_next(observer)
            self.conts = fuse(self.shape, self.fns, self.consts, emit,
                              self.spread, self.fail, SINGLE, self.terminal, self.counters,
                              self.held, self.hold)
            return source.subscribe(self.conts[0], self.on_error, self.on_completed, scheduler=scheduler)

        return reactivex.create(subscribe)

    def idle(self) -> bool:
        return self.slots.idle() and self.lane.idle() and not self.flushing

    def release(self) -> None:
        self.slots.close()
        self.lane.close()

    def publish_counts(self, final: bool = True) -> None:
        """Add this segment's counters to the steps' stats and zero them (segments of a
        BlockedJoin branch are built per item and all add up). ``final=False``: a
        mid-run snapshot (BotFrame.debug()); counting goes on."""
        if self.counters is None:
            return
        ci, co, cn = self.counters  # zeroed in place below: the fused code holds these lists
        for k, rt in enumerate(self.runtimes):
            rt.stats.inp += ci[k]
            rt.stats.out += co[k]
            rt.stats.filtered += cn[k]
            ci[k] = co[k] = cn[k] = 0
        if final:
            self.counters = None
            self.ctx.forget(self.publish_counts)

    def maybe_complete(self) -> None:
        if self.ctx.stopped:
            return
        if self.upstream_done and not self.completed and self.idle():
            if self.flushes:  # end of input: flush the nodes first, in step order
                flushes, self.flushes = self.flushes, []
                self.flushing = True
                self.ctx.spawn(self._flush(flushes))
                return
            self.publish_counts()
        super().maybe_complete()

    async def _flush(self, flushes: Sequence[tuple]) -> None:
        """Each node's ``flush()`` result enters the steps after it, before the next
        node flushes (so a later node's flush sees everything an earlier one emitted)."""
        try:
            for n, (j, flush) in enumerate(flushes):
                if n:  # the previous flush's results may still be in the lane or slots
                    while not (self.slots.idle() and self.lane.idle()):
                        await asyncio.sleep(0.001)  # rare: two flushing nodes in one segment
                try:
                    await deliver(await flush(), self.conts[j + 1], self.gate)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not self.settle(self.runtimes[j], exc, "<flush at end of input>", self.conts[j + 1]):
                        return
        finally:
            self.flushing = False
            self.maybe_complete()

    def _count_out(self, i: int, n: int) -> None:
        if self.counters is not None:
            self.counters[1][i] += n

    def spread(self, x: Any, k: int, i: int, a: Any) -> None:
        """Slow path of the fused code: a result that is not a known single type."""
        kind = kind_of(x)
        if kind == ONE:
            self._count_out(i, 1)
            self.conts[k](x)
        elif kind == MANY:
            lazy = not isinstance(x, _EAGER)
            if self.captures:  # the lane worker's own code: expand right after this element
                if lazy:
                    self.captures[-1].append((x, k, i, a))
                    return
            elif lazy or self.held[0]:
                self.held[0] = True
                self.lane.submit((_LAZY, x, k, i, a))
                return
            cont = self.conts[k]
            counters = self.counters
            try:
                for v in x:  # a generator raising here is reported as step i's failure
                    if counters is not None:
                        counters[1][i] += 1
                    cont(v)
            except Exception as exc:
                self.fail(exc, i, a)
        else:
            self.slots.submit((x, k, i, a, None))

    # -- the ordered lane -------------------------------------------------------------
    def hold(self, x: Any) -> None:
        """A result produced while the lane is busy waits its turn there."""
        self.lane.submit((_VALUE, x))

    def _lane_idle(self) -> None:
        self.held[0] = False
        self.maybe_complete()

    async def _run_lane(self, work: tuple) -> None:
        if work[0] is _VALUE:
            self.emit(work[1])
        else:
            await self._expand(*work[1:])

    async def _expand(self, x: Any, k: int, i: int, a: Any) -> None:
        """Push the elements of step ``i``'s lazy result ``x`` into position ``k``, one at
        a time, depth first: lazy results met while handling an element are expanded
        before the next element, so the order is the order of a plain nested loop."""
        cont = self.conts[k]
        counters = self.counters
        gate = self.gate
        every = config.yield_every
        n = 0
        try:
            it = iter(x)
        except Exception as exc:
            self._final(exc, i, a)
            return
        while True:
            self.captures.append([])
            self.held[0] = False  # this element's results go straight downstream
            try:
                try:
                    v = next(it)
                except StopIteration:
                    return
                if counters is not None:
                    counters[1][i] += 1
                cont(v)
            except Exception as exc:  # the iterator failed part-way: no retry (no duplicates)
                self._final(exc, i, a)
                return
            finally:
                nested = self.captures.pop()
                self.held[0] = True  # until the lane is idle again
            for job in nested:
                await self._expand(*job)
            n += 1
            if gate.blocked or n >= every:
                n = 0
                await gate.pause()

    def fail(self, exc: Exception, i: int, item: Any) -> None:
        rt = self.runtimes[i]
        if rt.retries:
            self.slots.submit((None, i + 1, i, item, exc))
            return
        self._final(exc, i, item)

    def _final(self, exc: BaseException, i: int, item: Any) -> None:
        def pipe_in(error: Any) -> None:
            self._count_out(i, 1)
            self.conts[i + 1](error)

        self.settle(self.runtimes[i], exc, item, pipe_in)

    async def _run_deferred(self, work: tuple) -> None:
        result, k, i, item, error = work
        try:
            if error is not None:
                result = await self.runtimes[i].call_with_retry(self.fns[i], item, first_error=error)
            cont = self.conts[k]
            if self.counters is not None:
                counters = self.counters

                def cont(v: Any, _next: Callable = cont) -> None:
                    counters[1][i] += 1
                    _next(v)
            if not await deliver(result, cont, self.gate) and self.counters is not None:
                self.counters[2][i] += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._final(exc, i, item)


class AsyncStage(Stage):
    """An async callable with ``runtime.concurrency`` slots."""

    def __init__(self, ctx: Any, runtime: StepRuntime, fn: Callable[[Any], Any],
                 downstream: List[Boundary], flush: Callable[[], Any] | None = None,
                 holds_items: bool = False) -> None:
        super().__init__(ctx)
        self.rt = runtime
        self.count_none = not holds_items  # a None from a holding node is not a filter
        self.fn = fn
        self.flush = flush
        self.gate = ctx.gate(downstream)
        self.slots = Slots(runtime.concurrency, self._run, ctx, self.maybe_complete, lambda _: runtime.stats)
        self.flushing = False

    @property
    def boundary(self) -> Boundary:
        return self.slots

    def on_next(self, item: Any) -> None:
        self.rt.stats.inp += 1
        self.rt.in_flight += 1
        self.slots.submit(item)

    def idle(self) -> bool:
        return self.slots.idle() and not self.flushing

    def _emit(self, value: Any) -> None:
        self.rt.stats.out += 1
        self.observer.on_next(value)

    async def _run(self, item: Any) -> None:
        rt = self.rt
        try:
            if rt.retries or rt.timeout is not None:
                result = await rt.call_with_retry(self.fn, item)
            else:  # the common case, without the retry/timeout machinery
                result = self.fn(item)
                if inspect.isawaitable(result):
                    result = await result
            if self.ctx.stopped:  # the run ended while this call was out
                return
            if result is None or not await deliver(result, self._emit, self.gate):
                rt.stats.filtered += self.count_none
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.settle(rt, exc, item, self._emit)
        finally:
            rt.in_flight -= 1

    def maybe_complete(self) -> None:
        if self.ctx.stopped:
            return
        if self.flush is not None and self.upstream_done and not self.completed and not self.flushing \
                and self.slots.idle():
            self.flushing = True
            flush, self.flush = self.flush, None
            self.ctx.spawn(self._flush(flush))
            return
        super().maybe_complete()

    async def _flush(self, flush: Callable[[], Any]) -> None:
        try:
            await deliver(await flush(), self._emit, self.gate)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.settle(self.rt, exc, "<flush at end of input>", self._emit)
        finally:
            self.flushing = False
            super().maybe_complete()


class IterStage(Stage, Boundary):
    """Loop and Timer: for each input, produce a sequence, pulling the next element only
    while the downstream gate is open. Inputs are handled one after another, in order;
    the stage counts as full while an input waits, which pauses its upstream."""

    def __init__(self, ctx: Any, runtime: StepRuntime, produce: Callable[[Any, Gate], Any],
                 downstream: List[Boundary]) -> None:
        Stage.__init__(self, ctx)
        Boundary.__init__(self)
        self.rt = runtime
        self.produce = produce  # async (item, emit, gate) -> None
        self.gate = ctx.gate(downstream)
        self.jobs: deque = deque()
        self.running = False

    @property
    def boundary(self) -> Boundary:
        return self

    def on_next(self, item: Any) -> None:
        self.rt.stats.inp += 1
        self.rt.in_flight += 1
        self.jobs.append(item)
        self.set_full(True)
        if not self.running:
            self.running = True
            self.ctx.spawn(self._drain())

    def idle(self) -> bool:
        return not self.running and not self.jobs

    def _emit(self, value: Any) -> None:
        self.observer.on_next(value)

    async def _drain(self) -> None:
        try:
            while self.jobs and not self.ctx.stopped:
                item = self.jobs.popleft()
                try:
                    await self.produce(item, fast_on_next(self.observer), self.gate, self.rt.stats)
                except asyncio.CancelledError:
                    self.rt.stats.cancelled += 1  # its sequence was cut short
                    raise
                except Exception as exc:
                    if not self.settle(self.rt, exc, item, self.observer.on_next):
                        return
                finally:
                    self.rt.in_flight -= 1
        finally:
            if self.ctx.stopped and self.jobs:  # inputs that will never be iterated
                self.rt.stats.cancelled += len(self.jobs)
                self.jobs.clear()
            self.running = False
            self.set_full(bool(self.jobs))
            self.maybe_complete()


async def iterate(iterable: Any, emit: Callable[[Any], None], gate: Gate, stats: Any) -> None:
    """Push every element of ``iterable``, yielding to the loop regularly and pausing
    whenever the downstream gate closes (the hot loop of every Loop source)."""
    every = config.yield_every
    n = 0
    count = 0
    try:
        for v in iterable:
            emit(v)
            n += 1
            if gate.blocked or n >= every:
                count += n
                n = 0
                await gate.pause()
    finally:
        stats.out += count + n


def trigger(ctx: Any, value: Any = 0) -> reactivex.Observable:
    """The pipe's source: one item (databot's trigger ``0``), emitted from a task so that
    every subscriber (e.g. all branches of a route) is attached before data flows."""

    def subscribe(observer, scheduler=None):
        async def emit() -> None:
            observer.on_next(value)
            observer.on_completed()

        ctx.spawn(emit())
        return CompositeDisposable()

    return reactivex.create(subscribe)


__all__ = ["Stage", "Slots", "SyncSegment", "AsyncStage", "IterStage", "iterate", "trigger", "deliver"]
