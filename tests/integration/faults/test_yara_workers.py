"""The YARA worker processes and the signals a scanner command gets: a worker never outlives its
scanner, and the signals a terminal (or systemd, or ``kill -- -PGID``) sends to the whole process
group stop the run through its parent alone, which lets the jobs in flight drain.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections import Counter
from pathlib import Path

import psutil
import pytest

from .conftest import WhileRead, descendants, kill_quietly, spawn, wait_exit, whole_lines

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SMALL = 3000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sparse(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


def scan_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "scan",
        str(tmp_path / "data"),
        "--state",
        str(tmp_path / "state.db"),
        "--output",
        str(tmp_path / "out.ndjson"),
        "--progress",
        "none",
        *extra,
    ]


def reap(procs: list[psutil.Process]) -> None:
    """Kill what the test started that is still there (a worker the fix did not stop)."""
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()


async def test_a_killed_scanner_leaves_no_worker_behind(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    # seconds of hashing: a worker that only noticed its parent between requests would go on
    big = sparse(tmp_path / "data" / "big.bin", 4 << 30)
    proc = spawn(scan_args(tmp_path), start_new_session=True)
    workers = descendants(proc.pid)
    busy = threading.Event()
    watch = WhileRead(big, workers, busy.set)
    watch.start()
    left: list[psutil.Process] = []
    try:
        assert busy.wait(60), "no worker was caught reading the big file"
        left = workers()
        assert left
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _, alive = psutil.wait_procs(left, timeout=3)
        assert alive == [], f"workers outlived their scanner: {alive}"
    finally:
        watch.stop()
        reap(left)
        kill_quietly(proc)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_signal_to_the_process_group_drains_the_jobs_in_flight(
    tmp_path: Path, signum: signal.Signals
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(SMALL):
        (data / f"f{i:05}.txt").write_bytes(f"file number {i}\n".encode())
    # a second or so of hashing, in flight when the signal comes
    big = sparse(data / "big.bin", 1 << 30)
    proc = spawn(scan_args(tmp_path), start_new_session=True)  # its own group, as a shell gives a job
    workers = descendants(proc.pid)
    busy = threading.Event()
    watch = WhileRead(big, workers, busy.set)
    watch.start()
    started: list[psutil.Process] = []
    try:
        assert busy.wait(60), "no worker was caught reading the big file"
        started = workers()
        os.killpg(proc.pid, signum)  # what Ctrl-C in a terminal does: the whole foreground group
        code, _ = await wait_exit(proc, 60)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    finally:
        watch.stop()
        reap(started)
        kill_quietly(proc)
    assert code == 2, err
    assert "Traceback" not in err
    assert "interrupted: the run is incomplete" in err, err
    assert "run it again (same --state and --output) to finish" in err, err
    lines = whole_lines(tmp_path / "out.ndjson")
    assert [x for x in lines if x["verdict"] != "clean"] == []  # no worker_died, no error at all
    names = {Path(str(x["target"])).name for x in lines}
    assert "big.bin" in names, "the job in flight was not drained"

    rerun = spawn(scan_args(tmp_path))
    try:
        code, _ = await wait_exit(rerun, 120)
        assert rerun.stderr is not None
        err = rerun.stderr.read().decode()
    finally:
        kill_quietly(rerun)
    assert code == 0, err
    lines = whole_lines(tmp_path / "out.ndjson")
    counts = Counter(Path(str(x["target"])).name for x in lines)
    assert len(counts) == SMALL + 1 and max(counts.values()) == 1
    assert {x["verdict"] for x in lines} == {"clean"}


async def test_a_drain_that_runs_out_stops_a_busy_worker_at_once(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    big = sparse(tmp_path / "data" / "big.bin", 4 << 30)  # seconds of hashing left at the signal
    proc = spawn(scan_args(tmp_path, "--drain-timeout", "0.2"), start_new_session=True)
    workers = descendants(proc.pid)
    busy = threading.Event()
    watch = WhileRead(big, workers, busy.set)
    watch.start()
    started: list[psutil.Process] = []
    try:
        assert busy.wait(60), "no worker was caught reading the big file"
        started = workers()
        os.killpg(proc.pid, signal.SIGINT)
        # not the rest of the hash, nor the pool's grace for idle workers (5 s): killed at once
        code, took = await wait_exit(proc, 30)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    finally:
        watch.stop()
        reap(started)
        kill_quietly(proc)
    assert code == 2, err
    assert took < 3, took
    assert "1 target read from the source got no line" in err, err
    assert whole_lines(tmp_path / "out.ndjson") == []
