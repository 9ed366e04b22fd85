"""Opt-in progress bars read the run's own counters."""
from __future__ import annotations

import asyncio
import io

from rxbot import BotFrame, Pipe, Step, config


def test_progress_bars_show_items_and_step_counts(monkeypatch):
    import rxbot.observe.progress as progress

    stream = io.StringIO()
    made = []
    original = progress.Progress.__init__

    def capture(self, pipes, report, interval=0.25, file=None, in_flight=None):
        original(self, pipes, report, interval=0.01, file=stream, in_flight=in_flight)
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
    # finished, the pipe collapsed to one line; its bar counted 600 step calls
    assert made[0].bars == [] and made[0].collapsed[1].startswith("numbers: finished in ")
    assert made[0].collapsed[1].endswith("200 items from the source | inc 200>200 | slow 200>200 | "
                                         "list.append 200>0 consumed 200")
    text = stream.getvalue()
    assert "numbers" in text and " calls" in text
    # sync steps were counted because progress asked for it
    assert report.find("inc").inp == 200


def test_steps_in_pipe_order_with_total_from_the_source():
    import rxbot.observe.progress as progress
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
    # the bar counts step calls; finished, the pipe is one line
    assert any(p.startswith("numbers: ") and " calls/s]" in p for p in pieces)
    assert any(p.startswith("numbers: finished in ") and p.endswith("show 200>0 consumed 200") for p in pieces)


def test_plain_text_without_tqdm_said_before_the_script_starts(tmp_path):
    proc = _run_with_progress(tmp_path, prelude="import sys; sys.modules['tqdm'] = None\n")
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("rxbot: tqdm is not installed, so progress is shown as plain text")
    assert lines[1] == "script started"
    final = [line for line in lines if line.startswith("rxbot progress: ")][-1]
    assert final.startswith("rxbot progress: numbers: 200/200 items")
    assert "| slow 200>200 | show 200>0 consumed 200" in final


def test_a_bars_total_grows_with_fan_out_and_is_unknown_for_a_source_of_unknown_size():
    """The crawler of the issue: 3 list pages read of 3, yet 19 of 25 product pages to
    come. The bar counts step calls, done when finished, so it is not at 3/3."""
    import rxbot.observe.progress as progress
    from rxbot import Loop
    from rxbot.engine.policy import StepStats
    from rxbot.engine.context import RunReport
    from rxbot.tree.walk import StepId

    report = RunReport()
    root = StepId.root("P1", 1)
    keys = [root.step(1, "Loop"), root.step(2, "fetch_list"), root.step(3, "links"), root.step(4, "fetch_product")]
    for key in keys:
        report.steps[key] = StepStats(str(key))
    source, fetch_list, links, fetch_product = (report.steps[k] for k in keys)
    held = {keys[3]: 2}
    crawl = Pipe(Loop(["a", "b", "c"]), print, print, print)
    unknown = Pipe((u for u in "abc"), print)
    bars = progress.Progress([crawl, unknown], report, file=io.StringIO(), in_flight=lambda k: held.get(k, 0))
    try:
        assert bars.calls(1) == (0, 3)  # nothing taken yet: one call per source item to come
        source.inp, source.out = 1, 3
        fetch_list.inp = fetch_list.out = 3
        links.inp, links.out = 3, 25        # each list page yields its product links
        fetch_product.inp, fetch_product.out = 8, 6
        # 3 + 3 + 8 calls taken, 2 still running: the total grew from 3 to 14
        assert bars.calls(1) == (12, 14)
        fetch_product.inp = 25
        assert bars.calls(1) == (29, 31)
        assert bars.calls(2) == (0, None)   # a generator: no total until it has finished ("of ?")
        crawl._finished = True
        held.clear()
        fetch_product.out = 25
        assert bars.calls(1) == (31, 31)
    finally:
        bars.close()


def test_labels_are_shortened_at_a_word_boundary():
    from rxbot.observe.progress import shorten

    assert shorten("short") == "short"
    label = "Insert: insert into products (name, price, url) values ({name}, {price}, {url})"
    assert shorten(label, 40) == "Insert: insert into products (name,…"
    assert shorten("Loop(range(0, 1000000000000000000000000))", 20) == "Loop(range(0,…"
    assert shorten("x" * 50, 10) == "x" * 9 + "…"


def test_a_finished_pipe_collapses_to_one_line_while_another_runs():
    import rxbot.observe.progress as progress
    from rxbot import Timer

    stream = io.StringIO()
    made = []
    original = progress.Progress.__init__

    def capture(self, pipes, report, interval=0.25, file=None, in_flight=None):
        original(self, pipes, report, interval=0.01, file=stream, in_flight=in_flight)
        made.append(self)

    config.progress = True
    quick = Pipe(range(3), print, name="quick")
    seen = []

    async def watch(tick):
        await asyncio.sleep(0.03)
        seen.append((sorted(made[0].collapsed), [b.desc for b in made[0].bars]))

    Pipe(Timer(delay=0.01, until=quick.finished), Step(watch, concurrency=1), name="slow one")
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(progress.Progress, "__init__", capture)
        BotFrame.run()
    # while the slow pipe ran, the quick one was one line and its bar gone
    assert ([1], ["slow one"]) in seen
    assert made[0].collapsed[1].startswith("quick: finished in ")


def test_report_summary_is_one_line_and_the_report_says_it_is_running():
    """databot's Timer idiom: print(job.report) from a Timer step printed 14 lines
    headed 'run finished in 0.000s' while the run went on."""
    from rxbot import Timer

    async def slow(x):
        await asyncio.sleep(0.01)
        return x

    job = Pipe(range(30), Step(slow, concurrency=2), print)
    seen = []
    Pipe(Timer(delay=0.05, until=job.finished), lambda t: seen.append((job.report.summary(), str(job.report))))
    report = BotFrame.run()
    summary, text = seen[1]
    assert "\n" not in summary and summary.startswith("running ")
    import re

    assert re.fullmatch(r"running \d+\.\ds: \d+ items, 0 failed, \d+\.\d items/s, ETA \d+s", summary), summary
    assert text.startswith("run running for ") and "(counts so far)" in text.splitlines()[0]
    assert re.fullmatch(r"finished in \d+\.\ds: \d+ items, 0 failed, \d+\.\d items/s", report.summary())
    assert str(report).startswith("run finished in ")


LOGGING_JOB = """
import asyncio
import logging
from rxbot import BotFrame, Pipe, Step, config

logging.basicConfig(format="app %(levelname)s %(message)s")  # the application's own handler
config.exception_policy = "ignore"
log = logging.getLogger("job")

async def fetch(x):
    await asyncio.sleep(0.02)
    if x % 10 == 7:
        raise ValueError(f"page {x} is broken")   # rxbot's own warning: dropped item
    if x % 10 == 3:
        log.warning("slow page %d", x)             # the application's log line
    return x

def links(x):
    if x % 10 == 5:
        print("found links on", x)                 # a print
    return [x * 10 + k for k in range(2)]

Pipe(range(40), Step(fetch, concurrency=2), links, Step(fetch, concurrency=2), name="crawl")
BotFrame.run()
"""


def test_progress_on_a_terminal_keeps_every_log_line_and_print_whole(tmp_path):
    """Acceptance: `rxbot run --progress` on a pseudo-terminal, with a step that logs (rxbot's
    own 'dropped item' warnings, the application's log handler) and prints; the screen, as
    a terminal emulator (pyte) renders it, has each of those lines whole and nothing torn
    (the issue's 'list_pages: 3>25line 34): 11>0')."""
    import fcntl
    import os
    import pty
    import re
    import struct
    import subprocess
    import sys
    import termios
    from pathlib import Path

    import pyte

    columns, rows = 120, 400
    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "job.py").write_text(LOGGING_JOB)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = dict(os.environ, PYTHONPATH=str(repo), COLUMNS=str(columns), TERM="xterm")
    env.pop("RXBOT_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "rxbot", "run", "--progress", "job.py"], cwd=tmp_path,
                            env=env, stdin=follower, stdout=follower, stderr=follower, start_new_session=True)
    os.close(follower)
    output = bytearray()
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert proc.wait(timeout=60) == 0, output.decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        os.close(leader)
    screen = pyte.Screen(columns, rows)
    pyte.ByteStream(screen).feed(bytes(output))
    lines = [line.rstrip() for line in screen.display if line.strip()]
    # rxbot's warnings go through the application's handler once it has one
    expected = ([f"app WARNING dropped item {x} in step 'fetch': ValueError: page {x} is broken"
                 for x in (7, 17, 27, 37)]
                + [f"app WARNING slow page {x}" for x in (3, 13, 23, 33)]
                + [f"found links on {x}" for x in (5, 15, 25, 35)])
    for line in expected:
        assert line in lines, "\n".join(lines)
    # every line on the screen is one of those, or the pipe's own line once finished
    others = [line for line in lines if line not in expected]
    assert [re.sub(r"[\d.]+s,", "Ts,", line) for line in others] == [
        "crawl: finished in Ts, 40 items from the source | fetch 40>36 !4 dropped 4 | links 36>72 | "
        "fetch 72>72"], "\n".join(lines)
