"""The openai engine against a real `transformers serve` process on loopback (tiny model)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.generation.engine import TransformersEngine
from bot.generation.queue import GenerationQueue
from bot.generation.remote import OpenAIEngine
from bot.generation.types import (
    EngineFailure,
    GenerationCancelled,
    GenerationRequest,
    SamplingParams,
)
from bot.prompts import poem_prompt
from tests.vision_fixtures import free_port, serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_dir(tiny_model: Any, tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny")
    tiny_model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def server(tiny_dir: Path) -> Iterator[str]:
    """`transformers serve` with the tiny model preloaded; yields its /v1 base URL."""
    with serving(tiny_dir) as url:
        yield url


DEFAULTS: dict[str, Any] = {"max_new_tokens": 16, "method": "greedy", "repetition_penalty": 1.0}


def req(user: int, topic: str, **params: Any) -> GenerationRequest:
    return GenerationRequest(
        user_id=user,
        prompt=poem_prompt(topic, "haiku"),
        params=SamplingParams(**(DEFAULTS | params)),
    )


async def test_streams_and_matches_the_local_model(
    server: str, tiny_dir: Path, tiny_engine: TransformersEngine
) -> None:
    remote = OpenAIEngine(server, str(tiny_dir))
    topics = ["autumn rain", "a lighthouse", "cats"]
    async with GenerationQueue(remote, max_pending_per_user=10) as queue:
        handles = [queue.submit(req(i, t)) for i, t in enumerate(topics)]
        streamed = [[c async for c in h] for h in handles]
        results = [await h.result() for h in handles]
    async with GenerationQueue(tiny_engine, max_pending_per_user=10) as queue:
        local = [await queue.submit(req(i, t)).result() for i, t in enumerate(topics)]
    for chunks, result, mine in zip(streamed, results, local, strict=True):
        assert len(chunks) > 3
        assert "".join(chunks) == result.text
        assert result.completion_tokens == 16 and result.finish_reason == "length"
        assert result.prompt_tokens == mine.prompt_tokens
        # same weights, same template, greedy: the same words
        assert result.text.split() == mine.text.split()


async def test_repetition_penalty_is_dropped_for_a_strict_server(
    server: str, tiny_dir: Path
) -> None:
    remote = OpenAIEngine(server, str(tiny_dir))
    async with GenerationQueue(remote) as queue:
        result = await queue.submit(req(1, "rain", repetition_penalty=1.3)).result()
    assert result.completion_tokens > 0
    assert remote.send_repetition_penalty is False


async def test_cancel_closes_the_stream(server: str, tiny_dir: Path) -> None:
    remote = OpenAIEngine(server, str(tiny_dir))
    async with GenerationQueue(remote) as queue:
        handle = queue.submit(req(1, "rain", max_new_tokens=400))
        got = 0
        with pytest.raises(GenerationCancelled):
            async for _ in handle:
                got += 1
                if got == 2:
                    handle.cancel()
        assert got < 50
        after = await queue.submit(req(1, "after")).result()
        assert after.completion_tokens == 16


async def test_unreachable_server_retries_then_fails_clearly() -> None:
    remote = OpenAIEngine(f"http://127.0.0.1:{free_port()}/v1", "x", max_retries=1)
    async with GenerationQueue(remote) as queue:
        started = time.monotonic()
        with pytest.raises(EngineFailure) as failure:
            await queue.submit(req(1, "rain")).result()
    assert time.monotonic() - started >= 0.5  # one retry after backoff
    assert "The model ran into a problem" in failure.value.user_message
    await asyncio.sleep(0)
