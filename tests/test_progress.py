"""Opt-in progress bars read the run's own counters."""
from __future__ import annotations

import asyncio
import io

from rxbot import BotFrame, Pipe, Step, config


def test_progress_bars_show_items_and_step_counts(monkeypatch):
    import rxbot.progress as progress

    stream = io.StringIO()
    made = []
    original = progress.Progress.__init__

    def capture(self, pipes, report, interval=0.25, file=None):
        original(self, pipes, report, interval=0.01, file=stream)
        made.append(self)

    monkeypatch.setattr(progress.Progress, "__init__", capture)
    config.progress = True

    async def slow(x):
        await asyncio.sleep(0.001)
        return x

    def inc(x):
        return x + 1

    out = []
    Pipe(range(200), inc, Step(slow, concurrency=8), out.append, name="numbers")
    report = BotFrame.run()
    assert len(out) == 200
    bar = made[0].bars[0]
    assert bar.n == 200 and bar.desc == "numbers"
    text = stream.getvalue()
    assert "numbers" in text and "200" in text
    # sync steps were counted because progress asked for it
    assert report.find("inc").inp == 200
