"""Settings: `/settings show`, `/settings set`, `/settings reset` (moderators only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.preferences import DEFAULTS, KEYS, PreferenceError
from bot.services import Services
from bot.ui.render import EMBED_COLOUR
from bot.ui.replies import NO_MENTIONS, refuse

if TYPE_CHECKING:
    from bot.app import LLMOSBot

SCOPES = [
    app_commands.Choice(name="this channel", value="channel"),
    app_commands.Choice(name="the whole server (default for every channel)", value="server"),
]


def may_change(interaction: discord.Interaction, scope: str) -> bool:
    """Server-wide needs Manage Server; a channel needs Manage Channels (or Manage Server)."""
    perms = interaction.permissions
    if scope == "server":
        return perms.manage_guild
    return perms.manage_guild or perms.manage_channels


REFUSAL = (
    "Changing settings needs the Manage Channels permission here "
    "(Manage Server for server-wide settings). Ask a moderator."
)


# Said beside the values: every command starts from them, and these are the exceptions.
OVERRIDES = (
    "Every command decodes with this channel's `decoding`, `temperature`, `top_p`, "
    "`repetition_penalty` and `beams`, except:\n"
    "• /poem and /brainstorm always sample: they choose each line or idea among several "
    "drafts, and greedy or beam drafts would all be the same.\n"
    "• `max_length` limits chat and story answers; poems, lists, critiques and scenes take "
    "the length their form needs."
)


@app_commands.guild_only()
class Settings(commands.GroupCog, group_name="settings"):
    """How the bot writes in this server and channel."""

    def __init__(self, services: Services) -> None:
        self.services = services
        super().__init__()

    @app_commands.command(name="show")
    async def show(self, interaction: discord.Interaction) -> None:
        """Show this channel's settings and where each one comes from."""
        if not may_change(interaction, "channel"):
            await refuse(interaction, REFUSAL)
            return
        server, channel = await self.services.preferences.layers(
            interaction.guild_id, interaction.channel_id or 0
        )
        lines = []
        for key in KEYS:
            if key in channel:
                value, source = channel[key], "channel"
            elif key in server:
                value, source = server[key], "server"
            else:
                value, source = DEFAULTS[key], "default"
            shown = repr(value) if isinstance(value, str) else str(value)
            lines.append(f"`{key}` = {discord.utils.escape_markdown(shown)[:120]}  ({source})")
        embed = discord.Embed(
            title="Settings here", description="\n".join(lines), colour=EMBED_COLOUR
        )
        embed.add_field(name="Where a command decodes its own way", value=OVERRIDES, inline=False)
        embed.set_footer(text="Change with /settings set; undo with /settings reset.")
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @app_commands.command(name="set")
    @app_commands.describe(key="Which setting", value="The new value", scope="Where it applies")
    @app_commands.choices(
        key=[app_commands.Choice(name=f"{k} — {v.help}"[:100], value=k) for k, v in KEYS.items()],
        scope=SCOPES,
    )
    async def set_(
        self, interaction: discord.Interaction, key: str, value: str, scope: str = "channel"
    ) -> None:
        """Change one setting for this channel or for the whole server."""
        if not may_change(interaction, scope):
            await refuse(interaction, REFUSAL)
            return
        scope_key = "guild" if scope == "server" else "channel"
        scope_id = interaction.guild_id if scope == "server" else interaction.channel_id
        try:
            stored = await self.services.preferences.set(
                scope_key,
                scope_id or 0,
                key,
                value,
                guild_id=interaction.guild_id,
                user_id=interaction.user.id,
            )
        except PreferenceError as error:
            await refuse(interaction, f"That value doesn't work: {error}")
            return
        where = "the whole server" if scope == "server" else "this channel"
        await interaction.response.send_message(
            f"`{key}` is now {stored!r} for {where}.", ephemeral=True, allowed_mentions=NO_MENTIONS
        )

    @app_commands.command(name="reset")
    @app_commands.describe(scope="What to reset")
    @app_commands.choices(scope=SCOPES)
    async def reset(self, interaction: discord.Interaction, scope: str = "channel") -> None:
        """Put this channel's (or the server's) settings back to their defaults."""
        if not may_change(interaction, scope):
            await refuse(interaction, REFUSAL)
            return
        if scope == "server":
            await self.services.preferences.reset("guild", interaction.guild_id or 0)
        else:
            await self.services.preferences.reset("channel", interaction.channel_id or 0)
        where = "the server's" if scope == "server" else "this channel's"
        await interaction.response.send_message(
            f"Back to defaults: {where} settings.", ephemeral=True, allowed_mentions=NO_MENTIONS
        )


async def setup(bot: LLMOSBot) -> None:
    await bot.add_cog(Settings(bot.services))
