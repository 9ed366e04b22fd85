"""Hardening (issue 16): build-time rejection of empty routes, one run per Pipe object at
a time, runs that end within the shutdown grace, secrets redacted everywhere."""
from __future__ import annotations

import asyncio

import pytest

from rxbot import BlockedJoin, BotFrame, Branch, Fork, Join, Pipe, Return
from rxbot.errors import PipelineError


# ------------------------------------------------------------------ empty routes
@pytest.mark.parametrize("route", [Join, Return, Fork, Branch, BlockedJoin])
def test_empty_route_is_rejected_at_build_time(route):
    with pytest.raises(TypeError, match=rf"^{route.__name__}: needs at least one step"):
        route()


@pytest.mark.parametrize("route", [Join, Return, Fork, Branch])
def test_empty_route_rejected_even_with_a_route_type(route):
    with pytest.raises(TypeError, match=route.__name__):
        route(route_type=int)


# ------------------------------------------------------------------ one run at a time
async def test_running_a_pipe_that_is_already_running_is_a_clear_error():
    out = []

    async def slow(x):
        await asyncio.sleep(0.05)
        return x

    p = Pipe(range(3), slow, out.append, name="twice")
    results = await asyncio.gather(p.run_async(), p.run_async(), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], PipelineError)
    assert "'twice' is already running" in str(errors[0])
    assert out == [0, 1, 2]  # the first run ran once, untouched by the refused one


async def test_a_finished_pipe_may_run_again():
    out = []
    p = Pipe(range(2), out.append)
    await p.run_async()
    await p.run_async()
    assert out == [0, 1, 0, 1]


def test_the_same_pipe_twice_in_one_run_is_refused():
    out = []
    p = Pipe(range(2), out.append)
    with pytest.raises(PipelineError, match="already running"):
        BotFrame.run([p, p])
    assert out == []
    p.run()  # the refusal left it runnable
    assert out == [0, 1]
