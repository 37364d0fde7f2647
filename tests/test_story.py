"""Story co-writing: context within budget with a rolling summary, and the commands end to end."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.generation.engine import TransformersEngine
from bot.generation.queue import GenerationQueue
from bot.generation.types import GenerationRequest, SamplingParams
from bot.prompts.story import continue_prompt
from bot.store import Store, Stories
from bot.ui.render import split_for_discord
from bot.writing.story import KEEP, StoryContext
from emulator import Channel, Interaction, Message
from tests.conftest import World


def test_split_for_discord_keeps_paragraphs_and_words() -> None:
    text = "\n\n".join(["word " * 100] * 12)
    pieces = split_for_discord(text)
    assert all(len(p) <= 2000 for p in pieces)
    assert " ".join(" ".join(pieces).split()) == " ".join(text.split())
    long = "a" * 2500
    assert [len(p) for p in split_for_discord(long)] == [2000, 500]
    assert split_for_discord("") == [""]


async def test_300_segments_keep_the_premise_within_budget(
    tmp_path: Any, tiny_engine: TransformersEngine
) -> None:
    async with Store.open(tmp_path / "db.sqlite3") as store, GenerationQueue(tiny_engine) as queue:
        stories = Stories(store)
        story = await stories.start(
            guild_id=1,
            channel_id=2,
            title="The Glass Harbour",
            premise="A lighthouse keeper finds a door in the sea",
            genre="fantasy",
            created_by=3,
        )
        for i in range(300):
            text = f"Part {i}: the keeper walks the stairs and counts the waves."
            await stories.add(story.id, channel_id=2, author_id=3 + i % 4, source="user", text=text)
        context = StoryContext(stories, queue, budget=400)
        story, recent = await context.window(story, user_id=3)
        prompt = continue_prompt(story, recent, direction=None, length="short")
        rendered = prompt.messages[-1].content
        assert "A lighthouse keeper finds a door in the sea" in rendered
        assert story.summary and story.summary_upto >= 250  # older parts folded into it
        assert recent[-1].startswith("Part 299:")
        tokens = tiny_engine.count_tokens(rendered)
        assert tokens <= 400 + tiny_engine.count_tokens(story.summary) + 120
        assert tokens < tiny_engine.context_length
        # the stored summary is built on, never rebuilt from the start
        again, _ = await context.window(story, user_id=3)
        assert again.summary_upto >= story.summary_upto


async def test_turns_between_folds_read_only_what_is_new(
    tmp_path: Any, tiny_engine: TransformersEngine
) -> None:
    """The window moves in steps: each turn's prompt is the last one plus the new part, so the
    prefix cache serves all of it, and a fold drops the window well below the budget."""
    budget = 400  # the tiny model reads 512 tokens at most
    cache = tiny_engine.prefix_cache
    assert cache is not None
    async with Store.open(tmp_path / "db.sqlite3") as store, GenerationQueue(tiny_engine) as queue:
        stories = Stories(store)
        story = await stories.start(
            guild_id=1,
            channel_id=2,
            title="Tides",
            premise="A town under the sea",
            genre="",
            created_by=3,
        )
        context = StoryContext(stories, queue, budget=budget)
        folds, reused_turns, before = 0, 0, None
        reserve = 40  # the lore and the author's note: the parts' room is what is left
        for i in range(24):
            text = f"Part {i}: the bell rang {i} times and the fish listened in the square."
            await stories.add(story.id, channel_id=2, author_id=3, source="user", text=text)
            story, recent = await context.window(story, user_id=3, reserve=reserve)
            prompt = continue_prompt(story, recent, direction=None, length="short")
            greedy = SamplingParams(max_new_tokens=1, method="greedy")
            if before is not None and story.summary_upto != before[0]:
                folds += 1
                body = sum(tiny_engine.count_tokens(t) + 2 for t in recent)
                assert recent[-1] == text  # the newest part is never folded away
                assert body <= KEEP * (budget - reserve)
            elif before is not None:
                assert recent[: len(before[1])] == before[1]  # the window grew at its end
                reused_turns += 1
                read = cache.read
                await queue.submit(GenerationRequest(3, prompt, greedy)).result()
                new = tiny_engine.count_tokens(text)
                assert cache.read - read <= new + 60  # the new part and the request after it
            if before is None or story.summary_upto != before[0]:
                # the first turn after a fold reads its prompt once
                await queue.submit(GenerationRequest(3, prompt, greedy)).result()
            before = (story.summary_upto, recent)
        # how often it folds depends on the summaries' lengths: only that it does, and that
        # most turns between folds are served from the cache
        assert folds >= 1 and reused_turns >= 8


def done(message: Message) -> bool:
    return bool(message.embeds)


async def reply(world: World, interaction: Interaction) -> Message:
    return await world.emu.wait_for(lambda: world.emu.original(interaction), timeout=180)


async def segments(world: World, channel: Channel) -> list[Any]:
    story = await world.services.stories.active(channel.id)
    assert story is not None
    return await world.services.stories.segments(story.id)


async def eventually(check: Any, timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition never held")


@pytest.mark.slow
async def test_story_commands_and_messages(world: World) -> None:
    emu = world.emu
    channel = await emu.open_channel(world.guild, "story-room")
    started = await reply(
        world,
        await emu.slash(
            world.alice,
            channel,
            "story start",
            premise="Two rival bakers share one oven",
            genre="comedy",
        ),
    )
    assert "**Two rival bakers share one oven** begins here" in started.content

    await emu.say(world.alice, channel, "Mina lit the oven before dawn, humming.")
    second = await emu.say(world.bob, channel, "Oskar arrived with a sack of rye and a grudge.")
    third = await emu.say(world.alice, channel, "A typo line to delete.")

    async def three() -> bool:
        return len(await segments(world, channel)) == 3

    await eventually(three)
    await emu.edit(second, "Oskar arrived with a sack of rye and a much older grudge.")
    await emu.delete(third)

    async def edited() -> bool:
        texts = [s.text for s in await segments(world, channel)]
        return texts == [
            "Mina lit the oven before dawn, humming.",
            "Oskar arrived with a sack of rye and a much older grudge.",
        ]

    await eventually(edited)

    cont = await emu.slash(world.bob, channel, "story continue", length="short")
    message = await emu.wait_final(cont, done, timeout=180)

    async def bot_part() -> bool:  # kept once Discord has the message
        return (await segments(world, channel))[-1].source == "bot"

    await eventually(bot_part)
    parts = await segments(world, channel)
    assert parts[-1].text == message.embeds[0]["description"]
    assert parts[-1].generation_id is not None

    # undo: bob asked for the bot's part, so bob may undo it; alice may not
    refused = await reply(world, await emu.slash(world.alice, channel, "story undo"))
    assert refused.content.startswith("Only the author of the last part or a moderator")
    undone = await reply(world, await emu.slash(world.bob, channel, "story undo"))
    assert undone.content.startswith("Removed the last part")
    assert len(await segments(world, channel)) == 2

    shown = await reply(world, await emu.slash(world.alice, channel, "story show"))
    assert "Mina lit the oven" in shown.content and "much older grudge" in shown.content

    recap = await emu.slash(world.bob, channel, "story recap")
    recapped = await emu.wait_final(recap, done, timeout=180)
    assert recapped.embeds[0]["title"] == "The story so far · Two rival bakers share one oven"
    assert recapped.embeds[0]["description"].strip()

    exported = await reply(world, await emu.slash(world.alice, channel, "story export"))
    document = emu.files[int(exported.attachments[0]["id"])].decode()
    assert exported.attachments[0]["filename"] == "story.md"
    assert document.startswith("# Two rival bakers share one oven\n")
    assert "Written by alice, bob." in document
    assert "Mina lit the oven before dawn, humming.\n\nOskar arrived" in document

    ended = await reply(world, await emu.slash(world.alice, channel, "story end"))
    assert "is finished" in ended.content
    assert await world.services.stories.active(channel.id) is None
    assert emu.errors == []


@pytest.mark.slow
async def test_mention_and_automatic_turn_and_thread(world: World) -> None:
    emu = world.emu
    channel = await emu.open_channel(world.guild, "auto-story")
    await reply(
        world, await emu.slash(world.mod, channel, "settings set", key="story_auto_turn", value="2")
    )
    await reply(
        world,
        await emu.slash(
            world.alice, channel, "story start", premise="A town where clocks run backwards"
        ),
    )
    await emu.say(world.alice, channel, "Nobody in Velden owned a calendar.")
    await emu.say(world.bob, channel, "The baker sold yesterday's bread tomorrow.")
    bot_turn = await emu.wait_for(
        lambda: [m for m in emu.channel_messages(channel.id) if m.author.bot and m.embeds],
        timeout=180,
    )
    assert bot_turn[-1].embeds[0]["description"]

    async def bot_part() -> bool:
        return [s.source for s in await segments(world, channel)] == ["user", "user", "bot"]

    await eventually(bot_part, timeout=30)

    await emu.say(world.alice, channel, f"<@{emu.bot_user.id}> what happens at noon?")

    def bot_answers() -> int:
        return len([m for m in emu.channel_messages(channel.id) if m.author.bot and m.embeds])

    await emu.wait_for(lambda: bot_answers() >= 2, timeout=180)
    start = await emu.slash(
        world.alice, world.channel, "story start", premise="A map that redraws itself", thread=True
    )
    made = await reply(world, start)
    thread = next(c for c in emu.channels.values() if c.type == 11)
    assert thread.parent_id == world.channel.id and f"<#{thread.id}>" in made.content
    assert await world.services.stories.active(thread.id) is not None
    assert emu.errors == []
