"""Task builders by command name, so that stored work can be redone (regenerate, refine).

A generation stores its command and inputs; `build_task(command, inputs, settings)` rebuilds
the same task from them, with the same prompt, parameters and post-processing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from bot.config import Settings
from bot.generation.types import Prompt, SamplingParams
from bot.prompts import FORMS, clean_output, poem_prompt, shape_poem
from bot.prompts.brainstorm import (
    brainstorm_prompt,
    expand_prompt,
    more_prompt,
    number,
    parse_ideas,
)
from bot.prompts.chat import chat_prompt
from bot.prompts.critique import (
    character_cues,
    critique_prompt,
    critique_sections,
    grounded,
    grounded_notes,
    has_dialogue,
    line_note_prompt,
    one_sentence,
    quotable_lines,
    scene_prompt,
    without_line_notes,
)
from bot.prompts.poems import acrostic_line_prompt, acrostic_word
from bot.prompts.refine import KINDS as REFINE_KINDS
from bot.prompts.refine import refine_prompt
from bot.store import GenerationRecord
from bot.writing.run import Task


def poem_task(settings: Settings, topic: str, form: str, style: str | None = None) -> Task:
    """The task for a poem about `topic` in `form` (a key of `FORMS`), in an optional style."""
    spec = FORMS[form]
    word = acrostic_word(topic) if form == "acrostic" else ""
    lines = len(word) if word else spec.lines
    if word:
        return acrostic_task(settings, topic, word)

    def finish(text: str) -> str:
        poem, _fits = shape_poem(clean_output(text), lines)
        return poem

    def accept(poem: str) -> bool:
        rows = poem.splitlines()
        if word:
            return "".join(r.lstrip()[:1].upper() for r in rows) == word
        return bool(rows) and (lines is None or len(rows) == lines)

    return Task(
        command="poem",
        title=f"{spec.label} · {' '.join(topic.split())[:200]}",
        prompt=poem_prompt(topic, form, style),
        # A little cooler than the default: a 135M model wanders off the form when hotter.
        params=SamplingParams(
            max_new_tokens=min(spec.max_new_tokens, settings.max_new_tokens),
            temperature=0.7,
            top_p=0.9,
            repetition_penalty=1.15,
        ),
        inputs={"topic": topic, "form": form, "style": style},
        finish=finish,
        accept=accept,
        retry=lambda _first: poem_prompt(topic, form, style, firm=True),
    )


def acrostic_task(settings: Settings, topic: str, word: str) -> Task:
    """An acrostic, its lines written side by side, each from its own letter."""

    def first_line(text: str) -> str:
        rows = [r.strip() for r in clean_output(text).splitlines() if r.strip()]
        return rows[0] if rows else ""

    def join(texts: list[str]) -> str:
        return "\n".join(first_line(t) for t in texts)

    def accept(poem: str) -> bool:
        return "".join(r.lstrip()[:1].upper() for r in poem.splitlines()) == word

    prompts = [acrostic_line_prompt(topic, letter, word) for letter in word]
    return Task(
        command="poem",
        title=f"{FORMS['acrostic'].label} · {' '.join(topic.split())[:200]}",
        prompt=prompts[0],
        extra=tuple(prompts[1:]),
        join=join,
        params=SamplingParams(
            max_new_tokens=20, temperature=0.7, top_p=0.9, repetition_penalty=1.15
        ),
        inputs={"topic": topic, "form": "acrostic", "style": None},
        finish=lambda text: "\n".join(r for r in text.splitlines() if r.strip()),
        accept=accept,
    )


def brainstorm_task(settings: Settings, topic: str, count: int, kind: str) -> Task:
    """`count` numbered ideas of `kind` about `topic`, asking again for the missing ones; a
    list still short after that says so (`shortfall`)."""

    def finish(text: str) -> str:
        return number(parse_ideas(clean_output(text))[:count])

    def more(first: str) -> Prompt:
        have = parse_ideas(first)
        return more_prompt(topic, count - len(have), kind, have)

    def combine(first: str, second_raw: str) -> str:
        # parsed again as one list, so that repeats across the two answers count once
        both = number(parse_ideas(first) + parse_ideas(clean_output(second_raw)))
        return number(parse_ideas(both)[:count])

    return Task(
        command="brainstorm",
        title=f"{count} {kind} · {' '.join(topic.split())[:200]}",
        prompt=brainstorm_prompt(topic, count, kind),
        params=SamplingParams(
            # a small model writes long ideas; room for all of them beats a cut-off list
            max_new_tokens=min(52 * count + 24, max(settings.max_new_tokens * 3, 200)),
            temperature=0.8,
            top_p=0.95,
            repetition_penalty=1.15,
        ),
        inputs={"topic": topic, "count": count, "kind": kind},
        finish=finish,
        accept=lambda text: len(parse_ideas(text)) == count,
        retry=more,
        combine=combine,
        # A small model repeats itself; each try asks only for the ideas still missing.
        tries=3,
        shortfall=lambda text: shortfall(len(parse_ideas(text)), count),
    )


def shortfall(have: int, count: int) -> str | None:
    """Said under a list that came out short, instead of padding it."""
    if have >= count:
        return None
    return f"Only {have} of the {count} ideas came out distinct; 🔁 asks again."


def expand_task(settings: Settings, topic: str, idea: str, index: int) -> Task:
    """One brainstormed idea grown into a paragraph."""
    return Task(
        command="expand",
        title=f"Idea {index}, expanded",
        prompt=expand_prompt(topic, idea),
        params=SamplingParams(max_new_tokens=min(220, settings.max_new_tokens * 2)),
        inputs={"topic": topic, "idea": idea, "index": index},
        finish=clean_output,
    )


def critique_task(settings: Settings, text: str, focus: str, tone: str) -> Task:
    """Strengths and suggestions, then notes on lines the program picks and quotes from `text`.

    The model writes the notes, one prompt a line, side by side with the critique. What it
    writes is kept only when it holds up: a quotation that is not in the text drops its
    sentence, an empty or repeated note drops its line. Nothing is ever filled in for it.
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
            kept = [line for line in body.splitlines() if line.strip() and grounded(line, text)]
            if any(line.strip(" -•*") for line in kept):
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

    prompt = critique_prompt(text, focus, tone)
    return Task(
        command="critique",
        title=f"Critique · {focus} · {tone}",
        prompt=prompt,
        params=SamplingParams(
            max_new_tokens=min(260, settings.max_new_tokens * 2),
            temperature=0.6,
            top_p=0.9,
            repetition_penalty=1.15,
        ),
        inputs={"text": text, "focus": focus, "tone": tone},
        finish=finish,
        accept=accept,
        retry=lambda _first: prompt,
        combine=combine,
        extra=tuple(line_note_prompt(text, q, focus, tone) for q in quotes),
        join=join,
    )


def scene_task(settings: Settings, setting: str, characters: str, situation: str | None) -> Task:
    """A short scene in screenplay form."""
    cues = character_cues(characters)
    return Task(
        command="scene",
        title=f"Scene · {' '.join(setting.split())[:200]}",
        prompt=scene_prompt(setting, characters, situation),
        params=SamplingParams(
            max_new_tokens=min(300, settings.max_new_tokens * 2),
            temperature=0.75,
            top_p=0.92,
            repetition_penalty=1.15,
        ),
        inputs={"setting": setting, "characters": characters, "situation": situation},
        finish=clean_output,
        accept=lambda scene: has_dialogue(scene, cues),
        retry=lambda _first: scene_prompt(setting, characters, situation),
    )


def chat_task(
    settings: Settings,
    text: str,
    persona: str = "",
    earlier: str | None = None,
    params: SamplingParams | None = None,
) -> Task:
    """The channel's persona answering `text` (optionally in reply to its own `earlier` output)."""
    return Task(
        command="chat",
        title="LLMOS",
        prompt=chat_prompt(text, persona=persona, earlier=earlier),
        params=params or SamplingParams(max_new_tokens=min(160, settings.max_new_tokens)),
        inputs={"text": text, "persona": persona, "earlier": earlier},
        finish=clean_output,
    )


BUILDERS: dict[str, Callable[[Settings, dict[str, Any]], Task]] = {
    "poem": lambda settings, inputs: poem_task(
        settings, inputs["topic"], inputs["form"], inputs.get("style")
    ),
    "brainstorm": lambda settings, inputs: brainstorm_task(
        settings, inputs["topic"], int(inputs["count"]), inputs["kind"]
    ),
    "critique": lambda settings, inputs: critique_task(
        settings, inputs["text"], inputs["focus"], inputs["tone"]
    ),
    "scene": lambda settings, inputs: scene_task(
        settings, inputs["setting"], inputs["characters"], inputs.get("situation")
    ),
    "chat": lambda settings, inputs: chat_task(
        settings, inputs["text"], inputs.get("persona", ""), inputs.get("earlier")
    ),
    "expand": lambda settings, inputs: expand_task(
        settings, inputs["topic"], inputs["idea"], int(inputs["index"])
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
    inputs = stored.get("inputs")
    task = build_task(record.command, inputs, settings) if isinstance(inputs, dict) else None
    if task is not None:
        return task
    try:
        prompt = Prompt.from_dict(stored)
        params = SamplingParams.from_dict(record.params or {})
    except (KeyError, TypeError, ValueError):
        return None
    return Task(
        command=record.command,
        title=str(stored.get("title") or record.command.title()),
        prompt=prompt,
        params=params,
        inputs=inputs if isinstance(inputs, dict) else {},
        finish=clean_output,
    )
