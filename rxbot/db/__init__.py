"""Database and file nodes.

* :mod:`rxbot.db.mysql` — ``Query``/``Insert`` on aiomysql (MySQL, MariaDB);
* :mod:`rxbot.db.sqlite` — the same nodes on aiosqlite, for a local file and no server;
* :mod:`rxbot.db.aiofile` — ``aiofile`` (write items as lines) and ``ReadLines``;
* :mod:`rxbot.db.params` — how databot's ``{name}`` placeholders become bound parameters;
* :mod:`rxbot.db.values` — values converted exactly for each database, or refused
  (:class:`UnsupportedValueError`); :func:`register_adapter` for a type of your own.

The submodules import their drivers, so nothing is imported here until they are used.
"""
from .params import ParameterError
from .values import UnsupportedValueError, register_adapter, unregister_adapter

__all__ = ["ParameterError", "UnsupportedValueError", "register_adapter", "unregister_adapter"]
