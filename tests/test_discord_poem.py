"""/poem end to end: the real discord.py client, the loopback emulator, the embedded model."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from emulator import Message
from tests.conftest import World, assert_poem_form

pytestmark = pytest.mark.slow


async def eventually(world: World, sql: str, params: tuple[object, ...]) -> Any:
    """The first row of `sql` once there is one (within 5 s)."""
    for _ in range(100):
        rows = await world.services.store.fetchall(sql, params)
        if rows:
            return rows[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no row for {sql} {params}")


def finished(message: Message) -> bool:
    return bool(message.embeds)


async def test_poem_command_is_registered(world: World) -> None:
    poem = next(c for c in world.emu.commands[None] if c["name"] == "poem")
    assert (
        poem["description"]
        == "Write a poem in the form you choose, each line picked from several sampled drafts."
    )
    form = next(o for o in poem["options"] if o["name"] == "form")
    assert {c["value"] for c in form["choices"]} == {
        "free_verse",
        "haiku",
        "tanka",
        "limerick",
        "sonnet",
        "acrostic",
    }


async def test_haiku_arrives_streams_and_is_saved(world: World) -> None:
    emu = world.emu
    interaction = await emu.slash(
        world.alice, world.channel, "poem", topic="autumn rain", form="haiku"
    )
    message = await emu.wait_final(interaction, finished, timeout=180)
    embed = message.embeds[0]
    assert embed["title"] == "Haiku · autumn rain"
    poem = assert_poem_form(embed["description"], "haiku")
    assert embed["footer"]["text"].startswith("SmolLM2-135M-Instruct · ")
    assert message.content == ""
    assert interaction.callback_type == 5  # deferred at once
    assert message.allowed_mentions == {"parse": []}
    assert message.pinged == []
    # the message id is recorded right after Discord accepts the final edit
    row = await eventually(
        world,
        "SELECT g.*, o.message_id FROM generations g JOIN outputs o ON o.id = g.output_id"
        " WHERE o.message_id = ?",
        (message.id,),
    )
    assert (row["command"], row["user_id"], row["channel_id"]) == (
        "poem",
        world.alice.id,
        world.channel.id,
    )
    assert row["output"] == poem
    assert row["message_id"] == message.id
    assert f"#{row['id']}" in embed["footer"]["text"]
    assert emu.errors == []


async def test_long_poem_streams_by_edits_at_most_once_a_second(world: World) -> None:
    emu = world.emu
    interaction = await emu.slash(
        world.alice, world.channel, "poem", topic="the sea at night", form="tanka"
    )
    message = await emu.wait_final(interaction, finished, timeout=180)
    streamed = [v for v in message.history if v["content"].startswith("✍️")]
    assert len(streamed) >= 2, message.history
    # the text grows from one edit to the next
    assert len(streamed[-1]["content"]) > len(streamed[0]["content"])
    gaps = [b - a for a, b in zip(message.edit_times, message.edit_times[1:], strict=False)]
    # the final edit may follow the last streaming edit at once; streaming edits may not
    assert all(gap >= 0.9 for gap in gaps[:-1]), gaps
    assert emu.errors == []


async def test_empty_topic_is_refused_politely(world: World) -> None:
    emu = world.emu
    interaction = await emu.slash(world.alice, world.channel, "poem", topic="   ")
    message = await emu.wait_for(lambda: emu.original(interaction))
    assert message.content == "Please give the poem a topic."
    assert interaction.ephemeral
    long = await emu.slash(world.alice, world.channel, "poem", topic="x" * 301)
    message = await emu.wait_for(lambda: emu.original(long))
    assert "please keep it under 300" in message.content
    assert emu.errors == []


async def test_acrostic_spells_its_word(world: World) -> None:
    emu = world.emu
    interaction = await emu.slash(
        world.alice, world.channel, "poem", topic="a quiet harbour", form="acrostic"
    )
    message = await emu.wait_final(interaction, finished, timeout=180)
    # each line is written after the ones before it, beginning with its letter
    assert_poem_form(message.embeds[0]["description"], "acrostic", "QUIET")
    assert emu.errors == []
