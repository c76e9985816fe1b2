from __future__ import annotations

import pytest

from scanner.errors import SourceError
from scanner.model import Kind
from scanner.sources.lists import parse_ndjson_target, parse_site, parse_url


def test_urls() -> None:
    assert parse_url("https://example.com/a?b=c").error is None
    assert parse_url("ftp://example.com/").error is not None
    assert parse_url("example.com").error is not None


@pytest.mark.parametrize(
    "host", ["example.com", "WWW.Example.COM.", "a-b.example.co.uk", "10.0.0.1", "example.com:8443"]
)
def test_good_sites(host: str) -> None:
    t = parse_site(host)
    assert t.error is None and t.kind is Kind.SITE and t.target == host.lower().rstrip(".")


@pytest.mark.parametrize("line", ["https://example.com", "example.com/path", "-bad-.com", "a b.com", ""])
def test_bad_sites_become_error_targets(line: str) -> None:
    assert parse_site(line).error is not None


def test_ndjson_targets() -> None:
    t = parse_ndjson_target('{"kind": "s3", "target": "s3://b/k/x y", "version_id": "v2"}', "stdin line 1")
    assert (t.kind, t.bucket, t.key, t.version_id) == (Kind.S3, "b", "k/x y", "v2")
    t = parse_ndjson_target('{"kind": "file", "target": "rel/path"}', "stdin line 1")
    assert t.target.startswith("/") and t.target.endswith("rel/path")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"kind": "file"}', "'target' must be"),
        ('{"kind": "disk", "target": "x"}', "'kind' must be one of"),
        ('{"kind": "s3", "target": "s3://bucket-only"}', "s3://bucket/key"),
    ],
)
def test_bad_ndjson_is_a_source_error_naming_the_line(line: str, message: str) -> None:
    with pytest.raises(SourceError, match=message) as info:
        parse_ndjson_target(line, "stdin line 7")
    assert "stdin line 7" in str(info.value)
