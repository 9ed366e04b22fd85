"""A local bitcoin price server, so examples, tests and ``rxbot demo`` run offline.

It answers ``GET /v1/bpi/currentprice.json`` with JSON shaped like coindesk's old public
API (the one databot's bitcoin ticker read)::

    {"time": {"updated": ..., "updatedISO": ..., "updateduk": ...},
     "disclaimer": ..., "chartName": "Bitcoin",
     "bpi": {"USD": {"code": "USD", "symbol": "&#36;", "rate": "57,123.4567",
                     "description": "United States Dollar", "rate_float": 57123.4567},
             "GBP": {...}, "EUR": {...}}}

The price takes a small random step on every request. It listens on 127.0.0.1 on a free
port. Use it in a running event loop::

    async with PriceServer() as server:
        ... server.price_url ...

or around a blocking ``BotFrame.run()``, which starts its own loop, from a thread::

    with serve_in_thread() as server:
        Pipe(Timer(delay=1, max_time=5), server.price_url, HttpLoader(), ...)
        BotFrame.run()
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import random
import threading
from typing import Any, Iterator

from aiohttp import web

PRICE_PATH = "/v1/bpi/currentprice.json"

#: currency -> (symbol as coindesk escaped it, description, units per USD)
CURRENCIES = {
    "USD": ("&#36;", "United States Dollar", 1.0),
    "GBP": ("&pound;", "British Pound Sterling", 0.79),
    "EUR": ("&euro;", "Euro", 0.92),
}


class PriceQuotes:
    """A seeded random walk of the USD price (multiplicative steps, never negative)."""

    def __init__(self, start: float = 57000.0, volatility: float = 0.002, seed: int | None = None) -> None:
        if start <= 0:
            raise ValueError(f"PriceQuotes: argument 'start' must be > 0; got {start!r}")
        if volatility < 0:
            raise ValueError(f"PriceQuotes: argument 'volatility' must be >= 0; got {volatility!r}")
        self.usd = float(start)
        self.volatility = float(volatility)
        self.random = random.Random(seed)

    def next(self) -> dict:
        """The next quote as a coindesk-shaped document."""
        self.usd *= 1.0 + self.random.gauss(0.0, self.volatility)
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        bpi = {}
        for code, (symbol, description, per_usd) in CURRENCIES.items():
            rate = round(self.usd * per_usd, 4)
            bpi[code] = {"code": code, "symbol": symbol, "rate": f"{rate:,.4f}",
                         "description": description, "rate_float": rate}
        return {
            "time": {
                "updated": now.strftime("%b %d, %Y %H:%M:%S UTC"),
                "updatedISO": now.isoformat(),
                "updateduk": now.strftime("%b %d, %Y at %H:%M GMT"),
            },
            "disclaimer": "Simulated prices from rxbot.demo_server, for offline examples; not market data.",
            "chartName": "Bitcoin",
            "bpi": bpi,
        }


def make_app(quotes: PriceQuotes, counter: list | None = None) -> web.Application:
    """The aiohttp application; ``counter[0]`` counts price requests when given."""

    async def price(request: web.Request) -> web.Response:
        if counter is not None:
            counter[0] += 1
        return web.json_response(quotes.next())

    async def index(request: web.Request) -> web.Response:
        return web.json_response({"price": PRICE_PATH})

    app = web.Application()
    app.router.add_get(PRICE_PATH, price)
    app.router.add_get("/", index)
    return app


class PriceServer:
    """The price server in the current event loop (an async context manager).

    ``base_url`` is ``http://127.0.0.1:<port>``; ``price_url`` the full price endpoint;
    ``requests`` how many price requests were served.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, seed: int | None = None,
                 start: float = 57000.0, volatility: float = 0.002) -> None:
        self.host = host
        self.port = port
        self.quotes = PriceQuotes(start, volatility, seed)
        self._counter = [0]
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None

    @property
    def price_url(self) -> str:
        if self.base_url is None:
            raise RuntimeError("PriceServer: not started; 'await server.start()' or use 'async with'")
        return self.base_url + PRICE_PATH

    @property
    def requests(self) -> int:
        return self._counter[0]

    async def start(self) -> str:
        """Start listening; return the base URL."""
        if self._runner is not None:
            raise RuntimeError("PriceServer: already started")
        runner = web.AppRunner(make_app(self.quotes, self._counter), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.port = port
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> "PriceServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


async def start_price_server(**kwargs: Any) -> PriceServer:
    """Start a :class:`PriceServer` (stop it with ``await server.stop()``)."""
    server = PriceServer(**kwargs)
    await server.start()
    return server


@contextlib.contextmanager
def serve_in_thread(**kwargs: Any) -> Iterator[PriceServer]:
    """Run a :class:`PriceServer` in a background thread with its own event loop.

    For scripts that call the blocking ``BotFrame.run()`` (which owns the main thread's
    loop). Yields the started server; stops it and joins the thread on exit.
    """
    server = PriceServer(**kwargs)
    ready = threading.Event()
    state: dict = {}

    async def serve() -> None:
        state["loop"] = asyncio.get_running_loop()
        state["stop"] = stop = asyncio.Event()
        try:
            await server.start()
        except BaseException as exc:
            state["error"] = exc
            ready.set()
            return
        ready.set()
        try:
            await stop.wait()
        finally:
            await server.stop()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="rxbot-price-server", daemon=True)
    thread.start()
    ready.wait()
    if "error" in state:
        thread.join()
        raise state["error"]
    try:
        yield server
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join()


def main(argv: list | None = None) -> None:
    """``python -m rxbot.demo_server [--port N]``: serve prices until interrupted."""
    parser = argparse.ArgumentParser(description="Local coindesk-style bitcoin price server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)

    async def run() -> None:
        async with PriceServer(args.host, args.port, seed=args.seed) as server:
            print(f"serving bitcoin prices at {server.price_url} (Ctrl-C to stop)", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()


__all__ = ["PriceServer", "PriceQuotes", "serve_in_thread", "start_price_server", "make_app", "PRICE_PATH", "main"]
