"""The real embedded SmolLM2: conversion, cached loading, and a real haiku."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from bot.generation.engine import TransformersEngine
from bot.generation.loader import (
    LoadedModel,
    ModelLoadError,
    load_model,
    resolve_device,
    resolve_dtype,
)
from bot.generation.queue import GenerationQueue
from bot.generation.types import GenerationRequest, SamplingParams
from bot.prompts import FORMS, clean_output, poem_prompt, shape_poem

pytestmark = pytest.mark.slow


def test_converts_once_then_loads_from_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.generation.loader")
    first = load_model("embedded", device="cpu", dtype="float32", cache_dir=tmp_path)
    assert "Converting SmolLM2-135M-Instruct.Q4_1.gguf" in caplog.text
    assert (tmp_path / "smollm2-135m-instruct" / "model.safetensors").is_file()
    caplog.clear()
    second = load_model("embedded", device="cpu", dtype="float32", cache_dir=tmp_path)
    assert "Converting" not in caplog.text
    assert "Loaded SmolLM2-135M-Instruct on cpu as torch.float32" in caplog.text
    # the cached copy is the same model
    for (name, a), (_, b) in zip(
        first.model.state_dict().items(), second.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_device_and_dtype_resolution() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cuda", "mps", "cpu")
    assert resolve_dtype("float32", "cpu") == torch.float32
    assert resolve_dtype("auto", "cpu") in (torch.bfloat16, torch.float32)
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="DEVICE=cuda"):
            resolve_device("cuda")


def test_missing_local_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(str(tmp_path / "nope.gguf"), device="cpu", dtype="auto", cache_dir=tmp_path)


def test_hub_model_offline_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    # The environment variable is read at import time, so set the constant it feeds.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError, match="from the Hugging Face Hub"):
        load_model("someone/not-here", device="cpu", dtype="auto", cache_dir=tmp_path)


async def test_embedded_model_writes_a_haiku(embedded: LoadedModel) -> None:
    engine = TransformersEngine(embedded.model, embedded.tokenizer, model_name=embedded.name)
    request = GenerationRequest(
        user_id=1,
        prompt=poem_prompt("autumn rain", "haiku"),
        params=SamplingParams(max_new_tokens=48, seed=1),
    )
    async with GenerationQueue(engine) as queue:
        result = await queue.submit(request).result()
    poem, _fits = shape_poem(clean_output(result.text), FORMS["haiku"].lines)
    assert poem.strip()
    assert "<|im_" not in poem
    assert len(poem.splitlines()) <= 3
    assert any(c.isalpha() for c in poem)
