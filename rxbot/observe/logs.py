"""rxbot's log lines: exactly one ``rxbot:`` prefix, and a level set from the outside.

Log calls in rxbot write ``log.warning("rxbot: dropped item ...")`` on the ``"rxbot"``
logger. With logging configured by the application (``%(name)s: %(message)s``) that used
to read ``rxbot: rxbot: dropped ...``; unconfigured, Python's last-resort handler printed
it once. Now the logger strips the prefix from the message (the logger's *name* is the
prefix), and when the application has configured no handler at all, rxbot's own handler
prints ``rxbot: <message>`` — so a line carries the prefix once either way.

:func:`apply` sets the level from ``config.log_level`` (``--log-level``,
``RXBOT_LOG_LEVEL``); ``BotFrame.run()`` calls it.
"""
from __future__ import annotations

import logging
import sys

PREFIX = "rxbot: "
log = logging.getLogger("rxbot")


class _StripPrefix(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(PREFIX):
            record.msg = record.msg[len(PREFIX):]
        elif record.args and isinstance(record.msg, str) and record.msg.startswith("%s"):
            message = record.getMessage()  # log.info("%s", "rxbot: ...")
            if message.startswith(PREFIX):
                record.msg, record.args = message[len(PREFIX):], None
        return True


class _FallbackHandler(logging.StreamHandler):
    """Prints ``rxbot: message`` to stderr, only while the root logger has no handler
    (otherwise the application's handlers print the record)."""

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return
        self.stream = sys.stderr  # follow redirections (pytest's capsys, contextlib)
        super().emit(record)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        # messages named after a part ("rxbot replay: ...") carry their own prefix
        return text if text.startswith("rxbot ") else PREFIX + text


_installed = False


def install() -> None:
    """Add the prefix filter and the fallback handler to the ``rxbot`` logger (once)."""
    global _installed
    if _installed:
        return
    _installed = True
    log.addFilter(_StripPrefix())
    handler = _FallbackHandler()
    handler.setLevel(logging.NOTSET)
    log.addHandler(handler)


def apply(level: str | None) -> None:
    """Install the handler and set the ``rxbot`` logger's level (None: leave it)."""
    install()
    if level is not None:
        log.setLevel(level.upper())


install()

__all__ = ["install", "apply", "PREFIX"]
