"""The bytes of ``url`` targets: one plain HTTP GET each, streamed, never buffered whole.

A careful client, because the URLs come from a list nobody vetted:

* **TLS** is verified against the system trust store; nothing here can turn that off.
* **Timeouts by phase**: ``connect_timeout`` for each TCP connect and TLS handshake, ``read_timeout``
  for each wait on the socket (for the answer's head, and between two pieces of its body), and
  ``total_timeout`` for the whole target: from the GET (a wait for a free pooled connection included)
  through every redirect to the body's last byte, so a server that trickles a byte per
  ``read_timeout`` still ends its target in bounded time. The deadline is checked around each single
  read of the body, never across a ``yield``: time the engine spends on a chunk counts against it,
  but no read is ever cut off while the engine holds the chunk.
* **Redirects**: followed here, not by aiohttp, up to ``max_redirects`` times, to http(s) only, each
  ``Location`` checked before it is requested. A URL given as ``https`` is never followed to plain
  ``http`` (a downgrade: content fetched in clear could be changed on the way and reported clean).
* **Addresses**: a link-local or cloud metadata address (169.254.0.0/16, which holds the metadata
  service of AWS, GCP and Azure at 169.254.169.254; fe80::/10; AWS's fd00:ec2::254; their
  IPv4-mapped forms) is refused before any connection, for the URL given and for every redirect
  hop: an IP literal is checked as it stands, a name by :class:`GuardedResolver` on the addresses it
  resolves to, which are the very ones the connector then connects to (no second lookup to race).
  ``allow_link_local`` turns that off, for a user who really scans a metadata service.
* **Size**: ``Content-Length`` becomes :attr:`HttpBody.size`, so an engine refuses an oversized body
  before reading any of it; a body without one is bounded by the engine while it streams (see
  :func:`scanner.engines._staging.stage`). ``Accept-Encoding: identity`` asks for the bytes as
  stored, so the promised size is the one that arrives; a server that compresses anyway is
  decompressed and its size is then not promised.
* **No shared state between targets**: no cookies are kept, no proxy or ``.netrc`` from the
  environment is used.
* **One session per source**, with ``max_connections`` connections (``per_host`` to one host), made
  on first use and closed by :meth:`UrlBodies.aclose`.

Every failure is a :class:`~scanner.errors.TargetError` with a stable code (one ``error`` line, the run
goes on): ``http_<status>`` for an answer outside 2xx (after redirects), ``timeout``, ``transport``
(refused, reset, unknown host), ``tls``, ``redirects`` (too many, to an unusable URL, or an https
downgrade), ``blocked_address`` (a link-local or metadata address, see above), ``read_failed`` (the
body broke off). No aiohttp exception escapes. A URL quoted in a
message has no query string and no userinfo (:func:`scanner._redact.quote_url`): a presigned URL's
token or signature never reaches a verdict line, a log or the summary.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import anyio
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from .. import __version__
from .._content import CHUNK
from .._http import describe_transport_error
from .._redact import quote_url, scrub_urls
from ..errors import TargetError
from ..model import Kind, Target

__all__ = ("GuardedResolver", "HttpBody", "RefusedAddress", "UrlBodies", "next_hop", "refused_address")

#: the answers whose Location aiohttp would follow (300 and 304 are not redirects to follow)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: link-local IPv4 (the metadata service of AWS, GCP, Azure, ... at 169.254.169.254), link-local
#: IPv6, and AWS's IPv6 metadata address
_REFUSED = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
)
_ALLOW_HINT = "set allow_link_local = true under [urls] in the config to allow it"


def refused_address(address: str) -> bool:
    """Whether ``address``, an IP address as text (an IPv6 zone ``%eth0`` allowed), is link-local or a
    cloud metadata address, in any of its forms (``::ffff:169.254.169.254`` too). Raises ValueError
    for text that is not an IP address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in _REFUSED)


class RefusedAddress(OSError):
    """Raised by :class:`GuardedResolver` when every address of a name is refused; aiohttp hands it
    on inside a ClientConnectorDNSError, before any connection is attempted."""

    def __init__(self, host: str, addresses: Sequence[str]) -> None:
        super().__init__(f"{host}: only refused addresses ({', '.join(addresses)})")
        self.host = host
        self.addresses = tuple(addresses)


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` and keeps only the addresses :func:`refused_address` allows (all of
    them with ``allow_link_local``); raises :class:`RefusedAddress` when none is left. The connector
    connects to exactly what this returns (its DNS cache holds the filtered answer), so the check is
    on the addresses connected to. Closes ``inner`` only if ``owns_inner``."""

    def __init__(
        self, inner: AbstractResolver, *, allow_link_local: bool = False, owns_inner: bool = True
    ) -> None:
        self._inner = inner
        self.allow_link_local = allow_link_local
        self._owns_inner = owns_inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if self.allow_link_local:
            return found
        # a name with an allowed address too keeps it: only the refused ones are never connected to
        kept = [r for r in found if not refused_address(r["host"])]
        if not kept:
            raise RefusedAddress(host, [r["host"] for r in found])
        return kept

    async def close(self) -> None:
        if self._owns_inner:
            await self._inner.close()


@dataclass(slots=True)
class HttpBody:
    """One GET response's body. ``size`` is the Content-Length, when the server gave one we can hold
    it to; a body that breaks off raises TargetError ``read_failed`` (or ``timeout``, also when the
    target's deadline, an :func:`anyio.current_time` value, passes before the body's end)."""

    _response: aiohttp.ClientResponse
    size: int | None
    path: str | None = None
    _deadline: float = float("inf")
    _limit: float = 0.0

    async def chunks(self, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        read = 0
        pieces = self._response.content.iter_chunked(chunk_size)
        try:
            while True:
                # The deadline covers each read, never the yield: the consumer's own time between
                # two chunks is not cut off mid-step, it only leaves less for the next read.
                with anyio.CancelScope(deadline=self._deadline) as scope:
                    try:
                        chunk = await anext(pieces)
                    except StopAsyncIteration:
                        return
                if scope.cancelled_caught or anyio.current_time() >= self._deadline:
                    # checked after a read that finished too: a buffered body needs no wait, so
                    # no cancellation would reach it
                    raise _over_deadline(self._limit, f"after {read} bytes of the body")
                read += len(chunk)
                yield chunk
        except (aiohttp.ServerTimeoutError, TimeoutError):
            error = TargetError(f"timed out reading the body after {read} bytes", code="timeout")
            error.retryable = True
            raise error from None
        except (aiohttp.ClientError, OSError) as exc:
            error = TargetError(f"body broken off after {read} bytes: {_describe(exc)}", code="read_failed")
            error.retryable = True
            raise error from None


class UrlBodies:
    """Opens ``url`` targets' bodies over one aiohttp session (see the module docstring)."""

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        total_timeout: float = 900.0,
        max_redirects: int = 5,
        max_connections: int = 64,
        per_host: int = 8,
        ca_file: str | None = None,
        allow_link_local: bool = False,
        resolver: AbstractResolver | None = None,
    ) -> None:
        """``ca_file``: a PEM bundle to trust instead of the system store (a private CA, a test's
        own); verification itself cannot be turned off. ``allow_link_local``: connect to link-local
        and metadata addresses too. ``resolver``: the DNS to ask (default: aiohttp's), always
        behind a :class:`GuardedResolver`; the caller keeps and closes one it gives."""
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.total_timeout = total_timeout
        self.max_redirects = max_redirects
        self.max_connections = max_connections
        self.per_host = per_host
        self._ca_file = ca_file
        self.allow_link_local = allow_link_local
        self._resolver = resolver
        self._guard: GuardedResolver | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._opened = 0
        self._in_flight = 0

    def __repr__(self) -> str:
        return (
            f"<UrlBodies opened={self._opened} in_flight={self._in_flight} "
            f"connections={self.max_connections}/{self.per_host} per host "
            f"link_local={'allowed' if self.allow_link_local else 'refused'}>"
        )

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("UrlBodies used after aclose()")
        if self._session is None:
            # made on first use: a ClientSession belongs to the running event loop
            inner, owned = self._resolver, self._resolver is None
            if inner is None:
                inner = aiohttp.DefaultResolver()
            # a connector does not close a resolver it was given: the guard closes the one made here
            guard = GuardedResolver(inner, allow_link_local=self.allow_link_local, owns_inner=owned)
            self._guard = guard
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    resolver=guard,
                    limit=self.max_connections,
                    limit_per_host=self.per_host,
                    # True: aiohttp's own verifying context over the system store
                    ssl=ssl.create_default_context(cafile=self._ca_file) if self._ca_file else True,
                ),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout
                ),
                headers={"User-Agent": f"scanner/{__version__}", "Accept-Encoding": "identity"},
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return self._session

    @asynccontextmanager
    async def open(self, target: Target, /) -> AsyncIterator[HttpBody]:
        """GET the target's URL; the body streams while the context is open, and the connection is
        released (or closed, if the body was not read to its end) on exit, cancellation included.
        Raises TargetError before yielding when the GET fails or answers outside 2xx."""
        if target.kind is not Kind.URL:
            raise TargetError(f"not a url target ({target.kind})", code="bad_target")
        session = self._get_session()
        self._opened += 1
        self._in_flight += 1
        deadline = anyio.current_time() + self.total_timeout
        try:
            # CancelScope(deadline=...), not move_on_at: the same scope, in every anyio >= 4.6
            with anyio.CancelScope(deadline=deadline) as scope:
                response, hops = await self._get(session, target.target)
            if scope.cancelled_caught:
                raise _over_deadline(self.total_timeout, "waiting for the answer")
            try:
                if not 200 <= response.status < 300:
                    error = TargetError(
                        f"HTTP {response.status} {response.reason or ''}".rstrip()
                        + (f" (after {hops} redirect{'s' if hops > 1 else ''})" if hops else ""),
                        code=f"http_{response.status}",
                    )
                    error.retryable = response.status >= 500 or response.status in (408, 429)
                    raise error
                encoded = response.headers.get("Content-Encoding", "identity").lower() != "identity"
                yield HttpBody(
                    response, None if encoded else response.content_length, None, deadline, self.total_timeout
                )
            finally:
                _finish(response)
        finally:
            self._in_flight -= 1

    async def _get(self, session: aiohttp.ClientSession, url: str) -> tuple[aiohttp.ClientResponse, int]:
        """GET ``url``, following redirects (each hop checked by :func:`next_hop`): the final response
        and the number of redirects followed. Raises TargetError; closes every response it does not
        return."""
        try:
            current = URL(url)
        except (ValueError, TypeError):
            raise TargetError("not a usable URL", code="transport") from None
        https = current.scheme == "https"
        for hops in range(self.max_redirects + 1):
            self._check_literal(current)
            response = await self._request(session, current)
            location = response.headers.get("Location")
            if response.status not in _REDIRECTS or location is None:
                return response, hops
            _finish(response)
            if hops == self.max_redirects:
                break
            current = next_hop(current, location, https_only=https)
        raise TargetError(f"more than {self.max_redirects} redirects", code="redirects")

    def _check_literal(self, url: URL) -> None:
        """Refuse an IP literal host the policy refuses: aiohttp connects to one without asking the
        resolver. A name is left to the resolver (aiohttp itself refuses numeric hosts that are not
        canonical dotted quads, such as ``2852039166``, which the OS would map onto an address)."""
        host = url.raw_host
        if self.allow_link_local or not host:
            return
        try:
            refused = refused_address(host)
        except ValueError:
            return
        if refused:
            raise _blocked(f"{host} is a link-local or cloud metadata address")

    async def _request(self, session: aiohttp.ClientSession, url: URL) -> aiohttp.ClientResponse:
        try:
            return await session.get(url, allow_redirects=False)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TargetError(
                f"TLS certificate not trusted ({scrub_urls(str(exc.certificate_error))})", code="tls"
            ) from None
        except aiohttp.ClientSSLError:
            raise TargetError("TLS handshake failed", code="tls") from None
        except (aiohttp.ServerTimeoutError, TimeoutError):
            error = TargetError("timed out waiting for the server", code="timeout")
            error.retryable = True
            raise error from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, RefusedAddress):
                refused = exc.os_error
                raise _blocked(
                    f"{refused.host} resolves only to link-local or cloud metadata addresses "
                    f"({', '.join(refused.addresses)})"
                ) from None
            # ValueError: a URL that yarl parses but aiohttp cannot request
            error = TargetError(_describe(exc), code="transport")
            error.retryable = not isinstance(exc, ValueError | aiohttp.InvalidURL)
            raise error from None

    async def aclose(self) -> None:
        """Close the session and its connections; idempotent; shielded from cancellation."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            with anyio.CancelScope(shield=True):
                await session.close()
        guard, self._guard = self._guard, None
        if guard is not None:
            with anyio.CancelScope(shield=True):
                await guard.close()


def next_hop(current: URL, location: str, *, https_only: bool) -> URL:
    """The URL a redirect from ``current`` with this ``Location`` leads to, resolved as a browser
    would, without its fragment. Raises TargetError ``redirects`` when it is not an http(s) URL, or,
    with ``https_only`` (the URL given was https), when it is plain http: a downgrade is refused."""
    try:
        url = current.join(URL(location)).with_fragment(None)
    except (ValueError, TypeError):
        raise TargetError("redirected to an unusable URL (malformed Location)", code="redirects") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise TargetError(f"redirected to an unusable URL ({quote_url(str(url))})", code="redirects")
    if https_only and url.scheme != "https":
        raise TargetError(
            f"redirected from https to plain http ({quote_url(str(url))}): a downgrade, refused",
            code="redirects",
        )
    return url


def _finish(response: aiohttp.ClientResponse) -> None:
    # close, not release: a body left unread (too large, a failed scan, a redirect's page) must not
    # be drained to put the connection back in the pool
    if response.content.at_eof():
        response.release()
    else:
        response.close()


def _blocked(what: str) -> TargetError:
    # not retryable: the address will be the same next time
    return TargetError(f"{what}: not connected to ({_ALLOW_HINT})", code="blocked_address")


def _over_deadline(limit: float, doing: str) -> TargetError:
    # not retryable: a retry would wait as long again for the same slow server
    return TargetError(f"timed out: over the {limit:g} s limit per target, {doing}", code="timeout")


def _describe(exc: BaseException) -> str:
    return scrub_urls(describe_transport_error(exc))
