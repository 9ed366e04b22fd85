"""Issue 26 (hardening, round 3): one test per numbered item that the ``security`` part
fixed, named after it (``test_itemNN_...``), so the closing note can cite them.

Real components only: silent TCP servers on loopback for a stalled scheduler, the live
view's own aiohttp server, real files in tmp_path, subprocesses of ``rxbot``.
"""
from __future__ import annotations

import asyncio
import socket
import sys
import threading
from pathlib import Path

import pytest

from conftest import REQUIRE_SERVICES
from rxbot import BotFrame, Pipe, config

ROOT = Path(__file__).resolve().parent.parent


def _require_distributed():
    try:
        import distributed
    except ImportError as exc:
        msg = f"Dask distributed is not installed ({exc}); pip install 'rxbot[test]'"
        if REQUIRE_SERVICES:
            pytest.fail(msg)
        pytest.skip(msg)
    return distributed


class SilentServer:
    """A TCP port that accepts every connection and never sends a byte (a stalled peer,
    or a port that speaks another protocol and waits for the client to start)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.address = f"tcp://{host}:{self.sock.getsockname()[1]}"
        self.accepted: list = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def double(x):
    return x * 2


# ------------------------------------------------------------------------------ item 2
def _run_sharded_against(address: str):
    async def run():
        # the outer bound only turns a hang (today's main) into a failure of this test
        return await asyncio.wait_for(BotFrame.run_async(cluster=address, shards=2), 120)

    return asyncio.run(run())


def test_item02_a_scheduler_that_never_answers_fails_the_run_within_the_connect_deadline():
    _require_distributed()
    server = SilentServer()
    config.connect_timeout = 1
    Pipe(range(3), double)
    try:
        with pytest.raises(ConnectionError) as caught:
            _run_sharded_against(server.address)
    finally:
        server.close()
    message = str(caught.value)
    assert f"cannot connect to the Dask scheduler at '{server.address}'" in message
    assert "no answer within 1s (config.connect_timeout / RXBOT_CONNECT_TIMEOUT)" in message
    assert server.accepted  # it did connect: the handshake is what the deadline covered
    assert "8787" not in message


def test_item02_the_dashboard_port_given_for_the_scheduler_gets_a_hint():
    _require_distributed()
    try:
        server = SilentServer("127.0.0.26", 8787)  # a loopback host of its own: 8787 is free there
    except OSError as exc:
        pytest.fail(f"cannot bind 127.0.0.26:8787 for the test: {exc}")
    config.connect_timeout = 1
    Pipe(range(3), double)
    try:
        with pytest.raises(ConnectionError) as caught:
            _run_sharded_against(server.address)
    finally:
        server.close()
    assert "Port 8787 is the Dask dashboard's (HTTP); the scheduler listens on 8786" in str(caught.value)


def test_item02_connect_timeout_comes_from_the_environment(monkeypatch):
    from rxbot.config import Config

    monkeypatch.setenv("RXBOT_CONNECT_TIMEOUT", "2.5")
    assert Config().connect_timeout == 2.5
    assert config.connect_timeout == 10.0  # the default: a stalled peer fails in seconds


# ------------------------------------------------------------------------------ item 12
@pytest.fixture(scope="module")
def dask_cluster():
    """A LocalCluster on loopback for the sharded-run tests of this module."""
    distributed = _require_distributed()
    import cloudpickle

    from rxbot.engine.dask_boost import LOCAL_CLUSTER_OPTIONS

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # as a script's functions go
    local = distributed.LocalCluster(**{**LOCAL_CLUSTER_OPTIONS, "threads_per_worker": 2})
    try:
        yield local.scheduler_address
    finally:
        local.close()


class HoldsALock(Exception):
    """An exception that cannot be pickled (it keeps a lock)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def fails_with_a_lock(x):
    if x == 3:
        raise HoldsALock(f"cannot handle {x}")
    return x


def fails_while_handling_a_lock(x):
    if x == 3:
        try:
            raise HoldsALock("the first failure")
        except HoldsALock:
            raise KeyError("the second failure")  # its __context__ cannot be pickled
    return x


def test_item12_an_unpicklable_exception_of_a_shard_keeps_its_type_message_step_and_shard(dask_cluster):
    Pipe(range(6), fails_with_a_lock)
    with pytest.raises(Exception) as caught:
        BotFrame.run(cluster=dask_cluster, shards=2)
    error = caught.value
    assert type(error).__name__ == "RemoteError"
    assert str(error) == f"{__name__}.HoldsALock: cannot handle 3"
    notes = "\n".join(error.__notes__)
    assert "rxbot: raised in step 'fails_with_a_lock' on item 3" in notes
    assert "rxbot: raised in shard 1 of 2 on Dask worker" in notes
    assert "could not be sent from the worker (TypeError: cannot pickle '_thread.lock' object)" in notes


def test_item12_an_unpicklable_cause_does_not_cost_the_exception_itself(dask_cluster):
    Pipe(range(6), fails_while_handling_a_lock)
    with pytest.raises(KeyError) as caught:
        BotFrame.run(cluster=dask_cluster, shards=2)
    assert "rxbot: raised in shard 1 of 2 on Dask worker" in "\n".join(caught.value.__notes__)
    assert str(caught.value.__context__) == f"{__name__}.HoldsALock: the first failure"


@pytest.mark.parametrize("shards", [2, None])
def test_item12_an_unpicklable_source_item_is_named_before_connecting(shards):
    _require_distributed()
    from rxbot.cluster import ShardingError

    server = SilentServer()  # would hang or fail if the run connected to it
    Pipe([1, 2, threading.Lock(), 4], double)
    try:
        with pytest.raises(ShardingError) as caught:
            _run_sharded_against(server.address) if shards else asyncio.run(
                BotFrame.run_async(cluster=server.address))
    finally:
        server.close()
    message = str(caught.value)
    assert message.startswith("step 'P1[1] Loop(list[4])': source item 2 (<unlocked _thread.lock object at")
    assert "cannot be sent to the Dask workers: pickling it failed: TypeError: cannot pickle '_thread.lock' object" in message
    assert not server.accepted


# ------------------------------------------------------------------------------ item 15
async def slow_double(x):
    await asyncio.sleep(0.02)
    return x * 2


async def _events(url: str, until: set, seen: list) -> None:
    import json

    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(url + "events") as reply:
            async for raw in reply.content:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    if seen[-1]["state"] in until:
                        return


async def _printed_url(capsys) -> str:
    for _ in range(3000):
        err = capsys.readouterr().err
        if "watch the run at " in err:
            return err.split("watch the run at ", 1)[1].split()[0]
        await asyncio.sleep(0.01)
    raise AssertionError("no address printed: the live view was not started")


async def test_item15_watch_with_shards_shows_the_shards_counts_summed(dask_cluster, capsys):
    from rxbot.watch import close_all

    Pipe(range(40), slow_double)
    run = asyncio.ensure_future(BotFrame.run_async(cluster=dask_cluster, shards=2, watch=True))
    try:
        url = await _printed_url(capsys)
        seen: list = []
        reader = asyncio.ensure_future(_events(url, {"finished", "failed"}, seen))
        report = await run
        await asyncio.wait_for(reader, 30)
    finally:
        close_all()
    final = seen[-1]
    assert final["state"] == "finished"
    rows = {s["path"]: (s["inp"], s["out"]) for s in final["steps"]}
    assert rows["P1[2] slow_double"] == (40, 40)  # both shards' items, summed
    assert rows == {str(k): (s.inp, s.out) for k, s in report.steps.items()}
