"""Values as the MySQL driver must receive them.

aiomysql escapes values with PyMySQL's encoders, which (PyMySQL 1.1) get four Python
types silently wrong or refuse them: a ``bytearray`` is sent as the text
``"bytearray(b'x')"``, a ``memoryview`` as ``"<memory at 0x...>"`` (the data is lost,
no error), a negative ``timedelta`` off by the day/second split (-30:01:00 is sent as
'-31:59:00'), and a ``dict`` raises ``TypeError: dict can not be used as parameter``.
asyncmy 0.2.18 has the same holes (memoryview and dict stored as their repr, bytearray
refused). So rxbot adapts them before the driver sees them: binary buffers become
``bytes``, a mapping becomes its JSON text (for a ``JSON`` column; MariaDB's JSON is
LONGTEXT, MySQL's JSON accepts the text). Everything else (str, bytes, int of any
size, float, Decimal, bool, None, date/datetime/time/timedelta, and lists/tuples, which
the driver expands for ``IN {ids}``) is passed as is; a timedelta is sent as the TIME
text it means.
"""
from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from typing import Any, Union

from .params import ParameterError


def to_driver(owner: str, name: Union[str, int], value: Any) -> Any:
    """``value`` adapted for PyMySQL's escaping; ``owner``/``name`` name the node and the
    placeholder in the error for a mapping that is not JSON-able."""
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, datetime.timedelta):
        return time_text(value)
    if isinstance(value, Mapping):
        try:
            return json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            where = f"{{{name}}}" if isinstance(name, str) else f"value {name + 1}"
            raise ParameterError(
                f"{owner}: the mapping bound to {where} is stored as JSON, but it is not "
                f"JSON-able: {exc}") from None
    return value


def time_text(delta: datetime.timedelta) -> str:
    """A duration as MySQL TIME text, sign first: ``-30:01:00.000000``."""
    size = abs(delta)
    minutes, seconds = divmod(size.days * 86400 + size.seconds, 60)
    hours, minutes = divmod(minutes, 60)
    sign = "-" if delta < datetime.timedelta(0) else ""
    return f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}.{size.microseconds:06d}"


def adapt(owner: str, values: Union[dict, tuple]) -> Union[dict, tuple]:
    """Every value of one execution's parameters through :func:`to_driver`."""
    if isinstance(values, dict):
        return {k: to_driver(owner, k, v) for k, v in values.items()}
    return tuple(to_driver(owner, i, v) for i, v in enumerate(values))


__all__ = ["adapt", "to_driver", "time_text"]
