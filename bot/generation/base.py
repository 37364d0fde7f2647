"""Engines: what turns a batch of requests into text. The queue owns exactly one.

The interface is deliberately small so that a batching engine, transformers' continuous
batching, or a remote OpenAI-compatible server can stand behind the same queue:

    engine.generate(jobs) -> list[EngineOutput | BaseException]

`generate` runs in the queue's worker thread. For each job it streams text with `job.emit()`,
checks `job.should_stop()` at every token (cancel and timeout), and returns one entry per job,
in order: an `EngineOutput`, or the exception that ended that job alone. Raising fails the
whole call; `engine.failure(exc)` says which `EngineFailure` the requests then get.

This module imports no torch: a remote engine and the queue need none.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

from bot.generation.types import EngineFailure, EngineOutput, GenerationRequest


class AdapterRefused(Exception):
    """An adapter cannot be served; the message says why, for the admin."""


class EngineJob(Protocol):
    """The engine's view of one request (implemented by the queue's handle)."""

    request: GenerationRequest

    def emit(self, text: str) -> None: ...

    def should_stop(self) -> bool: ...


class Engine(ABC):
    """Turns jobs into text. Subclasses set `model_name`, `max_batch` and `context_length`."""

    model_name: str = "unknown"
    max_batch: int = 1  # most requests in flight at once
    context_length: int = 2048
    # False: the queue waits for one `generate` call to end before the next (a local model).
    # True: calls overlap, up to `max_batch` requests in all (a server that batches itself).
    concurrent: bool = False

    @abstractmethod
    def generate(self, jobs: Sequence[EngineJob]) -> list[EngineOutput | BaseException]:
        """Run `jobs` (in the worker thread); see the module docstring."""

    def failure(self, exc: BaseException) -> type[EngineFailure]:
        """The error a failed call gives its requests (`exc` is what the call raised or returned).

        An engine that can run out of memory recognises it here (and frees what it can).
        """
        return EngineFailure

    # Whether `load_adapter` works: LoRA adapters served beside the base model, per request.
    supports_adapters: bool = False

    def load_adapter(self, name: str, path: str) -> None:
        """Load the LoRA adapter at `path` as `name`, between calls (blocking; seconds).

        Requests whose `adapter` is `name` are then written with it. Raises `AdapterRefused`
        (with a message for the admin) when this engine cannot, or the folder is unusable.
        """
        raise AdapterRefused(f"The {type(self).__name__} cannot load adapters.")

    def fingerprint(self) -> str:
        """A hash of the base model's weights (blocking): an adapter trained on another base
        is refused. Empty when the engine cannot tell (a remote server)."""
        return ""

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` for this model (a rough estimate by default)."""
        return max(1, len(text) // 4)

    def close(self) -> None:
        """Release resources."""
