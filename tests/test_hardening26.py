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
