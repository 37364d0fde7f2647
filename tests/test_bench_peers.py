"""`make bench-peers`' own logic, without llama.cpp: where llama-server comes from (named,
cached, or built by steps that a fake runner records), the server's command line, the checks
that both sides do the same work, and the ratios, table, JSON and chart from made-up figures."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tools import bench_peers as bp


def _executable(path: Path, text: str = "#!/bin/sh\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def _all_tools(name: str) -> str | None:
    return f"/usr/bin/{name}"


def _no_run(command: list[str]) -> None:
    raise AssertionError(f"nothing should run: {command}")


def test_the_cache_is_under_xdg_cache_home_else_home() -> None:
    assert bp.cache_root({"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == Path("/x/llmos/llama.cpp")
    assert bp.cache_root({"XDG_CACHE_HOME": "", "HOME": "/h"}) == Path("/h/.cache/llmos/llama.cpp")
    assert bp.cached_binary({"HOME": "/h"}, "0.3.36") == Path(
        "/h/.cache/llmos/llama.cpp/0.3.36/bin/llama-server"
    )


def test_llama_server_named_in_the_environment_is_used_as_it_is(tmp_path: Path) -> None:
    named = _executable(tmp_path / "mine" / "llama-server")
    _executable(bp.cached_binary({"XDG_CACHE_HOME": str(tmp_path)}, "1.0"))  # not chosen
    env = {"LLAMA_SERVER": str(named), "XDG_CACHE_HOME": str(tmp_path)}
    assert bp.ensure_server(env, "1.0", run=_no_run) == (named, "LLAMA_SERVER")


def test_llama_server_naming_nothing_runnable_is_an_error_not_a_build(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not executable")
    for named in (tmp_path / "missing", tmp_path / "plain", tmp_path):
        env = {"LLAMA_SERVER": str(named), "XDG_CACHE_HOME": str(tmp_path)}
        with pytest.raises(bp.BuildError, match=r"LLAMA_SERVER=.* is not an executable file"):
            bp.ensure_server(env, "1.0", run=_no_run)


def test_a_cached_build_is_found_without_building(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    assert bp.find_server(env, "1.0") is None
    binary = _executable(bp.cached_binary(env, "1.0"))
    assert bp.ensure_server(env, "1.0", which=lambda _: None, run=_no_run) == (binary, "cache")
    assert bp.find_server(env, "2.0") is None  # another version is another build


def test_missing_build_tools_are_named_before_anything_is_downloaded(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    with pytest.raises(bp.BuildError) as caught:
        bp.ensure_server(env, "1.0", which=lambda _: None, run=_no_run)
    message = str(caught.value)
    for part in ("cmake", "ninja", "a C compiler", "a C++ compiler", "LLAMA_SERVER"):
        assert part in message
    assert not (tmp_path / "llmos").exists()

    def no_cmake(name: str) -> str | None:
        return None if name == "cmake" else f"/usr/bin/{name}"

    assert bp.missing_build_tools({}, no_cmake) == ["cmake"]
    # CC and CXX are the compilers to find, when set
    assert bp.missing_build_tools({"CXX": "my-c++"}, lambda n: None if "my" in n else n) == [
        "a C++ compiler (my-c++)"
    ]


def test_a_build_runs_pip_and_cmake_then_caches_the_server_and_its_libraries(
    tmp_path: Path,
) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    folder = tmp_path / "llmos" / "llama.cpp" / "1.0"
    source = folder / "llama_cpp_python-1.0" / "vendor" / "llama.cpp"
    ran: list[list[str]] = []

    def fake(command: list[str]) -> None:
        """pip writes a small sdist; the cmake build writes a bin/ like llama.cpp's."""
        ran.append(command)
        if command[1:4] == ["-m", "pip", "download"]:
            data = b"project(llama.cpp)\n"
            info = tarfile.TarInfo("llama_cpp_python-1.0/vendor/llama.cpp/CMakeLists.txt")
            info.size = len(data)
            with tarfile.open(folder / "llama_cpp_python-1.0.tar.gz", "w:gz") as tar:
                tar.addfile(info, io.BytesIO(data))
        if command[:2] == ["cmake", "--build"]:
            assert (source / "CMakeLists.txt").is_file()  # extracted before configuring
            out = Path(command[2]) / "bin"
            _executable(out / "llama-server")
            _executable(out / "llama-cli")  # built as a dependency, not wanted
            (out / "libllama.so.0").write_text("lib")
            (out / "libllama.so").symlink_to("libllama.so.0")

    binary, origin = bp.ensure_server(env, "1.0", python="py", which=_all_tools, run=fake)
    assert (binary, origin) == (bp.cached_binary(env, "1.0"), "built")
    download, configure, build = ran
    assert download == [
        "py", "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
        "llama-cpp-python==1.0", "-d", str(folder),
    ]  # fmt: skip
    assert configure[:7] == ["cmake", "-S", str(source), "-B", str(source / "build"), "-G", "Ninja"]
    for flag in (
        "-DCMAKE_BUILD_TYPE=Release",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DGGML_NATIVE=ON",
    ):
        assert flag in configure
    jobs = f"-j{bp.cores()}"
    assert build == ["cmake", "--build", str(source / "build"), "--target", "llama-server", jobs]
    installed = sorted(p.name for p in binary.parent.iterdir())
    assert installed == ["libllama.so", "libllama.so.0", "llama-server"]
    assert (binary.parent / "libllama.so").is_symlink()
    assert not (folder / "llama_cpp_python-1.0").exists()  # sources and objects removed
    # the second time it is found, and the downloaded sdist is kept for a rebuild
    assert bp.ensure_server(env, "1.0", run=_no_run) == (binary, "cache")
    assert (folder / "llama_cpp_python-1.0.tar.gz").is_file()


def test_a_failed_build_leaves_nothing_that_looks_cached(tmp_path: Path) -> None:
    with pytest.raises(bp.BuildError, match="did not finish"):
        bp.install_build(tmp_path / "build" / "bin", tmp_path / "bin")
    assert not (tmp_path / "bin").exists()


def test_the_server_command_serves_on_loopback_with_a_context_per_slot() -> None:
    assert bp.slot_context([150, 203, 180], 64) == 512  # 203 + 64 + 16, rounded up to 256
    assert bp.slot_context([100], 64) == 256
    command = bp.server_command(
        Path("/c/llama-server"),
        Path("/m.gguf"),
        port=4321,
        slots=16,
        slot_ctx=512,
        threads=2,
        prompt_cache=False,
    )
    text = " ".join(command)
    assert command[:3] == ["/c/llama-server", "-m", "/m.gguf"]
    for part in ("--host 127.0.0.1", "--port 4321", "-np 16", "-c 8192", "-t 2", "-tb 2"):
        assert part in text
    assert "--no-cache-prompt" in command and "--cache-ram" in command
    cached = bp.server_command(
        Path("s"), Path("m"), port=1, slots=1, slot_ctx=256, threads=1, prompt_cache=True
    )
    assert "--no-cache-prompt" not in cached


def test_the_completion_request_is_greedy_and_exactly_n_tokens() -> None:
    body = bp.completion_body("<|im_start|>user\nhi", 64, 1.2, window=512, prompt_cache=False)
    assert body["prompt"] == "<|im_start|>user\nhi"
    assert body["n_predict"] == 64 and body["ignore_eos"] is True
    assert body["temperature"] == 0 and body["top_k"] == 1
    assert body["repeat_penalty"] == 1.2 and body["repeat_last_n"] == 512
    assert body["cache_prompt"] is False and body["stream"] is True


def test_prompts_of_different_lengths_on_the_two_sides_are_refused() -> None:
    bp.check_prompt_tokens(["a", "b"], [10, 12], [10, 12])
    with pytest.raises(bp.TokenMismatch) as caught:
        bp.check_prompt_tokens(["a", "b", "c"], [10, 12, 9], [10, 13, 8])
    message = str(caught.value)
    assert "b: bot 12 tokens, llama-server 13" in message
    assert "c: bot 9 tokens, llama-server 8" in message
    assert "a:" not in message


def test_a_run_that_did_other_work_than_asked_is_refused() -> None:
    good = [bp.Sample(10, 64, 0.1), bp.Sample(12, 64, 0.2)]
    bp.check_run("batched", good, [10, 12], 64)
    with pytest.raises(bp.TokenMismatch, match=r"(?s)llama.cpp did other.*request 1: read 11 "):
        bp.check_run("llama.cpp", [good[0], bp.Sample(11, 64, 0.2)], [10, 12], 64)
    with pytest.raises(bp.TokenMismatch, match=r"wrote 63 \(expected 64\)"):
        bp.check_run("sequential", [good[0], bp.Sample(12, 63, 0.2)], [10, 12], 64)


def _row(engine: str, n: int, repeat: int, tps: float, ttfts: list[float]) -> bp.Row:
    seconds = 64 * n / tps
    samples = [bp.Sample(100, 64, t) for t in ttfts]
    return bp.make_row(engine, n, repeat, samples, seconds, rss=500 * 2**20)


ROWS = [
    _row("llama.cpp", 1, 0, 100.0, [0.1]),
    _row("sequential", 1, 0, 25.0, [0.4]),
    _row("llama.cpp", 8, 0, 200.0, [0.2] * 8),
    _row("llama.cpp", 8, 1, 300.0, [0.3] * 6 + [1.0] * 2),
    _row("batched", 8, 0, 150.0, [0.6] * 8),
    _row("batched", 8, 1, 100.0, [0.9] * 6 + [2.0] * 2),
]


def test_the_summary_sets_each_engine_against_llama_cpp_at_the_same_concurrency() -> None:
    by = {(s.engine, s.concurrency): s for s in bp.summarise(ROWS)}
    assert list(by) == [("llama.cpp", 1), ("sequential", 1), ("llama.cpp", 8), ("batched", 8)]
    seq = by["sequential", 1]
    assert (seq.tokens_per_s, seq.tokens_per_s_ratio) == (pytest.approx(25.0), 0.25)
    assert seq.ttft_p50_ratio == pytest.approx(4.0)
    llama8, batched8 = by["llama.cpp", 8], by["batched", 8]
    assert (llama8.runs, llama8.tokens_per_s) == (2, pytest.approx(250.0))  # median of runs
    assert llama8.ttft_p50 == pytest.approx(0.25)  # over all 16 requests
    assert llama8.ttft_p95 == pytest.approx(1.0)
    assert batched8.tokens_per_s_ratio == pytest.approx(125 / 250)
    assert batched8.ttft_p95_ratio == pytest.approx(2.0)
    assert llama8.tokens_per_s_ratio == 1.0
    # without llama.cpp at a level there is nothing to divide by
    alone = bp.summarise([r for r in ROWS if r.engine != "llama.cpp"])
    assert all(s.tokens_per_s_ratio is None and s.ttft_p95_ratio is None for s in alone)
    assert " - / -" in bp.format_table(alone)


def test_the_table_lists_llama_cpp_first_at_each_level_with_the_ratios() -> None:
    lines = bp.format_table(bp.summarise(ROWS)).splitlines()
    assert lines[0].split()[:4] == ["engine", "conc", "runs", "tok/s"]
    assert [line.split()[0] for line in lines[1:]] == [
        "llama.cpp", "sequential", "llama.cpp", "batched",
    ]  # fmt: skip
    assert lines[2].split()[:5] == ["sequential", "1", "1", "25.0", "0.25x"]
    assert "4.00x / 4.00x" in lines[2]


def test_the_json_and_chart_hold_every_run_and_the_summary(tmp_path: Path) -> None:
    meta = {
        "model": "SmolLM2-135M-Instruct",
        "cpu": "a CPU",
        "dtype": "float32",
        "max_new_tokens": 64,
        "llama_weights": "Q4_1 GGUF",
    }
    bp.save(bp.report(meta, ROWS), tmp_path)
    data = json.loads((tmp_path / "bench-peers.json").read_text())
    assert data["meta"] == meta
    assert len(data["runs"]) == 6 and data["runs"][3]["ttfts"][-1] == 1.0
    assert data["summary"][1]["tokens_per_s_ratio"] == 0.25
    assert (tmp_path / "bench-peers.png").stat().st_size > 0


def test_unknown_engines_and_empty_levels_are_refused_before_anything_loads(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["--engines", "vllm"], ["--repeats", "0"], ["--concurrency", "0,8"]):
        with pytest.raises(SystemExit) as caught:
            bp.main(argv)
        assert caught.value.code == 2
    assert "unknown engine vllm" in capsys.readouterr().err


def test_p95_is_the_nearest_rank_so_a_small_sample_shows_its_slowest() -> None:
    from tools.bench import p95, percentile

    assert p95([float(x) for x in range(1, 13)]) == 12.0  # 12 story turns: the slowest
    assert p95([float(x) for x in range(1, 21)]) == 19.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
