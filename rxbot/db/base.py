"""What the MySQL and SQLite nodes share: statement parsing, labels, node options, row
mapping, the streaming Query loop and the batching Insert logic.

A back end supplies only the driver work: ``_open()``/``_close()`` (resources per run),
``_rows(params)`` (an async iterator of dict rows) and ``_write(params_list)`` (run the
statement for every parameter set of a batch in one transaction, then commit).
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections import deque
from typing import Any, AsyncIterator, Callable, Deque, Dict, Iterator, List, Sequence, Tuple

from ..backoff import backoff
from ..errors import short_repr
from ..tree.node import NOT_RUNNING as _NOT_RUNNING, Node
from .params import Statement
from .values import ValueAdapter

log = logging.getLogger("rxbot")

_NODE_OPTIONS = ("concurrency", "on_error", "retries", "timeout", "name")


class DatabaseConnectionError(ConnectionError):
    """A database node could not connect (wrong credentials, server down, timeout)."""


class InterruptedCommitError(Exception):
    """A row whose COMMIT was in flight when its write was cancelled: it may or may not
    be in the database, and it is not written again (that could write it twice)."""


class CloseTimeoutError(TimeoutError):
    """A row a stopped run left in an Insert that was not written because the database
    did not answer within the node's ``close_timeout`` (it is not in the database)."""


class InsertError(Exception):
    """Rows an Insert could not write, each named with its own error.

    A batch holds the rows of many items, but a failure can only be raised from one
    call; this error carries all of them, so none vanishes: ``failed_items`` (the input
    items, in order), ``errors`` (the exception of each) and ``failed`` (the pairs).
    ``retryable`` is False: the node already retried transient errors itself, and the
    engine re-sending the one item whose call raised would not re-send the others.
    """

    retryable = False

    def __init__(self, node: str, failed: Sequence[Tuple[Any, BaseException]], total: int,
                 detail: str | None = None) -> None:
        self.node = node
        self.failed = list(failed)
        #: what the engine's policies count, dead-letter and pipe in: each row, not the
        #: call that happened to raise (see rxbot.engine.policy.rejected_by)
        self.rejected = self.failed
        self.failed_items = [item for item, _ in self.failed]
        self.errors = [exc for _, exc in self.failed]
        self.total = total
        shown = "; ".join(f"{short_repr(item, 80)}: {type(exc).__name__}: {_short(exc)}"
                          for item, exc in self.failed[:5])
        more = f"; ... and {len(self.failed) - 5} more" if len(self.failed) > 5 else ""
        if detail is None:
            detail = "the other rows were committed" if len(self.failed) < total else "none was written"
        super().__init__(f"{node}: {len(self.failed)} of {total} row(s) could not be written "
                         f"({detail}): {shown}{more}")


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_int(owner: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: argument {name!r} must be an int >= {minimum}; got {value!r}")
    return value


def _check_seconds(owner: str, name: str, value: Any, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{owner}: argument {name!r} must be a positive number of seconds{extra}; got {value!r}")
    return float(value)


class SqlNode(Node):
    """A node running one SQL statement whose parameters come from each input item."""

    #: how the back end's driver spells placeholders (see :meth:`Statement.render`)
    paramstyle: str = "pyformat"
    backslash_escapes: bool = True
    kind: str = "SQL"

    def __init__(self, sql: str, options: Dict[str, Any]) -> None:
        super().__init__(sql, **options)
        unknown = set(options) - set(_NODE_OPTIONS)
        if unknown:
            raise TypeError(f"{self.kind}: unexpected keyword argument(s) {', '.join(sorted(unknown))}")
        for key in _NODE_OPTIONS:  # per-node overrides of the class defaults
            if options.get(key) is not None:
                setattr(self, key, options[key])
        if self.concurrency is not None:
            _check_int(self.kind, "concurrency", self.concurrency, 1)
        self.sql = sql if isinstance(sql, str) else ""
        self.statement = Statement.parse(sql, self.kind, self.backslash_escapes)
        self.statement.owner = self.label()
        #: named placeholders too are bound by position, from the tuple params() builds
        self.driver_sql = self.statement.render(self.paramstyle, positional=True)

    @functools.cached_property
    def values(self) -> ValueAdapter:
        """Converts each value exactly or refuses it: built on first use, not with the
        node (its conversion tables cost ~1.5 KiB, and 10,000 idle pipes need none of them;
        issue 26, item 11). The MySQL nodes replace it when a run opens its connections
        with one that knows the session's time zone. Cached in the instance, so the row
        path reads a plain attribute."""
        return self.make_values()

    def make_values(self) -> ValueAdapter:  # pragma: no cover - back ends override
        """The back end's :class:`ValueAdapter` for this node."""
        raise NotImplementedError

    def label(self) -> str:
        if self.name:
            return self.name
        text = " ".join(self.sql.split())
        return f"{self.kind}: {text if len(text) <= 40 else text[:37].rstrip() + '...'}"

    def params(self, item: Any) -> Any:
        """The bound values for ``item``, each converted exactly for the database (raises
        :class:`ParameterError`, or its :class:`~rxbot.db.values.UnsupportedValueError`,
        naming the node and the placeholder)."""
        statement = self.statement
        take = statement.take
        if take is None:  # positional placeholders (or none): a tuple already
            return self.values.row(statement.values(item))
        if type(item) is dict:  # the common case: one C call reads the values in order
            try:
                return self.values.row(take(item), statement.order)
            except KeyError:
                pass  # the statement's message names the missing placeholder
        # an object's attributes or another mapping, read (and checked) by the statement
        return self.values.row(take(statement.values(item)), statement.order)

    # -- back end hooks ------------------------------------------------------------------
    async def _open(self) -> None:  # pragma: no cover - back ends override
        raise NotImplementedError

    async def _close(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def _rows(self, params: Any) -> AsyncIterator[dict]:  # pragma: no cover
        raise NotImplementedError

    async def _write(self, params_list: Sequence[Any], committing: Callable[[], None] = lambda: None) -> None:
        """Execute for every parameter set in one transaction and commit; call
        ``committing()`` just before the commit is sent (after that, a cancelled write
        may still have committed, so it must not be repeated)."""
        raise NotImplementedError  # pragma: no cover

    def where(self) -> str:
        """The server/file, for error messages."""
        return ""


class RowMapper:
    """Turns a dict row into a ``map_class`` instance.

    Two ways, chosen once per column set: if ``map_class`` accepts the columns as keyword
    arguments (dataclasses, namedtuples, ``__init__(self, **kw)``) it is called with them;
    otherwise databot's way: ``map_class()`` with no arguments, then each column whose
    (lower-cased) name is an attribute the new instance already has is assigned, the
    other columns ignored.
    """

    def __init__(self, map_class: Callable[..., Any] | None, owner: str) -> None:
        if map_class is not None and not callable(map_class):
            raise TypeError(f"{owner}: argument 'map_class' must be a class or callable; got {map_class!r}")
        self.map_class = map_class
        self.owner = owner
        self.plans: Dict[Tuple[str, ...], str] = {}

    def __call__(self, row: dict) -> Any:
        cls = self.map_class
        if cls is None:
            return row
        cols = tuple(row)
        plan = self.plans.get(cols)
        if plan is None:
            plan = self.plans[cols] = self._plan(cols)
        if plan == "kwargs":
            return cls(**row)
        obj = cls()
        attrs = getattr(obj, "__dict__", None)
        for k, v in row.items():
            if attrs is not None:
                if k in attrs:
                    attrs[k] = v
                elif k.lower() in attrs:
                    attrs[k.lower()] = v
            elif hasattr(obj, k):
                setattr(obj, k, v)
        return obj

    def _plan(self, cols: Tuple[str, ...]) -> str:
        cls = self.map_class
        assert cls is not None  # a plan is made only for a map_class
        try:
            sig = inspect.signature(cls)
        except (TypeError, ValueError):
            sig = None
        if sig is not None:
            try:
                sig.bind(**{c: None for c in cols})
                if cols or not sig.parameters:
                    return "kwargs"
            except TypeError:
                pass
            try:
                sig.bind()
            except TypeError:
                raise TypeError(
                    f"{self.owner}: map_class {getattr(cls, '__name__', cls)!r} accepts neither the "
                    f"columns {list(cols)} as keyword arguments nor no arguments (databot's way)"
                ) from None
        probe = cls()
        attrs = set(getattr(probe, "__dict__", {}) or ())
        if cols and not any(c in attrs or c.lower() in attrs for c in cols):
            log.warning("rxbot: %s: map_class %r has none of the columns %s as attributes; its "
                        "instances will be empty (declare them in __init__ or accept **kwargs)",
                        self.owner, getattr(cls, "__name__", cls), list(cols))
        return "attrs"


class QueryNode(SqlNode):
    """Run the statement once per input item; emit one item per result row, streamed."""

    kind = "Query"

    def __init__(self, sql: str, map_class: Any, fetch_size: int, options: Dict[str, Any]) -> None:
        super().__init__(sql, options)
        self.map_class = map_class
        self.mapper = RowMapper(map_class, self.label())
        self.fetch_size = _check_int(self.label(), "fetch_size", fetch_size, 1)

    async def init(self) -> None:
        await self._open()

    async def close(self) -> None:
        await self._close()

    async def __call__(self, item: Any):
        """An async generator: the engine pulls the next row only while downstream has
        room, and the driver fetches ``fetch_size`` rows at a time, so a huge result set
        streams in bounded memory."""
        params = self.params(item)
        mapper = self.mapper
        async for row in self._rows(params):
            yield mapper(row)


class InsertNode(SqlNode):
    """Run the statement for every input item, ``batch_size`` items per transaction.

    Items are buffered; a full batch (or, for a slow trickle, a batch older than
    ``flush_interval`` seconds) is written with one ``executemany`` and committed, and only
    then are its items passed downstream. The final partial batch is written when the
    input ends (``flush``). If the run fails elsewhere, what is still buffered is
    committed at ``close`` (databot inserted every item at once; rxbot keeps that
    guarantee for every item it accepted).

    A failed batch never loses rows silently: each row either ends in the table and goes
    downstream, or is named in an error.

    * A transient failure (lock timeout, deadlock, lost connection, "database is
      locked") is retried by the node itself, ``write_attempts`` times with backoff,
      for the whole batch: the engine could only re-send the one item whose call failed.
    * Any other failure rolls the batch back and writes its rows one by one, each in its
      own transaction, so only the bad rows fail. The good rows are committed and pass
      downstream (with this call's result, or the next one's).
    * The bad rows are raised from the call that wrote the batch. If the only bad row is
      that call's own item, its own exception is raised (with a note), as for a batch of
      one. Otherwise an :class:`InsertError` lists every bad row (``failed_items``,
      ``errors``); it is not retried by the engine (``retryable = False``).
    * A batch written by the ``flush_interval`` timer belongs to no call: its bad rows
      are logged at once and raised as one :class:`InsertError` when the input ends
      (``flush``), never charged to an unrelated item.
    * If the COMMIT was sent and then failed, the outcome is unknown: those rows are
      named in an :class:`InsertError` and not written again.
    """

    kind = "Insert"
    holds_items = True  # returns None while an item waits for its batch
    #: two calls in flight: one commits a batch while the other keeps filling the next
    #: (most calls only append to the buffer and return at once). With the slots full
    #: the engine's workers draw the source's next items themselves, no trip through the
    #: event loop each; 32 slots never fill, so each row was handed to a parked worker
    #: (measured with the engine of issue 26, callgrind, 20,000 rows: 29.7k instructions
    #: a row at 2 slots, 33.4k at 32, SQLite; MySQL 37.7k vs 53.4k)
    concurrency = 2
    #: batches taken but not yet committed before new items wait (the memory bound:
    #: this many batches plus one item per slot)
    max_unwritten = 2
    #: attempts for a write failing with a transient error (see :meth:`_transient`)
    write_attempts = 3
    #: seconds before the first repeat of a transient failure; doubled each time
    write_backoff = 0.05

    def __init__(self, sql: str, batch_size: int, flush_interval: float | None, options: Dict[str, Any],
                 close_timeout: float = 30.0) -> None:
        super().__init__(sql, options)
        self.batch_size = _check_int(self.label(), "batch_size", batch_size, 1)
        self.flush_interval = _check_seconds(self.label(), "flush_interval", flush_interval, allow_none=True)
        #: seconds a stopped run's close() has to write the rows left here; what the
        #: database has not confirmed by then is reported, never waited on forever
        self.close_timeout = _check_seconds(self.label(), "close_timeout", close_timeout)
        # the batching state below is made by init(), per run: an idle Insert holds none
        # of it (a deque, two sets, six lists: ~1.5 KiB a node; issue 26, item 11)

    # The state of a run, made by init(); the class gives what a node that never ran
    # reports (settled_at_close, resume) and a clear error if it is called outside a run.
    _buf: List[Tuple[Any, Any]] = _NOT_RUNNING
    _unwritten: List[List[Tuple[Any, Any]]] = _NOT_RUNNING  # taken, not yet committed
    _ready: List[Any]  # committed, not yet passed downstream
    _lock: asyncio.Lock | None = None
    _timer: asyncio.TimerHandle | None = None
    _timed: set
    _timed_failed: List[Tuple[Any, BaseException]]  # bad rows of timed batches
    _timed_total: int
    #: rows waiting for room, in arrival order, each with the future its call awaits
    #: (the class's deque holds nothing: maxlen 0)
    _waiting: Deque[Tuple[Tuple[Any, Any], asyncio.Future]] = deque(maxlen=0)
    _committing: set  # ids of batches whose COMMIT has been sent
    # what the last close() did with the rows the stopped run left here (settled_at_close)
    _closed_written = 0
    _closed_rejected: List[Tuple[Any, BaseException]] = _NOT_RUNNING
    _cancelled_in_commit = 0  # calls cancelled while their own row was being written
    _held_rows: List[Tuple[Any, Any]] = _NOT_RUNNING  # checkpointed: rows waiting for the checkpoint
    _closed_discarded = 0  # checkpointed rows a stopped run left uncommitted

    def _reset(self) -> None:
        self._buf = []
        self._unwritten = []
        self._ready = []
        self._lock = None
        self._timer = None
        self._timed = set()
        self._timed_failed = []
        self._timed_total = 0
        self._waiting = deque()
        self._committing = set()
        self._closed_written = 0
        self._closed_rejected = []
        self._cancelled_in_commit = 0
        self._held_rows = []
        self._closed_discarded = 0

    async def init(self) -> None:
        self._reset()
        self._lock = asyncio.Lock()
        await self._open()

    # -- checkpointed mode (resume after a hard kill, rxbot.durable) -----------------------
    #: rows wait for the run's next checkpoint instead of committing by batch; set by
    #: :meth:`checkpointed` before the run starts
    _checkpointed = False

    def checkpointed(self) -> None:
        """Hold every row until :meth:`commit_checkpoint` writes them together with the
        run's checkpoint in one transaction (no batch by size, no flush timer, nothing
        written at close: rows of a stopped run are redone when it resumes)."""
        self._checkpointed = True

    async def commit_checkpoint(self, statements: Sequence[Tuple[str, Any]]
                                ) -> List[Tuple[Any, BaseException]]:
        """Write every row held since the last checkpoint, then ``statements`` (the
        checkpoint, as ``(sql, params)`` in this database's placeholder style), in one
        transaction. A bad row is rolled back alone (a savepoint each) and returned with
        its error; the others and the checkpoint commit together."""
        rows, self._held_rows = self._held_rows, []
        assert self._lock is not None, "Insert used before init()"
        async with self._lock:
            failed = await self._write_checkpointed([p for _, p in rows], statements)
        return [(rows[i][0], exc) for i, exc in failed]

    def drop_held(self) -> int:
        """Forget the rows held since the last checkpoint (an earlier run committed them)."""
        n, self._held_rows = len(self._held_rows), []
        return n

    async def _write_checkpointed(self, params_list: Sequence[Any], statements: Sequence[Tuple[str, Any]]
                                  ) -> List[Tuple[int, BaseException]]:  # pragma: no cover - back ends
        raise NotImplementedError(f"{self.label()}: this database cannot hold a checkpoint")

    async def read_checkpoint(self, sql: str, params: Any) -> List[tuple]:  # pragma: no cover - back ends
        """Run a statement of the checkpoint's own (create its table, read it) in a
        transaction of its own; return the rows."""
        raise NotImplementedError(f"{self.label()}: this database cannot hold a checkpoint")

    async def __call__(self, item: Any) -> Any:
        entry = (item, self.params(item))  # a bad item fails here, blamed on itself
        if self._checkpointed:  # the row waits for the run's checkpoint (passes nothing on)
            self._held_rows.append(entry)
            return None
        if self._waiting or len(self._unwritten) >= self.max_unwritten:
            batch = await self._wait_turn(entry)
        else:  # the common case: buffered at once, no trip through the event loop
            buf = self._buf
            if len(buf) + 1 < self.batch_size and (self._timer is not None or self.flush_interval is None):
                buf.append(entry)  # what _accept does for a row that fills nothing, inline
                return self._take_ready() if self._ready else None
            batch = self._accept(entry)
        if batch:
            total = len(batch)
            try:
                failed = await self._commit(batch)
            except asyncio.CancelledError:
                # the engine counts this call cancelled, but its row stays in ``batch``:
                # close() writes it and accounts for it (settled_at_close)
                self._cancelled_in_commit += 1
                raise
            if failed:
                if len(failed) == 1 and failed[0][0] is item:
                    exc = failed[0][1]  # only this call's own row: its own error
                    if total > 1:
                        exc.add_note(f"rxbot: {self.label()}: the other {total - 1} row(s) of its "
                                     "batch were committed")
                    raise exc
                raise InsertError(self.label(), failed, total) from failed[0][1]
        return self._take_ready()

    def _accept(self, entry: Tuple[Any, Any]) -> List[Tuple[Any, Any]] | None:
        """Buffer one row; the batch it fills (its call commits it), else None."""
        buf = self._buf
        buf.append(entry)
        if len(buf) >= self.batch_size:
            return self._take()
        if self._timer is None and self.flush_interval is not None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_interval, self._on_timer)
        return None

    async def _wait_turn(self, entry: Tuple[Any, Any]) -> List[Tuple[Any, Any]] | None:
        """Wait, first come first served, until fewer than ``max_unwritten`` batches are
        waiting for the database: rows keep their arrival order and memory stays bounded.

        The row waits with its call; :meth:`_admit_next` buffers it (in order, at once)
        when there is room and wakes the call with the batch it filled, if any. So only
        the calls that arrive while the database is behind pay a trip through the event
        loop; the rows that follow go straight into the buffer."""
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        waiter = (entry, fut)
        self._waiting.append(waiter)
        try:
            return await fut
        except asyncio.CancelledError:
            if not fut.done() or fut.cancelled():  # still waiting: it never joined a batch
                try:
                    self._waiting.remove(waiter)
                except ValueError:
                    pass
                raise
            # admitted just before the cancellation: take the row back out (the engine
            # counts this call cancelled, so its row must not be written and passed on)
            batch = fut.result()
            if batch is None:
                if not _remove_identical(self._buf, entry):
                    # the flush_interval timer took it into a batch already: written with it
                    self._cancelled_in_commit += 1
            else:  # nobody else commits the batch this row filled
                _remove_identical(batch, entry)
                if batch:  # its other rows belong to other calls: commit them as a timer would
                    self._timed_commit_task(batch)
                else:
                    self._forget(batch)
            raise

    def _admit_next(self) -> None:
        """Buffer the waiting rows, oldest first, while fewer than ``max_unwritten``
        batches wait for the database, and wake their calls."""
        waiting = self._waiting
        while waiting and len(self._unwritten) < self.max_unwritten:
            entry, fut = waiting.popleft()
            if fut.done():  # its call was cancelled while it waited
                continue
            fut.set_result(self._accept(entry))

    async def flush(self) -> Any:
        if self._timed:
            await asyncio.gather(*list(self._timed), return_exceptions=True)
        batch = self._take()
        total = len(batch)
        failed = await self._commit(batch) if batch else []
        failed = self._timed_failed + failed
        total += self._timed_total
        self._timed_failed, self._timed_total = [], 0
        ready = self._take_ready()
        if not failed:
            return ready
        error = InsertError(self.label(), failed, total)
        error.__cause__ = failed[0][1]
        return _then_raise(ready or [], error)  # the good rows go downstream first

    async def close(self) -> None:
        if self._checkpointed:  # uncommitted rows are redone on resume, never written here
            self._closed_discarded = self.drop_held()
            self._closed_written, self._closed_rejected = 0, []
            await self._close()
            return
        written = len(self._ready)  # committed before the run stopped, never passed on
        rejected = list(self._timed_failed)  # the run stopped before flush() could raise them
        try:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            for task in list(self._timed):
                task.cancel()
            if self._timed:
                await asyncio.gather(*list(self._timed), return_exceptions=True)
                written = len(self._ready)
                rejected = list(self._timed_failed)
            if self._timed_failed:
                log.error("rxbot: %s", InsertError(self.label(), self._timed_failed, self._timed_total,
                                                   "batches written by the flush_interval timer"))
            left = self._unwritten + ([self._buf] if self._buf else [])
            self._buf, self._unwritten = [], []
            ok_rows: List[Tuple[Any, Any]] = []
            marks = len(self._ready), len(self._timed_failed)
            try:
                await asyncio.wait_for(self._write_left(left, ok_rows, rejected), self.close_timeout)
            except asyncio.TimeoutError:
                # a write cancelled row by row leaves what it settled in _ready/_timed_failed
                written += len(self._ready) - marks[0]
                rejected.extend(self._timed_failed[marks[1]:])
                rejected.extend(self._unsettled_at_deadline(left))
            written += len(ok_rows)
        finally:
            self._closed_written, self._closed_rejected = written, rejected
            self._ready = []
            self._timed_failed, self._timed_total = [], 0
            await self._close()

    async def _write_left(self, left: List[List[Tuple[Any, Any]]], ok_rows: List[Tuple[Any, Any]],
                          rejected: List[Tuple[Any, BaseException]]) -> None:
        """Write the batches a stopped run left here, appending to ``ok_rows`` and
        ``rejected`` as each settles (so what settled counts even if the deadline cuts
        the rest short). A settled batch is emptied."""
        for batch in left:  # the run failed elsewhere: keep what was accepted
            if not batch:
                continue
            if id(batch) in self._committing:
                log.warning("rxbot: %s: the commit of %d row(s) was interrupted; not repeated (it may "
                            "have completed)", self.label(), len(batch))
                unknown = InterruptedCommitError(
                    f"{self.label()}: the run stopped while this row's COMMIT was in flight; "
                    "it may or may not have been written (not repeated)")
                rejected.extend((item, unknown) for item, _ in batch)
                del batch[:]
                continue
            total = len(batch)
            ok, failed = await self._write_batch(batch)
            ok_rows.extend(ok)
            rejected.extend(failed)
            if failed:
                log.error("rxbot: %s", InsertError(self.label(), failed, total,
                                                   "buffered rows written at close"))
            else:
                log.info("rxbot: %s: committed %d buffered row(s) at close", self.label(), total)

    def _unsettled_at_deadline(self, left: List[List[Tuple[Any, Any]]]) -> List[Tuple[Any, BaseException]]:
        """The rows of ``left`` that ``close_timeout`` cut short, each with its error: a
        batch whose COMMIT was sent may or may not be stored; any other row was not
        written (its transaction was aborted with its connection, or never began)."""
        rows = [(entry, id(batch) in self._committing) for batch in left for entry in batch]
        if not rows:
            return []
        log.error("rxbot: %s: the database did not confirm %d row(s) left at close within "
                  "close_timeout=%gs; they are reported failed, not waited on", self.label(),
                  len(rows), self.close_timeout)
        unknown = InterruptedCommitError(
            f"{self.label()}: the database did not confirm this row's COMMIT within close_timeout="
            f"{self.close_timeout:g}s; it may or may not have been written (not repeated)")
        lost = CloseTimeoutError(
            f"{self.label()}: not written: the database did not answer within close_timeout="
            f"{self.close_timeout:g}s while the stopped run's rows were written at close")
        return [(item, unknown if sent else lost) for (item, _), sent in rows]

    def settled_at_close(self) -> Tuple[int, List[Tuple[Any, BaseException]], int]:
        """What the last ``close()`` did with the rows a stopped run left here: rows
        committed (at close, or before it but never passed downstream), rows rejected
        (with their errors), and how many of those rows belong to calls the engine
        counted as cancelled (see :meth:`rxbot.tree.node.Node.settled_at_close`)."""
        if self._checkpointed:  # the rows a stopped run left here were dropped: no longer held
            return 0, [], 0, self._closed_discarded  # type: ignore[return-value]
        return self._closed_written, list(self._closed_rejected), self._cancelled_in_commit

    # -- batching ----------------------------------------------------------------------------
    def _take(self) -> List[Tuple[Any, Any]]:
        batch, self._buf = self._buf, []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if batch:
            self._unwritten.append(batch)
        return batch

    def _take_ready(self) -> Any:
        if not self._ready:
            return None
        ready, self._ready = self._ready, []
        return ready

    async def _commit(self, batch: List[Tuple[Any, Any]]) -> List[Tuple[Any, BaseException]]:
        """Write ``batch`` (FIFO: batches commit, and pass on, in arrival order); its good
        rows join ``_ready``; returns the bad rows as (item, exception) pairs."""
        assert self._lock is not None, "Insert used before init()"
        async with self._lock:
            # on cancellation the rows not yet committed stay in _unwritten: close()
            # writes them (unless their COMMIT was sent)
            ok, failed = await self._write_batch(batch)
            self._forget(batch)
            self._ready.extend(item for item, _ in ok)
            return failed

    def _transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` is worth repeating the same write for (back ends override)."""
        return False

    async def _attempt(self, params_list: List[Any], sent: List[bool], on_commit: Callable[[], None]
                       ) -> BaseException | None:
        """One write with up to ``write_attempts`` tries for transient errors; returns the
        final error or None. ``sent[0]`` tells whether the failing try had sent COMMIT."""
        for attempt in range(self.write_attempts):
            sent[0] = False

            def committing() -> None:
                sent[0] = True
                on_commit()

            try:
                await self._write(params_list, committing)
                return None
            except Exception as exc:
                if sent[0] or not self._transient(exc) or attempt + 1 >= self.write_attempts:
                    return exc
                log.warning("rxbot: %s: transient failure writing %d row(s), retrying: %s: %s",
                            self.label(), len(params_list), type(exc).__name__, _short(exc))
                await asyncio.sleep(backoff(attempt + 1, self.write_backoff))
        return None  # pragma: no cover - the loop always returns

    async def _write_batch(self, batch: List[Tuple[Any, Any]]
                           ) -> Tuple[List[Tuple[Any, Any]], List[Tuple[Any, BaseException]]]:
        """Write ``batch``: whole, or, if that fails for good, row by row. Returns the
        committed entries and the failed (item, exception) pairs. Rows are removed from
        ``batch`` (the list in ``_unwritten``) as they are committed, so a cancelled
        write leaves close() only the rows still to be written."""
        rows = list(batch)
        sent = [False]
        error = await self._attempt([p for _, p in rows], sent, lambda: self._committing.add(id(batch)))
        if error is None:
            del batch[:]
            return rows, []
        if sent[0]:  # COMMIT sent, then failed: it may have completed; never write twice
            error.add_note(f"rxbot: {self.label()}: the COMMIT of {len(rows)} row(s) failed; "
                           "they may or may not have been written")
            del batch[:]
            return [], [(item, error) for item, _ in rows]
        if len(rows) == 1:
            del batch[:]
            return [], [(rows[0][0], error)]
        log.warning("rxbot: %s: a batch of %d row(s) failed (%s: %s); rolled back, writing its "
                    "rows one by one", self.label(), len(rows), type(error).__name__, _short(error))
        ok: List[Tuple[Any, Any]] = []
        failed: List[Tuple[Any, BaseException]] = []
        for entry in rows:
            item, params = entry
            sent = [False]
            try:
                exc = await self._attempt([params], sent, lambda: None)
            except asyncio.CancelledError:
                # rows done so far are not lost with this call: committed ones pass on
                # later (or are counted at close), bad ones are raised at flush()
                self._ready.extend(i for i, _ in ok)
                self._timed_failed.extend(failed)
                self._timed_total += len(ok) + len(failed)
                if sent[0]:  # this row's COMMIT was sent: do not write it again at close
                    log.warning("rxbot: %s: the commit of 1 row was interrupted; not repeated "
                                "(it may have completed): %s", self.label(), short_repr(item, 80))
                    batch.remove(entry)
                    self._timed_failed.append((item, InterruptedCommitError(
                        f"{self.label()}: this row's COMMIT was interrupted; it may or may not "
                        "have been written (not repeated)")))
                    self._timed_total += 1
                raise
            batch.remove(entry)
            if exc is None:
                ok.append(entry)
            else:
                if sent[0]:
                    exc.add_note(f"rxbot: {self.label()}: its COMMIT failed; the row may or may "
                                 "not have been written")
                failed.append((item, exc))
        return ok, failed

    def _forget(self, batch: list) -> None:
        self._committing.discard(id(batch))
        for i, b in enumerate(self._unwritten):
            if b is batch:
                del self._unwritten[i]
                break
        self._admit_next()

    def _on_timer(self) -> None:
        """``flush_interval`` passed since the oldest buffered item: commit what there is,
        so a slow trickle is stored promptly; its items pass on with the next result."""
        self._timer = None
        batch = self._take()
        if batch:
            self._timed_commit_task(batch)

    def _timed_commit_task(self, batch: List[Tuple[Any, Any]]) -> None:
        """Commit ``batch`` in a task of its own, belonging to no call."""
        task = asyncio.get_running_loop().create_task(self._timed_commit(batch))
        self._timed.add(task)
        task.add_done_callback(self._timed.discard)

    async def _timed_commit(self, batch: List[Tuple[Any, Any]]) -> None:
        total = len(batch)
        failed = await self._commit(batch)
        if failed:  # no call to raise them from: flush() raises them, for these rows
            self._timed_failed.extend(failed)
            self._timed_total += total
            log.warning("rxbot: %s", InsertError(self.label(), failed, total,
                                                 "a batch written by the flush_interval timer; "
                                                 "raised when the input ends"))


def _remove_identical(rows: list, entry: Any) -> bool:
    """Remove ``entry`` itself (not an equal one) from ``rows``; whether it was there."""
    for i, row in enumerate(rows):
        if row is entry:
            del rows[i]
            return True
    return False


def _then_raise(values: List[Any], error: BaseException) -> Iterator[Any]:
    """Yield ``values``, then raise ``error``: a result that delivers what succeeded and
    still reports what failed."""
    yield from values
    raise error


__all__ = ["SqlNode", "QueryNode", "InsertNode", "InsertError", "InterruptedCommitError", "RowMapper",
           "DatabaseConnectionError"]
