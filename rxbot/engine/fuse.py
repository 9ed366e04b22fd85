"""Fuse a run of consecutive sync steps into straight-line Python.

Calling three small functions per item through three Rx operators costs several times
a plain loop. Instead each run of sync steps becomes one generated function per
position (``c0`` handles steps 0..n-1, ``c1`` steps 1..n-1, ...), so the common path
is exactly the user's calls plus a ``None`` check and one type lookup per step. Results
that are not a known single type (lists, generators, coroutines) leave the fast path
through ``spread(result, next_position, step, input)``. The
generated text depends only on the *shape* (which positions are constants), so it is
compiled once per shape per process and reused by every pipe and every run.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Sequence, Tuple

FN, CONST = "f", "c"


@lru_cache(maxsize=None)
def _factory(shape: Tuple[str, ...], terminal: bool, counting: bool) -> Callable[..., tuple]:
    n = len(shape)
    out = ["def make(fns, consts, emit, spread, fail, SINGLE, ci, co, cn, held, hold):"]
    for j, kind in enumerate(shape):
        out.append(f"    f{j} = fns[{j}]" if kind == FN else f"    v{j} = consts[{j}]")
    for k in range(n):
        out.append(f"    def c{k}(x):")
        for j in range(k, n):
            if counting:
                out.append(f"        ci[{j}] += 1")
            if shape[j] == FN:
                # one try per call: free in 3.11 when nothing raises, and the handler
                # knows the step and its input without per-item bookkeeping
                out.append("        try:")
                out.append(f"            y = f{j}(x)")
                out.append("        except Exception as e:")
                out.append(f"            return fail(e, {j}, x)")
                out.append(f"        if y is None: {f'cn[{j}] += 1; ' if counting else ''}return")
            else:
                out.append(f"        y = v{j}")
            out.append(f"        if type(y) not in SINGLE: return spread(y, {j + 1}, {j}, x)")
            if counting:
                out.append(f"        co[{j}] += 1")
            out.append("        x = y")
        # at the end of a pipe nothing listens: skip the call rather than make a no-op one.
        # Otherwise, while the segment's ordered lane is busy (held[0]), results queue
        # behind it so that outputs keep their input order.
        if terminal:
            out.append("        return")
        else:
            out.append("        if held[0]: return hold(x)")
            out.append("        emit(x)")
    if terminal:
        out.append("    out = emit")
    else:
        out.append("    def out(x):")
        out.append("        if held[0]: return hold(x)")
        out.append("        emit(x)")
    out.append(f"    return ({''.join(f'c{k}, ' for k in range(n))}out)")
    namespace: dict = {}
    tag = f"{''.join(shape)}{'.' if terminal else ''}{'#' if counting else ''}"
    exec(compile("\n".join(out), f"<rxbot fused {tag}>", "exec"), namespace)
    return namespace["make"]


def fuse(shape: Sequence[str], fns: Sequence[Any], consts: Sequence[Any], emit: Callable,
         spread: Callable, fail: Callable, single: set, terminal: bool = False,
         counters: Tuple[list, list, list] | None = None,
         held: list | None = None, hold: Callable | None = None) -> tuple:
    """Return the continuations ``(c0, ..., c_{n-1}, out)`` for one segment instance;
    ``out`` delivers a finished result downstream.

    ``terminal``: the segment ends a pipe, so its results go nowhere and are not emitted.
    ``counters``: lists (in, out, returned-None) per step to count into; counting costs
    about a third of the per-item time, so it is compiled in only when asked for.
    ``held``/``hold``: while ``held[0]`` is true, results go to ``hold(x)`` instead of
    downstream (see the fused segment's ordered lane).
    """
    ci, co, cn = counters if counters is not None else (None, None, None)
    conts = _factory(tuple(shape), terminal, counters is not None)(
        fns, consts, emit, spread, fail, single, ci, co, cn, held or [False], hold)
    for c in conts[:-1]:
        c.__rxbot_fused__ = True
    return conts


__all__ = ["fuse", "FN", "CONST"]
