"""Routes (DESIGN §2): Branch, Return, Filter, Fork, Join, BlockedJoin — matching by type
and content, share/join, nesting, completion, flow control and errors in branches."""
from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from rxbot import (BlockedJoin, BotFrame, Branch, Filter, Fork, Join, Loop, Pipe, Return,
                   Step, Timer, config)


class A:
    def __init__(self, v):
        self.v = v

    def __repr__(self):
        return f"A({self.v})"


class B(A):
    def __repr__(self):
        return f"B({self.v})"


class C:
    def __init__(self, v):
        self.v = v


def items():
    return [A(1), C(2), A(3), C(4), A(5), C(6)]


ROUTES = {"Branch": Branch, "Return": Return, "Fork": Fork, "Join": Join}


def build(kind, seen, **kw):
    """A route whose sub-flow(s) record what they see and tag it."""
    def left(x):
        seen.append(("L", x.v))
        return ("L", x.v)

    def right(x):
        seen.append(("R", x.v))
        return ("R", x.v)

    if kind in ("Fork", "Join"):
        return ROUTES[kind](left, right, **kw), 2
    return ROUTES[kind](left, **kw), 1


def expected(data, match, share, join, n_branches):
    main, seen = [], []
    for x in data:
        m = match(x)
        if m:
            tags = ["L", "R"][:n_branches]
            seen += [(t, x.v) for t in tags]
        if share or not m:
            main.append(x.v if not isinstance(x, tuple) else x)
        if m and join:
            main += [(t, x.v) for t in ["L", "R"][:n_branches]]
    return main, seen


def collect(out):
    return lambda x: out.append(x if isinstance(x, tuple) else x.v)


@pytest.mark.usefixtures("both_builds")
@pytest.mark.parametrize("kind", list(ROUTES))
@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("join", [True, False])
@pytest.mark.parametrize("routing", ["type", "content", "both"])
def test_route_share_join_and_matching(kind, share, join, routing):
    kw = dict(share=share, join=join)
    if routing == "type":
        kw["route_type"] = A
        match = lambda x: isinstance(x, A)
    elif routing == "content":
        kw["route_func"] = lambda x: x.v > 2
        match = lambda x: x.v > 2
    else:
        kw["route_type"] = A
        kw["route_func"] = lambda x: x.v > 2  # only called for A instances
        match = lambda x: isinstance(x, A) and x.v > 2
    seen, out = [], []
    route, n = build(kind, seen, **kw)
    Pipe(Loop(items()), route, collect(out))
    BotFrame.run()
    want_main, want_seen = expected(items(), match, share, join, n)
    assert Counter(out) == Counter(want_main)
    assert Counter(seen) == Counter(want_seen)


def test_default_flags_of_each_route():
    assert (Branch(print).share, Branch(print).join) == (True, False)
    assert (Return(print).share, Return(print).join) == (False, True)
    assert (Fork(print).share, Fork(print).join) == (True, False)
    assert (Join(print).share, Join(print).join) == (False, True)
    assert (BlockedJoin(print).share, BlockedJoin(print).join) == (False, True)


def test_databot_route_example_type_routing():
    """databot's route1.py: class A goes to process_A only, B continues to process_B."""
    class XA: pass
    class XB: pass

    got_a, got_b = [], []

    def process_a(i):
        assert isinstance(i, XA)
        got_a.append(i)

    def process_b(i):
        assert isinstance(i, XB)
        got_b.append(i)

    Pipe(Loop([XA(), XB(), XA(), XA(), XB()]), Branch(process_a, share=False, route_type=XA), process_b)
    BotFrame.run()
    assert (len(got_a), len(got_b)) == (3, 2)


def test_route_func_only_evaluated_for_route_type():
    calls = []

    def pred(x):
        calls.append(x)
        return True

    out = []
    Pipe(Loop([1, "a", 2, "b"]), Return(lambda s: s.upper(), route_type=str, route_func=pred), out.append)
    BotFrame.run()
    assert calls == ["a", "b"] and Counter(out) == Counter([1, 2, "A", "B"])


def test_route_type_tuple():
    out = []
    Pipe(Loop([1, "a", 2.5, b"x"]), Filter(route_type=(int, float)), out.append)
    BotFrame.run()
    assert out == [1, 2.5]


def test_filter_keeps_matched_drops_rest():
    out = []
    Pipe(range(10), Filter(route_func=lambda x: x % 3 == 0), out.append)
    BotFrame.run()
    assert out == [0, 3, 6, 9]


class Vague:
    """A route_func result whose truth is even-ness, and raises for 3."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __bool__(self) -> bool:
        if self.x == 3:
            raise ValueError("no truth for 3")
        return self.x % 2 == 0


def test_a_filter_result_whose_truth_raises_fails_the_filter(both_builds):
    """The fused code calls a Filter's route_func itself (no wrapper per item) and tests
    the result's truth inside the step's try: a truth that raises is the Filter's
    failure (counted on it, its policy applies), exactly as unfused."""
    out = []
    Pipe(range(6), Filter(route_func=Vague), out.append)
    with pytest.raises(ValueError, match="no truth for 3"):
        BotFrame.run()
    assert out == [0, 2]
    assert BotFrame.last_report.find("Filter(Vague)").failed == 1


def test_multi_step_branches_from_pipes():
    out = []
    Pipe(range(4), Join(Pipe(lambda x: x + 1, lambda x: x * 10), Pipe(lambda x: -x)), out.append)
    BotFrame.run()
    assert Counter(out) == Counter([10, 20, 30, 40, 0, -1, -2, -3])
    assert BotFrame.pipes() == []


@pytest.mark.usefixtures("both_builds")
def test_three_level_nest_fork_branch_join():
    """Fork( Branch( Join(double, triple) -> record ), negate ) with exact output."""
    side = []
    out = []
    Pipe(
        range(4),
        Fork(
            Branch(Join(lambda x: x * 2, lambda x: x * 3), side.append, route_func=lambda x: x % 2 == 1),
            lambda x: -x,
            join=True,
        ),
        out.append,
    )
    BotFrame.run()
    # main: every x (Fork share=True) + Fork branch outputs: Branch shares x back (share=True,
    # join=False), negate gives -x
    assert Counter(out) == Counter([0, 1, 2, 3] + [0, 1, 2, 3] + [0, -1, -2, -3])
    # Branch matched odd x; its Join emitted 2x and 3x (not x, share=False), recorded in side
    assert Counter(side) == Counter([2, 3, 6, 9])


@pytest.mark.usefixtures("both_builds")
def test_deeper_nesting_branch_in_return_in_fork_in_join():
    out, rec = [], []
    Pipe(
        range(6),
        Join(
            Fork(Return(Branch(rec.append), lambda x: x * 100, route_func=lambda x: x > 3), join=True, share=False),
            lambda x: x,
        ),
        out.append,
    )
    BotFrame.run()
    assert Counter(out) == Counter([0, 1, 2, 3, 400, 500] + list(range(6)))
    assert Counter(rec) == Counter([4, 5])


# ---------------------------------------------------------------- BlockedJoin
def test_blocked_join_pairs_results_by_input_despite_random_delays():
    rng = random.Random(7)
    delays = {x: rng.random() * 0.003 for x in range(1000)}

    async def double(x):
        await asyncio.sleep(delays[x])
        return x * 2

    def triple(x):
        return x * 3

    out = []
    Pipe(range(1000), BlockedJoin(double, triple), out.append)
    BotFrame.run()
    assert len(out) == 1000
    assert Counter(out) == Counter((2 * x, 3 * x) for x in range(1000))


def test_blocked_join_equal_inputs_are_separate_tuples():
    out = []
    Pipe([5, 5, 5], BlockedJoin(lambda x: x + 1, lambda x: x - 1), out.append)
    BotFrame.run()
    assert out == [(6, 4)] * 3


@pytest.mark.usefixtures("both_builds")
def test_blocked_join_drop_gives_none_and_fan_out_gives_list():
    out = []
    Pipe(range(3), BlockedJoin(lambda x: x if x else None, lambda x: [x] * x, lambda x: x), out.append)
    BotFrame.run()
    assert sorted(out, key=lambda t: t[2]) == [(None, None, 0), (1, 1, 1), (2, [2, 2], 2)]


def test_blocked_join_routes_only_matched_items():
    out = []
    Pipe(Loop([1, "a", 2]), BlockedJoin(lambda x: x * 2, lambda x: x * 3, route_type=int), out.append)
    BotFrame.run()
    assert Counter(out) == Counter(["a", (2, 3), (4, 6)])


def test_databot_blockedjoin_example():
    out = []
    Pipe(Loop(range(10)), BlockedJoin(lambda i: i * 2, lambda i: i * 3), out.append)
    BotFrame.run()
    assert sorted(out) == [(2 * i, 3 * i) for i in range(10)]


# ---------------------------------------------------------------- completion
def test_run_waits_for_a_slow_branch_and_a_timer_inside_a_branch():
    slow_done, ticks = [], []

    async def slow(x):
        await asyncio.sleep(0.01)
        slow_done.append(x)

    Pipe(range(3), Fork(Step(slow, concurrency=1), Pipe(Timer(delay=0.005, max_time=2), ticks.append)))
    BotFrame.run()
    assert slow_done == [0, 1, 2]
    assert ticks == [1, 2, 1, 2, 1, 2]


# ---------------------------------------------------------------- flow control across fan-out
def test_slow_branch_throttles_the_source(tracker):
    async def slow(x):
        await asyncio.sleep(0)
        return x

    # fast main path, slow side branch: the branch's slots bound what is pulled ahead
    Pipe(Loop(tracker.source(400)), Branch(Step(slow, concurrency=3), tracker.done), lambda x: x)
    BotFrame.run()
    assert tracker.finished == 400
    assert tracker.worst <= 3 + 1


# ---------------------------------------------------------------- errors inside branches
def test_error_in_branch_raises_under_raise_policy():
    def bad(x):
        if x == 2:
            raise ValueError("branch failure")
        return x

    with pytest.raises(ValueError, match="branch failure") as info:
        Pipe(range(5), Branch(bad), print)
        BotFrame.run()
    assert "'bad'" in "".join(info.value.__notes__)


@pytest.mark.usefixtures("both_builds")
def test_error_in_branch_ignored_under_ignore_policy():
    config.exception_policy = "ignore"

    def bad(x):
        if x == 2:
            raise ValueError("branch failure")
        return x * 10

    out = []
    Pipe(range(5), Join(bad, lambda x: x), out.append)
    report = BotFrame.run()
    assert Counter(out) == Counter([0, 10, 30, 40, 0, 1, 2, 3, 4])
    assert report.find("bad").failed == 1 and report.find("bad").dropped == 1


@pytest.mark.usefixtures("both_builds")
def test_error_in_blocked_join_branch_pipein():
    config.exception_policy = "pipein"
    def bad(x):
        if x == 1:
            raise ValueError("nope")
        return x

    out = []
    Pipe(range(3), BlockedJoin(bad, lambda x: x * 3), out.append)
    BotFrame.run()
    out.sort(key=lambda t: t[1])
    assert out[0] == (0, 0) and out[2] == (2, 6)
    assert type(out[1][0]) is ValueError and str(out[1][0]) == "nope" and out[1][1] == 3
    assert out[1][0].rxbot_item == 1


def test_error_in_route_func_follows_policy():
    with pytest.raises(ZeroDivisionError):
        Pipe(range(3), Branch(print, route_func=lambda x: 1 / x))
        BotFrame.run()


@pytest.mark.parametrize("bad", [dict(route_type=5), dict(route_type=(int, "x")), dict(route_func=3),
                                 dict(share="yes"), dict(join=None)])
def test_bad_route_arguments_name_route_and_argument(bad):
    arg = next(iter(bad))
    with pytest.raises(TypeError, match=rf"Branch: argument '{arg}'"):
        Branch(print, **bad)


def test_async_route_func_is_rejected_clearly():
    async def is_even(x):
        return x % 2 == 0

    with pytest.raises(TypeError, match="route_func' must be a plain"):
        Filter(route_func=is_even)


def test_blocked_join_does_not_accumulate_per_item_state():
    import gc

    from rxbot.engine import context as context_module

    seen = []
    original = context_module.RunContext.shutdown

    async def spy(self):
        gc.collect()
        seen.append(len(self.gates))
        await original(self)

    context_module.RunContext.shutdown = spy
    try:
        Pipe(range(3000), BlockedJoin(lambda x: x, lambda x: -x))
        BotFrame.run()
    finally:
        context_module.RunContext.shutdown = original
    assert seen[0] < 100  # not two gates per input kept for the whole run
