"""The tests pass however the suite was launched (issue 30, item 2).

A background job of a non-interactive shell script starts with SIGINT ignored (and so do
``nohup`` under some shells and many CI launchers), and an ignored signal stays ignored in
every child it execs: a test that sends Ctrl-C to a child Python then waits for nothing.
``tests/launch.py`` starts children with SIGINT at its default disposition, in a process
group of their own (a timeout kills the group: no orphans) and with stdin from /dev/null.
Here a small signal test, written the way the suite's Ctrl-C tests are, is run by pytest
started as a background job, under ``nohup``, and without a terminal (``setsid``).
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from launch import REPO, child_env, kill_group, popen, run

INNER_TEST = '''
import signal, subprocess, sys, textwrap
from launch import kill_group, popen

JOB = textwrap.dedent("""
    import asyncio
    from rxbot import BotFrame, Loop, Pipe, Step

    async def slow(x):
        await asyncio.sleep(0.01)
        return x

    def started(x):
        if x == 0:
            print("started", flush=True)

    Pipe(Loop(range(10**6)), Step(slow, concurrency=4), started)
    BotFrame.run()
""")


def test_ctrl_c_stops_a_child_run(tmp_path):
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    print("pytest's own SIGINT:", "ignored" if ignored else "not ignored")
    job = tmp_path / "job.py"
    job.write_text(JOB)
    proc = popen([sys.executable, str(job)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "started\\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGINT, err
    assert err.startswith("rxbot: interrupted after "), err
'''

#: how the outer shell starts the inner pytest ("$0" is this Python)
LAUNCHES = {
    # a background job of a non-interactive shell: SIGINT and SIGQUIT ignored
    "background job": ["bash", "-c", '"$0" -m pytest -q -s -p no:cacheprovider test_inner.py & wait $!',
                       sys.executable],
    "nohup": ["nohup", sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "test_inner.py"],
    # a new session: no controlling terminal at all (stdin is /dev/null, see launch.popen)
    "no terminal": ["setsid", "--wait", sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                    "test_inner.py"],
}


@pytest.mark.parametrize("how", list(LAUNCHES))
def test_a_ctrl_c_test_passes_however_pytest_was_launched(tmp_path, how):
    for tool in ("bash", "nohup", "setsid"):
        assert shutil.which(tool), f"{tool} is part of every Linux base system"
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    env = child_env(PYTHONPATH=f"{REPO / 'tests'}:{REPO}")
    # the launcher itself as a background job of a script: SIGINT ignored from the start
    done = run(LAUNCHES[how], 120, cwd=tmp_path, env=env,
               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    # the situation under test was real: the inner pytest had SIGINT ignored
    assert "pytest's own SIGINT: ignored" in done.stdout


def test_popen_gives_a_child_the_default_sigint_and_its_own_group(tmp_path):
    """What the above relies on, seen from the child."""
    probe = ("import os, signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler, "
             "os.getpgid(0) == os.getpid())")
    original = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job
    try:
        proc = popen([sys.executable, "-c", probe], stdout=subprocess.PIPE, text=True)
        try:
            out, _ = proc.communicate(timeout=60)
        finally:
            kill_group(proc)
    finally:
        signal.signal(signal.SIGINT, original)
    assert out.split() == ["True", "True"]
