"""Sources: turn a SOURCE argument into a :class:`Source`.

``DIR`` or ``FILE`` (local), ``s3://bucket[/prefix]``, ``inventory:MANIFEST``, ``urls:FILE``,
``sites:FILE`` and ``-`` (NDJSON targets on stdin). Modules for S3 are imported only when an S3
source is named, so a local scan never pays for aioboto3's import.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from .._content import open_local
from ..config import UrlsConfig
from ..errors import SourceError, TargetError
from ..model import Kind, Target
from ._base import Body, Source
from .filters import TargetFilter, check_glob
from .lists import ListSource, parse_ndjson_target, parse_site, parse_url
from .local import LocalSource

__all__ = ("Body", "Source", "SourceOptions", "TargetFilter", "build", "check_glob")


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """What the command line and config say about listing, shared by every source."""

    filters: TargetFilter = field(default_factory=TargetFilter)
    follow_symlinks: bool = False
    all_versions: bool = False
    #: learn size and mtime of every local file while walking (a stat each), for --skip-unchanged
    stat_files: bool = False
    #: the config file's ``[s3]`` table (endpoint_url, region, ...)
    s3: Mapping[str, Any] = field(default_factory=dict)
    #: the config file's ``[urls]`` table (how url targets are fetched)
    urls: UrlsConfig = field(default_factory=UrlsConfig)
    #: paths never listed (relative ones from the working directory): the run's own report and state
    #: files, which may not exist yet
    avoid: frozenset[str] = frozenset()


def build(spec: str, options: SourceOptions) -> Source:
    """Parse one SOURCE argument. Raises SourceError for a form it cannot use."""
    if not spec:
        # an unset variable in `scanner scan "$DIR"` must not quietly scan the working directory
        raise SourceError("an empty SOURCE: name a directory or file ('.' for this one), s3://..., or -")
    if spec == "-":
        router = ContentRouter(options)
        return ListSource(
            "stdin",
            frozenset(Kind),
            parse_ndjson_target,
            path=None,
            opener=router.open,
            closer=router.aclose,
            url_config=options.urls,
        )
    if spec.startswith("urls:"):
        return ListSource(
            "urls:" + spec[5:],
            frozenset({Kind.URL}),
            lambda s, _: parse_url(s),
            path=spec[5:],
            url_config=options.urls,
        )
    if spec.startswith("sites:"):
        return ListSource(
            "sites:" + spec[6:], frozenset({Kind.SITE}), lambda s, _: parse_site(s), path=spec[6:]
        )
    if spec.startswith("s3://"):
        return _s3().from_uri(spec, options)  # type: ignore[no-any-return]
    if spec.startswith("inventory:"):
        return importlib.import_module("scanner.sources.inventory").from_spec(spec[10:], options)  # type: ignore[no-any-return]
    if "://" in spec:
        raise SourceError(f"{spec}: unsupported source (use a path, s3://, inventory:, urls:, sites: or -)")
    return LocalSource(
        spec,
        filters=options.filters,
        follow_symlinks=options.follow_symlinks,
        stat_files=options.stat_files,
        avoid=options.avoid,
    )


def _s3() -> Any:
    return importlib.import_module("scanner.sources.s3")


class ContentRouter:
    """Opens content for targets that arrive without a listing source (NDJSON on stdin)."""

    def __init__(self, options: SourceOptions) -> None:
        self._options = options
        self._s3: Any = None

    def open(self, target: Target) -> AbstractAsyncContextManager[Body]:
        if target.kind is Kind.FILE:
            return open_local(target.target, follow_symlinks=True)
        if target.kind is Kind.S3:
            if self._s3 is None:
                self._s3 = _s3().objects(self._options)
            return self._s3.open(target)  # type: ignore[no-any-return]
        raise TargetError(f"{target.kind} targets have no content to read", code="no_content")

    async def aclose(self) -> None:
        """Close the S3 connection, if an S3 target was ever opened; idempotent."""
        opener, self._s3 = self._s3, None
        if opener is not None:
            await opener.aclose()
