"""The batch lane: an engine with ``scan_batch`` gets many targets per call, each still one line."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest

from scanner.errors import AuthError, QuotaExhausted
from scanner.model import ErrorInfo, Kind, Outcome, Status, Target
from scanner.pipeline import Pipeline
from scanner.testing import BatchScriptedEngine, MemorySink, MemorySource

pytestmark = pytest.mark.anyio


async def run(
    source: MemorySource, engine: BatchScriptedEngine, *, jobs: int = 32
) -> tuple[MemorySink, Pipeline]:
    sink = MemorySink()
    p = Pipeline([source], engine, sink, max_at_once=jobs)
    await p.run()
    return sink, p


async def test_batches_carry_every_target_once_and_never_exceed_the_batch_size() -> None:
    engine = BatchScriptedEngine(batch_size=16)
    sink, p = await run(MemorySource(count=5000), engine, jobs=64)
    assert Counter(v.target.target for v in sink.verdicts) == {f"mem://{i}": 1 for i in range(5000)}
    assert sum(engine.batches) == 5000
    assert max(engine.batches) <= 16
    assert len(engine.batches) < 5000  # batched, not one call per target
    assert p.statistics().listing_done


@pytest.mark.parametrize(("batch", "bound"), [(8, 24), (8, 20), (64, 5)])
async def test_jobs_in_flight_stay_within_the_bound(batch: int, bound: int) -> None:
    engine = BatchScriptedEngine(batch_size=batch, delay=0.001)
    sink = MemorySink()
    p = Pipeline([MemorySource(count=2000)], engine, sink, max_at_once=bound)
    peak = 0
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, p.statistics().in_flight)
                await anyio.sleep(0)

        tg.start_soon(watch)
        await p.run()
        tg.cancel_scope.cancel()
    assert sink.count == 2000
    assert 0 < peak <= bound
    assert max(engine.batches) <= min(batch, bound)


async def test_a_batch_call_that_raises_gives_every_target_of_it_an_error_line() -> None:
    engine = BatchScriptedEngine()
    engine.fail_batch = RuntimeError("the whole call broke")
    sink, _ = await run(MemorySource(count=50), engine)
    assert len(sink.verdicts) == 50
    assert {v.status for v in sink.verdicts} == {Status.ERROR}
    assert {v.error.code for v in sink.verdicts} == {"internal"}  # type: ignore[union-attr]


async def test_targets_decided_before_the_engine_never_reach_it() -> None:
    targets = [
        Target(Kind.FILE, "/broken", error=ErrorInfo("cannot list directory", "unreadable_dir")),
        Target(Kind.FILE, "/big", size=10_000),
        Target(Kind.FILE, "/ok", size=10),
    ]
    engine = BatchScriptedEngine(accepts=frozenset({Kind.FILE}), max_size=1000)
    source = MemorySource(targets)
    source.kinds = frozenset({Kind.FILE})  # a source of files: the batch lane's
    sink, _ = await run(source, engine)
    by = {v.target.target: v for v in sink.verdicts}
    assert by["/broken"].status is Status.ERROR
    assert by["/big"].status is Status.UNSCANNABLE
    assert by["/ok"].status is Status.CLEAN
    assert sum(engine.batches) == 1  # only /ok was scanned


async def test_quota_in_a_batch_skips_the_rest_and_auth_halts_the_run() -> None:
    def quota(t: Target) -> Outcome:
        if t.target == "mem://5":
            raise QuotaExhausted("quota spent")
        return Outcome(Status.CLEAN)

    sink, _ = await run(MemorySource(count=200), BatchScriptedEngine(quota, batch_size=4), jobs=4)
    statuses = Counter(v.status for v in sink.verdicts)
    assert sum(statuses.values()) == 200
    assert statuses[Status.SKIPPED] >= 1
    assert all(v.error.code == "quota_exhausted" for v in sink.verdicts if v.status is Status.SKIPPED)  # type: ignore[union-attr]

    def auth(t: Target) -> Outcome:
        raise AuthError("bad key")

    with pytest.raises(AuthError):
        await run(MemorySource(count=100), BatchScriptedEngine(auth))


async def test_a_slow_download_holds_back_no_other_line() -> None:
    # A batch waits for its slowest target: with URLs (or S3 objects) in it, one slow download
    # held back every line of its batch. Sources of anything but files get a coroutine a target.
    slow = anyio.Event()

    async def script(t: Target) -> Outcome:
        if t.target == "mem://0":
            await slow.wait()
        return Outcome(Status.CLEAN)

    engine = BatchScriptedEngine(script, batch_size=16)
    sink = MemorySink()
    p = Pipeline([MemorySource(count=40, kind=Kind.URL)], engine, sink, max_at_once=32)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        with anyio.fail_after(10):
            while len(sink.verdicts) < 39:  # every line but the slow one's, while it is still slow
                await anyio.sleep(0.01)
        slow.set()
    assert len(sink.verdicts) == 40 and engine.batches == []
