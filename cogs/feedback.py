"""Feedback: `/feedback stats` for everyone, `/feedback export` for server managers."""

from __future__ import annotations

import asyncio
import io
import json
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.services import Services
from bot.store.feedback import Tally
from bot.ui.charts import feedback_chart
from bot.ui.render import EMBED_COLOUR
from bot.ui.replies import NO_MENTIONS, refuse

if TYPE_CHECKING:
    from bot.app import LLMOSBot

WHERE = [
    app_commands.Choice(name="this channel", value="channel"),
    app_commands.Choice(name="the whole server", value="server"),
]


def tally_lines(tallies: list[Tally]) -> str:
    return "\n".join(
        f"`{t.name}` {t.total} · 👍 {t.up} · 👎 {t.down} · kept {t.keep_rate:.0%}"
        for t in tallies[:15]
    )


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


@app_commands.guild_only()
class Feedback(commands.GroupCog, group_name="feedback"):
    """What people thought of the bot's writing."""

    def __init__(self, services: Services) -> None:
        self.services = services
        super().__init__()

    @app_commands.command(name="stats")
    @app_commands.describe(where="This channel or the whole server")
    @app_commands.choices(where=WHERE)
    async def stats(self, interaction: discord.Interaction, where: str = "server") -> None:
        """Votes and keep-rates per command and per kind of refinement, with a chart."""
        channel_id = interaction.channel_id if where == "channel" else None
        stats = await self.services.feedback.stats(interaction.guild_id or 0, channel_id)
        scope = "this channel" if channel_id is not None else "this server"
        if stats.empty:
            await refuse(interaction, f"Nothing has been written in {scope} yet.")
            return
        embed = discord.Embed(title=f"Feedback in {scope}", colour=EMBED_COLOUR)
        embed.add_field(name="Per command", value=tally_lines(stats.by_command), inline=False)
        embed.add_field(name="Per refinement", value=tally_lines(stats.by_refinement), inline=False)
        embed.set_footer(text="kept: outputs (or versions) someone marked ✅")
        png = await asyncio.to_thread(feedback_chart, stats, f"Feedback in {scope}")
        embed.set_image(url="attachment://feedback.png")
        await interaction.response.send_message(
            embed=embed,
            file=discord.File(io.BytesIO(png), filename="feedback.png"),
            allowed_mentions=NO_MENTIONS,
        )

    @app_commands.command(name="export")
    @app_commands.default_permissions(manage_guild=True)
    async def export(self, interaction: discord.Interaction) -> None:
        """Download this server's preference pairs (DPO) and kept outputs (SFT) as JSONL."""
        if not interaction.permissions.manage_guild:
            await refuse(interaction, "Exporting feedback needs the Manage Server permission.")
            return
        pairs, sft = await self.services.feedback.export(interaction.guild_id or 0)
        files = [
            discord.File(io.BytesIO(jsonl(pairs)), filename="preferences.jsonl"),
            discord.File(io.BytesIO(jsonl(sft)), filename="sft.jsonl"),
        ]
        await interaction.response.send_message(
            f"{len(pairs)} preference pairs (prompt, chosen, rejected) and {len(sft)} kept "
            "outputs, in the conversational format TRL's DPO and SFT trainers read.",
            files=files,
            ephemeral=True,
        )


async def setup(bot: LLMOSBot) -> None:
    await bot.add_cog(Feedback(bot.services))
