"""The demand signal of a flow-control :class:`~.gate.Boundary`, as a read-only Observable.

rxbot's flow control is credit-based (DESIGN §3): an async step, a pulled source or a
Timer mid-pipe owns a :class:`~.gate.Boundary` that is *full* while it has no room, and
every source upstream waits at a :class:`~.gate.Gate` while any boundary below it is
full. That signal lives in counters, not in Rx; :func:`demand` shows it in Rx terms —
``True`` when the boundary has room (upstream may push), ``False`` when it is full — so
tools and tests can watch backpressure happen (log it, plot it, ``buffer`` it, ...)
with ordinary reactivex operators.

It is a *view*: subscribing never changes the flow. Each subscription registers a small
listener in ``boundary.gates``, the list a boundary notifies when it fills or drains,
behaving to the boundary like a gate that nothing waits at. Two rules keep the
boundary's own bookkeeping safe:

* the list is replaced, never changed in place, when a listener joins or leaves — a
  subscriber may subscribe or dispose from inside a notification (``take(3)``), while
  the boundary is iterating over that list to update the real gates;
* an exception from a subscriber's ``on_next`` never reaches the boundary (it would leave
  the gates after it un-updated): the subscription ends with that error instead.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import reactivex
from reactivex import Observable
from reactivex.abc import DisposableBase, ObserverBase, SchedulerBase
from reactivex.disposable import Disposable

from .gate import Boundary, Gate

log = logging.getLogger("rxbot")


def demand(boundary: Boundary) -> Observable[bool]:
    """An Observable of ``boundary``'s demand: at subscription its current state, then
    every change, synchronously as it happens (``True`` = has room, ``False`` = full).
    It never completes by itself (a boundary outlives any one run's stream); dispose the
    subscription, or end it with ``take_until``, when done."""

    def subscribe(observer: ObserverBase[bool], scheduler: Optional[SchedulerBase] = None) -> DisposableBase:
        listener = _Listener(boundary, observer)
        listener.attach()
        return Disposable(listener.detach)

    return reactivex.create(subscribe)


class _Listener(Gate):
    """One subscription's entry in ``boundary.gates``: a gate that nothing waits at.
    The boundary does ``gate.blocked += 1`` when it fills and ``-= 1`` when it drains
    (then wakes the gate's waiters, of which there are none); the ``blocked`` property
    turns that into an item. ``Gate.__init__`` is not called: it would join the
    boundary's list in place (see the module's docstring) and count other boundaries."""

    __slots__ = ("boundary", "observer", "room", "attached")

    def __init__(self, boundary: Boundary, observer: ObserverBase[bool]) -> None:
        self._waiters = []  # always empty: the boundary never calls _wake
        self.on_pause = None
        self.halted = False  # never halted: a view ends by being disposed (``detach``)
        self.boundary = boundary
        self.observer = observer
        self.room = not boundary.full
        self.attached = False

    @property  # shadows Gate's ``blocked`` slot, so that every update is seen
    def blocked(self) -> int:
        return 0 if self.room else 1

    @blocked.setter
    def blocked(self, value: int) -> None:
        # the boundary has already set ``full`` when it notifies: read the state from it
        # (a counter of one boundary's fills could only say the same)
        room = not self.boundary.full
        if room is not self.room:
            self.room = room
            self._send(room)

    def attach(self) -> None:
        self.attached = True
        self.boundary.gates = self.boundary.gates + [self]
        self._send(self.room)

    def detach(self) -> None:
        if self.attached:
            self.attached = False
            self.boundary.gates = [g for g in self.boundary.gates if g is not self]

    def _send(self, room: bool) -> None:
        if not self.attached:
            return
        try:
            self.observer.on_next(room)
        except Exception as exc:  # the subscriber's own code: end its view, not the flow
            self.detach()
            try:
                self.observer.on_error(exc)
            except Exception:
                log.exception("rxbot: a demand() subscriber failed and has no on_error to tell")


__all__ = ["demand"]
