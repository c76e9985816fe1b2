"""The bytes of ``url`` targets: one plain HTTP GET each, streamed, never buffered whole.

A careful client, because the URLs come from a list nobody vetted:

* **TLS** is verified against the system trust store; nothing here can turn that off.
* **Timeouts by phase**: ``connect_timeout`` for each TCP connect and TLS handshake, ``read_timeout``
  for each wait on the socket (for the answer's head, and between two pieces of its body). Waiting for
  a free pooled connection has no timeout of its own: other downloads, each bounded by the read
  timeout, free one. A server that answers at all but trickles a byte per ``read_timeout`` is not
  caught; the engine's size limit still bounds what it can send.
* **Redirects**: followed up to ``max_redirects`` times, to http(s) only.
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
(refused, reset, unknown host), ``tls``, ``redirects``, ``read_failed`` (the body broke off). No
aiohttp exception escapes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import anyio

from .. import __version__
from .._content import CHUNK
from ..errors import TargetError
from ..model import Kind, Target

__all__ = ("HttpBody", "UrlBodies")


@dataclass(slots=True)
class HttpBody:
    """One GET response's body. ``size`` is the Content-Length, when the server gave one we can hold
    it to; a body that breaks off raises TargetError ``read_failed`` (or ``timeout``)."""

    _response: aiohttp.ClientResponse
    size: int | None
    path: str | None = None

    async def chunks(self, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        read = 0
        try:
            async for chunk in self._response.content.iter_chunked(chunk_size):
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
        max_redirects: int = 5,
        max_connections: int = 64,
        per_host: int = 8,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_redirects = max_redirects
        self.max_connections = max_connections
        self.per_host = per_host
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._opened = 0
        self._in_flight = 0

    def __repr__(self) -> str:
        return (
            f"<UrlBodies opened={self._opened} in_flight={self._in_flight} "
            f"connections={self.max_connections}/{self.per_host} per host>"
        )

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("UrlBodies used after aclose()")
        if self._session is None:
            # made on first use: a ClientSession belongs to the running event loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=self.per_host),
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
        try:
            try:
                response = await session.get(
                    target.target, allow_redirects=True, max_redirects=self.max_redirects
                )
            except aiohttp.TooManyRedirects:
                raise TargetError(f"more than {self.max_redirects} redirects", code="redirects") from None
            except aiohttp.RedirectClientError as exc:
                raise TargetError(f"redirected to an unusable URL ({exc})", code="redirects") from None
            except aiohttp.ClientConnectorCertificateError as exc:
                raise TargetError(
                    f"TLS certificate not trusted ({exc.certificate_error})", code="tls"
                ) from None
            except aiohttp.ClientSSLError:
                raise TargetError("TLS handshake failed", code="tls") from None
            except (aiohttp.ServerTimeoutError, TimeoutError):
                error = TargetError("timed out waiting for the server", code="timeout")
                error.retryable = True
                raise error from None
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                # ValueError: a URL that yarl parses but aiohttp cannot request
                error = TargetError(_describe(exc), code="transport")
                error.retryable = not isinstance(exc, ValueError | aiohttp.InvalidURL)
                raise error from None
            try:
                if not 200 <= response.status < 300:
                    hops = len(response.history)
                    error = TargetError(
                        f"HTTP {response.status} {response.reason or ''}".rstrip()
                        + (f" (after {hops} redirect{'s' if hops > 1 else ''})" if hops else ""),
                        code=f"http_{response.status}",
                    )
                    error.retryable = response.status >= 500 or response.status in (408, 429)
                    raise error
                encoded = response.headers.get("Content-Encoding", "identity").lower() != "identity"
                yield HttpBody(response, None if encoded else response.content_length)
            finally:
                # close, not release: a body left unread (too large, a failed scan) must not be
                # drained to put the connection back in the pool
                if response.content.at_eof():
                    response.release()
                else:
                    response.close()
        finally:
            self._in_flight -= 1

    async def aclose(self) -> None:
        """Close the session and its connections; idempotent; shielded from cancellation."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            with anyio.CancelScope(shield=True):
                await session.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "cannot resolve the host name"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "response body cut short"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"bad answer from the server ({exc.message})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"
