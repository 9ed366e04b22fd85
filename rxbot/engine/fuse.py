"""Fuse a run of consecutive sync steps into straight-line Python.

Calling three small functions per item through three Rx operators costs several times
a plain loop. Instead each run of sync steps becomes one generated function per
position (``c0`` handles steps 0..n-1, ``c1`` steps 1..n-1, ...), so the common path
is exactly the user's calls plus a ``None`` check and one type lookup per step. The
generated text depends only on the *shape* (which positions are constants), so it is
compiled once per shape per process and reused by every pipe and every run.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Sequence, Tuple

FN, CONST = "f", "c"


@lru_cache(maxsize=None)
def _factory(shape: Tuple[str, ...], terminal: bool) -> Callable[..., tuple]:
    n = len(shape)
    out = ["def make(fns, consts, emit, spread, fail, SINGLE):"]
    for j, kind in enumerate(shape):
        out.append(f"    f{j} = fns[{j}]" if kind == FN else f"    v{j} = consts[{j}]")
    for k in range(n):
        out.append(f"    def c{k}(x):")
        out.append("        try:")
        for j in range(k, n):
            out.append(f"            i = {j}; a = x")
            if shape[j] == FN:
                out.append(f"            x = f{j}(a)")
                out.append("            if x is None: return")
            else:
                out.append(f"            x = v{j}")
            out.append(f"            if type(x) not in SINGLE: return spread(x, {j + 1}, i, a)")
        out.append("        except Exception as e:")
        out.append("            return fail(e, i, a)")
        # at the end of a pipe nothing listens: skip the call rather than make a no-op one
        out.append("        return" if terminal else "        emit(x)")
    out.append(f"    return ({''.join(f'c{k}, ' for k in range(n))}emit)")
    namespace: dict = {}
    exec(compile("\n".join(out), f"<rxbot fused {''.join(shape)}{'.' if terminal else ''}>", "exec"), namespace)
    return namespace["make"]


def fuse(shape: Sequence[str], fns: Sequence[Any], consts: Sequence[Any], emit: Callable,
         spread: Callable, fail: Callable, single: set, terminal: bool = False) -> tuple:
    """Return the continuations ``(c0, ..., c_{n-1}, emit)`` for one segment instance.

    ``terminal``: the segment ends a pipe, so its results go nowhere and are not emitted.
    """
    conts = _factory(tuple(shape), terminal)(fns, consts, emit, spread, fail, single)
    for c in conts[:-1]:
        c.__rxbot_fused__ = True
    return conts


__all__ = ["fuse", "FN", "CONST"]
