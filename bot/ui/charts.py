"""Small PNG charts for embeds, drawn with matplotlib's object API (no global pyplot state,
so it is safe in a worker thread)."""

from __future__ import annotations

import io

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
