"""Walk: how fast does the local directory source list a large tree?

Question: files/s of the local directory source as the pipeline pulls it, ``LocalSource(DIR).batches()``
(lists of Target objects, one thread hop per list), on a tree of 200,000 small files, warm cache.
``LocalSource(DIR).targets()`` (one async-generator step per file, what other callers use) is
measured alongside as a diagnostic.

Baseline: ``find DIR -type f`` as a subprocess in the same run, its output piped and counted.

Goal (issue 2): >= 0.5x find.

Three rounds, each running both sides once; the best run of each counts (the first round warms the
cache). The tree is built once under ``benchmarks/.work/`` (gitignored) and reused.

Run: ``.venv/bin/python benchmarks/bench_walk.py``
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from scanner.sources.local import LocalSource

GOAL = 0.5
DIRS = (20, 10)  # 20 x 10 directories ...
PER_DIR = 1_000  # ... of 1,000 files each
FILES = DIRS[0] * DIRS[1] * PER_DIR
WORK = Path(__file__).resolve().parent / ".work"
TREE = WORK / "walk-200k"
DONE = WORK / "walk-200k.done"
RUNS = 3


def build_tree() -> None:
    """Create the tree unless a complete one is already there (a marker is written last)."""
    if DONE.exists():
        return
    for a in range(DIRS[0]):
        for b in range(DIRS[1]):
            d = TREE / f"d{a:02}" / f"e{b:02}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(PER_DIR):
                (d / f"f{i:04}.txt").write_bytes(b"small file %d\n" % i)
    DONE.write_text(f"{FILES}\n")


def time_find() -> tuple[float, int]:
    started = time.perf_counter()
    out = subprocess.run(["find", str(TREE), "-type", "f"], check=True, capture_output=True).stdout
    return time.perf_counter() - started, out.count(b"\n")


async def _walk_batches() -> int:
    n = 0
    async for batch in LocalSource(str(TREE)).batches():
        n += len(batch)
    return n


async def _walk_targets() -> int:
    n = 0
    async for _ in LocalSource(str(TREE)).targets():
        n += 1
    return n


def time_source() -> tuple[float, int]:
    started = time.perf_counter()
    n = anyio.run(_walk_batches, backend="asyncio", backend_options={"use_uvloop": True})
    return time.perf_counter() - started, n


def time_targets() -> tuple[float, int]:
    started = time.perf_counter()
    n = anyio.run(_walk_targets, backend="asyncio", backend_options={"use_uvloop": True})
    return time.perf_counter() - started, n


def best_of_rounds() -> tuple[float, float, float]:
    """Best seconds of (find, batches, targets) over RUNS rounds, each round running each once."""
    sides: tuple[Callable[[], tuple[float, int]], ...] = (time_find, time_source, time_targets)
    best = [float("inf")] * len(sides)
    for _ in range(RUNS):
        for i, side in enumerate(sides):
            seconds, n = side()
            if n != FILES:
                raise SystemExit(f"{side.__name__}: saw {n} files, expected {FILES}")
            best[i] = min(best[i], seconds)
    return best[0], best[1], best[2]


def main() -> None:
    started = time.perf_counter()
    build_tree()
    print(f"tree: {FILES:,} files under {TREE} (ready in {time.perf_counter() - started:.1f}s)")
    find_s, source_s, targets_s = best_of_rounds()
    find_rate, source_rate = FILES / find_s, FILES / source_s
    ratio = source_rate / find_rate
    print(f"machine: nproc={os.cpu_count()} python={platform.python_version()}")
    print(f"{'measure':<32} {'seconds':>8} {'files/s':>11}")
    print(f"{'baseline: find DIR -type f':<32} {find_s:>8.3f} {find_rate:>11,.0f}")
    print(f"{'LocalSource(DIR).batches()':<32} {source_s:>8.3f} {source_rate:>11,.0f}")
    print(f"{'LocalSource(DIR).targets()':<32} {targets_s:>8.3f} {FILES / targets_s:>11,.0f}  (diagnostic)")
    print(
        f"RESULT bench_walk: {source_rate:,.0f} files/s = {ratio:.2f}x baseline "
        f"(find -type f {find_rate:,.0f} files/s), goal >= {GOAL}x -> {'PASS' if ratio >= GOAL else 'MISS'}"
    )


if __name__ == "__main__":
    main()
