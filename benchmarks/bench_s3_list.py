"""S3 listing CPU: how many keys/s does the S3 source list, against a plain aioboto3 paginator?

Question: keys/s of ``S3Source(s3://bench).targets()`` (signed GETs over aiohttp, regex page parser,
Target objects) listing 200,000 keys sequentially (``list_concurrency = 1``: the same requests, one
after another, as the paginator makes), and also fanned out over 16 listing tasks.

Baseline: ``aioboto3`` ``list_objects_v2`` paginator, PageSize 1000, every key touched, same run.

Server: ``benchmarks/s3_stub.py`` in its own process (no latency), so the client's own cost is what
is measured. Wall time and this process's CPU time are both shown; the ratio is of keys/s.

Goal (issue 3): >= 3x.

The baseline runs once (about 50 s); the S3 source twice, best run counted.

Run: ``.venv/bin/python benchmarks/bench_s3_list.py``
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3_stub import bench_env, spawn

from scanner.sources import SourceOptions, build

GOAL = 3.0
KEYS = 200_000
RUNS = 2


async def aioboto3_paginator() -> int:
    import aioboto3

    n = 0
    async with aioboto3.Session().client("s3") as client:
        async for page in client.get_paginator("list_objects_v2").paginate(
            Bucket="bench", PaginationConfig={"PageSize": 1000}
        ):
            for obj in page.get("Contents", ()):
                n += obj["Size"] >= 0
    return n


def s3_source(concurrency: int) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        src = build("s3://bench", SourceOptions(s3={"list_concurrency": concurrency}))
        n = 0
        try:
            async for t in src.targets():
                n += t.size is not None
        finally:
            await src.aclose()
        return n

    return run


def measure(name: str, fn: Callable[[], Awaitable[int]], runs: int = RUNS) -> float:
    best = None
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        n = anyio.run(fn, backend_options={"use_uvloop": True})
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert n == KEYS, (name, n)
        if best is None or wall < best[0]:
            best = (wall, cpu)
    assert best is not None
    wall, cpu = best
    rate, per_key = KEYS / wall, cpu / KEYS * 1e6
    print(f"{name:<34} {rate:>10,.0f} keys/s  wall {wall:6.2f}s  cpu {cpu:6.2f}s  {per_key:6.1f} us/key")
    return KEYS / wall


def main() -> None:
    with spawn("--keys", str(KEYS), "--prefixes", "20") as endpoint:
        bench_env(endpoint)
        base = measure("aioboto3 paginator (baseline)", aioboto3_paginator, runs=1)  # ~50 s a run
        seq = measure("S3Source, sequential", s3_source(1))
        par = measure("S3Source, 16 listing tasks", s3_source(16))
    print(f"ratio sequential / aioboto3 paginator: {seq / base:.1f}x (goal >= {GOAL:.0f}x)")
    print(f"ratio parallel / aioboto3 paginator:   {par / base:.1f}x")
    sys.exit(0 if seq / base >= GOAL else 1)


if __name__ == "__main__":
    main()
