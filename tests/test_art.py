"""Art critique: measurements with known answers, hostile files, the grounding check, and the
whole flow through the emulator (attachments served by its attachment host) on the embedded
model."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bot.generation.base import EngineJob
from bot.generation.engine import TransformersEngine
from bot.generation.types import EngineOutput
from bot.generation.vision import load_vision_model
from bot.images.analyse import analyse
from bot.images.fetch import ImageGone
from bot.images.load import MAX_BYTES, ImageRefused, load_image
from bot.images.measure import ImageFacts, colour_name, measure
from bot.prompts import art
from bot.store import RequestRecord
from bot.writing.art import art_again
from bot.writing.journal import task_for
from bot.writing.tasks import build_task, snapshot
from emulator import Message
from tests.conftest import World, open_world, told_privately
from tests.test_controls import eventually, next_version, press, shown_id
from tests.test_routing import channel_in_mode
from tests.vision_fixtures import build_tiny_vlm


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def facts_of(image: Image.Image, fmt: str = "PNG") -> ImageFacts:
    return measure(load_image(encode(image, fmt)))


def two_colours() -> Image.Image:
    image = Image.new("RGB", (600, 400), "#1e40af")
    ImageDraw.Draw(image).rectangle([300, 0, 600, 400], fill="#f97316")
    return image


def on_a_thirds_point() -> Image.Image:
    image = Image.new("RGB", (900, 600), "#d9d9d9")
    ImageDraw.Draw(image).ellipse([560, 360, 640, 440], fill="#111111")
    return image


# -- measurements with known answers -----------------------------------------------------------


def test_a_two_colour_image() -> None:
    facts = facts_of(two_colours())
    assert [(s.hex, s.family) for s in facts.palette] == [
        ("#f97316", "orange"),
        ("#1e40af", "blue"),
    ] or [(s.hex, s.family) for s in facts.palette] == [("#1e40af", "blue"), ("#f97316", "orange")]
    assert [round(s.share, 2) for s in facts.palette] == [0.5, 0.5]
    assert facts.harmony == "complementary"  # blue against orange
    assert facts.symmetry_label == "asymmetric"  # the mirror image swaps the colours
    assert (facts.aspect, facts.orientation) == ("3:2", "landscape")
    assert facts.weight_place == "near the centre"  # the one edge runs down the middle


def test_a_subject_on_a_thirds_point() -> None:
    facts = facts_of(on_a_thirds_point())
    assert abs(facts.weight_x - 2 / 3) < 0.02 and abs(facts.weight_y - 2 / 3) < 0.02
    assert facts.weight_place == "near the lower-right thirds point"
    assert facts.symmetry_label == "asymmetric"
    assert facts.detail_label == "sparse"


def test_a_symmetric_image() -> None:
    image = Image.new("RGB", (600, 600), "#ffffff")
    draw = ImageDraw.Draw(image)
    draw.ellipse([200, 150, 400, 450], fill="#8b0000")
    draw.rectangle([50, 50, 120, 550], fill="#004400")
    draw.rectangle([480, 50, 550, 550], fill="#004400")
    facts = facts_of(image)
    assert facts.symmetry >= 0.95 and facts.symmetry_label == "symmetric"
    assert abs(facts.weight_x - 0.5) < 0.02
    assert (facts.aspect, facts.orientation) == ("1:1", "square")


def test_a_low_contrast_image() -> None:
    image = Image.new("RGB", (600, 400), "#808080")
    ImageDraw.Draw(image).rectangle([100, 100, 300, 300], fill="#8a8a8a")
    facts = facts_of(image)
    assert facts.contrast_label == "low" and facts.contrast < 0.05
    assert facts.key == "mid-key"
    assert facts.saturation_label == "muted" and facts.harmony == "neutral"
    assert facts.families == {"grey"}
    dark = facts_of(Image.new("RGB", (300, 200), "#101010"))
    assert dark.key == "low-key"


def test_colour_names() -> None:
    assert colour_name(1.0, 0.0, 0.0)[:2] == ("red", "red")
    assert colour_name(0.0, 0.0, 0.5)[:2] == ("dark blue", "blue")
    assert colour_name(0.5, 0.5, 0.5)[:2] == ("grey", "grey")
    assert colour_name(0.45, 0.25, 0.1)[1] == "brown"


def test_a_large_photo_is_measured_in_well_under_a_second() -> None:
    ys, xs = np.mgrid[0:3000, 0:4000]
    pixels = np.stack([xs / 4000 * 255, ys / 3000 * 255, (np.sin(xs / 50) + 1) * 120], -1)
    photo = encode(Image.fromarray(pixels.astype(np.uint8)), "JPEG", quality=90)
    analyse(photo)  # warm
    started = time.perf_counter()
    found = analyse(photo)
    seconds = time.perf_counter() - started
    print(f"\n4000x3000 JPEG: read, measured and drawn in {seconds:.2f} s")
    assert (found.facts.width, found.facts.height) == (4000, 3000)
    Image.open(io.BytesIO(found.picture)).verify()  # the picture is a real PNG


# -- hostile files -----------------------------------------------------------------------------


def refused(data: bytes) -> str:
    with pytest.raises(ImageRefused) as caught:
        load_image(data)
    return str(caught.value)


def test_hostile_files_are_refused_with_the_reason() -> None:
    assert "empty" in refused(b"")
    assert "can't read that file" in refused(b"just some words, named sketch.png\n")
    assert "can't read that file" in refused(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    whole = encode(two_colours())
    assert "damaged or cut short" in refused(whole[: len(whole) // 2])
    # a decompression bomb: 400 megapixels that compress to a few kilobytes
    bomb = encode(Image.new("1", (20_000, 20_000)))
    assert len(bomb) < 200_000
    assert "megapixels" in refused(bomb)
    assert "too long and thin" in refused(encode(Image.new("RGB", (2600, 10), "red")))
    assert "fully transparent" in refused(encode(Image.new("RGBA", (50, 50), (0, 0, 0, 0))))
    assert "MB" in refused(b"\x00" * (MAX_BYTES + 1))


def test_odd_but_honest_images_are_read() -> None:
    # animated: the first frame
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "blue", "green")]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100)
    facts = measure(load_image(gif.getvalue()))
    assert facts.frames == 3 and facts.families == {"red"}
    assert "Animated (3 frames)" in art.measured_lines(facts)["composition"]
    # EXIF orientation 6 (turned a quarter): the sides swap
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = load_image(encode(Image.new("RGB", (300, 200), "white"), "JPEG", exif=exif))
    assert (turned.width, turned.height) == (200, 300)
    # 16-bit greyscale: scaled by its own range, not clipped to white
    deep = np.tile(np.linspace(0, 65535, 256, dtype=np.uint16), (64, 1))
    wide = measure(load_image(encode(Image.fromarray(deep))))  # mode I;16
    assert wide.value_low < 0.1 and wide.value_high > 0.9
    # CMYK, palette with transparency, and a half transparent picture
    cmyk = measure(load_image(encode(Image.new("CMYK", (80, 80), (0, 255, 255, 0)), "JPEG")))
    assert cmyk.families == {"red"}
    palette = Image.new("P", (80, 80), 0)
    palette.putpalette([255, 255, 0] + [0, 0, 255] * 255)
    ImageDraw.Draw(palette).rectangle([0, 0, 39, 79], fill=1)
    palette.info["transparency"] = 1
    half = measure(load_image(encode(palette)))
    assert half.families == {"yellow"} and abs(half.transparent - 0.5) < 0.05
    # a name says nothing: a PNG named .jpg, and text named .png, are what their bytes are
    assert load_image(encode(two_colours())).format == "PNG"


# -- what a sentence may claim -----------------------------------------------------------------


def test_only_what_was_measured_may_be_said() -> None:
    facts = facts_of(two_colours())
    assert art.supported("Let the orange edge lead the eye into the blue.", facts)
    assert not art.supported("Add some red to warm the blue.", facts)  # no red was measured
    assert not art.supported("The low contrast makes it flat.", facts)  # contrast is moderate
    assert art.supported("The complementary pair gives energy; vary their sizes.", facts)
    assert not art.supported("The analogous palette feels calm.", facts)
    assert not art.supported("The picture is perfectly symmetric.", facts)
    assert not art.supported("The woman's face needs more light.", facts)  # what it shows
    assert art.supported("The woman's face needs more light.", facts, sees_picture=True)
    assert not art.supported("The watercolour washes bleed well.", facts)  # how it was made
    assert not art.supported(
        "There is no light to lead the eye.", facts_of(Image.new("RGB", (9, 9), "white"))
    )
    assert art.supported(
        "There is no light to lead the eye.", facts_of(Image.new("RGB", (9, 9), "black"))
    )
    thirds = facts_of(on_a_thirds_point())
    assert not art.supported("The dark shape is centred in the frame, which feels static.", thirds)
    assert art.one_note("- Try a warmer light on the left side. And more.") == (
        "Try a warmer light on the left side."
    )
    assert art.one_note("Try adding some reflections onto your piece...") == ""
    assert art.on_topic("Try warmer hues in the sky.", "colour")
    assert art.on_topic("Try a touch of orange.", "colour")
    assert not art.on_topic("Try something that will make your audience want more!", "value")
    assert not art.supported("The dark shape sits on the left of the frame.", thirds)
    assert art.supported("The dark shape sits in the lower right, which works.", thirds)
    assert not art.supported("The contrast is high, so soften the darks.", thirds)
    assert not art.supported("Strong tonal contrast carries it.", thirds)
    assert art.one_note("Try a little more? I love you!") == ""
    assert not art.supported("Try ivory or coral accents.", facts)  # neither was measured
    assert art.one_note("Why?") == "" and art.one_note("Try a warmer light on the left") == ""


def test_measured_lines_state_every_topic_and_the_task_rebuilds_from_stored_facts() -> None:
    from bot.config import load_settings

    facts = facts_of(two_colours())
    lines = art.measured_lines(facts)
    assert set(lines) == {"composition", "colour", "value", "detail"}
    assert "#f97316 50%" in lines["colour"] and "complementary harmony" in lines["colour"]
    stored = json.loads(json.dumps({"facts": facts.to_dict(), "image": {"sha256": "ab"}}))
    settings = load_settings({"DISCORD_TOKEN": "x"}, dotenv_path=None)
    task = build_task("art", stored | {"focus": "mood", "tone": "gentle"}, settings)
    assert task is not None and task.command == "art" and not task.vision
    assert task.picture is None  # never stored; the message keeps the one it shows
    assert ImageFacts.from_dict(stored["facts"]) == facts
    assert task.shortfall is not None
    assert "can't be measured" in (task.shortfall("**Measured**") or "")


# -- through Discord ----------------------------------------------------------------------------


def art_done(message: Message) -> bool:
    return bool(message.embeds) and "llmos:regen:" in "".join(message.custom_ids)


def assert_art_critique(world: World, message: Message, title: str) -> None:
    embed = message.embeds[0]
    assert embed["title"] == title
    shown = embed["description"]
    assert shown.startswith("**Measured** (from the pixels)")
    print(f"\n{shown}\n")
    notes = shown.partition("**Notes**")[2].strip().partition("\n\n")[0]
    for line in notes.splitlines():
        assert line.startswith("- **"), line  # a measured topic's note, nothing else
    pictures = [a for a in message.attachments if a["filename"].endswith(".png")]
    assert len(pictures) == 1
    data = world.emu.files[int(pictures[0]["id"])]
    assert Image.open(io.BytesIO(data)).format == "PNG"


@pytest.mark.slow
async def test_critique_an_image_by_command_menu_and_mention(world: World) -> None:
    emu = world.emu
    asked_before = len(emu.requests)  # the world is shared: count only this test's requests
    by_command = await emu.slash(
        world.alice,
        world.channel,
        "critique",
        files={"image": ("thirds.png", encode(on_a_thirds_point()))},
        focus="composition",
        tone="gentle",
    )
    posted = await emu.say(
        world.bob,
        world.channel,
        "my sunset study",
        files={"study.jpg": encode(two_colours(), "JPEG")},
    )
    by_menu = await emu.context_menu(world.mod, posted, "Critique this")
    # critique mode: a picture posted with a mention, and one replied to with a mention
    studio = await channel_in_mode(world, "studio", "critique")
    # (other people than those above: two requests each at most are pending in this world)
    await emu.say(
        world.bob,
        studio,
        f"<@{emu.bot_user.id}> thoughts?",
        files={"night.webp": encode(Image.new("RGB", (320, 240), "#0b1026"), "WEBP")},
    )
    sketch = await emu.say(world.bob, studio, "", files={"sketch.png": encode(on_a_thirds_point())})
    await emu.say(world.owner, studio, f"<@{emu.bot_user.id}>", reply_to=sketch)

    message = await emu.wait_final(by_command, art_done, timeout=600)
    assert_art_critique(world, message, "Art critique · composition · gentle")
    assert "near the lower-right thirds point" in message.embeds[0]["description"]
    output = await eventually(lambda: world.services.store.get_output_by_message(message.id))
    record = await world.services.store.get_generation(output.chosen_id)
    assert record is not None and record.command == "art"
    image = record.prompt["inputs"]["image"]
    assert len(image["sha256"]) == 64 and image["width"] == 900
    assert "data" not in json.dumps(record.prompt).lower().replace("metadata", "")

    on_menu = await emu.wait_final(by_menu, art_done, timeout=600)
    assert_art_critique(world, on_menu, "Art critique · overall · balanced")
    assert "complementary" in on_menu.embeds[0]["description"]
    # the text beside the image: told privately how to get it critiqued too
    await emu.wait_for(lambda: by_menu.followup_ids, timeout=30)
    told = [emu.messages[i] for i in by_menu.followup_ids]
    assert len(told) == 1 and "/critique" in told[0].content and told[0].flags & 64
    in_studio = await emu.wait_for(
        lambda: (
            (done := [m for m in emu.channel_messages(studio.id) if art_done(m)])
            and len(done) == 2
            and done
        ),
        timeout=600,
    )
    for answer in in_studio:
        assert_art_critique(world, answer, "Art critique · overall · balanced")
    shown = sorted(m.embeds[0]["description"] for m in in_studio)
    assert any("low-key" in d and "evenly spread" in d for d in shown)  # the night picture
    assert any("lower-right thirds point" in d for d in shown)  # the sketch replied to
    # only the attachment host was asked for files: never a URL from a message's text
    fetched = [p for _method, p in emu.requests[asked_before:] if p.startswith("/files/")]
    assert len(fetched) == 4
    assert emu.errors == []


async def generations(world: World) -> int:
    return int((await world.services.store.fetchall("SELECT COUNT(*) FROM generations"))[0][0])


@pytest.mark.slow
async def test_a_hostile_file_gets_a_clear_answer_and_nothing_is_stored(world: World) -> None:
    emu = world.emu
    before = await generations(world)
    fake = await emu.slash(
        world.alice,
        world.channel,
        "critique",
        files={"image": ("sketch.png", b"this is a text file, not a picture\n")},
    )
    assert (await told_privately(emu, fake)).startswith("I can't read that file as an image")
    bomb = await emu.slash(
        world.bob,
        world.channel,
        "critique",
        files={"image": ("big.png", encode(Image.new("1", (20_000, 20_000))))},
    )
    assert "megapixels" in await told_privately(emu, bomb)
    nothing = await emu.say(world.bob, world.channel, "", files={"notes.txt": b"hello"})
    refused = await emu.context_menu(world.alice, nothing, "Critique this")
    answer = await emu.wait_for(lambda: emu.original(refused))
    assert answer.content.startswith("I critique writing and images")
    assert refused.ephemeral
    assert await generations(world) == before
    assert emu.errors == []


@pytest.mark.slow
async def test_with_a_vision_model_it_sees_the_picture_beside_the_measurements(
    tiny_engine: TransformersEngine, tokenizer: Any, tmp_path: Path
) -> None:
    seeing = load_vision_model(
        str(build_tiny_vlm(tmp_path / "vlm", tokenizer)), device="cpu", dtype="float32"
    )
    shown: list[int] = []
    generate = seeing.generate

    def spy(jobs: Sequence[EngineJob]) -> list[EngineOutput | BaseException]:
        shown.extend(len(job.request.prompt.images) for job in jobs)
        return generate(jobs)

    seeing.generate = spy  # type: ignore[method-assign]
    async with open_world(tiny_engine, tmp_path, vision=seeing) as world:
        emu = world.emu
        asked = await emu.slash(
            world.alice,
            world.channel,
            "critique",
            files={"image": ("pair.png", encode(two_colours()))},
            focus="colour",
        )
        message = await emu.wait_final(asked, art_done, timeout=300)
        embed = message.embeds[0]
        assert embed["title"] == "Art critique · colour · balanced"
        assert embed["description"].startswith("**Measured** (from the pixels)")
        assert "VISION_MODEL" not in embed["description"]  # no advice to add what is there
        assert shown == [1, 1]  # two candidates, each shown the picture, on the vision lane
        first = await world.services.store.get_generation(shown_id(message))
        assert first is not None and first.prompt["inputs"]["vision"] is True
        assert "images" not in first.prompt  # the picture's bytes are never stored

        # 🔁: the vision model looks again (the picture fetched again from Discord's link, and
        # checked to be the same); the picture the message shows stays
        await press(world, world.bob, message, "regen")
        second = await next_version(world, message, first.id)
        assert second.command == "art" and second.refines_id == first.id
        assert second.prompt["inputs"]["vision"] is True and shown == [1, 1, 1, 1]
        assert message.embeds[0]["description"].startswith("**Measured**")
        assert len([a for a in message.attachments if a["filename"].endswith(".png")]) == 1

        # browsing back keeps the picture; a rewrite (➕) is refused: it could change a figure
        await press(world, world.alice, message, "prev")
        await emu.wait_for(lambda: shown_id(message) == first.id, timeout=10)
        assert len([a for a in message.attachments if a["filename"].endswith(".png")]) == 1
        longer = await press(world, world.alice, message, "longer")
        await emu.wait_for(lambda: longer.followup_ids, timeout=10)
        said = emu.messages[longer.followup_ids[0]]
        assert said.flags & 64
        assert said.content.startswith("An art critique's measurements stay as measured")
        assert shown_id(message) == first.id

        # the image gone from Discord (its link expired): 🔁 says so, and nothing changes
        emu.files.clear()
        again = await press(world, world.bob, message, "regen")
        await emu.wait_for(lambda: again.followup_ids, timeout=30)
        said = emu.messages[again.followup_ids[0]]
        assert said.flags & 64 and said.content.startswith("That image is gone")
        assert shown_id(message) == first.id and shown == [1, 1, 1, 1]
        assert emu.errors == []


@pytest.mark.slow
async def test_a_critique_read_again_comes_with_its_picture_or_says_why(world: World) -> None:
    """A journalled art request after a restart, or 🔁 for a vision model: the image read again
    from Discord's link, only if it is the same image."""
    data = encode(on_a_thirds_point())
    found = analyse(data)
    kept = world.emu.attach("sketch.png", data)
    image = {"sha256": found.sha256, "url": kept["url"]}
    inputs: dict[str, Any] = {
        "image": image,
        "facts": found.facts.to_dict(),
        "focus": "composition",
        "tone": "gentle",
    }
    task = await art_again(world.services, inputs)
    assert task.picture is not None and Image.open(io.BytesIO(task.picture)).format == "PNG"
    assert task.title == "Art critique · composition · gentle" and not task.vision
    # what a restart runs again: the stored task, its picture read again
    row = RequestRecord(
        id=1, state="pending", command="art", task=snapshot(task), guild_id=world.guild.id,
        channel_id=world.channel.id, user_id=world.alice.id, message_id=1,
        interaction_token=None, token_expires_at=None, output_id=None, refines_id=None,
        refine_kind=None, generation_id=None, attempts=0, error=None,
        created_at="2026-01-01T00:00:00+00:00", updated_at="2026-01-01T00:00:00+00:00",
    )  # fmt: skip
    resumed = await task_for(world.services, world.bot.writer, row)
    assert resumed is not None and resumed.picture is not None
    other = world.emu.attach("sketch.png", encode(two_colours()))
    with pytest.raises(ImageGone, match="changed"):
        await art_again(world.services, inputs | {"image": image | {"url": other["url"]}})
    world.emu.files.clear()
    with pytest.raises(ImageGone, match="gone"):
        await art_again(world.services, inputs)
    # gone after the restart: the critique is still written from its stored measurements
    without = await task_for(world.services, world.bot.writer, row)
    assert without is not None and without.command == "art" and without.picture is None
