"""The store: everything the bot keeps, in one SQLite file or a shared PostgreSQL database
(`postgres`: the adapter). `database` holds the `Store` (the connection, its transactions,
outputs, generations and settings) and its records, `errors` its errors, `stories` the
stories and their segments, `feedback` votes and exports, `requests` the journal of accepted
requests, and `migrator` the schema's numbered SQL migrations, shipped in the top-level
`migrations` package. This module only re-exports the names
the rest of the bot uses.
"""

from bot.store.database import (
    GenerationRecord,
    NewGeneration,
    OutputRecord,
    RequestEnded,
    Store,
)
from bot.store.errors import StoreBusy, StoreUnavailable
from bot.store.migrator import MigrationError
from bot.store.requests import NewRequest, RequestRecord, Requests
from bot.store.stories import SegmentRecord, Stories, StoryExists, StoryRecord

__all__ = [
    "GenerationRecord",
    "MigrationError",
    "NewGeneration",
    "NewRequest",
    "OutputRecord",
    "RequestEnded",
    "RequestRecord",
    "Requests",
    "SegmentRecord",
    "Store",
    "StoreBusy",
    "StoreUnavailable",
    "Stories",
    "StoryExists",
    "StoryRecord",
]
