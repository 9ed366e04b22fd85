"""What runs on a Dask worker: one shard of a sharded run.

:func:`run_shard` is an ``async def`` task, so Dask runs it on the worker's own event
loop. It unpickles the pipes with this shard's share of each source, applies the
client's settings, and runs the pipes with the ordinary engine, so every node is
initialised and closed here, in the worker (connections never cross the wire).

Dask does not interrupt a running task when its future is cancelled (the worker only
marks it ``cancelled`` and waits for it). So the shard watches its own task state and
cancels its run as soon as the scheduler has let go of it: the client cancelled it
(another shard failed, Ctrl-C, SIGTERM) or the client went away. The run then stops
like a local run that is cancelled: sources stop, nodes are closed.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict

from ..config import config
from ..errors import short_repr
from ..shard import ShardInfo, entered
from .merge import counts, portable, stand_in
from .plan import load_pipes

log = logging.getLogger("rxbot")

#: seconds between two looks at the task state and two progress events
WATCH_EVERY = 0.2
PROGRESS_EVERY = 0.5
_RUNNING_STATES = ("executing", "long-running")
#: the settings applied in this process and how many shards use them now
_applied: Dict[str, Any] = {"settings": None, "users": 0}


async def run_shard(pipes_blob: bytes, share_blob: bytes, index: int, count: int,
                    settings: Dict[str, Any], key: str, topic: str | None = None,
                    checkpoints: Dict[str, Any] | None = None) -> Any:
    """Run shard ``index`` of ``count``; return its run report (made picklable).

    ``checkpoints`` (``{"id", "attempts"}``): the client's run id, for the shard's checkpoints
    (a shard whose pipes have Inserts checkpoints like a resumed local run, filed under
    the run id and the shard, so Dask re-running it on another worker after its worker
    died goes on from there: exactly once into MySQL/SQLite), and the event topic where
    each attempt says where it runs and how far it resumed.

    A failure is raised as the original exception, with a note naming the shard and
    worker and the shard's report attached as ``rxbot_shard_report``."""
    from ..engine import run_pipes

    worker = _worker()
    where = f"shard {index} of {count}" + (f" on Dask worker {worker.address}" if worker else "")
    try:
        pipes = load_pipes(pipes_blob, share_blob)
    except Exception as exc:
        exc.add_note(f"rxbot: {where} could not load the pipes: every module the script imports "
                     f"(and rxbot) must be installed on the Dask workers")
        raise
    _apply(settings)
    hooks = _checkpoints(pipes, checkpoints, index, count, worker)
    try:
        with entered(ShardInfo(index, count)):
            run = asyncio.ensure_future(run_pipes(pipes, hooks=hooks))  # inherits the shard context
            helpers = [asyncio.ensure_future(_watch(worker, key, run))]
            if topic is not None and worker is not None:
                helpers.append(asyncio.ensure_future(_publish(worker, topic, index, pipes, run)))
            failure: Exception | None = None
            try:
                report = await run
            except Exception as exc:
                failure = _shippable(exc, where, getattr(pipes[0], "report", None))
            finally:
                for helper in helpers:
                    helper.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
                stopped = getattr(pipes[0], "report", None)
                if not run.done() or run.cancelled() or failure is not None:
                    if topic is not None and worker is not None and stopped is not None:
                        _log_counts(worker, topic, index, stopped)  # the client sums what a stopped shard did
            if failure is not None:
                # raised outside the handler: a stand-in must not carry the unpicklable
                # original as its __context__ (Dask pickles the chain, and on failure sends
                # a bare Exception(repr) without the step and shard)
                raise failure
    finally:
        _applied["users"] -= 1
    _announce_end(checkpoints, index, worker, hooks)
    if topic is not None and worker is not None:
        _log_counts(worker, topic, index, report)
    return portable(report)


def _checkpoints(pipes: Any, run: Dict[str, Any] | None, index: int, count: int, worker: Any) -> Any:
    """The shard's resume hooks when its pipes write with Inserts (else None: a re-run
    shard is at-least-once, as its sinks are); the attempt is announced to the client."""
    hooks = None
    if run is not None:
        from ..db.base import InsertNode
        from ..durable.resume import ResumeHooks, ResumeRefused
        from ..tree.walk import nodes_in

        if any(isinstance(n, InsertNode) for p in pipes for n in nodes_in(p.steps)):
            try:
                hooks = ResumeHooks(pipes, run_key=shard_run_key(run["id"], index, count))
            except ResumeRefused as exc:
                log.warning("rxbot: shard %d of %d runs without checkpoints: %s", index, count, exc)
        if worker is not None and run.get("attempts"):
            worker.log_event(run["attempts"], {"shard": index, "worker": worker.address,
                                               "checkpointed": hooks is not None})
            if hooks is not None:  # how far the shard has settled, for an error that must say so
                topic = run["attempts"]

                def settled(pipe: int, offset: int) -> None:
                    worker.log_event(topic, {"shard": index, "settled": {f"P{pipe}": offset}})

                for resume in hooks.pipes:
                    resume.on_commit = settled
    return hooks


def shard_run_key(run_id: str, index: int, count: int) -> str:
    """What a shard's checkpoints are filed under: the run's id (no later run finds them)
    and the shard (its re-run on another worker does)."""
    return f"{run_prefix(run_id)}shard{index}of{count}"


def run_prefix(run_id: str) -> str:
    return f"sharded-{run_id}/"


async def forget_run(pipes_blob: bytes, share_blob: bytes, run_id: str) -> list:
    """The task that deletes a finished sharded run's checkpoints from the databases of
    its Inserts (run on a worker: the workers reach the databases, the client may not).
    Returns what could not be cleared."""
    from ..durable.resume import forget_checkpoints

    return await forget_checkpoints(load_pipes(pipes_blob, share_blob), run_prefix(run_id))


def _announce_end(run: Dict[str, Any] | None, index: int, worker: Any, hooks: Any) -> None:
    if run is None or worker is None or not run.get("attempts") or hooks is None:
        return
    resumed = {str(k): v.get("resumed_from", 0) for k, v in hooks.delivery().items()}
    worker.log_event(run["attempts"], {"shard": index, "worker": worker.address, "resumed_from": resumed})


def _worker() -> Any:
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):  # not on a worker (a test calling us directly)
        return None


def _apply(settings: Dict[str, Any]) -> None:
    """The client's ``config`` for this process. It is process-wide: shards of one run
    share it; a shard of another run with other settings at the same time is warned."""
    if _applied["users"] and _applied["settings"] != settings:
        log.warning("rxbot: shards of two runs with different config share this worker "
                    "process; the later one's settings apply to both")
    for name, value in settings.items():
        setattr(config, name, value)
    _applied["settings"] = settings
    _applied["users"] += 1


async def _watch(worker: Any, key: str, run: asyncio.Future) -> None:
    """Cancel ``run`` once the scheduler no longer wants this task."""
    if worker is None:
        return
    while not run.done():
        task = worker.state.tasks.get(key)
        if task is None or task.state not in _RUNNING_STATES:
            log.info("rxbot: %s was cancelled by the client; stopping it", key)
            run.cancel()
            return
        await asyncio.sleep(WATCH_EVERY)


async def _publish(worker: Any, topic: str, index: int, pipes: Any, run: asyncio.Future) -> None:
    """Send this shard's live counts to the client (``--progress``) as Dask events."""
    while not run.done():
        await asyncio.sleep(PROGRESS_EVERY)
        report = getattr(pipes[0], "report", None)
        if report is not None:
            _log_counts(worker, topic, index, report)


def _log_counts(worker: Any, topic: str, index: int, report: Any) -> None:
    # msgpack-serialisable: step keys as text, in the report's order
    worker.log_event(topic, {"shard": index,
                             "steps": [[str(k), v] for k, v in counts(report).items()]})


def _shippable(exc: Exception, where: str, report: Any) -> Exception:
    """``exc`` with the shard named and its report attached, made to survive the trip to
    the client if it can (an unpicklable item attached by the engine is replaced by its
    text; causes that do not survive are replaced by stand-ins), else a
    :class:`~.merge.RemoteError` with its type, message and notes (step and shard)."""
    exc.add_note(f"rxbot: raised in {where}")
    try:
        exc.rxbot_shard_report = portable(report) if report is not None else None  # type: ignore[attr-defined]
    except Exception:
        pass
    _portable_chain(exc)
    problem = _round_trip(exc)
    if problem is not None and hasattr(exc, "rxbot_item"):
        exc.rxbot_item = short_repr(exc.rxbot_item)  # type: ignore[attr-defined]
        problem = _round_trip(exc)
    if problem is None:
        return exc
    shown = stand_in(exc)
    shown.add_note(f"rxbot: the original exception could not be sent from the worker ({problem})")
    shown.rxbot_shard_report = getattr(exc, "rxbot_shard_report", None)  # type: ignore[attr-defined]
    return shown


def _round_trip(exc: BaseException) -> str | None:
    """Why ``exc`` cannot be pickled on a worker and unpickled on the client, or None.
    (Its causes travel too, see :func:`_portable_chain`.)"""
    import pickle

    import cloudpickle

    try:
        pickle.loads(cloudpickle.dumps(exc))
        return None
    except Exception as problem:
        return f"{type(problem).__name__}: {problem}"


def _portable_chain(exc: BaseException, depth: int = 0) -> None:
    """Dask sends an exception's ``__cause__`` and ``__context__`` along with it: replace
    each one that cannot make the trip by a stand-in, so the chain never costs the user
    the exception itself."""
    for name in ("__cause__", "__context__"):
        link = getattr(exc, name)
        if link is None:
            continue
        if depth < 16:
            _portable_chain(link, depth + 1)
        if _round_trip(link) is not None:
            setattr(exc, name, stand_in(link))


__all__ = ["run_shard", "forget_run", "shard_run_key"]
