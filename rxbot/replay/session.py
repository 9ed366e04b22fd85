"""Replay mode for one run: records each top-level step's output, saves the output of the
nearest completed step when a step fails, and feeds it back into the next step on the
next run. It joins the run only through :class:`rxbot.engine.RunHooks`."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import IO, Any, Dict, Generator, Iterator, List, Optional, Sequence, Tuple

import reactivex

from ..config import config
from ..engine import RunHooks, RunOutcome, StepFailure
from ..engine.hooks import Operator
from ..tree.flow import Pipe, TreeStep
from ..tree.node import Timer
from ..tree.step import Step
from .codec import CODECS, Codec, ReplayDecodeError, ReplayEncodeError, codec
from .keying import step_hash
from .store import (MANIFEST, CacheLock, atomic_write, fsync_dir, is_ours, load_key, make_dirs, open_new,
                    open_read, refuse_links, remove_ours, replay_root, rmdir_empty, script_name)

log = logging.getLogger("rxbot")

#: 3: msgpack records (2 was JSON lines, whose caches are set aside as unreadable)
FORMAT = 3


def _digest(serializer: str, key: Optional[bytes]) -> "hmac.HMAC | hashlib._Hash":
    """pickle files are signed (HMAC-SHA256), msgpack files checksummed (SHA-256)."""
    if serializer != "pickle":
        return hashlib.sha256()
    if key is None:  # the session loads the key whenever its codec is pickle
        raise ValueError("a pickle replay cache is signed, but no signing key was loaded")
    return hmac.new(key, digestmod="sha256")


class Recorder:
    """After top-level step ``step``: passes every item on and streams it to a ``.part``
    file (in 64 KiB blocks, so memory stays flat). ``complete`` once the step finished
    its input. A recording that fails (an item it cannot encode — whatever the encoder
    raised —, a full disk) is dropped with one warning, and the items it could not record
    are counted (``unrecorded``); the run itself goes on unchanged."""

    def __init__(self, slot: "PipeSlot", step: int, write: bool) -> None:
        self.slot = slot
        self.step = step
        session = slot.session
        self.codec = session.codec
        #: None for the last step, whose output is never needed again (only its completion)
        self.path: Optional[Path] = \
            slot.folder / f"{session.run_id}.s{step}.{self.codec.suffix}.part" if write else None
        self.digest = _digest(self.codec.name, session.key)
        self.fh: Optional[IO[bytes]] = None
        self.buf: List[bytes] = []
        self.count = 0
        self.complete = False
        self.broken = not write
        #: items of this step not recorded once its recording failed
        self.unrecorded = 0
        self.failure: Optional[str] = None

    def operator(self, source: reactivex.Observable[Any]) -> reactivex.Observable[Any]:
        def subscribe(observer: Any, scheduler: Any = None) -> Any:
            forward = observer.on_next
            dumps, append = self.codec.encoder(), self.buf.append
            size = 0

            def on_next(x: Any) -> None:
                nonlocal size
                if not self.broken:
                    try:
                        record = dumps(x)
                        append(record)
                        size += len(record)
                        if size >= 1 << 16:
                            size = 0
                            self._flush()
                    except Exception as exc:  # replay mode never fails a run that works without it
                        self.fail(exc)
                        self.unrecorded += 1
                elif self.failure is not None:
                    self.unrecorded += 1
                forward(x)

            def on_completed() -> None:
                self.complete = True
                observer.on_completed()

            return source.subscribe(on_next, observer.on_error, on_completed, scheduler=scheduler)

        return reactivex.create(subscribe)

    def fail(self, exc: Exception) -> None:
        self.discard()
        self.failure = str(exc) if isinstance(exc, ReplayEncodeError) else f"{type(exc).__name__}: {exc}"
        log.warning("rxbot replay: cannot record the output of step %d (%s) of pipe P%d: %s. The run goes "
                    "on, but a failure after this step cannot be resumed from it",
                    self.step, self.slot.label(self.step), self.slot.index, self.failure)

    def _part(self) -> Path:
        """The ``.part`` file; only a writing recorder gets this far (one that does not
        write starts broken, so it never flushes, seals or discards)."""
        if self.path is None:
            raise RuntimeError(f"the recorder after step {self.step} writes no file")
        return self.path

    def _flush(self) -> IO[bytes]:
        """Write the buffered records (opening the file on first use); the open file."""
        fh = self.fh
        if fh is None:
            make_dirs(self.slot.session.root, self.slot.folder)
            fh = self.fh = os.fdopen(open_new(self._part()), "wb")
        block = b"".join(self.buf)
        self.count += len(self.buf)
        self.buf.clear()
        self.digest.update(block)
        fh.write(block)
        return fh

    def seal(self) -> Dict[str, Any]:
        """Make the recording durable under its final name; its manifest entry."""
        fh = self._flush()
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        part = self._part()
        final = part.with_suffix("")  # drop .part
        os.replace(part, final)
        fsync_dir(final.parent)
        self.broken = True  # nothing more to write or discard
        return {"file": final.name, "serializer": self.codec.name, "count": self.count,
                "digest": self.digest.hexdigest()}

    def discard(self) -> None:
        if not self.broken:
            self.broken = True
            self.buf.clear()
            if self.fh is not None:
                self.fh.close()
                self._part().unlink(missing_ok=True)


def _endless(step: TreeStep) -> bool:
    node = step.fn if isinstance(step, Step) else step
    return isinstance(node, Timer) and node.max_time is None and node.until is None


def _read(fh: IO[bytes], cdc: Codec) -> Generator[Any, None, None]:
    """The saved items, decoded one at a time as the run pulls them."""
    with fh:
        yield from cdc.items(fh)


class Unreadable(Exception):
    """A cache that cannot be used as it is: it is set aside (see ``PipeSlot.set_aside``)."""

    def __init__(self, why: str, file: Path) -> None:
        super().__init__(why)
        self.file = file


class PipeSlot:
    """One pipe's cache (``<root>/<script>/P<i>/``): what the last failed run saved, and
    this run's recorders."""

    def __init__(self, session: "ReplaySession", pipe: Pipe, index: int) -> None:
        self.session = session
        self.index = index
        self.steps = list(pipe.steps)
        self.folder = session.base / f"P{index}"
        refuse_links(session.root, self.folder / MANIFEST)
        self.hashes = [step_hash(s) for s in self.steps]
        self.replayable = len(self.steps) > 1 and not _endless(self.steps[0])
        self.recorders: Dict[int, Recorder] = {}
        self.skip = 0
        #: the saved items, read lazily (closed when the run is over); empty when the
        #: whole pipe is skipped
        self.items: Optional[Iterator[Any]] = None
        self.saved: Dict[str, Any] = {}
        if not self.replayable and len(self.steps) > 1:
            log.warning("rxbot replay: pipe P%d starts with a Timer without max_time or until, which never "
                        "ends, so its steps' output can never be complete: it is not replayed", index)
        elif self.replayable:
            self.load()

    def label(self, step: int) -> str:
        return self.steps[step - 1].label()

    # -- the previous run's cache ------------------------------------------------------------------
    def load(self) -> None:
        try:
            self._load()
        except Unreadable as exc:
            self.set_aside(exc)

    def _load(self) -> None:
        manifest = self.folder / MANIFEST
        try:
            with open_read(manifest) as fh:
                m = json.loads(fh.read())
            k, old, data = int(m["after"]), m["steps"], m["data"]
            if m["format"] != FORMAT:
                raise ValueError(f"it was written by another version of rxbot (format {m['format']!r}, "
                                 f"this one reads {FORMAT})")
            if m["pipe"] != self.index or k < 1 or len(old) < k:
                raise ValueError("inconsistent manifest")
            if data is not None and (not isinstance(data["file"], str) or not is_ours(data["file"])
                                     or data["file"].endswith(".part") or data["serializer"] not in CODECS
                                     or type(data["count"]) is not int or not isinstance(data["digest"], str)):
                raise ValueError("inconsistent manifest")
            if data is None and k != len(old):
                raise ValueError("inconsistent manifest")
            old_hashes = [s["hash"] for s in old]
            old_labels = [s["label"] for s in old]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise Unreadable(str(exc), manifest) from None
        saved = f"the failed run of {m.get('saved', '?')}"
        m_steps = len(self.steps)
        if k > m_steps or (data is not None and k == m_steps):
            self._fresh(f"it now has {m_steps} steps, so the output saved after step {k} in {saved} "
                        f"has no step to go into")
            return
        for j in range(k):
            if old_hashes[j] != self.hashes[j]:
                now, was = self.label(j + 1), old_labels[j]
                what = f"step {j + 1} ({now}) was edited" if now == was else f"step {j + 1} is now {now} (was {was})"
                stale = (f"the {data.get('count', '?')} items it saved after step {k} would be stale"
                         if data is not None else "what it did then would not be what it does now")
                self._fresh(f"{what} since {saved}, so {stale}")
                return
        if data is None:  # it ran to its end in the failed run: skipped, as databot did
            if len(old) != m_steps:
                self._fresh(f"it now has {m_steps} steps; it had {len(old)} in {saved}")
                return
            self.skip, self.saved, self.items = k, m, iter(())
            log.warning("rxbot replay: pipe P%d ran to its end in %s and its steps are unchanged, so it is "
                        "skipped: its steps are not run and produce nothing again", self.index, saved)
            return
        if data.get("serializer") == "pickle" and self.session.codec.name != "pickle":
            self._fresh("its cache was saved with pickle; set config.replay_serializer = 'pickle' to load it")
            return
        cdc = codec(data["serializer"])
        fh = self._verified(data, cdc)
        self.skip, self.saved = k, m
        self.items = _read(fh, cdc)
        changed = [f"{j + 1} ({self.label(j + 1)})" for j in range(k, m_steps)
                   if j >= len(old_hashes) or old_hashes[j] != self.hashes[j]]
        log.warning("rxbot replay: pipe P%d: steps 1-%d are unchanged since %s, so they are skipped and the "
                    "%d items step %d (%s) produced then are fed into step %d (%s)%s", self.index, k, saved,
                    data["count"], k, self.label(k), k + 1, self.label(k + 1),
                    f"; changed since: step {', '.join(changed)}" if changed else "")

    def _verified(self, data: Dict[str, Any], cdc: Codec) -> IO[bytes]:
        """The data file, open, after checking all of it against its digest (so the file
        replayed is the file checked, and no pickle is loaded before its HMAC matches),
        then decoding all of it once (so a record that cannot be read is found before the
        run starts, never in the middle of it)."""
        path = self.folder / str(data["file"])
        try:
            refuse_links(self.session.root, path)
            fh = open_read(path)
        except FileNotFoundError:
            raise Unreadable(f"its data file {path.name} is missing", self.folder / MANIFEST) from None
        try:
            digest = _digest(data["serializer"], self.session.key)
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
            if not hmac.compare_digest(digest.hexdigest(), str(data["digest"])):
                what = "signature" if data["serializer"] == "pickle" else "checksum"
                raise Unreadable(f"it does not match its {what}", path)
            fh.seek(0)
            count = 0
            try:
                for _ in cdc.items(fh):
                    count += 1
            except ReplayDecodeError as exc:
                raise Unreadable(str(exc), path) from None
            except Exception as exc:  # a signed pickle whose classes changed, ...
                raise Unreadable(f"{type(exc).__name__}: {exc}", path) from None
            if count != data["count"]:
                raise Unreadable(f"it holds {count} items, its manifest says {data['count']}", path)
            fh.seek(0)
            return fh
        except BaseException:
            fh.close()
            raise

    def set_aside(self, exc: Unreadable) -> None:
        """An unreadable cache is moved out of the way (renamed, not deleted: the folder
        ``P<i>.unreadable-<run id>`` beside it), reported once, and the pipe runs from its
        first step; later runs do not see it (``rxbot replay --clear`` removes it)."""
        aside = self.folder.with_name(f"{self.folder.name}.unreadable-{self.session.run_id}")
        try:
            os.rename(self.folder, aside)
            where = f"set aside as {aside}"
        except OSError as err:
            where = f"could not be set aside ({err}); it is replaced by the next failed run's"
        log.warning("rxbot replay: pipe P%d runs from its first step: its cache %s is unreadable (%s); %s",
                    self.index, exc.file, exc, where)

    def _fresh(self, why: str) -> None:
        log.warning("rxbot replay: pipe P%d runs from its first step: %s", self.index, why)

    # -- this run ----------------------------------------------------------------------------------
    def recorder(self, step: int) -> Optional[Operator]:
        if not self.replayable:
            return None
        rec = self.recorders[step] = Recorder(self, step, write=step < len(self.steps))
        return rec.operator

    def finish(self, outcome: RunOutcome) -> None:
        close = getattr(self.items, "close", None)
        if close is not None:
            close()
        if outcome.error is None:
            self._clear()  # the run succeeded: nothing to resume
            return
        failed = [f for f in outcome.failures if f.pipe == self.index]
        if self.skip == len(self.steps):
            return  # skipped as completed: its manifest stays for the next run
        last = self.recorders.get(len(self.steps))
        if not failed and last is not None and last.complete:
            # this pipe ran to its end while the run failed: the next run skips it
            self._commit(len(self.steps), None, outcome.error)
            log.warning("rxbot replay: pipe P%d ran to its end; the next run skips it (its steps are not run "
                        "again) while its steps are unchanged", self.index)
            return
        first = min((f.step for f in failed), default=len(self.steps))
        k = self.skip
        while k + 1 < first and k + 1 in self.recorders and self.recorders[k + 1].complete \
                and self.recorders[k + 1].path is not None and not self.recorders[k + 1].broken:
            k += 1
        if k == 0:
            self._clear()
            log.warning("rxbot replay: pipe P%d: no step finished before the run stopped; nothing to replay%s",
                        self.index, self._unrecorded())
            return
        data = self.saved["data"] if k == self.skip else self.recorders[k].seal()
        try:
            self._commit(k, data, outcome.error)
        except BaseException:
            if k != self.skip:  # the previous manifest and its data file stay as they were
                (self.folder / data["file"]).unlink(missing_ok=True)
            raise
        log.warning("rxbot replay: pipe P%d: %s. Saved the %d items step %d (%s) produced in %s; fix the "
                    "failing step and run again: steps 1-%d will be skipped%s", self.index,
                    self._why(failed[0] if failed else None, outcome.error), data["count"], k, self.label(k),
                    self.folder, k, self._unrecorded())

    def _unrecorded(self) -> str:
        """What could not be recorded, when that is why an earlier step's output is saved."""
        notes = [f"step {n} ({self.label(n)}) was not recorded: {rec.unrecorded} of its items could not be "
                 f"stored (the first: {rec.failure})"
                 for n, rec in sorted(self.recorders.items()) if rec.failure is not None]
        return "; " + "; ".join(notes) if notes else ""

    def _why(self, failure: Optional[StepFailure], error: Optional[BaseException]) -> str:
        if failure is None:
            return f"the run stopped ({type(error).__name__})"
        n = failure.step
        text = f"step {n} ({self.label(n)}) failed ({type(failure.error).__name__})"
        if n > self.skip + 1:
            text += f"; steps {self.skip + 1}-{n - 1} ran to their end"
        if failure.refused:
            text += f"; the {failure.refused} item(s) that reached step {n} after it failed were not given to it"
        return text

    def discard(self) -> None:
        for rec in self.recorders.values():
            rec.discard()

    def _commit(self, k: int, data: Optional[Dict[str, Any]], error: Optional[BaseException]) -> None:
        manifest = {"format": FORMAT, "pipe": self.index, "after": k, "saved": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "error": type(error).__name__ if error is not None else None,
                    "steps": [{"label": s.label(), "hash": h} for s, h in zip(self.steps, self.hashes)],
                    "data": data}
        make_dirs(self.session.root, self.folder)
        atomic_write(self.folder / MANIFEST, json.dumps(manifest, indent=1).encode())
        self.discard()
        remove_ours(self.folder, keep={MANIFEST, data["file"]} if data is not None else {MANIFEST})

    def _clear(self) -> None:
        self.discard()
        if self.folder.is_dir():
            remove_ours(self.folder)
        rmdir_empty(self.folder)


class ReplaySession(RunHooks):
    """Replay mode for one run of ``pipes`` (see :mod:`rxbot.replay`).

    One run of a script at a time uses its caches: the session holds the script's
    :class:`~rxbot.replay.store.CacheLock` from before it loads anything until its end. A
    run that finds it held (another run of the same script, in this or another process)
    says so once and runs as without replay mode: it neither loads, records, saves nor
    deletes anything, so neither run touches the other's files."""

    def __init__(self, pipes: Sequence[Pipe]) -> None:
        self.codec = codec(config.replay_serializer)  # a bad setting fails before anything runs
        self.root = replay_root()
        self.base = self.root / script_name()
        refuse_links(self.root, self.base)
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
        self.lock: Optional[CacheLock] = CacheLock(self.root, self.base)
        holder = self.lock.acquire()
        self.slots: List[PipeSlot] = []
        self.key: Optional[bytes] = None
        if holder is not None:
            self.lock = None
            log.warning("rxbot replay: another run of this script (%s) is using its replay cache in %s; this "
                        "run neither replays nor records anything (it runs as without replay mode)",
                        holder, self.base)
            return
        try:
            self.key = load_key(self.root, self.base) if self.codec.name == "pickle" else None
            self.slots = [PipeSlot(self, pipe, i) for i, pipe in enumerate(pipes, 1)]
        except BaseException:
            self._release()
            raise

    def source(self, pipe: int) -> Optional[Tuple[int, Iterator[Any]]]:
        if not self.slots:
            return None
        slot = self.slots[pipe - 1]
        return (slot.skip, slot.items) if slot.items is not None else None

    def recorder(self, pipe: int, step: int) -> Optional[Operator]:
        return self.slots[pipe - 1].recorder(step) if self.slots else None

    def defer_raise(self, pipe: int) -> bool:
        return bool(self.slots) and self.slots[pipe - 1].replayable

    def finished(self, outcome: RunOutcome) -> None:
        try:
            for slot in self.slots:
                try:
                    slot.finish(outcome)
                except Exception:
                    slot.discard()
                    log.exception("rxbot replay: saving the cache of pipe P%d in %s failed; the run's own "
                                  "outcome stands", slot.index, slot.folder)
        finally:
            self._release()

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
            root = self.root
            rmdir_empty(self.base, root, *([root.parent] if root.parent.name == ".rxbot" else []))


def session(pipes: Sequence[Pipe]) -> Optional[ReplaySession]:
    """A :class:`ReplaySession` for ``pipes`` when ``config.replay_mode`` is on, else None."""
    return ReplaySession(pipes) if config.replay_mode else None


__all__ = ["ReplaySession", "session", "FORMAT"]
