"""Old path of :mod:`rxbot.observe.stats`, kept for code written against it (the API docs named
it (the stats hook)). Importing this path gives that very module object (``rxbot.stats is
rxbot.observe.stats``), so a monkeypatch through either path reaches the same code. Code
inside rxbot imports the new path (tests/test_layers.py)."""
import importlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what a type checker sees at this path
    from rxbot.observe.stats import *  # noqa: F401,F403

sys.modules[__name__] = importlib.import_module("rxbot.observe.stats")
