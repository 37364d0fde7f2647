"""Lore selection (keys, budget, priority, hostile patterns, speed), lorebooks in the store,
branches that share their parts, and votes that close once."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from bot.lore.entries import LoreEntry, LoreRefused, check, split_keys
from bot.lore.select import Lorebook, render, render_entry
from bot.store import Store, Stories
from bot.store.lore import MAX_ENTRIES, Lore, LoreExists, LoreFull
from bot.store.votes import VoteOpen, Votes, winner


def words_count(text: str) -> int:
    return len(text.split())


def entry(name: str, text: str = "A fact.", *keys: str, **more: object) -> LoreEntry:
    return check(LoreEntry(name=name, text=text, keys=keys, **more))  # type: ignore[arg-type]


# -- entries ------------------------------------------------------------------------------------


def test_an_entry_is_tidied_or_refused_with_a_reason() -> None:
    tidy = check(LoreEntry(name="  Mira   Vance ", text=" Grey eyes. ", keys=("Mira", "mira", "")))
    assert (tidy.name, tidy.text, tidy.keys) == ("Mira Vance", "Grey eyes.", ("Mira",))
    assert check(LoreEntry(name="Oskell", text="A city.")).keys == ("Oskell",)  # its own name
    assert check(LoreEntry(name="Rule", text="No magic.", always=True)).keys == ()
    assert split_keys("Mira, the  witch ,, Vance") == ("Mira", "the  witch", "Vance")
    for bad, said in [
        (LoreEntry(name="", text="x"), "needs a name"),
        (LoreEntry(name="x" * 101, text="x"), "name under"),
        (LoreEntry(name="Empty", text="  "), "has no text"),
        (LoreEntry(name="Long", text="x" * 2001), "under 2000"),
        (LoreEntry(name="Bad", text="x", keys=("(unclosed",), regex=True), "not a valid regex"),
        (LoreEntry(name="Many", text="x", keys=tuple(f"k{i}" for i in range(26))), "at most 25"),
    ]:
        with pytest.raises(LoreRefused, match=said):
            check(bad)


# -- selection ----------------------------------------------------------------------------------


def test_keys_match_whole_words_and_phrases_ignoring_case_and_spacing() -> None:
    book = Lorebook(
        [
            entry("Mira", "Mira has grey eyes.", "Mira"),
            entry("Mill", "The old mill burned in the war.", "old mill"),
            entry("Cat", "The cat is called Ash.", "cat"),
        ]
    )
    found = book.matching("MIRA walked past the Old\n  Mill; the catalogue was lost.")
    assert [e.name for e in found] == ["Mira", "Mill"]  # "catalogue" is not "cat"
    assert book.matching("Nothing here.") == []


def test_regex_keys_match_and_a_hostile_pattern_cannot_stall() -> None:
    book = Lorebook(
        [
            entry("Mira", "Grey eyes.", r"\bmira\w*", regex=True),
            entry("Trap", "Never matches in time.", r"(a+)+$", regex=True),
        ]
    )
    assert [e.name for e in book.matching("Miraculous!")] == ["Mira"]
    started = time.perf_counter()
    assert book.matching("a" * 5000 + "!") == []  # catastrophic backtracking, cut short
    assert time.perf_counter() - started < 5  # generous: the pattern alone would take hours


def test_selection_keeps_priority_and_budget_and_never_cuts_an_entry() -> None:
    book = Lorebook(
        [
            entry("Low", "low " * 5, "storm", priority=10),
            entry("High", "high " * 30, "storm", priority=900),
            entry("Middle", "middle " * 30, "storm", priority=500),
            entry("Always", "the sea is always cold", always=True, priority=50),
            entry("Off", "never", "storm", enabled=False),
        ]
    )
    chosen = book.select("A storm came.", 50, words_count)
    assert chosen.names == ["High", "Always", "Low"]  # Middle does not fit whole
    assert chosen.left_out == ("Middle",)
    assert chosen.tokens <= 50
    assert chosen.tokens == sum(words_count(render_entry(e)) + 1 for e in chosen.entries)
    text = render(chosen)
    assert text.startswith("Facts of this world") and "high high" in text and "never" not in text
    speaker = entry("Ash", "A cat.", kind="character", voice="purrs")
    first = book.select("A storm came.", 40, words_count, first=[speaker])
    assert first.names[0] == "Ash"
    assert "(character)" in render_entry(speaker) and "Speaks: purrs" in render_entry(speaker)


def test_selection_with_1000_entries_and_300_parts_is_fast_and_within_budget(
    capsys: pytest.CaptureFixture[str], tokenizer: Any
) -> None:
    entries = [
        entry(f"Place {i}", f"Town {i} has a mill by the river and a bell. " * 3, f"town{i}")
        for i in range(990)
    ] + [
        entry(f"Rule {i}", "Magic costs memory.", f"rule{i}", r"\bspell\w*", regex=True)
        for i in range(10)
    ]
    parts = [
        f"Part {j}: they rode from town{j} to town{j + 1}, casting spells." for j in range(300)
    ]
    started = time.perf_counter()
    book = Lorebook(entries)
    prepared_ms = (time.perf_counter() - started) * 1000
    budget = 300
    # the model's own tokenizer, its counts kept as the bot keeps them (bot.writing.lore)
    count = lru_cache(maxsize=16384)(lambda text: len(tokenizer.encode(text)))
    runs = []
    for depth in (4, 300):  # the default scan depth, and every part
        scan = "\n".join(parts[-depth:])
        started = time.perf_counter()
        first = book.select(scan, budget, count)
        cold = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        for _ in range(20):
            chosen = book.select(scan, budget, count)
        runs.append((depth, cold, (time.perf_counter() - started) / 20 * 1000, chosen))
        assert chosen == first
        assert chosen.tokens <= budget and chosen.entries
        rendered = render(chosen)
        assert len(tokenizer.encode(rendered)) <= budget + 12  # the heading line
    with capsys.disabled():
        print(f"\nlore selection: 1000 entries prepared in {prepared_ms:.1f} ms (once per change)")
        for depth, cold, ms, chosen in runs:
            print(
                f"lore selection: 1000 entries, scanning the last {depth} of 300 parts:"
                f" {ms:.2f} ms per request ({cold:.2f} ms counting tokens the first time),"
                f" {len(chosen.entries)} entries, {chosen.tokens}/{budget} tokens"
            )


# -- the store ----------------------------------------------------------------------------------


async def test_lorebooks_in_the_store(db_target: str | Path) -> None:
    async with Store.open(db_target) as store:
        lore = Lore(store)
        mira = await lore.add(
            "story", 1, entry("Mira", "Grey eyes.", "Mira"), guild_id=9, created_by=5
        )
        assert mira.id is not None and await lore.author(mira.id) == 5
        with pytest.raises(LoreExists):
            await lore.add("story", 1, entry("MIRA", "Other."), guild_id=9, created_by=6)
        await lore.add("channel", 1, entry("Mira", "Elsewhere."), guild_id=9, created_by=6)
        book = await lore.book("story", 1)
        assert [e.name for e in book.matching("mira")] == ["Mira"]
        # an import lands whole or not at all
        batch = [entry("Oskell", "A city."), entry("Mira", "Green eyes.")]
        with pytest.raises(LoreExists):
            await lore.add_many("story", 1, batch, guild_id=9, created_by=6, replace=False)
        assert [e.name for e in await lore.entries("story", 1)] == ["Mira"]
        added, replaced = await lore.add_many(
            "story", 1, batch, guild_id=9, created_by=6, replace=True
        )
        assert replaced == 1 and [e.name for e in added] == ["Oskell", "Mira"]
        assert (await lore.get("story", 1, "mira")).text == "Green eyes."  # type: ignore[union-attr]
        # the prepared book follows the change
        assert (await lore.book("story", 1)).matching("mira")[0].text == "Green eyes."
        await lore.edit(mira.id, entry("Mira Vance", "Grey again.", "Vance"))
        assert [e.name for e in (await lore.book("story", 1)).matching("vance")] == ["Mira Vance"]
        await lore.remove(mira.id)
        assert [e.name for e in await lore.entries("story", 1)] == ["Oskell"]
        many = [entry(f"E{i}", "x") for i in range(MAX_ENTRIES)]
        with pytest.raises(LoreFull):
            await lore.add_many("story", 1, many, guild_id=9, created_by=6, replace=False)
        assert await lore.count("story", 1) == 1


async def test_a_name_beyond_ascii_is_found_and_replaced(db_target: str | Path) -> None:
    # names lower the same way on both sides of the comparison (ASCII letters only, as SQLite
    # does), so "Élodie" finds itself and an import replaces it instead of colliding
    async with Store.open(db_target) as store:
        lore = Lore(store)
        await lore.add("story", 1, entry("Élodie", "A painter."), guild_id=9, created_by=5)
        assert (await lore.get("story", 1, "Élodie")).text == "A painter."  # type: ignore[union-attr]
        _, replaced = await lore.add_many(
            "story", 1, [entry("Élodie", "A sculptor.")], guild_id=9, created_by=5, replace=True
        )
        assert replaced == 1
        assert [e.text for e in await lore.entries("story", 1)] == ["A sculptor."]


async def test_a_branch_shares_its_parts_and_keeps_its_own(db_target: str | Path) -> None:
    async with Store.open(db_target) as store:
        stories, lore = Stories(store), Lore(store)
        story = await stories.start(
            guild_id=1, channel_id=10, title="T", premise="P", genre=None, created_by=3
        )
        await lore.add("story", story.id, entry("Mira", "Grey eyes."), guild_id=1, created_by=3)
        await stories.set_note(story.id, "Present tense.")
        made = [
            await stories.add(story.id, channel_id=10, author_id=3, text=f"p{i}", source="user")
            for i in range(1, 5)
        ]
        branch = await stories.branch(
            (await stories.get(story.id)),  # type: ignore[arg-type]
            at=made[1].position,
            channel_id=11,
            title="T branch",
            created_by=4,
        )
        assert (branch.parent_id, branch.note) == (story.id, "Present tense.")
        assert [e.name for e in await lore.entries("story", branch.id)] == ["Mira"]

        async def texts(story_id: int) -> list[str]:
            return [s.text for s in await stories.segments(story_id)]

        assert await texts(branch.id) == ["p1", "p2"]
        await stories.add(branch.id, channel_id=11, author_id=4, text="b3", source="user")
        await stories.add(story.id, channel_id=10, author_id=3, text="p5", source="user")
        assert await texts(branch.id) == ["p1", "p2", "b3"]
        assert await texts(story.id) == ["p1", "p2", "p3", "p4", "p5"]
        # an edit of a shared part shows in both (stored once); a removal too
        await stories.edit(made[0].id, "p1 edited")
        await stories.remove(made[1].id)
        assert await texts(branch.id) == ["p1 edited", "b3"]
        assert (await texts(story.id))[:2] == ["p1 edited", "p3"]
        # undo in the parent never frees a position a branch would read as shared
        for _ in range(3):
            last = (await stories.segments(story.id))[-1]
            await stories.remove(last.id)
        await stories.add(story.id, channel_id=10, author_id=3, text="p-new", source="user")
        assert await texts(branch.id) == ["p1 edited", "b3"]
        assert await texts(story.id) == ["p1 edited", "p-new"]
        # a branch of a branch reads through both
        inner = await stories.branch(
            (await stories.get(branch.id)),  # type: ignore[arg-type]
            at=(await stories.segments(branch.id))[-1].position,
            channel_id=12,
            title="T inner",
            created_by=4,
        )
        await stories.add(inner.id, channel_id=12, author_id=4, text="c", source="user")
        assert await texts(inner.id) == ["p1 edited", "b3", "c"]
        positions = [s.position for s in await stories.segments(inner.id)]
        assert positions == sorted(set(positions))


async def test_votes_one_open_ballots_change_and_close_once(db_target: str | Path) -> None:
    async with Store.open(db_target) as store:
        stories, votes = Stories(store), Votes(store)
        story = await stories.start(
            guild_id=1, channel_id=10, title="T", premise="P", genre=None, created_by=3
        )
        later = datetime.now(UTC) + timedelta(minutes=5)
        vote = await votes.open(
            story_id=story.id,
            guild_id=1,
            channel_id=10,
            options=["a", "b", "c"],
            created_by=3,
            closes_at=later,
        )
        with pytest.raises(VoteOpen):
            await votes.open(
                story_id=story.id,
                guild_id=1,
                channel_id=10,
                options=["x", "y"],
                created_by=4,
                closes_at=later,
            )
        assert await votes.ballot(vote.id, 7, 0) is not None
        assert await votes.ballot(vote.id, 7, 2) is not None  # changed, still one ballot
        assert await votes.ballot(vote.id, 8, 2) is not None
        assert await votes.ballot(vote.id, 9, 1) is not None
        assert await votes.ballot(vote.id, 9, 5) is None  # no such direction
        assert await votes.counts(vote) == (0, 1, 2)
        closings = await asyncio.gather(*(votes.close(vote.id) for _ in range(5)))
        tallies = [t for t in closings if t is not None]
        assert len(tallies) == 1 and tallies[0].counts == (0, 1, 2)
        assert tallies[0].vote.winner == 2 and tallies[0].vote.state == "closed"
        assert await votes.ballot(vote.id, 10, 0) is None  # closed
        assert await votes.all_open() == []
        # a new vote may open once the last closed; a ballot after its time is refused
        past = await votes.open(
            story_id=story.id,
            guild_id=1,
            channel_id=10,
            options=["x", "y"],
            created_by=3,
            closes_at=datetime.now(UTC) - timedelta(seconds=1),
        )
        assert await votes.ballot(past.id, 7, 0) is None
        assert [v.id for v in await votes.all_open()] == [past.id]
        # a closed vote with a winner waits to be acted on, once
        assert [v.id for v in await votes.unacted()] == [vote.id]
        await votes.acted(vote.id)
        await votes.acted(vote.id)
        assert await votes.unacted() == []
        assert (await votes.close(past.id)).vote.winner is None  # type: ignore[union-attr]
        assert await votes.unacted() == []  # nobody voted: nothing to act on


def test_the_winner_is_the_most_voted_and_a_tie_goes_to_the_first_proposed() -> None:
    assert winner((0, 0, 0)) is None
    assert winner((1, 3, 2)) == 1
    assert winner((2, 1, 2)) == 0


# -- the lore benchmark's own logic -------------------------------------------------------------


def test_the_lore_benchmark_judges_facts_as_a_reader_would() -> None:
    from tools.lore_eval import judge

    right = judge(
        "Mira Vance looked up; her grey eyes were tired. Captain Orrin laughed aboard the Heron."
        " The scar on her left hand ached."
    )
    assert sorted(right.kept) == [
        "Captain Orrin Hale", "Mira Vance", "grey eyes", "scar: left hand", "the Heron",
    ]  # fmt: skip
    assert right.contradicted == []
    wrong = judge(
        "Mira Stone turned, her blue eyes bright. Captain Reyes shouted aboard the Gull."
        " She rubbed the scar on her right hand."
    )
    assert sorted(wrong.contradicted) == [
        "Captain Reyes", "Mira Stone", "eyes: blue", "scar: right hand", "ship Gull",
    ]  # fmt: skip
    assert judge("The sea was calm.").kept == [] and judge("The sea was calm.").contradicted == []


@pytest.mark.slow
async def test_the_lore_benchmark_runs_both_conditions_end_to_end(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from bot.config import load_settings
    from tools.lore_eval import measure

    settings = load_settings(
        {"DISCORD_TOKEN": "x", "MODEL": str(tiny_model_dir), "MAX_NEW_TOKENS": "16"},
        dotenv_path=None,
    )
    conditions = await measure(
        settings, continuations=2, parts=12, db_dir=tmp_path, log=lambda _: None
    )
    assert [c.name for c in conditions] == ["with the lorebook", "without"]
    with_lore, without = conditions
    assert all(names for names in with_lore.lore_names)  # the lore reached every prompt
    assert all(not names for names in without.lore_names)
    assert len(with_lore.texts) == len(without.texts) == 2


async def test_forget_me_takes_a_name_off_lore_and_deletes_ballots(
    db_target: str | Path,
) -> None:
    from bot.store.feedback import Feedback

    async with Store.open(db_target) as store:
        stories, lore, votes = Stories(store), Lore(store), Votes(store)
        story = await stories.start(
            guild_id=1, channel_id=10, title="T", premise="P", genre=None, created_by=3
        )
        kept = await lore.add("story", story.id, entry("Mira", "Grey."), guild_id=1, created_by=7)
        vote = await votes.open(
            story_id=story.id, guild_id=1, channel_id=10, options=["a", "b"], created_by=7,
            closes_at=datetime.now(UTC) + timedelta(minutes=5),
        )  # fmt: skip
        await votes.ballot(vote.id, 7, 0)
        await votes.ballot(vote.id, 8, 1)
        await Feedback(store).forget(7, segments="anonymise")
        assert kept.id is not None and await lore.author(kept.id) is None
        assert [e.name for e in await lore.entries("story", story.id)] == ["Mira"]
        assert await votes.counts(vote) == (0, 1)
        assert (await votes.get(vote.id)).created_by is None  # type: ignore[union-attr]


def test_many_hostile_patterns_share_one_time_limit() -> None:
    traps = [entry(f"Trap {i}", "x", rf"(a+)+${i}", regex=True) for i in range(300)]
    book = Lorebook([*traps, entry("Ash", "A cat.", "ash")])
    started = time.perf_counter()
    found = book.matching("ash " + "a" * 5000 + "!")
    assert [e.name for e in found] == ["Ash"]  # the plain key still matches
    # 300 patterns of 2 ms each would be 0.6 s; together they get 20 ms (generous bound)
    assert time.perf_counter() - started < 0.5


def test_a_characters_keys_are_its_name_and_name_words_not_small_words() -> None:
    from bot.lore.formats import character_keys

    assert character_keys("Mira Vance") == ["Mira Vance", "Mira", "Vance"]
    assert character_keys("The Old Captain") == ["The Old Captain", "Old", "Captain"]
