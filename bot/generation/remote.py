"""The OpenAI-compatible remote engine: vLLM, TGI, Ollama or `transformers serve` behind the queue.

This is how a community that outgrows one machine scales out: many bot processes (or shards)
in front of one inference deployment that does its own continuous batching. Each job is one
streaming `POST {base}/chat/completions`; the jobs of one call run concurrently.

Promises: text streams per job as server-sent events arrive; a cancelled or timed-out job's
connection is closed at once (the server stops generating); connection errors, 429 and 5xx
are retried with backoff until the first token has arrived, never after (that would repeat
text); other errors fail that job only. Several servers: `bot.generation.pool`. A prompt's
images go with its last user message, as OpenAI content parts (`image_url` with a data URL);
a text-only prompt sends plain strings.

Each server's dialect (see `dialect`): with `dialect="auto"` the server is probed once, before
the first request (a few GETs, seconds at most), and the answer kept; a server that answers
but is not recognised is spoken to in plain OpenAI, said once in the log; one that does not
answer is spoken to in plain OpenAI meanwhile and probed again a minute later. A field beyond
OpenAI's own that the server refuses as unknown (400 or 422 naming it) is dropped for good and
the request sent again, said once in the log.
A parameter the server will not apply is said once per engine in the log. Token counts come
from the server's usage chunk; without one, chunks are counted and the prompt estimated.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal

import aiohttp

from bot.generation.base import Engine, EngineJob
from bot.generation.dialect import DIALECTS, FALLBACK, Dialect, Unreachable, detect
from bot.generation.types import EngineOutput, Prompt

log = logging.getLogger(__name__)

RETRY_STATUSES = {429, 500, 502, 503, 504}
REPROBE_SECONDS = 60.0
# How servers say a field is unknown (transformers serve, vLLM and pydantic, OpenAI); a 400 that
# names a field without one of these is about its value, and the field is kept.
UNKNOWN_FIELD = ("unexpected", "unrecognized", "unrecognised", "unknown", "not permitted", "extra")
# Fields beyond OpenAI's own that this engine may send: a server that refuses one by name
# gets the request again without it.
EXTRA_FIELDS = ("repetition_penalty", "repeat_penalty", "frequency_penalty", "top_k", "seed")


class RemoteError(RuntimeError):
    """The server refused or failed a request."""


class ServerUnavailable(RemoteError):
    """The server failed a request before its first token: no connection, a timeout, 429 or
    5xx. Another try (later, or on another server) may work. `fault`: the server is at fault
    (everything but 429, which is a busy server, not a broken one)."""

    def __init__(self, detail: str, *, fault: bool = True) -> None:
        super().__init__(detail)
        self.fault = fault


class StreamBroken(RemoteError):
    """The connection was lost after text was streamed: the server is at fault, and a plain
    retry would repeat what was shown."""


class OpenAIEngine(Engine):
    """Streams chat completions from an OpenAI-compatible server."""

    concurrent = True  # the server batches; new requests need not wait for running ones

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_batch: int = 32,
        max_retries: int = 2,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        context_length: int = 8192,
        dialect: str = "auto",
        probe_timeout: float = 5.0,
    ) -> None:
        if dialect != "auto" and dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}; use auto or one of {list(DIALECTS)}")
        self.base_url = base_url.rstrip("/")
        self.model_name = model
        self.api_key = api_key
        self.max_batch = max_batch
        self.max_retries = max_retries
        self.context_length = context_length
        self.probe_timeout = min(probe_timeout, connect_timeout)
        self.timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout, sock_read=read_timeout)
        # None until the server has been probed (`dialect="auto"`); then for good.
        self.dialect: Dialect | None = None if dialect == "auto" else DIALECTS[dialect]
        # Fields the server refused by name: never sent again.
        self.dropped: set[str] = set()
        self._warned: set[str] = set()
        # Calls overlap in the queue's worker threads: one probes, the others wait for it; the
        # second lock guards `dropped` and `_warned`.
        self._probe_lock = threading.Lock()
        self._next_probe = 0.0  # monotonic time before which an unanswered probe is not repeated
        self._lock = threading.Lock()
        self._probe_alock: asyncio.Lock | None = None  # `settled_dialect`'s, made in its loop

    def generate(self, jobs: Sequence[EngineJob]) -> list[EngineOutput | BaseException]:
        # The worker thread has no event loop of its own; one per call keeps this engine free
        # of shared state between threads.
        dialect = self._settled_dialect()
        return asyncio.run(self._generate_all(jobs, dialect))

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _settled_dialect(self) -> Dialect:
        """The server's dialect, probing it on first use (blocking; a few seconds at most).

        A server that did not answer is spoken to in plain OpenAI and probed again only after
        `REPROBE_SECONDS`: calls waiting on the lock must not each pay a probe's timeouts."""
        with self._probe_lock:
            if self._due():
                self._probed(asyncio.run(self._probe()))
            return self.dialect or DIALECTS[FALLBACK]

    async def settled_dialect(self) -> Dialect:
        """`_settled_dialect` for a caller that owns an event loop (the pool) and calls this
        from that loop only: probes without blocking it, one probe at a time."""
        if self._probe_alock is None:
            self._probe_alock = asyncio.Lock()
        async with self._probe_alock:
            if self._due():
                self._probed(await self._probe())
            return self.dialect or DIALECTS[FALLBACK]

    def _due(self) -> bool:
        """Whether the server is to be probed now (under one of the probe locks)."""
        return self.dialect is None and time.monotonic() >= self._next_probe

    def _probed(self, dialect: Dialect | None) -> None:
        """Keep a probe's answer; None (no answer) waits `REPROBE_SECONDS` for the next."""
        self.dialect = dialect
        if dialect is None:
            self._next_probe = time.monotonic() + REPROBE_SECONDS

    def probe_again(self) -> None:
        """Let the next request probe a server that did not answer before (it is back)."""
        self._next_probe = 0.0

    async def _probe(self) -> Dialect | None:
        """The detected dialect, the fallback if the server is not recognised, or None if it
        did not answer (probed again next call)."""
        timeout = aiohttp.ClientTimeout(total=self.probe_timeout * 2)
        async with aiohttp.ClientSession(headers=self._headers(), timeout=timeout) as session:
            try:
                found = await detect(session, self.base_url, timeout=self.probe_timeout)
            except Unreachable as exc:
                log.debug("remote engine: no answer from %s to probes: %s", self.base_url, exc)
                return None
            except Exception:  # a probe must never cost a request: plain OpenAI instead
                log.warning(
                    "remote engine: probing %s failed; speaking plain OpenAI. Set "
                    "OPENAI_DIALECT to choose.",
                    self.base_url,
                    exc_info=True,
                )
                return DIALECTS[FALLBACK]
        if found.name is None:
            log.warning(
                "remote engine: could not tell which server is at %s (%s); speaking plain "
                "OpenAI, with no repetition penalty or top_k. Set OPENAI_DIALECT to choose.",
                self.base_url,
                found.evidence,
            )
            return DIALECTS[FALLBACK]
        dialect = DIALECTS[found.name]
        log.info(
            "remote engine: %s at %s (%s); repetition penalty sent as %s",
            dialect.server,
            self.base_url,
            found.evidence,
            dialect.penalty_field or "nothing",
        )
        if found.slots == 1:
            log.warning(
                "remote engine: llama-server at %s has 1 slot, so requests queue one at a "
                "time; start it with -np N for N at once",
                self.base_url,
            )
        return dialect

    async def _generate_all(
        self, jobs: Sequence[EngineJob], dialect: Dialect
    ) -> list[EngineOutput | BaseException]:
        async with aiohttp.ClientSession(headers=self._headers(), timeout=self.timeout) as session:
            results = await asyncio.gather(
                *(self._one(session, job, dialect) for job in jobs), return_exceptions=True
            )
        return list(results)

    def body(self, job: EngineJob, dialect: Dialect | None = None) -> dict[str, Any]:
        """The request body for a job: OpenAI chat completions, plus the fields `dialect`
        (by default the settled one, else plain OpenAI) reads, less those the server refused.
        Warns once per parameter that the server will not apply."""
        dialect = dialect or self.dialect or DIALECTS[FALLBACK]
        request = job.request
        p = request.params
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": chat_messages(request.prompt),
            "max_tokens": p.max_new_tokens,
            "stream": True,
            "temperature": p.temperature if p.method == "sampling" else 0.0,
            "top_p": p.top_p if p.method == "sampling" else 1.0,
        }
        if dialect.ask_usage:
            body["stream_options"] = {"include_usage": True}
        if p.seed is not None:
            body["seed"] = p.seed
        if p.stop:
            body["stop"] = list(p.stop)
        body.update(dialect.sampling_fields(p))
        with self._lock:
            for name in self.dropped:
                body.pop(name, None)
        # Only a settled dialect's gaps are worth a warning: an unanswered probe is retried.
        if self.dialect is not None:
            for parameter, warning in dialect.ignored(p):
                self._warn_once(parameter, warning)
        return body

    def _warn_once(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        log.warning("remote engine (%s): %s", self.base_url, message)

    async def _one(
        self, session: aiohttp.ClientSession, job: EngineJob, dialect: Dialect
    ) -> EngineOutput:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.stream_once(session, job, dialect)
            except ServerUnavailable as exc:
                if attempt > self.max_retries or job.should_stop():
                    raise RemoteError(str(exc)) from exc
                delay = 0.5 * 2 ** (attempt - 1)
                log.warning("remote engine: %s; retry %d in %.1f s", exc, attempt, delay)
                await asyncio.sleep(delay)

    async def stream_once(
        self, session: aiohttp.ClientSession, job: EngineJob, dialect: Dialect
    ) -> EngineOutput:
        """One try of `job` on this server, in `session`, without retries (the pool's unit).

        Raises `ServerUnavailable` before the first token, `StreamBroken` after it, and
        `RemoteError` for a refusal that another try would meet again (400, 401, 404...)."""
        text: list[str] = []
        usage: dict[str, Any] = {}
        reason: Literal["stop", "length", "aborted"] = "stop"
        url = f"{self.base_url}/chat/completions"
        body = self.body(job, dialect)
        try:
            async with session.post(url, json=body) as response:
                if response.status in RETRY_STATUSES:
                    raise ServerUnavailable(f"HTTP {response.status}", fault=response.status != 429)
                if response.status != 200:
                    detail = (await response.text())[:300]
                    refused = [f for f in EXTRA_FIELDS if f in body and f in detail]
                    unknown = any(word in detail.lower() for word in UNKNOWN_FIELD)
                    if response.status in (400, 422) and refused and unknown:
                        self._drop(refused)
                        return await self.stream_once(session, job, dialect)
                    raise RemoteError(f"HTTP {response.status}: {detail}")
                watcher = asyncio.create_task(_watch(job, response))
                try:
                    async for event in _events(response):
                        if isinstance(event.get("usage"), dict):
                            usage = event["usage"]
                        for choice in event.get("choices") or []:
                            piece = (choice.get("delta") or {}).get("content") or ""
                            if piece:
                                text.append(piece)
                                job.emit(piece)
                            if choice.get("finish_reason") == "length":
                                reason = "length"
                finally:
                    watcher.cancel()
        # A payload error is a stream cut short by a server that died (chunked, never ended).
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            if job.should_stop():
                reason = "aborted"
            elif text:  # tokens were shown already: a retry would repeat them
                raise StreamBroken(f"connection lost mid-answer: {exc!r}") from exc
            else:
                raise ServerUnavailable(repr(exc)) from exc
        if job.should_stop():
            reason = "aborted"
        if usage:
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or len(text))
        else:
            # No usage chunk (a server that ignores stream_options, or a stream cut short):
            # a content chunk is about one token, and the prompt is estimated.
            prompt_tokens = self.count_tokens(prompt_text(job.request.prompt))
            completion_tokens = len(text)
        return EngineOutput("".join(text), reason, prompt_tokens, completion_tokens)

    def _drop(self, fields: list[str]) -> None:
        """Never send `fields` again: the server refused them."""
        with self._lock:
            new = [f for f in fields if f not in self.dropped]
            self.dropped.update(new)
        for name in new:
            log.warning(
                "remote engine (%s): the server refuses %s; not sent again", self.base_url, name
            )


def chat_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """OpenAI chat messages for a prompt. Each content is a plain string, except that a prompt
    with images sends its last user message as content parts: its text, then one `image_url`
    part per image, as a base64 data URL (raises ValueError if there is no user message)."""
    messages: list[dict[str, Any]] = [
        {"role": m.role, "content": m.content} for m in prompt.messages
    ]
    if prompt.images:
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        if not users:
            raise ValueError("the prompt has images but no user message to show them in")
        last = messages[users[-1]]
        last["content"] = [{"type": "text", "text": last["content"]}] + [
            {"type": "image_url", "image_url": {"url": data_url(image)}} for image in prompt.images
        ]
    return messages


def prompt_text(prompt: Prompt) -> str:
    """The text of a prompt's messages, for estimating its tokens."""
    return "\n".join(m.content for m in prompt.messages)


def image_mime(image: bytes) -> str:
    """The MIME type of encoded image bytes, from their magic bytes (a file's name or a client's
    word may lie): JPEG, GIF or WebP when they say so, else PNG."""
    if image.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if image.startswith(b"GIF8"):
        return "image/gif"
    if image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


def data_url(image: bytes) -> str:
    """A base64 `data:` URL for encoded image bytes."""
    return f"data:{image_mime(image)};base64,{base64.b64encode(image).decode('ascii')}"


async def _watch(job: EngineJob, response: aiohttp.ClientResponse) -> None:
    """Close the response as soon as the job is cancelled or times out."""
    # Polled: should_stop() also checks the deadline, which no event signals.
    while not job.should_stop():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    response.close()


async def _events(response: aiohttp.ClientResponse) -> Any:
    """Decode server-sent events (`data: {...}` lines) until `[DONE]`."""
    async for raw in response.content:
        line = raw.decode("utf-8", errors="replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            yield json.loads(data)
        except json.JSONDecodeError:
            log.warning("remote engine: undecodable event %r", data[:100])
