from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from scanner.errors import SourceError, TargetError
from scanner.model import Kind, Target
from scanner.sources import lists
from scanner.sources.lists import ListSource, parse_ndjson_target, parse_site, parse_url


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
    t = parse_ndjson_target('{"kind": "s3", "target": "s3://b/k/x y", "version_id": "v2"}', "stdin:1")
    assert (t.kind, t.bucket, t.key, t.version_id) == (Kind.S3, "b", "k/x y", "v2")
    t = parse_ndjson_target('{"kind": "file", "target": "rel/path"}', "stdin:1")
    assert t.target == os.path.join(os.getcwd(), "rel/path")  # relative: against the working directory
    t = parse_ndjson_target('{"kind": "url", "target": "https://example.com/x"}', "stdin:1")
    assert (t.kind, t.target, t.error) == (Kind.URL, "https://example.com/x", None)


@pytest.mark.parametrize(
    ("line", "target", "kind", "message"),
    [
        ("not json", "stdin:7", Kind.FILE, "not valid JSON: not json"),
        ("[1, 2]", "stdin:7", Kind.FILE, "expected a JSON object"),
        ('{"kind": "file"}', "stdin:7", Kind.FILE, "'target' must be"),
        ('{"kind": "disk", "target": "x"}', "x", Kind.FILE, "stdin:7: 'kind' must be one of"),
        ('{"kind": 3, "target": "s3://b/k"}', "s3://b/k", Kind.S3, "'kind' must be one of"),
        ('{"target": "https://e.com/"}', "https://e.com/", Kind.URL, "'kind' must be one of"),
        ('{"kind": "s3", "target": "s3://bucket-only"}', "s3://bucket-only", Kind.S3, "s3://bucket/key"),
        ("x" * 500, "stdin:7", Kind.FILE, "x" * 59 + "\u2026"),
    ],
)
def test_bad_ndjson_is_an_error_target_naming_the_line(
    line: str, target: str, kind: Kind, message: str
) -> None:
    t = parse_ndjson_target(line, "stdin:7")
    assert t.error is not None and t.error.code == "bad_target"
    assert (t.target, t.kind) == (target, kind)
    assert message in t.error.message and len(t.error.message) < 120


def test_a_list_that_is_a_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is a directory"):
        ListSource(
            f"sites:{tmp_path}", frozenset({Kind.SITE}), lambda s, _: parse_site(s), path=str(tmp_path)
        ).check()
    with pytest.raises(SourceError, match="no such file"):
        ListSource(
            "sites:x", frozenset({Kind.SITE}), lambda s, _: parse_site(s), path=str(tmp_path / "x")
        ).check()


@pytest.mark.anyio
async def test_bad_lines_cost_one_error_target_each_and_the_stream_goes_on(tmp_path: Path) -> None:
    here = tmp_path / "here.txt"
    here.write_text("x")
    data = b"\n".join(
        [
            orjson.dumps({"kind": "file", "target": str(here)}),
            b"garbage",
            b"",
            b"# comment",
            b"\xff\xfe not utf-8",
            orjson.dumps({"kind": "file", "target": str(tmp_path / "gone")}),
            orjson.dumps({"kind": "site", "target": "example.com"}),
        ]
    )
    listing = tmp_path / "in.ndjson"
    listing.write_bytes(data)
    source = ListSource("stdin", frozenset(Kind), parse_ndjson_target, path=str(listing))
    got = [t async for t in source.targets()]
    assert [(t.target, t.error.code if t.error else None) for t in got] == [
        (str(here), None),
        ("stdin:2", "bad_target"),
        ("stdin:5", "bad_target"),
        (str(tmp_path / "gone"), "not_found"),
        ("example.com", None),
    ]


@pytest.mark.anyio
async def test_an_undecodable_url_line_is_an_error_target(tmp_path: Path) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_bytes(b"https://example.com/a\nhttps://example.com/\xff\n")
    source = ListSource(
        f"urls:{listing}", frozenset({Kind.URL}), lambda s, _: parse_url(s), path=str(listing)
    )
    got = [t async for t in source.targets()]
    assert got[0].error is None
    assert (got[1].kind, got[1].target) == (Kind.URL, "https://example.com/\\xff")
    assert got[1].error is not None and got[1].error.code == "bad_target"


@pytest.mark.anyio
async def test_sites_have_no_content_and_urls_open_lazily() -> None:
    source = ListSource("sites:x", frozenset({Kind.SITE}), lambda s, _: parse_site(s), path=None)
    with pytest.raises(TargetError) as info:
        source.open(parse_site("example.com"))
    assert info.value.code == "no_content"
    await source.aclose()


@pytest.mark.parametrize(
    "line", ["http://[::1", "https://[::1/x", "http://[abc]/", "http://h:99999/", "http://h:x/"]
)
def test_a_url_urllib_cannot_split_is_an_error_target_not_an_exception(line: str) -> None:
    t = parse_url(line)
    assert (t.kind, t.target) == (Kind.URL, line)
    assert t.error is not None and t.error.code == "bad_target" and "not a valid URL" in t.error.message


@pytest.mark.anyio
async def test_an_unsplittable_url_costs_its_own_line_only(tmp_path: Path) -> None:
    # it used to raise in the reader thread and end the whole run as an internal error
    urls = tmp_path / "urls.txt"
    urls.write_text("https://example.com/a\nhttp://[::1\nhttps://example.com/b\n")
    source = ListSource(f"urls:{urls}", frozenset({Kind.URL}), lambda s, _: parse_url(s), path=str(urls))
    got = [(t.target, t.error.code if t.error else None) for t in [t async for t in source.targets()]]
    assert got == [
        ("https://example.com/a", None),
        ("http://[::1", "bad_target"),
        ("https://example.com/b", None),
    ]

    here = tmp_path / "here.txt"
    here.write_text("x")
    stdin = tmp_path / "in.ndjson"
    stdin.write_bytes(
        orjson.dumps({"kind": "file", "target": str(here)})
        + b"\n"
        + orjson.dumps({"kind": "url", "target": "http://[::1"})
        + b"\n"
    )
    source = ListSource("stdin", frozenset(Kind), parse_ndjson_target, path=str(stdin))
    got_stdin = [t async for t in source.targets()]
    assert [(t.target, t.error.code if t.error else None) for t in got_stdin] == [
        (str(here), None),
        ("http://[::1", "bad_target"),
    ]
    assert got_stdin[1].error is not None and got_stdin[1].error.message.startswith("stdin:2: ")


@pytest.mark.anyio
async def test_a_parser_that_raises_value_error_costs_one_line_not_the_stream(tmp_path: Path) -> None:
    def parse(line: str, where: str) -> Target:
        if line == "boom":
            raise ValueError("a fault no parser foresaw")
        return parse_url(line)

    urls = tmp_path / "urls.txt"
    urls.write_text("https://example.com/a\nboom\nhttps://example.com/b\n")
    source = ListSource(f"urls:{urls}", frozenset({Kind.URL}), parse, path=str(urls))
    got = [t async for t in source.targets()]
    assert [(t.kind, t.target, t.error.code if t.error else None) for t in got] == [
        (Kind.URL, "https://example.com/a", None),
        (Kind.URL, "boom", "bad_target"),
        (Kind.URL, "https://example.com/b", None),
    ]
    stdin = tmp_path / "in.ndjson"
    stdin.write_text("boom\nhttps://example.com/b\n")
    source = ListSource("stdin", frozenset(Kind), parse, path=str(stdin))
    got = [t async for t in source.targets()]
    assert [(t.target, t.error.code if t.error else None) for t in got] == [
        ("stdin:1", "bad_target"),
        ("https://example.com/b", None),
    ]


@pytest.mark.anyio
async def test_a_stdin_path_with_a_nul_byte_is_a_bad_target_line(tmp_path: Path) -> None:
    # it used to reach the YARA engine, whose request frame NUL separates: the worker died
    here = tmp_path / "here.txt"
    here.write_text("x")
    stdin = tmp_path / "in.ndjson"
    stdin.write_bytes(
        orjson.dumps({"kind": "file", "target": str(here) + "\0.txt"})
        + b"\n"
        + orjson.dumps({"kind": "file", "target": str(here)})
        + b"\n"
    )
    source = ListSource("stdin", frozenset(Kind), parse_ndjson_target, path=str(stdin))
    bad, good = [t async for t in source.targets()]
    assert bad.error is not None and bad.error.code == "bad_target"
    assert bad.error.message == "stdin:1: not a usable path: it holds a NUL byte"
    assert good.error is None


def test_a_url_quoted_from_a_bad_line_loses_its_query_and_userinfo() -> None:
    line = '{"kind": "url", "target": "https://u:pw@b.example/k?X-Amz-Security-Token=SECRET'
    t = parse_ndjson_target(line, "stdin:3")
    assert t.error is not None and t.error.code == "bad_target"
    assert "SECRET" not in t.error.message and "pw" not in t.error.message
    assert "https://b.example/k?\u2026" in t.error.message


_LIMIT = "a line longer than the limit of 1048576 bytes"


@pytest.mark.anyio
async def test_an_overlong_stdin_line_is_one_error_target_and_the_stream_goes_on(tmp_path: Path) -> None:
    # it used to end the whole source ("source failed: a line longer than 1048576 bytes")
    here = tmp_path / "here.txt"
    here.write_text("x")
    ok = orjson.dumps({"kind": "file", "target": str(here)})
    huge = orjson.dumps({"kind": "file", "target": "/" + "y" * 1_500_000})
    stdin = tmp_path / "in.ndjson"
    stdin.write_bytes(b"\n".join([ok, huge, b"garbage", ok, b"z" * 3_000_000]))  # the last has no newline
    source = ListSource("stdin", frozenset(Kind), parse_ndjson_target, path=str(stdin))
    got = [t async for t in source.targets()]
    assert [(t.kind, t.target, t.error.code if t.error else None) for t in got] == [
        (Kind.FILE, str(here), None),
        (Kind.FILE, "stdin:2", "bad_target"),
        (Kind.FILE, "stdin:3", "bad_target"),  # the lines after it keep their numbers
        (Kind.FILE, str(here), None),
        (Kind.FILE, "stdin:5", "bad_target"),
    ]
    assert got[1].error is not None and got[1].error.message == _LIMIT


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("prefix", "kind", "good"),
    [("urls", Kind.URL, "https://example.com/a"), ("sites", Kind.SITE, "example.com")],
)
async def test_an_overlong_list_line_is_one_error_target_named_by_its_place(
    tmp_path: Path, prefix: str, kind: Kind, good: str
) -> None:
    listing = tmp_path / "list.txt"
    listing.write_bytes(f"{good}\n".encode() + b"x" * 2_000_000 + f"\n\n{good}\n".encode())
    name = f"{prefix}:{listing}"
    parse = parse_url if kind is Kind.URL else parse_site
    source = ListSource(name, frozenset({kind}), lambda s, _: parse(s), path=str(listing))
    got = [t async for t in source.targets()]
    assert [(t.kind, t.target, t.error.code if t.error else None) for t in got] == [
        (kind, good, None),
        (kind, f"{name}:2", "bad_target"),
        (kind, good, None),
    ]
    assert got[1].error is not None and got[1].error.message == _LIMIT


@pytest.mark.parametrize(
    "data",
    [
        b"a\n" + b"x" * 17 + b"\nb\n",  # overlong, but ends within the chunk that outgrew the cap
        b"a\n" + b"x" * 100 + b"\nb\nc",  # skipped over many chunks
        b"x" * 100,  # overlong and no newline at the end
        b"x" * 100 + b"\n",
        b"x" * 16 + b"\n" + b"y" * 17 + b"\n" + b"z" * 16,  # exactly the cap is still a line
        b"a\n" + b"x" * 37 + b"\n" + b"y" * 41 + b"\nb",  # two in a row
        b"\n\n" + b"x" * 30 + b"\n\n",
    ],
)
def test_the_line_reader_drops_an_overlong_line_holding_no_more_than_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes
) -> None:
    cap, chunk = 16, 4
    monkeypatch.setattr(lists._LineReader, "max_line", cap)
    monkeypatch.setattr(lists._LineReader, "_READ", chunk)
    path = tmp_path / "in"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    reader = lists._LineReader(fd)
    real_read = os.read

    def read(fd: int, n: int) -> bytes:
        # memory stays flat: never more than the cap plus a chunk held between reads
        assert len(reader._tail) <= cap + chunk
        return real_read(fd, n)

    monkeypatch.setattr(lists.os, "read", read)
    got: list[bytes | lists._Overlong] = []
    try:
        while (lines := reader.read()) is not None:
            got.extend(lines)
    finally:
        os.close(fd)
    want = data.split(b"\n")
    if want[-1] == b"":
        want.pop()
    assert got == [line if len(line) <= cap else lists._OVERLONG for line in want]
