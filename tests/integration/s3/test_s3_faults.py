"""Throttling, denied and broken GETs, laziness and backpressure, against the in-process S3 stub
(``benchmarks/s3_stub.py``) over real sockets; reached through the ``[s3] endpoint_url`` config key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from scanner.errors import SourceError, TargetError
from scanner.model import Target
from scanner.sources import SourceOptions, build
from scanner.sources.s3 import S3Source

from .conftest import _load_stub

stub = _load_stub()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "stub")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "stub")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
async def served(aws_env: None) -> AsyncIterator[Any]:
    """A factory: ``await served(bucket)`` -> the ``[s3]`` table pointing at a running stub."""
    runners: list[Any] = []

    async def start(bucket: Any, **table: Any) -> dict[str, Any]:
        runner, port = await stub.serve(bucket)
        runners.append(runner)
        return {"endpoint_url": f"http://127.0.0.1:{port}", **table}

    yield start
    for runner in runners:
        await runner.cleanup()


def s3_source(table: dict[str, Any], uri: str = "s3://bench") -> S3Source:
    src = build(uri, SourceOptions(s3=table))
    assert isinstance(src, S3Source)
    return src


async def read(src: S3Source, target: Target) -> bytes:
    async with src.open(target) as body:
        return b"".join([c async for c in body.chunks()])


def target(key: str) -> Target:
    from scanner.model import Kind

    return Target(Kind.S3, f"s3://bench/{key}", bucket="bench", key=key)


@pytest.mark.anyio
async def test_slowdown_is_retried_with_backoff(served: Any) -> None:
    bucket = stub.StubBucket(prefixes=2, per_prefix=50, faults=stub.Faults(slowdown=3))
    src = s3_source(await served(bucket, list_concurrency=1))
    try:
        targets = [t async for t in src.targets()]
        wire = await src._conn.wire()
        assert len(targets) == 100
        assert wire.retries == 3
    finally:
        await src.aclose()


@pytest.mark.anyio
async def test_endless_slowdown_ends_as_one_clear_error(served: Any) -> None:
    bucket = stub.StubBucket(prefixes=1, per_prefix=3, faults=stub.Faults(slowdown=10_000))
    src = s3_source(await served(bucket, max_attempts=2))
    try:
        with pytest.raises(SourceError, match="503 SlowDown"):
            [t async for t in src.targets()]
        with pytest.raises(TargetError) as info:
            await read(src, target("p000/k00000000.bin"))
        assert info.value.code == "throttled"
        assert info.value.retryable
    finally:
        await src.aclose()


@pytest.mark.anyio
async def test_denied_and_truncated_objects_are_target_errors(served: Any) -> None:
    faults = stub.Faults(denied=frozenset({"p000/k00000001.bin"}), truncate=frozenset({"p000/k00000002.bin"}))
    bucket = stub.StubBucket(prefixes=1, per_prefix=4, object_size=300_000, faults=faults)
    src = s3_source(await served(bucket))
    try:
        targets = {t.key: t async for t in src.targets()}
        with pytest.raises(TargetError) as denied:
            await read(src, targets["p000/k00000001.bin"])
        assert denied.value.code == "access_denied"
        with pytest.raises(TargetError) as cut:
            await read(src, targets["p000/k00000002.bin"])
        assert cut.value.code in ("read_failed", "changed")
        assert await read(src, targets["p000/k00000003.bin"]) == bucket.body
    finally:
        await src.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("concurrency", [1, 8])
async def test_first_target_comes_before_the_listing_ends(served: Any, concurrency: int) -> None:
    bucket = stub.StubBucket(prefixes=16, per_prefix=2_000, latency=0.005)
    src = s3_source(await served(bucket, list_concurrency=concurrency))
    try:
        async for _ in src.targets():
            break
        assert src.pages <= 2 * concurrency + 2  # of 33+ pages in all (each task may be one page ahead)
    finally:
        await src.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("concurrency", [1, 8])
async def test_a_stalled_consumer_stalls_the_listing(served: Any, concurrency: int) -> None:
    bucket = stub.StubBucket(prefixes=16, per_prefix=3_000)
    src = s3_source(await served(bucket, list_concurrency=concurrency))
    try:
        targets = src.targets()
        await targets.__anext__()
        await anyio.sleep(0.3)
        stalled = src.pages
        await anyio.sleep(0.2)
        assert src.pages == stalled
        assert stalled <= 2 * concurrency + 4  # of 48+ pages: memory is bounded by the streams
        await targets.aclose()  # type: ignore[attr-defined]
    finally:
        await src.aclose()


@pytest.mark.anyio
async def test_big_object_streams_in_bounded_chunks(served: Any) -> None:
    bucket = stub.StubBucket(prefixes=0, per_prefix=0, big_size=64 << 20)
    src = s3_source(await served(bucket))
    try:
        [t] = [t async for t in src.targets()]
        total, largest = 0, 0
        async with src.open(t) as body:
            async for chunk in body.chunks(1 << 20):
                total += len(chunk)
                largest = max(largest, len(chunk))
        assert total == 64 << 20
        assert largest <= 1 << 20
    finally:
        await src.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [(403, "InvalidAccessKeyId", "credentials"), (403, "SignatureDoesNotMatch", "credentials"),
     (403, "AccessDenied", "access_denied"), (404, "NoSuchBucket", "no_bucket")],
)  # fmt: skip
@pytest.mark.parametrize("concurrency", [1, 8])
async def test_refused_listing_is_one_source_error(
    served: Any, status: int, code: str, expected: str, concurrency: int
) -> None:
    bucket = stub.StubBucket(prefixes=2, per_prefix=5, faults=stub.Faults(list_error=(status, code)))
    src = s3_source(await served(bucket, list_concurrency=concurrency))
    try:
        with pytest.raises(SourceError) as info:
            [t async for t in src.targets()]
        assert info.value.code == expected
        assert str(info.value).startswith("s3://bench/: ")
        wire = await src._conn.wire()
        assert wire.retries == 0  # refusals are not retried
    finally:
        await src.aclose()


@pytest.mark.anyio
async def test_bucket_in_another_region_is_followed(served: Any) -> None:
    bucket = stub.StubBucket(prefixes=2, per_prefix=20, faults=stub.Faults(region="eu-central-1"))
    src = s3_source(await served(bucket, region="us-west-2"))
    try:
        targets = [t async for t in src.targets()]
        assert len(targets) == 40
        assert await read(src, targets[0]) == bucket.body
        wire = await src._conn.wire()
        assert wire._regions == {"bench": "eu-central-1"}
        assert wire.retries == 0
    finally:
        await src.aclose()
