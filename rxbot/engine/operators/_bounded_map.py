"""bounded_map: an async step (``async def``, boosted call, async Node) with a fixed
number of items in flight.

rxbot's own operator, not ``flat_map``: RxPY's ``flat_map(from_future)`` starts every
call at once and ``merge(max_concurrent=n)`` buffers the whole upstream (DESIGN §3).
Here the slots are the demand signal: while they are full, the :class:`Boundary` of
this step holds the gates of every source upstream closed.
"""
from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, List

from ..gate import Boundary
from ..policy import StepRuntime
from ..results import deliver
from ..slots import Slots
from ._subscription import Operator, Subscription, operator_of


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
    """The operator calling ``plan.fn`` per item with ``plan.rt.concurrency`` slots."""
    return operator_of(lambda observer: _BoundedMap(ctx, plan, observer))


class _BoundedMap(Subscription):
    def __init__(self, ctx: Any, plan: AsyncPlan, observer: Any) -> None:
        super().__init__(ctx, observer)
        rt = self.rt = plan.rt
        self.fn = plan.fn
        self.flush = plan.flush
        self.count_none = not plan.holds_items
        self.gate = ctx.gate(plan.downstream)
        self.slots = Slots(rt.concurrency, self._run, ctx, self.maybe_complete, lambda _: rt.stats,
                           plan.boundary, self.spawn)
        self.flushing = False

    def on_next(self, item: Any) -> None:
        self.rt.stats.inp += 1
        self.rt.in_flight += 1
        self.slots.submit(item)

    def idle(self) -> bool:
        return self.slots.idle() and not self.flushing

    def release(self) -> None:
        self.slots.close()

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
            await deliver(await flush(), self._emit, self.gate)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.settle(self.rt, exc, "<flush at end of input>", self._emit)
        finally:
            self.flushing = False
            super().maybe_complete()


__all__ = ["AsyncPlan", "bounded_map"]
