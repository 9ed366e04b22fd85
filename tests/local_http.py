"""A real aiohttp server on 127.0.0.1 (free port) for HTTP tests, and its fixtures.

The server records what it saw (attempts per key, requests in flight, arrival times) so
tests can check retries and concurrency from the server's side. Endpoints:

* ``GET /n/{i}`` — body ``i`` (text), after ``?sleep=`` seconds (default 0);
* ``ANY /echo`` — JSON of the method, path, query, headers, body and parsed JSON body;
* ``ANY /flaky/{key}?fail=N&status=S`` — status S for the first N attempts of ``key``,
  then 200 ``ok``; ``&retry_after=`` adds a Retry-After header to the failures;
* ``GET /status/{code}`` — that status with body ``status {code}``;
* ``GET /hang`` — never answers (until the server stops);
* ``GET /drop/{key}?fail=N`` — closes the connection without answering N times, then 200;
* ``GET /price`` — a coindesk-shaped JSON document.

Use in async tests::

    from local_http import http_server  # noqa: F401  (the fixture)

    async def test_x(http_server):
        url = http_server.url("/n/1")
"""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections import Counter, defaultdict
from typing import Any, AsyncIterator

import pytest
from aiohttp import web


class LocalHttpServer:
    """The test application plus what it observed. ``start()`` returns the base URL."""

    def __init__(self, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self.attempts: Counter = Counter()          # key -> attempts seen
        self.arrivals: dict = defaultdict(list)     # key -> time.monotonic() of each attempt
        self.hits: Counter = Counter()              # path -> requests
        self.inflight = 0
        self.max_inflight = 0
        self.release = asyncio.Event()              # set on stop: hanging handlers return
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application(middlewares=[self._track])
        app.router.add_get("/n/{i}", self._n)
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_route("*", "/flaky/{key}", self._flaky)
        app.router.add_get("/status/{code}", self._status)
        app.router.add_get("/hang", self._hang)
        app.router.add_get("/drop/{key}", self._drop)
        app.router.add_get("/price", self._price)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=self.ssl_context)
        await site.start()
        port = self._runner.addresses[0][1]
        scheme = "https" if self.ssl_context else "http"
        self.base_url = f"{scheme}://{self.host}:{port}"
        return self.base_url

    async def stop(self) -> None:
        self.release.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> "LocalHttpServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def url(self, path: str) -> str:
        return self.base_url + path

    # -- handlers -----------------------------------------------------------------------
    @web.middleware
    async def _track(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.hits[request.path] += 1
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            return await handler(request)
        finally:
            self.inflight -= 1

    def _attempt(self, key: str) -> int:
        self.attempts[key] += 1
        self.arrivals[key].append(time.monotonic())
        return self.attempts[key]

    async def _n(self, request: web.Request) -> web.Response:
        pause = float(request.query.get("sleep", "0"))
        if pause:
            await asyncio.sleep(pause)
        return web.Response(text=request.match_info["i"])

    async def _echo(self, request: web.Request) -> web.Response:
        self._attempt("echo")
        body = await request.read()
        parsed = None
        if request.content_type == "application/json":
            parsed = await request.json()
        return web.json_response({
            "method": request.method,
            "path": request.path,
            "query": [[k, v] for k, v in request.query.items()],
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body.decode("utf-8", errors="replace"),
            "json": parsed,
            "content_type": request.content_type,
        })

    async def _flaky(self, request: web.Request) -> web.Response:
        n = self._attempt(request.match_info["key"])
        fail = int(request.query.get("fail", "2"))
        if n <= fail:
            headers = {}
            if "retry_after" in request.query:
                headers["Retry-After"] = request.query["retry_after"]
            return web.Response(status=int(request.query.get("status", "503")), text=f"attempt {n} failed",
                                headers=headers)
        return web.Response(text="ok")

    async def _status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        self._attempt(f"status/{code}")
        return web.Response(status=code, text=f"status {code}")

    async def _hang(self, request: web.Request) -> web.Response:
        self._attempt("hang")
        await self.release.wait()
        return web.Response(text="released")

    async def _drop(self, request: web.Request) -> web.Response:
        n = self._attempt(request.match_info["key"])
        if n <= int(request.query.get("fail", "1")):
            assert request.transport is not None
            request.transport.close()  # the client sees the connection die mid-request
            return web.Response(text="never delivered")
        return web.Response(text="ok")

    async def _price(self, request: web.Request) -> web.Response:
        return web.json_response({
            "time": {"updated": "Nov 25, 2026 12:00:00 UTC", "updatedISO": "2026-11-25T12:00:00+00:00"},
            "bpi": {"USD": {"code": "USD", "rate": "57,123.4567", "rate_float": 57123.4567},
                    "EUR": {"code": "EUR", "rate": "52,553.5802", "rate_float": 52553.5802}},
        })


def free_port() -> int:
    """A port nothing listens on (bound, then released), for connection-refused tests."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed_cert(directory: str) -> tuple[str, str]:
    """Create a certificate for 127.0.0.1 with the openssl CLI; skip when it is missing."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl CLI not found (apt-get install openssl)")
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@pytest.fixture
async def http_server() -> AsyncIterator[LocalHttpServer]:
    """A started :class:`LocalHttpServer` for one test."""
    async with LocalHttpServer() as server:
        yield server


@pytest.fixture
async def https_server(tmp_path) -> AsyncIterator[LocalHttpServer]:
    """The same server over TLS with a fresh self-signed certificate (``.cert_path``)."""
    cert, key = self_signed_cert(str(tmp_path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async with LocalHttpServer(ssl_context=context) as server:
        server.cert_path = cert  # type: ignore[attr-defined]
        yield server


__all__ = ["LocalHttpServer", "http_server", "https_server", "free_port", "self_signed_cert"]
