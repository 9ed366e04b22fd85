"""DESIGN §2 'What a step's return value does', as a classification of results.

The hot path only asks ``type(r) in SINGLE`` (one set lookup); everything else is
classified once per type and remembered, so custom item classes get the fast path too.
"""
from __future__ import annotations

import collections.abc
import datetime
import decimal
import fractions
import inspect
import uuid
from typing import Any

#: types whose instances are always exactly one item. Grows at run time with user
#: types found to be neither iterable nor awaitable (see :func:`kind_of`).
SINGLE: set = {
    int, float, complex, bool, str, bytes, bytearray, memoryview, tuple, dict,
    decimal.Decimal, fractions.Fraction, datetime.date, datetime.datetime,
    datetime.time, datetime.timedelta, uuid.UUID, type(None),
}

ONE, MANY, AWAIT, AGEN = 0, 1, 2, 3


def kind_of(value: Any) -> int:
    """Classify a non-None result that is not of a known single type."""
    t = type(value)
    if t in SINGLE:
        return ONE
    if isinstance(value, (str, bytes, bytearray, memoryview, tuple, dict, collections.abc.Mapping)):
        return ONE  # subclasses of the single types, and mappings, stay whole
    if inspect.isawaitable(value):
        return AWAIT
    if isinstance(value, collections.abc.AsyncIterable):
        return AGEN
    if isinstance(value, BaseException):
        return ONE
    try:
        iter(value)
    except TypeError:
        if not any(hasattr(t, a) for a in ("__iter__", "__getitem__", "__await__", "__aiter__")):
            SINGLE.add(t)
        return ONE
    return MANY


__all__ = ["SINGLE", "kind_of", "ONE", "MANY", "AWAIT", "AGEN"]
