"""Brainstorm: `/brainstorm`, and a menu under the list to expand any idea into a paragraph."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.prompts.brainstorm import KINDS, parse_ideas
from bot.services import Services
from bot.tasks import brainstorm_task, expand_task
from bot.ui.respond import Written, answer_with_generation, refuse

if TYPE_CHECKING:
    from bot.app import LLMOSBot

TOPIC_LIMIT = 300


class ExpandIdea(
    discord.ui.DynamicItem[discord.ui.Select[Any]], template=r"brainstorm:expand:(?P<gid>\d+)"
):
    """The "expand an idea" menu. Its custom_id carries the list's generation id, so it keeps
    working after a restart."""

    def __init__(self, generation_id: int, count: int) -> None:
        options = [discord.SelectOption(label=f"Expand idea {i}", value=str(i))
                   for i in range(1, count + 1)]  # fmt: skip
        super().__init__(
            discord.ui.Select(
                custom_id=f"brainstorm:expand:{generation_id}",
                placeholder="Expand an idea into a paragraph…",
                options=options,
            )
        )
        self.generation_id = generation_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ExpandIdea:
        count = len(getattr(item, "options", [])) or 1
        return cls(int(match["gid"]), count)

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog("Brainstorm")  # type: ignore[attr-defined]
        assert isinstance(cog, Brainstorm)
        await cog.expand(interaction, self.generation_id, int(self.item.values[0]))


class Brainstorm(commands.Cog):
    """Ideas on demand."""

    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(ExpandIdea)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(ExpandIdea)

    @app_commands.command(name="brainstorm")
    @app_commands.describe(
        topic="What to brainstorm about", count="How many ideas (3 to 10)", kind="What kind"
    )
    @app_commands.choices(kind=[app_commands.Choice(name=k, value=k) for k in KINDS])
    async def brainstorm(
        self, interaction: discord.Interaction, topic: str,
        count: app_commands.Range[int, 3, 10] = 5, kind: str = "anything",
    ) -> None:  # fmt: skip
        """Brainstorm a numbered list of ideas; pick one to expand it."""
        if not topic.strip() or len(topic) > TOPIC_LIMIT:
            await refuse(interaction, f"Please give a topic of 1 to {TOPIC_LIMIT} characters.")
            return
        count = max(3, min(10, count))
        kind = kind if kind in KINDS else "anything"
        task = brainstorm_task(self.services.settings, topic, count, kind)

        def controls(written: Written) -> discord.ui.View:
            view = discord.ui.View(timeout=None)
            view.add_item(ExpandIdea(written.generation_id, len(parse_ideas(written.text))))
            return view

        await answer_with_generation(interaction, self.services, task, controls=controls)

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
        task = expand_task(self.services.settings, topic, ideas[index - 1], index)
        await answer_with_generation(
            interaction, self.services, task, refines_id=source.id, refine_kind="expand"
        )


async def setup(bot: LLMOSBot) -> None:
    await bot.add_cog(Brainstorm(bot, bot.services))
