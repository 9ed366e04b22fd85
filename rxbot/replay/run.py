"""Replay mode for one run: the engine's entry points (``# replay:`` hooks)."""
from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any, Dict, Optional, Tuple

import reactivex

from ..config import config
from .codec import codec
from .location import replay_root, script_name
from .pipe_state import PipeState
from .storage import _load_key

log = logging.getLogger("rxbot")

_PATH_RE = re.compile(r"^(P\d+)\[(\d+)\]")


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
