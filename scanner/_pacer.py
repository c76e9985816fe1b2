"""A static request pace: GCRA with a burst, plus a pause the server can ask for."""

from __future__ import annotations

import math

from ._clock import Clock

__all__ = ("Pacer",)


class Pacer:
    """A static ``requests_per_second`` with a burst, as GCRA, plus a pause the server can ask for.

    GCRA (the Generic Cell Rate Algorithm, ITU-T I.371 / ATM Forum TM 4.0, the "virtual scheduling"
    form): each request is due at the theoretical arrival time ``tat``; it may go up to
    ``(burst - 1) / rate`` early. Slots are reserved before sleeping, so callers go in arrival order.
    A caller cancelled while sleeping forfeits its reserved slot (the pace only gets more careful).
    """

    def __init__(self, clock: Clock, rate: float | None = None, burst: int = 1) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self._clock = clock
        self.rate = rate
        self._interval = 0.0 if rate is None else 1.0 / rate
        self._tolerance = self._interval * max(0, burst - 1)
        self._tat = -math.inf
        self._paused_until = -math.inf
        self.pauses = 0

    def pause(self, seconds: float) -> None:
        """Hold every paced caller for ``seconds`` from now (a throttling answer)."""
        self._paused_until = max(self._paused_until, self._clock.now() + seconds)
        self.pauses += 1

    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock.now())

    async def acquire(self) -> None:
        """Wait for the next slot. Raises nothing; cancellation is safe."""
        while True:
            now = self._clock.now()
            if self._paused_until > now:
                await self._clock.sleep(self._paused_until - now)
                continue
            if self.rate is None:
                return
            tat = max(self._tat, now)
            self._tat = tat + self._interval
            delay = tat - self._tolerance - now
            if delay > 0:
                await self._clock.sleep(delay)
            if self._paused_until <= self._clock.now():
                return
