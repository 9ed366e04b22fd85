"""Sharded runs survive a dead worker (issue 25.2, 25.3): real ``dask scheduler`` and
``dask worker`` processes on 127.0.0.1; one worker is killed with SIGKILL (by pid) in the
middle of its shard; Dask runs the shard again on the other worker, which goes on from
the shard's checkpoint: every row in MariaDB exactly once, the run ends normally and the
report names the re-run."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest

from dask_procs import dask_processes
from rxbot import BotFrame, Pipe, Step

ITEMS = 3000
GATE_AT = 300  # items of a shard that pass before its worker may be killed


def kill_a_paused_worker(gate: Path, rows_by_pid, ready_at: int, killed: list, seen: list,
                         run_over: threading.Event) -> None:
    """When a shard has paused at its gate (``gate/paused-PID``) and its ``ready_at`` rows are
    committed (``rows_by_pid()``), kill (by pid) its worker, then open the gate. Driven by the
    shards' own progress, not by timing: on a quiet machine a shard of 3,000 items is over in
    about a second. ``seen``: what it saw last (paused workers, rows by worker)."""
    deadline = time.time() + 60
    try:
        while not run_over.is_set() and time.time() < deadline:
            paused = [int(p.name.split("-")[1]) for p in gate.glob("paused-*")]
            by_pid = rows_by_pid()
            seen[:] = [paused, by_pid]
            ready = [pid for pid in paused if by_pid.get(pid, 0) == ready_at]
            if ready:
                os.kill(ready[0], signal.SIGKILL)
                killed.append(ready[0])
                return
            time.sleep(0.05)
    finally:
        (gate / "open").touch()  # the survivor, and any re-run, go on


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A scheduler and two single-threaded workers, as subprocesses (killed by pid)."""
    for procs in dask_processes(tmp_path_factory.mktemp("dask")):
        yield procs.address, procs.workers


def test_preflight_uploads_the_scripts_own_modules(dask_cluster, tmp_path):
    """A step from a helper module next to the script: uploaded to the workers before
    the shards start (it is not installed there)."""
    address, _ = dask_cluster
    (tmp_path / f"helper_{uuid.uuid4().hex[:8]}.py").write_text("def triple(x):\n    return 3 * x\n")
    helper = next(tmp_path.glob("helper_*.py")).stem
    out = tmp_path / "out.txt"
    script = tmp_path / "job.py"
    script.write_text(
        f"from {helper} import triple\n"
        "from rxbot import Pipe, BotFrame\n"
        "got = []\n"
        "Pipe(list(range(20)), triple, got.append)\n"
        f"BotFrame.run(cluster={address!r}, shards=2)\n"
        f"open({str(out)!r}, 'w').write(repr(sorted(got)))\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert out.exists()  # the run ended, every shard having loaded the helper's function


def test_preflight_refuses_another_rxbot_version_naming_the_workers(dask_cluster, monkeypatch):
    import rxbot

    address, workers = dask_cluster
    monkeypatch.setattr(rxbot, "__version__", "9.9.9")
    Pipe(list(range(4)), lambda x: x, lambda x: None)
    with pytest.raises(RuntimeError, match=r"rxbot 9\.9\.9 \(this client's\) is needed on every Dask worker") as caught:
        BotFrame.run(cluster=address, shards=2)
    assert all(w in str(caught.value) for w in workers)


def test_a_stopped_sharded_run_reports_the_shards_merged_counts(dask_cluster):
    """Ctrl-C/SIGTERM cancel the run's task: the pipe's report then holds what the shards
    did, summed (it said "interrupted after 0 items")."""
    import asyncio

    address, _ = dask_cluster

    async def slow(x):
        await asyncio.sleep(0.005)
        return x

    pipe = Pipe(list(range(200_000)), Step(slow, concurrency=2), lambda x: None)
    pipe.report = None

    async def stop_it():
        run = asyncio.ensure_future(BotFrame.run_async(cluster=address, shards=2))
        while not (pipe.report is not None and any(s.inp for s in pipe.report.steps.values())):
            await asyncio.sleep(0.1)  # the shards' first counts arrived: they are running
        await asyncio.sleep(1)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run

    asyncio.run(stop_it())
    done = pipe.report.find("slow")
    assert 0 < done.inp < 200_000
    assert pipe.report.find("slow").out > 0


def test_a_worker_killed_mid_shard_costs_nothing(dask_cluster, mysql_params, tmp_path, monkeypatch):
    import pymysql

    from rxbot.db.mysql import Insert

    address, workers = dask_cluster
    table = f"sharded_{uuid.uuid4().hex[:10]}"
    raw = pymysql.connect(host=mysql_params["host"], port=mysql_params["port"], user=mysql_params["user"],
                          password=mysql_params["password"], database=mysql_params["db"], autocommit=True)
    with raw.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (n INT, part INT, pid INT)")  # no key: doubles show
    from rxbot.config import config

    # a checkpoint every 100 source items: a shard's first GATE_AT items are committed in
    # three epochs before it pauses at the gate (an item waiting there keeps its epoch open)
    monkeypatch.setattr(config, "checkpoint_items", 100)
    killed: list[int] = []
    gate = tmp_path / "gate"
    gate.mkdir()
    run_over = threading.Event()
    seen: list = []  # what the killer saw last: paused workers, rows by worker

    def rows_by_pid():
        with con.cursor() as cur:
            cur.execute(f"SELECT pid, COUNT(*) FROM {table} GROUP BY pid")
            return dict(cur.fetchall())

    passed: list[int] = []  # per shard attempt: the pipe is unpickled once per attempt

    async def fetch(i):
        """The first GATE_AT items of a shard pass; the rest wait at the gate until a worker
        has been killed (the re-run finds the gate open)."""
        import asyncio
        if len(passed) >= GATE_AT and not (gate / "open").exists():
            (gate / f"paused-{os.getpid()}").touch()
            while not (gate / "open").exists():
                await asyncio.sleep(0.02)
        passed.append(i)
        await asyncio.sleep(0.002)
        return i

    def parse(i):
        pid = os.getpid()
        return [{"n": i, "part": 0, "pid": pid}, {"n": i, "part": 1, "pid": pid}]

    try:
        Pipe(list(range(ITEMS)), Step(fetch, concurrency=4), parse,
             Insert(f"INSERT INTO {table} (n, part, pid) VALUES ({{n}}, {{part}}, {{pid}})", **mysql_params))
        con = pymysql.connect(host=mysql_params["host"], port=mysql_params["port"], user=mysql_params["user"],
                              password=mysql_params["password"], database=mysql_params["db"], autocommit=True)
        killer = threading.Thread(target=kill_a_paused_worker,
                                  args=(gate, rows_by_pid, 2 * GATE_AT, killed, seen, run_over))
        killer.start()
        try:
            report = BotFrame.run(cluster=address, shards=2)
        finally:
            run_over.set()
            killer.join()
            con.close()
        assert killed and killed[0] in workers.values(), f"no worker killed; paused, rows by pid: {seen}"
        with raw.cursor() as cur:
            cur.execute(f"SELECT n, part FROM {table}")
            rows = Counter(tuple(r) for r in cur.fetchall())
        assert len(rows) == 2 * ITEMS, f"lost {2 * ITEMS - len(rows)}"
        assert max(rows.values()) == 1, f"twice: {sum(1 for c in rows.values() if c > 1)}"
        reran = [s for s in report.shards if s["attempts"] > 1]
        assert len(reran) == 1, report.shards
        assert len(set(reran[0]["workers"])) == 2
        assert all(s["checkpointed"] for s in report.shards)
        assert list(reran[0]["resumed_from"].values())[0] > 0  # it went on from its checkpoint
        with raw.cursor() as cur:  # the run is over: its checkpoints are deleted
            keys = [s["run_key"] for s in report.shards]
            cur.execute(f"SELECT COUNT(*) FROM rxbot_checkpoints WHERE run_key IN ({', '.join(['%s'] * len(keys))})",
                        keys)
            assert cur.fetchone() == (0,)
    finally:
        with raw.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
        raw.close()


def test_a_finished_sharded_run_deletes_its_checkpoints_sqlite(dask_cluster, tmp_path):
    """Each shard commits its checkpoint (one row, updated every epoch); once the run is
    over the rows are deleted: no later run has its run id, so they would only pile up."""
    import sqlite3

    from rxbot.config import config
    from rxbot.db.sqlite import Insert

    address, _ = dask_cluster
    config.checkpoint_items = 100  # (the settings travel to the workers)
    db = tmp_path / "out.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE t (n INT)")
    Pipe(list(range(2000)), lambda x: {"n": x}, Insert("INSERT INTO t (n) VALUES ({n})", str(db)))
    report = BotFrame.run(cluster=address, shards=2)
    con = sqlite3.connect(db)
    assert sorted(n for (n,) in con.execute("SELECT n FROM t")) == list(range(2000))
    assert all(s["checkpointed"] for s in report.shards)
    assert report.delivery["P1"] == {"exactly_once": ["P1[3] Insert: INSERT INTO t (n) VALUES ({n})"],
                                     "at_least_once": []}
    assert con.execute("SELECT COUNT(*) FROM rxbot_checkpoints").fetchone() == (0,)  # the table is there, empty


@pytest.fixture
def unforgiving_dask(tmp_path_factory):
    """A scheduler that gives a task up when its first worker dies (Dask's
    ``allowed-failures`` 0), so a shard cannot finish; two workers, killed by pid after."""
    for procs in dask_processes(tmp_path_factory.mktemp("dask-unforgiving"),
                                DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0"):
        yield procs.address, procs.workers


def test_a_shard_that_cannot_finish_is_named_with_its_worker_and_how_far_it_got(unforgiving_dask, tmp_path,
                                                                                monkeypatch):
    """When Dask gives a shard up (its worker died and no re-run is allowed), the run's
    error names the shard, the worker it ran on, the attempts, and what its checkpoint
    settled; not Dask's bare KilledWorker."""
    import sqlite3

    from rxbot.config import config
    from rxbot.db.sqlite import Insert

    address, workers = unforgiving_dask
    monkeypatch.setattr(config, "checkpoint_items", 100)
    db = tmp_path / "out.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE t (n INT, pid INT)")
    gate = tmp_path / "gate"
    gate.mkdir()
    passed: list[int] = []

    async def fetch(i):
        """A shard's first GATE_AT items pass, the rest wait until the gate opens."""
        import asyncio
        if len(passed) >= GATE_AT:
            (gate / f"paused-{os.getpid()}").touch()
            while not (gate / "open").exists():
                await asyncio.sleep(0.02)
        passed.append(i)
        return {"n": i, "pid": os.getpid()}

    def rows_by_pid():
        with closing(sqlite3.connect(db, timeout=5)) as con:
            return dict(con.execute("SELECT pid, COUNT(*) FROM t GROUP BY pid").fetchall())

    killed: list[int] = []
    seen: list = []
    run_over = threading.Event()

    Pipe(list(range(ITEMS)), Step(fetch, concurrency=2), Insert("INSERT INTO t (n, pid) VALUES ({n}, {pid})", str(db)))
    killer = threading.Thread(target=kill_a_paused_worker,
                              args=(gate, rows_by_pid, GATE_AT, killed, seen, run_over))  # its epochs committed
    killer.start()
    try:
        with pytest.raises(RuntimeError) as caught:
            BotFrame.run(cluster=address, shards=2)
    finally:
        run_over.set()
        killer.join()
    assert killed, f"no worker was killed; paused, rows by pid: {seen}"
    dead = next(addr for addr, pid in workers.items() if pid == killed[0])
    message = str(caught.value)
    assert re.search(r"sharded run: shard [01] could not finish: KilledWorker after 1 attempt\(s\) on worker\(s\) "
                     + re.escape(dead), message), message
    assert f"its checkpoint settled {GATE_AT} of its source items" in message, message
