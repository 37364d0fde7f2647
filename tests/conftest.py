"""Shared fixtures: real models (tiny and embedded), a real database, a real bot on an emulator."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import torch

from bot.app import LLMOSBot
from bot.config import load_settings
from bot.generation.base import Engine
from bot.generation.batched import BatchedEngine
from bot.generation.engine import TransformersEngine
from bot.generation.loader import LoadedModel, load_model
from bot.generation.queue import GenerationQueue
from bot.services import Services
from bot.store import Store
from emulator import Channel, Emulator, Guild, Message, User
from emulator.state import PERM_MANAGE_CHANNELS, Interaction
from tests.postgres_fixtures import db_target, postgres_server, postgres_url  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
# Shared across runs (git-ignored): the embedded model is converted once per machine.
MODEL_CACHE = REPO / ".cache" / "models"


@pytest.fixture(scope="session")
def embedded() -> LoadedModel:
    """The real embedded SmolLM2, loaded once per test session."""
    return load_model("embedded", device="cpu", dtype="auto", cache_dir=MODEL_CACHE)


@pytest.fixture(scope="session")
def tokenizer(embedded: LoadedModel) -> Any:
    return embedded.tokenizer


@pytest.fixture(scope="session")
def tiny_model(tokenizer: Any) -> Any:
    """A random two-layer Llama with SmolLM2's vocabulary: real code path, 0.2 s per answer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(
    tiny_model: Any, tokenizer: Any, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny model saved as a folder, for bot processes (`MODEL=<folder>`): they start fast."""
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_engine(tiny_model: Any, tokenizer: Any) -> TransformersEngine:
    return TransformersEngine(tiny_model, tokenizer, model_name="tiny-llama")


@pytest.fixture(scope="session")
def plain_tokenizer(tokenizer: Any) -> Any:
    """The same tokenizer without a chat template, like a plain base model (gpt2)."""
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    return plain


@dataclass
class World:
    """A connected bot on the emulator, with real services and one server to play in."""

    emu: Emulator
    bot: LLMOSBot
    services: Services
    guild: Guild
    channel: Channel
    alice: User
    bob: User
    mod: User  # Manage Channels
    owner: User  # the server's owner: every permission


@contextlib.asynccontextmanager
async def open_world(
    engine: Engine,
    db_dir: Path,
    *,
    busy_timeout_ms: int = 5000,
    vision: Engine | None = None,
    **queue_options: Any,
) -> AsyncIterator[World]:
    """A bot with real services over `engine` (and `vision`, a vision lane), connected to a
    fresh emulator with one server."""
    emu = await Emulator().start()
    guild = emu.add_guild()
    channel = emu.add_channel(guild, "poetry")
    alice = emu.add_member(guild, "alice")
    bob = emu.add_member(guild, "bob")
    mod = emu.add_member(guild, "mod", permissions=PERM_MANAGE_CHANNELS)
    owner = emu.users[guild.owner_id]
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(emu.stop)
        stack.enter_context(emu.redirected())
        bot, services = await stack.enter_async_context(
            running_bot(
                emu,
                engine,
                db_dir,
                busy_timeout_ms=busy_timeout_ms,
                vision=vision,
                **queue_options,
            )
        )
        yield World(emu, bot, services, guild, channel, alice, bob, mod, owner)


@contextlib.asynccontextmanager
async def running_bot(
    emu: Emulator,
    engine: Engine,
    db_dir: Path,
    *,
    busy_timeout_ms: int = 5000,
    vision: Engine | None = None,
    **queue_options: Any,
) -> AsyncIterator[tuple[LLMOSBot, Services]]:
    """A bot with real services over `engine` and the database in `db_dir`, connected to the
    running emulator `emu` (which must redirect discord.py to itself); closed on exit, so the
    same folder can serve a restarted bot."""
    settings = load_settings(
        # No rate limit here: scenarios run fast; tests of the limits set their own. Answers
        # are kept short (the default is 200 tokens): these tests are about what the bot does
        # with an answer, and every token costs time on a CPU.
        {
            "DISCORD_TOKEN": emu.token,
            "SYNC_COMMANDS": "global",
            "USER_REQUESTS_PER_MINUTE": "0",
            "MAX_NEW_TOKENS": "64",
        },
        dotenv_path=None,
    )
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(
            Store.open(db_dir / "llmos.sqlite3", busy_timeout_ms=busy_timeout_ms)
        )
        queue = await stack.enter_async_context(GenerationQueue(engine, **queue_options))
        seeing = None
        if vision is not None:
            seeing = await stack.enter_async_context(GenerationQueue(vision, **queue_options))
        services = Services.build(settings, store, queue, seeing)
        bot = LLMOSBot(services)
        await bot.login(emu.token)
        runner = asyncio.create_task(bot.connect(reconnect=True))
        await asyncio.wait_for(bot.wait_until_ready(), 30)
        try:
            yield bot, services
        finally:
            await bot.close()
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner


@pytest_asyncio.fixture(scope="session")
async def world(
    embedded: LoadedModel, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    """One connected bot on the embedded model for the whole session (on_ready costs ~2 s)."""
    # Up to 16 rows at once (the bot's default is 8): these tests queue a task's candidates side
    # by side, several tasks at a time, and 16 rows decode about 1.25x faster than two batches
    # of 8 on a 2-core CPU; what is tested does not depend on the batch size.
    engine = BatchedEngine(
        embedded.model, embedded.tokenizer, model_name=embedded.name, max_batch=16
    )
    # A generous time limit: a slow CI machine must not fail a test about something else
    # (the limit itself is tested with a scripted engine).
    async with open_world(
        engine, tmp_path_factory.mktemp("db"), max_pending_per_user=2, timeout=300
    ) as world:
        yield world


async def told_privately(emu: Emulator, interaction: Interaction, timeout: float = 60) -> str:
    """What the bot said privately in a follow-up to `interaction` (a refusal after its public
    "thinking…" placeholder was taken away); asserts the placeholder is gone."""
    await emu.wait_for(lambda: interaction.followup_ids, timeout=timeout)
    said = emu.messages[interaction.followup_ids[0]]
    assert said.flags & 64, "expected a private answer"
    original = emu.original(interaction)
    assert original is None or original.deleted
    return said.content


def settled(message: Message) -> bool:
    """Done, one way or another: an answer, or something said plainly (judged after)."""
    return bool(message.embeds) or (
        bool(message.content) and not message.content.startswith(("⏳", "✍️"))
    )


def assert_numbered_list(shown: str, count: int) -> int:
    """What a brainstorm promises, whatever the model samples: ideas numbered 1..k with
    k <= count, and a plain note under a list that came out short. Returns k."""
    numbers = re.findall(r"^(\d+)\. \S", shown, flags=re.MULTILINE)
    have = len(numbers)
    assert 1 <= have <= count and numbers == [str(i) for i in range(1, have + 1)]
    assert have == count or f"*Only {have} of the {count} ideas came out distinct" in shown
    return have


def assert_poem_form(shown: str, form: str, word: str = "") -> str:
    """What a poem promises, whatever the model samples: it meets its form as a reader counts
    (lines, syllables within one, rhymes, initials), or a plain note under it says what it
    misses. Returns the poem without the note."""
    from bot.prompts import prosody

    poem, sep, note = shown.rpartition("\n\n*")
    if not sep:
        poem, note = shown, ""
    verdict = prosody.check(poem, form, word=word)
    assert poem.strip() and "<|im_" not in poem
    assert verdict.ok or note.startswith("Off the form: "), (verdict.misses, shown)
    if word:  # each line begins with its letter, by construction
        assert prosody.initials(poem.splitlines()) == word[: len(poem.splitlines())]
    return poem


def assert_grounded_critique(shown: str, text: str) -> None:
    """What a critique promises, whatever the model samples: every quoted line is a line of
    `text` word for word, each with a note of its own (none repeated), every quotation in
    the notes and praise is in `text`, and no stock remark stands in for the model."""
    from bot.prompts.critique import grounded

    lines = shown.splitlines()
    lines_of_text = {line.strip() for line in text.splitlines()}
    notes = []
    for i, line in enumerate(lines):
        if line.startswith("> "):
            assert line[2:].strip() in lines_of_text
            assert i + 1 < len(lines) and lines[i + 1].strip() and not lines[i + 1].startswith(">")
            notes.append(lines[i + 1].strip().lower())
    assert len(notes) == len(set(notes))
    assert all(grounded(line, text) for line in lines if not line.startswith("> "))
    assert "read this line aloud" not in shown.lower()
