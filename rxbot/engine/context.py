"""Everything one run owns: its tasks, its step runtimes, its failure, its report."""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set, Tuple

from reactivex.scheduler.eventloop import AsyncIOScheduler

from ..config import config
from ..display import report_view
from ..errors import StepError, short_repr
from ..tree.walk import StepId
from .gate import Beat, Boundary, Gate, halt
from .hooks import Deferrals, StepFailure
from .policy import StepRuntime, StepStats

log = logging.getLogger("rxbot")

#: seconds between two publications of the fused steps' live counts
LIVE_COUNTS_EVERY = 0.05


@dataclass
class RunReport:
    """Per-step accounting of a finished run (see :class:`~rxbot.engine.policy.StepStats`)."""

    steps: Dict[str, StepStats] = field(default_factory=dict)
    dead_letters: List[StepError] = field(default_factory=list)
    seconds: float = 0.0
    error: BaseException | None = None
    #: steps whose output nobody consumes (end of a pipe or of a discarding branch): a
    #: None they return is an item consumed, not filtered
    sinks: Set[str] = field(default_factory=set)
    #: (step, share, join) of each route whose counter ``out`` is what it matched, not
    #: what went on after it (the report's views show both, see :mod:`rxbot.observe.report_io`)
    routes: Set[Tuple[str, bool, bool]] = field(default_factory=set)
    #: (step, item) of every boosted call still running when the shutdown grace ran out
    abandoned: List[Tuple[str, Any]] = field(default_factory=list)
    #: top-level steps whose raise was deferred (see :mod:`rxbot.engine.hooks`)
    failures: List[StepFailure] = field(default_factory=list)
    #: the run is going on (``pipe.report`` during a run): the text says so
    running: bool = False
    #: ``time.perf_counter()`` when the run started (seconds so far while running)
    started: float = 0.0
    #: pipe number -> items its source will emit, where that is known (for an ETA)
    expected: Dict[int, Optional[int]] = field(default_factory=dict)
    #: every step's checked ledger line, None where the step is not counted (see
    #: :mod:`rxbot.engine.ledger`); filled when the run ends
    ledger: Dict[str, Any] = field(default_factory=dict)
    #: what nodes with a ``report_data()`` add, by label (HttpLoader: its numbers per
    #: host), taken when the run ends; :meth:`node_numbers` reads them live mid-run
    nodes: Dict[str, Any] = field(default_factory=dict)
    node_sources: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def node_numbers(self) -> Dict[str, Any]:
        """The nodes' own numbers: live while the run goes on, final afterwards."""
        if self.nodes or not self.node_sources:
            return self.nodes
        out: Dict[str, Any] = {}
        for label, source in list(self.node_sources.items()):
            try:
                out[label] = source()
            except Exception:  # numbers must never fail a run or its view
                log.debug("rxbot: report_data of %r failed", label, exc_info=True)
        return out

    def __getitem__(self, path: str) -> StepStats:
        return self.steps[path]

    def find(self, label: str) -> StepStats:
        """The stats of the first step (in flow order) labelled ``label``."""
        for path in sorted(self.steps, key=_order):
            if isinstance(path, StepId):  # its label, whole: "fails" is not "one in seven fails"
                if path.label == label or path == label:
                    return self.steps[path]
            elif path == label or path.endswith(" " + label):  # a plain name (a replayed source)
                return self.steps[path]
        raise KeyError(label)

    # how the report reads (text, data, JSON, HTML) is above the engine
    # (rxbot.observe.report_io, rxbot.draw.report_html), reached through rxbot.display's registry
    def totals(self) -> Dict[str, Any]:
        """``items`` and every event counter summed (see :func:`rxbot.observe.report_io.totals`)."""
        return report_view("totals", self)  # type: ignore[no-any-return]

    def summary(self) -> str:
        """One line — items, failures, rate and, while running, the ETA where the
        sources' sizes are known (see :func:`rxbot.observe.report_io.summary`)."""
        return report_view("summary", self)  # type: ignore[no-any-return]

    def to_dict(self) -> Dict[str, Any]:
        """The report as plain data, ready for JSON (see :func:`rxbot.observe.report_io.to_dict`)."""
        return report_view("dict", self)  # type: ignore[no-any-return]

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text (``rxbot run --report json`` prints this)."""
        return report_view("json", self, indent)  # type: ignore[no-any-return]

    def _repr_html_(self) -> str:
        """A table of the steps' counts, for notebooks."""
        return report_view("html", self)  # type: ignore[no-any-return]

    def __str__(self) -> str:
        return report_view("text", self)  # type: ignore[no-any-return]


def _order(path: str) -> tuple:
    """Flow order: pipe, then the position numbers of every level (a StepId carries
    them; a key that is not a step's id, e.g. a replay source, sorts last)."""
    return path.order() if isinstance(path, StepId) else (float("inf"),)


class RunContext:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.scheduler = AsyncIOScheduler(loop)
        self.tasks: set = set()
        self.stopped = False
        self.error: BaseException | None = None
        self.failed: asyncio.Future = loop.create_future()
        self.runtimes: Dict[str, StepRuntime] = {}
        self.report = RunReport()
        self.started = time.perf_counter()
        self.executors: Dict[Any, Any] = {}
        self.calls: Dict[Any, Any] = {}  # boosted calls in a worker: future -> (pool, step, item)
        self.holders: Dict[int, Any] = {}  # nodes that hold items: id -> (node, its first StepRuntime)
        # weak: the gates of a finished BlockedJoin sub-flow must not pile up for the run
        self.gates: "weakref.WeakSet[Gate]" = weakref.WeakSet()
        # sync segments: BotFrame.debug() publishes their counters mid-run
        self.segments: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._closers: Dict[Any, None] = {}
        self._published = 0.0
        #: when the event loop last had a turn: loops that push items yield by it (run_scope
        #: starts and stops it)
        self.beat = Beat(loop)
        self.deferrals: Deferrals | None = None  # set by hooks.attach when a RunHooks defers raises
        #: called with every dead letter (set by hooks.attach: durable dead letters, redrive)
        self.letter_hooks: List[Any] = []
        #: an item trace (``rxbot run --trace``, :mod:`rxbot.observe.trace`), set by hooks.attach;
        #: None (the default) builds nothing for it: the hot paths do not change
        self.tracer: Any = None

    def on_shutdown(self, fn: Any) -> None:
        """Call ``fn()`` when the run ends, however it ends (e.g. publish counters),
        unless it was withdrawn with :meth:`forget` first."""
        self._closers[fn] = None

    def forget(self, fn: Any) -> None:
        self._closers.pop(fn, None)

    def gate(self, downstream: List[Boundary]) -> Gate:
        """A gate over ``downstream`` that this run can close for good when it fails."""
        g = Gate(downstream)
        g.beat = self.beat
        g.on_pause = self.publish_live_counts
        if self.stopped:
            halt([g])
        self.gates.add(g)
        return g

    def publish_live_counts(self) -> None:
        """Fused sync steps count into plain lists inside their generated code; add
        those to the steps' stats now (at most every ``LIVE_COUNTS_EVERY`` seconds), so
        the report, progress and ``BotFrame.debug()`` show live numbers mid-run. Sources
        call this at every pause, i.e. at least every ``config.yield_every`` items."""
        now = time.perf_counter()
        if now - self._published < LIVE_COUNTS_EVERY:
            return
        self._published = now
        for seg in list(self.segments):
            seg.publish_counts(final=False)

    def spawn(self, coro: Any) -> asyncio.Task:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # an engine bug or a BaseException: never lose it
            self.fail(exc)

    def _settle_finished(self) -> None:
        """Settle now the tasks that have ended but whose done callback has not run yet.

        A task's done callbacks run on a later turn of the loop, so a loop that waits
        for :attr:`tasks` to empty must not count on them: since Python 3.12,
        ``asyncio.gather`` of futures that are all done completes without yielding, and
        ``while self.tasks: await gather(*self.tasks)`` spun forever at 100% CPU on a
        task that had ended (issue 30). Settling here (the callback withdrawn, then run
        once by hand) records a task's error in the same order, whatever the version."""
        for task in [t for t in self.tasks if t.done()]:
            task.remove_done_callback(self._task_done)
            self._task_done(task)

    def fail(self, exc: BaseException) -> None:
        """Record the run's first fatal error and stop it."""
        if self.error is None:
            self.error = exc
            self.stopped = True
            halt(self.gates)
            if not self.failed.done():
                self.failed.set_result(exc)

    def runtime(self, path: str, label: str, **options: Any) -> StepRuntime:
        """The runtime (counters, policy) of ``path``: a step's :class:`StepId`, or a plain
        name for something that is not a step of the tree (replay's source of saved
        items); plain names sort after the steps in the report."""
        rt = self.runtimes.get(path)
        if rt is None:
            rt = self.runtimes[path] = StepRuntime(label, path, self, **options)
            self.report.steps[path] = rt.stats
        return rt

    def watch_nodes(self, nodes: Any) -> None:
        """Nodes with a ``report_data()`` method report through :attr:`RunReport.nodes`
        (two nodes of one label are told apart by ``#2``, ``#3``...)."""
        sources = self.report.node_sources
        for node in nodes:
            data = getattr(node, "report_data", None)
            if not callable(data):
                continue
            label = node.label()
            name, n = label, 1
            while name in sources:
                n += 1
                name = f"{label}#{n}"
            sources[name] = data

    def take_node_numbers(self) -> None:
        """After the nodes are closed: keep their final numbers in the report."""
        report = self.report
        report.nodes = {}
        report.nodes = report.node_numbers()
        report.node_sources = {}  # the report must not keep (or pickle) the nodes

    def count_closed(self) -> None:
        """After the nodes are closed: count what each holding node did with the items
        a stopped run left in it (``Node.settled_at_close``)."""
        for node, rt in self.holders.values():
            rt.settle_close(*node.settled_at_close())

    def dead_letter(self, error: StepError) -> None:
        self.report.dead_letters.append(error)
        for hook in self.letter_hooks:
            hook(error)
        sink = getattr(config, "dead_letters", None)
        if sink is None:
            return
        if isinstance(sink, list):
            sink.append(error)
        elif callable(sink):
            sink(error)

    async def shutdown(self) -> None:
        """Cancel whatever is still running and wait for it, so nothing is left pending."""
        self.stopped = True
        while True:
            self._settle_finished()
            pending = list(self.tasks)
            if not pending:
                break
            for t in pending:
                t.cancel()
            await asyncio.wait(pending)
        for fn in list(self._closers):
            fn()
        await self._stop_executors()
        self.report.seconds = time.perf_counter() - self.started
        self._steps_in_flow_order()

    def _steps_in_flow_order(self) -> None:
        """The report lists its steps in flow order, whichever order the graph was built
        in (the unfused graph registers a pipe's steps from its end)."""
        steps = self.report.steps
        ordered = sorted(steps.items(), key=lambda kv: _order(kv[0]))
        if list(steps) != [k for k, _ in ordered]:
            steps.clear()
            steps.update(ordered)

    async def _stop_executors(self) -> None:
        from .boost import stop_boosted

        await stop_boosted(self)


__all__ = ["RunContext", "RunReport"]
