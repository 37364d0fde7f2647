"""`python -m bot` as its own process, redirected to the emulator from outside."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from emulator import Emulator
from tests.conftest import MODEL_CACHE, REPO

pytestmark = pytest.mark.slow

TOKEN = "MTEst.emulator.secret-token-value"


class BotProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    async def wait_log(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        async def find() -> re.Match[str]:
            while True:
                if match := re.search(pattern, self.log):
                    return match
                if self.proc.returncode is not None:
                    raise AssertionError(f"bot exited early:\n{self.log}")
                await asyncio.sleep(0.1)

        return await asyncio.wait_for(find(), timeout)

    async def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), 30)
        await self._reader
        return code

    def kill(self) -> None:
        """Leave no bot behind when a test fails half-way."""
        if self.proc.returncode is None:
            self.proc.kill()


def bot_env(emu: Emulator | None, db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "MODEL"))}
    env |= {
        "DATABASE_PATH": str(db),
        "MODEL_CACHE_DIR": str(MODEL_CACHE),
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "process"), str(REPO)]),
        "LOG_LEVEL": "DEBUG",
    }
    if emu is not None:
        env |= {"DISCORD_TOKEN": TOKEN, "DISCORD_EMULATOR_URL": emu.url}
    return env | extra


async def start_bot(emu: Emulator, db: Path, cwd: Path, **extra: str) -> BotProcess:
    """`python -m bot` against `emu`, with `extra` settings; its log is read as it comes."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        cwd=cwd,
        env=bot_env(emu, db, **extra),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    return BotProcess(proc)


async def test_no_token_explains_and_exits_2(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        cwd=tmp_path,
        env=bot_env(None, tmp_path / "db.sqlite3"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    text = (out + err).decode()
    assert proc.returncode == 2
    assert "LLMOS needs a Discord bot token" in text
    assert "cp .env.example .env" in text
    assert "Traceback" not in text


async def test_bad_setting_exits_2_naming_the_key(tmp_path: Path) -> None:
    env = bot_env(None, tmp_path / "db.sqlite3", DEVICE="gpu")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "DEVICE='gpu' is not valid; use one of: auto, cpu, cuda, mps" in err.decode()
    assert "Traceback" not in err.decode()


async def test_bot_process_answers_poem_and_stops_on_sigterm(tmp_path: Path) -> None:
    emu = await Emulator(token=TOKEN).start()
    processes: list[BotProcess] = []
    try:
        guild = emu.add_guild()
        channel = emu.add_channel(guild, "poetry")
        alice = emu.add_member(guild, "alice")
        db = tmp_path / "llmos.sqlite3"

        bot = await start_bot(emu, db, tmp_path)
        processes.append(bot)
        await bot.wait_log(r"Connected as LLMOS", timeout=180)
        assert any(c["name"] == "poem" for c in emu.commands[None])
        interaction = await emu.slash(alice, channel, "poem", topic="autumn rain", form="haiku")
        message = await emu.wait_final(interaction, lambda m: bool(m.embeds), timeout=180)
        poem = message.embeds[0]["description"]
        assert poem.strip()
        await emu.wait_for(lambda: message.id in {r[0] for r in _rows(db)}, timeout=10)
        assert await bot.stop() == 0
        assert "Stopped cleanly" in bot.log
        assert TOKEN not in bot.log
        assert "Traceback" not in bot.log

        # A second start with the same database loads the model from the cache: no conversion.
        # (How fast is a figure for the benchmark, not a pass/fail: a busy machine varies.)
        again = await start_bot(emu, db, tmp_path)
        processes.append(again)
        await again.wait_log(r"Loaded SmolLM2-135M-Instruct on \w+ as \S+ in ([\d.]+) s")
        assert "Converting" not in again.log
        await again.wait_log(r"Connected as LLMOS", timeout=180)
        # The old output's buttons still work (their custom_id carries the generation id)...
        vote = await emu.click(alice, message, message.component("llmos:up:")["custom_id"])
        await emu.wait_for(lambda: vote.callback_type is not None, timeout=30)
        assert vote.ephemeral
        with sqlite3.connect(db) as conn:
            votes = conn.execute("SELECT user_id, kind, value FROM feedback").fetchall()
        assert votes == [(alice.id, "vote", "1")]
        # ...and so do reactions: 🔁 regenerates it in place.
        footer = message.embeds[0]["footer"]["text"]
        await emu.react(alice, message, "🔁")
        await emu.wait_for(lambda: message.embeds[0]["footer"]["text"] != footer, timeout=180)
        assert await again.stop() == 0
        assert TOKEN not in again.log  # a whole run at DEBUG: start, commands, buttons, stop
        first, second = _rows(db)
        assert first[1] == poem
        assert second == (message.id, message.embeds[0]["description"])
        assert emu.errors == []
    finally:
        for process in processes:
            process.kill()
        await emu.stop()


def _rows(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT o.message_id, g.output FROM generations g JOIN outputs o ON o.id = g.output_id"
            " ORDER BY g.id"
        ).fetchall()


async def test_db_status_and_upgrade_commands(tmp_path: Path) -> None:
    env = bot_env(None, tmp_path / "cli.sqlite3")

    async def run(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "db",
            *args,
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode()

    pending = await run("status")
    for name in ("0001_initial", "0002_votes", "0003_requests"):
        assert re.search(rf"^{name}\s+pending$", pending, re.M)
    upgraded = await run("upgrade")
    assert upgraded.startswith("applied 0001_initial")
    assert "applied 0003_requests" in upgraded
    assert re.search(r"^0003_requests\s+\d{4}-\d\d-\d\dT", await run("status"), re.M)
    assert "already up to date" in await run("upgrade")
