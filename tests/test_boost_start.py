"""How ``boost='process'`` starts its workers (issue 30, item 1; docs/boost.md).

A fork copies only the forking thread; a lock another thread held at that moment stays
locked in the child forever (Python 3.12+ warns: "This process is multi-threaded, use
of fork() may lead to deadlocks in the child"). rxbot forks only a process that has a
single thread, and otherwise starts workers through the forkserver, whose workers
import the main script again: a databot script without a ``__main__`` guard must still
run its pipes once, in the main process.
"""
from __future__ import annotations

import textwrap

from launch import python

START_METHOD = """
    import threading
    from rxbot import config
    from rxbot.engine.boost import start_method

    print(start_method())
    stop = threading.Event()
    threading.Thread(target=stop.wait).start()
    print(start_method())
    config.boost_start_method = "spawn"
    print(start_method())
    stop.set()
"""


def test_fork_only_while_the_process_has_a_single_thread(tmp_path):
    script = tmp_path / "method.py"
    script.write_text(textwrap.dedent(START_METHOD))
    done = python(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fork", "forkserver", "spawn"]


UNGUARDED = """
    # a databot script: no __main__ guard, the boosted function defined in __main__
    import os, sys, threading
    from rxbot import BotFrame, Loop, Node, Pipe

    @Node.boost(type="process", workers=2)
    def crunch(x):
        return (x * x, os.getppid())

    def record(x):
        with open(sys.argv[1], "a") as f:
            f.write(f"{x}\\n")
        return x

    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()  # the process has threads now
    out = []
    Pipe(Loop(range(6)), record, crunch, out.append)
    BotFrame.run()
    stop.set()
    # the workers import this script too and print their own (empty) lines on the same
    # pipe: one os.write per line keeps each line whole (a pipe write of under PIPE_BUF
    # bytes is atomic), where print may split a line into several writes
    os.write(1, f"{__name__} squares {sorted(r[0] for r in out)}\\n".encode())
    os.write(1, f"{__name__} forked from the threaded process: {any(r[1] == os.getpid() for r in out)}\\n".encode())
"""


def test_a_threaded_script_without_a_guard_gets_unforked_workers_and_runs_its_pipe_once(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(UNGUARDED))
    log = tmp_path / "record.log"
    done = python("-W", "error::DeprecationWarning", str(script), str(log))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # the main process's own lines; the workers import the script as __mp_main__ and
    # print "squares []" for their (not run) pipe, as docs/boost.md says
    main_lines = [line for line in lines if line.startswith("__main__ ")]
    assert main_lines == [
        "__main__ squares [0, 1, 4, 9, 16, 25]",
        "__main__ forked from the threaded process: False",
    ]
    worker_lines = [line for line in lines if not line.startswith("__main__ ")]
    assert worker_lines and set(worker_lines) <= {
        "__mp_main__ squares []",
        "__mp_main__ forked from the threaded process: False",
    }
    assert sorted(log.read_text().split()) == [str(i) for i in range(6)]  # the pipe ran once
    assert "DeprecationWarning" not in done.stderr
