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


def run_example(name: str, tmp_path: Path, timeout: float = 60) -> list[str]:
    env = dict(os.environ, RXBOT_EXAMPLE_OUT=str(tmp_path), PYTHONWARNINGS="error::RuntimeWarning")
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Task was destroyed" not in proc.stderr
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


def test_prometheus_exporter_example(tmp_path):
    pytest.importorskip("prometheus_client", reason="the rxbot[prometheus] extra")
    lines = run_example("prometheus_exporter.py", tmp_path)
    assert re.fullmatch(r"metrics on http://127\.0\.0\.1:\d+/metrics", lines[0])
    assert "  P1[2] fetch: in=300 out=300" in lines
    assert "  P1[3] big: in=300 out=290 filtered=10" in lines
