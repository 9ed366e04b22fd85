"""What a user sees when a script fails, is interrupted or forgets BotFrame.run():
scripts run as ``python script.py`` (and ``rxbot run``) in a fresh interpreter."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from launch import kill_group, popen
from rxbot import BotFrame, Loop, Pipe
from rxbot.errors_display import format_short, hint, is_user_frame

REPO = Path(__file__).resolve().parents[1]


def env(**extra: str) -> dict:
    e = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    e.pop("RXBOT_DEBUG", None)
    e.update(extra)
    return e


def write(tmp_path: Path, body: str, name: str = "job.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def python(path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(path), *args], cwd=path.parent, env=env(**extra),
                          capture_output=True, text=True, timeout=60)


FAILING = """
    from rxbot import BotFrame, Loop, Pipe

    def parse(record):
        return record["price"]

    Pipe(Loop([{"price": 1}, {"cost": 2}]), parse, print)
    BotFrame.run()
"""


def test_a_failing_step_prints_the_step_line_and_the_users_frames_only(tmp_path):
    job = write(tmp_path, FAILING)
    proc = python(job)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[0] == "rxbot: raised in step 'parse' on item {'cost': 2}"
    assert lines[1].startswith("Traceback (most recent call last; rxbot and library frames hidden")
    # the user's two frames: the run() call and the failing line of the step
    files = re.findall(r'File "([^"]+)", line \d+, in (\S+)', proc.stderr)
    assert files == [(str(job), "<module>"), (str(job), "parse")]
    assert 'return record["price"]' in proc.stderr
    assert lines[-1] == "KeyError: 'price'"
    assert "asyncio" not in proc.stderr and "rxbot/engine" not in proc.stderr
    assert proc.stderr.count("raised in step") == 1  # the note is not printed twice
    assert len(lines) <= 10


def test_debug_prints_the_full_traceback(tmp_path):
    job = write(tmp_path, FAILING)
    proc = python(job, RXBOT_DEBUG="1")
    assert proc.returncode == 1
    assert proc.stderr.startswith("Traceback (most recent call last):")
    assert "asyncio" in proc.stderr and os.path.join("rxbot", "botframe.py") in proc.stderr
    assert "rxbot: raised in step 'parse' on item {'cost': 2}" in proc.stderr


def test_rxbot_run_prints_the_short_form_and_debug_the_long_one(tmp_path):
    job = write(tmp_path, FAILING)
    short = subprocess.run([sys.executable, "-m", "rxbot", "run", str(job)], cwd=tmp_path, env=env(),
                           capture_output=True, text=True, timeout=60)
    assert short.returncode == 1
    assert short.stderr.startswith("rxbot: raised in step 'parse'")
    assert "runpy" not in short.stderr and "cli.py" not in short.stderr
    full = subprocess.run([sys.executable, "-m", "rxbot", "run", "--debug", str(job)], cwd=tmp_path,
                          env=env(), capture_output=True, text=True, timeout=60)
    assert full.returncode == 1 and "runpy" in full.stderr and "asyncio" in full.stderr


def test_the_exception_stays_the_original_for_except():
    """Only printing is shortened: the raised object keeps its type, chain and frames."""
    def parse(x):
        try:
            return {}[x]
        except KeyError as exc:
            raise ValueError(f"no price for {x}") from exc

    Pipe(Loop([7]), parse)
    with pytest.raises(ValueError) as info:
        BotFrame.run()
    exc = info.value
    assert isinstance(exc.__cause__, KeyError)
    frames = [f.name for f in __import__("traceback").extract_tb(exc.__traceback__)]
    assert "run_pipes" in frames and "parse" in frames  # nothing was cut from the object
    text = "\n".join(format_short(exc))
    assert "caused by KeyError: 7" in text and "ValueError: no price for 7" in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_mysql_connection_names_the_root_cause_and_what_to_check(tmp_path):
    port = _free_port()  # nothing listens there
    job = write(tmp_path, f"""
        from rxbot import BotFrame, Pipe
        from rxbot.db.mysql import Query
        Pipe(Query("select 1", host="127.0.0.1", port={port}, user="root", password="", db="test"), print)
        BotFrame.run()
    """)
    proc = python(job)
    assert proc.returncode == 1
    assert "ConnectionRefusedError" in proc.stderr
    assert f"root@127.0.0.1:{port}/test" in proc.stderr
    assert "check host, port" in proc.stderr
    assert "Traceback (most recent call last):" not in proc.stderr  # no chained full tracebacks
    assert len(proc.stderr.splitlines()) <= 10


def test_a_refused_http_connection_says_what_to_check(tmp_path):
    job = write(tmp_path, f"""
        from rxbot import BotFrame, HttpLoader, Pipe
        Pipe("http://127.0.0.1:{_free_port()}/x", HttpLoader(retries=0), print)
        BotFrame.run()
    """)
    proc = python(job)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == ("check: nothing accepted the connection - is the "
                                            "server running, and are the host and port right?")
    assert "Connect call failed" in proc.stderr and len(proc.stderr.splitlines()) <= 8


def test_hint_for_connection_failures():
    try:
        try:
            raise ConnectionRefusedError(111, "refused")
        except OSError as exc:
            raise RuntimeError("cannot connect") from exc
    except RuntimeError as outer:
        assert "host and port" in hint(outer)
    assert hint(ValueError("x")) is None


SLOW = """
    import asyncio, sys
    from rxbot import BotFrame, Loop, Pipe, Step

    async def slow(x):
        await asyncio.sleep(0.01)
        return x

    def started(x):
        if x == 0:
            print("started", flush=True)

    Pipe(Loop(range(10**6)), Step(slow, concurrency=4), started)
    BotFrame.run()
"""


def _interrupt(job: Path, sig: int, *cmd: str) -> subprocess.CompletedProcess:
    args = [sys.executable, *cmd, str(job)] if cmd else [sys.executable, str(job)]
    proc = popen(args, cwd=job.parent, env=env(), stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "started\n"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        kill_group(proc)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@pytest.mark.parametrize("sig, word, codes", [
    (signal.SIGINT, "interrupted", (130, -signal.SIGINT)),
    (signal.SIGTERM, "terminated", (143,)),
])
def test_ctrl_c_and_sigterm_print_one_line_and_the_report(tmp_path, sig, word, codes):
    job = write(tmp_path, SLOW)
    proc = _interrupt(job, sig)
    assert proc.returncode in codes, proc.stderr
    lines = proc.stderr.splitlines()
    m = re.fullmatch(rf"rxbot: {word} after (\d+) items; (\d+) in flight cancelled", lines[0])
    assert m, proc.stderr
    assert int(m.group(1)) >= 1
    assert lines[1].startswith("run finished in")
    assert any("slow: in=" in line for line in lines)
    assert "Traceback" not in proc.stderr


def test_ctrl_c_under_rxbot_run_exits_130(tmp_path):
    job = write(tmp_path, SLOW)
    proc = _interrupt(job, signal.SIGINT, "-m", "rxbot", "run")
    assert proc.returncode == 130, proc.stderr
    assert re.match(r"rxbot: interrupted after \d+ items; \d+ in flight cancelled\n", proc.stderr)
    assert "Traceback" not in proc.stderr


def test_a_forgotten_run_warns_at_exit(tmp_path):
    job = write(tmp_path, """
        from rxbot import Loop, Pipe
        Pipe(Loop(range(3)), print, name="numbers")
        Pipe(Loop(range(3)), print)
    """)
    proc = python(job)
    assert proc.returncode == 0 and proc.stdout == ""
    assert proc.stderr == ("rxbot: warning: 2 pipes (numbers, Pipe 2) built but never run; add "
                           "BotFrame.run() at the end of the script (or BotFrame.clear() to drop them)\n")


@pytest.mark.parametrize("ending", ["BotFrame.run()", "BotFrame.clear()",
                                    "BotFrame.render('g.dot', format='dot')"])
def test_no_warning_when_pipes_were_run_cleared_or_drawn(tmp_path, ending):
    job = write(tmp_path, f"""
        from rxbot import BotFrame, Loop, Pipe
        Pipe(Loop(range(3)), lambda x: None)
        {ending}
    """)
    proc = python(job)
    assert proc.returncode == 0, proc.stderr
    assert "never run" not in proc.stderr


def test_no_warning_after_an_uncaught_error(tmp_path):
    job = write(tmp_path, """
        from rxbot import Loop, Pipe
        Pipe(Loop(range(3)), print)
        raise SystemError("the script's own bug")
    """)
    proc = python(job)
    assert proc.returncode == 1 and "never run" not in proc.stderr


def test_user_frames():
    assert is_user_frame(__file__)
    assert not is_user_frame(os.__file__)
    assert not is_user_frame(str(REPO / "rxbot" / "botframe.py"))
    assert not is_user_frame("<rxbot fused ff.>")


def test_other_errors_keep_pythons_own_traceback(tmp_path):
    """The hook BotFrame.run() installs shortens only errors that went through rxbot."""
    job = write(tmp_path, """
        from rxbot import BotFrame, Loop, Pipe
        Pipe(Loop([1]), lambda x: None)
        BotFrame.run()
        def own():
            raise LookupError("the script's own bug")
        own()
    """)
    proc = python(job)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Traceback (most recent call last):\n")
    assert "in own" in proc.stderr and proc.stderr.endswith("LookupError: the script's own bug\n")


@pytest.mark.parametrize("body, line, message", [
    ("def add(a, b):\n    return a + b\n\nPipe(range(3), add, print)\n", "Pipe(range(3), add, print)",
     "step 'add' must accept one positional argument (the item); its signature is add(a, b)"),
    ("Pipe(range(3), Filter(lambda x: x > 1), print)\n", "Pipe(range(3), Filter(lambda x: x > 1), print)",
     "Filter: argument 'route_type' must be a class or a tuple of classes; got <lambda> line 3; "
     "a test of the item goes in route_func=: Filter(route_func=lambda x: ...)"),
])
def test_build_time_errors_print_the_short_way_message_first(tmp_path, body, line, message):
    """A mistake caught while a Pipe is built (before any BotFrame.run()) reads like a
    failing step: the message first, the user's line, rxbot's frames hidden (they were
    9-17-line tracebacks with the message last); RXBOT_DEBUG=1 shows every frame."""
    job = write(tmp_path, "from rxbot import BotFrame, Filter, Pipe\n\n" + body + "BotFrame.run()\n")
    proc = python(job)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[0] == "rxbot: " + message
    assert lines[1].startswith("Traceback (most recent call last; rxbot and library frames hidden")
    assert re.fullmatch(rf'  File ".*job\.py", line \d+, in <module>', lines[2])
    assert lines[3].strip() == line
    assert lines[-1] == "TypeError: " + message
    assert f"{os.sep}rxbot{os.sep}" not in proc.stderr and len(lines) <= 6
    full = python(job, RXBOT_DEBUG="1")
    assert f"{os.sep}rxbot{os.sep}tree{os.sep}flow.py" in full.stderr and full.stderr.splitlines()[0] == "Traceback (most recent call last):"
