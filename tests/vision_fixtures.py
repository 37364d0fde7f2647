"""A tiny random vision-language model, built entirely on this machine (nothing is downloaded).

`build_tiny_vlm(folder)` saves an Idefics3 model (the architecture of SmolVLM) with a two-layer
vision tower and a two-layer Llama, and its processor: SmolVLM's image processor and chat
template around SmolLM2's tokenizer. It loads in well under a second and writes 16 tokens in a
fraction of one on a CPU, and `AutoProcessor` + `AutoModelForImageTextToText` (and `transformers
serve`) load it like the real thing. Its weights are random: it writes nonsense.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
# Where the test session's embedded model is converted (see conftest.MODEL_CACHE).
EMBEDDED_COPY = REPO / ".cache" / "models" / "smollm2-135m-instruct"

# SmolVLM-256M-Instruct's template, which also takes a plain string as a message's content.
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}"
    "{% endif %}{% for part in message['content'] %}{% if part['type'] == 'text' %}"
    "{{ part['text'] }}{% elif part['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# The vision tower reads 32x32 crops in 8x8 patches (16 patches); the connector merges 2x2 of
# them, so each crop is 4 image tokens. Images are resized to at most 64 pixels a side, so a
# large image becomes up to 2x2 crops and a global view: 20 image tokens and their markers.
CROP = 32
PATCH = 8
SCALE = 2
LONGEST_EDGE = 2 * CROP
IMAGE_SEQ_LEN = (CROP // PATCH) ** 2 // SCALE**2


def smollm2_tokenizer() -> Any:
    """SmolLM2's tokenizer, from the embedded model's converted copy if there is one (0.4 s),
    else read out of the embedded GGUF file (about 7 s)."""
    from transformers import AutoTokenizer

    if EMBEDDED_COPY.is_dir():
        return AutoTokenizer.from_pretrained(str(EMBEDDED_COPY))
    from bot.generation.loader import embedded_gguf_path

    gguf = embedded_gguf_path()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def build_tiny_vlm(folder: Path, tokenizer: Any | None = None, *, seed: int = 0) -> Path:
    """Save a tiny random Idefics3 model and its processor in `folder`; returns `folder`.

    `tokenizer`: a SmolLM2-style tokenizer to build on (copied, never changed); by default
    SmolLM2's own (`smollm2_tokenizer`).
    """
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    tokenizer = copy.deepcopy(tokenizer if tokenizer is not None else smollm2_tokenizer())
    # The processor adds <fake_token_around_image>, <image> and <end_of_utterance> itself; the
    # global-view tag and the crops' row/column tags are whole tokens in SmolVLM's vocabulary too.
    tags = ["<global-img>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    tokenizer.add_special_tokens({"additional_special_tokens": tags})
    tokenizer.chat_template = CHAT_TEMPLATE
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": LONGEST_EDGE},
        max_image_size={"longest_edge": CROP},
        do_image_splitting=True,
    )
    processor = Idefics3Processor(
        image_processor, tokenizer, image_seq_len=IMAGE_SEQ_LEN, chat_template=CHAT_TEMPLATE
    )
    # SmolVLM ends a turn with <end_of_utterance>: the random model may stop on it too.
    tokenizer.eos_token = "<end_of_utterance>"
    tokenizer.pad_token = tokenizer.eos_token

    torch.manual_seed(seed)
    config = Idefics3Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": CROP,
            "patch_size": PATCH,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        scale_factor=SCALE,
        image_token_id=processor.image_token_id,
    )
    model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def png_bytes(
    width: int = 48, height: int = 40, color: tuple[int, int, int] = (200, 60, 30)
) -> bytes:
    """A small PNG (a coloured square on a pale ground), made with Pillow."""
    return _image_bytes(width, height, color, "PNG")


def jpeg_bytes(
    width: int = 48, height: int = 40, color: tuple[int, int, int] = (30, 60, 200)
) -> bytes:
    """A small JPEG, made with Pillow."""
    return _image_bytes(width, height, color, "JPEG")


def _image_bytes(width: int, height: int, color: tuple[int, int, int], fmt: str) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (240, 235, 220))
    ImageDraw.Draw(image).rectangle(
        (width // 4, height // 4, width * 3 // 4, height * 3 // 4), fill=color
    )
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()
