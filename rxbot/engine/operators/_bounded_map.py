"""bounded_map: an async step (``async def``, boosted call, async Node) with a fixed
number of items in flight.

rxbot's own operator, not ``flat_map``: RxPY's ``flat_map(from_future)`` starts every
call at once and ``merge(max_concurrent=n)`` buffers the whole upstream (DESIGN §3).
Here the slots are the demand signal: while they are full, the :class:`Boundary` of
this step holds the gates of every source upstream closed.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import partial
from types import AsyncGeneratorType
from typing import Any, Awaitable, Callable, List

from ..gate import Boundary
from ..policy import AT_FLUSH, StepRuntime
from ..results import SINGLE, deliver, deliver_through
from ..slots import Slots
from ._subscription import Operator, Subscription, fast_on_next, operator_of


@dataclass
class AsyncPlan:
    """What the compiler decided for one async step (shared by subscriptions)."""

    rt: StepRuntime
    fn: Callable[[Any], Any]
    downstream: List[Boundary]
    flush: Callable[[], Any] | None = None
    #: a None from a holding node (a batching Insert) is not counted as filtered
    holds_items: bool = False
    boundary: Boundary = field(default_factory=Boundary)


def bounded_map(ctx: Any, plan: AsyncPlan) -> Operator:
    """The operator calling ``plan.fn`` per item with ``plan.rt.concurrency`` slots.

    Upstream pushes straight into the slots (:meth:`Slots.submit` is the entry, which
    counts the step's input), one call fewer per item than a forwarding ``on_next``."""
    return operator_of(lambda observer: _BoundedMap(ctx, plan, observer), lambda state: state.slots.submit)


class _BoundedMap(Subscription):
    """One subscription of an async step: its slots run the calls (fed by the source
    upstream while full, see :class:`Slots`) and each result is applied here
    (:meth:`_finish`, :meth:`_fail`)."""

    def __init__(self, ctx: Any, plan: AsyncPlan, observer: Any) -> None:
        super().__init__(ctx, observer)
        rt = self.rt = plan.rt
        self.flush = plan.flush
        self.gate = ctx.gate(plan.downstream)
        self.downstream = fast_on_next(observer)
        #: a fused segment right after the step runs an async generator's items itself
        self.amany: Callable[..., Any] | None = None
        fn = plan.fn
        # the common case: the worker calls and awaits ``fn`` itself; else the
        # retry/timeout machinery, as before
        call: Callable[[Any], Any] = fn if not (rt.retries or rt.timeout is not None) \
            else partial(rt.call_with_retry, fn)
        self.slots = Slots(rt.concurrency, call, ctx, self.maybe_complete, lambda _: rt.stats,
                           plan.boundary, self.spawn, feed=True, finish=self._finish,
                           fail=self._fail, rt=rt, count_none=not plan.holds_items)
        self.count_none = not plan.holds_items
        self.flushing = False

    def on_next(self, item: Any) -> None:
        self.slots.submit(item)

    def idle(self) -> bool:
        return self.slots.idle() and not self.flushing

    def release(self) -> None:
        self.slots.close()

    def _emit(self, value: Any) -> None:
        self.rt.stats.out += 1
        self.downstream(value)

    def _finish(self, item: Any, result: Any) -> Awaitable[None] | None:
        """Apply the call's result (never None: the slots count that one). An awaitable
        is returned only when the result has to be delivered in async context (an
        iterable or async generator, which pauses at the gate while downstream is full)."""
        if self.ctx.stopped:  # the run ended while this call was out: its result is dropped
            self.rt.stats.cancelled += 1
            return None
        if type(result) in SINGLE:  # one item: what ``deliver`` would do, without its coroutine
            self._emit(result)
            return None
        return self._deliver(result)

    async def _deliver(self, result: Any) -> None:
        if type(result) is AsyncGeneratorType:
            if self.amany is None:
                make = getattr(self.downstream, "__rxbot_amany__", None)
                self.amany = make() if make is not None else _no_amany
            if self.amany is not _no_amany:
                await deliver_through(result, self.amany, self.gate, self.rt.stats)
                return
        if not await deliver(result, self._emit, self.gate, self.rt.stats):
            self.rt.stats.filtered += self.count_none

    def _fail(self, item: Any, exc: Exception) -> None:
        self.settle(self.rt, exc, item, self._emit)

    def maybe_complete(self) -> None:
        if self.ctx.stopped or self.disposed:
            return
        if self.flush is not None and self.upstream_done and not self.completed and not self.flushing \
                and self.slots.idle():
            self.flushing = True
            flush, self.flush = self.flush, None
            self.spawn(self._flush(flush))
            return
        super().maybe_complete()

    async def _flush(self, flush: Callable[[], Any]) -> None:
        try:
            await deliver(await flush(), self._emit, self.gate, self.rt.stats, owned=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.settle(self.rt, exc, AT_FLUSH, self._emit)
        finally:
            self.flushing = False
            super().maybe_complete()


def _no_amany(*_: Any) -> None:
    """No fused segment right after the step: its async generators go through ``deliver``."""


__all__ = ["AsyncPlan", "bounded_map"]
