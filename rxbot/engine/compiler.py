"""Walk the step tree and build the reactivex pipeline for one run.

The walk goes from the last step to the first so that each operator knows which
flow-control boundaries lie downstream of it (its gate); the operators are then
returned in flow order for ``source.pipe(*ops)``. Consecutive steps that run inline
are fused into one generated operator (:func:`~.operators.fused_segment`).
"""
from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable, Dict, List, Sequence, Set, Tuple

from reactivex import operators as rx_ops

from ..config import config
from ..tree.flow import BlockedJoin, Route
from ..tree.node import Loop, Timer
from ..tree.step import Const, RxOp, Step
from ..plan import (BlockedJoinPlan, Fused, PipePlan, RoutePlan, Source, blocked_join_strategy, callable_of, cut,
                    fusable, is_generator_function, lower_route, matcher, node_of, options_of, overrides_flush, runs_inline)
from ..tree.walk import StepId, walk
from .boost import boosted
from .fuse import ALL, BLOCKED, CONST, FILTER, FN, FUNC, ROUTE, SPREAD_CONST, TYPE, Element, source_of
from .gate import Boundary, Gate
from .operators import (AsyncPlan, BlockedParts, FlattenPlan, FusedPlan, Operator, PullPlan, bounded_map, flatten,
                        fork_join_each, fused_segment, gated_ticker, guarded, inline_blocked_join, inline_route,
                        iterate, per_item_join, publish_route, pull_source, route, rx_step)
from .operators import TimerPlan, gated_interval
from .operators._inline_route import Entry
from .policy import DROP, RAISE, StepRuntime, StepStats, counts_sync_steps
from .results import VALUES

Ops = List[Operator]


def note_routes(report: Any, steps: Sequence[Any], path: StepId | str, tops: Any = None) -> None:
    """Tell the report which steps held at a pipe's root (those at positions ``tops``)
    are routes whose counter ``out`` is what they matched, with their share and join,
    so that it can show what went on after them (:mod:`rxbot.observe.report_io`)."""
    root = StepId.of(path)
    if root.positions:  # a branch: its routes were noted with the pipe's
        return
    # only the routes' subtrees are walked: a pipe's other steps hold no route
    for k in range(len(steps)) if tops is None else (t - 1 for t in tops if 0 < t <= len(steps)):
        top = steps[k]
        if not isinstance(top, Route):
            continue
        held = [(root.step(k + 1, top.label()), top)]
        for b, branch in enumerate(top.branches):
            held.extend(walk(branch, held[0][0].branch(b + 1)))
        for sid, step in held:
            if isinstance(step, Route) and step.kind != "filter" and not isinstance(step, BlockedJoin):
                report.routes.add((sid, step.share, step.join))


class Builder:
    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        #: building a BlockedJoin's branches (each item gets a fresh subscription of them)
        self.per_item = 0
        #: per traced pipe source, the trace's check its plan put into the fused steps
        #: after it (see :meth:`follow`)
        self.trace_checks: Dict[StepId, str] = {}
        #: the plans of the route operators and BlockedJoins to build, by id
        self.planned: Dict[StepId, Any] = {}

    def follow(self, plan: PipePlan) -> PipePlan:
        """Take what the pipe's ``plan`` decided that the tree alone does not say: where
        an item trace checks each traced source's elements (inline in the fused steps it
        slices into, else through the tracer's wrapping generator), and how each route
        operator and BlockedJoin runs and is cut into operators."""
        self._follow(plan.nodes)
        return plan

    def _follow(self, nodes: Sequence[Any]) -> None:
        for source, after in zip(nodes, nodes[1:]):
            if isinstance(source, Source) and isinstance(after, Fused) and after.check is not None:
                self.trace_checks[source.id] = after.check
        for node in nodes:
            if isinstance(node, (RoutePlan, BlockedJoinPlan)):
                self.planned[node.id] = node
                for branch in node.branches:
                    self._follow(branch)

    def _plan_of_route(self, step: Route, where: StepId) -> Any:
        """The route's plan: its pipe's, or (a build with no pipe plan around it, e.g. a
        pipe used as an Rx operator) lowered now by the same rules."""
        planned = self.planned.get(where)
        if planned is None:
            planned = self.planned[where] = lower_route(step, where)
            self._follow([planned])
        return planned

    # -- public -----------------------------------------------------------------------
    def build(self, steps: Sequence[Any], downstream: List[Boundary], path: StepId | str,
              terminal: bool = False, cuts: Sequence[Tuple[int, int]] | None = None) -> Tuple[Ops, List[Boundary]]:
        """Operators for ``steps`` (held at ``path``: a pipe's root or a route's branch)
        and the boundaries at or below their head, one per span of ``cuts`` (a pipe's
        plan's ``spans``; a branch's are cut here, as the plan cuts them).

        ``terminal``: nothing consumes the output of the last step (end of a pipe or of
        a branch whose results are discarded)."""
        note_routes(self.ctx.report, steps, path)
        path = StepId.of(path)
        ops_rev: Ops = []
        bounds = list(downstream)
        # right to left, so each operator knows the boundaries below it
        for first, last in reversed(cut(steps) if cuts is None else cuts):
            op, bounds, _ = self.build_span(steps, first, last, bounds, path, terminal and last == len(steps) - 1)
            ops_rev.append(op)
        ops_rev.reverse()
        return ops_rev, bounds

    def build_span(self, steps: Sequence[Any], first: int, last: int, downstream: List[Boundary],
                   path: StepId | str, terminal: bool = False,
                   sink: bool | None = None) -> Tuple[Operator, List[Boundary], Any]:
        """One operator for ``steps[first:last + 1]`` — a run of inline steps, or a
        single step of any kind — given the boundaries below it. Returns the operator,
        the boundaries at or below its head, and its plan (None for a route or a raw Rx
        operator). Replay builds top-level steps one at a time through here.
        ``sink`` (default: ``terminal``): the last step is the end of its pipe for the
        report, even when a recorder reads its output."""
        path = StepId.of(path)
        note_routes(self.ctx.report, steps, path, range(first + 1, last + 2))
        step = steps[last]
        if (terminal if sink is None else sink) and not isinstance(step, Route):
            # report: what a sink (a last step nobody reads from) drops is consumed
            self.ctx.report.sinks.add(path.step(last + 1, step.label()))
        if fusable(step):
            plan = self._fused_plan(steps, first, last, downstream, path, terminal)
            return fused_segment(self.ctx, plan), downstream + [plan.boundary], plan
        assert first == last, "only inline steps form a span"
        where = path.step(last + 1, step.label())
        if runs_inline(step):  # the unfused graph: map + flatten, or filter
            op, plan = self._unfused(step, downstream, where)
            return op, downstream + ([plan.boundary] if plan is not None else []), plan
        if isinstance(step, RxOp):
            return rx_step(step.op, step.label()), list(downstream), None
        if isinstance(step, Route):
            op, bounds = self._route(step, downstream, where)
            return op, bounds, None
        op, plan = self._single(step, downstream, where)
        return op, downstream + [plan.boundary], plan

    # -- leaves -----------------------------------------------------------------------
    def _fused_plan(self, steps: Sequence[Any], first: int, last: int, downstream: List[Boundary], path: StepId,
                    terminal: bool = False) -> FusedPlan:
        acc = _Positions()
        flushes = []
        for k in range(first, last + 1):
            step = steps[k]
            j = len(acc.runtimes)
            acc.shape.append(self._element(acc, step, path.step(k + 1, step.label())))
            node = node_of(step)
            if node is not None and overrides_flush(node):
                flushes.append((j, node.flush))
        return FusedPlan(acc.runtimes, acc.shape, acc.fns, acc.consts, list(downstream), terminal, flushes)

    def _element(self, acc: "_Positions", step: Any, where: StepId) -> Element:
        """The shape element for ``step`` (:func:`shape_of`), its position's runtime,
        function and constant added to ``acc`` (pre-order: a route before its branches'
        steps)."""
        label = step.label()
        element = shape_of(step)
        if isinstance(step, BlockedJoin):
            rt = self.ctx.runtime(where, label)
            known = set(self.ctx.runtimes)
            branches, counting = self._entries(step, where)
            self._mark_blocked_join(known)
            if not counting:
                self._uncounted(branches)
            if element[0] == BLOCKED:  # plain steps, uncounted: its tuple built from locals
                acc.add(rt, _match_mode(step)[1], BlockedParts(step.share, branches))
            else:  # one function, counting itself (in, tuples out)
                acc.add(StepRuntime(label, where, self.ctx),
                        inline_blocked_join(rt, matcher(step), step.share, branches, counting))
            return element
        if isinstance(step, Route):
            test = _match_mode(step)[1]
            if step.kind == "filter":
                acc.add(self.ctx.runtime(where, label, **_sync_options(step, label)), test)
                return element
            acc.add(self.ctx.runtime(where, label), test)
            for b, branch in enumerate(step.branches):
                place = where.branch(b + 1)
                for k, s in enumerate(branch):
                    sid = place.step(k + 1, s.label())
                    if not step.join and k == len(branch) - 1 and not isinstance(s, Route):
                        self.ctx.report.sinks.add(sid)  # what a side flow's last step drops is consumed
                    self._element(acc, s, sid)
            return element
        rt = self.ctx.runtime(where, label, **_sync_options(step, label))
        if isinstance(step, Const):
            acc.add(rt, None, step.value)
        else:
            acc.add(rt, callable_of(step))
        return element

    def _inline(self, step: Route, rt: StepRuntime, where: StepId) -> Callable[[Any], Any]:
        """An all-sync route as one function (see ``operators._inline_route``)."""
        known = set(self.ctx.runtimes)
        branches, counting = self._entries(step, where)
        if not counting:
            self._uncounted(branches)
        if isinstance(step, BlockedJoin):
            self._mark_blocked_join(known)
            return inline_blocked_join(rt, matcher(step), step.share, branches, counting)
        return inline_route(rt, matcher(step), step.share, step.join, branches, counting)

    def _entries(self, step: Route, where: StepId) -> Tuple[List[List[Entry]], bool]:
        """Each branch of an all-sync route as (function, runtime) entries, and whether
        its steps are counted (a policy other than raise needs the counts)."""
        branches = []
        for b, steps in enumerate(step.branches):
            place = where.branch(b + 1)
            entries: List[Entry] = []
            for k, s in enumerate(steps):
                sid = place.step(k + 1, s.label())
                if isinstance(s, Route) and s.kind != "filter":  # the caller checked it is evaluable
                    inner = self.ctx.runtime(sid, s.label())
                    entries.append((self._inline(s, inner, sid), StepRuntime(s.label(), sid, self.ctx)))
                    continue
                srt = self.ctx.runtime(sid, s.label(), **options_of(s))
                entries.append((limited(_as_function(s), s), srt))
            branches.append(entries)
        counting = counts_sync_steps(srt for entries in branches for _, srt in entries)
        return branches, counting

    @staticmethod
    def _uncounted(branches: List[List[Entry]]) -> None:
        """The report says '-' for these steps (run inline, not counting), not 0."""
        for entries in branches:
            for _, srt in entries:
                srt.stats.counted = False

    def _unfused(self, step: Any, downstream: List[Boundary], where: StepId) -> Tuple[Operator, Any]:
        """A sync step on the honest graph: ``ops.map`` of the step, then :func:`flatten`
        for the return-value rules and the exception policy; a Filter is ``ops.filter``."""
        label = step.label()
        rt = self.ctx.runtime(where, label, **_sync_options(step, label))
        if isinstance(step, Route):  # Filter
            match = matcher(step)
            if rt.policy != "pipein":
                return rx_ops.filter(_kept(match, rt)), None
            fn = lambda x, m=match: x if m(x) else None  # noqa: E731 - pipein needs flatten
        elif isinstance(step, Const):
            fn = lambda x, v=step.value: v  # noqa: E731
        else:
            fn = callable_of(step)
        node = node_of(step)
        flush = node.flush if node is not None and overrides_flush(node) else None
        plan = FlattenPlan(rt, fn, list(downstream), flush=flush)
        mapped, flattened = rx_ops.map(guarded(fn, rt)), flatten(self.ctx, plan)
        return (lambda source: source.pipe(mapped, flattened)), plan

    def _mark_blocked_join(self, known: Set[StepId]) -> None:
        """The runtimes built since ``known`` are inside a BlockedJoin's branches."""
        for where in self.ctx.runtimes.keys() - known:
            self.ctx.runtimes[where].in_blocked_join = True

    def _single(self, step: Any, downstream: List[Boundary], where: StepId) -> Tuple[Operator, Any]:
        label = step.label()
        node = node_of(step)
        rt = self.ctx.runtime(where, label, **options_of(step))
        if isinstance(node, Loop):
            iterable = node.iterable
            traced = None
            if self.ctx.tracer is not None and len(where.positions) == 1 and where.top == 1:
                # a pipe's source: --trace (rxbot.observe.trace), checked where its plan says
                traced = self.ctx.tracer.source(where, self.trace_checks.get(where))

            async def produce_loop(item: Any, emit: Callable[[Any], None], gate: Gate, stats: StepStats) -> None:
                await iterate(iterable, emit, gate, stats, traced)

            plan = PullPlan(rt, produce_loop, list(downstream))
            return pull_source(self.ctx, plan), plan
        if isinstance(node, Timer):
            if not config.fusion:  # the honest graph: a gated interval on the run's scheduler
                timer = TimerPlan(rt, node, list(downstream))
                return gated_interval(self.ctx, timer), timer
            plan = PullPlan(rt, gated_ticker(node), list(downstream))
            return pull_source(self.ctx, plan), plan
        fn = callable_of(step)
        boost = step.option("boost") if isinstance(step, Step) else step.boost_kind
        if not boost and is_generator_function(fn):
            async def produce_generator(item: Any, emit: Callable[[Any], None], gate: Gate, stats: StepStats,
                                        fn: Callable[[Any], Any] = fn) -> None:
                await iterate(fn(item), emit, gate, stats)

            plan = PullPlan(rt, produce_generator, list(downstream))
            return pull_source(self.ctx, plan), plan
        if boost:
            fn = boosted(fn, boost, self.ctx, label, rt.concurrency)
        elif self.per_item and isinstance(step, Step) and step.option("concurrency") is not None:
            # every item subscribes a BlockedJoin's branches afresh, each subscription
            # with its own slots: the step's own limit must hold across them
            fn = limited(fn, step)
        flush = node.flush if node is not None and overrides_flush(node) else None
        if node is not None and node.holds_items:
            self.ctx.holders.setdefault(id(node), (node, rt))
        async_plan = AsyncPlan(rt, fn, list(downstream), flush=flush,
                               holds_items=node is not None and node.holds_items)
        return bounded_map(self.ctx, async_plan), async_plan

    # -- routes -----------------------------------------------------------------------
    def _route(self, step: Route, downstream: List[Boundary], where: StepId) -> Tuple[Operator, List[Boundary]]:
        rt = self.ctx.runtime(where, step.label())
        planned = self._plan_of_route(step, where)
        if isinstance(step, BlockedJoin):
            known = set(self.ctx.runtimes)
            correlate: Callable[[Any], Any]
            if not planned.subscribed:
                # plain sync and async steps: evaluated per item, the async ones awaited
                # together, instead of a fresh subscription of every branch per item
                branches, _ = self._entries(step, where)
                # it has async steps (all-sync ones are fused, see ``fusable``), so every
                # step is counted, as the graph counts an async step: the time goes to the
                # awaits, not to the counters. The correlating map counts the items: the
                # function counts into nothing
                correlate = inline_blocked_join(StepRuntime(step.label(), where, self.ctx), _every, False,
                                                branches, counting=True)
            else:
                self.per_item += 1
                try:
                    per_branch = [self.build(steps, [], where.branch(b + 1), cuts=planned.spans[b])[0]
                                  for b, steps in enumerate(step.branches)]
                finally:
                    self.per_item -= 1
                subscribe = per_item_join if planned.strategy == "a subscription per item" else fork_join_each
                correlate = subscribe(self.ctx, per_branch)
            self._mark_blocked_join(known)
            plan = AsyncPlan(self.ctx.runtime(where, step.label()), correlate, list(downstream))
            # one "branch": the correlating map, which counts its own items
            op = route(rt, matcher(step), step.share, [[bounded_map(self.ctx, plan)]], counting=False)
            return op, downstream + [plan.boundary]
        branch_ops: List[Ops] = []
        extra: List[Boundary] = []
        base = downstream if step.join else []
        for b, steps in enumerate(step.branches):
            ops_b, bounds_b = self.build(steps, base, where.branch(b + 1), terminal=not step.join,
                                         cuts=planned.spans[b])
            branch_ops.append(ops_b)
            extra.extend(bounds_b[len(base):])
        if not step.join:
            branch_ops = [ops_b + [rx_ops.ignore_elements()] for ops_b in branch_ops]
        if planned.strategy == "publish + merge":  # fusion is off: the honest graph
            return publish_route(rt, matcher(step), step.share, branch_ops), downstream + extra
        return route(rt, matcher(step), step.share, branch_ops, counting=True), downstream + extra


def shape_of(step: Any) -> Element:
    """What ``step`` is in a fused segment's shape (see :mod:`rxbot.engine.fuse`): the
    generated code depends on this, never on which function. A BlockedJoin is generated
    inline when the plan says so (:func:`rxbot.plan.blocked_join_strategy`), else it is
    one call."""
    if isinstance(step, BlockedJoin):
        if blocked_join_strategy(step)[0] != "generated code":
            return (FN,)
        return (BLOCKED, _match_mode(step)[0], step.share, tuple(len(b) for b in step.branches))
    if isinstance(step, Route):
        mode = _match_mode(step)[0]
        if step.kind == "filter":
            return (FILTER, mode)
        return (ROUTE, mode, step.share, step.join, tuple(tuple(shape_of(s) for s in b) for b in step.branches))
    if isinstance(step, Const):
        return (CONST,) if type(step.value) in VALUES else (SPREAD_CONST,)
    return (FN,)


def segment_source(segment: Fused) -> str:
    """The code generated for a fused segment of a plan (what ``explain(source=True)``
    shows): the same text the run compiles for it; for the segment a traced source
    slices into, followed by the chunk entry with the trace's check inline."""
    return source_of([shape_of(s) for s in segment.steps], segment.terminal, segment.counting, segment.check)


class _Positions:
    """What a fused segment holds per position, filled in pre-order."""

    def __init__(self) -> None:
        self.shape: List[Element] = []
        self.runtimes: List[StepRuntime] = []
        self.fns: List[Any] = []
        self.consts: List[Any] = []

    def add(self, rt: StepRuntime, fn: Any, const: Any = None) -> None:
        self.runtimes.append(rt)
        self.fns.append(fn)
        self.consts.append(const)


def _match_mode(route: Route) -> Tuple[str, Any]:
    """How the generated code tests a Filter or route: every item, ``isinstance`` with
    the route's type, or its matcher function."""
    if route.route_func is None:
        return (ALL, None) if route.route_type is object else (TYPE, route.route_type)
    if route.route_type is object:  # the route_func itself: no wrapper call per item
        return FUNC, route.route_func  # (the generated code tests its truth, see fuse._match)
    return FUNC, matcher(route)


def limited(fn: Callable[[Any], Any], step: Any) -> Callable[[Any], Any]:
    """``fn`` under one semaphore of the step's own ``concurrency`` (an async step that
    runs outside an operator with slots of its own: evaluated inline, or in a fresh
    subscription per item); ``fn`` itself otherwise."""
    limit = step.option("concurrency") if isinstance(step, Step) and step.is_async else None
    if limit is None:
        return fn
    semaphore = asyncio.Semaphore(limit)

    async def call(item: Any) -> Any:
        async with semaphore:
            result = fn(item)
            # an async generator's items are pulled later, outside the semaphore
            return await result if inspect.isawaitable(result) else result

    return call


def _every(item: Any) -> bool:
    """The match of a route whose matching was done before (by its route operator)."""
    return True


def _as_function(step: Any) -> Callable[[Any], Any]:
    """A plain step of an all-sync route as ``item -> result``: a constant, a Filter
    (the item or None) or the step's callable."""
    if isinstance(step, Const):
        value = step.value
        return lambda x: value
    if isinstance(step, Route):  # Filter
        match = matcher(step)
        return lambda x: x if match(x) else None
    fn: Callable[[Any], Any] = callable_of(step)
    return fn


def _sync_options(step: Any, label: str) -> Dict[str, Any]:
    """The options of a step that runs inline; a timeout cannot apply to it."""
    options = options_of(step)
    if options.get("timeout") is not None:
        raise ValueError(
            f"step {label!r}: a timeout needs an async or boosted step (a sync "
            f"call cannot be interrupted); add boost='thread' to time it out")
    return options


def _kept(match: Callable[[Any], bool], rt: StepRuntime) -> Callable[[Any], bool]:
    """A Filter's predicate for ``ops.filter``: counts, and applies the step's policy to
    a failing ``route_func`` (raise ends the stream with it, ignore drops the item)."""
    stats = rt.stats

    def keep(x: Any) -> bool:
        stats.inp += 1
        try:
            kept = bool(match(x))
        except Exception as exc:
            action, value = rt.final(exc, x)
            if action == RAISE:
                raise value
            return False  # DROP (a deferred raise drops too)
        if kept:
            stats.out += 1
        else:
            stats.filtered += 1
        return kept

    return keep


__all__ = ["Builder", "matcher", "fusable", "shape_of", "segment_source"]
