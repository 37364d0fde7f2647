"""Refining an output in its own message: regenerate, longer, shorter, remix, and browsing the
alternatives. Buttons, reactions and replies all end up here, so they behave the same.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.generation.types import GenerationRequest
from bot.services import Services
from bot.store import GenerationRecord
from bot.tasks import refine_task, stored_task
from bot.ui.controls import output_controls
from bot.ui.respond import Answered, Editor, Where, deliver, render_embed


class CannotRefine(Exception):
    """This output cannot be redone (stored by an old version, or damaged)."""

    user_message = "I can't redo that one, sorry: it was made by an older version of me."


def title_of(record: GenerationRecord) -> str:
    """The title an output was shown with (the original's, for a refinement)."""
    stored = record.prompt if isinstance(record.prompt, dict) else {}
    inputs = stored.get("inputs")
    inputs = inputs if isinstance(inputs, dict) else {}
    return str(inputs.get("title") or stored.get("title") or record.command.title())


def shown_title(record: GenerationRecord) -> str:
    stored = record.prompt if isinstance(record.prompt, dict) else {}
    return str(stored.get("title") or title_of(record))


def embed_of(record: GenerationRecord, position: int, total: int) -> discord.Embed:
    """A stored alternative, as it is shown."""
    return render_embed(
        shown_title(record), record.output, model=record.model,
        seconds=record.generation_ms / 1000, generation_id=record.id, position=position,
        total=total,
    )  # fmt: skip


def position_of(record: GenerationRecord, alternatives: list[GenerationRecord]) -> int:
    """`record`'s 1-based place among its output's alternatives (the last if it is gone)."""
    ids = [a.id for a in alternatives]
    return ids.index(record.id) + 1 if record.id in ids else len(ids)


def controls_of(record: GenerationRecord, position: int, total: int) -> discord.ui.View:
    """The buttons under `record` shown as `position`/`total`."""
    return output_controls(record.id, position, total, command=record.command, text=record.output)


async def refine(
    services: Services, shown: GenerationRecord, kind: str, editor: Editor, *, user_id: int,
    guild_id: int | None, channel_id: int, instruction: str = "",
    queued: Callable[[], Awaitable[Any]] | None = None,
) -> Answered | None:  # fmt: skip
    """Write a new alternative of `shown`'s output (`kind`: regenerate, longer, shorter,
    remix with `instruction`) and show it in the output's message through `editor`.

    Raises `QueueRefused` (a limit, or the queue; nothing queued) or `CannotRefine` before
    anything is shown. `queued()` is awaited as soon as the request is in the queue (to
    acknowledge a button).
    """
    if kind == "regenerate":
        task = stored_task(shown, services.settings)
    else:
        task = refine_task(
            services.settings, shown.command, shown.output, kind, instruction, title_of(shown)
        )
    if task is None or shown.output_id is None:
        raise CannotRefine(shown.id)
    await services.limits.admit(user_id, guild_id)
    handle = services.queue.submit(GenerationRequest(user_id, task.prompt, task.params))
    if queued is not None:
        try:
            await queued()
        except BaseException:
            handle.cancel()  # nobody will see the answer
            raise
    alternatives = await services.store.alternatives(shown.output_id)
    restore = controls_of(shown, position_of(shown, alternatives), len(alternatives))
    return await deliver(
        services, task, handle, Where(user_id, channel_id, guild_id), editor,
        restore=restore, output_id=shown.output_id, refines_id=shown.id,
        refine_kind=kind,
    )  # fmt: skip


async def refinable_reply(services: Services, message: discord.Message) -> GenerationRecord | None:
    """The shown alternative of the output `message` replies to, when the reply is a refinement
    instruction (not for chat answers, which a reply continues as a conversation)."""
    ref = message.reference
    if ref is None or ref.message_id is None:
        return None
    output = await services.store.get_output_by_message(ref.message_id)
    if output is None or output.chosen_id is None or output.command == "chat":
        return None
    return await services.store.get_generation(output.chosen_id)
