"""S3 answers -> the scanner's exception tree; the ``[s3]`` table; URLs signed byte for byte as sent."""

from __future__ import annotations

import itertools

import pytest
from botocore.credentials import ReadOnlyCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.errors import ConfigError, SourceError
from scanner.sources._s3conn import S3Config, listing_error, object_error, parse_s3_uri
from scanner.sources._s3wire import S3ResponseError, S3Wire


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (404, "NoSuchBucket", "no_bucket"),
        (403, "InvalidAccessKeyId", "credentials"),
        (403, "SignatureDoesNotMatch", "credentials"),
        (400, "ExpiredToken", "credentials"),
        (403, "AccessDenied", "access_denied"),
        (403, "", "access_denied"),
        (0, "Transport", "unreachable"),
        (503, "SlowDown", "list_failed"),
    ],
)
def test_listing_failures_are_one_line_source_errors(status: int, code: str, expected: str) -> None:
    err = listing_error(S3ResponseError(status, code, "detail"), "s3://b/p")
    assert isinstance(err, SourceError)
    assert err.code == expected
    assert str(err).startswith("s3://b/p: ")
    assert "\n" not in str(err)


@pytest.mark.parametrize(
    ("status", "code", "expected", "retryable"),
    [
        (404, "NoSuchKey", "vanished", False),
        (404, "NoSuchVersion", "vanished", False),
        (404, "", "vanished", False),
        (412, "PreconditionFailed", "changed", False),
        (403, "AccessDenied", "access_denied", False),
        (403, "InvalidObjectState", "archived", False),
        (403, "InvalidAccessKeyId", "credentials", False),
        (503, "SlowDown", "throttled", True),
        (500, "InternalError", "s3_error", True),
        (0, "Transport", "transport", True),
    ],
)
def test_object_failures_are_target_errors(status: int, code: str, expected: str, retryable: bool) -> None:
    err = object_error(S3ResponseError(status, code, "detail"))
    assert err.code == expected
    assert err.retryable is retryable


def test_s3_table_validation() -> None:
    cfg = S3Config.from_table(
        {"endpoint_url": "http://minio:9000", "region": "eu-west-1", "list_concurrency": 4}
    )
    assert cfg.endpoint_url == "http://minio:9000"
    assert cfg.list_concurrency == 4
    with pytest.raises(ConfigError, match=r"s3\.bogus: unknown key"):
        S3Config.from_table({"bogus": 1})
    with pytest.raises(ConfigError, match=r"s3\.page_size"):
        S3Config.from_table({"page_size": 5000})


def test_uri_parsing() -> None:
    assert parse_s3_uri("s3://b") == ("b", "")
    assert parse_s3_uri("s3://b/a//b/../c/") == ("b", "a//b/../c/")
    with pytest.raises(SourceError):
        parse_s3_uri("s3:///k")


async def _creds() -> ReadOnlyCredentials:
    return ReadOnlyCredentials("AKIDEXAMPLE", "secret", None)


def _wire(path_style: bool, endpoint: str = "http://127.0.0.1:9000") -> S3Wire:
    return S3Wire(None, _creds, endpoint=endpoint, region="us-east-1", path_style=path_style)  # type: ignore[arg-type]


def test_urls_encode_odd_keys_without_normalising_them() -> None:
    w = _wire(True)
    assert w.url("b", "a b/ü/../x//y") == "http://127.0.0.1:9000/b/a%20b/%C3%BC/../x//y"
    assert (
        w.url("b", "k", [("versionId", "v+1"), ("a", "")]) == "http://127.0.0.1:9000/b/k?a=&versionId=v%2B1"
    )
    assert (
        w.url("b", "", [("prefix", "p q"), ("list-type", "2")])
        == "http://127.0.0.1:9000/b?list-type=2&prefix=p%20q"
    )
    v = _wire(False, "https://s3.eu-west-1.amazonaws.com")
    assert v.url("bucket", "k") == "https://bucket.s3.eu-west-1.amazonaws.com/k"
    assert v.url("bucket") == "https://bucket.s3.eu-west-1.amazonaws.com/"
    assert v.url("my.dotted.bucket", "k") == "https://s3.eu-west-1.amazonaws.com/my.dotted.bucket/k"


@pytest.mark.anyio
async def test_signature_covers_the_url_as_sent() -> None:
    w = _wire(True)
    url = w.url("b", "a b/..//c", [("versionId", "x")])
    headers = await w._sign(url, "us-east-1", {"If-Match": '"e"'})
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "SignedHeaders=host;if-match;x-amz-content-sha256;x-amz-date" in headers["Authorization"]
    assert "secret" not in repr(w)


def test_the_example_config_validates() -> None:
    import tomllib
    from pathlib import Path

    table = tomllib.loads((Path(__file__).parents[2] / "configs" / "s3.toml").read_text())["s3"]
    assert S3Config.from_table(table) == S3Config()


_SEGMENT = st.text(alphabet="/ab0Z~.-\u00e9\U0010ffff", max_size=5)


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from(["", "p/", "logs"]),
    keys=st.lists(_SEGMENT, max_size=40),
    folders=st.lists(st.text(alphabet="ab0Z~.-\u00e9/", max_size=3), max_size=8),
    excluded=st.sets(st.integers(0, 7)),
    objects=st.lists(_SEGMENT, max_size=3),
    flat=st.booleans(),
)
def test_ranges_cover_every_key_once_whatever_folders_the_server_names(
    prefix: str, keys: list[str], folders: list[str], excluded: set[int], objects: list[str], flat: bool
) -> None:
    """The folders a delimiter page names (real, missing, invented, nested in one another) only move
    the cuts: every key under the prefix is in exactly one range, or skipped inside an excluded folder."""
    from scanner.sources._s3xml import ListPage, S3Object
    from scanner.sources.s3 import _cut, _Range

    named = sorted({prefix + f + "/" for f in folders})
    page = ListPage(
        tuple(S3Object(prefix + o, 0, None, None) for o in sorted(objects)),
        tuple(named),
        "more" if flat else None,
    )
    skip = {f for i, f in enumerate(named) if i in excluded}
    parts = list(_cut(None, page, prefix if flat else None, skip.__contains__))
    low = parts[-1].resume if parts else None
    parts.append(_Range(low, None))
    for before, after in itertools.pairwise(parts):
        assert after.start_after == before.resume
    for key in sorted({prefix + k for k in keys}):
        owners = [
            p
            for p in parts
            if (p.start_after is None or key > p.start_after)
            and (p.stop is None or key < p.stop or (p.inclusive and key == p.stop))
        ]
        if not owners:
            assert any(key.startswith(f) for f in skip), (key, parts)
            continue
        assert len(owners) == 1, (key, owners)
        [part] = owners
        assert key.startswith(part.listing_prefix(prefix))
        page_of_one = (S3Object(key, 0, None, None),)
        assert part.end_in(page_of_one) == 1
