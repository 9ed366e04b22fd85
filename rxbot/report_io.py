"""The run report as data: a plain dict, JSON, and the one-line-per-step text.

Why a separate module: the report (:class:`rxbot.engine.context.RunReport`) is built by
the engine while the run goes on; how it is *shown* — to a person, to ``jq``, to a
metrics exporter — is the users' side and changes for other reasons.

Sinks: a step whose output nobody consumes (the last step of a pipe, or of a branch
whose results are discarded — ``print``, ``results.append``) returns ``None`` for every
item by design. Those items were *consumed*, not filtered out, so the report counts them
under ``consumed``.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Tuple

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


def counters(report: Any, key: Any) -> Dict[str, int]:
    """One step's counters, with a sink's ``filtered`` moved to ``consumed``."""
    s = report.steps[key]
    values = {k: int(getattr(s, k, 0)) for k in COUNTERS if k != "consumed"}
    values["consumed"] = 0
    if key in getattr(report, "sinks", ()):
        values["consumed"], values["filtered"] = values["filtered"], 0
    return {k: values[k] for k in COUNTERS}


def totals(report: Any) -> Dict[str, int]:
    """Every counter summed over the steps."""
    sums = dict.fromkeys(COUNTERS, 0)
    for key in report.steps:
        for k, v in counters(report, key).items():
            sums[k] += v
    return sums


def source_items(report: Any) -> int:
    """Items the pipes' first steps have emitted so far (sources always count)."""
    return sum(s.out for key, s in report.steps.items() if is_source(key))


def _short(exc: BaseException, limit: int = 200) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def to_dict(report: Any) -> Dict[str, Any]:
    """The report as plain data (str/int/float/None, lists and dicts only), JSON-ready.

    ``{"seconds", "error", "totals", "steps": [{"step", "pipe", "position", "label",
    "sink", inp, out, filtered, consumed, dropped, failed, retried, cancelled, closed},
    ...], "dead_letters": [{"step", "item", "error"}, ...], "abandoned": [{"step",
    "item"}, ...]}``; steps are in pipe order."""
    from .errors import short_repr

    steps = []
    for key in sorted(report.steps, key=order):
        pipe, positions, label = step_parts(key)
        steps.append({"step": str(key), "pipe": pipe, "position": list(positions), "label": label,
                      "sink": key in getattr(report, "sinks", ()), **counters(report, key)})
    error = getattr(report, "error", None)
    return {
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
    }


def to_json(report: Any, indent: int | None = 2) -> str:
    """:func:`to_dict` as JSON text."""
    return json.dumps(to_dict(report), indent=indent, ensure_ascii=False)


def to_text(report: Any) -> str:
    """One line per step in pipe order; zero counters other than in/out are left out."""
    lines = [f"run finished in {report.seconds:.3f}s"]
    for key in sorted(report.steps, key=order):
        c = counters(report, key)
        extra = " ".join(f"{k}={v}" for k, v in c.items() if k not in ("inp", "out") and v)
        lines.append(f"  {key}: in={c['inp']} out={c['out']}" + (f" {extra}" if extra else ""))
    from .errors import short_repr

    for step, item in getattr(report, "abandoned", ()):
        lines.append(f"  abandoned after the shutdown grace: step {step!r} on item {short_repr(item)}")
    return "\n".join(lines)


__all__ = ["to_dict", "to_json", "to_text", "totals", "counters", "source_items",
           "step_parts", "order", "is_source", "COUNTERS"]
