"""The gateway drops mid-generation: the bot resumes, the output completes, events flow again."""

from __future__ import annotations

import pytest

from tests.conftest import World

pytestmark = pytest.mark.slow


async def test_dropped_gateway_resumes_and_output_completes(world: World) -> None:
    emu = world.emu
    resumes = emu.resumes
    interaction = await emu.slash(
        world.alice, world.channel, "poem", topic="a storm at sea", form="haiku"
    )
    await emu.wait_for(lambda: interaction.callback_type == 5)
    await emu.drop_gateway()
    message = await emu.wait_final(interaction, lambda m: bool(m.embeds), timeout=180)
    assert message.embeds[0]["description"].strip()
    await emu.wait_for(lambda: emu.resumes > resumes, timeout=30)
    # events reach the bot again after the resume
    after = await emu.slash(world.bob, world.channel, "poem", topic="calm water", form="haiku")
    done = await emu.wait_final(after, lambda m: bool(m.embeds), timeout=180)
    assert done.embeds[0]["title"] == "Haiku · calm water"
    assert emu.errors == []


async def test_discord_500_on_a_streaming_edit_does_not_lose_the_poem(world: World) -> None:
    emu = world.emu
    emu.inject_fault("PATCH", "/webhooks/", status=500, times=2)
    interaction = await emu.slash(
        world.alice, world.channel, "poem", topic="harbour lanterns", form="tanka"
    )
    message = await emu.wait_final(interaction, lambda m: bool(m.embeds), timeout=180)
    assert message.embeds[0]["description"].strip()
    rows = await world.services.store.fetchall(
        "SELECT output FROM generations WHERE prompt LIKE '%harbour lanterns%'"
    )
    assert [r["output"] for r in rows] == [message.embeds[0]["description"]]
    emu.faults.clear()
