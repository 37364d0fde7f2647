"""The OpenAI-compatible remote engine: vLLM, TGI, Ollama or `transformers serve` behind the queue.

This is how a community that outgrows one machine scales out: many bot processes (or shards)
in front of one inference deployment that does its own continuous batching. Each job is one
streaming `POST {base}/chat/completions`; the jobs of one call run concurrently.

Promises: text streams per job as server-sent events arrive; a cancelled or timed-out job's
connection is closed at once (the server stops generating); connection errors, 429 and 5xx
are retried with backoff until the first token has arrived, never after (that would repeat
text); other errors fail that job only. A prompt's images go with its last user message, as
OpenAI content parts (`image_url` with a data URL); a text-only prompt sends plain strings.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Sequence
from typing import Any, Literal

import aiohttp

from bot.generation.base import Engine, EngineJob
from bot.generation.types import EngineOutput, Prompt

log = logging.getLogger(__name__)

RETRY_STATUSES = {429, 500, 502, 503, 504}


class RemoteError(RuntimeError):
    """The server refused or failed a request."""


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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model_name = model
        self.api_key = api_key
        self.max_batch = max_batch
        self.max_retries = max_retries
        self.context_length = context_length
        self.timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout, sock_read=read_timeout)
        # vLLM and TGI take `repetition_penalty`; strict servers (transformers serve) refuse
        # unknown fields, so it is dropped for good after the first such refusal.
        self.send_repetition_penalty = True

    def generate(self, jobs: Sequence[EngineJob]) -> list[EngineOutput | BaseException]:
        # The worker thread has no event loop of its own; one per call keeps this engine free
        # of shared state between threads.
        return asyncio.run(self._generate_all(jobs))

    async def _generate_all(self, jobs: Sequence[EngineJob]) -> list[EngineOutput | BaseException]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        async with aiohttp.ClientSession(headers=headers, timeout=self.timeout) as session:
            results = await asyncio.gather(
                *(self._one(session, job) for job in jobs), return_exceptions=True
            )
        return list(results)

    def body(self, job: EngineJob) -> dict[str, Any]:
        """The request body for a job (OpenAI chat completions, plus vLLM's extras)."""
        request = job.request
        p = request.params
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": chat_messages(request.prompt),
            "max_tokens": p.max_new_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": p.temperature if p.method == "sampling" else 0.0,
            "top_p": p.top_p if p.method == "sampling" else 1.0,
        }
        if p.seed is not None:
            body["seed"] = p.seed
        if p.stop:
            body["stop"] = list(p.stop)
        if p.repetition_penalty != 1.0 and self.send_repetition_penalty:
            body["repetition_penalty"] = p.repetition_penalty
        return body

    async def _one(self, session: aiohttp.ClientSession, job: EngineJob) -> EngineOutput:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._stream(session, job)
            except _Retryable as exc:
                if attempt > self.max_retries or job.should_stop():
                    raise RemoteError(str(exc)) from exc
                delay = 0.5 * 2 ** (attempt - 1)
                log.warning("remote engine: %s; retry %d in %.1f s", exc, attempt, delay)
                await asyncio.sleep(delay)

    async def _stream(self, session: aiohttp.ClientSession, job: EngineJob) -> EngineOutput:
        text: list[str] = []
        usage: dict[str, int] = {}
        reason: Literal["stop", "length", "aborted"] = "stop"
        url = f"{self.base_url}/chat/completions"
        body = self.body(job)
        try:
            async with session.post(url, json=body) as response:
                if response.status in RETRY_STATUSES:
                    raise _Retryable(f"HTTP {response.status}")
                if response.status != 200:
                    detail = (await response.text())[:300]
                    if "repetition_penalty" in detail and "repetition_penalty" in body:
                        log.info("remote engine: server refuses repetition_penalty; not sent")
                        self.send_repetition_penalty = False
                        return await self._stream(session, job)
                    raise RemoteError(f"HTTP {response.status}: {detail}")
                watcher = asyncio.create_task(_watch(job, response))
                try:
                    async for event in _events(response):
                        if event.get("usage"):
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
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            if job.should_stop():
                reason = "aborted"
            elif text:  # tokens were shown already: a retry would repeat them
                raise RemoteError(f"connection lost mid-answer: {exc!r}") from exc
            else:
                raise _Retryable(repr(exc)) from exc
        if job.should_stop():
            reason = "aborted"
        return EngineOutput(
            "".join(text),
            reason,
            int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", len(text))),
        )


class _Retryable(Exception):
    pass


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
