"""Answer an interaction with a generation: queue, show the wait, stream, save, show the result.

Every command that writes with the model goes through `answer_with_generation`, so waiting,
streaming, errors and saving look and behave the same everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import discord

from bot.generation.queue import GenerationHandle, GenerationQueue
from bot.generation.types import (
    GenerationError,
    GenerationRequest,
    GenerationResult,
    Prompt,
    QueueRefused,
    SamplingParams,
)
from bot.services import Services
from bot.store import NewGeneration
from bot.ui.controls import REACTIONS, CancelView, output_controls
from bot.ui.replies import NO_MENTIONS, SORRY, apologise, refuse

__all__ = ["NO_MENTIONS", "SORRY", "apologise", "refuse"]  # re-exported for the cogs

log = logging.getLogger(__name__)

# Discord allows about five edits per message per five seconds; one a second leaves room for
# the final edit and for other messages in the channel.
EDIT_INTERVAL_S = 1.0
STREAM_PREVIEW_CHARS = 1900
EMBED_COLOUR = discord.Colour(0x7B68EE)
EMBED_TEXT_LIMIT = 4000  # Discord allows 4096 in a description; room for the note
ATTACHED_NOTE = "*(The whole text is in the attached file.)*"


def split_for_discord(text: str, limit: int = 2000) -> list[str]:
    """Pieces of at most `limit` characters, cut at paragraph, then line, then word boundaries.

    A single word longer than `limit` (a URL, say) is the only thing ever cut mid-word.
    """
    pieces: list[str] = []
    current = ""
    for paragraph in text.split("\n\n"):
        candidate = f"{current}\n\n{paragraph}" if current else paragraph
        if len(candidate) <= limit:
            current = candidate
            continue
        if current:
            pieces.append(current)
        while len(paragraph) > limit:
            cut = max(paragraph.rfind("\n", 0, limit), paragraph.rfind(" ", 0, limit))
            cut = cut if cut > 0 else limit
            pieces.append(paragraph[:cut].rstrip())
            paragraph = paragraph[cut:].lstrip()
        current = paragraph
    if current or not pieces:
        pieces.append(current)
    return pieces


@dataclass(frozen=True, slots=True)
class Task:
    """One thing to write: what to ask the model, and how to present and store the answer."""

    command: str
    title: str
    prompt: Prompt
    params: SamplingParams
    inputs: dict[str, Any] = field(default_factory=dict)
    # Turns the raw model text into what is shown; may return "" when nothing usable came back.
    finish: Callable[[str], str] = str.strip
    # One more try when the first answer misses the form: `accept` judges a finished text,
    # `retry(first)` gives a firmer prompt (or None), `combine(first, second_raw)` keeps the
    # best; by default the second answer if it is accepted, else the first.
    accept: Callable[[str], bool] | None = None
    retry: Callable[[str], Prompt | None] | None = None
    combine: Callable[[str, str], str] | None = None
    # More prompts written side by side with the first (an acrostic's lines); their texts are
    # joined with the first one's by `join` before `finish`.
    extra: tuple[Prompt, ...] = ()
    join: Callable[[list[str]], str] = "\n".join

    def best(self, first: str, second_raw: str) -> str:
        if self.combine is not None:
            return self.combine(first, second_raw)
        second = self.finish(second_raw)
        return second if self.accept is not None and self.accept(second) else first


def render_embed(
    title: str, text: str, *, model: str, seconds: float, generation_id: int,
    position: int = 1, total: int = 1,
) -> discord.Embed:  # fmt: skip
    """An answer as an embed; a text too long for one is cut at a paragraph (or word) boundary,
    with a note that the whole text is attached (see `Written.files`)."""
    shown = text
    if len(text) > EMBED_TEXT_LIMIT:
        shown = split_for_discord(text, EMBED_TEXT_LIMIT - 80)[0] + f"\n\n{ATTACHED_NOTE}"
    embed = discord.Embed(title=title[:256], description=shown, colour=EMBED_COLOUR)
    counter = f" · {position}/{total}" if total > 1 else ""
    embed.set_footer(text=f"{model} · {seconds:.1f} s · #{generation_id}{counter}")
    return embed


def attachments_for(text: str, generation_id: int) -> list[discord.File]:
    """The whole text as a file, when an embed can show only its start."""
    if len(text) <= EMBED_TEXT_LIMIT:
        return []
    return [discord.File(io.BytesIO(text.encode()), filename=f"llmos-{generation_id}.md")]


class Pacer:
    """Spaces the edits of one message at least `interval` apart, across attempts."""

    def __init__(self, interval: float = EDIT_INTERVAL_S) -> None:
        self.interval = interval
        self.last = 0.0

    @property
    def due(self) -> bool:
        return time.monotonic() - self.last >= self.interval

    async def wait(self) -> None:
        """Sleep until the next edit is allowed."""
        await asyncio.sleep(max(0.0, self.last + self.interval - time.monotonic()))


async def show_progress(
    handle: GenerationHandle,
    edit: Callable[[str], Awaitable[object]],
    *,
    pacer: Pacer | None = None,
) -> GenerationResult:
    """Show the queue position while waiting, then the text as it grows, via `edit(content)`.

    Edits at most once per `pacer.interval` (shared when one message shows several attempts).
    Returns the result or raises the `GenerationError`; cancelling the caller cancels the
    request. A failed edit (a Discord hiccup) is logged and skipped; the generation goes on.
    """
    pacer = pacer or Pacer()
    interval = pacer.interval

    async def safe_edit(content: str) -> None:
        try:
            await edit(content)
        except discord.HTTPException as exc:
            log.warning("progress edit failed: %s", exc)
        pacer.last = time.monotonic()

    shown_position = -1
    try:
        while not handle.started:
            position = handle.position
            if position != shown_position and position > 0 and pacer.due:
                wait = handle.estimated_wait()
                await safe_edit(f"⏳ #{position} in queue (about {max(1, round(wait))} s)")
                shown_position = position
            await handle.wait_started(timeout=interval)
        async for _chunk in handle:
            if pacer.due:
                preview = handle.text.strip()
                if len(preview) > STREAM_PREVIEW_CHARS:
                    preview = "…" + preview[-STREAM_PREVIEW_CHARS:]
                if preview:
                    await safe_edit(f"✍️ {preview}")
    except asyncio.CancelledError:
        handle.cancel()
        raise
    return await handle.result()


@dataclass(frozen=True, slots=True)
class Where:
    """Who asked and where the answer goes."""

    user_id: int
    channel_id: int
    guild_id: int | None


@dataclass(frozen=True, slots=True)
class Answered:
    """A generation that was saved and shown in a Discord message."""

    generation_id: int
    message_id: int
    text: str


@dataclass(frozen=True, slots=True)
class Written:
    """A finished, saved generation, ready to be shown."""

    output_id: int
    generation_id: int
    text: str
    title: str
    model: str
    seconds: float

    def embed(self, position: int = 1, total: int = 1) -> discord.Embed:
        """The answer as the `position`-th of `total` alternatives."""
        return render_embed(
            self.title, self.text, model=self.model, seconds=self.seconds,
            generation_id=self.generation_id, position=position, total=total,
        )  # fmt: skip

    @property
    def files(self) -> list[discord.File]:
        """The whole text as a file, when the embed could show only its start."""
        return attachments_for(self.text, self.generation_id)


async def complete(
    queue: GenerationQueue,
    task: Task,
    handle: GenerationHandle,
    user_id: int,
    edit: Callable[[str], Awaitable[object]],
    pacer: Pacer | None = None,
) -> tuple[str, GenerationResult, bool]:
    """Finish `task`: its text, the (combined) result, and whether it took a second try.

    The first attempt's `GenerationError` propagates; a failed second try keeps the first.
    """
    # Parts of an accepted task are not new requests for the per-user limit.
    extras = [
        queue.submit(GenerationRequest(user_id, p, task.params), count_for_user=False)
        for p in task.extra
    ]
    pacer = pacer or Pacer()
    try:
        result = await show_progress(handle, edit, pacer=pacer)
        parts = [await h.result() for h in extras]
    except BaseException:
        for h in extras:
            h.cancel()
        raise
    if parts:
        result = replace(
            result,
            text=task.join([result.text] + [p.text for p in parts]),
            completion_tokens=result.completion_tokens + sum(p.completion_tokens for p in parts),
            prompt_tokens=result.prompt_tokens + sum(p.prompt_tokens for p in parts),
        )
    text = task.finish(result.text)
    if task.accept is None or task.retry is None or task.accept(text):
        return text, result, False
    firmer = task.retry(text)
    if firmer is None:
        return text, result, False
    try:
        second = await show_progress(
            queue.submit(GenerationRequest(user_id, firmer, task.params)), edit, pacer=pacer
        )
    except GenerationError as error:  # keep the first attempt
        log.info("retry of %s failed: %r", task.command, error)
        return text, result, False
    combined = replace(
        second,
        prompt_tokens=result.prompt_tokens + second.prompt_tokens,
        completion_tokens=result.completion_tokens + second.completion_tokens,
        queued_s=result.queued_s + second.queued_s,
        generation_s=result.generation_s + second.generation_s,
    )
    return task.best(text, second.text), combined, True


async def write(
    services: Services,
    task: Task,
    handle: GenerationHandle,
    where: Where,
    edit: Callable[[str], Awaitable[object]],
    *,
    fail: Callable[[str], Awaitable[object]] | None = None,
    pacer: Pacer | None = None,
    output_id: int | None = None,
    refines_id: int | None = None,
    refine_kind: str | None = None,
) -> Written | None:
    """Show `handle`'s progress through `edit`, then save the finished text.

    With `output_id`, the text is saved as a new alternative of that output (a refinement);
    otherwise as a new output. On failure the user is told why through `fail` (default:
    `edit`) and nothing is saved; returns None.
    """
    fail = fail or edit
    try:
        text, result, retried = await complete(
            services.queue, task, handle, where.user_id, edit, pacer
        )
    except GenerationError as error:
        log.info("%s for %s failed: %r", task.command, where.user_id, error)
        await fail(error.user_message)
        return None
    if not text.strip():
        log.info("%s for %s came back empty (%s, %d characters before clean-up)",
                 task.command, where.user_id, result.finish_reason, len(result.text))  # fmt: skip
        await fail("The model came back with nothing usable. Please try again.")
        return None
    record = NewGeneration(
        guild_id=where.guild_id,
        channel_id=where.channel_id,
        user_id=where.user_id,
        command=task.command,
        prompt={
            "inputs": task.inputs,
            **task.prompt.to_dict(),
            "retried": retried,
            "title": task.title,
        },
        params=task.params.to_dict(),
        model=result.model,
        output=text,
        finish_reason=result.finish_reason,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        queued_ms=round(result.queued_s * 1000),
        generation_ms=round(result.generation_s * 1000),
        refines_id=refines_id,
        refine_kind=refine_kind,
    )
    if output_id is None:
        output_id, generation_id = await services.store.save_output(record)
    else:
        generation_id = await services.store.add_alternative(output_id, record)
    return Written(output_id, generation_id, text, task.title, result.model, result.generation_s)


# Edits one Discord message: `content`, `embed`, `view`, `attachments` as in `Message.edit`.
Editor = Callable[..., Awaitable[Any]]


async def deliver(
    services: Services, task: Task, handle: GenerationHandle, where: Where, editor: Editor, *,
    restore: discord.ui.View | None = None,
    output_id: int | None = None, refines_id: int | None = None, refine_kind: str | None = None,
) -> Answered | None:  # fmt: skip
    """Stream `handle` into a message through `editor`, with a Cancel button for the person who
    asked, then save the answer and show it with its controls.

    With `output_id` the answer is a new alternative of that output (the message already shows
    it, with `restore` as its controls, put back if this fails or is cancelled). Edits of the
    message are at least `EDIT_INTERVAL_S` apart, the final one included.
    """
    pacer = Pacer()
    cancel = CancelView(where.user_id)

    async def progress(content: str) -> object:
        return await editor(content=content, view=cancel, allowed_mentions=NO_MENTIONS)

    async def fail(content: str) -> object:
        await pacer.wait()
        return await editor(
            content=content, view=restore if restore is not None else None,
            allowed_mentions=NO_MENTIONS,
        )  # fmt: skip

    inner = asyncio.create_task(
        write(
            services,
            task,
            handle,
            where,
            progress,
            fail=fail,
            pacer=pacer,
            output_id=output_id,
            refines_id=refines_id,
            refine_kind=refine_kind,
        )
    )
    cancel.on_cancel = inner.cancel
    try:
        written = await inner
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not cancel.pressed or (current is not None and current.cancelling()):
            raise
        await fail("Cancelled.")
        return None
    finally:
        cancel.stop()
    if written is None:
        return None
    position = total = 1
    if output_id is not None:
        alternatives = await services.store.alternatives(output_id)
        position = total = len(alternatives)
    embed = written.embed(position, total)
    view = output_controls(
        written.generation_id, position, total, command=task.command, text=written.text
    )
    await pacer.wait()
    try:
        message = await editor(
            content=None, embed=embed, view=view, attachments=written.files,
            allowed_mentions=NO_MENTIONS,
        )  # fmt: skip
    except discord.HTTPException as exc:
        # discord.py has already retried 5xx answers and waited out 429s. The answer is saved;
        # say so where possible (the message may be gone: deleted while it was written).
        log.warning("could not show generation #%s: %s", written.generation_id, exc)
        with contextlib.suppress(discord.HTTPException):
            await fail(f"I wrote it (#{written.generation_id}), but Discord would not show it.")
        return None
    if output_id is None:
        await services.store.set_output_message(written.output_id, message.id)
        prefs = await services.preferences.for_channel(where.guild_id, where.channel_id)
        if prefs.reactions:
            await _add_reactions(message)
    return Answered(written.generation_id, message.id, written.text)


async def _add_reactions(message: discord.Message | discord.PartialMessage) -> None:
    """The reaction controls, for channels that asked for them (`reactions` setting)."""
    try:
        for emoji in REACTIONS:
            await message.add_reaction(emoji)
    except discord.HTTPException as exc:  # no Add Reactions permission, say
        log.info("could not add reactions: %s", exc)


async def answer_with_generation(
    interaction: discord.Interaction,
    services: Services,
    task: Task,
    *,
    refines_id: int | None = None,
    refine_kind: str | None = None,
) -> Answered | None:
    """Run `task` for the user of `interaction` and answer it; returns what was shown.

    Refusals (queue full, too many pending) are ephemeral and queue nothing. Failures end with
    a short message in place of the output; only finished work is saved.
    """
    request = GenerationRequest(user_id=interaction.user.id, prompt=task.prompt, params=task.params)
    try:
        await services.limits.admit(interaction.user.id, interaction.guild_id)
        handle = services.queue.submit(request)
    except QueueRefused as refused:
        await refuse(interaction, refused.user_message)
        return None
    try:
        await interaction.response.defer(thinking=True)
    except discord.HTTPException:
        handle.cancel()  # nobody will see the answer
        raise
    where = Where(interaction.user.id, interaction.channel_id or 0, interaction.guild_id)
    return await deliver(
        services, task, handle, where, interaction.edit_original_response,
        refines_id=refines_id, refine_kind=refine_kind,
    )  # fmt: skip


async def answer_in_channel(
    channel: discord.abc.Messageable, services: Services, task: Task, *, user_id: int,
    guild_id: int | None, channel_id: int, reference: discord.Message | None = None,
) -> Answered | None:  # fmt: skip
    """Like `answer_with_generation`, for work not started by an interaction (a mention, a
    story's automatic turn): a new message is sent and the answer streams into it."""
    request = GenerationRequest(user_id=user_id, prompt=task.prompt, params=task.params)
    try:
        await services.limits.admit(user_id, guild_id)
        handle = services.queue.submit(request)
    except QueueRefused as refused:
        await channel.send(refused.user_message, reference=reference, allowed_mentions=NO_MENTIONS)  # type: ignore[arg-type]
        return None
    message = await channel.send("✍️ …", reference=reference, allowed_mentions=NO_MENTIONS)  # type: ignore[arg-type]
    return await deliver(services, task, handle, Where(user_id, channel_id, guild_id), message.edit)
