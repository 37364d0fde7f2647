"""Plain numbered SQL migrations (`migrations/NNNN_name.sql`), recorded inside the database.

SQLite's files are `migrations/*.sql`; PostgreSQL's, with the same numbers and names, are in
`migrations/postgresql/` (its types differ: 64-bit ids, identity columns). Both are recorded in
`schema_migrations` the same way, so `db status` and `db upgrade` read alike on either.

The files ship inside the top-level `migrations` package (as package data) and are found through
`importlib.resources`, so an installed bot finds them as well as a checkout does. Each file is
applied together with its row in `schema_migrations` in one transaction: a failing migration
leaves the database exactly as it was. Landed files are never edited; a schema change is a new
file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from bot.store.database import Connection
    from bot.store.postgres import PgConnection

# The shipped migrations. Tests pass a `Path` of their own instead; both are `Traversable`.
MIGRATIONS_DIR: Traversable = files("migrations")
POSTGRES_MIGRATIONS_DIR: Traversable = MIGRATIONS_DIR / "postgresql"
_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The database and the code disagree about the schema, or a migration failed."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path | Traversable

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True, slots=True)
class MigrationState:
    migration: Migration
    applied_at: str | None


def discover(directory: Path | Traversable = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in `directory`, in version order; duplicates are an error."""
    found: dict[int, Migration] = {}
    sql_files = [item for item in directory.iterdir() if item.name.endswith(".sql")]
    for path in sorted(sql_files, key=lambda item: item.name):
        match = _NAME_RE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lower_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations share the number {version:04d}")
        found[version] = Migration(version, match.group(2), path)
    return [found[v] for v in sorted(found)]


_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)


def _postgres(db: Connection) -> PgConnection | None:
    return cast("PgConnection", db) if getattr(db, "dialect", "") == "postgresql" else None


async def _ensure_table(db: Connection) -> None:
    pg = _postgres(db)
    if pg is not None:
        await pg.ensure_table("schema_migrations", _TABLE)
    else:
        await db.execute(_TABLE)


async def status(db: Connection, migrations: list[Migration]) -> list[MigrationState]:
    """Every known migration with when it was applied (None: pending).

    Raises `MigrationError` when the database has a migration this code does not know, which
    means a newer version of the bot wrote it.
    """
    await _ensure_table(db)
    async with db.execute("SELECT version, name, applied_at FROM schema_migrations") as cur:
        applied = {row[0]: (row[1], row[2]) for row in await cur.fetchall()}
    known = {m.version: m for m in migrations}
    unknown = sorted(v for v in applied if v not in known)
    if unknown:
        labels = ", ".join(f"{v:04d}_{applied[v][0]}" for v in unknown)
        raise MigrationError(
            f"The database has migration(s) {labels} that this version of LLMOS does not know. "
            "It was upgraded by a newer version: run that version, or restore a backup."
        )
    return [MigrationState(m, applied.get(m.version, (None, None))[1]) for m in migrations]


async def upgrade(db: Connection, migrations: list[Migration]) -> list[Migration]:
    """Apply every pending migration in order; returns those applied.

    A SQLite connection must be in autocommit mode (`isolation_level=None`) so that the explicit
    BEGIN/COMMIT below are the only transaction boundaries. On PostgreSQL each migration runs
    under the write lock, and one that another process applied meanwhile is skipped.
    """
    done: list[Migration] = []
    for state in await status(db, migrations):
        if state.applied_at is not None:
            continue
        migration = state.migration
        sql = migration.path.read_text(encoding="utf-8")
        now = datetime.now(UTC).isoformat(timespec="seconds")
        pg = _postgres(db)
        if pg is not None:
            try:
                if await pg.apply(sql, migration.version, migration.name, now):
                    done.append(migration)
            except Exception as exc:
                raise MigrationError(f"migration {migration.label} failed: {exc}") from exc
            continue
        lite: Any = db  # aiosqlite's connection: executescript
        # executescript runs the file and its record as one transaction; name and version
        # come from a validated file name, so the f-string cannot inject anything.
        script = (
            "BEGIN IMMEDIATE;\n"
            f"{sql}\n;\n"
            "INSERT INTO schema_migrations (version, name, applied_at) "
            f"VALUES ({migration.version}, '{migration.name}', '{now}');\n"
            "COMMIT;"
        )
        try:
            await lite.executescript(script)
        except Exception as exc:
            if lite.in_transaction:
                await lite.execute("ROLLBACK")
            raise MigrationError(f"migration {migration.label} failed: {exc}") from exc
        done.append(migration)
    return done
