"""Measure the batched and continuous engines on one model and record the faster as `ENGINE=auto`.

    python -m tools.engine_pick [--model auto] [--concurrency 8,32,64] [--max-new-tokens 128]
                                [--choice bot/generation/engine_choice.json]

`bench/gpu.sh` runs it on a CUDA machine with the model `MODEL=auto` chooses there. Both engines
get the same greedy requests, every answer exactly `--max-new-tokens` long, all submitted at
once through the real queue; the winner is the engine with the higher geometric mean of
tokens/s across the concurrency levels (a tie keeps batched, which also serves adapters and the
repetition penalty). The choice file is what `ENGINE=auto` reads on CUDA.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bot.config import load_settings
from bot.generation.loader import LoadedModel, load_model
from bot.generation.select import ENGINE_CHOICE_FILE, write_engine_choice
from tools.bench import make_engine, requests_for, through_queue

ENGINES = ("batched", "continuous")


@dataclass
class Level:
    engine: str
    concurrency: int
    tokens: int
    seconds: float
    tokens_per_s: float


async def measure(
    loaded: LoadedModel,
    concurrency: list[int],
    *,
    max_new_tokens: int,
    max_batch: int,
    memory_fraction: float,
) -> list[Level]:
    """Each engine at each level, fresh per level (one engine's KV cache never counts against
    the other's)."""
    args = argparse.Namespace(max_batch=max_batch, memory_fraction=memory_fraction)
    levels: list[Level] = []
    warm = make_engine("batched", loaded, args)
    await through_queue(warm, requests_for(1, 4))  # one-off costs (kernels, allocator) first
    warm.close()
    for n in concurrency:
        requests = requests_for(n, max_new_tokens)
        for name in ENGINES:
            engine = make_engine(name, loaded, args)
            try:
                run = await through_queue(engine, requests)
            finally:
                engine.close()
                del engine
                gc.collect()
            levels.append(Level(name, n, run.tokens, run.seconds, run.tokens / run.seconds))
            print(f"{name:<11}{n:>5}{run.tokens:>8}{levels[-1].tokens_per_s:>10.1f} tok/s")
    return levels


def winner(levels: list[Level]) -> tuple[str, float]:
    """The faster engine and continuous's geometric-mean speed ratio over batched."""
    by = {(lv.engine, lv.concurrency): lv.tokens_per_s for lv in levels}
    shared = sorted({n for e, n in by if e == "continuous"} & {n for e, n in by if e == "batched"})
    if not shared:
        raise ValueError("no concurrency level measured with both engines")
    logs = [math.log(by["continuous", n] / by["batched", n]) for n in shared]
    ratio = math.exp(sum(logs) / len(logs))
    return ("continuous" if ratio > 1.0 else "batched"), ratio


def record(levels: list[Level], loaded: LoadedModel, **meta: Any) -> dict[str, Any]:
    """The choice file's content: the engine, why, and where it was measured."""
    engine, ratio = winner(levels)
    gpu = torch.cuda.get_device_name(0) if loaded.device == "cuda" else loaded.device
    return {
        "engine": engine,
        "continuous_over_batched": round(ratio, 3),
        "model": loaded.name,
        "device": loaded.device,
        "gpu": gpu,
        "dtype": str(loaded.dtype),
        "torch": torch.__version__,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **meta,
        "levels": [asdict(lv) for lv in levels],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.engine_pick", description=__doc__)
    parser.add_argument("--model", default=None, help="overrides MODEL (default: auto)")
    parser.add_argument(
        "--concurrency", default="8,32,64", type=lambda s: [int(x) for x in s.split(",")]
    )
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--memory-fraction", type=float, default=0.3)
    parser.add_argument("--choice", type=Path, default=ENGINE_CHOICE_FILE)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    settings = load_settings()
    loaded = load_model(
        args.model or settings.model,
        device=settings.device,
        dtype=settings.dtype,
        cache_dir=settings.model_cache_dir,
    )
    print(f"{loaded.name} on {loaded.device} ({loaded.dtype})")
    levels = asyncio.run(
        measure(
            loaded,
            args.concurrency,
            max_new_tokens=args.max_new_tokens,
            max_batch=args.max_batch,
            memory_fraction=args.memory_fraction,
        )
    )
    result = record(levels, loaded, max_new_tokens=args.max_new_tokens, max_batch=args.max_batch)
    write_engine_choice(args.choice, result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"engine-pick-{loaded.device}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"faster: {result['engine']} (continuous/batched {result['continuous_over_batched']}x);"
        f" ENGINE=auto on CUDA now reads {args.choice}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
