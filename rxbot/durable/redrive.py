"""Re-drive the dead letters: ``rxbot redrive SCRIPT`` / ``BotFrame.run(redrive=True)``.

Only the stored failed items run, each from the step where it failed, through the
current code and on to the end of its pipe; nothing before that step runs again (a
crawl fetches nothing). A step before the failing one that changed since does not
matter (the stored item is its output); the failing step and those after it are the
point. Items that now pass are marked done; an item failing again at the same step gets
a new letter with the next attempt number (the old one is marked retried); items derived
from it that fail further on get letters of their own.

Limits, said clearly when met: a letter of a step inside a route (Branch, Fork, ...)
or of a pipe's first step cannot be re-driven yet; a step that was removed or renamed
refuses. A redrive killed half-way re-drives its open letters again: its sinks are
at-least-once for the letters of that run (docs/when-items-fail.md).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple

from ..engine.hooks import RunHooks, RunOutcome
from ..walk import StepId
from .deadletters import Letter, LetterHooks, LetterStore, run_key_of, store_path

log = logging.getLogger("rxbot")


class RedriveRefused(ValueError):
    """These dead letters cannot be re-driven (a removed step, a nested step, ...)."""


@dataclass
class Group:
    """The open letters of one top-level step of one pipe."""

    pipe_index: int
    position: int  # 1-based top-level step
    step: str
    letters: List[Letter] = field(default_factory=list)


def plan(pipes: Sequence[Any], store: LetterStore) -> List[Group]:
    """What a redrive runs: the open letters by pipe and failing step, checked against
    the pipes as they are now."""
    groups: List[Group] = []
    for index, pipe in enumerate(pipes, start=1):
        where = StepId.root(f"P{index}", index)
        ids = {str(where.step(k + 1, step.label())): k + 1 for k, step in enumerate(pipe.steps)}
        by_step: Dict[str, Group] = {}
        for letter in store.letters(run_key_of(pipe, index)):
            group = by_step.get(letter.step)
            if group is None:
                position = ids.get(letter.step)
                if position is None:
                    if "/" in letter.step:
                        route = letter.step.split("/", 1)[0]
                        raise RedriveRefused(
                            f"{letter.step}: its dead letters (#{letter.id} ...) failed inside the route "
                            f"{route}; re-driving from a step inside a route is not supported yet. Run "
                            f"the pipe again, or list them with 'rxbot deadletters SCRIPT'")
                    now = ", ".join(ids)
                    raise RedriveRefused(
                        f"{letter.step}: this step is not in the pipe any more (removed or renamed); its dead "
                        f"letters cannot be re-driven. The pipe's steps now: {now}")
                if position == 1:
                    raise RedriveRefused(f"{letter.step}: the pipe's first step (its source) failed; run the "
                                         "pipe again instead of re-driving")
                group = by_step[letter.step] = Group(index, position, letter.step)
                groups.append(group)
            group.letters.append(letter)
    groups.sort(key=lambda g: (g.pipe_index, g.position))
    return groups


class RedriveHooks(LetterHooks):
    """One redrive round: the letters of one group fed into their step."""

    rebuilds = True

    def __init__(self, pipes: Sequence[Any], store: LetterStore, group: Group) -> None:
        super().__init__(pipes, store)
        self.group = group
        self.keys = {1: self.keys[group.pipe_index]}  # the pipe runs alone, as P1
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

    def step_name(self, path: Any) -> str:
        text = str(path)
        return f"P{self.group.pipe_index}{text[2:]}" if text.startswith("P1") else text

    def source(self, pipe: int) -> Optional[Tuple[int, Any]]:
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
            try:
                report = await run([pipes[group.pipe_index - 1]], hooks)
            finally:
                summary.steps[group.step] = {
                    "redriven": len(hooks.items), "failed_again": len(hooks.refailed),
                    "passed": len(hooks.items) - len(hooks.refailed), "skipped": len(hooks.skipped)}
    finally:
        store.close()
    if report is None:
        report = RunReport()
    report.redrive = summary.as_dict()  # type: ignore[attr-defined]
    return report


__all__ = ["redrive", "plan", "RedriveHooks", "RedriveRefused", "Group"]
