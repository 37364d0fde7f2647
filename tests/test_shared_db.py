"""One database shared by several processes: SQLite (WAL) and PostgreSQL, through the real Store,
the real command line, and separate OS processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from bot.store import Store, StoreBusy, StoreUnavailable
from bot.store.feedback import UP, Feedback
from bot.store.postgres import WRITE_LOCK, placeholders, redacted
from tests.store_writer import generation

REPO = Path(__file__).resolve().parents[1]
# Per process: an output with its generation, and a vote, each its own transaction. The
# full-size run: SHARED_DB_ROUNDS=2000 pytest -s tests/test_shared_db.py -k two_processes
ROUNDS = int(os.environ.get("SHARED_DB_ROUNDS", "150"))
# Waits this short make the writers collide often: the retries and refusals are exercised.
BUSY_TIMEOUT_MS = int(os.environ.get("SHARED_DB_BUSY_MS", "1"))


def _writer(target: str | Path, tag: int) -> subprocess.Popen[str]:
    arguments = [str(target), str(tag), str(ROUNDS), str(BUSY_TIMEOUT_MS)]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store_writer", *arguments],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_two_processes_write_one_database_and_lose_nothing(
    db_target: str | Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Store.open(db_target):
        pass  # migrated once, before the writers race
    writers = [_writer(db_target, tag) for tag in (101, 202)]
    reports = []
    for writer in writers:
        out, err = await asyncio.to_thread(writer.communicate, timeout=60 + ROUNDS / 10)
        assert writer.returncode == 0, err
        reports.append(json.loads(out))
    stored = [tuple(pair) for report in reports for pair in report["stored"]]
    assert len(stored) == 2 * ROUNDS
    assert len({o for o, _ in stored}) == len({g for _, g in stored}) == 2 * ROUNDS
    async with Store.open(db_target) as store:
        outputs = await store.fetchall("SELECT id, chosen_id FROM outputs ORDER BY id")
        assert sorted(stored) == [(row["id"], row["chosen_id"]) for row in outputs]
        texts = await store.fetchall("SELECT output FROM generations")
        assert sorted(row[0] for row in texts) == sorted(
            f"{tag}:{n}" for tag in (101, 202) for n in range(ROUNDS)
        )
        votes = await store.fetchall("SELECT COUNT(*) FROM feedback WHERE kind = 'vote'")
        assert votes[0][0] == 2 * ROUNDS
    with capsys.disabled():  # the figures, for the record (they depend on timing)
        print(
            f"\n[{store.dialect}] two processes x {ROUNDS} rounds: busy retries "
            f"{[r['busy_retries'] for r in reports]}, refused {[r['refused'] for r in reports]}"
        )


async def test_two_postgres_connections_write_at_once(postgres_url: str) -> None:
    # both open an empty database at once: the migrations run once, under the write lock
    async with Store.open(postgres_url) as one, Store.open(postgres_url) as two:

        async def rounds(store: Store, tag: int) -> list[int]:
            ids = []
            for n in range(100):
                _, generation_id = await store.save_output(generation(tag, n))
                await Feedback(store).vote(generation_id, tag, UP)
                ids.append(generation_id)
            return ids

        first, second = await asyncio.gather(rounds(one, 1), rounds(two, 2))
        assert len(set(first) | set(second)) == 200
        rows = await one.fetchall("SELECT COUNT(*) AS n FROM feedback")
        assert rows[0]["n"] == 200
        states = await two.migration_status()
        assert all(s.applied_at for s in states)


async def test_a_locked_postgres_database_is_retried_then_refused(postgres_url: str) -> None:
    async with Store.open(postgres_url, busy_timeout_ms=50) as store:
        other = await asyncpg.connect(postgres_url)
        try:
            await other.execute("BEGIN")
            await other.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)  # a writer
            with pytest.raises(StoreBusy) as busy:
                await store.set_setting("guild", 1, "mode", "chat")
            assert "busy" in busy.value.user_message
            assert store.busy_retries == Store.BUSY_RETRIES
            assert await store.get_scope_settings("guild", 1) == {}

            async def release() -> None:
                await asyncio.sleep(0.1)
                await other.execute("ROLLBACK")

            # a patient writer (a long lock wait, so a slow machine cannot make it give up)
            # gets the lock once the other writer lets go
            async with Store.open(postgres_url, busy_timeout_ms=60_000) as patient:
                released = asyncio.create_task(release())
                await patient.set_setting("guild", 1, "mode", "chat")
                await released
                assert await store.get_scope_settings("guild", 1) == {"mode": "chat"}
                assert not patient._db.in_transaction
        finally:
            await other.close()


async def test_a_cancelled_postgres_write_leaves_no_transaction_open(postgres_url: str) -> None:
    async with Store.open(postgres_url) as store:
        for delay in (0, 0.001, 0.003, 0.01):
            task = asyncio.create_task(store.save_output(generation(1, 0)))
            await asyncio.sleep(delay)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert not store._db.in_transaction
            outputs = await store.fetchall("SELECT COUNT(*) FROM outputs")
            generations = await store.fetchall("SELECT COUNT(*) FROM generations")
            assert outputs[0][0] == generations[0][0]  # whole or not at all
        await store.save_output(generation(1, 1))  # and the connection still works


def _cli(action: str, url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_PATH"}
    env.update(DATABASE_URL=url, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "bot", "db", action],
        cwd=tmp_path,  # no .env of the checkout
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_db_status_and_upgrade_on_postgres(postgres_server: object, tmp_path: Path) -> None:
    from tests.postgres_fixtures import drop_database, new_database

    url = asyncio.run(new_database(postgres_server))
    try:
        before = _cli("status", url, tmp_path)
        assert before.returncode == 0, before.stderr
        assert "0001_initial" in before.stdout and "0005_models" in before.stdout
        assert all(line.endswith("pending") for line in before.stdout.splitlines())
        upgraded = _cli("upgrade", url, tmp_path)
        assert upgraded.returncode == 0, upgraded.stderr
        assert "applied 0001_initial" in upgraded.stdout
        assert "applied 0005_models" in upgraded.stdout
        after = _cli("status", url, tmp_path)
        assert "pending" not in after.stdout and "0005_models" in after.stdout
    finally:
        asyncio.run(drop_database(postgres_server, url))
    assert not (tmp_path / "data").exists()  # no SQLite file was made on the side


def test_an_unreachable_postgres_server_is_a_clear_error(tmp_path: Path) -> None:
    url = "postgresql://bot:s3cret@127.0.0.1:9/llmos"  # port 9: nothing listens
    failed = _cli("status", url, tmp_path)
    assert failed.returncode == 1
    assert "cannot open the PostgreSQL database postgresql://bot:***@127.0.0.1:9/llmos" in (
        failed.stderr + failed.stdout
    )
    assert "s3cret" not in failed.stderr + failed.stdout
    assert "Traceback" not in failed.stderr


async def test_unreachable_server_raises_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable, match=r"postgresql://u:\*\*\*@127\.0\.0\.1:9/x"):
        async with Store.open("postgresql://u:pw@127.0.0.1:9/x"):
            pass


def test_placeholders_and_redaction() -> None:
    assert placeholders("SELECT ? , '?', \"a?\" WHERE x = ?") == (
        "SELECT $1 , '?', \"a?\" WHERE x = $2"
    )
    assert placeholders("SELECT 'it''s ?', ?") == "SELECT 'it''s ?', $1"
    assert redacted("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redacted("postgresql://h/db") == "postgresql://h/db"
    # libpq and asyncpg also read a password from the query
    assert redacted("postgresql://u@h/db?password=s3cret&sslmode=require") == (
        "postgresql://u@h/db?password=***&sslmode=require"
    )


async def _cut(store: Store, url: str) -> None:
    """End the store's connection from the server's side, as a restart or a proxy would."""
    pid = (await store.fetchall("SELECT pg_backend_pid()"))[0][0]
    admin = await asyncpg.connect(url)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
    finally:
        await admin.close()


async def test_a_lost_postgres_connection_is_opened_again(postgres_url: str) -> None:
    async with Store.open(postgres_url) as store:
        await store.save_output(generation(1, 0))
        await _cut(store, postgres_url)
        rows = await store.fetchall("SELECT COUNT(*) FROM outputs")  # a read runs again
        assert rows[0][0] == 1
        await _cut(store, postgres_url)
        await store.save_output(generation(1, 1))  # so does a BEGIN that found it lost
        # lost inside a transaction: it fails whole (the server rolled it back) ...
        with pytest.raises(sqlite3.OperationalError, match="lost the connection"):
            async with store.transaction() as db:
                await db.execute("DELETE FROM outputs")
                await _cut(store, postgres_url)
                await db.execute("DELETE FROM generations")
        # ... and the next one goes through
        await store.save_output(generation(1, 2))
        assert store._db.reconnects == 3  # type: ignore[attr-defined]
        rows = await store.fetchall("SELECT COUNT(*) FROM outputs")
        assert rows[0][0] == 3
