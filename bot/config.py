"""Settings: read once at start-up from the environment and `.env`, validated into one object.

Every key is documented in `.env.example`. A bad value stops the bot with a message that names
the key and what it accepts; nothing reads the environment after `load_settings` returns.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from dotenv import dotenv_values


class ConfigError(ValueError):
    """A setting has a value the bot cannot use; the message names the key and what is allowed."""


DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
ENGINES = ("auto", "sequential", "batched", "continuous", "openai")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# How the openai engine speaks to its server (see bot/generation/dialect.py); kept here as
# plain names so that reading settings imports nothing of the engines.
OPENAI_DIALECTS = ("auto", "openai", "vllm", "llama.cpp", "ollama", "transformers")
_SYNC_RE = re.compile(r"^(global|off|guild:\d{15,21})$")


@dataclass(frozen=True, slots=True)
class Settings:
    """The bot's whole configuration. Field names are the lower-case environment keys."""

    discord_token: str | None = None
    model: str = "auto"  # by hardware: bot/generation/select.py
    device: str = "auto"
    dtype: str = "auto"
    engine: str = "auto"
    database_path: Path = Path("data/llmos.sqlite3")
    # A database shared by several processes: postgresql://user:pass@host:port/db (None:
    # SQLite at `database_path`; sqlite:///path names a SQLite file too).
    database_url: str | None = None
    model_cache_dir: Path = Path("data/models")
    adapter_dir: Path = Path("data/adapters")
    adapter_poll_seconds: float = 10.0
    sync_commands: str = "global"
    log_level: str = "INFO"
    max_queue: int = 64
    max_pending_per_user: int = 3
    user_requests_per_minute: int = 10
    server_daily_budget: int = 0
    max_batch: int = 8
    generation_timeout: float = 120.0
    max_new_tokens: int = 200
    continuous_memory_fraction: float = 0.1
    prefix_cache_mb: int = 256
    story_context_tokens: int = 1536
    lore_tokens: int = 300
    lore_scan_depth: int = 4
    resume_max_age: float = 900.0
    resume_max_attempts: int = 0
    openai_base_url: str | None = None
    openai_api_key: str | None = None
    openai_model: str | None = None
    openai_max_retries: int = 2
    openai_dialect: str = "auto"
    # A pool (several OPENAI_BASE_URL servers): requests in flight per server (None: the
    # larger of MAX_BATCH and 32, also one server's), failures in a row before a server is
    # ejected, and seconds between health checks.
    openai_max_concurrency: int | None = None
    openai_eject_after: int = 3
    openai_health_seconds: float = 10.0
    vision_model: str | None = None
    vision_engine: str = "local"
    shard_count: int | None = None  # None: `auto`, Discord's recommendation
    shard_ids: tuple[int, ...] | None = None  # None: every shard of `shard_count`

    def __repr__(self) -> str:  # the token must never reach a log line, even via repr()
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        for secret in ("discord_token", "openai_api_key"):
            if shown[secret]:
                shown[secret] = "***"
        if self.database_url:  # its password
            shown["database_url"] = without_password(self.database_url)
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @property
    def database(self) -> str | Path:
        """What `Store.open` opens: `DATABASE_URL` if set (the store reads a `sqlite:///path`
        itself), else the file at `DATABASE_PATH`."""
        return self.database_url or self.database_path

    @property
    def openai_base_urls(self) -> tuple[str, ...]:
        """The servers of `OPENAI_BASE_URL`, in order: several make a pool."""
        return tuple(self.openai_base_url.split(",")) if self.openai_base_url else ()

    @property
    def sync_guild_id(self) -> int | None:
        """The guild id of `SYNC_COMMANDS=guild:<id>`, else None."""
        if self.sync_commands.startswith("guild:"):
            return int(self.sync_commands.split(":", 1)[1])
        return None


def _choice(key: str, allowed: tuple[str, ...], *, upper: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in allowed:
            raise ConfigError(f"{key}={raw!r} is not valid; use one of: {', '.join(allowed)}.")
        return value

    return parse


def _int(key: str, low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(f"{key}={raw!r} is not a whole number ({low}..{high}).") from None
        if not low <= value <= high:
            raise ConfigError(f"{key}={value} is out of range; use {low}..{high}.")
        return value

    return parse


def _float(key: str, low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(f"{key}={raw!r} is not a number ({low}..{high}).") from None
        if not low <= value <= high:
            raise ConfigError(f"{key}={value} is out of range; use {low}..{high}.")
        return value

    return parse


def _sync(raw: str) -> str:
    value = raw.strip().lower()
    if not _SYNC_RE.match(value):
        raise ConfigError(
            f"SYNC_COMMANDS={raw!r} is not valid; use 'global', 'off' or 'guild:<server id>'."
        )
    return value


def _nonempty(key: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if not raw.strip():
            raise ConfigError(f"{key} is empty; remove the line to use the default.")
        return raw.strip()

    return parse


def _optional(raw: str) -> str | None:
    return raw.strip() or None


def _url(raw: str) -> str | None:
    """One URL, or several separated by commas (a pool); kept as one comma-joined string."""
    urls = [part.strip().rstrip("/") for part in raw.split(",") if part.strip()]
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"OPENAI_BASE_URL: {url!r} must start with http:// or https://.")
    if len(set(urls)) != len(urls):
        raise ConfigError(f"OPENAI_BASE_URL={raw!r} names a server twice.")
    return ",".join(urls) or None


def _database_url(raw: str) -> str | None:
    """A PostgreSQL URL with a host and a database name, or `sqlite:///path`."""
    value = raw.strip()
    if not value:
        return None
    if value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
        return value
    parts = urlsplit(value)
    # a Unix socket may be named by `?host=/path` instead of the URL's host
    if (
        parts.scheme in ("postgresql", "postgres")
        and (parts.hostname or "host=" in parts.query)
        and parts.path.strip("/")
    ):
        return value
    raise ConfigError(
        f"DATABASE_URL={without_password(value)!r} is not valid; use"
        " postgresql://user:password@host:5432/database, or sqlite:///path/to/file."
    )


_SECRET_QUERY = ("password", "sslpassword")


def url_secrets(url: str | None) -> list[str]:
    """The secrets written in a database URL: its password, and a `?password=` (libpq and
    asyncpg read that form too)."""
    if not url:
        return []
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    found += [v for k, v in parse_qsl(parts.query) if k in _SECRET_QUERY and v]
    return found


def without_password(url: str) -> str:
    """`url` with every secret in it shown as `***` (for logs and messages)."""
    for secret in url_secrets(url):
        url = url.replace(secret, "***")
    return url


def _shard_count(raw: str) -> int | None:
    value = raw.strip().lower()
    if value == "auto":
        return None
    return _int("SHARD_COUNT", 1, 100_000)(value)


def _shard_ids(raw: str) -> tuple[int, ...] | None:
    if not raw.strip():
        return None
    try:
        ids = tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise ConfigError(
            f"SHARD_IDS={raw!r} is not valid; use shard numbers separated by commas (0,1)."
        ) from None
    if len(set(ids)) != len(ids) or min(ids) < 0:
        raise ConfigError(f"SHARD_IDS={raw!r} is not valid; each shard once, numbers from 0.")
    return tuple(sorted(ids))


_PARSERS: dict[str, Callable[[str], Any]] = {
    "DISCORD_TOKEN": _optional,
    "MODEL": _nonempty("MODEL"),
    "DEVICE": _choice("DEVICE", DEVICES),
    "DTYPE": _choice("DTYPE", DTYPES),
    "ENGINE": _choice("ENGINE", ENGINES),
    "DATABASE_PATH": lambda raw: Path(_nonempty("DATABASE_PATH")(raw)),
    "DATABASE_URL": _database_url,
    "MODEL_CACHE_DIR": lambda raw: Path(_nonempty("MODEL_CACHE_DIR")(raw)),
    "ADAPTER_DIR": lambda raw: Path(_nonempty("ADAPTER_DIR")(raw)),
    "ADAPTER_POLL_SECONDS": _float("ADAPTER_POLL_SECONDS", 0.5, 3600.0),
    "SYNC_COMMANDS": _sync,
    "LOG_LEVEL": _choice("LOG_LEVEL", LOG_LEVELS, upper=True),
    "MAX_QUEUE": _int("MAX_QUEUE", 1, 10_000),
    "MAX_PENDING_PER_USER": _int("MAX_PENDING_PER_USER", 1, 100),
    "USER_REQUESTS_PER_MINUTE": _int("USER_REQUESTS_PER_MINUTE", 0, 1000),
    "SERVER_DAILY_BUDGET": _int("SERVER_DAILY_BUDGET", 0, 10_000_000),
    "MAX_BATCH": _int("MAX_BATCH", 1, 256),
    "GENERATION_TIMEOUT": _float("GENERATION_TIMEOUT", 1.0, 3600.0),
    "MAX_NEW_TOKENS": _int("MAX_NEW_TOKENS", 16, 4096),
    "CONTINUOUS_MEMORY_FRACTION": _float("CONTINUOUS_MEMORY_FRACTION", 0.01, 0.95),
    "PREFIX_CACHE_MB": _int("PREFIX_CACHE_MB", 0, 1_000_000),
    "STORY_CONTEXT_TOKENS": _int("STORY_CONTEXT_TOKENS", 200, 100_000),
    "LORE_TOKENS": _int("LORE_TOKENS", 0, 50_000),
    "LORE_SCAN_DEPTH": _int("LORE_SCAN_DEPTH", 0, 1000),
    "RESUME_MAX_AGE": _float("RESUME_MAX_AGE", 0.0, 7 * 24 * 3600.0),
    "RESUME_MAX_ATTEMPTS": _int("RESUME_MAX_ATTEMPTS", 0, 100),
    "OPENAI_BASE_URL": _url,
    "OPENAI_API_KEY": _optional,
    "OPENAI_MODEL": _optional,
    "OPENAI_MAX_RETRIES": _int("OPENAI_MAX_RETRIES", 0, 10),
    "OPENAI_DIALECT": _choice("OPENAI_DIALECT", OPENAI_DIALECTS),
    "OPENAI_MAX_CONCURRENCY": _int("OPENAI_MAX_CONCURRENCY", 1, 4096),
    "OPENAI_EJECT_AFTER": _int("OPENAI_EJECT_AFTER", 1, 100),
    "OPENAI_HEALTH_SECONDS": _float("OPENAI_HEALTH_SECONDS", 0.5, 3600.0),
    "VISION_MODEL": _optional,
    "VISION_ENGINE": _choice("VISION_ENGINE", ("local", "openai")),
    "SHARD_COUNT": _shard_count,
    "SHARD_IDS": _shard_ids,
}


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv_path: str | Path | None = ".env"
) -> Settings:
    """Build `Settings` from `.env` and the environment (the environment wins).

    Raises `ConfigError` for the first bad value, naming the key and what it accepts.
    Unknown keys are ignored so that `.env` can hold other tools' settings.
    """
    values: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    parsed = {key.lower(): parse(values[key]) for key, parse in _PARSERS.items() if key in values}
    settings = Settings(**parsed)
    if settings.engine == "openai" and not (settings.openai_base_url and settings.openai_model):
        raise ConfigError(
            "ENGINE=openai needs OPENAI_BASE_URL (e.g. http://vllm:8000/v1) and OPENAI_MODEL."
        )
    if (
        settings.vision_model
        and settings.vision_engine == "openai"
        and not settings.openai_base_url
    ):
        raise ConfigError(
            "VISION_ENGINE=openai needs OPENAI_BASE_URL: the server that serves VISION_MODEL."
        )
    if settings.shard_ids is not None:
        if settings.shard_count is None:
            raise ConfigError(
                "SHARD_IDS needs a number in SHARD_COUNT (the shards of all processes together)."
            )
        if max(settings.shard_ids) >= settings.shard_count:
            raise ConfigError(
                f"SHARD_IDS has shard {max(settings.shard_ids)}, but SHARD_COUNT="
                f"{settings.shard_count} numbers them 0..{settings.shard_count - 1}."
            )
    return settings
