"""An honest report (issue 24 item 7): a step that was not counted (a sync step run
inline under policy raise with metrics off) shows '-' in the report text, the picture
and progress, and null in the JSON and in sums over it — never 0, which means
"counted, and none came". A counted step shows its numbers, 0 included."""
from __future__ import annotations

import json

from rxbot import BotFrame, Pipe, Step, config
from rxbot.observe import report_io
from rxbot.observe.progress import step_text
from rxbot.draw.render import count_lines


def inc(x):
    return x + 1


def keep_even(x):
    return x if x % 2 == 0 else None


def run():
    out = []
    Pipe(range(10), inc, keep_even, out.append)
    report = BotFrame.run()
    assert out == [2, 4, 6, 8, 10]
    return report


def test_uncounted_steps_show_a_dash_in_the_text_and_null_in_the_json(both_builds):
    report = run()
    text = str(report).splitlines()
    data = json.loads(report.to_json())
    steps = {s["label"]: s for s in data["steps"]}
    if config.fusion:  # fused under raise, metrics off: not counted
        assert "  P1[2] inc: in=- out=-" in text and "  P1[4] list.append: in=- out=-" in text
        assert (steps["inc"]["inp"], steps["inc"]["out"], steps["keep_even"]["filtered"]) == (None, None, None)
        assert steps["list.append"]["consumed"] is None and steps["inc"]["ledger"] is None
        assert data["totals"]["filtered"] is None and data["totals"]["consumed"] is None
    else:  # the unfused graph's map counts every call
        assert "  P1[2] inc: in=10 out=10" in text
        assert (steps["keep_even"]["inp"], steps["keep_even"]["filtered"]) == (10, 5)
        assert data["totals"]["filtered"] == 5 and data["totals"]["consumed"] == 5
    assert "  P1[1] Loop(range(0, 10)): in=1 out=10" in text  # sources always count
    assert data["totals"]["items"] == 10


def test_counted_steps_show_their_numbers_zero_included():
    config.metrics = True
    report = run()
    steps = {s["label"]: s for s in report.to_dict()["steps"]}
    assert (steps["inc"]["inp"], steps["inc"]["out"], steps["inc"]["dropped"]) == (10, 10, 0)
    assert steps["keep_even"]["filtered"] == 5 and steps["list.append"]["consumed"] == 5
    assert report.to_dict()["totals"]["filtered"] == 5


def test_a_policy_other_than_raise_counts_its_segment():
    out = []
    Pipe(range(4), Step(inc, on_error="ignore"), out.append)
    report = BotFrame.run()
    assert "  P1[2] inc: in=4 out=4" in str(report).splitlines()


def test_progress_and_the_picture_show_a_dash_for_uncounted_steps():
    config.fusion = True  # fused steps are the ones run uncounted
    report = run()
    key = report.find("inc").name
    assert step_text(report, next(k for k in report.steps if k == key)) == "->-"
    assert count_lines(report.find("inc"), False, None) == ["in=- out=-"]
    config.metrics = True
    counted = run()
    assert step_text(counted, next(k for k in counted.steps if k == key)) == "10>10"
    assert count_lines(counted.find("inc"), False, None) == ["in=10 out=10"]
