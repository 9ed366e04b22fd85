"""MySQL/MariaDB nodes on aiomysql: ``Query`` (stream rows) and ``Insert`` (batched writes).

Same call signature as databot 0.1.8 (``Query(sql, host=, port=, user=, password=, db=,
map_class=)``) but every value is bound by the driver (see :mod:`rxbot.db.params`).
Each node owns one connection pool per run, opened in ``init()`` and closed in
``close()``.
"""
from __future__ import annotations

import asyncio
import codecs
import logging
import re
from typing import Any, AsyncIterator, Callable, Sequence, Tuple

import aiomysql
import pymysql
from pymysql.constants import SERVER_STATUS

from .base import DatabaseConnectionError, InsertNode, QueryNode, SqlNode, _check_int, _check_seconds
from .mysql_values import Literals, MySQLValues, parse_offset, session_offset
from .params import PYFORMAT

log = logging.getLogger("rxbot")

#: how long closing waits for aiomysql to account for its closed connections
POOL_CLOSE_SECONDS = 5.0


#: the wake-up tasks give_back() starts (a task the loop holds only weakly must be kept)
_WAKING: set = set()


def give_back(pool: Any, conn: Any, broken: bool = False) -> None:
    """Return ``conn`` to ``pool``; a ``broken`` one (an error or a cancellation
    interrupted it) is closed first.

    aiomysql's ``Pool.release()`` wakes the tasks waiting in ``acquire()`` or
    ``wait_closed()`` only when the connection goes back to the free list. A connection
    that is closed, or still inside a transaction (which release() closes), shrinks the
    pool and tells nobody: a task waiting for a connection of a full pool then waits
    forever, with nothing scheduled (asyncmy, derived from aiomysql, has the same bug:
    long2ice/asyncmy#154). Every failed write closes its connection, so this is common:
    here the waiters are woken as release() would for a free connection.
    """
    if broken:
        conn.close()
    shrinks = conn.closed or bool(conn.get_transaction_status())
    pool.release(conn)
    if shrinks and not pool.closed:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop left to wait on it: nobody is waiting
            return
        task = loop.create_task(pool._wakeup())  # the wake-up release() skips
        _WAKING.add(task)
        task.add_done_callback(_WAKING.discard)


class _MySQL(SqlNode):
    """Connection handling shared by Query and Insert."""

    fetch_size: int  # set by QueryNode (Query reads with it; Insert never does)

    paramstyle = PYFORMAT
    backslash_escapes = True
    #: Query reads in autocommit mode so that a pooled connection never keeps an old
    #: REPEATABLE READ snapshot (it would not see rows committed later); Insert commits
    #: explicitly, once per batch.
    autocommit = True

    def _setup(self, host: str, port: int, user: str, password: str, db: str, pool_size: int,
               connect_timeout: float, charset: str, time_zone: str | None = None) -> None:
        owner = self.label()
        if not isinstance(host, str) or not host:
            raise ValueError(f"{owner}: argument 'host' must be a host name or address; got {host!r}")
        _check_int(owner, "port", port, 1)
        if port > 65535:
            raise ValueError(f"{owner}: argument 'port' must be <= 65535; got {port!r}")
        self.host, self.port, self.user, self.db = host, port, user, db
        self._password = password  # kept off repr/labels/messages
        self.pool_size = _check_int(owner, "pool_size", pool_size, 1)
        self.connect_timeout = _check_seconds(owner, "connect_timeout", connect_timeout)
        self.charset = charset
        if time_zone is not None and (not isinstance(time_zone, str) or parse_offset(time_zone) is None):
            raise ValueError(f"{owner}: argument 'time_zone' must be a fixed UTC offset like '+00:00' or "
                             f"'-05:30' (the session is set to it), or None for the server's; got {time_zone!r}")
        self.time_zone = time_zone
        # the pool, the warning tally and the value adapter are made when a run opens the
        # node (_open), not here: an idle node holds none of them (issue 26, item 11)

    _pool: Any = None
    #: this run's warnings (Insert), reported at close; None until a run opens the node
    _tally: WarningTally | None = None

    def make_values(self, offset: Any = None, zone: str = "not yet known (the node is not open)") -> MySQLValues:
        charset = getattr(self, "charset", "utf8mb4")
        try:
            encoding = codecs.lookup(pymysql.charset.charset_by_name(charset).encoding).name
        except (KeyError, LookupError, AttributeError):
            encoding = "utf-8"
        return MySQLValues(self.label(), charset=charset, encoding=encoding, offset=offset, zone=zone)

    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.db}"

    async def _open(self) -> None:
        self._tally = WarningTally()
        timeout = self.connect_timeout
        assert timeout is not None  # checked without allow_none in _setup
        try:
            # connect_timeout covers the TCP connect only; the outer wait_for also bounds a
            # server that accepts and then never answers the handshake.
            self._pool = await asyncio.wait_for(
                aiomysql.create_pool(
                    host=self.host, port=self.port, user=self.user, password=self._password,
                    db=self.db, minsize=1, maxsize=self.pool_size, connect_timeout=timeout,
                    autocommit=self.autocommit, charset=self.charset, echo=False,
                    init_command=None if self.time_zone is None else f"SET time_zone = '{self.time_zone}'",
                ),
                timeout=timeout * 2,
            )
        except asyncio.TimeoutError:
            raise DatabaseConnectionError(
                f"{self.label()}: timed out after {timeout:g}s connecting to MySQL at {self.where()}"
            ) from None
        except pymysql.err.MySQLError as exc:
            raise DatabaseConnectionError(
                f"{self.label()}: cannot connect to MySQL at {self.where()}: {_describe(exc)}"
            ) from exc
        try:
            self.values = await asyncio.wait_for(self._session_values(), timeout=timeout * 2)
        except BaseException as exc:
            await self._close()  # init() failed: nobody calls close()
            if isinstance(exc, (asyncio.TimeoutError, pymysql.err.MySQLError)):
                raise DatabaseConnectionError(
                    f"{self.label()}: could not read the session time zone from MySQL at {self.where()}: "
                    f"{type(exc).__name__}: {exc}") from exc
            raise

    async def _session_values(self) -> MySQLValues:
        """The value adapter for this run's sessions: aware datetimes are converted to the
        session's time zone when it is a fixed offset (see :mod:`rxbot.db.mysql_values`)."""
        async with self._pool.acquire() as conn:
            async with conn.cursor() as cur:
                await cur.execute("SELECT @@session.time_zone, @@system_time_zone")
                zone, system = await cur.fetchone()
            if not self.autocommit:
                await conn.rollback()  # end the read's transaction: no snapshot kept open
        shown = f"SYSTEM ({system})" if zone == "SYSTEM" else str(zone)
        return self.make_values(session_offset(str(zone), str(system)), shown)

    async def _close(self) -> None:
        tally, self._tally = self._tally, None
        line = tally.summary(self.sql) if tally is not None else None
        if line is not None:  # one line per run, not one per row (issue 26, item 16)
            log.warning("rxbot: %s: %s", self.label(), line)
        pool, self._pool = self._pool, None
        if pool is not None:
            # terminate, not close: a result stream abandoned by a failed run must not
            # keep wait_closed() waiting for its connection
            pool.terminate()
            try:
                # every connection is closed by now; what is left is aiomysql's bookkeeping,
                # which waits for a wake-up that a cancelled run's connect or release may
                # never send (seen once: a stopped run's close waiting with nothing to wait
                # for). A deadline, as on anything remote
                await asyncio.wait_for(pool.wait_closed(), timeout=POOL_CLOSE_SECONDS)
            except asyncio.TimeoutError:
                log.warning("rxbot: %s: the MySQL pool did not report closed within %gs; its "
                            "connections were closed, going on", self.label(), POOL_CLOSE_SECONDS)

    def _pool_now(self) -> Any:
        if self._pool is None:
            raise RuntimeError(f"{self.label()}: used outside a run (init() has not been called)")
        return self._pool

    async def _rows(self, params: Any) -> AsyncIterator[dict]:
        pool = self._pool_now()  # this run's pool, even if the stream is finalised later
        conn = await pool.acquire()
        clean = False
        try:
            cur = await conn.cursor(aiomysql.SSDictCursor)  # server-side: rows arrive as read
            await cur.execute(self.driver_sql, params)
            if cur.description is not None:
                while True:
                    rows = await cur.fetchmany(self.fetch_size)
                    if not rows:
                        break
                    for row in rows:
                        yield row
            await cur.close()
            clean = True
        finally:
            # unread rows or an interrupted read: dropping the connection is instant,
            # draining the rest of the result could take as long as the whole query
            give_back(pool, conn, broken=not clean)

    async def _write(self, params_list: Sequence[Any], committing: Callable[[], None] = lambda: None) -> None:
        pool = self._pool_now()
        conn = await pool.acquire()
        try:
            async with conn.cursor(_TallyCursor) as cur:
                sql, bulk, parts = self._many_sql()
                if parts is not None:  # INSERT ... VALUES (...): one multi-row INSERT per ~1 MB
                    affected = await self._insert_rows(cur, conn, parts, params_list)
                elif bulk:
                    affected = await cur.executemany(sql, list(params_list)) or 0
                else:
                    affected = 0
                    for params in params_list:
                        affected += await cur.execute(sql, params) or 0
            committing()
            await conn.commit()
        except BaseException:
            # closing aborts the transaction server-side; the pool opens a fresh one
            give_back(pool, conn, broken=True)
            raise
        give_back(pool, conn)
        # counted once committed: a batch rolled back and rewritten row by row is not counted twice
        tally = self._tally
        if tally is None:  # written after close() (a straggler of a cancelled run)
            tally = self._tally = WarningTally()
        tally.add(len(params_list), affected, cur.warning_total, cur.first_warning)

    async def _insert_rows(self, cur: Any, conn: Any, parts: Tuple[str, str, str],
                           params_list: Sequence[Any]) -> int:
        """What aiomysql's ``executemany`` does for ``INSERT ... VALUES (...)`` — rows joined
        into multi-row INSERTs of at most ``max_stmt_length`` bytes — with the literals
        made by :class:`~rxbot.db.mysql_values.Literals` from the already exact values
        (no second per-value dispatch in the driver)."""
        prefix, values, postfix = parts
        encoding = conn.encoding
        literals = _LITERALS[bool(conn.server_status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES)]
        row = literals.row
        limit = cur.max_stmt_length
        head, tail = prefix.encode(encoding), postfix.encode(encoding)
        sql = bytearray(head)
        empty = True
        affected = 0
        for params in params_list:
            # bytes were decoded with surrogateescape into the text: encoded back the same way
            # (a str value never holds a surrogate: MySQLValues refuses it)
            text = (values % row(params)).encode(encoding, "surrogateescape")
            if not empty and len(sql) + len(text) + len(tail) + 1 > limit:
                affected += await cur.execute(bytes(sql + tail)) or 0
                sql = bytearray(head)
                empty = True
            if not empty:
                sql += b","
            sql += text
            empty = False
        if not empty:
            affected += await cur.execute(bytes(sql + tail)) or 0
        return affected

    async def _write_checkpointed(self, params_list: Sequence[Any], statements: Sequence[Tuple[str, Any]]
                                  ) -> list:
        """Rows, then ``statements``, in one transaction; a failing row is rolled back to
        its own savepoint and returned as ``(index, error)`` (see InsertNode.commit_checkpoint)."""
        pool = self._pool_now()
        conn = await pool.acquire()
        failed: list = []
        try:
            async with conn.cursor() as cur:
                if params_list:
                    sql, bulk, parts = self._many_sql()
                    await cur.execute("SAVEPOINT rxbot_rows")
                    try:
                        if parts is not None:
                            await self._insert_rows(cur, conn, parts, params_list)
                        elif bulk:
                            await cur.executemany(sql, list(params_list))
                        else:
                            for params in params_list:
                                await cur.execute(sql, params)
                    except Exception as exc:
                        if self._transient(exc):
                            raise
                        await cur.execute("ROLLBACK TO SAVEPOINT rxbot_rows")
                        for i, params in enumerate(params_list):
                            await cur.execute("SAVEPOINT rxbot_row")
                            try:
                                await cur.execute(self.driver_sql, params)
                            except Exception as row_exc:
                                if self._transient(row_exc):
                                    raise
                                await cur.execute("ROLLBACK TO SAVEPOINT rxbot_row")
                                failed.append((i, row_exc))
                for sql, params in statements:
                    await cur.execute(sql, params)
            await conn.commit()
        except BaseException:
            give_back(pool, conn, broken=True)  # aborts the transaction server-side
            raise
        give_back(pool, conn)
        return failed

    async def read_checkpoint(self, sql: str, params: Any) -> list:
        pool = self._pool_now()
        conn = await pool.acquire()
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql, params)
                rows = list(await cur.fetchall()) if cur.description is not None else []
            await conn.commit()
        except BaseException:
            give_back(pool, conn, broken=True)
            raise
        give_back(pool, conn)
        return rows

    def _many_sql(self) -> Tuple[str, bool, Tuple[str, str, str] | None]:
        """The statement for a batch, whether the driver's ``executemany`` may batch it,
        and, for ``INSERT ... VALUES (...)``, its (prefix, row template, tail) for
        :meth:`_insert_rows`.

        For ``INSERT ... VALUES (...) <tail>`` the rows are joined into one multi-row
        INSERT and the tail (``ON DUPLICATE KEY UPDATE ...``) appended *without*
        %-formatting it, so a literal ``%`` there, doubled for the driver, would reach
        the server as ``%%``: the tail is un-doubled here. A tail with a placeholder of its
        own cannot go through that path at all (it would be sent unbound): such statements
        run row by row with ``execute``.
        """
        plan = getattr(self, "_many_plan", None)
        if plan is None:
            sql = self.driver_sql
            m = aiomysql.cursors.RE_INSERT_VALUES.match(sql)
            if m is None:
                plan = (sql, True, None)  # no bulk rewrite: the driver %-formats every row
            else:
                tail = m.group(3) or ""
                tokens = re.findall(r"%%|%\([^)]*\)s|%s", tail)
                if any(t != "%%" for t in tokens):
                    plan = (sql, False, None)
                else:
                    bulk = sql[:m.start(3)] + tail.replace("%%", "%") + sql[m.end(3):]
                    again = aiomysql.cursors.RE_INSERT_VALUES.match(bulk)
                    same = again is not None and again.group(1, 2) == m.group(1, 2)
                    if same:
                        assert again is not None
                        parts = (again.group(1) % (), again.group(2).rstrip(), again.group(3) or "")
                        plan = (bulk, True, parts)
                    else:
                        plan = (sql, False, None)
            self._many_plan = plan
        return plan

    def _transient(self, exc: BaseException) -> bool:
        if isinstance(exc, pymysql.err.InterfaceError):  # the connection was closed
            return True
        if isinstance(exc, pymysql.err.MySQLError):
            args: Tuple[Any, ...] = getattr(exc, "args", ())
            return bool(args) and args[0] in _TRANSIENT_CODES
        return isinstance(exc, (ConnectionError, asyncio.TimeoutError))


#: SQL literal makers for a server with (False) and without (True) backslash escapes
_LITERALS = {False: Literals(no_backslash=False), True: Literals(no_backslash=True)}


class _TallyCursor(aiomysql.Cursor):
    """A cursor that counts the server's warnings instead of raising one Python warning
    each: ``INSERT IGNORE`` warns once per skipped row (320 lines for 320 rows). The
    Insert node reports them as one summary line (see :class:`WarningTally`); only the
    first warning's text is fetched."""

    warning_total = 0
    first_warning: Tuple[Any, ...] | None = None

    async def _show_warnings(self, conn: Any) -> None:
        result = self._result
        if result is None or result.has_next:
            return
        self.warning_total += result.warning_count
        if self.first_warning is None:
            rows = await conn.show_warnings()
            if rows:
                self.first_warning = tuple(rows[0])


class WarningTally:
    """The warnings and row counts of one run of an Insert, for its summary line."""

    def __init__(self) -> None:
        self.sent = self.affected = self.warnings = 0
        self.first: Tuple[Any, ...] | None = None

    def add(self, sent: int, affected: int, warnings: int, first: Tuple[Any, ...] | None) -> None:
        self.sent += sent
        self.affected += affected
        self.warnings += warnings
        if self.first is None and first is not None:
            self.first = first

    def summary(self, sql: str) -> str | None:
        """One line, or None when the database reported nothing."""
        if not self.warnings:
            return None
        first = ""
        if self.first is not None:
            level, code, message = (tuple(self.first) + (None, None, None))[:3]
            first = f"; the first: {level} {code}: {message}"
        plain_ignore = _INSERT_IGNORE.match(sql) is not None and "on duplicate" not in sql.lower()
        if plain_ignore and self.affected <= self.sent:
            return (f"{self.sent - self.affected} of {self.sent} row(s) were skipped by the database "
                    f"(INSERT IGNORE), {self.warnings} warning(s){first}")
        return f"the database reported {self.warnings} warning(s) writing {self.sent} row(s){first}"


_INSERT_IGNORE = re.compile(r"\s*insert\s+(?:(?:low_priority|delayed|high_priority)\s+)?ignore\b", re.IGNORECASE)


#: server error codes worth repeating a write for: lock wait timeout, deadlock, and a
#: connection that could not be made, went away or was lost (client codes 2003-2055)
_TRANSIENT_CODES = frozenset({1205, 1213, 2003, 2006, 2013, 2055})


def _describe(exc: BaseException) -> str:
    """The driver's message plus its root cause (pymysql's 2003 alone does not say
    whether the port was closed or the name did not resolve) and what to check."""
    args: Tuple[Any, ...] = getattr(exc, "args", ())
    text = f"({args[0]}) {args[1]}" if len(args) == 2 and isinstance(args[0], int) else f"{type(exc).__name__}: {exc}"
    root = exc
    for _ in range(10):  # bounded: a chain can loop
        nxt = root.__cause__ or root.__context__
        if nxt is None:
            break
        root = nxt
    if root is not exc:
        text += f" ({type(root).__name__}: {root})"
    if args and args[0] in (1044, 1045):
        return text + "; check user, password and db"
    return text + "; check host, port and that the server is running" if args and args[0] == 2003 else text


class Query(_MySQL, QueryNode):
    """``Query(sql, host='127.0.0.1', port=3306, user='root', password='', db='test',
    map_class=None)``: for each input item, run ``sql`` with the item's values bound to
    its placeholders and emit one item per row — a dict (column -> value), or a
    ``map_class`` instance (see :class:`rxbot.db.base.RowMapper`).

    Rows stream through a server-side cursor (``SSDictCursor``), ``fetch_size`` at a
    time, pulled only while downstream has room. ``pool_size`` bounds the connections
    and, by default, the queries in flight.
    """

    def __init__(self, sql: str, host: str = "127.0.0.1", port: int = 3306, user: str = "root",
                 password: str = "", db: str = "test", map_class: Callable[..., Any] | None = None,
                 pool_size: int = 10, fetch_size: int = 1000, connect_timeout: float = 5.0,
                 charset: str = "utf8mb4", time_zone: str | None = None, **options: Any) -> None:
        QueryNode.__init__(self, sql, map_class, fetch_size, options)
        self._setup(host, port, user, password, db, pool_size, connect_timeout, charset, time_zone)
        if self.concurrency is None:
            self.concurrency = self.pool_size


class Insert(_MySQL, InsertNode):
    """``Insert(sql, host='127.0.0.1', port=3306, user='root', password='', db='test')``:
    run ``sql`` (typically ``INSERT ... VALUES ({a}, {b})``) for every input item with
    its values bound, ``batch_size`` items per ``executemany`` and commit; the items pass
    downstream once their batch is committed. ``flush_interval`` seconds after the first
    item of a batch, the batch is committed even if not full.
    """

    autocommit = False

    def __init__(self, sql: str, host: str = "127.0.0.1", port: int = 3306, user: str = "root",
                 password: str = "", db: str = "test", batch_size: int = 500,
                 flush_interval: float | None = 1.0, pool_size: int = 2, connect_timeout: float = 5.0,
                 charset: str = "utf8mb4", time_zone: str | None = None, close_timeout: float = 30.0,
                 **options: Any) -> None:
        InsertNode.__init__(self, sql, batch_size, flush_interval, options, close_timeout)
        self._setup(host, port, user, password, db, pool_size, connect_timeout, charset, time_zone)


#: databot's name for the base class of its MySQL nodes (``from databot.db.mysql import
#: Mysql``): here the connection handling that Query and Insert share
Mysql = _MySQL

__all__ = ["Query", "Insert", "Mysql"]
