"""DESIGN §2 'What a step's return value does': the classification of results and
:func:`deliver`, the one place that applies the rules in async context.

The hot path only asks ``type(r) in SINGLE`` (one set lookup); everything else is
classified once per type and remembered, so custom item classes get the fast path too.
The fused code (:mod:`rxbot.engine.fuse`) inlines that lookup and leaves everything
else to :func:`deliver` (through its segment's slow path).
"""
from __future__ import annotations

import collections.abc
import datetime
import decimal
import fractions
import inspect
import uuid
from typing import Any, Callable, Sequence, Tuple

from ..config import config
from ..tree.node import OneItem
from .fuse import taken_in
from .gate import FIRST_LOOK, Pace

#: a pace that never counts items to a turn, only time (an async generator's items)
BY_TIME = 1 << 62

#: types whose instances are always exactly one item. Grows at run time with user
#: types found to be neither iterable nor awaitable (see :func:`kind_of`).
SINGLE: set = {
    int, float, complex, bool, str, bytes, bytearray, memoryview, tuple, dict,
    decimal.Decimal, fractions.Fraction, datetime.date, datetime.datetime,
    datetime.time, datetime.timedelta, uuid.UUID, type(None),
}

#: the same without ``NoneType``: the fused code's one lookup per result (a None, like
#: anything not in here, leaves its fast path)
VALUES: set = SINGLE - {type(None)}

ONE, MANY, AWAIT, AGEN = 0, 1, 2, 3
#: a :class:`~rxbot.tree.node.OneItem`: pass its ``.item`` on as one item
ONE_AS_IS = 4


def kind_of(value: Any) -> int:
    """Classify a non-None result that is not of a known single type."""
    t = type(value)
    if t in SINGLE:
        return ONE
    if t is OneItem:
        return ONE_AS_IS
    if isinstance(value, (str, bytes, bytearray, memoryview, tuple, dict, collections.abc.Mapping)):
        return ONE  # subclasses of the single types, and mappings, stay whole
    if inspect.isawaitable(value):
        return AWAIT
    if isinstance(value, collections.abc.AsyncIterable):
        return AGEN
    if isinstance(value, BaseException):
        return ONE
    # iterable means "has __iter__" (collections.abc.Iterable), as databot tested it: an
    # object with only __getitem__ (a record class, a lookup table) is one item, not a
    # sequence to index from 0 until IndexError
    if not isinstance(value, collections.abc.Iterable):
        if not any(hasattr(t, a) for a in ("__iter__", "__await__", "__aiter__")):
            SINGLE.add(t)
            VALUES.add(t)
        return ONE
    return MANY


def blocked_tuple(outputs: Sequence[list]) -> tuple:
    """A BlockedJoin's result from each branch's outputs, in argument order: one output
    as itself, none as None, several as a list (DESIGN §2b)."""
    return tuple(None if not r else r[0] if len(r) == 1 else r for r in outputs)


async def deliver(result: Any, emit: Callable[[Any], None], gate: Any, counts: Any = None,
                  owned: bool = True) -> bool:
    """Apply the return-value rules to ``result`` in async context, pushing each item
    through ``emit`` and pausing at ``gate`` while downstream is full.

    ``counts`` (the step's :class:`~rxbot.engine.policy.StepStats`) gets the ledger's
    fan-out: an iterable result of one input gave ``n`` items, ``n - 1`` beyond its input;
    a result that belongs to no input (``owned=False``: a node's flush) gave ``n``; one
    failing part-way gave ``n`` and its failure settles the input.

    Returns False when the result was None (the step dropped the item by its own rule)."""
    while True:
        if result is None:
            return False
        kind = ONE if type(result) in SINGLE else kind_of(result)
        if kind == ONE or kind == ONE_AS_IS:
            emit(result if kind == ONE else result.item)
            if counts is not None and not owned:
                counts.fanout += 1
            return True
        if kind == AWAIT:
            result = await result
            continue
        every = config.yield_every
        n = 0
        look = min(every, FIRST_LOOK)  # (the pace is made at the first look: most results are short)
        pace: Pace | None = None
        total = 0  # items given (the ledger's fan-out)
        try:
            if kind == MANY:
                for v in result:
                    emit(v)
                    total += 1
                    n += 1
                    if gate.blocked or n >= look:
                        if not gate.blocked:  # every ``yield_every`` items or a turn's time
                            if pace is None:
                                pace = Pace(every, gate.beat)
                            look = pace.look(n)
                            if look:
                                continue
                        if gate.halted:  # the run failed, or take had enough: pull no further
                            break
                        n = 0
                        await gate.pause()
                        look = pace.turned() if pace is not None else min(every, FIRST_LOOK)
            else:  # AGEN: by time only (its own awaits may be all the turns the loop needs)
                try:
                    async for v in result:
                        emit(v)
                        total += 1
                        n += 1
                        if gate.blocked or n >= look:
                            turn = await turn_by_time(gate, pace, n)
                            if turn is None:
                                break
                            n, look, pace = turn
                finally:
                    # an abandoned generator (failure, cancellation) runs its cleanup now,
                    # before the run closes the nodes it may be using
                    await result.aclose()
        except BaseException:  # failing part-way: the failure settles the input itself
            if counts is not None:
                counts.fanout += total
            raise
        if counts is not None:  # beyond the one input they stand for (a flush's: none)
            counts.fanout += total - owned
        return True


async def turn_by_time(gate: Any, pace: Pace | None, n: int) -> Tuple[int, int, Pace] | None:
    """The turn-taking of a loop over an async iterator (deliver's ``async for``,
    :func:`deliver_through`), called once its gate is closed or its count ``n`` (items
    since its last turn) reached its next look: wait while the gate is closed, else ask
    the pace (made here at the first look: most results are short) and yield when a
    turn's time has passed. Its own awaits may be all the turns the loop needs, so it
    turns by time only (``BY_TIME``). Returns the loop's ``(n, look, pace)`` to go on
    with, or None when the gate is halted (pull no further)."""
    if gate.blocked:
        if gate.halted:
            return None
        await gate.wait()
        return 0, (pace.turned() if pace is not None else FIRST_LOOK), pace  # type: ignore[return-value]
    if pace is None:
        pace = Pace(BY_TIME, gate.beat)
    look = pace.look(n)
    if not look:
        await gate.pause()
        return 0, pace.turned(), pace
    return n, look, pace


async def deliver_through(agen: Any, amany: Callable[..., Any], gate: Any, counts: Any) -> None:
    """:func:`deliver` of an async generator ``agen`` (an async step's result) whose
    items go straight into a fused segment: its generated ``amany`` runs up to
    ``yield_every`` of them per call in one coroutine, as a hand-written ``async for``
    would, instead of one push per item. The rules are deliver's: the gate is looked at
    before each pull (paused while closed, stopped when halted), the generator is
    closed at the end, ``counts`` (the step's stats) gets ``out`` per call and the
    ledger's fan-out."""
    every = config.yield_every
    total = 0
    pace = Pace(BY_TIME, gate.beat)  # a turn by time only, as deliver's async for
    n, look = 0, pace.first
    try:
        try:
            while True:
                taken, ended = await amany(agen, gate, min(every, look - n))
                total += taken
                counts.out += taken
                if ended:
                    break
                n += taken
                if gate.blocked or n >= look:
                    turn = await turn_by_time(gate, pace, n)
                    if turn is None:
                        break
                    n, look, pace = turn
        finally:
            await agen.aclose()
    except BaseException as exc:  # failing part-way: the failure settles the input itself
        taken, at_pull = taken_in(exc, amany)
        counts.out += taken
        # an item cut on its way through the steps (a signal) was handed over, not given
        counts.fanout += total + taken - (not at_pull and taken > 0)
        raise
    counts.fanout += total - 1


__all__ = ["SINGLE", "VALUES", "blocked_tuple", "kind_of", "ONE", "MANY", "AWAIT", "AGEN", "ONE_AS_IS", "deliver", "turn_by_time",
           "deliver_through"]
