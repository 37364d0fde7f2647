"""Refining and judging outputs: the buttons under every output, reactions, and replies.

Buttons: 🔁 ◀ ▶ 🗑 / ➕ ➖ ✏️ ✅ / 👍 👎. Reactions (raw events, so outputs from before a
restart work too): 🔁 ➕ ➖ ✅ 👍 👎; removing 👍 or 👎 takes the vote back. Replying to an
output with text remixes it with that text as the instruction (a reply to a chat answer is a
conversation instead; see `cogs.chat`). Every refinement is a new alternative, linked to the
one it refines.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.generation.types import QueueRefused
from bot.services import Services
from bot.store import GenerationRecord
from bot.store.feedback import DOWN, UP
from bot.ui.controls import REACTIONS, Form, controls_for, handle_output_controls
from bot.ui.deliver import Editor, deliver_refinement
from bot.ui.render import PICTURED, attachment_edits, stored_embed
from bot.ui.replies import NO_MENTIONS, refuse, tell
from bot.writing import refine
from bot.writing.refine import CannotRefine
from bot.writing.run import Where

if TYPE_CHECKING:
    from bot.app import LLMOSBot

log = logging.getLogger(__name__)

BUTTON_KINDS = {"regen": "regenerate", "longer": "longer", "shorter": "shorter"}
VOTES = {"up": UP, "down": DOWN}
INSTRUCTION_LIMIT = 300
GONE = "That output is gone: it was deleted, or its author asked me to forget it."


class RemixModal(Form, title="Remix"):
    instruction: discord.ui.TextInput[Any] = discord.ui.TextInput(
        custom_id="instruction",
        label="How should it change?",
        max_length=INSTRUCTION_LIMIT,
        placeholder="darker · from the dragon's view · as a song",
    )

    def __init__(self, cog: Refine, generation_id: int) -> None:
        super().__init__(custom_id=f"llmos:remix-modal:{generation_id}")
        self.cog, self.generation_id = cog, generation_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        record = await self.cog.services.store.get_generation(self.generation_id)
        await self.cog.refine_by_button(interaction, record, "remix", self.instruction.value)


class ReasonModal(Form, title="What missed the mark?"):
    reason: discord.ui.TextInput[Any] = discord.ui.TextInput(
        custom_id="reason",
        label="Reason (optional)",
        style=discord.TextStyle.paragraph,
        required=False,
        max_length=500,
        placeholder="too long · off topic · not a haiku",
    )

    def __init__(self, cog: Refine, generation_id: int) -> None:
        super().__init__(custom_id=f"llmos:reason-modal:{generation_id}")
        self.cog, self.generation_id = cog, generation_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        text = " ".join(self.reason.value.split())
        if text:
            await self.cog.services.feedback.reason(self.generation_id, interaction.user.id, text)
        await refuse(interaction, "Thanks, that helps." if text else "Noted 👎.")


class Refine(commands.Cog):
    """Buttons, reactions and replies that refine and judge the bot's outputs."""

    def __init__(self, bot: commands.AutoShardedBot, services: Services) -> None:
        self.bot = bot
        self.services = services

    async def cog_load(self) -> None:
        handle_output_controls(self.bot, self)

    async def cog_unload(self) -> None:
        handle_output_controls(self.bot, None)

    # -- buttons --------------------------------------------------------------------------------

    async def on_control(
        self, interaction: discord.Interaction, action: str, generation_id: int
    ) -> None:
        """Route one button press on the output showing `generation_id`."""
        record = await self.services.store.get_generation(generation_id)
        if record is None or record.output_id is None:
            await refuse(interaction, GONE)
            return
        if action in BUTTON_KINDS:
            await self.refine_by_button(interaction, record, BUTTON_KINDS[action])
        elif action == "remix":
            await interaction.response.send_modal(RemixModal(self, generation_id))
        elif action in ("prev", "next"):
            await self.browse(interaction, record, -1 if action == "prev" else 1)
        elif action == "keep":
            await self.keep(record, interaction.user.id)
            await refuse(interaction, "✅ Kept.")
        elif action == "delete":
            await self.delete(interaction, record)
        elif action in VOTES:
            await self.vote_by_button(interaction, record, VOTES[action])
        else:
            await refuse(interaction, "That button does nothing.")

    async def refine_by_button(
        self,
        interaction: discord.Interaction,
        record: GenerationRecord | None,
        kind: str,
        instruction: str = "",
    ) -> None:
        if record is None or interaction.message is None:
            await refuse(interaction, GONE)
            return
        if kind == "remix" and not instruction.strip():
            await refuse(interaction, "Please say how it should change.")
            return
        where = Where(interaction.user.id, interaction.channel_id or 0, interaction.guild_id)
        if record.command in PICTURED:
            # a vision model's critique looks at the picture again: fetched before the queue,
            # which may take longer than the 3 s Discord allows an answer
            await interaction.response.defer()
        try:
            refinement = await refine.start(self.services, record, kind, where, instruction)
        except (QueueRefused, CannotRefine) as refused:
            await tell(interaction, refused.user_message)  # private, deferred or not
            return
        # acknowledged once the request is queued, so that a refusal could stay private
        try:
            if not interaction.response.is_done():
                await interaction.response.defer()
        except BaseException:
            refinement.handle.cancel()  # nobody will see the answer
            raise
        await deliver_refinement(self.services, refinement, interaction.message.edit)

    async def browse(
        self, interaction: discord.Interaction, record: GenerationRecord, step: int
    ) -> None:
        alternatives = await self.services.store.alternatives(record.output_id or 0)
        ids = [a.id for a in alternatives]
        index = ids.index(record.id) + step if record.id in ids else -1
        if not 0 <= index < len(alternatives):
            await refuse(interaction, "There's no other version that way.")
            return
        target = alternatives[index]
        await self.services.store.choose(target.output_id or 0, target.id)
        await interaction.response.edit_message(
            content=None,
            embed=stored_embed(target, index + 1, len(alternatives)),
            view=controls_for(target, index + 1, len(alternatives)),
            allowed_mentions=NO_MENTIONS,
            **attachment_edits(target.output, target.id, target.command),
        )

    async def keep(self, record: GenerationRecord, user_id: int) -> None:
        """Keep `record`: chosen for its output, and the story's text if it is a story part."""
        await self.services.feedback.keep(record.id, user_id)
        if record.message_id is None:
            return
        segment = await self.services.stories.by_message(record.message_id)
        if segment is not None and segment.source == "bot":
            await self.services.stories.adopt(segment.id, record.output, record.id)

    async def delete(self, interaction: discord.Interaction, record: GenerationRecord) -> None:
        output = await self.services.store.get_output(record.output_id or 0)
        moderator = interaction.permissions.manage_messages
        if output is None or not (output.requester_id == interaction.user.id or moderator):
            await refuse(interaction, "Only whoever asked for this or a moderator can delete it.")
            return
        await refuse(interaction, "🗑 Deleted.")
        if interaction.message is not None:
            try:
                await interaction.message.delete()
            except discord.HTTPException as exc:
                log.warning("could not delete output %s: %s", output.id, exc)
                return
        await self.services.store.delete_output(output.id)

    async def vote_by_button(
        self, interaction: discord.Interaction, record: GenerationRecord, value: int
    ) -> None:
        votes = await self.services.feedback.votes(record.output_id or 0)
        if votes.get(interaction.user.id) == value:  # pressing it again takes it back
            await self.services.feedback.unvote(record.output_id or 0, interaction.user.id)
            await refuse(interaction, "Vote removed.")
            return
        await self.services.feedback.vote(record.id, interaction.user.id, value)
        if value == DOWN:
            await interaction.response.send_modal(ReasonModal(self, record.id))
        else:
            await refuse(interaction, "Thanks for the 👍.")

    # -- reactions ------------------------------------------------------------------------------

    async def _reacted_output(
        self, event: discord.RawReactionActionEvent
    ) -> tuple[str, GenerationRecord] | None:
        action = REACTIONS.get(str(event.emoji))
        if action is None or event.user_id == getattr(self.bot.user, "id", None):
            return None
        output = await self.services.store.get_output_by_message(event.message_id)
        if output is None or output.chosen_id is None:
            return None  # not one of our outputs
        record = await self.services.store.get_generation(output.chosen_id)
        return (action, record) if record is not None else None

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, event: discord.RawReactionActionEvent) -> None:
        reacted = await self._reacted_output(event)
        if reacted is None:
            return
        action, record = reacted
        if action in VOTES:
            await self.services.feedback.vote(record.id, event.user_id, VOTES[action])
        elif action == "keep":
            await self.keep(record, event.user_id)
        else:
            message = self.bot.get_partial_messageable(event.channel_id).get_partial_message(
                event.message_id
            )
            where = Where(event.user_id, event.channel_id, event.guild_id)
            await self._refine_quietly(record, action, message.edit, where)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, event: discord.RawReactionActionEvent) -> None:
        reacted = await self._reacted_output(event)
        if reacted is not None and reacted[0] in VOTES:
            action, record = reacted
            await self.services.feedback.unvote(record.output_id or 0, event.user_id, VOTES[action])

    async def _refine_quietly(
        self,
        record: GenerationRecord,
        kind: str,
        editor: Editor,
        where: Where,
        instruction: str = "",
    ) -> None:
        """A refinement with no interaction to answer privately: a refusal is only logged."""
        try:
            refinement = await refine.start(self.services, record, kind, where, instruction)
        except (QueueRefused, CannotRefine) as refused:
            log.info("%s of %s refused for %s: %r", kind, record.id, where.user_id, refused)
            return
        await deliver_refinement(self.services, refinement, editor)

    # -- replies --------------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.guild is None:
            return
        target = message.reference.message_id if message.reference else None
        record = await refine.replied_to(self.services.store, target)
        if record is None:
            return
        instruction = " ".join(message.clean_content.split())[:INSTRUCTION_LIMIT]
        if not instruction:
            return
        partial = message.channel.get_partial_message(target or 0)  # type: ignore[union-attr]
        where = Where(message.author.id, message.channel.id, message.guild.id)
        await self._refine_quietly(record, "remix", partial.edit, where, instruction)


async def setup(bot: LLMOSBot) -> None:
    await bot.add_cog(Refine(bot, bot.services))
