"""Story use cases: the next part of a co-written story, and a recap, within the model's context.

The prompt always holds the title, genre and premise, then the rolling summary of older
segments, then as many recent segments as fit the token budget (counted with the model's own
tokenizer). When the unsummarised segments no longer fit, the older ones are folded into the
summary by the model itself, chunk by chunk, and the summary is stored: long stories keep
their thread and their opening premise without outgrowing the context.

The window moves in steps, not a segment at a time: between folds each turn's prompt is the
last one with the new parts added, so the engine's prefix cache holds everything up to them
and a turn reads only what is new. A fold drops the window's parts to `KEEP` of the room they
have, leaving room for several turns before the next one. (Sliding by one segment per turn
would change the summary and every token after it on every turn, and re-read the whole context
each time.)
"""

from __future__ import annotations

import asyncio
import functools
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
from bot.lore.select import render, words
from bot.prompts import clean_output
from bot.prompts.story import (
    LENGTHS,
    continue_prompt,
    directions_prompt,
    one_direction,
    recap_prompt,
    story_header,
)
from bot.services import Services
from bot.store import SegmentRecord, Stories, StoryRecord
from bot.writing.lore import Worlds
from bot.writing.run import Answered, Task, Where

log = logging.getLogger(__name__)


def _segment_text(segment: SegmentRecord) -> str:
    return segment.text.strip()


KEEP = 0.6  # of the parts' room, left in the window after a fold
SUMMARY_TOKENS = 160  # the most a new summary is written with


def _newest_that_fit(texts: list[str], room: float, count: Callable[[str], int]) -> list[str]:
    recent: list[str] = []
    for text in reversed(texts):
        cost = count(text) + 2
        if cost > room:
            break
        recent.insert(0, text)
        room -= cost
    return recent


class StoryContext:
    """Builds story prompts within `budget` tokens, summarising through the queue as needed."""

    def __init__(
        self,
        stories: Stories,
        queue: GenerationQueue,
        *,
        budget: int = 1536,
        count_tokens: Callable[[str], int] | None = None,
        keep: float = KEEP,
    ) -> None:
        self.stories = stories
        self.queue = queue
        self.budget = budget
        self.keep = keep  # 1.0: fold just below the budget, every turn once the story is long
        self.count = count_tokens or queue.engine.count_tokens

    async def window(
        self, story: StoryRecord, user_id: int, reserve: int = 0
    ) -> tuple[StoryRecord, list[str]]:
        """The story (with an up-to-date summary) and the recent segments that fit the budget,
        less `reserve` tokens (the lore and the author's note)."""
        segments = await self.stories.segments(story.id, after=story.summary_upto)
        texts = [_segment_text(s) for s in segments]
        # each part is tokenised once, however many times the window and the fold weigh it
        count = functools.cache(self.count)
        fixed = count(story_header(story)) + reserve
        summary = count(story.summary)
        recent = _newest_that_fit(texts, self.budget - fixed - summary, count)
        if len(recent) < len(texts):
            # overflowing: fold down to KEEP of the room the parts have (after the header, the
            # lore and note, and a summary that may grow to SUMMARY_TOKENS: else the next turn
            # would fold again); the newest part stays in view even when it alone is longer
            room = self.keep * (self.budget - fixed - max(summary, SUMMARY_TOKENS))
            recent = _newest_that_fit(texts, room, count) or texts[-1:]
        older = segments[: len(segments) - len(recent)]
        if older:
            story = await self._fold(story, older, user_id, count)
        return story, recent

    async def _fold(
        self,
        story: StoryRecord,
        older: list[SegmentRecord],
        user_id: int,
        count: Callable[[str], int],
    ) -> StoryRecord:
        """Fold `older` segments into the rolling summary, a chunk at a time, and store it."""
        limit = max(200, self.budget // 2)
        chunks: list[list[SegmentRecord]] = [[]]
        chunk_tokens = 0
        for segment in older:
            tokens = count(_segment_text(segment))
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
                    user_id, prompt, SamplingParams(max_new_tokens=SUMMARY_TOKENS, method="greedy")
                )
            )
            text = clean_output((await handle.result()).text)
        except GenerationError as error:
            log.warning("story %s: summary failed (%r); keeping the old one", story.id, error)
            text = ""
        # Never lose what was there: a failed or empty summary keeps the old one plus a trace.
        if not text:
            # (cut to about SUMMARY_TOKENS, so that it fits where a summary was planned for)
            text = (summary + " " + " ".join(s.text for s in chunk))[-SUMMARY_TOKENS * 4 :]
        return text[: self.budget * 3]


class StoryWriter:
    """Builds the story's tasks (the next part, a recap) and keeps the bot's parts."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.context = StoryContext(
            services.stories, services.queue, budget=services.settings.story_context_tokens
        )
        self.worlds = Worlds(
            services.lore, services.stories, services.settings, services.queue.engine.count_tokens
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
        character: str | None = None,
    ) -> Task:
        """The task that writes the story's next part, in the channel's persona and sampling,
        with the lore its last parts and the direction call for; as `character` if named (a
        character of the story's lorebook; an unknown name is written as given)."""
        speaker = await self.worlds.character(story, character) if character else None
        lore = await self.worlds.for_story(
            story, direction or "", first=[speaker] if speaker else ()
        )
        block = render(lore)
        reserve = (self.worlds.count(block) if block else 0) + (
            self.worlds.count(story.note) + 8 if story.note else 0
        )
        story, recent = await self.context.window(story, where.user_id, reserve)
        prefs = await self.services.preferences.for_channel(where.guild_id, where.channel_id)
        voice: tuple[str, str] | None = None
        if speaker is not None:
            voice = (speaker.name, speaker.voice)
        elif character:
            voice = (character, "")
        prompt = continue_prompt(
            story,
            recent,
            direction=direction,
            length=length,
            persona=prefs.persona,
            lore=block,
            character=voice,
        )
        part = len(recent) + 1
        return Task(
            command="story",
            title=f"{story.title} · part {part}" + (f" · as {voice[0]}" if voice else ""),
            prompt=prompt,
            params=prefs.sampling(LENGTHS[length][1]),
            finish=clean_output,
            inputs={
                "story_id": story.id,
                "direction": direction,
                "length": length,
                "as": character,
                "lore": lore.names,
            },
        )

    async def recap(self, story: StoryRecord, user_id: int) -> Task:
        """The task that writes a short recap of the whole story so far."""
        lore = await self.worlds.for_story(story)
        block = render(lore)
        story, recent = await self.context.window(story, user_id, self.worlds.count(block))
        return Task(
            command="recap",
            title=f"The story so far · {story.title}",
            prompt=recap_prompt(story, recent, block),
            params=SamplingParams(max_new_tokens=160, temperature=0.6, repetition_penalty=1.15),
            inputs={"story_id": story.id, "lore": lore.names},
            finish=clean_output,
        )

    async def directions(
        self, story: StoryRecord, user_id: int, count: int, taken: list[str]
    ) -> list[str]:
        """Up to `count` directions the story could take next, for a vote: one sentence each,
        drawn side by side, unlike each other and unlike `taken`. Fewer (even none) when the
        model's drafts are unusable: the caller says so, nothing is made up in their place.

        One request toward the person's limits (`QueueRefused` if it cannot be taken); the
        other drafts are its parts. Every draft still running is cancelled on return."""
        lore = render(await self.worlds.for_story(story))
        async with self.turn(story.id):  # a fold of the summary is one turn's work at a time
            story, recent = await self.context.window(story, user_id, self.worlds.count(lore))
        prompt = directions_prompt(story, recent, lore)
        params = SamplingParams(
            max_new_tokens=48, temperature=0.95, top_p=0.95, repetition_penalty=1.2, stop=("\n",)
        )
        # directions are shown to the server: written with its adapter, if it has one
        adapter = self.services.adapters.adapter_for(story.guild_id)
        handles = [
            self.services.queue.submit(GenerationRequest(user_id, prompt, params, adapter=adapter))
        ]
        # a direction that differs only in case or punctuation is the same direction
        seen = {tuple(words(t)) for t in taken}
        found: list[str] = []
        try:
            handles += [
                self.services.queue.submit(
                    GenerationRequest(user_id, prompt, params, adapter=adapter),
                    count_for_user=False,
                )
                for _ in range(count * 3 - 1)
            ]
            for handle in handles:
                try:
                    text = one_direction((await handle.result()).text)
                except GenerationError as error:
                    log.info("story %s: a direction draft failed (%r)", story.id, error)
                    continue
                if text and tuple(words(text)) not in seen:
                    seen.add(tuple(words(text)))
                    found.append(text)
                if len(found) == count:
                    break
        finally:
            for handle in handles:
                handle.cancel()
        return found

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
