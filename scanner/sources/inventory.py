"""``inventory:MANIFEST``: the objects an S3 Inventory report lists, for buckets too big to list.

``MANIFEST`` is an inventory ``manifest.json``, as ``s3://bucket/.../manifest.json`` or a local path.
Its data files are read from the inventory's destination bucket; for a local manifest, a data file
lying next to it (same base name) is read from disk instead.

* CSV (gzip) files are streamed and decompressed a chunk at a time in a worker thread; keys are
  URL-decoded as the CSV format requires. Parquet files need ``pyarrow`` (``pip install
  'scanner[parquet]'``): each is downloaded to a temporary file and read in record batches. ORC is
  refused with a :class:`~scanner.errors.SourceError` saying so, before anything is read.
* Delete markers are never targets. Without ``--all-versions`` only the latest version of each key
  is (and the target carries that version id when the inventory has one, so the bytes scanned are
  the bytes inventoried); with it, every listed version is.
* Filters apply as for ``s3://bucket``: globs to the key, size and LastModified bounds.
* An object overwritten or deleted since the inventory was taken gets an ``error`` line (``changed``
  / ``vanished``) when opened: the report says the inventory was stale rather than scanning other
  bytes than it names.
* A manifest that cannot be read or parsed, or a data file that cannot be fetched, is a SourceError.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import anyio
import anyio.to_thread

from ..errors import SourceError
from ..model import Kind, Target
from ._s3conn import S3Config, S3Connection, listing_error, parse_s3_uri
from ._s3wire import S3ResponseError
from .filters import TargetFilter
from .s3 import S3Objects

if TYPE_CHECKING:
    from . import SourceOptions

__all__ = ("InventorySource", "Manifest", "from_spec", "parse_manifest")

_Rows = list[dict[str, Any]]
_READ = 256 * 1024
_BATCH = 1000
# CSV fileSchema names -> our fields; Parquet columns use the snake_case spelling.
_CSV_FIELDS = {
    "Bucket": "bucket",
    "Key": "key",
    "VersionId": "version_id",
    "IsLatest": "is_latest",
    "IsDeleteMarker": "is_delete_marker",
    "Size": "size",
    "LastModifiedDate": "last_modified_date",
    "ETag": "e_tag",
}


def from_spec(spec: str, options: SourceOptions) -> InventorySource:
    """The source for ``inventory:MANIFEST``; does no I/O until iterated."""
    if not spec:
        raise SourceError("inventory: needs a manifest (inventory:s3://bucket/.../manifest.json or a path)")
    conn = S3Connection(S3Config.from_table(options.s3))
    return InventorySource(spec, conn, filters=options.filters, all_versions=options.all_versions)


class Manifest:
    """The parts of ``manifest.json`` we use. Raises SourceError on anything else."""

    def __init__(self, raw: Mapping[str, Any], where: str) -> None:
        try:
            self.file_format = str(raw["fileFormat"]).upper()
            self.destination = str(raw["destinationBucket"]).rpartition(":")[2]
            self.source_bucket = str(raw.get("sourceBucket", ""))
            self.schema = str(raw.get("fileSchema", ""))
            self.files = [str(f["key"]) for f in raw["files"]]
        except (KeyError, TypeError) as exc:
            raise SourceError(f"{where}: not an S3 Inventory manifest (missing {exc})") from None
        if self.file_format == "ORC":
            raise SourceError(
                f"{where}: ORC inventories are not supported; configure the inventory as CSV or Parquet"
            )
        if self.file_format not in ("CSV", "PARQUET"):
            raise SourceError(f"{where}: unknown inventory format {self.file_format!r}")
        if self.file_format == "CSV":
            self.columns = [_CSV_FIELDS.get(c.strip(), c.strip()) for c in self.schema.split(",")]
            if "key" not in self.columns or "bucket" not in self.columns:
                raise SourceError(f"{where}: CSV fileSchema has no Bucket/Key columns")


def parse_manifest(data: bytes, where: str) -> Manifest:
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(f"{where}: manifest is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise SourceError(f"{where}: manifest is not a JSON object")
    return Manifest(raw, where)


class InventorySource(S3Objects):
    """Targets from one S3 Inventory report (see the module docstring)."""

    kinds = frozenset({Kind.S3})

    def __init__(
        self,
        manifest: str,
        conn: S3Connection,
        *,
        filters: TargetFilter | None = None,
        all_versions: bool = False,
    ) -> None:
        self.manifest = manifest
        self.filters = filters or TargetFilter()
        self.all_versions = all_versions
        super().__init__(conn)
        self.rows = 0
        self.files_read = 0

    def __repr__(self) -> str:
        return f"<InventorySource {self.manifest} files_read={self.files_read} rows={self.rows}>"

    def check(self) -> None:
        """Reject a manifest that can never be read before the run starts (no I/O for ``s3://``)."""
        if self.manifest.startswith("s3://"):
            parse_s3_uri(self.manifest)
        elif not os.path.isfile(self.manifest):
            raise SourceError(f"inventory:{self.manifest}: no such file")

    async def targets(self) -> AsyncIterator[Target]:
        manifest = parse_manifest(await self._read_manifest(), self.manifest)
        if manifest.file_format == "PARQUET":
            _require_pyarrow(self.manifest)
        for key in manifest.files:
            where = f"s3://{manifest.destination}/{key}"
            if manifest.file_format == "CSV":
                rows = self._csv_rows(manifest, key, where)
            else:
                rows = self._parquet_rows(manifest, key, where)
            async for batch in rows:
                for target in self._select(batch):
                    yield target
            self.files_read += 1

    # Reading the manifest and data files.

    async def _read_manifest(self) -> bytes:
        if self.manifest.startswith("s3://"):
            bucket, key = parse_s3_uri(self.manifest)
            return b"".join([c async for c in self._s3_chunks(bucket, key, self.manifest)])
        try:
            return await anyio.Path(self.manifest).read_bytes()
        except OSError as exc:
            raise SourceError(f"{self.manifest}: cannot read the manifest: {exc.strerror}") from None

    def _local_copy(self, key: str) -> str | None:
        if self.manifest.startswith("s3://"):
            return None
        candidate = os.path.join(os.path.dirname(os.path.abspath(self.manifest)), os.path.basename(key))
        return candidate if os.path.isfile(candidate) else None

    async def _s3_chunks(self, bucket: str, key: str, where: str) -> AsyncIterator[bytes]:
        wire = await self._conn.wire()
        try:
            async with wire.get(bucket, key) as response:
                async for chunk in response.content.iter_chunked(_READ):
                    yield chunk
        except S3ResponseError as exc:
            if exc.code == "NoSuchKey":
                raise SourceError(f"{where}: no such inventory file", code="no_inventory") from None
            raise listing_error(exc, where) from None
        except Exception as exc:  # aiohttp stream errors: translate at the seam
            if isinstance(exc, SourceError):
                raise
            raise SourceError(f"{where}: inventory file read failed: {type(exc).__name__}") from None

    async def _file_chunks(self, manifest: Manifest, key: str, where: str) -> AsyncIterator[bytes]:
        local = self._local_copy(key)
        if local is None:
            async for chunk in self._s3_chunks(manifest.destination, key, where):
                yield chunk
            return
        try:
            async with await anyio.open_file(local, "rb") as f:
                while chunk := await f.read(_READ):
                    yield chunk
        except OSError as exc:
            raise SourceError(f"{local}: cannot read inventory file: {exc.strerror}") from None

    async def _csv_rows(self, manifest: Manifest, key: str, where: str) -> AsyncIterator[_Rows]:
        decoder = _CsvDecoder(manifest.columns, gzip=key.endswith(".gz"))
        async for chunk in self._file_chunks(manifest, key, where):
            rows = await anyio.to_thread.run_sync(decoder.feed, chunk)
            if rows:
                yield rows
        rows = decoder.finish(where)
        if rows:
            yield rows

    async def _parquet_rows(self, manifest: Manifest, key: str, where: str) -> AsyncIterator[_Rows]:
        # Parquet needs random access: a file from S3 is spooled to a temporary file first.
        path = self._local_copy(key)
        spooled = None
        try:
            if path is None:
                path = spooled = await anyio.to_thread.run_sync(_mktemp)
                async with await anyio.open_file(spooled, "wb") as out:
                    async for chunk in self._s3_chunks(manifest.destination, key, where):
                        await out.write(chunk)
            batches = await anyio.to_thread.run_sync(_parquet_batches, path, where)
            while True:
                rows = await anyio.to_thread.run_sync(_next_rows, batches)
                if rows is None:
                    return
                yield rows
        finally:
            if spooled is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_unlink, spooled)

    # Rows -> targets.

    def _select(self, rows: Iterable[Mapping[str, Any]]) -> list[Target]:
        out: list[Target] = []
        f = self.filters
        for row in rows:
            self.rows += 1
            if _true(row.get("is_delete_marker")):
                continue
            if not self.all_versions and row.get("is_latest") is not None and not _true(row["is_latest"]):
                continue
            bucket, key = str(row["bucket"]), str(row["key"])
            size = int(row["size"]) if row.get("size") not in (None, "") else None
            mtime = _mtime(row.get("last_modified_date"))
            if (f.include or f.exclude) and not f.matches_name(key):
                continue
            if size is not None and not f.matches_size(size):
                continue
            timed = f.modified_since is not None or f.modified_before is not None
            if timed and mtime is not None and not f.matches_time(datetime.fromtimestamp(mtime, UTC)):
                continue
            vid = row.get("version_id") or None
            etag = str(row["e_tag"]).strip('"') if row.get("e_tag") else None
            out.append(Target(Kind.S3, f"s3://{bucket}/{key}", size, mtime, etag, vid, bucket, key))
        return out


class _CsvDecoder:
    """gzip -> lines -> CSV rows, fed a chunk at a time (runs in a worker thread)."""

    def __init__(self, columns: list[str], *, gzip: bool) -> None:
        self._columns = columns
        self._z = zlib.decompressobj(wbits=47) if gzip else None
        self._tail = b""

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        data = self._tail + (self._z.decompress(chunk) if self._z is not None else chunk)
        cut = data.rfind(b"\n") + 1
        self._tail = data[cut:]
        return self._rows(data[:cut])

    def finish(self, where: str) -> list[dict[str, Any]]:
        if self._z is not None and not self._z.eof:
            raise SourceError(f"{where}: inventory file is truncated (gzip stream did not end)")
        data, self._tail = self._tail, b""
        return self._rows(data)

    def _rows(self, data: bytes) -> list[dict[str, Any]]:
        if not data:
            return []
        out = []
        for values in csv.reader(data.decode("utf-8").splitlines()):
            if not values:
                continue
            row = dict(zip(self._columns, values, strict=False))
            row["key"] = unquote_plus(row["key"])
            out.append(row)
        return out


def _require_pyarrow(where: str) -> None:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise SourceError(
            f"{where}: Parquet inventories need pyarrow (pip install 'scanner[parquet]')"
        ) from None


def _parquet_batches(path: str, where: str) -> Any:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        wanted = [c for c in _CSV_FIELDS.values() if c in pf.schema_arrow.names]
        return pf.iter_batches(batch_size=_BATCH, columns=wanted)
    except Exception as exc:  # pyarrow raises its own tree; translate at the seam
        raise SourceError(f"{where}: not a readable Parquet file: {exc}") from None


def _next_rows(batches: Any) -> list[dict[str, Any]] | None:
    batch = next(batches, None)
    return None if batch is None else batch.to_pylist()


def _true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _mtime(value: Any) -> float | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):  # pyarrow gives naive datetimes for UTC timestamps
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, int | float):
        return float(value) / 1000.0  # Parquet TIMESTAMP_MILLIS read as a number
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


def _mktemp() -> str:
    fd, path = tempfile.mkstemp(prefix="scanner-inventory-", suffix=".parquet")
    os.close(fd)
    return path


def _unlink(path: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)
