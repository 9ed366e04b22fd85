"""Exact values into MySQL and SQLite (issue 26, item 1): every value an Insert or Query
binds is converted exactly or refused with an error naming the step, the placeholder and
the type; nothing is ever stored as its ``str()``.

The database is the real one (the local MariaDB, a SQLite file) and is checked with the raw
driver. The property test at the end draws values of every kind: whatever the adapter
accepts must read back equal from a column of the matching type, whatever it refuses must
raise the named error.
"""
from __future__ import annotations

import datetime
import enum
import fractions
import json
import math
import sqlite3
import uuid
from decimal import Decimal

import pymysql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rxbot import Pipe, config
from rxbot.db import UnsupportedValueError, register_adapter, unregister_adapter
from rxbot.db.mysql_values import MySQLValues, session_offset
from rxbot.db.sqlite_values import SQLiteValues

UTC = datetime.timezone.utc


class Thing:
    """A user object with nothing a database could store."""


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Shouty(str):
    def __str__(self) -> str:  # must never be what is stored
        return "SHOUT"


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


# ------------------------------------------------------------------ harness
class Db:
    """A one-column table ``v <column type>`` (plus ``id``) on one back end."""

    def __init__(self, kind: str, kw: dict) -> None:
        self.kind, self.kw = kind, kw
        self.table = f"rxbot_vals_{uuid.uuid4().hex[:12]}"
        if kind == "sqlite":
            from rxbot.db import sqlite as mod

            self.raw = sqlite3.connect(kw["path"], isolation_level=None)
        else:
            from rxbot.db import mysql as mod

            self.raw = pymysql.connect(host=kw["host"], port=kw["port"], user=kw["user"], password=kw["password"],
                                       database=kw["db"], autocommit=True)
        self.mod = mod

    def sql(self, statement: str) -> list:
        if self.kind == "sqlite":
            return [tuple(r) for r in self.raw.execute(statement).fetchall()]
        with self.raw.cursor() as cur:
            cur.execute(statement)
            return [tuple(r) for r in cur.fetchall()]

    def make(self, column: str) -> None:
        self.sql(f"drop table if exists {self.table}")
        self.sql(f"create table {self.table} (id integer primary key, v {column})")

    def insert(self, value, **kw) -> list:
        out = []
        config.exception_policy = "raise"
        Pipe([{"id": 1, "v": value}],
             self.mod.Insert(f"insert into {self.table} (id, v) values ({{id}}, {{v}})", **self.kw, **kw),
             out.append).run()
        return out

    def stored(self) -> list:
        return self.sql(f"select v from {self.table} order by id")

    def close(self) -> None:
        self.sql(f"drop table if exists {self.table}")
        self.raw.close()


@pytest.fixture(params=["sqlite", "mysql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        d = Db("sqlite", {"path": str(tmp_path / "v.db")})
    else:
        d = Db("mysql", request.getfixturevalue("mysql_params"))
    yield d
    d.close()


@pytest.fixture
def mysql(mysql_params):
    d = Db("mysql", mysql_params)
    yield d
    d.close()


@pytest.fixture
def sqlite_db(tmp_path):
    d = Db("sqlite", {"path": str(tmp_path / "v.db")})
    yield d
    d.close()


@pytest.fixture
def registered():
    """Adapters registered by a test are removed after it."""
    added = []

    def register(cls, fn, database=None):
        register_adapter(cls, fn, database=database)
        added.append((cls, database))

    yield register
    for cls, database in added:
        unregister_adapter(cls, database=database)


# ------------------------------------------------------------------ item 1: one test per class
REFUSED = [
    ("user object", Thing(), "test_db_values.Thing", "has no exact"),
    ("enum", Color.RED, "test_db_values.Color", "an Enum member"),
    ("int enum", Level.HIGH, "test_db_values.Level", "an Enum member"),
    ("complex", 1 + 2j, "complex", "store .real and .imag"),
    ("fraction", fractions.Fraction(1, 3), "fractions.Fraction", "convert it yourself"),
    ("lone surrogate", "a\udcffb", "str", "lone surrogate"),
    ("nan", float("nan"), "float", "nan"),
    ("dict with an int key", {1: "a"}, "dict", "the key 1"),
    ("dict holding an object", {"a": Thing()}, "dict", "holds a test_db_values.Thing in its JSON"),
    ("aware time", datetime.time(10, 0, tzinfo=UTC), "datetime.time", "timezone-aware"),
]


@pytest.mark.parametrize("case, value, type_name, why", REFUSED, ids=[c[0] for c in REFUSED])
def test_a_value_without_an_exact_form_is_refused_naming_step_placeholder_and_type(db, case, value,
                                                                                   type_name, why):
    db.make("text")
    with pytest.raises(UnsupportedValueError) as caught:
        db.insert(value)
    error = caught.value
    assert error.step.startswith("Insert: insert into rxbot_vals_")
    assert error.placeholder == "{v}"
    assert error.type_name == type_name
    assert why in error.reason
    assert f"cannot bind {{v}}: a value of type {type_name} " in str(error)
    assert db.stored() == []  # nothing written, in particular no str() of it


MYSQL_ONLY_REFUSED = [
    ("inf", float("inf"), "float", "no NaN or infinity"),
    ("decimal nan", Decimal("NaN"), "decimal.Decimal", "no NaN or infinity"),
    ("decimal infinity", Decimal("-Infinity"), "decimal.Decimal", "no NaN or infinity"),
    ("decimal of 66 digits", Decimal(10 ** 65), "decimal.Decimal", "at most 65 digits"),
    ("decimal with 39 decimals", Decimal("1E-39"), "decimal.Decimal", "38 after the point"),
    ("int of 66 digits", 10 ** 65, "int", "at most 65"),
    ("timedelta beyond TIME", datetime.timedelta(hours=839), "datetime.timedelta", "TIME range"),
    ("nested list", [[1, 2]], "list", "nested list"),
    ("empty list", [], "list", "empty"),
]


@pytest.mark.parametrize("case, value, type_name, why", MYSQL_ONLY_REFUSED, ids=[c[0] for c in MYSQL_ONLY_REFUSED])
def test_mysql_refuses_what_it_cannot_store_exactly(mysql, case, value, type_name, why):
    mysql.make("text")
    with pytest.raises(UnsupportedValueError, match=r"Insert: .*cannot bind \{v\}") as caught:
        mysql.insert(value)
    assert caught.value.type_name == type_name and why in caught.value.reason
    assert mysql.stored() == []


SQLITE_ONLY_REFUSED = [
    ("int beyond 64 bits", 2 ** 63, "int", "64-bit integer range"),
    ("decimal", Decimal("1.10"), "decimal.Decimal", "register_adapter(Decimal, str"),
    ("timedelta", datetime.timedelta(seconds=3), "datetime.timedelta", "no SQLite type"),
    ("list", [1, 2], "list", "one value each"),
]


@pytest.mark.parametrize("case, value, type_name, why", SQLITE_ONLY_REFUSED,
                         ids=[c[0] for c in SQLITE_ONLY_REFUSED])
def test_sqlite_refuses_what_it_cannot_store_exactly(sqlite_db, case, value, type_name, why):
    sqlite_db.make("")
    with pytest.raises(UnsupportedValueError, match=r"Insert: .*cannot bind \{v\}") as caught:
        sqlite_db.insert(value)
    assert caught.value.type_name == type_name and why in caught.value.reason
    assert sqlite_db.stored() == []


def test_positional_placeholders_are_named_by_position(db):
    db.make("text")
    config.exception_policy = "raise"
    with pytest.raises(UnsupportedValueError, match=r"cannot bind placeholder 2 \(positional\): a value of "
                                                    r"type complex"):
        Pipe([(1, 2j)], db.mod.Insert(f"insert into {db.table} (id, v) values (%s, %s)", **db.kw)).run()


def test_query_refuses_like_insert(db):
    db.make("text")
    config.exception_policy = "raise"
    with pytest.raises(UnsupportedValueError, match=r"Query: select v from .*cannot bind \{v\}: a value of "
                                                    r"type test_db_values.Color"):
        Pipe([{"v": Color.RED}], db.mod.Query(f"select v from {db.table} where v = {{v}}", **db.kw)).run()


def test_a_refused_value_fails_only_its_own_row(db):
    db.make("text")
    out = []
    config.exception_policy = "ignore"
    Pipe([{"id": 1, "v": "a"}, {"id": 2, "v": Thing()}, {"id": 3, "v": "c"}],
         db.mod.Insert(f"insert into {db.table} (id, v) values ({{id}}, {{v}})", **db.kw), out.append).run()
    assert [row["id"] for row in out] == [1, 3]
    assert db.stored() == [("a",), ("c",)]


# ------------------------------------------------------------------ exact conversions
def test_aware_datetime_is_converted_to_the_session_zone_mysql(mysql):
    """The same instant: 12:00+02:00 is 10:00 in a '+00:00' session, 15:30 in '+05:30'."""
    mysql.make("datetime(6)")
    aware = datetime.datetime(2024, 3, 31, 12, 0, 0, 250000, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    mysql.insert(aware)  # the local server's session zone is SYSTEM (UTC)
    assert mysql.stored() == [(datetime.datetime(2024, 3, 31, 10, 0, 0, 250000),)]
    mysql.sql(f"delete from {mysql.table}")
    mysql.insert(aware, time_zone="+05:30")
    assert mysql.stored() == [(datetime.datetime(2024, 3, 31, 15, 30, 0, 250000),)]


def test_aware_datetime_in_a_timestamp_column_keeps_its_instant_mysql(mysql):
    mysql.make("timestamp(6) null")
    aware = datetime.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone(datetime.timedelta(hours=-7)))
    mysql.insert(aware, time_zone="+09:00")
    (unix,), = mysql.sql(f"select unix_timestamp(v) from {mysql.table}")
    assert Decimal(unix) == Decimal(str(aware.timestamp())).quantize(Decimal("0.000001"))


def test_aware_datetime_is_refused_when_the_session_zone_is_not_a_fixed_offset():
    adapter = MySQLValues("Insert: x", offset=session_offset("Europe/Berlin", "CET"), zone="Europe/Berlin")
    with pytest.raises(UnsupportedValueError, match=r"session time zone 'Europe/Berlin' is not a fixed offset.*"
                                                    r"time_zone='\+00:00'"):
        adapter.row({"v": datetime.datetime(2024, 1, 1, tzinfo=UTC)})
    assert session_offset("SYSTEM", "CET") is None and session_offset("SYSTEM", "UTC") == datetime.timedelta(0)
    assert session_offset("-03:30", "CET") == -datetime.timedelta(hours=3, minutes=30)


def test_time_zone_argument_is_validated(mysql_params):
    from rxbot.db.mysql import Insert

    with pytest.raises(ValueError, match=r"argument 'time_zone' must be a fixed UTC offset like '\+00:00'.*"
                                         r"got 'Europe/Berlin'"):
        Insert("insert into t values ({a})", **mysql_params, time_zone="Europe/Berlin")


def test_aware_datetime_keeps_its_offset_in_sqlite(sqlite_db):
    sqlite_db.make("text")
    aware = datetime.datetime(2024, 3, 31, 12, 0, 0, 250000, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    sqlite_db.insert(aware)
    (text,), = sqlite_db.stored()
    assert text == "2024-03-31 12:00:00.250000+02:00"
    assert datetime.datetime.fromisoformat(text) == aware
    (julian_utc,), = sqlite_db.sql(f"select datetime(v) from {sqlite_db.table}")
    assert julian_utc == "2024-03-31 10:00:00"  # SQLite's date functions read the offset


def test_subclasses_are_stored_as_their_base_value_never_their_str(db):
    db.make("text")
    db.insert(Shouty("quiet"))
    assert db.stored() == [("quiet",)]


def test_inf_round_trips_in_sqlite(sqlite_db):
    sqlite_db.make("real")
    sqlite_db.insert(float("-inf"))
    assert sqlite_db.stored() == [(float("-inf"),)]


def test_mysql_in_list_elements_are_adapted(mysql):
    mysql.make("text")
    mysql.sql(f"insert into {mysql.table} values (1, 'a'), (2, 'quiet'), (3, 'c')")
    found = []
    Pipe([{"ids": {2, 3}, "names": (Shouty("quiet"), "c")}],
         mysql.mod.Query(f"select id from {mysql.table} where id in {{ids}} and v in {{names}} order by id",
                         **mysql.kw), found.append).run()
    assert found == [{"id": 2}, {"id": 3}]


# ------------------------------------------------------------------ user adapters
def test_registered_enum_adapter_stores_the_value(db, registered):
    registered(Color, lambda c: c.value)
    db.make("text")
    db.insert(Color.RED)
    assert db.stored() == [("red",)]


def test_registering_enum_covers_every_enum_including_int_enums(db, registered):
    registered(enum.Enum, lambda m: m.name)
    db.make("text")
    db.insert(Level.HIGH)  # an int too, but the registration for Enum comes first
    assert db.stored() == [("HIGH",)]


def test_registered_adapter_for_a_user_type(db, registered):
    registered(Point, lambda p: {"x": p.x, "y": p.y})
    db.make("text")
    db.insert(Point(1, 2))
    (text,), = db.stored()
    assert json.loads(text) == {"x": 1, "y": 2}


def test_adapter_for_one_database_only(sqlite_db, registered):
    registered(Decimal, str, database="sqlite")
    sqlite_db.make("text")
    sqlite_db.insert(Decimal("1.10"))
    assert sqlite_db.stored() == [("1.10",)]
    assert MySQLValues("Insert").row({"v": Decimal("1.10")}) == {"v": Decimal("1.10")}


def test_an_adapter_that_returns_an_unstorable_value_is_refused(db, registered):
    registered(Point, lambda p: p)  # returns itself: no loop, refused by the built-in rules
    db.make("text")
    with pytest.raises(UnsupportedValueError, match=r"cannot bind \{v\}: a value of type test_db_values.Point "
                                                    r"has no exact .* \(returned by its adapter"):
        db.insert(Point(1, 2))


def test_an_adapter_that_raises_is_named(db, registered):
    def broken(p):
        raise ValueError("no")

    registered(Point, broken)
    db.make("text")
    with pytest.raises(UnsupportedValueError, match=r"its adapter 'broken' raised ValueError: no"):
        db.insert(Point(1, 2))


def test_register_adapter_checks_its_arguments():
    with pytest.raises(TypeError, match="argument 'cls' must be a class"):
        register_adapter(Color.RED, str)
    with pytest.raises(TypeError, match="argument 'fn' must be callable"):
        register_adapter(Point, "str")
    with pytest.raises(ValueError, match="argument 'database' must be one of"):
        register_adapter(Point, str, database="postgres")


def test_numpy_scalars_are_converted_exactly_or_refused(db):
    np = pytest.importorskip("numpy")  # installed with the test extras; skip only where it is not
    adapter = MySQLValues("Insert") if db.kind == "mysql" else SQLiteValues("Insert")
    row = adapter.row({"a": np.int64(-5), "b": np.float32(0.1), "c": np.bool_(True), "d": np.str_("s"),
                       "e": np.float64(2.5), "f": np.uint8(255)})
    assert row == {"a": -5, "b": float(np.float32(0.1)), "c": True, "d": "s", "e": 2.5, "f": 255}
    assert [type(v) for v in row.values()] == [int, float, bool, str, float, int]
    for bad in (np.complex128(1j), np.datetime64("2024-01-01")):
        with pytest.raises(UnsupportedValueError, match=r"a value of type numpy\.\w+ .*numpy"):
            adapter.row({"v": bad})
    db.make("double")
    db.insert(np.float32(0.1))
    assert db.stored() == [(float(np.float32(0.1)),)]


# ------------------------------------------------------------------ property: accepted == round-trips
class Obj:
    pass


def _offsets():
    return st.builds(lambda m: datetime.timezone(datetime.timedelta(minutes=m)), st.integers(-23 * 60, 23 * 60))


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 53, 2 ** 53) | st.text(max_size=8)
                    | st.floats(allow_nan=False, allow_infinity=False),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                  max_size=3),
                    max_leaves=8)

VALUES = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-10 ** 70, max_value=10 ** 70),
    st.integers(min_value=-2 ** 64, max_value=2 ** 64),
    st.floats(),
    st.decimals(places=None, allow_nan=True, allow_infinity=True),
    st.decimals(min_value=Decimal(-10 ** 20), max_value=Decimal(10 ** 20), places=8),
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=20),
    st.binary(max_size=20), st.binary(max_size=8).map(bytearray), st.binary(max_size=8).map(memoryview),
    st.datetimes(), st.datetimes(timezones=_offsets()),
    st.dates(), st.times(), st.times(timezones=_offsets()),
    st.timedeltas(min_value=datetime.timedelta(days=-40), max_value=datetime.timedelta(days=40)),
    st.complex_numbers(), st.fractions(), st.sampled_from(list(Color) + list(Level)),
    st.builds(Obj), st.builds(Shouty, st.text(max_size=5)),
    st.dictionaries(st.text(max_size=5), JSON, max_size=3),
    st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2),
)


def _mysql_column(orig, v):
    """The column type that holds an accepted (converted) value, and how it reads back."""
    t = type(v)
    if type(orig) is datetime.timedelta:
        return "time(6)", lambda back, o: back == o
    if v is None:
        return "varchar(1)", lambda back, orig: back is None
    if t is bool:
        return "boolean", lambda back, orig: back == int(orig)
    if t is int:
        if -2 ** 63 <= v < 2 ** 63:
            return "bigint", lambda back, orig: back == orig
        if 0 <= v < 2 ** 64:
            return "bigint unsigned", lambda back, orig: back == orig
        return "decimal(65,0)", lambda back, orig: back == Decimal(orig)
    if t is float:
        return "double", lambda back, orig: back == orig
    if t is Decimal:
        _, digits, exp = v.as_tuple()
        scale = max(-exp, 0)
        whole = max(len(digits) + exp, 1)
        return f"decimal({min(whole + scale, 65)},{scale})", lambda back, orig: back == orig
    if t is str:
        return "longtext character set utf8mb4 collate utf8mb4_bin", None
    if t is bytes:
        return "longblob", None
    if t is datetime.datetime:
        return "datetime(6)", None
    if t is datetime.date:
        return "date", None
    if t is datetime.time:
        return "time(6)", lambda back, orig: back == datetime.timedelta(
            hours=orig.hour, minutes=orig.minute, seconds=orig.second, microseconds=orig.microsecond)
    raise AssertionError(f"no column for an accepted {t}")


def _expected(kind, orig, converted):
    """What an accepted value must read back as (None: equal to the converted value, same type)."""
    if isinstance(orig, dict):
        return lambda back, o: json.loads(back) == json.loads(json.dumps(o))
    if kind == "mysql" and isinstance(orig, datetime.datetime) and orig.tzinfo is not None:
        return lambda back, o: back.replace(tzinfo=UTC) == o  # the same instant, in the '+00:00' session
    if kind == "sqlite" and type(converted) is bool:
        return lambda back, o: back == int(o) and type(back) is int
    if kind == "sqlite" and type(converted) is bytearray:
        return lambda back, o: back == bytes(o) and type(back) is bytes
    if kind == "sqlite" and isinstance(orig, (datetime.date, datetime.time)):
        # ISO text that reads back as the same value (with its offset, if any)
        parse = {datetime.datetime: datetime.datetime.fromisoformat, datetime.date: datetime.date.fromisoformat,
                 datetime.time: datetime.time.fromisoformat}[type(orig)]
        offset = getattr(orig, "utcoffset", lambda: None)
        return lambda back, o: back == converted and parse(back) == o and getattr(
            parse(back), "utcoffset", lambda: None)() == offset()
    return None


def _check_property(values, adapter, kind, params, tmp_path=None):
    accepted = []
    for i, value in enumerate(values):
        try:
            converted = adapter.row({f"c{i}": value})[f"c{i}"]
        except UnsupportedValueError as exc:
            assert exc.placeholder == f"{{c{i}}}" and exc.step == "Insert" and exc.database == kind
            assert exc.type_name.split(".")[-1] == type(value).__qualname__
            continue
        accepted.append((i, value, converted))
    if not accepted:
        return
    table = f"rxbot_prop_{uuid.uuid4().hex[:12]}"
    columns, checks = [], []
    for i, value, converted in accepted:
        if kind == "mysql":
            column, check = _mysql_column(value, converted)
        else:
            column, check = "", None  # no declared type: SQLite stores exactly what is bound
        check = _expected(kind, value, converted) or check
        columns.append(f"c{i} {column}")
        checks.append((i, value, converted, check))
    names = [f"c{i}" for i, _, _ in accepted]
    item = {f"c{i}": value for i, value, _ in accepted}
    item["id"] = 1
    sql = (f"insert into {table} (id, {', '.join(names)}) values ({{id}}, "
           f"{', '.join('{' + n + '}' for n in names)})")
    if kind == "mysql":
        from rxbot.db.mysql import Insert

        raw = pymysql.connect(host=params["host"], port=params["port"], user=params["user"],
                              password=params["password"], database=params["db"], autocommit=True)
        run_sql = lambda s: raw.cursor().execute(s)  # noqa: E731
        node = Insert(sql, **params, time_zone="+00:00")
    else:
        from rxbot.db.sqlite import Insert

        raw = sqlite3.connect(params["path"], isolation_level=None)
        run_sql = raw.execute
        node = Insert(sql, **params)
    try:
        run_sql(f"create table {table} (id integer primary key, {', '.join(columns)})")
        config.exception_policy = "raise"
        Pipe([item], node).run()
        cur = raw.cursor()
        cur.execute(f"select {', '.join(names)} from {table}")
        back = cur.fetchone()
        for (i, value, converted, check), got in zip(checks, back):
            if check is None:
                assert got == converted and type(got) is type(converted), (value, converted, got)
            else:
                assert check(got, value), (value, converted, got)
    finally:
        run_sql(f"drop table if exists {table}")
        raw.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(values=st.lists(VALUES, min_size=1, max_size=6))
def test_property_mysql_accepted_values_round_trip_and_the_rest_is_refused(mysql_params, values):
    adapter = MySQLValues("Insert", offset=datetime.timedelta(0), zone="+00:00")
    _check_property(values, adapter, "mysql", mysql_params)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(values=st.lists(VALUES, min_size=1, max_size=6))
def test_property_sqlite_accepted_values_round_trip_and_the_rest_is_refused(tmp_path, values):
    _check_property(values, SQLiteValues("Insert"), "sqlite", {"path": str(tmp_path / "p.db")})


def test_the_property_strategy_reaches_both_outcomes():
    """Guard against a strategy that only ever accepts (or refuses): sample it."""
    adapter = MySQLValues("Insert", offset=datetime.timedelta(0), zone="+00:00")
    outcomes = set()
    for value in (None, 1, math.pi, 1j, Obj(), "x", {"a": 1}, {1: 2}):
        try:
            adapter.row({"v": value})
            outcomes.add("accepted")
        except UnsupportedValueError:
            outcomes.add("refused")
    assert outcomes == {"accepted", "refused"}


# ------------------------------------------------------------------ item 16: insert ignore warnings
def _dupes(mysql, n_existing: int, n_new: int, caplog) -> tuple:
    import logging
    import warnings

    mysql.make("text")
    for i in range(n_existing):
        mysql.sql(f"insert into {mysql.table} values ({i}, 'old')")
    with warnings.catch_warnings(record=True) as python_warnings, caplog.at_level(logging.INFO, logger="rxbot"):
        warnings.simplefilter("always")
        out = []
        Pipe([{"id": i, "v": "new"} for i in range(n_existing + n_new)],
             mysql.mod.Insert(f"insert ignore into {mysql.table} (id, v) values ({{id}}, {{v}})", **mysql.kw,
                              batch_size=100), out.append).run()
    lines = [r.getMessage() for r in caplog.records if r.name == "rxbot" and "warning" in r.getMessage()]
    return out, lines, [str(w.message) for w in python_warnings]


def test_insert_ignore_skips_are_one_summary_line_not_one_per_row(mysql, caplog):
    out, lines, python_warnings = _dupes(mysql, 320, 0, caplog)
    assert len(out) == 320  # every item passes on: the database decided to skip them
    assert python_warnings == []
    assert len(lines) == 1, lines
    assert "320 of 320 row(s) were skipped by the database (INSERT IGNORE), 320 warning(s); the first: " \
           "Warning 1062: Duplicate entry '0' for key 'PRIMARY'" in lines[0]
    assert lines[0].startswith("Insert: insert ignore into rxbot_vals_")


def test_insert_ignore_summary_counts_only_the_skipped_rows(mysql, caplog):
    out, lines, python_warnings = _dupes(mysql, 150, 170, caplog)
    assert python_warnings == [] and len(out) == 320
    assert len(lines) == 1 and "150 of 320 row(s) were skipped by the database (INSERT IGNORE), 150 warning(s)" \
        in lines[0]
    assert mysql.sql(f"select count(*) from {mysql.table} where v = 'new'") == [(170,)]


def test_no_summary_when_the_database_reports_nothing(mysql, caplog):
    out, lines, python_warnings = _dupes(mysql, 0, 50, caplog)
    assert (len(out), lines, python_warnings) == (50, [], [])


# ------------------------------------------------------------------ SQL literals in both server modes
@pytest.mark.parametrize("no_backslash", [False, True], ids=["backslash escapes", "NO_BACKSLASH_ESCAPES"])
def test_literals_read_back_exactly_in_both_escape_modes(mysql_params, no_backslash):
    """Insert's multi-row INSERT is built from rxbot's own literals: every byte and
    character reads back as written, whether or not the server takes backslash as an
    escape (aiomysql's own bytes escaping is wrong in NO_BACKSLASH_ESCAPES mode)."""
    from rxbot.db.mysql_values import Literals

    text = "q' \" \\ \\' \x00 \x1a \n\r %s {x} é 😀"
    data = bytes(range(256)) + b"\\'"
    raw = pymysql.connect(host=mysql_params["host"], port=mysql_params["port"], user=mysql_params["user"],
                          password=mysql_params["password"], database=mysql_params["db"], autocommit=True,
                          charset="utf8mb4")
    try:
        with raw.cursor() as cur:
            if no_backslash:
                cur.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
            literals = Literals(no_backslash=no_backslash).row(
                (text, data, ("a'", "b\\"), -12, 0.1, Decimal("-1.50"), None, True))
            # a dict row (what a {name} statement binds) gets the same literals as a tuple row
            keyed = Literals(no_backslash=no_backslash).row({f"k{i}": v for i, v in enumerate(
                (text, data, ("a'", "b\\"), -12, 0.1, Decimal("-1.50"), None, True))})
            assert tuple(keyed.values()) == literals
            assert literals[2].startswith("(") and literals[2].endswith(")")
            in_list = f"ELT(1, {literals[2][1:-1]}), ELT(2, {literals[2][1:-1]})"  # an IN list's elements
            sql = "SELECT " + ", ".join(literals[:2] + (in_list,) + literals[3:])
            cur.execute(sql.encode("utf8", "surrogateescape"))
            row = cur.fetchone()
    finally:
        raw.close()
    assert row[0] == text and row[1] == data
    assert row[2:4] == ("a'", "b\\")
    assert row[4:] == (-12, 0.1, Decimal("-1.50"), None, 1)


def test_a_finer_datetime_subclass_keeps_its_value_or_is_refused():
    """A datetime subclass is stored as its datetime value; one carrying nanoseconds
    (pandas' Timestamp does) is refused rather than silently truncated."""
    class Stamp(datetime.datetime):
        nanosecond = 0

    class FineStamp(datetime.datetime):
        nanosecond = 7

    expected = {"mysql": datetime.datetime(2024, 5, 6, 7, 8, 9, 10), "sqlite": "2024-05-06 07:08:09.000010"}
    for adapter in (MySQLValues("Insert"), SQLiteValues("Insert")):
        kept = adapter.row({"v": Stamp(2024, 5, 6, 7, 8, 9, 10)})["v"]
        assert kept == expected[adapter.database] and type(kept) is type(expected[adapter.database])
        with pytest.raises(UnsupportedValueError, match=r"cannot bind \{v\}: a value of type .*FineStamp has "
                                                        r"nanoseconds"):
            adapter.row({"v": FineStamp(2024, 5, 6)})
