"""`MODEL=auto` and `ENGINE=auto`: what this machine should run, decided from facts about it.

The decision (`decide`) is a pure function of `Facts`; `gather_facts` is the one place that
looks at the hardware, the cache and the network. `auto_model` ties them together once per
process: it logs the decision and its reason, and downloads the chosen model if it must.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
GB = 10**9
# Only what loading needs: no README, no .bin/.pth/.gguf/onnx duplicates of the weights.
ALLOW_PATTERNS = [
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "chat_template.*",
    "*.safetensors",
    "model.safetensors.index.json",
]
ENGINE_CHOICE_FILE = Path(__file__).with_name("engine_choice.json")
FETCH_HINT = "python -m tools.fetch_model"


@dataclass(frozen=True, slots=True)
class Tier:
    """A model for GPUs with at least `needs_gb` free: its weights plus KV cache headroom."""

    model_id: str
    weights_gb: float
    needs_gb: float
    four_bit: bool  # loaded with bitsandbytes, nf4 with bfloat16 compute

    @property
    def label(self) -> str:
        return f"{self.model_id} ({'4-bit nf4' if self.four_bit else 'bfloat16'})"


# Best first; the first that fits wins. Weights are measured from the parameter counts (bf16:
# 2 bytes each; nf4: about 0.53 bytes each plus the embeddings and head, which stay bf16).
# The headroom holds the KV cache of a full batch and the activations. A 7B in bf16 is faster
# than a 14B in 4-bit on the same card, so it comes first where both fit; a 7B in 4-bit writes
# better than a 3B in bf16, so the 3B serves only where bitsandbytes is missing.
TIERS: tuple[Tier, ...] = (
    Tier("Qwen/Qwen2.5-14B-Instruct", 29.5, 40.0, False),
    Tier("Qwen/Qwen2.5-7B-Instruct", 15.2, 24.0, False),
    Tier("Qwen/Qwen2.5-14B-Instruct", 10.1, 16.0, True),
    Tier("Qwen/Qwen2.5-7B-Instruct", 5.6, 7.5, True),
    Tier("Qwen/Qwen2.5-3B-Instruct", 6.2, 10.0, False),  # where bitsandbytes is missing
    Tier("Qwen/Qwen2.5-1.5B-Instruct", 3.1, 5.0, False),
)


@dataclass(frozen=True, slots=True)
class Facts:
    """What the choice depends on, gathered once by `gather_facts`."""

    device: str  # cuda, mps or cpu
    free_gb: float = 0.0  # free accelerator memory
    total_gb: float = 0.0
    bitsandbytes: bool = False  # whether bitsandbytes imports
    cached: frozenset[str] = frozenset()  # Hub ids complete in the cache
    hub: bool | None = None  # whether the Hub answered; None when it was not asked


@dataclass(frozen=True, slots=True)
class Choice:
    """The model `MODEL=auto` runs, and why."""

    model: str  # EMBEDDED or a Hub id
    four_bit: bool = False
    download: bool = False  # not cached yet: download before loading
    reason: str = ""


def offline_message(model_id: str) -> str:
    """What an admin reads when the Hub is out of reach and nothing better is cached."""
    return (
        f"could not reach the Hugging Face Hub to download {model_id}; using the embedded "
        f"model; set MODEL=<a local model folder> or pre-download with `{FETCH_HINT} "
        f"{model_id}` on a connected machine and copy MODEL_CACHE_DIR/hub here"
    )


def fitting(facts: Facts) -> list[Tier]:
    """The tiers this machine can load, best first (none without CUDA)."""
    if facts.device != "cuda":
        return []
    return [
        t for t in TIERS if t.needs_gb <= facts.free_gb and (facts.bitsandbytes or not t.four_bit)
    ]


def decide(facts: Facts) -> Choice:
    """The model for `facts`: the best tier that fits, cached or downloadable, else embedded."""
    if facts.device != "cuda":
        return Choice(EMBEDDED, reason=f"no CUDA GPU (device {facts.device})")
    usable = fitting(facts)
    if not usable:
        smallest = min(t.needs_gb for t in TIERS if facts.bitsandbytes or not t.four_bit)
        return Choice(
            EMBEDDED,
            reason=f"{facts.free_gb:.1f} GB free of {facts.total_gb:.1f} GB; the smallest Hub "
            f"tier needs {smallest:.1f} GB",
        )
    best = usable[0]
    memory = f"{facts.free_gb:.1f} GB free of {facts.total_gb:.1f} GB"
    missed = [t for t in TIERS[: TIERS.index(best)] if t.four_bit and t.needs_gb <= facts.free_gb]
    if missed and not facts.bitsandbytes:
        memory += (
            f"; {missed[0].label} would fit with bitsandbytes: pip install 'llmos[gpu]'"
            " (or pip install bitsandbytes)"
        )
    if best.model_id in facts.cached:
        return Choice(best.model_id, best.four_bit, reason=f"{memory}; cached")
    if facts.hub:
        return Choice(best.model_id, best.four_bit, download=True, reason=f"{memory}; downloading")
    for tier in usable[1:]:
        if tier.model_id in facts.cached:
            return Choice(
                tier.model_id,
                tier.four_bit,
                reason=f"{memory}; the Hub is out of reach for {best.model_id}, "
                f"{tier.model_id} is cached",
            )
    return Choice(EMBEDDED, reason=f"{memory}; {offline_message(best.model_id)}")


def hub_dir(cache_dir: Path) -> Path:
    """Where Hub snapshots live under MODEL_CACHE_DIR (apart from the embedded model's copy)."""
    return Path(cache_dir).expanduser() / "hub"


def cached_folder(model_id: str, cache_dir: Path) -> Path | None:
    """The complete cached snapshot of `model_id`, found without the network; else None."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(
            snapshot_download(
                model_id,
                cache_dir=hub_dir(cache_dir),
                allow_patterns=ALLOW_PATTERNS,
                local_files_only=True,
            )
        )
    except (OSError, ValueError):  # the Hub's not-found and incomplete errors are OSErrors
        return None
    return path if _complete(path) else None


def _complete(folder: Path) -> bool:
    """Config, tokenizer and every weight shard present (the Hub's own check needs its tree
    listing, which a copied cache may lack)."""
    if not (folder / "config.json").is_file():
        return False
    if not any(folder.glob("tokenizer*")):
        return False
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError):
            return False
        return all((folder / shard).is_file() for shard in shards)
    return any(folder.glob("*.safetensors"))


def download(model_id: str, cache_dir: Path, *, endpoint: str | None = None) -> Path:
    """Download `model_id`'s loading files into the cache with a progress bar (resumable: a
    dropped connection resumes where it broke off; after a restart, files already complete
    are kept). Raises OSError (or huggingface_hub's errors) when the Hub fails."""
    from huggingface_hub import snapshot_download

    log.info("Downloading %s into %s (resumable)...", model_id, hub_dir(cache_dir))
    return Path(
        snapshot_download(
            model_id,
            cache_dir=hub_dir(cache_dir),
            allow_patterns=ALLOW_PATTERNS,
            endpoint=endpoint,
        )
    )


def hub_answers(model_id: str, *, endpoint: str | None = None, timeout: float = 5.0) -> bool:
    """Whether the Hub answers for `model_id` now (False offline or with HF_HUB_OFFLINE=1)."""
    from huggingface_hub import HfApi, constants

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if offline or constants.is_offline_mode():
        return False
    try:
        HfApi(endpoint=endpoint).repo_info(model_id, timeout=timeout)
    except Exception as exc:  # any failure means "do not count on the Hub now"
        log.debug("The Hub did not answer for %s: %s", model_id, exc)
        return False
    return True


def bitsandbytes_imports() -> bool:
    """Whether bitsandbytes imports (it can be installed but broken without its CUDA libs)."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception:
        return False
    return True


def gather_facts(device: str, cache_dir: Path, *, endpoint: str | None = None) -> Facts:
    """The facts for `device` (already resolved): memory, bitsandbytes, the cache, and the Hub
    (asked only when the tier that fits best is not cached)."""
    if device != "cuda":
        return Facts(device)
    import torch

    free, total = torch.cuda.mem_get_info()
    facts = Facts(
        device,
        free_gb=free / GB,
        total_gb=total / GB,
        bitsandbytes=bitsandbytes_imports(),
        cached=frozenset(
            model_id
            for model_id in {t.model_id for t in TIERS}
            if cached_folder(model_id, cache_dir) is not None
        ),
    )
    usable = fitting(facts)
    if usable and usable[0].model_id not in facts.cached:
        hub = hub_answers(usable[0].model_id, endpoint=endpoint)
        facts = dataclasses.replace(facts, hub=hub)
    return facts


@dataclass(frozen=True, slots=True)
class Picked:
    """The outcome of `MODEL=auto`: the embedded model (folder None) or a local snapshot."""

    name: str
    folder: Path | None
    four_bit: bool = False


def pick(
    facts: Facts, cache_dir: Path, *, endpoint: str | None = None, announce: bool = True
) -> Picked:
    """Act on `decide(facts)`: log it, download if needed; a failed download falls back to
    the embedded model (a later start resumes it)."""
    choice = decide(facts)
    if announce:
        # An admin should see these: the bot runs a weaker model than this machine could.
        worse = "could not reach" in choice.reason or "bitsandbytes" in choice.reason
        level = logging.WARNING if worse else logging.INFO
        log.log(level, "MODEL=auto: %s (%s)", choice.model, choice.reason)
    if choice.model == EMBEDDED:
        return Picked(EMBEDDED, None)
    if choice.download:
        try:
            folder = download(choice.model, cache_dir, endpoint=endpoint)
        except Exception as exc:  # the network can fail mid-way; keep the bot starting
            log.warning("MODEL=auto: %s (%s)", offline_message(choice.model), exc)
            return Picked(EMBEDDED, None)
        if not _complete(folder):
            log.warning("MODEL=auto: %s is incomplete; using the embedded model", folder)
            return Picked(EMBEDDED, None)
    else:
        found = cached_folder(choice.model, cache_dir)
        if found is None:  # vanished since the facts were gathered
            return Picked(EMBEDDED, None)
        folder = found
    return Picked(choice.model, folder, choice.four_bit)


@functools.cache
def auto_model(device: str, cache_dir: Path) -> Picked:
    """`MODEL=auto` on `device`, decided, logged and fetched once per process."""
    return pick(gather_facts(device, cache_dir), cache_dir)


def auto_engine(device: str, choice_file: Path = ENGINE_CHOICE_FILE) -> str:
    """`ENGINE=auto`: on CUDA, the engine `bench/gpu.sh` measured faster (batched where no
    measurement exists: it serves adapters and the repetition penalty); batched elsewhere."""
    if device != "cuda":
        return "batched"
    measured = read_engine_choice(choice_file)
    if measured is None:
        log.info("ENGINE=auto on CUDA: batched (no bench/gpu.sh result in %s)", choice_file)
        return "batched"
    engine, meta = measured
    log.info(
        "ENGINE=auto on CUDA: %s (faster in bench/gpu.sh on %s with %s)",
        engine,
        meta.get("gpu", "?"),
        meta.get("model", "?"),
    )
    return engine


def read_engine_choice(choice_file: Path) -> tuple[str, dict[str, Any]] | None:
    """The engine a bench run chose, with its record; None if absent or unreadable."""
    try:
        record = json.loads(Path(choice_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    engine = record.get("engine") if isinstance(record, dict) else None
    if engine not in ("batched", "continuous"):
        return None
    return engine, record


def write_engine_choice(choice_file: Path, record: dict[str, Any]) -> None:
    """Save a bench run's choice atomically (a reader never sees half a file)."""
    choice_file = Path(choice_file)
    choice_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = choice_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, choice_file)
