"""rxbot.rx: raw reactivex operators as steps, pipes inside plain reactivex, Observables
as sources. Time-based cases feed atomic bursts separated by quiet gaps that are
several times the operator's window, so their output does not depend on timing."""
from __future__ import annotations

import asyncio
import threading

import pytest
import reactivex
from reactivex import operators as ops
from reactivex.scheduler.eventloop import AsyncIOScheduler

from rxbot import BotFrame, Filter, Loop, Node, Pipe, Step, Timer, config
from rxbot.errors import PipelineError
from rxbot.tree.flow import to_step
from rxbot.rx import as_operator, from_observable, op, to_observable
from rxbot.tree.step import Const, RxOp

GAP = 0.2      # quiet time between bursts
WINDOW = 0.05  # the time operators' window: GAP leaves a 0.15 s margin either side


def run(*steps):
    out = []
    Pipe(*steps, out.append)
    BotFrame.run()
    return out


async def bursts(_):
    """Three bursts of three items. Each burst is yielded without an await in between,
    so no timer can fire inside a burst."""
    for b in range(3):
        await asyncio.sleep(GAP)
        for k in range(3):
            yield b * 3 + k + 1


# -------------------------------------------------------------- operators inside pipes
def test_reactivex_operators_become_rx_steps():
    assert isinstance(to_step(ops.buffer_with_count(10), "t"), RxOp)
    assert isinstance(to_step(ops.distinct(), "t"), RxOp)


def test_buffer_with_count_then_sum():
    assert run(Loop(range(100)), ops.buffer_with_count(10), sum) == [45 + 100 * k for k in range(10)]


def test_rx_output_is_not_flattened():
    assert run(Loop(range(7)), ops.buffer_with_count(3)) == [[0, 1, 2], [3, 4, 5], [6]]


def test_distinct():
    assert run([3, 1, 3, 2, 1, 4, 2], ops.distinct()) == [3, 1, 2, 4]


def test_distinct_with_key_between_plain_steps():
    assert run(range(10), lambda x: x * 7, ops.distinct(lambda x: x % 3), lambda x: -x) == [0, -7, -14]


def test_scan_running_total():
    assert run(range(1, 6), ops.scan(lambda acc, x: acc + x, 0)) == [1, 3, 6, 10, 15]


def test_throttle_first_keeps_the_first_of_each_burst():
    assert run(bursts, ops.throttle_first(WINDOW)) == [1, 4, 7]


def test_debounce_keeps_the_last_of_each_burst():
    assert run(bursts, ops.debounce(WINDOW)) == [3, 6, 9]


def test_buffer_with_time_groups_each_burst():
    assert run(bursts, ops.buffer_with_time(WINDOW), ops.filter(bool)) == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_window_with_time_groups_each_burst():
    got = run(bursts, ops.window_with_time(WINDOW),
              ops.flat_map(lambda w: w.pipe(ops.to_list())), ops.filter(bool))
    assert got == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_buffer_with_time_over_a_timer_loses_and_reorders_nothing():
    got = run(Timer(delay=0.005, max_time=30), ops.buffer_with_time(0.02))
    assert [x for window in got for x in window] == list(range(1, 31))


def test_time_operators_run_on_the_loop_thread():
    """Their timers come from the run's AsyncIOScheduler, not from a thread scheduler."""
    main = threading.get_ident()
    seen = []
    got = run(bursts, ops.delay(WINDOW), ops.debounce(WINDOW),
              lambda x: seen.append(threading.get_ident()) or x)
    assert got == [3, 6, 9]
    assert seen == [main] * 3


def test_user_operator_wrapped_with_op():
    def evens_doubled(source):
        return source.pipe(ops.filter(lambda x: x % 2 == 0), ops.map(lambda x: x * 2))

    step = op(evens_doubled)
    assert isinstance(step, RxOp) and step.label() == "evens_doubled"
    assert run(range(7), step, lambda x: x + 1) == [1, 5, 9, 13]
    assert op(evens_doubled, name="evens").label() == "evens"


def test_op_rejects_a_non_callable():
    with pytest.raises(TypeError, match="rxbot.rx.op: argument 'fn'"):
        op(42)


def test_user_operator_returning_no_observable_is_named():
    Pipe(range(3), op(lambda source: [1, 2], name="listy"))
    with pytest.raises(TypeError, match="Rx operator 'listy' must return an Observable"):
        BotFrame.run()


def test_error_inside_an_rx_operator_ends_the_run_with_it():
    with pytest.raises(ZeroDivisionError):
        run(range(3), ops.map(lambda x: 1 / (x - 1)))


def test_error_inside_an_rx_operator_is_not_subject_to_the_ignore_policy():
    """Rx cannot resume an operator after on_error, so the policy does not apply."""
    config.exception_policy = "ignore"
    with pytest.raises(ZeroDivisionError):
        run(range(3), ops.map(lambda x: 1 / (x - 1)))


def test_flow_control_reaches_through_a_count_buffer():
    """A slow step behind buffer_with_count(10): the source is paused while the step's 4
    slots are full, so at most 4 lists (+ the one being filled) are ever outstanding."""
    pulled = [0]
    finished = [0]
    worst = [0]

    def source():
        for i in range(2000):
            pulled[0] += 1
            yield i

    async def slow(batch):
        worst[0] = max(worst[0], pulled[0] - finished[0])
        await asyncio.sleep(0)
        finished[0] += len(batch)
        return len(batch)

    got = run(Loop(source()), ops.buffer_with_count(10), Step(slow, concurrency=4))
    assert got == [10] * 200
    assert worst[0] <= 4 * 10 + 10


# ------------------------------------------------------------- Observables as sources
def test_from_observable_emits_every_item_for_each_input():
    assert run(Loop([1, 2, 3]), from_observable(lambda n: reactivex.range(n))) == [0, 0, 1, 0, 1, 2]


def test_from_observable_as_first_step():
    assert run(from_observable(reactivex.of("a", "b")), str.upper) == ["A", "B"]


def test_from_observable_with_a_timed_observable():
    got = run(from_observable(reactivex.interval(0.01).pipe(ops.take(4))), lambda x: x * 10)
    assert got == [0, 10, 20, 30]


def test_from_observable_error_follows_the_step_policy():
    step = Step(from_observable(lambda n: reactivex.of(12 // n), name="twelve_by"), on_error="ignore")
    out = []
    Pipe(Loop([1, 0, 3]), step, out.append)
    report = BotFrame.run()
    assert out == [12, 4]
    stats = report.find("twelve_by")
    assert (stats.failed, stats.dropped) == (1, 1)


def test_from_observable_rejects_other_values():
    with pytest.raises(TypeError, match="from_observable: argument 'source'"):
        from_observable(42)


def test_an_observable_directly_in_a_pipe_is_a_source():
    assert not isinstance(to_step(reactivex.of(1), "probe"), Const)
    assert run(reactivex.of(1, 2, 3), lambda x: x * 2) == [2, 4, 6]


# ------------------------------------------------------- pipes inside plain reactivex
class Recorder(Node):
    """An async node that records its lifecycle and the order of events."""

    def __init__(self, events, fail_on=None, fail_init=False):
        super().__init__()
        self.events = events
        self.fail_on = fail_on
        self.fail_init = fail_init

    async def init(self):
        self.events.append("init")
        if self.fail_init:
            raise RuntimeError("no connection")

    async def close(self):
        await asyncio.sleep(0)
        self.events.append("close")

    async def __call__(self, x):
        await asyncio.sleep(0)
        if x == self.fail_on:
            raise KeyError(x)
        return x * 10


async def collect(observable, scheduler=None, events=None):
    """Subscribe like plain reactivex code; return (items, error) once it terminates."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    items = []

    def on_error(exc):
        if events is not None:
            events.append("on_error")
        done.set_result(exc)

    def on_completed():
        if events is not None:
            events.append("on_completed")
        done.set_result(None)

    observable.subscribe(items.append, on_error, on_completed,
                         scheduler=scheduler or AsyncIOScheduler(loop))
    return items, await done


async def until(condition, limit=500):
    """Let the loop run until ``condition()`` (a bound on iterations, not a time assertion)."""
    for _ in range(limit):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


def _others():
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def test_to_observable_of_a_pipe_in_a_reactivex_chain():
    events = []
    pipe = Pipe(Loop(range(5)), Step(Recorder(events), concurrency=1), lambda x: x + 1, name="tens")
    obs = to_observable(pipe).pipe(ops.map(lambda x: -x), ops.to_list())
    assert BotFrame.pipes() == []  # adopted by the Observable, not run by BotFrame.run()
    items, error = await collect(obs, events=events)
    assert error is None
    assert items == [[-1, -11, -21, -31, -41]]
    assert events == ["init", "close", "on_completed"]  # resources released before completion
    assert pipe.finished()
    assert pipe.report["tens[2] Recorder"].inp == 5
    assert _others() == []


async def test_to_observable_of_steps_with_a_trigger_item():
    items, error = await collect(to_observable([lambda n: range(n), lambda x: x * x], item=4))
    assert (items, error) == ([0, 1, 4, 9], None)


async def test_to_observable_is_cold_each_subscription_is_a_run():
    events = []
    obs = to_observable([Loop([1, 2]), Recorder(events)])
    assert await collect(obs) == ([10, 20], None)
    assert await collect(obs) == ([10, 20], None)
    assert events == ["init", "close", "init", "close"]


async def test_a_pipe_run_as_an_observable_is_listed_by_bots_while_it_runs():
    """BotFrame.bots and debug() list the steps of a pipe running as an Observable, as
    they do for BotFrame.run(): live while it runs, that run once it has ended."""
    seen = []

    async def slow(x: int) -> int:
        await asyncio.sleep(0)
        seen.append({b.label: (b.inp, b.stopped) for b in BotFrame.bots})
        return x

    pipe = Pipe(Loop([1, 2, 3]), Step(slow, concurrency=1), name="watched")
    assert await collect(to_observable(pipe)) == ([1, 2, 3], None)
    assert seen[-1]["slow"] == (3, False)  # counted live, not stopped yet
    after = {b.label: (b.inp, b.stopped) for b in BotFrame.bots}
    assert after["slow"] == (3, True)
    assert [str(b.path) for b in BotFrame.bots] == ["watched[1] Loop(list[3])", "watched[2] slow"]  # flow order
    assert "watched" in BotFrame.debug() or "slow" in BotFrame.debug()


async def test_to_observable_raise_policy_gives_on_error_after_close():
    events = []
    items, error = await collect(to_observable([Loop([1, 2, 3]), Step(Recorder(events, fail_on=2), concurrency=1)]),
                                 events=events)
    assert items == [10]
    assert isinstance(error, KeyError) and error.args == (2,)
    assert events == ["init", "close", "on_error"]
    assert _others() == []


async def test_to_observable_ignore_policy_keeps_going():
    config.exception_policy = "ignore"
    items, error = await collect(to_observable([Loop([1, 2, 3]), Step(Recorder([], fail_on=2), concurrency=1)]))
    assert (items, error) == ([10, 30], None)


async def test_to_observable_failing_init_pulls_nothing():
    events = []
    pulled = []
    items, error = await collect(to_observable([Loop([1, 2]), pulled.append, Recorder(events, fail_init=True)]))
    assert items == [] and pulled == []
    assert isinstance(error, RuntimeError) and "no connection" in str(error)


async def test_early_dispose_closes_nodes_and_cancels_tasks():
    events = []
    items, error = await collect(to_observable([Loop(range(1000)), Recorder(events)]).pipe(ops.take(2)))
    assert (items, error) == ([0, 10], None)
    await until(lambda: "close" in events and not _others())
    assert events == ["init", "close"]


async def test_as_operator_in_a_plain_chain():
    events = []
    segment = as_operator(Recorder(events), Filter(route_func=lambda x: x % 20 == 0), lambda x: [x, -x])
    chain = reactivex.from_iterable(range(6)).pipe(ops.map(lambda x: x + 1), segment, ops.to_list())
    items, error = await collect(chain, events=events)
    assert error is None
    assert [sorted(items[0])] == [[-60, -40, -20, 20, 40, 60]]
    assert events == ["init", "close", "on_completed"]
    assert segment.report.find("Recorder").inp == 6


async def test_as_operator_keeps_order_with_sync_steps_and_time_ops():
    chain = reactivex.from_iterable(range(10)).pipe(
        as_operator(lambda x: x * 3, lambda x: x if x % 2 else None),
        ops.buffer_with_count(2),
    )
    assert await collect(chain) == ([[3, 9], [15, 21], [27]], None)


async def test_as_operator_passes_upstream_errors_on():
    chain = reactivex.concat(reactivex.of(1, 2), reactivex.throw(ValueError("upstream"))).pipe(
        as_operator(lambda x: x + 1))
    items, error = await collect(chain)
    assert items == [2, 3]
    assert isinstance(error, ValueError) and str(error) == "upstream"


async def test_as_operator_with_a_timed_source_on_the_asyncio_scheduler():
    chain = reactivex.interval(0.005).pipe(ops.take(5), as_operator(Recorder([])), ops.to_list())
    assert await collect(chain) == ([[0, 10, 20, 30, 40]], None)


def test_subscribing_without_an_event_loop_is_a_clear_error():
    errors = []
    to_observable([lambda x: x]).subscribe(on_error=errors.append)
    assert len(errors) == 1 and isinstance(errors[0], PipelineError)
    assert "AsyncIOScheduler" in str(errors[0])


def test_subscribe_before_the_loop_runs_then_run_it():
    """The classic RxPY pattern: subscribe with AsyncIOScheduler(loop), then run the loop."""
    loop = asyncio.new_event_loop()
    try:
        done = loop.create_future()
        items = []
        to_observable([Loop([1, 2, 3]), Recorder([])]).subscribe(
            items.append, done.set_exception, lambda: done.set_result(None), scheduler=AsyncIOScheduler(loop))
        loop.run_until_complete(done)
        assert items == [10, 20, 30]
    finally:
        loop.close()


def test_bad_arguments():
    with pytest.raises(TypeError, match="to_observable: argument 'pipe_or_steps'"):
        to_observable(42)
    with pytest.raises(TypeError, match="as_operator: needs at least one step"):
        as_operator()
