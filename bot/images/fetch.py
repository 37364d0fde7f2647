"""Downloading an image from an attachment URL that Discord gave, with a size cap.

Only URLs from Discord's own attachment payloads are passed here (a command's attachment, a
message's files, one stored with a critique); never a link from a message's text. The bytes
are counted while they stream, so a file over the cap is never held whole.
"""

from __future__ import annotations

import aiohttp

from bot.images.load import MAX_BYTES, ImageRefused

TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)


class ImageGone(ImageRefused):
    """The image is no longer where Discord kept it (its message deleted, its link expired)."""


async def download(url: str, *, limit: int = MAX_BYTES) -> bytes:
    """The file at `url`, at most `limit` bytes; raises `ImageRefused` (or `ImageGone` for a
    404 or 403) with the reason for the person."""
    data = bytearray()
    try:
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as session,
            session.get(url) as response,
        ):
            if response.status in (403, 404):
                raise ImageGone(
                    "That image is gone (its message was deleted, or its link expired)."
                )
            if response.status != 200:
                raise ImageRefused("I couldn't download that image. Please try again.")
            async for chunk in response.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > limit:
                    raise ImageRefused(
                        f"That image is over {limit // 2**20} MB; please post a smaller one."
                    )
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ImageRefused("I couldn't download that image. Please try again.") from exc
    return bytes(data)
