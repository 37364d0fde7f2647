"""Prefix reuse, stop strings and log-probabilities in the local engines (a tiny random Llama)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import torch

from bot.generation.batched import BatchedEngine
from bot.generation.prefix import PrefixCache
from bot.generation.queue import GenerationQueue
from bot.generation.types import GenerationRequest, SamplingParams
from bot.prompts import poem_prompt

GREEDY = SamplingParams(max_new_tokens=16, method="greedy")


def request(params: SamplingParams = GREEDY, prefix: str = "") -> GenerationRequest:
    return GenerationRequest(1, replace(poem_prompt("tides", "haiku"), prefix=prefix), params)


async def answers(engine: BatchedEngine, requests: list[GenerationRequest]) -> list[Any]:
    async with GenerationQueue(engine, max_pending_per_user=20) as queue:
        handles = [queue.submit(r) for r in requests]
        return [await h.result() for h in handles]


async def test_a_kept_prefix_gives_the_same_greedy_answer(tiny_model: Any, tokenizer: Any) -> None:
    plain = BatchedEngine(tiny_model, tokenizer, model_name="tiny", prefix_cache_mb=0)
    cached = BatchedEngine(tiny_model, tokenizer, model_name="tiny")
    asks = [request(), request(prefix="Low tide\n"), request(prefix="Low tide\nthe moon")]
    expected = [(await answers(plain, [r]))[0].text for r in asks]
    got = [(await answers(cached, [r]))[0].text for r in asks]
    assert got == expected
    cache = cached.prefix_cache
    assert cache is not None
    # the second and third prompts read only what they add to the first
    first, second, third = (len(cached.encode(r)[0]) - 1 for r in asks)
    assert cache.read == third and cache.reused == first + second


async def test_candidates_read_their_prompt_once(tiny_model: Any, tokenizer: Any) -> None:
    engine = BatchedEngine(tiny_model, tokenizer, model_name="tiny", max_batch=8)
    sampled = SamplingParams(max_new_tokens=8, seed=3)
    async with GenerationQueue(engine, max_pending_per_user=20) as queue:
        blocker = queue.submit(request(replace(GREEDY, max_new_tokens=4), prefix="x"))
        await blocker.wait_started()  # the four below then wait, and run as one batch
        handles = [queue.submit(request(sampled)) for _ in range(4)]
        results = [await h.result() for h in handles]
        await blocker.result()
    assert all(r.completion_tokens > 0 for r in results)
    cache = engine.prefix_cache
    assert cache is not None
    prompt = len(engine.encode(request())[0]) - 1
    blocker_prompt = len(engine.encode(blocker.request)[0]) - 1
    # the blocker read its own prompt; the four candidates read theirs once between them
    assert cache.read + cache.reused == blocker_prompt + prompt


async def test_a_stop_string_ends_the_answer_before_it(tiny_model: Any, tokenizer: Any) -> None:
    engine = BatchedEngine(tiny_model, tokenizer, model_name="tiny")
    free = (await answers(engine, [request(replace(GREEDY, max_new_tokens=24))]))[0]
    stop = free.text[4:6]  # a stop string that the free answer contains
    streamed: list[str] = []
    async with GenerationQueue(engine) as queue:
        handle = queue.submit(request(replace(GREEDY, max_new_tokens=24, stop=(stop,))))
        streamed = [chunk async for chunk in handle]
        stopped = await handle.result()
    assert stopped.text == free.text[: free.text.index(stop)]
    assert "".join(streamed) == stopped.text  # nothing past the stop was ever shown
    assert stopped.finish_reason == "stop"


async def test_cuts_report_log_probabilities_and_probes(tiny_model: Any, tokenizer: Any) -> None:
    engine = BatchedEngine(tiny_model, tokenizer, model_name="tiny")
    probes = ("\n", " the", " xylophonically")
    params = replace(GREEDY, max_new_tokens=10, logprobs=True, probes=probes)
    result = (await answers(engine, [request(params)]))[0]
    cuts = result.cuts
    assert cuts is not None and cuts[0].tokens == 0 and cuts[0].logprob == 0.0
    assert [c.tokens for c in cuts] == list(range(len(cuts)))
    assert all(a.end <= b.end and a.logprob >= b.logprob for a, b in itertools.pairwise(cuts))
    assert cuts[-1].end == len(result.text)
    for cut in cuts[:-1]:
        assert len(cut.next) == 3 and cut.next[2] is None  # not one token: not reported
        assert all(v is not None and v <= 0 for v in cut.next[:2])


async def test_kept_prefixes_stay_within_their_budget(tiny_model: Any, tokenizer: Any) -> None:
    engine = BatchedEngine(tiny_model, tokenizer, model_name="tiny", prefix_cache_mb=1)
    cache = engine.prefix_cache
    assert cache is not None
    cache.max_bytes = 150_000  # two prompts of the tiny model
    for topic in ["rain", "snow", "fog", "hail", "sleet", "dew"]:
        ask = GenerationRequest(1, poem_prompt(topic, "haiku"), replace(GREEDY, max_new_tokens=2))
        await answers(engine, [ask])
        assert 0 < cache.bytes <= cache.max_bytes


def test_a_story_turn_takes_the_place_of_the_last_one(tiny_model: Any) -> None:
    """A next turn shares all of the last prompt but the request at its end: one entry per
    story, not two, so that more stories stay warm."""
    cache = PrefixCache(tiny_model)
    body = list(range(100, 400))
    first = [*body, 7, 8, 9, 10]  # ... </story> Write the next part
    second = [*body, *range(500, 540), 7, 8, 9, 10]  # one part more, the same request
    other = [*body[:20], *range(600, 700)]  # shares only a short start: kept beside
    with torch.inference_mode():  # as the engine calls it
        cache.prefill(first)
        cache.prefill(second)
        assert cache.reused == len(body)
        assert [len(ids) for _adapter, ids in cache._kept] == [len(second) - 1]
        cache.prefill(other)
    assert sorted(len(ids) for _adapter, ids in cache._kept) == [len(other) - 1, len(second) - 1]
