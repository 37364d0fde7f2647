"""Prompts: every task's wording lives here, in a chat form and a plain-text form.

User text is always delimited (quoted, on its own) and never mixed into the instructions, so a
topic such as "ignore the above" stays a topic.
"""

from __future__ import annotations

from bot.prompts.poems import FORMS, PoemForm, poem_prompt
from bot.prompts.post import clean_output, shape_poem

__all__ = ["FORMS", "PoemForm", "clean_output", "poem_prompt", "shape_poem"]
