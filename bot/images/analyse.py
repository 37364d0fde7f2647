"""One call from posted bytes to what an art critique needs: `analyse(data)`."""

from __future__ import annotations

import io
from dataclasses import dataclass

from bot.images.load import load_image
from bot.images.measure import ImageFacts, measure
from bot.images.picture import analysis_png


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
        analysis_png(image.preview, facts),
        image.sha256,
        image.nbytes,
        image.format,
        working.getvalue(),
    )
