"""Issue #16 end to end: two bot processes, one shard each, on one shared PostgreSQL database,
writing through a pool of three real `transformers serve` processes of which one is killed while
answers are being written. Every request is answered once, by the process that owns its server,
and nothing is lost.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.generation import types
from bot.preferences import Preferences
from bot.store import Store
from emulator import Emulator, Message
from tests.conftest import settled
from tests.servers import Served
from tests.test_process import TOKEN, BotProcess, start_bot

pytestmark = pytest.mark.slow

PER_SERVER = 3  # mentions per Discord server; 4 servers, 2 per shard
# every polite failure the engine and the queue can show instead of an answer
FAILURES = [
    message
    for kind in vars(types).values()
    if isinstance(kind, type)
    and isinstance(message := getattr(kind, "user_message", None), str)
    and len(message) > 20  # not "Cancelled.", which a model might write
]


async def test_two_shards_one_database_a_pool_losing_a_server_answer_everything_once(
    tiny_model_dir: Path, postgres_url: str, tmp_path: Path
) -> None:
    servers = [Served(tiny_model_dir, threads=1) for _ in range(3)]
    emu = await Emulator(token=TOKEN, shards=2).start()
    bots: list[BotProcess] = []
    try:
        for server in servers:
            server.start()
        guilds = [emu.add_guild(f"Room {i}", shard=i % 2) for i in range(4)]
        channels = [emu.add_channel(g, "chat") for g in guilds]
        people = [emu.add_member(g, f"writer{i}") for i, g in enumerate(guilds)]
        # Greedy answers: a server dying mid-answer is replayed on another and must write the
        # same words (a sampled replay may not, and would then fail politely: a lost answer).
        async with Store.open(postgres_url) as store:
            for guild in guilds:
                await Preferences(store).set(
                    "guild", guild.id, "decoding", "greedy", guild_id=guild.id, user_id=0
                )
        env = {
            "DATABASE_URL": postgres_url,
            "ENGINE": "openai",
            "OPENAI_BASE_URL": ",".join(s.url for s in servers),
            "OPENAI_MODEL": str(tiny_model_dir),
            "OPENAI_DIALECT": "transformers",
            "OPENAI_MAX_CONCURRENCY": "2",
            "OPENAI_EJECT_AFTER": "2",
            "OPENAI_HEALTH_SECONDS": "0.5",
            "MAX_NEW_TOKENS": "24",
            "USER_REQUESTS_PER_MINUTE": "0",
            "MAX_PENDING_PER_USER": "8",
            "LOG_LEVEL": "INFO",
            "SHARD_COUNT": "2",
        }
        unused = tmp_path / "unused.sqlite3"  # DATABASE_URL wins
        bots = [await start_bot(emu, unused, tmp_path, **env, SHARD_IDS=str(s)) for s in (0, 1)]
        await asyncio.gather(*(asyncio.to_thread(s.wait_ready) for s in servers))
        for shard, bot in enumerate(bots):
            await bot.wait_log(
                rf"Connected as LLMOS to 2 server\(s\) on shard\(s\) {shard} of 2", 180
            )

        mention = f"<@{emu.bot_user.id}>"
        asked: list[Message] = []
        for round_ in range(PER_SERVER):
            for channel, person in zip(channels, people, strict=True):
                said = f"{mention} tell me about lantern number {round_}"
                asked.append(await emu.say(person, channel, said))

        def answers_to(message: Message) -> list[Message]:
            return [
                m
                for m in emu.messages.values()
                if m.reference_id == message.id and m.author.id == emu.bot_user.id
            ]

        # the first answer has begun: kill a server while the others are being written
        await emu.wait_for(lambda: any(answers_to(m) for m in asked), timeout=120)
        servers[0].kill()

        def all_settled() -> bool:
            return all(any(settled(a) for a in answers_to(m)) for m in asked)

        await emu.wait_for(all_settled, timeout=240)
        await asyncio.sleep(1.0)  # an answer posted twice would show up by now
        for message in asked:
            replies = answers_to(message)
            assert len(replies) == 1, [r.content for r in replies]  # answered once
            shown = replies[0].content or replies[0].embeds[0].get("description", "")
            assert shown.strip(), "an empty answer"
            assert not any(said in shown for said in FAILURES), shown  # an answer, no apology

        # each mention reached only the session of its server's shard, so only one process
        for message, channel in zip(asked, channels * PER_SERVER, strict=True):
            shard = (channel.guild_id >> 22) % 2
            mine, other = emu.session_of(shard), emu.session_of(1 - shard)
            assert mine is not None and other is not None
            assert str(message.id) in [e["id"] for e in mine.received("MESSAGE_CREATE")]
            assert str(message.id) not in [e["id"] for e in other.received("MESSAGE_CREATE")]

        # the dead server was ejected by whichever process found it first (or both)
        for bot in bots:
            await bot.wait_log(r"generation pool: ejected " + servers[0].url, 60)
        # and /about shows it, numbered rather than by address
        about = await emu.slash(people[0], channels[0], "about")
        shown = (await emu.wait_final(about, lambda m: bool(m.embeds), timeout=30)).text
        assert "`1` ejected" in shown and "`2` in," in shown and "`3` in," in shown, shown
        assert servers[0].url not in shown

        async with Store.open(postgres_url) as store:
            rows = await store.fetchall(
                "SELECT command, COUNT(*) AS n FROM generations GROUP BY command"
            )
            journal = await store.fetchall(
                "SELECT state, COUNT(*) AS n FROM requests GROUP BY state"
            )
        assert {r["command"]: r["n"] for r in rows} == {"chat": len(asked)}  # one each, kept
        assert {r["state"]: r["n"] for r in journal} == {"done": len(asked)}

        # what the pools did, for whoever reads a failure (or runs with -s)
        print("\n".join(line for bot in bots for line in bot.lines if "generation pool" in line))
        for bot in bots:
            assert await bot.stop() == 0
            assert "Traceback" not in bot.log
        assert emu.errors == []
    finally:
        for bot in bots:
            bot.kill()
        for server in servers:
            server.stop()
        for server in servers:
            server.wait_stopped()
        await emu.stop()
