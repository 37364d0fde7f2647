"""Half-size weight copies for decoding one request at a time on a CPU: an experiment, measured
by `make bench-peers` (its `batched+bf16` and `sequential+bf16` engines), not a setting.

Decoding one token reads every weight once and does little arithmetic with it: on a CPU a small
model's step is bound by memory bandwidth, not maths (profiled on the 2-core dev machine,
SmolLM2-135M in float32: 76% of a step is `aten::mm`, about 11 GB/s of weights). A bfloat16 copy
halves the bytes read: 90 distinct 1536x576 layers take 16 ms against 29 ms in float32 for one
row; from four rows on it loses (without native bf16 instructions the CPU converts as it
multiplies). A bare `generate` went from 77.7 to 55.7 ms a token with it, but through the
engine, in a bench shared with llama-server, it did not win consistently at one request (see
README, "One person alone"), and a greedy answer would depend on whether it decoded alone or in
a batch: so it is not wired into the bot.

Promises: `add_decode_copies(model)` gives every linear layer a copy of its weight in `dtype`,
used when a forward reads at most `rows` token rows; any longer input (a prompt, a batch) uses
the layer's own weight, unchanged. The copies are not in the state dict, so fingerprints, saving
and LoRA adapters (which wrap the same layers) see the model as it was.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F


def _forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    copy: torch.Tensor = self._decode_weight  # type: ignore[assignment]
    rows: int = self._decode_rows  # type: ignore[assignment]
    if x.numel() // max(1, x.shape[-1]) <= rows:
        bias = None if self.bias is None else self.bias.to(copy.dtype)
        return F.linear(x.to(copy.dtype), copy, bias).to(x.dtype)
    return F.linear(x, self.weight, self.bias)


def add_decode_copies(model: Any, dtype: torch.dtype = torch.bfloat16, rows: int = 2) -> int:
    """Give `model`'s linear layers decode copies in `dtype`; returns the bytes they take.

    Layers already given copies, and LoRA's own small layers, are left alone."""
    added = 0
    copies: dict[int, torch.Tensor] = {}  # tied weights (the embeddings and lm_head) share one
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or "lora_" in name:
            continue
        if hasattr(module, "_decode_weight") or module.weight.dtype == dtype:
            continue
        key = module.weight.data_ptr()
        if key not in copies:
            copies[key] = module.weight.detach().to(dtype).contiguous()
            added += copies[key].numel() * copies[key].element_size()
        module._decode_weight = copies[key]  # type: ignore[assignment]
        module._decode_rows = rows  # type: ignore[assignment]
        module.forward = types.MethodType(_forward, module)  # type: ignore[method-assign]
    return added
