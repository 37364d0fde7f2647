"""An art critique's picture, looked at again: for 🔁 with a vision model, and for a request
resumed after a restart (whose attached picture was never stored).

Promises: the image is downloaded again only from the Discord link stored with the critique,
checked to be the same image by its SHA-256, and read in a thread; `ImageRefused` (or its
`ImageGone`) says why when it cannot be, in words for the person.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bot.generation.types import SamplingParams
from bot.images.analyse import Analysis, read_image
from bot.images.fetch import ImageGone, download
from bot.images.load import ImageRefused
from bot.services import Services
from bot.writing.run import Task
from bot.writing.tasks import art_task

# The download's time limit when the image is looked at again.
LOOK_AGAIN_S = 20.0


def critique_of(
    services: Services,
    found: Analysis,
    image: dict[str, Any],
    focus: str,
    tone: str,
    channel: SamplingParams | None,
    *,
    vision: bool,
) -> Task:
    """The art critique task for an analysed image, with its picture; shown to the vision model
    when `vision` is asked for and one is configured."""
    seeing = vision and services.vision is not None
    return art_task(
        services.settings,
        found.facts,
        image,
        focus,
        tone,
        channel,
        picture=found.picture,
        seen=found.working if seeing else None,
    )


async def look_again(image: dict[str, Any]) -> Analysis:
    """The stored `image` (a critique's `inputs["image"]`) read again; raises `ImageRefused`."""
    if not image.get("url"):
        raise ImageGone("That image is gone.")
    try:
        data = await asyncio.wait_for(download(str(image["url"])), LOOK_AGAIN_S)
    except TimeoutError:
        raise ImageRefused("The image took too long to fetch again; try once more.") from None
    found = await read_image(data)
    if found.sha256 != image.get("sha256"):
        raise ImageGone("That image has changed since.")
    return found


async def art_again(services: Services, inputs: dict[str, Any]) -> Task:
    """The critique that `inputs` (stored with an art critique) asked for, with its picture and,
    if a vision model wrote it and one is still configured, shown to the vision model again.
    Raises `ImageRefused` when the image cannot be read again."""
    stored_image = inputs.get("image")
    image: dict[str, Any] = stored_image if isinstance(stored_image, dict) else {}
    found = await look_again(image)
    stored_channel = inputs.get("channel")
    channel = SamplingParams.from_dict(stored_channel) if isinstance(stored_channel, dict) else None
    return critique_of(
        services,
        found,
        image,
        str(inputs.get("focus") or "overall"),
        str(inputs.get("tone") or "balanced"),
        channel,
        vision=bool(inputs.get("vision")),
    )
