"""Adapters the bot trained, which one serves each server, and what was forgotten since.

Promises:
- An adapter is registered once its folder is complete (`register` comes after the folder's
  atomic rename), with its manifest and its evaluation's verdict.
- The adapter in force for a server and kind is its own latest promotion not rolled back,
  else that of scope 0 (every server), else none (the base model). `promote` and `rollback`
  are one transaction each; `rollback` returns to what was in force before, however many
  promotions ago that was, and says when there is nothing to roll back.
- `forgotten(ids)` tells which of an adapter's generation and feedback ids were deleted by
  forget-me since it was trained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from bot.store.database import Connection, Row, Store, inserted_id, utcnow

Kind = Literal["generator", "reward"]
EVERY_SERVER = 0


class NothingToRollBack(RuntimeError):
    """No promotion in force for that scope and kind."""


@dataclass(frozen=True, slots=True)
class AdapterRecord:
    id: str
    kind: str
    guild_id: int | None
    base_model: str
    base_hash: str
    path: str
    manifest: dict[str, Any]
    promotable: bool
    verdict: str
    created_at: str


@dataclass(frozen=True, slots=True)
class Promotion:
    id: int
    scope: int
    kind: str
    adapter_id: str | None  # None: the base model
    forced: bool
    promoted_by: int | None
    promoted_at: str


def _adapter(row: Row) -> AdapterRecord:
    values = dict(row)
    values["manifest"] = json.loads(values["manifest"])
    values["promotable"] = bool(values["promotable"])
    return AdapterRecord(**values)


def _promotion(row: Row) -> Promotion:
    values = dict(row)
    values["forced"] = bool(values["forced"])
    del values["rolled_back_at"]
    return Promotion(**values)


class Models:
    """The adapter registry and promotions, on the store's connection."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def register(self, *records: AdapterRecord) -> None:
        """Add trained adapters (their folders already complete), all or none."""
        async with self.store.transaction() as db:
            for record in records:
                await self._insert(db, record)

    @staticmethod
    async def _insert(db: Connection, record: AdapterRecord) -> None:
        await db.execute(
            "INSERT INTO adapters (id, kind, guild_id, base_model, base_hash, path, manifest,"
            " promotable, verdict, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.kind,
                record.guild_id,
                record.base_model,
                record.base_hash,
                record.path,
                json.dumps(record.manifest),
                int(record.promotable),
                record.verdict,
                record.created_at,
            ),
        )

    async def get(self, adapter_id: str) -> AdapterRecord | None:
        rows = await self.store.fetchall("SELECT * FROM adapters WHERE id = ?", (adapter_id,))
        return _adapter(rows[0]) if rows else None

    async def all(self, kind: Kind | None = None) -> list[AdapterRecord]:
        """Every adapter, newest first."""
        if kind is None:
            rows = await self.store.fetchall("SELECT * FROM adapters ORDER BY created_at DESC, id")
        else:
            rows = await self.store.fetchall(
                "SELECT * FROM adapters WHERE kind = ? ORDER BY created_at DESC, id", (kind,)
            )
        return [_adapter(r) for r in rows]

    async def promote(
        self,
        adapter_id: str | None,
        *,
        scope: int,
        kind: Kind,
        by: int | None = None,
        forced: bool = False,
    ) -> Promotion:
        """Put `adapter_id` (None: the base model) in force for `scope` (a guild id, or
        `EVERY_SERVER`)."""
        async with self.store.transaction() as db:
            promotion_id = await inserted_id(
                db,
                "INSERT INTO promotions (scope, kind, adapter_id, forced, promoted_by,"
                " promoted_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (scope, kind, adapter_id, int(forced), by, utcnow()),
            )
            async with db.execute("SELECT * FROM promotions WHERE id = ?", (promotion_id,)) as c:
                row = await c.fetchone()
        assert row is not None
        return _promotion(row)

    async def rollback(self, *, scope: int, kind: Kind) -> Promotion | None:
        """Undo the promotion in force for `scope`; returns the one in force after (None: the
        base model, or the scope of every server for a server). Raises `NothingToRollBack`."""
        async with self.store.transaction() as db:
            async with db.execute(
                "SELECT id FROM promotions WHERE scope = ? AND kind = ? AND rolled_back_at IS NULL"
                " ORDER BY id DESC LIMIT 1",
                (scope, kind),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                raise NothingToRollBack(scope)
            await db.execute(
                "UPDATE promotions SET rolled_back_at = ? WHERE id = ?", (utcnow(), row[0])
            )
        return await self.current(scope, kind)

    async def current(self, scope: int, kind: Kind) -> Promotion | None:
        """The promotion in force for exactly `scope` (no fallback to every server)."""
        rows = await self.store.fetchall(
            "SELECT * FROM promotions WHERE scope = ? AND kind = ? AND rolled_back_at IS NULL"
            " ORDER BY id DESC LIMIT 1",
            (scope, kind),
        )
        return _promotion(rows[0]) if rows else None

    async def in_force(self) -> dict[tuple[int, str], str | None]:
        """Every scope's adapter in force, by (scope, kind) (None: the base model)."""
        rows = await self.store.fetchall(
            "SELECT p.scope, p.kind, p.adapter_id FROM promotions p WHERE p.id IN"
            " (SELECT MAX(id) FROM promotions WHERE rolled_back_at IS NULL GROUP BY scope, kind)"
        )
        return {(r["scope"], r["kind"]): r["adapter_id"] for r in rows}

    async def version(self) -> tuple[int, int]:
        """Changes whenever a promotion or rollback happens (a cheap poll for other processes)."""
        rows = await self.store.fetchall(
            "SELECT COALESCE(MAX(id), 0) AS last, COUNT(rolled_back_at) AS back FROM promotions"
        )
        return (rows[0]["last"], rows[0]["back"])

    async def forgotten(self, generation_ids: list[int], feedback_ids: list[int]) -> int:
        """How many of these ids were deleted by forget-me."""
        found = 0
        for source, ids in (("generation", generation_ids), ("feedback", feedback_ids)):
            for start in range(0, len(ids), 500):  # under SQLite's parameter limit
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = await self.store.fetchall(
                    f"SELECT COUNT(*) AS n FROM forgotten_rows WHERE source = ?"
                    f" AND row_id IN ({marks})",
                    (source, *chunk),
                )
                found += rows[0]["n"]
        return found
