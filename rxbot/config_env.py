"""``RXBOT_*`` environment variables for the main settings, and "did you mean" for typos.

The environment sets the defaults the script starts with (a deployment can switch a job
to ``ignore`` or turn progress on without editing it); an assignment in the script wins.

=========================  =======================  ===================================
variable                   setting                  values
=========================  =======================  ===================================
``RXBOT_POLICY``           ``exception_policy``     raise, ignore, retry, pipein
``RXBOT_RETRY_ATTEMPTS``   ``retry_attempts``       an integer >= 0
``RXBOT_CONCURRENCY``      ``default_concurrency``  an integer >= 1
``RXBOT_SHUTDOWN_GRACE``   ``shutdown_grace``       seconds
``RXBOT_METRICS``          ``metrics``              1/0 (count sync steps always/never)
``RXBOT_PROGRESS``         ``progress``             1/0
``RXBOT_STATS_INTERVAL``   ``stats_interval``       seconds
``RXBOT_REPLAY``           ``replay_mode``          1/0
``RXBOT_REPLAY_DIR``       ``replay_dir``           a folder
``RXBOT_LOG_LEVEL``        ``log_level``            DEBUG, INFO, WARNING, ERROR
``RXBOT_DEBUG``            ``debug``                1/0 (full tracebacks)
``RXBOT_DASK_ADDRESS``     ``dask_address``         a Dask scheduler address
``RXBOT_CONNECT_TIMEOUT``  ``connect_timeout``      seconds (> 0)
``RXBOT_NO_FUSION``        ``fusion`` (inverted)    1/0: 1 turns fusion off
``RXBOT_TRACE``            ``trace``                a Python expression over ``item``
=========================  =======================  ===================================

Booleans are ``1, true, yes, on`` or ``0, false, no, off`` (any case); anything else,
like any value that does not parse, stops the import with one line naming the variable,
its value and what is allowed (:class:`EnvironmentSettingError`).
An unknown ``RXBOT_*`` variable close to one of these (``RXBOT_POLCY``) gets a warning
line on stderr with the one it probably means.
"""
from __future__ import annotations

import difflib
import sys
from typing import Any, Dict, Iterable, List, Mapping

#: variable -> setting
VARIABLES: Dict[str, str] = {
    "RXBOT_POLICY": "exception_policy",
    "RXBOT_RETRY_ATTEMPTS": "retry_attempts",
    "RXBOT_CONCURRENCY": "default_concurrency",
    "RXBOT_SHUTDOWN_GRACE": "shutdown_grace",
    "RXBOT_METRICS": "metrics",
    "RXBOT_PROGRESS": "progress",
    "RXBOT_STATS_INTERVAL": "stats_interval",
    "RXBOT_REPLAY": "replay_mode",
    "RXBOT_REPLAY_DIR": "replay_dir",
    "RXBOT_LOG_LEVEL": "log_level",
    "RXBOT_DEBUG": "debug",
    "RXBOT_DASK_ADDRESS": "dask_address",
    "RXBOT_CONNECT_TIMEOUT": "connect_timeout",
    "RXBOT_TRACE": "trace",
}

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
#: the exception policies (here, below ``rxbot.config``, which imports this module)
POLICIES = ("raise", "ignore", "retry", "pipein")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: variables whose truth turns their setting off
INVERTED = {"RXBOT_NO_FUSION": "fusion"}
#: settings that must be more than 0 (a zero deadline or interval cannot work)
POSITIVE = ("connect_timeout", "stats_interval", "default_concurrency")


class EnvironmentSettingError(ValueError):
    """An ``RXBOT_*`` variable holds a value its setting cannot take. Uncaught, it is
    printed as its one line (see :func:`one_line_hook`), also for ``rxbot --version``."""


def _refuse(variable: str, text: str, allowed: str) -> EnvironmentSettingError:
    return EnvironmentSettingError(f"{variable} must be {allowed}; got {text!r}")


def _parse(variable: str, setting: str, kind: str, text: str) -> Any:
    value = text.strip()
    if setting == "exception_policy":
        if value.lower() not in POLICIES:
            raise _refuse(variable, text, f"one of {', '.join(POLICIES)}")
        return value.lower()
    if setting == "log_level":
        if value.upper() not in LOG_LEVELS:
            raise _refuse(variable, text, f"one of {', '.join(LOG_LEVELS)}")
        return value.upper()
    if kind.startswith("bool"):
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise _refuse(variable, text, "a boolean: 1, true, yes, on or 0, false, no, off")
    if kind == "int":
        least = 1 if setting in POSITIVE else 0
        try:
            number = int(value)
        except ValueError:
            raise _refuse(variable, text, f"an integer >= {least}") from None
        if number < least:
            raise _refuse(variable, text, f"an integer >= {least}")
        return number
    if kind == "float":
        allowed = "a number of seconds " + ("> 0" if setting in POSITIVE else ">= 0")
        try:
            seconds = float(value)
        except ValueError:
            raise _refuse(variable, text, allowed) from None
        if not (0 <= seconds < float("inf")) or (seconds == 0 and setting in POSITIVE):
            raise _refuse(variable, text, allowed)
        return seconds
    return value or None


def from_environment(environ: Mapping[str, str], kinds: Mapping[str, Any]) -> Dict[str, Any]:
    """The settings the ``RXBOT_*`` variables of ``environ`` give (``kinds``: setting ->
    its annotation, e.g. ``'bool'``, ``'float'``, ``'str | None'``); an
    :class:`EnvironmentSettingError` naming the variable, its value and what is allowed."""
    values: Dict[str, Any] = {}
    for variable, setting in VARIABLES.items():
        if variable in environ:
            values[setting] = _parse(variable, setting, str(kinds[setting]), environ[variable])
    for variable, setting in INVERTED.items():
        if variable in environ:
            values[setting] = not _parse(variable, setting, "bool", environ[variable])
    return values


def one_line_hook() -> None:
    """Print an uncaught :class:`EnvironmentSettingError` as one line (a deployment's
    typo deserves no 20-line traceback into rxbot's import); others as before."""
    previous = sys.excepthook
    if getattr(previous, "rxbot_one_line", False):
        return

    def hook(kind: Any, error: BaseException, tb: Any) -> None:
        if isinstance(error, EnvironmentSettingError):
            print(f"rxbot: {error}", file=sys.stderr)
        else:
            previous(kind, error, tb)

    hook.rxbot_one_line = True  # type: ignore[attr-defined]
    sys.excepthook = hook


#: other variables rxbot reads (tests, examples, benchmarks read more of their own)
OTHER_VARIABLES = ("RXBOT_NO_FUSION", "RXBOT_MYSQL_HOST", "RXBOT_MYSQL_PORT", "RXBOT_MYSQL_USER",
                   "RXBOT_MYSQL_PASSWORD", "RXBOT_MYSQL_DB")


def misspelt(environ: Mapping[str, str]) -> List[str]:
    """A warning line for each ``RXBOT_*`` variable of ``environ`` that rxbot does not
    read but that is a near miss of one it does (``RXBOT_POLCY``): set, it would be
    silently ignored. Variables of other tools that share the prefix are left alone
    unless they are that close."""
    known = [*VARIABLES, *INVERTED, *OTHER_VARIABLES]
    lines = []
    for name in sorted(environ):
        if name.startswith("RXBOT_") and name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
            if close:
                lines.append(f"rxbot: warning: the environment variable {name} is not one rxbot reads; "
                             f"did you mean {close[0]}?")
    return lines


def suggest(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'exception_policy'?"`` for a near miss, else ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


__all__ = ["VARIABLES", "INVERTED", "from_environment", "suggest", "LOG_LEVELS", "EnvironmentSettingError",
           "one_line_hook", "misspelt"]
