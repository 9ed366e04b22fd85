"""Run a blocking step off the event loop: a thread pool, a process pool, or Dask."""
from __future__ import annotations

import asyncio
import concurrent.futures
import pickle
from typing import Any, Callable


def boosted(fn: Callable[[Any], Any], kind: str, ctx: Any, label: str, workers: int) -> Callable[[Any], Any]:
    """Wrap ``fn`` so that calling it returns an awaitable running it on ``kind``."""
    if kind == "thread":
        key = ("thread", workers)
        if key not in ctx.executors:
            ctx.executors[key] = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="rxbot")
        pool = ctx.executors[key]
        loop = ctx.loop
        return lambda item: loop.run_in_executor(pool, fn, item)
    if kind == "process":
        try:
            pickle.dumps(fn)
        except Exception as exc:
            raise TypeError(
                f"step {label!r}: boost='process' needs a picklable function (defined at module "
                f"top level, not a lambda or closure); pickling failed: {exc}"
            ) from None
        key = ("process", workers)
        if key not in ctx.executors:
            ctx.executors[key] = concurrent.futures.ProcessPoolExecutor(workers)
        pool = ctx.executors[key]
        loop = ctx.loop
        return lambda item: loop.run_in_executor(pool, fn, item)
    if kind == "cluster":
        from .dask_boost import cluster_call

        return cluster_call(fn, ctx, label)
    raise ValueError(f"step {label!r}: unknown boost type {kind!r}")


__all__ = ["boosted"]
