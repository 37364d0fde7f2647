"""Sharding: the emulator routes each guild's events to its shard's session only, and two bot
processes (one shard each) on one database answer each server from the process of its shard,
once: commands, and the requests journalled before they started."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest

from bot.app import LLMOSBot
from bot.config import load_settings
from bot.generation.queue import GenerationQueue
from bot.services import Services
from bot.shards import owns, shard_of
from bot.store import Store
from bot.store.requests import NewRequest, Requests
from bot.ui.resume import LOST, TOO_OLD
from emulator import Emulator, Message
from tests.fakes import ScriptedEngine
from tests.test_process import TOKEN, BotProcess, start_bot


class Client:
    """A bare gateway client: IDENTIFY (with a shard, or none), then every frame it gets."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(json.loads(msg.data))
        self.closed.set()

    def received(self, event: str) -> list[dict[str, Any]]:
        return [f["d"] for f in self.frames if f.get("t") == event]

    @property
    def ready(self) -> dict[str, Any]:
        return self.received("READY")[0]


@contextlib.asynccontextmanager
async def gateway(emu: Emulator) -> AsyncIterator[Any]:
    """`connect(shard, op=2, **fields)`: a new client that sent IDENTIFY (or RESUME, op 6)."""
    async with aiohttp.ClientSession() as http:
        clients: list[Client] = []

        async def connect(shard: list[int] | None = None, op: int = 2, **fields: Any) -> Client:
            ws = await http.ws_connect(emu.gateway_url)
            hello = await ws.receive_json()
            assert hello["op"] == 10
            data: dict[str, Any] = {"token": emu.token, "intents": 1 << 15} | fields
            if shard is not None:
                data["shard"] = shard
            await ws.send_json({"op": op, "d": data})
            client = Client(ws)
            clients.append(client)
            return client

        try:
            yield connect
        finally:
            for client in clients:
                await client.ws.close()
                await client._reader


async def settle(emu: Emulator, *clients: Client) -> None:
    """Until each client has its READY (or was closed)."""
    await emu.wait_for(lambda: all(c.received("READY") or c.closed.is_set() for c in clients))


def test_guild_ids_spread_over_shards_and_a_test_can_place_one() -> None:
    emu = Emulator(shards=3)
    ids = [emu.add_guild(f"g{n}").id for n in range(6)]
    assert len(set(ids)) == 6
    assert [shard_of(i, 3) for i in ids] == [0, 1, 2, 0, 1, 2]  # in turn
    assert len({i >> 22 for i in ids}) == 6  # each its own timestamp: spread for any count
    for shard in (2, 0, 0, 1):
        assert shard_of(emu.add_guild(shard=shard).id, 3) == shard
    with pytest.raises(ValueError, match="shard 3 is not one of the 3"):
        emu.add_guild(shard=3)


def test_this_process_owns_the_servers_of_its_shards() -> None:
    every = load_settings({}, dotenv_path=None)
    mine = load_settings({"SHARD_COUNT": "2", "SHARD_IDS": "1"}, dotenv_path=None)
    on_one, on_zero = (5 << 22) | 77, (4 << 22) | 77
    assert owns(every, on_one) and owns(every, on_zero) and owns(every, None)
    assert owns(mine, on_one) and not owns(mine, on_zero)
    assert not owns(mine, None)  # direct messages come on shard 0


async def test_each_shard_gets_only_its_guilds_events() -> None:
    emu = await Emulator(shards=2).start()
    try:
        zero, one = emu.add_guild("Zero", shard=0), emu.add_guild("One", shard=1)
        here, there = emu.add_channel(zero, "poetry"), emu.add_channel(one, "poetry")
        alice, bob = emu.add_member(zero, "alice"), emu.add_member(one, "bob")
        async with aiohttp.ClientSession() as http:
            put = f"{emu.base_url}/applications/{emu.application_id}/commands"
            auth = {"Authorization": f"Bot {emu.token}"}
            async with http.get(f"{emu.base_url}/gateway/bot", headers=auth) as response:
                assert (await response.json())["shards"] == 2
            async with http.put(put, headers=auth, json=[{"name": "ping", "description": "p"}]):
                pass
        async with gateway(emu) as connect:
            first, second, whole = await connect([0, 2]), await connect([1, 2]), await connect()
            await settle(emu, first, second, whole)
            assert first.ready["shard"] == [0, 2] and second.ready["shard"] == [1, 2]
            assert whole.ready["shard"] == [0, 1]
            assert [g["id"] for g in first.ready["guilds"]] == [str(zero.id)]
            assert [g["id"] for g in second.ready["guilds"]] == [str(one.id)]
            assert {g["id"] for g in whole.ready["guilds"]} == {str(zero.id), str(one.id)}
            assert [g["name"] for g in first.received("GUILD_CREATE")] == ["Zero"]
            assert [g["name"] for g in second.received("GUILD_CREATE")] == ["One"]
            assert len({first.ready["session_id"], second.ready["session_id"]}) == 2

            said = await emu.say(bob, there, "hello over there")
            asked = await emu.slash(alice, here, "ping")
            await emu.react(bob, said, "👍")
            # an event without a guild, as a direct message's: shard 0's
            await emu.dispatch("TYPING_START", {"channel_id": "1", "user_id": str(alice.id)})
            await emu.wait_for(lambda: len(whole.received("TYPING_START")) == 1)
            await emu.wait_for(lambda: first.received("TYPING_START"))
            await emu.wait_for(lambda: second.received("MESSAGE_REACTION_ADD"))
            assert [m["id"] for m in second.received("MESSAGE_CREATE")] == [str(said.id)]
            assert first.received("MESSAGE_CREATE") == []
            assert [i["id"] for i in first.received("INTERACTION_CREATE")] == [str(asked.id)]
            assert second.received("INTERACTION_CREATE") == []
            assert first.received("MESSAGE_REACTION_ADD") == []
            assert second.received("TYPING_START") == []  # no guild: shard 0's
            assert len(whole.received("MESSAGE_CREATE")) == 1
            assert len(whole.received("INTERACTION_CREATE")) == 1

            # a dropped shard resumes its own session: what it missed, then RESUMED
            session = second.ready["session_id"]
            seq = max(f["s"] for f in second.frames if f.get("s"))
            await emu.drop_gateway(shard=1)
            await second.closed.wait()
            assert first.ws.closed is False
            later = await emu.say(bob, there, "while you were away")
            back = await connect(op=6, session_id=session, seq=seq)
            await emu.wait_for(lambda: back.received("RESUMED"))
            assert [m["id"] for m in back.received("MESSAGE_CREATE")] == [str(later.id)]
            assert first.received("RESUMED") == []
    finally:
        await emu.stop()


async def test_bad_shard_duplicate_shard_and_too_many_guilds_are_closed() -> None:
    emu = await Emulator(shards=2).start()
    try:
        emu.add_guild(shard=0)
        emu.add_guild(shard=1)
        async with gateway(emu) as connect:
            out_of_range, no_count = await connect([2, 2]), await connect([0, 0])
            live = await connect([0, 2])
            await settle(emu, live)
            twice = await connect([0, 2])
            for refused in (out_of_range, no_count, twice):
                await refused.closed.wait()
                assert refused.ws.close_code == 4010
                assert refused.received("READY") == []
            await live.ws.close()  # gone: the shard may identify again
            await emu.wait_for(lambda: emu.session_of(0) is None)
            again = await connect([0, 2])
            await settle(emu, again)
            assert again.received("READY")
            emu.max_guilds_per_shard = 1
            whole = await connect()  # both guilds in one session: too many
            await whole.closed.wait()
            assert whole.ws.close_code == 4011
    finally:
        await emu.stop()


async def test_a_bot_refused_its_shard_stops_with_the_close_code(tmp_path: Path) -> None:
    """Shard 0 already runs elsewhere: the bot's start ends with 4010 (the launcher turns it
    into a log line and exit status 1), and nothing is answered twice."""
    emu = await Emulator(shards=2).start()
    emu.add_guild(shard=0)
    settings = load_settings(
        {"SHARD_COUNT": "2", "SHARD_IDS": "0", "SYNC_COMMANDS": "off"}, dotenv_path=None
    )
    try:
        with emu.redirected():
            async with (
                gateway(emu) as connect,
                Store.open(tmp_path / "llmos.sqlite3") as store,
                GenerationQueue(ScriptedEngine()) as queue,
            ):
                elsewhere = await connect([0, 2])
                await settle(emu, elsewhere)
                bot = LLMOSBot(Services.build(settings, store, queue))
                with pytest.raises(discord.ConnectionClosed) as closed:
                    await asyncio.wait_for(bot.start(emu.token), 60)
                assert closed.value.code == 4010
                assert bot.is_closed()
    finally:
        await emu.stop()


# -- two bot processes, one shard each, one database --------------------------------------------


async def bot_message(emu: Emulator, channel_id: int, content: str) -> Message:
    """A message of the bot's, posted as the bot would (REST)."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{emu.base_url}/channels/{channel_id}/messages",
            headers={"Authorization": f"Bot {emu.token}"},
            json={"content": content},
        ) as response,
    ):
        assert response.status == 200
        return emu.messages[int((await response.json())["id"])]


@pytest.mark.slow
async def test_two_processes_one_shard_each_answer_each_server_once(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    emu = await Emulator(token=TOKEN, shards=2).start()
    processes: list[BotProcess] = []
    try:
        zero, one = emu.add_guild("Zero", shard=0), emu.add_guild("One", shard=1)
        channels = [emu.add_channel(zero, "poetry"), emu.add_channel(one, "poetry")]
        people = [emu.add_member(zero, "alice"), emu.add_member(one, "bob")]
        db = tmp_path / "llmos.sqlite3"
        # Journalled before the start, one per server (their tasks cannot be rebuilt): shard
        # 0's process says they are too old (RESUME_MAX_AGE=0), shard 1's that it could not
        # pick them up. Each note in the other's server would show a process took on another
        # shard's request.
        waiting = [await bot_message(emu, c.id, "✍️ …") for c in channels]
        async with Store.open(db) as store:
            for guild, channel, person, message in zip(
                (zero, one), channels, people, waiting, strict=True
            ):
                await Requests(store).accept(
                    NewRequest("poem", {}, person.id, channel.id, guild.id, message.id)
                )
        settings = {
            "MODEL": str(tiny_model_dir),
            "ENGINE": "sequential",
            "LOG_LEVEL": "INFO",
            "USER_REQUESTS_PER_MINUTE": "0",
            "MAX_NEW_TOKENS": "16",
            "SHARD_COUNT": "2",
        }
        for shard, extra in ((0, {"RESUME_MAX_AGE": "0"}), (1, {})):
            processes.append(
                await start_bot(emu, db, tmp_path, **settings, SHARD_IDS=str(shard), **extra)
            )
        for bot in processes:
            await bot.wait_log(r"Connected as LLMOS to 1 server\(s\) on shard\(s\) \d of 2", 180)
        assert "on shard(s) 0 of 2" in processes[0].log
        assert "on shard(s) 1 of 2" in processes[1].log

        notes = await emu.wait_for(
            lambda: [m.content for m in waiting] == [TOO_OLD, LOST] and waiting, timeout=60
        )
        for message in notes:
            assert len(message.history) == 1, message.history  # one edit: one process

        for index, (channel, person) in enumerate(zip(channels, people, strict=True)):
            about = await emu.slash(person, channel, "about")
            shown = await emu.wait_final(about, lambda m: bool(m.embeds), timeout=30)
            text = shown.text
            assert f"This server: shard {index} of 2" in text
            assert f"`{index}` " in text and f"`{1 - index}` " not in text  # its own shard only
            assert "sequential engine" in text
            mine, other = emu.session_of(index), emu.session_of(1 - index)
            assert mine is not None and other is not None
            assert str(about.id) in [i["id"] for i in mine.received("INTERACTION_CREATE")]
            assert str(about.id) not in [i["id"] for i in other.received("INTERACTION_CREATE")]

        def journal() -> list[tuple[int, str]]:
            with sqlite3.connect(db) as conn:
                return conn.execute("SELECT guild_id, state FROM requests ORDER BY id").fetchall()

        states = await emu.wait_for(
            lambda: (
                (rows := journal()) and all(s not in ("pending", "saved") for _, s in rows) and rows
            ),
            timeout=30,
        )
        assert states == [(zero.id, "interrupted"), (one.id, "failed")]
        for bot in processes:
            assert await bot.stop() == 0
            assert "Traceback" not in bot.log
        assert emu.errors == []
    finally:
        for bot in processes:
            bot.kill()
        await emu.stop()


def test_about_keeps_a_long_list_of_shards_or_servers_within_discords_field_limit() -> None:
    from cogs.about import FIELD_LIMIT, _field

    lines = [f"`{i}` in, 2/32 in flight, 1234 served, 0 failure(s)" for i in range(200)]
    shown = _field(lines)
    assert len(shown) <= FIELD_LIMIT and shown.endswith("more")
    kept = shown.splitlines()[:-1]
    assert kept == lines[: len(kept)] and shown.splitlines()[-1] == f"… and {200 - len(kept)} more"
    assert _field(lines[:3]) == "\n".join(lines[:3])  # a short list whole
