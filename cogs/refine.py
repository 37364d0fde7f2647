"""Refining outputs by reacting: 🔁 on any of the bot's outputs regenerates it in place.

Raw reaction events are used, so outputs from before a restart (not in discord.py's message
cache) work too. Every regeneration is saved as a new alternative linked to the one it redoes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.generation.types import GenerationRequest, QueueRefused
from bot.services import Services
from bot.tasks import build_task
from bot.ui.respond import NO_MENTIONS, Where, write

if TYPE_CHECKING:
    from bot.app import LLMOSBot

log = logging.getLogger(__name__)

REGENERATE = "🔁"


class Refine(commands.Cog):
    """Reactions that refine the bot's outputs."""

    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, event: discord.RawReactionActionEvent) -> None:
        if event.user_id == getattr(self.bot.user, "id", None) or str(event.emoji) != REGENERATE:
            return
        output = await self.services.store.get_output_by_message(event.message_id)
        if output is None or output.chosen_id is None:
            return  # not one of our outputs
        chosen = await self.services.store.get_generation(output.chosen_id)
        task = None
        if chosen is not None:
            inputs = (chosen.prompt or {}).get("inputs", {})
            task = build_task(chosen.command, inputs, self.services.settings)
        if chosen is None or task is None:
            log.info("output %s cannot be regenerated", output.id)
            return
        request = GenerationRequest(user_id=event.user_id, prompt=task.prompt, params=task.params)
        try:
            handle = self.services.queue.submit(request)
        except QueueRefused as refused:
            log.info("regenerate refused for %s: %s", event.user_id, refused)
            return  # a reaction has no private reply; the queue's limits still hold
        message = self.bot.get_partial_messageable(event.channel_id).get_partial_message(
            event.message_id
        )

        async def edit(content: str) -> object:
            return await message.edit(content=content, allowed_mentions=NO_MENTIONS)

        where = Where(event.user_id, event.channel_id, event.guild_id)
        written = await write(
            self.services, task, handle, where, edit,
            output_id=output.id, refines_id=chosen.id, refine_kind="regenerate",
        )  # fmt: skip
        if written is not None:
            await message.edit(
                content=None, embed=written.embed, allowed_mentions=NO_MENTIONS,
                attachments=written.files,
            )  # fmt: skip


async def setup(bot: LLMOSBot) -> None:
    await bot.add_cog(Refine(bot, bot.services))
