"""The engine's public seam (``rxbot.engine.hooks``), tested on its own — no replay involved.

``run_pipes(pipes, hooks=...)`` offers: a recorder operator after each top-level step, a
replacement source for a prefix of steps, deferring the ``raise`` policy until the steps
upstream of the failing one have finished, and an end-of-run callback. Whoever rewrites
the engine keeps these tests passing to keep the seam.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, List, Optional, Tuple

import pytest
import reactivex

from rxbot import BlockedJoin, Fork, Loop, Pipe, Step
from rxbot.engine import RunHooks, RunOutcome, StepFailure, run_pipes


class Recorded:
    """What a recorder operator saw: every item in order, and how its stream ended."""

    def __init__(self) -> None:
        self.items: List[Any] = []
        self.completed = False
        self.error: Optional[BaseException] = None

    def operator(self, source: reactivex.Observable) -> reactivex.Observable:
        def subscribe(observer, scheduler=None):
            def on_next(x):
                self.items.append(x)
                observer.on_next(x)

            def on_error(exc):
                self.error = exc
                observer.on_error(exc)

            def on_completed():
                self.completed = True
                observer.on_completed()

            return source.subscribe(on_next, on_error, on_completed, scheduler=scheduler)

        return reactivex.create(subscribe)


class Hooks(RunHooks):
    """Records after every top-level step; optional source replacement and deferral."""

    def __init__(self, sources: Dict[int, Tuple[int, Any]] = None, defer: Any = (), record=True) -> None:
        self.sources = sources or {}
        self.defer = set(defer)
        self.record = record
        self.recorded: Dict[Tuple[int, int], Recorded] = {}
        self.outcomes: List[RunOutcome] = []

    def source(self, pipe):
        return self.sources.get(pipe)

    def recorder(self, pipe, step):
        if not self.record:
            return None
        rec = self.recorded[(pipe, step)] = Recorded()
        return rec.operator

    def defer_raise(self, pipe):
        return pipe in self.defer

    def finished(self, outcome):
        self.outcomes.append(outcome)


def run(pipes, hooks):
    return asyncio.run(run_pipes(pipes, hooks=hooks))


def double(x):
    return 2 * x


async def async_triple(x):
    await asyncio.sleep(0)
    return 3 * x


def fails_on(bad, calls=None):
    def check(x):
        if calls is not None:
            calls.append(x)
        if x == bad:
            raise ValueError(f"bad item {x}")
        return x

    return check


# ---------------------------------------------------------------------------------------
# recorders
# ---------------------------------------------------------------------------------------
def test_a_recorder_sees_each_top_level_steps_complete_output_in_order():
    out = []
    hooks = Hooks()
    pipe = Pipe(Loop(range(5)), double, async_triple, lambda x: [x, x + 1], Fork(out.append), out.append)
    report = run([pipe], hooks)
    rec = hooks.recorded
    assert sorted(rec) == [(1, k) for k in range(1, 7)]  # asked once per top-level step
    assert rec[(1, 1)].items == [0, 1, 2, 3, 4]
    assert rec[(1, 2)].items == [0, 2, 4, 6, 8]
    assert sorted(rec[(1, 3)].items) == [0, 6, 12, 18, 24]
    assert sorted(rec[(1, 4)].items) == sorted(x for v in (0, 6, 12, 18, 24) for x in (v, v + 1))
    assert all(r.completed and r.error is None for r in rec.values())
    assert sorted(out) == sorted(rec[(1, 4)].items * 2)  # the Fork branch and the main pipe
    assert report.failures == []
    (outcome,) = hooks.outcomes
    assert outcome.error is None and outcome.report is report


def test_hooks_that_do_nothing_give_the_plain_runs_items():
    plain, hooked = [], []
    run([Pipe(Loop(range(300)), double, Fork(lambda x: x), async_triple, plain.append)], None)
    run([Pipe(Loop(range(300)), double, Fork(lambda x: x), async_triple, hooked.append)], RunHooks())
    assert sorted(plain) == sorted(hooked) == [6 * i for i in range(300)]


def test_a_recorder_does_not_complete_when_its_step_was_cut_short():
    hooks = Hooks()  # no deferral: the raise stops the run at once
    pipe = Pipe(Loop(range(10_000)), double, fails_on(10), print)
    with pytest.raises(ValueError, match="bad item 10"):
        run([pipe], hooks)
    assert not hooks.recorded[(1, 1)].completed  # the Loop was stopped part-way
    assert not hooks.recorded[(1, 3)].completed
    assert len(hooks.recorded[(1, 2)].items) < 10_000
    (outcome,) = hooks.outcomes
    assert isinstance(outcome.error, ValueError) and outcome.failures == []


# ---------------------------------------------------------------------------------------
# replacement source
# ---------------------------------------------------------------------------------------
def test_a_replacement_source_skips_the_prefix_and_feeds_every_item_in_order():
    calls, out = [], []
    hooks = Hooks(sources={1: (2, iter([5, 6, 7, 8]))})
    pipe = Pipe(Loop(range(3)), lambda x: calls.append(x), double, out.append)
    run([pipe], hooks)
    assert calls == []  # steps 1 and 2 never ran
    assert out == [10, 12, 14, 16]
    assert sorted(hooks.recorded) == [(1, 3), (1, 4)]  # no recorder for skipped steps
    assert hooks.recorded[(1, 3)].items == [10, 12, 14, 16]


def test_a_replacement_source_is_pulled_under_flow_control(tracker):
    async def slow(x):
        await asyncio.sleep(0.001)
        tracker.done()
        return x

    hooks = Hooks(sources={1: (1, tracker.source(2000))}, record=False)
    run([Pipe(Loop(range(3)), Step(slow, concurrency=4), lambda x: None)], hooks)
    assert tracker.pulled == 2000
    assert tracker.worst <= 5  # the step's 4 slots (+1 being pulled), not 2000: pulled on demand


def test_a_replacement_source_may_skip_a_whole_pipe_and_no_more():
    called, out = [], []
    pipe = Pipe(Loop(range(3)), called.append, print)
    report = run([pipe, Pipe(Loop(range(2)), out.append)], Hooks(sources={1: (3, [])}))
    assert called == [] and out == [0, 1] and pipe.finished()  # skipped: ended at once, the other ran
    assert report.error is None
    with pytest.raises(ValueError, match="must skip 1..2 of its 2 steps; got 3"):
        run([Pipe(Loop(range(3)), print)], Hooks(sources={1: (3, [1])}))


# ---------------------------------------------------------------------------------------
# deferring the raise
# ---------------------------------------------------------------------------------------
def test_deferred_raise_lets_upstream_finish_then_raises_the_original_error():
    seen, out = [], []
    hooks = Hooks(defer={1})
    pipe = Pipe(Loop(range(10)), double, fails_on(8, seen), out.append)
    with pytest.raises(ValueError, match="bad item 8") as info:
        run([pipe], hooks)
    assert hooks.recorded[(1, 2)].completed  # step 2's output is complete ...
    assert hooks.recorded[(1, 2)].items == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert seen == [0, 2, 4, 6, 8]  # ... while step 3 refused what came after its failure
    assert out == [0, 2, 4, 6]
    (failure,) = pipe.report.failures
    assert failure == StepFailure(pipe=1, step=3, error=info.value, refused=5)
    (outcome,) = hooks.outcomes
    assert outcome.error is info.value and outcome.failures == [failure]


def test_without_deferral_the_same_failure_stops_the_run_at_once():
    hooks = Hooks(defer={2})  # another pipe's deferral changes nothing for pipe 1
    pipe = Pipe(Loop(range(10_000)), double, fails_on(8), print)
    with pytest.raises(ValueError):
        run([pipe], hooks)
    assert not hooks.recorded[(1, 2)].completed
    assert pipe.report.failures == []


def test_a_failure_nested_in_a_route_is_reported_as_its_top_level_step():
    hooks = Hooks(defer={1})
    pipe = Pipe(Loop(range(6)), Fork(double, fails_on(4)), print)
    with pytest.raises(ValueError, match="bad item 4"):
        run([pipe], hooks)
    assert [(f.pipe, f.step) for f in pipe.report.failures] == [(1, 2)]
    assert hooks.recorded[(1, 1)].completed


def test_a_failure_inside_a_blocked_join_is_not_deferred():
    hooks = Hooks(defer={1})
    pipe = Pipe(Loop(range(10_000)), BlockedJoin(double, fails_on(3)), print)
    with pytest.raises(ValueError, match="bad item 3"):
        run([pipe], hooks)
    assert pipe.report.failures == []  # stopped at once: no tuple with a hole went on
    assert not hooks.recorded[(1, 1)].completed


def test_an_async_step_failing_is_deferred_and_its_pipe_numbering_is_the_runs():
    async def check(x):
        await asyncio.sleep(0)
        if x == 4:
            raise KeyError(x)
        return x

    other = []
    hooks = Hooks(defer={2})
    first = Pipe(Loop(range(4)), other.append)
    second = Pipe(Loop(range(5)), double, Step(check, concurrency=1), print)
    with pytest.raises(KeyError):
        run([first, second], hooks)
    (failure,) = hooks.outcomes[0].failures
    # one item in flight at a time (concurrency=1 closes the Loop's gate): 6 and 8 refused
    assert (failure.pipe, failure.step, failure.refused) == (2, 3, 2)
    assert hooks.recorded[(2, 2)].completed and hooks.recorded[(2, 2)].items == [0, 2, 4, 6, 8]


def test_a_deferred_error_is_raised_when_its_pipe_has_finished_stopping_the_others():
    async def slow(x):
        await asyncio.sleep(0.01)
        return x

    hooks = Hooks(defer={1, 2})
    failing = Pipe(Loop(range(5)), fails_on(2), print)
    endless = Pipe(Loop(range(10**9)), slow, lambda x: None)
    with pytest.raises(ValueError, match="bad item 2"):
        run([failing, endless], hooks)
    assert hooks.recorded[(1, 1)].completed and hooks.recorded[(1, 3)].completed  # pipe 1 ran to its end
    assert not hooks.recorded[(2, 1)].completed  # pipe 2 was stopped, not waited for
    assert [(f.pipe, f.step) for f in hooks.outcomes[0].failures] == [(1, 2)]


def test_later_failures_after_a_deferred_one_are_listed_in_order():
    hooks = Hooks(defer={1})
    pipe = Pipe(Loop(range(6)), fails_on(4), fails_on(1), print)
    with pytest.raises(ValueError, match="bad item 1"):  # the first failure is raised
        run([pipe], hooks)
    assert [(f.step, str(f.error)) for f in pipe.report.failures] == [(3, "bad item 1"), (2, "bad item 4")]


# ---------------------------------------------------------------------------------------
# the end-of-run callback
# ---------------------------------------------------------------------------------------
def test_a_failing_finished_callback_is_logged_and_never_hides_the_runs_outcome(caplog):
    class Broken(RunHooks):
        def finished(self, outcome):
            raise OSError("disk full")

    with caplog.at_level(logging.ERROR, logger="rxbot"):
        report = run([Pipe(Loop(range(3)), double, lambda x: None)], Broken())
        with pytest.raises(ValueError, match="bad item 1"):
            run([Pipe(Loop(range(3)), fails_on(1), print)], Broken())
    assert report.failures == []
    assert sum("RunHooks.finished failed" in r.getMessage() for r in caplog.records) == 2


def test_finished_is_told_about_a_cancelled_run():
    hooks = Hooks(defer={1})

    async def main():
        task = asyncio.ensure_future(run_pipes([Pipe(Loop(range(10**9)), double, print)], hooks=hooks))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    (outcome,) = hooks.outcomes
    assert isinstance(outcome.error, asyncio.CancelledError)
    assert not hooks.recorded[(1, 1)].completed
