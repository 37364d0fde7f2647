"""The services a cog may use, built once by the launcher and handed to every cog."""

from __future__ import annotations

from dataclasses import dataclass

from bot.config import Settings
from bot.generation.queue import GenerationQueue
from bot.store import Store


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    store: Store
    queue: GenerationQueue
