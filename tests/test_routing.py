"""Mentions and replies, routed by the channel's mode; poems from a message; long answers."""

from __future__ import annotations

import asyncio

import pytest

from bot.ui.render import ATTACHED_NOTE, attachments_for, written_embed
from bot.writing.run import NOTHING_USABLE, Written
from bot.writing.tasks import chat_task
from emulator import Channel, Message
from tests.conftest import (
    World,
    assert_grounded_critique,
    assert_numbered_list,
    assert_poem_form,
    settled,
)


def test_long_answers_are_cut_at_a_boundary_and_attached() -> None:
    from bot.config import load_settings

    task = chat_task(load_settings({}, dotenv_path=None), "hi")
    text = "\n\n".join(f"Paragraph {i} " + "word " * 150 for i in range(8))
    written = Written(1, 7, text, task.title, "m", 1.0)
    embed = written_embed(written, 2, 3)
    assert embed.footer.text == "m · 1.0 s · #7 · 2/3"
    assert embed.description is not None and embed.description.endswith(ATTACHED_NOTE)
    assert len(embed.description) <= 4096
    assert embed.description[: -len(ATTACHED_NOTE)].rstrip().endswith("word")  # whole words
    assert [f.filename for f in attachments_for(written.text, 7)] == ["llmos-7.md"]
    assert attachments_for("short", 7) == []


async def channel_in_mode(world: World, name: str, mode: str) -> Channel:
    channel = await world.emu.open_channel(world.guild, name)
    await world.services.preferences.set(
        "channel", channel.id, "mode", mode, guild_id=world.guild.id, user_id=world.mod.id
    )
    return channel


def finished_replies(world: World, channel: Channel) -> list[Message]:
    """The bot's messages that are done: an answer, or a failure said plainly."""
    return [m for m in world.emu.channel_messages(channel.id) if m.author.bot and settled(m)]


def bot_answers(world: World, channel: Channel) -> list[Message]:
    return [m for m in world.emu.channel_messages(channel.id) if m.author.bot and m.embeds]


@pytest.mark.slow
async def test_chat_mode_answers_mentions_and_replies(world: World) -> None:
    emu = world.emu
    channel = await channel_in_mode(world, "chat-room", "chat")
    asked = await emu.say(world.alice, channel, f"<@{emu.bot_user.id}> give me a word for rain")
    answers = await emu.wait_for(lambda: bot_answers(world, channel), timeout=180)
    assert answers[0].reference_id == asked.id and answers[0].pinged == []
    await emu.say(world.bob, channel, "and one for snow?", reply_to=answers[0])
    await emu.wait_for(lambda: len(bot_answers(world, channel)) == 2, timeout=180)
    assert emu.errors == []


@pytest.mark.slow
async def test_off_mode_ignores_and_critique_mode_critiques_the_replied_text(
    world: World,
) -> None:
    emu = world.emu
    quiet = await channel_in_mode(world, "quiet-room", "off")
    await emu.say(world.alice, quiet, f"<@{emu.bot_user.id}> hello?")
    await asyncio.sleep(1.0)
    assert [m for m in emu.channel_messages(quiet.id) if m.author.bot] == []

    workshop = await channel_in_mode(world, "workshop", "critique")
    text = "The fog came in on little cat feet.\nIt sat."
    draft = await emu.say(world.bob, workshop, text)
    await emu.say(world.alice, workshop, f"<@{emu.bot_user.id}>", reply_to=draft)
    done = await emu.wait_for(lambda: finished_replies(world, workshop), timeout=600)
    if not done[0].embeds:  # everything the model wrote failed the grounding: said plainly
        assert done[0].content == NOTHING_USABLE
    else:
        assert_grounded_critique(done[0].embeds[0]["description"], text)
        # the replied-to message is what was critiqued: the stored task quotes its lines
        rows = await world.services.store.fetchall(
            "SELECT prompt FROM generations WHERE command = 'critique' ORDER BY id DESC LIMIT 1"
        )
        assert "The fog came in on little cat feet." in rows[0]["prompt"]
    assert emu.errors == []


@pytest.mark.slow
async def test_brainstorm_mode_and_poem_about_a_message(world: World) -> None:
    emu = world.emu
    room = await channel_in_mode(world, "ideas-room", "brainstorm")
    said = await emu.say(world.bob, world.channel, "My grandmother kept bees on the roof.")
    # all three at once, from three people: the engine writes them side by side
    await emu.say(world.alice, room, f"<@{emu.bot_user.id}> a heist in a library")
    poem = await emu.context_menu(world.mod, said, "Write a poem about this")
    styled = await emu.slash(
        world.bob, world.channel, "poem", topic="tea", form="haiku", style="playful"
    )
    answers = await emu.wait_for(lambda: bot_answers(world, room), timeout=600)
    assert_numbered_list(answers[0].embeds[0]["description"], 5)

    done = await emu.wait_final(poem, lambda m: bool(m.embeds), timeout=600)
    assert done.embeds[0]["title"] == "Free verse · My grandmother kept bees on the roof."
    assert_poem_form(done.embeds[0]["description"], "free_verse")

    await emu.wait_final(styled, lambda m: bool(m.embeds), timeout=600)
    rows = await world.services.store.fetchall(
        'SELECT prompt FROM generations WHERE prompt LIKE \'%"style": "playful"%\''
    )
    assert rows
    assert emu.errors == []
