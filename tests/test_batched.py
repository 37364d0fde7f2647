"""The batched engine on a tiny random Llama: same answers as alone, rows independent."""

from __future__ import annotations

from typing import Any

import pytest

from bot.generation.batched import BatchedEngine
from bot.generation.engine import TransformersEngine
from bot.generation.queue import GenerationQueue
from bot.generation.types import GenerationCancelled, GenerationRequest, SamplingParams
from bot.prompts import poem_prompt

TOPICS = ["autumn rain", "a lighthouse keeper's last night", "cats", "the smell of old books"]


def greedy(topic: str, user: int, max_new_tokens: int = 20) -> GenerationRequest:
    return GenerationRequest(
        user_id=user,
        prompt=poem_prompt(topic, "haiku"),
        params=SamplingParams(max_new_tokens=max_new_tokens, method="greedy"),
    )


@pytest.fixture(scope="module")
def batched(tiny_model: Any, tokenizer: Any) -> BatchedEngine:
    return BatchedEngine(tiny_model, tokenizer, model_name="tiny-llama", max_batch=8)


async def test_greedy_batch_equals_each_request_alone(
    batched: BatchedEngine, tiny_engine: TransformersEngine
) -> None:
    requests = [greedy(t, user=i, max_new_tokens=12 + 4 * i) for i, t in enumerate(TOPICS)]
    async with GenerationQueue(tiny_engine, max_pending_per_user=10) as queue:
        alone = [await queue.submit(r).result() for r in requests]
    async with GenerationQueue(batched, max_pending_per_user=10) as queue:
        handles = [queue.submit(r) for r in requests]
        together = [await h.result() for h in handles]
    assert [r.text for r in together] == [r.text for r in alone]
    assert [r.completion_tokens for r in together] == [r.completion_tokens for r in alone]
    assert [r.prompt_tokens for r in together] == [r.prompt_tokens for r in alone]


async def test_rows_stream_in_order_and_independently(batched: BatchedEngine) -> None:
    async with GenerationQueue(batched, max_pending_per_user=10) as queue:
        handles = [queue.submit(greedy(t, user=i)) for i, t in enumerate(TOPICS)]
        streamed = {}
        for handle in handles:
            streamed[handle.request.id] = "".join([c async for c in handle])
        results = [await h.result() for h in handles]
    for handle, result in zip(handles, results, strict=True):
        assert streamed[handle.request.id] == result.text


async def test_cancelling_one_row_leaves_the_others(batched: BatchedEngine) -> None:
    async with GenerationQueue(batched, max_pending_per_user=10) as queue:
        blocker = queue.submit(greedy("first", user=99, max_new_tokens=30))
        handles = [
            queue.submit(greedy(t, user=i, max_new_tokens=200)) for i, t in enumerate(TOPICS)
        ]
        victim = handles[1]
        got = 0
        with pytest.raises(GenerationCancelled):
            async for _ in victim:
                got += 1
                if got == 2:
                    victim.cancel()
        others = [await h.result() for h in handles if h is not victim]
        await blocker.result()
    assert all(r.completion_tokens > 10 for r in others)


async def test_mixed_parameters_are_grouped(tiny_model: Any, tokenizer: Any) -> None:
    calls: list[int] = []

    class Counting(BatchedEngine):
        def _run(self, jobs: Any) -> Any:
            calls.append(len(jobs))
            return super()._run(jobs)

    engine = Counting(tiny_model, tokenizer, model_name="tiny", max_batch=8)
    hot = SamplingParams(max_new_tokens=8, temperature=1.2, seed=1)
    cold = SamplingParams(max_new_tokens=8, method="greedy")
    beam = SamplingParams(max_new_tokens=8, method="beam", num_beams=2)
    async with GenerationQueue(engine, max_pending_per_user=10) as queue:
        first = queue.submit(GenerationRequest(0, poem_prompt("x", "haiku"), cold))
        await first.wait_started()
        params = [hot, cold, hot, beam, cold]
        handles = [
            queue.submit(GenerationRequest(i + 1, poem_prompt("rain", "haiku"), p))
            for i, p in enumerate(params)
        ]
        results = [await h.result() for h in [first, *handles]]
    assert all(r.completion_tokens > 0 for r in results)
    # the first call ran alone; then beam on its own, and hot x2 and cold x2 each in one call
    assert calls == [1, 1, 2, 2]
