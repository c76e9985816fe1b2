"""``--all-versions`` against moto: every version is a target carrying its version id; delete markers
are not targets; each version's own bytes are read."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from scanner.model import Target
from scanner.sources import SourceOptions, build
from scanner.sources.s3 import S3Source

BUCKET = "versioned"


@pytest.fixture(scope="module")
def versions(s3: Any) -> dict[tuple[str, str], bytes]:
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    bodies: dict[tuple[str, str], bytes] = {}

    def put(key: str, body: bytes) -> None:
        bodies[(key, s3.put_object(Bucket=BUCKET, Key=key, Body=body)["VersionId"])] = body

    for i in range(4):
        put("many.txt", f"version {i}".encode())
    put("deleted.txt", b"before the marker")
    s3.delete_object(Bucket=BUCKET, Key="deleted.txt")
    put("revived.txt", b"first life")
    s3.delete_object(Bucket=BUCKET, Key="revived.txt")
    put("revived.txt", b"second life")
    for i in range(30):  # enough keys under prefixes for several pages and a fan-out
        put(f"dir{i % 5}/k{i:02d}", b"x" * i)
        if i % 3 == 0:
            put(f"dir{i % 5}/k{i:02d}", b"y" * i)
    return bodies


async def collect(src: S3Source) -> list[Target]:
    try:
        return [t async for t in src.targets()]
    finally:
        await src.aclose()


def source(all_versions: bool, concurrency: int) -> S3Source:
    src = build(
        f"s3://{BUCKET}",
        SourceOptions(all_versions=all_versions, s3={"page_size": 7, "list_concurrency": concurrency}),
    )
    assert isinstance(src, S3Source)
    return src


@pytest.mark.anyio
@pytest.mark.parametrize("concurrency", [1, 4])
async def test_all_versions_lists_each_version_once_and_no_delete_markers(
    versions: dict[tuple[str, str], bytes], concurrency: int
) -> None:
    src = source(True, concurrency)
    targets = await collect(src)
    got = Counter((t.key, t.version_id) for t in targets)
    assert set(got) == set(versions)
    assert max(got.values()) == 1
    assert src.pages > 3
    for t in targets:
        assert t.version_id
        assert t.size == len(versions[(t.key or "", t.version_id)])


@pytest.mark.anyio
async def test_latest_only_without_the_flag(versions: dict[tuple[str, str], bytes]) -> None:
    targets = await collect(source(False, 4))
    keys = Counter(t.key for t in targets)
    assert "deleted.txt" not in keys
    assert keys["many.txt"] == 1
    assert keys["revived.txt"] == 1
    assert all(t.version_id is None for t in targets)


@pytest.mark.anyio
async def test_each_version_reads_its_own_bytes(versions: dict[tuple[str, str], bytes]) -> None:
    src = source(True, 2)
    try:
        async for t in src.targets():
            if t.key in ("many.txt", "revived.txt", "deleted.txt"):
                async with src.open(t) as body:
                    data = b"".join([c async for c in body.chunks()])
                assert data == versions[(t.key, t.version_id or "")]
    finally:
        await src.aclose()
