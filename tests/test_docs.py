"""The user documentation builds without a warning, and its code runs as shown.

* ``test_sphinx_build_has_no_warnings`` runs the one documented build command
  (``python -m sphinx -W --keep-going -b html docs docs/_build/html``) into a tmp dir.
* ``test_page_snippets_run_as_shown`` executes, page by page, every ```` ```python ````
  block of the pages listed in ``PAGES`` in one namespace per page (later blocks may use
  what earlier ones defined), in a fresh interpreter whose working directory is a tmp
  dir. A block directly followed by a ```` ```text ```` block must print exactly that
  (``...`` matches anything, as in doctest's ELLIPSIS). A block preceded by the MyST
  comment line ``% norun`` is not run (it needs MariaDB, or is a fragment).

Run one page by hand: ``python tests/test_docs.py docs/concepts.md``.
"""
from __future__ import annotations

import contextlib
import doctest
import io
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: pages whose snippets are checked here (boost.md and replay.md have their own owners)
PAGES = ["index.md", "quickstart.md", "migration.md", "concepts.md", "nodes.md", "policies.md",
         "rx.md", "performance.md", "cli.md", "mistakes.md", "api.md", "scaling.md",
         "visualization.md", "crawling.md"]
#: pages that show only shell commands and outputs (checked by hand, see their text), or
#: are generated (api.md: autodoc)
NO_PYTHON = {"index.md", "cli.md", "api.md"}
#: the longest code line that fits the page without a scroll bar (alabaster, 1100px)
CODE_WIDTH = 88

Snippet = Tuple[int, str, Optional[str]]  # (line number, code, expected output or None)


def snippets(text: str) -> List[Snippet]:
    """The runnable python blocks of a MyST page with their expected output."""
    lines = text.splitlines()
    out: List[Snippet] = []
    i = 0
    previous = ""
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            lang = line[3:].strip()
            start = i + 1
            j = start
            while j < len(lines) and lines[j].rstrip() != "```":
                j += 1
            body = "\n".join(lines[start:j]) + "\n"
            if lang == "python" and previous.strip() != "% norun":
                expected = None
                k = j + 1
                while k < len(lines) and not lines[k].strip():
                    k += 1
                if k < len(lines) and lines[k].strip() == "```text":
                    m = k + 1
                    while m < len(lines) and lines[m].rstrip() != "```":
                        m += 1
                    expected = "\n".join(lines[k + 1:m]) + "\n"
                out.append((start, body, expected))
            i = j + 1
            previous = "```"
            continue
        if line.strip():
            previous = line
        i += 1
    return out


def run_page(path: str) -> list:
    """Execute a page's snippets in order; return one result dict per snippet."""
    text = Path(path).read_text(encoding="utf-8")
    namespace: dict = {"__name__": "__main__"}
    checker = doctest.OutputChecker()
    results = []
    for line, code, expected in snippets(text):
        buffer = io.StringIO()
        error = None
        try:
            with contextlib.redirect_stdout(buffer):
                exec(compile(code, f"{path}:{line}", "exec"), namespace)
        except BaseException:
            error = traceback.format_exc()
        got = buffer.getvalue()
        ok = error is None and (expected is None or checker.check_output(expected, got, doctest.ELLIPSIS))
        results.append({"line": line, "ok": ok, "error": error, "expected": expected, "got": got})
        if error is not None:
            break  # later snippets depend on this one
    return results


def test_sphinx_build_has_no_warnings(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
         str(DOCS), str(tmp_path / "html"), "-d", str(tmp_path / "doctrees")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert (tmp_path / "html" / "index.html").exists()
    for page in PAGES + ["boost.md"]:
        assert (tmp_path / "html" / page.replace(".md", ".html")).exists(), page
    # the API reference is generated from the docstrings
    api = (tmp_path / "html" / "api.html").read_text(encoding="utf-8")
    for name in ("rxbot.botframe.BotFrame", "rxbot.flow.Pipe", "rxbot.node.Timer",
                 "rxbot.engine.context.RunReport", "rxbot.http.HttpLoader", "rxbot.db.mysql.Query"):
        assert f'id="{name}"' in api, name
    assert "Run every pending pipe to completion" in api  # BotFrame.run's docstring
    assert "RXBOT_SHUTDOWN_GRACE" in api  # rxbot.config_env's table of variables
    # long output lines wrap in the page (docs/_static/custom.css)
    assert "custom.css" in (tmp_path / "html" / "index.html").read_text(encoding="utf-8")


def code_blocks(text: str) -> List[Tuple[int, str, List[str]]]:
    """Every fenced block of a page: (line number, language, lines)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("```"):
            j = i + 1
            while j < len(lines) and lines[j].rstrip() != "```":
                j += 1
            blocks.append((i + 1, lines[i][3:].strip(), lines[i + 1:j]))
            i = j
        i += 1
    return blocks


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")) + ["../README.md"])
def test_code_fits_the_page(page):
    """Python code lines fit the page width; output (text) blocks may be longer because
    the stylesheet wraps them."""
    text = (DOCS / page).read_text(encoding="utf-8")
    too_long = [(start + k + 1, line) for start, lang, lines in code_blocks(text)
                if lang in ("python", "bash", "")
                for k, line in enumerate(lines) if len(line) > CODE_WIDTH]
    assert not too_long, f"{page}: code lines longer than {CODE_WIDTH} characters: {too_long}"


def test_readme_first_example_runs_as_pasted(tmp_path):
    """The README's first example starts the bundled price server itself, so it runs
    exactly as pasted (offline)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = code_blocks(readme)[0]
    assert first[1] == "python"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", "\n".join(first[2])], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    prices = proc.stdout.split()
    assert len(prices) == 3 and all(float(p) > 0 for p in prices)
    assert proc.stderr == ""


def test_readme_setup_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install -e . && python -m rxbot demo" in readme
    assert "pip install -e '.[test]' && python -m pytest" in readme
    assert "pip install -e '.[test]' && python -m pytest" in ci


def test_every_page_is_in_the_toctree():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    block = index.split("```{toctree}", 1)[1].split("```", 1)[0]
    entries = [line.strip() for line in block.splitlines() if line.strip() and not line.startswith(":")]
    assert sorted(entries) == sorted(p.stem for p in DOCS.glob("*.md") if p.name != "index.md")


def test_pages_without_python_really_have_none():
    for page in NO_PYTHON:
        assert snippets((DOCS / page).read_text(encoding="utf-8")) == [], page


@pytest.mark.parametrize("page", [p for p in PAGES if p not in NO_PYTHON])
def test_page_snippets_run_as_shown(page, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               PYTHONIOENCODING="utf-8")
    proc = subprocess.run([sys.executable, __file__, str(DOCS / page)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=180)
    assert proc.returncode == 0, proc.stderr[-5000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    assert results, f"{page} has no runnable python block"
    for r in results:
        where = f"{page} line {r['line']}"
        assert r["error"] is None, f"{where} raised:\n{r['error']}"
        assert r["ok"], f"{where} printed:\n{r['got']}\nexpected:\n{r['expected']}"


if __name__ == "__main__":
    outcome = run_page(sys.argv[1])
    sys.stdout.flush()
    print()
    print(json.dumps(outcome))
