"""/settings over the emulator: permissions, validation, server defaults, channel overrides."""

from __future__ import annotations

from typing import Any

import pytest

from emulator import Interaction, Message
from tests.conftest import World

pytestmark = pytest.mark.slow


async def answer(world: World, interaction: Interaction) -> Message:
    message = await world.emu.wait_for(lambda: world.emu.original(interaction))
    assert interaction.ephemeral  # settings talk is private
    return message


async def test_members_without_permission_are_refused(world: World) -> None:
    cases: list[tuple[str, dict[str, Any]]] = [
        ("settings set", {"key": "temperature", "value": "0.5"}),
        ("settings show", {}),
        ("settings reset", {}),
    ]
    for command, options in cases:
        interaction = await world.emu.slash(world.alice, world.channel, command, **options)
        message = await answer(world, interaction)
        assert message.content.startswith("Changing settings needs the Manage Channels")
    prefs = await world.services.preferences.for_channel(world.guild.id, world.channel.id)
    assert prefs.temperature == 0.8


async def test_server_defaults_and_channel_overrides(world: World) -> None:
    emu, prefs = world.emu, world.services.preferences
    refused = await emu.slash(
        world.mod, world.channel, "settings set", key="mode", value="story", scope="server"
    )
    assert "Manage Server" in (await answer(world, refused)).content

    done = await emu.slash(
        world.owner, world.channel, "settings set", key="mode", value="Story", scope="server"
    )
    assert (await answer(world, done)).content == "`mode` is now 'story' for the whole server."
    done = await emu.slash(world.mod, world.channel, "settings set", key="temperature", value="0.5")
    assert (await answer(world, done)).content == "`temperature` is now 0.5 for this channel."
    current = await prefs.for_channel(world.guild.id, world.channel.id)
    assert (current.mode, current.temperature) == ("story", 0.5)
    elsewhere = await prefs.for_channel(world.guild.id, 12345)
    assert (elsewhere.mode, elsewhere.temperature) == ("story", 0.8)

    shown = await answer(world, await emu.slash(world.mod, world.channel, "settings show"))
    text = shown.embeds[0]["description"]
    assert "`mode` = 'story'  (server)" in text
    assert "`temperature` = 0.5  (channel)" in text
    assert "`top_p` = 0.95  (default)" in text
    # the exceptions to "every command decodes the channel's way" are said beside the values
    overrides = shown.embeds[0]["fields"][0]
    assert "/poem and /brainstorm always sample" in overrides["value"]

    bad = await emu.slash(world.mod, world.channel, "settings set", key="temperature", value="9")
    assert (await answer(world, bad)).content == (
        "That value doesn't work: temperature must be from 0.1 to 1.5."
    )
    reset = await emu.slash(world.mod, world.channel, "settings reset")
    assert (await answer(world, reset)).content == "Back to defaults: this channel's settings."
    current = await prefs.for_channel(world.guild.id, world.channel.id)
    assert (current.mode, current.temperature) == ("story", 0.8)
    reset = await emu.slash(world.owner, world.channel, "settings reset", scope="server")
    assert (await answer(world, reset)).content == "Back to defaults: the server's settings."
    assert (await prefs.for_channel(world.guild.id, world.channel.id)).mode == "chat"
    assert emu.errors == []


async def test_damaged_stored_value_falls_back_to_default(world: World) -> None:
    store = world.services.store
    await store.set_setting("channel", 999, "temperature", "not a number")
    await store.set_setting("channel", 999, "mode", "critique")
    prefs = await world.services.preferences.for_channel(None, 999)
    assert (prefs.temperature, prefs.mode) == (0.8, "critique")
