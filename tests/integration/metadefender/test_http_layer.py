"""The shared vendor HTTP layer over real sockets: retries, server waits, typed errors, TLS, redaction,
cancellation. (MetaDefender is its first user; every later vendor adapter relies on the same seam.)"""

from __future__ import annotations

import functools
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from scanner._http import Redactor, RetryPolicy, VendorClient
from scanner.errors import AuthError, ServerError, ThrottledError, TransportError
from scanner.ratelimit import RateLimitHint

pytestmark = pytest.mark.anyio

SECRET = "s3cr3t-api-key-value"
FAST = RetryPolicy(attempts=3, base=0.01, cap=0.05, max_wait=5.0)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with TestServer(app, host="127.0.0.1", port=0) as srv:
        yield str(srv.make_url("")).rstrip("/")


def client(url: str, **kw: object) -> VendorClient:
    return VendorClient(
        "vendor",
        url,
        headers={"apikey": SECRET},
        secrets=[SECRET],
        retry=FAST,
        **kw,  # type: ignore[arg-type]
    )


def test_redactor_masks_secrets_headers_and_url_credentials() -> None:
    r = Redactor([SECRET, "abc"])  # too short to mask safely: ignored
    assert r.text(f"key={SECRET}!") == "key=***!"
    assert r.headers({"apikey": "x", "Authorization": "Bearer y", "Accept": "a"}) == {
        "apikey": "***",
        "Authorization": "***",
        "Accept": "a",
    }
    url = r.url("https://user:pw@host.example/v4/x?api_key=zzz&page=2&token=qq")
    assert url == "https://host.example/v4/x?api_key=***&page=2&token=***"


async def test_5xx_is_retried_then_raised_as_server_error() -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=502)

    async with server(handler) as url, client(url) as http:
        with pytest.raises(ServerError) as info:
            await http.request("GET", "/x", route="r", cost=0)
    assert calls == 3
    assert "502" in str(info.value)


async def test_a_throttle_honours_retry_after_and_succeeds() -> None:
    times: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        times.append(time.monotonic())
        if len(times) == 1:
            return web.Response(status=429, headers={"Retry-After": "0.3"})
        return web.json_response({"ok": True})

    def hints(status: int, headers: object, body: bytes) -> RateLimitHint:
        ra = dict(headers).get("Retry-After")  # type: ignore[call-overload]
        return RateLimitHint(retry_after=float(ra) if ra else None, throttled=status == 429)

    async with server(handler) as url, client(url, hints=hints) as http:
        resp = await http.request("GET", "/x", route="r", cost=0, paced=True)
        assert http.limits.statistics().pauses == 1
    assert resp.json() == {"ok": True}
    assert times[1] - times[0] >= 0.29


async def test_throttling_that_never_ends_raises_throttled_error() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=503)

    policy = RetryPolicy(attempts=2, throttle_attempts=2, base=0.01, cap=0.02)
    async with server(handler) as url, VendorClient("vendor", url, retry=policy) as http:
        with pytest.raises(ThrottledError):
            await http.request("GET", "/x", route="r")


async def test_401_is_raised_once_and_no_request_follows() -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=401, text=f"bad key {request.headers['apikey']}")

    async with server(handler) as url, client(url) as http:
        for _ in range(3):
            with pytest.raises(AuthError) as info:
                await http.request("GET", "/x", route="r")
            assert SECRET not in str(info.value)
    assert calls == 1


async def test_connection_refused_is_a_transport_error_with_a_redacted_url() -> None:
    async with server(_ok) as url:
        pass  # the port is closed again
    dead = url.replace("http://", f"http://user:{SECRET}@") + f"/?apikey={SECRET}"
    async with client(dead) as http:
        with pytest.raises(TransportError) as info:
            await http.request("GET", "/x", route="r")
        assert http.statistics().retries == 2
    assert "cannot connect" in str(info.value)
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None  # no aiohttp exception (with its request headers) chained


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def test_a_timeout_is_retried_as_a_transport_error() -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        await anyio.sleep(1.0)
        return web.Response(text="late")

    from scanner._http import Timeouts

    async with server(handler) as url, client(url, timeouts=Timeouts(read=0.1)) as http:
        with pytest.raises(TransportError, match="timed out"):
            await http.request("GET", "/x", route="r")
    assert calls == 3


async def test_statistics_count_connections_opened_and_reused() -> None:
    release = anyio.Event()

    async def handler(request: web.Request) -> web.Response:
        if request.path == "/slow":
            await release.wait()
        return web.Response(text="ok")

    async with server(handler) as url, client(url, connections=4) as http:
        for _ in range(3):
            await http.request("GET", "/x", route="r", cost=0)
        s = http.statistics()
        assert (s.connections_opened, s.connections_reused) == (1, 2)  # one keep-alive connection
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(functools.partial(http.request, "GET", "/slow", route="r", cost=0))
            while http.statistics().in_flight < 3:
                await anyio.sleep(0.01)
            release.set()
        s = http.statistics()
        assert (s.connections_opened, s.connections_reused) == (3, 3)  # two more for three at once
        assert s.requests == 6


async def test_cancellation_releases_the_slot_and_the_connection() -> None:
    started = anyio.Event()

    async def handler(request: web.Request) -> web.Response:
        started.set()
        await anyio.sleep(10)
        return web.Response(text="never")

    async with server(handler) as url, client(url) as http:
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(http.request, "GET", "/x", route="r"))
            await started.wait()
            tg.cancel_scope.cancel()
        assert http.limits.statistics().in_flight == 0
        assert http.statistics().in_flight == 0


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@asynccontextmanager
async def tls_server(cert: Path, key: Path) -> AsyncIterator[tuple[str, list[int]]]:
    seen: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(1)
        return web.json_response({"ok": True})

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_get("/x", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_tls_is_verified_by_default_and_a_ca_file_trusts_a_private_endpoint(
    tls_files: tuple[Path, Path],
) -> None:
    cert, key = tls_files
    async with tls_server(cert, key) as (url, seen):
        async with client(url) as http:
            with pytest.raises(TransportError) as info:
                await http.request("GET", "/x", route="r")
            assert info.value.code == "tls"
            assert http.statistics().retries == 0  # an untrusted certificate is not retried
        assert seen == []
        async with client(url, ca_file=str(cert)) as http:
            resp = await http.request("GET", "/x", route="r")
        assert resp.status == 200
        assert seen == [1]
