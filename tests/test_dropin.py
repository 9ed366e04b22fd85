"""Drop-in fidelity (issue 14): the behaviours databot scripts lean on — Timer timing,
pipein delivering the original exception, databot's policy numbers, BotFrame.debug()
and BotFrame.bots — work as they did under databot 0.1.8."""
from __future__ import annotations

import asyncio
import logging
import time

import pytest

from rxbot import BotFrame, Filter, Pipe, Step, Timer, config


def ticks_of(timer: Timer) -> list:
    out: list = []
    Pipe(timer, out.append)
    BotFrame.run()
    return out


# ---------------------------------------------------------------- Timer
@pytest.mark.usefixtures("both_builds")
def test_timer_emits_tick_1_at_once_then_sleeps_delay():
    stamps = []
    start = time.monotonic()
    Pipe(Timer(delay=0.3, max_time=2), lambda tick: stamps.append((tick, time.monotonic() - start)))
    BotFrame.run()
    assert [tick for tick, _ in stamps] == [1, 2]
    assert stamps[0][1] < 0.2  # "at once": well before one delay has passed
    assert stamps[1][1] - stamps[0][1] >= 0.29  # then a whole delay before tick 2


@pytest.mark.usefixtures("both_builds")
def test_timer_asks_until_once_after_each_tick():
    calls = []

    def until():
        calls.append(len(ticks))
        return len(calls) == 3

    ticks: list = []
    Pipe(Timer(delay=0.001, until=until), ticks.append)
    BotFrame.run()
    assert ticks == [1, 2, 3]
    assert calls == [1, 2, 3]  # asked exactly once after each tick had gone downstream


@pytest.mark.usefixtures("both_builds")
def test_timer_until_already_true_gives_one_tick():
    assert ticks_of(Timer(delay=0.001, until=lambda: True)) == [1]


@pytest.mark.usefixtures("both_builds")
def test_timer_max_time_counts_ticks_and_ends_without_a_trailing_sleep():
    start = time.monotonic()
    assert ticks_of(Timer(delay=0.2, max_time=1)) == [1]
    assert time.monotonic() - start < 0.2  # tick 1 came at once and was the last


@pytest.mark.usefixtures("both_builds")
def test_timer_waits_for_a_full_step_before_the_next_tick():
    """Flow control still applies: with delay=0 the Timer would tick again at once, but a
    tick is only emitted while the one-slot step downstream has room."""
    running = []
    seen_running = []

    async def slow(tick):
        running.append(tick)
        await asyncio.sleep(0.02)
        running.remove(tick)

    Pipe(Timer(delay=0, max_time=4), lambda tick: seen_running.append(list(running)) or tick,
         Step(slow, concurrency=1))
    BotFrame.run()
    assert seen_running == [[], [], [], []]


@pytest.mark.usefixtures("both_builds")
def test_progress_idiom_prints_a_final_line_after_the_work_finished():
    """databot's examples/baidu_spider_progress.py: Timer(until=p.finished) shows the total."""
    async def fetch(x):
        await asyncio.sleep(0.01)
        return x

    result: list = []
    work = Pipe(range(10), Step(fetch, concurrency=2), result.append)
    lines = []
    Pipe(Timer(delay=0.02, until=work.finished),
         lambda tick: lines.append((tick, len(result), work.finished())))
    BotFrame.run()
    assert lines[0] == (1, 0, False)  # tick 1 at once, before any work was done
    assert lines[-1][1:] == (10, True)  # the last line: after the work pipe finished, the total
    assert [tick for tick, _, _ in lines] == list(range(1, len(lines) + 1))


# ---------------------------------------------------------------- pipein
def test_pipein_delivers_the_original_exception_object():
    config.exception_policy = config.Exception_pipein
    raised = []

    def parse(x):
        if x == 2:
            exc = ValueError(f"bad record {x}")
            raised.append(exc)
            raise exc
        return x

    out = []
    Pipe(range(4), parse, out.append)
    BotFrame.run()
    (err,) = [x for x in out if isinstance(x, Exception)]
    assert err is raised[0]  # the very object, never a wrapper
    assert isinstance(err, ValueError) and str(err) == "bad record 2"
    assert (err.rxbot_step, err.rxbot_item) == ("parse", 2)
    assert err.__notes__ == ["rxbot: raised in step 'parse' on item 2"]
    assert [x for x in out if not isinstance(x, Exception)] == [0, 1, 3]


def test_pipein_exception_can_be_routed_by_its_own_type():
    config.exception_policy = "pipein"

    async def check(x):
        if x % 2:
            raise KeyError(x)
        return x

    errors = []
    Pipe(range(5), check, Filter(route_type=KeyError), errors.append)
    BotFrame.run()
    assert sorted(e.args[0] for e in errors) == [1, 3]


# ---------------------------------------------------------------- config constants
@pytest.mark.parametrize("constant, name", [("Exception_raise", "raise"), ("Exception_ignore", "ignore"),
                                            ("Exception_retry", "retry"), ("Exception_pipein", "pipein")])
def test_databot_policy_numbers_work_and_print_as_names(constant, name):
    value = getattr(config, constant)
    assert isinstance(value, int)
    assert config.policy(value) == config.policy(name) == name
    assert Step(lambda x: x, on_error=value).on_error == name


def test_policy_given_as_a_number_drives_the_run_and_the_log_names_it(caplog):
    config.exception_policy = config.Exception_ignore
    assert config.exception_policy == 1  # what a databot script compares against

    def bad(x):
        if x == 1:
            raise ValueError("nope")
        return x

    out = []
    Pipe(range(3), bad, out.append)
    with caplog.at_level(logging.WARNING, logger="rxbot"):
        report = BotFrame.run()
    assert out == [0, 2] and report.find("bad").dropped == 1
    assert "dropped item 1 in step 'bad'" in caplog.text


def test_unknown_policy_number_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Step 'f': argument 'on_error' must be one of raise, ignore, "
                                         r"retry, pipein .*got 7"):
        Step(lambda x: x, name="f", on_error=7)


# ---------------------------------------------------------------- BotFrame.debug / bots
@pytest.mark.usefixtures("both_builds")
def test_debug_from_a_timer_step_shows_the_live_run(caplog):
    """databot's examples/baidu_spider_joined.py calls BotFrame.debug() from a Timer step."""
    release = asyncio.Event()

    async def slow(x):
        await release.wait()
        return x

    snapshots = []
    bots_seen = []

    def show_info(tick):
        snapshots.append(BotFrame.debug())
        bots_seen.append({b.path: (b.inp, b.out, b.in_flight) for b in BotFrame.bots})
        # fused, a sync step under 'raise' is not counted (that costs time); the
        # unfused graph's map counts every call
        assert [b.counted for b in BotFrame.bots if b.label == "show_info"] == [not config.fusion]
        if tick == 2:
            release.set()

    work = Pipe(range(5), Step(slow, concurrency=3, name="slow"), lambda x: x)
    Pipe(Timer(delay=0.01, until=work.finished), show_info)
    with caplog.at_level(logging.INFO, logger="rxbot"):
        BotFrame.run()

    first = snapshots[0]
    assert first.startswith("rxbot: 2 pipe(s) running for ")
    # at tick 1 the slow step holds 3 items (its slots), the source is still going
    assert "  P1[2] slow: in=3 out=0 failed=0 in_flight=3" in first.splitlines()
    assert bots_seen[0]["P1[2] slow"] == (3, 0, 3)
    assert bots_seen[0]["P2[1] Timer(0.01s)"] == (1, 1, 1)
    # logged, as databot's debug() did (the logger's name is the record's one 'rxbot' prefix)
    assert first.removeprefix("rxbot: ") in caplog.text
    if config.fusion:
        # a fused sync step under 'raise' is not counted (that costs time): said, not shown as 0
        assert "  P2[2] show_info: in=- out=- failed=0 in_flight=0" in first.splitlines()
        assert first.splitlines()[-1].startswith("  (in=- out=-: a sync step under the raise policy")
    else:  # unfused, every call is counted: the tick being handled is in, not yet out
        assert "  P2[2] show_info: in=1 out=0 failed=0 in_flight=0" in first.splitlines()
        assert "in=-" not in first
    # the last snapshot came after the work finished: every item through, none held
    assert bots_seen[-1]["P1[2] slow"] == (5, 5, 0)


def test_bots_and_debug_after_the_run_describe_that_run():
    config.metrics = True  # sync steps counted too

    def double(x):
        return x * 2

    def not_two(x):
        return None if x == 2 else x

    Pipe(range(4), double, not_two, print)
    BotFrame.run()
    bots = BotFrame.bots
    assert [b.label for b in bots] == ["Loop(range(0, 4))", "double", "not_two", "print"]
    assert [(b.inp, b.out, b.failed, b.in_flight) for b in bots] == [
        (1, 4, 0, 0), (4, 4, 0, 0), (4, 3, 0, 0), (3, 0, 0, 0)]  # print returns None
    assert all(b.stopped and b.stoped for b in bots)
    text = BotFrame.debug()
    assert text.splitlines()[0].startswith("rxbot: 1 pipe(s) ended after ")
    assert "  P1[3] not_two: in=4 out=3 failed=0 filtered=1 in_flight=0 (stopped)" in text.splitlines()
