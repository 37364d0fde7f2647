"""Refining an output: regenerate, longer, shorter, remix. Buttons, reactions and replies all
start here, so they behave the same; every result is a new alternative of the same output,
linked to the version it refines.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.generation.queue import GenerationHandle
from bot.images.load import ImageRefused
from bot.services import Services
from bot.store import GenerationRecord, Store
from bot.writing.art import art_again
from bot.writing.run import Task, Where
from bot.writing.tasks import refine_task, stored_task


class CannotRefine(Exception):
    """This output cannot be redone (stored by an old version, or damaged, or its image gone)."""

    user_message = "I can't redo that one, sorry: it was made by an older version of me."

    def __init__(self, generation_id: int, user_message: str | None = None) -> None:
        super().__init__(generation_id)
        if user_message is not None:
            self.user_message = user_message


async def look_again(services: Services, shown: GenerationRecord) -> Task | None:
    """For 🔁 on an art critique that a vision model wrote: the same critique task, shown the
    picture again (`bot.writing.art`). None for any other output, or when no vision model is
    configured any more (the stored measurements then do). Raises `CannotRefine` saying why
    when the image cannot be read again."""
    stored = shown.prompt if isinstance(shown.prompt, dict) else {}
    inputs = stored.get("inputs")
    if shown.command != "art" or not isinstance(inputs, dict) or not inputs.get("vision"):
        return None
    if services.vision is None:
        return None
    try:
        return await art_again(services, inputs)
    except ImageRefused as refused:
        raise CannotRefine(shown.id, f"{refused} I can't look at it again.") from None


def title_of(record: GenerationRecord) -> str:
    """The title an output was shown with (the original's, for a refinement)."""
    stored = record.prompt if isinstance(record.prompt, dict) else {}
    inputs = stored.get("inputs")
    inputs = inputs if isinstance(inputs, dict) else {}
    return str(inputs.get("title") or stored.get("title") or record.command.title())


def shown_title(record: GenerationRecord) -> str:
    """The title this very version was shown with (with its "· shorter", say)."""
    stored = record.prompt if isinstance(record.prompt, dict) else {}
    return str(stored.get("title") or title_of(record))


def position_of(record: GenerationRecord, alternatives: list[GenerationRecord]) -> int:
    """`record`'s 1-based place among its output's alternatives (the last if it is gone)."""
    ids = [a.id for a in alternatives]
    return ids.index(record.id) + 1 if record.id in ids else len(ids)


@dataclass(frozen=True, slots=True)
class Refinement:
    """A refinement accepted into the queue, and the version it will stand beside."""

    task: Task
    handle: GenerationHandle
    where: Where
    kind: str
    shown: GenerationRecord  # the version being refined
    position: int  # its place among the output's alternatives, 1-based
    total: int

    @property
    def output_id(self) -> int:
        assert self.shown.output_id is not None
        return self.shown.output_id


async def start(
    services: Services,
    shown: GenerationRecord,
    kind: str,
    where: Where,
    instruction: str = "",
) -> Refinement:
    """Queue a new alternative of `shown`'s output (`kind`: regenerate, longer, shorter, or
    remix with `instruction`); the caller streams and saves it with `run.write`.

    Raises `QueueRefused` (a limit, or the queue) or `CannotRefine`, and then nothing is queued.
    """
    if shown.command == "art" and kind != "regenerate":
        # the measurements are the program's: a rewrite could change a figure
        raise CannotRefine(
            shown.id, "An art critique's measurements stay as measured; 🔁 asks for new notes."
        )
    if kind == "regenerate":
        task = await look_again(services, shown) or stored_task(shown, services.settings)
    else:
        task = refine_task(
            services.settings, shown.command, shown.output, kind, instruction, title_of(shown)
        )
    if task is None or shown.output_id is None:
        raise CannotRefine(shown.id)
    await services.limits.admit(where.user_id, where.guild_id)
    request = services.request_for(task, where.user_id, where.guild_id)
    handle = services.queue_for(task).submit(request)
    try:
        alternatives = await services.store.alternatives(shown.output_id)
    except BaseException:
        handle.cancel()
        raise
    position = position_of(shown, alternatives)
    return Refinement(task, handle, where, kind, shown, position, len(alternatives))


async def replied_to(store: Store, message_id: int | None) -> GenerationRecord | None:
    """The shown version of the output in message `message_id`, when a reply to it asks for a
    rewrite: not for chat answers, which a reply continues as a conversation."""
    if message_id is None:
        return None
    output = await store.get_output_by_message(message_id)
    if output is None or output.chosen_id is None or output.command == "chat":
        return None
    return await store.get_generation(output.chosen_id)
