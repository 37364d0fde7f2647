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
            "id": str(interaction.id),
            "application_id": str(self.application_id),
            "type": interaction.type,
            "data": {k: v for k, v in interaction.data.items() if not k.startswith("_")},
            "guild_id": str(guild.id),
            "channel_id": str(channel.id),
            "channel": channel.payload(),
            "member": member.payload() | {"permissions": perms},
            "token": interaction.token,
            "version": 1,
            "app_permissions": str(guild.permissions_of(self.bot_user.id)),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "attachment_size_limit": 10 * 1024 * 1024,
        } | (
            {"message": self._message(interaction.data["_message_id"]).payload()}
            if "_message_id" in interaction.data
            else {}
        )

    async def _interact(
        self, user: User, channel: Channel, kind: int, data: dict[str, Any]
    ) -> Interaction:
        interaction = Interaction(
            id=self.snowflake(),
            token=secrets.token_urlsafe(24),
            type=kind,
            channel_id=channel.id,
            guild_id=channel.guild_id,
            user=user,
            data=data,
        )
        self.interactions[interaction.id] = interaction
        await self.dispatch("INTERACTION_CREATE", self._interaction_payload(interaction))
        return interaction

    async def slash(
        self,
        user: User,
        channel: Channel,
        command: str,
        *,
        files: dict[str, tuple[str, bytes]] | None = None,
        **options: Any,
    ) -> Interaction:
        """Run `/command` with options; a subcommand is written `"story continue"`. `files`:
        attachment options, by option name, as (filename, bytes)."""
        name, *sub = command.split()
        registered = self._find_command(channel.guild_id, name)
        opts = [{"name": k, "type": _OPTION_TYPES[type(v)], "value": v} for k, v in options.items()]
        resolved: dict[str, Any] = {}
        for option, (filename, content) in (files or {}).items():
            attachment = self.attach(filename, content)
            resolved.setdefault("attachments", {})[attachment["id"]] = attachment
            opts.append({"name": option, "type": 11, "value": attachment["id"]})
        if sub:
            opts = [{"name": sub[0], "type": 1, "options": opts}]
        data = {
            "id": registered["id"],
            "name": name,
            "type": 1,
            "options": opts,
            "guild_id": str(channel.guild_id),
        } | ({"resolved": resolved} if resolved else {})
        return await self._interact(user, channel, 2, data)

    async def say(
        self,
        user: User,
        channel: Channel,
        content: str,
        *,
        reply_to: Message | None = None,
        files: dict[str, bytes] | None = None,
    ) -> Message:
        """`user` posts `content` in `channel` (optionally as a reply, or with files, served by
        the attachment host)."""
        body: dict[str, Any] = {"content": content}
        if reply_to is not None:
            body["message_reference"] = {"message_id": str(reply_to.id)}
        message = self._new_message(channel.id, user, body)
        message.attachments = [self.attach(name, data) for name, data in (files or {}).items()]
        payload = message.payload()
        payload["member"] = self.guilds[channel.guild_id].members[user.id].payload()
        if reply_to is not None:
            payload["referenced_message"] = reply_to.payload()
        await self.dispatch("MESSAGE_CREATE", payload)
        await self._notify()
        return message

    async def edit(self, message: Message, content: str) -> None:
        """The author edits their message."""
        self._apply_edit(message, {"content": content})
        payload = message.payload()
        await self.dispatch("MESSAGE_UPDATE", payload)
        await self._notify()

    async def delete(self, message: Message) -> None:
        """The author (or a moderator) deletes a message."""
        await self._delete_message({}, None, str(message.channel_id), str(message.id))  # type: ignore[arg-type]
        await self._notify()

    async def context_menu(self, user: User, target: Message, command: str) -> Interaction:
        """`user` runs the message command `command` ("Critique this") on `target`."""
        channel = self.channels[target.channel_id]
        registered = self._find_command(channel.guild_id, command, kind=3)
        data = {
            "id": registered["id"],
            "name": command,
            "type": 3,
            "target_id": str(target.id),
            "resolved": {"messages": {str(target.id): target.payload()}},
        }
        return await self._interact(user, channel, 2, data)

    def _component(self, message: Message, custom_id: str) -> dict[str, Any]:
        for row in message.components:
            for component in row.get("components", []):
                if component.get("custom_id") == custom_id:
                    return component
        raise LookupError(f"message {message.id} has no component {custom_id!r}")

    async def click(self, user: User, message: Message, custom_id: str) -> Interaction:
        """`user` clicks the button `custom_id` on `message`."""
        component = self._component(message, custom_id)
        if component.get("disabled"):
            raise LookupError(f"button {custom_id!r} is disabled")
        data = {"custom_id": custom_id, "component_type": 2, "_message_id": message.id}
        return await self._interact(user, self.channels[message.channel_id], 3, data)

    async def select(
        self, user: User, message: Message, custom_id: str, values: list[str]
    ) -> Interaction:
        """`user` picks `values` in the select menu `custom_id` on `message`."""
        self._component(message, custom_id)
        data = {
            "custom_id": custom_id,
            "component_type": 3,
            "values": values,
            "_message_id": message.id,
        }
        return await self._interact(user, self.channels[message.channel_id], 3, data)

    async def submit_modal(self, user: User, shown_by: Interaction, **fields: str) -> Interaction:
        """`user` fills in and submits the modal that the bot showed in answer to `shown_by`."""
        if shown_by.modal is None:
            raise LookupError("the bot showed no modal for that interaction")
        rows = [
            {"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]}
            for k, v in fields.items()
        ]
        data: dict[str, Any] = {"custom_id": shown_by.modal["custom_id"], "components": rows}
        if "_message_id" in shown_by.data:
            data["_message_id"] = shown_by.data["_message_id"]
        return await self._interact(user, self.channels[shown_by.channel_id], 5, data)

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
