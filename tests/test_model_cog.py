"""`/model status`, `promote` and `rollback` over the emulator: a real adapter, trained once for
the module on the tiny model, served by the real batched engine behind the real queue.

What is asserted is what the program promises: a promotion takes effect for requests made after
it, a task in flight finishes with the adapter it started with, no engine call mixes adapters
(checked against the LoRA layers active while the model writes), refused adapters change
nothing, and every refusal is a short private message.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio

from bot.generation.base import EngineJob
from bot.generation.batched import BatchedEngine
from bot.generation.loader import load_model
from bot.generation.types import GenerationRequest
from bot.learning.train import Hyper, train
from bot.store import Store
from bot.store.models import EVERY_SERVER, AdapterRecord, Kind, NothingToRollBack
from emulator import Interaction, Message, User
from emulator.state import PERM_MANAGE_GUILD
from tests.conftest import MODEL_CACHE, World, open_world, settled, told_privately
from tests.fakes import ScriptedEngine
from tests.learning_fixtures import seed_preferences, settings_for

pytestmark = pytest.mark.slow
WAIT = 120


@dataclass(frozen=True)
class Made:
    """The adapters the tests promote: one trained for real, a copy of it under another id
    (loaded for the first time while requests are in flight), and three that must be refused."""

    good: AdapterRecord
    fresh: AdapterRecord  # the same weights, in a folder of its own
    foreign: AdapterRecord  # made for another base model (another weights' hash)
    corrupt: AdapterRecord  # its weights file is garbage
    theirs: AdapterRecord  # trained on another server's feedback

    def all(self) -> list[AdapterRecord]:
        return [self.good, self.fresh, self.foreign, self.corrupt, self.theirs]


@pytest_asyncio.fixture(scope="module")
async def made(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Made:
    root = tmp_path_factory.mktemp("model-cog")
    settings = settings_for(tiny_model_dir, root)
    async with Store.open(settings.database_path) as store:
        await seed_preferences(store, 77, 12)
        done = await train(
            settings,
            store,
            None,  # every server's feedback: usable on any server
            hyper=Hyper(max_steps=2, learning_rate=1e-3),
            poems=0,
            reward=False,
            say=lambda _: None,
        )
    good = done.generator
    fresh_dir, foreign_dir, corrupt_dir = root / "fresh", root / "foreign", root / "corrupt"
    shutil.copytree(good.path, fresh_dir)
    shutil.copytree(good.path, foreign_dir)
    shutil.copytree(good.path, corrupt_dir)
    (corrupt_dir / "adapter_model.safetensors").write_bytes(b"\x00garbage, not safetensors")
    return Made(
        good=good,
        fresh=replace(good, id="fresh-copy", path=str(fresh_dir)),
        foreign=replace(good, id="foreign-base", base_hash="0" * 64, path=str(foreign_dir)),
        corrupt=replace(good, id="corrupt-weights", path=str(corrupt_dir)),
        theirs=replace(good, id="another-server", guild_id=123456789),
    )


@pytest_asyncio.fixture(scope="module")
async def tiny_world(
    tiny_model_dir: Path, made: Made, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    """A bot over the tiny model (its own copy: loading adapters changes the model in place),
    with the adapters registered in its database."""
    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32", cache_dir=MODEL_CACHE)
    engine = BatchedEngine(loaded.model, loaded.tokenizer, model_name=loaded.name)
    async with open_world(engine, tmp_path_factory.mktemp("model-world"), timeout=WAIT) as world:
        for record in made.all():
            # the ids of the training database's rows mean nothing in this one
            data = {**record.manifest["data"], "generation_ids": [], "feedback_ids": []}
            await world.services.models.register(
                replace(record, manifest={**record.manifest, "data": data})
            )
        yield world


def manager(world: World) -> User:
    """A member with Manage Server who is not the bot's owner."""
    for user in world.emu.users.values():
        if user.name == "admin":
            return user
    return world.emu.add_member(world.guild, "admin", permissions=PERM_MANAGE_GUILD)


async def reset(world: World) -> None:
    """Nothing promoted, on this server or every server."""
    kinds: tuple[Kind, ...] = ("generator", "reward")
    for scope in (world.guild.id, EVERY_SERVER):
        for kind in kinds:
            with contextlib.suppress(NothingToRollBack):
                while True:
                    await world.services.adapters.rollback(scope=scope, kind=kind)


async def answer(world: World, interaction: Interaction) -> Message:
    """The bot's private answer to an admin command: its response (once the "thinking…"
    placeholder is replaced), or the follow-up said after the placeholder went."""
    emu = world.emu

    def done() -> Message | None:
        if interaction.followup_ids:
            return emu.messages[interaction.followup_ids[0]]
        message = emu.original(interaction)
        if message is not None and not message.deleted and not message.flags & 128:
            return message
        return None

    message: Message = await emu.wait_for(done, timeout=WAIT)
    assert message.flags & 64, "expected a private answer"
    return message


async def refused_at_once(world: World, interaction: Interaction) -> str:
    """A refusal answered straight away (nothing deferred), privately."""
    await world.emu.wait_for(lambda: interaction.callback_type is not None, timeout=10)
    message = world.emu.original(interaction)
    assert interaction.ephemeral and interaction.callback_type == 4 and message is not None
    return message.content


def active_lora(model: Any) -> str | None:
    """The adapter the model's LoRA layers write with now (None: the base model)."""
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer):
            if module.disable_adapters:
                return None
            active = list(module.active_adapters)
            return str(active[0]) if len(active) == 1 else repr(active)
    return None


# -- refusals that need no model -----------------------------------------------------------------


async def test_refusals_are_short_and_private(tmp_path: Path) -> None:
    async with open_world(ScriptedEngine(), tmp_path) as world:
        emu, guild, channel = world.emu, world.guild, world.channel
        admin = manager(world)
        # nothing trained yet: how to train, not an error
        status = await emu.slash(admin, channel, "model status")
        said = await refused_at_once(world, status)
        assert "No adapters" in said and "`make train`" in said
        assert f"`python -m bot train --server {guild.id}`" in said
        said = await refused_at_once(world, await emu.slash(admin, channel, "model rollback"))
        assert said.startswith("There is nothing to roll back") and "writer" in said
        rollback = await emu.slash(admin, channel, "model rollback", kind="reward")
        assert "no reward model has been promoted" in await refused_at_once(world, rollback)
        # every server: the bot's owner only
        owners_only: list[tuple[str, dict[str, Any]]] = [
            ("model promote", {"adapter": "anything", "everywhere": True}),
            ("model rollback", {"everywhere": True}),
        ]
        for command, options in owners_only:
            refused = await emu.slash(admin, channel, command, **options)
            assert (await refused_at_once(world, refused)).startswith("Only the bot's owner")
        # no Manage Server
        managers_only: list[tuple[str, dict[str, Any]]] = [
            ("model status", {}),
            ("model promote", {"adapter": "anything"}),
            ("model rollback", {}),
        ]
        for command, options in managers_only:
            refused = await emu.slash(world.alice, channel, command, **options)
            assert "Manage Server" in await refused_at_once(world, refused)
        # what is not an id is not echoed back; an unknown id is named
        junk = await emu.slash(admin, channel, "model promote", adapter="@everyone " + "x" * 5000)
        assert await refused_at_once(world, junk) == (
            "That is not an adapter id; `/model status` lists them."
        )
        unknown = await emu.slash(admin, channel, "model promote", adapter="all-2026-x")
        assert "There is no adapter `all-2026-x`" in await refused_at_once(world, unknown)
        # an engine that cannot serve adapters says so, and nothing is promoted
        record = AdapterRecord(
            "scripted-1", "generator", None, "m", "h" * 64, str(tmp_path), {}, False,
            "Not promotable: no held-out pairs.", "2026-01-01T00:00:00.000+00:00",
        )  # fmt: skip
        await world.services.models.register(record)
        promote = await emu.slash(
            world.owner, channel, "model promote", adapter="scripted-1", force=True, everywhere=True
        )
        said = await told_privately(emu, promote)
        assert said == (
            "I did not promote `scripted-1`: the ScriptedEngine cannot load adapters. "
            "Nothing changed."
        )
        assert await world.services.models.in_force() == {}
        # unpromotable without force: the verdict says why
        promote = await emu.slash(admin, channel, "model promote", adapter="scripted-1")
        said = await told_privately(emu, promote)
        assert "not promotable: no held-out pairs. Promote it with force" in said
        # an adapter without figures or losses (an old manifest) still has a status
        status = await emu.slash(admin, channel, "model status")
        shown = await answer(world, status)
        fields = {f["name"]: f["value"] for f in shown.embeds[0]["fields"]}
        assert fields["Writer"] == "the base model"
        assert "`scripted-1` generator ✗" in fields["Newest adapters"]
        assert emu.files[int(shown.attachments[0]["id"])].startswith(b"\x89PNG")
        assert emu.errors == []


# -- a real adapter on the tiny model ------------------------------------------------------------


async def test_refused_adapters_change_nothing(tiny_world: World, made: Made) -> None:
    """Run first on the fresh engine: a corrupt adapter is the first it ever tries to load."""
    emu, channel, adapters = tiny_world.emu, tiny_world.channel, tiny_world.services.adapters
    await reset(tiny_world)
    admin = manager(tiny_world)
    before = await tiny_world.services.models.in_force()
    for record, why in (
        (made.corrupt, "could not be loaded"),
        (made.foreign, "another base model"),
        (made.theirs, "trained on another server's feedback"),
    ):
        promote = await emu.slash(admin, channel, "model promote", adapter=record.id, force=True)
        said = await told_privately(emu, promote)
        assert said.startswith(f"I did not promote `{record.id}`: ") and why in said
        assert said.endswith("Nothing changed.") and len(said) < 600
        assert adapters.adapter_for(tiny_world.guild.id) is None
        assert await tiny_world.services.models.in_force() == before
    # the engine still serves: the good adapter loads after the corrupt one failed
    promote = await emu.slash(
        admin, channel, "model promote", adapter=made.good.id, force=not made.good.promotable
    )
    assert made.good.id in (await answer(tiny_world, promote)).content
    assert adapters.adapter_for(tiny_world.guild.id) == made.good.id
    assert emu.errors == []


async def test_promote_then_status_with_a_chart(tiny_world: World, made: Made) -> None:
    emu, channel, guild = tiny_world.emu, tiny_world.channel, tiny_world.guild
    services = tiny_world.services
    await reset(tiny_world)
    admin = manager(tiny_world)
    refused = await emu.slash(tiny_world.alice, channel, "model promote", adapter=made.good.id)
    assert "Manage Server" in await refused_at_once(tiny_world, refused)
    assert services.adapters.adapter_for(guild.id) is None

    promote = await emu.slash(
        admin, channel, "model promote", adapter=made.good.id, force=not made.good.promotable
    )
    said = (await answer(tiny_world, promote)).content
    assert said.startswith(f"Promoted `{made.good.id}` for this server")
    assert f"Now writing here: `{made.good.id}` (this server's own)." in said
    assert services.adapters.adapter_for(guild.id) == made.good.id
    assert services.adapters.adapter_for(guild.id + 1) is None  # another server: the base

    # an adapter trained on someone's data, who then asked to be forgotten, is flagged
    dana = emu.add_member(guild, "dana")
    poem = await emu.slash(dana, channel, "poem", topic="a quiet pier", form="haiku")
    assert (await emu.wait_final(poem, settled, timeout=WAIT)).embeds
    rows = await services.store.fetchall("SELECT id FROM generations WHERE user_id = ?", (dana.id,))
    data = {**made.good.manifest["data"], "generation_ids": [r["id"] for r in rows]}
    flagged = replace(
        made.good,
        id="trained-on-dana",
        manifest={**made.good.manifest, "data": data},
        created_at="2000-01-01T00:00:00.000+00:00",
    )
    await services.models.register(flagged)
    forget = await emu.slash(dana, channel, "privacy forget-me", story_parts="anonymise")
    await emu.wait_for(lambda: forget.callback_type is not None, timeout=WAIT)

    status = await emu.slash(admin, channel, "model status")
    shown = await answer(tiny_world, status)
    embed = shown.embeds[0]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    writer = fields["Writer"].splitlines()
    assert writer[0] == f"`{made.good.id}` (this server's own)"
    assert writer[1].startswith("prefers the chosen answer on ") and writer[2] == made.good.verdict
    assert fields["Reward model"] == "no reward model (drafts are not reranked)"
    listed = fields["Newest adapters"].splitlines()
    mark = "✓" if made.good.promotable else "✗"
    assert any(
        line.startswith(f"`{made.good.id}` generator {mark} ") and line.endswith("· serving")
        for line in listed
    )
    assert [line for line in listed if "⚠" in line] == [
        next(line for line in listed if line.startswith("`trained-on-dana`"))
    ]
    assert not any("another-server" in line for line in listed)  # not usable here
    assert embed["image"]["url"] == "attachment://losses.png"
    [attachment] = shown.attachments
    assert attachment["filename"] == "losses.png"
    assert emu.files[int(attachment["id"])].startswith(b"\x89PNG")

    # the adapter option offers what may serve here, newest first, as typed
    cog: Any = tiny_world.bot.get_cog("Model")  # the extension's own import of cogs.model
    assert cog is not None
    allowed = SimpleNamespace(manage_guild=True)
    asking: Any = SimpleNamespace(guild_id=guild.id, permissions=allowed)
    offered = [c.value for c in await cog._adapter_choices(asking, "")]
    usable = {made.good.id, made.fresh.id, made.foreign.id, made.corrupt.id, "trained-on-dana"}
    assert set(offered) == usable and offered[-1] == "trained-on-dana"
    typed = [c.value for c in await cog._adapter_choices(asking, "CORRUPT")]
    assert typed == [made.corrupt.id]
    assert emu.errors == []


async def test_hot_swap_with_requests_in_flight(
    tiny_world: World, made: Made, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, channel, guild = tiny_world.emu, tiny_world.channel, tiny_world.guild
    services = tiny_world.services
    await reset(tiny_world)
    admin = manager(tiny_world)
    queue, engine = services.queue, services.queue.engine
    assert isinstance(engine, BatchedEngine)

    # every request as it is made: (its user, its adapter)
    made_requests: list[tuple[int, str | None]] = []
    submit = queue.submit

    def recording_submit(request: GenerationRequest, **options: Any) -> Any:
        made_requests.append((request.user_id, request.adapter))
        return submit(request, **options)

    # every decode: the adapters its jobs asked for, and the LoRA layers active as it ran;
    # the first one waits (in the worker thread, outside the engine's lock) for a promotion
    calls: list[dict[str, Any]] = []
    entered, release = threading.Event(), threading.Event()
    run, generate = engine._run, engine.model.generate

    def gated_run(jobs: Sequence[EngineJob]) -> Any:
        calls.append({"asked": {j.request.adapter for j in jobs}, "wrote": "not run"})
        entered.set()
        if not release.wait(WAIT):
            raise RuntimeError("the test never released the engine")
        return run(jobs)

    def watched_generate(*args: Any, **kwargs: Any) -> Any:
        calls[-1]["wrote"] = active_lora(engine.model)
        return generate(*args, **kwargs)

    monkeypatch.setattr(queue, "submit", recording_submit)
    monkeypatch.setattr(engine, "_run", gated_run)
    monkeypatch.setattr(engine.model, "generate", watched_generate)

    def users_seen() -> set[int]:
        return {user for user, _ in made_requests}

    async def poems(people: list[User]) -> list[Interaction]:
        started = [
            await emu.slash(p, channel, "poem", topic=f"lanterns {i}", form="haiku")
            for i, p in enumerate(people)
        ]
        await emu.wait_for(lambda: {p.id for p in people} <= users_seen(), timeout=WAIT)
        return started

    before = [emu.add_member(guild, f"before{i}") for i in range(3)]
    after = [emu.add_member(guild, f"after{i}") for i in range(3)]
    first = await poems(before)
    await emu.wait_for(entered.is_set, timeout=WAIT)  # a batch is in the engine, held
    fresh = made.fresh
    promote = await emu.slash(
        admin, channel, "model promote", adapter=fresh.id, force=not fresh.promotable
    )
    assert fresh.id in (await answer(tiny_world, promote)).content
    assert fresh.id in engine.adapters  # loaded meanwhile
    assert len(calls) == 1 and calls[0]["wrote"] == "not run"  # the batch is still held
    then = await poems(after)
    release.set()
    for interaction in first + then:
        message = await emu.wait_final(interaction, settled, timeout=WAIT)
        assert message.embeds, message.content  # answered, none lost

    adapters_of: dict[int, set[str | None]] = defaultdict(set)
    for user, adapter in made_requests:
        adapters_of[user].add(adapter)
    # a task keeps the adapter it started with, to its last line's last candidate
    assert {p.id: adapters_of[p.id] for p in before} == {p.id: {None} for p in before}
    assert {p.id: adapters_of[p.id] for p in after} == {p.id: {fresh.id} for p in after}
    # no decode mixed adapters, and each was written by the adapter its requests asked for
    assert all(len(c["asked"]) == 1 for c in calls)
    assert [c["wrote"] for c in calls] == [next(iter(c["asked"])) for c in calls]
    assert {c["wrote"] for c in calls} == {None, fresh.id}

    rollback = await emu.slash(admin, channel, "model rollback")
    said = (await answer(tiny_world, rollback)).content
    assert said == "Rolled back. Now writing here: the base model."
    assert services.adapters.adapter_for(guild.id) is None
    later = emu.add_member(guild, "later")
    calls.clear()
    [poem] = await poems([later])
    assert (await emu.wait_final(poem, settled, timeout=WAIT)).embeds
    assert adapters_of_user(made_requests, later.id) == {None}
    assert calls and all(c["asked"] == {None} and c["wrote"] is None for c in calls)
    assert emu.errors == []


def adapters_of_user(requests: list[tuple[int, str | None]], user_id: int) -> set[str | None]:
    return {adapter for user, adapter in requests if user == user_id}


# -- the whole loop -------------------------------------------------------------------------------


async def test_votes_given_on_discord_train_an_adapter_the_bot_then_serves(
    tiny_world: World, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """People vote and keep through the emulated Discord; `train` reads exactly those votes
    from the bot's database; `/model promote` puts the adapter to work at once."""
    emu, channel, guild = tiny_world.emu, tiny_world.channel, tiny_world.guild
    services = tiny_world.services
    await reset(tiny_world)
    alice, bob = tiny_world.alice, tiny_world.bob
    outputs = 5
    for i in range(outputs):
        poem = await emu.slash(alice, channel, "poem", topic=f"harbour light {i}", form="haiku")
        message = await emu.wait_final(poem, settled, timeout=WAIT)
        output = await _output_of(world=tiny_world, message_id=message.id)
        await emu.react(alice, message, "👎")  # the first version: not this one
        await _feedback(tiny_world, output, 1)
        shown = message.embeds[0]["footer"]["text"]
        await emu.react(bob, message, "🔁")

        def regenerated(m: Message = message, before: str = shown) -> bool:
            return bool(m.embeds) and m.embeds[0]["footer"]["text"] != before

        await emu.wait_for(regenerated, timeout=WAIT)
        await emu.react(bob, message, "👍")  # the second: this one, kept
        await emu.react(bob, message, "✅")
        await _feedback(tiny_world, output, 3)
    found = await services.feedback.examples(guild.id)
    # a pair per output whose two versions differ (two samples alike would make no pair)
    differ = await services.store.fetchall(
        "SELECT o.id FROM outputs o JOIN generations g ON g.output_id = o.id"
        " WHERE o.guild_id = ? GROUP BY o.id HAVING COUNT(DISTINCT TRIM(g.output)) = 2",
        (guild.id,),
    )
    assert len(found.pairs) == len(differ) and len(found.sft) == outputs
    settings = settings_for(tiny_model_dir, tmp_path)
    done = await train(
        settings,
        services.store,  # the running bot's own database
        guild.id,
        hyper=Hyper(max_steps=2, learning_rate=1e-3),
        poems=0,
        min_pairs=2,
        reward=False,
        say=lambda _: None,
    )
    used = set(done.generator.manifest["data"]["generation_ids"])
    voted = {i for e in found.pairs for i in e.generation_ids}
    assert used == voted
    promote = await emu.slash(
        tiny_world.owner,  # the server's owner: Manage Server
        channel,
        "model promote",
        adapter=done.generator.id,
        force=True,  # two steps on five pairs: its held-out figure is not the point here
    )
    said = (await answer(tiny_world, promote)).content
    assert f"`{done.generator.id}`" in said
    assert services.adapters.adapter_for(guild.id) == done.generator.id
    engine = services.queue.engine
    assert isinstance(engine, BatchedEngine) and done.generator.id in engine.adapters
    poem = await emu.slash(alice, channel, "poem", topic="after the vote", form="haiku")
    assert (await emu.wait_final(poem, settled, timeout=WAIT)).embeds
    assert emu.errors == []
    await reset(tiny_world)


async def _output_of(world: World, message_id: int) -> int:
    for _ in range(200):
        found = await world.services.store.get_output_by_message(message_id)
        if found is not None:
            return found.id
        await _pause()
    raise AssertionError("the output was never linked to its message")


async def _feedback(world: World, output_id: int, rows: int) -> None:
    """Wait until the output has `rows` feedback rows (votes and keeps are written async)."""
    for _ in range(400):
        found = await world.services.store.fetchall(
            "SELECT COUNT(*) AS n FROM feedback WHERE output_id = ?", (output_id,)
        )
        if found[0]["n"] >= rows:
            return
        await _pause()
    raise AssertionError(f"expected {rows} feedback rows on output {output_id}")


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.05)
