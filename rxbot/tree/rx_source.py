"""Observables as sources: :class:`FromObservable`, a Node of the step tree.

It lives in the tree layer (not in :mod:`rxbot.rx`) because ``Pipe(observable, ...)``
turns an Observable into this step while the tree is built, and the tree imports
nothing above it. :mod:`rxbot.rx` re-exports it.
"""
from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any, Callable

from reactivex import Observable
from reactivex.scheduler.eventloop import AsyncIOScheduler

from .node import Node
from .step import callable_label


class FromObservable(Node):
    """For each input item, emit what an Observable emits (see :func:`from_observable`)."""

    #: inputs are handled one after another, in order (like Loop)
    concurrency = 1

    def __init__(self, source: Observable | Callable[[Any], Observable], name: str | None = None) -> None:
        super().__init__()
        if not isinstance(source, Observable) and not (callable(source) and not isinstance(source, type)):
            raise TypeError(
                f"from_observable: argument 'source' must be an Observable or a function item -> Observable; "
                f"got {type(source).__name__}")
        self.source = source
        self.name = name

    def label(self) -> str:
        if self.name:
            return self.name
        if isinstance(self.source, Observable):
            return "from_observable"
        return f"from_observable({callable_label(self.source)})"

    async def __call__(self, item: Any):
        obs = self.source if isinstance(self.source, Observable) else self.source(item)
        if not isinstance(obs, Observable):
            raise TypeError(f"{self.label()}: the function must return an Observable; got {type(obs).__name__}")
        loop = asyncio.get_running_loop()
        owner = threading.get_ident()
        queue: collections.deque = collections.deque()
        wake = asyncio.Event()

        def notify() -> None:  # an Observable may push from a thread of its own scheduler
            if threading.get_ident() == owner:
                wake.set()
            else:
                loop.call_soon_threadsafe(wake.set)

        def on_next(value: Any) -> None:
            queue.append((0, value))
            notify()

        def on_error(exc: Exception) -> None:
            queue.append((1, exc))
            notify()

        def on_completed() -> None:
            queue.append((2, None))
            notify()

        subscription = obs.subscribe(on_next, on_error, on_completed, scheduler=AsyncIOScheduler(loop))
        try:
            while True:
                while queue:
                    kind, value = queue.popleft()
                    if kind == 0:
                        yield value
                    elif kind == 1:
                        raise value
                    else:
                        return
                wake.clear()
                if not queue:
                    await wake.wait()
        finally:
            subscription.dispose()


def from_observable(source: Observable | Callable[[Any], Observable], name: str | None = None) -> FromObservable:
    """A step emitting, for each input item, every item of ``source``.

    ``source`` is an Observable (re-subscribed per input; the trigger ``0`` of a Pipe is
    one input) or a function ``item -> Observable``. An Observable error is the step's
    failure, under the step's exception policy.
    """
    return FromObservable(source, name=name)


__all__ = ["FromObservable", "from_observable"]
