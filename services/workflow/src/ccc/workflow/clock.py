"""Time as a dependency: the cron scheduler asks a clock, so tests can move time by hand."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when ``advance`` or ``set`` is called; sleepers wake then."""

    def __init__(self, start: float) -> None:
        self._now = start
        self._moved = asyncio.Condition()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        until = self._now + max(0.0, seconds)
        async with self._moved:
            await self._moved.wait_for(lambda: self._now >= until)

    async def set(self, when: float) -> None:
        async with self._moved:
            self._now = when
            self._moved.notify_all()

    async def advance(self, seconds: float) -> None:
        await self.set(self._now + seconds)
