"""S3 memory: is listing flat in the bucket size, and does a 2 GB object stream in a few MB?

Question 1: peak RSS of a process listing 1,000,000 keys through ``S3Source`` (16 listing tasks,
targets consumed and dropped as the pipeline would), against the same process listing 100,000 keys.
Goal (issue 3): ratio <= 1.2.

Question 2: peak RSS of a process streaming one 2 GiB object through ``S3Source.open`` and
``Body.chunks()`` (1 MiB chunks, sha256 on the way). Goal (issue 3): < 200 MB.

Each measurement runs in a fresh child process (``ru_maxrss``), against ``benchmarks/s3_stub.py``
in its own process. The 100,000-key run is the named baseline of question 1.

Run: ``.venv/bin/python benchmarks/bench_s3_memory.py``
"""

from __future__ import annotations

import hashlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3_stub import bench_env, spawn

from scanner.sources import SourceOptions, build

RSS_RATIO_GOAL = 1.2
STREAM_GOAL_MB = 200
BIG = 2 << 30


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def child_list() -> dict[str, float]:
    src = build("s3://bench", SourceOptions())
    n = 0
    try:
        async for _ in src.targets():
            n += 1
    finally:
        await src.aclose()
    return {"keys": n}


async def child_stream() -> dict[str, float]:
    src = build("s3://bench", SourceOptions())
    h = hashlib.sha256()
    n = 0
    try:
        [target] = [t async for t in src.targets()]
        async with src.open(target) as body:
            async for chunk in body.chunks(1 << 20):
                h.update(chunk)
                n += len(chunk)
    finally:
        await src.aclose()
    return {"bytes": n}


def child(kind: str, endpoint: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, endpoint], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        bench_env(sys.argv[3])
        started = time.perf_counter()
        result = anyio.run(
            child_list if sys.argv[2] == "list" else child_stream, backend_options={"use_uvloop": True}
        )
        result.update(seconds=time.perf_counter() - started, rss_mb=peak_rss_mb())
        print(json.dumps(result))
        return
    rss = {}
    for keys in (100_000, 1_000_000):
        with spawn("--keys", str(keys), "--prefixes", "100", "--object-size", "1024") as endpoint:
            r = child("list", endpoint)
        assert r["keys"] == keys, r
        rss[keys] = r["rss_mb"]
        print(f"listing {keys:>9,} keys: peak RSS {r['rss_mb']:6.1f} MB in {r['seconds']:5.1f}s")
    ratio = rss[1_000_000] / rss[100_000]
    print(f"ratio peak RSS 1M keys / 100k keys (baseline): {ratio:.2f} (goal <= {RSS_RATIO_GOAL})")
    with spawn("--keys", "0", "--prefixes", "1", "--big-size", str(BIG)) as endpoint:
        r = child("stream", endpoint)
    assert r["bytes"] == BIG, r
    rate = BIG / r["seconds"] / 1e6
    print(f"streaming one {BIG >> 30} GiB object: peak RSS {r['rss_mb']:6.1f} MB ({rate:,.0f} MB/s)")
    print(f"ratio peak RSS streaming 2 GiB / listing 100k keys: {r['rss_mb'] / rss[100_000]:.2f}")
    ok = ratio <= RSS_RATIO_GOAL and r["rss_mb"] < STREAM_GOAL_MB
    print(f"stream peak RSS {r['rss_mb']:.0f} MB (goal < {STREAM_GOAL_MB} MB)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
