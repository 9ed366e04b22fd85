"""An async step fed by its source while full (``Slots(feed=True)``, ``Boundary.feed``,
the feeder of ``iterate``): when a worker frees a slot, the source waiting at the gate
pushes its next element synchronously instead of being woken through the event loop.

What must hold whatever the speed-up: the number of calls in flight never exceeds
``concurrency``, what the source runs ahead stays bounded by the slots and does not grow
with its length, calls start in arrival order, errors and counts are those of a source
that pulled the element itself. No timing is asserted: items are counted.
"""
from __future__ import annotations

import asyncio

import pytest

from rxbot import BotFrame, Join, Loop, Pipe, Step, config


class Counted:
    """A generator of ``n`` ints that records, per element, how many elements were
    pulled and not yet finished, and in which task it was pulled."""

    def __init__(self) -> None:
        self.pulled = 0
        self.finished = 0
        self.worst = 0
        self.tasks: list = []

    def source(self, n: int):
        for i in range(n):
            self.pulled += 1
            self.worst = max(self.worst, self.pulled - self.finished)
            self.tasks.append(asyncio.current_task())
            yield i


def run_bounded(n: int, concurrency: int) -> tuple[Counted, dict]:
    counted = Counted()
    calls = {"now": 0, "peak": 0, "sum": 0}

    async def sink(x: int) -> None:
        calls["now"] += 1
        calls["peak"] = max(calls["peak"], calls["now"])
        await asyncio.sleep(0)
        calls["now"] -= 1
        calls["sum"] += x
        counted.finished += 1

    Pipe(counted.source(n), Step(sink, concurrency=concurrency))
    report = BotFrame.run()
    assert calls["sum"] == n * (n - 1) // 2
    return counted, {**calls, "report": report}


@pytest.mark.parametrize("concurrency", [1, 3, 8])
def test_fed_step_keeps_its_bounds_whatever_the_source_length(both_builds, concurrency):
    """Exactly ``concurrency`` calls in flight at the peak, never more; the source runs
    ahead by at most the slots (+1 being pulled), the same for 20x the length."""
    worst = []
    for n in (1_000, 20_000):
        counted, calls = run_bounded(n, concurrency)
        assert calls["peak"] == concurrency
        assert counted.finished == counted.pulled == n
        assert counted.worst <= concurrency + 1
        worst.append(counted.worst)
    assert worst[0] == worst[1]  # not growing with the source


def test_fed_step_counts_like_before(both_builds):
    counted, calls = run_bounded(5_000, 4)
    stats = [s for s in calls["report"].steps.values() if s.name.endswith("sink")]
    (sink,) = stats
    assert (sink.inp, sink.out, sink.filtered, sink.cancelled, sink.failed) == (5_000, 0, 5_000, 0, 0)
    (source,) = [s for s in calls["report"].steps.values() if s is not sink]
    assert source.out == 5_000
    assert not BotFrame.bots or all(b.in_flight == 0 for b in BotFrame.bots)


def test_a_full_step_pulls_the_source_from_its_own_workers():
    """The point of feeding: once the slots are full, the elements are pulled by the
    step's workers as they free slots, not by the source's task woken through the loop
    (which would cost several trips through the event loop per element)."""
    counted, _ = run_bounded(2_000, 4)
    source_task = counted.tasks[0]
    fed = sum(t is not source_task for t in counted.tasks)
    assert fed >= 2_000 - 4 * 10  # all but a few (the first fill) were fed


def test_calls_start_in_arrival_order_while_fed():
    """A worker that frees a slot must not start the fed element before the elements
    already handed to workers that have not run yet (a batching Insert relies on the
    order in which its calls start)."""
    started = []

    async def step(x: int) -> int:
        started.append(x)
        if x % 3:  # some calls return at once, some await
            await asyncio.sleep(0)
        return x

    out: list = []
    Pipe((i for i in range(500)), Step(step, concurrency=4), out.append)
    BotFrame.run()
    assert started == list(range(500))
    assert sorted(out) == list(range(500))


def test_a_generator_failing_while_fed_fails_its_own_step():
    """An element pulled by a worker of the step downstream is still the source's: its
    error is the source's failure, raised by the run (policy raise)."""
    seen = []

    def source():
        for i in range(1_000):
            if i == 300:
                raise ValueError("bad element 300")
            yield i

    async def sink(x: int) -> None:
        await asyncio.sleep(0)
        seen.append(x)

    Pipe(source(), Step(sink, concurrency=2))
    with pytest.raises(ValueError, match="bad element 300"):
        BotFrame.run()
    assert max(seen) < 300


def test_a_generator_failing_while_fed_is_dropped_under_ignore():
    def source():
        for i in range(1_000):
            if i == 300:
                raise ValueError("bad element 300")
            yield i

    seen = []

    async def sink(x: int) -> None:
        await asyncio.sleep(0)
        seen.append(x)

    saved = config.exception_policy
    config.exception_policy = "ignore"
    try:
        Pipe(source(), Step(sink, concurrency=2))
        report = BotFrame.run()
    finally:
        config.exception_policy = saved
    assert sorted(seen) == list(range(300))  # a generator ends at its first exception
    assert sum(s.failed for s in report.steps.values()) == 1


def test_two_sources_feeding_one_step_take_turns():
    """Two Loops joined into one async step: each freed slot is fed by the sources in
    turn, so neither waits for the other to run dry."""
    arrived = []

    async def sink(x: str) -> None:
        arrived.append(x)
        await asyncio.sleep(0)

    Pipe(Join(Loop(["a"] * 2_000), Loop(["b"] * 2_000)), Step(sink, concurrency=2))
    BotFrame.run()
    assert sorted(arrived) == ["a"] * 2_000 + ["b"] * 2_000
    first = arrived[:200]
    assert first.count("a") >= 50 and first.count("b") >= 50


# ------------------------------------------------------------------ drawing (Slots.draw)
# A generator right before an async step hands its iterator to the step's workers while
# the step is full: each worker pulls the next element itself when its call ends.


def test_a_full_later_step_stops_the_drawing_workers():
    """The workers draw only while their own slots alone hold the source: when a later
    step is full too, they stop, so what the source runs ahead stays bounded by the
    slots of both steps, not by the source's length."""
    worst = []
    for n in (1_000, 10_000):
        pulled = finished = peak = 0

        def source():
            nonlocal pulled, peak
            for i in range(n):
                pulled += 1
                peak = max(peak, pulled - finished)
                yield i

        async def quick(x: int) -> int:
            await asyncio.sleep(0)
            return x

        async def slow(x: int) -> None:
            nonlocal finished
            for _ in range(3):  # slower than ``quick``: its slots are the ones that fill
                await asyncio.sleep(0)
            finished += 1

        Pipe(source(), Step(quick, concurrency=4), Step(slow, concurrency=1))
        BotFrame.run()
        assert finished == pulled == n
        worst.append(peak)
    assert worst[0] == worst[1] <= 4 + 1 + 4 + 1  # both steps' slots, queued results, one pulled


def test_counts_of_drawn_elements_are_live_and_exact(both_builds):
    """Elements drawn by the workers are counted in batches (as a source counts at its
    pauses): the run's report grows while it runs and is exact at the end."""
    from rxbot.observe import live

    seen = []

    async def sink(x: int) -> None:
        await asyncio.sleep(0)
        if x == 3_000:
            report = live._running[-1].ctx.report
            seen.append((report.find("Loop(generator)").out, report.find("sink").inp))

    def source():
        yield from range(4_000)

    Pipe(source(), Step(sink, concurrency=4))
    report = BotFrame.run()
    ((out, inp),) = seen
    assert 2_000 <= out <= 4_000 and 2_000 <= inp <= 4_000
    assert report.find("Loop(generator)").out == report.find("sink").inp == 4_000
    assert report.find("sink").filtered == 4_000


def test_a_run_cancelled_while_drawn_counts_and_stops():
    """Ctrl-C (a cancelled run) while the workers draw: the run ends at once, and no
    element is pulled after it (the generator is not driven on by a stray worker)."""
    pulled = []

    def source():
        for i in range(1_000_000):
            pulled.append(i)
            yield i

    async def sink(x: int) -> None:
        await asyncio.sleep(0)
        if x == 5_000:
            raise KeyboardInterrupt

    Pipe(source(), Step(sink, concurrency=4))
    with pytest.raises(KeyboardInterrupt):
        BotFrame.run()
    assert 5_000 < len(pulled) < 5_000 + 4 * 256


@pytest.mark.parametrize("between", [(), (lambda x: x + 1,)], ids=["after the source", "through a segment"])
def test_a_run_stopped_while_drawn_balances_the_step_s_counts(both_builds, between, caplog):
    """A run stopped (Ctrl-C) while eight workers are out with works they drew (from
    the source, or through the fused step between) accounts for every one of them:
    each accepted work finished, was filtered or was cancelled (the ledger balances,
    nothing is noted on the interrupt)."""
    async def sink(x: int) -> None:
        await asyncio.sleep(0)
        if x == 5_000:
            raise KeyboardInterrupt

    Pipe((i for i in range(100_000)), *between, Step(sink, concurrency=8))
    with pytest.raises(KeyboardInterrupt) as stopped:
        BotFrame.run()
    assert not getattr(stopped.value, "__notes__", None)
    assert "ledger does not balance" not in caplog.text
    sink_stats = BotFrame.last_report.find("sink")
    assert sink_stats.inp >= 5_000
    assert sink_stats.inp == sink_stats.filtered + sink_stats.cancelled + sink_stats.failed
