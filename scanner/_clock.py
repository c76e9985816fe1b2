"""Clocks: monotonic seconds and a sleep, injectable so limiter and polling tests never sleep for real.

:class:`ManualClock` moves only when a test calls :meth:`ManualClock.advance`; sleepers whose time
has come are woken and run at their next chance (``await anyio.wait_all_tasks_blocked()`` lets them).
"""

from __future__ import annotations

import heapq
import itertools
import time
from typing import Protocol

import anyio
import anyio.lowlevel

__all__ = ("Clock", "ManualClock", "MonotonicClock")


class Clock(Protocol):
    """Monotonic seconds and a sleep that honours them."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float, /) -> None: ...


class MonotonicClock:
    """The real clock: the event loop's monotonic time."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float, /) -> None:
        await anyio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when told: :meth:`advance` wakes the sleepers whose time has come."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._seq = itertools.count()

    def __repr__(self) -> str:
        return f"<ManualClock now={self._now} sleepers={len(self._sleepers)}>"

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float, /) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), event))
        await event.wait()

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper due by then (they run at their next chance)."""
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            heapq.heappop(self._sleepers)[2].set()
