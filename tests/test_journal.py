"""The request journal in the store: accepted, saved with its answer in one transaction, ended
once; what a restart does with each row; transactions that a cancellation cannot leave open."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.store import NewRequest, RequestEnded, SegmentRecord, Store, Stories
from bot.store.feedback import Feedback
from bot.store.requests import Requests
from bot.writing.journal import Verdict, story_of, verdict
from bot.writing.run import Task
from bot.writing.tasks import poem_task, snapshot, task_again
from tests.test_store import copy_migrations, dialect_of, gen

SETTINGS = load_settings({}, dotenv_path=None)


def new(**overrides: object) -> NewRequest:
    values: dict[str, object] = dict(
        command="poem",
        task=snapshot(poem_task(SETTINGS, "rain", "haiku", None)),
        user_id=20,
        channel_id=10,
        guild_id=1,
        message_id=500,
        interaction_token="tok",
        token_expires_at=(datetime.now(UTC) + timedelta(minutes=15)).isoformat(),
    )
    values.update(overrides)
    return NewRequest(**values)  # type: ignore[arg-type]


async def test_a_request_is_saved_with_its_answer_once(db_target: str | Path) -> None:
    async with Store.open(db_target) as store:
        journal = Requests(store)
        rid = await journal.accept(new())
        [first] = await journal.unfinished()
        assert (first.id, first.state, first.attempts, first.message_id) == (rid, "pending", 0, 500)
        assert first.token_valid()
        await journal.started(rid)
        output_id, generation_id = await store.save_output(gen(), request_id=rid)
        row = await journal.get(rid)
        assert row is not None
        assert (row.state, row.generation_id, row.output_id, row.attempts) == (
            "saved",
            generation_id,
            output_id,
            1,
        )
        # a second answer to the same request is refused whole: nothing more is stored
        with pytest.raises(RequestEnded):
            await store.save_output(gen(output="twice"), request_id=rid)
        with pytest.raises(RequestEnded):
            await store.add_alternative(output_id, gen(output="twice"), request_id=rid)
        assert len(await store.fetchall("SELECT id FROM generations")) == 1
        assert len(await store.fetchall("SELECT id FROM outputs")) == 1
        # it ends once; the token goes with it
        assert await journal.end(rid, "done")
        assert not await journal.end(rid, "failed")
        row = await journal.get(rid)
        assert row is not None
        assert (row.state, row.interaction_token) == ("done", None)
        assert await journal.unfinished() == []
        with pytest.raises(ValueError):
            await journal.end(rid, "pending")


async def test_damaged_rows_read_as_damaged_and_old_ones_are_pruned(db_target: str | Path) -> None:
    async with Store.open(db_target) as store:
        journal = Requests(store)
        damaged = await journal.accept(new())
        async with store.transaction() as db:
            await db.execute("UPDATE requests SET task = '{\"inputs\": [' WHERE id = ?", (damaged,))
        [row] = await journal.unfinished()
        assert row.task is None
        assert verdict(row, max_age=timedelta(minutes=15), max_attempts=3) is Verdict.DAMAGED

        old = await journal.accept(new())
        await journal.end(old, "done")
        long_ago = (datetime.now(UTC) - timedelta(days=8)).isoformat(timespec="milliseconds")
        async with store.transaction() as db:
            await db.execute("UPDATE requests SET updated_at = ? WHERE id = ?", (long_ago, old))
        assert await journal.prune() == 1
        assert await journal.get(old) is None
        assert await journal.get(damaged) is not None  # unfinished rows are never pruned


async def test_forget_me_removes_the_journal_rows(db_target: str | Path) -> None:
    async with Store.open(db_target) as store:
        journal = Requests(store)
        mine = await journal.accept(new(user_id=7))
        theirs = await journal.accept(new(user_id=8))
        await Feedback(store).forget(7, segments="remove")
        assert await journal.get(mine) is None
        assert await journal.get(theirs) is not None


def test_verdicts() -> None:
    now = datetime.now(UTC)
    fresh = dict(
        id=1,
        state="pending",
        command="poem",
        task={"inputs": {}},
        guild_id=1,
        channel_id=2,
        user_id=3,
        message_id=4,
        interaction_token=None,
        token_expires_at=None,
        output_id=None,
        refines_id=None,
        refine_kind=None,
        generation_id=None,
        attempts=0,
        error=None,
        created_at=now.isoformat(),
        updated_at=now.isoformat(),
    )
    from bot.store import RequestRecord

    limits = {"max_age": timedelta(minutes=15), "max_attempts": 3}
    assert verdict(RequestRecord(**fresh), **limits) is Verdict.RUN  # type: ignore[arg-type]
    old = fresh | {"created_at": (now - timedelta(minutes=16)).isoformat()}
    assert verdict(RequestRecord(**old), **limits) is Verdict.TOO_OLD  # type: ignore[arg-type]
    # an answer saved before the crash is shown however old: it costs nothing
    saved = old | {"state": "saved", "generation_id": 9}
    assert verdict(RequestRecord(**saved), **limits) is Verdict.SHOW  # type: ignore[arg-type]
    tried = fresh | {"attempts": 3}
    assert verdict(RequestRecord(**tried), **limits) is Verdict.GAVE_UP  # type: ignore[arg-type]
    unlimited = limits | {"max_attempts": 0}
    assert verdict(RequestRecord(**tried), **unlimited) is Verdict.RUN  # type: ignore[arg-type]
    turn = fresh | {"command": "story", "task": {"inputs": {"story_id": 5}}}
    assert story_of(RequestRecord(**turn)) == 5  # type: ignore[arg-type]
    regenerated = turn | {"refine_kind": "regenerate", "output_id": 6}
    assert story_of(RequestRecord(**regenerated)) is None  # type: ignore[arg-type]


def test_a_journalled_task_is_rebuilt() -> None:
    task = poem_task(SETTINGS, "rain", "limerick", "playful")
    stored = json.loads(json.dumps(snapshot(task)))
    again = task_again("poem", stored, stored["params"], SETTINGS)
    assert again is not None
    assert (again.prompt, again.params, again.inputs, again.compose is not None) == (
        task.prompt,
        task.params,
        task.inputs,
        True,
    )
    # a command with no builder (a story turn's regeneration) re-runs its prompt as it was
    plain = Task(command="recap", title="Recap", prompt=task.prompt, params=task.params)
    stored = json.loads(json.dumps(snapshot(plain)))
    again = task_again("recap", stored, stored["params"], SETTINGS)
    assert again is not None and (again.prompt, again.params) == (plain.prompt, plain.params)
    assert task_again("recap", {"inputs": {}}, {}, SETTINGS) is None


async def land(stories: Stories, story_id: int, generation_id: int, text: str) -> SegmentRecord:
    return await stories.add(
        story_id,
        channel_id=2,
        author_id=None,
        text=text,
        source="bot",
        generation_id=generation_id,
        message_id=9,
    )


async def story_with_a_part(store: Store, text: str) -> tuple[int, int]:
    """A story with one part by the bot; its id and the part's generation id."""
    story = await Stories(store).start(
        guild_id=1, channel_id=2, title="T", premise="P", genre=None, created_by=3
    )
    _, generation_id = await store.save_output(gen(command="story"))
    await land(Stories(store), story.id, generation_id, text)
    return story.id, generation_id


async def test_a_story_part_lands_once_per_generation(db_target: str | Path) -> None:
    async with Store.open(db_target) as store:
        stories = Stories(store)
        story_id, generation_id = await story_with_a_part(store, "The door opened.")
        again = await land(stories, story_id, generation_id, "The door opened.")
        assert [s.id for s in await stories.segments(story_id)] == [again.id]
        assert [s.text for s in await stories.segments(story_id)] == ["The door opened."]


async def test_a_cancelled_transaction_leaves_none_open(db_target: str | Path) -> None:
    """Cancelled at every point of a transaction, the connection is never left inside one."""
    async with Store.open(db_target) as store:
        journal = Requests(store)
        for delay in [0, 0, 0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02]:
            writing = asyncio.create_task(journal.accept(new()))
            await asyncio.sleep(delay)
            writing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writing
            assert not store._db.in_transaction
            await journal.accept(new())  # the next transaction works
        rows = await store.fetchall("SELECT COUNT(*) FROM requests")
        assert rows[0][0] >= 9


async def old_story_with_parts(store: Store, *texts: str) -> tuple[int, int]:
    """A story with parts by the bot, written as the bot wrote them before migration 0004
    (positions from the parts themselves); its id and the last part's generation id."""
    story = await Stories(store).start(
        guild_id=1, channel_id=2, title="T", premise="P", genre=None, created_by=3
    )
    generation_id = 0
    for position, text in enumerate(texts, 1):
        _, generation_id = await store.save_output(gen(command="story"))
        async with store.transaction() as db:
            await db.execute(
                "INSERT INTO story_segments (story_id, channel_id, author_id, text, position,"
                " source, generation_id, created_at) VALUES (?, 2, NULL, ?, ?, 'bot', ?, 'x')",
                (story.id, text, position, generation_id),
            )
    return story.id, generation_id


async def test_migration_0003_on_a_database_with_stories(
    db_target: str | Path, tmp_path: Path
) -> None:
    """A database from before the journal takes it, its story parts as they were."""
    names = ("0001_initial.sql", "0002_votes.sql")
    before = copy_migrations(tmp_path / "migrations", *names, dialect=dialect_of(db_target))
    path = db_target
    async with Store.open(path, migrations_dir=before) as store:
        story_id, generation_id = await old_story_with_parts(store, "Part.")
    async with Store.open(path) as store:
        states = {
            s.migration.name: s.applied_at is not None for s in await store.migration_status()
        }
        assert states == {
            "initial": True,
            "votes": True,
            "requests": True,
            "story_worlds": True,
            "models": True,
        }
        parts = await Stories(store).segments(story_id)
        assert [(p.text, p.generation_id) for p in parts] == [("Part.", generation_id)]
        assert await Requests(store).unfinished() == []


async def test_migration_0004_keeps_a_storys_parts_and_goes_on_after_them(
    db_target: str | Path, tmp_path: Path
) -> None:
    """Stories from before story worlds: their parts as they were, the position counter set
    from them (a new part goes after the last), no note, no parent."""
    names = ("0001_initial.sql", "0002_votes.sql", "0003_requests.sql")
    before = copy_migrations(tmp_path / "migrations", *names, dialect=dialect_of(db_target))
    path = db_target
    async with Store.open(path, migrations_dir=before) as store:
        story_id, _ = await old_story_with_parts(store, "One.", "Two.")
    async with Store.open(path) as store:
        stories = Stories(store)
        story = await stories.get(story_id)
        assert story is not None
        assert (story.last_position, story.note, story.parent_id) == (2, "", None)
        await stories.add(story_id, channel_id=2, author_id=3, text="Three.", source="user")
        parts = await stories.segments(story_id)
        assert [(p.text, p.position) for p in parts] == [("One.", 1), ("Two.", 2), ("Three.", 3)]
