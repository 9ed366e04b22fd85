"""An all-sync BlockedJoin (with the routes nested in it) runs as one inline function
inside the fused segment (the optimisation pass); these cases leave its fast path:
awaitables and lazy results in a branch, failures under every policy, counts. Each is
checked against the unfused graph (map/flatten, publish+merge, fork_join)."""
from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from rxbot import BlockedJoin, BotFrame, Branch, Fork, Join, Pipe, Return, Step, config
from rxbot.plan import MAX_FUSED_DEPTH, fusable


def run(*steps, fusion=True):
    config.fusion = fusion
    out = []
    Pipe(*steps, out.append)
    report = BotFrame.run()
    return out, report


def later(x):
    """A sync step that returns a coroutine: the rest of the item finishes async."""
    async def value():
        await asyncio.sleep(0)
        return x * 10
    return value()


def test_routes_of_sync_steps_are_fused_and_async_ones_are_not():
    async def a(x):
        return x

    config.fusion = True  # what the pass fuses; RXBOT_NO_FUSION=1 turns the pass off
    sync_routes = BlockedJoin(lambda x: x, Join(lambda x: x, Return(lambda x: x)))
    assert fusable(sync_routes)
    assert not fusable(BlockedJoin(lambda x: x, Join(lambda x: x, a)))
    assert not fusable(BlockedJoin(Step(lambda x: x, retries=2)))
    assert fusable(Join(lambda x: x)) and fusable(Branch(lambda x: x, Return(lambda x: x)))
    assert not fusable(Join(lambda x: x, a)) and not fusable(Branch(Step(lambda x: x, retries=2)))
    deep = lambda x: x  # noqa: E731
    for _ in range(MAX_FUSED_DEPTH):
        deep = Return(deep)
    assert fusable(deep) and not fusable(Return(deep))  # Python's limit of nested blocks
    config.fusion = False  # the honest unfused graph fuses nothing
    assert not fusable(sync_routes) and not fusable(lambda x: x)


@pytest.mark.parametrize("fusion", [True, False])
def test_a_coroutine_returned_inside_a_branch_is_awaited(fusion):
    out, _ = run(range(4), BlockedJoin(Join(later, lambda x: [x, x], lambda x: (y for y in range(x)))),
                 fusion=fusion)
    assert sorted(Counter(t[0]) for t in out) == sorted(
        Counter([x * 10, x, x, *range(x)]) for x in range(4))


@pytest.mark.parametrize("fusion", [True, False])
def test_blocked_join_with_an_awaitable_branch_keeps_its_tuples(fusion):
    out, _ = run(range(3), BlockedJoin(later, lambda x: None, lambda x: [x, -x]), fusion=fusion)
    assert sorted(out) == [(0, None, [0, 0]), (10, None, [1, -1]), (20, None, [2, -2])]


def bad_on_2(x):
    if x == 2:
        raise ValueError("bad 2")
    return x


@pytest.mark.parametrize("fusion", [True, False])
def test_failures_inside_an_inline_branch_follow_the_step_policy(fusion):
    out, report = run(range(4), BlockedJoin(Return(Step(bad_on_2, on_error="ignore"), lambda x: x + 100)),
                      fusion=fusion)
    assert Counter(out) == Counter([(100,), (101,), (None,), (103,)])  # inputs run concurrently
    assert report["P1[2] BlockedJoin/1[1] Return/1[1] bad_on_2"].dropped == 1

    out, _ = run(range(4), BlockedJoin(Join(Step(bad_on_2, on_error="pipein"))), fusion=fusion)
    assert Counter(t[0] if not isinstance(t[0], ValueError) else "E" for t in out) == Counter([0, 1, "E", 3])

    with pytest.raises(ValueError, match="bad 2") as info:
        run(range(4), BlockedJoin(Branch(bad_on_2)), fusion=fusion)
    assert info.value.rxbot_step == "bad_on_2"


@pytest.mark.parametrize("fusion", [True, False])
def test_route_and_branch_step_counts(fusion):
    config.metrics = True
    out, report = run(range(6), BlockedJoin(Return(lambda x: x * 2, route_func=lambda x: x % 3 == 0)),
                      fusion=fusion)
    assert sorted(out) == [(0,), (1,), (2,), (4,), (5,), (6,)]
    route = report.steps[next(k for k in report.steps if k.positions == (2, 1, 1))]  # found by StepId
    assert (route.inp, route.out) == (6, 2)  # a route counts what it saw and what it matched
    inner = report.steps[next(k for k in report.steps if k.positions == (2, 1, 1, 1, 1))]
    assert (inner.inp, inner.out) == (2, 2)


# ------------------------------------------------------ routes generated into fused code


def odd(x):
    if x == 5:
        raise ValueError("no 5")
    return x % 2


def test_a_fused_route_counts_like_the_route_operator(both_builds):
    """Matched and unmatched items add up to the route's items in, on the generated code
    as on the route operator (a route always counts, metrics or not)."""
    side = []
    out, report = run(range(8), Return(lambda x: -x, route_func=lambda x: x % 2, name="ret"),
                      Branch(side.append, route_type=str), Fork(side.append), fusion=both_builds)
    assert out == [0, -1, 2, -3, 4, -5, 6, -7] and side == out
    ret, branch, fork = (report[k] for k in ("P1[2] ret", "P1[3] Branch(str)", "P1[4] Fork"))
    assert (ret.inp, ret.out) == (8, 4)
    assert (branch.inp, branch.out) == (8, 0)
    assert (fork.inp, fork.out) == (8, 8)


def test_a_failing_route_func_follows_the_route_policy_in_generated_code(both_builds):
    config.exception_policy = config.Exception_pipein  # the conftest fixture resets config
    out, report = run(range(8), Return(lambda x: -x, route_func=odd, name="ret"), fusion=both_builds)
    errors = [o for o in out if isinstance(o, ValueError)]
    assert [o for o in out if not isinstance(o, ValueError)] == [0, -1, 2, -3, 4, 6, -7]
    assert len(errors) == 1 and errors[0].rxbot_item == 5
    ret = report["P1[2] ret"]
    assert (ret.inp, ret.out) == (8, 3)


@pytest.mark.parametrize("inside", ["pipe", "branch"])
def test_a_full_segment_stops_its_chunk_so_deferred_work_stays_bounded(inside):
    """At the end of a pipe the generated chunk loop checks the gate only after a slow
    path; a sync step returning coroutines fills the segment's slots, which must stop
    the source's slice at once (not 256 coroutines later)."""
    config.fusion = True
    outstanding = worst = calls = 0

    def later_sink(x):
        nonlocal outstanding, worst, calls
        calls += 1
        outstanding += 1
        worst = max(worst, outstanding)

        async def finish():
            nonlocal outstanding
            await asyncio.sleep(0)
            outstanding -= 1

        return finish()

    step = Step(later_sink, concurrency=4)
    Pipe(list(range(1000)), step if inside == "pipe" else Branch(step))
    BotFrame.run()
    assert calls == 1000 and outstanding == 0
    assert worst <= 5  # 4 in the slots, 1 queued when they filled


@pytest.mark.parametrize("fusion", [True, False])
def test_a_blocked_join_of_plain_steps_keeps_every_rule(fusion):
    """The generated BlockedJoin (plain steps, uncounted): one value, None, a list, a
    coroutine, share, and a failure that names the branch's step."""
    out, _ = run(range(4), BlockedJoin(lambda x: x + 1, lambda x: None if x % 2 else x,
                                      lambda x: [x] * (x % 3), later), fusion=fusion)
    slot = {0: None, 1: "one", 2: "list"}  # [x] * (x % 3): no output, one, several
    assert sorted(out) == [(x + 1, None if x % 2 else x, {None: None, "one": x, "list": [x, x]}[slot[x % 3]], x * 10)
                           for x in range(4)]
    out, _ = run(range(3), BlockedJoin(lambda x: x, lambda x: -x, share=True), fusion=fusion)
    # unfused, the BlockedJoin is an async boundary, so a shared item may overtake tuples
    assert Counter(out) == Counter([(0, 0), 0, (1, -1), 1, (2, -2), 2])
    with pytest.raises(ValueError, match="bad 2") as info:
        run(range(4), BlockedJoin(lambda x: x, bad_on_2), fusion=fusion)
    assert info.value.rxbot_step == "bad_on_2"
    out, report = run(range(4), BlockedJoin(lambda x: x, Step(bad_on_2, on_error="ignore")), fusion=fusion)
    assert sorted(out) == [(0, 0), (1, 1), (2, None), (3, 3)]


# ------------------------------------------- a BlockedJoin of plain async steps, evaluated


class InFlight:
    """Wraps ``async def`` steps to count how many of their calls run at once."""

    def __init__(self):
        self.running = self.peak = 0

    def counted(self, value, pause=0.0):
        async def step(x):
            self.running += 1
            self.peak = max(self.peak, self.running)
            await asyncio.sleep(pause)
            self.running -= 1
            return value(x)

        return step


def test_async_branches_of_one_item_run_concurrently_and_keep_their_slots(both_builds):
    calls = InFlight()
    a = calls.counted(lambda x: x + 1)

    async def b(x):
        return await a(x) * 10

    out, _ = run(range(5), BlockedJoin(a, b, lambda x: None), fusion=both_builds)
    assert sorted(out) == [(x + 1, (x + 1) * 10, None) for x in range(5)]
    assert calls.peak >= 2  # awaited together, not one branch after the other


def test_an_async_step_with_its_own_concurrency_keeps_it_inside_a_blocked_join(both_builds):
    calls = InFlight()
    slow = calls.counted(lambda x: x, pause=0.001)

    out, _ = run(range(20), BlockedJoin(Step(slow, concurrency=2, name="slow"), lambda x: -x), fusion=both_builds)
    assert sorted(out) == [(x, -x) for x in range(20)]
    assert calls.peak <= 2


def test_a_failing_async_branch_follows_its_step_policy(both_builds):
    async def bad(x):
        await asyncio.sleep(0)
        if x == 2:
            raise ValueError("bad 2")
        return x

    out, _ = run(range(4), BlockedJoin(Step(bad, on_error="ignore"), lambda x: x), fusion=both_builds)
    assert sorted(out, key=lambda t: t[1]) == [(0, 0), (1, 1), (None, 2), (3, 3)]
    with pytest.raises(ValueError, match="bad 2") as info:
        run(range(4), BlockedJoin(bad, lambda x: x), fusion=both_builds)
    assert info.value.rxbot_step == "bad"


def test_each_output_of_a_fan_out_in_a_branch_runs_the_rest_once(both_builds):
    """A list result whose second element meets an awaitable further on: the elements
    before it are not run again (their side effects happen once)."""
    calls = []

    def then(v):
        calls.append(v)
        return later(v) if v == 2 else v

    out, _ = run([7], BlockedJoin(Pipe(lambda x: [1, 2, 3], then), lambda x: x), fusion=both_builds)
    assert out == [([1, 20, 3], 7)]
    assert sorted(calls) == [1, 2, 3]


@pytest.mark.parametrize("head", ["join", "blocked", "fork"])
def test_a_route_at_the_head_of_a_segment_counts_every_item_of_a_chunk(both_builds, head):
    """A route matching every item, first in its generated segment, is counted once per
    chunk of the source (not per item): the numbers are the same as the operator's, for
    a list, for a generator (one item at a time) and when the run stops part-way."""
    route = {"join": lambda: Join(lambda x: x, lambda x: -x, name="r"),
             "blocked": lambda: BlockedJoin(lambda x: x, lambda x: -x, name="r"),
             "fork": lambda: Fork(lambda x: x, name="r")}[head]
    for source in (list(range(600)), (x for x in range(600))):
        _, report = run(source, route(), fusion=both_builds)
        assert (report["P1[2] r"].inp, report["P1[2] r"].out) == (600, 600)

    def stop_at_300(x):
        if x in (300, (300, -300)):
            raise ValueError("stop")
        return x

    config.fusion = both_builds
    pipe = Pipe(list(range(600)), route(), stop_at_300)
    with pytest.raises(ValueError):
        BotFrame.run()
    source, counted = pipe.report["P1[1] Loop(list[600])"], pipe.report["P1[2] r"]
    assert 300 < counted.inp == source.out <= 600  # every item that reached it, once
