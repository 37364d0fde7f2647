"""Answer an interaction with a generation: queue, show the wait, stream, save, show the result.

Every command that writes with the model goes through `answer_with_generation`, so waiting,
streaming, errors and saving look and behave the same everywhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import discord

from bot.generation.queue import GenerationHandle
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

log = logging.getLogger(__name__)

# Discord allows about five edits per message per five seconds; one a second leaves room for
# the final edit and for other messages in the channel.
EDIT_INTERVAL_S = 1.0
STREAM_PREVIEW_CHARS = 1900
EMBED_COLOUR = discord.Colour(0x7B68EE)
NO_MENTIONS = discord.AllowedMentions.none()


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


def render_result(
    task: Task, text: str, result: GenerationResult, generation_id: int
) -> discord.Embed:
    embed = discord.Embed(title=task.title[:256], description=text[:4096], colour=EMBED_COLOUR)
    embed.set_footer(text=f"{result.model} · {result.generation_s:.1f} s · #{generation_id}")
    return embed


async def show_progress(
    handle: GenerationHandle,
    edit: Callable[[str], Awaitable[object]],
    *,
    interval: float = EDIT_INTERVAL_S,
) -> GenerationResult:
    """Show the queue position while waiting, then the text as it grows, via `edit(content)`.

    Edits at most once per `interval`. Returns the result or raises the `GenerationError`.
    A failed edit (Discord hiccup) is logged and skipped; the generation goes on.
    """
    last_edit = 0.0

    async def safe_edit(content: str) -> None:
        nonlocal last_edit
        try:
            await edit(content)
        except discord.HTTPException as exc:
            log.warning("progress edit failed: %s", exc)
        last_edit = time.monotonic()

    shown_position = -1
    while not handle.started:
        position = handle.position
        due = time.monotonic() - last_edit >= interval
        if position != shown_position and position > 0 and due:
            wait = handle.estimated_wait()
            await safe_edit(f"⏳ #{position} in queue (about {max(1, round(wait))} s)")
            shown_position = position
        await handle.wait_started(timeout=interval)
    async for _chunk in handle:
        if time.monotonic() - last_edit >= interval:
            preview = handle.text.strip()
            if len(preview) > STREAM_PREVIEW_CHARS:
                preview = "…" + preview[-STREAM_PREVIEW_CHARS:]
            if preview:
                await safe_edit(f"✍️ {preview}")
    return await handle.result()


async def answer_with_generation(
    interaction: discord.Interaction, services: Services, task: Task
) -> int | None:
    """Run `task` for the user of `interaction` and answer it; returns the generation id.

    Refusals (queue full, too many pending) are ephemeral and queue nothing. Failures end with
    a short message in place of the output; only finished work is saved.
    """
    request = GenerationRequest(user_id=interaction.user.id, prompt=task.prompt, params=task.params)
    try:
        handle = services.queue.submit(request)
    except QueueRefused as refused:
        await interaction.response.send_message(
            refused.user_message, ephemeral=True, allowed_mentions=NO_MENTIONS
        )
        return None
    try:
        await interaction.response.defer(thinking=True)
    except discord.HTTPException:
        handle.cancel()  # nobody will see the answer
        raise

    async def edit(content: str) -> object:
        return await interaction.edit_original_response(
            content=content, allowed_mentions=NO_MENTIONS
        )

    try:
        result = await show_progress(handle, edit)
    except GenerationError as error:
        log.info("%s for %s failed: %r", task.command, interaction.user.id, error)
        await edit(error.user_message)
        return None
    text = task.finish(result.text)
    if not text.strip():
        await edit("The model came back with nothing usable. Please try again.")
        return None
    output_id, generation_id = await services.store.save_output(
        NewGeneration(
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id or 0,
            user_id=interaction.user.id,
            command=task.command,
            prompt={"inputs": task.inputs, **task.prompt.to_dict()},
            params=task.params.to_dict(),
            model=result.model,
            output=text,
            finish_reason=result.finish_reason,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            queued_ms=round(result.queued_s * 1000),
            generation_ms=round(result.generation_s * 1000),
        )
    )
    message = await interaction.edit_original_response(
        content=None, embed=render_result(task, text, result, generation_id),
        allowed_mentions=NO_MENTIONS,
    )  # fmt: skip
    await services.store.set_output_message(output_id, message.id)
    return generation_id
