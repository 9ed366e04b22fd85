"""The user documentation builds without a warning, and its code runs as a user copies it.

* ``test_sphinx_build_has_no_warnings`` runs the one documented build command
  (``python -m sphinx -W --keep-going -b html docs docs/_build/html``) into a tmp dir.
* ``test_page_snippets_run_as_shown`` executes every ```` ```python ```` block of the
  pages listed in ``PAGES`` the way a user copies it: alone, in a fresh interpreter whose
  working directory is a tmp dir of its own. A block whose first line is
  :data:`CONTINUES` (``# ... continues the example above``, visible on the page) is run
  after the blocks it continues, in the same interpreter and namespace. A block
  directly followed by a ```` ```text ```` block must print exactly that (``...``
  matches anything, as in doctest's ELLIPSIS); where the unfused build
  (``RXBOT_NO_FUSION=1``) prints something else, a later ```` ```text ```` block
  preceded by the MyST comment line :data:`UNFUSED` shows that, and is what the block
  must print on that build. A block preceded by the MyST comment line
  ``% norun`` is not run (it needs MariaDB, or is a fragment).

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
#: pages whose snippets are checked here: every page
PAGES = ["index.md", "quickstart.md", "migration.md", "concepts.md", "nodes.md", "policies.md",
         "rx.md", "performance.md", "cli.md", "mistakes.md", "api.md", "scaling.md",
         "visualization.md", "crawling.md", "boost.md", "replay.md", "resume.md", "when-items-fail.md"]
#: pages that show only shell commands and outputs (checked by hand, see their text), or
#: are generated (api.md: autodoc), or whose python is marked norun (boost.md: a sketch; replay.md: failing runs;
#: resume.md: MariaDB and kills; tested in tests/test_resume.py)
NO_PYTHON = {"index.md", "cli.md", "api.md", "boost.md", "replay.md", "resume.md"}
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
                    if not fusion_on():
                        expected = unfused_text(lines, m + 1) or expected
                out.append((start, body, expected))
            i = j + 1
            previous = "```"
            continue
        if line.strip():
            previous = line
        i += 1
    return out


#: the MyST comment line before a ```` ```text ```` block that shows what the block
#: before it prints on the unfused build (``RXBOT_NO_FUSION=1``), where that differs
UNFUSED = "% unfused build"


def fusion_on() -> bool:
    """The build the snippets run on (RXBOT_NO_FUSION=1 selects the unfused one)."""
    from rxbot import config

    return bool(config.fusion)


def unfused_text(lines: List[str], after: int) -> Optional[str]:
    """The output a block prints on the unfused build: the ```` ```text ```` block marked
    :data:`UNFUSED` that follows the default output (at line ``after``) before the next
    python block, if the page shows one."""
    k = after
    previous = ""
    while k < len(lines) and lines[k].strip() != "```python":
        if lines[k].strip() == "```text" and previous == UNFUSED:
            m = k + 1
            while m < len(lines) and lines[m].rstrip() != "```":
                m += 1
            return "\n".join(lines[k + 1:m]) + "\n"
        if lines[k].strip():
            previous = lines[k].strip()
        k += 1
    return None


#: the first line of a block that builds on the block before it (and so on up)
CONTINUES = "# (continues the example above)"


def groups(text: str) -> List[List[Snippet]]:
    """The page's runnable blocks as a user copies them: each block that does not start
    with :data:`CONTINUES`, with the blocks that continue it."""
    out: List[List[Snippet]] = []
    for snippet in snippets(text):
        if snippet[1].lstrip("\n").startswith(CONTINUES) and out:
            out[-1].append(snippet)
        else:
            out.append([snippet])
    return out


def run_page(path: str, group: Optional[int] = None) -> list:
    """Execute one group of a page's snippets (all of them, in one namespace, when
    ``group`` is None) in order; return one result dict per snippet."""
    text = Path(path).read_text(encoding="utf-8")
    chosen = snippets(text) if group is None else groups(text)[group]
    namespace: dict = {"__name__": "__main__"}
    checker = doctest.OutputChecker()
    results = []
    for line, code, expected in chosen:
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
    for page in PAGES:
        assert (tmp_path / "html" / page.replace(".md", ".html")).exists(), page
    # the API reference is generated from the docstrings
    api = (tmp_path / "html" / "api.html").read_text(encoding="utf-8")
    for name in ("rxbot.botframe.BotFrame", "rxbot.tree.flow.Pipe", "rxbot.tree.node.Timer",
                 "rxbot.engine.context.RunReport", "rxbot.http.HttpLoader", "rxbot.db.mysql.Query"):
        assert f'id="{name}"' in api, name
    assert "Run every pending pipe to completion" in api  # BotFrame.run's docstring
    assert "RXBOT_SHUTDOWN_GRACE" in api  # rxbot.config_env's table of variables
    # no internals: base classes (Displayable), route flags, dataclass factories
    for internal in ("Bases:", "Displayable", "parallel = ", "needs_steps", "&lt;factory&gt;", "node_sources"):
        assert internal not in api, internal
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


def test_every_page_has_its_snippets_checked():
    assert sorted(PAGES) == sorted(p.name for p in DOCS.glob("*.md"))


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
    """Each block as a user copies it: alone (with the blocks it says it continues), in
    a fresh interpreter and an empty folder of its own."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               PYTHONIOENCODING="utf-8")
    env.pop("RXBOT_DEBUG", None)
    chains = groups((DOCS / page).read_text(encoding="utf-8"))
    assert chains, f"{page} has no runnable python block"
    for index, chain in enumerate(chains):
        folder = tmp_path / f"block{index + 1}"
        folder.mkdir()
        # a block that leaves files behind (a database, a picture) runs a second time
        # there: a user runs an example again, and it must not fail on what it made
        for attempt in ("", " (run again in the same folder)"):
            proc = subprocess.run([sys.executable, __file__, str(DOCS / page), str(index)], cwd=folder,
                                  env=env, capture_output=True, text=True, encoding="utf-8", timeout=180)
            assert proc.returncode == 0, proc.stderr[-5000:]
            results = json.loads(proc.stdout.splitlines()[-1])
            assert len(results) == len(chain)
            for r in results:
                where = f"{page} line {r['line']} (copied alone, as a user would){attempt}"
                assert r["error"] is None, f"{where} raised:\n{r['error']}"
                assert r["ok"], f"{where} printed:\n{r['got']}\nexpected:\n{r['expected']}"
            if not any(folder.iterdir()):
                break


def test_a_continuing_block_says_so_and_runs_after_the_ones_it_continues():
    page = "\n".join(["```python", "x = 1", "```", "", "```python", "print(2)", "```", "",
                      "```python", CONTINUES, "print(x + 1)", "```"])
    chains = groups(page)
    assert [[line for line, _, _ in chain] for chain in chains] == [[1], [5, 9]]


def test_a_block_marked_unfused_build_is_the_expected_output_on_that_build():
    from rxbot import config

    page = "\n".join(["```python", "print(1)", "```", "", "```text", "fused", "```", "", "Off:", "",
                      UNFUSED, "```text", "unfused", "```", "", "```python", "print(2)", "```", "",
                      "```text", "two", "```"])
    config.fusion = True
    assert [expected for _, _, expected in snippets(page)] == ["fused\n", "two\n"]
    config.fusion = False
    assert [expected for _, _, expected in snippets(page)] == ["unfused\n", "two\n"]


if __name__ == "__main__":
    outcome = run_page(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
    sys.stdout.flush()
    print()
    print(json.dumps(outcome))


def test_install_instructions_install_from_the_repository():
    """rxbot is not published on a package index: no page, example or message may tell a
    user to 'pip install rxbot' or 'rxbot[extra]' (visualization.md did)."""
    import re

    found = []
    for path in [*DOCS.glob("*.md"), ROOT / "README.md", *(ROOT / "rxbot").rglob("*.py"),
                 *(ROOT / "examples").rglob("*.py")]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for command in re.findall(r"pip install ([^#`&;)]*)", line):
                names = [arg.strip("'\"").split("[")[0] for arg in command.split()]
                if "rxbot" in names:
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []
