"""Fused sync steps count into their generated code; the run publishes those counts
while it runs (at the sources' pauses), so the run report that progress reads is live."""
from __future__ import annotations

import asyncio

from rxbot import BotFrame, Loop, Pipe, Step, config
from rxbot.observe import live


def inc(x):
    return x + 1


async def test_the_report_counts_of_fused_steps_are_live_during_a_run():
    config.metrics = True
    seen = []

    async def slow(x):
        await asyncio.sleep(0.001)
        if x == 300:  # read the report the way progress does: straight from the run's stats
            report = live._running[-1].ctx.report
            seen.append(report.find("inc").inp)
        return x

    Pipe(Loop(range(400)), inc, Step(slow, concurrency=1))
    report = await BotFrame.run_async()
    assert 0 < seen[0] <= 400  # counted while running (it was 0 until the segment ended)
    assert report.find("inc").inp == 400
