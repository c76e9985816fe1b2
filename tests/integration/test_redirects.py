"""Redirects over real sockets on 127.0.0.1: vendor requests follow none by default and never carry
their credentials to another origin; URL targets follow theirs but never reach a link-local or cloud
metadata address (checked on the address about to be connected to, before any connection).

No test here ever opens a socket to 169.254.0.0/16 or fd00:ec2::254: a tripwire in front of
aiohttp's connection step refuses (and records) any such attempt, so a regression fails the test
instead of sending traffic there."""

from __future__ import annotations

import datetime
import errno
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohappyeyeballs
import anyio
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from scanner._http import RetryPolicy, VendorClient
from scanner.errors import ProtocolError, TargetError
from scanner.model import Kind, Target
from scanner.sources._http_body import UrlBodies
from scanner.testing import MemorySource

pytestmark = pytest.mark.anyio

SECRET = "vendor-SECRET-api-key-0123"
QUERY = "apikey=LEAKED-IN-QUERY&sig=QUERYTEXT"
REDIRECTS = (301, 302, 303, 307, 308)
FAST = RetryPolicy(attempts=2, base=0.01, cap=0.05, max_wait=1.0)
KEY = "md-test-SECRET-0123456789abcdef"


@dataclass
class Seen:
    """What one test server received: (method, path, headers, body) per request."""

    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [path for _, path, _, _ in self.requests]


@asynccontextmanager
async def serve(
    routes: dict[str, tuple[int, str | None]], *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, int, Seen]]:
    """A server on 127.0.0.1 answering each path with (status, Location); any other path is 200
    ``landed``. Yields its base URL, its port and what it received."""
    seen = Seen()

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        seen.requests.append((request.method, request.path, dict(request.headers), body))
        status, location = routes.get(request.path, (200, None))
        headers = {"Location": location} if location is not None else None
        return web.Response(status=status, body=b"landed" if status == 200 else b"", headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}", port, seen
    finally:
        await runner.cleanup()


def vendor(url: str, **kw: Any) -> VendorClient:
    """A client set up as the MetaDefender engine sets up its own: the key in an ``apikey`` header."""
    return VendorClient(
        "vendor",
        url,
        headers={"apikey": SECRET, "Accept": "application/json"},
        secrets=[SECRET],
        retry=FAST,
        **kw,
    )


def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A throw-away self-signed certificate for 127.0.0.1: the server's context and the PEM that only
    the test's client trusts."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    pem = tmp_path / "cert.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    chain = tmp_path / "chain.pem"
    chain.write_bytes(
        pem.read_bytes()
        + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(chain)
    return ctx, pem


def assert_names_location_without_query(message: str, location: str) -> None:
    assert location in message
    assert "QUERYTEXT" not in message and "LEAKED-IN-QUERY" not in message and SECRET not in message


# -- vendor requests: no redirect is followed by default -------------------------------------------


@pytest.mark.parametrize("status", REDIRECTS)
@pytest.mark.parametrize("where", ["another port", "another host name", "same origin"])
async def test_a_vendor_redirect_is_not_followed_by_default(status: int, where: str) -> None:
    routes: dict[str, tuple[int, str | None]] = {}
    async with serve({}) as (trap_url, _, trap), serve(routes) as (url, port, seen):
        landing = {
            "another port": f"{trap_url}/landing",
            # the very same server, reached by another name: another origin all the same
            "another host name": f"http://localhost:{port}/landing",
            "same origin": f"{url}/landing",
        }[where]
        location = "/landing" if where == "same origin" else landing
        routes["/start"] = (status, f"{location}?{QUERY}")
        async with vendor(url) as http:
            with anyio.fail_after(10), pytest.raises(ProtocolError) as info:
                await http.request("POST", "/start", route="r", data=b"payload")
    assert info.value.code == "protocol"
    assert_names_location_without_query(info.value.message, landing)
    assert seen.paths == ["/start"]  # asked once: a refused redirect is not retried either
    assert trap.requests == []


async def test_a_vendor_redirect_from_https_to_http_is_not_followed(tmp_path: Path) -> None:
    ctx, pem = self_signed(tmp_path)
    async with serve({}) as (trap_url, _, trap):
        routes = {"/start": (302, f"{trap_url}/landing?{QUERY}"), "/keep": (307, f"{trap_url}/landing")}
        async with serve(routes, tls=ctx) as (url, _, first):
            for follow in (0, 5):
                async with vendor(url, ca_file=str(pem), max_redirects=follow) as http:
                    for path in ("/start", "/keep"):
                        with anyio.fail_after(10), pytest.raises(ProtocolError) as info:
                            await http.request("GET", path, route="r")
                        assert info.value.code == "protocol"
                        assert_names_location_without_query(info.value.message, f"{trap_url}/landing")
    assert first.paths == ["/start", "/keep"] * 2
    assert trap.requests == []


async def test_the_metadefender_engine_gets_a_protocol_error_for_a_redirected_upload() -> None:
    from scanner.config import validate_section
    from scanner.engines.metadefender import Config, MetaDefenderEngine
    from scanner.simulators.metadefender import make_app

    async with serve({}) as (trap_url, _, trap):

        @web.middleware
        async def elsewhere(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.path == "/v4/file":
                return web.Response(status=307, headers={"Location": f"{trap_url}/v4/file?{QUERY}"})
            return await handler(request)  # type: ignore[no-any-return]

        app = make_app(api_keys=KEY)
        app.middlewares.append(elsewhere)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            base = f"http://127.0.0.1:{runner.addresses[0][1]}"
            values = {"base_url": base, "api_key": KEY, "hash_linger": 0.01, "retry_base": 0.05}
            engine = MetaDefenderEngine(validate_section(Config, values, "engines.metadefender"))
            target = Target(Kind.FILE, "/data/new.bin")
            source = MemorySource([target], bodies={target.target: b"never seen before " * 10})
            async with engine:
                with anyio.fail_after(10), pytest.raises(ProtocolError) as info:
                    await engine.scan(target, source)
        finally:
            await runner.cleanup()
    assert info.value.code == "protocol"
    assert_names_location_without_query(info.value.message, f"{trap_url}/v4/file")
    assert trap.requests == []


# -- vendor requests with redirects allowed: same origin only ---------------------------------------


async def test_a_vendor_that_needs_redirects_gets_same_origin_ones_only() -> None:
    async with serve({}) as (trap_url, _, trap):
        routes = {
            "/get": (302, "/landing/get"),
            "/keep": (307, "/landing/keep"),
            "/see-other": (303, "/landing/see-other"),
            "/port": (302, f"{trap_url}/landing?{QUERY}"),
            "/loop": (302, "/loop"),
        }
        async with serve(routes) as (url, port, seen):
            routes["/host"] = (307, f"http://localhost:{port}/landing?{QUERY}")

            def chunks() -> AsyncIterator[bytes]:
                async def gen() -> AsyncIterator[bytes]:
                    yield b"streamed "
                    yield b"body"

                return gen()

            async with vendor(url, max_redirects=3) as http:
                with anyio.fail_after(10):
                    got = await http.request("GET", "/get", route="r")
                    kept = await http.request("PUT", "/keep", route="r", data=chunks)
                    other = await http.request("POST", "/see-other", route="r", json={"a": 1})
                    errors = {}
                    for path in ("/port", "/host", "/loop"):
                        with pytest.raises(ProtocolError) as info:
                            await http.request("POST", path, route="r", data=b"secret payload")
                        errors[path] = info.value
                stats = http.statistics()
    assert got.status == kept.status == other.status == 200 and got.body == b"landed"
    by_path = {path: (method, headers, body) for method, path, headers, body in seen.requests}
    # same origin: the key goes along, a 307 sends the same method and body again, a 303 turns to GET
    assert by_path["/landing/get"][1]["apikey"] == SECRET
    assert by_path["/landing/keep"][0] == "PUT" and by_path["/landing/keep"][2] == b"streamed body"
    assert by_path["/landing/see-other"][0] == "GET" and by_path["/landing/see-other"][2] == b""
    # another origin: refused, nothing sent there (not the key, not the body)
    assert_names_location_without_query(errors["/port"].message, f"{trap_url}/landing")
    assert_names_location_without_query(errors["/host"].message, f"http://localhost:{port}/landing")
    assert "/landing" not in seen.paths
    assert seen.paths.count("/loop") == 4  # the first ask and three redirects, then it gives up
    assert "redirects" in errors["/loop"].message
    assert trap.requests == []
    assert stats.retries == 0  # a refused redirect is not retried


# -- URL targets: redirects followed, but never to a link-local or metadata address -----------------


_FORBIDDEN = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fd00:ec2::254/128"))


def _forbidden(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in _FORBIDDEN)


@pytest.fixture
def tripwire(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address aiohttp is about to open a socket to; one that is link-local or metadata is
    recorded and refused here instead of being connected to."""
    attempts: list[str] = []
    real = aiohappyeyeballs.start_connection

    async def guarded(addr_infos: Any, *args: Any, **kwargs: Any) -> socket.socket:
        addresses = [info[4][0] for info in addr_infos]
        attempts.extend(addresses)
        if any(_forbidden(a) for a in addresses):
            raise OSError(errno.ENETUNREACH, "tripwire: a connection to a forbidden address")
        return await real(addr_infos, *args, **kwargs)

    monkeypatch.setattr(aiohappyeyeballs, "start_connection", guarded)
    return attempts


class FakeDns(AbstractResolver):
    """Names of the test's own, resolved to the addresses it says (a DNS name for 169.254.169.254)."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.names:
            raise OSError(errno.ENOENT, f"{host}: unknown to the test's DNS")
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in self.names[host]
        ]

    async def close(self) -> None:
        pass


async def fetch(bodies: UrlBodies, url: str) -> bytes:
    async with bodies.open(Target(Kind.URL, url)) as body:
        return b"".join([chunk async for chunk in body.chunks()])


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.0.1:8080/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
    ],
)
async def test_a_metadata_address_is_refused_before_any_connection(url: str, tripwire: list[str]) -> None:
    bodies = UrlBodies(connect_timeout=5.0)
    try:
        start = time.monotonic()
        with anyio.fail_after(5), pytest.raises(TargetError) as info:
            await fetch(bodies, url)
        took = time.monotonic() - start
    finally:
        await bodies.aclose()
    assert info.value.code == "blocked_address"
    assert "allow_link_local" in info.value.message
    assert tripwire == []  # not even an attempt
    assert took < 1.0


@pytest.mark.parametrize(
    "url",
    ["http://2852039166/", "http://0xa9fea9fe/", "http://169.254.43518/", "http://169.254.169.254./"],
)
async def test_a_metadata_address_in_a_legacy_numeric_form_is_never_connected_to(
    url: str, tripwire: list[str]
) -> None:
    # the OS would map these onto 169.254.169.254: refused by aiohttp as non-canonical literals, or
    # by the resolver guard on the address they resolve to
    bodies = UrlBodies(connect_timeout=5.0)
    try:
        with anyio.fail_after(5), pytest.raises(TargetError) as info:
            await fetch(bodies, url)
    finally:
        await bodies.aclose()
    assert info.value.code in ("blocked_address", "transport")
    assert tripwire == []


async def test_a_redirect_to_a_metadata_address_is_refused(tripwire: list[str]) -> None:
    routes = {
        "/literal": (302, f"http://169.254.169.254/latest/meta-data/iam?{QUERY}"),
        "/mapped": (307, "http://[::ffff:a9fe:a9fe]/"),
        "/by-name": (301, "http://metadata.test/latest/"),
        "/hop": (302, "/literal"),
    }
    async with serve(routes) as (url, _, seen):
        dns = FakeDns({"metadata.test": ["169.254.169.254", "fd00:ec2::254"]})
        bodies = UrlBodies(connect_timeout=5.0, resolver=dns)
        errors = {}
        try:
            with anyio.fail_after(10):
                for path in routes:
                    with pytest.raises(TargetError) as info:
                        await fetch(bodies, url + path)
                    errors[path] = info.value
        finally:
            await bodies.aclose()
    assert {e.code for e in errors.values()} == {"blocked_address"}
    assert "QUERYTEXT" not in errors["/literal"].message
    assert "metadata.test" in errors["/by-name"].message
    assert dns.asked == ["metadata.test"]  # the name was resolved once, and its answer refused
    assert seen.paths == ["/literal", "/mapped", "/by-name", "/hop", "/literal"]
    assert not any(_forbidden(a) for a in tripwire)


async def test_a_name_that_also_resolves_to_a_metadata_address_connects_only_to_the_other(
    tripwire: list[str],
) -> None:
    async with serve({}) as (_, port, seen):
        dns = FakeDns({"mixed.test": ["169.254.169.254", "127.0.0.1"]})
        bodies = UrlBodies(connect_timeout=5.0, resolver=dns)
        try:
            with anyio.fail_after(10):
                assert await fetch(bodies, f"http://mixed.test:{port}/page") == b"landed"
        finally:
            await bodies.aclose()
    assert tripwire == ["127.0.0.1"]
    assert seen.paths == ["/page"]


async def test_the_urls_table_reaches_the_url_opener_of_list_sources(
    tmp_path: Path, tripwire: list[str]
) -> None:
    from scanner.config import UrlsConfig
    from scanner.sources import SourceOptions, build

    listing = tmp_path / "urls.txt"
    listing.write_text("")
    async with serve({"/to-metadata": (302, "http://169.254.169.254/")}) as (url, _, _seen):
        for allow in (False, True):
            source = build(f"urls:{listing}", SourceOptions(urls=UrlsConfig(allow_link_local=allow)))
            try:
                with anyio.fail_after(10):
                    async with source.open(Target(Kind.URL, url + "/page")) as body:
                        assert b"".join([c async for c in body.chunks()]) == b"landed"
                    if not allow:
                        with pytest.raises(TargetError) as info:
                            async with source.open(Target(Kind.URL, url + "/to-metadata")):
                                pass
                        assert info.value.code == "blocked_address"
                assert f"link_local={'allowed' if allow else 'refused'}" in repr(source)
            finally:
                await source.aclose()  # type: ignore[attr-defined]
    assert not any(_forbidden(a) for a in tripwire)
