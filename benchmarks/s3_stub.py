"""A fast, in-memory S3 stub for benchmarks and fault tests: ListObjectsV2 pages and GETs, nothing else.

Not a fake of S3 (moto is that): it answers the two hot calls from memory as cheaply as possible, so
the client's own cost is what a benchmark measures, with optional injected latency standing for a
real S3 round trip, and scripted faults (503 SlowDown, 403, a body cut short) for the retry tests.
Signatures are not checked.

Asked for ``encoding-type=url`` (the scanner always asks), keys and prefixes are form-encoded as AWS
writes them: a space is ``+``, a plus ``%2B``.

Keys are synthetic and sorted: ``p{p:03d}/k{i:08d}.bin`` for ``prefixes`` x ``per_prefix`` keys, every
object ``object_size`` bytes, plus any extra objects given in ``objects`` (key -> bytes) and one
streamed object ``big.bin`` of ``big_size`` bytes when asked.

Run standalone (prints ``PORT`` on stdout once listening, so a benchmark can run it as a process)::

    python benchmarks/s3_stub.py --keys 200000 --prefixes 20 --latency-ms 0 --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import quote_plus
from xml.sax.saxutils import escape

from aiohttp import web

__all__ = ("Faults", "StubBucket", "bench_env", "make_app", "serve", "spawn")

_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    "<Name>{bucket}</Name><Prefix>{prefix}</Prefix><KeyCount>{count}</KeyCount><MaxKeys>{max}</MaxKeys>"
    "<IsTruncated>{truncated}</IsTruncated>{encoding}"
)
_ITEM = (
    "<Contents><Key>{key}</Key><LastModified>2026-11-01T12:00:00.000Z</LastModified>"
    "<ETag>&quot;{etag}&quot;</ETag><Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
)
_ETAG = "0" * 32


@dataclass
class Faults:
    """Scripted misbehaviour. ``slowdown`` answers the first N requests with 503 SlowDown; ``denied``
    keys answer 403; ``truncate`` keys send half their body and drop the connection; ``list_error``
    (status, code) answers every listing request, as S3 does for refused credentials or no
    ``s3:ListBucket``."""

    slowdown: int = 0
    list_error: tuple[int, str] | None = None
    #: the bucket's region: a request signed for another answers 400 naming it, as S3 does
    region: str | None = None
    denied: frozenset[str] = frozenset()
    truncate: frozenset[str] = frozenset()
    requests: int = 0
    slowdowns_sent: int = 0


@dataclass
class StubBucket:
    name: str = "bench"
    prefixes: int = 20
    per_prefix: int = 10_000
    object_size: int = 10 * 1024
    big_size: int = 0
    objects: Mapping[str, bytes] = field(default_factory=dict)
    latency: float = 0.0
    faults: Faults = field(default_factory=Faults)
    #: no prefixes: ``prefixes * per_prefix`` hex-named keys at the root, as UUID-named uploads
    flat: bool = False
    #: a delimiter listing leaves out a common prefix that holds only sub-folders (no key directly
    #: under it), as s3rver does; a listing without a delimiter still returns every key
    hide_nested_prefixes: bool = False

    def __post_init__(self) -> None:
        if self.flat:
            n = self.prefixes * self.per_prefix
            keys = [f"{(i * 2654435761) % 2**32:08x}-{i:08d}.bin" for i in range(n)]
        else:
            keys = [f"p{p:03d}/k{i:08d}.bin" for p in range(self.prefixes) for i in range(self.per_prefix)]
        keys.extend(self.objects)
        if self.big_size:
            keys.append("big.bin")
        keys.sort()
        self.keys = keys
        self.key_set = frozenset(keys)
        # each key's <Contents> element, rendered once, form-encoded as every client here asks for it: a
        # page is then a join, not 1,000 formats
        self.items = [_ITEM.format(key=_url(k), etag=_ETAG, size=self.size_of(k)) for k in keys]
        self.body = b"\xab" * self.object_size

    @cached_property
    def plain_items(self) -> list[str]:
        """``items`` for a listing without ``encoding-type=url``, rendered on first use."""
        return [_ITEM.format(key=escape(k), etag=_ETAG, size=self.size_of(k)) for k in self.keys]

    def size_of(self, key: str) -> int:
        if key in self.objects:
            return len(self.objects[key])
        return self.big_size if key == "big.bin" else self.object_size

    def page(
        self, prefix: str, start: str, delimiter: str, max_keys: int
    ) -> tuple[range | list[int], list[str], str | None]:
        """Indices of the keys and the common prefixes after ``start`` under ``prefix``; the last one
        returned is the next continuation token (None on the last page)."""
        keys = self.keys
        end = bisect.bisect_left(keys, prefix[:-1] + chr(ord(prefix[-1]) + 1)) if prefix else len(keys)
        if delimiter and start.endswith(delimiter) and start.startswith(prefix):
            # the token was a common prefix: resume after everything under it
            i = bisect.bisect_left(keys, start[:-1] + chr(ord(delimiter) + 1))
        else:
            i = max(bisect.bisect_right(keys, start), bisect.bisect_left(keys, prefix))
        if not delimiter:
            stop = min(i + max_keys, end)
            return range(i, stop), [], (keys[stop - 1] if stop < end else None)
        out: list[int] = []
        common: list[str] = []
        last = None
        while i < end and len(out) + len(common) < max_keys:
            key = keys[i]
            cut = key.find(delimiter, len(prefix))
            if cut >= 0:
                folder = key[: cut + 1]
                after = bisect.bisect_left(keys, folder[:-1] + chr(ord(delimiter) + 1))
                if not (self.hide_nested_prefixes and self._only_subfolders(folder, i, after, delimiter)):
                    last = folder
                    common.append(last)
                i = after
                continue
            out.append(i)
            last = key
            i += 1
        return out, common, (last if i < end else None)

    def _only_subfolders(self, folder: str, i: int, end: int, delimiter: str) -> bool:
        return all(self.keys[j].find(delimiter, len(folder)) >= 0 for j in range(i, end))


def _url(text: str) -> str:
    return escape(quote_plus(text, safe="/"))


def _listing_xml(
    b: StubBucket,
    prefix: str,
    idx: range | list[int],
    common: list[str],
    nxt: str | None,
    mx: int,
    encoded: bool = False,
) -> str:
    name = _url if encoded else escape
    head = _HEAD.format(
        bucket=b.name,
        prefix=name(prefix),
        count=len(idx) + len(common),
        max=mx,
        truncated="true" if nxt else "false",
        encoding="<EncodingType>url</EncodingType>" if encoded else "",
    )
    items = b.items if encoded else b.plain_items
    parts = [head, *(items[i] for i in idx)]
    parts.extend(f"<CommonPrefixes><Prefix>{name(c)}</Prefix></CommonPrefixes>" for c in common)
    if nxt:
        parts.append(f"<NextContinuationToken>{escape(nxt)}</NextContinuationToken>")
    parts.append("</ListBucketResult>")
    return "".join(parts)


def _error(status: int, code: str, message: str) -> web.Response:
    body = f"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>{code}</Code><Message>{message}</Message>"
    body += "</Error>"
    return web.Response(status=status, body=body.encode(), content_type="application/xml")


def make_app(bucket: StubBucket) -> web.Application:
    """The aiohttp app: path-style ``/{bucket}`` (ListObjectsV2) and ``/{bucket}/{key}`` (GET)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        f = bucket.faults
        f.requests += 1
        if bucket.latency:
            await asyncio.sleep(bucket.latency)
        if f.region is not None and f"/{f.region}/s3/" not in request.headers.get("Authorization", ""):
            body = (
                "<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>AuthorizationHeaderMalformed</Code>"
                f"<Message>wrong region</Message><Region>{f.region}</Region></Error>"
            )
            return web.Response(status=400, body=body.encode(), headers={"x-amz-bucket-region": f.region})
        if f.slowdowns_sent < f.slowdown:
            f.slowdowns_sent += 1
            return _error(503, "SlowDown", "Please reduce your request rate.")
        name, _, key = request.path.lstrip("/").partition("/")
        if name != bucket.name:
            return _error(404, "NoSuchBucket", "The specified bucket does not exist")
        if not key:
            if f.list_error is not None:
                return _error(f.list_error[0], f.list_error[1], "refused")
            q = request.query
            if q.get("list-type") != "2":
                return _error(501, "NotImplemented", "only ListObjectsV2")
            mx = min(int(q.get("max-keys", "1000")), 1000)
            prefix = q.get("prefix", "")
            start = max(q.get("continuation-token", ""), q.get("start-after", ""))
            keys, common, nxt = bucket.page(prefix, start, q.get("delimiter", ""), mx)
            encoded = q.get("encoding-type") == "url"
            return web.Response(
                body=_listing_xml(bucket, prefix, keys, common, nxt, mx, encoded).encode(),
                content_type="application/xml",
            )
        if key in f.denied:
            return _error(403, "AccessDenied", "Access Denied")
        if key in bucket.objects:
            data = bucket.objects[key]
        elif key == "big.bin" and bucket.big_size:
            return await _stream_big(request, bucket.big_size)
        elif key in bucket.key_set:
            data = bucket.body
        else:
            return _error(404, "NoSuchKey", "The specified key does not exist.")
        if key in f.truncate:
            response = web.StreamResponse(headers={"Content-Length": str(len(data)), "ETag": f'"{_ETAG}"'})
            await response.prepare(request)
            await response.write(data[: len(data) // 2])
            if request.transport is not None:
                request.transport.close()
            return response
        return web.Response(body=data, headers={"ETag": f'"{_ETAG}"'}, content_type="binary/octet-stream")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    return app


async def _stream_big(request: web.Request, size: int) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": str(size), "ETag": f'"{_ETAG}"'})
    await response.prepare(request)
    block = b"\xcd" * (1 << 20)
    for chunk in _blocks(size, block):
        await response.write(chunk)
    await response.write_eof()
    return response


def _blocks(size: int, block: bytes) -> Iterator[bytes]:
    while size > 0:
        yield block[: min(size, len(block))]
        size -= len(block)


async def serve(bucket: StubBucket, port: int = 0) -> tuple[web.AppRunner, int]:
    """Start the stub on 127.0.0.1; returns the runner (``await runner.cleanup()``) and the port."""
    runner = web.AppRunner(make_app(bucket), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    sockets = site._server.sockets if site._server else ()  # type: ignore[union-attr]
    return runner, int(sockets[0].getsockname()[1])


@contextlib.contextmanager
def spawn(*args: str) -> Iterator[str]:
    """Run the stub as a separate process (its CPU is then not the client's); yields its endpoint URL."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def bench_env(endpoint: str) -> None:
    """Point the standard AWS chain at the stub, as a user points it at MinIO."""
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",  # noqa: S106 - the stub checks no signature
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(var, None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=200_000)
    p.add_argument("--prefixes", type=int, default=20)
    p.add_argument("--object-size", type=int, default=10 * 1024)
    p.add_argument("--big-size", type=int, default=0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--flat", action="store_true", help="hex-named keys at the root, no prefixes")
    a = p.parse_args()
    bucket = StubBucket(
        prefixes=a.prefixes,
        per_prefix=a.keys // a.prefixes,
        object_size=a.object_size,
        big_size=a.big_size,
        latency=a.latency_ms / 1000,
        flat=a.flat,
    )

    async def run() -> None:
        runner, port = await serve(bucket, a.port)
        print(port, flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
