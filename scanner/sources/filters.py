"""Include/exclude globs, size and modification-time bounds: one filter for local files and S3 keys.

Globs follow the rsync/s5cmd habit: a pattern without ``/`` matches the base name at any depth
(``*.log``); a pattern with ``/`` matches the path relative to the source root (``cache/*``, where
``*`` crosses ``/``). Exclude wins over include; an excluded directory is not descended into.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ("TargetFilter", "check_glob")


def check_glob(pattern: str) -> str:
    """Return ``pattern``, or raise ValueError if it can never match anything.

    Only what can be decided for sure: an empty pattern (no name or key is empty), and a set whose
    ranges are all reversed (``[z-a]``), which :func:`fnmatch.translate` turns into the regex that
    matches nothing, ``(?!)`` (a literal ``(?!)`` in a pattern is escaped, so it cannot be mistaken).
    An unclosed ``[`` is not an error: fnmatch takes it literally, and a file may be named ``[``.
    """
    if not pattern or not pattern.lstrip("/"):
        raise ValueError("an empty pattern matches nothing")
    if "(?!)" in fnmatch.translate(pattern):
        raise ValueError(f"{pattern!r} can never match: a [...] set in it is empty (a reversed range?)")
    return pattern


def _compile(patterns: tuple[str, ...]) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
    names = [fnmatch.translate(p) for p in patterns if "/" not in p]
    paths = [fnmatch.translate(p.lstrip("/")) for p in patterns if "/" in p]
    return (
        re.compile("|".join(names)) if names else None,
        re.compile("|".join(paths)) if paths else None,
    )


@dataclass(frozen=True, slots=True)
class TargetFilter:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_size: int | None = None
    max_size: int | None = None
    modified_since: datetime | None = None
    modified_before: datetime | None = None
    _inc: tuple[re.Pattern[str] | None, re.Pattern[str] | None] = field(init=False, repr=False, compare=False)
    _exc: tuple[re.Pattern[str] | None, re.Pattern[str] | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_inc", _compile(self.include))
        object.__setattr__(self, "_exc", _compile(self.exclude))

    @property
    def needs_stat(self) -> bool:
        """True when filtering needs each file's size or mtime (costs a stat per file)."""
        return any(
            x is not None for x in (self.min_size, self.max_size, self.modified_since, self.modified_before)
        )

    @staticmethod
    def _hit(compiled: tuple[re.Pattern[str] | None, re.Pattern[str] | None], rel: str) -> bool:
        by_name, by_path = compiled
        if by_name is not None and by_name.match(rel.rpartition("/")[2]):
            return True
        return by_path is not None and by_path.match(rel) is not None

    def excludes_dir(self, rel: str) -> bool:
        return bool(self.exclude) and self._hit(self._exc, rel)

    def matches_name(self, rel: str) -> bool:
        if self.exclude and self._hit(self._exc, rel):
            return False
        return not self.include or self._hit(self._inc, rel)

    def matches_size(self, size: int) -> bool:
        if self.min_size is not None and size < self.min_size:
            return False
        return self.max_size is None or size <= self.max_size

    def matches_time(self, modified: datetime) -> bool:
        if self.modified_since is not None and modified < self.modified_since:
            return False
        return self.modified_before is None or modified < self.modified_before
