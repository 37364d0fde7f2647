"""Writing in slots: what the program guarantees whatever the model writes.

A scripted `draw` stands in for the queue: it answers every slot with the same run-on text
(too long for any line, rhyming with nothing), so each guarantee below comes from the program
and none from the model's luck.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable

import pytest

from bot.generation.types import Cut, GenerationResult, Message, Prompt, SamplingParams
from bot.prompts import prosody
from bot.writing.compose import END_PROBES, Draw, list_item, slots_for, write_list, write_poem

RAMBLE = (
    "the quiet river carries every lantern past the sleeping town while the old bridge hums "
    "a low song for the walkers going home and morning gathers slowly over silver fields "
    "where sparrows argue softly with the patient wind beside a gate of weathered wood"
)


def result(text: str, prefix: str, params: SamplingParams, *, with_cuts: bool) -> GenerationResult:
    cuts = None
    if with_cuts:
        # every word end, each word costing -1, every probe equally likely next
        ends = [m.end() for m in re.finditer(r"\S+", text)]
        probes = tuple(-2.0 for _ in params.probes)
        at_ends = [Cut(k, end, -1.0 * k, probes) for k, end in enumerate(ends, 1)]
        cuts = (Cut(0, 0, 0.0, probes), *at_ends)
    tokens = len(text.split())
    return GenerationResult("r", prefix + text, "stop", 10, tokens, 0.0, 0.1, "fake", cuts)


def scripted(answers: Callable[[int], str], *, with_cuts: bool = True) -> tuple[Draw, list[Prompt]]:
    asked: list[Prompt] = []
    counter = itertools.count()

    async def draw(prompt: Prompt, params: SamplingParams, n: int) -> list[GenerationResult]:
        asked.append(prompt)
        return [
            result(answers(next(counter)), prompt.prefix, params, with_cuts=with_cuts)
            for _ in range(n)
        ]

    return draw, asked


def prompt_for(lines: list[str], letter: str) -> Prompt:
    prefix = "".join(f"{line}\n" for line in lines) + letter
    return Prompt((Message("user", "a poem"),), "a poem", prefix)


async def nowhere(_text: str) -> None:
    return None


@pytest.mark.parametrize("with_cuts", [True, False], ids=["log-probs", "no log-probs"])
@pytest.mark.parametrize("form", ["haiku", "tanka", "limerick", "sonnet"])
async def test_fixed_forms_meet_their_meter_whatever_the_model_writes(
    form: str, with_cuts: bool
) -> None:
    prosody.warm()
    words = RAMBLE.split()
    # each candidate is the same words in another order (seeded: the same on every run)
    draw, asked = scripted(
        lambda i: " ".join(random.Random(i).sample(words, len(words))), with_cuts=with_cuts
    )
    poem = await write_poem(draw, nowhere, prompt_for, slots_for(form), "the river")
    verdict = prosody.check(poem, form, tolerance=0)
    assert verdict.ok, (verdict.misses, poem)
    # each line was asked for with the lines before it as the start of the answer
    lines = poem.splitlines()
    assert list(dict.fromkeys(p.prefix for p in asked if p.prefix)) == [
        "".join(f"{line}\n" for line in lines[:k]) for k in range(1, len(lines))
    ]


async def test_an_engine_that_ignores_the_stop_gives_its_first_line_only() -> None:
    draw, _asked = scripted(
        lambda i: "\nsoft rain on the roof\nand more\nand more", with_cuts=False
    )
    poem = await write_poem(draw, nowhere, prompt_for, slots_for("free_verse"), "rain")
    assert all("\n" not in line and line for line in poem.splitlines())


async def test_acrostic_lines_start_with_their_letters() -> None:
    draw, _asked = scripted(lambda i: "ights over the water tonight")
    poem = await write_poem(draw, nowhere, prompt_for, slots_for("acrostic", "MOON"), "moon")
    assert prosody.initials(poem.splitlines()) == "MOON"


async def test_lines_that_are_not_verse_are_never_chosen() -> None:
    # code, numbers and repeats of an earlier line are left out; the slot waits for verse
    answers = ["x = foo(1) # 2018", "the quiet river carries lanterns home tonight again"]
    draw, _asked = scripted(lambda i: answers[i % 2])
    poem = await write_poem(draw, nowhere, prompt_for, slots_for("haiku"), "river")
    assert not re.search(r"[0-9=#()]", poem)


async def test_a_slot_the_model_never_fills_ends_the_poem_short() -> None:
    draw, _asked = scripted(lambda i: "1234 ### ()")
    poem = await write_poem(draw, nowhere, prompt_for, slots_for("haiku"), "river")
    assert poem == ""  # nothing is made up in the model's place


def list_prompt(have: list[str]) -> Prompt:
    prefix = "".join(f"{i}. {idea}\n" for i, idea in enumerate(have, 1)) + f"{len(have) + 1}."
    return Prompt((Message("user", "ideas"),), "ideas", prefix)


async def test_lists_are_exact_distinct_and_one_idea_each() -> None:
    ideas = [
        " A keeper finds letters dated next year. She burns them. Then more arrive. And more.",
        " A keeper finds letters dated next year. She burns them. Then more arrive. And more.",
        " Two sisters inherit the tower and argue about its ghost.",
        " A ship that sank a century ago signals the lamp every night.",
        " The lamp lights itself whenever someone lies in the tower.",
        " A child swaps places with the keeper's reflection.",
    ]
    draw, _asked = scripted(lambda i: ideas[i % len(ideas)])
    params = SamplingParams(stop=("\n",), logprobs=True)
    items = await write_list(draw, nowhere, list_prompt, params, 4, "a lighthouse")
    assert len(items) == 4
    assert len({i.lower() for i in items}) == 4
    assert all(len(re.findall(r"[.!?](?:\s|$)", item)) <= 2 for item in items)


def test_list_items_stop_at_two_sentences_and_refuse_rambles() -> None:
    assert list_item(" One. Two. Three.") == "One. Two."
    assert list_item(" " + "word " * 60) is None
    assert list_item("   ") is None


def test_line_params_ask_for_one_line_with_end_and_rhyme_probes() -> None:
    from bot.writing.compose import line_params

    params = line_params(slots_for("limerick")[1], ["dream", "team"])
    assert params.stop == ("\n",) and params.logprobs
    assert params.probes == (*END_PROBES, " dream", " team")


async def test_the_reward_model_reorders_near_equals_but_never_beats_the_form() -> None:
    from bot.writing.compose import Option, reranked

    options = [
        Option("the harbour lanterns glow", True, -1.00),
        Option("the harbour evening falls", True, -0.95),
        Option("a line that misses the form", False, 5.0),
    ]

    async def likes_lanterns(texts: list[str]) -> list[float]:
        return [3.0 if "lanterns" in t else (9.0 if "misses" in t else 0.0) for t in texts]

    judged = await reranked(options, likes_lanterns, lambda o: o.text)
    best = max(judged, key=lambda o: o.rank)
    assert best.text == "the harbour lanterns glow"  # its taste decides between near equals
    assert [o.text for o in judged] == [o.text for o in options]

    async def broken(texts: list[str]) -> list[float]:
        raise RuntimeError("the reward model is gone")

    assert await reranked(options, broken, lambda o: o.text) == options  # one opinion, not a need
