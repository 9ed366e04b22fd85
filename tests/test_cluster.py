"""Sharded runs (``BotFrame.run(cluster=..., shards=N)``) on a real Dask LocalCluster.

One cluster (worker processes on 127.0.0.1) serves the whole module. Shards write what
they produce through ``aiofile('out-{index}.jsonl')`` into tmp_path, so the outputs of
every worker process can be compared with a local run of the same pipe.
"""
from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import local_cluster, require_distributed
from launch import kill_group, popen
from rxbot import (BlockedJoin, BotFrame, Branch, Filter, Fork, Join, Loop, Node, Pipe, Return,
                   Step, Timer, aiofile, config, shard)
from rxbot.shard import ShardInfo, entered

ROOT = Path(__file__).resolve().parent.parent


def _require_distributed():
    return require_distributed(pickle_by_value=__name__)


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster on loopback shared by the module: 2 worker processes x 2 task slots,
    so 4 shards run at once."""
    _require_distributed()
    yield from local_cluster(threads_per_worker=2)


def read_outputs(folder: Path) -> collections.Counter:
    """Every line of every out-*.jsonl in ``folder``, as a multiset."""
    lines = collections.Counter()
    for path in folder.glob("out-*.jsonl"):
        lines.update(path.read_text().splitlines())
    return lines


# ----------------------------------------------------------------------- steps used
def double(x):
    return x * 2


async def tag_async(x):
    await asyncio.sleep(0.001)
    return {"x": x, "even": x % 2 == 0}


def square(d):
    return d["x"] ** 2


def small(d):
    return d["x"] < 40


async def neg(x):
    await asyncio.sleep(0)
    return -x


def fan_out(d):
    return [d["x"], d["x"] + 1000] if isinstance(d, dict) else None


def rich_pipe(out: str, n: int = 120) -> Pipe:
    """Nested routes (Fork holding a Return holding a Filter, a Join, a BlockedJoin) and
    async steps."""
    return Pipe(
        range(n),
        double,
        tag_async,
        Fork(Return(Filter(route_func=small), square, neg), Pipe(lambda d: d["x"] + 1, neg),
             route_func=lambda d: d["even"], join=True),
        Join(lambda v: v if isinstance(v, int) else None, fan_out),
        BlockedJoin(lambda v: repr(v), lambda v: type(v).__name__),
        aiofile(out, format="json"),
    )


# ------------------------------------------------------------------ same items, once
def test_sharded_output_equals_a_local_run(cluster, tmp_path):
    (tmp_path / "local").mkdir()
    (tmp_path / "sharded").mkdir()
    rich_pipe(str(tmp_path / "local" / "out-{index}.jsonl"))
    local = BotFrame.run()
    rich_pipe(str(tmp_path / "sharded" / "out-{index}.jsonl"))
    sharded = BotFrame.run(cluster=cluster, shards=3)

    expected = read_outputs(tmp_path / "local")
    assert sum(expected.values()) > 120
    assert read_outputs(tmp_path / "sharded") == expected
    assert sorted(p.name for p in (tmp_path / "sharded").iterdir()) == [
        "out-0.jsonl", "out-1.jsonl", "out-2.jsonl"]
    source = "P1[1] Loop(range(0, 120))"
    assert sharded[source].inp == 3 and local[source].inp == 1  # one trigger per shard
    assert sharded[source].out == local[source].out == 120
    assert {k: s.as_dict() for k, s in sharded.steps.items() if k != source} == {
        k: s.as_dict() for k, s in local.steps.items() if k != source}


def shard_of(x):
    return (shard.index, shard.count, x)


def test_each_shard_gets_the_items_with_its_index_modulo_the_count(cluster, tmp_path):
    Pipe([f"item{i}" for i in range(10)], shard_of, aiofile(str(tmp_path / "out-{index}.jsonl"), format="json"))
    BotFrame.run(cluster=cluster, shards=4)
    for k in range(4):
        got = [json.loads(line) for line in (tmp_path / f"out-{k}.jsonl").read_text().splitlines()]
        assert got == [[k, 4, f"item{i}"] for i in range(k, 10, 4)]


def test_a_thread_boosted_step_reads_its_own_shard(cluster, tmp_path):
    # 4 shards on 2 workers: two shards share each worker process
    Pipe(range(16), Step(shard_of, boost="thread"), aiofile(str(tmp_path / "out-{index}.jsonl"), format="json"))
    BotFrame.run(cluster=cluster, shards=4)
    for k in range(4):
        got = sorted(json.loads(line)[2] for line in (tmp_path / f"out-{k}.jsonl").read_text().splitlines())
        assert got == list(range(k, 16, 4))
        assert {tuple(json.loads(line)[:2]) for line in (tmp_path / f"out-{k}.jsonl").read_text().splitlines()} == {
            (k, 4)}


def test_a_foreign_thread_sees_the_only_shard_or_is_told_it_is_ambiguous():
    def read_in_a_thread():
        seen = []

        def read():
            try:
                seen.append(shard.index)
            except RuntimeError as exc:
                seen.append(str(exc))

        thread = threading.Thread(target=read)  # a plain thread: no context copied
        thread.start()
        thread.join()
        return seen[0]

    with entered(ShardInfo(2, 4)):
        assert read_in_a_thread() == 2
        with entered(ShardInfo(3, 4)):
            assert shard.index == 3  # this context knows
            assert "several shards run in this process" in read_in_a_thread()
    assert read_in_a_thread() == 0


def test_shard_reads_zero_of_one_outside_a_sharded_run():
    got = []
    Pipe([1], shard_of, got.append)
    BotFrame.run()
    assert got == [(0, 1, 1)]


def test_run_async_with_a_given_asynchronous_client(cluster, tmp_path):
    distributed = _require_distributed()

    async def main():
        async with distributed.Client(cluster, asynchronous=True) as client:
            Pipe(Loop({"a": 1, "b": 2, "c": 3}), str.upper, aiofile(str(tmp_path / "out-{index}.jsonl"), format="json"))
            report = await BotFrame.run_async(cluster=client, shards=2)
            assert client.status == "running"  # a client the caller gave is left open
            return report

    report = asyncio.run(main())
    assert read_outputs(tmp_path) == collections.Counter(['"A"', '"B"', '"C"'])
    assert report.find("Loop(dict[3])").out == 3


def test_run_with_a_blocking_client_uses_its_scheduler_and_leaves_it_open(cluster, tmp_path):
    distributed = _require_distributed()
    with distributed.Client(cluster) as client:
        Pipe(Loop(("a", "b", "c")), str.upper, aiofile(str(tmp_path / "out-{index}.jsonl"), format="json"))
        BotFrame.run(cluster=client, shards=2)
        assert client.status == "running"
    assert (tmp_path / "out-0.jsonl").read_text().split() == ['"A"', '"C"']
    assert (tmp_path / "out-1.jsonl").read_text().split() == ['"B"']


def test_one_pipe_runs_sharded_with_pipe_run(cluster, tmp_path):
    other = Pipe(Loop(("x",)), str.upper)  # pending, not run by the pipe's own run
    pipe = Pipe(Loop(("a", "b", "c")), str.upper, aiofile(str(tmp_path / "out-{index}.jsonl"), format="json"))
    report = pipe.run(cluster=cluster, shards=2)
    assert (tmp_path / "out-0.jsonl").read_text().split() == ['"A"', '"C"']
    assert (tmp_path / "out-1.jsonl").read_text().split() == ['"B"']
    assert report["P1[1] Loop(tuple[3])"].out == 3 and other.report is None
    BotFrame.clear()


def test_a_constant_first_step_is_one_item_for_shard_0(cluster, tmp_path):
    Pipe("hello", str.upper, aiofile(str(tmp_path / "out-{index}.jsonl"), format="json"))
    report = BotFrame.run(cluster=cluster, shards=2)
    assert (tmp_path / "out-0.jsonl").read_text().split() == ['"HELLO"']
    assert (tmp_path / "out-1.jsonl").read_text() == ""
    assert report.find("'hello'").out == 1


# --------------------------------------------------------------------- report merge
def test_the_stats_hook_sees_a_sharded_run_while_it_goes_and_at_its_end(cluster, tmp_path):
    """The shards' live counts reach the hook on the client mid-run: the last item of
    each shard waits until the hook has been called with ``final=False`` (a flag file the
    hook writes), so the run cannot end without a call during it. No timing involved."""
    flag = tmp_path / "hook-called"
    calls = []

    def hook(snapshot):
        calls.append(snapshot)
        if not snapshot["final"]:
            flag.write_text("seen")

    async def wait_for_the_hook(x):
        if x >= 4:  # the last item of each of the 2 shards (4, 5)
            for _ in range(3000):  # bounded: a hook never called fails the test, not hangs it
                if flag.exists():
                    break
                await asyncio.sleep(0.01)
            else:
                raise TimeoutError("the stats hook was not called during the run")
        return x

    Pipe(Loop(range(6)), wait_for_the_hook, double)
    report = BotFrame.run(cluster=cluster, shards=2, stats=hook, interval=0.05)
    assert any(not c["final"] for c in calls) and calls[-1]["final"]
    assert [c["final"] for c in calls].count(True) == 1
    last = {s["step"]: s for s in calls[-1]["steps"]}
    assert last["P1[2] wait_for_the_hook"]["out"] == 6 == report.find("wait_for_the_hook").out


def test_merged_report_counts_equal_the_sum_of_the_shards(cluster, tmp_path):
    from rxbot.cluster import merge_reports

    config.exception_policy = "ignore"  # counts every step (and drops the failures)

    def build(source):
        return Pipe(source, double, Branch(tag_async, Filter(route_func=small)), one_in_seven_fails,
                    aiofile(str(tmp_path / "out-{index}.jsonl")))

    build(range(50))
    merged = BotFrame.run(cluster=cluster, shards=3)

    alone = []  # each shard's share run here, as that shard
    for k in range(3):
        share = Loop(range(50)[k::3])
        share.name = "Loop(range(0, 50))"  # the name the shards' sources carry
        build(share)
        with entered(ShardInfo(k, 3)):
            alone.append(BotFrame.run())
    expected = merge_reports(alone)
    assert {k: s.as_dict() for k, s in merged.steps.items()} == {
        k: s.as_dict() for k, s in expected.steps.items()}
    assert merged.find("one_in_seven_fails").dropped == len(range(0, 100, 14))
    assert sorted(e.item for e in merged.dead_letters) == list(range(0, 100, 14))
    assert all(isinstance(e.exception, ZeroDivisionError) for e in merged.dead_letters)
    # the sinks (what a last step returns is consumed, not filtered) come through too
    assert merged.sinks == expected.sinks == alone[0].sinks and merged.sinks


class Unpicklable:
    def __init__(self, n):
        self.n = n
        self.lock = threading.Lock()

    def __repr__(self):
        return f"Unpicklable({self.n})"


class LockedError(Exception):
    def __init__(self, n):
        super().__init__(f"locked {n}")
        self.lock = threading.Lock()


def make_unpicklable(x):
    return Unpicklable(x)


def fail_unpicklably(u):
    if u.n % 5 == 0:
        raise LockedError(u.n)
    return u.n


def test_dead_letters_that_do_not_pickle_come_back_as_text(cluster, tmp_path):
    from rxbot.cluster.merge import RemoteError

    config.exception_policy = "ignore"
    Pipe(range(20), make_unpicklable, fail_unpicklably, aiofile(str(tmp_path / "out-{index}.jsonl")))
    report = BotFrame.run(cluster=cluster, shards=2)
    letters = report.dead_letters
    assert sorted(e.item for e in letters) == sorted(f"Unpicklable({n})" for n in (0, 5, 10, 15))
    assert all(isinstance(e.exception, RemoteError) and "LockedError: locked" in str(e.exception)
               for e in letters)
    assert all(e.step == "fail_unpicklably" for e in letters)
    assert read_outputs(tmp_path) == collections.Counter(str(n) for n in range(20) if n % 5)


def one_in_seven_fails(x):
    if x % 7 == 0:
        return 1 / 0
    return x


# ------------------------------------------------------------------- exception policy
def fail_on_13(x):
    if x == 13:
        raise KeyError(f"no {x}")
    return x


class Marks(Node):
    """Writes 'open', one line per item and 'closed' into a file per shard."""

    concurrency = 1

    def __init__(self, folder: str, delay: float = 0.0) -> None:
        super().__init__()
        self.folder = folder
        self.delay = delay

    async def init(self):
        self.path = Path(self.folder) / f"marks-{shard.index}.txt"
        self.path.write_text("open\n")

    async def __call__(self, x):
        await asyncio.sleep(self.delay)
        with open(self.path, "a") as f:
            f.write(f"{x}\n")
        return x

    async def close(self):
        with open(self.path, "a") as f:
            f.write("closed\n")


def wait_for(predicate, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_raise_stops_every_shard_and_raises_the_original_exception(cluster, tmp_path):
    # shard 1 fails on its 7th item (13); shard 0 alone would take ~2000 x 10 ms
    pipe = Pipe(range(4000), Marks(str(tmp_path), delay=0.01), fail_on_13)
    with pytest.raises(KeyError) as info:
        BotFrame.run(cluster=cluster, shards=2)
    notes = "\n".join(info.value.__notes__)
    assert "rxbot: raised in step 'fail_on_13' on item 13" in notes
    assert "shard 1 of 2 on Dask worker tcp://127.0.0.1:" in notes
    # the other shard was cancelled: it closed its node long before its 2000 items
    wait_for(lambda: (tmp_path / "marks-0.txt").read_text().endswith("closed\n"), "shard 0 to close")
    lines = (tmp_path / "marks-0.txt").read_text().splitlines()
    assert lines[0] == "open" and len(lines) < 1000
    assert pipe.report.error is info.value
    assert pipe.report.find("fail_on_13").failed == 1


@pytest.mark.parametrize("policy", ["ignore", "retry", "pipein"])
def test_a_failing_item_under_each_policy(cluster, tmp_path, policy):
    config.exception_policy = policy
    config.retry_backoff = 0.001
    step = fail_on_13 if policy != "retry" else fails_first_time
    Pipe(range(30), step, describe, aiofile(str(tmp_path / "out-{index}.jsonl"), format="json"))
    report = BotFrame.run(cluster=cluster, shards=2)
    got = read_outputs(tmp_path)
    numbers = collections.Counter(str(i) for i in range(30))
    if policy == "ignore":
        assert got == numbers - collections.Counter(["13"])
        assert report.find("fail_on_13").dropped == 1
        [letter] = report.dead_letters
        assert letter.item == 13 and isinstance(letter.exception, KeyError)
    elif policy == "retry":
        assert got == numbers
        assert report.find("fails_first_time").retried == 30
    else:
        assert got == numbers - collections.Counter(["13"]) + collections.Counter(['"KeyError at 13"'])
        assert report.find("fail_on_13").failed == 1


_seen: set = set()


def fails_first_time(x):
    """Fails the first call per item in each worker process."""
    if x not in _seen:
        _seen.add(x)
        raise ConnectionError(f"flaky {x}")
    return x


def describe(x):
    if isinstance(x, Exception):  # pipein: the original exception, the item attached
        return f"{type(x).__name__} at {x.rxbot_item}"
    return x


# ------------------------------------------------------------------------- MariaDB
class MariaDB:
    """Uniquely named tables on the local MariaDB, checked with the raw driver and
    dropped at the end."""

    def __init__(self, params: dict) -> None:
        import pymysql

        self.params = params
        self.tables: list = []
        self.raw = pymysql.connect(host=params["host"], port=params["port"], user=params["user"],
                                   password=params["password"], database=params["db"], autocommit=True)

    def table(self, columns: str) -> str:
        name = f"rxbot_shard_{uuid.uuid4().hex[:12]}"
        self.sql(f"create table {name} ({columns})")
        self.tables.append(name)
        return name

    def sql(self, statement: str, rows: list | None = None) -> tuple | None:
        with self.raw.cursor() as cur:
            if rows is not None:
                cur.executemany(statement, rows)
                return None
            cur.execute(statement)
            return cur.fetchone()

    def close(self) -> None:
        for name in self.tables:
            self.sql(f"drop table if exists {name}")
        self.raw.close()


@pytest.fixture
def mariadb(mysql_params):
    db = MariaDB(mysql_params)
    yield db
    db.close()


def test_mariadb_insert_from_4_shards_writes_every_row_exactly_once(cluster, mariadb):
    from rxbot.db.mysql import Insert

    table = mariadb.table("id integer primary key, shard integer")
    Pipe(range(3000), lambda i: {"id": i, "shard": shard.index},
         Insert(f"insert into {table} (id, shard) values ({{id}}, {{shard}})", **mariadb.params))
    BotFrame.run(cluster=cluster, shards=4)
    assert mariadb.sql(f"select count(*), count(distinct id), sum(id), min(id), max(id) from {table}") == (
        3000, 3000, sum(range(3000)), 0, 2999)
    assert mariadb.sql(f"select count(*) from {table} where id % 4 <> shard") == (0,)


def test_a_query_source_selects_its_share_with_shard_params(cluster, mariadb):
    from rxbot.db.mysql import Insert, Query

    src = mariadb.table("id integer primary key")
    dst = mariadb.table("id integer primary key, shard integer")
    mariadb.sql(f"insert into {src} values (%s)", [(i,) for i in range(500)])
    Pipe(shard.params, Query(f"select id from {src} where id % {{count}} = {{index}}", **mariadb.params),
         lambda row: {"id": row["id"], "shard": shard.index},
         Insert(f"insert into {dst} values ({{id}}, {{shard}})", **mariadb.params))
    BotFrame.run(cluster=cluster, shards=3)
    assert mariadb.sql(f"select count(*), count(distinct id), sum(id % 3 = shard) from {dst}") == (500, 500, 500)


# -------------------------------------------------------------------------- refusals
class HoldsALock(Node):
    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()  # cannot be pickled

    def __call__(self, x):
        return x


def numbers():
    yield from range(3)


REFUSED = {
    "timer": (lambda: Pipe(Timer(delay=0.1, max_time=3), double), "P1[1] Timer(0.1s, max_time=3)", "Timer"),
    "generator": (lambda: Pipe(numbers(), double), "P1[1] Loop(generator)", "list or range"),
    "iterator": (lambda: Pipe(Loop(iter([1, 2])), double), "P1[1] Loop(list_iterator)", "list or range"),
    "function": (lambda: Pipe(lambda _: range(5), double), "P1[1] <lambda>", "@rxbot.shard.aware"),
    "unpicklable": (lambda: Pipe(range(5), Branch(double, HoldsALock())), "P1[2] Branch/1[2] HoldsALock",
                    "init()"),
    "process boost": (lambda: Pipe(range(5), Step(double, boost="process")), "P1[2] double", "boost='thread'"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unshardable_pipes_are_refused_before_anything_starts(case):
    from rxbot.cluster import ShardingError

    _require_distributed()
    build, where, advice = REFUSED[case]
    build()
    # an unreachable scheduler: a refusal must come before any connection attempt
    with pytest.raises(ShardingError) as info:
        BotFrame.run(cluster="tcp://127.0.0.1:9", shards=2)
    message = str(info.value)
    assert where in message and advice in message


def test_a_module_missing_on_the_workers_is_named(cluster, tmp_path, monkeypatch):
    (tmp_path / "only_here_steps.py").write_text("def step(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # importable here, not on the workers
    import only_here_steps

    Pipe(range(4), only_here_steps.step)
    with pytest.raises(ModuleNotFoundError) as info:
        BotFrame.run(cluster=cluster, shards=2)
    assert "only_here_steps" in str(info.value)
    assert "must be installed on the Dask workers" in "\n".join(info.value.__notes__)


def test_replay_mode_is_refused_with_a_sharded_run():
    from rxbot.cluster import ShardingError

    _require_distributed()
    config.replay_mode = True
    Pipe(range(5), double)
    with pytest.raises(ShardingError, match="replay mode"):
        BotFrame.run(cluster="tcp://127.0.0.1:9", shards=2)


def test_a_range_is_sliced_and_a_list_shipped_once_in_total():
    import cloudpickle

    from rxbot.cluster.plan import plan

    _require_distributed()
    big = Pipe(range(10 ** 15), double)
    words = [f"{i:08d}" * 10 for i in range(5000)]
    listed = Pipe(words, double)
    chosen = plan([big, listed])
    full = len(cloudpickle.dumps(words))
    assert len(chosen.blob) < full / 10  # the pipes travel without their sources
    shares = [chosen.sources[1].share(k, 4).iterable for k in range(4)]
    assert sorted(x for s in shares for x in s) == sorted(words)
    assert sum(len(chosen.pickled_share(k, 4)) for k in range(4)) < full * 1.2
    assert chosen.sources[0].share(3, 4).iterable == range(3, 10 ** 15, 4)  # still a range
    BotFrame.clear()


# ------------------------------------------------------------- scripts and signals
SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from rxbot import BotFrame, Node, Pipe, aiofile, shard

    class Marks(Node):      # defined in __main__: sent to the workers by value
        concurrency = 1
        async def init(self):
            self.path = f"{OUT}/marks-{shard.index}.txt"
            open(self.path, "w").write("open\\n")
        async def __call__(self, x):
            await asyncio.sleep(DELAY)
            with open(self.path, "a") as f:
                f.write(f"{x}\\n")
            return x
        async def close(self):
            open(self.path, "a").write("closed\\n")

    def triple(x):          # a plain function of __main__
        return x * 3

    OUT, DELAY = sys.argv[1], float(sys.argv[2])
    if __name__ == "__main__":
        Pipe(range(40), triple, Marks(), aiofile(OUT + "/out-{index}.jsonl", format="json"))
        report = BotFrame.run(**CALL)
        print("finished")
""")


def script_env():
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_rxbot_run_cluster_shards_runs_a_script_with_main_functions(cluster, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT.replace("**CALL", ""))
    done = subprocess.run([sys.executable, "-m", "rxbot", "run", "--cluster", cluster, "--shards", "2",
                           str(script), "--", str(tmp_path), "0"],
                          capture_output=True, text=True, timeout=120, env=script_env())
    assert done.returncode == 0, done.stderr
    assert read_outputs(tmp_path) == collections.Counter(str(3 * i) for i in range(40))
    for k in range(2):
        lines = (tmp_path / f"marks-{k}.txt").read_text().splitlines()
        assert lines == ["open", *(str(3 * i) for i in range(k, 40, 2)), "closed"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_on_the_client_cancels_every_shard(cluster, tmp_path, sig):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT.replace("**CALL", f"cluster={cluster!r}, shards=2"))
    proc = popen([sys.executable, str(script), str(tmp_path), "0.5"],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=script_env())
    try:
        marks = [tmp_path / f"marks-{k}.txt" for k in range(2)]
        wait_for(lambda: all(m.exists() and len(m.read_text().splitlines()) >= 2 for m in marks),
                 "both shards to process an item", timeout=60)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        if sig == signal.SIGTERM:
            assert proc.returncode == 128 + signal.SIGTERM, err
        else:
            assert "interrupted" in err and proc.returncode != 0, err
        assert "finished" not in _
        wait_for(lambda: all(m.read_text().endswith("closed\n") for m in marks), "both shards to close")
        for m in marks:  # stopped early: 20 items per shard would take 10 s
            assert len(m.read_text().splitlines()) < 2 + 20
    finally:
        kill_group(proc)


# -------------------------------------------------------------------------- progress
def test_progress_shows_the_shards_counts_summed_while_they_run(cluster, tmp_path, monkeypatch):
    import rxbot.observe.progress as progress

    seen = []
    original = progress.Progress.update

    def record(self, final=False):
        original(self, final)
        seen.append(self.source_counts().get(1, 0))

    monkeypatch.setattr(progress.Progress, "update", record)
    config.progress = True
    # 2 shards x 60 items x 20 ms one at a time: a little over a second each
    Pipe(range(120), Marks(str(tmp_path), delay=0.02), name="marks")
    report = BotFrame.run(cluster=cluster, shards=2)
    assert seen[-1] == 120 == report.find("Loop(range(0, 120))").out
    assert any(0 < n < 120 for n in seen), seen  # sums arrived while the shards ran
    assert seen == sorted(seen)
    assert report.find("Marks").inp == 120


def test_settings_sent_to_the_workers(caplog):
    from rxbot.cluster.run import _settings

    _require_distributed()
    config.exception_policy = "retry"
    config.dead_letters = []  # the client's own sink: stays here
    config.boost_start_method = threading.Lock()  # does not pickle: stays here, with a warning
    config.progress = True
    settings = _settings()
    assert settings["exception_policy"] == "retry"
    assert settings["metrics"] is True  # progress counts every step, on the workers too
    assert not {"dead_letters", "progress", "replay_mode", "boost_start_method"} & set(settings)
    assert "config.boost_start_method cannot be sent to the Dask workers" in caplog.text


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(cluster=42, shards=2), TypeError, "argument 'cluster' must be a scheduler address"),
    (dict(cluster="tcp://127.0.0.1:9", shards=0), ValueError, "argument 'shards' must be an int >= 1; got 0"),
])
def test_bad_cluster_arguments_are_named(kwargs, error, words):
    _require_distributed()
    Pipe(range(3), double)
    with pytest.raises(error, match=words):
        BotFrame.run(**kwargs)


def test_an_unreachable_scheduler_is_named():
    _require_distributed()
    import dask

    Pipe(range(3), double)
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(ConnectionError, match=r"sharded run: cannot connect to the Dask scheduler at 'tcp://127.0.0.1:9'"):
            BotFrame.run(cluster="tcp://127.0.0.1:9", shards=2)
