"""Small GETs: how many 10 KB objects/s does the S3 source read, against plain aioboto3 get_object?

Question: objects/s of ``S3Source.open(target)`` + reading the body (a SigV4-signed GET over the
aiohttp pool, ``If-Match`` on the listed ETag), 64 objects in flight, 6,000 objects of 10 KB.

Baseline: ``aioboto3`` ``get_object`` + ``Body.read()``, the same 64 in flight (one client,
``max_pool_connections = 64``), same keys, same run.

Server: ``benchmarks/s3_stub.py`` in its own process, no latency. Both sides take their targets from
the same in-memory list (the listing is not timed).

Goal (issue 3): >= 2x.

Run: ``.venv/bin/python benchmarks/bench_s3_get.py``
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3_stub import bench_env, spawn

from scanner.model import Target
from scanner.sources import SourceOptions, build

GOAL = 2.0
OBJECTS = 6_000
SIZE = 10 * 1024
IN_FLIGHT = 64
RUNS = 2


async def list_targets() -> list[Target]:
    src = build("s3://bench", SourceOptions())
    try:
        return [t async for t in src.targets()]
    finally:
        await src.aclose()


async def in_flight(targets: list[Target], fetch: Callable[[Target], Awaitable[int]]) -> int:
    """Run ``fetch`` over every target, IN_FLIGHT at a time (workers pull from a shared iterator)."""
    total = 0
    it = iter(targets)

    async def worker() -> None:
        nonlocal total
        for t in it:
            n = await fetch(t)
            total += n

    async with anyio.create_task_group() as tg:
        for _ in range(IN_FLIGHT):
            tg.start_soon(worker)
    return total


async def aioboto3_get(targets: list[Target]) -> int:
    import aioboto3
    from botocore.config import Config

    async with aioboto3.Session().client("s3", config=Config(max_pool_connections=IN_FLIGHT)) as client:

        async def fetch(t: Target) -> int:
            answer = await client.get_object(Bucket=t.bucket, Key=t.key)
            async with answer["Body"] as body:
                return len(await body.read())

        return await in_flight(targets, fetch)


async def s3_source_get(targets: list[Target]) -> int:
    src = build("s3://bench", SourceOptions(s3={"max_connections": IN_FLIGHT}))
    try:

        async def fetch(t: Target) -> int:
            n = 0
            async with src.open(t) as body:
                async for chunk in body.chunks():
                    n += len(chunk)
            return n

        return await in_flight(targets, fetch)
    finally:
        await src.aclose()


def measure(name: str, fn: Callable[[list[Target]], Awaitable[int]], targets: list[Target]) -> float:
    best = None
    for _ in range(RUNS):
        wall, cpu = time.perf_counter(), time.process_time()
        n = anyio.run(fn, targets, backend_options={"use_uvloop": True})
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert n == OBJECTS * SIZE, (name, n)
        if best is None or wall < best[0]:
            best = (wall, cpu)
    assert best is not None
    wall, cpu = best
    rate, per = OBJECTS / wall, cpu / OBJECTS * 1e3
    print(f"{name:<34} {rate:>8,.0f} objects/s  wall {wall:6.2f}s  cpu {cpu:6.2f}s  {per:5.2f} ms/object")
    return rate


def main() -> None:
    with spawn("--keys", str(OBJECTS), "--prefixes", "6", "--object-size", str(SIZE)) as endpoint:
        bench_env(endpoint)
        targets = anyio.run(list_targets)
        assert len(targets) == OBJECTS
        base = measure("aioboto3 get_object (baseline)", aioboto3_get, targets)
        ours = measure("S3Source.open + chunks", s3_source_get, targets)
    ratio = ours / base
    print(f"ratio S3Source / aioboto3 get_object, {IN_FLIGHT} in flight: {ratio:.1f}x (goal >= {GOAL:.0f}x)")
    sys.exit(0 if ours / base >= GOAL else 1)


if __name__ == "__main__":
    main()
