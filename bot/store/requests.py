"""The request journal: the requests the bot accepted, until each has an outcome.

Promises:
- `accept` records a request in one transaction, with what rebuilds its task and the message
  its answer goes into; it is pending from then on.
- A pending request becomes saved in the very transaction that stores its generation
  (`Store.save_output(request_id=...)`), so an answer is stored at most once per request.
- `end` moves an unfinished request to its last state once; the interaction token is cleared
  then (it is only needed to write the answer).
- `unfinished` lists what a restart must finish, oldest first; a row whose stored task cannot
  be decoded comes back with `task=None`, never as an exception.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.store.database import Store, inserted_id, utcnow

ENDED = ("done", "failed", "cancelled", "interrupted")


@dataclass(frozen=True, slots=True)
class NewRequest:
    """A request accepted just now, and where its answer goes."""

    command: str
    task: dict[str, Any]  # inputs, prompt, params and title: what rebuilds the task
    user_id: int
    channel_id: int
    guild_id: int | None
    message_id: int
    interaction_token: str | None = None
    token_expires_at: str | None = None
    output_id: int | None = None  # a refinement adds an alternative to this output
    refines_id: int | None = None
    refine_kind: str | None = None


@dataclass(frozen=True, slots=True)
class RequestRecord:
    id: int
    state: str
    command: str
    task: dict[str, Any] | None  # None: damaged
    guild_id: int | None
    channel_id: int
    user_id: int
    message_id: int
    interaction_token: str | None
    token_expires_at: str | None
    output_id: int | None
    refines_id: int | None
    refine_kind: str | None
    generation_id: int | None
    attempts: int
    error: str | None
    created_at: str
    updated_at: str

    def age(self, now: datetime | None = None) -> timedelta:
        """How long ago the request was accepted."""
        return (now or datetime.now(UTC)) - datetime.fromisoformat(self.created_at)

    def token_valid(self, margin_s: float = 30.0) -> bool:
        """Whether the interaction token can still edit the message (with a margin)."""
        if not self.interaction_token or not self.token_expires_at:
            return False
        expires = datetime.fromisoformat(self.token_expires_at)
        return datetime.now(UTC) + timedelta(seconds=margin_s) < expires


class Requests:
    """The journal of accepted requests, on the store's connection and transactions."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def accept(self, new: NewRequest) -> int:
        """Record a request that was just accepted; returns its id."""
        now = utcnow()
        async with self.store.transaction() as db:
            return await inserted_id(
                db,
                "INSERT INTO requests (command, task, guild_id, channel_id, user_id, message_id,"
                " interaction_token, token_expires_at, output_id, refines_id, refine_kind,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING id",
                (
                    new.command,
                    json.dumps(new.task),
                    new.guild_id,
                    new.channel_id,
                    new.user_id,
                    new.message_id,
                    new.interaction_token,
                    new.token_expires_at,
                    new.output_id,
                    new.refines_id,
                    new.refine_kind,
                    now,
                    now,
                ),
            )

    async def started(self, request_id: int) -> None:
        """Count one more start of the model on this request (a crash loop is bounded by it)."""
        async with self.store.transaction() as db:
            await db.execute(
                "UPDATE requests SET attempts = attempts + 1, updated_at = ? WHERE id = ?",
                (utcnow(), request_id),
            )

    async def end(self, request_id: int, state: str, error: str | None = None) -> bool:
        """Move an unfinished request to `state` (one of `ENDED`); False if it had ended."""
        if state not in ENDED:
            raise ValueError(state)
        async with self.store.transaction() as db:
            cur = await db.execute(
                "UPDATE requests SET state = ?, error = ?, interaction_token = NULL,"
                " updated_at = ? WHERE id = ? AND state IN ('pending', 'saved')",
                (state, error, utcnow(), request_id),
            )
        return cur.rowcount == 1

    async def get(self, request_id: int) -> RequestRecord | None:
        rows = await self.store.fetchall("SELECT * FROM requests WHERE id = ?", (request_id,))
        return _record(dict(rows[0])) if rows else None

    async def unfinished(self) -> list[RequestRecord]:
        """Pending and saved requests, oldest first: what a restart finishes."""
        rows = await self.store.fetchall(
            "SELECT * FROM requests WHERE state IN ('pending', 'saved') ORDER BY id"
        )
        return [_record(dict(row)) for row in rows]

    async def prune(self, older_than: timedelta = timedelta(days=7)) -> int:
        """Delete ended requests older than `older_than`; returns how many."""
        cutoff = (datetime.now(UTC) - older_than).isoformat(timespec="milliseconds")
        async with self.store.transaction() as db:
            cur = await db.execute(
                "DELETE FROM requests WHERE state IN ('done', 'failed', 'cancelled',"
                " 'interrupted') AND updated_at < ?",
                (cutoff,),
            )
        return cur.rowcount


def _record(values: dict[str, Any]) -> RequestRecord:
    try:
        task = json.loads(values["task"])
    except (TypeError, ValueError):
        task = None
    values["task"] = task if isinstance(task, dict) else None
    return RequestRecord(**values)
