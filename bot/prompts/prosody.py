"""Prosody: syllables, rhyme and line shape, counted the way a reader counts them.

Words are looked up in the CMU Pronouncing Dictionary (the `pronouncing` package); a word it
lacks (a name, a coinage) gets an estimate from its spelling. The dictionary loads on first
use (about a second), so call `warm()` off the event loop before the first poem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

import pronouncing
from wordfreq import zipf_frequency

_WORD = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)*|\d+")
_VOWELS = re.compile(r"[aeiouy]+")
# Syllables of the digits as they are read ("7" is "seven").
_DIGIT_SYLLABLES = {"0": 2, "1": 1, "2": 1, "3": 1, "4": 1, "5": 1, "6": 1, "7": 2, "8": 1, "9": 1}


@dataclass(frozen=True, slots=True)
class Meter:
    """What a fixed form asks of each line: syllables (lowest, highest) and a rhyme scheme."""

    syllables: tuple[tuple[int, int], ...]
    rhyme: str = ""  # one letter per line, "" for none; lines sharing a letter rhyme

    @property
    def lines(self) -> int:
        return len(self.syllables)


def _exactly(*counts: int) -> tuple[tuple[int, int], ...]:
    return tuple((c, c) for c in counts)


# A reader's tolerance is added by `check` (±1 syllable a line).
METERS: dict[str, Meter] = {
    "haiku": Meter(_exactly(5, 7, 5)),
    "tanka": Meter(_exactly(5, 7, 5, 7, 7)),
    "limerick": Meter(((8, 9), (8, 9), (5, 6), (5, 6), (8, 9)), "AABBA"),
    "sonnet": Meter(((10, 10),) * 14, "ABABCDCDEFEFGG"),
}


# Words a line of verse should not end on: it would stop mid-phrase ("the cat sat on the").
FUNCTION_WORDS = frozenset(
    (  # noqa: SIM905 (a list literal of 55 words would fill a page)
        "a an the and or but nor so yet of to in on at by for from with into onto upon as than "
        "that this these those my your his her its our their is are was were be been am "
        "if then when while who whom whose which what where there here not no "
        "must can could would should shall do does did"
    ).split()
)
# Zipf frequency (wordfreq): 3 is about once per million words; below it, words a reader may
# not know, and names.
COMMON = 3.3


def warm() -> None:
    """Load the pronouncing dictionary and word frequencies now rather than on the first poem."""
    pronouncing.phones_for_word("warm")
    zipf_frequency("warm", "en")


def words(line: str) -> list[str]:
    """The words of a line, apostrophes kept ("don't"), punctuation dropped."""
    return [w.replace("’", "'") for w in _WORD.findall(line)]


@lru_cache(maxsize=65536)
def _phones(word: str) -> tuple[str, ...]:
    return tuple(pronouncing.phones_for_word(word.lower()))


def estimate_syllables(word: str) -> int:
    """Syllables of a word the dictionary lacks, from its spelling: vowel groups, less a
    silent final "e" (but "-le" after a consonant is a syllable, as in "candle")."""
    word = word.lower().replace("'", "")
    if word.isdigit():
        return sum(_DIGIT_SYLLABLES[d] for d in word)
    count = len(_VOWELS.findall(word))
    if word.endswith("e") and not word.endswith(("le", "ee", "ye")) and count > 1:
        count -= 1
    if re.search(r"[^aeiouy]le$", word) and count == 1 and len(word) > 3:
        count += 1
    return max(1, count)


def syllables(word: str) -> int:
    """Syllables of one word: its shortest pronunciation in the dictionary ("wires" said as
    one, as verse often does), else an estimate from its spelling."""
    phones = _phones(word)
    if phones:
        return min(pronouncing.syllable_count(p) for p in phones)
    return estimate_syllables(word)


def line_syllables(line: str) -> int:
    """Syllables of a line of verse."""
    return sum(syllables(w) for w in words(line))


def _spelled_rhyme(word: str) -> str:
    """A rhyme key from spelling alone: the last vowel group and what follows it."""
    word = word.lower().replace("'", "")
    match = re.search(r"[aeiouy]+[^aeiouy]*e?$", word)
    return "~" + (match.group(0) if match else word)


def rhyme_keys(word: str) -> frozenset[str]:
    """Each pronunciation's rhyming part (the last stressed vowel onward, stress marks off)."""
    phones = _phones(word)
    if not phones:
        return frozenset({_spelled_rhyme(word)})
    return frozenset(re.sub(r"\d", "", pronouncing.rhyming_part(p)) for p in phones)


def rhymes(a: str, b: str) -> bool:
    """Whether two words rhyme: a shared rhyming part, and not the same word again."""
    a, b = a.lower(), b.lower()
    if not a or not b or a == b:
        return False
    return bool(rhyme_keys(a) & rhyme_keys(b))


def rhyme_words(ends: list[str], *, avoid: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Common words that rhyme with every word of `ends`, most frequent first: what a line that
    must rhyme with them may end on. Not the words themselves, nor those in `avoid`."""
    if not ends:
        return []
    taken = {e.lower() for e in ends} | {a.lower() for a in avoid}
    found = []
    for word in dict.fromkeys(pronouncing.rhymes(ends[0].lower())):
        if not word.isalpha() or word in taken or word in FUNCTION_WORDS:
            continue
        frequency = zipf_frequency(word, "en")
        if frequency >= COMMON and all(rhymes(word, e) for e in ends):
            found.append((frequency, word))
    return [word for _f, word in sorted(found, reverse=True)]


def last_word(line: str) -> str:
    found = words(line)
    return found[-1] if found else ""


def rhyme_scheme(lines: list[str]) -> str:
    """The scheme a reader hears, one letter a line: "AABBA" for a limerick that rhymes."""
    letters: list[str] = []
    ends: list[str] = []
    for line in lines:
        end = last_word(line)
        letter = next(
            (letters[i] for i, other in enumerate(ends) if end and rhymes(end, other)), None
        )
        if letter is None:
            letter = chr(ord("A") + len(set(letters))) if len(set(letters)) < 26 else "?"
        letters.append(letter)
        ends.append(end)
    return "".join(letters)


def follows_scheme(lines: list[str], scheme: str) -> bool:
    """Every group of lines that `scheme` pairs (the same letter) rhymes: their end words all
    rhyme with each other. A word may come back at the end of a later line (Lear's limericks
    end on "beard" twice), but a group must rhyme at least two different words."""
    if len(lines) != len(scheme):
        return False
    ends = [last_word(line).lower() for line in lines]
    for letter in set(scheme):
        group = sorted({ends[i] for i, s in enumerate(scheme) if s == letter})
        if scheme.count(letter) < 2:
            continue
        if len(group) < 2 or not all(
            rhymes(a, b) for i, a in enumerate(group) for b in group[i + 1 :]
        ):
            return False
    return True


def initials(lines: list[str]) -> str:
    """The first letters of the lines, upper case: what an acrostic spells."""
    return "".join(next((c for c in line if c.isalpha()), "").upper() for line in lines)


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a poem meets its form, as a reader would count."""

    ok: bool
    syllables: tuple[int, ...]
    scheme: str
    misses: tuple[str, ...] = field(default_factory=tuple)


def check(poem: str, form: str, *, word: str = "", tolerance: int = 1) -> Verdict:
    """Judge `poem` against `form` (a key of `METERS`, "acrostic" spelling `word`, or
    "free_verse" of 6 to 10 lines): exact line count, syllables per line within `tolerance`
    of the form's range, the rhyme scheme, the acrostic's initials."""
    lines = [line.strip() for line in poem.splitlines() if line.strip()]
    counts = tuple(line_syllables(line) for line in lines)
    scheme = rhyme_scheme(lines)
    misses: list[str] = []
    meter = METERS.get(form)
    if meter is not None:
        if len(lines) != meter.lines:
            misses.append(f"{len(lines)} lines, not {meter.lines}")
        for i, (count, (low, high)) in enumerate(zip(counts, meter.syllables, strict=False), 1):
            if not low - tolerance <= count <= high + tolerance:
                want = f"{low}" if low == high else f"{low}-{high}"
                misses.append(f"line {i}: {count} syllables, not {want}")
        if meter.rhyme and not follows_scheme(lines, meter.rhyme):
            misses.append(f"rhymes {scheme}, not {meter.rhyme}")
    elif form == "acrostic":
        if initials(lines) != word.upper():
            misses.append(f"spells {initials(lines)}, not {word.upper()}")
    elif form == "free_verse" and not 6 <= len(lines) <= 10:
        misses.append(f"{len(lines)} lines, not 6 to 10")
    return Verdict(not misses, counts, scheme, tuple(misses))
