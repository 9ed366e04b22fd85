"""A run report as an HTML table (what a notebook shows for ``RunReport``)."""
from __future__ import annotations

import html
from typing import Any

from .render import rate_text
from .report_io import COUNTERS, counters, order

HEADINGS = {"inp": "in"}


def report_html(report: Any) -> str:
    """One row per step in pipe order (its counters as in :mod:`rxbot.report_io`, and its
    throughput over the run), then the totals, the run time, the dead letters and the
    error if the run failed."""
    seconds = float(getattr(report, "seconds", 0.0) or 0.0)
    names = ("step",) + tuple(HEADINGS.get(c, c) for c in COUNTERS) + ("items/s",)
    head = "".join(f"<th>{h}</th>" for h in names)
    rows = []
    for key in sorted(report.steps, key=order):
        values = counters(report, key)
        cells = "".join(f"<td>{values[c]}</td>" for c in COUNTERS)
        rate = rate_text(max(values["inp"], values["out"]), seconds).split()[0] if seconds > 0 else ""
        style = ' style="color:#dc2626"' if values["failed"] else ""
        rows.append(f"<tr{style}><td style=\"text-align:left\">{html.escape(str(key))}</td>{cells}"
                    f"<td>{rate}</td></tr>")
    totals = report.totals()
    foot = "".join(f"<td>{totals[c]}</td>" for c in COUNTERS)
    caption = f"rxbot run: {seconds:.3f} s, {len(report.dead_letters)} dead letter(s)"
    error = getattr(report, "error", None)
    if error is not None:
        caption += f", failed: {html.escape(type(error).__name__)}: {html.escape(str(error)[:200])}"
    return (f'<table class="rxbot-report"><caption>{caption}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
            f"<tfoot><tr><th style=\"text-align:left\">total</th>{foot}<td></td></tr></tfoot></table>")


__all__ = ["report_html"]
