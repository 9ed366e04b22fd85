"""route: fan matched items out to every branch, keep the main stream, merge back.

Each subscription wires one :class:`Outlet` per branch (and one for the main stream)
and subscribes the branches *before* the first item flows, then merges what comes back;
completion waits for every branch to drain.
"""
from __future__ import annotations

from typing import Any, Callable, List, Sequence

import reactivex
from reactivex.abc import DisposableBase
from reactivex.disposable import CompositeDisposable, Disposable

from ..policy import PIPEIN, RAISE, StepRuntime
from ._subscription import Operator, fast_on_next


def route(rt: StepRuntime, match: Callable[[Any], bool], share: bool, branch_ops: List[List[Operator]],
          counting: bool) -> Operator:
    """The route operator: evaluate ``match`` once per item, feed matched items to every
    branch and unmatched (or, with ``share``, all) items to the main stream."""
    stats = rt.stats

    def op(source: reactivex.Observable) -> reactivex.Observable:
        def subscribe(observer: Any, scheduler: Any = None) -> DisposableBase:
            main = Outlet()
            ins = [Outlet() for _ in branch_ops]
            outs = [s.observable.pipe(*ops_b) for s, ops_b in zip(ins, branch_ops)]
            merged = merge_into(observer, [main.observable, *outs], scheduler)

            def on_next(x: Any) -> None:
                if counting:
                    stats.inp += 1
                try:
                    m = match(x)
                except Exception as exc:
                    action, value = rt.final(exc, x)
                    if action == RAISE:
                        main.on_error(value)
                    elif action == PIPEIN:
                        for error in value:
                            main.on_next(error)
                    return
                if m:
                    if counting:
                        stats.out += 1  # matched: sent into the branches
                    if share:  # the main stream first, as databot's queues did
                        main.on_next(x)
                    for s in ins:
                        s.on_next(x)
                else:
                    main.on_next(x)

            def on_error(exc: Exception) -> None:
                main.on_error(exc)

            def on_completed() -> None:
                main.on_completed()
                for s in ins:
                    s.on_completed()

            upstream = source.subscribe(on_next, on_error, on_completed, scheduler=scheduler)
            return CompositeDisposable(merged, upstream)

        return reactivex.create(subscribe)

    return op


class Outlet:
    """A hot source with exactly one subscriber: the route pushes items straight into
    one branch (or the main stream). A ``Subject`` would take a lock and copy its
    observer list for every item; a route has exactly one listener per outlet, wired
    before any item flows.

    Disposing the subscription unwires the outlet: a branch that ended early (``take``
    inside it had enough) gets nothing more. The wire is the subscriber's own entry
    point when it is a fused segment (:func:`fast_on_next`), which skips the
    ``is_stopped`` check of reactivex's observer wrapper, so the outlet must stop
    calling it itself; a disposed segment fed on would queue the items in its lane and
    hold the route's upstream closed for good."""

    __slots__ = ("on_next", "on_error", "on_completed", "observable")

    def __init__(self) -> None:
        self.on_next: Callable[[Any], None] = _unwired
        self.on_error: Callable[[Exception], None] = _unwired
        self.on_completed: Callable[[], None] = _unwired
        self.observable = reactivex.create(self._subscribe)

    def _subscribe(self, observer: Any, scheduler: Any = None) -> Disposable:
        self.on_next = fast_on_next(observer)
        self.on_error = observer.on_error
        self.on_completed = observer.on_completed
        return Disposable(self._detach)

    def _detach(self) -> None:
        self.on_next = self.on_error = self.on_completed = _detached


def _unwired(*_: Any) -> None:
    raise RuntimeError("rxbot: a route emitted before its branch was subscribed")


def _detached(*_: Any) -> None:
    """What a disposed outlet does with what the route still sends it: nothing."""


def merge_into(observer: Any, sources: Sequence[reactivex.Observable], scheduler: Any) -> CompositeDisposable:
    """Subscribe ``observer`` to all ``sources`` now, completing when all have completed.

    ``reactivex.merge`` subscribes its inner sources through the current-thread
    trampoline; nested three routes deep, that subscription is still queued when the
    Subjects feeding the branches start emitting, and items are lost. Subscribing
    directly keeps the wiring synchronous and complete before any item flows.
    """
    remaining = len(sources)
    done = False

    def on_error(exc: Exception) -> None:
        nonlocal done
        if not done:
            done = True
            observer.on_error(exc)

    def on_completed() -> None:
        nonlocal remaining, done
        remaining -= 1
        if remaining == 0 and not done:
            done = True
            observer.on_completed()

    return CompositeDisposable(
        *(src.subscribe(observer.on_next, on_error, on_completed, scheduler=scheduler) for src in sources)
    )


__all__ = ["route", "Outlet", "merge_into"]
