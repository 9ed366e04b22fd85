"""How an uncaught rxbot error is printed: the user's own frames and the step/item line,
without the dozens of asyncio and engine frames between them.

Only the *printing* is shortened. The exception that ``BotFrame.run()`` raises is the
original one, with its type, ``__cause__`` chain and traceback intact, so ``except
KeyError:`` in a script still works and a debugger still sees every frame. The short form
is printed by :func:`install`'s ``sys.excepthook`` (installed by ``import rxbot``, so that
the errors of building a Pipe read the same way) and by ``rxbot run``; ``RXBOT_DEBUG=1`` (or ``rxbot run --debug``, or ``config.debug = True``)
prints Python's full traceback instead.

A failing step then reads::

    rxbot: raised in step 'parse' on item {'a': 0}
    Traceback (most recent call last; rxbot and library frames hidden, RXBOT_DEBUG=1 shows them):
      File "job.py", line 7, in <module>
        BotFrame.run()
      File "job.py", line 4, in parse
        return {"v": x}["missing"]
    KeyError: 'missing'

and a check of rxbot's own (a step that takes two arguments, a bad argument of a route)::

    rxbot: step 'add' must accept one positional argument (the item); its signature is add(a, b)
    Traceback (most recent call last; rxbot and library frames hidden, RXBOT_DEBUG=1 shows them):
      File "job.py", line 6, in <module>
        Pipe(range(3), add, print)
    TypeError: step 'add' must accept one positional argument (the item); its signature is add(a, b)
"""
from __future__ import annotations

import os
import socket
import sys
import sysconfig
import traceback
from types import TracebackType
from typing import Any, Callable, List, Optional, Sequence, TextIO, Type


#: notes that rxbot itself attaches (``errors.annotate``); printed first, not twice
NOTE_PREFIX = "rxbot: "

_HIDDEN_DIRS = tuple(
    os.path.normcase(os.path.realpath(p)) + os.sep
    for p in {os.path.dirname(__file__), *(
        sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib"))}
    if p
)


def debug_enabled() -> bool:
    """Full tracebacks when ``RXBOT_DEBUG`` is set to anything but 0/false/no/'' or
    ``config.debug`` is true."""
    if os.environ.get("RXBOT_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off"):
        return True
    from .config import config

    return bool(getattr(config, "debug", False))


def is_user_frame(filename: str) -> bool:
    """A frame of the user's code: not rxbot, not the standard library (asyncio, runpy,
    concurrent.futures ...), not an installed package, not generated code (``<rxbot fused>``)."""
    if filename.startswith("<"):
        return filename in ("<stdin>", "<string>") or filename.startswith("<ipython-input")
    path = os.path.normcase(os.path.realpath(filename))
    return not path.startswith(_HIDDEN_DIRS)


def _user_frames(exc: BaseException) -> List[traceback.FrameSummary]:
    return [f for f in traceback.extract_tb(exc.__traceback__) if is_user_frame(f.filename)]


def _exception_line(exc: BaseException) -> List[str]:
    """``Type: message`` plus the notes that are not rxbot's own, like Python prints them."""
    only = traceback.TracebackException(type(exc), exc, None, compact=True)
    only.__notes__ = [n for n in (getattr(exc, "__notes__", None) or [])
                      if not (isinstance(n, str) and n.startswith(NOTE_PREFIX))] or None
    return "".join(only.format_exception_only()).rstrip("\n").splitlines()


def _causes(exc: BaseException) -> List[BaseException]:
    """The exceptions behind ``exc`` (explicit causes, then implicit context), nearest first."""
    chain: List[BaseException] = []
    seen = {id(exc)}
    current: Optional[BaseException] = exc
    while current is not None:
        nxt = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        chain.append(nxt)
        current = nxt
    return chain


def hint(exc: BaseException) -> Optional[str]:
    """What to check, for failures whose cause is the network or the credentials."""
    for e in [exc, *_causes(exc)]:
        if isinstance(e, ConnectionRefusedError):
            return ("check: nothing accepted the connection - is the server running, and are "
                    "the host and port right?")
        if isinstance(e, socket.gaierror):
            return "check: the host name could not be resolved - is the host right?"
        args = getattr(e, "args", ())
        if args and args[0] in (1044, 1045) and type(e).__module__.startswith("pymysql"):
            return "check: the server refused the user - are user, password and database right?"
        if isinstance(e, TimeoutError) and isinstance(exc, ConnectionError):
            return "check: no answer in time - are the host, port and firewall right?"
    if "Connect call failed" in str(exc) or "Cannot connect to host" in str(exc):
        # a node that re-raised a connection error as its own, without the chain
        return ("check: nothing accepted the connection - is the server running, and are "
                "the host and port right?")
    return None


def format_short(exc: BaseException) -> List[str]:
    """The lines printed for an uncaught ``exc``: rxbot's step/item note, the user's
    frames, the exception, its causes in one line each (with the user's frames they
    passed through, if any) and a hint for connection failures."""
    notes = [n for n in (getattr(exc, "__notes__", None) or [])
             if isinstance(n, str) and n.startswith(NOTE_PREFIX)]
    lines = list(notes)
    if not notes and _raised_by_rxbot(exc):
        # a check of rxbot's own, e.g. while a Pipe is built: its message first, as a
        # failing step's note comes first
        message = str(exc).strip().splitlines()
        lines.append(NOTE_PREFIX + (message[0] if message else type(exc).__name__))
    frames = _user_frames(exc)
    if frames:
        lines.append("Traceback (most recent call last; rxbot and library frames hidden, "
                     "RXBOT_DEBUG=1 shows them):")
        lines += "".join(traceback.StackSummary.from_list(frames).format()).rstrip("\n").splitlines()
    lines += _exception_line(exc)
    for cause in _causes(exc):
        first, *rest = _exception_line(cause)
        lines.append(f"  caused by {first}")
        lines += ["  " + r for r in rest]
        for f in _user_frames(cause):
            lines.append(f'    at {f.filename}, line {f.lineno}, in {f.name}')
    tip = hint(exc)
    if tip and "check " not in str(exc):  # the message may say it already
        lines.append(tip)
    return lines


def _raised_by_rxbot(exc: BaseException) -> bool:
    """The exception was raised in rxbot's own code (its innermost frame is rxbot's),
    not in a step, a library or the user's code."""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and os.path.normcase(os.path.realpath(frames[-1].filename)).startswith(_RXBOT_DIR)


def print_short(exc: BaseException, file: Optional[TextIO] = None) -> None:
    """Print ``exc`` the short way (or Python's full way under debug)."""
    from .redact import redact

    out = file or sys.stderr
    if debug_enabled():  # the full traceback repeats the messages: redacted too
        print(redact("".join(traceback.format_exception(exc))).rstrip("\n"), file=out)
    else:
        print(redact("\n".join(format_short(exc))), file=out)
    out.flush()


# -- interruption ----------------------------------------------------------------------
def interruption_line(report: Any, signame: str = "interrupted") -> str:
    """``rxbot: interrupted after 12 items; 4 in flight cancelled``: items read from the
    sources, and items that were accepted by a step but never finished."""
    from .observe.report_io import source_items

    items = source_items(report) if report is not None else 0
    cancelled = report.totals().get("cancelled", 0) if report is not None else 0
    return f"rxbot: {signame} after {items} items; {cancelled} in flight cancelled"


def print_interruption(report: Any, signame: str = "interrupted", file: Optional[TextIO] = None) -> None:
    """The one line and the report (no traceback) for Ctrl-C or SIGTERM."""
    print(_interruption_text(report, signame), file=file or sys.stderr, flush=True)


def mark_interrupted(exc: BaseException, report: Any) -> BaseException:
    """Remember on a KeyboardInterrupt the report of the run it stopped, and its text; the
    excepthook prints it if nobody catches the interrupt.

    The text is made here, not in the hook: CPython ends a script stopped by an uncaught
    KeyboardInterrupt by SIGINT (exit status -2/130, what shells and supervisors expect)
    only if nothing in the hook runs ``exec`` of a string, which resets that decision to
    "exit 1" — and a module imported for the first time while the report is written
    (a dataclass is made with ``exec``) does exactly that."""
    try:
        exc.rxbot_report = report  # type: ignore[attr-defined]
        exc.rxbot_stopped_text = _interruption_text(report)  # type: ignore[attr-defined]
    except Exception:
        pass
    return exc


def _interruption_text(report: Any, signame: str = "interrupted") -> str:
    text = interruption_line(report, signame)
    return text if report is None else f"{text}\n{report}"


# -- the hook ----------------------------------------------------------------------------
ExceptHook = Callable[[Type[BaseException], BaseException, Optional[TracebackType]], Any]
_previous: Optional[ExceptHook] = None


_RXBOT_DIR = os.path.normcase(os.path.realpath(os.path.dirname(__file__))) + os.sep


def _through_rxbot(exc: BaseException) -> bool:
    """Raised by, or passed through, rxbot (other errors keep Python's own printing)."""
    if hasattr(exc, "rxbot_step") or hasattr(exc, "rxbot_report"):
        return True
    return any(os.path.normcase(os.path.realpath(f.filename)).startswith(_RXBOT_DIR)
               for f in traceback.extract_tb(exc.__traceback__))


def _hook(kind: Type[BaseException], exc: BaseException, tb: Optional[TracebackType]) -> None:
    previous = _previous or sys.__excepthook__
    if not _through_rxbot(exc):
        previous(kind, exc, tb)
        return
    if isinstance(exc, KeyboardInterrupt):
        text = getattr(exc, "rxbot_stopped_text", None)  # made before the hook (see mark_interrupted)
        if text is None:
            print_interruption(getattr(exc, "rxbot_report", None))
        else:
            print(text, file=sys.stderr, flush=True)
        if debug_enabled():
            previous(kind, exc, tb)
        return
    if debug_enabled():
        previous(kind, exc, tb)
        return
    print_short(exc)


def install() -> None:
    """Make uncaught errors that went through rxbot print the short way (idempotent; any
    other exception goes to the hook that was there before)."""
    global _previous
    if sys.excepthook is _hook:
        return
    _previous = sys.excepthook
    sys.excepthook = _hook


__all__ = ["format_short", "print_short", "install", "debug_enabled", "is_user_frame", "hint",
           "interruption_line", "print_interruption", "mark_interrupted"]
