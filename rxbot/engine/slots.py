"""A bounded pool of worker tasks: the flow-control heart of every async operator."""
from __future__ import annotations

import asyncio
import inspect
import types
from collections import deque
from typing import Any, Awaitable, Callable, Coroutine, cast

from ..config import config
from .fuse import ENDED, NOTHING, STOPPED, plain_cycle
from .gate import FIRST_LOOK, Boundary, Pace

_STOP = object()
_COROUTINE = types.CoroutineType


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

    **Feeding** (``feed=True``). Under load a worker that finishes finds the queue
    empty: the source upstream stopped when the slots filled and learns only now that
    one is free. Opening its gate would cost several trips through the event loop per
    item (wake the source, hand the item to a parked worker, park again) against one
    for a hand-written worker pulling from its source. So the worker first asks the
    boundary to *feed* it (:meth:`Boundary.feed`): a source waiting at a gate that this
    boundary alone keeps closed pushes its next element synchronously, which lands in
    the queue, and the worker takes it at once. The slots stay full throughout, so the
    bounds are exactly those without feeding: at most ``limit`` calls in flight
    (DESIGN: ``concurrency`` = calls in flight) and ``limit`` items held, whatever the
    source's length. (A queue of extra items beyond ``limit``, Akka's ``mapAsync``
    buffer, measured about as fast but would hold twice the items and let a Timer tick
    into a busy step.)

    **Drawing** (:meth:`draw`). When the source's elements go straight into these
    slots (a Loop or generator right before an async step), the source hands over its
    iterator instead and each worker takes its next element when its call ends, keeping
    its slot for the element: no feeder, queue or wake-up per element.
    The bounds and the order of calls are those of feeding. A worker that may draw
    hands its slot to a task running the *drawing cycle* (``rxbot.engine.fuse``,
    generated per fused segment, or the plain one right after a source): one coroutine
    that takes the next elements (through the segment's steps), calls this step on each
    output and settles the result, round and round; when it may no longer draw, the
    task goes on as a worker (:meth:`after_cycle`).

    **A work** is ``runner(work)``'s result, awaited when it is awaitable. Without
    ``finish`` that is all (the runner is a coroutine that settles its own errors; an
    exception escaping it ends the worker and, through its task, the run). With
    ``finish`` the runner is an async step's own function and the worker calls it and
    awaits its coroutine itself, so no coroutine of rxbot's wraps each call (one object
    and one frame fewer per item on the hottest async path): a result of None drops the
    item (DESIGN §2), counted as filtered on ``rt`` when ``count_none``;
    ``finish(work, value)`` applies any other result and returns an awaitable only for
    a delivery that has to pause at a gate; ``fail(work, exc)`` settles an exception.

    ``rt`` (the async step's runtime) is counted here on the hot path: ``inp`` and
    ``in_flight`` at :meth:`submit`, ``in_flight`` again when a work ends, ``cancelled``
    for works the run abandons. Without it, ``stats_of(work)`` names the stats that get
    the cancelled count.
    """

    __slots__ = ("limit", "feed", "handed", "busy", "workers", "pending", "parked", "runner", "finish", "fail",
                 "rt", "count_none", "ctx", "on_idle", "closed", "stats_of", "boundary", "full", "spawn",
                 "drawn", "awaits")

    def __init__(self, limit: int, runner: Callable[[Any], Any], ctx: Any, on_idle: Callable[[], None],
                 stats_of: Callable[[Any], Any], boundary: Boundary,
                 spawn: Callable[[Any], Any] | None = None, *, feed: bool = False,
                 finish: Callable[[Any, Any], Awaitable[Any] | None] | None = None,
                 fail: Callable[[Any, Exception], None] | None = None,
                 rt: Any = None, count_none: bool = True) -> None:
        self.limit = limit
        self.feed = feed
        self.handed = 0  # works handed to a new or parked worker that has not started them yet
        self.stats_of = stats_of  # work -> the StepStats that accepted it
        self.rt = rt
        self.count_none = count_none
        self.busy = 0
        self.workers = 0
        self.pending: deque = deque()
        self.parked: deque = deque()
        tracer = getattr(ctx, "tracer", None)
        if tracer is not None:  # --trace: the traced items' calls are watched (rxbot.observe.trace)
            runner, finish, fail = tracer.slots(runner, finish, fail, stats_of, rt)
        self.runner = runner
        #: an ``async def`` runner's call is always a coroutine: the drawing cycle awaits
        #: it as it is (a traced or retrying runner is a plain function: it looks first)
        self.awaits = type(runner) is types.FunctionType and bool(runner.__code__.co_flags & inspect.CO_COROUTINE)
        self.finish = finish
        self.fail = fail
        self.ctx = ctx
        self.spawn = spawn or ctx.spawn
        self.on_idle = on_idle
        self.closed = False
        self.boundary = boundary
        self.full = False
        #: a source's iterator the workers pull from themselves (see :meth:`draw`):
        #: ``(iterator, its gate, its stats, the future its source waits on)``
        self.drawn: tuple | None = None
        ctx.on_shutdown(self.abandon)

    def set_full(self, full: bool) -> None:
        if full is not self.full:
            self.full = full
            self.boundary.hold(full)
            if not full and self.drawn is not None:  # room without drawing: the source goes on itself
                self._end_draw(False)

    def abandon(self) -> None:
        """The run stopped: queued work will never start; count it as cancelled."""
        rt = self.rt
        while self.pending:
            self.stats_of(self.pending.popleft()).cancelled += 1
            if rt is not None:
                rt.in_flight -= 1

    def submit(self, work: Any) -> None:
        """Run ``work`` in a free slot, or queue it; full once ``limit`` are held.

        Upstream may call this directly (it is marked ``__rxbot_direct__``, see
        ``operators.fast_on_next``): work arriving after :meth:`close` is ignored, as
        reactivex's wrapper would once the subscription has ended."""
        if self.closed:
            return
        rt = self.rt
        if rt is not None:
            rt.stats.inp += 1
            rt.in_flight += 1
        if self.parked:
            self.busy += 1
            self.handed += 1
            self.parked.popleft().set_result(work)
        elif self.workers < self.limit:
            self.workers += 1
            self.busy += 1
            self.handed += 1
            self.spawn(self._worker(work))
        else:
            self.pending.append(work)
        if not self.full and self.busy + len(self.pending) >= self.limit:
            self.set_full(True)

    async def _worker(self, work: Any, drew: Any = None, drew_left: int = 0) -> None:
        """A worker: ``work``'s call first, then the next works (see the class's
        docstring). With ``drew`` it goes on after a drawing cycle instead, inside the
        cycle's own task (see :meth:`after_cycle`): no work in hand, ``drew`` says how
        drawing ended, ``drew_left`` the works to its next look at its pace."""
        runner, finish, fail, rt, pending = self.runner, self.finish, self.fail, self.rt, self.pending
        ctx, feed, boundary = self.ctx, self.feed, self.boundary
        every = config.yield_every
        # while drawing: works this worker draws before its next look at its pace (a
        # step that never suspends, e.g. an Insert holding rows, after a CPU-bound parse,
        # must still give the loop a turn every ``yield_every`` items or TURN_SECONDS)
        left = span = drew_left if drew_left > 0 else min(every, FIRST_LOOK)
        drew_so_far = 0
        pace: Pace | None = None

        def due() -> int:
            """``span`` more works drawn: 0 when this worker's turn to yield is due,
            else how many to draw before its next look."""
            nonlocal span, drew_so_far, pace
            counts.publish()  # the source's tally: the report grows while it is drawn
            if gate.on_pause is not None:  # the run's live counts, as at a source's pause
                gate.on_pause()
            drew_so_far += span
            if pace is None:
                pace = Pace(every, gate.beat)
            look = pace.look(drew_so_far)
            if look:
                span = look - drew_so_far
                return span
            drew_so_far = 0
            return 0

        def turned() -> int:
            """The worker has had its turn: the works to draw before its next look."""
            nonlocal span
            span = pace.turned()  # type: ignore[union-attr]
            return span

        step_stats = rt.stats if rt is not None else None
        dropped = step_stats if self.count_none else None  # counts a None result
        # what this worker draws from (see below; Any: unset until its first draw)
        mine = it = gate = counts = segment = cycle = cast(Any, None)
        coroutine = _COROUTINE  # (a local: read per work)
        how = drew  # how the last drawing cycle ended (None: a work is in hand)
        if how is None:
            self.handed -= 1
        try:
            while True:
                if how is None:
                    # a work's call (the same settling as the drawing cycle's, see
                    # rxbot.engine.fuse._Program._cycle)
                    try:
                        value = runner(work)
                        if type(value) is coroutine or inspect.isawaitable(value):
                            value = await value
                        if finish is not None:
                            if value is None:  # dropped by the step's own rule
                                if dropped is not None:
                                    if not ctx.stopped:
                                        dropped.filtered += 1
                                    else:  # the run stopped while it was out (ledger: cancelled)
                                        dropped.cancelled += 1
                                elif step_stats is not None:  # a holding node keeps it for now
                                    step_stats.held += 1
                            else:
                                value = finish(work, value)
                                if value is not None:  # a delivery that waits for room downstream
                                    await value
                    except BaseException as exc:
                        self.call_failed(work, exc)
                elif how is ENDED:  # how the drawing cycle before this one ended
                    self._end_draw(True)
                elif how is STOPPED:  # it may no longer draw: the worker looks again itself
                    how = None
                elif how is not NOTHING:  # raised in the source's task, as when it pushes
                    self._end_draw(how)
                # the call has ended. While the workers draw from a source, its slot goes
                # straight to the source's next element (busy and in flight stay as they
                # are: one call ended, the next starts). A block run at most once, left by
                # ``break`` (no drawing now) or ``return`` (the slot went to a cycle)
                while how is None:
                    drawn = self.drawn
                    if drawn is None or pending:
                        break
                    if drawn is not mine:  # a draw this worker has not drawn from yet
                        mine = drawn
                        it, gate, counts, _, segment = drawn
                        # the cycle running the source's next elements (through the fused
                        # segment's steps) into this step; None through a route
                        awaits = self.awaits
                        cycle = plain_cycle(awaits) if segment is None else segment.cycle and segment.cycle(awaits)
                    # only this step holds the source (a halted gate, a failed run, a later
                    # full step close it more), and no handed work is to start first. The
                    # slots are full all along (see set_full)
                    if gate.blocked != 1 or self.handed:
                        self._end_draw(False)  # the source waits at its gate again, and opens with it
                        break
                    if cycle is None:
                        # through a route: the segment's outputs land in ``pending``
                        # (submit), taken below. At most ``every`` elements per freed
                        # slot (a segment that drops them all must not keep the loop),
                        # then the slot frees and the source goes on in its own task
                        try:
                            entry = segment.entry
                            for _ in range(every):
                                v = next(it)
                                counts.out += 1
                                entry(v)
                                if pending or gate.blocked != 1:
                                    break
                        except StopIteration:
                            self._end_draw(True)
                        except Exception as exc:  # raised in the source's task, as when it pushes
                            self._end_draw(exc)
                        break
                    # the next works, each the source's next element through the
                    # segment's steps, are called and settled by the drawing cycle, in a
                    # task of its own (one coroutine fewer between the event loop and
                    # each call than awaiting it here), which this slot passes to
                    started = ctx.loop.create_future()
                    self.workers += 1
                    self.spawn(cycle(self, mine, it, gate, counts, every, runner, finish, ctx, dropped, step_stats,
                                     left, due, turned, started))
                    try:
                        await started
                    except asyncio.CancelledError:
                        # the cancellation cancels ``started`` too, unless the cycle had
                        # started (and set it) first: then the slot is the cycle's
                        if started.cancelled() or not started.done():  # never started: still ours
                            started.cancel()  # (and the cycle, should it start, returns at once)
                            self.workers -= 1
                            self._release()
                        raise
                    return
                how = None
                self._release()
                if ctx.stopped:
                    return
                if feed and not pending and self.full and not self.handed:
                    # the source's next element, if it can, lands in pending; not while a
                    # work handed to a parked worker waits to start (calls start in order)
                    boundary.feed()
                if pending:  # the common case under load: the next work without a trip
                    self.busy += 1  # through the event loop
                    work = pending.popleft()
                    if self.full and self.busy + len(pending) < self.limit:
                        self.set_full(False)
                    continue
                if self.full:
                    self.set_full(False)
                if not self.busy:
                    self.on_idle()
                if self.closed:
                    return
                parked = ctx.loop.create_future()
                self.parked.append(parked)
                try:
                    work = await parked
                except asyncio.CancelledError:
                    # work handed over just before the cancellation never started
                    if parked.done() and not parked.cancelled() and parked.result() is not _STOP:
                        self.busy -= 1
                        self.handed -= 1
                        self.stats_of(parked.result()).cancelled += 1
                        if rt is not None:
                            rt.in_flight -= 1
                    raise
                if work is _STOP:
                    return
                self.handed -= 1
        finally:
            if drew is None:  # a cycle's continuation is counted off by the cycle's task
                self.workers -= 1

    def after_cycle(self, how: Any, left: int) -> Coroutine[Any, Any, None]:
        """A drawing cycle has stopped drawing (``how``: ``STOPPED``, ``NOTHING``,
        ``ENDED`` or the source's exception): its task goes on as a worker."""
        return self._worker(None, how, left)

    def call_failed(self, work: Any, exc: BaseException) -> None:
        """A work's call (or the settling of its result) raised ``exc``, in the worker or
        its drawing cycle: an Exception goes to ``fail`` (which may re-raise); a
        cancellation counts the work cancelled and frees its slot; anything else frees
        the slot too. Each of these but a settled failure is raised again, ending the
        worker (and, but for a cancellation, failing the run through its task)."""
        if isinstance(exc, asyncio.CancelledError):
            self.stats_of(work).cancelled += 1
        elif isinstance(exc, Exception) and self.fail is not None:
            try:
                self.fail(work, exc)
                return
            except BaseException:
                self._release()
                raise
        self._release()
        raise exc

    async def give_turn(self) -> None:
        """A drawing worker gives the loop a turn between two works, holding its slot
        (a cancellation frees it: no work of the step is out)."""
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self._release()
            raise

    def _release(self) -> None:
        """A work has ended (done, failed or cancelled): its slot is free."""
        self.busy -= 1
        if self.rt is not None:
            self.rt.in_flight -= 1

    # -- drawing from a source ----------------------------------------------------------
    def drawable(self, gate: Any, segment: Any = None) -> bool:
        """Can the source waiting at ``gate`` hand its iterator to :meth:`draw`? Only
        while these slots alone keep that gate closed and the source is the only one
        feeding them (sources of a join take turns through :meth:`Boundary.feed`), directly
        or through ``segment`` (a fused segment emitting into these slots, with nothing
        waiting in its ordered lane)."""
        boundary = self.boundary
        if not (self.feed and self.full and self.drawn is None and not self.closed and gate.blocked == 1
                and boundary.holders == 1):
            return False
        if segment is None:
            return len(boundary.gates) == 1 and boundary.gates[0] is gate
        return (not segment.held[0] and not segment.disposed
                and all(g is gate or g is segment.gate for g in boundary.gates))

    async def draw(self, it: Any, gate: Any, stats: Any, segment: Any = None) -> bool:
        """The workers pull ``it``'s next elements themselves, each when it finishes a
        call, as hand-written workers pulling from one iterator do: no push, queue or
        wake-up per element. It is :meth:`Boundary.feed` without the trip through the
        source's feeder and :meth:`submit` — a source whose elements go straight into
        these slots (an async step right after a Loop or generator) hands its iterator
        over while it waits. The bounds are the same: a worker pulls only when its call
        has ended, so calls in flight stay at most ``limit`` and calls start in the
        iterator's order.

        ``segment``: a fused segment sits between the source and these slots; a worker
        runs the source's next elements through it (its drawing cycle) until one
        reaches these slots.

        Returns True when the iterator ended, False when drawing stopped first (the gate
        closed for another reason, a work handed to a parked worker must start first,
        the subscription closed): the source then waits at its gate as before. An
        exception of the iterator is raised here, in the source's task."""
        fut = self.ctx.loop.create_future()
        self.drawn = (it, gate, stats, fut, segment)
        try:
            ended: bool = await fut
            return ended
        finally:
            if self.drawn is not None and self.drawn[3] is fut:  # cancelled with the run
                self.drawn = None

    def _end_draw(self, how: Any) -> None:
        """Stop drawing: the source's task goes on (True: its iterator ended; False: it
        waits at its gate again; an exception: it raises it)."""
        drawn, self.drawn = self.drawn, None
        if drawn is None or drawn[3].done():
            return
        if isinstance(how, BaseException):
            drawn[3].set_exception(how)
        else:
            drawn[3].set_result(how)

    def close(self) -> None:
        """The subscription is done (or disposed): let parked workers end and stop
        holding the boundary full."""
        self._end_draw(False)
        self.closed = True
        self.ctx.forget(self.abandon)
        while self.parked:
            self.parked.popleft().set_result(_STOP)
        self.set_full(False)

    def idle(self) -> bool:
        return not self.busy and not self.pending


Slots.submit.__rxbot_direct__ = True  # type: ignore[attr-defined]  # see Slots.submit

__all__ = ["Slots"]
