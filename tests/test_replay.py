"""Replay mode (issue 13): fix the failed step, run again, nothing upstream runs twice.

When step N fails, steps 1..N-1 run to their end, the complete output of the nearest
completed step K is saved, and the original error is raised; the next run skips steps
1..K and feeds every saved item into step K+1. Most tests run real scripts twice, the way
a user does (databot's replayex, the edit-and-rerun loop, kill -9, a million items with
their RSS measured); the others run pipes in this process with ``config.replay_dir``
pointing into ``tmp_path``. The cache's manifest is read only where its content is the
behaviour under test (what a damaged or tampered cache does).
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
import zoneinfo
from collections import namedtuple
from pathlib import Path, PurePosixPath

import msgpack
import pytest

from rxbot import BotFrame, Fork, Join, Loop, Pipe, Return, Step, StepError, Timer, config
from rxbot import replay
from rxbot.replay import ReplayPathError, atomic_write, clear_cache
from rxbot.replay.codec import (Ext, ReplayDecodeError, ReplayEncodeError, ReplayedError, decode, encode,
                                register_type, unregister_type)
from rxbot.replay.keying import step_hash

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
@pytest.fixture
def cache(tmp_path):
    """Replay mode on, caches under tmp_path/cache (the in-process script name is 'session')."""
    config.replay_mode = True
    config.replay_dir = str(tmp_path / "cache")
    return tmp_path / "cache"


def slot(cache: Path, pipe: str = "P1") -> Path:
    return cache / "session" / pipe


def run(*steps):
    Pipe(*steps)
    return BotFrame.run()


def run_failing(*steps, error=Exception):
    Pipe(*steps)
    with pytest.raises(error) as info:
        BotFrame.run()
    return info.value


def messages(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def env(**extra) -> dict:
    out = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out.update({k: str(v) for k, v in extra.items()})
    return out


def script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def python(path: Path, timeout: float = 120, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(path)], cwd=path.parent, env=env(**extra),
                          capture_output=True, text=True, timeout=timeout)


class Failing:
    """A step failing on its n-th call while armed. Its counters are private attributes,
    which are runtime state, not part of the step's hash."""

    def __init__(self, n: int, fn=lambda x: 3 * x) -> None:
        self.n, self.fn, self._calls, self._armed = n, fn, 0, True

    @property
    def calls(self) -> int:
        return self._calls

    def disarm(self) -> None:
        self._armed = False

    def __call__(self, x):
        self._calls += 1
        if self._armed and self._calls == self.n:
            raise RuntimeError(f"call {self._calls} fails")
        return self.fn(x)


# ---------------------------------------------------------------------------------------
# acceptance: databot's examples/replayex.py, run twice
# ---------------------------------------------------------------------------------------
#: databot's examples/replayex.py (kkyon/botflow) with its imports renamed to rxbot; only
#: time.sleep(1) is shortened, and double's calls are also counted in a file
DATABOT_REPLAYEX = """\
    from rxbot.tree.flow import Pipe, Loop, Fork
    from rxbot.botframe import BotFrame
    from rxbot.config import config
    import time

    def double(a):
        print('double %d'%a)
        open('calls.txt', 'a').write('%d\\n' % a)
        time.sleep(0.01)
        return 2*a
    count=0
    def triple(a):
        global  count
        count+=1
        if count>6:
            raise Exception()
            pass
        return 3*a

    #
    config.replay_mode=True

    def main():
        Pipe(

            Loop(range(10)),
            double,
            triple,
            print


        )

        BotFrame.run()



    main()
"""


#: what databot 0.1.8 itself prints on the second run of that script (measured on this
#: machine: the databot-0.1.8 wheel on Python 3.7.16, 2026-11-27): it reloads the whole
#: output of double, so triple, unchanged, gets all ten items and fails on its 7th call again
DATABOT_SECOND_RUN_STDOUT = "0\n6\n12\n18\n24\n30\n"


def test_databot_replayex_run_twice_prints_what_databot_prints(tmp_path):
    job = script(tmp_path / "replayex.py", DATABOT_REPLAYEX)
    calls = tmp_path / "calls.txt"

    first = python(job)
    assert first.returncode == 1 and "raise Exception()" in first.stderr
    lines = first.stdout.split("\n")
    assert [x for x in lines if x.startswith("double")] == [f"double {i}" for i in range(10)]
    assert [x for x in lines if x and not x.startswith("double")] == ["0", "6", "12", "18", "24", "30"]
    assert calls.read_text().split() == [str(i) for i in range(10)]  # double ran to its end
    assert "the 3 item(s) that reached step 3 after it failed were not given to it" in first.stderr

    # the second run: double is not called, triple gets all 10 saved items, and,
    # unchanged, fails on its 7th call again -- exactly databot's output
    second = python(job)
    assert second.returncode == 1 and "raise Exception()" in second.stderr
    assert second.stdout == DATABOT_SECOND_RUN_STDOUT
    assert calls.read_text().split() == [str(i) for i in range(10)]
    assert ("steps 1-2 are unchanged since the failed run of" in second.stderr
            and "the 10 items step 2 (double) produced then are fed into step 3 (triple)" in second.stderr)

    # the user fixes triple: still no double, every item comes out, the cache is gone
    job.write_text(job.read_text().replace("if count>6:", "if count>60:"))
    third = python(job)
    assert third.returncode == 0, third.stderr
    assert third.stdout.split() == [str(6 * i) for i in range(10)]
    assert calls.read_text().split() == [str(i) for i in range(10)]
    assert "changed since: step 3 (triple)" in third.stderr
    assert not (tmp_path / ".rxbot").exists()


#: two pipes, the second failing once: databot's rerun skipped the first (it had
#: completed) and fed the second from its saved step
TWO_PIPES = """\
    import os
    import time

    from rxbot import BotFrame, Loop, Pipe, config

    config.replay_mode = True


    def note(x):  # pipe 1: a side effect per item
        with open("p1.txt", "a") as fh:
            fh.write(f"{x}\\n")
        return x


    def fetch(n):  # pipe 2, step 2: slow, run once
        time.sleep(0.02)
        with open("fetched.txt", "a") as fh:
            fh.write(f"{n}\\n")
        return 10 * n


    def check(v):  # pipe 2, step 3: fails on 30 until fixed
        if v == 30 and not os.path.exists("fixed"):
            raise ValueError("no 30 yet")
        return v


    Pipe(Loop(range(3)), note, lambda x: print("p1", x))
    Pipe(Loop(range(5)), fetch, check, lambda v: print("p2", v))
    BotFrame.run()
"""


def test_with_two_pipes_the_rerun_skips_the_pipe_that_completed_and_replays_the_other(tmp_path):
    job = script(tmp_path / "two.py", TWO_PIPES)
    first = python(job)
    assert first.returncode == 1 and "ValueError: no 30 yet" in first.stderr
    assert first.stdout.split("\n")[:3] == ["p1 0", "p1 1", "p1 2"]
    assert (tmp_path / "p1.txt").read_text().split() == ["0", "1", "2"]
    assert "pipe P1 ran to its end; the next run skips it" in first.stderr

    (tmp_path / "fixed").touch()
    second = python(job)
    assert second.returncode == 0, second.stderr
    # pipe 1 is not run again: its side effects and its outputs are not repeated
    assert (tmp_path / "p1.txt").read_text().split() == ["0", "1", "2"]
    assert second.stdout.split("\n") == ["p2 0", "p2 10", "p2 20", "p2 30", "p2 40", ""]
    # pipe 2 went on from its saved step: fetch ran once per item, in the first run only
    assert (tmp_path / "fetched.txt").read_text().split() == ["0", "1", "2", "3", "4"]
    assert "pipe P1 ran to its end in the failed run of" in second.stderr and "so it is skipped" in second.stderr
    assert "pipe P2: steps 1-2 are unchanged" in second.stderr
    assert not (tmp_path / ".rxbot").exists()  # the run succeeded: nothing is kept

    third = python(job)  # and a run after the success runs everything
    assert third.returncode == 0 and third.stdout.count("p1 ") == 3
    assert (tmp_path / "p1.txt").read_text().split() == ["0", "1", "2"] * 2


#: one script, run twice at the same time: big items (the recording is flushed to its
#: .part file as it goes), both runs inside their run before either fails; the run
#: started with SLOW=1 then waits for the other to have exited before it fails
CONCURRENT = """\
    import os
    import time

    from rxbot import BotFrame, Loop, Pipe, config

    config.replay_mode = True
    SLOW = os.environ.get("SLOW") == "1"


    def fetch(n):
        if n == 0:
            open(f"started.{os.getpid()}", "w").close()
            while sum(name.startswith("started.") for name in os.listdir(".")) < 2:
                time.sleep(0.01)
        if SLOW and n == 2:
            while not os.path.exists("other.done"):
                time.sleep(0.01)
        with open("fetched.txt", "a") as fh:
            fh.write(f"{n}\\n")
        return str(n) * 100_000


    def check(text):
        if text[0] == "3" and not os.path.exists("fixed"):
            raise ValueError("no 3 yet")
        return text[0]


    Pipe(Loop(range(5)), fetch, check, print)
    BotFrame.run()
"""


def test_two_concurrent_runs_of_one_script_never_touch_each_others_recording(tmp_path):
    job = script(tmp_path / "twice.py", CONCURRENT)

    def start(**extra):
        return subprocess.Popen([sys.executable, str(job)], cwd=tmp_path, env=env(**extra), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    slow, quick = start(SLOW=1), start()
    quick_out, quick_err = quick.communicate(timeout=120)
    (tmp_path / "other.done").touch()
    slow_out, slow_err = slow.communicate(timeout=120)
    for code, err in ((quick.returncode, quick_err), (slow.returncode, slow_err)):
        assert code == 1 and "ValueError: no 3 yet" in err, err
        assert "saving the cache" not in err and "FileNotFoundError" not in err, err
    assert (quick_err + slow_err).count("another run of this script (pid ") == 1
    fetched = len((tmp_path / "fetched.txt").read_text().split())

    # what the run holding the cache saved is whole: the fix replays it, nothing is fetched
    (tmp_path / "fixed").touch()
    third = python(job)
    assert third.returncode == 0, third.stderr
    assert third.stdout.split() == ["0", "1", "2", "3", "4"]
    assert "steps 1-2 are unchanged" in third.stderr and "is unreadable" not in third.stderr
    assert len((tmp_path / "fetched.txt").read_text().split()) == fetched
    assert not (tmp_path / ".rxbot").exists()


def test_the_example_file_itself(tmp_path):
    job = tmp_path / "replayex.py"
    shutil.copy(EXAMPLES / "replayex.py", job)
    first = python(job, RXBOT_EXAMPLE_DELAY=0.01)
    assert first.returncode == 1
    assert first.stdout.split().count("double") == 10
    second = python(job, RXBOT_EXAMPLE_DELAY=0.01)
    assert second.returncode == 1 and "triple failed on its call 7" in second.stderr
    assert second.stdout == DATABOT_SECOND_RUN_STDOUT


def _blocks(text: str, lang: str) -> list:
    return [b.split("\n", 1)[1] for b in text.split("```")[1::2] if b.startswith(lang + "\n")]


def test_the_worked_example_of_the_docs_runs_as_shown(tmp_path):
    page = (ROOT / "docs" / "replay.md").read_text()
    code, fix = _blocks(page, "python")[:2]
    job = script(tmp_path / "shop.py", code)
    for n, console in enumerate(_blocks(page, "console")[:2]):
        if n == 1:  # the user's fix
            old = code[code.index("def with_vat"):code.index("def show")].strip()
            job.write_text(job.read_text().replace(old, fix.strip()))
        lines = console.strip().split("\n")
        assert lines[0] == "$ python shop.py"
        proc = python(job)
        assert proc.stdout.split("\n")[:-1] == [x for x in lines if x[:1].isdigit()]
        logged = [x for x in proc.stderr.split("\n") if x.startswith("rxbot replay:")]
        shown = [x for x in lines if x.startswith("rxbot replay:")]
        assert len(logged) == len(shown)
        for got, want in zip(logged, shown):
            assert re.fullmatch(".*".join(map(re.escape, want.split("..."))), got), (got, want)
        if any(x.startswith("Traceback (most recent call last") for x in lines):
            # the short form of an uncaught error (issue 19): step line, user frames, error
            assert proc.returncode == 1 and proc.stderr.rstrip().endswith(lines[-1])
            assert all(x in proc.stderr for x in lines if x.startswith(("rxbot: raised", "Traceback")))
        else:
            assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / ".rxbot").exists()


def test_the_two_pipes_example_of_the_docs_runs_as_shown(tmp_path):
    page = (ROOT / "docs" / "replay.md").read_text()
    code = _blocks(page, "python")[2]
    job = script(tmp_path / "stock.py", code)
    for n, console in enumerate(_blocks(page, "console")[2:4]):
        if n == 1:  # the fix the page describes
            job.write_text(job.read_text().replace("if price == 30:", "if price > 100:"))
        lines = console.strip().split("\n")
        assert lines[0] == "$ python stock.py"
        proc = python(job)
        assert proc.stdout.split("\n")[:-1] == [x for x in lines if x.startswith(("counted", "price"))]
        logged = [x for x in proc.stderr.split("\n") if x.startswith("rxbot replay:")]
        shown = [x for x in lines if x.startswith("rxbot replay:")]
        assert len(logged) == len(shown)
        for got, want in zip(logged, shown):
            assert re.fullmatch(".*".join(map(re.escape, want.split("..."))), got), (got, want)
        assert proc.returncode == (1 if n == 0 else 0), proc.stderr
        if n == 0:
            assert proc.stderr.rstrip().endswith(lines[-1])
    assert (tmp_path / "counted.txt").read_text().split() == ["0", "1", "2"]  # pipe 1 ran once
    assert not (tmp_path / ".rxbot").exists()


# ---------------------------------------------------------------------------------------
# acceptance: the development loop (fail at step N, edit, run again)
# ---------------------------------------------------------------------------------------
DEVLOOP = """\
    import asyncio

    from rxbot import BotFrame, Fork, Loop, Pipe, config

    config.replay_mode = REPLAY

    def parse(x):  # step 2: the slow step nobody wants to run twice
        with open("parse-calls.txt", "a") as fh:
            fh.write("%d\\n" % x)
        for k in range(2):
            yield {"id": x, "part": k}

    async def enrich(rec):  # step 3: fails on one record
        await asyncio.sleep(0)
        return {**rec, "score": 100 // (rec["id"] - 7)}

    def fmt(rec):  # step 4
        return "%(id)d/%(part)d: %(score)d" % rec

    Pipe(Loop(range(12)), parse, enrich, Fork(lambda s: None), fmt, print)
    BotFrame.run()
"""


def _devloop(folder: Path, replay_on: bool = True) -> Path:
    return script(folder / "job.py", DEVLOOP.replace("REPLAY", str(replay_on)))


def _edit(job: Path, old: str, new: str) -> None:
    text = job.read_text()
    assert old in text
    job.write_text(text.replace(old, new))


FIX_ENRICH = ('return {**rec, "score": 100 // (rec["id"] - 7)}',
              'return {**rec, "score": 100 // (rec["id"] - 7) if rec["id"] != 7 else 0}')
EDIT_FMT = ('return "%(id)d/%(part)d: %(score)d" % rec', 'return "%(id)d-%(part)d: %(score)d" % rec')


def test_fixing_the_failed_step_replays_and_gives_the_uninterrupted_output(tmp_path):
    job = _devloop(tmp_path / "dev")
    first = python(job)
    assert first.returncode == 1 and "ZeroDivisionError" in first.stderr
    assert len((tmp_path / "dev" / "parse-calls.txt").read_text().split()) == 12

    _edit(job, *FIX_ENRICH)  # the fix ...
    _edit(job, *EDIT_FMT)  # ... and a later step edited too
    second = python(job)
    assert second.returncode == 0, second.stderr
    assert len((tmp_path / "dev" / "parse-calls.txt").read_text().split()) == 12  # parse skipped
    assert "steps 1-2 are unchanged" in second.stderr and "24 items step 2 (parse)" in second.stderr
    assert "changed since: step 3 (enrich), 5 (fmt)" in second.stderr

    reference = _devloop(tmp_path / "ref", replay_on=False)
    _edit(reference, *FIX_ENRICH)
    _edit(reference, *EDIT_FMT)
    whole = python(reference)
    assert whole.returncode == 0, whole.stderr
    assert second.stdout == whole.stdout and len(whole.stdout.split("\n")) == 25


def test_editing_a_step_before_the_failed_one_never_replays_stale_data(tmp_path):
    job = _devloop(tmp_path / "dev")
    assert python(job).returncode == 1
    _edit(job, *FIX_ENRICH)
    _edit(job, "for k in range(2):", "for k in range(3):")  # step 2 (parse) edited
    second = python(job)
    assert second.returncode == 0, second.stderr
    assert len((tmp_path / "dev" / "parse-calls.txt").read_text().split()) == 24  # parse ran again
    assert ("pipe P1 runs from its first step: step 2 (parse) was edited since the failed run of"
            in second.stderr and "so the 24 items it saved after step 2 would be stale" in second.stderr)
    assert len(second.stdout.split()) == 2 * 36


def test_adding_a_step_before_the_failed_one_never_replays_stale_data(tmp_path):
    job = _devloop(tmp_path / "dev")
    assert python(job).returncode == 1
    _edit(job, *FIX_ENRICH)
    _edit(job, "Pipe(Loop(range(12)), parse,", "Pipe(Loop(range(12)), lambda x: x, parse,")
    second = python(job)
    assert second.returncode == 0, second.stderr
    assert len((tmp_path / "dev" / "parse-calls.txt").read_text().split()) == 24
    assert "step 2 is now <lambda> line 20 (was parse)" in second.stderr


# ---------------------------------------------------------------------------------------
# in-process behaviour
# ---------------------------------------------------------------------------------------
def test_every_saved_item_is_fed_in_order_and_the_original_error_is_raised(cache, caplog):
    doubled, out = [], []

    def double(x):
        doubled.append(x)
        return 2 * x

    triple = Failing(5)
    err = run_failing(Loop(range(8)), double, triple, out.append, error=RuntimeError)
    assert str(err) == "call 5 fails"
    assert doubled == list(range(8)) and out == [0, 6, 12, 18]

    triple.disarm()
    out.clear()
    run(Loop(range(8)), double, triple, out.append)
    assert doubled == list(range(8))  # not called again
    assert out == [6 * i for i in range(8)]  # every item of step 2, in order, not only 4 of them
    assert triple.calls == 5 + 8
    assert not cache.exists()  # a successful run removes its cache


def test_multiple_pipes_routes_after_k_async_steps_and_generators(cache):
    made, side, out1, out2 = [], [], [], []

    def gen(x):  # step 2: a generator
        made.append(x)
        yield x
        yield -x

    async def check(x):  # step 3: async, fails once
        await asyncio.sleep(0)
        return x

    failing = Step(Failing(4, fn=lambda x: x), name="check2")

    def build():
        Pipe(Loop(range(5)), lambda x: out2.append(x))  # P1 succeeds
        Pipe(Loop(range(6)), gen, check, failing, Join(lambda x: x * 10, Return(side.append)), out1.append)

    build()
    with pytest.raises(RuntimeError):
        BotFrame.run()
    assert (cache / "session" / "P2").is_dir() and (cache / "session" / "P1" / "manifest.json").exists()
    assert made == list(range(6))
    failing.fn.disarm()
    side.clear()
    out1.clear()
    build()
    BotFrame.run()
    assert made == list(range(6))
    items = [v for x in range(6) for v in (x, -x)]
    assert sorted(side) == sorted(items)
    assert sorted(out1) == sorted(10 * v for v in items)
    assert out2 == list(range(5))  # P1 ran to its end the first time: skipped the second, as in databot
    assert not cache.exists()


def test_async_generators_and_async_lists_before_and_after_k(cache):
    calls, paired, out = [], [], []

    async def expand(x):  # step 2: an async generator
        calls.append(x)
        yield x
        yield x + 10

    async def pair(x):  # step 3: an async step returning a list
        paired.append(x)
        await asyncio.sleep(0)
        return [x, -x]

    failing = Failing(5, fn=lambda x: x)
    run_failing(Loop(range(3)), expand, pair, failing, out.append, error=RuntimeError)
    failing.disarm()
    out.clear()
    run(Loop(range(3)), expand, pair, failing, out.append)
    assert calls == [0, 1, 2] and len(paired) == 6  # expand and pair did not run again
    assert sorted(out) == sorted(v for x in range(3) for y in (x, x + 10) for v in (y, -y))


def test_a_failure_in_the_first_step_saves_nothing(cache, caplog):
    def first(_):
        raise ValueError("no data")

    run_failing(first, print, error=ValueError)
    assert not cache.exists()
    assert "no step finished before the run stopped" in messages(caplog)


def test_a_never_ending_timer_pipe_is_not_replayed_and_raises_at_once(cache, caplog):
    failing = Failing(3)
    run_failing(Timer(delay=0.001), failing, print, error=RuntimeError)  # no hang
    assert "Timer without max_time or until" in messages(caplog) and "is not replayed" in messages(caplog)
    assert not cache.exists()


def test_a_cancelled_run_saves_the_nearest_completed_step(cache):
    doubled, out = [], []

    def double(x):
        doubled.append(x)
        return 2 * x

    async def slow(x):
        await asyncio.sleep(0 if x < 4 else 60)
        return x

    async def main():
        Pipe(Loop(range(5)), double, slow, out.append)
        task = asyncio.ensure_future(BotFrame.run_async())
        while len(out) < 2:
            await asyncio.sleep(0.001)
        task.cancel()  # what Ctrl-C and SIGTERM do
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert doubled == list(range(5)) and sorted(out) == [0, 2]
    out.clear()
    run(Loop(range(5)), double, Step(lambda x: x, name="quick"), out.append)
    assert doubled == list(range(5))
    assert out == [0, 2, 4, 6, 8]


def test_an_item_the_cache_cannot_store_does_not_change_the_run(cache, caplog):
    out = []
    failing = Failing(2, fn=lambda m: m.cents)
    run_failing(Loop(range(3)), lambda x: x + 1, money, failing, out.append, error=RuntimeError)
    assert "cannot record the output of step 3 (money) of pipe P1" in messages(caplog)
    assert "test_replay.Money" in messages(caplog) and "'pickle'" in messages(caplog)
    assert "Saved the 3 items step 2" in messages(caplog)  # the nearest step it could save
    assert out == [100]


def money(x):
    return Money(100 * x, "EUR")


def test_an_int_of_more_than_4300_digits_is_recorded_and_replayed_exactly(cache, caplog):
    # issue 26 item 4: the codec raised ValueError (int/str conversion limit) and crashed the run
    made, out = [], []

    def big(x):
        made.append(x)
        return 10 ** 5000 + x

    failing = Failing(2, fn=lambda n: n % 1000)
    run_failing(Loop(range(3)), big, failing, out.append, error=RuntimeError)
    assert "cannot record" not in messages(caplog)
    failing.disarm()
    out.clear()
    run(Loop(range(3)), big, failing, out.append)
    assert made == [0, 1, 2]  # replayed: big was not called again
    assert out == [0, 1, 2]


class Unstorable:
    """Registered with an encoder that fails on some values, as user code can."""

    def __init__(self, n: int) -> None:
        self.n = n


def _unstorable_encode(u: Unstorable):
    if u.n:
        raise KeyError(f"no encoding for {u.n}")
    return u.n


def test_an_item_the_codec_cannot_encode_never_fails_the_run(cache, caplog):
    # whatever the encoder raises (here a registered encoder's KeyError), the run goes on as
    # without replay mode; one warning, the unrecorded items counted, the nearest step saved
    register_type(Unstorable, _unstorable_encode, Unstorable, name="test.Unstorable")
    try:
        out = []
        Pipe(Loop(range(4)), lambda x: x + 1, Unstorable, lambda u: out.append(u.n))
        BotFrame.run()  # a run that works without replay mode works with it
        assert out == [1, 2, 3, 4]
        assert messages(caplog).count("cannot record the output of step 3 (Unstorable)") == 1
        assert not cache.exists()

        caplog.clear()
        out.clear()
        failing = Failing(3, fn=lambda u: u.n)
        run_failing(Loop(range(4)), lambda x: x + 1, Unstorable, failing, out.append, error=RuntimeError)
        assert out == [1, 2]
        text = messages(caplog)
        assert text.count("cannot record the output of step 3 (Unstorable) of pipe P1: cannot store an item of "
                          "type test_replay.Unstorable in the replay cache: KeyError") == 1
        assert "Saved the 4 items step 2 (<lambda> line " in text
        assert "step 3 (Unstorable) was not recorded: 4 of its items could not be stored (the first: " in text
    finally:
        unregister_type(Unstorable)


# ---------------------------------------------------------------------------------------
# the key: steps 1..K
# ---------------------------------------------------------------------------------------
def _scale(x, k=2):
    return k * x


def test_step_hash_covers_code_arguments_data_and_routes_but_not_accumulated_state():
    acc = []

    def collect(x):
        acc.append(x)
        return x

    same = [Step(collect), Step(functools.partial(_scale, k=3)), Loop([1, 2, 3]), Timer(delay=1, max_time=2),
            Fork(collect, Join(_scale)), Step(Failing(2))]
    hashes = [step_hash(Pipe(s).steps[0]) for s in same]
    acc.extend(range(100))  # a captured accumulator fills up
    assert [step_hash(Pipe(s).steps[0]) for s in same] == hashes
    failing = Failing(2)
    failing(1)  # private runtime state changes
    assert step_hash(Pipe(failing).steps[0]) == hashes[-1]
    different = [Step(_scale), Step(functools.partial(_scale, k=4)), Loop([1, 2, 4]),
                 Timer(delay=1, max_time=3), Fork(collect, Join(_scale, _scale)), Step(Failing(3))]
    assert all(step_hash(Pipe(a).steps[0]) != step_hash(Pipe(b).steps[0]) for a, b in zip(same, different))

    def times(k):
        return lambda x: x * k  # the same source line: only the closure value differs

    assert step_hash(Pipe(times(2)).steps[0]) != step_hash(Pipe(times(3)).steps[0])
    assert step_hash(Pipe(times(2)).steps[0]) == step_hash(Pipe(times(2)).steps[0])
    BotFrame.clear()


def test_step_hash_is_the_same_in_every_process(tmp_path):
    code = """
        import functools
        from rxbot import Pipe, Loop, Fork, Filter, Step, Timer
        from rxbot.replay.keying import step_hash
        def step(x, k=3):
            return x * k
        p = Pipe(Loop({"a", "b", "c"}), {"x", "y", "z"}, functools.partial(step, k=4),
                 Fork(Filter(route_type=str), Step(step, concurrency=2)), Timer(delay=1, max_time=2))
        print([step_hash(s) for s in p.steps])
    """
    path = script(tmp_path / "key.py", code)
    outs = {subprocess.run([sys.executable, str(path)], env=env(PYTHONHASHSEED=seed), capture_output=True,
                           text=True, check=True).stdout for seed in ("1", "2", "3")}
    assert len(outs) == 1


# ---------------------------------------------------------------------------------------
# storage: location, clearing, symbolic links, damage, failures while saving
# ---------------------------------------------------------------------------------------
def test_default_location_and_config_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config.replay_dir = None
    assert replay.replay_root() == tmp_path / ".rxbot" / "replay"  # no script: the cwd
    config.replay_dir = str(tmp_path / "elsewhere")
    assert replay.replay_root() == tmp_path / "elsewhere"
    assert replay.replay_root(tmp_path / "x") == tmp_path / "x"
    assert replay.default_root(tmp_path / "jobs" / "job.py") == tmp_path / "jobs" / ".rxbot" / "replay"


def test_clear_cache_removes_only_replay_files(cache):
    run_failing(Loop(range(4)), _scale, Failing(2), print)
    assert (slot(cache) / "manifest.json").exists()
    (cache / "notes.txt").write_text("mine")
    (slot(cache) / "mine.txt").write_text("mine too")
    assert clear_cache(cache) == 1
    assert (cache / "notes.txt").read_text() == "mine" and (slot(cache) / "mine.txt").exists()
    assert [p.name for p in slot(cache).iterdir()] == ["mine.txt"]
    assert clear_cache(cache / "nowhere") == 0


@pytest.mark.parametrize("where", ["root", "script folder", "pipe folder", "manifest"])
def test_a_symbolic_link_in_the_cache_is_refused_never_followed(tmp_path, where, caplog):
    config.replay_mode = True
    target = tmp_path / "target"
    real = tmp_path / "real"
    config.replay_dir = str(real)
    run_failing(Loop(range(4)), _scale, Failing(2), print)  # a real cache first
    shutil.copytree(real, target)
    before = sorted(str(p.relative_to(target)) for p in target.rglob("*"))
    link = {"root": real, "script folder": real / "session", "pipe folder": real / "session" / "P1",
            "manifest": real / "session" / "P1" / "manifest.json"}[where]
    shutil.rmtree(link) if link.is_dir() else link.unlink()
    os.symlink(target / link.relative_to(real), link)

    with pytest.raises(ReplayPathError, match="is a symbolic link; the replay cache never follows one"):
        run(Loop(range(4)), _scale, Failing(2), print)
    with pytest.raises(ReplayPathError):
        clear_cache()
    if where == "root":
        cli = subprocess.run([sys.executable, "-m", "rxbot", "replay", "--clear", "--dir", str(real)],
                             env=env(), capture_output=True, text=True, timeout=60)
        assert cli.returncode == 1 and "is a symbolic link" in cli.stderr
    assert link.is_symlink()  # not deleted
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == before  # nothing through it


def _saved_run(cache):
    doubled = []

    def double(x):
        doubled.append(x)
        return 2 * x

    failing = Failing(3)
    run_failing(Loop(range(5)), double, failing, print, error=RuntimeError)
    failing.disarm()
    doubled.clear()
    return double, failing, doubled


def _records(*values) -> bytes:
    return b"".join(msgpack.packb(v) for v in values)


def _ext(code, payload) -> msgpack.ExtType:
    return msgpack.ExtType(code, payload)


#: what a damaged or hostile data file holds (its manifest's checksum and count are then
#: made to match, as an attacker would: only decoding can refuse it)
HOSTILE = {
    # issue 26 item 3: a number whose text would take forever to evaluate
    "hostile decimal": _records(0, 2, _ext(Ext.DECIMAL, b"1E+100000000"), 6, 8),
    "hostile fraction": _records(0, _ext(Ext.FRACTION, msgpack.packb([_ext(Ext.BIGINT, b"\x01" * (64 << 10)), 3]))),
    "hostile int": _records(0, _ext(Ext.BIGINT, b"\x7f" * ((1 << 20) + 1))),
    "unknown type": _records(0, 2, _ext(99, b"?"), 6, 8),
    "truncated": _records(0, 2, 4, 6, "a long last string")[:-3],
    "not msgpack": b"\xc1\xc1\xc1\xc1\xc1",
    "count differs": _records(0, 2, 4),
    "deep tuples": _records(functools.reduce(lambda inner, _: _ext(Ext.TUPLE, msgpack.packb([inner])),
                                             range(200), 0)),
}


@pytest.mark.parametrize("damage", ["manifest not json", "manifest fields", "wrong version", "bad checksum",
                                    "data missing", "old json cache", *HOSTILE])
def test_an_unreadable_cache_is_reported_once_set_aside_and_the_run_is_a_full_run(cache, caplog, damage):
    double, failing, doubled = _saved_run(cache)
    manifest = slot(cache) / "manifest.json"
    m = json.loads(manifest.read_text())
    data = slot(cache) / m["data"]["file"]
    named = data  # the file the warning names
    if damage == "manifest not json":
        manifest.write_text('{"format": 3, "pipe"')
        named = manifest
    elif damage == "manifest fields":
        manifest.write_text(json.dumps({**m, "after": "two"}))
        named = manifest
    elif damage == "wrong version":
        manifest.write_text(json.dumps({**m, "format": 99}))
        named = manifest
    elif damage == "bad checksum":
        data.write_bytes(_records(0, 2, 4, 6, 9))
    elif damage == "data missing":
        data.unlink()
        named = manifest
    elif damage == "old json cache":  # what the last round wrote, with issue 26's hostile line
        line = b'{"$":"fraction","v":"1e100000000"}\n'
        old = data.with_name(data.name.replace(".msgpack", ".jsonl"))
        data.unlink()
        old.write_bytes(line)
        manifest.write_text(json.dumps({**m, "format": 2, "data": {**m["data"], "file": old.name, "serializer": "json",
                                                                    "digest": hashlib.sha256(line).hexdigest()}}))
        named = manifest
    else:
        data.write_bytes(HOSTILE[damage])
        manifest.write_text(json.dumps({**m, "data": {**m["data"], "digest": hashlib.sha256(HOSTILE[damage]).hexdigest()}}))
    caplog.clear()
    out = []
    run(Loop(range(5)), double, failing, out.append)
    assert doubled == list(range(5))  # a full run
    assert out == [6 * i for i in range(5)]
    warnings = [r.getMessage() for r in caplog.records if "is unreadable" in r.getMessage()]
    assert len(warnings) == 1 and f"its cache {named} is unreadable" in warnings[0], messages(caplog)
    aside = list((cache / "session").glob("P1.unreadable-*"))
    assert len(aside) == 1 and f"set aside as {aside[0]}" in warnings[0]
    assert (aside[0] / "manifest.json").exists()  # renamed, not deleted
    assert not slot(cache).exists()  # the run succeeded: nothing of its own is left

    # later runs are not affected: a failure saves, the fix replays
    caplog.clear()
    failing._calls, failing._armed = 0, True
    run_failing(Loop(range(5)), double, failing, print, error=RuntimeError)
    failing.disarm()
    doubled.clear()
    out.clear()
    run(Loop(range(5)), double, failing, out.append)
    assert doubled == [] and out == [6 * i for i in range(5)]
    assert "is unreadable" not in messages(caplog)
    clear_cache(cache)
    assert not cache.exists()  # the set-aside folder is rxbot's to clear too


def test_a_failure_while_saving_is_logged_and_never_hides_the_steps_error(cache, caplog):
    def block_the_manifest(x):  # while the run goes on, so that only saving meets it
        (slot(cache) / "manifest.json").mkdir(parents=True, exist_ok=True)  # the manifest cannot be written
        return x

    err = run_failing(Loop(range(5)), _scale, block_the_manifest, Failing(3), print, error=RuntimeError)
    assert str(err) == "call 3 fails"
    assert "saving the cache of pipe P1" in messages(caplog) and "failed; the run's own outcome stands" in messages(caplog)
    assert [p.name for p in slot(cache).iterdir()] == ["manifest.json"]  # no recording left behind


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    target.write_bytes(b"old")

    def crash(*_):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


KILLJOB = """\
    import os, signal
    from rxbot import BotFrame, Loop, Pipe, config
    config.replay_mode = True
    N = int(os.environ["N"])
    FAIL3 = int(os.environ.get("FAIL3", "-1"))
    FAIL4 = int(os.environ.get("FAIL4", "-1"))
    if os.environ.get("KILL_AT"):  # a real kill -9 at the n-th call of os.fsync or os.replace
        name, n = os.environ["KILL_AT"].split(":")
        original, calls = getattr(os, name), []

        def killing(*args, **kwargs):
            calls.append(1)
            if len(calls) == int(n):
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)

        setattr(os, name, killing)

    def inc(x):
        with open("inc-calls.txt", "a") as fh:
            fh.write("%d\\n" % x)
        return x + 1

    def check(x):
        if x == FAIL3:
            raise ValueError("bad %d" % x)
        return x

    def check2(x):
        if x == FAIL4:
            raise ValueError("bad %d in step 4" % x)
        return x

    got = []
    Pipe(Loop(range(N)), inc, check, check2, got.append)
    BotFrame.run()
    print(len(got), sum(got))
"""


@pytest.mark.parametrize("kill_at", ["fsync:1", "replace:1", "fsync:2", "replace:2", "fsync:3"])
def test_kill_9_while_saving_leaves_the_previous_cache_loadable(tmp_path, kill_at):
    job = script(tmp_path / "killjob.py", KILLJOB)
    folder = tmp_path / ".rxbot" / "replay" / "killjob" / "P1"
    calls = tmp_path / "inc-calls.txt"
    first = python(job, N=1000, FAIL3=501)
    assert first.returncode == 1 and "bad 501" in first.stderr
    manifest = (folder / "manifest.json").read_bytes()
    data = json.loads(manifest)["data"]["file"]
    saved = (folder / data).read_bytes()

    # step 3 passes now, step 4 fails: the run saves step 3's output instead, and is
    # killed at some point of writing it (recording, renaming, the manifest)
    killed = python(job, N=1000, FAIL4=700, KILL_AT=kill_at)
    assert killed.returncode == -signal.SIGKILL
    assert "the 1000 items step 2 (inc) produced then are fed into step 3" in killed.stderr
    assert (folder / "manifest.json").read_bytes() == manifest and (folder / data).read_bytes() == saved

    last = python(job, N=1000)
    assert last.returncode == 0, last.stderr
    assert "the 1000 items step 2 (inc) produced then are fed into step 3" in last.stderr
    assert last.stdout.split() == ["1000", str(sum(range(1, 1001)))]
    assert len(calls.read_text().split()) == 1000  # inc ran in the first run only
    assert not (tmp_path / ".rxbot").exists()  # files the killed run left are gone too


# ---------------------------------------------------------------------------------------
# a million items, replayed with flat memory
# ---------------------------------------------------------------------------------------
BIGJOB = """\
    import json, os
    import psutil
    from rxbot import BotFrame, Loop, Pipe, config

    config.replay_mode = True
    N = 1_000_000
    FAIL = os.environ.get("FAIL") == "1"
    rss = psutil.Process().memory_info
    samples = []

    def record(x):
        return {"n": x, "s": str(x)}

    def check(r):
        if FAIL and r["n"] == N - 1:
            raise ValueError("the last item fails")
        return r["n"]

    def sink(n):
        if n % 20_000 == 0:  # by item count, not by time
            samples.append(rss().rss)
        got.append(1) if not got else None
        counted[0] += 1

    got, counted = [], [0]
    base = rss().rss
    Pipe(Loop(range(N)), record, check, sink)
    try:
        BotFrame.run()
    except ValueError:
        pass
    print(json.dumps({"base": base, "peak": max(samples), "count": counted[0]}))
"""


def test_a_million_items_are_recorded_and_replayed_with_flat_memory(tmp_path):
    job = script(tmp_path / "bigjob.py", BIGJOB)
    first = python(job, timeout=600, FAIL=1)
    assert first.returncode == 0, first.stderr
    recorded = json.loads(first.stdout)
    assert recorded["count"] == 999_999
    second = python(job, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "the 1000000 items step 2 (record) produced then are fed into step 3 (check)" in second.stderr
    replayed = json.loads(second.stdout)
    assert replayed["count"] == 1_000_000
    # a million such dicts held at once would take about 250 MB
    for mem in (recorded, replayed):
        assert mem["peak"] - mem["base"] < 30 * 2 ** 20, f"RSS grew by {(mem['peak'] - mem['base']) / 2 ** 20:.1f} MB"


# ---------------------------------------------------------------------------------------
# pickle: opt-in and signed
# ---------------------------------------------------------------------------------------
def _pickle_cache(cache):
    config.replay_serializer = "pickle"
    made, out = [], []

    def make(x):
        made.append(x)
        return Money(x, "EUR")

    boom = Failing(2, fn=lambda m: m.cents)
    run_failing(Loop(range(4)), make, boom, out.append, error=RuntimeError)
    boom.disarm()
    made.clear()
    out.clear()
    return made, out, boom, make


def test_pickle_cache_replays_arbitrary_objects(cache):
    made, out, boom, make = _pickle_cache(cache)
    assert (cache / "session" / "replay.key").stat().st_mode & 0o777 == 0o600
    run(Loop(range(4)), make, boom, out.append)
    assert made == [] and out == [0, 1, 2, 3]


def _evil_payload(data: Path, marker: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    payload = pickle.dumps(Evil())
    data.write_bytes(len(payload).to_bytes(8, "big") + payload)  # a valid frame, wrong signature


@pytest.mark.parametrize("attack", ["data replaced", "key replaced", "key damaged", "no opt-in"])
def test_a_pickle_cache_that_fails_its_check_is_never_unpickled(cache, tmp_path, caplog, attack):
    made, out, boom, make = _pickle_cache(cache)
    marker = tmp_path / "pwned"
    key = cache / "session" / "replay.key"
    if attack == "data replaced":
        _evil_payload(next(slot(cache).glob("*.pkl")), marker)
    elif attack == "key replaced":
        key.write_text(os.urandom(32).hex())
    elif attack == "key damaged":
        key.write_text("not a key")
    else:
        config.replay_serializer = "msgpack"
    run(Loop(range(4)), make, boom, out.append)
    assert not marker.exists()
    assert made == [0, 1, 2, 3] and out == [0, 1, 2, 3]  # a fresh start
    expected = {"data replaced": "does not match its signature", "key replaced": "does not match its signature",
                "key damaged": "is damaged", "no opt-in": "saved with pickle"}[attack]
    assert expected in messages(caplog)


def test_bad_serializer_setting_is_rejected(cache):
    config.replay_serializer = "yaml"
    with pytest.raises(ValueError, match="replay_serializer must be 'msgpack'"):
        run(Loop(range(2)), print)


# ---------------------------------------------------------------------------------------
# safe format
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: tuple
    when: datetime.date | None = None


@dataclasses.dataclass
class Counted:
    n: int
    inits = 0

    def __post_init__(self):
        Counted.inits += 1


Pair = namedtuple("Pair", "left right")


class Color(enum.Enum):
    RED = "r"
    BLUE = (0, 0, 255)


class Money:
    def __init__(self, cents: int, currency: str) -> None:
        self.cents, self.currency = cents, currency

    def __eq__(self, other):
        return isinstance(other, Money) and (self.cents, self.currency) == (other.cents, other.currency)


VALUES = [
    None, True, 0, -5, 2 ** 80, 1.5, float("inf"), "text ü \n \u2028", [1, [2]], (1, (2, "a")), (),
    {"a": 1, "b": [1, 2]}, {1: "int key", (2, 3): "tuple key"}, {"$": "looks like a tag"},
    b"\x00\xffbytes", {1, 2}, frozenset({"a"}), 3 + 4j, range(2, 9, 3),
    datetime.datetime(2024, 5, 1, 12, 30, 1, 5), datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone.utc),
    datetime.datetime(2024, 11, 3, 1, 30, tzinfo=zoneinfo.ZoneInfo("America/New_York"), fold=1),
    datetime.date(2024, 2, 29), datetime.time(23, 59, 58, 7), datetime.timedelta(days=-1, seconds=5),
    decimal.Decimal("1.10"), fractions.Fraction(1, 3), uuid.UUID(int=7),
    Point(1, (2, "b"), datetime.date(2020, 1, 1)), [Point(0, ())], Pair(1, Pair("a", b"b")),
    Color.RED, Color.BLUE, PurePosixPath("/tmp/x"),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_codec_round_trips_tagged_types(value):
    back = decode(encode(value))
    assert back == value and type(back) is type(value)
    if isinstance(value, datetime.datetime):
        assert back.tzinfo == value.tzinfo and back.fold == value.fold


def test_codec_exceptions_and_step_errors():
    back = decode(encode(ValueError("bad", 3)))
    assert type(back) is ValueError and back.args == ("bad", 3)

    class Custom(Exception):
        pass

    back = decode(encode(StepError("fetch", {"url": "u"}, Custom("down"))))
    assert isinstance(back, StepError) and back.step == "fetch" and back.item == {"url": "u"}
    assert isinstance(back.exception, ReplayedError) and back.exception.message == "down"


def test_codec_keeps_where_a_piped_in_exception_failed():
    from rxbot.errors import annotate

    back = decode(encode(annotate(KeyError("k"), "lookup", {"id": 4})))
    assert type(back) is KeyError and back.args == ("k",)
    assert (back.rxbot_step, back.rxbot_item) == ("lookup", {"id": 4})


def test_dataclasses_are_rebuilt_without_calling_init():
    line = encode(Counted(4))
    before = Counted.inits
    assert decode(line) == Counted(4)
    assert Counted.inits == before + 1  # only the comparison's Counted(4) ran __init__


def test_registered_types_round_trip():
    register_type(Money, lambda m: (m.cents, m.currency), lambda v: Money(*v), name="test.Money")
    try:
        assert decode(encode([Money(150, "EUR")])) == [Money(150, "EUR")]
    finally:
        unregister_type(Money)
    with pytest.raises(ReplayDecodeError, match="not registered"):
        decode(msgpack.packb(msgpack.ExtType(Ext.REGISTERED, msgpack.packb(["test.Money", [1, "x"]]))))


def test_unencodable_item_error_names_the_type_and_the_opt_in():
    with pytest.raises(ReplayEncodeError) as info:
        encode({"k": [Money(1, "EUR")]})
    text = str(info.value)
    assert "test_replay.Money" in text and "config.replay_serializer = 'pickle'" in text
    assert "register_type" in text

    with pytest.raises(ReplayEncodeError, match="defined inside a function"):
        encode(_local_dataclass())


def _local_dataclass():
    @dataclasses.dataclass
    class Inner:
        a: int

    return Inner(1)


def test_decoding_never_imports_modules():
    with pytest.raises(ReplayDecodeError, match="not imported"):
        decode(msgpack.packb(msgpack.ExtType(Ext.DATACLASS,
                                             msgpack.packb(["some_module_never_imported_xyz:Thing", {}]))))
    assert "some_module_never_imported_xyz" not in sys.modules


