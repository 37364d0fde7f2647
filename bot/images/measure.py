"""What can be measured in a picture without knowing what it shows: palette, value, saturation,
colour harmony, where the visual weight sits against the thirds, symmetry, detail, shape.

Every figure comes from the pixels (`LoadedImage`), and every word a critique may use about
colour, value or composition is one of the labels here (`ImageFacts.labels`), so a sentence
can be checked against them (`bot.prompts.art`). Transparent pixels are left out of every
figure. Pure numpy and Pillow; a few milliseconds on a 512-pixel working copy.
"""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass
from math import gcd, hypot
from typing import Any

import numpy as np
from PIL import Image

from bot.images.load import LoadedImage

PALETTE_SIZE = 5
# Mean visual weight per pixel below which nothing stands out (a WebP of one flat colour
# measures 0.00003 from compression noise; a dark disc on 1% of a light grey field, 0.009).
FLAT = 0.002
# Hue families, by the upper end of their hue range in degrees (0 = red).
_HUES = (
    (15, "red"),
    (40, "orange"),
    (65, "yellow"),
    (160, "green"),
    (195, "teal"),
    (255, "blue"),
    (290, "purple"),
    (335, "pink"),
    (360, "red"),
)
NEUTRAL = {"black", "white", "grey"}
THIRDS = {
    "upper-left": (1 / 3, 1 / 3),
    "upper-right": (2 / 3, 1 / 3),
    "lower-left": (1 / 3, 2 / 3),
    "lower-right": (2 / 3, 2 / 3),
}
_RATIOS = ((1, 1), (5, 4), (4, 3), (3, 2), (16, 10), (16, 9), (2, 1), (21, 9), (3, 1))


@dataclass(frozen=True, slots=True)
class Swatch:
    hex: str
    share: float  # of the opaque pixels
    name: str  # "dark blue", "light grey"
    family: str  # "blue", "grey"
    hue: float  # degrees
    saturation: float  # 0..1
    value: float  # relative luminance 0..1


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """The measurements of one image, each with the label a sentence may use for it."""

    width: int
    height: int
    aspect: str  # "3:2", or "1.27:1" when no common ratio is near
    orientation: str  # landscape | portrait | square
    palette: tuple[Swatch, ...]
    value_mean: float
    value_low: float  # 5th percentile
    value_high: float  # 95th percentile
    contrast: float  # standard deviation of luminance
    contrast_label: str  # low | moderate | high
    key: str  # low-key (dark) | mid-key | high-key (light)
    darks: float  # share of pixels below 0.25
    lights: float  # share above 0.75
    saturation: float
    saturation_label: str  # muted | moderate | vivid
    harmony: str  # neutral | monochromatic | analogous | complementary | triadic | varied
    weight_x: float  # centre of visual weight, 0..1 from the left
    weight_y: float  # 0..1 from the top
    weight_place: str  # "near the lower-left thirds point", "near the centre", "left of centre"
    symmetry: float  # left-right mirror likeness, 0..1
    symmetry_label: str  # symmetric | nearly symmetric | asymmetric
    detail: float  # share of pixels on an edge
    detail_label: str  # sparse | moderate | busy
    transparent: float  # share of transparent pixels
    frames: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageFacts:
        """Facts `to_dict` stored; raises KeyError or TypeError if damaged."""
        values = dict(data)
        values["palette"] = tuple(Swatch(**s) for s in values["palette"])
        return cls(**values)

    @property
    def families(self) -> set[str]:
        """The colour families of the palette's swatches that cover at least 3% of it."""
        return {s.family for s in self.palette if s.share >= 0.03}


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Relative luminance (Rec. 709 weights on the sRGB values), 0..1."""
    return rgb[..., 0] * 0.2126 + rgb[..., 1] * 0.7152 + rgb[..., 2] * 0.0722


def colour_name(r: float, g: float, b: float) -> tuple[str, str, float, float]:
    """A plain name for an sRGB colour (0..1): its name, family, hue (degrees), saturation."""
    h, lightness, s = colorsys.rgb_to_hls(r, g, b)
    hue = h * 360
    if s < 0.15 or lightness < 0.08 or lightness > 0.95:
        if lightness < 0.15:
            return "black", "black", hue, s
        if lightness > 0.9:
            return "white", "white", hue, s
        shade = "dark grey" if lightness < 0.4 else "light grey" if lightness > 0.7 else "grey"
        return shade, "grey", hue, s
    family = next(name for top, name in _HUES if hue < top or top == 360)
    if family == "orange" and lightness < 0.35:
        family = "brown"
    tone = "dark " if lightness < 0.3 else "light " if lightness > 0.72 else ""
    muted = "muted " if s < 0.35 and not tone else ""
    return f"{tone}{muted}{family}", family, hue, s


def _aspect(width: int, height: int) -> tuple[str, str]:
    long, short = max(width, height), min(width, height)
    orientation = "square" if long / short < 1.05 else "landscape" if width > height else "portrait"
    ratio = long / short
    for a, b in _RATIOS:
        if abs(ratio - a / b) < 0.02 * ratio:
            x, y = (a, b) if width >= height else (b, a)
            return f"{x}:{y}", orientation
    k = gcd(width, height)
    if width // k <= 32 and height // k <= 32:
        return f"{width // k}:{height // k}", orientation
    return (f"{ratio:.2f}:1" if width >= height else f"1:{ratio:.2f}"), orientation


def _palette(rgb: np.ndarray, opaque: np.ndarray) -> tuple[Swatch, ...]:
    pixels = (rgb[opaque] * 255).round().astype(np.uint8)
    # a palette needs no more than ~20,000 pixels (k-means over all of a varied photo's
    # colours takes seconds); an even stride keeps every region represented
    pixels = pixels[:: max(1, len(pixels) // 20_000)]
    strip = Image.fromarray(pixels.reshape(1, -1, 3), "RGB")
    # k-means from a median-cut start: stable for the same image, and close to what a painter
    # would pick out, unlike a plain median cut that splits big flat areas
    quantized = strip.quantize(PALETTE_SIZE, method=Image.Quantize.MEDIANCUT, kmeans=3)
    counts = np.bincount(np.asarray(quantized).ravel(), minlength=PALETTE_SIZE)
    colours = np.asarray((quantized.getpalette() or [])[: PALETTE_SIZE * 3], dtype=np.float32)
    colours /= 255
    swatches = []
    for index in np.argsort(-counts):
        if counts[index] == 0:
            continue
        r, g, b = (float(c) for c in colours[index * 3 : index * 3 + 3])
        name, family, hue, sat = colour_name(r, g, b)
        swatches.append(
            Swatch(
                hex=f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}",
                share=float(counts[index] / counts.sum()),
                name=name,
                family=family,
                hue=round(hue, 1),
                saturation=round(sat, 3),
                value=round(float(luminance(np.array([r, g, b]))), 3),
            )
        )
    return tuple(swatches)


def _harmony(palette: tuple[Swatch, ...]) -> str:
    hues = [
        s.hue
        for s in palette
        if s.family not in NEUTRAL and s.saturation >= 0.25 and s.share >= 0.05
    ]
    if not hues:
        return "neutral"

    def apart(a: float, b: float) -> float:
        d = abs(a - b) % 360
        return min(d, 360 - d)

    spread = max((apart(a, b) for a in hues for b in hues), default=0.0)
    if spread <= 20:
        return "monochromatic"
    if spread <= 60:
        return "analogous"
    if any(150 <= apart(a, b) <= 210 for a in hues for b in hues) and len(hues) <= 3:
        return "complementary"
    if len(hues) >= 3 and all(any(100 <= apart(a, b) <= 140 for b in hues) for a in hues):
        return "triadic"
    return "varied"


def _place(x: float, y: float) -> str:
    name, (tx, ty) = min(THIRDS.items(), key=lambda item: hypot(x - item[1][0], y - item[1][1]))
    if hypot(x - tx, y - ty) <= 0.08:
        return f"near the {name} thirds point"
    if hypot(x - 0.5, y - 0.5) <= 0.06:
        return "near the centre"
    across = "left of" if x < 0.44 else "right of" if x > 0.56 else ""
    down = "above" if y < 0.44 else "below" if y > 0.56 else ""
    if across and down:
        return f"{down} and {across} centre"
    return f"{across or down} centre"


def measure(image: LoadedImage) -> ImageFacts:
    """Every measurement of `image` (see `ImageFacts`)."""
    rgb, alpha = image.rgb, image.alpha
    opaque = alpha >= 0.5
    value = luminance(rgb)
    seen = value[opaque]
    low, high = (float(v) for v in np.percentile(seen, [5, 95]))
    contrast = float(seen.std())
    mean = float(seen.mean())
    # chroma (max - min), not HSV's ratio: a near-black reddish pixel is not "vivid"
    sat = rgb.max(axis=-1) - rgb.min(axis=-1)
    saturation = float(sat[opaque].mean())

    # Edges: the gradient of luminance, on an edge where it is strong for this picture's scale.
    gy, gx = np.gradient(value)
    gradient = np.hypot(gx, gy) * opaque
    edges = gradient > 0.08
    detail = float(edges[opaque].mean())

    # Visual weight: what draws the eye — departures from the picture's typical value and
    # saturation (its median: a plain background weighs nothing), and edges — with its centre
    # of mass.
    departure = np.abs(value - float(np.median(seen))) + 0.5 * np.abs(
        sat - float(np.median(sat[opaque]))
    )
    weight = (departure + 2.0 * gradient) * opaque
    total = float(weight.sum())
    h, w = value.shape
    # nothing stands out (a flat field, give or take compression noise): no centre to speak of
    flat = total < FLAT * max(1, int(opaque.sum()))
    if not flat:
        ys, xs = np.mgrid[0:h, 0:w]
        wx = float((weight * (xs + 0.5)).sum() / total / w)
        wy = float((weight * (ys + 0.5)).sum() / total / h)
    else:
        wx = wy = 0.5

    # Left-right symmetry of what stands out from the background: 1 when the mirror image is
    # the same, 0 when nothing that stands out has its twin across the middle.
    both = opaque & opaque[:, ::-1]
    mirrored = departure[:, ::-1]
    content = float((departure + mirrored)[both].sum())
    unlike = float(np.abs(value - value[:, ::-1])[both].sum())
    symmetry = max(0.0, 1.0 - unlike / content) if content > 1e-6 and not flat else 1.0

    aspect, orientation = _aspect(image.width, image.height)
    palette = _palette(rgb, opaque)
    return ImageFacts(
        width=image.width,
        height=image.height,
        aspect=aspect,
        orientation=orientation,
        palette=palette,
        value_mean=round(mean, 3),
        value_low=round(low, 3),
        value_high=round(high, 3),
        contrast=round(contrast, 3),
        contrast_label="low" if contrast < 0.1 else "high" if contrast > 0.25 else "moderate",
        key="low-key" if mean < 0.35 else "high-key" if mean > 0.65 else "mid-key",
        darks=round(float((seen < 0.25).mean()), 3),
        lights=round(float((seen > 0.75).mean()), 3),
        saturation=round(saturation, 3),
        saturation_label="muted"
        if saturation < 0.15
        else "vivid"
        if saturation > 0.45
        else "moderate",
        harmony=_harmony(palette),
        weight_x=round(wx, 3),
        weight_y=round(wy, 3),
        weight_place="evenly spread (nothing stands out)" if flat else _place(wx, wy),
        symmetry=round(symmetry, 3),
        symmetry_label="symmetric"
        if symmetry >= 0.9
        else "nearly symmetric"
        if symmetry >= 0.75
        else "asymmetric",
        detail=round(detail, 3),
        detail_label="sparse" if detail < 0.03 else "busy" if detail > 0.15 else "moderate",
        transparent=round(float(1 - opaque.mean()), 3),
        frames=image.frames,
    )
