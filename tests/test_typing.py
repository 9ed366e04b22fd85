"""The package is typed: it ships ``py.typed`` and passes mypy with the configuration in
pyproject.toml (the public modules at --strict level), and a user's mypy sees its types."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")


def mypy(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_the_package_passes_mypy():
    proc = mypy()  # files and strictness come from pyproject.toml [tool.mypy]
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert "Success: no issues found" in proc.stdout


def test_users_get_the_types(tmp_path):
    assert (ROOT / "rxbot" / "py.typed").is_file()
    user = tmp_path / "job.py"
    user.write_text(textwrap.dedent("""
        from rxbot import BotFrame, Loop, Pipe, config
        Pipe(Loop(range(3)), print)
        report = BotFrame.run(interval="soon")
        seconds: str = report.seconds
        config.policy(1).upper()
    """))
    proc = mypy("--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(ROOT / ".mypy_cache"),
                str(user), cwd=ROOT)
    assert proc.returncode == 1, proc.stdout
    assert 'Argument "interval" to "run" of "BotFrame" has incompatible type "str"' in proc.stdout
    assert 'Incompatible types in assignment (expression has type "float", variable has type "str")' in proc.stdout
    assert proc.stdout.count("error:") == 2
