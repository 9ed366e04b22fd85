"""Several local HTTP servers on separate loopback addresses (127.0.0.2, 127.0.0.3, ...
are all this machine, and separate hosts to a client), one shared log of what they saw.

Each server answers:

* ``GET /n/{i}?sleep=s`` — ``i`` after ``s`` seconds;
* ``GET /hold/{i}`` — waits until the test calls ``release()`` (or 10 s), then ``i``;
* ``GET /limited/{i}`` — a token bucket of ``rate`` requests/s (burst ``rate/10``):
  429 when it is empty (refusals take no token), else ``i``;
* ``GET /ra/{i}`` — the first request gets 429 with ``Retry-After: {retry_after}``;
* ``GET /robots.txt`` — ``robots`` text if set, else 404;
* ``GET /vary/{i}`` — ``i`` plus the Accept-Language it got, ``Vary: Accept-Language``.

``log`` holds ``(time, host, path, status)`` per request in arrival order; ``peak[host]``
the most requests in flight at once at that host, ``peak_total`` across all hosts.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any, Dict, List, Tuple

from aiohttp import web


class Hosts:
    def __init__(self, addresses: List[str], *, rate: float = 50.0, retry_after: str = "1",
                 robots: str | None = None) -> None:
        self.addresses = addresses
        self.rate = rate
        self.retry_after = retry_after
        self.robots = robots
        self.log: List[Tuple[float, str, str, int]] = []
        self.inflight: Counter = Counter()
        self.peak: Counter = Counter()
        self.total = 0
        self.peak_total = 0
        self.released = asyncio.Event()
        self.base: Dict[str, str] = {}
        self._runners: List[web.AppRunner] = []
        self._tokens: Dict[str, float] = {}
        self._refill: Dict[str, float] = {}
        self._ra_seen: Counter = Counter()

    def url(self, address: str, path: str) -> str:
        return self.base[address] + path

    def release(self) -> None:
        self.released.set()

    def requests(self, address: str | None = None, prefix: str = "") -> List[Tuple[float, str, str, int]]:
        return [e for e in self.log if (address is None or e[1] == address) and e[2].startswith(prefix)]

    @web.middleware
    async def _track(self, request: web.Request, handler: Any) -> web.StreamResponse:
        host = request.transport.get_extra_info("sockname")[0]
        self.inflight[host] += 1
        self.total += 1
        self.peak[host] = max(self.peak[host], self.inflight[host])
        self.peak_total = max(self.peak_total, self.total)
        entry = [time.monotonic(), host, request.path, 0]
        try:
            response = await handler(request)
            entry[3] = response.status
            return response
        finally:
            self.inflight[host] -= 1
            self.total -= 1
            self.log.append(tuple(entry))  # type: ignore[arg-type]

    async def _n(self, request: web.Request) -> web.Response:
        pause = float(request.query.get("sleep", "0"))
        if pause:
            await asyncio.sleep(pause)
        return web.Response(text=request.match_info["i"])

    async def _hold(self, request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(self.released.wait(), 10)
        except asyncio.TimeoutError:
            return web.Response(text="timed out", status=504)
        return web.Response(text=request.match_info["i"])

    async def _limited(self, request: web.Request) -> web.Response:
        host = request.transport.get_extra_info("sockname")[0]
        now = time.monotonic()
        burst = max(1.0, self.rate / 10)
        tokens = min(burst, self._tokens.get(host, burst) + (now - self._refill.get(host, now)) * self.rate)
        self._refill[host] = now
        if tokens < 1:
            self._tokens[host] = tokens
            return web.Response(status=429, text="slow down")
        self._tokens[host] = tokens - 1
        return web.Response(text=request.match_info["i"])

    async def _ra(self, request: web.Request) -> web.Response:
        host = request.transport.get_extra_info("sockname")[0]
        self._ra_seen[host] += 1
        if self._ra_seen[host] == 1:
            return web.Response(status=429, text="later", headers={"Retry-After": self.retry_after})
        return web.Response(text=request.match_info["i"])

    async def _robots(self, request: web.Request) -> web.Response:
        if self.robots is None:
            return web.Response(status=404, text="none")
        return web.Response(text=self.robots)

    async def _vary(self, request: web.Request) -> web.Response:
        return web.Response(text=f"{request.match_info['i']} {request.headers.get('Accept-Language')}",
                            headers={"Vary": "Accept-Language"})

    async def __aenter__(self) -> "Hosts":
        for address in self.addresses:
            app = web.Application(middlewares=[self._track])
            app.router.add_get("/n/{i}", self._n)
            app.router.add_get("/hold/{i}", self._hold)
            app.router.add_get("/limited/{i}", self._limited)
            app.router.add_get("/ra/{i}", self._ra)
            app.router.add_get("/robots.txt", self._robots)
            app.router.add_get("/vary/{i}", self._vary)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            site = web.TCPSite(runner, address, 0)
            await site.start()
            self._runners.append(runner)
            self.base[address] = f"http://{address}:{runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.released.set()
        for runner in self._runners:
            await runner.cleanup()



class HostsInThread:
    """``with HostsInThread([...]) as hosts:`` — the same servers on their own event loop
    in a thread, for a blocking ``BotFrame.run()`` (e.g. a sharded run whose workers
    are other processes). Read ``hosts.log``/``peak`` after the ``with`` block."""

    def __init__(self, addresses: List[str], **options: Any) -> None:
        self.addresses = addresses
        self.options = options

    def __enter__(self) -> Hosts:
        import threading

        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)

            async def start() -> None:
                self.hosts = Hosts(self.addresses, **self.options)
                await self.hosts.__aenter__()

            self._loop.run_until_complete(start())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self.hosts.__aexit__(None, None, None))
            self._loop.close()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the test servers did not start")
        return self.hosts

    def __exit__(self, *exc: Any) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)


__all__ = ["Hosts", "HostsInThread"]
