"""The Store: everything the bot keeps, through one connection: a SQLite file by default
(aiosqlite), or a PostgreSQL database shared by several processes (`bot.store.postgres`).

Promises, on both backends:
- The schema is migrated (or refused) when opened. On SQLite the WAL journal and foreign keys
  are on, and a new database file is readable and writable by its owner only.
- Each write method is one transaction: it happens whole or not at all. Writers are serialised
  by a lock, so two coroutines never interleave statements inside one transaction; across
  processes by the database's write lock (SQLite's, or an advisory lock on PostgreSQL).
- When another process holds the write lock, the store waits `busy_timeout_ms`; the transaction
  then retries a bounded number of times (counted in `busy_retries`) and finally raises
  `StoreBusy` (with a user message). A PostgreSQL serialisation failure is `StoreBusy` too.
- Times are stored as ISO-8601 UTC text (`utcnow()`) on both, so code reading them is the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Generator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import aiosqlite

from bot.store import migrator
from bot.store.errors import Locked, StoreBusy
from bot.store.migrator import MigrationState

if TYPE_CHECKING:
    from bot.store.postgres import PgConnection

log = logging.getLogger(__name__)


# A row: addressable by column name and by index, and `dict(row)` gives its columns
# (`sqlite3.Row` on SQLite, `asyncpg.Record` on PostgreSQL).
Row = Any


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    async def fetchone(self) -> Row | None: ...

    async def fetchall(self) -> Iterable[Row]: ...


class Executing(Protocol):
    """A statement on its way: awaited, or entered with `async with`, it gives its cursor."""

    def __await__(self) -> Generator[Any, None, Cursor]: ...

    async def __aenter__(self) -> Cursor: ...

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any, /) -> Any: ...


class Connection(Protocol):
    """The part of aiosqlite's connection the store uses (`PgConnection` has it too)."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Iterable[Any] = ..., /) -> Executing: ...


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class NewGeneration:
    """A finished generation, ready to be written in one piece."""

    channel_id: int
    user_id: int
    command: str
    prompt: dict[str, Any]
    params: dict[str, Any]
    model: str
    output: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    queued_ms: int
    generation_ms: int
    guild_id: int | None = None
    refines_id: int | None = None
    refine_kind: str | None = None


@dataclass(frozen=True, slots=True)
class GenerationRecord:
    id: int
    output_id: int | None
    guild_id: int | None
    channel_id: int
    user_id: int
    command: str
    prompt: dict[str, Any]
    params: dict[str, Any]
    model: str
    output: str
    finish_reason: str
    refines_id: int | None
    refine_kind: str | None
    prompt_tokens: int
    completion_tokens: int
    queued_ms: int
    generation_ms: int
    created_at: str
    message_id: int | None


@dataclass(frozen=True, slots=True)
class OutputRecord:
    id: int
    guild_id: int | None
    channel_id: int
    message_id: int | None
    requester_id: int
    command: str
    chosen_id: int | None
    created_at: str


def _is_postgres(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def _sqlite_path(target: str | Path) -> Path:
    """The file a SQLite target names (a path, or `sqlite:///path`)."""
    text = str(target)
    return Path(text.removeprefix("sqlite:///")) if text.startswith("sqlite:///") else Path(target)


def _create_private(path: Path) -> None:
    """Create an empty database file with mode 0600 before SQLite opens it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


class Store:
    """Async access to the database. Build it with `Store.open(path or URL)`."""

    BUSY_RETRIES = 3

    def __init__(
        self,
        db: Connection,
        migrations: list[migrator.Migration],
        *,
        path: Path | None = None,
        location: str = "",
        busy_timeout_ms: int = 5000,
    ) -> None:
        self._db = db
        self.path = path  # the SQLite file; None on PostgreSQL
        self.location = location or str(path)  # where the data is, for logs (no password)
        # which SQL the few statements the two spell differently use (PgConnection says)
        self.dialect: str = getattr(db, "dialect", "sqlite")
        self.migrations = migrations
        # writes begun again because another process held the write lock past the wait
        self.busy_retries = 0
        self._busy_timeout_ms = busy_timeout_ms
        self._write_lock = asyncio.Lock()

    # -- lifetime -----------------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        target: str | Path,
        *,
        migrate: bool = True,
        migrations_dir: Path | Traversable | None = None,
        busy_timeout_ms: int = 5000,
    ) -> AsyncIterator[Store]:
        """Open the database at `target` (a SQLite file, created if needed, or `sqlite:///path`;
        or a `postgresql://user:pass@host:port/db` URL), migrate it, and close it on exit.

        With `migrate=False` the schema is only checked: pending migrations are left alone
        (for `db status`), but a database from a newer version is still refused.
        `migrations_dir` defaults to the SQL files shipped in the `migrations` package (its
        `postgresql` folder on PostgreSQL). A PostgreSQL server that cannot be reached raises
        `StoreUnavailable` naming it (without the password).
        """
        if _is_postgres(target):
            async with cls._open_postgres(
                str(target), migrate, migrations_dir, busy_timeout_ms
            ) as store:
                yield store
            return
        path = _sqlite_path(target)
        _create_private(path)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            await db.execute("PRAGMA synchronous=NORMAL")
            db.row_factory = aiosqlite.Row
            found = migrator.discover(migrations_dir or migrator.MIGRATIONS_DIR)
            store = cls(db, found, path=path, busy_timeout_ms=busy_timeout_ms)
            await store._check_schema(migrate)
            yield store
        finally:
            await db.close()

    @classmethod
    @asynccontextmanager
    async def _open_postgres(
        cls,
        url: str,
        migrate: bool,
        migrations_dir: Path | Traversable | None,
        busy_timeout_ms: int,
    ) -> AsyncIterator[Store]:
        from bot.store.postgres import PgConnection, redacted  # asyncpg: only when used

        db = await PgConnection.connect(url)
        try:
            found = migrator.discover(migrations_dir or migrator.POSTGRES_MIGRATIONS_DIR)
            store = cls(db, found, location=redacted(url), busy_timeout_ms=busy_timeout_ms)
            await store._check_schema(migrate)
            yield store
        finally:
            await db.close()

    async def _check_schema(self, migrate: bool) -> None:
        if migrate:
            await migrator.upgrade(self._db, self.migrations)
        else:
            await migrator.status(self._db, self.migrations)

    async def migration_status(self) -> list[MigrationState]:
        """Every known migration and when it was applied (None: pending)."""
        return await migrator.status(self._db, self.migrations)

    async def upgrade(self) -> list[migrator.Migration]:
        """Apply pending migrations; returns those applied."""
        async with self._write_lock:
            return await migrator.upgrade(self._db, self.migrations)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error; on
        PostgreSQL, BEGIN and the write lock).

        Safe to cancel at any point: no transaction is ever left open on the connection (a
        statement already handed to the database runs to its end, then the cancellation goes
        on). Raises `StoreBusy` if another process keeps the database locked through every
        retry.
        """
        async with self._write_lock:
            for attempt in range(self.BUSY_RETRIES + 1):
                try:
                    await _to_the_end(self._begin())
                    break
                except asyncio.CancelledError:
                    if self._db.in_transaction:
                        await _to_the_end(self._db.execute("ROLLBACK"))
                    raise
                except (sqlite3.OperationalError, Locked) as exc:
                    if isinstance(exc, sqlite3.OperationalError) and not (
                        "locked" in str(exc) or "busy" in str(exc)
                    ):
                        raise
                    if attempt == self.BUSY_RETRIES:
                        raise StoreBusy(str(exc)) from exc
                    self.busy_retries += 1
                    log.warning(
                        "database busy (%s); retry %d (%d retries so far)",
                        exc,
                        attempt + 1,
                        self.busy_retries,
                    )
                    await asyncio.sleep(0.05 * 2**attempt)
            try:
                yield self._db
            except BaseException:
                await _to_the_end(self._db.execute("ROLLBACK"))
                raise
            await _to_the_end(self._db.execute("COMMIT"))

    async def _begin(self) -> None:
        if self.dialect == "postgresql":
            await cast("PgConnection", self._db).begin_write(self._busy_timeout_ms)
        else:
            await self._db.execute("BEGIN IMMEDIATE")

    async def fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        """Run a read query. For tests and diagnostics; services use the typed methods."""
        async with self._db.execute(sql, params) as cur:
            return list(await cur.fetchall())

    # -- outputs and generations ----------------------------------------------------------------

    async def save_output(
        self, gen: NewGeneration, *, request_id: int | None = None
    ) -> tuple[int, int]:
        """Store a new output (a message to be shown) with `gen` as its first, chosen alternative.

        Returns (output_id, generation_id). The message id is attached later with
        `set_output_message`, once Discord has accepted the message. With `request_id`, the
        journalled request is marked saved in the same transaction; if it is no longer
        pending, nothing is stored and `RequestEnded` is raised.
        """
        async with self.transaction() as db:
            output_id = await inserted_id(
                db,
                "INSERT INTO outputs (guild_id, channel_id, requester_id, command, created_at)"
                " VALUES (?, ?, ?, ?, ?) RETURNING id",
                (gen.guild_id, gen.channel_id, gen.user_id, gen.command, utcnow()),
            )
            generation_id = await self._insert_generation(db, gen, output_id)
            await db.execute(
                "UPDATE outputs SET chosen_id = ? WHERE id = ?", (generation_id, output_id)
            )
            await _journal_saved(db, request_id, output_id, generation_id)
        return output_id, generation_id

    async def add_alternative(
        self, output_id: int, gen: NewGeneration, *, request_id: int | None = None
    ) -> int:
        """Add `gen` as a new alternative of an existing output and mark it chosen (and the
        journalled request `request_id` saved, as `save_output` does)."""
        async with self.transaction() as db:
            generation_id = await self._insert_generation(db, gen, output_id)
            await db.execute(
                "UPDATE outputs SET chosen_id = ? WHERE id = ?", (generation_id, output_id)
            )
            await _journal_saved(db, request_id, output_id, generation_id)
        return generation_id

    @staticmethod
    async def _insert_generation(db: Connection, gen: NewGeneration, output_id: int | None) -> int:
        return await inserted_id(
            db,
            "INSERT INTO generations (output_id, guild_id, channel_id, user_id, command, prompt,"
            " params, model, output, finish_reason, refines_id, refine_kind, prompt_tokens,"
            " completion_tokens, queued_ms, generation_ms, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                output_id,
                gen.guild_id,
                gen.channel_id,
                gen.user_id,
                gen.command,
                json.dumps(gen.prompt),
                json.dumps(gen.params),
                gen.model,
                gen.output,
                gen.finish_reason,
                gen.refines_id,
                gen.refine_kind,
                gen.prompt_tokens,
                gen.completion_tokens,
                gen.queued_ms,
                gen.generation_ms,
                utcnow(),
            ),
        )

    async def set_output_message(self, output_id: int, message_id: int) -> None:
        """Record the Discord message that shows an output."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE outputs SET message_id = ? WHERE id = ?", (message_id, output_id)
            )

    async def get_output_by_message(self, message_id: int) -> OutputRecord | None:
        """The output shown by a Discord message, or None if the bot never showed one there."""
        rows = await self.fetchall("SELECT * FROM outputs WHERE message_id = ?", (message_id,))
        return OutputRecord(**dict(rows[0])) if rows else None

    async def get_generation(self, generation_id: int) -> GenerationRecord | None:
        """One generation with the message that shows it, or None."""
        rows = await self.fetchall(
            "SELECT g.*, o.message_id FROM generations g"
            " LEFT JOIN outputs o ON o.id = g.output_id WHERE g.id = ?",
            (generation_id,),
        )
        return _generation(rows[0]) if rows else None

    async def last_generation(self, channel_id: int) -> GenerationRecord | None:
        """The channel's latest generation (the answer written last), or None."""
        rows = await self.fetchall(
            "SELECT g.*, o.message_id FROM generations g"
            " LEFT JOIN outputs o ON o.id = g.output_id WHERE g.channel_id = ?"
            " ORDER BY g.created_at DESC, g.id DESC LIMIT 1",
            (channel_id,),
        )
        return _generation(rows[0]) if rows else None

    async def get_output(self, output_id: int) -> OutputRecord | None:
        rows = await self.fetchall("SELECT * FROM outputs WHERE id = ?", (output_id,))
        return OutputRecord(**dict(rows[0])) if rows else None

    async def alternatives(self, output_id: int) -> list[GenerationRecord]:
        """Every alternative of an output, oldest first (the order ◀ ▶ browse in)."""
        rows = await self.fetchall(
            "SELECT g.*, o.message_id FROM generations g JOIN outputs o ON o.id = g.output_id"
            " WHERE g.output_id = ? ORDER BY g.id",
            (output_id,),
        )
        return [_generation(row) for row in rows]

    async def choose(self, output_id: int, generation_id: int) -> None:
        """Record `generation_id` (an alternative of the output) as the one shown."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE outputs SET chosen_id = ? WHERE id = ? AND EXISTS (SELECT 1 FROM"
                " generations WHERE id = ? AND output_id = ?)",
                (generation_id, output_id, generation_id, output_id),
            )

    async def generations_since(self, guild_id: int, since: str) -> int:
        """How many generations a server had since `since` (an ISO time), refinements included."""
        rows = await self.fetchall(
            "SELECT COUNT(*) FROM generations WHERE guild_id = ? AND created_at >= ?",
            (guild_id, since),
        )
        return int(rows[0][0])

    async def delete_output(self, output_id: int) -> None:
        """Forget an output with all its alternatives and their feedback."""
        async with self.transaction() as db:
            await db.execute("DELETE FROM outputs WHERE id = ?", (output_id,))

    # -- settings ---------------------------------------------------------------------------------

    async def get_scope_settings(self, scope: str, scope_id: int) -> dict[str, Any]:
        """The stored overrides of one guild or channel (undecodable values read as None)."""
        rows = await self.fetchall(
            "SELECT key, value FROM settings WHERE scope = ? AND scope_id = ?", (scope, scope_id)
        )
        return {row["key"]: _loads(row["value"]) for row in rows}

    async def set_setting(
        self,
        scope: str,
        scope_id: int,
        key: str,
        value: Any,
        *,
        guild_id: int | None = None,
        user_id: int | None = None,
    ) -> None:
        """Set one override for a guild or a channel."""
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO settings (scope, scope_id, guild_id, key, value, updated_by,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (scope, scope_id, key)"
                " DO UPDATE SET value = excluded.value, updated_by = excluded.updated_by,"
                " updated_at = excluded.updated_at",
                (scope, scope_id, guild_id, key, json.dumps(value), user_id, utcnow()),
            )

    async def reset_settings(self, scope: str, scope_id: int) -> None:
        """Remove every override of a guild or a channel."""
        async with self.transaction() as db:
            await db.execute(
                "DELETE FROM settings WHERE scope = ? AND scope_id = ?", (scope, scope_id)
            )


async def inserted_id(db: Connection, sql: str, params: tuple[Any, ...]) -> int:
    """Run an `INSERT ... RETURNING id` (SQLite >= 3.35 and PostgreSQL alike); the new id."""
    async with db.execute(sql, params) as cur:
        row = await cur.fetchone()
    assert row is not None, "an INSERT ... RETURNING id returned no row"
    return int(row[0])


async def _to_the_end(step: Awaitable[Any]) -> Any:
    """Await `step` to its end even if the caller is cancelled meanwhile, then let the
    cancellation go on: a BEGIN, COMMIT or ROLLBACK cut off half-way would leave the shared
    connection inside a transaction that no one owns."""
    task = asyncio.ensure_future(step)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


class RequestEnded(RuntimeError):
    """The journalled request was already answered, cancelled or given up: its answer is not
    stored a second time."""


async def _journal_saved(
    db: Connection, request_id: int | None, output_id: int, generation_id: int
) -> None:
    """Mark a pending journalled request saved with its generation (inside the caller's
    transaction); raises `RequestEnded`, rolling it back, when the request is not pending."""
    if request_id is None:
        return
    cur = await db.execute(
        "UPDATE requests SET state = 'saved', output_id = ?, generation_id = ?, updated_at = ?"
        " WHERE id = ? AND state = 'pending'",
        (output_id, generation_id, utcnow(), request_id),
    )
    if cur.rowcount != 1:
        raise RequestEnded(request_id)


def _generation(row: Row) -> GenerationRecord:
    values = dict(row)
    values["prompt"] = _loads(values["prompt"])
    values["params"] = _loads(values["params"])
    return GenerationRecord(**values)


def _loads(text: str) -> Any:
    """Decode a stored JSON field; a damaged one reads as None rather than crashing a command."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None
