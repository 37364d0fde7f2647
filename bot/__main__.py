"""The launcher: `python -m bot` (or `llmos`) runs the bot; `python -m bot db status|upgrade`.

Start-up order: settings, logging, database (migrated), model, queue, Discord. Each resource
is opened with `async with` and closed in reverse order, also on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import discord

from bot.config import ConfigError, Settings, load_settings
from bot.logs import setup_logging
from bot.store import MigrationError, Store

log = logging.getLogger("bot")

NO_TOKEN_HELP = """\
LLMOS needs a Discord bot token to connect, and none is set (DISCORD_TOKEN).

  1. Copy .env.example to .env (cp .env.example .env).
  2. Create an application at https://discord.com/developers/applications, open "Bot",
     press "Reset Token", and put the token in .env as DISCORD_TOKEN=...
  3. On the same page, turn on the privileged "Message Content Intent" (story channels
     read people's messages).
  4. Invite the bot: "OAuth2" > "URL Generator", scopes "bot" and "applications.commands",
     permissions View Channels, Send Messages, Send Messages in Threads, Create Public
     Threads, Embed Links, Attach Files, Read Message History and Add Reactions.
     Open the generated URL and pick your server.
  5. Run `make run` again. For quick tests, SYNC_COMMANDS=guild:<your server id> makes new
     commands appear at once instead of within an hour.

No token yet? `make playground` runs the bot against a local Discord emulator in this
terminal: type /poem topic: autumn rain form: haiku and watch it write.
"""


async def run_bot(settings: Settings) -> int:
    """Run until Discord disconnects or a signal arrives; returns the exit status."""
    from bot.app import LLMOSBot
    from bot.generation.loader import ModelLoadError
    from bot.services import open_services

    assert settings.discord_token is not None
    try:
        async with open_services(settings) as services:
            bot = LLMOSBot(services)

            async def shutdown(signame: str) -> None:
                log.info("%s received: finishing up", signame)
                # Waiting and running requests end with ShuttingDown: journalled ones stay in
                # the journal, and their messages say they will be finished after the restart.
                await services.queue.close()
                await asyncio.sleep(1.5)  # time for that edit (they are a second apart)
                await bot.close()

            loop = asyncio.get_running_loop()

            stopping: set[asyncio.Task[None]] = set()  # keeps the shutdown task referenced

            def on_signal(sig: signal.Signals) -> None:
                stopping.add(asyncio.ensure_future(shutdown(sig.name)))

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, on_signal, sig)
            try:
                async with bot:
                    await bot.start(settings.discord_token)
            except discord.LoginFailure:
                log.error("Discord refused the token. Check DISCORD_TOKEN in .env.")
                return 1
            except discord.PrivilegedIntentsRequired:
                log.error(
                    "Discord refused the Message Content intent. Turn it on in the Developer "
                    "Portal (Bot > Privileged Gateway Intents) and start again."
                )
                return 1
    except ModelLoadError as exc:
        log.error("%s", exc)
        return 1
    log.info("Stopped cleanly")
    return 0


async def db_command(settings: Settings, action: str) -> int:
    async with Store.open(settings.database_path, migrate=False) as store:
        if action == "upgrade":
            applied = await store.upgrade()
            for migration in applied:
                print(f"applied {migration.label}")
            if not applied:
                print("already up to date")
        for state in await store.migration_status():
            print(f"{state.migration.label:40} {state.applied_at or 'pending'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmos", description="The LLMOS Discord bot.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the bot (the default)")
    sub.add_parser("playground", help="try the bot in this terminal, against a local Discord")
    db = sub.add_parser("db", help="database migrations")
    db.add_argument("action", choices=("status", "upgrade"))
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(
        settings.log_level, secrets=[settings.discord_token or "", settings.openai_api_key or ""]
    )
    try:
        if args.command == "db":
            return asyncio.run(db_command(settings, args.action))
        if args.command == "playground":
            from bot.playground import run_playground

            return asyncio.run(run_playground(settings))
        if not settings.discord_token:
            print(NO_TOKEN_HELP, file=sys.stderr)
            return 2
        return asyncio.run(run_bot(settings))
    except MigrationError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
