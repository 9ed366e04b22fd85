"""A run report as an HTML table (what a notebook shows for ``RunReport``)."""
from __future__ import annotations

import html
from typing import Any

from .render import rate_text
from ..observe.report_io import COUNTERS, counters, order, routes

HEADINGS = {"inp": "in"}
#: the table's columns: the counters and, for a route, what it matched
COLUMNS = COUNTERS + ("matched",)


def report_html(report: Any) -> str:
    """One row per step in pipe order (its counters as in :mod:`rxbot.observe.report_io` — a
    route's ``out`` is what went on, ``matched`` beside it — and its throughput over the
    run); the caption has the run time, the items the sources emitted, the failures,
    the dead letters and the error if the run failed. No row of sums: one item passes
    through many steps, so summed in/out mean nothing."""
    seconds = float(getattr(report, "seconds", 0.0) or 0.0)
    names = ("step",) + tuple(HEADINGS.get(c, c) for c in COLUMNS) + ("items/s",)
    head = "".join(f"<th>{h}</th>" for h in names)
    rows = []
    shapes = routes(report)
    for key in sorted(report.steps, key=order):
        values = counters(report, key, shapes)
        cells = "".join(f"<td>{'-' if values[c] is None else values[c]}</td>" for c in COLUMNS)
        seen = max((v for v in (values["inp"], values["out"], values["matched"]) if v is not None), default=0)
        rate = rate_text(seen, seconds).split()[0] if seconds > 0 else ""
        style = ' style="color:#dc2626"' if values["failed"] else ""
        rows.append(f"<tr{style}><td style=\"text-align:left\">{html.escape(str(key))}</td>{cells}"
                    f"<td>{rate}</td></tr>")
    totals = report.totals()
    caption = (f"rxbot run: {seconds:.3f} s, {totals['items']} item(s) from the sources, "
               f"{totals['failed']} failed, {len(report.dead_letters)} dead letter(s)")
    error = getattr(report, "error", None)
    if error is not None:
        caption += f", failed: {html.escape(type(error).__name__)}: {html.escape(str(error)[:200])}"
    return (f'<table class="rxbot-report"><caption>{caption}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


__all__ = ["report_html"]
