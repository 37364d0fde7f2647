"""/brainstorm over the emulator with the embedded model, and the idea parser."""

from __future__ import annotations

import re

import pytest

from bot.prompts.brainstorm import number, parse_ideas
from tests.conftest import World


def test_parse_ideas_takes_numbers_bullets_and_a_bare_first_line() -> None:
    text = " A lighthouse keeper\n2) A ghost ship\n- a storm\n3. A ghost ship\n\n4: ok\n5. x"
    assert parse_ideas(text) == ["A lighthouse keeper", "A ghost ship", "a storm"]
    assert number(["a", "b"]) == "1. a\n2. b"


@pytest.mark.slow
async def test_brainstorm_gives_exactly_count_ideas_and_expands_one(world: World) -> None:
    emu, store = world.emu, world.services.store
    interaction = await emu.slash(
        world.alice, world.channel, "brainstorm", topic="a city under the sea", count=4,
        kind="plots",
    )  # fmt: skip
    message = await emu.wait_final(interaction, lambda m: bool(m.embeds), timeout=180)
    embed = message.embeds[0]
    assert embed["title"] == "4 plots · a city under the sea"
    lines = embed["description"].splitlines()
    assert [re.match(r"(\d+)\. \S", line).group(1) for line in lines] == ["1", "2", "3", "4"]  # type: ignore[union-attr]
    select = message.component("brainstorm:expand:")
    list_id = int(select["custom_id"].rsplit(":", 1)[1])
    assert [o["value"] for o in select["options"]] == ["1", "2", "3", "4"]

    expand = await emu.select(world.bob, message, select["custom_id"], ["2"])
    expanded = await emu.wait_final(expand, lambda m: bool(m.embeds), timeout=180)
    assert expanded.id != message.id  # a new message; the list stays
    assert expanded.embeds[0]["title"] == "Idea 2, expanded"
    assert len(expanded.embeds[0]["description"]) > 40
    rows = await store.fetchall(
        "SELECT user_id, refines_id, refine_kind FROM generations WHERE command = 'expand'"
    )
    assert [tuple(r) for r in rows] == [(world.bob.id, list_id, "expand")]
    assert emu.errors == []
