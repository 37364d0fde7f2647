"""Building the configured engine: `build_engine(settings)`."""

from __future__ import annotations

import logging

from bot.config import Settings
from bot.generation.base import Engine
from bot.generation.batched import BatchedEngine
from bot.generation.continuous import ContinuousEngine
from bot.generation.engine import TransformersEngine
from bot.generation.loader import load_model
from bot.generation.pool import PooledEngine
from bot.generation.remote import OpenAIEngine
from bot.generation.select import auto_engine

log = logging.getLogger(__name__)


def _remote(settings: Settings, model: str, what: str) -> OpenAIEngine | PooledEngine:
    """`model` on the OpenAI-compatible server at `OPENAI_BASE_URL`, or on the pool of
    servers there when it names several."""
    urls = settings.openai_base_urls
    assert urls
    cap = settings.openai_max_concurrency or max(settings.max_batch, 32)
    if len(urls) > 1:
        log.info(
            "%s: a pool of %d openai servers (model %s, %d requests each at most): %s",
            what,
            len(urls),
            model,
            cap,
            ", ".join(urls),
        )
        return PooledEngine(
            urls,
            model,
            api_key=settings.openai_api_key,
            max_concurrency=cap,
            max_retries=settings.openai_max_retries,
            eject_after=settings.openai_eject_after,
            health_seconds=settings.openai_health_seconds,
            read_timeout=settings.generation_timeout,
            dialect=settings.openai_dialect,
        )
    log.info("%s: openai at %s (model %s)", what, urls[0], model)
    return OpenAIEngine(
        urls[0],
        model,
        api_key=settings.openai_api_key,
        max_batch=cap,
        max_retries=settings.openai_max_retries,
        read_timeout=settings.generation_timeout,
        dialect=settings.openai_dialect,
    )


def build_vision_engine(settings: Settings) -> Engine:
    """The vision-language engine for `VISION_MODEL` (blocking; seconds to minutes): local
    (transformers' image-text-to-text model) or the OpenAI-compatible server's."""
    assert settings.vision_model
    if settings.vision_engine == "openai":
        return _remote(settings, settings.vision_model, "Vision")
    from bot.generation.vision import load_vision_model

    engine = load_vision_model(settings.vision_model, device=settings.device, dtype=settings.dtype)
    log.info("Vision: %s", engine.model_name)
    return engine


def build_engine(settings: Settings) -> Engine:
    """Load the configured model and wrap it in the configured engine (blocking; seconds).

    `ENGINE=auto` is the batched engine off CUDA: on the 2-core dev CPU it gave 7.6x the
    tokens/s of one request at a time at 8 concurrent requests (`python -m tools.bench`). On
    CUDA it is the engine `bench/gpu.sh` measured faster (batched until a run has decided).
    """
    if settings.engine == "openai":
        assert settings.openai_model
        return _remote(settings, settings.openai_model, "Engine")
    loaded = load_model(
        settings.model,
        device=settings.device,
        dtype=settings.dtype,
        cache_dir=settings.model_cache_dir,
    )
    kind = auto_engine(loaded.device) if settings.engine == "auto" else settings.engine
    log.info("Engine: %s (max batch %d)", kind, settings.max_batch)
    if kind == "sequential":
        return TransformersEngine(
            loaded.model,
            loaded.tokenizer,
            model_name=loaded.name,
            prefix_cache_mb=settings.prefix_cache_mb,
        )
    if kind == "continuous":
        return ContinuousEngine(
            loaded.model,
            loaded.tokenizer,
            model_name=loaded.name,
            max_batch=settings.max_batch,
            memory_fraction=settings.continuous_memory_fraction,
        )
    return BatchedEngine(
        loaded.model,
        loaded.tokenizer,
        model_name=loaded.name,
        max_batch=settings.max_batch,
        prefix_cache_mb=settings.prefix_cache_mb,
    )
