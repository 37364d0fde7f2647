"""Poems: `/poem`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.prompts import FORMS, prosody
from bot.services import Services
from bot.ui.deliver import answer_with_generation
from bot.ui.replies import refuse
from bot.writing.tasks import poem_task

if TYPE_CHECKING:
    from bot.app import LLMOSBot

TOPIC_LIMIT = 300
STYLE_LIMIT = 200


class Poetry(commands.Cog):
    """Poems on request."""

    def __init__(self, bot: commands.AutoShardedBot, services: Services) -> None:
        self.bot = bot
        self.services = services
        self.menu = app_commands.ContextMenu(
            name="Write a poem about this", callback=self.poem_about_message
        )

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)
        # the pronouncing dictionary takes about a second to load: not on the event loop
        await asyncio.to_thread(prosody.warm)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(name="poem")
    @app_commands.describe(
        topic="What the poem is about",
        form="The poem's form",
        style='A style or mood, e.g. "in the manner of Romantic odes" or "playful"',
    )
    @app_commands.choices(
        form=[app_commands.Choice(name=f.label, value=f.key) for f in FORMS.values()]
    )
    async def poem(
        self,
        interaction: discord.Interaction,
        topic: str,
        form: str = "free_verse",
        style: str | None = None,
    ) -> None:
        """Write a poem in the form you choose, each line picked from several sampled drafts."""
        if not topic.strip():
            await refuse(interaction, "Please give the poem a topic.")
            return
        if len(topic) > TOPIC_LIMIT:
            await refuse(
                interaction,
                f"That topic is {len(topic)} characters long; please keep it under {TOPIC_LIMIT}.",
            )
            return
        if style is not None and len(style) > STYLE_LIMIT:
            await refuse(interaction, f"Please keep the style under {STYLE_LIMIT} characters.")
            return
        if form not in FORMS:
            form = "free_verse"
        channel = await self.services.preferences.sampling_for(
            interaction.guild_id, interaction.channel_id
        )
        style = (style or "").strip() or None
        task = poem_task(self.services.settings, topic, form, style, channel)
        await answer_with_generation(interaction, self.services, task)

    async def poem_about_message(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None:
        """Write a free-verse poem about what this message says."""
        text = " ".join(message.clean_content.split())
        if not text:
            await refuse(interaction, "That message has no words to write a poem about.")
            return
        channel = await self.services.preferences.sampling_for(
            interaction.guild_id, interaction.channel_id
        )
        task = poem_task(self.services.settings, text[:TOPIC_LIMIT], "free_verse", None, channel)
        await answer_with_generation(interaction, self.services, task)


async def setup(bot: LLMOSBot) -> None:
    await bot.add_cog(Poetry(bot, bot.services))
