"""The run report as data (to_dict/to_json), the stats hook, and the Prometheus exporter."""
from __future__ import annotations

import asyncio
import json
import logging
import urllib.request

import pytest

from rxbot import BotFrame, Fork, Loop, Pipe, Step, config


def half(x):
    if x == 3:
        raise ValueError("three")
    return x // 2 if x % 2 == 0 else None


def ident(x):
    return x


def discard(x):
    return None


def test_to_dict_is_plain_data_in_pipe_order():
    config.exception_policy = "ignore"
    seen = []
    Pipe(Loop(range(6)), half, Fork(seen.append, ident), name="numbers")
    report = BotFrame.run()
    data = report.to_dict()
    assert json.loads(report.to_json()) == data  # JSON-ready as it is
    assert [s["step"] for s in data["steps"]] == [
        "P1[1] Loop(range(0, 6))", "P1[2] half", "P1[3] Fork", "P1[3] Fork/1[1] list.append",
        "P1[3] Fork/2[1] ident"]
    steps = {s["label"]: s for s in data["steps"]}
    assert steps["half"] == {
        "step": "P1[2] half", "pipe": 1, "position": [2], "label": "half", "sink": False,
        "inp": 6, "out": 3, "filtered": 2, "consumed": 0, "dropped": 1, "failed": 1, "retried": 0,
        "cancelled": 0, "closed": 0, "matched": None,
        "ledger": {"step": "P1[2] half", "inp": 6, "fanout": 0, "out": 3, "piped": 0, "filtered": 2,
                   "failed": 1, "dropped": 1, "dead_lettered": 1, "held": 0, "closed": 0, "cancelled": 0,
                   "in_flight": 0, "balanced": True}}
    # the Fork shares every item: 3 went on, all 3 matched
    assert (steps["Fork"]["out"], steps["Fork"]["matched"]) == (3, 3)
    # the end of a discarding branch is a sink: its Nones are consumed items
    assert steps["list.append"]["sink"] and steps["list.append"]["consumed"] == 3
    assert steps["list.append"]["filtered"] == 0
    assert data["totals"]["consumed"] == 3 and data["totals"]["filtered"] == 2
    # no sums of in/out (an item passes many steps); the items are the sources'
    assert "inp" not in data["totals"] and data["totals"]["items"] == 6
    assert data["dead_letters"] == [{"step": "half", "item": "3", "error": "ValueError: three"}]
    assert data["error"] is None and data["seconds"] > 0 and data["abandoned"] == []
    assert report.totals() == data["totals"]


def test_a_failed_runs_report_names_the_error():
    config.exception_policy = "raise"
    Pipe(Loop(range(6)), half)
    with pytest.raises(ValueError):
        BotFrame.run()
    assert BotFrame.last_report.to_dict()["error"] == "ValueError: three"


async def slow(x):
    await asyncio.sleep(0.005)
    return x


def test_the_stats_hook_gets_growing_counters_and_a_final_snapshot():
    calls = []
    Pipe(Loop(range(60)), Step(slow, concurrency=2), discard)
    report = BotFrame.run(stats=calls.append, interval=0.02)
    assert len(calls) >= 3, "called while running, then once at the end"
    assert [c["final"] for c in calls] == [False] * (len(calls) - 1) + [True]
    ins = [next(s["inp"] for s in c["steps"] if s["label"] == "slow") for c in calls]
    assert ins == sorted(ins) and ins[0] < 60 and ins[-1] == 60
    final = calls[-1]
    # the hook's last call comes at shutdown, before the nodes close: the checked ledger
    # (settled after close) is in the report only
    assert final["steps"] == [{**s, "ledger": None} for s in report.to_dict()["steps"]]
    assert all(s["ledger"]["balanced"] for s in report.to_dict()["steps"] if s["ledger"] is not None)
    assert config.stats_hook is None  # run(stats=...) is for that run only


def test_config_stats_hook_and_a_raising_hook_is_dropped(caplog):
    calls = []

    def hook(snapshot):
        calls.append(snapshot["final"])
        raise RuntimeError("exporter down")

    config.stats_hook, config.stats_interval = hook, 0.01
    Pipe(Loop(range(30)), Step(slow, concurrency=2))
    with caplog.at_level(logging.ERROR, logger="rxbot"):
        report = BotFrame.run()
    assert report.find("slow").out == 30  # the run went on
    assert calls == [False]
    assert "the stats hook" in caplog.text and "exporter down" in caplog.text


def test_a_bad_stats_interval_is_rejected():
    Pipe(Loop(range(3)), print)
    with pytest.raises(ValueError, match="stats_interval must be > 0"):
        BotFrame.run(stats=lambda s: None, interval=0)


def test_prometheus_exporter_serves_the_counters():
    prometheus_client = pytest.importorskip("prometheus_client", reason="the rxbot[prometheus] extra")
    from rxbot.exporters.prometheus import PrometheusStats

    registry = prometheus_client.CollectorRegistry()
    stats = PrometheusStats(registry)
    server, _ = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        Pipe(Loop(range(20)), Step(slow, concurrency=4), discard)
        BotFrame.run(stats=stats, interval=0.05)
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10).read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'rxbot_step_in_total{pipe="1",position="2",step="slow"} 20.0' in body
    assert 'rxbot_step_consumed_total{pipe="1",position="3",step="discard"} 20.0' in body
    assert "rxbot_run_finished 1.0" in body


def test_a_long_string_constant_keeps_its_closing_quote():
    from rxbot.tree.step import Const

    assert Const("http://127.0.0.1:45515/v1/bpi/currentprice.json").label() == "'http://127.0.0.1:45515/v1/...'"
    assert Const("short").label() == "'short'"
    assert Const(list(range(20))).label() == "[0, 1, 2, 3, 4, 5, 6, 7, ...]"  # a bounded preview


def test_step_keys_as_text_or_identity_objects():
    from rxbot.observe.report_io import order, step_parts

    class Id(str):  # the shape of a step identity object: a str with its parts
        def __new__(cls, text, pipe, positions, labels):
            self = super().__new__(cls, text)
            self.pipe, self.positions, self.labels = pipe, positions, labels
            return self

    text = "P2[5] Fork/2[1] parse"
    assert step_parts(text) == (2, (5, 2, 1), "parse")
    assert step_parts(Id(text, "P2", (5, 2, 1), ("Fork", "parse"))) == (2, (5, 2, 1), "parse")
    keys = ["P1[10] z", "P1[2] Fork/1[1] a", "P1[2] Fork", "P2[1] Loop", "P1[2] Fork/2[1] b"]
    assert sorted(keys, key=order) == ["P1[2] Fork", "P1[2] Fork/1[1] a", "P1[2] Fork/2[1] b",
                                       "P1[10] z", "P2[1] Loop"]


def inc(x):
    return x + 1


def test_fused_sync_steps_count_live_in_the_snapshots():
    """A fused run of sync steps counts into the segment; each snapshot publishes those
    counts first, so a sync step's numbers grow while the run goes on."""
    calls = []
    Pipe(Loop(range(80)), inc, Step(slow, concurrency=2), discard)
    BotFrame.run(stats=calls.append, interval=0.02)
    seen = [next(s["inp"] for s in c["steps"] if s["label"] == "inc") for c in calls]
    assert any(0 < n < 80 for n in seen[:-1]), seen  # mid-run, neither 0 nor the total
    assert seen == sorted(seen) and seen[-1] == 80


def test_a_sink_is_consumed_in_replay_mode_too(tmp_path):
    """Replay builds the top-level steps one at a time; the last one is still a sink."""
    config.replay_mode, config.replay_dir, config.metrics = True, str(tmp_path), True
    out = []
    report = BotFrame.run([Pipe(Loop(range(3)), half, out.append)])
    step = next(s for s in report.to_dict()["steps"] if s["label"] == "list.append")
    assert step["sink"] and step["consumed"] == 2 and step["filtered"] == 0


def test_find_matches_a_whole_label_not_the_end_of_one():
    from rxbot import BotFrame, Pipe, Step

    Pipe(range(3), Step(lambda x: x, name="one in seven fails"), Step(lambda x: x * 2, name="fails"))
    report = BotFrame.run()
    assert report.find("fails") is report["P1[3] fails"]
    assert report.find("one in seven fails") is report["P1[2] one in seven fails"]


def test_a_route_reports_what_it_matched_and_what_went_on_in_every_view():
    """A route's engine counter ``out`` is what it matched; every view shows ``matched``
    and, as ``out``, what went on along the pipe (the issue's ``Branch(...): in=25 out=1``
    while 24 went on)."""
    from rxbot import Branch, Join, Return
    from rxbot.draw.render import build_graph
    from rxbot.draw.report_html import report_html
    from rxbot.draw.watch.snapshot import Sampler

    config.metrics = True  # the branches' steps are counted: a Return's output is known
    got = []
    Pipe(Loop(range(25)), Branch(discard, route_func=lambda x: x == 3),
         Return(lambda x: x * 100, route_func=lambda x: x % 2 == 0),
         Join(ident, ident, route_func=lambda x: x < 10), got.append)
    report = BotFrame.run()
    data = {s["label"]: s for s in report.to_dict()["steps"]}
    branch = next(s for label, s in data.items() if label.startswith("Branch"))
    ret = next(s for label, s in data.items() if label.startswith("Return"))
    # Branch shares: all 25 went on, 1 matched
    assert (branch["inp"], branch["out"], branch["matched"]) == (25, 25, 1)
    # Return: 12 odd ones pass, 13 even ones come back from its branch
    assert (ret["inp"], ret["out"], ret["matched"]) == (25, 25, 13)
    # Join: 6 items under 10 (0, 1, 3, 5, 7, 9) matched, each back twice; 19 unmatched on
    join = next(s for label, s in data.items() if label.startswith("Join"))
    assert (join["inp"], join["out"], join["matched"]) == (25, 31, 6)
    assert len(got) == 31
    text = str(report)
    assert [line.split(": ", 1)[1] for line in text.splitlines() if "Branch(" in line and "/" not in line] == [
        "in=25 out=25 matched=1"]
    assert "in=25 out=31 matched=6" in text
    # the notebook table: a matched column; the picture; the live view's lines
    assert "<th>matched</th>" in report_html(report)
    dot = build_graph(BotFrame.last_run[0], report=report).source
    assert "in=25 out=25 matched=1" in dot and "in=25 out=31 matched=6" in dot
    rows = {s["path"]: s for s in Sampler(1, "").snapshot(report, state="finished")["steps"]}
    join_row = next(r for path, r in rows.items() if "] Join(" in path and "/" not in path)
    assert (join_row["out"], join_row["matched"]) == (31, 6)
    assert join_row["lines"][0] == "in=25 out=31 matched=6"


def test_a_joining_routes_output_is_unknown_when_its_branch_was_not_counted(both_builds):
    """The fused build does not count the route's branch under policy 'raise' (it runs in
    generated code), so the route's output is unknown: '-', never a guess. The unfused
    graph counts every step, so there the output is known."""
    from rxbot import Return

    Pipe(Loop(range(4)), Return(lambda x: x * 10, route_func=lambda x: x < 2), ident)
    report = BotFrame.run()
    route = next(s for s in report.to_dict()["steps"] if s["label"].startswith("Return"))
    if both_builds:
        assert (route["inp"], route["out"], route["matched"]) == (4, None, 2)
        assert "in=4 out=- matched=2" in str(report)
    else:
        assert (route["inp"], route["out"], route["matched"]) == (4, 4, 2)
        assert "in=4 out=4 matched=2" in str(report)
