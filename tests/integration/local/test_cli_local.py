"""End to end: the scanner command as a subprocess on a real tree with awkward names and special files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from scanner.testing import eicar

from .conftest import run_scanner

pytestmark = pytest.mark.slow

AWKWARD = [
    "plain.txt",
    "with space.txt",
    "new\nline.txt",
    'quote"s.txt',
    "-leading-dash.txt",
    "--help",
    "caf\u00e9-\u65e5\u672c.txt",
    "sub dir/inner.txt",
]


def build_tree(root: Path) -> set[str]:
    """A tree of every awkward case; returns the absolute paths of its regular files."""
    files: dict[str, bytes] = {name: b"clean content\n" for name in AWKWARD}
    files["eicar.com"] = eicar()
    files["deep/er/eicar with space.txt"] = b"prefix " + eicar() + b" suffix"
    files["empty"] = b""
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    big = root / "big-20MB.bin"
    with big.open("wb") as f:
        f.truncate(20 * 1024 * 1024)
    regular = {str(root / rel) for rel in files} | {str(big)}
    # an undecodable byte in a name: valid on Linux, not UTF-8
    raw = os.fsencode(str(root)) + b"/bad-\xff-name.txt"
    with open(raw, "wb") as f:
        f.write(b"clean")
    regular.add(os.fsdecode(raw))
    os.mkfifo(root / "a-fifo")
    (root / "loop").symlink_to(root)
    (root / "dangling").symlink_to(root / "does-not-exist")
    (root / "link-to-eicar").symlink_to(root / "eicar.com")
    return regular


def read_lines(path: Path) -> list[dict[str, object]]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")
    return [orjson.loads(line) for line in data.splitlines()]


def test_awkward_tree_one_line_per_regular_file(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    regular = build_tree(root)
    out = tmp_path / "out.ndjson"
    proc = run_scanner(["scan", str(root), "--output", str(out)], timeout=120)
    assert proc.returncode == 1, proc.stderr.decode()
    lines = read_lines(out)
    targets = Counter(str(line["target"]).replace("\\xff", "\udcff") for line in lines)
    assert targets == dict.fromkeys(regular, 1)
    by_target = {str(line["target"]): line for line in lines}
    assert by_target[str(root / "eicar.com")]["verdict"] == "infected"
    assert by_target[str(root / "deep/er/eicar with space.txt")]["verdict"] == "infected"
    assert by_target[str(root / "eicar.com")]["findings"] == [{"name": "EICAR-Test-File", "engine": "yara"}]
    assert by_target[str(root / "empty")]["verdict"] == "clean"
    assert by_target[str(root / "empty")]["sha256"] == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    big = by_target[str(root / "big-20MB.bin")]
    assert big["verdict"] == "clean" and big["size"] == 20 * 1024 * 1024
    for line in lines:
        assert {"target", "kind", "engine", "verdict", "findings", "error"} <= line.keys()
        assert line["kind"] == "file" and line["engine"] == "yara"
        assert line["verdict"] in ("clean", "infected")
    stderr = proc.stderr.decode()
    assert "2 infected" in stderr and "Traceback" not in stderr


def test_follow_symlinks_still_one_line_per_file(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    regular = build_tree(root)
    proc = run_scanner(["scan", str(root), "--follow-symlinks", "-q"])
    assert proc.returncode == 1
    lines = [orjson.loads(x) for x in proc.stdout.splitlines()]
    # the file link becomes a target of its own; the loop and the dangling link add nothing
    assert len(lines) == len(regular) + 1
    assert len({line["target"] for line in lines}) == len(lines)


def test_clean_tree_exits_0_and_stdout_is_only_verdicts(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "b.txt").write_text("world")
    proc = run_scanner(["scan", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr
    lines = [orjson.loads(x) for x in proc.stdout.splitlines()]
    assert sorted(x["target"] for x in lines) == [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    assert b"2 clean" in proc.stderr


def test_unreadable_file_is_an_error_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "ok.txt").write_text("fine")
    gone = tmp_path / "gone.txt"
    gone.write_text("x")
    # stdin names a file that does not exist: one error line, the rest scanned, exit 2
    targets = b"".join(
        orjson.dumps({"kind": "file", "target": str(p)}) + b"\n"
        for p in (tmp_path / "ok.txt", tmp_path / "nope")
    )
    proc = run_scanner(["scan", "-"], input=targets)
    assert proc.returncode == 2
    lines = {x["target"]: x for x in map(orjson.loads, proc.stdout.splitlines())}
    assert lines[str(tmp_path / "ok.txt")]["verdict"] == "clean"
    assert lines[str(tmp_path / "nope")]["verdict"] == "error"
    assert lines[str(tmp_path / "nope")]["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scan", "/definitely/not/here"], "no such file or directory"),
        (["scan", ".", "--engine", "nosuch"], "unknown engine 'nosuch'"),
        (["scan", ".", "--config", "/no/such.toml"], "not found"),
        (["scan", ".", "--jobs", "zero"], "not a whole number"),
        (["scan", ".", "--min-size", "lots"], "not a size"),
        (["scan", ".", "--modified-since", "yesterday-ish"], "not a time"),
        (["frobnicate"], "invalid choice"),
        ([], "a command is required"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: list[str], message: str) -> None:
    proc = run_scanner(args)
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert err.count("\n") == 1, err
    assert err.startswith("scanner: error: ") and message in err
    assert proc.stdout == b""


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[engines.yara]\nrules = ["${NOT_SET_ANYWHERE}"]\n')
    proc = run_scanner(["scan", str(tmp_path), "--config", str(cfg)])
    assert proc.returncode == 2
    assert proc.stderr.decode() == (
        "scanner: error: engines.yara.rules[0]: environment variable NOT_SET_ANYWHERE is not set\n"
    )


def test_engine_that_cannot_take_the_source_is_rejected_before_the_run(tmp_path: Path) -> None:
    sites = tmp_path / "sites.txt"
    sites.write_text("example.com\n")
    proc = run_scanner(["scan", f"sites:{sites}"])
    assert proc.returncode == 2
    assert b"engine yara cannot scan site targets" in proc.stderr


def test_malformed_stdin_line_is_an_error_line_naming_it_and_the_rest_is_scanned(tmp_path: Path) -> None:
    (tmp_path / "ok.txt").write_text("fine")
    ok = orjson.dumps({"kind": "file", "target": str(tmp_path / "ok.txt")})
    proc = run_scanner(["scan", "-"], input=ok + b"\nnot json\n" + ok + b"\n")
    assert proc.returncode == 2
    lines = [orjson.loads(x) for x in proc.stdout.splitlines()]
    assert [x["verdict"] for x in lines].count("clean") == 2
    (bad,) = [x for x in lines if x["verdict"] == "error"]
    assert bad["target"] == "stdin:2" and bad["error"]["code"] == "bad_target"
    assert bad["error"]["message"] == "not valid JSON: not json"
    assert b"Traceback" not in proc.stderr


def test_help_teaches() -> None:
    proc = run_scanner(["scan", "--help"])
    assert proc.returncode == 0
    text = proc.stdout.decode()
    for needle in ("s3://bucket", "urls:FILE", "exit status", "examples:", "--output", "--exclude"):
        assert needle in text
    assert run_scanner(["--version"]).stdout.startswith(b"scanner ")


def test_ctrl_c_mid_run_leaves_whole_lines_and_exits_promptly(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"f{i}.txt").write_text("x")
    out = tmp_path / "out.ndjson"
    proc = subprocess.Popen(
        [sys.executable, "-m", "scanner", "scan", "-", "--output", str(out)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    for i in range(50):
        proc.stdin.write(orjson.dumps({"kind": "file", "target": str(tmp_path / f"f{i}.txt")}) + b"\n")
    proc.stdin.flush()  # stdin stays open: the run is waiting for more targets
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 50):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    start = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - start < 10
    assert proc.returncode == 2
    lines = read_lines(out)
    assert len(lines) == 50
    assert b"interrupted" in err and b"Traceback" not in err
