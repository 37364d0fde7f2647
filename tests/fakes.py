"""A scripted engine for scheduling tests (the model path is tested for real elsewhere)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bot.generation.base import Engine, EngineJob
from bot.generation.engine import torch_failure
from bot.generation.types import EngineFailure, EngineOutput, GenerationRequest, Message, Prompt


def request(user: int, text: str = "hi", *, timeout: float | None = None) -> GenerationRequest:
    prompt = Prompt((Message("user", text),), text)
    return GenerationRequest(user_id=user, prompt=prompt, timeout=timeout)


class ScriptedEngine(Engine):
    """Emits the prompt text back word by word, `delay` seconds per word.

    A prompt of "raise" fails that job, "crash" fails the whole call, "hang" blocks until
    `release` is set (ignoring cancellation, like a stuck kernel). Inside a longer prompt (a
    command's), the markers "!!raise!!", "!!oom!!" (torch's out-of-memory error for the whole
    call, recognised as a torch engine does) and "!!hang!!" do the same.
    """

    model_name = "scripted"

    def __init__(self, *, delay: float = 0.01, max_batch: int = 1) -> None:
        self.delay = delay
        self.max_batch = max_batch
        self.served: list[str] = []  # prompt texts, in the order they ran
        self.calls: list[int] = []  # batch sizes
        self.aborted = 0  # jobs stopped before their last word
        self.thread_names: set[str] = set()
        self.release = threading.Event()
        self.gate = threading.Event()  # when set, jobs wait for it before the first word
        self.gate.set()

    def failure(self, exc: BaseException) -> type[EngineFailure]:
        return torch_failure(exc)  # what TransformersEngine does

    def generate(self, jobs: Sequence[EngineJob]) -> list[EngineOutput | BaseException]:
        self.calls.append(len(jobs))
        self.thread_names.add(threading.current_thread().name)
        out: list[EngineOutput | BaseException] = []
        for job in jobs:
            text = job.request.prompt.plain
            self.served.append(text)
            if text == "crash":
                raise RuntimeError("engine exploded")
            if "!!oom!!" in text:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            if text == "hang" or "!!hang!!" in text:
                self.release.wait(30)
                out.append(EngineOutput("", "stop", 1, 0))
                continue
            if text == "raise" or "!!raise!!" in text:
                out.append(ValueError("bad request"))
                continue
            self.gate.wait(10)
            sent: list[str] = []
            reason = "stop"
            # word by word, keeping the line breaks (a poem stays a poem)
            for piece in re.findall(r"\s*\S+", text):
                if job.should_stop():
                    reason = "aborted"
                    self.aborted += 1
                    break
                time.sleep(self.delay)
                chunk = piece if sent else piece.lstrip()
                job.emit(chunk)
                sent.append(chunk)
            out.append(EngineOutput("".join(sent), reason, len(text.split()), len(sent)))  # type: ignore[arg-type]
        return out


@dataclass
class QueuedJob:
    """An engine job outside the queue: it keeps what was streamed and never stops early."""

    request: GenerationRequest
    streamed: str = ""

    def emit(self, text: str) -> None:
        self.streamed += text

    def should_stop(self) -> bool:
        return False
