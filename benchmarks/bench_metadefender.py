"""MetaDefender: does the engine spend the quota fully and carefully, and does it keep pace?

Questions (issue 4), all answered in one run against the simulator over 127.0.0.1, through the real
pipeline (:class:`scanner.pipeline.Pipeline`) and the real engine:

1. **Quota efficiency.** The simulator allows L uploads per interval; the run has more new content
   than one interval can take, so the engine must hold at Remaining 0 and resume after each reset.
   Ratio: uploads in each finished window / L (goal >= 0.95) with zero 429s, and
   uploads / unique contents (goal 1.0) with duplicates in the listing.
2. **Pace.** With 200 ms added to every answer and no quota in the way, verdicts/s against the
   Little's-law limit: C jobs in flight, each needing k sequential round trips of 200 ms, can finish
   at most C / (k x 0.2 s) targets a second. k = 1 for content the vendor knows (one bulk lookup),
   k = 3 for new content (lookup, upload, one poll). Goal: measured / limit >= 0.9.

Baseline: the limits themselves (L per window; C / latency), measured in the same run.

The pace ratio is the whole run's verdicts over its wall time, so it carries what any finite run
pays: the slow-start probe before the first upload (the upload budget is unknown until an answer
names it) and the tail, when fewer than C targets are left. Two figures, printed for reading the
ratio and not part of the goal, separate those and the box from the engine: the pace over the middle
half of the verdicts (steady state), and, for new content, a bare aiohttp client that makes the same
three requests per target, C at a time, against the same simulator (what this machine allows at
that moment: on 2 shared cores the simulator and the client compete for CPU).

Run: ``.venv/bin/python benchmarks/bench_metadefender.py`` (``--quick`` for a smaller run).
"""

from __future__ import annotations

import argparse
import hashlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio

from scanner.config import validate_section
from scanner.engines.metadefender import Config, MetaDefenderEngine
from scanner.model import Kind, Status, Target
from scanner.pipeline import Pipeline
from scanner.testing import MemorySink, MemorySource

KEY = "bench-key-0123456789"


@dataclass
class Sim:
    url: str

    async def stats(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/_sim/stats") as resp:
            result: dict[str, Any] = await resp.json()
            return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serve(**options: Any) -> AsyncIterator[Sim]:
    """``scanner simulate metadefender`` in its own process, as a remote server would be: its work
    neither competes with the client's event loop nor shares its GIL."""
    port = _free_port()
    argv = [sys.executable, "-m", "scanner", "simulate", "metadefender", "--port", str(port)]
    for name, value in {"api_keys": KEY, **options}.items():
        argv += ["--set", f"{name}={value}"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sim = Sim(f"http://127.0.0.1:{port}")
    try:
        with anyio.fail_after(30):
            while True:
                try:
                    await sim.stats()
                    break
                except aiohttp.ClientError:
                    await anyio.sleep(0.05)
        yield sim
    finally:
        proc.terminate()
        await anyio.to_thread.run_sync(proc.wait)


def config(url: str, **overrides: Any) -> Config:
    values: dict[str, Any] = {"base_url": url, "api_key": KEY, **overrides}
    return validate_section(Config, values, "engines.metadefender")


async def run_pipeline(
    engine_config: Config, bodies: dict[str, bytes], jobs: int
) -> tuple[float, MemorySink]:
    targets = [Target(Kind.FILE, name) for name in bodies]
    source = MemorySource(targets, bodies=bodies)
    sink = MemorySink()
    async with MetaDefenderEngine(engine_config) as engine:
        pipeline = Pipeline([source], engine, sink, max_at_once=jobs)
        start = time.perf_counter()
        await pipeline.run()
        elapsed = time.perf_counter() - start
    return elapsed, sink


async def quota(limit: int, interval: float, windows: float) -> dict[str, float]:
    unique = int(limit * windows)
    contents = [f"unique content {i}".encode() for i in range(unique)]
    # a quarter more targets than contents: copies spread through the listing
    bodies = {f"t{i:05d}": contents[i % unique] for i in range(unique + unique // 4)}
    async with serve(prevention_limit=limit, interval=interval) as sim:
        cfg = config(sim.url, max_quota_wait=interval * 2, poll_initial=0.05, poll_max=0.5, hash_linger=0.02)
        elapsed, sink = await run_pipeline(cfg, bodies, jobs=32)
        st = await sim.stats()
    closed = list(st["closed"].get("prevention_api", []))
    full = closed[: int(windows)]  # windows that had more work waiting than they could take
    statuses = {v.status for v in sink.verdicts}
    assert statuses == {Status.CLEAN}, statuses
    return {
        "targets": len(bodies),
        "unique": unique,
        "uploads": st["uploads"],
        "windows": len(closed) + 1,
        "per_window": sum(full) / len(full) if full else 0.0,
        "window_ratio": (sum(full) / len(full)) / limit if full else 0.0,
        "dedupe_ratio": st["uploads"] / unique,
        "quota_429": st["quota_429"],
        "throttle_429": st["throttle_429"],
        "elapsed": elapsed,
        # the run needs (windows - 1) full intervals of waiting; what is left is time lost resuming
        "lag": elapsed - len(closed) * interval,
    }


async def bare_client(url: str, jobs: int, per_job: int) -> tuple[float, float]:
    """Targets/s (whole run, middle half) of a client with no engine and no pipeline: ``jobs`` tasks,
    each looking up, uploading and polling ``per_job`` new contents in turn (one hash per lookup)."""
    headers = {"apikey": KEY}
    ends: list[float] = []
    connector = aiohttp.TCPConnector(limit=jobs, limit_per_host=jobs)
    async with aiohttp.ClientSession(url, connector=connector, headers=headers) as session:

        async def job(j: int) -> None:
            for i in range(per_job):
                body = f"bare client content {j} {i} {time.time_ns()}".encode()
                lookup = {"hash": [hashlib.sha256(body).hexdigest()]}
                async with session.post("/v4/hash", json=lookup) as resp:
                    assert resp.status == 200, resp.status
                    await resp.read()
                octets = {"Content-Type": "application/octet-stream", "filename": "x"}
                async with session.post("/v4/file", data=body, headers=octets) as resp:
                    data_id = (await resp.json())["data_id"]
                async with session.get(f"/v4/file/{data_id}") as resp:
                    assert (await resp.json())["scan_results"]["progress_percentage"] == 100
                ends.append(time.time())

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for j in range(jobs):
                tg.start_soon(job, j)
        return jobs * per_job / (time.perf_counter() - start), steady_rate(ends)


def steady_rate(ends: list[float]) -> float:
    """Completions/s between the first and the third quarter of the completions."""
    ends = sorted(ends)
    a, b = len(ends) // 4, 3 * len(ends) // 4
    return (b - a) / (ends[b] - ends[a])


async def pace(jobs: int, count: int, latency: float, known: bool, linger: float) -> dict[str, float]:
    bodies = {f"p{i:06d}": f"pace content {i} {known}".encode() for i in range(count)}
    async with serve(latency=latency, prevention_limit=10**9, reputation_limit=10**9) as sim:
        cfg = config(sim.url, connections=jobs, jobs=jobs, poll_initial=0.0, hash_linger=linger)
        if known:
            await run_pipeline(cfg, bodies, jobs=jobs)  # a first run makes every content known
        before = await sim.stats()
        cpu = time.process_time()
        elapsed, sink = await run_pipeline(cfg, bodies, jobs=jobs)
        cpu = time.process_time() - cpu
        after = await sim.stats()
        bare = (0.0, 0.0) if known else await bare_client(sim.url, jobs, count // jobs)
    st = {k: after[k] - before[k] for k in ("uploads", "polls", "hash_requests")}
    assert len(sink.verdicts) == count
    ends = [v.finished_at.timestamp() for v in sink.verdicts if v.finished_at is not None]
    trips = 1 if known else 3
    limit = jobs / (trips * latency)
    rate = count / elapsed
    return {
        "jobs": jobs,
        "count": count,
        "trips": trips,
        "rate": rate,
        "limit": limit,
        "ratio": rate / limit,
        "steady_ratio": steady_rate(ends) / limit,
        "bare_ratio": bare[0] / limit,
        "bare_steady_ratio": bare[1] / limit,
        "cpu_per_target": cpu / count,
        "uploads": st["uploads"],
        "polls": st["polls"],
        "hash_requests": st["hash_requests"],
        "elapsed": elapsed,
    }


async def main(quick: bool) -> None:
    limit, interval = (10, 1.0) if quick else (25, 2.0)
    q = await quota(limit, interval, windows=3.5)
    print(f"quota: L={limit} uploads per {interval:g} s window, {q['targets']} targets, {q['unique']} unique")
    per, ratio = q["per_window"], q["window_ratio"]
    print(f"  uploads per full window / L = {per:.1f} / {limit} = {ratio:.3f}  (goal >= 0.95)")
    dedupe = f"{q['uploads']} / {q['unique']} = {q['dedupe_ratio']:.3f}"
    print(f"  uploads / unique contents   = {dedupe}  (goal 1.0)")
    print(f"  429s: quota {q['quota_429']}, throttle {q['throttle_429']}  (goal 0)")
    lag = f"{q['lag']:.2f} s beyond the resets' wait"
    print(f"  elapsed {q['elapsed']:.2f} s over {q['windows']} windows: {lag}")
    linger = 0.005
    for jobs in (16, 32) if quick else (32, 64):
        count = jobs * (10 if quick else 20)
        for known in (True, False):
            p = await pace(jobs, count, latency=0.2, known=known, linger=linger)
            kind = "known content (1 round trip)" if known else "new content (3 round trips)"
            print(f"pace, {kind}: C={jobs} jobs, 200 ms per answer, {count} targets, hash_linger {linger}")
            trips = f"C/({p['trips']:.0f} x 0.2 s)"
            print(
                f"  verdicts/s = {p['rate']:.1f}, Little's-law limit {trips} = {p['limit']:.1f},"
                f" ratio {p['ratio']:.3f}  (goal >= 0.9)"
            )
            print(
                f"  requests: {p['hash_requests']} bulk lookups, {p['uploads']} uploads, {p['polls']} polls"
                f" in {p['elapsed']:.1f} s; client CPU {p['cpu_per_target'] * 1e3:.2f} ms per target"
            )
            context = f"  for reading it: steady state (middle half) {p['steady_ratio']:.3f}"
            if not known:
                bare = f"{p['bare_ratio']:.3f} (middle half {p['bare_steady_ratio']:.3f})"
                context += f"; a bare aiohttp client, same requests, same C: {bare}"
            print(context)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller limits and counts")
    args = parser.parse_args()
    anyio.run(main, args.quick, backend_options={"use_uvloop": True})
