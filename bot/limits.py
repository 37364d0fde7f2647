"""Abuse limits in front of the queue: a per-person request rate and a per-server daily budget.

The queue's own bounds (its length, each person's pending requests) say how much may wait at
once; these say how much one person or server may ask for over time.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from bot.generation.types import QueueRefused
from bot.store import Store


class RateLimited(QueueRefused):
    """Refused by a limit; the message says which and when it lifts."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.user_message = message


class Limits:
    """Admits or refuses a person's new request. One instance for the whole bot."""

    def __init__(
        self,
        store: Store,
        *,
        per_minute: int = 10,
        daily_budget: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.per_minute = per_minute  # 0: no limit
        self.daily_budget = daily_budget  # 0: no budget
        self._clock = clock
        self._recent: dict[int, deque[float]] = {}

    async def admit(self, user_id: int, guild_id: int | None) -> None:
        """Count a new request by `user_id`, or raise `RateLimited` (nothing is counted)."""
        now = self._clock()
        recent = self._recent.setdefault(user_id, deque())
        while recent and now - recent[0] >= 60:
            recent.popleft()
        if self.per_minute and len(recent) >= self.per_minute:
            wait = max(1, round(60 - (now - recent[0])))
            raise RateLimited(f"You're going fast! Please wait {wait} s before asking again.")
        if self.daily_budget and guild_id is not None:
            midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            used = await self.store.generations_since(guild_id, midnight.isoformat())
            if used >= self.daily_budget:
                raise RateLimited(
                    f"This server has used today's {self.daily_budget} generations. "
                    "More at midnight UTC."
                )
        recent.append(now)
        if len(self._recent) > 10_000:  # forget people who have gone quiet
            self._recent = {u: q for u, q in self._recent.items() if q and now - q[-1] < 60}
