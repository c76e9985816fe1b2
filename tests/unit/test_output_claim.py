"""Two runs must never write one output: the second is refused before it reads or cuts the file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scanner.errors import SinkError
from scanner.sinks.ndjson import claim


def test_a_claimed_output_is_refused_to_a_second_claim(tmp_path: Path) -> None:
    out = tmp_path / "report.ndjson"
    out.write_bytes(b'{"partial": ')  # a torn tail the second run must not cut
    first = claim(str(out))
    assert first is not None
    try:
        with pytest.raises(SinkError, match="another scanner run is writing"):
            claim(str(out))
        assert out.read_bytes() == b'{"partial": '
    finally:
        os.close(first)
    # released with its descriptor (as at the end of a process, a crash included)
    again = claim(str(out))
    assert again is not None
    os.close(again)


def test_claim_creates_a_missing_output_and_reports_a_bad_path(tmp_path: Path) -> None:
    fd = claim(str(tmp_path / "new.ndjson"))
    assert fd is not None
    os.close(fd)
    assert (tmp_path / "new.ndjson").exists()
    with pytest.raises(SinkError, match="cannot open output"):
        claim(str(tmp_path / "missing-dir" / "out.ndjson"))


def test_the_scanner_refuses_an_output_another_run_holds(tmp_path: Path) -> None:
    """As a second cron job would meet the first: one line, exit 2, the first run's file untouched,
    and the state store never asked to resume the first run's work."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_bytes(b"clean\n")
    out = tmp_path / "report.ndjson"
    out.write_bytes(b'{"target": "/earlier"}\n{"torn')
    state = tmp_path / "state.db"
    held = claim(str(out))
    assert held is not None
    try:
        cmd = [sys.executable, "-m", "scanner", "scan", str(tree), "-o", str(out), "--state", str(state)]
        p = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    finally:
        os.close(held)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "another scanner run is writing" in lines[0], lines
    assert out.read_bytes() == b'{"target": "/earlier"}\n{"torn'
    assert not state.exists()
    # once the first run is gone, the same command goes through
    p = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
