"""The continuous-batching engine (transformers' manager) on a tiny random Llama."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bot.generation.continuous import ContinuousEngine
from bot.generation.queue import GenerationQueue
from bot.generation.types import GenerationCancelled, GenerationRequest, SamplingParams
from bot.prompts import poem_prompt


@pytest.fixture(scope="module")
def engine(tiny_model: Any, tokenizer: Any) -> Iterator[ContinuousEngine]:
    import copy

    # The manager switches the model's attention implementation: keep it to its own copy.
    engine = ContinuousEngine(
        copy.deepcopy(tiny_model), tokenizer, model_name="tiny", max_batch=8, memory_fraction=0.02
    )
    yield engine
    engine.close()


DEFAULTS: dict[str, Any] = {"max_new_tokens": 16, "method": "greedy"}


def req(user: int, topic: str, **params: Any) -> GenerationRequest:
    return GenerationRequest(
        user_id=user,
        prompt=poem_prompt(topic, "haiku"),
        params=SamplingParams(**(DEFAULTS | params)),
    )


async def test_streams_each_request(engine: ContinuousEngine) -> None:
    async with GenerationQueue(engine, max_pending_per_user=10) as queue:
        handles = [queue.submit(req(i, t)) for i, t in enumerate(["rain", "cats", "the sea"])]
        streamed = [[c async for c in h] for h in handles]
        results = [await h.result() for h in handles]
    for chunks, result in zip(streamed, results, strict=True):
        assert len(chunks) > 3
        assert "".join(chunks) == result.text
        assert result.completion_tokens == 16 and result.finish_reason == "length"


async def test_new_request_joins_while_another_runs(engine: ContinuousEngine) -> None:
    async with GenerationQueue(engine, max_pending_per_user=10) as queue:
        long = queue.submit(req(1, "a long one", max_new_tokens=200))
        await long.wait_started()
        short = queue.submit(req(2, "short", max_new_tokens=4))
        assert (await short.result()).completion_tokens == 4
        assert not long.done
        long.cancel()
        with pytest.raises(GenerationCancelled):
            await long.result()
        again = await queue.submit(req(1, "after", max_new_tokens=4)).result()
        assert again.completion_tokens == 4
