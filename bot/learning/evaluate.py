"""Judging an adapter before it may serve: held-out preferences and form compliance.

- `preferences`: on held-out pairs, how often the model gives the chosen answer a higher
  log-probability than the rejected one, with the adapter and without it (the base model), and
  the mean reward margin, DPO's implicit reward: beta * (the adapter's log-ratio to the base
  on the chosen answer minus that on the rejected one).
- `forms`: the share of a fixed battery of poems that meet their form by syllables, rhyme and
  line count (`prosody.check`, as `python -m tools.eval` counts), written by the bot's own
  line-by-line path, with and without the adapter.
- `verdict`: promotable only if the adapter moved toward the chosen answers (on most held-out
  pairs its log-ratio to the base is higher on the chosen answer than on the rejected one: the
  implicit reward ranks them as the server did), without preferring the chosen answer less
  often than the base, and does not lower form compliance by more than `FORMS_SLACK`. The
  second condition alone is not enough: where the base already prefers every chosen answer (a
  shorter one, say: a shorter text has the higher likelihood), accuracy cannot rise.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from bot.config import Settings
from bot.generation.base import Engine
from bot.generation.queue import GenerationQueue
from bot.generation.types import GenerationRequest
from bot.prompts import prosody

FORMS_SLACK = 0.02  # two points
# Held-out pairs needed to judge an adapter at all, and how sure the judgement must be: the
# adapter must move toward the chosen answer on so many pairs that a coin would do as well
# less than 5% of the time (a one-sided sign test: 5 of 5, 9 of 10, 15 of 20).
MIN_HELD_OUT = 5
ALPHA = 0.05
BATTERY = [
    ("haiku", "autumn rain"),
    ("limerick", "a cat who learned to cook"),
    ("tanka", "the harbour at dawn"),
    ("haiku", "an old lighthouse"),
    ("haiku", "snow on the station roof"),
    ("limerick", "a wizard who lost his hat"),
    ("tanka", "letters never sent"),
    ("limerick", "the last train home"),
]


@dataclass(frozen=True, slots=True)
class PreferenceScore:
    pairs: int
    adapter_accuracy: float  # share of pairs where the adapter prefers the chosen answer
    base_accuracy: float  # the same for the base model
    reward_margin: float  # mean DPO implicit reward margin (beta-scaled)
    reward_accuracy: float  # share of pairs where that margin is positive


@dataclass(frozen=True, slots=True)
class FormScore:
    poems: int
    base: float  # share meeting their form, base model
    adapter: float  # with the adapter


def _logp(model: Any, tokenizer: Any, prompt: list[dict[str, str]], answer: str) -> float:
    """The summed log-probability of `answer` after `prompt`, as the chat template renders it."""
    head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": answer}], tokenize=False
    )
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    if full.startswith(head):
        # the answer tokenised on its own, as TRL does: tokens never merge across the boundary
        ids = head_ids + tokenizer(full[len(head) :], add_special_tokens=False)["input_ids"]
    else:  # a template that renders the last turn differently: the whole, split by length
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    start = len(head_ids)
    tensor = torch.tensor([ids], device=model.device)
    logits = model(input_ids=tensor).logits[0, :-1].float()
    logps = torch.log_softmax(logits, dim=-1)
    targets = tensor[0, 1:]
    picked = logps.gather(1, targets.unsqueeze(1)).squeeze(1)
    return float(picked[start - 1 :].sum())


def preferences(
    model: Any, tokenizer: Any, pairs: list[dict[str, Any]], *, beta: float = 0.1
) -> PreferenceScore:
    """Score a peft model on held-out pairs, with its adapter and without (blocking)."""
    if not pairs:
        return PreferenceScore(0, 0.0, 0.0, 0.0, 0.0)
    wins = base_wins = reward_wins = 0
    margins = []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for pair in pairs:
            prompt = pair["prompt"]
            chosen, rejected = pair["chosen"][-1]["content"], pair["rejected"][-1]["content"]
            pc, pr = (
                _logp(model, tokenizer, prompt, chosen),
                _logp(model, tokenizer, prompt, rejected),
            )
            with _base(model):
                bc = _logp(model, tokenizer, prompt, chosen)
                br = _logp(model, tokenizer, prompt, rejected)
            wins += pc > pr
            base_wins += bc > br
            margin = beta * ((pc - bc) - (pr - br))
            margins.append(margin)
            reward_wins += margin > 0
    model.train(was_training)
    n = len(pairs)
    return PreferenceScore(n, wins / n, base_wins / n, sum(margins) / n, reward_wins / n)


@contextlib.contextmanager
def _base(model: Any) -> Iterator[None]:
    """The peft model with its adapter switched off: the base model."""
    with model.disable_adapter():
        yield


async def forms(engine: Engine, settings: Settings, adapter: str, poems: int) -> FormScore:
    """Write the first `poems` of the battery with the base model and with `adapter` (loaded in
    `engine`), side by side through a queue of their own; the share meeting their form each."""
    from bot.writing.run import complete
    from bot.writing.tasks import poem_task

    if poems <= 0:
        return FormScore(0, 0.0, 0.0)
    await asyncio.to_thread(prosody.warm)
    cases = [BATTERY[i % len(BATTERY)] for i in range(poems)]

    async def nowhere(_: str) -> None:
        return None

    async with GenerationQueue(
        engine, max_queue=10_000, max_pending_per_user=10_000, timeout=600
    ) as queue:

        async def one(form: str, topic: str, which: str | None) -> bool:
            task = poem_task(settings, topic, form)
            request = GenerationRequest(0, task.prompt, task.params, adapter=which)
            text, _result, _retried = await complete(queue, task, queue.submit(request), 0, nowhere)
            return prosody.check(text, form).ok

        base = await asyncio.gather(*(one(f, t, None) for f, t in cases))
        tuned = await asyncio.gather(*(one(f, t, adapter) for f, t in cases))
    return FormScore(poems, sum(base) / poems, sum(tuned) / poems)


def by_chance(wins: int, pairs: int) -> float:
    """The chance of `wins` or more of `pairs` by coin flips (a one-sided sign test)."""
    return sum(math.comb(pairs, k) for k in range(wins, pairs + 1)) / 2**pairs if pairs else 1.0


def verdict(prefs: PreferenceScore, form: FormScore) -> tuple[bool, str]:
    """Whether an adapter may be promoted without forcing, and why (one sentence or two)."""
    reasons = []
    moved = round(prefs.reward_accuracy * prefs.pairs)
    if prefs.pairs < MIN_HELD_OUT:
        reasons.append(
            f"{prefs.pairs} held-out pairs are too few to judge it on (at least "
            f"{MIN_HELD_OUT}; more feedback, or train on every server's)"
        )
    elif by_chance(moved, prefs.pairs) >= ALPHA:
        reasons.append(
            f"it moved toward the chosen answer on {moved} of {prefs.pairs} held-out pairs, "
            "which chance alone would often do"
        )
    elif prefs.adapter_accuracy < prefs.base_accuracy:
        reasons.append(
            f"on {prefs.pairs} held-out pairs it prefers the chosen answer "
            f"{prefs.adapter_accuracy:.0%} of the time, less often than the base model "
            f"({prefs.base_accuracy:.0%})"
        )
    if form.poems and form.adapter < form.base - FORMS_SLACK:
        reasons.append(
            f"form compliance fell from {form.base:.0%} to {form.adapter:.0%} "
            f"over {form.poems} poems (more than {FORMS_SLACK:.0%} allowed)"
        )
    if reasons:
        return False, "Not promotable: " + "; ".join(reasons) + "."
    forms_said = (
        f"; form compliance {form.base:.0%} → {form.adapter:.0%} over {form.poems} poems"
        if form.poems
        else "; form compliance was not measured"
    )
    return True, (
        f"Promotable: on {prefs.pairs} held-out pairs it prefers the chosen answer "
        f"{prefs.adapter_accuracy:.0%} of the time against the base's {prefs.base_accuracy:.0%}, "
        f"and moved toward it on {prefs.reward_accuracy:.0%}{forms_said}."
    )
