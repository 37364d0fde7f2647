"""/feedback stats and export, and /privacy forget-me, over the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emulator import Interaction
from tests.conftest import World
from tests.test_controls import answered, eventually, next_version, poem, press, shown_id

pytestmark = pytest.mark.slow


def files_of(world: World, interaction: Interaction) -> dict[str, bytes]:
    reply = world.emu.original(interaction)
    assert reply is not None
    return {a["filename"]: world.emu.files[int(a["id"])] for a in reply.attachments}


async def test_stats_embed_with_a_chart(world: World) -> None:
    emu = world.emu
    message = await poem(world, world.alice, "fireflies")
    await press(world, world.bob, message, "up")
    stats = await emu.slash(world.alice, world.channel, "feedback stats", where="channel")
    await answered(world, stats)
    reply = emu.original(stats)
    assert reply is not None and not stats.ephemeral
    fields = {f["name"]: f["value"] for f in reply.embeds[0]["fields"]}
    assert "`poem`" in fields["Per command"] and "👍" in fields["Per command"]
    assert "`first`" in fields["Per refinement"]
    assert files_of(world, stats)["feedback.png"].startswith(b"\x89PNG")
    assert emu.errors == []


async def test_export_is_jsonl_that_datasets_loads(world: World, tmp_path: Path) -> None:
    emu = world.emu
    message = await poem(world, world.alice, "a lighthouse in fog")
    first = shown_id(message)
    await press(world, world.bob, message, "regen")
    second = await next_version(world, message, first)
    keep = await press(world, world.alice, message, "keep")
    await answered(world, keep)
    original = await world.services.store.get_generation(first)
    assert original is not None

    refused = await emu.slash(world.alice, world.channel, "feedback export")
    await answered(world, refused)
    assert refused.ephemeral and files_of(world, refused) == {}
    export = await emu.slash(world.owner, world.channel, "feedback export")
    await answered(world, export)
    assert export.ephemeral
    files = files_of(world, export)
    pairs = [json.loads(line) for line in files["preferences.jsonl"].decode().splitlines()]
    sft = [json.loads(line) for line in files["sft.jsonl"].decode().splitlines()]
    assert {
        "prompt": original.prompt["messages"],
        "chosen": [{"role": "assistant", "content": second.output}],
        "rejected": [{"role": "assistant", "content": original.output}],
    } in pairs
    assert original.prompt["messages"] + [{"role": "assistant", "content": second.output}] in [
        row["messages"] for row in sft
    ]

    import datasets

    for name, columns in (
        ("preferences.jsonl", ["prompt", "chosen", "rejected"]),
        ("sft.jsonl", ["messages"]),
    ):
        path = tmp_path / name
        path.write_bytes(files[name])
        loaded = datasets.load_dataset("json", data_files=str(path), split="train")
        assert loaded.column_names == columns
        assert loaded.num_rows == len(files[name].splitlines())
    assert emu.errors == []


async def test_forget_me_deletes_requests_and_votes(world: World) -> None:
    emu, store = world.emu, world.services.store
    carol = emu.add_member(world.guild, "carol")
    theirs = await poem(world, carol, "a paper boat")
    await press(world, world.bob, theirs, "up")
    others = await poem(world, world.alice, "a tin soldier")
    await press(world, carol, others, "down")
    channel = await emu.open_channel(world.guild, "forget-story")
    await emu.slash(carol, channel, "story start", premise="Two sisters open a bakery")
    await eventually(lambda: world.services.stories.active(channel.id), timeout=10)
    await emu.say(carol, channel, "The oven was older than both of them.")

    async def carol_rows() -> int:
        rows = await store.fetchall(
            "SELECT (SELECT COUNT(*) FROM generations WHERE user_id = ?)"
            " + (SELECT COUNT(*) FROM feedback WHERE user_id = ?)"
            " + (SELECT COUNT(*) FROM story_segments WHERE author_id = ?)",
            (carol.id, carol.id, carol.id),
        )
        return int(rows[0][0])

    await eventually(lambda: _at_least(carol_rows, 3))
    forget = await emu.slash(carol, world.channel, "privacy forget-me", story_parts="anonymise")
    await answered(world, forget)
    reply = emu.original(forget)
    assert forget.ephemeral and reply is not None and reply.content.startswith("Done.")
    assert "anonymised 1 story parts" in reply.content
    assert await carol_rows() == 0
    output = await store.get_output_by_message(theirs.id)
    assert output is None  # her request went, with bob's vote on it
    story = await world.services.stories.active(channel.id)
    assert story is not None
    parts = await world.services.stories.segments(story.id)
    assert [(p.author_id, p.text) for p in parts] == [
        (None, "The oven was older than both of them.")
    ]
    assert emu.errors == []


async def _at_least(read, n: int) -> bool:  # type: ignore[no-untyped-def]
    return bool(await read() >= n)
