"""The openai engine against a real `transformers serve` process on loopback (tiny model),
and against small real HTTP servers on loopback that answer as llama-server, Ollama, vLLM or a
strict OpenAI-like API would (stand-ins for servers the tests cannot run)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.generation.engine import TransformersEngine
from bot.generation.queue import GenerationQueue
from bot.generation.remote import OpenAIEngine, prompt_text
from bot.generation.types import (
    EngineFailure,
    GenerationCancelled,
    GenerationError,
    GenerationRequest,
    SamplingParams,
)
from bot.prompts import poem_prompt
from tests.servers import free_port, serving


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


@pytest.mark.slow
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


@pytest.mark.slow
async def test_transformers_serve_is_detected_and_its_penalty_applies(
    server: str, tiny_dir: Path, tiny_engine: TransformersEngine
) -> None:
    # The random tiny model never repeats itself in 16 tokens, so no penalty above 1 changes
    # its greedy text; one below 1 (repetition rewarded) does, which shows the value arriving.
    remote = OpenAIEngine(server, str(tiny_dir))
    async with GenerationQueue(remote) as queue:
        result = await queue.submit(req(1, "rain", repetition_penalty=0.5)).result()
    async with GenerationQueue(tiny_engine) as queue:
        penalised = await queue.submit(req(1, "rain", repetition_penalty=0.5)).result()
        plain = await queue.submit(req(1, "rain")).result()
    assert remote.dialect is not None and remote.dialect.name == "transformers"
    assert remote.dropped == set()
    # greedy, same weights: the server applied exactly the penalty the local model did
    assert penalised.text.split() != plain.text.split()
    assert result.text.split() == penalised.text.split()
    # from the usage chunk: the server's own count, which the estimate would not hit
    estimate = remote.count_tokens(prompt_text(req(1, "rain").prompt))
    assert result.prompt_tokens == penalised.prompt_tokens != estimate
    assert result.completion_tokens == 16


@pytest.mark.slow
async def test_a_field_the_server_refuses_is_dropped(
    server: str, tiny_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.generation.remote")
    # told it is vLLM, the engine sends repetition_penalty, which transformers serve refuses
    remote = OpenAIEngine(server, str(tiny_dir), dialect="vllm")
    async with GenerationQueue(remote) as queue:
        first = await queue.submit(req(1, "rain", repetition_penalty=1.3)).result()
        second = await queue.submit(req(1, "snow", repetition_penalty=1.3)).result()
    assert first.completion_tokens == second.completion_tokens == 16
    assert remote.dropped == {"repetition_penalty"}
    assert caplog.text.count("refuses repetition_penalty") == 1


@pytest.mark.slow
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
    assert remote.dialect is None  # no answer to the probes: asked again a minute later
    assert remote._next_probe > time.monotonic() + 30  # not by every call meanwhile
    await asyncio.sleep(0)


# Fields OpenAI's own API takes in a streaming chat request (a strict stand-in refuses others).
OPENAI_FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "frequency_penalty",
}


@dataclass
class StandIn:
    """A real HTTP server on loopback answering as one kind of server would; it records the
    GET paths it was asked and the chat request bodies it received."""

    url: str = ""
    gets: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def stand_in(
    answers: dict[str, Any],
    *,
    strict: bool = False,
    usage: bool = True,
    refuse: str | None = None,
) -> AsyncIterator[StandIn]:
    """Serve `answers` (GET path -> JSON; any other GET is a 404) and a streaming
    /v1/chat/completions that writes "one two three" and stops for length. `strict`: a body
    field OpenAI's API does not know is refused with 400, naming it. `usage`: a usage chunk
    (77 prompt tokens, 3 completion tokens) ends the stream when the body asks for it.
    `refuse`: every chat request is refused with 400 and this message."""
    state = StandIn()

    async def get(request: web.Request) -> web.Response:
        state.gets.append(request.path)
        if request.path in answers:
            return web.json_response(answers[request.path])
        return web.json_response({"error": "not found"}, status=404)

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        state.bodies.append(body)
        if refuse is not None:
            return web.json_response({"error": {"message": refuse}}, status=400)
        unknown = sorted(set(body) - OPENAI_FIELDS)
        if strict and unknown:
            message = f"Unrecognized request argument supplied: {unknown[0]}"
            return web.json_response({"error": {"message": message}}, status=400)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in ("one", " two", " three"):
            chunk: dict[str, Any] = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
        await response.write(f"data: {json.dumps(end)}\n\n".encode())
        if usage and (body.get("stream_options") or {}).get("include_usage"):
            counts = {"prompt_tokens": 77, "completion_tokens": 3, "total_tokens": 80}
            last = {"choices": [], "usage": counts}
            await response.write(f"data: {json.dumps(last)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/{tail:.*}", get)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield state
    finally:
        await runner.cleanup()


LLAMA_SERVER = {
    "/props": {"default_generation_settings": {"n_ctx": 4096}, "total_slots": 1},
    "/v1/models": {"object": "list", "data": [{"id": "m", "owned_by": "llamacpp"}]},
}
OLLAMA = {
    "/api/version": {"version": "0.12.3"},
    "/v1/models": {"object": "list", "data": [{"id": "m", "owned_by": "library"}]},
}
VLLM = {
    "/version": {"version": "0.11.0"},
    "/v1/models": {"object": "list", "data": [{"id": "m", "owned_by": "vllm"}]},
}
SAMPLING: dict[str, Any] = {"method": "sampling", "repetition_penalty": 1.3, "seed": 7}


async def run_twice(remote: OpenAIEngine) -> list[Any]:
    """Two requests, one after the other (the second finds the dialect settled)."""
    async with GenerationQueue(remote, max_pending_per_user=10) as queue:
        return [await queue.submit(req(1, t, **SAMPLING)).result() for t in ("rain", "snow")]


async def test_llama_server_gets_repeat_penalty_top_k_and_a_slot_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.generation.remote")
    async with stand_in(LLAMA_SERVER) as server:
        remote = OpenAIEngine(server.url, "m")
        results = await run_twice(remote)
    assert remote.dialect is not None and remote.dialect.name == "llama.cpp"
    assert server.gets.count("/props") == 1  # probed once, before the first request
    for body in server.bodies:
        assert body["repeat_penalty"] == 1.3 and body["top_k"] == 50 and body["seed"] == 7
        assert "repetition_penalty" not in body
        assert body["stream_options"] == {"include_usage": True}
    assert [(r.prompt_tokens, r.completion_tokens) for r in results] == [(77, 3), (77, 3)]
    assert results[0].text == "one two three" and results[0].finish_reason == "length"
    assert caplog.text.count("has 1 slot") == 1


async def test_ollama_gets_neither_field_and_the_log_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.generation.remote")
    async with stand_in(OLLAMA) as server:
        remote = OpenAIEngine(server.url, "m")
        await run_twice(remote)
    assert remote.dialect is not None and remote.dialect.name == "ollama"
    for body in server.bodies:
        assert not {"repeat_penalty", "repetition_penalty", "top_k"} & set(body)
        assert body["seed"] == 7
    assert caplog.text.count("drops repeat_penalty") == 1
    assert caplog.text.count("drops top_k") == 1


async def test_vllm_gets_repetition_penalty_and_top_k() -> None:
    async with stand_in(VLLM) as server:
        remote = OpenAIEngine(server.url, "m")
        await run_twice(remote)
    assert remote.dialect is not None and remote.dialect.name == "vllm"
    for body in server.bodies:
        assert body["repetition_penalty"] == 1.3 and body["top_k"] == 50
        assert "repeat_penalty" not in body


async def test_an_unrecognised_strict_server_gets_plain_openai(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.generation.remote")
    models = {"/v1/models": {"object": "list", "data": [{"id": "m", "owned_by": "openai"}]}}
    async with stand_in(models, strict=True) as server:
        remote = OpenAIEngine(server.url, "m")
        results = await run_twice(remote)
    # nothing refused, nothing dropped: only OpenAI's own fields were sent
    assert [r.completion_tokens for r in results] == [3, 3]
    assert remote.dropped == set()
    assert all(set(body) <= OPENAI_FIELDS for body in server.bodies)
    assert caplog.text.count("could not tell which server") == 1
    assert caplog.text.count("no repetition penalty (and refuses") == 1
    assert caplog.text.count("has no top_k") == 1


async def test_without_a_usage_chunk_tokens_are_counted() -> None:
    async with stand_in(VLLM, usage=False) as server:
        remote = OpenAIEngine(server.url, "m")
        result = (await run_twice(remote))[0]
    assert result.completion_tokens == 3  # one per content chunk
    assert result.prompt_tokens == remote.count_tokens(prompt_text(req(1, "rain").prompt)) > 0


async def test_a_configured_dialect_sends_no_probe() -> None:
    async with stand_in(VLLM) as server:
        remote = OpenAIEngine(server.url, "m", dialect="llama.cpp")
        await run_twice(remote)
    assert server.gets == []
    assert all(body["repeat_penalty"] == 1.3 for body in server.bodies)


async def test_a_value_the_server_refuses_keeps_its_field_and_fails_politely() -> None:
    """A 400 that names a field but not as unknown (its value is out of range) is not a reason
    to stop sending the field: the request fails, and the next one sends it again."""
    refusal = "repeat_penalty: Input should be less than or equal to 1.25"
    async with stand_in(LLAMA_SERVER, refuse=refusal) as server:
        remote = OpenAIEngine(server.url, "m")
        async with GenerationQueue(remote, max_pending_per_user=10) as queue:
            for topic in ("rain", "snow"):
                with pytest.raises(GenerationError) as failed:
                    await queue.submit(req(1, topic, **SAMPLING)).result()
                assert "less than or equal" not in failed.value.user_message
    assert remote.dropped == set()
    assert [body["repeat_penalty"] for body in server.bodies] == [1.3, 1.3]
