"""Learning from a server's feedback: the training set, the judgement, the adapter's folder and
manifest, promotions and rollbacks, forgetting, and serving adapters beside the base model.

Training runs for real (TRL on a LoRA adapter) on the tiny model, once for the module, and for
two steps on the embedded model. What is asserted is what the program guarantees: a
synthetic set whose chosen answers share a marker word, trained on with fixed seeds, moves the
held-out preference accuracy far above the base model's.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from bot.config import Settings
from bot.generation.base import AdapterRefused
from bot.generation.batched import BatchedEngine
from bot.generation.loader import LoadedModel
from bot.generation.types import GenerationRequest, Message, Prompt, SamplingParams
from bot.learning import data as data_module
from bot.learning.admin import check_promotion, describe
from bot.learning.data import TooLittleData, held_out, split, training_set
from bot.learning.evaluate import FormScore, PreferenceScore, verdict
from bot.learning.serving import Adapters
from bot.learning.train import MANIFEST, REWARD_DIR, Hyper, Trained, train
from bot.store import Store
from bot.store.feedback import Example, Feedback
from bot.store.models import EVERY_SERVER, Models, NothingToRollBack
from tests.fakes import QueuedJob
from tests.learning_fixtures import seed_preferences, settings_for

GUILD = 77
pytestmark = pytest.mark.slow


def quiet(_: str) -> None:
    return None


@pytest.fixture(scope="module")
async def trained(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, Trained]:
    """One adapter (and reward model) trained on 24 outputs of marker-word feedback."""
    root = tmp_path_factory.mktemp("learning")
    settings = settings_for(tiny_model_dir, root)
    async with Store.open(settings.database_path) as store:
        await seed_preferences(store, GUILD, 24)
        done = await train(
            settings,
            store,
            GUILD,
            hyper=Hyper(max_steps=5, learning_rate=1e-3),
            poems=1,
            say=quiet,
        )
    return settings, done


# -- the training set ---------------------------------------------------------------------------


def example(output_id: int) -> Example:
    return Example(output_id, {"prompt": []}, (output_id,), ())


def test_the_held_out_split_is_by_output_and_stable() -> None:
    examples = [example(i) for i in range(200) for _ in range(2)]
    train_part, held = split(examples, 0.2)
    assert {e.output_id for e in train_part}.isdisjoint({e.output_id for e in held})
    assert 20 <= len({e.output_id for e in held}) <= 60
    assert split(examples, 0.2) == (train_part, held)
    # more data later keeps the earlier held-out outputs held out
    assert all(held_out(e.output_id, 0.2) for e in held)
    # two outputs or more: something is always held out
    few = [example(1), example(2)]
    assert split(few, 0.2)[1] and split(few, 0.2)[0]


async def test_too_little_feedback_says_the_counts(db_target: str | Path) -> None:
    async with Store.open(db_target) as store:
        await seed_preferences(store, GUILD, 3)
        with pytest.raises(TooLittleData) as refused:
            await training_set(Feedback(store), GUILD)
        said = str(refused.value)
        assert "3 preference pairs" in said and "at least 10" in said
        assert "3 kept answers" in said
        # another server's feedback is not this one's
        with pytest.raises(TooLittleData, match="0 preference pairs"):
            await training_set(Feedback(store), GUILD + 1)


async def test_training_refuses_thin_data_before_loading_any_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("bot.generation.loader.load_model", no_model)
    settings = settings_for(tmp_path / "nothing", tmp_path)
    async with Store.open(settings.database_path) as store:
        with pytest.raises(TooLittleData):
            await train(settings, store, GUILD, say=quiet)
    assert not (tmp_path / "adapters").exists() or not any((tmp_path / "adapters").iterdir())


async def test_forgotten_people_are_never_trained_on_and_adapters_say_so(
    trained: tuple[Settings, Trained], tmp_path: Path
) -> None:
    settings, done = trained
    copy = tmp_path / "db.sqlite3"
    shutil.copy(settings.database_path, copy)
    async with Store.open(copy) as store:
        before = await Feedback(store).examples(GUILD)
        assert before.pairs
        models = Models(store)
        record = await models.get(done.generator.id)
        assert record is not None
        assert "forgotten" not in await describe(models, record, {})
        # the voter who chose every preferred version asks to be forgotten
        await Feedback(store).forget(502, segments="anonymise")
        after = await Feedback(store).examples(GUILD)
        used = sorted({i for e in after.pairs + after.sft for i in e.feedback_ids})
        marks = ",".join("?" * len(used)) or "NULL"
        whose = await store.fetchall(
            f"SELECT DISTINCT user_id FROM feedback WHERE id IN ({marks})", tuple(used)
        )
        assert {r["user_id"] for r in whose} <= {501}  # nothing of theirs is used again
        # their keeps made the kept answers: none is left to fine-tune on
        assert after.sft == []
        shown = await describe(models, record, {})
        assert "⚠ trained on data since forgotten" in shown
        # the requester goes too: none of their outputs remain to train on
        await Feedback(store).forget(501, segments="anonymise")
        assert (await Feedback(store).examples(GUILD)).pairs == []


# -- the judgement ------------------------------------------------------------------------------


def prefs(adapter: float, base: float, moved: float = 0.9, pairs: int = 10) -> PreferenceScore:
    return PreferenceScore(pairs, adapter, base, 0.1, moved)


def test_the_verdict_blocks_an_adapter_no_better_or_worse_at_forms() -> None:
    ok, why = verdict(prefs(0.8, 0.5), FormScore(8, 0.875, 0.875))
    assert ok and "80%" in why and "50%" in why
    ok, why = verdict(prefs(0.6, 0.5, moved=0.8), FormScore(0, 0, 0))
    assert not ok and "on 8 of 10 held-out pairs, which chance alone would often do" in why
    ok, why = verdict(prefs(0.6, 0.5, moved=0.9), FormScore(0, 0, 0))
    assert ok  # 9 of 10: a coin does as well about 1% of the time
    ok, why = verdict(prefs(1.0, 0.0, moved=1.0, pairs=4), FormScore(0, 0, 0))
    assert not ok and "4 held-out pairs are too few" in why
    ok, why = verdict(prefs(0.4, 0.5, moved=0.9), FormScore(0, 0, 0))
    assert not ok and "less often than the base model (50%)" in why
    # a base that already prefers every chosen answer: accuracy cannot rise, the margin can
    ok, why = verdict(prefs(1.0, 1.0, moved=1.0), FormScore(0, 0, 0))
    assert ok and "moved toward it on 100%" in why
    ok, why = verdict(prefs(0.9, 0.5), FormScore(8, 1.0, 0.875))
    assert not ok and "form compliance fell from 100% to 88%" in why
    ok, why = verdict(prefs(0.0, 0.0, pairs=0), FormScore(0, 0, 0))
    assert not ok and "0 held-out pairs are too few" in why


# -- training for real --------------------------------------------------------------------------


async def test_feedback_trains_an_adapter_that_prefers_what_the_server_chose(
    trained: tuple[Settings, Trained],
) -> None:
    settings, done = trained
    record = done.generator
    metrics = record.manifest["metrics"]["preferences"]
    # the base model has no reason to prefer the marker word; the adapter learned to
    assert metrics["pairs"] >= 3
    assert metrics["adapter_accuracy"] >= metrics["base_accuracy"] + 0.5
    assert metrics["reward_margin"] > 0
    assert record.promotable and record.verdict.startswith("Promotable")
    folder = Path(record.path)
    assert folder.parent == settings.adapter_dir.resolve()
    assert sorted(p.name for p in settings.adapter_dir.iterdir()) == [record.id]  # no temp left
    assert (folder / "adapter_model.safetensors").is_file()
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["base_hash"] == record.base_hash and len(record.base_hash) == 64
    assert manifest["guild_id"] == GUILD
    assert manifest["data"]["train_pairs"] + manifest["data"]["held_out_pairs"] == 24
    assert manifest["data"]["generation_ids"] and manifest["data"]["feedback_ids"]
    assert manifest["hyperparameters"]["max_steps"] == 5
    assert {x["stage"] for x in manifest["losses"]} == {"sft", "dpo"}
    assert manifest["metrics"]["forms"]["poems"] == 1
    assert manifest["versions"]["trl"] and manifest["versions"]["peft"]
    # the reward model, trained on the same pairs, ranks held-out pairs as the server did
    assert done.reward is not None and (folder / REWARD_DIR / "adapter_config.json").is_file()
    assert done.reward.manifest["metrics"]["held_out_accuracy"] > 0.5


async def test_a_crash_while_training_leaves_no_adapter(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("killed mid-training")

    monkeypatch.setattr("bot.learning.train.fit", crash)
    settings = settings_for(tiny_model_dir, tmp_path)
    async with Store.open(settings.database_path) as store:
        await seed_preferences(store, GUILD, 12)
        with pytest.raises(RuntimeError):
            await train(settings, store, GUILD, poems=0, reward=False, say=quiet)
        assert await Models(store).all() == []
    assert list(settings.adapter_dir.iterdir()) == []


async def test_a_few_steps_on_the_embedded_model(
    embedded: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for("embedded", tmp_path)
    monkeypatch.setattr(data_module, "MIN_PAIRS", 4)
    async with Store.open(settings.database_path) as store:
        await seed_preferences(store, GUILD, 6)
        done = await train(
            settings,
            store,
            GUILD,
            hyper=Hyper(max_steps=1, batch_size=2),
            poems=0,
            min_pairs=4,
            reward=False,
            say=quiet,
        )
    # trained in float32, it serves the bot's own load of the same model (bfloat16 or not)
    engine = BatchedEngine(embedded.model, embedded.tokenizer, model_name=embedded.name)
    assert done.generator.base_hash == engine.fingerprint()
    # one step of supervised fine-tuning on the kept answers, one of DPO
    assert done.generator.manifest["metrics"]["steps"] == 2
    assert {x["stage"] for x in done.generator.manifest["losses"]} == {"sft", "dpo"}


# -- promotions ---------------------------------------------------------------------------------


async def test_promotions_fall_back_and_roll_back(db_target: str | Path, tmp_path: Path) -> None:
    async with Store.open(db_target) as store:
        models = Models(store)
        for name in ("a", "b", "c"):
            record = replace(_record(name), path=str(tmp_path))
            await models.register(record)
        await models.promote("a", scope=EVERY_SERVER, kind="generator")
        await models.promote("b", scope=GUILD, kind="generator")
        await models.promote("c", scope=GUILD, kind="generator")
        assert await models.in_force() == {(0, "generator"): "a", (GUILD, "generator"): "c"}
        after = await models.rollback(scope=GUILD, kind="generator")
        assert after is not None and after.adapter_id == "b"
        assert await models.rollback(scope=GUILD, kind="generator") is None
        with pytest.raises(NothingToRollBack):
            await models.rollback(scope=GUILD, kind="generator")
        assert await models.in_force() == {(0, "generator"): "a"}


def _record(name: str) -> Any:
    from bot.store.models import AdapterRecord

    return AdapterRecord(name, "generator", None, "m", "h" * 64, "", {}, True, "ok", "2026")


# -- serving ------------------------------------------------------------------------------------


def prompt_of(text: str) -> Prompt:
    return Prompt((Message("user", text),), text)


def greedy(engine: BatchedEngine, adapter: str | None, text: str = "Write about rain.") -> str:
    params = SamplingParams(max_new_tokens=8, method="greedy")
    job = QueuedJob(GenerationRequest(1, prompt_of(text), params, adapter=adapter))
    out = engine.generate([job])[0]
    assert not isinstance(out, BaseException)
    return out.text


async def test_the_engine_serves_an_adapter_beside_the_base_model(
    trained: tuple[Settings, Trained], tiny_model_dir: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _settings, done = trained
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.padding_side = "left"
    engine = BatchedEngine(model, tokenizer, model_name="tiny")
    before = greedy(engine, None)
    logits_before = _logits(engine)
    engine.load_adapter(done.generator.id, done.generator.path)
    assert greedy(engine, None) == before  # the base model is untouched
    with engine._lock:
        engine._use(done.generator.id)
        tuned = _logits(engine)
        engine._use(None)
    assert not torch.allclose(tuned, logits_before)  # the adapter writes differently
    # one call with both kinds of request is split: each answer by one model only
    params = SamplingParams(max_new_tokens=6, method="greedy")
    jobs = [
        QueuedJob(GenerationRequest(1, prompt_of("Write about rain."), params, adapter=a))
        for a in (None, done.generator.id, None)
    ]
    outs = engine.generate(jobs)
    assert not any(isinstance(o, BaseException) for o in outs)
    assert outs[0].text == outs[2].text  # type: ignore[union-attr]
    with pytest.raises(Exception, match="not loaded"), engine._lock:
        engine._use("never-loaded")


def _logits(engine: BatchedEngine) -> torch.Tensor:
    ids = engine.tokenizer("Write about rain.", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return engine.model(input_ids=ids).logits[0, -1].clone()


async def test_foreign_and_corrupt_adapters_are_refused(
    trained: tuple[Settings, Trained], tiny_model_dir: Path, tmp_path: Path
) -> None:
    settings, done = trained
    record = done.generator
    foreign = replace(record, id="foreign", base_hash="0" * 64)
    with pytest.raises(AdapterRefused, match="another base model"):
        check_promotion(settings, foreign, "foreign", GUILD, False)
    broken = tmp_path / "broken"
    shutil.copytree(record.path, broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    corrupt = replace(record, id="corrupt", path=str(broken))
    with pytest.raises(AdapterRefused, match="could not be loaded"):
        check_promotion(settings, corrupt, "corrupt", GUILD, False)
    with pytest.raises(AdapterRefused, match="no adapter"):
        check_promotion(settings, None, "missing", GUILD, False)
    with pytest.raises(AdapterRefused, match="--server 77"):
        check_promotion(settings, record, record.id, EVERY_SERVER, False)
    unpromotable = replace(record, promotable=False, verdict="Not promotable: worse.")
    with pytest.raises(AdapterRefused, match="--force"):
        check_promotion(settings, unpromotable, record.id, GUILD, False)


async def test_the_service_loads_promotions_from_another_process(
    trained: tuple[Settings, Trained], tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings, done = trained
    copy = tmp_path / "db.sqlite3"
    shutil.copy(settings.database_path, copy)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    engine = BatchedEngine(model, AutoTokenizer.from_pretrained(tiny_model_dir), model_name="t")
    async with Store.open(copy) as store, Store.open(copy) as elsewhere:
        adapters = Adapters(Models(store), engine, base_folder=tiny_model_dir, poll_seconds=0.1)
        async with adapters:
            assert adapters.adapter_for(GUILD) is None and adapters.judge_for(GUILD) is None
            # the command line promotes, in another connection
            await Models(elsewhere).promote(done.generator.id, scope=GUILD, kind="generator")
            assert done.reward is not None
            await Models(elsewhere).promote(done.reward.id, scope=GUILD, kind="reward")
            for _ in range(100):
                if adapters.adapter_for(GUILD) is not None:
                    break
                await _sleep(0.1)
            assert adapters.adapter_for(GUILD) == done.generator.id
            assert adapters.adapter_for(GUILD + 1) is None  # another server: the base model
            judge = adapters.judge_for(GUILD)
            assert judge is not None
            scores = await judge(prompt_of("Write two lines about the harbour."), ["a", "b"])
            assert len(scores) == 2
            assert done.generator.id in engine.adapters
            # a foreign adapter in force is not served: that scope falls back to the base
            foreign = replace(done.generator, id="foreign", base_hash="0" * 64)
            await Models(elsewhere).register(foreign)
            await Models(elsewhere).promote("foreign", scope=EVERY_SERVER, kind="generator")
            await adapters.refresh(force=True)
            assert adapters.adapter_for(GUILD + 1) is None
            assert adapters.adapter_for(GUILD) == done.generator.id
            with pytest.raises(AdapterRefused, match="another base model"):
                await adapters.promote("foreign", scope=GUILD, force=True)
            assert await adapters.rollback(scope=GUILD) is None


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def test_an_adapter_failing_part_way_leaves_the_base_model_as_it_was(
    trained: tuple[Settings, Trained], tiny_model_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _settings, done = trained
    broken = tmp_path / "half"
    shutil.copytree(done.generator.path, broken)
    weights = load_file(broken / "adapter_model.safetensors")
    last = sorted(weights)[-1]  # the other tensors load before this one fails
    weights[last] = torch.ones(3, 3)
    save_file(weights, broken / "adapter_model.safetensors")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    engine = BatchedEngine(model, AutoTokenizer.from_pretrained(tiny_model_dir), model_name="t")
    before = _logits(engine)
    for first in (True, False):  # the first adapter the engine loads, and a later one
        with pytest.raises(AdapterRefused, match="could not be loaded"):
            engine.load_adapter(f"half-{first}", str(broken))
        assert torch.equal(_logits(engine), before)
        if first:
            engine.load_adapter(done.generator.id, done.generator.path)
            assert torch.equal(_logits(engine), before)  # loaded, not in use
    assert sorted(engine.adapters) == [done.generator.id]
