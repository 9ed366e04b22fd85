"""Mask secrets in anything rxbot shows: step labels, log lines, reports, graphs, manifests.

One function, :func:`redact`, takes any text (or object, via ``str()``) and rewrites it:

- the userinfo part (``user:password@``) of every URL (any scheme: ``http``, ``mysql``,
  ``redis``...) is removed;
- the value of each query or fragment parameter (``?name=value``, ``&name=value``,
  ``#name=value``) whose name looks secret (``token``, ``api_key``, ``X-Amz-Signature``,
  ``jwt``, OAuth's ``code`` ...) becomes ``***``;
- so does the string value of such a name in a mapping's repr or JSON
  (``{'password': 'x'}``, ``{"api_key": "x"}``): an item shown in a message or report.

Everything else is kept verbatim (no re-encoding), so redacting clean text is the
identity. It is applied where text is *made* — a step's label, an item's repr in a
message (:func:`rxbot.errors.short_repr`), the ``rxbot`` logger (:class:`RedactingFilter`) —
so that every consumer (render, report, replay manifest) shows redacted text without
redacting again. This module imports nothing from rxbot: the step tree may use it.
"""
from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import quote, unquote

#: what replaces a secret value
MASK = "***"

#: parameter-name words that mark a secret (compared per word of the name, lower case)
SECRET_WORDS = frozenset({
    "token", "key", "secret", "password", "passwd", "pwd", "pass", "passphrase", "auth",
    "authorization", "jwt", "code", "sig", "signature", "session", "sessionid", "sid",
    "credential", "credentials", "cookie", "otp", "bearer", "private",
})
#: glued compounds (``apikey``, ``accesstoken``, ``clientsecret``, ``authtoken``) end with these
SECRET_SUFFIXES = ("key", "token", "secret", "password", "passwd", "pwd", "signature", "credential",
                   "credentials", "session", "sessionid", "sessid", "jwt")

# a URL's scheme and userinfo (up to the last '@' of the authority)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#'\"<>@]*(?:@[^\s/?#'\"<>@]*)*@")
# name=value after '?', '&', ';' or '#' (a query or fragment parameter, found anywhere in
# the text, since a URL in a message may hold a space or be cut: "GET /x?token=..."), or
# after a space, a comma or an opening bracket (a DSN or a message: "password=x host=y")
_PARAM = re.compile(r"""([?&;#])([^=&;#?\s'"<>]+)=([^&;#?\s'"<>]*)""")
_PAIR = re.compile(r"""(^|[\s,(\[{])([^=&;#?\s'"<>(\[{,]+)=([^&;#?\s'"<>,)\]}]*)""")
# 'name': value in a dict's repr, "name": value in JSON: a quoted name of any length (spaces
# too), a colon, then a quoted str or bytes value (escapes inside it kept) or a number
_ENTRY = re.compile(r"""(['"])((?:\\.|(?!\1)[^\\\n])+)\1(\s*:\s*)(?:([rRbBuU]{0,2})(['"])((?:\\.|(?!\5)[^\\\n])*)\5|(-?\d[\d_.eE+\-]*))""")
# a credential after a header name in free text ("Authorization: Bearer abc")
_HEADER = re.compile(r"(?i)(?<![\w'\"-])(authorization|proxy-authorization|cookie|set-cookie|x-api-key)(\s*:\s*)"
                     r"((?:bearer|basic|digest|token)\s+)?([^\s,;'\"]+)")
_BEARER = re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._~+/=\-]{6,})")
# a percent-encoded run of text (a URL inside a parameter: "?next=https%3A%2F%2Fh%2F%3Ftoken%3Dx")
_ENCODED = re.compile(r"[^\s'\"<>]*%[0-9A-Fa-f]{2}[^\s'\"<>]*")
# word boundaries inside a parameter name: separators and camelCase humps
_WORDS = re.compile(r"[a-z0-9]+")
_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
#: characters kept as they are when a redacted percent-encoded text is encoded again
_URL_SAFE = "/:?&=#@;,+$!'()*~"


def secret_name(name: Any) -> bool:
    """Does a parameter or key name look like it carries a credential? (``api_key``,
    ``apiKey``, ``X-Amz-Security-Token``, ``access_token``, ``sessionid``, ``code``,
    ``'my password'``, ``b'token'`` ...) Any length; bytes are read as UTF-8."""
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name[:256]).decode("utf-8", "replace")
    elif not isinstance(name, str):
        return False
    words = _WORDS.findall(_HUMP.sub("_", unquote(name[:256])).lower())
    return any(w in SECRET_WORDS or w.endswith(SECRET_SUFFIXES) for w in words)


def _mask_param(m: "re.Match[str]") -> str:
    sep, name, value = m.groups()
    return f"{sep}{name}={MASK}" if value and value != MASK and secret_name(name) else m.group(0)


def _mask_entry(m: "re.Match[str]") -> str:
    q, name, colon, prefix, vq, value, number = m.groups()
    shown = value if number is None else number
    if not shown or shown == MASK or not secret_name(name):
        return m.group(0)
    return f"{q}{name}{q}{colon}{prefix or ''}{vq or ''}{MASK}{vq or ''}"


def _mask_header(m: "re.Match[str]") -> str:
    name, colon, scheme, value = m.groups()
    return m.group(0) if value == MASK else f"{name}{colon}{scheme or ''}{MASK}"


def _mask_encoded(m: "re.Match[str]") -> str:
    text = m.group(0)
    decoded = text
    for _ in range(3):  # a secret encoded twice or three times is still a secret
        inner = unquote(decoded)
        if inner == decoded:
            break
        decoded = inner
    if decoded == text:
        return text
    clean = _redact_plain(decoded)
    return text if clean == decoded else quote(clean, safe=_URL_SAFE)


def _redact_plain(s: str) -> str:
    if "://" in s:
        s = _USERINFO.sub(r"\1", s)
    if ":" in s and ("'" in s or '"' in s):
        s = _ENTRY.sub(_mask_entry, s)
    if ":" in s:
        s = _HEADER.sub(_mask_header, s)
    if "earer" in s:
        s = _BEARER.sub(lambda m: m.group(0) if m.group(2) == MASK else m.group(1) + MASK, s)
    return _PAIR.sub(_mask_param, _PARAM.sub(_mask_param, s)) if "=" in s else s


def redact(text: Any) -> str:
    """``text`` (``str()`` of it if it is not a string) with every URL's userinfo removed
    and every value of a secret-looking name masked: URL parameters (percent-encoded
    ones too), ``name=value`` pairs, mapping entries (str, bytes or number values),
    ``Authorization:`` headers and bearer tokens. Clean text comes back unchanged. Never
    raises."""
    try:
        s = _redact_plain(text if isinstance(text, str) else str(text))
        # then what hides inside percent-encoded text (re-encoded only where it masked)
        return _ENCODED.sub(_mask_encoded, s) if "%" in s else s
    except Exception:  # a broken __str__: say only what it is
        return f"<unprintable {type(text).__name__}>"


def redact_data(value: Any, depth: int = 0) -> Any:
    """A JSON-like value (dicts, lists, tuples, str, bytes, numbers) with every string
    redacted and the value of every secret-looking key masked, whatever its type: what
    leaves the process as JSON (a report, the live view) goes through this."""
    if isinstance(value, str):
        return redact(value)
    if depth > 32:
        return MASK  # deeper than anything rxbot makes: say nothing rather than leak
    if isinstance(value, dict):  # a secret key's leaf value is masked; containers are searched
        return {k: (MASK if secret_name(k) and isinstance(v, (str, bytes, bytearray, int, float))
                    and v not in ("", MASK) else redact_data(v, depth + 1))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v, depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return redact(bytes(value[:4096]).decode("utf-8", "replace"))
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the formatted message of every record it sees, and
    its traceback (installed on the ``rxbot`` logger, so every rxbot log line goes
    through it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # a traceback repeats the exception's message (a URL with its token): format
            # it now, redacted; formatters print ``exc_text`` when it is set
            record.exc_text = redact(_FORMATTER.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FORMATTER = logging.Formatter()


def install_log_filter(logger: logging.Logger) -> None:
    """Add one :class:`RedactingFilter` to ``logger`` (idempotent)."""
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())


__all__ = ["redact", "redact_data", "secret_name", "RedactingFilter", "install_log_filter", "MASK"]
