"""Votes, keeps, statistics, the training export and forgetting, on a real SQLite file and a
real PostgreSQL database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.store import Store, Stories
from bot.store.feedback import DOWN, UP, Feedback
from tests.test_store import copy_migrations, dialect_of, gen

GUILD, ALICE, BOB, CAROL = 1, 20, 21, 22
PROMPT = {
    "inputs": {"topic": "rain"},
    "messages": [{"role": "user", "content": "A rain poem"}],
    "plain": "Rain:",
    "prefix": "",
    "title": "Haiku · rain",
}


async def output(store: Store, texts: list[str], user: int = ALICE) -> list[int]:
    """An output with one alternative per text; returns their generation ids."""
    output_id, first = await store.save_output(
        gen(guild_id=GUILD, user_id=user, prompt=PROMPT, output=texts[0])
    )
    ids = [first]
    for text in texts[1:]:
        ids.append(
            await store.add_alternative(
                output_id,
                gen(
                    guild_id=GUILD,
                    user_id=user,
                    prompt=PROMPT,
                    output=text,
                    refines_id=ids[-1],
                    refine_kind="regenerate",
                ),
            )
        )
    return ids


@pytest.fixture
async def store(db_target: str | Path):  # type: ignore[no-untyped-def]
    async with Store.open(db_target) as store:
        yield store


async def test_one_vote_per_person_per_output(store: Store) -> None:
    feedback = Feedback(store)
    a, b = await output(store, ["first", "second"])
    output_id = (await store.get_generation(a)).output_id  # type: ignore[union-attr]
    assert await feedback.vote(a, ALICE, UP) is None
    assert await feedback.vote(b, ALICE, DOWN) == UP  # changed, and moved to the other version
    assert await feedback.votes(output_id) == {ALICE: DOWN}  # type: ignore[arg-type]
    assert await feedback.feedback_of(a) == []
    assert not await feedback.unvote(output_id, ALICE, UP)  # type: ignore[arg-type]
    assert await feedback.unvote(output_id, ALICE, DOWN)  # type: ignore[arg-type]
    assert await feedback.votes(output_id) == {}  # type: ignore[arg-type]
    # the database itself refuses a second vote row on one output
    await feedback.vote(a, BOB, UP)
    with pytest.raises(sqlite3.IntegrityError):
        async with store.transaction() as db:
            await db.execute(
                "INSERT INTO feedback (generation_id, output_id, user_id, kind, value, created_at)"
                " VALUES (?, ?, ?, 'vote', '-1', 'now')",
                (b, output_id, BOB),
            )


async def test_keep_and_reason(store: Store) -> None:
    feedback = Feedback(store)
    a, b = await output(store, ["first", "second"])
    await feedback.keep(a, BOB)
    out = await store.get_output_by_message(0) or await store.get_output(1)
    assert out is not None and out.chosen_id == a
    await feedback.keep(b, BOB)  # a person keeps one version of an output
    assert [r["kind"] for r in await feedback.feedback_of(a)] == []
    await feedback.reason(b, BOB, "too long")
    await feedback.reason(b, BOB, "off topic")
    assert await feedback.feedback_of(b) == [
        {"user_id": BOB, "kind": "keep", "value": "1"},
        {"user_id": BOB, "kind": "reason", "value": "off topic"},
    ]


async def test_stats_per_command_and_refinement(store: Store) -> None:
    feedback = Feedback(store)
    a, b = await output(store, ["first", "second"])
    (c,) = await output(store, ["other"])
    await feedback.vote(a, ALICE, UP)
    await feedback.vote(b, BOB, DOWN)
    await feedback.vote(c, BOB, UP)
    await feedback.keep(b, ALICE)
    stats = await feedback.stats(GUILD)
    (poem,) = stats.by_command
    assert (poem.name, poem.total, poem.up, poem.down, poem.kept) == ("poem", 2, 2, 1, 1)
    assert poem.keep_rate == 0.5
    kinds = {t.name: (t.total, t.up, t.down, t.kept) for t in stats.by_refinement}
    assert kinds == {"first": (2, 2, 0, 0), "regenerate": (1, 0, 1, 1)}
    assert (await feedback.stats(GUILD + 1)).empty


async def test_export_pairs_and_sft(store: Store) -> None:
    feedback = Feedback(store)
    a, b, _c = await output(store, ["worst", "kept one", "meh"])
    await feedback.keep(b, ALICE)
    await feedback.vote(a, BOB, DOWN)
    d, e = await output(store, ["liked", "disliked"])
    await feedback.vote(d, ALICE, UP)
    await feedback.vote(e, BOB, DOWN)
    await output(store, ["no feedback at all"])
    pairs, sft = await feedback.export(GUILD)
    prompt = [{"role": "user", "content": "A rain poem"}]
    said = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    assert pairs == [
        {"prompt": prompt, "chosen": said("kept one"), "rejected": said("worst")},
        {"prompt": prompt, "chosen": said("kept one"), "rejected": said("meh")},
        {"prompt": prompt, "chosen": said("liked"), "rejected": said("disliked")},
    ]
    assert sft == [{"messages": prompt + said("kept one")}]
    assert await feedback.export(GUILD + 1) == ([], [])


async def test_forget_removes_or_anonymises(store: Store) -> None:
    feedback, stories = Feedback(store), Stories(store)
    (theirs,) = await output(store, ["carol's poem"], user=CAROL)
    (mine,) = await output(store, ["alice's poem"])
    regen = await store.add_alternative(
        1 + 1, gen(guild_id=GUILD, user_id=CAROL, output="carol's regeneration")
    )
    await feedback.vote(theirs, BOB, UP)  # on carol's output: goes with it
    await feedback.vote(mine, CAROL, DOWN)
    story = await stories.start(
        guild_id=GUILD, channel_id=10, title="t", premise="p", genre=None, created_by=CAROL
    )
    await stories.add(
        story.id,
        channel_id=10,
        author_id=CAROL,
        text="Carol wrote this.",
        source="user",
        message_id=99,
    )
    await stories.add(
        story.id, channel_id=10, author_id=ALICE, text="Alice wrote this.", source="user"
    )
    await stories.summarise(story.id, "A summary with Carol's part.", 2)

    done = await feedback.forget(CAROL, segments="anonymise")
    assert (done.votes, done.generations, done.segments) == (1, 2, 1)
    assert await store.fetchall("SELECT * FROM generations WHERE user_id = ?", (CAROL,)) == []
    assert await store.fetchall("SELECT * FROM outputs WHERE requester_id = ?", (CAROL,)) == []
    assert (
        await store.fetchall("SELECT * FROM feedback WHERE user_id IN (?, ?)", (BOB, CAROL)) == []
    )
    alice_output = await store.get_output(2)
    assert alice_output is not None and alice_output.chosen_id == mine  # not carol's version
    assert regen not in [g.id for g in await store.alternatives(2)]
    parts = await stories.segments(story.id)
    assert [(p.author_id, p.message_id, p.text) for p in parts] == [
        (None, None, "Carol wrote this."),
        (ALICE, None, "Alice wrote this."),
    ]
    again = await stories.get(story.id)
    assert again is not None and (again.summary, again.summary_upto, again.created_by) == ("", 0, 0)

    await stories.add(story.id, channel_id=10, author_id=ALICE, text="More.", source="user")
    done = await feedback.forget(ALICE, segments="remove")
    assert done.segments == 2
    assert [p.text for p in await stories.segments(story.id)] == ["Carol wrote this."]


async def test_migration_0002_links_existing_feedback_to_outputs(
    db_target: str | Path, tmp_path: Path
) -> None:
    only_first = copy_migrations(
        tmp_path / "migrations", "0001_initial.sql", dialect=dialect_of(db_target)
    )
    path = db_target
    async with Store.open(path, migrations_dir=only_first) as store:
        output_id, gid = await store.save_output(gen())
        async with store.transaction() as db:
            await db.execute(
                "INSERT INTO feedback (generation_id, user_id, kind, value, created_at)"
                " VALUES (?, 5, 'vote', '1', 'now')",
                (gid,),
            )
    async with Store.open(path) as store:
        rows = await store.fetchall("SELECT output_id, value FROM feedback")
        assert [tuple(r) for r in rows] == [(output_id, "1")]
        states = await store.migration_status()
        assert {s.migration.name: s.applied_at is not None for s in states}["votes"]
