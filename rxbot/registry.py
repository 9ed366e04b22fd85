"""Where the plain-data tree meets the layers above it, without importing them.

``Pipe(...)`` registers itself for the next ``BotFrame.run()`` and ``pipe.run()`` /
``pipe.render()`` are conveniences for the façade; the tree (:mod:`rxbot.tree.flow`) reaches
them only through this module, which the façade (:mod:`rxbot.botframe`) plugs into at
import time. So the tree imports nothing above it and the import graph has no cycle.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List

#: pipes built and not yet run (``BotFrame.run()`` runs these)
pending: List[Any] = []

_services: Dict[str, Callable[..., Any]] = {}


def register(pipe: Any) -> None:
    pending.append(pipe)
    registered = _services.get("registered")
    if registered is not None:  # the façade watches for pipes built and never run
        registered(pipe)


def unregister(pipe: Any) -> None:
    if pipe in pending:
        pending.remove(pipe)


def provide(name: str, fn: Callable[..., Any]) -> None:
    """A layer above the tree offers ``fn`` under ``name`` (``run``, ``run_async``,
    ``render``, and ``registered``: called with each pipe as it registers)."""
    _services[name] = fn


def service(name: str) -> Callable[..., Any]:
    try:
        return _services[name]
    except KeyError:
        raise RuntimeError(f"rxbot: no {name!r} service registered; import rxbot (the package) first") from None


__all__ = ["pending", "register", "unregister", "provide", "service"]
