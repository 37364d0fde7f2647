"""/brainstorm over the emulator with the embedded model, and the idea parser."""

from __future__ import annotations

import pytest

from bot.prompts.brainstorm import number, parse_ideas
from tests.conftest import World, assert_numbered_list


def test_parse_ideas_takes_numbers_bullets_and_a_bare_first_line() -> None:
    text = " A lighthouse keeper\n2) A ghost ship\n- a storm\n3. A ghost ship\n\n4: ok\n5. x"
    assert parse_ideas(text) == ["A lighthouse keeper", "A ghost ship", "a storm"]
    assert number(["a", "b"]) == "1. a\n2. b"


@pytest.mark.slow
async def test_brainstorm_gives_exactly_count_ideas_and_expands_one(world: World) -> None:
    emu, store = world.emu, world.services.store
    interaction = await emu.slash(
        world.alice,
        world.channel,
        "brainstorm",
        topic="a city under the sea",
        count=4,
        kind="plots",
    )
    message = await emu.wait_final(interaction, lambda m: bool(m.embeds), timeout=180)
    embed = message.embeds[0]
    assert embed["title"] == "4 plots · a city under the sea"
    have = assert_numbered_list(embed["description"], 4)
    select = message.component("brainstorm:expand:")
    list_id = int(select["custom_id"].rsplit(":", 1)[1])
    assert [o["value"] for o in select["options"]] == [str(i) for i in range(1, have + 1)]

    pick = min(2, have)
    expand = await emu.select(world.bob, message, select["custom_id"], [str(pick)])
    expanded = await emu.wait_final(expand, lambda m: bool(m.embeds), timeout=180)
    assert expanded.id != message.id  # a new message; the list stays
    assert expanded.embeds[0]["title"] == f"Idea {pick}, expanded"
    assert expanded.embeds[0]["description"].strip()  # whatever the model wrote, shown
    rows = await store.fetchall(
        "SELECT user_id, refines_id, refine_kind FROM generations WHERE command = 'expand'"
    )
    assert [tuple(r) for r in rows] == [(world.bob.id, list_id, "expand")]
    assert emu.errors == []
