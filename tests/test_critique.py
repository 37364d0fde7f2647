"""/critique, "Critique this" and /scene over the emulator with the embedded model."""

from __future__ import annotations

import pytest

from bot.prompts.critique import critique_sections, has_dialogue, quotable_lines, scene_heading
from emulator import Message
from tests.conftest import World

POEM = (
    "The lamps along the harbour fade to grey,\n"
    "and gulls complain about the morning light;\n"
    "I fold your letter twice and walk away."
)


def finished(message: Message) -> bool:
    return bool(message.embeds)


def test_sections_quotes_and_dialogue() -> None:
    answer = "Strengths:\n- mood\n\nSuggestions:\n- cut\n\nLine notes:\n- sharper verb"
    assert critique_sections(answer) == {
        "Strengths": "- mood",
        "Suggestions": "- cut",
        "Line Notes": "- sharper verb",
    }
    assert quotable_lines(POEM) == [POEM.splitlines()[0], POEM.splitlines()[1]]
    assert has_dialogue("INT. X\n\nMAYA\nHello.\n", ["Maya"])
    assert not has_dialogue("INT. X\n\nMaya walks in and sits.\n", ["Maya"])
    assert scene_heading("a rainy street") == "EXT. A RAINY STREET - NIGHT"
    assert scene_heading("the kitchen") == "INT. THE KITCHEN - NIGHT"


@pytest.mark.slow
async def test_critique_has_its_parts_and_quotes_the_text(world: World) -> None:
    emu = world.emu
    interaction = await emu.slash(
        world.alice, world.channel, "critique", text=POEM, focus="imagery", tone="gentle"
    )
    message = await emu.wait_final(interaction, finished, timeout=180)
    body = message.embeds[0]["description"]
    assert message.embeds[0]["title"] == "Critique · imagery · gentle"
    assert "**Strengths**" in body and "**Line notes**" in body
    assert "> The lamps along the harbour fade to grey," in body
    assert emu.errors == []


@pytest.mark.slow
async def test_critique_this_on_a_message_and_on_an_image(world: World) -> None:
    emu = world.emu
    said = await emu.say(world.bob, world.channel, POEM)
    interaction = await emu.context_menu(world.alice, said, "Critique this")
    message = await emu.wait_final(interaction, finished, timeout=180)
    assert "> The lamps along the harbour" in message.embeds[0]["description"]

    picture = await emu.say(world.bob, world.channel, "", images=("sketch.png",))
    refused = await emu.context_menu(world.alice, picture, "Critique this")
    answer = await emu.wait_for(lambda: emu.original(refused))
    assert answer.content.startswith("I can only critique text for now")
    assert refused.ephemeral
    assert emu.errors == []


@pytest.mark.slow
async def test_scene_is_in_screenplay_form(world: World) -> None:
    emu = world.emu
    interaction = await emu.slash(
        world.alice,
        world.channel,
        "scene",
        setting="a lighthouse",
        characters="Ada, Ben",
        situation="the lamp has gone out",
    )
    message = await emu.wait_final(interaction, finished, timeout=180)
    scene = message.embeds[0]["description"]
    assert scene.startswith("INT. A LIGHTHOUSE - NIGHT\n\n")
    assert len(scene.splitlines()) >= 3
    assert emu.errors == []
