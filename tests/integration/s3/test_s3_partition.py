"""The parallel listing covers the key space by construction: against a server whose delimiter
listing leaves out folders that hold only sub-folders (as s3rver does), every key is listed exactly
once, for several ``list_concurrency`` values, page sizes and key-space shapes. The server is the
S3 stub (``benchmarks/s3_stub.py``) over real sockets, with its ``hide_nested_prefixes`` quirk."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from scanner.sources import SourceOptions, TargetFilter, build
from scanner.sources.s3 import S3Source

MAX = "\U0010ffff"
SHAPES: dict[str, list[str]] = {
    # folders holding only sub-folders, at every depth, beside folders with keys of their own
    "nested": [
        "a/b/c/1",
        "a/b/d/2",
        "a/e/f/3",
        "m/direct",
        "m/sub/deep/x",
        "top.txt",
        "x/y/z/w/v",
        "zz/only/sub/",
    ],
    # a lone chain deeper than the descent goes, with a sibling at the bottom
    "deep": [f"d1/d2/d3/d4/d5/d6/leaf{i}" for i in range(5)] + ["d1/d2/d3/d4/d5/d6/d7/x"],
    # empty segments and folder markers
    "empty": ["/", "//x", "/lead", "a//b", "a//", "e/", "e//f", "e/f/", "e/f//g"],
    # keys sorting between and around prefixes, and keys equal to the bounds the split uses
    "between": [
        "p1",
        "p1-x",
        "p1.txt",
        "p1/",
        "p1/a/b",
        f"p1/{MAX}",
        f"p1/{MAX}{MAX}z/q",
        "p10",
        "p10/x/y",
        "p1~",
        "p2/q/r",
        "0",
        "1",
        "9",
        "A",
        "Z",
        "a",
        "z",
        "~",
        "\u00e9/x/y",
    ],
    # a flat key space: a first page full of objects is cut into start-after ranges
    "flat": [f"{(i * 2654435761) % 2**32:08x}" for i in range(120)]
    + ["0", "1", "f", "g", "0dir/x/y", "Zed/q/y", "zz/last/z", "~tilde"],
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the partition is the same on every loop; one loop keeps the many listings quick


def keys_of(shape: str, base: str) -> list[str]:
    return [base + k for k in SHAPES[shape]]


async def listed(table: dict[str, Any], uri: str, filters: TargetFilter | None = None) -> Counter[str]:
    src = build(uri, SourceOptions(s3=table, filters=filters or TargetFilter()))
    assert isinstance(src, S3Source)
    try:
        return Counter([t.key or "" async for t in src.targets()])
    finally:
        await src.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("base", ["", "base/"])
async def test_every_key_is_listed_exactly_once_whatever_the_server_leaves_out(
    s3_stub: Any, stub_table: Callable[..., Any], shape: str, base: str
) -> None:
    keys = keys_of(shape, base)
    # noise outside the listed prefix, on both sides of it
    objects = {k: b"x" for k in [*keys, "bas", "base", "basf/x/y", "zzz/out/of/it"]}
    bucket = s3_stub.StubBucket(prefixes=0, objects=objects, hide_nested_prefixes=True)
    expected = Counter(k for k in objects if k.startswith(base))
    for page_size in (2, 1000):
        table = await stub_table(bucket, page_size=page_size)
        for concurrency in (1, 2, 4, 16):
            got = await listed({**table, "list_concurrency": concurrency}, f"s3://bench/{base}")
            assert got == expected, (page_size, concurrency)


@pytest.mark.anyio
async def test_an_excluded_folder_is_skipped_but_nothing_beside_it(
    s3_stub: Any, stub_table: Callable[..., Any]
) -> None:
    keys = [*SHAPES["nested"], *SHAPES["between"], "skip/a", "skip/b/c", "skip.txt", "skip0/k"]
    bucket = s3_stub.StubBucket(prefixes=0, objects=dict.fromkeys(keys, b"x"), hide_nested_prefixes=True)
    table = await stub_table(bucket, page_size=1000, list_concurrency=8)
    got = await listed(table, "s3://bench", TargetFilter(exclude=("skip/*",)))
    assert got == Counter(k for k in keys if not k.startswith("skip/"))


@pytest.mark.anyio
async def test_many_prefixes_are_listed_in_parallel_exactly_once(
    s3_stub: Any, stub_table: Callable[..., Any]
) -> None:
    bucket = s3_stub.StubBucket(prefixes=40, per_prefix=30, hide_nested_prefixes=True)
    table = await stub_table(bucket, page_size=7, list_concurrency=16)
    src = build("s3://bench", SourceOptions(s3=table))
    assert isinstance(src, S3Source)
    try:
        got = Counter([t.key or "" async for t in src.targets()])
    finally:
        await src.aclose()
    assert got == Counter(bucket.keys)
    # one delimiter page, then 41 ranges of at least one page each: the split was used
    assert src.pages > 41
