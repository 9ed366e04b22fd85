"""Run a blocking step off the event loop: a thread pool, a process pool, or Dask.

A boosted step is an :func:`~rxbot.engine.operators.bounded_map` whose function is the
wrapper returned by :func:`boosted`: calling it hands the item to an executor and
returns an awaitable, so the event loop (timers, other pipes, other steps) keeps
running while the blocking call works. The stage's slots (its ``concurrency``, i.e.
``workers``) bound how many items are in the executor at once, which is also what keeps
memory flat: a boosted step is a flow-control boundary like any async step.

Executors belong to the run (``ctx.executors``) and are shut down by
:meth:`RunContext.shutdown <rxbot.engine.context.RunContext.shutdown>`; the Dask client
and local cluster are closed by a task the run owns (see :mod:`.dask_boost`).
"""
from __future__ import annotations

import collections.abc
import concurrent.futures
import multiprocessing
import os
from typing import Any, Awaitable, Callable

from ..config import config
from ..node import BOOST_TYPES, is_async_callable
from .picklable import check_picklable


def call_materialized(fn: Callable[[Any], Any], item: Any) -> Any:
    """Call ``fn(item)`` in the worker and turn a lazy result (generator, iterator) into
    a list there. Otherwise the blocking body of a generator would run later, on the
    event loop, while the engine iterates it — and a generator cannot be pickled back
    from a process anyway."""
    result = fn(item)
    if isinstance(result, collections.abc.Iterator):
        return list(result)
    return result


def check_sync(fn: Any, kind: str, label: str) -> None:
    """Boost is for blocking *sync* code; an ``async def`` step already runs on the loop
    without blocking it, and in a worker it would only return an un-awaited coroutine."""
    if is_async_callable(fn):
        raise TypeError(
            f"step {label!r}: boost={kind!r} runs a blocking sync function off the event loop, "
            f"but {label!r} is async; an async step already runs without blocking the loop "
            f"(remove boost, or make it a plain def)"
        )


def process_workers(workers: int) -> int:
    """More processes than cores only adds start-up and memory for CPU-bound work (the
    reason to choose processes); blocking I/O belongs in threads."""
    return max(1, min(workers, os.cpu_count() or 1))


def _process_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    # The platform default start method unless configured: on Linux ('fork') it runs a
    # databot script without an ``if __name__ == '__main__'`` guard and with functions
    # defined in __main__; 'spawn'/'forkserver' re-import the main script in each child.
    method = getattr(config, "boost_start_method", None)
    ctx = multiprocessing.get_context(method) if method else None
    return concurrent.futures.ProcessPoolExecutor(process_workers(workers), mp_context=ctx)


def boosted(fn: Callable[[Any], Any], kind: str, ctx: Any, label: str, workers: int) -> Callable[[Any], Awaitable[Any]]:
    """Wrap ``fn`` so that calling it returns an awaitable running it on ``kind``.

    One executor per (kind, step function, workers) per run: two boosted steps do not
    compete for the same threads (even two lambdas with the same label), while a step
    built once per item (a BlockedJoin branch) still reuses its pool.
    """
    if kind not in BOOST_TYPES:
        raise ValueError(f"step {label!r}: unknown boost type {kind!r}; use one of {BOOST_TYPES}")
    check_sync(fn, kind, label)
    if kind == "cluster":
        from .dask_boost import cluster_call

        return cluster_call(fn, ctx, label)
    loop = ctx.loop
    key = (kind, id(fn), workers)  # fn lives in the step tree for the whole run
    if kind == "thread":
        pool = ctx.executors.get(key)
        if pool is None:
            pool = ctx.executors[key] = concurrent.futures.ThreadPoolExecutor(
                workers, thread_name_prefix=f"rxbot-{label[:24]}")
    else:  # process
        check_picklable(fn, kind, label)
        pool = ctx.executors.get(key)
        if pool is None:
            pool = ctx.executors[key] = _process_pool(workers)

    def submit(item: Any) -> Awaitable[Any]:
        return loop.run_in_executor(pool, call_materialized, fn, item)

    return submit


__all__ = ["boosted", "call_materialized", "check_picklable", "check_sync", "process_workers"]
