"""The limiter and the server-hint gate, driven by a ManualClock: no test sleeps for real."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from scanner.errors import QuotaExhausted
from scanner.ratelimit import FamilyGate, ManualClock, Pacer, RateLimitHint, RateLimits

pytestmark = pytest.mark.anyio


def hint(family: str, remaining: int, reset_in: float = 3600.0, **kw: object) -> RateLimitHint:
    return RateLimitHint(family=family, limit=100, remaining=remaining, reset_in=reset_in, **kw)  # type: ignore[arg-type]


async def settle() -> None:
    await anyio.wait_all_tasks_blocked()


async def test_manual_clock_wakes_sleepers_in_order() -> None:
    clock = ManualClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper, "b", 2.0)
        tg.start_soon(sleeper, "a", 1.0)
        await settle()
        clock.advance(1.5)
        await settle()
        assert woke == [("a", 1.5)]
        clock.advance(1.0)
    assert woke == [("a", 1.5), ("b", 2.5)]


async def test_slow_start_one_request_until_the_first_answer_names_the_family() -> None:
    limits = RateLimits(ManualClock())
    entered: list[int] = []
    release = anyio.Event()

    async def request(i: int, answer: RateLimitHint) -> None:
        async with limits.slot("upload") as slot:
            entered.append(i)
            if i == 0:
                await release.wait()
            slot.observe(answer)

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(request, i, hint("prevention_api", 50 - i))
        await settle()
        assert entered == [0], "before the first answer, only the probe may go"
        release.set()
    assert sorted(entered) == [0, 1, 2, 3]
    assert limits.statistics().routes == (("upload", "prevention_api"),)


async def test_budget_counts_requests_in_flight_and_stale_answers_cannot_raise_it() -> None:
    clock = ManualClock()
    gate = FamilyGate("prevention_api", clock, max_wait=7200)
    await gate.acquire()
    gate.release(1, hint("prevention_api", 3), probe=True)
    # three may go; the fourth must wait even though none of the three has answered yet
    for _ in range(3):
        await gate.acquire()
    assert gate.statistics().budget == 0
    assert gate.statistics().in_flight == 3
    with anyio.move_on_after(0.05):
        await gate.acquire()
        pytest.fail("a fourth request went out with the budget spent")
    # the server counted them in some order (Remaining 2, 1, 0); the answers arrive as 1, 2, 0
    gate.release(1, hint("prevention_api", 1), probe=False)
    assert gate.statistics().budget == 0  # one left at the server, two still in flight
    gate.release(1, hint("prevention_api", 2), probe=False)
    assert gate.statistics().budget == 0  # an older answer overtook a newer one: no new room
    gate.release(1, hint("prevention_api", 0), probe=False)
    assert gate.statistics().budget == 0
    assert gate.statistics().held


async def test_an_overestimated_cost_is_settled_by_the_answer() -> None:
    gate = FamilyGate("reputation_api", ManualClock(), max_wait=600)
    await gate.acquire()
    gate.release(1, hint("reputation_api", 4000), probe=True)
    await gate.acquire(1000)  # a bulk lookup reserves one unit per hash...
    assert gate.statistics().budget == 3000
    gate.release(1000, hint("reputation_api", 3990), probe=False)  # ...but only 10 were found
    assert gate.statistics().budget == 3990


async def test_family_held_at_zero_until_reset_while_another_family_proceeds() -> None:
    clock = ManualClock()
    limits = RateLimits(clock, max_wait=600)
    for route, family in (("upload", "prevention_api"), ("hash", "reputation_api")):
        async with limits.slot(route) as slot:
            slot.observe(hint(family, 0 if family == "prevention_api" else 100, reset_in=300))
    done: list[str] = []

    async def go(route: str) -> None:
        async with limits.slot(route) as slot:
            slot.observe(hint("reputation_api", 99, reset_in=300) if route == "hash" else None)
        done.append(route)

    async with anyio.create_task_group() as tg:
        tg.start_soon(go, "upload")
        tg.start_soon(go, "hash")
        await settle()
        assert done == ["hash"]
        assert limits.gate_for("upload").statistics().held  # type: ignore[union-attr]
        clock.advance(299)
        await settle()
        assert done == ["hash"]
        clock.advance(1.5)
    assert done == ["hash", "upload"]


async def test_a_reset_beyond_max_wait_raises_quota_exhausted_with_the_reset_time() -> None:
    clock = ManualClock()
    gate = FamilyGate("prevention_api", clock, max_wait=600)
    await gate.acquire()
    gate.release(1, hint("prevention_api", 0, reset_in=3 * 3600), probe=True)
    with pytest.raises(QuotaExhausted) as info:
        await gate.acquire()
    reset_at = info.value.reset_at
    assert reset_at is not None
    assert abs(reset_at - (datetime.now(UTC) + timedelta(hours=3))) < timedelta(seconds=5)


async def test_after_the_reset_the_family_slow_starts_again() -> None:
    clock = ManualClock()
    gate = FamilyGate("prevention_api", clock, max_wait=600)
    await gate.acquire()
    gate.release(1, hint("prevention_api", 0, reset_in=10), probe=True)
    clock.advance(10)
    assert await gate.acquire() is True  # the probe of the new window
    with anyio.move_on_after(0.05):
        await gate.acquire()
        pytest.fail("a second request went out before the new window was known")
    gate.release(1, hint("prevention_api", 99, reset_in=3600), probe=True)
    assert gate.statistics().budget == 99


async def test_a_new_window_is_recognised_by_a_later_reset() -> None:
    clock = ManualClock()
    gate = FamilyGate("prevention_api", clock, max_wait=600)
    await gate.acquire()
    gate.release(1, hint("prevention_api", 2, reset_in=5), probe=True)
    clock.advance(4)
    await gate.acquire()
    gate.release(1, hint("prevention_api", 99, reset_in=3600), probe=False)
    assert gate.statistics().budget == 99


async def test_an_answer_without_a_hint_refunds_its_cost() -> None:
    gate = FamilyGate("prevention_api", ManualClock(), max_wait=600)
    await gate.acquire()
    gate.release(1, hint("prevention_api", 5), probe=True)
    await gate.acquire()
    assert gate.statistics().budget == 4
    gate.release(1, None, probe=False)
    assert gate.statistics().budget == 5


async def test_pacer_is_a_gcra_with_burst() -> None:
    clock = ManualClock()
    pacer = Pacer(clock, rate=2.0, burst=2)
    times: list[float] = []

    async def go() -> None:
        await pacer.acquire()
        times.append(clock.now())

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(go)
        for _ in range(10):
            await settle()
            clock.advance(0.25)
    # two at once (the burst), then one every 0.5 s
    assert times[:2] == [0.0, 0.0]
    assert times[2:] == [0.5, 1.0, 1.5]


async def test_a_throttle_pauses_every_paced_caller_once() -> None:
    clock = ManualClock()
    limits = RateLimits(clock)
    limits.throttled(5.0)
    went: list[float] = []

    async def go() -> None:
        async with limits.slot("upload", paced=True) as slot:
            slot.observe(None)
        went.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(go)
        tg.start_soon(go)
        await settle()
        assert went == []
        clock.advance(5.0)
    assert len(went) == 2
    assert limits.statistics().pauses == 1


async def test_max_concurrency_bounds_requests_in_flight() -> None:
    limits = RateLimits(ManualClock(), max_concurrency=2)
    peak = 0
    gate = anyio.Event()

    async def go() -> None:
        nonlocal peak
        async with limits.slot("poll", cost=0) as slot:
            peak = max(peak, limits.statistics().in_flight)
            await gate.wait()
            slot.observe(RateLimitHint())

    async with limits.slot("poll", cost=0) as slot:  # map the route (no family): no slow start after
        slot.observe(RateLimitHint())
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(go)
        await settle()
        assert limits.statistics().in_flight == 2
        gate.set()
    assert peak == 2


async def test_cancelling_a_waiter_takes_nothing() -> None:
    clock = ManualClock()
    gate = FamilyGate("prevention_api", clock, max_wait=600)
    await gate.acquire()
    gate.release(1, hint("prevention_api", 0, reset_in=60), probe=True)
    with anyio.move_on_after(0.05):
        await gate.acquire()
    s = gate.statistics()
    assert (s.in_flight, s.waiting) == (0, 0)


async def test_statistics_are_frozen_records() -> None:
    limits = RateLimits(ManualClock())
    stats = limits.statistics()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.in_flight = 3  # type: ignore[misc]
    assert "RateLimits" in repr(limits)
