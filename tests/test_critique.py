"""/critique, "Critique this" and /scene over the emulator with the embedded model."""

from __future__ import annotations

import pytest

from bot.config import load_settings
from bot.prompts.critique import (
    critique_sections,
    grounded,
    has_dialogue,
    only_named,
    quotable_lines,
    quotations,
    scene_heading,
)
from bot.writing.run import NOTHING_USABLE
from bot.writing.tasks import critique_task
from emulator import Message
from tests.conftest import World, assert_grounded_critique, settled, told_privately

POEM = (
    "The lamps along the harbour fade to grey,\n"
    "and gulls complain about the morning light;\n"
    "I fold your letter twice and walk away."
)


def finished(message: Message) -> bool:
    return bool(message.embeds)


def assert_critique_or_said(message: Message, text: str) -> None:
    """An answer, or the plain word that nothing the model wrote held up."""
    if message.embeds:
        assert_grounded_critique(message.embeds[0]["description"], text)
    else:
        assert message.content == NOTHING_USABLE


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


def test_only_the_named_characters_speak() -> None:
    scene = "INT. BAKERY - NIGHT\n\nADA\nHello.\n\nBOB (V.O.)\nWho is it?\nMe.\n\nBEN\nIt's me."
    kept = only_named(scene, ["ADA", "BEN"])
    assert kept == "INT. BAKERY - NIGHT\n\nADA\nHello.\n\nBEN\nIt's me."


def test_quotations_are_told_from_proposed_rewrites() -> None:
    note = 'The image "gulls complain" works; try "gulls quarrel with the light" instead.'
    assert quotations(note) == ["gulls complain"]
    assert grounded(note, POEM)
    assert not grounded('I love the word "tapestry" here.', POEM)


def test_only_what_holds_up_is_kept_and_nothing_is_filled_in() -> None:
    task = critique_task(load_settings({}, dotenv_path=None), POEM, "imagery", "gentle")
    first, second = quotable_lines(POEM)
    assert len(task.extra) == 2  # one note per quoted line, written side by side
    main = (
        "Strengths:\n- The harbour lamps set a quiet scene.\n"
        '- The word "tapestry" shimmers.\n\n'
        "Suggestions:\n- Let the letter show more feeling.\n\n"
        "Line notes:\n- the model's own notes are not used"
    )
    notes = ['Maybe "fade to grey" could be "fade to pewter". It runs on.', "   "]
    shown = task.finish(task.join([main, *notes]))
    assert shown == (
        "**Strengths**\n- The harbour lamps set a quiet scene.\n\n"
        "**Suggestions**\n- Let the letter show more feeling.\n\n"
        f'**Line notes**\n> {first}\nMaybe "fade to grey" could be "fade to pewter".'
    )
    assert second not in shown  # its note was empty: the line is left out, not filled in
    same = task.finish(task.join([main, "Cut a word.", "Cut a word."]))
    assert same.count("Cut a word.") == 1
    assert_grounded_critique(shown, POEM)
    # a retry writes the critique again and keeps the notes already written
    assert task.combine is not None
    again = task.combine(shown, "Strengths:\n- Calm.\n\nSuggestions:\n- More light.")
    assert again.startswith("**Strengths**\n- Calm.") and again.endswith('fade to pewter".')
    # an answer spent on strengths: the retry starts with them and the Suggestions heading
    assert task.accept is not None and task.retry is not None
    no_suggestions = task.finish("Strengths:\n- Calm.\n- Quiet.\n- Still.\n- Slow")
    assert not task.accept(no_suggestions)
    firmer = task.retry(no_suggestions)
    assert firmer is not None
    assert firmer.prefix == "Strengths:\n- Calm.\n- Quiet.\n- Still.\n\nSuggestions:\n-"
    assert firmer.messages == task.prompt.messages
    assert task.accept(task.combine(no_suggestions, firmer.prefix + " Name the harbour."))
    assert task.retry("").prefix == "Suggestions:\n-"  # type: ignore[union-attr]


@pytest.mark.slow
async def test_critique_by_command_and_by_menu_quotes_the_text(world: World) -> None:
    emu = world.emu
    said = await emu.say(world.bob, world.channel, POEM)
    # both at once: the engine writes them side by side
    by_command = await emu.slash(
        world.alice, world.channel, "critique", text=POEM, focus="imagery", tone="gentle"
    )
    by_menu = await emu.context_menu(world.mod, said, "Critique this")
    message = await emu.wait_final(by_command, settled, timeout=600)
    assert not message.embeds or message.embeds[0]["title"] == "Critique · imagery · gentle"
    assert_critique_or_said(message, POEM)
    assert_critique_or_said(await emu.wait_final(by_menu, settled, timeout=600), POEM)
    assert emu.errors == []


@pytest.mark.slow
async def test_critique_this_on_a_broken_image_says_so(world: World) -> None:
    emu = world.emu
    picture = await emu.say(world.bob, world.channel, "", files={"sketch.png": b"\x89PNG fake"})
    refused = await emu.context_menu(world.alice, picture, "Critique this")
    assert (await told_privately(emu, refused)).startswith("I can't read that file as an image")
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
    assert only_named(scene, ["ADA", "BEN"]) == scene  # nobody else speaks
    assert emu.errors == []
