"""per_item_join: BlockedJoin — for each input, run every branch on that one item and
emit one tuple of their results in argument order (a zip keyed by input occurrence).

Rx's ``fork_join`` shape: each branch's operators are built once and subscribed afresh
for every input (operators keep their state per subscription, so inputs can never mix
their results); the input is pushed in, the branch completes, and its output gives that
branch's slot of the tuple — one item as itself, none as ``None``, several as a list.
The inputs run as a bounded async map (the BlockedJoin's concurrency).
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, List, Sequence, Tuple

from ..results import blocked_tuple
from ._route import Outlet
from ._subscription import Operator


def per_item_join(ctx: Any, branch_ops: Sequence[List[Operator]]) -> Callable[[Any], Any]:
    """The async function ``item -> tuple`` a bounded map calls per input."""

    async def correlate(item: Any) -> tuple:
        started = [start_subflow(ctx, ops, item) for ops in branch_ops]
        try:
            results = [f.result() if f.done() else await f for f, _ in started]
        finally:
            for _, subscription in started:
                subscription.dispose()
        return blocked_tuple(results)

    return correlate


def start_subflow(ctx: Any, ops: Sequence[Operator], item: Any) -> Tuple[asyncio.Future, Any]:
    """Push ``item`` through a fresh subscription of ``ops``; the future gets everything
    that comes out (already done when every step ran inline)."""
    done = ctx.loop.create_future()
    out: list = []

    def on_error(exc: Exception) -> None:
        if not done.done():
            done.set_exception(exc)

    def on_completed() -> None:
        if not done.done():
            done.set_result(out)

    head = Outlet()  # the branches are wired synchronously, so the item can go in at once
    subscription = head.observable.pipe(*ops).subscribe(out.append, on_error, on_completed,
                                                        scheduler=ctx.scheduler)
    head.on_next(item)
    head.on_completed()
    return done, subscription


__all__ = ["per_item_join", "start_subflow"]
