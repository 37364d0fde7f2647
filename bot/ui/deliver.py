"""Deliver a task's answer on Discord: a refusal, or a message that shows the wait and the
text as it grows, then the saved answer with its controls.

The use case (`bot.writing.run.write`) does the work; this module only shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import discord

from bot.generation.queue import GenerationHandle
from bot.generation.types import QueueRefused
from bot.services import Services
from bot.store import NewRequest, StoreBusy
from bot.ui.controls import REACTIONS, CancelView, controls_for, output_controls
from bot.ui.render import attachment_edits, written_embed
from bot.ui.replies import NO_MENTIONS, refuse, refuse_deferred
from bot.writing.refine import Refinement
from bot.writing.run import Answered, Pacer, Task, Where, Written, write
from bot.writing.tasks import snapshot

log = logging.getLogger(__name__)

# Edits one Discord message: `content`, `embed`, `view`, `attachments` as in `Message.edit`.
Editor = Callable[..., Awaitable[Any]]
# Interaction tokens can edit the answer for 15 minutes (Discord's limit).
TOKEN_LIFETIME = timedelta(minutes=15)


async def deliver(
    services: Services,
    task: Task,
    handle: GenerationHandle,
    where: Where,
    editor: Editor,
    *,
    restore: discord.ui.View | None = None,
    output_id: int | None = None,
    refines_id: int | None = None,
    refine_kind: str | None = None,
    request_id: int | None = None,
    landed: Callable[[Answered], Awaitable[None]] | None = None,
) -> Answered | None:
    """Stream `handle` into a message through `editor`, with a Cancel button for the person who
    asked, then save the answer and show it with its controls.

    With `output_id` the answer is a new alternative of that output (the message already shows
    it, with `restore` as its controls, put back if this fails or is cancelled). Edits of the
    message are at least `EDIT_INTERVAL_S` apart, the final one included.

    With `request_id` (the request's journal row), the row ends with the request: done once the
    answer is shown and `landed` (a story keeping its part) has run, else failed or cancelled;
    a shutdown leaves it pending, for the next start to finish (`bot.ui.resume`).
    """
    pacer = Pacer()
    cancel = CancelView(where.user_id)

    async def progress(content: str) -> None:
        try:
            await editor(content=content, view=cancel, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as exc:  # a Discord hiccup: the generation goes on
            log.warning("progress edit failed: %s", exc)

    async def fail(content: str) -> object:
        await pacer.wait()
        return await editor(content=content, view=restore, allowed_mentions=NO_MENTIONS)

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
            request_id=request_id,
        )
    )
    cancel.on_cancel = inner.cancel
    try:
        written = await inner
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not cancel.pressed or (current is not None and current.cancelling()):
            raise
        try:
            await fail("Cancelled.")
        finally:
            if request_id is not None:
                await services.requests.end(request_id, "cancelled")
        return None
    finally:
        cancel.stop()
    if written is None:
        return None
    await pacer.wait()
    answered = await show_written(
        services,
        written,
        where,
        editor,
        command=task.command,
        new=output_id is None,
        fail=fail,
        picture=task.picture,
    )
    if answered is not None and landed is not None:
        await landed(answered)
    if request_id is not None:
        await services.requests.end(request_id, "done")
    return answered


async def show_written(
    services: Services,
    written: Written,
    where: Where,
    editor: Editor,
    *,
    command: str,
    new: bool,
    fail: Callable[[str], Awaitable[object]],
    picture: bytes | None = None,
) -> Answered | None:
    """Show a saved answer in its message with its controls: a `new` output (then the message
    is recorded, with the reactions the channel asked for), or the newest alternative of its
    output. None if Discord would not show it: the answer stays saved, and `fail` says so
    where it can. `picture` (PNG) is attached; without one, a picture the message already shows
    (an art critique's, under a newer version) stays."""
    position = total = 1
    if not new:
        position = total = len(await services.store.alternatives(written.output_id))
    view = output_controls(
        written.generation_id, position, total, command=command, text=written.text
    )
    edits = attachment_edits(written.text, written.generation_id, command, picture)
    try:
        message = await editor(
            content=None,
            embed=written_embed(written, position, total),
            view=view,
            allowed_mentions=NO_MENTIONS,
            **edits,
        )
    except discord.HTTPException as exc:
        # discord.py has already retried 5xx answers and waited out 429s. The answer is saved;
        # say so where possible (the message may be gone: deleted while it was written).
        log.warning("could not show generation #%s: %s", written.generation_id, exc)
        with contextlib.suppress(discord.HTTPException):
            await fail(f"I wrote it (#{written.generation_id}), but Discord would not show it.")
        return None
    if new:
        await services.store.set_output_message(written.output_id, message.id)
        prefs = await services.preferences.for_channel(where.guild_id, where.channel_id)
        if prefs.reactions:
            await _add_reactions(message)
    return Answered(written.generation_id, message.id, written.text)


async def deliver_refinement(
    services: Services, refinement: Refinement, editor: Editor
) -> Answered | None:
    """Stream a queued refinement into the output's own message; the version it refines and
    its controls come back if it fails or is cancelled."""
    shown = refinement.shown
    request_id = None
    if shown.message_id is not None:
        request_id = await journal(
            services,
            refinement.task,
            refinement.where,
            shown.message_id,
            output_id=refinement.output_id,
            refines_id=shown.id,
            refine_kind=refinement.kind,
        )
    return await deliver(
        services,
        refinement.task,
        refinement.handle,
        refinement.where,
        editor,
        restore=controls_for(shown, refinement.position, refinement.total),
        output_id=refinement.output_id,
        refines_id=shown.id,
        refine_kind=refinement.kind,
        request_id=request_id,
    )


async def journal(
    services: Services,
    task: Task,
    where: Where,
    message_id: int,
    *,
    interaction: discord.Interaction | None = None,
    output_id: int | None = None,
    refines_id: int | None = None,
    refine_kind: str | None = None,
) -> int | None:
    """Record a request just accepted, with the message its answer goes into (and the
    interaction whose token may edit it); its journal id. If the database will not take it,
    the request still runs, only not past a crash: None, and a log line."""
    try:
        return await services.requests.accept(
            NewRequest(
                command=task.command,
                task=snapshot(task),
                user_id=where.user_id,
                channel_id=where.channel_id,
                guild_id=where.guild_id,
                message_id=message_id,
                interaction_token=interaction.token if interaction else None,
                token_expires_at=(
                    (interaction.created_at + TOKEN_LIFETIME).isoformat() if interaction else None
                ),
                output_id=output_id,
                refines_id=refines_id,
                refine_kind=refine_kind,
            )
        )
    except (StoreBusy, sqlite3.Error) as exc:
        log.warning("could not journal a %s request: %r", task.command, exc)
        return None


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
    landed: Callable[[Answered], Awaitable[None]] | None = None,
) -> Answered | None:
    """Run `task` for the user of `interaction` and answer it; returns what was shown.

    Refusals (queue full, too many pending) are ephemeral and queue nothing (an interaction
    deferred already loses its "thinking…" placeholder). Failures end with
    a short message in place of the output; only finished work is saved. Once deferred, the
    request is journalled: a restart finishes it in the same message.
    """
    request = services.request_for(task, interaction.user.id, interaction.guild_id)
    try:
        await services.limits.admit(interaction.user.id, interaction.guild_id)
        handle = services.queue_for(task).submit(request)
    except QueueRefused as refused:
        if interaction.response.is_done():
            await refuse_deferred(interaction, refused.user_message)
        else:
            await refuse(interaction, refused.user_message)
        return None
    try:
        if interaction.response.is_done():  # deferred already (an image was read first)
            message_id: int | None = (await interaction.original_response()).id
        else:
            response = await interaction.response.defer(thinking=True)
            message_id = response.message_id if response is not None else None
    except discord.HTTPException:
        handle.cancel()  # nobody will see the answer
        raise
    where = Where(interaction.user.id, interaction.channel_id or 0, interaction.guild_id)
    request_id = None
    if message_id is not None:
        request_id = await journal(
            services,
            task,
            where,
            message_id,
            interaction=interaction,
            refines_id=refines_id,
            refine_kind=refine_kind,
        )
    return await deliver(
        services,
        task,
        handle,
        where,
        interaction.edit_original_response,
        refines_id=refines_id,
        refine_kind=refine_kind,
        request_id=request_id,
        landed=landed,
    )


async def answer_in_channel(
    channel: discord.abc.Messageable,
    services: Services,
    task: Task,
    where: Where,
    *,
    reference: discord.Message | None = None,
    landed: Callable[[Answered], Awaitable[None]] | None = None,
    journalled: Callable[[], Awaitable[None]] | None = None,
) -> Answered | None:
    """Like `answer_with_generation`, for work not started by an interaction (a mention, a
    story's automatic turn, a vote's winner): a new message is sent, the request journalled
    (then `journalled` is awaited: from here a restart finishes the request), and the answer
    streams into the message."""
    request = services.request_for(task, where.user_id, where.guild_id)
    try:
        await services.limits.admit(where.user_id, where.guild_id)
        handle = services.queue_for(task).submit(request)
    except QueueRefused as refused:
        await channel.send(refused.user_message, reference=reference, allowed_mentions=NO_MENTIONS)  # type: ignore[arg-type]
        return None
    try:
        message = await channel.send("✍️ …", reference=reference, allowed_mentions=NO_MENTIONS)  # type: ignore[arg-type]
    except BaseException:
        handle.cancel()  # nobody will see the answer
        raise
    request_id = await journal(services, task, where, message.id)
    if journalled is not None:
        await journalled()
    return await deliver(
        services, task, handle, where, message.edit, request_id=request_id, landed=landed
    )
