"""Run a set of pipes in the current event loop: init nodes, subscribe, wait, clean up."""
from __future__ import annotations

import asyncio
from typing import Any, Callable, List, Optional, Sequence

from ..tree.flow import Pipe
from ..tree.node import Node
from ..plan import plan_of
from ..tree.walk import StepId, nodes_in, root_of
from .compiler import Builder
from .context import RunContext, RunReport
from .hooks import RunHooks, attach, build_pipe, finish, observers
from .ledger import ledger_lines, settle_ledger
from .lifecycle import close_nodes, init_nodes, make_room_for, run_scope, subscribe_until_end, until_end
from .operators import trigger


def nodes_of(pipes: Sequence[Pipe]) -> List[Node]:
    return nodes_in([step for pipe in pipes for step in pipe.steps])


async def run_pipes(pipes: Sequence[Pipe], hooks: RunHooks | None = None,
                    observe: Optional[Callable[[RunReport], None]] = None) -> RunReport:
    """Run ``pipes`` concurrently; return the report, or raise the first fatal error.

    ``hooks``: see :mod:`rxbot.engine.hooks` (replay mode joins a run through them).
    ``observe(report)`` is called once the run's report exists, before any item flows
    (the live view, :mod:`rxbot.draw.watch`, reads the counts from it while the run goes on)."""
    roots = [root_of(pipe, index) for index, pipe in enumerate(pipes, start=1)]
    for pipe, root in zip(pipes, roots):
        make_room_for(pipe.steps, root)
    loop = asyncio.get_running_loop()
    ctx = RunContext(loop)
    for pipe in pipes:  # the live report (a sharded run sends its counts as they grow)
        pipe.report = ctx.report
    attach(ctx, hooks, len(pipes))
    if observe is not None:
        observe(ctx.report)
    watching = observers()  # BotFrame.bots / debug(), progress, the stats hook (the façade's)
    for observer in watching:
        observer.started(ctx, pipes)
    raised: BaseException | None = None
    try:
        async with run_scope(ctx, nodes_of(pipes), after_shutdown=lambda: _ended(watching, ctx)):
            builder = Builder(ctx)
            ends = [_start(pipe, builder, ctx, root, hooks, index)
                    for index, (pipe, root) in enumerate(zip(pipes, roots), start=1)]
            for observer in watching:
                observer.running(ctx, pipes)
            await until_end(ctx, ends)
    except BaseException as exc:
        raised = exc
        raise
    finally:
        for pipe in pipes:
            pipe._finished = True
            pipe.report = ctx.report
        finish(ctx, hooks, raised)
        # also when the run was cancelled (Ctrl-C, SIGTERM) just as a step failed: the
        # failure is counted, so the report names it even though the run raises the
        # cancellation
        ctx.report.error = ctx.error
        if isinstance(ctx.error or raised, (KeyboardInterrupt, SystemExit)):
            count_interrupted(ctx, pipes, roots)
        unbalanced = settle_ledger(ctx, [pipe.steps for pipe in pipes], raised, roots)
    if ctx.error is not None:
        raise ctx.error
    if unbalanced is not None:
        raise unbalanced
    return ctx.report


def count_interrupted(ctx: RunContext, pipes: Sequence[Pipe], roots: Sequence[StepId]) -> None:
    """A signal interrupted a step in the main thread (``KeyboardInterrupt``/``SystemExit``
    raised where it ran, see :mod:`rxbot.stopping`): the items on the interrupted call
    stack, one per step the push was in, were accepted and never settled. They are what
    the steps' ledgers are short of: count them cancelled, as a graceful stop counts what
    it cuts short. (Only a shortfall; a step that counts more than it accepted stays a
    ledger error.) ``roots``: each pipe's root id, as the run numbered its steps."""
    steps = [pipe.steps for pipe in pipes]
    for path, line in ledger_lines(ctx.runtimes, steps, ctx.report.dead_letters, roots).items():
        if line is not None and line.inp + line.fanout > line.accounted:
            ctx.runtimes[path].stats.cancelled += line.inp + line.fanout - line.accounted


def _start(pipe: Pipe, builder: Builder, ctx: RunContext, root: StepId, hooks: RunHooks | None,
           index: int) -> asyncio.Future:
    """Build and subscribe the ``index``-th pipe of the run (``root``: its steps' root
    id, which names another pipe for a redrive's resumption: the run's numbering of
    hooks and deferred raises stays ``index``)."""
    if hooks is not None and hooks.rebuilds:
        source, ops = build_pipe(builder, ctx, pipe, index, hooks)
    else:
        plan = builder.follow(plan_of(pipe, index))
        source, ops = trigger(ctx, 0), builder.build(pipe.steps, [], root, terminal=True, cuts=plan.spans)[0]

    def on_end() -> None:
        pipe._finished = True
        if ctx.deferrals is not None:
            ctx.deferrals.pipe_finished(index)

    return subscribe_until_end(ctx, source.pipe(*ops), on_end=on_end)[0]


__all__ = ["run_pipes", "nodes_in", "nodes_of", "init_nodes", "close_nodes"]


def _ended(watching: Sequence[Any], ctx: RunContext) -> None:
    for observer in watching:
        observer.ended(ctx)
