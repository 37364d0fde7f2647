"""Prefix reuse: the KV cache of a prompt already read is kept, and a prompt that starts the same
way reads only what is new.

Promises: `prefill(ids)` returns a cache holding exactly `ids[:-1]` (the last token is left for
`generate` to read, so that it has logits to start from), computed from the longest kept prefix
of `ids` plus a forward pass over the rest. Kept caches are one row each, copied out (a caller's
`generate` grows its own copy), evicted least recently used once they hold more than
`max_bytes`; a prompt that shares most of a kept one (`SUPERSEDES`) replaces it. A different
model or tokenizer needs its own `PrefixCache`.

What shares a prefix: the candidates drawn for one slot (one prompt, read once, however many
rows), the lines of a poem written one after another (each prompt is the last one plus a
line), a story's context between turns. Not thread-safe: the engine calls it under its lock.
"""

from __future__ import annotations

import copy
import inspect
from collections import OrderedDict
from typing import Any

import torch
from transformers import DynamicCache

SUPERSEDES = 0.75  # the share of a kept prompt a new one must share to take its place


def _nbytes(cache: Any) -> int:
    total = 0
    for layer in getattr(cache, "layers", ()):
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


def _common(a: tuple[int, ...], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    """Recently read prompts' KV caches, for prompts that begin the same way."""

    def __init__(self, model: Any, *, max_bytes: int = 256 * 2**20) -> None:
        self.model = model
        self.max_bytes = max_bytes
        # keyed by (adapter, prompt ids): a prompt read through one LoRA adapter has other keys
        # and values than the same prompt read by the base model
        self._kept: OrderedDict[tuple[str | None, tuple[int, ...]], tuple[Any, int]] = OrderedDict()
        self.read = 0  # prompt tokens run through the model
        takes = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._no_logits = {"logits_to_keep": 1} if takes else {}
        self.reused = 0  # prompt tokens found already read

    @property
    def bytes(self) -> int:
        return sum(size for _cache, size in self._kept.values())

    def prefill(self, ids: list[int], *, adapter: str | None = None) -> Any:
        """A fresh cache holding `ids[:-1]`, for `generate(input_ids=ids, cache=...)`, read
        with `adapter` (the LoRA adapter active on the model; None: the base model)."""
        head = ids[:-1]
        best: tuple[str | None, tuple[int, ...]] | None = None
        length = 0
        for key in self._kept:
            if key[0] != adapter:
                continue
            common = _common(key[1], head)
            if common > length:
                best, length = key, common
        cache = None
        if best is not None:
            self._kept.move_to_end(best)
            kept = self._kept[best][0]
            extra = kept.get_seq_length() - length
            # a sliding-window layer cannot be cut back safely: only an exact prefix is used
            if extra == 0 or not any(getattr(kept, "is_sliding", None) or ()):
                cache = copy.deepcopy(kept)
                cache.crop(-extra)
        if cache is None:
            cache, length = DynamicCache(config=self.model.config), 0
        if len(head) > length:
            rest = torch.tensor([head[length:]], dtype=torch.long, device=self.model.device)
            # logits for the last position only: nobody reads them, and all of them would be a
            # (tokens x vocabulary) product, a second for a 1,500-token story on a CPU
            self.model(input_ids=rest, cache=cache, use_cache=True, **self._no_logits)
        self.read += len(head) - length
        self.reused += length
        if head and (adapter, tuple(head)) not in self._kept:
            if best is not None and length >= SUPERSEDES * len(best[1]):
                # a prompt sharing most of a kept one takes its place: a story's next turn
                # shares all of the last one but the request at its end, and two entries per
                # story would halve how many stories stay warm
                del self._kept[best]
            self._keep((adapter, tuple(head)), copy.deepcopy(cache))
        return cache

    def _keep(self, key: tuple[str | None, tuple[int, ...]], cache: Any) -> None:
        size = _nbytes(cache)
        if size > self.max_bytes:
            return
        # a prompt that only extends a kept one replaces it: the kept one is its prefix
        adapter, ids = key
        for old in [
            k
            for k in self._kept
            if k[0] == adapter and len(k[1]) < len(ids) and ids[: len(k[1])] == k[1]
        ]:
            del self._kept[old]
        self._kept[key] = (cache, size)
        while self.bytes > self.max_bytes:
            self._kept.popitem(last=False)
