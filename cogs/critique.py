"""Critique: `/critique`, and "Critique this" on any message; `/scene` for scripts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.images.load import ImageRefused
from bot.prompts import art
from bot.prompts.critique import FOCUS, TONES
from bot.services import Services
from bot.ui.deliver import answer_with_generation
from bot.ui.images import art_critique, image_attachments, too_big
from bot.ui.replies import refuse, refuse_deferred, tell
from bot.writing.lore import Worlds
from bot.writing.tasks import critique_task, scene_task

if TYPE_CHECKING:
    from bot.app import LLMOSBot

TEXT_LIMIT = 4000


class Critique(commands.Cog):
    """Feedback on writing, and scenes for scripts."""

    def __init__(self, bot: commands.AutoShardedBot, services: Services, worlds: Worlds) -> None:
        self.bot = bot
        self.services = services
        self.worlds = worlds
        self.menu = app_commands.ContextMenu(name="Critique this", callback=self.critique_message)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    async def _critique(
        self, interaction: discord.Interaction, text: str, focus: str, tone: str
    ) -> None:
        if not text.strip():
            await refuse(interaction, "There's no text to critique.")
            return
        if len(text) > TEXT_LIMIT:
            await refuse(
                interaction,
                f"That's {len(text)} characters; I can critique up to {TEXT_LIMIT} at a time. "
                "Try a passage of it.",
            )
            return
        channel = await self.services.preferences.sampling_for(
            interaction.guild_id, interaction.channel_id
        )
        task = critique_task(self.services.settings, text, focus, tone, channel)
        await answer_with_generation(interaction, self.services, task)

    async def _critique_image(
        self,
        interaction: discord.Interaction,
        attachment: discord.Attachment,
        source: discord.Message | None,
        focus: str,
        tone: str,
    ) -> None:
        reason = too_big(attachment)
        if reason:
            await refuse(interaction, reason)
            return
        # downloading and measuring can take longer than the 3 s Discord allows an answer
        await interaction.response.defer(thinking=True)
        channel = await self.services.preferences.sampling_for(
            interaction.guild_id, interaction.channel_id
        )
        try:
            task = await art_critique(self.services, attachment, source, focus, tone, channel)
        except ImageRefused as refused:
            await refuse_deferred(interaction, str(refused))
            return
        await answer_with_generation(interaction, self.services, task)

    @app_commands.command(name="critique")
    @app_commands.describe(
        text="The writing to critique",
        image="A picture to critique (drawing, painting, photo)",
        focus="What to look at",
        tone="How",
    )
    @app_commands.choices(
        focus=[app_commands.Choice(name=f, value=f) for f in dict.fromkeys(FOCUS + art.FOCUS)],
        tone=[app_commands.Choice(name=t, value=t) for t in TONES],
    )
    async def critique(
        self,
        interaction: discord.Interaction,
        text: str | None = None,
        image: discord.Attachment | None = None,
        focus: str = "overall",
        tone: str = "balanced",
    ) -> None:
        """Get feedback on writing (strengths, suggestions, line notes) or on a picture."""
        tone = tone if tone in TONES else "balanced"
        if image is not None:
            if text and text.strip():
                await refuse(interaction, "One at a time, please: a text or an image, not both.")
                return
            focus = focus if focus in art.FOCUS else "overall"
            await self._critique_image(interaction, image, None, focus, tone)
            return
        await self._critique(interaction, text or "", focus if focus in FOCUS else "overall", tone)

    async def critique_message(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None:
        """Critique the writing or the picture in this message."""
        images = image_attachments(message)
        if images:
            await self._critique_image(interaction, images[0], message, "overall", "balanced")
            if len(images) > 1 or message.content.strip():
                await tell(
                    interaction,
                    "I looked at the first image. For another image, or the text, use /critique.",
                )
            return
        if not message.content.strip():
            if message.attachments:
                await refuse(
                    interaction,
                    "I critique writing and images; that message has neither. "
                    "Paste the words into /critique instead.",
                )
            else:
                await refuse(interaction, "There's no text in that message to critique.")
            return
        await self._critique(interaction, message.content, "overall", "balanced")

    @app_commands.command(name="scene")
    @app_commands.describe(
        setting="Where it happens",
        characters="Who is in it (comma-separated)",
        situation="What is going on (optional)",
    )
    async def scene(
        self,
        interaction: discord.Interaction,
        setting: str,
        characters: str,
        situation: str | None = None,
    ) -> None:
        """Write a short scene in screenplay form."""
        fields = [setting, characters, situation or ""]
        if not setting.strip() or not characters.strip():
            await refuse(interaction, "A scene needs a setting and at least one character.")
            return
        if any(len(f) > 300 for f in fields):
            await refuse(interaction, "Please keep each option under 300 characters.")
            return
        channel = await self.services.preferences.sampling_for(
            interaction.guild_id, interaction.channel_id
        )
        lore = await self.worlds.for_channel(
            interaction.channel_id or 0, f"{setting}\n{characters}\n{situation or ''}"
        )
        task = scene_task(
            self.services.settings, setting, characters, situation, channel, lore.world
        )
        await answer_with_generation(interaction, self.services, task)


async def setup(bot: LLMOSBot) -> None:
    await bot.add_cog(Critique(bot, bot.services, bot.writer.worlds))
