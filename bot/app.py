"""The Discord client: loads the cogs, syncs commands, answers errors politely."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.services import Services
from bot.ui.replies import apologise, tell
from bot.ui.resume import Resumer
from bot.writing.story import StoryWriter

log = logging.getLogger(__name__)


EXTENSIONS = (
    "cogs.poetry",
    "cogs.brainstorm",
    "cogs.chat",
    "cogs.critique",
    "cogs.feedback",
    "cogs.lore",
    "cogs.model",
    "cogs.privacy",
    "cogs.refine",
    "cogs.settings",
    "cogs.story",
)


class LLMOSBot(commands.Bot):
    """The bot. Services arrive ready-made from the launcher (or a test) and are never global."""

    def __init__(self, services: Services, *, extensions: tuple[str, ...] = EXTENSIONS) -> None:
        intents = discord.Intents.default()
        intents.message_content = True  # story channels read people's messages
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
        )
        self.services = services
        self.extensions_to_load = extensions
        # one for the bot: the story cog and the resumer take turns in a story through it
        self.writer = StoryWriter(services)
        self.resumer = Resumer(self, services, self.writer)
        self.tree.error(self.on_app_command_error)

    async def setup_hook(self) -> None:
        for extension in self.extensions_to_load:
            await self.load_extension(extension)
        await self.sync_commands()
        # after login, before any event: what was accepted before a restart is queued first
        try:
            await self.resumer.start()
        except Exception:  # the journal stays as it is, for the next start; the bot runs
            log.exception("could not resume the requests accepted before the restart")

    async def close(self) -> None:
        await self.resumer.close()  # unfinished requests stay journalled for the next start
        await super().close()

    async def sync_commands(self) -> None:
        """Register the application commands as `SYNC_COMMANDS` says."""
        mode = self.services.settings.sync_commands
        if mode == "off":
            return
        guild_id = self.services.settings.sync_guild_id
        if guild_id is not None:
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
        else:
            synced = await self.tree.sync()
        log.info("Synced %d application command(s) (%s)", len(synced), mode)

    async def on_message(self, message: discord.Message) -> None:
        """No prefix commands: slash commands only. Cogs listen to messages themselves."""

    async def on_ready(self) -> None:
        log.info("Connected as %s to %d server(s)", self.user, len(self.guilds))

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Log the traceback; tell the user something short and kind."""
        if isinstance(error, app_commands.MissingPermissions | app_commands.CheckFailure):
            await tell(interaction, "You don't have permission to do that here.")
            return
        await apologise(interaction, getattr(error, "original", error))
