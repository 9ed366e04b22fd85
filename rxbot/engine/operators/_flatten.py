"""flatten: the return-value rules as an operator, for the unfused graph.

On the honest (unfused) path a sync step is ``ops.map(step)`` followed by this operator:
``map`` calls the step (catching its exception, which becomes a :class:`Failed`
result), ``flatten`` turns the result into items — None drops the item, a single value
is one item, a list or generator gives one item per element, an awaitable or async
generator is awaited — and applies the step's exception policy to a failure (retries
included). A result that is not a plain value travels with its input item, so a failure
while it is awaited or iterated is charged to that item, as in the fused code. Results
that are ready are passed on at once; the others (lazy iterables,
awaitables, retries, and everything behind them, to keep the order) are worked off by
one task that pulls while the downstream has demand: while it is busy the operator's
boundary is full, which pauses the source.
"""
from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, List

from ..gate import FIRST_LOOK, Boundary
from ..policy import AT_FLUSH, StepRuntime
from ..results import MANY, ONE, ONE_AS_IS, SINGLE, deliver, kind_of
from ._subscription import Operator, Subscription, fast_on_next, operator_of

_EAGER = (list, tuple, set, frozenset, dict)


class Failed:
    """What the mapper hands on when the step raised for ``item``."""

    __slots__ = ("error", "item")

    def __init__(self, error: Exception, item: Any) -> None:
        self.error = error
        self.item = item


class Pending:
    """A result that is not a plain value (an awaitable, an iterable, ...) with the input
    ``item`` it came from: what fails while it is worked off is charged to that item."""

    __slots__ = ("result", "item")

    def __init__(self, result: Any, item: Any) -> None:
        self.result = result
        self.item = item


def guarded(fn: Callable[[Any], Any], rt: StepRuntime) -> Callable[[Any], Any]:
    """The function ``ops.map`` calls: the step, counting its input, failures as values,
    results other than plain values paired with their item."""
    stats = rt.stats

    def call(x: Any) -> Any:
        stats.inp += 1
        try:
            r = fn(x)
        except Exception as exc:
            return Failed(exc, x)
        return r if r is None or type(r) in SINGLE else Pending(r, x)

    return call


@dataclass
class FlattenPlan:
    rt: StepRuntime
    fn: Callable[[Any], Any]  # the step itself, for retries
    downstream: List[Boundary]
    flush: Callable[[], Any] | None = None
    boundary: Boundary = field(default_factory=Boundary)


def flatten(ctx: Any, plan: FlattenPlan) -> Operator:
    return operator_of(lambda observer: _Flatten(ctx, plan, observer))


class _Flatten(Subscription):
    def __init__(self, ctx: Any, plan: FlattenPlan, observer: Any) -> None:
        super().__init__(ctx, observer)
        self.plan = plan
        self.rt = plan.rt
        self.flush = plan.flush
        self.gate = ctx.gate(plan.downstream)
        self.jobs: deque = deque()
        self.running = False
        self.full = False
        self.emit_next = fast_on_next(observer)

    def emit(self, value: Any) -> None:
        self.rt.stats.out += 1
        self.emit_next(value)

    def set_full(self, full: bool) -> None:
        if full is not self.full:
            self.full = full
            self.plan.boundary.hold(full)

    def on_next(self, result: Any) -> None:
        if not self.running:  # nothing queued: what is ready goes on at once
            if result is None:
                self.rt.stats.filtered += 1
                return
            t = type(result)
            if t in SINGLE:
                self.emit(result)
                return
            if t is Pending:
                value = result.result
                kind = kind_of(value)
                if kind == ONE or kind == ONE_AS_IS:
                    self.emit(value if kind == ONE else value.item)
                    return
                # a short list at once; a longer one is delivered, which takes turns by
                # count and time (its elements may each cost a parse downstream)
                if kind == MANY and isinstance(value, _EAGER) and len(value) <= FIRST_LOOK:
                    for v in value:
                        self.emit(v)
                    self.rt.stats.fanout += len(value) - 1
                    return
        self.jobs.append(result)
        self.set_full(True)
        if not self.running:
            self.running = True
            self.spawn(self._drain())

    def idle(self) -> bool:
        return not self.running and not self.jobs and self.flush is None

    def release(self) -> None:
        self.set_full(False)

    def on_completed(self) -> None:
        self.upstream_done = True
        if self.flush is not None and not self.running:
            self.running = True
            self.spawn(self._drain())
            return
        self.maybe_complete()

    async def _drain(self) -> None:
        try:
            while self.jobs and not self.ctx.stopped:
                result = self.jobs.popleft()
                if type(result) is Failed:
                    if not await self._failed(result):
                        return
                    continue
                item = None
                if type(result) is Pending:
                    result, item = result.result, result.item
                try:
                    if not await deliver(result, self.emit, self.gate, self.rt.stats):
                        self.rt.stats.filtered += 1
                except asyncio.CancelledError:
                    self.rt.stats.cancelled += 1  # its delivery was cut short by the stop
                    raise
                except Exception as exc:  # failing part-way: no retry (no duplicates)
                    if not self.settle(self.rt, exc, item, self.emit):
                        return
            if self.upstream_done and self.flush is not None and not self.ctx.stopped:
                flush, self.flush = self.flush, None
                try:
                    await deliver(await flush(), self.emit, self.gate, self.rt.stats, owned=False)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.settle(self.rt, exc, AT_FLUSH, self.emit)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the flush failing part-way
            self.settle(self.rt, exc, None, self.emit)
        finally:
            if (self.ctx.stopped or self.disposed) and self.jobs:  # results never delivered
                self.rt.stats.cancelled += len(self.jobs)
                self.jobs.clear()
            self.running = False
            self.set_full(bool(self.jobs))
            self.maybe_complete()

    async def _failed(self, failed: Failed) -> bool:
        rt = self.rt
        if rt.retries:
            try:
                result = await rt.call_with_retry(self.plan.fn, failed.item, first_error=failed.error)
            except asyncio.CancelledError:
                rt.stats.cancelled += 1  # retrying when the run stopped
                raise
            except Exception as exc:
                return self.settle(rt, exc, failed.item, self.emit)
            try:
                if not await deliver(result, self.emit, self.gate, self.rt.stats):
                    rt.stats.filtered += 1
            except asyncio.CancelledError:
                rt.stats.cancelled += 1
                raise
            except Exception as exc:  # failing part-way: no retry (no duplicates)
                return self.settle(rt, exc, failed.item, self.emit)
            return True
        return self.settle(rt, failed.error, failed.item, self.emit)


__all__ = ["flatten", "FlattenPlan", "guarded", "Failed", "Pending"]
