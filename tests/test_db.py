"""Database nodes (rxbot.db.mysql, rxbot.db.sqlite) on real databases.

The shared cases run on both back ends: SQLite on a file in tmp_path, MySQL on the
local MariaDB through the ``mysql_params`` fixture (skipped when it is down, failed under
RXBOT_REQUIRE_SERVICES=1). Each test creates and drops its own uniquely named table and
checks the database with the raw driver (sqlite3 / pymysql), not with the code under test.
"""
from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from rxbot import BotFrame, Loop, Pipe, Step, config
from rxbot.db.base import DatabaseConnectionError, InsertError
from rxbot.db.params import ParameterError, Statement

ROOT = Path(__file__).resolve().parent.parent
EVIL = "x'); DROP TABLE {table}; --"


# ------------------------------------------------------------------ back-end harness
class Backend:
    """One database for one test: node classes, connection kwargs, a raw connection."""

    def __init__(self, kind: str, conn_kwargs: dict) -> None:
        self.kind = kind
        self.kw = conn_kwargs
        self.table = f"rxbot_t_{uuid.uuid4().hex[:12]}"
        if kind == "sqlite":
            from rxbot.db import sqlite as mod

            self.raw = sqlite3.connect(conn_kwargs["path"], isolation_level=None)
        else:
            import pymysql

            from rxbot.db import mysql as mod

            self.raw = pymysql.connect(host=conn_kwargs["host"], port=conn_kwargs["port"],
                                       user=conn_kwargs["user"], password=conn_kwargs["password"],
                                       database=conn_kwargs["db"], autocommit=True)
        self.Query = lambda sql, **kw: mod.Query(sql, **self.kw, **kw)
        self.Insert = lambda sql, **kw: mod.Insert(sql, **self.kw, **kw)
        self.module = mod

    def sql(self, statement: str, args: tuple = ()) -> list:
        """Run one statement on a separate connection and return all rows as tuples."""
        if self.kind == "sqlite":
            return [tuple(r) for r in self.raw.execute(statement.replace("%s", "?"), args).fetchall()]
        with self.raw.cursor() as cur:
            cur.execute(statement, args or None)
            return [tuple(r) for r in cur.fetchall()]

    def count(self, table: str | None = None) -> int:
        return self.sql(f"select count(*) from {table or self.table}")[0][0]

    def tables(self) -> set:
        if self.kind == "sqlite":
            return {r[0] for r in self.sql("select name from sqlite_master where type='table'")}
        return {r[0] for r in self.sql("show tables")}

    def create(self, columns: str = "id integer primary key, name varchar(200), score integer",
               table: str | None = None) -> str:
        table = table or self.table
        self.sql(f"create table {table} ({columns})")
        return table

    def close(self) -> None:
        for t in list(self.tables()):
            if t.startswith(self.table):
                self.sql(f"drop table {t}")
        self.raw.close()


@pytest.fixture(params=["sqlite", "mysql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        backend = Backend("sqlite", {"path": str(tmp_path / "test.db")})
    else:
        backend = Backend("mysql", request.getfixturevalue("mysql_params"))
    yield backend
    backend.close()


def run(*steps):
    out = []
    Pipe(*steps, out.append)
    BotFrame.run()
    return out


@dataclasses.dataclass
class Row:
    id: int
    name: str
    score: int


# ------------------------------------------------------------------ insert + query, both back ends
def test_insert_10000_rows_then_read_them_back_with_map_class(db):
    db.create()
    rows = [{"id": i, "name": f"name-{i}", "score": i * 7 % 1000} for i in range(10_000)]
    Pipe(Loop(rows), db.Insert(f"insert into {db.table} (id, name, score) values ({{id}}, {{name}}, {{score}})"))
    BotFrame.run()
    assert db.count() == 10_000
    assert db.sql(f"select sum(score), max(id), min(name) from {db.table}") == [
        (sum(r["score"] for r in rows), 9999, "name-0")]

    got = run(db.Query(f"select id, name, score from {db.table} order by id", map_class=Row))
    assert got == [Row(**r) for r in rows]


def test_query_without_map_class_yields_one_dict_per_row(db):
    db.create()
    db.sql(f"insert into {db.table} (id, name, score) values (1, 'a', 10), (2, 'b', 20)")
    assert run(db.Query(f"select id, name from {db.table} order by id")) == [
        {"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def test_map_class_databot_style_sets_declared_attributes_only(db):
    class User:  # databot's shape: attributes declared in a no-argument __init__
        def __init__(self):
            self.name = None
            self.id = None

    db.create()
    db.sql(f"insert into {db.table} (id, name, score) values (5, 'eve', 99)")
    (user,) = run(db.Query(f"select id as ID, name, score from {db.table}", map_class=User))
    assert type(user) is User
    assert vars(user) == {"name": "eve", "id": 5}  # ID lower-cased like databot; score not declared


@pytest.mark.parametrize("form", ["'{name}'", '"{name}"', "{name}", "%(name)s", ":name"])
def test_named_placeholder_forms_bind_dict_items(db, form):
    db.create()
    sql = f"insert into {db.table} (id, name) values ({form.replace('name', 'id')}, {form})"
    items = [{"id": 1, "name": "it's"}, {"id": 2, "name": 'say "hi"'}, {"id": 3, "name": "50%"}]
    assert run(Loop(items), db.Insert(sql)) == items
    assert db.sql(f"select id, name from {db.table} order by id") == [
        (1, "it's"), (2, 'say "hi"'), (3, "50%")]
    q = f"select id from {db.table} where name = {form}"
    assert run(Loop(items), Step(db.Query(q), concurrency=1)) == [{"id": 1}, {"id": 2}, {"id": 3}]


@pytest.mark.parametrize("form", ["%s", "?", "'%s'"])
def test_positional_placeholders_bind_tuples_and_scalars(db, form):
    db.create()
    sql = f"insert into {db.table} (id, name) values ({form}, {form})"
    assert run(Loop([(1, "a"), [2, "b"]]), db.Insert(sql)) == [(1, "a"), [2, "b"]]
    assert db.sql(f"select id, name from {db.table} order by id") == [(1, "a"), (2, "b")]
    # a scalar item fills a single placeholder
    got = run(Loop(["b", "a", "zzz"]), Step(db.Query(f"select id from {db.table} where name = {form}"),
                                              concurrency=1))
    assert got == [{"id": 2}, {"id": 1}]


def test_object_items_supply_named_values_from_attributes(db):
    class Person:
        def __init__(self, id, name):
            self.id, self.name = id, name

    db.create()
    people = [Person(1, "ann"), Person(2, "bo")]
    assert run(Loop(people), db.Insert(f"insert into {db.table} (id, name) values ({{id}}, '{{name}}')")) == people
    assert db.sql(f"select id, name from {db.table} order by id") == [(1, "ann"), (2, "bo")]


def test_select_percent_s_binds_each_input(db):
    # databot's ex2: Loop(range(n)) into "select %s"
    assert run(Loop(range(4)), Step(db.Query("select %s as n"), concurrency=1)) == [
        {"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}]


def test_literal_percent_and_braces_survive(db):
    db.create()
    db.sql(f"insert into {db.table} (id, name) values (1, '50%'), (2, '{{x}}'), (3, 'abc'), (4, 'a{{b')")
    # no placeholders: % and lone braces are plain text
    assert run(db.Query(f"select id from {db.table} where name like '%0%' or name = 'a{{b' order by id")) == [
        {"id": 1}, {"id": 4}]
    # a literal that is only {x} is databot's placeholder form; doubled braces are literal
    assert run(db.Query(f"select id from {db.table} where name = '{{{{x}}}}'")) == [{"id": 2}]
    # with %-placeholders, %% is a literal % (pymysql's convention)
    assert run(Loop(["abc"]), db.Query(f"select id from {db.table} where name like '5%%' or name = %s "
                                       f"order by id")) == [{"id": 1}, {"id": 3}]


@pytest.mark.parametrize("form", ["'{name}'", "%s", "{name}"])
def test_injection_attempt_is_stored_verbatim_and_the_table_survives(db, form):
    db.create()
    evil = EVIL.format(table=db.table)
    evil2 = '"); DROP TABLE ' + db.table + '; -- \\'
    if form == "%s":
        items, sql = [(1, evil), (2, evil2)], f"insert into {db.table} (id, name) values (%s, %s)"
    else:
        items = [{"id": 1, "name": evil}, {"id": 2, "name": evil2}]
        sql = f"insert into {db.table} (id, name) values ({form.replace('name', 'id')}, {form})"
    run(Loop(items), db.Insert(sql))
    assert db.table in db.tables()
    assert db.sql(f"select id, name from {db.table} order by id") == [(1, evil), (2, evil2)]
    # and through a Query's WHERE
    where = "%s" if form == "%s" else form
    item = evil if form == "%s" else {"name": evil}
    assert run(Loop([item]), db.Query(f"select id, name from {db.table} where name = {where}")) == [
        {"id": 1, "name": evil}]
    assert db.table in db.tables()


def test_query_as_first_step_needs_no_parameters(db):
    db.create()
    db.sql(f"insert into {db.table} (id, name) values (1, 'a'), (2, 'b')")
    assert run(db.Query(f"select count(*) as n from {db.table}")) == [{"n": 2}]


def test_query_with_named_placeholders_as_first_step_names_node_and_placeholder(db):
    db.create()
    Pipe(db.Query(f"select * from {db.table} where name = {{name}}"))
    with pytest.raises(ParameterError) as info:
        BotFrame.run()
    msg = str(info.value)
    assert "{name}" in msg and f"Query: select * from {db.table}" in msg and "int 0" in msg


def test_missing_key_names_the_node_and_the_placeholder(db):
    db.create()
    Pipe(Loop([{"id": 1, "nam": "typo"}]), db.Insert(f"insert into {db.table} (id, name) values ({{id}}, {{name}})"))
    with pytest.raises(ParameterError) as info:
        BotFrame.run()
    msg = str(info.value)
    assert "Insert: insert into" in msg and "{name}" in msg and "id, nam" in msg
    assert db.count() == 0


def test_wrong_positional_arity_is_a_clear_error(db):
    db.create()
    Pipe(Loop([(1, "a", "extra")]), db.Insert(f"insert into {db.table} (id, name) values (%s, %s)"))
    with pytest.raises(ParameterError, match="2 positional placeholder.*supplies 3"):
        BotFrame.run()


def test_insert_passes_rows_downstream_only_after_their_batch_commits(db):
    db.create()
    rows = [{"id": i, "name": f"r{i}"} for i in range(23)]
    seen = []

    def check_committed(row):
        # a separate connection sees the row: its batch is committed
        seen.append((row["id"], db.sql(f"select count(*) from {db.table} where id = %s", (row["id"],))[0][0]))
        return row

    out = run(Loop(rows), db.Insert(f"insert into {db.table} (id, name) values ({{id}}, {{name}})",
                                    batch_size=5, flush_interval=None), check_committed)
    assert out == rows  # in order, including the final partial batch (flush)
    assert seen == [(i, 1) for i in range(23)]


def test_flush_interval_commits_a_slow_trickle_before_input_ends(db):
    db.create()
    visible = []

    async def source_gate(row):
        if row["id"] == 3:  # hold row 3 back until rows 0..2 are visible, or give up
            for _ in range(500):
                n = db.count()
                if n >= 3:
                    break
                await asyncio.sleep(0.01)
            visible.append(n)
        return row

    rows = [{"id": i, "name": f"r{i}"} for i in range(5)]
    out = run(Loop(rows), Step(source_gate, concurrency=1),
              db.Insert(f"insert into {db.table} (id, name) values ({{id}}, {{name}})",
                        batch_size=100, flush_interval=0.05))
    assert visible == [3]  # committed by the timer, not by a full batch or the end of input
    assert out == rows
    assert db.count() == 5


def test_failed_batch_commits_the_good_rows_and_names_every_bad_row(db):
    db.create()
    db.sql(f"insert into {db.table} (id, name) values (3, 'taken')")
    db.sql(f"insert into {db.table} (id, name) values (4, 'taken')")
    rows = [{"id": i, "name": "n"} for i in range(6)]
    out = []
    Pipe(Loop(rows), db.Insert(f"insert into {db.table} (id, name) values ({{id}}, {{name}})", batch_size=10),
         out.append)
    with pytest.raises(InsertError) as info:
        BotFrame.run()
    assert info.value.failed_items == [rows[3], rows[4]]
    assert info.value.retryable is False
    assert "2 of 6 row(s) could not be written" in str(info.value)
    assert db.sql(f"select id, name from {db.table} order by id") == [
        (0, "n"), (1, "n"), (2, "n"), (3, "taken"), (4, "taken"), (5, "n")]


def _named_bad_rows(report) -> list:
    """Every row the dead letters name as not written."""
    named = []
    for d in report.dead_letters:
        exc = d.exception
        named.extend(exc.failed_items if isinstance(exc, InsertError) else [d.item])
    return named


@pytest.mark.parametrize("policy", ["ignore", "retry"])
def test_no_row_of_a_failed_batch_vanishes(db, policy):
    """Each row ends in the table and downstream, or is named in an error."""
    db.create()
    for taken in (3, 5):
        db.sql(f"insert into {db.table} (id, name) values ({taken}, 'taken')")
    rows = [{"id": i, "name": "n"} for i in range(1, 8)]
    out = []
    config.retry_final_policy = "ignore"
    Pipe(Loop(rows), db.Insert(f"insert into {db.table} (id, name) values ({{id}}, {{name}})", batch_size=3,
                               flush_interval=None, on_error=policy), out.append)
    report = BotFrame.run()
    assert sorted(out, key=lambda r: r["id"]) == [rows[0], rows[1], rows[3], rows[5], rows[6]]
    assert sorted(_named_bad_rows(report), key=lambda r: r["id"]) == [rows[2], rows[4]]
    assert db.sql(f"select id, name from {db.table} order by id") == [
        (i, "taken" if i in (3, 5) else "n") for i in range(1, 8)]


def _transient_error(db):
    if db.kind == "sqlite":
        return sqlite3.OperationalError("database is locked")
    import pymysql

    return pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock")


def _flaky_insert(db, fail_calls):
    class Flaky(db.module.Insert):
        calls = 0

        async def _write(self, params_list, committing=lambda: None):
            Flaky.calls += 1
            if Flaky.calls in fail_calls:
                raise _transient_error(db)
            return await super()._write(params_list, committing)

    return Flaky


def test_transient_batch_failure_is_retried_for_the_whole_batch(db):
    db.create()
    Flaky = _flaky_insert(db, {1, 2})
    rows = [{"id": i, "name": "n"} for i in range(6)]
    out = []
    Pipe(Loop(rows), Flaky(f"insert into {db.table} (id, name) values ({{id}}, {{name}})", **db.kw,
                           batch_size=3, flush_interval=None, on_error="retry"), out.append)
    report = BotFrame.run()
    assert out == rows
    assert report.dead_letters == []
    assert db.sql(f"select id from {db.table} order by id") == [(i,) for i in range(6)]
    assert Flaky.calls == 4  # batch 1: two transient failures then success; batch 2: once


async def _trickle(x):
    await asyncio.sleep(0.12)  # slower than flush_interval: the timer writes each row alone
    return x


def test_transient_failure_of_a_timed_batch_is_retried(db):
    db.create()
    Flaky = _flaky_insert(db, {1})
    rows = [{"id": i, "name": "n"} for i in range(3)]
    out = []
    Pipe(Loop(rows), Step(_trickle, concurrency=1),
         Flaky(f"insert into {db.table} (id, name) values ({{id}}, {{name}})", **db.kw, batch_size=100,
               flush_interval=0.02, on_error="ignore"), out.append)
    report = BotFrame.run()
    assert (out, report.dead_letters) == (rows, [])
    assert db.sql(f"select id from {db.table} order by id") == [(0,), (1,), (2,)]


def test_failed_timed_batch_is_reported_for_its_own_rows_not_the_next_item(db):
    db.create()
    db.sql(f"insert into {db.table} (id, name) values (1, 'taken')")
    rows = [{"id": i, "name": "n"} for i in range(3)]
    out = []
    Pipe(Loop(rows), Step(_trickle, concurrency=1),
         db.Insert(f"insert into {db.table} (id, name) values ({{id}}, {{name}})", batch_size=100,
                   flush_interval=0.02, on_error="ignore"), out.append)
    report = BotFrame.run()
    assert out == [rows[0], rows[2]]
    [dead] = report.dead_letters
    # the bad row itself under its own error: not row 2 (written fine), not the flush
    assert dead.item == rows[1] and type(dead.exception).__name__ == "IntegrityError"
    [ins] = [stats for path, stats in report.steps.items() if "Insert:" in path]
    assert ins.failed == ins.dropped == 1
    assert db.sql(f"select id, name from {db.table} order by id") == [(0, "n"), (1, "taken"), (2, "n")]


def test_rows_accepted_before_a_failure_elsewhere_are_committed_at_close(db):
    db.create()
    accepted = asyncio.Event()
    class CountingInsert(db.module.Insert):
        calls = 0

        async def __call__(self, item):
            result = await super().__call__(item)
            CountingInsert.calls += 1
            if CountingInsert.calls == 10:
                accepted.set()
            return result

    async def hold(row):  # rows 10.. never reach the Insert
        if row["id"] >= 10:
            await asyncio.Event().wait()
        return row

    async def boom(_):
        await accepted.wait()
        raise RuntimeError("another pipe failed")

    rows = [{"id": i, "name": "n"} for i in range(40)]
    Pipe(Loop(rows), hold, CountingInsert(f"insert into {db.table} (id, name) values ({{id}}, {{name}})",
                                          **db.kw, batch_size=1000, flush_interval=None))
    Pipe(boom)
    with pytest.raises(RuntimeError, match="another pipe failed"):
        BotFrame.run()
    assert db.sql(f"select id from {db.table} order by id") == [(i,) for i in range(10)]


def test_query_streams_rows_only_as_fast_as_downstream_takes_them(db):
    db.create()
    Pipe(Loop([{"id": i, "name": "n"} for i in range(5000)]),
         db.Insert(f"insert into {db.table} (id, name) values ({{id}}, {{name}})", batch_size=1000))
    BotFrame.run()
    query = db.Query(f"select id from {db.table} order by id", fetch_size=50)
    produced = []
    real_rows = query._rows

    async def counting_rows(params):
        async for row in real_rows(params):
            produced.append(row["id"])
            yield row

    query._rows = counting_rows
    ahead = []

    async def slow(row):
        await asyncio.sleep(0)
        if row["id"] == 100:
            ahead.append(len(produced) - 101)  # rows pulled from the driver beyond those consumed
        return row["id"]

    out = run(query, Step(slow, concurrency=1))
    assert out == list(range(5000))
    assert len(ahead) == 1 and 0 <= ahead[0] <= 3  # one in flight, one queued: not the whole table


def test_insert_keeps_order_and_bounds_what_it_holds(db):
    db.create()
    n, batch = 3000, 50
    in_flight = {"produced": 0, "consumed": 0, "max": 0}

    def source():
        for i in range(n):
            in_flight["produced"] += 1
            yield {"id": i, "name": f"r{i}"}

    def after(row):
        in_flight["consumed"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["produced"] - in_flight["consumed"])
        return row

    out = run(source(), db.Insert(f"insert into {db.table} (id, name) values ({{id}}, {{name}})",
                                  batch_size=batch, flush_interval=None), after)
    assert out == [{"id": i, "name": f"r{i}"} for i in range(n)]
    assert db.count() == n
    # two batches waiting for the database plus one item per slot, never the source
    assert in_flight["max"] <= 3 * batch + db.module.Insert.concurrency


def test_abandoned_result_stream_releases_its_connection(db):
    db.create()
    db.sql(f"insert into {db.table} (id, name) values " + ", ".join(f"({i}, 'n')" for i in range(2000)))

    def fail_at_5(row):
        if row["id"] == 5:
            raise RuntimeError("stop reading")
        return row

    Pipe(db.Query(f"select id from {db.table} order by id", fetch_size=10), fail_at_5)
    with pytest.raises(RuntimeError, match="stop reading"):
        BotFrame.run()
    # no connection still holds the table (a MySQL metadata lock would block this)
    db.sql(f"drop table {db.table}")
    assert db.table not in db.tables()


async def test_node_reused_in_one_loop_after_an_abandoned_stream(db):
    db.create()
    db.sql(f"insert into {db.table} (id, name) values " + ", ".join(f"({i}, 'n')" for i in range(500)))
    loop_errors = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: loop_errors.append(ctx))
    q = db.Query(f"select id from {db.table} order by id", fetch_size=10)

    def fail_at_5(row):
        if row["id"] == 5:
            raise RuntimeError("stop reading")
        return row

    Pipe(q, fail_at_5)
    with pytest.raises(RuntimeError, match="stop reading"):
        await BotFrame.run_async()
    out = []
    Pipe(q, out.append)
    await BotFrame.run_async()
    assert [r["id"] for r in out] == list(range(500))
    gc.collect()  # finalise the stream abandoned by the first run, after its run closed
    for _ in range(5):
        await asyncio.sleep(0.01)
    assert loop_errors == []


def test_query_and_insert_on_the_same_database_in_one_pipe(db):
    source = db.create(table=db.table + "_a")
    target = db.create(table=db.table + "_b")
    db.sql(f"insert into {source} (id, name, score) values " + ", ".join(f"({i}, 'n{i}', {i})" for i in range(3000)))
    out = run(db.Query(f"select id, name, score from {source} order by id", fetch_size=100),
              db.Insert(f"insert into {target} (id, name, score) values ({{id}}, {{name}}, {{score}})",
                        batch_size=100))
    assert len(out) == 3000
    assert db.sql(f"select count(*), sum(score) from {target}") == [(3000, sum(range(3000)))]


def test_sql_syntax_error_raises_and_names_the_node(db):
    Pipe(db.Query("selec nothing from nowhere"))
    with pytest.raises(Exception) as info:
        BotFrame.run()
    assert "Query: selec nothing from nowhere" in " ".join(info.value.__notes__)


def test_ignore_policy_drops_the_failing_item_and_keeps_going(db):
    db.create()
    config.exception_policy = "ignore"
    out = run(Loop([{"id": 1, "name": "a"}, {"id": 2}, {"id": 3, "name": "c"}]),
              db.Insert(f"insert into {db.table} (id, name) values ({{id}}, {{name}})", batch_size=1))
    assert out == [{"id": 1, "name": "a"}, {"id": 3, "name": "c"}]
    assert db.sql(f"select id from {db.table} order by id") == [(1,), (3,)]


def test_nodes_are_reusable_across_runs(db):
    db.create()
    ins = db.Insert(f"insert into {db.table} (id, name) values ({{id}}, {{name}})")
    q = db.Query(f"select count(*) as n from {db.table}")
    for start in (0, 10):
        Pipe(Loop([{"id": i, "name": "x"} for i in range(start, start + 10)]), ins)
        BotFrame.run()
        assert run(q) == [{"n": start + 10}]


# ------------------------------------------------------------------ construction errors (no database needed)
@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
@pytest.mark.parametrize("sql, kw, exc, text", [
    ("select {a}, %s", {}, ValueError, "mixes named ({a}) and positional (%s)"),
    ("select * from t where name like '%{name}%'", {}, ValueError, "placeholder inside the string literal"),
    ("select * from `{table}`", {}, ValueError, "cannot be bound"),
    ("select {0}", {}, ValueError, "unsupported placeholder {0}"),
    ("select {a!r}", {}, ValueError, "unsupported placeholder {a!r}"),
    ("select 'abc", {}, ValueError, "unterminated ' quote"),
    ("", {}, TypeError, "non-empty SQL string"),
    ("select 1", {"fetch_size": 0}, ValueError, "'fetch_size' must be an int >= 1"),
    ("select 1", {"concurrency": 0}, ValueError, "'concurrency' must be an int >= 1"),
    ("select 1", {"bogus": 1}, TypeError, "unexpected keyword argument(s) bogus"),
])
def test_bad_query_arguments_are_rejected_at_construction(backend, sql, kw, exc, text):
    from rxbot.db import mysql, sqlite

    mod = sqlite if backend == "sqlite" else mysql
    with pytest.raises(exc) as info:
        mod.Query(sql, **kw)
    assert text in str(info.value) and "Query" in str(info.value)


@pytest.mark.parametrize("kw, text", [
    ({"batch_size": 0}, "'batch_size' must be an int >= 1"),
    ({"flush_interval": -1}, "'flush_interval' must be a positive number of seconds or None"),
])
def test_bad_insert_arguments_are_rejected(kw, text):
    from rxbot.db import mysql, sqlite

    for mod in (mysql, sqlite):
        with pytest.raises(ValueError, match="Insert: insert into t") as info:
            mod.Insert("insert into t values (%s)", **kw)
        assert text in str(info.value)


def test_mysql_connection_arguments_are_validated():
    from rxbot.db.mysql import Query

    with pytest.raises(ValueError, match="'port' must be <= 65535"):
        Query("select 1", port=70000)
    with pytest.raises(ValueError, match="'connect_timeout' must be a positive number"):
        Query("select 1", connect_timeout=0)


def test_labels_name_the_statement_and_hide_the_password():
    from rxbot.db.mysql import Insert, Query

    q = Query("select   *\n from users where id = {id}", password="s3cret")
    assert q.label() == "Query: select * from users where id = {id}"
    assert "s3cret" not in repr(q) and "s3cret" not in q.where()
    assert Insert("insert into a_really_long_table_name (x, y) values ({x}, {y})").label() == \
        "Insert: insert into a_really_long_table_name..."
    assert Query("select 1", name="ping").label() == "ping"


# ------------------------------------------------------------------ connection failures (MySQL)
@pytest.mark.parametrize("batch_size", [1, 3])
def test_mysql_literal_percent_after_values_survives_the_bulk_insert(mysql_params, batch_size):
    """aiomysql appends the tail of INSERT ... VALUES (...) unformatted: %% must not reach it."""
    db = Backend("mysql", mysql_params)
    try:
        db.create("id integer primary key, name varchar(50), day varchar(20)")
        rows = [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}, {"id": 2, "name": "c"}]
        run(Loop(rows), db.Insert(
            f"insert into {db.table} (id, name) values ({{id}}, {{name}}) on duplicate key update "
            "name = '50%', day = date_format('2024-05-06', '%Y-%m')", batch_size=batch_size))
        assert db.sql(f"select id, name, day from {db.table} order by id") == [(1, "50%", "2024-05"), (2, "c", None)]
        # a tail with its own placeholder is bound too (row by row, not the bulk path)
        run(Loop([{"id": 2, "name": "d"}, {"id": 3, "name": "e"}]), db.Insert(
            f"insert into {db.table} (id, name) values ({{id}}, {{name}}) on duplicate key update "
            "day = concat({name}, '%')", batch_size=batch_size))
        assert db.sql(f"select id, name, day from {db.table} where id > 1 order by id") == [
            (2, "c", "d%"), (3, "e", None)]
    finally:
        db.close()


async def test_wrong_password_is_a_clear_error_from_run_async(mysql_params):
    from rxbot.db.mysql import Query

    params = dict(mysql_params, password="definitely-wrong")
    Pipe(Query("select 1", **params))
    with pytest.raises(DatabaseConnectionError) as info:
        await asyncio.wait_for(BotFrame.run_async(), timeout=10)
    msg = str(info.value)
    assert msg.startswith("Query: select 1: cannot connect to MySQL at ")
    assert f"{params['host']}:{params['port']}" in msg and "1045" in msg and "Access denied" in msg
    assert "definitely-wrong" not in msg


def test_refused_connection_is_a_clear_error(unused_tcp_port):
    from rxbot.db.mysql import Insert

    Pipe(Loop([1]), Insert("insert into t values (%s)", port=unused_tcp_port))
    with pytest.raises(DatabaseConnectionError, match=f"127.0.0.1:{unused_tcp_port}/test.*2003"):
        BotFrame.run()


async def test_silent_server_times_out_instead_of_hanging():
    async def accept_and_say_nothing(reader, writer):
        await reader.read()  # never answers the MySQL handshake
        writer.close()

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        from rxbot.db.mysql import Query

        Pipe(Query("select 1", port=port, connect_timeout=0.2))
        with pytest.raises(DatabaseConnectionError, match=f"timed out after 0.2s connecting to MySQL at root@127.0.0.1:{port}"):
            await asyncio.wait_for(BotFrame.run_async(), timeout=10)
    finally:
        server.close()
        await server.wait_closed()


# ------------------------------------------------------------------ SQLite specifics
def test_sqlite_memory_database_is_shared_by_the_nodes_of_a_run():
    from rxbot.db.sqlite import Insert, Query

    rows = [{"id": i, "name": f"n{i}"} for i in range(3)]
    out = run(Insert("create table m (id integer, name text)", path=":memory:"),  # DDL, then item 0 passes on
              lambda _: rows,
              Insert("insert into m (id, name) values ({id}, {name})", path=":memory:"),
              Step(Query("select count(*) as n from m", path=":memory:"), concurrency=1))
    assert out == [{"n": 3}] * 3
    # a fresh run gets a fresh :memory: database (the shared one closed with the run)
    assert run(Query("select count(*) as n from sqlite_master", path=":memory:")) == [{"n": 0}]


def test_sqlite_backslash_is_not_an_escape(tmp_path):
    from rxbot.db.sqlite import Query

    assert run(Loop([1]), Query("select 'C:\\' as p, ? as q", path=tmp_path / "b.db")) == [{"p": "C:\\", "q": 1}]


@pytest.mark.parametrize("where", ["missing-dir", "a-directory"])
def test_sqlite_unopenable_path_is_a_clear_error(tmp_path, where):
    from rxbot.db.sqlite import Query

    bad = tmp_path / "no" / "such" / "x.db" if where == "missing-dir" else tmp_path
    Pipe(Query("select 1", path=bad))
    with pytest.raises(DatabaseConnectionError, match=f"Query: select 1: cannot open SQLite database '{bad}'"):
        BotFrame.run()


# ------------------------------------------------------------------ placeholder translation (pure)
@pytest.mark.parametrize("sql, mysql_sql, sqlite_sql, names, npos", [
    ('select * from t where a="{a}" and b={b}', "select * from t where a=%(a)s and b=%(b)s",
     "select * from t where a=:a and b=:b", ("a", "b"), 0),
    ("insert into t values ('{a}', '{b}', '{a}')", "insert into t values (%(a)s, %(b)s, %(a)s)",
     "insert into t values (:a, :b, :a)", ("a", "b"), 0),
    ("select %s, %s", "select %s, %s", "select ?, ?", (), 2),
    ("select ?", "select %s", "select ?", (), 1),
    ("select %(x)s, :y", "select %(x)s, %(y)s", "select :x, :y", ("x", "y"), 0),
    ("select x % 2, 'a%' from t", "select x %% 2, 'a%%' from t", "select x % 2, 'a%' from t", (), 0),
    ("select '100%%', %s", "select '100%%', %s", "select '100%', ?", (), 1),
    ("select '{{lit}}', {a}", "select '{lit}', %(a)s", "select '{lit}', :a", ("a",), 0),
    ("select '{\"json\": 1}'", "select '{\"json\": 1}'", "select '{\"json\": 1}'", (), 0),
    ("select 'it''s {a}?' -- {b} ?\n, \"x\"", "select 'it''s {a}?' -- {b} ?\n, \"x\"", None, (), 0),
    ("select @v := 1, '12:30', ':not' /* :c ? */", "select @v := 1, '12:30', ':not' /* :c ? */",
     "select @v := 1, '12:30', ':not' /* :c ? */", (), 0),
])
def test_placeholder_translation(sql, mysql_sql, sqlite_sql, names, npos):
    if sqlite_sql is None:
        with pytest.raises(ValueError, match="placeholder inside the string literal"):
            Statement.parse(sql)
        return
    st = Statement.parse(sql)
    assert st.render("pyformat") == mysql_sql
    assert st.render("sqlite") == sqlite_sql
    assert (st.names, st.positional) == (names, npos)


MYSQL_INJECTION = "select id, name from {t} where id = 1--'\n and name = {{x}} -- '"


def test_double_dash_without_space_is_not_a_mysql_comment(mysql_params):
    """MySQL reads ``1--'...`` as 1 minus minus a string literal: {x} there is inside a
    literal the server sees, so it cannot be bound and the statement is rejected."""
    db = Backend("mysql", mysql_params)
    try:
        db.create()
        db.sql(f"insert into {db.table} (id, name) values (1, 'a'), (2, 'secret')")
        with pytest.raises(ValueError, match="placeholder inside the string literal"):
            db.Query(MYSQL_INJECTION.format(t=db.table))
        # {a}--{b} is a - (-b) in MySQL: both values bound, nothing commented out
        assert run(Loop([{"a": 5, "b": 2}]), db.Query("select {a}--{b} as r")) == [{"r": 7}]
        # the body of /*! ... */ runs on the server: its placeholder is bound
        assert run(Loop([{"a": 2}]), db.Query("select /*! {a} + */ 1 as r")) == [{"r": 3}]
        # %s followed by an identifier character is a modulo, not a placeholder
        assert run(db.Query("select 10%sqrt(9) as r")) == [{"r": 1.0}]
        evil = " or 1=1 or "
        assert run(Loop([{"x": evil}]), db.Query(f"select id from {db.table} where name = {{x}} -- '")) == []
        assert db.count() == 2
    finally:
        db.close()


def test_comment_rules_follow_the_dialect():
    my = lambda sql: Statement.parse(sql, "Q", dialect="mysql")
    lite = lambda sql: Statement.parse(sql, "Q", dialect="sqlite")
    assert my("select {a}--{b}").names == ("a", "b")
    assert lite("select {a}--{b}").names == ("a",)  # any -- starts a comment in SQLite
    assert my("select {a} -- {b}").names == ("a",)
    assert my("select {a}--\t{b}").names == ("a",)
    assert my("select {a} # {b}").names == ("a",)
    assert lite("select {a} # {b}").names == ("a", "b")  # no # comments in SQLite
    assert my("select /*!50000 {a} */ 1").render("pyformat") == "select /*!50000 %(a)s */ 1"
    assert my("select /*M! {a} */ 1").names == ("a",)
    assert lite("select /*! {a} */ 1").names == ()
    assert my("select /* {a} */ 1").names == ()
    with pytest.raises(ValueError, match="placeholder inside the string literal"):
        my("select id from t where id = 1--'\n and name = {x} -- '")
    assert lite("select id from t where id = 1--'\n and name = {x} -- '").names == ("x",)
    # the node picks its back end's rules
    from rxbot.db import sqlite as lite_nodes
    assert lite_nodes.Query("select {a} # {b}", path=":memory:").statement.names == ("a", "b")


@pytest.mark.parametrize("sql", [
    "select * from t where name like '%(pat)s%%'",
    "insert into t (a) values ('%(a)s-suffix')",
    "select * from t where a like '%s%%'",
    "select * from t where a = %s and b like 'x%s'",
])
def test_percent_placeholder_inside_a_longer_literal_is_rejected(sql):
    for dialect in ("mysql", "sqlite"):
        with pytest.raises(ValueError, match="placeholder inside the string literal.*bind the whole value"):
            Statement.parse(sql, "Q", dialect=dialect)


def test_percent_s_as_plain_text_where_it_cannot_be_a_placeholder():
    # no %-placeholders and no %% escape: MySQL's date format %s (seconds) is text
    st = Statement.parse("select date_format(d, '%H:%i:%s'), {a}", "Q")
    assert (st.names, st.render("pyformat")) == (("a",), "select date_format(d, '%%H:%%i:%%s'), %(a)s")
    # %s followed by an identifier character is not a placeholder
    for sql in ("select 10%sqrt(9)", "select id%sz from t", "select 10%s_x, %s"):
        st = Statement.parse(sql, "Q")
        assert st.positional == sql.count(", %s"), sql
    assert Statement.parse("select 10%sqrt(9)", "Q").render("pyformat") == "select 10%%sqrt(9)"
    assert Statement.parse("select {a} + 10%sqrt(9)", "Q").names == ("a",)


def test_values_extraction_rules():
    named = Statement.parse("select {a}, {b}", "Q")
    assert named.values({"a": 1, "b": None, "c": 3}) == {"a": 1, "b": None}

    class O:
        a, b = "x", "y"

    assert named.values(O()) == {"a": "x", "b": "y"}
    with pytest.raises(ParameterError, match=r"Q: no value for placeholder \{b\}.*has no attribute 'b'"):
        named.values(type("P", (), {"a": 1})())
    with pytest.raises(ParameterError, match="need a dict or an object"):
        named.values([1, 2])
    pos = Statement.parse("select %s", "Q")
    assert pos.values("v") == ("v",) and pos.values(("v",)) == ("v",) and pos.values(b"raw") == (b"raw",)
    with pytest.raises(ParameterError, match="not a mapping"):
        pos.values({"a": 1})
    two = Statement.parse("select ?, ?", "Q")
    assert two.values([1, 2]) == (1, 2)
    with pytest.raises(ParameterError, match="must be a tuple/list of that length"):
        two.values(5)
    assert Statement.parse("select 1").values(0) == ()


# ------------------------------------------------------------------ the examples, as scripts
EXAMPLE_OUTPUT = {
    "mysql1.py": [
        "ex1----",
        "class user alice,localhost,root",
        "class user bob,%,app",
        "class user carol,10.0.0.%,root",
        "class user mallory,x'); DROP TABLE users; --,guest",
        "ex2----param bind with input",
        "{'n': 0}", "{'n': 1}", "{'n': 2}",
        "ex3----param bind with dict",
        "{'name': 'alice', 'host': 'localhost'}",
        "{'name': 'carol', 'host': '10.0.0.%'}",
        "{'name': 'mallory', 'host': \"x'); DROP TABLE users; --\"}",
    ],
    "mysql2.py": ["ex1----"] + [f"class user user{i:02d},10.0.0.{i},{'root' if i % 3 == 0 else 'app'}"
                                for i in range(10)] + ["copied 10 rows, 4 of them root"],
}


def _sections(lines):
    """Rows from concurrent queries may interleave: compare each section as a sorted list."""
    out, current = [], []
    for line in lines:
        if line.startswith("ex") and line.endswith(("----", "input", "dict")):
            out.append(sorted(current))
            current = [line]
        else:
            current.append(line)
    out.append(sorted(current))
    return out


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
@pytest.mark.parametrize("script", ["mysql1.py", "mysql2.py"])
def test_example_script_runs(script, backend, request):
    args = [sys.executable, str(ROOT / "examples" / script)]
    if backend == "sqlite":
        args.append("--sqlite")
    else:
        request.getfixturevalue("mysql_params")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr
    assert _sections(proc.stdout.splitlines()) == _sections(EXAMPLE_OUTPUT[script])


def test_query_with_no_rows_emits_nothing_and_migration_md_says_so(db):
    """databot passed aiomysql's ``()`` on for an empty result (a list of rows otherwise),
    which a step written for rows failed on; rxbot emits no item, and docs/migration.md
    lists the difference (issue 27)."""
    sql = "select 1 as one from dual where false" if db.kind == "mysql" else "select 1 as one where 0"
    seen = run(db.Query(sql))
    assert seen == []
    rows = [line for line in (ROOT / "docs" / "migration.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("| `Query` with no rows |")]
    assert len(rows) == 1 and "`()`" in rows[0] and "| nothing |" in rows[0]


async def test_rows_waiting_for_room_are_buffered_in_order_and_a_cancelled_one_is_never_written(tmp_path):
    """While two batches wait for the database, further rows wait with their calls; when
    room opens they join the buffer in arrival order. A call cancelled while it waits (a
    stopping run) leaves no row behind: not written, not passed on."""
    from rxbot.db.sqlite import Insert

    behind = asyncio.Event()

    class SlowInsert(Insert):  # the real SQLite write, once the "database" catches up
        async def _write(self, params_list, committing=lambda: None):
            await behind.wait()
            await super()._write(params_list, committing)

    path = str(tmp_path / "w.db")
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("create table t (seq integer primary key autoincrement, id integer)")  # seq: write order
    node = SlowInsert("insert into t (id) values ({id})", path=path, batch_size=2, flush_interval=None)
    await node.node_init()
    try:
        calls = [asyncio.create_task(node({"id": i})) for i in range(10)]
        for _ in range(5):
            await asyncio.sleep(0)
        # 0 and 2 were buffered at once; 1 and 3 commit their batches; 4.. wait for room
        assert [c.done() for c in calls] == [True, False, True] + [False] * 7
        calls[5].cancel()  # rows 4.. wait for room; 5 and 8 are cancelled while waiting
        calls[8].cancel()
        await asyncio.sleep(0)
        behind.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
        rest = await node.flush()
    finally:
        behind.set()
        await node.node_close()
    passed = [row["id"] for r in results + [rest] if isinstance(r, list) for row in r]
    assert [type(r).__name__ for r in (results[5], results[8])] == ["CancelledError", "CancelledError"]
    assert passed == [0, 1, 2, 3, 4, 6, 7, 9]
    assert [r[0] for r in raw.execute("select id from t order by seq")] == [0, 1, 2, 3, 4, 6, 7, 9]
    raw.close()


@pytest.mark.timeout(60)
def test_closing_an_insert_never_waits_on_aiomysqls_bookkeeping(mysql_params, monkeypatch, caplog):
    """At the end of a run the pool's connections are closed (terminate); aiomysql's
    ``wait_closed`` then waits for a wake-up that a connect or release cut off by a stop
    may never send. Here a connect is left "in progress" at close, as such a stop leaves
    it: the run still ends (after the close deadline, with a warning), the row written."""
    import aiomysql
    import pymysql

    from rxbot.db import mysql

    table = f"close_{uuid.uuid4().hex[:10]}"
    raw = pymysql.connect(host=mysql_params["host"], port=mysql_params["port"], user=mysql_params["user"],
                          password=mysql_params["password"], database=mysql_params["db"], autocommit=True)
    with raw.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (n INT)")
    terminate = aiomysql.Pool.terminate

    def terminate_with_a_connect_in_flight(pool):
        terminate(pool)
        pool._acquiring += 1  # what a cancelled connect leaves for wait_closed to wait on

    monkeypatch.setattr(aiomysql.Pool, "terminate", terminate_with_a_connect_in_flight)
    monkeypatch.setattr(mysql, "POOL_CLOSE_SECONDS", 0.5)
    try:
        Pipe([{"n": 1}], mysql.Insert(f"INSERT INTO {table} (n) VALUES ({{n}})", **mysql_params))
        BotFrame.run()
        with raw.cursor() as cur:
            cur.execute(f"SELECT n FROM {table}")
            assert cur.fetchall() == ((1,),)
        assert "the MySQL pool did not report closed within 0.5s" in caplog.text
    finally:
        with raw.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
        raw.close()


@pytest.mark.timeout(60)
async def test_a_failed_write_wakes_the_write_waiting_for_the_pools_only_connection(mysql_params):
    """aiomysql's release() of a connection it closes (every failed write closes its own)
    wakes nobody: a write waiting for a connection of the full pool waited forever with
    nothing scheduled (seen as a stopped run's close hanging in CI). give_back() wakes it."""
    import pymysql

    from rxbot.db.mysql import Insert

    table = f"rxbot_wake_{uuid.uuid4().hex[:12]}"
    raw = pymysql.connect(**{k: mysql_params[k] for k in ("host", "port", "user", "password")},
                          database=mysql_params["db"], autocommit=True)
    raw.cursor().execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, CHECK (id <> 3))")
    node = Insert(f"INSERT INTO {table} (id) VALUES (%s)", **mysql_params, pool_size=1, batch_size=1,
                  flush_interval=None)
    await node.node_init()
    try:
        failing = asyncio.create_task(node._write([(3,)]))  # holds the one connection, then fails
        waiting = asyncio.create_task(node._write([(1,)]))  # waits for that connection
        done, pending = await asyncio.wait([failing, waiting], timeout=30)
        for task in pending:
            task.cancel()
        assert not pending, "the write waiting for the pool's connection was never woken"
        assert isinstance(failing.exception(), pymysql.err.OperationalError)
        assert waiting.exception() is None
    finally:
        await node.node_close()
        cur = raw.cursor()
        cur.execute(f"SELECT id FROM {table}")
        stored = [r[0] for r in cur.fetchall()]
        cur.execute(f"DROP TABLE {table}")
        raw.close()
    assert stored == [1]


@pytest.mark.timeout(90)
def test_rows_left_at_close_are_reported_when_the_database_does_not_answer_within_close_timeout(mysql_params):
    """A stopped run writes the rows left in an Insert at close, but never waits on the
    database forever: here another session holds a lock the write needs (MariaDB would
    make it wait innodb_lock_wait_timeout, 50 s, then the write would be retried).
    After close_timeout the rows are reported failed, each once, and none is stored."""
    import pymysql

    from rxbot.db.base import CloseTimeoutError
    from rxbot.db.mysql import Insert

    table = f"rxbot_deadline_{uuid.uuid4().hex[:12]}"
    connect = {k: mysql_params[k] for k in ("host", "port", "user", "password")}
    admin = pymysql.connect(**connect, database=mysql_params["db"], autocommit=True)
    admin.cursor().execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)")
    holder = pymysql.connect(**connect, database=mysql_params["db"], autocommit=False)
    holder.cursor().execute(f"INSERT INTO {table} (id) VALUES (5)")  # row lock on 5, not committed

    def source():
        yield from range(10)
        raise RuntimeError("the source broke")  # the run stops with 10 rows buffered

    insert = Insert(f"INSERT INTO {table} (id) VALUES (%s)", **mysql_params, batch_size=100,
                    flush_interval=None, close_timeout=1, name="insert")
    p = Pipe(source(), insert)
    try:
        with pytest.raises(RuntimeError, match="the source broke"):
            p.run()
    finally:
        holder.rollback()
        holder.close()
        cur = admin.cursor()
        cur.execute(f"SELECT id FROM {table}")
        stored = [r[0] for r in cur.fetchall()]
        cur.execute(f"DROP TABLE {table}")
        admin.close()
    s = p.report.find("insert")
    letters = [e for e in p.report.dead_letters if e.step == "insert"]
    assert stored == []
    assert sorted(e.item for e in letters) == list(range(10))
    assert all(isinstance(e.exception, CloseTimeoutError) for e in letters)
    assert "close_timeout=1s" in str(letters[0].exception)
    assert (s.inp, s.failed, s.out, s.closed) == (10, 10, 0, 0)


def test_close_timeout_is_validated():
    from rxbot.db.sqlite import Insert

    with pytest.raises(ValueError, match="close_timeout"):
        Insert("insert into t values ({a})", close_timeout=-1)
