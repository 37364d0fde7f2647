"""The vocabulary shared by the queue, the engines, the prompts and the cogs."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]
DecodingMethod = Literal["sampling", "greedy", "beam"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Prompt:
    """A task's prompt in two forms: chat messages, and plain text for models without a template.

    `plain` is a continuation prompt for base models (the text the model should carry on from).
    """

    messages: tuple[Message, ...]
    plain: str
    # Text the answer starts with ("1." for a list): local engines write it after the prompt
    # and continue from it, which holds a small model to a format better than any instruction.
    prefix: str = ""
    # Encoded images (PNG or JPEG bytes) the last user message shows, for a vision model. Never
    # stored: `to_dict` leaves them out (a stored task keeps the image's hash, not its bytes),
    # so a prompt read back has none. Text-only engines never receive one.
    images: tuple[bytes, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "messages": [asdict(m) for m in self.messages],
            "plain": self.plain,
            "prefix": self.prefix,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Prompt:
        """The prompt `to_dict` stored; raises KeyError, TypeError or ValueError if damaged."""
        messages = tuple(Message(m["role"], str(m["content"])) for m in data["messages"])
        return cls(messages, str(data["plain"]), str(data.get("prefix") or ""))


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to decode. Requests with equal `batch_key()` can share one `generate` call."""

    max_new_tokens: int = 200
    method: DecodingMethod = "sampling"
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 50
    repetition_penalty: float = 1.2
    num_beams: int = 1
    seed: int | None = None
    min_new_tokens: int = 0  # end-of-text is ignored until then (benchmarks: equal lengths)
    # The answer ends before the first of these strings (one line: ("\n",)).
    stop: tuple[str, ...] = ()
    # Ask for `EngineOutput.cuts`: the model's log-probabilities along the answer, and those of
    # each of `probes` (strings, such as rhyme words) as the next token after every prefix.
    logprobs: bool = False
    probes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingParams:
        """Parameters `to_dict` stored; unknown keys (from another version) are ignored."""
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in known}
        for name in ("stop", "probes"):  # JSON keeps tuples as lists
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def batch_key(self) -> tuple[Any, ...]:
        """What must be equal for two requests to be decoded in one batch."""
        return (
            self.method,
            self.temperature,
            self.top_p,
            self.top_k,
            self.repetition_penalty,
            self.num_beams,
            self.seed,
            self.min_new_tokens,
            # log-probabilities keep every step's logits: not for a long answer's batch
            self.logprobs,
        )


def _new_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One piece of work for the model, on behalf of one Discord user."""

    user_id: int
    prompt: Prompt
    params: SamplingParams = field(default_factory=SamplingParams)
    timeout: float | None = None  # seconds of generation; None: the queue's default
    id: str = field(default_factory=_new_id)
    # The LoRA adapter to write with (its id, see `bot.learning.serving`); None: the base model.
    adapter: str | None = None


@dataclass(frozen=True, slots=True)
class Cut:
    """A place where an answer could be cut: after its first k tokens.

    `end`: characters of the answer's text (after the prompt's prefix) those tokens make;
    `logprob`: their summed log-probability under the model; `next`: the log-probability of
    each of the request's `probes` as the following token (None for a probe that is not one
    token, and for the last cut, after which the model was not asked).
    """

    tokens: int
    end: int
    logprob: float
    next: tuple[float | None, ...] = ()


@dataclass(frozen=True, slots=True)
class EngineOutput:
    """What an engine returns for one request."""

    text: str
    finish_reason: Literal["stop", "length", "aborted"]
    prompt_tokens: int
    completion_tokens: int
    # With `SamplingParams.logprobs`, where an engine can tell: one per prefix of the answer,
    # from no tokens to all of them. None otherwise (a remote server, say, or beam search).
    cuts: tuple[Cut, ...] | None = None


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """A finished request, as the caller sees it."""

    request_id: str
    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int
    queued_s: float
    generation_s: float
    model: str
    cuts: tuple[Cut, ...] | None = None  # see `EngineOutput.cuts`


class GenerationError(Exception):
    """A request did not produce a result. `user_message` is safe to show on Discord."""

    user_message = "Something went wrong while writing that. Please try again."

    def __init__(self, detail: str = "", *, partial_text: str = "") -> None:
        super().__init__(detail or self.user_message)
        self.partial_text = partial_text


class QueueRefused(GenerationError):
    """The request was not accepted; nothing was queued."""


class QueueFull(QueueRefused):
    user_message = "I'm busy right now: the queue is full. Please try again in a minute."


class TooManyPending(QueueRefused):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"user already has {limit} pending requests")
        self.user_message = (
            f"You already have {limit} request{'s' if limit != 1 else ''} waiting. "
            "Please wait for one to finish."
        )


class GenerationCancelled(GenerationError):
    user_message = "Cancelled."


class GenerationTimeout(GenerationError):
    user_message = "That took too long, so I stopped. Please try again, perhaps shorter."


class EngineFailure(GenerationError):
    user_message = "The model ran into a problem with that request. Please try again."


class OutOfMemory(EngineFailure):
    user_message = "That was too big for my memory right now. Please try again, perhaps shorter."


class ShuttingDown(GenerationError):
    user_message = "I'm restarting right now. Please try again in a moment."
