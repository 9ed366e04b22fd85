"""Every example in examples/ runs as a subprocess, offline, within a time limit, and
prints what it should. (Examples needing MariaDB are tested in test_db.py.)"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, tmp_path: Path, timeout: float = 60, stderr: list | None = None) -> list[str]:
    env = dict(os.environ, RXBOT_EXAMPLE_OUT=str(tmp_path), PYTHONWARNINGS="error::RuntimeWarning")
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Task was destroyed" not in proc.stderr
    if stderr is not None:
        stderr.extend(proc.stderr.splitlines())
    if any(tmp_path.iterdir()):  # it left files (a database, a picture): a user runs it again
        again = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=timeout)
        assert again.returncode == 0, f"{name} fails when run a second time:\n{again.stderr[-3000:]}"
    return proc.stdout.splitlines()


def test_example_py_constant_then_prints(tmp_path):
    assert run_example("example.py", tmp_path) == ["{'a': 1, 'b': 2}"]


def test_basic_double_triple(tmp_path):
    assert run_example("basic.py", tmp_path) == [str(6 * i) for i in range(10)]


def test_route1_type_routing(tmp_path):
    lines = run_example("route1.py", tmp_path)
    sep = lines.index("----ex2")
    for part in (lines[:sep], lines[sep + 1:]):
        assert Counter(part) == Counter({"got class A": 3, "got class B": 2})


def test_blockedjoin_prints_tuples_and_renders(tmp_path):
    lines = run_example("blockedjoin.py", tmp_path)
    assert sorted(ast.literal_eval(line) for line in lines) == [(2 * i, 3 * i) for i in range(10)]
    assert (tmp_path / "blockedjoin").exists()


def test_async_steps(tmp_path):
    lines = run_example("async_steps.py", tmp_path)
    assert lines[0] == "40 records, largest 4900"


def test_baidu_spider_progress_prints_progress_until_the_crawl_is_done(tmp_path):
    """databot's progress idiom, Timer(until=p1.finished): a line at once, one per delay,
    and a last one with the total after the crawl finished (20 searches: 10 x 7 hits
    for 'asyncio' over 3 pages, 10 x 4 for 'reactive streams' over 2)."""
    lines = run_example("baidu_spider_progress.py", tmp_path)
    shape = re.compile(r"got len item (\d+) speed:(\d+\.\d{6}) per second,total cost: (\d+\.\d+)s")
    got = [shape.fullmatch(line) for line in lines]
    assert all(got), lines
    counts = [int(m.group(1)) for m in got]
    costs = [float(m.group(3)) for m in got]
    assert counts[0] == 0 and counts[-1] == 110 and counts == sorted(counts)
    assert costs == [0.25 * tick for tick in range(1, len(lines) + 1)]
    assert len(lines) >= 2  # tick 1 at once cannot have seen the pages come back (0.2 s each)


def test_baidu_spider_joined_calls_debug_from_a_timer_and_inserts_every_entry(tmp_path):
    stderr: list = []
    lines = run_example("baidu_spider_joined.py", tmp_path, stderr=stderr)
    assert lines[-1] == "11 rows in baidu"
    assert "asyncio — Asynchronous I/O | page 1 #1" in lines
    assert "PEP 3156 – Asynchronous IO Support Rebooted | page 3 #1" in lines
    # BotFrame.debug() from the Timer step logged the live run at every tick
    heads = [line for line in stderr if line.startswith("INFO:rxbot:2 pipe(s) running for ")]
    assert len(heads) >= 2
    first = stderr.index(heads[0])
    assert stderr[first + 1:first + 3] == ["  P1[1] Loop(list[2]): in=1 out=2 failed=0 in_flight=0",
                                           "  P1[2] HttpLoader: in=2 out=0 failed=0 in_flight=2"]
    assert any(line.startswith("  P1[5] Insert: insert into baidu") and "in=11 out=11" in line
               for line in stderr)  # a later snapshot saw every row go in
    assert (tmp_path / "baiduspider.dot").read_text().startswith("digraph")


def test_prometheus_exporter_example(tmp_path):
    pytest.importorskip("prometheus_client", reason="the rxbot[prometheus] extra")
    lines = run_example("prometheus_exporter.py", tmp_path)
    assert re.fullmatch(r"metrics on http://127\.0\.0\.1:\d+/metrics", lines[0])
    assert "  P1[2] fetch: in=300 out=300" in lines
    assert "  P1[3] big: in=300 out=290 filtered=10" in lines
