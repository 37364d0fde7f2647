"""The queue's promises, with a scripted engine."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bot.generation.queue import GenerationQueue
from bot.generation.types import (
    EngineFailure,
    GenerationCancelled,
    GenerationTimeout,
    QueueFull,
    ShuttingDown,
    TooManyPending,
)
from tests.fakes import ScriptedEngine, request


async def test_streams_chunks_and_result() -> None:
    engine = ScriptedEngine()
    async with GenerationQueue(engine) as queue:
        handle = queue.submit(request(1, "one two three"))
        chunks = [chunk async for chunk in handle]
        result = await handle.result()
    assert chunks == ["one", " two", " three"]
    assert result.text == "one two three"
    assert result.completion_tokens == 3
    assert result.model == "scripted"


async def test_runs_in_a_worker_thread_and_loop_stays_responsive() -> None:
    engine = ScriptedEngine(delay=0.05)
    async with GenerationQueue(engine) as queue:
        handle = queue.submit(request(1, "a b c d e f"))
        ticks = 0
        while not handle.done:
            await asyncio.sleep(0.01)
            ticks += 1
        await handle.result()
    assert engine.thread_names and threading.current_thread().name not in engine.thread_names
    assert ticks >= 10  # the loop kept ticking while the engine worked


async def test_round_robin_across_users() -> None:
    engine = ScriptedEngine()
    engine.gate.clear()
    async with GenerationQueue(engine, max_pending_per_user=10) as queue:
        first = queue.submit(request(1, "a0"))
        await first.wait_started()  # user 1's first request holds the engine
        handles = [queue.submit(request(1, f"a{i}")) for i in range(1, 5)]
        handles.append(queue.submit(request(2, "b0")))
        handles.append(queue.submit(request(3, "c0")))
        handles.append(queue.submit(request(2, "b1")))
        positions = {h.request.prompt.plain: h.position for h in handles}
        engine.gate.set()
        for h in [first, *handles]:
            await h.result()
    assert engine.served == ["a0", "a1", "b0", "c0", "a2", "b1", "a3", "a4"]
    # positions promised while waiting match the order actually served
    order = engine.served[1:]
    assert positions == {name: order.index(name) + 1 for name in positions}


async def test_bounds_and_per_user_limit() -> None:
    engine = ScriptedEngine()
    engine.gate.clear()
    async with GenerationQueue(engine, max_queue=2, max_pending_per_user=2) as queue:
        running = queue.submit(request(1, "x"))
        await running.wait_started()
        queue.submit(request(1, "y"))
        with pytest.raises(TooManyPending) as too_many:
            queue.submit(request(1, "z"))
        assert "You already have 2 requests waiting" in too_many.value.user_message
        queue.submit(request(2, "y"))
        with pytest.raises(QueueFull) as full:
            queue.submit(request(3, "z"))
        assert "queue is full" in full.value.user_message
        assert queue.waiting == 2
        engine.gate.set()


async def test_cancel_while_waiting() -> None:
    engine = ScriptedEngine()
    engine.gate.clear()
    async with GenerationQueue(engine) as queue:
        running = queue.submit(request(1, "first"))
        await running.wait_started()
        waiting = queue.submit(request(2, "never runs"))
        assert waiting.position == 1
        waiting.cancel()
        assert waiting.position == 0
        with pytest.raises(GenerationCancelled):
            await waiting.result()
        engine.gate.set()
        await running.result()
    assert engine.served == ["first"]


async def test_cancel_while_running_stops_at_next_token() -> None:
    engine = ScriptedEngine(delay=0.02)
    words = " ".join(f"w{i}" for i in range(500))
    async with GenerationQueue(engine) as queue:
        handle = queue.submit(request(1, words))
        got = []
        with pytest.raises(GenerationCancelled) as cancelled:
            async for chunk in handle:
                got.append(chunk)
                if len(got) == 3:
                    handle.cancel()
        assert len(got) < 10
        assert cancelled.value.partial_text.startswith("w0 w1 w2")
        after = queue.submit(request(1, "still works"))
        assert (await after.result()).text == "still works"


async def test_cancelling_the_caller_task_cancels_the_request() -> None:
    engine = ScriptedEngine(delay=0.02)
    words = " ".join(f"w{i}" for i in range(500))
    async with GenerationQueue(engine) as queue:
        handle = queue.submit(request(1, words))

        async def consume() -> None:
            async for _ in handle:
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(GenerationCancelled):
            await handle.result()


async def test_timeout_stops_a_running_request() -> None:
    engine = ScriptedEngine(delay=0.02)
    words = " ".join(f"w{i}" for i in range(500))
    async with GenerationQueue(engine, timeout=0.2) as queue:
        handle = queue.submit(request(1, words))
        with pytest.raises(GenerationTimeout) as timed_out:
            await handle.result()
        assert 2 <= len(timed_out.value.partial_text.split()) < 30
        assert "took too long" in timed_out.value.user_message


async def test_engine_error_fails_that_request_and_the_worker_goes_on() -> None:
    engine = ScriptedEngine()
    async with GenerationQueue(engine) as queue:
        bad = queue.submit(request(1, "raise"))
        crash = queue.submit(request(2, "crash"))
        good = queue.submit(request(3, "fine"))
        with pytest.raises(EngineFailure, match="bad request"):
            await bad.result()
        with pytest.raises(EngineFailure, match="engine exploded"):
            await crash.result()
        assert (await good.result()).text == "fine"


async def test_hung_engine_is_abandoned_and_a_new_thread_serves() -> None:
    engine = ScriptedEngine()
    try:
        async with GenerationQueue(engine, timeout=0.2, hang_grace=0.2) as queue:
            hung = queue.submit(request(1, "hang"))
            with pytest.raises(GenerationTimeout):
                await hung.result()
            after = queue.submit(request(2, "after the hang"))
            assert (await after.result()).text == "after the hang"
            assert len(engine.thread_names) == 2
    finally:
        engine.release.set()


async def test_shutdown_ends_pending_requests() -> None:
    engine = ScriptedEngine(delay=0.02)
    words = " ".join(f"w{i}" for i in range(500))
    queue = GenerationQueue(engine)
    queue.start()
    running = queue.submit(request(1, words))
    await running.wait_started()
    waiting = [queue.submit(request(u, "later")) for u in (2, 3)]
    await asyncio.wait_for(queue.close(), 5)
    for handle in [running, *waiting]:
        with pytest.raises(ShuttingDown):
            await asyncio.wait_for(handle.result(), 1)
        assert "restarting" in ShuttingDown.user_message
    with pytest.raises(ShuttingDown):
        queue.submit(request(4, "too late"))


async def test_batches_up_to_max_batch() -> None:
    engine = ScriptedEngine(max_batch=3)
    engine.gate.clear()
    async with GenerationQueue(engine, max_pending_per_user=10) as queue:
        first = queue.submit(request(1, "first"))
        await first.wait_started()
        rest = [queue.submit(request(u, f"r{u}")) for u in range(2, 7)]
        assert [h.position for h in rest] == [1, 2, 3, 4, 5]
        engine.gate.set()
        for handle in [first, *rest]:
            await handle.result()
    assert engine.calls == [1, 3, 2]


async def test_concurrent_engine_takes_new_requests_while_others_run() -> None:
    engine = ScriptedEngine(delay=0.05, max_batch=3)
    engine.concurrent = True
    words = " ".join(f"w{i}" for i in range(40))
    async with GenerationQueue(engine, max_pending_per_user=10) as queue:
        long = queue.submit(request(1, words))
        await long.wait_started()
        short = queue.submit(request(2, "quick one"))
        assert (await short.result()).text == "quick one"
        assert not long.done  # the short request did not wait for the long one
        extra = [queue.submit(request(u, "x y")) for u in (3, 4, 5)]
        await asyncio.sleep(0.01)
        assert sum(h.started for h in extra) == 2  # max_batch=3 in flight, one is the long one
        await long.result()
        for handle in extra:
            await handle.result()


async def test_parts_of_an_accepted_task_are_never_refused() -> None:
    engine = ScriptedEngine()
    async with GenerationQueue(engine, max_queue=2, max_pending_per_user=1) as queue:
        first = queue.submit(request(1, "a b"))
        with pytest.raises(TooManyPending):
            queue.submit(request(1, "c"))
        # past the user's limit and the queue's bound: refusing them would lose the task
        parts = [queue.submit(request(1, f"part {i}"), count_for_user=False) for i in range(3)]
        with pytest.raises(QueueFull):  # while they wait, a new task finds the queue full
            queue.submit(request(2, "d"))
        for handle in [first, *parts]:
            await handle.result()


async def test_a_started_tasks_parts_go_before_the_same_users_new_tasks() -> None:
    # one worker, one request per call: the order of calls is the order served
    engine = ScriptedEngine(delay=0.0)
    engine.gate.clear()
    async with GenerationQueue(engine, max_pending_per_user=5) as queue:
        blocker = queue.submit(request(9, "first"))
        await asyncio.sleep(0.05)
        assert blocker.started
        new = [queue.submit(request(1, f"new {i}")) for i in range(2)]
        parts = [queue.submit(request(1, f"part {i}"), count_for_user=False) for i in range(2)]
        other = queue.submit(request(2, "someone else"))
        assert [p.position for p in parts] == [1, 3]  # round-robin across users still holds
        assert [n.position for n in new] == [4, 5]
        engine.gate.set()
        for handle in [blocker, *new, *parts, other]:
            await handle.result()
        order = engine.served
        assert order.index("part 0") < order.index("part 1") < order.index("new 0")
        assert order.index("new 0") < order.index("new 1")


async def test_a_task_written_in_rounds_counts_once_toward_its_users_limit() -> None:
    async with GenerationQueue(ScriptedEngine(delay=0.0), max_pending_per_user=1) as queue:
        first = queue.submit(request(1, "a poem"))
        with queue.held(first):
            parts = [queue.submit(request(1, "a line"), count_for_user=False) for _ in range(3)]
            assert queue.pending_for(1) == 1
            with pytest.raises(TooManyPending):
                queue.submit(request(1, "another poem"))
            for handle in [first, *parts]:
                await handle.result()
            assert queue.pending_for(1) == 1  # between its rounds too
            with pytest.raises(TooManyPending):
                queue.submit(request(1, "another poem"))
        assert queue.pending_for(1) == 0
        await queue.submit(request(1, "another poem")).result()
