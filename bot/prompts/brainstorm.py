"""Brainstorm prompts: exactly N numbered ideas, and one idea expanded into a paragraph."""

from __future__ import annotations

import re

from bot.generation.types import Message, Prompt
from bot.prompts.poems import tidy_user_text

SYSTEM = (
    "You are LLMOS, a brainstorming partner for a community of writers. You answer with a "
    "numbered list only: one idea per line, no introduction, no closing remarks."
)

KINDS: dict[str, str] = {
    "plots": "story plots, one sentence each",
    "characters": "characters, each a name and a one-line sketch",
    "settings": "settings for a story, one vivid sentence each",
    "titles": "story titles",
    "twists": "plot twists, one sentence each",
    "anything": "ideas, one sentence each",
}

_EXAMPLE_TOPIC = "a haunted lighthouse"
_EXAMPLE = (
    "1. The keeper's ghost still lights the lamp, but only for ships that sank.\n"
    "2. A marine biologist rents the lighthouse and finds letters dated next year.\n"
    "3. Two sisters inherit the tower and disagree about what walks its stairs."
)
_ITEM = re.compile(r"^\s*(?:\d+\s*[.):-]|[-*•])\s*(.+?)\s*$")


def brainstorm_prompt(topic: str, count: int, kind: str) -> Prompt:
    """Ask for `count` ideas of `kind` (a key of `KINDS`) about `topic`; the answer starts "1."."""
    topic = tidy_user_text(topic)
    ask = f'List {count} {KINDS[kind]}.\nTopic: "{topic}"'
    messages = (
        Message("system", SYSTEM),
        Message("user", f'List 3 {KINDS["plots"]}.\nTopic: "{_EXAMPLE_TOPIC}"'),
        Message("assistant", _EXAMPLE),
        Message("user", ask),
    )
    plain = f"{count} {KINDS[kind]} about {topic}:\n"
    return Prompt(messages=messages, plain=plain, prefix="1.")


def item_prompt(topic: str, count: int, kind: str, have: list[str]) -> Prompt:
    """The prompt for the next item of a list written item by item: the list's prompt, with the
    items so far and the next number as the start of the answer."""
    whole = brainstorm_prompt(topic, count, kind)
    prefix = "".join(f"{i}. {idea}\n" for i, idea in enumerate(have, 1)) + f"{len(have) + 1}."
    return Prompt(messages=whole.messages, plain=whole.plain, prefix=prefix)


def parse_ideas(text: str) -> list[str]:
    """The distinct ideas in a numbered (or bulleted) list; an unnumbered first line counts."""
    ideas: list[str] = []
    seen: set[str] = set()
    for index, line in enumerate(text.splitlines()):
        match = _ITEM.match(line)
        idea = match.group(1) if match else (line.strip() if index == 0 else "")
        idea = idea.strip(" \"'")
        key = re.sub(r"\W+", " ", idea.lower()).strip()
        if len(key) < 3 or key in seen:
            continue
        seen.add(key)
        ideas.append(idea)
    return ideas


def number(ideas: list[str]) -> str:
    return "\n".join(f"{i}. {idea}" for i, idea in enumerate(ideas, 1))


def expand_prompt(topic: str, idea: str) -> Prompt:
    """Turn one idea into a paragraph."""
    ask = (
        f"Expand this idea into one paragraph of about 120 words for a story.\n"
        f'Topic: "{tidy_user_text(topic)}"\nIdea: "{tidy_user_text(idea, 400)}"'
    )
    system = "You are LLMOS, a writer's partner. You answer with the paragraph only."
    return Prompt(
        messages=(Message("system", system), Message("user", ask)),
        plain=f"{tidy_user_text(idea, 400)}\n\n",
    )
