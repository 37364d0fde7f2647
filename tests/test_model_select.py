"""`MODEL=auto` and `ENGINE=auto`: the decision table, a loopback stand-in for the Hub that the
real `snapshot_download` downloads from (and resumes), the offline fallbacks, and the engine
picker's result file."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bot.generation import select
from bot.generation.loader import EMBEDDED_NAME, load_model, model_folder
from bot.generation.select import EMBEDDED, TIERS, Facts, decide, pick
from tests.conftest import MODEL_CACHE

REPO = Path(__file__).resolve().parents[1]
SHA = "0123456789abcdef0123456789abcdef01234567"
BIG, SEVEN, THREE, SMALL = (
    "Qwen/Qwen2.5-14B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct",
    "Qwen/Qwen2.5-3B-Instruct",
    "Qwen/Qwen2.5-1.5B-Instruct",
)


def cuda(
    free: float, *, bnb: bool = True, cached: tuple[str, ...] = (), hub: bool | None = True
) -> Facts:
    return Facts("cuda", free, 80.0, bnb, frozenset(cached), hub)


@pytest.mark.parametrize(
    ("facts", "model", "four_bit", "download", "says"),
    [
        (Facts("cpu"), EMBEDDED, False, False, "no CUDA GPU"),
        (Facts("mps", 64.0, 64.0, True), EMBEDDED, False, False, "no CUDA GPU"),
        (cuda(79.0), BIG, False, True, "downloading"),
        (cuda(30.0), SEVEN, False, True, "30.0 GB free"),
        (cuda(20.0), BIG, True, True, "downloading"),
        (cuda(20.0, bnb=False), THREE, False, True, "pip install 'llmos[gpu]'"),
        (cuda(12.0), SEVEN, True, True, "downloading"),
        (cuda(8.0), SEVEN, True, True, "downloading"),
        (cuda(8.0, bnb=False), SMALL, False, True, "bitsandbytes"),
        (cuda(4.0), EMBEDDED, False, False, "smallest Hub tier needs 5.0 GB"),
        # Cached: used without asking the Hub (hub None: not asked).
        (cuda(30.0, cached=(SEVEN,), hub=None), SEVEN, False, False, "cached"),
        # The Hub is out of reach: a smaller tier that is cached beats the embedded model.
        (cuda(50.0, cached=(SEVEN,), hub=False), SEVEN, False, False, "out of reach"),
        (cuda(50.0, hub=False), EMBEDDED, False, False, f"download {BIG}; using the embedded"),
    ],
)
def test_decision_table(
    facts: Facts, model: str, four_bit: bool, download: bool, says: str
) -> None:
    choice = decide(facts)
    assert (choice.model, choice.four_bit, choice.download) == (model, four_bit, download)
    assert says in choice.reason


def test_tiers_are_best_first_and_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    for tier in TIERS:
        assert tier.weights_gb < tier.needs_gb
        row = f"| `{tier.model_id}` | {'4-bit' if tier.four_bit else 'bfloat16'} |"
        assert f"{row} {tier.weights_gb} GB | {tier.needs_gb} GB |" in readme, tier
    # Where bitsandbytes is there, a tier needing less never comes before one needing more
    # unless it is 4-bit (cheaper per parameter), so a bigger GPU never gets a smaller model.
    assert [t.needs_gb for t in TIERS if not t.four_bit] == sorted(
        (t.needs_gb for t in TIERS if not t.four_bit), reverse=True
    )


class Hub:
    """A loopback stand-in for the Hub's API serving one folder as every repo at commit SHA."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.requests: list[tuple[str, str, str | None]] = []
        self.cut_once: set[str] = set()  # files whose next download breaks off half-way
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # a connection per request: close() ends it all

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                hub.answer(self, body=False)

            def do_GET(self) -> None:
                hub.answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())

    def _json(self, h: BaseHTTPRequestHandler, value: Any) -> None:
        data = json.dumps(value).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def answer(self, h: BaseHTTPRequestHandler, *, body: bool) -> None:
        path = h.path.split("?")[0]
        self.requests.append((h.command, path, h.headers.get("Range")))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"]:  # repo info, revision info, tree listing
            repo = "/".join(parts[2:4])
            if len(parts) > 4 and parts[4] == "tree":
                return self._json(
                    h,
                    [
                        {
                            "type": "file",
                            "path": p.name,
                            "size": p.stat().st_size,
                            "oid": hashlib.sha1(p.read_bytes()).hexdigest(),
                        }
                        for p in self.files()
                    ],
                )
            files = [{"rfilename": p.name} for p in self.files()]
            return self._json(h, {"id": repo, "sha": SHA, "siblings": files})
        if len(parts) == 5 and parts[2] == "resolve":  # org/name/resolve/rev/file
            data = (self.folder / parts[4]).read_bytes()
            rng = h.headers.get("Range")
            start = int(rng.split("=")[1].split("-")[0]) if rng and body else 0
            h.send_response(206 if start else 200)
            h.send_header("X-Repo-Commit", SHA)
            h.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            h.send_header("Content-Length", str(len(data) - start))
            h.end_headers()
            if body and parts[4] in self.cut_once:  # the connection drops mid-file
                self.cut_once.discard(parts[4])
                h.wfile.write(data[start : start + (len(data) - start) // 2])
                h.close_connection = True
            elif body:
                h.wfile.write(data[start:])
            return None
        h.send_response(404)
        h.send_header("Content-Length", "0")
        h.end_headers()
        return None


@pytest.fixture
def hub(tiny_model_dir: Path, tmp_path: Path) -> Iterator[Hub]:
    """The tiny model's folder, plus a file loading does not need, served as a Hub repo."""
    folder = tmp_path / "repo"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "README.md").write_text("a model card: not needed to load\n")
    (folder / "pytorch_model.bin").write_bytes(b"old weights format: not needed\n")
    server = Hub(folder)
    yield server
    server.close()


def dead_endpoint() -> str:
    """A loopback address with nothing listening: a Hub that cannot be reached."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    server.server_close()
    return url


def test_download_resumes_then_loads_through_the_loader(hub: Hub, tmp_path: Path) -> None:
    cache = tmp_path / "models"
    weights = (hub.folder / "model.safetensors").read_bytes()
    # huggingface_hub writes in 10 MiB chunks: a drop after one of them resumes past it.
    assert len(weights) // 2 > 10 * 2**20
    hub.cut_once.add("model.safetensors")

    assert select.hub_answers(SEVEN, endpoint=hub.url)
    picked = pick(cuda(30.0, hub=True), cache, endpoint=hub.url)

    assert picked.name == SEVEN and picked.folder is not None and not picked.four_bit
    assert (picked.folder / "model.safetensors").read_bytes() == weights
    weight_gets = [r[2] for r in hub.requests if r[0] == "GET" and r[1].endswith(".safetensors")]
    assert len(weight_gets) == 2 and weight_gets[0] is None
    resumed_at = int(str(weight_gets[1]).removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= len(weights) // 2  # resumed where it broke off, not restarted
    fetched = {r[1].rsplit("/", 1)[1] for r in hub.requests if "/resolve/" in r[1]}
    assert "README.md" not in fetched and "pytorch_model.bin" not in fetched
    assert {"config.json", "tokenizer.json", "model.safetensors"} <= fetched

    loaded = load_model(str(picked.folder), device="cpu", dtype="float32", cache_dir=cache)
    assert loaded.model.config.num_hidden_layers == 2  # the tiny model, through the real loader


def test_cached_snapshot_is_found_and_used_without_network(hub: Hub, tmp_path: Path) -> None:
    cache = tmp_path / "models"
    downloaded = select.download(SEVEN, cache, endpoint=hub.url)
    hub.close()  # from here on, no Hub at all
    assert select.cached_folder(SEVEN, cache) == downloaded
    assert select.cached_folder(BIG, cache) is None
    assert not select.hub_answers(BIG, endpoint=hub.url)

    picked = pick(cuda(50.0, cached=(SEVEN,), hub=False), cache)
    assert (picked.name, picked.folder) == (SEVEN, downloaded)

    # A weight shard gone (a half-copied cache): not complete, so not used.
    (downloaded / "model.safetensors").unlink()
    assert select.cached_folder(SEVEN, cache) is None


def test_unreachable_hub_falls_back_to_embedded_with_the_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = dead_endpoint()
    assert not select.hub_answers(SEVEN, endpoint=dead, timeout=2.0)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not select.hub_answers(SEVEN)  # not even asked
    monkeypatch.delenv("HF_HUB_OFFLINE")

    with caplog.at_level(logging.INFO, logger="bot.generation.select"):
        picked = pick(cuda(30.0, hub=False), tmp_path)
    assert (picked.name, picked.folder) == (EMBEDDED, None)
    message = caplog.text
    assert f"could not reach the Hugging Face Hub to download {SEVEN}" in message
    assert "set MODEL=" in message and f"python -m tools.fetch_model {SEVEN}" in message

    # The Hub answered, then the download failed: still the embedded model, still said.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bot.generation.select"):
        picked = pick(cuda(30.0, hub=True), tmp_path, endpoint=dead)
    assert picked.folder is None
    assert "could not reach the Hugging Face Hub" in caplog.text


def test_auto_on_this_cpu_machine_is_the_embedded_model(
    embedded: Any, caplog: pytest.LogCaptureFixture
) -> None:
    select.auto_model.cache_clear()
    with caplog.at_level(logging.INFO, logger="bot.generation.select"):
        loaded = load_model("auto", device="cpu", dtype="auto", cache_dir=MODEL_CACHE)
        load_model("auto", device="cpu", dtype="auto", cache_dir=MODEL_CACHE)
    assert caplog.text.count("MODEL=auto: embedded (no CUDA GPU (device cpu))") == 1  # once
    assert loaded.name == EMBEDDED_NAME
    assert model_folder("auto", device="cpu", cache_dir=MODEL_CACHE) == model_folder(
        "embedded", device="cpu", cache_dir=MODEL_CACHE
    )


def test_engine_choice_file_decides_engine_auto_on_cuda(tmp_path: Path) -> None:
    choice = tmp_path / "engine_choice.json"
    assert select.auto_engine("cuda", choice) == "batched"  # no measurement yet
    choice.write_text("{not json")
    assert select.auto_engine("cuda", choice) == "batched"
    select.write_engine_choice(choice, {"engine": "continuous", "gpu": "H100"})
    assert select.auto_engine("cuda", choice) == "continuous"
    assert select.auto_engine("cpu", choice) == "batched"  # measured on CUDA, used on CUDA


def test_picker_measures_both_engines_and_engine_auto_follows_it(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bench/gpu.sh`'s measuring step, end to end on the CPU with the tiny model."""
    from tools.engine_pick import main

    monkeypatch.chdir(tmp_path)  # no .env of the checkout's
    monkeypatch.setenv("DEVICE", "cpu")
    choice, out = tmp_path / "engine_choice.json", tmp_path / "results"
    argv = ["--model", str(tiny_model_dir), "--concurrency", "2", "--max-new-tokens", "4"]
    argv += ["--max-batch", "4", "--memory-fraction", "0.05"]
    assert main([*argv, "--choice", str(choice), "--out", str(out)]) == 0

    saved = json.loads(choice.read_text())
    assert (out / "engine-pick-cpu.json").is_file()
    assert {(lv["engine"], lv["concurrency"], lv["tokens"]) for lv in saved["levels"]} == {
        ("batched", 2, 8),
        ("continuous", 2, 8),
    }
    speed = {lv["engine"]: lv["tokens_per_s"] for lv in saved["levels"]}
    faster = "continuous" if speed["continuous"] > speed["batched"] else "batched"
    assert saved["engine"] == faster
    assert select.auto_engine("cuda", choice) == faster
