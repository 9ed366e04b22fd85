"""Re-drive the dead letters: ``rxbot redrive SCRIPT`` / ``BotFrame.run(redrive=True)``.

Only the stored failed items run, each from the step where it failed, through the
current code and on to the end of its pipe; nothing before that step runs again (a
crawl fetches nothing). A step before the failing one that changed since does not
matter (the stored item is its output); the failing step and those after it are the
point. Items that now pass are marked done; an item failing again at the same step gets
a new letter with the next attempt number (the old one is marked retried); items derived
from it that fail further on get letters of their own.

A letter of a step inside a route resumes *within its branch*: from the failing step
to the branch's end, and then on as that branch's output goes in a normal run
(:func:`continuation`): back onto the enclosing line after the route when the route
joins (``Return``, ``Join``, ``Route(join=True)``), nowhere when it does not (the side
flow of a ``Branch`` or ``Fork`` ends there), level by level out of nested routes. The
route's own test is not asked again (the item matched it when it failed), and the other
branches do not run (they had the item already). That run is one pipe made of those
steps (:class:`Resumption`) whose root names every step by its id in the original
pipe (:func:`rxbot.tree.walk.root_of`): letters failing again keep their step and attempt,
and the round's report (its steps, text and JSON), its ledger and the live view say
``P1[4] Join/1[2] j2`` as the first run did, never the resumption's own numbering.

Refused, said clearly: a letter whose way on reaches a ``BlockedJoin``'s tuple (the
tuple of that input was emitted already, with ``None`` for the failed branch: a second
one would be a duplicate and this branch's result alone cannot rebuild it); a letter of a
pipe's first step (its source); a step that was removed or renamed (its id, route and
branch path included, is not in the pipe now). A redrive killed half-way re-drives its
open letters again: its sinks are at-least-once for the letters of that run
(docs/when-items-fail.md).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple, cast

from ..engine.hooks import RunHooks, RunOutcome
from ..tree.walk import StepId
from .deadletters import Letter, LetterHooks, LetterStore, run_key_of, store_path

log = logging.getLogger("rxbot")


class RedriveRefused(ValueError):
    """These dead letters cannot be re-driven (a removed step, a BlockedJoin's branch, ...)."""


@dataclass
class Group:
    """The open letters of one failing step of one pipe, and how they run again."""

    pipe_index: int
    position: int  # 1-based top-level step (for a step inside a route: its route's)
    step: str
    letters: List[Letter] = field(default_factory=list)
    #: None for a step on the main line (the pipe itself runs, its first position-1
    #: steps skipped); for a step inside a route, the steps it goes on through
    resumption: Optional["Resumption"] = None


@dataclass
class Resumption:
    """The way on of an item that failed inside a route: the failing step, the rest of
    its branch, then (level by level) the steps after each enclosing route that joins.
    ``ids[k]`` is the original id of ``steps[k]``."""

    steps: List[Any]
    ids: List[StepId]

    def pipe(self, original: Any) -> Any:
        """A pipe of these steps behind a stand-in first step (the run's source is the
        stored items), taken out of the run registry: it runs only in this redrive. Its
        ``step_root`` gives each step its original id (steps nested in them follow)."""
        from ..tree.flow import Pipe

        pipe = Pipe(_stored, *self.steps, name=original.name)
        pipe._adopt()
        pipe.step_root = _ResumptionRoot(self)  # type: ignore[attr-defined]
        return pipe

    @property
    def stand_in(self) -> StepId:
        """The id of the stand-in first step: ``[0] dead letters`` in the failing step's
        place (``P1[4] Join/1[0] dead letters``), before its first step, unlike any real one."""
        head = self.ids[0]
        return StepId(head.pipe, head.positions[:-1] + (0,), head.labels[:-1] + ("dead letters",), head.pipe_index)


class _ResumptionRoot(StepId):
    """The root of a resumption pipe: step ``k`` of it is ``ids[k - 2]`` (step 1 the
    stand-in), so everything the run builds, counts and shows from this root carries the
    original ids; a route among those steps gives its branches' steps their original
    ids too (``StepId.branch``/``step`` of an original id)."""

    def __new__(cls, resumption: Resumption) -> "_ResumptionRoot":
        head = resumption.ids[0]
        self = cast("_ResumptionRoot", super().__new__(cls, head.pipe, (), (), head.pipe_index))
        self.resumption = resumption  # type: ignore[attr-defined]
        return self

    def step(self, position: int, label: str) -> StepId:
        resumption: Resumption = self.resumption  # type: ignore[attr-defined]
        return resumption.stand_in if position == 1 else resumption.ids[position - 2]


class _Letters:
    """The stored items of a resumption, fed into its first step under the stand-in's
    id (its report line then says ``P1[4] Join/1[0] dead letters: out=N``, in the
    failing step's place, not ``P1 replayed``)."""

    def __init__(self, items: List[Any], source_step: StepId) -> None:
        self.items = items
        self.source_step = source_step

    async def feed(self, ctx: Any, emit: Callable[[Any], None], gate: Any, stats: Any) -> None:
        from ..engine.operators import iterate

        await iterate(self.items, emit, gate, stats)


def _stored(item: Any) -> Any:
    """The stand-in first step of a resumption pipe; never run (the stored items replace it)."""
    return item


def continuation(pipe: Any, where: StepId) -> Resumption:
    """The steps an item that failed at ``where`` (a step inside a route) goes on
    through, as a normal run would take its branch's output (see the module's doc).
    Raises :class:`RedriveRefused` if that way reaches a BlockedJoin's tuple."""
    positions = where.positions
    containers: List[Tuple[StepId, List[Any]]] = []  # (place id, its steps), outermost first
    routes: List[Tuple[StepId, Any]] = []
    place, steps = StepId.root(where.pipe, where.pipe_index), list(pipe.steps)
    for level in range(0, len(positions) - 1, 2):
        containers.append((place, steps))
        route = steps[positions[level] - 1]
        rid = place.step(positions[level], route.label())
        routes.append((rid, route))
        place, steps = rid.branch(positions[level + 1]), list(route.branches[positions[level + 1] - 1])
    out: List[Any] = []
    ids: List[StepId] = []

    def take(at: StepId, from_steps: List[Any], start: int) -> None:
        for k in range(start, len(from_steps)):
            out.append(from_steps[k])
            ids.append(at.step(k + 1, from_steps[k].label()))

    take(place, steps, positions[-1] - 1)
    for level in range(len(routes) - 1, -1, -1):
        rid, route = routes[level]
        if route.kind == "blockedjoin":
            raise RedriveRefused(
                f"{where}: its dead letters failed inside the BlockedJoin {rid}, whose output is one tuple of all "
                f"its branches' results per input. That tuple was emitted already, with None in the place of this "
                f"branch; a re-driven result of this branch alone cannot rebuild it, and re-running the BlockedJoin "
                f"would emit a second tuple downstream. Run the pipe again for those items instead")
        if not route.join:  # a side flow: its output is discarded at its end
            break
        outer, outer_steps = containers[level]
        take(outer, outer_steps, positions[2 * level])
    return Resumption(out, ids)


def plan(pipes: Sequence[Any], store: LetterStore) -> List[Group]:
    """What a redrive runs: the open letters by pipe and failing step, checked against
    the pipes as they are now (every refusal before anything runs)."""
    from ..tree.walk import walk

    groups: List[Group] = []
    for index, pipe in enumerate(pipes, start=1):
        where = StepId.root(f"P{index}", index)
        ids = {str(sid): sid for sid, _ in walk(pipe.steps, where)}
        by_step: Dict[str, Group] = {}
        for letter in store.letters(run_key_of(pipe, index)):
            group = by_step.get(letter.step)
            if group is None:
                sid = ids.get(letter.step)
                if sid is None:
                    now = ", ".join(list(ids)[:40]) + (", ..." if len(ids) > 40 else "")
                    raise RedriveRefused(
                        f"{letter.step}: this step is not in the pipe any more (removed or renamed); its dead "
                        f"letters (#{letter.id} ...) cannot be re-driven. The pipe's steps now: {now}")
                if sid.positions == (1,):
                    raise RedriveRefused(f"{letter.step}: the pipe's first step (its source) failed; run the "
                                         "pipe again instead of re-driving")
                group = by_step[letter.step] = Group(index, sid.top, letter.step)
                if sid.depth:
                    group.resumption = continuation(pipe, sid)
                groups.append(group)
            group.letters.append(letter)
    groups.sort(key=lambda g: (g.pipe_index, _order(g)))
    return groups


def _order(group: Group) -> Tuple[int, ...]:
    """Groups run in pipe order, outer steps first, then by the step's place."""
    first = group.resumption.ids[0].positions if group.resumption is not None else (group.position,)
    return first


class RedriveHooks(LetterHooks):
    """One redrive round: the letters of one group fed into their step."""

    rebuilds = True

    def __init__(self, pipes: Sequence[Any], store: LetterStore, group: Group) -> None:
        super().__init__(pipes, store)
        self.group = group
        # the pipe runs alone, but named as in the script (P2 stays P2): see pipe()
        self.keys = {group.pipe_index: self.keys[group.pipe_index]}
        self.items: List[Any] = []
        self.skipped: List[Letter] = []
        for letter in group.letters:
            try:
                item = letter.decoded()
            except Exception as exc:
                log.warning("rxbot: dead letter #%d (%s) cannot be re-driven: %s", letter.id, letter.step, exc)
                self.skipped.append(letter)
                continue
            self.items.append(item)
            self.origin[id(item)] = letter

    def pipe(self, pipes: Sequence[Any]) -> Any:
        """What this round runs: the pipe itself, or the resumption of a step in a route.
        Either carries a ``step_root`` naming its steps as in the script's run (the round
        runs one pipe alone, which would otherwise be numbered P1): the pipe itself until
        :func:`redrive` takes it off after the round."""
        index = self.group.pipe_index
        original = pipes[index - 1]
        resumption = self.group.resumption
        if resumption is not None:
            return resumption.pipe(original)
        original.step_root = StepId.root(f"P{index}", index)
        return original

    def source(self, pipe: int) -> Optional[Tuple[int, Any]]:
        if self.group.resumption is not None:
            return 1, _Letters(self.items, self.group.resumption.stand_in)
        return self.group.position - 1, self.items

    def finished(self, outcome: RunOutcome) -> None:
        """Mark the letters: failed again -> retried (their new letter holds the next
        attempt), the others done, if the run ended well; a failed run marks nothing."""
        if outcome.error is None and self.store is not None:
            ran = [letter for letter in self.group.letters if letter not in self.skipped]
            self.store.mark([letter.id for letter in ran if letter.id in self.refailed], "retried")
            self.store.mark([letter.id for letter in ran if letter.id not in self.refailed], "done")
        # the store stays open for the next round (closed by redrive())


@dataclass
class RedriveSummary:
    """What a redrive did, by step: letters re-driven, passed, failed again, skipped."""

    steps: Dict[str, Dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Dict[str, int]]:
        return self.steps


async def redrive(pipes: Sequence[Any], run: Callable[[Sequence[Any], RunHooks], Awaitable[Any]]) -> Any:
    """Re-drive every open dead letter of ``pipes`` (one run per failing step, in pipe
    and step order); returns the last run's report with ``report.redrive`` set. Pipes
    without open letters do not run."""
    from ..engine import RunReport

    path = store_path()
    if not path.exists():
        log.warning("rxbot: no dead letters to re-drive (looked in %s)", path)
        empty = RunReport()
        empty.redrive = {}  # type: ignore[attr-defined]
        return empty
    store = LetterStore(path)
    summary = RedriveSummary()
    report: Any = None
    try:
        groups = plan(pipes, store)
        if not groups:
            log.warning("rxbot: no open dead letters to re-drive in %s", path)
        for group in groups:
            hooks = RedriveHooks(pipes, store, group)
            ran = hooks.pipe(pipes)
            try:
                report = await run([ran], hooks)
            finally:
                # the pipe's last run is this round (a resumption's own pipe ran it): its
                # report is BotFrame.last_report, what `rxbot redrive --report` shows
                pipes[group.pipe_index - 1].report = ran.report
                if ran is pipes[group.pipe_index - 1]:  # the script's own pipe: as it was
                    del ran.step_root
                summary.steps[group.step] = {
                    "redriven": len(hooks.items), "failed_again": len(hooks.refailed),
                    "passed": len(hooks.items) - len(hooks.refailed), "skipped": len(hooks.skipped)}
    finally:
        store.close()
    if report is None:
        report = RunReport()
    report.redrive = summary.as_dict()  # type: ignore[attr-defined]
    return report


__all__ = ["redrive", "plan", "continuation", "RedriveHooks", "RedriveRefused", "Group", "Resumption"]
