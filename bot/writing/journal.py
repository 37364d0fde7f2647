"""Journalled requests after a restart: what becomes of each, and the task it runs again.

A request saved before the crash is only shown (its answer is never written twice); one
too old, or whose runs the bot kept dying in, gets an honest note instead of an answer; the
rest run again, rebuilt from what the journal kept: a story turn from the story as it is now,
anything else from its command's inputs (or its prompt as it was).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from enum import StrEnum

from bot.images.load import ImageRefused
from bot.services import Services
from bot.store import RequestRecord
from bot.writing.art import art_again
from bot.writing.refine import shown_title
from bot.writing.run import Task, Where, Written
from bot.writing.story import StoryWriter
from bot.writing.tasks import task_again

log = logging.getLogger(__name__)


class Verdict(StrEnum):
    SHOW = "show"  # its answer was saved: show it
    RUN = "run"  # run it again
    TOO_OLD = "too old"  # past RESUME_MAX_AGE: the note, and a button to ask again
    GAVE_UP = "gave up"  # the model was started on it RESUME_MAX_ATTEMPTS times (if set)
    DAMAGED = "damaged"  # its stored task cannot be read


def verdict(
    row: RequestRecord, *, max_age: timedelta, max_attempts: int, now: datetime | None = None
) -> Verdict:
    """What a restart does with an unfinished request."""
    if row.task is None:
        return Verdict.DAMAGED
    if row.state == "saved":
        return Verdict.SHOW  # the answer exists, however old: showing it costs nothing
    if row.age(now) > max_age:
        return Verdict.TOO_OLD
    if max_attempts and row.attempts >= max_attempts:  # 0: no limit
        return Verdict.GAVE_UP
    return Verdict.RUN


def where_of(row: RequestRecord) -> Where:
    return Where(row.user_id, row.channel_id, row.guild_id)


def story_of(row: RequestRecord) -> int | None:
    """The story a request writes the next part of (not a refinement of a part), if any."""
    if row.command != "story" or row.refine_kind is not None or row.task is None:
        return None  # a refinement of a part has a kind (regenerate, longer...)
    inputs = row.task.get("inputs")
    story_id = inputs.get("story_id") if isinstance(inputs, dict) else None
    return story_id if isinstance(story_id, int) else None


async def task_for(services: Services, writer: StoryWriter, row: RequestRecord) -> Task | None:
    """The task a journalled request runs again; None when it cannot be rebuilt (or its story
    has ended meanwhile)."""
    if row.task is None:
        return None
    story_id = story_of(row)
    if story_id is not None:
        story = await services.stories.get(story_id)
        if story is None or story.status != "active":
            return None
        inputs = row.task.get("inputs") or {}
        length = inputs.get("length")
        character = inputs.get("as")
        return await writer.next_part(
            story,
            where_of(row),
            inputs.get("direction"),
            length if isinstance(length, str) else "medium",
            character if isinstance(character, str) else None,
        )
    params = row.task.get("params")
    inputs = row.task.get("inputs")
    if row.command == "art" and isinstance(inputs, dict):
        # its picture was never stored: read the image again for it (and for a vision model)
        try:
            return await art_again(services, inputs)
        except ImageRefused as refused:
            log.info("request %s: its image cannot be read again (%s)", row.id, refused)
    return task_again(
        row.command, row.task, params if isinstance(params, dict) else {}, services.settings
    )


async def saved_answer(services: Services, row: RequestRecord) -> Written | None:
    """The answer a request saved before the restart; None if it is gone since (deleted)."""
    record = (
        await services.store.get_generation(row.generation_id)
        if row.generation_id is not None
        else None
    )
    if record is None or record.output_id is None:
        return None
    stored = record.prompt if isinstance(record.prompt, dict) else {}
    note = stored.get("note")
    return Written(
        record.output_id,
        record.id,
        record.output,
        shown_title(record),
        record.model,
        record.generation_ms / 1000,
        note if isinstance(note, str) else None,
    )
