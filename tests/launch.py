"""Start test subprocesses the same way however the test suite itself was launched.

A test run started as a background job of a non-interactive script (and by ``nohup``
and many CI launchers) has SIGINT ignored, and an ignored signal stays ignored across
``exec``: a child Python would then never see Ctrl-C, so the tests that send it SIGINT
would wait for nothing. And a child that starts children of its own (a process pool, a
Dask worker) leaves them behind when only the child is killed at a timeout.

So every child started here:

* gets SIGINT back at its default disposition (Python then installs its own
  ``KeyboardInterrupt`` handler, as in a terminal);
* leads a process group of its own (``process_group=0``), so that a timeout, or the end
  of the test, kills the whole group: nothing is orphaned;
* has stdin from /dev/null, so nothing depends on a terminal being there.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

REPO = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict:
    """The environment of a child: this checkout first on PYTHONPATH, no RXBOT_DEBUG."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("RXBOT_DEBUG", None)
    env.update(extra)
    return env


def _default_sigint() -> None:
    # runs in the child between fork and exec; a signal's disposition is one of the few
    # things exec keeps when it is "ignore"
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen(args: Sequence[str], **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen`` with default SIGINT, its own process group and no stdin."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    kwargs.setdefault("env", child_env())
    kwargs.setdefault("preexec_fn", _default_sigint)
    return subprocess.Popen(list(args), process_group=0, **kwargs)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group (the child and whatever it started) and reap
    the child."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextlib.contextmanager
def started(args: Sequence[str], **kwargs: Any) -> Iterator[subprocess.Popen]:
    """A child for the length of the block; its process group is killed when the block ends,
    however it ends (a failed assertion, a timeout)."""
    proc = popen(args, **kwargs)
    try:
        yield proc
    finally:
        kill_group(proc)


def run(args: Sequence[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a child to its end, its output captured as text; past ``timeout`` its process group
    is killed and ``subprocess.TimeoutExpired`` raised (with what it printed so far)."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("text", True)
    with started(args, **kwargs) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            kill_group(proc)
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(exc.cmd, timeout, out, err) from None
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def python(script: str | Path, *args: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a Python script with this interpreter (see :func:`run`)."""
    return run([sys.executable, str(script), *args], timeout, **kwargs)


__all__ = ["REPO", "child_env", "popen", "kill_group", "started", "run", "python"]


async def ended_or_explained(task: "asyncio.Future", seconds: float, what: str) -> None:
    """Await ``task``; if it has not ended within ``seconds`` (a hang, not a slow
    machine: callers give far more than it needs), fail with the stack of every task
    of the loop and every thread, so that a hang seen once in CI can be diagnosed.
    The task's own outcome (a result or an exception, a cancellation included) is
    raised as awaiting it would."""
    import asyncio
    import traceback

    import pytest

    try:
        await asyncio.wait_for(asyncio.shield(task), seconds)
    except asyncio.TimeoutError:
        if task.done():
            raise
        lines = [f"{what}: not ended after {seconds:g}s; the loop's tasks:"]
        for other in asyncio.all_tasks():
            lines.append(repr(other))
            lines.extend(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
                         for frame in other.get_stack())
        for ident, frame in sys._current_frames().items():
            lines.append(f"thread {ident}:")
            lines.extend(line.rstrip() for line in traceback.format_stack(frame))
        pytest.fail("\n".join(lines))
