"""Old path of :mod:`rxbot.tree.node`, kept for code written against it (databot 0.1.8's path,
see docs/migration.md; the API docs named it). Importing this path gives that very module
object (``rxbot.node is rxbot.tree.node``), so a monkeypatch through either path reaches the
same code. Code inside rxbot imports the new path (tests/test_layers.py)."""
import importlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what a type checker sees at this path
    from rxbot.tree.node import *  # noqa: F401,F403

sys.modules[__name__] = importlib.import_module("rxbot.tree.node")
