"""The stats hook: per-step counters handed to a callback while a run goes on.

Metrics exporters (Prometheus, OpenTelemetry, a log line every minute) need the numbers
of the run report *during* the run, not only at its end. Set a hook and rxbot calls it
every ``interval`` seconds and once more when the run ends::

    def hook(snapshot):
        for step in snapshot["steps"]:
            print(step["step"], step["inp"], step["out"])

    BotFrame.run(stats=hook, interval=5)           # this run only
    config.stats_hook, config.stats_interval = hook, 5   # every run

``snapshot`` is :meth:`RunReport.to_dict() <rxbot.engine.context.RunReport.to_dict>`
(``seconds``, ``totals``, ``steps`` in pipe order with ``inp``, ``out``, ``filtered``,
``consumed``, ``dropped``, ``failed``, ``retried``, ``cancelled``; ``dead_letters``)
plus ``"final"``: False while running, True for the last call. Counters only grow, so
they map to Prometheus counters directly (``examples/prometheus_exporter.py``). The hook
runs in the event loop: keep it quick. One that raises is logged and not called again;
the run goes on.

A hook turns counting on for sync steps (like ``config.progress`` does).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

from ..config import config

log = logging.getLogger("rxbot")

StatsHook = Callable[[Dict[str, Any]], Any]


def snapshot(report: Any, started: float, final: bool) -> Dict[str, Any]:
    """The report's counters now, as :func:`rxbot.observe.report_io.to_dict` gives them."""
    from .report_io import to_dict

    data = to_dict(report)
    data["seconds"] = round(time.perf_counter() - started, 6)
    data["final"] = final
    return data


class StatsWatch:
    """Calls ``hook(snapshot)`` every ``interval`` seconds and once at :meth:`close`."""

    def __init__(self, report: Any, hook: StatsHook, interval: float, started: float) -> None:
        if not callable(hook):
            raise TypeError(f"config.stats_hook must be a callable taking one dict; got {hook!r}")
        if not interval > 0:
            raise ValueError(f"config.stats_interval must be > 0 seconds; got {interval!r}")
        self.report, self.hook, self.interval, self.started = report, hook, interval, started
        self.broken = False
        #: called before each snapshot to bring live counters up to date
        self.refresh: Callable[[], None] = lambda: None

    def call(self, final: bool) -> None:
        if self.broken:
            return
        try:
            self.refresh()
            self.hook(snapshot(self.report, self.started, final))
        except Exception:
            self.broken = True
            log.exception("the stats hook %r raised; it will not be called again in this run", self.hook)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.call(False)

    def close(self) -> None:
        self.call(True)


def publish_live(ctx: Any) -> None:
    """Bring the counts of fused sync steps up to date: their segments count into local
    lists and add them to the steps' stats only when asked (or when they finish)."""
    for segment in list(getattr(ctx, "segments", ())):
        segment.publish_counts(final=False)


def attach(ctx: Any, pipes: Sequence[Any]) -> None:
    """Start the run's watchers — progress bars and the stats hook — as the run's own
    tasks; their last update runs at shutdown, after the steps have published counts."""
    report = ctx.report
    # the report says it is running, since when, and (where the sources' sizes are
    # known) how many items to expect: report.summary() gives an ETA from them
    from .progress import source_size

    report.running, report.started = True, ctx.started
    report.expected = {i: source_size(pipe) for i, pipe in enumerate(pipes, start=1)}
    ctx.on_shutdown(lambda: setattr(report, "running", False))
    if config.progress:
        from .progress import Progress

        def in_flight(key: Any) -> int:
            return int(getattr(ctx.runtimes.get(key), "in_flight", 0) or 0)

        progress = Progress(pipes, ctx.report, in_flight=in_flight)
        progress.refresh = lambda: publish_live(ctx)
        ctx.spawn(progress.run())
        ctx.on_shutdown(progress.close)
    hook = getattr(config, "stats_hook", None)
    if hook is not None:
        watch = StatsWatch(ctx.report, hook, float(config.stats_interval), ctx.started)
        watch.refresh = lambda: publish_live(ctx)
        ctx.spawn(watch.run())
        ctx.on_shutdown(watch.close)


@contextlib.contextmanager
def hooked(hook: Optional[StatsHook], interval: Optional[float]) -> Iterator[None]:
    """Within the block, use ``hook``/``interval`` instead of the configured ones."""
    saved = (config.stats_hook, config.stats_interval)
    if hook is not None:
        config.stats_hook = hook
    if interval is not None:
        config.stats_interval = interval
    try:
        yield
    finally:
        config.stats_hook, config.stats_interval = saved


__all__ = ["StatsHook", "StatsWatch", "attach", "hooked", "snapshot", "publish_live"]
