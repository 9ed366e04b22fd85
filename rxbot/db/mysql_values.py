"""Values as MySQL/MariaDB stores them exactly, or refused (see :mod:`rxbot.db.values`).

aiomysql escapes values with PyMySQL's encoders, which (PyMySQL 1.1) get many Python
types silently wrong: any type they do not know is sent as its ``str()`` (a user object,
an Enum, a complex, a Fraction, a numpy scalar), an aware datetime loses its offset, a
``bytearray`` is sent as the text ``"bytearray(b'x')"``, a ``memoryview`` as ``"<memory at
0x...>"``, a negative ``timedelta`` off by the day/second split (-30:01:00 is sent as
'-31:59:00'), a float NaN as the bare word ``nan``; aiomysql also turns a lone surrogate
``\\udcXX`` into a raw byte. So every value passes :class:`MySQLValues` first:

======================  =====================================================================
``None``, ``bool``,     as they are (a bool is stored as 1/0)
``bytes``
``str``                 as is; refused if the connection's charset cannot carry a character
                        (a lone surrogate; above U+FFFF for ``utf8mb3``)
``int``                 as is up to 65 digits (BIGINT, or DECIMAL(65,0) beyond); refused beyond
``float``               as is (sent as its ``repr``: exact for DOUBLE); NaN and ±inf refused
``Decimal``             as is when finite with at most 65 digits, 38 after the point (the
                        most an exact MySQL literal/DECIMAL holds); NaN, ±Infinity refused
``datetime`` (naive)    as is (microseconds kept; DATETIME(6))
``datetime`` (aware)    converted to the session time zone when it is a fixed offset (the
                        node's ``time_zone=`` sets one), then sent naive: the same instant;
                        refused when the session zone is a named/SYSTEM zone rxbot cannot
                        convert to exactly
``date``                as is
``time``                naive as is; aware refused (an offset without a date is ambiguous)
``timedelta``           as the TIME text it means, within TIME's ±838:59:59.999999; refused beyond
``bytearray``,          as ``bytes``
``memoryview``
``dict``/Mapping        its JSON text (a ``JSON`` column): str keys, JSON leaves only
``list``/``tuple``/set  a tuple of scalars, which the driver expands for ``IN {ids}``
Enum, complex,          refused, unless an adapter is registered
Fraction, objects
======================  =====================================================================
"""
from __future__ import annotations

import datetime
import decimal
import re
from typing import Any, Callable, Dict, List, Optional, Union

from pymysql.converters import _escape_table, escape_date, escape_datetime, escape_time

from .values import Converter, Refused, ValueAdapter, check_text, json_text, timedelta_parts

#: the largest magnitude an exact MySQL numeric literal (and DECIMAL(65,0)) holds
_INT_LIMIT = 10 ** 65
_MAX_DIGITS, _MAX_SCALE = 65, 38
_TIME_LIMIT = datetime.timedelta(hours=838, minutes=59, seconds=59, microseconds=999999)
_OFFSET = re.compile(r"([+-])(\d{1,2}):(\d{2})\Z")
#: names of a system zone that is UTC all year
_UTC_NAMES = frozenset({"UTC", "GMT", "Etc/UTC", "Etc/GMT", "Z", "UCT", "Universal", "Zulu"})


def parse_offset(text: str) -> Optional[datetime.timedelta]:
    """``'+05:30'`` -> timedelta(hours=5, minutes=30); None for anything else."""
    m = _OFFSET.match(text.strip())
    if m is None:
        return None
    sign = -1 if m.group(1) == "-" else 1
    hours, minutes = int(m.group(2)), int(m.group(3))
    if hours > 14 or minutes > 59:
        return None
    return sign * datetime.timedelta(hours=hours, minutes=minutes)


def session_offset(time_zone: str, system_time_zone: str) -> Optional[datetime.timedelta]:
    """The fixed offset of a session whose ``@@time_zone`` / ``@@system_time_zone`` are
    these, or None when the zone has daylight saving time (or is unknown to rxbot)."""
    if time_zone == "SYSTEM":
        return datetime.timedelta(0) if system_time_zone in _UTC_NAMES else None
    if time_zone in _UTC_NAMES:
        return datetime.timedelta(0)
    return parse_offset(time_zone)


def time_text(delta: datetime.timedelta) -> str:
    """A duration as MySQL TIME text, sign first: ``-30:01:00.000000``."""
    sign, hours, minutes, seconds, micro = timedelta_parts(delta)
    return f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}.{micro:06d}"


class MySQLValues(ValueAdapter):
    """The MySQL adapter of one node: ``encoding`` is the connection's Python codec,
    ``charset`` its MySQL name; ``offset`` the session's fixed UTC offset (None: aware
    datetimes are refused, ``zone`` says which zone the session has)."""

    database = "mysql"
    title = "MySQL"
    int_range = (1 - _INT_LIMIT, _INT_LIMIT - 1)

    def __init__(self, owner: str, charset: str = "utf8mb4", encoding: str = "utf-8",
                 offset: Optional[datetime.timedelta] = None, zone: str = "unknown") -> None:
        self.charset = charset
        self.encoding = encoding
        self.bmp_only = charset.lower() in ("utf8", "utf8mb3")
        self.offset = offset
        self.tz = None if offset is None else datetime.timezone(offset)
        self.zone = zone
        super().__init__(owner)

    def builtin_rules(self) -> Dict[type, Converter]:
        return {
            type(None): None, bool: None, bytes: None,
            str: self.text,
            int: _int,
            float: _float,
            decimal.Decimal: _decimal,
            datetime.datetime: self.datetime,
            datetime.date: None,
            datetime.time: _time,
            datetime.timedelta: _timedelta,
            bytearray: bytes,
            memoryview: bytes,
            dict: self.json,
            list: self.sequence,
            tuple: self.sequence,
            set: self.sequence,
            frozenset: self.sequence,
        }

    def text(self, value: str) -> str:
        if value.isascii():
            return value
        check_text(value, self.encoding)
        if self.bmp_only and any(ord(c) > 0xFFFF for c in value):
            raise Refused(f"holds a character above U+FFFF, which the connection's charset {self.charset} "
                          "cannot store (use charset='utf8mb4')")
        return value

    def json(self, value: Any) -> str:
        return json_text(value, self.text)

    def datetime(self, value: datetime.datetime) -> datetime.datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            return value
        if self.tz is None:
            raise Refused(f"is timezone-aware ({value.isoformat()}) and the session time zone {self.zone!r} "
                          "is not a fixed offset rxbot can convert to exactly; give the node "
                          "time_zone='+00:00' (the session is set to it and the value converted), or "
                          "convert to a naive datetime yourself")
        try:
            return value.astimezone(self.tz).replace(tzinfo=None)
        except OverflowError:
            raise Refused(f"({value.isoformat()}) is outside the datetime range in the session time "
                          f"zone {self.zone}") from None

    def sequence(self, value: Any) -> tuple:
        """An ``IN`` list: each element a scalar, converted by the same rules."""
        out = []
        for element in value:
            if isinstance(element, (list, tuple, set, frozenset, dict)):
                raise Refused(f"holds a nested {type(element).__name__}; a list binds as an IN list of "
                              "scalars (for a JSON column pass a dict, or register an adapter)")
            out.append(self.one(element))
        if not out:
            raise Refused("is empty: 'IN ()' is not valid SQL; skip the item or use a condition that is "
                          "false for an empty list")
        return tuple(out)


def _int(value: int) -> int:
    if -_INT_LIMIT < value < _INT_LIMIT:
        return value
    raise Refused(f"has {len(str(abs(value)))} digits; MySQL holds at most 65 exactly (DECIMAL(65,0))")


def _float(value: float) -> float:
    if value - value == 0.0:  # False for NaN and ±inf
        return value
    raise Refused(f"({value!r}) cannot be stored: MySQL has no NaN or infinity")


def _decimal(value: decimal.Decimal) -> decimal.Decimal:
    if not value.is_finite():
        raise Refused(f"({value}) cannot be stored: MySQL has no NaN or infinity")
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    scale = max(-exponent, 0)
    whole = max(len(digits) + exponent, 0)
    if scale > _MAX_SCALE or whole + scale > _MAX_DIGITS:
        raise Refused(f"({value}) has {whole} digit(s) before and {scale} after the point; an exact MySQL "
                      f"DECIMAL holds at most {_MAX_DIGITS} digits, {_MAX_SCALE} after the point")
    return value


def _time(value: datetime.time) -> datetime.time:
    if value.tzinfo is not None and value.utcoffset() is not None:
        raise Refused(f"is timezone-aware ({value.isoformat()}); MySQL's TIME has no offset and a time "
                      "of day cannot be converted without a date: use a datetime")
    return value


def _timedelta(value: datetime.timedelta) -> str:
    if -_TIME_LIMIT <= value <= _TIME_LIMIT:
        return time_text(value)
    raise Refused(f"({value}) is outside MySQL's TIME range -838:59:59.999999 .. 838:59:59.999999")


# ----------------------------------------------------------------------- SQL literals
def _float_literal(value: float) -> str:
    text = repr(value)  # the shortest text that reads back as the same double
    return text if "e" in text else text + "e0"


class Literals:
    """Converted values as SQL literal text, for the multi-row INSERT an Insert batch
    becomes (what aiomysql's ``executemany`` builds, without its per-value dispatch
    through ``conn.escape``/``escape_item``: the values are already of the few exact
    types :class:`MySQLValues` returns).

    The escaping is PyMySQL's (its translation table) for a server that treats backslash
    as an escape; with ``NO_BACKSLASH_ESCAPES`` only quotes are doubled — for bytes and
    IN lists too, which aiomysql itself gets wrong in that mode."""

    def __init__(self, no_backslash: bool = False) -> None:
        self.no_backslash = no_backslash
        if no_backslash:
            def text(v: str) -> str:
                return "'" + v.replace("'", "''") + "'"

            def data(v: bytes) -> str:
                return "_binary'" + v.decode("ascii", "surrogateescape").replace("'", "''") + "'"
        else:
            table = _escape_table

            def text(v: str) -> str:
                return "'" + v.translate(table) + "'"

            def data(v: bytes) -> str:
                return "_binary'" + v.decode("ascii", "surrogateescape").translate(table) + "'"

        self.by_type: Dict[type, Callable[[Any], str]] = {
            str: text, bytes: data, int: int.__repr__, float: _float_literal,
            bool: lambda v: "1" if v else "0", type(None): lambda v: "NULL",
            decimal.Decimal: lambda v: format(v, "f"),
            datetime.datetime: escape_datetime, datetime.date: escape_date, datetime.time: escape_time,
            tuple: self.sequence,
        }

    def sequence(self, values: tuple) -> str:
        return "(" + ",".join(self.one(v) for v in values) + ")"

    def one(self, value: Any) -> str:
        try:
            return self.by_type[type(value)](value)
        except KeyError:  # MySQLValues returns none of these: a bug, never a str() fallback
            raise TypeError(f"rxbot: no SQL literal for an adapted value of type {type(value).__name__}") from None

    def row(self, values: Union[dict, tuple]) -> Union[dict, tuple]:
        """The literals of one row, keyed or ordered like ``values`` (int and str, the
        common cases, inline: a call per value costs as much as the escaping)."""
        if type(values) is dict:
            return dict(zip(values, self.row(tuple(values.values()))))  # type: ignore[arg-type]
        by_type, text = self.by_type, self.by_type[str]
        table = None if self.no_backslash else _escape_table
        out: List[str] = []
        append = out.append
        try:
            for v in values:
                t = type(v)
                if t is int:
                    append(int.__repr__(v))
                elif t is str and table is not None:
                    append("'" + v.translate(table) + "'")
                else:
                    append(text(v) if t is str else by_type[t](v))
            return tuple(out)
        except KeyError:
            for v in values:
                self.one(v)
            raise


def adapt(owner: str, values: Union[dict, tuple]) -> Union[dict, tuple]:
    """Every value of one execution through a default :class:`MySQLValues` (utf8mb4, no
    known session zone): for callers without a node."""
    return MySQLValues(owner).row(dict(values) if isinstance(values, dict) else values)


__all__ = ["MySQLValues", "Literals", "adapt", "time_text", "session_offset", "parse_offset"]
