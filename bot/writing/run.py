"""Run one task: queue it, report its progress, retry a miss, and save the finished text.

Every command that writes with the model goes through `write`, so waiting, streaming, retries
and saving behave the same everywhere. Progress is reported through an `edit(content)`
callback, paced at most once per `EDIT_INTERVAL_S`; how it is shown is the caller's business.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bot.generation.queue import GenerationHandle, GenerationQueue
from bot.generation.types import (
    GenerationError,
    GenerationRequest,
    GenerationResult,
    Prompt,
    SamplingParams,
    ShuttingDown,
)
from bot.learning.serving import Judge
from bot.services import Services
from bot.store import NewGeneration, RequestEnded, Requests

log = logging.getLogger(__name__)

# Discord allows about five edits per message per five seconds; one a second leaves room for
# the final edit and for other messages in the channel.
EDIT_INTERVAL_S = 1.0
STREAM_PREVIEW_CHARS = 1900
# Said when a finished text is empty once cleaned (or once its ungrounded parts are dropped).
NOTHING_USABLE = "The model came back with nothing usable. Please try again."
# Said when the bot stops (a restart) before a journalled request is answered: it stays in the
# journal, and the next start writes the answer into the same message.
PAUSED = "⏸ I'm restarting. I'll finish this when I'm back."

# Shows one line of progress ("⏳ #2 in queue…", "✍️ The text so far"); must not raise.
Edit = Callable[[str], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Task:
    """One thing to write: what to ask the model, and how to finish and judge the answer."""

    command: str
    title: str
    prompt: Prompt
    params: SamplingParams
    inputs: dict[str, Any] = field(default_factory=dict)
    # Turns the raw model text into what is shown; may return "" when nothing usable came back.
    finish: Callable[[str], str] = str.strip
    # More tries when an answer misses the form: `accept` judges a finished text,
    # `retry(text)` gives a firmer prompt (or None), `combine(text, next_raw)` keeps the
    # best; by default the next answer if it is accepted, else the text so far. At most
    # `tries` more tries.
    accept: Callable[[str], bool] | None = None
    retry: Callable[[str], Prompt | None] | None = None
    combine: Callable[[str, str], str] | None = None
    tries: int = 1
    # What a final text that still misses the form lacks, said plainly ("3 of 5 ideas…"),
    # shown beside the text and never as part of it; None when nothing is missing.
    shortfall: Callable[[str], str | None] | None = None
    # More prompts written side by side with the first (an acrostic's lines); their texts are
    # joined with the first one's by `join` before `finish`.
    extra: tuple[Prompt, ...] = ()
    # How the extra prompts are decoded (a note of one line stops at its line end); default
    # `params`.
    extra_params: SamplingParams | None = None
    join: Callable[[list[str]], str] = "\n".join
    # Written in slots instead (a poem line by line): `compose(drafts)` draws candidates with
    # `drafts.draw` (its first draw must ask for `prompt` and `params`) and returns the raw
    # text, which `finish` then cleans. `accept`, `retry` and `extra` are not used.
    compose: Callable[[Drafts], Awaitable[str]] | None = None
    # Asks the vision lane (`Services.queue_for`): its prompts carry an image.
    vision: bool = False
    # A picture shown with the answer (an art critique's measurements), PNG; not stored: a
    # task rebuilt from its inputs has none, and the message keeps the one it shows.
    picture: bytes | None = None

    def best(self, text: str, next_raw: str) -> str:
        if self.combine is not None:
            return self.combine(text, next_raw)
        following = self.finish(next_raw)
        return following if self.accept is not None and self.accept(following) else text


@dataclass(frozen=True, slots=True)
class Where:
    """Who asked and where the answer goes."""

    user_id: int
    channel_id: int
    guild_id: int | None


@dataclass(frozen=True, slots=True)
class Written:
    """A finished, saved generation, ready to be shown."""

    output_id: int
    generation_id: int
    text: str
    title: str
    model: str
    seconds: float
    note: str | None = None  # what the text lacks (see `Task.shortfall`)


@dataclass(frozen=True, slots=True)
class Answered:
    """A generation that was saved and shown in a message."""

    generation_id: int
    message_id: int
    text: str


class Pacer:
    """Spaces the edits of one message at least `interval` apart, across attempts."""

    def __init__(self, interval: float = EDIT_INTERVAL_S) -> None:
        self.interval = interval
        self.last = 0.0

    @property
    def due(self) -> bool:
        return time.monotonic() - self.last >= self.interval

    async def wait(self) -> None:
        """Sleep until the next edit is allowed."""
        await asyncio.sleep(max(0.0, self.last + self.interval - time.monotonic()))


async def show_progress(
    handle: GenerationHandle, edit: Edit, *, pacer: Pacer | None = None, stream: bool = True
) -> GenerationResult:
    """Report the queue position while waiting, then (with `stream`) the text as it grows, via
    `edit(content)`.

    Edits at most once per `pacer.interval` (shared when one message shows several attempts).
    Returns the result or raises the `GenerationError`; cancelling the caller cancels the
    request.
    """
    pacer = pacer or Pacer()

    async def paced(content: str) -> None:
        await edit(content)
        pacer.last = time.monotonic()

    shown_position = -1
    try:
        while not handle.started:
            position = handle.position
            if position != shown_position and position > 0 and pacer.due:
                wait = handle.estimated_wait()
                await paced(f"⏳ #{position} in queue (about {max(1, round(wait))} s)")
                shown_position = position
            await handle.wait_started(timeout=pacer.interval)
        async for _chunk in handle:
            if stream and pacer.due:
                preview = handle.text.strip()
                if len(preview) > STREAM_PREVIEW_CHARS:
                    preview = "…" + preview[-STREAM_PREVIEW_CHARS:]
                if preview:
                    await paced(f"✍️ {preview}")
    except asyncio.CancelledError:
        handle.cancel()
        raise
    return await handle.result()


class Drafts:
    """The candidates of a task written in slots, drawn through the queue (see `Task.compose`).

    `rank(texts)` scores candidate texts by the server's reward model (higher: more to its
    taste), or is None when the server has none in force.

    `draw(prompt, params, n)` returns the answers of `n` requests decoded side by side (the
    first draw includes the task's own queued request, whose place in the queue is shown while
    it waits); a candidate that failed is left out, and if all failed the first error is
    raised. `show(text)` shows the text written so far, paced. `result(text)` is the whole
    task's result: every candidate's tokens, and the time from the first start to now.
    """

    def __init__(
        self,
        queue: GenerationQueue,
        first: GenerationHandle,
        edit: Edit,
        pacer: Pacer,
        judge: Judge | None = None,
    ) -> None:
        self.queue = queue
        self.judge = judge
        self.first: GenerationHandle | None = first
        self.request = first.request
        self.edit = edit
        self.pacer = pacer
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.queued_s = 0.0
        self.started: float | None = None
        self.model = ""

    async def draw(self, prompt: Prompt, params: SamplingParams, n: int) -> list[GenerationResult]:
        handles: list[GenerationHandle] = []
        first, self.first = self.first, None
        if first is not None:
            if first.request.prompt == prompt and first.request.params == params:
                handles.append(first)
            else:
                first.cancel()
        # parts of an accepted task: not new requests for the per-user limit
        handles += [
            self.queue.submit(
                GenerationRequest(
                    self.request.user_id, prompt, params, adapter=self.request.adapter
                ),
                count_for_user=False,
            )
            for _ in range(n - len(handles))
        ]
        try:
            if first is not None and handles[0] is first:
                await show_progress(first, self.edit, pacer=self.pacer, stream=False)
            outcomes = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
        except BaseException:
            for handle in handles:
                handle.cancel()
            raise
        results = [o for o in outcomes if isinstance(o, GenerationResult)]
        if not results:
            error = outcomes[0]
            raise error if isinstance(error, BaseException) else GenerationError()
        for result in results:
            self.prompt_tokens += result.prompt_tokens
            self.completion_tokens += result.completion_tokens
            self.model = result.model
        if self.started is None:
            self.queued_s = results[0].queued_s
            self.started = time.monotonic() - max(r.generation_s for r in results)
        return results

    @property
    def rank(self) -> Callable[[list[str]], Awaitable[list[float]]] | None:
        if self.judge is None:
            return None
        judge, prompt = self.judge, self.request.prompt

        async def rank(texts: list[str]) -> list[float]:
            return await judge(prompt, texts)

        return rank

    async def show(self, text: str) -> None:
        if self.pacer.due and text.strip():
            self.pacer.last = time.monotonic()
            await self.edit(f"✍️ {text.strip()}")

    def result(self, text: str) -> GenerationResult:
        return GenerationResult(
            request_id=self.request.id,
            text=text,
            finish_reason="stop",
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            queued_s=self.queued_s,
            generation_s=time.monotonic() - (self.started or time.monotonic()),
            model=self.model,
        )


def _added(first: GenerationResult, then: GenerationResult) -> GenerationResult:
    """`then`, with the costs of both attempts."""
    return replace(
        then,
        prompt_tokens=first.prompt_tokens + then.prompt_tokens,
        completion_tokens=first.completion_tokens + then.completion_tokens,
        queued_s=first.queued_s + then.queued_s,
        generation_s=first.generation_s + then.generation_s,
    )


async def complete(
    queue: GenerationQueue,
    task: Task,
    handle: GenerationHandle,
    user_id: int,
    edit: Edit,
    pacer: Pacer | None = None,
    judge: Judge | None = None,
) -> tuple[str, GenerationResult, bool]:
    """Finish `task`: its text, the (combined) result, and whether it took another try.

    The first attempt's `GenerationError` propagates; a failed later try keeps what it had.
    A task written in slots (`compose`) fails as a whole: a poem missing its middle is no poem.
    `judge` (the server's reward model) helps choose among its candidates.
    """
    pacer = pacer or Pacer()
    if task.compose is not None:
        drafts = Drafts(queue, handle, edit, pacer, judge)
        with queue.held(handle):  # one request toward the user's limit, all rounds long
            raw = await task.compose(drafts)
        return task.finish(raw), drafts.result(raw), False
    # Parts of an accepted task are not new requests for the per-user limit.
    extras = [
        queue.submit(
            GenerationRequest(
                user_id, p, task.extra_params or task.params, adapter=handle.request.adapter
            ),
            count_for_user=False,
        )
        for p in task.extra
    ]
    try:
        result = await show_progress(handle, edit, pacer=pacer)
        parts = [await h.result() for h in extras]
    except BaseException:
        for h in extras:
            h.cancel()
        raise
    if parts:
        result = replace(
            result,
            text=task.join([result.text] + [p.text for p in parts]),
            completion_tokens=result.completion_tokens + sum(p.completion_tokens for p in parts),
            prompt_tokens=result.prompt_tokens + sum(p.prompt_tokens for p in parts),
        )
    text = task.finish(result.text)
    retried = False
    for _ in range(task.tries if task.accept and task.retry else 0):
        assert task.accept is not None and task.retry is not None
        firmer = None if task.accept(text) else task.retry(text)
        if firmer is None:
            break
        try:
            # part of a task already accepted: not a new request for the per-user limit
            retry = queue.submit(
                GenerationRequest(user_id, firmer, task.params, adapter=handle.request.adapter),
                count_for_user=False,
            )
            following = await show_progress(retry, edit, pacer=pacer)
        except GenerationError as error:  # keep what we have
            log.info("retry of %s failed: %r", task.command, error)
            break
        text = task.best(text, following.text)
        result = _added(result, following)
        retried = True
    return text, result, retried


async def write(
    services: Services,
    task: Task,
    handle: GenerationHandle,
    where: Where,
    edit: Edit,
    *,
    fail: Edit | None = None,
    pacer: Pacer | None = None,
    output_id: int | None = None,
    refines_id: int | None = None,
    refine_kind: str | None = None,
    request_id: int | None = None,
) -> Written | None:
    """Report `handle`'s progress through `edit`, then save the finished text.

    With `output_id`, the text is saved as a new alternative of that output (a refinement);
    otherwise as a new output. On failure the user is told why through `fail` (default:
    `edit`) and nothing is saved; returns None.

    With `request_id` (its row in the request journal), the answer is saved and the request
    marked saved in one transaction, each start of the model is counted (when
    RESUME_MAX_ATTEMPTS is set), and a failure ends the request as failed, except a shutdown:
    the request stays pending for the next start, and the message says so.
    """
    fail = fail or edit
    journal = services.requests
    # the starts matter only to RESUME_MAX_ATTEMPTS: no write on every request without it
    counting = (
        asyncio.create_task(_count_start(services, handle, request_id))
        if request_id is not None and services.settings.resume_max_attempts
        else None
    )
    try:
        judge = None if task.vision else services.adapters.judge_for(where.guild_id)
        text, result, retried = await complete(
            services.queue_for(task), task, handle, where.user_id, edit, pacer, judge
        )
    except ShuttingDown:
        log.info("%s for %s paused by a shutdown", task.command, where.user_id)
        await fail(PAUSED if request_id is not None else ShuttingDown.user_message)
        return None
    except GenerationError as error:
        log.info("%s for %s failed: %r", task.command, where.user_id, error)
        await _said_then_ended(fail, error.user_message, journal, request_id, type(error).__name__)
        return None
    finally:
        if counting is not None:
            counting.cancel()
    if not text.strip():
        log.info(
            "%s for %s came back empty (%s, %d characters before clean-up)",
            task.command,
            where.user_id,
            result.finish_reason,
            len(result.text),
        )
        await _said_then_ended(fail, NOTHING_USABLE, journal, request_id, "nothing usable")
        return None
    note = task.shortfall(text) if task.shortfall is not None else None
    record = NewGeneration(
        guild_id=where.guild_id,
        channel_id=where.channel_id,
        user_id=where.user_id,
        command=task.command,
        prompt={
            "inputs": task.inputs,
            **task.prompt.to_dict(),
            "retried": retried,
            "title": task.title,
            **({"note": note} if note else {}),
        },
        params=task.params.to_dict(),
        # which adapter wrote it, beside the model: votes on adapters' answers can be told apart
        model=written_by(result.model, handle.request.adapter),
        output=text,
        finish_reason=result.finish_reason,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        queued_ms=round(result.queued_s * 1000),
        generation_ms=round(result.generation_s * 1000),
        refines_id=refines_id,
        refine_kind=refine_kind,
    )
    try:
        if output_id is None:
            output_id, generation_id = await services.store.save_output(
                record, request_id=request_id
            )
        else:
            generation_id = await services.store.add_alternative(
                output_id, record, request_id=request_id
            )
    except RequestEnded:
        # answered, cancelled or given up elsewhere meanwhile: the answer is not kept twice
        log.info("request %s had ended; its second answer is dropped", request_id)
        return None
    return Written(
        output_id,
        generation_id,
        text,
        task.title,
        written_by(result.model, handle.request.adapter),
        result.generation_s,
        note,
    )


def written_by(model: str, adapter: str | None) -> str:
    """The model's name, with the adapter that wrote with it ("model+adapter")."""
    return f"{model}+{adapter}" if adapter else model


async def _said_then_ended(
    fail: Edit, text: str, journal: Requests, request_id: int | None, error: str
) -> None:
    """Say why a request failed, then end it in the journal: killed in between, the next
    start says it again rather than leave the message waiting."""
    try:
        await fail(text)
    finally:
        if request_id is not None:
            await journal.end(request_id, "failed", error)


async def _count_start(services: Services, handle: GenerationHandle, request_id: int) -> None:
    """Count the model's start on a journalled request (bounds a crash loop on it)."""
    await handle.wait_started()
    if handle.started_at is not None:
        await services.requests.started(request_id)
