"""After a restart, every request the journal holds ends in its own message.

`Resumer.start` runs once per start, after login and before Discord's events arrive, so the
requests accepted before the restart enter the queue first, in the order they were accepted
(the queue's round-robin keeps it fair). Answers saved just before the crash are shown, not
written again; each story's turns run one after another, so its parts land once and in order.
A request too old to finish, or one the bot kept dying on, gets a plain note and a 🔁 button
that asks again. Messages are edited with the interaction's token while it is valid, else as
the bot's own message by id.

With several processes on one database (`SHARD_IDS`), each finishes only the requests of the
servers its shards carry (direct messages: shard 0's), so none is answered twice.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import discord

from bot.generation.queue import GenerationHandle
from bot.generation.types import QueueRefused
from bot.services import Services
from bot.shards import owns
from bot.store import RequestRecord
from bot.ui.controls import controls_for
from bot.ui.deliver import Editor, deliver, journal, show_written
from bot.ui.replies import NO_MENTIONS, refuse
from bot.writing.journal import (
    Verdict,
    saved_answer,
    story_of,
    task_for,
    verdict,
    where_of,
)
from bot.writing.refine import position_of
from bot.writing.run import Answered, Task, Where
from bot.writing.story import StoryWriter

log = logging.getLogger(__name__)

TOO_OLD = (
    "⚠️ A restart interrupted this answer, and it has been too long to pick it up again. "
    "Press 🔁 to ask again."
)
GAVE_UP = (
    "⚠️ I was stopped {n} times while writing this, so I stopped trying. Press 🔁 to ask again."
)
LOST = "⚠️ A restart interrupted this answer, and I could not pick it up again. Please ask again."
STORY_ENDED = "The story ended before I could write this part."

# One per client, so that two bots in one process (tests) each reach their own resumer.
_RESUMERS: weakref.WeakKeyDictionary[discord.Client, Resumer] = weakref.WeakKeyDictionary()


class AskAgain(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"journal:again:(?P<rid>\d+)"
):
    """🔁 under an interrupted answer: the same request again, in the same message."""

    def __init__(self, request_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                custom_id=f"journal:again:{request_id}",
                emoji="🔁",
                label="Ask again",
                style=discord.ButtonStyle.secondary,
            )
        )
        self.request_id = request_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> AskAgain:
        return cls(int(match["rid"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        resumer = _RESUMERS.get(interaction.client)
        if resumer is None:
            await refuse(interaction, "That button isn't available right now.")
            return
        await resumer.again(interaction, self.request_id)


def ask_again_view(request_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(AskAgain(request_id))
    return view


class Resumer:
    """Finishes the journal's unfinished requests after a start; answers 🔁 on their notes."""

    def __init__(self, bot: discord.Client, services: Services, writer: StoryWriter) -> None:
        self.bot = bot
        self.services = services
        self.writer = writer
        self._running: set[asyncio.Task[None]] = set()

    # -- at start ---------------------------------------------------------------------------

    async def start(self) -> Counter[str]:
        """Queue (or show, or close with a note) every unfinished request; returns how many of
        each `Verdict`. Messages are edited in the background."""
        _RESUMERS[self.bot] = self
        self.bot.add_dynamic_items(AskAgain)
        settings = self.services.settings
        requests = self.services.requests
        pruned = await requests.prune()
        if pruned:
            log.info("journal: %d finished request(s) older than a week deleted", pruned)
        rows = await requests.unfinished()
        theirs = [row for row in rows if not owns(settings, row.guild_id)]
        if theirs:  # another process's shards carry those servers: it finishes them
            log.info(
                "journal: %d unfinished request(s) of other shards' servers left to their "
                "process(es)",
                len(theirs),
            )
            rows = [row for row in rows if owns(settings, row.guild_id)]
        counts: Counter[str] = Counter()
        stories: dict[int, list[RequestRecord]] = {}
        for row in rows:
            seen = verdict(
                row,
                max_age=timedelta(seconds=settings.resume_max_age),
                max_attempts=settings.resume_max_attempts,
            )
            counts[seen] += 1
            story_id = story_of(row)
            if seen is Verdict.DAMAGED:
                log.warning("journal: request %s has a damaged task; marked failed", row.id)
                self._spawn(self._close(row, "failed", LOST, error="damaged"))
            elif seen is Verdict.TOO_OLD:
                self._spawn(self._close(row, "interrupted", TOO_OLD, again=True))
            elif seen is Verdict.GAVE_UP:
                log.warning("journal: request %s stopped after %d starts", row.id, row.attempts)
                note = GAVE_UP.format(n=row.attempts)
                error = f"started {row.attempts} times"
                self._spawn(self._close(row, "failed", note, error=error, again=True))
            elif story_id is not None:  # in order, one after another
                stories.setdefault(story_id, []).append(row)
            elif seen is Verdict.SHOW:
                self._spawn(self._show(row))
            else:
                await self._queue(row)
        for story_id, turns in stories.items():
            # taken now, before any event: a story's new turns wait for the resumed ones
            await self.writer.turn(story_id).acquire()
            self._spawn(self._story_turns(story_id, turns))
        if rows:
            log.info(
                "journal: %d unfinished request(s): %s",
                len(rows),
                ", ".join(f"{n} {v}" for v, n in counts.items()),
            )
        return counts

    async def close(self) -> None:
        """Stop what is still running (it stays in the journal for the next start)."""
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        _RESUMERS.pop(self.bot, None)

    def _spawn(self, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad row must not stop the others
                log.exception("journal: resuming a request failed")

        task = asyncio.create_task(guarded())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _queue(self, row: RequestRecord) -> None:
        task = await task_for(self.services, self.writer, row)
        if task is None:
            self._spawn(self._close(row, "failed", LOST, error="cannot rebuild"))
            return
        self._spawn(self._run(row, task, self._requeue(row, task), row.id))

    def _requeue(self, row: RequestRecord, task: Task) -> GenerationHandle:
        # accepted before the restart: not refused, not counted again toward a limit
        return self.services.queue_for(task).submit(
            self.services.request_for(task, row.user_id, row.guild_id), count_for_user=False
        )

    async def _run(
        self,
        row: RequestRecord,
        task: Task,
        handle: GenerationHandle,
        request_id: int | None,
        *,
        where: Where | None = None,
    ) -> None:
        """Write `row`'s answer into its message, journalled as `request_id` (`row.id`, or
        a new request's for 🔁)."""
        restore = None
        if row.output_id is not None and row.refines_id is not None:  # a refinement
            shown = await self.services.store.get_generation(row.refines_id)
            if shown is not None:
                alternatives = await self.services.store.alternatives(row.output_id)
                restore = controls_for(shown, position_of(shown, alternatives), len(alternatives))
        await deliver(
            self.services,
            task,
            handle,
            where or where_of(row),
            self.editor(row),
            restore=restore,
            output_id=row.output_id,
            refines_id=row.refines_id,
            refine_kind=row.refine_kind,
            request_id=request_id,
            landed=await self._landing(row),
        )

    async def _show(self, row: RequestRecord) -> None:
        """Show an answer saved before the restart (and land it in its story)."""
        written = await saved_answer(self.services, row)
        if written is None:
            await self.services.requests.end(row.id, "done", "answer deleted since")
            return
        editor = self.editor(row)

        async def fail(text: str) -> object:
            return await editor(content=text, view=None, allowed_mentions=NO_MENTIONS)

        alternatives = await self.services.store.alternatives(written.output_id)
        answered = await show_written(
            self.services,
            written,
            where_of(row),
            editor,
            command=row.command,
            new=len(alternatives) == 1,
            fail=fail,
        )
        landed = await self._landing(row)
        if answered is not None and landed is not None:
            await landed(answered)
        await self.services.requests.end(row.id, "done")

    async def _story_turns(self, story_id: int, rows: list[RequestRecord]) -> None:
        """A story's requests, one after another: each part is written after the last lands.
        The story's turn is held (by `start`) until all have run."""
        try:
            await self._each_turn(rows)
        finally:
            self.writer.turn(story_id).release()

    async def _each_turn(self, rows: list[RequestRecord]) -> None:
        for row in rows:
            if row.state == "saved":
                await self._show(row)
                continue
            task = await task_for(self.services, self.writer, row)
            if task is None:
                await self._close(row, "cancelled", STORY_ENDED, error="story ended")
                continue
            await self._run(row, task, self._requeue(row, task), row.id)

    async def _landing(self, row: RequestRecord) -> Callable[[Answered], Awaitable[None]] | None:
        story_id = story_of(row)
        story = await self.services.stories.get(story_id) if story_id is not None else None
        return self.writer.lands_in(story, where_of(row)) if story is not None else None

    async def _close(
        self,
        row: RequestRecord,
        state: str,
        note: str,
        *,
        error: str | None = None,
        again: bool = False,
    ) -> None:
        """End `row` as `state` with a plain note in its message (with 🔁 to ask again). The
        note comes first: killed in between, the next start says it again."""
        await self._say(row, note, again=again)
        await self.services.requests.end(row.id, state, error)

    async def _say(self, row: RequestRecord, text: str, *, again: bool = False) -> None:
        """Put a plain note in the request's message (with 🔁 to ask again)."""
        try:
            await self.editor(row)(
                content=text,
                embed=None,
                view=ask_again_view(row.id) if again else None,
                allowed_mentions=NO_MENTIONS,
            )
        except discord.HTTPException as exc:  # the message is gone, say
            log.info("journal: could not update the message of request %s: %s", row.id, exc)

    def editor(self, row: RequestRecord) -> Editor:
        """Edits the request's message: with its interaction token while that is valid (it
        works where the bot cannot see the channel), else as the bot's own message."""
        message = self.bot.get_partial_messageable(row.channel_id).get_partial_message(
            row.message_id
        )
        token = row.interaction_token
        if token is None or self.bot.application_id is None:
            return message.edit
        webhook = discord.Webhook.partial(self.bot.application_id, token, client=self.bot)

        async def edit(**fields: Any) -> Any:
            if row.token_valid():
                try:
                    return await webhook.edit_message(row.message_id, **fields)
                except discord.HTTPException as exc:
                    if exc.status not in (401, 403, 404):
                        raise
                    log.info("journal: token of request %s refused (%s)", row.id, exc.status)
            return await message.edit(**fields)

        return edit

    # -- 🔁 on a note ------------------------------------------------------------------------

    async def again(self, interaction: discord.Interaction, request_id: int) -> None:
        """Run an interrupted request again in its message, for the person who asked it."""
        row = await self.services.requests.get(request_id)
        if row is None or row.task is None:
            await refuse(interaction, "That request is gone. Please ask again with the command.")
            return
        if interaction.user.id != row.user_id:
            await refuse(interaction, "Only the person who asked can ask again.")
            return
        task = await task_for(self.services, self.writer, row)
        if task is None:
            await refuse(interaction, "I can't redo that one, sorry. Please ask again.")
            return
        where = Where(interaction.user.id, interaction.channel_id or 0, interaction.guild_id)
        try:
            await self.services.limits.admit(where.user_id, where.guild_id)
            handle = self.services.queue_for(task).submit(
                self.services.request_for(task, where.user_id, where.guild_id)
            )
        except QueueRefused as refused:
            await refuse(interaction, refused.user_message)
            return
        try:
            await interaction.response.defer()
        except BaseException:
            handle.cancel()
            raise
        again_id = await journal(
            self.services,
            task,
            where,
            row.message_id,
            output_id=row.output_id,
            refines_id=row.refines_id,
            refine_kind=row.refine_kind,
        )
        await self._run(row, task, handle, again_id, where=where)
