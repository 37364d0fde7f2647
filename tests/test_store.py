from __future__ import annotations

import os
import stat
from datetime import datetime, timedelta
from importlib.resources.abc import Traversable
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.store import MigrationError, NewGeneration, Store
from bot.store.errors import IntegrityError
from bot.store.migrator import MIGRATIONS_DIR, POSTGRES_MIGRATIONS_DIR, discover

EXPECTED_SCHEMA = {
    "schema_migrations": ["version", "name", "applied_at"],
    "settings": ["scope", "scope_id", "guild_id", "key", "value", "updated_by", "updated_at"],
    "outputs": [
        "id",
        "guild_id",
        "channel_id",
        "message_id",
        "requester_id",
        "command",
        "chosen_id",
        "created_at",
    ],
    "generations": [
        "id",
        "output_id",
        "guild_id",
        "channel_id",
        "user_id",
        "command",
        "prompt",
        "params",
        "model",
        "output",
        "finish_reason",
        "refines_id",
        "refine_kind",
        "prompt_tokens",
        "completion_tokens",
        "queued_ms",
        "generation_ms",
        "created_at",
    ],
    "feedback": ["id", "generation_id", "user_id", "kind", "value", "created_at", "output_id"],
    "stories": [
        "id",
        "guild_id",
        "channel_id",
        "title",
        "premise",
        "genre",
        "status",
        "summary",
        "summary_upto",
        "created_by",
        "created_at",
        "ended_at",
        "note",
        "parent_id",
        "branch_from",
        "last_position",
    ],
    "story_segments": [
        "id",
        "story_id",
        "channel_id",
        "author_id",
        "text",
        "position",
        "source",
        "generation_id",
        "message_id",
        "created_at",
    ],
    "requests": [
        "id",
        "state",
        "command",
        "task",
        "guild_id",
        "channel_id",
        "user_id",
        "message_id",
        "interaction_token",
        "token_expires_at",
        "output_id",
        "refines_id",
        "refine_kind",
        "generation_id",
        "attempts",
        "error",
        "created_at",
        "updated_at",
    ],
    "lore_entries": [
        "id",
        "guild_id",
        "scope",
        "scope_id",
        "kind",
        "name",
        "keys",
        "regex",
        "always",
        "priority",
        "text",
        "voice",
        "enabled",
        "created_by",
        "created_at",
        "updated_at",
    ],
    "story_votes": [
        "id",
        "story_id",
        "guild_id",
        "channel_id",
        "message_id",
        "options",
        "created_by",
        "closes_at",
        "state",
        "winner",
        "acted_at",
        "created_at",
    ],
    "story_ballots": ["vote_id", "user_id", "choice", "updated_at"],
    "adapters": [
        "id",
        "kind",
        "guild_id",
        "base_model",
        "base_hash",
        "path",
        "manifest",
        "promotable",
        "verdict",
        "created_at",
    ],
    "promotions": [
        "id",
        "scope",
        "kind",
        "adapter_id",
        "forced",
        "promoted_by",
        "promoted_at",
        "rolled_back_at",
    ],
    "forgotten_rows": ["source", "row_id", "forgotten_at"],
}


async def schema(store: Store) -> dict[str, list[str]]:
    """Every table's columns, in order (from the catalogue of either database)."""
    if store.dialect == "postgresql":
        tables = await store.fetchall(
            "SELECT table_name AS name FROM information_schema.tables"
            " WHERE table_schema = 'public' ORDER BY table_name"
        )
        out = {}
        for row in tables:
            cols = await store.fetchall(
                "SELECT column_name AS name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND table_name = ? ORDER BY ordinal_position",
                (row["name"],),
            )
            out[row["name"]] = [c["name"] for c in cols]
        return out
    tables = await store.fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
    )
    out = {}
    for row in tables:
        cols = await store.fetchall(f"PRAGMA table_info({row['name']})")
        out[row["name"]] = [c["name"] for c in cols]
    return out


def dialect_of(target: str | Path) -> str:
    return "postgresql" if str(target).startswith("postgresql://") else "sqlite"


def copy_migrations(target: Path, *names: str, dialect: str = "sqlite") -> Path:
    """Copy the shipped migration files of a dialect (all, or those named) into a new folder."""
    source = MIGRATIONS_DIR if dialect == "sqlite" else POSTGRES_MIGRATIONS_DIR
    target.mkdir()
    for item in source.iterdir():
        if item.name.endswith(".sql") and (not names or item.name in names):
            (target / item.name).write_text(item.read_text(encoding="utf-8"), encoding="utf-8")
    return target


def gen(**overrides: object) -> NewGeneration:
    values: dict[str, object] = dict(
        channel_id=10,
        user_id=20,
        command="poem",
        prompt={"topic": "rain"},
        params={},
        model="m",
        output="text",
        finish_reason="stop",
        prompt_tokens=3,
        completion_tokens=4,
        queued_ms=1,
        generation_ms=2,
    )
    values.update(overrides)
    return NewGeneration(**values)  # type: ignore[arg-type]


async def test_fresh_database_has_exactly_the_schema(db_target: str | Path) -> None:
    async with Store.open(db_target) as store:
        assert await schema(store) == EXPECTED_SCHEMA


def test_both_databases_have_the_same_migrations() -> None:
    def labels(directory: Traversable) -> list[str]:
        return [m.label for m in discover(directory)]

    assert labels(POSTGRES_MIGRATIONS_DIR) == labels(MIGRATIONS_DIR)


async def test_sqlite_has_wal_and_foreign_keys(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "db.sqlite3") as store:
        journal = await store.fetchall("PRAGMA journal_mode")
        assert journal[0][0] == "wal"
        fks = await store.fetchall("PRAGMA foreign_keys")
        assert fks[0][0] == 1


async def test_database_file_is_private(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "db.sqlite3"):
        pass
    assert stat.S_IMODE(os.stat(tmp_path / "db.sqlite3").st_mode) == 0o600


async def test_a_sqlite_url_opens_its_file(tmp_path: Path) -> None:
    """`DATABASE_URL=sqlite:///path` reaches the store as it is written."""
    settings = load_settings({"DATABASE_URL": f"sqlite:///{tmp_path}/url.db"}, dotenv_path=None)
    async with Store.open(settings.database) as store:
        assert (await store.fetchall("SELECT 1"))[0][0] == 1
    assert stat.S_IMODE(os.stat(tmp_path / "url.db").st_mode) == 0o600


async def test_upgrading_twice_changes_nothing(db_target: str | Path) -> None:
    async with Store.open(db_target) as store:
        first = await schema(store)
        status = await store.migration_status()
        assert await store.upgrade() == []
    async with Store.open(db_target) as store:
        assert await schema(store) == first
        assert await store.migration_status() == status
        assert all(s.applied_at for s in status)


async def test_broken_migration_rolls_back(db_target: str | Path, tmp_path: Path) -> None:
    migrations = copy_migrations(tmp_path / "migrations", dialect=dialect_of(db_target))
    (migrations / "9998_ok_part.sql").write_text("CREATE TABLE extra (id INTEGER);\n")
    (migrations / "9999_broken.sql").write_text(
        "CREATE TABLE half (id INTEGER);\nINSERT INTO no_such_table VALUES (1);\n"
    )
    with pytest.raises(MigrationError, match="9999_broken failed"):
        async with Store.open(db_target, migrations_dir=migrations):
            pass
    async with Store.open(db_target, migrate=False, migrations_dir=migrations) as store:
        tables = set(await schema(store))
        assert "extra" in tables  # the good migration before it stays applied
        assert "half" not in tables  # the broken one left nothing behind
        states = {s.migration.label: s.applied_at for s in await store.migration_status()}
        assert states["9998_ok_part"] is not None
        assert states["9999_broken"] is None


async def test_unknown_migration_is_refused(db_target: str | Path, tmp_path: Path) -> None:
    migrations = copy_migrations(tmp_path / "migrations", dialect=dialect_of(db_target))
    (migrations / "9999_future.sql").write_text("CREATE TABLE future (id INTEGER);\n")
    async with Store.open(db_target, migrations_dir=migrations):
        pass
    with pytest.raises(
        MigrationError, match="9999_future that this version of LLMOS does not know"
    ):
        async with Store.open(db_target):
            pass


async def test_output_alternatives_and_message(db_target: str | Path) -> None:
    async with Store.open(db_target) as store:
        output_id, first = await store.save_output(gen())
        second = await store.add_alternative(
            output_id, gen(output="again", refines_id=first, refine_kind="regenerate")
        )
        await store.set_output_message(output_id, 555)
        record = await store.get_generation(second)
        assert record is not None
        assert (record.output, record.refines_id, record.message_id) == ("again", first, 555)
        assert record.prompt == {"topic": "rain"}
        # times are ISO text on both databases, read back exactly as written
        assert datetime.fromisoformat(record.created_at).utcoffset() == timedelta(0)
        rows = await store.fetchall("SELECT chosen_id FROM outputs WHERE id = ?", (output_id,))
        assert rows[0]["chosen_id"] == second


async def test_discord_ids_are_64_bit(db_target: str | Path) -> None:
    snowflake = 2**63 - 1  # the largest a Discord id can be
    async with Store.open(db_target) as store:
        output_id, first = await store.save_output(
            gen(guild_id=snowflake, channel_id=snowflake - 1, user_id=snowflake - 2)
        )
        await store.set_output_message(output_id, snowflake - 3)
        record = await store.get_generation(first)
        assert record is not None
        assert (record.guild_id, record.channel_id, record.user_id, record.message_id) == (
            snowflake,
            snowflake - 1,
            snowflake - 2,
            snowflake - 3,
        )


async def test_settings_per_scope(db_target: str | Path) -> None:
    async with Store.open(db_target) as store:
        await store.set_setting("guild", 1, "temperature", 0.5)
        await store.set_setting("guild", 1, "mode", "chat")
        await store.set_setting("channel", 2, "temperature", 0.9, guild_id=1)
        assert await store.get_scope_settings("channel", 2) == {"temperature": 0.9}
        assert await store.get_scope_settings("guild", 1) == {"temperature": 0.5, "mode": "chat"}
        await store.reset_settings("channel", 2)
        assert await store.get_scope_settings("channel", 2) == {}


async def test_failed_write_leaves_nothing(db_target: str | Path) -> None:
    async with Store.open(db_target) as store:
        with pytest.raises(IntegrityError, match=r"(?i)FOREIGN KEY"):
            await store.save_output(gen(refines_id=999_999))
        assert await store.fetchall("SELECT * FROM outputs") == []
        assert await store.fetchall("SELECT * FROM generations") == []
