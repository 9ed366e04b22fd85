"""Durable dead letters and redrive (issue 29.2, 29.3): failed items are stored with
the replay codec as they fail; ``redrive`` runs exactly those items from their failing
step through the fixed code; attempts are kept across partial failures."""
from __future__ import annotations

import random
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from local_http import http_server  # noqa: F401  (the fixture)
from rxbot import BotFrame, HttpLoader, Pipe, config
from rxbot.durable.deadletters import LetterStore, listing, show, store_path
from rxbot.durable.redrive import RedriveRefused

PAGES = 1000


def fetches(server):
    return sum(n for path, n in server.hits.items() if path.startswith("/n/"))


@pytest.fixture
def pages_table(mysql_params):
    import pymysql

    table = f"pages_{uuid.uuid4().hex[:10]}"
    con = pymysql.connect(host=mysql_params["host"], port=mysql_params["port"], user=mysql_params["user"],
                          password=mysql_params["password"], database=mysql_params["db"], autocommit=True)
    with con.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (n INT NOT NULL, body VARCHAR(20))")  # no key: doubles show

    def rows():
        with con.cursor() as cur:
            cur.execute(f"SELECT n FROM {table}")
            return sorted(r[0] for r in cur.fetchall())

    yield table, rows
    with con.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
    con.close()


async def test_redrive_runs_exactly_the_failed_pages_and_keeps_attempts(http_server, mysql_params, pages_table,
                                                                        tmp_path):
    from rxbot.db.mysql import Insert

    table, rows = pages_table
    config.durable_dir = str(tmp_path)
    config.exception_policy = "ignore"
    bad = set(random.Random(29).sample(range(PAGES), 37))
    still_bad = set(sorted(bad)[:10])
    broken = {"now": bad}
    parsed = []

    def parse(response):
        n = int(response.text)
        parsed.append(n)
        if n in broken["now"]:
            raise ValueError(f"cannot parse page {n}")
        return {"n": n, "body": response.text}

    def build():
        Pipe([http_server.url(f"/n/{i}") for i in range(PAGES)], HttpLoader(), parse,
             Insert(f"INSERT INTO {table} (n, body) VALUES ({{n}}, {{body}})", **mysql_params))

    build()
    report = await BotFrame.run_async()
    assert len(report.dead_letters) == 37
    assert fetches(http_server) == PAGES
    assert rows() == sorted(set(range(PAGES)) - bad)
    store = LetterStore(store_path())
    letters = store.letters()
    store.close()
    assert {(l.step, l.error_type, l.attempt) for l in letters} == {("P1[3] parse", "ValueError", 1)}
    assert len(letters) == 37
    text = "\n".join(listing())
    assert "37  P1[3] parse  ValueError" in text

    # a partial fix: 27 pass, 10 fail again with attempt 2
    broken["now"] = still_bad
    parsed.clear()
    build()
    report = await BotFrame.run_async(redrive=True)
    assert fetches(http_server) == PAGES  # nothing fetched again
    assert sorted(parsed) == sorted(bad)  # exactly the 37, through parse
    assert report.redrive == {"P1[3] parse": {"redriven": 37, "failed_again": 10, "passed": 27, "skipped": 0}}
    store = LetterStore(store_path())
    open_now = store.letters()
    done = store.letters(status="done")
    retried = store.letters(status="retried")
    store.close()
    assert len(open_now) == 10 and {l.attempt for l in open_now} == {2}
    assert {l.parent for l in open_now} == {l.id for l in retried}
    assert len(done) == 27
    assert rows() == sorted(set(range(PAGES)) - still_bad)

    # fixed for good: the last 10 pass; every page once
    broken["now"] = set()
    parsed.clear()
    build()
    report = await BotFrame.run_async(redrive=True)
    assert sorted(parsed) == sorted(still_bad)
    assert fetches(http_server) == PAGES
    assert rows() == list(range(PAGES))
    store = LetterStore(store_path())
    assert store.letters() == []
    store.close()


def test_a_renamed_step_refuses_to_redrive(tmp_path):
    config.durable_dir = str(tmp_path)
    config.exception_policy = "ignore"

    def parse(x):
        if x % 10 == 0:
            raise ValueError("bad")
        return x

    Pipe(range(30), lambda x: x, parse, lambda x: None)
    report = BotFrame.run()
    assert len(report.dead_letters) == 3

    def parse_v2(x):
        return x

    Pipe(range(30), lambda x: x, parse_v2, lambda x: None)
    with pytest.raises(RedriveRefused, match=r"P1\[3\] parse: this step is not in the pipe any more"):
        BotFrame.run(redrive=True)


def test_letters_of_a_step_inside_a_branch_redrive_to_the_sides_end_only(tmp_path):
    """A Branch's side flow ends at its last step: a re-driven item goes there and not
    onto the main line, which had it already (tests/test_redrive_routes.py: every route)."""
    from rxbot import Branch

    config.durable_dir = str(tmp_path)
    config.exception_policy = "ignore"
    ran, side, main = [], [], []
    broken = {"now": True}

    def parse(x):
        ran.append(x)
        if broken["now"] and x % 10 == 0:
            raise ValueError("bad")
        return x

    def build():
        Pipe(range(30), lambda x: x, Branch(parse, side.append, route_func=lambda x: x % 2 == 0), main.append)

    build()
    assert len(BotFrame.run().dead_letters) == 3
    assert sorted(main) == list(range(30)) and sorted(side) == [x for x in range(30) if x % 2 == 0 and x % 10]
    ran.clear()
    broken["now"] = False
    build()
    report = BotFrame.run(redrive=True)
    (step,) = report.redrive
    assert step.startswith("P1[3] Branch(<lambda> line ") and step.endswith("/1[1] parse")
    assert sorted(ran) == [0, 10, 20]
    assert sorted(main) == list(range(30))  # the main line ran none of them again
    assert sorted(side) == [x for x in range(30) if x % 2 == 0]  # each even item once at the side's end
    store = LetterStore(store_path())
    assert store.letters() == [] and len(store.letters(status="done")) == 3
    store.close()


def test_letters_keep_the_item_with_the_codec_and_a_redacted_message(tmp_path):
    config.durable_dir = str(tmp_path)
    config.exception_policy = "pipein"

    def login(x):
        raise PermissionError(f"https://user:hunter2@example.com/?token=abc{x} refused")

    Pipe([{"id": 1, "tags": ["a", "b"]}], login, lambda x: None)
    BotFrame.run()
    store = LetterStore(store_path())
    (letter,) = store.letters()
    store.close()
    assert letter.decoded() == {"id": 1, "tags": ["a", "b"]}
    assert "hunter2" not in letter.message
    assert letter.error_type == "PermissionError"
    assert "P1[2] login" in show(letter.id)


def test_no_store_without_a_script_or_a_folder():
    config.exception_policy = "ignore"
    Pipe(range(3), lambda x: 1 / 0, lambda x: None)
    BotFrame.run()
    assert not store_path().exists()


def test_rxbot_deadletters_and_redrive_on_the_command_line(tmp_path):
    script = tmp_path / "job.py"
    out = tmp_path / "out.txt"
    flag = tmp_path / "fixed"
    script.write_text(
        "import os\n"
        "from rxbot import Pipe, BotFrame, config\n"
        "config.exception_policy = 'ignore'\n"
        "def parse(x):\n"
        f"    if x % 7 == 0 and not os.path.exists({str(flag)!r}):\n"
        "        raise ValueError(f'bad {x}')\n"
        "    return x\n"
        f"def keep(x):\n    open({str(out)!r}, 'a').write(f'{{x}}\\n')\n"
        "Pipe(range(50), lambda x: x, parse, keep)\n"
        "BotFrame.run()\n")
    env = dict(__import__("os").environ, PYTHONPATH=str(Path(__file__).parent.parent))

    def rxbot(*args):
        done = subprocess.run([sys.executable, "-m", "rxbot", *args], env=env, capture_output=True, text=True,
                              timeout=60, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stdout

    rxbot("run", str(script))
    listed = rxbot("deadletters", str(script))
    assert "8  P1[3] parse  ValueError" in listed
    first_id = int(listed.split("#")[1].split()[0])
    assert "P1[3] parse" in rxbot("deadletters", str(script), "--show", str(first_id))
    flag.write_text("")
    rxbot("redrive", str(script))
    assert sorted(int(x) for x in out.read_text().split()) == list(range(50))
    assert "no open dead letters" in rxbot("deadletters", str(script))
