"""Quality check: a fixed battery of prompts per command, scored for form compliance.

    python -m tools.eval [--per-command 10]

Runs the same tasks the cogs run (prompts, post-processing, the one retry) on the configured
model and prints, per command, the share of outputs that meet their form: a haiku has 3 lines,
a brainstorm exactly N items, a critique its parts and a quote, a scene its heading and a line
of dialogue; and every output is non-empty, has no template tokens, does not echo the prompt
and repeats no line three times. A benchmark, not a test: it reports, it does not fail.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.config import load_settings
from bot.generation.factory import build_engine
from bot.generation.queue import GenerationQueue
from bot.generation.types import GenerationRequest
from bot.prompts.brainstorm import parse_ideas
from bot.prompts.critique import character_cues, has_dialogue
from bot.prompts.poems import acrostic_word
from bot.writing.run import Task, complete
from bot.writing.tasks import brainstorm_task, chat_task, critique_task, poem_task, scene_task

TOPICS = [
    "autumn rain",
    "a lighthouse",
    "the last train home",
    "a fox in the snow",
    "old letters",
    "the sea at night",
    "a city waking up",
    "my grandmother's kitchen",
    "a broken clock",
    "first frost",
    "a paper boat",
    "bees in summer",
]
PASSAGES = [
    "The door creaked. Nobody was there. She went inside and the house was dark and cold.",
    "He ran fast. The dog ran faster. In the end they both sat down in the grass, panting.",
    "Rain on the roof again,\nthe kettle starts to sing,\nand I forget your name.",
    "The city never sleeps, they say, but tonight it dozed, lamps blinking like heavy eyes.",
]
SETTINGS = ["a lighthouse", "a night bus", "a bakery at dawn", "a spaceship galley"]
CHARACTERS = ["Ada, Ben", "Mira, Tom", "Lou, the Captain", "Nia, Oskar"]


@dataclass
class Case:
    command: str
    task: Task
    check: Callable[[str], bool]


def common_ok(task: Task, text: str) -> bool:
    """Non-empty, no template tokens, no echoed prompt, no line said three times."""
    if not text.strip() or re.search(r"<\|im_(start|end)\|>|<\|endoftext\|>", text):
        return False
    ask = task.prompt.messages[-1].content.strip()
    if ask and ask[:60] in text:
        return False
    lines = [line.strip().lower() for line in text.splitlines() if line.strip()]
    return all(lines.count(line) < 3 for line in set(lines))


def lines_exactly(n: int) -> Callable[[str], bool]:
    return lambda text: len(text.splitlines()) == n


def spells(word: str) -> Callable[[str], bool]:
    return lambda text: "".join(r[:1].upper() for r in text.splitlines()) == word


def ideas_exactly(n: int) -> Callable[[str], bool]:
    return lambda text: len(parse_ideas(text)) == n


def critique_ok(text: str) -> bool:
    return "**Strengths**" in text and "**Line notes**" in text and "> " in text


def scene_ok(names: list[str]) -> Callable[[str], bool]:
    return lambda text: text.startswith(("INT.", "EXT.")) and has_dialogue(text, names)


def battery(per_command: int) -> list[Case]:
    """The fixed prompts: `per_command` cases for each command and poem form."""
    s = load_settings()
    topics = TOPICS[:per_command]
    cases: list[Case] = []
    for form, lines in (("haiku", 3), ("tanka", 5), ("limerick", 5)):
        cases += [Case(f"poem:{form}", poem_task(s, t, form), lines_exactly(lines)) for t in topics]
    cases += [
        Case("poem:acrostic", poem_task(s, t, "acrostic"), spells(acrostic_word(t))) for t in topics
    ]
    cases += [
        Case("poem:free_verse", poem_task(s, t, "free_verse"), lambda t: t.count("\n") >= 2)
        for t in topics
    ]
    for i, topic in enumerate(topics):
        count = 3 + i % 5
        cases.append(
            Case("brainstorm", brainstorm_task(s, topic, count, "plots"), ideas_exactly(count))
        )
    for i in range(per_command):
        passage = PASSAGES[i % len(PASSAGES)]
        cases.append(
            Case("critique", critique_task(s, passage, "overall", "balanced"), critique_ok)
        )
    for i in range(per_command):
        names = CHARACTERS[i % len(CHARACTERS)]
        task = scene_task(s, SETTINGS[i % len(SETTINGS)], names, None)
        cases.append(Case("scene", task, scene_ok(character_cues(names))))
    cases += [
        Case(
            "chat",
            chat_task(s, f"Give me one tip for writing about {t}."),
            lambda text: len(text.split()) >= 5,
        )
        for t in topics
    ]
    return cases


async def run(
    per_command: int, only: str | None = None, show: bool = False
) -> dict[str, tuple[int, int]]:
    settings = load_settings()
    engine = await asyncio.to_thread(build_engine, settings)
    cases = [c for c in battery(per_command) if only is None or c.command.startswith(only)]
    scores: dict[str, tuple[int, int]] = {}

    async def edit(_: str) -> None:
        return None

    async with GenerationQueue(
        engine, max_queue=10_000, max_pending_per_user=10_000, timeout=600
    ) as queue:

        async def one(case: Case) -> tuple[str, bool]:
            handle = queue.submit(GenerationRequest(0, case.task.prompt, case.task.params))
            text, _result, _retried = await complete(queue, case.task, handle, 0, edit)
            return text, case.check(text) and common_ok(case.task, text)

        results = await asyncio.gather(*(one(c) for c in cases))
    for case, (text, ok) in zip(cases, results, strict=True):
        if show and not ok:
            print(f"--- {case.command} missed:\n{text}\n")
        good, total = scores.get(case.command, (0, 0))
        scores[case.command] = (good + ok, total + 1)
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.eval", description=__doc__)
    parser.add_argument("--per-command", type=int, default=10)
    parser.add_argument("--only", help="commands starting with this, e.g. poem:limerick")
    parser.add_argument("--show", action="store_true", help="print the outputs that missed")
    args = parser.parse_args(argv)
    started = time.monotonic()
    scores = asyncio.run(run(args.per_command, args.only, args.show))
    print(f"{'command':<18}{'ok':>6}{'share':>8}")
    for command, (good, total) in scores.items():
        print(f"{command:<18}{good:>3}/{total:<3}{good / total:>7.0%}")
    print(f"({time.monotonic() - started:.0f} s; target: 90% per command)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
