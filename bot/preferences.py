"""Per-server and per-channel preferences: declared defaults, server values, channel overrides.

Each key is declared once here (type, allowed values, help); the store keeps only overrides.
A channel value beats a server value, which beats the default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from bot.generation.types import SamplingParams
from bot.store import Store

MODES = ("story", "brainstorm", "critique", "chat", "off")
DECODING = ("sampling", "greedy", "beam")


class PreferenceError(ValueError):
    """A value a user gave is not allowed; the message says what is."""


@dataclass(frozen=True, slots=True)
class ChannelPreferences:
    """What a channel uses, after defaults, server values and channel overrides."""

    mode: str = "chat"
    persona: str = ""
    temperature: float = 0.8
    top_p: float = 0.95
    max_length: int = 200
    decoding: str = "sampling"
    beams: int = 2
    repetition_penalty: float = 1.15
    story_auto_turn: int = 0  # the bot writes after every N people's segments; 0: off
    reactions: bool = False  # the bot adds 🔁 ➕ ➖ ✅ 👍 👎 under its outputs

    def sampling(self, max_new_tokens: int | None = None) -> SamplingParams:
        """Sampling parameters for this channel, capped at `max_new_tokens` if given."""
        length = self.max_length if max_new_tokens is None else min(self.max_length, max_new_tokens)
        return SamplingParams(
            max_new_tokens=length,
            method=self.decoding,  # type: ignore[arg-type]
            temperature=self.temperature,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
            num_beams=self.beams,
        )


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    help: str
    parse: Callable[[str], Any]


def _choice(name: str, allowed: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise PreferenceError(f"{name} must be one of: {', '.join(allowed)}.")
        return value

    return parse


def _number(name: str, kind: type, low: float, high: float) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            value = kind(raw.strip())
        except ValueError:
            raise PreferenceError(f"{name} must be a number from {low} to {high}.") from None
        if not low <= value <= high:
            raise PreferenceError(f"{name} must be from {low} to {high}.")
        return value

    return parse


def _switch(name: str) -> Callable[[str], bool]:
    def parse(raw: str) -> bool:
        value = raw.strip().lower()
        if value in ("on", "yes", "true", "1"):
            return True
        if value in ("off", "no", "false", "0"):
            return False
        raise PreferenceError(f"{name} must be on or off.")

    return parse


def _text(name: str, limit: int) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = " ".join(raw.split())
        if len(value) > limit:
            raise PreferenceError(f"{name} can be at most {limit} characters.")
        return value

    return parse


KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        Key("mode", "what mentions and replies do: " + ", ".join(MODES), _choice("mode", MODES)),
        Key(
            "persona",
            "house style or persona (a system prompt), up to 500 characters",
            _text("persona", 500),
        ),
        Key("temperature", "creativity, 0.1 to 1.5", _number("temperature", float, 0.1, 1.5)),
        Key("top_p", "nucleus sampling, 0.1 to 1.0", _number("top_p", float, 0.1, 1.0)),
        Key(
            "max_length",
            "longest answer in tokens, 16 to 1000",
            _number("max_length", int, 16, 1000),
        ),
        Key("decoding", "sampling, greedy or beam", _choice("decoding", DECODING)),
        Key("beams", "beams for beam search, 2 to 8", _number("beams", int, 2, 8)),
        Key(
            "repetition_penalty", "1.0 (off) to 2.0", _number("repetition_penalty", float, 1.0, 2.0)
        ),
        Key(
            "story_auto_turn",
            "the bot continues a story after every N messages; 0 is off",
            _number("story_auto_turn", int, 0, 20),
        ),
        Key(
            "reactions",
            "on: the bot adds its reaction controls under each output",
            _switch("reactions"),
        ),
    )
}


def _coerce(key: str, value: Any) -> Any:
    """A stored value as the field's type, or None when it is damaged."""
    try:
        return KEYS[key].parse(str(value))
    except (PreferenceError, KeyError):
        return None


class Preferences:
    """Reads and writes preferences through the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def layers(
        self, guild_id: int | None, channel_id: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(server values, channel values) as stored, damaged values left out."""
        server = await self.store.get_scope_settings("guild", guild_id or 0)
        channel = await self.store.get_scope_settings("channel", channel_id)
        clean = [
            {k: v for k, v in layer.items() if k in KEYS and _coerce(k, v) is not None}
            for layer in (server, channel)
        ]
        return clean[0], clean[1]

    async def sampling_for(self, guild_id: int | None, channel_id: int | None) -> SamplingParams:
        """The channel's decoding, the base of every command's parameters there."""
        return (await self.for_channel(guild_id, channel_id or 0)).sampling()

    async def for_channel(self, guild_id: int | None, channel_id: int) -> ChannelPreferences:
        """The effective preferences of a channel."""
        server, channel = await self.layers(guild_id, channel_id)
        merged = {k: _coerce(k, v) for k, v in (server | channel).items()}
        return replace(ChannelPreferences(), **merged)

    async def set(
        self, scope: str, scope_id: int, key: str, raw: str, *, guild_id: int | None, user_id: int
    ) -> Any:
        """Validate and store one value; raises `PreferenceError` with what is allowed."""
        if key not in KEYS:
            raise PreferenceError(f"There is no setting called {key!r}.")
        value = KEYS[key].parse(raw)
        await self.store.set_setting(
            scope, scope_id, key, value, guild_id=guild_id, user_id=user_id
        )
        return value

    async def reset(self, scope: str, scope_id: int) -> None:
        """Forget every value of a server or a channel."""
        await self.store.reset_settings(scope, scope_id)


DEFAULTS = {f.name: f.default for f in fields(ChannelPreferences)}
