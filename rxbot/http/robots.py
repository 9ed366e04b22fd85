"""robots.txt for HttpLoader (``robots=True``): fetched once per origin, parsed with
protego (Scrapy's maintained parser: wildcards, ``Allow`` precedence, ``Crawl-delay``,
``Request-rate``), asked before each request.

What an unreadable robots.txt means follows RFC 9309 §2.3.1: a 4xx (none there) allows
everything; a 5xx or no answer after the loader's retries means "the server is
unavailable", so nothing of that origin is fetched; a file larger than 500 KiB is read
up to there (the RFC's minimum), as Google does.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Dict, Optional

from yarl import URL

#: the most bytes of robots.txt read (RFC 9309 §2.5: at least 500 KiB)
ROBOTS_MAX_SIZE = 500 * 1024


class RobotsRules:
    """The parsed robots.txt of each origin one loader met in one run."""

    def __init__(self, fetch: Callable[[str], Awaitable[Any]], user_agent: str) -> None:
        self._fetch = fetch  # url -> HttpResponse (through the loader's own limits and cache)
        self.user_agent = user_agent
        self._origins: Dict[str, asyncio.Future] = {}

    @staticmethod
    def origin(url: Any) -> str:
        parsed = URL(str(url))
        return str(parsed.origin())

    async def rules(self, url: Any) -> Optional[Any]:
        """protego's rules for ``url``'s origin (None: everything allowed), fetched on the
        first request to that origin; the others wait for that one fetch."""
        origin = self.origin(url)
        pending = self._origins.get(origin)
        if pending is None:
            pending = self._origins[origin] = asyncio.ensure_future(self._load(origin))
        return await asyncio.shield(pending)

    async def _load(self, origin: str) -> Optional[Any]:
        from protego import Protego

        try:
            response = await self._fetch(origin + "/robots.txt")
        except Exception:  # no answer after the loader's retries: unavailable (RFC 9309)
            return _DISALLOW_ALL
        if response.status >= 500:
            return _DISALLOW_ALL
        if response.status >= 400:
            return None
        if response.status >= 300:  # redirects are followed by the session; a 3xx left means a loop
            return None
        return Protego.parse(response.content[:ROBOTS_MAX_SIZE].decode("utf-8", "replace"))

    def allowed(self, rules: Optional[Any], url: Any) -> bool:
        if rules is None:
            return True
        if rules is _DISALLOW_ALL:
            return False
        return bool(rules.can_fetch(str(url), self.user_agent))

    def crawl_delay(self, rules: Optional[Any]) -> float:
        """Seconds between requests the origin asks for (``Crawl-delay`` or
        ``Request-rate``), 0 when it asks for none."""
        if rules is None or rules is _DISALLOW_ALL:
            return 0.0
        delay = rules.crawl_delay(self.user_agent) or 0.0
        rate = rules.request_rate(self.user_agent)
        if rate is not None and rate.requests:
            delay = max(delay, rate.seconds / rate.requests)
        return float(delay)

    def close(self) -> None:
        for pending in self._origins.values():
            pending.cancel()
        self._origins.clear()


class _DisallowAll:
    def __repr__(self) -> str:
        return "<robots: unavailable, nothing allowed>"


_DISALLOW_ALL = _DisallowAll()

__all__ = ["RobotsRules", "ROBOTS_MAX_SIZE"]
