"""rxbot: databot-style data-flow pipelines on reactivex and asyncio."""
from typing import TYPE_CHECKING, Any
import logging as _logging

from .botframe import BotFrame
from .config import config
from .errors import StepError
from .tree.flow import (B, BlockedJoin, Branch, F, Fi, Filter, Fork, J, Join, Loop, P, Pipe,
                        Return, Route, T, Timer)
from .tree.node import Node
from .redact import install_log_filter as _install_log_filter
from .tree.step import Step
from . import shard  # rxbot.shard.index / .count: which share of a sharded run this is

_install_log_filter(_logging.getLogger("rxbot"))  # every rxbot log line is redacted
from .observe import logs as _logs  # noqa: E402,F401 - and carries one 'rxbot:' prefix
from .errors_display import install as _install_excepthook  # noqa: E402

# uncaught errors that went through rxbot print the short way, those of building a Pipe
# too (any other exception goes to the hook that was there before)
_install_excepthook()

__version__ = "0.1.0"


def _setup_display() -> None:
    """Pipes draw themselves in notebooks; BotFrame too inside a running IPython."""
    import sys

    from . import display
    from .draw import notebook

    display.set_drawer(notebook.draw_tree)
    if "IPython" in sys.modules:
        notebook.register_ipython(BotFrame)


_setup_display()

__all__ = [
    "Pipe", "Loop", "Timer", "Branch", "Return", "Filter", "Fork", "Join", "BlockedJoin",
    "Route", "Step", "Node", "BotFrame", "config", "StepError",
    "HttpLoader", "HttpRequest", "HttpResponse", "aiofile", "ReadLines",
    "P", "B", "T", "F", "J", "Fi",
]


if TYPE_CHECKING:  # what the lazy names below are, for type checkers (mypy, IDEs)
    from .db.aiofile import ReadLines, aiofile
    from .http import HttpLoader, HttpRequest, HttpResponse


#: old submodule names -> the modules (the same objects as at the old paths)
_MOVED_MODULES = {
    'flow': 'rxbot.tree.flow',
    'step': 'rxbot.tree.step',
    'node': 'rxbot.tree.node',
    'render': 'rxbot.draw.render',
    'report_io': 'rxbot.observe.report_io',
    'stats': 'rxbot.observe.stats',
    'trace': 'rxbot.observe.trace',
}


def __getattr__(name: str) -> Any:
    if name in _MOVED_MODULES:  # a moved module by its old name (flow, render, ...)
        import importlib

        return importlib.import_module(_MOVED_MODULES[name])
    # HTTP and file nodes import aiohttp/aiofiles; load them on first use only.
    if name in ("HttpLoader", "HttpRequest", "HttpResponse"):
        from . import http

        return getattr(http, name)
    if name in ("aiofile", "ReadLines"):
        from .db import aiofile as files

        return getattr(files, name)
    raise AttributeError(f"module 'rxbot' has no attribute {name!r}")
