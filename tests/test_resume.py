"""No request lost to a crash: the real bot process, killed (SIGKILL) or stopped (SIGTERM)
with requests waiting and one being written, then started again on the same database. Every
acknowledged request ends in its own message with one answer (or an honest note), none twice;
a story's parts land once and in order.

The bot runs on a tiny random model (fast to start, its text meaningless): these tests are
about what becomes of requests, not about what the model writes.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.ui.resume import GAVE_UP, LOST, TOO_OLD
from bot.writing.run import PAUSED
from emulator import Channel, Emulator, Guild, Interaction, Message, User
from tests.conftest import settled
from tests.test_process import TOKEN, BotProcess, bot_env

pytestmark = pytest.mark.slow
WAIT = 300
KILLS = int(os.environ.get("KILLS", "2"))  # 20 in `make stress`
NOTES = (TOO_OLD, LOST, GAVE_UP.split("{")[0])


def final(message: Message) -> bool:
    """An answer, or something said plainly; not a wait, not a pause for a restart."""
    return settled(message) and not message.content.startswith("⏸")


def answered(message: Message) -> bool:
    return bool(message.embeds)


def acknowledged(message: Message) -> bool:
    """Taken on: a "thinking" placeholder (a command) or a "✍️" message (a mention), not a
    refusal (the queue was full, say)."""
    first = message.history[0] if message.history else message.snapshot()
    return bool(first["flags"] & 128) or first["content"] == "✍️ …"


def shown_ids(message: Message) -> set[str]:
    """The generation ids a message ever showed (from its embeds' footers, every version)."""
    found: set[str] = set()
    for version in [*message.history, message.payload()]:
        for embed in version.get("embeds") or []:
            footer = (embed.get("footer") or {}).get("text", "")
            found.update(re.findall(r"#(\d+)", footer))
    return found


@dataclass
class Scene:
    """One server with a poetry channel, a chat channel and a story, and the bot process."""

    emu: Emulator
    tmp: Path
    guild: Guild
    poetry: Channel
    chat: Channel
    tale: Channel
    people: list[User]
    model_dir: Path
    db: Path = field(init=False)
    bots: list[BotProcess] = field(default_factory=list)
    asked: list[Callable[[], Message | None]] = field(default_factory=list)
    turns: int = 0  # story turns asked by mention

    def __post_init__(self) -> None:
        self.db = self.tmp / "llmos.sqlite3"

    async def start(self, **env: str) -> BotProcess:
        settings = {
            "MODEL": str(self.model_dir),
            "ENGINE": "sequential",
            "LOG_LEVEL": "INFO",
            "USER_REQUESTS_PER_MINUTE": "0",
            "MAX_PENDING_PER_USER": "50",
            "MAX_NEW_TOKENS": "32",
        } | env
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            cwd=self.tmp,
            env=bot_env(self.emu, self.db, **settings),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        bot = BotProcess(proc)
        self.bots.append(bot)
        await bot.wait_log(r"Connected as LLMOS", timeout=180)
        return bot

    async def kill(self, bot: BotProcess) -> None:
        bot.proc.send_signal(signal.SIGKILL)
        await bot.proc.wait()

    # -- asking ------------------------------------------------------------------------------

    async def poem(self, user: User) -> Interaction:
        interaction = await self.emu.slash(user, self.poetry, "poem", topic="the harbour at dusk")
        self.asked.append(lambda: self.emu.original(interaction))
        return interaction

    async def continue_story(self, user: User) -> Interaction:
        interaction = await self.emu.slash(user, self.tale, "story continue")
        self.asked.append(lambda: self.emu.original(interaction))
        return interaction

    async def mention(self, user: User, channel: Channel, text: str) -> None:
        me = self.emu.bot_user.id
        said = await self.emu.say(user, channel, f"<@{me}> {text}")
        if channel is self.chat:
            self.asked.append(lambda: self.reply_to(said))
        else:  # a story turn
            index = self.turns
            self.turns += 1
            self.asked.append(lambda: self.turn(index))

    def reply_to(self, said: Message) -> Message | None:
        return next(
            (
                m
                for m in self.emu.channel_messages(said.channel_id)
                if m.author.bot and m.reference_id == said.id
            ),
            None,
        )

    def turn(self, index: int) -> Message | None:
        """The `index`-th story turn the bot began by message (in whatever order they began:
        together, the story mentions and these messages match one to one)."""
        turns = [
            m
            for m in self.emu.channel_messages(self.tale.id)
            if m.author.bot and m.interaction_id is None
        ]
        return turns[index] if index < len(turns) else None

    def messages(self) -> list[Message]:
        """The requests' messages, so far: acknowledged, or a refusal."""
        return [m for m in (find() for find in self.asked) if m is not None]

    def writing_and_waiting(self) -> bool:
        """One answer is being written while others wait."""
        shown = self.messages()
        writing = [m for m in shown if m.content.startswith("✍️ ") and len(m.content) > 4]
        waiting = [m for m in shown if not final(m) and m not in writing]
        return bool(writing) and len(waiting) >= 2

    # -- what must hold ----------------------------------------------------------------------

    def journalled(self, where: str) -> bool:
        with sqlite3.connect(self.db) as conn:
            return bool(conn.execute(f"SELECT 1 FROM requests WHERE {where}").fetchall())

    def journal_settled(self) -> bool:
        with sqlite3.connect(self.db) as conn:
            return not conn.execute(
                "SELECT 1 FROM requests WHERE state IN ('pending', 'saved')"
            ).fetchall()

    async def all_final(self, timeout: float = WAIT) -> list[Message]:
        """Every request's message, once all are final and the journal is settled. (A request
        never acknowledged has no message: a story turn waiting for the part before it, say,
        when the bot was killed. Nobody was told it was taken on.)"""
        return await self.emu.wait_for(
            lambda: (
                (shown := self.messages())
                and all(final(m) for m in shown)
                and self.journal_settled()
                and shown
            ),
            timeout=timeout,
        )

    def assert_once_each(self, shown: list[Message]) -> None:
        """Each message showed at most one answer, ever; the journal agrees, and no
        generation was saved that no request owns."""
        for message in shown:
            assert len(shown_ids(message)) <= 1, f"two answers in one message: {message.history}"
            assert answered(message) or message.content.startswith(NOTES) or message.content, (
                message
            )
        with sqlite3.connect(self.db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            states = dict(
                conn.execute("SELECT state, COUNT(*) FROM requests GROUP BY state").fetchall()
            )
            assert "pending" not in states and "saved" not in states, states
            owned = [
                r[0]
                for r in conn.execute(
                    "SELECT generation_id FROM requests WHERE generation_id IS NOT NULL"
                )
            ]
            assert len(owned) == len(set(owned))
            generations = {r[0] for r in conn.execute("SELECT id FROM generations")}
            assert generations == set(owned), "a generation no request owns (or run twice)"

    def assert_story_once_in_order(self) -> None:
        with sqlite3.connect(self.db) as conn:
            parts = conn.execute(
                "SELECT s.generation_id, r.id FROM story_segments s"
                " JOIN requests r ON r.generation_id = s.generation_id"
                " WHERE s.source = 'bot' ORDER BY s.position"
            ).fetchall()
            turns = conn.execute(
                "SELECT COUNT(*) FROM requests WHERE command = 'story' AND state = 'done'"
            ).fetchone()[0]
        assert len(parts) == turns  # every finished turn landed, once
        assert [r for _, r in parts] == sorted(r for _, r in parts)  # in the order asked


@pytest.fixture
async def scene(tiny_model_dir: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    emu = await Emulator(token=TOKEN).start()
    guild = emu.add_guild()
    people = [emu.add_member(guild, name) for name in ("alice", "bob", "carol", "dan")]
    scene = Scene(
        emu,
        tmp_path,
        guild,
        emu.add_channel(guild, "poetry"),
        emu.add_channel(guild, "chat"),
        emu.add_channel(guild, "tale"),
        people,
        tiny_model_dir,
    )
    try:
        yield scene
    finally:
        for bot in scene.bots:
            bot.kill()
            await bot.proc.wait()
        await emu.stop()


async def set_up(scene: Scene) -> BotProcess:
    """Start the bot; chat mode in #chat, a story in #tale."""
    bot = await scene.start()
    emu, owner = scene.emu, scene.emu.users[scene.guild.owner_id]
    mode = await emu.slash(owner, scene.chat, "settings set", key="mode", value="chat")
    story = await emu.slash(owner, scene.tale, "story start", premise="A lighthouse keeper")
    await emu.wait_for(lambda: emu.original(mode) and emu.original(story), timeout=30)
    return bot


async def ask_a_mix(scene: Scene) -> None:
    """Eight requests in flight: by command (a poem, a story turn) and by mention (chat
    answers, story turns)."""
    alice, bob, carol, dan = scene.people
    await scene.poem(alice)
    for word in ("rain", "snow", "fog"):
        await scene.mention(bob, scene.chat, f"give me a word for {word}")
    await scene.mention(carol, scene.tale, "The lamp went out.")
    await scene.continue_story(alice)
    await scene.mention(dan, scene.tale, "Someone knocked.")
    await scene.mention(alice, scene.chat, "and one for hail?")


async def test_sigkill_with_requests_waiting_and_writing_loses_none(scene: Scene) -> None:
    bot = await set_up(scene)
    emu, (alice, bob, *_) = scene.emu, scene.people
    said = await emu.say(bob, scene.chat, f"<@{emu.bot_user.id}> a word for dawn?")
    earlier = await emu.wait_for(lambda: (m := scene.reply_to(said)) and answered(m) and m)
    # (as a person would, react once the answer is the bot's: its message is recorded)
    await emu.wait_for(lambda: scene.journalled(f"state = 'done' AND message_id = {earlier.id}"))
    await ask_a_mix(scene)
    await emu.react(alice, earlier, "🔁")  # a refinement in flight too
    await emu.wait_for(lambda: scene.journalled("refine_kind = 'regenerate'"), timeout=WAIT)
    await emu.wait_for(scene.writing_and_waiting, timeout=WAIT)
    await scene.kill(bot)
    unfinished = [m for m in scene.messages() if not final(m)]
    assert len(unfinished) >= 3

    # One row's stored task is damaged meanwhile: it is failed with a log line, and the bot
    # starts. Then a crash loop: killed again as soon as it picks the journal up.
    with sqlite3.connect(scene.db) as conn:
        damaged = conn.execute(
            "SELECT id, message_id FROM requests WHERE state = 'pending' AND command = 'chat'"
            " AND refine_kind IS NULL ORDER BY id DESC LIMIT 1"
        ).fetchone()
        conn.execute("UPDATE requests SET task = '{\"inputs\": [' WHERE id = ?", (damaged[0],))
    again = await scene.start()
    await again.wait_log(r"journal: \d+ unfinished request")
    assert re.search(rf"request {damaged[0]} has a damaged task; marked failed", again.log)
    await scene.kill(again)

    last = await scene.start()
    shown = await scene.all_final()
    scene.assert_once_each(shown)
    scene.assert_story_once_in_order()
    # the refinement: one more version of the earlier answer, written once (or, if the
    # random model gave nothing usable, said so and the earlier version put back)
    with sqlite3.connect(scene.db) as conn:
        [state] = conn.execute(
            "SELECT state FROM requests WHERE refine_kind = 'regenerate'"
        ).fetchone()
        versions = conn.execute(
            "SELECT COUNT(*) FROM generations g JOIN outputs o ON o.id = g.output_id"
            " WHERE o.message_id = ?",
            (earlier.id,),
        ).fetchone()[0]
    assert state in ("done", "failed")
    written = state == "done"
    assert versions == (2 if written else 1)
    assert len(shown_ids(earlier)) == versions
    assert ("2/2" in earlier.embeds[0]["footer"]["text"]) == written
    by_id = {m.id: m for m in shown}
    assert by_id[damaged[1]].content == LOST
    rest = [m for m in shown if m.id != damaged[1]]
    assert all(answered(m) or m.content for m in rest)
    assert "Traceback" not in "\n".join(b.log for b in scene.bots)
    assert await last.stop() == 0
    print(
        f"\nresumed after SIGKILL: {len(unfinished)} unfinished, "
        f"{sum(map(answered, shown))}/{len(shown)} answered, 1 damaged row said plainly"
    )


async def test_sigterm_pauses_then_finishes_and_old_requests_offer_to_ask_again(
    scene: Scene,
) -> None:
    emu = scene.emu
    bot = await set_up(scene)
    await ask_a_mix(scene)
    await emu.wait_for(scene.writing_and_waiting, timeout=WAIT)
    assert await bot.stop() == 0  # SIGTERM: a rolling restart
    paused = [m for m in scene.messages() if m.content == PAUSED]
    assert paused, [m.content for m in scene.messages()]

    # The interaction tokens have expired meanwhile: answers go in by message id instead.
    emu.token_lifetime_s = 0.0
    await scene.start()
    shown = await scene.all_final()
    scene.assert_once_each(shown)
    scene.assert_story_once_in_order()
    # every paused request was taken up again (its answer, or what happened, said plainly)
    assert all(final(m) for m in shown if m.id in {p.id for p in paused})
    emu.errors = [e for e in emu.errors if "Invalid Webhook Token" not in e]

    # Too old to pick up: a plain note with 🔁, which the person who asked can press.
    emu.token_lifetime_s = 15 * 60.0
    alice = scene.people[0]
    scene.asked.clear()
    interaction = await scene.poem(alice)
    await emu.wait_for(lambda: not scene.journal_settled(), timeout=30)  # journalled
    await scene.kill(scene.bots[-1])
    await scene.start(RESUME_MAX_AGE="0")
    note = await emu.wait_final(interaction, lambda m: m.content == TOO_OLD, timeout=WAIT)
    button = note.component("journal:again:")["custom_id"]
    other = await emu.click(scene.people[1], note, button)
    await emu.wait_for(lambda: other.callback_type is not None, timeout=30)
    assert other.ephemeral
    await emu.click(alice, note, button)
    message = await emu.wait_final(
        interaction, lambda m: final(m) and m.content != TOO_OLD and scene.journal_settled()
    )
    assert answered(message) or message.content, message
    scene.assert_once_each([message])
    assert emu.errors == []


async def test_a_loop_of_kills_ends_every_request_once(scene: Scene) -> None:
    """`KILLS` times: ten requests in flight, SIGKILL at a random moment, start again."""
    rng = random.Random(18)
    bot = await set_up(scene)
    alice, bob, carol, dan = scene.people
    for round_ in range(KILLS):
        if round_:
            bot = await scene.start()
        await scene.poem(alice)
        await scene.continue_story(bob)
        for n in range(3):
            await scene.mention(bob, scene.chat, f"a word for {round_}-{n}?")
            await scene.mention(dan, scene.chat, f"a colour for {round_}-{n}?")
        await scene.mention(carol, scene.tale, f"Round {round_} begins.")
        await asyncio.sleep(rng.uniform(0.2, 4.0))
        await scene.kill(bot)
    last = await scene.start()
    # what piled up over the rounds is written now: a minute a round at the most
    every = await scene.all_final(timeout=max(WAIT, 60 * KILLS))
    shown = [m for m in every if acknowledged(m)]
    refused = len(every) - len(shown)
    scene.assert_once_each(shown)
    scene.assert_story_once_in_order()
    with sqlite3.connect(scene.db) as conn:
        states = dict(conn.execute("SELECT state, COUNT(*) FROM requests GROUP BY state"))
        parts = conn.execute("SELECT COUNT(*) FROM story_segments WHERE source = 'bot'")
        story_parts = parts.fetchone()[0]
    notes = Counter(m.content.split(".")[0] for m in shown if not answered(m))
    assert await last.stop() == 0
    assert len(shown) == sum(states.values())  # the journal holds every one, and only those
    print(
        f"\nkills: {KILLS}; requests: {len(every)}, refused at once (queue full, or the story's "
        f"part being written): {refused}, "
        f"acknowledged: {len(shown)}; answered: "
        f"{sum(map(answered, shown))}; said plainly: {dict(notes)}; journal: {states}; "
        f"story parts: {story_parts} (none twice); integrity_check ok"
    )
