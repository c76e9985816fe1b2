"""The pipeline with in-memory fakes: ordering of concerns, failure isolation, halting, backpressure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import anyio
import pytest

from scanner.errors import AuthError, QuotaExhausted, SourceError, TargetError
from scanner.model import ErrorInfo, Kind, Outcome, Status, Target
from scanner.pipeline import Pipeline
from scanner.testing import BatchScriptedEngine, MemorySink, MemorySource, ScriptedEngine

pytestmark = pytest.mark.anyio


async def run(source: MemorySource, engine: ScriptedEngine, *, jobs: int = 8) -> tuple[MemorySink, Pipeline]:
    sink = MemorySink()
    p = Pipeline([source], engine, sink, max_at_once=jobs)
    await p.run()
    return sink, p


async def test_every_target_gets_exactly_one_line() -> None:
    sink, p = await run(MemorySource(count=5000), ScriptedEngine())
    assert Counter(v.target.target for v in sink.verdicts) == {f"mem://{i}": 1 for i in range(5000)}
    assert p.statistics().listing_done


@pytest.mark.parametrize("engine_type", [ScriptedEngine, BatchScriptedEngine])
async def test_engine_raising_on_one_target_loses_no_other(engine_type: type[ScriptedEngine]) -> None:
    def script(t: Target) -> Outcome:
        if t.target == "mem://3":
            error = TargetError("vanished", code="vanished")
            error.attempts = 3  # as an engine says how many tries it took to fail
            raise error
        if t.target == "mem://7":
            raise RuntimeError("adapter bug")
        return Outcome(Status.CLEAN)

    sink, _ = await run(MemorySource(count=20), engine_type(script))
    by_target = {v.target.target: v for v in sink.verdicts}
    assert len(by_target) == 20
    assert by_target["mem://3"].status is Status.ERROR and by_target["mem://3"].error.code == "vanished"  # type: ignore[union-attr]
    assert by_target["mem://3"].attempts == 3 and by_target["mem://7"].attempts == 1
    assert by_target["mem://7"].status is Status.ERROR and by_target["mem://7"].error.code == "internal"  # type: ignore[union-attr]
    assert sum(v.status is Status.CLEAN for v in sink.verdicts) == 18


async def test_backpressure_source_never_runs_ahead_of_the_bound() -> None:
    source = MemorySource(count=100_000)
    engine = ScriptedEngine(delay=0.01)
    sink = MemorySink()
    p = Pipeline([source], engine, sink, max_at_once=4, buffer=8)
    peak_gap = 0
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal peak_gap
            while True:
                peak_gap = max(peak_gap, source.pulled - sink.count)
                await anyio.sleep(0.001)

        tg.start_soon(watch)
        with anyio.move_on_after(0.5):
            await p.run()
        tg.cancel_scope.cancel()
    assert engine.peak_in_flight <= 4
    # pulled but not written: at most the jobs in flight, the target buffer, the verdict buffer and
    # the one item each hand-off holds
    assert 0 < peak_gap <= 4 + 8 + 4 + 3
    assert source.pulled < 1000


async def test_quota_exhausted_skips_every_remaining_target() -> None:
    def script(t: Target) -> Outcome:
        if int(t.target.split("//")[1]) >= 10:
            raise QuotaExhausted("prevention_api quota spent; resets in 5h")
        return Outcome(Status.CLEAN)

    sink = MemorySink()
    p = Pipeline([MemorySource(count=200)], ScriptedEngine(script), sink, max_at_once=1)
    summary = await p.run()
    assert summary.written == 200
    statuses = Counter(v.status for v in sink.verdicts)
    assert statuses == {Status.CLEAN: 10, Status.SKIPPED: 190}
    assert {v.error.code for v in sink.verdicts if v.error} == {"quota_exhausted"}
    assert summary.exit_code == 2 and summary.halted is not None


async def test_auth_error_halts_the_run_and_is_raised() -> None:
    def script(t: Target) -> Outcome:
        raise AuthError("401 from vendor: invalid api key")

    engine = ScriptedEngine(script)
    p = Pipeline([MemorySource(count=10_000)], engine, MemorySink(), max_at_once=4)
    with pytest.raises(AuthError):
        await p.run()
    assert engine.calls <= 4  # at most one request per job in flight, never a retry storm


async def test_unsupported_kind_and_size_and_listing_errors_are_lines() -> None:
    targets = [
        Target(Kind.SITE, "example.com"),
        Target(Kind.FILE, "/big", size=11),
        Target(Kind.FILE, "/dir", error=ErrorInfo("cannot list directory", "unreadable_dir")),
        Target(Kind.FILE, "/fine", size=10),
    ]
    engine = ScriptedEngine(accepts=frozenset({Kind.FILE}), max_size=10)
    sink, _ = await run(MemorySource(targets), engine)
    got = {v.target.target: (v.status, v.error.code if v.error else None) for v in sink.verdicts}
    assert got == {
        "example.com": (Status.SKIPPED, "unsupported_kind"),
        "/big": (Status.UNSCANNABLE, "too_large"),
        "/dir": (Status.ERROR, "unreadable_dir"),
        "/fine": (Status.CLEAN, None),
    }
    assert engine.calls == 1


async def test_check_rejects_a_run_that_can_never_work() -> None:
    engine = ScriptedEngine(accepts=frozenset({Kind.FILE}))
    p = Pipeline([MemorySource(count=1, kind=Kind.SITE)], engine, MemorySink(), max_at_once=1)
    with pytest.raises(SourceError, match="cannot scan site targets"):
        p.check()


async def test_admission_answers_drops_or_passes_in_batches() -> None:
    batches: list[int] = []

    async def admit(
        targets: Sequence[Target],
    ) -> tuple[list[tuple[Target, Outcome | None]], Mapping[str, int]]:
        batches.append(len(targets))
        kept: list[tuple[Target, Outcome | None]] = []
        dropped = 0
        for t in targets:
            n = int(t.target.split("//")[1])
            if n % 3 == 0:
                kept.append((t, Outcome(Status.CLEAN, cached=True)))
            elif n % 3 == 1:
                dropped += 1
            else:
                kept.append((t, None))
        return kept, {"unchanged": dropped}

    engine = ScriptedEngine()
    sink = MemorySink()
    summary = await Pipeline([MemorySource(count=3000)], engine, sink, max_at_once=2, admit=admit).run()
    assert engine.calls == 1000
    assert summary.written == 2000 and summary.dropped == {"unchanged": 1000}
    assert summary.listed == 3000
    assert sum(v.cached for v in sink.verdicts) == 1000
    assert max(batches) > 1  # targets reach admission in batches, not one by one


async def test_source_failing_mid_listing_finishes_started_jobs_and_exits_2() -> None:
    class Failing(MemorySource):
        async def targets(self):  # type: ignore[no-untyped-def,override]
            for i in range(5):
                yield Target(Kind.FILE, f"mem://{i}")
            raise SourceError("stdin line 6: not valid JSON")

    sink = MemorySink()
    summary = await Pipeline([Failing()], ScriptedEngine(delay=0.01), sink, max_at_once=8).run()
    assert summary.written == 5
    assert summary.source_errors == ("stdin line 6: not valid JSON",)
    assert summary.exit_code == 2


async def test_sink_failure_stops_the_run() -> None:
    from scanner.errors import SinkError

    class Broken(MemorySink):
        async def write(self, verdicts):  # type: ignore[no-untyped-def,override]
            raise SinkError("no space left on the device holding out.ndjson")

    engine = ScriptedEngine()
    with pytest.raises(SinkError):
        await Pipeline([MemorySource(count=100_000)], engine, Broken(), max_at_once=4).run()
    assert engine.calls < 100_000
