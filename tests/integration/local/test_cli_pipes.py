"""The scanner command with its standard streams closed by their reader, as ``2>&1 | true`` does.

Verdicts that cannot be written are output lost: the run is incomplete and exits 2, every time. It
used to exit 1 (which means "infected") when stderr was the same closed pipe: the error line about
the closed stdout could not be printed, and that exception escaped as Python's own exit status 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def tree(root: Path) -> Path:
    root.mkdir()
    for i in range(300):
        (root / f"f{i:03}.txt").write_bytes(b"harmless\n")
    return root


def run_into_a_closed_pipe(args: list[str], *, stderr_too: bool) -> subprocess.CompletedProcess[bytes]:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line, as `| true` soon is
    try:
        return subprocess.run(
            [sys.executable, "-m", "scanner", *args],
            stdout=write,
            stderr=write if stderr_too else subprocess.PIPE,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)


@pytest.mark.parametrize("quiet", [["-q"], []])
def test_stdout_and_stderr_closed_exits_2_every_time(tmp_path: Path, quiet: list[str]) -> None:
    data = tree(tmp_path / "data")
    for _ in range(3):
        proc = run_into_a_closed_pipe(["scan", str(data), "--progress", "none", *quiet], stderr_too=True)
        assert proc.returncode == 2


def test_stdout_closed_with_stderr_open_says_so_and_exits_2(tmp_path: Path) -> None:
    data = tree(tmp_path / "data")
    proc = run_into_a_closed_pipe(["scan", str(data), "-q"], stderr_too=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith(b"scanner: error: output stdout was closed by its reader; ")
    assert proc.stderr.count(b"\n") == 1 and b"verdict lines reached stdout before it failed" in proc.stderr


def test_stderr_closed_alone_leaves_the_verdicts_and_the_status_alone(tmp_path: Path) -> None:
    data = tree(tmp_path / "data")
    out = tmp_path / "out.ndjson"
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "scanner", "scan", str(data), "-o", str(out), "--progress", "plain"],
            stderr=write,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)
    assert proc.returncode == 0  # the summary was lost, not the run
    assert len(out.read_bytes().splitlines()) == 300
