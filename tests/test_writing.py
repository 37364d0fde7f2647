"""The use-case layer without Discord: a task run through the real queue on a scripted engine."""

from __future__ import annotations

from bot.config import load_settings
from bot.generation.queue import GenerationQueue
from bot.generation.types import GenerationRequest, SamplingParams
from bot.prompts.brainstorm import parse_ideas
from bot.ui.render import written_embed
from bot.writing.compose import CANDIDATES, ROUNDS
from bot.writing.run import Written, complete
from bot.writing.tasks import (
    brainstorm_task,
    build_task,
    critique_task,
    expand_task,
    poem_task,
    scene_task,
)
from tests.fakes import ScriptedEngine


async def nowhere(_content: str) -> None:
    """Progress goes nowhere here."""


async def test_a_list_the_model_repeats_is_drawn_a_bounded_number_of_rounds_then_says_so() -> None:
    # The scripted engine echoes its prompt: every candidate repeats the one idea already there.
    engine = ScriptedEngine(delay=0.0, max_batch=CANDIDATES)
    task = brainstorm_task(load_settings({}, dotenv_path=None), "a heist", 5, "plots")
    async with GenerationQueue(engine, max_pending_per_user=1) as queue:
        handle = queue.submit(GenerationRequest(1, task.prompt, task.params))
        text, result, _retried = await complete(queue, task, handle, 1, nowhere)
    # every round's candidates were drawn together, past the per-user limit of 1
    assert len(engine.served) == (5 + ROUNDS) * CANDIDATES
    assert set(engine.calls) == {CANDIDATES}
    assert len(parse_ideas(text)) == 1 and text.startswith("1. ")
    assert result.completion_tokens > 0
    note = "Only 1 of the 5 ideas came out distinct; 🔁 asks again."
    assert task.shortfall is not None and task.shortfall(text) == note
    assert task.shortfall("\n".join(f"{i}. idea number {i}" for i in range(1, 6))) is None


def test_a_note_is_shown_under_the_text_never_in_it() -> None:
    written = Written(1, 7, "1. A heist", "5 plots · a heist", "m", 1.0, note="Only 1 of 5.")
    assert written_embed(written).description == "1. A heist\n\n*Only 1 of 5.*"
    plain = Written(1, 7, "1. A heist", "5 plots · a heist", "m", 1.0)
    assert written_embed(plain).description == "1. A heist"


def test_the_channel_decoding_is_every_commands_base() -> None:
    settings = load_settings({}, dotenv_path=None)
    channel = SamplingParams(method="greedy", temperature=0.3, top_p=0.5, repetition_penalty=1.3)
    decoded = [
        critique_task(settings, "The door creaked.", "overall", "balanced", channel),
        scene_task(settings, "a bakery", "Ada, Ben", None, channel),
        expand_task(settings, "a heist", "The vault is empty.", 1, channel),
    ]
    chosen = [
        poem_task(settings, "rain", "haiku", None, channel),
        brainstorm_task(settings, "a heist", 5, "plots", channel),
    ]
    for task in decoded + chosen:
        p = task.params
        assert (p.temperature, p.top_p, p.repetition_penalty) == (0.3, 0.5, 1.3), task.command
        # 🔁 rebuilds the task from what was stored, decoded the same way
        rebuilt = build_task(task.command, task.inputs, settings)
        assert rebuilt is not None and rebuilt.params == p
    assert {t.params.method for t in decoded} == {"greedy"}
    # choosing among drafts needs drafts that differ (said in /settings show and the help)
    assert {t.params.method for t in chosen} == {"sampling"}
