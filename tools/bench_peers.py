"""Benchmark: the bot's local engines beside llama.cpp's `llama-server` on the same model.

    python -m tools.bench_peers [--concurrency 1,8,16] [--max-new-tokens 64]
                                [--engines llama.cpp,sequential,batched,batched+bf16] [--repeats 1]

Both sides run the embedded SmolLM2-135M-Instruct: the bot from its dense copy through the real
`GenerationQueue` (dtype as configured: `auto` is float32 on a CPU without native bfloat16),
llama.cpp from the very GGUF file the wheel ships (Q4_1), with a slot for every concurrent
request (16 at least). Every request is one of the bot's poem prompts rendered with the chat
template, checked to be the same number of tokens on both sides, and writes exactly
`--max-new-tokens` tokens, greedy.
Neither side reuses an earlier prompt's KV cache (llama.cpp: `cache_prompt: false`; the bot's
engines: no prefix cache), so every run reads every prompt in full; `--prompt-cache` turns both
caches on. Per engine and concurrency it prints tokens/s (new tokens over wall time), time to
first streamed token p50/p95 and peak RSS, with the ratios of each bot engine to llama.cpp,
and saves `bench-peers.json` and `bench-peers.png` under `--out`.

llama-server is built once from the `llama-cpp-python` source distribution (its vendored
llama.cpp) into `${XDG_CACHE_HOME:-~/.cache}/llmos/llama.cpp/<version>/bin/`: about 20 minutes
on 2 cores, with cmake, ninja and a C++ compiler. `LLAMA_SERVER=/path/to/llama-server` uses
that binary instead and builds nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp

    from bot.generation.base import Engine
    from bot.generation.loader import LoadedModel
    from bot.generation.types import GenerationRequest

# The sdist whose vendored llama.cpp is built: pinned, so that the cached binary and the
# figures name one llama.cpp. Override with LLAMA_CPP_PYTHON_VERSION.
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA = "llama.cpp"
# "+bf16": the same engine on a model with bfloat16 decode copies (a copy of the weights for
# decoding one or two rows; bot/generation/decode_weights.py)
BOT_ENGINES = ("sequential", "batched", "continuous", "sequential+bf16", "batched+bf16")
SERVER_NAME = "llama-server"

# ------------------------------------------------------------------------------------------
# Finding or building llama-server
# ------------------------------------------------------------------------------------------


class BuildError(RuntimeError):
    """llama-server can be neither found nor built; the message says what to do."""


def cache_root(env: Mapping[str, str]) -> Path:
    """`${XDG_CACHE_HOME:-~/.cache}/llmos/llama.cpp`: outside the repository, shared by clones."""
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or "~").expanduser() / ".cache")
    return Path(base) / "llmos" / "llama.cpp"


def cached_binary(env: Mapping[str, str], version: str) -> Path:
    """Where a build of `version` leaves llama-server (its shared libraries beside it)."""
    return cache_root(env) / version / "bin" / SERVER_NAME


def cores() -> int:
    """CPUs this process may run on (its affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_server(env: Mapping[str, str], version: str) -> tuple[Path, str] | None:
    """The llama-server to run and where it came from (`LLAMA_SERVER` or `cache`), or None
    when it has to be built.

    Raises `BuildError` when `LLAMA_SERVER` names something that is not an executable file:
    building instead would hide the mistake behind a 20-minute compile.
    """
    named = env.get("LLAMA_SERVER")
    if named:
        path = Path(named).expanduser()
        if not _executable(path):
            raise BuildError(f"LLAMA_SERVER={named} is not an executable file.")
        return path, "LLAMA_SERVER"
    cached = cached_binary(env, version)
    if _executable(cached):
        return cached, "cache"
    return None


def missing_build_tools(
    env: Mapping[str, str], which: Callable[[str], str | None] = shutil.which
) -> list[str]:
    """The tools a build needs that are not on PATH (`CC` and `CXX` are honoured)."""
    missing = [tool for tool in ("cmake", "ninja") if which(tool) is None]
    for var, names, label in (
        ("CC", ("cc", "gcc", "clang"), "a C compiler"),
        ("CXX", ("c++", "g++", "clang++"), "a C++ compiler"),
    ):
        chosen = env.get(var)
        if not any(which(n) for n in ((chosen,) if chosen else names)):
            missing.append(f"{label} ({chosen})" if chosen else label)
    return missing


def download_command(python: str, version: str, dest: Path) -> list[str]:
    """pip's own download of the source distribution (the sdist carries llama.cpp)."""
    return [
        python,
        "-m",
        "pip",
        "download",
        "--no-binary",
        ":all:",
        "--no-deps",
        f"llama-cpp-python=={version}",
        "-d",
        str(dest),
    ]


def cmake_commands(source: Path, build: Path, jobs: int) -> list[list[str]]:
    """Configure and build only llama-server: CPU, tuned to this machine, no curl."""
    return [
        [
            "cmake",
            "-S",
            str(source),
            "-B",
            str(build),
            "-G",
            "Ninja",
            "-DCMAKE_BUILD_TYPE=Release",
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_BUILD_SERVER=ON",
            "-DGGML_NATIVE=ON",
        ],
        ["cmake", "--build", str(build), "--target", SERVER_NAME, f"-j{jobs}"],
    ]


def install_build(build_bin: Path, dest_bin: Path) -> Path:
    """Copy llama-server and its shared libraries from a build's `bin/` to `dest_bin`.

    The folder appears whole or not at all (written beside it, then renamed), so an
    interrupted copy is never taken for a cached build. Returns the installed binary.
    """
    if not _executable(build_bin / SERVER_NAME):
        raise BuildError(f"{build_bin / SERVER_NAME} is missing: the build did not finish.")
    dest_bin.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bin-", dir=dest_bin.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the binary is for anyone who may run it
    try:
        for item in build_bin.iterdir():
            if item.name == SERVER_NAME or ".so" in item.name or item.suffix == ".dylib":
                # keep the libraries' version symlinks as links
                shutil.copy2(item, tmp / item.name, follow_symlinks=False)
        if dest_bin.exists():
            shutil.rmtree(dest_bin)
        os.replace(tmp, dest_bin)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest_bin / SERVER_NAME


def ensure_server(
    env: Mapping[str, str],
    version: str,
    *,
    python: str = sys.executable,
    which: Callable[[str], str | None] = shutil.which,
    run: Callable[[list[str]], None] | None = None,
) -> tuple[Path, str]:
    """llama-server, built first if it is neither named by `LLAMA_SERVER` nor cached.

    Returns the binary and where it came from (`LLAMA_SERVER`, `cache` or `built`). Raises
    `BuildError` before downloading anything when a build tool is missing, and when a step
    fails. `run` executes one command (tests pass a recorder).
    """
    found = find_server(env, version)
    if found is not None:
        return found
    missing = missing_build_tools(env, which)
    if missing:
        needs = " and ".join([", ".join(missing[:-1]), missing[-1]] if missing[1:] else missing)
        raise BuildError(
            f"llama-server is not built yet, and building it needs {needs} (not found on "
            "PATH). Install them (Debian/Ubuntu: apt-get install cmake ninja-build "
            "g++; or pip install cmake ninja), or point LLAMA_SERVER at a llama-server binary."
        )
    run = run or _run_step
    folder = cache_root(env) / version
    archive = folder / f"llama_cpp_python-{version}.tar.gz"
    print(
        f"Building llama-server from llama-cpp-python {version} into {folder} (once; about "
        "20 minutes on 2 cores). LLAMA_SERVER=/path/to/llama-server skips this.",
        flush=True,
    )
    folder.mkdir(parents=True, exist_ok=True)
    if not archive.is_file():
        run(download_command(python, version, folder))
        if not archive.is_file():
            raise BuildError(f"pip downloaded no {archive.name} into {folder}.")
    source_root = folder / f"llama_cpp_python-{version}"
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    source = source_root / "vendor" / "llama.cpp"
    build = source / "build"
    for command in cmake_commands(source, build, cores()):
        run(command)
    binary = install_build(build / "bin", folder / "bin")
    # The sources and objects are hundreds of MB; the installed bin/ is all that is run.
    shutil.rmtree(source_root, ignore_errors=True)
    return binary, "built"


def _run_step(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    try:
        subprocess.run(command, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BuildError(f"Building llama-server failed at `{' '.join(command)}`: {exc}") from exc


# ------------------------------------------------------------------------------------------
# The llama-server process
# ------------------------------------------------------------------------------------------


def slot_context(prompt_tokens: Sequence[int], max_new_tokens: int) -> int:
    """Context per slot: the longest prompt and its answer, rounded up to 256 tokens."""
    need = max(prompt_tokens) + max_new_tokens + 16
    return -(-need // 256) * 256


def server_command(
    binary: Path,
    gguf: Path,
    *,
    port: int,
    slots: int,
    slot_ctx: int,
    threads: int,
    prompt_cache: bool,
) -> list[str]:
    """llama-server on loopback: `slots` parallel slots, each with `slot_ctx` tokens of context
    (`-c` is shared among the slots), `threads` for decoding and for prompts."""
    command = [
        str(binary),
        "-m",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-np",
        str(slots),
        "-c",
        str(slots * slot_ctx),
        "-t",
        str(threads),
        "-tb",
        str(threads),
        "--no-webui",
    ]
    if not prompt_cache:
        # no host-memory prompt cache either: idle slots would be copied into it between tasks
        command += ["--no-cache-prompt", "--cache-ram", "0"]
    return command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class ServerError(RuntimeError):
    """llama-server did not start, or answered other than it should; with its log's tail."""


def start_server(command: list[str], port: int) -> Server:
    """Spawn llama-server (`command`) listening on `port`, its output into a temporary log."""
    env = dict(os.environ)
    # A build's llama-server finds its shared libraries through an absolute path into the
    # build tree; copied into the cache it finds them beside itself through this.
    lib = str(Path(command[0]).parent)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [lib, env.get("LD_LIBRARY_PATH")]))
    log = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    return Server(process, f"http://127.0.0.1:{port}", log)


def stop_server(server: Server) -> None:
    """Stop llama-server (killed if it lingers past 10 s) and remove its log."""
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    server.log.unlink(missing_ok=True)


async def wait_ready(server: Server, timeout: float) -> None:
    """Return once /health answers 200 (503 while the model loads); raise `ServerError` if
    the process exits first or `timeout` seconds pass."""
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            if server.process.poll() is not None:
                code = server.process.returncode
                raise ServerError(f"llama-server exited with {code}:\n{server.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(server.url + "/health") as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise ServerError(
                    f"llama-server not ready after {timeout:.0f} s:\n{server.log_tail()}"
                )
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def serve(command: list[str], port: int, *, timeout: float = 180) -> AsyncIterator[Server]:
    """llama-server, started and ready; stopped on the way out, however it is left."""
    server = start_server(command, port)
    try:
        await wait_ready(server, timeout)
        yield server
    finally:
        await asyncio.to_thread(stop_server, server)


def version_of(binary: Path) -> str:
    """What `llama-server --version` says (its build number and commit)."""
    env = dict(os.environ, LD_LIBRARY_PATH=str(binary.parent))
    try:
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (done.stdout + done.stderr).strip().splitlines()
    return " ".join(line for line in text if line.startswith(("version", "built with")))


# ------------------------------------------------------------------------------------------
# Runs and their checks
# ------------------------------------------------------------------------------------------


class TokenMismatch(RuntimeError):
    """The two sides would not do the same work: a prompt or an answer differs in length."""


def check_prompt_tokens(labels: Sequence[str], bot: Sequence[int], llama: Sequence[int]) -> None:
    """Raise `TokenMismatch` naming every prompt that the two tokenizers count differently."""
    wrong = [
        f"  {label}: bot {b} tokens, llama-server {ll}"
        for label, b, ll in zip(labels, bot, llama, strict=True)
        if b != ll
    ]
    if wrong:
        raise TokenMismatch(
            "The bot's tokenizer and llama-server's count these prompts differently, so the "
            "two would not read the same input:\n" + "\n".join(wrong)
        )


def check_run(
    engine: str, samples: Sequence[Sample], prompt_tokens: Sequence[int], new_tokens: int
) -> None:
    """Raise `TokenMismatch` if a request read another prompt length than expected, or wrote
    other than exactly `new_tokens` tokens."""
    wrong = [
        f"  request {i}: read {s.prompt_tokens} prompt tokens (expected {p}), "
        f"wrote {s.new_tokens} (expected {new_tokens})"
        for i, (s, p) in enumerate(zip(samples, prompt_tokens, strict=True))
        if s.prompt_tokens != p or s.new_tokens != new_tokens
    ]
    if wrong:
        raise TokenMismatch(f"{engine} did other work than asked:\n" + "\n".join(wrong))


@dataclass(frozen=True)
class Sample:
    """One request of a run: tokens it read and wrote, seconds to its first streamed text."""

    prompt_tokens: int
    new_tokens: int
    ttft: float


@dataclass
class Row:
    """One run: `concurrency` requests sent at once to one engine."""

    engine: str
    concurrency: int
    repeat: int
    tokens: int  # new tokens, all requests
    seconds: float
    tokens_per_s: float
    ttft_p50: float
    ttft_p95: float
    peak_rss_mb: float  # the bot's process, or llama-server's
    ttfts: list[float] = field(default_factory=list)


def make_row(
    engine: str, n: int, repeat: int, samples: Sequence[Sample], seconds: float, rss: float
) -> Row:
    """A run's figures from its requests; `rss` in bytes."""
    from tools.bench import p95

    ttfts = [s.ttft for s in samples]
    tokens = sum(s.new_tokens for s in samples)
    return Row(
        engine=engine,
        concurrency=n,
        repeat=repeat,
        tokens=tokens,
        seconds=seconds,
        tokens_per_s=tokens / seconds,
        ttft_p50=statistics.median(ttfts),
        ttft_p95=p95(ttfts),
        peak_rss_mb=rss / 2**20,
        ttfts=ttfts,
    )


async def bot_run(
    engine: Engine, requests: Sequence[GenerationRequest]
) -> tuple[list[Sample], float]:
    """All `requests` submitted at once to a `GenerationQueue` in front of `engine`."""
    from bot.generation.queue import GenerationQueue

    async with GenerationQueue(
        engine, max_queue=1000, max_pending_per_user=1000, timeout=600
    ) as queue:
        start = time.perf_counter()

        async def one(request: GenerationRequest) -> Sample:
            handle = queue.submit(request)
            first = None
            async for _ in handle:  # the queue streams only non-empty text
                if first is None:
                    first = time.perf_counter() - start
            result = await handle.result()
            ttft = first if first is not None else time.perf_counter() - start
            return Sample(result.prompt_tokens, result.completion_tokens, ttft)

        samples = await asyncio.gather(*(one(r) for r in requests))
        seconds = time.perf_counter() - start
    return list(samples), seconds


def completion_body(
    text: str, new_tokens: int, repetition_penalty: float, *, window: int, prompt_cache: bool
) -> dict[str, Any]:
    """llama-server's /completion request for the bot's greedy, fixed-length decoding.

    `window`: tokens the repetition penalty looks back over, at least the prompt and the
    answer together, as the bot's does.
    """
    return {
        "prompt": text,
        "n_predict": new_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
        "top_k": 1,
        # the bot's greedy keeps its repetition penalty, over the prompt and the answer
        # (llama-server feeds the prompt to its sampler; this version refuses -1 for "all")
        "repeat_penalty": repetition_penalty,
        "repeat_last_n": window,
        "cache_prompt": prompt_cache,
        "stream": True,
    }


async def llama_run(
    session: aiohttp.ClientSession, url: str, bodies: Sequence[dict[str, Any]]
) -> tuple[list[Sample], float, dict[str, Any]]:
    """All `bodies` posted at once to /completion, streamed; also the last final message."""
    start = time.perf_counter()
    finals: list[dict[str, Any]] = []

    async def one(body: dict[str, Any]) -> Sample:
        first = None
        final: dict[str, Any] | None = None
        async with session.post(url + "/completion", json=body) as resp:
            if resp.status != 200:
                raise ServerError(f"llama-server answered {resp.status}: {await resp.text()}")
            async for line in resp.content:
                if not line.startswith(b"data: "):
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise ServerError(f"llama-server: {chunk['error']}")
                if first is None and chunk.get("content"):
                    first = time.perf_counter() - start
                if chunk.get("stop"):
                    final = chunk
        if final is None:
            raise ServerError("llama-server's stream ended without its final message")
        finals.append(final)
        # with the prompt cache off, prompt_n is every prompt token read in this request
        read = final["timings"]["prompt_n"] + final["timings"].get("cache_n", 0)
        ttft = first if first is not None else time.perf_counter() - start
        return Sample(read, int(final["tokens_predicted"]), ttft)

    samples = await asyncio.gather(*(one(b) for b in bodies))
    return list(samples), time.perf_counter() - start, finals[-1]


async def tokenize(session: aiohttp.ClientSession, url: str, text: str) -> list[int]:
    """llama-server's tokens for `text`, as /completion reads a prompt (special tokens added
    where the model wants them, and special-token text parsed)."""
    body = {"content": text, "add_special": True, "parse_special": True}
    async with session.post(url + "/tokenize", json=body) as resp:
        resp.raise_for_status()
        return list((await resp.json())["tokens"])


# ------------------------------------------------------------------------------------------
# Summary, table, JSON and chart
# ------------------------------------------------------------------------------------------


@dataclass
class Summary:
    """An engine at one concurrency over its repeats; ratios are this engine / llama.cpp."""

    engine: str
    concurrency: int
    runs: int
    tokens_per_s: float  # the median run
    ttft_p50: float  # over every request of every run
    ttft_p95: float
    peak_rss_mb: float
    tokens_per_s_ratio: float | None  # > 1: more tokens per second than llama.cpp
    ttft_p50_ratio: float | None  # > 1: a slower first token than llama.cpp
    ttft_p95_ratio: float | None


def summarise(rows: Sequence[Row]) -> list[Summary]:
    """One `Summary` per engine and concurrency, in the order the rows came."""
    from tools.bench import p95

    groups: dict[tuple[str, int], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.engine, r.concurrency), []).append(r)
    plain = {}
    for (engine, n), mine in groups.items():
        ttfts = [t for r in mine for t in r.ttfts]
        plain[engine, n] = (
            len(mine),
            statistics.median(r.tokens_per_s for r in mine),
            statistics.median(ttfts),
            p95(ttfts),
            max(r.peak_rss_mb for r in mine),
        )

    def ratio(a: float, b: float | None) -> float | None:
        return None if b is None or b == 0 else a / b

    out = []
    for (engine, n), (runs, tps, t50, t95, rss) in plain.items():
        peer = plain.get((LLAMA, n))
        out.append(
            Summary(
                engine,
                n,
                runs,
                tps,
                t50,
                t95,
                rss,
                ratio(tps, peer and peer[1]),
                ratio(t50, peer and peer[2]),
                ratio(t95, peer and peer[3]),
            )
        )
    return out


HEADER = (
    f"{'engine':<11}{'conc':>5}{'runs':>5}{'tok/s':>9}{'vs llama':>10}{'ttft p50':>10}"
    f"{'ttft p95':>10}{'ttft vs llama p50/p95':>23}{'rss MB':>8}"
)


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_summary(s: Summary) -> str:
    ttft_ratio = f"{_x(s.ttft_p50_ratio)} / {_x(s.ttft_p95_ratio)}"
    return (
        f"{s.engine:<11}{s.concurrency:>5}{s.runs:>5}{s.tokens_per_s:>9.1f}"
        f"{_x(s.tokens_per_s_ratio):>10}{s.ttft_p50:>9.2f}s{s.ttft_p95:>9.2f}s"
        f"{ttft_ratio:>23}{s.peak_rss_mb:>8.0f}"
    )


def format_table(summaries: Sequence[Summary]) -> str:
    """The printed table: by concurrency, llama.cpp first, then the bot's engines."""
    ordered = sorted(summaries, key=lambda s: (s.concurrency, s.engine != LLAMA))
    return "\n".join([HEADER, *(format_summary(s) for s in ordered)])


def report(meta: dict[str, Any], rows: Sequence[Row]) -> dict[str, Any]:
    """What `bench-peers.json` holds: the settings, every run, and the summary with ratios."""
    return {
        "meta": meta,
        "runs": [asdict(r) for r in rows],
        "summary": [asdict(s) for s in summarise(rows)],
    }


def save(data: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-peers.json").write_text(json.dumps(data, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no chart; `make bench-peers` installs it)")
        return
    meta = data["meta"]
    summary = [Summary(**s) for s in data["summary"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for engine in dict.fromkeys(s.engine for s in summary):
        mine = [s for s in summary if s.engine == engine]
        xs = [s.concurrency for s in mine]
        style = {"linestyle": "--"} if engine == LLAMA else {}
        left.plot(xs, [s.tokens_per_s for s in mine], marker="o", label=engine, **style)
        right.plot(xs, [s.ttft_p95 for s in mine], marker="o", label=engine, **style)
    left.set(xlabel="concurrent requests", ylabel="tokens/s", title="Throughput")
    right.set(xlabel="concurrent requests", ylabel="seconds", title="Time to first token (p95)")
    for ax in (left, right):
        ax.set_xticks(sorted({s.concurrency for s in summary}))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"{meta['model']} on {meta['cpu']}, {meta['max_new_tokens']} new tokens: "
        f"bot {meta['dtype']} vs llama.cpp {meta['llama_weights']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out / "bench-peers.png", dpi=110)


# ------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def _load() -> list[float] | None:
    """The 1, 5 and 15-minute load averages, where the OS tells them."""
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


_DECODE_COPIES: dict[int, Any] = {}


def _decode_copy(loaded: LoadedModel) -> Any:
    """The model once more, with bfloat16 decode copies (made once, kept for later runs)."""
    import copy

    import torch

    from bot.generation.decode_weights import add_decode_copies

    if id(loaded) not in _DECODE_COPIES:
        model = copy.deepcopy(loaded.model)
        add_decode_copies(model, torch.bfloat16)
        _DECODE_COPIES[id(loaded)] = model
    return _DECODE_COPIES[id(loaded)]


def make_engine(name: str, loaded: LoadedModel, args: argparse.Namespace) -> Engine:
    """A fresh bot engine on the shared model, through its public class."""
    from bot.generation.batched import BatchedEngine
    from bot.generation.engine import TransformersEngine

    cache_mb = 256 if args.prompt_cache else 0
    model = loaded.model
    if name.endswith("+bf16"):
        name = name.removesuffix("+bf16")
        model = _decode_copy(loaded)
    if name == "sequential":
        return TransformersEngine(
            model, loaded.tokenizer, model_name=loaded.name, prefix_cache_mb=cache_mb
        )
    if name == "batched":
        return BatchedEngine(
            model,
            loaded.tokenizer,
            model_name=loaded.name,
            max_batch=args.max_batch,
            prefix_cache_mb=cache_mb,
        )
    import copy

    from bot.generation.continuous import ContinuousEngine

    # its own copy: the manager switches the model's attention implementation
    return ContinuousEngine(
        copy.deepcopy(loaded.model),
        loaded.tokenizer,
        model_name=loaded.name,
        max_batch=args.max_batch,
        memory_fraction=0.03,
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp
    import psutil
    import torch
    import transformers

    from bot.config import load_settings
    from bot.generation.engine import render_prompt
    from bot.generation.loader import embedded_gguf_path, load_model
    from tools.bench import Monitor, requests_for

    env = dict(os.environ)
    version = env.get("LLAMA_CPP_PYTHON_VERSION") or LLAMA_CPP_PYTHON_VERSION
    binary, origin = (None, "")
    if LLAMA in args.engines:
        binary, origin = ensure_server(env, version)
        print(f"llama-server: {binary} ({origin})", flush=True)

    settings = load_settings()
    # The GGUF llama.cpp serves is the embedded model, so the bot loads it too (not MODEL),
    # on the CPU llama.cpp runs on.
    loaded = load_model(
        "embedded", device="cpu", dtype=settings.dtype, cache_dir=settings.model_cache_dir
    )
    n_max = max(args.concurrency)
    new = args.max_new_tokens
    requests = requests_for(n_max, new, fixed=True)
    texts, expected = [], []
    for request in requests:
        text, templated = render_prompt(request.prompt, loaded.tokenizer)
        texts.append(text)
        ids = loaded.tokenizer(text, add_special_tokens=not templated)["input_ids"]
        expected.append(len(ids))
    # "prompt 3 (Topic: "a fox in the snow")": the last line of the request's own words
    labels = [
        f"prompt {i} ({r.prompt.messages[-1].content.splitlines()[-1]})"
        for i, r in enumerate(requests)
    ]
    penalty = requests[0].params.repetition_penalty
    threads = cores()
    slots = max(16, n_max)
    slot_ctx = slot_context(expected, new)
    gguf = embedded_gguf_path()
    port = free_port()
    command = server_command(
        binary or Path(SERVER_NAME),
        gguf,
        port=port,
        slots=slots,
        slot_ctx=slot_ctx,
        threads=threads,
        prompt_cache=args.prompt_cache,
    )
    # the GGUF by name: a path into this machine's venv says nothing elsewhere
    shown = [gguf.name if part == str(gguf) else part for part in command[1:]]
    meta: dict[str, Any] = {
        "model": loaded.name,
        "device": "cpu",
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cores": threads,
        "python": platform.python_version(),
        "llama_cpp_python_sdist": version,
        "llama_server": version_of(binary) if binary else None,
        "llama_server_from": origin or None,
        "llama_server_args": shown if binary else None,
        "llama_threads": threads,
        "llama_weights": "Q4_1 GGUF",
        "gguf": gguf.name,
        "max_new_tokens": new,
        "method": "greedy",
        "repetition_penalty": penalty,
        "prompt_cache": args.prompt_cache,
        "prompt_tokens": expected,
        "repeats": args.repeats,
        "max_batch": args.max_batch,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # other work on the machine slows both sides (and OpenMP's spinning threads more)
        "load_average_before": _load(),
    }
    rows: list[Row] = []

    def done(row: Row) -> None:
        rows.append(row)
        print(
            f"  {row.engine:<11}{row.concurrency:>4} requests, run {row.repeat + 1}: "
            f"{row.tokens_per_s:7.1f} tok/s, ttft p50 {row.ttft_p50:.2f} s "
            f"p95 {row.ttft_p95:.2f} s",
            flush=True,
        )

    async with contextlib.AsyncExitStack() as stack:
        server: Server | None = None
        session: aiohttp.ClientSession | None = None
        if binary is not None:
            server = await stack.enter_async_context(serve(command, port))
            timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
            session = await stack.enter_async_context(aiohttp.ClientSession(timeout=timeout))
            counted = [len(await tokenize(session, server.url, t)) for t in texts]
            check_prompt_tokens(labels, expected, counted)
            warm = completion_body(
                texts[0], 8, penalty, window=slot_ctx, prompt_cache=args.prompt_cache
            )
            _, _, final = await llama_run(session, server.url, [warm])
            meta["llama_generation_settings"] = final.get("generation_settings")
        for name in args.engines:
            if name == LLAMA:
                continue
            # the first call on each model pays one-off costs (kernels chosen per dtype and
            # shape: a model with decode copies has its own)
            warm_engine = make_engine(name, loaded, args)
            try:
                await bot_run(warm_engine, requests_for(2, 8))
            finally:  # the continuous engine's thread would keep the process alive
                warm_engine.close()

        for n in args.concurrency:
            for repeat in range(args.repeats):
                for name in args.engines:
                    await asyncio.sleep(1)  # let the other side's spinning threads go idle
                    if name == LLAMA:
                        assert server is not None and session is not None
                        bodies = [
                            completion_body(
                                t, new, penalty, window=slot_ctx, prompt_cache=args.prompt_cache
                            )
                            for t in texts[:n]
                        ]
                        # the server's memory, not this process's
                        monitor = Monitor()
                        monitor.process = psutil.Process(server.process.pid)
                        monitor.peak_rss = monitor.process.memory_info().rss
                        async with monitor:
                            samples, seconds, _ = await llama_run(session, server.url, bodies)
                    else:
                        engine = make_engine(name, loaded, args)
                        try:
                            async with Monitor() as monitor:
                                samples, seconds = await bot_run(engine, requests[:n])
                        finally:
                            engine.close()
                    check_run(name, samples, expected[:n], new)
                    done(make_row(name, n, repeat, samples, seconds, monitor.peak_rss))
    meta["load_average_after"] = _load()
    return report(meta, rows)


def _list(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda s: [kind(x) for x in s.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench_peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--concurrency", default=[1, 8, 16], type=_list(int))
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--engines",
        default=[LLAMA, "sequential", "batched", "batched+bf16"],
        type=_list(str),
        help=f"any of {LLAMA}, {', '.join(BOT_ENGINES)} (default: %(default)s)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per engine and level")
    parser.add_argument("--max-batch", type=int, default=16, help="the bot engines' batch cap")
    parser.add_argument(
        "--prompt-cache",
        action="store_true",
        help="let both sides reuse earlier prompts' KV (llama.cpp's cache_prompt, the bot's "
        "prefix cache); default: every run reads every prompt in full",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    unknown = set(args.engines) - {LLAMA, *BOT_ENGINES}
    if unknown:
        parser.error(
            f"unknown engine {', '.join(sorted(unknown))}: use {LLAMA} or {', '.join(BOT_ENGINES)}"
        )
    if args.repeats < 1 or args.max_new_tokens < 1 or min(args.concurrency, default=0) < 1:
        parser.error("--repeats, --max-new-tokens and every --concurrency must be at least 1")
    try:
        data = asyncio.run(run(args))
    except (BuildError, ServerError, TokenMismatch) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = [Summary(**s) for s in data["summary"]]
    print()
    print(format_table(summary))
    save(data, args.out)
    print(f"saved to {args.out}/bench-peers.json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
