"""Which adapter writes for each server, and which reward model chooses its candidates.

Promises:
- `adapter_for(guild_id)` and `judge_for(guild_id)` are instant (no I/O): the server's own
  promotion in force, else that of every server, else none (the base model, no reranking).
- An adapter is put in force only once the engine has loaded it (between two batches, under
  the engine's lock), so a request never names an adapter the engine lacks. A request takes its
  adapter when it is made; one in flight during a promotion finishes with the adapter it
  started with, and no batch mixes adapters (the engine groups by adapter).
- `promote` refuses, with a message for the admin (`AdapterRefused`): an unknown id, an adapter
  made for another base model (the weights' hash differs), a folder that does not load, an
  engine that cannot serve adapters, and one that failed its evaluation unless forced.
- Promotions and rollbacks made by another process (`python -m bot model promote`) are picked
  up within `ADAPTER_POLL_SECONDS`. An adapter in force that no longer loads is logged, and its
  scope falls back to what is below it (a server's to every server's, every server's to the
  base model) rather than failing requests; it is tried again at the next poll.
- A reward model no longer in force is let go (each holds its own copy of the base model).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.generation.base import AdapterRefused, Engine
from bot.generation.types import Prompt
from bot.store.models import EVERY_SERVER, AdapterRecord, Kind, Models, Promotion

log = logging.getLogger(__name__)

# Scores candidate answers to a prompt (higher: more to this server's taste).
Judge = Callable[[Prompt, list[str]], Awaitable[list[float]]]


class Adapters:
    """The adapters and reward models in force, loaded and ready."""

    def __init__(
        self,
        models: Models,
        engine: Engine,
        *,
        base_folder: Path | None,
        poll_seconds: float = 10.0,
    ) -> None:
        self.models = models
        self.engine = engine
        self.base_folder = base_folder
        self.poll_seconds = poll_seconds
        self._serving: dict[tuple[int, str], str | None] = {}  # (scope, kind) -> adapter id
        self._scorers: dict[str, Any] = {}  # reward adapter id -> RewardScorer
        self._version: tuple[int, int] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one refresh or promotion at a time
        self._reported: set[str] = set()  # adapters whose failure to load was logged

    # -- what serves a request -----------------------------------------------------------------

    def adapter_for(self, guild_id: int | None) -> str | None:
        """The generator adapter for a server's requests (None: the base model)."""
        return self._in_force(guild_id, "generator")

    def judge_for(self, guild_id: int | None) -> Judge | None:
        """The reward model that reranks a server's candidates, as a coroutine; None if none."""
        adapter = self._in_force(guild_id, "reward")
        scorer = self._scorers.get(adapter) if adapter else None
        if scorer is None:
            return None

        async def judge(prompt: Prompt, answers: list[str]) -> list[float]:
            messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
            return list(await asyncio.to_thread(scorer.score, messages, answers))

        return judge

    def reward_for(self, guild_id: int | None) -> str | None:
        """The reward model (its adapter id) choosing among a server's candidates, or None."""
        return self._in_force(guild_id, "reward")

    def _in_force(self, guild_id: int | None, kind: str) -> str | None:
        if guild_id is not None and (guild_id, kind) in self._serving:
            return self._serving[(guild_id, kind)]
        return self._serving.get((EVERY_SERVER, kind))

    def source(self, guild_id: int | None, kind: str) -> str:
        """Where the adapter in force comes from, in words."""
        if guild_id is not None and (guild_id, kind) in self._serving:
            return "this server's own"
        if (EVERY_SERVER, kind) in self._serving:
            return "the default for every server"
        return "none promoted"

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load what is in force and start watching for promotions from other processes."""
        await self.refresh()
        self._poller = asyncio.create_task(self._poll(), name="adapter-poll")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    async def __aenter__(self) -> Adapters:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.refresh()
            except Exception:  # a busy database or a bad folder must not end the watch
                log.exception("checking for promoted adapters failed")

    async def refresh(self, *, force: bool = False) -> None:
        """Bring what serves in line with the promotions in the database."""
        async with self._lock:
            version = await self.models.version()
            if version == self._version and not force:
                return
            wanted = await self.models.in_force()
            serving: dict[tuple[int, str], str | None] = {}
            failed = False
            for key, adapter_id in wanted.items():
                if adapter_id is None:
                    serving[key] = None
                    continue
                record = await self.models.get(adapter_id)
                try:
                    if record is None:
                        raise AdapterRefused(f"adapter {adapter_id} is not registered")
                    await self._load(record)
                except Exception as exc:  # one bad adapter must not stop the others serving
                    # said once; it is tried again at every poll
                    level = logging.DEBUG if adapter_id in self._reported else logging.ERROR
                    self._reported.add(adapter_id)
                    log.log(
                        level, "Adapter %s (scope %s) is not served: %s", adapter_id, key[0], exc
                    )
                    failed = True
                    continue  # that scope falls back to what is below it
                serving[key] = adapter_id
            self._serving = serving
            self._version = None if failed else version  # a failed load is tried again
            for gone in set(self._scorers) - set(serving.values()):
                del self._scorers[gone]
            log.info("Adapters in force: %s", serving or "none")

    async def _load(self, record: AdapterRecord) -> None:
        """Load an adapter into the engine, or its reward model into a scorer (refusing a
        foreign or broken one)."""
        if not await asyncio.to_thread(Path(record.path).is_dir):
            # the path stays in the log: a server manager on Discord need not see the host's
            log.warning("adapter %s: no folder at %s", record.id, record.path)
            raise AdapterRefused("its folder is missing on the bot's machine")
        if record.kind == "reward":
            if record.id in self._scorers:
                return
            await self._check_base(record)
            if self.base_folder is None:
                raise AdapterRefused(
                    "a reward model needs the model as a local folder (MODEL=embedded or a path)"
                )
            from bot.learning.reward import RewardScorer

            try:
                scorer = await asyncio.to_thread(
                    RewardScorer.load, self.base_folder, Path(record.path)
                )
            except (ValueError, OSError) as exc:
                log.warning("reward model %s at %s did not load: %r", record.id, record.path, exc)
                raise AdapterRefused(
                    "its reward model does not load: its files are damaged or it was made for "
                    "another model (the bot's log has the details)"
                ) from exc
            self._scorers[record.id] = scorer
            return
        if not self.engine.supports_adapters:
            self.engine.load_adapter(record.id, record.path)  # raises its own message
        await self._check_base(record)
        await asyncio.to_thread(self.engine.load_adapter, record.id, record.path)

    async def _check_base(self, record: AdapterRecord) -> None:
        mine = await asyncio.to_thread(self.engine.fingerprint)
        if mine and record.base_hash != mine:
            raise AdapterRefused(
                f"it was trained on another base model ({record.base_model}, weights "
                f"{record.base_hash[:12]}); this bot runs {self.engine.model_name} "
                f"({mine[:12]}). Train one for this model. (The same model loaded in float16 "
                "also reads as another: serve adapters with DTYPE=bfloat16 or float32.)"
            )

    # -- changes -------------------------------------------------------------------------------

    async def promote(
        self,
        adapter_id: str,
        *,
        scope: int,
        by: int | None = None,
        force: bool = False,
    ) -> Promotion:
        """Load `adapter_id` and put it in force for `scope` (see the promises for refusals)."""
        record = await self.models.get(adapter_id)
        if record is None:
            raise AdapterRefused(f"There is no adapter {adapter_id}. `/model status` lists them.")
        if not record.promotable and not force:
            raise AdapterRefused(f"{record.verdict} Promote it with force to use it anyway.")
        if record.guild_id is not None and scope not in (record.guild_id,):
            raise AdapterRefused(
                f"{adapter_id} was trained on another server's feedback; it serves that server "
                "only."
            )
        async with self._lock:
            await self._load(record)
        promotion = await self.models.promote(
            adapter_id, scope=scope, kind=_kind(record.kind), by=by, forced=force
        )
        await self.refresh()
        return promotion

    async def rollback(self, *, scope: int, kind: Kind = "generator") -> str | None:
        """Return `scope` to what served before its latest promotion; the adapter now in force
        for it (None: the base model). Raises `NothingToRollBack`."""
        await self.models.rollback(scope=scope, kind=kind)
        await self.refresh()
        return self._in_force(None if scope == EVERY_SERVER else scope, kind)


def base_folder(settings: Settings) -> Path | None:
    """The configured model as a local folder (what a reward model loads over), or None."""
    from bot.generation.loader import model_folder  # torch: only where a folder is asked for

    return model_folder(settings.model, device=settings.device, cache_dir=settings.model_cache_dir)


def _kind(kind: str) -> Kind:
    return "reward" if kind == "reward" else "generator"
