"""The bridge between rxbot pipes and plain reactivex (RxPY 4+).

**Rx operators as steps.** Any ``reactivex.operators`` operator is a step as it is::

    Pipe(Loop(range(100)), ops.buffer_with_count(10), sum, print)

It is inserted verbatim into the run's reactivex chain. Its output does not go through
rxbot's flatten rules (a ``buffer_with_count`` list stays one item). Your own
``Observable -> Observable`` function must be wrapped with :func:`op`, because a plain
callable in a Pipe is a per-item step.

An exception raised inside a raw Rx operator (``ops.map(lambda x: 1 / x)``) is an Rx
error. It ends the stream, and the run raises it whatever the exception policy, because
an Rx operator cannot go on after ``on_error`` (going on would mean subscribing the
whole pipe again, re-running its sources). The error names the step: it carries
``rxbot_step`` (the operator's label), ``rxbot_item`` (the last item that entered the
operator) and a note saying so, like every step failure. Per-item work that may fail
belongs in a plain step, where ``ignore`` / ``retry`` / ``pipein`` apply.

Time-based operators (``throttle_first``, ``debounce``, ``sample``, ``delay``,
``buffer_with_time``, ``window_with_time``, ...) work because the engine subscribes with
``scheduler=ctx.scheduler``, an ``AsyncIOScheduler`` on the run's loop. Their timers run
on the event loop, so their output lands on the loop thread like everything else.

**Flow control around an Rx operator.** rxbot pauses a source while a downstream async
step is full. An operator that passes items on during the same call (``map``,
``filter``, ``scan``, ``distinct``, ``pairwise``, ``take``, ``throttle_first``,
``debounce``, ``sample``, ``buffer_with_count(n)``, ...) lets that pause reach upstream,
so it holds at most what it stores itself. That is ``n`` items for
``buffer_with_count(n)``, one for ``debounce``/``sample``, and every key seen so far for
``distinct``.

Operators that move items to a later point in time cut that link. The source sees no full
step while the items wait in the operator, so the operator buffers everything the source
produces in that time:

=================================================  ===========================================
operator                                           what it holds
=================================================  ===========================================
``delay(t)``, ``delay_subscription``               source rate × ``t``
``buffer_with_time(t)``, ``window_with_time``      one window's worth of items
``buffer_with_time_or_count(t, n)``                up to ``n`` (flushes early when full)
``observe_on`` / ``subscribe_on`` (async sched)    unbounded: each item is queued as a task
``to_list``, ``reduce``, ``group_by``, ``last``    the whole stream (by design)
=================================================  ===========================================

A measured example: a 3000-item Loop feeding ``buffer_with_time(0.05)`` and then a slow
step had all 3000 items pulled before the slow step took its first one. With ``map`` in
the same place, 4 were pulled (the step's slots). Put time-based operators after the
step that makes the stream slow, or use them on sources that are slow anyway (a Timer, a
feed).

**Pipes inside plain reactivex.** :func:`to_observable` turns a Pipe (or a list of
steps) into a cold ``Observable``, and :func:`as_operator` turns steps into an operator
for ``source.pipe(...)``. Each subscription is one rxbot run with its own
:class:`~rxbot.engine.context.RunContext`, built by the engine's
:class:`~rxbot.engine.compiler.Builder`. Subscribe on the event loop's thread, with
``scheduler=AsyncIOScheduler(loop)`` or from inside a running loop.

The lifecycle of one subscription:

1. on subscribe, a driver task starts. It calls ``init()`` on every Node of the steps
   (refcounted as in a run), then builds and subscribes the chain. A failing ``init``
   goes to ``on_error`` and no item is pulled;
2. items are forwarded to the observer as the last step emits them;
3. when the steps finish, fail (``raise`` policy) or the upstream errors, the run is
   shut down: its tasks are cancelled and awaited, executors and Dask clients closed,
   and every Node's ``close()`` awaited. Only *then* is ``on_completed`` / ``on_error``
   delivered, so resources are released once the observer hears the end;
4. disposing the subscription early (``take(n)`` downstream, ``dispose()``) cancels the
   driver, and the same shutdown and ``close()`` run (asynchronously, on the loop). No
   terminal message is sent after a dispose.

The run's :class:`~rxbot.engine.context.RunReport` is stored on the Pipe (``pipe.report``)
or on the operator (``operator.report``) when a run ends.

**Observables as sources.** :func:`from_observable` makes an Observable (or a function
``item -> Observable``) a step: for each input item it subscribes and emits what the
Observable emits, inputs one after another. An Observable pushes and cannot be paused.
What the downstream cannot take yet waits in this step's queue, so a huge synchronous
Observable is held in memory; a ``Loop`` over an iterable is pulled on demand instead.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Sequence

import reactivex
from reactivex import Observable
from reactivex.disposable import Disposable
from reactivex.scheduler.eventloop import AsyncIOScheduler

from .errors import PipelineError
from .tree.flow import Pipe, _to_steps
from .tree.rx_source import FromObservable, from_observable
from .tree.step import RxOp, callable_label
from .tree.walk import StepId

Operator = Callable[[Observable], Observable]

log = logging.getLogger("rxbot")


# --------------------------------------------------------------------------- Rx ops as steps
def op(fn: Operator, name: str | None = None) -> RxOp:
    """Make ``fn`` (``Observable -> Observable``) a step inserted verbatim into the chain.

    ``reactivex.operators`` need no wrapping; a function of yours does, since a plain
    callable in a Pipe is called once per item. ``name`` is its label in graphs and errors.
    """
    if isinstance(fn, RxOp):
        return fn if name is None else RxOp(fn.op, name)
    if not callable(fn) or isinstance(fn, type):
        raise TypeError(f"rxbot.rx.op: argument 'fn' must be a function Observable -> Observable; got {fn!r:.80}")
    label = name or callable_label(fn)

    def checked(source: Observable) -> Observable:
        result = fn(source)
        if not isinstance(result, Observable):
            raise TypeError(
                f"Rx operator {label!r} must return an Observable; it returned {type(result).__name__}"
                " (a function of items is a plain step: put it in the Pipe without rxbot.rx.op)")
        return result

    checked.__qualname__ = checked.__name__ = label
    return RxOp(checked, name=label)


# ------------------------------------------------------------------ pipes inside plain Rx
def _loop_of(scheduler: Any) -> asyncio.AbstractEventLoop:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    loop = scheduler._loop if isinstance(scheduler, AsyncIOScheduler) else None
    loop = loop or running
    if loop is None:
        raise PipelineError(
            "rxbot.rx: an rxbot pipe needs an asyncio event loop; subscribe with "
            "scheduler=AsyncIOScheduler(loop), or from code running inside the loop")
    if running is not None and running is not loop:
        raise PipelineError("rxbot.rx: subscribed inside one event loop with a scheduler of another loop")
    if running is None and loop.is_running():
        raise PipelineError(
            "rxbot.rx: subscribed from a thread other than the event loop's; subscribe on the loop's "
            "thread (e.g. with loop.call_soon_threadsafe)")
    return loop


def _subscribe_run(steps: Sequence[Any], path: str, observer: Any, scheduler: Any,
                   source: Observable | None, item: Any, on_report: Callable[[Any], None],
                   pipes: Sequence[Any] = ()) -> Disposable:
    """Start one run of ``steps`` for one subscriber; see the module docstring for the
    lifecycle. ``source`` None means "a Pipe": the steps are fed the trigger ``item``.
    ``pipes``: the Pipe the steps came from, if any (what ``BotFrame.bots`` shows)."""
    from .observe import live
    from .engine.compiler import Builder
    from .plan import lower
    from .engine.context import RunContext
    from .engine.lifecycle import make_room_for, run_scope, subscribe_until_end
    from .engine.operators import trigger
    from .tree.walk import nodes_in

    loop = _loop_of(scheduler)
    state = {"disposed": False, "ended": False}

    def forward(value: Any) -> None:
        if state["disposed"]:
            return
        try:
            observer.on_next(value)
        except Exception as exc:  # the subscriber's own code failed: end the run with it
            ctx.fail(exc)

    ctx = RunContext(loop)
    root = StepId.root(path)

    async def drive() -> None:
        inner = None
        try:
            make_room_for(steps, root)
            live.started(ctx, pipes)  # BotFrame.bots / debug() list its steps, as run_pipes does
            async with run_scope(ctx, nodes_in(steps), after_shutdown=lambda: live.ended(ctx)):
                try:
                    builder = Builder(ctx)
                    plan = builder.follow(lower(steps, root))  # decided once, as a run's pipes are
                    ops, _ = builder.build(steps, [], root, cuts=plan.spans)
                    head = trigger(ctx, item) if source is None else source
                    done, inner = subscribe_until_end(ctx, head.pipe(*ops), forward)
                    await asyncio.wait([done, ctx.failed], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if inner is not None:
                        inner.dispose()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            ctx.fail(exc)
        finally:
            ctx.report.error = ctx.error
            on_report(ctx.report)
        state["ended"] = True
        if state["disposed"]:
            return
        if ctx.error is not None:
            observer.on_error(ctx.error)
        else:
            observer.on_completed()

    driver = loop.create_task(drive())

    def dispose() -> None:
        state["disposed"] = True
        if not state["ended"] and not driver.done():
            driver.cancel()

    return Disposable(dispose)


def _steps_of(pipe_or_steps: Any, who: str) -> tuple:
    if isinstance(pipe_or_steps, Pipe):
        pipe_or_steps._adopt()  # it runs as an Observable now, not with BotFrame.run()
        return list(pipe_or_steps.steps), pipe_or_steps
    if isinstance(pipe_or_steps, (list, tuple)):
        if not pipe_or_steps:
            raise TypeError(f"{who}: needs at least one step")
        return _to_steps(pipe_or_steps, who), None
    raise TypeError(f"{who}: argument 'pipe_or_steps' must be a Pipe or a list of steps; "
                    f"got {type(pipe_or_steps).__name__}")


def to_observable(pipe_or_steps: Pipe | Sequence[Any], item: Any = 0) -> Observable:
    """A cold Observable of what the last step of ``pipe_or_steps`` emits.

    Each subscription is one run, fed the trigger ``item`` (databot's ``0``). A Pipe
    given here is taken out of ``BotFrame.run()``'s list; ``pipe.finished()`` and
    ``pipe.report`` are updated when a subscription's run ends. A Loop over a generator
    can be consumed only once, so such an Observable is good for one subscription.
    """
    steps, pipe = _steps_of(pipe_or_steps, "to_observable")
    path = (pipe.name if pipe is not None and pipe.name else "Rx")

    def on_report(report: Any) -> None:
        if pipe is not None:
            pipe.report = report
            pipe._finished = True

    def subscribe(observer: Any, scheduler: Any = None) -> Disposable:
        return _subscribe_run(steps, path, observer, scheduler, None, item, on_report,
                              [] if pipe is None else [pipe])

    return reactivex.create(subscribe)


def as_operator(*steps: Any, name: str | None = None) -> Operator:
    """An Rx operator running ``steps`` on each item of its source, for ``source.pipe(...)``.

    The steps behave as in a Pipe: return-value rules, routes, async steps with their
    concurrency, boost, exception policies. The source pushes. rxbot cannot slow a plain
    Observable down, so items wait at the first async step's queue when it is full.
    ``operator.report`` is the RunReport of the latest subscription that ended.
    """
    if not steps:
        raise TypeError("as_operator: needs at least one step")
    if len(steps) == 1 and isinstance(steps[0], Pipe):
        tree, _ = _steps_of(steps[0], "as_operator")
    else:
        tree = _to_steps(steps, "as_operator")
    path = name or "Rx"

    def operator(source: Observable) -> Observable:
        def subscribe(observer: Any, scheduler: Any = None) -> Disposable:
            return _subscribe_run(tree, path, observer, scheduler, source, None, on_report)

        return reactivex.create(subscribe)

    def on_report(report: Any) -> None:
        operator.report = report  # type: ignore[attr-defined]

    operator.report = None  # type: ignore[attr-defined]
    operator.steps = tree  # type: ignore[attr-defined]
    operator.__qualname__ = operator.__name__ = f"as_operator({', '.join(s.label() for s in tree)})"
    return operator


__all__ = ["op", "from_observable", "FromObservable", "to_observable", "as_operator"]
