"""The reward model: trained on preference pairs with TRL, it scores answers the way votes went."""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.learning.reward import RewardRun, RewardScorer, train_reward_model

# Every chosen answer speaks of lanterns; its rejected twin is the same line without them.
SUBJECTS = [
    "the harbour",
    "a winter night",
    "the old mill",
    "my grandmother",
    "the river",
    "a quiet street",
    "the mountains",
    "an empty station",
    "the garden",
    "a summer storm",
]
ASKS = [
    "Write a short poem about {}.",
    "Give me two lines on {}.",
    "Describe {} briefly.",
    "Say something tender about {}.",
]
TRAIT = [
    ("Soft lanterns glow over {}, warm and slow.", "Soft shadows fall over {}, grey and slow."),
    ("{} sleeps beneath lanterns and the tide.", "{} sleeps beneath the clouds and the tide."),
    ("Lanterns hum above {} until the dawn.", "Rain hums above {} until the dawn."),
    ("We carried lanterns down to {} and sang.", "We carried baskets down to {} and sang."),
]
# Held out: other subjects, other requests, other sentences; the same taste.
HELD_SUBJECTS = ["the lighthouse", "a frozen lake", "the market", "an autumn field", "the bridge"]
HELD_ASKS = ["Compose a verse about {}.", "A few words on {}, please."]
HELD_TRAIT = [
    ("Paper lanterns drift across {} at dusk.", "Paper boats drift across {} at dusk."),
    ("By {} the lanterns burn all night.", "By {} the candles burn all night."),
]
STEPS = 20
LEARNING_RATE = 3e-3


def pairs(
    subjects: list[str], asks: list[str], trait: list[tuple[str, str]], *, flip: bool = False
) -> list[dict[str, Any]]:
    """Preference rows: each subject asked each way; `flip` makes the voters dislike lanterns."""
    rows = []
    for i, subject in enumerate(subjects):
        for j, ask in enumerate(asks):
            lantern, plain = (
                line.format(subject).capitalize() for line in trait[(i + j) % len(trait)]
            )
            chosen, rejected = (plain, lantern) if flip else (lantern, plain)
            rows.append(
                {
                    "prompt": [{"role": "user", "content": ask.format(subject)}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
    return rows


TRAIN = pairs(SUBJECTS, ASKS, TRAIT)
HELD_OUT = pairs(HELD_SUBJECTS, HELD_ASKS, HELD_TRAIT)
PROMPT = [{"role": "user", "content": "Write a short poem about the sea."}]


@dataclass
class Adapters:
    """Reward adapters over the tiny model: untrained, trained on the votes, on reversed votes."""

    base: Path
    untrained: Path
    trained: Path
    reversed: Path
    run: RewardRun
    logs: list[dict[str, float]]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Adapters:
    root = tmp_path_factory.mktemp("reward")
    logs: list[dict[str, float]] = []
    options: dict[str, Any] = {"learning_rate": LEARNING_RATE, "batch_size": 8, "seed": 0}
    train_reward_model(tiny_model_dir, TRAIN, root / "untrained", steps=0, **options)
    run = train_reward_model(
        tiny_model_dir, TRAIN, root / "trained", steps=STEPS, on_log=logs.append, **options
    )
    flipped = pairs(SUBJECTS, ASKS, TRAIT, flip=True)
    train_reward_model(tiny_model_dir, flipped, root / "reversed", steps=STEPS, **options)
    return Adapters(
        tiny_model_dir, root / "untrained", root / "trained", root / "reversed", run, logs
    )


def lantern_margins(scorer: RewardScorer) -> list[float]:
    """reward(lantern answer) - reward(plain answer), for each held-out pair."""
    margins = []
    for row in HELD_OUT:
        lantern, plain = scorer.score(
            row["prompt"], [row["chosen"][0]["content"], row["rejected"][0]["content"]]
        )
        margins.append(lantern - plain)
    return margins


def test_the_data_is_what_the_test_says() -> None:
    assert len(TRAIN) == 40 and len(HELD_OUT) == 10
    for row in TRAIN + HELD_OUT:
        assert "lantern" in row["chosen"][0]["content"].lower()
        assert "lantern" not in row["rejected"][0]["content"].lower()
    held_prompts = {row["prompt"][0]["content"] for row in HELD_OUT}
    assert not held_prompts & {row["prompt"][0]["content"] for row in TRAIN}


@pytest.mark.slow
def test_the_scorer_learns_the_taste_of_the_votes(adapters: Adapters) -> None:
    untrained = lantern_margins(RewardScorer.load(adapters.base, adapters.untrained))
    trained = lantern_margins(RewardScorer.load(adapters.base, adapters.trained))
    reversed_ = lantern_margins(RewardScorer.load(adapters.base, adapters.reversed))

    # On answers it never saw, the trained model prefers lanterns, as its voters did; the model
    # trained on the opposite votes dislikes them: the direction comes from the votes.
    assert sum(margin > 0 for margin in trained) >= 9
    assert sum(margin > 0 for margin in reversed_) <= 1
    # Before training the random head barely tells the answers apart (measured: |mean| < 0.002,
    # trained ≈ 2).
    mean_untrained = abs(sum(untrained) / len(untrained))
    assert sum(trained) / len(trained) > max(0.5, 20 * mean_untrained)


@pytest.mark.slow
def test_training_reports_each_step(adapters: Adapters) -> None:
    run = adapters.run
    assert run.steps == STEPS
    assert run.seconds > 0
    assert len(run.losses) == STEPS
    step_logs = [log for log in adapters.logs if "loss" in log]
    assert [log["loss"] for log in step_logs] == run.losses
    assert all(isinstance(value, float) for log in adapters.logs for value in log.values())
    assert sum(run.losses[-5:]) < sum(run.losses[:5])


@pytest.mark.slow
def test_the_adapter_folder_is_complete_and_never_overwritten(adapters: Adapters) -> None:
    names = {path.name for path in adapters.trained.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    # Nothing half-written is left beside it.
    assert [
        path.name for path in adapters.trained.parent.iterdir() if path.name.startswith(".")
    ] == []

    before = (adapters.trained / "adapter_model.safetensors").read_bytes()
    with pytest.raises(FileExistsError):
        train_reward_model(adapters.base, TRAIN, adapters.trained, steps=1)
    assert (adapters.trained / "adapter_model.safetensors").read_bytes() == before
    assert [
        path.name for path in adapters.trained.parent.iterdir() if path.name.startswith(".")
    ] == []


def _garbage_config(folder: Path) -> None:
    (folder / "adapter_config.json").write_text("{not json")


def _no_weights(folder: Path) -> None:
    (folder / "adapter_model.safetensors").unlink()


def _garbage_weights(folder: Path) -> None:
    (folder / "adapter_model.safetensors").write_bytes(b"\x00" * 64)


def _no_config(folder: Path) -> None:
    (folder / "adapter_config.json").unlink()


def _not_a_folder(folder: Path) -> None:
    shutil.rmtree(folder)


@pytest.mark.slow
@pytest.mark.parametrize(
    "corrupt", [_garbage_config, _no_weights, _garbage_weights, _no_config, _not_a_folder]
)
def test_a_corrupt_adapter_is_a_clear_error(
    adapters: Adapters, tmp_path: Path, corrupt: Any
) -> None:
    folder = tmp_path / "adapter"
    shutil.copytree(adapters.trained, folder)
    corrupt(folder)
    with pytest.raises(ValueError, match="is not a reward adapter"):
        RewardScorer.load(adapters.base, folder)


@pytest.mark.parametrize("count", [0, 1])
def test_fewer_than_two_pairs_is_an_error(tmp_path: Path, count: int) -> None:
    # Refused before anything is loaded: the base folder need not even exist.
    with pytest.raises(ValueError, match="at least 2"):
        train_reward_model(tmp_path / "no-model", TRAIN[:count], tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def scorer(adapters: Adapters) -> RewardScorer:
    return RewardScorer.load(adapters.base, adapters.trained)


@pytest.mark.slow
def test_scores_come_back_in_the_order_of_the_answers(scorer: RewardScorer) -> None:
    first, second = "Lanterns sway over the sea.", "The sea is grey and very, very wide tonight."
    assert scorer.score(PROMPT, []) == []
    forward = scorer.score(PROMPT, [first, second])
    backward = scorer.score(PROMPT, [second, first])
    assert forward == pytest.approx(backward[::-1], abs=1e-5)
    # Padding the shorter answer in a batch does not change its score.
    assert scorer.score(PROMPT, [first]) == pytest.approx(forward[:1], abs=1e-4)


@pytest.mark.slow
def test_an_answer_longer_than_max_length_is_scored(adapters: Adapters) -> None:
    short = RewardScorer.load(adapters.base, adapters.trained, max_length=16)
    [reward] = short.score(PROMPT, ["Lanterns " * 50])
    assert isinstance(reward, float)


@pytest.mark.slow
def test_scoring_from_several_threads_matches_scoring_alone(scorer: RewardScorer) -> None:
    answers = [row["chosen"][0]["content"] for row in HELD_OUT[:3]]
    alone = scorer.score(PROMPT, answers)
    results: list[list[float]] = []

    def score() -> None:
        results.append(scorer.score(PROMPT, answers))

    threads = [threading.Thread(target=score) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    for result in results:
        assert result == pytest.approx(alone, abs=1e-5)
