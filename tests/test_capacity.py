"""The capacity tool, small: a world of 20 servers over 2 shards in its own process, the bot in
this one, one short step. What it measures is a figure for the README, not asserted here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools import capacity

pytestmark = pytest.mark.slow


def test_a_small_capacity_run_handles_every_message_and_saves_its_figures(
    tmp_path: Path,
) -> None:
    out = tmp_path / "capacity"
    small = ["--guilds", "20", "--shards", "2", "--rates", "40", "--step-seconds", "2"]
    capacity.main([*small, "--mention-share", "0.1", "--out", str(out)])
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["guilds"] == 20 and report["shards"] == 2
    (step,) = report["steps"]
    # every message the world sent reached the bot's listeners, once (the run waits for the
    # stragglers), through the sessions of two shards
    assert step["sent"] > 0 and step["handled"] == step["sent"]
    assert out.with_suffix(".png").stat().st_size > 0
