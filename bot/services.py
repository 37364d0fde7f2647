"""The services a cog may use, built once by the launcher and handed to every cog."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from bot.config import Settings
from bot.generation.base import Engine
from bot.generation.queue import GenerationQueue
from bot.generation.types import GenerationRequest
from bot.learning.serving import Adapters, base_folder
from bot.limits import Limits
from bot.preferences import Preferences
from bot.store import Requests, Store, Stories
from bot.store.feedback import Feedback
from bot.store.lore import Lore
from bot.store.models import Models
from bot.store.votes import Votes

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
    lore: Lore
    votes: Votes
    models: Models
    # The adapters and reward models in force per server (`bot.learning.serving`).
    adapters: Adapters
    # The vision lane: a queue in front of a vision-language model, when one is configured.
    vision: GenerationQueue | None = None

    def queue_for(self, task: Any) -> GenerationQueue:
        """The queue that runs `task` (a `bot.writing.run.Task`): the vision lane for a task that
        shows the model an image, else the text queue."""
        if getattr(task, "vision", False) and self.vision is not None:
            return self.vision
        return self.queue

    def request_for(self, task: Any, user_id: int, guild_id: int | None) -> GenerationRequest:
        """The request that starts `task` for `user_id`, written with the adapter in force for
        `guild_id` (the vision lane has none)."""
        vision = getattr(task, "vision", False) and self.vision is not None
        adapter = None if vision else self.adapters.adapter_for(guild_id)
        return GenerationRequest(user_id, task.prompt, task.params, adapter=adapter)

    @classmethod
    def build(
        cls,
        settings: Settings,
        store: Store,
        queue: GenerationQueue,
        vision: GenerationQueue | None = None,
    ) -> Services:
        """The services over one open store and a running queue."""
        limits = Limits(
            store,
            per_minute=settings.user_requests_per_minute,
            daily_budget=settings.server_daily_budget,
        )
        models = Models(store)
        adapters = Adapters(
            models,
            queue.engine,
            base_folder=base_folder(settings),
            poll_seconds=settings.adapter_poll_seconds,
        )
        return cls(
            settings=settings,
            store=store,
            queue=queue,
            preferences=Preferences(store),
            stories=Stories(store),
            feedback=Feedback(store),
            limits=limits,
            requests=Requests(store),
            lore=Lore(store),
            votes=Votes(store),
            models=models,
            adapters=adapters,
            vision=vision,
        )


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Open the database, load the model (and the vision model, if one is set), start their
    queues; close them in reverse on exit.

    Raises `MigrationError` or `ModelLoadError` (with a message for the admin) before yielding.
    """
    from bot.generation.factory import build_engine, build_vision_engine

    def lane(engine: Engine) -> GenerationQueue:
        return GenerationQueue(
            engine,
            max_queue=settings.max_queue,
            max_pending_per_user=settings.max_pending_per_user,
            timeout=settings.generation_timeout,
        )

    async with Store.open(settings.database) as store, contextlib.AsyncExitStack() as stack:
        log.info("Database ready at %s", store.location)
        engine = await asyncio.to_thread(build_engine, settings)
        stack.callback(engine.close)
        vision = None
        if settings.vision_model:
            seeing = await asyncio.to_thread(build_vision_engine, settings)
            stack.callback(seeing.close)
            # its own lane: a picture's critique never waits behind a story turn, nor blocks one
            vision = await stack.enter_async_context(lane(seeing))
        queue = await stack.enter_async_context(lane(engine))
        services = Services.build(settings, store, queue, vision)
        # the promoted adapters are loaded before the first request, and watched after
        await stack.enter_async_context(services.adapters)
        yield services
