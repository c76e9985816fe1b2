"""URL targets over real sockets: an aiohttp server on 127.0.0.1, fetched by the url opener of list
sources, scanned by the embedded YARA engine in process and by the ``scanner`` command."""

from __future__ import annotations

import hashlib
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from aiohttp import web

from scanner.engines.yara import Config, YaraEngine
from scanner.errors import TargetError
from scanner.model import Kind, Status, Target
from scanner.pipeline import Pipeline
from scanner.sources.lists import ListSource, parse_url
from scanner.testing import MemorySink, eicar

pytestmark = pytest.mark.anyio

LIMIT = 64 << 10  # the engine's size limit in these tests
SECRET = "hunter2-pw"
TOKEN = "X-Amz-Security-Token=SESSIONTOKEN&X-Amz-Signature=SIGNATURE"
CLEAN = b"nothing to see here\n" * 100


@pytest.fixture
def anyio_backend() -> str:
    # one loop is enough: the client is aiohttp on either, and the subprocess tests are not cheap
    return "asyncio"


def answer(status: int = 200, body: bytes = b"", location: str | None = None) -> Any:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(status=status, body=body, headers={"Location": location} if location else None)

    return handler


class Server:
    def __init__(self) -> None:
        self.base = ""
        #: bytes of the chunked over-limit body actually written before the client went away
        self.streamed = 0
        self.stall = anyio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/eicar.com", answer(body=eicar()))
        app.router.add_get("/clean.txt", answer(body=CLEAN))
        app.router.add_get("/missing", answer(404, b"no"))
        app.router.add_get("/boom", answer(503, b"later"))
        app.router.add_get("/redirect", answer(301, location="/eicar.com"))
        app.router.add_get("/loop", answer(302, location="/loop"))
        app.router.add_get("/to-ftp", answer(302, location="ftp://127.0.0.1/x"))
        app.router.add_get("/to-ftp-signed", answer(302, location=f"ftp://user:{SECRET}@127.0.0.1/x?{TOKEN}"))
        app.router.add_get("/trickle", self._trickle)
        app.router.add_get("/slow-head", self._slow_head)
        app.router.add_get("/slow-body", self._slow_body)
        app.router.add_get("/big", answer(body=b"\0" * (LIMIT + 1)))
        app.router.add_get("/big-chunked", self._big_chunked)
        app.router.add_get("/short", self._short)
        return app

    async def _slow_head(self, _: web.Request) -> web.StreamResponse:
        await anyio.sleep(30)
        return web.Response(body=b"late")

    async def _slow_body(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "1000"})
        await resp.prepare(request)
        await resp.write(b"x" * 10)
        await anyio.sleep(30)
        return resp

    async def _trickle(self, request: web.Request) -> web.StreamResponse:
        # a byte well within every read timeout, for ever: only a deadline per target ends it
        resp = web.StreamResponse(headers={"Content-Length": str(1 << 30)})
        await resp.prepare(request)
        while True:
            await resp.write(b"x")
            await anyio.sleep(0.05)

    async def _big_chunked(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        piece = b"\0" * (16 << 10)
        for _ in range(4096):  # 64 MiB, a thousand times the limit
            await resp.write(piece)
            self.streamed += len(piece)
        return resp

    async def _short(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "1000"})
        await resp.prepare(request)
        await resp.write(b"x" * 10)
        assert request.transport is not None
        request.transport.close()
        return resp


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    runner = web.AppRunner(srv.app(), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    srv.base = f"http://127.0.0.1:{port}"
    try:
        yield srv
    finally:
        await runner.cleanup()


def url_source(**urls: Any) -> ListSource:
    from scanner.sources._http_body import UrlBodies

    return ListSource(
        "urls:test", frozenset({Kind.URL}), lambda s, _: parse_url(s), path=None, urls=UrlBodies(**urls)
    )


async def test_the_opener_maps_answers_to_bodies_and_errors(server: Server) -> None:
    source = url_source(read_timeout=0.5, connect_timeout=0.5, max_redirects=3)
    try:
        async with source.open(parse_url(server.base + "/clean.txt")) as body:
            assert body.size == len(CLEAN) and body.path is None
            assert b"".join([c async for c in body.chunks()]) == CLEAN
        async with source.open(parse_url(server.base + "/redirect")) as body:
            assert b"".join([c async for c in body.chunks()]) == eicar()
        cases = {
            "/missing": ("http_404", "HTTP 404 Not Found"),
            "/boom": ("http_503", "HTTP 503"),
            "/loop": ("redirects", "more than 3 redirects"),
            "/to-ftp": ("redirects", "unusable URL"),
            "/slow-head": ("timeout", "timed out"),
        }
        for path, (code, message) in cases.items():
            started = time.monotonic()
            with pytest.raises(TargetError) as info:
                async with source.open(parse_url(server.base + path)):
                    pass
            assert (info.value.code, path) == (code, path) and message in info.value.message
            assert time.monotonic() - started < 5
        with pytest.raises(TargetError) as info:
            await drain(source, server.base + "/slow-body")
        assert info.value.code == "timeout" and "after 10 bytes" in info.value.message
        with pytest.raises(TargetError) as info:
            await drain(source, server.base + "/short")
        assert info.value.code == "read_failed"
    finally:
        await source.aclose()
        await source.aclose()  # idempotent


async def drain(source: ListSource, url: str) -> None:
    async with source.open(parse_url(url)) as body:
        async for _ in body.chunks():
            pass


async def test_connection_refused_is_an_error_not_a_hang() -> None:
    with anyio.fail_after(10):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]  # nothing listens there once it is closed
        source = url_source(connect_timeout=1)
        try:
            with pytest.raises(TargetError) as info:
                async with source.open(parse_url(f"http://127.0.0.1:{port}/x")):
                    pass
        finally:
            await source.aclose()
    assert info.value.code == "transport" and "cannot connect" in info.value.message


async def test_urls_through_the_yara_engine(server: Server) -> None:
    paths = ["/eicar.com", "/clean.txt", "/missing", "/redirect", "/slow-head", "/big", "/big-chunked"]
    targets = [parse_url(server.base + p) for p in paths]
    source = url_source(read_timeout=1, connect_timeout=1)
    sink = MemorySink()
    try:
        with anyio.fail_after(30):
            async with YaraEngine(Config(max_file_size=LIMIT, processes=1)) as engine:
                await Pipeline([_Listed(source, targets)], engine, sink, max_at_once=8).run()
    finally:
        await source.aclose()
    got = {v.target.target.removeprefix(server.base): v for v in sink.verdicts}
    assert sorted(got) == sorted(paths)
    assert got["/eicar.com"].status is Status.INFECTED
    assert got["/eicar.com"].size == len(eicar())
    assert got["/eicar.com"].sha256 == hashlib.sha256(eicar()).hexdigest()
    assert got["/redirect"].status is Status.INFECTED
    assert (got["/clean.txt"].status, got["/clean.txt"].size) == (Status.CLEAN, len(CLEAN))
    assert got["/clean.txt"].sha256 == hashlib.sha256(CLEAN).hexdigest()
    for path, code in [("/missing", "http_404"), ("/slow-head", "timeout")]:
        error = got[path].error
        assert got[path].status is Status.ERROR and error is not None and error.code == code, path
    for path in ("/big", "/big-chunked"):
        error = got[path].error
        assert got[path].status is Status.UNSCANNABLE and error is not None and error.code == "too_large"
    # the chunked body was abandoned near the limit, not read to its 64 MiB end
    assert server.streamed < 16 << 20


class _Listed:
    """A list source whose targets are given, so the test needs no file."""

    kinds = frozenset({Kind.URL})

    def __init__(self, source: ListSource, targets: list[Target]) -> None:
        self._source = source
        self._targets = targets
        self.open = source.open
        self.local_path = source.local_path
        self.aclose = source.aclose

    async def targets(self) -> AsyncIterator[Target]:
        for t in self._targets:
            yield t


# The command, as a user runs it.


async def run_scanner(*args: str, stdin: bytes | None = None) -> tuple[int, list[dict[str, Any]], str]:
    with anyio.fail_after(60):
        proc = await anyio.run_process([sys.executable, "-m", "scanner", *args], input=stdin, check=False)
    return proc.returncode, [orjson.loads(x) for x in proc.stdout.splitlines()], proc.stderr.decode()


@pytest.mark.slow
async def test_scan_urls_file(server: Server, tmp_path: Path) -> None:
    urls = tmp_path / "urls.txt"
    urls.write_text(
        "\n".join(server.base + p for p in ["/eicar.com", "/clean.txt", "/missing", "/big"]) + "\nnot a url\n"
    )
    config = tmp_path / "c.toml"
    config.write_text(f"[engines.yara]\nmax_file_size = {LIMIT}\nprocesses = 1\n")
    code, lines, err = await run_scanner("scan", f"urls:{urls}", "--config", str(config))
    assert code == 1, err  # a finding wins over the errors
    got = {x["target"].removeprefix(server.base): x for x in lines}
    assert got["/eicar.com"]["verdict"] == "infected" and got["/eicar.com"]["size"] == len(eicar())
    assert got["/eicar.com"]["sha256"] == hashlib.sha256(eicar()).hexdigest()
    assert got["/clean.txt"]["verdict"] == "clean"
    assert (got["/missing"]["verdict"], got["/missing"]["error"]["code"]) == ("error", "http_404")
    assert (got["/big"]["verdict"], got["/big"]["error"]["code"]) == ("unscannable", "too_large")
    assert got["not a url"]["error"]["code"] == "bad_target"
    assert "Traceback" not in err


@pytest.mark.slow
async def test_scan_stdin_urls_and_bad_lines(server: Server, tmp_path: Path) -> None:
    lines = [
        orjson.dumps({"kind": "url", "target": server.base + "/clean.txt"}),
        b"garbage",
        orjson.dumps({"kind": "url", "target": server.base + "/missing"}),
        orjson.dumps({"kind": "file", "target": str(tmp_path / "nope")}),
    ]
    code, out, err = await run_scanner("scan", "-", stdin=b"\n".join(lines) + b"\n")
    assert code == 2, err
    got = {x["target"].removeprefix(server.base): x for x in out}
    assert sorted(got) == sorted(["/clean.txt", "stdin:2", "/missing", str(tmp_path / "nope")])
    assert got["/clean.txt"]["verdict"] == "clean"
    assert got["stdin:2"]["error"]["code"] == "bad_target"
    assert got["stdin:2"]["error"]["message"] == "not valid JSON: garbage"
    assert got["/missing"]["error"]["code"] == "http_404"
    assert got[str(tmp_path / "nope")]["error"]["code"] == "not_found"


# The deadline per target.


async def test_a_trickling_body_ends_at_the_deadline_per_target(server: Server) -> None:
    # a byte every 50 ms never trips the read timeout; it used to hold its job for ever
    source = url_source(read_timeout=5, total_timeout=1)
    try:
        started = time.monotonic()
        with anyio.fail_after(10):
            with pytest.raises(TargetError) as info:
                await drain(source, server.base + "/trickle")
    finally:
        await source.aclose()
    assert 0.9 < time.monotonic() - started < 5
    assert info.value.code == "timeout" and "1 s limit per target" in info.value.message
    assert "bytes of the body" in info.value.message and not info.value.retryable


async def test_the_deadline_covers_the_wait_for_the_answer(server: Server) -> None:
    source = url_source(read_timeout=20, total_timeout=0.5)
    try:
        started = time.monotonic()
        with anyio.fail_after(10):
            with pytest.raises(TargetError) as info:
                async with source.open(parse_url(server.base + "/slow-head")):
                    pass
    finally:
        await source.aclose()
    assert time.monotonic() - started < 5
    assert info.value.code == "timeout" and "limit per target" in info.value.message


async def test_a_trickling_url_is_a_timeout_line_through_the_engine(server: Server) -> None:
    source = url_source(read_timeout=5, total_timeout=1)
    sink = MemorySink()
    try:
        with anyio.fail_after(30):
            async with YaraEngine(Config(max_file_size=4 << 30, processes=1)) as engine:
                targets = [parse_url(server.base + "/trickle"), parse_url(server.base + "/clean.txt")]
                await Pipeline([_Listed(source, targets)], engine, sink, max_at_once=4).run()
    finally:
        await source.aclose()
    got = {v.target.target.removeprefix(server.base): v for v in sink.verdicts}
    assert got["/clean.txt"].status is Status.CLEAN
    error = got["/trickle"].error
    assert got["/trickle"].status is Status.ERROR and error is not None and error.code == "timeout"


# Redirects: checked hop by hop; no URL's query or userinfo in a message.


async def test_a_redirect_message_never_quotes_a_token(server: Server) -> None:
    source = url_source()
    try:
        with pytest.raises(TargetError) as info:
            async with source.open(parse_url(server.base + "/to-ftp-signed")):
                pass
    finally:
        await source.aclose()
    message = info.value.message
    assert info.value.code == "redirects" and "unusable URL" in message
    for secret in (SECRET, "SESSIONTOKEN", "SIGNATURE", "X-Amz"):
        assert secret not in message, message


@pytest.mark.parametrize(
    ("location", "https_only", "want"),
    [
        ("/b?x=1#frag", False, "http://h.example/b?x=1"),
        ("c", False, "http://h.example/a/c"),
        ("//other.example/p", False, "http://other.example/p"),
        ("https://s.example/", False, "https://s.example/"),
        ("http://h.example/b", False, "http://h.example/b"),
        ("https://s.example/", True, "https://s.example/"),
    ],
)
def test_next_hop_resolves_like_a_browser(location: str, https_only: bool, want: str) -> None:
    from yarl import URL

    from scanner.sources._http_body import next_hop

    current = URL("https://h.example/a/b") if https_only else URL("http://h.example/a/b")
    assert str(next_hop(current, location, https_only=https_only)) == want


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("http://h.example/b?X-Amz-Signature=SIG", "downgrade"),
        ("HTTP://h.example/b", "downgrade"),
        ("ftp://h.example/b?token=SIG", "unusable URL"),
        ("http://[::1", "unusable URL"),
        ("mailto:a@b.example", "unusable URL"),
    ],
)
def test_next_hop_refuses_a_downgrade_and_other_schemes(location: str, message: str) -> None:
    from yarl import URL

    from scanner.sources._http_body import next_hop

    with pytest.raises(TargetError) as info:
        next_hop(URL("https://h.example/a"), location, https_only=True)
    assert info.value.code == "redirects" and message in info.value.message
    assert "SIG" not in info.value.message


def _test_ca(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 it signed: the server's TLS context and
    the CA's PEM, which only the test's own client trusts."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scanner test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain = tmp_path / "server.pem"
    chain.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(chain)
    return server_ctx, ca_pem


async def test_an_https_url_is_never_redirected_to_plain_http(server: Server, tmp_path: Path) -> None:
    # aiohttp follows https -> http; content fetched in clear could be changed on the way
    server_ctx, ca_pem = _test_ca(tmp_path)
    app = web.Application()
    app.router.add_get("/eicar.com", answer(body=eicar()))
    app.router.add_get("/to-http", answer(302, location=server.base + f"/eicar.com?{TOKEN}"))
    app.router.add_get("/to-https", answer(302, location="/eicar.com"))
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    base = f"https://127.0.0.1:{runner.addresses[0][1]}"
    source = url_source(ca_file=str(ca_pem))
    try:
        with anyio.fail_after(10):
            # the test CA is trusted by this client only, and an https -> https redirect works
            async with source.open(parse_url(base + "/to-https")) as body:
                assert b"".join([c async for c in body.chunks()]) == eicar()
            with pytest.raises(TargetError) as info:
                async with source.open(parse_url(base + "/to-http")):
                    pass
            # a client with the system store alone does not trust the test CA: verification is on
            plain = url_source()
            try:
                with pytest.raises(TargetError) as untrusted:
                    async with plain.open(parse_url(base + "/eicar.com")):
                        pass
            finally:
                await plain.aclose()
    finally:
        await source.aclose()
        await runner.cleanup()
    assert info.value.code == "redirects" and "downgrade" in info.value.message
    assert "SESSIONTOKEN" not in info.value.message and "SIGNATURE" not in info.value.message
    assert untrusted.value.code == "tls"
