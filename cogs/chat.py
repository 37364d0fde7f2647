"""Mentions and replies: routed by the channel's mode (story, brainstorm, critique, chat, off)."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.images.load import ImageRefused
from bot.preferences import ChannelPreferences
from bot.services import Services
from bot.ui.deliver import answer_in_channel
from bot.ui.images import art_critique, image_attachments
from bot.ui.replies import NO_MENTIONS
from bot.writing.lore import Worlds
from bot.writing.refine import replied_to
from bot.writing.run import Where
from bot.writing.tasks import brainstorm_task, chat_task, critique_task

if TYPE_CHECKING:
    from bot.app import LLMOSBot

log = logging.getLogger(__name__)


class Chat(commands.Cog):
    """Answers when someone mentions the bot or replies to it, as the channel's mode says."""

    def __init__(self, bot: commands.AutoShardedBot, services: Services, worlds: Worlds) -> None:
        self.bot = bot
        self.services = services
        self.worlds = worlds

    async def _replied_to(self, message: discord.Message) -> discord.Message | None:
        ref = message.reference
        if ref is None or ref.message_id is None:
            return None
        if isinstance(ref.resolved, discord.Message):
            return ref.resolved
        try:
            return await message.channel.fetch_message(ref.message_id)
        except discord.HTTPException:
            return None

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        me = self.bot.user
        if message.author.bot or message.guild is None or me is None:
            return
        replied = await self._replied_to(message)
        if replied is not None and await replied_to(self.services.store, replied.id) is not None:
            return  # a refinement instruction: the refine cog rewrites that output
        to_me = me in message.mentions or (replied is not None and replied.author.id == me.id)
        if not to_me:
            return
        if await self.services.stories.active(message.channel.id) is not None:
            return  # the story cog answers in story channels
        prefs = await self.services.preferences.for_channel(message.guild.id, message.channel.id)
        text = re.sub(rf"<@!?{me.id}>", "", message.content).strip()
        settings = self.services.settings
        earlier = None
        if replied is not None and replied.author.id == me.id:
            earlier = replied.embeds[0].description if replied.embeds else replied.content
        if prefs.mode == "off":
            return
        if prefs.mode == "story":
            await message.reply(
                "There's no story here yet. Begin one with /story start.",
                allowed_mentions=NO_MENTIONS,
            )
            return
        if prefs.mode == "critique":
            pictured = None
            if image_attachments(message):
                pictured = message
            elif replied is not None and replied.author.id != me.id and image_attachments(replied):
                pictured = replied
            if pictured is not None:
                await self._critique_image(pictured, message, prefs)
                return
        if not text and not (prefs.mode == "critique" and replied is not None):
            await message.reply("Yes? Tell me what you'd like.", allowed_mentions=NO_MENTIONS)
            return
        if prefs.mode == "brainstorm":
            lore = await self.worlds.for_channel(message.channel.id, text[:300])
            task = brainstorm_task(
                settings, text[:300], 5, "anything", prefs.sampling(), lore.world
            )
        elif prefs.mode == "critique":
            target = text
            if replied is not None and replied.author.id != me.id and replied.content.strip():
                target = replied.content
            task = critique_task(settings, target[:4000], "overall", "balanced", prefs.sampling())
        else:
            lore = await self.worlds.for_channel(message.channel.id, text)
            task = chat_task(
                settings, text, prefs.persona, earlier, prefs.sampling(160), lore.world
            )
        where = Where(message.author.id, message.channel.id, message.guild.id)
        await answer_in_channel(message.channel, self.services, task, where, reference=message)

    async def _critique_image(
        self, pictured: discord.Message, message: discord.Message, prefs: ChannelPreferences
    ) -> None:
        """Critique mode: the first image of `pictured` (the message, or the one it replies to)."""
        assert message.guild is not None
        try:
            task = await art_critique(
                self.services,
                image_attachments(pictured)[0],
                pictured,
                "overall",
                "balanced",
                prefs.sampling(),
            )
        except ImageRefused as refused:
            await message.reply(str(refused), allowed_mentions=NO_MENTIONS)
            return
        where = Where(message.author.id, message.channel.id, message.guild.id)
        await answer_in_channel(message.channel, self.services, task, where, reference=message)


async def setup(bot: LLMOSBot) -> None:
    await bot.add_cog(Chat(bot, bot.services, bot.writer.worlds))
