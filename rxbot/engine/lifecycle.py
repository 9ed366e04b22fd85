"""One run's lifecycle, shared by ``BotFrame.run`` (:func:`~.runner.run_pipes`) and the
Rx bridge (``rxbot.rx.to_observable`` / ``as_operator``): init the nodes, subscribe,
wait for the end or the first failure, shut down, close the nodes."""
from __future__ import annotations

import asyncio
import logging
import sys
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, List, Sequence, Tuple

import reactivex

from ..errors import PipelineError, annotate
from ..tree.node import Node
from ..tree.walk import elements

log = logging.getLogger("rxbot")

#: Python frames one level of route nesting costs while wiring and pushing (measured
#: ~10 for a chain of sync Returns; with a margin)
FRAMES_PER_LEVEL = 14
#: deeper than this, rxbot refuses to build rather than risk the C stack
MAX_DEPTH = 1000


async def init_nodes(nodes: Sequence[Node], inited: List[Node]) -> None:
    """``init()`` every node (refcounted), appending each to ``inited`` once it is up so
    that the caller can close exactly those if a later one fails."""
    for node in nodes:
        try:
            await node.node_init()
        except Exception as exc:
            raise annotate(exc, node.label(), "<init>")
        inited.append(node)


async def close_nodes(inited: Sequence[Node]) -> None:
    """``close()`` nodes in reverse order; a failing close is logged, never hides the run's
    own outcome."""
    for node in reversed(inited):
        try:
            await node.node_close()
        except Exception:
            log.exception("rxbot: closing node %r failed", node.label())


@asynccontextmanager
async def run_scope(ctx: Any, nodes: Sequence[Node],
                    after_shutdown: Callable[[], None] | None = None) -> AsyncIterator[None]:
    """Nodes up for the body; afterwards, however it ends, the run is shut down (tasks
    cancelled and awaited, executors stopped; then ``after_shutdown()``), the nodes are
    closed, and what holding nodes did with their items at close is counted."""
    inited: List[Node] = []
    try:
        ctx.beat.start()
        await init_nodes(nodes, inited)
        ctx.watch_nodes(inited)
        yield
    finally:
        ctx.beat.stop()
        await ctx.shutdown()
        if after_shutdown is not None:
            after_shutdown()
        await close_nodes(inited)
        ctx.count_closed()
        ctx.take_node_numbers()


def subscribe_until_end(ctx: Any, observable: reactivex.Observable,
                        on_next: Callable[[Any], None] | None = None,
                        on_end: Callable[[], None] | None = None) -> Tuple[asyncio.Future, Any]:
    """Subscribe on the run's scheduler. Returns a future that resolves when the stream
    ends (an error fails the run first) and the subscription."""
    done = ctx.loop.create_future()

    def on_error(exc: Exception) -> None:
        ctx.fail(exc)
        if not done.done():
            done.set_result(None)

    def on_completed() -> None:
        if on_end is not None:
            on_end()
        if not done.done():
            done.set_result(None)

    subscription = observable.subscribe(on_next or _ignore, on_error, on_completed, scheduler=ctx.scheduler)
    return done, subscription


async def until_end(ctx: Any, ends: Sequence[asyncio.Future]) -> None:
    """Wait until every stream has ended or the run has failed."""
    everything = asyncio.gather(*ends)
    try:
        await asyncio.wait([everything, ctx.failed], return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not everything.done():
            everything.cancel()
            await asyncio.gather(everything, return_exceptions=True)
        elif not everything.cancelled():
            # ended: its outcome is read here, not awaited (a gather of a done future
            # still costs two turns of the loop, a tenth of a small job's run)
            everything.exception()


def make_room_for(steps: Sequence[Any], where: str) -> None:
    """Routes nest by Python calls (wiring, every push, completion), about
    ``FRAMES_PER_LEVEL`` frames a level: raise the recursion limit enough for the
    deepest route of ``steps``, or refuse clearly beyond ``MAX_DEPTH`` levels."""
    depth = route_depth(steps)
    if depth > MAX_DEPTH:
        raise PipelineError(
            f"{where}: routes are nested {depth} deep; rxbot builds at most {MAX_DEPTH} levels "
            f"(each level costs about {FRAMES_PER_LEVEL} Python frames). Flatten the routes")
    needed = 1000 + depth * FRAMES_PER_LEVEL
    if needed > sys.getrecursionlimit():
        log.debug("rxbot: routes nested %d deep in %s: recursion limit raised to %d", depth, where, needed)
        sys.setrecursionlimit(needed)


def route_depth(steps: Sequence[Any]) -> int:
    """How many routes the most deeply nested step of ``steps`` is inside (the largest
    ``StepId.depth`` of :func:`~rxbot.tree.walk.walk`, without making the ids; the
    traversal is iterative: it runs before the depth is known to be safe)."""
    return max((depth for depth, _ in elements(steps)), default=0)


def _ignore(_: Any) -> None:
    pass


__all__ = ["init_nodes", "close_nodes", "run_scope", "subscribe_until_end", "until_end", "make_room_for",
           "MAX_DEPTH"]
