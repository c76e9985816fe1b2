"""Pure S3 parsers on recorded payloads: both parser paths agree, odd keys survive, markers carry on."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.sources import _s3xml
from scanner.sources._s3xml import ListPage, parse_error, parse_listing

# Recorded from moto 5.2.5 (ListObjectsV2, encoding-type=url, delimiter=/, max-keys=3).
MOTO_V2 = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<IsTruncated>true</IsTruncated><Contents><Key>a%20b.txt</Key><LastModified>2026-11-22T09:31:00.000Z"
    b'</LastModified><ETag>"5d41402abc4b2a76b9719d911017c592"</ETag><ChecksumAlgorithm>CRC32</ChecksumAlgorithm>'
    b"<Size>5</Size><StorageClass>STANDARD</StorageClass></Contents><Name>rec</Name><Prefix/><Delimiter>/"
    b"</Delimiter><MaxKeys>3</MaxKeys><CommonPrefixes><Prefix>dir/</Prefix></CommonPrefixes><CommonPrefixes>"
    b"<Prefix>z/</Prefix></CommonPrefixes><EncodingType>url</EncodingType><KeyCount>3</KeyCount>"
    b"<NextContinuationToken>b1ea3149c562e0da55f16dba37143c92</NextContinuationToken></ListBucketResult>"
)

# Recorded from moto 5.2.5 (ListObjectVersions; moto does not URL-encode version listings).
MOTO_VERSIONS = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<IsTruncated>true</IsTruncated><KeyMarker/><VersionIdMarker/><NextKeyMarker>dir/y</NextKeyMarker>"
    b'<NextVersionIdMarker>1d0e8625</NextVersionIdMarker><Version><ETag>"5d41"</ETag><Size>5</Size>'
    b"<StorageClass>STANDARD</StorageClass><Key>a b.txt</Key><VersionId>null</VersionId><IsLatest>true"
    b'</IsLatest><LastModified>2026-11-22T09:31:00.000Z</LastModified></Version><Version><ETag>"6e80"</ETag>'
    b"<Size>6</Size><Key>dir/x</Key><VersionId>42c1b120</VersionId><IsLatest>false</IsLatest>"
    b"<LastModified>2026-11-22T09:31:00.000Z</LastModified></Version><DeleteMarker><Key>dir/y</Key>"
    b"<VersionId>1d0e8625</VersionId><IsLatest>true</IsLatest><LastModified>2026-11-22T09:31:00.000Z"
    b"</LastModified></DeleteMarker><Name>rec</Name><Prefix/><MaxKeys>4</MaxKeys></ListVersionsResult>"
)

# AWS documentation style: pretty-printed, entity-quoted ETags, an Owner block (takes the tree path).
AWS_PRETTY = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
    <Name>bucket</Name>
    <Prefix/>
    <KeyCount>2</KeyCount>
    <MaxKeys>1000</MaxKeys>
    <IsTruncated>false</IsTruncated>
    <Contents>
        <Key>my-image.jpg</Key>
        <LastModified>2009-10-12T17:50:30.000Z</LastModified>
        <ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag>
        <Size>434234</Size>
        <StorageClass>STANDARD</StorageClass>
    </Contents>
    <Contents>
        <Key>a &amp; b/</Key>
        <LastModified>2009-10-12T17:50:30.000Z</LastModified>
        <ETag>&quot;d41d8cd98f00b204e9800998ecf8427e&quot;</ETag>
        <Size>0</Size>
    </Contents>
</ListBucketResult>"""


def tree(xml: bytes, monkeypatch: pytest.MonkeyPatch) -> ListPage:
    monkeypatch.setattr(_s3xml, "_fast_v2", lambda _: None)
    return parse_listing(xml)


def test_moto_v2_page(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _s3xml._fast_v2(MOTO_V2) is not None  # moto's answers take the fast path
    page = parse_listing(MOTO_V2)
    [obj] = page.objects
    assert obj.key == "a b.txt"
    assert obj.size == 5
    assert obj.etag == "5d41402abc4b2a76b9719d911017c592"
    assert obj.version_id is None
    assert page.prefixes == ("dir/", "z/")
    assert page.next == "b1ea3149c562e0da55f16dba37143c92"
    assert tree(MOTO_V2, monkeypatch) == page


def test_versions_page_keeps_delete_markers_and_markers() -> None:
    page = parse_listing(MOTO_VERSIONS)
    assert [(o.key, o.version_id, o.is_latest, o.is_delete_marker) for o in page.objects] == [
        ("a b.txt", "null", True, False),
        ("dir/x", "42c1b120", False, False),
        ("dir/y", "1d0e8625", True, True),
    ]
    assert page.next == ("dir/y", "1d0e8625")


def test_pretty_printed_answers_take_the_tree_path() -> None:
    assert _s3xml._fast_v2(AWS_PRETTY) is None
    page = parse_listing(AWS_PRETTY)
    assert [(o.key, o.size, o.etag) for o in page.objects] == [
        ("my-image.jpg", 434234, "fba9dede5f27731c9771645a39863328"),
        ("a & b/", 0, "d41d8cd98f00b204e9800998ecf8427e"),
    ]
    assert page.next is None


def test_a_contents_without_size_falls_back() -> None:
    xml = MOTO_V2.replace(b"<Size>5</Size>", b"")
    assert _s3xml._fast_v2(xml) is None
    assert parse_listing(xml).objects[0].size == 0


def test_malformed_pages_raise_value_error() -> None:
    with pytest.raises(ValueError, match="malformed"):
        parse_listing(b"<ListBucketResult><Contents>")
    with pytest.raises(ValueError, match="without a next marker"):
        parse_listing(b"<ListVersionsResult><IsTruncated>true</IsTruncated></ListVersionsResult>")


def test_error_bodies() -> None:
    body = b"<Error><Code>NoSuchBucket</Code><Message>gone</Message><Region>eu-west-1</Region></Error>"
    assert parse_error(body) == ("NoSuchBucket", "gone", "eu-west-1")
    assert parse_error(b"") == ("", "", None)
    assert parse_error(b"<html>oops") == ("", "", None)


def _page(keys: list[str], encode: Callable[..., str] = quote) -> bytes:
    items = "".join(
        f"<Contents><Key>{encode(k, safe='/')}</Key><LastModified>2026-01-02T03:04:05.000Z</LastModified>"
        f"<ETag>&quot;{i:032x}&quot;</ETag><ChecksumAlgorithm>CRC32</ChecksumAlgorithm><Size>{i}</Size></Contents>"
        for i, k in enumerate(keys)
    )
    return (
        '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><EncodingType>url</EncodingType>'
        f"<IsTruncated>false</IsTruncated>{items}</ListBucketResult>"
    ).encode()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40), max_size=20),
    st.sampled_from([quote, quote_plus]),  # moto writes a space as %20, AWS as +
)
def test_fast_and_tree_paths_agree_on_any_key(keys: list[str], encode: Callable[..., str]) -> None:
    xml = _page(keys, encode)
    fast = _s3xml._fast_v2(xml)
    assert fast is not None
    assert [o.key for o in fast.objects] == keys
    original = _s3xml._fast_v2
    try:
        _s3xml._fast_v2 = lambda _: None  # type: ignore[assignment]
        assert parse_listing(xml) == fast
    finally:
        _s3xml._fast_v2 = original


# AWS S3 style (encoding-type=url): a space is "+" (form encoding), a literal plus "%2B", and other
# servers write a space as "%20"; botocore decodes every key, prefix and marker with unquote_plus.
AWS_FORM_ENCODED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<Name>b</Name><Prefix>my+docs/</Prefix><KeyCount>4</KeyCount><MaxKeys>3</MaxKeys><Delimiter>/</Delimiter>"
    b"<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>"
    b"<Contents><Key>my+docs/a+b.txt</Key><LastModified>2026-11-22T09:31:00.000Z</LastModified>"
    b"<ETag>&quot;5d41&quot;</ETag><Size>5</Size><StorageClass>STANDARD</StorageClass></Contents>"
    b"<Contents><Key>my+docs/c%20d%2Be.txt</Key><LastModified>2026-11-22T09:31:00.000Z</LastModified>"
    b"<ETag>&quot;5d42&quot;</ETag><Size>6</Size><StorageClass>STANDARD</StorageClass></Contents>"
    b"<Contents><Key>my+docs/100%25+%E6%97%A5.bin</Key><LastModified>2026-11-22T09:31:00.000Z</LastModified>"
    b"<ETag>&quot;5d43&quot;</ETag><Size>7</Size><StorageClass>STANDARD</StorageClass></Contents>"
    b"<CommonPrefixes><Prefix>my+docs/sub+dir%2B/</Prefix></CommonPrefixes>"
    b"<NextContinuationToken>1+2/3=</NextContinuationToken></ListBucketResult>"
)

AWS_FORM_ENCODED_VERSIONS = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<Name>b</Name><Prefix></Prefix><KeyMarker>a+0</KeyMarker><VersionIdMarker/><EncodingType>url</EncodingType>"
    b"<NextKeyMarker>x+y%2Bz</NextKeyMarker><NextVersionIdMarker>v+2</NextVersionIdMarker>"
    b"<MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated>"
    b"<Version><Key>a+b</Key><VersionId>v1</VersionId><IsLatest>true</IsLatest>"
    b"<LastModified>2026-11-22T09:31:00.000Z</LastModified><ETag>&quot;5d41&quot;</ETag><Size>5</Size></Version>"
    b"<DeleteMarker><Key>x+y%2Bz</Key><VersionId>v+2</VersionId><IsLatest>true</IsLatest>"
    b"<LastModified>2026-11-22T09:31:00.000Z</LastModified></DeleteMarker>"
    b"<CommonPrefixes><Prefix>d+1/</Prefix></CommonPrefixes></ListVersionsResult>"
)

FORM_KEYS = ["my docs/a b.txt", "my docs/c d+e.txt", "my docs/100% \u65e5.bin"]


def test_url_encoded_keys_decode_plus_as_space_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _s3xml._fast_v2(AWS_FORM_ENCODED) is not None
    page = parse_listing(AWS_FORM_ENCODED)
    assert [o.key for o in page.objects] == FORM_KEYS
    assert page.prefixes == ("my docs/sub dir+/",)
    assert page.next == "1+2/3="  # a continuation token is opaque: never decoded
    assert tree(AWS_FORM_ENCODED, monkeypatch) == page


def test_url_encoded_version_keys_and_markers_decode_plus_as_space() -> None:
    page = parse_listing(AWS_FORM_ENCODED_VERSIONS)
    assert [(o.key, o.version_id, o.is_delete_marker) for o in page.objects] == [
        ("a b", "v1", False),
        ("x y+z", "v+2", True),
    ]
    assert page.prefixes == ("d 1/",)
    assert page.next == ("x y+z", "v+2")  # the version id is not a key: kept as sent


def test_without_encoding_type_a_plus_is_a_plus(monkeypatch: pytest.MonkeyPatch) -> None:
    xml = AWS_FORM_ENCODED.replace(b"<EncodingType>url</EncodingType>", b"")
    page = parse_listing(xml)
    assert [o.key for o in page.objects][:2] == ["my+docs/a+b.txt", "my+docs/c%20d%2Be.txt"]
    assert page.prefixes == ("my+docs/sub+dir%2B/",)
    assert tree(xml, monkeypatch) == page
    versions = parse_listing(AWS_FORM_ENCODED_VERSIONS.replace(b"<EncodingType>url</EncodingType>", b""))
    assert versions.objects[0].key == "a+b"
    assert versions.next == ("x+y%2Bz", "v+2")
