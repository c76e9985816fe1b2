"""The exception tree, and how to find ours inside an exception group.

Two families matter to the pipeline (rule 8 of the house style):

* per-target failures (:class:`TargetError` and the retryable vendor errors) become a verdict line
  with ``verdict = "error"``; the run goes on;
* per-run failures (:class:`ConfigError`, :class:`SourceError`, :class:`SinkError`, and any error whose
  ``halts_run`` is true) stop the run with exit status 2.

Every adapter translates third-party exceptions (aiohttp, botocore, OSError) into this tree at its
seam, so nothing past an adapter matches on a foreign type or on message strings.
"""

from __future__ import annotations

from datetime import datetime

__all__ = (
    "AuthError",
    "ConfigError",
    "EngineError",
    "ProtocolError",
    "QuotaExhausted",
    "ScannerError",
    "ServerError",
    "SinkError",
    "SourceError",
    "StateError",
    "TargetError",
    "ThrottledError",
    "TransportError",
    "UsageError",
    "ours",
)


class ScannerError(Exception):
    """Base of every error the scanner raises on purpose.

    ``code`` is a stable machine-readable word that lands in ``error.code`` of a verdict line and in
    the run summary's "errors by cause" table.
    """

    code: str = "error"
    retryable: bool = False
    halts_run: bool = False
    #: tries it took to fail, retries included (an engine sets it; its verdict line's ``attempts``)
    attempts: int = 1

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


# Run-level errors: the run cannot start or cannot go on.


class UsageError(ScannerError):
    """The command line itself is wrong (exit 2, one line)."""

    code = "usage"
    halts_run = True


class ConfigError(ScannerError):
    """The config file is unreadable or invalid; the message names the key."""

    code = "config"
    halts_run = True


class SourceError(ScannerError):
    """A source cannot be listed at all (missing directory, missing bucket, no permission to list)."""

    code = "source"
    halts_run = True


class SinkError(ScannerError):
    """Verdicts cannot be written (disk full, closed stdout, failed upload)."""

    code = "sink"
    halts_run = True


class StateError(ScannerError):
    """The state store cannot be read or written (full disk, locked by another process, damaged)."""

    code = "state"
    halts_run = True


# Per-target errors: one verdict line with verdict = "error".


class TargetError(ScannerError):
    """One target cannot be read or scanned (vanished, unreadable, changed while read)."""

    code = "target"


# Engine errors, raised by the shared HTTP layer and by adapters.


class EngineError(ScannerError):
    """Base for failures talking to a scanning engine."""

    code = "engine"


class AuthError(EngineError):
    """The engine refused our credentials (401/403). Never retried: vendors block IPs for it."""

    code = "auth"
    halts_run = True


class QuotaExhausted(EngineError):
    """The vendor quota is spent and resets later than the run is willing to wait.

    The pipeline answers it by writing ``skipped`` lines with ``error.code = "quota_exhausted"`` for
    every target not yet scanned, and the run exits 2 so a later run picks them up.
    """

    code = "quota_exhausted"
    halts_run = True

    def __init__(self, message: str, *, reset_at: datetime | None = None) -> None:
        super().__init__(message)
        self.reset_at = reset_at


class ThrottledError(EngineError):
    """A throttling answer (429 without quota exhaustion, 503 SlowDown) that outlived its retries."""

    code = "throttled"
    retryable = True


class ServerError(EngineError):
    """The engine answered 5xx, or an error status we do not otherwise understand."""

    code = "server"
    retryable = True


class TransportError(EngineError):
    """Connect failure, reset, or timeout while talking to the engine."""

    code = "transport"
    retryable = True


class ProtocolError(EngineError):
    """The engine answered something we cannot parse (malformed JSON, missing fields)."""

    code = "protocol"


def ours(exc: BaseException) -> ScannerError | None:
    """``exc`` itself if it is one of ours, or the first of an exception group whose every leaf is.

    A task group wraps what its tasks raise; when each of them failed for a reason of ours (N worker
    processes that cannot start), that reason is what the user should read, not "unhandled errors
    in a TaskGroup"."""
    if isinstance(exc, ScannerError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(ScannerError)
        if matched is not None and rest is None:
            first: BaseException = matched
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            assert isinstance(first, ScannerError)
            return first
    return None
