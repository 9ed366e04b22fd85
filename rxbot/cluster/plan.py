"""Decide, before anything starts, how each pipe is split into shards — or refuse it.

Every shard runs the whole pipe; only the pipe's *source* (its first step) differs. A
finite first step (a Loop over a list, range, tuple, dict or set, a list given as a
step, a constant) is split by item index: shard ``k`` of ``n`` gets the items ``i`` with
``i % n == k``. A range or list is sliced (``range(10**9)[k::n]`` is another range:
nothing is materialised); other finite collections are listed once. A first step that
reads :mod:`rxbot.shard` and is marked ``@shard.aware`` runs as it is in every shard.
Anything else is refused with the step named and what to do instead.

The pipes are pickled once (cloudpickle, so functions of ``__main__`` and lambdas go by
value) with each split source replaced by a *persistent id*; a shard's own share of each
source is pickled separately and swapped in when the worker unpickles. So a list source
is shipped once in total, split among the shards, not once per shard.
"""
from __future__ import annotations

import collections.abc
import copy
import io
import math
import pickle
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import cloudpickle

from ..tree.flow import Pipe, Route
from ..tree.node import Loop, Node, Timer
from ..plan import PipePlan, plan_of
from ..shard import is_shard_aware
from ..tree.step import Const, RxOp, Step

#: the persistent-id tag of a split source inside the pickled pipes
SOURCE_TAG = "rxbot-shard-source"

USE_INSTEAD = ("start the pipe with a list, range, tuple or Loop over a finite collection "
               "(the run splits it by item index), or with a step that selects its own share "
               "by reading rxbot.shard and is marked @rxbot.shard.aware (see docs/scaling.md)")


class ShardingError(ValueError):
    """A pipe cannot run sharded (raised before any shard starts)."""


@dataclass
class SplitSource:
    """One pipe's first step and the finite items it would emit."""

    original: Any  # the object replaced in the pickled tree (a Loop node or a Const)
    items: Any  # a sliceable sequence (range, list, tuple)
    label: str
    where: str = ""  # the step as error messages name it ("P1[1] Loop")

    def check_items(self, part: Any, index: int, count: int) -> None:
        """Raise a :class:`ShardingError` naming the first item of ``part`` (every
        ``count``-th item from ``index``) that does not pickle."""
        from ..errors import short_repr

        for position, item in enumerate(part):
            try:
                cloudpickle.dumps(item)
            except Exception as exc:
                raise ShardingError(
                    f"step {self.where!r}: source item {index + position * count} "
                    f"({short_repr(item)}) cannot be sent to the Dask workers: pickling it failed: "
                    f"{type(exc).__name__}: {exc}. A sharded run ships the source's items to the "
                    f"workers: give it plain data and open connections, files or locks in a step "
                    f"or node init()") from None

    def share(self, index: int, count: int) -> Loop:
        """The source of shard ``index``: a Loop over every ``count``-th item from
        ``index``, named like the original so the shards' reports line up."""
        part = _every(self.items, index, count)
        if isinstance(self.original, Loop):
            loop = copy.copy(self.original)  # keeps its class and options; not yet inited
            loop._refs, loop._inited = 0, False
            loop.iterable = part
            loop.name = self.label
            return loop
        loop = Loop(part)
        loop.name = self.label
        return loop


@dataclass
class ShardPlan:
    """The pipes to ship and, per pipe, its split source (None: the source shards itself)."""

    pipes: List[Pipe]
    sources: List[SplitSource | None] = field(default_factory=list)
    #: the pipes pickled once, split sources left out (see :func:`load_pipes`)
    blob: bytes = b""

    def pickled_share(self, index: int, count: int) -> bytes:
        """Shard ``index``'s sources, in the order of their persistent ids; a
        :class:`ShardingError` naming the step and the first item that cannot go."""
        shares = [None if s is None else s.share(index, count) for s in self.sources]
        try:
            return cloudpickle.dumps(shares)
        except Exception:
            for source in self.sources:
                if source is not None:
                    source.check_items(_every(source.items, index, count), index, count)
            raise

    def check_items(self) -> None:
        """Every source item can be sent to the workers (checked before connecting when
        the number of shards is not known yet): a :class:`ShardingError` otherwise."""
        for source in self.sources:
            if source is not None and not isinstance(source.items, range):
                try:
                    cloudpickle.dumps(source.items)
                except Exception:
                    source.check_items(source.items, 0, 1)
                    raise

    def _replaced(self) -> Dict[int, int]:
        return {id(s.original): i for i, s in enumerate(self.sources) if s is not None}


def plan(pipes: Sequence[Pipe]) -> ShardPlan:
    """Check every pipe and find its source split; raise :class:`ShardingError` naming
    the step that cannot run sharded."""
    from ..config import config

    if getattr(config, "replay_mode", False):
        raise ShardingError(
            "a sharded run cannot use replay mode: each shard would keep its own cache on its "
            "own worker, and a re-run may give a shard a different share. Turn replay off "
            "(config.replay_mode = False, no --replay) for the sharded run, or debug the pipe "
            "with replay in a local run first")
    result = ShardPlan(list(pipes))
    lowered = [plan_of(pipe, i + 1) for i, pipe in enumerate(pipes)]
    for pipe_plan in lowered:
        first, step = pipe_plan.steps[0]  # the pipe's source: its first step
        where = str(first)
        source = _split(step, where)
        if source is not None:
            source.where = where
        result.sources.append(source)
    for where, step in _leaves(lowered):
        _check_boost(step, where)
    replaced = result._replaced()
    try:
        result.blob = _dumps(result.pipes, replaced)
    except Exception as exc:
        for where, step in _leaves(lowered):  # name the innermost step that cannot go
            _check_picklable(step, where, replaced)
        raise ShardingError(
            f"the pipes cannot be sent to the Dask workers: pickling them failed: "
            f"{type(exc).__name__}: {exc}") from exc
    return result


def load_pipes(pipes_blob: bytes, share_blob: bytes) -> List[Pipe]:
    """On a worker: the pipes with this shard's sources in place of the split ones."""
    shares = pickle.loads(share_blob)

    class _Loader(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> Any:
            tag, index = pid
            if tag != SOURCE_TAG:
                raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
            return shares[index]

    return _Loader(io.BytesIO(pipes_blob)).load()


# -- sources -------------------------------------------------------------------------
def _split(step: Any, where: str) -> SplitSource | None:
    node = step.fn if isinstance(step, Step) else step
    if is_shard_aware(node) or is_shard_aware(type(node)):
        return None
    if isinstance(node, Timer):
        raise ShardingError(
            f"step {where!r}: a Timer cannot be sharded: its ticks are not a finite list "
            f"to split between shards (each shard would tick on its own). Run a Timer-driven "
            f"pipe locally, or {USE_INSTEAD}")
    if isinstance(node, Loop):
        return SplitSource(node, _finite(node.iterable, where), node.label())
    if isinstance(step, Const):
        from ..engine.results import MANY, ONE, kind_of

        kind = kind_of(step.value)
        if kind == ONE:
            return SplitSource(step, [step.value], step.label())
        if kind == MANY:
            return SplitSource(step, _finite(step.value, where), step.label())
    if isinstance(step, Route):
        what = f"a {type(step).__name__} route"
    elif isinstance(step, RxOp):
        what = "a raw Rx operator"
    elif isinstance(node, Node):
        what = f"the node {type(node).__name__}"
    else:
        what = "a function"
    raise ShardingError(
        f"step {where!r}: {what} as the first step cannot be split by the run: it would run "
        f"once in every shard and each shard would produce every item. Either {USE_INSTEAD}")


def _finite(iterable: Any, where: str) -> Any:
    if isinstance(iterable, (range, list, tuple)):
        return iterable
    if isinstance(iterable, collections.abc.Iterator):
        raise ShardingError(
            f"step {where!r}: a Loop over a {type(iterable).__name__} (an iterator or generator) "
            f"cannot be sharded: it can be read only once, in one process, and its length is "
            f"unknown. Pass a list or range instead (list(...) if it is small), or {USE_INSTEAD}")
    if isinstance(iterable, collections.abc.Sequence):
        return iterable
    if isinstance(iterable, (collections.abc.Collection, collections.abc.Iterable)):
        return list(iterable)  # a dict (its keys), a set, a view: finite, listed once
    raise ShardingError(f"step {where!r}: cannot list the items of {type(iterable).__name__}; {USE_INSTEAD}")


def _every(items: Any, index: int, count: int) -> Any:
    """Items ``index, index + count, ...`` — a slice when the type supports it (a range
    slice is a range: nothing is materialised)."""
    try:
        return items[index::count]
    except (TypeError, KeyError):
        return [items[i] for i in range(index, len(items), count)]


# -- checks --------------------------------------------------------------------------
def _leaves(plans: Sequence[PipePlan]) -> Iterator[Tuple[str, Any]]:
    """Every step of the pipes' plans with the id the run report uses for it, in flow
    order with routes after their steps (so a failure names the innermost step)."""
    for pipe_plan in plans:
        for where, step in sorted(pipe_plan.steps, key=lambda pair: (*pair[0].positions, math.inf)):
            yield str(where), step


def _check_boost(step: Any, where: str) -> None:
    if isinstance(step, Step):
        kind = step.option("boost")
    else:
        kind = getattr(step, "boost_kind", None) if isinstance(step, Node) else None
    if kind in ("process", "cluster"):
        raise ShardingError(
            f"step {where!r}: boost={kind!r} cannot run inside a shard: a shard already runs in "
            f"a Dask worker process (which may not start processes of its own, nor a cluster). "
            f"Use boost='thread' or no boost there; more shards give the run more processes")


def _check_picklable(obj: Any, where: str, replaced: Dict[int, int]) -> None:
    try:
        _dumps(obj, replaced)
    except Exception as exc:
        raise ShardingError(
            f"step {where!r} cannot be sent to the Dask workers: pickling it failed: "
            f"{type(exc).__name__}: {exc}. A sharded run ships the whole pipe to every worker; "
            f"a node must open its connections and files in init(), which runs on the worker, "
            f"not in __init__") from exc


class _Pickler(cloudpickle.CloudPickler):
    def __init__(self, file: Any, replaced: Dict[int, int]) -> None:
        super().__init__(file)
        self.replaced = replaced

    def persistent_id(self, obj: Any) -> Any:
        index = self.replaced.get(id(obj))
        return None if index is None else (SOURCE_TAG, index)


def _dumps(obj: Any, replaced: Dict[int, int]) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, replaced).dump(obj)
    return buffer.getvalue()


__all__ = ["plan", "load_pipes", "ShardPlan", "SplitSource", "ShardingError"]
