"""Poems: `/poem`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.generation.types import SamplingParams
from bot.prompts import FORMS, clean_output, poem_prompt, shape_poem
from bot.services import Services
from bot.ui.respond import NO_MENTIONS, Task, answer_with_generation

if TYPE_CHECKING:
    from bot.app import LLMOSBot

TOPIC_LIMIT = 300


def poem_task(services: Services, topic: str, form: str) -> Task:
    """The generation task for a poem about `topic` in `form`."""
    spec = FORMS[form]
    prompt = poem_prompt(topic, form)

    def finish(text: str) -> str:
        poem, _fits = shape_poem(clean_output(text), spec.lines)
        return poem

    return Task(
        command="poem",
        title=f"{spec.label} · {' '.join(topic.split())[:200]}",
        prompt=prompt,
        # A little cooler than the default: a 135M model wanders off the form when hotter.
        params=SamplingParams(
            max_new_tokens=min(spec.max_new_tokens, services.settings.max_new_tokens),
            temperature=0.7,
            top_p=0.9,
            repetition_penalty=1.15,
        ),
        inputs={"topic": topic, "form": form},
        finish=finish,
    )


class Poetry(commands.Cog):
    """Poems on request."""

    def __init__(self, services: Services) -> None:
        self.services = services

    @app_commands.command(name="poem")
    @app_commands.describe(topic="What the poem is about", form="The poem's form")
    @app_commands.choices(
        form=[app_commands.Choice(name=f.label, value=f.key) for f in FORMS.values()]
    )
    async def poem(
        self, interaction: discord.Interaction, topic: str, form: str = "free_verse"
    ) -> None:
        """Write a poem about a topic, in the form you choose."""
        if not topic.strip():
            await interaction.response.send_message(
                "Please give the poem a topic.", ephemeral=True, allowed_mentions=NO_MENTIONS
            )
            return
        if len(topic) > TOPIC_LIMIT:
            await interaction.response.send_message(
                f"That topic is {len(topic)} characters long; please keep it under {TOPIC_LIMIT}.",
                ephemeral=True, allowed_mentions=NO_MENTIONS,
            )  # fmt: skip
            return
        if form not in FORMS:
            form = "free_verse"
        await answer_with_generation(
            interaction, self.services, poem_task(self.services, topic, form)
        )


async def setup(bot: LLMOSBot) -> None:
    await bot.add_cog(Poetry(bot.services))
