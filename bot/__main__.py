"""The launcher: `python -m bot` (or `llmos`) runs the bot; `python -m bot db status|upgrade`;
`python -m bot train` trains an adapter on the servers' feedback; `python -m bot model
list|promote ID|rollback` manages which one serves.

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

from bot.config import ConfigError, Settings, load_settings, url_secrets
from bot.logs import setup_logging
from bot.store import MigrationError, Store, StoreUnavailable

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
            except discord.ConnectionClosed as exc:
                if exc.code not in (4010, 4011):  # invalid shard, sharding required
                    raise
                log.error(
                    "Discord refused shard %s (close code %d): %s. Check SHARD_COUNT and "
                    "SHARD_IDS, and that no other process runs the same shard.",
                    exc.shard_id,
                    exc.code,
                    "more shards are needed" if exc.code == 4011 else "invalid shard",
                )
                return 1
    except ModelLoadError as exc:
        log.error("%s", exc)
        return 1
    log.info("Stopped cleanly")
    return 0


async def db_command(settings: Settings, action: str) -> int:
    async with Store.open(settings.database, migrate=False) as store:
        if action == "upgrade":
            applied = await store.upgrade()
            for migration in applied:
                print(f"applied {migration.label}")
            if not applied:
                print("already up to date")
        for state in await store.migration_status():
            print(f"{state.migration.label:40} {state.applied_at or 'pending'}")
    return 0


async def train_command(settings: Settings, args: argparse.Namespace) -> int:
    """Train, judge and register an adapter (and a reward model); print progress and the verdict."""
    from bot.generation.loader import ModelLoadError
    from bot.learning.data import TooLittleData
    from bot.learning.train import Hyper, train

    def on_log(stage: str, logs: dict[str, float]) -> None:
        if "loss" in logs:
            print(
                f"  {stage} step {int(logs.get('step', 0)):>4}  loss {logs['loss']:.4f}", flush=True
            )

    hyper = Hyper(learning_rate=args.lr, epochs=args.epochs, max_steps=args.steps, lora_r=args.rank)
    async with Store.open(settings.database) as store:
        try:
            trained = await train(
                settings,
                store,
                args.server,
                hyper=hyper,
                poems=args.poems,
                min_pairs=args.min_pairs,
                reward=not args.no_reward,
                on_log=on_log,
            )
        except TooLittleData as exc:
            print(exc, file=sys.stderr)
            return 1
        except ModelLoadError as exc:
            print(exc, file=sys.stderr)
            return 1
    print(f"Adapter {trained.generator.id} written to {trained.generator.path}.")
    if trained.reward is not None:
        print(f"Reward model {trained.reward.id}: {trained.reward.verdict}")
    if trained.generator.promotable:
        print(f"Promote it with: python -m bot model promote {trained.generator.id}")
    return 0


async def model_command(settings: Settings, args: argparse.Namespace) -> int:
    """List adapters, promote one, or roll back (the running bot picks the change up)."""
    from bot.generation.base import AdapterRefused
    from bot.learning.admin import check_promotion, describe
    from bot.store.models import EVERY_SERVER, Kind, Models, NothingToRollBack

    scope = args.server if getattr(args, "server", None) is not None else EVERY_SERVER
    async with Store.open(settings.database) as store:
        models = Models(store)
        if args.action == "list":
            records = await models.all()
            if not records:
                print("No adapters yet. Train one with `make train` (python -m bot train).")
            in_force = await models.in_force()
            for record in records:
                print(await describe(models, record, in_force))
            return 0
        if args.action == "promote":
            chosen = await models.get(args.id)
            try:
                await asyncio.to_thread(
                    check_promotion, settings, chosen, args.id, scope, args.force
                )
            except AdapterRefused as exc:
                print(f"Not promoted: {exc}", file=sys.stderr)
                return 1
            kind: Kind = "reward" if chosen and chosen.kind == "reward" else "generator"
            await models.promote(args.id, scope=scope, kind=kind, forced=args.force)
            where = "every server" if scope == EVERY_SERVER else f"server {scope}"
            print(
                f"{args.id} now serves {where}. A running bot picks it up within "
                f"{settings.adapter_poll_seconds:g} s."
            )
            return 0
        try:
            after = await models.rollback(scope=scope, kind=args.kind)
        except NothingToRollBack:
            print("Nothing to roll back: no promotion is in force there.", file=sys.stderr)
            return 1
        now = after.adapter_id if after and after.adapter_id else "the base model"
        print(f"Rolled back. Now serving: {now}.")
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmos", description="The LLMOS Discord bot.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the bot (the default)")
    sub.add_parser("playground", help="try the bot in this terminal, against a local Discord")
    db = sub.add_parser("db", help="database migrations")
    db.add_argument("action", choices=("status", "upgrade"))
    train = sub.add_parser("train", help="train an adapter on the servers' feedback")
    train.add_argument("--server", type=int, help="one server's feedback (default: all servers)")
    train.add_argument("--steps", type=int, default=0, help="optimiser steps per stage (0: epochs)")
    train.add_argument("--epochs", type=float, default=1.0)
    train.add_argument("--lr", type=float, default=2e-4, help="learning rate")
    train.add_argument("--rank", type=int, default=8, help="LoRA rank")
    train.add_argument("--poems", type=int, default=8, help="poems for form compliance (0: skip)")
    train.add_argument("--min-pairs", type=int, default=10)
    train.add_argument("--no-reward", action="store_true", help="skip the reward model")
    model = sub.add_parser("model", help="list, promote or roll back adapters")
    actions = model.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every adapter, its metrics and where it serves")
    promote = actions.add_parser("promote", help="serve an adapter")
    promote.add_argument("id")
    promote.add_argument("--server", type=int, help="for one server (default: every server)")
    promote.add_argument("--force", action="store_true", help="even if it failed its evaluation")
    rollback = actions.add_parser("rollback", help="return to what served before")
    rollback.add_argument("--server", type=int, help="one server (default: every server)")
    rollback.add_argument("--kind", choices=("generator", "reward"), default="generator")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(
        settings.log_level,
        secrets=[
            settings.discord_token or "",
            settings.openai_api_key or "",
            *url_secrets(settings.database_url),  # DATABASE_URL's password
        ],
    )
    try:
        if args.command == "db":
            return asyncio.run(db_command(settings, args.action))
        if args.command == "train":
            return asyncio.run(train_command(settings, args))
        if args.command == "model":
            return asyncio.run(model_command(settings, args))
        if args.command == "playground":
            from bot.playground import run_playground

            return asyncio.run(run_playground(settings))
        if not settings.discord_token:
            print(NO_TOKEN_HELP, file=sys.stderr)
            return 2
        return asyncio.run(run_bot(settings))
    except (MigrationError, StoreUnavailable) as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
