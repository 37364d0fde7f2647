"""Lorebooks: a story's (or a channel's) entries and characters, on the store's transactions.

Promises: names are unique per lorebook, ignoring case; `add_many` is all or nothing (an
import lands whole or not at all); entries come back in the order people would read them
(priority, highest first, then name). Entries are checked (`bot.lore.entries.check`) by the
caller; the store keeps what it is given. `book()` keeps each lorebook ready to match (a
thousand entries take milliseconds to prepare) until one of its entries changes through this
object.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from bot.lore.entries import LoreEntry
from bot.lore.select import Lorebook
from bot.store.database import Connection, Row, Store, inserted_id, utcnow
from bot.store.errors import IntegrityError

Scope = Literal["story", "channel"]
# A lorebook holds at most this many entries: selection stays fast (see tests/test_lore.py).
MAX_ENTRIES = 2000


def _same_name(dialect: str) -> str:
    """`name` matches the parameter in any case, lowered the way the name column is: on
    PostgreSQL that column is collated "C" (ASCII-only lowering, like SQLite's), and a bare
    parameter would be lowered in the database's own collation ('É' -> 'é'), matching nothing."""
    if dialect == "postgresql":
        return 'lower(name) = lower(CAST(? AS TEXT) COLLATE "C")'
    return "lower(name) = lower(?)"


class LoreExists(RuntimeError):
    """An entry of that name is already in the lorebook."""


class LoreFull(RuntimeError):
    """The lorebook would hold more than `MAX_ENTRIES` entries."""


def _entry(row: Row) -> LoreEntry:
    return LoreEntry(
        id=row["id"],
        name=row["name"],
        text=row["text"],
        keys=tuple(json.loads(row["keys"])),
        regex=bool(row["regex"]),
        always=bool(row["always"]),
        priority=row["priority"],
        kind=row["kind"],
        voice=row["voice"],
        enabled=bool(row["enabled"]),
    )


_COLUMNS = "kind, name, keys, regex, always, priority, text, voice, enabled"


_UPDATE = (
    "UPDATE lore_entries SET kind = ?, name = ?, keys = ?, regex = ?, always = ?, priority = ?,"
    " text = ?, voice = ?, enabled = ?, updated_at = ? WHERE id = ?"
)


def _values(entry: LoreEntry) -> tuple[object, ...]:
    return (
        entry.kind,
        entry.name,
        json.dumps(list(entry.keys)),
        int(entry.regex),
        int(entry.always),
        entry.priority,
        entry.text,
        entry.voice,
        int(entry.enabled),
    )


class Lore:
    """The lorebooks."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._books: dict[tuple[str, int], Lorebook] = {}

    async def book(self, scope: Scope, scope_id: int) -> Lorebook:
        """The lorebook prepared for matching (kept until it changes)."""
        key = (scope, scope_id)
        book = self._books.get(key)
        if book is None:
            book = Lorebook(await self.entries(scope, scope_id))
            if len(self._books) > 256:  # a bound on memory; dropping one only costs a rebuild
                self._books.pop(next(iter(self._books)))
            self._books[key] = book
        return book

    def changed(self, scope: Scope, scope_id: int) -> None:
        """Forget the prepared lorebook (its entries changed)."""
        self._books.pop((scope, scope_id), None)

    async def entries(self, scope: Scope, scope_id: int) -> list[LoreEntry]:
        """Every entry of a lorebook, highest priority first, then by name."""
        rows = await self.store.fetchall(
            "SELECT * FROM lore_entries WHERE scope = ? AND scope_id = ?"
            " ORDER BY priority DESC, lower(name)",
            (scope, scope_id),
        )
        return [_entry(r) for r in rows]

    async def get(self, scope: Scope, scope_id: int, name: str) -> LoreEntry | None:
        """The entry called `name` (any case), if there is one."""
        rows = await self.store.fetchall(
            "SELECT * FROM lore_entries WHERE scope = ? AND scope_id = ? AND "
            + _same_name(self.store.dialect),
            (scope, scope_id, name),
        )
        return _entry(rows[0]) if rows else None

    async def count(self, scope: Scope, scope_id: int) -> int:
        rows = await self.store.fetchall(
            "SELECT COUNT(*) FROM lore_entries WHERE scope = ? AND scope_id = ?",
            (scope, scope_id),
        )
        return int(rows[0][0])

    async def add(
        self,
        scope: Scope,
        scope_id: int,
        entry: LoreEntry,
        *,
        guild_id: int | None,
        created_by: int | None,
    ) -> LoreEntry:
        """Add one entry; `LoreExists` if its name is taken, `LoreFull` past the limit."""
        added, _updated = await self.add_many(
            scope, scope_id, [entry], guild_id=guild_id, created_by=created_by, replace=False
        )
        return added[0]

    async def add_many(
        self,
        scope: Scope,
        scope_id: int,
        entries: list[LoreEntry],
        *,
        guild_id: int | None,
        created_by: int | None,
        replace: bool,
    ) -> tuple[list[LoreEntry], int]:
        """Add `entries` in one transaction: all land or none. With `replace`, an entry whose
        name is taken replaces the old one; else `LoreExists`. Returns the entries as stored
        and how many replaced one."""
        now = utcnow()
        updated = 0
        ids: list[int] = []
        async with self._writing((scope, scope_id)) as db:
            for entry in entries:
                async with db.execute(
                    "SELECT id FROM lore_entries WHERE scope = ? AND scope_id = ? AND "
                    + _same_name(self.store.dialect),
                    (scope, scope_id, entry.name),
                ) as found:
                    row = await found.fetchone()
                if row is not None and not replace:
                    raise LoreExists(entry.name)
                if row is not None:
                    await db.execute(_UPDATE, (*_values(entry), now, row[0]))
                    ids.append(int(row[0]))
                    updated += 1
                    continue
                try:
                    new_id = await inserted_id(
                        db,
                        f"INSERT INTO lore_entries (guild_id, scope, scope_id, {_COLUMNS},"
                        " created_by, created_at, updated_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                        (guild_id, scope, scope_id, *_values(entry), created_by, now, now),
                    )
                except IntegrityError:  # two entries of one name in the same import
                    raise LoreExists(entry.name) from None
                ids.append(new_id)
            async with db.execute(
                "SELECT COUNT(*) FROM lore_entries WHERE scope = ? AND scope_id = ?",
                (scope, scope_id),
            ) as counted:
                total = await counted.fetchone()
            if total is not None and total[0] > MAX_ENTRIES:
                raise LoreFull(total[0])  # the transaction rolls back
        marks = ",".join("?" * len(ids))
        rows = await self.store.fetchall(
            f"SELECT * FROM lore_entries WHERE id IN ({marks})", tuple(ids)
        )
        by_id = {r["id"]: _entry(r) for r in rows}
        return [by_id[i] for i in ids], updated

    async def edit(self, entry_id: int, entry: LoreEntry) -> None:
        """Replace an entry's fields (its name included); `LoreExists` if the new name is taken."""
        try:
            async with self._writing() as db:
                await db.execute(_UPDATE, (*_values(entry), utcnow(), entry_id))
        except IntegrityError:
            raise LoreExists(entry.name) from None

    @asynccontextmanager
    async def _writing(self, book: tuple[Scope, int] | None = None) -> AsyncIterator[Connection]:
        """A write transaction, after which (commit or rollback) the prepared `book` is
        forgotten (None: every book, when which one is not worth a query). Not before: a book
        prepared meanwhile may have read rows not yet committed on the shared connection."""
        try:
            async with self.store.transaction() as db:
                yield db
        finally:
            if book is None:
                self._books.clear()
            else:
                self._books.pop(book, None)

    async def author(self, entry_id: int) -> int | None:
        """Who added the entry (None if unknown or forgotten)."""
        rows = await self.store.fetchall(
            "SELECT created_by FROM lore_entries WHERE id = ?", (entry_id,)
        )
        return rows[0][0] if rows else None

    async def remove(self, entry_id: int) -> None:
        async with self._writing() as db:
            await db.execute("DELETE FROM lore_entries WHERE id = ?", (entry_id,))
