"""The local transformers engine, and what the batched and continuous engines share with it.

`TransformersEngine` runs one request at a time. The shared pieces: `render_prompt` (chat
template or plain text), `generation_kwargs` (sampling parameters for transformers),
`RowsDone` and `RowsStreamer` (each row's own stop condition and text stream), and
`torch_failure` (recognising out-of-memory). The interface itself is in `bot.generation.base`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Literal

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from bot.generation.base import Engine, EngineJob
from bot.generation.types import EngineFailure, EngineOutput, GenerationRequest, OutOfMemory, Prompt


def render_prompt(prompt: Prompt, tokenizer: Any) -> tuple[str, bool]:
    """The prompt text for this tokenizer, and whether it came from the chat template.

    Models without a chat template (a plain base model such as gpt2) get the plain form. The
    prompt's prefix, if any, comes last: the model continues from it.
    """
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text + prompt.prefix, True
    return prompt.plain + prompt.prefix, False


class RowsDone(StoppingCriteria):
    """Marks a row done once its job is stopped or it has written its own `max_new_tokens`."""

    def __init__(self, jobs: Sequence[EngineJob], prompt_len: int) -> None:
        self.jobs = jobs
        self.prompt_len = prompt_len
        self.aborted = [False] * len(jobs)

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        written = input_ids.shape[1] - self.prompt_len
        done = []
        for i, job in enumerate(self.jobs):
            if job.should_stop():
                self.aborted[i] = True
            done.append(self.aborted[i] or written >= job.request.params.max_new_tokens)
        flags = torch.tensor(done, dtype=torch.bool, device=input_ids.device)
        # beam search has num_beams rows per job
        return flags.repeat_interleave(input_ids.shape[0] // len(self.jobs))


class RowsStreamer(BaseStreamer):
    """Splits each step's tokens by row and streams each row's text to its own job."""

    def __init__(self, jobs: Sequence[EngineJob], tokenizer: Any) -> None:
        self.jobs = jobs
        self.tokenizer = tokenizer
        self.tokens: list[list[int]] = [[] for _ in jobs]
        self.sent = [0] * len(jobs)
        self.closed = [False] * len(jobs)
        self.skipped_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self.skipped_prompt:
            self.skipped_prompt = True
            return
        for i, token in enumerate(value.reshape(-1).tolist()):
            if self.closed[i]:
                continue  # finished rows are fed padding until the batch ends
            job = self.jobs[i]
            self.tokens[i].append(int(token))
            if (
                token == self.tokenizer.eos_token_id
                or job.should_stop()
                or (len(self.tokens[i]) >= job.request.params.max_new_tokens)
            ):
                self.closed[i] = True
            self._flush(i, final=self.closed[i])

    def _flush(self, i: int, *, final: bool) -> None:
        text = self.tokenizer.decode(self.tokens[i], skip_special_tokens=True)
        if not final and text.endswith("\ufffd"):
            return  # a multi-byte character is still incomplete
        if len(text) > self.sent[i]:
            self.jobs[i].emit(text[self.sent[i] :])
            self.sent[i] = len(text)

    def end(self) -> None:
        for i in range(len(self.jobs)):
            self._flush(i, final=True)


def torch_failure(exc: BaseException) -> type[EngineFailure]:
    """`Engine.failure` for a torch model: `OutOfMemory` for torch's out-of-memory error (after
    emptying the accelerator's cache), else `EngineFailure`."""
    if not isinstance(exc, torch.OutOfMemoryError):
        return EngineFailure
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return OutOfMemory


def generation_kwargs(request: GenerationRequest, tokenizer: Any) -> dict[str, Any]:
    """transformers `generate` arguments for a request's sampling parameters."""
    p = request.params
    kwargs: dict[str, Any] = {
        "max_new_tokens": p.max_new_tokens,
        "repetition_penalty": p.repetition_penalty,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if p.min_new_tokens:
        kwargs["min_new_tokens"] = p.min_new_tokens
    if p.method == "sampling":
        kwargs.update(do_sample=True, temperature=p.temperature, top_p=p.top_p, top_k=p.top_k)
    elif p.method == "beam":
        kwargs.update(do_sample=False, num_beams=max(2, p.num_beams), early_stopping=True)
    else:
        kwargs.update(do_sample=False)
    return kwargs


class TransformersEngine(Engine):
    """A local transformers model, one request at a time, streaming token by token."""

    def __init__(self, model: Any, tokenizer: Any, *, model_name: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.max_batch = 1
        self.context_length = int(getattr(model.config, "max_position_embeddings", None) or 2048)
        self._lock = threading.Lock()  # generate() is not re-entrant

    def failure(self, exc: BaseException) -> type[EngineFailure]:
        return torch_failure(exc)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, jobs: Sequence[EngineJob]) -> list[EngineOutput | BaseException]:
        results: list[EngineOutput | BaseException] = []
        for job in jobs:
            if job.should_stop():
                results.append(EngineOutput("", "aborted", 0, 0))
                continue
            try:
                results.append(self._generate_one(job))
            except Exception as exc:  # one bad request must not fail the others
                results.append(exc)
        return results

    def encode(self, request: GenerationRequest) -> torch.Tensor:
        """Token ids of the rendered prompt, trimmed from the left to leave room to answer."""
        text, templated = render_prompt(request.prompt, self.tokenizer)
        ids = self.tokenizer(text, add_special_tokens=not templated)["input_ids"]
        room = max(16, self.context_length - request.params.max_new_tokens)
        return torch.tensor([ids[-room:]], dtype=torch.long)

    def _generate_one(self, job: EngineJob) -> EngineOutput:
        request = job.request
        input_ids = self.encode(request).to(self.model.device)
        stop = RowsDone([job], input_ids.shape[1])
        kwargs = generation_kwargs(request, self.tokenizer)
        streamer = None if request.params.method == "beam" else RowsStreamer([job], self.tokenizer)
        job.emit(request.prompt.prefix)
        with self._lock, torch.inference_mode():
            if request.params.seed is not None:
                torch.manual_seed(request.params.seed)
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                stopping_criteria=StoppingCriteriaList([stop]),
                streamer=streamer,
                **kwargs,
            )
        new = out[0, input_ids.shape[1] :].tolist()
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        if streamer is None:
            job.emit(text)
        text = request.prompt.prefix + text
        eos = self.tokenizer.eos_token_id
        reason: Literal["stop", "length", "aborted"]
        if stop.aborted[0]:
            reason = "aborted"
        elif new and new[-1] != eos and len(new) >= request.params.max_new_tokens:
            reason = "length"
        else:
            reason = "stop"
        return EngineOutput(text, reason, int(input_ids.shape[1]), len(new))
