"""What an admin sees of adapters (a line per adapter, the figures that matter), and the checks
a promotion from the command line makes before the running bot picks it up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.generation.base import AdapterRefused
from bot.store.models import EVERY_SERVER, AdapterRecord, Models


def figures(record: AdapterRecord) -> str:
    """The evaluation in one line: held-out preference accuracy, margin, forms."""
    metrics: dict[str, Any] = record.manifest.get("metrics") or {}
    if record.kind == "reward":
        return (
            f"ranks the chosen answer first on {metrics.get('held_out_accuracy', 0):.0%} of "
            f"{metrics.get('pairs', 0)} held-out pairs"
        )
    prefs = metrics.get("preferences") or {}
    forms = metrics.get("forms") or {}
    line = (
        f"prefers the chosen answer on {prefs.get('adapter_accuracy', 0):.0%} of "
        f"{prefs.get('pairs', 0)} held-out pairs (base {prefs.get('base_accuracy', 0):.0%}), "
        f"reward margin {prefs.get('reward_margin', 0):+.3f}"
    )
    if forms.get("poems"):
        line += f", forms {forms['base']:.0%} → {forms['adapter']:.0%}"
    return line


async def describe(
    models: Models, record: AdapterRecord, in_force: dict[tuple[int, str], str | None]
) -> str:
    """One adapter as `model list` shows it, with where it serves and any data since forgotten."""
    data = record.manifest.get("data") or {}
    scopes = [
        "every server" if scope == EVERY_SERVER else f"server {scope}"
        for (scope, kind), adapter in in_force.items()
        if adapter == record.id and kind == record.kind
    ]
    source = "all servers" if record.guild_id is None else f"server {record.guild_id}"
    lines = [
        f"{record.id}  [{record.kind}]  {record.created_at[:16]}  trained on {source}: "
        f"{data.get('train_pairs', 0)} pairs, {data.get('train_sft', 0)} kept answers",
        f"    {figures(record)}",
        f"    {record.verdict}",
    ]
    if scopes:
        lines.append(f"    serving: {', '.join(scopes)}")
    gone = await models.forgotten(data.get("generation_ids") or [], data.get("feedback_ids") or [])
    if gone:
        lines.append(
            f"    ⚠ trained on data since forgotten ({gone} rows): retrain without it "
            "(see SECURITY.md)"
        )
    return "\n".join(lines)


def check_promotion(
    settings: Settings, record: AdapterRecord | None, adapter_id: str, scope: int, force: bool
) -> None:
    """Refuse (`AdapterRefused`) what the running bot would refuse: an unknown or unpromotable
    adapter, one for another server, one made for another base model, a folder that does not
    load. Loads the configured model to check (blocking; seconds)."""
    from bot.generation.engine import TransformersEngine
    from bot.generation.loader import embedded_folder, load_model, model_folder

    if record is None:
        raise AdapterRefused(f"there is no adapter {adapter_id} (`python -m bot model list`)")
    if not record.promotable and not force:
        raise AdapterRefused(f"{record.verdict} Add --force to promote it anyway.")
    if record.guild_id is not None and scope != record.guild_id:
        raise AdapterRefused(
            f"it was trained on server {record.guild_id}'s feedback; promote it with "
            f"--server {record.guild_id}"
        )
    if not Path(record.path).is_dir():
        raise AdapterRefused(f"its folder {record.path} is missing")
    engine_kind = settings.engine
    if engine_kind == "auto":
        from bot.generation.loader import resolve_device
        from bot.generation.select import auto_engine

        engine_kind = auto_engine(resolve_device(settings.device))  # what the bot builds
    if engine_kind in ("continuous", "openai"):
        raise AdapterRefused(
            f"ENGINE={engine_kind} cannot serve adapters; use ENGINE=batched (the default)"
        )
    # The model the bot runs: with MODEL=auto, what auto picks on the bot's device (a GPU's
    # 7B model, say), loaded here on the CPU, in bfloat16 when it is not the embedded one: the
    # fingerprint is taken in bfloat16 either way, and 7B in float32 would not fit beside the bot.
    cache = settings.model_cache_dir
    model, dtype = settings.model, "float32"
    if model == "auto":
        folder = model_folder(model, device=settings.device, cache_dir=cache)
        if folder is not None and folder != embedded_folder(cache):
            model, dtype = str(folder), "bfloat16"
    loaded = load_model(model, device="cpu", dtype=dtype, cache_dir=cache)
    engine = TransformersEngine(loaded.model, loaded.tokenizer, model_name=loaded.name)
    if engine.fingerprint() != record.base_hash:
        raise AdapterRefused(
            f"it was trained on another base model ({record.base_model}); MODEL is {loaded.name}"
        )
    if record.kind == "generator":
        engine.load_adapter(record.id, record.path)
        return
    from bot.learning.reward import RewardScorer
    from bot.learning.serving import base_folder

    folder = base_folder(settings)
    if folder is None:
        raise AdapterRefused("a reward model needs MODEL to be a local folder or embedded")
    try:
        RewardScorer.load(folder, Path(record.path))
    except (ValueError, OSError) as exc:
        raise AdapterRefused(f"its reward model does not load: {exc}") from exc
