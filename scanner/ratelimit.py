"""Rate limiting that learns from the server: limiter algorithms plus the server-hint gate.

One :class:`RateLimits` exists per (engine, API key). Inside it, one :class:`FamilyGate` per rate-limit
*family* (MetaDefender: the ``X-RateLimit-For`` value) spends the budget the server announces:

* **Slow start.** A *route* (what the engine calls an endpoint: ``"upload"``, ``"hash"``) does not know
  its family until a response names it, so an unmapped route lets one request out at a time. The first
  response maps the route to its family's gate; the other requests then go.
* **Announced budget, in-flight counted.** A header is stale when it arrives: the gate's budget is the
  lowest ``Remaining`` seen in the window minus the cost still in flight (so an older answer that
  overtakes a newer one cannot raise it, and an over-estimated cost is settled by the answer). A
  window whose ``Reset-In`` moves later by more than a few seconds is a new window, and its
  ``Remaining`` is taken as is.
* **Hold at zero.** When the budget cannot pay for a request, the family waits until ``Reset-In`` has
  passed (then goes back to slow start) while other families keep working. If that reset is further
  away than ``max_wait``, :meth:`FamilyGate.acquire` raises :class:`~scanner.errors.QuotaExhausted`
  with the reset time instead of waiting.
* **Static limits** from config apply too: ``max_concurrency`` (requests in flight per engine) and
  ``requests_per_second`` (:class:`Pacer`, a GCRA) for the routes the vendor throttles. A throttling
  answer pauses the pacer, so one 429 pauses every paced caller once.

A request whose answer carries no hint (a connect error, a proxy's 502) refunds its cost: the server
probably did not count it, and a refund risks one 429 where keeping it risks ending a run early.

Every wait goes through a :class:`Clock`, so unit tests drive time with :class:`ManualClock` and
never sleep for real. Cancellation while waiting leaves no trace: nothing is taken until the wait ends.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio
import anyio.lowlevel

from ._clock import Clock, ManualClock, MonotonicClock
from ._pacer import Pacer
from .errors import QuotaExhausted

__all__ = (
    "Clock",
    "FamilyGate",
    "FamilyStatistics",
    "ManualClock",
    "MonotonicClock",
    "Pacer",
    "RateLimitHint",
    "RateLimitStatistics",
    "RateLimits",
    "Slot",
    "wait_until",
)

#: a Reset-In that moves later by more than this marks a new window (headers carry whole seconds)
_NEW_WINDOW_SLACK = 2.0


def _human(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


@dataclass(frozen=True, slots=True)
class RateLimitHint:
    """What one response said about our budget. Vendors differ, so every field is optional.

    ``throttled`` marks a burst-limit answer (retry after a pause); ``quota`` a spent quota (hold the
    family until ``reset_in``). ``retry_after`` is the server's requested pause in seconds.
    """

    family: str | None = None
    limit: int | None = None
    remaining: int | None = None
    used: int | None = None
    interval: float | None = None
    reset_in: float | None = None
    retry_after: float | None = None
    throttled: bool = False
    quota: bool = False


@dataclass(frozen=True, slots=True)
class FamilyStatistics:
    family: str
    known: bool
    budget: int | None
    limit: int | None
    in_flight: int
    waiting: int
    acquired: int
    reset_in: float | None
    held: bool
    paused_for: float


@dataclass(frozen=True, slots=True)
class RateLimitStatistics:
    families: tuple[FamilyStatistics, ...]
    routes: tuple[tuple[str, str | None], ...]
    in_flight: int
    max_concurrency: int | None
    requests_per_second: float | None
    pauses: int


async def wait_until(clock: Clock, changed: anyio.Event, deadline: float | None) -> None:
    """Wait for ``changed`` or for ``clock`` to reach ``deadline`` (None: no deadline), whichever
    comes first. Returns at once when either already has."""
    if deadline is None:
        await changed.wait()
        return
    if changed.is_set() or clock.now() >= deadline:
        return
    async with anyio.create_task_group() as tg:

        async def alarm() -> None:
            # measured from the deadline when the alarm first runs, which may be after a busy loop
            await clock.sleep(deadline - clock.now())
            tg.cancel_scope.cancel()

        tg.start_soon(alarm)
        await changed.wait()
        tg.cancel_scope.cancel()


class FamilyGate:
    """The budget of one rate-limit family, learnt from response headers (see the module docstring)."""

    def __init__(self, family: str, clock: Clock, *, max_wait: float) -> None:
        self.family = family
        self._clock = clock
        self._max_wait = max_wait
        self._known = False
        self._budget: int | None = None
        #: the lowest Remaining the server reported in the current window
        self._remaining: int | None = None
        self._limit: int | None = None
        self._reset_at: float | None = None
        self._paused_until = -math.inf
        self._in_flight = 0
        self._probing = False
        self._waiting = 0
        self._acquired = 0
        self._changed = anyio.Event()

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<FamilyGate {s.family} known={s.known} budget={s.budget} in_flight={s.in_flight} "
            f"waiting={s.waiting} reset_in={s.reset_in}>"
        )

    def _notify(self) -> None:
        # only a caller inside acquire() can hold the event: with none, keep it (two per request)
        if self._waiting:
            self._changed.set()
            self._changed = anyio.Event()

    def available(self) -> int | None:
        """The budget a new request could spend now, or None when no budget is known."""
        return self._budget if self._known else None

    async def acquire(self, cost: int = 1) -> bool:
        """Wait until ``cost`` units may be spent, then count them as in flight.

        Returns True when this request is the window's slow-start probe (pass it back to
        :meth:`release`). Waits on: the slow-start probe (first request of a window), a throttle
        pause, the window reset when the budget is spent. Raises QuotaExhausted when the reset is
        further than ``max_wait``.
        """
        self._waiting += 1
        try:
            while True:
                now = self._clock.now()
                changed = self._changed
                if self._paused_until > now:
                    await wait_until(self._clock, changed, self._paused_until)
                    continue
                if self._known and self._reset_at is not None and now >= self._reset_at:
                    # the window has passed: learn the new one with a single request
                    self._known, self._budget, self._reset_at, self._remaining = False, None, None, None
                probe = False
                if not self._known:
                    if self._probing:
                        await changed.wait()
                        continue
                    self._probing = probe = True
                elif self._budget is not None and self._budget < cost:
                    reset_at = self._reset_at
                    if reset_at is None:
                        # a budget without a reset time: wait for the next answer to say more
                        await changed.wait()
                        continue
                    if reset_at - now > self._max_wait:
                        wait = reset_at - now
                        at = datetime.now(UTC) + timedelta(seconds=wait)
                        raise QuotaExhausted(
                            f"{self.family} quota spent; it resets in {_human(wait)} "
                            f"(at {at:%Y-%m-%d %H:%M:%S} UTC), beyond the {_human(self._max_wait)} "
                            "we may wait",
                            reset_at=at,
                        )
                    await wait_until(self._clock, changed, reset_at)
                    continue
                elif self._budget is not None:
                    self._budget -= cost
                self._in_flight += cost
                self._acquired += 1
                return probe
        finally:
            self._waiting -= 1

    def release(self, cost: int, hint: RateLimitHint | None, *, probe: bool) -> None:
        """End a request: fold in what its answer said, or refund ``cost`` if it said nothing."""
        self._in_flight -= cost
        if probe:
            self._probing = False
        if hint is None or hint.remaining is None:
            if self._known and self._budget is not None:
                self._budget += cost
        else:
            self.observe(hint)
        self._notify()

    def observe(self, hint: RateLimitHint) -> None:
        """Fold a hint into the budget. Synchronous; never awaits."""
        now = self._clock.now()
        if hint.retry_after is not None and hint.throttled:
            self._paused_until = max(self._paused_until, now + hint.retry_after)
        if hint.remaining is None:
            return
        if hint.limit is not None:
            self._limit = hint.limit
        reset_at = None if hint.reset_in is None else now + hint.reset_in
        new_window = (
            not self._known
            or self._remaining is None
            or (
                reset_at is not None
                and (self._reset_at is None or reset_at > self._reset_at + _NEW_WINDOW_SLACK)
            )
        )
        if new_window or self._remaining is None:
            self._remaining, self._reset_at = hint.remaining, reset_at
        else:
            # within one window the server's Remaining only falls: a larger one is an older answer
            self._remaining = min(self._remaining, hint.remaining)
        self._budget = max(0, self._remaining - self._in_flight)
        self._known = True
        self._notify()

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock.now() + seconds)
        self._notify()

    def statistics(self) -> FamilyStatistics:
        now = self._clock.now()
        reset_in = None if self._reset_at is None else max(0.0, self._reset_at - now)
        return FamilyStatistics(
            family=self.family,
            known=self._known,
            budget=self._budget if self._known else None,
            limit=self._limit,
            in_flight=self._in_flight,
            waiting=self._waiting,
            acquired=self._acquired,
            reset_in=reset_in,
            held=self._known and self._budget is not None and self._budget <= 0,
            paused_for=max(0.0, self._paused_until - now),
        )


class Slot:
    """One request's hold on its limits; call :meth:`observe` with what the answer said."""

    __slots__ = ("_hint", "cost", "gate", "gate_probe", "route", "route_probe")

    def __init__(
        self, route: str, gate: FamilyGate | None, cost: int, gate_probe: bool, route_probe: bool
    ) -> None:
        self.route = route
        self.gate = gate
        self.cost = cost
        #: this request is its family's slow-start probe
        self.gate_probe = gate_probe
        #: this request is the probe that maps an unknown route to its family
        self.route_probe = route_probe
        self._hint: RateLimitHint | None = None

    def observe(self, hint: RateLimitHint | None) -> None:
        self._hint = hint


class RateLimits:
    """Every limit of one (engine, API key): route -> family gates, static pace and concurrency.

    Args:
        clock: the time source for every wait.
        max_wait: the longest a family may be held for its reset before QuotaExhausted (seconds).
        requests_per_second: static pace for paced routes (None: only the server's limits).
        burst: how many paced requests may go at once before the pace applies.
        max_concurrency: requests in flight across the engine (None: the connection pool decides).
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        max_wait: float = 600.0,
        requests_per_second: float | None = None,
        burst: int = 1,
        max_concurrency: int | None = None,
    ) -> None:
        self.clock: Clock = clock or MonotonicClock()
        self.max_wait = max_wait
        self.pacer = Pacer(self.clock, requests_per_second, burst)
        self.max_concurrency = max_concurrency
        self._concurrency = None if max_concurrency is None else anyio.Semaphore(max_concurrency)
        self._families: dict[str, FamilyGate] = {}
        #: route -> family name, or None once a route's answers proved to carry no family
        self._routes: dict[str, str | None] = {}
        #: unmapped routes: a gate used only for the slow-start probe
        self._probes: dict[str, FamilyGate] = {}
        self._in_flight = 0

    def __repr__(self) -> str:
        return f"<RateLimits families={sorted(self._families)} in_flight={self._in_flight}>"

    def family(self, name: str) -> FamilyGate:
        gate = self._families.get(name)
        if gate is None:
            gate = self._families[name] = FamilyGate(name, self.clock, max_wait=self.max_wait)
        return gate

    def gate_for(self, route: str) -> FamilyGate | None:
        """The route's family gate once known; None when it has none or is still unmapped."""
        name = self._routes.get(route)
        return None if name is None else self._families[name]

    def available(self, route: str) -> int | None:
        gate = self.gate_for(route)
        return None if gate is None else gate.available()

    async def _acquire_gate(self, route: str, cost: int, family: str | None) -> Slot:
        if route not in self._routes and family is not None:
            # the caller knows which family this route belongs to: slow start is then per family, not
            # per route (an answer naming another family re-maps the route, see _finish)
            self._routes[route] = family
            self.family(family)
        while True:
            if route in self._routes:
                gate = self.gate_for(route)
                gate_probe = False if gate is None else await gate.acquire(cost)
                return Slot(route, gate, cost, gate_probe, route_probe=False)
            probe = self._probes.get(route)
            if probe is None:
                probe = self._probes[route] = FamilyGate(f"route:{route}", self.clock, max_wait=self.max_wait)
            await probe.acquire(cost)
            if route not in self._routes:
                return Slot(route, probe, cost, gate_probe=True, route_probe=True)
            # mapped while we waited: give the probe back and queue at the real gate
            probe.release(cost, None, probe=True)

    @asynccontextmanager
    async def slot(
        self, route: str, cost: int = 1, *, paced: bool = False, family: str | None = None
    ) -> AsyncIterator[Slot]:
        """Hold the limits for one request on ``route``; the slot's ``observe`` feeds the answer back.

        Waits on the family gate (may raise QuotaExhausted), then the pace (``paced`` routes), then
        the concurrency limit. On exit the in-flight cost is released and the hint folded in (a
        route's first hint maps it to its family; ``family`` is the caller's expectation, used until
        an answer says otherwise). Cancellation releases whatever was taken.
        """
        slot = await self._acquire_gate(route, cost, family)
        try:
            if paced:
                await self.pacer.acquire()
            if self._concurrency is not None:
                await self._concurrency.acquire()
            try:
                self._in_flight += 1
                yield slot
            finally:
                self._in_flight -= 1
                if self._concurrency is not None:
                    self._concurrency.release()
        finally:
            self._finish(slot)

    def _finish(self, slot: Slot) -> None:
        hint = slot._hint
        gate = slot.gate
        if slot.route_probe and gate is not None:
            if hint is not None:
                self._probes.pop(slot.route, None)
            if hint is not None and hint.family:
                self._routes[slot.route] = hint.family
            elif hint is not None:
                self._routes[slot.route] = None
            # wake the route's other callers: they re-check the mapping (or probe again)
            gate.release(slot.cost, None, probe=True)
            if hint is not None and hint.family:
                self.family(hint.family).observe(hint)
            return
        if gate is not None:
            if hint is not None and hint.family and hint.family != gate.family:
                # the server moved this route to another family: follow it
                self._routes[slot.route] = hint.family
                self.family(hint.family).observe(hint)
                gate.release(slot.cost, None, probe=slot.gate_probe)
                return
            gate.release(slot.cost, hint, probe=slot.gate_probe)

    def throttled(self, seconds: float, route: str | None = None) -> None:
        """A throttling answer: pause the pace for every paced route, and the route's family."""
        self.pacer.pause(seconds)
        gate = None if route is None else self.gate_for(route)
        if gate is not None:
            gate.pause(seconds)

    def statistics(self) -> RateLimitStatistics:
        return RateLimitStatistics(
            families=tuple(g.statistics() for _, g in sorted(self._families.items())),
            routes=tuple(sorted(self._routes.items())),
            in_flight=self._in_flight,
            max_concurrency=self.max_concurrency,
            requests_per_second=self.pacer.rate,
            pauses=self.pacer.pauses,
        )
