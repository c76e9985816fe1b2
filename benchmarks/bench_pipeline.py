"""Pipeline overhead: how many verdicts a second does the machinery move, and is its memory flat?

Question: with a source and an engine that cost nothing (``MemorySource``, ``ScriptedEngine``), how
fast does :class:`scanner.pipeline.Pipeline` turn targets into verdicts on one core, what does
encoding them as NDJSON add, and does peak RSS stay flat as the listing grows from 100,000 to
1,000,000 targets?

Baseline: a bare loop pushing the same number of targets through one anyio memory object stream to
one consumer, on the same event loop (asyncio + uvloop, as the CLI runs): the floor of the machinery.

Goals (issue 2): >= 20,000 verdicts/s on one core; peak RSS(1,000,000) / peak RSS(100,000) <= 1.2.

Each measurement runs in a fresh subprocess pinned to one CPU, so its peak RSS is its own. Rates are
per CPU second of that process (``time.process_time``, all its threads), which a busy shared machine
disturbs far less than wall time; wall seconds are printed too.

Run: ``.venv/bin/python benchmarks/bench_pipeline.py`` (``--count N`` for a quicker look).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

GOAL_RATE = 20_000
GOAL_RSS_RATIO = 1.2
SMALL = 100_000

MODES = ("stream", "pipeline", "ndjson")


@dataclass(frozen=True, slots=True)
class Measure:
    mode: str
    count: int
    seconds: float
    cpu_seconds: float
    peak_rss_kib: int

    @property
    def rate(self) -> float:
        return self.count / self.cpu_seconds


# The measurements, each run in its own child process.


async def _bare_stream(count: int) -> int:
    from scanner.model import Kind, Target

    send, recv = anyio.create_memory_object_stream[Target](16)
    received = 0

    async def produce() -> None:
        async with send:
            for i in range(count):
                await send.send(Target(Kind.FILE, f"mem://{i}"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        async with recv:
            async for _ in recv:
                received += 1
    return received


async def _pipeline(count: int, *, ndjson: bool) -> int:
    from scanner.pipeline import Pipeline
    from scanner.sinks._base import Sink
    from scanner.sinks.ndjson import NdjsonSink
    from scanner.testing import MemorySink, MemorySource, ScriptedEngine

    engine = ScriptedEngine()
    sink: Sink = NdjsonSink(os.devnull) if ndjson else MemorySink(keep=False)
    pipeline = Pipeline([MemorySource(count=count)], engine, sink, max_at_once=engine.default_jobs)
    summary = await pipeline.run()
    await sink.aclose()
    return summary.written


def _runner(mode: str, count: int) -> Callable[[], Awaitable[int]]:
    if mode == "stream":
        return lambda: _bare_stream(count)
    return lambda: _pipeline(count, ndjson=mode == "ndjson")


def _child(mode: str, count: int) -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    run = _runner(mode, count)
    started, cpu_started = time.perf_counter(), time.process_time()
    done = anyio.run(run, backend="asyncio", backend_options={"use_uvloop": _has_uvloop()})
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    if done != count:
        raise SystemExit(f"{mode}: {done} of {count} items came out")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {"mode": mode, "count": count, "seconds": seconds, "cpu": cpu_seconds, "peak_rss_kib": peak}
        )
    )


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


# The parent: one child per measurement, then the report.


def measure(mode: str, count: int) -> Measure:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--count", str(count)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    d = json.loads(out.strip().splitlines()[-1])
    return Measure(d["mode"], d["count"], d["seconds"], d["cpu"], d["peak_rss_kib"])


def report(stream: Measure, pipe: Measure, small: Measure, ndjson: Measure) -> None:
    rss_ratio = pipe.peak_rss_kib / small.peak_rss_kib
    encode_us = (1 / ndjson.rate - 1 / pipe.rate) * 1e6
    print(f"machine: nproc={os.cpu_count()} python={platform.python_version()} uvloop={_has_uvloop()}")
    print(
        f"{'measure':<34} {'count':>10} {'wall s':>7} {'CPU s':>7} {'items/CPU s':>11} {'peak RSS MiB':>12}"
    )
    for label, m in (
        ("baseline: bare anyio stream", stream),
        ("pipeline, no-op engine, no sink", pipe),
        ("pipeline, no-op engine, no sink", small),
        ("pipeline, no-op engine, NdjsonSink", ndjson),
    ):
        print(
            f"{label:<34} {m.count:>10,} {m.seconds:>7.2f} {m.cpu_seconds:>7.2f} {m.rate:>11,.0f} "
            f"{m.peak_rss_kib / 1024:>12.1f}"
        )
    ok = pipe.rate >= GOAL_RATE and rss_ratio <= GOAL_RSS_RATIO
    print(
        f"RESULT bench_pipeline: {pipe.rate:,.0f} verdicts/s = {pipe.rate / stream.rate:.3f}x baseline "
        f"(bare anyio stream {stream.rate:,.0f}/s), {pipe.rate / GOAL_RATE:.2f}x goal {GOAL_RATE:,}/s; "
        f"with NdjsonSink {ndjson.rate:,.0f}/s (+{encode_us:.1f} us/verdict to encode and write); "
        f"peak RSS {pipe.count:,}/{small.count:,} = {rss_ratio:.2f} (goal <= {GOAL_RSS_RATIO}) "
        f"-> {'PASS' if ok else 'MISS'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="targets in the large runs")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.count)
        return
    stream = measure("stream", args.count)
    small = measure("pipeline", min(SMALL, args.count))
    pipe = measure("pipeline", args.count)
    ndjson = measure("ndjson", args.count)
    report(stream, pipe, small, ndjson)


if __name__ == "__main__":
    main()
