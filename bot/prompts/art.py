"""Art critique prompts, and the check that keeps a critique to what was measured.

The program measures the picture (`bot.images.measure`) and states the measurements itself, as
measurements. The model writes the advice: one note per measured topic, from that topic's
measurements only, or (with a vision model) a critique that also sees the picture. A sentence
is kept only if it holds up against the measurements (`supported`): every colour it names is in
the palette, every claim of contrast, key, saturation, harmony, symmetry or placement agrees
with the measured label, and without a vision model it claims nothing about what the picture
shows or how it was made, which nothing measured can back.
"""

from __future__ import annotations

import re

from bot.generation.types import Message, Prompt
from bot.images.measure import ImageFacts

FOCUS = (
    "overall",
    "composition",
    "colour",
    "light and value",
    "drawing and anatomy",
    "perspective",
    "mood",
    "technique",
)
TONES = {
    "gentle": "Be warm and encouraging; frame every weakness as an opportunity.",
    "balanced": "Be honest and kind in equal measure.",
    "blunt": "Be direct and brief; skip the compliments that are not earned.",
}
# The measured topics each focus draws on, in order. Anatomy, perspective and mood are not
# measurable from pixels alone: their nearest measured topics stand in, and the reply says so.
TOPICS: dict[str, tuple[str, ...]] = {
    "overall": ("composition", "colour", "value", "detail"),
    "composition": ("composition", "value", "detail"),
    "colour": ("colour", "value"),
    "light and value": ("value", "colour"),
    "drawing and anatomy": ("detail", "value"),
    "perspective": ("composition", "detail"),
    "mood": ("colour", "value"),
    "technique": ("detail", "colour"),
}
UNMEASURED = {"drawing and anatomy", "perspective", "mood"}

SYSTEM = (
    "You are LLMOS, an art teacher for a community of artists. You give short, practical "
    "advice about a picture from measurements of it. You cannot see the picture: never say "
    "what it shows, only what to try."
)
VISION_SYSTEM = (
    "You are LLMOS, an art teacher for a community of artists. You see the picture and "
    "measurements of it. You give a short critique in two parts, Strengths and Suggestions; "
    "what you say about colour, value and composition never contradicts the measurements."
)


def _pct(x: float) -> str:
    return f"{x:.0%}"


def measured_lines(facts: ImageFacts) -> dict[str, str]:
    """Each measured topic as one plain sentence of figures, as the program states them."""
    colours = ", ".join(
        f"{s.name} {s.hex} {_pct(s.share)}" for s in facts.palette if s.share >= 0.01
    )
    frames = (
        f" Animated ({facts.frames} frames): the first frame was measured."
        if facts.frames > 1
        else ""
    )
    clear = f"; {_pct(facts.transparent)} transparent" if facts.transparent >= 0.01 else ""
    return {
        "composition": (
            f"visual weight {facts.weight_place} ({_pct(facts.weight_x)} across, "
            f"{_pct(facts.weight_y)} down); left-right {facts.symmetry_label} "
            f"({_pct(facts.symmetry)}); {facts.orientation}, {facts.aspect}, "
            f"{facts.width}x{facts.height}{clear}.{frames}"
        ),
        "colour": (
            f"palette {colours}; {facts.harmony} harmony; saturation "
            f"{facts.saturation_label} ({_pct(facts.saturation)})."
        ),
        "value": (
            f"{facts.key}, mean {_pct(facts.value_mean)}, range {_pct(facts.value_low)} "
            f"to {_pct(facts.value_high)}; contrast {facts.contrast_label}; darks "
            f"{_pct(facts.darks)}, lights {_pct(facts.lights)}."
        ),
        "detail": (f"{facts.detail_label} ({facts.detail:.1%} of the picture on an edge)."),
    }


def note_prompt(facts: ImageFacts, topic: str, focus: str, tone: str) -> Prompt:
    """One sentence of advice on `topic`, from that topic's measurements only."""
    fact = measured_lines(facts)[topic]
    ask = (
        f"Measured ({topic}): {fact}\n{TONES[tone]} Focus: {focus}. In one sentence, tell the "
        f"artist one thing to try about the {topic}, based only on these measurements."
    )
    messages = (
        Message("system", SYSTEM),
        Message(
            "user",
            "Measured (value): low-key, mean 22%, range 5% to 48%; contrast moderate; "
            "darks 61%, lights 0%.\nBe honest and kind in equal measure. Focus: overall. In one "
            "sentence, tell the artist one thing to try about the value, based only on these "
            "measurements.",
        ),
        Message(
            "assistant",
            "Try a few small highlights: with no lights at all, the eye has nowhere to land.",
        ),
        Message("user", ask),
    )
    # the answer starts "Try": advice by construction, not a description of a picture the
    # model cannot see
    return Prompt(messages=messages, plain=f"{fact}\nAdvice on the {topic}:", prefix="Try")


def vision_prompt(facts: ImageFacts, focus: str, tone: str, image: bytes) -> Prompt:
    """A critique by a vision model that sees `image` beside its measurements."""
    lines = "\n".join(f"- {line}" for line in measured_lines(facts).values())
    ask = (
        f"Measurements of this picture:\n{lines}\n\nFocus: {focus}. {TONES[tone]} Say what "
        "works and what to try, two or three points each, one sentence a point; speak of "
        "what the picture shows."
    )
    messages = (Message("system", VISION_SYSTEM), Message("user", ask))
    return Prompt(
        messages=messages,
        plain=f"Critique of a picture.\n{lines}\n\n",
        prefix="Strengths:\n-",
        images=(image,),
    )


# Colour words, by the palette family that backs them.
_COLOURS = {
    "red": {"red"},
    "crimson": {"red"},
    "scarlet": {"red"},
    "maroon": {"red"},
    "orange": {"orange", "brown"},
    "yellow": {"yellow"},
    "gold": {"yellow", "orange"},
    "golden": {"yellow", "orange"},
    "green": {"green", "teal"},
    "olive": {"green", "yellow"},
    "teal": {"teal", "green", "blue"},
    "turquoise": {"teal"},
    "cyan": {"teal", "blue"},
    "blue": {"blue", "teal"},
    "navy": {"blue"},
    "indigo": {"blue", "purple"},
    "purple": {"purple"},
    "violet": {"purple"},
    "lavender": {"purple", "pink"},
    "magenta": {"pink", "purple"},
    "pink": {"pink", "red"},
    "brown": {"brown", "orange"},
    "beige": {"brown", "orange", "white", "grey"},
    "tan": {"brown", "orange"},
    "black": {"black"},
    "white": {"white"},
    "grey": {"grey"},
    "gray": {"grey"},
    "silver": {"grey", "white"},
    "coral": {"red", "orange", "pink"},
    "salmon": {"pink", "orange", "red"},
    "peach": {"orange", "pink"},
    "amber": {"orange", "yellow"},
    "ochre": {"orange", "yellow", "brown"},
    "rust": {"orange", "brown", "red"},
    "burgundy": {"red"},
    "ruby": {"red"},
    "rose": {"pink", "red"},
    "plum": {"purple"},
    "mauve": {"purple", "pink"},
    "lilac": {"purple"},
    "emerald": {"green"},
    "jade": {"green", "teal"},
    "mint": {"green", "teal"},
    "lime": {"green", "yellow"},
    "azure": {"blue"},
    "cobalt": {"blue"},
    "sapphire": {"blue"},
    "ivory": {"white", "yellow"},
    "cream": {"white", "yellow"},
}
# Claims about a measured quality: the pattern, and the labels under which it is true.
_CLAIMS: tuple[tuple[re.Pattern[str], str, set[str]], ...] = tuple(
    (re.compile(pattern, re.I), field, labels)
    for pattern, field, labels in (
        (
            r"\b(high|strong|stark|dramatic|sharp)\s+(\w+\s+)?contrast"
            r"|\bcontrast\s+(is|looks|feels)\s+(very\s+|too\s+)?(high|strong|stark)",
            "contrast_label",
            {"high"},
        ),
        (
            r"\b(low|weak|little|soft|flat)\s+(\w+\s+)?contrast"
            r"|\bcontrast\s+(is|looks|feels)\s+(very\s+|too\s+)?(low|weak|soft|flat)",
            "contrast_label",
            {"low"},
        ),
        (r"\bhigh[- ]key\b", "key", {"high-key"}),
        (r"\blow[- ]key\b", "key", {"low-key"}),
        (
            r"\b(vivid|vibrant|saturated|intense colou?rs?)\b",
            "saturation_label",
            {"vivid"},
        ),
        (r"\b(muted|desaturated|dull|washed[- ]out)\b", "saturation_label", {"muted"}),
        (r"\bcomplementary\b", "harmony", {"complementary"}),
        (r"\banalogous\b", "harmony", {"analogous"}),
        (r"\bmonochrom", "harmony", {"monochromatic", "neutral"}),
        (r"\btriadic\b", "harmony", {"triadic"}),
        (
            r"\b(is|are|looks?|feels?)\s+(perfectly\s+|very\s+)?symmetric",
            "symmetry_label",
            {"symmetric", "nearly symmetric"},
        ),
        (
            r"\b(is|are|looks?|feels?)\s+(very\s+)?asymmetric",
            "symmetry_label",
            {"asymmetric", "nearly symmetric"},
        ),
        (r"\b(busy|cluttered)\b", "detail_label", {"busy"}),
        (r"\btoo dark\b", "key", {"low-key"}),
        (r"\btoo (bright|light|pale)\b", "key", {"high-key"}),
        (r"\b(sparse|minimal|empty)\b", "detail_label", {"sparse"}),
    )
)
_PLACED_CENTRE = re.compile(
    r"\b(is|are|sits?)\s+(right\s+)?(in the (centre|center|middle)|centred|centered)\b", re.I
)
# What a picture shows or how it was made: nothing measured backs it without a vision model.
_SUBJECT = re.compile(
    r"\b(?:people|person|man|men|woman|women|girl|boy|child|children|face|faces|eyes|hair|"
    r"hands?|arms?|legs?|body|figures?|characters?|portrait|cat|cats|dog|dogs|bird|birds|horse|"
    r"animal|animals|tree|trees|sky|sun|moon|clouds?|mountains?|sea|ocean|water|river|lake|"
    r"waves?|flowers?|grass|forest|field|beach|snow|rain|house|building|city|street|road|car|"
    r"boat|window|door|table|chair|book|landscape|sunset|sunrise|night|"
    r"watercolou?rs?|oil paints?|acrylics?|pencils?|charcoal|ink|pastels?|brush ?strokes?|canvas|"
    r"camera|photos?|photographs?|lens)\b",
    re.I,
)


# Claims of missing lights or darks: true only when the measured share is small.
_NO_LIGHTS = re.compile(
    r"\b(no|little|not enough|lacks?|lack of|missing)\s+(light|lights|highlights|brightness)\b",
    re.I,
)
_NO_DARKS = re.compile(
    r"\b(no|little|not enough|lacks?|lack of|missing)\s+(dark|darks|shadows?|depth)\b", re.I
)


# Where something is said to sit: checked against the centre of visual weight.
_PLACED = re.compile(
    r"\b(?:is|are|sits?|placed|weighted|lies|rests?)\s+(?:\w+\s+){0,2}?(?:on|to|in|at)\s+"
    r"the\s+(left|right|top|bottom|upper|lower)\b",
    re.I,
)
_SIDES = {
    "left": lambda f: f.weight_x < 0.44,
    "right": lambda f: f.weight_x > 0.56,
    "top": lambda f: f.weight_y < 0.44,
    "upper": lambda f: f.weight_y < 0.44,
    "bottom": lambda f: f.weight_y > 0.56,
    "lower": lambda f: f.weight_y > 0.56,
}


def supported(sentence: str, facts: ImageFacts, *, sees_picture: bool = False) -> bool:
    """Whether `sentence` claims only what the measurements back (see the module docstring)."""
    for side in _PLACED.findall(sentence):
        if not _SIDES[side.lower()](facts):
            return False
    if _NO_LIGHTS.search(sentence) and facts.lights >= 0.05:
        return False
    if _NO_DARKS.search(sentence) and facts.darks >= 0.05:
        return False
    words = re.findall(r"[a-z]+", sentence.lower())
    families = facts.families
    for word in words:
        backing = _COLOURS.get(word)
        if backing is not None and not backing & families:
            return False
    for pattern, field, labels in _CLAIMS:
        if pattern.search(sentence) and getattr(facts, field) not in labels:
            return False
    if _PLACED_CENTRE.search(sentence) and "centre" not in facts.weight_place:
        return False
    return sees_picture or not _SUBJECT.search(sentence)


# Words by which a note is about its topic (stems: "saturat" finds saturated and saturation).
_TOPIC_WORDS = {
    "composition": (
        "weight",
        "balance",
        "third",
        "centre",
        "center",
        "symmetr",
        "place",
        "placing",
        "move",
        "frame",
        "focal",
        "space",
        "eye",
        "lead",
        "corner",
        "edge",
        "crop",
        "diagonal",
    ),
    "colour": (
        "colour",
        "color",
        "hue",
        "palette",
        "warm",
        "cool",
        "saturat",
        "complement",
        "accent",
        "tint",
        "shade",
        "vivid",
        "muted",
        "harmon",
    ),
    "value": (
        "light",
        "dark",
        "value",
        "contrast",
        "shadow",
        "highlight",
        "bright",
        "tone",
        "tonal",
        "key",
        "grey",
        "gray",
        "black",
        "white",
    ),
    "detail": (
        "detail",
        "edge",
        "texture",
        "simplif",
        "busy",
        "focus",
        "line",
        "shape",
        "rest",
        "quiet",
        "sharp",
        "soft",
        "blur",
    ),
}


def on_topic(note: str, topic: str) -> bool:
    """Whether `note` speaks of its `topic` (a colour note names colour, hue, warmth, …) or
    of one of the palette's colours, for colour."""
    lowered = note.lower()
    return any(word in lowered for word in _TOPIC_WORDS[topic]) or (
        topic == "colour" and any(word in _COLOURS for word in re.findall(r"[a-z]+", lowered))
    )


def one_note(text: str) -> str:
    """The first sentence of a model's note, tidied; "" when it is no usable sentence."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    line = re.sub(r"^(?:[-•*]|\d{1,2}[.)])\s*", "", line).strip().strip('"')
    match = re.match(r"(.+?[.!?])(?:\s|$)", line)
    # cut off, trailing off, or a question: not a note
    if match is None or match.group(1).endswith(("..", "?")):
        return ""
    sentence = match.group(1)
    if len(sentence.split()) < 5 or len(sentence) > 300:
        return ""
    return sentence[0].upper() + sentence[1:]
