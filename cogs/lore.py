"""The world's lore: `/lore add|edit|remove|list|show|why|import|export` and `/character add`.

In a channel with an active story, these edit the story's lorebook; elsewhere, the channel's
own (used by chat, brainstorm and scenes there). Anyone may add an entry; it is changed or
removed by whoever added it or a moderator, and an import that replaces entries needs a
moderator.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.lore.entries import LoreEntry, LoreRefused, check, split_keys
from bot.lore.formats import MAX_BYTES, character_keys, read_lore_file, sillytavern_json
from bot.services import Services
from bot.store.lore import MAX_ENTRIES, LoreExists, LoreFull
from bot.ui.render import split_for_discord
from bot.ui.replies import NO_MENTIONS, refuse, refuse_deferred
from bot.writing.lore import Worlds

if TYPE_CHECKING:
    from bot.app import LLMOSBot

FULL = f"This lorebook is full ({MAX_ENTRIES} entries). Remove some before adding more."


def describe(entry: LoreEntry) -> str:
    """An entry as `/lore show` and `/lore list` show it."""
    keys = ", ".join(f"`{k}`" for k in entry.keys) or "—"
    flags = [
        "always on" if entry.always else None,
        "regex keys" if entry.regex else None,
        "off" if not entry.enabled else None,
        f"priority {entry.priority}",
    ]
    kind = "🎭 " if entry.kind == "character" else "📜 "
    voice = f"\n*Voice:* {entry.voice}" if entry.voice else ""
    return (
        f"{kind}**{entry.name}** · keys {keys} · {', '.join(f for f in flags if f)}\n"
        f"{entry.text}{voice}"
    )


class Lore(commands.GroupCog, group_name="lore"):
    """The world's facts, which the bot keeps to when it writes."""

    def __init__(self, services: Services, worlds: Worlds) -> None:
        self.services = services
        self.worlds = worlds
        super().__init__()

    async def _where(self, interaction: discord.Interaction) -> tuple[str, int, str]:
        scope, scope_id, story = await self.worlds.scope(interaction.channel_id or 0)
        label = f"the lorebook of **{story.title}**" if story else "this channel's lorebook"
        return scope, scope_id, label

    async def add_entry(
        self, interaction: discord.Interaction, entry: LoreEntry, what: str = "entry"
    ) -> None:
        try:
            entry = check(entry)
        except LoreRefused as refused:
            await refuse(interaction, str(refused))
            return
        scope, scope_id, label = await self._where(interaction)
        try:
            await self.services.lore.add(
                scope,  # type: ignore[arg-type]
                scope_id,
                entry,
                guild_id=interaction.guild_id,
                created_by=interaction.user.id,
            )
        except LoreExists:
            await refuse(
                interaction, f"There is already an entry called “{entry.name}”: use /lore edit."
            )
            return
        except LoreFull:
            await refuse(interaction, FULL)
            return
        keys = ", ".join(entry.keys) or "always on"
        if len(keys) > 300:
            keys = keys[:299] + "…"
        await interaction.response.send_message(
            f"Added the {what} **{entry.name}** to {label} (keys: {keys}).",
            allowed_mentions=NO_MENTIONS,
        )

    @app_commands.command(name="add")
    @app_commands.describe(
        name="What the entry is about (a place, a rule, a thing)",
        keys="Words that bring it into the story, separated by commas (default: its name)",
        text="The facts, as you want the writer to keep them",
        always="Put it in every prompt, keys or not",
        priority="0 to 1000; higher goes first when space is short (default 100)",
        regex="The keys option is one regular expression (matched ignoring case)",
    )
    async def add(
        self,
        interaction: discord.Interaction,
        name: str,
        text: str,
        keys: str = "",
        always: bool = False,
        priority: app_commands.Range[int, 0, 1000] = 100,
        regex: bool = False,
    ) -> None:
        """Add a lore entry that the bot keeps to when its keys come up."""
        entry = LoreEntry(
            name=name,
            text=text,
            # a pattern may hold commas ("a{2,3}"): with regex, the option is one pattern
            keys=((keys,) if keys.strip() else ()) if regex else split_keys(keys),
            always=always,
            priority=priority,
            regex=regex,
        )
        await self.add_entry(interaction, entry)

    @app_commands.command(name="edit")
    @app_commands.describe(
        name="The entry to change",
        text="New text",
        keys="New keys, separated by commas",
        always="Always on?",
        priority="New priority (0 to 1000)",
        new_name="A new name",
        voice="A character's new voice",
        enabled="Use it in prompts?",
    )
    async def edit(
        self,
        interaction: discord.Interaction,
        name: str,
        text: str | None = None,
        keys: str | None = None,
        always: bool | None = None,
        priority: app_commands.Range[int, 0, 1000] | None = None,
        new_name: str | None = None,
        voice: str | None = None,
        enabled: bool | None = None,
    ) -> None:
        """Change a lore entry or a character."""
        scope, scope_id, label = await self._where(interaction)
        old = await self.services.lore.get(scope, scope_id, name)  # type: ignore[arg-type]
        if old is None or old.id is None:
            await refuse(interaction, f"There is no entry called “{name[:100]}” in {label}.")
            return
        author = await self.services.lore.author(old.id)
        if author != interaction.user.id and not interaction.permissions.manage_messages:
            await refuse(interaction, "Only whoever added this entry or a moderator can change it.")
            return
        new_keys = old.keys
        if keys is not None:
            new_keys = ((keys,) if keys.strip() else ()) if old.regex else split_keys(keys)
        changed = LoreEntry(
            name=new_name if new_name is not None else old.name,
            text=text if text is not None else old.text,
            keys=new_keys,
            regex=old.regex,
            always=always if always is not None else old.always,
            priority=priority if priority is not None else old.priority,
            kind=old.kind,
            voice=voice if voice is not None else old.voice,
            enabled=enabled if enabled is not None else old.enabled,
        )
        try:
            changed = check(changed)
            await self.services.lore.edit(old.id, changed)
        except LoreRefused as refused:
            await refuse(interaction, str(refused))
            return
        except LoreExists:
            await refuse(interaction, f"There is already an entry called “{changed.name}”.")
            return
        await interaction.response.send_message(
            f"Updated **{changed.name}** in {label}.", allowed_mentions=NO_MENTIONS
        )

    @app_commands.command(name="remove")
    @app_commands.describe(name="The entry to remove")
    async def remove(self, interaction: discord.Interaction, name: str) -> None:
        """Remove a lore entry or a character (whoever added it, or a moderator)."""
        scope, scope_id, label = await self._where(interaction)
        entry = await self.services.lore.get(scope, scope_id, name)  # type: ignore[arg-type]
        if entry is None or entry.id is None:
            await refuse(interaction, f"There is no entry called “{name[:100]}” in {label}.")
            return
        author = await self.services.lore.author(entry.id)
        if author != interaction.user.id and not interaction.permissions.manage_messages:
            await refuse(interaction, "Only whoever added this entry or a moderator can remove it.")
            return
        await self.services.lore.remove(entry.id)
        await interaction.response.send_message(
            f"Removed **{entry.name}** from {label}.", allowed_mentions=NO_MENTIONS
        )

    @app_commands.command(name="list")
    async def list_(self, interaction: discord.Interaction) -> None:
        """List the lorebook's entries and characters."""
        scope, scope_id, label = await self._where(interaction)
        entries = await self.services.lore.entries(scope, scope_id)  # type: ignore[arg-type]
        if not entries:
            await refuse(interaction, f"{label.capitalize()} is empty. Add to it with /lore add.")
            return
        lines = [
            f"{'🎭' if e.kind == 'character' else '📜'} **{e.name}** — "
            + (", ".join(e.keys[:5]) or "always on")
            + (" · always on" if e.always and e.keys else "")
            + ("" if e.enabled else " · off")
            for e in entries
        ]
        pieces = split_for_discord(
            f"{label.capitalize()}, {len(entries)} entries:\n" + "\n".join(lines)
        )
        await interaction.response.send_message(pieces[0], allowed_mentions=NO_MENTIONS)
        for piece in pieces[1:5]:
            await interaction.followup.send(piece, allowed_mentions=NO_MENTIONS)
        if len(pieces) > 5:
            await interaction.followup.send(
                "The list goes on: /lore export gives every entry as a file.",
                allowed_mentions=NO_MENTIONS,
            )

    @app_commands.command(name="show")
    @app_commands.describe(name="The entry to show")
    async def show(self, interaction: discord.Interaction, name: str) -> None:
        """Show one entry in full."""
        scope, scope_id, label = await self._where(interaction)
        entry = await self.services.lore.get(scope, scope_id, name)  # type: ignore[arg-type]
        if entry is None:
            await refuse(interaction, f"There is no entry called “{name[:100]}” in {label}.")
            return
        await interaction.response.send_message(
            split_for_discord(describe(entry))[0], allowed_mentions=NO_MENTIONS
        )

    @app_commands.command(name="why")
    async def why(self, interaction: discord.Interaction) -> None:
        """Which lore entries the bot's last answer here was given."""
        record = await self.services.store.last_generation(interaction.channel_id or 0)
        if record is None:
            await refuse(interaction, "I haven't written anything in this channel yet.")
            return
        inputs = record.prompt.get("inputs") or {}
        names = inputs.get("lore") if isinstance(inputs, dict) else None
        if not names:
            await refuse(
                interaction,
                f"My last answer here ({record.command}) used no lore entries: none of their keys"
                " came up, or the lorebook is empty.",
            )
            return
        listed = ", ".join(f"**{n}**" for n in names[:40])
        more = f" and {len(names) - 40} more" if len(names) > 40 else ""
        await refuse(
            interaction, f"My last answer here ({record.command}) was given: {listed}{more}."
        )

    @app_commands.command(name="import")
    @app_commands.describe(
        file="SillyTavern World Info, a character card (JSON or PNG) or a NovelAI .lorebook",
        replace="Replace entries that have the same name (moderators)",
    )
    async def import_(
        self, interaction: discord.Interaction, file: discord.Attachment, replace: bool = False
    ) -> None:
        """Import lore or a character from SillyTavern, a character card or NovelAI."""
        if file.size > MAX_BYTES:
            await refuse(
                interaction,
                f"That file is {file.size // 1024} KB; I take lore files up to "
                f"{MAX_BYTES // 2**20} MB.",
            )
            return
        if replace and not interaction.permissions.manage_messages:
            await refuse(interaction, "Only a moderator can replace existing entries.")
            return
        await interaction.response.defer(thinking=True)
        try:
            data = await file.read()
            found = read_lore_file(file.filename, data[: MAX_BYTES + 1])
        except LoreRefused as refused:
            await refuse_deferred(interaction, f"I can't import that file: {refused}")
            return
        except discord.HTTPException:
            await refuse_deferred(interaction, "I couldn't download that file. Please try again.")
            return
        scope, scope_id, label = await self._where(interaction)
        try:
            added, replaced = await self.services.lore.add_many(
                scope,  # type: ignore[arg-type]
                scope_id,
                found.entries,
                guild_id=interaction.guild_id,
                created_by=interaction.user.id,
                replace=replace,
            )
        except LoreExists as clash:
            await refuse_deferred(
                interaction,
                f"Nothing imported: {label} already has an entry called “{clash}”. A moderator can"
                " import with replace:True, or remove it first.",
            )
            return
        except LoreFull:
            await refuse_deferred(interaction, f"Nothing imported. {FULL}")
            return
        characters = sum(1 for e in added if e.kind == "character")
        parts = [f"{len(added) - characters} entries"] + (
            [f"{characters} characters"] if characters else []
        )
        notes = "".join(f"\n· {note}" for note in found.notes[:8])
        again = f" ({replaced} replaced)" if replaced else ""
        await interaction.followup.send(
            f"Imported {' and '.join(parts)}{again} from {found.format}"
            f"{' “' + found.title + '”' if found.title else ''} into {label}.{notes}",
            allowed_mentions=NO_MENTIONS,
        )

    @app_commands.command(name="export")
    async def export(self, interaction: discord.Interaction) -> None:
        """Get the lorebook as SillyTavern World Info JSON."""
        scope, scope_id, label = await self._where(interaction)
        entries = await self.services.lore.entries(scope, scope_id)  # type: ignore[arg-type]
        if not entries:
            await refuse(interaction, f"{label.capitalize()} is empty: nothing to export.")
            return
        data = sillytavern_json(entries, name=f"LLMOS lorebook {scope_id}")
        await interaction.response.send_message(
            f"{label.capitalize()}: {len(entries)} entries, as SillyTavern World Info.",
            file=discord.File(io.BytesIO(data), filename="lorebook.json"),
            allowed_mentions=NO_MENTIONS,
        )


class Character(commands.GroupCog, group_name="character"):
    """The story's characters: lore entries with a voice."""

    def __init__(self, lore: Lore) -> None:
        self.lore = lore
        super().__init__()

    @app_commands.command(name="add")
    @app_commands.describe(
        name="The character's name",
        description="Who they are: looks, history, what they want",
        voice="How they speak (e.g. terse, formal, full of sea slang)",
    )
    async def add(
        self, interaction: discord.Interaction, name: str, description: str, voice: str = ""
    ) -> None:
        """Add a character; /story continue as:<name> then writes from their view."""
        clean = " ".join(name.split())
        keys = tuple(character_keys(clean))  # "Mira Vance", "Mira", "Vance"; never "the"
        entry = LoreEntry(name=clean, text=description, keys=keys, kind="character", voice=voice)
        await self.lore.add_entry(interaction, entry, "character")


async def setup(bot: LLMOSBot) -> None:
    lore = Lore(bot.services, bot.writer.worlds)
    await bot.add_cog(lore)
    await bot.add_cog(Character(lore))
