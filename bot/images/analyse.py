"""One call from posted bytes to what an art critique needs: `analyse(data)`, blocking, or
`read_image(data)` off the event loop."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from dataclasses import dataclass

from bot.images.load import ImageRefused, load_image
from bot.images.measure import ImageFacts, measure
from bot.images.picture import analysis_png

log = logging.getLogger(__name__)
# At most two images decoded at once: each may take a few hundred MB while it is read.
_READING = threading.BoundedSemaphore(2)


@dataclass(frozen=True, slots=True)
class Analysis:
    facts: ImageFacts
    picture: bytes  # PNG: the measurements drawn (`analysis_png`)
    sha256: str
    nbytes: int
    format: str
    working: bytes  # PNG: the decoded image at working size, what a vision model is shown


def analyse(data: bytes) -> Analysis:
    """Read, measure and draw `data` (blocking, well under a second for a 12 MP photo on two
    cores: run it in a thread); raises `ImageRefused` with the reason for the person."""
    image = load_image(data)
    facts = measure(image)
    # a vision model sees the decoded copy, never the posted bytes: whatever the file held,
    # what reaches the model's image processor is a plain PNG of at most 512 pixels
    working = io.BytesIO()
    image.preview.save(working, "PNG")
    return Analysis(
        facts,
        analysis_png(image, facts),
        image.sha256,
        image.nbytes,
        image.format,
        working.getvalue(),
    )


def _analyse_in_turn(data: bytes) -> Analysis:
    with _READING:
        return analyse(data)


async def read_image(data: bytes) -> Analysis:
    """`analyse(data)` in a thread, two images at most at once; anything a strange file trips
    besides `ImageRefused` is logged and raised as `ImageRefused` too, said plainly."""
    try:
        return await asyncio.to_thread(_analyse_in_turn, data)
    except ImageRefused:
        raise
    except Exception as exc:
        log.warning("could not analyse an image of %d bytes: %r", len(data), exc)
        raise ImageRefused("I couldn't read that image. Try saving it again as a PNG.") from exc
