"""Per-step runtime record: resolved options, counters, and what to do on a failure.

One :class:`StepRuntime` exists per step of the tree per run; the run report is the
collection of their :class:`StepStats`.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

from ..backoff import backoff
from ..config import config
from ..errors import StepError, annotate, short_repr
from ..plan import counts_sync

log = logging.getLogger("rxbot")

RAISE, DROP, PIPEIN = "raise", "drop", "pipein"


@dataclass(slots=True)
class StepStats:
    """What happened to the items a step saw. Failures, drops and retries are always
    counted; ``inp``/``out``/``filtered`` of sync steps only when metrics are on (see
    ``config.metrics``).

    Slotted: its counters are added to per item on the hot paths (an async step's
    worker, a source), and on CPython 3.12+ an attribute that a class-level default
    shadows (what a plain dataclass field with a default is) is never specialized, so
    every ``stats.inp += 1`` took the generic lookup; a slot is read and written by the
    specialized ``LOAD_ATTR_SLOT``/``STORE_ATTR_SLOT``."""

    name: str
    inp: int = 0
    out: int = 0
    #: returned None: dropped by the user's own rule, not an error
    filtered: int = 0
    dropped: int = 0
    failed: int = 0
    retried: int = 0
    #: accepted but never finished because the run was cancelled or failed elsewhere
    #: (in flight or queued at an async step when the run stopped)
    cancelled: int = 0
    #: held by a node when the run stopped and finished by its close() without passing
    #: on (e.g. Insert rows committed at close after Ctrl-C/SIGTERM)
    closed: int = 0
    #: the ledger's fan-out (see :mod:`rxbot.engine.ledger`): items an input's iterable
    #: result gave beyond the one input (an empty result counts -1), plus items a
    #: node's flush gave with no input at all
    fanout: int = field(default=0, repr=False)
    #: inputs a holding node (a batching Insert) kept without passing anything on yet;
    #: they come out later inside another call's result (counted as its fan-out), or are
    #: settled at close
    held: int = field(default=0, repr=False)
    #: failures sent on downstream as the exception itself (pipein): counted in ``out`` too
    piped: int = field(default=0, repr=False)
    #: False for a sync step run inline without counting its items (policy raise and
    #: metrics off, see ``rxbot.plan.counts_sync``): its ``inp``/``out``/``filtered``
    #: are unknown, and reports show ``-`` / ``null`` for them, never 0
    counted: bool = field(default=True, repr=False)

    def as_dict(self) -> dict:
        return asdict(self)


def _short_text(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: the item a failing ``flush()`` is blamed on: no input of the step
AT_FLUSH = "<flush at end of input>"


def _held_change(rejected: list, item: Any) -> int:
    """How a failure standing for several items changes a holding node's ``held``: the
    rejected rows of *other* items were held and are settled now; the calling item,
    when its own row is not among them, is held (it passes on with a later result)."""
    own = any(bad is item for bad, _ in rejected)
    change = -(len(rejected) - own)
    if not own and not (isinstance(item, str) and item == AT_FLUSH):
        change += 1
    return change


def rejected_by(exc: BaseException, item: Any) -> list:
    """The (item, exception) pairs a failure rejected: ``exc.rejected`` when the exception
    stands for several items (:class:`rxbot.db.base.InsertError`), else ``item`` itself."""
    rejected = getattr(exc, "rejected", None)
    if isinstance(rejected, list) and rejected:
        return rejected
    return [(item, exc)]


class StepRuntime:
    __slots__ = ("label", "path", "policy", "retries", "timeout", "stats", "ctx", "concurrency", "describe",
                 "in_flight", "top", "in_blocked_join")

    def __init__(self, label: str, path: str, ctx: Any, *, on_error: str | None = None,
                 retries: int | None = None, timeout: float | None = None,
                 concurrency: int | None = None,
                 describe: Callable[[Any], str] | None = None) -> None:
        self.label = label
        self.describe = describe or (lambda item: short_repr(item, 200))
        self.path = path
        self.ctx = ctx
        self.policy = config.policy(on_error)
        self.retries = (retries if retries is not None else config.retry_attempts) if (
            self.policy == "retry" or retries is not None) else 0
        self.timeout = timeout
        self.concurrency = concurrency or config.default_concurrency
        self.stats = StepStats(path)
        #: items accepted by an async step or a source and not finished yet (for
        #: BotFrame.debug(); sync steps run inline and hold none)
        self.in_flight = 0
        #: (pipe, top-level step) this step belongs to, set when built with RunHooks
        self.top: tuple | None = None
        #: inside a BlockedJoin branch: a raise there is never deferred (a dropped item
        #: would give the tuple a hole)
        self.in_blocked_join = False

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter for the ``attempt``-th retry (1-based), the
        formula HttpLoader and Insert use too (:func:`rxbot.backoff.backoff`)."""
        return backoff(attempt, config.retry_backoff, config.retry_max_backoff, config.retry_jitter)

    def final(self, exc: BaseException, item: Any) -> tuple[str, Any]:
        """Decide the fate of an item whose step failed for good.

        Returns ``(RAISE, exc)`` (stop the run), ``(DROP, None)`` or ``(PIPEIN, [exc, ...])``:
        the original exception, annotated with the step and item (see :func:`annotate`),
        as databot piped it in. A failure that stands for several items (``exc.rejected``,
        e.g. the bad rows of an Insert batch) counts, dead-letters, logs and pipes in each
        of them, under its own error, not the calling item (which may well have been written).
        """
        if isinstance(exc, asyncio.CancelledError):
            return RAISE, exc
        rejected = rejected_by(exc, item)
        self.stats.failed += len(rejected)
        if len(rejected) > 1 or rejected[0][0] is not item:  # rows of other (held) items failed here
            self.stats.held += _held_change(rejected, item)
        elif isinstance(item, str) and item == AT_FLUSH:  # a failure of no input: the flush's own
            self.stats.fanout += 1
        policy = self.policy
        if policy == "retry":
            policy = config.policy(config.retry_final_policy)
            if policy == "retry":
                policy = "raise"
        shown = self.describe(item)
        if policy == "raise":
            error = annotate(exc, self.label, item, shown)
            deferrals = self.ctx.deferrals
            if deferrals is not None and deferrals.defer(self.top, error):
                return DROP, None
            return RAISE, error
        errors = []
        for bad, why in rejected:
            shown = self.describe(bad)
            self.ctx.dead_letter(self.letter(bad, why, shown))
            if policy == "ignore":
                self.stats.dropped += 1
                log.warning("rxbot: dropped item %s in step %r: %s: %s", shown,
                            self.label, type(why).__name__, _short_text(why))
            else:
                # databot sent the exception object itself downstream: isinstance() and
                # str() must hold there, so the step and item ride along as a note and
                # attributes, never a wrapper
                errors.append(annotate(why, self.label, bad, shown))
        if policy == "ignore":
            return DROP, None
        self.stats.piped += len(errors)
        return PIPEIN, errors

    def letter(self, item: Any, error: BaseException, shown: str) -> StepError:
        """The dead letter of ``item``: its step's label, and in ``.path`` the step's
        :class:`~rxbot.tree.walk.StepId` (durable dead letters and redrive find the step by it)."""
        letter = StepError(self.label, item, error, shown)
        letter.path = self.path  # type: ignore[attr-defined]
        return letter

    def settle_close(self, finished: int, rejected: list, reclaimed: int, discarded: int = 0) -> None:
        """Count what this step's node did at close with the items it held when the run
        stopped (see :meth:`rxbot.tree.node.Node.settled_at_close`): finished ones as
        ``closed``, rejected ones as ``failed`` and dead letters; ``reclaimed`` items had
        been counted ``cancelled`` and are counted here instead."""
        self.stats.closed += finished
        self.stats.failed += len(rejected)
        reclaimed = min(reclaimed, self.stats.cancelled)
        self.stats.cancelled -= reclaimed
        # the rest were held (returned None to the engine): no longer held now
        self.stats.held -= finished + len(rejected) - reclaimed
        # held rows a checkpointed node dropped uncommitted (redone on resume): cancelled
        self.stats.held -= discarded
        self.stats.cancelled += discarded
        for bad, why in rejected:
            self.ctx.dead_letter(self.letter(bad, why, self.describe(bad)))

    async def call_with_retry(self, fn: Callable[[Any], Any], item: Any, first_error: BaseException | None = None) -> Any:
        """Call ``fn(item)`` (awaiting a coroutine result) under this step's retry budget.

        ``first_error`` is a failure that already happened (a sync step failing inline);
        the remaining attempts then start after a backoff. Raises the last error.
        """
        attempt = 0 if first_error is None else 1
        error = first_error
        while True:
            if error is not None:
                # an error marked final (e.g. HttpLoader after its own retries) is not retried
                if attempt > self.retries or getattr(error, "retryable", True) is False:
                    raise error
                self.stats.retried += 1
                await asyncio.sleep(self.backoff(attempt))
            try:
                result = fn(item)
                if inspect.isawaitable(result):
                    if self.timeout is not None:
                        result = await asyncio.wait_for(result, self.timeout)
                    else:
                        result = await result
                return result
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
                attempt += 1


def counts_sync_steps(runtimes: Iterable["StepRuntime"]) -> bool:
    """Do sync steps run inline with these runtimes count their items? (See
    :func:`rxbot.plan.counts_sync`: the plan's answer, from the runtimes' policies.)"""
    return counts_sync(rt.policy for rt in runtimes)


__all__ = ["StepRuntime", "StepStats", "RAISE", "DROP", "PIPEIN", "AT_FLUSH", "rejected_by", "counts_sync_steps"]
