"""Refinement prompts: rewrite an output longer, shorter, or as someone asks ("darker")."""

from __future__ import annotations

from bot.generation.types import Message, Prompt
from bot.prompts.poems import tidy_user_text

KINDS = ("longer", "shorter", "remix")
SYSTEM = (
    "You are a skilled creative-writing assistant. You rewrite a text as asked and answer with "
    "the rewritten text only: no title, no comments."
)
WHAT = {
    "poem": "poem",
    "brainstorm": "list of ideas",
    "expand": "paragraph",
    "critique": "critique",
    "scene": "scene",
    "story": "story passage",
    "chat": "answer",
    "recap": "summary",
}
HOW = {
    "longer": "make it about twice as long, with more vivid detail, in the same form and voice",
    "shorter": "make it about half as long, keeping only its strongest lines",
}


def refine_prompt(command: str, text: str, kind: str, instruction: str = "") -> Prompt:
    """Ask for `text` (an output of `command`) rewritten `kind` (or as `instruction` says)."""
    what = WHAT.get(command, "text")
    how = HOW.get(kind) or f"change it like this: {tidy_user_text(instruction)[:300]}"
    request = f"Rewrite this {what}: {how}.\n\n{text[:3000]}"
    plain = f"{text[:3000]}\n\nThe same {what}, rewritten ({how}):\n\n"
    return Prompt(messages=(Message("system", SYSTEM), Message("user", request)), plain=plain)
