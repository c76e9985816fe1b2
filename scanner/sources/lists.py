"""Targets read from lists: ``urls:FILE`` (one URL a line), ``sites:FILE`` (one host a line) and ``-``
(NDJSON on stdin, each object with the ``kind`` and ``target`` fields of a verdict line).

Lines are read lazily in a worker thread, as many as have arrived per hop, so a list of a billion
lines costs no more memory than one of ten, and targets piped in slowly are scanned as they come.
Blank lines and ``#`` comments are ignored. A malformed line in a URL or site list becomes an
``error`` line for that entry; a malformed NDJSON line on stdin is a usage error
(:class:`~scanner.errors.SourceError`) naming the line, because there is no target to attach it to.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import urlsplit

import anyio
import orjson

from ..errors import SourceError, TargetError
from ..model import ErrorInfo, Kind, Target
from ._base import Body, LocalPath

__all__ = ("ListSource", "parse_ndjson_target", "parse_site", "parse_url")

# RFC 1123 host names and IPv4, optional port; IDNs must come already in their xn-- form.
_HOST = re.compile(
    r"^(?=.{1,253}(:|$))([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(:[0-9]{1,5})?$"
)


def parse_url(line: str) -> Target:
    parts = urlsplit(line)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Target(Kind.URL, line, error=ErrorInfo("not an http(s) URL", "bad_target"))
    return Target(Kind.URL, line)


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
    """One stdin line -> Target; raises SourceError naming ``where`` when the line is not usable."""
    try:
        obj: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise SourceError(f"{where}: not valid JSON") from None
    if not isinstance(obj, dict):
        raise SourceError(f"{where}: expected a JSON object with 'kind' and 'target'")
    kind, target = obj.get("kind"), obj.get("target")
    if not isinstance(target, str) or not target:
        raise SourceError(f"{where}: 'target' must be a non-empty string")
    try:
        k = Kind(str(kind))
    except ValueError:
        raise SourceError(f"{where}: 'kind' must be one of file, s3, url, site") from None
    if k is Kind.FILE:
        return Target(Kind.FILE, os.path.abspath(target))
    if k is Kind.URL:
        return parse_url(target)
    if k is Kind.SITE:
        return parse_site(target)
    if not target.startswith("s3://") or "/" not in target[5:]:
        raise SourceError(f"{where}: an s3 target must look like s3://bucket/key")
    bucket, _, key = target[5:].partition("/")
    return Target(Kind.S3, target, bucket=bucket, key=key, version_id=_str_or_none(obj.get("version_id")))


def _str_or_none(v: object) -> str | None:
    return v if isinstance(v, str) and v else None


class _LineReader:
    """Whole lines from a file descriptor, as soon as they arrive.

    Each :meth:`read` blocks (in a worker thread) only until *some* bytes are available, then returns
    every complete line it has, so a slow producer on a pipe is served line by line while a big file
    is served 64 KiB at a time. Returns None at end of input.
    """

    _READ = 1 << 16
    _MAX_LINE = 1 << 20

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._tail = b""
        self._eof = False

    def read(self) -> list[bytes] | None:
        while not self._eof:
            chunk = os.read(self._fd, self._READ)
            if not chunk:
                self._eof = True
                break
            data = self._tail + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                if len(data) > self._MAX_LINE:
                    raise SourceError(f"a line longer than {self._MAX_LINE} bytes")
                self._tail = data
                continue
            self._tail = data[cut + 1 :]
            return data[:cut].split(b"\n")
        if self._tail:
            last, self._tail = self._tail, b""
            return [last]
        return None


class ListSource:
    """Targets from a text file or stdin. ``opener`` opens content for kinds that have it."""

    def __init__(
        self,
        name: str,
        kinds: frozenset[Kind],
        parse: Callable[[str, str], Target],
        *,
        path: str | None,
        opener: Callable[[Target], AbstractAsyncContextManager[Body]] | None = None,
        closer: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.kinds = kinds
        self._parse = parse
        self._path = path
        self._opener = opener
        self._closer = closer

    def __repr__(self) -> str:
        return f"<ListSource {self.name}>"

    def check(self) -> None:
        if self._path is not None and not os.path.isfile(self._path):
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
        number = 0
        try:
            while True:
                lines = await anyio.to_thread.run_sync(reader.read)
                if lines is None:
                    return
                for raw in lines:
                    number += 1
                    try:
                        line = raw.decode("utf-8").strip()
                    except UnicodeDecodeError:
                        raise SourceError(f"{self.name} line {number}: not UTF-8") from None
                    if line and not line.startswith("#"):
                        yield self._parse(line, f"{self.name} line {number}")
        finally:
            if owned:
                os.close(fd)

    def open(self, target: Target, /) -> AbstractAsyncContextManager[Body]:
        if self._opener is None:
            raise TargetError(f"{target.kind} targets have no content to read", code="no_content")
        return self._opener(target)

    def local_path(self, target: Target, /) -> LocalPath | None:
        # A file named on stdin was named on purpose: follow a link there, as cat would.
        return LocalPath(target.target, True) if target.kind is Kind.FILE else None

    async def aclose(self) -> None:
        """Close what the opener opened (the S3 connection of stdin targets); idempotent."""
        if self._closer is not None:
            await self._closer()
