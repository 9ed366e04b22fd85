"""The checked ledger: every item a step accepted is accounted for, or the run fails.

For each step whose counts carry that promise::

    in + fan-out  =  (out - piped) + filtered + failed + held + closed + cancelled + in flight

* ``in``: inputs the step accepted; ``out``: items it sent on (``piped``: failures sent
  on as the exception itself under ``pipein``, counted in ``out`` too);
* ``fan-out``: what the step's own iterable results gave beyond their one input (a
  list of 3 for one input: +2; an empty one: -1; a node's flush, which belongs to no
  input: +n). It is counted where a result is spread, never derived from the other
  numbers, so a lost or doubled item shows;
* ``filtered``: returned None (the user's own rule); ``failed``: failures (under
  ``ignore`` they are the dropped, under ``ignore``/``retry``/``pipein`` each is a dead
  letter); ``held``: kept by a holding node (a batching Insert) and not settled yet;
  ``closed``: settled by the node's ``close()`` after a stop; ``cancelled``: abandoned
  by a stopped run; ``in flight``: still running (0 once a run has ended).

The steps that pass items on one by one are checked: functions, Nodes, constants,
Filters, Loops and generator steps. Routes (their sub-steps are checked), Timers, Rx
operators and sources that are not steps of the tree (replay's saved items) have no such
identity: their line is ``None`` ("not counted"). A sync step that ran inline without
counting (``config.metrics`` off and nothing watching) has no counts: ``None`` too.

:func:`check` runs at the end of every run (also after Ctrl-C/SIGTERM and after a
failure); a line that does not balance is a bug in rxbot, and the run fails with
:class:`LedgerError` naming the step and the numbers.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, Optional, Sequence

from ..tree.flow import Route
from ..tree.node import Timer
from ..tree.step import RxOp
from ..tree.walk import StepId, unwrap, walk
from .policy import StepRuntime

log = logging.getLogger("rxbot")


class LedgerError(AssertionError):
    """A step's counts do not balance: an item was lost or counted twice (an rxbot bug)."""

    def __init__(self, lines: Sequence["LedgerLine"]) -> None:
        self.lines = list(lines)
        shown = "; ".join(line.explain() for line in self.lines)
        super().__init__(f"rxbot: the ledger does not balance (an rxbot bug, please report it): {shown}")


@dataclass(frozen=True)
class LedgerLine:
    """One step's ledger (see the module's docstring for the equation)."""

    step: str
    inp: int
    fanout: int
    out: int
    piped: int
    filtered: int
    failed: int
    dropped: int
    dead_lettered: int
    held: int
    closed: int
    cancelled: int
    in_flight: int

    @property
    def accounted(self) -> int:
        """Where the items went: the right-hand side of the equation."""
        return (self.out - self.piped + self.filtered + self.failed + self.held + self.closed
                + self.cancelled + self.in_flight)

    @property
    def balanced(self) -> bool:
        return self.inp + self.fanout == self.accounted

    def explain(self) -> str:
        return (f"step {self.step}: in {self.inp} + fan-out {self.fanout} = {self.inp + self.fanout}, "
                f"but out {self.out} (piped {self.piped}) + filtered {self.filtered} + failed {self.failed} "
                f"+ held {self.held} + closed {self.closed} + cancelled {self.cancelled} "
                f"+ in flight {self.in_flight} = {self.accounted}")

    def as_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["balanced"] = self.balanced
        return data


def conserves(step: Any) -> bool:
    """Does this tree element pass items on one input at a time (so its counts balance)?"""
    if isinstance(step, Route):
        return step.kind == "filter"  # a Filter passes or filters each item; other routes share
    if isinstance(step, RxOp):
        return False
    return not isinstance(unwrap(step), Timer)


def ledger_lines(runtimes: Dict[str, StepRuntime], pipes: Iterable[Sequence[Any]],
                 dead_letters: Iterable[Any] = (), roots: Optional[Sequence[StepId]] = None
                 ) -> Dict[str, Optional[LedgerLine]]:
    """Every step's ledger line (None: not counted), keyed by the step's id. ``pipes``:
    each pipe's steps, numbered from 1 as the run numbers them; ``roots``: each pipe's
    root id when it is not ``P{n}`` (:func:`rxbot.tree.walk.root_of`: a redrive inside a
    route names its steps by their original ids), else None."""
    lettered: Dict[str, int] = {}
    for letter in dead_letters:
        lettered[str(letter.step)] = lettered.get(str(letter.step), 0) + 1
    kinds: Dict[str, bool] = {}
    for index, steps in enumerate(pipes, start=1):
        root = roots[index - 1] if roots is not None else StepId.root(f"P{index}", index)
        for sid, step in walk(steps, root):
            kinds[sid] = conserves(step)
    lines: Dict[str, Optional[LedgerLine]] = {}
    for path, rt in runtimes.items():
        s = rt.stats
        if not isinstance(path, StepId) or not kinds.get(path, False) or _uncounted(rt):
            lines[path] = None
            continue
        lines[path] = LedgerLine(str(path), s.inp, s.fanout, s.out, s.piped, s.filtered, s.failed, s.dropped,
                                 lettered.get(rt.label, 0), s.held, s.closed, s.cancelled, rt.in_flight)
    return lines


def _uncounted(rt: StepRuntime) -> bool:
    """A sync step that ran inline without counting has an ``in`` of 0 while items went
    through it (its out, filtered, failures or fan-out are not 0)."""
    s = rt.stats
    if not s.counted:  # said so where it ran (rxbot.plan.counts_sync)
        return True
    return s.inp == 0 and bool(s.out or s.filtered or s.failed or s.fanout or s.held or s.closed or s.cancelled)


def check(runtimes: Dict[str, StepRuntime], pipes: Iterable[Sequence[Any]],
          dead_letters: Iterable[Any] = (), roots: Optional[Sequence[StepId]] = None
          ) -> Dict[str, Optional[LedgerLine]]:
    """The ledger of a finished run; raises :class:`LedgerError` naming every step whose
    line does not balance."""
    lines = ledger_lines(runtimes, pipes, dead_letters, roots)
    wrong = [line for line in lines.values() if line is not None and not line.balanced]
    if wrong:
        raise LedgerError(wrong)
    return lines


def settle_ledger(ctx: Any, pipes: Sequence[Sequence[Any]], raised: Optional[BaseException],
                  roots: Optional[Sequence[StepId]] = None) -> Optional[LedgerError]:
    """At the end of a run (``ctx``'s tasks ended, nodes closed): put the ledger in the
    report and check it. Returns the :class:`LedgerError` the run must raise (it ended
    well otherwise), or None; when the run ends with an error of its own (a step's
    failure, Ctrl-C/SIGTERM) a mismatch is logged and noted on that error, which stays
    the run's outcome."""
    report = ctx.report
    lines = ledger_lines(ctx.runtimes, pipes, report.dead_letters, roots)
    report.ledger = lines
    wrong = [line for line in lines.values() if line is not None and not line.balanced]
    if not wrong:
        return None
    error = LedgerError(wrong)
    outcome = ctx.error or raised
    if outcome is None:
        report.error = error
        return error
    log.error("%s", error)
    if hasattr(outcome, "add_note"):
        outcome.add_note(str(error))
    return None


__all__ = ["LedgerLine", "LedgerError", "ledger_lines", "check", "conserves", "settle_ledger"]
