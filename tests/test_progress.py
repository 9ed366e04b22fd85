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


def test_steps_in_pipe_order_with_total_from_the_source():
    import rxbot.progress as progress
    from rxbot import Fork, Loop, Timer
    from rxbot.engine.context import RunReport
    from rxbot.engine.policy import StepStats

    report = RunReport()
    # the compiler creates steps back to front: the progress view must not
    for key in ["P1[3] show", "P1[2] Fork/2[1] b", "P1[2] Fork/1[1] a", "P1[2] Fork", "P1[1] Loop(range(0, 200))"]:
        report.steps[key] = StepStats(key)
    pipes = [Pipe(Loop(range(200)), Fork(print, print), print), Pipe(Timer(delay=1, max_time=3), print),
             Pipe((i for i in range(3)), print)]
    bars = progress.Progress(pipes, report, file=io.StringIO())
    try:
        assert bars.keys == ["P1[1] Loop(range(0, 200))", "P1[2] Fork", "P1[2] Fork/1[1] a",
                             "P1[2] Fork/2[1] b", "P1[3] show"]
        assert [b.total for b in bars.bars] == [200, 3, None]
    finally:
        bars.close()


RUN = """
import asyncio
from rxbot import BotFrame, Loop, Pipe, Step

async def slow(x):
    await asyncio.sleep(0.002)
    return x

def show(x):
    if x % 50 == 0:
        print("item", x)

print("script started", flush=True)
Pipe(Loop(range(200)), Step(slow, concurrency=4), show, name="numbers")
BotFrame.run()
"""


def _run_with_progress(tmp_path, prelude: str = ""):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    job = tmp_path / "job.py"
    job.write_text(RUN)
    code = prelude + "import sys; from rxbot.cli import main; sys.exit(main(['run', '--progress', sys.argv[1]]))"
    env = dict(os.environ, PYTHONPATH=str(repo))
    proc = subprocess.run([sys.executable, "-c", code, str(job)], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    proc.stdout = proc.stdout.decode()  # as written: carriage returns kept
    return proc


def test_steps_output_is_printed_above_the_bars_in_whole_lines(tmp_path):
    proc = _run_with_progress(tmp_path)
    assert proc.returncode == 0, proc.stdout
    import re

    # what a terminal shows: split at carriage returns, cursor moves are not text
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "\n", proc.stdout)
    pieces = [p.strip() for p in text.replace("\r", "\n").split("\n")]
    for n in (0, 50, 100, 150):
        assert f"item {n}" in pieces  # a line of its own, never glued to a bar
        # printed live: the bars were lifted (a line blanked, the cursor moved up) first
        assert re.search(rf"\r +\r(\x1b\[A)*item {n}\n", proc.stdout), proc.stdout
    assert proc.stdout.index("item 0") < proc.stdout.index("200/200")
    assert any(p.startswith("numbers: 100%") and "200/200" in p for p in pieces)
    assert any(p.startswith("show: 200>0") and "consumed 200" in p for p in pieces)


def test_plain_text_without_tqdm_said_before_the_script_starts(tmp_path):
    proc = _run_with_progress(tmp_path, prelude="import sys; sys.modules['tqdm'] = None\n")
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("rxbot: tqdm is not installed, so progress is shown as plain text")
    assert lines[1] == "script started"
    final = [line for line in lines if line.startswith("rxbot progress: ")][-1]
    assert final.startswith("rxbot progress: numbers: 200/200 items")
    assert "| slow 200>200 | show 200>0 consumed 200" in final
