"""Which shard a server belongs to, and which servers this process answers for.

Discord sends a server's events on shard `(server id >> 22) % shard count`, and direct
messages on shard 0 (https://discord.com/developers/docs/events/gateway#sharding). Several
processes share one database when each connects its own `SHARD_IDS`; what one of them does
on its own (finishing the journal after a restart) is limited to the servers of its shards.
"""

from __future__ import annotations

from bot.config import Settings


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """The shard that carries `guild_id`'s events (a direct message, `None`: shard 0)."""
    if guild_id is None:
        return 0
    return (guild_id >> 22) % shard_count


def owns(settings: Settings, guild_id: int | None) -> bool:
    """Whether this process's shards carry `guild_id` (with every shard, `SHARD_IDS` unset:
    every server and every direct message)."""
    if settings.shard_ids is None or settings.shard_count is None:
        return True
    return shard_of(guild_id, settings.shard_count) in settings.shard_ids
