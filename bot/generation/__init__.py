"""Generation: the queue, the engines behind it, and model loading."""

from __future__ import annotations

from bot.config import Settings
from bot.generation.engine import Engine, TransformersEngine
from bot.generation.loader import load_model


def build_engine(settings: Settings) -> Engine:
    """Load the configured model and wrap it in the configured engine (blocking; seconds)."""
    loaded = load_model(
        settings.model,
        device=settings.device,
        dtype=settings.dtype,
        cache_dir=settings.model_cache_dir,
    )
    return TransformersEngine(loaded.model, loaded.tokenizer, model_name=loaded.name)
