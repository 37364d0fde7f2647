"""Reacting 🔁 on an output regenerates it in place, saved as a linked alternative."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import World

pytestmark = pytest.mark.slow


async def test_regenerate_reaction_edits_in_place_and_links(world: World) -> None:
    emu, store = world.emu, world.services.store
    interaction = await emu.slash(
        world.alice, world.channel, "poem", topic="snowfall", form="haiku"
    )
    message = await emu.wait_final(interaction, lambda m: bool(m.embeds), timeout=180)
    first_footer = message.embeds[0]["footer"]["text"]
    # the bot records the message id right after Discord accepts the final edit
    for _ in range(100):
        if await store.get_output_by_message(message.id):
            break
        await asyncio.sleep(0.05)
    edits_before = len(message.history)

    await emu.react(world.bob, message, "🔁")
    await emu.wait_for(
        lambda: message.embeds and message.embeds[0]["footer"]["text"] != first_footer, timeout=60
    )
    assert len(message.history) > edits_before  # edited in place, no new message
    assert message.embeds[0]["title"] == "Haiku · snowfall"
    rows = await store.fetchall(
        "SELECT g.id, g.user_id, g.refines_id, g.refine_kind, o.chosen_id FROM generations g"
        " JOIN outputs o ON o.id = g.output_id WHERE o.message_id = ? ORDER BY g.id",
        (message.id,),
    )
    assert len(rows) == 2
    first, second = rows
    assert (second["refines_id"], second["refine_kind"]) == (first["id"], "regenerate")
    assert second["user_id"] == world.bob.id
    assert second["chosen_id"] == second["id"]
    assert f"#{second['id']}" in message.embeds[0]["footer"]["text"]
    assert emu.errors == []


async def test_reactions_elsewhere_are_ignored(world: World) -> None:
    emu = world.emu
    said = await emu.say(world.alice, world.channel, "just a message")
    await emu.react(world.bob, said, "🔁")
    interaction = await emu.slash(world.alice, world.channel, "poem", topic="moss", form="haiku")
    message = await emu.wait_final(interaction, lambda m: bool(m.embeds), timeout=180)
    await emu.react(world.bob, message, "👍")  # not a refinement (votes come with feedback)
    assert len([m for m in emu.channel_messages(world.channel.id) if m.author.bot]) >= 1
    assert not said.history
    assert emu.errors == []
