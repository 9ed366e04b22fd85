"""Step identity and the one walk over the step tree.

A :class:`StepId` names one step of one pipe by its position path — ``P1[3] Fork/2[1]
parse`` is pipe 1, step 3 (a Fork), its branch 2, step 1 — and carries that path as
data (``pipe``, ``positions``, ``labels``), so no consumer ever parses the text. It is a
``str`` too: the run report is keyed by it and ``report["P1[2] double"]`` keeps
working. The compiler assigns each step its id once; render, the run report, progress
and replay read the same ids (never rebuild or parse them).

:func:`walk` is the one traversal of the tree they share.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence, Tuple

from .flow import Route
from .node import Node
from .step import Step


class StepId(str):
    """The identity of a step (or, with an even number of positions, of a place that
    holds steps: a pipe's root or a route's branch)."""

    __slots__ = ("pipe", "pipe_index", "positions", "labels")

    pipe: str
    pipe_index: int
    #: step, branch, step, branch, ..., step (1-based); empty for a pipe's root
    positions: Tuple[int, ...]
    #: the label of every step on the path (one per step position)
    labels: Tuple[str, ...]

    def __new__(cls, pipe: str, positions: Tuple[int, ...] = (), labels: Tuple[str, ...] = (),
                pipe_index: int = 0) -> "StepId":
        text = pipe
        for k, pos in enumerate(positions):
            text += f"[{pos}] {labels[k // 2]}" if k % 2 == 0 else f"/{pos}"
        self = super().__new__(cls, text)
        self.pipe = pipe
        self.pipe_index = pipe_index
        self.positions = tuple(positions)
        self.labels = tuple(labels)
        return self

    @classmethod
    def root(cls, pipe: str, pipe_index: int = 0) -> "StepId":
        return cls(pipe, (), (), pipe_index)

    @classmethod
    def of(cls, where: Any) -> "StepId":
        """``where`` as a StepId; a plain string is a pipe's root named by it."""
        return where if isinstance(where, StepId) else cls.root(str(where))

    @classmethod
    def _extended(cls, parent: "StepId", text: str, positions: Tuple[int, ...],
                  labels: Tuple[str, ...]) -> "StepId":
        """A child of ``parent`` whose text is ``parent``'s plus ``text``: what
        :meth:`__new__` would spell, without spelling every level again (ids are made
        several times a step per run, by the walk, the plan and the compiler)."""
        self = str.__new__(cls, parent + text)
        self.pipe = parent.pipe
        self.pipe_index = parent.pipe_index
        self.positions = positions
        self.labels = labels
        return self

    def step(self, position: int, label: str) -> "StepId":
        """The step at 1-based ``position`` of the place this id names."""
        assert len(self.positions) % 2 == 0, "a step holds branches, not steps"
        return StepId._extended(self, f"[{position}] {label}", self.positions + (position,), self.labels + (label,))

    def branch(self, index: int) -> "StepId":
        """The 1-based branch ``index`` of the route this id names."""
        assert len(self.positions) % 2 == 1, "only a step has branches"
        return StepId._extended(self, f"/{index}", self.positions + (index,), self.labels)

    @property
    def top(self) -> int:
        """The top-level step position (0 for a pipe's root)."""
        return self.positions[0] if self.positions else 0

    @property
    def label(self) -> str:
        return self.labels[-1] if self.labels else self.pipe

    @property
    def depth(self) -> int:
        """How many routes this step is nested in."""
        return max(0, (len(self.positions) - 1) // 2)

    def order(self) -> Tuple[int, ...]:
        """A sort key: pipe, then the positions of every level (numbers, not text)."""
        return (self.pipe_index,) + self.positions

    def is_within(self, other: "StepId") -> bool:
        """True if this step is ``other`` or nested inside it (same pipe)."""
        return self.pipe == other.pipe and self.positions[:len(other.positions)] == other.positions

    def __reduce__(self):  # pickles (boost=process) as the same structured id
        return (StepId, (self.pipe, self.positions, self.labels, self.pipe_index))


def root_of(pipe: Any, index: int) -> StepId:
    """The root id of ``pipe`` run as the ``index``-th pipe (``P{index}``), or the root
    the pipe carries as ``step_root``: a redrive that resumes inside a route runs a pipe
    of its own whose root names each step by its id in the original pipe
    (:class:`rxbot.durable.redrive.Resumption`), so the report, the ledger and the live
    view show the ids the user knows. Everything that numbers a run's steps asks here."""
    own = getattr(pipe, "step_root", None)
    return own if own is not None else StepId.root(f"P{index}", index)


def unwrap(step: Any) -> Any:
    """What a tree element calls per item: the function or Node inside a ``Step``."""
    return step.fn if isinstance(step, Step) else step


def walk(steps: Sequence[Any], where: Any = "") -> Iterator[Tuple[StepId, Any]]:
    """Every element of a step tree with its id, depth first, routes before their
    branches. Iterative, so routes nested thousands deep walk fine."""
    todo = [(StepId.of(where), iter(enumerate(steps)))]
    while todo:
        place, rest = todo[-1]
        for k, step in rest:
            sid = place.step(k + 1, step.label())
            yield sid, step
            if isinstance(step, Route):
                for b in range(len(step.branches) - 1, -1, -1):
                    todo.append((sid.branch(b + 1), iter(enumerate(step.branches[b]))))
                break
        else:
            todo.pop()


def elements(steps: Sequence[Any]) -> Iterator[Tuple[int, Any]]:
    """Every element of a step tree in :func:`walk`'s order with how many routes it is
    nested in (its id's ``depth``), without ids: for what needs only the elements or
    their depth (no id, no label is made)."""
    todo = [(0, iter(steps))]
    while todo:
        depth, rest = todo[-1]
        for step in rest:
            yield depth, step
            if isinstance(step, Route):
                todo.extend((depth + 1, iter(branch)) for branch in reversed(step.branches))
                break
        else:
            todo.pop()


def nodes_in(steps: Sequence[Any]) -> list:
    """Every distinct Node of a step tree (one init/close each, however often used)."""
    seen: dict = {}
    for _, step in elements(steps):
        node = unwrap(step)
        if isinstance(node, Node):
            seen.setdefault(id(node), node)
    return list(seen.values())


__all__ = ["StepId", "root_of", "walk", "elements", "unwrap", "nodes_in"]
