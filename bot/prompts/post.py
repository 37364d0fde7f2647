"""Post-processing: what a small model gets wrong, put right before anyone sees it."""

from __future__ import annotations

import re

# Chat-template and special tokens of common model families.
_TEMPLATE_TOKENS = re.compile(
    r"<\|im_(?:start|end)\|>(?:system|user|assistant)?|<\|endoftext\|>|</?s>|<\|eot_id\|>"
    r"|<\|start_header_id\|>.*?<\|end_header_id\|>|\[/?INST\]"
)
# Lines with markup or arithmetic are model debris, not verse ("3 | 160 (Theme) + 2 = 48").
_NOT_VERSE = re.compile(r"[|=<>{}#*_\\]|\d{2,}")
# A dangling parenthetical note at the end of a line: "... (Imagery", "(1)".
_TRAILING_NOTE = re.compile(r"\s*(?:\.\.\.|…)?\s*\([^)]{0,30}\)?\s*$")
_SENTENCE_END = re.compile(r"[.!?…\"'”’)\]]\s*$")


def clean_output(text: str, *, echo: str = "") -> str:
    """Strip template tokens, an echoed prompt and runaway repetition; end on a whole line.

    A line said three times is kept once; the text is cut after the last complete sentence
    or line when the model stopped mid-sentence.
    """
    text = _TEMPLATE_TOKENS.sub("", text).replace("\r\n", "\n")
    if echo and text.strip().startswith(echo.strip()) and echo.strip():
        text = text.strip()[len(echo.strip()) :]
    lines: list[str] = []
    seen: dict[str, int] = {}
    for line in text.strip().split("\n"):
        key = line.strip().lower()
        if key:
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > 1:  # a repeated line is a loop, not a refrain, in a short output
                continue
        lines.append(line.rstrip())
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return _end_whole(text)


def _end_whole(text: str) -> str:
    if not text or _SENTENCE_END.search(text):
        return text
    last_line_break = text.rfind("\n")
    last_stop = max(text.rfind(c) for c in ".!?…")
    if last_stop > 0 and last_stop > last_line_break:
        return text[: last_stop + 1]
    if last_line_break > 0:
        # poems end lines without punctuation; drop only a dangling half-line
        return text if len(text) - last_line_break > 12 else text[:last_line_break].rstrip()
    return text


def shape_poem(text: str, lines: int | None) -> tuple[str, bool]:
    """Fit a poem to a form with `lines` lines; returns (poem, whether it fits the form).

    Extra lines beyond the form are dropped (models often add a note after the poem).
    """
    rows = [_TRAILING_NOTE.sub("", r).strip() for r in text.split("\n")]
    rows = [r for r in rows if r and not _NOT_VERSE.search(r)]
    rows = [r for r in rows if not r.lower().startswith(("title:", "note:", "topic:", "style:"))]
    if lines is None:
        return "\n".join(rows), bool(rows)
    rows = _split_long_rows(rows, lines)
    if len(rows) >= lines:
        return "\n".join(rows[:lines]), True
    return "\n".join(rows), False


_SEAM = re.compile(r"[,;:.!?–—]\s+|\s-\s")
_CONJUNCTION = re.compile(r"\s(?=(?:and|but|so|while|when|then|yet|as)\s)")


def _split_long_rows(rows: list[str], lines: int) -> list[str]:
    """Break the longest rows at a comma, semicolon or dash until there are `lines` rows.

    A small model often runs two lines of verse together; their seam is usually punctuated.
    """
    rows = list(rows)
    while len(rows) < lines:
        index = max(range(len(rows)), key=lambda i: len(rows[i]), default=None)
        if index is None:
            break
        row = rows[index]
        middle = len(row) // 2
        cuts = [m.end() for m in _SEAM.finditer(row) if 8 < m.end() < len(row) - 8]
        if not cuts:  # no punctuation: a conjunction is the next best seam
            cuts = [
                m.start() + 1 for m in _CONJUNCTION.finditer(row) if 12 < m.start() < len(row) - 12
            ]
        if not cuts:
            break
        cut = min(cuts, key=lambda c: abs(c - middle))
        rows[index : index + 1] = [row[:cut].rstrip(), row[cut:].strip()]
    return rows
