"""Every Python value type a user binds round-trips through Insert and Query on the real
MariaDB (issue 16): the value is written by ``Insert``, found again by a ``Query`` that
binds the same value in its WHERE clause, read back, and checked with the raw driver."""
from __future__ import annotations

import datetime
import json
import uuid
from decimal import Decimal

import pymysql
import pytest

from rxbot import Pipe, config
from rxbot.db.mysql import Insert, Query
from rxbot.db.params import ParameterError

BLOB = b"\x00\xff'\"\\%s\n\x1a end"  # quotes, backslash, NUL, ^Z, a placeholder spelling

# (case, column type, value bound, value read back, key for the WHERE lookup)
CASES = [
    ("bytes", "BLOB", BLOB, BLOB),
    ("bytearray", "BLOB", bytearray(BLOB), BLOB),
    ("memoryview", "BLOB", memoryview(BLOB), BLOB),
    ("decimal", "DECIMAL(40,9)", Decimal("-12345678901234567890.123456789"),
     Decimal("-12345678901234567890.123456789")),
    ("datetime", "DATETIME(6)", datetime.datetime(2024, 2, 29, 23, 59, 58, 123456),
     datetime.datetime(2024, 2, 29, 23, 59, 58, 123456)),
    ("date", "DATE", datetime.date(1999, 12, 31), datetime.date(1999, 12, 31)),
    # a MySQL TIME is a duration (-838:59:59 .. 838:59:59): the driver reads it as timedelta
    ("time", "TIME(6)", datetime.time(13, 14, 15, 500000),
     datetime.timedelta(hours=13, minutes=14, seconds=15, microseconds=500000)),
    # PyMySQL alone sends -30:01:00 as '-31:59:00'
    ("negative timedelta", "TIME(6)", datetime.timedelta(hours=-30, minutes=-1, microseconds=-5),
     datetime.timedelta(hours=-30, minutes=-1, microseconds=-5)),
    ("timedelta", "TIME", datetime.timedelta(hours=838, minutes=59, seconds=59),
     datetime.timedelta(hours=838, minutes=59, seconds=59)),
    ("none", "VARCHAR(10)", None, None),
    ("true", "BOOLEAN", True, 1),
    ("false", "BOOLEAN", False, 0),
    ("uint64 max", "BIGINT UNSIGNED", 2**64 - 1, 2**64 - 1),
    ("int64 min", "BIGINT", -(2**63), -(2**63)),
    ("bigger than 64 bits", "DECIMAL(65,0)", 10**40 + 7, Decimal(10**40 + 7)),
    ("json dict", "JSON", {"a": [1, "é", None], "b": {"c": True}}, None),  # read back as JSON text
]


@pytest.fixture
def table(mysql_params):
    name = f"rxbot_types_{uuid.uuid4().hex[:12]}"
    raw = pymysql.connect(host=mysql_params["host"], port=mysql_params["port"], user=mysql_params["user"],
                          password=mysql_params["password"], database=mysql_params["db"], autocommit=True)

    def make(column_type: str) -> str:
        with raw.cursor() as cur:
            cur.execute(f"CREATE TABLE {name} (id INT PRIMARY KEY, v {column_type} NULL)")
        return name

    yield make, raw
    with raw.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}")
    raw.close()


@pytest.mark.parametrize("case, column, value, back", CASES, ids=[c[0] for c in CASES])
def test_value_round_trips_through_insert_and_query(mysql_params, table, case, column, value, back):
    make, raw = table
    name = make(column)
    written, found = [], []
    Pipe([{"id": 1, "v": value}], Insert(f"INSERT INTO {name} (id, v) VALUES ({{id}}, {{v}})",
                                          **mysql_params, batch_size=10), written.append).run()
    assert len(written) == 1
    # Query binds the same value: the row is found by it (NULL-safe equality for None)
    Pipe([{"v": value}], Query(f"SELECT id, v FROM {name} WHERE v <=> {{v}}", **mysql_params),
         found.append).run()
    assert [row["id"] for row in found] == [1], f"{case}: Query did not find the row by its value"
    with raw.cursor() as cur:
        cur.execute(f"SELECT v FROM {name} WHERE id = 1")
        (stored,), = cur.fetchall()
    if case == "json dict":
        assert json.loads(found[0]["v"]) == value and json.loads(stored) == value
    else:
        assert found[0]["v"] == back and type(found[0]["v"]) is type(back)
        assert stored == back


def test_bytes_bind_in_a_positional_query(mysql_params, table):
    make, _ = table
    name = make("BLOB")
    Pipe([(1, BLOB)], Insert(f"INSERT INTO {name} (id, v) VALUES (%s, %s)", **mysql_params)).run()
    found = []
    Pipe([BLOB], Query(f"SELECT id FROM {name} WHERE v = %s", **mysql_params), found.append).run()
    assert found == [{"id": 1}]


def test_a_dict_that_is_not_json_able_is_a_clear_error_naming_node_and_placeholder(mysql_params, table):
    make, raw = table
    name = make("JSON")
    config.exception_policy = "raise"
    with pytest.raises(ParameterError, match=r"Insert: .*cannot bind \{v\}: a value of type dict holds a "
                                             r"datetime\.date in its JSON"):
        Pipe([{"id": 1, "v": {"when": datetime.date(2024, 1, 1)}}],
             Insert(f"INSERT INTO {name} (id, v) VALUES ({{id}}, {{v}})", **mysql_params)).run()
    with raw.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {name}")
        assert cur.fetchall() == ((0,),)
