"""End to end: a stdin line longer than the 1 MiB cap costs its own line, never the run."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from .conftest import run_scanner

pytestmark = pytest.mark.slow


def test_an_overlong_stdin_line_is_one_error_line_and_the_rest_is_scanned(tmp_path: Path) -> None:
    # it used to end the source: exit 2, "source failed: a line longer than 1048576 bytes"
    (tmp_path / "ok.txt").write_text("fine")
    ok = orjson.dumps({"kind": "file", "target": str(tmp_path / "ok.txt")})
    huge = orjson.dumps({"kind": "file", "target": "/" + "y" * 1_500_000})
    proc = run_scanner(["scan", "-"], input=ok + b"\n" + huge + b"\nnot json\n" + ok + b"\n")
    assert proc.returncode == 2
    assert b"source failed" not in proc.stderr and b"Traceback" not in proc.stderr
    lines = [orjson.loads(x) for x in proc.stdout.splitlines()]
    assert [x["verdict"] for x in lines].count("clean") == 2
    bad = sorted(
        (x["target"], x["error"]["code"], x["error"]["message"]) for x in lines if x["verdict"] == "error"
    )
    assert bad == [
        ("stdin:2", "bad_target", "a line longer than the limit of 1048576 bytes"),
        ("stdin:3", "bad_target", "not valid JSON: not json"),
    ]
