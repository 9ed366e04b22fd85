"""Fuse a run of sync steps — and the all-sync routes among them — into straight-line Python.

Calling three small functions per item through three Rx operators costs several times
a plain loop. Instead a run of sync steps becomes generated code whose common path is
exactly the user's calls plus one type lookup per step (``type(y) not in VALUES``: a
value of a known single type goes on; None, lists, generators and coroutines leave the
fast path). A Filter is an ``if``. A route whose branches are all sync (Branch, Return,
Fork, Join, nested) is generated into the same code: each branch is a ``while True:``
block that ``break`` leaves, so a branch that drops its item goes on with the next
branch, and a joining route's outputs continue with the steps after it — copied into
each branch when they are a few plain steps, else one call away.

The code is generated from the segment's *shape* (a nested tuple saying what each
position is, never which function), so it is compiled once per shape per process and
reused by every pipe and every run. Positions are numbered in pre-order: a route, then
its branches' steps, then what follows it; counters, runtimes and the slow-path
continuations are indexed by position.

What the generated ``make(...)`` returns:

* ``entry(x)`` — one item into position 0 (the segment's on_next);
* ``many(it, gate)`` — a slice of a source's iterator (``islice``), returning how many
  items it took: it stops before pulling an item the downstream has no room for, so
  flow control holds per item. At the
  end of a pipe the gate can only close through a slow path (a result the segment
  defers, a failure), so only those check it;
* ``cycle(...)`` — the drawing cycle of an async step right after the segment (not
  at a pipe's end, not through a route): a coroutine that runs the source's next items
  through the steps and calls the async step on each output, until drawing stops;
  compiled apart, on first use (see :meth:`_Program._cycle`);
* ``after`` — per position ``j``, the continuation taking one output of step ``j``
  (what the slow paths, retries, flushes and pipein push into);
* ``amany(ait, gate, k)`` — up to ``k`` items of an async iterator (an async step's
  async generator result) in one coroutine, looking at the gate before each pull;
  compiled apart, on first use (``entry.__rxbot_amany__()`` makes it).
"""
from __future__ import annotations

import inspect
import itertools
import linecache
import types
from functools import lru_cache
from typing import Any, Callable, Dict, List, Sequence, Set, Tuple

#: element kinds of a shape
FN, CONST, SPREAD_CONST, FILTER, ROUTE, BLOCKED = "f", "c", "C", "filter", "route", "blocked"
#: how a Filter or route matches: every item, ``isinstance`` only, or its matcher function
ALL, TYPE, FUNC = "all", "type", "func"

Element = Tuple[Any, ...]
Shape = Tuple[Element, ...]

#: a joining route's tail of at most this many plain steps is copied into each branch
INLINE_TAIL = 6

_Ctx = Tuple[str, Tuple[str, ...]]
#: after a slow path at a pipe's end (chunk entry) the downstream may be full now: the
#: chunk returns, or inside a route's branch it stops before the next item
_IF_FULL = "if gate.blocked:"
_STOP_IF_FULL = "if gate.blocked: stop = True"
Push = Callable[[Any], None]
#: in, out, returned-None per position
Counters = Tuple[List[int], List[int], List[int]]
#: ``(entry, many, after, cycle)``: ``cycle`` compiles the drawing cycle on first use
Made = Tuple[Push, Callable[[Any, Any], int], List[Push], Callable[[bool], Callable[..., Any]] | None]


class _Program:
    """The numbering of one shape and the code for it."""

    def __init__(self, shape: Shape, terminal: bool, counting: bool) -> None:
        self.terminal = terminal
        self.counting = counting
        self.elems: List[Element] = []
        self.where: List[Tuple[int, int]] = []  # position -> (sequence, index in it)
        self.seqs: List[Tuple[List[int], int | None]] = []  # sequence -> (positions, parent route)
        self.branches: Dict[int, List[int]] = {}  # route position -> its branch sequences
        self.uncounted_head = False  # generating the chunk entry, which counts the head route
        self.cycling = False  # generating ``cycle``
        self.chaining = False  # generating the continuations ``a<j>``
        #: the variable holding the item where code is being generated: a step reads it
        #: and writes its result into the other one (``x``/``y``), so the common path
        #: moves no value between them (the guard and the slow paths still see both)
        self.cur = "x"
        self._number(shape, None)

    def _number(self, seq: Sequence[Element], parent: int | None) -> int:
        sid = len(self.seqs)
        positions: List[int] = []
        self.seqs.append((positions, parent))
        for idx, el in enumerate(seq):
            j = len(self.elems)
            self.elems.append(el)
            self.where.append((sid, idx))
            positions.append(j)
            if el[0] == ROUTE:
                self.branches[j] = [self._number(b, j) for b in el[4]]
        return sid

    # -- what follows a position --------------------------------------------------------
    def _tail(self, sid: int, idx: int) -> List[int]:
        """Positions an item at element ``idx`` of sequence ``sid`` still goes through
        on this sequence and, when it ends a joining branch, after the route."""
        positions, parent = self.seqs[sid]
        rest = positions[idx:]
        if parent is None or not self.elems[parent][3]:
            return rest
        psid, pidx = self.where[parent]
        return rest + self._tail(psid, pidx + 1)

    def _discarded(self, j: int) -> bool:
        """Do the outputs of position ``j`` go nowhere (it ends a pipe's last segment,
        or a side flow that does not join)?"""
        sid, idx = self.where[j]
        while True:
            positions, parent = self.seqs[sid]
            if idx + 1 < len(positions):
                return False
            if parent is None:
                return self.terminal
            if not self.elems[parent][3]:
                return True
            sid, idx = self.where[parent]

    def _inline_after(self, route: int) -> bool:
        psid, pidx = self.where[route]
        tail = self._tail(psid, pidx + 1)
        return len(tail) <= INLINE_TAIL and all(self.elems[j][0] != ROUTE for j in tail)

    # -- code -----------------------------------------------------------------------------
    def body(self, sid: int, idx: int, ind: str, ctx: _Ctx) -> List[str]:
        """A generated function's code from element ``idx`` of sequence ``sid``: every
        one of them (``entry``, ``a<j>``, ``many``, ``cycle``, ``amany``) takes its item
        in ``x``."""
        self.cur = "x"
        return self.run_from(sid, idx, ind, ctx)

    def run_from(self, sid: int, idx: int, ind: str, ctx: _Ctx) -> List[str]:
        """Elements ``idx..`` of sequence ``sid`` for the item in ``x``, then the end of
        the sequence (emit, a joining route's tail, or nothing)."""
        positions, parent = self.seqs[sid]
        out: List[str] = []
        for k, j in enumerate(positions[idx:]):
            if self.elems[j][0] == ROUTE:
                return out + self._route(j, ind, ctx)  # the route's code runs the rest
            if k and self.chaining:  # a continuation: one step, then the next one's
                return out + [f"{ind}a{positions[idx + k - 1]}({self.cur})", f"{ind}{ctx[0]}"]
            out += self._step(j, ind, ctx)
        x = self.cur
        if parent is None:
            if self.cycling:  # ``cycle``: the output is the async step's next work
                if self.elems:  # (the plain cycle has no lane)
                    out += [f"{ind}if held[0]:", f"{ind}    hold({x})", f"{ind}    how = NOTHING", f"{ind}    break"]
                out += [f"{ind}work = {x}", f"{ind}break"]
            elif not self.terminal:  # at the end of a pipe nothing listens: no call at all
                out += [f"{ind}if held[0]:", f"{ind}    hold({x})", f"{ind}else:", f"{ind}    emit({x})"]
        elif self.elems[parent][3]:  # a joining branch: continue after the route
            if self._inline_after(parent):
                psid, pidx = self.where[parent]
                out += self.run_from(psid, pidx + 1, ind, ctx)
            else:
                out.append(f"{ind}a{parent}({x})")
        return out

    def _dropped(self, ind: str, leave: str) -> List[str]:
        """An item a step dropped (None) or a Filter did not match: on to the next one.
        In ``cycle`` it counts down ``room`` first: after ``k`` items in a row without an
        output it stops drawing (``NOTHING``), so a segment that drops everything never
        keeps the worker (``room`` starts again at each output; a slow path stops at once)."""
        if not self.cycling:
            return [f"{ind}{leave}"]
        return [f"{ind}room -= 1", f"{ind}if not room:", f"{ind}    how = NOTHING", f"{ind}    break", f"{ind}{leave}"]

    def _slow(self, call: str, ind: str, ctx: _Ctx) -> List[str]:
        leave, after_slow = ctx
        # after a slow path that leaves the loop (``cycle``'s), ``leave`` would never run
        ends = bool(after_slow) and after_slow[-1].split()[0] in ("return", "break")
        return [f"{ind}{call}", *(ind + s for s in after_slow), *([] if ends else [f"{ind}{leave}"])]

    def _match(self, j: int, ind: str, ctx: _Ctx, count_failure: bool = False) -> Tuple[List[str], str | None]:
        """Lines computing whether the item matches element ``j``, and the condition
        (None: every item matches)."""
        mode = self.elems[j][1]
        x = self.cur
        if mode == ALL:
            return [], None
        if mode == TYPE:
            return [], f"isinstance({x}, f{j})"
        # the truth test inside the try: a result whose truth raises fails the match as
        # ``matcher``'s ``bool(...)`` does (``f<j>`` is the route_func itself, no wrapper)
        return [f"{ind}try:", f"{ind}    m = True if f{j}({x}) else False", f"{ind}except Exception as e:",
                *([f"{ind}    ci[{j}] += 1"] if count_failure else []),
                *self._slow(f"fail(e, {j}, {x})", ind + "    ", ctx)], "m"

    def _step(self, j: int, ind: str, ctx: _Ctx) -> List[str]:
        kind = self.elems[j][0]
        leave = ctx[0]
        counting = self.counting
        out = [f"{ind}ci[{j}] += 1"] if counting else []
        x = self.cur
        y = "y" if x == "x" else "x"  # the step's result: the item's variable from here on
        if kind == FN and not counting and self._discarded(j):
            # what the last step of a pipe or side flow returns goes nowhere: only a
            # result that is more than one value (a generator, a coroutine) is looked at
            self.cur = y
            return [f"{ind}try:", f"{ind}    {y} = f{j}({x})", f"{ind}except Exception as e:",
                    *self._slow(f"fail(e, {j}, {x})", ind + "    ", ctx),
                    f"{ind}if {y} is not None and type({y}) is not t{j}:",
                    *self._learn(f"t{j}", y, ind + "    ", self._slow(f"spread({y}, {j}, {x})", "    ", ctx))]
        if kind == FN:
            # one try per call: free in 3.11 when nothing raises, and the handler knows
            # the step and its input without per-item bookkeeping
            out += [f"{ind}try:", f"{ind}    {y} = f{j}({x})", f"{ind}except Exception as e:",
                    *self._slow(f"fail(e, {j}, {x})", ind + "    ", ctx),
                    # the type this step returned last: one identity test while it keeps
                    # returning values of one type (see _guards)
                    f"{ind}if type({y}) is not t{j}:",
                    f"{ind}    if {y} is None:",
                    *([f"{ind}        cn[{j}] += 1"] if counting else []),
                    *self._dropped(ind + "        ", leave),
                    *self._learn(f"t{j}", y, ind + "    ", self._slow(f"spread({y}, {j}, {x})", "    ", ctx))]
            if counting:
                out.append(f"{ind}co[{j}] += 1")
            self.cur = y
        elif kind == CONST:
            if counting:
                out.append(f"{ind}co[{j}] += 1")
            out.append(f"{ind}{x} = v{j}")
        elif kind == SPREAD_CONST:
            out += self._slow(f"spread(v{j}, {j}, {x})", ind, ctx)
        elif kind == BLOCKED:
            out += self._blocked(j, ind, ctx)
        elif self.elems[j][1] == FUNC:  # a Filter's route_func: its truth test is the if itself
            # inside the try, as ``matcher``'s ``bool(...)``: a result whose truth raises
            # fails the match; the matched item goes on after the try (a later step's
            # failure is that step's). No ``m`` stored and tested per item
            out += [f"{ind}try:", f"{ind}    if not f{j}({x}):", *([f"{ind}        cn[{j}] += 1"] if counting else []),
                    *self._dropped(ind + "        ", leave), f"{ind}except Exception as e:",
                    *self._slow(f"fail(e, {j}, {x})", ind + "    ", ctx)]
            if counting:
                out.append(f"{ind}co[{j}] += 1")
        else:  # FILTER matching every item or by type
            lines, cond = self._match(j, ind, ctx)
            out += lines
            if cond is not None:
                out += [f"{ind}if not {cond}:", *([f"{ind}    cn[{j}] += 1"] if counting else []),
                        *self._dropped(ind + "    ", leave)]
            if counting:
                out.append(f"{ind}co[{j}] += 1")
        return out

    def _blocked(self, j: int, ind: str, ctx: _Ctx) -> List[str]:
        """An all-sync BlockedJoin of plain steps. Each branch starts from the item in
        ``x<j>``; its straight path leaves one value in ``s<b>``. A branch that leaves it
        (None, a list, a coroutine, a failure) puts ``SLOW`` in ``s<b>``, its general
        continuation's result in ``r<b>``, and clears ``whole``: the item's tuple is then
        finished by ``B<j>.finish``. A failure under the raise policy propagates from
        there and fails the BlockedJoin's item.

        A branch of one step is a ``try``/``else``; a longer one a ``while True`` block
        its slow paths ``break``. So the straight path of ``BlockedJoin(f1, f2)`` is the
        two calls, their guards, one flag and the tuple."""
        _, mode, share, lengths = self.elems[j]
        item = self.cur  # an unmatched item goes on here; a matched one's tuple too
        lines, cond = self._match(j, ind, ctx)
        out = list(lines)
        body = ind
        if cond is not None:
            out.append(f"{ind}if {cond}:")
            body = ind + "    "
        t, w = body + "    ", body + "        "
        out += [*self._matched(j, body), f"{body}x{j} = {item}", f"{body}whole = True", f"{body}try:"]

        def slow(b: int, k: int, failed: bool, y: str, x: str, then: Tuple[str, ...] = ()) -> List[str]:
            """Branch ``b`` left its straight path at its step ``k`` (input in ``x``):
            failed, or its result in ``y`` is not one value."""
            general = f"fl{j}_{b}({k}, e, {x})" if failed else f"[] if {y} is None else sl{j}_{b}({k}, {y}, {x})"
            return [f"    r{b} = {general}", f"    s{b} = SLOW", "    whole = False", *then]

        for b, n in enumerate(lengths):
            if n == 0:
                out.append(f"{t}s{b} = x{j}")
            elif n == 1:
                t_ = f"t{j}_{b}_0"
                out += [f"{t}try:", f"{t}    s{b} = g{j}_{b}_0(x{j})", f"{t}except Exception as e:",
                        *(t + line for line in slow(b, 0, True, "", f"x{j}")),
                        f"{t}else:", f"{t}    if type(s{b}) is not {t_}:",
                        *self._learn(t_, f"s{b}", t + "        ", slow(b, 0, False, f"s{b}", f"x{j}"))]
            else:
                out.append(f"{t}while True:")
                x = f"x{j}"
                for k in range(n):
                    t_, y = f"t{j}_{b}_{k}", "y" if x != "y" else "x"
                    out += [f"{w}try:", f"{w}    {y} = g{j}_{b}_{k}({x})", f"{w}except Exception as e:",
                            *(w + line for line in slow(b, k, True, "", x, ("    break",))),
                            f"{w}if type({y}) is not {t_}:",
                            *self._learn(t_, y, w + "    ", slow(b, k, False, y, x, ("    break",)))]
                    x = y
                out += [f"{w}s{b} = {x}", f"{w}break"]
        # what escapes the branches is a raise their step's policy already decided
        out += [f"{body}except Exception as e:", *self._slow(f"fail(e, {j}, x{j}, True)", t, ctx)]
        slots = ", ".join(f"r{b} if s{b} is SLOW else [s{b}]" for b in range(len(lengths)))
        finish = self._slow(f"spread(B{j}.finish(x{j}, [{slots}]), {j}, x{j})", t, ctx)
        if share:  # the tuple, then the item itself: the general path
            return out + [f"{body}if True:", *finish]
        values = "".join(f"s{b}, " for b in range(len(lengths)))
        return out + [f"{body}if whole:", f"{t}{item} = ({values})", f"{body}else:", *finish]

    def _matched(self, j: int, ind: str) -> List[str]:
        """Count a matched item of the route (or BlockedJoin) at ``j`` — unless the chunk
        entry counts it per chunk (see ``many``)."""
        return [] if j == 0 and self.uncounted_head else [f"{ind}co[{j}] += 1"]

    def _route(self, j: int, ind: str, ctx: _Ctx) -> List[str]:
        """A route: with ``share``, a matched item first through the main stream (the
        steps after the route, one call away), then through every branch (each a
        ``while True`` block, so that dropping the item in one branch goes on with the
        next); unmatched items only through the main stream."""
        _, mode, share, _join, _ = self.elems[j]
        leave, after_slow = ctx
        # a route always counts, as its operator does, with one counter per item: matched
        # (co), unmatched (cn) or failed to match (ci); see :func:`route_positions`
        lines, cond = self._match(j, ind, ctx, count_failure=True)
        out = list(lines)
        body = ind
        if cond is not None:
            out.append(f"{ind}if {cond}:")
            body = ind + "    "
        at_route = self.cur
        out += [*self._matched(j, body), f"{body}x{j} = {at_route}"]
        in_branch = tuple(_STOP_IF_FULL if line.startswith(_IF_FULL) else line for line in after_slow)
        restore = False  # does the first branch start from a changed ``x``?
        if share:
            # the main stream first, as databot's queues did: the steps after the route
            # see the item before a branch's steps can change it. A few plain steps are
            # generated in place, as one more ``while True`` block (a None from them
            # goes on with the branches); a longer or routed tail is one call away
            psid, pidx = self.where[j]
            if self._inline_after(j) and not self.chaining:
                out += [f"{body}while True:", *self.run_from(psid, pidx + 1, body + "    ", ("break", in_branch)),
                        f"{body}    break"]
                restore = True
            else:
                out += [f"{body}a{j}({at_route})", *(body + line for line in in_branch)]
        for b, sid in enumerate(self.branches[j]):
            out.append(f"{body}while True:")
            self.cur = at_route
            if b or restore:
                out.append(f"{body}    x = x{j}")
                self.cur = "x"
            out += self.run_from(sid, 0, body + "    ", ("break", in_branch))
            out.append(f"{body}    break")
        stops = [line[len(_IF_FULL):] for line in after_slow if line.startswith(_IF_FULL)]
        if stops:  # a slow path in a branch asked to stop: before the next item
            out.append(f"{body}if stop:{stops[0]}")
        out.append(f"{body}{leave}")
        if cond is None:
            return out  # every item matched and went its ways: no unmatched path
        if cond is not None:
            out += [f"{ind}else:", f"{ind}    cn[{j}] += 1"]
        psid, pidx = self.where[j]
        self.cur = at_route
        return out + self.run_from(psid, pidx + 1, ind, ctx)

    def _cycle(self, learn: List[str], awaits: bool) -> List[str]:
        """``cycle(slots, mine, it, gate, stats, k, runner, finish, ctx, dropped, inp,
        left, due, turned, started)``: the drawing cycle of the async step right after
        this segment (:meth:`rxbot.engine.slots.Slots.draw`), run as the task of a slot a
        worker handed over once its call had ended. Round and round, in one coroutine:
        look whether it may still draw, take the source's next items (each counted into
        the source's ``stats`` as it is taken, before the steps) through the steps until
        one gives an output, count it into the step's ``inp``, call the step
        (``runner``), await it, settle the result, and after ``left`` works look at the
        pace (``due()``; a turn holds no work). It is the worker's own cycle with the
        steps inline, one coroutine between the event loop and each call, as a
        hand-written worker pulling from one iterator: resuming a generator of outputs
        per work from the worker's coroutine (what this replaced) cost 3.11 a C-level
        re-entry of the interpreter per work and a coroutine more per suspension.

        It settles a result exactly as ``Slots._worker`` does after its own calls (a
        None dropped and counted, any other result through ``finish``, an exception
        through ``Slots.call_failed``); the two must stay in step.

        ``started`` is the handing worker's future: the cycle sets it as it starts, or,
        finding it done (the worker's task was cancelled first, which cancels it), ends
        at once, the slot freed by that worker. When drawing stops the task goes on as a
        worker (``Slots.after_cycle``) with how it stopped: ``STOPPED`` (it may no longer
        draw; the worker looks again itself), ``NOTHING`` (``k`` items in a row gave no
        output, or an output went its general way: a slow path, the ordered lane),
        ``ENDED``, or the exception the source (or a step's slow path) raised. Either
        way the task's end counts the worker off (``workers``). It never takes an item
        before its call is due, so drawing that stops leaves the rest of ``it``
        untouched.

        ``awaits``: the step's ``runner`` is an ``async def`` function, whose call always
        gives a coroutine: it is awaited as it is, without looking at what it gave."""
        # the loop's own FOR_ITER takes the next item; ``room`` counts down only where
        # an item is dropped
        i1, i2, i3, i4, i5, i6, i7 = (" " * (4 * d) for d in range(3, 10))
        out = ["    async def cycle(slots, mine, it, gate, stats, k, runner, finish, ctx, dropped, inp, left, due,"
               " turned, started):", *learn,
               # the worker that spawned this task cancelled it first: its slot is freed
               "        if started.done():", "            return", "        started.set_result(None)",
               "        pending = slots.pending", "        how = None", "        try:", "            while True:",
               # the loop's own counter counts the works down to the next look at the pace
               f"{i2}for left in range(left, 0, -1):",
               f"{i3}if slots.drawn is not mine or pending or gate.blocked != 1 or slots.handed:",
               f"{i4}return await slots.after_cycle(STOPPED, left)",
               f"{i3}try:", *([f"{i4}room = k"] if self.elems else []), f"{i4}for x in it:", f"{i5}stats.out += 1"]
        self.cycling = True
        out += self.body(0, 0, i5, ("continue", ("how = NOTHING", "break")))
        self.cycling = False
        return out + [
            f"{i4}else:", f"{i5}how = ENDED", f"{i3}except Exception as e:", f"{i4}how = e",
            f"{i3}if how is not None:", f"{i4}return await slots.after_cycle(how, left)",
            f"{i3}inp.inp += 1", f"{i3}try:",
            *([f"{i4}value = await runner(work)"] if awaits else [
                f"{i4}value = runner(work)", f"{i4}if type(value) is COROUTINE or isawaitable(value):",
                f"{i5}value = await value"]),
            f"{i4}if value is None:", f"{i5}if dropped is not None:", f"{i6}if not ctx.stopped:",
            f"{i7}dropped.filtered += 1", f"{i6}else:", f"{i7}dropped.cancelled += 1", f"{i5}else:",
            f"{i6}inp.held += 1", f"{i4}else:", f"{i5}value = finish(work, value)", f"{i5}if value is not None:",
            f"{i6}await value", f"{i3}except BaseException as e:", f"{i4}slots.call_failed(work, e)",
            # ``left`` works drawn since the last look: a turn now, or the next look later
            f"{i2}left = due()", f"{i2}if not left:", f"{i3}await slots.give_turn()", f"{i3}left = turned()",
            "        finally:", "            slots.workers -= 1"]

    def _amany(self, learn: List[str]) -> List[str]:
        """``amany(ait, gate, k)``: at most ``k`` items of an async iterator (an async
        step's async generator result, a Query's rows) through the segment in one
        coroutine, as a hand-written ``async for`` would run them, instead of one
        ``entry`` call per item. It looks at the gate before pulling each item and
        returns ``(taken, ended)``: the caller publishes the count, waits at the gate
        and calls again."""
        # ``at_pull`` is set only when the iterator itself raised (read from the frame
        # by :func:`taken_in`): the item being pulled was never handed over
        # ``n`` counts the item being pulled too (the loop's own counter: no ``n += 1``
        # and ``n < k`` per item), one less where the pull did not give one
        out = ["    async def amany(ait, gate, k):", *learn, "        n = 0",
               "        anext_ = ait.__anext__", "        for n in range(1, k + 1):",
               "            if gate.blocked:", "                return n - 1, False",
               "            try:", "                x = await anext_()", "            except StopAsyncIteration:",
               "                return n - 1, True", "            except BaseException:", "                n -= 1",
               "                at_pull = True", "                raise"]
        out += self.body(0, 0, "            ", ("continue", ()))
        return out + ["        return n, False"]

    @staticmethod
    def _learn(guard: str, y: str, ind: str, other: List[str]) -> List[str]:
        """After a guard missed on the result in ``y``: a single value's type becomes
        the guard, anything else runs ``other`` (lines indented relative to the ``else``)."""
        return [f"{ind}if type({y}) in VALUES:", f"{ind}    {guard} = type({y})", f"{ind}else:",
                *(ind + line for line in other)]

    def _guards(self) -> List[str]:
        """The type guard of every call: ``t<j>`` for a step, ``t<j>_<b>_<k>`` for a
        BlockedJoin branch's step. A guard holds the type of the last value its call
        returned (a type of ``VALUES``; initially ``NOTYPE``, which nothing is), so while
        a step keeps returning one type — nearly always — its result costs one identity
        test instead of a set lookup; any other type takes the full test and, when it is
        one value, becomes the guard. ``VALUES`` only grows, so a learned type stays
        right."""
        names: List[str] = []
        for j, el in enumerate(self.elems):
            if el[0] == FN:
                names.append(f"t{j}")
            elif el[0] == BLOCKED:
                names += [f"t{j}_{b}_{k}" for b, length in enumerate(el[3]) for k in range(length)]
        return names

    def source(self, part: str = "sync", check: str | None = None) -> str:
        """The text of ``make``: for ``part='sync'`` it returns ``(entry, many,
        after)``; for ``part='cycle'`` (compiled only for a segment an async step draws
        through) it returns ``cycle``; for ``part='async'`` (compiled only for a segment an async generator
        feeds) it takes the sync part's continuations too and returns ``amany``; for
        ``part='traced'`` (compiled only for a segment a traced source slices into) it
        takes the continuations and ``trace = (thit, toff, tfail, entry)`` and returns
        a ``many`` with the trace's expression ``check`` (over ``x``) inline."""
        n = len(self.elems)
        signature = "def make(fns, consts, emit, spread, fail, VALUES, ci, co, cn, held, hold, after=()"
        out = [signature + (", trace=()):" if part == "traced" else "):")]
        for j, el in enumerate(self.elems):
            if el[0] in (CONST, SPREAD_CONST):
                out.append(f"    v{j} = consts[{j}]")
            elif el[0] == FN or el[1] != ALL:
                out.append(f"    f{j} = fns[{j}]")
            if el[0] == BLOCKED:
                out.append(f"    B{j} = consts[{j}]")
                for b, length in enumerate(el[3]):
                    out += [f"    g{j}_{b}_{k} = B{j}.fns[{b}][{k}]" for k in range(length)]
                    out += [f"    sl{j}_{b} = B{j}.slow[{b}]", f"    fl{j}_{b} = B{j}.failed[{b}]"]
        guards = self._guards()
        out += [f"    {t} = NOTYPE" for t in guards]
        # every function below may learn any guard's type
        learn = [f"        nonlocal {', '.join(guards)}"] if guards else []
        if part == "async":
            out += [f"    a{j} = after[{j}]" for j in range(n)]
            return "\n".join(out + self._amany(learn) + ["    return amany"])
        if part in ("cycle", "cycle awaiting"):
            return "\n".join(out + self._cycle(learn, part == "cycle awaiting") + ["    return cycle"])
        if part == "traced":
            assert check is not None, "a traced part needs its check"
            out += [f"    a{j} = after[{j}]" for j in range(n)] + ["    thit, toff, tfail, entry = trace"]
            return "\n".join(out + self._many(learn, check) + ["    return many"])
        fn_ctx: _Ctx = ("return", ())
        out += ["    def entry(x):", *learn]
        out += self.body(0, 0, "        ", fn_ctx)
        out.append("        return")
        # the continuations run one step and call the next one's (slow paths only: a
        # call per step there keeps the code linear in the segment's length)
        self.chaining = True
        for j in range(n):
            sid, idx = self.where[j]
            out += [f"    def a{j}(x):", *learn]
            out += self.body(sid, idx + 1, "        ", fn_ctx)
            out.append("        return")
        self.chaining = False
        out += self._many(learn)
        out.append(f"    return entry, many, [{', '.join(f'a{j}' for j in range(n))}]")
        return "\n".join(out)

    def _many(self, learn: List[str], check: str | None = None) -> List[str]:
        """``many(it, gate)``, the chunk entry: a slice of a source's iterator
        (``itertools.islice``). It returns how many items it took, and stops before
        pulling an item the downstream has no room for (a generator's side effects run
        exactly as far as item by item).

        ``check``: an item trace's expression over ``x`` (see :meth:`source`'s part
        ``'traced'``), evaluated where each element enters; a matching one goes through
        ``entry`` between the tracer's ``thit`` and ``toff``, the others on as ever."""
        out = ["    def many(it, gate):", *learn, "        n = 0"]
        # a route (or BlockedJoin) matching every item at the head of the segment sees
        # every item the chunk takes: it is counted once per chunk, not per item
        head = self.elems[0][0] in (ROUTE, BLOCKED) and self.elems[0][1] == ALL
        ret = "co[0] += n; return n" if head else "return n"
        full = f"if gate.blocked: {ret}"
        take = ["            for x in it:", "                break", "            else:", f"                {ret}"]
        if check is not None:  # a traced item pushed by the wrapper before this slice is done
            out += ["        toff()", "        hitting = False"]
        if self.terminal and any(el[0] == ROUTE for el in self.elems):
            # inside a route's branch a slow path cannot end the item: it asks to stop
            # before the next one, which the route looks at once its branches are done
            out += ["        stop = False", "        for x in it:"]
            ctx: _Ctx = ("continue", (full,))
        elif self.terminal:
            out += ["        for x in it:"]
            ctx = ("continue", (full,))
        else:  # the emit may fill the downstream: look before pulling the next item
            out += ["        while not gate.blocked:", *take]
            ctx = ("continue", ())
        out.append("            n += 1")
        if check is not None:
            out += self._check(check, head, full if self.terminal else "")
        self.uncounted_head = head
        out += self.body(0, 0, "            ", ctx)
        self.uncounted_head = False
        out.append(f"        {ret}")
        return out

    @staticmethod
    def _check(check: str, head: bool, full: str) -> List[str]:
        """An item trace's check on the element ``x`` as it enters ``many``: an element
        that does not match costs the expression's own bytecodes and one jump (the
        expression is the ``if``'s test itself, so a comparison specializes into its
        jump; a result stored first would not); one that matches is pushed by ``entry``
        with the trace function on (``thit``) and off again after (``toff``), then the
        loop goes on with the next element (or returns, ``full``, when that push filled
        the downstream). An expression that raises does not trace the element
        (``tfail`` says so once); what the traced push raises (``hitting``) goes on as
        it would from the untraced code."""
        ind = "            "
        return [f"{ind}try:", f"{ind}    if ({check}):", f"{ind}        hitting = True", f"{ind}        thit(x)",
                # the chunk counts a head route per chunk, and entry counts it per item
                *([f"{ind}        co[0] -= 1"] if head else []),
                f"{ind}        try:", f"{ind}            entry(x)", f"{ind}        finally:", f"{ind}            toff()",
                f"{ind}        hitting = False", *([f"{ind}        {full}"] if full else []), f"{ind}        continue",
                f"{ind}except Exception as e:", f"{ind}    if hitting:", f"{ind}        raise", f"{ind}    tfail(x, e)"]


#: a BlockedJoin branch left its straight path: its outputs are in ``r<b>``, not ``s<b>``
_SLOW = object()


class _Mark:
    """A named marker: how a drawing cycle stopped drawing (see ``Slots.after_cycle``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: ``cycle`` found no output to call the step on (none came, or it went its general way)
NOTHING = _Mark("NOTHING")
#: ``cycle``'s iterator ended
ENDED = _Mark("ENDED")
#: ``cycle``'s worker may no longer draw (it looks again itself)
STOPPED = _Mark("STOPPED")



class _NoType:
    """The type guards' first value: no result is of this type (it has no instances)."""


def _tag(shape: Sequence[Element]) -> str:
    return "".join(el[0][0] if el[0] != ROUTE else f"<{'|'.join(_tag(b) for b in el[4])}>" for el in shape)


@lru_cache(maxsize=None)
def _factory(shape: Shape, terminal: bool, counting: bool, part: str = "sync",
             check: str | None = None) -> Callable[..., Any]:
    text = _Program(shape, terminal, counting).source(part, check)
    namespace: Dict[str, Any] = {"SLOW": _SLOW, "NOTYPE": _NoType, "NOTHING": NOTHING, "ENDED": ENDED,
                                 "STOPPED": STOPPED, "COROUTINE": types.CoroutineType, "isawaitable": inspect.isawaitable}
    tag = f"{_tag(shape)}{'.' if terminal else ''}{'#' if counting else ''}"
    filename = f"<rxbot fused {tag}{'' if part == 'sync' else ' ' + part} {next(_serial)}>"  # unique: one text per name
    # attrs' pattern: a linecache entry under the code's own file name, so tracebacks,
    # pdb and inspect show the generated line (the entry has no mtime: never checked
    # against a file, never dropped by linecache.checkcache)
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    exec(compile(text, filename, "exec"), namespace)
    make: Callable[..., Any] = namespace["make"]
    return make


def taken_in(exc: BaseException, fn: Callable[..., Any]) -> Tuple[int, bool]:
    """How many items the generated ``many`` or ``amany`` (``fn``) had taken when ``exc``
    escaped it, read from its frame in the traceback (the hot loop counts nothing
    anywhere else), and whether it escaped while pulling the next item (``amany``'s
    iterator raised) rather than while an item was on its way through the steps."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is fn.__code__:
            local = tb.tb_frame.f_locals
            taken = local.get("n")
            return (taken if isinstance(taken, int) else 0), "at_pull" in local
        tb = tb.tb_next
    return 0, False


#: numbers the generated code's file names
_serial = itertools.count(1)


def source_of(shape: Sequence[Element], terminal: bool = False, counting: bool = False,
              check: str | None = None) -> str:
    """The generated text for ``shape`` (for reading and for tests); with ``check`` (an
    item trace's expression over ``x``), followed by the traced chunk entry a traced
    source slices into instead."""
    program = _Program(tuple(shape), terminal, counting)
    text = program.source()
    if check is None:
        return text
    return text + "\n# a traced source slices into this instead of many:\n" + program.source("traced", check)


def route_positions(shape: Sequence[Element], kind: str = ROUTE) -> List[int]:
    """The positions of the routes (or BlockedJoins) in ``shape``. A route's counters
    mean: ``co`` matched, ``cn`` unmatched, ``ci`` failed to match — its items in are
    their sum. A generated BlockedJoin counts its matched items in ``co``: one tuple each."""
    return [j for j, k in enumerate(_kinds(tuple(shape))) if k == kind]


@lru_cache(maxsize=None)
def _kinds(shape: Shape) -> Tuple[str, ...]:
    """The kind of every position of ``shape``, in pre-order (numbered once per shape,
    not for every subscription of a segment)."""
    return tuple(el[0] for el in _Program(shape, False, False).elems)


def fuse(shape: Sequence[Element], fns: Sequence[Any], consts: Sequence[Any], emit: Push,
         spread: Callable[..., None], fail: Callable[..., None], values: Set[type], terminal: bool = False,
         counters: Counters | None = None, counting: bool = False,
         held: List[bool] | None = None, hold: Push | None = None) -> Made:
    """Return ``(entry, many, after, cycle)`` for one segment instance (see the module
    docstring; ``cycle`` is None where no async step can draw through the segment).

    ``terminal``: the segment ends a pipe, so its results go nowhere and are not emitted.
    ``counters``: lists (in, out, returned-None) per position; routes always count into
    them, steps only with ``counting`` (counting costs about a third of the per-item
    time, so it is compiled in only when asked for).
    ``held``/``hold``: while ``held[0]`` is true, results go to ``hold(x)`` instead of
    downstream (see the fused segment's ordered lane).
    """
    ci, co, cn = counters if counters is not None else (None, None, None)
    args = (fns, consts, emit, spread, fail, values, ci, co, cn, held or [False], hold)
    key = (tuple(shape), terminal, counting and counters is not None)
    entry, many, after = _factory(*key)(*args)
    for c in (entry, *after):  # what fast_on_next and a slicing source look for
        setattr(c, "__rxbot_direct__", True)
    setattr(entry, "__rxbot_many__", many)

    def amany() -> Callable[..., Any]:
        """The segment's ``amany`` (compiled on first use: only a segment that an async
        generator feeds needs it), sharing its counters, guards' slow paths and
        continuations."""
        made: Callable[..., Any] = _factory(*key, "async")(*args, after)
        return made

    # what an async step whose result is an async generator looks for
    setattr(entry, "__rxbot_amany__", amany)

    def traced_many(check: str, hooks: Tuple[Any, Any, Any]) -> Callable[[Any, Any], int]:
        """The segment's ``many`` with an item trace's ``check`` (an expression over
        ``x``) inline, calling ``hooks = (thit, toff, tfail)`` (compiled on first use:
        only a segment a traced source slices into needs it; see :mod:`rxbot.observe.trace`)."""
        made: Callable[[Any, Any], int] = _factory(*key, "traced", check)(*args, after, (*hooks, entry))
        return made

    # what a traced source (rxbot.engine.operators._pull_source.iterate) looks for
    setattr(entry, "__rxbot_traced_many__", traced_many)
    made_cycle: Dict[bool, Callable[..., Any]] = {}

    def cycle(awaits: bool) -> Callable[..., Any]:
        """The segment's drawing cycle (compiled on first use: only a segment an async
        step draws through needs it), sharing its counters and its lane; ``awaits``: the
        step's runner is an ``async def`` function (see :meth:`_Program._cycle`)."""
        made = made_cycle.get(awaits)
        if made is None:
            made = made_cycle[awaits] = _factory(*key, "cycle awaiting" if awaits else "cycle")(*args)
        return made

    return entry, many, after, (cycle if drawable_through(shape, terminal) else None)


def drawable_through(shape: Sequence[Element], terminal: bool) -> bool:
    """Can an async step right after a segment of ``shape`` draw its works through it
    (its ``cycle``)? Not at a pipe's end, and not through a route, whose branches
    cannot give one output (a route is nested only in a route: the top level says it;
    ``rxbot.plan.Fused.pullable`` is the same rule, for ``explain()``)."""
    return not terminal and all(el[0] != ROUTE for el in shape)


@lru_cache(maxsize=None)
def plain_cycle(awaits: bool) -> Callable[..., Any]:
    """The drawing cycle of an async step right after its source (no steps between);
    ``awaits`` as for a segment's."""
    made: Callable[..., Any] = _factory((), False, False, "cycle awaiting" if awaits else "cycle")(
        None, (), None, None, None, None, None, None, None, [False], None)
    return made


__all__ = ["fuse", "source_of", "taken_in", "plain_cycle", "NOTHING", "ENDED", "STOPPED", "route_positions", "FN", "CONST", "SPREAD_CONST", "FILTER", "ROUTE", "BLOCKED", "ALL", "TYPE",
           "FUNC", "Element", "Shape"]
