"""Walk the step tree and build the reactivex pipeline for one run.

The walk goes from the last step to the first so that each stage knows which
flow-control boundaries lie downstream of it (its gate); the operators are then
returned in flow order for ``source.pipe(*ops)``. Consecutive sync steps are fused.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
from typing import Any, Callable, List, Sequence, Tuple

import reactivex
from reactivex import operators as rx_ops
from reactivex.disposable import CompositeDisposable, Disposable

from ..flow import BlockedJoin, Route
from ..node import Loop, Node, Timer
from ..step import Const, RxOp, Step
from .boost import boosted
from .fuse import CONST, FN
from .gate import Boundary, Gate
from .policy import PIPEIN, RAISE
from .stages import AsyncStage, IterStage, SyncSegment, fast_on_next, iterate, trigger

Ops = List[Callable[[reactivex.Observable], reactivex.Observable]]


def _node_of(step: Any) -> Node | None:
    node = step.fn if isinstance(step, Step) else step
    return node if isinstance(node, Node) else None


def _node_overrides_flush(node: Node) -> bool:
    return type(node).flush is not Node.flush


def _is_generator_function(fn: Any) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.isgeneratorfunction(fn)


def _fusable(step: Any) -> bool:
    """Sync steps that can run inline in a fused segment.

    A generator function is not: its output is pulled lazily like a Loop's (an
    IterStage), so a step yielding a million items keeps memory bounded."""
    if isinstance(step, Const):
        return True
    if isinstance(step, Step):
        if step.is_async or step.option("boost") or _is_generator_function(step.fn):
            return False
        if isinstance(step.fn, Node):
            return not isinstance(step.fn, (Loop, Timer))
        return True
    if isinstance(step, Node):
        return not isinstance(step, (Loop, Timer)) and not step.boost_kind and not _is_async_node(step)
    if isinstance(step, Route) and step.kind == "filter":
        return True
    return False


def _is_async_node(node: Node) -> bool:
    from ..node import is_async_callable

    return is_async_callable(node)


def _label(step: Any) -> str:
    return step.label()


def _options(step: Any) -> dict:
    if isinstance(step, Step):
        node = step.fn if isinstance(step.fn, Node) else None
        return dict(on_error=step.option("on_error"), retries=step.option("retries"),
                    timeout=step.option("timeout"), concurrency=step.option("concurrency"),
                    describe=node.describe_item if node is not None else None)
    if isinstance(step, Node):
        return dict(on_error=step.on_error, retries=step.retries, timeout=step.timeout,
                    concurrency=step.concurrency, describe=step.describe_item)
    return {}


def matcher(route: Route) -> Callable[[Any], bool]:
    rtype, rfunc = route.route_type, route.route_func
    if rfunc is None:
        if rtype is object:
            return lambda x: True
        return lambda x: isinstance(x, rtype)
    if rtype is object:
        return lambda x: bool(rfunc(x))
    return lambda x: isinstance(x, rtype) and bool(rfunc(x))


class Builder:
    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    # -- public -----------------------------------------------------------------------
    def build(self, steps: Sequence[Any], downstream: List[Boundary], path: str,
              terminal: bool = False) -> Tuple[Ops, List[Boundary]]:
        """Operators for ``steps`` and the boundaries at or below their head.

        ``terminal``: nothing consumes the output of the last step (end of a pipe or of
        a branch whose results are discarded)."""
        ops_rev: Ops = []
        bounds = list(downstream)
        i = len(steps) - 1
        while i >= 0:
            j = i
            while _fusable(steps[j]) and j - 1 >= 0 and _fusable(steps[j - 1]):
                j -= 1
            op, bounds, _ = self.build_span(steps, j, i, bounds, path, terminal and i == len(steps) - 1)
            ops_rev.append(op)
            i = j - 1
        ops_rev.reverse()
        return ops_rev, bounds

    def build_span(self, steps: Sequence[Any], first: int, last: int, downstream: List[Boundary],
                   path: str, terminal: bool = False,
                   sink: bool | None = None) -> Tuple[Callable, List[Boundary], Any]:
        """One operator for ``steps[first:last + 1]`` — a run of fusable steps, or a
        single step of any kind — given the boundaries below it. Returns the operator,
        the boundaries at or below its head, and the stage built (None for a route or a
        raw Rx operator). Replay builds top-level steps one at a time through here.
        ``sink`` (default: ``terminal``): the last step is the end of its pipe for the
        report, even when a recorder reads its output."""
        step = steps[last]
        if (terminal if sink is None else sink) and not isinstance(step, Route):
            # report: what a sink (a last step nobody reads from) drops is consumed
            self.ctx.report.sinks.add(f"{path}[{last + 1}] {_label(step)}")
        if _fusable(step):
            seg = self._segment(steps, first, last, downstream, path, terminal)
            return seg.operator, downstream + [seg.boundary], seg
        assert first == last, "only fusable steps form a span"
        where = f"{path}[{last + 1}] {_label(step)}"
        if isinstance(step, RxOp):
            return step.op, list(downstream), None
        if isinstance(step, Route):
            op, bounds = self._route(step, downstream, where)
            return op, bounds, None
        stage = self._single(step, downstream, where)
        return stage.operator, downstream + [stage.boundary], stage

    # -- leaves -----------------------------------------------------------------------
    def _segment(self, steps: Sequence[Any], first: int, last: int, downstream: List[Boundary], path: str,
                 terminal: bool = False) -> SyncSegment:
        shape, fns, consts, runtimes = [], [], [], []
        for k in range(first, last + 1):
            step = steps[k]
            where = f"{path}[{k + 1}] {_label(step)}"
            options = _options(step)
            if options.get("timeout") is not None:
                raise ValueError(
                    f"step {_label(step)!r}: a timeout needs an async or boosted step (a sync "
                    f"call cannot be interrupted); add boost='thread' to time it out")
            runtimes.append(self.ctx.runtime(where, _label(step), **options))
            if isinstance(step, Const):
                shape.append(CONST)
                fns.append(None)
                consts.append(step.value)
            else:
                shape.append(FN)
                consts.append(None)
                if isinstance(step, Route):  # Filter: matched items pass
                    match = matcher(step)
                    fns.append(lambda x, m=match: x if m(x) else None)
                else:
                    fns.append(step.fn if isinstance(step, Step) else step)
        flushes = [(k - first, node.flush) for k in range(first, last + 1)
                   for node in [_node_of(steps[k])] if node is not None and _node_overrides_flush(node)]
        return SyncSegment(self.ctx, runtimes, shape, fns, consts, downstream, terminal, flushes)

    def _single(self, step: Any, downstream: List[Boundary], where: str):
        label = _label(step)
        node = step.fn if isinstance(step, Step) and isinstance(step.fn, Node) else step
        rt = self.ctx.runtime(where, label, **_options(step))
        if isinstance(node, Loop):
            iterable = node.iterable

            async def produce_loop(item, emit, gate, stats):
                await iterate(iterable, emit, gate, stats)

            return IterStage(self.ctx, rt, produce_loop, downstream)
        if isinstance(node, Timer):
            return IterStage(self.ctx, rt, _ticker(node), downstream)
        fn = step.fn if isinstance(step, Step) else step
        boost = step.option("boost") if isinstance(step, Step) else step.boost_kind
        if not boost and _is_generator_function(fn):
            async def produce_generator(item, emit, gate, stats, fn=fn):
                await iterate(fn(item), emit, gate, stats)

            return IterStage(self.ctx, rt, produce_generator, downstream)
        if boost:
            fn = boosted(fn, boost, self.ctx, label, rt.concurrency)
        flush = node.flush if isinstance(node, Node) and _node_overrides_flush(node) else None
        if isinstance(node, Node) and node.holds_items:
            self.ctx.holders.setdefault(id(node), (node, rt))
        return AsyncStage(self.ctx, rt, fn, downstream, flush=flush,
                          holds_items=isinstance(node, Node) and node.holds_items)

    # -- routes -----------------------------------------------------------------------
    def _route(self, route: Route, downstream: List[Boundary], where: str):
        rt = self.ctx.runtime(where, _label(route))
        if isinstance(route, BlockedJoin):
            stage = AsyncStage(self.ctx, rt, self._blocked_join(route, where), downstream)
            # one "branch": the correlating stage, which counts its own items
            return self._routed(route, rt, [[stage.operator]], counting=False), downstream + [stage.boundary]
        branch_ops: List[Ops] = []
        extra: List[Boundary] = []
        base = downstream if route.join else []
        for b, steps in enumerate(route.branches):
            ops_b, bounds_b = self.build(steps, base, f"{where}/{b + 1}", terminal=not route.join)
            branch_ops.append(ops_b)
            extra.extend(bounds_b[len(base):])
        if not route.join:
            branch_ops = [ops_b + [rx_ops.ignore_elements()] for ops_b in branch_ops]
        return self._routed(route, rt, branch_ops, counting=True), downstream + extra

    def _routed(self, route: Route, rt: Any, branch_ops: List[Ops], counting: bool) -> Callable:
        """The route operator: evaluate the match once per item, feed matched items to
        every branch (an Outlet each) and unmatched/shared ones to the main stream, and
        merge what comes back. Completion waits for every branch to drain."""
        match = matcher(route)
        share = route.share
        stats = rt.stats

        def op(source: reactivex.Observable) -> reactivex.Observable:
            def subscribe(observer, scheduler=None):
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
                        for s in ins:
                            s.on_next(x)
                        if share:
                            main.on_next(x)
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

    def _blocked_join(self, route: Route, where: str) -> Callable[[Any], Any]:
        """Per input: run every branch on that one item (a fresh mini pipeline each, so
        results can never be mixed between inputs) and zip the results in order."""
        branches = route.branches

        async def correlate(item: Any) -> tuple:
            results = await asyncio.gather(
                *(self.run_subflow(steps, item, f"{where}/{b + 1}") for b, steps in enumerate(branches))
            )
            return tuple(None if not r else r[0] if len(r) == 1 else r for r in results)

        return correlate

    async def run_subflow(self, steps: Sequence[Any], item: Any, path: str) -> list:
        ops_, _ = self.build(steps, [], path)
        done = self.ctx.loop.create_future()
        out: list = []

        def on_error(exc: Exception) -> None:
            if not done.done():
                done.set_exception(exc)

        def on_completed() -> None:
            if not done.done():
                done.set_result(out)

        trigger(self.ctx, item).pipe(*ops_).subscribe(out.append, on_error, on_completed,
                                                     scheduler=self.ctx.scheduler)
        return await done


class Outlet:
    """A hot source with exactly one subscriber: the route pushes items straight into
    one branch (or the main stream). A ``Subject`` would take a lock and copy its
    observer list for every item; a route has exactly one listener per outlet, wired
    before any item flows."""

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
        return Disposable()


def _unwired(*_: Any) -> None:
    raise RuntimeError("rxbot: a route emitted before its branch was subscribed")


def merge_into(observer: Any, sources: Sequence[reactivex.Observable], scheduler: Any) -> CompositeDisposable:
    """Subscribe ``observer`` to all ``sources`` now, completing when all have completed.

    ``reactivex.merge`` subscribes its inner sources through the current-thread
    trampoline; nested three routes deep, that subscription is still queued when the
    Subjects feeding the branches start emitting, and items are lost. Subscribing
    directly keeps the wiring synchronous and complete before any item flows.
    """
    remaining = len(sources)
    state = {"done": False}

    def on_error(exc: Exception) -> None:
        if not state["done"]:
            state["done"] = True
            observer.on_error(exc)

    def on_completed() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0 and not state["done"]:
            state["done"] = True
            observer.on_completed()

    return CompositeDisposable(
        *(src.subscribe(observer.on_next, on_error, on_completed, scheduler=scheduler) for src in sources)
    )


def _ticker(timer: Timer):
    """databot's Timer: tick 1 at once, then sleep ``delay`` between ticks; ``until()``
    is asked once after each tick (so one tick always comes out); ``max_time`` counts
    ticks. A closed gate (a full step downstream) delays the next tick."""
    async def produce(item: Any, emit: Callable[[Any], None], gate: Gate, stats: Any) -> None:
        n = 0
        until, limit = timer.until, timer.max_time
        while True:
            if gate.blocked:
                await gate.wait()
            n += 1
            stats.out += 1
            emit(n)
            if (until is not None and until()) or (limit is not None and n >= limit):
                return
            await asyncio.sleep(timer.delay)

    return produce


__all__ = ["Builder", "matcher"]
