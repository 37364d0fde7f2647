"""The adapters trained on feedback, for server managers: `/model status`, `promote`, `rollback`."""

from __future__ import annotations

import asyncio
import io
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.generation.base import AdapterRefused
from bot.learning.admin import figures
from bot.services import Services
from bot.store.models import EVERY_SERVER, AdapterRecord, Kind, NothingToRollBack
from bot.ui.charts import loss_chart
from bot.ui.render import EMBED_COLOUR
from bot.ui.replies import NO_MENTIONS, refuse, refuse_deferred

if TYPE_CHECKING:
    from bot.app import LLMOSBot

KINDS = [
    app_commands.Choice(name="the writer (generator)", value="generator"),
    app_commands.Choice(name="the reward model that picks among drafts", value="reward"),
]
LISTED = 8  # adapters in `/model status`
# What `bot.learning.train.new_id` makes (and any sane id): anything else is not echoed back.
ADAPTER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
NEEDS_MANAGE = "Managing this server's models needs the Manage Server permission."
OWNER_ONLY = (
    "Only the bot's owner can change what serves every server. Leave `everywhere` off to "
    "change this server only."
)


def _kind(value: str) -> Kind:
    return "reward" if value == "reward" else "generator"


def _role(kind: str) -> str:
    return "choosing among drafts" if kind == "reward" else "writing"


def _serving(adapter: str | None, source: str, kind: str) -> str:
    """What serves, in words: `id` (where from), or the base model (no reward model)."""
    if adapter is None:
        none = "no reward model (drafts are not reranked)" if kind == "reward" else "the base model"
        return none if source == "none promoted" else f"{none}, {source}"
    return f"`{adapter}` ({source})"


def _losses(record: AdapterRecord) -> list[dict[str, Any]]:
    """The training losses of an adapter, as its manifest keeps them."""
    found = record.manifest.get("losses")
    return list(found) if isinstance(found, list) else []


def _sentence(text: str) -> str:
    """`text` to follow a colon: a leading capital lowered (not an acronym's)."""
    if text[:1].isupper() and text[1:2].islower():
        return text[:1].lower() + text[1:]
    return text


async def _owner(interaction: discord.Interaction) -> bool:
    """Whether the user is the bot's owner (or on its team): only they change every server."""
    client = interaction.client
    return isinstance(client, commands.bot.BotBase) and await client.is_owner(interaction.user)


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class Model(commands.GroupCog, group_name="model"):
    """The adapters that write for this server, trained on its feedback."""

    def __init__(self, services: Services) -> None:
        self.services = services
        super().__init__()

    async def _usable(self, guild_id: int) -> list[AdapterRecord]:
        """Adapters that may serve this server (its own, or trained on every server), newest
        first."""
        return [r for r in await self.services.models.all() if r.guild_id in (None, guild_id)]

    # -- status --------------------------------------------------------------------------------

    @app_commands.command(name="status")
    async def status(self, interaction: discord.Interaction) -> None:
        """What writes for this server, how it was judged, and the newest adapters, with a chart."""
        if not interaction.permissions.manage_guild:
            await refuse(interaction, NEEDS_MANAGE)
            return
        guild_id = interaction.guild_id or 0
        usable = await self._usable(guild_id)
        if not usable:
            await refuse(
                interaction,
                "No adapters have been trained for this server yet, so the base model writes "
                "here. Whoever runs the bot can train one on the votes and kept answers: "
                "`make train` (every server's), or `python -m bot train --server "
                f"{guild_id}` (this server's only); then `/model promote` puts it to work.",
            )
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        embed, chart = await self._status(guild_id, usable)
        png = await asyncio.to_thread(loss_chart, _losses(chart), f"Training loss · {chart.id}")
        embed.set_image(url="attachment://losses.png")
        await interaction.edit_original_response(
            embed=embed,
            attachments=[discord.File(io.BytesIO(png), filename="losses.png")],
            allowed_mentions=NO_MENTIONS,
        )

    async def _status(
        self, guild_id: int, usable: list[AdapterRecord]
    ) -> tuple[discord.Embed, AdapterRecord]:
        """The status embed, and the adapter whose losses it charts (the writer serving, else
        the newest)."""
        adapters, models = self.services.adapters, self.services.models
        by_id = {r.id: r for r in usable}
        writer, reward = adapters.adapter_for(guild_id), adapters.reward_for(guild_id)
        embed = discord.Embed(title="Models for this server", colour=EMBED_COLOUR)
        for name, kind, adapter in (
            ("Writer", "generator", writer),
            ("Reward model", "reward", reward),
        ):
            lines = [_serving(adapter, adapters.source(guild_id, kind), kind)]
            record = by_id.get(adapter) if adapter else None
            if record is not None:
                lines += [figures(record), record.verdict]
            embed.add_field(name=name, value="\n".join(lines)[:1024], inline=False)
        listed = []
        for record in usable[:LISTED]:
            data = record.manifest.get("data") or {}
            gone = await models.forgotten(
                data.get("generation_ids") or [], data.get("feedback_ids") or []
            )
            line = (
                f"`{record.id}` {record.kind} {'✓' if record.promotable else '✗'} "
                f"· {record.created_at[:16].replace('T', ' ')}"
            )
            if record.id in (writer, reward):
                line += " · serving"
            if gone:
                line += " · ⚠ trained on data since forgotten: retrain"
            listed.append(line)
        more = len(usable) - LISTED
        if more > 0:
            listed.append(f"…and {more} older (`python -m bot model list`)")
        embed.add_field(name="Newest adapters", value="\n".join(listed)[:1024], inline=False)
        embed.set_footer(text="✓ passed its evaluation · ✗ failed it (promote with force)")
        chart = by_id.get(writer or "") or usable[0]
        return embed, chart

    # -- promote -------------------------------------------------------------------------------

    @app_commands.command(name="promote")
    @app_commands.describe(
        adapter="The adapter's id (see /model status)",
        force="Promote it even if it failed its evaluation",
        everywhere="For every server (the bot's owner only)",
    )
    async def promote(
        self,
        interaction: discord.Interaction,
        adapter: str,
        force: bool = False,
        everywhere: bool = False,
    ) -> None:
        """Put an adapter to work for this server (it loads between two batches)."""
        if not interaction.permissions.manage_guild:
            await refuse(interaction, NEEDS_MANAGE)
            return
        adapter = adapter.strip()
        if not ADAPTER_ID.fullmatch(adapter):
            await refuse(interaction, "That is not an adapter id; `/model status` lists them.")
            return
        if everywhere and not await _owner(interaction):
            await refuse(interaction, OWNER_ONLY)
            return
        if await self.services.models.get(adapter) is None:
            await refuse(
                interaction, f"There is no adapter `{adapter}`; `/model status` lists them."
            )
            return
        guild_id = interaction.guild_id or 0
        scope = EVERY_SERVER if everywhere else guild_id
        await interaction.response.defer(ephemeral=True, thinking=True)  # loading takes seconds
        try:
            promotion = await self.services.adapters.promote(
                adapter, scope=scope, by=interaction.user.id, force=force
            )
        except AdapterRefused as refused:
            text = _sentence(str(refused).strip() or "it cannot be served.")
            await refuse_deferred(
                interaction, f"I did not promote `{adapter}`: {text} Nothing changed."[:1900]
            )
            return
        kind = _kind(promotion.kind)
        where = "every server" if everywhere else "this server"
        forced = " (forced past its evaluation)" if promotion.forced else ""
        await interaction.edit_original_response(
            content=f"Promoted `{adapter}` for {where}{forced}. "
            f"Now {_role(kind)} here: {await self._now(guild_id, kind)}.",
            allowed_mentions=NO_MENTIONS,
        )

    @promote.autocomplete("adapter")
    async def _adapter_choices(
        self, interaction: discord.Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        """Adapters usable on this server, newest first, matching what was typed."""
        if not interaction.permissions.manage_guild:
            return []
        usable = await self._usable(interaction.guild_id or 0)
        return [
            app_commands.Choice(
                name=f"{r.id} · {r.kind} · {'✓' if r.promotable else '✗'}"[:100], value=r.id
            )
            for r in usable
            if typed.strip().casefold() in r.id.casefold()
        ][:25]

    # -- rollback ------------------------------------------------------------------------------

    @app_commands.command(name="rollback")
    @app_commands.describe(
        kind="The writer or the reward model",
        everywhere="Undo the latest promotion for every server (the bot's owner only)",
    )
    @app_commands.choices(kind=KINDS)
    async def rollback(
        self, interaction: discord.Interaction, kind: str = "generator", everywhere: bool = False
    ) -> None:
        """Go back to what served this server before its latest promotion."""
        if not interaction.permissions.manage_guild:
            await refuse(interaction, NEEDS_MANAGE)
            return
        if everywhere and not await _owner(interaction):
            await refuse(interaction, OWNER_ONLY)
            return
        which = _kind(kind)
        guild_id = interaction.guild_id or 0
        scope = EVERY_SERVER if everywhere else guild_id
        nothing = (
            f"There is nothing to roll back: no {'reward model' if which == 'reward' else 'writer'}"
            f" has been promoted for {'every server' if everywhere else 'this server'}."
        )
        if await self.services.models.current(scope, which) is None:
            await refuse(interaction, nothing)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)  # loading takes seconds
        try:
            await self.services.adapters.rollback(scope=scope, kind=which)
        except NothingToRollBack:  # rolled back meanwhile, by someone else
            await refuse_deferred(interaction, nothing)
            return
        await interaction.edit_original_response(
            content=f"Rolled back. Now {_role(which)} here: {await self._now(guild_id, which)}.",
            allowed_mentions=NO_MENTIONS,
        )

    async def _now(self, guild_id: int, kind: Kind) -> str:
        """What serves this server now, in words."""
        adapters = self.services.adapters
        if kind == "generator":
            adapter = adapters.adapter_for(guild_id)
        else:
            adapter = adapters.reward_for(guild_id)
        return _serving(adapter, adapters.source(guild_id, kind), kind)


async def setup(bot: LLMOSBot) -> None:
    await bot.add_cog(Model(bot.services))
