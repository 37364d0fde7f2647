"""Task builders by command name, so that stored work can be redone (regenerate, refine).

A generation stores its command and inputs; `build_task(command, inputs, settings)` rebuilds
the same task from them, with the same prompt, parameters and post-processing.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from bot.config import Settings
from bot.generation.types import Prompt, SamplingParams
from bot.images.measure import ImageFacts
from bot.lore.select import NO_WORLD, World
from bot.prompts import FORMS, art, clean_output, prosody
from bot.prompts.brainstorm import expand_prompt, item_prompt, number, parse_ideas
from bot.prompts.chat import chat_prompt
from bot.prompts.critique import (
    LINE_NOTES_STOP,
    bullets,
    character_cues,
    critique_prompt,
    critique_sections,
    grounded,
    grounded_notes,
    has_dialogue,
    line_note_prompt,
    one_sentence,
    only_named,
    quotable_lines,
    scene_prompt,
    without_line_notes,
)
from bot.prompts.poems import acrostic_word, poem_line_prompt
from bot.prompts.refine import KINDS as REFINE_KINDS
from bot.prompts.refine import refine_prompt
from bot.prompts.story import with_lore
from bot.store import GenerationRecord
from bot.writing.compose import Slot, line_params, slots_for, write_list, write_poem
from bot.writing.run import Drafts, Task


def with_channel(
    own: SamplingParams, channel: SamplingParams | None, *, candidates: bool = False
) -> SamplingParams:
    """A command's own parameters (its length, stop, probes) decoded the channel's way: its
    method, temperature, top-p, repetition penalty and beams. A command that chooses among
    candidates keeps sampling: greedy or beam candidates would all be the same text."""
    if channel is None:
        return own
    return replace(
        own,
        method="sampling" if candidates else channel.method,
        temperature=channel.temperature,
        top_p=channel.top_p,
        repetition_penalty=channel.repetition_penalty,
        num_beams=channel.num_beams,
    )


def _channel_inputs(channel: SamplingParams | None) -> dict[str, Any]:
    """How a task stores the channel's decoding, so that 🔁 decodes the same way."""
    return {"channel": channel.to_dict()} if channel is not None else {}


def poem_task(
    settings: Settings,
    topic: str,
    form: str,
    style: str | None = None,
    channel: SamplingParams | None = None,
) -> Task:
    """A poem about `topic` in `form` (a key of `FORMS`), written line by line: each line chosen
    from candidates by its syllables, its rhyme, the model's fluency and the topic (see
    `bot.writing.compose`). A poem that still misses its form says how (`shortfall`)."""
    word = acrostic_word(topic) if form == "acrostic" else ""
    slots = slots_for(form, word)

    def prompt_for(lines: list[str], letter: str) -> Prompt:
        return poem_line_prompt(topic, form, style, lines, letter)

    def params_for(slot: Slot, pool: Sequence[str]) -> SamplingParams:
        return with_channel(line_params(slot, pool), channel, candidates=True)

    async def compose(drafts: Drafts) -> str:
        return await write_poem(
            drafts.draw, drafts.show, prompt_for, slots, topic, params_for, rank=drafts.rank
        )

    def shortfall(poem: str) -> str | None:
        misses = prosody.check(poem, form, word=word).misses
        return f"Off the form: {'; '.join(misses)}." if misses else None

    return Task(
        command="poem",
        title=f"{FORMS[form].label} · {' '.join(topic.split())[:200]}",
        prompt=prompt_for([], slots[0].letter),
        params=params_for(slots[0], []),
        inputs={"topic": topic, "form": form, "style": style, **_channel_inputs(channel)},
        finish=lambda poem: poem.strip(),
        compose=compose,
        shortfall=shortfall,
    )


def brainstorm_task(
    settings: Settings,
    topic: str,
    count: int,
    kind: str,
    channel: SamplingParams | None = None,
    world: World = NO_WORLD,
) -> Task:
    """`count` numbered ideas of `kind` about `topic`, written item by item: the numbering is
    the program's, each item ends at its line, and repeats and rambles give way to another
    candidate. A list still short after every round says so (`shortfall`)."""
    own = SamplingParams(
        max_new_tokens=64,
        temperature=0.85,
        top_p=0.95,
        repetition_penalty=1.15,
        stop=("\n",),
        logprobs=True,
    )
    params = with_channel(own, channel, candidates=True)

    def prompt_for(have: list[str]) -> Prompt:
        return with_lore(item_prompt(topic, count, kind, have), world.text)

    async def compose(drafts: Drafts) -> str:
        items = await write_list(
            drafts.draw, drafts.show, prompt_for, params, count, topic, rank=drafts.rank
        )
        return number(items)

    return Task(
        command="brainstorm",
        title=f"{count} {kind} · {' '.join(topic.split())[:200]}",
        prompt=prompt_for([]),
        params=params,
        inputs={
            "topic": topic,
            "count": count,
            "kind": kind,
            **_channel_inputs(channel),
            **world.inputs(),
        },
        finish=lambda text: number(parse_ideas(text)[:count]),
        compose=compose,
        shortfall=lambda text: shortfall(len(parse_ideas(text)), count),
    )


def shortfall(have: int, count: int) -> str | None:
    """Said under a list that came out short, instead of padding it."""
    if have >= count:
        return None
    return f"Only {have} of the {count} ideas came out distinct; 🔁 asks again."


def expand_task(
    settings: Settings, topic: str, idea: str, index: int, channel: SamplingParams | None = None
) -> Task:
    """One brainstormed idea grown into a paragraph."""
    return Task(
        command="expand",
        title=f"Idea {index}, expanded",
        prompt=expand_prompt(topic, idea),
        params=with_channel(
            SamplingParams(max_new_tokens=min(220, settings.max_new_tokens * 2)), channel
        ),
        inputs={"topic": topic, "idea": idea, "index": index, **_channel_inputs(channel)},
        finish=clean_output,
    )


def critique_task(
    settings: Settings, text: str, focus: str, tone: str, channel: SamplingParams | None = None
) -> Task:
    """Strengths and suggestions, then notes on lines the program picks and quotes from `text`.

    The model writes the notes, one prompt a line, side by side with the critique. What it
    writes is kept only when it holds up: a quotation that is not in the text drops its
    point, an empty or repeated note drops its line, and what runs on past the bullet points
    (three a part at most) is left out. Nothing is ever filled in for it.
    """
    quotes = quotable_lines(text)

    def join(texts: list[str]) -> str:
        noted = zip(quotes, texts[1:], strict=True)
        notes = [f"> {q}\n{one_sentence(clean_output(n))}" for q, n in noted]
        return f"{without_line_notes(texts[0])}\n\nLine notes:\n" + "\n".join(notes)

    def finish(answer: str) -> str:
        sections = critique_sections(clean_output(answer))
        notes = grounded_notes(sections.pop("Line Notes", ""), text)
        parts = []
        for name, body in sections.items():
            kept = [point for point in bullets(body) if grounded(point, text)]
            if kept:
                parts.append(f"**{name}**\n" + "\n".join(kept))
        if notes:
            parts.append("**Line notes**\n" + "\n".join(f"> {q}\n{n}" for q, n in notes))
        return "\n\n".join(parts)

    def combine(first: str, again_raw: str) -> str:
        # A retry asks for the critique again; the line notes already written stay.
        _, _, notes = first.partition("**Line notes**")
        again = finish(f"{without_line_notes(again_raw)}\n\nLine notes:{notes}")
        return again if accept(again) else first

    def accept(answer: str) -> bool:
        return "**Suggestions**" in answer

    def retry(shown: str) -> Prompt:
        # A small model can spend its answer on strengths. The retry starts its answer with
        # the strengths already kept and the Suggestions heading: the part is there by
        # construction, and the model only writes its points.
        kept = re.search(r"\*\*Strengths\*\*\n(.*?)(?:\n\n|$)", shown, flags=re.S)
        strengths = f"Strengths:\n{kept.group(1)}\n\n" if kept else ""
        return replace(prompt, prefix=f"{strengths}Suggestions:\n-")

    prompt = critique_prompt(text, focus, tone)
    own = with_channel(
        SamplingParams(
            max_new_tokens=min(180, settings.max_new_tokens * 2),
            temperature=0.6,
            top_p=0.9,
            repetition_penalty=1.15,
            # the program writes the line notes: what the model would write there is unused
            stop=LINE_NOTES_STOP,
        ),
        channel,
    )
    return Task(
        command="critique",
        title=f"Critique · {focus} · {tone}",
        prompt=prompt,
        params=own,
        # a line note is one sentence on one line
        extra_params=replace(own, max_new_tokens=64, stop=("\n",)),
        inputs={"text": text, "focus": focus, "tone": tone, **_channel_inputs(channel)},
        finish=finish,
        accept=accept,
        retry=retry,
        combine=combine,
        extra=tuple(line_note_prompt(text, q, focus, tone) for q in quotes),
        join=join,
    )


def art_task(
    settings: Settings,
    facts: ImageFacts,
    image: dict[str, Any],
    focus: str,
    tone: str,
    channel: SamplingParams | None = None,
    *,
    picture: bytes | None = None,
    seen: bytes | None = None,
) -> Task:
    """A critique of a posted image: the program's measurements, then advice the model writes.

    Without a vision model, one note per measured topic of the focus, each drawn four times
    side by side from that topic's measurements; the first that speaks of its topic and holds
    up against them (`art.on_topic`, `art.supported`) is kept, and a topic none of whose notes
    do is left out and said to be. With `seen` (the image's bytes, for the vision lane) a
    vision model writes Strengths and Suggestions seeing the picture; points that contradict
    the measurements (as far as `art.supported` reads them) are dropped.
    `image`: what is stored of the image (hash, size, source message), never its bytes.
    """
    lines = art.measured_lines(facts)
    topics = art.TOPICS[focus]
    measured = "**Measured** (from the pixels)\n" + "\n".join(
        f"• {t.title()}: {lines[t]}" for t in topics
    )
    note_params = with_channel(
        SamplingParams(max_new_tokens=48, temperature=0.8, top_p=0.92, stop=("\n",)),
        channel,
        candidates=True,
    )
    inputs = {
        "image": image,
        "facts": facts.to_dict(),
        "focus": focus,
        "tone": tone,
        **_channel_inputs(channel),
    }
    unmeasured = (
        f"{focus.capitalize()} can't be measured from pixels; these notes stand on the nearest "
        "measurements."
        if focus in art.UNMEASURED and seen is None
        else None
    )

    async def notes(drafts: Drafts) -> str:
        # every topic's candidates side by side; a failure fails the whole critique (like a
        # poem's line), and the other topics' requests are cancelled with it
        draws = [
            asyncio.ensure_future(
                drafts.draw(art.note_prompt(facts, topic, focus, tone), note_params, 4)
            )
            for topic in topics
        ]
        try:
            drawn = await asyncio.gather(*draws)
        except BaseException:
            for draw in draws:
                draw.cancel()
            raise
        kept = []
        for topic, results in zip(topics, drawn, strict=True):
            for result in results:
                note = art.one_note(result.text)
                if note and art.on_topic(note, topic) and art.supported(note, facts):
                    kept.append(f"- **{topic.title()}**: {note}")
                    break
        shown = measured + ("\n\n**Notes**\n" + "\n".join(kept) if kept else "")
        return shown

    async def critique(drafts: Drafts) -> str:
        results = await drafts.draw(prompt, vision_params, 2)
        best: list[str] = []
        for result in results:
            sections = critique_sections(clean_output(result.text))
            parts = []
            for name in ("Strengths", "Suggestions"):
                points = bullets(sections.get(name, ""))
                kept = [p for p in points if art.supported(p, facts, sees_picture=True)]
                if kept:
                    parts.append(f"**{name}**\n" + "\n".join(kept))
            if sum(len(p) for p in parts) > sum(len(p) for p in best):
                best = parts
        return "\n\n".join([measured, *best])

    def shortfall(text: str) -> str | None:
        said = [unmeasured] if unmeasured else []
        if seen is None:
            written = text.count("\n- **")
            if written < len(topics):
                said.append(
                    f"{written} of {len(topics)} notes held up against the measurements; "
                    "🔁 asks again."
                )
            said.append("An admin can set VISION_MODEL for notes on what the picture shows.")
        elif "**Suggestions**" not in text and "**Strengths**" not in text:
            said.append(
                "The vision model's points didn't hold up against the measurements; 🔁 asks again."
            )
        return " ".join(said) or None

    vision_params = with_channel(
        SamplingParams(max_new_tokens=160, temperature=0.7, top_p=0.9, repetition_penalty=1.15),
        channel,
        candidates=True,
    )
    if seen is not None:
        prompt, params = art.vision_prompt(facts, focus, tone, seen), vision_params
        compose = critique
    else:
        prompt, params = art.note_prompt(facts, topics[0], focus, tone), note_params
        compose = notes
    return Task(
        command="art",
        title=f"Art critique · {focus} · {tone}",
        prompt=prompt,
        params=params,
        inputs=inputs | {"vision": seen is not None},
        finish=str.strip,
        shortfall=shortfall,
        compose=compose,
        vision=seen is not None,
        picture=picture,
    )


def scene_task(
    settings: Settings,
    setting: str,
    characters: str,
    situation: str | None,
    channel: SamplingParams | None = None,
    world: World = NO_WORLD,
) -> Task:
    """A short scene in screenplay form (with the world's lore on its characters and place)."""
    cues = character_cues(characters)
    return Task(
        command="scene",
        title=f"Scene · {' '.join(setting.split())[:200]}",
        prompt=with_lore(scene_prompt(setting, characters, situation), world.text),
        params=with_channel(
            SamplingParams(
                max_new_tokens=min(300, settings.max_new_tokens * 2),
                temperature=0.75,
                top_p=0.92,
                repetition_penalty=1.15,
            ),
            channel,
        ),
        inputs={
            "setting": setting,
            "characters": characters,
            "situation": situation,
            **_channel_inputs(channel),
            **world.inputs(),
        },
        # only the characters asked for speak: a speech by anyone else is left out
        finish=lambda text: only_named(clean_output(text), cues),
        accept=lambda scene: has_dialogue(scene, cues),
        retry=lambda _first: scene_prompt(setting, characters, situation),
    )


def chat_task(
    settings: Settings,
    text: str,
    persona: str = "",
    earlier: str | None = None,
    params: SamplingParams | None = None,
    world: World = NO_WORLD,
) -> Task:
    """The channel's persona answering `text` (optionally in reply to its own `earlier` output)."""
    return Task(
        command="chat",
        title="LLMOS",
        prompt=with_lore(chat_prompt(text, persona=persona, earlier=earlier), world.text),
        params=params or SamplingParams(max_new_tokens=min(160, settings.max_new_tokens)),
        inputs={"text": text, "persona": persona, "earlier": earlier, **world.inputs()},
        finish=clean_output,
    )


def _channel(inputs: dict[str, Any]) -> SamplingParams | None:
    stored = inputs.get("channel")
    return SamplingParams.from_dict(stored) if isinstance(stored, dict) else None


BUILDERS: dict[str, Callable[[Settings, dict[str, Any]], Task]] = {
    "poem": lambda settings, inputs: poem_task(
        settings, inputs["topic"], inputs["form"], inputs.get("style"), _channel(inputs)
    ),
    "brainstorm": lambda settings, inputs: brainstorm_task(
        settings,
        inputs["topic"],
        int(inputs["count"]),
        inputs["kind"],
        _channel(inputs),
        World.from_inputs(inputs),
    ),
    "critique": lambda settings, inputs: critique_task(
        settings, inputs["text"], inputs["focus"], inputs["tone"], _channel(inputs)
    ),
    "art": lambda settings, inputs: art_task(
        settings,
        ImageFacts.from_dict(inputs["facts"]),
        dict(inputs["image"]),
        inputs["focus"],
        inputs["tone"],
        _channel(inputs),
    ),
    "scene": lambda settings, inputs: scene_task(
        settings,
        inputs["setting"],
        inputs["characters"],
        inputs.get("situation"),
        _channel(inputs),
        World.from_inputs(inputs),
    ),
    "chat": lambda settings, inputs: chat_task(
        settings,
        inputs["text"],
        inputs.get("persona", ""),
        inputs.get("earlier"),
        world=World.from_inputs(inputs),
    ),
    "expand": lambda settings, inputs: expand_task(
        settings, inputs["topic"], inputs["idea"], int(inputs["index"]), _channel(inputs)
    ),
}


def build_task(command: str, inputs: dict[str, Any], settings: Settings) -> Task | None:
    """The task that `command` runs for `inputs`, or None when it cannot be rebuilt."""
    builder = BUILDERS.get(command)
    try:
        if "refine" in inputs:
            return refine_task(
                settings,
                command,
                inputs["source"],
                inputs["refine"],
                inputs.get("instruction") or "",
                inputs.get("title") or command.title(),
            )
        return builder(settings, inputs) if builder is not None else None
    except (KeyError, TypeError, ValueError):  # inputs stored by an older version, or damaged
        return None


def refine_task(
    settings: Settings, command: str, source: str, kind: str, instruction: str, title: str
) -> Task:
    """`source` (an output of `command`) rewritten longer, shorter, or as `instruction` says.

    A small model often ignores "longer" or "shorter", so the answer is checked: one more try,
    then a too-long "shorter" keeps its first half.
    """
    if kind not in REFINE_KINDS:
        raise ValueError(kind)
    size = len(source)
    grow = {"longer": 2.2, "shorter": 0.7}.get(kind, 1.4)
    budget = max(48, min(int(size * grow / 3) + 32, settings.max_new_tokens * 3, 900))

    def fits(text: str) -> bool:
        if kind == "longer":
            return len(text) > size * 1.2
        if kind == "shorter":
            return 0 < len(text) < size * 0.85
        return bool(text) and text.strip() != source.strip()

    def combine(first: str, second_raw: str) -> str:
        second = clean_output(second_raw)
        best = second if fits(second) else first
        if kind == "shorter" and not fits(best):
            best = halve(source)
        return best

    label = {"longer": "longer", "shorter": "shorter"}.get(kind, f"remix: {instruction[:60]}")
    prompt = refine_prompt(command, source, kind, instruction)
    return Task(
        command=command,
        title=f"{title[:200]} · {label}",
        prompt=prompt,
        params=SamplingParams(
            max_new_tokens=budget, temperature=0.8, top_p=0.92, repetition_penalty=1.15
        ),
        inputs={"refine": kind, "source": source, "instruction": instruction, "title": title},
        finish=clean_output,
        accept=fits,
        retry=lambda _first: prompt,
        combine=combine,
    )


def halve(text: str) -> str:
    """The first half of a text, by lines, or by sentences for a single paragraph."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) >= 2:
        return "\n".join(lines[: (len(lines) + 1) // 2])
    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    return " ".join(sentences[: max(1, len(sentences) // 2)])


def stored_task(record: GenerationRecord, settings: Settings) -> Task | None:
    """The task that wrote `record` again: rebuilt from its inputs when its command can be,
    else its stored prompt and parameters re-run (a story turn, a recap)."""
    stored = record.prompt if isinstance(record.prompt, dict) else {}
    return task_again(record.command, stored, record.params or {}, settings)


def snapshot(task: Task) -> dict[str, Any]:
    """What `task_again` rebuilds `task` from, as JSON (a generation's prompt, with params)."""
    return {
        "inputs": task.inputs,
        **task.prompt.to_dict(),
        "title": task.title,
        "params": task.params.to_dict(),
    }


def task_again(
    command: str, stored: dict[str, Any], params: dict[str, Any], settings: Settings
) -> Task | None:
    """A task rebuilt from what was stored of it (`snapshot`, or a generation's prompt and
    params): from its inputs when `command` can be rebuilt, else its prompt re-run as it was.
    None when neither can be read (stored by an older version, or damaged)."""
    inputs = stored.get("inputs")
    task = build_task(command, inputs, settings) if isinstance(inputs, dict) else None
    if task is not None:
        return task
    try:
        prompt = Prompt.from_dict(stored)
        sampling = SamplingParams.from_dict(params)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return Task(
        command=command,
        title=str(stored.get("title") or command.title()),
        prompt=prompt,
        params=sampling,
        inputs=inputs if isinstance(inputs, dict) else {},
        finish=clean_output,
    )
