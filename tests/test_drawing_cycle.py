"""The drawing cycle (issue 24): an async step's workers, once its slots are full, run
the source's next elements through the fused steps before it, call the step and settle
its result in one coroutine per worker (``rxbot.engine.fuse._Program._cycle``).

Its outcome must be the plain loop's over the whole space around the benchmark's shape,
not only there: every kind of step between (none, plain steps, a Filter, steps that drop,
fan out a list or fail), every outcome of the async step (None, a value, a failure
under the ``ignore`` policy), any source length around the pace's looks (32..256 works) and
the drop run (``yield_every`` items in a row), any concurrency; and a run stopped or
cancelled while the workers draw (mid-call or during a turn) still balances its ledger
(``BotFrame.run`` checks it and raises on a mismatch)."""
from __future__ import annotations

import asyncio
import sys
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rxbot import BotFrame, Filter, Pipe, Step, config


def _inc(x: int) -> int:
    return x + 1


def _keep_even(x: int) -> int | None:
    return x if x % 2 == 0 else None


def _is_odd(x: int) -> bool:
    return x % 2 == 1


def _fan_every_7(x: int) -> object:
    return [x, -x] if x % 7 == 0 else x


def _fan_every_3(x: int) -> object:
    return [x, -x] if x % 3 == 0 else x


class Boom(Exception):
    pass


def _fail_every_11(x: int) -> int:
    if x % 11 == 5:
        raise Boom(x)
    return x


#: the steps between the source and the async step, and what they make of one element
BETWEEN = {
    "none": ([], lambda x: [x]),
    "one step": ([_inc], lambda x: [x + 1]),
    "three steps": ([_inc, _keep_even, _inc], lambda x: [x + 2] if (x + 1) % 2 == 0 else []),
    "a Filter": ([Filter(route_func=_is_odd)], lambda x: [x] if x % 2 == 1 else []),
    "a list now and then": ([_fan_every_7], lambda x: [x, -x] if x % 7 == 0 else [x]),
    "a failing step (ignore)": ([Step(_fail_every_11, on_error="ignore")], lambda x: [] if x % 11 == 5 else [x]),
}
#: what the async step does with a work: its result (None drops it), or it raises
OUTCOMES = ("None", "value", "fails every 13th (ignore)")


def _outcome(kind: str, x: int) -> object:
    if kind == "value":
        return x * 10
    if kind == "fails every 13th (ignore)":
        if x % 13 == 4:
            raise Boom(x)
        return x * 10
    return None


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(length=st.sampled_from([0, 1, 31, 32, 33, 255, 256, 257, 600]),
       between=st.sampled_from(sorted(BETWEEN)), outcome=st.sampled_from(OUTCOMES),
       concurrency=st.sampled_from([1, 2, 5]), fusion=st.booleans(), every=st.sampled_from([4, 256]),
       as_object=st.booleans())
def test_what_the_workers_draw_is_what_a_plain_loop_gives(length, between, outcome, concurrency, fusion, every,
                                                          as_object):
    """``as_object``: the step is an object with an async ``__call__``, whose call the
    cycle looks at before awaiting it, instead of an ``async def`` function, whose
    call it awaits as it is."""
    config.fusion = fusion
    config.yield_every = every  # small: many pace looks, turns and drop runs per run
    steps, expected = BETWEEN[between]
    called: list = []
    callers: set = set()
    out: list = []

    async def work(x: int) -> object:
        called.append(x)
        callers.add(sys._getframe(2 if as_object else 1).f_code.co_name)
        await asyncio.sleep(0)
        return _outcome(outcome, x)

    class Work:
        async def __call__(self, x: int) -> object:
            return await work(x)

    step = Step(Work() if as_object else work, concurrency=concurrency, on_error="ignore", name="work")
    Pipe((i for i in range(length)), *steps, step, out.append)
    report = BotFrame.run()

    inputs = [y for x in range(length) for y in expected(x)]
    failing = [y for y in inputs if outcome.startswith("fails") and y % 13 == 4]
    results = [] if outcome == "None" else [y * 10 for y in inputs if y not in failing]
    assert report.error is None
    assert Counter(called) == Counter(inputs)
    if concurrency == 1:  # one call at a time: in the source's order
        assert called == inputs and out == results
    assert Counter(out) == Counter(results)
    source, stats = report.find("Loop(generator)"), report.find("work")
    assert source.out == length
    assert (stats.inp, stats.out, stats.failed) == (len(inputs), len(results), len(failing))
    assert stats.filtered == (len(inputs) if outcome == "None" else 0)
    assert stats.cancelled == stats.held == 0
    # the drawing cycle ran the calls once the slots were full (through the fused steps,
    # or straight from the source) on a long enough run; unfused, steps between feed the
    # step instead. (With a turn every 4 items a short source may end before it waits at
    # its gate, where it hands its iterator over.)
    if not (fusion or between == "none"):
        assert "cycle" not in callers
    elif len(inputs) >= 100 and every == 256:
        assert "cycle" in callers


@pytest.mark.parametrize("at", [0, 1, 40, 300])
def test_a_source_that_raises_while_drawn_fails_the_run_with_its_error(both_builds, at):
    """The source's exception, raised while a worker draws its next element, is the run's
    error (raised in the source's task, as when the source pushes); every element before
    it reached the step at most once."""
    called: list = []

    def source():
        yield from range(at)
        raise Boom("source")

    async def work(x: int) -> None:
        called.append(x)
        await asyncio.sleep(0)

    Pipe(source(), _inc, Step(work, concurrency=3))
    with pytest.raises(Boom, match="source"):
        BotFrame.run()
    assert len(called) == len(set(called)) and set(called) <= set(range(1, at + 1))


@pytest.mark.parametrize("every", [1, 256])
@pytest.mark.parametrize("turns", range(40))
def test_a_run_cancelled_while_the_workers_draw_balances_its_ledger(both_builds, every, turns):
    """Cancelled from outside ``turns`` loop turns after the step's fourth call started:
    while workers hand their slots to their drawing cycles' tasks (a cycle cancelled
    before it started), mid-call, or in a turn between two works (``yield_every=1``: a
    turn between any two). Nothing is counted twice or lost: every element the step
    took is finished or cancelled, and the ledger balances with nothing left in flight."""
    config.yield_every = every
    full = asyncio.Event()
    calls = [0]

    async def work(x: int) -> None:
        calls[0] += 1
        if calls[0] == 4:  # the slots are full (where the source pushes faster than that)
            full.set()
        await asyncio.sleep(0)

    # a list every third element: the cycles stop drawing (the list goes its general
    # way) and the workers hand their slots to new cycles all along
    pipe = Pipe((i for i in range(100_000)), _fan_every_3, Step(work, concurrency=4))

    async def main():
        run = asyncio.ensure_future(pipe.run_async())
        await full.wait()
        for _ in range(turns):
            await asyncio.sleep(0)
        run.cancel()  # what Ctrl-C and SIGTERM do to a run
        with pytest.raises(asyncio.CancelledError):
            await run

    asyncio.run(main())
    report = pipe.report
    stats = report.find("work")
    assert stats.inp >= 4
    assert stats.inp == stats.filtered + stats.cancelled
    lines = [line for line in report.ledger.values() if line is not None]
    assert lines and all(line.balanced and line.in_flight == 0 for line in lines), lines

