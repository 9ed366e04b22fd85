"""A build-time check shared by the process and cluster boosts (its own module so that
``boost`` and ``dask_boost`` do not import each other)."""
from __future__ import annotations

import pickle
from typing import Any, Callable


def check_picklable(fn: Any, kind: str, label: str, dumps: Callable[[Any], bytes] = pickle.dumps) -> None:
    """Fail at build time, naming the step, rather than on the first item inside a worker."""
    try:
        dumps(fn)
    except Exception as exc:
        hint = ("defined at module top level, not a lambda or closure" if kind == "process"
                else "holding no locks, open files or connections")
        raise TypeError(
            f"step {label!r}: boost={kind!r} needs a picklable function ({hint}); "
            f"pickling {label!r} failed: {type(exc).__name__}: {exc}"
        ) from None


__all__ = ["check_picklable"]
