"""publish_route and fork_join_each: routes on the honest (unfused) graph, built from
Rx's own operators.

* Branch / Return / Fork / Join: ``map`` tags each item with its match (evaluated once),
  ``publish`` shares the tagged stream, every branch filters its items out of it, and
  a merge brings back what comes out (the main stream first, then the branches, the
  order the fused route keeps and databot's queues had). The merge is :func:`~._route.merge_into`, not
  ``reactivex.merge``: Rx's merge subscribes its inner sources through the
  current-thread trampoline, and with routes nested three deep the innermost branch
  lost every item (measured: ``Fork(Branch(Join(...)))``).
* BlockedJoin: per input, ``fork_join`` of every branch applied to ``of(item)`` and
  collected with ``to_list`` — Rx's "wait for every branch, emit one tuple".
"""
from __future__ import annotations

from typing import Any, Callable, List, Sequence

import reactivex
from reactivex import operators as ops

from ..policy import DROP, RAISE, StepRuntime
from ..results import blocked_tuple
from ._route import merge_into
from ._subscription import Operator

_MAIN, _BRANCH, _BOTH, _ERRORS, _DROPPED = range(5)


def publish_route(rt: StepRuntime, match: Callable[[Any], bool], share: bool,
                  branch_ops: Sequence[List[Operator]]) -> Operator:
    stats = rt.stats
    matched_tag = _BOTH if share else _BRANCH

    def tag(x: Any) -> tuple:
        stats.inp += 1
        try:
            m = match(x)
        except Exception as exc:
            action, value = rt.final(exc, x)
            if action == RAISE:
                raise value
            return (_DROPPED, None) if action == DROP else (_ERRORS, value)
        if m:
            stats.out += 1  # matched: sent into the branches
            return matched_tag, x
        return _MAIN, x

    def to_branch(t: tuple) -> bool:
        return t[0] == _BRANCH or t[0] == _BOTH

    def to_main(t: tuple) -> bool:
        return t[0] == _MAIN or t[0] == _BOTH

    def is_errors(t: tuple) -> bool:
        return t[0] == _ERRORS

    def item(t: tuple) -> Any:
        return t[1]

    def errors_of(t: tuple) -> reactivex.Observable:
        return reactivex.from_iterable(t[1])

    def selector(shared: reactivex.Observable) -> reactivex.Observable:
        branches = [chain(shared, [ops.filter(to_branch), ops.map(item), *b]) for b in branch_ops]
        main = shared.pipe(ops.filter(to_main), ops.map(item))
        errors = shared.pipe(ops.filter(is_errors), ops.concat_map(errors_of))
        sources = [main, *branches, errors]  # subscribed in this order: the main stream sees an item first

        def merged(observer: Any, scheduler: Any = None) -> Any:
            return merge_into(observer, sources, scheduler)

        return reactivex.create(merged)

    def op(source: reactivex.Observable) -> reactivex.Observable:
        return source.pipe(ops.map(tag), ops.publish(selector))

    return op


def fork_join_each(ctx: Any, branch_ops: Sequence[List[Operator]]) -> Callable[[Any], Any]:
    """The async function ``item -> tuple`` of a BlockedJoin on the unfused graph."""

    async def correlate(item: Any) -> tuple:
        done = ctx.loop.create_future()

        def on_next(results: Any) -> None:
            if not done.done():
                done.set_result(results)

        def on_error(exc: Exception) -> None:
            if not done.done():
                done.set_exception(exc)

        subscription = reactivex.fork_join(
            *(chain(reactivex.of(item), [*b, ops.to_list()]) for b in branch_ops)
        ).subscribe(on_next, on_error, scheduler=ctx.scheduler)
        try:
            results = await done
        finally:
            subscription.dispose()
        return blocked_tuple(results)

    return correlate


def chain(source: reactivex.Observable, operators: Sequence[Any]) -> reactivex.Observable:
    """``source.pipe(*operators)`` for a list built at run time."""
    for op in operators:
        source = op(source)
    return source


__all__ = ["publish_route", "fork_join_each"]
