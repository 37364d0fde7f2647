"""Votes on where a story goes: the directions, people's ballots, and closing once.

Promises: at most one open vote per story (`VoteOpen` otherwise); one ballot per person,
which they may change until the vote closes (a ballot after `closes_at` or after closing is
refused); `close` ends a vote exactly once however many callers race for it (after a restart
too) and returns the tally it ended with; a closed vote with a winner stays `unacted` until
`acted` says its part was asked for, so a restart in between loses no outcome.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.store.database import Row, Store, inserted_id, utcnow
from bot.store.errors import IntegrityError


class VoteOpen(RuntimeError):
    """The story already has an open vote."""


@dataclass(frozen=True, slots=True)
class VoteRecord:
    id: int
    story_id: int
    guild_id: int | None
    channel_id: int
    message_id: int | None
    options: tuple[str, ...]
    created_by: int | None
    closes_at: str
    state: str
    winner: int | None
    acted_at: str | None
    created_at: str

    def closes(self) -> datetime:
        return datetime.fromisoformat(self.closes_at)


@dataclass(frozen=True, slots=True)
class Tally:
    vote: VoteRecord
    counts: tuple[int, ...]  # ballots per option, in the options' order

    @property
    def total(self) -> int:
        return sum(self.counts)


def _vote(row: Row) -> VoteRecord:
    values = dict(row)
    values["options"] = tuple(json.loads(values["options"]))
    return VoteRecord(**values)


def winner(counts: tuple[int, ...]) -> int | None:
    """The option with most ballots; a tie goes to the one proposed first; None if no ballots."""
    if not any(counts):
        return None
    return max(range(len(counts)), key=lambda i: (counts[i], -i))


class Votes:
    """The votes and their ballots."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def open(
        self,
        *,
        story_id: int,
        guild_id: int | None,
        channel_id: int,
        options: list[str],
        created_by: int | None,
        closes_at: datetime,
    ) -> VoteRecord:
        """Open a vote; `VoteOpen` if the story has one."""
        try:
            async with self.store.transaction() as db:
                vote_id = await inserted_id(
                    db,
                    "INSERT INTO story_votes (story_id, guild_id, channel_id, options,"
                    " created_by, closes_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " RETURNING id",
                    (
                        story_id,
                        guild_id,
                        channel_id,
                        json.dumps(options),
                        created_by,
                        closes_at.astimezone(UTC).isoformat(timespec="milliseconds"),
                        utcnow(),
                    ),
                )
        except IntegrityError:
            raise VoteOpen(story_id) from None
        made = await self.get(vote_id)
        assert made is not None
        return made

    async def get(self, vote_id: int) -> VoteRecord | None:
        rows = await self.store.fetchall("SELECT * FROM story_votes WHERE id = ?", (vote_id,))
        return _vote(rows[0]) if rows else None

    async def open_for(self, story_id: int) -> VoteRecord | None:
        """The story's open vote, if any."""
        rows = await self.store.fetchall(
            "SELECT * FROM story_votes WHERE story_id = ? AND state = 'open'", (story_id,)
        )
        return _vote(rows[0]) if rows else None

    async def all_open(self) -> list[VoteRecord]:
        """Every open vote, soonest to close first (after a restart: what to wait for)."""
        rows = await self.store.fetchall(
            "SELECT * FROM story_votes WHERE state = 'open' ORDER BY closes_at, id"
        )
        return [_vote(r) for r in rows]

    async def unacted(self) -> list[VoteRecord]:
        """Closed votes with a winner whose part was never asked for (a restart came between)."""
        rows = await self.store.fetchall(
            "SELECT * FROM story_votes WHERE state = 'closed' AND winner IS NOT NULL"
            " AND acted_at IS NULL ORDER BY id"
        )
        return [_vote(r) for r in rows]

    async def acted(self, vote_id: int) -> None:
        """The vote's outcome was acted on: its part asked for (or nothing is left to do)."""
        async with self.store.transaction() as db:
            await db.execute(
                "UPDATE story_votes SET acted_at = ? WHERE id = ? AND acted_at IS NULL",
                (utcnow(), vote_id),
            )

    async def posted(self, vote_id: int, message_id: int) -> None:
        """Remember the vote's message (to edit it when it closes)."""
        async with self.store.transaction() as db:
            await db.execute(
                "UPDATE story_votes SET message_id = ? WHERE id = ?", (message_id, vote_id)
            )

    async def ballot(self, vote_id: int, user_id: int, choice: int) -> VoteRecord | None:
        """Cast or change `user_id`'s ballot; the vote, or None if it is closed or past its
        closing time (nothing is recorded then)."""
        now = utcnow()
        async with self.store.transaction() as db:
            async with db.execute(
                "SELECT * FROM story_votes WHERE id = ? AND state = 'open' AND closes_at > ?",
                (vote_id, now),
            ) as found:
                row = await found.fetchone()
            if row is None:
                return None
            vote = _vote(row)
            if not 0 <= choice < len(vote.options):
                return None
            await db.execute(
                "INSERT INTO story_ballots (vote_id, user_id, choice, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (vote_id, user_id) DO UPDATE"
                " SET choice = excluded.choice, updated_at = excluded.updated_at",
                (vote_id, user_id, choice, now),
            )
        return vote

    async def counts(self, vote: VoteRecord) -> tuple[int, ...]:
        rows = await self.store.fetchall(
            "SELECT choice, COUNT(*) FROM story_ballots WHERE vote_id = ? GROUP BY choice",
            (vote.id,),
        )
        found = {int(r[0]): int(r[1]) for r in rows}
        return tuple(found.get(i, 0) for i in range(len(vote.options)))

    async def close(self, vote_id: int, *, state: str = "closed") -> Tally | None:
        """End the vote and return its tally; None if it had already ended (someone else
        closed it: exactly one caller gets the tally)."""
        async with self.store.transaction() as db:
            async with db.execute(
                "SELECT * FROM story_votes WHERE id = ? AND state = 'open'", (vote_id,)
            ) as found:
                row = await found.fetchone()
            if row is None:
                return None
            vote = _vote(row)
            async with db.execute(
                "SELECT choice, COUNT(*) FROM story_ballots WHERE vote_id = ? GROUP BY choice",
                (vote_id,),
            ) as counted:
                found_counts = {int(r[0]): int(r[1]) for r in await counted.fetchall()}
            counts = tuple(found_counts.get(i, 0) for i in range(len(vote.options)))
            best = winner(counts) if state == "closed" else None
            await db.execute(
                "UPDATE story_votes SET state = ?, winner = ? WHERE id = ?",
                (state, best, vote_id),
            )
        ended = await self.get(vote_id)
        assert ended is not None
        return Tally(ended, counts)
