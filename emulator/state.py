"""The emulator's model of Discord: guilds, channels, members, messages, commands, interactions."""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Discord's limits that the emulator enforces (https://discord.com/developers/docs/resources/message)
CONTENT_LIMIT = 2000
EMBEDS_LIMIT = 10
EMBED_TOTAL_LIMIT = 6000
EMBED_FIELD_LIMITS = {"title": 256, "description": 4096}
ACK_DEADLINE_S = 3.0

# Permission bits used by the bot.
PERM_ADMIN = 1 << 3
PERM_MANAGE_CHANNELS = 1 << 4
PERM_MANAGE_GUILD = 1 << 5
PERM_ADD_REACTIONS = 1 << 6
PERM_VIEW = 1 << 10
PERM_SEND = 1 << 11
PERM_MANAGE_MESSAGES = 1 << 13
PERM_EMBED = 1 << 14
PERM_ATTACH = 1 << 15
PERM_HISTORY = 1 << 16
PERM_USE_COMMANDS = 1 << 31
PERM_THREADS = (1 << 35) | (1 << 38)
MEMBER_PERMS = (
    PERM_VIEW
    | PERM_SEND
    | PERM_ADD_REACTIONS
    | PERM_EMBED
    | PERM_ATTACH
    | PERM_HISTORY
    | PERM_USE_COMMANDS
    | PERM_THREADS
)

_MENTION_RE = re.compile(r"<@!?(\d+)>|<@&(\d+)>|@everyone|@here")
USER_MENTION = re.compile(r"<@!?(\d+)>")


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


class Snowflakes:
    """Increasing ids shaped like Discord's (a timestamp in the high bits)."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    @staticmethod
    def now_ms() -> int:
        """Milliseconds since Discord's epoch (2015), the timestamp part of a snowflake."""
        return int(time.time() * 1000) - 1420070400000

    def __call__(self) -> int:
        return self.at(self.now_ms())

    def at(self, ms: int) -> int:
        """A new id with the timestamp `ms` (unique: the low bits count every id made)."""
        return (ms << 22) | (next(self._counter) & 0x3FFFFF)


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """Discord's rule: a guild's events go to shard `(guild_id >> 22) % shard_count`, the
    timestamp part of its id; direct messages (no guild) to shard 0."""
    return 0 if guild_id is None else (guild_id >> 22) % shard_count


@dataclass
class User:
    id: int
    name: str
    bot: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": self.name,
            "avatar": None,
            "bot": self.bot,
            "flags": 0,
            "public_flags": 0,
        }


@dataclass
class Role:
    id: int
    name: str
    permissions: int

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }


@dataclass
class Member:
    user: User
    roles: list[int] = field(default_factory=list)

    def payload(self) -> dict[str, Any]:
        return {
            "user": self.user.payload(),
            "roles": [str(r) for r in self.roles],
            "joined_at": "2025-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
        }


@dataclass
class Channel:
    id: int
    name: str
    guild_id: int
    type: int = 0  # 0 text, 11 public thread
    parent_id: int | None = None

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "type": self.type,
            "guild_id": str(self.guild_id),
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
        }
        if self.parent_id is not None:
            data["parent_id"] = str(self.parent_id)
        if self.type == 11:
            data["thread_metadata"] = {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": iso_now(),
                "locked": False,
            }
            data["owner_id"] = "0"
            data["member_count"] = 1
            data["message_count"] = 0
        return data


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, Role] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)

    def permissions_of(self, user_id: int) -> int:
        if user_id == self.owner_id:
            return (1 << 53) - 1
        member = self.members[user_id]
        perms = self.roles[self.id].permissions  # @everyone has the guild's id
        for role_id in member.roles:
            perms |= self.roles[role_id].permissions
        return (1 << 53) - 1 if perms & PERM_ADMIN else perms

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "owner_id": str(self.owner_id),
            "unavailable": False,
            "member_count": len(self.members),
            "large": False,
            "roles": [r.payload() for r in self.roles.values()],
            "channels": [c.payload() for c in self.channels.values() if c.type != 11],
            "threads": [c.payload() for c in self.channels.values() if c.type == 11],
            "members": [m.payload() for m in self.members.values()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "preferred_locale": "en-US",
            "premium_tier": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "verification_level": 0,
            "explicit_content_filter": 0,
            "default_message_notifications": 0,
            "system_channel_flags": 0,
            "joined_at": "2025-01-01T00:00:00+00:00",
        }


@dataclass
class Message:
    """A message as the emulator stores it, with every version it has had."""

    id: int
    channel_id: int
    guild_id: int | None
    author: User
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    flags: int = 0
    reference_id: int | None = None
    interaction_id: int | None = None
    webhook_id: int | None = None
    allowed_mentions: dict[str, Any] | None = None
    pinged: list[str] = field(default_factory=list)  # who Discord would have notified
    history: list[dict[str, Any]] = field(default_factory=list)  # earlier versions
    edited_at: float | None = None
    edit_times: list[float] = field(default_factory=list)  # monotonic, one per edit
    deleted: bool = False
    created_at: str = field(default_factory=iso_now)
    reactions: dict[str, set[int]] = field(default_factory=dict)
    mentions: list[User] = field(default_factory=list)  # users named as <@id> in the content

    def component(self, prefix: str) -> dict[str, Any]:
        """The first component whose custom_id starts with `prefix`."""
        for row in self.components:
            for component in row.get("components", []):
                if str(component.get("custom_id", "")).startswith(prefix):
                    return component
        raise LookupError(f"message {self.id} has no component {prefix!r}…")

    @property
    def custom_ids(self) -> list[str]:
        return [
            c.get("custom_id", "") for row in self.components for c in row.get("components", [])
        ]

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "type": 0,
            "author": self.author.payload(),
            "content": self.content,
            "timestamp": self.created_at,
            "edited_timestamp": (
                datetime.fromtimestamp(self.edited_at, UTC).isoformat() if self.edited_at else None
            ),
            "tts": False,
            "mention_everyone": False,
            "mentions": [u.payload() for u in self.mentions],
            "mention_roles": [],
            "attachments": self.attachments,
            "embeds": self.embeds,
            "components": self.components,
            "pinned": False,
            "flags": self.flags,
            "reactions": [
                {
                    "emoji": {"id": None, "name": e},
                    "count": len(u),
                    "me": False,
                    "count_details": {"burst": 0, "normal": len(u)},
                    "burst_colors": [],
                    "me_burst": False,
                    "burst_count": 0,
                }
                for e, u in self.reactions.items()
                if u
            ],
        }
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
        if self.reference_id is not None:
            data["message_reference"] = {
                "message_id": str(self.reference_id),
                "channel_id": str(self.channel_id),
                "type": 0,
            }
            data["type"] = 19
        return data

    def snapshot(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "embeds": self.embeds,
            "components": self.components,
            "attachments": self.attachments,
            "flags": self.flags,
        }

    @property
    def text(self) -> str:
        """Content and embed text together, as a reader sees it."""
        parts = [self.content]
        for embed in self.embeds:
            parts += [embed.get("title", ""), embed.get("description", "")]
            parts += [f"{f.get('name', '')} {f.get('value', '')}" for f in embed.get("fields", [])]
            parts.append(embed.get("footer", {}).get("text", ""))
        return "\n".join(p for p in parts if p)


def pings(content: str, allowed: dict[str, Any] | None) -> list[str]:
    """Who a message would notify, given its `allowed_mentions` (None: Discord's default, all)."""
    parse = None if allowed is None else set(allowed.get("parse", []))
    users = {str(u) for u in (allowed or {}).get("users", [])}
    roles = {str(r) for r in (allowed or {}).get("roles", [])}
    found: list[str] = []
    for match in _MENTION_RE.finditer(content):
        text = match.group(0)
        if match.group(1):
            if parse is None or "users" in parse or match.group(1) in users:
                found.append(f"user:{match.group(1)}")
        elif match.group(2):
            if parse is None or "roles" in parse or match.group(2) in roles:
                found.append(f"role:{match.group(2)}")
        elif parse is None or "everyone" in parse:
            found.append(text)
    return found


@dataclass
class Interaction:
    id: int
    token: str
    type: int
    channel_id: int
    guild_id: int | None
    user: User
    data: dict[str, Any]
    created: float = field(default_factory=time.monotonic)
    callback_type: int | None = None
    ephemeral: bool = False
    original_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    modal: dict[str, Any] | None = None
