"""The scanner command started with fd 0, 1 or 2 closed (``exec 1>&-`` in a cron wrapper, a daemon
that closed its streams before exec).

It used to abort in a libuv assertion (exit 134, nothing written): the event loop's own descriptors
took the free numbers 0-2, and libuv refuses to close a descriptor below 3. A closed standard stream
now behaves as one redirected to ``/dev/null``; stdout closed with no ``--output`` is output lost,
refused at once with exit 2.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scanner.testing import eicar

pytestmark = pytest.mark.slow


def tree(root: Path) -> Path:
    root.mkdir()
    for i in range(40):
        (root / f"f{i:02}.txt").write_bytes(b"harmless\n")
    (root / "eicar.com").write_bytes(eicar())
    return root


def run_closed(fd: int, args: list[str], *, stdin: int | None = None) -> subprocess.CompletedProcess[bytes]:
    """The scanner command with descriptor ``fd`` closed in the child just before exec."""
    return subprocess.run(
        [sys.executable, "-m", "scanner", *args],
        stdin=subprocess.DEVNULL if stdin is None else stdin,
        capture_output=True,
        preexec_fn=functools.partial(os.close, fd),
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("fd", [0, 1, 2])
def test_a_closed_standard_stream_leaves_the_report_whole(tmp_path: Path, fd: int) -> None:
    data = tree(tmp_path / "data")
    out = tmp_path / "out.ndjson"
    proc = run_closed(fd, ["scan", str(data), "-o", str(out), "--progress", "none"])
    assert proc.returncode == 1, proc.stderr  # the EICAR file: infected, not 134
    lines = [json.loads(line) for line in out.read_bytes().splitlines()]
    assert len(lines) == 41
    assert sum(line["verdict"] == "infected" for line in lines) == 1
    if fd != 2:
        assert b"Assertion" not in proc.stderr
        assert b"41 verdicts" in proc.stderr


@pytest.mark.parametrize("fd", [0, 2])
def test_a_closed_stdin_or_stderr_keeps_verdicts_on_stdout(tmp_path: Path, fd: int) -> None:
    data = tree(tmp_path / "data")
    proc = run_closed(fd, ["scan", str(data), "--progress", "none"])
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stdout.splitlines()) == 41


def test_a_closed_stdin_as_the_source_is_an_empty_list(tmp_path: Path) -> None:
    out = tmp_path / "out.ndjson"
    proc = run_closed(0, ["scan", "-", "-o", str(out), "--progress", "none"])
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == b""
    assert b"0 verdicts" in proc.stderr


def test_a_closed_stdout_without_output_is_refused_before_scanning(tmp_path: Path) -> None:
    data = tree(tmp_path / "data")
    proc = run_closed(1, ["scan", str(data), "--progress", "none"])
    assert proc.returncode == 2
    assert proc.stderr.startswith(b"scanner: error: stdout is closed"), proc.stderr
    assert proc.stderr.count(b"\n") == 1, proc.stderr
    assert b"--output" in proc.stderr
