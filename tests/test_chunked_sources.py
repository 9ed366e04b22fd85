"""A list/tuple/range source hands a fused segment slices of itself (one call per
slice): the items, their order and flow control must be exactly as item by item."""
from __future__ import annotations

import asyncio

import pytest

from rxbot import BotFrame, Loop, Pipe, Step


@pytest.mark.parametrize("source", [list(range(3000)), tuple(range(3000)), range(3000)])
def test_a_sequence_source_gives_every_item_in_order(source):
    out = []
    Pipe(Loop(source), lambda x: x + 1, lambda x: x if x % 3 else None, out.append)
    BotFrame.run()
    assert out == [x + 1 for x in range(3000) if (x + 1) % 3]


def test_a_slow_step_still_throttles_a_sliced_source():
    entered = [0]
    finished = [0]
    worst = [0]

    def mark(x):
        entered[0] += 1
        worst[0] = max(worst[0], entered[0] - finished[0])
        return x

    async def slow(x):
        await asyncio.sleep(0)
        finished[0] += 1
        return x

    Pipe(Loop(list(range(2000))), mark, Step(slow, concurrency=4))
    BotFrame.run()
    assert finished[0] == 2000
    assert worst[0] <= 5  # the step's 4 slots (+ the item being handed over), not a slice of 256


def test_a_list_growing_while_iterated_is_followed_like_a_for_loop():
    items = [1, 2, 3]
    out = []

    def grow(x):
        if x < 3:
            items.append(x + 10)
        return x

    Pipe(Loop(items), grow, out.append)
    BotFrame.run()
    assert out == [1, 2, 3, 11, 12]


@pytest.mark.parametrize("shape", ["list into sync steps", "generator into sync steps",
                                   "generator, a Filter dropping most, an async step"])
def test_a_long_source_into_fused_steps_still_lets_other_tasks_run(shape):
    """Slices of a list or a generator pushed through generated code yield to the loop
    at least every millisecond (or every ``yield_every`` items when steps are slow), and
    so do workers drawing elements a Filter drops: a task started beside the pipe runs
    long before the source is done."""
    from rxbot import BotFrame, Filter, Pipe

    seen = []
    done = [0]

    def count(x):
        done[0] += 1
        return x

    async def sink(x):
        await asyncio.sleep(0)

    async def watcher():
        while True:
            seen.append(done[0])
            await asyncio.sleep(0)

    async def main():
        task = asyncio.ensure_future(watcher())
        if shape == "list into sync steps":
            Pipe(list(range(300_000)), lambda x: x + 1, count)
        elif shape == "generator into sync steps":
            Pipe((i for i in range(300_000)), lambda x: x + 1, count)
        else:
            # the first elements fill the slots (the workers draw), then the Filter drops
            # all but the last few: the workers must not run through them in one go
            Pipe((i for i in range(300_000)), count, Filter(route_func=lambda x: x < 50 or x > 299_990),
                 Step(sink, concurrency=4))
        await BotFrame.run_async()
        task.cancel()

    asyncio.run(main())
    assert done[0] == 300_000
    during = [n for n in seen if 0 < n < 300_000]
    assert len(during) >= 3  # it ran repeatedly while the source was pushed
