"""The vision engine behind the real queue, and images through the openai engine, on a tiny
random vision-language model built here (tests/vision_fixtures.py; nothing is downloaded).

The model's weights are random: these tests assert what the engines promise (streaming, limits,
stop strings, cancel, token counts, the request's shape), never what words it writes.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch

from bot.generation.loader import ModelLoadError
from bot.generation.queue import GenerationQueue
from bot.generation.remote import OpenAIEngine, data_url
from bot.generation.types import (
    GenerationCancelled,
    GenerationRequest,
    GenerationResult,
    Message,
    Prompt,
    SamplingParams,
)
from bot.generation.vision import UnusableImage, VisionEngine, load_vision_model
from tests.servers import serving
from tests.vision_fixtures import (
    build_tiny_vlm,
    jpeg_bytes,
    png_bytes,
    smollm2_tokenizer,
)

GREEDY = SamplingParams(max_new_tokens=16, method="greedy", repetition_penalty=1.0)
PNG = png_bytes()
JPEG = jpeg_bytes(120, 90)


def prompt(*images: bytes, prefix: str = "") -> Prompt:
    return Prompt(
        (
            Message("system", "You are an art critic. Be kind and specific."),
            Message("user", "Critique this drawing: what works, and one thing to try."),
        ),
        plain="Critique of a drawing:\n",
        prefix=prefix,
        images=images,
    )


def request(p: Prompt, params: SamplingParams = GREEDY, user: int = 1) -> GenerationRequest:
    return GenerationRequest(user_id=user, prompt=p, params=params)


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    started = time.monotonic()
    folder = build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm"), smollm2_tokenizer())
    print(f"\ntiny VLM built in {time.monotonic() - started:.2f} s")
    return folder


@pytest.fixture(scope="module")
def engine(vlm_dir: Path) -> VisionEngine:
    started = time.monotonic()
    loaded = load_vision_model(str(vlm_dir), device="cpu", dtype=torch.float32)
    print(f"\ntiny VLM loaded in {time.monotonic() - started:.2f} s")
    return loaded


@pytest.fixture(scope="module")
def server(vlm_dir: Path) -> Iterator[str]:
    with serving(vlm_dir) as url:
        yield url


async def run(engine: Any, req: GenerationRequest) -> tuple[list[str], GenerationResult]:
    async with GenerationQueue(engine) as queue:
        handle = queue.submit(req)
        chunks = [chunk async for chunk in handle]
        return chunks, await handle.result()


# -- the local engine ----------------------------------------------------------------------------


async def test_an_image_prompt_streams_tokens(engine: VisionEngine) -> None:
    started = time.monotonic()
    chunks, result = await run(engine, request(prompt(PNG), replace(GREEDY, min_new_tokens=16)))
    print(f"\n16 tokens with an image in {time.monotonic() - started:.2f} s")
    assert len(chunks) > 3
    assert "".join(chunks) == result.text
    assert result.completion_tokens == 16 and result.finish_reason == "length"
    _, text_only = await run(engine, request(prompt()))
    # the image is in the prompt: its tokens (crops, global view and their tags) are counted
    assert result.prompt_tokens > text_only.prompt_tokens + 20


async def test_max_new_tokens_is_honoured(engine: VisionEngine) -> None:
    for limit in (1, 5):
        params = replace(GREEDY, max_new_tokens=limit, min_new_tokens=limit)
        _, result = await run(engine, request(prompt(PNG), params))
        assert result.completion_tokens == limit and result.finish_reason == "length"
    _, free = await run(engine, request(prompt(PNG), replace(GREEDY, max_new_tokens=7)))
    assert free.completion_tokens <= 7


async def test_a_stop_string_ends_the_answer_before_it(engine: VisionEngine) -> None:
    params = replace(GREEDY, max_new_tokens=24, min_new_tokens=24)
    _, free = await run(engine, request(prompt(PNG), params))
    stop = free.text[6:8]  # a stop string that the free answer contains
    chunks, stopped = await run(engine, request(prompt(PNG), replace(params, stop=(stop,))))
    assert stopped.text == free.text[: free.text.index(stop)]
    assert "".join(chunks) == stopped.text  # nothing past the stop was ever shown
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens < free.completion_tokens


async def test_the_prefix_comes_first_and_is_continued(engine: VisionEngine) -> None:
    chunks, result = await run(engine, request(prompt(PNG, prefix="1.")))
    assert chunks[0] == "1." and result.text.startswith("1.")
    # the model read the prefix: its prompt is longer than without it
    _, without = await run(engine, request(prompt(PNG)))
    assert result.prompt_tokens > without.prompt_tokens


async def test_cancel_stops_generation(engine: VisionEngine) -> None:
    params = replace(GREEDY, max_new_tokens=400, min_new_tokens=400)
    async with GenerationQueue(engine) as queue:
        handle = queue.submit(request(prompt(PNG), params))
        got = 0
        with pytest.raises(GenerationCancelled):
            async for _ in handle:
                got += 1
                if got == 2:
                    handle.cancel()
        assert got < 50
        after = await queue.submit(request(prompt(PNG))).result()  # the engine goes on
    assert after.completion_tokens > 0


async def test_a_text_only_prompt_works(engine: VisionEngine) -> None:
    chunks, result = await run(engine, request(prompt()))
    assert chunks and "".join(chunks) == result.text
    assert result.completion_tokens > 0 and result.finish_reason in ("stop", "length")
    # and greedy decoding repeats itself. (Not seeded sampling: torch's generator is global to
    # the process, and another engine sampling in another thread at the same time moves it.)
    _, a = await run(engine, request(prompt(PNG)))
    _, b = await run(engine, request(prompt(PNG)))
    assert a.text == b.text


async def test_two_images_work(engine: VisionEngine) -> None:
    _, one = await run(engine, request(prompt(PNG)))
    chunks, two = await run(engine, request(prompt(PNG, JPEG)))
    assert chunks and "".join(chunks) == two.text and two.completion_tokens > 0
    assert two.prompt_tokens > one.prompt_tokens + 20  # both images are in the prompt


async def test_bad_images_are_refused_clearly(engine: VisionEngine) -> None:
    too_many = prompt(*[PNG] * (engine.max_images + 1))
    with pytest.raises(UnusableImage, match=f"takes at most {engine.max_images}"):
        await run(engine, request(too_many))
    with pytest.raises(UnusableImage, match="image 2 cannot be read") as refused:
        await run(engine, request(prompt(PNG, b"not an image at all")))
    assert "PNG or JPEG" in refused.value.user_message
    # an image prompt too long for the context is refused, not cut through an image
    crowded = replace(GREEDY, max_new_tokens=engine.context_length - 4)
    with pytest.raises(UnusableImage, match="has room for 16"):
        await run(engine, request(prompt(PNG), crowded))
    # a text-only one is trimmed from the left, as on the text engines
    assert engine.encode(request(prompt(), crowded))["input_ids"].shape[1] == 16
    _, after = await run(engine, request(prompt(PNG)))  # and the engine goes on
    assert after.completion_tokens > 0


async def test_beam_search_answers_in_one_piece(engine: VisionEngine) -> None:
    params = replace(GREEDY, method="beam", num_beams=2, max_new_tokens=6)
    chunks, result = await run(engine, request(prompt(PNG, prefix="1."), params))
    assert chunks == ["1.", result.text[2:]] or chunks == ["1."]
    assert 0 < result.completion_tokens <= 6


async def test_logprobs_give_cuts(engine: VisionEngine) -> None:
    params = replace(GREEDY, max_new_tokens=6, logprobs=True, probes=("\n",))
    _, result = await run(engine, request(prompt(PNG), params))
    cuts = result.cuts
    assert cuts is not None and cuts[0].tokens == 0
    assert [c.tokens for c in cuts] == list(range(len(cuts)))
    assert cuts[-1].end == len(result.text)


def test_loading_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_vision_model(str(tmp_path / "missing"), device="cpu", dtype=torch.float32)
    text_model = tmp_path / "text-model"  # a tokenizer and no image processor: a text model
    smollm2_tokenizer().save_pretrained(text_model)
    with pytest.raises(ModelLoadError, match="not a vision model"):
        load_vision_model(str(text_model), device="cpu", dtype=torch.float32)


# -- the openai engine ---------------------------------------------------------------------------


@pytest.mark.slow  # starts a `transformers serve` process
async def test_transformers_serve_answers_an_image_prompt(
    server: str, vlm_dir: Path, engine: VisionEngine
) -> None:
    remote = OpenAIEngine(server, str(vlm_dir))
    async with GenerationQueue(remote) as queue:
        handle = queue.submit(request(prompt(PNG)))
        chunks = [chunk async for chunk in handle]
        result = await handle.result()
        text_only = await queue.submit(request(prompt())).result()
    assert chunks and "".join(chunks) == result.text
    assert result.finish_reason in ("stop", "length") and result.completion_tokens > 0
    assert text_only.completion_tokens > 0
    # Same weights, processor and template: the server read the image as the local engine
    # does (text, then the image), token for token. (Their sampled words are not compared: two
    # implementations may break a near-tie of random weights differently.)
    _, local = await run(engine, request(prompt(PNG)))
    assert result.prompt_tokens == local.prompt_tokens


@dataclass
class Job:
    request: GenerationRequest

    def emit(self, text: str) -> None:
        pass

    def should_stop(self) -> bool:
        return False


def test_the_request_body_carries_images_as_content_parts() -> None:
    remote = OpenAIEngine("http://127.0.0.1:9/v1", "m")
    messages = remote.body(Job(request(prompt(PNG, JPEG))))["messages"]
    system, user = messages
    assert system == {"role": "system", "content": "You are an art critic. Be kind and specific."}
    text, png, jpeg = user["content"]
    assert text == {"type": "text", "text": prompt().messages[1].content}
    assert png["type"] == jpeg["type"] == "image_url"
    head, data = png["image_url"]["url"].split(",", 1)
    assert head == "data:image/png;base64" and base64.b64decode(data) == PNG
    head, data = jpeg["image_url"]["url"].split(",", 1)
    assert head == "data:image/jpeg;base64" and base64.b64decode(data) == JPEG
    assert data_url(b"GIF89a...").startswith("data:image/gif;base64,")


def test_a_text_only_request_body_is_plain_strings() -> None:
    remote = OpenAIEngine("http://127.0.0.1:9/v1", "m")
    p = prompt()
    messages = remote.body(Job(request(p)))["messages"]
    assert messages == [{"role": m.role, "content": m.content} for m in p.messages]
