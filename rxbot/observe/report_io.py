"""The run report as data: a plain dict, JSON, and the one-line-per-step text.

Why a separate module: the report (:class:`rxbot.engine.context.RunReport`) is built by
the engine while the run goes on; how it is *shown* — to a person, to ``jq``, to a
metrics exporter — is the users' side and changes for other reasons.

Routes: a route's engine counter ``out`` is what it *matched* (sent into its branches).
Shown as ``out`` that would read "went on", so every view shows a route's ``matched``
and, as ``out``, what went on along the main pipe after it: every item it saw with
``share`` (Branch, Fork), the unmatched ones without, plus with ``join`` what its
branches gave back (``None`` when a branch's steps were not counted).

Sinks: a step whose output nobody consumes (the last step of a pipe, or of a branch
whose results are discarded — ``print``, ``results.append``) returns ``None`` for every
item by design. Those items were *consumed*, not filtered out, so the report counts them
under ``consumed``.
"""
from __future__ import annotations

import json
import re
import time
from typing import Any, Dict, List, Optional, Tuple

#: the counters of one step, in the order they are shown
COUNTERS = ("inp", "out", "filtered", "consumed", "dropped", "failed", "retried", "cancelled",
            "closed")

_LEVEL = re.compile(r"P?(\d+)\[(\d+)\]")


def step_parts(key: Any) -> Tuple[int, Tuple[int, ...], str]:
    """``(pipe number, positions, label)`` of a step key of the report.

    Accepts a step identity object (``pipe`` like ``"P1"``, ``positions`` — step,
    branch, step, ... — and ``labels``) or the ``"P1[5] Fork/2[1] label"`` text form."""
    positions_of = getattr(key, "positions", None)
    labels = getattr(key, "labels", None)
    pipe_name = str(getattr(key, "pipe", ""))
    if positions_of is not None and labels:
        digits = pipe_name.lstrip("P")
        # a run of rxbot.rx names its pipe freely ("watched[2] slow"): its index, then
        number = int(digits) if digits.isdigit() else int(getattr(key, "pipe_index", 0))
        return number, tuple(positions_of), str(labels[-1])
    text = str(key)
    positions: List[int] = []
    pipe, offset, label_at = 0, 0, 0
    for part in text.split("/"):
        m = _LEVEL.match(part)
        if not m:
            break
        if positions:
            positions.append(int(m.group(1)))  # branch number within the route
        else:
            pipe = int(m.group(1))
        positions.append(int(m.group(2)))
        label_at = offset + m.end()
        offset += len(part) + 1
    return pipe, tuple(positions), text[label_at:].lstrip(" ")


def order(key: Any) -> Tuple[int, Tuple[int, ...]]:
    """Sort key: pipe order, then position in the pipe (a route's branches after it)."""
    pipe, positions, _ = step_parts(key)
    return pipe, positions


def is_source(key: Any) -> bool:
    """The first step of a top-level pipe."""
    _, positions, _ = step_parts(key)
    return positions == (1,)


def routes(report: Any) -> Dict[Any, Tuple[bool, bool]]:
    """``{route step: (share, join)}`` of the routes (Branch, Return, Fork, Join) whose
    engine counter ``out`` is what they matched (``RunReport.routes``)."""
    return {key: (share, join) for key, share, join in getattr(report, "routes", ())}


def route_numbers(report: Any, key: Any, shapes: Optional[Dict[Any, Tuple[bool, bool]]] = None
                  ) -> Optional[Tuple[Optional[int], int]]:
    """``(went on, matched)`` of a route step, ``None`` for any other step. What went
    on is ``None`` when it depends on branch steps that were not counted."""
    shapes = routes(report) if shapes is None else shapes
    shape = shapes.get(key)
    if shape is None:
        return None
    share, join = shape
    s = report.steps[key]
    matched = int(s.out)
    evaluated = int(s.inp) - int(s.failed) - int(s.dropped)  # route_func raised: not on
    went_on: Optional[int] = evaluated if share else evaluated - matched
    if join and went_on is not None:
        back = _branch_output(report, key, matched, shapes)
        went_on = None if back is None else went_on + back
    return went_on, matched


def _branch_output(report: Any, key: Any, matched: int, shapes: Dict[Any, Tuple[bool, bool]]
                   ) -> Optional[int]:
    """Items the branches of the joining route ``key`` gave back, if they were counted."""
    positions = getattr(key, "positions", None)
    if positions is None:
        return None
    ends: Dict[int, Any] = {}
    firsts: Dict[int, Any] = {}
    for other in report.steps:
        p = getattr(other, "positions", None)
        if p is None or getattr(other, "pipe", None) != key.pipe or len(p) != len(positions) + 2 \
                or p[:len(positions)] != positions:
            continue
        branch, step = p[-2], p[-1]
        if branch not in ends or step > ends[branch].positions[-1]:
            ends[branch] = other
        if step == 1:
            firsts[branch] = other
    total = 0
    for branch, end in ends.items():
        first = report.steps[firsts[branch]] if branch in firsts else None
        if matched and (first is None or getattr(first, "inp", 0) is None or not first.inp):
            return None  # the branch's steps were not counted: what came back is unknown
        numbers = route_numbers(report, end, shapes)
        out = getattr(report.steps[end], "out", None) if numbers is None else numbers[0]
        if out is None:
            return None
        total += int(out)
    return total


def counters(report: Any, key: Any, shapes: Optional[Dict[Any, Tuple[bool, bool]]] = None
             ) -> Dict[str, Any]:
    """One step's counters, with a sink's ``filtered`` moved to ``consumed`` and a
    route's ``out`` read as what went on (its ``matched`` beside it; ``None`` for any
    other step)."""
    s = report.steps[key]
    values: Dict[str, Any] = {k: int(getattr(s, k, 0)) for k in COUNTERS if k != "consumed"}
    values["consumed"] = 0
    if key in getattr(report, "sinks", ()):
        values["consumed"], values["filtered"] = values["filtered"], 0
    if not getattr(s, "counted", True):  # a sync step run inline uncounted: unknown, not 0
        values["inp"] = values["out"] = values["filtered"] = values["consumed"] = None
    numbers = route_numbers(report, key, shapes)
    result = {k: values[k] for k in COUNTERS}
    if numbers is not None:
        result["out"] = numbers[0]
    result["matched"] = None if numbers is None else numbers[1]
    return result


#: counters whose sum over the steps means something: events, each counted at the one
#: step where it happened (an item passes many steps, so in/out sums mean nothing)
EVENTS = ("filtered", "consumed", "dropped", "failed", "retried", "cancelled", "closed")


def totals(report: Any) -> Dict[str, Optional[int]]:
    """``items`` (what the pipes' sources emitted) and every event counter summed over
    the steps. ``in``/``out`` are not summed: one item passes through many steps. A sum
    over a step that did not count it (a sync step run inline uncounted) is ``None``."""
    sums: Dict[str, Optional[int]] = dict.fromkeys(EVENTS, 0)
    shapes = routes(report)
    for key in report.steps:
        values = counters(report, key, shapes)
        for k in EVENTS:
            total, value = sums[k], values[k]
            sums[k] = None if total is None or value is None else total + value
    return {"items": source_items(report), **sums}


def source_items(report: Any) -> int:
    """Items the pipes' first steps have emitted so far (sources always count)."""
    return sum(s.out for key, s in report.steps.items() if is_source(key))


def _short(exc: BaseException, limit: int = 200) -> str:
    from ..errors import message_of

    text = f"{type(exc).__name__}: {message_of(exc, limit)}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def to_dict(report: Any) -> Dict[str, Any]:
    """The report as plain data (str/int/float/None, lists and dicts only), JSON-ready.

    ``{"seconds", "error", "totals", "steps": [{"step", "pipe", "position", "label",
    "sink", inp, out, filtered, consumed, dropped, failed, retried, cancelled, closed,
    matched}, ...], "dead_letters": [{"step", "item", "error"}, ...], "abandoned":
    [{"step", "item"}, ...]}``; steps are in pipe order. ``matched`` is a route's
    (``null`` for other steps), whose ``out`` is what went on; ``totals`` has ``items``
    (what the sources emitted) and the event counters summed (see :func:`totals`)."""
    from ..errors import short_repr

    steps = []
    shapes = routes(report)
    for key in sorted(report.steps, key=order):
        pipe, positions, label = step_parts(key)
        steps.append({"step": str(key), "pipe": pipe, "position": list(positions), "label": label,
                      "sink": key in getattr(report, "sinks", ()), **counters(report, key, shapes),
                      "ledger": _ledger_of(report, key)})
    error = getattr(report, "error", None)
    from ..redact import redact_data

    data: Dict[str, Any] = redact_data({  # text leaving the process: one redaction, rxbot.redact's rules
        "seconds": round(float(report.seconds), 6),
        "error": None if error is None else _short(error),
        "totals": totals(report),
        "steps": steps,
        "dead_letters": [
            {"step": str(d.step), "item": short_repr(d.item, 200), "error": _short(d.exception)}
            for d in report.dead_letters
        ],
        "abandoned": [{"step": str(step), "item": short_repr(item, 200)}
                      for step, item in getattr(report, "abandoned", ())],
        # nodes' own numbers (HttpLoader: per host), live mid-run
        "nodes": _node_numbers(report),
    })
    # what only some runs have: a sharded run's shards (attempts, workers, re-runs), a
    # resumed run's sinks (exactly-once / at-least-once), a redrive's numbers
    for extra in ("shards", "delivery", "redrive", "traces"):
        value = getattr(report, extra, None)
        if value is not None:
            if extra == "traces":  # live Trace objects while the run goes on (rxbot.observe.trace)
                from .trace import report_traces

                value = report_traces(report)
            data[extra] = redact_data(value)
    return data


def _ledger_of(report: Any, key: Any) -> Any:
    """The step's checked ledger line as data (rxbot.engine.ledger); None: not counted."""
    line = getattr(report, "ledger", {}).get(key)
    return None if line is None else line.as_dict()


def _node_numbers(report: Any) -> Dict[str, Any]:
    numbers = getattr(report, "node_numbers", None)
    return numbers() if callable(numbers) else dict(getattr(report, "nodes", {}) or {})


def to_json(report: Any, indent: int | None = 2) -> str:
    """:func:`to_dict` as JSON text."""
    return json.dumps(to_dict(report), indent=indent, ensure_ascii=False)


def _number(value: Any) -> str:
    """A counter as text: ``-`` when it is not known."""
    return "-" if value is None else str(value)


def elapsed(report: Any) -> float:
    """The run's seconds: so far while it runs, else its duration."""
    if getattr(report, "running", False):
        return max(0.0, time.perf_counter() - float(getattr(report, "started", 0.0) or 0.0))
    return float(report.seconds or 0.0)


def summary(report: Any) -> str:
    """One line for a person watching a run (databot's Timer idiom,
    ``Pipe(Timer(delay=5, until=job.finished), lambda t: print(job.report.summary()))``):
    ``running 3.2s: 120 items, 1 failed, 37.5 items/s, ETA 2s``. Items are what the
    sources emitted; the ETA is that of the slowest pipe whose source's size is known
    (``report.expected``: a range, a list, ``Timer(max_time=...)``), at its rate so far,
    and is left out when no such pipe is still reading; a finished run reads
    ``finished in ...``."""
    seconds = elapsed(report)
    items = source_items(report)
    failed = sum(int(getattr(s, "failed", 0) or 0) for s in report.steps.values())
    rate = items / seconds if seconds > 0 else 0.0
    running = bool(getattr(report, "running", False))
    text = f"{'running' if running else 'finished in'} {seconds:.1f}s: {items} items, {failed} failed, {rate:.1f} items/s"
    eta_s = eta(report, seconds) if running else None
    if eta_s is not None:
        text += f", ETA {eta_s:.0f}s"
    if not running and getattr(report, "error", None) is not None:
        text += f", stopped by {type(report.error).__name__}"
    return text


def eta(report: Any, seconds: float) -> Optional[float]:
    """Seconds until the slowest sized source is read, at its rate so far."""
    read: Dict[int, int] = {}
    for key, s in report.steps.items():
        if is_source(key):
            read[step_parts(key)[0]] = int(s.out)
    waits = [(size - read.get(pipe, 0)) * seconds / read[pipe]
             for pipe, size in (getattr(report, "expected", None) or {}).items()
             if size is not None and read.get(pipe, 0) and read[pipe] < size]
    return max(waits) if waits and seconds > 0 else None


def to_text(report: Any) -> str:
    """One line per step in pipe order; zero counters other than in/out are left out.
    While the run goes on (``pipe.report`` read from a step) the first line says so."""
    if getattr(report, "running", False):
        lines = [f"run running for {elapsed(report):.3f}s (counts so far)"]
    else:
        lines = [f"run finished in {report.seconds:.3f}s"]
    shapes = routes(report)
    for key in sorted(report.steps, key=order):
        c = counters(report, key, shapes)
        extra = " ".join(f"{k}={_number(v)}" for k, v in c.items()
                         if k not in ("inp", "out") and (v or k == "matched" and v is not None))
        lines.append(f"  {key}: in={_number(c['inp'])} out={_number(c['out'])}" + (f" {extra}" if extra else ""))
    from ..errors import short_repr

    for label, data in _node_numbers(report).items():
        for host, n in (data.get("hosts") or {}).items() if isinstance(data, dict) else ():
            lat = n.get("latency_ms") or {}
            statuses = " ".join(f"{k}:{v}" for k, v in (n.get("statuses") or {}).items())
            lines.append(f"  {label} {host}: requests={n.get('requests', 0)} [{statuses}] "
                         f"bytes={n.get('bytes', 0)} p50={lat.get('p50')}ms p90={lat.get('p90')}ms "
                         f"delay={n.get('delay_s', 0)}s" +
                         (f" cached={n['cached']}" if n.get("cached") else "") +
                         (f" robots_dropped={n['robots_dropped']}" if n.get("robots_dropped") else ""))
    for step, item in getattr(report, "abandoned", ()):
        lines.append(f"  abandoned after the shutdown grace: step {step!r} on item {short_repr(item)}")
    lines += delivery_lines(getattr(report, "delivery", None) or {})
    from .trace import report_trace_lines

    lines += report_trace_lines(report)  # rxbot run --trace: after the steps
    from ..redact import redact

    return redact("\n".join(lines))


def delivery_lines(delivery: Dict[str, Any], ind: str = "  ") -> List[str]:
    """A resumed or sharded run's sinks, per pipe: which are exactly once after a kill or
    a lost worker (Inserts: their rows commit with the checkpoint) and which at least
    once (:func:`rxbot.durable.resume.delivery_of`); the text report's and ``explain()``'s."""
    lines = []
    for pipe, d in delivery.items():
        parts = [f"{word}: {', '.join(d[key])}" for key, word in (("exactly_once", "exactly once"),
                                                                   ("at_least_once", "at least once")) if d.get(key)]
        line = f"{ind}{pipe} after a kill (resume) or a lost worker (shards): {'; '.join(parts) or 'no sinks'}"
        if d.get("refused"):
            line += f" (no checkpoint: {d['refused']})"
        if d.get("resumed_from"):
            line += f"; this run resumed after {d['resumed_from']} source items"
        lines.append(line)
    return lines


__all__ = ["to_dict", "to_json", "to_text", "delivery_lines", "summary", "elapsed", "eta", "totals", "counters", "source_items", "routes", "route_numbers",
           "step_parts", "order", "is_source", "COUNTERS"]
