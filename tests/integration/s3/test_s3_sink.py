"""``--output s3://``: the multipart sink against moto, read back and compared line by line."""

from __future__ import annotations

from typing import Any

import pytest

from scanner.errors import SinkError
from scanner.model import ErrorInfo, Finding, Kind, Status, Target, Verdict, encode_verdict
from scanner.sinks.s3 import MIN_PART, S3Sink

BUCKET = "reports"


@pytest.fixture(scope="module")
def reports(s3: Any) -> str:
    s3.create_bucket(Bucket=BUCKET)
    return BUCKET


def verdicts(n: int, start: int = 0) -> list[Verdict]:
    out = []
    for i in range(start, start + n):
        t = Target(Kind.S3, f"s3://data/dir/ключ-{i:07d}.bin", size=i, etag=f"{i:032x}", bucket="data")
        if i % 97 == 0:
            out.append(Verdict(t, "yara", Status.INFECTED, findings=(Finding("EICAR_Test"),)))
        elif i % 89 == 0:
            out.append(Verdict(t, "yara", Status.ERROR, error=ErrorInfo("object vanished", "vanished")))
        else:
            out.append(Verdict(t, "yara", Status.CLEAN))
    return out


def uploads(s3: Any, key: str) -> list[Any]:
    return [u for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) if u["Key"] == key]


def exists(s3: Any, key: str) -> bool:
    return any(o["Key"] == key for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=key).get("Contents", []))


@pytest.mark.anyio
async def test_multipart_report_reads_back_identical(s3: Any, reports: str, anyio_backend: Any) -> None:
    key = f"runs/{anyio_backend[1]['use_uvloop']}/report.ndjson"
    sink = S3Sink.from_uri(f"s3://{reports}/{key}", {}, part_size=MIN_PART)
    assert sink.name == f"s3://{reports}/{key}"
    sent: list[Verdict] = []
    for batch in range(6):
        vs = verdicts(10_000, batch * 10_000)
        await sink.write(vs)
        sent.extend(vs)
    assert sink.bytes > 2 * MIN_PART
    assert len(sink._parts) >= 2  # parts were flushed as they filled ...
    assert not exists(s3, key)  # ... but nothing looks like a report before completion
    assert len(uploads(s3, key)) == 1
    await sink.aclose()
    body = s3.get_object(Bucket=reports, Key=key)["Body"].read()
    assert body == b"".join(encode_verdict(v) for v in sent)
    assert body.count(b"\n") == len(sent)
    assert uploads(s3, key) == []


@pytest.mark.anyio
async def test_abort_leaves_no_object_and_no_upload(s3: Any, reports: str) -> None:
    key = "aborted.ndjson"
    sink = S3Sink.from_uri(f"s3://{reports}/{key}", {}, part_size=MIN_PART)
    await sink.write(verdicts(40_000))
    assert len(uploads(s3, key)) == 1
    await sink.abort()
    await sink.aclose()  # the CLI calls aclose after abort: it must not complete anything
    assert not exists(s3, key)
    assert uploads(s3, key) == []
    with pytest.raises(SinkError):
        await sink.write(verdicts(1))


@pytest.mark.anyio
async def test_small_and_empty_reports(s3: Any, reports: str) -> None:
    small = S3Sink.from_uri(f"s3://{reports}/small.ndjson", {})
    vs = verdicts(3)
    await small.write(vs)
    await small.aclose()
    assert s3.get_object(Bucket=reports, Key="small.ndjson")["Body"].read() == b"".join(
        map(encode_verdict, vs)
    )
    empty = S3Sink.from_uri(f"s3://{reports}/empty.ndjson", {})
    await empty.aclose()
    assert s3.get_object(Bucket=reports, Key="empty.ndjson")["Body"].read() == b""


@pytest.mark.anyio
async def test_unwritable_bucket_fails_on_the_first_write(moto_endpoint: str) -> None:
    sink = S3Sink.from_uri("s3://no-such-report-bucket/r.ndjson", {})
    with pytest.raises(SinkError, match="no-such-report-bucket"):
        await sink.write(verdicts(1))
    await sink.aclose()


def test_output_uri_needs_a_key() -> None:
    with pytest.raises(SinkError, match="needs an object key"):
        S3Sink.from_uri("s3://bucket/", {})
    with pytest.raises(SinkError, match="no bucket"):
        S3Sink.from_uri("s3:///x", {})


@pytest.mark.anyio
async def test_part_size_doubles_so_ten_thousand_parts_reach_5_tib(s3: Any, reports: str) -> None:
    key = "growing.ndjson"
    sink = S3Sink.from_uri(f"s3://{reports}/{key}", {}, part_size=MIN_PART)
    sink.parts_per_step = 2  # 1,000 in production; 2 keeps the test small
    sent: list[Verdict] = []
    for batch in range(9):  # ~2.6 MB each: parts of 5, 5, 10 MiB and the rest
        vs = verdicts(15_000, batch * 15_000)
        await sink.write(vs)
        sent.extend(vs)
    await sink.aclose()
    assert sink.part_sizes[:3] == [MIN_PART, MIN_PART, 2 * MIN_PART]
    assert len(sink.part_sizes) == 4
    assert s3.get_object(Bucket=reports, Key=key)["Body"].read() == b"".join(map(encode_verdict, sent))
