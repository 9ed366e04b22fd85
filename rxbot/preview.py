"""Bounded, redacted previews of items: what an error, a report, a log line, the live
view or a dead letter shows of an item.

``repr()`` of a 500 MB bytes item builds a 2 GB string before anything can cut it; a
preview here never does. It is :class:`reprlib.Repr` (the standard library's bounded
repr: it looks at the first few elements of a container and the first characters of a
string) with bytes and bytearray added, and with the value of every secret-looking
key of a mapping masked before it is shown (:func:`rxbot.redact.secret_name`: a value
cut in the middle could not be recognised by the text rules any more). The text is then
redacted (:func:`rxbot.redact.redact`) and cut to the limit. An object with a
``__repr__`` of its own is asked for it (only its author knows how to show it); its
text is cut like the rest.

This module imports nothing from rxbot but :mod:`rxbot.redact`: the step tree may use it.
"""
from __future__ import annotations

import reprlib
from typing import Any

from .redact import MASK, redact, secret_name

#: characters of a string or bytes value read (and redacted) before it is cut: enough
#: that a URL or a credential that starts before the cut is masked whole
WINDOW = 4096


class _Preview(reprlib.Repr):
    """reprlib with bytes, masked secret keys and redacted strings."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel = 4
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = 8
        self.maxdeque = self.maxarray = 8
        self.maxstring = self.maxother = self.maxlong = max(limit, 12)

    def repr_str(self, x: str, level: int) -> str:
        return self._cut(repr(redact(x[:WINDOW])), len(x) > WINDOW)

    def repr_bytes(self, x: bytes, level: int) -> str:
        head = bytes(x[:WINDOW])
        shown = redact(repr(head))
        return self._cut(shown, len(x) > WINDOW)

    def repr_bytearray(self, x: bytearray, level: int) -> str:
        return f"bytearray({self.repr_bytes(bytes(x[:WINDOW]), level)})" if len(x) <= WINDOW else \
            f"bytearray({self._cut(redact(repr(bytes(x[:WINDOW]))), True)})"

    def repr_memoryview(self, x: memoryview, level: int) -> str:
        return f"<memoryview of {x.nbytes} bytes>"

    def repr_dict(self, x: dict, level: int) -> str:
        n = len(x)
        if n == 0:
            return "{}"
        if level <= 0:
            return "{...}"
        pieces = []
        for i, key in enumerate(x):
            if i >= self.maxdict:
                pieces.append("...")
                break
            shown_key = self.repr1(key, level - 1)
            value = x[key]
            shown = _mask(value) if secret_name(key) and value not in (None, "") else self.repr1(value, level - 1)
            pieces.append(f"{shown_key}: {shown}")
        return "{%s}" % ", ".join(pieces)

    def _cut(self, text: str, longer: bool) -> str:
        limit = self.maxstring
        if len(text) <= limit and not longer:
            return text
        quote = text[-1] if text[-1:] in ("'", '"') else ""
        return text[: max(limit - 3 - len(quote), 1)] + "..." + quote


def _mask(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return f"b'{MASK}'"
    if isinstance(value, str):
        return f"'{MASK}'"
    return MASK


def preview(value: Any, limit: int = 120) -> str:
    """How ``value`` is shown anywhere rxbot shows an item: at most ``limit`` characters,
    redacted, built from a bounded part of it (never the full ``repr()`` of a big
    str, bytes, list, tuple, set or dict). Never raises."""
    try:
        text = _Preview(limit).repr(value)
    except Exception as exc:  # a broken __repr__ must not hide the real failure
        text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["preview", "WINDOW"]
