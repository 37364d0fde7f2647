"""Stories and their segments, on the store's connection and transactions."""

from __future__ import annotations

from dataclasses import dataclass

from bot.store.database import Store, inserted_id, utcnow


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
    note: str = ""
    parent_id: int | None = None
    branch_from: int | None = None
    last_position: int = 0


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
    """Stories and their segments, on the store's connection and transactions.

    Promises: a story's parts are read in order of position; a branch reads its ancestors'
    parts up to its branch point (stored once: an edit or removal there shows in every branch
    that shares it) and then its own. Positions are never reused within a story.
    """

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
            story_id = await inserted_id(
                db,
                "INSERT INTO stories (guild_id, channel_id, title, premise, genre, created_by,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (guild_id, channel_id, title, premise, genre, created_by, utcnow()),
            )
        story = await self.get(story_id)
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
            async with db.execute(
                "UPDATE stories SET last_position = last_position + 1 WHERE id = ?"
                " RETURNING last_position",
                (story_id,),
            ) as counted:
                position = await counted.fetchone()
            if position is None:
                raise LookupError(f"no story {story_id}")
            segment_id = await inserted_id(
                db,
                "INSERT INTO story_segments (story_id, channel_id, author_id, text, position,"
                " source, generation_id, message_id, created_at) VALUES (?, ?, ?, ?, ?,"
                " ?, ?, ?, ?) RETURNING id",
                (
                    story_id,
                    channel_id,
                    author_id,
                    text,
                    position[0],
                    source,
                    generation_id,
                    message_id,
                    utcnow(),
                ),
            )
        rows = await self.store.fetchall("SELECT * FROM story_segments WHERE id = ?", (segment_id,))
        return SegmentRecord(**dict(rows[0]))

    async def segments(self, story_id: int, after: int = 0) -> list[SegmentRecord]:
        """The story's parts after position `after`, in order: for a branch, its ancestors'
        parts up to the branch point come first."""
        lines = await self.lineage(story_id)
        if not lines:
            return []
        clauses = " OR ".join("(story_id = ? AND position <= ?)" for _ in lines)
        params: list[int] = [value for line in lines for value in line]
        rows = await self.store.fetchall(
            f"SELECT * FROM story_segments WHERE ({clauses}) AND position > ? ORDER BY position",
            (*params, after),
        )
        return [SegmentRecord(**dict(r)) for r in rows]

    async def lineage(self, story_id: int) -> list[tuple[int, int]]:
        """(story id, last position read from it) for the story and each ancestor it shares
        parts with, nearest first."""
        rows = await self.store.fetchall(
            "WITH RECURSIVE line(id, parent_id, upto, depth) AS ("
            " SELECT id, parent_id, branch_from, 0 FROM stories WHERE id = ?"
            " UNION ALL SELECT s.id, s.parent_id, s.branch_from, line.depth + 1"
            " FROM stories s JOIN line ON s.id = line.parent_id WHERE line.depth < 64)"
            " SELECT id, upto FROM line ORDER BY depth",
            (story_id,),
        )
        # the story itself reads all its own parts; an ancestor, up to the nearest branch point
        line: list[tuple[int, int]] = []
        upto = 2**62
        for row in rows:
            line.append((int(row["id"]), upto))
            if row["upto"] is not None:
                upto = min(upto, int(row["upto"]))
        return line

    async def branch(
        self,
        story: StoryRecord,
        *,
        at: int,
        channel_id: int,
        title: str,
        created_by: int,
    ) -> StoryRecord:
        """Open a branch of `story` in `channel_id` that shares its parts up to position `at`:
        the note and the lorebook are copied (a branch's world may go its own way), the parts
        are not. Raises `StoryExists` if that channel has an active story."""
        if await self.active(channel_id) is not None:
            raise StoryExists(channel_id)
        keep_summary = story.summary_upto <= at
        async with self.store.transaction() as db:
            branch_id = await inserted_id(
                db,
                "INSERT INTO stories (guild_id, channel_id, title, premise, genre, created_by,"
                " created_at, note, parent_id, branch_from, last_position, summary,"
                " summary_upto) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    story.guild_id,
                    channel_id,
                    title,
                    story.premise,
                    story.genre,
                    created_by,
                    utcnow(),
                    story.note,
                    story.id,
                    at,
                    at,
                    story.summary if keep_summary else "",
                    story.summary_upto if keep_summary else 0,
                ),
            )
            await db.execute(
                "INSERT INTO lore_entries (guild_id, scope, scope_id, kind, name, keys, regex,"
                " always, priority, text, voice, enabled, created_by, created_at, updated_at)"
                " SELECT guild_id, scope, CAST(? AS BIGINT), kind, name, keys, regex, always,"
                " priority, text, voice, enabled, created_by, created_at, updated_at"
                " FROM lore_entries WHERE scope = 'story' AND scope_id = ?",
                (branch_id, story.id),
            )
        made = await self.get(branch_id)
        assert made is not None
        return made

    async def open_branches(self, story_id: int) -> int:
        """How many active branches the story has (its own, not theirs)."""
        rows = await self.store.fetchall(
            "SELECT COUNT(*) FROM stories WHERE parent_id = ? AND status = 'active'", (story_id,)
        )
        return int(rows[0][0])

    async def set_note(self, story_id: int, note: str) -> None:
        """Set (or, with "", clear) the author's note."""
        async with self.store.transaction() as db:
            await db.execute("UPDATE stories SET note = ? WHERE id = ?", (note, story_id))

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
