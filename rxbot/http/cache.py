"""HttpLoader's on-disk HTTP cache (``cache='path'`` or ``config.http_cache``): a crawl
rerun while fixing its parse step fetches nothing (Scrapy's HTTPCACHE, its default
"dummy" policy: every final response is kept, whatever the server's Cache-Control says;
this is a development cache, not a shared HTTP cache).

**Why not aiohttp-client-cache.** It works by replacing the ``ClientSession`` with its
own ``CachedSession`` and reading bodies itself, which bypasses HttpLoader's bounded,
chunk-by-chunk body read (``max_size``, the decompression-bomb guard), its retries and
its per-host gate would then count cache hits as requests; its SQLite backend has no
bound on its size; and it brings three more dependencies. What is needed here is small:
one SQLite table (aiosqlite, already a dependency) keyed by a hash, looked up before a
request and written after a final response.

**Key**: method, URL with its query, body (bytes; form and JSON bodies in a canonical
form) — a SHA-256 of them. **Vary**: the request headers a response names in ``Vary``
are stored with it, and a later request whose values differ is a miss (and replaces it).
**Expiry**: ``expire`` seconds after it was stored (None: kept until cleared).
**Bound**: ``max_size`` bytes of bodies; past it the oldest entries go first.
Refusals and server errors (429, 5xx) are never stored.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlencode

from yarl import URL

#: the default bound of a cache's bodies
DEFAULT_CACHE_MAX_SIZE = 1024 * 1024 * 1024

_SCHEMA = """
create table if not exists responses (
    key text primary key,
    stored real not null,
    status integer not null,
    reason text not null,
    url text not null,
    headers text not null,
    vary text not null,
    body blob not null,
    size integer not null
)"""


def canonical_body(spec: Mapping[str, Any]) -> bytes:
    """The request body as bytes for the key (None when there is none)."""
    if spec.get("json") is not None:
        return b"json:" + json.dumps(spec["json"], sort_keys=True, default=str).encode()
    data = spec.get("data")
    if data is None:
        return b""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return b"bytes:" + bytes(data)
    if isinstance(data, str):
        return b"text:" + data.encode()
    if isinstance(data, Mapping):
        return b"form:" + urlencode(sorted((str(k), str(v)) for k, v in data.items())).encode()
    return b"other:" + repr(data).encode()


def full_url(url: Any, params: Any) -> str:
    parsed = URL(str(url))
    if params:
        parsed = parsed.extend_query(params)
    return str(parsed)


def cache_key(method: str, url: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), url.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class HttpCache:
    """One SQLite file of responses. Open in ``init()``, closed in ``close()``."""

    def __init__(self, path: str, *, expire: float | None = None,
                 max_size: int = DEFAULT_CACHE_MAX_SIZE) -> None:
        self.path = os.fspath(path)
        self.expire = expire
        self.max_size = max_size
        self._db: Any = None
        self._size = 0
        self._lock: asyncio.Lock | None = None
        self.hits = 0
        self.misses = 0

    async def open(self) -> None:
        import aiosqlite

        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        db = await aiosqlite.connect(self.path, timeout=30)
        try:
            await db.execute("pragma journal_mode=wal")  # several shards may share one file
            await db.execute(_SCHEMA)
            await db.commit()
            async with db.execute("select coalesce(sum(size), 0) from responses") as cursor:
                row = await cursor.fetchone()
        except BaseException:
            await db.close()
            raise
        self._size = int(row[0]) if row else 0
        self._db = db
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def get(self, key: str, headers: Mapping[str, str]) -> Optional[Dict[str, Any]]:
        """The stored response for ``key`` if it is fresh and its Vary headers match."""
        db = self._db
        if db is None:
            return None
        async with db.execute("select stored, status, reason, url, headers, vary, body from responses "
                              "where key = ?", (key,)) as cursor:
            row = await cursor.fetchone()
        if row is None:
            self.misses += 1
            return None
        stored, status, reason, url, stored_headers, vary, body = row
        if self.expire is not None and time.time() - stored > self.expire:
            self.misses += 1
            return None
        lowered = {k.lower(): v for k, v in headers.items()}
        for name, value in json.loads(vary).items():
            if lowered.get(name) != value:
                self.misses += 1
                return None
        self.hits += 1
        return {"status": status, "reason": reason, "url": url, "headers": json.loads(stored_headers),
                "body": bytes(body)}

    async def put(self, key: str, response: Any, request_headers: Mapping[str, str]) -> None:
        """Store a final response (not a refusal or a server error), then trim the
        oldest entries if the bodies outgrow ``max_size``."""
        db = self._db
        if db is None or response.status == 429 or response.status >= 500:
            return
        size = len(response.content)
        if size > self.max_size:
            return
        lowered = {k.lower(): v for k, v in request_headers.items()}
        vary: Dict[str, Optional[str]] = {}
        for value in response.headers.getall("Vary", ()):
            for name in value.split(","):
                name = name.strip().lower()
                if name and name != "*":
                    vary[name] = lowered.get(name)
        headers: List[Tuple[str, str]] = [(k, v) for k, v in response.headers.items()]
        assert self._lock is not None
        async with self._lock:
            async with db.execute("select size from responses where key = ?", (key,)) as cursor:
                old = await cursor.fetchone()
            await db.execute("insert or replace into responses values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (key, time.time(), response.status, response.reason, response.url,
                              json.dumps(headers), json.dumps(vary), response.content, size))
            self._size += size - (old[0] if old else 0)
            if self._size > self.max_size:
                await self._trim()
            await db.commit()

    async def _trim(self) -> None:
        """Delete the oldest entries until the bodies take at most 90 % of ``max_size``."""
        db = self._db
        goal = self.max_size * 0.9
        async with db.execute("select key, size from responses order by stored") as cursor:
            doomed = []
            size = self._size
            async for key, entry in cursor:
                if size <= goal:
                    break
                doomed.append((key,))
                size -= entry
        await db.executemany("delete from responses where key = ?", doomed)
        self._size = size


def clear_cache(path: str) -> int:
    """Delete every entry of the cache at ``path`` (``rxbot cache clear PATH``); returns
    how many there were. A missing file is an empty cache."""
    import sqlite3

    if not os.path.exists(path):
        return 0
    with sqlite3.connect(path) as db:
        try:
            count = db.execute("select count(*) from responses").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"rxbot cache clear: {path!r} is not an HttpLoader cache ({exc})") from None
        db.execute("delete from responses")
    with sqlite3.connect(path) as db:
        db.execute("vacuum")
    return int(count)


__all__ = ["HttpCache", "cache_key", "canonical_body", "full_url", "clear_cache", "DEFAULT_CACHE_MAX_SIZE"]
