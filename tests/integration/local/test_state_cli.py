"""The state store as the command line meets it: a store it cannot use ends the run with one line."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path


def test_a_store_with_foreign_tables_ends_the_run_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema', '1'), ('keys', '2')")
        db.execute("CREATE TABLE runs (output TEXT PRIMARY KEY)")  # not the store's own
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a").write_text("a")
    argv = [sys.executable, "-m", "scanner", "scan", str(tmp_path / "tree"), "--state", str(path)]
    done = subprocess.run([*argv, "-o", str(tmp_path / "r.ndjson")], capture_output=True, timeout=60)
    assert done.returncode == 2
    err = done.stderr.decode()
    assert "internal error" not in err and err.count("\n") == 1, err
    assert "state store" in err and "not a scanner store's" in err, err


def test_the_same_file_as_state_and_output_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a").write_text("a")
    same = tmp_path / "x"
    argv = [sys.executable, "-m", "scanner", "scan", str(tmp_path / "tree"), "--state", str(same)]
    done = subprocess.run([*argv, "--output", str(same)], capture_output=True, timeout=60)
    assert done.returncode == 2
    assert b"--state and --output are the same file" in done.stderr
    assert not same.exists()  # refused before either was opened
