"""Training sets straight from the database: what a server (or every server) kept and chose.

Promises:
- Preference pairs and SFT rows come from `Feedback.examples`: only feedback people gave
  through Discord, on outputs still in the database. Someone who used `/privacy forget-me` has
  no rows left there, so nothing of theirs is ever read here again.
- The held-out split is by output, stable across runs (a hash of the output id): the
  alternatives of one output never sit on both sides, and retraining on more data keeps the
  earlier held-out outputs held out.
- `TooLittleData` names the counts found and the counts needed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from bot.store.feedback import Example, Feedback

HELD_OUT = 0.2
MIN_PAIRS = 10  # preference pairs, both sides together: fewer teach nothing measurable


class TooLittleData(ValueError):
    """Not enough feedback to train on; the message gives the counts."""


@dataclass(frozen=True, slots=True)
class TrainingSet:
    guild_id: int | None  # None: every server
    train_pairs: list[Example]
    held_pairs: list[Example]
    train_sft: list[Example]
    held_sft: list[Example]

    @property
    def counts(self) -> dict[str, int]:
        return {
            "train_pairs": len(self.train_pairs),
            "held_out_pairs": len(self.held_pairs),
            "train_sft": len(self.train_sft),
            "held_out_sft": len(self.held_sft),
        }

    def used(self) -> tuple[list[int], list[int]]:
        """Every generation id and feedback id the set was built from (for the manifest)."""
        everything = self.train_pairs + self.held_pairs + self.train_sft + self.held_sft
        generations = sorted({i for e in everything for i in e.generation_ids})
        feedback = sorted({i for e in everything for i in e.feedback_ids})
        return generations, feedback


def held_out(output_id: int, fraction: float) -> bool:
    """Whether an output is in the held-out split (stable: a hash of its id)."""
    digest = hashlib.sha256(f"llmos-output-{output_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") < fraction * 2**32


def held_outputs(output_ids: set[int], fraction: float) -> set[int]:
    """The outputs held out. With two outputs or more, at least one is, so that there is
    always something to judge an adapter on."""
    held = {i for i in output_ids if held_out(i, fraction)}
    if fraction > 0 and not held and len(output_ids) >= 2:
        held = {max(output_ids)}
    return held


def split(
    examples: list[Example], fraction: float, held: set[int] | None = None
) -> tuple[list[Example], list[Example]]:
    """(train, held out), by output (`held`: the outputs held out; by default, chosen among
    these examples' outputs)."""
    if held is None:
        held = held_outputs({e.output_id for e in examples}, fraction)
    return (
        [e for e in examples if e.output_id not in held],
        [e for e in examples if e.output_id in held],
    )


async def training_set(
    feedback: Feedback,
    guild_id: int | None,
    *,
    fraction: float = HELD_OUT,
    min_pairs: int = MIN_PAIRS,
) -> TrainingSet:
    """The training set of a server (None: every server); raises `TooLittleData`."""
    found = await feedback.examples(guild_id)
    # one choice of outputs for both kinds: a held-out pair's kept answer is never trained on
    held = held_outputs({e.output_id for e in found.pairs}, fraction)
    held |= {e.output_id for e in found.sft if held_out(e.output_id, fraction)}
    train_pairs, held_pairs = split(found.pairs, fraction, held)
    train_sft, held_sft = split(found.sft, fraction, held)
    where = f"server {guild_id}" if guild_id is not None else "all servers"
    if len(found.pairs) < min_pairs or not train_pairs or not held_pairs:
        raise TooLittleData(
            f"Not enough feedback from {where} to train on: {len(found.pairs)} preference "
            f"pairs ({len(train_pairs)} to train on, {len(held_pairs)} held out) and "
            f"{len(found.sft)} kept answers. Training needs at least {min_pairs} pairs, from "
            "two outputs or more. A pair is an output with one version kept or voted up and "
            "another voted down (or not kept): use 👍/👎 and Keep on the bot's answers."
        )
    return TrainingSet(guild_id, train_pairs, held_pairs, train_sft, held_sft)
