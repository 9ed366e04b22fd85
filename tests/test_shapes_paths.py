"""Fast on every shape (issue 24): any iterator source reaches fused code in slices, and
an async step after sync steps or a Filter draws its works through the fused segment
between, as cheaply as right after the source. What must hold whatever the path: the
items and their order, calls in flight <= concurrency, what the source runs ahead is
bounded by the slots (not its length), exact counts, and other tasks keep running."""
from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from benchmarks.bench_core import inc, keep_even, triple
from rxbot import BotFrame, Filter, Loop, Pipe, Step, config
from rxbot.engine.gate import Boundary


def is_even(x: int) -> bool:
    return x % 2 == 0


#: the steps between the source and the async sink, what they make of an element, and
#: which source element a sink input came from
BETWEEN = {
    "one sync step": ([inc], lambda x: [x + 1], lambda y: y - 1),
    "three sync steps": ([inc, keep_even, triple], lambda x: [(x + 1) * 3] if (x + 1) % 2 == 0 else [],
                         lambda y: y // 3 - 1),
    "a Filter": ([Filter(route_func=is_even)], lambda x: [x] if x % 2 == 0 else [], lambda y: y),
    "a step returning a list": ([lambda x: [x, -x] if x % 5 == 0 else x],
                                lambda x: [x, -x] if x % 5 == 0 else [x], abs),
}


def run_through(n: int, between: str, concurrency: int):
    """A generator of ``n`` ints, the steps of ``between``, an async sink: what the sink
    saw, the peak calls in flight, and how far the source ran ahead at worst."""
    steps, _, origin = BETWEEN[between]
    state = {"pulled": 0, "finished": 0, "ahead": 0, "now": 0, "peak": 0}
    seen = []

    def source():
        for i in range(n):
            state["pulled"] += 1
            state["ahead"] = max(state["ahead"], state["pulled"] - state["finished"])
            yield i

    def done(x):
        # every source element up to this one has been decided (its output reached a
        # call, or it was dropped): what is pulled beyond is held somewhere
        state["finished"] = max(state["finished"], origin(x) + 1)
        return x

    async def sink(x: int) -> None:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        seen.append(x)
        await asyncio.sleep(0)
        state["now"] -= 1

    Pipe(source(), *steps, Step(lambda x: sink(done(x)), concurrency=concurrency))
    report = BotFrame.run()
    return seen, state, report


@pytest.mark.parametrize("between", list(BETWEEN))
def test_an_async_step_after_sync_steps_gets_every_item_in_order(both_builds, between):
    _, expected, _ = BETWEEN[between]
    seen, state, _ = run_through(3_000, between, 1)
    assert seen == [y for x in range(3_000) for y in expected(x)]
    assert state["peak"] == 1


@pytest.mark.parametrize("between", list(BETWEEN))
@pytest.mark.parametrize("concurrency", [1, 4, 32])
def test_drawing_through_a_segment_keeps_the_bounds(both_builds, between, concurrency):
    """Calls in flight never above ``concurrency``; what the source runs ahead of the
    sink's calls is bounded by the slots and does not grow with the source's length."""
    _, expected, _ = BETWEEN[between]
    worst = []
    for n in (1_000, 5_000):
        seen, state, _ = run_through(n, between, concurrency)
        assert sorted(seen) == sorted(y for x in range(n) for y in expected(x))
        assert state["peak"] <= concurrency
        assert state["pulled"] == n
        worst.append(state["ahead"])
    assert worst[0] == worst[1] <= concurrency + 3  # the slots, a list's second item, one pulled


def test_the_workers_draw_through_the_segment_instead_of_feeding(monkeypatch):
    """A generator -> sync step -> async step: once the step is full its workers run the
    source's next elements through the fused segment themselves, not through the
    source's feeder (``Boundary.feed`` once per element, as before)."""
    config.fusion = True  # the fused segment's path; RXBOT_NO_FUSION=1 turns the pass off
    feeds = [0]
    original = Boundary.feed

    def counted(self):
        feeds[0] += 1
        return original(self)

    monkeypatch.setattr(Boundary, "feed", counted)

    async def sink(x: int) -> None:
        await asyncio.sleep(0)

    Pipe((i for i in range(5_000)), inc, Step(sink, concurrency=4))
    report = BotFrame.run()
    assert report.find("sink").inp == 5_000
    assert feeds[0] < 5_000 // 10


def test_drawn_counts_are_exact(both_builds):
    async def sink(x: int) -> None:
        await asyncio.sleep(0)

    Pipe((i for i in range(4_000)), Filter(route_func=is_even), inc, Step(sink, concurrency=4))
    report = BotFrame.run()
    assert report.find("Loop(generator)").out == 4_000
    assert report.find("sink").inp == 2_000


@pytest.mark.parametrize("make", [lambda n: (i for i in range(n)), lambda n: Loop(iter(range(n))),
                                  lambda n: itertools.islice(itertools.count(), n)])
def test_an_iterator_source_in_slices_gives_every_item_in_order(both_builds, make):
    out = []
    Pipe(make(3000), inc, keep_even, out.append)
    BotFrame.run()
    assert out == [x + 1 for x in range(3000) if (x + 1) % 2 == 0]


def test_a_generator_function_first_step_in_slices_gives_every_item():
    out = []

    def numbers(_):
        yield from range(2500)

    Pipe(numbers, inc, out.append)
    BotFrame.run()
    assert out == list(range(1, 2501))


# ------------------------------------------- an async generator's items through fused steps
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(length=st.sampled_from([0, 1, 2, 255, 256, 257, 511, 512, 700]),
       breaks_at=st.one_of(st.none(), st.integers(0, 700)),
       bad_every=st.integers(2, 40))
def test_an_async_generators_items_through_fused_steps_are_counted_exactly(both_builds, length, breaks_at,
                                                                             bad_every):
    """An async generator step (a Query's rows) into sync steps: the fused segment takes
    its items ``yield_every`` at a time in one coroutine (``amany``), counting them with
    its loop's own counter. Whatever the length (around the chunk's 256), wherever the
    generator itself raises and however many items a step fails on: every item yielded
    is counted out of the generator and into the next step once, fused or not, and the
    ones that did not fail reach the end in order."""
    out = []

    async def rows(_):
        for i in range(length):
            if i == breaks_at:
                raise LookupError(f"row {i}")
            if i % 97 == 0:
                await asyncio.sleep(0)
            yield i

    def picky(x):
        if x % bad_every == 0:
            raise ValueError(x)
        return x

    Pipe(Step(rows, on_error="ignore"), Step(picky, on_error="ignore"), inc, out.append)
    report = BotFrame.run()
    yielded = length if breaks_at is None or breaks_at >= length else breaks_at
    assert out == [x + 1 for x in range(yielded) if x % bad_every]
    assert report.find("rows").out == yielded
    assert report.find("picky").inp == yielded
    assert report.find("picky").failed == len(range(0, yielded, bad_every))
    assert report.find("rows").failed == (yielded < length)


def test_a_long_stretch_the_steps_drop_gives_the_loop_turns_while_the_workers_draw(both_builds):
    """While an async step's workers draw through the fused steps before it, a stretch of
    items those steps drop (a Filter matching none of them) is not run in one go: after
    ``config.yield_every`` items in a row without an output the worker lets go of the
    source, which goes on pushing and pausing as a source does (by time: every
    ``SLICE_SECONDS``, at the latest ``TURN_SECONDS``), so the other tasks on the loop
    get turns along the stretch. Each dropped item costs ~5 µs here, the stretch about
    0.1 s: a worker that ran it in one go would give no turn at all."""
    stretch = 20_000
    turns = 0
    seen: list = []  # the other task's turns so far, as each item is looked at

    def wanted(x: int) -> bool:
        seen.append(turns)
        if x < 64 or x >= 64 + stretch:
            return True
        until = time.perf_counter() + 5e-6
        while time.perf_counter() < until:
            pass
        return False

    async def sink(x: int) -> None:
        await asyncio.sleep(0)

    Pipe((i for i in range(stretch + 128)), Filter(route_func=wanted), Step(sink, concurrency=4))

    async def main():
        nonlocal turns
        run = asyncio.ensure_future(BotFrame.run_async())
        while not run.done():
            turns += 1
            await asyncio.sleep(0)
        return await run

    report = asyncio.run(main())
    assert report.error is None and report.find("sink").inp == 128
    assert seen[64 + stretch - 1] - seen[64] >= 2  # the TURN_SECONDS guarantee, at least
