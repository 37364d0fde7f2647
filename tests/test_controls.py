"""The controls under every output, over the emulator with the embedded model: buttons,
the remix modal, browsing, keep into a story, delete, votes and reasons, reactions, replies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bot.store import GenerationRecord
from emulator import Channel, Interaction, Message, User
from tests.conftest import World

pytestmark = pytest.mark.slow
WAIT = 180


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = WAIT) -> Any:
    """Poll an async check (a database read) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("the condition never held")
        await asyncio.sleep(0.05)


def shown_id(message: Message) -> int:
    """The generation the message shows, from its controls."""
    return int(message.component("llmos:regen:")["custom_id"].rsplit(":", 1)[1])


def finished(message: Message) -> bool:
    return bool(message.embeds) and "llmos:regen:" in "".join(message.custom_ids)


async def poem(world: World, user: User, topic: str, channel: Channel | None = None) -> Message:
    interaction = await world.emu.slash(
        user, channel or world.channel, "poem", topic=topic, form="haiku"
    )
    message = await world.emu.wait_final(interaction, finished, timeout=WAIT)
    await eventually(lambda: world.services.store.get_output_by_message(message.id))
    return message


async def next_version(world: World, message: Message, before: int) -> GenerationRecord:
    """Wait until `message` shows a version other than `before`; return that version."""
    await world.emu.wait_for(
        lambda: finished(message) and shown_id(message) != before and not message.content,
        timeout=WAIT,
    )
    record = await world.services.store.get_generation(shown_id(message))
    assert record is not None
    return record


async def press(world: World, user: User, message: Message, action: str) -> Interaction:
    return await world.emu.click(user, message, f"llmos:{action}:{shown_id(message)}")


def private_reply(world: World, interaction: Interaction) -> str:
    reply = world.emu.original(interaction)
    assert reply is not None and interaction.ephemeral, "expected a private answer"
    return reply.content


async def answered(world: World, interaction: Interaction) -> None:
    await world.emu.wait_for(lambda: interaction.callback_type is not None, timeout=10)


async def test_every_output_has_controls_and_regenerate_browses(world: World) -> None:
    emu, store = world.emu, world.services.store
    message = await poem(world, world.alice, "paper kites")
    first = shown_id(message)
    actions = [cid.split(":")[1] for cid in message.custom_ids]
    assert actions == [
        "regen",
        "prev",
        "pos",
        "next",
        "delete",
        "longer",
        "shorter",
        "remix",
        "keep",
        "up",
        "down",
    ]
    assert message.component("llmos:pos:")["label"] == "1/1"
    assert (
        message.component("llmos:prev:")["disabled"]
        and message.component("llmos:next:")["disabled"]
    )

    await press(world, world.bob, message, "regen")
    second = await next_version(world, message, first)
    assert (second.refines_id, second.refine_kind, second.user_id) == (
        first,
        "regenerate",
        world.bob.id,
    )
    assert message.component("llmos:pos:")["label"] == "2/2"
    assert message.embeds[0]["footer"]["text"].endswith(f"#{second.id} · 2/2")
    assert message.embeds[0]["title"] == "Haiku · paper kites"

    await press(world, world.alice, message, "prev")
    await emu.wait_for(lambda: shown_id(message) == first, timeout=10)
    assert message.embeds[0]["footer"]["text"].endswith(f"#{first} · 1/2")
    output = await store.get_output_by_message(message.id)
    assert output is not None and output.chosen_id == first  # shown last = chosen
    await press(world, world.alice, message, "next")
    await emu.wait_for(lambda: shown_id(message) == second.id, timeout=10)
    output = await store.get_output_by_message(message.id)
    assert output is not None and output.chosen_id == second.id
    assert emu.errors == []


async def test_shorter_longer_and_remix_modal(world: World) -> None:
    emu = world.emu
    message = await poem(world, world.alice, "a harbour at dawn")
    first = await world.services.store.get_generation(shown_id(message))
    assert first is not None

    await press(world, world.alice, message, "shorter")
    shorter = await next_version(world, message, first.id)
    assert (shorter.refine_kind, shorter.refines_id) == ("shorter", first.id)
    assert 0 < len(shorter.output) < len(first.output)
    assert message.embeds[0]["title"] == "Haiku · a harbour at dawn · shorter"

    await press(world, world.bob, message, "longer")
    longer = await next_version(world, message, shorter.id)
    assert (longer.refine_kind, longer.refines_id) == ("longer", shorter.id)
    assert message.embeds[0]["title"] == "Haiku · a harbour at dawn · longer"  # not stacked

    shown = await press(world, world.bob, message, "remix")
    await answered(world, shown)
    assert shown.modal is not None and shown.modal["custom_id"].startswith("llmos:remix-modal:")
    await emu.submit_modal(world.bob, shown, instruction="from the gull's view")
    remix = await next_version(world, message, longer.id)
    assert (remix.refine_kind, remix.refines_id) == ("remix", longer.id)
    assert remix.prompt["inputs"]["instruction"] == "from the gull's view"
    assert message.component("llmos:pos:")["label"] == "4/4"
    assert emu.errors == []


async def test_replying_to_an_output_refines_it_in_place(world: World) -> None:
    emu = world.emu
    message = await poem(world, world.alice, "old boots")
    before = shown_id(message)
    bot_messages = len([m for m in emu.channel_messages(world.channel.id) if m.author.bot])
    await emu.say(world.bob, world.channel, "make it about winter", reply_to=message)
    remix = await next_version(world, message, before)
    assert (remix.refine_kind, remix.refines_id) == ("remix", before)
    assert remix.prompt["inputs"]["instruction"] == "make it about winter"
    after = len([m for m in emu.channel_messages(world.channel.id) if m.author.bot])
    assert after == bot_messages  # edited in place; nobody else answered the reply
    assert emu.errors == []


async def test_votes_by_button_and_reaction_with_a_reason(world: World) -> None:
    emu, feedback = world.emu, world.services.feedback
    message = await poem(world, world.alice, "a cat on a fence")
    output = await world.services.store.get_output_by_message(message.id)
    assert output is not None

    async def votes() -> dict[int, int]:
        return await feedback.votes(output.id)

    up = await press(world, world.alice, message, "up")
    await answered(world, up)
    assert "👍" in private_reply(world, up) and await votes() == {world.alice.id: 1}
    down = await press(world, world.alice, message, "down")  # changes the vote, asks why
    await answered(world, down)
    assert down.modal is not None and await votes() == {world.alice.id: -1}
    thanks = await emu.submit_modal(world.alice, down, reason="not a haiku")
    await answered(world, thanks)
    assert private_reply(world, thanks) == "Thanks, that helps."
    reasons = [f for f in await feedback.feedback_of(shown_id(message)) if f["kind"] == "reason"]
    assert reasons == [{"user_id": world.alice.id, "kind": "reason", "value": "not a haiku"}]
    again = await press(world, world.alice, message, "down")  # pressing again takes it back
    await answered(world, again)
    assert private_reply(world, again) == "Vote removed." and await votes() == {}

    await emu.react(world.bob, message, "👍")
    await eventually(lambda: _equals(votes, {world.bob.id: 1}))
    await emu.react(world.bob, message, "👎")
    await eventually(lambda: _equals(votes, {world.bob.id: -1}))
    await emu.unreact(world.bob, message, "👍")  # an old reaction: the vote stays 👎
    await asyncio.sleep(0.3)
    assert await votes() == {world.bob.id: -1}
    await emu.unreact(world.bob, message, "👎")
    await eventually(lambda: _equals(votes, {}))
    assert message.reactions.get("👍") == set()  # the bot added no reactions of its own
    assert emu.errors == []


async def _equals(read: Callable[[], Awaitable[Any]], expected: Any) -> bool:
    return bool(await read() == expected)


async def test_reactions_refine_and_keep(world: World) -> None:
    emu, store = world.emu, world.services.store
    message = await poem(world, world.alice, "a river stone")
    first = shown_id(message)
    await emu.react(world.bob, message, "➖")
    shorter = await next_version(world, message, first)
    assert (shorter.refine_kind, shorter.user_id) == ("shorter", world.bob.id)
    await emu.react(world.alice, message, "➕")
    longer = await next_version(world, message, shorter.id)
    assert (longer.refine_kind, longer.refines_id) == ("longer", shorter.id)
    await press(world, world.alice, message, "prev")
    await emu.wait_for(lambda: shown_id(message) == shorter.id, timeout=10)
    await emu.react(world.bob, message, "✅")

    async def kept() -> bool:
        rows = await store.fetchall(
            "SELECT generation_id FROM feedback WHERE kind = 'keep' AND user_id = ?",
            (world.bob.id,),
        )
        return shorter.id in [r[0] for r in rows]

    await eventually(kept)
    output = await store.get_output_by_message(message.id)
    assert output is not None and output.chosen_id == shorter.id
    assert emu.errors == []


async def test_keep_commits_an_alternative_to_the_story(world: World) -> None:
    emu, stories = world.emu, world.services.stories
    channel = await emu.open_channel(world.guild, "keep-story")
    await emu.slash(world.alice, channel, "story start", premise="A lighthouse keeper finds a map")
    await eventually(lambda: stories.active(channel.id), timeout=10)
    interaction = await emu.slash(world.alice, channel, "story continue")
    message = await emu.wait_final(interaction, finished, timeout=WAIT)
    first = shown_id(message)

    async def segment() -> Any:
        story = await stories.active(channel.id)
        parts = await stories.segments(story.id) if story else []
        return parts[-1] if parts and parts[-1].source == "bot" else None

    part = await eventually(segment)
    assert part.generation_id == first
    await press(world, world.bob, message, "regen")
    second = await next_version(world, message, first)
    assert (await segment()).generation_id == first  # a new version is not kept by itself
    keep = await press(world, world.bob, message, "keep")
    await answered(world, keep)
    assert private_reply(world, keep) == "✅ Kept."
    part = await segment()
    assert (part.generation_id, part.text) == (second.id, second.output)
    await press(world, world.bob, message, "prev")
    await emu.wait_for(lambda: shown_id(message) == first, timeout=10)
    await press(world, world.bob, message, "keep")
    await eventually(lambda: _equals(lambda: _generation_of(segment), first))
    assert emu.errors == []


async def _generation_of(segment: Callable[[], Awaitable[Any]]) -> int | None:
    part = await segment()
    return part.generation_id if part else None


async def test_delete_is_for_the_requester_or_a_moderator(world: World) -> None:
    emu, store = world.emu, world.services.store
    message = await poem(world, world.alice, "a broken kite")
    output = await store.get_output_by_message(message.id)
    assert output is not None
    refused = await press(world, world.bob, message, "delete")
    await answered(world, refused)
    assert "Only whoever asked" in private_reply(world, refused) and not message.deleted
    done = await press(world, world.owner, message, "delete")  # a moderator
    await answered(world, done)
    await emu.wait_for(lambda: message.deleted, timeout=10)
    await eventually(lambda: _equals(lambda: store.get_output(output.id), None))
    assert await store.alternatives(output.id) == []
    assert emu.errors == []


async def test_the_bot_adds_reactions_only_where_asked(world: World) -> None:
    emu = world.emu
    channel = await emu.open_channel(world.guild, "with-reactions")
    await world.services.preferences.set(
        "channel", channel.id, "reactions", "on", guild_id=world.guild.id, user_id=world.mod.id
    )
    message = await poem(world, world.alice, "a quiet pond", channel)
    me = emu.bot_user.id
    await emu.wait_for(lambda: all(me in message.reactions.get(e, ()) for e in "🔁➕➖✅👍👎"))
    before = shown_id(message)
    await emu.react(world.bob, message, "🔁")  # people's reactions work beside the bot's
    await next_version(world, message, before)
    assert emu.errors == []
