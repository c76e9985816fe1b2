"""The address policy of URL targets, pure: which addresses are refused, what the guarded resolver
keeps, and the ``[urls]`` table that allows them. Nothing here opens a socket: the "allowed" cases
are shown on the policy and the resolver alone, never by connecting to 169.254.x.x."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from scanner import config
from scanner.errors import ConfigError, TargetError
from scanner.sources._http_body import GuardedResolver, RefusedAddress, UrlBodies, refused_address

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # no I/O at all: one loop is enough


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("169.254.169.254", True),
        ("169.254.0.0", True),
        ("169.254.255.255", True),
        ("169.253.255.255", False),
        ("169.255.0.0", False),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("::ffff:169.254.169.254", True),
        ("::ffff:a9fe:a9fe", True),
        ("::ffff:127.0.0.1", False),
        ("fd00:ec2::254", True),
        ("fd00:ec2::253", False),
        ("fe80::1", True),
        ("fe80::1%eth0", True),
        ("::1", False),
        ("2001:db8::1", False),
    ],
)
def test_link_local_and_metadata_addresses_are_refused(address: str, refused: bool) -> None:
    assert refused_address(address) is refused


def test_a_name_is_not_an_address() -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - ipaddress's own error, whatever its text
        refused_address("metadata.google.internal")


class Answers(AbstractResolver):
    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
            for a in self.addresses
        ]

    async def close(self) -> None:
        self.closed = True


async def test_the_guard_keeps_allowed_addresses_and_refuses_a_name_with_none_left() -> None:
    mixed = GuardedResolver(Answers(["169.254.169.254", "192.0.2.7", "fd00:ec2::254"]))
    assert [r["host"] for r in await mixed.resolve("mixed.example", 80)] == ["192.0.2.7"]
    metadata = GuardedResolver(Answers(["169.254.169.254", "fd00:ec2::254"]))
    with pytest.raises(RefusedAddress) as info:
        await metadata.resolve("metadata.example", 80)
    assert info.value.host == "metadata.example"
    assert info.value.addresses == ("169.254.169.254", "fd00:ec2::254")


async def test_with_the_option_the_guard_passes_every_address() -> None:
    inner = Answers(["169.254.169.254", "fd00:ec2::254"])
    guard = GuardedResolver(inner, allow_link_local=True)
    got = await guard.resolve("metadata.example", 80)
    assert [r["host"] for r in got] == ["169.254.169.254", "fd00:ec2::254"]
    await guard.close()
    assert inner.closed
    given = Answers([])
    await GuardedResolver(given, owns_inner=False).close()
    assert not given.closed  # a resolver handed in stays its owner's to close


def test_with_the_option_an_ip_literal_passes_the_check() -> None:
    url = URL("http://169.254.169.254/latest/meta-data/")
    with pytest.raises(TargetError) as info:
        UrlBodies()._check_literal(url)
    assert info.value.code == "blocked_address"
    UrlBodies(allow_link_local=True)._check_literal(url)  # no error: it would be connected to


def test_the_urls_table_allows_link_local_addresses(tmp_path: Path) -> None:
    cfg = tmp_path / "scanner.toml"
    assert config.load(None).urls.allow_link_local is False
    cfg.write_text("[urls]\nallow_link_local = true\n")
    settings = config.load(cfg)
    assert settings.urls.allow_link_local is True


def test_the_example_config_documents_the_default() -> None:
    example = Path(__file__).resolve().parents[2] / "configs" / "yara.toml"
    assert config.load(example).urls == config.UrlsConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[urls]\nallow_linklocal = true\n", "urls.allow_linklocal: unknown key"),
        ('[urls]\nallow_link_local = "perhaps"\n', "urls.allow_link_local: expected bool"),
        ('urls = "all"\n', "'urls' must be a table"),
    ],
)
def test_a_wrong_urls_table_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "scanner.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        config.load(cfg)
    assert message in info.value.message
