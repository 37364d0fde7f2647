"""Story co-writing: `/story start|continue|show|recap|undo|note|branch|vote|export|end`, and
people's messages.

In a channel (or thread) with an active story, every plain message is a segment; editing or
deleting the message updates or removes it. The bot writes when asked, when mentioned, after
every N people's segments if the channel's `story_auto_turn` is set, or when a vote closes:
the winning direction drives the next part. Open votes are kept in the database and closed
on time after a restart too.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import weakref
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.books.epub import Book, Part, chapters_by_session, story_epub
from bot.generation.types import QueueRefused
from bot.prompts.story import LENGTHS
from bot.services import Services
from bot.shards import owns
from bot.store import StoryExists, StoryRecord
from bot.store.votes import Tally, VoteOpen, VoteRecord
from bot.ui.deliver import answer_in_channel, answer_with_generation
from bot.ui.render import split_for_discord
from bot.ui.replies import NO_MENTIONS, refuse, refuse_deferred
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
NOTE_LIMIT = 300
MAX_BRANCHES = 10  # open branches per story: each is a thread
FORGOTTEN = "a writer who asked to be forgotten"
# Where a vote button's press goes, per client (two bots in one process in tests).
_VOTERS: weakref.WeakKeyDictionary[discord.Client, Story] = weakref.WeakKeyDictionary()


class VoteButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"story:vote:(?P<vid>\d+):(?P<choice>\d)",
):
    """One direction's button under a vote; its custom_id carries the vote, so it works after
    a restart."""

    def __init__(self, vote_id: int, choice: int, *, disabled: bool = False) -> None:
        super().__init__(
            discord.ui.Button(
                custom_id=f"story:vote:{vote_id}:{choice}",
                label=f"Direction {choice + 1}",
                style=discord.ButtonStyle.primary,
                disabled=disabled,
            )
        )
        self.vote_id = vote_id
        self.choice = choice

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> VoteButton:
        return cls(int(match["vid"]), int(match["choice"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        story = _VOTERS.get(interaction.client)
        if story is None:
            await refuse(interaction, "Voting isn't available right now.")
            return
        await story.cast(interaction, self.vote_id, self.choice)


def vote_view(vote: VoteRecord, *, closed: bool = False) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for choice in range(len(vote.options)):
        view.add_item(VoteButton(vote.id, choice, disabled=closed))
    return view


def vote_text(vote: VoteRecord, tally: Tally | None = None) -> str:
    """The vote's message: the directions, and once closed, the tally."""
    if tally is None:
        stamp = int(vote.closes().timestamp())
        head = f"🗳️ **Where should the story go next?** Voting closes <t:{stamp}:R>."
        lines = [f"**{i + 1}.** {option}" for i, option in enumerate(vote.options)]
        return "\n".join([head, *lines, "One vote each; you can change it until it closes."])
    lines = []
    for i, option in enumerate(vote.options):
        mark = " ✅" if vote.winner == i else ""
        count = tally.counts[i]
        lines.append(f"**{i + 1}.** {option} — {count} vote{'s' if count != 1 else ''}{mark}")
    if vote.winner is None:
        end = "Nobody voted, so the story waits for you."
    else:
        end = f"The story goes with direction {vote.winner + 1}."
    return "\n".join(["🗳️ **The vote is closed.**", *lines, end])


@app_commands.guild_only()
class Story(commands.GroupCog, group_name="story"):
    """Write a story together, one part at a time."""

    def __init__(
        self, bot: commands.AutoShardedBot, services: Services, writer: StoryWriter
    ) -> None:
        self.bot = bot
        self.services = services
        self.writer = writer
        self._wake = asyncio.Event()
        self._closer: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        super().__init__()

    async def cog_load(self) -> None:
        _VOTERS[self.bot] = self
        self.bot.add_dynamic_items(VoteButton)
        # open votes outlive a restart: the closer finds them in the database
        self._closer = asyncio.create_task(self._close_votes(), name="story-votes")

    async def cog_unload(self) -> None:
        _VOTERS.pop(self.bot, None)
        self.bot.remove_dynamic_items(VoteButton)
        for task in [self._closer, *self._closing]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

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
    @app_commands.describe(
        direction="Where the story should go next",
        length="How much",
        as_="Write it as this character (from /character add)",
    )
    @app_commands.rename(as_="as")
    @app_commands.choices(length=[app_commands.Choice(name=k, value=k) for k in LENGTHS])
    async def continue_(
        self,
        interaction: discord.Interaction,
        direction: str | None = None,
        length: str = "medium",
        as_: str | None = None,
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
        character = " ".join((as_ or "").split()) or None
        if character is not None and await self.writer.worlds.character(story, character) is None:
            await refuse(
                interaction,
                f"This story has no character called “{character[:100]}”. Add them with"
                " /character add, or see /lore list.",
            )
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
                story, where, direction, length if length in LENGTHS else "medium", character
            )
            await answer_with_generation(
                interaction, self.services, task, landed=self.writer.lands_in(story, where)
            )
        finally:
            turn.release()

    @continue_.autocomplete("as_")
    async def _characters(
        self, interaction: discord.Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        story = await self.services.stories.active(interaction.channel_id or 0)
        if story is None:
            return []
        entries = await self.services.lore.entries("story", story.id)
        names = [e.name for e in entries if e.kind == "character"]
        return [
            app_commands.Choice(name=n, value=n) for n in names if typed.casefold() in n.casefold()
        ][:25]

    @app_commands.command(name="show")
    async def show(self, interaction: discord.Interaction) -> None:
        """Show the story so far."""
        story = await self._active(interaction)
        if story is None:
            return
        segments = await self.services.stories.segments(story.id)
        # numbered, so that /story branch from: can name a part
        text = "\n\n".join(f"`{i}` {s.text}" for i, s in enumerate(segments, 1))
        note = f"\n*Author's note:* {story.note}" if story.note else ""
        pieces = split_for_discord(f"📖 **{story.title}**{note}\n\n{text or '(No parts yet.)'}")
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
        if last.story_id != story.id:
            await refuse(
                interaction,
                "The last part here is shared with the story this branch came from: undo it"
                " there, or add a part here first.",
            )
            return
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
    @app_commands.describe(
        format="Markdown, or an e-book (EPUB)", lore="Add the lorebook as an appendix (EPUB)"
    )
    @app_commands.choices(
        format=[
            app_commands.Choice(name="markdown", value="markdown"),
            app_commands.Choice(name="epub", value="epub"),
        ]
    )
    async def export(
        self, interaction: discord.Interaction, format: str = "markdown", lore: bool = False
    ) -> None:
        """Get the story as a Markdown file or an EPUB e-book."""
        story = await self._active(interaction)
        if story is None:
            return
        segments = await self.services.stories.segments(story.id)
        names: dict[int | None, str] = {}
        for segment in segments:  # each author once, in order of appearance
            key = -1 if segment.source == "bot" else segment.author_id
            if key not in names:
                names[key] = "LLMOS" if key == -1 else await self._name(key)
        authors = list(dict.fromkeys(names.values()))
        if format == "epub":
            await interaction.response.defer(thinking=True)
            appendix: list[tuple[str, str]] = []
            if lore:
                entries = await self.services.lore.entries("story", story.id)
                appendix = [(e.name, e.text) for e in entries if e.enabled]
            parts = [
                Part(s.text, s.created_at, names[-1 if s.source == "bot" else s.author_id])
                for s in segments
            ]
            branch = None
            if story.parent_id is not None:
                parent = await self.services.stories.get(story.parent_id)
                if parent is not None:
                    branch = f"An alternate branch of “{parent.title}”."
            book = Book(
                title=story.title,
                premise=story.premise,
                genre=story.genre,
                contributors=authors,
                chapters=chapters_by_session(parts),
                appendix=appendix,
                identifier=f"llmos-story-{story.id}",
                branch_note=branch,
            )
            data = await asyncio.to_thread(story_epub, book)
            await interaction.followup.send(
                f"📖 **{story.title}**, {len(segments)} parts, as an e-book.",
                file=discord.File(io.BytesIO(data), filename="story.epub"),
                allowed_mentions=NO_MENTIONS,
            )
            return
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
        if user_id is None:  # their part stays, their name went with /privacy forget-me
            return FORGOTTEN
        user = self.bot.get_user(user_id)  # members are not cached without the members intent
        if user is None:
            try:
                user = await self.bot.fetch_user(user_id)
            except discord.HTTPException:
                return f"writer {user_id}"
        return user.display_name

    @app_commands.command(name="note")
    @app_commands.describe(text="Style for the next parts (tense, mood, pacing); empty clears it")
    async def note(self, interaction: discord.Interaction, text: str = "") -> None:
        """Set the author's note: how the next parts should read, until changed."""
        story = await self._active(interaction)
        if story is None:
            return
        text = " ".join(text.split())
        if len(text) > NOTE_LIMIT:
            await refuse(interaction, f"Please keep the note under {NOTE_LIMIT} characters.")
            return
        await self.services.stories.set_note(story.id, text)
        said = f"Author's note set: *{text}*" if text else "Author's note cleared."
        await interaction.response.send_message(said, allowed_mentions=NO_MENTIONS)

    @app_commands.command(name="branch")
    @app_commands.describe(from_part="The part to branch after (its number in /story show)")
    @app_commands.rename(from_part="from")
    async def branch(
        self, interaction: discord.Interaction, from_part: app_commands.Range[int, 1] | None = None
    ) -> None:
        """Open an alternate line of the story in a new thread, sharing the parts so far."""
        story = await self._active(interaction)
        if story is None:
            return
        segments = await self.services.stories.segments(story.id)
        if not segments:
            await refuse(interaction, "There's nothing to branch from yet.")
            return
        number = from_part or len(segments)
        if not 1 <= number <= len(segments):
            await refuse(interaction, f"Please give a part from 1 to {len(segments)}.")
            return
        channel = interaction.channel
        parent = channel.parent if isinstance(channel, discord.Thread) else channel
        if not isinstance(parent, discord.TextChannel):
            await refuse(interaction, "I can only open a branch's thread in a text channel.")
            return
        if await self.services.stories.open_branches(story.id) >= MAX_BRANCHES:
            await refuse(
                interaction,
                f"This story already has {MAX_BRANCHES} open branches. End one with /story end"
                " in its thread first.",
            )
            return
        await interaction.response.defer(thinking=True)  # a thread can take a while to open
        title = f"{story.title} · branch at part {number}"[:100]
        try:
            thread = await parent.create_thread(name=title, type=discord.ChannelType.public_thread)
        except discord.Forbidden:
            await refuse_deferred(
                interaction, "I'm not allowed to create threads here, so I can't open a branch."
            )
            return
        branched = await self.services.stories.branch(
            story,
            at=segments[number - 1].position,
            channel_id=thread.id,
            title=title,
            created_by=interaction.user.id,
        )
        await interaction.followup.send(
            f"🌿 **{branched.title}** goes on in {thread.mention}, sharing parts 1 to {number};"
            " the story here goes on too.",
            allowed_mentions=NO_MENTIONS,
        )

    @app_commands.command(name="vote")
    @app_commands.describe(
        first="A direction (leave them empty and I propose some)",
        second="Another direction",
        third="Another direction",
        minutes="How long the vote stays open (1 to 1440 minutes)",
    )
    async def vote(
        self,
        interaction: discord.Interaction,
        first: str | None = None,
        second: str | None = None,
        third: str | None = None,
        minutes: app_commands.Range[int, 1, 1440] = 10,
    ) -> None:
        """Let everyone vote on where the story goes; the winner drives the next part."""
        story = await self._active(interaction)
        if story is None:
            return
        given = [" ".join(o.split()) for o in (first, second, third) if o and o.strip()]
        if any(len(o) > DIRECTION_LIMIT for o in given):
            await refuse(
                interaction, f"Please keep each direction under {DIRECTION_LIMIT} characters."
            )
            return
        if await self.services.votes.open_for(story.id) is not None:
            await refuse(interaction, "A vote on this story is already open.")
            return
        await interaction.response.defer(thinking=True)
        options = list(dict.fromkeys(given))
        proposed = 0
        if len(options) < 3:
            try:
                await self.services.limits.admit(interaction.user.id, interaction.guild_id)
                ideas = await self.writer.directions(
                    story, interaction.user.id, 3 - len(options), options
                )
            except QueueRefused as refused:
                await refuse_deferred(interaction, refused.user_message)
                return
            proposed = len(ideas)
            options += ideas
        if len(options) < 2:
            await refuse_deferred(
                interaction,
                "I couldn't come up with directions this time. Give two or three yourself:"
                " /story vote first: … second: …",
            )
            return
        closes = datetime.now(UTC) + timedelta(minutes=max(1, min(1440, minutes)))
        try:
            record = await self.services.votes.open(
                story_id=story.id,
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id or 0,
                options=options,
                created_by=interaction.user.id,
                closes_at=closes,
            )
        except VoteOpen:
            await refuse_deferred(interaction, "A vote on this story is already open.")
            return
        text = vote_text(record)
        if proposed == 1:
            text += f"\n-# Direction {len(options)} is mine."
        elif proposed:
            text += f"\n-# Directions {len(options) - proposed + 1}–{len(options)} are mine."
        message = await interaction.followup.send(
            text, view=vote_view(record), wait=True, allowed_mentions=NO_MENTIONS
        )
        await self.services.votes.posted(record.id, message.id)
        self._wake.set()

    async def cast(self, interaction: discord.Interaction, vote_id: int, choice: int) -> None:
        """A vote button was pressed: record (or change) the person's ballot."""
        vote = await self.services.votes.ballot(vote_id, interaction.user.id, choice)
        if vote is None:
            await refuse(interaction, "This vote is closed.")
            return
        await refuse(  # private, like a ballot
            interaction,
            f"You voted for direction {choice + 1}. You can change your vote until it closes.",
        )

    async def _close_votes(self) -> None:
        """Close each open vote when its time comes, and act on any closed vote whose part was
        never asked for (a restart came between): now and after every restart."""
        await self.bot.wait_until_ready()  # channels are known once connected
        settings = self.services.settings
        try:
            for vote in await self.services.votes.unacted():
                # another process's shards carry that server: it acts, once, not both of us
                if owns(settings, vote.guild_id):
                    self._spawn(self._act_logged(vote))
        except Exception:
            log.exception("could not read the votes left unacted")
        while True:
            try:
                due = [
                    v for v in await self.services.votes.all_open() if owns(settings, v.guild_id)
                ]
            except Exception:
                log.exception("could not read the open votes")
                due = []
            now = datetime.now(UTC)
            wait = 60.0
            for vote in due:
                if vote.closes() <= now:
                    # its own task: writing the winner's part must not hold up other votes
                    self._spawn(self._close_logged(vote.id))
                else:
                    wait = min(wait, (vote.closes() - now).total_seconds())
                    break
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.05, wait))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_logged(self, vote_id: int) -> None:
        try:
            await self.close_vote(vote_id)
        except Exception:
            log.exception("closing vote %s failed", vote_id)

    async def _act_logged(self, vote: VoteRecord) -> None:
        try:
            await self.act_on(vote)
        except Exception:
            log.exception("acting on vote %s failed", vote.id)
            await self.services.votes.acted(vote.id)  # said as closed; not tried forever

    def wake(self) -> None:
        """Look at the open votes again now (a vote opened, or a test moved a clock)."""
        self._wake.set()

    async def _channel(self, channel_id: int) -> discord.abc.Messageable | None:
        channel = self.bot.get_channel(channel_id)
        if channel is None:
            with contextlib.suppress(discord.HTTPException):
                channel = await self.bot.fetch_channel(channel_id)
        return channel if isinstance(channel, discord.abc.Messageable) else None

    async def close_vote(self, vote_id: int) -> None:
        """End a vote once: show the tally, and let the winning direction drive the next part."""
        tally = await self.services.votes.close(vote_id)
        if tally is None:
            return
        vote = tally.vote
        channel = await self._channel(vote.channel_id)
        if channel is not None:
            with contextlib.suppress(discord.HTTPException):
                if vote.message_id is not None:
                    await channel.get_partial_message(vote.message_id).edit(  # type: ignore[attr-defined]
                        content=vote_text(vote, tally), view=vote_view(vote, closed=True)
                    )
                await channel.send(vote_text(vote, tally), allowed_mentions=NO_MENTIONS)
        await self._act_logged(vote)

    async def act_on(self, vote: VoteRecord) -> None:
        """Ask for the part the vote's winner steers; marked acted once it is journalled (a
        restart after that finishes it from the journal; before, acts again)."""
        story = await self.services.stories.get(vote.story_id)
        channel = await self._channel(vote.channel_id)
        if vote.winner is None or story is None or story.status != "active" or channel is None:
            await self.services.votes.acted(vote.id)  # nothing to write, or nowhere to
            return
        where = Where(vote.created_by or 0, vote.channel_id, vote.guild_id)

        async def journalled() -> None:
            await self.services.votes.acted(vote.id)

        async with self.writer.turn(story.id):
            task = await self.writer.next_part(story, where, vote.options[vote.winner])
            await answer_in_channel(
                channel,
                self.services,
                task,
                where,
                landed=self.writer.lands_in(story, where),
                journalled=journalled,
            )
        await self.services.votes.acted(vote.id)  # refused (said in the channel): done too

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
