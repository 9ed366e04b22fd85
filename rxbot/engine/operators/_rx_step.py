"""rx_step: a user's raw Rx operator, inserted verbatim, whose errors name the step.

An exception raised inside ``ops.map(lambda x: 1 / x)`` is an Rx error: Rx ends the
operator's stream with it and cannot resume it, so the run's exception policy cannot
drop or retry the item (the whole pipe would have to be subscribed again, re-running
its sources). What rxbot can do is say where it happened: the error gets the step's
label and the last item that entered the operator (``rxbot_step``/``rxbot_item`` and a
note, like every step failure). Errors that merely pass through from upstream keep
their own step.
"""
from __future__ import annotations

from typing import Any

import reactivex
from reactivex.abc import DisposableBase

from ...errors import annotate, short_repr
from ._subscription import Operator

_NOTHING = object()


def rx_step(op: Operator, label: str) -> Operator:
    def operator(source: reactivex.Observable) -> reactivex.Observable:
        def subscribe(observer: Any, scheduler: Any = None) -> DisposableBase:
            last: Any = _NOTHING
            from_upstream: set = set()

            def tracked_subscribe(inner: Any, sched: Any = None) -> DisposableBase:
                def on_next(x: Any) -> None:
                    nonlocal last
                    last = x
                    inner.on_next(x)

                def on_error(exc: Exception) -> None:
                    from_upstream.add(id(exc))
                    inner.on_error(exc)

                return source.subscribe(on_next, on_error, inner.on_completed, scheduler=sched)

            def on_error(exc: Exception) -> None:
                if id(exc) not in from_upstream:
                    shown = "(before any item)" if last is _NOTHING else f"{short_repr(last)} (the last item in)"
                    annotate(exc, label, None if last is _NOTHING else last, shown)
                observer.on_error(exc)

            return op(reactivex.create(tracked_subscribe)).subscribe(
                observer.on_next, on_error, observer.on_completed, scheduler=scheduler)

        return reactivex.create(subscribe)

    return operator


__all__ = ["rx_step"]
