"""What each OpenAI-compatible server reads beyond OpenAI's own fields, and which one is there.

Chat completions are the same everywhere; the sampling parameters outside OpenAI's API are not.
The repetition penalty is `repeat_penalty` to llama.cpp, `repetition_penalty` to vLLM, and
`transformers serve` takes it only as `frequency_penalty` (which it turns back into a
repetition penalty); OpenAI's API and Ollama's /v1 endpoint have no field for it. `DIALECTS`
is that table; `detect` finds out which server answers at a base URL.

Every dialect takes `seed`, `stop`, `temperature`, `top_p` and `max_tokens` (OpenAI's own seed
is best effort). No dialect is asked for beam search: beam requests are decoded greedily.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bot.generation.types import SamplingParams

FALLBACK = "openai"  # plain OpenAI fields only: no server refuses them


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one kind of server is spoken to."""

    name: str  # the OPENAI_DIALECT value
    server: str  # for the log
    penalty_field: str | None  # the field that carries the repetition penalty; None: none does
    top_k: bool  # whether `top_k` is sent (and read)
    # `stream_options.include_usage`: asked for where the server reads it
    ask_usage: bool = True
    # What the server will not apply, by SamplingParams name: the warning for each.
    ignores: dict[str, str] = field(default_factory=dict)

    def sampling_fields(self, p: SamplingParams) -> dict[str, Any]:
        """The fields beyond OpenAI's own that carry `p` to this server."""
        fields: dict[str, Any] = {}
        if p.repetition_penalty != 1.0 and self.penalty_field == "frequency_penalty":
            # transformers serve (5.x) sets repetition_penalty = 1 + frequency_penalty; the
            # rounding makes 1 + (1.2 - 1) come back as exactly 1.2
            fields["frequency_penalty"] = round(p.repetition_penalty - 1.0, 6)
        elif p.repetition_penalty != 1.0 and self.penalty_field:
            fields[self.penalty_field] = p.repetition_penalty
        if self.top_k and p.method == "sampling" and p.top_k > 0:
            fields["top_k"] = p.top_k
        return fields

    def ignored(self, p: SamplingParams) -> list[tuple[str, str]]:
        """(parameter, warning) for each parameter of `p` this server will not apply."""
        found = []
        if p.repetition_penalty != 1.0 and "repetition_penalty" in self.ignores:
            found.append(("repetition_penalty", self.ignores["repetition_penalty"]))
        if p.method == "sampling" and p.top_k > 0 and "top_k" in self.ignores:
            found.append(("top_k", self.ignores["top_k"]))
        if p.method == "beam":
            found.append(("num_beams", "no server is asked for beam search; decoded greedily"))
        return found


DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in (
        Dialect(
            "openai",
            "a plain OpenAI API",
            penalty_field=None,
            top_k=False,
            ignores={
                "repetition_penalty": "OpenAI's API has no repetition penalty (and refuses "
                "fields it does not know): not sent. Set OPENAI_DIALECT if the server takes one",
                "top_k": "OpenAI's API has no top_k: not sent",
            },
        ),
        Dialect("vllm", "vLLM", penalty_field="repetition_penalty", top_k=True),
        Dialect("llama.cpp", "llama.cpp", penalty_field="repeat_penalty", top_k=True),
        Dialect(
            "ollama",
            "Ollama",
            penalty_field=None,
            top_k=False,
            # Its /v1 endpoint decodes a fixed set of OpenAI fields and drops the rest.
            ignores={
                "repetition_penalty": "Ollama's /v1 endpoint drops repeat_penalty; set "
                "`PARAMETER repeat_penalty` in the model's Modelfile instead",
                "top_k": "Ollama's /v1 endpoint drops top_k; set `PARAMETER top_k` in the "
                "model's Modelfile instead",
            },
        ),
        Dialect(
            "transformers",
            "transformers serve",
            penalty_field="frequency_penalty",
            top_k=False,
            # It sends usage in its last chunk anyway, and logs stream_options as unsupported.
            ask_usage=False,
            ignores={
                "top_k": "transformers serve refuses top_k in a chat request: not sent; the "
                "model's generation_config.json applies"
            },
        ),
    )
}

# `owned_by` in GET /v1/models, where a server names itself there. (Elsewhere it names the
# model's owner, "openai" among them on any server: not a sign of OpenAI's API, which the
# fallback and the host cover anyway.)
_OWNERS = {
    "vllm": "vllm",
    "sglang": "vllm",  # reads vLLM's extra fields
    "llamacpp": "llama.cpp",  # llama-server
    "me": "llama.cpp",  # llama-cpp-python's llama_cpp.server
}


# What a probe that got no HTTP answer raises.
_NO_ANSWER = (aiohttp.ClientError, TimeoutError)


class Unreachable(Exception):
    """No probe got an HTTP answer: the server is down or the URL is wrong."""


@dataclass(frozen=True, slots=True)
class Found:
    """What `detect` learned: the dialect (None: not recognised), and how it knows."""

    name: str | None
    evidence: str
    slots: int | None = None  # llama-server's parallel slots (`-np`), from GET /props


def server_root(base_url: str) -> str:
    """The server's root for the probes outside /v1: `base_url` without its `/v1`, else the
    scheme and host."""
    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        return base[: -len("/v1")]
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}"


async def detect(session: aiohttp.ClientSession, base_url: str, *, timeout: float = 5.0) -> Found:
    """Which server answers at `base_url` (an OpenAI base URL, usually ending in /v1).

    Sends only GETs, each bounded by `timeout`: first GET /props (llama-server), /api/version
    (Ollama), /version (vLLM) at the root and {base_url}/models (its `owned_by`) together, then,
    only if none of them told, GET /openapi.json (`transformers serve` lists /load_model there).
    A host of OpenAI's is known without a request. Returns `Found(None, ...)` when the server
    answered but said nothing recognisable; raises `Unreachable` when no probe got an answer.
    """
    host = (urlsplit(base_url).hostname or "").lower()
    if host == "api.openai.com" or host.endswith(".openai.azure.com"):
        return Found("openai", f"the host {host}")
    root = server_root(base_url)
    limit = aiohttp.ClientTimeout(total=timeout)
    answers = await asyncio.gather(
        *(
            _get_json(session, url, limit)
            for url in (f"{root}/props", f"{root}/api/version", f"{root}/version")
        ),
        _get_json(session, f"{base_url.rstrip('/')}/models", limit),
        return_exceptions=True,
    )
    for answer in answers:
        if isinstance(answer, BaseException) and not isinstance(answer, _NO_ANSWER):
            raise answer
    if all(isinstance(a, BaseException) for a in answers):
        raise Unreachable(repr(answers[0]))
    props, ollama, version, models = (None if isinstance(a, BaseException) else a for a in answers)
    if isinstance(props, dict) and {"default_generation_settings", "total_slots"} & set(props):
        slots = props.get("total_slots")
        return Found("llama.cpp", "GET /props", slots if isinstance(slots, int) else None)
    if isinstance(ollama, dict) and "version" in ollama:
        return Found("ollama", "GET /api/version")
    owners = _owners(models)
    for owner in sorted(owners):
        if owner in _OWNERS:
            return Found(_OWNERS[owner], f"owned_by={owner!r} in GET /v1/models")
    if isinstance(version, dict) and "version" in version:
        return Found("vllm", "GET /version")
    try:
        spec = await _get_json(session, f"{root}/openapi.json", limit)
    except _NO_ANSWER:
        spec = None
    paths = spec.get("paths") if isinstance(spec, dict) else None
    if isinstance(paths, dict) and "/load_model" in paths:
        return Found("transformers", "/load_model in GET /openapi.json")
    return Found(None, "no answer to /props, /api/version, /version or /openapi.json told")


async def _get_json(session: aiohttp.ClientSession, url: str, limit: aiohttp.ClientTimeout) -> Any:
    """The JSON a GET of `url` answers with 200; None for any other answer. Raises
    aiohttp.ClientError or TimeoutError when there is no answer."""
    async with session.get(url, timeout=limit, allow_redirects=False) as response:
        if response.status != 200:
            return None
        try:
            return json.loads(await response.read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None


def _owners(models: Any) -> set[str]:
    """The `owned_by` values of a GET /v1/models answer, lower-cased."""
    data = models.get("data") if isinstance(models, dict) else None
    if not isinstance(data, list):
        return set()
    return {
        str(entry["owned_by"]).lower()
        for entry in data
        if isinstance(entry, dict) and entry.get("owned_by")
    }
