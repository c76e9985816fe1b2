"""The lingering batcher and the single-flight map, driven by a ManualClock: no test sleeps for real."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anyio
import pytest

from scanner.engines._batching import Batcher, Singleflight
from scanner.ratelimit import ManualClock

pytestmark = pytest.mark.anyio


class Lookups:
    """A flush that records each batch and answers ``key * 10``; optionally held until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.hold: anyio.Event | None = None

    async def __call__(self, keys: Sequence[int]) -> Mapping[int, int]:
        self.batches.append(list(keys))
        if self.hold is not None:
            await self.hold.wait()
        return {k: k * 10 for k in keys}


def batcher(
    lookups: Lookups, clock: ManualClock, *, linger: float = 5.0, size: int = 1000
) -> Batcher[int, int]:
    return Batcher(lookups, linger=linger, max_size=lambda: size, clock=clock)


async def settle() -> None:
    await anyio.wait_all_tasks_blocked()


async def test_members_that_are_all_in_the_batch_send_it_without_the_linger() -> None:
    clock, lookups = ManualClock(), Lookups()
    hashes = batcher(lookups, clock)
    got: dict[int, int] = {}

    async def job(key: int) -> None:
        member = hashes.member()
        try:
            got[key] = await hashes.get(key)
        finally:
            member.leave()

    async with anyio.create_task_group() as tg:
        for key in range(3):
            tg.start_soon(job, key)
        await settle()
    assert lookups.batches == [[0, 1, 2]]  # one lookup, and no clock advance was needed
    assert got == {0: 0, 1: 10, 2: 20}


async def test_a_batch_waits_out_its_linger_while_a_member_may_still_join() -> None:
    clock, lookups = ManualClock(), Lookups()
    hashes = batcher(lookups, clock)
    hashes.member()  # the job below
    busy = hashes.member()  # and one still hashing its file
    async with anyio.create_task_group() as tg:
        tg.start_soon(hashes.get, 1)
        await settle()
        clock.advance(4.0)
        await settle()
        assert lookups.batches == []
        clock.advance(1.0)
        await settle()
        assert lookups.batches == [[1]]
    busy.leave()


async def test_the_last_member_leaving_sends_the_batch() -> None:
    clock, lookups = ManualClock(), Lookups()
    hashes = batcher(lookups, clock)
    first, second = hashes.member(), hashes.member()
    async with anyio.create_task_group() as tg:
        tg.start_soon(hashes.get, 1)
        await settle()
        assert lookups.batches == []
        second.leave()  # it will never ask (its content is a twin's, say)
        second.leave()  # leaving twice counts once
        await settle()
        assert lookups.batches == [[1]]
    first.leave()


async def test_the_linger_counts_from_the_opening_not_from_when_the_opener_runs_again() -> None:
    clock, lookups = ManualClock(), Lookups()
    hashes = batcher(lookups, clock)
    hashes.member()  # the job below
    hashes.member()  # one that never joins: only the linger can send the batch

    async def busy_neighbour() -> None:
        clock.advance(5.0)  # the loop spent the whole linger elsewhere before the opener ran again

    async with anyio.create_task_group() as tg:
        tg.start_soon(hashes.get, 1)
        tg.start_soon(busy_neighbour)
        await settle()
        assert lookups.batches == [[1]]


async def test_a_full_batch_goes_at_once_and_the_next_key_opens_another() -> None:
    clock, lookups = ManualClock(), Lookups()
    hashes = batcher(lookups, clock, size=2)
    for _ in range(4):
        hashes.member()  # the three jobs below and one more: only full or the linger send a batch
    lookups.hold = anyio.Event()
    async with anyio.create_task_group() as tg:
        for key in range(3):
            tg.start_soon(hashes.get, key)
        await settle()
        assert lookups.batches == [[0, 1]]  # the third waits for company while the first is in flight
        clock.advance(5.0)
        await settle()
        assert lookups.batches == [[0, 1], [2]]  # two lookups in flight at once
        lookups.hold.set()
    assert hashes.batches == 2


async def test_without_members_a_batch_still_collects_for_the_linger() -> None:
    clock, lookups = ManualClock(), Lookups()
    hashes = batcher(lookups, clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(hashes.get, 1)
        await settle()
        tg.start_soon(hashes.get, 2)
        await settle()
        assert lookups.batches == []
        clock.advance(5.0)
    assert lookups.batches == [[1, 2]]


async def test_a_flush_error_reaches_every_caller_of_the_batch() -> None:
    clock = ManualClock()

    async def broken(keys: Sequence[int]) -> Mapping[int, int]:
        raise RuntimeError("lookup failed")

    hashes: Batcher[int, int] = Batcher(broken, linger=0.0, max_size=lambda: 1000, clock=clock)
    errors: list[str] = []

    async def job(key: int) -> None:
        try:
            await hashes.get(key)
        except RuntimeError as exc:
            errors.append(str(exc))

    async with anyio.create_task_group() as tg:
        tg.start_soon(job, 1)
        tg.start_soon(job, 2)
    assert errors == ["lookup failed", "lookup failed"]


async def test_a_cancelled_opener_hands_its_batch_to_the_others() -> None:
    clock, lookups = ManualClock(), Lookups()
    hashes = batcher(lookups, clock)
    got: list[int] = []

    async def job(key: int) -> None:
        got.append(await hashes.get(key))

    async with anyio.create_task_group() as tg:
        async with anyio.create_task_group() as opener:
            opener.start_soon(hashes.get, 1)
            await settle()
            tg.start_soon(job, 2)
            await settle()
            opener.cancel_scope.cancel()  # while its batch lingers
        await settle()
        assert lookups.batches == []
        clock.advance(5.0)
    assert lookups.batches == [[2]]
    assert got == [20]


async def test_singleflight_runs_once_and_says_who_is_waiting() -> None:
    flights: Singleflight[str, int] = Singleflight()
    release = anyio.Event()
    calls = 0

    async def work() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return 7

    results: list[tuple[int, bool]] = []

    async def caller() -> None:
        results.append(await flights.run("k", work))

    async with anyio.create_task_group() as tg:
        assert not flights.running("k")
        tg.start_soon(caller)
        await settle()
        assert flights.running("k")
        tg.start_soon(caller)
        await settle()
        release.set()
    assert calls == 1
    assert sorted(results) == [(7, False), (7, True)]
    assert not flights.running("k")  # done and cached: a caller now gets the value at once
