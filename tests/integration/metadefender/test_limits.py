"""Rate limits against the simulator: announced limits are never overrun, families are independent,
throttles are retried, a far quota reset ends the run, bad keys stop at once, the key never leaks."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from scanner.errors import AuthError, QuotaExhausted
from scanner.model import Outcome, Status
from scanner.testing import eicar

from .conftest import KEY, create, memory, scan_all, scan_each, simulator

pytestmark = pytest.mark.anyio


def unique(n: int, prefix: str = "file") -> dict[str, bytes]:
    return {f"{prefix}-{i}": f"{prefix} content {i}".encode() for i in range(n)}


async def test_zero_quota_429s_when_limits_are_announced() -> None:
    # 4 uploads per 1-second window, 10 new files: the engine must wait for two resets, never 429
    async with simulator(prevention_limit=4, interval=1.0) as sim:
        source, targets = memory(unique(10))
        async with create(sim.config(max_quota_wait=5)) as engine:
            out = await scan_all(engine, source, targets)
    assert all(o.status is Status.CLEAN for o in out.values())
    assert sim.state.uploads == 10
    assert sim.state.quota_429 == 0
    assert sim.state.closed["prevention_api"][:2] == [4, 4]  # each full window was used whole


async def test_a_family_at_zero_is_held_while_the_other_proceeds() -> None:
    known = unique(5, "known")
    async with simulator(prevention_limit=2, interval=1.5) as sim:
        for content in known.values():
            sim.state.preload(content)
        new_source, new_targets = memory(unique(3, "new"))
        known_source, known_targets = memory(known)
        async with create(sim.config(max_quota_wait=10)) as engine:
            during_hold: dict[str, Outcome] = {}
            async with anyio.create_task_group() as tg:
                tg.start_soon(scan_all, engine, new_source, new_targets)
                # wait until two uploads are spent and the third is held at Remaining 0
                with anyio.fail_after(5):
                    while not (sim.state.uploads == 2 and engine.limits.gate_for("upload")):
                        await anyio.sleep(0.01)
                    gate = engine.limits.gate_for("upload")
                    assert gate is not None
                    while not gate.statistics().held or gate.statistics().waiting == 0:
                        await anyio.sleep(0.01)
                # hash lookups (reputation_api) go on while uploads (prevention_api) wait
                during_hold = await scan_all(engine, known_source, known_targets)
                assert sim.state.uploads == 2
                assert gate.statistics().held
    assert all(o.status is Status.CLEAN for o in during_hold.values())
    assert sim.state.uploads == 3
    assert sim.state.quota_429 == 0


async def test_a_throttle_429_is_backed_off_and_retried() -> None:
    async with simulator(throttle_limit=3, throttle_window=0.5) as sim:
        source, targets = memory(unique(6))
        async with create(sim.config(hash_lookup=False)) as engine:
            out = await scan_all(engine, source, targets)
            retries = engine.http.statistics().retries
    assert all(o.status is Status.CLEAN for o in out.values())
    assert sim.state.throttle_429 >= 1
    assert retries >= 1
    assert sim.state.uploads == 6


async def test_a_static_pace_avoids_the_throttle() -> None:
    async with simulator(throttle_limit=3, throttle_window=0.5) as sim:
        source, targets = memory(unique(6))
        config = sim.config(hash_lookup=False, requests_per_second=5.0)
        async with create(config) as engine:
            await scan_all(engine, source, targets)
    assert sim.state.throttle_429 == 0
    assert sim.state.uploads == 6


async def test_a_quota_that_resets_in_hours_raises_quota_exhausted_without_a_429() -> None:
    async with simulator(prevention_limit=2, interval=3 * 3600) as sim:
        source, targets = memory(unique(4))
        async with create(sim.config()) as engine:
            results: list[Outcome | QuotaExhausted] = []

            async def one(i: int) -> None:
                try:
                    results.append(await engine.scan(targets[i], source))
                except QuotaExhausted as exc:
                    results.append(exc)

            for i in range(4):  # one after another, as a pipeline with --jobs 1 would
                await one(i)
    assert [type(r).__name__ for r in results] == ["Outcome", "Outcome", "QuotaExhausted", "QuotaExhausted"]
    exc = results[2]
    assert isinstance(exc, QuotaExhausted)
    assert exc.reset_at is not None
    assert abs(exc.reset_at - (datetime.now(UTC) + timedelta(hours=3))) < timedelta(minutes=1)
    assert sim.state.uploads == 2
    assert sim.state.quota_429 == 0  # the announced budget stopped it before the server had to


async def test_a_quota_spent_elsewhere_costs_one_429_then_ends_the_run() -> None:
    async with simulator(prevention_limit=1, interval=3 * 3600) as sim:
        other, other_targets = memory({"elsewhere": b"spent by another machine"})
        async with create(sim.config()) as engine:
            await engine.scan(other_targets[0], other)
        source, targets = memory(unique(3))
        async with create(sim.config()) as engine:  # a new run that knows nothing yet
            out = await scan_each(engine, source, targets)
    assert all(isinstance(r, QuotaExhausted) for r in out.values())
    assert sim.state.quota_429 == 1
    assert sim.state.uploads == 1


async def test_a_wrong_key_fails_on_enter_after_one_request() -> None:
    async with simulator() as sim:
        with pytest.raises(AuthError) as info:
            async with create(sim.config(api_key="wrong-key-9999")):
                pytest.fail("entered with a wrong key")
    assert sim.state.requests == 1
    assert "401" in str(info.value)
    assert "wrong-key-9999" not in str(info.value)


async def test_a_key_refused_mid_run_stops_every_request() -> None:
    async with simulator() as sim, create(sim.config()) as engine:
        sim.state.options["bad_key_limit"] = 100
        engine.http._headers["apikey"] = "revoked-key-1234"  # the key stops working mid-run
        source, targets = memory(unique(5))
        outcomes: list[BaseException] = []
        for t in targets:
            try:
                await engine.scan(t, source)
            except AuthError as exc:
                outcomes.append(exc)
    assert len(outcomes) == 5
    assert sim.state.unauthorized == 1  # the first 401 ended all talk with this key


async def test_repeated_bad_keys_block_the_ip_and_a_forbidden_key_is_403() -> None:
    async with simulator(bad_key_limit=2, forbidden_keys="banned-key-1") as sim:
        with pytest.raises(AuthError, match="403"):
            async with create(sim.config(api_key="banned-key-1")):
                pass
        for _ in range(2):
            with pytest.raises(AuthError, match="401"):
                async with create(sim.config(api_key="nope-nope")):
                    pass
        with pytest.raises(AuthError, match="403"):  # now even the good key is refused: IP blocked
            async with create(sim.config()):
                pass
    assert sim.state.requests == 4


async def test_the_key_never_appears_in_outcomes_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with simulator(throttle_limit=1, throttle_window=0.2, fail_uploads=1) as sim:
        source, targets = memory({"a": eicar(), "b": b"clean", "c": b"MD-RESULT-3"})
        async with create(sim.config()) as engine:
            out = await scan_all(engine, source, targets)
            texts = [repr(out), repr(engine), repr(engine.statistics()), repr(engine.config)]
        with pytest.raises(AuthError) as info:
            async with create(sim.config(api_key=KEY[::-1])):
                pass
        texts.append(str(info.value))
    texts.extend(r.getMessage() for r in caplog.records)
    assert any("retry" in t for t in texts)  # the throttle and the 500 were logged...
    for text in texts:
        assert KEY not in text  # ...and the key never was
        assert KEY[::-1] not in text
