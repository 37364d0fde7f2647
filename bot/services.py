"""The services a cog may use, built once by the launcher and handed to every cog."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bot.config import Settings
from bot.generation.queue import GenerationQueue
from bot.limits import Limits
from bot.preferences import Preferences
from bot.store import Requests, Store, Stories
from bot.store.feedback import Feedback

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    store: Store
    queue: GenerationQueue
    preferences: Preferences
    stories: Stories
    feedback: Feedback
    limits: Limits
    requests: Requests

    @classmethod
    def build(cls, settings: Settings, store: Store, queue: GenerationQueue) -> Services:
        """The services over one open store and a running queue."""
        limits = Limits(
            store,
            per_minute=settings.user_requests_per_minute,
            daily_budget=settings.server_daily_budget,
        )
        return cls(
            settings,
            store,
            queue,
            Preferences(store),
            Stories(store),
            Feedback(store),
            limits,
            Requests(store),
        )


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Open the database, load the model, start the queue; close them in reverse on exit.

    Raises `MigrationError` or `ModelLoadError` (with a message for the admin) before yielding.
    """
    from bot.generation.factory import build_engine

    async with Store.open(settings.database_path) as store:
        log.info("Database ready at %s", settings.database_path)
        engine = await asyncio.to_thread(build_engine, settings)
        try:
            async with GenerationQueue(
                engine,
                max_queue=settings.max_queue,
                max_pending_per_user=settings.max_pending_per_user,
                timeout=settings.generation_timeout,
            ) as queue:
                yield Services.build(settings, store, queue)
        finally:
            engine.close()
