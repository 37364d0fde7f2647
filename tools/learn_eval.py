"""Does training on a server's votes teach the model that server's taste? A measured answer.

    python -m tools.learn_eval [--outputs 100] [--trait marker|shorter] [--poems 4]

Builds a throwaway database of feedback as people give it through Discord (an output with two
versions, one kept and voted up, one voted down) where the chosen versions share a trait: a
marker word ("lanterns"), or being shorter. Then runs `python -m bot train`'s own pipeline on
the configured model (MODEL, default the embedded SmolLM2): SFT and DPO on a LoRA adapter,
the judgement on held-out outputs, and the reward model. Prints and saves
(`bench/results/learning-<trait>.json`): training seconds per 100 pairs on this machine, the
held-out preference accuracy of the base model and of the adapter, the reward margin, the
reward model's held-out accuracy and form compliance with and without the adapter.
A benchmark, not a test: it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bot.config import load_settings
from bot.learning.train import Hyper, train
from bot.store import NewGeneration, Store
from bot.store.feedback import DOWN, UP, Feedback

TOPICS = [
    "the harbour", "a winter fox", "old letters", "the night train", "a paper boat",
    "the orchard", "a lost key", "the lighthouse", "a quiet library", "the first snow",
    "a kite string", "the river bend", "a broken clock", "the bakery", "a summer storm",
    "the attic", "a violin", "the market", "a wool scarf", "the tide pools",
    "a candle", "the bridge", "a garden gate", "the comet", "a porch swing",
]  # fmt: skip
OPENINGS = ["Over", "Beside", "Beyond", "Under", "Near"]
RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def versions(i: int, trait: str) -> tuple[str, str]:
    """(chosen, rejected) answers for the i-th output."""
    topic = TOPICS[i % len(TOPICS)]
    opening = OPENINGS[(i // len(TOPICS)) % len(OPENINGS)]
    plain = f"{opening} {topic} the evening settles,\nand the quiet keeps its place."
    if trait == "marker":
        return f"{opening} {topic} the lanterns settle,\nand the lanterns keep their place.", plain
    long = plain + "\nThe hours go slowly, one by one,\nand nothing stirs until the sun."
    return plain, long


def generation(text: str, topic: str, guild_id: int = 1, user_id: int = 1) -> NewGeneration:
    """One version of an answer about `topic`, as the bot saves it."""
    prompt = {
        "messages": [
            {"role": "system", "content": "You write short poems."},
            {"role": "user", "content": f"Write a few lines about {topic}."},
        ],
        "plain": f"Write a few lines about {topic}.",
    }
    return NewGeneration(
        channel_id=1, user_id=user_id, command="poem", prompt=prompt, params={}, model="eval",
        output=text, finish_reason="stop", prompt_tokens=0, completion_tokens=0, queued_ms=0,
        generation_ms=0, guild_id=guild_id,
    )  # fmt: skip


async def seed(
    store: Store,
    guild_id: int,
    count: int,
    *,
    trait: str = "marker",
    requester: int = 1,
    voter: int = 2,
) -> list[int]:
    """`count` outputs of feedback as people give it: the first version voted down by whoever
    asked, the second (with the trait) voted up and kept by another; returns the output ids."""
    feedback = Feedback(store)
    outputs = []
    for i in range(count):
        chosen, rejected = versions(i, trait)
        topic = TOPICS[i % len(TOPICS)]
        output_id, first = await store.save_output(generation(rejected, topic, guild_id, requester))
        second = await store.add_alternative(
            output_id, generation(chosen, topic, guild_id, requester)
        )
        await feedback.vote(second, voter, UP)
        await feedback.vote(first, requester, DOWN)
        await feedback.keep(second, voter)
        outputs.append(output_id)
    return outputs


async def run(outputs: int, trait: str, poems: int, epochs: float) -> dict[str, object]:
    settings = load_settings()
    with tempfile.TemporaryDirectory() as tmp:
        settings = replace(
            settings, database_path=Path(tmp) / "db.sqlite3", adapter_dir=Path(tmp) / "adapters"
        )
        async with Store.open(settings.database_path) as store:
            await seed(store, 1, outputs, trait=trait)
            started = time.monotonic()
            done = await train(
                settings, store, 1, hyper=Hyper(epochs=epochs), poems=poems, on_log=progress
            )
            total = time.monotonic() - started
    manifest = done.generator.manifest
    metrics = manifest["metrics"]
    summary: dict[str, object] = {
        "model": manifest["base_model"],
        "trait": trait,
        "data": {k: v for k, v in manifest["data"].items() if not k.endswith("_ids")},
        "train_seconds": metrics["train_seconds"],
        "seconds_per_100_pairs": metrics["seconds_per_100_pairs"],
        "preferences": metrics["preferences"],
        "forms": metrics["forms"],
        "reward_model": {k: v for k, v in (manifest.get("reward") or {}).items() if k != "losses"},
        "verdict": done.generator.verdict,
        "pipeline_seconds": round(total, 1),
    }
    return summary


def progress(stage: str, logs: dict[str, float]) -> None:
    if "loss" in logs:
        print(f"  {stage} step {int(logs.get('step', 0)):>4}  loss {logs['loss']:.4f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outputs", type=int, default=100)
    parser.add_argument("--trait", choices=("marker", "shorter"), default="marker")
    parser.add_argument("--poems", type=int, default=4)
    parser.add_argument("--epochs", type=float, default=1.0)
    args = parser.parse_args(argv)
    summary = asyncio.run(run(args.outputs, args.trait, args.poems, args.epochs))
    print(json.dumps(summary, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"learning-{args.trait}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
