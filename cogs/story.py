"""Story co-writing: `/story start|continue|show|recap|undo|export|end`, and people's messages.

In a channel (or thread) with an active story, every plain message is a segment; editing or
deleting the message updates or removes it. The bot writes when asked, when mentioned, or
after every N people's segments if the channel's `story_auto_turn` is set.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.prompts.story import LENGTHS
from bot.services import Services
from bot.store import StoryExists, StoryRecord
from bot.ui.deliver import answer_in_channel, answer_with_generation
from bot.ui.render import split_for_discord
from bot.ui.replies import NO_MENTIONS, refuse
from bot.writing.refine import replied_to
from bot.writing.run import Where
from bot.writing.story import StoryWriter

if TYPE_CHECKING:
    from bot.app import LLMOSBot

log = logging.getLogger(__name__)
GENRES = ("fantasy", "science fiction", "mystery", "romance", "horror", "literary", "comedy")
SEGMENT_LIMIT = 2000
DIRECTION_LIMIT = 300
# A story's parts are written one at a time; /story continue waits this long for its turn.
TURN_WAIT_S = 1.5
BUSY_TURN = "I'm writing this story's next part right now. Ask again once it's in."


@app_commands.guild_only()
class Story(commands.GroupCog, group_name="story"):
    """Write a story together, one part at a time."""

    def __init__(self, bot: commands.Bot, services: Services, writer: StoryWriter) -> None:
        self.bot = bot
        self.services = services
        self.writer = writer
        super().__init__()

    async def _active(self, interaction: discord.Interaction) -> StoryRecord | None:
        story = await self.services.stories.active(interaction.channel_id or 0)
        if story is None:
            await refuse(interaction, "There's no story here yet. Begin one with /story start.")
        return story

    @app_commands.command(name="start")
    @app_commands.describe(
        premise="What the story is about", genre="Its genre", thread="Start it in a new thread"
    )
    @app_commands.choices(genre=[app_commands.Choice(name=g, value=g) for g in GENRES])
    async def start(
        self,
        interaction: discord.Interaction,
        premise: str,
        genre: str | None = None,
        thread: bool = False,
    ) -> None:
        """Begin a story in this channel (or a new thread); everyone can add to it."""
        premise = " ".join(premise.split())
        if not 3 <= len(premise) <= 500:
            await refuse(interaction, "Please give a premise of 3 to 500 characters.")
            return
        title = premise if len(premise) <= 60 else premise[:57].rsplit(" ", 1)[0] + "…"
        channel_id = interaction.channel_id or 0
        where = "here"
        if thread:
            parent = interaction.channel
            if not isinstance(parent, discord.TextChannel):
                await refuse(interaction, "I can only open a thread from a text channel.")
                return
            created = await parent.create_thread(
                name=title[:100], type=discord.ChannelType.public_thread
            )
            channel_id, where = created.id, created.mention
        try:
            await self.services.stories.start(
                guild_id=interaction.guild_id,
                channel_id=channel_id,
                title=title,
                premise=premise,
                genre=genre,
                created_by=interaction.user.id,
            )
        except StoryExists:
            await refuse(interaction, "A story is already going here. End it with /story end.")
            return
        await interaction.response.send_message(
            f"📖 **{title}** begins {where}. Write the next part as a plain message, or ask me "
            "with /story continue.",
            allowed_mentions=NO_MENTIONS,
        )

    @app_commands.command(name="continue")
    @app_commands.describe(direction="Where the story should go next", length="How much")
    @app_commands.choices(length=[app_commands.Choice(name=k, value=k) for k in LENGTHS])
    async def continue_(
        self,
        interaction: discord.Interaction,
        direction: str | None = None,
        length: str = "medium",
    ) -> None:
        """Let the bot write the next part of the story."""
        if direction is not None and len(direction) > DIRECTION_LIMIT:
            await refuse(
                interaction, f"Please keep the direction under {DIRECTION_LIMIT} characters."
            )
            return
        direction = " ".join((direction or "").split()) or None
        story = await self._active(interaction)
        if story is None:
            return
        where = Where(interaction.user.id, interaction.channel_id or 0, interaction.guild_id)
        turn = self.writer.turn(story.id)
        try:  # an interaction must be answered within 3 s: no long wait for the turn
            await asyncio.wait_for(turn.acquire(), TURN_WAIT_S)
        except TimeoutError:
            await refuse(interaction, BUSY_TURN)
            return
        try:
            task = await self.writer.next_part(
                story, where, direction, length if length in LENGTHS else "medium"
            )
            await answer_with_generation(
                interaction, self.services, task, landed=self.writer.lands_in(story, where)
            )
        finally:
            turn.release()

    @app_commands.command(name="show")
    async def show(self, interaction: discord.Interaction) -> None:
        """Show the story so far."""
        story = await self._active(interaction)
        if story is None:
            return
        segments = await self.services.stories.segments(story.id)
        text = "\n\n".join(s.text for s in segments) or "(No parts yet.)"
        pieces = split_for_discord(f"📖 **{story.title}**\n\n{text}")
        await interaction.response.send_message(pieces[0], allowed_mentions=NO_MENTIONS)
        for piece in pieces[1:4]:
            await interaction.followup.send(piece, allowed_mentions=NO_MENTIONS)
        if len(pieces) > 4:
            await interaction.followup.send(
                "The rest is long: /story export gives the whole text as a file.",
                allowed_mentions=NO_MENTIONS,
            )

    @app_commands.command(name="recap")
    async def recap(self, interaction: discord.Interaction) -> None:
        """Get a short summary of the story so far."""
        story = await self._active(interaction)
        if story is None:
            return
        task = await self.writer.recap(story, interaction.user.id)
        await answer_with_generation(interaction, self.services, task)

    @app_commands.command(name="undo")
    async def undo(self, interaction: discord.Interaction) -> None:
        """Remove the story's last part (its author or a moderator)."""
        story = await self._active(interaction)
        if story is None:
            return
        segments = await self.services.stories.segments(story.id)
        if not segments:
            await refuse(interaction, "There's nothing to undo yet.")
            return
        last = segments[-1]
        moderator = interaction.permissions.manage_messages
        mine = last.author_id == interaction.user.id
        if last.source == "bot":
            mine = mine or (await self._requested_by(last.generation_id)) == interaction.user.id
        if not (mine or moderator):
            await refuse(
                interaction, "Only the author of the last part or a moderator can undo it."
            )
            return
        await self.services.stories.remove(last.id)
        await interaction.response.send_message(
            f"Removed the last part ({len(last.text)} characters).", allowed_mentions=NO_MENTIONS
        )

    async def _requested_by(self, generation_id: int | None) -> int | None:
        if generation_id is None:
            return None
        record = await self.services.store.get_generation(generation_id)
        return record.user_id if record else None

    @app_commands.command(name="export")
    async def export(self, interaction: discord.Interaction) -> None:
        """Get the story as a Markdown file."""
        story = await self._active(interaction)
        if story is None:
            return
        segments = await self.services.stories.segments(story.id)
        authors: list[str] = []
        ids = dict.fromkeys(s.author_id if s.source == "user" else -1 for s in segments)
        for author_id in ids:  # each author once, in order of appearance
            name = "LLMOS" if author_id == -1 else await self._name(author_id)
            if name not in authors:
                authors.append(name)
        text = "\n\n".join(s.text for s in segments)
        genre = f"*{story.genre}*\n\n" if story.genre else ""
        document = (
            f"# {story.title}\n\n{genre}> {story.premise}\n\n"
            f"Written by {', '.join(authors) or 'nobody yet'}.\n\n---\n\n{text}\n"
        )
        file = discord.File(io.BytesIO(document.encode()), filename="story.md")
        await interaction.response.send_message(
            f"📖 **{story.title}**, {len(segments)} parts.",
            file=file,
            allowed_mentions=NO_MENTIONS,
        )

    async def _name(self, user_id: int | None) -> str:
        if user_id is None:
            return "someone"
        user = self.bot.get_user(user_id)  # members are not cached without the members intent
        if user is None:
            try:
                user = await self.bot.fetch_user(user_id)
            except discord.HTTPException:
                return f"writer {user_id}"
        return user.display_name

    @app_commands.command(name="end")
    async def end(self, interaction: discord.Interaction) -> None:
        """End the story here (it stays in the archive; /story start begins a new one)."""
        story = await self._active(interaction)
        if story is None:
            return
        if story.created_by != interaction.user.id and not interaction.permissions.manage_messages:
            await refuse(interaction, "Only whoever started the story or a moderator can end it.")
            return
        await self.services.stories.end(story.id)
        await interaction.response.send_message(
            f"📕 **{story.title}** is finished. Thank you, everyone!", allowed_mentions=NO_MENTIONS
        )

    # -- people's messages ------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.guild is None or not message.content.strip():
            return
        story = await self.services.stories.active(message.channel.id)
        replied = message.reference.message_id if message.reference else None
        if story is None or await replied_to(self.services.store, replied) is not None:
            return  # a reply to one of the bot's parts asks to rewrite it (cogs.refine)
        mentioned = self.bot.user is not None and self.bot.user in message.mentions
        text = message.clean_content.replace(f"@{self._me()}", "").strip()
        if text and not text.startswith("/"):
            await self.services.stories.add(
                story.id,
                channel_id=message.channel.id,
                author_id=message.author.id,
                text=text[:SEGMENT_LIMIT],
                source="user",
                message_id=message.id,
            )
        prefs = await self.services.preferences.for_channel(message.guild.id, message.channel.id)
        due = prefs.story_auto_turn and (
            await self.services.stories.people_since_bot(story.id) >= prefs.story_auto_turn
        )
        if mentioned or due:
            where = Where(message.author.id, message.channel.id, message.guild.id)
            async with self.writer.turn(story.id):  # after the part being written, if any
                task = await self.writer.next_part(story, where)
                await answer_in_channel(
                    message.channel,
                    self.services,
                    task,
                    where,
                    landed=self.writer.lands_in(story, where),
                )

    def _me(self) -> str:
        return self.bot.user.display_name if self.bot.user else ""

    @commands.Cog.listener()
    async def on_raw_message_edit(self, event: discord.RawMessageUpdateEvent) -> None:
        segment = await self.services.stories.by_message(event.message_id)
        content = event.data.get("content")
        if segment is None or segment.source != "user" or content is None:
            return
        if content.strip():
            await self.services.stories.edit(segment.id, content.strip()[:SEGMENT_LIMIT])
        else:
            await self.services.stories.remove(segment.id)

    @commands.Cog.listener()
    async def on_raw_message_delete(self, event: discord.RawMessageDeleteEvent) -> None:
        segment = await self.services.stories.by_message(event.message_id)
        if segment is not None:
            await self.services.stories.remove(segment.id)


async def setup(bot: LLMOSBot) -> None:
    await bot.add_cog(Story(bot, bot.services, bot.writer))
