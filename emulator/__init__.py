"""A strict Discord emulator on loopback, for tests and the playground."""

from __future__ import annotations

from emulator.driver import Emulator
from emulator.state import Channel, Guild, Interaction, Message, User

__all__ = ["Channel", "Emulator", "Guild", "Interaction", "Message", "User"]
