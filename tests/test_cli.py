"""The ``rxbot`` command line, run the way users run it (``python -m rxbot ...``)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from rxbot import cli

REPO = Path(__file__).resolve().parents[1]


def rxbot(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "rxbot", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def script(tmp_path: Path, body: str, name: str = "job.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


# A script that leaves a marker and fails if any of its steps ever runs.
TRAP = """
    from pathlib import Path
    from rxbot import BotFrame, Fork, Loop, Pipe

    MARKER = Path(__file__).with_name("ran.marker")

    def boom(x):
        MARKER.write_text("a step ran")
        raise RuntimeError("rendering must not run the pipe")

    def double(x):
        return x * 2

    Pipe(Loop(range(3)), boom, Fork(double, print, join=True))
    Pipe(Loop([1, 2]), double)          # built, never passed to run()
    if __name__ == "__main__":
        BotFrame.run()
"""


def test_render_draws_without_running(tmp_path):
    job = script(tmp_path, TRAP)
    out = tmp_path / "out.svg"
    proc = rxbot("render", str(job), "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    assert not (tmp_path / "ran.marker").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.py", "out.svg"]  # only what was asked
    root = ET.parse(out).getroot()
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"Pipe 1", "Pipe 2", "Loop(range(0, 3))", "boom", "Fork", "double", "print", "join",
            "all", "Loop(list[2])"} <= texts


def test_render_rejects_an_unknown_extension(tmp_path):
    job = script(tmp_path, TRAP)
    proc = rxbot("render", str(job), "-o", str(tmp_path / "out.jpg"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "ends in '.jpg', which is not a format rxbot draws (png, svg, pdf, dot)" in proc.stderr
    assert not (tmp_path / "out.jpg").exists() and not (tmp_path / "out.jpg.png").exists()


def test_render_in_process_default_output_and_format(tmp_path, monkeypatch, capsys):
    job = script(tmp_path, TRAP)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["render", str(job), "--format", "dot"]) == 0
    assert capsys.readouterr().out.strip() == "job.dot"
    assert not (tmp_path / "ran.marker").exists()
    text = (tmp_path / "job.dot").read_text()
    assert '"P1[2]" [label=boom' in text and '"P2[2]" [label=double' in text


def test_render_reports_script_errors_and_empty_scripts(tmp_path, capsys):
    broken = script(tmp_path, "raise KeyError('missing config')\n", "broken.py")
    assert cli.main(["render", str(broken), "-o", str(tmp_path / "b.dot")]) == 1
    err = capsys.readouterr().err
    assert "KeyError: 'missing config'" in err and f"rxbot render: {broken} failed" in err
    empty = script(tmp_path, "x = 1\n", "empty.py")
    assert cli.main(["render", str(empty), "-o", str(tmp_path / "e.dot")]) == 1
    assert f"rxbot render: {empty} built no Pipe; nothing to draw" in capsys.readouterr().err
    assert not (tmp_path / "e.dot").exists()


RUN = """
    import json, sys
    from pathlib import Path
    from rxbot import BotFrame, Loop, Pipe, config

    out = []
    def half(x):
        if x == 3:
            raise ValueError("odd one")
        return x // 2

    Pipe(Loop([2, 3, 4]), half, out.append)
    settings = dict(policy=config.exception_policy, replay=config.replay_mode, argv=sys.argv[1:],
                    name=__name__)
    Path(__file__).with_name("settings.json").write_text(json.dumps(settings))
    BotFrame.run()
    Path(__file__).with_name("out.json").write_text(json.dumps(out))
"""


def test_run_applies_policy(tmp_path):
    job = script(tmp_path, RUN)
    proc = rxbot("run", str(job), "--policy", "ignore", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.json").read_text() == "[1, 2]"
    assert (tmp_path / "settings.json").read_text() == \
        '{"policy": "ignore", "replay": false, "argv": [], "name": "__main__"}'
    assert "dropped item 3 in step 'half'" in proc.stderr


def test_run_failure_exits_1_with_the_traceback(tmp_path):
    job = script(tmp_path, RUN)
    proc = rxbot("run", str(job), cwd=tmp_path)
    assert proc.returncode == 1
    assert "ValueError: odd one" in proc.stderr
    assert f"rxbot run: {job} failed (traceback above)" in proc.stderr
    assert not (tmp_path / "out.json").exists()


def test_run_sets_replay_mode_and_exit_codes(tmp_path, capsys):
    from rxbot import config

    job = script(tmp_path, """
        import json
        from pathlib import Path
        from rxbot import config
        Path(__file__).with_name("settings.json").write_text(
            json.dumps([config.replay_mode, config.exception_policy]))
        raise SystemExit(3)
    """)
    assert cli.main(["run", "--replay", "--policy", "pipein", str(job)]) == 3
    assert (tmp_path / "settings.json").read_text() == "[true, \"pipein\"]"
    assert config.replay_mode is True  # the conftest fixture restores it afterwards
    quiet = script(tmp_path, "import sys\nsys.exit()\n", "quiet.py")
    assert cli.main(["run", str(quiet)]) == 0


@pytest.mark.parametrize("args, message", [
    (["render"], "the following arguments are required: script"),
    (["render", "no-such-script.py"], "no such script: 'no-such-script.py'"),
    (["render", "JOB", "--format", "gif"], "invalid choice: 'gif'"),
    (["run", "JOB", "--policy", "bogus"], "invalid choice: 'bogus'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_arguments_exit_2_with_usage(tmp_path, capsys, args, message):
    job = script(tmp_path, TRAP)
    args = [str(job) if a == "JOB" else a for a in args]
    with pytest.raises(SystemExit) as exc:
        cli.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: rxbot") and message in err


def test_bad_arguments_exit_2_as_a_process(tmp_path):
    proc = rxbot("render", str(tmp_path / "missing.py"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: rxbot render") and "no such script" in proc.stderr


def test_a_subcommand_is_one_function(capsys):
    def _hello(sub):
        p = sub.add_parser("hello", help="say hello")
        p.add_argument("--name", default="world")
        p.set_defaults(handler=lambda args: print(f"hello {args.name}") or 5)

    cli.subcommand(_hello)
    try:
        assert cli.main(["hello", "--name", "rx"]) == 5
        assert capsys.readouterr().out == "hello rx\n"
    finally:
        cli._REGISTRARS.remove(_hello)
    with pytest.raises(SystemExit):
        cli.main(["hello"])


def test_replay_clear_removes_a_failed_runs_cache(tmp_path):
    """A failed replay-mode run leaves a cache next to the script; ``rxbot replay
    --clear SCRIPT`` deletes it, so the next run starts fresh."""
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        from rxbot import Pipe, Loop, BotFrame, config
        config.replay_mode = True
        def double(x):
            return 2 * x
        def fail(x):
            raise ValueError("always")
        Pipe(Loop(range(5)), double, fail, print)
        BotFrame.run()
    """))
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "ValueError" in run.stderr
    cache = tmp_path / ".rxbot" / "replay"
    assert cache.is_dir() and any(cache.rglob("*"))
    listed = rxbot("replay", "list", str(script), cwd=REPO)  # a real cache, listed
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0] == f"rxbot replay: caches in {cache}"
    assert re.search(r"^  \S+  \d+ files?, [\d.]+ (B|kB), \d{4}-", listed.stdout, re.M), listed.stdout
    cleared = subprocess.run([sys.executable, "-m", "rxbot", "replay", "--clear", str(script)],
                             capture_output=True, text=True, timeout=60)
    assert cleared.returncode == 0 and "cleared 1 cache(s)" in cleared.stdout
    assert not any(p.is_file() for p in cache.rglob("*")) if cache.exists() else True
    again = subprocess.run([sys.executable, "-m", "rxbot", "replay", "--clear", str(script)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "no cache" in again.stdout


def test_replay_without_clear_is_a_usage_error():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "rxbot", "replay"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage:" in proc.stderr


def test_run_passes_arguments_after_double_dash_to_the_script(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "args.py"
    script.write_text("import sys\nfrom rxbot import config\nprint(sys.argv[1:], config.exception_policy)\n")
    proc = subprocess.run([sys.executable, "-m", "rxbot", "run", str(script), "--policy", "ignore",
                           "--", "--day", "3"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['--day', '3'] ignore"


EXAMPLES = sorted((REPO / "examples").glob("*.py"))
#: files an example's own code writes before it builds its pipes (not a step's doing)
SCRIPT_FILES = {"baidu_spider_joined.py": {Path("baidu.db")}}


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_render_works_on_every_shipped_example(tmp_path, example):
    """Every example draws, none runs a step or writes a file: scripts that go on after
    BotFrame.run() with the (empty) results of a dry run get their pipes drawn anyway."""
    out = tmp_path / "graph.dot"
    proc = rxbot("render", str(example), "-f", "dot", "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    text = out.read_text()
    assert '"P1[1]"' in text and "->" in text
    written = [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()]
    # no step ran, no other file was written
    assert set(written) == {Path("graph.dot")} | SCRIPT_FILES.get(example.name, set())


def test_render_draws_a_script_that_forgot_run(tmp_path):
    job = script(tmp_path, """
        from rxbot import Loop, Pipe
        def double(x):
            return x * 2
        Pipe(Loop(range(3)), double, print)
    """)
    proc = rxbot("render", str(job), "-f", "dot", "-o", str(tmp_path / "g.dot"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "double" in (tmp_path / "g.dot").read_text()
    assert "never run" not in proc.stderr  # drawing is what was asked for


def test_rxbot_alone_prints_help():
    proc = rxbot(cwd=REPO)
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: rxbot") and "render" in proc.stdout and "run" in proc.stdout


def test_script_arguments_need_no_double_dash(tmp_path):
    job = script(tmp_path, """
        import sys
        print(sys.argv[1:])
    """)
    proc = rxbot("run", str(job), "--day", "3", "--policy", "ignore", "-v", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # --policy is rxbot's own; what rxbot does not know goes to the script, in order
    assert proc.stdout.strip() == "['--day', '3', '-v']"
    proc = rxbot("run", str(job), "--day", "3", "--", "--policy", "x", cwd=tmp_path)
    assert proc.stdout.strip() == "['--day', '3', '--policy', 'x']"
    proc = rxbot("render", str(job), "--bogus", cwd=tmp_path)
    assert proc.returncode == 2 and "unrecognized arguments: --bogus" in proc.stderr


REPORTED = """
    from rxbot import BotFrame, Loop, Pipe, config

    def half(x):
        return x // 2 if x % 2 == 0 else None

    Pipe(Loop(range(6)), half, print)
    BotFrame.run()
"""


def test_run_prints_the_report_as_json_or_text(tmp_path):
    import json

    job = script(tmp_path, REPORTED)
    proc = rxbot("run", str(job), "--policy", "ignore", "--report", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stderr)
    steps = {s["label"]: s for s in data["steps"]}
    assert [s["label"] for s in data["steps"]] == ["Loop(range(0, 6))", "half", "print"]
    assert steps["half"]["inp"] == 6 and steps["half"]["filtered"] == 3
    assert steps["print"]["consumed"] == 3 and steps["print"]["filtered"] == 0 and steps["print"]["sink"]
    assert proc.stdout.split() == ["0", "1", "2"]
    proc = rxbot("run", str(job), "--policy", "ignore", "--report", "text",
                 "--report-file", str(tmp_path / "r.txt"), cwd=tmp_path)
    text = (tmp_path / "r.txt").read_text()
    assert text.startswith("run finished in")
    assert "P1[2] half: in=6 out=3 filtered=3\n" in text and "P1[3] print: in=3 out=0 consumed=3" in text


def test_run_log_level_and_one_prefix(tmp_path):
    job = script(tmp_path, """
        from rxbot import BotFrame, Loop, Pipe, config
        config.exception_policy = "ignore"
        def bad(x):
            raise ValueError("nope")
        Pipe(Loop([1]), bad)
        BotFrame.run()
    """)
    proc = rxbot("run", str(job), cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stderr.startswith("rxbot: dropped item 1 in step 'bad': ValueError: nope")
    assert "rxbot: rxbot:" not in proc.stderr
    quiet = rxbot("run", "--log-level", "error", str(job), cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""
    # an application that configures logging with the logger's name gets one prefix too
    configured = script(tmp_path, "import logging\n"
                        "logging.basicConfig(format='%(name)s: %(message)s')\n"
                        + job.read_text(), "configured.py")
    proc = rxbot("run", str(configured), cwd=tmp_path)
    assert proc.stderr == "rxbot: dropped item 1 in step 'bad': ValueError: nope\n"


def test_replay_list_shows_caches(tmp_path):
    cache = tmp_path / "cache"
    assert rxbot("replay", "list", "--dir", str(cache), cwd=tmp_path).stdout.startswith(
        f"rxbot replay: no cache in {cache}")
    (cache / "job" / "abc").mkdir(parents=True)
    (cache / "job" / "abc" / "data.jsonl").write_text("x" * 2048)
    proc = rxbot("replay", "list", "--dir", str(cache), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"rxbot replay: caches in {cache}"
    assert re.fullmatch(r"  job/abc  1 file, 2\.0 kB, \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", lines[1])


RAN = """
    import asyncio
    from rxbot import BotFrame, Loop, Pipe, Step

    async def fetch(x):
        await asyncio.sleep(0)
        return x

    def check(x):
        if x == 2:
            raise ValueError("two")
        return x

    Pipe(Loop(range(5)), fetch, Step(check, on_error="ignore"), print)
    BotFrame.run()
"""


def test_run_render_draws_the_run_with_its_numbers(tmp_path):
    job = script(tmp_path, RAN)
    proc = rxbot("run", str(job), "--render", str(tmp_path / "ran.svg"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"rxbot run: drew the run to {tmp_path / 'ran.svg'}" in proc.stderr
    svg = ET.parse(tmp_path / "ran.svg").getroot()
    texts = {t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")}
    assert {"fetch", "in=5 out=5", "in=5 out=4 failed=1 dropped=1", "had failures"} <= texts
    assert any(t.endswith("items/s") for t in texts)
    proc = rxbot("run", str(job), "--render", str(tmp_path / "ran.jpg"), cwd=tmp_path)
    assert proc.returncode == 2 and "not a format rxbot draws" in proc.stderr


def documented_commands(page: str, heading: str) -> list:
    """The ``$ ...`` lines of the first console block under ``heading`` of docs/``page``."""
    text = (REPO / "docs" / page).read_text(encoding="utf-8")
    block = text[text.index(heading):].split("```console\n", 1)[1].split("```", 1)[0]
    return [line[2:] for line in block.splitlines() if line.startswith("$ ")]


def test_the_documented_json_report_recipe_runs_as_written_whatever_is_logged(tmp_path):
    """docs/cli.md's recipe, run command by command in a shell as a user pastes it, on a
    script that prints and logs (a dropped item's warning, its own warnings): the file
    is JSON, jq and the Python line read it. (The former recipe, ``2> report.json`` and
    jq's ``{label, ...}``, gave a file with log lines in it and a jq syntax error.)"""
    import json
    import shutil

    script(tmp_path, """
        import logging
        from rxbot import BotFrame, Branch, Pipe, config

        config.exception_policy = "ignore"
        logging.getLogger("job").warning("starting: this line goes to stderr")

        def check(x):
            if x == 3:
                raise ValueError("three")
            print("checked", x)
            return x

        Pipe(range(5), check, Branch(print, route_func=lambda x: x == 4), print)
        BotFrame.run()
    """)
    commands = documented_commands("cli.md", "### The report as JSON")
    assert [c.split()[0] for c in commands] == ["rxbot", "jq", "python"]
    bindir = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=os.pathsep.join([bindir, os.environ["PATH"]]),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    assert shutil.which("rxbot", path=env["PATH"]) and shutil.which("jq", path=env["PATH"]), \
        "the recipe needs the rxbot command (pip install -e .) and jq (apt-get install jq)"
    outputs = []
    for command in commands:
        proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, (command, proc.stderr)
        outputs.append(proc)
    assert "dropped item 3" in outputs[0].stderr and "starting" in outputs[0].stderr
    data = json.loads((tmp_path / "report.json").read_text())
    rows = [json.loads(line) for line in outputs[1].stdout.splitlines()]
    assert rows[0] == {"step": "Loop(range(0, 5))", "inp": 1, "out": 5, "matched": None}
    assert rows[2] == {"step": "Branch(<lambda> line 14)", "inp": 4, "out": 4, "matched": 1}
    assert outputs[2].stdout.strip() == str(data["totals"])
    assert data["totals"]["items"] == 5 and data["totals"]["dropped"] == 1


ECHO = """
    import sys
    from rxbot import config
    print(sys.argv[1:], config.exception_policy)
"""


@pytest.mark.parametrize("args", [
    ["--polcy", "ignore", "job.py"],          # before the script: was "no such script: 'ignore'"
    ["job.py", "--polcy", "ignore"],          # after it: was handed to the script, run under raise
    ["job.py", "--day", "3", "--polcy=ignore"],
])
def test_a_misspelt_rxbot_option_is_named_with_the_one_it_means_wherever_it_is(tmp_path, args):
    script(tmp_path, ECHO)
    proc = rxbot("run", *args, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""  # the script did not run
    assert proc.stderr.splitlines()[-1].startswith(
        "rxbot run: error: unknown option --polcy, did you mean --policy?")


def test_options_after_double_dash_and_unlike_rxbots_go_to_the_script(tmp_path):
    script(tmp_path, ECHO)
    proc = rxbot("run", "job.py", "--", "--polcy", "ignore", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("['--polcy', 'ignore']")
    proc = rxbot("run", "--pol", "ignore", "job.py", "--count=3", "-v", cwd=tmp_path)  # a prefix is fine
    assert proc.returncode == 0 and proc.stdout.strip() == "['--count=3', '-v'] ignore"
    proc = rxbot("run", "--count", "3", "job.py", cwd=tmp_path)  # before the script: rxbot's
    assert proc.returncode == 2 and "unknown option --count before the script" in proc.stderr
    proc = rxbot("render", "job.py", "--outptu", "x.svg", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown option --outptu, did you mean --output?" in proc.stderr


SLOW_MARKER = """
    from pathlib import Path
    from rxbot import BotFrame, Pipe
    Path(__file__).with_name("ran.marker").write_text("ran")
    Pipe(range(3), print)
    BotFrame.run()
"""


@pytest.mark.parametrize("args, message", [
    (["render", "job.py", "-o", "x.jpg"], "'x.jpg' ends in '.jpg', which is not a format rxbot draws"),
    (["run", "--render", "x.jpg", "job.py"], "--render: 'x.jpg' ends in '.jpg'"),
    (["run", "--report-file", "missing/r.json", "job.py"], "--report-file: cannot write 'missing/r.json'"),
    (["render", "job.py", "-o", "missing/x.svg"], "cannot write 'missing/x.svg'"),
])
def test_output_options_are_checked_before_the_script_runs(tmp_path, args, message):
    script(tmp_path, SLOW_MARKER)
    proc = rxbot(*args, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "ran.marker").exists()


def test_a_misspelt_rxbot_environment_variable_gets_a_did_you_mean_line(tmp_path):
    script(tmp_path, ECHO)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               RXBOT_POLCY="ignore", RXBOT_MYSQL_DB="test", RXBOT_SOMETHING_ELSE="1")
    proc = subprocess.run([sys.executable, "job.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    assert proc.stderr.splitlines() == [
        "rxbot: warning: the environment variable RXBOT_POLCY is not one rxbot reads; "
        "did you mean RXBOT_POLICY?"]
