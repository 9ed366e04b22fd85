"""A run report as an HTML table (what a notebook shows for ``RunReport``)."""
from __future__ import annotations

import html
from typing import Any

from .render import rate_text

COLUMNS = ("inp", "out", "filtered", "dropped", "failed", "retried", "cancelled")
HEADINGS = ("in", "out", "filtered", "dropped", "failed", "retried", "cancelled")


def report_html(report: Any) -> str:
    """One row per step in pipe order (counts, throughput over the run), then the
    totals, the run time, the dead letters and the error if the run failed."""
    from .engine.context import _path_order

    seconds = float(getattr(report, "seconds", 0.0) or 0.0)
    head = "".join(f"<th>{h}</th>" for h in ("step",) + HEADINGS + ("items/s",))
    rows = []
    for path in sorted(report.steps, key=_path_order):
        stats = report.steps[path]
        cells = "".join(f"<td>{getattr(stats, c)}</td>" for c in COLUMNS)
        rate = rate_text(max(stats.inp, stats.out), seconds).split()[0] if seconds > 0 else ""
        style = ' style="color:#dc2626"' if stats.failed else ""
        rows.append(f"<tr{style}><td style=\"text-align:left\">{html.escape(path)}</td>{cells}<td>{rate}</td></tr>")
    totals = report.totals()
    foot = "".join(f"<td>{totals[c]}</td>" for c in COLUMNS)
    caption = f"rxbot run: {seconds:.3f} s, {len(report.dead_letters)} dead letter(s)"
    error = getattr(report, "error", None)
    if error is not None:
        caption += f", failed: {html.escape(type(error).__name__)}: {html.escape(str(error)[:200])}"
    return (f'<table class="rxbot-report"><caption>{caption}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
            f"<tfoot><tr><th style=\"text-align:left\">total</th>{foot}<td></td></tr></tfoot></table>")


__all__ = ["report_html"]
