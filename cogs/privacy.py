"""Privacy: `/privacy forget-me` deletes what the bot keeps about the person asking."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.services import Services

if TYPE_CHECKING:
    from bot.app import LLMOSBot

PARTS = [
    app_commands.Choice(name="remove them from the stories", value="remove"),
    app_commands.Choice(name="keep them in the stories, without my name", value="anonymise"),
]


class Privacy(commands.GroupCog, group_name="privacy"):
    """What the bot keeps about you, and forgetting it."""

    def __init__(self, services: Services) -> None:
        self.services = services
        super().__init__()

    @app_commands.command(name="forget-me")
    @app_commands.describe(story_parts="What to do with the parts you wrote in stories")
    @app_commands.choices(story_parts=PARTS)
    async def forget_me(self, interaction: discord.Interaction, story_parts: str) -> None:
        """Delete your requests, votes and feedback; remove or anonymise your story parts."""
        remove = story_parts == "remove"
        done = await self.services.feedback.forget(
            interaction.user.id, segments="remove" if remove else "anonymise"
        )
        parts = "removed" if remove else "anonymised"
        await interaction.response.send_message(
            f"Done. I deleted {done.generations} of your requests and {done.votes} votes or "
            f"other feedback, and {parts} {done.segments} story parts. Messages already posted "
            "in Discord stay until someone deletes them.",
            ephemeral=True,
        )


async def setup(bot: LLMOSBot) -> None:
    await bot.add_cog(Privacy(bot.services))
