"""The one public seam through which code above the engine (replay mode, tools) joins a run.

``run_pipes(pipes, hooks=RunHooks())`` asks the hooks, per pipe, for four things — all
optional, the defaults change nothing:

* :meth:`RunHooks.source` — a **replacement source** for a prefix of steps: skip
  ``steps[:k]`` and feed an iterable into ``steps[k]``, pulled on demand like a ``Loop``
  (flow control as usual, so a huge iterable read lazily from disk keeps memory flat),
  or skip every step (the pipe then ends at once);
* :meth:`RunHooks.recorder` — a **recorder** after a top-level step: an Rx operator
  ``Observable -> Observable`` that must pass every item, error and completion through.
  It completes only if the step really finished its input (a stopped run completes
  nothing), so "the recorder completed" means "the step's output is complete";
* :meth:`RunHooks.defer_raise` — **defer the raise**: under the ``raise`` policy a failing
  top-level step (or any step nested in it) stops accepting items — those arriving later
  are counted in :attr:`StepFailure.refused`, never silently lost — while the steps
  upstream run to their end; when the pipe has finished, the run raises the original
  error. Which top-level step failed is in ``report.failures`` (and so in the outcome);
* :meth:`RunHooks.finished` — called once when the run is over, however it ended, with a
  :class:`RunOutcome`. An exception it raises is logged and never replaces the run's own.

Top-level steps are numbered from 1 as in the run report (``P1[3]`` is pipe 1, step 3);
pipes are numbered from 1 in the order ``run_pipes`` got them. With hooks, each top-level
step is built on its own (sync steps are not fused across a step boundary), so an
operator fits between any two of them.

Limits, on purpose: a failure inside a ``BlockedJoin`` branch is not deferred (the run
stops at once: dropping it would emit a tuple with a hole), nor is a cancellation.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import reactivex

from ..plan import plan_of
from .gate import Boundary, Gate
from .operators import PullPlan, iterate, pull_source, trigger

if TYPE_CHECKING:  # pragma: no cover
    from .compiler import Builder
    from .context import RunContext, RunReport

log = logging.getLogger("rxbot")

Operator = Callable[[reactivex.Observable[Any]], reactivex.Observable[Any]]


@dataclass
class StepFailure:
    """Top-level step ``step`` of pipe ``pipe`` failed under the ``raise`` policy while
    the raise was deferred."""

    pipe: int
    step: int
    error: BaseException
    #: items that reached the step after it failed and were not given to it
    refused: int = 0


@dataclass
class RunOutcome:
    """How a run ended: ``error`` is what ``run_pipes`` raises (None: success; a
    ``CancelledError`` for Ctrl-C/SIGTERM)."""

    report: "RunReport"
    error: Optional[BaseException]

    @property
    def failures(self) -> List[StepFailure]:
        return self.report.failures


class RunHooks:
    """What a run lets code above the engine do. Subclass and override what you need."""

    def source(self, pipe: int) -> Optional[Tuple[int, Iterable[Any]]]:
        """``(k, items)``: run only ``steps[k:]`` of pipe ``pipe`` (``1 <= k <= len(steps)``),
        with ``items`` as the output of the skipped steps; ``k == len(steps)`` skips the
        whole pipe (``items`` should then be empty: nothing is left to take them). None:
        run the whole pipe.

        ``items`` may instead be a *feed*: an object with ``async feed(ctx, emit, gate,
        stats)`` that pushes the items itself (``emit`` each one, count ``stats.out``,
        wait at ``gate`` while it is blocked) and may pause between them, and an optional
        ``source_step`` (a :class:`~rxbot.tree.walk.StepId`) whose counts it keeps (resume's
        checkpointing source, :mod:`rxbot.durable.resume`)."""
        return None

    def recorder(self, pipe: int, step: int) -> Optional[Operator]:
        """An operator to put after top-level step ``step`` (1-based), or None."""
        return None

    def defer_raise(self, pipe: int) -> bool:
        """Whether a ``raise`` in pipe ``pipe`` waits for the steps upstream to finish."""
        return False

    def finished(self, outcome: RunOutcome) -> None:
        """The run is over (tasks ended, nodes closed); ``outcome`` says how."""

    #: False: the hooks only watch (``dead_letter``, ``finished``); the pipes are built as
    #: without hooks (fused across top-level steps), ``source``/``recorder``/``defer_raise``
    #: are not asked
    rebuilds = True

    #: an item tracer (:class:`rxbot.observe.trace.Tracer`), or None: it is given the run
    #: (``attach(ctx)``) before anything is built, wraps the source of each pipe that is
    #: an iterable (``source(where, iterable)``) and every async step's calls
    #: (``slots(runner, finish, fail, stats_of)``), and is told ``finished(ctx, error)``
    tracer: Any = None

    def dead_letter(self, letter: Any) -> None:
        """A step failed on an item under ignore/retry/pipein (a :class:`~rxbot.errors.StepError`,
        its step's id in ``letter.path``); called as it happens. An exception raised here
        fails the run."""


# ---- the engine's side -----------------------------------------------------------------------
class Deferrals:
    """The deferred raises of one run (``ctx.deferrals``)."""

    def __init__(self, ctx: "RunContext", pipes: Sequence[int]) -> None:
        self.ctx = ctx
        self.pipes = set(pipes)
        self.failed: Dict[Tuple[int, int], StepFailure] = {}

    def defer(self, top: Optional[Tuple[int, int]], error: BaseException) -> bool:
        """Called by the policy for a ``raise``: True if the raise is deferred (the item is
        then dropped, the step refuses further items)."""
        if top is None or top[0] not in self.pipes or self.ctx.stopped:
            return False
        if top not in self.failed:
            failure = self.failed[top] = StepFailure(top[0], top[1], error)
            self.ctx.report.failures.append(failure)
        return True

    def pipe_finished(self, pipe: int) -> None:
        """The pipe's last step completed: raise its first deferred error now."""
        for failure in self.ctx.report.failures:
            if failure.pipe == pipe:
                self.ctx.fail(failure.error)
                return


def _valve(failed: Dict[Tuple[int, int], StepFailure], top: Tuple[int, int]) -> Operator:
    """Before a top-level step: passes items until the step has failed, then counts them."""

    def op(source: reactivex.Observable[Any]) -> reactivex.Observable[Any]:
        def subscribe(observer: Any, scheduler: Any = None) -> Any:
            forward = observer.on_next

            def on_next(x: Any) -> None:
                failure = failed.get(top)
                if failure is None:
                    forward(x)
                else:
                    failure.refused += 1

            return source.subscribe(on_next, observer.on_error, observer.on_completed, scheduler=scheduler)

        return reactivex.create(subscribe)

    return op


def attach(ctx: "RunContext", hooks: Optional[RunHooks], count: int) -> None:
    """Set the run up for ``hooks`` (before any pipe is built)."""
    if hooks is not None:
        tracer = getattr(hooks, "tracer", None)
        if tracer is not None:  # watches the run from above: see RunHooks.tracer
            ctx.tracer = tracer
            tracer.attach(ctx)
        if hooks.rebuilds:
            ctx.deferrals = Deferrals(ctx, [i for i in range(1, count + 1) if hooks.defer_raise(i)])
        if type(hooks).dead_letter is not RunHooks.dead_letter:
            ctx.letter_hooks.append(hooks.dead_letter)


def build_pipe(builder: "Builder", ctx: "RunContext", pipe: Any, index: int,
               hooks: RunHooks) -> Tuple[reactivex.Observable[Any], List[Operator]]:
    """The source and operators of pipe ``index`` with the hooks' source, recorders and
    valves: each top-level step built alone (the pipe's plan lowered ``per_step``), from
    the last to the first (the same right-to-left threading of flow-control boundaries
    as ``Builder.build``)."""
    plan = builder.follow(plan_of(pipe, index, per_step=True))
    steps = pipe.steps
    path = plan.root
    m = len(plan.spans)
    replacement = hooks.source(index)
    skip = 0
    if replacement is not None:
        skip, items = replacement
        if not 1 <= skip <= m:
            raise ValueError(f"RunHooks.source for pipe {path} must skip 1..{m} of its {m} steps; got {skip}")
    deferrals = ctx.deferrals
    failed = deferrals.failed if deferrals is not None and index in deferrals.pipes else None
    ops_rev: List[Operator] = []
    bounds: List[Boundary] = []
    for first, last in reversed(plan.spans[skip:]):
        k = last + 1  # (one step per span)
        recorder = hooks.recorder(index, k)
        if recorder is not None:
            ops_rev.append(recorder)
        known = set(ctx.runtimes)
        op, bounds, _ = builder.build_span(steps, first, last, bounds, path,
                                           terminal=k == m and recorder is None, sink=k == m)
        for where in ctx.runtimes.keys() - known:  # this step's runtimes, nested ones too
            if not ctx.runtimes[where].in_blocked_join:
                ctx.runtimes[where].top = (index, k)
        ops_rev.append(op)
        if failed is not None:  # this pipe defers its raises
            ops_rev.append(_valve(failed, (index, k)))
    if skip:
        # a source with a ``feed(ctx, emit, gate, stats)`` coroutine pushes its items
        # itself (resume's checkpointing source pauses between epochs); it may name the
        # step it stands for (``source_step``), whose counts it then keeps
        feed = getattr(items, "feed", None)
        named = getattr(items, "source_step", None)
        if named is not None:
            rt = ctx.runtime(named, named.label, on_error="raise")
        else:
            rt = ctx.runtime(f"{path} replayed", f"the saved output of steps 1-{skip}", on_error="raise")

        async def produce(item: Any, emit: Callable[[Any], None], gate: Gate, stats: Any) -> None:
            if feed is not None:
                await feed(ctx, emit, gate, stats)
            else:
                await iterate(items, emit, gate, stats)

        ops_rev.append(pull_source(ctx, PullPlan(rt, produce, list(bounds))))
    ops_rev.reverse()
    return trigger(ctx, 0), ops_rev


def finish(ctx: "RunContext", hooks: Optional[RunHooks], raised: Optional[BaseException]) -> None:
    """After the run: settle its error (a deferred raise that never got raised because
    the run ended otherwise) and tell the hooks."""
    if ctx.error is None and raised is None and ctx.report.failures:
        ctx.error = ctx.report.failures[0].error
    if ctx.tracer is not None:
        try:
            ctx.tracer.finished(ctx, ctx.error or raised)
        except Exception:
            log.exception("rxbot: the item trace failed to finish (the run's own outcome stands)")
    if hooks is None:
        return
    try:
        hooks.finished(RunOutcome(ctx.report, ctx.error or raised))
    except Exception:
        log.exception("rxbot: RunHooks.finished failed (the run's own outcome stands)")




class RunObserver:
    """Something above the engine that watches every run (the live listing of
    ``BotFrame.bots``, progress bars, the stats hook): the façade registers it with
    :func:`observe_runs`, so the engine imports nothing that watches or draws it.

    ``started`` runs once the run's report exists, before any item flows; ``running``
    once the pipes are built, inside the run (start watcher tasks with ``ctx.spawn``);
    ``ended`` after the run has shut down."""

    def started(self, ctx: Any, pipes: Sequence[Any]) -> None:
        """The run's report exists; no item has flowed yet."""

    def running(self, ctx: Any, pipes: Sequence[Any]) -> None:
        """The pipes are built and subscribed."""

    def ended(self, ctx: Any) -> None:
        """The run has shut down."""


_observers: List[RunObserver] = []


def observe_runs(observer: RunObserver) -> None:
    """Call ``observer`` for every run from now on (once, however often registered)."""
    if observer not in _observers:
        _observers.append(observer)


def observers() -> Tuple[RunObserver, ...]:
    return tuple(_observers)


__all__ = ["RunHooks", "RunOutcome", "StepFailure", "Operator", "RunObserver", "observe_runs", "observers"]
