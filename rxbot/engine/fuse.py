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


def _body(shape: Tuple[str, ...], k: int, terminal: bool, counting: bool, indent: str, leave: str) -> list:
    """Steps ``k``.. for one item ``x``. ``leave`` ends the item early: ``return`` in a
    per-item function, ``continue`` in the chunk loop."""
    out = []
    done = "return" if leave == "return" else "continue"
    for j in range(k, len(shape)):
        if counting:
            out.append(f"{indent}ci[{j}] += 1")
        if shape[j] == FN:
            # one try per call: free in 3.11 when nothing raises, and the handler
            # knows the step and its input without per-item bookkeeping
            out.append(f"{indent}try:")
            out.append(f"{indent}    y = f{j}(x)")
            out.append(f"{indent}except Exception as e:")
            out.append(f"{indent}    fail(e, {j}, x)")
            out.append(f"{indent}    {done}")
            out.append(f"{indent}if y is None:")
            if counting:
                out.append(f"{indent}    cn[{j}] += 1")
            out.append(f"{indent}    {done}")
        else:
            out.append(f"{indent}y = v{j}")
        out.append(f"{indent}if type(y) not in SINGLE:")
        out.append(f"{indent}    spread(y, {j + 1}, {j}, x)")
        out.append(f"{indent}    {done}")
        if counting:
            out.append(f"{indent}co[{j}] += 1")
        out.append(f"{indent}x = y")
    # at the end of a pipe nothing listens: skip the call rather than make a no-op one.
    # Otherwise, while the segment's ordered lane is busy (held[0]), results queue
    # behind it so that outputs keep their input order.
    if not terminal:
        out.append(f"{indent}if held[0]:")
        out.append(f"{indent}    hold(x)")
        out.append(f"{indent}else:")
        out.append(f"{indent}    emit(x)")
    return out


@lru_cache(maxsize=None)
def _factory(shape: Tuple[str, ...], terminal: bool, counting: bool) -> Callable[..., tuple]:
    n = len(shape)
    out = ["def make(fns, consts, emit, spread, fail, SINGLE, ci, co, cn, held, hold):"]
    for j, kind in enumerate(shape):
        out.append(f"    f{j} = fns[{j}]" if kind == FN else f"    v{j} = consts[{j}]")
    for k in range(n):
        out.append(f"    def c{k}(x):")
        out += _body(shape, k, terminal, counting, "        ", "return")
    # the chunk entry: a source hands a slice of its sequence; stops (returning how many
    # it took) as soon as the downstream is full, so flow control holds per item
    out.append("    def many(xs, gate):")
    out.append("        i = 0")
    out.append("        for x in xs:")
    out.append("            if gate.blocked: return i")
    out.append("            i += 1")
    out += _body(shape, 0, terminal, counting, "            ", "continue")
    out.append("        return i")
    out.append("    c0.__rxbot_many__ = many")
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
