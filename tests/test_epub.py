"""The story e-book (bot/books/epub.py): written with ebooklib, read back with ebooklib, and every
XML document in it parsed with lxml's strict parser. Checked: the title page, chapters in spine
order with every part's text in order, the Markdown subset, the appendix, navigation (EPUB 3 nav
and EPUB 2 NCX), metadata, the zip layout e-readers require, hostile text coming back as text,
and how chapters_by_session finds chapters.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ebooklib import epub
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from bot.books.epub import Book, Chapter, Part, chapters_by_session, story_epub

XHTML = "http://www.w3.org/1999/xhtml"
H = f"{{{XHTML}}}"
STRICT = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


# --- helpers ---------------------------------------------------------------------------------


def parse(data: bytes) -> etree._Element:
    """The document's root, by a parser that refuses anything not well-formed."""
    return etree.fromstring(data, STRICT)


def text_of(element: etree._Element) -> str:
    """The element's text as a reader sees it: markup dropped, <br/> as a newline."""
    pieces = [element.text or ""]
    for child in element:
        pieces.append("\n" if child.tag == f"{H}br" else text_of(child))
        pieces.append(child.tail or "")
    return "".join(pieces)


def read_back(data: bytes, tmp_path: Path) -> epub.EpubBook:
    """The e-book as ebooklib reads it from a file."""
    path = tmp_path / "story.epub"
    path.write_bytes(data)
    return epub.read_epub(str(path))


def spine_documents(book: epub.EpubBook) -> list[tuple[str, etree._Element]]:
    """(file name, parsed root) of each spine document, in reading order."""
    documents = []
    for idref, _linear in book.spine:
        item = book.get_item_with_id(idref)
        # .content: the bytes as stored. ebooklib's get_content() on a document it has read
        # rebuilds it through its HTML parser, which is not what a reader would see.
        documents.append((item.file_name, parse(item.content)))
    return documents


def chapter_roots(book: epub.EpubBook) -> list[etree._Element]:
    """The chapter documents, in spine order."""
    return [
        root
        for _name, root in spine_documents(book)
        if root.find(f".//{H}section[@class='chapter']") is not None
    ]


def parts_as_read(root: etree._Element) -> list[str]:
    """Each part's text in a chapter document, paragraphs joined by a blank line."""
    return [
        "\n\n".join(text_of(p) for p in div.iter(f"{H}p"))
        for div in root.iter(f"{H}div")
        if div.get("class") == "part"
    ]


def every_xml_document(data: bytes) -> Iterator[tuple[str, etree._Element]]:
    """Every XML file in the zip, parsed strictly."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            if name.endswith((".xhtml", ".opf", ".ncx", ".xml")):
                yield name, parse(archive.read(name))


# --- the book --------------------------------------------------------------------------------

PARTS = [
    # Session one, 1 December.
    Part("The lighthouse keeper counted ships.\n\nNone came.", "2026-12-01T20:00:00+00:00", "Ana"),
    Part("She lit the *lamp* anyway.\nIt was **habit**.", "2026-12-01T20:20:00Z", "LLMOS"),
    # Session two, the next evening: it opens with a heading of the story's own.
    Part("# The Stranger", "2026-12-02T19:00:00", "Bo"),
    Part("A knock at the door — three, then one.", "2026-12-02T19:05:00Z", "LLMOS"),
    Part("***", "2026-12-02T19:06:00Z", "Bo"),
    Part("Later, the tea went cold.", "2026-12-02T19:10:00Z", "Ana"),
    Part("Chapter Three: Wren\n\nHe said his name was Wren.", "2026-12-02T19:30:00Z", "Bo"),
]
# What each part reads as in the book: headings are chapter titles, not body text; Markdown marks
# are rendered, not shown; the scene break is a rule, not a paragraph.
READ = [
    [
        "The lighthouse keeper counted ships.\n\nNone came.",
        "She lit the lamp anyway.\nIt was habit.",
    ],
    ["A knock at the door — three, then one.", "", "Later, the tea went cold."],
    ["He said his name was Wren."],
]
TITLES = ["Chapter 1", "The Stranger", "Chapter Three: Wren"]


def make_book(**changes: object) -> Book:
    fields: dict[str, object] = {
        "title": "The Keeper",
        "premise": "A lighthouse keeper waits for a ship that never comes.",
        "genre": "Literary fiction",
        "contributors": ["Ana", "LLMOS", "Bo"],
        "chapters": chapters_by_session(PARTS),
        "appendix": [("The Lighthouse", "Forty metres of *white* stone."), ("Wren", "A stranger.")],
        "identifier": "llmos-story-42",
        "branch_note": "An alternate branch of “The Keeper” from part 12.",
    }
    fields.update(changes)
    return Book(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def book_bytes() -> bytes:
    return story_epub(make_book())


def test_title_page(book_bytes: bytes, tmp_path: Path) -> None:
    name, title_page = spine_documents(read_back(book_bytes, tmp_path))[0]
    assert name == "title.xhtml"
    section = title_page.find(f".//{H}section")
    assert section.get("{http://www.idpf.org/2007/ops}type") == "titlepage"
    lines = [text_of(element) for element in section.iter(f"{H}h1", f"{H}p")]
    assert lines == [
        "The Keeper",
        "Literary fiction",
        "A lighthouse keeper waits for a ship that never comes.",
        "Written together by Ana, LLMOS and Bo",
        "An alternate branch of “The Keeper” from part 12.",
        "1–2 December 2026",
    ]


def test_chapters_in_spine_order_with_every_part_in_order(
    book_bytes: bytes, tmp_path: Path
) -> None:
    chapters = chapter_roots(read_back(book_bytes, tmp_path))
    assert [text_of(root.find(f".//{H}h1")) for root in chapters] == TITLES
    assert [root.findtext(f"{H}head/{H}title") for root in chapters] == TITLES
    assert [parts_as_read(root) for root in chapters] == READ
    # The heading parts are titles only, never repeated in the prose.
    body = "".join(text_of(root.find(f".//{H}section")) for root in chapters)
    assert body.count("The Stranger") == 1 and body.count("Chapter Three") == 1


def test_markdown_and_breaks_rendered(book_bytes: bytes, tmp_path: Path) -> None:
    first, second, _third = chapter_roots(read_back(book_bytes, tmp_path))
    assert [e.text for e in first.iter(f"{H}em")] == ["lamp"]
    assert [e.text for e in first.iter(f"{H}strong")] == ["habit"]
    assert len(list(first.iter(f"{H}br"))) == 1  # the single newline in the second part
    assert "*" not in text_of(first.find(f".//{H}section"))
    [rule] = second.iter(f"{H}hr")
    assert rule.get("class") == "scene-break"


def test_appendix(book_bytes: bytes, tmp_path: Path) -> None:
    name, appendix = spine_documents(read_back(book_bytes, tmp_path))[-1]
    assert name == "appendix.xhtml"
    assert text_of(appendix.find(f".//{H}h1")) == "The world of The Keeper"
    assert [text_of(h2) for h2 in appendix.iter(f"{H}h2")] == ["The Lighthouse", "Wren"]
    assert [text_of(p) for p in appendix.iter(f"{H}p")] == [
        "Forty metres of white stone.",
        "A stranger.",
    ]
    assert [e.text for e in appendix.iter(f"{H}em")] == ["white"]


def test_navigation_lists_title_page_chapters_and_appendix(
    book_bytes: bytes, tmp_path: Path
) -> None:
    book = read_back(book_bytes, tmp_path)
    expected = [
        ("title.xhtml", "Title page"),
        ("chapter-001.xhtml", "Chapter 1"),
        ("chapter-002.xhtml", "The Stranger"),
        ("chapter-003.xhtml", "Chapter Three: Wren"),
        ("appendix.xhtml", "The world of The Keeper"),
    ]
    [nav] = [item for item in book.get_items() if isinstance(item, epub.EpubNav)]
    toc = parse(nav.content).find(f".//{H}nav")
    assert toc.get("{http://www.idpf.org/2007/ops}type") == "toc"
    assert [(a.get("href"), a.text) for a in toc.iter(f"{H}a")] == expected
    # Reading order: title page, contents, the chapters, the appendix.
    assert [idref for idref, _ in book.spine] == [
        "titlepage",
        "nav",
        "chapter-1",
        "chapter-2",
        "chapter-3",
        "appendix",
    ]
    with zipfile.ZipFile(io.BytesIO(book_bytes)) as archive:
        ncx = parse(archive.read("EPUB/toc.ncx"))
    daisy = "{http://www.daisy.org/z3986/2005/ncx/}"
    points = [
        (point.find(f"{daisy}content").get("src"), point.findtext(f"{daisy}navLabel/{daisy}text"))
        for point in ncx.iter(f"{daisy}navPoint")
    ]
    assert points == expected


def test_metadata(book_bytes: bytes, tmp_path: Path) -> None:
    book = read_back(book_bytes, tmp_path)

    def values(name: str) -> list[str]:
        return [value for value, _attributes in book.get_metadata("DC", name)]

    assert values("title") == ["The Keeper"]
    assert values("language") == ["en"]
    assert values("identifier") == ["llmos-story-42"]
    assert values("creator") == ["Ana", "LLMOS", "Bo"]
    assert values("date") == ["2026-12-02T19:30:00Z"]
    assert values("subject") == ["Literary fiction"]
    with zipfile.ZipFile(io.BytesIO(book_bytes)) as archive:
        opf = parse(archive.read("EPUB/content.opf"))
    opf_ns = "{http://www.idpf.org/2007/opf}"
    assert opf.get("version") == "3.0"
    modified = opf.find(f"{opf_ns}metadata/{opf_ns}meta[@property='dcterms:modified']")
    assert modified.text == "2026-12-02T19:30:00Z"  # the latest part's time, not the clock's
    css = book.get_item_with_id("style")
    assert b"line-height" in css.get_content()


def test_zip_layout_e_readers_require(book_bytes: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(book_bytes)) as archive:
        first = archive.infolist()[0]
        assert first.filename == "mimetype"
        assert first.compress_type == zipfile.ZIP_STORED
        assert first.extra == b""
        assert archive.read("mimetype") == b"application/epub+zip"
        container = parse(archive.read("META-INF/container.xml"))
        ns = "{urn:oasis:names:tc:opendocument:xmlns:container}"
        [rootfile] = container.iter(f"{ns}rootfile")
        assert rootfile.get("media-type") == "application/oebps-package+xml"
        opf = parse(archive.read(rootfile.get("full-path")))
        assert opf.tag == "{http://www.idpf.org/2007/opf}package"
    # What readers sniff: the mimetype at a fixed offset right after the first local header.
    assert book_bytes[:4] == b"PK\x03\x04"
    assert book_bytes[30:38] == b"mimetype"
    assert book_bytes[38:58] == b"application/epub+zip"


def test_every_document_parses_and_the_same_story_gives_the_same_contents(
    book_bytes: bytes,
) -> None:
    names = [name for name, _root in every_xml_document(book_bytes)]
    assert {"EPUB/nav.xhtml", "EPUB/toc.ncx", "EPUB/content.opf"} <= set(names)
    again = story_epub(make_book())
    with zipfile.ZipFile(io.BytesIO(book_bytes)) as one, zipfile.ZipFile(io.BytesIO(again)) as two:
        assert one.namelist() == two.namelist()
        for name in one.namelist():
            assert one.read(name) == two.read(name), name


def test_one_writer_and_nothing_else(tmp_path: Path) -> None:
    book = read_back(
        story_epub(make_book(contributors=["Ana"], genre=None, branch_note=None, appendix=[])),
        tmp_path,
    )
    documents = spine_documents(book)
    assert [name for name, _ in documents][-1] == "chapter-003.xhtml"  # no appendix
    lines = [text_of(p) for p in documents[0][1].iter(f"{H}p")]
    assert "Written by Ana" in lines
    assert "Literary fiction" not in lines


def test_an_empty_story_is_still_a_book(tmp_path: Path) -> None:
    data = story_epub(
        make_book(chapters=[], appendix=[], contributors=[], premise="", branch_note=None)
    )
    book = read_back(data, tmp_path)
    assert [idref for idref, _ in book.spine] == ["titlepage", "nav"]
    title_page = spine_documents(book)[0][1]
    assert [text_of(p) for p in title_page.iter(f"{H}p")] == ["Literary fiction"]
    assert len(list(every_xml_document(data))) >= 5


# --- hostile text ----------------------------------------------------------------------------

HOSTILE = "<script>alert(1)</script> &amp; ]]> <![CDATA[x]]> &#0; <!-- c --> <?pi x?>"


def test_hostile_text_comes_back_as_text(tmp_path: Path) -> None:
    parts = [
        Part(f"{HOSTILE}\x00\x07\x1b\x7f\x85 ok", "2026-12-01T10:00:00Z", "<b>Eve</b>"),
        Part("🐉🔥 emoji, and right to left: שלום עולם · مرحبا", "2026-12-01T10:01:00Z", None),
        Part('<img src=x onerror="alert(1)"> *<i>em</i>*', "2026-12-01T10:02:00Z", None),
    ]
    data = story_epub(
        Book(
            title=f"Title {HOSTILE}\x00",
            premise=f"Premise {HOSTILE}\x08",
            genre="<genre>",
            contributors=["<b>Eve</b>", "a writer who asked to be forgotten", "LLMOS"],
            chapters=[Chapter(title=f"<h1>{HOSTILE}</h1>\x0c", parts=parts)],
            appendix=[(f"<lore>{HOSTILE}", f"{HOSTILE}\x01")],
            identifier="llmos-story-<7>&",
            language="he",
            branch_note=f"branch {HOSTILE}",
        )
    )
    roots = dict(every_xml_document(data))  # every one parsed strictly
    for name, root in roots.items():
        assert not [e for e in root.iter() if isinstance(e.tag, str) and e.tag.endswith("script")]
        assert not list(root.iter(f"{H}img", f"{H}i", f"{H}b", f"{H}lore", f"{H}genre")), name
        assert not [n for n in root.iter() if not isinstance(n.tag, str)], name  # no comments, PIs
        for element in root.iter():
            for value in (element.text, element.tail):
                assert not value or not any(c in value for c in "\x00\x07\x1b\x7f\x85\x08\x0c")
    book = read_back(data, tmp_path)
    [chapter] = chapter_roots(book)
    assert parts_as_read(chapter) == [
        f"{HOSTILE} ok",
        "🐉🔥 emoji, and right to left: שלום עולם · مرحبا",
        '<img src=x onerror="alert(1)"> <i>em</i>',
    ]
    assert [e.text for e in chapter.iter(f"{H}em")] == ["<i>em</i>"]
    assert text_of(chapter.find(f".//{H}h1")) == f"<h1>{HOSTILE}</h1>"
    title_page = spine_documents(book)[0][1]
    assert text_of(title_page.find(f".//{H}h1")) == f"Title {HOSTILE}"
    assert title_page.get("lang") == "he"
    assert title_page.get("dir") == "rtl"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        opf = parse(archive.read("EPUB/content.opf"))
    spine = opf.find("{http://www.idpf.org/2007/opf}spine")
    assert spine.get("page-progression-direction") == "rtl"
    assert [value for value, _ in book.get_metadata("DC", "creator")] == [
        "<b>Eve</b>",
        "a writer who asked to be forgotten",
        "LLMOS",
    ]
    assert [value for value, _ in book.get_metadata("DC", "identifier")] == ["llmos-story-<7>&"]


def test_a_language_that_is_not_a_tag_falls_back_to_english() -> None:
    data = story_epub(make_book(language='en" onload="x'))
    roots = dict(every_xml_document(data))
    assert roots["EPUB/chapter-001.xhtml"].get("lang") == "en"
    assert roots["EPUB/chapter-001.xhtml"].get("dir") is None


def test_long_hostile_markdown_is_fast_and_well_formed() -> None:
    # Unclosed and deeply nested delimiters: linear work, bounded nesting, still one <p>.
    text = "*a _b ~~c " * 5_000 + "*_~" * 3_000 + "x" + "~_*" * 3_000 + "\\" * 5_000
    data = story_epub(make_book(chapters=[Chapter("Long", [Part(text, "", None)])]))
    roots = dict(every_xml_document(data))
    chapter = roots["EPUB/chapter-001.xhtml"]
    assert len(list(chapter.iter(f"{H}p"))) == 1


BODY_TAGS = ("section", "h1", "h2", "div", "p", "br", "hr", "em", "strong", "u", "s")
ALLOWED_BODY = {f"{H}{tag}" for tag in BODY_TAGS}


@settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    text=st.text(max_size=200),
    title=st.text(max_size=40),
    stamp=st.text(max_size=30) | st.datetimes().map(lambda moment: moment.isoformat()),
)
def test_any_text_gives_a_book_whose_documents_parse(text: str, title: str, stamp: str) -> None:
    parts = [Part(text, stamp, None), Part("*" + text + "*", stamp, title)]
    chapters = chapters_by_session(parts) or [Chapter(title, parts)]
    data = story_epub(
        make_book(title=title, premise=text, chapters=chapters, appendix=[(title, text)])
    )
    for name, root in every_xml_document(data):
        if name.endswith(".xhtml") and not name.endswith("nav.xhtml"):
            body = root.find(f"{H}body")
            assert {e.tag for e in body.iter()} - {f"{H}body"} <= ALLOWED_BODY, name


# --- chapters_by_session ---------------------------------------------------------------------


def at(hour: float, day: int = 1) -> str:
    whole = int(hour)
    minutes = round((hour - whole) * 60)
    return f"2026-12-{day:02d}T{whole:02d}:{minutes:02d}:00Z"


def story(*texts: str) -> list[Part]:
    """Parts a minute apart: one session, so only the story's own breaks can split it."""
    return [
        Part(text, f"2026-12-01T10:{minute:02d}:00Z", None) for minute, text in enumerate(texts)
    ]


def shape(chapters: list[Chapter]) -> list[tuple[str, list[str]]]:
    return [(chapter.title, [part.text for part in chapter.parts]) for chapter in chapters]


def test_an_empty_story_has_no_chapters() -> None:
    assert chapters_by_session([]) == []
    assert chapters_by_session(story("", "  \n\t", "\x00")) == []


def test_headings_start_chapters_and_are_not_repeated() -> None:
    chapters = chapters_by_session(
        story("a", "Chapter 2", "b", "c", "Chapter Two: The Tower\n\nd\ne", "# The End", "f")
    )
    assert shape(chapters) == [
        ("Chapter 1", ["a"]),
        ("Chapter 2", ["b", "c"]),
        ("Chapter Two: The Tower", ["d\ne"]),
        ("The End", ["f"]),
    ]
    # The part that carried a heading keeps its author and time.
    source = story("Chapter 9: Nine\nbody")[0]
    [chapter] = chapters_by_session([source])
    assert chapter.parts[0].created_at == source.created_at


@pytest.mark.parametrize(
    ("line", "title"),
    [
        ("Chapter 2", "Chapter 2"),
        ("chapter 2.", "chapter 2"),
        ("CHAPTER TWELVE", "CHAPTER TWELVE"),
        ("Chapter Twenty-One — The Long Night", "Chapter Twenty-One — The Long Night"),
        ("Chapter Two: The Tower", "Chapter Two: The Tower"),
        ("Part III", "Part III"),
        ("Book 1: Arrival", "Book 1: Arrival"),
        ("Prologue", "Prologue"),
        ("Epilogue: After", "Epilogue: After"),
        ("# The Tower", "The Tower"),
        ("## The Tower ##", "The Tower"),
        ("**Chapter 4**", "Chapter 4"),
        ("*Chapter Five: Ash*", "Chapter Five: Ash"),
    ],
)
def test_heading_forms(line: str, title: str) -> None:
    assert shape(chapters_by_session(story("before", line, "after"))) == [
        ("Chapter 1", ["before"]),
        (title, ["after"]),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "Part 2 of the plan failed.",
        "Chapter one ended badly for everyone involved",
        "#hashtag",
        "The chapter 2 notes were lost.",
        "Prologues are for cowards, she said.",
        "# " + "long " * 40,
    ],
)
def test_prose_that_only_looks_like_a_heading(line: str) -> None:
    assert shape(chapters_by_session(story("before", line, "after"))) == [
        ("Chapter 1", ["before", line, "after"])
    ]


def test_scene_breaks_start_untitled_chapters_when_there_are_no_headings() -> None:
    chapters = chapters_by_session(story("***", "a", "* * *", "b", "---", "###", "c", "⁂"))
    assert shape(chapters) == [("Chapter 1", ["a"]), ("Chapter 2", ["b"]), ("Chapter 3", ["c"])]


def test_scene_breaks_stay_inside_chapters_that_have_headings() -> None:
    chapters = chapters_by_session(story("Chapter 1", "***", "a", "* * *", "b", "---"))
    assert shape(chapters) == [("Chapter 1", ["a", "* * *", "b"])]


def test_a_new_session_starts_a_chapter() -> None:
    parts = [
        Part("a", at(20), None),
        Part("b", at(23.5), None),  # 3.5 hours later: the same evening
        Part("c", at(10, day=2), None),  # the next morning: a new session
        Part("d", at(16, day=2), None),  # exactly 6 hours: not more than the gap
    ]
    assert shape(chapters_by_session(parts)) == [
        ("Chapter 1", ["a", "b"]),
        ("Chapter 2", ["c", "d"]),
    ]
    assert shape(chapters_by_session(parts, gap_hours=2)) == [
        ("Chapter 1", ["a"]),
        ("Chapter 2", ["b"]),
        ("Chapter 3", ["c"]),
        ("Chapter 4", ["d"]),
    ]


def test_naive_z_and_offset_times_are_the_same_clock() -> None:
    parts = [
        Part("a", "2026-12-01T20:00:00", None),  # naive: UTC
        Part("b", "2026-12-02T01:00:00Z", None),  # 5 hours later
        Part("c", "2026-12-02T09:30:00+08:00", None),  # 01:30 UTC: half an hour later
        Part("d", "2026-12-02T07:31:00.123456+00:00", None),  # 6 h 1 min later
        Part("e", "not a time", None),  # unreadable: neither splits nor hides the next gap
        Part("f", "2026-12-02 14:00:00", None),  # 6 h 29 min after d
    ]
    assert shape(chapters_by_session(parts)) == [
        ("Chapter 1", ["a", "b", "c"]),
        ("Chapter 2", ["d", "e"]),
        ("Chapter 3", ["f"]),
    ]


def test_breaks_of_the_story_win_over_sessions() -> None:
    parts = [
        Part("a", at(8), None),
        Part("b", at(20), None),  # a new session, but the story marks its own breaks
        Part("***", at(20.1), None),
        Part("c", at(21), None),
    ]
    assert shape(chapters_by_session(parts)) == [("Chapter 1", ["a", "b"]), ("Chapter 2", ["c"])]
