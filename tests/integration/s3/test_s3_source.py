"""The S3 source against a moto server: listing (sequential and parallel), filters, odd keys, bodies,
faults as data, and run-level failures as SourceError."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scanner.errors import ConfigError, SourceError, TargetError
from scanner.model import Kind, Target
from scanner.sources import SourceOptions, TargetFilter, build
from scanner.sources.s3 import S3Source

BUCKET = "odd-keys"
ODD_KEYS = [
    "with space.txt",
    "unicodé/ключ/日本.bin",
    "a//double/slash.txt",
    "dots/../up.txt",
    "./dot-start",
    "folder/",  # zero-byte folder marker
    "trailing/slash/",
    "percent%20literal&amp;<tag>.txt",
    "plus+sign=eq?q#h.txt",
    "k" * 1024,
]
PLAIN = {f"p{i % 17:02d}/sub/obj-{i:04d}.dat": f"body {i}".encode() for i in range(340)}


@pytest.fixture(scope="module")
def bucket(s3: Any, put_many: Callable[[str, dict[str, bytes]], None], eicar: bytes) -> dict[str, bytes]:
    s3.create_bucket(Bucket=BUCKET)
    objects = dict(PLAIN)
    for key in ODD_KEYS:
        objects[key] = b"" if key.endswith("/") else f"odd {key[:40]}".encode()
    objects["eicar/sample.com"] = eicar
    put_many(BUCKET, objects)
    return objects


def source(uri: str, *, filters: TargetFilter | None = None, **s3: Any) -> S3Source:
    options = SourceOptions(filters=filters or TargetFilter(), s3={"page_size": 100, **s3})
    src = build(uri, options)
    assert isinstance(src, S3Source)
    return src


async def collect(src: S3Source) -> list[Target]:
    try:
        return [t async for t in src.targets()]
    finally:
        await src.aclose()


async def read_all(src: S3Source, target: Target) -> bytes:
    async with src.open(target) as body:
        return b"".join([c async for c in body.chunks()])


@pytest.mark.anyio
@pytest.mark.parametrize("concurrency", [1, 8])
async def test_lists_every_object_exactly_once(bucket: dict[str, bytes], concurrency: int) -> None:
    src = source(f"s3://{BUCKET}", list_concurrency=concurrency)
    targets = await collect(src)
    counts = Counter(t.key for t in targets)
    assert set(counts) == set(bucket)
    assert max(counts.values()) == 1
    assert src.pages > 3
    for t in targets:
        assert t.kind is Kind.S3
        assert t.bucket == BUCKET
        assert t.target == f"s3://{BUCKET}/{t.key}"
        assert t.size == len(bucket[t.key or ""])
        assert t.etag
        assert '"' not in t.etag
        assert t.mtime is not None
        assert t.error is None


@pytest.mark.anyio
async def test_sequential_listing_is_in_key_order(bucket: dict[str, bytes]) -> None:
    keys = [t.key for t in await collect(source(f"s3://{BUCKET}", list_concurrency=1))]
    assert keys == sorted(bucket)


@pytest.mark.anyio
async def test_prefix_comes_from_the_uri(bucket: dict[str, bytes]) -> None:
    targets = await collect(source(f"s3://{BUCKET}/p03/"))
    assert {t.key for t in targets} == {k for k in bucket if k.startswith("p03/")}


@pytest.mark.anyio
async def test_filters_apply_to_keys_relative_to_the_prefix(bucket: dict[str, bytes]) -> None:
    f = TargetFilter(include=("*.dat",), exclude=("p01/*", "obj-000*"), min_size=7)
    targets = await collect(source(f"s3://{BUCKET}", filters=f))
    expected = {
        k
        for k, v in bucket.items()
        if k.endswith(".dat") and not k.startswith("p01/") and "obj-000" not in k and len(v) >= 7
    }
    assert {t.key for t in targets} == expected
    rel = await collect(source(f"s3://{BUCKET}/p02/", filters=TargetFilter(include=("sub/*",))))
    assert {t.key for t in rel} == {k for k in bucket if k.startswith("p02/sub/")}


@pytest.mark.anyio
async def test_modified_since_and_before(bucket: dict[str, bytes]) -> None:
    now = datetime.now(UTC)
    later = TargetFilter(modified_since=now + timedelta(hours=1))
    assert await collect(source(f"s3://{BUCKET}", filters=later)) == []
    window = TargetFilter(modified_since=now - timedelta(hours=1), modified_before=now + timedelta(hours=1))
    assert len(await collect(source(f"s3://{BUCKET}", filters=window))) == len(bucket)
    before = TargetFilter(modified_before=now - timedelta(hours=1))
    assert await collect(source(f"s3://{BUCKET}", filters=before)) == []


@pytest.mark.anyio
async def test_odd_keys_and_folder_markers_stream_their_bodies(bucket: dict[str, bytes]) -> None:
    src = source(f"s3://{BUCKET}")
    try:
        wanted = {*ODD_KEYS, "eicar/sample.com"}
        async for t in src.targets():
            if t.key not in wanted:
                continue
            async with src.open(t) as body:
                assert body.path is None
                assert body.size == len(bucket[t.key])
                data = b"".join([c async for c in body.chunks(7)])
            assert data == bucket[t.key], t.key
            wanted.discard(t.key)
        assert wanted == set()
    finally:
        await src.aclose()


@pytest.mark.anyio
async def test_vanished_and_changed_objects_are_target_errors(s3: Any) -> None:
    s3.create_bucket(Bucket="faults")
    for key in ("gone", "changed", "grown", "stays"):
        s3.put_object(Bucket="faults", Key=key, Body=b"original")
    src = source("s3://faults")
    try:
        targets = {t.key: t async for t in src.targets()}
        s3.delete_object(Bucket="faults", Key="gone")
        s3.put_object(Bucket="faults", Key="changed", Body=b"ORIGINAL")  # same size, new ETag
        s3.put_object(Bucket="faults", Key="grown", Body=b"original and more")
        for key, code in (("gone", "vanished"), ("changed", "changed"), ("grown", "changed")):
            with pytest.raises(TargetError) as info:
                await read_all(src, targets[key])
            assert info.value.code == code, key
        assert await read_all(src, targets["stays"]) == b"original"
    finally:
        await src.aclose()


@pytest.mark.anyio
async def test_archived_object_is_a_target_error(s3: Any) -> None:
    s3.create_bucket(Bucket="archive")
    s3.put_object(Bucket="archive", Key="cold", Body=b"x", StorageClass="GLACIER")
    src = source("s3://archive")
    try:
        [t] = [t async for t in src.targets()]
        with pytest.raises(TargetError) as info:
            async with src.open(t):
                pass
        assert info.value.code == "archived"
    finally:
        await src.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("concurrency", [1, 4])
async def test_missing_bucket_is_a_source_error(moto_endpoint: str, concurrency: int) -> None:
    with pytest.raises(SourceError) as info:
        await collect(source("s3://no-such-bucket-here/x", list_concurrency=concurrency))
    assert info.value.code == "no_bucket"
    assert "no-such-bucket-here" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.anyio
async def test_objects_opener_reads_stdin_targets(bucket: dict[str, bytes]) -> None:
    from scanner.sources.s3 import objects

    opener = objects(SourceOptions())
    try:
        key = "unicodé/ключ/日本.bin"
        target = Target(Kind.S3, f"s3://{BUCKET}/{key}", bucket=BUCKET, key=key)
        async with opener.open(target) as body:
            assert body.size == len(bucket[key])
            assert b"".join([c async for c in body.chunks()]) == bucket[key]
    finally:
        await opener.aclose()


def test_unknown_s3_config_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"s3\.endpoint: unknown key"):
        build("s3://b", SourceOptions(s3={"endpoint": "http://x"}))


def test_uri_without_bucket_is_rejected() -> None:
    with pytest.raises(SourceError, match="no bucket"):
        build("s3:///key", SourceOptions())


@pytest.mark.anyio
async def test_aws_endpoint_url_s3_is_honoured(
    bucket: dict[str, bytes], moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    targets = await collect(source(f"s3://{BUCKET}/p05/"))
    assert {t.key for t in targets} == {k for k in bucket if k.startswith("p05/")}


FLAT = "flat-keys"


@pytest.fixture(scope="module")
def flat(s3: Any, put_many: Callable[[str, dict[str, bytes]], None]) -> dict[str, bytes]:
    """A flat key space (hex names at the root, as UUID-named uploads) with a few folders mixed in."""
    import hashlib

    s3.create_bucket(Bucket=FLAT)
    objects = {hashlib.sha256(str(i).encode()).hexdigest()[:12]: b"f" for i in range(300)}
    objects.update({"0dir/x": b"d", "Zed/y": b"d", "zz/last": b"d", "~tilde": b"t", "é-unicode": b"u"})
    put_many(FLAT, objects)
    return objects


@pytest.mark.anyio
@pytest.mark.parametrize("concurrency", [1, 4, 16])
async def test_flat_key_space_is_listed_in_ranges_exactly_once(
    flat: dict[str, bytes], concurrency: int
) -> None:
    src = source(f"s3://{FLAT}", list_concurrency=concurrency, page_size=20)
    targets = await collect(src)
    counts = Counter(t.key for t in targets)
    assert set(counts) == set(flat)
    assert max(counts.values()) == 1
    if concurrency > 1:
        assert src.pages > 62  # one request at least per range: the ranges were used
