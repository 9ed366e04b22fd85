"""Values as SQLite stores them exactly, or refused (see :mod:`rxbot.db.values`).

sqlite3 itself stores a float NaN as NULL without a word, refuses an int beyond 64 bits
with a bare ``OverflowError``, and converts dates through default adapters that Python
3.12 deprecates. :class:`SQLiteValues` makes the rules explicit:

======================  =====================================================================
``None``, ``bool``,     as they are (a bool is stored as the integer 1/0)
``bytes``, ``bytearray``
``memoryview``          as ``bytes``
``str``                 as is; refused with a lone surrogate (UTF-8 cannot encode it)
``int``                 as is in the 64-bit range; refused beyond (SQLite has no bigger integer)
``float``               as is, ±inf included (SQLite stores them); NaN refused (stored as NULL)
``datetime``            ISO text, ``YYYY-MM-DD HH:MM:SS[.ffffff]``, with its ``+HH:MM`` offset if
                        aware (SQLite's date functions read both; nothing is converted)
``date``, ``time``      ISO text (an aware ``time`` is refused: an offset without a date)
``dict``/Mapping        its JSON text (str keys, JSON leaves only; SQLite's json functions read it)
``Decimal``             refused: a NUMERIC column would round it to a 15-digit REAL; register
                        ``str`` for it to store the text (in a TEXT column)
``timedelta``           refused (SQLite has no duration type); register an adapter
``list``/``tuple``      refused (a placeholder binds one value; SQLite has no IN-list binding)
Enum, complex,          refused, unless an adapter is registered
Fraction, objects
======================  =====================================================================
"""
from __future__ import annotations

import datetime
import decimal
from typing import Any, Dict

from .values import Converter, Refused, ValueAdapter, check_text, json_text

_INT_MIN, _INT_MAX = -(2 ** 63), 2 ** 63 - 1


class SQLiteValues(ValueAdapter):
    database = "sqlite"
    title = "SQLite"
    int_range = (_INT_MIN, _INT_MAX)

    def builtin_rules(self) -> Dict[type, Converter]:
        return {
            type(None): None, bool: None, bytes: None, bytearray: None,
            memoryview: bytes,
            str: _text,
            int: _int,
            float: _float,
            datetime.datetime: _datetime,
            datetime.date: _date,
            datetime.time: _time,
            dict: self.json,
            decimal.Decimal: _decimal,
            datetime.timedelta: _timedelta,
            list: _sequence,
            tuple: _sequence,
            set: _sequence,
            frozenset: _sequence,
        }

    def json(self, value: Any) -> str:
        return json_text(value, _text)


def _text(value: str) -> str:
    return value if value.isascii() else check_text(value, "utf-8")


def _int(value: int) -> int:
    if _INT_MIN <= value <= _INT_MAX:
        return value
    raise Refused(f"({value if abs(value) < 10 ** 30 else '...'}) is outside SQLite's 64-bit integer range; "
                  "store it as text (register_adapter(int, str, database='sqlite') changes every int) or "
                  "convert it in a step before")


def _float(value: float) -> float:
    if value == value:
        return value
    raise Refused("(nan) cannot be stored: SQLite would store NULL")


def _datetime(value: datetime.datetime) -> str:
    return value.isoformat(" ")


def _date(value: datetime.date) -> str:
    return value.isoformat()


def _time(value: datetime.time) -> str:
    if value.tzinfo is not None and value.utcoffset() is not None:
        raise Refused(f"is timezone-aware ({value.isoformat()}); a time of day with an offset but no date "
                      "is ambiguous: use a datetime")
    return value.isoformat()


def _decimal(value: decimal.Decimal) -> Any:
    raise Refused(f"({value}) has no exact SQLite form: a NUMERIC/REAL column keeps 15 digits; to store "
                  "its text in a TEXT column, rxbot.db.register_adapter(Decimal, str, database='sqlite')")


def _timedelta(value: datetime.timedelta) -> Any:
    raise Refused(f"({value}) has no SQLite type; register an adapter, e.g. "
                  "rxbot.db.register_adapter(timedelta, lambda d: d // timedelta(microseconds=1), "
                  "database='sqlite') for integer microseconds")


def _sequence(value: Any) -> Any:
    raise Refused("cannot be bound to one SQLite placeholder (SQLite binds one value each; for IN use "
                  "one placeholder per element, or json_each() over a JSON text)")


__all__ = ["SQLiteValues"]
