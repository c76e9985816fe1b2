"""End to end: the walk's edges through ``scanner scan`` as a subprocess.

A tree deeper than the kernel's path limit, a link named as SOURCE, and a run whose report and
state store sit inside the directory it scans.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import orjson
import pytest

from scanner.testing import eicar

from .conftest import run_scanner

pytestmark = pytest.mark.slow

PATH_MAX = 4096


def lines_of(data: bytes) -> list[dict[str, object]]:
    assert data == b"" or data.endswith(b"\n")
    return [orjson.loads(line) for line in data.splitlines()]


def build_deep(root: Path) -> dict[str, bytes]:
    """22 levels of 250-byte names (over 5,500 bytes of path), made a level at a time by
    descriptor since no path to the bottom is short enough to name; 7 files, the deepest EICAR."""
    files: dict[str, bytes] = {}
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    path = str(root)
    try:
        for level in range(22):
            name = f"{level:02}" + "d" * 248
            os.mkdir(name, dir_fd=fd)
            down = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, path = down, f"{path}/{name}"
            if level in (0, 10, 15, 16, 18, 20, 21):
                data = eicar() if level == 21 else b"clean at level %d\n" % level
                f = os.open(f"f{level}.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
                os.write(f, data)
                os.close(f)
                files[f"{path}/f{level}.txt"] = data
    finally:
        os.close(fd)
    return files


def test_a_tree_deeper_than_path_max_is_walked_and_scanned_to_the_bottom(tmp_path: Path) -> None:
    root = tmp_path / "deep"
    root.mkdir()
    files = build_deep(root)
    too_long = {p for p in files if len(os.fsencode(p)) >= PATH_MAX}
    assert 4 <= len(too_long) < len(files)  # the test needs both kinds
    proc = run_scanner(["scan", str(root), "-q"])
    lines = lines_of(proc.stdout)
    assert Counter(str(x["target"]) for x in lines) == dict.fromkeys(files, 1)
    verdicts = {str(x["target"]): x for x in lines}
    for path, data in files.items():
        line = verdicts[path]
        assert line["verdict"] == ("infected" if data == eicar() else "clean"), line
        assert line["size"] == len(data)
    assert proc.returncode == 1, proc.stderr.decode()


def test_a_link_named_as_source_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (real / "sub" / "eicar.com").write_bytes(eicar())
    (real / "clean.txt").write_text("clean")
    (tmp_path / "to-dir").symlink_to(real)
    (tmp_path / "to-file").symlink_to(real / "sub" / "eicar.com")
    proc = run_scanner(["scan", str(tmp_path / "to-dir"), str(tmp_path / "to-file"), "-q"])
    assert proc.returncode == 1, proc.stderr.decode()
    got = {str(x["target"]): x["verdict"] for x in lines_of(proc.stdout)}
    # the names the user gave, not the links' targets
    assert got == {
        str(tmp_path / "to-dir" / "sub" / "eicar.com"): "infected",
        str(tmp_path / "to-dir" / "clean.txt"): "clean",
        str(tmp_path / "to-file"): "infected",
    }


def test_a_link_below_the_source_is_still_not_followed(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "eicar.com").write_bytes(eicar())
    (tmp_path / "tree" / "link").symlink_to(tmp_path / "eicar.com")
    proc = run_scanner(["scan", str(tmp_path / "tree"), "-q"])
    assert (proc.returncode, proc.stdout) == (0, b"")


def test_a_dangling_link_named_as_source_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    proc = run_scanner(["scan", str(tmp_path / "dangling")])
    assert proc.returncode == 2 and proc.stdout == b""
    err = proc.stderr.decode().strip().splitlines()
    assert err == [
        f"scanner: error: {tmp_path / 'dangling'}: a symbolic link to '{tmp_path / 'nowhere'}', "
        "which does not exist"
    ]


def test_the_runs_own_report_and_state_are_never_targets(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(300):  # enough lines for the report to be written while the walk still runs
        (tree / f"f{i:03}.txt").write_text(f"clean {i}\n")
    report, state = tree / "report.ndjson", tree / "state.db"
    expected = {str(tree / f"f{i:03}.txt") for i in range(300)}
    for attempt in range(2):  # the rerun finds the report, the store and its -wal there already
        proc = run_scanner(["scan", str(tree), "-o", str(report), "--state", str(state), "-q"])
        assert proc.returncode == 0, (attempt, proc.stderr.decode())
        targets = Counter(str(x["target"]) for x in lines_of(report.read_bytes()))
        assert targets == dict.fromkeys(expected, 1), attempt
    assert state.exists()
    # reached by another spelling (a link to the tree), the report is still known for what it is
    (tmp_path / "alias").symlink_to(tree)
    proc = run_scanner(["scan", str(tree), "-o", str(tmp_path / "alias" / "report.ndjson"), "-q"])
    assert proc.returncode == 0, proc.stderr.decode()
    targets = Counter(str(x["target"]) for x in lines_of(report.read_bytes()))
    assert expected <= targets.keys() and str(report) not in targets  # the store is no run's own now
