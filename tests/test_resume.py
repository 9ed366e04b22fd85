"""Resume after a hard kill (issue 25.1): a run killed with SIGKILL at random moments
and started again with resume ends with the same rows as an uninterrupted run, none
lost, none twice, in SQLite and MariaDB, without a key declared by the user."""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest

from rxbot import BotFrame, Branch, Pipe, Timer, config
from rxbot.durable import ResumeRefused

CHILD = Path(__file__).with_name("resume_child.py")
ITEMS = 5000
#: per database: 10 kills over the two tests
KILLS = 5


def kill_and_resume(args, env, rng, rows_written):
    """Start the job, SIGKILL it (by pid) at random moments while it runs, KILLS times,
    then let it finish. Returns how many kills hit a running job. The last kill comes
    only once some rows are in (``rows_written()``), so that the final run has a
    checkpoint to go on from however slowly the killed runs started (a loaded machine)."""
    kills = 0
    while True:
        proc = subprocess.Popen([sys.executable, str(CHILD), *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        if kills >= KILLS:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            resumed_from = int(out.split("DONE")[1].split()[0])
            # the killed runs had settled part of the work: the last one went on from there
            assert 0 < resumed_from < ITEMS, resumed_from
            return kills
        assert proc.stdout.readline().strip() == "READY"  # imported, the run starts now
        if kills == KILLS - 1:
            deadline = time.monotonic() + 60
            while not rows_written() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.6))  # then kill it at a random moment of the run
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr


def child_env(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(Path(__file__).parent.parent), env.get("PYTHONPATH", "")] if p)
    return env


def assert_exactly_once(rows):
    counts = Counter(rows)
    assert len(counts) == 2 * ITEMS, f"lost: {2 * ITEMS - len(counts)}"
    assert max(counts.values()) == 1, f"twice: {sum(1 for c in counts.values() if c > 1)}"


def test_sigkill_at_random_moments_then_resume_sqlite(tmp_path):
    db = tmp_path / "crawl.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE pages (n INT, part INT)")  # no key: a duplicate would show
    con.commit()
    con.close()
    def rows_written():
        try:
            with closing(sqlite3.connect(db, timeout=5)) as reader:
                return reader.execute("SELECT COUNT(*) FROM pages").fetchone()[0]
        except sqlite3.OperationalError:  # locked by the writer just now
            return 0

    kills = kill_and_resume(["sqlite", str(db), "pages", str(ITEMS), "0.05", str(tmp_path / "d")],
                            child_env(tmp_path), random.Random(25), rows_written)
    assert kills == KILLS
    rows = sqlite3.connect(db).execute("SELECT n, part FROM pages").fetchall()
    assert_exactly_once(rows)


def test_sigkill_at_random_moments_then_resume_mariadb(tmp_path, mysql_params):
    pymysql = pytest.importorskip("pymysql")
    table = f"resume_{uuid.uuid4().hex[:10]}"
    con = pymysql.connect(host=mysql_params["host"], port=mysql_params["port"], user=mysql_params["user"],
                          password=mysql_params["password"], database=mysql_params["db"], autocommit=True)
    try:
        with con.cursor() as cur:
            cur.execute(f"CREATE TABLE {table} (n INT, part INT)")  # no key: a duplicate would show
        where = f"{mysql_params['host']}:{mysql_params['port']}"
        def rows_written():
            with con.cursor() as cur:
                cur.execute(f"SELECT COUNT(*) FROM {table}")
                return cur.fetchone()[0]

        kills = kill_and_resume(["mysql", where, table, str(ITEMS), "0.05", str(tmp_path / "d")],
                                child_env(tmp_path), random.Random(26), rows_written)
        assert kills == KILLS
        with con.cursor() as cur:
            cur.execute(f"SELECT n, part FROM {table}")
            rows = [tuple(r) for r in cur.fetchall()]
        assert_exactly_once(rows)
    finally:
        with con.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
            cur.execute("DELETE FROM rxbot_checkpoints WHERE run_key LIKE 'resume_child/%%'")
        con.close()


# ---- in-process: refusals, a changed pipe, the file checkpoint, the CLI ----------------------------
def make_table(db, name="t"):
    con = sqlite3.connect(db)
    con.execute(f"CREATE TABLE {name} (n INT)")
    con.commit()
    con.close()


def rows_of(db, name="t"):
    return [r[0] for r in sqlite3.connect(db).execute(f"SELECT n FROM {name} ORDER BY n")]


def test_a_timer_source_is_refused_naming_the_step():
    Pipe(Timer(delay=0.01, max_time=3), print)
    with pytest.raises(ResumeRefused, match=r"P1\[1\] Timer.*Timer ticks with the clock"):
        BotFrame.run(resume=True)


def test_a_query_without_order_by_is_refused(tmp_path):
    from rxbot.db.sqlite import Query
    Pipe(Query("SELECT n FROM t", path=str(tmp_path / "x.db")), print)
    with pytest.raises(ResumeRefused, match="without ORDER BY"):
        BotFrame.run(resume=True)


def test_steps_after_an_insert_are_refused(tmp_path):
    from rxbot.db.sqlite import Insert
    Pipe(range(3), lambda x: {"n": x}, Insert("INSERT INTO t (n) VALUES ({n})", path=str(tmp_path / "x.db")),
         print)
    with pytest.raises(ResumeRefused, match="steps after an Insert"):
        BotFrame.run(resume=True)


def test_a_stopped_run_resumes_where_its_checkpoint_is_and_a_changed_pipe_refuses(tmp_path):
    """A run failing at item 1234 (raise) leaves the rows of its settled epochs and a
    checkpoint; the same pipe resumed skips those items, none twice; a pipe whose step
    changed refuses to resume, naming the step."""
    from rxbot.db.sqlite import Insert
    config.durable_dir = str(tmp_path / "d")
    config.checkpoint_items = 100
    db = str(tmp_path / "x.db")
    make_table(db)
    broken = {"on": True}

    def parse(x):
        if broken["on"] and x == 1234:
            raise ValueError("bad page")
        return {"n": x}

    def build(step):
        return Pipe(range(3000), step, Insert("INSERT INTO t (n) VALUES ({n})", path=db))

    build(parse)
    with pytest.raises(ValueError, match="bad page"):
        BotFrame.run(resume=True)
    first = rows_of(db)
    assert first == list(range(1200))  # the epochs settled before the failure, nothing after
    broken["on"] = False  # a value the code reads, not the code: the same pipe
    build(parse)
    report = BotFrame.run(resume=True)
    assert report.delivery["P1"]["resumed_from"] == 1200
    assert str(report).splitlines()[-1] == (
        "  P1 after a kill (resume) or a lost worker (shards): exactly once: P1[3] Insert: INSERT INTO t (n) VALUES "
        "({n}); this run resumed after 1200 source items")
    assert rows_of(db) == list(range(3000))

    def parse2(x):
        return {"n": x * 2}

    build(parse2)
    with pytest.raises(ResumeRefused, match=r"the pipe changed since its checkpoint \(P1\[2\] parse2 differs\)"):
        BotFrame.run(resume=True)


def test_a_pipe_without_insert_keeps_its_checkpoint_in_a_file_at_least_once(tmp_path):
    config.durable_dir = str(tmp_path / "d")
    got = []

    def inc(x):
        return x + 1

    Pipe(range(50), inc, got.append)
    report = BotFrame.run(resume=True)
    assert sorted(got) == list(range(1, 51))
    assert report.delivery["P1"]["exactly_once"] == []
    assert report.delivery["P1"]["at_least_once"] == ["P1[3] list.append"]
    assert list((tmp_path / "d").rglob("checkpoint-*.json"))
    assert json.loads(report.to_json())["delivery"]["P1"]["at_least_once"] == ["P1[3] list.append"]
    assert str(report).splitlines()[-1] == ("  P1 after a kill (resume) or a lost worker (shards): at least once: "
                                            "P1[3] list.append")
    Pipe(range(50), inc, got.append)  # complete: nothing again
    BotFrame.run(resume=True)
    assert len(got) == 50


def test_rxbot_run_resume_on_the_command_line(tmp_path):
    db = tmp_path / "x.db"
    make_table(db)
    script = tmp_path / "job.py"
    script.write_text(
        "from rxbot import Pipe, BotFrame\n"
        "from rxbot.db.sqlite import Insert\n"
        f"Pipe(range(100), lambda x: {{'n': x}}, Insert('INSERT INTO t (n) VALUES ({{n}})', path={str(db)!r}))\n"
        "BotFrame.run()\n")
    env = child_env(tmp_path)
    for _ in range(2):  # the second run finds the checkpoint complete
        done = subprocess.run([sys.executable, "-m", "rxbot", "run", "--resume", str(script)], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    assert rows_of(db) == list(range(100))
    assert "nothing to resume" in done.stderr


# ---- the checkpoint's lifecycle: one row per pipe and Insert, updated in place ----------------------
def _one_row_per_insert_across_epochs(report, rows_for_key):
    """A run of many epochs keeps one checkpoint row per Insert, the last epoch's."""
    delivery = report.delivery["P1"]
    assert delivery["checkpoints"] >= 10  # ten epochs committed (the rows are read after)
    rows = rows_for_key(delivery["run_key"])
    assert [(offset, complete) for _, offset, complete in rows] == [(1000, 1), (1000, 1)]
    assert len({sink for sink, _, _ in rows}) == 2


def test_the_checkpoint_table_keeps_one_row_per_insert_sqlite(tmp_path):
    from rxbot.db.sqlite import Insert
    config.checkpoint_items = 100
    db = str(tmp_path / "x.db")
    make_table(db)
    make_table(db, "u")
    Pipe(range(1000), lambda x: {"n": x},
         Branch(Insert("INSERT INTO u (n) VALUES ({n})", path=db)), Insert("INSERT INTO t (n) VALUES ({n})", path=db))
    report = BotFrame.run(resume=True)
    assert rows_of(db) == rows_of(db, "u") == list(range(1000))

    def rows_for_key(key):
        return sqlite3.connect(db).execute(
            "SELECT sink, source_offset, complete FROM rxbot_checkpoints WHERE run_key = ?", (key,)).fetchall()

    _one_row_per_insert_across_epochs(report, rows_for_key)


def test_the_checkpoint_table_keeps_one_row_per_insert_mariadb(mysql_params):
    import pymysql

    from rxbot.db.mysql import Insert
    config.checkpoint_items = 100
    raw = pymysql.connect(host=mysql_params["host"], port=mysql_params["port"], user=mysql_params["user"],
                          password=mysql_params["password"], database=mysql_params["db"], autocommit=True)
    tables = [f"lifecycle_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    key = None
    try:
        with raw.cursor() as cur:
            for table in tables:
                cur.execute(f"CREATE TABLE {table} (n INT)")
        Pipe(range(1000), lambda x: {"n": x},
             Branch(Insert(f"INSERT INTO {tables[0]} (n) VALUES ({{n}})", **mysql_params)),
             Insert(f"INSERT INTO {tables[1]} (n) VALUES ({{n}})", **mysql_params))
        report = BotFrame.run(resume=True)
        key = report.delivery["P1"]["run_key"]

        def rows_for_key(key):
            with raw.cursor() as cur:
                cur.execute("SELECT sink, source_offset, complete FROM rxbot_checkpoints WHERE run_key = %s", (key,))
                return list(cur.fetchall())

        _one_row_per_insert_across_epochs(report, rows_for_key)
        for table in tables:
            with raw.cursor() as cur:
                cur.execute(f"SELECT COUNT(*), COUNT(DISTINCT n) FROM {table}")
                assert cur.fetchone() == (1000, 1000)
    finally:
        with raw.cursor() as cur:
            for table in tables:
                cur.execute(f"DROP TABLE IF EXISTS {table}")
            if key is not None:
                cur.execute("DELETE FROM rxbot_checkpoints WHERE run_key = %s", (key,))
        raw.close()
