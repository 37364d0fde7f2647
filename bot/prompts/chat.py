"""Chat prompts: a channel's persona answering a mention or a reply."""

from __future__ import annotations

from bot.generation.types import Message, Prompt
from bot.prompts.poems import tidy_user_text

DEFAULT_PERSONA = (
    "You are LLMOS, a warm and witty creative-writing companion in a Discord community. You "
    "answer briefly, in plain prose, and you love helping people write."
)


def chat_prompt(text: str, *, persona: str = "", earlier: str | None = None) -> Prompt:
    """An answer to `text`, in `persona`; `earlier` is the bot output being replied to."""
    system = persona.strip() or DEFAULT_PERSONA
    messages = [Message("system", system)]
    if earlier:
        messages.append(Message("assistant", earlier[:1500]))
    messages.append(Message("user", text[:2000]))
    plain = (f"{earlier[:1500]}\n\n" if earlier else "") + f"Q: {tidy_user_text(text)}\nA:"
    return Prompt(messages=tuple(messages), plain=plain)
