"""The picture that comes with an art critique: what was measured, to look at rather than read.

One PNG: the image with a rule-of-thirds grid and the centre of visual weight marked; beside
it, its value (greyscale) version and the histogram of its values with the darks and lights
shaded; below, the palette as swatches sized by their share, each with its hex code, and the
measured labels. Everything drawn comes from the image and `ImageFacts`; nothing is drawn that
was not measured.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bot.images.load import LoadedImage
from bot.images.measure import ImageFacts, luminance

SIDE = 360  # the image's longer side in the picture
GAP = 12
BAND = 64  # the palette band's height


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, TypeError):  # Pillow built without FreeType
        return ImageFont.load_default()


def _histogram(
    draw: ImageDraw.ImageDraw,
    values: np.ndarray,
    box: tuple[int, int, int, int],
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> None:
    """The histogram of `values` (the opaque pixels' luminance) in `box` (x, y, width,
    height): darks (below 25%) and lights (from 75%) shaded as the measurements count them."""
    x, y, width, height = box
    bins = np.histogram(values, bins=64, range=(0.0, 1.0))[0].tolist()
    top = max(bins) or 1
    draw.rectangle([x, y, x + width - 1, y + height], fill="#2b2d31")
    step = width / len(bins)
    for i, count in enumerate(bins):
        level = i / len(bins)
        colour = "#5865f2" if level < 0.25 else "#f0b232" if level >= 0.75 else "#b5bac1"
        bar = round(count / top * (height - 2))
        left = x + round(i * step)
        right = max(left, x + round((i + 1) * step) - 1)
        draw.rectangle([left, y + height - bar, right, y + height], fill=colour)
    draw.text((x, y + height + 2), "darks · lights", fill="#dddddd", font=font)


def analysis_png(measured: LoadedImage, facts: ImageFacts) -> bytes:
    """The picture for `facts` (the measurements of `measured`), drawn over that image."""
    values = luminance(measured.rgb)[measured.alpha >= 0.5]  # as `measure` reads them
    shown = measured.preview.copy()
    shown.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
    # transparency shown over a checkerboard, as image editors do
    board = Image.new("RGBA", shown.size, "#cccccc")
    squares = ImageDraw.Draw(board)
    for y in range(0, shown.height, 12):
        for x in range(0, shown.width, 12):
            if (x // 12 + y // 12) % 2:
                squares.rectangle([x, y, x + 11, y + 11], fill="#eeeeee")
    image = Image.alpha_composite(board, shown).convert("RGB")
    w, h = image.size
    # the value version by the same luminance the measurements use (Rec. 709), not Pillow's "L"
    lum = luminance(np.asarray(image, dtype=np.float32) / 255.0)
    grey = Image.fromarray((lum * 255).round().astype(np.uint8), "L").convert("RGB")
    grey.thumbnail((w // 2, h // 2))

    width = w + GAP + grey.width + 2 * GAP
    height = h + 2 * GAP + BAND + 44
    canvas = Image.new("RGB", (max(width, 320), height), "#1e1f22")
    canvas.paste(image, (GAP, GAP))
    canvas.paste(grey, (GAP + w + GAP, GAP))
    draw = ImageDraw.Draw(canvas)
    small = _font(12)
    draw.text((GAP + w + GAP, GAP + grey.height + 4), "value", fill="#dddddd", font=small)
    _histogram(draw, values, (GAP + w + GAP, GAP + grey.height + 24, grey.width, 60), small)

    # thirds grid, drawn twice (dark under light) so it shows on any picture
    for k in (1, 2):
        x = GAP + round(w * k / 3)
        y = GAP + round(h * k / 3)
        for colour, width_px in (("#000000", 3), ("#ffffff", 1)):
            draw.line([(x, GAP), (x, GAP + h)], fill=colour, width=width_px)
            draw.line([(GAP, y), (GAP + w, y)], fill=colour, width=width_px)
    cx, cy = GAP + facts.weight_x * w, GAP + facts.weight_y * h
    for radius, colour in ((10, "#000000"), (8, "#ff3b30")):
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=colour, width=3)
    draw.line([(cx - 4, cy), (cx + 4, cy)], fill="#ff3b30", width=2)
    draw.line([(cx, cy - 4), (cx, cy + 4)], fill="#ff3b30", width=2)

    # palette band: each swatch as wide as its share
    top = GAP + h + GAP
    band_width = canvas.width - 2 * GAP
    left: float = GAP
    for swatch in facts.palette:
        right = left + swatch.share * band_width
        box = [round(left), top, max(round(left), round(right) - 1), top + BAND]
        draw.rectangle(box, fill=swatch.hex)
        ink = "#000000" if swatch.value > 0.5 else "#ffffff"
        if right - left > 48:
            draw.text((left + 4, top + 4), swatch.hex, fill=ink, font=small)
            draw.text((left + 4, top + 20), f"{swatch.share:.0%}", fill=ink, font=small)
        left = right
    lines = (
        f"{facts.width}x{facts.height} ({facts.aspect}) · weight {facts.weight_place} · "
        f"{facts.symmetry_label}",
        f"{facts.key}, contrast {facts.contrast_label} · {facts.harmony} colour, "
        f"{facts.saturation_label} · detail {facts.detail_label}",
    )
    for k, line in enumerate(lines):
        draw.text((GAP, top + BAND + 6 + 16 * k), line, fill="#dddddd", font=small)
    out = io.BytesIO()
    canvas.save(out, "PNG", optimize=True)
    return out.getvalue()
