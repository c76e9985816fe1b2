"""Cancellation: a cancelled or abandoned S3 listing leaves no task behind, a cancelled body read gives
its connection back, and an S3 report is completed even when its closer is cancelled."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from scanner.model import Kind, Status, Target, Verdict
from scanner.sinks.s3 import S3Sink
from scanner.sources import SourceOptions, build
from scanner.sources.s3 import S3Source

from .conftest import _load_stub


@pytest.fixture
async def endpoint(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    for var, value in (
        ("AWS_ACCESS_KEY_ID", "stub"),
        ("AWS_SECRET_ACCESS_KEY", "stub"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_CONFIG_FILE", "/nonexistent"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ):
        monkeypatch.setenv(var, value)  # fmt: skip
    stub = _load_stub()
    runner, port = await stub.serve(
        stub.StubBucket(prefixes=16, per_prefix=2_000, object_size=4 << 20, latency=0.01)
    )
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def source(endpoint: str) -> S3Source:
    src = build("s3://bench", SourceOptions(s3={"endpoint_url": endpoint, "list_concurrency": 8}))
    assert isinstance(src, S3Source)
    return src


def others() -> set[asyncio.Task[Any]]:
    """The listing's tasks still running (the stub server's own connection tasks are not counted)."""
    return {t for t in asyncio.all_tasks() if not t.done() and "S3Source" in repr(t.get_coro())}


async def settle(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    for _ in range(50):
        await anyio.sleep(0.01)
        left = others() - before
        if not left:
            return left
    return others() - before


@pytest.mark.anyio
async def test_cancelled_listing_leaves_no_task(endpoint: str) -> None:
    src = source(endpoint)
    try:
        before = others()
        seen = 0
        with anyio.CancelScope() as scope:
            async for _ in src.targets():
                seen += 1
                if seen == 1:
                    assert others() - before  # the listing tasks are running ...
                if seen == 5_000:
                    scope.cancel()  # lands in the generator's next wait, once its current page is out
        assert 5_000 <= seen < 32_000
        assert await settle(before) == set()  # ... and are gone with the cancelled iteration
    finally:
        await src.aclose()


@pytest.mark.anyio
async def test_abandoned_listing_is_finalised_without_errors(endpoint: str) -> None:
    src = source(endpoint)
    await src._conn.wire()
    before = others()
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    targets = src.targets()
    async for _ in targets:
        break
    del targets  # never closed by its consumer: the event loop's finaliser closes it
    gc.collect()
    assert await settle(before) == set()
    assert errors == []
    await src.aclose()


@pytest.mark.anyio
async def test_cancelled_body_read_returns_its_connection(endpoint: str) -> None:
    src = source(endpoint)
    try:
        target = Target(Kind.S3, "s3://bench/p000/k00000000.bin", bucket="bench", key="p000/k00000000.bin")
        with anyio.move_on_after(0.05):
            async with src.open(target) as body:
                async for _ in body.chunks(1024):
                    await anyio.sleep(0.01)
        wire = await src._conn.wire()
        connector = wire._session.connector
        assert connector is not None
        assert sum(len(v) for v in connector._acquired_per_host.values()) == 0
    finally:
        await src.aclose()


@pytest.mark.anyio
async def test_s3_report_completes_even_if_its_closer_is_cancelled(s3: Any) -> None:
    s3.create_bucket(Bucket="cancel-reports")
    sink = S3Sink.from_uri("s3://cancel-reports/r.ndjson", {})
    t = Target(Kind.S3, "s3://x/y", bucket="x", key="y")
    await sink.write([Verdict(t, "yara", Status.CLEAN)])
    with anyio.CancelScope() as scope:
        scope.cancel()
        await sink.aclose()  # shielded inside: the upload still completes
    body = s3.get_object(Bucket="cancel-reports", Key="r.ndjson")["Body"].read()
    assert body.count(b"\n") == 1
