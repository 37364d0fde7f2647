"""What a Discord user does, in the emulator: run commands, say things, react, click."""

from __future__ import annotations

import secrets
from typing import Any

from emulator.server import DiscordEmulator
from emulator.state import Channel, Interaction, Message, User

_OPTION_TYPES = {str: 3, int: 4, bool: 5, float: 10}


class Emulator(DiscordEmulator):
    """The emulator with a driver API in the words of a user."""

    def _find_command(self, guild_id: int | None, name: str, kind: int = 1) -> dict[str, Any]:
        for scope in (guild_id, None):
            for command in self.commands.get(scope, []):
                if command["name"] == name and command.get("type", 1) == kind:
                    return command
        raise LookupError(f"the bot has not registered the command {name!r} (type {kind})")

    def _interaction_payload(self, interaction: Interaction) -> dict[str, Any]:
        channel = self.channels[interaction.channel_id]
        guild = self.guilds[channel.guild_id]
        member = guild.members[interaction.user.id]
        perms = str(guild.permissions_of(interaction.user.id))
        return {
            "id": str(interaction.id), "application_id": str(self.application_id),
            "type": interaction.type, "data": {k: v for k, v in interaction.data.items()
                                               if not k.startswith("_")},
            "guild_id": str(guild.id), "channel_id": str(channel.id), "channel": channel.payload(),
            "member": member.payload() | {"permissions": perms}, "token": interaction.token,
            "version": 1, "app_permissions": str(guild.permissions_of(self.bot_user.id)),
            "locale": "en-US", "guild_locale": "en-US", "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id)}, "context": 0,
            "attachment_size_limit": 10 * 1024 * 1024,
        } | ({"message": self._message(interaction.data["_message_id"]).payload()}
             if "_message_id" in interaction.data else {})  # fmt: skip

    async def _interact(
        self, user: User, channel: Channel, kind: int, data: dict[str, Any]
    ) -> Interaction:
        interaction = Interaction(
            id=self.snowflake(), token=secrets.token_urlsafe(24), type=kind,
            channel_id=channel.id, guild_id=channel.guild_id, user=user, data=data,
        )  # fmt: skip
        self.interactions[interaction.id] = interaction
        await self.dispatch("INTERACTION_CREATE", self._interaction_payload(interaction))
        return interaction

    async def slash(
        self, user: User, channel: Channel, command: str, **options: Any
    ) -> Interaction:
        """Run `/command` with options; a subcommand is written `"story continue"`."""
        name, *sub = command.split()
        registered = self._find_command(channel.guild_id, name)
        opts = [{"name": k, "type": _OPTION_TYPES[type(v)], "value": v} for k, v in options.items()]
        if sub:
            opts = [{"name": sub[0], "type": 1, "options": opts}]
        data = {
            "id": registered["id"],
            "name": name,
            "type": 1,
            "options": opts,
            "guild_id": str(channel.guild_id),
        }
        return await self._interact(user, channel, 2, data)

    async def say(
        self, user: User, channel: Channel, content: str, *, reply_to: Message | None = None
    ) -> Message:
        """`user` posts `content` in `channel` (optionally as a reply)."""
        body: dict[str, Any] = {"content": content}
        if reply_to is not None:
            body["message_reference"] = {"message_id": str(reply_to.id)}
        message = self._new_message(channel.id, user, body)
        payload = message.payload()
        payload["member"] = self.guilds[channel.guild_id].members[user.id].payload()
        if reply_to is not None:
            payload["referenced_message"] = reply_to.payload()
        await self.dispatch("MESSAGE_CREATE", payload)
        await self._notify()
        return message

    def original(self, interaction: Interaction) -> Message | None:
        """The interaction's original response message, once there is one."""
        if interaction.original_id is None:
            return None
        return self.messages.get(interaction.original_id)

    async def wait_final(
        self, interaction: Interaction, predicate: Any, timeout: float = 30.0
    ) -> Message:
        """Wait until the original response satisfies `predicate(message)`."""

        def check() -> Message | None:
            message = self.original(interaction)
            return message if message is not None and predicate(message) else None

        return await self.wait_for(check, timeout)
