"""Story worlds through Discord: lorebooks and characters in the prompts, imports and exports,
the author's note, branches in threads, votes that close (after a restart too), and the EPUB.

The engine here is scripted (it echoes its prompt): these tests are about what the program
puts in front of the model and what it does with the answer, not about the model's words.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from ebooklib import epub
from lxml import etree

from bot.lore.formats import read_lore_file
from bot.store import Store, Stories
from bot.store.votes import Votes
from emulator import Channel, Emulator, Interaction, Message
from emulator.state import PERM_MANAGE_CHANNELS
from tests.conftest import World, open_world, running_bot, told_privately
from tests.fakes import ScriptedEngine


@pytest_asyncio.fixture(scope="module")
async def lore_world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    engine = ScriptedEngine(delay=0, max_batch=8)
    async with open_world(engine, tmp_path_factory.mktemp("worlds"), timeout=30) as world:
        yield world


def option(name: str, value: Any) -> dict[str, Any]:
    """An option whose name is a Python keyword (`as`, `from`)."""
    return {name: value}


async def answer(world: World, interaction: Interaction, timeout: float = 60) -> Message:
    """The response to `interaction` (a message, public or private) once it is there."""
    return await world.emu.wait_for(lambda: world.emu.original(interaction), timeout=timeout)


async def said(world: World, interaction: Interaction) -> str:
    return (await answer(world, interaction)).content


async def followed(world: World, interaction: Interaction) -> str:
    """The first follow-up to a deferred `interaction`, once it is there."""
    await world.emu.wait_for(lambda: interaction.followup_ids, timeout=60)
    return world.emu.messages[interaction.followup_ids[0]].content


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    """Wait until `check()` holds (what the bot does in the background: keeping a message as a
    part, writing a vote's part); fails saying `what` never happened."""
    for _ in range(int(timeout / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} never happened")


async def parts_in(world: World, channel: Channel, count: int) -> None:
    """Wait until the channel's story has `count` parts (people's messages are kept as the
    bot hears them)."""

    async def enough() -> bool:
        story = await world.services.stories.active(channel.id)
        return story is not None and len(await world.services.stories.segments(story.id)) >= count

    await until(enough, f"{count} parts in the story")


async def written(world: World, interaction: Interaction) -> Message:
    return await world.emu.wait_final(interaction, lambda m: bool(m.embeds), timeout=60)


async def story_in(world: World, name: str, premise: str) -> Channel:
    channel = await world.emu.open_channel(world.guild, name)
    await answer(world, await world.emu.slash(world.alice, channel, "story start", premise=premise))
    return channel


async def last_inputs(world: World, channel: Channel) -> tuple[dict[str, Any], str]:
    """The inputs and the rendered user message of the channel's latest generation."""
    record = await world.services.store.last_generation(channel.id)
    assert record is not None
    return record.prompt["inputs"], record.prompt["messages"][-1]["content"]


async def test_lore_and_characters_reach_the_prompts_and_why_says_so(lore_world: World) -> None:
    world, emu = lore_world, lore_world.emu
    channel = await story_in(world, "lore-room", "A cartographer maps a drowned city")
    added = await said(
        world,
        await emu.slash(
            world.alice,
            channel,
            "lore add",
            name="Mira",
            keys="Mira, the cartographer",
            text="Mira Vance has grey eyes and a scar on her left hand.",
        ),
    )
    assert "Added the entry **Mira**" in added and "the lorebook of" in added
    await said(
        world,
        await emu.slash(
            world.bob,
            channel,
            "lore add",
            name="Oskell",
            text="Oskell sank in one night.",
        ),
    )
    await said(
        world,
        await emu.slash(
            world.alice,
            channel,
            "lore add",
            name="Tides",
            text="The tide turns every hour.",
            always=True,
        ),
    )
    dup = await said(world, await emu.slash(world.bob, channel, "lore add", name="mira", text="x"))
    assert "already an entry" in dup
    bad = await said(
        world,
        await emu.slash(
            world.bob,
            channel,
            "lore add",
            name="Bad",
            text="x",
            keys="(oops",
            regex=True,
        ),
    )
    assert "not a valid regex" in bad
    character = await said(
        world,
        await emu.slash(
            world.bob,
            channel,
            "character add",
            name="Ash Crow",
            description="A ferryman.",
            voice="gruff, few words",
        ),
    )
    assert "Added the character **Ash Crow**" in character

    await emu.say(world.alice, channel, "Mira unrolled the chart by lamplight.")
    await parts_in(world, channel, 1)
    await written(world, await emu.slash(world.bob, channel, "story continue", length="short"))
    inputs, asked = await last_inputs(world, channel)
    assert inputs["lore"] == ["Mira", "Tides"]  # keys found, priority order; Oskell not named
    assert "- Mira: Mira Vance has grey eyes" in asked and "Oskell" not in asked
    why = await said(world, await emu.slash(world.bob, channel, "lore why"))
    assert "**Mira**" in why and "**Tides**" in why

    # a character speaks; an unknown one is refused before anything is written
    await written(
        world, await emu.slash(world.alice, channel, "story continue", **option("as", "ash crow"))
    )
    inputs, asked = await last_inputs(world, channel)
    assert inputs["as"] == "ash crow" and inputs["lore"][0] == "Ash Crow"
    assert "from Ash Crow's point of view, in their voice (gruff, few words)" in asked
    nobody = await said(
        world, await emu.slash(world.alice, channel, "story continue", **option("as", "Zed"))
    )
    assert "no character called “Zed”" in nobody

    # the author's note sits after the story, before the request
    noted = await said(
        world, await emu.slash(world.alice, channel, "story note", text="Present tense, slow.")
    )
    assert "Author's note set" in noted
    await written(
        world, await emu.slash(world.alice, channel, "story continue", direction="Oskell rises")
    )
    inputs, asked = await last_inputs(world, channel)
    assert "Oskell" in inputs["lore"]  # named in the direction
    assert asked.index("</story>") < asked.index("[Author's note: Present tense, slow.]")
    assert asked.index("[Author's note") < asked.index("Write the next part")

    # brainstorm and scenes in the story's channel use its lorebook too
    await written(world, await emu.slash(world.alice, channel, "brainstorm", topic="Mira's secret"))
    inputs, asked = await last_inputs(world, channel)
    assert "Mira" in inputs["lore"] and "grey eyes" in asked
    await written(
        world,
        await emu.slash(
            world.alice,
            channel,
            "scene",
            setting="the ferry",
            characters="Ash Crow, Mira",
        ),
    )
    inputs, asked = await last_inputs(world, channel)
    assert {"Ash Crow", "Mira"} <= set(inputs["lore"])

    # list, show, edit, remove (whoever added it, or a moderator)
    listed = await said(world, await emu.slash(world.bob, channel, "lore list"))
    assert listed.count("\n") >= 4 and "🎭 **Ash Crow**" in listed
    shown = await said(world, await emu.slash(world.bob, channel, "lore show", name="ash crow"))
    assert "*Voice:* gruff, few words" in shown
    edited = await said(
        world,
        await emu.slash(
            world.bob,
            channel,
            "lore edit",
            name="Oskell",
            text="Oskell sank in a single night.",
            priority=900,
        ),
    )
    assert "Updated **Oskell**" in edited
    not_hers = await said(
        world, await emu.slash(world.alice, channel, "lore edit", name="Oskell", enabled=False)
    )
    assert "Only whoever added this entry or a moderator can change it." in not_hers
    refused = await said(world, await emu.slash(world.bob, channel, "lore remove", name="Mira"))
    assert "Only whoever added" in refused
    removed = await said(world, await emu.slash(world.alice, channel, "lore remove", name="Mira"))
    assert "Removed **Mira**" in removed
    story = await world.services.stories.active(channel.id)
    assert story is not None
    names = [e.name for e in await world.services.lore.entries("story", story.id)]
    assert names == ["Oskell", "Ash Crow", "Tides"]


async def test_a_channel_without_a_story_has_its_own_lorebook(lore_world: World) -> None:
    world, emu = lore_world, lore_world.emu
    channel = await emu.open_channel(world.guild, "brainstorms")
    await said(
        world,
        await emu.slash(
            world.alice,
            channel,
            "lore add",
            name="Quill",
            text="Quill is the guild's cat.",
        ),
    )
    await written(world, await emu.slash(world.alice, channel, "brainstorm", topic="quill's day"))
    inputs, asked = await last_inputs(world, channel)
    assert inputs["lore"] == ["Quill"] and "Quill is the guild's cat." in asked
    listed = await said(world, await emu.slash(world.alice, channel, "lore list"))
    assert "This channel's lorebook" in listed


SILLY = {
    "entries": {
        "0": {
            "uid": 0,
            "key": ["Bram"],
            "keysecondary": [],
            "comment": "Bram",
            "content": "Bram keeps bees.",
            "constant": False,
            "order": 100,
            "disable": False,
        },
        "1": {
            "uid": 1,
            "key": ["hive"],
            "keysecondary": [],
            "comment": "The Hive",
            "content": "The hive hums in winter.",
            "constant": True,
            "order": 200,
            "disable": False,
        },
    }
}


async def test_import_and_export_in_the_formats_people_have(lore_world: World) -> None:
    world, emu = lore_world, lore_world.emu
    channel = await story_in(world, "imports", "Bees in the old orchard")
    data = json.dumps(SILLY).encode()
    done = await emu.slash(world.alice, channel, "lore import", files={"file": ("w.json", data)})
    await emu.wait_for(lambda: done.followup_ids, timeout=30)
    told = emu.messages[done.followup_ids[0]].content
    assert "Imported 2 entries from sillytavern" in told

    # a broken file: refused with its reason, nothing kept
    broken = json.dumps({"entries": {"0": {"key": ["x"], "content": 5}}}).encode()
    bad = await emu.slash(world.alice, channel, "lore import", files={"file": ("b.json", broken)})
    reason = await told_privately(emu, bad)
    assert reason.startswith("I can't import that file:")
    # a clash with an existing name: nothing imported unless a moderator replaces
    again = await emu.slash(world.alice, channel, "lore import", files={"file": ("w.json", data)})
    assert "Nothing imported" in await told_privately(emu, again)
    story = await world.services.stories.active(channel.id)
    assert story is not None
    assert await world.services.lore.count("story", story.id) == 2

    exported = await answer(world, await emu.slash(world.bob, channel, "lore export"))
    file = exported.attachments[0]
    assert file["filename"] == "lorebook.json"
    back = read_lore_file("lorebook.json", emu.files[int(file["id"])])
    assert [(e.name, e.text, e.always) for e in back.entries] == [
        ("The Hive", "The hive hums in winter.", True),
        ("Bram", "Bram keeps bees.", False),
    ]


async def test_a_branch_in_a_thread_shares_the_parts_and_exports_as_an_epub(
    lore_world: World, tmp_path: Path
) -> None:
    world, emu = lore_world, lore_world.emu
    channel = await story_in(world, "branches", "Two sisters inherit a lighthouse")
    await said(
        world,
        await emu.slash(
            world.alice,
            channel,
            "lore add",
            name="Lamp",
            text="The lamp never goes out.",
        ),
    )
    for text in ("Nell climbed the stairs.", "Ada found a *letter*.", "They burned it."):
        await emu.say(world.alice, channel, text)
    await parts_in(world, channel, 3)
    shown = await said(world, await emu.slash(world.bob, channel, "story show"))
    assert "`2` Ada found a *letter*." in shown
    too_far = await said(
        world, await emu.slash(world.bob, channel, "story branch", **option("from", 9))
    )
    assert "from 1 to 3" in too_far
    branched = await followed(
        world, await emu.slash(world.bob, channel, "story branch", **option("from", 2))
    )
    assert "sharing parts 1 to 2" in branched
    thread = next(c for c in emu.channels.values() if c.parent_id == channel.id)
    await emu.say(world.bob, thread, "Ada kept the letter instead.")
    await emu.say(world.alice, channel, "The original goes on.")
    await parts_in(world, thread, 3)
    await parts_in(world, channel, 4)
    in_thread = await said(world, await emu.slash(world.bob, thread, "story show"))
    assert "Nell climbed" in in_thread and "kept the letter" in in_thread
    assert "They burned it" not in in_thread and "original goes on" not in in_thread
    # the branch keeps a copy of the lorebook, to go its own way
    branch = await world.services.stories.active(thread.id)
    assert branch is not None
    assert [e.name for e in await world.services.lore.entries("story", branch.id)] == ["Lamp"]

    done = await emu.slash(world.bob, thread, "story export", format="epub", lore=True)
    await emu.wait_for(lambda: done.followup_ids, timeout=60)
    sent = emu.messages[done.followup_ids[0]]
    assert sent.attachments[0]["filename"] == "story.epub"
    book_path = tmp_path / "branch.epub"
    book_path.write_bytes(emu.files[int(sent.attachments[0]["id"])])
    book = epub.read_epub(str(book_path))
    texts = []
    for item in book.get_items():
        if item.media_type == "application/xhtml+xml":
            root = etree.fromstring(item.content)  # strict XML: it must parse
            texts.append(" ".join(root.itertext()))
    whole = " ".join(texts)
    for part in ("Nell climbed the stairs.", "Ada kept the letter instead.", "The lamp never"):
        assert part in whole
    assert "They burned it" not in whole and "alternate branch" in whole
    assert "alice" in whole and "bob" in whole  # credited by display name


async def test_a_vote_decides_the_next_part_even_across_a_restart(tmp_path: Path) -> None:
    engine = ScriptedEngine(delay=0, max_batch=8)
    emu = await Emulator().start()
    guild = emu.add_guild()
    channel = emu.add_channel(guild, "tales")
    alice, bob = emu.add_member(guild, "alice"), emu.add_member(guild, "bob")
    mod = emu.add_member(guild, "mod", permissions=PERM_MANAGE_CHANNELS)
    options = ["The ship sinks", "A whale speaks", "The map burns"]
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(emu.stop)
        stack.enter_context(emu.redirected())
        async with running_bot(emu, engine, tmp_path, timeout=30):
            start = await emu.slash(alice, channel, "story start", premise="A map of the sea")
            await emu.wait_for(lambda: emu.original(start))
            await emu.say(alice, channel, "The crew set sail at dawn.")
            vote = await emu.slash(
                alice,
                channel,
                "story vote",
                first=options[0],
                second=options[1],
                third=options[2],
                minutes=5,
            )
            await emu.wait_for(lambda: vote.followup_ids, timeout=30)
            posted = emu.messages[vote.followup_ids[0]]
            assert "Where should the story go next?" in posted.content
            ids = [c["custom_id"] for row in posted.components for c in row["components"]]
            assert len(ids) == 3
            for user, choice in ((alice, 1), (bob, 0), (bob, 1), (mod, 2)):  # bob changes
                pressed = await emu.click(user, posted, ids[choice])
                ack = await emu.wait_for(partial(emu.original, pressed))
                assert f"You voted for direction {choice + 1}" in ack.content
            second = await emu.slash(bob, channel, "story vote", first="x", second="y")
            assert "already open" in (await emu.wait_for(lambda: emu.original(second))).content

            # directions proposed by the model: this engine echoes its prompt, whose first
            # sentence is the story's title, so every draft gives the same one direction
            whale = emu.add_channel(guild, "whale")
            start = await emu.slash(alice, whale, "story start", premise="The crew finds a whale.")
            await emu.wait_for(lambda: emu.original(start))
            alone = await emu.slash(alice, whale, "story vote")
            refused = await told_privately(emu, alone)
            assert "couldn't come up with directions" in refused
            mixed = await emu.slash(alice, whale, "story vote", first="Turn back")
            await emu.wait_for(lambda: mixed.followup_ids, timeout=30)
            shown = emu.messages[mixed.followup_ids[0]].content
            assert "**1.** Turn back\n**2.** The crew finds a whale." in shown
            assert "Direction 2 is mine." in shown
        # the bot is down; the vote's time passes meanwhile; and another vote had closed just
        # before a crash, its winner's part never asked for
        async with Store.open(tmp_path / "llmos.sqlite3") as store:
            past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat(timespec="milliseconds")
            async with store.transaction() as db:
                await db.execute(
                    "UPDATE story_votes SET closes_at = ? WHERE channel_id = ?", (past, channel.id)
                )
            crashed = await Votes(store).open_for(
                (await Stories(store).active(whale.id)).id  # type: ignore[union-attr]
            )
            assert crashed is not None
            await Votes(store).ballot(crashed.id, bob.id, 1)
            assert (await Votes(store).close(crashed.id)) is not None
        async with running_bot(emu, engine, tmp_path, timeout=30) as (_bot, services):

            def tally() -> Message | None:
                return next(
                    (
                        m
                        for m in emu.channel_messages(channel.id)
                        if m.content.startswith("🗳️ **The vote is closed.**") and m.id != posted.id
                    ),
                    None,
                )

            closed = await emu.wait_for(tally, timeout=30)
            assert "A whale speaks — 2 votes ✅" in closed.content
            assert "The ship sinks — 0 votes" in closed.content
            assert "The map burns — 1 vote\n" in closed.content
            edited = emu.messages[posted.id]
            assert edited.content == closed.content
            assert all(c.get("disabled") for row in edited.components for c in row["components"])
            story = await services.stories.active(channel.id)
            assert story is not None

            async def part() -> bool:
                parts = await services.stories.segments(story.id)
                return parts[-1].source == "bot"

            await until(part, "the winner's part")
            record = await services.store.last_generation(channel.id)
            assert record is not None
            assert record.prompt["inputs"]["direction"] == "A whale speaks"
            assert (await services.stories.segments(story.id))[-1].source == "bot"
            # once closed, never again: a new vote may open
            assert await services.votes.open_for(story.id) is None

            # the vote closed before the crash is acted on at start, once
            async def acted() -> bool:
                record = await services.store.last_generation(whale.id)
                return record is not None and await services.votes.unacted() == []

            await until(acted, "acting on the vote closed before the crash")
            record = await services.store.last_generation(whale.id)
            assert record is not None
            assert record.prompt["inputs"]["direction"] == "The crew finds a whale."
            assert await services.votes.unacted() == []
