"""Run a set of pipes in the current event loop: init nodes, subscribe, wait, clean up."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterator, List, Sequence

from ..config import config
from ..errors import annotate
from ..flow import Pipe, Route
from ..node import Node
from ..step import Step
from .compiler import Builder
from .context import RunContext, RunReport
from .operators import trigger

log = logging.getLogger("rxbot")


def walk(steps: Sequence[Any]) -> Iterator[Any]:
    """Every element of a step tree, depth first (routes before their branches)."""
    for step in steps:
        yield step
        if isinstance(step, Route):
            for branch in step.branches:
                yield from walk(branch)


def nodes_in(steps: Sequence[Any]) -> List[Node]:
    """Every distinct Node of a step tree (one init/close each, however often used)."""
    seen: dict = {}
    for step in walk(steps):
        node = step.fn if isinstance(step, Step) else step
        if isinstance(node, Node):
            seen.setdefault(id(node), node)
    return list(seen.values())


def nodes_of(pipes: Sequence[Pipe]) -> List[Node]:
    return nodes_in([step for pipe in pipes for step in pipe.steps])


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


async def run_pipes(pipes: Sequence[Pipe]) -> RunReport:
    """Run ``pipes`` concurrently; return the report, or raise the first fatal error."""
    loop = asyncio.get_running_loop()
    ctx = RunContext(loop)
    from ..replay import session as replay_session  # replay:
    ctx.replay = replay_session(ctx)  # replay: None unless config.replay_mode
    inited: List[Node] = []
    try:
        await init_nodes(nodes_of(pipes), inited)
        builder = Builder(ctx)
        sinks = []
        for index, pipe in enumerate(pipes):
            sinks.append(_start(pipe, builder, ctx, f"P{index + 1}"))
        if config.progress:
            from ..progress import Progress

            progress = Progress(pipes, ctx.report)
            ctx.spawn(progress.run())
            ctx.on_shutdown(progress.close)  # after the segments publish their counts
        everything = asyncio.gather(*sinks)
        try:
            await asyncio.wait([everything, ctx.failed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not everything.done():
                everything.cancel()
            await asyncio.gather(everything, return_exceptions=True)
    finally:
        await ctx.shutdown()
        await close_nodes(inited)
        for pipe in pipes:
            pipe._finished = True
            pipe.report = ctx.report
        if ctx.replay is not None:  # replay: save or clear the cache; a poisoned run fails here
            ctx.replay.finish()
    if ctx.error is not None:
        ctx.report.error = ctx.error
        raise ctx.error
    return ctx.report


def _start(pipe: Pipe, builder: Builder, ctx: RunContext, path: str) -> asyncio.Future:
    if ctx.replay is not None:  # replay: steps built one by one with recording taps between
        source, ops = ctx.replay.plan(pipe, builder, path)
    else:
        source, ops = trigger(ctx, 0), builder.build(pipe.steps, [], path, terminal=True)[0]
    done = ctx.loop.create_future()

    def on_next(_: Any) -> None:
        pass

    def on_error(exc: Exception) -> None:
        ctx.fail(exc)
        if not done.done():
            done.set_result(None)

    def on_completed() -> None:
        pipe._finished = True
        if not done.done():
            done.set_result(None)

    source.pipe(*ops).subscribe(on_next, on_error, on_completed, scheduler=ctx.scheduler)
    return done


__all__ = ["run_pipes", "walk", "nodes_in", "nodes_of", "init_nodes", "close_nodes"]
