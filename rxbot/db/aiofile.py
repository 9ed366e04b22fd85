"""File nodes on aiofiles: ``aiofile`` writes one line per item, ``ReadLines`` streams a
file's lines as items.

``aiofile`` is a sync step on the hot path (formatting a line and appending it to a
buffer costs about as much as a function call); only when the buffer is full does it
hand a write to a thread through aiofiles, and the item that filled the buffer waits
for that write — which is how a slow disk slows the pipe down instead of letting the
buffers grow. Each such write is flushed to the OS, so a write error (a full disk) is
raised to that item. When the input ends, ``flush()`` writes the rest, so its errors too
follow the step's policy (overriding ``flush`` makes this an async stage). Whatever is
still buffered is written at ``close()``, which the engine calls at the end of every
run, failed ones included, so every item the node saw is on disk.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import deque
from typing import Any, AsyncIterator, Callable, Deque

import aiofiles

from ..tree.node import NOT_RUNNING, Node, pass_on

log = logging.getLogger("rxbot")

MODES = ("w", "a", "x")
FORMATS = ("repr", "str", "json")


def _text(item: Any) -> str:
    """databot's rule: a str as-is, anything else as its repr."""
    return item if isinstance(item, str) else repr(item)


def _json(item: Any) -> str:
    return json.dumps(item, ensure_ascii=False)


_FORMATTERS: dict = {"repr": _text, "str": str, "json": _json}


def _check_path(owner: str, name: str, value: Any) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise TypeError(f"{owner}: argument {name!r} must be a file path (str or PathLike); got {value!r}")
    return value


class aiofile(Node):  # noqa: N801 - databot's name
    """``aiofile(filename, mode='w', format='repr')``: write each item as one line, then
    pass the item on.

    ``format``: ``'repr'`` (databot's behaviour: a ``str`` item as-is, anything else as
    ``repr(item)``), ``'str'`` (``str(item)``) or ``'json'`` (``json.dumps(item)``, one JSON
    document per line). ``mode``: ``'w'`` (truncate at the start of each run), ``'a'``
    (append) or ``'x'`` (fail if the file exists). ``buffer_size`` characters are
    collected before a write. ``{index}`` and ``{count}`` in ``filename`` are replaced
    by :mod:`rxbot.shard`'s when the file is opened, so each shard of a sharded run
    writes its own file (``out-{index}.txt``; ``out-0.txt`` in a local run).
    """

    def __init__(self, filename: Any, mode: str = "w", format: str = "repr", encoding: str = "utf-8",
                 buffer_size: int = 1 << 16, name: str | None = None) -> None:
        super().__init__(filename, mode=mode, format=format)
        self.filename = _check_path("aiofile", "filename", filename)
        base = mode.replace("t", "") if isinstance(mode, str) else mode
        if base not in MODES:
            raise ValueError(f"aiofile: argument 'mode' must be one of {', '.join(map(repr, MODES))} "
                             f"(text modes); got {mode!r}")
        if format not in FORMATS:
            raise ValueError(f"aiofile: argument 'format' must be one of {', '.join(map(repr, FORMATS))}; "
                             f"got {format!r}")
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(f"aiofile: argument 'buffer_size' must be an int >= 1; got {buffer_size!r}")
        self.mode = base
        self.format = format
        self.encoding = encoding
        self.buffer_size = buffer_size
        self.name = name
        self._fmt: Callable[[Any], str] = _FORMATTERS[format]
        # the buffers and the file are made by init(), per run (issue 26, item 11)

    _fh: Any = None
    _buf: list = NOT_RUNNING
    _size = 0
    _chunks: Deque[str] = deque(maxlen=0)  # full buffers waiting for the writer, in order
    _writing: asyncio.Future | None = None
    _lock: asyncio.Lock | None = None

    def _reset(self) -> None:
        self._fh = None
        self._buf = []
        self._size = 0
        self._chunks = deque()
        self._writing = None
        self._lock = None

    def label(self) -> str:
        return self.name or f"aiofile({os.path.basename(self.filename)})"

    async def init(self) -> None:
        self._reset()
        self._lock = asyncio.Lock()
        from ..shard import fill  # '{index}' in the name: one file per shard of a sharded run

        self._fh = await aiofiles.open(fill(self.filename), self.mode, encoding=self.encoding)

    def __call__(self, item: Any) -> Any:
        line = self._fmt(item)
        self._buf.append(line)
        self._size += len(line) + 1
        if self._size < self.buffer_size:
            return pass_on(item)
        self._chunks.append("\n".join(self._buf) + "\n")
        self._buf = []
        self._size = 0
        return self._write_then(item)

    async def _write_then(self, item: Any) -> Any:
        await self._drain()
        return pass_on(item)

    async def _drain(self) -> None:
        """Write queued chunks in order, then flush the file object's buffer to the OS, so
        a failing write (a full disk) is raised to the item that triggered it. A write
        already handed to the thread is shielded from cancellation, so a failed run
        neither loses nor repeats a chunk."""
        if self._fh is None or self._lock is None:
            raise RuntimeError(f"{self.label()}: used outside a run (init() has not been called)")
        async with self._lock:
            wrote = False
            while True:
                writing = self._writing
                if writing is not None:
                    try:
                        await asyncio.shield(writing)
                    finally:
                        if writing.done():  # finished or failed; still running if we were cancelled
                            self._writing = None
                if self._chunks:
                    self._writing = asyncio.ensure_future(self._fh.write(self._chunks.popleft()))
                    wrote = True
                elif wrote:
                    wrote = False
                    self._writing = asyncio.ensure_future(self._fh.flush())
                else:
                    return

    async def flush(self) -> None:
        """End of input: write what is buffered now, so a failure follows the step's
        error policy instead of surfacing at close(), where it could only be logged.
        Returns None: the items were passed on already."""
        if self._fh is None:
            return None
        if self._buf:
            self._chunks.append("\n".join(self._buf) + "\n")
            self._buf = []
            self._size = 0
        await self._drain()
        return None

    async def close(self) -> None:
        """Also at the end of a failed run (no flush() then): every item seen is written."""
        fh = self._fh
        if fh is None:
            return
        try:
            if self._buf:
                self._chunks.append("\n".join(self._buf) + "\n")
                self._buf = []
                self._size = 0
            self._lock = asyncio.Lock()  # a writer cancelled mid-run may have left it held
            await self._drain()
            await fh.flush()
        finally:
            self._fh = None
            await fh.close()


class ReadLines(Node):
    """``ReadLines(path=None, strip=True)``: for each input item, emit the lines of a text
    file, streamed (read ``chunk_size`` characters at a time, emitted while downstream has
    room). With ``path=None`` the input item is the path. ``strip=True`` drops the line
    terminator (universal newlines: ``\\n``, ``\\r\\n``, ``\\r``); ``strip=False`` keeps it.
    """

    concurrency = 1  # one file at a time: lines keep file order

    def __init__(self, path: Any = None, strip: bool = True, encoding: str = "utf-8",
                 chunk_size: int = 1 << 16, **options: Any) -> None:
        super().__init__(path, strip=strip, **options)
        self.path = None if path is None else _check_path("ReadLines", "path", path)
        if not isinstance(strip, bool):
            raise TypeError(f"ReadLines: argument 'strip' must be True or False; got {strip!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"ReadLines: argument 'chunk_size' must be an int >= 1; got {chunk_size!r}")
        for key in ("concurrency", "on_error", "retries", "timeout", "name"):
            if key in options:
                setattr(self, key, options.pop(key))
        if options:
            raise TypeError(f"ReadLines: unexpected keyword argument(s) {', '.join(sorted(options))}")
        self.strip = strip
        self.encoding = encoding
        self.chunk_size = chunk_size

    def label(self) -> str:
        if self.name:
            return self.name
        return f"ReadLines({os.path.basename(self.path)})" if self.path else "ReadLines"

    async def __call__(self, item: Any) -> AsyncIterator[str]:
        path = self.path if self.path is not None else _check_path(self.label(), "item (the path)", item)
        end = "" if self.strip else "\n"
        async with aiofiles.open(path, "r", encoding=self.encoding) as f:
            rest = ""
            while True:
                chunk = await f.read(self.chunk_size)
                if not chunk:
                    break
                lines = (rest + chunk).split("\n")
                rest = lines.pop()
                for line in lines:
                    yield line + end
            if rest:
                yield rest


__all__ = ["aiofile", "ReadLines", "MODES", "FORMATS"]
