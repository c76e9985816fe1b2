"""Resume and incremental rescans through the scanner command, with real kills."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
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


def make_tree(root: Path, n: int) -> None:
    for d in range(10):
        (root / f"d{d}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"d{i % 10}" / f"f{i}.txt").write_bytes(b"%d" % i)
    (root / "d0" / "eicar.com").write_bytes(eicar())


def lines_of(path: Path) -> list[dict[str, object]]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "a torn line"
    return [orjson.loads(x) for x in data.splitlines()]


def test_second_run_over_unchanged_tree_scans_nothing_and_a_touched_file_only_it(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    make_tree(tree, 200)
    state, out = tmp_path / "s.db", tmp_path / "out.ndjson"
    args = ["scan", str(tree), "--state", str(state), "--output", str(out), "--skip-unchanged"]
    first = run_scanner(args)
    assert first.returncode == 1
    assert len(lines_of(out)) == 201

    second = run_scanner(args)
    assert second.returncode == 0, second.stderr
    assert lines_of(out) == []
    assert b"201 unchanged" in second.stderr

    touched = tree / "d3" / "f3.txt"
    touched.write_bytes(b"new content")
    os.utime(touched, (time.time() + 5, time.time() + 5))
    third = run_scanner([*args, "--rescan-infected"])
    assert third.returncode == 1
    assert sorted(str(x["target"]) for x in lines_of(out)) == sorted(
        [str(touched), str(tree / "d0/eicar.com")]
    )

    fourth = run_scanner([*args, "--emit-skipped"])
    skipped = lines_of(out)
    assert fourth.returncode == 0
    assert len(skipped) == 201 and {x["verdict"] for x in skipped} == {"skipped"}
    assert {x["error"]["code"] for x in skipped} == {"unchanged"}  # type: ignore[index]


def test_a_file_name_that_is_not_utf8_is_recorded_and_skipped_when_unchanged(tmp_path: Path) -> None:
    # it used to end every run with --state in an internal error: SQLite refused the lone surrogate
    tree = tmp_path / "t"
    tree.mkdir()
    with open(os.fsencode(tree) + b"/bad-\xff-name.txt", "wb") as f:
        f.write(b"clean")
    state, out = tmp_path / "s.db", tmp_path / "out.ndjson"
    args = ["scan", str(tree), "--state", str(state), "--output", str(out), "--skip-unchanged"]
    first = run_scanner(args)
    assert first.returncode == 0, first.stderr
    assert [x["target"] for x in lines_of(out)] == [f"{tree}/bad-\\xff-name.txt"]
    second = run_scanner(args)
    assert second.returncode == 0, second.stderr
    assert lines_of(out) == [] and b"1 unchanged" in second.stderr


def test_skip_flags_need_state() -> None:
    proc = run_scanner(["scan", ".", "--skip-unchanged"])
    assert proc.returncode == 2
    assert (
        proc.stderr
        == b"scanner: error: --skip-unchanged, --rescan-infected and --emit-skipped need --state\n"
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_at_random_moments_then_resume_gives_exactly_one_line_each(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    tree = tmp_path / "t"
    n = 6000
    make_tree(tree, n)
    state, out = tmp_path / "s.db", tmp_path / "out.ndjson"
    args = [
        sys.executable,
        "-m",
        "scanner",
        "scan",
        str(tree),
        "--state",
        str(state),
        "--output",
        str(out),
        "-q",
    ]
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
        # kill once some lines are out (the run is under way), at a random point after that
        deadline = time.monotonic() + 60
        want = rng.randint(1, 40) * 100
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.stat().st_size > want * 150:
                break
            time.sleep(0.01)
        time.sleep(rng.random() * 0.2)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    final = subprocess.run(args, capture_output=True, timeout=300, check=False)
    assert final.returncode == 1, final.stderr
    lines = lines_of(out)
    counts = Counter(str(x["target"]) for x in lines)
    assert len(counts) == n + 1, f"{n + 1 - len(counts)} targets have no line after {kills} kills"
    assert max(counts.values()) == 1, [t for t, c in counts.items() if c > 1][:5]
    assert kills >= 1


def test_finished_run_is_not_resumed_a_new_report_starts(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    make_tree(tree, 20)
    args = ["scan", str(tree), "--state", str(tmp_path / "s.db"), "--output", str(tmp_path / "o.ndjson")]
    assert run_scanner(args).returncode == 1
    assert run_scanner(args).returncode == 1
    assert len(lines_of(tmp_path / "o.ndjson")) == 21  # the second run rewrote the report, not appended


def test_a_resumed_run_exits_for_the_whole_report_not_only_its_own_part(tmp_path: Path) -> None:
    # An attempt killed after its last line but before it marked the run finished leaves nothing
    # to scan; the resumed run must still exit 1, since the report it completes holds a finding.
    tree = tmp_path / "t"
    make_tree(tree, 30)
    state, out = tmp_path / "s.db", tmp_path / "out.ndjson"
    args = ["scan", str(tree), "--state", str(state), "--output", str(out)]
    assert run_scanner(args).returncode == 1
    with sqlite3.connect(state) as db:
        assert db.execute("UPDATE runs SET finished = 0").rowcount == 1
    resumed = run_scanner(args)
    assert resumed.returncode == 1, resumed.stderr
    assert b"31 already done" in resumed.stderr
    assert len(lines_of(out)) == 31  # nothing written twice


def stored(state: Path) -> dict[str, tuple[str, str | None, float]]:
    with sqlite3.connect(state) as db:
        return {
            k: (s, v, at)
            for k, s, v, at in db.execute("SELECT identity, status, version, scanned_at FROM targets")
        }


def test_emit_skipped_leaves_the_stored_verdicts_so_nightly_runs_keep_skipping(tmp_path: Path) -> None:
    # It used to record "skipped" over each verdict: every other nightly run rescanned everything.
    tree = tmp_path / "t"
    make_tree(tree, 30)
    state, out = tmp_path / "s.db", tmp_path / "out.ndjson"
    args = ["scan", str(tree), "--state", str(state), "--output", str(out), "--skip-unchanged"]
    assert run_scanner(args).returncode == 1
    before = stored(state)
    assert {s for s, _, _ in before.values()} == {"clean", "infected"}
    for _ in range(2):
        proc = run_scanner([*args, "--emit-skipped"])
        assert proc.returncode == 0, proc.stderr
        assert {x["verdict"] for x in lines_of(out)} == {"skipped"} and len(lines_of(out)) == 31
        assert stored(state) == before
    quiet = run_scanner(args)
    assert quiet.returncode == 0, quiet.stderr
    assert lines_of(out) == [] and b"31 unchanged" in quiet.stderr


def test_a_resumed_emit_skipped_run_writes_no_line_twice_and_keeps_the_verdicts(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    make_tree(tree, 30)
    state, out = tmp_path / "s.db", tmp_path / "out.ndjson"
    args = ["scan", str(tree), "--state", str(state), "--output", str(out), "--skip-unchanged"]
    assert run_scanner(args).returncode == 1
    before = stored(state)
    emit = [*args, "--emit-skipped"]
    assert run_scanner(emit).returncode == 0
    # killed after its last line but before it marked the run finished; and again with the last
    # five lines past its last commit, as a kill between the write and the commit leaves them
    with sqlite3.connect(state) as db:
        assert db.execute("UPDATE runs SET finished = 0").rowcount == 1
        cut = len(b"".join(out.read_bytes().splitlines(keepends=True)[:-5]))
        db.execute("UPDATE runs SET committed_offset = ?", (cut,))
    resumed = run_scanner(emit)
    assert resumed.returncode == 0, resumed.stderr  # the report holds skipped lines only
    assert b"31 already done" in resumed.stderr
    assert len(lines_of(out)) == 31 and {x["verdict"] for x in lines_of(out)} == {"skipped"}
    assert stored(state) == before
    quiet = run_scanner(args)
    assert lines_of(out) == [] and b"31 unchanged" in quiet.stderr


def test_a_run_with_state_alone_records_versions_a_skip_unchanged_run_matches(tmp_path: Path) -> None:
    # The walk stats nothing without --skip-unchanged; the version is the one the engine read.
    tree = tmp_path / "t"
    make_tree(tree, 50)
    state, out = tmp_path / "s.db", tmp_path / "out.ndjson"
    base = ["scan", str(tree), "--state", str(state), "--output", str(out)]
    assert run_scanner(base).returncode == 1
    assert all(v is not None and v.startswith("f:") for _, v, _ in stored(state).values())
    second = run_scanner([*base, "--skip-unchanged"])
    assert second.returncode == 0, second.stderr
    assert lines_of(out) == [] and b"51 unchanged" in second.stderr
    touched = tree / "d4" / "f4.txt"
    touched.write_bytes(b"other")
    os.utime(touched, (time.time() + 5, time.time() + 5))
    third = run_scanner([*base, "--skip-unchanged"])
    assert third.returncode == 0, third.stderr
    assert [x["target"] for x in lines_of(out)] == [str(touched)]


def test_an_undecodable_name_and_its_backslash_spelling_never_share_a_verdict(tmp_path: Path) -> None:
    # Both names' lines say ".../a\\xff"; they used to share one state row, so EICAR written under
    # the literal name with the other file's size and mtime was skipped as unchanged, never scanned.
    tree = tmp_path / "t"
    tree.mkdir()
    raw = os.fsencode(tree) + b"/a\xff"
    literal = tree / "a\\xff"
    with open(raw, "wb") as f:
        f.write(b"x" * len(eicar()))
    state, out = tmp_path / "s.db", tmp_path / "out.ndjson"
    args = ["scan", str(tree), "--state", str(state), "--output", str(out), "--skip-unchanged"]
    first = run_scanner(args)
    assert first.returncode == 0, first.stderr
    assert [(x["target"], x["path_bytes"]) for x in lines_of(out)] == [(str(literal), raw.hex())]
    st = os.stat(raw)
    literal.write_bytes(eicar())
    os.utime(literal, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = run_scanner(args)
    assert second.returncode == 1, second.stderr
    got = lines_of(out)
    assert [(x["target"], x["verdict"], "path_bytes" in x) for x in got] == [
        (str(literal), "infected", False)
    ]
    third = run_scanner(args)
    assert third.returncode == 0 and lines_of(out) == [] and b"2 unchanged" in third.stderr


def unfinished(state: Path, offset: int | None = None) -> None:
    """As a kill after the run's last commit leaves the store (at ``offset``, if given)."""
    with sqlite3.connect(state) as db:
        assert db.execute("UPDATE runs SET finished = 0").rowcount == 1
        if offset is not None:
            db.execute("UPDATE runs SET committed_offset = ?", (offset,))


@pytest.mark.parametrize("cut", ["deleted", "emptied", "shortened"])
def test_a_report_deleted_or_cut_after_a_kill_is_written_whole_by_the_rerun(tmp_path: Path, cut: str) -> None:
    # The output is claimed (created) before the store decides whether to resume: a deleted report
    # looked present, the run resumed, and every target the killed attempt committed was left out.
    tree = tmp_path / "t"
    make_tree(tree, 30)
    state, out = tmp_path / "s.db", tmp_path / "out.ndjson"
    args = ["scan", str(tree), "--state", str(state), "--output", str(out)]
    assert run_scanner(args).returncode == 1
    unfinished(state)
    if cut == "deleted":
        out.unlink()
    elif cut == "emptied":
        out.write_bytes(b"")
    else:
        out.write_bytes(b"".join(out.read_bytes().splitlines(keepends=True)[:10]))
    rerun = run_scanner(args)
    assert rerun.returncode == 1, rerun.stderr
    assert b"already done" not in rerun.stderr and b"resuming" not in rerun.stderr
    counts = Counter(str(x["target"]) for x in lines_of(out))
    assert len(counts) == 31 and set(counts.values()) == {1}


def stdin_lines(tree: Path) -> bytes:
    return b"".join(
        [
            orjson.dumps({"kind": "file", "target": str(tree / "d0" / "f0.txt")}) + b"\n",
            orjson.dumps({"kind": "file", "target": str(tree / "missing.txt")}) + b"\n",  # not_found
            b"{not json\n",  # bad_target, named stdin:3
            b'{"kind": "file", "target": "/x/\xff"}\n',  # not UTF-8: bad_target, named stdin:4
            orjson.dumps({"kind": "bogus", "target": "/data/x"}) + b"\n",  # bad_target named /data/x
        ]
    )


def test_error_lines_from_the_listing_are_not_written_again_by_a_resumed_run(tmp_path: Path) -> None:
    # A target carrying a listing error was never "done": a resumed run wrote its line a second time.
    tree = tmp_path / "t"
    make_tree(tree, 1)
    state, out = tmp_path / "s.db", tmp_path / "out.ndjson"
    args = ["scan", "-", "--state", str(state), "--output", str(out)]
    first = run_scanner(args, input=stdin_lines(tree))
    assert first.returncode == 2, first.stderr
    assert sorted(x["verdict"] for x in lines_of(out)) == ["clean"] + ["error"] * 4  # type: ignore[type-var]
    whole = out.read_bytes()
    unfinished(state)
    resumed = run_scanner(args, input=stdin_lines(tree))
    assert resumed.returncode == 2, resumed.stderr  # the report it completes holds errors
    assert b"5 already done" in resumed.stderr
    assert out.read_bytes() == whole
    # killed with the error lines past the last commit: read back from the report, and still done
    unfinished(state, len(b"".join(whole.splitlines(keepends=True)[:1])))
    resumed = run_scanner(args, input=stdin_lines(tree))
    assert resumed.returncode == 2, resumed.stderr
    assert b"5 already done" in resumed.stderr
    assert out.read_bytes() == whole
    # an error is never "unchanged": the next run tries each of them again
    again = run_scanner([*args, "--skip-unchanged"], input=stdin_lines(tree))
    assert again.returncode == 2, again.stderr
    assert [x["verdict"] for x in lines_of(out)].count("error") == 4


def test_a_malformed_line_naming_a_file_never_stands_for_that_file(tmp_path: Path) -> None:
    # {"kind": "bogus", "target": P} is an error line named P; it shared the state row of a real
    # line for P, so after a kill between the two the real one was "already done", never scanned.
    tree = tmp_path / "t"
    make_tree(tree, 1)
    infected = str(tree / "d0" / "eicar.com")
    bogus = orjson.dumps({"kind": "bogus", "target": infected}) + b"\n"
    real = orjson.dumps({"kind": "file", "target": infected}) + b"\n"
    state, out = tmp_path / "s.db", tmp_path / "out.ndjson"
    args = ["scan", "-", "--state", str(state), "--output", str(out)]
    # the attempt that wrote and committed the malformed line's verdict, then was killed
    assert run_scanner(args, input=bogus).returncode == 2
    unfinished(state)
    resumed = run_scanner(args, input=bogus + real)
    assert resumed.returncode == 1, resumed.stderr
    got = sorted((str(x["target"]), str(x["verdict"])) for x in lines_of(out))
    assert got == [(infected, "error"), (infected, "infected")]
    assert b"1 already done" in resumed.stderr


def test_a_same_size_rewrite_that_restores_the_mtime_is_rescanned(tmp_path: Path) -> None:
    # a file's content version is its size, mtime, ctime and inode: `touch -d` or a restore that
    # puts the old mtime back cannot restore the ctime, and a file renamed over another has its
    # own inode
    tree = tmp_path / "t"
    tree.mkdir()
    rewritten, renamed, kept = tree / "rewritten.com", tree / "renamed.com", tree / "kept.txt"
    for p in (rewritten, renamed, kept):
        p.write_bytes(b"X" * len(eicar()))
    state, out = tmp_path / "s.db", tmp_path / "out.ndjson"
    args = ["scan", str(tree), "--state", str(state), "--output", str(out), "--skip-unchanged"]
    assert run_scanner(args).returncode == 0
    before = {p: os.stat(p) for p in (rewritten, renamed)}
    time.sleep(0.02)  # a ctime tick apart, whatever the file system's granularity
    rewritten.write_bytes(eicar())  # same size
    other = tree / ".new"
    other.write_bytes(eicar())
    os.replace(other, renamed)
    for p, st in before.items():
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert (os.stat(p).st_size, os.stat(p).st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    second = run_scanner(args)
    assert second.returncode == 1, second.stderr
    got = {str(x["target"]): x["verdict"] for x in lines_of(out)}
    assert got == {str(rewritten): "infected", str(renamed): "infected"}
    assert b"1 unchanged" in second.stderr
