"""A kill at every step of a run that touches its report or its state store, not only at random.

strace's fault injection sends SIGKILL to the scanner at the Nth call of a system call on one file
(the report, the store, its WAL and shared-memory files): opening, writing, cutting, syncing,
unlinking, for every N a whole run makes. strace counts calls per thread, so the counts come from a
run left alone, per file, call and thread, and each file is injected on its own. What must hold
after each kill: the next run, left alone, reports what the files hold *now*. A kill can leave the
earlier run finished (the next run starts afresh) or a new run whose report is the one on disk (the
next run continues it); never the store's new run over the earlier report, which a rerun would take
as done.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from scanner.testing import eicar

pytestmark = pytest.mark.slow

_STRACE = shutil.which("strace")
# the calls that change what a file holds or whether it exists: each is a point a kill can land on
_MUTATING = ("openat", "write", "pwrite64", "ftruncate", "fsync", "fdatasync", "unlink")


def _scan(
    tree: Path, report: Path, state: Path, *, wrap: list[str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    argv = [
        sys.executable,
        "-m",
        "scanner",
        "scan",
        str(tree),
        "-o",
        str(report),
        "--state",
        str(state),
        "-q",
    ]
    return subprocess.run([*(wrap or []), *argv], capture_output=True, timeout=120, check=False)


def _strace(files: list[Path], log: Path, inject: str | None = None) -> list[str]:
    assert _STRACE is not None, "strace is installed by scripts/test"
    argv = [_STRACE, "-f", "-qq", "-y", "-o", str(log), "-e", f"trace={','.join(_MUTATING)}"]
    for f in files:
        argv += ["-P", str(f)]
    if inject is not None:
        argv += ["-e", f"inject={inject}:signal=SIGKILL"]
    return argv


def _lines(report: Path) -> dict[str, str]:
    seen: Counter[str] = Counter()
    verdicts = {}
    for line in report.read_bytes().splitlines():
        obj = orjson.loads(line)
        seen[obj["target"]] += 1
        verdicts[obj["target"]] = obj["verdict"]
    assert max(seen.values(), default=1) == 1, f"a target has two lines: {seen}"
    return verdicts


def test_a_kill_at_any_step_never_makes_a_rerun_adopt_the_old_report(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("a", "b", "c"):
        (tree / f"{name}.txt").write_text(f"clean {name}\n")
    report, state = tmp_path / "report.ndjson", tmp_path / "state.db"
    files = [report, state, *(Path(f"{state}{s}") for s in ("-wal", "-shm", "-journal"))]
    assert _scan(tree, report, state).returncode == 0  # yesterday's run: finished, all clean
    (tree / "c.txt").write_bytes(eicar())  # infected since
    saved = tmp_path / "saved"
    saved.mkdir()
    kept = [f for f in files if f.exists()]
    for f in kept:
        shutil.copy2(f, saved / f.name)

    def restore() -> None:
        for f in files:
            f.unlink(missing_ok=True)
        for f in kept:
            shutil.copy2(saved / f.name, f)

    # a run left alone: how many times each thread makes each call on each file
    log = tmp_path / "strace.log"
    dry = _scan(tree, report, state, wrap=_strace(files, log))
    assert dry.returncode == 1, dry.stderr
    per_thread: Counter[tuple[str, str, str]] = Counter()
    for line in log.read_text().splitlines():
        m = re.match(r"(\d+)\s+(\w+)\((?:\w+<[^>]*>, )?\"?([^\"<,]*)", line)
        fd_path = re.search(r"^\d+\s+\w+\(\d+<([^>]+)>", line)
        if m is None:
            continue
        path = fd_path.group(1) if fd_path else m.group(3)
        per_thread[(path, m.group(2), m.group(1))] += 1
    calls: Counter[tuple[str, str]] = Counter()
    for (path, name, _), n in per_thread.items():
        calls[(path, name)] = max(calls[(path, name)], n)
    assert calls[(str(report), "openat")] == 2 and calls[(str(state) + "-wal", "pwrite64")], calls
    killed = 0
    for (path, name), count in sorted(calls.items()):
        for n in range(1, count + 1):
            restore()
            wrap = _strace([Path(path)], log, inject=f"{name}:when={n}")
            first = _scan(tree, report, state, wrap=wrap)
            # a later run may make a call fewer times (one group commit less): then it simply ends
            killed += first.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)
            again = _scan(tree, report, state)
            where = f"killed at {name} #{n} of {count} on {Path(path).name}"
            assert again.returncode == 1, f"{where}: the rerun exited {again.returncode}: {again.stderr!r}"
            verdicts = _lines(report)
            assert verdicts == {
                str(tree / "a.txt"): "clean",
                str(tree / "b.txt"): "clean",
                str(tree / "c.txt"): "infected",
            }, where
    assert killed >= sum(calls.values()) // 2, "most injections must have landed"


def test_a_run_that_cannot_start_leaves_yesterdays_report_as_it_was(tmp_path: Path) -> None:
    """The output is claimed before the engine starts, but cut only once the run really starts: an
    unreachable vendor must not cost the operator the last good report."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("clean\n")
    report, state = tmp_path / "report.ndjson", tmp_path / "state.db"
    assert _scan(tree, report, state).returncode == 0
    before = report.read_bytes()
    config = tmp_path / "md.toml"
    # a port nothing listens on: the engine's key check cannot reach the vendor
    config.write_text('[engines.metadefender]\nbase_url = "http://127.0.0.1:9"\napi_key = "k"\n')
    argv = [sys.executable, "-m", "scanner", "scan", str(tree), "-o", str(report), "--state", str(state)]
    failed = subprocess.run(
        [*argv, "--engine", "metadefender", "--config", str(config)],
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, "NO_PROXY": "*"},
    )
    assert failed.returncode == 2, failed.stderr
    assert report.read_bytes() == before
    assert _scan(tree, report, state).returncode == 0  # and the store still knows the run finished
