"""``rxbot.engine.demand.demand(boundary)``: a boundary's credit-based demand as a
read-only Observable (True = has room, False = full), issue 15's "make the demand
signal visible in Rx terms"."""
from __future__ import annotations

import asyncio

import pytest
from reactivex import operators as ops

from rxbot import Loop, Step
from rxbot.engine.compiler import Builder
from rxbot.engine.context import RunContext
from rxbot.engine.demand import demand
from rxbot.engine.lifecycle import run_scope, subscribe_until_end, until_end
from rxbot.engine.operators import trigger
from rxbot.walk import StepId

LIMIT = 20


async def run_watched(watch, n=10, concurrency=2):
    """Run ``Loop(range(n)) -> Step(slow, concurrency)`` built step by step (as replay
    does), calling ``watch(boundary, rt)`` on the async step's boundary before any
    item flows. Returns the items out and the boundary."""

    async def slow(x):
        for _ in range(x % 3):  # uneven finishing order
            await asyncio.sleep(0)
        return x

    steps = [Loop(range(n)), Step(slow, concurrency=concurrency)]
    ctx = RunContext(asyncio.get_running_loop())
    root = StepId.root("P1", 1)
    builder = Builder(ctx)
    step_op, bounds, plan = builder.build_span(steps, 1, 1, [], root, terminal=True)
    loop_op, _, _ = builder.build_span(steps, 0, 0, bounds, root)
    watch(plan.boundary, plan.rt)
    out: list = []
    async with run_scope(ctx, []):
        done, _ = subscribe_until_end(ctx, trigger(ctx, 0).pipe(loop_op, step_op), out.append)
        await asyncio.wait_for(until_end(ctx, [done]), LIMIT)
    assert ctx.error is None
    return out, plan.boundary


async def test_an_async_step_with_two_slots_shows_full_and_room_in_order():
    seen = []  # (room, items in flight at that moment)

    def watch(boundary, rt):
        demand(boundary).subscribe(lambda room: seen.append((room, rt.in_flight)))

    out, _ = await run_watched(watch)
    assert sorted(out) == list(range(10))
    rooms = [room for room, _ in seen]
    assert rooms[0] is True  # the current state first: an idle step has room
    assert all(a is not b for a, b in zip(rooms, rooms[1:]))  # only changes, alternating
    assert rooms[-1] is True  # the run drained it
    assert rooms.count(False) >= 2  # ten items through two slots filled them again and again
    assert all(in_flight == 2 for room, in_flight in seen if room is False)  # full = both slots taken


async def test_watching_changes_nothing_and_two_views_see_the_same():
    baseline, _ = await run_watched(lambda boundary, rt: None)
    first, second = [], []

    def watch(boundary, rt):
        demand(boundary).subscribe(first.append)
        demand(boundary).subscribe(second.append)

    out, _ = await run_watched(watch)
    assert out == baseline  # same items in the same order: a view, not a participant
    assert first == second and False in first


async def test_a_view_disposed_from_inside_a_notification_leaves_the_flow_intact():
    """``take(3)`` disposes while the boundary is notifying its gates: the real gates
    after the view must still be updated (a lost update would hang or overrun)."""
    seen = []
    completed = []

    def watch(boundary, rt):
        demand(boundary).pipe(ops.take(3)).subscribe(seen.append, on_completed=lambda: completed.append(1))

    out, boundary = await run_watched(watch, n=50)
    assert sorted(out) == list(range(50))
    assert seen == [True, False, True] and completed == [1]
    assert all(type(g).__name__ == "Gate" for g in boundary.gates)  # the view has left


async def test_a_failing_subscriber_gets_its_error_and_the_flow_goes_on():
    errors = []

    def watch(boundary, rt):
        def on_next(room):
            if room is False:
                raise RuntimeError("subscriber bug")

        demand(boundary).subscribe(on_next, on_error=errors.append)

    out, boundary = await run_watched(watch)
    assert sorted(out) == list(range(10))
    assert [str(e) for e in errors] == ["subscriber bug"]
    assert all(type(g).__name__ == "Gate" for g in boundary.gates)


@pytest.mark.parametrize("full", [False, True])
def test_a_view_starts_with_the_current_state(full):
    from rxbot.engine.gate import Boundary

    boundary = Boundary()
    boundary.set_full(full)
    seen: list = []
    sub = demand(boundary).subscribe(seen.append)
    boundary.set_full(not full)
    sub.dispose()
    boundary.set_full(full)  # after dispose: not seen
    assert seen == [not full, full]
