"""Story use cases: the next part of a co-written story, and a recap, within the model's context.

The prompt always holds the title, genre and premise, then the rolling summary of older
segments, then as many recent segments as fit the token budget (counted with the model's own
tokenizer). When the unsummarised segments no longer fit, the older ones are folded into the
summary by the model itself, chunk by chunk, and the summary is stored: long stories keep
their thread and their opening premise without outgrowing the context.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.generation.queue import GenerationQueue
from bot.generation.types import (
    GenerationError,
    GenerationRequest,
    Message,
    Prompt,
    SamplingParams,
)
from bot.prompts import clean_output
from bot.prompts.story import LENGTHS, continue_prompt, recap_prompt, story_header
from bot.services import Services
from bot.store import SegmentRecord, Stories, StoryRecord
from bot.writing.run import Answered, Task, Where

log = logging.getLogger(__name__)


def _segment_text(segment: SegmentRecord) -> str:
    return segment.text.strip()


class StoryContext:
    """Builds story prompts within `budget` tokens, summarising through the queue as needed."""

    def __init__(
        self,
        stories: Stories,
        queue: GenerationQueue,
        *,
        budget: int = 1536,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        self.stories = stories
        self.queue = queue
        self.budget = budget
        self.count = count_tokens or queue.engine.count_tokens

    async def window(self, story: StoryRecord, user_id: int) -> tuple[StoryRecord, list[str]]:
        """The story (with an up-to-date summary) and the recent segments that fit the budget."""
        segments = await self.stories.segments(story.id, after=story.summary_upto)
        texts = [_segment_text(s) for s in segments]
        used = self.count(story.summary) + self.count(story_header(story))
        recent: list[str] = []
        for text in reversed(texts):
            cost = self.count(text) + 2
            if used + cost > self.budget:
                break
            recent.insert(0, text)
            used += cost
        older = segments[: len(segments) - len(recent)]
        if older:
            story = await self._fold(story, older, user_id)
        return story, recent

    async def _fold(
        self, story: StoryRecord, older: list[SegmentRecord], user_id: int
    ) -> StoryRecord:
        """Fold `older` segments into the rolling summary, a chunk at a time, and store it."""
        limit = max(200, self.budget // 2)
        chunks: list[list[SegmentRecord]] = [[]]
        chunk_tokens = 0
        for segment in older:
            tokens = self.count(_segment_text(segment))
            if chunks[-1] and chunk_tokens + tokens > limit:
                chunks.append([])
                chunk_tokens = 0
            chunks[-1].append(segment)
            chunk_tokens += tokens
        summary = story.summary
        for chunk in chunks:
            summary = await self._summarise(story, summary, chunk, user_id)
            await self.stories.summarise(story.id, summary, chunk[-1].position)
        refreshed = await self.stories.get(story.id)
        assert refreshed is not None
        return refreshed

    async def _summarise(
        self, story: StoryRecord, summary: str, chunk: list[SegmentRecord], user_id: int
    ) -> str:
        events = "\n".join(_segment_text(s) for s in chunk)
        ask = (
            f"{story_header(story)}\nSummary so far: {summary or '(none yet)'}\n"
            f"<story>\n{events}\n</story>\n"
            "Write the summary so far again, adding what happens in the new part. At most five "
            "sentences; keep names and the main events."
        )
        prompt = Prompt(
            messages=(
                Message("system", "You summarise stories briefly and faithfully."),
                Message("user", ask),
            ),
            plain=f"Summary of the story so far:\n{summary}\n{events}\n\nNew summary:",
        )
        try:
            handle = self.queue.submit(
                GenerationRequest(
                    user_id, prompt, SamplingParams(max_new_tokens=160, method="greedy")
                )
            )
            text = clean_output((await handle.result()).text)
        except GenerationError as error:
            log.warning("story %s: summary failed (%r); keeping the old one", story.id, error)
            text = ""
        # Never lose what was there: a failed or empty summary keeps the old one plus a trace.
        if not text:
            text = (summary + " " + " ".join(s.text for s in chunk))[-1200:]
        return text[: self.budget * 3]


class StoryWriter:
    """Builds the story's tasks (the next part, a recap) and keeps the bot's parts."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.context = StoryContext(
            services.stories, services.queue, budget=services.settings.story_context_tokens
        )
        self._turns: dict[int, asyncio.Lock] = {}

    def turn(self, story_id: int) -> asyncio.Lock:
        """Held while one of the story's parts is built, written and kept: its turns run one
        at a time, in the order they asked (a lock wakes its waiters first come, first
        served), so each part follows the last and the parts land in order."""
        return self._turns.setdefault(story_id, asyncio.Lock())

    async def next_part(
        self,
        story: StoryRecord,
        where: Where,
        direction: str | None = None,
        length: str = "medium",
    ) -> Task:
        """The task that writes the story's next part, in the channel's persona and sampling."""
        story, recent = await self.context.window(story, where.user_id)
        prefs = await self.services.preferences.for_channel(where.guild_id, where.channel_id)
        prompt = continue_prompt(
            story, recent, direction=direction, length=length, persona=prefs.persona
        )
        return Task(
            command="story",
            title=f"{story.title} · part {len(recent) + 1}",
            prompt=prompt,
            params=prefs.sampling(LENGTHS[length][1]),
            finish=clean_output,
            inputs={"story_id": story.id, "direction": direction, "length": length},
        )

    async def recap(self, story: StoryRecord, user_id: int) -> Task:
        """The task that writes a short recap of the whole story so far."""
        story, recent = await self.context.window(story, user_id)
        return Task(
            command="recap",
            title=f"The story so far · {story.title}",
            prompt=recap_prompt(story, recent),
            params=SamplingParams(max_new_tokens=160, temperature=0.6, repetition_penalty=1.15),
            inputs={"story_id": story.id},
            finish=clean_output,
        )

    def lands_in(self, story: StoryRecord, where: Where) -> Callable[[Answered], Awaitable[None]]:
        """What keeps a shown answer as the story's next part (once, however often called)."""

        async def land(answered: Answered) -> None:
            await self.services.stories.add(
                story.id,
                channel_id=where.channel_id,
                author_id=None,
                text=answered.text,
                source="bot",
                generation_id=answered.generation_id,
                message_id=answered.message_id,
            )

        return land
