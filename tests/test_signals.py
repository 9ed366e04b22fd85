"""Ctrl-C and SIGTERM always stop a run, even one stuck in a step's own code (issue 31).

The first signal asks for the graceful stop; when the event loop does not act on it
within ``rxbot.stopping.STOP_GRACE`` (a sync step that never returns never gives it a
turn), the signal is raised in the main thread, inside the step, as plain Python does.
Each test runs a script in a child (tests/launch.py: default SIGINT, own process group,
killed at the end) and checks what a user sees: the exit status, the one line and the
report, with what really went through. "Within 3 s" is the time the test allows between
the signal and the report on stderr; the child's exit is then waited for generously.
"""
from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from launch import child_env, kill_group, popen

#: seconds from the signal to the report on stderr (the grace is 1 s)
STOP_BOUND = 3.0

SPIN = """
    import sys
    from rxbot import BotFrame, Loop, Pipe, Return

    def spin_at_12(x):
        if x == 12:  # a parse function looping on a page that never changes
            print("spinning", flush=True)
            while True:
                pass
        return x

    def done(x):
        pass

    steps = [spin_at_12] if sys.argv[1] == "plain" else [Return(spin_at_12, route_func=lambda x: x >= 0)]
    Pipe(Loop(range(100)), *steps, done)
    BotFrame.run()
    print("run returned", flush=True)
"""


def _job(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(body))
    return path


def _read_until(proc: subprocess.Popen, marker: bytes, seconds: float) -> bytes:
    """What the child writes to stderr until ``marker`` (or the deadline, or its exit)."""
    fd = proc.stderr.fileno()
    deadline = time.monotonic() + seconds
    seen = b""
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        seen += chunk
    return seen


def stop(job: Path, *signals: int, args: tuple = (), cmd: tuple = (), env: dict | None = None,
         ready: str = "spinning", between: str | None = None) -> tuple:
    """Start ``job``, wait for its ``ready`` line, send ``signals`` (the second one after
    its stdout says ``between``, when given); return (exit status, stderr, stdout, the part
    of stderr written within STOP_BOUND seconds of the last signal)."""
    proc = popen([sys.executable, *cmd, str(job), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 env=env or child_env())
    try:
        assert proc.stdout.readline().decode().strip() == ready
        proc.send_signal(signals[0])
        if len(signals) > 1:
            if between is not None:
                assert proc.stdout.readline().decode().strip() == between
            proc.send_signal(signals[1])
        early = _read_until(proc, b"run finished in", STOP_BOUND)
        out, err = proc.communicate(timeout=30)
    finally:
        kill_group(proc)
    return proc.returncode, (early + err).decode(), out.decode(), early.decode()


def _assert_report(err: str, early: str, word: str, items: int) -> None:
    lines = err.splitlines()
    line = re.fullmatch(rf"rxbot: {word} after {items} items; (\d+) in flight cancelled", lines[0])
    assert line, err
    assert int(line.group(1)) >= 1  # the item the step was working on, at least
    assert lines[1].startswith("run finished in"), err
    assert "run finished in" in early, f"no report within {STOP_BOUND}s of the signal: {err}"
    assert "Traceback" not in err
    assert "ledger does not balance" not in err


@pytest.mark.parametrize("fusion", ["fused", "unfused"])
@pytest.mark.parametrize("shape", ["plain", "route"])
def test_sigterm_stops_a_step_spinning_forever(tmp_path, fusion, shape):
    env = child_env(RXBOT_NO_FUSION="1" if fusion == "unfused" else "0")
    code, err, out, early = stop(_job(tmp_path, SPIN), signal.SIGTERM, args=(shape,), env=env)
    assert code == 128 + signal.SIGTERM, err
    _assert_report(err, early, "terminated", 12)  # 12 items went through before the 13th spun
    assert "run returned" not in out


@pytest.mark.parametrize("fusion", ["fused", "unfused"])
def test_ctrl_c_stops_a_step_spinning_forever(tmp_path, fusion):
    env = child_env(RXBOT_NO_FUSION="1" if fusion == "unfused" else "0")
    code, err, out, early = stop(_job(tmp_path, SPIN), signal.SIGINT, args=("plain",), env=env)
    # the KeyboardInterrupt goes up to Python, which ends by SIGINT as for any script
    assert code == -signal.SIGINT, err
    _assert_report(err, early, "interrupted", 12)


def test_ctrl_c_ends_by_sigint_whatever_writing_the_report_runs(tmp_path):
    """CPython ends a script by SIGINT after an uncaught KeyboardInterrupt only if nothing
    in the excepthook runs ``exec`` of a string (it resets that to exit status 1); a module
    first imported while the report is written does (dataclasses are made that way). Here
    writing the report runs such an ``exec``: the script still ends by SIGINT."""
    body = SPIN.replace("    import sys\n", (
        "    import sys\n"
        "    import rxbot.observe.report_io as _io\n"
        "    _to_text = _io.to_text\n"
        "    def to_text(report):\n"
        "        exec('first_import = True', {})  # what importing a module with a dataclass does\n"
        "        return _to_text(report)\n"
        "    _io.to_text = to_text\n"), 1)
    assert body != SPIN
    code, err, out, early = stop(_job(tmp_path, body), signal.SIGINT, args=("plain",))
    assert code == -signal.SIGINT, err
    _assert_report(err, early, "interrupted", 12)


@pytest.mark.parametrize("sig, status, word", [(signal.SIGINT, 130, "interrupted"),
                                               (signal.SIGTERM, 143, "terminated")])
def test_rxbot_run_stops_a_step_spinning_forever(tmp_path, sig, status, word):
    code, err, out, early = stop(_job(tmp_path, SPIN), sig, args=("route",), cmd=("-m", "rxbot", "run"))
    assert code == status, err
    _assert_report(err, early, word, 12)


SLOW_CLOSE = """
    import asyncio, time
    from rxbot import BotFrame, Loop, Node, Pipe

    class SlowToClose(Node):
        async def __call__(self, x):
            if x == 0:
                print("started", flush=True)
            await asyncio.sleep(0.01)
            return x

        async def close(self):
            print("closing", flush=True)
            await asyncio.sleep(60)  # a slow graceful stop (a remote server that never answers)

    Pipe(Loop(range(10**6)), SlowToClose())
    BotFrame.run()
"""


@pytest.mark.parametrize("first, second, status, word", [
    (signal.SIGINT, signal.SIGINT, -signal.SIGINT, "interrupted"),
    (signal.SIGTERM, signal.SIGTERM, 128 + signal.SIGTERM, "terminated"),  # docker stop, twice
    (signal.SIGTERM, signal.SIGINT, -signal.SIGINT, "interrupted"),  # the last signal decides
], ids=["ctrl-c twice", "sigterm twice", "sigterm then ctrl-c"])
def test_a_second_signal_during_a_slow_graceful_stop_ends_the_run_at_once(tmp_path, first, second, status, word):
    code, err, out, early = stop(_job(tmp_path, SLOW_CLOSE), first, second, ready="started", between="closing")
    assert code == status, err
    assert re.match(rf"rxbot: {word} after \d+ items; \d+ in flight cancelled\n", err), err
    assert "run finished in" in early, f"no report within {STOP_BOUND}s of the second Ctrl-C: {err}"
    assert "Traceback" not in err


SLOW_STEPS = """
    import time
    from rxbot import BotFrame, Loop, Pipe

    def slow(x):  # blocks the loop: the first Ctrl-C cannot be acted on between items
        if x == 3:
            print("sleeping", flush=True)
        time.sleep(0.5)
        return x

    def done(x):
        pass

    Pipe(Loop(range(100)), slow, done)
    BotFrame.run()
"""


def test_ctrl_c_stops_blocking_steps_at_the_first_signal_and_counts_what_went_through(tmp_path):
    """Before: the first Ctrl-C waited for a whole slice of items (30+ s with
    ``time.sleep(3)``) and the report said 0 items after 12 had gone through."""
    code, err, out, early = stop(_job(tmp_path, SLOW_STEPS), signal.SIGINT, ready="sleeping")
    assert code == -signal.SIGINT, err
    line = re.match(r"rxbot: interrupted after (\d+) items; (\d+) in flight cancelled\n", err)
    assert line, err
    assert int(line.group(1)) >= 3  # items 0, 1 and 2 went through before 3 said "sleeping"
    assert "run finished in" in early, f"no report within {STOP_BOUND}s of the Ctrl-C: {err}"
    assert "ledger does not balance" not in err


WATCHED = """
    from rxbot import BotFrame, Loop, Pipe

    def spin(x):
        print("spinning", flush=True)
        while True:
            pass

    Pipe(Loop([1]), spin)
    BotFrame.run(watch=True)
"""


def test_sigterm_stops_a_spinning_run_with_the_live_view_serving(tmp_path):
    code, err, out, early = stop(_job(tmp_path, WATCHED), signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err
    assert "rxbot: terminated after 0 items; " in err
    assert "run finished in" in early, f"no report within {STOP_BOUND}s of the signal: {err}"


def test_an_ignored_sigint_stays_ignored_and_the_handlers_are_given_back():
    """A background job of a shell script starts with SIGINT ignored: a run there must not
    start reacting to it; SIGTERM is handled for the run only."""
    import asyncio

    from rxbot.stopping import SignalStop

    loop = asyncio.new_event_loop()
    task = loop.create_task(asyncio.sleep(0))
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        stop = SignalStop(loop, task)
        stop.install()
        during = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        stop.uninstall()
        after = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGINT, before[0])
        loop.run_until_complete(task)
        loop.close()
    assert during[0] is signal.SIG_IGN
    assert during[1] == stop._on_signal
    assert after == (signal.SIG_IGN, before[1])


CPU_BOUND = """
    import time
    from rxbot import BotFrame, Loop, Pipe, config

    config.yield_every = 10 ** 9  # never by count: only time gives the loop its turns

    def parse(x):
        if x == 50:
            print("spinning", flush=True)
        try:
            end = time.perf_counter() + 0.01  # 10 ms of CPU a page, never returning to the loop
            while time.perf_counter() < end:
                pass
        except KeyboardInterrupt:
            print("cut inside the step", flush=True)  # the stop was forced: the loop had no turn
            raise
        return x

    Pipe(Loop(range(10 ** 6)), parse, lambda x: None)
    BotFrame.run()
"""


@pytest.mark.parametrize("fusion", ["fused", "unfused"])
def test_ctrl_c_stops_a_cpu_bound_run_gracefully(tmp_path, fusion):
    """A CPU-bound run gives the loop a turn by time (issue 25.5), so the first Ctrl-C is
    acted on by the loop (the graceful stop), never forced inside the step."""
    env = child_env(RXBOT_NO_FUSION="1" if fusion == "unfused" else "0")
    code, err, out, early = stop(_job(tmp_path, CPU_BOUND), signal.SIGINT, env=env)
    assert code == -signal.SIGINT, err
    assert "cut inside the step" not in out, err
    line = re.match(r"rxbot: interrupted after (\d+) items", err)
    assert line and int(line.group(1)) >= 50, err
    assert "run finished in" in early, f"no report within {STOP_BOUND}s of the signal: {err}"
    assert "Traceback" not in err
