"""Lore in the formats people already have: reading them in, and writing SillyTavern's back out.

Accepted (the format is told from the content, never from the file's name):
- SillyTavern World Info JSON (`{"entries": {"0": {...}, ...}}`);
- character cards V1, V2 (`chara_card_v2`) and V3 (`chara_card_v3`), as JSON or inside a PNG
  (a `tEXt`, `zTXt` or `iTXt` chunk named `ccv3` or `chara` holding base64 JSON; `ccv3` wins);
  the character becomes one entry of kind "character", its `character_book` further entries;
- NovelAI `.lorebook` JSON (`{"lorebookVersion": N, "entries": [...]}`).

Promises: `read_lore_file` returns every usable entry of the file, each passed through
`entries.check`, with honest `notes` on what was changed or left out (disabled or empty entries
skipped, over-long texts cut at a sentence end, macros rewritten), or raises `LoreRefused` with
a short reason a person can act on. It is all-or-nothing: one entry that cannot be taken (a
broken pattern, a key that is not text) refuses the whole file, naming the entry. Nothing else
escapes: not JSON, PNG, Unicode, recursion or memory errors (and, as a last resort against a
bug, anything unforeseen is logged and refused in general words). Refused outright: files over
`MAX_BYTES`, more than `MAX_ENTRIES` entries, anything that is not one of the formats above.
A PNG is read chunk by chunk with the standard library and its pixels are never decoded (see
`_png_card_chunks`). `sillytavern_json` writes entries as a World Info file SillyTavern imports and
that `read_lore_file` reads back to the same entries.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import regex

from bot.lore.entries import (
    KEY_LIMIT,
    KEYS_MAX,
    NAME_LIMIT,
    PRIORITY_RANGE,
    TEXT_LIMIT,
    VOICE_LIMIT,
    LoreEntry,
    LoreRefused,
    check,
)

log = logging.getLogger(__name__)

MAX_BYTES = 2 * 2**20  # a file bigger than this is refused
MAX_ENTRIES = 500  # more entries than this: refused

SILLYTAVERN = "sillytavern"
CARD_V1 = "character card v1"
CARD_V2 = "character card v2"
CARD_V3 = "character card v3"
NOVELAI = "novelai"

UNKNOWN = (
    "I can read SillyTavern World Info, character cards (V1–V3, JSON or PNG) and NovelAI "
    ".lorebook files; this is none of those."
)
_NOT_A_CARD = "The text hidden in this picture is not a character card I can read."
# The last resort, if a bug lets something else escape; tests check it is never reached.
_CONFUSED = "Something in this file confused me, so I left it alone. Please try exporting it again."

# What `{{user}}` becomes: the bot writes stories for people reading along, and a third-person
# phrase stays grammatical anywhere ("{{user}}'s sister", "{{user}} is a knight").
READER = "the reader"
# What `{{char}}` becomes in a World Info file, which belongs to no one character.
SOMEONE = "the character"

# NovelAI's lorebook entries default to a budget priority of 400; a quarter of it lands them
# on this bot's default of 100, so an imported book neither crowds out nor yields to the rest.
NOVELAI_PRIORITY_SCALE = 0.25

# A character's own name words make keys; these common name particles would fire everywhere.
_NAME_PARTICLES = frozenset(
    {"the", "and", "von", "van", "der", "den", "des", "del", "della", "das", "dos", "for"}
    | {"from", "with", "who", "her", "his", "ibn", "bin"}
)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# A card's base64 text may be this long (its JSON is held to MAX_BYTES after decoding).
_CHUNK_TEXT_LIMIT = MAX_BYTES * 4 // 3 + 1024

# `/pattern/flags`, as SillyTavern (parseRegexFromString) and NovelAI write regex keys.
_JS_REGEX = regex.compile(r"/([\s\S]+?)/([gimsuy]*)")
_UNESCAPED_SLASH = regex.compile(r"(?:^|[^\\])/")
_ESCAPE_PAIR = regex.compile(r"\\[\s\S]")
_ESCAPE_PAIR_OR_SLASH = regex.compile(r"\\[\s\S]|/")
_WORD = regex.compile(r"\w+")
_NAME_WORD = regex.compile(r"[\p{L}\p{M}][\p{L}\p{M}'’-]*")
# A sentence ends at . ! ? or … (and any closing quotes or brackets) followed by a space.
_SENTENCE_END = regex.compile(r"[.!?…]+[\"'”’»)\]]*(?=\s)")
_CHAR_MACRO = regex.compile(r"\{\{\s*char\s*\}\}|<\s*(?:bot|char)\s*>", regex.IGNORECASE)
_USER_MACRO = regex.compile(r"\{\{\s*user\s*\}\}|<\s*user\s*>", regex.IGNORECASE)


@dataclass(frozen=True, slots=True)
class LoreFile:
    """What a file held: its format, its title if it has one, its entries and remarks on them."""

    format: str
    title: str | None
    entries: list[LoreEntry]
    notes: list[str]


# ---------------------------------------------------------------------------------------------
# Reading


def read_lore_file(filename: str, data: bytes) -> LoreFile:
    """The lore in a file (format told from its content), or `LoreRefused` saying why not."""
    # `filename` is not trusted for the format: people rename files, and Discord renames some.
    try:
        return _read(data)
    except LoreRefused:
        raise
    except Exception:  # a bug, not the person's fault: say so plainly and keep the details
        log.exception("lore file %r could not be read", str(filename)[:100])
        raise LoreRefused(_CONFUSED) from None


def _read(data: bytes) -> LoreFile:
    if len(data) > MAX_BYTES:
        raise LoreRefused(f"This file is over {MAX_BYTES // 2**20} MB; lore files are far smaller.")
    if not data.strip():
        raise LoreRefused("This file is empty.")
    if data.startswith(_PNG_MAGIC):
        return _read_png(data)
    if data.startswith((b"\xff\xd8\xff", b"GIF8")) or (
        data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    ):
        raise LoreRefused(
            "I can only find character cards in PNG pictures; please export it as PNG or JSON."
        )
    if data.startswith(b"PK\x03\x04"):
        raise LoreRefused(
            "This looks like a zip archive (a .charx card?); please export it as PNG or JSON."
        )
    return _read_object(_load_json(data))


def _load_json(data: bytes) -> object:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LoreRefused("This file is not UTF-8 text, so it is not a lore file I know.") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise LoreRefused("This file is nested too deeply to be a lore file.") from None
    except json.JSONDecodeError as error:
        raise LoreRefused(
            f"This file is not valid JSON (line {error.lineno}, column {error.colno})."
        ) from None
    except ValueError:  # e.g. a number with more digits than Python will convert
        raise LoreRefused("This file is not valid JSON.") from None


def _read_object(obj: object, *, cards_only: bool = False) -> LoreFile:
    """Tell the format from the JSON's shape and read it."""
    unknown = _NOT_A_CARD if cards_only else UNKNOWN
    if not isinstance(obj, dict):
        raise LoreRefused(unknown)
    spec = obj.get("spec")
    if spec == "chara_card_v3":
        return _read_card(_card_data(obj), CARD_V3)
    if spec == "chara_card_v2":
        return _read_card(_card_data(obj), CARD_V2)
    if isinstance(spec, str) and spec.startswith("chara_card"):
        raise LoreRefused(f"This character card is a version I don't know yet ({spec[:30]}).")
    if "lorebookVersion" in obj and not cards_only:
        return _read_novelai(obj)
    if isinstance(obj.get("entries"), dict) and not cards_only:
        return _read_sillytavern(obj)
    if isinstance(obj.get("name"), str) and any(
        field in obj for field in ("description", "personality", "scenario", "first_mes")
    ):
        return _read_card(obj, CARD_V1)
    raise LoreRefused(unknown)


def _card_data(obj: dict[Any, Any]) -> dict[Any, Any]:
    data = obj.get("data")
    if not isinstance(data, dict):
        raise LoreRefused("This character card has no character data in it.")
    return data


@dataclass(slots=True)
class _Notes:
    """What was changed or left out on the way in, told to the person at the end."""

    disabled: int = 0
    empty: int = 0
    cut: list[str] = field(default_factory=list)
    long_names: int = 0
    long_keys: int = 0
    many_keys: list[str] = field(default_factory=list)
    secondary: int = 0
    char_macro: bool = False
    user_macro: bool = False
    extra: list[str] = field(default_factory=list)

    def render(self) -> list[str]:
        out: list[str] = []
        if self.disabled:
            out.append(f"{_count(self.disabled, 'disabled entry', 'disabled entries')} skipped.")
        if self.empty:
            out.append(f"{_count(self.empty, 'entry', 'entries')} with no text skipped.")
        if self.cut:
            verb = "was" if len(self.cut) == 1 else "were"
            out.append(
                f"{_names(self.cut)} {verb} cut to {TEXT_LIMIT:,} characters, "
                "at a sentence end where possible."
            )
        if self.long_names:
            out.append(
                f"{_count(self.long_names, 'name was', 'names were')} cut to "
                f"{NAME_LIMIT} characters."
            )
        if self.long_keys:
            out.append(
                f"{_count(self.long_keys, 'key', 'keys')} over {KEY_LIMIT} characters left out."
            )
        if self.many_keys:
            out.append(f"{_names(self.many_keys)} kept only the first {KEYS_MAX} keys.")
        if self.secondary:
            count = _count(self.secondary, "entry triggers", "entries trigger")
            out.append(f"Secondary keys aren't used here: {count} on the main keys alone.")
        if self.char_macro:
            out.append(
                f"{{{{char}}}} was written as “{SOMEONE}”: this file belongs to no one character."
            )
        if self.user_macro:
            out.append(f"{{{{user}}}} was written as “{READER}”.")
        return out + self.extra


def _count(n: int, one: str, many: str) -> str:
    return f"1 {one}" if n == 1 else f"{n:,} {many}"


def _names(names: list[str]) -> str:
    if len(names) > 3:
        return f"{len(names):,} entries"
    quoted = [f"“{_short(n)}”" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _short(name: str) -> str:
    return name if len(name) <= 40 else name[:39] + "…"


def _finish(fmt: str, title: str | None, entries: list[LoreEntry], notes: _Notes) -> LoreFile:
    if not entries:
        remarks = " ".join(notes.render())
        raise LoreRefused(f"There are no entries in this file. {remarks}".strip())
    return LoreFile(fmt, title, _distinct(entries, notes), notes.render())


def _distinct(entries: list[LoreEntry], notes: _Notes) -> list[LoreEntry]:
    """Names unique in the file (a lorebook's names are; files often repeat one, named by its
    first key): a repeat becomes "Mira (2)", and the person is told."""
    seen: set[str] = set()
    renamed: list[str] = []
    out: list[LoreEntry] = []
    for entry in entries:
        name, n = entry.name, 1
        while name.casefold() in seen:
            n += 1
            suffix = f" ({n})"
            name = entry.name[: NAME_LIMIT - len(suffix)] + suffix
        if name != entry.name:
            renamed.append(entry.name)
            entry = replace(entry, name=name)
        seen.add(name.casefold())
        out.append(entry)
    if renamed:
        notes.extra.append(
            f"{_names(sorted(set(renamed)))} appeared more than once: the repeats are numbered."
        )
    return out


def _check_count(n: int) -> None:
    if n > MAX_ENTRIES:
        raise LoreRefused(f"This file has {n:,} entries; I can take at most {MAX_ENTRIES} at once.")


def _title(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    title = _fold(value)[:NAME_LIMIT].strip()
    return title or None


# --- SillyTavern ------------------------------------------------------------------------------


def _read_sillytavern(obj: dict[Any, Any]) -> LoreFile:
    raw: dict[Any, Any] = obj["entries"]
    _check_count(len(raw))
    notes = _Notes()
    entries: list[LoreEntry] = []
    for number, item in enumerate(raw.values(), 1):
        if not isinstance(item, dict):
            raise LoreRefused(f"Entry {number} in this file is not a lore entry.")
        keys = _keys(item.get("key"), f"Entry {number}")
        name = _pick_name(number, item.get("comment"), *keys)
        label = f"The entry “{_short(name)}”"
        if _flag(item.get("disable"), "disable", label, default=False):
            notes.disabled += 1
            continue
        text, always, skip = _decorators(_text(item.get("content"), "content", label))
        if skip:
            notes.disabled += 1
            continue
        if _has_items(item.get("keysecondary")):
            notes.secondary += 1
        kind, voice = _llmos_extension(item.get("extensions"), label)
        entry = _make(
            notes,
            name=_macros(name, None, notes),
            text=_macros(text, None, notes),
            keys=[_macros(k, None, notes) for k in keys],
            always=always or _flag(item.get("constant"), "constant", label, default=False),
            priority=_priority(item.get("order"), "an order", label, default=100),
            kind=kind,
            voice=_macros(voice, None, notes),
        )
        if entry is not None:
            entries.append(entry)
    return _finish(SILLYTAVERN, _title(obj.get("name")), entries, notes)


def _llmos_extension(value: object, label: str) -> tuple[str, str]:
    """The kind and voice this bot keeps in an entry's `extensions` when it exports one."""
    ours = value.get("llmos") if isinstance(value, dict) else None
    if not isinstance(ours, dict):
        return "entry", ""
    kind = ours.get("kind")
    voice = _text(ours.get("voice"), "a voice", label)
    return ("character" if kind == "character" else "entry"), voice


# --- Character cards ----------------------------------------------------------------------------


def _read_card(data: dict[Any, Any], fmt: str) -> LoreFile:
    label = "This character card"
    name = _fold(_text(data.get("name"), "a name", label))
    if not name:
        raise LoreRefused("This character card has no name.")
    # V3: "{{char}} should be replaced with the nickname if there is one".
    nickname = _fold(_text(data.get("nickname"), "a nickname", label)) if fmt == CARD_V3 else ""
    called = nickname or name
    notes = _Notes()

    def field_text(key: str) -> str:
        return _macros(_text(data.get(key), f"a {key}", label), called, notes).strip()

    description = field_text("description")
    personality = field_text("personality")
    scenario = field_text("scenario")

    book = data.get("character_book")
    book_entries: list[Any] = []
    if isinstance(book, dict):
        raw = book.get("entries")
        if isinstance(raw, list):
            book_entries = raw
        elif raw is not None:
            raise LoreRefused("This card's lorebook has entries that are not a list.")
    elif book is not None:
        raise LoreRefused("This card's lorebook (character_book) is not a lorebook.")
    _check_count(1 + len(book_entries))

    entries: list[LoreEntry] = []
    parts = [description]
    if personality:
        parts.append(f"Personality: {personality}")
    if scenario:
        parts.append(f"Scenario: {scenario}")
    text = "\n\n".join(p for p in parts if p)
    if text:
        character = _make(
            notes,
            name=name,
            text=text,
            keys=character_keys(name, nickname),
            always=False,
            priority=100,
            kind="character",
            voice=_voice(personality),
        )
        if character is not None:
            entries.append(character)
    else:
        notes.extra.append(
            f"“{_short(name)}” has no description, personality or scenario, "
            "so the character has no entry of their own."
        )
    for number, item in enumerate(book_entries, 1):
        entry = _read_book_entry(item, number, called, fmt, notes)
        if entry is not None:
            entries.append(entry)
    return _finish(fmt, _title(name), entries, notes)


def _read_book_entry(
    item: object, number: int, called: str, fmt: str, notes: _Notes
) -> LoreEntry | None:
    """One `character_book` entry (V2 spec; V3 adds `use_regex`)."""
    if not isinstance(item, dict):
        raise LoreRefused(f"Lore entry {number} of this card is not a lore entry.")
    keys = _keys(item.get("keys"), f"Lore entry {number} of this card")
    name = _pick_name(number, item.get("name"), item.get("comment"), *keys)
    label = f"The entry “{_short(name)}”"
    if not _flag(item.get("enabled"), "enabled", label, default=True):
        notes.disabled += 1
        return None
    text, always, skip = _decorators(_text(item.get("content"), "content", label))
    if skip:
        notes.disabled += 1
        return None
    if _has_items(item.get("secondary_keys")):
        notes.secondary += 1
    # The spec: "if token budget reached, lower priority value entries are discarded first";
    # without one, the insertion order (as SillyTavern maps it to its own `order`).
    raw_priority = item.get("priority")
    if raw_priority is None:
        raw_priority = item.get("insertion_order")
    use_regex = fmt == CARD_V3 and _flag(item.get("use_regex"), "use_regex", label, default=False)
    return _make(
        notes,
        name=_macros(name, called, notes),
        text=_macros(text, called, notes),
        keys=[_macros(k, called, notes) for k in keys],
        always=always or _flag(item.get("constant"), "constant", label, default=False),
        priority=_priority(raw_priority, "a priority", label, default=100),
        force_regex=use_regex,
    )


def character_keys(name: str, nickname: str = "") -> list[str]:
    """The full name, a nickname, and each word of the name with 3+ letters ("Mira", "Vance")."""
    keys = [name, nickname] if nickname else [name]
    for word in _NAME_WORD.findall(name):
        word = word.strip("'’-")
        letters = sum(ch.isalpha() for ch in word)
        if letters >= 3 and word.casefold() not in _NAME_PARTICLES:
            keys.append(word)
    return keys


def _voice(personality: str) -> str:
    """How the character speaks, in short: the first sentence of their personality."""
    folded = _fold(personality)
    end = _SENTENCE_END.search(folded)
    first = folded[: end.end()] if end else folded
    return _cut(first, VOICE_LIMIT)


# --- NovelAI ------------------------------------------------------------------------------------


def _read_novelai(obj: dict[Any, Any]) -> LoreFile:
    raw = obj.get("entries")
    if not isinstance(raw, list):
        raise LoreRefused("This NovelAI lorebook has no list of entries.")
    _check_count(len(raw))
    notes = _Notes()
    entries: list[LoreEntry] = []
    for number, item in enumerate(raw, 1):
        if not isinstance(item, dict):
            raise LoreRefused(f"Entry {number} in this lorebook is not a lore entry.")
        keys = _keys(item.get("keys"), f"Entry {number}")
        name = _pick_name(number, item.get("displayName"), *keys)
        label = f"The entry “{_short(name)}”"
        if not _flag(item.get("enabled"), "enabled", label, default=True):
            notes.disabled += 1
            continue
        config = item.get("contextConfig")
        budget = config.get("budgetPriority") if isinstance(config, dict) else None
        entry = _make(
            notes,
            name=name,
            text=_text(item.get("text"), "text", label),
            keys=keys,
            always=_flag(item.get("forceActivation"), "forceActivation", label, default=False),
            priority=_priority(
                budget, "a budget priority", label, default=400, scale=NOVELAI_PRIORITY_SCALE
            ),
        )
        if entry is not None:
            entries.append(entry)
    return _finish(NOVELAI, _title(obj.get("name")), entries, notes)


# --- PNG ----------------------------------------------------------------------------------------


def _read_png(data: bytes) -> LoreFile:
    texts = _png_card_chunks(data)
    # The V3 spec: when both are present, `ccv3` is the card to use.
    keyword = "ccv3" if "ccv3" in texts else "chara" if "chara" in texts else None
    if keyword is None:
        raise LoreRefused("This picture has no character card in it.")
    return _read_object(_load_json(_png_card_json(texts[keyword])), cards_only=True)


def _png_card_chunks(data: bytes) -> dict[str, bytes]:
    """The `chara` and `ccv3` text chunks of a PNG, by walking its chunks.

    Not Pillow: SillyTavern writes the card chunk just before IEND, after the pixel data, and
    Pillow only reports text chunks after IDAT once it has decoded every pixel (`.text` calls
    `.load()`), which for a hostile 2 MB file can mean hundreds of megabytes. Walking the
    chunks reads nothing but their headers and the two we want."""
    found: dict[str, bytes] = {}
    pos = len(_PNG_MAGIC)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        start, end = pos + 8, pos + 8 + length
        if end + 4 > len(data):
            raise LoreRefused("This picture is damaged: it ends in the middle of a chunk.")
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            body = data[start:end]
            keyword = body.partition(b"\0")[0].decode("latin-1").strip().lower()
            if keyword in ("chara", "ccv3") and keyword not in found:
                (crc,) = struct.unpack(">I", data[end : end + 4])
                if zlib.crc32(kind + body) != crc:
                    raise LoreRefused("The character card in this picture is damaged.")
                found[keyword] = _png_text(kind, body)
        if kind == b"IEND":
            return found
        pos = end + 4
    if not found:  # no IEND: cut short, and what is missing may be the card
        raise LoreRefused("This picture is damaged: it ends too soon.")
    return found


def _png_text(kind: bytes, body: bytes) -> bytes:
    """The text of one tEXt, zTXt (compressed) or iTXt chunk, as bytes: a card is base64,
    which is ASCII whichever text encoding the chunk type names."""
    damaged = LoreRefused("The character card in this picture is damaged.")
    rest = body.partition(b"\0")[2]
    if kind == b"tEXt":
        return rest
    if kind == b"zTXt":
        if rest[:1] != b"\0":
            raise damaged
        return _inflate(rest[1:])
    # iTXt: compression flag, method, language tag \0, translated keyword \0, text
    if len(rest) < 2:
        raise damaged
    compressed = rest[0] == 1
    parts = rest[2:].split(b"\0", 2)
    if len(parts) != 3:
        raise damaged
    return _inflate(parts[2]) if compressed else parts[2]


def _inflate(compressed: bytes) -> bytes:
    """zlib data, stopped at the size a card can be: a small chunk may inflate to gigabytes."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(compressed, _CHUNK_TEXT_LIMIT + 1)
    except zlib.error:
        raise LoreRefused("The character card in this picture is damaged.") from None
    if len(out) > _CHUNK_TEXT_LIMIT:
        raise LoreRefused("The character card in this picture is too big to be a card.")
    return out


def _png_card_json(text: bytes) -> bytes:
    """A card chunk's JSON: base64 of UTF-8 JSON by the spec; bare JSON is taken too."""
    if text.lstrip().startswith(b"{"):
        raw = text
    else:
        compact = b"".join(text.split())
        try:
            raw = base64.b64decode(compact + b"=" * (-len(compact) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise LoreRefused("The character card in this picture is damaged.") from None
    if len(raw) > MAX_BYTES:
        raise LoreRefused("The character card in this picture is too big to be a card.")
    return raw


# ---------------------------------------------------------------------------------------------
# Fields, checked and coerced where the meaning is plain


def _text(value: object, what: str, label: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise LoreRefused(f"{label} has {what} that is not text.")


def _keys(value: object, label: str) -> list[str]:
    """A key list; one string is one key, and numbers are taken as the words they are."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise LoreRefused(f"{label} has keys that are not a list of words.")
    keys: list[str] = []
    for key in value:
        if isinstance(key, str):
            keys.append(key)
        elif isinstance(key, int) and not isinstance(key, bool):
            keys.append(str(key))
        elif key is not None:
            raise LoreRefused(f"{label} has a key that is not text.")
    return keys


def _has_items(value: object) -> bool:
    return isinstance(value, list) and any(isinstance(v, str) and v.strip() for v in value)


def _flag(value: object, what: str, label: str, *, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise LoreRefused(f"{label} has a “{what}” setting that is not true or false.")


def _priority(value: object, what: str, label: str, *, default: float, scale: float = 1.0) -> int:
    """A priority clamped into the bot's range; numbers written as text are read as numbers."""
    number: float
    if value is None:
        number = default
    elif isinstance(value, bool):
        raise LoreRefused(f"{label} has {what} that is not a number.")
    elif isinstance(value, int):
        number = max(-(10**9), min(10**9, value))  # JSON allows thousands of digits
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise LoreRefused(f"{label} has {what} that is not a number.") from None
    else:
        raise LoreRefused(f"{label} has {what} that is not a number.")
    if not math.isfinite(number):
        raise LoreRefused(f"{label} has {what} that is not a number.")
    low, high = PRIORITY_RANGE
    return int(min(high, max(low, round(number * scale))))


def _pick_name(number: int, *candidates: object) -> str:
    """The first candidate that is non-blank text, else "Entry N"."""
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip():
            return _fold(candidate)
    return f"Entry {number}"


def _decorators(content: str) -> tuple[str, bool, bool]:
    """Content without its leading `@@decorator` lines (V3 cards, SillyTavern), and whether
    they said `@@activate` (always on) or `@@dont_activate` (never: skipped like a disabled
    entry). Other decorators steer placement this bot does not have; they are dropped."""
    lines = content.split("\n")
    always = skip = False
    first = 0
    while first < len(lines) and lines[first].lstrip().startswith("@@"):
        name = lines[first].strip().lstrip("@").split(" ", 1)[0].lower()
        always = always or name == "activate"
        skip = skip or name == "dont_activate"
        first += 1
    return "\n".join(lines[first:]), always, skip


def _macros(text: str, character: str | None, notes: _Notes) -> str:
    """`{{char}}`/`<BOT>` as the character's name (or "the character" without one) and
    `{{user}}`/`<USER>` as "the reader", capitalised at the start of a sentence."""

    def sub(pattern: regex.Pattern[str], word: str, text: str) -> str:
        def one(match: regex.Match[str]) -> str:
            before = match.string[max(0, match.start() - 20) : match.start()].rstrip(" \t")
            starts = (not before and match.start() <= 20) or before.endswith(
                (".", "!", "?", "\n", '"', "“", "*")
            )
            return word[:1].upper() + word[1:] if starts else word

        return pattern.sub(one, text)

    if "{" not in text and "<" not in text:
        return text
    if _CHAR_MACRO.search(text):
        if character is None:
            notes.char_macro = True
        text = sub(_CHAR_MACRO, character or SOMEONE, text)
    if _USER_MACRO.search(text):
        notes.user_macro = True
        text = sub(_USER_MACRO, READER, text)
    return text


# ---------------------------------------------------------------------------------------------
# Building an entry


def _make(
    notes: _Notes,
    *,
    name: str,
    text: str,
    keys: list[str],
    always: bool,
    priority: int,
    kind: str = "entry",
    voice: str = "",
    force_regex: bool = False,
) -> LoreEntry | None:
    """One entry fitted to the limits (cut with a note, not refused) and checked; None if it
    has no text. A refusal from `check` (a broken pattern) names the entry."""
    name = _fold(name)
    if len(name) > NAME_LIMIT:
        name = _cut(name, NAME_LIMIT)
        notes.long_names += 1
    text = text.strip()
    if not text:
        notes.empty += 1
        return None
    if len(text) > TEXT_LIMIT:
        text = _cut(text, TEXT_LIMIT)
        notes.cut.append(name)
    voice = _cut(_fold(voice), VOICE_LIMIT)
    fitted, is_regex = _fit_keys(keys, force_regex, name, notes)
    entry = LoreEntry(
        name=name,
        text=text,
        keys=fitted,
        regex=is_regex,
        always=always,
        priority=priority,
        kind=kind,
        voice=voice,
    )
    try:
        return check(entry)
    except LoreRefused as error:
        reason = str(error)
        if f"“{name[:40]}”" not in reason:
            reason = f"In the entry “{_short(name)}”: {reason}"
        raise LoreRefused(reason) from None


def _fit_keys(
    keys: list[str], force_regex: bool, name: str, notes: _Notes
) -> tuple[tuple[str, ...], bool]:
    """Keys as this bot keeps them. An entry is all plain keys or all patterns, so when any
    key is a `/pattern/`, the plain ones become patterns that match the way plain keys do."""
    patterns = [_js_pattern(k) for k in keys]
    is_regex = force_regex or any(p is not None for p in patterns)
    out: list[str] = []
    seen: set[str] = set()
    for key, pattern in zip(keys, patterns, strict=True):
        if len(out) > KEYS_MAX:  # enough to know it is too many; a file may hold 100,000
            break
        if pattern is not None:
            key = pattern.strip()
        elif force_regex:
            key = key.strip()  # V3 `use_regex`: the keys are patterns as written
        elif is_regex:
            key = _word_pattern(key)
        else:
            key = _fold(key)
        if not key or key.lower() in seen:
            continue
        if len(key) > KEY_LIMIT:
            notes.long_keys += 1
            continue
        seen.add(key.lower())
        out.append(key)
    if len(out) > KEYS_MAX:
        out = out[:KEYS_MAX]
        notes.many_keys.append(name)
    return tuple(out), is_regex


def _js_pattern(key: str) -> str | None:
    """The pattern of a `/pattern/flags` key, or None for a plain key. Like SillyTavern, a
    key with an unescaped `/` inside is plain text. Flags are dropped: keys ignore case here."""
    match = _JS_REGEX.fullmatch(key.strip())
    if match is None or _UNESCAPED_SLASH.search(match.group(1)):
        return None
    return _ESCAPE_PAIR.sub(lambda m: "/" if m.group(0) == "\\/" else m.group(0), match.group(1))


def _word_pattern(key: str) -> str:
    r"""A plain key as a pattern that matches as plain keys do: its words, whole, with any
    spacing or punctuation between them ("Old Mill" → `\bOld\W+Mill\b`)."""
    words = _WORD.findall(key)
    if not words:
        return ""
    return r"\b" + r"\W+".join(regex.escape(w) for w in words) + r"\b"


def _fold(text: str) -> str:
    return " ".join(text.split())


def _cut(text: str, limit: int) -> str:
    """`text` under `limit` characters, cut after a sentence if one ends in the second half,
    else after a word, else where the limit falls."""
    if len(text) <= limit:
        return text
    window = text[: limit + 1]
    best = 0
    for end in _SENTENCE_END.finditer(window):
        if end.end() <= limit:
            best = end.end()
    if best < limit // 2:
        best = max(window.rfind(" "), window.rfind("\n"))
    if best < limit // 2:
        best = limit
    return text[:best].rstrip()


# ---------------------------------------------------------------------------------------------
# Writing


def sillytavern_json(entries: Iterable[LoreEntry], name: str = "LLMOS lorebook") -> bytes:
    """Entries as a SillyTavern World Info file (UTF-8 JSON), disabled ones kept as disabled."""
    book: dict[str, Any] = {"name": name, "entries": {}}
    for uid, entry in enumerate(entries):
        record = _sillytavern_record(uid, entry)
        book["entries"][str(uid)] = record
    return json.dumps(book, ensure_ascii=False, indent=4).encode("utf-8")


def _sillytavern_record(uid: int, entry: LoreEntry) -> dict[str, Any]:
    # SillyTavern's new-entry template, with this entry's fields over it. Plain keys match
    # whole words here, so `matchWholeWords` says so; patterns are written `/pattern/i`.
    if entry.regex:
        keys = ["/" + _ESCAPE_PAIR_OR_SLASH.sub(_escape_slash, k) + "/i" for k in entry.keys]
    else:
        keys = list(entry.keys)
    record: dict[str, Any] = {
        "uid": uid,
        "key": keys,
        "keysecondary": [],
        "comment": entry.name,
        "content": entry.text,
        "constant": entry.always,
        "vectorized": False,
        "selective": True,
        "selectiveLogic": 0,
        "addMemo": True,
        "order": entry.priority,
        "position": 0,
        "disable": not entry.enabled,
        "ignoreBudget": False,
        "excludeRecursion": False,
        "preventRecursion": False,
        "delayUntilRecursion": 0,
        "probability": 100,
        "useProbability": True,
        "depth": 4,
        "group": "",
        "groupOverride": False,
        "groupWeight": 100,
        "scanDepth": None,
        "caseSensitive": False,
        "matchWholeWords": True,
        "useGroupScoring": None,
        "automationId": "",
        "role": 0,
        "sticky": None,
        "cooldown": None,
        "delay": None,
        "triggers": [],
        "displayIndex": uid,
    }
    if entry.kind != "entry" or entry.voice:
        # SillyTavern keeps fields it does not know; this bot reads them back.
        record["extensions"] = {"llmos": {"kind": entry.kind, "voice": entry.voice}}
    return record


def _escape_slash(match: regex.Match[str]) -> str:
    return "\\/" if match.group(0) == "/" else match.group(0)
