"""The lean S3 hot path: SigV4-signed GETs over one aiohttp session, listings parsed with expat.

aiobotocore spends about 3 ms of CPU per call and about 110 us per listed key (measured in
``shared/notes/feasibility.md``), which caps a process at ~300 GETs/s and ~9,000 keys/s. The calls a
bulk scan makes millions of times -- ListObjectsV2 / ListObjectVersions pages and object GETs -- go
through here instead: botocore's own ``S3SigV4Auth`` signs a bare request (~0.2 ms), aiohttp sends it
on a keep-alive pool, and :func:`parse_listing` reads the page with ``xml.etree`` (~16 us a key).
Everything else (credentials chain, endpoint resolution, multipart uploads) stays with aioboto3.

Contracts:

* Every call is an idempotent GET. Throttling and transient failures (``503 SlowDown``, ``500``,
  ``502``, ``504``, ``RequestTimeout``, connection resets, timeouts) are retried up to
  ``max_attempts`` with full-jitter exponential backoff, honouring ``Retry-After``; a body that has
  started streaming is never retried here (the caller turns a broken stream into a TargetError).
* Any other answer raises :class:`S3ResponseError` carrying status, S3 error code and message; the
  source decides whether that is a per-target or a per-run failure. No aiohttp exception escapes:
  exhausted transport retries raise :class:`S3ResponseError` with ``status = 0``.
* A ``301``/``400`` that names the bucket's real region (``x-amz-bucket-region``) is followed once by
  re-signing for that region, which is what botocore does for buckets outside the client's region.
"""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import anyio
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from yarl import URL

from .._http import RetryPolicy, full_jitter
from ._s3xml import ListPage, parse_error, parse_listing

__all__ = ("AWS_HOST", "S3ResponseError", "S3Wire")

AWS_HOST = re.compile(r"^s3([.-][a-z0-9-]+)?\.amazonaws\.com$")
_RETRY_STATUS = frozenset({500, 502, 503, 504})
_RETRY_CODES = frozenset({"SlowDown", "InternalError", "RequestTimeout", "ServiceUnavailable"})


class S3ResponseError(Exception):
    """S3 answered an error (``status`` 0: no answer at all after the retries)."""

    def __init__(self, status: int, code: str, message: str, region: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.region = region


Credentials = Any  # botocore ReadOnlyCredentials: access_key, secret_key, token


class S3Wire:
    """Signs and sends S3 GETs; owns no session (the caller closes it).

    ``credentials`` is awaited before each request (aiobotocore's refreshing credentials make that
    cheap), so long runs survive rotating instance-role keys. ``path_style`` picks
    ``endpoint/bucket/key`` over ``bucket.host/key``.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        credentials: Callable[[], Awaitable[Credentials]],
        *,
        endpoint: str,
        region: str,
        path_style: bool,
        max_attempts: int = 4,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._session = session
        self._credentials = credentials
        self.endpoint = endpoint.rstrip("/")
        self.region = region
        self.path_style = path_style
        self.max_attempts = max_attempts
        # the shared HTTP layer's policy and jitter; its VendorClient loop does not fit S3 (a 403 there
        # halts the run, bodies are read whole, and each S3 attempt must be signed afresh)
        self._policy = RetryPolicy(attempts=max_attempts, base=backoff, cap=max_backoff)
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._regions: dict[str, str] = {}
        self._endpoints: dict[str, str] = {}
        self._signers: dict[tuple[Any, str], S3SigV4Auth] = {}
        self.requests = 0
        self.retries = 0

    def __repr__(self) -> str:
        style = "path" if self.path_style else "virtual"
        return (
            f"<S3Wire {self.endpoint} {self.region} {style} requests={self.requests} retries={self.retries}>"
        )

    def url(self, bucket: str, key: str = "", query: Sequence[tuple[str, str]] = ()) -> str:
        """The encoded URL of an object (or of the bucket when ``key`` is empty), query sorted as SigV4
        canonicalises it so that what is signed is byte for byte what is sent."""
        path = "/" + quote(key, safe="/~") if key else "/"
        endpoint = self._endpoints.get(bucket, self.endpoint)
        # A dotted bucket name cannot be a virtual host under TLS (the wildcard certificate covers one
        # label), so it goes path style, as botocore does.
        if self.path_style or ("." in bucket and endpoint.startswith("https:")):
            base = f"{endpoint}/{bucket}"
            path = path if key else ""
        else:
            parts = urlsplit(endpoint)
            base = f"{parts.scheme}://{bucket}.{parts.netloc}"
        qs = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query))
        return f"{base}{path}?{qs}" if qs else f"{base}{path}"

    async def _sign(self, url: str, region: str, headers: dict[str, str]) -> dict[str, str]:
        creds = await self._credentials()
        signer = self._signers.get((creds, region))
        if signer is None:
            self._signers.clear()
            signer = self._signers[(creds, region)] = S3SigV4Auth(creds, "s3", region)
        request = AWSRequest(method="GET", url=url, headers=headers)
        signer.add_auth(request)
        return dict(request.headers.items())

    def _delay(self, attempt: int, response: aiohttp.ClientResponse | None) -> float:
        if response is not None:
            hint = response.headers.get("Retry-After", "")
            if hint.isdigit():
                return min(float(hint), self._policy.cap * 4)
        return full_jitter(attempt - 1, self._policy, self._rng)

    @asynccontextmanager
    async def get(
        self,
        bucket: str,
        key: str = "",
        query: Sequence[tuple[str, str]] = (),
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A successful (2xx) response with its body unread; raises S3ResponseError otherwise."""
        url = self.url(bucket, key, query)
        region = self._regions.get(bucket, self.region)
        attempt = 0
        while True:
            attempt += 1
            self.requests += 1
            signed = await self._sign(url, region, dict(headers or {}))
            try:
                response = await self._session.get(URL(url, encoded=True), headers=signed)
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt >= self.max_attempts:
                    raise S3ResponseError(0, "Transport", f"{type(exc).__name__}: {exc}") from None
                self.retries += 1
                await self._sleep(self._delay(attempt, None))
                continue
            try:
                if response.status < 300:
                    yield response
                    return
                body = await response.read()
            except (aiohttp.ClientError, TimeoutError):
                if response.status < 300:
                    raise  # the caller was reading the body: never silently replayed here
                body = b""
            finally:
                response.release()
            code, message, named_region = parse_error(body)
            hinted = response.headers.get("x-amz-bucket-region") or named_region
            if response.status in (301, 400) and hinted and hinted != region and attempt == 1:
                region = self._regions[bucket] = hinted
                if not self.path_style and AWS_HOST.match(urlsplit(self.endpoint).netloc):
                    # a regional virtual host answers only for its own region's buckets
                    self._endpoints[bucket] = f"{urlsplit(self.endpoint).scheme}://s3.{hinted}.amazonaws.com"
                url = self.url(bucket, key, query)
                continue
            if (response.status in _RETRY_STATUS or code in _RETRY_CODES) and attempt < self.max_attempts:
                self.retries += 1
                await self._sleep(self._delay(attempt, response))
                continue
            raise S3ResponseError(
                response.status, code or _STATUS_CODES.get(response.status, "Error"), message, hinted
            )

    async def list_page(
        self,
        bucket: str,
        prefix: str,
        *,
        versions: bool = False,
        marker: str | tuple[str, str] | None = None,
        start_after: str | None = None,
        delimiter: str | None = None,
        max_keys: int = 1000,
    ) -> ListPage:
        """One ListObjectsV2 (or ListObjectVersions) page. ``marker`` is the previous page's ``next``."""
        query: list[tuple[str, str]] = [("encoding-type", "url"), ("max-keys", str(max_keys))]
        if prefix:
            query.append(("prefix", prefix))
        if delimiter:
            query.append(("delimiter", delimiter))
        if versions:
            query.append(("versions", ""))
            if isinstance(marker, tuple):
                query.append(("key-marker", marker[0]))
                if marker[1]:
                    query.append(("version-id-marker", marker[1]))
            elif start_after:
                query.append(("key-marker", start_after))
        else:
            query.append(("list-type", "2"))
            if isinstance(marker, str):
                query.append(("continuation-token", marker))
            if start_after:
                query.append(("start-after", start_after))
        async with self.get(bucket, "", query) as response:
            try:
                body = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise S3ResponseError(0, "Transport", f"listing page cut short: {exc}") from None
        try:
            return parse_listing(body)
        except ValueError as exc:
            raise S3ResponseError(response.status, "MalformedListing", str(exc)) from None


_STATUS_CODES = {301: "PermanentRedirect", 403: "AccessDenied", 404: "NotFound", 412: "PreconditionFailed"}
