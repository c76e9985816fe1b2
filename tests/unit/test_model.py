from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from scanner.errors import AuthError, QuotaExhausted
from scanner.model import (
    ErrorInfo,
    Finding,
    Kind,
    Outcome,
    Status,
    Target,
    Verdict,
    encode_verdict,
    error_info,
)
from scanner.pipeline import Summary

REQUIRED = {"target", "kind", "engine", "verdict", "findings", "error"}


def test_line_has_required_fields_and_ends_in_newline() -> None:
    line = encode_verdict(Verdict.of(Target(Kind.FILE, "/x"), "yara", Outcome(Status.CLEAN)))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    obj = orjson.loads(line)
    assert obj.keys() >= REQUIRED
    assert obj["findings"] == [] and obj["error"] is None and obj["verdict"] == "clean"


def test_recommended_fields_and_timings() -> None:
    start = datetime(2026, 11, 22, 8, 0, 0, tzinfo=UTC)
    t = Target(Kind.S3, "s3://b/k", size=5, etag='"abc"', version_id="v1", bucket="b", key="k")
    v = Verdict.of(
        t,
        "metadefender",
        Outcome(Status.INFECTED, (Finding("EICAR", engine="x"),), sha256="ff", vendor={"data_id": "d1"}),
        started_at=start,
        finished_at=start + timedelta(milliseconds=1500),
    )
    obj = orjson.loads(encode_verdict(v))
    assert obj["findings"] == [{"name": "EICAR", "engine": "x"}]
    assert obj["started_at"] == "2026-11-22T08:00:00Z"
    assert obj["finished_at"] == "2026-11-22T08:00:01.500000Z"
    assert obj["duration_ms"] == 1500.0
    assert obj["etag"] == '"abc"' and obj["version_id"] == "v1" and obj["size"] == 5
    assert obj["vendor"] == {"data_id": "d1"}


def test_newlines_and_undecodable_bytes_in_names_stay_one_valid_line() -> None:
    name = '/tmp/a\nb"c\udcff'  # os.fsdecode of b"\xff" gives a lone surrogate
    line = encode_verdict(Verdict.of(Target(Kind.FILE, name), "yara", Outcome(Status.CLEAN)))
    assert line.count(b"\n") == 1
    assert orjson.loads(line)["target"] == '/tmp/a\nb"c\\xff'


def test_only_a_name_with_undecodable_bytes_carries_them_raw_as_path_bytes() -> None:
    # "a\xff" spells both a name with byte 0xff and one with a backslash, x, f, f: path_bytes tells
    bad = encode_verdict(Verdict.of(Target(Kind.FILE, "/d/a\udcff"), "yara", Outcome(Status.CLEAN)))
    literal = encode_verdict(Verdict.of(Target(Kind.FILE, "/d/a\\xff"), "yara", Outcome(Status.CLEAN)))
    assert orjson.loads(bad)["target"] == orjson.loads(literal)["target"] == "/d/a\\xff"
    assert orjson.loads(bad)["path_bytes"] == b"/d/a\xff".hex()
    assert "path_bytes" not in orjson.loads(literal)
    # a surrogate elsewhere in the line (an error message) is no reason for path_bytes
    odd = Verdict.of(Target(Kind.FILE, "/d/é"), "yara", Outcome(Status.ERROR, error=ErrorInfo("x\udcff")))
    assert "path_bytes" not in orjson.loads(encode_verdict(odd))


def test_the_version_an_engine_saw_reaches_the_verdict_but_not_its_line() -> None:
    v = Verdict.of(Target(Kind.FILE, "/x"), "yara", Outcome(Status.CLEAN, size=3, version="m:3:1.5"))
    assert (v.size, v.version) == (3, "m:3:1.5")
    assert "version" not in orjson.loads(encode_verdict(v))


def test_error_info_keeps_code_and_quota_reset() -> None:
    reset = datetime(2026, 11, 23, tzinfo=UTC)
    info = error_info(QuotaExhausted("quota spent", reset_at=reset))
    assert info.code == "quota_exhausted"
    assert info.details == {"reset_at": "2026-11-23T00:00:00.000Z"}
    v = Verdict.of(Target(Kind.FILE, "/x"), "m", Outcome(Status.SKIPPED, error=info))
    assert orjson.loads(encode_verdict(v))["error"] == {
        "message": "quota spent",
        "code": "quota_exhausted",
        "reset_at": "2026-11-23T00:00:00.000Z",
    }
    assert error_info(AuthError("bad key")).code == "auth"
    assert error_info(ValueError("boom")).code == "internal"


def summary(**by_status: int) -> Summary:
    return Summary(listed=0, written=0, elapsed=1.0, by_status=by_status, errors_by_code={})


@pytest.mark.parametrize(
    ("counts", "code"),
    [
        ({}, 0),
        ({"clean": 3}, 0),
        ({"clean": 3, "unscannable": 1, "skipped": 1}, 0),
        ({"clean": 3, "infected": 1}, 1),
        ({"suspicious": 1}, 1),
        ({"vulnerable": 1}, 1),
        ({"clean": 3, "error": 1}, 2),
        ({"infected": 1, "error": 5}, 1),  # a finding is never masked by errors
    ],
)
def test_exit_codes(counts: dict[str, int], code: int) -> None:
    assert summary(**counts).exit_code == code


def test_interrupted_or_halted_run_exits_2() -> None:
    s = Summary(listed=1, written=1, elapsed=1, by_status={"clean": 1}, errors_by_code={}, interrupted=True)
    assert s.exit_code == 2
    s = Summary(
        listed=1,
        written=1,
        elapsed=1,
        by_status={"skipped": 1},
        errors_by_code={},
        halted=ErrorInfo("quota", "quota_exhausted"),
    )
    assert s.exit_code == 2
