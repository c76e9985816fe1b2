"""``inventory:`` against moto: CSV (gzip) and Parquet reports built from a real versioned bucket."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest

from scanner.errors import SourceError
from scanner.model import Target
from scanner.sources import SourceOptions, TargetFilter, build
from scanner.sources.inventory import InventorySource

SRC, DEST = "inv-src", "inv-dest"
SCHEMA = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass"


def rows_of(s3: Any) -> list[dict[str, Any]]:
    """What an inventory of SRC with all versions would hold, from the bucket's own version listing."""
    listing = s3.list_object_versions(Bucket=SRC)
    rows = []
    for v in listing.get("Versions", []):
        rows.append({
            "bucket": SRC, "key": v["Key"], "version_id": v["VersionId"], "is_latest": v["IsLatest"],
            "is_delete_marker": False, "size": v["Size"], "last_modified_date": v["LastModified"],
            "e_tag": v["ETag"].strip('"'), "storage_class": "STANDARD",
        })  # fmt: skip
    for m in listing.get("DeleteMarkers", []):
        rows.append({
            "bucket": SRC, "key": m["Key"], "version_id": m["VersionId"], "is_latest": m["IsLatest"],
            "is_delete_marker": True, "size": None, "last_modified_date": m["LastModified"],
            "e_tag": None, "storage_class": None,
        })  # fmt: skip
    return rows


def csv_gz(rows: list[dict[str, Any]]) -> bytes:
    text = io.StringIO()
    w = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for r in rows:
        when = r["last_modified_date"].strftime("%Y-%m-%dT%H:%M:%S.000Z")
        w.writerow([
            r["bucket"], quote_plus(r["key"], safe="/"), r["version_id"], str(r["is_latest"]).lower(),
            str(r["is_delete_marker"]).lower(), "" if r["size"] is None else r["size"], when,
            r["e_tag"] or "", r["storage_class"] or "",
        ])  # fmt: skip
    return gzip.compress(text.getvalue().encode())


def parquet(rows: list[dict[str, Any]]) -> bytes:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.Table.from_pylist(rows)
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def manifest(fmt: str, files: list[str], schema: str = SCHEMA) -> bytes:
    return json.dumps({
        "sourceBucket": SRC, "destinationBucket": f"arn:aws:s3:::{DEST}", "version": "2016-11-30",
        "fileFormat": fmt, "fileSchema": schema, "files": [{"key": f, "size": 1} for f in files],
    }).encode()  # fmt: skip


@pytest.fixture(scope="module")
def inventory(s3: Any, eicar: bytes) -> list[dict[str, Any]]:
    s3.create_bucket(Bucket=SRC)
    s3.put_bucket_versioning(Bucket=SRC, VersioningConfiguration={"Status": "Enabled"})
    for key, body in [
        ("doc.txt", b"v1"),
        ("doc.txt", b"v2 longer"),
        ("with space+plus ü.txt", b"odd"),
        ("eicar/sample.com", eicar),
        ("gone.txt", b"soon deleted"),
        ("logs/a.log", b"log"),
    ]:
        s3.put_object(Bucket=SRC, Key=key, Body=body)
    s3.delete_object(Bucket=SRC, Key="gone.txt")
    rows = rows_of(s3)
    s3.create_bucket(Bucket=DEST)
    half = len(rows) // 2
    base = f"{SRC}/cfg"
    s3.put_object(Bucket=DEST, Key=f"{base}/data/one.csv.gz", Body=csv_gz(rows[:half]))
    s3.put_object(Bucket=DEST, Key=f"{base}/data/two.csv.gz", Body=csv_gz(rows[half:]))
    s3.put_object(
        Bucket=DEST,
        Key=f"{base}/csv/manifest.json",
        Body=manifest("CSV", [f"{base}/data/one.csv.gz", f"{base}/data/two.csv.gz"]),
    )
    s3.put_object(Bucket=DEST, Key=f"{base}/data/all.parquet", Body=parquet(rows))
    s3.put_object(
        Bucket=DEST,
        Key=f"{base}/parquet/manifest.json",
        Body=manifest("Parquet", [f"{base}/data/all.parquet"], schema="message s3.inventory {}"),
    )
    s3.put_object(Bucket=DEST, Key=f"{base}/orc/manifest.json", Body=manifest("ORC", ["x.orc"]))
    s3.put_object(
        Bucket=DEST, Key=f"{base}/broken/manifest.json", Body=manifest("CSV", [f"{base}/data/missing.csv.gz"])
    )
    return rows


async def collect(spec: str, **kw: Any) -> list[Target]:
    src = build(spec, SourceOptions(**kw))
    assert isinstance(src, InventorySource)
    try:
        return [t async for t in src.targets()]
    finally:
        await src.aclose()


def expected(rows: list[dict[str, Any]], all_versions: bool) -> set[tuple[str, str]]:
    return {
        (r["key"], r["version_id"])
        for r in rows
        if not r["is_delete_marker"] and (all_versions or r["is_latest"])
    }


@pytest.mark.anyio
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("all_versions", [False, True])
async def test_inventory_lists_latest_or_all_versions(
    inventory: list[dict[str, Any]], fmt: str, all_versions: bool
) -> None:
    targets = await collect(f"inventory:s3://{DEST}/{SRC}/cfg/{fmt}/manifest.json", all_versions=all_versions)
    assert {(t.key, t.version_id) for t in targets} == expected(inventory, all_versions)
    assert len(targets) == len(expected(inventory, all_versions))
    for t in targets:
        assert t.target == f"s3://{SRC}/{t.key}"
        assert t.size is not None
        assert t.etag
        assert t.mtime is not None
    assert ("gone.txt" in {t.key for t in targets}) is all_versions  # only its old version remains


@pytest.mark.anyio
async def test_inventory_targets_open_the_inventoried_version(
    inventory: list[dict[str, Any]], eicar: bytes
) -> None:
    src = build(f"inventory:s3://{DEST}/{SRC}/cfg/csv/manifest.json", SourceOptions(all_versions=True))
    try:
        bodies = {}
        async for t in src.targets():
            async with src.open(t) as body:
                bodies[(t.key, t.version_id)] = b"".join([c async for c in body.chunks()])
    finally:
        await src.aclose()
    assert sorted(v for (k, _), v in bodies.items() if k == "doc.txt") == [b"v1", b"v2 longer"]
    assert bodies[next(k for k in bodies if k[0] == "eicar/sample.com")] == eicar
    assert bodies[next(k for k in bodies if k[0] == "with space+plus ü.txt")] == b"odd"


@pytest.mark.anyio
async def test_inventory_filters(inventory: list[dict[str, Any]]) -> None:
    f = TargetFilter(exclude=("*.log",), max_size=5)
    targets = await collect(f"inventory:s3://{DEST}/{SRC}/cfg/parquet/manifest.json", filters=f)
    assert {t.key for t in targets} == {"with space+plus ü.txt"}


@pytest.mark.anyio
async def test_local_manifest_reads_files_beside_it_or_from_the_bucket(
    inventory: list[dict[str, Any]], tmp_path: Path, s3: Any
) -> None:
    local = tmp_path / "manifest.json"
    local.write_bytes(manifest("CSV", [f"{SRC}/cfg/data/one.csv.gz", f"{SRC}/cfg/data/local.csv.gz"]))
    (tmp_path / "local.csv.gz").write_bytes(csv_gz([r for r in inventory if r["key"] == "logs/a.log"]))
    targets = await collect(f"inventory:{local}", all_versions=True)
    half = inventory[: len(inventory) // 2]
    assert {(t.key, t.version_id) for t in targets} == expected(half, True) | {
        (r["key"], r["version_id"]) for r in inventory if r["key"] == "logs/a.log"
    }


@pytest.mark.anyio
async def test_orc_missing_files_and_bad_manifests_are_source_errors(
    inventory: list[dict[str, Any]], tmp_path: Path
) -> None:
    with pytest.raises(SourceError, match="ORC inventories are not supported"):
        await collect(f"inventory:s3://{DEST}/{SRC}/cfg/orc/manifest.json")
    with pytest.raises(SourceError, match="no such inventory file"):
        await collect(f"inventory:s3://{DEST}/{SRC}/cfg/broken/manifest.json")
    with pytest.raises(SourceError, match="no such bucket"):
        await collect("inventory:s3://no-such-inventory-bucket/manifest.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SourceError, match="not valid JSON"):
        await collect(f"inventory:{bad}")
    with pytest.raises(SourceError, match="cannot read the manifest"):
        await collect(f"inventory:{tmp_path / 'absent.json'}")
