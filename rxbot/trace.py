"""Old path of :mod:`rxbot.observe.trace`, kept for code written against it (the docs named it:
from rxbot.trace import trace_lines). Importing this path gives that very module object
(``rxbot.trace is rxbot.observe.trace``), so a monkeypatch through either path reaches the
same code. Code inside rxbot imports the new path (tests/test_layers.py)."""
import importlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what a type checker sees at this path
    from rxbot.observe.trace import *  # noqa: F401,F403

sys.modules[__name__] = importlib.import_module("rxbot.observe.trace")
