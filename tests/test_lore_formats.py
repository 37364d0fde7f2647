"""Lore files in other programs' formats: one hand-written file per format (from the public
specs) read to exact entries; broken and hostile files refused with a reason; SillyTavern
export read back to the same entries; arbitrary JSON and bytes never raise anything but
`LoreRefused`."""

from __future__ import annotations

import base64
import copy
import io
import json
import struct
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from bot.lore.entries import KEYS_MAX, TEXT_LIMIT, LoreEntry, LoreRefused, check
from bot.lore.formats import (
    _CONFUSED,
    MAX_BYTES,
    MAX_ENTRIES,
    UNKNOWN,
    LoreFile,
    read_lore_file,
    sillytavern_json,
)

# --- helpers ------------------------------------------------------------------------------------


def as_json(obj: object) -> bytes:
    return json.dumps(obj).encode("utf-8")


def read(obj: object) -> LoreFile:
    return read_lore_file("lore.json", as_json(obj))


def refused(data: bytes, filename: str = "lore.json") -> str:
    with pytest.raises(LoreRefused) as caught:
        read_lore_file(filename, data)
    reason = str(caught.value)
    assert reason != _CONFUSED  # a bug, not a refusal
    return reason


def b64(obj: object) -> str:
    return base64.b64encode(as_json(obj)).decode("ascii")


def png(texts: dict[str, str] | None = None, *, zip: bool = False, itxt: bool = False) -> bytes:
    """A 2×2 PNG with text chunks written by Pillow (before the pixel data)."""
    info = PngImagePlugin.PngInfo()
    for key, value in (texts or {}).items():
        if itxt:
            info.add_itxt(key, value, zip=zip)
        else:
            info.add_text(key, value, zip=zip)
    out = io.BytesIO()
    Image.new("RGB", (2, 2), "white").save(out, "PNG", pnginfo=info)
    return out.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def before_iend(picture: bytes, *chunks: bytes) -> bytes:
    """Chunks put where SillyTavern puts its card: after the pixel data, just before IEND."""
    assert picture[-12:-8] == b"\0\0\0\0" and picture[-8:-4] == b"IEND"
    return picture[:-12] + b"".join(chunks) + picture[-12:]


# --- SillyTavern World Info ---------------------------------------------------------------------

SILLYTAVERN: dict[str, Any] = {
    "name": "The Salt Coast",
    "entries": {
        "0": {
            "uid": 0,
            "key": ["dragon", "/wyrms?/i", "Old Mill"],
            "keysecondary": [],
            "comment": "Dragons",
            "content": "Dragons nest in the cliffs.",
            "constant": False,
            "selective": True,
            "order": 150,
            "position": 0,
            "disable": False,
        },
        "1": {
            "uid": 1,
            "key": [],
            "keysecondary": [],
            "comment": "The Tide Law",
            "content": "No boat leaves at low tide.",
            "constant": True,
            "selective": False,
            "order": 2000,  # clamped into 0..1000
            "position": 1,
            "disable": False,
        },
        "2": {
            "uid": 2,
            "key": ["kraken"],
            "keysecondary": [],
            "comment": "Kraken",
            "content": "A rumour.",
            "constant": False,
            "selective": False,
            "order": 100,
            "position": 0,
            "disable": True,
        },
        "3": {
            "uid": 3,
            "key": ["harbour", "port"],
            "keysecondary": ["night"],
            "comment": "",
            "content": "  {{user}} knows the harbour well; {{char}} does not.  ",
            "constant": False,
            "selective": True,
            "order": "40",
            "position": 0,
            "disable": False,
        },
    },
}


def test_sillytavern_world_info() -> None:
    book = read(SILLYTAVERN)
    assert book.format == "sillytavern"
    assert book.title == "The Salt Coast"
    assert book.entries == [
        LoreEntry(
            name="Dragons",
            text="Dragons nest in the cliffs.",
            # one /pattern/ key makes the whole entry patterns; plain keys keep matching whole words
            keys=(r"\bdragon\b", "wyrms?", r"\bOld\W+Mill\b"),
            regex=True,
            priority=150,
        ),
        LoreEntry(
            name="The Tide Law", text="No boat leaves at low tide.", always=True, priority=1000
        ),
        LoreEntry(
            name="harbour",  # no comment: the first key
            text="The reader knows the harbour well; the character does not.",
            keys=("harbour", "port"),
            priority=40,
        ),
    ]
    assert book.notes == [
        "1 disabled entry skipped.",
        "Secondary keys aren't used here: 1 entry triggers on the main keys alone.",
        "{{char}} was written as “the character”: this file belongs to no one character.",
        "{{user}} was written as “the reader”.",
    ]


def test_sillytavern_slashes_and_flags_in_patterns() -> None:
    entry = {
        "key": ["/and\\/or/gi", "/a/b/", "/x/q"],  # 2nd: unescaped slash, 3rd: no such flag
        "comment": "Slashes",
        "content": "Text.",
    }
    (got,) = read({"entries": {"0": entry}}).entries
    assert got.regex
    assert got.keys == ("and/or", r"\ba\W+b\b", r"\bx\W+q\b")


def test_sillytavern_decorators() -> None:
    entries = {
        "0": {"key": ["a"], "comment": "On", "content": "@@activate\n@@depth 2\nAlways here."},
        "1": {"key": ["b"], "comment": "Off", "content": "@@dont_activate\nNever."},
    }
    book = read({"entries": entries})
    assert book.entries == [LoreEntry(name="On", text="Always here.", keys=("a",), always=True)]
    assert book.notes == ["1 disabled entry skipped."]


# --- Character cards ----------------------------------------------------------------------------

CARD_V2: dict[str, Any] = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Mira Vance",
        "description": "{{char}} keeps the lighthouse on the Salt Coast.",
        "personality": "Dry and watchful. Speaks in short, salted sentences.",
        "scenario": "{{user}} washes ashore near {{char}}'s lighthouse.",
        "first_mes": "You're awake. Good.",
        "mes_example": "<START>\n{{char}}: Tide's turning.",
        "creator_notes": "",
        "system_prompt": "",
        "post_history_instructions": "",
        "alternate_greetings": [],
        "tags": ["fantasy"],
        "creator": "someone",
        "character_version": "1.0",
        "extensions": {},
        "character_book": {
            "name": "Salt Coast",
            "extensions": {},
            "entries": [
                {
                    "keys": ["lighthouse", "beacon"],
                    "content": "The lamp of {{char}}'s lighthouse has burned for 200 years.",
                    "extensions": {},
                    "enabled": True,
                    "insertion_order": 50,
                    "name": "The Lighthouse",
                },
                {
                    "keys": ["storm"],
                    "content": "Storms come from the west.",
                    "extensions": {},
                    "enabled": True,
                    "insertion_order": 10,
                    "priority": 300,
                    "comment": "Storms",
                    "constant": True,
                },
                {
                    "keys": ["kraken"],
                    "content": "An old tale.",
                    "extensions": {},
                    "enabled": False,
                    "insertion_order": 1,
                },
                {
                    "keys": ["/salt(y|ed)?/i"],
                    "content": "Salt is money here.",
                    "extensions": {},
                    "enabled": True,
                    "insertion_order": 100,
                    "secondary_keys": ["coin"],
                    "selective": True,
                },
            ],
        },
    },
}

MIRA = LoreEntry(
    name="Mira Vance",
    text=(
        "Mira Vance keeps the lighthouse on the Salt Coast.\n\n"
        "Personality: Dry and watchful. Speaks in short, salted sentences.\n\n"
        "Scenario: The reader washes ashore near Mira Vance's lighthouse."
    ),
    keys=("Mira Vance", "Mira", "Vance"),
    kind="character",
    voice="Dry and watchful.",
)


def test_character_card_v2_with_book() -> None:
    card = read(CARD_V2)
    assert card.format == "character card v2"
    assert card.title == "Mira Vance"
    assert card.entries == [
        MIRA,
        LoreEntry(
            name="The Lighthouse",
            text="The lamp of Mira Vance's lighthouse has burned for 200 years.",
            keys=("lighthouse", "beacon"),
            priority=50,
        ),
        LoreEntry(
            name="Storms",
            text="Storms come from the west.",
            keys=("storm",),
            always=True,
            priority=300,
        ),
        LoreEntry(
            name="/salt(y|ed)?/i", text="Salt is money here.", keys=("salt(y|ed)?",), regex=True
        ),
    ]
    assert card.notes == [
        "1 disabled entry skipped.",
        "Secondary keys aren't used here: 1 entry triggers on the main keys alone.",
        "{{user}} was written as “the reader”.",
    ]


CARD_V3: dict[str, Any] = {
    "spec": "chara_card_v3",
    "spec_version": "3.0",
    "data": {
        "name": "Wrenna Holt",
        "nickname": "Wren",
        "description": "{{char}} maps the drowned city.",
        "personality": "",
        "scenario": "",
        "first_mes": "",
        "mes_example": "",
        "creator_notes": "",
        "system_prompt": "",
        "post_history_instructions": "",
        "alternate_greetings": [],
        "group_only_greetings": [],
        "tags": [],
        "creator": "",
        "character_version": "",
        "extensions": {},
        "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
        "character_book": {
            "extensions": {},
            "entries": [
                {
                    "keys": ["drowned city", "Ys"],
                    "content": "@@activate\n@@depth 4\nThe city sank in a single night.",
                    "extensions": {},
                    "enabled": True,
                    "insertion_order": 100,
                    "use_regex": False,
                    "name": "Ys",
                },
                {
                    "keys": [r"\bbells?\b"],
                    "content": "Bells ring under the water.",
                    "extensions": {},
                    "enabled": True,
                    "insertion_order": 700,
                    "use_regex": True,
                    "comment": "Bells",
                },
            ],
        },
    },
}

WREN = LoreEntry(
    name="Wrenna Holt",
    text="Wren maps the drowned city.",
    keys=("Wrenna Holt", "Wren", "Wrenna", "Holt"),
    kind="character",
)
WREN_BOOK = [
    LoreEntry(
        name="Ys", text="The city sank in a single night.", keys=("drowned city", "Ys"), always=True
    ),
    LoreEntry(
        name="Bells",
        text="Bells ring under the water.",
        keys=(r"\bbells?\b",),
        regex=True,
        priority=700,
    ),
]


def test_character_card_v3() -> None:
    card = read(CARD_V3)
    assert card.format == "character card v3"
    assert card.title == "Wrenna Holt"
    assert card.entries == [WREN, *WREN_BOOK]
    assert card.notes == []


CARD_V1 = {
    "name": "Tomas Reed",
    "description": "A ferryman who knows every current.",
    "personality": "Grumbles. Never lies.",
    "scenario": "",
    "first_mes": "Fare first.",
    "mes_example": "",
}


def test_character_card_v1() -> None:
    card = read(CARD_V1)
    assert card.format == "character card v1"
    assert card.title == "Tomas Reed"
    assert card.entries == [
        LoreEntry(
            name="Tomas Reed",
            text="A ferryman who knows every current.\n\nPersonality: Grumbles. Never lies.",
            keys=("Tomas Reed", "Tomas", "Reed"),
            kind="character",
            voice="Grumbles.",
        )
    ]
    assert card.notes == []


def test_character_name_particles_are_not_keys() -> None:
    card = read({**CARD_V1, "name": "Anna von der Brück", "personality": ""})
    assert card.entries[0].keys == ("Anna von der Brück", "Anna", "Brück")
    assert card.entries[0].voice == ""


def test_long_character_text_is_cut_at_a_sentence_end() -> None:
    sentence = "The tide remembers every name it takes. "
    description = sentence * 60  # 2,400 characters
    card = read({**CARD_V1, "description": description, "personality": ""})
    (tom,) = card.entries
    assert len(tom.text) <= TEXT_LIMIT
    assert tom.text.endswith("takes.")
    assert description.startswith(tom.text)
    assert card.notes == [
        "“Tomas Reed” was cut to 2,000 characters, at a sentence end where possible."
    ]


def test_long_voice_is_cut_at_a_word_end() -> None:
    personality = "grim " * 100  # one 500-character "sentence"
    (tom,) = read({**CARD_V1, "personality": personality}).entries
    assert len(tom.voice) <= 300
    assert tom.voice.endswith("grim")


def test_card_with_nothing_but_a_book() -> None:
    data = {**CARD_V2["data"], "description": "", "personality": "", "scenario": ""}
    card = read({**CARD_V2, "data": data})
    assert [e.name for e in card.entries] == ["The Lighthouse", "Storms", "/salt(y|ed)?/i"]
    assert any("has no description, personality or scenario" in n for n in card.notes)


# --- Character card PNGs ------------------------------------------------------------------------


def test_png_card_v2() -> None:
    card = read_lore_file("mira.png", png({"chara": b64(CARD_V2)}))
    assert card.format == "character card v2"
    assert card.entries == read(CARD_V2).entries


def test_png_prefers_ccv3_to_chara() -> None:
    picture = png({"chara": b64(CARD_V2), "ccv3": b64(CARD_V3)})
    card = read_lore_file("wren.png", picture)
    assert card.format == "character card v3"
    assert card.entries == [WREN, *WREN_BOOK]


def test_png_card_after_the_pixels() -> None:
    # SillyTavern writes its chunk just before IEND; Pillow only sees those after decoding.
    picture = before_iend(png(), chunk(b"tEXt", b"chara\0" + b64(CARD_V1).encode()))
    card = read_lore_file("tom.png", picture)
    assert card.format == "character card v1"
    assert card.title == "Tomas Reed"


@pytest.mark.parametrize(("zip", "itxt"), [(True, False), (False, True), (True, True)])
def test_png_card_compressed_or_international(zip: bool, itxt: bool) -> None:
    card = read_lore_file("wren.png", png({"ccv3": b64(CARD_V3)}, zip=zip, itxt=itxt))
    assert card.entries == [WREN, *WREN_BOOK]


# --- NovelAI ------------------------------------------------------------------------------------


def novelai_entry(**fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "text": "",
        "contextConfig": {
            "prefix": "",
            "suffix": "\n",
            "tokenBudget": 1,
            "reservedTokens": 0,
            "budgetPriority": 400,
            "trimDirection": "trimBottom",
            "insertionType": "newline",
            "maximumTrimType": "sentence",
            "insertionPosition": -1,
        },
        "lastUpdatedAt": 1700000000000,
        "displayName": "",
        "id": "0b7e4a1c-0000-4000-8000-000000000000",
        "keys": [],
        "searchRange": 1000,
        "enabled": True,
        "forceActivation": False,
        "keyRelative": False,
        "nonStoryActivatable": False,
        "category": "",
        "loreBiasGroups": [],
    }
    entry.update(fields)
    return entry


NOVELAI: dict[str, Any] = {
    "lorebookVersion": 5,
    "entries": [
        novelai_entry(
            text="The Guild controls the river trade.",
            displayName="Guild",
            keys=["guild", "/river ?trade/i"],
            contextConfig={"budgetPriority": 800},
        ),
        novelai_entry(text="It always rains in Vell.", displayName="Weather", forceActivation=True),
        novelai_entry(text="Gone.", displayName="Off", keys=["off"], enabled=False),
        novelai_entry(text="Lanterns burn whale oil.", keys=["lantern"], contextConfig={}),
    ],
    "settings": {"orderByKeyLocations": False},
    "categories": [],
}


def test_novelai_lorebook() -> None:
    book = read(NOVELAI)
    assert book.format == "novelai"
    assert book.title is None
    assert book.entries == [
        LoreEntry(
            name="Guild",
            text="The Guild controls the river trade.",
            keys=(r"\bguild\b", "river ?trade"),
            regex=True,
            priority=200,  # NovelAI's 800, a quarter
        ),
        LoreEntry(name="Weather", text="It always rains in Vell.", always=True, priority=100),
        LoreEntry(name="lantern", text="Lanterns burn whale oil.", keys=("lantern",)),
    ]
    assert book.notes == ["1 disabled entry skipped."]


# --- Coercions and notes that are not refusals ----------------------------------------------------


def test_a_single_key_string_is_one_key() -> None:
    entry = {"key": "moon", "comment": "Moon", "content": "Two moons.", "order": 7.6}
    (moon,) = read({"entries": {"0": entry}}).entries
    assert moon.keys == ("moon",)
    assert moon.priority == 8


def test_too_many_and_too_long_keys_are_trimmed_with_notes() -> None:
    keys = ["x" * 150] + [f"key{i}" for i in range(30)]
    entry = {"key": keys, "comment": "Many", "content": "Text."}
    book = read({"entries": {"0": entry}})
    assert book.entries[0].keys == tuple(f"key{i}" for i in range(KEYS_MAX))
    assert book.notes == [
        "1 key over 100 characters left out.",
        "“Many” kept only the first 25 keys.",
    ]


def test_empty_entries_are_skipped_with_a_note() -> None:
    entries = {"0": {"key": ["a"], "content": "   "}, "1": {"key": ["b"], "content": "B."}}
    book = read({"entries": entries})
    assert [e.name for e in book.entries] == ["b"]
    assert book.notes == ["1 entry with no text skipped."]


# --- Refusals -----------------------------------------------------------------------------------


def st_entry(**fields: Any) -> dict[str, Any]:
    return {"key": ["k"], "comment": "Bad", "content": "Text.", **fields}


@pytest.mark.parametrize(
    ("data", "phrase"),
    [
        (b"x" * (MAX_BYTES + 1), "over 2 MB"),
        (b"", "empty"),
        (b"\xff\xfe{\x00}", "not UTF-8"),
        (b'{"entries": {', "not valid JSON (line 1"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"order": 1' + b"1" * 5000 + b"}", "not valid JSON"),
        (b"[1, 2, 3]", UNKNOWN),
        (b'"just text"', UNKNOWN),
        (b'{"hello": "world"}', UNKNOWN),
        (b"\xff\xd8\xff\xe0 a jpeg", "PNG pictures"),
        (b"PK\x03\x04 a zip", "zip archive"),
        (as_json({"spec": "chara_card_v9", "data": {}}), "version I don't know"),
        (as_json({"spec": "chara_card_v2", "data": "Mira"}), "no character data"),
        (as_json({"spec": "chara_card_v2", "data": {"name": "  "}}), "has no name"),
        (as_json({"spec": "chara_card_v2", "data": {"name": 5}}), "a name that is not text"),
        (
            as_json({"spec": "chara_card_v2", "data": {"name": "M", "description": ["x"]}}),
            "has a description that is not text",
        ),
        (
            as_json({"spec": "chara_card_v2", "data": {"name": "M", "character_book": [1]}}),
            "is not a lorebook",
        ),
        (
            as_json(
                {"spec": "chara_card_v2", "data": {"name": "M", "character_book": {"entries": [3]}}}
            ),
            "Lore entry 1 of this card is not a lore entry",
        ),
        (as_json({"entries": {"0": 5}}), "Entry 1 in this file is not a lore entry"),
        (as_json({"entries": {"0": st_entry(key=7)}}), "keys that are not a list"),
        (as_json({"entries": {"0": st_entry(key=[["a"]])}}), "a key that is not text"),
        (as_json({"entries": {"0": st_entry(content=42)}}), "“Bad” has content that is not text"),
        (as_json({"entries": {"0": st_entry(constant="often")}}), "“constant” setting"),
        (as_json({"entries": {"0": st_entry(order="soon")}}), "order that is not a number"),
        (b'{"entries": {"0": {"comment": "Bad", "content": "x", "order": NaN}}}', "not a number"),
        (
            b'{"entries": {"0": {"comment": "Bad", "content": "x", "order": -Infinity}}}',
            "not a number",
        ),
        (
            as_json({"entries": {"0": st_entry(key=["/[unclosed/"])}}),
            "In the entry “Bad”: The pattern `[unclosed` is not a valid regex",
        ),
        (
            as_json({"entries": {"0": st_entry(disable=True), "1": st_entry(content=" ")}}),
            "There are no entries in this file. 1 disabled entry skipped. 1 entry with no text",
        ),
        (as_json({"entries": {}}), "There are no entries in this file."),
        (as_json({"lorebookVersion": 5, "entries": {"a": 1}}), "no list of entries"),
        (as_json({"lorebookVersion": 5, "entries": [1, 2]}), "Entry 1 in this lorebook is not"),
        (
            as_json({"lorebookVersion": 5, "entries": [novelai_entry(text=None, keys=["a"])]}),
            "There are no entries in this file.",
        ),
        (
            as_json({"lorebookVersion": 5, "entries": [novelai_entry(text="x", enabled="yes")]}),
            "“enabled” setting that is not true or false",
        ),
    ],
)
def test_refused_with_a_reason(data: bytes, phrase: str) -> None:
    assert phrase in refused(data)


def test_too_many_entries() -> None:
    entries = {str(i): st_entry(comment=f"E{i}") for i in range(MAX_ENTRIES + 1)}
    assert "at most 500" in refused(as_json({"entries": entries}))
    book = read({"entries": dict(list(entries.items())[:MAX_ENTRIES])})
    assert len(book.entries) == MAX_ENTRIES


def test_all_or_nothing() -> None:
    # The broken pattern is the last entry; nothing before it comes back either.
    entries = {str(i): st_entry(comment=f"E{i}") for i in range(10)}
    entries["10"] = st_entry(comment="Broken", key=["/(/"])
    assert "“Broken”" in refused(as_json({"entries": entries}))


@pytest.mark.parametrize(
    ("picture", "phrase"),
    [
        (png(), "no character card in it"),
        (png({"Comment": "hello"}), "no character card in it"),
        (png()[:40], "damaged"),
        (png({"chara": "not base64 at all!"}), "damaged"),
        (png({"chara": base64.b64encode(b"\xff\xfe").decode()}), "not UTF-8"),
        (png({"chara": b64({"entries": {"0": st_entry()}})}), "not a character card"),
        (png({"chara": b64([1, 2])}), "not a character card"),
        (
            before_iend(png(), chunk(b"zTXt", b"chara\0\0" + zlib.compress(b"A" * 50_000_000, 9))),
            "too big",
        ),
        (before_iend(png(), chunk(b"zTXt", b"chara\0\0not zlib")), "damaged"),
        (before_iend(png(), chunk(b"iTXt", b"chara\0\1")), "damaged"),
        (
            before_iend(png(), b"\0\0\0\x05tEXtchara\0\0\0\0\0"),  # wrong CRC
            "damaged",
        ),
    ],
)
def test_broken_pictures_refused(picture: bytes, phrase: str) -> None:
    assert phrase in refused(picture, "card.png")


# --- Round trip ---------------------------------------------------------------------------------

ROUND_TRIP = [
    check(
        LoreEntry(
            name="Dragons",
            text="Dragons nest in the cliffs.\n\nThey hate salt.",
            keys=(r"\bdragons?\b", "wyrm|drake", "and/or"),
            regex=True,
            priority=150,
        )
    ),
    check(LoreEntry(name="Tide Law", text="No boat leaves at low tide.", always=True, priority=0)),
    check(LoreEntry(name="Old Mill", text="It grinds bones.", keys=("old mill", "mill"))),
    check(
        LoreEntry(
            name="Mira Vance",
            text="Mira keeps the lighthouse.",
            keys=("Mira Vance", "Mira"),
            kind="character",
            voice="Dry and watchful.",
            priority=1000,
        )
    ),
    check(LoreEntry(name="Kraken", text="A rumour.", keys=("kraken",), enabled=False)),
]


def test_sillytavern_round_trip() -> None:
    data = sillytavern_json(ROUND_TRIP, name="Salt Coast")
    book = read_lore_file("salt.json", data)
    assert book.format == "sillytavern"
    assert book.title == "Salt Coast"
    assert book.entries == [e for e in ROUND_TRIP if e.enabled]
    assert book.notes == ["1 disabled entry skipped."]


def test_sillytavern_export_shape() -> None:
    exported = json.loads(sillytavern_json(ROUND_TRIP))
    assert list(exported["entries"]) == ["0", "1", "2", "3", "4"]
    dragons, _, mill, mira, kraken = exported["entries"].values()
    assert dragons["key"] == [r"/\bdragons?\b/i", "/wyrm|drake/i", r"/and\/or/i"]
    assert dragons["comment"] == "Dragons" and dragons["order"] == 150
    assert mill["key"] == ["old mill", "mill"] and mill["matchWholeWords"] is True
    assert mira["extensions"] == {"llmos": {"kind": "character", "voice": "Dry and watchful."}}
    assert kraken["disable"] is True
    assert "extensions" not in mill
    # Every field of SillyTavern's new-entry template is there, so nothing is left to guess.
    for field in ("uid", "keysecondary", "constant", "selective", "position", "probability"):
        assert field in mill


plain_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="{}<>@/\\"),
    min_size=1,
    max_size=60,
)
patterns = st.sampled_from([r"\bdragons?\b", "wyrm|drake", "a/b", r"\d{3}", "(?:red|blue) moon"])


@st.composite
def lore_entries(draw: st.DrawFn) -> LoreEntry:
    is_regex = draw(st.booleans())
    keys = draw(st.lists(patterns if is_regex else plain_text, max_size=5))
    is_regex = is_regex and bool(keys)  # with no keys there is nothing to be a pattern
    kind = draw(st.sampled_from(["entry", "character"]))
    entry = LoreEntry(
        name=draw(plain_text),
        text=draw(plain_text),
        keys=tuple(keys),
        regex=is_regex,
        always=draw(st.booleans()),
        priority=draw(st.integers(0, 1000)),
        kind=kind,
        voice=draw(plain_text) if kind == "character" else "",
        enabled=draw(st.booleans()),
    )
    try:
        return check(entry)
    except LoreRefused:
        return check(LoreEntry(name="Fallback", text="Text."))


@settings(max_examples=100, deadline=None)
# a lorebook's names are unique (ignoring case); a file's repeats are numbered on the way in
@given(st.lists(lore_entries(), min_size=1, max_size=8, unique_by=lambda e: e.name.casefold()))
def test_round_trip_property(entries: list[LoreEntry]) -> None:
    wanted = [e for e in entries if e.enabled]
    data = sillytavern_json(entries)
    if not wanted:
        assert "There are no entries" in refused(data)
        return
    assert read_lore_file("book.json", data).entries == wanted


# --- Nothing but LoreRefused escapes --------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["/x/", "/(/", "{{char}}", "@@activate", "chara_card_v2", "Mira Vance"]),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(
            st.sampled_from(
                [
                    "entries",
                    "key",
                    "keys",
                    "content",
                    "text",
                    "comment",
                    "name",
                    "displayName",
                    "constant",
                    "disable",
                    "enabled",
                    "order",
                    "priority",
                    "insertion_order",
                    "forceActivation",
                    "contextConfig",
                    "budgetPriority",
                    "character_book",
                    "data",
                    "spec",
                    "description",
                    "personality",
                    "scenario",
                    "use_regex",
                    "nickname",
                    "extensions",
                    "llmos",
                    "kind",
                    "voice",
                    "keysecondary",
                    "0",
                    "1",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=6,
        )
    ),
    max_leaves=40,
)
shaped = st.one_of(
    json_values,
    st.builds(lambda e: {"entries": e}, json_values),
    st.builds(lambda e: {"entries": {"0": e, "1": e}}, json_values),
    st.builds(lambda e: {"lorebookVersion": 5, "entries": e}, json_values),
    st.builds(lambda e: {"lorebookVersion": 5, "entries": [e]}, json_values),
    st.builds(lambda d: {"spec": "chara_card_v2", "data": d}, json_values),
    st.builds(
        lambda d: (
            {"spec": "chara_card_v3", "data": {"name": "M", **d}} if isinstance(d, dict) else d
        ),
        json_values,
    ),
    st.builds(
        lambda b: {"spec": "chara_card_v2", "data": {"name": "M", "character_book": b}},
        json_values,
    ),
)


@st.composite
def mutated(draw: st.DrawFn) -> object:
    """A well-formed file from above with one value somewhere in it replaced by anything."""
    value: Any = copy.deepcopy(draw(st.sampled_from([SILLYTAVERN, CARD_V2, CARD_V3, NOVELAI])))
    top = value
    for _ in range(draw(st.integers(1, 5))):
        if isinstance(value, dict) and value:
            key = draw(st.sampled_from(sorted(value)))
        elif isinstance(value, list) and value:
            key = draw(st.integers(0, len(value) - 1))
        else:
            break
        if not isinstance(value[key], dict | list) or draw(st.booleans()):
            value[key] = draw(json_values)
            break
        value = value[key]
    return top


def only_refusals(filename: str, data: bytes) -> None:
    try:
        result = read_lore_file(filename, data)
    except LoreRefused as error:
        assert str(error) != _CONFUSED
        assert str(error).strip()
        return
    assert isinstance(result, LoreFile)
    assert result.entries and len(result.entries) <= MAX_ENTRIES
    assert all(check(e) == e for e in result.entries)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shaped)
def test_arbitrary_json_only_refused(value: object) -> None:
    only_refusals("lore.json", json.dumps(value).encode("utf-8"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_damaged_good_files_only_refused(value: object) -> None:
    only_refusals("lore.json", json.dumps(value).encode("utf-8"))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_refused(data: bytes) -> None:
    only_refusals("lore.bin", data)
    only_refusals("card.png", b"\x89PNG\r\n\x1a\n" + data)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"tEXt", b"zTXt", b"iTXt", b"IDAT", b"IEND"]),
            st.sampled_from([b"chara", b"ccv3", b"other"]),
            st.binary(max_size=60),
        ),
        max_size=4,
    )
)
def test_arbitrary_png_chunks_only_refused(chunks: list[tuple[bytes, bytes, bytes]]) -> None:
    body = b"".join(chunk(kind, key + b"\0" + rest) for kind, key, rest in chunks)
    only_refusals("card.png", b"\x89PNG\r\n\x1a\n" + body)


def test_repeated_names_in_a_file_are_numbered_not_lost() -> None:
    found = read(
        {
            "entries": {
                "0": {"key": ["Mira"], "content": "Grey eyes."},
                "1": {"key": ["Mira"], "content": "A scar on her left hand."},
                "2": {"key": ["mira"], "content": "Born in Oskell."},
            }
        }
    )
    assert [e.name for e in found.entries] == ["Mira", "Mira (2)", "mira (3)"]
    assert any("more than once" in note for note in found.notes)
