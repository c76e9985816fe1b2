"""``--output s3://bucket/key.ndjson``: verdict lines streamed into an S3 multipart upload.

* The upload is created by the first :meth:`S3Sink.write`, so a bucket we cannot write to stops the
  run after its first batch (SinkError, exit 2), not after hours of scanning.
* Lines are buffered and a part is uploaded each time ``part_size`` bytes (>= 5 MiB, S3's minimum
  for every part but the last) have accumulated, so memory holds at most one part. S3 allows 10,000
  parts, so the part size doubles every 1,000 parts: 8 MiB parts carry the first 8 GiB (about 25
  million lines), and a report can grow to S3's 5 TiB limit while only giant ones buffer more.
* :meth:`S3Sink.aclose` uploads the rest as the last part and completes the upload: only then does
  the object exist. :meth:`S3Sink.abort` (and any failed write) aborts it, so a partial report never
  masquerades as a complete one; aclose after abort does nothing. An empty run writes an empty object.
* Part uploads retry throttling and 5xx through botocore's standard retry mode. A bucket lifecycle
  rule ``AbortIncompleteMultipartUpload`` is the safety net for a process killed with SIGKILL.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import SinkError
from ..model import Verdict, encode_verdict
from ..sources._s3conn import S3Config, S3Connection, parse_s3_uri

__all__ = ("MIN_PART", "S3Sink")

log = logging.getLogger(__name__)

#: S3's smallest part (every part but the last)
MIN_PART = 5 * 1024 * 1024
_DEFAULT_PART = 8 * 1024 * 1024
_MAX_PARTS = 10_000
_CONTENT_TYPE = "application/x-ndjson"


class S3Sink:
    """NDJSON lines into ``s3://bucket/key`` (see the module docstring). One writer task calls it."""

    durable_lines = False  # the object appears only when the multipart upload completes

    def __init__(self, bucket: str, key: str, conn: S3Connection, *, part_size: int = _DEFAULT_PART) -> None:
        if part_size < MIN_PART:
            raise ValueError(f"part_size must be at least {MIN_PART} bytes")
        self.bucket = bucket
        self.key = key
        self.part_size = part_size
        #: parts uploaded at one size before the size doubles
        self.parts_per_step = 1_000
        self._conn = conn
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self.part_sizes: list[int] = []
        self._state = "open"  # -> "completed" | "aborted"
        self.lines = 0
        self.bytes = 0

    @classmethod
    def from_uri(cls, uri: str, s3_table: Mapping[str, Any], *, part_size: int = _DEFAULT_PART) -> S3Sink:
        """The sink for ``--output s3://bucket/key``; raises SinkError for a URI without a key and
        ConfigError for a bad ``[s3]`` table. Does no I/O."""
        try:
            bucket, key = parse_s3_uri(uri)
        except Exception as exc:
            raise SinkError(str(exc)) from None
        if not key or key.endswith("/"):
            raise SinkError(f"{uri}: --output needs an object key (s3://bucket/report.ndjson)")
        return cls(bucket, key, S3Connection(S3Config.from_table(s3_table)), part_size=part_size)

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def __repr__(self) -> str:
        return f"<S3Sink {self.name} {self._state} parts={len(self._parts)} lines={self.lines}>"

    async def write(self, verdicts: Sequence[Verdict], /) -> None:
        if self._state != "open":
            raise SinkError(f"{self.name}: output already {self._state}")
        for v in verdicts:
            line = encode_verdict(v)
            self._buffer += line
            self.bytes += len(line)
        self.lines += len(verdicts)
        try:
            if self._upload_id is None:
                await self._create()
            while len(self._buffer) >= (size := self._next_part_size()):
                part = bytes(self._buffer[:size])
                del self._buffer[:size]
                await self._upload_part(part)
        except SinkError:
            await self.abort()
            raise

    async def aclose(self) -> None:
        """Upload what is buffered and complete the upload (or write an empty object); shielded."""
        if self._state != "open":
            await self._conn.aclose()
            return
        with anyio.CancelScope(shield=True):
            try:
                client = await self._client()
                if self._upload_id is None:
                    await self._call(
                        client.put_object(
                            Bucket=self.bucket,
                            Key=self.key,
                            Body=bytes(self._buffer),
                            ContentType=_CONTENT_TYPE,
                        ),
                        "write",
                    )
                else:
                    if self._buffer or not self._parts:
                        await self._upload_part(bytes(self._buffer))
                    await self._call(
                        client.complete_multipart_upload(
                            Bucket=self.bucket,
                            Key=self.key,
                            UploadId=self._upload_id,
                            MultipartUpload={"Parts": self._parts},
                        ),
                        "complete the upload of",
                    )
                self._buffer.clear()
                self._state = "completed"
            except SinkError:
                await self.abort()
                raise
            finally:
                await self._conn.aclose()

    async def abort(self) -> None:
        """Abort the multipart upload, if any; nothing is left that looks like a report. Never raises."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._buffer.clear()
        if self._upload_id is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                client = await self._client()
                await client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self._upload_id
                )
            except (BotoCoreError, ClientError, SinkError) as exc:
                log.warning(
                    "%s: could not abort the multipart upload %s: %s", self.name, self._upload_id, exc
                )

    def _next_part_size(self) -> int:
        return self.part_size << (len(self._parts) // self.parts_per_step)

    # S3 calls.

    async def _client(self) -> Any:
        try:
            return await self._conn.client()
        except Exception as exc:  # SourceError (no credentials) is a sink failure here
            raise SinkError(f"{self.name}: {exc}") from None

    async def _call(self, awaitable: Any, doing: str) -> Any:
        try:
            return await awaitable
        except ClientError as exc:
            err = exc.response.get("Error", {})
            detail = f"{err.get('Code', '')} {err.get('Message', '')}".strip()
            raise SinkError(f"{self.name}: cannot {doing} the report: {detail}") from None
        except BotoCoreError as exc:
            raise SinkError(f"{self.name}: cannot {doing} the report: {exc}") from None

    async def _create(self) -> None:
        client = await self._client()
        answer = await self._call(
            client.create_multipart_upload(Bucket=self.bucket, Key=self.key, ContentType=_CONTENT_TYPE),
            "start",
        )
        self._upload_id = answer["UploadId"]

    async def _upload_part(self, data: bytes) -> None:
        client = await self._client()
        number = len(self._parts) + 1
        if number > _MAX_PARTS:
            raise SinkError(f"{self.name}: the report outgrew S3's {_MAX_PARTS:,} parts")
        answer = await self._call(
            client.upload_part(
                Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=data
            ),
            f"upload part {number} of",
        )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        self.part_sizes.append(len(data))
