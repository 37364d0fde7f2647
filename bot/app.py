"""The Discord client: loads the cogs, syncs commands, answers errors politely.

It is sharded (`commands.AutoShardedBot`): `SHARD_COUNT` shards in all (`auto`: as many as
Discord recommends), of which this process connects `SHARD_IDS` (unset: all of them). Each
shard's connection is logged, and kept in `shard_states` for `/about`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.services import Services
from bot.ui.replies import apologise, tell
from bot.ui.resume import Resumer
from bot.writing.story import StoryWriter

log = logging.getLogger(__name__)


EXTENSIONS = (
    "cogs.about",
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


@dataclass(frozen=True, slots=True)
class ShardStatus:
    """One of this process's shards, as `/about` shows it."""

    id: int
    state: str  # connecting, connected, ready, resumed, disconnected
    latency: float | None  # seconds, from the last heartbeat; None before the first
    guilds: int


class LLMOSBot(commands.AutoShardedBot):
    """The bot. Services arrive ready-made from the launcher (or a test) and are never global."""

    def __init__(self, services: Services, *, extensions: tuple[str, ...] = EXTENSIONS) -> None:
        intents = discord.Intents.default()
        intents.message_content = True  # story channels read people's messages
        settings = services.settings
        shards: dict[str, Any] = {"shard_count": settings.shard_count}
        if settings.shard_ids is not None:  # else every shard of the count
            shards["shard_ids"] = list(settings.shard_ids)
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            # shard_count None: discord.py asks Discord (GET /gateway/bot) when it connects
            **shards,
        )
        self.services = services
        self.started = time.monotonic()
        self.shard_states: dict[int, str] = {}
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
        shards = ", ".join(str(shard_id) for shard_id in sorted(self.shards))
        log.info(
            "Connected as %s to %d server(s) on shard(s) %s of %s",
            self.user,
            len(self.guilds),
            shards,
            self.shard_count,
        )

    # -- shards: each one's connection in the log, and for /about -----------------------------

    async def on_shard_connect(self, shard_id: int) -> None:
        self.shard_states[shard_id] = "connected"
        log.info("Shard %d/%s connected", shard_id, self.shard_count)

    async def on_shard_ready(self, shard_id: int) -> None:
        self.shard_states[shard_id] = "ready"
        servers = sum(1 for guild in self.guilds if guild.shard_id == shard_id)
        log.info("Shard %d ready: %d server(s)", shard_id, servers)

    async def on_shard_resumed(self, shard_id: int) -> None:
        self.shard_states[shard_id] = "resumed"
        log.info("Shard %d resumed (latency %s)", shard_id, _ms(self.shard_latency(shard_id)))

    async def on_shard_disconnect(self, shard_id: int) -> None:
        self.shard_states[shard_id] = "disconnected"
        log.info("Shard %d disconnected (discord.py reconnects it unless stopping)", shard_id)

    def shard_latency(self, shard_id: int) -> float | None:
        """The shard's last heartbeat round trip in seconds; None before the first one."""
        shard = self.get_shard(shard_id)
        latency = shard.latency if shard is not None else math.nan
        return latency if math.isfinite(latency) else None

    def shard_report(self) -> list[ShardStatus]:
        """This process's shards: state, latency and servers, by shard id."""
        counts: dict[int, int] = {}
        for guild in self.guilds:
            counts[guild.shard_id] = counts.get(guild.shard_id, 0) + 1
        ids = sorted(set(self.shards) | set(self.shard_states))
        return [
            ShardStatus(
                shard_id,
                self.shard_states.get(shard_id, "connecting"),
                self.shard_latency(shard_id),
                counts.get(shard_id, 0),
            )
            for shard_id in ids
        ]

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Log the traceback; tell the user something short and kind."""
        if isinstance(error, app_commands.MissingPermissions | app_commands.CheckFailure):
            await tell(interaction, "You don't have permission to do that here.")
            return
        await apologise(interaction, getattr(error, "original", error))


def _ms(latency: float | None) -> str:
    return "unknown" if latency is None else f"{latency * 1000:.0f} ms"
