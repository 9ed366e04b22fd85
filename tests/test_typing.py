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


def test_lazily_imported_names_have_their_real_types(tmp_path):
    """HttpLoader, HttpRequest, HttpResponse, aiofile and ReadLines are imported from rxbot
    on first use (aiohttp and aiofiles load only then); to a type checker they are the real
    classes, not Any, so a wrong argument is an error."""
    user = tmp_path / "crawl.py"
    user.write_text(textwrap.dedent("""
        from rxbot import HttpLoader, HttpRequest, HttpResponse, ReadLines, aiofile
        HttpLoader(timeout="5")
        reveal_type(HttpRequest)
        reveal_type(HttpResponse)
        reveal_type(aiofile)
        reveal_type(ReadLines)
    """))
    proc = mypy("--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(ROOT / ".mypy_cache"),
                str(user), cwd=ROOT)
    assert proc.returncode == 1, proc.stdout
    assert 'Argument "timeout" to "HttpLoader" has incompatible type "str"' in proc.stdout, proc.stdout
    for name, module in (("HttpRequest", "rxbot.http.http"), ("HttpResponse", "rxbot.http.http"),
                         ("aiofile", "rxbot.db.aiofile"), ("ReadLines", "rxbot.db.aiofile")):
        assert f'Revealed type is "def' in proc.stdout and f"{module}.{name}" in proc.stdout, (name, proc.stdout)


def test_an_editable_install_is_visible_to_mypy_from_any_folder(tmp_path):
    """The README's 'pip install -e .', into a fresh environment, then mypy on a user's
    script in a folder of its own: it finds rxbot and its types. (setuptools' default
    editable install of a flat layout is an import hook that mypy cannot follow: 'Cannot
    find implementation or library stub for module named "rxbot"'; setup.cfg's
    package_dir makes it a plain path entry.) Offline: no build isolation, no index."""
    import os

    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python = str(env_dir / "bin" / "python")
    # the test environment's packages (pip, setuptools, mypy, rxbot's dependencies) seen
    # through a .pth file: --system-site-packages would show the base interpreter's
    # packages instead, which a fresh machine's Python does not have
    import site

    child_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    (Path(child_site) / "_test_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    install = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                              "-q", "-e", str(ROOT)], capture_output=True, text=True, timeout=300, env=clean)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    project = tmp_path / "project"
    project.mkdir()
    (project / "job.py").write_text(textwrap.dedent("""
        from rxbot import BotFrame, Pipe
        Pipe(range(3), print)
        report = BotFrame.run(interval="soon")
    """))
    proc = subprocess.run([python, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "job.py"], cwd=project,
                          capture_output=True, text=True, timeout=600, env=clean)
    assert 'Argument "interval" to "run" of "BotFrame" has incompatible type "str"' in proc.stdout, proc.stdout
    assert proc.stdout.count("error:") == 1, proc.stdout
