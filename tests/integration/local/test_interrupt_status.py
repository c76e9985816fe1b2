"""The exit status of an interrupted run that already found something: 1, for one Ctrl-C or two.

A finding is never masked (README, "Exit status"): an interrupted run is incomplete, which alone
would be 2, but the infected file it did find must still fail a cron job as infected.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from scanner.testing import eicar

pytestmark = pytest.mark.slow


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A listening socket that never answers: a URL job sent there stays in flight."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        yield srv


def wait_lines(out: Path, n: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < n):
        time.sleep(0.05)
    assert out.read_bytes().count(b"\n") >= n


@pytest.mark.parametrize("signals", [1, 2])
def test_an_interrupted_run_that_found_something_exits_1(
    tmp_path: Path, silent_server: socket.socket, signals: int
) -> None:
    (tmp_path / "eicar.com").write_bytes(eicar())
    out = tmp_path / "out.ndjson"
    drain = "0.5" if signals == 1 else "120"
    proc = subprocess.Popen(
        [sys.executable, "-m", "scanner", "scan", "-", "-o", str(out), "--drain-timeout", drain],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(orjson.dumps({"kind": "file", "target": str(tmp_path / "eicar.com")}) + b"\n")
        proc.stdin.flush()
        wait_lines(out, 1)
        port = silent_server.getsockname()[1]
        proc.stdin.write(orjson.dumps({"kind": "url", "target": f"http://127.0.0.1:{port}/slow"}) + b"\n")
        proc.stdin.flush()  # stdin stays open: the run is still listing
        silent_server.settimeout(30)
        conn, _ = silent_server.accept()  # the URL job is in flight
        with conn:
            proc.send_signal(signal.SIGINT)
            if signals == 2:
                with pytest.raises(subprocess.TimeoutExpired):  # the drain waits for the job
                    proc.wait(timeout=1.0)
                proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    text = err.decode()
    assert "interrupted" in text and "Traceback" not in text
    assert ("again: quitting now" in text) == (signals == 2)
    assert "1 infected" in text
    assert out.read_bytes().count(b"\n") == 1
