"""What the live view shows at one instant: every step's counts, rate, items in flight
and failures, the dead letters and the run's state, read from the run's own report and
from :func:`rxbot.observe.live.bots` (which also brings fused sync steps' counts up to date and
knows the items each step holds).

Built on the run's event loop (so the counters are read where they are written) twice a
second; the server thread only forwards the result.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from ...observe.live import bots
from ..render import count_lines, rate_text
from ...observe.report_io import COUNTERS, counters, eta, order, route_numbers, routes, source_items, summary
#: weight of the newest interval in the smoothed rate (the rest is the previous rate)
SMOOTHING = 0.5
#: dead letters sent with each snapshot (the newest ones; the total is always sent)
LAST_DEAD_LETTERS = 5
#: traced items (``--trace``) the live view shows, the last ones
LAST_TRACES = 5


class Sampler:
    """Turns successive looks at one run's report into snapshots with live rates."""

    def __init__(self, run: int, graph: str, holders: Optional[Set[str]] = None) -> None:
        self.run = run
        self.graph = graph  # which picture the page needs (changes with the pipes' outline)
        #: the steps that hold items up to a concurrency (async, boosted): their capacity
        #: is shown beside what they hold ('in flight 2/2')
        self.holders: Set[str] = set(holders or ())
        self.started = time.perf_counter()
        self.last: Dict[str, Tuple[float, int]] = {}  # path -> (time, items)
        self.rates: Dict[str, float] = {}

    def snapshot(self, report: Any, state: str = "running", error: Optional[BaseException] = None) -> Dict[str, Any]:
        """The JSON-able picture of ``report`` now. A finished run (``state`` other than
        ``'running'``) reports each step's average rate over the run, as render does."""
        # this run's steps (another run may go on at the same time)
        live = {str(b.path): b for b in bots() if report.steps.get(b.path) is b.stats}
        now = time.perf_counter()
        running = state == "running"
        seconds = now - self.started if running else float(report.seconds or 0.0)
        steps: List[Dict[str, Any]] = []
        shapes = routes(report)
        for key in sorted(report.steps, key=order):
            stats, path = report.steps[key], str(key)
            items = max(stats.inp, stats.out)
            if running:
                rate = self._rate(path, now, items)
            else:
                rate = items / seconds if seconds > 0 else 0.0
            step = live.get(path)
            counted = step is None or step.counted
            row: Dict[str, Any] = counters(report, key, shapes)
            capacity = step.capacity if step is not None and path in self.holders else None
            row.update(path=path, rate=round(rate, 2), counted=counted, capacity=capacity,
                       in_flight=step.in_flight if step is not None and running else 0,
                       lines=count_lines(stats, counted, rate_text(rate, 1.0),
                                         sink=key in getattr(report, "sinks", ()),
                                         route=route_numbers(report, key, shapes)))
            steps.append(row)
        letters = list(report.dead_letters)
        sizes = list((getattr(report, "expected", None) or {}).values())
        left = eta(report, seconds) if running else None
        return {
            "run": self.run,
            "graph": self.graph,
            "state": state,
            "seconds": round(seconds, 3),
            # what the sources emitted, of how many when every source's size is known,
            # and the time left at the rate so far (see rxbot.observe.report_io.summary)
            "items": source_items(report),
            "expected": sum(sizes) if sizes and None not in sizes else None,
            "eta": None if left is None else round(left, 1),
            "summary": summary(report),
            "error": None if error is None else f"{type(error).__name__}: {_cut(str(error))}",
            "steps": steps,
            "dead_letters": len(letters),
            "last_dead_letters": [_cut(str(e)) for e in letters[-LAST_DEAD_LETTERS:]],
            # nodes' own numbers, live (HttpLoader: requests, statuses, latency per host)
            "nodes": report.node_numbers() if hasattr(report, "node_numbers") else {},
            # --trace: the traced items so far, as text (rxbot.observe.trace; values already redacted)
            "traces": _traces(report),
        }

    def _rate(self, path: str, now: float, items: int) -> float:
        then, before = self.last.get(path, (self.started, 0))
        self.last[path] = (now, items)
        if now <= then:
            return self.rates.get(path, 0.0)
        recent = (items - before) / (now - then)
        rate = self.rates[path] = SMOOTHING * recent + (1 - SMOOTHING) * self.rates.get(path, recent)
        return rate


def holding_steps(pipes: Sequence[Any]) -> Set[str]:
    """The report keys of the steps of ``pipes`` that hold items up to a concurrency:
    async and boosted steps and nodes (sync steps run inline and hold none)."""
    from ..render import kind_of
    from ...tree.walk import root_of, walk

    return {str(sid) for index, pipe in enumerate(pipes, 1)
            for sid, step in walk(pipe.steps, root_of(pipe, index))
            if kind_of(step) in ("async", "boosted", "async node", "boosted node")}


def _traces(report: Any) -> List[str]:
    from ...observe.trace import report_trace_lines

    return [_cut(line) for line in report_trace_lines(report, LAST_TRACES)]


def _cut(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["Sampler", "COUNTERS", "holding_steps"]
