"""Targets read from lists: ``urls:FILE`` (one URL a line), ``sites:FILE`` (one host a line) and ``-``
(NDJSON on stdin, each object with the ``kind`` and ``target`` fields of a verdict line).

Lines are read and parsed lazily in a worker thread, as many as have arrived per hop, so a list of a
billion lines costs no more memory than one of ten, and targets piped in slowly are scanned as they
come. Blank lines and ``#`` comments are ignored. A malformed line, in a list or on stdin, becomes an
``error`` line (``error.code = "bad_target"``) and the stream goes on; a stdin line with no usable
``target`` is named ``stdin:LINE``. A relative path on stdin is resolved against the working
directory; a path that does not exist is an error line ``not_found``, one that cannot be a path (a NUL
byte) ``bad_target``. A line no parser foresaw (a ValueError from it) is still only its own error line:
nothing on one line can end the stream. A line longer than 1 MiB is skipped, never held, and is an
error line ``bad_target`` named by its place (``stdin:LINE``, ``urls:FILE:LINE``).

``url`` targets are fetched with a plain HTTP GET (:mod:`._http_body`), whatever list named them;
``site`` targets have no content (they are whole sites, for vendor site scans).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import msgspec
import orjson

from .._redact import scrub_urls
from ..config import UrlsConfig
from ..errors import SourceError, TargetError
from ..model import ErrorInfo, Kind, Target
from ._base import Body, LocalPath

if TYPE_CHECKING:
    from ._http_body import UrlBodies

__all__ = ("ListSource", "parse_ndjson_target", "parse_site", "parse_url")

# RFC 1123 host names and IPv4, optional port; IDNs must come already in their xn-- form.
_HOST = re.compile(
    r"^(?=.{1,253}(:|$))([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(:[0-9]{1,5})?$"
)


def parse_url(line: str) -> Target:
    try:
        parts = urlsplit(line)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        if usable:
            parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError as exc:
        # "http://[::1" (an unclosed IPv6 bracket), "http://h:99999/": the reason, never the URL
        return Target(Kind.URL, line, error=ErrorInfo(f"not a valid URL ({_reason(exc)})", "bad_target"))
    if not usable:
        return Target(Kind.URL, line, error=ErrorInfo("not an http(s) URL", "bad_target"))
    return Target(Kind.URL, line)


def _reason(exc: ValueError) -> str:
    # urllib's messages name the fault ("Invalid IPv6 URL", "Port out of range 0-65535"); some
    # quote the input, which may hold a token, so a long or URL-holding one gives just its kind
    text = str(exc)
    return text if text and len(text) < 60 and "/" not in text else "malformed"


def parse_site(line: str) -> Target:
    host = line.lower().rstrip(".")
    if not _HOST.match(host):
        return Target(
            Kind.SITE,
            line,
            error=ErrorInfo("not a host name (give example.com, no scheme or path)", "bad_target"),
        )
    return Target(Kind.SITE, host)


def parse_ndjson_target(line: str, where: str) -> Target:
    """One stdin line -> Target. A line that is not usable gives a target carrying a ``bad_target``
    error: its own ``target`` string when it has one, else ``where`` (``stdin:LINE``)."""
    try:
        obj: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        return _bad_line(where, where, f"not valid JSON: {_excerpt(line)}")
    if not isinstance(obj, dict):
        return _bad_line(where, where, f"expected a JSON object with 'kind' and 'target': {_excerpt(line)}")
    kind, target = obj.get("kind"), obj.get("target")
    if not isinstance(target, str) or not target:
        return _bad_line(where, where, f"'target' must be a non-empty string: {_excerpt(line)}")
    try:
        k = Kind(kind) if isinstance(kind, str) else None
    except ValueError:
        k = None
    if k is None:
        return _bad_line(target, where, "'kind' must be one of file, s3, url, site")
    if k is Kind.FILE:
        return Target(Kind.FILE, os.path.abspath(target))
    if k is Kind.URL or k is Kind.SITE:
        parsed = parse_url(target) if k is Kind.URL else parse_site(target)
        if parsed.error is not None:
            # the line's place, as every other bad stdin line has it
            parsed = _placed(parsed, where)
        return parsed
    if not target.startswith("s3://") or "/" not in target[5:]:
        return _bad_line(target, where, "an s3 target must look like s3://bucket/key", Kind.S3)
    bucket, _, key = target[5:].partition("/")
    return Target(Kind.S3, target, bucket=bucket, key=key, version_id=_str_or_none(obj.get("version_id")))


def _bad_line(target: str, where: str, message: str, kind: Kind | None = None) -> Target:
    if kind is None:
        # a verdict line needs a kind: the one the target's form suggests, else file
        if target.startswith("s3://"):
            kind = Kind.S3
        elif target.startswith(("http://", "https://")):
            kind = Kind.URL
        else:
            kind = Kind.FILE
    # the line's place goes into the message unless it already is the target
    text = message if target == where else f"{where}: {message}"
    return Target(kind, target, error=ErrorInfo(text, "bad_target"))


def _placed(target: Target, where: str) -> Target:
    assert target.error is not None
    error = dataclasses.replace(target.error, message=f"{where}: {target.error.message}")
    return msgspec.structs.replace(target, error=error)


def _excerpt(line: str, most: int = 60) -> str:
    # a URL in the line (a broken line may still hold a presigned one) loses its query and userinfo
    line = scrub_urls(line)
    return line if len(line) <= most else line[: most - 1] + "\u2026"


def _str_or_none(v: object) -> str | None:
    return v if isinstance(v, str) and v else None


class _Overlong:
    """Stands, in :meth:`_LineReader.read`'s list, for a line longer than the cap: its bytes were
    read and dropped, never held."""

    __slots__ = ()


_OVERLONG = _Overlong()


class _LineReader:
    """Whole lines from a file descriptor, as soon as they arrive.

    Each :meth:`read` blocks (in a worker thread) only until *some* bytes are available, then returns
    every complete line it has, so a slow producer on a pipe is served line by line while a big file
    is served 64 KiB at a time. Returns None at end of input.

    A line longer than ``max_line`` bytes is returned as ``_OVERLONG``, in its place among the
    others: once the unfinished line outgrows the cap its bytes are read and dropped a chunk at a time
    up to the next newline, so memory stays under the cap plus a chunk however long the line is.
    """

    _READ = 1 << 16
    max_line = 1 << 20  # a longer line is skipped: see the class doc

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._tail = b""
        self._eof = False
        #: dropping the rest of an overlong line, up to its newline
        self._skipping = False
        #: lines handed out so far, blank ones included (for ``where`` in messages)
        self.number = 0

    def read(self) -> list[bytes | _Overlong] | None:
        while not self._eof:
            chunk = os.read(self._fd, self._READ)
            if not chunk:
                self._eof = True
                break
            lines: list[bytes | _Overlong] = []
            if self._skipping:
                end = chunk.find(b"\n")
                if end < 0:
                    continue
                self._skipping = False
                lines.append(_OVERLONG)
                data = chunk[end + 1 :]
            else:
                data = self._tail + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                if len(data) > self.max_line:
                    self._tail, self._skipping = b"", True
                else:
                    self._tail = data
                if lines:
                    return lines
                continue
            self._tail = data[cut + 1 :]
            lines.extend(
                line if len(line) <= self.max_line else _OVERLONG for line in data[:cut].split(b"\n")
            )
            return lines
        if self._skipping:
            self._skipping = False
            return [_OVERLONG]
        if self._tail:
            last, self._tail = self._tail, b""
            return [last if len(last) <= self.max_line else _OVERLONG]
        return None


class ListSource:
    """Targets from a text file or stdin.

    ``url`` targets are opened with ``urls`` (a :class:`~._http_body.UrlBodies` made on first use
    from ``url_config`` when not given); ``opener`` opens the other kinds that have content (stdin's
    files and S3 objects).
    """

    def __init__(
        self,
        name: str,
        kinds: frozenset[Kind],
        parse: Callable[[str, str], Target],
        *,
        path: str | None,
        opener: Callable[[Target], AbstractAsyncContextManager[Body]] | None = None,
        closer: Callable[[], Awaitable[None]] | None = None,
        urls: UrlBodies | None = None,
        url_config: UrlsConfig | None = None,
    ) -> None:
        self.name = name
        self.kinds = kinds
        self._parse = parse
        self._path = path
        self._opener = opener
        self._closer = closer
        self._urls = urls
        self._url_config = url_config or UrlsConfig()

    def __repr__(self) -> str:
        return f"<ListSource {self.name} urls={self._urls!r}>"

    def check(self) -> None:
        if self._path is None:
            return
        if os.path.isdir(self._path):
            raise SourceError(f"{self.name}: is a directory (give a file, one entry a line)")
        if not os.path.isfile(self._path):
            raise SourceError(f"{self.name}: no such file")

    async def targets(self) -> AsyncIterator[Target]:
        if self._path is None:
            fd, owned = sys.stdin.fileno(), False
        else:
            try:
                fd, owned = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC), True
            except OSError as exc:
                raise SourceError(f"{self.name}: {exc.strerror}") from None
        reader = _LineReader(fd)
        try:
            while True:
                targets = await anyio.to_thread.run_sync(self._next, reader)
                if targets is None:
                    return
                for target in targets:
                    yield target
        finally:
            if owned:
                os.close(fd)

    def _next(self, reader: _LineReader) -> list[Target] | None:
        """The targets of the lines that have arrived (blocking: runs in a worker thread)."""
        lines = reader.read()
        if lines is None:
            return None
        targets = []
        for raw in lines:
            reader.number += 1
            where = f"{self.name}:{reader.number}"
            if isinstance(raw, _Overlong):
                targets.append(self._overlong(where, reader.max_line))
                continue
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                targets.append(self._undecodable(raw, where))
                continue
            if not line or line.startswith("#"):
                continue
            try:
                target = self._parse(line, where)
                if target.kind is Kind.FILE and target.error is None:
                    target = _missing(target, where)
            except ValueError:
                # A backstop: the parsers turn every fault they know into an error target, but a
                # line no parser foresaw must cost its own line, never the whole stream.
                target = self._unparsable(line, where)
            targets.append(target)
        return targets

    def _unparsable(self, line: str, where: str) -> Target:
        if len(self.kinds) == 1:
            (kind,) = self.kinds
            return Target(kind, line, error=ErrorInfo(f"{where}: cannot be parsed", "bad_target"))
        return _bad_line(where, where, f"cannot be parsed: {_excerpt(line)}")

    def _overlong(self, where: str, most: int) -> Target:
        # the line itself was never held: it is named by its place, in a list as on stdin
        kind = next(iter(self.kinds)) if len(self.kinds) == 1 else Kind.FILE
        return Target(
            kind, where, error=ErrorInfo(f"a line longer than the limit of {most} bytes", "bad_target")
        )

    def _undecodable(self, raw: bytes, where: str) -> Target:
        if len(self.kinds) == 1:
            # a line of a URL or site list is the target itself: spelt as best it can be
            (kind,) = self.kinds
            return Target(
                kind,
                raw.decode("utf-8", "backslashreplace").strip(),
                error=ErrorInfo(f"{where}: not UTF-8", "bad_target"),
            )
        return Target(Kind.FILE, where, error=ErrorInfo("not UTF-8", "bad_target"))

    def open(self, target: Target, /) -> AbstractAsyncContextManager[Body]:
        if target.kind is Kind.URL:
            if self._urls is None:
                # imported on first use: a scan with no URL in it never pays for aiohttp's import
                from ._http_body import UrlBodies

                self._urls = UrlBodies(allow_link_local=self._url_config.allow_link_local)
            return self._urls.open(target)
        if self._opener is None:
            raise TargetError(f"{target.kind} targets have no content to read", code="no_content")
        return self._opener(target)

    def local_path(self, target: Target, /) -> LocalPath | None:
        # A file named on stdin was named on purpose: follow a link there, as cat would.
        return LocalPath(target.target, True) if target.kind is Kind.FILE else None

    async def aclose(self) -> None:
        """Close what the openers opened (HTTP session, S3 connection); idempotent."""
        if self._urls is not None:
            await self._urls.aclose()
        if self._closer is not None:
            await self._closer()


def _missing(target: Target, where: str) -> Target:
    """``target`` with a ``not_found`` error if its path does not exist now (a link is followed), or
    a ``bad_target`` one (naming the line, ``where``) if it is no path at all."""
    try:
        os.stat(target.target)
    except (FileNotFoundError, NotADirectoryError):
        return msgspec.structs.replace(target, error=ErrorInfo("no such file or directory", "not_found"))
    except OSError:
        pass  # unreadable, or too long a name: the engine says which, in its own words
    except ValueError:
        # a NUL byte (JSON can spell one, no path holds one), or a name the file system encoding
        # cannot spell: no engine could open it, and a NUL would split an engine's batch of paths
        why = "holds a NUL byte" if "\0" in target.target else "cannot be encoded as a file name"
        return _placed(
            msgspec.structs.replace(target, error=ErrorInfo(f"not a usable path: it {why}", "bad_target")),
            where,
        )
    return target
