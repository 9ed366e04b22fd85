"""Sharded runs: a whole pipe on a Dask cluster, each shard on its share of the source.

``BotFrame.run(cluster=..., shards=N)`` (or ``rxbot run --cluster ADDRESS --shards N``)
ships the pipes to the cluster's workers and runs them there N times, shard ``k`` on
the source items ``i`` with ``i % N == k``; the shards' reports are merged into one.
See ``docs/scaling.md``.

* :mod:`.plan` — split each pipe's source, refuse what cannot be sharded;
* :mod:`.worker` — the ``async`` Dask task that runs one shard on a worker;
* :mod:`.merge` — one report from the shards' reports;
* :mod:`.run` — the client: connect, submit, gather, cancel.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import config

if TYPE_CHECKING:  # pragma: no cover
    from ..engine import RunReport


def sharding_requested(cluster: Any = None, shards: int | None = None) -> bool:
    """True when a run must be sharded: by its arguments, else by ``config.cluster`` /
    ``config.shards`` (set by ``rxbot run --cluster/--shards``)."""
    return any(v is not None and v is not False for v in (
        cluster, shards, getattr(config, "cluster", None), getattr(config, "shards", None)))


async def run_sharded(pipes: Any, cluster: Any = None, shards: int | None = None,
                      observe: Any = None) -> "RunReport":
    """See :func:`rxbot.cluster.run.run_sharded` (imported here on first use: it needs
    Dask, which only sharded runs do)."""
    try:
        from .run import run_sharded as run
    except ImportError as exc:
        raise ImportError(
            f"a sharded run (cluster=/shards=, --cluster/--shards) needs Dask distributed: "
            f"pip install 'dask[distributed]' ({exc})") from exc
    return await run(pipes, cluster, shards, observe)


def __getattr__(name: str) -> Any:
    if name in ("merge_reports", "ShardingError"):
        from . import merge, plan

        return getattr(merge if name == "merge_reports" else plan, name)
    raise AttributeError(f"module 'rxbot.cluster' has no attribute {name!r}")


__all__ = ["run_sharded", "sharding_requested", "merge_reports", "ShardingError"]
