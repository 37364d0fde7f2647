"""A pool of OpenAI-compatible servers behind one engine: `PooledEngine`.

One `OpenAIEngine` per server does the talking (its dialect, its refused fields); the pool
decides where each request goes and what happens when a server fails. One background thread
runs the pool's event loop, which owns every server's state, the HTTP connections and the
health checks; the queue's worker threads hand it their calls and wait.

Promises:
- A request goes to the least loaded admitted server (requests in flight over its cap; ties
  round-robin), never to one with `max_concurrency` requests in flight: when every server is
  full it waits for a slot (it is never refused). `max_batch` follows the admitted servers'
  capacity, so the queue keeps the rest waiting in its fair order.
- A server is ejected after `eject_after` consecutive failures (no connection, a reset, 5xx,
  a timeout, a stream cut short, a failed health check) and readmitted when a health check
  (`GET {base}/models` every `health_seconds`, passed by any answer but a 5xx) or a request
  succeeds; both are logged with the reason and the pool's state. Any success resets the
  count. With every server ejected, requests go to all of them rather than none (as Envoy's
  panic mode does): their ordinary retries then end them politely, or find one back.
- A request that fails before its first token is tried again at once on a server it has not
  failed on, if one is admitted; else on any (with backoff). After `len(servers) +
  max_retries` failed tries it fails with `RemoteError` (the queue's polite `EngineFailure`).
- A request whose server dies after its first token is replayed from the start on another
  server, and the text already shown is checked against the replay instead of being shown
  again: the caller sees one answer, as if nothing had happened, when the replay writes the
  same words (greedy decoding; sampling with the seed the pool gives every sampled request
  that has none). If the replay writes something else, the request fails with `RemoteError`,
  carrying the text shown so far: a different answer grafted onto the first one's start
  would be worse than an honest failure. (The queue's handles cannot take back text they
  streamed, so "discard and start again" is not offered to the caller.)
- Cancel and timeout close the upstream stream at once, and end a wait for a slot.
- `stats()`: each server's requests in flight, served, failures and state (thread-safe).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from bot.generation.base import Engine, EngineJob
from bot.generation.remote import OpenAIEngine, RemoteError, ServerUnavailable, StreamBroken
from bot.generation.types import EngineOutput, GenerationRequest

log = logging.getLogger(__name__)

# How long a request waiting for a slot sleeps between looks at its cancel and deadline.
WAIT_POLL_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class ServerStats:
    """One server of the pool, for a status display."""

    url: str
    in_flight: int
    cap: int
    served: int  # answers finished (not cancelled)
    failures: int  # failures counted against it, in all
    consecutive: int  # failures since its last success
    ejected: bool
    ejections: int  # times it was ejected, in all
    last_error: str
    requests: tuple[str, ...]  # ids of the requests it is writing now


class Diverged(RemoteError):
    """A replay on another server wrote other words than those already shown."""


class _Server:
    """A server's engine and counters; changed only on the pool's loop, read under its lock."""

    def __init__(self, engine: OpenAIEngine, cap: int) -> None:
        self.engine = engine
        self.cap = cap
        self.requests: set[str] = set()
        self.served = 0
        self.failures = 0
        self.consecutive = 0
        self.ejected = False
        self.ejections = 0
        self.last_error = ""

    @property
    def url(self) -> str:
        return self.engine.base_url


class _Replay:
    """The job as one try on one server sees it: text the caller was already shown (by a try
    whose server died) is checked against this try's instead of being shown again."""

    def __init__(self, job: EngineJob, request: GenerationRequest) -> None:
        self.job = job
        self.request = request
        self.shown = ""  # what the caller has been shown, over all tries
        self.seen = ""  # this try's text, while it is still behind `shown`
        self.caught_up = True

    def fresh(self) -> _Replay:
        """Ready for the next try."""
        self.seen = ""
        self.caught_up = not self.shown
        return self

    def emit(self, text: str) -> None:
        if self.caught_up:
            self.shown += text
            self.job.emit(text)
            return
        self.seen += text
        if len(self.seen) <= len(self.shown):
            if not self.shown.startswith(self.seen):
                raise Diverged("the answer could not be resumed: another server wrote otherwise")
            return
        if not self.seen.startswith(self.shown):
            raise Diverged("the answer could not be resumed: another server wrote otherwise")
        new, self.shown, self.caught_up = self.seen[len(self.shown) :], self.seen, True
        self.job.emit(new)

    def should_stop(self) -> bool:
        return self.job.should_stop()


class PooledEngine(Engine):
    """Streams chat completions from several OpenAI-compatible servers serving one model."""

    concurrent = True

    def __init__(
        self,
        base_urls: Sequence[str],
        model: str,
        *,
        api_key: str | None = None,
        max_concurrency: int = 32,
        max_retries: int = 2,
        eject_after: int = 3,
        health_seconds: float = 10.0,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        context_length: int = 8192,
        dialect: str = "auto",
        probe_timeout: float = 5.0,
    ) -> None:
        if len(set(base_urls)) != len(base_urls) or not base_urls:
            raise ValueError(f"a pool needs distinct server URLs, not {list(base_urls)}")
        if max_concurrency < 1 or eject_after < 1 or health_seconds <= 0:
            raise ValueError("max_concurrency, eject_after and health_seconds must be positive")
        self.servers = [
            _Server(
                OpenAIEngine(
                    url,
                    model,
                    api_key=api_key,
                    max_batch=max_concurrency,
                    max_retries=max_retries,
                    connect_timeout=connect_timeout,
                    read_timeout=read_timeout,
                    context_length=context_length,
                    dialect=dialect,
                    probe_timeout=probe_timeout,
                ),
                max_concurrency,
            )
            for url in base_urls
        ]
        self.model_name = model
        self.context_length = context_length
        self.max_batch = max_concurrency * len(self.servers)
        self.max_retries = max_retries
        self.eject_after = eject_after
        self.health_seconds = health_seconds
        self.check_timeout = probe_timeout
        self._headers = self.servers[0].engine._headers()
        self._timeout = self.servers[0].engine.timeout
        # The servers' counters, for `stats()` from other threads; reentrant: a log line that
        # is written under it quotes `stats()`.
        self._lock = threading.RLock()
        self._next = 0  # round-robin start among equally loaded servers
        self._waiters: list[asyncio.Future[None]] = []
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-pool")
        self._thread.daemon = True  # a pool left open must not keep the process alive
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result()

    # -- the engine interface (any thread) -------------------------------------------------------

    def generate(self, jobs: Sequence[EngineJob]) -> list[EngineOutput | BaseException]:
        if self._closed:
            raise RemoteError("the generation pool is closed")
        return asyncio.run_coroutine_threadsafe(self._generate_all(jobs), self._loop).result()

    def stats(self) -> list[ServerStats]:
        """Each server's state now, in the configured order."""
        with self._lock:
            return [
                ServerStats(
                    url=s.url,
                    in_flight=len(s.requests),
                    cap=s.cap,
                    served=s.served,
                    failures=s.failures,
                    consecutive=s.consecutive,
                    ejected=s.ejected,
                    ejections=s.ejections,
                    last_error=s.last_error,
                    requests=tuple(sorted(s.requests)),
                )
                for s in self.servers
            ]

    def close(self) -> None:
        """Stop the health checks and close the connections; running requests end at once."""
        if self._closed:
            return
        self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._shut(), self._loop).result(10)
        except (concurrent.futures.TimeoutError, RuntimeError):
            log.warning("generation pool: did not close cleanly in 10 s")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    # -- on the pool's loop ----------------------------------------------------------------------

    async def _open(self) -> None:
        # The pool caps connections per server itself; aiohttp's default of 100 in all would
        # hold back a large pool.
        connector = aiohttp.TCPConnector(limit=0)
        self._session = aiohttp.ClientSession(
            headers=self._headers, timeout=self._timeout, connector=connector
        )
        self._health = asyncio.create_task(self._check_forever(), name="pool-health")

    async def _shut(self) -> None:
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._session.close()

    async def _generate_all(self, jobs: Sequence[EngineJob]) -> list[EngineOutput | BaseException]:
        results = await asyncio.gather(*(self._one(job) for job in jobs), return_exceptions=True)
        return list(results)

    async def _one(self, job: EngineJob) -> EngineOutput:
        replay = _Replay(job, self._seeded(job.request))
        failed_on: set[_Server] = set()
        tries = 0
        while True:
            server = await self._acquire(job, failed_on)
            if server is None:  # cancelled or past its deadline while waiting for a slot
                return EngineOutput(replay.shown, "aborted", 0, 0)
            tries += 1
            try:
                dialect = await server.engine.settled_dialect()
                output = await server.engine.stream_once(self._session, replay.fresh(), dialect)
            except (ServerUnavailable, StreamBroken) as exc:
                self._release(server, job.request.id)
                self._failed(server, str(exc), fault=getattr(exc, "fault", True))
                if job.should_stop():  # the queue tells a cancel from a timeout
                    return EngineOutput(replay.shown, "aborted", 0, 0)
                if tries >= len(self.servers) + self.max_retries:
                    raise RemoteError(f"{tries} tries failed; the last: {exc}") from exc
                failed_on.add(server)
                log.warning(
                    "generation pool: request %s failed on %s (%s); %s",
                    job.request.id,
                    server.url,
                    exc,
                    "replaying it elsewhere" if replay.shown else "trying another server",
                )
                # A server this request failed on already is tried again only after a pause.
                if not [s for s in self.servers if not s.ejected and s not in failed_on]:
                    pause = min(10.0, 0.5 * 2 ** max(0, tries - len(self.servers)))
                    deadline = time.monotonic() + pause
                    # Polled: should_stop() also checks the deadline, which no event signals.
                    while time.monotonic() < deadline and not job.should_stop():  # noqa: ASYNC110
                        await asyncio.sleep(WAIT_POLL_SECONDS)
                continue
            except BaseException:
                self._release(server, job.request.id)
                raise
            self._release(server, job.request.id)
            if output.finish_reason == "aborted":
                # cancelled or out of time: says nothing of the server's health (a server that
                # hangs must not be readmitted by the requests it leaves waiting)
                if replay.shown and not replay.caught_up:
                    return dataclasses.replace(output, text=replay.shown)
                return output
            if not replay.caught_up:
                # the replay ended before it reached what was shown: not the same answer
                raise Diverged("the answer could not be resumed: another server wrote less")
            self._succeeded(server, "a request succeeded", served=True)
            return output

    def _seeded(self, request: GenerationRequest) -> GenerationRequest:
        """`request` with a seed if it samples without one: a replay then writes the same words."""
        p = request.params
        if p.method != "sampling" or p.seed is not None:
            return request
        seeded = dataclasses.replace(p, seed=random.randrange(2**31))
        return dataclasses.replace(request, params=seeded)

    async def _acquire(self, job: EngineJob, avoid: set[_Server]) -> _Server | None:
        """A slot on the least loaded server to try (see the module docstring), waiting for
        one if all are full; None if the job stopped meanwhile."""
        while not job.should_stop():
            # With every server ejected, all of them (see the module docstring).
            admitted = [s for s in self.servers if not s.ejected] or self.servers
            choice = [s for s in admitted if s not in avoid] or admitted
            free = [s for s in choice if len(s.requests) < s.cap]
            if free:
                n = len(self.servers)
                order = {s: (self.servers.index(s) - self._next) % n for s in free}
                server = min(free, key=lambda s: (len(s.requests) / s.cap, order[s]))
                self._next = (self.servers.index(server) + 1) % n
                with self._lock:
                    server.requests.add(job.request.id)
                return server
            await self._changed(WAIT_POLL_SECONDS)
        return None

    def _release(self, server: _Server, request_id: str) -> None:
        with self._lock:
            server.requests.discard(request_id)
        self._wake()

    async def _changed(self, timeout: float) -> None:
        """Wait until a slot frees or the admitted servers change, or `timeout` passes."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _failed(self, server: _Server, reason: str, *, fault: bool = True) -> None:
        """Count a failure against `server` (a busy 429 is not one); eject it at the limit."""
        if not fault:
            return
        # Held while logging too: whoever sees the new state in `stats()` finds it logged.
        with self._lock:
            server.failures += 1
            server.consecutive += 1
            server.last_error = reason
            if server.ejected or server.consecutive < self.eject_after:
                return
            server.ejected = True
            server.ejections += 1
            self._resized()
            log.warning(
                "generation pool: ejected %s after %d consecutive failures (last: %s); %s",
                server.url,
                server.consecutive,
                reason,
                self._summary(),
            )

    def _succeeded(self, server: _Server, reason: str, *, served: bool = False) -> None:
        with self._lock:
            server.consecutive = 0
            server.served += served
            if not server.ejected:
                return
            server.ejected = False
            server.engine.probe_again()  # a dialect it could not tell while down: ask now
            self._resized()
            log.info("generation pool: readmitted %s (%s); %s", server.url, reason, self._summary())

    def _resized(self) -> None:
        admitted = sum(not s.ejected for s in self.servers) or len(self.servers)
        # Read by the queue's loop: one assignment of an int, atomic.
        self.max_batch = admitted * self.servers[0].cap
        self._wake()

    def _summary(self) -> str:
        return ", ".join(
            f"{s.url}: {'ejected' if s.ejected else 'in'}, {s.in_flight}/{s.cap} in flight, "
            f"{s.served} served, {s.failures} failures"
            for s in self.stats()
        )

    async def _check_forever(self) -> None:
        while True:
            results = await asyncio.gather(
                *(self._check(s) for s in self.servers), return_exceptions=True
            )
            for server, result in zip(self.servers, results, strict=True):
                # a check that breaks unexpectedly must not end every later readmission
                if isinstance(result, Exception):
                    log.error("generation pool: health check of %s broke: %r", server.url, result)
            await asyncio.sleep(self.health_seconds)

    async def _check(self, server: _Server) -> None:
        """Ask `server` for its models: any answer but a 5xx is a pass."""
        timeout = aiohttp.ClientTimeout(total=self.check_timeout)
        try:
            async with self._session.get(f"{server.url}/models", timeout=timeout) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._failed(server, f"health check: {exc!r}")
            return
        if status >= 500:
            self._failed(server, f"health check: HTTP {status}")
        else:
            self._succeeded(server, f"health check passed: HTTP {status}")
