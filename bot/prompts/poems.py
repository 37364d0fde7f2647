"""Poem prompts, one per form."""

from __future__ import annotations

from dataclasses import dataclass

from bot.generation.types import Message, Prompt

SYSTEM = (
    "You are LLMOS, a poet who writes with a community of writers. You answer with the poem "
    "only: no title, no explanation, no notes."
)


@dataclass(frozen=True, slots=True)
class PoemForm:
    key: str
    label: str
    instruction: str
    lines: int | None  # exact line count the form has, if it has one
    max_new_tokens: int


# One worked example per short form: a small model follows an example far better than a rule
# (measured on SmolLM2-135M: shorter lines, no commentary after the poem).
EXAMPLES: dict[str, tuple[str, str]] = {
    "haiku": (
        "cherry blossoms",
        "Pink petals drifting\nsoft on the still temple pond\nspring breathes, then is gone",
    ),
    "tanka": (
        "a letter",
        "Your ink has faded\nthe folds worn soft as linen\nI read it again\n"
        "slowly, the way you spoke it\nas if the page could still hear",
    ),
    "limerick": (
        "a cat",
        "A cat with a taste for the cream\nwould plot and would purr and would scheme;\n"
        "she tipped the jug over,\nthen rolled in the clover,\n"
        "and blamed the whole mess on a dream.",
    ),
    "acrostic": (
        "moon",
        "Midnight lifts its silver lamp\nOver the sleeping roofs\nOwls trace its quiet arc\n"
        "Night keeps it like a secret",
    ),
    "free_verse": (
        "morning",
        "The kettle hums before I do.\nLight leans on the window like an old friend\n"
        "who knows the way in,\nand the day, not yet spoiled,\n"
        "waits on the table with the bread.",
    ),
}


FORMS: dict[str, PoemForm] = {
    f.key: f
    for f in (
        PoemForm(
            "free_verse", "Free verse", "a short free-verse poem of six to ten lines", None, 160
        ),
        PoemForm("haiku", "Haiku", "a haiku: three short lines, about 5, 7 and 5 syllables", 3, 48),
        PoemForm(
            "tanka", "Tanka", "a tanka: five short lines, about 5, 7, 5, 7 and 7 syllables", 5, 72
        ),
        PoemForm(
            "limerick",
            "Limerick",
            "a limerick: five lines rhyming AABBA, with a bouncy rhythm and a funny turn",
            5,
            96,
        ),
        PoemForm("sonnet", "Sonnet", "a sonnet: fourteen lines in iambic pentameter", 14, 260),
        PoemForm(
            "acrostic",
            "Acrostic",
            "an acrostic poem: the first letters of the lines spell the topic word",
            None,
            160,
        ),
    )
}


def tidy_user_text(text: str, limit: int = 500) -> str:
    """One line of user text, without quotes that could end the delimiting early."""
    return " ".join(text.replace('"', "'").split())[:limit]


def acrostic_word(topic: str) -> str:
    """The word an acrostic about `topic` spells: its first real word (not an article), at
    most 12 letters."""
    words = ["".join(c for c in w if c.isalpha()) for w in topic.split()]
    words = [w for w in words if w]
    for word in words:
        if len(word) >= 3 and word.lower() not in _SKIP:
            return word[:12].upper()
    return (words[0][:12] if words else "POEM").upper()


_SKIP = {"the", "and", "our", "her", "his", "its", "their", "your", "for", "with", "from"}


def poem_prompt(topic: str, form: str, style: str | None = None, *, firm: bool = False) -> Prompt:
    """The prompt for a poem about `topic` in `form` (a key of `FORMS`).

    `firm` is the second try after a miss: the form's rule is spelled out once more.
    """
    spec = FORMS[form]
    topic = tidy_user_text(topic)
    instruction = spec.instruction
    prefix = ""
    if form == "acrostic":
        word = acrostic_word(topic)
        letters = ", ".join(word)
        instruction = f"an acrostic poem: {len(word)} lines starting with the letters {letters}"
        prefix = word[0]
    ask = f'Write {instruction}.\nTopic: "{topic}"'
    if firm and spec.lines:
        ask += f"\nExactly {spec.lines} lines, nothing else."
    if style:
        ask += f'\nStyle: "{tidy_user_text(style, 200)}"'
    plain_style = f", {tidy_user_text(style, 200)}" if style else ""
    plain = f'{spec.label} about "{topic}"{plain_style}\n\n'
    messages = [Message("system", SYSTEM)]
    if form in EXAMPLES:
        example_topic, example = EXAMPLES[form]
        messages += [
            Message(
                "user",
                f"Write {_example_instruction(form, example_topic, spec)}.\n"
                f'Topic: "{example_topic}"',
            ),
            Message("assistant", example),
        ]
        plain = f'{spec.label} about "{example_topic}"\n\n{example}\n\n' + plain
    messages.append(Message("user", ask))
    return Prompt(messages=tuple(messages), plain=plain, prefix=prefix)


def poem_line_prompt(
    topic: str, form: str, style: str | None, lines: list[str], letter: str = ""
) -> Prompt:
    """The prompt for the next line of a poem written line by line: the poem's prompt, with the
    lines so far (and the next line's forced first letter) as the start of the answer."""
    whole = poem_prompt(topic, form, style)
    prefix = "".join(f"{line}\n" for line in lines) + letter
    return Prompt(messages=whole.messages, plain=whole.plain, prefix=prefix)


def _example_instruction(form: str, topic: str, spec: PoemForm) -> str:
    if form == "acrostic":
        word = acrostic_word(topic)
        return f"an acrostic poem: {len(word)} lines starting with the letters {', '.join(word)}"
    return spec.instruction
