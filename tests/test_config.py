from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings
from bot.generation.factory import build_vision_engine
from bot.generation.remote import OpenAIEngine

REPO = Path(__file__).resolve().parents[1]


def test_defaults_without_env() -> None:
    settings = load_settings({}, dotenv_path=None)
    assert settings.model == "embedded"
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
