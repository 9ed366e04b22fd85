"""Notebook display: a Pipe and BotFrame show their graph inline, a RunReport a table.

Checked through the very hooks Jupyter calls (``_repr_mimebundle_``, ``_repr_svg_``,
``_repr_html_``) and through IPython's own display formatter.
"""
from __future__ import annotations

import types
import xml.etree.ElementTree as ET

from IPython.core.formatters import DisplayFormatter

from rxbot import BotFrame, Fork, Loop, Pipe, Step
from rxbot.draw.notebook import register_ipython
from rxbot.draw.render import rate_text

SVG_NS = "{http://www.w3.org/2000/svg}"


def texts_of(svg: str) -> set:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg"
    return {t.text for t in root.iter(f"{SVG_NS}text")}


def double(x):
    return 2 * x


async def slow_half(x):
    return x / 2


def test_a_pipe_displays_its_graph():
    p = Pipe(Loop(range(3)), double, Fork(print, Step(slow_half, name="half <async>"), join=True))
    bundle = p._repr_mimebundle_()
    assert set(bundle) == {"image/svg+xml", "text/plain"}
    assert {"Loop(range(0, 3))", "double", "Fork", "print", "half <async>", "join"} <= texts_of(bundle["image/svg+xml"])
    assert bundle["text/plain"] == repr(p)
    assert p._repr_svg_() == bundle["image/svg+xml"]
    assert BotFrame.pipes() == [p]  # displaying neither runs nor takes the pipe


def test_after_a_run_the_picture_has_the_run_numbers():
    out = []
    p = Pipe(Loop(range(4)), slow_half, out.append)
    p.run()
    texts = texts_of(p._repr_svg_())
    assert out == [0, 0.5, 1, 1.5]
    assert {"in=1 out=4", "in=4 out=4", rate_text(4, p.report.seconds)} <= texts


def test_ipython_shows_pipes_and_botframe_as_svg():
    formatter = DisplayFormatter()
    first = Pipe(Loop([1]), double)
    second = Pipe(Loop([2]), slow_half, name="second")
    data, _ = formatter.format(first)
    assert "double" in texts_of(data["image/svg+xml"])
    # BotFrame is a class: IPython needs the formatter rxbot registers for it
    assert register_ipython(BotFrame, types.SimpleNamespace(display_formatter=formatter))
    data, _ = formatter.format(BotFrame)
    assert {"Pipe 1", "Pipe 2: second", "double", "slow_half"} <= texts_of(data["image/svg+xml"])
    assert BotFrame._repr_mimebundle_()["text/plain"] == "BotFrame with 2 pending pipe(s)"
    BotFrame.clear()
    assert BotFrame._repr_mimebundle_() is None  # nothing pending: the plain repr is shown


def test_no_ipython_running_registers_nothing():
    assert register_ipython(BotFrame) is False


def test_run_report_displays_as_a_table():
    def bad(x):
        if x == 2:
            raise ValueError("two")
        return x

    Pipe(Loop(range(4)), Step(bad, on_error="ignore", name="bad <x>"), slow_half, print)
    report = BotFrame.run()
    table = ET.fromstring(report._repr_html_())
    assert table.tag == "table"
    head = [th.text for th in table.find("thead").iter("th")]
    assert head == ["step", "in", "out", "filtered", "consumed", "dropped", "failed", "retried", "cancelled",
                    "closed", "matched", "items/s"]
    rows = {tr[0].text: [td.text for td in tr[1:]] for tr in table.find("tbody")}
    assert list(rows) == ["P1[1] Loop(range(0, 4))", "P1[2] bad <x>", "P1[3] slow_half", "P1[4] print"]
    # in, out, filtered, consumed, dropped, failed, retried, cancelled, closed, matched, items/s
    assert rows["P1[2] bad <x>"][:10] == ["4", "3", "0", "0", "1", "1", "0", "0", "0", "-"]
    assert rows["P1[3] slow_half"][:2] == ["3", "3"]
    assert rows["P1[3] slow_half"][10] == rate_text(3, report.seconds).split()[0]
    # no row of sums: in/out summed over steps mean nothing
    assert table.find("tfoot") is None
    assert table.find("caption").text == (f"rxbot run: {report.seconds:.3f} s, 4 item(s) from the sources, "
                                          "1 failed, 1 dead letter(s)")
