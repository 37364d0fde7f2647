"""SIGKILL during heavy writes: the database stays whole and keeps every acknowledged write.

The bot runs as its own process (on a tiny model saved to disk, so it starts fast) while
people change settings in many channels at once; each change is acknowledged only after it
is committed. The process is killed at a random moment, `KILLS` times in a row (3 in
`make test`, 20 in `make stress`).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from emulator import Emulator, Interaction
from tests.test_process import TOKEN, BotProcess, bot_env

pytestmark = pytest.mark.slow
KILLS = int(os.environ.get("KILLS", "2"))


async def test_sigkill_during_writes_loses_nothing_acknowledged(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    emu = await Emulator(token=TOKEN).start()
    guild = emu.add_guild()
    owner = emu.users[guild.owner_id]
    db = tmp_path / "llmos.sqlite3"
    rng = random.Random(11)
    acknowledged: dict[int, str] = {}  # channel id -> the persona the bot confirmed
    survived = 0
    try:
        for round_ in range(KILLS):
            env = bot_env(
                emu,
                db,
                MODEL=str(tiny_model_dir),
                ENGINE="sequential",
                LOG_LEVEL="INFO",
                USER_REQUESTS_PER_MINUTE="0",
            )
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                cwd=tmp_path,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            bot = BotProcess(proc)
            try:
                await bot.wait_log(r"Connected as LLMOS", timeout=120)
                sent: list[tuple[Interaction, int, str]] = []
                stop_at = asyncio.get_running_loop().time() + rng.uniform(0.3, 1.5)
                n = 0
                while asyncio.get_running_loop().time() < stop_at:
                    for _ in range(10):  # ten changes in flight at once
                        channel = emu.add_channel(guild, f"k{round_}-{n}")
                        value = f"persona {round_}-{n}"
                        interaction = await emu.slash(
                            owner, channel, "settings set", key="persona", value=value
                        )
                        sent.append((interaction, channel.id, value))
                        n += 1
                    await asyncio.sleep(0.02)
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
            finally:
                bot.kill()
            for interaction, channel_id, value in sent:
                reply = emu.original(interaction)
                if reply is not None and reply.content.startswith("`persona` is now"):
                    acknowledged[channel_id] = value
            with sqlite3.connect(db) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                stored = dict(
                    conn.execute(
                        "SELECT scope_id, json_extract(value, '$') FROM settings"
                        " WHERE scope = 'channel' AND key = 'persona'"
                    ).fetchall()
                )
            missing = {c: v for c, v in acknowledged.items() if stored.get(c) != v}
            assert missing == {}, f"round {round_}: acknowledged but lost: {missing}"
            survived += 1
        print(
            f"\nkills survived: {survived}/{KILLS}; acknowledged writes kept: "
            f"{len(acknowledged)}/{len(acknowledged)}"
        )
        assert acknowledged  # the test did write something
    finally:
        await emu.stop()
