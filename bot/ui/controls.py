"""The buttons under every output, and the Cancel button while a request waits or runs.

Output buttons are `DynamicItem`s whose custom_id is `llmos:<action>:<generation id>`, so any
button on any output, however old, is understood after a restart. What a button does is up to
the handler a cog registers for its bot in `cog_load` (`handle_output_controls`,
`handle_expand_menu`); this module only draws and routes.
"""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import discord
from discord.ext import commands

from bot.prompts.brainstorm import parse_ideas
from bot.store import GenerationRecord
from bot.ui.replies import apologise, refuse

log = logging.getLogger(__name__)

# action: (emoji, label, row). Labels are kept short: five buttons share a row on a phone.
BUTTONS: dict[str, tuple[str, str | None, int]] = {
    "regen": ("🔁", None, 0),
    "prev": ("◀", None, 0),
    "next": ("▶", None, 0),
    "delete": ("🗑", None, 0),
    "longer": ("➕", "Longer", 1),
    "shorter": ("➖", "Shorter", 1),
    "remix": ("✏️", "Remix", 1),
    "keep": ("✅", "Keep", 1),
    "up": ("👍", None, 2),
    "down": ("👎", None, 2),
}


# The same controls as reactions (on any output, old ones too): emoji -> action.
REACTIONS = {
    "🔁": "regenerate",
    "➕": "longer",
    "➖": "shorter",
    "✅": "keep",
    "👍": "up",
    "👎": "down",
}


def control_id(action: str, generation_id: int) -> str:
    return f"llmos:{action}:{generation_id}"


async def run_handler(
    interaction: discord.Interaction, what: str, call: Callable[[], Awaitable[None]] | None
) -> None:
    """Run a component's handler (None: its cog is not loaded); a failure gets an apology,
    never a traceback on Discord."""
    if call is None:
        await refuse(interaction, f"That {what} isn't available right now.")
        return
    try:
        await call()
    except Exception as error:
        await apologise(interaction, error)


class ControlHandler(Protocol):
    async def on_control(
        self, interaction: discord.Interaction, action: str, generation_id: int
    ) -> None: ...


class ExpandHandler(Protocol):
    async def expand(
        self, interaction: discord.Interaction, generation_id: int, index: int
    ) -> None: ...


@dataclass
class _Routes:
    """Where one bot's component presses go."""

    output: ControlHandler | None = None
    expand: ExpandHandler | None = None


# Per client, so that two bots in one process (tests) each reach their own cogs.
_ROUTES: weakref.WeakKeyDictionary[discord.Client, _Routes] = weakref.WeakKeyDictionary()


def _routes(client: discord.Client) -> _Routes:
    return _ROUTES.setdefault(client, _Routes())


def handle_output_controls(
    bot: commands.Bot | commands.AutoShardedBot, handler: ControlHandler | None
) -> None:
    """Send presses of the buttons under every output on `bot` to `handler` (from a cog's
    `cog_load`); None (from `cog_unload`) stops listening for them."""
    _routes(bot).output = handler
    if handler is None:
        bot.remove_dynamic_items(OutputControl)
    else:
        bot.add_dynamic_items(OutputControl)


def handle_expand_menu(
    bot: commands.Bot | commands.AutoShardedBot, handler: ExpandHandler | None
) -> None:
    """Send choices in the expand menu under brainstormed lists on `bot` to `handler`; None
    stops listening for them."""
    _routes(bot).expand = handler
    if handler is None:
        bot.remove_dynamic_items(ExpandIdea)
    else:
        bot.add_dynamic_items(ExpandIdea)


class OutputControl(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"llmos:(?P<action>[a-z]+):(?P<gid>\d+)",
):
    """One button of an output's controls."""

    def __init__(
        self,
        action: str,
        generation_id: int,
        *,
        label: str | None = None,
        disabled: bool = False,
        row: int | None = None,
    ) -> None:
        emoji, default_label, default_row = BUTTONS.get(action, (None, None, 0))
        super().__init__(
            discord.ui.Button(
                custom_id=control_id(action, generation_id),
                emoji=emoji,
                label=label or default_label,
                disabled=disabled,
                row=default_row if row is None else row,
                style=discord.ButtonStyle.secondary,
            )
        )
        self.action = action
        self.generation_id = generation_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> OutputControl:
        return cls(match["action"], int(match["gid"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        handler = _routes(interaction.client).output
        await run_handler(
            interaction,
            "button",
            None
            if handler is None
            else lambda: handler.on_control(interaction, self.action, self.generation_id),
        )


class ExpandIdea(
    discord.ui.DynamicItem[discord.ui.Select[Any]], template=r"brainstorm:expand:(?P<gid>\d+)"
):
    """The "expand an idea" menu under a brainstormed list. Its custom_id carries the list's
    generation id, so it keeps working after a restart."""

    def __init__(self, generation_id: int, count: int) -> None:
        options = [
            discord.SelectOption(label=f"Expand idea {i}", value=str(i))
            for i in range(1, max(1, count) + 1)
        ]
        super().__init__(
            discord.ui.Select(
                custom_id=f"brainstorm:expand:{generation_id}",
                placeholder="Expand an idea into a paragraph…",
                options=options,
                row=3,
            )
        )
        self.generation_id = generation_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ExpandIdea:
        count = len(getattr(item, "options", [])) or 1
        return cls(int(match["gid"]), count)

    async def callback(self, interaction: discord.Interaction) -> None:
        handler = _routes(interaction.client).expand
        index = int(self.item.values[0])
        await run_handler(
            interaction,
            "menu",
            None
            if handler is None
            else lambda: handler.expand(interaction, self.generation_id, index),
        )


def output_controls(
    generation_id: int,
    position: int = 1,
    total: int = 1,
    *,
    command: str = "",
    text: str = "",
) -> discord.ui.View:
    """The controls for the alternative `generation_id`, shown as `position`/`total`; a
    brainstormed list (`command`, `text`) also gets its expand menu."""
    view = discord.ui.View(timeout=None)
    for action in ("regen", "prev"):
        view.add_item(
            OutputControl(action, generation_id, disabled=action == "prev" and position <= 1)
        )
    view.add_item(OutputControl("pos", generation_id, label=f"{position}/{total}", disabled=True))
    view.add_item(OutputControl("next", generation_id, disabled=position >= total))
    for action in ("delete", "longer", "shorter", "remix", "keep", "up", "down"):
        view.add_item(OutputControl(action, generation_id))
    if command == "brainstorm":
        ideas = len(parse_ideas(text))
        if ideas:
            view.add_item(ExpandIdea(generation_id, min(ideas, 25)))
    return view


def controls_for(record: GenerationRecord, position: int, total: int) -> discord.ui.View:
    """The buttons under the stored version `record`, shown as `position`/`total`."""
    return output_controls(record.id, position, total, command=record.command, text=record.output)


class CancelView(discord.ui.View):
    """A Cancel button for the person who asked; `on_cancel` runs when they press it."""

    def __init__(self, owner_id: int, on_cancel: Callable[[], object] | None = None) -> None:
        super().__init__(timeout=None)
        self.owner_id = owner_id
        self.on_cancel = on_cancel
        self.pressed = False

    @discord.ui.button(label="Cancel", emoji="✖️", style=discord.ButtonStyle.secondary)
    async def cancel(
        self, interaction: discord.Interaction, _button: discord.ui.Button[Any]
    ) -> None:
        if interaction.user.id != self.owner_id:
            await interaction.response.send_message(
                "Only the person who asked can cancel this.", ephemeral=True
            )
            return
        self.pressed = True
        await interaction.response.defer()  # the answer's own edit says "Cancelled."
        if self.on_cancel is not None:
            self.on_cancel()


class Form(discord.ui.Modal):
    """A modal whose failures are answered politely instead of silently."""

    async def on_error(  # type: ignore[override]  # discord.py's Modal drops the item
        self, interaction: discord.Interaction, error: Exception, /
    ) -> None:
        await apologise(interaction, error)
