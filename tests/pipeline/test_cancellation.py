"""Stopping and cancelling: whole lines only, prompt exit, a drain that is bounded."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import orjson
import pytest

from scanner.pipeline import Pipeline
from scanner.sinks.ndjson import NdjsonSink
from scanner.testing import MemorySink, MemorySource, ScriptedEngine

pytestmark = pytest.mark.anyio


async def test_cancel_mid_run_leaves_only_whole_lines(tmp_path: Path) -> None:
    out = tmp_path / "out.ndjson"
    sink = NdjsonSink(str(out))
    sink.open()
    p = Pipeline([MemorySource(count=1_000_000)], ScriptedEngine(delay=0.0005), sink, max_at_once=64)
    with anyio.move_on_after(0.3):
        await p.run()
    await sink.aclose()
    data = out.read_bytes()
    assert data and data.endswith(b"\n")
    lines = data.splitlines()
    assert all(orjson.loads(line)["verdict"] == "clean" for line in lines)
    assert len(lines) == sink.lines


async def test_stop_drains_jobs_in_flight_and_takes_no_new_ones() -> None:
    engine = ScriptedEngine(delay=0.2)
    sink = MemorySink()
    p = Pipeline([MemorySource(count=10_000)], engine, sink, max_at_once=5, drain_timeout=5)
    async with anyio.create_task_group() as tg:

        async def stop_soon() -> None:
            await anyio.sleep(0.05)
            p.stop()

        tg.start_soon(stop_soon)
        summary = await p.run()
    assert summary.interrupted and summary.exit_code == 2
    assert summary.written == 5 == engine.calls  # the five in flight finished; nothing new started


async def test_drain_timeout_bounds_a_stop() -> None:
    engine = ScriptedEngine(delay=60)
    p = Pipeline([MemorySource(count=100)], engine, MemorySink(), max_at_once=5, drain_timeout=0.2)
    start = time.monotonic()
    async with anyio.create_task_group() as tg:

        async def stop_soon() -> None:
            await anyio.sleep(0.05)
            p.stop()

        tg.start_soon(stop_soon)
        summary = await p.run()
    assert time.monotonic() - start < 2
    assert summary.written == 0 and summary.interrupted


async def test_abort_exits_at_once() -> None:
    p = Pipeline([MemorySource(count=100)], ScriptedEngine(delay=60), MemorySink(), max_at_once=5)
    start = time.monotonic()
    async with anyio.create_task_group() as tg:

        async def abort_soon() -> None:
            await anyio.sleep(0.05)
            p.abort()

        tg.start_soon(abort_soon)
        summary = await p.run()
    assert time.monotonic() - start < 1
    assert summary.interrupted
