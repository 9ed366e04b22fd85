"""``boost='cluster'``: run a step on Dask distributed through ``Client(asynchronous=True)``.

One client per run, shared by every cluster step of that run. With
``config.dask_address`` (env ``RXBOT_DASK_ADDRESS``) set, the client connects to that
scheduler; otherwise the run starts a small ``LocalCluster`` on loopback (2 worker
processes, 1 thread each) and closes it at the end.

Why a task holds the client: closing a Dask client and cluster is asynchronous, and
``RunContext.shutdown()`` only *calls* ``executor.shutdown()``. It does, however, cancel
every task of the run and wait for them, so a task that opens the client, waits for the
end of the run and closes everything in its ``finally`` is closed and awaited before the
run returns, however the run ends (completed, failed, cancelled).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import re
import uuid
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict

from ..config import config
from .picklable import check_picklable

if TYPE_CHECKING:  # pragma: no cover
    from .context import RunContext

log = logging.getLogger("rxbot")

SESSION_KEY = "dask"

#: the cluster a run starts when no scheduler address is configured. No dashboard; the
#: scheduler's small HTTP server (health, metrics) still starts, so it gets a free
#: loopback port instead of taking 8787 from a dashboard the user may be running.
LOCAL_CLUSTER_OPTIONS: Dict[str, Any] = dict(processes=True, n_workers=2, threads_per_worker=1, host="127.0.0.1",
                             dashboard_address=None,
                             scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})


class DaskSession:
    """The run's Dask client (and local cluster), opened on first use.

    ``ctx`` is the run that owns the client (its holder task is one of the run's tasks);
    a sharded run, which opens and closes the client itself, passes None and never calls
    :meth:`client_ready`."""

    def __init__(self, ctx: "RunContext | None", purpose: str = "boost='cluster'",
                 local_options: Dict[str, Any] | None = None) -> None:
        self.ctx = ctx
        self.purpose = purpose  # what the error messages say needed the cluster
        self.local_options = local_options or LOCAL_CLUSTER_OPTIONS
        self.address: str | None = config.dask_address or None
        self.client: Any = None
        self.cluster: Any = None
        self.ready: asyncio.Future[Any] | None = None

    def client_ready(self) -> asyncio.Future[Any]:
        """A future for the connected client; the first call starts the holder task."""
        ctx = self.ctx
        if ctx is None:
            raise RuntimeError("DaskSession.client_ready needs the run's context (it owns the holder task)")
        if self.ready is None:
            ready: asyncio.Future[Any] = ctx.loop.create_future()
            # a failed start is reported to every waiting item; never "unretrieved"
            ready.add_done_callback(lambda f: f.cancelled() or f.exception())
            self.ready = ready
            ctx.spawn(self._hold(ctx, ready))
        return self.ready

    async def _hold(self, ctx: "RunContext", ready: asyncio.Future[Any]) -> None:
        """Open the client, resolve ``ready`` with it, and keep it open until the run's
        shutdown cancels this task; close it whatever happens."""
        try:
            try:
                await self.open()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = self.explain(exc)
                if not ready.done():
                    ready.set_exception(error)
                ctx.fail(error)  # no scheduler: the run cannot do its work
                return
            ready.set_result(self.client)
            await asyncio.Event().wait()  # until the run's shutdown cancels us
        finally:
            if not ready.done():
                ready.cancel()
            await self.close()

    async def open(self) -> None:
        """Connect the client (starting a local cluster when no address is set)."""
        from distributed import Client

        if self.address:
            deadline = connect_deadline()
            log.info("rxbot: connecting to the Dask scheduler at %s", self.address)
            self.client = Client(self.address, asynchronous=True, set_as_default=False, timeout=deadline)
            # Dask's own timeout covers the TCP connect but not a peer that accepts and
            # never answers the handshake (it waited forever): bound the whole of it
            try:
                await asyncio.wait_for(_awaited(self.client), deadline)
            except asyncio.TimeoutError:
                raise ConnectDeadline(deadline) from None
            return
        else:
            from distributed import LocalCluster

            log.info("rxbot: starting a local Dask cluster for this run (%s)", self.local_options)
            # assigned before it is awaited so that a cancelled start is still closed
            self.cluster = LocalCluster(asynchronous=True, **self.local_options)
            await self.cluster
            self.client = Client(self.cluster, asynchronous=True, set_as_default=False)
        await self.client

    async def close(self) -> None:
        """Close the client, then the local cluster if this session started one."""
        client, cluster = self.client, self.cluster
        self.client = self.cluster = None
        for what, thing in (("client", client), ("local cluster", cluster)):
            if thing is None:
                continue
            try:
                if thing is client:  # a stalled scheduler must not hold the run's end
                    await asyncio.wait_for(_awaited(thing.close()), connect_deadline())
                else:
                    await thing.close()
            except Exception:  # never hide the run's own outcome behind a cleanup error
                log.warning("rxbot: closing the Dask %s failed", what, exc_info=True)

    def explain(self, exc: Exception) -> Exception:
        """The error to raise for a failed :meth:`open`, saying what to do."""
        if self.address:
            if isinstance(exc, ConnectDeadline):
                reason = (f"no answer within {exc.seconds:g}s (config.connect_timeout / "
                          f"RXBOT_CONNECT_TIMEOUT): the port accepts connections but does not speak "
                          f"Dask's protocol, or the scheduler is stalled")
            else:
                reason = f"{type(exc).__name__}: {exc}"
            return ConnectionError(
                f"{self.purpose}: cannot connect to the Dask scheduler at {self.address!r} "
                f"(config.dask_address / RXBOT_DASK_ADDRESS): {reason}{_port_hint(self.address)}")
        hint = ""
        if "failed to start" in str(exc):
            hint = (" Dask starts worker processes with multiprocessing 'spawn', which re-imports "
                    "the main script: put the script's top-level code under "
                    "\"if __name__ == '__main__':\", or set RXBOT_DASK_ADDRESS to a running scheduler.")
        reason = str(exc).rstrip(". ")
        return RuntimeError(
            f"{self.purpose}: could not start a local Dask cluster: {type(exc).__name__}: {reason}.{hint}")

    def cancel(self, future: Any) -> None:
        """Best effort: a timed-out or cancelled item should not keep a worker busy."""
        client = self.client
        if client is None or client.status in ("closing", "closed"):
            return
        try:
            pending = client.cancel([future])
        except Exception:
            return
        if inspect.isawaitable(pending):
            task = asyncio.ensure_future(pending)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Called by ``RunContext.shutdown()`` with the executors; the holder task has
        closed everything by then (it is cancelled and awaited first)."""


class ConnectDeadline(TimeoutError):
    """The scheduler did not complete the connection and handshake in time."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no answer within {seconds:g}s")
        self.seconds = seconds


def connect_deadline() -> float:
    """Seconds to wait for a remote peer to connect and answer (``config.connect_timeout``)."""
    return float(config.connect_timeout)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _port_hint(address: str) -> str:
    """The dashboard's port given for the scheduler's is the usual mistake: say so."""
    port = address.rstrip("/").rsplit(":", 1)[-1]
    if port == "8787":
        return (". Port 8787 is the Dask dashboard's (HTTP); the scheduler listens on 8786 "
                "by default (tcp://HOST:8786)")
    return ""


def _work(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A generator cannot be sent back from a worker: list it there. ``toolz`` is a Dask
    dependency, so the workers can unpickle the composition without rxbot installed."""
    if inspect.isgeneratorfunction(fn):
        from toolz import compose

        listed: Callable[[Any], Any] = compose(list, fn)  # toolz is untyped
        return listed
    return fn


def _key_prefix(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", label).strip("_")[:40] or "step"


def cluster_call(fn: Callable[[Any], Any], ctx: "RunContext", label: str) -> Callable[[Any], Awaitable[Any]]:
    """Wrap ``fn`` so that each call submits ``fn(item)`` to Dask and returns an awaitable
    of its result. A worker exception is re-raised here with its original type, so the
    step's exception policy applies to it like to a local failure."""
    import cloudpickle  # a dependency of distributed: fail here, not in a worker

    work = _work(fn)
    check_picklable(work, "cluster", label, dumps=cloudpickle.dumps)
    session = ctx.executors.get(SESSION_KEY)
    if session is None:
        session = ctx.executors[SESSION_KEY] = DaskSession(ctx)
    prefix = _key_prefix(label)

    async def call(item: Any) -> Any:
        client = await session.client_ready()
        future = client.submit(work, item, pure=False, key=f"{prefix}-{uuid.uuid4().hex}")
        try:
            return await future
        except asyncio.CancelledError:
            session.cancel(future)
            raise

    return call


__all__ = ["cluster_call", "DaskSession", "LOCAL_CLUSTER_OPTIONS", "ConnectDeadline", "connect_deadline"]
