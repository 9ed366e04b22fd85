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
from urllib.parse import unquote

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
# name=value after '?', '&', ';' or '#': a query or fragment parameter, found anywhere in
# the text, since a URL in a message may hold a space or be cut ("GET /x?token=...")
_PARAM = re.compile(r"([?&;#])([^=&;#\s'\"<>]+)=([^&;#\s'\"<>]*)")
# 'name': 'value' in a dict's repr, "name": "value" in JSON: a quoted name, a colon, a
# quoted string value (escapes inside it kept)
_ENTRY = re.compile(r"""(['"])([A-Za-z0-9_.\-]{1,64})\1(\s*:\s*)(['"])((?:\\.|(?!\4)[^\\\n])*)\4""")
# word boundaries inside a parameter name: separators and camelCase humps
_WORDS = re.compile(r"[a-z0-9]+")
_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def secret_name(name: str) -> bool:
    """Does a parameter name look like it carries a credential? (``api_key``, ``apiKey``,
    ``X-Amz-Security-Token``, ``access_token``, ``sessionid``, ``code`` ...)"""
    words = _WORDS.findall(_HUMP.sub("_", unquote(name)).lower())
    return any(w in SECRET_WORDS or w.endswith(SECRET_SUFFIXES) for w in words)


def _mask_param(m: "re.Match[str]") -> str:
    sep, name, value = m.groups()
    return f"{sep}{name}={MASK}" if value and secret_name(name) else m.group(0)


def _mask_entry(m: "re.Match[str]") -> str:
    q, name, colon, vq, value = m.groups()
    return f"{q}{name}{q}{colon}{vq}{MASK}{vq}" if value and secret_name(name) else m.group(0)


def redact(text: Any) -> str:
    """``text`` (``str()`` of it if it is not a string) with every URL's userinfo removed
    and its secret-looking parameter values masked. Never raises."""
    try:
        s = text if isinstance(text, str) else str(text)
        if "://" in s:
            s = _USERINFO.sub(r"\1", s)
        if ":" in s and ("'" in s or '"' in s):
            s = _ENTRY.sub(_mask_entry, s)
        return _PARAM.sub(_mask_param, s) if "=" in s else s
    except Exception:  # a broken __str__: say only what it is
        return f"<unprintable {type(text).__name__}>"


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


__all__ = ["redact", "secret_name", "RedactingFilter", "install_log_filter", "MASK"]
