"""Things going wrong: the engine (error, out of memory, hang, a dead loop or worker), Discord
(429, 500, a message deleted mid-answer) and SQLite (locked by another writer). Each ends with
a clear message or a retry, nothing half-written is kept, and the next request works."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from bot.generation.queue import GenerationQueue
from bot.generation.types import EngineFailure, OutOfMemory
from bot.store import Store, StoreBusy
from emulator import Message, User
from tests.conftest import World, open_world
from tests.fakes import ScriptedEngine, request

WAIT = 60


# -- the queue, directly ---------------------------------------------------------------------


async def test_out_of_memory_fails_its_call_clearly_then_recovers() -> None:
    async with GenerationQueue(ScriptedEngine(delay=0), timeout=5) as queue:
        with pytest.raises(OutOfMemory) as failed:
            await queue.submit(request(1, "a !!oom!! b")).result()
        assert "memory" in failed.value.user_message
        assert (await queue.submit(request(1, "fine now")).result()).text == "fine now"


async def test_a_dead_scheduling_loop_tells_every_waiter_and_restarts() -> None:
    engine = ScriptedEngine(delay=0)
    async with GenerationQueue(engine, timeout=5) as queue:
        engine.gate.clear()
        running = queue.submit(request(1, "first"))
        await running.wait_started(5)
        waiting = [queue.submit(request(u, "waiting")) for u in (2, 3)]
        real_take = queue._take

        def broken(n: int) -> list:  # type: ignore[type-arg]
            queue._take = real_take  # type: ignore[method-assign]
            raise RuntimeError("scheduler bug")

        queue._take = broken  # type: ignore[method-assign, assignment]
        engine.gate.set()
        assert (await running.result()).text == "first"  # it was already in the engine
        for handle in waiting:
            with pytest.raises(EngineFailure):
                await asyncio.wait_for(handle.result(), 5)
        assert queue.restarts == 1
        assert (await queue.submit(request(4, "after")).result()).text == "after"


async def test_a_lost_worker_pool_is_replaced() -> None:
    async with GenerationQueue(ScriptedEngine(delay=0), timeout=5) as queue:
        assert queue._executor is not None
        queue._executor.shutdown(wait=True)  # as if its thread had died
        assert (await queue.submit(request(1, "still here")).result()).text == "still here"
        assert queue._threads_started == 2


async def test_a_locked_database_is_retried_then_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    async with Store.open(path, busy_timeout_ms=50) as store:
        other = sqlite3.connect(path, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(StoreBusy) as busy:
            await store.set_setting("guild", 1, "mode", "chat")
        assert "busy" in busy.value.user_message
        threading.Timer(0.1, other.rollback).start()  # released while the store retries
        await store.set_setting("guild", 1, "mode", "chat")
        assert await store.get_scope_settings("guild", 1) == {"mode": "chat"}
        other.close()


# -- over Discord ------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def faulty(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    engine = ScriptedEngine(delay=0.01, max_batch=4)
    async with open_world(
        engine,
        tmp_path_factory.mktemp("faults"),
        busy_timeout_ms=50,
        timeout=1.5,
        hang_grace=1.0,
    ) as world:
        yield world
        engine.release.set()


async def ask(world: World, user: User, text: str) -> Message:
    """`user` mentions the bot; returns the bot's answer message (once it exists)."""
    me = world.bot.user
    assert me is not None
    said = await world.emu.say(user, world.channel, f"<@{me.id}> {text}")
    return await world.emu.wait_for(
        lambda: next(
            (
                m
                for m in world.emu.channel_messages(world.channel.id)
                if m.reference_id == said.id and m.author.bot
            ),
            None,
        ),
        timeout=WAIT,
    )


async def settled(world: World, message: Message) -> str:
    """The message's final words: its embed's text, or its content once the bot is done."""
    await world.emu.wait_for(
        lambda: message.embeds or (message.content and not message.content.startswith(("✍️", "⏳"))),
        timeout=WAIT,
    )
    return message.embeds[0]["description"] if message.embeds else message.content


async def count(world: World, sql: str) -> int:
    return int((await world.services.store.fetchall(sql))[0][0])


@pytest.mark.parametrize(
    ("marker", "expected"),
    [
        ("!!raise!!", EngineFailure.user_message),
        ("!!oom!!", OutOfMemory.user_message),
        ("!!hang!!", "That took too long"),
    ],
)
async def test_engine_failures_end_with_a_clear_message(
    faulty: World, marker: str, expected: str
) -> None:
    before = await count(faulty, "SELECT COUNT(*) FROM generations")
    bad = await ask(faulty, faulty.alice, f"please {marker} now")
    good = await ask(faulty, faulty.bob, "meanwhile hello")  # another waiter is served
    assert (await settled(faulty, bad)).startswith(expected)
    assert bad.components == []  # no Cancel button left behind
    assert "hello" in await settled(faulty, good)
    after = await ask(faulty, faulty.alice, "and again")  # the worker goes on
    assert "again" in await settled(faulty, after)
    assert await count(faulty, "SELECT COUNT(*) FROM generations") == before + 2
    assert faulty.emu.errors == []


async def test_discord_429_and_500_are_retried(faulty: World) -> None:
    emu = faulty.emu
    throttled = emu.inject_fault(
        "PATCH", f"/channels/{faulty.channel.id}/messages/", status=429, times=2, retry_after=0.3
    )
    first = await ask(faulty, faulty.alice, "slow down")
    assert "slow down" in await settled(faulty, first) and throttled.hits == 2
    failing = emu.inject_fault("POST", f"/channels/{faulty.channel.id}/messages", status=500)
    second = await ask(faulty, faulty.bob, "server error")
    assert "server error" in await settled(faulty, second) and failing.hits == 1
    sql = f"SELECT COUNT(*) FROM outputs WHERE message_id IN ({first.id}, {second.id})"
    for _ in range(100):  # the bot records the message id right after Discord accepts it
        if await count(faulty, sql) == 2:
            break
        await asyncio.sleep(0.05)
    assert await count(faulty, sql) == 2  # each saved once
    assert emu.errors == []


async def test_an_answer_whose_message_was_deleted_is_still_saved(faulty: World) -> None:
    emu, engine = faulty.emu, faulty.services.queue.engine
    assert isinstance(engine, ScriptedEngine)
    engine.gate.clear()
    message = await ask(faulty, faulty.alice, "write this down")
    await emu.delete(message)  # a moderator deletes it while it is being written
    engine.gate.set()

    async def saved() -> bool:
        rows = await faulty.services.store.fetchall(
            "SELECT o.message_id FROM generations g JOIN outputs o ON o.id = g.output_id"
            " WHERE g.output LIKE '%write this down%'"
        )
        return bool(rows) and rows[0][0] is None  # kept, though Discord could not show it

    for _ in range(200):
        if await saved():
            break
        await asyncio.sleep(0.05)
    assert await saved()
    # the bot's edits of the deleted message were refused as Discord would; nothing else
    assert emu.errors and all(f"{message.id}: 404 Unknown Message" in e for e in emu.errors)
    emu.errors.clear()


async def test_a_locked_database_gets_a_polite_answer(faulty: World) -> None:
    emu = faulty.emu
    assert faulty.services.store.path is not None  # the faults world runs on SQLite
    other = sqlite3.connect(faulty.services.store.path, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    try:
        interaction = await emu.slash(
            faulty.owner, faulty.channel, "settings set", key="mode", value="critique"
        )
        await emu.wait_for(lambda: interaction.callback_type is not None, timeout=WAIT)
        reply = emu.original(interaction)
        assert interaction.ephemeral and reply is not None
        assert reply.content == StoreBusy.user_message
    finally:
        other.rollback()
        other.close()
    assert emu.errors == []
