"""Item traces (issue 29.4): ``config.trace`` / ``rxbot run --trace EXPR`` follows the
matching source items and what they become through every step, on the real build."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local_http import http_server  # noqa: F401  (the fixture)
from test_deadletters import pages_table  # noqa: F401  (a MariaDB table (n, body), dropped after)
from rxbot import BotFrame, Branch, Filter, HttpLoader, Pipe, Step, config
from rxbot.observe.trace import TraceExpressionError

sys.path.insert(0, os.path.dirname(__file__))
from test_properties import build_chain, chains  # noqa: E402  (the generated pipes)

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))


def hops(trace):
    return [(h["step"], h["event"]) for h in trace["hops"]]


async def test_a_traced_url_shows_each_hop_from_httploader_to_insert(http_server, mysql_params, pages_table):
    from rxbot.db.mysql import Insert

    table, rows = pages_table
    seen_by_branch = []

    def parse(response):
        n = int(response.text)
        return {"n": n, "body": "odd" if n % 2 else "even"}

    def note(row):
        seen_by_branch.append(row["n"])
        return row

    config.trace = "item.endswith('/n/13')"
    urls = [http_server.url(f"/n/{i}") for i in range(20)]
    pipe = Pipe(urls, HttpLoader(), parse, Branch(note, route_func=lambda row: row["n"] % 2),
                Insert(f"INSERT INTO {table} (n, body) VALUES ({{n}}, {{body}})", **mysql_params))
    report = await BotFrame.run_async()
    assert rows() == list(range(20))  # the trace changed nothing
    (trace,) = report.traces
    assert trace["item"] == repr(urls[13])
    branch = next(str(k) for k in report.steps if str(k).startswith("P1[4] Branch") and "/" not in str(k))
    insert = next(str(k) for k in report.steps if str(k).startswith("P1[5] Insert"))
    assert hops(trace) == [
        ("P1[1] Loop(list[20])", "emitted"),
        ("P1[2] HttpLoader", "in"),
        ("P1[2] HttpLoader", "out"),
        ("P1[3] parse", "in"),
        ("P1[3] parse", "out"),
        (branch, "route"),  # its rule: matched
        (branch, "route"),  # into branch 1
        (f"{branch}/1[1] note", "in"),
        (f"{branch}/1[1] note", "out"),
        (insert, "in"),
        (insert, "held"),
    ]
    details = [h["detail"] for h in trace["hops"]]
    assert "{'n': 13, 'body': 'odd'}" in details[4]
    assert "200" in details[2]  # the response's preview
    assert any(end.startswith("into P1[5] Insert") for end in trace["ended"])
    assert 13 in seen_by_branch
    data = json.loads(report.to_json())
    assert data["traces"][0]["hops"] == trace["hops"]
    assert pipe.report is report


def test_the_hops_through_a_branch_name_the_route_and_the_branch():
    config.trace = "item == 3"
    out = []

    def side(x):
        return x * 100

    Pipe(range(6), lambda x: x + 1, Branch(side, route_func=lambda x: x % 2 == 0), out.append)
    report = BotFrame.run()
    (trace,) = report.traces
    steps = hops(trace)
    route = next(s for s, e in steps if e == "route")
    assert route.startswith("P1[3] Branch")
    assert [e for s, e in steps if s == route] == ["route", "route"]  # its rule, then the branch taken
    assert (f"{route}/1[1] side", "in") in steps
    assert any("matched: into its branches" == h["detail"] for h in trace["hops"])
    assert any(h["detail"] == "into branch 1" for h in trace["hops"])
    assert sorted(trace["ended"]) == sorted([
        "reached the end of the pipe: given to P1[4] list.append",
        f"reached the end of the branch after {route}/1[1] side (it does not join)"])


@pytest.mark.parametrize("fusion", [True, False])
def test_a_trace_of_an_item_dropped_by_a_filter_says_which_filter(fusion):
    config.fusion = fusion
    config.trace = "item in (4, 5, 7)"
    out = []
    Pipe(range(10), lambda x: x * 2 if x != 7 else str(x),
         Filter(route_func=lambda x: x != 8, name="not eight"),
         Filter(route_type=int, name="ints only"),
         Filter(route_func=lambda x: x % 5, name="not fives"),
         out.append)
    report = BotFrame.run()
    ends = {t["item"]: t["ended"] for t in report.traces}
    assert ends["4"] == ["dropped by Filter P1[3] not eight"]
    assert ends["7"] == ["dropped by Filter P1[4] ints only (not a int)"]
    assert ends["5"] == ["dropped by Filter P1[5] not fives"]
    trace5 = next(t for t in report.traces if t["item"] == "5")
    assert ("P1[3] not eight", "passed") in hops(trace5)
    assert ("P1[5] not fives", "dropped") in hops(trace5)
    assert 10 not in out and 8 not in out


def test_a_step_returning_none_is_named_as_the_rule_that_filtered():
    config.trace = "item == 3"

    def odd_only(x):
        return x if x % 2 == 0 else None

    Pipe(range(5), odd_only, print)
    (trace,) = BotFrame.run().traces
    assert hops(trace)[-1] == ("P1[2] odd_only", "filtered")
    assert trace["ended"] == ["filtered: P1[2] odd_only returned None"]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_traced_item_failing_under_ignore_shows_the_users_frame_and_its_dead_letter(kind):
    config.exception_policy = "ignore"
    config.trace = "item == 'b'"

    def check(x):
        if x == "B":
            raise ValueError(f"no {x} here")
        return x

    async def acheck(x):
        await asyncio.sleep(0)
        return check(x)

    out = []
    Pipe(["a", "b", "c"], lambda x: x.upper(), check if kind == "sync" else acheck, out.append)
    report = BotFrame.run()
    assert out == ["A", "C"]
    (trace,) = report.traces
    failed = next(h for h in trace["hops"] if h["event"] == "failed")
    assert failed["step"].startswith("P1[3] ")
    assert failed["detail"].startswith("ValueError: no B here (at " + HERE + ":")
    assert failed["detail"].endswith(" in check)")
    assert trace["ended"] == [f"dead-lettered at {failed['step']}"]
    assert len(report.dead_letters) == 1


def test_a_traced_failure_under_raise_says_it_stopped_the_run():
    config.trace = "item == 2"

    def boom(x):
        if x == 2:
            raise KeyError("two")
        return x

    Pipe(range(5), boom, print)
    with pytest.raises(KeyError):
        BotFrame.run()
    (trace,) = BotFrame.last_report.traces
    assert trace["ended"] == ["failed in P1[2] boom: the run stopped (policy raise)"]


def test_retries_of_a_traced_async_item_are_shown():
    config.exception_policy = "retry"
    config.retry_attempts = 2
    config.retry_backoff = 0.0001
    config.trace = "item == 1"
    calls = {}

    async def flaky(x):
        calls[x] = calls.get(x, 0) + 1
        if calls[x] < 3:
            raise ConnectionError("try again")
        return x

    out = []
    Pipe(range(3), Step(flaky), out.append)
    (trace,) = BotFrame.run().traces
    assert [h["detail"] for h in trace["hops"] if h["event"] == "retry"] == ["attempt 2", "attempt 3"]
    assert ("P1[2] flaky", "out") in hops(trace)
    assert sorted(out) == [0, 1, 2]


def test_secrets_in_traced_values_are_redacted():
    config.trace = "item['id'] == 2"

    def login(x):
        return {"id": x["id"], "password": "hunter2", "url": "https://bob:s3cr3t@example.com/x?token=abc123"}

    Pipe([{"id": i, "api_key": "k-%d-secretvalue" % i} for i in range(4)], login, print)
    report = BotFrame.run()
    text = json.dumps(report.traces) + str(report) + report.to_json()
    for secret in ("hunter2", "s3cr3t", "abc123", "k-2-secretvalue"):
        assert secret not in text
    assert "trace #1" in str(report)


def test_a_bad_expression_is_refused_before_the_run_naming_config_trace():
    pulled = []

    def source():
        for i in range(3):
            pulled.append(i)
            yield i

    Pipe(source(), print)
    config.trace = "itme == 3"
    with pytest.raises(TraceExpressionError) as caught:
        BotFrame.run()
    assert str(caught.value).startswith("config.trace")
    assert "itme" in str(caught.value) and "\n" not in str(caught.value)
    assert pulled == []
    config.trace = "item =="
    Pipe(source(), print)
    with pytest.raises(TraceExpressionError, match="is not a Python expression"):
        BotFrame.run()


def test_a_trace_with_a_redrive_is_refused_clearly(tmp_path):
    from rxbot.errors import PipelineError

    config.durable_dir = str(tmp_path)
    config.trace = "item == 1"
    Pipe(range(3), print)
    with pytest.raises(PipelineError, match=r"config.trace \('item == 1'\) .* a redrive feeds stored dead letters"):
        BotFrame.run(redrive=True)


def test_more_matches_than_followed_are_counted_and_said(monkeypatch):
    import rxbot.observe.trace

    monkeypatch.setattr(rxbot.observe.trace, "MAX_TRACES", 2)
    config.trace = "item % 2 == 0"
    Pipe(range(10), lambda x: x, print)
    report = BotFrame.run()
    assert [t["item"] for t in report.traces[:2]] == ["0", "2"]
    assert report.traces[2]["ended"] == ["3 more items matched; the first 2 were followed"]
    assert str(report).endswith("\ntrace: 3 more items matched; the first 2 were followed")


def test_an_expression_with_a_comment_or_lines_is_one_expression():
    config.trace = "(item ==\n 2)  # the second"
    Pipe(range(4), lambda x: x, print)
    assert [t["item"] for t in BotFrame.run().traces] == ["2"]


def test_a_traced_item_fanning_out_enormously_is_followed_up_to_a_bound(monkeypatch):
    import rxbot.observe.trace

    monkeypatch.setattr(rxbot.observe.trace, "MAX_VALUES", 5)
    config.trace = "item == 1"
    out = []
    Pipe(range(3), lambda x: [x * 100 + k for k in range(20)], lambda y: y + 1, out.append)
    (trace,) = BotFrame.run().traces
    assert len(out) == 60
    assert any(h["event"] == "..." and "more than 5 traced values" in h["detail"] for h in trace["hops"])
    followed = [h for h in trace["hops"] if h["event"] == "in" and h["step"].startswith("P1[3] ")]
    assert 1 <= len(followed) <= 5


def test_an_expression_that_raises_on_an_item_does_not_trace_it_nor_fail_the_run():
    config.trace = "item['k'] == 1"
    out = []
    Pipe([{"k": 1}, "not a dict", {"k": 2}], out.append)
    report = BotFrame.run()
    assert len(out) == 3
    assert [t["item"] for t in report.traces] == ["{'k': 1}"]


def test_without_a_trace_the_report_has_none_and_the_run_installs_no_trace_function():
    seen = []

    def look(x):
        seen.append(sys.gettrace())
        return x

    Pipe(range(3), look, print)
    report = BotFrame.run()
    assert getattr(report, "traces", None) is None
    assert "traces" not in json.loads(report.to_json())
    assert set(seen) == {sys.gettrace()}


def test_the_live_view_shows_the_traced_items_while_the_run_goes_on():
    from rxbot.draw.watch.snapshot import Sampler

    config.trace = "item == 3"
    snapshots, debugs = [], []

    def watch(x):
        if x == 9:
            snapshots.append(Sampler(1, "g").snapshot(pipe.report))
            debugs.append(BotFrame.debug())
        return x

    pipe = Pipe(range(10), lambda x: x + 1, watch, print)
    BotFrame.run()
    (snap,) = snapshots
    assert snap["state"] == "running"
    assert snap["traces"][0] == "trace #1: 3 from P1[1] Loop(range(0, 10))"
    assert any(line.startswith("  P1[2] <lambda>") and line.endswith(": out 4") for line in snap["traces"])
    (debug,) = debugs  # BotFrame.debug() / BotFrame.bots' text, mid-run
    assert "\n  trace #1: 3 from P1[1] Loop(range(0, 10))\n" in debug


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=st.lists(st.integers(-30, 30), max_size=12), chain=chains(2), fusion=st.booleans(),
       policy=st.sampled_from(["raise", "ignore"]))
def test_a_trace_changes_nothing_the_run_does(source, chain, fusion, policy):
    """The generated pipes (nested routes, Fork/Join, BlockedJoin, generators, Filters)
    give the same items and counts with a trace as without one, and the ledger balances."""
    def run(trace):
        config.trace = trace
        config.fusion = fusion
        config.exception_policy = policy
        config.metrics = True
        out = []
        Pipe(list(source), *build_chain(chain), out.append)
        report = BotFrame.run()
        counts = {str(k): (s.inp, s.out, s.filtered, s.failed) for k, s in report.steps.items()}
        return sorted(out, key=repr), counts, report

    before = sys.gettrace()
    plain_out, plain_counts, _ = run(None)
    traced_out, traced_counts, report = run("item % 4 == 1")
    assert traced_out == plain_out
    assert traced_counts == plain_counts
    assert len(report.traces) == sum(1 for x in source if x % 4 == 1)
    assert all(line is None or line.balanced for line in report.ledger.values())
    assert sys.gettrace() is before  # the trace function is off again after the run


def test_rxbot_run_trace_prints_the_trace_after_the_report(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        from rxbot import BotFrame, Pipe, Filter
        def double(x):
            return x * 2
        Pipe(range(10), double, Filter(route_func=lambda x: x % 3, name="no threes"), print)
        BotFrame.run()
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "rxbot", "run", "--trace", "item == 3", "--report", "text",
                           str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert err.index("run finished in") < err.index("trace #1: 3 from P1[1] Loop(range(0, 10))")
    assert "  P1[2] double: out 6" in err
    assert "  ended: dropped by Filter P1[3] no threes" in err

    bad = subprocess.run([sys.executable, "-m", "rxbot", "run", "--trace", "item ==", str(script)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2
    assert bad.stdout == ""  # the script never ran
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("rxbot run: --trace: 'item ==' is not")


def test_rxbot_trace_in_the_environment_traces_a_script(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        from rxbot import BotFrame, Pipe
        report = BotFrame.run() if Pipe(range(5), lambda x: x * 10, lambda y: None) else None
        print(report.traces[0]["item"], report.traces[0]["hops"][-3]["detail"], report.traces[0]["ended"][0])
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
               RXBOT_TRACE="item == 4")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["4", "40"]
    assert done.stdout.split(None, 2)[2].startswith("reached the end of the pipe: consumed by P1[3] <lambda>")


# ---- where the expression is checked: inline in the fused loop, or a wrapper ---------------------
def _b1(out):
    """B1's shape (benchmarks/bench_core.py): a range sliced into four fused steps."""
    return Pipe(range(30), lambda x: x + 1, lambda x: x if x % 2 == 0 else None, lambda x: x * 3, out.append)


def _generated(text):
    """The generated code blocks ``explain(source=True)`` shows, one string each."""
    blocks, current = [], None
    for line in text.splitlines():
        if line.strip() == "generated code:":
            current = []
            blocks.append(current)
        elif current is not None and line.startswith("      "):
            current.append(line)
        else:
            current = None
    return ["\n".join(b) for b in blocks]


def test_without_a_trace_the_generated_code_has_no_trace_check_and_a_trace_adds_a_separate_entry():
    """No trace asked: the code a run compiles is the untraced one, not a line of it
    changed. With a trace, that same code stays, and the chunk entry the traced source
    slices into is a separate function with the check inline."""
    out = []
    pipe = _b1(out)
    (plain,) = _generated(pipe.explain(source=True))
    for name in ("thit", "toff", "tfail", "hitting", "trace=()", "traced"):
        assert name not in plain
    config.trace = "item % 10000 == 7"
    (traced,) = _generated(pipe.explain(source=True))
    marker = "      # a traced source slices into this instead of many:"
    untraced_part, _, traced_part = traced.partition("\n" + marker + "\n")
    assert untraced_part == plain
    assert "if (x % 10000 == 7):" in [line.strip() for line in traced_part.splitlines()]
    assert traced_part.rstrip().endswith("return many")
    BotFrame.run()
    assert sorted(out) == sorted(3 * (x + 1) for x in range(30) if (x + 1) % 2 == 0)


def test_the_fused_loop_checks_the_expression_inline_and_explain_says_so():
    """The elements that do not match go straight from the traced chunk entry into the
    first step (its caller is that generated function); the one that matches is pushed
    through the segment's entry with the trace function on."""
    config.trace = "item == 5"
    callers, out = [], []

    def look(x):
        callers.append((x, sys._getframe(1).f_code.co_filename))
        return x

    def keep(x):
        out.append(x)

    pipe = Pipe(range(10), look, keep)
    assert "trace 'item == 5': checked inline where each element enters the fused steps' loop" in pipe.explain()
    report = BotFrame.run()
    assert out == list(range(10))
    assert [x for x, f in callers if " traced " in f] == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    (trace,) = report.traces
    assert hops(trace) == [("P1[1] Loop(range(0, 10))", "emitted"), ("P1[2] look", "in"), ("P1[2] look", "out"),
                           ("P1[3] keep", "in"), ("P1[3] keep", "consumed")]


@pytest.mark.parametrize("why,expr,steps", [
    ("the expression has GeneratorExp", "any(c == '5' for c in str(item))", "sync"),
    ("the source does not slice into fused steps", "item == 5", "async first"),
])
def test_a_source_that_cannot_check_inline_goes_through_the_wrapper_and_explain_says_why(why, expr, steps):
    config.trace = expr
    callers, out = [], []

    def look(x):
        callers.append(sys._getframe(1).f_code.co_filename)
        return x

    async def hop(x):
        return x

    pipe = Pipe(range(10), *([Step(hop)] if steps == "async first" else []), look, out.append)
    text = pipe.explain()
    assert f": checked by a generator wrapping the source (one generator step per element)" in text
    assert why in text
    (trace,) = BotFrame.run().traces
    assert sorted(out) == list(range(10))
    assert not any(" traced " in f for f in callers)
    assert ("P1[2] look", "in") in hops(trace) or ("P1[3] look", "in") in hops(trace)


def test_under_replay_the_plan_puts_the_check_in_the_wrapper_and_the_run_does_as_it_says(tmp_path):
    """Replay's hooks put an operator between every two top-level steps, so the source
    does not reach the fused steps' chunk entry: the per-step plan the run builds says
    the check is in the wrapper, and why, and the compiler hands the tracer no inline
    check (the decision is the plan's, not re-derived at run time)."""
    from rxbot.plan import plan_of

    config.replay_mode = True
    config.replay_dir = str(tmp_path / "cache")
    config.trace = "item == 5"
    callers, out = [], []

    def look(x):
        callers.append(sys._getframe(1).f_code.co_filename)
        return x

    pipe = Pipe(range(10), look, out.append)
    (source, *_) = plan_of(pipe, 1, per_step=True).nodes
    assert "checked by a generator wrapping the source" in source.trace
    assert "the run's hooks (replay mode, a resumed run, a redrive) put an operator between each two of its steps" \
        in source.trace
    (trace,) = BotFrame.run().traces
    assert out == list(range(10))
    assert callers and not any(" traced " in f for f in callers)
    assert ("P1[2] look", "in") in hops(trace)


def test_elements_taken_inline_and_through_the_wrapper_are_each_checked_once():
    """An async step after the fused steps draws the source's next elements through
    them while its slots are full (the wrapper), the source slices the rest into the
    traced chunk entry (inline): both read one iterator, so every matching item is
    followed exactly once, and the trace function is off after the run."""
    config.trace = "item % 10 == 3"
    out = []

    async def slow(x):
        await asyncio.sleep(0)
        return x

    callers = []

    def look(x):
        callers.append(sys._getframe(1).f_code.co_name)
        return x

    before = sys.gettrace()
    Pipe(range(200), look, Step(slow, concurrency=2), out.append)
    report = BotFrame.run()
    assert sorted(out) == list(range(200))
    assert {"many", "cycle"} <= set(callers)  # both ways of taking an element were used
    assert sorted(int(t["item"]) for t in report.traces if t["number"]) == list(range(3, 200, 10))[:20]
    for trace in report.traces[:20]:
        assert [e for s, e in hops(trace) if s == "P1[3] slow"] == ["in", "out"]
        assert [e for s, e in hops(trace) if s == "P1[2] look"] == ["in", "out"]
    assert sys.gettrace() is before


def test_a_traced_item_failing_inline_under_raise_stops_the_run_with_its_error_and_the_trace_function_off():
    config.trace = "item == 4"
    before = sys.gettrace()

    def boom(x):
        if x == 4:
            raise KeyError("four")
        return x

    Pipe(range(10), boom, print)
    with pytest.raises(KeyError, match="four"):
        BotFrame.run()
    assert sys.gettrace() is before
    (trace,) = BotFrame.last_report.traces
    assert trace["ended"] == ["failed in P1[2] boom: the run stopped (policy raise)"]
