"""Load: many people's bursts through the emulator, the bot and the real queue.

`make test` runs 120 requests from 20 people; `make stress` runs 500 from 50 (LOAD_REQUESTS,
LOAD_USERS). A scripted engine stands in for the model: this measures the bot, not the model.
Every request must end in an answer, a refusal or an error message, once.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

import psutil
import pytest

from emulator import Interaction
from tests.conftest import World, open_world
from tests.fakes import ScriptedEngine

pytestmark = pytest.mark.slow
REQUESTS = int(os.environ.get("LOAD_REQUESTS", "120"))
USERS = int(os.environ.get("LOAD_USERS", "20"))
PER_BURST = 2  # each person sends two at once


def outcome(world: World, interaction: Interaction) -> str | None:
    """answer, refusal or error once the interaction has ended; None while it goes on."""
    if interaction.callback_type is None:
        return None
    if interaction.ephemeral:
        return "refusal"
    message = world.emu.original(interaction)
    if message is None:
        return None
    if message.embeds:
        return "answer"
    if message.content and not message.content.startswith(("⏳", "✍️")) and not message.flags & 128:
        return "error"
    return None


async def test_bursts_of_requests_all_end_once_fairly(tmp_path: Path) -> None:
    engine = ScriptedEngine(delay=0.001, max_batch=8)
    async with open_world(engine, tmp_path, max_queue=64, max_pending_per_user=2) as world:
        emu = world.emu
        people = [emu.add_member(world.guild, f"writer{i}") for i in range(USERS)]
        process = psutil.Process()
        rss_before = process.memory_info().rss
        lags: list[float] = []
        stop = asyncio.Event()

        async def heartbeat() -> None:  # the event loop must keep answering
            while not stop.is_set():
                began = time.monotonic()
                await asyncio.sleep(0.05)
                lags.append(time.monotonic() - began - 0.05)

        ticker = asyncio.create_task(heartbeat())
        began = time.monotonic()
        interactions: list[Interaction] = []
        owner: dict[int, int] = {}
        rng = random.Random(7)
        bursts = max(1, REQUESTS // (USERS * PER_BURST))
        for burst in range(bursts):
            order = [p for p in people for _ in range(PER_BURST)]
            rng.shuffle(order)  # who comes first in a burst changes
            for n, person in enumerate(order):
                # A scene is one request (a poem is now many small ones, its lines' candidates,
                # which would measure the poem rather than the queue's fairness under bursts).
                interaction = await emu.slash(
                    person, world.channel, "scene", setting=f"load {burst} {n}", characters="Ada"
                )
                interactions.append(interaction)
                owner[interaction.id] = person.id
            # the next burst comes while this one is still being served (about 16 a second)
            await asyncio.sleep(max(1.0, USERS * PER_BURST * 0.04))
        await emu.wait_for(lambda: all(outcome(world, i) for i in interactions), timeout=600)
        elapsed = time.monotonic() - began
        stop.set()
        await ticker
        rss_after = process.memory_info().rss
        # The bot records a message id just after Discord accepts the final edit: let the
        # last few land before counting rows per message.
        answered = sum(outcome(world, i) == "answer" for i in interactions)
        store = world.services.store
        for _ in range(100):
            recorded = await store.fetchall(
                "SELECT COUNT(*) FROM outputs WHERE message_id IS NOT NULL"
            )
            if recorded[0][0] >= answered:
                break
            await asyncio.sleep(0.05)

        outcomes = Counter(outcome(world, i) for i in interactions)
        said = Counter(
            (emu.original(i).content if outcome(world, i) != "answer" else "answer")  # type: ignore[union-attr]
            for i in interactions
        )
        print("\n".join(f"{n:4} × {text[:90]}" for text, n in said.most_common()))
        shown = [emu.original(i) for i in interactions if outcome(world, i) == "answer"]
        rows = await world.services.store.fetchall(
            "SELECT o.message_id, o.requester_id, g.queued_ms FROM outputs o"
            " JOIN generations g ON g.id = o.chosen_id"
        )
        per_message = Counter(r["message_id"] for r in rows)
        waits: dict[int, list[float]] = defaultdict(list)
        for row in rows:
            waits[row["requester_id"]].append(row["queued_ms"] / 1000)
        means = {user: statistics.mean(w) for user, w in waits.items()}
        median = statistics.median(means.values())
        print(
            f"\nload: {len(interactions)} requests from {USERS} people in {bursts} bursts,"
            f" {elapsed:.1f} s; answers {outcomes['answer']}, refusals {outcomes['refusal']},"
            f" errors {outcomes['error']}, lost {len(interactions) - sum(outcomes.values())};"
            f" mean wait per person: median {median:.2f} s, worst {max(means.values()):.2f} s;"
            f" loop lag max {1000 * max(lags):.0f} ms; RSS {rss_before / 2**20:.0f} ->"
            f" {rss_after / 2**20:.0f} MB"
        )
        assert len(interactions) == bursts * USERS * PER_BURST
        assert sum(outcomes.values()) == len(interactions)  # none lost
        assert len(rows) == outcomes["answer"] == len(shown)  # none duplicated
        assert all(per_message[m.id] == 1 for m in shown if m is not None)  # type: ignore[union-attr]
        assert outcomes["answer"] >= len(interactions) // 2
        assert max(means.values()) <= 2 * max(median, 0.25)  # nobody waits twice the median
        assert max(lags) < 1.0
        assert rss_after - rss_before < 300 * 2**20
        assert emu.errors == []
