"""Run a set of pipes in the current event loop: init nodes, subscribe, wait, clean up."""
from __future__ import annotations

import asyncio
from typing import List, Sequence

from ..config import config
from ..flow import Pipe
from ..node import Node
from ..walk import StepId, nodes_in
from .compiler import Builder
from .context import RunContext, RunReport
from .lifecycle import close_nodes, init_nodes, make_room_for, run_scope, subscribe_until_end, until_end
from .operators import trigger

def nodes_of(pipes: Sequence[Pipe]) -> List[Node]:
    return nodes_in([step for pipe in pipes for step in pipe.steps])


async def run_pipes(pipes: Sequence[Pipe]) -> RunReport:
    """Run ``pipes`` concurrently; return the report, or raise the first fatal error."""
    loop = asyncio.get_running_loop()
    ctx = RunContext(loop)
    from ..replay import session as replay_session  # replay:
    ctx.replay = replay_session(ctx)  # replay: None unless config.replay_mode
    roots = [StepId.root(f"P{index + 1}", index + 1) for index in range(len(pipes))]
    try:
        for pipe, root in zip(pipes, roots):
            make_room_for(pipe.steps, root)
        async with run_scope(ctx, nodes_of(pipes)):
            builder = Builder(ctx)
            ends = [_start(pipe, builder, ctx, root) for pipe, root in zip(pipes, roots)]
            if config.progress:
                from ..progress import Progress

                progress = Progress(pipes, ctx.report)
                ctx.spawn(progress.run())
                ctx.on_shutdown(progress.close)  # after the segments publish their counts
            await until_end(ctx, ends)
    finally:
        for pipe in pipes:
            pipe._finished = True
            pipe.report = ctx.report
        if ctx.replay is not None:  # replay: save or clear the cache; a poisoned run fails here
            ctx.replay.finish()
    if ctx.error is not None:
        ctx.report.error = ctx.error
        raise ctx.error
    return ctx.report


def _start(pipe: Pipe, builder: Builder, ctx: RunContext, path: StepId) -> asyncio.Future:
    if ctx.replay is not None:  # replay: steps built one by one with recording taps between
        source, ops = ctx.replay.plan(pipe, builder, path)
    else:
        source, ops = trigger(ctx, 0), builder.build(pipe.steps, [], path, terminal=True)[0]

    def on_end() -> None:
        pipe._finished = True

    return subscribe_until_end(ctx, source.pipe(*ops), on_end=on_end)[0]


__all__ = ["run_pipes", "nodes_in", "nodes_of", "init_nodes", "close_nodes"]
