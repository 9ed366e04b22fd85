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
``RXBOT_CONNECT_TIMEOUT``  ``connect_timeout``      seconds
=========================  =======================  ===================================

A value that does not parse stops the import with an error naming the variable.
"""
from __future__ import annotations

import difflib
from typing import Any, Dict, Iterable, Mapping

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
}

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
#: the exception policies (here, below ``rxbot.config``, which imports this module)
POLICIES = ("raise", "ignore", "retry", "pipein")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _parse(variable: str, setting: str, kind: str, text: str) -> Any:
    value = text.strip()
    if setting == "exception_policy":
        if value.lower() not in POLICIES:
            raise ValueError(f"{variable} must be one of {', '.join(POLICIES)}; got {text!r}")
        return value.lower()
    if setting == "log_level":
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"{variable} must be one of {', '.join(LOG_LEVELS)}; got {text!r}")
        return value.upper()
    if kind.startswith("bool"):
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ValueError(f"{variable} must be 1 or 0 (true/false, yes/no); got {text!r}")
    if kind == "int":
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"{variable} must be an integer; got {text!r}") from None
        if number < (1 if setting == "default_concurrency" else 0):
            raise ValueError(f"{variable} is too small; got {text!r}")
        return number
    if kind == "float":
        try:
            seconds = float(value)
        except ValueError:
            raise ValueError(f"{variable} must be a number of seconds; got {text!r}") from None
        if not seconds >= 0:
            raise ValueError(f"{variable} must be >= 0; got {text!r}")
        return seconds
    return value or None


def from_environment(environ: Mapping[str, str], kinds: Mapping[str, Any]) -> Dict[str, Any]:
    """The settings the ``RXBOT_*`` variables of ``environ`` give (``kinds``: setting ->
    its annotation, e.g. ``'bool'``, ``'float'``, ``'str | None'``)."""
    values: Dict[str, Any] = {}
    for variable, setting in VARIABLES.items():
        if variable in environ:
            values[setting] = _parse(variable, setting, str(kinds[setting]), environ[variable])
    return values


def suggest(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'exception_policy'?"`` for a near miss, else ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


__all__ = ["VARIABLES", "from_environment", "suggest", "LOG_LEVELS"]
