"""A warning at interpreter exit for pipes that were built but never run.

databot scripts end with ``BotFrame.run()``; forgetting it used to exit 0 in silence, so
the script looked as if it had worked. The check runs from ``atexit`` (registered when
the first pipe is built) and stays quiet when the script died of an uncaught exception
(that is the news then) or the pipes were drawn with ``BotFrame.render()`` (drawing a
pipe without running it is a legitimate use).
"""
from __future__ import annotations

import atexit
import sys
from typing import Any, Callable, List

_registered = False


def _pipes_text(pipes: List[Any]) -> str:
    names = [getattr(p, "name", None) or f"Pipe {i + 1}" for i, p in enumerate(pipes)]
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"{len(pipes)} pipe{'s' if len(pipes) != 1 else ''} ({shown})"


def message(pipes: List[Any]) -> str:
    return (f"rxbot: warning: {_pipes_text(pipes)} built but never run; add BotFrame.run() "
            f"at the end of the script (or BotFrame.clear() to drop them)")


def check(pending: Callable[[], List[Any]], drawn: Callable[[], bool]) -> None:
    """Print :func:`message` to stderr when ``pending()`` is not empty."""
    died = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)  # 3.12 / 3.11
    if died is not None or drawn():
        return
    pipes = pending()
    if pipes:
        try:
            print(message(pipes), file=sys.stderr, flush=True)
        except (ValueError, OSError):  # stderr already closed
            pass


def watch(pending: Callable[[], List[Any]], drawn: Callable[[], bool]) -> None:
    """Register :func:`check` once per process."""
    global _registered
    if not _registered:
        _registered = True
        atexit.register(check, pending, drawn)


__all__ = ["watch", "check", "message"]
