"""Taps: the Rx operators between top-level steps that record a step's output and
learn which of those items the next step has fully handled."""
from __future__ import annotations

import asyncio
import inspect
from collections import deque
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence

import reactivex
from reactivex.disposable import CompositeDisposable

from ..config import config
from .codec import ReplayEncodeError
from .ranges import RangeSet
from .storage import Recorder, Replayer, Segment

if TYPE_CHECKING:
    from .pipe_state import PipeState

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
        from ..engine.operators import fast_on_next, trigger

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
                subs.append(trigger(self.state.ctx, 0).pipe(self.inject).subscribe(
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
        from ..engine.results import AGEN, AWAIT, MANY, ONE, ONE_AS_IS, SINGLE, kind_of

        every = config.yield_every
        while result is not None:
            kind = ONE if type(result) in SINGLE else kind_of(result)
            if kind == ONE:
                yield result
            elif kind == ONE_AS_IS:
                yield result.item
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
        from ..engine.results import AGEN, AWAIT, MANY, SINGLE, kind_of

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
                if inspect.isawaitable(result):
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
