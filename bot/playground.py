"""`python -m bot playground`: the real bot against a local Discord emulator, in a terminal.

A writer can try LLMOS without a Discord token: what they type becomes what a Discord user
does (a slash command, a message, a reaction, a click), and the bot's messages and edits are
printed as they happen. The bot is the same code as in production; only Discord is local.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TextIO

from bot.config import Settings

HELP = """\
Type what a Discord user would do, in #writers-room:
  /poem topic: autumn rain form: haiku    run a slash command (options as  name: value)
  Once upon a time, a fox...              say something
  react 🔁 3   /   unreact 🔁 3            add or remove a reaction on message [3]
  click regen 3                           press a button on message [3] (regen, prev, next,
                                          longer, shorter, keep, delete, up, down, or an id)
  reply 3 make it darker                  reply to message [3]: refines it
  messages                                show the channel again
  help                                    this text
  quit                                    stop (Ctrl-D works too)
Messages are numbered [1], [2], ... as they appear."""

_OPTION = re.compile(r"(?:^|\s)([a-z_]+):\s*")


def parse_slash(line: str) -> tuple[str, dict[str, str]]:
    """`/story continue direction: north length: short` -> ("story continue", {...})."""
    body = line.strip()[1:]
    parts = _OPTION.split(body)
    command = parts[0].strip()
    options = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    return command, options


def typed_options(command: dict[str, Any], sub: list[str], raw: dict[str, str]) -> dict[str, Any]:
    """Convert option text to the types the registered command declares; match choices."""
    options = command.get("options", [])
    for name in sub:
        options = next((o.get("options", []) for o in options if o["name"] == name), [])
    declared = {o["name"]: o for o in options}
    typed: dict[str, Any] = {}
    for name, text in raw.items():
        spec = declared.get(name)
        if spec is None:
            raise ValueError(
                f"/{command['name']} has no option {name!r}; it has: "
                f"{', '.join(declared) or 'none'}"
            )
        for choice in spec.get("choices", []):
            if text.lower() in (str(choice["value"]).lower(), choice["name"].lower()):
                text = choice["value"]
        kind = spec["type"]
        typed[name] = (
            int(text)
            if kind == 4
            else float(text)
            if kind == 10
            else (text.lower() in ("true", "yes", "1") if kind == 5 else text)
        )
    return typed


class Transcript:
    """Prints the bot's messages and edits with short numbers, compactly while streaming."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.numbers: dict[int, int] = {}
        self.by_number: dict[int, Any] = {}

    def number(self, message: Any) -> int:
        if message.id not in self.numbers:
            self.numbers[message.id] = len(self.numbers) + 1
            self.by_number[self.numbers[message.id]] = message
        return self.numbers[message.id]

    def show(self, change: str, message: Any) -> None:
        n = self.number(message)
        who = message.author.name
        if change == "delete":
            self._print(f"[{n}] (deleted)")
            return
        if message.flags & 128:
            self._print(f"[{n}] {who} is thinking…")
            return
        head = f"[{n}] {who}{' (edited)' if change == 'edit' else ''}:"
        if message.embeds:
            embed = message.embeds[0]
            lines = [f"{head} {embed.get('title', '')}".rstrip()]
            lines += [f"    {line}" for line in (embed.get("description") or "").splitlines()]
            footer = (embed.get("footer") or {}).get("text")
            if footer:
                lines.append(f"    — {footer}")
            self._print("\n".join(lines))
        else:
            text = message.content.replace("\n", " ")
            self._print(f"{head} {text[:160] + ('…' if len(text) > 160 else '')}")
        for row in message.components:
            ids = [c.get("custom_id") or c.get("label") for c in row.get("components", [])]
            self._print(f"    buttons: {', '.join(str(i) for i in ids)}")

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)


async def run_playground(
    settings: Settings, *, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout
) -> int:
    """Run the bot on a local emulator and drive it from `stdin` until quit or end of input."""
    from bot.app import LLMOSBot
    from bot.generation.loader import ModelLoadError
    from bot.services import open_services
    from emulator import Emulator

    if logging.getLogger().level > logging.DEBUG:
        # The transcript is the interface; log lines would bury it.
        logging.disable(logging.WARNING)
    emu = await Emulator().start()
    guild = emu.add_guild("Playground")
    channel = emu.add_channel(guild, "writers-room")
    you = emu.add_member(guild, "you")
    emu.redirect_discord()
    transcript = Transcript(out)
    settings = replace(
        settings,
        discord_token=emu.token,
        sync_commands="global",
        database_path=settings.database_path.with_name("playground.sqlite3"),
        database_url=None,  # its own file, never a shared database
        shard_count=None,  # one emulated server: every shard, whatever .env says
        shard_ids=None,
    )
    print(f"Loading {settings.model} (the first time converts it, about 20 s)…", file=out)
    try:
        async with open_services(settings) as services:
            bot = LLMOSBot(services)
            await bot.login(emu.token)
            runner = asyncio.create_task(bot.connect())
            await asyncio.wait_for(bot.wait_until_ready(), 60)
            emu.listeners.append(transcript.show)
            print(f"Connected. You are 'you' in #{channel.name}.\n{HELP}", file=out, flush=True)
            try:
                await _repl(emu, channel, you, transcript, stdin, out)
            finally:
                await bot.close()
                runner.cancel()
    except ModelLoadError as exc:
        print(f"Could not load the model: {exc}", file=out)
        return 1
    finally:
        await emu.stop()
    return 0


async def _repl(
    emu: Any, channel: Any, you: Any, transcript: Transcript, stdin: TextIO, out: TextIO
) -> None:
    loop = asyncio.get_running_loop()
    say: Callable[[str], None] = lambda text: print(text, file=out, flush=True)  # noqa: E731
    while True:
        line = await loop.run_in_executor(None, stdin.readline)
        if not line:
            return
        line = line.strip()
        if not line:
            continue
        try:
            if line in ("quit", "exit"):
                return
            if line == "help":
                say(HELP)
            elif line == "messages":
                for message in emu.channel_messages(channel.id):
                    transcript.show("create", message)
            elif line.startswith("/"):
                name, raw = parse_slash(line)
                command, *sub = name.split()
                registered = emu._find_command(channel.guild_id, command)
                await emu.slash(you, channel, name, **typed_options(registered, sub, raw))
            elif line.startswith(("react ", "unreact ")):
                verb, emoji, number = line.split(maxsplit=2)
                target = transcript.by_number[int(number)]
                await (emu.react if verb == "react" else emu.unreact)(you, target, emoji)
                say(f"(you {verb}ed {emoji} on [{number}])")
            elif line.startswith("click "):
                _, custom_id, number = line.split(maxsplit=2)
                target = transcript.by_number[int(number)]
                if ":" not in custom_id:  # a short name: regen, prev, next, longer, keep, up...
                    custom_id = target.component(f"llmos:{custom_id}:")["custom_id"]
                await emu.click(you, target, custom_id)
            elif line.startswith("reply "):
                _, number, text = line.split(maxsplit=2)
                await emu.say(you, channel, text, reply_to=transcript.by_number[int(number)])
            else:
                await emu.say(you, channel, line)
        except (LookupError, ValueError) as exc:
            say(f"(that did not work: {exc}; type help)")
