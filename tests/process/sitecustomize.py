"""Redirects discord.py to a loopback emulator from outside the bot process (tests only).

Python imports `sitecustomize` at start-up from the path; the process tests put this folder on
PYTHONPATH and set DISCORD_EMULATOR_URL, so the bot itself runs unmodified.
"""

from __future__ import annotations

import os

_url = os.environ.get("DISCORD_EMULATOR_URL")
if _url:
    import discord.gateway
    import discord.http
    import yarl

    discord.http.Route.BASE = f"{_url}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(
        _url.replace("http://", "ws://", 1) + "/gateway"
    )
