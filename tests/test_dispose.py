"""A disposed subscription stops its source at the next element (RxPY's ``while not
disposed``), on both builds.

``ops.take(3)`` disposes its upstream from inside the push of the third item, and the
task making that push is often the source's own (a Loop, a generator step, a Timer):
cancelling it there would throw into whatever it awaits next, so ``Subscription.dispose``
halts the subscription's gate instead, and the pulling loop returns at its next element,
counting the sequence it cut short as ``cancelled``. These tests count the elements a
source *pulled* (not the items that came out, which were right before): an endless
source that went on pulling into the void kept the loop busy until the run ended, and
spun for good inside a branch of a pipe that ran on. No timing is measured; the other
pipes keep the run going for a fixed number of loop turns."""
from __future__ import annotations

import asyncio
import itertools

import pytest
from reactivex import operators as ops

from rxbot import BotFrame, Join, Loop, Pipe, Step, Timer

pytestmark = pytest.mark.usefixtures("both_builds")

#: a hang is one of the bugs caught here: fail clearly instead
LIMIT = 20
#: loop turns another pipe keeps the run going for after ``take`` had enough: a source
#: still pulling would pull at least once per turn (a Timer with delay=0 ticks once)
TURNS = 200


def counted(iterable, pulled: list):
    """``iterable``, recording in ``pulled`` every element the source pulls from it."""
    for v in iterable:
        pulled.append(v)
        yield v


async def keep_running(_):
    """Another pipe's step: the run lasts ``TURNS`` more loop turns."""
    for _ in range(TURNS):
        await asyncio.sleep(0)


async def run(*steps):
    out: list = []
    pipe = Pipe(*steps, out.append)
    Pipe(keep_running)
    await asyncio.wait_for(BotFrame.run_async(), LIMIT)
    assert pipe.finished()
    return out, pipe.report


def stats_of(report, prefix: str):
    return next(stats for sid, stats in report.steps.items() if sid.label.startswith(prefix))


async def test_take_3_from_an_endless_timer_makes_exactly_3_ticks():
    """The fused build's ticker task emits the third tick, take disposes it from inside
    that push: it must not tick again (it ticked on, once per loop turn, until the run
    ended), nor ask ``until()`` after the tick that ended its subscription."""
    asked = []

    def until():
        asked.append(True)
        return False

    out, report = await run(Timer(delay=0, until=until), ops.take(3))
    assert out == [1, 2, 3]
    timer = stats_of(report, "Timer(")
    assert (timer.inp, timer.out, timer.cancelled) == (1, 3, 1)
    assert len(asked) == 2  # after ticks 1 and 2 only


async def test_take_3_from_itertools_count_pulls_3_elements_and_ends():
    pulled: list = []
    out, report = await run(Loop(counted(itertools.count(), pulled)), ops.take(3))
    assert out == [0, 1, 2]
    assert pulled == [0, 1, 2]  # the source stopped at its next element
    loop = stats_of(report, "Loop(")
    assert (loop.out, loop.cancelled) == (3, 1)


async def test_take_after_a_fused_sync_step_stops_the_loop_too():
    """A sync step between the source and take (one fused segment on the fused build):
    the segment's subscription and the Loop's are both disposed in the Loop's push."""
    pulled: list = []
    out, _ = await run(Loop(counted(itertools.count(), pulled)), lambda x: x * 10, ops.take(3))
    assert out == [0, 10, 20]
    assert pulled == [0, 1, 2]


async def test_take_after_an_async_step_pulls_at_most_what_its_slots_hold():
    """Here take is reached from the async step's worker, not from the source's task,
    which is cancelled where it waits: the source pulled the 3 items taken plus at most
    what the async step's 2 slots and one wait at the closed gate held."""
    async def same(x):
        await asyncio.sleep(0)
        return x

    pulled: list = []
    out, _ = await run(Loop(counted(itertools.count(), pulled)), Step(same, concurrency=2), ops.take(3))
    assert out == [0, 1, 2]
    assert pulled == list(range(len(pulled)))
    assert len(pulled) <= 3 + 2 + 1


async def test_take_inside_a_join_branch_stops_its_endless_generator_step():
    """An endless generator step (a pulled source) in a Join branch cut by take: the
    branch ends after 3 items while the main pipe and the other branch go on with every
    input (the generator spun on for as long as the run lasted)."""
    pulled: list = []

    def numbers(x):
        for i in itertools.count():
            pulled.append((x, i))
            yield x, i

    out, report = await run(Loop(range(1, 6)), Join(Pipe(numbers, ops.take(3)), lambda x: x * 10))
    assert sorted(v for v in out if isinstance(v, int)) == [10, 20, 30, 40, 50]
    assert [v for v in out if isinstance(v, tuple)] == [(1, 0), (1, 1), (1, 2)]
    assert pulled == [(1, 0), (1, 1), (1, 2)]
    assert stats_of(report, "numbers").cancelled == 1


async def test_take_inside_a_join_branch_stops_an_endless_lazy_result():
    """A sync step *returning* an endless generator, in a Join branch cut by take. The
    fused build expands it in its segment's lane; the route went on feeding the disposed
    segment, which queued every later input behind the lane and held the Join's
    upstream closed: the run hung (while the generator spun) after the second input."""
    pulled: list = []

    def numbers(x):
        return counted(((x, i) for i in itertools.count()), pulled)

    out, _ = await run(Loop(range(1, 6)), Join(Pipe(numbers, ops.take(3)), lambda x: x * 10))
    assert sorted(v for v in out if isinstance(v, int)) == [10, 20, 30, 40, 50]
    assert [v for v in out if isinstance(v, tuple)] == [(1, 0), (1, 1), (1, 2)]
    assert pulled == [(1, 0), (1, 1), (1, 2)]


async def test_take_then_repeat_starts_a_fresh_sequence_each_time():
    """The disposed subscription's gate is its own: the next one pulls again."""
    pulled: list = []

    def numbers(_):
        return counted(itertools.count(), pulled)

    out, _ = await run(numbers, ops.take(3), ops.repeat(2))
    assert out == [0, 1, 2, 0, 1, 2]
    assert pulled == [0, 1, 2, 0, 1, 2]


async def test_retry_stops_the_failed_attempts_source_at_its_failure():
    """``retry`` disposes the failed attempt from inside its push and subscribes again:
    the old generator is not pulled any further, the new one runs to its end."""
    pulled: list = []
    failures = [0]

    def numbers(_):
        return counted(range(6), pulled)

    def flaky(x):
        if x == 1 and failures[0] < 2:
            failures[0] += 1
            raise ValueError("flaky")
        return x

    out, report = await run(numbers, ops.map(flaky), ops.retry(3))
    assert out == [0, 0, 0, 1, 2, 3, 4, 5]
    assert pulled == [0, 1, 0, 1, *range(6)]
    assert report.error is None
