"""Crash consistency against a slow vendor: SIGKILL the scanner at seeded random moments while
MetaDefender jobs are in flight at the simulator, resume each time with the same --state and
--output, and check the end state: every target has exactly one line, no line is torn, and the
vendor saw at most ``targets + jobs x kills`` submissions.

The engine runs with ``hash_lookup = false``, so content the vendor already knows is not answered
from its hash: every repeated submission shows in the upload count.
"""

from __future__ import annotations

import os
import random
import signal
from collections import Counter
from pathlib import Path

import anyio
import pytest

from scanner.model import Kind, Outcome, Status, Target, Verdict
from scanner.simulators.metadefender import STATE, SimState, make_app
from scanner.state import StateStore

from .conftest import KEY, kill_quietly, serve, spawn, wait_exit, wait_for, whole_lines, write_config

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TARGETS = 2000
JOBS = 64
KILLS = 3


@pytest.fixture
def anyio_backend() -> str:
    # the test's loop only serves the simulator; the scanner subprocess picks its own loop (uvloop)
    return "asyncio"


def make_tree(root: Path) -> None:
    for d in range(20):
        (root / f"d{d:02}").mkdir(parents=True)
    for i in range(TARGETS):
        (root / f"d{i % 20:02}" / f"f{i:05}.txt").write_bytes(f"target number {i}\n".encode())


def lines_in(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("seed", [int(os.environ.get("SCANNER_CRASH_SEED", "5"))])
async def test_sigkill_at_random_moments_then_resume_gives_one_line_each_and_bounded_uploads(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    make_tree(tmp_path / "data")
    out = tmp_path / "out.ndjson"
    app = make_app(api_keys=KEY, scan_seconds=0.1, prevention_limit=1_000_000)
    sim: SimState = app[STATE]
    async with serve(app) as url:
        cfg = write_config(tmp_path, url, hash_lookup=False, poll_initial=0.05, poll_max=0.2)
        args = [
            *("scan", str(tmp_path / "data"), "--engine", "metadefender", "--config", str(cfg)),
            *("--state", str(tmp_path / "state.db"), "--output", str(out), "--jobs", str(JOBS), "-q"),
        ]
        kills = 0
        for attempt in range(KILLS):
            log = tmp_path / f"stderr-{attempt}.txt"
            with log.open("wb") as stderr:
                proc = spawn(args, stderr=stderr)
            try:
                # kill once the run is under way (new lines out), at a random point after that
                want = lines_in(out) + rng.randint(20, TARGETS // (KILLS + 2))
                await wait_for(lambda p=proc, w=want: lines_in(out) >= w or p.poll() is not None, 120)
                await anyio.sleep(rng.random() * 0.3)
                assert proc.poll() is None, log.read_text()
                proc.send_signal(signal.SIGKILL)
                kills += 1
                await wait_exit(proc, 30)
            finally:
                kill_quietly(proc)
        final = spawn(args)
        try:
            code, _ = await wait_exit(final, 180)
            assert final.stderr is not None
            err = final.stderr.read().decode()
        finally:
            kill_quietly(final)
    assert code == 0, err
    lines = whole_lines(out)
    counts = Counter(str(x["target"]) for x in lines)
    assert len(counts) == TARGETS, f"{TARGETS - len(counts)} targets have no line after {kills} kills"
    duplicated = [t for t, c in counts.items() if c > 1]
    assert not duplicated, duplicated[:5]
    assert {x["verdict"] for x in lines} == {"clean"}
    resubmitted = sim.uploads - TARGETS
    assert resubmitted >= 0
    # a killed job that had uploaded resumes by polling its data_id; only uploads whose reference
    # had not reached the store's last group commit are sent again
    assert resubmitted <= JOBS * kills, f"{resubmitted} re-uploads after {kills} kills"


async def test_a_reference_a_killed_run_left_pending_is_cleared_once_its_line_is_written(
    tmp_path: Path,
) -> None:
    """A killed run leaves a vendor reference in the store; the next run (a new store object on the
    same file) must clear it when it writes that target's line, or a later run would poll it again."""
    path = str(tmp_path / "state.db")
    target = Target(Kind.FILE, "/data/a.txt")
    killed = await StateStore.open(path)
    killed.submitted("metadefender", target, {"data_id": "sim-1"})
    await killed.commit()
    await killed.aclose()  # the process dies here; the reference stays

    store = await StateStore.open(path)
    run = await store.begin_run(None, "metadefender")
    assert await store.pending("metadefender", target) == {"data_id": "sim-1"}
    store.record([Verdict.of(target, "metadefender", Outcome(Status.CLEAN))], run.run_id)
    await store.commit()
    assert await store.pending("metadefender", target) is None
    await store.aclose()


async def test_a_kill_while_uploads_are_scanning_resubmits_none_of_them(tmp_path: Path) -> None:
    """A submission's reference reaches the store as soon as the vendor answers, not with the
    job's verdict line: a kill while every job is still waiting on its scan loses no reference, so
    the rerun polls each data_id and uploads nothing again."""
    files = 8
    data = tmp_path / "data"
    data.mkdir()
    for i in range(files):
        (data / f"f{i}.txt").write_bytes(f"distinct content {i}\n".encode())
    out = tmp_path / "out.ndjson"
    # scans take long enough that no job gets its verdict before the kill
    app = make_app(api_keys=KEY, scan_seconds=3.0, prevention_limit=1_000_000)
    sim: SimState = app[STATE]
    async with serve(app) as url:
        cfg = write_config(tmp_path, url, hash_lookup=False)
        args = [
            *("scan", str(data), "--engine", "metadefender", "--config", str(cfg)),
            *("--state", str(tmp_path / "state.db"), "--output", str(out), "--jobs", str(files), "-q"),
        ]
        proc = spawn(args)
        try:
            await wait_for(lambda: sim.uploads >= files or proc.poll() is not None, 60)
            await anyio.sleep(0.5)  # longer than the store takes to commit the references
            assert proc.poll() is None and lines_in(out) == 0
            proc.send_signal(signal.SIGKILL)
            await wait_exit(proc, 30)
        finally:
            kill_quietly(proc)
        final = spawn(args)
        try:
            code, _ = await wait_exit(final, 120)
        finally:
            kill_quietly(final)
    assert code == 0
    assert len(whole_lines(out)) == files
    assert sim.uploads == files, f"{sim.uploads - files} contents uploaded twice"
