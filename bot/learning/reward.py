"""A reward model trained on a server's votes, and a scorer that reranks candidates with it.

`train_reward_model` loads a local causal-LM checkpoint as a one-number sequence classifier and
trains a LoRA adapter over it, together with its new score head, with TRL's `RewardTrainer` on
conversational preference pairs (prompt, chosen answer, rejected answer): the loss is
-log σ(reward(chosen) - reward(rejected)). The base checkpoint is never changed. The adapter, head
included, is written to `out_dir` and nowhere else: it is saved into a hidden sibling folder and
renamed into place, so `out_dir` either holds a complete adapter or does not exist, even after a
crash; an existing `out_dir` is never overwritten.

`RewardScorer` loads such an adapter over the same base (float32, on the CPU, in eval mode) and
gives each candidate answer to a prompt a scalar reward, higher for what the community preferred.
It renders and tokenizes a conversation exactly as the trainer did, so a score means what
training taught. `score` blocks; it is thread-safe, calls being serialised by a lock.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

# datasets, peft and trl are imported where they are used: they take seconds to import, and the
# bot should not pay that before anyone trains or scores.

# The adapter's files, as peft's `save_pretrained` names them.
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass(frozen=True, slots=True)
class RewardRun:
    """What a training run did: optimizer steps, wall time, the loss logged at each step."""

    steps: int
    seconds: float
    losses: list[float]


class _LogRelay(TrainerCallback):
    """Collects each logged training loss and hands every log's numbers to `on_log`."""

    def __init__(
        self, losses: list[float], on_log: Callable[[dict[str, float]], None] | None
    ) -> None:
        self.losses = losses
        self.on_log_callback = on_log

    def on_log(
        self,
        args: Any,
        state: Any,
        control: Any,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Relays one log: only its numbers (the trainer also logs strings now and then)."""
        if not logs:
            return
        numbers = {
            key: float(value)
            for key, value in logs.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        if "loss" in numbers:
            self.losses.append(numbers["loss"])
        if self.on_log_callback is not None:
            self.on_log_callback(numbers)


def _load_tokenizer(base_dir: Path) -> Any:
    """The base's tokenizer, with a padding token (its eos if it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class _HeadSwapReport(logging.Filter):
    """Drops transformers' load report when all it lists is the LM head swapped for a score head.

    That swap is the point of loading a causal LM as a classifier, yet the report calls it a
    problem on every load; a report naming any other key still gets through.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for a load report listing only lm_head.* and score.* keys."""
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        # The report is a table whose first column is the key: "lm_head.weight | UNEXPECTED".
        cells = [line.split("|", 1)[0].strip() for line in message.splitlines() if "|" in line]
        keys = [cell for cell in cells if cell and cell != "Key" and set(cell) != {"-"}]
        return not keys or any(not key.startswith(("lm_head.", "score.")) for key in keys)


def _load_base(base_dir: Path, tokenizer: Any) -> Any:
    """The base checkpoint as a float32 sequence classifier with one output: the reward."""
    from transformers import AutoModelForSequenceClassification

    # The causal LM's head is dropped and a score head is created at random; the adapter trains
    # it (training) or replaces it with the trained one (scoring).
    report_log = logging.getLogger("transformers.modeling_utils")
    report_filter = _HeadSwapReport()
    report_log.addFilter(report_filter)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            base_dir, num_labels=1, dtype=torch.float32
        )
    finally:
        report_log.removeFilter(report_filter)
    # The classifier reads the reward at the last token that is not padding: it must know which
    # token pads, and agree with the tokenizer (as RewardTrainer also arranges).
    model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
    return model


def _render(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """A conversation's token ids, as TRL's RewardTrainer tokenizes a conversational row."""
    # trl.data_utils._tokenize: the chat template over prompt + answer, no generation prompt,
    # and no eos added (TRL appends eos only to plain-text rows).
    return list(
        tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    )


def _only_pairs(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows reduced to prompt, chosen and rejected; a row without them is an error."""
    rows = []
    for index, pair in enumerate(pairs):
        try:
            # Extra keys (ids, vote counts) would become dataset columns; "margin" would even
            # change the loss. The trainer sees exactly the three documented fields.
            rows.append({key: pair[key] for key in ("prompt", "chosen", "rejected")})
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"preference pair {index} needs 'prompt', 'chosen' and 'rejected' message lists"
            ) from exc
    return rows


def train_reward_model(
    base_dir: Path,
    pairs: list[dict[str, Any]],
    out_dir: Path,
    *,
    steps: int | None = None,
    epochs: float = 1.0,
    learning_rate: float = 1e-4,
    lora_r: int = 8,
    batch_size: int = 4,
    seed: int = 0,
    max_length: int = 512,
    on_log: Callable[[dict[str, float]], None] | None = None,
) -> RewardRun:
    """Trains a LoRA reward adapter (with its score head) on `pairs`; writes it to `out_dir`."""
    if len(pairs) < 2:
        raise ValueError(
            f"a reward model needs at least 2 preference pairs to learn from, got {len(pairs)}"
        )
    if steps is not None and steps < 0:
        raise ValueError(f"steps must be 0 or more, got {steps}")
    if out_dir.exists():
        # Checked before the work: os.replace would silently replace an empty folder.
        raise FileExistsError(f"{out_dir} already exists; a reward adapter is never overwritten")
    rows = _only_pairs(pairs)

    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PrinterCallback, set_seed
    from trl import RewardConfig, RewardTrainer

    started = time.monotonic()
    tokenizer = _load_tokenizer(base_dir)
    # The score head is initialised at random while loading: seed first, for a repeatable run.
    set_seed(seed)
    model = _load_base(base_dir, tokenizer)
    # SEQ_CLS makes peft train and save the score head in full (modules_to_save) and keeps it out
    # of "all-linear", so the adapter folder alone holds everything the base lacks.
    peft_config = LoraConfig(
        task_type="SEQ_CLS",
        r=lora_r,
        lora_alpha=2 * lora_r,
        lora_dropout=0.0,
        target_modules="all-linear",
    )
    losses: list[float] = []
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # A sibling, so the final rename stays on one file system and is atomic.
    staging = Path(
        tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent)
    )
    try:
        with tempfile.TemporaryDirectory(prefix="llmos-reward-") as scratch:
            config = RewardConfig(
                output_dir=scratch,
                max_steps=steps if steps else -1,
                num_train_epochs=epochs,
                learning_rate=learning_rate,
                per_device_train_batch_size=batch_size,
                seed=seed,
                max_length=max_length,
                logging_strategy="steps",
                logging_steps=1,
                save_strategy="no",
                report_to=[],
                use_cpu=not torch.cuda.is_available(),
                # TRL defaults to bf16 and activation checkpointing: training here is float32
                # (most CPUs run bf16 slower), and the bot's small models fit in memory without
                # recomputing activations, which costs time.
                bf16=False,
                fp16=False,
                activation_checkpointing=False,
                disable_tqdm=True,  # progress goes through on_log
            )
            trainer = RewardTrainer(
                model=model,
                args=config,
                train_dataset=Dataset.from_list(rows),
                processing_class=tokenizer,
                peft_config=peft_config,
                callbacks=[_LogRelay(losses, on_log)],
            )
            # Losses reach the caller through on_log; the trainer's own printer would put every
            # log dict on stdout.
            trainer.remove_callback(PrinterCallback)
            # RewardTrainer drops (does not truncate) pairs longer than max_length.
            prepared = trainer.train_dataset
            kept = len(prepared) if isinstance(prepared, Dataset) else 0
            if kept < 2:
                raise ValueError(
                    f"only {kept} of {len(rows)} preference pairs fit in max_length={max_length} "
                    "tokens; a reward model needs at least 2"
                )
            if steps != 0:  # 0 steps: the untrained adapter, a baseline to compare against
                trainer.train()
            trained: Any = trainer.model  # the PeftModel: saves the adapter and the head only
            trained.save_pretrained(staging)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return RewardRun(
        steps=trainer.state.global_step, seconds=time.monotonic() - started, losses=losses
    )


def _check_adapter(adapter_dir: Path) -> None:
    """Raises ValueError unless `adapter_dir` looks like a reward adapter written by this module."""
    try:
        config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{adapter_dir} is not a reward adapter: cannot read {ADAPTER_CONFIG} ({exc})"
        ) from exc
    if not isinstance(config, dict) or config.get("task_type") != "SEQ_CLS":
        raise ValueError(
            f"{adapter_dir} is not a reward adapter: {ADAPTER_CONFIG} is not a sequence "
            "classification (SEQ_CLS) adapter"
        )
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ValueError(f"{adapter_dir} is not a reward adapter: {ADAPTER_WEIGHTS} is missing")
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as tensors:
            keys = list(tensors.keys())
    except Exception as exc:  # safetensors raises its own SafetensorError, or OSError
        raise ValueError(
            f"{adapter_dir} is not a reward adapter: cannot read {ADAPTER_WEIGHTS} ({exc})"
        ) from exc
    # Without its trained head, peft would quietly keep the base's random one: scores of noise.
    if not any(f".{head}." in key for key in keys for head in ("score", "classifier")):
        raise ValueError(
            f"{adapter_dir} is not a reward adapter: {ADAPTER_WEIGHTS} holds no score head"
        )


class RewardScorer:
    """A trained reward adapter over its base model: scores candidate answers to a prompt."""

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int = 512) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._max_length = max_length
        # One forward pass at a time: the model and a fast tokenizer are not safe to share.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, base_dir: Path, adapter_dir: Path, *, max_length: int = 512) -> RewardScorer:
        """Loads the adapter in `adapter_dir` over the base in `base_dir` (blocking)."""
        from peft import PeftModel

        _check_adapter(adapter_dir)
        tokenizer = _load_tokenizer(base_dir)
        model = _load_base(base_dir, tokenizer)
        try:
            model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)
        except Exception as exc:  # peft, safetensors and torch each raise their own kinds
            raise ValueError(
                f"{adapter_dir} is not a reward adapter for {base_dir}: {type(exc).__name__}: {exc}"
            ) from exc
        model.to("cpu").eval()
        return cls(model, tokenizer, max_length=max_length)

    def score(self, prompt: list[dict[str, str]], answers: list[str]) -> list[float]:
        """The reward of each answer to `prompt`, in the order of `answers` (blocking)."""
        if not answers:
            return []
        with self._lock, torch.inference_mode():
            rows = []
            for answer in answers:
                ids = _render(self._tokenizer, [*prompt, {"role": "assistant", "content": answer}])
                # The trainer never saw a longer row (it drops them). Keep the end: the reward
                # is read at the last token, and the answer is at the end.
                rows.append(ids[-self._max_length :])
            width = max(len(ids) for ids in rows)
            pad = self._tokenizer.pad_token_id
            # Padded on the right, like TRL's DataCollatorForPreference, so positions match.
            input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in rows])
            attention_mask = torch.tensor(
                [[1] * len(ids) + [0] * (width - len(ids)) for ids in rows]
            )
            logits = self._model(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False
            ).logits
            return [float(value) for value in logits[:, 0].tolist()]
