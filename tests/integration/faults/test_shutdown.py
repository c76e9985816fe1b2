"""Graceful shutdown of the scanner command, with MetaDefender jobs in flight at the simulator.

The first SIGTERM stops taking targets and lets the jobs in flight finish within --drain-timeout; a
second one quits at once. Either way: exit 2, only whole lines, no traceback, and a rerun with the
same --state and --output finishes the job with exactly one line per target.
"""

from __future__ import annotations

import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from scanner.simulators.metadefender import STATE, SimState, make_app

from .conftest import KEY, kill_quietly, serve, spawn, wait_exit, wait_for, whole_lines, write_config

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

FILES = 60
JOBS = 6


@pytest.fixture
def anyio_backend() -> str:
    # the test's loop only serves the simulator; the scanner subprocess picks its own loop (uvloop)
    return "asyncio"


def make_tree(root: Path) -> Path:
    root.mkdir()
    for i in range(FILES):
        (root / f"f{i:03}.txt").write_bytes(f"file number {i}\n".encode())
    return root


def args(tmp_path: Path, cfg: Path, drain: float) -> list[str]:
    return [
        "scan",
        str(tmp_path / "data"),
        "--engine",
        "metadefender",
        "--config",
        str(cfg),
        "--state",
        str(tmp_path / "state.db"),
        "--output",
        str(tmp_path / "out.ndjson"),
        "--jobs",
        str(JOBS),
        "--drain-timeout",
        str(drain),
        "--progress",
        "none",
    ]


def vendor_done_at_once(state: SimState) -> None:
    """The vendor finishes everything it holds, and new uploads are ready at once."""
    state.options["scan_seconds"] = 0.0
    for report in state.reports.values():
        report.ready_at = 0.0


async def finish_and_check(tmp_path: Path, cfg: Path, state: SimState) -> list[dict[str, Any]]:
    """Rerun with the same state and output: it must complete the run, one line per file in all."""
    vendor_done_at_once(state)
    proc = spawn(args(tmp_path, cfg, 30.0))
    try:
        code, _ = await wait_exit(proc, 60)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    finally:
        kill_quietly(proc)
    assert code == 0, err
    assert "Traceback" not in err
    lines = whole_lines(tmp_path / "out.ndjson")
    counts = Counter(Path(str(x["target"])).name for x in lines)
    assert len(counts) == FILES, f"{FILES - len(counts)} files have no line"
    assert max(counts.values()) == 1, [n for n, c in counts.items() if c > 1]
    assert {x["verdict"] for x in lines} == {"clean"}
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT count(*) FROM targets").fetchone() == (FILES,)
        assert db.execute("SELECT finished FROM runs").fetchall() == [(1,)]
    return lines


def stopped_cleanly(code: int, err: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert "interrupted" in err
    assert all(line.startswith(("scanner", "  ")) for line in err.splitlines()), err


async def test_sigterm_drains_the_jobs_in_flight_then_exits_2(tmp_path: Path) -> None:
    make_tree(tmp_path / "data")
    app = make_app(api_keys=KEY, scan_seconds=2.0)
    state: SimState = app[STATE]
    async with serve(app) as url:
        cfg = write_config(tmp_path, url)
        proc = spawn(args(tmp_path, cfg, 20.0))
        try:
            await wait_for(lambda: state.uploads >= JOBS, 60)
            proc.send_signal(signal.SIGTERM)
            at_signal = state.uploads
            code, took = await wait_exit(proc, 30)
            assert proc.stderr is not None
            err = proc.stderr.read().decode()
        finally:
            kill_quietly(proc)
        stopped_cleanly(code, err)
        # each job in flight had ~2 s of vendor time left: the drain waited for them, not for 20 s
        assert took < 10, took
        lines = whole_lines(tmp_path / "out.ndjson")
        assert len(lines) == state.uploads, "a job that uploaded was dropped instead of drained"
        assert at_signal <= len(lines) <= at_signal + JOBS, "it went on taking targets"
        assert len(lines) < FILES
        await finish_and_check(tmp_path, cfg, state)


async def test_a_drain_that_outlasts_the_timeout_is_cut_at_the_timeout(tmp_path: Path) -> None:
    make_tree(tmp_path / "data")
    app = make_app(api_keys=KEY, scan_seconds=300.0)
    state: SimState = app[STATE]
    async with serve(app) as url:
        cfg = write_config(tmp_path, url)
        proc = spawn(args(tmp_path, cfg, 1.5))
        try:
            await wait_for(lambda: state.uploads >= JOBS, 60)
            proc.send_signal(signal.SIGTERM)
            code, took = await wait_exit(proc, 30)
            assert proc.stderr is not None
            err = proc.stderr.read().decode()
        finally:
            kill_quietly(proc)
        stopped_cleanly(code, err)
        assert 1.5 <= took < 6, took
        assert whole_lines(tmp_path / "out.ndjson") == []  # nothing finished at the vendor
        await finish_and_check(tmp_path, cfg, state)


async def test_a_second_signal_quits_at_once(tmp_path: Path) -> None:
    make_tree(tmp_path / "data")
    app = make_app(api_keys=KEY, scan_seconds=300.0)
    state: SimState = app[STATE]
    async with serve(app) as url:
        cfg = write_config(tmp_path, url)
        proc = spawn(args(tmp_path, cfg, 120.0))
        try:
            await wait_for(lambda: state.uploads >= JOBS, 60)
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(TimeoutError):  # the first signal alone waits for the drain
                await wait_exit(proc, 1.0)
            proc.send_signal(signal.SIGTERM)
            code, took = await wait_exit(proc, 30)
            assert proc.stderr is not None
            err = proc.stderr.read().decode()
        finally:
            kill_quietly(proc)
        stopped_cleanly(code, err)
        assert "again: quitting now" in err
        assert took < 5, took  # against a 120 s drain and 300 s at the vendor
        whole_lines(tmp_path / "out.ndjson")
        await finish_and_check(tmp_path, cfg, state)
