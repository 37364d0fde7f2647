"""The generation queue: the one door to the model.

Promises:
- `submit(request)` never blocks. It returns a `GenerationHandle` (an async iterator of text
  chunks, with `position`, `cancel()` and `result()`), or raises `QueueRefused`: `QueueFull`
  when `max_queue` requests are waiting, `TooManyPending` when the user already has
  `max_pending_per_user` requests waiting or running. A refused request leaves no trace.
  The parts of a task already accepted (`count_for_user=False`) are never refused.
- Fair: waiting requests are served round-robin across users, so one user's ten requests
  do not starve another user's one. Within a user, first come first served, except that the
  parts of a task already started go before that user's new tasks (in their own order), so
  that one person's several poems finish one after another instead of all advancing a line
  per round and none finishing early.
- Up to `engine.max_batch` requests are handed to the engine together; the engine decides how
  to run them (one by one, or as one batch). A local engine gets one call at a time; an engine
  marked `concurrent` (a remote server) gets new calls while others run, up to `max_batch`
  requests in flight.
- Cancelling a waiting request removes it at once; cancelling a running one stops it at the
  next token. A request running longer than its timeout stops the same way and ends with
  `GenerationTimeout` (carrying the partial text). Cancelling the task that iterates a handle
  cancels the request.
- Model work runs in one dedicated worker thread, never on the event loop. If the engine
  raises, the requests of that call get `EngineFailure` and the worker goes on. If the engine
  hangs past every deadline in its call, those requests fail and a fresh worker thread takes
  over; so does one that finds its thread pool gone. Running out of memory fails only that
  call's requests, with `OutOfMemory`: the engine recognises it (`engine.failure`) and frees
  the accelerator's cache. If the scheduling loop itself dies, every waiter gets the error
  rather than hanging, and a new loop starts.
- `close()` (or leaving `async with`) ends every waiting and running request with
  `ShuttingDown` and returns once the worker has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from bot.generation.base import Engine
from bot.generation.types import (
    EngineFailure,
    EngineOutput,
    GenerationCancelled,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    GenerationTimeout,
    QueueFull,
    ShuttingDown,
    TooManyPending,
)

log = logging.getLogger(__name__)

_END = object()


class GenerationHandle:
    """The caller's view of one request: iterate it for text chunks, or await `result()`."""

    def __init__(self, request: GenerationRequest, queue: GenerationQueue) -> None:
        self.request = request
        self._queue = queue
        self._loop = asyncio.get_running_loop()
        self._chunks: asyncio.Queue[object] = asyncio.Queue()
        self._started = asyncio.Event()
        self._done = asyncio.Event()
        self._stop = threading.Event()  # read by the worker thread
        self._deadline: float | None = None
        self._timed_out = False
        self._result: GenerationResult | None = None
        self._error: GenerationError | None = None
        self.text = ""  # everything streamed so far
        self.counted = True  # toward its user's pending limit (`submit(count_for_user=...)`)
        self.submitted_at = time.monotonic()
        self.started_at: float | None = None

    # -- what the caller uses --------------------------------------------------------------------

    @property
    def position(self) -> int:
        """1-based place among waiting requests; 0 once running or finished."""
        return self._queue._position(self)

    @property
    def started(self) -> bool:
        return self._started.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def estimated_wait(self) -> float:
        """Rough seconds until this request starts, from recent engine calls."""
        return self._queue._estimated_wait(self.position)

    async def wait_started(self, timeout: float | None = None) -> bool:
        """Wait until the request runs (or ends); False if `timeout` passed first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._started.wait(), timeout)
        return self._started.is_set()

    def cancel(self) -> None:
        """Stop this request: removed if waiting, stopped at the next token if running."""
        if self.done:
            return
        if self._queue._remove_waiting(self):
            self._fail(GenerationCancelled("cancelled while waiting"))
        else:
            self._stop.set()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        while True:
            try:
                item = await self._chunks.get()
            except asyncio.CancelledError:
                self.cancel()
                raise
            if item is _END:
                self._chunks.put_nowait(_END)  # later iterations end at once too
                if self._error is not None:
                    raise self._error
                return
            assert isinstance(item, str)
            yield item

    async def result(self) -> GenerationResult:
        """Wait for the end; returns the result or raises the request's `GenerationError`."""
        try:
            await self._done.wait()
        except asyncio.CancelledError:
            self.cancel()
            raise
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    # -- what the worker thread uses (the engine's view of a job) --------------------------------

    def emit(self, text: str) -> None:
        """Stream a chunk of text to the caller. Thread-safe."""
        if text:
            self._queue._post(self, text)

    def should_stop(self) -> bool:
        """True once the request is cancelled or past its deadline. Thread-safe."""
        if self._stop.is_set():
            return True
        if self._deadline is not None and time.monotonic() > self._deadline:
            self._timed_out = True
            self._stop.set()
            return True
        return False

    # -- state changes, on the event loop --------------------------------------------------------

    def _push(self, text: str) -> None:
        if not self.done:
            self.text += text
            self._chunks.put_nowait(text)

    def _start(self, timeout: float) -> None:
        self.started_at = time.monotonic()
        self._deadline = self.started_at + timeout
        self._started.set()

    def _finish(self, output: EngineOutput, model: str) -> None:
        if self.done:
            return
        if output.finish_reason == "aborted" or self._stop.is_set():
            if self._timed_out:
                self._fail(GenerationTimeout("timed out", partial_text=self.text))
            else:
                self._fail(GenerationCancelled("cancelled while running", partial_text=self.text))
            return
        now = time.monotonic()
        started = self.started_at or now
        self._result = GenerationResult(
            request_id=self.request.id,
            text=output.text,
            finish_reason="length" if output.finish_reason == "length" else "stop",
            prompt_tokens=output.prompt_tokens,
            completion_tokens=output.completion_tokens,
            queued_s=started - self.submitted_at,
            generation_s=now - started,
            model=model,
            cuts=output.cuts,
        )
        self._close()

    def _fail(self, error: GenerationError) -> None:
        if self.done:
            return
        if not error.partial_text:
            error.partial_text = self.text
        self._error = error
        self._stop.set()
        self._close()

    def _close(self) -> None:
        self._started.set()  # nobody waits for a start that will not come
        self._done.set()
        self._chunks.put_nowait(_END)
        self._queue._forget(self)


class GenerationQueue:
    """Bounded, fair, cancellable access to one engine. Use as `async with GenerationQueue(...)`.

    See the module docstring for the promises.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_queue: int = 64,
        max_pending_per_user: int = 3,
        timeout: float = 120.0,
        hang_grace: float = 10.0,
    ) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self.max_pending_per_user = max_pending_per_user
        self.timeout = timeout
        # A hung engine call is abandoned this long after the latest deadline of its requests.
        self.hang_grace = hang_grace
        self._threads_started = 0
        self._inflight: asyncio.Future[list[EngineOutput | BaseException]] | None = None
        # Chunks from the worker thread wait here and reach the loop in one wake-up per
        # batch step, not one per row: every wake-up makes the worker wait for the GIL.
        self._outbox: list[tuple[GenerationHandle, str]] = []
        self._outbox_lock = threading.Lock()
        self._flush_scheduled = False
        self._batches: set[asyncio.Task[None]] = set()  # concurrent engines only
        self._waiting: OrderedDict[int, deque[GenerationHandle]] = OrderedDict()
        self._held: dict[int, int] = {}  # users' tasks running in several rounds (`held`)
        self._running: set[GenerationHandle] = set()
        self._wakeup = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self.restarts = 0  # scheduling loops that died and were replaced
        self._call_seconds = 2.0  # moving average of one engine call, for wait estimates

    async def __aenter__(self) -> GenerationQueue:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start the worker; `async with` does this for you."""
        if self._worker is None:
            self._executor = self._new_executor()
            self._worker = asyncio.create_task(self._supervise(), name="generation-queue")

    def _new_executor(self) -> ThreadPoolExecutor:
        self._threads_started += 1
        workers = self.engine.max_batch if self.engine.concurrent else 1
        return ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=f"generation-{self._threads_started}"
        )

    def _post(self, handle: GenerationHandle, text: str) -> None:
        """Hand a chunk from the worker thread to the loop (batched; order kept)."""
        with self._outbox_lock:
            self._outbox.append((handle, text))
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        handle._loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        with self._outbox_lock:
            chunks, self._outbox = self._outbox, []
            self._flush_scheduled = False
        for handle, text in chunks:
            handle._push(text)

    # -- submitting ------------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """How many requests wait (not counting running ones)."""
        return sum(len(q) for q in self._waiting.values())

    def pending_for(self, user_id: int) -> int:
        """Requests of `user_id` waiting or running, parts of accepted tasks not counted, and
        tasks written in several requests (`held`) counted once each."""
        running = sum(1 for h in self._running if h.request.user_id == user_id and h.counted)
        waiting = sum(h.counted for h in self._waiting.get(user_id, ()))
        return waiting + running + self._held.get(user_id, 0)

    @contextlib.contextmanager
    def held(self, first: GenerationHandle) -> Iterator[None]:
        """While the block runs, count one pending request for `first`'s user in place of
        `first`: a task written in several rounds of requests (a poem, line by line) stays one
        request toward the per-user limit between its rounds too."""
        user = first.request.user_id
        first.counted = False
        self._held[user] = self._held.get(user, 0) + 1
        try:
            yield
        finally:
            self._held[user] -= 1
            if not self._held[user]:
                del self._held[user]

    def submit(
        self, request: GenerationRequest, *, count_for_user: bool = True
    ) -> GenerationHandle:
        """Queue a request; raises `QueueRefused` (with a user-facing message) if it cannot.

        `count_for_user=False` is for the parts of a task already accepted (a line's
        candidates, a critique's line notes) and for requests accepted before a restart: they
        are not refused, by the per-user limit or by the queue's bound, since a task refused
        half-way would be lost half-written; nor do they count toward the user's limit. A
        task's parts are few, and while they wait, new tasks find the queue that much fuller.
        """
        if self._closed:
            raise ShuttingDown("queue is closed")
        if count_for_user and self.pending_for(request.user_id) >= self.max_pending_per_user:
            raise TooManyPending(self.max_pending_per_user)
        if count_for_user and self.waiting >= self.max_queue:
            raise QueueFull(f"{self.waiting} requests waiting")
        handle = GenerationHandle(request, self)
        handle.counted = count_for_user
        jobs = self._waiting.setdefault(request.user_id, deque())
        if count_for_user:
            jobs.append(handle)
        else:
            # after the parts already waiting, before the user's new tasks
            k = 0
            while k < len(jobs) and not jobs[k].counted:
                k += 1
            jobs.insert(k, handle)
        self._wakeup.set()
        return handle

    # -- the scheduler ---------------------------------------------------------------------------

    def _take(self, limit: int) -> list[GenerationHandle]:
        """Up to `limit` waiting requests, round-robin across users."""
        batch: list[GenerationHandle] = []
        while self._waiting and len(batch) < limit:
            user_id, jobs = next(iter(self._waiting.items()))
            batch.append(jobs.popleft())
            if jobs:
                self._waiting.move_to_end(user_id)
            else:
                del self._waiting[user_id]
        return batch

    def _position(self, handle: GenerationHandle) -> int:
        jobs = self._waiting.get(handle.request.user_id)
        if not jobs or handle not in jobs:
            return 0
        k = jobs.index(handle)
        # Round-robin serves every user's k-th request before anyone's (k+1)-th, in rotation
        # order: users ahead in the rotation get k+1 turns first, users behind get k.
        ahead = 0
        before = True
        for user_id, others in self._waiting.items():
            if user_id == handle.request.user_id:
                before = False
                ahead += k
            else:
                ahead += min(len(others), k + 1 if before else k)
        return ahead + 1

    def _estimated_wait(self, position: int) -> float:
        if position <= 0:
            return 0.0
        calls_ahead = math.ceil(position / max(1, self.engine.max_batch))
        return calls_ahead * self._call_seconds + (self._call_seconds / 2 if self._running else 0)

    def _remove_waiting(self, handle: GenerationHandle) -> bool:
        jobs = self._waiting.get(handle.request.user_id)
        if jobs is None or handle not in jobs:
            return False
        jobs.remove(handle)
        if not jobs:
            del self._waiting[handle.request.user_id]
        return True

    def _forget(self, handle: GenerationHandle) -> None:
        self._running.discard(handle)
        self._remove_waiting(handle)

    async def _supervise(self) -> None:
        """Run the scheduling loop; if it dies, fail every waiter and start a new one."""
        while True:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a bug in the scheduler: nobody may hang on it
                log.exception("generation loop died; starting a new one")
                detail = f"generation loop died: {exc!r}"
                self._fail_everyone(functools.partial(EngineFailure, detail))
                self.restarts += 1
                await asyncio.sleep(min(5.0, 0.1 * 2 ** min(self.restarts, 6)))  # no hot crash loop

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._waiting and len(self._running) < self.engine.max_batch:
                batch = self._take(self.engine.max_batch - len(self._running))
                for handle in batch:
                    handle._start(handle.request.timeout or self.timeout)
                    self._running.add(handle)
                if not self.engine.concurrent:
                    await self._run_batch(batch)
                    continue
                # A concurrent engine (a remote server, a continuous-batching loop) takes
                # new requests while others run: each batch is its own task.
                task = asyncio.create_task(self._run_batch(batch))
                self._batches.add(task)
                task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._wakeup.set()  # room for more

    async def _run_batch(self, batch: list[GenerationHandle]) -> None:
        """Run started requests through the engine and deliver each one's outcome."""
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        began = time.monotonic()
        try:
            future = loop.run_in_executor(self._executor, self.engine.generate, batch)
        except RuntimeError:  # the pool was shut down under us: a fresh worker takes over
            log.error("generation worker pool was gone; starting a new one")
            self._executor = self._new_executor()
            future = loop.run_in_executor(self._executor, self.engine.generate, batch)
        self._inflight = future
        hang_after = max(h._deadline or began for h in batch) - began + self.hang_grace
        try:
            outputs = await asyncio.wait_for(asyncio.shield(future), hang_after)
        except TimeoutError:
            log.error("engine call hung for %.0f s; abandoning its thread", hang_after)
            # The stuck thread cannot be killed; it is left to finish on its own and a fresh
            # thread serves the next requests.
            if not self.engine.concurrent:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._new_executor()
            for handle in batch:
                handle._fail(GenerationTimeout("engine hung", partial_text=handle.text))
            return
        except Exception as exc:
            log.exception("engine failed on %d request(s)", len(batch))
            error = self.engine.failure(exc)
            for handle in batch:
                handle._fail(error(f"{type(exc).__name__}: {exc}"))
            return
        finally:
            self._running.difference_update(batch)
        elapsed = time.monotonic() - began
        self._call_seconds = 0.7 * self._call_seconds + 0.3 * elapsed
        if len(outputs) != len(batch):
            for handle in batch:
                handle._fail(EngineFailure("engine returned the wrong number of outputs"))
            return
        for handle, output in zip(batch, outputs, strict=True):
            if isinstance(output, BaseException):
                error = self.engine.failure(output)
                handle._fail(error(f"{type(output).__name__}: {output}"))
            else:
                handle._finish(output, self.engine.model_name)

    def _fail_everyone(self, make_error: Callable[[], GenerationError]) -> None:
        handles = [h for jobs in self._waiting.values() for h in jobs] + list(self._running)
        self._waiting.clear()
        self._running.clear()
        for handle in handles:
            handle._fail(make_error())

    async def close(self) -> None:
        """End every waiting and running request with `ShuttingDown`; stop the worker."""
        if self._closed:
            return
        self._closed = True
        running = list(self._running)
        for handle in running:
            handle._stop.set()  # the engine stops them at the next token
        self._fail_everyone(lambda: ShuttingDown("shutting down"))
        for task in [self._worker, *self._batches]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._inflight is not None and not self._inflight.done():
            # A well-behaved engine returns at the next token; a hung one is not waited for.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._inflight), 5.0)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
