"""The world's lore in prompts: which lorebook a channel uses, and which entries a prompt gets.

Promises: a channel with an active story uses the story's lorebook, scanning the story's last
`LORE_SCAN_DEPTH` parts and the request; any other channel uses its own, scanning the request.
What is chosen fits `LORE_TOKENS` (counted with the model's tokenizer), whole entries only,
and its names go into the task's inputs (`lore`), so `/lore why` can say what an answer used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache

from bot.config import Settings
from bot.lore.entries import LoreEntry
from bot.lore.select import HEADING, Selection
from bot.store import Stories, StoryRecord
from bot.store.lore import Lore, Scope

NOTHING = Selection((), 0, 0, ())


class Worlds:
    """Chooses each prompt's lore."""

    def __init__(
        self, lore: Lore, stories: Stories, settings: Settings, count_tokens: Callable[[str], int]
    ) -> None:
        self.lore = lore
        self.stories = stories
        # lore never takes more than half of a story's context: the story itself must fit
        self.budget = min(settings.lore_tokens, settings.story_context_tokens // 2)
        self.depth = settings.lore_scan_depth
        # entries are counted again and again, request after request: keep their counts
        self.count = lru_cache(maxsize=16384)(count_tokens)

    @property
    def entries_budget(self) -> int:
        """What the entries may take: the budget less the block's heading."""
        return self.budget - self.count(HEADING) - 1

    async def scope(self, channel_id: int) -> tuple[Scope, int, StoryRecord | None]:
        """The lorebook `/lore` edits in a channel: its active story's, else the channel's."""
        story = await self.stories.active(channel_id)
        if story is not None:
            return "story", story.id, story
        return "channel", channel_id, None

    async def for_story(
        self,
        story: StoryRecord,
        request: str = "",
        *,
        first: Iterable[LoreEntry] = (),
    ) -> Selection:
        """The story's lore for its next part (or recap): keys found in its last parts or in
        `request`; `first` ahead of everything."""
        if self.entries_budget <= 0:
            return NOTHING
        recent: list[str] = []
        if self.depth:
            recent = [p.text for p in (await self.stories.segments(story.id))[-self.depth :]]
        scan = "\n".join([*recent, request])
        book = await self.lore.book("story", story.id)
        return book.select(scan, self.entries_budget, self.count, first=first)

    async def for_channel(self, channel_id: int, request: str) -> Selection:
        """The lore for a request in a channel (brainstorm, scene, chat)."""
        if self.entries_budget <= 0:
            return NOTHING
        scope, scope_id, story = await self.scope(channel_id)
        if story is not None:
            return await self.for_story(story, request)
        book = await self.lore.book(scope, scope_id)
        return book.select(request, self.entries_budget, self.count)

    async def character(self, story: StoryRecord, name: str) -> LoreEntry | None:
        """The story's character called `name` (any case), if there is one."""
        entry = await self.lore.get("story", story.id, name)
        if entry is None or entry.kind != "character" or not entry.enabled:
            return None
        return entry
