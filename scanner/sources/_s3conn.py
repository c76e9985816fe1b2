"""The ``[s3]`` config table, one S3 connection (aiobotocore client + lean wire), and error mapping.

Endpoint and credentials follow the standard AWS chain: ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``,
profiles, environment, instance roles. botocore resolves them when the client is created; the lean
wire (:mod:`._s3wire`) then signs with the same credentials for the same endpoint, so MinIO, Ceph, R2
and moto need no project-specific flag. ``[s3] endpoint_url`` / ``region`` override the chain.

Addressing: ``auto`` uses virtual hosts on AWS and path style anywhere else (what S3-compatible stores
expect); ``path`` / ``virtual`` force one.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import aiohttp
import anyio
import msgspec
from aiobotocore.session import AioSession
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from ..config import validate_section
from ..errors import SourceError, TargetError
from ._s3wire import AWS_HOST, S3ResponseError, S3Wire

__all__ = ("S3Config", "S3Connection", "listing_error", "object_error", "parse_s3_uri")


class S3Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ``[s3]`` table. Every key is optional; unknown keys are rejected."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    #: HTTP connections to S3 (listing pages and object GETs share them)
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 64
    #: prefixes listed at once; 1 lists sequentially, in key order
    list_concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] = 16
    page_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1000
    #: attempts per request for 503 SlowDown, 5xx and connection failures
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 4
    connect_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    read_timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0
    #: send If-Match with the listed ETag, so an object overwritten since listing is reported as changed
    if_match: bool = True
    ca_bundle: str | None = None

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> S3Config:
        """Validate the raw ``[s3]`` table; raises ConfigError naming the key."""
        return validate_section(cls, table, "s3")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> ``(bucket, prefix)``; raises SourceError if there is no bucket."""
    if not uri.startswith("s3://"):
        raise SourceError(f"{uri}: not an s3:// URI")
    bucket, _, prefix = uri[5:].partition("/")
    if not bucket:
        raise SourceError(f"{uri}: no bucket name (use s3://bucket or s3://bucket/prefix)")
    return bucket, prefix


class S3Connection:
    """Credentials, one aiobotocore client and one lean :class:`S3Wire`, created on first use.

    Task-safe: concurrent first callers share one creation. :meth:`aclose` is idempotent and closes the
    aiohttp session and the client.
    """

    def __init__(self, config: S3Config, *, session: AioSession | None = None) -> None:
        self.config = config
        self._session = session
        self._stack = AsyncExitStack()
        self._lock = anyio.Lock()
        self._client: Any = None
        self._wire: S3Wire | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<S3Connection wire={self._wire!r}>"

    async def client(self) -> Any:
        """The aiobotocore S3 client (for the calls that are not on the hot path)."""
        await self._start()
        return self._client

    async def wire(self) -> S3Wire:
        await self._start()
        assert self._wire is not None
        return self._wire

    async def _start(self) -> None:
        if self._wire is not None:
            return
        async with self._lock:
            if self._wire is not None:
                return
            if self._closed:
                raise SourceError("S3 connection already closed")
            cfg = self.config
            session = self._session or AioSession(profile=cfg.profile)
            try:
                credentials = await session.get_credentials()
            except (BotoCoreError, ClientError) as exc:
                raise SourceError(f"S3: cannot load AWS credentials: {exc}") from None
            if credentials is None:
                raise SourceError("S3: no AWS credentials found (environment, profile or instance role)")
            boto_config = BotoConfig(
                max_pool_connections=cfg.max_connections,
                connect_timeout=cfg.connect_timeout,
                read_timeout=cfg.read_timeout,
                retries={"mode": "standard", "max_attempts": cfg.max_attempts},
                s3={"addressing_style": cfg.addressing_style},
            )
            client = await self._stack.enter_async_context(
                session.create_client(
                    "s3",
                    region_name=cfg.region,
                    endpoint_url=cfg.endpoint_url,
                    config=boto_config,
                    verify=self._ca_bundle(),
                )
            )
            endpoint = client.meta.endpoint_url
            host = urlsplit(endpoint).netloc
            path_style = cfg.addressing_style == "path" or (
                cfg.addressing_style == "auto" and not AWS_HOST.match(host)
            )
            connector = aiohttp.TCPConnector(
                limit=cfg.max_connections, ttl_dns_cache=300, ssl=self._ssl_context(endpoint)
            )
            http = await self._stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=connector,
                    auto_decompress=False,
                    timeout=aiohttp.ClientTimeout(
                        total=None, sock_connect=cfg.connect_timeout, sock_read=cfg.read_timeout
                    ),
                )
            )
            self._client = client
            self._wire = S3Wire(
                http,
                credentials.get_frozen_credentials,
                endpoint=endpoint,
                region=client.meta.region_name or "us-east-1",
                path_style=path_style,
                max_attempts=cfg.max_attempts,
            )

    def _ca_bundle(self) -> str | None:
        return self.config.ca_bundle or os.environ.get("AWS_CA_BUNDLE") or None

    def _ssl_context(self, endpoint: str) -> ssl.SSLContext | bool:
        if not endpoint.startswith("https:"):
            return False
        bundle = self._ca_bundle()
        return ssl.create_default_context(cafile=bundle) if bundle else True

    async def aclose(self) -> None:
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._stack.aclose()
        self._wire = None
        self._client = None


_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired"}
)


def listing_error(exc: S3ResponseError, where: str) -> SourceError:
    """A listing that failed: the run cannot go on (exit 2, one line naming the bucket)."""
    if exc.code == "NoSuchBucket":
        return SourceError(f"{where}: no such bucket", code="no_bucket")
    if exc.code in _CREDENTIAL_CODES:
        return SourceError(f"{where}: credentials refused ({exc.code}: {exc.message})", code="credentials")
    if exc.status == 403:
        return SourceError(
            f"{where}: access denied to list the bucket (needs s3:ListBucket"
            f"{'' if not exc.code else '; ' + exc.code})",
            code="access_denied",
        )
    if exc.status == 0:
        return SourceError(f"{where}: cannot reach S3: {exc.message}", code="unreachable")
    return SourceError(
        f"{where}: cannot list: {exc.status} {exc.code} {exc.message}".rstrip(), code="list_failed"
    )


def object_error(exc: S3ResponseError) -> TargetError:
    """A GET that failed for one object: one ``error`` verdict line with a stable code."""
    if exc.code in ("NoSuchKey", "NoSuchVersion") or (exc.status == 404 and exc.code != "NoSuchBucket"):
        return TargetError("object vanished before it could be read", code="vanished")
    if exc.code == "NoSuchBucket":
        return TargetError("bucket vanished before the object could be read", code="vanished")
    if exc.status == 412:
        return TargetError("object changed since it was listed (ETag differs)", code="changed")
    if exc.code == "InvalidObjectState":
        return TargetError("object is archived (restore it before scanning)", code="archived")
    if exc.code in _CREDENTIAL_CODES:
        return TargetError(f"credentials refused ({exc.code})", code="credentials")
    if exc.status == 403:
        return TargetError(f"access denied ({exc.code or 'AccessDenied'})", code="access_denied")
    if exc.status == 0:
        error = TargetError(f"S3 unreachable: {exc.message}", code="transport")
    elif exc.status == 503 or exc.code == "SlowDown":
        error = TargetError("S3 kept throttling (503 SlowDown) past the retries", code="throttled")
    else:
        error = TargetError(f"GET failed: {exc.status} {exc.code} {exc.message}".rstrip(), code="s3_error")
    error.retryable = exc.status == 0 or exc.status >= 500
    return error
