"""Timer on both builds: the fused build pulls its ticks (``operators._gated_ticker``), the
honest unfused graph (``config.fusion = False``, ``RXBOT_NO_FUSION=1``) times them with
``reactivex.timer`` on the run's ``AsyncIOScheduler`` (``operators._gated_interval``,
DESIGN §3 "Timer → a gated interval"). Both must keep databot's Timer rules (DESIGN §2b;
the timing itself is in test_dropin.py) and give the same ticks and counts."""
from __future__ import annotations

import asyncio

import pytest
from reactivex import operators as ops
from reactivex.scheduler.eventloop import AsyncIOScheduler

from rxbot import BotFrame, Loop, Pipe, Timer, config

pytestmark = pytest.mark.usefixtures("both_builds")

#: a hang is the bug some of these tests catch: fail clearly instead
LIMIT = 20


async def run(*steps):
    out: list = []
    Pipe(*steps, out.append)
    report = await asyncio.wait_for(BotFrame.run_async(), LIMIT)
    return out, report


def timer_of(report):
    """The stats of the run's Timer step."""
    return next(stats for sid, stats in report.steps.items() if sid.label.startswith("Timer("))


def test_the_unfused_timer_is_timed_on_the_runs_scheduler(monkeypatch):
    """The mapping itself: unfused, every tick is a one-shot ``reactivex.timer`` on the
    run's AsyncIOScheduler — tick 1 due at once, each next one ``delay`` after the
    previous tick went downstream; the fused build sleeps in its pulling task instead."""
    due = []
    schedule, schedule_relative = AsyncIOScheduler.schedule, AsyncIOScheduler.schedule_relative

    def spy_now(self, action, state=None):
        due.append(0.0)
        return schedule(self, action, state)

    def spy_later(self, duetime, action, state=None):
        due.append(duetime)
        return schedule_relative(self, duetime, action, state)

    monkeypatch.setattr(AsyncIOScheduler, "schedule", spy_now)
    monkeypatch.setattr(AsyncIOScheduler, "schedule_relative", spy_later)
    ticks: list = []
    Pipe(Timer(delay=0.002, max_time=3), ticks.append)
    BotFrame.run()
    assert ticks == [1, 2, 3]
    assert due == ([] if config.fusion else [0.0, 0.002, 0.002])


async def test_a_timer_mid_pipe_ticks_a_whole_sequence_for_each_input_in_order():
    out, report = await run([10, 20], Timer(delay=0, max_time=3))
    assert out == [1, 2, 3, 1, 2, 3]
    timer = timer_of(report)
    assert (timer.inp, timer.out, timer.cancelled) == (2, 6, 0)


async def test_a_timer_resubscribed_by_repeat_ticks_again_from_1():
    out, _ = await run(Timer(delay=0, max_time=2), ops.repeat(2))
    assert out == [1, 2, 1, 2]


async def test_an_endless_timer_cut_by_take_stops_ticking():
    """``take`` disposes the Timer's subscription: the run completes with three ticks and
    the sequence cut short is counted as cancelled. Exactly three ticks were made on both
    builds: unfused, the pending tick is disposed at once; the fused build's pulling
    task, disposed from inside its own push, finds its gate halted and returns (it used
    to tick on into the void until the run's end cancelled it; tests/test_dispose.py)."""
    out, report = await run(Timer(delay=0), ops.take(3))
    assert out == [1, 2, 3]
    timer = timer_of(report)
    assert (timer.out, timer.cancelled) == (3, 1)


async def test_an_endless_timer_stops_for_good_when_another_pipe_fails():
    """A failing run stops the Timer: after ``run_async`` has raised, no tick comes even
    though the loop goes on (delay=0: a leaked timer would tick on every loop turn)."""
    def bad(x):
        raise ValueError("boom")

    ticks: list = []
    clock = Pipe(Timer(delay=0), ticks.append)
    Pipe([1], bad)
    with pytest.raises(ValueError, match="boom"):
        await asyncio.wait_for(BotFrame.run_async(), LIMIT)
    seen = len(ticks)
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(ticks) == seen
    timer = timer_of(clock.report)
    assert (timer.out, timer.cancelled) == (seen, 1)  # its sequence was cut short


async def test_until_failing_under_ignore_ends_that_inputs_ticks_and_the_next_input_ticks():
    config.exception_policy = "ignore"
    calls = []

    def until():
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("until broke")
        return len(calls) >= 3

    out, report = await run([10, 20], Timer(delay=0, until=until))
    assert out == [1, 1, 2]  # input 10: tick 1, then until() failed; input 20: ticks 1, 2
    timer = timer_of(report)
    assert (timer.inp, timer.out, timer.failed, timer.dropped) == (2, 3, 1, 1)
    assert [type(e.exception) for e in report.dead_letters] == [ValueError]


async def test_until_failing_under_raise_stops_the_run_with_the_original_error():
    def until():
        raise KeyError("until broke")

    ticks: list = []
    Pipe(Timer(delay=0, until=until), ticks.append)
    with pytest.raises(KeyError, match="until broke"):
        await asyncio.wait_for(BotFrame.run_async(), LIMIT)
    assert ticks == [1]  # one tick always comes out before until() is asked


async def test_a_timer_mid_pipe_pauses_its_upstream_while_it_ticks():
    """While a Timer ticks for one input its boundary is full, so the Loop before it
    pulls the next input only once those ticks are done (flow control, as for any
    iterating step); the downstream full case is in test_dropin.py."""
    pulled = []

    def inputs():
        for i in range(3):
            pulled.append(i)
            yield i

    out, _ = await run(Loop(inputs()), Timer(delay=0, max_time=2), lambda tick: (len(pulled), tick))
    assert out == [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)]
