"""Secrets stay secret: `.env` is ignored by git; the token never reaches a log (the process
tests scan a whole run's log, see `test_process.py`) or a repr."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from bot.config import load_settings
from tests.conftest import REPO


def test_dotenv_is_ignored_by_git() -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for path in (".env", "data/llmos.sqlite3"):
        result = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, check=False)
        assert result.returncode == 0, f"{path} is not git-ignored"


def test_the_token_is_never_in_a_repr() -> None:
    token = "MTEst.very-secret"
    settings = load_settings({"DISCORD_TOKEN": token, "OPENAI_API_KEY": "sk-x"}, dotenv_path=None)
    assert token not in repr(settings) and "sk-x" not in repr(settings)
    assert token not in str(settings)
