"""Durable dead letters: every item that failed under ``ignore``/``retry``/``pipein`` is
written, as it fails, to a small SQLite file beside the replay cache
(``.rxbot/durable/<script>/deadletters.sqlite``, or ``config.durable_dir``), with its
step, the pipe's key, the error's type and (redacted) message, the attempt and the
time. The item itself is stored with the replay codec (never pickle: a pickle setting
falls back to the safe default codec); an item the codec cannot store is kept as a
letter without its item (listed, not re-drivable).

They are written when the run has a script (``python job.py``, ``rxbot run job.py``)
or when ``config.durable_dir`` is set; a REPL, a notebook or pytest keep them in the
report only.

``rxbot deadletters SCRIPT`` lists them by step and error (``--show N`` prints one);
``rxbot redrive SCRIPT`` / ``BotFrame.run(redrive=True)`` runs them again
(:mod:`rxbot.durable.redrive`).
"""
from __future__ import annotations

import sqlite3
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ..config import config
from ..engine.hooks import RunHooks, RunOutcome
from ..errors import message_of, short_repr
from ..redact import redact
from ..replay.codec import decode as decode_item, encode as encode_item
from ..replay.store import _main_file, default_root, script_name
from ..tree.walk import StepId

FILE = "deadletters.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_key TEXT NOT NULL,      -- script/pipe, as resume keys checkpoints
    pipe_key TEXT NOT NULL,     -- the pipe as built (replay's step hashes)
    step TEXT NOT NULL,         -- the failing step's id, e.g. 'P1[3] parse'
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,      -- redacted
    attempt INTEGER NOT NULL,
    at REAL NOT NULL,
    codec TEXT,
    item BLOB,                  -- NULL: the item could not be stored
    shown TEXT NOT NULL,        -- a short, redacted view of the item
    status TEXT NOT NULL DEFAULT 'open',   -- open | done (passed on redrive) | retried (failed again)
    parent INTEGER              -- the letter this one is a new attempt of
);
CREATE INDEX IF NOT EXISTS letters_open ON letters (run_key, status);
"""


_taught = False


def _teach_codec(load_http: bool) -> None:
    """The items a crawl fails on are mostly HTTP responses: let the codec store them
    (status, body, URL, headers, the encoding found) so a redrive can parse them again.

    Done on first use, not at import: importing rxbot.http (aiohttp) costs about 0.3 s,
    which every run paid. Storing needs it only once HttpLoader is loaded (no response
    can exist before); reading a letter back (``load_http``) loads it."""
    global _taught
    if _taught or not (load_http or "rxbot.http.http" in sys.modules):
        return
    _taught = True
    from ..http.http import HttpResponse
    from ..replay.codec import register_type

    def encode(r: HttpResponse) -> dict:
        return {"status": r.status, "content": bytes(r.content), "url": str(r.url),
                "headers": [[str(k), str(v)] for k, v in r.headers.items()], "encoding": r._encoding,
                "reason": r.reason, "method": r.method, "attempts": r.attempts, "from_cache": r.from_cache}

    def decode(v: dict) -> HttpResponse:
        return HttpResponse(v["status"], v["content"], url=v["url"], headers=[tuple(h) for h in v["headers"]],
                            encoding=v["encoding"], reason=v["reason"], method=v["method"],
                            attempts=v["attempts"], from_cache=v["from_cache"])

    try:
        register_type(HttpResponse, encode, decode, name="rxbot.http:HttpResponse")
    except ValueError:  # taught already (by replay itself)
        pass


def safe_codec_name() -> str:
    """The codec dead letters are stored with: always the replay cache's safe msgpack
    records, whatever ``config.replay_serializer`` says (never pickle)."""
    return "msgpack"


def store_path(script: Any = None) -> Path:
    """Where the dead letters of ``script`` (default: the running script) are kept."""
    if config.durable_dir:
        root = Path(config.durable_dir).expanduser()
    else:
        root = default_root(script).parent / "durable"
    name = script_name() if script is None else _name_of(Path(script))
    return root / name / FILE


def _name_of(path: Path) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)


def enabled() -> bool:
    """Dead letters are made durable for a script's runs, or when a folder is set."""
    return bool(config.durable_dir) or _main_file() is not None


@dataclass
class Letter:
    id: int
    run_key: str
    pipe_key: str
    step: str
    error_type: str
    message: str
    attempt: int
    at: float
    codec: Optional[str]
    item: Optional[bytes]
    shown: str
    status: str
    parent: Optional[int]

    def decoded(self) -> Any:
        if self.item is None or self.codec is None:
            raise ValueError(f"dead letter {self.id} (step {self.step}) has no stored item: {self.shown}")
        if self.codec not in ("msgpack", "json"):
            raise ValueError(f"dead letter {self.id} (step {self.step}) was stored with codec {self.codec!r}, "
                             f"which this rxbot cannot read back")
        _teach_codec(load_http=True)
        return decode_item(self.item)


class LetterStore:
    """The SQLite file of one script's dead letters."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), timeout=10.0, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def add(self, run_key: str, pipe_key: str, step: str, error: BaseException, item: Any, shown: str,
            attempt: int = 1, parent: Optional[int] = None) -> int:
        name = safe_codec_name()
        _teach_codec(load_http=False)
        try:
            payload: Optional[bytes] = encode_item(item)
        except Exception as exc:  # kept, listed, not re-drivable
            payload = None
            shown = f"{shown} (not stored: {type(exc).__name__}: {exc})"
        cur = self.db.execute(
            "INSERT INTO letters (run_key, pipe_key, step, error_type, message, attempt, at, codec, item, shown, "
            "parent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_key, pipe_key, step, type(error).__name__, message_of(error, 2000), attempt, time.time(),
             name if payload is not None else None, payload, redact(shown)[:500], parent))
        return int(cur.lastrowid or 0)

    def letters(self, run_key: Optional[str] = None, status: Optional[str] = "open") -> List[Letter]:
        sql = "SELECT * FROM letters WHERE 1=1"
        args: List[Any] = []
        if run_key is not None:
            sql += " AND run_key = ?"
            args.append(run_key)
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        return [Letter(*row) for row in self.db.execute(sql + " ORDER BY id", args)]

    def get(self, letter_id: int) -> Optional[Letter]:
        row = self.db.execute("SELECT * FROM letters WHERE id = ?", (letter_id,)).fetchone()
        return Letter(*row) if row else None

    def mark(self, ids: Sequence[int], status: str) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("UPDATE letters SET status = ? WHERE id = ?", [(status, i) for i in ids])
        self.db.execute("COMMIT")

    def summary(self) -> List[Tuple[str, str, str, int, int]]:
        """(run_key, step, error type, open letters, highest attempt) by step and error."""
        return list(self.db.execute(
            "SELECT run_key, step, error_type, COUNT(*), MAX(attempt) FROM letters WHERE status = 'open' "
            "GROUP BY run_key, step, error_type ORDER BY run_key, step, error_type"))


def run_key_of(pipe: Any, index: int) -> str:
    return f"{script_name()}/{pipe.name or StepId.root(f'P{index}', index)}"


class _PipeKeys(Dict[int, Tuple[str, str]]):
    """(run key, pipe key) by pipe number, worked out when a pipe's first letter is
    written: a pipe's key hashes its steps, a Loop source's elements included, which is
    too slow to do at the start of every run (most runs write no letter)."""

    def __init__(self, pipes: Sequence[Any]) -> None:
        super().__init__()
        self.pipes = pipes

    def __missing__(self, index: int) -> Tuple[str, str]:
        if not 1 <= index <= len(self.pipes):
            raise KeyError(index)
        from .resume import pipe_hash, step_hashes

        pipe = self.pipes[index - 1]
        value = self[index] = (run_key_of(pipe, index), pipe_hash(step_hashes(pipe.steps)))
        return value


class LetterHooks(RunHooks):
    """Writes every dead letter of a run to the store as it happens (watch-only hooks:
    the pipes are built as without hooks)."""

    rebuilds = False

    def __init__(self, pipes: Sequence[Any], store: Optional[LetterStore] = None) -> None:
        self.store = store
        self.pipes = list(pipes)
        self.keys: Dict[int, Tuple[str, str]] = _PipeKeys(self.pipes)
        #: a redrive sets this: the letter each re-driven item came from, by id(item)
        self.origin: Dict[int, Letter] = {}
        self.refailed: Dict[int, int] = {}  # original letter id -> the new letter's id

    def open(self) -> LetterStore:
        if self.store is None:
            self.store = LetterStore(store_path())
        return self.store

    def step_name(self, path: Any) -> str:
        """The step's id as stored (a redrive runs one pipe alone, renumbered P1)."""
        return str(path)

    def dead_letter(self, letter: Any) -> None:
        path = getattr(letter, "path", None)
        index = getattr(path, "pipe_index", 0)
        try:
            run_key, pipe_key = self.keys[index]
        except KeyError:  # not one of this run's pipes
            return
        step = self.step_name(path)
        origin = self.origin.get(id(letter.item))
        attempt, parent = 1, None
        if origin is not None and origin.step == step:  # the re-driven item failed again at its step
            attempt, parent = origin.attempt + 1, origin.id
        new_id = self.open().add(run_key, pipe_key, step, letter.exception, letter.item,
                                 short_repr(letter.item, 200), attempt, parent)
        if parent is not None:
            self.refailed[parent] = new_id

    def finished(self, outcome: RunOutcome) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


class Chained(RunHooks):
    """Another run's hooks (replay, resume, redrive) with the dead letters written too."""

    def __init__(self, inner: RunHooks, letters: LetterHooks) -> None:
        self.inner, self.letters = inner, letters
        self.rebuilds = inner.rebuilds

    def source(self, pipe: int) -> Any:
        return self.inner.source(pipe)

    def recorder(self, pipe: int, step: int) -> Any:
        return self.inner.recorder(pipe, step)

    def defer_raise(self, pipe: int) -> bool:
        return self.inner.defer_raise(pipe)

    def dead_letter(self, letter: Any) -> None:
        if type(self.inner).dead_letter is not RunHooks.dead_letter:
            self.inner.dead_letter(letter)
        self.letters.dead_letter(letter)

    def finished(self, outcome: RunOutcome) -> None:
        try:
            self.inner.finished(outcome)
        finally:
            self.letters.finished(outcome)


def with_letters(pipes: Sequence[Any], hooks: Optional[RunHooks]) -> Optional[RunHooks]:
    """``hooks`` plus durable dead letters, when they are enabled (see :func:`enabled`)."""
    if not enabled():
        return hooks
    letters = LetterHooks(pipes)
    return letters if hooks is None else Chained(hooks, letters)


# ---- listing (rxbot deadletters SCRIPT) ---------------------------------------------------------------
def listing(script: Any = None) -> Iterator[str]:
    path = store_path(script)
    if not path.exists():
        yield f"no dead letters for {script or 'this script'} (looked in {path})"
        return
    store = LetterStore(path)
    try:
        rows = store.summary()
        if not rows:
            yield f"no open dead letters ({path})"
            return
        yield f"open dead letters in {path}:"
        for run_key, step, error_type, count, attempts in rows:
            yield f"  {count:6d}  {step}  {error_type}  (pipe {run_key}, attempts up to {attempts})"
        first = store.letters()[:5]
        yield "first ones (rxbot deadletters SCRIPT --show ID):"
        for letter in first:
            yield f"  #{letter.id} {letter.step}: {letter.error_type}: {letter.message[:100]}  item {letter.shown[:80]}"
    finally:
        store.close()


def show(letter_id: int, script: Any = None) -> str:
    store = LetterStore(store_path(script))
    try:
        letter = store.get(letter_id)
    finally:
        store.close()
    if letter is None:
        raise KeyError(f"no dead letter #{letter_id} in {store_path(script)}")
    lines = [f"dead letter #{letter.id} ({letter.status})"]
    for f in fields(letter):
        if f.name in ("item", "id", "status"):
            continue
        value = getattr(letter, f.name)
        if f.name == "at":
            value = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
        lines.append(f"  {f.name}: {value}")
    lines.append(f"  item: {letter.shown}" if letter.item is None else f"  item ({len(letter.item)} bytes stored)")
    return "\n".join(lines)


__all__ = ["LetterStore", "Letter", "LetterHooks", "Chained", "with_letters", "store_path", "listing", "show",
           "enabled"]
