"""inline routes: a route's branches evaluated per item as plain function calls
(``item -> result``), for a BlockedJoin and the routes nested in it: inside the fused
segment when every step is sync, and as the correlating function of the BlockedJoin's
bounded map when some are ``async def`` (their coroutines awaited together). Routes
outside a BlockedJoin are generated code instead (:mod:`rxbot.engine.fuse`).

The route function applies the route's rules and returns what the route sends on, in
the form the return-value rules expect: the item itself (``OneItem`` when it is a list
or another iterable), a list of outputs, a tuple (BlockedJoin), or None. Each branch is
run by :func:`run_branch`, which applies every step's return-value rules and exception
policy exactly like the operator graph does, breadth first — the output order of a
plain nested loop. A step that returns an awaitable or an async generator at run time
turns the rest of that item's evaluation into a coroutine (which the segment awaits in
its slots), so nothing is ever blocked or lost.
"""
from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import Any, Callable, List, Sequence, Tuple

from ...tree.node import OneItem
from ..policy import PIPEIN, RAISE, StepRuntime
from ..results import AGEN, AWAIT, MANY, ONE, ONE_AS_IS, SINGLE, blocked_tuple, kind_of

#: one compiled step of a branch: the sync callable and its runtime
Entry = Tuple[Callable[[Any], Any], StepRuntime]


def _as_is(x: Any) -> Any:
    return x if type(x) in SINGLE else OneItem(x)


def _failed_match(rt: StepRuntime, exc: Exception, item: Any) -> Any:
    """A route's result for an item whose match raised: what the policy pipes in, else
    None (dropped; under raise the error propagates)."""
    out: list = []
    _failed(rt, exc, item, out)
    return out or None


def _failed(rt: StepRuntime, exc: Exception, item: Any, out: list) -> None:
    action, value = rt.final(exc, item)
    if action == RAISE:
        raise value
    if action == PIPEIN:
        out.extend(value)  # the original exceptions, one per rejected item
        rt.stats.out += len(value)  # sent on, as every step counts what it pipes in


def _take(y: Any, rt: StepRuntime, item: Any, out: list, counting: bool) -> Any:
    """Apply the return-value rules to ``y`` (step ``rt``'s result for ``item``) into
    ``out``; returns ``y`` itself when it must be awaited, else None."""
    if y is None:
        if counting:
            rt.stats.filtered += 1
        return None
    kind = ONE if type(y) in SINGLE else kind_of(y)
    if kind == ONE or kind == ONE_AS_IS:
        out.append(y if kind == ONE else y.item)
        if counting:
            rt.stats.out += 1
        return None
    if kind == MANY:
        before = len(out)
        try:
            out.extend(y)
        except Exception as exc:  # a generator failing part-way: what it gave stays
            given = len(out) - before
            if counting:  # the input itself is settled by the failure
                rt.stats.out += given
                rt.stats.fanout += given
            _failed(rt, exc, item, out)
            return None
        if counting:
            rt.stats.out += len(out) - before
            rt.stats.fanout += len(out) - before - 1
        return None
    return y  # AWAIT / AGEN


def _call(fn: Callable[[Any], Any], rt: StepRuntime, v: Any, out: list, counting: bool) -> Any:
    """One step on one item, its outputs into ``out``; returns a result still to be
    awaited (an awaitable or async generator), else None."""
    if counting:
        rt.stats.inp += 1
    try:
        y = fn(v)
    except Exception as exc:
        _failed(rt, exc, v, out)
        return None
    return _take(y, rt, v, out, counting)


def run_branch(entries: Sequence[Entry], x: Any, counting: bool) -> Any:
    """Every output of ``entries`` for input ``x``: a list, or a coroutine giving it
    (the general path; uncounted branches run generated code, see :func:`branch_runner`)."""
    items = [x]
    for k, (fn, rt) in enumerate(entries):
        out: list = []
        for i, v in enumerate(items):
            pending = _call(fn, rt, v, out, counting)
            if pending is not None:
                return _finish(entries, k, pending, v, out, items[i + 1:], counting)
        items = out
    return items


def _continue(entries: Sequence[Entry], k: int, out: list, counting: bool) -> Any:
    """Run ``entries[k + 1:]`` over ``out`` (step ``k``'s outputs so far)."""
    rest = entries[k + 1:]
    if not rest:
        return out
    items: list = []
    for i, v in enumerate(out):
        r = run_branch(rest, v, counting)
        if type(r) is not list:  # rare: an awaitable result further on
            return _continue_async(rest, items, r, out[i + 1:], counting)
        items += r
    return items


async def _continue_async(rest: Sequence[Entry], items: list, pending: Any, remaining: list,
                          counting: bool) -> list:
    """The rest of :func:`_continue` once an output's branch became ``pending``: await
    it, then run the outputs after it (each output runs exactly once)."""
    items += await pending
    for v in remaining:
        r = run_branch(rest, v, counting)
        items += r if type(r) is list else await r
    return items


@lru_cache(maxsize=None)
def _straight(n: int) -> Callable[..., Callable[[Any], Any]]:
    """Straight-line code for an uncounted branch of ``n`` steps, compiled once per
    length: each step's call, a None check and one type lookup; anything that is not a
    single value leaves for the general path (``slow``) at that step."""
    lines = ["def make(fns, SINGLE, slow, failed):"]
    lines += [f"    f{j} = fns[{j}]" for j in range(n)]
    lines.append("    def run(x):")
    for j in range(n):
        lines += [
            "        try:",
            f"            y = f{j}(x)",
            "        except Exception as e:",
            f"            return failed({j}, e, x)",
            "        if y is None: return []",
            f"        if type(y) not in SINGLE: return slow({j}, y, x)",
            "        x = y",
        ]
    lines += ["        return [x]", "    return run"]
    namespace: dict = {}
    exec(compile("\n".join(lines), f"<rxbot branch {n}>", "exec"), namespace)
    return namespace["make"]


def continuations(entries: Sequence[Entry]) -> Tuple[Callable[[int, Any, Any], Any], Callable[[int, Exception, Any], Any]]:
    """The general path of an uncounted branch once its straight-line code left it at
    step ``k``: ``slow(k, result, input)`` for a result that is not one value,
    ``failed(k, exc, input)`` for a step that raised. Each returns the branch's outputs
    (a list) or a coroutine giving them; ``failed`` raises under the raise policy."""

    def slow(k: int, y: Any, v: Any) -> Any:
        out: list = []
        pending = _take(y, entries[k][1], v, out, False)
        if pending is not None:
            return _finish(entries, k, pending, v, out, [], False)
        return _continue(entries, k, out, False)

    def failed(k: int, exc: Exception, v: Any) -> Any:
        out: list = []
        _failed(entries[k][1], exc, v, out)
        return _continue(entries, k, out, False)

    return slow, failed


def branch_runner(entries: Sequence[Entry], counting: bool) -> Callable[[Any], Any]:
    """``item -> outputs`` for one branch: :func:`run_branch`, or, when its steps are not
    counted, generated straight-line code with the same rules (see :func:`_straight`)."""
    if counting:
        return lambda x: run_branch(entries, x, counting)
    slow, failed = continuations(entries)
    return _straight(len(entries))([fn for fn, _ in entries], SINGLE, slow, failed)


async def _collect(y: Any, rt: StepRuntime, item: Any, out: list, counting: bool) -> None:
    """Await step ``rt``'s pending result ``y`` for ``item`` into ``out``. The input was
    counted in when the step was called, so a stop that cancels the await here settles
    it as cancelled (the items an async generator gave before are fan-out): otherwise
    the ledger of a step inside a BlockedJoin's branch misses the item the stop cut off
    (the correlating map only counts its own input as cancelled)."""
    given = 0
    try:
        while True:
            if _take(y, rt, item, out, counting) is None:
                return
            if kind_of(y) == AWAIT:
                y = await y
                continue
            async for v in y:  # AGEN
                out.append(v)
                given += 1
                if counting:
                    rt.stats.out += 1
            return
    except asyncio.CancelledError:
        if counting:
            rt.stats.cancelled += 1
            rt.stats.fanout += given
        raise
    except Exception as exc:
        _failed(rt, exc, item, out)


async def _finish(entries: Sequence[Entry], k: int, pending: Any, item: Any, out: list, rest: list,
                  counting: bool) -> list:
    """The rest of :func:`run_branch` once step ``k`` returned ``pending`` for ``item``."""
    fn, rt = entries[k]
    await _collect(pending, rt, item, out, counting)
    for v in rest:
        await _step_async(fn, rt, v, out, counting)
    items = out
    for fn, rt in entries[k + 1:]:
        out = []
        for v in items:
            await _step_async(fn, rt, v, out, counting)
        items = out
    return items


async def _step_async(fn: Callable[[Any], Any], rt: StepRuntime, v: Any, out: list, counting: bool) -> None:
    pending = _call(fn, rt, v, out, counting)
    if pending is not None:
        await _collect(pending, rt, v, out, counting)


async def _gathered(results: List[Any]) -> List[list]:
    """Every branch's outputs: the pending ones (coroutines) run concurrently, as the
    branches of a route do; if one fails the others are cancelled."""
    pending = [r for r in results if not isinstance(r, list)]
    if len(pending) == 1:
        done = [await pending[0]]
    else:
        tasks = [asyncio.ensure_future(r) for r in pending]
        try:
            done = await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            raise
    finished = iter(done)
    return [r if isinstance(r, list) else next(finished) for r in results]


def inline_route(rt: StepRuntime, match: Callable[[Any], bool], share: bool, join: bool,
                 branches: Sequence[Sequence[Entry]], counting: bool) -> Callable[[Any], Any]:
    """Branch / Return / Fork / Join as one function; see the module docstring."""
    stats = rt.stats
    runners = [branch_runner(b, counting) for b in branches]

    def finish(x: Any, outputs: List[list]) -> Any:
        if not join:
            return _as_is(x) if share else None
        merged = [y for out in outputs for y in out]
        if share:
            merged.append(x)
        return merged

    async def later(x: Any, results: List[Any]) -> Any:
        return finish(x, await _gathered(results))

    def route_fn(x: Any) -> Any:
        stats.inp += 1
        try:
            matched = match(x)
        except Exception as exc:
            return _failed_match(rt, exc, x)
        if not matched:
            return _as_is(x)
        stats.out += 1  # matched: sent into the branches
        if join:
            merged: list = []
            results = []
            pending = False
            for run in runners:
                r = run(x)
                results.append(r)
                if type(r) is list:
                    merged += r
                else:
                    pending = True
            if pending:
                return later(x, results)
            if share:
                merged.append(x)
            return merged
        results = [run(x) for run in runners]
        for r in results:
            if type(r) is not list:
                return later(x, results)
        if share:
            return x if type(x) in SINGLE else OneItem(x)
        return None

    return route_fn


class BlockedParts:
    """What the fusion pass's generated code for an uncounted all-sync BlockedJoin calls
    (see :mod:`rxbot.engine.fuse`): each branch's step functions for its straight path,
    its general continuations, and :meth:`finish` for an item whose branches left the
    straight path (a list, a coroutine, a failure)."""

    def __init__(self, share: bool, branches: Sequence[Sequence[Entry]]) -> None:
        self.share = share
        self.fns = [[fn for fn, _ in entries] for entries in branches]
        parts = [continuations(entries) for entries in branches]
        self.slow = [p[0] for p in parts]
        self.failed = [p[1] for p in parts]

    def finish(self, x: Any, results: List[Any]) -> Any:
        """The route's result for ``x``: its tuple (then ``x`` with ``share``), or a
        coroutine giving that once every branch's pending work is done."""
        if all(type(r) is list for r in results):
            return self._zipped(x, results)
        return self._later(x, results)

    def _zipped(self, x: Any, outputs: List[list]) -> Any:
        t = blocked_tuple(outputs)
        return [t, x] if self.share else t

    async def _later(self, x: Any, results: List[Any]) -> Any:
        return self._zipped(x, await _gathered(results))


def inline_blocked_join(rt: StepRuntime, match: Callable[[Any], bool], share: bool,
                        branches: Sequence[Sequence[Entry]], counting: bool) -> Callable[[Any], Any]:
    """BlockedJoin as one function: per input, one tuple of every branch's result (its
    single output, None for none, a list for several)."""
    runners = [branch_runner(b, counting) for b in branches]

    def zipped(x: Any, outputs: List[list]) -> Any:
        rt.stats.out += 1
        t = blocked_tuple(outputs)
        return [t, x] if share else t

    async def later(x: Any, results: List[Any]) -> Any:
        return zipped(x, await _gathered(results))

    def join_fn(x: Any) -> Any:
        try:
            matched = match(x)
        except Exception as exc:
            return _failed_match(rt, exc, x)
        if not matched:
            return _as_is(x)
        rt.stats.inp += 1
        results = [run(x) for run in runners]
        for r in results:
            if type(r) is not list:
                return later(x, results)
        return zipped(x, results)

    return join_fn


__all__ = ["inline_route", "inline_blocked_join", "BlockedParts", "continuations", "run_branch", "branch_runner", "Entry"]
