"""The local vision-language engine: a transformers image-text-to-text model (SmolVLM, say).

`VisionEngine` runs one request at a time, like `TransformersEngine`, and shares its pieces:
`RowsStreamer` and `RowsDone` (streaming, stop strings, `max_new_tokens`, cancel),
`generation_kwargs`, `cuts_of` and `torch_failure`. A request's `prompt.images` (encoded PNG
or JPEG bytes) are decoded with Pillow and shown in its last user message; a prompt without
images is an ordinary chat request. `load_vision_model` loads one from a folder or the Hub.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import StoppingCriteriaList

from bot.generation.base import Engine, EngineJob
from bot.generation.engine import (
    RowsDone,
    RowsStreamer,
    cuts_of,
    each_alone,
    generation_kwargs,
    torch_failure,
)
from bot.generation.loader import ModelLoadError, resolve_device, resolve_dtype
from bot.generation.types import EngineFailure, EngineOutput, GenerationRequest, Prompt

log = logging.getLogger(__name__)

# Larger images are refused before they are decoded: 64 megapixels is 192 MB as RGB, and the
# processor shrinks every image to the model's own size anyway (SmolVLM: 2048 pixels a side).
MAX_PIXELS = 64_000_000


class ImageError(ValueError):
    """An image the engine will not show the model: undecodable, too large, or one too many."""


class UnusableImage(EngineFailure):
    """A request failed because of its images (the failure `VisionEngine` gives `ImageError`)."""

    user_message = (
        "I couldn't use that image. Please attach a PNG or JPEG picture "
        "(a smaller one, or fewer at once)."
    )


def decode_images(images: Sequence[bytes], *, max_pixels: int = MAX_PIXELS) -> list[Any]:
    """Pillow images in RGB, one per encoded image; raises `ImageError` naming the bad one."""
    from PIL import Image

    decoded = []
    for number, data in enumerate(images, 1):
        try:
            image = Image.open(io.BytesIO(data))
            # The header gives the size: a huge image is refused before its pixels are read.
            if image.width * image.height > max_pixels:
                raise ImageError(
                    f"image {number} is {image.width}x{image.height} pixels; "
                    f"at most {max_pixels // 1_000_000} megapixels"
                )
            decoded.append(image.convert("RGB"))
        except ImageError:
            raise
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageError(f"image {number} cannot be read: {exc}") from exc
    return decoded


def chat_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """The prompt's messages as a processor's chat template takes them: each content a list of
    parts, with one `{"type": "image"}` part per image after the last user message's text.

    Raises `ImageError` if the prompt has images but no user message to show them in.
    """
    messages: list[dict[str, Any]] = [
        {"role": m.role, "content": [{"type": "text", "text": m.content}]} for m in prompt.messages
    ]
    if prompt.images:
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        if not users:
            raise ImageError("the prompt has images but no user message to show them in")
        # Text, then the images: the order the openai engine sends, so that a model served by
        # `transformers serve` reads the same tokens as the same model run here.
        messages[users[-1]]["content"] += [{"type": "image"} for _ in prompt.images]
    return messages


def _context_length(config: Any) -> int:
    text_config = getattr(config, "text_config", None) or config
    return int(getattr(text_config, "max_position_embeddings", None) or 2048)


class VisionEngine(Engine):
    """A local vision-language model, one request at a time, streaming token by token.

    `max_images`: the most images one request may show (more fail that request with
    `UnusableImage`); each image costs prompt tokens (SmolVLM: about 1,100 for a large one).
    """

    def __init__(self, model: Any, processor: Any, *, model_name: str, max_images: int = 4) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.model_name = model_name
        self.max_batch = 1
        self.max_images = max_images
        self.context_length = _context_length(model.config)
        self._lock = threading.Lock()  # generate() is not re-entrant

    def failure(self, exc: BaseException) -> type[EngineFailure]:
        if isinstance(exc, ImageError):
            return UnusableImage
        return torch_failure(exc)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, jobs: Sequence[EngineJob]) -> list[EngineOutput | BaseException]:
        return each_alone(jobs, self._run)

    def render(self, prompt: Prompt) -> tuple[str, bool]:
        """The prompt text (with one image placeholder per image, before the processor expands
        it), and whether it came from the chat template. The prefix, if any, comes last."""
        if getattr(self.processor, "chat_template", None):
            text = self.processor.apply_chat_template(
                chat_messages(prompt), add_generation_prompt=True, tokenize=False
            )
            return text + prompt.prefix, True
        if prompt.images:
            raise ImageError(f"{self.model_name} has no chat template to place images with")
        return prompt.plain + prompt.prefix, False

    def encode(self, request: GenerationRequest) -> dict[str, torch.Tensor]:
        """The model's inputs for a request (token ids, and the images' pixels if any) on its
        device; a text-only prompt is trimmed from the left to leave room to answer."""
        prompt = request.prompt
        if len(prompt.images) > self.max_images:
            raise ImageError(
                f"{len(prompt.images)} images; {self.model_name} takes at most {self.max_images}"
            )
        images = decode_images(prompt.images)
        text, templated = self.render(prompt)
        # As the processor's own apply_chat_template does: a template that writes the BOS
        # token itself gets none added (token counts then match `transformers serve`).
        bos = self.tokenizer.bos_token
        add_special = not (templated and bos is not None and text.startswith(bos))
        inputs = self.processor(
            text=[text],
            images=[images] if images else None,
            add_special_tokens=add_special,
            return_tensors="pt",
        )
        room = max(16, self.context_length - request.params.max_new_tokens)
        length = inputs["input_ids"].shape[1]
        if length > room:
            if images:  # cutting the prompt would cut an image's tokens apart
                raise ImageError(
                    f"the prompt with its images is {length} tokens; "
                    f"{self.model_name} has room for {room}"
                )
            inputs = {k: v[:, -room:] for k, v in inputs.items()}
        device, dtype = self.model.device, self.model.dtype
        return {
            k: v.to(device, dtype) if v.is_floating_point() else v.to(device)
            for k, v in inputs.items()
        }

    def _probe_ids(self, probes: tuple[str, ...]) -> list[int | None]:
        ids: list[int | None] = []
        for probe in probes:
            found = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
            ids.append(found[0] if len(found) == 1 else None)
        return ids

    def _run(self, job: EngineJob) -> EngineOutput:
        """Decode one job: its prefix is emitted first, then its text token by token (beam
        search in one piece at the end: transformers cannot stream it)."""
        request = job.request
        params = request.params
        beam = params.method == "beam"
        inputs = self.encode(request)
        width = inputs["input_ids"].shape[1]
        streamer = None if beam else RowsStreamer([job], self.tokenizer)
        stop = RowsDone([job], width, streamer)
        job.emit(request.prompt.prefix)
        kwargs = generation_kwargs(request, self.tokenizer)
        if params.logprobs:
            kwargs.update(output_logits=True, return_dict_in_generate=True)
        with self._lock, torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out = self.model.generate(
                **inputs,
                stopping_criteria=StoppingCriteriaList([stop]),
                streamer=streamer,
                **kwargs,
            )
        sequences = out.sequences if params.logprobs else out
        if streamer is None:
            new = sequences[0, width:].tolist()
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            job.emit(text)
        else:
            new = streamer.tokens[0][: params.max_new_tokens]
            text = streamer.texts[0]
        cuts = None
        if params.logprobs and streamer is not None:  # beam search has no cuts
            logits = [step[0] for step in out.logits]
            cuts = cuts_of(new, streamer.ends[0], logits, self._probe_ids(params.probes), len(text))
        reason: Literal["stop", "length", "aborted"]
        if stop.aborted[0]:
            reason = "aborted"
        elif (streamer is not None and streamer.stopped[0]) or (
            new and new[-1] == self.tokenizer.eos_token_id
        ):
            reason = "stop"
        else:
            reason = "length" if len(new) >= params.max_new_tokens else "stop"
        return EngineOutput(request.prompt.prefix + text, reason, width, len(new), cuts)


def load_vision_model(
    source: str,
    *,
    device: str = "auto",
    dtype: torch.dtype | str = "auto",
    max_images: int = 4,
) -> VisionEngine:
    """A `VisionEngine` over `source`: a local folder or a Hugging Face Hub id of an
    image-text-to-text model with its processor. `device` and a string `dtype` are resolved as
    for the text model (`auto`: the best available).

    Raises `ModelLoadError` with a message a server admin can act on.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    started = time.monotonic()
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device) if isinstance(dtype, str) else dtype
    folder = Path(source).expanduser()
    if folder.is_dir():
        name, where = folder.name, str(folder)
    elif source.startswith(("/", ".", "~")) or source.count("/") != 1:
        # neither a folder nor an owner/name Hub id: nothing to download
        raise ModelLoadError(
            f"Vision model {source}: no such folder (and not a Hub id such as owner/name)."
        )
    else:
        name, where = source, source
    try:
        processor = AutoProcessor.from_pretrained(where)
        # A text model's folder gives a bare tokenizer here: refused before its weights load.
        if getattr(processor, "image_processor", None) is None:
            raise ModelLoadError(
                f"Vision model {source} has no image processor: it is not a vision model."
            )
        model: Any = AutoModelForImageTextToText.from_pretrained(where, dtype=torch_dtype)
    except OSError as exc:
        if folder.is_dir():
            raise ModelLoadError(f"Could not load the vision model {source}: {exc}") from exc
        raise ModelLoadError(
            f"Could not load the vision model {source} from the Hugging Face Hub "
            f"({exc.__class__.__name__}). If this machine is offline, download the model "
            "elsewhere, copy its folder here and name that folder instead."
        ) from exc
    except ValueError as exc:  # transformers' word for an architecture it has no class for
        raise ModelLoadError(
            f"Vision model {source} is not an image-text-to-text model transformers can load: {exc}"
        ) from exc
    model.to(device)
    model.eval()
    tokenizer = processor.tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation appends on the right
    seconds = time.monotonic() - started
    log.info("Loaded vision model %s on %s as %s in %.1f s", name, device, torch_dtype, seconds)
    return VisionEngine(model, processor, model_name=name, max_images=max_images)
