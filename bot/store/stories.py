"""Stories and their segments, on the store's connection and transactions."""

from __future__ import annotations

from dataclasses import dataclass

from bot.store.database import Store, utcnow


@dataclass(frozen=True, slots=True)
class StoryRecord:
    id: int
    guild_id: int | None
    channel_id: int
    title: str
    premise: str
    genre: str | None
    status: str
    summary: str
    summary_upto: int
    created_by: int
    created_at: str
    ended_at: str | None


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    id: int
    story_id: int
    channel_id: int
    author_id: int | None
    text: str
    position: int
    source: str
    generation_id: int | None
    message_id: int | None
    created_at: str


class StoryExists(RuntimeError):
    """The channel already has an active story."""


class Stories:
    """Stories and their segments, on the store's connection and transactions."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def start(
        self,
        *,
        guild_id: int | None,
        channel_id: int,
        title: str,
        premise: str,
        genre: str | None,
        created_by: int,
    ) -> StoryRecord:
        """Begin a story in a channel; raises `StoryExists` if one is active there."""
        if await self.active(channel_id) is not None:
            raise StoryExists(channel_id)
        async with self.store.transaction() as db:
            cur = await db.execute(
                "INSERT INTO stories (guild_id, channel_id, title, premise, genre, created_by,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (guild_id, channel_id, title, premise, genre, created_by, utcnow()),
            )
            story_id = cur.lastrowid
        story = await self.get(story_id or 0)
        assert story is not None
        return story

    async def get(self, story_id: int) -> StoryRecord | None:
        rows = await self.store.fetchall("SELECT * FROM stories WHERE id = ?", (story_id,))
        return StoryRecord(**dict(rows[0])) if rows else None

    async def active(self, channel_id: int) -> StoryRecord | None:
        """The channel's active story, if any."""
        rows = await self.store.fetchall(
            "SELECT * FROM stories WHERE channel_id = ? AND status = 'active'", (channel_id,)
        )
        return StoryRecord(**dict(rows[0])) if rows else None

    async def add(
        self,
        story_id: int,
        *,
        channel_id: int,
        author_id: int | None,
        text: str,
        source: str,
        generation_id: int | None = None,
        message_id: int | None = None,
    ) -> SegmentRecord:
        """Append a segment at the next position. A generation lands once: adding the same
        `generation_id` again (an answer finished again after a crash) returns its segment."""
        async with self.store.transaction() as db:
            if generation_id is not None:
                async with db.execute(
                    "SELECT * FROM story_segments WHERE generation_id = ?", (generation_id,)
                ) as found:
                    row = await found.fetchone()
                if row is not None:
                    return SegmentRecord(**dict(row))
            cur = await db.execute(
                "INSERT INTO story_segments (story_id, channel_id, author_id, text, position,"
                " source, generation_id, message_id, created_at) VALUES (?, ?, ?, ?,"
                " (SELECT COALESCE(MAX(position), 0) + 1 FROM story_segments WHERE story_id = ?),"
                " ?, ?, ?, ?)",
                (
                    story_id,
                    channel_id,
                    author_id,
                    text,
                    story_id,
                    source,
                    generation_id,
                    message_id,
                    utcnow(),
                ),
            )
            segment_id = cur.lastrowid
        rows = await self.store.fetchall("SELECT * FROM story_segments WHERE id = ?", (segment_id,))
        return SegmentRecord(**dict(rows[0]))

    async def segments(self, story_id: int, after: int = 0) -> list[SegmentRecord]:
        """Segments after position `after`, in order."""
        rows = await self.store.fetchall(
            "SELECT * FROM story_segments WHERE story_id = ? AND position > ? ORDER BY position",
            (story_id, after),
        )
        return [SegmentRecord(**dict(r)) for r in rows]

    async def by_message(self, message_id: int) -> SegmentRecord | None:
        rows = await self.store.fetchall(
            "SELECT * FROM story_segments WHERE message_id = ?", (message_id,)
        )
        return SegmentRecord(**dict(rows[0])) if rows else None

    async def edit(self, segment_id: int, text: str) -> None:
        async with self.store.transaction() as db:
            await db.execute("UPDATE story_segments SET text = ? WHERE id = ?", (text, segment_id))

    async def adopt(self, segment_id: int, text: str, generation_id: int) -> None:
        """Make the bot's segment show another alternative (a kept regeneration)."""
        async with self.store.transaction() as db:
            await db.execute(
                "UPDATE story_segments SET text = ?, generation_id = ? WHERE id = ?",
                (text, generation_id, segment_id),
            )

    async def remove(self, segment_id: int) -> None:
        async with self.store.transaction() as db:
            await db.execute("DELETE FROM story_segments WHERE id = ?", (segment_id,))

    async def people_since_bot(self, story_id: int) -> int:
        """People's segments since the bot last wrote (for the automatic turn)."""
        rows = await self.store.fetchall(
            "SELECT COUNT(*) FROM story_segments WHERE story_id = ? AND source = 'user' AND"
            " position > (SELECT COALESCE(MAX(position), 0) FROM story_segments"
            " WHERE story_id = ? AND source = 'bot')",
            (story_id, story_id),
        )
        return int(rows[0][0])

    async def summarise(self, story_id: int, summary: str, upto: int) -> None:
        """Store the rolling summary of segments up to position `upto`."""
        async with self.store.transaction() as db:
            await db.execute(
                "UPDATE stories SET summary = ?, summary_upto = ? WHERE id = ?",
                (summary, upto, story_id),
            )

    async def end(self, story_id: int) -> None:
        async with self.store.transaction() as db:
            await db.execute(
                "UPDATE stories SET status = 'ended', ended_at = ? WHERE id = ?",
                (utcnow(), story_id),
            )
