"""The checked ledger (issue 29.1): per step, in + fan-out = out - piped + filtered +
failed + held + closed + cancelled + in flight, checked at the end of every run; a
mismatch fails the run naming the step and the numbers."""
from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rxbot import BlockedJoin, BotFrame, Pipe, Step, config
from rxbot.engine.ledger import LedgerError

sys.path.insert(0, os.path.dirname(__file__))
from test_properties import build_chain, chains  # noqa: E402  (the generated pipes)


def failing(kind: str, modulo: int):
    """A step failing on every item divisible by ``modulo`` (sync or async)."""
    def f(x):
        if isinstance(x, int) and x % modulo == 0:
            raise ValueError(f"injected {x}")
        return x
    if kind == "sync":
        return f

    async def af(x):
        await asyncio.sleep(0)
        return f(x)
    return Step(af, concurrency=3)


def counted_lines(report):
    lines = [line for line in report.ledger.values() if line is not None]
    assert lines, "no step was counted"
    return lines


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=st.lists(st.integers(-30, 30), max_size=12), chain=chains(2),
       policy=st.sampled_from(["raise", "ignore", "pipein", "retry"]), fusion=st.booleans(),
       fail_at=st.integers(0, 3), fail_kind=st.sampled_from(["sync", "async"]), modulo=st.integers(3, 7))
def test_the_ledger_balances_over_generated_pipes_under_every_policy(source, chain, policy, fusion, fail_at,
                                                                     fail_kind, modulo):
    """The hypothesis pipes of test_properties (nested routes, Fork/Join, BlockedJoin,
    generators, lists, Filters), with a step failing part of the items, under each
    policy, fused and unfused: every counted step's ledger balances."""
    config.exception_policy = policy
    config.retry_final_policy = "ignore"
    config.retry_attempts = 1
    config.retry_backoff = 0.0001
    config.metrics = True  # sync steps count too (otherwise their line is None)
    config.fusion = fusion
    steps = build_chain(chain)
    steps.insert(min(fail_at, len(steps)), failing(fail_kind, modulo))
    out = []
    pipe = Pipe(list(source), *steps, out.append)
    try:
        BotFrame.run()
    except ValueError:
        assert policy == "raise"
    except ExceptionGroup:  # a BlockedJoin's branches failing together
        assert policy == "raise"
    for line in counted_lines(pipe.report):
        assert line.balanced, line.explain()
    assert pipe.report.ledger  # and it is in the report


@pytest.mark.parametrize("fusion", [True, False])
def test_a_stop_cutting_off_an_await_inside_a_blocked_join_branch_is_counted(fusion):
    """The failure downstream stops the run while the BlockedJoin's async branch step is
    awaiting another item: that item was counted in by the step, so the stop settles it
    as cancelled (it was once missing: in 10, out 9). The run's own error stays the outcome."""
    config.metrics = True
    config.fusion = fusion

    async def slow_double(x):
        await asyncio.sleep(0)
        return x * 2

    def fails(t):
        raise ValueError(f"stop at {t}")

    pipe = Pipe([0] * 10, BlockedJoin(Pipe(Step(slow_double, concurrency=4))), fails)
    with pytest.raises(ValueError, match="stop at"):
        BotFrame.run()
    line = next(line for line in counted_lines(pipe.report) if line.step.endswith("slow_double"))
    assert line.balanced, line.explain()
    assert line.cancelled + line.out == line.inp
    assert line.cancelled >= 1  # the stop did cut one off while it was awaited


def test_a_step_that_loses_a_count_fails_the_run_naming_it(monkeypatch):
    """A test double of the async step operator that forgets to count one output: the
    run fails with LedgerError naming the step and its numbers."""
    from rxbot.engine.operators import _bounded_map

    class LosesOne(_bounded_map._BoundedMap):
        lost = False

        def _emit(self, value):
            if self.rt.label.endswith("leaky") and not LosesOne.lost:
                LosesOne.lost = True
                self.downstream(value)  # passed on, never counted
                return
            super()._emit(value)

    monkeypatch.setattr(_bounded_map, "_BoundedMap", LosesOne)

    async def leaky(x):
        return x

    out = []
    Pipe(range(20), Step(leaky), out.append)
    with pytest.raises(LedgerError) as caught:
        BotFrame.run()
    message = str(caught.value)
    assert "leaky" in message
    assert "in 20 + fan-out 0 = 20" in message
    assert "out 19" in message
    assert sorted(out) == list(range(20))  # the items themselves went through


def test_the_ledger_is_in_the_report_and_its_json():
    config.metrics = True

    def many(x):
        return [x, x]

    def odd(x):
        return x if x % 2 else None

    pipe = Pipe(range(10), many, odd, print if False else (lambda x: None))
    report = BotFrame.run()
    line = report.ledger[next(k for k in report.ledger if str(k).endswith("many"))]
    assert (line.inp, line.fanout, line.out) == (10, 10, 20)
    line = report.ledger[next(k for k in report.ledger if str(k).endswith("odd"))]
    assert (line.inp, line.out, line.filtered) == (20, 10, 10)
    data = json.loads(report.to_json())
    rows = {row["step"]: row for row in data["steps"]}
    many_row = rows[next(k for k in rows if k.endswith("many"))]
    assert many_row["ledger"]["fanout"] == 10
    assert many_row["ledger"]["balanced"] is True
    assert pipe.report is report


def test_steps_not_counted_have_no_ledger_line():
    """A route has no one-to-one identity (its sub-steps are checked); a sync step run
    without counting has no counts: both are None, never zeros."""
    from rxbot import Branch
    config.metrics = False

    def double(x):
        return x * 2

    def fails(x):
        if x == 3:
            raise ValueError("x")
        return x

    config.exception_policy = "raise"
    Pipe(range(5), double, Branch(double), lambda x: None)
    report = BotFrame.run()
    branch = next(k for k in report.ledger if "Branch" in str(k))
    assert report.ledger[branch] is None
    data = json.loads(report.to_json())
    rows = {row["step"]: row for row in data["steps"]}
    assert rows[str(branch)]["ledger"] is None
