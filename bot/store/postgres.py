"""PostgreSQL behind the small part of aiosqlite's API that the store uses.

`PgConnection` runs the store's SQL (written with `?` placeholders, in the dialect both databases
share) on one asyncpg connection: `execute` is awaitable and usable as `async with`, its cursor
has `fetchone`, `fetchall` and `rowcount`, and rows are addressable by name and by index
(`asyncpg.Record`). Promises:
- Statements on the connection run one at a time, in the order they were issued (asyncpg allows
  one at a time; aiosqlite queues them the same way).
- `begin_write` is SQLite's BEGIN IMMEDIATE: a transaction that first takes the database's one
  write lock (a transaction-level advisory lock), so writers from every process are serialised
  exactly as they are on SQLite, and every promise that rests on that (a vote closes once,
  positions are never reused) holds unchanged. It raises `Locked` when the lock stays taken.
- A lost connection (the server restarted, a proxy dropped it) is opened again on the next
  statement: a read or a BEGIN that found it lost runs again once on the new one; a write
  transaction it cut short fails (the server rolled it back) and the next one goes through.
- Errors come back as the store's errors (`bot.store.errors`): a broken constraint as
  `sqlite3.IntegrityError`, a serialisation failure or lock timeout as `StoreBusy`, anything
  else as `sqlite3.DatabaseError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import Coroutine, Generator, Iterable
from functools import lru_cache
from typing import Any

import asyncpg

from bot.config import without_password
from bot.store.errors import Locked, StoreBusy, StoreUnavailable

# The advisory lock every write transaction takes ("LLMOS" in ASCII): one writer at a time.
WRITE_LOCK = 0x4C4C4D4F53
_RETURNS_ROWS = re.compile(r"^\s*(SELECT|WITH|VALUES)\b|\bRETURNING\b", re.IGNORECASE)
_READ = re.compile(r"^\s*(SELECT|WITH)\b", re.IGNORECASE)


def redacted(url: str) -> str:
    """The URL without its password (for logs and messages)."""
    return without_password(url)


@lru_cache(maxsize=1024)
def placeholders(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1, $2, ...` (a `?` inside a quoted literal stays)."""
    out: list[str] = []
    count = 0
    quote: str | None = None
    for char in sql:
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "?":
            count += 1
            out.append(f"${count}")
            continue
        out.append(char)
    return "".join(out)


def _translated(exc: asyncpg.PostgresError) -> Exception:
    """The store's error for a PostgreSQL one (see the module's promises)."""
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return sqlite3.IntegrityError(str(exc))
    if isinstance(exc, asyncpg.TransactionRollbackError | asyncpg.LockNotAvailableError):
        return StoreBusy(str(exc))
    if isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.AdminShutdownError):
        return sqlite3.OperationalError(f"lost the connection to PostgreSQL: {exc}")
    return sqlite3.DatabaseError(f"{type(exc).__name__}: {exc}")


async def _open(url: str, timeout_s: float = 10.0) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=timeout_s)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise StoreUnavailable(
            f"cannot open the PostgreSQL database {redacted(url)}: {exc}"
        ) from exc


def _lost(conn: asyncpg.Connection, exc: asyncpg.PostgresError) -> bool:
    """Whether `exc` means the connection is gone (then it is closed here for good)."""
    gone = (asyncpg.PostgresConnectionError, asyncpg.AdminShutdownError)
    if conn.is_closed() or isinstance(exc, gone):
        conn.terminate()
        return True
    return False


class PgCursor:
    """The rows of one statement (fetched whole: the store's results are small)."""

    def __init__(self, rows: list[asyncpg.Record], rowcount: int) -> None:
        self._rows = rows
        self._next = 0
        self.rowcount = rowcount

    async def fetchone(self) -> asyncpg.Record | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    async def fetchall(self) -> list[asyncpg.Record]:
        rest, self._next = self._rows[self._next :], len(self._rows)
        return rest

    async def __aenter__(self) -> PgCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


async def _to_the_end(step: Coroutine[Any, Any, PgCursor]) -> PgCursor:
    """Await `step`; if cancelled meanwhile, let it finish first, then be cancelled."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


class _Executing:
    """A statement on its way: awaited, or entered with `async with`, it gives its cursor."""

    def __init__(self, step: Any) -> None:
        self._step = step

    def __await__(self) -> Generator[Any, None, PgCursor]:
        result: PgCursor = yield from self._step.__await__()
        return result

    async def __aenter__(self) -> PgCursor:
        result: PgCursor = await self._step
        return result

    async def __aexit__(self, *exc: object) -> None:
        return None


class PgConnection:
    """One asyncpg connection that speaks like the store's aiosqlite one."""

    dialect = "postgresql"

    def __init__(self, conn: asyncpg.Connection, url: str) -> None:
        self._conn = conn
        self._url = url
        self._lock = asyncio.Lock()
        self._writing = False  # inside `begin_write`'s transaction, until COMMIT or ROLLBACK
        self.reconnects = 0

    @classmethod
    async def connect(cls, url: str) -> PgConnection:
        """Connect to the database at `url`; `StoreUnavailable` (naming the server, not the
        password) when it cannot be reached."""
        return cls(await _open(url), url)

    async def _connected(self) -> asyncpg.Connection:
        """The connection, opened again if it was lost."""
        if self._conn.is_closed():
            self._conn = await _open(self._url)
            self.reconnects += 1
        return self._conn

    async def close(self) -> None:
        await self._conn.close()

    @property
    def in_transaction(self) -> bool:
        return self._conn.is_in_transaction()

    def execute(self, sql: str, parameters: Iterable[Any] = ()) -> _Executing:
        """Run one statement (`?` placeholders); awaitable, or usable as `async with`.

        A statement handed to the server runs to its end before a cancellation goes on, as in
        aiosqlite's thread: a read cancelled mid-statement would have asyncpg cancel it on the
        server, which aborts the transaction of whichever writer shares this connection."""
        return _Executing(_to_the_end(self._run(sql, tuple(parameters))))

    async def _run(self, sql: str, args: tuple[Any, ...]) -> PgCursor:
        query = placeholders(sql)
        async with self._lock:
            writing = self._writing
            if query in ("COMMIT", "ROLLBACK"):
                self._writing = False
            if writing and query != "ROLLBACK" and self._conn.is_closed():
                # never on a new connection: there the rest would run outside the transaction
                raise sqlite3.OperationalError("lost the connection to PostgreSQL mid-transaction")
            for attempt in (1, 2):
                conn = await self._connected()
                # a read outside any transaction may run again on a new connection
                again = attempt == 1 and not conn.is_in_transaction() and _READ.match(query)
                if query == "ROLLBACK" and not conn.is_in_transaction():
                    return PgCursor([], 0)  # a lost connection's transaction died with it
                try:
                    if _RETURNS_ROWS.search(query):
                        rows = await conn.fetch(query, *args)
                        return PgCursor(rows, len(rows))
                    status = await conn.execute(query, *args)
                    break
                except asyncpg.PostgresError as exc:
                    lost = _lost(conn, exc)
                    if again and lost:
                        continue
                    raise _translated(exc) from exc
                except asyncpg.InterfaceError as exc:
                    # the client's own errors (a closed connection, a value of the wrong type):
                    # the store's callers know sqlite3's errors only
                    if conn.is_closed():
                        if again:
                            continue
                        raise sqlite3.OperationalError(
                            f"lost the connection to PostgreSQL: {exc}"
                        ) from exc
                    raise sqlite3.DatabaseError(f"{type(exc).__name__}: {exc}") from exc
        # "UPDATE 3", "DELETE 0", "INSERT 0 1": the count is the last word
        last = status.rsplit(" ", 1)[-1]
        return PgCursor([], int(last) if last.isdigit() else -1)

    async def begin_write(self, timeout_ms: int) -> None:
        """BEGIN, then take the database's write lock, waiting at most `timeout_ms`; raises
        `Locked` (with the transaction rolled back) when another writer keeps it."""
        # one round trip: the three statements go as one simple query
        begin = (
            f"BEGIN; SET LOCAL lock_timeout = {int(timeout_ms)};"
            f" SELECT pg_advisory_xact_lock({WRITE_LOCK})"
        )
        async with self._lock:
            for attempt in (1, 2):
                conn = await self._connected()
                try:
                    await conn.execute(begin)
                except BaseException as exc:
                    if isinstance(exc, asyncpg.PostgresError) and _lost(conn, exc):
                        if attempt == 1:
                            continue  # found lost: nothing was done, begin again
                        raise _translated(exc) from exc
                    if conn.is_in_transaction():
                        await conn.execute("ROLLBACK")
                    if isinstance(exc, asyncpg.LockNotAvailableError):
                        raise Locked(str(exc)) from exc
                    if isinstance(exc, asyncpg.PostgresError):
                        raise _translated(exc) from exc
                    raise
                self._writing = True
                return

    async def ensure_table(self, name: str, ddl: str) -> None:
        """Create the table `name` with `ddl` if it is missing, under the write lock (two
        processes starting at once would otherwise race on the catalogue)."""
        async with self._lock:
            conn = await self._connected()
            if await conn.fetchval("SELECT to_regclass($1)", name) is not None:
                return  # the usual case: no lock needed
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
                await conn.execute(ddl)

    async def apply(self, script: str, version: int, name: str, applied_at: str) -> bool:
        """Run a migration script and record it in `schema_migrations`, in one transaction
        under the write lock; False (nothing done) if another process applied it meanwhile."""
        async with self._lock:
            conn = await self._connected()
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
                if await conn.fetchval(
                    "SELECT 1 FROM schema_migrations WHERE version = $1", version
                ):
                    return False
                await conn.execute(script)  # no arguments: the simple protocol, many statements
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    version,
                    name,
                    applied_at,
                )
        return True
