"""Waiting and streaming as people see it: queue positions that move, Cancel while waiting
and while writing, and the edit rate. A scripted engine (one request at a time, a word per
`delay`) makes the timing controllable; the model path is tested elsewhere."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from emulator import Message, User
from tests.conftest import World, open_world
from tests.fakes import ScriptedEngine

pytestmark = pytest.mark.slow
WAIT = 60


@pytest_asyncio.fixture(scope="module")
async def scripted(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    engine = ScriptedEngine(delay=0.05, max_batch=1)
    async with open_world(
        engine, tmp_path_factory.mktemp("ux"), max_pending_per_user=2, timeout=60
    ) as world:
        yield world


def engine_of(world: World) -> ScriptedEngine:
    engine = world.services.queue.engine
    assert isinstance(engine, ScriptedEngine)
    return engine


async def mention(world: World, user: User, words: int) -> Message:
    """`user` mentions the bot with `words` words; returns the bot's answer message."""
    emu, me = world.emu, world.bot.user
    assert me is not None
    text = " ".join(f"w{i}" for i in range(words))
    said = await emu.say(user, world.channel, f"<@{me.id}> {text}")
    return await emu.wait_for(
        lambda: next(
            (
                m
                for m in emu.channel_messages(world.channel.id)
                if m.reference_id == said.id and m.author.bot
            ),
            None,
        ),
        timeout=WAIT,
    )


def versions(message: Message) -> list[str]:
    return [v.get("content") or "" for v in message.history] + [message.content]


async def test_queue_position_moves_and_streaming_edits_are_paced(scripted: World) -> None:
    emu, engine = scripted.emu, engine_of(scripted)
    engine.delay = 0.1
    engine.gate.clear()  # the first request holds the engine
    first = await mention(scripted, scripted.bob, 12)
    second = await mention(scripted, scripted.alice, 12)
    third = await mention(scripted, scripted.mod, 40)
    await emu.wait_for(lambda: third.content.startswith("⏳ #2 in queue"), timeout=WAIT)
    assert "llmos" not in "".join(third.custom_ids) and third.components  # a Cancel button
    engine.gate.set()
    for message in (first, second, third):
        await emu.wait_for(lambda m=message: bool(m.embeds), timeout=WAIT)  # type: ignore[misc]
    seen = versions(third)
    assert any(v.startswith("⏳ #1 in queue") for v in seen), seen
    assert any(v.startswith("✍️ Q: w0") for v in seen), seen  # the text grew in place
    # Discord allows about 5 edits per message in 5 s: one a second, the final edit included
    gaps = [b - a for a, b in itertools.pairwise(third.edit_times)]
    print(f"\nstreaming: {len(third.edit_times)} edits, gaps {min(gaps):.2f} to {max(gaps):.2f} s")
    assert len(third.edit_times) >= 4 and min(gaps) >= 0.9, gaps
    for i, start in enumerate(third.edit_times):
        assert len([t for t in third.edit_times[i:] if t - start < 5.0]) <= 5
    assert emu.errors == []


async def test_cancel_while_waiting_is_for_the_requester(scripted: World) -> None:
    emu, engine, store = scripted.emu, engine_of(scripted), scripted.services.store
    engine.delay = 0.01
    engine.gate.clear()
    busy = await mention(scripted, scripted.bob, 5)
    interaction = await emu.slash(
        scripted.alice, scripted.channel, "poem", topic="rain", form="haiku"
    )
    message = await emu.wait_final(
        interaction, lambda m: m.content.startswith("⏳ #1"), timeout=WAIT
    )
    cancel = message.components[0]["components"][0]["custom_id"]
    refused = await emu.click(scripted.bob, message, cancel)
    await emu.wait_for(lambda: refused.callback_type is not None, timeout=10)
    assert refused.ephemeral and "Only the person who asked" in emu.original(refused).content  # type: ignore[union-attr]
    before = await store.fetchall("SELECT COUNT(*) FROM generations")
    await emu.click(scripted.alice, message, cancel)
    await emu.wait_for(lambda: message.content == "Cancelled.", timeout=WAIT)
    assert message.components == [] and message.embeds == []
    engine.gate.set()
    await emu.wait_for(lambda: bool(busy.embeds), timeout=WAIT)
    assert await store.fetchall("SELECT COUNT(*) FROM generations") != before  # bob's answer
    rows = await store.fetchall(
        "SELECT COUNT(*) FROM generations WHERE user_id = ? AND command = 'poem'",
        (scripted.alice.id,),
    )
    assert rows[0][0] == 0  # nothing half-written was kept
    assert emu.errors == []


async def test_cancel_while_writing_stops_the_engine(scripted: World) -> None:
    emu, engine = scripted.emu, engine_of(scripted)
    engine.delay = 0.1
    aborted = engine.aborted
    message = await mention(scripted, scripted.alice, 200)  # 20 s of writing
    await emu.wait_for(lambda: message.content.startswith("✍️ Q:"), timeout=WAIT)
    await emu.click(scripted.alice, message, message.components[0]["components"][0]["custom_id"])
    await emu.wait_for(lambda: message.content == "Cancelled.", timeout=WAIT)
    await emu.wait_for(lambda: engine.aborted == aborted + 1, timeout=5)  # stopped mid-answer
    assert not message.embeds and message.components == []
    assert emu.errors == []


async def test_too_many_pending_is_refused_privately(scripted: World) -> None:
    emu, engine = scripted.emu, engine_of(scripted)
    engine.delay = 0.01
    engine.gate.clear()  # bob's first request holds the engine, his second waits
    first = await mention(scripted, scripted.bob, 3)
    second = await mention(scripted, scripted.bob, 3)
    third = await emu.slash(scripted.bob, scripted.channel, "poem", topic="three", form="haiku")
    refusal = await emu.wait_for(lambda: emu.original(third), timeout=WAIT)
    assert refusal.content == "You already have 2 requests waiting. Please wait for one to finish."
    assert third.ephemeral
    engine.gate.set()
    for message in (first, second):
        await emu.wait_for(lambda m=message: bool(m.embeds), timeout=WAIT)  # type: ignore[misc]
    assert emu.errors == []
