"""The local transformers engine, and what the batched and continuous engines share with it.

`TransformersEngine` runs one request at a time. The shared pieces: `render_prompt` (chat
template or plain text), `generation_kwargs` (sampling parameters for transformers),
`RowsDone` and `RowsStreamer` (each row's own stop condition and text stream), and
`torch_failure` (recognising out-of-memory). The interface itself is in `bot.generation.base`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from bot.generation.base import AdapterRefused, Engine, EngineJob
from bot.generation.prefix import PrefixCache
from bot.generation.types import (
    Cut,
    EngineFailure,
    EngineOutput,
    GenerationRequest,
    OutOfMemory,
    Prompt,
)

log = logging.getLogger(__name__)


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
    """Marks a row done once its job is stopped, it has written its own `max_new_tokens`, or
    (with a streamer) its text reached one of its stop strings."""

    def __init__(
        self, jobs: Sequence[EngineJob], prompt_len: int, streamer: RowsStreamer | None = None
    ) -> None:
        self.jobs = jobs
        self.prompt_len = prompt_len
        self.streamer = streamer
        self.aborted = [False] * len(jobs)

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        written = input_ids.shape[1] - self.prompt_len
        done = []
        for i, job in enumerate(self.jobs):
            if job.should_stop():
                self.aborted[i] = True
            stopped = self.streamer is not None and self.streamer.stopped[i]
            done.append(self.aborted[i] or stopped or written >= job.request.params.max_new_tokens)
        flags = torch.tensor(done, dtype=torch.bool, device=input_ids.device)
        # beam search has num_beams rows per job
        return flags.repeat_interleave(input_ids.shape[0] // len(self.jobs))


class RowsStreamer(BaseStreamer):
    """Splits each step's tokens by row and streams each row's text to its own job, up to the
    first of the row's stop strings (`texts` holds each row's text so far)."""

    def __init__(self, jobs: Sequence[EngineJob], tokenizer: Any) -> None:
        self.jobs = jobs
        self.tokenizer = tokenizer
        self.tokens: list[list[int]] = [[] for _ in jobs]
        # characters of each row's text after each of its tokens (before any stop string)
        self.ends: list[list[int]] = [[] for _ in jobs]
        self.texts = [""] * len(jobs)
        self.sent = [0] * len(jobs)
        self.closed = [False] * len(jobs)
        self.stopped = [False] * len(jobs)  # ended at a stop string
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
            text = self.tokenizer.decode(self.tokens[i], skip_special_tokens=True)
            self.ends[i].append(len(text))
            stop = _first_stop(text, job.request.params.stop)
            if stop is not None:
                text = text[:stop]
                self.stopped[i] = True
            self.texts[i] = text
            if (
                self.stopped[i]
                or token == self.tokenizer.eos_token_id
                or job.should_stop()
                or (len(self.tokens[i]) >= job.request.params.max_new_tokens)
            ):
                self.closed[i] = True
            self._flush(i, final=self.closed[i])

    def _flush(self, i: int, *, final: bool) -> None:
        text = self.texts[i]
        if not final:
            if text.endswith("\ufffd"):
                return  # a multi-byte character is still incomplete
            # hold back what may be the start of a stop string
            text = text[: len(text) - _held_back(text, self.jobs[i].request.params.stop)]
        if len(text) > self.sent[i]:
            self.jobs[i].emit(text[self.sent[i] :])
            self.sent[i] = len(text)

    def end(self) -> None:
        for i in range(len(self.jobs)):
            self._flush(i, final=True)


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Characters at the end of `text` that begin a stop string."""
    held = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:n]):
                held = n
                break
    return held


def cuts_of(
    tokens: list[int],
    ends: list[int],
    logits: Sequence[torch.Tensor],
    probes: Sequence[int | None],
    length: int,
) -> tuple[Cut, ...]:
    """Every prefix of a row's `tokens` whose text ends within its first `length` characters,
    with the model's log-probabilities (`ends`: the text's length after each token, as the
    streamer decoded it; `logits`: the row's raw logits, one per step)."""
    steps = [torch.log_softmax(step.float(), dim=-1) for step in logits[: len(tokens)]]
    ids = [p for p in probes if p is not None]

    def following(k: int) -> tuple[float | None, ...]:
        if k >= len(steps):
            return ()
        values = iter(steps[k][ids].tolist()) if ids else iter(())
        return tuple(None if p is None else next(values) for p in probes)

    cuts = [Cut(0, 0, 0.0, following(0))]
    total = 0.0
    for k, end in enumerate(ends[: len(tokens)], 1):
        total += float(steps[k - 1][tokens[k - 1]])
        if end > length:
            break
        cuts.append(Cut(k, end, total, following(k)))
    return tuple(cuts)


def torch_failure(exc: BaseException) -> type[EngineFailure]:
    """`Engine.failure` for a torch model: `OutOfMemory` for torch's out-of-memory error (after
    emptying the accelerator's cache), else `EngineFailure`."""
    if not isinstance(exc, torch.OutOfMemoryError):
        return EngineFailure
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return OutOfMemory


def each_alone(
    jobs: Sequence[EngineJob], run: Callable[[EngineJob], EngineOutput]
) -> list[EngineOutput | BaseException]:
    """`generate` for an engine that runs one job at a time: a job stopped before its turn is
    "aborted" without running, and one job's exception is its result alone."""
    results: list[EngineOutput | BaseException] = []
    for job in jobs:
        if job.should_stop():
            results.append(EngineOutput("", "aborted", 0, 0))
            continue
        try:
            results.append(run(job))
        except Exception as exc:  # one bad request must not fail the others
            results.append(exc)
    return results


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
    """A local transformers model, one request at a time, streaming token by token.

    LoRA adapters (`load_adapter`) are served beside the base model: each `generate` call
    writes one adapter's requests (or the base model's), switched under the same lock that
    keeps calls apart, so no answer is written half by one adapter and half by another.
    """

    supports_adapters = True

    def __init__(
        self, model: Any, tokenizer: Any, *, model_name: str, prefix_cache_mb: int = 256
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.max_batch = 1
        self.prefix_cache = (
            PrefixCache(model, max_bytes=prefix_cache_mb * 2**20) if prefix_cache_mb > 0 else None
        )
        self.context_length = int(getattr(model.config, "max_position_embeddings", None) or 2048)
        self._lock = threading.Lock()  # generate() is not re-entrant
        self.adapters: dict[str, str] = {}  # loaded LoRA adapters: name -> folder
        self._peft: Any = None  # the peft model wrapping `model`, once an adapter is loaded
        self._fingerprint: str | None = None

    def load_adapter(self, name: str, path: str) -> None:
        self.fingerprint()  # of the base weights, before any adapter is in the model
        with self._lock:  # between generate calls
            if name in self.adapters:
                return
            try:
                self._add_adapter(name, path)
            except Exception as exc:  # peft and safetensors raise many kinds
                # the details name folders on the host: the log has them, the message does not
                log.warning("adapter %s at %s did not load: %r", name, path, exc)
                raise AdapterRefused(
                    f"The adapter {name} could not be loaded: its files are damaged or are not "
                    f"a LoRA adapter for this model ({type(exc).__name__}; the bot's log has "
                    "the details)."
                ) from exc
            finally:
                self._use(None)  # a newly loaded adapter becomes active; the base is the default
            self.adapters[name] = path

    def _add_adapter(self, name: str, path: str) -> None:
        """Put the adapter at `path` into the model, or leave the model as it was.

        peft's own API: transformers' adapter methods want a newer peft than PyPI has. The LoRA
        layers go into `self.model` in place, so it keeps generating itself. A file that fails
        part-way (one tensor of the wrong shape) has copied some tensors already: the adapter
        is taken out again, so a refused adapter never changes what the base model writes.
        """
        from peft import PeftConfig, PeftModel
        from peft.utils import load_peft_weights, set_peft_model_state_dict

        config = PeftConfig.from_pretrained(path)
        if self._peft is None:
            fresh = PeftModel(self.model, config, adapter_name=name)  # LoRA layers, B = 0
            try:
                set_peft_model_state_dict(fresh, load_peft_weights(path, device="cpu"), name)
            except BaseException:
                fresh.unload()  # the injected layers out again: the base model as it was
                raise
            fresh.eval()
            self._peft = fresh
            return
        try:
            self._peft.load_adapter(path, adapter_name=name)
        except BaseException:
            if name in self._peft.peft_config:
                self._peft.delete_adapter(name)
            raise

    def _use(self, adapter: str | None) -> None:
        """Make `adapter` (None: the base model) the one the model writes with (under the lock)."""
        if self._peft is None:
            if adapter is not None:
                raise EngineFailure(f"adapter {adapter} is not loaded")
            return
        lora = self._peft.base_model
        if adapter is None:
            lora.disable_adapter_layers()
            return
        if adapter not in self.adapters:
            raise EngineFailure(f"adapter {adapter} is not loaded")
        lora.enable_adapter_layers()
        lora.set_adapter(adapter)

    def fingerprint(self) -> str:
        """sha256 of the base weights rounded to bfloat16: the same for a float32 and a
        bfloat16 load of one checkpoint, different for any other base."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            with torch.no_grad():
                for name, tensor in sorted(self.model.state_dict().items()):
                    if "lora_" in name:
                        continue
                    digest.update(f"{name}:{tuple(tensor.shape)};".encode())
                    rounded = tensor.detach().to("cpu", torch.bfloat16).contiguous()
                    digest.update(rounded.view(torch.int16).numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def failure(self, exc: BaseException) -> type[EngineFailure]:
        return torch_failure(exc)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, jobs: Sequence[EngineJob]) -> list[EngineOutput | BaseException]:
        return each_alone(jobs, lambda job: self._run([job])[0])

    def encode(self, request: GenerationRequest) -> torch.Tensor:
        """Token ids of the rendered prompt, trimmed from the left to leave room to answer."""
        text, templated = render_prompt(request.prompt, self.tokenizer)
        ids = self.tokenizer(text, add_special_tokens=not templated)["input_ids"]
        room = max(16, self.context_length - request.params.max_new_tokens)
        return torch.tensor([ids[-room:]], dtype=torch.long)

    def _probe_ids(self, probes: tuple[str, ...]) -> list[int | None]:
        ids = []
        for probe in probes:
            found = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
            ids.append(found[0] if len(found) == 1 else None)
        return ids

    def _run(self, jobs: Sequence[EngineJob]) -> list[EngineOutput]:
        """Decode `jobs` (equal `batch_key`s and adapters) in one `generate` call, left-padded.

        Rows reading the same prompt (candidates for one slot, or a single request) share one
        read of it, and of any kept prefix of it (`PrefixCache`). Beam search runs one job at
        a time, without streaming: transformers cannot stream it.
        """
        first = jobs[0].request.params
        beam = first.method == "beam"
        rows = [self.encode(job.request)[0].tolist() for job in jobs]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        streamer = None if beam else RowsStreamer(jobs, self.tokenizer)
        stop = RowsDone(jobs, width, streamer)
        for job in jobs:
            job.emit(job.request.prompt.prefix)
        kwargs = generation_kwargs(jobs[0].request, self.tokenizer)
        kwargs["max_new_tokens"] = max(j.request.params.max_new_tokens for j in jobs)
        if first.logprobs:
            kwargs.update(output_logits=True, return_dict_in_generate=True)
        adapter = jobs[0].request.adapter
        with self._lock, torch.inference_mode():
            self._use(adapter)
            shared = not beam and width > 1 and all(r == rows[0] for r in rows)
            if shared and self.prefix_cache is not None:
                cache = self.prefix_cache.prefill(rows[0], adapter=adapter)
                if len(rows) > 1:
                    cache.batch_repeat_interleave(len(rows))
                kwargs["cache"] = cache
            if first.seed is not None:
                torch.manual_seed(first.seed)
            out = self.model.generate(
                input_ids=input_ids.to(self.model.device),
                attention_mask=mask.to(self.model.device),
                stopping_criteria=StoppingCriteriaList([stop]),
                streamer=streamer,
                **kwargs,
            )
        sequences = out.sequences if first.logprobs else out
        probe_ids = {p: self._probe_ids(p) for p in {j.request.params.probes for j in jobs}}
        outputs = []
        for i, job in enumerate(jobs):
            params = job.request.params
            if streamer is None:
                new = sequences[i, width:].tolist()
                text = self.tokenizer.decode(new, skip_special_tokens=True)
                job.emit(text)
            else:
                new = streamer.tokens[i][: params.max_new_tokens]
                text = streamer.texts[i]
            cuts = None
            if params.logprobs and streamer is not None:  # beam search has no cuts
                row_logits = [step[i] for step in out.logits]
                probes = probe_ids[params.probes]
                cuts = cuts_of(new, streamer.ends[i], row_logits, probes, len(text))
            reason: Literal["stop", "length", "aborted"]
            if stop.aborted[i]:
                reason = "aborted"
            elif (streamer is not None and streamer.stopped[i]) or (
                new and new[-1] == self.tokenizer.eos_token_id
            ):
                reason = "stop"
            else:
                reason = "length" if len(new) >= params.max_new_tokens else "stop"
            prefix = job.request.prompt.prefix
            outputs.append(EngineOutput(prefix + text, reason, len(rows[i]), len(new), cuts))
        return outputs
