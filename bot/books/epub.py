"""A co-written story as an EPUB 3 e-book, written with ebooklib. No Discord here.

What the e-book contains, in reading order:

* a title page: the title, the genre, the premise, "Written together by A, B and LLMOS", the
  branch note when the story is a branch, and the dates its parts were written;
* a contents page (the EPUB 3 navigation document; an EPUB 2 NCX rides along for older readers)
  listing the title page, every chapter and the appendix;
* one XHTML document per chapter: the chapter title as ``<h1>``, then each part's paragraphs as
  ``<p>`` (a blank line splits paragraphs, a single newline is a ``<br/>``, a paragraph that is
  only a scene-break line such as ``* * *`` is an ``<hr/>``);
* when the story has a lorebook, an appendix "The world of <title>": each entry's name as
  ``<h2>`` and its text as paragraphs.

Metadata: title, language, identifier, every contributor as a ``dc:creator``, the premise as the
description, the genre as the subject, and the date of the latest part. That date is also the
modified date, so the same story gives the same documents whenever it is exported (only a story
without parts falls back to the clock). Part.author is not printed: the title page credits the
contributors, and the prose reads as one book.

Promises about text: nothing people (or the model) wrote is ever interpreted as markup. Every
document is built element by element with lxml, so text is escaped by construction; the only
formatting recognised is a small Markdown subset (``*em*``, ``_em_``, ``**strong**``,
``***both***``, ``__underline__``, ``~~strike~~``, and ``\\*`` for a literal asterisk).
Characters XML 1.0 does not allow (C0 controls other than tab and newline, lone surrogates,
U+FFFE/U+FFFF) and the invisible C1 controls are dropped, so every document always parses with
a strict XML parser.
"""

from __future__ import annotations

import bisect
import io
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from ebooklib import epub
from lxml import etree

__all__ = ["Book", "Chapter", "Part", "chapters_by_session", "story_epub"]


@dataclass(frozen=True, slots=True)
class Part:
    """One part of the story, as a person or the bot wrote it."""

    text: str
    created_at: str  # ISO-8601; "Z" or an offset, or naive (read as UTC)
    author: str | None


@dataclass(frozen=True, slots=True)
class Chapter:
    """A titled run of parts."""

    title: str
    parts: list[Part]


@dataclass(frozen=True, slots=True)
class Book:
    """Everything the e-book shows. Names are already as they should be printed."""

    title: str
    premise: str
    genre: str | None
    contributors: list[str]
    chapters: list[Chapter]
    appendix: list[tuple[str, str]]
    identifier: str
    language: str = "en"
    branch_note: str | None = None


# --- cleaning text ---------------------------------------------------------------------------

# Everything outside XML 1.0's Char production, plus DEL and the C1 controls: those are legal in
# XML 1.0 but are never meant as text and show up in readers as boxes.
_NOT_TEXT = re.compile("[^\t\n\r\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(text: str) -> str:
    """The text with characters that cannot (or should not) be in an XML document dropped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Unicode's own separators mean what a blank line and a newline mean.
    text = text.replace("\u2029", "\n\n").replace("\u2028", "\n")
    return _NOT_TEXT.sub("", text)


def _line(text: str) -> str:
    """Cleaned text on one line, for titles, names and metadata."""
    return " ".join(_clean(text).split())


# --- chapters --------------------------------------------------------------------------------

_NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|"
    "sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|"
    "hundred"
)
_NUMBER = rf"(?:\d+|[ivxlcdm]+|(?:{_NUMBER_WORDS})(?:[\s-](?:{_NUMBER_WORDS}))?)"
_SUBTITLE = r"(?:\s*[:.\-–—]\s*\S.*)?"
# "Chapter 2", "Chapter Two: The Tower", "Part III", "Book 1 — Arrival". A separator is required
# before a subtitle so that a one-line part such as "Part 2 of the plan failed." stays prose.
_LABELLED = re.compile(rf"(?:chapter|part|book|act)\s+{_NUMBER}\.?{_SUBTITLE}", re.IGNORECASE)
_NAMED = re.compile(
    rf"(?:prologue|epilogue|interlude|foreword|afterword|introduction){_SUBTITLE}", re.IGNORECASE
)
_MARKDOWN_HEADING = re.compile(r"#{1,6}\s+(?P<title>\S.*?)(?:\s+#+)?")
# A heading written in bold or italics ("**Chapter 2**") is still a heading.
_WRAPPED = re.compile(r"(?P<mark>\*{1,3}|_{1,2})(?P<inner>\S(?:.*\S)?)(?P=mark)")
_HEADING_MAX = 120  # a longer line is prose, whatever it starts with

# A line made only of break ornaments: "***", "* * *", "---", "###", "~~~", "⁂", ...
_SCENE_BREAK = re.compile(r"(?:[*\-_~=#·•—–]\s*){3,}|[⁂❦§]")


def _heading(line: str) -> str | None:
    """The chapter title when this line is a heading of the story's own, else None."""
    line = line.strip()
    if not line or len(line) > _HEADING_MAX:
        return None
    if wrapped := _WRAPPED.fullmatch(line):
        line = wrapped["inner"].strip()
    if markdown := _MARKDOWN_HEADING.fullmatch(line):
        return markdown["title"].strip()
    if _LABELLED.fullmatch(line) or _NAMED.fullmatch(line):
        # "Chapter 2." is titled "Chapter 2"; an ellipsis is the writer's and stays.
        return line[:-1] if line.endswith(".") and not line.endswith("..") else line
    return None


def _is_scene_break(text: str) -> bool:
    """Whether this text is nothing but a scene-break line."""
    return _SCENE_BREAK.fullmatch(_clean(text).strip()) is not None


def _split_heading(text: str) -> tuple[str, str] | None:
    """(title, the rest of the part) when the part opens with a heading line, else None."""
    first, _, rest = _clean(text).strip().partition("\n")
    title = _heading(first)
    if title is None:
        return None
    return title, rest.strip("\n")


def _time(stamp: str) -> datetime | None:
    """An ISO-8601 time in UTC (naive read as UTC), or None when it cannot be read."""
    try:
        moment = datetime.fromisoformat(stamp.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def chapters_by_session(parts: list[Part], gap_hours: float = 6.0) -> list[Chapter]:
    """The story's parts grouped into chapters: at its own headings or breaks, else by session.

    The rules, in order of preference:

    * If any part opens with a heading ("Chapter 2", "Chapter Two: The Tower", "# The Tower",
      "Part III", "Prologue"), every such part starts a chapter titled by its heading; the
      heading line is not repeated as body text (the rest of that part, if any, is the chapter's
      first part). Scene-break parts then stay inside their chapter as scene breaks: a story
      that names its chapters uses breaks for scenes within them.
    * Otherwise, if any part is only a scene-break line ("***", "* * *", "---", "###"), each such
      part starts a new, untitled chapter and is itself dropped.
    * Otherwise, a gap of more than ``gap_hours`` between consecutive parts (a new writing
      session) starts a new, untitled chapter.

    Blank parts are left out, chapters left without prose are dropped, and untitled chapters are
    titled "Chapter N" by their position in the book. An empty story gives [].
    """
    parts = [part for part in parts if _clean(part.text).strip()]
    headings = [_split_heading(part.text) for part in parts]
    breaks = [_is_scene_break(part.text) for part in parts]

    groups: list[tuple[str | None, list[Part]]] = [(None, [])]
    if any(heading is not None for heading in headings):
        for part, heading in zip(parts, headings, strict=True):
            if heading is None:
                groups[-1][1].append(part)
                continue
            heading_title, rest = heading
            groups.append((heading_title, [replace(part, text=rest)] if rest.strip() else []))
    elif any(breaks):
        for part, is_break in zip(parts, breaks, strict=True):
            if is_break:
                groups.append((None, []))
            else:
                groups[-1][1].append(part)
    else:
        gap_seconds = gap_hours * 3600
        previous: datetime | None = None
        for part in parts:
            moment = _time(part.created_at)
            if (
                previous is not None
                and moment is not None
                and (moment - previous).total_seconds() > gap_seconds
            ):
                groups.append((None, []))
            # An unreadable time neither starts a chapter nor hides the next gap.
            previous = moment if moment is not None else previous
            groups[-1][1].append(part)

    chapters: list[Chapter] = []
    for title, members in groups:
        # A scene break at either edge of a chapter separates nothing.
        while members and _is_scene_break(members[0].text):
            members.pop(0)
        while members and _is_scene_break(members[-1].text):
            members.pop()
        if members:
            number = len(chapters) + 1
            chapters.append(Chapter(title=title or f"Chapter {number}", parts=members))
    return chapters


# --- XHTML -----------------------------------------------------------------------------------

_XHTML = "http://www.w3.org/1999/xhtml"
_OPS = "http://www.idpf.org/2007/ops"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_EPUB_TYPE = f"{{{_OPS}}}type"
_CSS_NAME = "book.css"

_CSS = """\
body { font-family: serif; line-height: 1.5; margin: 0 4%; }
h1 { font-size: 1.6em; line-height: 1.25; text-align: center; margin: 2.5em 0 1.5em;
     page-break-before: always; break-before: page; }
h2 { font-size: 1.15em; line-height: 1.3; margin: 1.6em 0 0.5em; page-break-after: avoid; }
p { margin: 0; text-indent: 1.4em; text-align: justify; orphans: 2; widows: 2;
    -webkit-hyphens: auto; -epub-hyphens: auto; hyphens: auto; }
/* Flush, as in print: the first paragraph after a heading or a scene break. */
h1 + p, h2 + p, hr + p, h1 + .part > p:first-child { text-indent: 0; }
hr.scene-break { border: 0; border-top: 1px solid; width: 25%; margin: 1.2em auto; }
.titlepage h1 { font-size: 2em; margin: 3em 0 0.5em; }
.titlepage p { text-indent: 0; text-align: center; margin: 0.6em 0; }
.titlepage .genre { font-style: italic; }
.titlepage .premise { margin: 2em 0; }
.titlepage .premise p { text-align: justify; text-indent: 0; margin: 0 0 0.6em; }
.titlepage .byline { margin-top: 2em; }
.titlepage .branch, .titlepage .dates { font-size: 0.9em; }
u { text-decoration: underline; }
s { text-decoration: line-through; }
"""


@dataclass(frozen=True, slots=True)
class _Mark:
    """One Markdown delimiter: how it opens, how it closes, and what it renders as."""

    opener: re.Pattern[str]  # matched where the delimiter starts; content starts at its end
    closer: re.Pattern[str]  # zero-width, found at every position a closing delimiter starts
    width: int  # the closing delimiter's length
    tags: tuple[str, ...]
    first: str  # the character the delimiter starts with


def _mark(opener: str, closer: str, width: int, *tags: str) -> _Mark:
    """A _Mark from its patterns; the closer is wrapped to match at every position."""
    first = opener.removeprefix(r"(?<!\w)").removeprefix("\\")[0]
    return _Mark(re.compile(opener), re.compile(f"(?={closer})"), width, tags, first)


# Tried in this order where a delimiter character is met; the content must not start or end
# with a space, so "2 * 3 * 4" stays arithmetic. Each closer is the earliest one after the
# opener, which is what a lazy regex would find, but looked up in a precomputed list so that a
# paragraph full of unclosed delimiters costs linear time, not quadratic.
_MARKS = (
    _mark(r"\*\*\*(?=\S)", r"(?<=\S)\*\*\*(?!\*)", 3, "strong", "em"),
    _mark(r"\*\*(?=\S)", r"(?<=\S)\*\*(?!\*)", 2, "strong"),
    _mark(r"\*(?=[^\s*])", r"(?<=[^\s*])\*(?!\*)", 1, "em"),
    _mark(r"__(?=\S)", r"(?<=\S)__(?!_)", 2, "u"),
    # Underscores inside words (snake_case, file_names) are not emphasis.
    _mark(r"(?<!\w)_(?=[^\s_])", r"(?<=[^\s_])_(?!\w)", 1, "em"),
    _mark(r"~~(?=\S)", r"(?<=\S)~~", 2, "s"),
)
_DELIMITERS = "*_~"
_ESCAPABLE = "\\*_~"
# Deeper nesting than this is not something anyone writes on purpose; past it the delimiters
# are kept as text, which also bounds recursion on hostile input.
_MAX_NESTING = 8


def _element(parent: etree._Element, tag: str, **attributes: str) -> etree._Element:
    """A new XHTML child element of parent."""
    return etree.SubElement(parent, f"{{{_XHTML}}}{tag}", attributes)


def _append_text(parent: etree._Element, text: str) -> None:
    """Append text to parent, each newline as a <br/>; lxml escapes it on output."""
    for index, line in enumerate(text.split("\n")):
        if index:
            _element(parent, "br")
        if not line:
            continue
        # Not len(parent) or parent[-1]: lxml counts children by walking them all.
        last = next(parent.iterchildren(reversed=True), None)
        if last is None:
            parent.text = (parent.text or "") + line
        else:
            last.tail = (last.tail or "") + line


def _append_inline(parent: etree._Element, text: str, depth: int = 0) -> None:
    """Append text to parent with the Markdown subset rendered and everything else as text."""
    escaped: set[int] = set()
    index = 0
    while (index := text.find("\\", index)) != -1:
        if index + 1 < len(text) and text[index + 1] in _ESCAPABLE:
            escaped.add(index + 1)
            index += 2
        else:
            index += 1
    closers = [
        [m.start() for m in mark.closer.finditer(text) if m.start() not in escaped]
        for mark in _MARKS
    ]

    # Text is gathered and appended once per run between elements: appending piece by piece
    # would copy the growing string each time.
    pending: list[str] = []
    done = 0  # text[:done] is in pending or in the tree
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 in escaped:
            pending.append(text[done:index])
            done = index + 1  # the escaped character goes out as plain text with what follows
            index += 2
            continue
        if char not in _DELIMITERS or depth >= _MAX_NESTING:
            index += 1
            continue
        for mark, positions in zip(_MARKS, closers, strict=True):
            if mark.first != char:
                continue
            opened = mark.opener.match(text, index)
            if opened is None:
                continue
            # The content is at least one character long.
            found = bisect.bisect_left(positions, opened.end() + 1)
            if found == len(positions):
                continue
            close = positions[found]
            pending.append(text[done:index])
            _append_text(parent, "".join(pending))
            pending.clear()
            target = parent
            for tag in mark.tags:
                target = _element(target, tag)
            _append_inline(target, text[opened.end() : close], depth + 1)
            index = done = close + mark.width
            break
        else:
            index += 1
    pending.append(text[done:])
    _append_text(parent, "".join(pending))


def _paragraphs(text: str) -> Iterator[str]:
    """The paragraphs of a text: split at blank lines, trailing spaces dropped, empties skipped."""
    for block in re.split(r"\n(?:[^\S\n]*\n)+", _clean(text)):
        paragraph = "\n".join(line.rstrip() for line in block.strip().split("\n"))
        if paragraph:
            yield paragraph


def _append_prose(parent: etree._Element, text: str) -> None:
    """Append the text's paragraphs to parent as <p> (scene-break lines as <hr/>)."""
    for paragraph in _paragraphs(text):
        if _is_scene_break(paragraph):
            _element(parent, "hr", **{"class": "scene-break"})
        else:
            # dir="auto": a paragraph in Arabic or Hebrew lays out right-to-left on its own.
            _append_inline(_element(parent, "p", dir="auto"), paragraph)


# Languages written right to left (primary subtags): the book's pages then turn the other way.
_RIGHT_TO_LEFT = frozenset({"ar", "arc", "ckb", "dv", "fa", "he", "ps", "sd", "ug", "ur", "yi"})


def _direction(language: str) -> str | None:
    """The writing direction, "rtl", of a right-to-left language; None for the default."""
    return "rtl" if language.split("-")[0].lower() in _RIGHT_TO_LEFT else None


def _document(title: str, language: str, kind: str) -> tuple[etree._Element, etree._Element]:
    """An XHTML document (root, and the <section> of the given epub:type to fill)."""
    root = etree.Element(f"{{{_XHTML}}}html", nsmap={None: _XHTML, "epub": _OPS})
    root.set("lang", language)
    root.set(_XML_LANG, language)
    if direction := _direction(language):
        root.set("dir", direction)
    head = _element(root, "head")
    _element(head, "meta", charset="utf-8")
    _element(head, "title").text = title
    _element(head, "link", rel="stylesheet", type="text/css", href=_CSS_NAME)
    body = _element(root, "body")
    section = _element(body, "section", **{"class": kind})
    section.set(_EPUB_TYPE, kind)
    return root, section


def _serialise(root: etree._Element) -> bytes:
    """The document's bytes: XML declaration, HTML5 doctype, UTF-8."""
    return etree.tostring(
        root, xml_declaration=True, encoding="utf-8", doctype="<!DOCTYPE html>", pretty_print=True
    )


class _Document(epub.EpubHtml):
    """An XHTML document whose bytes are exactly the ones built here.

    ebooklib's own EpubHtml re-parses its content with lxml's lenient HTML parser and rebuilds
    it; ours are already well-formed XHTML, so they go into the book untouched.
    """

    def __init__(self, uid: str, file_name: str, title: str, content: bytes) -> None:
        super().__init__(
            uid=uid, file_name=file_name, title=title, media_type="application/xhtml+xml"
        )
        self.content = content

    def get_content(self, default: bytes | None = None) -> bytes:
        return bytes(self.content)


# --- the title page, chapters and appendix ---------------------------------------------------

_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def _day(moment: datetime) -> str:
    """A date as "1 December 2026" (month names spelled here, not by the process's locale)."""
    return f"{moment.day} {_MONTHS[moment.month - 1]} {moment.year}"


def _date_range(first: datetime, last: datetime) -> str:
    """The dates as "1 December 2026", "1–3 December 2026", "30 November – 2 December 2026"."""
    if first.date() == last.date():
        return _day(first)
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day}–{_day(last)}"
    if first.year == last.year:
        return f"{first.day} {_MONTHS[first.month - 1]} – {_day(last)}"
    return f"{_day(first)} – {_day(last)}"


def _names(names: Iterable[str]) -> str:
    """Names as a phrase: "A", "A and B", "A, B and C"."""
    listed = list(names)
    if len(listed) <= 1:
        return "".join(listed)
    return f"{', '.join(listed[:-1])} and {listed[-1]}"


def _contributors(book: Book) -> list[str]:
    """The contributors, cleaned, each once (anonymised people may share one placeholder)."""
    return list(dict.fromkeys(name for name in map(_line, book.contributors) if name))


def _times(book: Book) -> list[datetime]:
    """When the book's parts were written, in UTC, the unreadable ones left out."""
    stamps = (_time(part.created_at) for chapter in book.chapters for part in chapter.parts)
    return sorted(moment for moment in stamps if moment is not None)


def _title_page(book: Book, title: str, language: str, times: list[datetime]) -> bytes:
    """The title page document."""
    root, section = _document(title, language, "titlepage")
    _element(section, "h1", dir="auto").text = title
    if book.genre and (genre := _line(book.genre)):
        _element(section, "p", dir="auto", **{"class": "genre"}).text = genre
    if any(_paragraphs(book.premise)):
        _append_prose(_element(section, "div", **{"class": "premise"}), book.premise)
    if contributors := _contributors(book):
        together = "Written together by" if len(contributors) > 1 else "Written by"
        byline = _element(section, "p", dir="auto", **{"class": "byline"})
        byline.text = f"{together} {_names(contributors)}"
    if book.branch_note and (note := _line(book.branch_note)):
        _element(section, "p", dir="auto", **{"class": "branch"}).text = note
    if times:
        _element(section, "p", **{"class": "dates"}).text = _date_range(times[0], times[-1])
    return _serialise(root)


def _chapter_page(chapter_title: str, parts: list[Part], language: str) -> bytes:
    """One chapter's document: its title, then each part's paragraphs."""
    root, section = _document(chapter_title, language, "chapter")
    _element(section, "h1", dir="auto").text = chapter_title
    for part in parts:
        # One <div> per part: the parts stay distinct in the markup, yet read as one prose.
        _append_prose(_element(section, "div", **{"class": "part"}), part.text)
    return _serialise(root)


def _appendix_page(heading: str, entries: list[tuple[str, str]], language: str) -> bytes:
    """The lorebook appendix: each entry's name and text."""
    root, section = _document(heading, language, "appendix")
    _element(section, "h1", dir="auto").text = heading
    for name, text in entries:
        entry = _element(section, "div", **{"class": "entry"})
        _element(entry, "h2", dir="auto").text = _line(name) or "Untitled"
        _append_prose(entry, text)
    return _serialise(root)


# --- the book --------------------------------------------------------------------------------

_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")


def story_epub(book: Book) -> bytes:
    """The story as the bytes of an EPUB 3 file (with an EPUB 2 NCX for older readers)."""
    title = _line(book.title) or "Untitled story"
    language = book.language.strip()
    if not _LANGUAGE_TAG.fullmatch(language):
        language = "en"  # a tag that is not one would make every document's xml:lang invalid
    # The identifier is the book's identity to a reader's library; an unusable one is replaced by
    # one derived from the title, so re-exports still land on the same book.
    identifier = _line(book.identifier) or f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, title)}"
    times = _times(book)

    ebook = epub.EpubBook()
    ebook.set_identifier(identifier)
    ebook.set_title(title)
    ebook.set_language(language)
    direction = _direction(language)
    if direction:
        ebook.set_direction(direction)  # the spine's page-progression-direction
    for number, name in enumerate(_contributors(book), start=1):
        ebook.add_author(name, role="aut", uid=f"creator-{number}")
    if premise := _line(book.premise):
        ebook.add_metadata("DC", "description", premise)
    if book.genre and (genre := _line(book.genre)):
        ebook.add_metadata("DC", "subject", genre)
    if times:
        ebook.add_metadata("DC", "date", times[-1].strftime("%Y-%m-%dT%H:%M:%SZ"))

    css = epub.EpubItem(
        uid="style", file_name=_CSS_NAME, media_type="text/css", content=_CSS.encode()
    )
    ebook.add_item(css)

    title_page = _Document(
        "titlepage", "title.xhtml", "Title page", _title_page(book, title, language, times)
    )
    documents = [title_page]
    chapters: list[_Document] = []
    for number, chapter in enumerate(book.chapters, start=1):
        chapter_title = _line(chapter.title) or f"Chapter {number}"
        content = _chapter_page(chapter_title, chapter.parts, language)
        chapters.append(
            _Document(f"chapter-{number}", f"chapter-{number:03d}.xhtml", chapter_title, content)
        )
    documents += chapters
    if book.appendix:
        heading = f"The world of {title}"
        content = _appendix_page(heading, book.appendix, language)
        documents.append(_Document("appendix", "appendix.xhtml", heading, content))

    nav = epub.EpubNav(title="Contents", direction=direction)
    nav.add_item(css)
    for document in documents:
        ebook.add_item(document)
    ebook.add_item(epub.EpubNcx())
    ebook.add_item(nav)

    ebook.toc = documents
    # Title page, then contents, then the story: the order of a printed book.
    ebook.spine = [title_page, nav, *documents[1:]]
    # Landmarks (EPUB 3) and the guide (EPUB 2): where the contents are and where reading starts.
    ebook.guide = [{"type": "toc", "href": nav.file_name, "title": "Contents"}]
    if chapters:
        ebook.guide.append({"type": "text", "item": chapters[0]})

    buffer = io.BytesIO()
    options = {
        # The modified date is the latest part's, not the clock's: the same story, the same OPF.
        "mtime": times[-1] if times else datetime.now(UTC),
        # No page markers here; the page-list pass would only re-parse every document.
        "epub3_pages": False,
        # ebooklib otherwise turns a write error into a warning and a False.
        "raise_exceptions": True,
    }
    epub.write_epub(buffer, ebook, options)
    return buffer.getvalue()
