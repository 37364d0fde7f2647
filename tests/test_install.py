"""A plain (not editable) install of the project starts with its schema.

The project is copied to a temporary folder, installed with pip into a `--target` folder and
imported from there alone, so a file the package forgets to ship (a migration, a subpackage)
fails here instead of on a user's machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What a checkout has that a source tree handed to pip would not.
NOT_SOURCE = shutil.ignore_patterns(
    ".*", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", "data"
)

# A user's `pip install .`, offline: no dependencies (the running venv has them) and no build
# isolation (the venv's own setuptools builds it).
PIP_INSTALL = ["pip", "install", "-q", "--no-deps", "--no-index", "--no-build-isolation"]

# Runs in the installed copy: where things come from, and the migrations a new database gets.
PROBE = """
import asyncio, json, sys
from importlib.resources import files

import bot, migrations
from bot.store import Store


async def applied(path):
    async with Store.open(path) as store:
        return [s.migration.label for s in await store.migration_status() if s.applied_at]


print(json.dumps({
    "bot": bot.__file__,
    "migrations": migrations.__file__,
    "sql": sorted(p.name for p in files("migrations").iterdir() if p.name.endswith(".sql")),
    "applied": asyncio.run(applied(sys.argv[1])),
}))
"""


def packages(root: Path, *tops: str) -> set[str]:
    """The packages (folders with an `__init__.py`) under the top-level folders `tops`."""
    return {
        str(init.parent.relative_to(root))
        for top in tops
        for init in (root / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }


@pytest.mark.slow
def test_installed_copy_opens_a_store_with_its_migrations(tmp_path: Path) -> None:
    source, site, elsewhere = tmp_path / "source", tmp_path / "site", tmp_path / "elsewhere"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    elsewhere.mkdir()
    subprocess.run(
        [sys.executable, "-m", *PIP_INSTALL, "--target", str(site), str(source)],
        check=True,
        cwd=elsewhere,
        timeout=120,
    )

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(site)
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "db.sqlite3")],
        check=True,
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = json.loads(result.stdout)

    shipped = sorted(path.stem for path in (REPO / "migrations").glob("*.sql"))
    assert shipped, "the checkout has no migrations"
    assert Path(found["bot"]).is_relative_to(site)  # not the checkout
    assert Path(found["migrations"]).is_relative_to(site)
    assert found["sql"] == [f"{stem}.sql" for stem in shipped]
    assert sorted(path.stem for path in (site / "migrations").glob("*.sql")) == shipped
    assert found["applied"] == shipped
    # Package discovery: every package of the checkout is installed, and the tests are not.
    assert packages(site, "bot", "cogs", "emulator", "migrations") == packages(
        REPO, "bot", "cogs", "emulator", "migrations"
    )
    assert not (site / "tests").exists()
