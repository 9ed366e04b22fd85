"""Operators that subscribe to their source again (``repeat``, ``retry``, ``concat`` of
the same pipe) must see a fresh rxbot pipeline each time and complete: every rxbot
operator keeps its state in the subscription, not in the built graph (issue 15)."""
from __future__ import annotations

import asyncio

import pytest
import reactivex
from reactivex import operators as ops
from reactivex.scheduler.eventloop import AsyncIOScheduler

from rxbot import BotFrame, Filter, Fork, Join, Loop, Pipe, Return, Step
from rxbot.rx import op, to_observable

#: a hang is the bug these tests catch: fail clearly instead of waiting for the suite timeout
LIMIT = 20


async def run(*steps):
    out = []
    pipe = Pipe(*steps, out.append)
    report = await asyncio.wait_for(BotFrame.run_async(), LIMIT)
    assert pipe.finished()
    return out, report


async def slow_double(x):
    await asyncio.sleep(0.001)
    return x * 2


async def test_repeat_after_a_loop_completes_with_both_passes():
    out, _ = await run(range(3), ops.repeat(2))
    assert out == [0, 1, 2, 0, 1, 2]


async def test_repeat_after_sync_and_async_steps_completes():
    out, report = await run(Loop(range(4)), lambda x: x + 1, Step(slow_double, concurrency=2), ops.repeat(3))
    assert sorted(out) == sorted([2, 4, 6, 8] * 3)
    assert report.find("slow_double").inp == 12  # the step ran once per item per pass


async def test_repeat_over_routes_completes():
    out, _ = await run(Loop(range(4)), Return(lambda x: x * 10, route_func=lambda x: x % 2),
                       Join(lambda x: x, lambda x: -x), Filter(route_func=lambda x: x != 0), ops.repeat(2))
    one_pass = [0, 0, 10, -10, 2, -2, 30, -30]
    assert sorted(out) == sorted([x for x in one_pass if x != 0] * 2)


async def test_repeat_of_an_async_generator_step_completes():
    async def agen(_):
        for i in range(3):
            await asyncio.sleep(0)
            yield i

    out, _ = await run(agen, ops.repeat(2))
    assert out == [0, 1, 2, 0, 1, 2]


def flaky_map(fail_times: int, on: int = 1):
    """An ``ops.map`` failing on item ``on`` for its first ``fail_times`` attempts."""
    failures = [0]

    def f(x):
        if x == on and failures[0] < fail_times:
            failures[0] += 1
            raise ValueError("flaky")
        return x

    return ops.map(f)


async def test_retry_with_a_later_success_completes():
    out, report = await run(Loop(range(3)), flaky_map(2), ops.retry(3))
    # Rx semantics: each failed attempt emitted 0 before failing; the third succeeds
    assert out == [0, 0, 0, 1, 2]
    assert report.error is None


async def test_retry_after_an_async_step_completes():
    out, _ = await run(Loop(range(3)), Step(slow_double, concurrency=1), flaky_map(1, on=2), ops.retry(2))
    assert out[-3:] == [0, 2, 4] and out[:-3] == [0]


async def test_retry_that_never_succeeds_raises():
    with pytest.raises(ValueError, match="flaky"):
        await run(Loop(range(3)), flaky_map(10), ops.retry(2))


async def test_a_pipe_used_twice_via_to_observable_concat():
    loop = asyncio.get_running_loop()
    obs = to_observable(Pipe(Loop(range(3)), Step(slow_double, concurrency=2), lambda x: x + 1))
    done = loop.create_future()
    items = []
    reactivex.concat(obs, obs).subscribe(items.append, done.set_exception, lambda: done.set_result(None),
                                         scheduler=AsyncIOScheduler(loop))
    await asyncio.wait_for(done, LIMIT)
    assert sorted(items[:3]) == [1, 3, 5] and sorted(items[3:]) == [1, 3, 5]


async def test_an_operator_subscribed_twice_at_once_keeps_both_streams():
    """A user operator that subscribes to its source twice (merge of the source with
    itself) gets two independent rxbot subscriptions upstream."""
    twice = op(lambda source: reactivex.merge(source, source), name="twice")
    out, _ = await run(Loop(range(3)), lambda x: x + 1, Step(slow_double, concurrency=1), twice)
    assert sorted(out) == [2, 2, 4, 4, 6, 6]


@pytest.fixture
def boundaries(monkeypatch):
    """Every Boundary built during the test (to look at the gates left in them)."""
    from rxbot.engine.gate import Boundary

    made: list = []
    original = Boundary.__init__

    def init(self):
        original(self)
        made.append(self)

    monkeypatch.setattr(Boundary, "__init__", init)
    return made


async def test_subscriptions_that_ended_leave_no_gates_behind(boundaries, both_builds):
    """repeat subscribes the steps above it 100 times: each ended subscription takes its
    gate out of the boundaries below (which walk their gates at every fill and drain)."""
    out, _ = await run(range(3), lambda x: x * 2, ops.repeat(100), Step(slow_double, concurrency=2))
    assert sorted(out) == sorted([x * 4 for x in range(3)] * 100)
    assert boundaries and max(len(b.gates) for b in boundaries) <= 4


async def test_a_blocked_join_subscribed_per_item_leaves_no_gates_behind(boundaries, both_builds):
    from rxbot import BlockedJoin

    # retries keep the branch off the inline evaluator: a fresh subscription per item,
    # whose first step's gate sits on the second step's boundary (built once)
    branch = Pipe(Step(slow_double, retries=1), slow_double)
    out, _ = await run(range(200), BlockedJoin(branch, lambda x: x), lambda t: t[0] + t[1])
    assert sorted(out) == [5 * x for x in range(200)]
    assert max(len(b.gates) for b in boundaries) <= 4
