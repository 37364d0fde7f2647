"""Small PNG charts for embeds, drawn with matplotlib's object API (no global pyplot state,
so it is safe in a worker thread)."""

from __future__ import annotations

import io
import math
from typing import Any

from bot.store.feedback import Stats


def feedback_chart(stats: Stats, title: str) -> bytes:
    """Votes and keep-rate per command, as a 640x320 PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [t.name for t in stats.by_command]
    figure = Figure(figsize=(6.4, 3.2), dpi=100)
    FigureCanvasAgg(figure)
    votes, keeps = figure.subplots(1, 2)
    positions = range(len(names))
    votes.bar(
        [p - 0.2 for p in positions],
        [t.up for t in stats.by_command],
        0.4,
        label="👍",
        color="#5cb85c",
    )
    votes.bar(
        [p + 0.2 for p in positions],
        [t.down for t in stats.by_command],
        0.4,
        label="👎",
        color="#d9534f",
    )
    votes.set_title("votes")
    keeps.bar(list(positions), [100 * t.keep_rate for t in stats.by_command], color="#7b68ee")
    keeps.set_title("kept (%)")
    keeps.set_ylim(0, 100)
    for axes in (votes, keeps):
        axes.set_xticks(list(positions), names, rotation=30, ha="right", fontsize=8)
    figure.suptitle(title[:80], fontsize=10)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def loss_chart(losses: list[dict[str, Any]], title: str) -> bytes:
    """Training loss by step, one line per stage ("sft", "dpo", "reward"), as a 640x320 PNG.

    `losses` are a manifest's points (`{"stage", "step", "loss"}`); points that are not
    numbers are left out, and a chart with none says so."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    stages: dict[str, list[tuple[int, float]]] = {}
    for point in losses:
        try:
            stage, step, loss = str(point["stage"]), int(point["step"]), float(point["loss"])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(loss):
            stages.setdefault(stage, []).append((step, loss))
    figure = Figure(figsize=(6.4, 3.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for stage, points in stages.items():
        points.sort()
        axes.plot([s for s, _ in points], [v for _, v in points], marker="o", ms=3, label=stage)
    values = [v for points in stages.values() for _, v in points]
    if values and min(values) > 0 and max(values) / min(values) > 10:
        axes.set_yscale("log")  # SFT's loss (~nats per token) dwarfs DPO's (~0.69 and below)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if stages:
        axes.legend(fontsize=8)
    else:
        axes.text(
            0.5, 0.5, "no losses recorded", ha="center", va="center", transform=axes.transAxes
        )
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    figure.suptitle(title[:80], fontsize=10)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
