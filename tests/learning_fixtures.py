"""Feedback as people give it, for the learning tests (the same as `make eval-learning`'s):
outputs with two versions, one kept and voted up, the other voted down; and settings that train
on a given model in a scratch folder."""

from __future__ import annotations

from pathlib import Path

from bot.config import Settings
from bot.store import Store
from tools.learn_eval import seed

MODEL_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "models"


async def seed_preferences(
    store: Store,
    guild_id: int,
    count: int,
    *,
    requester: int = 501,
    voter: int = 502,
) -> list[int]:
    """`count` outputs whose kept, up-voted version mentions "lanterns" and whose down-voted
    version does not; returns the output ids."""
    return await seed(store, guild_id, count, trait="marker", requester=requester, voter=voter)


def settings_for(model: Path | str, root: Path) -> Settings:
    """Settings that train `model` on the CPU in float32, writing under `root`."""
    return Settings(
        model=str(model),
        device="cpu",
        dtype="float32",
        database_path=root / "llmos.sqlite3",
        adapter_dir=root / "adapters",
        model_cache_dir=MODEL_CACHE,
    )
