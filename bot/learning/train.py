"""`python -m bot train`: a LoRA adapter trained on a server's feedback, judged, then kept.

Promises:
- The data comes from the database (`bot.learning.data`); too little gives `TooLittleData`
  with the counts, before any model is loaded.
- TRL's trainers do the training, on a LoRA adapter (peft) over the configured model in
  float32: supervised fine-tuning on the kept answers (when there are `MIN_SFT` or more), then
  DPO on the preference pairs. The base model is never changed.
- The adapter is judged before it is kept (`bot.learning.evaluate`): held-out preference
  accuracy against the base, reward margin, and form compliance with and without it.
- Its folder (`ADAPTER_DIR/<id>`: the adapter, `manifest.json`, and the reward model in
  `reward/` when one was trained) is written under a temporary name and renamed once complete;
  only then is it registered in the database. A crash leaves no adapter half-written.
- The manifest records the base model and its weights' hash, the data counts and the
  generation and feedback ids used, the hyperparameters, the metrics, the losses and the time.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.learning.data import MIN_PAIRS, TrainingSet, training_set
from bot.learning.evaluate import (
    ALPHA,
    MIN_HELD_OUT,
    FormScore,
    PreferenceScore,
    by_chance,
    forms,
    preferences,
    verdict,
)
from bot.learning.serving import base_folder
from bot.store.database import Store, utcnow
from bot.store.feedback import Feedback
from bot.store.models import AdapterRecord, Models

log = logging.getLogger(__name__)

MIN_SFT = 4  # kept answers: fewer are not worth a supervised pass
MANIFEST = "manifest.json"
REWARD_DIR = "reward"

# Called with (stage, step, logs) as training goes: "sft", "dpo" or "reward".
OnLog = Callable[[str, dict[str, float]], None]


@dataclass(frozen=True, slots=True)
class Hyper:
    """Training hyperparameters (they go into the manifest)."""

    lora_r: int = 8
    lora_alpha: int = 16
    learning_rate: float = 2e-4
    epochs: float = 1.0
    max_steps: int = 0  # per stage; 0: `epochs` decide
    beta: float = 0.1  # DPO's temperature
    batch_size: int = 4
    max_length: int = 512
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Trained:
    """What `train` made: the registered adapters and their verdicts."""

    generator: AdapterRecord
    reward: AdapterRecord | None


def new_id(guild_id: int | None) -> str:
    """A short, sortable, unique adapter id: where its data came from, when, and a nonce."""
    where = "all" if guild_id is None else f"g{guild_id % 10_000:04d}"
    return f"{where}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


class _Relay:
    """A transformers TrainerCallback handing each numeric log to `on_log` and keeping losses."""

    def __init__(self, stage: str, on_log: OnLog | None, losses: list[dict[str, Any]]) -> None:
        from transformers import TrainerCallback

        relay = self

        class Callback(TrainerCallback):  # type: ignore[misc]
            def on_log(
                self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any
            ) -> None:
                numbers = {
                    k: float(v)
                    for k, v in (logs or {}).items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
                if "loss" in numbers:
                    relay.losses.append(
                        {
                            "stage": relay.stage,
                            "step": int(state.global_step),
                            "loss": numbers["loss"],
                        }
                    )
                if relay.on_log is not None and numbers:
                    relay.on_log(relay.stage, {"step": float(state.global_step), **numbers})

        self.stage = stage
        self.on_log = on_log
        self.losses = losses
        self.callback = Callback()


def fit(
    model: Any, tokenizer: Any, data: TrainingSet, hyper: Hyper, on_log: OnLog | None = None
) -> tuple[Any, list[dict[str, Any]], int]:
    """Train a LoRA adapter over `model` (blocking): SFT on kept answers, then DPO on pairs.

    Returns the peft model (adapter "default"), the logged losses, and the optimiser steps.
    """
    from datasets import Dataset, disable_progress_bars
    from peft import LoraConfig
    from transformers import PrinterCallback, set_seed
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    set_seed(hyper.seed)
    disable_progress_bars()  # the losses are reported through `on_log`
    lora = LoraConfig(
        r=hyper.lora_r,
        lora_alpha=hyper.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    losses: list[dict[str, Any]] = []
    steps = 0
    common: dict[str, Any] = {
        "per_device_train_batch_size": hyper.batch_size,
        "learning_rate": hyper.learning_rate,
        "num_train_epochs": hyper.epochs,
        "max_steps": hyper.max_steps or -1,
        "logging_steps": 1,
        "report_to": [],
        "save_strategy": "no",
        "seed": hyper.seed,
        "use_cpu": not _cuda(),
        "disable_tqdm": True,
        # TRL turns both on by default; checkpointing only trades time for memory a 135M model
        # does not need, and bfloat16 is slower than float32 on most CPUs
        "activation_checkpointing": False,
        "bf16": False,
    }
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"llmos-train-{secrets.token_hex(4)}"
    try:
        peft_model: Any = None
        if len(data.train_sft) >= MIN_SFT:
            relay = _Relay("sft", on_log, losses)
            sft = SFTTrainer(
                model=model,
                args=SFTConfig(
                    output_dir=str(scratch / "sft"), max_length=hyper.max_length, **common
                ),
                train_dataset=Dataset.from_list([e.row for e in data.train_sft]),
                processing_class=tokenizer,
                peft_config=lora,
                callbacks=[relay.callback],
            )
            sft.remove_callback(PrinterCallback)
            sft.train()
            steps += int(sft.state.global_step)
            peft_model = sft.model
        relay = _Relay("dpo", on_log, losses)
        dpo = DPOTrainer(
            model=peft_model if peft_model is not None else model,
            args=DPOConfig(
                output_dir=str(scratch / "dpo"),
                beta=hyper.beta,
                max_length=hyper.max_length,
                **common,
            ),
            train_dataset=Dataset.from_list([e.row for e in data.train_pairs]),
            processing_class=tokenizer,
            peft_config=lora if peft_model is None else None,
            callbacks=[relay.callback],
        )
        dpo.remove_callback(PrinterCallback)
        dpo.train()
        steps += int(dpo.state.global_step)
        return dpo.model, losses, steps
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _versions() -> dict[str, str]:
    found = {}
    for name in ("torch", "transformers", "peft", "trl"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "?"
    return found


async def train(
    settings: Settings,
    store: Store,
    guild_id: int | None,
    *,
    hyper: Hyper | None = None,
    poems: int = 8,
    fraction: float = 0.2,
    min_pairs: int = MIN_PAIRS,
    reward: bool = True,
    on_log: OnLog | None = None,
    say: Callable[[str], None] = print,
) -> Trained:
    """Build the data, train, judge, write and register an adapter (see the module's promises).

    Raises `TooLittleData` before loading anything when the feedback is too thin, and
    `ModelLoadError` when the configured model cannot be loaded.
    """
    from bot.generation.batched import BatchedEngine
    from bot.generation.loader import load_model

    hyper = hyper or Hyper()
    data = await training_set(Feedback(store), guild_id, fraction=fraction, min_pairs=min_pairs)
    counts = data.counts
    say(
        f"Data: {counts['train_pairs']} pairs to train on, {counts['held_out_pairs']} held out; "
        f"{counts['train_sft']} kept answers ({counts['held_out_sft']} held out)."
    )
    loaded = await asyncio.to_thread(
        load_model,
        settings.model,
        device=settings.device,
        dtype="float32",  # training in half precision on a CPU is slow and unstable
        cache_dir=settings.model_cache_dir,
    )
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "right"  # the trainers pad on the right; generation pads left
    probe = BatchedEngine(loaded.model, tokenizer, model_name=loaded.name, prefix_cache_mb=0)
    base_hash = await asyncio.to_thread(probe.fingerprint)
    adapter_id = new_id(guild_id)
    root = Path(settings.adapter_dir)
    await asyncio.to_thread(_sweep, root)
    tmp = root / f".tmp-{adapter_id}"
    try:
        started = time.monotonic()
        peft_model, losses, steps = await asyncio.to_thread(
            fit, loaded.model, tokenizer, data, hyper, on_log
        )
        train_s = time.monotonic() - started
        await asyncio.to_thread(peft_model.save_pretrained, str(tmp), selected_adapters=["default"])
        held = [e.row for e in data.held_pairs]
        say(f"Trained in {train_s:.0f} s ({steps} steps). Judging on {len(held)} held-out pairs...")
        prefs = await asyncio.to_thread(preferences, peft_model, tokenizer, held, beta=hyper.beta)
        tokenizer.padding_side = "left"
        base = peft_model.unload()  # the base model again, without the LoRA layers
        engine = BatchedEngine(base, tokenizer, model_name=loaded.name, prefix_cache_mb=64)
        await asyncio.to_thread(engine.load_adapter, adapter_id, str(tmp))
        if poems:
            say(f"Writing {poems} poems with and without it, for form compliance...")
        form = await forms(engine, settings, adapter_id, poems)
        promotable, why = verdict(prefs, form)
        reward_record = None
        reward_meta: dict[str, Any] | None = None
        folder = base_folder(settings)
        if reward and folder is not None:
            say("Training the reward model on the same pairs...")
            reward_meta = await asyncio.to_thread(
                _train_reward, folder, data, tmp / REWARD_DIR, hyper, on_log
            )
        elif reward:
            say("No reward model: it needs the model as a local folder (MODEL=embedded or a path).")
        generations, feedback = data.used()
        manifest: dict[str, Any] = {
            "id": adapter_id,
            "kind": "generator",
            "base_model": loaded.name,
            "base_hash": base_hash,
            "guild_id": guild_id,
            "created_at": utcnow(),
            "data": {**counts, "generation_ids": generations, "feedback_ids": feedback},
            "hyperparameters": asdict(hyper),
            "metrics": {
                "preferences": asdict(prefs),
                "forms": asdict(form),
                "train_seconds": round(train_s, 1),
                "steps": steps,
                # both stages, per 100 preference pairs trained on (the kept answers of the
                # same outputs are fine-tuned on first)
                "seconds_per_100_pairs": round(100 * train_s / max(1, counts["train_pairs"]), 1),
            },
            "losses": losses,
            "promotable": promotable,
            "verdict": why,
            "reward": reward_meta,
            "versions": _versions(),
        }
        (tmp / MANIFEST).write_text(json_dumps(manifest), encoding="utf-8")
        final = root / adapter_id
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    generator = _record(manifest, final, "generator", promotable, why)
    if reward_meta is not None:
        reward_record = _record(
            {
                **manifest,
                "id": f"{adapter_id}-reward",
                "kind": "reward",
                "metrics": reward_meta,
                "losses": reward_meta["losses"],
                "promotable": reward_meta["promotable"],
                "verdict": reward_meta["verdict"],
            },
            final / REWARD_DIR,
            "reward",
            reward_meta["promotable"],
            reward_meta["verdict"],
        )
    # one transaction: the writer and its reward model are registered together or not at all
    records = [generator] + ([reward_record] if reward_record is not None else [])
    await Models(store).register(*records)
    say(why)
    return Trained(generator, reward_record)


def _sweep(root: Path) -> None:
    """Make the adapter folder, and clear what killed runs left half-written in it (a
    temporary folder more than a day old: no training runs that long)."""
    root.mkdir(parents=True, exist_ok=True)
    for left in root.glob(".tmp-*"):
        if time.time() - left.stat().st_mtime > 24 * 3600:
            shutil.rmtree(left, ignore_errors=True)


def json_dumps(data: Any) -> str:
    import json

    return json.dumps(data, indent=2, sort_keys=False)


def _record(
    manifest: dict[str, Any], path: Path, kind: str, promotable: bool, why: str
) -> AdapterRecord:
    return AdapterRecord(
        id=manifest["id"],
        kind=kind,
        guild_id=manifest["guild_id"],
        base_model=manifest["base_model"],
        base_hash=manifest["base_hash"],
        path=str(path.resolve()),
        manifest=manifest,
        promotable=promotable,
        verdict=why,
        created_at=manifest["created_at"],
    )


def _train_reward(
    folder: Path, data: TrainingSet, out: Path, hyper: Hyper, on_log: OnLog | None
) -> dict[str, Any]:
    """Train the reward model and judge it on the held-out pairs (blocking)."""
    from bot.learning.reward import RewardScorer, train_reward_model

    steps = 0

    def relay(logs: dict[str, float]) -> None:
        nonlocal steps
        if "loss" in logs:  # the reward trainer's logs carry no step: count them (one a step)
            steps += 1
        if on_log is not None:
            on_log("reward", {"step": float(steps), **logs})

    run = train_reward_model(
        folder,
        [e.row for e in data.train_pairs],
        out,
        steps=hyper.max_steps or None,
        epochs=hyper.epochs,
        learning_rate=hyper.learning_rate,
        lora_r=hyper.lora_r,
        batch_size=hyper.batch_size,
        seed=hyper.seed,
        max_length=hyper.max_length,
        on_log=relay if on_log else None,
    )
    scorer = RewardScorer.load(folder, out)
    right = 0
    for example in data.held_pairs:
        row = example.row
        chosen, rejected = row["chosen"][-1]["content"], row["rejected"][-1]["content"]
        good, bad = scorer.score(row["prompt"], [chosen, rejected])
        right += good > bad
    n = len(data.held_pairs)
    accuracy = right / n if n else 0.0
    promotable = n >= MIN_HELD_OUT and by_chance(right, n) < ALPHA
    why = (
        f"{'Promotable' if promotable else 'Not promotable'}: it ranks the chosen answer first "
        f"on {right} of {n} held-out pairs"
        + ("." if promotable else f" (it needs {MIN_HELD_OUT} or more, beyond chance).")
    )
    return {
        "held_out_accuracy": accuracy,
        "pairs": n,
        "steps": run.steps,
        "train_seconds": round(run.seconds, 1),
        "losses": [{"stage": "reward", "step": i + 1, "loss": v} for i, v in enumerate(run.losses)],
        "promotable": promotable,
        "verdict": why,
    }


__all__ = ["FormScore", "Hyper", "PreferenceScore", "Trained", "fit", "train"]
