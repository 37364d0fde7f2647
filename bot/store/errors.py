"""The store's errors, the same on both backends.

A constraint broken is `sqlite3.IntegrityError` and any other database failure a
`sqlite3.DatabaseError`, on PostgreSQL too (the adapter raises those DB-API classes, as the
standard library spells them), so callers catch one family whichever database is configured.
"""

from __future__ import annotations

import sqlite3

IntegrityError = sqlite3.IntegrityError
DatabaseError = sqlite3.DatabaseError


class StoreBusy(RuntimeError):
    """The database stayed locked by another writer through every retry (or, on PostgreSQL,
    a transaction could not be serialised)."""

    user_message = "My notebook is busy right now. Please try again in a moment."


class StoreUnavailable(sqlite3.OperationalError):
    """The database could not be opened (a PostgreSQL server that cannot be reached)."""


class Locked(RuntimeError):
    """Another process holds the write lock past the wait allowed: the write may be retried."""
