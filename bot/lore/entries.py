"""One lore entry (a place, a rule of the world, a character) and the limits every entry keeps.

Promises: `check(entry)` returns the entry with its fields tidied (whitespace folded, duplicate
keys dropped) or raises `LoreRefused` with a reason a person can act on; nothing else in the
program needs to re-check an entry that passed. A regex key is compiled here once, so a
broken pattern is refused when it is added, not when a story is being written.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import regex

NAME_LIMIT = 100
KEY_LIMIT = 100
KEYS_MAX = 25
TEXT_LIMIT = 2000
VOICE_LIMIT = 300
PRIORITY_RANGE = (0, 1000)
KINDS = ("entry", "character")


class LoreRefused(ValueError):
    """An entry or a file that cannot be taken; `str()` is the reason, for the person."""


@dataclass(frozen=True, slots=True)
class LoreEntry:
    """One entry. `keys` trigger it (whole words, case-insensitive; or regexes when `regex`);
    `always` puts it in every prompt; higher `priority` goes first when the budget is short.
    A character has `kind="character"` and may have a speaking `voice`."""

    name: str
    text: str
    keys: tuple[str, ...] = ()
    regex: bool = False
    always: bool = False
    priority: int = 100
    kind: str = "entry"
    voice: str = ""
    enabled: bool = True
    id: int | None = None


def _fold(text: str) -> str:
    return " ".join(text.split())


def check(entry: LoreEntry) -> LoreEntry:
    """The entry tidied, or `LoreRefused` saying what is wrong."""
    name = _fold(entry.name)
    text = entry.text.strip()
    voice = _fold(entry.voice)
    if not name:
        raise LoreRefused("An entry needs a name.")
    if len(name) > NAME_LIMIT:
        raise LoreRefused(f"Please keep the name under {NAME_LIMIT} characters.")
    if not text:
        raise LoreRefused(f"The entry “{name[:40]}” has no text.")
    if len(text) > TEXT_LIMIT:
        raise LoreRefused(
            f"The entry “{name[:40]}” is {len(text)} characters; please keep it under {TEXT_LIMIT}."
        )
    if len(voice) > VOICE_LIMIT:
        raise LoreRefused(f"Please keep a voice under {VOICE_LIMIT} characters.")
    if entry.kind not in KINDS:
        raise LoreRefused(f"Unknown kind {entry.kind!r}.")
    keys: list[str] = []
    for key in entry.keys:
        key = key.strip() if entry.regex else _fold(key)
        if not key or key.lower() in (k.lower() for k in keys):
            continue
        if len(key) > KEY_LIMIT:
            raise LoreRefused(f"Please keep each key under {KEY_LIMIT} characters.")
        if entry.regex:
            try:
                regex.compile(key, regex.IGNORECASE)
            except regex.error as error:
                raise LoreRefused(
                    f"The pattern `{key[:40]}` is not a valid regex: {error}."
                ) from None
        keys.append(key)
    if len(keys) > KEYS_MAX:
        raise LoreRefused(f"Please give at most {KEYS_MAX} keys per entry.")
    if not keys and not entry.always:
        # An entry nothing can trigger would never be used: its own name triggers it.
        keys = [name]
    low, high = PRIORITY_RANGE
    priority = min(high, max(low, int(entry.priority)))
    return replace(entry, name=name, text=text, voice=voice, keys=tuple(keys), priority=priority)


def split_keys(text: str) -> tuple[str, ...]:
    """Keys as people type them in a command: separated by commas."""
    return tuple(k for k in (part.strip() for part in text.split(",")) if k)
