"""An S3 report exists only once its upload completes: until then, the store counts nothing as done.

A run writing to S3 commits its verdicts to the store as it goes, but a killed run leaves no report.
Were those rows taken as done, the next ``--skip-unchanged`` run would skip the targets they name,
and their findings would be in no report at all.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from scanner.testing import eicar

BUCKET = "sealed-reports"


def _rows(state: Path) -> int:
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT count(*) FROM targets").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_a_killed_s3_run_leaves_nothing_a_rerun_skips_as_unchanged(
    tmp_path: Path, s3: Any, moto_endpoint: str
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    tree = tmp_path / "tree"
    tree.mkdir()
    infected = set()
    for i in range(3000):
        path = tree / f"f{i:05}.txt"
        if i % 10 == 0:
            path.write_bytes(eicar())
            infected.add(str(path))
        else:
            path.write_text(f"clean {i}\n")
    state = tmp_path / "state.db"
    argv = [sys.executable, "-m", "scanner", "scan", str(tree), "--state", str(state), "--skip-unchanged"]
    argv += ["--output", f"s3://{BUCKET}/nightly.ndjson", "-q", "--jobs", "4"]
    killed = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ)
    )
    try:
        deadline = time.monotonic() + 60
        while _rows(state) == 0:  # the store holds verdicts the report does not (yet)
            assert killed.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        killed.kill()
    finally:
        killed.wait()
    assert _rows(state) > 0
    rerun = subprocess.run(argv, capture_output=True, timeout=300, check=False, env=dict(os.environ))
    assert rerun.returncode == 1, rerun.stderr
    body = s3.get_object(Bucket=BUCKET, Key="nightly.ndjson")["Body"].read()
    lines = [orjson.loads(line) for line in body.splitlines()]
    assert len(lines) == 3000  # every target once: none taken as done by the killed run
    assert {v["target"] for v in lines if v["verdict"] == "infected"} == infected
    # once the report is sealed, its targets are done: a third run skips them all
    third = subprocess.run(argv, capture_output=True, timeout=300, check=False, env=dict(os.environ))
    assert third.returncode == 0, third.stderr
    assert s3.get_object(Bucket=BUCKET, Key="nightly.ndjson")["Body"].read() == b""
