"""How answers look on Discord: embeds, long texts cut at a boundary and attached as a file."""

from __future__ import annotations

import io
from typing import Any

import discord

from bot.store import GenerationRecord
from bot.writing.refine import shown_title
from bot.writing.run import Written

EMBED_COLOUR = discord.Colour(0x7B68EE)
EMBED_TEXT_LIMIT = 4000  # Discord allows 4096 in a description; room for the notes
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


def render_embed(
    title: str,
    text: str,
    *,
    model: str,
    seconds: float,
    generation_id: int,
    position: int = 1,
    total: int = 1,
    note: str | None = None,
) -> discord.Embed:
    """An answer as an embed; a text too long for one is cut at a paragraph (or word) boundary,
    with a note that the whole text is attached (see `attachments_for`). `note` (what the text
    lacks) is shown under the text, in italics, never as part of it."""
    shown = text
    if len(text) > EMBED_TEXT_LIMIT:
        shown = split_for_discord(text, EMBED_TEXT_LIMIT - 80)[0] + f"\n\n{ATTACHED_NOTE}"
    if note:
        shown = f"{shown}\n\n*{note[:200]}*"
    embed = discord.Embed(title=title[:256], description=shown, colour=EMBED_COLOUR)
    counter = f" · {position}/{total}" if total > 1 else ""
    embed.set_footer(text=f"{model} · {seconds:.1f} s · #{generation_id}{counter}")
    return embed


def attachments_for(text: str, generation_id: int) -> list[discord.File]:
    """The whole text as a file, when an embed can show only its start."""
    if len(text) <= EMBED_TEXT_LIMIT:
        return []
    return [discord.File(io.BytesIO(text.encode()), filename=f"llmos-{generation_id}.md")]


# Commands whose answers come with a picture the message keeps across versions.
PICTURED = {"art"}


def attachment_edits(
    text: str, generation_id: int, command: str, picture: bytes | None = None
) -> dict[str, Any]:
    """The `attachments` edit for showing a version: the whole text when it is cut, and
    `picture` (PNG) if given; nothing at all (so the message keeps what it shows) for a
    pictured command's version with neither."""
    files = attachments_for(text, generation_id)
    if picture is not None:
        name = f"llmos-art-{generation_id}.png"
        files.append(discord.File(io.BytesIO(picture), filename=name))
    return {"attachments": files} if files or command not in PICTURED else {}


def written_embed(written: Written, position: int = 1, total: int = 1) -> discord.Embed:
    """A new answer as the `position`-th of `total` alternatives."""
    return render_embed(
        written.title,
        written.text,
        model=written.model,
        seconds=written.seconds,
        generation_id=written.generation_id,
        position=position,
        total=total,
        note=written.note,
    )


def stored_embed(record: GenerationRecord, position: int, total: int) -> discord.Embed:
    """A stored alternative, as it was shown."""
    stored = record.prompt if isinstance(record.prompt, dict) else {}
    note = stored.get("note")
    return render_embed(
        shown_title(record),
        record.output,
        model=record.model,
        seconds=record.generation_ms / 1000,
        generation_id=record.id,
        position=position,
        total=total,
        note=note if isinstance(note, str) else None,
    )
