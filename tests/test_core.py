"""The core contract (DESIGN §2): steps, return-value rules, nodes, runs, flow control."""
from __future__ import annotations

import asyncio
import functools
import warnings
from collections import Counter

import pytest

import rxbot
from rxbot import BotFrame, Loop, Node, Pipe, Step, Timer, config
from rxbot.errors import PipelineError


def run(*steps):
    """Run one pipe ending in a collector; return what reached the end, in order."""
    out = []
    Pipe(*steps, out.append)
    BotFrame.run()
    return out


# ---------------------------------------------------------------- return-value rules
@pytest.mark.usefixtures("both_builds")
def test_none_drops_the_item():
    assert run(range(6), lambda x: x if x % 2 else None) == [1, 3, 5]


@pytest.mark.parametrize("value", ["text", b"raw", (1, 2), {"k": 1}, 3.5, 7, True, 1j])
def test_single_values_are_one_item(value):
    assert run(range(2), lambda x: value) == [value, value]


def test_bytes_are_never_split_into_ints():
    assert run([b"abc"], lambda b: b + b"d") == [b"abcd"]


def test_custom_objects_are_one_item():
    class Thing:
        pass

    t = Thing()
    assert run(range(3), lambda x: t) == [t, t, t]


@pytest.mark.usefixtures("both_builds")
@pytest.mark.parametrize("make", [list, set, lambda v: range(len(v)), lambda v: (i for i in v), iter])
def test_iterables_flatten(make):
    got = run([3], lambda n: make(range(n)))
    assert sorted(got) == [0, 1, 2]


@pytest.mark.usefixtures("both_builds")
def test_generator_function_step_flattens_in_order():
    def gen(x):
        yield x
        yield x * 10

    assert run([1, 2], gen) == [1, 10, 2, 20]


def test_async_generator_flattens_as_it_yields():
    async def agen(x):
        for i in range(x):
            await asyncio.sleep(0)
            yield (x, i)

    got = run([1, 3], agen)
    assert Counter(got) == Counter([(1, 0), (3, 0), (3, 1), (3, 2)])


@pytest.mark.usefixtures("both_builds")
def test_coroutine_is_awaited_then_rules_apply():
    async def double_list(x):
        await asyncio.sleep(0)
        return [x, x] if x else None

    assert sorted(run(range(3), double_list)) == [1, 1, 2, 2]


@pytest.mark.usefixtures("both_builds")
def test_sync_callable_returning_a_coroutine_is_awaited():
    async def fetch(x):
        await asyncio.sleep(0)
        return x * 2

    assert sorted(run(range(4), lambda x: fetch(x))) == [0, 2, 4, 6]


def test_builtin_classes_are_converter_steps():
    assert run(range(3), str, lambda s: s + "!") == ["0!", "1!", "2!"]


def test_bound_methods_and_partials_are_steps():
    class Scaler:
        def __init__(self, k):
            self.k = k

        def scale(self, x):
            return x * self.k

    def add(a, x):
        return a + x

    assert run(range(3), Scaler(10).scale, functools.partial(add, 1)) == [1, 11, 21]


# ---------------------------------------------------------------- constants and sources
def test_constant_replaces_every_item():
    assert run(range(3), "x") == ["x", "x", "x"]


def test_constant_first_step_turns_the_trigger_into_the_value():
    assert run({"a": 1, "b": 2}) == [{"a": 1, "b": 2}]


def test_function_first_step_is_called_once_with_trigger_zero():
    calls = []
    assert run(lambda x: calls.append(x) or "done") == ["done"]
    assert calls == [0]


def test_loop_emits_every_element_for_each_input():
    assert run([1, 2], Loop(["a", "b"])) == ["a", "b", "a", "b"]


def test_list_range_and_generator_steps_are_loops():
    assert run([10, 20, 30]) == [10, 20, 30]
    assert run(range(3)) == [0, 1, 2]
    assert run(x * x for x in range(3)) == [0, 1, 4]


@pytest.mark.usefixtures("both_builds")
def test_timer_max_time_ticks_1_2_3():
    assert run(Timer(delay=0.001, max_time=3)) == [1, 2, 3]


@pytest.mark.usefixtures("both_builds")
def test_timer_until_stops_when_another_pipe_finished():
    async def slow(x):
        await asyncio.sleep(0.05)
        return x

    done = []
    worker = Pipe(range(3), Step(slow, concurrency=1), done.append)
    ticks = []
    Pipe(Timer(delay=0.005, until=worker.finished), ticks.append)
    assert not worker.finished()
    BotFrame.run()
    assert worker.finished() and done == [0, 1, 2]
    # it ticked while the worker ran, stopped once it finished, ticks are 1..n
    assert ticks and ticks == list(range(1, len(ticks) + 1))


@pytest.mark.usefixtures("both_builds")
def test_timer_until_true_from_the_start_still_emits_tick_1():
    """databot asks until() after each tick, so one tick always comes out."""
    assert run(Timer(delay=0.001, until=lambda: True)) == [1]


# ---------------------------------------------------------------- nodes
def test_node_init_and_close_once_per_run_even_when_shared():
    events = []

    class Counting(Node):
        async def init(self):
            events.append("init")

        async def close(self):
            events.append("close")

        def __call__(self, item):
            return item + 1

    node = Counting()
    a, b = [], []
    Pipe(range(3), node, a.append)
    Pipe(range(2), node, b.append)
    BotFrame.run()
    assert (a, b) == ([1, 2, 3], [1, 2])
    assert events == ["init", "close"]
    Pipe(range(1), node, a.append)  # a second run initialises again
    BotFrame.run()
    assert events == ["init", "close", "init", "close"]


def test_async_node_flush_emits_what_it_buffered():
    class Pairs(Node):
        def __init__(self):
            super().__init__()
            self.buf = []

        async def __call__(self, item):
            self.buf.append(item)
            if len(self.buf) == 2:
                out, self.buf = tuple(self.buf), []
                return out
            return None

        async def flush(self):
            return tuple(self.buf) if self.buf else None

    got = run(range(5), Step(Pairs(), concurrency=1))
    assert got == [(0, 1), (2, 3), (4,)]


# ---------------------------------------------------------------- runs
def test_pipes_built_before_run_run_concurrently():
    order = []

    async def tag(name):
        async def step(x):
            order.append((name, x))
            await asyncio.sleep(0.001)
            return x

        return step

    a, b = [], []

    async def slow_a(x):
        await asyncio.sleep(0.002)
        order.append("a")
        return x

    async def slow_b(x):
        await asyncio.sleep(0.002)
        order.append("b")
        return x

    Pipe(range(5), Step(slow_a, concurrency=1), a.append)
    Pipe(range(5), Step(slow_b, concurrency=1), b.append)
    BotFrame.run()
    assert a == b == [0, 1, 2, 3, 4]
    # interleaved, not one pipe after the other
    assert order[:5].count("a") < 5 and order[:5].count("b") < 5


def test_sequential_runs_in_one_script():
    assert run(range(3)) == [0, 1, 2]
    assert run(range(2), lambda x: x + 1) == [1, 2]
    assert BotFrame.pipes() == []


async def test_run_async_inside_a_running_loop():
    out = []
    Pipe(range(4), lambda x: x * 2, out.append)
    report = await BotFrame.run_async()
    assert out == [0, 2, 4, 6]
    assert report.error is None


async def test_pipe_run_async_runs_just_that_pipe():
    a, b = [], []
    p = Pipe(range(2), a.append)
    Pipe(range(2), b.append)
    await p.run_async()
    assert a == [0, 1] and b == [] and len(BotFrame.pipes()) == 1


async def test_blocking_run_inside_a_loop_says_what_to_use():
    Pipe(range(2), print)
    with pytest.raises(PipelineError, match="run_async"):
        BotFrame.run()


@pytest.mark.usefixtures("both_builds")
def test_sync_chains_preserve_order():
    data = list(range(1000))
    assert run(data, lambda x: x * 3, lambda x: [x, -x], lambda x: x + 1) == [
        v for x in data for v in (x * 3 + 1, -x * 3 + 1)
    ]


# ---------------------------------------------------------------- errors (raise policy)
@pytest.mark.usefixtures("both_builds")
def test_raise_policy_reraises_original_exception_with_step_and_item():
    def boom(x):
        if x == 3:
            raise KeyError("missing")
        return x

    with pytest.raises(KeyError) as info:
        run(range(10), boom)
    assert "'boom'" in "".join(info.value.__notes__) and "item 3" in "".join(info.value.__notes__)
    assert info.value.rxbot_step == "boom" and info.value.rxbot_item == 3


def test_raise_policy_in_async_step_does_not_hang_or_leak_tasks():
    async def aboom(x):
        await asyncio.sleep(0.001 * (x % 5))
        if x == 17:
            raise RuntimeError("async failure")
        return x

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="async failure") as info:
            run(range(1000), Step(aboom, concurrency=8), lambda x: x)
    assert "'aboom'" in "".join(info.value.__notes__)


def test_generator_step_raising_half_way_reports_the_step():
    def gen(x):
        yield 1
        raise ValueError("half way")

    with pytest.raises(ValueError) as info:
        run([5], gen)
    assert "'gen'" in "".join(info.value.__notes__)


def test_source_iterator_raising_is_reported_as_the_loop():
    def source():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError) as info:
        run(Loop(source()))
    assert "Loop" in "".join(info.value.__notes__)


def test_node_init_failure_names_the_node_and_closes_nothing_left_open():
    closed = []

    class Good(Node):
        async def close(self):
            closed.append("good")

        def __call__(self, x):
            return x

    class Bad(Node):
        async def init(self):
            raise ConnectionError("no server")

        def __call__(self, x):
            return x

    with pytest.raises(ConnectionError) as info:
        run(range(2), Good(), Bad())
    assert "Bad" in "".join(info.value.__notes__)
    assert closed == ["good"]


# ---------------------------------------------------------------- bad arguments
def test_wrong_arity_names_the_step():
    def two(a, b):
        return a

    with pytest.raises(TypeError, match=r"'two' must accept one positional argument"):
        Pipe(range(3), two)


def test_non_step_objects_are_rejected_clearly():
    with pytest.raises(TypeError, match="None is not a step"):
        Pipe(range(3), None)
    with pytest.raises(TypeError, match="pass an instance"):
        Pipe(range(3), Timer)

    async def coro_fn(x):
        return x

    with pytest.raises(TypeError, match="coroutine object"):
        Pipe(range(3), coro_fn(1))


@pytest.mark.parametrize("kwargs, arg", [
    ({"delay": -1}, "delay"), ({"delay": "1"}, "delay"), ({"max_time": -2}, "max_time"),
    ({"max_time": 0}, "max_time"),
    ({"until": 5}, "until"),
])
def test_timer_bad_arguments_name_timer_and_argument(kwargs, arg):
    with pytest.raises((TypeError, ValueError), match=rf"Timer: argument '{arg}'"):
        Timer(**kwargs)


@pytest.mark.parametrize("kwargs, arg", [
    ({"concurrency": 0}, "concurrency"), ({"on_error": "explode"}, "on_error"),
    ({"retries": -1}, "retries"), ({"timeout": 0}, "timeout"), ({"boost": "gpu"}, "boost"),
])
def test_step_bad_options_name_step_and_argument(kwargs, arg):
    with pytest.raises(ValueError, match=rf"Step 'f': argument '{arg}'"):
        Step(lambda x: x, name="f", **kwargs)


def test_loop_rejects_non_iterables_and_strings():
    with pytest.raises(TypeError, match="Loop: argument 'iterable'"):
        Loop(5)
    with pytest.raises(TypeError, match="Loop: argument 'iterable'"):
        Loop("abc")


def test_unknown_global_policy_is_a_clear_error():
    config.exception_policy = "sometimes"
    with pytest.raises(ValueError, match="exception policy must be one of"):
        run(range(2), lambda x: x)


# ---------------------------------------------------------------- flow control
def test_fast_source_into_slow_async_step_stays_bounded(tracker):
    """Items pulled from the source but not yet finished never exceed the slots."""
    async def slow(x):
        await asyncio.sleep(0)
        return x

    Pipe(Loop(tracker.source(3000)), lambda x: x + 1, Step(slow, concurrency=16), tracker.done)
    BotFrame.run()
    assert tracker.finished == 3000
    assert tracker.worst <= 16 + 1


def test_backpressure_reaches_through_flattening_and_two_async_steps(tracker):
    async def a(x):
        await asyncio.sleep(0)
        return [x, x]

    async def b(x):
        await asyncio.sleep(0.0001)
        return x

    Pipe(Loop(tracker.source(500)), Step(a, concurrency=4), Step(b, concurrency=2),
         lambda x: tracker.done(x, weight=0.5))
    BotFrame.run()
    assert tracker.finished == 500
    assert tracker.worst <= 4 + 2 + 2


def peak_tracking_step():
    """An async step that records the most calls it ever had running at once."""
    state = {"running": 0, "peak": 0}

    async def step(x):
        state["running"] += 1
        state["peak"] = max(state["peak"], state["running"])
        await asyncio.sleep(0.001)
        state["running"] -= 1
        return x

    return step, state


def test_async_step_runs_exactly_its_concurrency_in_flight():
    step, state = peak_tracking_step()
    got = run(range(200), Step(step, concurrency=7))
    assert sorted(got) == list(range(200)) and state["peak"] == 7


def test_default_concurrency_is_32():
    step, state = peak_tracking_step()
    run(range(100), step)
    assert state["peak"] == 32


@pytest.mark.usefixtures("both_builds")
def test_long_source_yields_to_other_pipes():
    """A Timer in another pipe keeps ticking while a long sync source runs."""
    ticks = []
    big = Pipe(range(300_000), lambda x: x)
    Pipe(Timer(delay=0.001, until=big.finished), ticks.append)
    BotFrame.run()
    assert len(ticks) >= 2


def test_star_import_exports_the_public_api():
    ns: dict = {}
    exec("from rxbot import *", ns)
    for name in ["Pipe", "Loop", "Timer", "Branch", "Return", "Filter", "Fork", "Join",
                 "BlockedJoin", "Step", "Node", "BotFrame", "config", "P", "B", "T", "F", "J", "Fi"]:
        assert ns[name] is getattr(rxbot, name)
    assert ns["P"] is Pipe and ns["T"] is Timer


def test_generator_step_output_is_pulled_lazily_into_a_slow_async_step(tracker):
    """A sync generator step yielding many items is pulled only as the slow step
    downstream frees slots, like a Loop (memory stays bounded)."""
    def numbers(n):
        yield from tracker.source(n)

    async def slow(x):
        await asyncio.sleep(0)
        tracker.done()
        return x

    got = run([5000], numbers, Step(slow, concurrency=4))
    assert sorted(got) == list(range(5000))
    assert tracker.worst <= 4 + 1


def test_databot_compat_settings_and_names():
    config.exception_policy = 1  # databot's number for ignore
    out = run(range(3), lambda x: 1 / (x - 1))
    assert sorted(out) == [-1.0, 1.0]
    assert config.stream == 0 and config.hierarchical == 1
    assert (Node.boost_by_thread, Node.boost_by_process) == ("thread", "process")

    class Old(Node):  # databot style: kwargs as attributes, init_param hook
        def init_param(self):
            self.host = self.kwargs.host

        def __call__(self, x):
            return (self.host, x)

    assert Old(host="h").host == "h"

    class Forgetful(Node):
        def __init__(self, k):
            self.k = k  # no super().__init__()

        def __call__(self, x):
            return x * self.k

    assert run(range(3), Forgetful(2)) == [0, 2, 4]
    from rxbot import Branch

    assert Branch(print, route_type=[int, str]).route_type == (int, str)


@pytest.mark.usefixtures("both_builds")
def test_run_report_lists_steps_in_pipe_order_at_every_level():
    from rxbot import Fork

    Pipe(range(2), Fork(Pipe(lambda x: x, lambda x: x), print), lambda x: x)
    config.metrics = True
    text = str(BotFrame.run())
    paths = [line.split(":")[0].strip() for line in text.splitlines()[1:]]
    assert [p.split(" ")[0] for p in paths] == [
        "P1[1]", "P1[2]", "P1[2]", "P1[2]", "P1[2]", "P1[3]"]
    assert paths[2].startswith("P1[2] Fork/1[1]") and paths[3].startswith("P1[2] Fork/1[2]")
    assert paths[4].startswith("P1[2] Fork/2[1]")
    # the report itself lists its steps in that order, however the graph was built
    assert [str(k) for k in BotFrame.last_report.steps] == paths


def test_lazy_iterable_returned_by_a_plain_function_is_pulled_on_demand(tracker):
    """``lambda _: range(n)`` (or any iterator a function returns) is expanded under flow
    control too, not all at once into the next step's queue."""
    async def slow(x):
        await asyncio.sleep(0)
        tracker.done()
        return x

    got = run([0], lambda _: tracker.source(5000), Step(slow, concurrency=4))
    assert sorted(got) == list(range(5000))
    assert tracker.worst <= 4 + 1


@pytest.mark.usefixtures("both_builds")
def test_lazy_results_keep_input_order_through_a_burst():
    # a list fans out at once; each element then returns a lazy range, a later step maps
    got = run([0], lambda _: [3, 1, 2], lambda n: range(n), lambda v: v * 10, lambda v: [v, -v])
    assert got == [0, 0, 10, -10, 20, -20, 0, 0, 0, 0, 10, -10]


@pytest.mark.usefixtures("both_builds")
def test_nested_lazy_results_expand_depth_first_like_nested_loops():
    got = run([2], lambda n: range(n), lambda m: (f"{m}.{j}" for j in range(2)), str.upper)
    assert got == ["0.0", "0.1", "1.0", "1.1"]


@pytest.mark.usefixtures("both_builds")
def test_long_lazy_result_does_not_starve_other_pipes():
    ticks = []
    big = Pipe(lambda _: iter(range(300_000)), lambda x: x)
    Pipe(Timer(delay=0.001, until=big.finished), ticks.append)
    BotFrame.run()
    assert len(ticks) >= 2


@pytest.mark.usefixtures("both_builds")
def test_lazy_result_failing_part_way_is_not_retried_into_duplicates():
    calls = []

    def parts(_):
        calls.append(1)

        def gen():
            yield "a"
            yield "b"
            if len(calls) == 1:
                raise ConnectionError("flaky")
            yield "c"
        return gen()

    out = []
    Pipe([0], Step(parts, on_error="retry", retries=2), out.append)
    config.exception_policy = "raise"
    with pytest.raises(ConnectionError):
        BotFrame.run()
    assert out == ["a", "b"] and calls == [1]


@pytest.mark.usefixtures("both_builds")
@pytest.mark.usefixtures("both_builds")
def test_lazy_or_awaited_result_failing_is_charged_to_its_item_and_the_rest_flows():
    """A generator failing part-way or an awaitable failing when awaited: the failure is
    the step's, for the item whose result it was, and later items still go through."""
    async def fail_on_two(x):
        if x == 2:
            raise ValueError("two")
        return x

    def gen(x):
        yield x
        if x == 1:
            raise ValueError("one")

    def parts(x):  # a plain function returning a lazy result (not a generator step)
        return gen(x)

    config.exception_policy = "ignore"
    out = []
    Pipe(range(4), Step(parts, name="parts"), Step(lambda x: fail_on_two(x), name="later"), out.append)
    report = BotFrame.run()
    assert out == [0, 1, 3]
    assert [(d.step, d.item, str(d.exception)) for d in report.dead_letters] == [
        ("parts", 1, "one"), ("later", 2, "two")]


def test_sync_nodes_flush_in_order_inside_a_fused_segment():
    class Batch(Node):
        def __init__(self, tag):
            super().__init__()
            self.tag, self.buf = tag, []

        def __call__(self, x):
            self.buf.append(x)
            if len(self.buf) == 2:
                out, self.buf = self.buf, []
                return [f"{self.tag}{out}"]
            return None

        async def flush(self):
            return [f"{self.tag}{self.buf}!"] if self.buf else None

    # the second node sees the first one's flushed output before it flushes itself
    got = run(range(3), Batch("a"), Batch("b"))
    assert got == ["b['a[0, 1]', 'a[2]!']"]
