"""A separate process that writes to a shared database through the real Store (for
tests/test_shared_db.py): `python -m tests.store_writer TARGET TAG COUNT BUSY_TIMEOUT_MS`.

Each round stores an output (with its generation) and a vote on it. It prints one JSON line:
the ids of every round that was stored, the rounds refused with `StoreBusy` (each then asked
again, as a person would), and the store's busy-retry count.
"""

from __future__ import annotations

import asyncio
import json
import sys

from bot.store import NewGeneration, Store, StoreBusy
from bot.store.feedback import UP, Feedback


def generation(tag: int, number: int) -> NewGeneration:
    return NewGeneration(
        channel_id=tag,
        user_id=tag,
        command="poem",
        prompt={"writer": tag, "round": number},
        params={},
        model="m",
        output=f"{tag}:{number}",
        finish_reason="stop",
        prompt_tokens=1,
        completion_tokens=1,
        queued_ms=0,
        generation_ms=0,
        guild_id=1,
    )


async def write(target: str, tag: int, count: int, busy_timeout_ms: int) -> dict[str, object]:
    stored: list[tuple[int, int]] = []
    refused = 0
    async with Store.open(target, busy_timeout_ms=busy_timeout_ms) as store:
        feedback = Feedback(store)
        for number in range(count):
            while True:  # a refused write stored nothing: it is asked again
                try:
                    output_id, generation_id = await store.save_output(generation(tag, number))
                    break
                except StoreBusy:
                    refused += 1
            while True:
                try:
                    await feedback.vote(generation_id, tag, UP)
                    break
                except StoreBusy:
                    refused += 1
            stored.append((output_id, generation_id))
        return {"stored": stored, "refused": refused, "busy_retries": store.busy_retries}


if __name__ == "__main__":
    target, tag, count, timeout_ms = sys.argv[1], *map(int, sys.argv[2:5])
    print(json.dumps(asyncio.run(write(target, tag, count, timeout_ms))))
