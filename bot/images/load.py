"""Reading an image someone posted, safely: whatever the bytes are, the answer is a small RGB
picture to measure, or `ImageRefused` with a sentence for the person who posted it.

Promises: the type is found by decoding (PNG, JPEG, WebP, GIF, BMP), never from the file name;
the decoded size is checked from the header before any pixel is decoded (decompression bombs),
and Pillow's own bomb check stays on; a truncated or corrupt file, a text file named `.png`, an
image far too long and thin are refused; an animated image is read at its first frame; the
EXIF orientation is applied; 16-bit, CMYK, palette, greyscale and transparent images come out
as RGB with an alpha mask. Large images are decoded at reduced size where the format allows
(JPEG's DCT scaling), so a 12-megapixel photo is read in a fraction of a second. Blocking: call
it in a thread.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
MAX_BYTES = 20 * 2**20  # what is downloaded at most
MAX_PIXELS = 50_000_000  # decoded width x height (a 12 MP photo is 12_000_000)
MAX_ASPECT = 12.0  # longer side / shorter side
MIN_SIDE = 8  # pixels; below this there is no composition to speak of
WORKING_SIDE = 512  # measurements are made on a copy this big at most


class ImageRefused(ValueError):
    """The file cannot be critiqued; the message says why, for the person who posted it."""


@dataclass(frozen=True, slots=True)
class LoadedImage:
    """An image ready to measure: `rgb` (H x W x 3 floats in 0..1, at most `WORKING_SIDE` on its
    longer side) and `alpha` (H x W, 0..1), with what is known of the original."""

    rgb: np.ndarray
    alpha: np.ndarray
    width: int  # the original's, after EXIF orientation
    height: int
    format: str
    frames: int
    sha256: str
    nbytes: int
    preview: Image.Image  # RGBA, for the picture drawn over it


def load_image(data: bytes) -> LoadedImage:
    """Decode `data` (see the module's promises); raises `ImageRefused`."""
    if len(data) > MAX_BYTES:
        limit = MAX_BYTES // 2**20
        raise ImageRefused(f"That image is over {limit} MB; please post a smaller one.")
    if not data:
        raise ImageRefused("That file is empty.")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            # Pillow warns (and raises past twice the limit) for bombs; the check below is ours
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageRefused(
                    f"That image is {width}x{height} pixels; I read images up to "
                    f"{MAX_PIXELS // 1_000_000} megapixels."
                )
            if min(width, height) < MIN_SIDE:
                raise ImageRefused(f"That image is {width}x{height}: too small for me to judge.")
            if max(width, height) / min(width, height) > MAX_ASPECT:
                raise ImageRefused(
                    f"That image is {width}x{height}: too long and thin for me to judge its "
                    "composition."
                )
            fmt = image.format or "?"
            frames = int(getattr(image, "n_frames", 1) or 1)
            if frames > 1:
                image.seek(0)
            if fmt == "JPEG":
                # DCT scaling: decode at 1/2, 1/4 or 1/8 size, still at least twice the working size
                image.draft("RGB", (WORKING_SIDE * 2, WORKING_SIDE * 2))
            image.load()
            orientation = image.getexif().get(0x0112, 1)
            image = ImageOps.exif_transpose(image)
    except ImageRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRefused(
            f"That image has far too many pixels; I read images up to "
            f"{MAX_PIXELS // 1_000_000} megapixels."
        ) from None
    except UnidentifiedImageError:
        raise ImageRefused(
            "I can't read that file as an image (I read PNG, JPEG, WebP, GIF and BMP)."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated, corrupt
        raise ImageRefused(
            "That image looks damaged or cut short, so I can't read it. Try saving it again."
        ) from exc
    if orientation in (5, 6, 7, 8):  # the EXIF turn swapped the sides
        width, height = height, width
    if image.mode in ("RGB", "RGBA", "L", "LA"):
        image.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BOX)  # before converting
    rgba = _as_rgba(image)
    rgba.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BOX)
    array = np.asarray(rgba, dtype=np.float32) / 255.0
    alpha = array[..., 3]
    if float(alpha.max()) < 0.5:
        raise ImageRefused("That image is fully transparent: there is nothing to look at.")
    return LoadedImage(
        rgb=array[..., :3],
        alpha=alpha,
        width=width,
        height=height,
        format=fmt,
        frames=frames,
        sha256=digest,
        nbytes=len(data),
        preview=rgba,
    )


def _as_rgba(image: Image.Image) -> Image.Image:
    """Any mode as RGBA: deep greyscale (16-bit, 32-bit, float) on its own absolute scale (a
    dark 16-bit image stays dark), CMYK and palettes converted by Pillow, transparency kept."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # shrunk first: a 50-megapixel deep image would be 400 MB as float64
        image.thumbnail((WORKING_SIDE * 2, WORKING_SIDE * 2), Image.Resampling.NEAREST)
        values = np.asarray(image, dtype=np.float32)
        if image.mode == "F":
            full = 1.0 if float(values.max(initial=0.0)) <= 1.0 else 255.0
        else:  # 16-bit, or 32-bit integers holding 16-bit values (Pillow's "I" for 16-bit PNG)
            full = 65535.0 if float(values.max(initial=0.0)) > 255 else 255.0
        scaled = np.clip(values / full * 255.0, 0, 255)
        image = Image.fromarray(scaled.round().astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode == "CMYK":
        image = image.convert("RGB")
    return image.convert("RGBA")
