"""One pipe's cache slot for one run: loads what a failed run saved, builds the pipe
with taps between its top-level steps, poisons a failing step, and saves what is left
to do when the run ends."""
from __future__ import annotations

import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import reactivex

from ..config import config
from ..flow import Route
from .classify import _blocked_prefixes, _infinite, _sync_route
from .codec import ReplayEncodeError
from .keying import pipe_key
from .layout import FORMAT, MANIFEST, _IS_NAME, _is_our_file
from .location import _rmdir_if_empty
from .ranges import _count, subtract
from .storage import (ReplayIntegrityError, Recorder, Replayer, Segment, _fsync_dir, _load_key, _verify,
                      atomic_write)
from .tap import ASYNC, INLINE, UNTRACKED, Tap, _RAISED

if TYPE_CHECKING:
    from .run import ReplaySession

log = logging.getLogger("rxbot")


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
        from ..engine.operators import PullPlan, iterate, pull_source, trigger

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
                inject = pull_source(ctx, PullPlan(rt, produce, list(bounds)))
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
        from ..engine.classify import runs_inline
        from ..engine.operators import AsyncPlan

        step = self.steps[k - 1]
        op, bounds, stage = builder.build_span(self.steps, k - 1, k - 1, bounds, self.path, terminal)
        if runs_inline(step):
            mode = INLINE if not (isinstance(step, Route) and step.kind != "filter") else UNTRACKED
        elif isinstance(step, Route):
            mode = INLINE if _sync_route(step) else UNTRACKED
        else:
            tracked = isinstance(stage, AsyncPlan) and stage.flush is None
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
