from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings
from bot.generation.factory import build_engine, build_vision_engine
from bot.generation.pool import PooledEngine
from bot.generation.remote import OpenAIEngine

REPO = Path(__file__).resolve().parents[1]


def test_defaults_without_env() -> None:
    settings = load_settings({}, dotenv_path=None)
    assert settings.model == "auto"  # the embedded model on a machine without CUDA
    assert settings.device == "auto"
    assert settings.sync_commands == "global"
    assert settings.discord_token is None


def test_dotenv_is_read_and_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("MODEL=gpt2\nMAX_QUEUE=5\nDTYPE=float32\n")
    settings = load_settings({"MAX_QUEUE": "7"}, dotenv_path=env_file)
    assert (settings.model, settings.max_queue, settings.dtype) == ("gpt2", 7, "float32")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("DEVICE", "tpu", "DEVICE='tpu' is not valid; use one of: auto, cpu, cuda, mps"),
        ("DTYPE", "int8", "DTYPE='int8' is not valid"),
        ("MAX_QUEUE", "lots", "MAX_QUEUE='lots' is not a whole number"),
        ("MAX_QUEUE", "0", "MAX_QUEUE=0 is out of range"),
        ("SYNC_COMMANDS", "guild:abc", "SYNC_COMMANDS='guild:abc' is not valid"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL='loud' is not valid"),
        ("GENERATION_TIMEOUT", "-1", "GENERATION_TIMEOUT=-1.0 is out of range"),
        ("MODEL", "  ", "MODEL is empty"),
    ],
)
def test_bad_values_name_the_key(key: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_settings({key: value}, dotenv_path=None)


def test_sync_guild() -> None:
    settings = load_settings({"SYNC_COMMANDS": "guild:123456789012345678"}, dotenv_path=None)
    assert settings.sync_guild_id == 123456789012345678


def test_token_not_in_repr() -> None:
    settings = load_settings({"DISCORD_TOKEN": "MTIz.secret.token"}, dotenv_path=None)
    assert "secret" not in repr(settings)
    assert settings.discord_token == "MTIz.secret.token"


def test_every_key_is_documented_in_env_example() -> None:
    from bot.config import _PARSERS

    example = (REPO / ".env.example").read_text()
    documented = {line.split("=")[0].lstrip("# ") for line in example.splitlines() if "=" in line}
    assert set(_PARSERS) <= documented
    # and the example itself is valid configuration
    load_settings({}, dotenv_path=REPO / ".env.example")


def test_openai_engine_needs_url_and_model() -> None:
    with pytest.raises(ConfigError, match="ENGINE=openai needs OPENAI_BASE_URL"):
        load_settings({"ENGINE": "openai"}, dotenv_path=None)
    with pytest.raises(ConfigError, match="must start with http"):
        load_settings({"OPENAI_BASE_URL": "vllm:8000"}, dotenv_path=None)
    settings = load_settings(
        {
            "ENGINE": "openai",
            "OPENAI_BASE_URL": "http://vllm:8000/v1/",
            "OPENAI_MODEL": "m",
            "OPENAI_API_KEY": "sk-secret",
        },
        dotenv_path=None,
    )
    assert settings.openai_base_url == "http://vllm:8000/v1"
    assert "sk-secret" not in repr(settings)


def test_a_vision_model_on_a_server_needs_its_url() -> None:
    with pytest.raises(ConfigError, match="VISION_ENGINE=openai needs OPENAI_BASE_URL"):
        load_settings({"VISION_MODEL": "smolvlm", "VISION_ENGINE": "openai"}, dotenv_path=None)
    settings = load_settings(
        {
            "VISION_MODEL": "HuggingFaceTB/SmolVLM-256M-Instruct",
            "VISION_ENGINE": "openai",
            "OPENAI_BASE_URL": "http://vllm:8000/v1",
        },
        dotenv_path=None,
    )
    engine = build_vision_engine(settings)  # a remote engine: nothing is loaded or fetched
    assert isinstance(engine, OpenAIEngine)
    assert engine.model_name == "HuggingFaceTB/SmolVLM-256M-Instruct"
    assert engine.base_url == "http://vllm:8000/v1"
    assert load_settings({}, dotenv_path=None).vision_model is None


def test_several_openai_urls_make_a_pool() -> None:
    one = load_settings({"OPENAI_BASE_URL": "http://a:8000/v1/"}, dotenv_path=None)
    assert one.openai_base_urls == ("http://a:8000/v1",)
    assert (one.openai_max_concurrency, one.openai_eject_after) == (None, 3)
    assert one.openai_health_seconds == 10.0
    env = {
        "ENGINE": "openai",
        "OPENAI_MODEL": "m",
        "OPENAI_BASE_URL": " http://a:8000/v1/, http://b:8000/v1 ,",
        "OPENAI_MAX_CONCURRENCY": "4",
        "OPENAI_EJECT_AFTER": "5",
        "OPENAI_HEALTH_SECONDS": "2.5",
    }
    settings = load_settings(env, dotenv_path=None)
    assert settings.openai_base_urls == ("http://a:8000/v1", "http://b:8000/v1")
    assert (settings.openai_max_concurrency, settings.openai_eject_after) == (4, 5)
    pool = build_engine(settings)  # nothing is contacted but by the health checks
    try:
        assert isinstance(pool, PooledEngine)
        assert [s.url for s in pool.stats()] == ["http://a:8000/v1", "http://b:8000/v1"]
        assert [s.cap for s in pool.stats()] == [4, 4] and pool.max_batch == 8
    finally:
        pool.close()
    with pytest.raises(ConfigError, match="names a server twice"):
        load_settings({"OPENAI_BASE_URL": "http://a/v1,http://a/v1/"}, dotenv_path=None)
    with pytest.raises(ConfigError, match="'b:8000' must start with http"):
        load_settings({"OPENAI_BASE_URL": "http://a/v1,b:8000"}, dotenv_path=None)
    for key, value in [
        ("OPENAI_MAX_CONCURRENCY", "0"),
        ("OPENAI_EJECT_AFTER", "0"),
        ("OPENAI_HEALTH_SECONDS", "0"),
    ]:
        with pytest.raises(ConfigError, match=f"{key}=0(.0)? is out of range"):
            load_settings({key: value}, dotenv_path=None)


def test_shards_auto_by_default_and_ids_need_a_count() -> None:
    settings = load_settings({}, dotenv_path=None)
    assert (settings.shard_count, settings.shard_ids) == (None, None)  # auto, every shard
    settings = load_settings({"SHARD_COUNT": "4", "SHARD_IDS": "3, 1"}, dotenv_path=None)
    assert (settings.shard_count, settings.shard_ids) == (4, (1, 3))
    auto = load_settings({"SHARD_COUNT": "Auto", "SHARD_IDS": ""}, dotenv_path=None)
    assert auto.shard_count is None
    for env, expected in [
        ({"SHARD_COUNT": "0"}, "SHARD_COUNT=0 is out of range"),
        ({"SHARD_COUNT": "two"}, "SHARD_COUNT='two' is not a whole number"),
        ({"SHARD_IDS": "0"}, "SHARD_IDS needs a number in SHARD_COUNT"),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "0,2"}, "SHARD_IDS has shard 2, but SHARD_COUNT=2"),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "0,x"}, "SHARD_IDS='0,x' is not valid"),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "1,1"}, "each shard once"),
    ]:
        with pytest.raises(ConfigError, match=expected):
            load_settings(env, dotenv_path=None)


def test_database_url_chooses_the_backend_and_hides_its_password() -> None:
    assert load_settings({}, dotenv_path=None).database == Path("data/llmos.sqlite3")
    url = "postgresql://llmos:s3cret@db.example:5432/llmos"
    settings = load_settings({"DATABASE_URL": url}, dotenv_path=None)
    assert settings.database == url
    assert "s3cret" not in repr(settings) and "llmos:***@db.example" in repr(settings)
    socket = "postgresql://postgres:@/llmos?host=/run/postgresql"  # a Unix socket
    assert load_settings({"DATABASE_URL": socket}, dotenv_path=None).database == socket
    lite = load_settings({"DATABASE_URL": "sqlite:///var/llmos.db"}, dotenv_path=None)
    assert lite.database == "sqlite:///var/llmos.db"
    assert load_settings({"DATABASE_URL": ""}, dotenv_path=None).database_url is None
    for bad in ("mysql://h/db", "postgresql://h", "postgresql://u:pw@/db", "sqlite:///"):
        with pytest.raises(ConfigError, match=r"DATABASE_URL=.* is not valid") as refused:
            load_settings({"DATABASE_URL": bad}, dotenv_path=None)
        assert "pw@" not in str(refused.value)
