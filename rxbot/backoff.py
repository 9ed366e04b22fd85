"""The one backoff formula of rxbot: how long to wait before a retry.

Steps (``retries=``), HttpLoader and Insert retry with the same shape of delay —
exponential in the attempt, capped, with jitter so that many items failing together do
not retry in lockstep — so it is written once, here, below every layer that retries.
"""
from __future__ import annotations

import math
import random


def backoff(attempt: int, base: float, cap: float = math.inf, jitter: float = 0.0) -> float:
    """Seconds to wait before the ``attempt``-th retry (1-based): ``base * 2**(attempt-1)``
    capped at ``cap``, times ``1 + jitter * U`` with ``U`` uniform in [0, 1).

    ``jitter=0.5`` spreads a delay over [1, 1.5) of itself (the engine's steps);
    ``jitter=-0.5`` is "equal jitter", half fixed and half random, over (0.5, 1] of it
    (HttpLoader's); ``jitter=0`` is plain exponential backoff (Insert's)."""
    if attempt < 1:
        raise ValueError(f"backoff: argument 'attempt' must be >= 1; got {attempt!r}")
    if base < 0 or cap < 0:
        raise ValueError(f"backoff: arguments 'base' and 'cap' must be >= 0; got {base!r}, {cap!r}")
    if not -1.0 <= jitter <= 1.0:
        raise ValueError(f"backoff: argument 'jitter' must be between -1 and 1; got {jitter!r}")
    delay = min(cap, base * 2.0 ** (attempt - 1))
    return delay * (1.0 + jitter * random.random()) if jitter else delay


__all__ = ["backoff"]
