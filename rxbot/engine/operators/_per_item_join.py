"""per_item_join: BlockedJoin — for each input, run every branch on that one item and
emit one tuple of their results in argument order (a zip keyed by input occurrence).

Each input gets a fresh build of its branches (so results can never be mixed between
inputs), runs as a bounded async map over inputs, and waits for every branch like
Rx's ``fork_join``: a branch that emitted one item gives that item, none gives
``None``, several give a list.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, List, Sequence

from ._pull_source import trigger
from ._subscription import Operator

#: ``build(steps, place) -> operators`` for one branch (the compiler's)
BuildBranch = Callable[[Sequence[Any], Any], List[Operator]]


def per_item_join(ctx: Any, branches: Sequence[Sequence[Any]], where: Any,
                  build: BuildBranch) -> Callable[[Any], Any]:
    """The async function ``item -> tuple`` a bounded map calls per input."""

    async def correlate(item: Any) -> tuple:
        results = await asyncio.gather(
            *(run_subflow(ctx, build(steps, where.branch(b + 1)), item) for b, steps in enumerate(branches)))
        return tuple(None if not r else r[0] if len(r) == 1 else r for r in results)

    return correlate


async def run_subflow(ctx: Any, ops: Sequence[Operator], item: Any) -> list:
    """Feed ``item`` through ``ops`` and return everything that comes out."""
    done = ctx.loop.create_future()
    out: list = []

    def on_error(exc: Exception) -> None:
        if not done.done():
            done.set_exception(exc)

    def on_completed() -> None:
        if not done.done():
            done.set_result(out)

    subscription = trigger(ctx, item).pipe(*ops).subscribe(out.append, on_error, on_completed,
                                                           scheduler=ctx.scheduler)
    try:
        return await done
    finally:
        subscription.dispose()


__all__ = ["per_item_join", "run_subflow"]
