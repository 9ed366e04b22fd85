"""Run a blocking step off the event loop: a thread pool, a process pool, or Dask.

A boosted step is an :func:`~rxbot.engine.operators.bounded_map` whose function is the
wrapper returned by :func:`boosted`: calling it hands the item to an executor and
returns an awaitable, so the event loop (timers, other pipes, other steps) keeps
running while the blocking call works. The stage's slots (its ``concurrency``, i.e.
``workers``) bound how many items are in the executor at once, which is also what keeps
memory flat: a boosted step is a flow-control boundary like any async step.

Executors belong to the run (``ctx.executors``) and are stopped by :func:`stop_boosted`
when the run ends; the Dask client and local cluster are closed by a task the run owns
(see :mod:`.dask_boost`). Every call handed to a thread or process pool is tracked in
``ctx.calls`` until its worker returns, so a stopping run knows exactly which calls it
waits for, and which it abandons after ``config.shutdown_grace``.
"""
from __future__ import annotations

import asyncio
import collections.abc
import concurrent.futures
import contextvars
import logging
import multiprocessing
import os
import threading
from typing import Any, Awaitable, Callable, List

from ..config import config
from ..errors import short_repr
from ..tree.node import BOOST_TYPES, is_async_callable
from .daemon_pool import DaemonThreadPool
from .picklable import check_picklable

log = logging.getLogger("rxbot")


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


def _threads() -> int:
    """The threads of this process, C threads included (what Python 3.12+ counts before
    warning that a fork may deadlock): /proc where there is one, else Python's own."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def start_method() -> str:
    """How a process pool starts its workers.

    ``config.boost_start_method`` when set. Otherwise ``'fork'`` while this process has
    a single thread: it is safe then, and it runs a databot script without an
    ``if __name__ == '__main__'`` guard, with functions defined in ``__main__``, as
    databot did. Once there is another thread (a thread-boosted step, the loop's
    resolver, aiofiles, the live view's server ...), a fork could copy a lock another
    thread holds and deadlock the worker (Python 3.12+ warns about it): then
    ``'forkserver'``, or ``'spawn'`` where there is no forkserver. Their workers import
    the main script again; :func:`rxbot.botframe.in_boost_worker_bootstrap` keeps an
    unguarded script's ``BotFrame.run()`` from running its pipes there (docs/boost.md)."""
    configured = getattr(config, "boost_start_method", None)
    if configured:
        return str(configured)
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and _threads() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _process_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    # chosen when the first call is submitted, which is when a 'fork' pool forks all its
    # workers: the process's threads are counted at that moment (see start_method)
    ctx = multiprocessing.get_context(start_method())
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
            pool = ctx.executors[key] = DaemonThreadPool(workers, name=f"rxbot-{label[:24]}")
    else:  # process: the pool is made at the first call (see _process_pool)
        check_picklable(fn, kind, label)
        pool = ctx.executors.get(key)
    executors = ctx.executors
    calls = ctx.calls

    def submit(item: Any) -> Awaitable[Any]:
        nonlocal pool
        if kind == "thread":  # like asyncio.to_thread: context variables (rxbot.shard) go along
            call = pool.submit(contextvars.copy_context().run, call_materialized, fn, item)
        else:
            if pool is None:
                pool = executors.get(key)
                if pool is None:
                    pool = executors[key] = _process_pool(workers)
            call = pool.submit(call_materialized, fn, item)
        calls[call] = (pool, label, item)
        call.add_done_callback(lambda done: calls.pop(done, None))  # in the worker's thread
        # cancelling the awaitable (timeout, stop) abandons the call; the worker keeps it
        return asyncio.wrap_future(call, loop=loop)

    return submit


async def stop_boosted(ctx: Any) -> None:
    """Stop the run's executors: drop queued calls, wait up to ``config.shutdown_grace``
    seconds for the running ones (nodes are closed right after, and a call still using a
    node's connection after its ``close()`` would be a bug of ours), then abandon what is
    still running so that the run returns anyway: each abandoned call is logged with its
    step and item and listed in ``ctx.report.abandoned``; a process pool running one is
    killed; a thread cannot be killed, but it is a daemon thread that cannot keep the
    interpreter alive (:class:`.daemon_pool.DaemonThreadPool`)."""
    # shutdown() forgets a process pool's workers: take the handles to kill them first
    processes = {id(ex): list((getattr(ex, "_processes", None) or {}).values())
                 for ex in ctx.executors.values()
                 if isinstance(ex, concurrent.futures.ProcessPoolExecutor)}
    for ex in ctx.executors.values():
        shutdown = getattr(ex, "shutdown", None)
        if shutdown is None:
            continue
        try:
            shutdown(wait=False, cancel_futures=True)
        except TypeError:
            shutdown(wait=False)
    running = ctx.calls.copy()  # atomic: workers remove their calls from their own threads
    if not running:
        return
    waiting = {asyncio.wrap_future(call, loop=ctx.loop): call for call in running}
    _, pending = await asyncio.wait(waiting, timeout=config.shutdown_grace)
    killed: set = set()
    for waiter in pending:
        waiter.cancel()  # nothing awaits it any more, even if the worker returns later
        pool, label, item = running[waiting[waiter]]
        is_process = id(pool) in processes
        log.warning("rxbot: abandoned the boosted call of step %r on item %s: still running "
                    "%.1fs after the run stopped (config.shutdown_grace); %s", label,
                    short_repr(item), config.shutdown_grace,
                    "its worker process is killed" if is_process
                    else "its daemon thread is left behind and will not keep the process alive")
        ctx.report.abandoned.append((label, item))
        if is_process and id(pool) not in killed:
            killed.add(id(pool))
            kill_processes(processes[id(pool)])
    for ex in ctx.executors.values():
        if id(ex) in killed:  # let its manager thread see the broken pool and end now,
            await _join_manager(ex)  # not race the interpreter's exit hook on its pipe


#: the least time to wait for a killed process pool's manager thread (it returns as soon
#: as the thread ends: milliseconds on a quiet machine; 5 s was once too short on 3.13
#: with four other processes busy, and the exit hook then printed its traceback)
MANAGER_JOIN_SECONDS = 15.0


async def _join_manager(pool: Any) -> None:
    """Wait (bounded) for a killed process pool's manager thread to end: while it is still
    closing its wake-up pipe, ``concurrent.futures``' exit hook can write to that pipe and
    print a 'Bad file descriptor' traceback at interpreter exit."""
    thread = getattr(pool, "_executor_manager_thread", None)
    if thread is not None and thread.is_alive():
        # it ends within milliseconds once the workers are dead, but on a loaded machine
        # 0.5 s (the default grace) was seen to be too short: bound it by MANAGER_JOIN_SECONDS
        await asyncio.to_thread(thread.join, max(config.shutdown_grace, MANAGER_JOIN_SECONDS))


def kill_processes(processes: List[Any]) -> None:
    """Kill a process pool's workers: its pool is then broken, so its manager thread ends
    instead of waiting forever, at interpreter exit, for a call that never returns."""
    for proc in processes:
        try:
            proc.kill()
        except Exception:  # already gone
            pass

__all__ = ["boosted", "call_materialized", "check_picklable", "check_sync", "kill_processes",
           "process_workers", "start_method", "stop_boosted"]
