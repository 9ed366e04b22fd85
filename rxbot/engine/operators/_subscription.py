"""What every rxbot operator shares: the state of *one* subscription, and the curried
``(source) -> Observable`` shape that creates it.

RxPY keeps every piece of per-subscription state in locals of ``subscribe``
(``reactivex/operators/_map.py``), so an operator that subscribes to its source again
(``repeat``, ``retry``, ``concat`` of the same pipe) starts from scratch. rxbot's
operators carry more state (worker slots, a lane, counters, flush bookkeeping), so each
one keeps it in a small object created inside ``subscribe`` — one per subscription,
never shared — and :func:`operator_of` is the only place that creates it.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable

import reactivex
from reactivex.abc import DisposableBase
from reactivex.disposable import CompositeDisposable, Disposable
from reactivex.observer.autodetachobserver import AutoDetachObserver

from ..gate import Gate, halt
from ..policy import PIPEIN, RAISE, StepRuntime

Operator = Callable[[reactivex.Observable], reactivex.Observable]


def fast_on_next(observer: Any) -> Callable[[Any], None]:
    """The function to call per item to reach ``observer``.

    reactivex wraps every subscriber in an ``AutoDetachObserver`` whose ``on_next`` only
    checks ``is_stopped`` and forwards. When the subscriber's entry point is marked
    :data:`DIRECT` (a fused segment's, an async step's slots) we call it directly, saving
    a call per item on the hottest path; a disposed subscription or a failed run stops
    its sources through their tasks and gates instead (see :meth:`Subscription.dispose`,
    ``RunContext.fail``), and such an entry ignores what still arrives after its end.
    """
    if isinstance(observer, AutoDetachObserver):
        target = observer._on_next
        if getattr(target, DIRECT, False):
            return target
    return observer.on_next


#: the attribute marking an entry point that may be called without reactivex's wrapper
DIRECT = "__rxbot_direct__"


class Subscription:
    """One subscription of an rxbot operator: its observer, its upstream completion,
    its tasks, its gate. ``maybe_complete`` sends ``on_completed`` once upstream is done
    and the subscription is idle; ``dispose`` (unsubscribe before the end: ``take``
    has enough, ``retry`` re-subscribes) halts its gate, cancels its tasks and frees
    its slots."""

    #: where its own tasks pause while the downstream is full (``ctx.gate(downstream)``);
    #: every operator's subscription sets it in ``__init__``
    gate: Gate

    def __init__(self, ctx: Any, observer: Any) -> None:
        self.ctx = ctx
        self.observer = observer
        self.upstream_done = False
        self.completed = False
        self.disposed = False
        self.tasks: set = set()

    # -- lifecycle ------------------------------------------------------------------------
    def spawn(self, coro: Any) -> Any:
        """A task of this subscription (cancelled when it is disposed early)."""
        task = self.ctx.spawn(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def dispose(self) -> None:
        """Unsubscribed before the end. The tasks of the subscription are cancelled,
        except the one running now: a subscription is often disposed from inside its
        own push (``take`` has its last item), and cancelling that task would throw into
        whatever it awaits next, wherever that is. RxPY's sources check ``disposed``
        before their next element instead (``from_iterable``: ``while not disposed``);
        here the gate is halted, so the task finds it closed right after the push, and a
        pulling loop returns (``iterate``, the Timer's ticker) while one that only
        pushes waits there until the run's end cancels it."""
        if self.disposed:
            return
        self.disposed = True
        if self.completed or self.ctx.stopped:  # a stopped run cancels its tasks itself
            return
        halt((self.gate,))
        current = asyncio.current_task() if self.ctx.loop.is_running() else None
        for task in list(self.tasks):
            if task is not current:
                task.cancel()
        self.release()
        self.gate.detach()  # halted, so the task still pushing finds it closed

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
        if self.ctx.stopped or self.disposed:  # a failed or cancelled run completes nothing
            return
        if self.upstream_done and not self.completed and self.idle():
            self.completed = True
            self.release()
            self.gate.detach()
            self.observer.on_completed()

    def release(self) -> None:
        """Free what the subscription holds once it has ended (parked workers)."""

    # -- failures -------------------------------------------------------------------------
    def settle(self, rt: StepRuntime, exc: BaseException, item: Any, emit: Callable[[Any], None]) -> bool:
        """Apply ``rt``'s policy to a failure of ``item``: raise ends the stream, pipein
        sends the original (annotated) exception on through ``emit``, ignore drops it.
        Returns False when the stream has ended."""
        action, value = rt.final(exc, item)
        if action == RAISE:
            self.raise_(value)
            return False
        if action == PIPEIN:
            for error in value:  # one per rejected item
                emit(error)
        return True

    def raise_(self, exc: BaseException) -> None:
        """The ``raise`` policy: end the stream with the (annotated) original exception.

        The run is failed at once (not only when the error reaches the pipe's end) so
        that every source stops before pushing another item."""
        self.ctx.fail(exc)
        self.observer.on_error(exc)


class InputQueue(Subscription):
    """A subscription that handles its inputs one after the other (a pulled source, a
    Timer): the ones waiting queue in ``jobs``, and while any input is waiting or being
    handled the step's boundary is held full, which pauses the stages upstream."""

    def __init__(self, ctx: Any, observer: Any, rt: StepRuntime, boundary: Any, downstream: Any) -> None:
        super().__init__(ctx, observer)
        self.rt = rt
        self.boundary = boundary
        self.full = False
        self.gate = ctx.gate(downstream)
        self.jobs: deque = deque()

    def set_full(self, full: bool) -> None:
        if full is not self.full:
            self.full = full
            self.boundary.hold(full)

    def on_next(self, item: Any) -> None:
        self.rt.stats.inp += 1
        self.rt.in_flight += 1
        self.jobs.append(item)
        self.set_full(True)
        self.start()

    def start(self) -> None:
        """Begin handling the queued inputs, unless that is already going on."""
        raise NotImplementedError

    def release(self) -> None:
        self.set_full(False)


def operator_of(make: Callable[[Any], Any],
                entry: Callable[[Any], Callable[[Any], None]] | None = None) -> Operator:
    """The curried operator ``(source) -> Observable`` whose every subscription gets a
    fresh state ``make(observer)``, subscribed to ``source`` through ``entry(state)``
    (default: ``state.on_next``)."""

    def operator(source: reactivex.Observable) -> reactivex.Observable:
        def subscribe(observer: Any, scheduler: Any = None) -> DisposableBase:
            state = make(observer)
            on_next = state.on_next if entry is None else entry(state)
            upstream = source.subscribe(on_next, state.on_error, state.on_completed, scheduler=scheduler)
            return CompositeDisposable(upstream, Disposable(state.dispose))

        return reactivex.create(subscribe)

    return operator


__all__ = ["DIRECT", "Subscription", "InputQueue", "operator_of", "fast_on_next", "Operator"]
