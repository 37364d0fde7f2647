"""Which lore entries go into a prompt: those whose keys appear in what is being read, within a
token budget, highest priority first, never an entry cut in half.

Promises: `Lorebook(entries).select(scan, budget, count)` returns the chosen entries in
priority order (ties: the order given) with their total tokens, never more than `budget`; an
always-on entry is a candidate without a key; a disabled entry never is. A plain key matches
as whole words, ignoring case and spacing ("the  Old Mill" matches "the old mill"); a regex key
is searched with a time limit (2 ms each, 20 ms for all of one scan's patterns together), and
a pattern that runs out of time counts as no match (hostile patterns cannot stall the bot).
Selection does no I/O; with 1,000 entries it takes a few milliseconds (`tests/test_lore.py`
prints the figure).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import regex

from bot.lore.entries import LoreEntry

# Time allowed to each regex key on one scan, and to all of a lorebook's regex keys together,
# in seconds: however many hostile patterns a lorebook holds, a scan stalls the bot no longer.
REGEX_TIMEOUT_S = 0.002
REGEX_BUDGET_S = 0.02
_WORD = regex.compile(r"\w+", regex.UNICODE)


def words(text: str) -> list[str]:
    """Lower-case words, the unit keys match on."""
    return _WORD.findall(text.casefold())


@dataclass(frozen=True, slots=True)
class Selection:
    entries: tuple[LoreEntry, ...]
    tokens: int
    matched: int  # entries whose keys matched (or always on), chosen or not
    left_out: tuple[str, ...]  # names matched but over the budget

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    @property
    def world(self) -> World:
        return World(render(self), tuple(self.names))


@dataclass(frozen=True, slots=True)
class World:
    """The lore a task's prompt carries, as text, and the names of its entries: kept in the
    task's inputs, so a request rebuilt after a restart reads the same facts."""

    text: str = ""
    names: tuple[str, ...] = ()

    def inputs(self) -> dict[str, Any]:
        return {"world": self.text, "lore": list(self.names)} if self.text else {}

    @classmethod
    def from_inputs(cls, inputs: Mapping[str, Any]) -> World:
        text, names = inputs.get("world"), inputs.get("lore")
        if not isinstance(text, str) or not isinstance(names, list):
            return cls()
        return cls(text, tuple(str(n) for n in names))


class _Matcher:
    """One entry's keys, prepared once."""

    __slots__ = ("entry", "patterns", "phrases", "single")

    def __init__(self, entry: LoreEntry) -> None:
        self.entry = entry
        self.single: list[str] = []
        self.phrases: list[str] = []
        self.patterns: list[regex.Pattern[str]] = []
        for key in entry.keys:
            if entry.regex:
                try:
                    self.patterns.append(regex.compile(key, regex.IGNORECASE))
                except regex.error:  # checked when added; a stored bad pattern matches nothing
                    continue
                continue
            parts = words(key)
            if len(parts) == 1:
                self.single.append(parts[0])
            elif parts:
                self.phrases.append(" " + " ".join(parts) + " ")

    def hits(self, vocabulary: set[str], joined: str, raw: str, deadline: float) -> bool:
        if any(word in vocabulary for word in self.single):
            return True
        if any(phrase in joined for phrase in self.phrases):
            return True
        for pattern in self.patterns:
            left = deadline - time.perf_counter()
            if left <= 0:  # the scan's time for patterns is spent: the rest count as no match
                return False
            try:
                if pattern.search(raw, timeout=min(REGEX_TIMEOUT_S, left)):
                    return True
            except TimeoutError:
                continue
        return False


class Lorebook:
    """A lorebook's entries, ready to be matched against text many times."""

    def __init__(self, entries: Iterable[LoreEntry]) -> None:
        usable = [e for e in entries if e.enabled]
        # stable: equal priorities keep the order they were given in
        usable.sort(key=lambda e: -e.priority)
        self._matchers = [_Matcher(e) for e in usable]

    def __len__(self) -> int:
        return len(self._matchers)

    def matching(self, scan: str) -> list[LoreEntry]:
        """Entries that are always on or whose keys appear in `scan`, in priority order."""
        found = words(scan)
        vocabulary = set(found)
        joined = " " + " ".join(found) + " "
        deadline = time.perf_counter() + REGEX_BUDGET_S
        return [
            m.entry
            for m in self._matchers
            if m.entry.always or m.hits(vocabulary, joined, scan, deadline)
        ]

    def select(
        self,
        scan: str,
        budget: int,
        count: Callable[[str], int],
        *,
        first: Iterable[LoreEntry] = (),
    ) -> Selection:
        """The entries for a prompt that reads `scan`: `first` (e.g. the character who speaks)
        ahead of everything, then matches by priority, each whole or not at all."""
        forced = list(first)
        forced_names = {e.name.casefold() for e in forced}
        candidates = forced + [
            e for e in self.matching(scan) if e.name.casefold() not in forced_names
        ]
        chosen: list[LoreEntry] = []
        left_out: list[str] = []
        used = 0
        for entry in candidates:
            line = render_entry(entry)
            # no tokenizer gives a token per 16 characters of text: an entry that cannot fit
            # even so is left out without counting (counting is what costs, with many matches)
            if used + len(line) // 16 + 1 > budget:
                left_out.append(entry.name)
                continue
            cost = count(line) + 1
            if used + cost > budget:
                left_out.append(entry.name)
                continue
            chosen.append(entry)
            used += cost
        return Selection(tuple(chosen), used, len(candidates), tuple(left_out))


HEADING = "Facts of this world (keep to them):"


def render_entry(entry: LoreEntry) -> str:
    """How an entry reads in the prompt: one line per entry."""
    text = " ".join(entry.text.split())
    if entry.kind == "character" and entry.voice:
        return f"- {entry.name} (character): {text} Speaks: {entry.voice}"
    if entry.kind == "character":
        return f"- {entry.name} (character): {text}"
    return f"- {entry.name}: {text}"


def render(selection: Selection) -> str:
    """The lore block of a prompt, or "" if nothing was chosen."""
    if not selection.entries:
        return ""
    lines = "\n".join(render_entry(e) for e in selection.entries)
    return f"{HEADING}\n{lines}"


NO_WORLD = World()
