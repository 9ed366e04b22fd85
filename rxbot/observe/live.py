"""What ``BotFrame.bots`` and ``BotFrame.debug()`` show: the steps of the runs going on
now (or of the last one, once it has ended) with their live counts.

databot listed its bots (one task per step) and logged them from ``debug()``; its
examples call ``BotFrame.debug()`` from a Timer step to watch a crawl. rxbot has no
bot per step, so each entry here is one step of the run, with the same counters as the
run report plus the items it holds at this moment.
"""
from __future__ import annotations

import logging
import time
from typing import Any, List, Optional, Sequence, Set

from ..engine.context import RunContext
from .report_io import order as _order

log = logging.getLogger("rxbot")

#: runs in progress, in start order
_running: List[Any] = []
#: the run that ended last (what ``bots``/``debug()`` describe between runs)
_last: List[Any] = []


class _Run:
    __slots__ = ("ctx", "pipes", "done")

    def __init__(self, ctx: RunContext, pipes: Sequence[Any]) -> None:
        self.ctx = ctx
        self.pipes = list(pipes)
        self.done = False


def started(ctx: RunContext, pipes: Sequence[Any]) -> None:
    """The engine calls this when a run starts."""
    _running.append(_Run(ctx, pipes))


def ended(ctx: RunContext) -> None:
    """The engine calls this when a run has ended, however it ended."""
    for run in list(_running):
        if run.ctx is ctx:
            _running.remove(run)
            run.done = True
            _last[:] = [run]


class BotInfo:
    """One step of a run, as ``BotFrame.bots`` lists it (databot's name for the entry).

    ``label`` names the step as the report and the graph do, ``path`` places it
    (``P1[3] parse``: pipe 1, step 3); ``inp``/``out``/``filtered``/``dropped``/
    ``failed``/``retried``/``cancelled`` are the run report's counters, read live;
    ``in_flight`` is the number of items the step holds right now (async steps and
    sources; sync steps run inline and hold none); ``stopped`` is true once the step's
    pipe has finished (databot's misspelt ``stoped`` reads the same). ``counted`` is
    False for a sync step whose items are not counted (``config.metrics`` off and the
    ``raise`` policy: counting costs time on the hottest path); its ``inp``, ``out`` and
    ``filtered`` are then None.
    """

    __slots__ = ("label", "path", "stats", "counted", "_runtime", "_run")

    def __init__(self, runtime: Any, run: _Run, counted: bool = True) -> None:
        self.label: str = runtime.label
        self.path: str = runtime.path
        self.stats = runtime.stats
        self.counted = counted
        self._runtime = runtime
        self._run = run

    def __getattr__(self, name: str) -> Any:
        if name in ("inp", "out", "filtered") and not self.counted:
            return None
        if name in ("inp", "out", "filtered", "dropped", "failed", "retried", "cancelled"):
            return getattr(self.stats, name)
        raise AttributeError(name)

    @property
    def in_flight(self) -> int:
        return 0 if self._run.done else max(0, self._runtime.in_flight)

    @property
    def capacity(self) -> Optional[int]:
        """How many items the step may hold at once (its concurrency); meaningful for the
        steps that hold items (async and boosted steps and nodes)."""
        value = getattr(self._runtime, "concurrency", None)
        return int(value) if value else None

    @property
    def stopped(self) -> bool:
        if self._run.done:
            return True
        index = _pipe_index(self.path)
        pipes = self._run.pipes
        return index is not None and index < len(pipes) and bool(pipes[index].finished())

    stoped = stopped

    def __repr__(self) -> str:
        s = self.stats
        return (f"<BotInfo {self.path}: in={s.inp} out={s.out} failed={s.failed} "
                f"in_flight={self.in_flight}{' stopped' if self.stopped else ''}>")


def _pipe_index(path: str) -> int | None:
    pipe, _ = _order(path)
    return pipe - 1 if pipe else None


def _shown_runs() -> List[_Run]:
    return list(_running) if _running else list(_last)


def bots() -> List[BotInfo]:
    """Every step of the runs going on now (or of the last run), in pipe and step order.

    Counts of fused sync steps are published first, so they are current too (they are
    only counted when ``config.metrics`` is on or the step's policy is not ``raise``)."""
    out: List[BotInfo] = []
    for run in _shown_runs():
        uncounted: Set[int] = set()
        for seg in list(run.ctx.segments):
            seg.publish_counts(final=False)
            if not seg.counting:
                uncounted.update(id(rt) for rt in seg.runtimes)
        runtimes = sorted(run.ctx.runtimes.values(), key=lambda rt: _order(rt.path))
        out.extend(BotInfo(rt, run, id(rt) not in uncounted) for rt in runtimes)
    return out


def snapshot() -> str:
    """A readable description of :func:`bots`: one line per step."""
    runs = _shown_runs()
    if not runs:
        return "rxbot: no run yet"
    lines = []
    for run in runs:
        ctx = run.ctx
        state = "ended after" if run.done else "running for"
        seconds = ctx.report.seconds if run.done else time.perf_counter() - ctx.started
        entries = [b for b in bots() if b._run is run]
        held = sum(b.in_flight for b in entries)
        lines.append(f"rxbot: {len(run.pipes)} pipe(s) {state} {seconds:.2f}s, "
                     f"{len(entries)} step(s), {held} item(s) in flight")
        for b in entries:
            s = b.stats
            counts = f"in={s.inp} out={s.out}" if b.counted else "in=- out=-"
            extra = "".join(f" {k}={getattr(s, k)}" for k in ("filtered", "dropped", "retried", "cancelled")
                            if getattr(s, k))
            lines.append(f"  {b.path}: {counts} failed={s.failed}{extra} "
                         f"in_flight={b.in_flight}{' (stopped)' if b.stopped else ''}")
        if any(not b.counted for b in entries):
            lines.append("  (in=- out=-: a sync step under the raise policy; set config.metrics = True "
                         "to count its items)")
        from .trace import report_trace_lines

        lines += ["  " + line for line in report_trace_lines(ctx.report)]  # --trace: the traced items so far
    return "\n".join(lines)


def debug() -> str:
    """Log :func:`snapshot` on the ``rxbot`` logger (INFO) and return it."""
    text = snapshot()
    log.info("%s", text)
    return text


__all__ = ["BotInfo", "bots", "snapshot", "debug", "started", "ended"]
