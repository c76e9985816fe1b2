"""Keys that URL encoding can mangle (spaces, plus signs, percent signs, unicode) end to end: listed
by ``python -m scanner scan`` against moto, written back exactly as the verdict ``target``, and read
(each GET succeeds, so each line is ``clean``), sequentially and in parallel, under a prefix that has
them too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scanner.sources import SourceOptions, build
from scanner.sources.s3 import S3Source

pytestmark = pytest.mark.slow

BUCKET = "enc-keys"
KEYS = [
    "a b.txt",
    "a+b.txt",
    "a%20b.txt",  # literally percent-two-zero: must not become a space
    "a%2Bb.txt",
    "100%.txt",
    "+",
    " leading and trailing ",
    "+plus/+ +/x+y z",
    "my docs+/r\u00e9sum\u00e9 +1.pdf",
    "my docs+/\u65e5\u672c \u8a9e%+.bin",
    "my docs+/sub dir/deep+er/f",
    "tab\tand&amp;<tag>.txt",
]


@pytest.fixture(scope="module")
def keys(s3: Any, put_many: Callable[[str, dict[str, bytes]], None]) -> dict[str, bytes]:
    s3.create_bucket(Bucket=BUCKET)
    objects = {k: f"harmless {i}".encode() for i, k in enumerate(KEYS)}
    put_many(BUCKET, objects)
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert listed == set(objects)  # botocore's own decoding agrees on the fixture
    return objects


def scan(uri: str, tmp_path: Path, concurrency: int) -> list[dict[str, Any]]:
    config = tmp_path / f"c{concurrency}.toml"
    config.write_text(f"[s3]\nlist_concurrency = {concurrency}\npage_size = 3\n")
    out = tmp_path / f"r{concurrency}.ndjson"
    command = [sys.executable, "-m", "scanner", "scan", "--progress", "none", uri, "--output", str(out)]
    run = subprocess.run(
        [*command, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_odd_keys_round_trip_into_targets_and_are_read(
    keys: dict[str, bytes], tmp_path: Path, concurrency: int
) -> None:
    lines = scan(f"s3://{BUCKET}", tmp_path, concurrency)
    assert Counter(r["target"] for r in lines) == Counter(f"s3://{BUCKET}/{k}" for k in keys)
    for r in lines:
        key = r["target"][len(f"s3://{BUCKET}/") :]
        assert r["verdict"] == "clean", r
        assert r["size"] == len(keys[key])


def test_a_prefix_with_a_space_and_a_plus_is_taken_literally(keys: dict[str, bytes], tmp_path: Path) -> None:
    lines = scan(f"s3://{BUCKET}/my docs+/", tmp_path, 4)
    expected = {f"s3://{BUCKET}/{k}" for k in keys if k.startswith("my docs+/")}
    assert Counter(r["target"] for r in lines) == Counter(expected)
    assert {r["verdict"] for r in lines} == {"clean"}


@pytest.mark.anyio
@pytest.mark.parametrize("concurrency", [1, 4])
async def test_form_encoded_listings_decode_as_aws_means_them(
    s3_stub: Any, stub_table: Callable[..., Any], concurrency: int
) -> None:
    # The stub writes keys as AWS does (a space as "+", a plus as "%2B"); moto writes "%20".
    objects = {k: f"body {i}".encode() for i, k in enumerate(KEYS)}
    table = await stub_table(s3_stub.StubBucket(prefixes=0, objects=objects), list_concurrency=concurrency)
    src = build("s3://bench", SourceOptions(s3={**table, "page_size": 3}))
    assert isinstance(src, S3Source)
    try:
        targets = [t async for t in src.targets()]
        assert Counter(t.key for t in targets) == Counter(list(objects))
        for t in targets:
            assert t.target == f"s3://bench/{t.key}"
            async with src.open(t) as body:
                assert b"".join([c async for c in body.chunks()]) == objects[t.key or ""]
    finally:
        await src.aclose()
