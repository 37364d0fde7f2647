"""Does the lorebook keep a long story's facts straight? Measured, with and without it.

    python -m tools.lore_eval [--continuations 20] [--parts 300] [--show 2] [--json out.json]

A fixed 300-part story whose facts were set in its first parts and are long since folded
into the rolling summary: Mira Vance's grey eyes and the scar on her left hand, Captain Orrin
Hale, the ship Heron. Its lorebook holds the same facts. The same next parts are asked for
twice, through the bot's own story path (`StoryWriter.next_part`: window, summary, lore,
author's note) on the configured model: once with the lorebook, once with lore turned off
(`LORE_TOKENS=0`). Each continuation is checked by string tests a reader would agree with:
- contradicted: an eye colour other than grey in a sentence about Mira's (or her) eyes; a
  "Captain X" who is not Orrin or Hale; "Mira X" with another surname; a ship called by
  another name ("aboard the X", "the ship X"); a scar on her right hand;
- kept: the same facts stated rightly (grey eyes, Captain Orrin/Hale, Mira Vance, the
  Heron, the left hand).
A benchmark, not a test: it reports, it does not fail. The model samples, so the figures
move from run to run; compare the two conditions of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config import Settings, load_settings
from bot.generation.factory import build_engine
from bot.generation.queue import GenerationQueue
from bot.generation.types import GenerationRequest
from bot.lore.entries import LoreEntry, check
from bot.services import Services
from bot.store import Store
from bot.writing.run import Where, complete
from bot.writing.story import StoryWriter

LORE = [
    LoreEntry(
        name="Mira Vance",
        keys=("Mira", "Vance", "cartographer"),
        text="Mira Vance, the cartographer, has grey eyes and a pale scar across her left hand.",
        kind="character",
        voice="quiet, precise, a little dry",
    ),
    LoreEntry(
        name="Orrin Hale",
        keys=("captain", "Orrin", "Hale"),
        text="Captain Orrin Hale commands the ship Heron. He is old, loud and loyal.",
        kind="character",
    ),
    LoreEntry(
        name="The Heron",
        keys=("ship", "Heron", "deck", "crew"),
        text="The Heron is the crew's ship: a narrow three-master with a heron on its bow.",
    ),
    LoreEntry(
        name="Oskell",
        keys=("Oskell", "drowned city"),
        text="Oskell is the drowned city they seek; it sank in one night a century ago.",
    ),
]

# The first parts set the facts; everything after them is ordinary voyage.
OPENING = [
    "Mira Vance unrolled her first chart of the northern sea. Her grey eyes followed the coast.",
    "Captain Orrin Hale laughed from the wheel of the Heron and called for more sail.",
    "The scar across Mira's left hand ached in the cold, as it always did at sea.",
    "The Heron left port at dawn, bound for the drowned city of Oskell.",
]
VOYAGE = [
    "Day {n}: the wind held from the west and the crew mended nets on deck.",
    "Day {n}: Mira marked a reef on the chart and the captain swore at the fog.",
    "Day {n}: gulls followed the ship; someone sang below deck until midnight.",
    "Day {n}: the water turned green and cold, and Mira measured the depth twice.",
    "Day {n}: the captain rationed the water; the crew grumbled and went on.",
]
DIRECTIONS = [
    "Mira looks up from the chart; describe her eyes and her hands.",
    "The captain gives the crew an order; say who he is.",
    "Mira speaks to the captain by name about the ship.",
    "A stranger asks the crew the name of their ship and their captain.",
    "Mira introduces herself to a stranger with her full name.",
]

COLOURS = (
    "grey", "gray", "blue", "green", "brown", "hazel", "amber", "black", "golden", "violet",
    "red", "silver", "dark",
)  # fmt: skip
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
# Capitalised words that follow "Captain", "Mira" or "aboard the" without being a name.
NOT_NAMES = frozenset(
    {"The", "A", "An", "And", "But", "Or", "So", "Is", "Was", "Were", "Has", "Had", "He", "She",
     "Her", "His", "It", "They", "We", "I", "You", "Then", "Mira", "Captain", "Orrin", "Hale",
     "Vance", "Heron"}
)  # fmt: skip


@dataclass
class Verdict:
    kept: list[str] = field(default_factory=list)
    contradicted: list[str] = field(default_factory=list)


def judge(text: str) -> Verdict:
    """The facts a continuation states rightly, and those it contradicts."""
    verdict = Verdict()
    for sentence in _SENTENCE.findall(text):
        low = sentence.lower()
        if re.search(r"\beyes?\b", low) and re.search(r"\b(mira|her|she)\b", low):
            found = {c for c in COLOURS if re.search(rf"\b{c}\b", low)}
            wrong = found - {"grey", "gray"}
            if wrong:
                verdict.contradicted.append(f"eyes: {', '.join(sorted(wrong))}")
            elif found:
                verdict.kept.append("grey eyes")
        if "scar" in low and re.search(r"\b(mira|her|she)\b", low):
            if "right" in low:
                verdict.contradicted.append("scar: right hand")
            elif "left" in low:
                verdict.kept.append("scar: left hand")
    for name in re.findall(r"\bCaptain\s+([A-Z][a-z]+)", text):
        if name in ("Orrin", "Hale"):
            verdict.kept.append("Captain Orrin Hale")
        elif name not in NOT_NAMES:
            verdict.contradicted.append(f"Captain {name}")
    for name in re.findall(r"\bMira\s+([A-Z][a-z]+)", text):
        if name == "Vance":
            verdict.kept.append("Mira Vance")
        elif name not in NOT_NAMES:
            verdict.contradicted.append(f"Mira {name}")
    for name in re.findall(r"\b(?:aboard|ship|vessel|boat)\s+(?:the\s+)?([A-Z][a-z]+)", text):
        if name == "Heron":
            verdict.kept.append("the Heron")
        elif name not in NOT_NAMES:
            verdict.contradicted.append(f"ship {name}")
    if "Heron" in text and "the Heron" not in verdict.kept:
        verdict.kept.append("the Heron")
    return verdict


@dataclass
class Condition:
    name: str
    texts: list[str]
    verdicts: list[Verdict]
    lore_names: list[list[str]]

    def figures(self) -> dict[str, Any]:
        n = len(self.texts)
        return {
            "continuations": n,
            "with a contradiction": sum(1 for v in self.verdicts if v.contradicted),
            "contradictions": sum(len(v.contradicted) for v in self.verdicts),
            "facts kept": sum(len(v.kept) for v in self.verdicts),
            "with a fact kept": sum(1 for v in self.verdicts if v.kept),
            "entries in the prompt (mean)": statistics.fmean(len(x) for x in self.lore_names)
            if n
            else 0.0,
        }


async def measure(
    settings: Settings,
    *,
    continuations: int = 20,
    parts: int = 300,
    db_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> list[Condition]:
    """The same continuations with the lorebook and without it, on `settings`' model."""
    engine = await asyncio.to_thread(build_engine, settings)
    with tempfile.TemporaryDirectory() as scratch:
        folder = db_dir or Path(scratch)
        async with (
            Store.open(folder / "lore-eval.sqlite3") as store,
            GenerationQueue(
                engine, max_queue=10_000, max_pending_per_user=10_000, timeout=900
            ) as queue,
        ):
            services = Services.build(settings, store, queue)
            writer = StoryWriter(services)
            story = await services.stories.start(
                guild_id=1,
                channel_id=2,
                title="The Drowned Chart",
                premise="A cartographer and an old captain sail to find a drowned city",
                genre="fantasy",
                created_by=3,
            )
            texts = OPENING + [VOYAGE[i % len(VOYAGE)].format(n=i + 1) for i in range(parts)]
            for i, text in enumerate(texts[:parts]):
                await services.stories.add(
                    story.id, channel_id=2, author_id=3 + i % 4, text=text, source="user"
                )
            await services.lore.add_many(
                "story", story.id, [check(e) for e in LORE], guild_id=1, created_by=3, replace=False
            )
            log(f"{parts} parts; folding the older ones into the summary (the model writes it)…")
            # Once, before either condition, with the largest room the lore takes (one prompt
            # per direction, in turn): then no continuation folds again, and both conditions
            # read the same summary.
            for i, direction in enumerate(DIRECTIONS):
                await writer.next_part(story, Where(3, 2, 1), direction, "short")
                story = await services.stories.get(story.id) or story
                log(f"  summary up to part {story.summary_upto} ({i + 1}/{len(DIRECTIONS)})")
            folded = story.summary_upto

            async def nowhere(_: str) -> None:
                return None

            async def one(i: int) -> tuple[str, list[str]]:
                task = await writer.next_part(
                    story,
                    where=Where(3 + i, 2, 1),
                    direction=DIRECTIONS[i % len(DIRECTIONS)],
                    length="short",
                )
                handle = queue.submit(GenerationRequest(3 + i, task.prompt, task.params))
                text, _result, _retried = await complete(queue, task, handle, 3 + i, nowhere)
                return text, list(task.inputs.get("lore") or [])

            conditions = []
            for name, budget in (("with the lorebook", writer.worlds.budget), ("without", 0)):
                writer.worlds.budget = budget
                log(f"{continuations} continuations {name}…")
                done = await asyncio.gather(*(one(i) for i in range(continuations)))
                conditions.append(
                    Condition(
                        name,
                        [t for t, _ in done],
                        [judge(t) for t, _ in done],
                        [names for _, names in done],
                    )
                )
                now = await services.stories.get(story.id)
                if now is not None and now.summary_upto != folded:
                    log(f"  (the summary moved on to part {now.summary_upto} during the run)")
            return conditions


def report(conditions: list[Condition], show: int) -> dict[str, Any]:
    figures = {c.name: c.figures() for c in conditions}
    keys = list(next(iter(figures.values())))
    print(f"\n{'':<30}" + "".join(f"{c.name:>20}" for c in conditions))
    for key in keys:
        row = "".join(
            f"{figures[c.name][key]:>20.1f}"
            if isinstance(figures[c.name][key], float)
            else f"{figures[c.name][key]:>20}"
            for c in conditions
        )
        print(f"{key:<30}{row}")
    for condition in conditions:
        print(f"\n-- {condition.name}: contradictions")
        for verdict in condition.verdicts:
            for item in verdict.contradicted:
                print(f"   {item}")
        for text in condition.texts[:show]:
            print(f"\n   {text[:600]}")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--continuations", type=int, default=20)
    parser.add_argument("--parts", type=int, default=300)
    parser.add_argument("--show", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    conditions = asyncio.run(
        measure(load_settings(), continuations=args.continuations, parts=args.parts)
    )
    figures = report(conditions, args.show)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
