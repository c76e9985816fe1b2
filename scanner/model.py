"""Targets, verdicts and findings: plain records, no I/O. The one NDJSON encoder lives here.

:class:`Target`, :class:`Outcome` and :class:`Verdict` are made once or more per target on the hot
path, so they are :class:`msgspec.Struct` records, built in C: a Target costs 0.11 us against 0.41 us
for a slotted dataclass and 4 us for a frozen one (the directory walk builds one per file). They are
not tracked by the garbage collector (``gc=False``): none of them can be part of a reference cycle.
Treat them as values all the same: nothing in scanner mutates one after it is built; derive a
changed copy with :func:`msgspec.structs.replace`. The rarely built :class:`ErrorInfo` and
:class:`Finding` stay frozen dataclasses.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import orjson

__all__ = (
    "ErrorInfo",
    "Finding",
    "Kind",
    "Outcome",
    "Status",
    "Target",
    "Verdict",
    "as_written",
    "encode_verdict",
    "error_info",
    "raw_name",
    "utcnow",
)


class Kind(enum.StrEnum):
    """What a target is; decides which engines can take it."""

    FILE = "file"
    S3 = "s3"
    URL = "url"
    SITE = "site"


class Status(enum.StrEnum):
    """The ``verdict`` field of a verdict line."""

    CLEAN = "clean"
    INFECTED = "infected"
    SUSPICIOUS = "suspicious"
    VULNERABLE = "vulnerable"
    UNSCANNABLE = "unscannable"
    SKIPPED = "skipped"
    ERROR = "error"

    @property
    def is_finding(self) -> bool:
        """True for the verdicts that make the run exit 1."""
        return self in _FINDINGS


_FINDINGS = frozenset({Status.INFECTED, Status.SUSPICIOUS, Status.VULNERABLE})


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The ``error`` object of a verdict line: why a target is ``error``, ``skipped`` or ``unscannable``."""

    message: str
    code: str = "error"
    retryable: bool = False
    details: Mapping[str, Any] | None = None


class Target(msgspec.Struct, gc=False):
    """One thing to scan, as a source lists it.

    ``target`` is the identity written to the verdict line: an absolute path, ``s3://bucket/key``, a URL
    or a host. The other fields are what the source learnt for free while listing; they make a content
    version (size+mtime, ETag, version id) without a second request.

    A source that fails on one entry (an unreadable directory, a malformed input line) yields a target
    that carries ``error``: the pipeline writes it as an ``error`` line and never hands it to an engine.
    """

    kind: Kind
    target: str
    size: int | None = None
    mtime: float | None = None
    etag: str | None = None
    version_id: str | None = None
    bucket: str | None = None
    key: str | None = None
    error: ErrorInfo | None = None
    #: a local file's content version from the walk's stat (:func:`scanner._versions.file_version`)
    version: str | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """One threat or vulnerability: ``name`` always; the rest when the engine says."""

    name: str
    engine: str | None = None
    severity: str | None = None
    location: str | None = None


class Outcome(msgspec.Struct, gc=False):
    """What an engine concluded about one target; the pipeline wraps it into a :class:`Verdict`."""

    status: Status
    findings: tuple[Finding, ...] = ()
    error: ErrorInfo | None = None
    sha256: str | None = None
    size: int | None = None
    vendor: Mapping[str, Any] | None = None
    cached: bool = False
    #: requests or scan attempts it took, retries included
    attempts: int = 1
    #: the content version (:func:`scanner._versions.file_version`) of the local file the engine
    #: read, from the ``fstat`` of the descriptor it read: the version of what was scanned when the
    #: listing did not stat the file. Never set for a spooled copy. Not written to the verdict line.
    #: A string made where the file was read (a YARA worker process), not in the run's own process.
    version: str | None = None


class Verdict(msgspec.Struct, gc=False):
    """One line of the report."""

    target: Target
    engine: str
    status: Status
    findings: tuple[Finding, ...] = ()
    error: ErrorInfo | None = None
    sha256: str | None = None
    size: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 1
    vendor: Mapping[str, Any] | None = None
    cached: bool = False
    extra: Mapping[str, Any] = msgspec.field(default_factory=dict)
    #: :attr:`Outcome.version`, for the state store; not written to the verdict line
    version: str | None = None

    @classmethod
    def of(
        cls,
        target: Target,
        engine: str,
        outcome: Outcome,
        *,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
    ) -> Verdict:
        size = outcome.size
        return cls(
            target,
            engine,
            outcome.status,
            outcome.findings,
            outcome.error,
            outcome.sha256,
            size if size is not None else target.size,
            started_at,
            finished_at,
            outcome.attempts,
            outcome.vendor,
            outcome.cached,
            version=outcome.version,
        )


def utcnow() -> datetime:
    return datetime.now(UTC)


def error_info(exc: BaseException, *, code: str | None = None) -> ErrorInfo:
    """The ``error`` object for an exception; scanner errors keep their code and retryability."""
    from .errors import QuotaExhausted, ScannerError

    if isinstance(exc, ScannerError):
        details = None
        if isinstance(exc, QuotaExhausted) and exc.reset_at is not None:
            details = {"reset_at": _rfc3339(exc.reset_at)}
        return ErrorInfo(exc.message, code or exc.code, exc.retryable, details)
    return ErrorInfo(f"{type(exc).__name__}: {exc}", code or "internal")


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def as_written(text: str) -> str:
    """``text`` as a verdict line spells it (the state store keys targets by the same spelling).

    File names on POSIX are bytes; os.fsdecode keeps undecodable bytes as lone surrogates, which
    JSON cannot carry. They are spelled ``\\xNN``, so the line stays valid UTF-8 and the name legible.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def raw_name(text: str) -> bytes | None:
    """The raw bytes of a name that holds undecodable bytes (lone surrogates from ``os.fsdecode``),
    or None for a name that is valid Unicode text (most names; ASCII ones are answered at once).

    :func:`as_written` spells such a name ambiguously (``a\\xff`` is also the spelling of a name that
    holds a backslash, ``x``, ``f``, ``f``); these bytes are not ambiguous."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate no decoder made: keep it, unambiguous all the same
            return text.encode("utf-8", "surrogatepass")
    return None


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return as_written(value)
    if isinstance(value, dict):
        return {as_written(k) if isinstance(k, str) else k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _finding(f: Finding) -> dict[str, Any]:
    d: dict[str, Any] = {"name": f.name}
    if f.engine is not None:
        d["engine"] = f.engine
    if f.severity is not None:
        d["severity"] = f.severity
    if f.location is not None:
        d["location"] = f.location
    return d


def _error(e: ErrorInfo) -> dict[str, Any]:
    d: dict[str, Any] = {"message": e.message, "code": e.code}
    if e.retryable:
        d["retryable"] = True
    if e.details:
        d.update(e.details)
    return d


_MILLISECOND = timedelta(milliseconds=1)


def verdict_dict(v: Verdict) -> dict[str, Any]:
    """The verdict as the JSON object of its line: required fields always, recommended when known.

    Strings are as the records hold them: :func:`encode_verdict` spells undecodable bytes.
    """
    t = v.target
    # Enums go to orjson as themselves (it writes their value), datetimes too: its RFC 3339
    # formatting (UTC as Z) is several times cheaper than isoformat.
    d: dict[str, Any] = {
        "target": t.target,
        "kind": t.kind,
        "engine": v.engine,
        "verdict": v.status,
        "findings": [_finding(f) for f in v.findings] if v.findings else [],
        "error": None if v.error is None else _error(v.error),
    }
    if v.size is not None:
        d["size"] = v.size
    if v.sha256 is not None:
        d["sha256"] = v.sha256
    if t.etag is not None:
        d["etag"] = t.etag
    if t.version_id is not None:
        d["version_id"] = t.version_id
    if v.started_at is not None:
        d["started_at"] = v.started_at
    if v.finished_at is not None:
        d["finished_at"] = v.finished_at
        if v.started_at is not None:
            # exact to the microsecond timedeltas count in, and no round() per line
            d["duration_ms"] = (v.finished_at - v.started_at) / _MILLISECOND
    d["attempts"] = v.attempts
    if v.cached:
        d["cached"] = True
    if v.vendor:
        d["vendor"] = dict(v.vendor)
    if v.extra:
        d.update(v.extra)
    return d


def encode_verdict(v: Verdict) -> bytes:
    """One NDJSON line, ``\n``-terminated, UTF-8. The only place verdicts are encoded."""
    d = verdict_dict(v)
    try:
        return orjson.dumps(d, option=_OPTIONS)
    except orjson.JSONEncodeError:
        # Almost always a file name with undecodable bytes (a lone surrogate); rare enough that
        # checking every string of every line up front would cost more than this second try.
        # Such a name is spelt ambiguously in ``target``; ``path_bytes`` (only on these lines)
        # gives its raw bytes, which the state store keys it by.
        raw = raw_name(v.target.target)
        d = _clean(d)
        if raw is not None:
            d["path_bytes"] = raw.hex()
        return orjson.dumps(d, option=_OPTIONS)


_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_UTC_Z
