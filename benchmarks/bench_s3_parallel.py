"""Parallel listing: how much does fanning the listing out over prefixes gain on a real round trip?

Question: wall time of ``S3Source(s3://bench).targets()`` with 16 listing tasks (the default: one
delimiter listing, then each of the 32 top-level prefixes listed by one of 16 tasks, all merged into
one bounded stream) on 80,000 keys under 32 prefixes, every request delayed 30 ms (a real S3 round
trip for a ListObjectsV2 page).

Baseline: the same source listing sequentially (``list_concurrency = 1``, one page after another, in
key order), same server, same run.

Also shown (no goal): a flat key space of 80,000 hex-named keys at the root, where the parallel
listing reads the first page and then lists 62 start-after ranges (cut at the next character).

Goal (issue 3): >= 3x.

Run: ``.venv/bin/python benchmarks/bench_s3_parallel.py``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3_stub import bench_env, spawn

from scanner.sources import SourceOptions, build

GOAL = 3.0
PREFIXES = 32
KEYS = 80_000
LATENCY_MS = 30


async def listing(concurrency: int) -> tuple[int, int]:
    src = build("s3://bench", SourceOptions(s3={"list_concurrency": concurrency}))
    n = 0
    try:
        async for _ in src.targets():
            n += 1
    finally:
        await src.aclose()
    return n, src.pages  # type: ignore[attr-defined]


def measure(name: str, concurrency: int) -> float:
    wall = time.perf_counter()
    n, pages = anyio.run(listing, concurrency, backend_options={"use_uvloop": True})
    wall = time.perf_counter() - wall
    assert n == KEYS, (name, n)
    print(f"{name:<40} wall {wall:6.2f}s  {KEYS / wall:>9,.0f} keys/s  {pages} requests")
    return wall


def main() -> None:
    args = ("--keys", str(KEYS), "--prefixes", str(PREFIXES), "--latency-ms", str(LATENCY_MS))
    with spawn(*args) as endpoint:
        bench_env(endpoint)
        seq = measure("sequential listing (baseline)", 1)
        par = measure("parallel listing, 16 tasks", 16)
    with spawn(*args, "--flat") as endpoint:
        bench_env(endpoint)
        flat_seq = measure("flat keys: sequential listing", 1)
        flat_par = measure("flat keys: parallel listing, 16 tasks", 16)
    print(f"ratio flat keys, parallel / sequential: {flat_seq / flat_par:.1f}x (no goal)")
    print(f"ratio parallel / sequential at {LATENCY_MS} ms a request: {seq / par:.1f}x (goal >= {GOAL:.0f}x)")
    sys.exit(0 if seq / par >= GOAL else 1)


if __name__ == "__main__":
    main()
