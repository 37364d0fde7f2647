"""The pool of generation servers: three real `transformers serve` processes (tiny model), one
killed mid-answer and started again; and small real HTTP servers on loopback for what must be
steered exactly (least loaded, the cap, a death after the first token, readmission, cancel)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.generation.pool import PooledEngine
from bot.generation.queue import GenerationHandle, GenerationQueue
from bot.generation.types import (
    EngineFailure,
    GenerationCancelled,
    GenerationRequest,
    SamplingParams,
)
from bot.prompts import poem_prompt
from tests.servers import Served

TOPICS = [
    "autumn rain",
    "a lighthouse",
    "cats",
    "the sea",
    "snow",
    "a train",
    "bread",
    "owls",
    "a bridge",
    "fog",
    "lanterns",
    "moss",
]


def req(user: int, topic: str, tokens: int = 16) -> GenerationRequest:
    params = SamplingParams(max_new_tokens=tokens, method="greedy", repetition_penalty=1.0)
    return GenerationRequest(user_id=user, prompt=poem_prompt(topic, "haiku"), params=params)


async def until(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Wait for `condition` (a state the pool promises to reach); `limit` only stops a hang."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


# -- real servers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three(tiny_model_dir: Path) -> Iterator[list[Served]]:
    """Three `transformers serve` processes with the tiny model, started together."""
    # three servers on a small machine: one thread each, not one per core each
    servers = [Served(tiny_model_dir, threads=1) for _ in range(3)]
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()
        for server in servers:
            server.wait_stopped()


@pytest.mark.slow
async def test_a_server_killed_mid_answer_loses_nothing_and_comes_back(
    three: list[Served],
    tiny_model_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.generation.pool")
    pool = PooledEngine(
        [s.url for s in three],
        str(tiny_model_dir),
        max_concurrency=2,
        eject_after=2,
        health_seconds=0.2,
        dialect="transformers",
    )
    try:
        async with GenerationQueue(pool, max_pending_per_user=100) as queue:
            # the first is long: the kill lands well inside it
            handles = [queue.submit(req(i, t, 128 if i == 0 else 32)) for i, t in enumerate(TOPICS)]
            streamed: dict[str, list[str]] = {h.request.id: [] for h in handles}
            readers = [asyncio.create_task(read(h, streamed[h.request.id])) for h in handles]
            # 6 run at once, 2 on each server; the first goes to the first server (idle servers
            # take turns from the first), which is the victim
            victim = 0
            await until(lambda: bool(handles[0].text), "the first request's first words")
            three[victim].kill()  # mid-answer
            three[victim].start()  # on the same port; it takes seconds to answer
            results = [await h.result() for h in handles]
            await asyncio.gather(*readers)
            # (it may be back already: its restart races the last answers)
            await until(lambda: pool.stats()[victim].ejections > 0, "the killed server ejected")

            # every request answered in full, once: what streamed is exactly the answer that
            # a server wrote from start to end (nothing shown twice, nothing missing)
            for handle, result in zip(handles, results, strict=True):
                assert "".join(streamed[handle.request.id]) == result.text
                assert result.completion_tokens == handle.request.params.max_new_tokens
                assert result.finish_reason == "length"
            stats = pool.stats()
            others = [s for i, s in enumerate(stats) if i != victim]
            assert sum(s.served for s in stats) == len(TOPICS)
            assert all(s.served > 0 for s in others)  # they took its load
            assert not any(s.ejected for s in others)
            assert f"ejected {three[victim].url}" in caplog.text

            # started again on its port: the health check lets it back in, and it serves
            await asyncio.to_thread(three[victim].wait_ready)
            await until(lambda: not pool.stats()[victim].ejected, "the server readmitted")
            assert f"readmitted {three[victim].url} (health check passed" in caplog.text
            served = pool.stats()[victim].served
            again = [queue.submit(req(i, t)) for i, t in enumerate(TOPICS[:3])]
            assert [(await h.result()).completion_tokens for h in again] == [16, 16, 16]
            assert pool.stats()[victim].served == served + 1  # least loaded: one each
    finally:
        pool.close()


async def read(handle: GenerationHandle, into: list[str]) -> None:
    with contextlib.suppress(Exception):
        async for chunk in handle:
            into.append(chunk)


# -- stand-ins -----------------------------------------------------------------------------------

MODELS = {"object": "list", "data": [{"id": "m", "owned_by": "vllm"}]}


@dataclass
class StandIn:
    """A real HTTP server on loopback that answers chat requests as its test scripts it.

    `words`: what it streams; `down`: 503 to everything (health checks too); `die_after`:
    after that many words it drops the connection, as a killed server does; `hold`: while
    cleared, a stream waits after its first word. It records each chat body it got, how many
    streams are open at once (and the most ever), and streams the client closed."""

    words: tuple[str, ...] = ("one", " two", " three")
    down: bool = False
    die_after: int | None = None
    hold: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    open: int = 0
    most: int = 0
    closed_by_client: int = 0
    asked: int = 0

    def __post_init__(self) -> None:
        self.hold.set()


def event(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


@contextlib.asynccontextmanager
async def stand_in(state: StandIn) -> AsyncIterator[StandIn]:
    async def models(request: web.Request) -> web.Response:
        if state.down:
            return web.json_response({"error": "down"}, status=503)
        return web.json_response(MODELS)

    async def chat(request: web.Request) -> web.StreamResponse:
        state.asked += 1
        if state.down:
            return web.json_response({"error": "down"}, status=503)
        state.bodies.append(await request.json())
        state.open += 1
        state.most = max(state.most, state.open)
        try:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for k, word in enumerate(state.words):
                if k == state.die_after:
                    assert request.transport is not None
                    request.transport.close()  # gone, mid-answer
                    return response
                await response.write(event({"choices": [{"index": 0, "delta": {"content": word}}]}))
                while not state.hold.is_set():  # held: keep checking that the client is there
                    await asyncio.sleep(0.02)
                    if request.transport is None or request.transport.is_closing():
                        state.closed_by_client += 1
                        return response
            end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
            await response.write(event(end))
            await response.write(b"data: [DONE]\n\n")
            return response
        finally:
            state.open -= 1

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    try:
        yield state
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def pool_of(
    *states: StandIn, **options: Any
) -> AsyncIterator[tuple[PooledEngine, GenerationQueue]]:
    """A pool over stand-ins for `states` (vLLM's dialect: no probes), in a queue."""
    async with contextlib.AsyncExitStack() as stack:
        for state in states:
            await stack.enter_async_context(stand_in(state))
        settings: dict[str, Any] = {"health_seconds": 0.05, "dialect": "vllm"} | options
        pool = PooledEngine([s.url for s in states], "m", **settings)
        stack.callback(pool.close)
        queue = await stack.enter_async_context(GenerationQueue(pool, max_pending_per_user=100))
        yield pool, queue


async def answers(queue: GenerationQueue, n: int) -> list[str]:
    return [(await queue.submit(req(i, "rain")).result()).text for i in range(n)]


async def test_idle_servers_take_turns_and_the_least_loaded_gets_the_next() -> None:
    a, b, c = StandIn(), StandIn(), StandIn()
    async with pool_of(a, b, c, max_concurrency=2) as (pool, queue):
        assert await answers(queue, 3) == ["one two three"] * 3
        assert [len(s.bodies) for s in (a, b, c)] == [1, 1, 1]  # a tie: round-robin

        for s in (a, b, c):
            s.hold.clear()
        held = []
        for i in range(6):  # one at a time: the queue frees a call's slots when all of it ends
            held.append(queue.submit(req(i, "rain")))
            await held[-1].wait_started()
        await until(lambda: a.open == b.open == c.open == 2, "two on each")
        waiting = queue.submit(req(9, "rain"))
        await asyncio.sleep(0.2)  # time for a wrong turn to show: the cap holds it back
        assert not waiting.started and a.most == b.most == c.most == 2
        b.hold.set()  # b's two finish: b is now the least loaded
        assert (await waiting.result()).text == "one two three"
        assert len(b.bodies) == 1 + 2 + 1
        a.hold.set()
        c.hold.set()
        assert [(await h.result()).text for h in held] == ["one two three"] * 6
        assert all(s.in_flight == 0 and s.served == 3 for s in pool.stats()[::2])
        assert max(s.most for s in (a, b, c)) == 2


async def test_a_failure_before_the_first_word_is_retried_elsewhere_and_ejects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.generation.pool")
    sick, well = StandIn(down=True), StandIn()
    async with pool_of(sick, well, eject_after=2, health_seconds=30) as (pool, queue):
        assert await answers(queue, 4) == ["one two three"] * 4
        await until(lambda: pool.stats()[0].ejected, "the sick server ejected")
        assert pool.stats()[0].consecutive >= 2 and pool.stats()[1].served == 4
        assert "HTTP 503" in pool.stats()[0].last_error
        assert "ejected " + sick.url in caplog.text


async def test_with_every_server_down_a_request_is_tried_on_each_then_fails_politely() -> None:
    a, b = StandIn(down=True), StandIn(down=True)
    async with pool_of(a, b, eject_after=1, max_retries=0) as (pool, queue):
        await until(lambda: all(s.ejected for s in pool.stats()), "both ejected")
        assert pool.max_batch == 64  # none admitted: all of them are tried rather than none
        with pytest.raises(EngineFailure) as failure:
            await queue.submit(req(1, "rain")).result()
    assert (a.asked, b.asked) == (1, 1)
    assert "2 tries failed" in str(failure.value)
    assert failure.value.user_message.startswith("The model ran into a problem")


async def test_an_ejected_server_is_readmitted_when_its_health_check_passes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.generation.pool")
    sick, well = StandIn(down=True), StandIn()
    async with pool_of(sick, well, eject_after=1) as (pool, queue):
        await until(lambda: pool.stats()[0].ejected, "ejected by a failed health check")
        assert pool.max_batch == 32  # one server's worth: the queue holds the rest
        assert await answers(queue, 3) == ["one two three"] * 3
        assert sick.asked == 0  # never sent work while ejected
        sick.down = False
        await until(lambda: not pool.stats()[0].ejected, "readmitted")
        assert pool.max_batch == 64
        assert f"readmitted {sick.url} (health check passed: HTTP 200)" in caplog.text
        assert await answers(queue, 2) == ["one two three"] * 2
        assert len(sick.bodies) == 1  # the least loaded again, in turn


async def test_a_server_dying_after_the_first_word_is_replayed_without_repeating() -> None:
    dying, well = StandIn(die_after=1), StandIn()
    async with pool_of(dying, well) as (pool, queue):
        handle = queue.submit(req(1, "rain"))  # to the first server: it says "one", and dies
        chunks = [chunk async for chunk in handle]
        result = await handle.result()
    assert chunks == ["one", " two", " three"]  # "one" shown once, the rest from the replay
    assert result.text == "one two three" and result.completion_tokens == 3
    assert (len(dying.bodies), len(well.bodies)) == (1, 1)
    assert pool.stats()[0].failures == 1 and pool.stats()[1].served == 1


async def test_a_replay_that_writes_otherwise_fails_politely_with_what_was_shown() -> None:
    dying, other = StandIn(words=("uno", " dos"), die_after=1), StandIn()
    async with pool_of(dying, other) as (_, queue):
        handle = queue.submit(req(1, "rain"))
        with pytest.raises(EngineFailure) as failure:
            await handle.result()
    assert failure.value.partial_text == "uno"  # nothing of the other answer was shown
    assert "could not be resumed" in str(failure.value)
    assert failure.value.user_message.startswith("The model ran into a problem")


async def test_a_replay_that_ends_short_of_what_was_shown_fails_politely() -> None:
    # the first server showed "one two" and died; the other's whole answer is only "one"
    dying, short = StandIn(die_after=2), StandIn(words=("one",))
    async with pool_of(dying, short) as (_, queue):
        handle = queue.submit(req(1, "rain"))
        with pytest.raises(EngineFailure) as failure:
            await handle.result()
    assert failure.value.partial_text == "one two"  # what was shown stays; nothing else saved
    assert "could not be resumed" in str(failure.value)


async def test_sampled_requests_get_a_seed_so_a_replay_can_match() -> None:
    a = StandIn()
    async with pool_of(a) as (_, queue):
        sampled = GenerationRequest(1, poem_prompt("rain", "haiku"), SamplingParams(seed=None))
        await queue.submit(sampled).result()
        await queue.submit(req(1, "rain")).result()
    assert isinstance(a.bodies[0]["seed"], int)
    assert "seed" not in a.bodies[1]  # greedy: nothing to seed


async def test_cancel_closes_the_upstream_stream() -> None:
    a, b = StandIn(), StandIn()
    a.hold.clear()
    async with pool_of(a, b) as (pool, queue):
        handle = queue.submit(req(1, "rain"))
        await until(lambda: bool(handle.text), "the first word")
        handle.cancel()
        with pytest.raises(GenerationCancelled):
            await handle.result()
        await until(lambda: a.closed_by_client == 1, "the server saw the client go")
        await until(lambda: pool.stats()[0].in_flight == 0, "the slot freed")
        assert pool.stats()[0].failures == 0  # a cancel is no fault of the server's
