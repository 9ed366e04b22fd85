"""Credit-based flow control for a push-based Rx pipeline.

RxPY pushes; it has no request(n). rxbot makes pushes safe by pausing only where a push
can pause: at sources and other iterating stages, which ``await`` a :class:`Gate` before
pulling their next element. A gate is closed while any *downstream* :class:`Boundary`
(an async step, an iterating stage) is full, so memory is bounded by the boundaries'
slots whatever the length of the source. Waiting only on downstream boundaries (never on
upstream or sibling ones) keeps the wait graph acyclic, hence free of deadlocks.
"""
from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Callable, Iterable, List

_ENDED = object()  # a gate's waiter result: the waiting source's feeder ran dry


class Boundary:
    """A point of the built graph where work is bounded (an async step's slots, an
    iterating stage); tells its gates when it fills or drains.

    The boundary belongs to the *build* (it is how the gates upstream learn about it),
    while the slots that fill it belong to each *subscription* of the operator: every
    subscription holds the boundary full through :meth:`hold` while it has no room, so
    an operator subscribed again (``repeat``, ``retry``) or twice at once keeps one
    consistent demand signal upstream.
    """

    __slots__ = ("full", "gates", "holders", "turn")

    def __init__(self) -> None:
        self.full = False
        self.gates: List[Gate] = []
        self.holders = 0
        self.turn = 0  # where the next :meth:`feed` starts looking among the gates

    def hold(self, full: bool) -> None:
        """One holder (a subscription's slots) became full (True) or has room again."""
        self.holders += 1 if full else -1
        self.set_full(self.holders > 0)

    def feed(self) -> bool:
        """The only holder of this full boundary has just freed a slot: instead of
        opening the gates (waking a source's task, which pushes one element, fills the
        boundary and waits again: several trips through the event loop per element),
        let a source that waits at a gate closed by this boundary alone push its next
        element now, synchronously, through its feeder (see :meth:`Gate.wait`). True
        when one did. The boundary stays full all along, so the bounds are unchanged;
        the element takes the path it would have taken from the source's own task.

        A feeder that has no more elements, or whose element raised (in its iterator or
        downstream), wakes its source to end or fail in its own task, as if it had
        pulled the element itself. Sources feeding one boundary (a join) take turns."""
        if self.holders != 1:
            return False
        gates = self.gates
        n = len(gates)
        if n > 1:  # start after the gate that fed last (the list itself is never reordered)
            t = self.turn % n
            gates = gates[t:] + gates[:t]
        k = 0
        for g in gates:
            k += 1
            if g.blocked != 1:  # other boundaries (or a halt) keep this gate closed too
                continue
            fut = g._fed
            if fut is not None and not fut.done():
                try:
                    if g.feeder():  # type: ignore[misc]
                        if n > 1:
                            self.turn += k
                        return True
                    fut.set_result(_ENDED)
                except Exception as exc:
                    fut.set_exception(exc)
        return False

    def set_full(self, full: bool) -> None:
        if full is self.full:
            return
        self.full = full
        if full:
            for g in self.gates:
                g.blocked += 1
        else:
            for g in self.gates:
                g.blocked -= 1
                if not g.blocked and g._waiters:
                    g._wake()


class Gate:
    """Open while none of the given downstream boundaries is full.

    A gate :func:`halt`-ed (its run failed, or its subscription was disposed) stays
    closed for good and says so in ``halted``: a source that finds its gate closed after
    a push checks it and returns instead of waiting for room that never comes. It is a
    flag of its own because ``blocked`` alone cannot tell "downstream is full for now"
    from "nobody will ever want another element"."""

    __slots__ = ("blocked", "halted", "_waiters", "on_pause", "feeder", "_fed", "boundaries", "beat", "__weakref__")

    def __init__(self, downstream: Iterable[Boundary]) -> None:
        self.blocked = 0
        self.halted = False
        #: called at every pause, before yielding to the loop (the run publishes the live
        #: counts of its fused steps there, see ``RunContext.publish_live_counts``)
        self.on_pause: Callable[[], None] | None = None
        self._waiters: List[asyncio.Future] = []
        #: while a source waits here with a feeder: the feeder, and the future it waits on
        self.feeder: Callable[[], bool] | None = None
        self._fed: asyncio.Future | None = None
        self.boundaries = tuple(downstream)
        #: when the event loop last had a turn (the run's :class:`Beat`), for a :class:`Pace`
        self.beat: Beat | None = None
        for b in self.boundaries:
            b.gates.append(self)
            if b.full:
                self.blocked += 1

    def detach(self) -> None:
        """Its subscription has ended: the boundaries stop telling it anything. Without
        this, every subscription of an operator subscribed again and again (``repeat``,
        ``retry``, a long polling loop) would leave its gate in the boundaries' lists,
        which every fill and drain walks. The lists are replaced, never changed in place
        (a boundary may be walking one)."""
        for b in getattr(self, "boundaries", ()):
            if self in b.gates:
                b.gates = [g for g in b.gates if g is not self]
        self.boundaries = ()

    async def wait(self, feeder: Callable[[], bool] | None = None) -> None:
        """Return once the gate is open (immediately if it already is).

        ``feeder``: the waiting source's way to push its next element synchronously
        (True when it pushed one, False when it has no more); while the source waits,
        a boundary that frees a slot may call it (:meth:`Boundary.feed`)."""
        while self.blocked:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            if feeder is not None:
                self.feeder, self._fed = feeder, fut
            try:
                if await fut is _ENDED:  # the feeder found no more elements
                    return
            finally:
                if feeder is not None:
                    self.feeder = self._fed = None
                if fut in self._waiters:
                    self._waiters.remove(fut)

    async def pause(self) -> None:
        """The pause a source takes every few items or when downstream is full: wait for
        the gate if it is closed, else just yield to the loop once."""
        if self.on_pause is not None:
            self.on_pause()
        if self.blocked:
            await self.wait()
        else:
            await asyncio.sleep(0)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


#: the longest a loop that pushes items (a source, a step's many results, an async step
#: drawing from its source) keeps the event loop before it gives it a turn: a Dask
#: worker's heartbeats, a cancel and a Ctrl-C are served within about this (issue 25.5)
TURN_SECONDS = 0.05
#: items before such a loop's first look at the clock (a step's result of fewer items,
#: the common case, never looks)
FIRST_LOOK = 32


#: how often a run's :class:`Beat` notes that the event loop had a turn
BEAT_SECONDS = TURN_SECONDS / 2


class Beat:
    """When the event loop last ran its timers: a callback that the run re-arms every
    :data:`BEAT_SECONDS` while it goes on (``start``/``stop``). A loop whose own awaits
    suspend (an async step drawing from its source, each call a request) gives the
    event loop its turns without pausing itself; its :class:`Pace` sees that here and
    adds no pause of its own."""

    __slots__ = ("last", "_loop", "_handle")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.last = perf_counter()
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._tick()

    def _tick(self) -> None:
        self.last = perf_counter()
        self._handle = self._loop.call_later(BEAT_SECONDS, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Pace:
    """When a loop that pushes items yields to the event loop: after ``most`` items
    (``config.yield_every``), or once it has worked :data:`TURN_SECONDS` since its last
    turn, whichever comes first. By time, so a CPU-bound step (a parse costing
    milliseconds an item) never holds the loop for ``most`` times its cost.

    The clock is read only every so many items, a number the pace learns (cheap items:
    ``most``, so once per turn as the count check was; a step costing milliseconds: a
    few). The loop compares its count with that number as it compared it with
    ``yield_every``: nothing more per item.

    ``look(n)`` at the count it was given; ``turned()`` after each turn it took."""

    __slots__ = ("most", "first", "since", "beat")

    def __init__(self, most: int, beat: Beat | None = None) -> None:
        self.most = max(1, most)
        #: where the next turn's first look is: learned from the last turn
        self.first = min(self.most, FIRST_LOOK)
        self.since = perf_counter()
        #: the run's beat: a turn the event loop had meanwhile (this loop's awaits
        #: suspended) counts as this loop's
        self.beat = beat

    def look(self, n: int) -> int:
        """``n`` items pushed since the last turn: 0 when the loop should yield now, else
        the count at which to look again."""
        since = self.since
        beat = self.beat
        if beat is not None and beat.last > since:
            since = beat.last
        spent = perf_counter() - since
        if spent <= 0:
            spent = 1e-9
        fit = int(n * TURN_SECONDS / spent)  # items that fit in a turn at this rate
        if n >= self.most or spent >= TURN_SECONDS:
            self.first = max(1, min(self.most, fit))
            return 0
        return max(n + 1, min(self.most, 2 * n, fit))

    def turned(self) -> int:
        """The loop has just had its turn: the count of its next turn's first look."""
        self.since = perf_counter()
        return self.first


def halt(gates: Iterable[Gate]) -> None:
    """Close every gate for good: sources stop at their next element (a failed run, a
    disposed subscription). A source waiting at a halted gate waits until its task is
    cancelled; one that is pushing (the push that failed the run or disposed its
    subscription) finds the gate closed and ``halted`` right after, and returns."""
    for g in gates:
        if not g.halted:
            g.halted = True
            g.blocked += 1


__all__ = ["Boundary", "Gate", "halt", "Pace", "Beat", "TURN_SECONDS"]
