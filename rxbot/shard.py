"""``rxbot.shard``: which share of the source this run works on.

A sharded run (``BotFrame.run(cluster=..., shards=N)``) runs the whole pipe N times on a
Dask cluster, each copy (a *shard*) on its own share of the source. Any step can read
``shard.index`` (0..N-1) and ``shard.count`` (N) to act on its share: a ``Query`` source
selects ``where id % {count} = {index}``, an ``aiofile`` sink names one file per shard.
Outside a sharded run they read 0 and 1, so the same script runs unchanged locally.

Why a context variable: two shards may run in one worker process at once (a worker with
several threads runs several shard tasks on its event loop), and each must see its own
index. Every task and callback of a shard's run inherits the variable, and so does each
call of a thread-boosted step (the engine runs it in a copy of the context). In a
thread started some other way the value comes from the only shard running in that
process, and reading it is an error when several are.

This module belongs to the step tree: it imports nothing from the engine.
"""
from __future__ import annotations

import contextvars
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ShardInfo:
    """One shard's place: ``index`` in ``0..count-1``."""

    index: int = 0
    count: int = 1


_UNSHARDED = ShardInfo()
_current: contextvars.ContextVar[ShardInfo | None] = contextvars.ContextVar("rxbot_shard", default=None)
#: the shards running in this process, for reads from threads that lost the context
_running: Dict[int, ShardInfo] = {}
_lock = threading.Lock()


def current() -> ShardInfo:
    """The shard the calling code runs in (``ShardInfo(0, 1)`` outside a sharded run)."""
    info = _current.get()
    if info is not None:
        return info
    with _lock:
        shards = set(_running.values())
    if not shards:
        return _UNSHARDED
    if len(shards) == 1:
        return next(iter(shards))
    raise RuntimeError(
        "rxbot.shard: several shards run in this process and this thread (started outside "
        "rxbot's run) does not say which one it belongs to. Read shard.index in a step and "
        "pass it along with the item")


def __getattr__(name: str) -> int:
    """``shard.index`` and ``shard.count`` are read when a step runs, not at import
    (so write ``shard.index`` in the step, never ``from rxbot.shard import index``)."""
    if name == "index":
        return current().index
    if name == "count":
        return current().count
    raise AttributeError(f"module 'rxbot.shard' has no attribute {name!r}")


def aware(fn: F) -> F:
    """Mark a first step that selects its own share by reading ``shard``.

    A sharded run splits a list, range or Loop first step by item index itself. Any
    other first step (a function, a Query, ...) runs once in *every* shard, so unless
    it reads ``shard`` each shard would produce every item; a sharded run therefore
    refuses such a first step unless it carries this mark.
    """
    try:
        fn.__rxbot_shard_aware__ = True  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        raise TypeError(f"shard.aware: cannot mark {fn!r}; wrap it in a def") from None
    return fn


@aware
def params(_: Any = None) -> Dict[str, int]:
    """A ready shard-aware first step: ``{'index': i, 'count': n}`` for the trigger,
    to feed a parameterised source such as
    ``Query("select * from t where id % {count} = {index}")``."""
    info = current()
    return {"index": info.index, "count": info.count}


def fill(text: str) -> str:
    """``text`` with ``{index}`` and ``{count}`` replaced by this shard's (any other
    braces are left alone): ``aiofile("out-{index}.txt")`` writes one file per shard."""
    if "{" not in text:
        return text
    info = current()
    return text.replace("{index}", str(info.index)).replace("{count}", str(info.count))


def is_shard_aware(step_fn: Any) -> bool:
    return bool(getattr(step_fn, "__rxbot_shard_aware__", False))


class entered:
    """``with entered(ShardInfo(i, n)):`` — the code inside (and every task it starts)
    runs as shard ``i`` of ``n``."""

    def __init__(self, info: ShardInfo) -> None:
        self.info = info
        self.token: contextvars.Token | None = None

    def __enter__(self) -> ShardInfo:
        self.token = _current.set(self.info)
        with _lock:
            _running[id(self)] = self.info
        return self.info

    def __exit__(self, *exc: Any) -> None:
        with _lock:
            _running.pop(id(self), None)
        if self.token is not None:
            _current.reset(self.token)


__all__ = ["ShardInfo", "current", "aware", "params", "fill", "entered", "is_shard_aware"]
