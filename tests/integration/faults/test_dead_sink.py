"""A sink that dies mid-run (disk full, reader gone) halts the run with its own error, whatever the
jobs in flight are doing at that moment. The same fault end to end is in test_local_faults.py."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from scanner.errors import SinkError
from scanner.model import Outcome, Status, Target, Verdict
from scanner.pipeline import Pipeline
from scanner.testing import MemorySource, ScriptedEngine

pytestmark = pytest.mark.anyio


class DeadSink:
    """A sink whose first write fails (the disk filled up); it wakes every waiting job as it dies."""

    name = "dead"

    def __init__(self, wake: anyio.Event) -> None:
        self._wake = wake

    async def write(self, verdicts: Sequence[Verdict], /) -> None:
        self._wake.set()
        raise SinkError("no space left on the device holding out.ndjson")

    async def aclose(self) -> None:
        return None

    async def abort(self) -> None:
        return None


async def test_a_dead_sink_halts_the_pipeline_with_its_own_error() -> None:
    """Jobs that finish in the same loop turn as the sink dies still try to hand their line over; the
    run must end with the sink's error, not an ExceptionGroup of broken streams."""
    wake = anyio.Event()

    async def script(target: Target) -> Outcome:
        if target.target != "mem://0":
            await wake.wait()
        return Outcome(Status.CLEAN)

    pipeline = Pipeline([MemorySource(count=100)], ScriptedEngine(script), DeadSink(wake), max_at_once=8)
    with anyio.fail_after(10), pytest.raises(SinkError, match="no space left"):
        await pipeline.run()
