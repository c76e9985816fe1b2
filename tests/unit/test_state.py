"""The state store on a real SQLite file: runs, lookups, group commits, reconcile, caches."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import orjson
import pytest

from scanner.model import ErrorInfo, Finding, Kind, Outcome, Status, Target, Verdict, encode_verdict
from scanner.resume import Admission, Policy
from scanner.state import DONE, SCAN, UNCHANGED, StateStore, content_version, file_version, identity

pytestmark = pytest.mark.anyio


def verdict(t: Target, status: Status = Status.CLEAN, sha: str | None = None) -> Verdict:
    return Verdict.of(t, "yara", Outcome(status, (Finding("X"),) if status.is_finding else (), sha256=sha))


def test_identity_and_version() -> None:
    assert identity(Target(Kind.FILE, "/a")) == "file:/a"
    assert identity(Target(Kind.S3, "s3://b/k", version_id="v1")) == "s3:s3://b/k#v1"
    assert content_version(Target(Kind.FILE, "/a")) is None
    assert content_version(Target(Kind.FILE, "/a", size=3, mtime=1.5)) == "m:3:1.5"
    assert content_version(Target(Kind.S3, "s3://b/k", etag='"e"', size=3)) == 'e:"e":3'


async def test_new_run_then_resume_then_finish(tmp_path: Path) -> None:
    store = await StateStore.open(str(tmp_path / "s.db"))
    out = tmp_path / "out.ndjson"
    out.write_bytes(b"")
    first = await store.begin_run(str(out), "yara")
    assert not first.resumed
    again = await store.begin_run(str(out), "yara")
    assert again.resumed and again.run_id == first.run_id
    assert not (await store.begin_run(str(out), "metadefender")).resumed  # another engine: a new run
    fresh = await store.begin_run(str(out), "yara")
    await store.finish_run(str(out), fresh.run_id)
    assert not (await store.begin_run(str(out), "yara")).resumed
    assert not (await store.begin_run(None, "yara")).resumed  # stdout can never resume
    await store.aclose()


async def test_run_ids_are_short_and_never_reused_across_stores_opened_at_once(tmp_path: Path) -> None:
    # every row a run writes carries its id: a few bytes, and two processes on one store never share one
    path = str(tmp_path / "s.db")
    first, second = await StateStore.open(path), await StateStore.open(path)
    ids = [
        (await store.begin_run(str(tmp_path / f"o{i}"), "yara")).run_id
        for i in range(20)
        for store in (first, second)
    ]
    ids.append((await first.begin_run(None, "yara")).run_id)
    assert len(set(ids)) == len(ids) and all(len(i) <= 4 for i in ids), ids
    await first.aclose()
    await second.aclose()
    reopened = await StateStore.open(path)
    assert (await reopened.begin_run(None, "yara")).run_id not in ids
    await reopened.aclose()


async def test_commit_lookup_and_offset(tmp_path: Path) -> None:
    store = await StateStore.open(str(tmp_path / "s.db"))
    run = await store.begin_run(str(tmp_path / "o"), "yara")
    targets = [Target(Kind.FILE, f"/f{i}", size=i, mtime=1.0) for i in range(1200)]
    store.record([verdict(t) for t in targets[:1000]], run.run_id)
    assert await store.lookup("yara", targets) == {}  # buffered, not yet committed
    await store.commit(str(tmp_path / "o"), run.run_id, 4242)
    rows = await store.lookup("yara", targets)
    assert len(rows) == 1000  # lookups cross the 500-parameter chunks
    assert rows["file:/f7"].version == "m:7:1.0" and rows["file:/f7"].run_id == run.run_id
    assert await store.lookup("other-engine", targets) == {}
    await store.aclose()
    reopened = await StateStore.open(str(tmp_path / "s.db"))
    (tmp_path / "o").write_bytes(b"x" * 4242)  # the output still holds what was committed
    assert (await reopened.begin_run(str(tmp_path / "o"), "yara")).committed_offset == 4242
    await reopened.aclose()


async def test_each_row_keeps_its_own_sha256_version_and_status(tmp_path: Path) -> None:
    # a commit groups rows by shape (sha256 or not, version or not, status): every shape round-trips
    store = await StateStore.open(str(tmp_path / "s.db"))
    run = await store.begin_run(None, "yara")
    sha = "ab" * 32
    shapes = {
        "/both": (Target(Kind.FILE, "/both", size=5, mtime=2.5), sha, Status.CLEAN),
        "/sha": (Target(Kind.FILE, "/sha"), "cd" * 32, Status.INFECTED),
        "/version": (Target(Kind.FILE, "/version", size=1, mtime=1.0), None, Status.ERROR),
        "/neither": (Target(Kind.FILE, "/neither"), None, Status.CLEAN),
        "/etag": (Target(Kind.S3, "s3://b/k", etag='"e:1"', size=3), sha, Status.CLEAN),
    }
    store.record([verdict(t, status, sha=h) for t, h, status in shapes.values()], run.run_id)
    await store.commit()
    rows = await store.lookup("yara", [t for t, _, _ in shapes.values()])
    for t, h, status in shapes.values():
        row = rows[identity(t)]
        assert (row.version, row.sha256, row.status) == (content_version(t), h, status), t.target
    await store.aclose()


async def test_reconcile_records_lines_past_the_commit(tmp_path: Path) -> None:
    store = await StateStore.open(str(tmp_path / "s.db"))
    out = tmp_path / "out.ndjson"
    committed = b"".join(encode_verdict(verdict(Target(Kind.FILE, f"/c{i}"))) for i in range(3))
    extra = b"".join(encode_verdict(verdict(Target(Kind.FILE, f"/x{i}"))) for i in range(4))
    out.write_bytes(committed + extra + b'{"target": "/torn')
    run = await store.begin_run(str(out), "yara")
    assert await store.reconcile(str(out), len(committed), run.run_id) == 4
    rows = await store.lookup("yara", [Target(Kind.FILE, f"/x{i}") for i in range(4)])
    assert len(rows) == 4 and all(r.run_id == run.run_id for r in rows.values())
    await store.aclose()


async def test_content_cache_and_pending_references(tmp_path: Path) -> None:
    store = await StateStore.open(str(tmp_path / "s.db"))
    run = await store.begin_run(None, "yara")
    t = Target(Kind.FILE, "/a")
    store.submitted("yara", t, {"data_id": "d-1"})
    await store.commit()
    assert await store.pending("yara", t) == {"data_id": "d-1"}
    store.record([verdict(t, Status.INFECTED, sha="ab" * 32)], run.run_id)
    await store.commit()
    assert await store.pending("yara", t) is None  # the line is written: nothing in flight any more
    hit = await store.cached("yara", "ab" * 32, max_age=3600)
    assert hit is not None and hit.cached and hit.status is Status.INFECTED
    assert [f.name for f in hit.findings] == ["X"]
    assert await store.cached("yara", "ab" * 32, max_age=-1) is None
    assert await store.cached("yara", "cd" * 32, max_age=3600) is None
    await store.aclose()


async def test_an_undecodable_file_name_has_a_key_of_its_own(tmp_path: Path) -> None:
    # os.fsdecode(b"/d/a\xff") has a lone surrogate; its line spells it "/d/a\\xff", as it does a
    # name holding a literal backslash-x-f-f. Sharing one row let either stand for the other.
    bad = Target(Kind.FILE, "/d/a\udcff", size=1, mtime=1.0)
    literal = Target(Kind.FILE, "/d/a\\xff", size=1, mtime=1.0)
    assert identity(bad) == "file-bytes:" + b"/d/a\xff".hex()
    assert identity(literal) == "file:/d/a\\xff"
    store = await StateStore.open(str(tmp_path / "s.db"))
    out = tmp_path / "out.ndjson"
    out.write_bytes(encode_verdict(verdict(bad, Status.INFECTED)) + encode_verdict(verdict(literal)))
    run = await store.begin_run(str(out), "yara")
    store.record([verdict(bad, Status.INFECTED), verdict(literal)], run.run_id)
    await store.commit()
    rows = await store.lookup("yara", [bad, literal])
    assert {k: r.status for k, r in rows.items()} == {
        identity(bad): Status.INFECTED,
        identity(literal): Status.CLEAN,
    }
    # what a resumed run reads back from the lines are the same two keys
    other = await StateStore.open(str(tmp_path / "t.db"))
    assert await other.reconcile(str(out), 0, run.run_id) == 2
    rows = await other.lookup("yara", [bad, literal])
    assert {k: r.status for k, r in rows.items()} == {
        identity(bad): Status.INFECTED,
        identity(literal): Status.CLEAN,
    }
    await store.aclose()
    await other.aclose()


async def test_rows_keyed_by_the_old_ambiguous_spelling_are_dropped_once(tmp_path: Path) -> None:
    import sqlite3

    path = str(tmp_path / "s.db")
    store = await StateStore.open(path)
    run = await store.begin_run(None, "yara")
    plain = Target(Kind.FILE, "/d/plain", size=1, mtime=1.0)
    store.record([verdict(plain)], run.run_id)
    await store.commit()
    await store.aclose()
    with sqlite3.connect(path) as db:  # as a store written before keys by raw bytes
        db.execute(
            "INSERT INTO targets VALUES ('yara', 'file:/d/a\\xff', 'm:1:1.0', NULL, 'clean', 1e12, 'r')"
        )
        db.execute("DELETE FROM meta WHERE key = 'keys'")
    store = await StateStore.open(path)
    literal = Target(Kind.FILE, "/d/a\\xff", size=1, mtime=1.0)
    assert list(await store.lookup("yara", [plain, literal])) == ["file:/d/plain"]
    await store.aclose()
    with sqlite3.connect(path) as db:  # once: a row of that spelling written now stays
        db.execute(
            "INSERT INTO targets VALUES ('yara', 'file:/d/a\\xff', 'm:1:1.0', NULL, 'clean', 1e12, 'r')"
        )
    store = await StateStore.open(path)
    assert len(await store.lookup("yara", [literal])) == 1
    await store.aclose()


async def test_an_unchanged_skipped_line_leaves_the_row_as_it_was(tmp_path: Path) -> None:
    # --emit-skipped used to record "skipped" over the verdict: the next --skip-unchanged run then
    # rescanned everything (a skipped row is always retried)
    store = await StateStore.open(str(tmp_path / "s.db"))
    first = await store.begin_run(None, "yara")
    bad = Target(Kind.FILE, "/bad", size=1, mtime=1.0)
    good = Target(Kind.FILE, "/good", size=1, mtime=1.0)
    store.record([verdict(bad, Status.INFECTED, sha="ab" * 32), verdict(good)], first.run_id)
    await store.commit()
    before = await store.lookup("yara", [bad, good])
    out = tmp_path / "out.ndjson"
    out.write_bytes(b"")
    second = await store.begin_run(str(out), "yara")
    policy = Policy(skip_unchanged=True, emit_skipped=True)
    kept, _ = await Admission(store, "yara", second, policy)([bad, good])
    lines = [Verdict.of(t, "yara", o) for t, o in kept if o is not None]
    assert [v.status for v in lines] == [Status.SKIPPED] * 2
    store.record(lines[:1], second.run_id)
    await store.commit()
    # the second line is past the last commit when the run is killed: reconcile reads it back
    out.write_bytes(b"".join(map(encode_verdict, lines)))
    assert await store.reconcile(str(out), len(encode_verdict(lines[0])), second.run_id) == 1
    after = await store.lookup("yara", [bad, good])
    for key, row in after.items():
        was = before[key]
        assert (row.status, row.version, row.sha256, row.scanned_at) == (
            was.status,
            was.version,
            was.sha256,
            was.scanned_at,
        )
    fates = await store.triage("yara", [bad, good], skip_unchanged=True)
    assert [f for f, _ in fates] == [UNCHANGED, UNCHANGED]  # the next nightly run skips them again
    # the run that wrote the skipped lines, resumed, knows they are written, and that they said skipped
    resumed = await store.begin_run(str(out), "yara")
    assert resumed.resumed
    admission = Admission(store, "yara", resumed, policy)
    kept, dropped = await admission([bad, good])
    assert kept == [] and dropped == {"already done": 2}
    assert admission.carried == {Status.SKIPPED: 2}
    await store.aclose()


async def test_a_file_the_engine_read_is_recorded_at_the_version_it_read(tmp_path: Path) -> None:
    # without --skip-unchanged the walk does not stat: the version is the engine's fstat of the file
    store = await StateStore.open(str(tmp_path / "s.db"))
    run = await store.begin_run(None, "yara")
    (tmp_path / "u").write_bytes(b"12345")
    (tmp_path / "s").write_bytes(b"1234567")
    u, s = str(tmp_path / "u"), str(tmp_path / "s")
    unstatted = Target(Kind.FILE, u)
    statted = Target(Kind.FILE, s, size=7, mtime=2.25)
    sha, read = "ab" * 32, file_version(os.stat(u))
    store.record(
        [
            Verdict.of(unstatted, "yara", Outcome(Status.CLEAN, sha256=sha, size=5, version=read)),
            Verdict.of(statted, "yara", Outcome(Status.CLEAN, size=7, version=file_version(os.stat(s)))),
            Verdict.of(Target(Kind.FILE, "/n"), "yara", Outcome(Status.CLEAN, size=5)),
        ],
        run.run_id,
    )
    await store.commit()
    rows = await store.lookup("yara", [unstatted, statted, Target(Kind.FILE, "/n")])
    # the very string a statting walk gives the same file, so a --skip-unchanged run matches it
    walked = Target(Kind.FILE, u, size=5, version=file_version(os.stat(u)))
    assert rows[f"file:{u}"].version == content_version(walked) == read
    assert rows[f"file:{u}"].sha256 == "ab" * 32
    # the engine's over the listing's: the version of what was scanned, had the file changed since
    assert rows[f"file:{s}"].version == file_version(os.stat(s)) != content_version(statted)
    assert rows["file:/n"].version is None
    assert [f for f, _ in await store.triage("yara", [walked], skip_unchanged=True)] == [UNCHANGED]
    await store.aclose()


async def test_triage_one_answer_per_target_in_order(tmp_path: Path) -> None:
    store = await StateStore.open(str(tmp_path / "s.db"))
    old = await store.begin_run(None, "yara")
    seen = Target(Kind.FILE, "/seen", size=1, mtime=1.0)
    store.record([verdict(seen)], old.run_id)
    await store.commit()
    broken = Target(Kind.FILE, "/broken", error=ErrorInfo("cannot stat", "unreadable"))
    new = Target(Kind.FILE, "/new", size=1, mtime=1.0)
    batch = [seen, new, broken, seen]
    assert [f for f, _ in await store.triage("yara", batch)] == [SCAN] * 4
    fates = await store.triage("yara", batch, skip_unchanged=True)
    assert [f for f, _ in fates] == [UNCHANGED, SCAN, SCAN, UNCHANGED]
    assert fates[0][1] is None  # rows of unchanged targets only when asked for
    fates = await store.triage("yara", batch, skip_unchanged=True, rows=True)
    row = fates[0][1]
    assert row is not None and row.status is Status.CLEAN and row.version == "m:1:1.0"
    assert [f for f, _ in await store.triage("yara", batch, run_id=old.run_id)] == [DONE, SCAN, SCAN, DONE]
    assert [f for f, _ in await store.triage("yara", [])] == []
    await store.aclose()


async def test_triage_is_right_whichever_fate_its_answers_leave_out(tmp_path: Path) -> None:
    # Each batch's answer leaves out the fate most of the batch before had (nothing comes back a
    # target on a first run, nor on an unchanged rerun); batches that swing between mostly new,
    # mostly unchanged and mixed must get the same fates as target-by-target triage would.
    import random

    store = await StateStore.open(str(tmp_path / "s.db"))
    old = await store.begin_run(None, "yara")
    stored = [Target(Kind.FILE, f"/k{i}", size=1, mtime=1.0) for i in range(300)]
    store.record([verdict(t) for t in stored], old.run_id)
    await store.commit()
    known = stored[:150]
    # listed again at another version (a batch never lists one name twice, so never both of them)
    changed = [Target(Kind.FILE, t.target, size=2, mtime=1.0) for t in stored[150:]]
    fresh = [Target(Kind.FILE, f"/n{i}", size=1, mtime=1.0) for i in range(300)]
    rng = random.Random(7)
    for share in [0.0, 1.0, 0.9, 0.1, 0.5, 1.0, 0.0, *(rng.random() for _ in range(15))]:
        batch = [
            rng.choice(known) if rng.random() < share else rng.choice(fresh + changed) for _ in range(60)
        ]
        expected = [UNCHANGED if t in known else SCAN for t in batch]
        one_by_one = [(await store.triage("yara", [t], skip_unchanged=True))[0][0] for t in batch[:3]]
        assert one_by_one == expected[:3]
        assert [f for f, _ in await store.triage("yara", batch, skip_unchanged=True)] == expected, share
    await store.aclose()


async def test_admission_policy(tmp_path: Path) -> None:
    store = await StateStore.open(str(tmp_path / "s.db"))
    old = await store.begin_run(None, "yara")
    same = Target(Kind.FILE, "/same", size=1, mtime=1.0)
    changed = Target(Kind.FILE, "/changed", size=2, mtime=2.0)
    failed = Target(Kind.FILE, "/failed", size=1, mtime=1.0)
    bad = Target(Kind.FILE, "/bad", size=1, mtime=1.0)
    store.record(
        [
            verdict(same),
            verdict(Target(Kind.FILE, "/changed", size=2, mtime=1.0)),
            verdict(failed, Status.ERROR),
            verdict(bad, Status.INFECTED),
        ],
        old.run_id,
    )
    await store.commit()
    run = await store.begin_run(None, "yara")
    batch = [same, changed, failed, bad]

    async def admitted(policy: Policy) -> tuple[set[str], dict[str, int]]:
        kept, dropped = await Admission(store, "yara", run, policy)(batch)
        return {t.target for t, _ in kept}, dict(dropped)

    assert await admitted(Policy()) == ({"/same", "/changed", "/failed", "/bad"}, {})
    assert await admitted(Policy(skip_unchanged=True)) == ({"/changed", "/failed"}, {"unchanged": 2})
    assert await admitted(Policy(skip_unchanged=True, rescan_infected=True)) == (
        {"/changed", "/failed", "/bad"},
        {"unchanged": 1},
    )
    assert await admitted(Policy(skip_unchanged=True, rescan_after=-1)) == (
        {"/same", "/changed", "/failed", "/bad"},
        {},
    )
    kept, _ = await Admission(store, "yara", run, Policy(skip_unchanged=True, emit_skipped=True))(batch)
    decided = {t.target: o for t, o in kept}
    assert decided["/same"] is not None and decided["/same"].status is Status.SKIPPED
    assert decided["/same"].error is not None and decided["/same"].error.code == "unchanged"
    assert decided["/changed"] is None
    await store.aclose()


async def test_a_file_that_is_not_a_database_is_a_config_error(tmp_path: Path) -> None:
    from scanner.errors import ConfigError

    bogus = tmp_path / "s.db"
    bogus.write_bytes(orjson.dumps({"not": "sqlite"}) * 100)
    with pytest.raises(ConfigError, match="state store"):
        await StateStore.open(str(bogus))


async def test_background_commits_never_record_an_offset_past_their_rows(tmp_path: Path) -> None:
    from scanner.resume import Committer
    from scanner.sinks.ndjson import NdjsonSink

    out = tmp_path / "out.ndjson"
    store = await StateStore.open(str(tmp_path / "s.db"))
    run = await store.begin_run(str(out), "yara")
    sink = NdjsonSink(str(out))
    sink.open()
    committer = Committer(
        store, run, output=str(out), position=sink.position, fsync=sink.fsync, interval=0, max_rows=1
    )
    offsets: list[int] = []

    async def check() -> None:
        # every commit that has landed recorded an offset whose lines are all in the store
        again = await store.begin_run(str(out), "yara")
        offsets.append(again.committed_offset)
        head = out.read_bytes()[: again.committed_offset]
        named = [Target(Kind.FILE, orjson.loads(line)["target"]) for line in head.splitlines()]
        assert len(await store.lookup("yara", named)) == len(named)

    async with committer:
        for b in range(40):
            batch = [verdict(Target(Kind.FILE, f"/b{b}/f{i}")) for i in range(50)]
            await sink.write(batch)
            await committer(batch)
            await check()
        # On a loaded box the first background commit may still be running after the last batch:
        # wait for one to land (without flushing), so the check above was not vacuous.
        with anyio.fail_after(30):
            while offsets[-1] == 0:
                await anyio.sleep(0.01)
                await check()
        await committer.flush()
    await sink.aclose()
    assert offsets == sorted(offsets) and offsets[-1] > 0
    final = await store.begin_run(str(out), "yara")
    assert final.committed_offset == out.stat().st_size
    await store.aclose()


async def test_a_report_shorter_than_the_committed_offset_starts_a_new_run(tmp_path: Path) -> None:
    # The CLI claims (creates) the output before the store is asked: existing says nothing. A report
    # deleted or cut after a kill no longer holds the lines of the targets the store calls done.
    store = await StateStore.open(str(tmp_path / "s.db"))
    out = tmp_path / "out.ndjson"
    first = await store.begin_run(str(out), "yara")
    store.record([verdict(Target(Kind.FILE, "/a"))], first.run_id)
    await store.commit(str(out), first.run_id, 100)
    out.write_bytes(b"x" * 100)
    again = await store.begin_run(str(out), "yara")
    assert again.resumed and again.run_id == first.run_id and again.committed_offset == 100
    out.write_bytes(b"x" * 99)
    fresh = await store.begin_run(str(out), "yara")
    assert not fresh.resumed and fresh.run_id != first.run_id and fresh.committed_offset == 0
    out.unlink()
    latest = await store.begin_run(str(out), "yara")
    assert latest.run_id != fresh.run_id  # nothing is resumed
    # lines read back from the report are committed too: an attempt killed before its first
    # commit after them, its report then deleted, must not be resumed either
    out.write_bytes(encode_verdict(verdict(Target(Kind.FILE, "/b"))) + b'{"torn')
    assert await store.reconcile(str(out), 0, latest.run_id) == 1
    resumed = await store.begin_run(str(out), "yara")
    assert resumed.resumed and resumed.committed_offset == out.stat().st_size - len(b'{"torn')
    out.write_bytes(b"")
    assert not (await store.begin_run(str(out), "yara")).resumed
    await store.aclose()


async def test_a_target_with_a_listing_error_is_done_once_written_and_never_unchanged(tmp_path: Path) -> None:
    store = await StateStore.open(str(tmp_path / "s.db"))
    out = tmp_path / "out.ndjson"
    missing = Target(Kind.FILE, "/missing", error=ErrorInfo("no such file or directory", "not_found"))
    unreadable = Target(Kind.FILE, "/d\udcff", error=ErrorInfo("permission denied", "unreadable"))
    bad = Target(Kind.URL, "ftp://x", error=ErrorInfo("not an http(s) URL", "bad_target"))
    # a NUL in a stdin path: SQLite's JSON functions end a string there, so it is keyed by its bytes
    nul = [Target(Kind.FILE, f"/d/{c}\x00.txt", error=ErrorInfo("NUL in path", "bad_target")) for c in "ab"]
    errored = [nul[0], missing, unreadable, bad, nul[1]]
    lines = [Verdict.of(t, "yara", Outcome(Status.ERROR, error=t.error)) for t in errored]
    run = await store.begin_run(str(out), "yara")
    store.record(lines[:2], run.run_id)
    await store.commit()
    # killed with the other three lines past the last commit: the resumed run reads them back
    out.write_bytes(b"".join(map(encode_verdict, lines)))
    committed = sum(len(encode_verdict(v)) for v in lines[:2])
    assert await store.reconcile(str(out), committed, run.run_id) == 3
    assert [f for f, _ in await store.triage("yara", errored, run_id=run.run_id)] == [DONE] * 5
    # the next run tries each again, whatever else it skips
    later = await store.triage("yara", errored, skip_unchanged=True, rows=True)
    assert [f for f, _ in later] == [SCAN] * 5
    assert [f for f, _ in await store.triage("yara", errored, skip_unchanged=True)] == [SCAN] * 5
    await store.aclose()


async def test_a_malformed_input_line_never_shares_a_row_with_the_target_it_names(tmp_path: Path) -> None:
    # {"kind": "bogus", "target": "/data/x"} on stdin is an error named /data/x; a real line for
    # /data/x after it must not be "done" because the malformed one was written.
    store = await StateStore.open(str(tmp_path / "s.db"))
    out = tmp_path / "out.ndjson"
    malformed = Target(Kind.FILE, "/data/x", error=ErrorInfo("'kind' must be one of ...", "bad_target"))
    missing = Target(Kind.FILE, "/data/x", error=ErrorInfo("no such file or directory", "not_found"))
    real = Target(Kind.FILE, "/data/x", size=1, mtime=1.0)
    assert identity(malformed) != identity(real) == identity(missing) == "file:/data/x"
    line = Verdict.of(malformed, "yara", Outcome(Status.ERROR, error=malformed.error))
    run = await store.begin_run(str(out), "yara")
    store.record([line], run.run_id)
    await store.commit()
    fates = await store.triage("yara", [malformed, real], run_id=run.run_id)
    assert [f for f, _ in fates] == [DONE, SCAN]
    # and so for the malformed line read back from the report by a resumed run
    other = await StateStore.open(str(tmp_path / "t.db"))
    out.write_bytes(encode_verdict(line))
    assert await other.reconcile(str(out), 0, run.run_id) == 1
    fates = await other.triage("yara", [malformed, real], run_id=run.run_id)
    assert [f for f, _ in fates] == [DONE, SCAN]
    # a real target's unchanged row never makes an error on the same name unchanged, in one batch too
    store.record([verdict(real)], run.run_id)
    await store.commit()
    fates = await store.triage("yara", [missing, real, missing], skip_unchanged=True)
    assert [f for f, _ in fates] == [SCAN, UNCHANGED, SCAN]
    await store.aclose()
    await other.aclose()


async def test_the_one_time_key_migration_is_safe_against_a_run_opening_the_store_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two runs opening a store from before the key change both saw it unmigrated; the second to
    # migrate failed on the duplicate mark (exit 2) and leaked its connection.
    import functools
    import sqlite3

    path = str(tmp_path / "s.db")
    store = await StateStore.open(path)
    await store.aclose()
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM meta WHERE key = 'keys'")
    opened: list[sqlite3.Connection] = []

    class Racing(sqlite3.Connection):
        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            cursor = super().execute(sql, *args)  # type: ignore[arg-type]
            if "key = 'keys'" in sql and len(opened) == 1:
                # between this run's look and its migration, another run opens and migrates
                StateStore._open(path)._db.close()
            return cursor

    def connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        db = functools.partial(sqlite3_connect, factory=Racing)(*args, **kwargs)
        opened.append(db)
        return db

    sqlite3_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", connect)
    store = StateStore._open(path)
    assert len(opened) == 2
    # both stores work, and wait for each other's writes rather than fail on them
    assert store._db.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    store._db.close()
    # a store that cannot be opened leaves no connection behind
    with sqlite3_connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    from scanner.errors import ConfigError

    with pytest.raises(ConfigError, match="schema 99"):
        StateStore._open(path)
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        opened[-1].execute("SELECT 1")


def test_runs_opening_a_new_store_at_once_all_get_it(tmp_path: Path) -> None:
    # a stress test (the old code failed about one round in five on a duplicate mark)
    import threading

    failed: list[BaseException] = []
    for i in range(10):
        path = str(tmp_path / f"s{i}.db")
        barrier = threading.Barrier(8)

        def open_it(path: str = path, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                StateStore._open(path)._db.close()
            except BaseException as exc:  # reported below, with the others
                failed.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failed == []


async def test_a_full_disk_names_its_cause(tmp_path: Path) -> None:
    from scanner.errors import StateError

    store = await StateStore.open(str(tmp_path / "s.db"))
    run = await store.begin_run(None, "yara")
    # SQLite's own limit on the file's pages ends a write as a full disk does (SQLITE_FULL)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages + 1}")
    targets = [Target(Kind.FILE, f"/data/{'x' * 200}{i}") for i in range(2000)]
    store.record([Verdict.of(t, "yara", Outcome(Status.CLEAN)) for t in targets], run.run_id)
    with pytest.raises(StateError, match=r"state store .*s\.db: the disk holding it is full"):
        await store.commit()
    await store.aclose()


async def test_a_store_locked_by_another_process_names_its_cause(tmp_path: Path) -> None:
    import sqlite3

    from scanner.errors import StateError

    path = str(tmp_path / "s.db")
    store = await StateStore.open(path)
    store._db.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StateError, match="locked by another process"):
            await store.new_run(None, "yara")
    finally:
        other.execute("ROLLBACK")
        other.close()
    await store.aclose()
