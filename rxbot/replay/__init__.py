"""Replay mode (``config.replay_mode = True``): databot's development loop.

When top-level step N of a pipe fails under the ``raise`` policy, the steps before it run
to their end, the complete output of the nearest completed step K (usually N-1) is saved,
and the original error is raised. Fix step N and run the script again: steps 1..K are
skipped and every item step K produced is fed into step K+1, in the order it was
produced, streamed from disk under the usual flow control. The cache is keyed by steps
1..K only: editing step K+1 or a later one (the fix) replays, editing step 1..K (or adding
or removing a step before K+1) never replays stale data. See ``docs/replay.md``.

* :mod:`.session` — the :class:`~rxbot.engine.RunHooks` that records, saves and replays;
* :mod:`.keying` — what a step computes, as a hash;
* :mod:`.codec` — safe (JSON lines) and opt-in, signed (pickle) serialisation of items;
* :mod:`.store` — where caches live; atomic writes; no symbolic links; clearing.
"""
from __future__ import annotations

from .codec import ReplayDecodeError, ReplayEncodeError, ReplayedError, register_type, unregister_type
from .session import ReplaySession, session
from .store import ReplayPathError, atomic_write, clear_cache, default_root, replay_root

__all__ = [
    "clear_cache", "default_root", "replay_root", "register_type", "unregister_type",
    "ReplayEncodeError", "ReplayDecodeError", "ReplayedError", "ReplayPathError",
    "ReplaySession", "atomic_write", "session",
]
