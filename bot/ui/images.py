"""Images on Discord: which attachments to look at, and reading one safely.

Only an attachment's own URL (from Discord's payload) is ever fetched, never a link from a
message's text. The size Discord reports is checked before downloading (`too_big`), and the
download itself stops at the cap (`bot.images.fetch`).
"""

from __future__ import annotations

import discord

from bot.generation.types import SamplingParams
from bot.images.analyse import read_image
from bot.images.fetch import download
from bot.images.load import MAX_BYTES, ImageRefused
from bot.services import Services
from bot.writing.art import critique_of
from bot.writing.run import Task


def image_attachments(message: discord.Message) -> list[discord.Attachment]:
    """The attachments of `message` that may be images: those Discord marks as images, and any
    file it does not type (the bytes decide, not the name)."""
    return [
        a
        for a in message.attachments
        if a.content_type is None or a.content_type.startswith("image/")
    ]


def too_big(attachment: discord.Attachment) -> str | None:
    """Why `attachment` is refused before downloading it, if it is."""
    if attachment.size > MAX_BYTES:
        return (
            f"That image is {attachment.size / 2**20:.1f} MB; I look at images up to "
            f"{MAX_BYTES // 2**20} MB."
        )
    return None


async def read_attachment(attachment: discord.Attachment) -> bytes:
    """The attachment's bytes, at most `MAX_BYTES`; raises `ImageRefused` with the reason."""
    reason = too_big(attachment)
    if reason:
        raise ImageRefused(reason)
    return await download(attachment.url)


async def art_critique(
    services: Services,
    attachment: discord.Attachment,
    source: discord.Message | None,
    focus: str,
    tone: str,
    channel: SamplingParams | None,
) -> Task:
    """The art critique task for `attachment` (posted with `source`, if it came with a message):
    downloaded, then read, measured and drawn in a thread, off the event loop. Raises
    `ImageRefused` with the reason for the person."""
    found = await read_image(await read_attachment(attachment))
    image = {
        "sha256": found.sha256,
        "bytes": found.nbytes,
        "format": found.format,
        "width": found.facts.width,
        "height": found.facts.height,
        "filename": attachment.filename[:100],
        # Discord's own link, for a vision model to look again on 🔁 (it may expire; then the
        # bot says the image is gone)
        "url": attachment.url,
        "attachment_id": attachment.id,
        "message_id": source.id if source is not None else None,
        "channel_id": source.channel.id if source is not None else None,
    }
    return critique_of(services, found, image, focus, tone, channel, vision=True)
