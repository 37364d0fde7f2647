"""What people say about outputs (votes, keeps, reasons), its statistics and exports, and
forgetting a person on request.

Promises:
- One vote per person per output: a new vote replaces the old one, wherever on the output's
  alternatives it was (the database enforces it with a unique index).
- Each method is one transaction on the store's connection.
- `forget` leaves nothing of the person's requests, votes or (if asked) story parts behind.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

from bot.store.database import Connection, Store, utcnow

UP, DOWN = 1, -1


@dataclass(frozen=True, slots=True)
class Tally:
    """Feedback on one group of outputs (a command) or generations (a refinement kind)."""

    name: str
    total: int
    up: int
    down: int
    kept: int

    @property
    def keep_rate(self) -> float:
        return self.kept / self.total if self.total else 0.0


@dataclass(frozen=True, slots=True)
class Stats:
    by_command: list[Tally]
    by_refinement: list[Tally]

    @property
    def empty(self) -> bool:
        return not self.by_command


@dataclass(frozen=True, slots=True)
class Example:
    """One training example (a TRL row) and where it came from."""

    output_id: int
    row: dict[str, Any]
    generation_ids: tuple[int, ...]
    feedback_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Examples:
    pairs: list[Example]  # preference pairs: prompt, chosen, rejected
    sft: list[Example]  # kept answers: messages


def _ids(*rows: Any) -> tuple[int, ...]:
    """The feedback ids of generation rows (`feedback_ids`: comma-separated, or NULL)."""
    return tuple(sorted({int(i) for r in rows for i in (r["feedback_ids"] or "").split(",") if i}))


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What `forget` removed or anonymised."""

    votes: int
    generations: int
    segments: int


class Feedback:
    """Votes, keeps and reasons on the store's connection."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def vote(self, generation_id: int, user_id: int, value: int) -> int | None:
        """Record `user_id`'s vote (UP or DOWN) on the output that shows `generation_id`.

        Returns the vote it replaced on that output (None if there was none).
        """
        async with self.store.transaction() as db:
            async with db.execute(
                "SELECT f.value FROM feedback f JOIN generations g ON g.output_id = f.output_id"
                " WHERE g.id = ? AND f.user_id = ? AND f.kind = 'vote'",
                (generation_id, user_id),
            ) as cur:
                row = await cur.fetchone()
            await _one_per_output(db, generation_id, user_id, "vote", str(value))
        return int(row[0]) if row else None

    async def unvote(self, output_id: int, user_id: int, value: int | None = None) -> bool:
        """Remove `user_id`'s vote on an output (only if it is `value`, when given)."""
        sql = "DELETE FROM feedback WHERE kind = 'vote' AND output_id = ? AND user_id = ?"
        params: tuple[Any, ...] = (output_id, user_id)
        if value is not None:
            sql, params = sql + " AND value = ?", (*params, str(value))
        async with self.store.transaction() as db:
            cur = await db.execute(sql, params)
            return cur.rowcount > 0

    async def votes(self, output_id: int) -> dict[int, int]:
        """Everyone's vote on an output, by user id."""
        rows = await self.store.fetchall(
            "SELECT user_id, value FROM feedback WHERE output_id = ? AND kind = 'vote'",
            (output_id,),
        )
        return {row["user_id"]: int(row["value"]) for row in rows}

    async def reason(self, generation_id: int, user_id: int, text: str) -> None:
        """Why `user_id` voted down `generation_id` (replacing an earlier reason)."""
        async with self.store.transaction() as db:
            await db.execute(_UPSERT, (user_id, "reason", text, utcnow(), generation_id))

    async def keep(self, generation_id: int, user_id: int) -> None:
        """`user_id` keeps this alternative: it becomes the output's chosen one."""
        async with self.store.transaction() as db:
            await _one_per_output(db, generation_id, user_id, "keep", "1")
            await db.execute(
                "UPDATE outputs SET chosen_id = ? WHERE id ="
                " (SELECT output_id FROM generations WHERE id = ?)",
                (generation_id, generation_id),
            )

    async def feedback_of(self, generation_id: int) -> list[dict[str, Any]]:
        """Every feedback row on one generation (for tests and diagnostics)."""
        rows = await self.store.fetchall(
            "SELECT user_id, kind, value FROM feedback WHERE generation_id = ? ORDER BY id",
            (generation_id,),
        )
        return [dict(r) for r in rows]

    # -- statistics and export -----------------------------------------------------------------

    async def stats(self, guild_id: int, channel_id: int | None = None) -> Stats:
        """Votes and keep-rates per command (over outputs) and per refinement kind (over
        generations; "first" is an output's first answer), in a server or one channel."""
        where = "o.guild_id = ?" + (" AND o.channel_id = ?" if channel_id is not None else "")
        params = (guild_id,) if channel_id is None else (guild_id, channel_id)
        tally = (
            "COALESCE(SUM(CASE WHEN f.kind = 'vote' AND f.value = '1' THEN 1 ELSE 0 END), 0)"
            " AS up, COALESCE(SUM(CASE WHEN f.kind = 'vote' AND f.value = '-1' THEN 1 ELSE 0"
            " END), 0) AS down"
        )
        commands = await self.store.fetchall(
            f"SELECT o.command AS name, COUNT(DISTINCT o.id) AS total, {tally},"
            " COUNT(DISTINCT CASE WHEN f.kind = 'keep' THEN o.id END) AS kept"
            f" FROM outputs o LEFT JOIN feedback f ON f.output_id = o.id WHERE {where}"
            " GROUP BY o.command ORDER BY total DESC, name",
            params,
        )
        kinds = await self.store.fetchall(
            "SELECT COALESCE(g.refine_kind, 'first') AS name, COUNT(DISTINCT g.id) AS total,"
            f" {tally}, COUNT(DISTINCT CASE WHEN f.kind = 'keep' THEN g.id END) AS kept"
            " FROM generations g JOIN outputs o ON o.id = g.output_id"
            f" LEFT JOIN feedback f ON f.generation_id = g.id WHERE {where}"
            " GROUP BY name ORDER BY total DESC, name",
            params,
        )
        return Stats([Tally(**dict(r)) for r in commands], [Tally(**dict(r)) for r in kinds])

    async def export(self, guild_id: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Training data from a server: (preference pairs, SFT examples), in TRL's
        conversational format (see `examples`)."""
        found = await self.examples(guild_id)
        return [p.row for p in found.pairs], [e.row for e in found.sft]

    async def examples(self, guild_id: int | None) -> Examples:
        """What people said, as training examples, from one server (None: every server).

        Outputs written from a picture shown to a vision model are left out: the stored prompt
        has no image, and a text model must not learn to critique what it cannot see.
        A pair's prompt is the output's first request; "chosen" is a kept or up-voted
        alternative, "rejected" a down-voted one, or any other alternative of an output whose
        kept alternative was chosen over it. SFT examples are the kept alternatives. Each
        example carries the generation and feedback ids it came from.
        """
        # every server: never direct messages, which are private to the person who wrote them
        where, params = (
            ("o.guild_id = ?", (guild_id,)) if guild_id is not None else ("o.guild_id > 0", ())
        )
        # the one aggregate the two databases spell differently (SQLite 3.44 has string_agg)
        counted = "CASE WHEN f.kind IN ('vote', 'keep') THEN f.id END"
        joined = (
            f"string_agg(CAST({counted} AS TEXT), ',')"
            if self.store.dialect == "postgresql"
            else f"GROUP_CONCAT({counted})"
        )
        rows = await self.store.fetchall(
            "SELECT g.id, g.output_id, g.prompt, g.output,"
            " COALESCE(SUM(CASE WHEN f.kind = 'vote' THEN CAST(f.value AS INTEGER) END), 0)"
            " AS score, COALESCE(MAX(CASE WHEN f.kind = 'keep' THEN 1 ELSE 0 END), 0) AS kept,"
            f" {joined} AS feedback_ids"
            " FROM generations g JOIN outputs o ON o.id = g.output_id"
            " LEFT JOIN feedback f ON f.generation_id = g.id"
            f" WHERE {where} GROUP BY g.id ORDER BY g.output_id, g.id",
            params,
        )
        by_output: dict[int, list[Any]] = defaultdict(list)
        for row in rows:
            by_output[row["output_id"]].append(row)
        found = Examples([], [])
        for output_id, alternatives in by_output.items():
            prompt = conversation(alternatives[0]["prompt"])
            if prompt is None or _saw_a_picture(alternatives[0]["prompt"]):
                continue
            kept = [a for a in alternatives if a["kept"]]
            chosen = kept + [a for a in alternatives if a["score"] > 0 and not a["kept"]]
            rejected = [
                a
                for a in alternatives
                if not a["kept"] and (a["score"] < 0 or (kept and a["score"] <= 0))
            ]
            for good in chosen:
                for bad in rejected:
                    if good["output"].strip() != bad["output"].strip():
                        pair: dict[str, Any] = {
                            "prompt": prompt,
                            "chosen": _said(good["output"]),
                            "rejected": _said(bad["output"]),
                        }
                        ids = (good["id"], bad["id"])
                        found.pairs.append(Example(output_id, pair, ids, _ids(good, bad)))
            for a in kept:
                kept_row: dict[str, Any] = {"messages": prompt + _said(a["output"])}
                found.sft.append(Example(output_id, kept_row, (a["id"],), _ids(a)))
        return found

    # -- privacy ------------------------------------------------------------------------------

    async def forget(self, user_id: int, *, segments: Literal["remove", "anonymise"]) -> Forgotten:
        """Delete everything `user_id` asked for or said about outputs, and remove or
        anonymise their story parts. Outputs they requested go with every alternative."""
        async with self.store.transaction() as db:
            # the ids alone are kept, to mark adapters trained on what is forgotten here
            now = utcnow()
            await db.execute(
                "INSERT INTO forgotten_rows (source, row_id, forgotten_at)"
                " SELECT 'feedback', id, CAST(? AS TEXT) FROM feedback WHERE user_id = ?"
                " ON CONFLICT DO NOTHING",
                (now, user_id),
            )
            await db.execute(
                "INSERT INTO forgotten_rows (source, row_id, forgotten_at)"
                " SELECT 'generation', id, CAST(? AS TEXT) FROM generations WHERE user_id = ?"
                " OR output_id IN (SELECT id FROM outputs WHERE requester_id = ?)"
                " ON CONFLICT DO NOTHING",
                (now, user_id, user_id),
            )
            votes = await db.execute("DELETE FROM feedback WHERE user_id = ?", (user_id,))
            # the journal keeps a request's inputs until it is pruned
            await db.execute("DELETE FROM requests WHERE user_id = ?", (user_id,))
            generations = await db.execute(
                "DELETE FROM generations WHERE user_id = ? OR output_id IN"
                " (SELECT id FROM outputs WHERE requester_id = ?)",
                (user_id, user_id),
            )
            await db.execute("DELETE FROM outputs WHERE requester_id = ?", (user_id,))
            # an output whose shown alternative was theirs shows the latest one left
            await db.execute(
                "UPDATE outputs SET chosen_id = (SELECT MAX(id) FROM generations"
                " WHERE output_id = outputs.id) WHERE chosen_id IS NULL"
            )
            # their words may live on in a story's rolling summary, and in the summaries of
            # its branches (which read its parts): those are rebuilt
            await db.execute(
                "UPDATE stories SET summary = '', summary_upto = 0 WHERE id IN"
                " (WITH RECURSIVE touched(id) AS ("
                " SELECT story_id FROM story_segments WHERE author_id = ?"
                " UNION SELECT s.id FROM stories s JOIN touched t ON s.parent_id = t.id)"
                " SELECT id FROM touched)",
                (user_id,),
            )
            if segments == "remove":
                parts = await db.execute(
                    "DELETE FROM story_segments WHERE author_id = ?", (user_id,)
                )
            else:
                parts = await db.execute(
                    "UPDATE story_segments SET author_id = NULL, message_id = NULL"
                    " WHERE author_id = ?",
                    (user_id,),
                )
            await db.execute("UPDATE stories SET created_by = 0 WHERE created_by = ?", (user_id,))
            # the world they helped build stays, without their name; their ballots go
            await db.execute(
                "UPDATE lore_entries SET created_by = NULL WHERE created_by = ?", (user_id,)
            )
            await db.execute("DELETE FROM story_ballots WHERE user_id = ?", (user_id,))
            await db.execute(
                "UPDATE story_votes SET created_by = NULL WHERE created_by = ?", (user_id,)
            )
            await db.execute(
                "UPDATE settings SET updated_by = NULL WHERE updated_by = ?", (user_id,)
            )
        return Forgotten(votes.rowcount, generations.rowcount, parts.rowcount)


# One row per person, generation and kind; a second one replaces the first.
_UPSERT = (
    "INSERT INTO feedback (generation_id, output_id, user_id, kind, value, created_at)"
    " SELECT id, output_id, CAST(? AS BIGINT), CAST(? AS TEXT), CAST(? AS TEXT),"
    " CAST(? AS TEXT) FROM generations WHERE id = ?"
    " ON CONFLICT (generation_id, user_id, kind) DO UPDATE SET value = excluded.value,"
    " created_at = excluded.created_at"
)


async def _one_per_output(
    db: Connection, generation_id: int, user_id: int, kind: str, value: str
) -> None:
    """Set the person's one row of `kind` on the output that shows `generation_id`; an earlier
    one on any version of that output goes (inside the caller's transaction)."""
    await db.execute(
        "DELETE FROM feedback WHERE kind = ? AND user_id = ? AND output_id ="
        " (SELECT output_id FROM generations WHERE id = ?)",
        (kind, user_id, generation_id),
    )
    await db.execute(_UPSERT, (user_id, kind, value, utcnow(), generation_id))


def conversation(prompt: Any) -> list[dict[str, str]] | None:
    """A stored prompt as chat messages (a plain prompt becomes one user message)."""
    try:
        data = json.loads(prompt) if isinstance(prompt, str) else prompt
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    messages = [
        {"role": str(m.get("role")), "content": str(m.get("content"))}
        for m in data.get("messages") or []
        if isinstance(m, dict)
    ]
    if not messages and data.get("plain"):
        messages = [{"role": "user", "content": str(data["plain"])}]
    return messages or None


def _saw_a_picture(prompt: Any) -> bool:
    """Whether a stored prompt was shown with an image (an art critique by a vision model)."""
    try:
        data = json.loads(prompt) if isinstance(prompt, str) else prompt
    except ValueError:
        return False
    inputs = data.get("inputs") if isinstance(data, dict) else None
    return isinstance(inputs, dict) and bool(inputs.get("vision"))


def _said(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]
