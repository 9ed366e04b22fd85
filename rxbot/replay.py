"""Replay mode: a materialising cache that lets a failed run resume where it stopped.

With ``config.replay_mode = True`` every top-level step of a pipe is followed by a
*tap*: an Rx operator that writes the step's output stream to disk (streamed, so memory
stays flat) and learns which of those items the next step has fully handled. When step N
fails under the ``raise`` policy the run does not stop at once: step N is *poisoned* (the
failing item and every later input of N are only recorded), steps 1..N-1 run to their
end so that step N-1's recorded output is complete, and then the run raises the original
error. The cache then holds step N-1's output and which of its items N had finished; the
next run skips steps 1..N-1 and feeds the unfinished items into step N. Ctrl-C/SIGTERM
(and any other fatal error) save what is complete at that moment the same way.

See ``docs/replay.md`` for the location, the file format, the guarantees and limits.
All of it lives here; the engine only calls :meth:`ReplaySession.plan`,
:meth:`ReplaySession.poison` and :meth:`ReplaySession.finish` (hooks marked ``# replay:``).
"""
from __future__ import annotations

import asyncio
import bisect
import enum
import functools
import hashlib
import hmac
import inspect
import json
import logging
import os
import re
import secrets
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Sequence, Tuple

import reactivex
from reactivex.disposable import CompositeDisposable

from .config import config
from .flow import BlockedJoin, Route
from .node import Loop, Node, Timer
from .replay_codec import (ReplayDecodeError, ReplayEncodeError, ReplayedError, codec,
                           register_type, unregister_type)
from .step import Const, RxOp, Step

log = logging.getLogger("rxbot")

FORMAT = 1
MANIFEST = "manifest.json"
KEY_FILE = "replay.key"
#: data files are named ``<run id>.t<tap>.<suffix>``: written once, never modified
_DATA_RE = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{8}\.t\d+\.(jsonl|pkl)$")
_TMP_RE = re.compile(r"^manifest\.json\.[0-9a-f]{8}\.tmp$")
_IS_NAME = _DATA_RE
_PATH_RE = re.compile(r"^(P\d+)\[(\d+)\]")


class ReplayIntegrityError(RuntimeError):
    """A pickle replay cache failed its HMAC check (tampered with, or its key changed)."""


# =========================================================================================
# Location
# =========================================================================================
def _is_tool_path(path: Path) -> bool:
    """True for files of installed tools (pytest's console script, ``python -m x`` of a
    package in site-packages): the cache then goes to the working directory instead."""
    parts = set(path.parts)
    if parts & {"site-packages", "dist-packages"}:
        return True
    return path.parent.name in ("bin", "Scripts") and path.suffix != ".py"


def _main_file() -> Optional[Path]:
    main = sys.modules.get("__main__")
    name = getattr(main, "__file__", None)
    if not name:
        return None
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name.endswith(".__main__"):
        return None  # ``python -m package`` (e.g. ``python -m rxbot``): a tool, not a script
    path = Path(name).resolve()
    return None if _is_tool_path(path) else path


def default_root(script: Any = None) -> Path:
    """``.rxbot/replay/`` next to ``script`` or, by default, next to the running script
    (the ``__main__`` module's file); in the working directory when there is no script
    (REPL, notebooks, pytest, ``python -m rxbot``)."""
    main = Path(script).resolve() if script is not None else _main_file()
    base = main.parent if main is not None else Path.cwd()
    return base / ".rxbot" / "replay"


def replay_root(dir: Any = None) -> Path:
    """The directory holding the caches: ``dir``, else ``config.replay_dir``, else
    :func:`default_root`."""
    chosen = dir if dir is not None else config.replay_dir
    return Path(chosen).expanduser() if chosen else default_root()


def script_name() -> str:
    """The cache of each script lives in its own folder below the root."""
    main = _main_file()
    return re.sub(r"[^A-Za-z0-9_.-]", "_", main.stem) if main is not None else "session"


def _is_our_file(name: str) -> bool:
    return name == MANIFEST or bool(_DATA_RE.match(name)) or bool(_TMP_RE.match(name))


def clear_cache(dir: Any = None) -> int:
    """Delete every replay cache under ``dir`` (default: ``config.replay_dir`` or the
    default location). Only rxbot's own files are removed, and then the folders they
    leave empty. Returns the number of pipe caches removed."""
    root = replay_root(dir)
    if not root.is_dir():
        return 0
    removed = 0
    candidates = [root] + [p for p in root.iterdir() if p.is_dir()]
    candidates += [q for p in candidates[1:] for q in p.iterdir() if q.is_dir()]
    for folder in sorted(candidates, key=lambda p: len(p.parts), reverse=True):
        mine = [f for f in folder.iterdir() if f.is_file() and (_is_our_file(f.name) or f.name == KEY_FILE)]
        if any(f.name == MANIFEST for f in mine):
            removed += 1
        for f in mine:
            f.unlink(missing_ok=True)
        if folder != root:
            _rmdir_if_empty(folder)
    _rmdir_if_empty(root)
    if root.parent.name == ".rxbot":
        _rmdir_if_empty(root.parent)
    log.info("rxbot replay: removed %d cache(s) under %s", removed, root)
    return removed


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


# =========================================================================================
# Cache key: the pipe's structure
# =========================================================================================
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _scrub(text: str) -> str:
    """Object addresses change from run to run; they must not change the key."""
    return _ADDRESS.sub("", text)


def _canon(value: Any, depth: int = 0) -> str:
    """A repr that is the same in every process (sets sorted, addresses removed)."""
    if depth > 20:
        return "..."
    t = type(value)
    if t in (set, frozenset):
        return f"{t.__name__}({sorted(_canon(v, depth + 1) for v in value)})"
    if t in (list, tuple):
        return f"{t.__name__}[{', '.join(_canon(v, depth + 1) for v in value)}]"
    if t is dict:
        return "{" + ", ".join(f"{_canon(k, depth + 1)}: {_canon(v, depth + 1)}" for k, v in value.items()) + "}"
    if inspect.isfunction(value) or inspect.ismethod(value) or isinstance(value, functools.partial):
        h = hashlib.sha256()
        _callable(value, h, depth + 1)
        return f"<callable {h.hexdigest()[:16]}>"
    try:
        return _scrub(repr(value))
    except Exception:
        return f"<{type(value).__qualname__}>"


_VALUES = (int, float, complex, str, bytes, bool, type(None), range)


def _arg(value: Any, depth: int = 0) -> str:
    """How a function's closure cells, defaults and bound ``self`` enter the key: values
    (numbers, strings, tuples of them) and functions by content, any other object by its
    type only, so a captured accumulator (a list the step appends to) does not change
    the key as it fills up."""
    t = type(value)
    if t in _VALUES:
        return repr(value)
    if depth < 10 and t in (tuple, frozenset):
        parts = [_arg(v, depth + 1) for v in value]
        return f"{t.__name__}({sorted(parts) if t is frozenset else parts})"
    if inspect.isfunction(value) or inspect.ismethod(value) or isinstance(value, functools.partial):
        return _canon(value, depth + 1)
    if isinstance(value, type):
        return f"class {_ref(value)}"
    if isinstance(value, enum.Enum):
        return f"{_ref(t)}.{value.name}"
    return f"<{_ref(t)}>"


def _source_hash(obj: Any) -> str:
    try:
        text = inspect.getsource(obj)
    except (OSError, TypeError):
        code = getattr(obj, "__code__", None)
        if code is None:
            return "?"
        text = f"{code.co_code.hex()}|{_canon(code.co_consts)}|{code.co_names}"
    return hashlib.sha256(text.encode()).hexdigest()


def _ref(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _callable(fn: Any, h: Any, depth: int = 0) -> None:
    if depth > 10:
        h.update(b"<deep>")
        return
    if isinstance(fn, functools.partial):
        h.update(b"partial(")
        _callable(fn.func, h, depth + 1)
        h.update(f"{_arg(tuple(fn.args))}{sorted((k, _arg(v)) for k, v in fn.keywords.items())})".encode())
    elif isinstance(fn, Node):
        _node(fn, h)
    elif inspect.ismethod(fn):
        h.update(f"method({_arg(fn.__self__)} ".encode())
        _callable(fn.__func__, h, depth + 1)
        h.update(b")")
    elif inspect.isfunction(fn):
        cells = [c.cell_contents for c in (fn.__closure__ or ()) if _cell_filled(c)]
        kw = sorted((k, _arg(v)) for k, v in (fn.__kwdefaults__ or {}).items())
        h.update(f"fn({_ref(fn)} src={_source_hash(fn)} defaults={_arg(fn.__defaults__ or ())} "
                 f"kw={kw} closure={[_arg(c, depth + 1) for c in cells]})".encode())
    elif isinstance(fn, type):
        h.update(f"class({_ref(fn)})".encode())
    elif inspect.isbuiltin(fn) or inspect.isroutine(fn):
        h.update(f"builtin({_ref(fn)})".encode())
    else:  # an instance with __call__
        cls = type(fn)
        # public attributes configure the object; _private ones are its runtime state
        state = sorted((k, _arg(v)) for k, v in (getattr(fn, "__dict__", None) or {}).items()
                       if not k.startswith("_"))
        h.update(f"callable({_ref(cls)} src={_source_hash(cls)} state={state})".encode())


def _cell_filled(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _node(node: Node, h: Any) -> None:
    cls = type(node)
    h.update(f"node({_ref(cls)} src={_source_hash(cls)} label={_scrub(node.label())} "
             f"args={_canon(getattr(node, 'args', ()))} kwargs={_canon(getattr(node, 'kwargs', {}))} "
             f"opts={[getattr(node, k, None) for k in ('concurrency', 'on_error', 'retries', 'timeout', 'boost_kind')]}".encode())
    if isinstance(node, Loop):
        it = node.iterable
        if isinstance(it, range):
            h.update(repr(it).encode())
        elif isinstance(it, (list, tuple, set, frozenset, dict)):
            if isinstance(it, (set, frozenset)):
                h.update(_canon(it).encode())
            else:
                h.update(f"{type(it).__name__}[{len(it)}]".encode())
                for v in (it.items() if isinstance(it, dict) else it):
                    h.update(_canon(v).encode())
                    h.update(b",")
        else:
            h.update(f"iter({type(it).__qualname__} {getattr(getattr(it, 'gi_code', None), 'co_qualname', '')})".encode())
    elif isinstance(node, Timer):
        h.update(f"timer({node.delay}, {node.max_time})".encode())
        if node.until is not None:
            _callable(node.until, h)
    h.update(b")")


def _describe(step: Any, h: Any) -> None:
    if isinstance(step, Step):
        h.update(f"Step({[step.option(k) for k in ('concurrency', 'on_error', 'retries', 'timeout', 'boost')]} "
                 f"name={step.name!r} ".encode())
        _callable(step.fn, h)
        h.update(b")")
    elif isinstance(step, Const):
        h.update(f"Const({_canon(step.value)})".encode())
    elif isinstance(step, RxOp):
        h.update(f"RxOp({_scrub(step.label())} ".encode())
        _callable(step.op, h)
        h.update(b")")
    elif isinstance(step, Route):
        rt = step.route_type
        types = [_ref(t) for t in (rt if isinstance(rt, tuple) else (rt,))]
        h.update(f"Route({type(step).__qualname__} {step.kind} {types} share={step.share} join={step.join} "
                 f"name={step.name!r} func=".encode())
        if step.route_func is not None:
            _callable(step.route_func, h)
        for branch in step.branches:
            h.update(b"[")
            for s in branch:
                _describe(s, h)
            h.update(b"]")
        h.update(b")")
    elif isinstance(step, Node):
        _node(step, h)
    else:
        h.update(f"?{_ref(type(step))}".encode())


def pipe_key(pipe: Any, index: int) -> str:
    """Hash of everything that decides what a pipe computes: its steps' kinds, the
    qualified names and source of its functions, their arguments, nested routes, and
    the pipe's position in the run. A changed pipe gets a different key."""
    h = hashlib.sha256(f"rxbot-replay/{FORMAT}/pipe {index}/".encode())
    for step in pipe.steps:
        _describe(step, h)
        h.update(b"|")
    return h.hexdigest()


# =========================================================================================
# Sequence-number bookkeeping
# =========================================================================================
class RangeSet:
    """A set of ints kept as sorted, disjoint half-open ranges. Items are finished
    almost in order, so a million finished items are a handful of ranges."""

    __slots__ = ("starts", "ends")

    def __init__(self) -> None:
        self.starts: List[int] = []
        self.ends: List[int] = []

    def add(self, x: int) -> None:
        ends = self.ends
        if ends and ends[-1] == x:  # the common case: the next one in order
            ends[-1] = x + 1
            return
        starts = self.starts
        i = bisect.bisect_right(starts, x)
        if i and ends[i - 1] > x:
            return  # already in
        left = i and ends[i - 1] == x
        right = i < len(starts) and starts[i] == x + 1
        if left and right:
            ends[i - 1] = ends[i]
            del starts[i], ends[i]
        elif left:
            ends[i - 1] = x + 1
        elif right:
            starts[i] = x
        else:
            starts.insert(i, x)
            ends.insert(i, x + 1)

    def ranges(self) -> List[List[int]]:
        return [[a, b] for a, b in zip(self.starts, self.ends)]


def subtract(base: Sequence[Sequence[int]], taken: RangeSet) -> List[List[int]]:
    """``base`` (sorted ranges) minus ``taken``."""
    out: List[List[int]] = []
    cuts = taken.ranges()
    j = 0
    for a, b in base:
        while j < len(cuts) and cuts[j][1] <= a:
            j += 1
        k = j
        cur = a
        while k < len(cuts) and cuts[k][0] < b:
            if cuts[k][0] > cur:
                out.append([cur, cuts[k][0]])
            cur = max(cur, cuts[k][1])
            k += 1
        if cur < b:
            out.append([cur, b])
    return out


def _count(ranges: Sequence[Sequence[int]]) -> int:
    return sum(b - a for a, b in ranges)


# =========================================================================================
# Files: atomic, durable writes
# =========================================================================================
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


# =========================================================================================
# The run: taps between top-level steps
# =========================================================================================
NONE, INLINE, ASYNC, UNTRACKED = "none", "inline", "async", "untracked"


class Tap:
    """Sits after top-level step ``k``: records its output (a new segment) and may re-feed
    pending items of earlier runs (old segments) into step ``k + 1``, whose progress it
    tracks per item:

    * ``INLINE`` — a sync step: an item is finished when pushing it returns, unless the
      step was poisoned meanwhile or the item went to deferred work (a retry, an
      awaitable result), which then settles it when its results are delivered;
    * ``ASYNC`` — an async step: its callable is wrapped so the item settles once its
      results are delivered;
    * ``UNTRACKED`` — Loop, Timer, raw Rx operators, routes with async parts, nodes with
      ``flush``: all items count as finished only if the step ends without failing.
    """

    def __init__(self, state: "PipeState", k: int, recorder: Optional[Recorder],
                 old: Sequence[Segment], inject: Any, replayer: Optional[Replayer]) -> None:
        self.state = state
        self.k = k
        self.recorder = recorder
        self.segments: List[Any] = list(old)
        self.live_seg = -1
        if recorder is not None:
            self.live_seg = len(self.segments)
            self.segments.append(recorder)
        self.consumed = [RangeSet() for _ in self.segments]
        self.inject = inject
        self.replayer = replayer
        self.mode = NONE
        #: INLINE: what the wrapped callable reported for the item being pushed
        self.initial: Any = _DONE  # a sync route or a constant reports nothing
        self.outcome: Any = _DONE
        self.retries = 0  # the INLINE step's retry budget: a failure may be retried later
        self.poisoned = False
        self.poison_events = 0
        self.inflight: Dict[int, deque] = {}
        self.pushing: Any = _NOTHING
        self.live_done = False
        self.observer: Any = None
        self.emit: Any = None
        self.open_sources = 0
        self.ended = False

    # -- wiring ------------------------------------------------------------------------
    def operator(self, source: reactivex.Observable) -> reactivex.Observable:
        from .engine.stages import fast_on_next, trigger

        def subscribe(observer, scheduler=None):
            self.observer = observer
            self.emit = fast_on_next(observer)
            self.open_sources = 1 + (self.inject is not None)
            on_live = self.on_live

            def entry(x: Any) -> None:
                on_live(x)

            entry.__rxbot_fused__ = True  # upstream segments may call it directly
            subs = [source.subscribe(entry, self.on_error, self.on_live_done, scheduler=scheduler)]
            if self.inject is not None:
                subs.append(trigger(self.state.ctx, 0).pipe(self.inject.operator).subscribe(
                    self.on_replayed, self.on_error, self.on_source_done, scheduler=scheduler))
            return CompositeDisposable(*subs)

        return reactivex.create(subscribe)

    def on_live(self, x: Any) -> None:
        recorder = self.recorder
        if recorder is None:
            self.emit(x)
            return
        if self.state.broken is not None:
            return
        try:
            seq = recorder.write(x)
        except ReplayEncodeError as exc:
            self.state.encode_failed(self.k, exc)
            return
        self.forward(x, self.live_seg, seq)

    def on_replayed(self, x: Any) -> None:
        si, seq = self.replayer.current
        self.forward(x, si, seq)

    def on_error(self, exc: Exception) -> None:
        if not self.ended:
            self.ended = True
            self.observer.on_error(exc)

    def on_live_done(self) -> None:
        if not self.state.ctx.stopped:  # a stopped run's stages end early: not "complete"
            self.live_done = True
        self.on_source_done()

    def on_source_done(self) -> None:
        self.open_sources -= 1
        if self.open_sources == 0 and not self.ended:
            self.ended = True
            self.observer.on_completed()

    # -- progress of step k + 1 ----------------------------------------------------------
    def forward(self, x: Any, si: int, seq: int) -> None:
        if self.poisoned:
            return  # recorded only: the next run feeds it to step k + 1
        mode = self.mode
        if mode is INLINE:
            events = self.poison_events
            self.pushing = x
            self.outcome = self.initial
            try:
                self.emit(x)
            finally:
                self.pushing = _NOTHING
            if self.poison_events != events:
                return  # failed for good: the next run feeds it again
            outcome = self.outcome
            if outcome is _DONE or (outcome is _RAISED and not self.retries):
                self.consumed[si].add(seq)  # handled (a failure was dropped by policy)
            else:  # its results come later (awaitable result) or a retry decides
                self.inflight.setdefault(id(x), deque()).append((si, seq))
        elif mode is ASYNC:
            self.inflight.setdefault(id(x), deque()).append((si, seq))
            self.emit(x)
        else:
            self.emit(x)

    def forget(self, x: Any) -> None:
        """Stop tracking an item without marking it finished (the next run redoes it)."""
        tokens = self.inflight.get(id(x))
        if tokens:
            tokens.popleft()
            if not tokens:
                del self.inflight[id(x)]

    def settle(self, x: Any) -> None:
        tokens = self.inflight.get(id(x))
        if not tokens:
            return
        si, seq = tokens.popleft()
        if not tokens:
            del self.inflight[id(x)]
        self.consumed[si].add(seq)

    async def settling(self, x: Any, result: Any) -> Any:
        """Deliver ``result`` under the return-value rules, then settle ``x``: an item is
        finished only once all its results have gone downstream."""
        from .engine.results import AGEN, AWAIT, MANY, ONE, SINGLE, kind_of

        every = config.yield_every
        while result is not None:
            kind = ONE if type(result) in SINGLE else kind_of(result)
            if kind == ONE:
                yield result
            elif kind == AWAIT:
                result = await result
                continue
            elif kind == MANY:
                n = 0
                for v in result:
                    yield v
                    n += 1
                    if n >= every:
                        n = 0
                        await asyncio.sleep(0)
            elif kind == AGEN:
                async for v in result:
                    yield v
            break
        self.settle(x)

    def wrap_sync(self, fn: Any) -> Any:
        """The callable of an INLINE step. Called inline, it tells the tap that the item
        was handled by returning normally (a lazy iterator result is watched, since it
        may still fail while the segment spreads it); an awaitable result, or a call
        from a retry after a failed inline attempt, settles the item after delivery."""
        from .engine.results import AGEN, AWAIT, MANY, SINGLE, kind_of

        def replay_tracked(x: Any) -> Any:
            result = fn(x)
            if self.pushing is x:
                if result is None or type(result) in SINGLE:
                    self.outcome = _DONE
                    return result
                kind = kind_of(result)
                if kind not in (AWAIT, AGEN):
                    self.outcome = _DONE
                    if kind == MANY and iter(result) is result:
                        return self._watched(result)
                    return result
                self.outcome = _LATER
            elif result is None:
                self.settle(x)
                return None
            return self.settling(x, result)

        return replay_tracked

    def _watched(self, iterator: Any) -> Iterator[Any]:
        try:
            yield from iterator
        except BaseException:
            self.outcome = _RAISED
            raise

    def wrap_async(self, fn: Any, retries: int) -> Any:
        """The callable of an ASYNC step: awaited under the step's timeout as before; the
        item settles when its results have been delivered."""

        async def replay_tracked(x: Any) -> Any:
            try:
                result = fn(x)
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    result = await result
            except BaseException:
                if not retries:
                    self.forget(x)  # no second attempt will come: it stays to do
                raise
            if result is None:
                self.settle(x)
                return None
            return self.settling(x, result)

        return replay_tracked


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_NOTHING = _Marker("<nothing>")
_DONE, _RAISED, _LATER = _Marker("done"), _Marker("raised"), _Marker("later")


def _retrying(step: Any) -> bool:
    if isinstance(step, Step):
        policy, retries = step.option("on_error"), step.option("retries")
    elif isinstance(step, Node):
        policy, retries = step.on_error, step.retries
    else:
        return False
    return bool(retries) or config.policy(policy) == "retry"


def _sync_route(route: Route) -> bool:
    """A route whose every nested step runs inline (so pushing an item into it returns
    only once the route has handled it)."""
    from .engine.compiler import _fusable

    if isinstance(route, BlockedJoin) or route.route_func_async:
        return False
    for branch in route.branches:
        for step in branch:
            if isinstance(step, Route) and step.kind != "filter":
                if not _sync_route(step):
                    return False
            elif not _fusable(step) or _retrying(step):
                return False
    return True


def _blocked_prefixes(steps: Sequence[Any], path: str, out: List[str]) -> List[str]:
    """The paths of the BlockedJoins in ``steps``, named the way the compiler names them."""
    for i, step in enumerate(steps):
        if isinstance(step, Route):
            where = f"{path}[{i + 1}] {step.label()}"
            if isinstance(step, BlockedJoin):
                out.append(where + "/")
            for b, branch in enumerate(step.branches):
                _blocked_prefixes(branch, f"{where}/{b + 1}", out)
    return out


def _infinite(step: Any) -> bool:
    import itertools

    node = step.fn if isinstance(step, Step) else step
    if isinstance(node, Timer):
        return node.max_time is None and node.until is None
    if isinstance(node, Loop):
        return isinstance(node.iterable, (itertools.count, itertools.cycle))
    return False


class PipeState:
    """One pipe's cache slot (``<root>/<script>/P<i>/``) and its taps for this run."""

    def __init__(self, session: "ReplaySession", pipe: Any, index: int, path: str) -> None:
        self.session = session
        self.ctx = session.ctx
        self.pipe = pipe
        self.path = path
        self.folder = session.base / path
        self.key = pipe_key(pipe, index)
        self.steps = list(pipe.steps)
        self.resume = 1
        self.old: Dict[int, List[Segment]] = {}
        self.taps: Dict[int, Tap] = {}
        self.errors: List[BaseException] = []
        self.broken: Optional[BaseException] = None
        self.planned = False
        self.blocked = _blocked_prefixes(self.steps, path, [])

    # -- loading -------------------------------------------------------------------------
    def load(self) -> None:
        mpath = self.folder / MANIFEST
        if not mpath.exists():
            return
        try:
            manifest = json.loads(mpath.read_bytes())
            if manifest.get("format") != FORMAT:
                raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT}")
            taps = {int(k): [Segment(s) for s in segs] for k, segs in manifest["taps"].items()}
            resume = int(manifest["resume"])
            if not 2 <= resume <= len(self.steps) or any(
                    not resume - 1 <= k < len(self.steps) or not _IS_NAME.match(s.file)
                    or s.serializer not in ("json", "pickle")
                    for k, segs in taps.items() for s in segs):
                raise ValueError("inconsistent manifest")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("rxbot replay: ignoring the unreadable replay cache %s (%s); pipe %s starts "
                        "from its first step", mpath, exc, self.path)
            return
        if manifest.get("key") != self.key:
            log.warning("rxbot replay: pipe %s changed since the failed run of %s (its steps, functions "
                        "or arguments differ), so its saved output is not replayed; starting from the "
                        "first step", self.path, manifest.get("saved", "?"))
            return
        if any(s.serializer == "pickle" for segs in taps.values() for s in segs) and \
                config.replay_serializer != "pickle":
            log.warning("rxbot replay: the cache of pipe %s was saved with pickle; set "
                        "config.replay_serializer = 'pickle' to load it. Starting from the first step",
                        self.path)
            return
        key = _load_key(self.session.base, create=False)
        opened: List[Segment] = []
        try:
            for segs in taps.values():
                for seg in segs:
                    _verify(self.folder, seg, key)
                    opened.append(seg)
        except ReplayIntegrityError:
            for seg in opened:
                seg.fh.close()
            raise
        except (OSError, ValueError) as exc:
            for seg in opened:
                seg.fh.close()
            log.warning("rxbot replay: the cache of pipe %s is damaged (%s); starting from the first step",
                        self.path, exc)
            return
        self.resume = resume
        self.old = taps
        feed = taps.get(self.resume - 1, [])
        count = sum(_count(s.pending) for s in feed)
        later = sum(_count(s.pending) for k, segs in taps.items() if k >= self.resume for s in segs)
        step = self.steps[self.resume - 1]
        log.warning(
            "rxbot replay: replaying pipe %s from step %d (%s) with %d items saved by the failed run of "
            "%s; steps 1-%d are skipped%s", self.path, self.resume, step.label(), count,
            manifest.get("saved", "?"), self.resume - 1,
            f" ({later} more items re-fed to later steps)" if later else "")

    # -- building ------------------------------------------------------------------------
    def plan(self, builder: Any) -> Tuple[reactivex.Observable, list]:
        from .engine.stages import IterStage, iterate, trigger

        self.load()
        self.planned = True
        ctx = self.ctx
        steps = self.steps
        m = len(steps)
        r = self.resume
        session = self.session
        ops_rev: list = []
        bounds: list = []
        end = Tap(self, m, None, [], None, None)
        self.taps[m] = end
        ops_rev.append(end.operator)
        for k in range(m, r - 1, -1):
            op, bounds, mode, stage = self._build_step(builder, k, bounds, terminal=(k == m))
            ops_rev.append(op)
            if k == 1:
                continue
            old = self.old.get(k - 1, [])
            recorder = Recorder(self.folder, session.run_id, k - 1, session.serializer, session.key) \
                if k - 1 >= r else None
            inject = replayer = None
            if old:
                replayer = Replayer(old)

                async def produce(item, emit, gate, stats, it=replayer):
                    await iterate(it, emit, gate, stats)

                rt = ctx.runtime(f"{self.path} replay into [{k}]", f"replay into {steps[k - 1].label()}")
                inject = IterStage(ctx, rt, produce, bounds)
            tap = Tap(self, k - 1, recorder, old, inject, replayer)
            tap.mode = mode
            if mode is INLINE and stage is not None and stage.fns[0] is not None:
                stage.fns[0] = tap.wrap_sync(stage.fns[0])
                tap.initial = _RAISED  # until the wrapper reports otherwise
                tap.retries = stage.runtimes[0].retries
            elif mode is ASYNC:
                stage.fn = tap.wrap_async(stage.fn, stage.rt.retries)
            self.taps[k - 1] = tap
            ops_rev.append(tap.operator)
        ops_rev.reverse()
        source = reactivex.empty() if r > 1 else trigger(ctx, 0)
        return source, ops_rev

    def _build_step(self, builder: Any, k: int, bounds: list, terminal: bool):
        """Build top-level step ``k`` alone (never fused with its neighbours, so a tap
        fits between), with the same path the normal build gives it."""
        from .engine.compiler import _fusable
        from .engine.stages import AsyncStage

        step = self.steps[k - 1]
        op, bounds, stage = builder.build_span(self.steps, k - 1, k - 1, bounds, self.path, terminal)
        if _fusable(step):
            mode = INLINE if not (isinstance(step, Route) and step.kind != "filter") else UNTRACKED
        elif isinstance(step, Route):
            mode = INLINE if _sync_route(step) else UNTRACKED
        else:
            tracked = isinstance(stage, AsyncStage) and stage.flush is None
            mode = ASYNC if tracked else UNTRACKED
        return op, bounds, mode, stage

    # -- failures ------------------------------------------------------------------------
    def poison(self, k: int, rt: Any, error: BaseException) -> bool:
        tap = self.taps.get(k - 1)
        if tap is None or self.broken is not None or k < max(2, self.resume) or k > len(self.steps):
            return False
        if any(_infinite(self.steps[j - 1]) for j in range(self.resume, k)):
            return False  # the steps before would never finish: stop now instead
        if any(rt.path.startswith(p) for p in self.blocked):
            return False  # dropping it would give the BlockedJoin's tuple a hole: stop now
        tap.poison_events += 1
        if not tap.poisoned:
            tap.poisoned = True
            self.errors.append(error)
            log.warning(
                "rxbot replay: step %d (%s) of pipe %s failed (%s: %s); steps %d-%d keep running so "
                "their output can be saved, then the run raises this error (Ctrl-C stops at once)",
                k, rt.label, self.path, type(error).__name__, str(error)[:200], self.resume, k - 1)
        return True

    def encode_failed(self, k: int, exc: ReplayEncodeError) -> None:
        if self.broken is None:
            step = self.steps[k - 1]
            err = ReplayEncodeError(f"rxbot replay: output of step {k} ({step.label()}) of pipe "
                                    f"{self.path}: {exc}")
            self.broken = err
            self.ctx.fail(err)

    # -- the end of the run ----------------------------------------------------------------
    def finish(self) -> None:
        recorders = [t.recorder for t in self.taps.values() if t.recorder is not None]
        replayers = [t.replayer for t in self.taps.values() if t.replayer is not None]
        for rp in replayers:
            rp.close()
        if self.broken is not None:
            for rec in recorders:
                rec.discard()
            return
        m = len(self.steps)
        r = self.resume
        taps = self.taps
        pending: Dict[int, List[Tuple[Any, List[List[int]]]]] = {}
        for k in range(max(r - 1, 1), m):
            tap = taps[k]
            nxt = taps[k + 1]
            clean = nxt.live_done and not tap.poisoned  # step k+1 ended without failing
            segs = []
            for si, seg in enumerate(tap.segments):
                if clean:
                    left: List[List[int]] = []
                elif isinstance(seg, Recorder):
                    left = subtract([[0, seg.count]] if seg.count else [], tap.consumed[si])
                else:
                    left = subtract(seg.pending, tap.consumed[si])
                segs.append((seg, left))
            pending[k] = segs

        def todo(k: int) -> int:
            return sum(_count(left) for _, left in pending.get(k, []))

        new_resume = None
        for k in range(max(r, 1), m + 1):
            complete = taps[k].live_done
            if not complete or (k > 1 and todo(k - 1)):
                new_resume = k
                break
        if new_resume is None or new_resume == 1:
            for rec in recorders:
                rec.discard()
            self._clear_slot()
            if new_resume == 1:
                log.warning("rxbot replay: pipe %s stopped before its first step finished; nothing "
                            "to replay, the next run starts from the beginning", self.path)
            return
        out_taps: Dict[str, list] = {}
        keep: set = set()
        sealed: Dict[int, dict] = {}
        for k in range(new_resume - 1, m):
            entries = []
            for seg, left in pending[k]:
                if not left:
                    continue
                if isinstance(seg, Recorder):
                    if id(seg) not in sealed:
                        sealed[id(seg)] = seg.seal()
                    info = sealed[id(seg)]
                    entries.append({**info, "pending": left})
                    keep.add(seg.path.name)
                else:
                    entries.append(seg.info(left))
                    keep.add(seg.file)
            if entries:
                out_taps[str(k)] = entries
        for rec in recorders:
            if rec.path.name not in keep:
                rec.discard()
        manifest = {
            "format": FORMAT, "key": self.key, "pipe": self.path,
            "steps": [s.label() for s in self.steps],
            "resume": new_resume, "saved": time.strftime("%Y-%m-%d %H:%M:%S"),
            "error": _error_text(self.errors[0] if self.errors else self.ctx.error),
            "taps": out_taps,
        }
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self.folder / MANIFEST, json.dumps(manifest, indent=1).encode())
        self._remove_files_except(keep | {MANIFEST})
        count = todo(new_resume - 1)
        log.warning("rxbot replay: saved pipe %s to %s; the next run with replay_mode skips steps "
                    "1-%d and feeds %d items into step %d (%s)", self.path, self.folder,
                    new_resume - 1, count, new_resume, self.steps[new_resume - 1].label())

    def _clear_slot(self) -> None:
        mpath = self.folder / MANIFEST
        if mpath.exists():
            mpath.unlink()
            _fsync_dir(self.folder)
        self._remove_files_except(set())
        for folder in (self.folder, self.session.base, self.session.base.parent):
            _rmdir_if_empty(folder)
        if self.session.base.parent.parent.name == ".rxbot":
            _rmdir_if_empty(self.session.base.parent.parent)

    def _remove_files_except(self, keep: set) -> None:
        try:
            names = os.listdir(self.folder)
        except OSError:
            return
        for name in names:
            if name not in keep and _is_our_file(name):
                try:
                    os.unlink(self.folder / name)
                except OSError:
                    pass


def _error_text(exc: Optional[BaseException]) -> Optional[str]:
    if exc is None:
        return None
    return f"{type(exc).__name__}: {str(exc)[:300]}"


class ReplaySession:
    """Replay mode for one run of some pipes (``ctx.replay``)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.serializer = config.replay_serializer
        codec(self.serializer)  # reject a bad setting before anything runs
        self.base = replay_root() / script_name()
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
        self.key = _load_key(self.base, create=True) if self.serializer == "pickle" else None
        self.states: Dict[str, PipeState] = {}

    def plan(self, pipe: Any, builder: Any, path: str) -> Tuple[reactivex.Observable, list]:
        """The source and operators of ``pipe`` with taps between its top-level steps."""
        index = int(path[1:])
        state = self.states[path] = PipeState(self, pipe, index, path)
        return state.plan(builder)

    def poison(self, rt: Any, error: BaseException) -> bool:
        """A step gave up on an item under the ``raise`` policy. If it is (inside) a
        top-level step N >= 2 of a replayed pipe, poison step N and keep the run going
        (returns True); the run raises ``error`` when it ends."""
        m = _PATH_RE.match(rt.path)
        if m is None:
            return False
        state = self.states.get(m.group(1))
        return state is not None and state.poison(int(m.group(2)), rt, error)

    def finish(self) -> None:
        """Save or clear each pipe's cache, then make a poisoned run fail with its first
        error. Called once, after every task of the run has ended."""
        for state in self.states.values():
            if not state.planned:
                continue
            try:
                state.finish()
            except Exception:
                log.exception("rxbot replay: saving the cache of pipe %s failed", state.path)
        if self.ctx.error is None:
            errors = [e for s in self.states.values() for e in s.errors]
            if errors:
                self.ctx.error = errors[0]


def session(ctx: Any) -> Optional[ReplaySession]:
    """A :class:`ReplaySession` when ``config.replay_mode`` is on, else None."""
    return ReplaySession(ctx) if config.replay_mode else None


__all__ = [
    "clear_cache", "default_root", "replay_root", "register_type", "unregister_type",
    "ReplayEncodeError", "ReplayDecodeError", "ReplayIntegrityError", "ReplayedError",
    "ReplaySession", "pipe_key", "atomic_write", "session",
]
