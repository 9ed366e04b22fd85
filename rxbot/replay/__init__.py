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
All of it lives in this package; the engine only calls :meth:`ReplaySession.plan`,
:meth:`ReplaySession.poison` and :meth:`ReplaySession.finish` (hooks marked ``# replay:``).

Modules, each with one job (none imports a later one, except lazily or for typing):

* :mod:`.layout` — the names of the files in a cache;
* :mod:`.location` — where caches live, :func:`clear_cache`;
* :mod:`.keying` — the cache key, a hash of the pipe's structure;
* :mod:`.codec` — safe (JSON) and opt-in (pickle) serialisation of items;
* :mod:`.ranges` — which recorded items are finished (:class:`~.ranges.RangeSet`);
* :mod:`.storage` — data files: atomic writes, the HMAC key, recording, verifying, replaying;
* :mod:`.tap` — the operators between top-level steps and the wrappers tracking them;
* :mod:`.classify` — what replay needs to know about a step (sync, retrying, infinite);
* :mod:`.pipe_state` — one pipe's cache slot: load, plan, poison, save;
* :mod:`.run` — :class:`ReplaySession` and :func:`session`, the engine's entry points.
"""
from __future__ import annotations

from .codec import ReplayDecodeError, ReplayEncodeError, ReplayedError, register_type, unregister_type
from .keying import pipe_key
from .location import clear_cache, default_root, replay_root
from .run import ReplaySession, session
from .storage import ReplayIntegrityError, atomic_write

__all__ = [
    "clear_cache", "default_root", "replay_root", "register_type", "unregister_type",
    "ReplayEncodeError", "ReplayDecodeError", "ReplayIntegrityError", "ReplayedError",
    "ReplaySession", "pipe_key", "atomic_write", "session",
]
