"""`/about`: the model, this process's shards, this server's shard, uptime and the queue."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.generation.pool import PooledEngine, ServerStats
from bot.ui.render import EMBED_COLOUR
from bot.ui.replies import NO_MENTIONS

FIELD_LIMIT = 1024  # Discord's limit on one embed field's value

if TYPE_CHECKING:
    from bot.app import LLMOSBot, ShardStatus


def _engine(engine: object) -> str:
    """An engine's kind in a word: `BatchedEngine` -> batched (the sequential one is plain
    `TransformersEngine`)."""
    name = type(engine).__name__.removesuffix("Engine").lower()
    return "sequential" if name == "transformers" else name


def _uptime(seconds: float) -> str:
    minutes = int(seconds // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else f"{int(seconds)} s"


def _shard_line(shard: ShardStatus) -> str:
    latency = "latency unknown" if shard.latency is None else f"{shard.latency * 1000:.0f} ms"
    return f"`{shard.id}` {shard.state}, {latency}, {shard.guilds} server(s)"


def _server_line(index: int, server: ServerStats) -> str:
    # numbered, not named: a server's address is the operator's business, not the channel's
    state = "ejected" if server.ejected else "in"
    return (
        f"`{index}` {state}, {server.in_flight}/{server.cap} in flight, "
        f"{server.served} served, {server.failures} failure(s)"
    )


def _field(lines: list[str], limit: int = FIELD_LIMIT) -> str:
    """`lines` as one embed field's value: Discord refuses a field over 1,024 characters, so a
    long list ends with how many lines it leaves out."""
    shown: list[str] = []
    for n, line in enumerate(lines):
        rest = len(lines) - n
        tail = f"… and {rest} more" if rest > 1 else ""
        if len("\n".join([*shown, line])) + len(tail) + 1 > limit:
            return "\n".join([*shown, f"… and {rest} more"])
        shown.append(line)
    return "\n".join(shown)


class About(commands.Cog):
    """What is running: the model, the shards, the queue."""

    def __init__(self, bot: LLMOSBot) -> None:
        self.bot = bot

    @app_commands.command(name="about")
    async def about(self, interaction: discord.Interaction) -> None:
        """What runs this bot: the model, its shards, uptime and the queue."""
        services = self.bot.services
        engine = services.queue.engine
        count = self.bot.shard_count or 1
        if interaction.guild is not None:
            here = f"This server: shard {interaction.guild.shard_id} of {count}"
        else:
            here = f"Direct messages: shard 0 of {count}"
        lines = [
            f"Model: {engine.model_name} ({_engine(engine)} engine)",
            here,
            f"Uptime: {_uptime(time.monotonic() - self.bot.started)}",
            f"Queue: {services.queue.waiting} waiting",
        ]
        if services.vision is not None:
            lines.insert(1, f"Pictures: {services.vision.engine.model_name}")
        shards = _field([_shard_line(shard) for shard in self.bot.shard_report()])
        embed = discord.Embed(
            title="About LLMOS", description="\n".join(lines), colour=EMBED_COLOUR
        )
        embed.add_field(name="Shards in this process", value=shards or "none yet", inline=False)
        if isinstance(engine, PooledEngine):
            stats = engine.stats()
            # the ejected first: with a large pool they are what an admin looks for
            order = sorted(enumerate(stats, start=1), key=lambda pair: not pair[1].ejected)
            servers = [_server_line(i, s) for i, s in order]
            ejected = sum(s.ejected for s in stats)
            name = f"Generation servers: {len(stats) - ejected} of {len(stats)} in"
            embed.add_field(name=name, value=_field(servers), inline=False)
        await interaction.response.send_message(
            embed=embed, ephemeral=True, allowed_mentions=NO_MENTIONS
        )


async def setup(bot: LLMOSBot) -> None:
    await bot.add_cog(About(bot))
