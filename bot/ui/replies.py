"""Short private replies: refusals and apologies. Nothing here ever shows a traceback."""

from __future__ import annotations

import contextlib
import logging

import discord

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()


async def refuse(interaction: discord.Interaction, text: str) -> None:
    """A short private answer: a refusal, a permission problem, a bad value."""
    await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)


async def refuse_deferred(interaction: discord.Interaction, text: str) -> None:
    """A refusal for an interaction already deferred in public ("thinking…"): the placeholder
    goes, and the refusal is said privately, like `refuse`."""
    with contextlib.suppress(discord.HTTPException):
        await interaction.delete_original_response()
    await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)


SORRY = "Sorry, something went wrong on my side. Please try again."


async def apologise(interaction: discord.Interaction, error: BaseException) -> None:
    """Tell the user, privately and briefly, that their command, button or form failed.

    An error that carries a `user_message` (a busy database, say) is shown as it is; anything
    else is logged with its traceback and answered with a general apology. Never raises.
    """
    text = getattr(error, "user_message", None)
    if isinstance(text, str):
        log.info("interaction refused: %r", error)
    else:
        log.error("interaction failed", exc_info=error)
        text = SORRY
    await tell(interaction, text)


async def tell(interaction: discord.Interaction, text: str) -> None:
    """A private answer whether or not the interaction was answered already. Never raises."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
        else:
            await refuse(interaction, text)
    except discord.HTTPException:
        log.warning("could not tell the user about the error")
