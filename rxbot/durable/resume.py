"""Resume after a hard kill: ``BotFrame.run(resume=True)``, ``rxbot run --resume``.

Each pipe's source is replayed in order and numbered (offset 0, 1, 2, ...). About once
a second the source pauses until everything it gave is settled (:mod:`.settle`); then
each Insert of the pipe writes the rows of that epoch **and** the pipe's checkpoint (the
source offset reached) in one transaction of its own database, MySQL or SQLite. A kill
at any moment loses the open transaction: the rows of the unfinished epoch are not in
the table and the checkpoint still names the epoch's start. Started again with resume,
the pipe skips the source items below the smallest checkpoint of its Inserts and runs
the rest; an Insert whose own checkpoint is further on (it committed an epoch that
another Insert had not) drops its rows up to there, the epoch boundaries being put at
exactly those offsets again. So every row lands once, without a key declared by the
user. Requests in flight at the kill are simply sent again.

Sinks that cannot join the transaction (print, files, a user's function, an HTTP
call) are **at-least-once**: the items of the epoch that was open at the kill go
through them again. A pipe without an Insert keeps its checkpoint in a file
(``.rxbot/durable/<script>/``), at-least-once for everything.

A checkpoint belongs to the pipe as built (keyed like replay: every step's code and
arguments, :mod:`rxbot.replay.keying`): a changed pipe refuses to resume, naming the
step. Sources that do not give the same items in the same order on every run (a Timer,
an Observable, a Query without ORDER BY, any other node) are refused before the run.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..config import config
from ..db.base import InsertNode, QueryNode
from ..engine.gate import Pace
from ..engine.hooks import RunHooks, RunOutcome
from ..tree.flow import Pipe, Route
from ..tree.node import Loop, Node, Timer
from ..db.params import SQLITE
from ..replay.keying import step_hash
from ..replay.store import atomic_write, default_root, script_name
from ..tree.step import Const, RxOp, Step
from ..tree.walk import StepId, unwrap, walk
from .settle import settled

log = logging.getLogger("rxbot")

#: the checkpoint table in each sink's database (created when missing)
TABLE = "rxbot_checkpoints"


class ResumeRefused(ValueError):
    """This pipe cannot be resumed (its source, a changed pipe, an unsupported shape)."""


def durable_root() -> Path:
    """``config.durable_dir``, else ``.rxbot/durable/`` beside the replay cache."""
    chosen = config.durable_dir
    root = Path(chosen).expanduser() if chosen else default_root().parent / "durable"
    return root / script_name()


# ---- the pipe's identity -----------------------------------------------------------------------
def step_hashes(steps: Sequence[Any]) -> List[str]:
    return [step_hash(step) for step in steps]


def pipe_hash(hashes: Sequence[str]) -> str:
    return hashlib.sha256("|".join(hashes).encode()).hexdigest()[:32]


def changed_step(steps: Sequence[Any], where: StepId, saved: Sequence[str], now: Sequence[str]) -> str:
    """Which top-level step differs from the one the checkpoint was written with."""
    for k, step in enumerate(steps):
        if k >= len(saved) or saved[k] != now[k]:
            return f"{where.step(k + 1, step.label())}"
    return f"{where}: it has {len(steps)} steps, the checkpoint's pipe had {len(saved)}"


# ---- the source, replayed in order ---------------------------------------------------------------
def ordered_source(step: Any, where: StepId) -> Any:
    """A function returning the source's elements (an iterable or async iterable), the
    same ones in the same order on every run; :class:`ResumeRefused` otherwise."""
    fn = unwrap(step)
    why = None
    if isinstance(fn, Timer):
        why = "a Timer ticks with the clock: its items cannot be replayed in order"
    elif isinstance(step, (Route, RxOp)) or type(fn).__name__ == "FromObservable":
        why = "its items cannot be replayed in order"
    elif isinstance(fn, Loop):
        iterable = fn.iterable
        if inspect.isgenerator(iterable) or iter(iterable) is iterable:
            why = ("a Loop over an iterator or generator object is consumed once; pass a list, a range "
                   "or a generator function instead")
        else:
            return lambda: iterable
    elif isinstance(fn, QueryNode):
        if "order by" not in " ".join(fn.sql.lower().split()):
            why = "a Query without ORDER BY may give its rows in another order on the next run; add ORDER BY"
        else:
            return lambda: fn(0)
    elif isinstance(step, Const):
        value = step.value
        return lambda: value if isinstance(value, (list, tuple, range)) else [value]
    elif isinstance(fn, Node):
        why = f"a {type(fn).__name__} node as the source is not known to give the same items in the same order"
    elif callable(fn):
        return lambda: _flattened(fn(0))
    if why is None:
        why = "its items cannot be replayed in order"
    raise ResumeRefused(f"{where.step(1, step.label())}: cannot resume this pipe: {why}")


async def _awaited(value: Any) -> Any:
    return await value


def _flattened(result: Any) -> Any:
    """A function source's result for the trigger ``0`` as a sequence of items (the
    return-value rules of DESIGN §2: None none, one value one, an iterable its items)."""
    if inspect.isawaitable(result):
        return _AwaitedResult(result)
    if result is None:
        return []
    if isinstance(result, (str, bytes, bytearray, dict, tuple)) or not (
            hasattr(result, "__iter__") or hasattr(result, "__aiter__")):
        return [result]
    return result


class _AwaitedResult:
    """An ``async def`` source's result, flattened once awaited."""

    def __init__(self, awaitable: Any) -> None:
        self.awaitable = awaitable

    async def __aiter__(self) -> AsyncIterator[Any]:  # type: ignore[misc]
        result = _flattened(await self.awaitable)
        if hasattr(result, "__aiter__"):
            async for v in result:
                yield v
        else:
            for v in result:
                yield v


# ---- sinks ----------------------------------------------------------------------------------------
@dataclass
class Sink:
    """A transactional sink (an Insert) of a resumed pipe and its checkpoint there."""

    step: StepId
    node: InsertNode
    #: the source offset of its last committed checkpoint (0: none)
    committed: int = 0


def sinks_of(steps: Sequence[Any], where: StepId) -> Tuple[List[Sink], List[str]]:
    """The Inserts of a pipe (exactly-once) and its other sinks (at-least-once), by step.
    An Insert with steps after it is refused: under resume its rows pass nothing on."""
    inserts: List[Sink] = []
    others: List[str] = []
    seen: Dict[int, StepId] = {}
    for sid, step in walk(steps, where):
        node = unwrap(step)
        if isinstance(node, InsertNode):
            if id(node) in seen:
                raise ResumeRefused(f"{sid}: the same Insert is used twice ({seen[id(node)]}); give each "
                                    "place its own Insert to resume")
            seen[id(node)] = sid
            inserts.append(Sink(sid, node))
    for sid, step in _ends(steps, where):
        if not isinstance(unwrap(step), InsertNode):
            others.append(str(sid))
    for sink in inserts:
        if not _is_last(steps, where, sink.step):
            raise ResumeRefused(f"{sink.step}: steps after an Insert are not supported when resuming (its "
                                "rows wait for the checkpoint and pass nothing on); put the Insert last or "
                                "in a Branch")
    return inserts, others


def delivery_of(pipes: Sequence[Pipe]) -> Dict[str, Dict[str, Any]]:
    """Per pipe (``P1``, ...): which of its sinks are **exactly once** after a kill
    (``resume=True``) or a lost worker (a sharded run) — its Inserts, whose rows commit
    with the checkpoint — and which **at least once** (print, files, a user's function,
    the pipe's end). A pipe that cannot be resumed says why; all its sinks are then at
    least once. Decided from the pipes as built, before any run (``explain()`` shows it;
    the run's report carries it as ``delivery``)."""
    out: Dict[str, Dict[str, Any]] = {}
    for index, pipe in enumerate(pipes, start=1):
        where = StepId.root(f"P{index}", index)
        steps = pipe.steps
        try:
            if len(steps) < 2:
                raise ResumeRefused(f"{where}: a pipe of one step has nothing to resume")
            ordered_source(steps[0], where)
            inserts, others = sinks_of(steps, where)
            out[str(where)] = {"exactly_once": [str(s.step) for s in inserts], "at_least_once": others}
        except ResumeRefused as exc:
            out[str(where)] = {"exactly_once": [], "at_least_once": [str(sid) for sid, _ in _ends(steps, where)],
                               "refused": str(exc)}
    return out


def _ends(steps: Sequence[Any], where: StepId) -> Iterable[Tuple[StepId, Any]]:
    """The last step of the pipe and of every branch (where items leave the pipe), in
    flow order; a route there is not one (its branches' last steps are)."""
    last: Dict[Tuple[int, ...], Tuple[StepId, Any]] = {}
    for sid, step in walk(steps, where):  # a place's steps come in order
        last[sid.positions[:-1]] = (sid, step)
    for sid, step in sorted(last.values(), key=lambda end: end[0].order()):
        if not isinstance(step, Route):
            yield sid, step


def _is_last(steps: Sequence[Any], where: StepId, sid: StepId) -> bool:
    return any(end == sid for end, _ in _ends(steps, where))


def _sink_key(step: StepId) -> str:
    """An Insert's key in the checkpoint table: its position and a hash of its whole id
    (the id holds the SQL, which may be longer than the column)."""
    text = str(step)
    return f"{text.split(' ', 1)[0]}#{hashlib.sha1(text.encode()).hexdigest()[:16]}"


# ---- the checkpoint's SQL ---------------------------------------------------------------------------
def _placeholder(node: InsertNode) -> str:
    return "?" if getattr(node, "paramstyle", "") == SQLITE else "%s"


def _create_sql(node: InsertNode) -> str:
    return (f"CREATE TABLE IF NOT EXISTS {TABLE} (run_key VARCHAR(190) NOT NULL, sink VARCHAR(190) NOT NULL, "
            "pipe_hash VARCHAR(64) NOT NULL, steps TEXT NOT NULL, source_offset BIGINT NOT NULL, "
            "complete INT NOT NULL, updated DOUBLE NOT NULL, PRIMARY KEY (run_key, sink))")


def _read_sql(node: InsertNode) -> str:
    p = _placeholder(node)
    return f"SELECT pipe_hash, steps, source_offset, complete FROM {TABLE} WHERE run_key = {p} AND sink = {p}"


def _write_sql(node: InsertNode) -> str:
    p = _placeholder(node)
    values = f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})"
    cols = "(run_key, sink, pipe_hash, steps, source_offset, complete, updated)"
    if p == "?":
        return (f"INSERT INTO {TABLE} {cols} {values} ON CONFLICT (run_key, sink) DO UPDATE SET "
                "pipe_hash = excluded.pipe_hash, steps = excluded.steps, source_offset = excluded.source_offset, "
                "complete = excluded.complete, updated = excluded.updated")
    return (f"INSERT INTO {TABLE} {cols} {values} ON DUPLICATE KEY UPDATE pipe_hash = VALUES(pipe_hash), "
            "steps = VALUES(steps), source_offset = VALUES(source_offset), complete = VALUES(complete), "
            "updated = VALUES(updated)")


def _forget_sql(node: InsertNode) -> str:
    """The checkpoints whose run key starts with a prefix (no LIKE: no wildcards to escape)."""
    p = _placeholder(node)
    return f"DELETE FROM {TABLE} WHERE SUBSTR(run_key, 1, {p}) = {p}"


async def forget_checkpoints(pipes: Sequence[Pipe], run_key: str) -> List[str]:
    """Delete every checkpoint whose run key starts with ``run_key`` (``sharded-<id>/``) from the
    database of each Insert of ``pipes``, outside a run (each Insert opened and closed
    here); the Inserts whose database could not be cleared, with why (a warning's matter,
    never a run's failure).

    The checkpoint's lifecycle (docs/resume.md): each epoch *updates* its sink's one row
    (``PRIMARY KEY (run_key, sink)``), so a run of any length keeps one row per pipe and
    Insert. A local run's rows stay, the final one saying the run is complete (a resume
    after that has nothing to redo). A sharded run's rows are filed under its run id,
    which no later run uses: the client deletes them through this once the run is over
    and no shard can run again."""
    from ..tree.walk import nodes_in

    problems: List[str] = []
    seen: set = set()
    for node in nodes_in([step for pipe in pipes for step in pipe.steps]):
        if not isinstance(node, InsertNode) or id(node) in seen:
            continue
        seen.add(id(node))
        try:
            await node.init()
            try:
                await node.read_checkpoint(_forget_sql(node), (len(run_key), run_key))
            finally:
                await node.close()
        except Exception as exc:
            if TABLE in str(exc):  # no checkpoint was ever written there
                continue
            problems.append(f"{node.label()}: {type(exc).__name__}: {exc}")
    return problems


# ---- one pipe's checkpointing source ------------------------------------------------------------------
@dataclass
class PipeResume:
    """What resume does for one pipe: its identity, its source and its sinks."""

    index: int
    steps: Sequence[Any]
    where: StepId
    elements: Any
    inserts: List[Sink]
    others: List[str]
    hashes: List[str] = field(default_factory=list)
    run_key: str = ""
    #: the offset this run started from, and the items it skipped / ran
    started_at: int = 0
    complete: bool = False
    checkpoints: int = 0
    #: called with (pipe index, offset) once a checkpoint is committed: a sharded run's
    #: worker tells the client how far its shard has settled (see rxbot.cluster.worker)
    on_commit: Optional[Callable[[int, int], None]] = None

    @property
    def source_step(self) -> StepId:
        return self.where.step(1, self.steps[0].label())

    @property
    def key(self) -> str:
        return pipe_hash(self.hashes)

    # -- reading and writing checkpoints -----------------------------------------------------------
    def _file(self) -> Path:
        return durable_root() / f"checkpoint-{self.run_key.replace('/', '_')}.json"

    def _check_saved(self, saved_hash: str, saved_steps: str) -> None:
        if saved_hash != self.key:
            try:
                saved = json.loads(saved_steps)
            except ValueError:
                saved = []
            raise ResumeRefused(
                f"{self.where}: the pipe changed since its checkpoint ({changed_step(self.steps, self.where, saved, self.hashes)} "
                f"differs): finish the run with the code it started with, or, to start over, delete "
                f"{self._where_saved()}")

    def _where_saved(self) -> str:
        if not self.inserts:
            return f"the checkpoint file {self._file()}"
        return f"the rows of run_key '{self.run_key}' from the {TABLE} table"

    async def load(self) -> None:
        """Read every sink's checkpoint (creating the table where missing) and find where
        this run starts: the smallest committed offset."""
        if not self.inserts:
            path = self._file()
            if path.exists():
                data = json.loads(path.read_text())
                self._check_saved(data["pipe_hash"], json.dumps(data["steps"]))
                self.started_at = int(data["offset"])
                self.complete = bool(data.get("complete"))
            return
        offsets = []
        completes = []
        for sink in self.inserts:
            key = (self.run_key, _sink_key(sink.step))
            try:
                rows = await sink.node.read_checkpoint(_read_sql(sink.node), key)
            except Exception as exc:  # the first resumed run on this database: no table yet
                if TABLE not in str(exc):
                    raise
                await sink.node.read_checkpoint(_create_sql(sink.node), ())
                rows = []
            if rows:
                saved_hash, saved_steps, offset, complete = rows[0]
                self._check_saved(saved_hash, saved_steps)
                sink.committed = int(offset)
                completes.append(bool(complete))
            else:
                sink.committed = 0
                completes.append(False)
            offsets.append(sink.committed)
        self.started_at = min(offsets)
        self.complete = all(completes)

    async def commit(self, ctx: Any, offset: int, final: bool) -> None:
        """Everything below ``offset`` is settled: commit each Insert's rows with the checkpoint."""
        self.checkpoints += 1
        if not self.inserts:
            path = self._file()
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, json.dumps({"pipe_hash": self.key, "steps": self.hashes, "offset": offset,
                                           "complete": final}).encode())
            self._committed(offset)
            return
        for sink in self.inserts:
            holder = ctx.holders.get(id(sink.node))
            rt = holder[1] if holder is not None else None
            held = len(sink.node._held_rows)
            if sink.committed >= offset:  # an earlier run committed this epoch here already
                sink.node.drop_held()
                if rt is not None:
                    rt.stats.held -= held
                    rt.stats.filtered += held  # consumed (by the earlier run)
                if not final:
                    continue
                held = 0  # the last checkpoint still says the run is complete (rows: none)
            statement = (_write_sql(sink.node), (self.run_key, _sink_key(sink.step), self.key, json.dumps(self.hashes),
                                                 offset, int(final), time.time()))
            failed = await sink.node.commit_checkpoint([statement])
            sink.committed = offset
            if rt is None:
                continue
            rt.stats.held -= held
            rt.stats.filtered += held - len(failed)  # rows written: consumed by the sink
            for item, exc in failed:
                action, value = rt.final(exc, item)
                if action == "raise":
                    ctx.fail(value)
                elif action == "pipein":
                    rt.stats.out += len(value)  # nothing after a sink to send them to
        self._committed(offset)

    def _committed(self, offset: int) -> None:
        if self.on_commit is not None:
            self.on_commit(self.index, offset)

    # -- the source itself ---------------------------------------------------------------------------
    async def feed(self, ctx: Any, emit: Any, gate: Any, stats: Any) -> None:
        """Push the source's elements from the checkpoint on, pausing at each epoch's end
        until the pipe has settled what it got, then committing the checkpoint."""
        await self.load()
        if self.complete:
            log.warning("rxbot: %s: its checkpoint says the run was complete; nothing to resume (clear the "
                        "checkpoint to run it again)", self.where)
            return
        if self.started_at:
            log.warning("rxbot: %s: resuming after %d source items settled by an earlier run", self.where,
                        self.started_at)
        source_rt = ctx.runtimes.get(self.source_step)
        forced = sorted({s.committed for s in self.inserts if s.committed > self.started_at})
        every_items = max(1, int(config.checkpoint_items))
        every_seconds = float(config.checkpoint_seconds)
        pace = Pace(config.yield_every, gate.beat)  # a turn every ``yield_every`` items or TURN_SECONDS
        look = pace.first
        offset = 0
        epoch_start = self.started_at
        clock = time.perf_counter
        epoch_began = clock()
        n = 0

        async def barrier() -> bool:
            nonlocal epoch_start, epoch_began
            if not await settled(ctx, self.index, source_rt):
                return False
            await self.commit(ctx, offset, final=False)
            epoch_start, epoch_began = offset, clock()
            while forced and forced[0] <= offset:
                forced.pop(0)
            return not ctx.stopped

        async for value in _elements(self.elements()):
            if offset < self.started_at:
                offset += 1
                continue
            emit(value)
            stats.out += 1
            offset += 1
            n += 1
            if (forced and offset == forced[0]) or offset - epoch_start >= every_items:
                if not await barrier():
                    return
                n, look = 0, pace.turned()
            elif gate.blocked or n >= look:
                if not gate.blocked:
                    look = pace.look(n)
                    if look:
                        continue
                if gate.halted:
                    return
                # the epoch's time is looked at here, at most a turn apart: not per item
                if clock() - epoch_began >= every_seconds:
                    if not await barrier():
                        return
                else:
                    await (gate.wait() if gate.blocked else gate.pause())
                n, look = 0, pace.turned()
        if gate.halted or not await settled(ctx, self.index, source_rt):
            return
        await self.commit(ctx, offset, final=True)
        self.complete = True


async def _elements(source: Any) -> AsyncIterator[Any]:
    if hasattr(source, "__aiter__"):
        async for v in source:
            yield v
    else:
        for v in source:
            yield v


# ---- the hooks ------------------------------------------------------------------------------------------
class ResumeHooks(RunHooks):
    """Run ``pipes`` with checkpoints, resuming each from its last one (see the module)."""

    def __init__(self, pipes: Sequence[Pipe], run_key: Optional[str] = None) -> None:
        """``run_key``: what the checkpoints are filed under (default: the script's
        name; a sharded run uses its run id and the shard, so a shard re-run on another
        worker finds its own checkpoint and a new run starts afresh)."""
        self.pipes: List[PipeResume] = []
        name = run_key or script_name()
        for index, pipe in enumerate(pipes, start=1):
            where = StepId.root(f"P{index}", index)
            steps = pipe.steps
            if len(steps) < 2:
                raise ResumeRefused(f"{where}: a pipe of one step has nothing to resume")
            elements = ordered_source(steps[0], where)
            inserts, others = sinks_of(steps, where)
            for sink in inserts:
                sink.node.checkpointed()
            resume = PipeResume(index, steps, where, elements, inserts, others, step_hashes(steps))
            resume.run_key = f"{name}/{pipe.name or where}"
            self.pipes.append(resume)

    def source(self, pipe: int) -> Optional[Tuple[int, Any]]:  # a feed (see RunHooks.source)
        return 1, _Feed(self.pipes[pipe - 1])

    def finished(self, outcome: RunOutcome) -> None:
        outcome.report.delivery = self.delivery()  # type: ignore[attr-defined]

    def delivery(self) -> Dict[str, Any]:
        """Which sinks of each pipe are exactly-once and which at-least-once."""
        return {str(p.where): {"exactly_once": [str(s.step) for s in p.inserts],
                               "at_least_once": p.others, "resumed_from": p.started_at, "checkpoints": p.checkpoints,
                               "complete": p.complete, "run_key": p.run_key}
                for p in self.pipes}


class _Feed:
    """The replacement source :func:`rxbot.engine.hooks.build_pipe` runs (its ``feed``)."""

    def __init__(self, resume: PipeResume) -> None:
        self.resume = resume
        self.source_step = resume.source_step

    async def feed(self, ctx: Any, emit: Any, gate: Any, stats: Any) -> None:
        await self.resume.feed(ctx, emit, gate, stats)


def resume_hooks(pipes: Sequence[Pipe]) -> ResumeHooks:
    return ResumeHooks(pipes)


__all__ = ["ResumeHooks", "ResumeRefused", "resume_hooks", "forget_checkpoints", "delivery_of", "ordered_source", "durable_root", "TABLE"]
