"""DESIGN §1: the import paths are part of the contract."""
from __future__ import annotations

import importlib

import pytest

CONTRACT = {
    "rxbot": ["Pipe", "Loop", "Timer", "Branch", "Return", "Filter", "Fork", "Join", "BlockedJoin",
              "Step", "Node", "BotFrame", "config", "HttpLoader", "HttpRequest", "HttpResponse",
              "aiofile", "P", "B", "T", "F", "J", "Fi"],
    "rxbot.tree.flow": ["Pipe", "Loop", "Timer", "Branch", "Return", "Filter", "Fork", "Join", "BlockedJoin"],
    "rxbot.botframe": ["BotFrame"],
    "rxbot.tree.node": ["Node"],
    "rxbot.config": ["config"],
    "rxbot.http": ["HttpLoader", "HttpRequest", "HttpResponse"],
    "rxbot.http.http": ["HttpLoader", "HttpRequest", "HttpResponse"],
    "rxbot.db.mysql": ["Query", "Insert", "Mysql"],
    "rxbot.bot": ["Bot"],
    "rxbot.db.sqlite": ["Query", "Insert"],
    "rxbot.db.aiofile": ["aiofile", "ReadLines"],
    "rxbot.rx": ["op", "to_observable", "as_operator", "from_observable"],
}


@pytest.mark.parametrize("module", list(CONTRACT))
def test_contract_names_import(module):
    mod = importlib.import_module(module)
    for name in CONTRACT[module]:
        assert hasattr(mod, name), f"{module}.{name} is missing"


def test_databot_compatibility_names_are_the_real_classes():
    from rxbot.bot import Bot
    from rxbot.botframe import BotFrame
    from rxbot.db.mysql import Insert, Mysql, Query

    assert Bot is BotFrame
    assert issubclass(Query, Mysql) and issubclass(Insert, Mysql)


def test_same_objects_under_every_path():
    import rxbot
    import rxbot.tree.flow
    import rxbot.http.http

    assert rxbot.Pipe is rxbot.tree.flow.Pipe and rxbot.Loop is rxbot.tree.flow.Loop
    assert rxbot.HttpLoader is rxbot.http.http.HttpLoader
    assert rxbot.P is rxbot.Pipe and rxbot.Fi is rxbot.Filter and rxbot.J is rxbot.Join
    assert rxbot.BotFrame.run and rxbot.BotFrame.render and rxbot.Node.boost
    # databot's numbers, in databot's order
    c = rxbot.config
    assert (c.Exception_raise, c.Exception_ignore, c.Exception_retry, c.Exception_pipein) == (0, 1, 2, 3)
    assert c.Exception_default == c.Exception_raise == c.exception_policy == 0


def test_importing_rxbot_does_not_load_database_drivers():
    import subprocess
    import sys

    code = "import sys, rxbot; print('aiomysql' in sys.modules, 'aiosqlite' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
