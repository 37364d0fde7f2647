"""Benchmark: time to first token of a story turn with a full context, side by side.

    python -m tools.bench_story [--turns 12] [--budget 1536]

A story is seeded with enough parts to fill its window, then grows by one part a turn; each
turn's prompt is built by the bot's own `StoryContext` and `continue_prompt`, and sent through
the real queue to one loaded model. Three ways, in one run on the same model:

- `re-read`: no prefix cache; every turn reads its whole context (the bot without reuse);
- `slide`: the prefix cache, with the window sliding by a part a turn (the bot before the
  window moved in steps: the summary changes every turn, so only the header is reused);
- `steps`: the prefix cache with the window moving in steps (the bot now).

It prints per-way TTFT p50/p95 over the turns (the turns that folded the window shown apart:
they wait for a new summary, then re-read their context), and the prompt's read alone (from its
submission to its first token); it saves JSON and a PNG under bench/results/. TTFT counts from
the command: building the window (and any new summary) included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bot.config import load_settings
from bot.generation.batched import BatchedEngine
from bot.generation.loader import load_model
from bot.generation.queue import GenerationQueue
from bot.generation.types import GenerationRequest, SamplingParams
from bot.prompts.story import continue_prompt
from bot.store import Store, Stories
from bot.writing.story import KEEP, StoryContext
from tools.bench import p95

WAYS = {"re-read": (0, 1.0), "slide": (256, 1.0), "steps": (256, KEEP)}
WORDS = (  # noqa: SIM905 (one sentence reads better than a list of words)
    "the keeper climbed the stairs while the lamp hissed and the sea pressed against the glass "
    "a gull cried somewhere below and the old map on the table curled at its edges she counted "
    "the waves as her mother had taught her and wrote each number in the log the door in the "
    "water opened slowly and a light the colour of pearls spilled across the rocks"
).split()


def part(rng: random.Random, words: int = 95) -> str:
    """A made-up story part of about 130 tokens (only its length matters here)."""
    chosen = [rng.choice(WORDS) for _ in range(words)]
    sentences = [" ".join(chosen[i : i + 12]).capitalize() + "." for i in range(0, words, 12)]
    return " ".join(sentences)


@dataclass
class Turn:
    ttft: float  # from the command: the window, any new summary, the prompt's read
    read: float  # from the prompt's submission to its first token
    context_tokens: int
    folded: bool


@dataclass
class Way:
    name: str
    turns: list[Turn] = field(default_factory=list)

    def ttfts(self, folded: bool) -> list[float]:
        return [t.ttft for t in self.turns if t.folded == folded]


async def run_way(
    name: str, engine: BatchedEngine, keep: float, args: argparse.Namespace, folder: Path
) -> Way:
    rng = random.Random(7)  # the same story for every way
    way = Way(name)
    greedy = SamplingParams(max_new_tokens=args.answer_tokens, method="greedy")
    async with (
        Store.open(folder / f"{name}.sqlite3") as store,
        GenerationQueue(engine) as queue,
    ):
        stories = Stories(store)
        story = await stories.start(
            guild_id=1,
            channel_id=2,
            title="The Glass Harbour",
            premise="A lighthouse keeper finds a door in the sea",
            genre="fantasy",
            created_by=3,
        )
        context = StoryContext(stories, queue, budget=args.budget, keep=keep)
        for _ in range(args.budget // 130 + 1):  # a full window before the first turn
            await stories.add(story.id, channel_id=2, author_id=3, source="user", text=part(rng))
        story, recent = await context.window(story, user_id=3)
        for turn in range(args.turns + 1):
            await stories.add(story.id, channel_id=2, author_id=3, source="user", text=part(rng))
            upto = story.summary_upto
            # from the command: a turn that folds the window waits for the new summary too
            start = time.perf_counter()
            story, recent = await context.window(story, user_id=3)
            prompt = continue_prompt(story, recent, direction=None, length="medium")
            submitted = time.perf_counter()
            handle = queue.submit(GenerationRequest(3, prompt, greedy))
            first = None
            async for _chunk in handle:
                first = first or time.perf_counter()
            await handle.result()
            if turn == 0:
                continue  # the first turn reads the seeded story in every way
            tokens = len(engine.encode(GenerationRequest(3, prompt, greedy))[0])
            first = first or time.perf_counter()
            done = Turn(first - start, first - submitted, tokens, story.summary_upto != upto)
            way.turns.append(done)
            print(
                f"  {name:<8} turn {turn:>2}: {tokens:>5} tokens, TTFT {done.ttft:.2f} s"
                f" (read {done.read:.2f} s)" + ("  folded" if done.folded else ""),
                flush=True,
            )
    return way


def summary(ways: list[Way]) -> list[dict[str, Any]]:
    rows = []
    base = statistics.median(ways[0].ttfts(False) + ways[0].ttfts(True))
    for way in ways:
        plain, folded = way.ttfts(False), way.ttfts(True)
        every = plain + folded
        rows.append(
            {
                "way": way.name,
                "turns": len(every),
                "folded_turns": len(folded),
                "context_tokens_mean": statistics.mean(t.context_tokens for t in way.turns),
                "ttft_p50": statistics.median(every),
                "ttft_p95": p95(every),
                "ttft_p50_unfolded": statistics.median(plain) if plain else None,
                "ttft_p50_folded": statistics.median(folded) if folded else None,
                "read_p50": statistics.median(t.read for t in way.turns),
                "speedup_p50": base / statistics.median(every),
            }
        )
    return rows


def chart(ways: list[Way], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for way in ways:
        xs = list(range(1, len(way.turns) + 1))
        ax.plot(xs, [t.ttft for t in way.turns], marker="o", label=way.name)
        folds = [(x, t.ttft) for x, t in zip(xs, way.turns, strict=True) if t.folded]
        if folds:
            fx, fy = zip(*folds, strict=True)
            ax.scatter(fx, fy, s=120, facecolors="none", edgecolors="black")
    ax.set_xlabel("turn (circled: the window folded into the summary)")
    ax.set_ylabel("time to first token, s")
    ax.set_title("A story turn with a full context")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--budget", type=int, default=1536)
    parser.add_argument("--answer-tokens", type=int, default=4)
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    settings = load_settings()
    loaded = load_model(
        settings.model,
        device=settings.device,
        dtype=settings.dtype,
        cache_dir=settings.model_cache_dir,
    )
    ways = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.ways.split(","):
            cache_mb, keep = WAYS[name]
            engine = BatchedEngine(
                loaded.model, loaded.tokenizer, model_name=loaded.name, prefix_cache_mb=cache_mb
            )
            ways.append(await run_way(name, engine, keep, args, Path(folder)))
    rows = summary(ways)
    print(
        f"\n{'way':<9}{'turns':>6}{'folded':>7}{'context':>9}{'TTFT p50':>10}{'p95':>8}"
        f"{'unfolded':>10}{'folded':>8}{'speedup':>9}"
    )
    for r in rows:
        unfolded = r["ttft_p50_unfolded"]
        folded = r["ttft_p50_folded"]
        print(
            f"{r['way']:<9}{r['turns']:>6}{r['folded_turns']:>7}{r['context_tokens_mean']:>9.0f}"
            f"{r['ttft_p50']:>9.2f}s{r['ttft_p95']:>7.2f}s"
            f"{(f'{unfolded:.2f}s' if unfolded is not None else '-'):>10}"
            f"{(f'{folded:.2f}s' if folded is not None else '-'):>8}{r['speedup_p50']:>8.1f}x"
            f"{r['read_p50']:>9.2f}s"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "model": loaded.name,
        "dtype": str(loaded.dtype),
        "budget": args.budget,
        "rows": rows,
        "turns": {w.name: [asdict(t) for t in w.turns] for w in ways},
    }
    (args.out / "bench-story.json").write_text(json.dumps(result, indent=2) + "\n")
    chart(ways, args.out / "bench-story.png")
    print(f"saved {args.out / 'bench-story.json'} and bench-story.png")


if __name__ == "__main__":
    asyncio.run(main())
