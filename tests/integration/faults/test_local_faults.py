"""Local faults: files that cannot be read or that change while they are read, a full disk and a
closed stdout. Each ends with the right line (or one clear error and exit 2), never a hang or a crash.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from scanner.config import validate_section
from scanner.engines.metadefender import Config, create
from scanner.pipeline import Pipeline
from scanner.simulators.metadefender import STATE, SimState, make_app
from scanner.sinks.ndjson import NdjsonSink
from scanner.sources.local import LocalSource

from .conftest import (
    KEY,
    WhileRead,
    descendants,
    kill_quietly,
    no_privileges_over_files,
    scanner_argv,
    serve,
    spawn,
    wait_exit,
    whole_lines,
    write_config,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

#: over the YARA worker's read-whole limit (64 MiB), so it reads in chunks a watcher can catch
BIG = 128 << 20


@pytest.fixture
def anyio_backend() -> str:
    # the test's loop only serves the simulator or waits; the scanner brings its own loop
    return "asyncio"


def sparse(path: Path, size: int = BIG) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


def changing_tree(root: Path) -> tuple[Path, Path]:
    root.mkdir()
    (root / "ok.txt").write_bytes(b"nothing to see here\n")
    return sparse(root / "grows.bin"), sparse(root / "shrinks.bin")


def by_name(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    named = {Path(str(x["target"])).name: x for x in lines}
    assert len(named) == len(lines), "a target has two lines"
    return named


async def test_yara_reports_files_that_grow_or_shrink_while_read_as_changed(tmp_path: Path) -> None:
    grows, shrinks = changing_tree(tmp_path / "data")
    out = tmp_path / "out.ndjson"
    proc = spawn(["scan", str(tmp_path / "data"), "--output", str(out), "--progress", "none"])
    watchers = [
        WhileRead(grows, descendants(proc.pid), lambda: os.truncate(grows, 2 * BIG)),
        WhileRead(shrinks, descendants(proc.pid), lambda: os.truncate(shrinks, BIG // 4)),
    ]
    for w in watchers:
        w.start()
    try:
        code, _ = await wait_exit(proc, 120)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    finally:
        for w in watchers:
            w.stop()
        kill_quietly(proc)
    assert [w.fired_at is not None for w in watchers] == [True, True], "no read was caught mid-file"
    assert code == 2, err
    assert "Traceback" not in err
    lines = by_name(whole_lines(out))
    assert lines["ok.txt"]["verdict"] == "clean"
    for name in ("grows.bin", "shrinks.bin"):
        assert lines[name]["verdict"] == "error", lines[name]
        assert lines[name]["error"]["code"] == "changed", lines[name]["error"]


async def test_metadefender_reports_files_that_grow_or_shrink_while_hashed_as_changed(tmp_path: Path) -> None:
    grows, shrinks = changing_tree(tmp_path / "data")
    me = psutil.Process()
    watchers = [
        WhileRead(grows, lambda: [me], lambda: os.truncate(grows, 2 * BIG)),
        WhileRead(shrinks, lambda: [me], lambda: os.truncate(shrinks, BIG // 4)),
    ]
    out = tmp_path / "out.ndjson"
    sink = NdjsonSink(str(out))
    sink.open()
    app = make_app(api_keys=KEY, scan_seconds=0.05)
    state: SimState = app[STATE]
    async with serve(app) as url:
        config = validate_section(
            Config,
            {"base_url": url, "api_key": KEY, "poll_initial": 0.02, "poll_max": 0.1, "hash_linger": 0.01},
            "engines.metadefender",
        )
        for w in watchers:
            w.start()
        try:
            with anyio.fail_after(120):
                async with create(config) as engine:
                    await Pipeline([LocalSource(str(tmp_path / "data"))], engine, sink, max_at_once=4).run()
        finally:
            for w in watchers:
                w.stop()
            await sink.aclose()
    assert [w.fired_at is not None for w in watchers] == [True, True], "no read was caught mid-file"
    lines = by_name(whole_lines(out))
    assert lines["ok.txt"]["verdict"] == "clean"
    for name in ("grows.bin", "shrinks.bin"):
        assert lines[name]["verdict"] == "error", lines[name]
        assert lines[name]["error"]["code"] == "changed", lines[name]["error"]
    assert state.uploads == 1  # a changed file is never uploaded


@pytest.mark.parametrize("engine", ["yara", "metadefender"])
async def test_unreadable_files_and_folders_get_an_error_line_each(tmp_path: Path, engine: str) -> None:
    root = tmp_path / "data"
    (root / "locked").mkdir(parents=True)
    (root / "locked" / "inside.txt").write_bytes(b"never listed")
    (root / "ok.txt").write_bytes(b"readable\n")
    (root / "secret.txt").write_bytes(b"not for you\n")
    (root / "secret.txt").chmod(0)
    (root / "locked").chmod(0)
    out = tmp_path / "out.ndjson"
    app = make_app(api_keys=KEY, scan_seconds=0.05)
    try:
        async with serve(app) as url:
            extra = ["--engine", "metadefender", "--config", str(write_config(tmp_path, url))]
            argv = ["scan", str(root), "--output", str(out), "--progress", "none"]
            proc = spawn([*argv, *(extra if engine == "metadefender" else [])], **privileges())
            try:
                code, _ = await wait_exit(proc, 120)
                assert proc.stderr is not None
                err = proc.stderr.read().decode()
            finally:
                kill_quietly(proc)
    finally:
        (root / "locked").chmod(0o755)
    assert code == 2, err
    assert "Traceback" not in err
    lines = by_name(whole_lines(out))
    assert set(lines) == {"ok.txt", "secret.txt", "locked"}
    assert lines["ok.txt"]["verdict"] == "clean"
    assert lines["secret.txt"]["verdict"] == "error"
    assert lines["secret.txt"]["error"]["code"] == "unreadable"
    assert lines["locked"]["verdict"] == "error"
    assert lines["locked"]["error"]["code"] == "unreadable_dir"
    if engine == "metadefender":
        assert app[STATE].uploads == 1


def privileges() -> dict[str, Any]:
    drop = no_privileges_over_files()
    return {} if drop is None else {"preexec_fn": drop}


def small_tree(root: Path, n: int) -> Path:
    root.mkdir()
    for i in range(n):
        (root / f"f{i:05}.txt").write_bytes(b"%d\n" % i)
    return root


def one_clear_line(err: bytes, *, says: str) -> None:
    text = err.decode()
    assert "Traceback" not in text and "Exception" not in text, text
    # a dead sink's line goes on with what reached the output ("; N verdict lines reached ...")
    assert len(text.splitlines()) == 1 and text.startswith(f"scanner: error: {says}"), text


def test_a_full_disk_stops_the_run_with_exit_2_and_one_clear_line(tmp_path: Path) -> None:
    root = small_tree(tmp_path / "data", 50)
    proc = subprocess.run(
        scanner_argv("scan", str(root), "--output", "/dev/full"),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    one_clear_line(proc.stderr, says="no space left on the device holding /dev/full")


@pytest.mark.parametrize("read_first", [0, 1000], ids=["closed-before", "closed-mid-run"])
def test_a_closed_stdout_stops_the_run_with_exit_2_and_one_clear_line(
    tmp_path: Path, read_first: int
) -> None:
    # `scanner scan DIR | head -c N`: the reader goes away; 3000 lines are far more than a pipe holds
    root = small_tree(tmp_path / "data", 3000)
    r, w = os.pipe()
    with os.fdopen(r, "rb", buffering=0) as reader:
        with os.fdopen(w, "wb") as writer:
            proc = subprocess.Popen(
                scanner_argv("scan", str(root), "--progress", "none"), stdout=writer, stderr=subprocess.PIPE
            )
        got = b""
        while len(got) < read_first:
            chunk = reader.read(read_first - len(got))
            assert chunk, "the scanner wrote nothing"
            got += chunk
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    one_clear_line(err, says="output stdout was closed by its reader")
