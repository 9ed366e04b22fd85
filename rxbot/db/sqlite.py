"""SQLite nodes on aiosqlite, with the MySQL nodes' API: ``Query(sql, path='data.db')``,
``Insert(sql, path='data.db')``. Examples and tests run on them with no server.

All nodes of a run that use the same database file share one connection (refcounted).
That is what SQLite wants: a second connection writing while the first still streams a
result would wait for the reader's lock and fail with "database is locked"; on one
connection the statements simply interleave. It also lets ``path=':memory:'`` be
shared by the Query and Insert nodes of one run. The shared connection is in autocommit
mode; each Insert batch runs in its own ``BEGIN ... COMMIT`` under a per-connection lock.
"""
from __future__ import annotations

import asyncio
import os
import sqlite3
from typing import Any, AsyncIterator, Callable, Dict, Sequence, Tuple

import aiosqlite

from .base import DatabaseConnectionError, InsertNode, QueryNode, SqlNode, _check_seconds
from .params import SQLITE
from .sqlite_values import SQLiteValues


class _Shared:
    __slots__ = ("conn", "refs", "write_lock", "closed")

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self.refs = 0
        self.write_lock = asyncio.Lock()
        self.closed = False


#: (event loop, database key) -> the shared connection of the current run
_connections: Dict[Tuple[int, str], _Shared] = {}
_opening: Dict[Tuple[int, str], asyncio.Future] = {}


def _key(path: str) -> str:
    if path == ":memory:" or path.startswith("file:"):
        return path
    return os.path.abspath(path)


class _SQLite(SqlNode):
    fetch_size: int  # set by QueryNode (Query reads with it; Insert never does)
    paramstyle = SQLITE
    backslash_escapes = False

    def _setup(self, path: Any, busy_timeout: float) -> None:
        owner = self.label()
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if not isinstance(path, str) or not path:
            raise ValueError(f"{owner}: argument 'path' must be a database file path or ':memory:'; got {path!r}")
        self.path = path
        self.busy_timeout = _check_seconds(owner, "busy_timeout", busy_timeout)

    # the connection this node shares while a run has it open (set by _open)
    _shared: _Shared | None = None
    _slot: Tuple[int, str] | None = None

    def where(self) -> str:
        return self.path

    def make_values(self) -> SQLiteValues:
        return SQLiteValues(self.label())

    async def _open(self) -> None:
        slot = (id(asyncio.get_running_loop()), _key(self.path))
        shared: _Shared | None = _connections.get(slot)
        if shared is None:
            pending = _opening.get(slot)
            if pending is not None:  # another node of this run is opening it right now
                shared = await asyncio.shield(pending)
                assert shared is not None
            else:
                fut = _opening[slot] = asyncio.get_running_loop().create_future()
                try:
                    conn = await self._connect()
                except Exception as exc:
                    error = DatabaseConnectionError(
                        f"{self.label()}: cannot open SQLite database {self.path!r}: {type(exc).__name__}: {exc}")
                    fut.set_exception(error)
                    fut.exception()  # retrieved: other waiters re-raise it themselves
                    raise error from exc
                finally:
                    _opening.pop(slot, None)
                shared = _connections[slot] = _Shared(conn)
                fut.set_result(shared)
        shared.refs += 1
        self._shared, self._slot = shared, slot

    async def _connect(self) -> aiosqlite.Connection:
        folder = os.path.dirname(os.path.abspath(self.path))
        if _key(self.path) == os.path.abspath(self.path) and not os.path.isdir(folder):
            raise FileNotFoundError(f"no such directory: {folder!r}")
        pending = aiosqlite.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                    uri=self.path.startswith("file:"))
        try:
            return await pending
        except BaseException:
            # aiosqlite stops its worker thread without waiting; let it finish while this
            # loop is alive, or it reports to a closed loop later
            thread = getattr(pending, "_thread", None)
            if thread is not None:
                await asyncio.to_thread(thread.join, 2.0)
            raise

    async def _close(self) -> None:
        shared, slot = self._shared, self._slot
        self._shared = self._slot = None
        if shared is None:
            return
        shared.refs -= 1
        if shared.refs <= 0:
            if _connections.get(slot) is shared:  # type: ignore[arg-type]
                del _connections[slot]  # type: ignore[arg-type]
            shared.closed = True
            await shared.conn.close()

    def _conn(self) -> _Shared:
        if self._shared is None:
            raise RuntimeError(f"{self.label()}: used outside a run (init() has not been called)")
        return self._shared

    async def _rows(self, params: Any) -> AsyncIterator[dict]:
        shared = self._conn()  # this run's connection, even if the stream is finalised later
        cur = await shared.conn.execute(self.driver_sql, params)
        try:
            if cur.description is None:  # not a SELECT: nothing to emit
                return
            cols = [d[0] for d in cur.description]
            while True:
                rows = await cur.fetchmany(self.fetch_size)
                if not rows:
                    break
                for row in rows:
                    yield dict(zip(cols, row))
        finally:
            if not shared.closed:  # a stream abandoned by a failed run ends after close()
                await cur.close()

    async def _write(self, params_list: Sequence[Any], committing: Callable[[], None] = lambda: None) -> None:
        shared = self._conn()
        async with shared.write_lock:
            conn = shared.conn
            try:
                await conn.execute("BEGIN")
                await self._execute_all(conn, list(params_list))
                committing()
                await asyncio.shield(conn.execute("COMMIT"))
            except BaseException:
                # also after a cancellation: BEGIN (or COMMIT) may still run on the
                # connection's thread; the ROLLBACK queued behind it ends any transaction
                try:
                    await asyncio.shield(conn.execute("ROLLBACK"))
                except sqlite3.OperationalError:  # no transaction was active
                    pass
                raise

    async def _write_checkpointed(self, params_list: Sequence[Any], statements: Sequence[Tuple[str, Any]]
                                  ) -> list:
        """Rows, then ``statements``, in one transaction; a failing row is rolled back to
        its own savepoint and returned as ``(index, error)`` (see InsertNode.commit_checkpoint)."""
        shared = self._conn()
        failed: list = []
        async with shared.write_lock:
            conn = shared.conn
            try:
                await conn.execute("BEGIN")
                if params_list:
                    await conn.execute("SAVEPOINT rxbot_rows")
                    try:
                        await self._execute_all(conn, list(params_list))
                    except sqlite3.Error as exc:
                        if self._transient(exc):
                            raise
                        await conn.execute("ROLLBACK TO rxbot_rows")
                        for i, params in enumerate(params_list):
                            await conn.execute("SAVEPOINT rxbot_row")
                            try:
                                await conn.execute(self.driver_sql, params)
                            except sqlite3.Error as row_exc:
                                if self._transient(row_exc):
                                    raise
                                await conn.execute("ROLLBACK TO rxbot_row")
                                failed.append((i, row_exc))
                            await conn.execute("RELEASE rxbot_row")
                    await conn.execute("RELEASE rxbot_rows")
                for sql, params in statements:
                    await conn.execute(sql, params)
                await asyncio.shield(conn.execute("COMMIT"))
            except BaseException:
                try:
                    await asyncio.shield(conn.execute("ROLLBACK"))
                except sqlite3.OperationalError:
                    pass
                raise
        return failed

    async def read_checkpoint(self, sql: str, params: Any) -> list:
        shared = self._conn()
        async with shared.write_lock:
            cur = await shared.conn.execute(sql, params)
            try:
                return list(await cur.fetchall())
            finally:
                await cur.close()

    def _transient(self, exc: BaseException) -> bool:
        """Another connection (or process) holds the lock: worth another try."""
        text = str(exc).lower()
        return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)

    async def _execute_all(self, conn: aiosqlite.Connection, params_list: list) -> None:
        if len(params_list) == 1:
            await conn.execute(self.driver_sql, params_list[0])
            return
        try:
            await conn.executemany(self.driver_sql, params_list)
        except sqlite3.ProgrammingError as exc:
            if "DML" not in str(exc):
                raise
            for params in params_list:  # executemany() takes DML only; run anything else per item
                await conn.execute(self.driver_sql, params)


class Query(_SQLite, QueryNode):
    """``Query(sql, path='data.db', map_class=None)``: for each input item, run ``sql``
    with the item's values bound and emit one dict (or ``map_class`` instance) per row,
    fetched ``fetch_size`` at a time while downstream has room."""

    def __init__(self, sql: str, path: Any = "data.db", map_class: Callable[..., Any] | None = None,
                 fetch_size: int = 1000, busy_timeout: float = 5.0, **options: Any) -> None:
        QueryNode.__init__(self, sql, map_class, fetch_size, options)
        self._setup(path, busy_timeout)
        if self.concurrency is None:
            self.concurrency = 4


class Insert(_SQLite, InsertNode):
    """``Insert(sql, path='data.db', batch_size=500, flush_interval=1.0)``: run ``sql`` for
    every input item with its values bound, ``batch_size`` items per transaction; items
    pass downstream once their batch is committed."""

    def __init__(self, sql: str, path: Any = "data.db", batch_size: int = 500,
                 flush_interval: float | None = 1.0, busy_timeout: float = 5.0, close_timeout: float = 30.0,
                 **options: Any) -> None:
        InsertNode.__init__(self, sql, batch_size, flush_interval, options, close_timeout)
        self._setup(path, busy_timeout)


__all__ = ["Query", "Insert"]
