"""Pure parsers for S3's XML answers (sans-I/O): listing pages and error bodies.

:func:`parse_listing` has two paths. ListObjectsV2 pages -- the hot path, a million times per
billion-key bucket -- are read by one regular expression over the bytes, ~4x cheaper than building an
element tree; it is used only when it accounts for every ``<Contents>`` element of the page, so any
answer shaped differently (another server's element order, pretty-printing, a missing ``Size``) falls
back to ``xml.etree``, which reads anything. Version listings always take the tree path.

Keys under ``encoding-type=url``: every key-valued element the parser reads (``Key``, a common
``Prefix``, ``NextKeyMarker``) is form-decoded, as AWS writes it and botocore reads it (``unquote_plus``:
``+`` is a space, ``%2B`` a plus, invalid UTF-8 replaced); a continuation token and a version id are
opaque and kept as sent. Without ``EncodingType`` in the answer, text is taken literally.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import unquote_plus

__all__ = ("ListPage", "S3Object", "parse_error", "parse_listing")

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
# Key, LastModified and ETag lead every <Contents> in AWS, MinIO, Ceph and moto answers; Size follows
# after optional checksum elements, skipped by the unrolled "any tag but <Size>" loop.
_FAST_CONTENTS = re.compile(
    rb"<Contents><Key>([^<]*)</Key><LastModified>([^<]*)</LastModified><ETag>([^<]*)</ETag>"
    rb"[^<]*(?:<(?!Size>)[^<]*)*<Size>(\d+)</Size>"
)
_PREFIX = re.compile(rb"<CommonPrefixes><Prefix>([^<]*)</Prefix></CommonPrefixes>")
_TRUNCATED = re.compile(rb"<IsTruncated>(\w+)</IsTruncated>")
_TOKEN = re.compile(rb"<NextContinuationToken>([^<]*)</NextContinuationToken>")
_ENCODING = re.compile(rb"<EncodingType>url</EncodingType>")


class S3Object(NamedTuple):
    """One entry of a listing page (a named tuple: a million of them are built per billion keys, and
    a tuple costs a fifth of a frozen dataclass). ``etag`` is unquoted. ``is_delete_marker`` entries
    exist only in version listings."""

    key: str
    size: int
    etag: str | None
    mtime: float | None
    version_id: str | None = None
    is_latest: bool = True
    is_delete_marker: bool = False


@dataclass(frozen=True, slots=True)
class ListPage:
    """One parsed page. ``next`` is the marker for the following request, ``None`` on the last page:
    a continuation token (V2) or a ``(key_marker, version_id_marker)`` pair (versions)."""

    objects: tuple[S3Object, ...]
    prefixes: tuple[str, ...]
    next: str | tuple[str, str] | None


@lru_cache(maxsize=4096)
def _timestamp(text: str) -> float:
    # Bulk uploads share timestamps to the second; the cache turns most parses into a dict hit.
    return datetime.fromisoformat(text).timestamp()


def _decode(text: str | None, url_encoded: bool) -> str:
    """A key as the listing meant it: form-decoded when the answer is URL-encoded (module docstring)."""
    text = text or ""
    # the membership tests keep unquote_plus's call off the hot path for plain keys
    return unquote_plus(text) if url_encoded and ("%" in text or "+" in text) else text


def parse_listing(xml: bytes) -> ListPage:
    """Parse a ListObjectsV2 or ListObjectVersions answer (pure; raises ValueError if malformed).

    Keys, prefixes and markers are form-decoded when the answer says ``EncodingType=url`` (we always
    ask for it, so keys with bytes XML cannot carry survive the round trip).
    """
    fast = _fast_v2(xml)
    if fast is not None:
        return fast
    try:
        # The answer comes from the configured endpoint; expat >= 2.4.1 caps entity expansion.
        root = ET.fromstring(xml)  # noqa: S314
    except ET.ParseError as exc:
        raise ValueError(f"malformed listing XML: {exc}") from None
    ns = _NS if root.tag.startswith(_NS) else ""
    enc = root.findtext(ns + "EncodingType") == "url"
    tag_key, tag_size, tag_etag, tag_mtime = ns + "Key", ns + "Size", ns + "ETag", ns + "LastModified"
    tag_vid, tag_latest = ns + "VersionId", ns + "IsLatest"
    objects: list[S3Object] = []
    prefixes: list[str] = []
    for el in root:
        tag = el.tag
        if tag in (ns + "Contents", ns + "Version", ns + "DeleteMarker"):
            key = size = etag = mtime = vid = latest = None
            for ch in el:
                t = ch.tag
                if t == tag_key:
                    key = ch.text
                elif t == tag_size:
                    size = ch.text
                elif t == tag_etag:
                    etag = ch.text
                elif t == tag_mtime:
                    mtime = ch.text
                elif t == tag_vid:
                    vid = ch.text
                elif t == tag_latest:
                    latest = ch.text
            objects.append(
                S3Object(
                    _decode(key, enc),
                    int(size) if size else 0,
                    etag.strip('"') if etag else None,
                    _timestamp(mtime) if mtime else None,
                    None if vid in (None, "null") and tag == ns + "Contents" else vid,
                    latest != "false",
                    tag == ns + "DeleteMarker",
                )
            )
        elif tag == ns + "CommonPrefixes":
            prefixes.append(_decode(el.findtext(ns + "Prefix"), enc))
    nxt: str | tuple[str, str] | None = None
    if root.findtext(ns + "IsTruncated") == "true":
        token = root.findtext(ns + "NextContinuationToken")
        if token is not None:
            nxt = token
        else:
            marker = _decode(root.findtext(ns + "NextKeyMarker"), enc)
            vmarker = root.findtext(ns + "NextVersionIdMarker") or ""
            if not marker:
                raise ValueError("truncated listing without a next marker")
            nxt = (marker, vmarker)
    return ListPage(tuple(objects), tuple(prefixes), nxt)


def parse_error(xml: bytes) -> tuple[str, str, str | None]:
    """``(code, message, region)`` from an S3 error body; tolerant of empty or non-XML bodies."""
    try:
        root = ET.fromstring(xml)  # noqa: S314 - as in parse_listing
    except ET.ParseError:
        return "", "", None
    return root.findtext("Code") or "", root.findtext("Message") or "", root.findtext("Region")


def _fast_v2(xml: bytes) -> ListPage | None:
    """The regex path for a ListObjectsV2 page; None when it cannot vouch for the whole page."""
    if b"<Version>" in xml or b"<DeleteMarker>" in xml or b"<ListBucketResult" not in xml:
        return None
    found = _FAST_CONTENTS.findall(xml)
    if len(found) != xml.count(b"<Contents>"):
        return None
    prefixes = _PREFIX.findall(xml)
    if len(prefixes) != xml.count(b"<CommonPrefixes>"):
        return None
    enc = _ENCODING.search(xml) is not None
    objects = tuple(
        S3Object(_text(key, enc), int(size), _etag(etag), _timestamp(mtime.decode()))
        for key, mtime, etag, size in found
    )
    nxt: str | None = None
    truncated = _TRUNCATED.search(xml)
    if truncated is not None and truncated.group(1) == b"true":
        token = _TOKEN.search(xml)
        if token is None:
            return None
        nxt = _text(token.group(1), False)
    return ListPage(objects, tuple(_text(p, enc) for p in prefixes), nxt)


def _text(raw: bytes, url_encoded: bool) -> str:
    text = raw.decode("utf-8")
    if "&" in text:
        text = html.unescape(text)
    return _decode(text, url_encoded)


def _etag(raw: bytes) -> str:
    return raw.replace(b"&quot;", b"").replace(b"&#34;", b"").strip(b'"').decode("ascii", "replace")
