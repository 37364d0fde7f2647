"""Poems: `/poem`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.prompts import FORMS
from bot.services import Services
from bot.tasks import poem_task
from bot.ui.respond import NO_MENTIONS, answer_with_generation

if TYPE_CHECKING:
    from bot.app import LLMOSBot

TOPIC_LIMIT = 300


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
            interaction, self.services, poem_task(self.services.settings, topic, form)
        )


async def setup(bot: LLMOSBot) -> None:
    await bot.add_cog(Poetry(bot.services))
