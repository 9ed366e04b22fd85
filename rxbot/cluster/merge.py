"""One run report out of the shards' reports, and reports that can cross the wire.

The merge reads only the report's public mapping (``report.steps``: step -> stats, and
``report.dead_letters``), so it does not care how a step is identified, only that the
shards, which run the same pipes, identify it the same way.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Dict, Iterable, Sequence

import cloudpickle

from ..engine import RunReport
from ..errors import StepError, short_repr


class RemoteError(Exception):
    """Stands for an exception that could not be pickled on a worker (its type and
    message are kept as text)."""


def merge_reports(reports: Sequence[RunReport]) -> RunReport:
    """Add up the counts of every step over ``reports`` (steps appear in first-seen
    order), gather, shard by shard, every list the reports hold (dead letters,
    abandoned calls, ...) and unite their sets (the sinks)."""
    merged = RunReport()
    for report in reports:
        for key, stats in report.steps.items():
            into = merged.steps.get(key)
            if into is None:
                merged.steps[key] = copy.copy(stats)
            else:
                _add(into, stats)
        for name in _fields(report, list):
            getattr(merged, name).extend(getattr(report, name))
        for name in _fields(report, set):  # e.g. which steps are sinks: the same in every shard
            getattr(merged, name).update(getattr(report, name))
        merged.nodes = merge_numbers(merged.nodes, getattr(report, "nodes", {}) or {})
    return merged


def merge_numbers(into: Any, more: Any) -> Any:
    """Nodes' numbers of two shards as one (HttpLoader's per host): counts (ints) add up,
    measures (floats: latency percentiles, delays) keep the larger, nested dicts merge."""
    if isinstance(into, dict) and isinstance(more, dict):
        out = dict(into)
        for key, value in more.items():
            out[key] = merge_numbers(out[key], value) if key in out else copy.deepcopy(value)
        return out
    if into is None:
        return more
    if more is None:
        return into
    if isinstance(into, bool) or isinstance(more, bool):
        return into or more
    if isinstance(into, int) and isinstance(more, int):
        return into + more
    if isinstance(into, (int, float)) and isinstance(more, (int, float)):
        return max(into, more)
    return into


def _fields(report: RunReport, kind: type) -> Iterable[str]:
    return [f.name for f in dataclasses.fields(report) if isinstance(getattr(report, f.name), kind)]


def _counters(stats: Any) -> Iterable[str]:
    names = ([f.name for f in dataclasses.fields(stats)] if dataclasses.is_dataclass(stats)
             else list(vars(stats)))
    for name in names:
        value = getattr(stats, name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            yield name


def _add(into: Any, stats: Any) -> None:
    for name in _counters(stats):
        setattr(into, name, getattr(into, name) + getattr(stats, name))


def counts(report: RunReport) -> Dict[Any, Dict[str, Any]]:
    """``{step: {counter: value}}`` — what a live progress update carries."""
    return {key: {name: getattr(s, name) for name in _counters(s)} for key, s in report.steps.items()}


def portable(report: RunReport) -> RunReport:
    """A copy of ``report`` that pickles: an item or exception in its lists (dead
    letters, abandoned calls) that does not pickle (an open response, a lock) is
    replaced by its text. The run's error travels separately (it is raised)."""
    out = copy.copy(report)
    out.steps = dict(report.steps)
    out.error = None
    for name in _fields(report, list):
        setattr(out, name, [_portable_entry(x) for x in getattr(report, name)])
    return out


def _portable_entry(entry: Any) -> Any:
    if isinstance(entry, StepError):
        return _portable_letter(entry)
    if isinstance(entry, tuple):  # (step, item) of an abandoned call
        return tuple(x if _picklable(x) else short_repr(x) for x in entry)
    return entry if _picklable(entry) else short_repr(entry)


def _picklable(value: Any) -> bool:
    try:
        cloudpickle.dumps(value)
    except Exception:
        return False
    return True


def _portable_letter(error: StepError) -> StepError:
    if _picklable(error):
        return error
    clone = copy.copy(error)
    if not _picklable(error.item):
        clone.item = short_repr(error.item)
    if not _picklable(error.exception):
        clone.exception = stand_in(error.exception)
    return clone


def stand_in(exc: BaseException) -> RemoteError:
    """A picklable :class:`RemoteError` carrying ``exc``'s type, message and notes."""
    error = RemoteError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
    for note in getattr(exc, "__notes__", ()):
        error.add_note(note)
    return error


__all__ = ["merge_reports", "portable", "counts", "stand_in", "RemoteError"]
