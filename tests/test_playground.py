"""The playground as a new user meets it: `python -m bot playground`, typing into a terminal."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from bot.playground import parse_slash, typed_options
from tests.test_process import bot_env

pytestmark = pytest.mark.slow


def test_parse_slash_with_options_and_subcommands() -> None:
    assert parse_slash("/poem topic: autumn rain form: haiku") == (
        "poem",
        {"topic": "autumn rain", "form": "haiku"},
    )
    assert parse_slash("/story continue length: short") == ("story continue", {"length": "short"})
    command = {
        "name": "poem",
        "options": [
            {"name": "topic", "type": 3},
            {"name": "form", "type": 3, "choices": [{"name": "Haiku", "value": "haiku"}]},
            {"name": "count", "type": 4},
        ],
    }
    assert typed_options(command, [], {"form": "HAIKU", "count": "3"}) == {
        "form": "haiku",
        "count": 3,
    }
    with pytest.raises(ValueError, match="has no option 'nope'"):
        typed_options(command, [], {"nope": "x"})


async def test_playground_session(tmp_path: Path) -> None:
    env = bot_env(None, tmp_path / "llmos.sqlite3")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "playground",
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    seen: list[str] = []

    async def until(text: str, timeout: float = 90) -> None:
        async def read() -> None:
            while not any(text in line for line in seen):
                line = await proc.stdout.readline()  # type: ignore[union-attr]
                if not line:
                    raise AssertionError("playground ended early:\n" + "".join(seen))
                seen.append(line.decode())

        await asyncio.wait_for(read(), timeout)

    await until("Connected. You are 'you' in #writers-room.")
    proc.stdin.write(b"/poem topic: autumn rain form: haiku\n")
    await until("LLMOS (edited): Haiku · autumn rain")
    await until("SmolLM2-135M-Instruct · ")
    proc.stdin.write(b"Once upon a time there was a fox.\n")
    await until("you: Once upon a time there was a fox.")
    proc.stdin.write(b"/poem nope: x\n")
    await until("(that did not work: /poem has no option 'nope'")
    proc.stdin.write(b"quit\n")
    await proc.stdin.drain()
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    transcript = "".join(seen)
    assert "Traceback" not in transcript
    assert (tmp_path / "playground.sqlite3").exists()  # beside DATABASE_PATH, not in it
