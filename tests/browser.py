"""A headless Chromium driven over the Chrome DevTools protocol (aiohttp's websocket
client), for tests that look at a page the way a user does.

Chromium runs as the test's user (root on CI) with a fresh profile and every network
feature that would reach outside turned off; the machine's network is closed.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
from typing import Any, Optional

import aiohttp
import pytest

from conftest import REQUIRE_SERVICES

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,900", "--remote-debugging-port=0")


def find_browser() -> str:
    """The Chromium binary, or a skip (a failure under RXBOT_REQUIRE_SERVICES=1)."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    msg = "no Chromium found (Debian: apt-get install chromium chromium-driver; .ci/run does it)"
    if REQUIRE_SERVICES:
        pytest.fail(msg)
    pytest.skip(msg)


class Browser:
    """``async with Browser() as page: await page.goto(url); await page.eval('1+1')``."""

    def __init__(self, binary: Optional[str] = None) -> None:
        self.binary = binary or find_browser()
        self.profile = tempfile.mkdtemp(prefix="rxbot-chromium-")
        self.proc: Optional[subprocess.Popen] = None
        self.session: Optional[aiohttp.ClientSession] = None
        self.ws: Any = None
        self.ids = 0

    async def __aenter__(self) -> "Browser":
        self.proc = subprocess.Popen([self.binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port = await self._devtools_port()
        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://127.0.0.1:{port}/json/list") as reply:
            pages = [t for t in await reply.json() if t["type"] == "page"]
        self.ws = await self.session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        await self.call("Page.enable")
        return self

    async def _devtools_port(self) -> int:
        """Chromium writes the port it picked into DevToolsActivePort in its profile."""
        marker = os.path.join(self.profile, "DevToolsActivePort")
        for _ in range(600):
            if os.path.exists(marker):
                text = open(marker, encoding="utf-8").read().split()
                if text:
                    return int(text[0])
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited with {self.proc.returncode}")
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.binary} did not open its DevTools port in 30 s")

    async def __aexit__(self, *exc: Any) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    async def call(self, method: str, **params: Any) -> dict:
        self.ids += 1
        ident = self.ids
        await self.ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads((await self.ws.receive(timeout=30)).data)
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    async def goto(self, url: str, timeout: float = 30) -> None:
        """Open ``url`` and return once its document has loaded."""
        await self.call("Page.navigate", url=url)
        check = f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
        for _ in range(int(timeout / 0.05)):
            if await self.eval(check):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{url} did not load in {timeout} s")

    async def eval(self, expression: str) -> Any:
        """The JSON value of ``expression`` evaluated in the page."""
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: str) -> bytes:
        data = base64.b64decode((await self.call("Page.captureScreenshot", format="png"))["data"])
        with open(path, "wb") as fh:
            fh.write(data)
        return data


__all__ = ["Browser", "find_browser"]
