"""Benchmark: the original one-at-a-time `model.generate` against the queue with each engine.

    python -m tools.bench [--concurrency 1,4,8,16] [--max-new-tokens 64] [--engines ...]

Everything runs in one process on one loaded model with the same prompts, so the ratios are
measured side by side. Per method and concurrency it prints tokens/s, the ratio to the
sequential baseline, time to first token p50/p95, total time, peak RSS, the event loop's
worst stall, and how many greedy outputs are identical to the same request run alone; it saves
JSON and a PNG chart under `bench/results/`.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import json
import math
import platform
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers.generation.streamers import BaseStreamer

from bot.config import load_settings
from bot.generation.base import Engine
from bot.generation.batched import BatchedEngine
from bot.generation.continuous import ContinuousEngine
from bot.generation.engine import TransformersEngine, generation_kwargs
from bot.generation.loader import LoadedModel, load_model
from bot.generation.queue import GenerationQueue
from bot.generation.types import GenerationRequest, SamplingParams
from bot.prompts import poem_prompt

TOPICS = [
    "autumn rain",
    "a lighthouse keeper",
    "the last train home",
    "a fox in the snow",
    "old letters",
    "the sea at night",
    "a city waking up",
    "my grandmother's kitchen",
    "a broken clock",
    "first frost",
    "a paper boat",
    "the moon over rooftops",
    "a forgotten song",
    "bees in summer",
    "a library at midnight",
    "the desert wind",
]


@dataclass
class Row:
    method: str
    concurrency: int
    tokens: int
    seconds: float
    tokens_per_s: float
    ratio: float
    ttft_p50: float
    ttft_p95: float
    peak_rss_mb: float
    worst_stall_ms: float
    same_as_alone: int  # greedy outputs identical to the baseline's (each request alone)


def requests_for(n: int, max_new_tokens: int, fixed: bool = True) -> list[GenerationRequest]:
    """`n` greedy poem requests; with `fixed`, each writes exactly `max_new_tokens` tokens."""
    params = SamplingParams(
        max_new_tokens=max_new_tokens,
        method="greedy",
        min_new_tokens=max_new_tokens if fixed else 0,
    )
    forms = ("haiku", "free_verse", "limerick", "tanka")
    return [
        GenerationRequest(
            user_id=i, prompt=poem_prompt(TOPICS[i % 16], forms[i % 4]), params=params
        )
        for i in range(n)
    ]


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-th percentile (nan for no values): on a small sample the 95th is its
    slowest value, never an interpolation that hides it."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def p95(values: list[float]) -> float:
    """The nearest-rank 95th percentile."""
    return percentile(values, 95)


class Monitor:
    """Samples the event loop's lag and the process's RSS while a run goes on."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.worst_stall = 0.0
        self.peak_rss = self.process.memory_info().rss
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            self.worst_stall = max(self.worst_stall, time.perf_counter() - before - 0.005)
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)

    async def __aenter__(self) -> Monitor:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


class _FirstToken(BaseStreamer):
    def __init__(self, on_first: Callable[[], None]) -> None:
        self.calls = 0
        self.on_first = on_first

    def put(self, value: torch.Tensor) -> None:
        self.calls += 1
        if self.calls == 2:  # the first call is the prompt
            self.on_first()

    def end(self) -> None:
        pass


@dataclass
class Run:
    texts: list[str]
    tokens: int
    seconds: float
    ttfts: list[float]


def baseline(loaded: LoadedModel, requests: list[GenerationRequest]) -> Run:
    """The original design: one `model.generate` per request, one after another."""
    engine = TransformersEngine(loaded.model, loaded.tokenizer, model_name=loaded.name)
    start = time.perf_counter()
    run = Run([], 0, 0.0, [])
    for request in requests:
        ids = engine.encode(request)
        streamer = _FirstToken(lambda: run.ttfts.append(time.perf_counter() - start))
        with torch.inference_mode():
            out = loaded.model.generate(
                input_ids=ids.to(loaded.model.device),
                attention_mask=torch.ones_like(ids).to(loaded.model.device),
                streamer=streamer,
                **generation_kwargs(request, loaded.tokenizer),
            )
        new = out[0, ids.shape[1] :]
        run.texts.append(loaded.tokenizer.decode(new, skip_special_tokens=True))
        run.tokens += len(new)
    run.seconds = time.perf_counter() - start
    return run


async def through_queue(engine: Engine, requests: list[GenerationRequest]) -> Run:
    """All requests submitted at once to the queue in front of `engine`."""
    async with GenerationQueue(
        engine, max_queue=1000, max_pending_per_user=1000, timeout=600
    ) as queue:
        start = time.perf_counter()

        async def one(request: GenerationRequest) -> tuple[str, int, float]:
            handle = queue.submit(request)
            first = None
            async for _ in handle:
                first = first or time.perf_counter() - start
            result = await handle.result()
            return result.text, result.completion_tokens, first or time.perf_counter() - start

        done = await asyncio.gather(*(one(r) for r in requests))
        seconds = time.perf_counter() - start
    return Run([d[0] for d in done], sum(d[1] for d in done), seconds, [d[2] for d in done])


def make_engine(name: str, loaded: LoadedModel, args: argparse.Namespace) -> Engine:
    if name == "sequential":
        return TransformersEngine(loaded.model, loaded.tokenizer, model_name=loaded.name)
    if name == "batched":
        return BatchedEngine(
            loaded.model, loaded.tokenizer, model_name=loaded.name, max_batch=args.max_batch
        )
    if name == "continuous":
        # its own copy: the manager switches the model's attention implementation
        return ContinuousEngine(
            copy.deepcopy(loaded.model),
            loaded.tokenizer,
            model_name=loaded.name,
            max_batch=args.max_batch,
            memory_fraction=args.memory_fraction,
        )
    raise SystemExit(f"unknown engine {name!r}: use sequential, batched or continuous")


def row(method: str, n: int, run: Run, base: Run, monitor: Monitor) -> Row:
    tps = run.tokens / run.seconds
    return Row(
        method=method,
        concurrency=n,
        tokens=run.tokens,
        seconds=run.seconds,
        tokens_per_s=tps,
        ratio=tps / (base.tokens / base.seconds),
        ttft_p50=statistics.median(run.ttfts),
        ttft_p95=p95(run.ttfts),
        peak_rss_mb=monitor.peak_rss / 2**20,
        worst_stall_ms=monitor.worst_stall * 1000,
        same_as_alone=sum(a == b for a, b in zip(run.texts, base.texts, strict=True)),
    )


async def run(args: argparse.Namespace) -> list[Row]:
    settings = load_settings()
    loaded = load_model(
        args.model or settings.model,
        device=settings.device,
        dtype=settings.dtype,
        cache_dir=settings.model_cache_dir,
    )
    rows: list[Row] = []
    baseline(loaded, requests_for(1, 8))  # warm-up: the first call pays one-off costs
    for n in args.concurrency:
        requests = requests_for(n, args.max_new_tokens, args.fixed_length)
        async with Monitor() as monitor:
            base = await asyncio.to_thread(baseline, loaded, requests)
        rows.append(row("baseline", n, base, base, monitor))
        print(_format(rows[-1]), flush=True)
        # Fresh engines per level, closed after it, so that one engine's memory (the
        # continuous engine's KV cache) does not count against the next one.
        for name in args.engines:
            engine = make_engine(name, loaded, args)
            async with Monitor() as monitor:
                result = await through_queue(engine, requests)
            engine.close()
            del engine
            gc.collect()
            rows.append(row(name, n, result, base, monitor))
            print(_format(rows[-1]), flush=True)
    return rows


HEADER = (
    f"{'method':<11}{'conc':>5}{'tokens':>8}{'tok/s':>8}{'ratio':>7}{'ttft p50':>10}"
    f"{'ttft p95':>10}{'total s':>9}{'rss MB':>8}{'stall ms':>10}{'same':>6}"
)


def _format(r: Row) -> str:
    return (
        f"{r.method:<11}{r.concurrency:>5}{r.tokens:>8}{r.tokens_per_s:>8.1f}{r.ratio:>6.2f}x"
        f"{r.ttft_p50:>9.2f}s{r.ttft_p95:>9.2f}s{r.seconds:>9.1f}{r.peak_rss_mb:>8.0f}"
        f"{r.worst_stall_ms:>10.1f}{r.same_as_alone:>4}/{r.concurrency:<2}"
    )


def save(rows: list[Row], out: Path, meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = meta["device"] + ("" if meta["fixed_length"] else "-natural")
    (out / f"bench-{stamp}.json").write_text(
        json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2) + "\n"
    )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no chart; `make bench` installs it)")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for method in dict.fromkeys(r.method for r in rows):
        mine = [r for r in rows if r.method == method]
        xs = [r.concurrency for r in mine]
        left.plot(xs, [r.tokens_per_s for r in mine], marker="o", label=method)
        right.plot(xs, [r.ttft_p95 for r in mine], marker="o", label=method)
    left.set(xlabel="concurrent requests", ylabel="tokens/s", title="Throughput")
    right.set(xlabel="concurrent requests", ylabel="seconds", title="Time to first token (p95)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{meta['model']} on {meta['device']} ({meta['dtype']})")
    fig.tight_layout()
    fig.savefig(out / f"bench-{stamp}.png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    parser.add_argument(
        "--concurrency", default="1,4,8,16", type=lambda s: [int(x) for x in s.split(",")]
    )
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--natural-length",
        dest="fixed_length",
        action="store_false",
        help="let each answer end where the model ends it (default: every answer is exactly"
        " --max-new-tokens long, so that every method does the same work)",
    )
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument(
        "--engines", default="sequential,batched,continuous", type=lambda s: s.split(",")
    )
    parser.add_argument(
        "--memory-fraction",
        type=float,
        default=0.03,
        help="the continuous engine's share of free memory for its KV cache",
    )
    parser.add_argument("--model", default=None, help="overrides MODEL")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    print(HEADER, flush=True)
    rows = asyncio.run(run(args))
    settings = load_settings()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    meta = {
        "model": args.model or settings.model,
        "device": device,
        "dtype": settings.dtype,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "max_new_tokens": args.max_new_tokens,
        "fixed_length": args.fixed_length,
        "python_threads": threading.active_count(),
    }
    save(rows, args.out, meta)
    print(f"saved to {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
