"""Abuse limits: a per-person request rate and a per-server daily budget, refused privately."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.limits import Limits, RateLimited
from bot.store import Store
from tests.conftest import World
from tests.test_load import outcome
from tests.test_queue_ux import scripted  # noqa: F401  (the fixture)
from tests.test_store import gen


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_per_minute_limit_slides(tmp_path: Path) -> None:
    clock = Clock()
    async with Store.open(tmp_path / "db.sqlite3") as store:
        limits = Limits(store, per_minute=2, clock=clock)
        await limits.admit(1, None)
        clock.now += 10
        await limits.admit(1, None)
        await limits.admit(2, None)  # someone else is not held back
        with pytest.raises(RateLimited) as refused:
            await limits.admit(1, None)
        assert refused.value.user_message == (
            "You're going fast! Please wait 50 s before asking again."
        )
        clock.now += 50  # the first request has left the minute
        await limits.admit(1, None)
        assert Limits(store, per_minute=0).per_minute == 0  # 0 is no limit


async def test_daily_budget_counts_a_servers_generations(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "db.sqlite3") as store:
        for _ in range(3):
            await store.save_output(gen(guild_id=7))
        await store.save_output(gen(guild_id=8))
        limits = Limits(store, per_minute=0, daily_budget=3)
        with pytest.raises(RateLimited, match="today's 3 generations"):
            await limits.admit(1, 7)
        await limits.admit(1, 8)  # another server has its own budget
        await limits.admit(1, None)  # direct messages have none


@pytest.mark.slow
async def test_limits_answer_privately_over_discord(scripted: World) -> None:  # noqa: F811
    emu, limits = scripted.emu, scripted.services.limits
    dave = emu.add_member(scripted.guild, "dave")
    limits.per_minute = 2
    try:
        answers = []
        for topic in ("one", "two", "three"):
            interaction = await emu.slash(dave, scripted.channel, "brainstorm", topic=topic)
            await emu.wait_for(lambda i=interaction: i.callback_type is not None, timeout=30)  # type: ignore[misc]
            answers.append(interaction)
        assert [i.ephemeral for i in answers] == [False, False, True], [
            getattr(emu.original(i), "content", None) for i in answers
        ]
        assert "going fast" in emu.original(answers[2]).content  # type: ignore[union-attr]
    finally:
        limits.per_minute = 0
    for interaction in answers[:2]:  # let them finish: the pending limit is another matter
        await emu.wait_for(lambda i=interaction: outcome(scripted, i), timeout=30)  # type: ignore[misc]
    used = await scripted.services.store.generations_since(scripted.guild.id, "1970")
    limits.daily_budget = used + 100  # plenty left: allowed
    try:
        ok = await emu.slash(dave, scripted.channel, "poem", topic="fine", form="haiku")
        await emu.wait_for(lambda: ok.callback_type is not None, timeout=30)
        assert not ok.ephemeral
        limits.daily_budget = 1  # spent
        spent = await emu.slash(dave, scripted.channel, "poem", topic="more", form="haiku")
        await emu.wait_for(lambda: spent.callback_type is not None, timeout=30)
        assert spent.ephemeral
        assert "today's 1 generations" in emu.original(spent).content  # type: ignore[union-attr]
    finally:
        limits.daily_budget = 0
    assert emu.errors == []
