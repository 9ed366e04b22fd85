"""An all-sync BlockedJoin (with the routes nested in it) runs as one inline function
inside the fused segment (the optimisation pass); these cases leave its fast path:
awaitables and lazy results in a branch, failures under every policy, counts. Each is
checked against the unfused graph (map/flatten, publish+merge, fork_join)."""
from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from rxbot import BlockedJoin, BotFrame, Branch, Join, Pipe, Return, Step, config
from rxbot.engine.compiler import fusable


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
    assert not fusable(Join(lambda x: x))  # measured: no faster inline (see compiler.fusable)
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
