"""Decode copies (an experiment in `make bench-peers`): prompts read the model's own weights, single
rows the copy."""

from __future__ import annotations

import copy
from typing import Any

import torch

from bot.generation.decode_weights import add_decode_copies
from bot.generation.engine import TransformersEngine


def test_prompts_are_unchanged_and_single_rows_use_the_copy(tiny_model: Any) -> None:
    model = copy.deepcopy(tiny_model)
    ids = torch.tensor([[5, 17, 300, 41, 9, 77, 1200, 3]])
    with torch.inference_mode():
        before_prompt = model(input_ids=ids).logits
        before_row = model(input_ids=ids[:, :1]).logits
    state = {k: v.clone() for k, v in model.state_dict().items()}
    added = add_decode_copies(model, torch.bfloat16, rows=2)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    # tied weights share one copy: lm_head and the embeddings in SmolLM2
    assert 0 < added <= sum(m.weight.numel() * 2 for m in linear)
    assert add_decode_copies(model, torch.bfloat16) == 0  # twice is once
    with torch.inference_mode():
        after_prompt = model(input_ids=ids).logits
        after_row = model(input_ids=ids[:, :1]).logits
    assert torch.equal(after_prompt, before_prompt)  # eight rows: float32 as before
    assert not torch.equal(after_row, before_row)  # one row: the bfloat16 copy
    assert torch.allclose(after_row, before_row, atol=0.05)
    assert after_row.dtype == torch.float32
    after = model.state_dict()
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], v) for k, v in state.items())


def test_the_fingerprint_ignores_the_copies(tiny_model: Any, tokenizer: Any) -> None:
    plain = TransformersEngine(tiny_model, tokenizer, model_name="tiny").fingerprint()
    model = copy.deepcopy(tiny_model)
    add_decode_copies(model)
    assert TransformersEngine(model, tokenizer, model_name="tiny").fingerprint() == plain
