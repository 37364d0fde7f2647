"""Brainstorm: `/brainstorm`, and a menu under the list to expand any idea into a paragraph."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.prompts.brainstorm import KINDS, parse_ideas
from bot.services import Services
from bot.ui.controls import handle_expand_menu
from bot.ui.deliver import answer_with_generation
from bot.ui.replies import refuse
from bot.writing.lore import Worlds
from bot.writing.tasks import brainstorm_task, expand_task

if TYPE_CHECKING:
    from bot.app import LLMOSBot

TOPIC_LIMIT = 300


class Brainstorm(commands.Cog):
    """Ideas on demand."""

    def __init__(self, bot: commands.AutoShardedBot, services: Services, worlds: Worlds) -> None:
        self.bot = bot
        self.services = services
        self.worlds = worlds

    async def cog_load(self) -> None:
        handle_expand_menu(self.bot, self)

    async def cog_unload(self) -> None:
        handle_expand_menu(self.bot, None)

    @app_commands.command(name="brainstorm")
    @app_commands.describe(
        topic="What to brainstorm about", count="How many ideas (3 to 10)", kind="What kind"
    )
    @app_commands.choices(kind=[app_commands.Choice(name=k, value=k) for k in KINDS])
    async def brainstorm(
        self,
        interaction: discord.Interaction,
        topic: str,
        count: app_commands.Range[int, 3, 10] = 5,
        kind: str = "anything",
    ) -> None:
        """Brainstorm exactly N ideas, each picked from several sampled drafts; expand any one."""
        if not topic.strip() or len(topic) > TOPIC_LIMIT:
            await refuse(interaction, f"Please give a topic of 1 to {TOPIC_LIMIT} characters.")
            return
        count = max(3, min(10, count))
        kind = kind if kind in KINDS else "anything"
        channel = await self.services.preferences.sampling_for(
            interaction.guild_id, interaction.channel_id
        )
        lore = await self.worlds.for_channel(interaction.channel_id or 0, topic)
        task = brainstorm_task(self.services.settings, topic, count, kind, channel, lore.world)
        await answer_with_generation(interaction, self.services, task)

    async def expand(
        self, interaction: discord.Interaction, generation_id: int, index: int
    ) -> None:
        """Anyone can expand idea `index` of the list saved as `generation_id`."""
        source = await self.services.store.get_generation(generation_id)
        ideas = parse_ideas(source.output) if source else []
        if source is None or not 1 <= index <= len(ideas):
            await refuse(interaction, "I can't find that idea any more.")
            return
        topic = str((source.prompt or {}).get("inputs", {}).get("topic", ""))
        channel = await self.services.preferences.sampling_for(
            interaction.guild_id, interaction.channel_id
        )
        task = expand_task(self.services.settings, topic, ideas[index - 1], index, channel)
        await answer_with_generation(
            interaction, self.services, task, refines_id=source.id, refine_kind="expand"
        )


async def setup(bot: LLMOSBot) -> None:
    await bot.add_cog(Brainstorm(bot, bot.services, bot.writer.worlds))
