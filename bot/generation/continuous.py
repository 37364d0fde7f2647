"""The continuous-batching engine: transformers' `ContinuousBatchingManager` behind the queue.

The manager runs its own generation loop over a paged KV cache and admits new requests between
decoding steps, so a request that arrives while others run starts at once instead of waiting
for a whole batch. That is what a GPU wants; on a small CPU the left-padded batched engine is
faster (see `python -m tools.bench`).

Limits of transformers' implementation that this engine inherits: repetition penalty is not
applied (greedy decoding of a small model loops sooner), and sampling parameters other than
temperature, top-p and top-k are per manager, not per request. The KV cache takes at most
`memory_fraction` of free memory (transformers' own default is most of it).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from typing import Any, Literal

from bot.generation.base import AdapterRefused, EngineJob
from bot.generation.engine import TransformersEngine
from bot.generation.types import EngineOutput

log = logging.getLogger(__name__)


class ContinuousEngine(TransformersEngine):
    """Streams each request from one shared continuous-batching loop."""

    concurrent = True  # new requests join the running loop
    # transformers' continuous-batching manager runs one set of weights for every request
    supports_adapters = False

    def load_adapter(self, name: str, path: str) -> None:
        raise AdapterRefused(
            "ENGINE=continuous cannot serve adapters; use ENGINE=batched (the default) for them."
        )

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_name: str,
        max_batch: int = 32,
        memory_fraction: float = 0.1,
    ) -> None:
        super().__init__(model, tokenizer, model_name=model_name, prefix_cache_mb=0)
        self.max_batch = max_batch
        self.memory_fraction = memory_fraction
        self._manager: Any = None
        self._routes: dict[str, queue.Queue[Any]] = {}
        self._start_lock = threading.Lock()
        self._router: threading.Thread | None = None
        self._closed = threading.Event()

    def _ensure_started(self) -> Any:
        with self._start_lock:
            if self._manager is None:
                from transformers import GenerationConfig
                from transformers.generation.configuration_utils import ContinuousBatchingConfig

                # Sampling on, so per-request temperature/top-p/top-k processors exist; greedy
                # requests ask for top_k=1.
                config = GenerationConfig(
                    do_sample=True,
                    temperature=0.8,
                    top_p=0.95,
                    top_k=50,
                    eos_token_id=self.tokenizer.eos_token_id,
                    pad_token_id=self.tokenizer.pad_token_id,
                    max_new_tokens=256,
                )
                cb = ContinuousBatchingConfig(
                    max_memory_percent=self.memory_fraction,
                    # Tokens per step; left to itself it sizes for a GPU and can leave no
                    # room for the cache within a small memory fraction.
                    max_batch_tokens=256,
                    max_requests_per_batch=self.max_batch,
                    per_request_processors=True,
                )
                manager = self.model.init_continuous_batching(
                    generation_config=config, continuous_batching_config=cb
                )
                manager.start()
                self._manager = manager
                self._router = threading.Thread(
                    target=self._route, name="continuous-router", daemon=True
                )
                self._router.start()
            return self._manager

    def _route(self) -> None:
        """Deliver the manager's outputs to the calls waiting for them."""
        manager = self._manager
        while not self._closed.is_set():
            result = manager.get_result(timeout=0.1)
            if result is None:
                fatal = manager.background_thread_status.fatal_error
                if fatal is not None:
                    log.error("continuous batching loop died: %r", fatal)
                    for waiting in list(self._routes.values()):
                        waiting.put(RuntimeError(f"continuous batching loop died: {fatal!r}"))
                    return
                continue
            route = self._routes.get(result.request_id)
            if route is not None:
                route.put(result)

    def generate(self, jobs: Sequence[EngineJob]) -> list[EngineOutput | BaseException]:
        manager = self._ensure_started()
        inbox: queue.Queue[Any] = queue.Queue()
        ids = {}
        for job in jobs:
            request = job.request
            p = request.params
            sampling = {"temperature": p.temperature, "top_p": p.top_p, "top_k": p.top_k}
            if p.method != "sampling":
                sampling = {"temperature": 1.0, "top_p": 1.0, "top_k": 1}
            self._routes[request.id] = inbox
            manager.add_request(
                self.encode(request)[0].tolist(),
                request_id=request.id,
                max_new_tokens=p.max_new_tokens,
                streaming=True,
                **sampling,
            )
            ids[request.id] = job
            job.emit(request.prompt.prefix)
        outputs: dict[str, EngineOutput | BaseException] = {}
        sent = dict.fromkeys(ids, 0)
        try:
            while len(outputs) < len(jobs):
                for request_id, job in ids.items():
                    if request_id not in outputs and job.should_stop():
                        manager.cancel_request(request_id)
                        outputs[request_id] = EngineOutput("", "aborted", 0, sent[request_id])
                try:
                    item = inbox.get(timeout=0.05)
                except queue.Empty:
                    continue
                if isinstance(item, BaseException):
                    raise item
                if item.request_id in outputs:
                    continue
                job = ids[item.request_id]
                text = self.tokenizer.decode(item.generated_tokens, skip_special_tokens=True)
                if len(text) > sent[item.request_id] and not text.endswith("\ufffd"):
                    job.emit(text[sent[item.request_id] :])
                    sent[item.request_id] = len(text)
                if item.error:
                    outputs[item.request_id] = RuntimeError(item.error)
                elif item.is_finished():
                    new = len(item.generated_tokens)
                    reason: Literal["stop", "length"] = (
                        "length" if new >= job.request.params.max_new_tokens else "stop"
                    )
                    outputs[item.request_id] = EngineOutput(text, reason, len(item.prompt_ids), new)
        finally:
            for request_id in ids:
                self._routes.pop(request_id, None)
        return [outputs[job.request.id] for job in jobs]

    def close(self) -> None:
        """Stop the loop and free its KV cache."""
        self._closed.set()
        if self._manager is not None:
            self._manager.stop(block=True)
            self.model.destroy_cached_continuous_batching_manager()
            self._manager = None
