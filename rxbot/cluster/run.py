"""The client side of a sharded run: connect, submit N shard tasks, gather, merge.

Everything Dask offers is used as it is: ``Client(asynchronous=True)``, ``submit`` of an
``async def`` task (run on each worker's event loop), ``cancel``, the scheduler's event
topics for live counts. rxbot adds only the split (:mod:`.plan`), the worker task
(:mod:`.worker`) and the merge (:mod:`.merge`).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import time
import uuid
from dataclasses import fields
from typing import Any, Callable, Dict, List, Sequence, Tuple

from ..config import config
from ..engine import RunReport
from ..engine.dask_boost import connect_deadline
from .merge import merge_reports
from .plan import ShardingError, plan

log = logging.getLogger("rxbot")

#: settings that stay on the client (sinks, the progress display, the run's own
#: cluster) or that the plan has refused (replay)
CLIENT_ONLY = ("dead_letters", "progress", "stats_hook", "stats_interval", "replay_mode", "replay_dir",
               "cluster", "shards")


async def run_sharded(pipes: Sequence[Any], cluster: Any = None, shards: int | None = None,
                      observe: Callable[[RunReport], None] | None = None) -> RunReport:
    """Run every pipe of ``pipes`` as ``shards`` tasks on a Dask cluster and return the
    merged report; raise the first failing shard's original exception (the others are
    cancelled first). ``cluster``: a scheduler address, a ``distributed.Client``, or
    True / None for ``config.dask_address`` else a local cluster on loopback.
    ``observe`` (the live view) is given, once the shards start, a report that holds
    the shards' counts summed, kept up to date as they send them."""
    cluster = cluster if cluster is not None else getattr(config, "cluster", None)
    shards = shards if shards is not None else getattr(config, "shards", None)
    _check_shards(shards)
    started = time.perf_counter()
    chosen = plan(pipes)  # refuses before anything starts
    settings = _settings()
    # every source item must pickle: found before connecting, with the item named
    shares: List[bytes] = []
    if shards:
        shares = [chosen.pickled_share(k, shards) for k in range(shards)]  # all or nothing
    else:
        chosen.check_items()
    for pipe in pipes:  # until the shards send their counts (a run stopped while connecting)
        pipe.report = RunReport()
    async with _Connection(cluster, shards) as client:
        await _preflight(client)
        count = shards or sum((await _bounded(_nthreads(client), "list the workers")).values()) or 1
        run_id = uuid.uuid4().hex[:12]
        if not shares:
            shares = [chosen.pickled_share(k, count) for k in range(count)]
        # the pipes travel with each task (not scattered: a scattered copy dies with its
        # worker, and a shard re-run elsewhere could not load them)
        blob = chosen.blob
        keys = [f"rxbot-shard-{run_id}-{k}" for k in range(count)]
        attempts = f"rxbot-attempts-{run_id}"  # each shard attempt says where it runs
        hook = getattr(config, "stats_hook", None)
        # always: a stopped run (Ctrl-C, SIGTERM) reports the shards' last counts, summed
        live = _LiveCounts(pipes, client, f"rxbot-progress-{run_id}", bool(config.progress), hook, started)
        for pipe in pipes:  # the shards' counts, summed, as they send them (as a local run's live report)
            pipe.report = live.report
        if observe is not None and live is not None:
            observe(live.report)
        try:
            futures = [client.submit(_task(), blob, shares[k], k, count, settings, keys[k],
                                     live.topic if live else None, {"id": run_id, "attempts": attempts},
                                     key=keys[k], pure=False)
                       for k in range(count)]
            reports, error = await _gather(client, futures)
        except BaseException as exc:
            if live is not None:
                live.close()
                _stopped_report(pipes, live.report, started, exc)
            raise
        ran = await _shard_attempts(client, attempts, count, run_id)  # per shard: attempts, workers
        if any(shard["checkpointed"] for shard in ran):
            for future in futures:  # no shard can run again: its checkpoint has served
                future.release()
            await _forget(client, blob, shares[0], run_id)
    error = _named(error, ran)
    report = merge_reports(reports)
    report.shards = ran  # type: ignore[attr-defined]
    report.delivery = _delivery(pipes)  # type: ignore[attr-defined]
    for shard in ran:
        if shard["attempts"] > 1:
            log.warning("rxbot: shard %d of %d re-ran %d time(s) (workers: %s); it went on from its "
                        "checkpoint (%s)", shard["shard"], count, shard["attempts"] - 1,
                        ", ".join(shard["workers"]), shard["resumed_from"] or "no checkpoint")
    report.seconds = time.perf_counter() - started
    if live is not None:
        live.close(report)  # the final sums, whatever events are still on their way
    _finish(pipes, report)
    if error is not None:
        report.error = error
        raise error
    return report


def script_modules() -> List[Tuple[str, str]]:
    """(module name, file) of the modules the running script imported from its own
    folder: they are not installed on the workers, so they are uploaded to them."""
    import sys
    from pathlib import Path

    from ..replay.store import _main_file

    main = _main_file()
    if main is None:
        return []
    folder = main.parent
    found = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name == "__main__" or not path or name.startswith("rxbot") or "." in name:
            continue
        p = Path(path).resolve()
        if p.suffix == ".py" and p.parent == folder and p != main:
            found.append((name, str(p)))
    return sorted(found)


async def _preflight(client: Any) -> None:
    """Before any shard starts: rxbot, the same version, on every worker (a worker
    without it would crash on the first shard and the user would see only "already
    forgotten"); the script's own modules uploaded to the workers and importable there,
    or an error naming the module."""
    import sys

    __version__ = sys.modules["rxbot"].__version__  # (the package itself: not imported from here, no cycle)

    # defined here, so they travel by value: a worker without rxbot can still run them
    def probe_rxbot() -> str:
        import importlib

        try:
            return str(importlib.import_module("rxbot").__version__)
        except Exception as exc:
            return f"cannot import rxbot: {type(exc).__name__}: {exc}"

    def probe_modules(names: List[str]) -> List[str]:
        import importlib

        missing = []
        for name in names:
            try:
                importlib.import_module(name)
            except Exception as exc:
                missing.append(f"{name} ({type(exc).__name__}: {exc})")
        return missing

    versions = await _bounded(client.run(probe_rxbot), "check rxbot on the workers")
    wrong = {w: v for w, v in (versions or {}).items() if v != __version__}
    if wrong:
        shown = "; ".join(f"{w}: {v}" for w, v in sorted(wrong.items()))
        raise RuntimeError(f"sharded run: rxbot {__version__} (this client's) is needed on every Dask worker; "
                           f"{shown}. Install the same rxbot on the workers")
    modules = script_modules()
    for _, path in modules:
        await _bounded(client.upload_file(path), f"upload {path} to the workers")
    if modules:
        missing = await _bounded(client.run(probe_modules, [name for name, _ in modules]),
                                 "import the script's modules on the workers")
        bad = {w: m for w, m in (missing or {}).items() if m}
        if bad:
            worker, names = sorted(bad.items())[0]
            raise RuntimeError(f"sharded run: the script's module {names[0]} cannot be imported on Dask worker "
                               f"{worker} (it was uploaded); install what it needs there")


def _stopped_report(pipes: Sequence[Any], summed: RunReport, started: float, exc: BaseException) -> None:
    """A sharded run stopped by Ctrl-C/SIGTERM (or failing to gather): the pipes' report
    is the shards' last counts summed (they publish them every half second and when they
    stop), not an empty one ("interrupted after 0 items")."""
    summed.seconds = time.perf_counter() - started
    if isinstance(exc, Exception):
        summed.error = exc
    for pipe in pipes:
        pipe._finished = True
        pipe.report = summed


async def _shard_attempts(client: Any, topic: str, count: int, run_id: str) -> List[Dict[str, Any]]:
    """Per shard: attempts, the workers they ran on, where the last one resumed (from the
    events each attempt logs on the scheduler), the run key its checkpoints had."""
    from .worker import shard_run_key

    shards: List[Dict[str, Any]] = [{"shard": k, "attempts": 0, "workers": [], "resumed_from": None,
                                     "checkpointed": False, "run_key": shard_run_key(run_id, k, count)}
                                    for k in range(count)]
    try:
        events = await _bounded(client.get_events(topic), "read the shards' attempts")
    except Exception as exc:  # the numbers are a report, never the run's outcome
        log.debug("rxbot: reading the shards' attempts: %r", exc)
        return shards
    for _, msg in events or ():
        shard = shards[int(msg["shard"])]
        if "resumed_from" in msg:
            shard["resumed_from"] = msg["resumed_from"]
        elif "settled" in msg:  # a checkpoint committed: source items settled so far, per pipe
            shard.setdefault("settled", {}).update(msg["settled"])
        else:
            shard["attempts"] += 1
            shard["workers"].append(str(msg["worker"]))
            shard["checkpointed"] = bool(msg.get("checkpointed"))
    return shards


def _delivery(pipes: Sequence[Any]) -> Dict[str, Any]:
    """Which sinks a re-run shard writes exactly once (Inserts, checkpointed) and which
    at least once (the shard's open epoch again, or all of it without a checkpoint)."""
    from ..durable.resume import delivery_of

    return delivery_of(pipes)


async def _forget(client: Any, blob: bytes, share: bytes, run_id: str) -> None:
    """Delete the run's checkpoints (one row per shard and Insert, filed under its run
    id, which no later run uses) through a task on a worker; a failure is a warning."""
    from .worker import forget_run, run_prefix

    try:
        problems = await _bounded(client.submit(forget_run, blob, share, run_id, pure=False),
                                  "clear the shards' checkpoints")
    except Exception as exc:
        problems = [f"{type(exc).__name__}: {exc}"]
    for problem in problems:
        log.warning("rxbot: the sharded run's checkpoints (run_key '%s...' in table rxbot_checkpoints) "
                    "could not be deleted: %s", run_prefix(run_id), problem)


def _named(error: BaseException | None, shards: List[Dict[str, Any]]) -> BaseException | None:
    """A shard Dask gave up on (its workers kept dying: KilledWorker) or lost: say which
    shard, on which workers, after how many attempts."""
    if error is None or type(error).__name__ not in ("KilledWorker", "FutureCancelledError", "CancelledError"):
        return error
    text = str(error)
    for shard in shards:
        if f"-{shard['shard']}'" in text or text.endswith(f"-{shard['shard']}") or f"-{shard['shard']} " in text:
            named = RuntimeError(
                f"sharded run: shard {shard['shard']} could not finish: {type(error).__name__} after "
                f"{shard['attempts']} attempt(s) on worker(s) {', '.join(shard['workers']) or '(none started)'}; "
                f"{_how_far(shard)}")
            named.__cause__ = error
            return named
    return error


def _how_far(shard: Dict[str, Any]) -> str:
    """What a shard that could not finish had settled (its checkpoint keeps it)."""
    if not shard["checkpointed"]:
        return "it had no checkpoint (its pipes write no Insert)"
    settled = shard.get("settled") or {}
    if not settled:
        return "its checkpoint had settled none of its source items yet"
    if len(settled) == 1:
        return f"its checkpoint settled {next(iter(settled.values()))} of its source items"
    return "its checkpoint settled " + ", ".join(f"{n} source items of {pipe}" for pipe, n in sorted(settled.items()))


def _settings() -> Dict[str, Any]:
    """The client's ``config`` as the workers apply it (see :data:`CLIENT_ONLY`)."""
    import cloudpickle

    settings: Dict[str, Any] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name in CLIENT_ONLY:
            continue
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            log.warning("rxbot: config.%s cannot be sent to the Dask workers (%s: %s); they keep "
                        "their own value", f.name, type(exc).__name__, exc)
            continue
        settings[f.name] = value
    if (config.progress or getattr(config, "stats_hook", None)) and settings.get("metrics") is None:
        settings["metrics"] = True  # as a local run with progress: count every step
    return settings


def _task() -> Any:
    from .worker import run_shard

    return run_shard


def _check_shards(shards: Any) -> None:
    if shards is not None and (isinstance(shards, bool) or not isinstance(shards, int) or shards < 1):
        raise ValueError(f"BotFrame.run: argument 'shards' must be an int >= 1; got {shards!r}")


#: bytes a second a scatter is allowed at least, on top of the connect deadline
SLOWEST_TRANSFER = 1 << 20


async def _bounded(call: Any, what: str, nbytes: int = 0) -> Any:
    """Await one control call to the scheduler, within ``config.connect_timeout`` (plus a
    second a MiB sent): a scheduler that stops answering fails the run, naming the call."""
    deadline = connect_deadline() + nbytes / SLOWEST_TRANSFER
    try:
        return await asyncio.wait_for(_awaited(call), deadline)
    except asyncio.TimeoutError:
        raise ConnectionError(
            f"sharded run: the Dask scheduler did not answer within {deadline:g}s when asked to {what} "
            f"(config.connect_timeout / RXBOT_CONNECT_TIMEOUT)") from None


async def _awaited(call: Any) -> Any:
    return await call if inspect.isawaitable(call) else call


async def _nthreads(client: Any) -> Dict[str, int]:
    result = client.nthreads()
    return await result if asyncio.iscoroutine(result) or asyncio.isfuture(result) else result


async def _gather(client: Any, futures: List[Any]) -> Tuple[List[RunReport], BaseException | None]:
    """Every shard's report, or the first failure and the reports of the shards that
    finished (the failing one's own included when it could send it). After a failure,
    and when this run is cancelled (Ctrl-C, SIGTERM), every other shard is cancelled."""
    waiting = {asyncio.ensure_future(_result(f)): k for k, f in enumerate(futures)}
    reports: List[Any] = [None] * len(futures)
    error: BaseException | None = None
    try:
        pending = set(waiting)
        while pending and error is None:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.cancelled():  # not by us: another client, a restart of the cluster
                    error = error or RuntimeError(
                        f"shard {waiting[task]} of {len(futures)} was cancelled on the Dask cluster "
                        f"(by another client, or the cluster restarted)")
                elif task.exception() is not None:
                    error = error or task.exception()
                else:
                    reports[waiting[task]] = task.result()
    finally:
        unfinished = [f for f, t in zip(futures, waiting) if not t.done()]
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        if unfinished:
            await _cancel(client, unfinished)
    finished = [r for r in reports if r is not None]
    own = getattr(error, "rxbot_shard_report", None)
    if own is not None:
        finished.append(own)
    return finished, error


async def _result(future: Any) -> Any:
    return await future


async def _cancel(client: Any, futures: List[Any]) -> None:
    """Tell the scheduler to drop the shards (each stops within a fraction of a second,
    see :mod:`.worker`); never hide the run's own outcome behind a failure here."""
    try:
        await asyncio.shield(_bounded(client.cancel(futures), "cancel the shards"))
    except BaseException as exc:  # including our own cancellation: the shards are told
        if not isinstance(exc, (asyncio.CancelledError, Exception)):
            raise
        log.debug("rxbot: cancelling shards: %r", exc)


def _finish(pipes: Sequence[Any], report: RunReport) -> None:
    for pipe in pipes:
        pipe._finished = True
        pipe.report = report
    sink = getattr(config, "dead_letters", None)  # the client's own sink sees every shard's
    for error in report.dead_letters:
        if isinstance(sink, list):
            sink.append(error)
        elif callable(sink):
            sink(error)


class _Connection:
    """The client for one run: the one given, or one connected (and closed) here."""

    def __init__(self, cluster: Any, shards: int | None) -> None:
        self.cluster = cluster
        self.shards = shards
        self.session: Any = None

    async def __aenter__(self) -> Any:
        from distributed import Client

        given = self.cluster
        if isinstance(given, Client):
            if given.asynchronous and getattr(given, "loop", None) is not None and _same_loop(given):
                return given
            given = given.scheduler.address  # a blocking client: ours talks to its scheduler
        elif given is not None and not isinstance(given, (str, bool)):
            address = getattr(given, "scheduler_address", None)  # a Cluster object
            if address is None:
                raise TypeError(
                    f"BotFrame.run: argument 'cluster' must be a scheduler address, a "
                    f"distributed.Client or True; got {type(given).__name__}")
            given = address
        from ..engine.dask_boost import DaskSession

        self.session = DaskSession(None, purpose="sharded run", local_options=_local_options(self.shards))
        if isinstance(given, str):
            self.session.address = given
        try:
            await self.session.open()
        except asyncio.CancelledError:
            await self.session.close()
            raise
        except Exception as exc:
            await self.session.close()
            raise self.session.explain(exc) from exc
        return self.session.client

    async def __aexit__(self, *exc: Any) -> None:
        if self.session is not None:
            await self.session.close()


def _same_loop(client: Any) -> bool:
    try:
        return client.loop.asyncio_loop is asyncio.get_running_loop()
    except AttributeError:
        return True


def _local_options(shards: int | None) -> dict:
    """A local cluster that runs every shard at once: one worker process per core (at
    most one per shard), enough task slots for the rest."""
    from ..engine.dask_boost import LOCAL_CLUSTER_OPTIONS

    options = dict(LOCAL_CLUSTER_OPTIONS)
    if shards:
        workers = max(1, min(shards, os.cpu_count() or 1))
        options.update(n_workers=workers, threads_per_worker=math.ceil(shards / workers))
    return options


class _LiveCounts:
    """``--progress`` and the stats hook for a sharded run: the shards send their counts
    as Dask events; the client keeps the latest per shard and shows their sum with the
    usual bars (made at the first event, when the steps, named on the workers, are
    known), and hands it to the stats hook every ``config.stats_interval`` seconds and
    once more, with the merged report, at the end."""

    def __init__(self, pipes: Sequence[Any], client: Any, topic: str, bars: bool = True,
                 hook: Any = None, started: float = 0.0) -> None:
        self.pipes = list(pipes)
        self.topic = topic
        self.client = client
        self.bars = bars
        self.latest: Dict[int, list] = {}
        self.report = RunReport()
        self.progress: Any = None
        self.watch: Any = None
        self.ticking: Any = None
        if hook is not None:
            from ..observe.stats import StatsWatch

            self.watch = StatsWatch(self.report, hook, float(config.stats_interval), started)
            self.ticking = asyncio.ensure_future(self.watch.run())
        client.subscribe_topic(topic, self.on_event)

    def on_event(self, event: Any) -> None:
        _, message = event
        self.latest[message["shard"]] = message["steps"]
        self.show(_summed(self.latest.values()))

    def show(self, steps: Dict[str, Any]) -> None:
        from ..observe.progress import Progress

        self.report.steps.clear()
        self.report.steps.update(steps)
        if not self.bars:
            return
        if self.progress is None:
            self.progress = Progress(self.pipes, self.report)
        self.progress.update()

    def close(self, final: RunReport | None = None) -> None:
        try:
            self.client.unsubscribe_topic(self.topic)
        except Exception:  # the client may be gone (a cancelled run); the bars still close
            pass
        if final is not None:
            self.show({str(k): s for k, s in final.steps.items()})
            self.report.seconds = final.seconds  # the live view's last picture is the final one
            self.report.dead_letters[:] = final.dead_letters
        if self.progress is not None:
            self.progress.close()
        if self.ticking is not None:
            self.ticking.cancel()
        if self.watch is not None:
            if final is not None:
                self.watch.report = final  # the last call sees the merged report itself
            self.watch.close()


def _summed(snapshots: Any) -> Dict[str, Any]:
    from ..engine.policy import StepStats

    total: Dict[str, Any] = {}
    for steps in snapshots:
        for key, values in steps:
            stats = total.get(key)
            if stats is None:
                stats = total[key] = StepStats(key)
            for name, value in values.items():
                setattr(stats, name, getattr(stats, name, 0) + value)
    return total


__all__ = ["run_sharded", "ShardingError"]
