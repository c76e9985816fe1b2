"""A report that cannot grow (a full disk) ends the run with exit 2 and a line that says how much
of the report made it: the whole lines written before the failure, and what got none.

It used to say only "no space left" (or "File too large"), leaving the operator to count lines.
The disk is filled with a file size limit (RLIMIT_FSIZE, SIGXFSZ ignored, so the write fails with
EFBIG instead of killing the process): the same failed write(2) as ENOSPC, with no mount.
"""

from __future__ import annotations

import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

LIMIT = 64 * 1024


def limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def test_a_full_output_says_how_many_lines_made_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(1500):
        (data / f"file-with-a-longish-name-{i:05}.txt").write_bytes(b"harmless\n")
    out = tmp_path / "out.ndjson"
    proc = subprocess.run(
        [sys.executable, "-m", "scanner", "scan", str(data), "-o", str(out), "--progress", "none"],
        capture_output=True,
        preexec_fn=limit_file_size,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("scanner: error: "), err
    assert "File too large" in err, err
    report = out.read_bytes()
    assert report.endswith(b"\n") and 0 < len(report) <= LIMIT
    written = report.count(b"\n")
    m = re.search(
        r"([\d,]+) verdict lines reached \S+ before it failed; ([\d,]+) targets listed got none", err
    )
    assert m is not None, err
    assert int(m.group(1).replace(",", "")) == written
    assert int(m.group(2).replace(",", "")) > 0
