"""BotFrame: the registry of built pipes and the entry points that run them."""
from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING, Any, Callable, Iterator, List, Optional, Sequence

from . import registry
from .config import config
from .errors import PipelineError
from .replay.session import session as replay_session

if TYPE_CHECKING:
    from .engine.context import RunReport


class _LiveBots:
    """``BotFrame.bots``: read on the class, a fresh list each time (see rxbot.observe.live)."""

    def __get__(self, obj: Any, owner: Any = None) -> List[Any]:
        from .observe.live import bots

        return bots()


class _FrameType(type):
    """BotFrame's metaclass: gives notebooks a type to attach BotFrame's picture to
    (see :mod:`rxbot.draw.notebook`), since BotFrame is used as a class."""


class BotFrame(metaclass=_FrameType):
    """databot's run façade. Every Pipe built and not yet run is registered here;
    ``BotFrame.run()`` runs them all concurrently and returns when all have finished."""

    #: the steps of the run going on (or of the last run): objects with ``label``,
    #: ``path``, the report's counts and ``in_flight`` (databot listed its bots here)
    bots = _LiveBots()
    #: the tree's registry of built pipes (``Pipe(...)`` registers there, see rxbot.registry)
    _pending: List[Any] = registry.pending
    #: when not None, run()/run_async() only record the pipes here (``rxbot render``
    #: uses this to draw a script's pipes without running them)
    _dry_run: List[Any] | None = None
    #: BotFrame.render() was used: pipes left pending at exit were meant to be drawn only
    _drawn = False
    #: the report of the last run that ended (also failed or interrupted ones);
    #: ``rxbot run --report`` prints it
    last_report: Any = None
    #: ``(pipes, report)`` of that run (``rxbot run --render`` draws it)
    last_run: Any = None

    @classmethod
    def dry_run(cls) -> "_DryRun":
        """Context manager: inside it, runs record their pipes instead of running them.

        >>> with BotFrame.dry_run() as recorded:
        ...     exec(script)          # builds pipes, calls BotFrame.run()
        >>> recorded                  # every pipe the script built, in order
        """
        return _DryRun(cls)

    @classmethod
    def register(cls, pipe: Any) -> None:
        registry.register(pipe)

    @classmethod
    def unregister(cls, pipe: Any) -> None:
        registry.unregister(pipe)

    @classmethod
    def pipes(cls) -> List[Any]:
        """The pipes the next run would run."""
        return list(cls._pending)

    @classmethod
    def _take(cls, pipes: Sequence[Any] | None) -> List[Any]:
        chosen = list(cls._pending) if pipes is None else list(pipes)
        for p in chosen:
            cls.unregister(p)
        return chosen

    @classmethod
    async def run_async(cls, pipes: Sequence[Any] | None = None, *, cluster: Any = None,
                        shards: int | None = None, watch: Any = None, resume: bool | None = None,
                        redrive: bool | None = None) -> "RunReport":
        """Run inside an already running event loop (Jupyter, an aiohttp app, ...).

        ``cluster``/``shards``: run sharded on a Dask cluster (see :meth:`run`).
        ``watch=True`` (or ``'HOST:PORT'``; default ``config.watch``) serves the live
        view of the run on 127.0.0.1 and prints its address (see :mod:`rxbot.draw.watch`)."""
        if resume is not None:  # for this run only (docs/resume.md)
            with _setting("resume", bool(resume)):
                return await cls.run_async(pipes, cluster=cluster, shards=shards, watch=watch, redrive=redrive)
        if redrive is not None:  # for this run only (docs/when-items-fail.md)
            with _setting("redrive", bool(redrive)):
                return await cls.run_async(pipes, cluster=cluster, shards=shards, watch=watch)
        from .cluster import run_sharded, sharding_requested
        from .engine import run_pipes

        chosen = cls._take(pipes)
        if in_boost_worker_bootstrap():  # see there: the pipes run in the main process only
            from .engine import RunReport

            return RunReport()
        if cls._dry_run is not None:
            _record(cls._dry_run, chosen, run=True)
            from .engine import RunReport

            return RunReport()
        if not chosen:
            from .engine import RunReport

            return RunReport()
        watch = config.watch if watch is None else watch
        if config.trace is not None and (config.redrive or sharding_requested(cluster, shards)):
            raise PipelineError(
                f"config.trace ({config.trace!r}) follows the items of the pipes' sources in this process; "
                f"{'a redrive feeds stored dead letters instead' if config.redrive else 'a sharded run splits them over workers'}"
                ", which are not traced: run it without --trace (RXBOT_TRACE, config.trace)")
        claim_pipes(chosen)
        try:
            if sharding_requested(cluster, shards):  # scale out: docs/scaling.md
                if watch is None or watch is False:
                    return await run_sharded(chosen, cluster, shards)
                from .draw.watch import follow  # the shards' counts, summed on this side

                sharded: "RunReport" = await follow(
                    watch, chosen, lambda observe: run_sharded(chosen, cluster, shards, observe=observe))
                return sharded
            # replay mode joins the run through the engine's public hooks (rxbot.engine.hooks)
            hooks = replay_session(chosen) if config.replay_mode else None
            if config.resume:  # checkpoints, resumed after a hard kill (rxbot.durable)
                hooks = _resume_hooks(chosen, hooks)
            if config.redrive:  # only the stored dead letters, from their failing steps
                return await _redrive(chosen, hooks)
            hooks = _with_letters(chosen, hooks)  # durable dead letters
            if config.trace is not None:  # item traces: rxbot.observe.trace
                hooks = _with_trace(chosen, hooks)
            if watch is None or watch is False:
                return await run_pipes(chosen, hooks=hooks)
            from .draw.watch import follow

            report: "RunReport" = await follow(
                watch, chosen, lambda observe: run_pipes(chosen, hooks=hooks, observe=observe))
            return report
        finally:
            for p in chosen:
                p._running = False
            BotFrame.last_report = _report_of(chosen)
            BotFrame.last_run = (chosen, BotFrame.last_report)

    @classmethod
    def run(cls, pipes: Sequence[Any] | None = None, *, stats: Any = None,
            interval: float | None = None, cluster: Any = None, shards: int | None = None,
            watch: Any = None, resume: bool | None = None, redrive: bool | None = None) -> "RunReport":
        """Run every pending pipe to completion; return the run report.

        ``resume=True`` (or ``config.resume``): checkpoint the run so that, killed at any
        moment, the same call continues from the last checkpoint; Inserts into MySQL and
        SQLite are then exactly-once, other sinks at-least-once (docs/resume.md).

        ``redrive=True`` (``rxbot redrive SCRIPT``): run only the dead letters stored by
        earlier runs, each from the step where it failed (docs/when-items-fail.md).

        Raises the first exception of a failed run (``raise`` policy), with the step
        name and item attached as a note; uncaught, it prints short (the user's frames
        and the step/item line; ``RXBOT_DEBUG=1`` for everything). Ctrl-C prints one
        line and the report instead of a traceback.

        ``stats``: a callable given the per-step counters every ``interval`` seconds
        and once at the end (see :mod:`rxbot.observe.stats`); same as ``config.stats_hook``.

        ``cluster`` (a Dask scheduler address, a ``distributed.Client``, or True for a
        local cluster) and/or ``shards=N`` run every pipe as N shards on the cluster's
        workers, each on its share of the source (docs/scaling.md).

        ``watch=True`` serves a live view of the run (see :meth:`run_async`).
        """
        if in_boost_worker_bootstrap():  # see there: the pipes run in the main process only
            cls._take(pipes)
            from .engine import RunReport

            return RunReport()
        from .stopping import release_thread_loop, run_until_stopped, thread_loop

        if cls._dry_run is not None:
            loop, made = thread_loop()
            try:
                recorded: "RunReport" = run_until_stopped(cls.run_async(pipes), loop, _print_stop(()))
            finally:
                release_thread_loop(loop, made)
            return recorded
        from . import errors_display
        from .observe.stats import hooked

        errors_display.install()
        from .observe.logs import apply

        apply(config.log_level)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise PipelineError(
                "BotFrame.run() was called inside a running event loop; use "
                "'await BotFrame.run_async()' (or 'await pipe.run_async()') there instead"
            )
        chosen = cls._take(pipes)
        # the thread's own loop, as databot: made and set when there is none, and left set
        # and open afterwards (rxbot.stopping)
        loop, made = thread_loop()
        try:
            with hooked(stats, interval), _setting("resume", config.resume if resume is None else bool(resume)), \
                    _setting("redrive", config.redrive if redrive is None else bool(redrive)):
                report: "RunReport" = run_until_stopped(
                    cls.run_async(chosen, cluster=cluster, shards=shards, watch=watch), loop,
                    _print_stop(chosen))
                return report
        except KeyboardInterrupt as exc:
            raise errors_display.mark_interrupted(exc, _report_of(chosen))
        finally:
            release_thread_loop(loop, made)

    @classmethod
    def render(cls, path: str, format: str | None = None, pipes: Sequence[Any] | None = None,
               **kwargs: Any) -> "str | tuple[str, str]":
        """Draw every pending pipe (they are not run or consumed); the path(s) written,
        see :func:`rxbot.draw.render.render`."""
        from .draw.render import render

        chosen = list(cls._pending) if pipes is None else list(pipes)
        if cls._dry_run is not None:  # ``rxbot render`` draws what the script would draw
            _record(cls._dry_run, [p for p in chosen if p not in cls._dry_run])
            return path
        cls._drawn = True
        return render(chosen, path, format=format, **kwargs)

    @classmethod
    def _repr_mimebundle_(cls, include: Any = None, exclude: Any = None) -> Any:
        """The graph of the pending pipes, for notebooks."""
        from .draw.notebook import frame_bundle

        return frame_bundle(cls.pipes())

    @classmethod
    def explain(cls, pipes: Sequence[Any] | None = None, source: bool = False) -> str:
        """How the pending pipes (or ``pipes``) would run, in words: which steps run
        fused and whether they are counted, how each source hands its elements on, how
        each async step is fed, which executor each route and BlockedJoin gets, and why a
        step is not fused or a fast path does not apply (see :mod:`rxbot.plan`), and which
        sinks are exactly once and which at least once after a kill (``resume=True``) or a
        lost worker (a sharded run). Nothing is run or consumed. ``source=True``: each
        fused segment's generated code too, as the run compiles it (the text a traceback
        through it shows)."""
        from .durable.resume import delivery_of
        from .engine.compiler import segment_source
        from .plan import explain, plan_of
        from .observe.report_io import delivery_lines

        chosen = list(cls._pending) if pipes is None else list(pipes)
        delivery = delivery_of(chosen)
        code = segment_source if source else None
        per_step = _builds_per_step()  # the plan the run builds, not another one
        return "\n".join(line for k, p in enumerate(chosen) for line in
                         [explain([plan_of(p, k + 1, per_step)], code),
                          *delivery_lines({f"P{k + 1}": delivery[f"P{k + 1}"]})])

    @classmethod
    def debug(cls) -> str:
        """Log (INFO, ``rxbot`` logger) and return a snapshot of the live run: every
        step with its in/out/failed counts and the items it holds. Safe to call from a
        step, e.g. a Timer's, as databot's examples do; after a run it describes that run."""
        from .observe.live import debug

        return debug()

    @classmethod
    def clear(cls) -> None:
        """Forget pending pipes without running them."""
        cls._pending.clear()


def in_boost_worker_bootstrap() -> bool:
    """True while a ``boost='process'`` worker started by 'forkserver' or 'spawn' (or the
    forkserver itself) imports the main script again (as ``__mp_main__``, to find the functions it is sent by name).

    A databot script has no ``if __name__ == '__main__':`` guard, so that import reaches
    its ``BotFrame.run()``: running the pipes there would do their work (and their
    writes) once more per worker. Such a run does nothing and returns an empty report;
    the script's other top-level code still runs there (docs/boost.md says so)."""
    import multiprocessing

    # multiprocessing's own test for its "bootstrapping phase" (set in a spawned child and
    # in the forkserver while they import the main script)
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def claim_pipes(pipes: Sequence[Any]) -> None:
    """Mark ``pipes`` as running, or refuse: one Pipe object run twice at once would run
    its steps (and its nodes' ``init``/``close``) twice over shared state, without a word."""
    seen: set = set()
    for p in pipes:
        if getattr(p, "_running", False) or id(p) in seen:
            raise PipelineError(
                f"pipe {p.label()!r} is already running; a Pipe object runs once at a time "
                f"(await the first run, or build a second Pipe)")
        seen.add(id(p))
    for p in pipes:
        p._running = True


class _DryRun:
    def __init__(self, frame: type[BotFrame]) -> None:
        self.frame = frame

    def __enter__(self) -> List[Any]:
        self.frame._dry_run = Recorded()
        return self.frame._dry_run

    def __exit__(self, *exc: Any) -> None:
        recorded = self.frame._dry_run if self.frame._dry_run is not None else Recorded()
        # pipes built but never passed to run() are part of the script too
        _record(recorded, [p for p in self.frame._take(None) if p not in recorded])
        self.frame._dry_run = None


class Recorded(list):
    """The pipes a dry run recorded, in order, and for each the number of the
    ``BotFrame.run()`` call that would have run it (``runs``; None: never run), so that a
    script with several runs is drawn run by run."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: List[Optional[int]] = []


def _record(recorded: List[Any], pipes: Sequence[Any], run: bool = False) -> None:
    """Add ``pipes`` to a dry run's record; ``run``: they are one ``BotFrame.run()``."""
    runs = getattr(recorded, "runs", None)
    if runs is not None:
        number = max((r for r in runs if r is not None), default=0) + 1 if run else None
        runs.extend([number] * len(pipes))
    recorded.extend(pipes)


@contextlib.contextmanager
def _setting(name: str, value: Any) -> Iterator[None]:
    """``config.<name> = value`` for the length of one run."""
    saved = getattr(config, name)
    setattr(config, name, value)
    try:
        yield
    finally:
        setattr(config, name, saved)


def _builds_per_step() -> bool:
    """Would :meth:`BotFrame.run` under the current settings build each top-level step
    alone? It does when the hooks it chooses (see ``run_async``) put an operator between
    any two steps (``RunHooks.rebuilds``): replay mode's, a resumed run's, a redrive's."""
    from .durable.redrive import RedriveHooks
    from .durable.resume import ResumeHooks
    from .replay.session import ReplaySession

    if config.redrive:
        return RedriveHooks.rebuilds
    if config.replay_mode:
        return ReplaySession.rebuilds
    return bool(config.resume) and ResumeHooks.rebuilds


def _resume_hooks(pipes: Sequence[Any], hooks: Any) -> Any:
    """The hooks of a resumed run (rxbot.durable); replay mode is for the development
    loop, not for resuming, and the two do not combine."""
    if hooks is not None:
        raise PipelineError("resume and replay mode cannot be combined: replay re-feeds a failed step's "
                            "input while developing, resume continues a killed run; choose one")
    from .durable import resume_hooks

    return resume_hooks(pipes)


def _with_letters(pipes: Sequence[Any], hooks: Any) -> Any:
    from .durable.deadletters import with_letters

    return with_letters(pipes, hooks)


def _with_trace(pipes: Sequence[Any], hooks: Any) -> Any:
    """``hooks`` with an item tracer (``config.trace``), checked before the run starts; a
    RunHooks that only watches when there were none (the build stays the fused one)."""
    from .engine.hooks import RunHooks
    from .observe.trace import tracer_for

    tracer = tracer_for(pipes, config.trace, "config.trace (env RXBOT_TRACE)")
    if hooks is None:
        hooks = RunHooks()
        hooks.rebuilds = False
    hooks.tracer = tracer
    return hooks


async def _redrive(pipes: Sequence[Any], hooks: Any) -> "RunReport":
    """Run the dead letters again (rxbot.durable.redrive); alone, not with replay or resume."""
    if hooks is not None:
        raise PipelineError("redrive runs the stored dead letters alone; it cannot be combined with replay "
                            "mode or resume")
    from .durable.redrive import redrive
    from .engine import run_pipes

    report: "RunReport" = await redrive(pipes, lambda chosen, h: run_pipes(chosen, hooks=h))
    return report


def _print_stop(pipes: Sequence[Any]) -> Callable[[int], None]:
    """What a run stopped by a signal prints: for SIGTERM (and any signal but Ctrl-C) the one
    line and the report here, before ``SystemExit(143)``; a Ctrl-C's ``KeyboardInterrupt``
    carries the report to whoever prints it (the excepthook, ``rxbot run``)."""
    def on_stop(signum: int) -> None:
        if signum != signal.SIGINT:
            from .errors_display import print_interruption

            print_interruption(_report_of(pipes), "terminated")

    return on_stop


def _report_of(pipes: Sequence[Any]) -> "RunReport | None":
    """The report of the run these pipes were part of (set when the run ends)."""
    return next((p.report for p in pipes if getattr(p, "report", None) is not None), None)


def _render(pipes: Sequence[Any], path: str, format: str | None = None, **kwargs: Any) -> Any:
    from .draw.render import render

    return render(pipes, path, format=format, **kwargs)


class _Watchers:
    """The façade's run observer (see ``rxbot.engine.hooks.RunObserver``): the live
    listing of ``BotFrame.bots``/``debug()``, then progress bars and the stats hook."""

    def started(self, ctx: Any, pipes: Sequence[Any]) -> None:
        from .observe import live

        live.started(ctx, pipes)

    def running(self, ctx: Any, pipes: Sequence[Any]) -> None:
        from .observe.stats import attach

        attach(ctx, pipes)

    def ended(self, ctx: Any) -> None:
        from .observe import live

        live.ended(ctx)


def _report_view(name: str, report: Any, *args: Any) -> Any:
    """How a run report reads (see ``rxbot.display.set_report_view``)."""
    if name == "html":
        from .draw.report_html import report_html

        return report_html(report)
    from .observe import report_io

    view = {"text": report_io.to_text, "dict": report_io.to_dict, "json": report_io.to_json,
            "totals": report_io.totals, "summary": report_io.summary}[name]
    return view(report, *args)


def _observe_runs() -> None:
    from .display import set_report_view
    from .engine.hooks import observe_runs

    observe_runs(_Watchers())  # type: ignore[arg-type]
    set_report_view(_report_view)


_observe_runs()
registry.provide("run", BotFrame.run)
registry.provide("run_async", BotFrame.run_async)
registry.provide("render", _render)
registry.provide("explain", lambda pipes, source=False: BotFrame.explain(pipes, source))


def _registered(pipe: Any) -> None:
    from .unrun import watch  # warn at exit if it is never run

    watch(BotFrame.pipes, lambda: BotFrame._drawn or BotFrame._dry_run is not None)


registry.provide("registered", _registered)

__all__ = ["BotFrame"]
