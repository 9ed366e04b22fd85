"""The data files of a cache: atomic, durable writes, the HMAC key signing pickle
caches, recording a step's output, verifying a saved file and replaying its pending items."""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from typing import Any, BinaryIO, Iterator, List, Optional, Sequence, Tuple

from .codec import codec
from .layout import KEY_FILE


class ReplayIntegrityError(RuntimeError):
    """A pickle replay cache failed its HMAC check (tampered with, or its key changed)."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash at any moment leaves either the old
    file or the new one, complete: temp file in the same folder, fsync, rename, fsync
    of the folder."""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _load_key(folder: Path, create: bool) -> Optional[bytes]:
    """The HMAC key signing pickle caches, kept beside them (mode 0600)."""
    path = folder / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        if not create:
            return None
    except ValueError:
        return None
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another run made it meanwhile
        time.sleep(0.05)
        return _load_key(folder, create=False)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex())
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(folder)
    return key


def _hasher(serializer: str, key: Optional[bytes]) -> Any:
    return hmac.new(key, digestmod="sha256") if serializer == "pickle" else hashlib.sha256()


def _digest_name(serializer: str) -> str:
    return "hmac-sha256" if serializer == "pickle" else "sha256"


class Recorder:
    """Streams one step's output to a new data file (opened on the first item)."""

    def __init__(self, folder: Path, run_id: str, tap: int, serializer: str, key: Optional[bytes]) -> None:
        self.codec = codec(serializer)
        self.serializer = serializer
        self.path = folder / f"{run_id}.t{tap}.{self.codec.suffix}"
        self.fh: Optional[BinaryIO] = None
        self.hash = _hasher(serializer, key)
        self.count = 0
        self.closed = False
        self.buf: List[bytes] = []
        self.size = 0
        self.dumps = self.codec.dumps
        self.frame = self.codec.frame

    def write(self, item: Any) -> int:
        """Record ``item``; returns its sequence number. Records are written in blocks of
        about 64 KiB, so memory stays flat however long the stream."""
        record = self.frame(self.dumps(item))
        self.buf.append(record)
        self.size += len(record)
        if self.size >= 1 << 16:
            self._flush()
        seq = self.count
        self.count = seq + 1
        return seq

    def _flush(self) -> None:
        if self.fh is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.fh = open(self.path, "wb")
        block = b"".join(self.buf)
        self.buf.clear()
        self.size = 0
        self.hash.update(block)
        self.fh.write(block)

    def seal(self) -> dict:
        """Flush and fsync the file; its description for the manifest."""
        self._flush()
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        self.closed = True
        return {"file": self.path.name, "serializer": self.serializer, "count": self.count,
                "digest": f"{_digest_name(self.serializer)}:{self.hash.hexdigest()}"}

    def discard(self) -> None:
        if self.fh is not None and not self.closed:
            self.fh.close()
        self.closed = True
        self.buf.clear()
        self.path.unlink(missing_ok=True)


class Segment:
    """One recorded file of a step's output, and which of its items are still to do."""

    __slots__ = ("file", "serializer", "count", "digest", "pending", "fh")

    def __init__(self, info: dict, pending: Optional[List[List[int]]] = None) -> None:
        self.file: str = info["file"]
        self.serializer: str = info["serializer"]
        self.count: int = int(info["count"])
        self.digest: str = info["digest"]
        self.pending: List[List[int]] = pending if pending is not None else [
            [int(a), int(b)] for a, b in info["pending"]]
        self.fh: Optional[BinaryIO] = None

    def info(self, pending: List[List[int]]) -> dict:
        return {"file": self.file, "serializer": self.serializer, "count": self.count,
                "digest": self.digest, "pending": pending}


def _verify(folder: Path, seg: Segment, key: Optional[bytes]) -> None:
    """Check a data file against its recorded digest, keeping it open so the file that
    is replayed is the file that was checked. Raises ReplayIntegrityError for a pickle
    file that does not match (never unpickled), ValueError for other damage."""
    name, _, expected = seg.digest.partition(":")
    if name != _digest_name(seg.serializer):
        raise ValueError(f"{seg.file}: unexpected digest kind {name!r}")
    if seg.serializer == "pickle" and key is None:
        raise ReplayIntegrityError(
            f"rxbot replay: the pickle cache {folder / seg.file} cannot be verified: its HMAC key "
            f"{folder.parent / KEY_FILE} is missing; refusing to load it. Remove the cache with "
            f"'python -m rxbot replay --clear' (or rxbot.replay.clear_cache())"
        )
    fh = open(folder / seg.file, "rb")
    try:
        h = _hasher(seg.serializer, key)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
        if not hmac.compare_digest(h.hexdigest(), expected):
            if seg.serializer == "pickle":
                raise ReplayIntegrityError(
                    f"rxbot replay: the pickle cache {folder / seg.file} failed its HMAC check "
                    f"(tampered with, or the key {folder.parent / KEY_FILE} changed); refusing to "
                    f"unpickle it. Remove the cache with 'python -m rxbot replay --clear' (or "
                    f"rxbot.replay.clear_cache())"
                )
            raise ValueError(f"{seg.file}: content does not match its checksum")
        fh.seek(0)
    except BaseException:
        fh.close()
        raise
    seg.fh = fh


class Replayer:
    """Iterates the still-pending items of some segments, lazily, in order; ``current``
    is the ``(segment index, sequence number)`` of the item last yielded."""

    def __init__(self, segments: Sequence[Segment]) -> None:
        self.segments = segments
        self.current: Tuple[int, int] = (-1, -1)

    def __iter__(self) -> Iterator[Any]:
        for si, seg in enumerate(self.segments):
            fh = seg.fh
            if fh is None:
                continue
            cdc = codec(seg.serializer)
            ranges = seg.pending
            r = 0
            for seq, payload in enumerate(cdc.records(fh)):
                while r < len(ranges) and seq >= ranges[r][1]:
                    r += 1
                if r == len(ranges):
                    break
                if seq < ranges[r][0]:
                    continue
                item = cdc.loads(payload)
                self.current = (si, seq)
                yield item
            fh.close()
            seg.fh = None

    def close(self) -> None:
        for seg in self.segments:
            if seg.fh is not None:
                seg.fh.close()
                seg.fh = None
