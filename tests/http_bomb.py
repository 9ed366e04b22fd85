"""A local aiohttp server that serves oversized bodies, for HttpLoader's ``max_size``.

Endpoints: ``/bomb`` — about 1 MiB of gzip (1024 concatenated gzip members of 1 MiB of
zeros each, a valid gzip stream) that inflates to 1 GiB; ``/plain?n=`` — ``n`` bytes
with a Content-Length; ``/chunked?n=`` — ``n`` bytes sent chunked, without one.

Run as a script (``python tests/http_bomb.py``), it measures what one HttpLoader call on
``/bomb`` costs in memory in a fresh process and prints JSON: the RSS before the run
and the peak during it (psutil samples every 2 ms, and the kernel's high-water mark of
this process image, ``VmHWM``), the error the step raised and the loader's ``max_size``.
"""
from __future__ import annotations

import asyncio
import gzip
import json
import threading
from typing import AsyncIterator

from aiohttp import web

MIB = 1 << 20
#: the inflated size of /bomb
BOMB_INFLATED = 1024 * MIB


def bomb_body() -> bytes:
    """~1 MiB of gzip that inflates to :data:`BOMB_INFLATED` bytes of zeros."""
    member = gzip.compress(b"\0" * MIB, compresslevel=9)  # ~1 KiB
    return member * (BOMB_INFLATED // MIB)


class OversizeServer:
    """The server on 127.0.0.1 and a free port, in the running loop: ``async with``."""

    async def __aenter__(self) -> "OversizeServer":
        bomb = bomb_body()
        self.bomb_size = len(bomb)

        async def serve_bomb(request: web.Request) -> web.Response:
            return web.Response(body=bomb, headers={"Content-Encoding": "gzip",
                                                    "Content-Type": "application/octet-stream"})

        async def plain(request: web.Request) -> web.Response:
            return web.Response(body=b"x" * int(request.query["n"]))

        async def chunked(request: web.Request) -> web.StreamResponse:
            n = int(request.query["n"])
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            while n > 0:
                piece = min(n, 256 * 1024)
                await response.write(b"y" * piece)
                n -= piece
            await response.write_eof()
            return response

        app = web.Application()
        app.router.add_get("/bomb", serve_bomb)
        app.router.add_get("/plain", plain)
        app.router.add_get("/chunked", chunked)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        host, port = self.runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self

    def url(self, path: str) -> str:
        return self.base_url + path

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


class RssSampler:
    """The highest RSS psutil sees, sampled every ``interval`` seconds in a thread."""

    def __init__(self, interval: float = 0.002) -> None:
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def high_water_mark() -> int:
    """Peak RSS of this process image in bytes (Linux ``VmHWM``; 0 where unknown). Not
    ``getrusage().ru_maxrss``: that also counts the parent's memory the process was
    forked (or vforked) from before ``exec``."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


async def measure() -> dict:
    import psutil

    from rxbot import BotFrame, HttpLoader, Pipe

    async with OversizeServer() as server:
        warm: list = []  # load every code path once so the baseline includes it
        Pipe(server.url("/plain?n=10"), HttpLoader(), warm.append)
        await BotFrame.run_async()
        baseline = psutil.Process().memory_info().rss
        loader = HttpLoader()
        errors: list = []
        Pipe(server.url("/bomb"), loader, errors.append)
        with RssSampler() as sampler:
            try:
                await BotFrame.run_async()
            except Exception as exc:
                errors.append(exc)
    return {"baseline": baseline, "peak_hwm": high_water_mark(), "peak_sampled": sampler.peak,
            "max_size": loader.max_size, "bomb_size": server.bomb_size,
            "errors": [f"{type(e).__name__}: {e}" for e in errors]}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure())))
