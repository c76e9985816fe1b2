"""The one vendor HTTP layer: session, timeouts, TLS, retries, rate limits, typed errors, redaction.

Every vendor engine talks to its API through a :class:`VendorClient`. It is a thin wrapper rather
than an aiohttp middleware chain because a retry must rebuild a streamed body and each request
carries the limiter's route and cost; a wrapper keeps that in one readable loop.

Contract of :meth:`VendorClient.request`:

* **Limits.** Each attempt holds a :class:`~scanner.ratelimit.RateLimits` slot for its route (family
  gate, pace, concurrency) and a pooled connection; neither is held while backing off.
* **Retries** (bounded by ``RetryPolicy`` counts and by the total backoff time ``max_wait``):
  connect errors, resets, timeouts, 5xx, 408 and throttling answers (429 other than a spent quota,
  503). The delay is the server's ``retry_after`` when it gives one, else exponential backoff with
  full jitter (Marc Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015). A
  throttle pauses every paced caller of the engine once, not just the one that saw it.
* **A spent quota** (the vendor's hint says ``quota``) is folded into the family gate and retried:
  the gate then holds until the reset or raises :class:`~scanner.errors.QuotaExhausted`.
* **401/403** raise :class:`~scanner.errors.AuthError` at once and are never retried; the client then
  refuses every further request without touching the network (vendors block IPs for bad keys).
* Other statuses are returned for the adapter to read (a 404 for an unknown id, a 400 body code).
* **Redirects** (301, 302, 303, 307, 308 with a ``Location``) are never followed by aiohttp. By
  default none is followed at all: a redirect raises :class:`~scanner.errors.ProtocolError` naming
  the location without its query, and nothing is sent there. A client made with ``max_redirects``
  follows up to that many, to the same origin only (scheme, host and port), so the credentials it
  carries (headers, cookies, the ``apikey``) never reach another host, another port, or plain http.
* aiohttp and OS exceptions never escape: they become :class:`~scanner.errors.TransportError`
  (``code="tls"`` and not retried for certificate failures) and messages name the redacted URL.
* **Redaction.** Every configured secret is replaced by ``***`` in messages and logs; header values
  of credential headers and query values of credential-looking parameters are masked too.

Cancellation abandons the attempt; the slot and the connection are released on the way out.
"""

from __future__ import annotations

import logging
import random
import ssl
import weakref
from collections import Counter
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp
import anyio
import orjson
from yarl import URL

from ._redact import Redactor, quote_url
from .errors import (
    AuthError,
    ProtocolError,
    QuotaExhausted,
    ScannerError,
    ServerError,
    ThrottledError,
    TransportError,
)
from .ratelimit import RateLimitHint, RateLimits

__all__ = (
    "Body",
    "HintParser",
    "HttpStatistics",
    "Redactor",
    "Response",
    "RetryPolicy",
    "Timeouts",
    "VendorClient",
    "count_tries",
    "describe_transport_error",
    "full_jitter",
)

log = logging.getLogger("scanner.http")

#: the answers aiohttp would follow; a vendor request follows one only when the client allows it
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

#: requests sent on behalf of the scan running in this task, retries included (see count_tries)
_tries: ContextVar[list[int] | None] = ContextVar("scanner_http_tries", default=None)


def describe_transport_error(exc: BaseException) -> str:
    """An aiohttp or socket failure in the words an operator needs (aiohttp's own name internals)."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.InvalidURL):
        return "not a usable URL"
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


@contextmanager
def count_tries() -> Iterator[list[int]]:
    """Count the tries of one target's scan: ``[1]`` plus one for each retry of any request made
    in this task until the block ends (its verdict's ``attempts``). Requests sent for many targets
    at once (a bulk lookup) count for the task that sends them."""
    tries = [1]
    token = _tries.set(tries)
    try:
        yield tries
    finally:
        _tries.reset(token)


#: (status, headers, body) -> what the answer says about our budget; pure, one per vendor
HintParser = Callable[[int, Mapping[str, str], bytes], RateLimitHint]
#: a request body: bytes, or a factory of a fresh chunk stream (called again for each attempt)
Body = bytes | Callable[[], AsyncIterable[bytes]] | None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries: ``attempts`` per request for failures (timeouts, resets, 5xx) and up to
    ``throttle_attempts`` more for throttling answers; backoff ``base * 2**n`` capped at ``cap``, and
    at most ``max_wait`` seconds of backoff per request in total."""

    attempts: int = 5
    throttle_attempts: int = 10
    base: float = 0.5
    cap: float = 30.0
    max_wait: float = 120.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-phase timeouts in seconds: pool wait + connect, connect (incl. TLS), each read, whole request.

    ``pool`` is None by default: waiting for a free pooled connection is backpressure (every job
    shares the pool), not a failure, so only the connect itself and each read are bounded.
    """

    pool: float | None = None
    connect: float = 10.0
    read: float = 60.0
    total: float | None = None


@dataclass(frozen=True, slots=True)
class Response:
    """A whole answer: status, headers, body (vendor JSON is small; uploads stream the other way)."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    attempts: int = 1
    hint: RateLimitHint | None = None

    def json(self) -> Any:
        """The body as JSON; raises ProtocolError if it is not JSON."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise ProtocolError(
                f"expected JSON, got {len(self.body)} bytes that are not (status {self.status})"
            ) from None


@dataclass(frozen=True, slots=True)
class HttpStatistics:
    requests: int
    in_flight: int
    retries: int
    connections_opened: int
    connections_reused: int
    max_connections: int
    statuses: tuple[tuple[int, int], ...] = field(default=())
    errors: tuple[tuple[str, int], ...] = field(default=())


class _Tracked:
    """A request body stream that remembers the scanner error it raised, so a body failure (reported
    by aiohttp as a connection error) surfaces as itself; closing it is safe at any moment."""

    __slots__ = ("_inner", "error")

    def __init__(self, inner: AsyncIterable[bytes]) -> None:
        self._inner = inner.__aiter__()
        self.error: ScannerError | None = None

    def __aiter__(self) -> _Tracked:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._inner.__anext__()
        except ScannerError as exc:
            self.error = exc
            raise

    async def aclose(self) -> None:
        # aiohttp stops at Content-Length without exhausting a stream, or fails mid-body while its
        # writer task is still inside the stream: an async generator running there cannot be closed
        # from here (it is closed when that task finishes), other streams close themselves
        if getattr(self._inner, "ag_running", False):
            return
        aclose = getattr(self._inner, "aclose", None)
        if aclose is not None:
            await aclose()


def full_jitter(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Delay before retry number ``attempt`` (0-based): uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0.0, min(policy.cap, policy.base * (2.0**attempt)))


class _Where:
    """``vendor: METHOD url`` for messages, with the URL redacted; built only when one is written
    (parsing and masking the URL on every request cost more than the rest of our request path)."""

    __slots__ = ("_client", "_method", "_text", "_url")

    def __init__(self, client: VendorClient, method: str, url: str) -> None:
        self._client, self._method, self._url = client, method, url
        self._text: str | None = None

    def __str__(self) -> str:
        if self._text is None:
            c = self._client
            self._text = f"{c.vendor}: {self._method} {c.redact.url(self._url)}"
        return self._text

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


class _Retry(Exception):
    """Internal: this attempt failed in a retryable way; ``delay`` is the server's wait, if any."""

    def __init__(self, error: Exception, delay: float | None = None, throttle: bool = False) -> None:
        self.error = error
        self.delay = delay
        self.throttle = throttle


class _Connector(aiohttp.TCPConnector):
    """A pool that counts connections: one is new the first time its protocol is handed out.

    (An aiohttp TraceConfig counted them before, at ~35 us a request: with any trace configured,
    aiohttp builds and awaits every one of its signals on every request.)
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.opened = 0
        self.reused = 0
        self._seen: weakref.WeakSet[object] = weakref.WeakSet()

    async def connect(self, *args: Any, **kwargs: Any) -> aiohttp.connector.Connection:
        conn = await super().connect(*args, **kwargs)
        protocol = conn.protocol
        if protocol is not None:
            if protocol in self._seen:
                self.reused += 1
            else:
                self._seen.add(protocol)
                self.opened += 1
        return conn


class VendorClient:
    """An aiohttp session for one engine, bounded and instrumented, with the contract above.

    Args:
        vendor: the engine name, used in messages.
        base_url: scheme and host (and any path prefix) every request path is appended to.
        headers: sent on every request (credentials belong here; they are redacted everywhere).
        secrets: values to mask in every message and log line.
        limits: the engine's rate limits; ``RateLimits()`` imposes none until the server speaks.
        hints: the vendor's parser of rate-limit signals.
        connections: the connection pool's size (the engine's "connections" limit).
        ca_file: a PEM bundle to trust instead of the system store (for a private endpoint).
        max_redirects: same-origin redirects one request may follow (0, the default: none; a vendor
            that needs them says so). A redirect to another origin is never followed.
        session_factory: builds the session (tests may inject one); default: a bounded TCPConnector.
    """

    def __init__(
        self,
        vendor: str,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        limits: RateLimits | None = None,
        hints: HintParser | None = None,
        connections: int = 16,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        ca_file: str | None = None,
        max_redirects: int = 0,
        rng: random.Random | None = None,
    ) -> None:
        self.vendor = vendor
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers or {})
        self.redact = Redactor(secrets)
        self.limits = limits or RateLimits()
        self._hints = hints or (lambda status, headers, body: RateLimitHint())
        self.connections = connections
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self._ca_file = ca_file
        self.max_redirects = max_redirects
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._auth_failure: AuthError | None = None
        self._requests = 0
        self._in_flight = 0
        self._retries = 0
        self._connector: _Connector | None = None
        self._statuses: Counter[int] = Counter()
        self._errors: Counter[str] = Counter()

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<VendorClient {self.vendor} {self.redact.url(self.base_url)} in_flight={s.in_flight} "
            f"requests={s.requests} retries={s.retries} "
            f"connections={s.connections_opened}/{s.max_connections}>"
        )

    async def __aenter__(self) -> Self:
        try:
            ctx = ssl.create_default_context(cafile=self._ca_file)
        except (OSError, ssl.SSLError) as exc:
            from .errors import ConfigError

            raise ConfigError(f"{self.vendor}: ca_file {self._ca_file}: {exc}") from None
        connector = self._connector = _Connector(
            limit=self.connections, limit_per_host=self.connections, ssl=ctx
        )
        t = self.timeouts
        timeout = aiohttp.ClientTimeout(
            total=t.total, connect=t.pool, sock_connect=t.connect, sock_read=t.read
        )
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, raise_for_status=False)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def statistics(self) -> HttpStatistics:
        return HttpStatistics(
            requests=self._requests,
            in_flight=self._in_flight,
            retries=self._retries,
            connections_opened=0 if self._connector is None else self._connector.opened,
            connections_reused=0 if self._connector is None else self._connector.reused,
            max_connections=self.connections,
            statuses=tuple(sorted(self._statuses.items())),
            errors=tuple(sorted(self._errors.items())),
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        route: str,
        cost: int = 1,
        paced: bool = False,
        family: str | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: Body = None,
        replay_safe: bool = True,
    ) -> Response:
        """Send one logical request with retries; see the module docstring for what it raises.

        ``replay_safe=False`` (an upload that costs quota) turns a failure after the request may have
        reached the server (reset, timeout) into TransportError ``code="transport_unconfirmed"``, not
        retried, so the adapter can check whether it landed before sending it again.
        """
        url = f"{self.base_url}{path}"
        where = _Where(self, method, url)
        waited = 0.0
        attempt = failures = throttles = 0
        while True:
            if self._auth_failure is not None:
                raise AuthError(self._auth_failure.message)
            attempt += 1
            try:
                return await self._attempt(
                    method,
                    url,
                    where,
                    (route, cost, paced, family),
                    headers,
                    json,
                    data,
                    attempt,
                    replay_safe,
                )
            except QuotaExhausted as exc:
                raise QuotaExhausted(f"{self.vendor}: {exc.message}", reset_at=exc.reset_at) from None
            except _Retry as retry:
                error = retry.error
                self._errors[getattr(error, "code", "error")] += 1
                # throttles get their own count: a per-minute window may need several long pauses
                if retry.throttle:
                    throttles += 1
                    n, limit = throttles, self.retry.throttle_attempts
                else:
                    failures += 1
                    n, limit = failures, self.retry.attempts - 1
                if n > limit:
                    raise error from None
                delay = retry.delay
                if delay is None:
                    delay = full_jitter(n - 1, self.retry, self._rng)
                if waited + delay > self.retry.max_wait:
                    raise error from None
                waited += delay
                self._retries += 1
                tries = _tries.get()
                if tries is not None:
                    tries[0] += 1
                log.info("%s: %s; retry %d in %.2f s", where, self.redact.text(str(error)), attempt, delay)
                if retry.throttle:
                    # one throttle pauses every paced caller and the route's family, then all retry
                    self.limits.throttled(delay, route)
                    if paced or self.limits.gate_for(route) is not None:
                        continue
                await self.limits.clock.sleep(delay)

    async def _attempt(
        self,
        method: str,
        url: str,
        where: _Where,
        limit: tuple[str, int, bool, str | None],
        headers: Mapping[str, str] | None,
        json: Any,
        data: Body,
        attempt: int,
        replay_safe: bool,
    ) -> Response:
        session = self._session
        if session is None:
            raise RuntimeError("VendorClient used outside 'async with'")
        send_headers = {**self._headers, **(headers or {})}
        if json is not None:
            data = orjson.dumps(json)
            send_headers.setdefault("Content-Type", "application/json")
        route, cost, paced, family = limit
        async with self.limits.slot(route, cost, paced=paced, family=family) as slot:
            hops = 0
            while True:
                status, resp_headers, payload, location = await self._send(
                    session, method, url, where, send_headers, data, replay_safe
                )
                if location is None:
                    break
                # a hop shares its attempt's slot and retries: the server asked for it, not the adapter
                method, url, keep_body = self._follow(where, method, url, status, location, hops)
                if not keep_body:
                    data = None
                    send_headers.pop("Content-Type", None)
                where = _Where(self, method, url)
                hops += 1
            hint = self._hints(status, resp_headers, payload)
            slot.observe(hint)
        log.debug("%s -> %d (attempt %d)", where, status, attempt)
        return self._classify(where, Response(status, resp_headers, payload, attempt, hint))

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        where: _Where,
        headers: Mapping[str, str],
        data: Body,
        replay_safe: bool,
    ) -> tuple[int, dict[str, str], bytes, str | None]:
        """One exchange, redirects not followed: status, headers, body, and the Location of a redirect
        answer (None for any other). Raises _Retry or a typed error for a failure on the way."""
        stream = _Tracked(data()) if callable(data) else None
        body: Any = stream if stream is not None else data
        self._requests += 1
        self._in_flight += 1
        try:
            # aiohttp would follow a redirect anywhere with our headers on: ours are checked in _follow
            async with session.request(
                method, url, headers=headers, data=body, allow_redirects=False
            ) as resp:
                payload = await resp.read()
                status = resp.status
                resp_headers = {k: v for k, v in resp.headers.items()}
                location = resp.headers.get("Location") if status in _REDIRECTS else None
        except aiohttp.ClientConnectorCertificateError as exc:
            error = TransportError(
                f"{where}: TLS certificate not trusted ({exc.certificate_error})", code="tls"
            )
            error.retryable = False
            raise error from None
        except aiohttp.ClientSSLError:
            error = TransportError(f"{where}: TLS handshake failed", code="tls")
            error.retryable = False
            raise error from None
        except aiohttp.ClientConnectorError as exc:
            # never connected, so never received: always safe to send again
            raise _Retry(TransportError(f"{where}: {self._describe(exc)}")) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if stream is not None and stream.error is not None:
                # the body itself failed (a file that changed after hashing): that is the story
                raise stream.error from None
            error = TransportError(f"{where}: {self._describe(exc)}")
            if not replay_safe:
                # the server may have acted on it (an upload charged to the quota): the adapter
                # decides whether sending it again is right, so this one is not retried here
                error.retryable = False
                error.code = "transport_unconfirmed"
                raise error from None
            raise _Retry(error) from None
        finally:
            self._in_flight -= 1
            if stream is not None:
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
        self._statuses[status] += 1
        return status, resp_headers, payload, location

    def _follow(
        self, where: _Where, method: str, url: str, status: int, location: str, hops: int
    ) -> tuple[str, str, bool]:
        """Where a redirect answer leads: (method, URL, whether the body goes too), as aiohttp would
        choose them. Raises ProtocolError, naming the location without its query, unless this client
        follows redirects, has not followed ``max_redirects`` yet, and the location is same-origin."""
        try:
            here = URL(url)
            there = here.join(URL(location)).with_fragment(None)
        except (ValueError, TypeError):
            raise ProtocolError(f"{where}: redirected (HTTP {status}) to a malformed Location") from None
        shown = self.redact.text(quote_url(str(there)))
        if not self.max_redirects:
            raise ProtocolError(
                f"{where}: redirected (HTTP {status}) to {shown}; vendor requests follow no redirect"
            )
        if (there.scheme, there.host, there.port) != (here.scheme, here.host, here.port):
            why = (
                "to plain http" if here.scheme == "https" and there.scheme == "http" else "to another origin"
            )
            raise ProtocolError(
                f"{where}: redirected (HTTP {status}) {why}, {shown}: not followed, the request carries "
                "credentials"
            )
        if hops >= self.max_redirects:
            raise ProtocolError(f"{where}: more than {self.max_redirects} redirects (the last to {shown})")
        if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
            return "GET", str(there), False
        return method, str(there), True

    def _describe(self, exc: BaseException) -> str:
        return self.redact.text(describe_transport_error(exc))

    def _classify(self, where: _Where, resp: Response) -> Response:
        status, hint = resp.status, resp.hint
        if status in (401, 403):
            error = AuthError(
                f"{where}: credentials refused (HTTP {status}); not retried, and no further requests "
                "are sent with this key"
            )
            self._auth_failure = error
            raise error
        if status == 429 and hint is not None and hint.quota and not hint.throttled:
            # the gate now holds this family: the retry waits for the reset or raises QuotaExhausted
            raise _Retry(ThrottledError(f"{where}: quota spent (HTTP 429)"), delay=0.0)
        if status in (429, 503):
            retry_after = hint.retry_after if hint is not None else None
            raise _Retry(ThrottledError(f"{where}: throttled (HTTP {status})"), retry_after, throttle=True)
        if status >= 500 or status == 408:
            raise _Retry(ServerError(f"{where}: HTTP {status}"), hint.retry_after if hint else None)
        return resp
