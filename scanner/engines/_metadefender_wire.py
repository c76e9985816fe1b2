"""MetaDefender Cloud v4 on the wire, sans I/O: headers and JSON in, frozen records out.

Pure functions, tested on recorded payloads. Past this module nothing sees a wire dict.

Assumptions where the documents are silent (see ``shared/notes/vendors.md`` section 3):

* The quota 429's body code is not documented; any 429 that is not the throttle (``error.code
  429001``) and that announces ``X-RateLimit-Remaining: 0`` is a spent quota. A 429 that says neither
  is treated as a throttle (back off and retry), the safe reading.
* ``error.messages`` is a list in most errors and a string in the throttle body; both are read.
* No ``Retry-After`` is documented; if one appears it is honoured (seconds or an HTTP date is not
  parsed: seconds only).
* Codes 16-23 come from MetaDefender Core's table; Cloud may never send them. They are mapped
  conservatively (never to clean), and any unknown code is an ``error``, never ``clean``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import ProtocolError
from ..model import ErrorInfo, Finding, Status
from ..ratelimit import RateLimitHint

__all__ = (
    "THROTTLE_CODE",
    "FileReport",
    "HashItem",
    "KeyInfo",
    "VendorError",
    "map_result",
    "parse_apikey",
    "parse_bulk",
    "parse_error",
    "parse_hint",
    "parse_report",
    "parse_reset_in",
    "parse_upload",
)

THROTTLE_CODE = 429001
#: a hash the bulk lookup does not know (``scan_result_i`` 5)
NOT_FOUND = 5
IN_PROGRESS = 255

_CLEAN = frozenset({0, 7})
_INFECTED = frozenset({1, 4, 6, 8})
_SUSPICIOUS = frozenset({2, 17, 18, 20, 21, 22})
_UNSCANNABLE = frozenset({9, 10, 12, 13, 14, 15, 16, 23})
_ERROR = frozenset({3, 11, 19})
_RETRYABLE = frozenset({11, 19})
_NAMES = {
    0: "No Threat Detected",
    1: "Infected",
    2: "Suspicious",
    3: "Failed",
    4: "Cleaned / Deleted",
    6: "Quarantined",
    7: "Skipped Clean",
    8: "Skipped Infected",
    9: "Exceeded Archive Depth",
    10: "Not Scanned",
    11: "Aborted",
    12: "Encrypted",
    13: "Exceeded Archive Size",
    14: "Exceeded Archive File Number",
    15: "Password Protected Document",
    16: "Exceeded Archive Timeout",
    17: "File Type Mismatch",
    18: "Potentially Vulnerable File",
    19: "Canceled",
    20: "Sensitive Data Found",
    21: "Yara Rule Matched",
    22: "Potentially Unwanted Program",
    23: "Unsupported File Type",
    255: "In Progress",
}


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_reset_in(value: str | None) -> float | None:
    """``"3294s"`` (or ``"3294"``) -> 3294.0; anything else -> None."""
    if not value:
        return None
    text = value.strip().lower().removesuffix("s")
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


@dataclass(frozen=True, slots=True)
class VendorError:
    """The ``error`` object of an error body: ``code`` (int) and the joined messages."""

    code: int | None
    message: str


def parse_error(body: bytes) -> VendorError | None:
    """Read ``{"error": {"code": int, "messages": [str] | str}}``; None if the body is not that."""
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("error"), dict):
        return None
    err = payload["error"]
    messages = err.get("messages", err.get("message", ""))
    text = "; ".join(str(m) for m in messages) if isinstance(messages, list) else str(messages)
    return VendorError(_int(err.get("code")), text)


def parse_hint(status: int, headers: Mapping[str, str], body: bytes) -> RateLimitHint:
    """Rate-limit signals of one answer: the ``X-RateLimit-*`` headers and the 429 kind."""
    h = {k.lower(): v for k, v in headers.items()}
    remaining = _int(h.get("x-ratelimit-remaining"))
    retry_after = parse_reset_in(h.get("retry-after"))
    throttled = quota = False
    if status == 429:
        err = parse_error(body)
        if err is not None and err.code == THROTTLE_CODE:
            throttled = True
        elif remaining == 0:
            quota = True
        else:
            throttled = True
    interval = _int(h.get("x-ratelimit-interval"))
    return RateLimitHint(
        family=h.get("x-ratelimit-for") or None,
        limit=_int(h.get("x-ratelimit-limit")),
        remaining=remaining,
        used=_int(h.get("x-ratelimit-used")),
        interval=None if interval is None else float(interval),
        reset_in=parse_reset_in(h.get("x-ratelimit-reset-in")),
        retry_after=retry_after,
        throttled=throttled,
        quota=quota,
    )


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What ``GET /v4/apikey`` says about this key: the upload size limit (bytes), if any."""

    max_upload_bytes: int | None


def parse_apikey(payload: Any) -> KeyInfo:
    if not isinstance(payload, dict):
        raise ProtocolError("apikey info: expected a JSON object")
    mb = payload.get("max_upload_file_size")
    size = _int(mb)
    return KeyInfo(None if size is None or size <= 0 else size * 1024 * 1024)


def parse_upload(payload: Any) -> str:
    """The ``data_id`` of a ``POST /v4/file`` answer."""
    if isinstance(payload, dict) and isinstance(payload.get("data_id"), str) and payload["data_id"]:
        return str(payload["data_id"])
    raise ProtocolError("file upload: answer has no data_id")


@dataclass(frozen=True, slots=True)
class FileReport:
    """A scan report, from ``GET /v4/file/{data_id}`` or from a bulk hash item with scan details."""

    data_id: str | None
    done: bool
    progress: int | None
    result_i: int | None
    result_a: str | None
    threats: tuple[Finding, ...] = ()
    sha256: str | None = None
    size: int | None = None


def _threats(details: Any) -> tuple[Finding, ...]:
    if not isinstance(details, dict):
        return ()
    found = []
    for engine, d in sorted(details.items()):
        if isinstance(d, dict) and isinstance(d.get("threat_found"), str) and d["threat_found"].strip():
            found.append(Finding(name=d["threat_found"].strip(), engine=str(engine)))
    return tuple(found)


def parse_report(payload: Any) -> FileReport:
    """Read a data_id report; ``done`` when ``progress_percentage`` is 100 and the code is not 255."""
    if not isinstance(payload, dict):
        raise ProtocolError("file report: expected a JSON object")
    results = payload.get("scan_results")
    results = results if isinstance(results, dict) else {}
    info = payload.get("file_info")
    info = info if isinstance(info, dict) else {}
    progress = _int(results.get("progress_percentage"))
    code = _int(results.get("scan_all_result_i"))
    a = results.get("scan_all_result_a")
    done = progress == 100 and code is not None and code != IN_PROGRESS
    sha = info.get("sha256")
    return FileReport(
        data_id=payload.get("data_id") if isinstance(payload.get("data_id"), str) else None,
        done=done,
        progress=progress,
        result_i=code,
        result_a=a if isinstance(a, str) else None,
        threats=_threats(results.get("scan_details")),
        sha256=sha.lower() if isinstance(sha, str) else None,
        size=_int(info.get("file_size")),
    )


@dataclass(frozen=True, slots=True)
class HashItem:
    """One entry of a bulk hash answer. ``found`` is false for code 5 or a null data_id."""

    hash: str
    data_id: str | None
    result_i: int | None
    threats: tuple[Finding, ...] = ()

    @property
    def found(self) -> bool:
        return self.data_id is not None and self.result_i not in (None, NOT_FOUND)

    @property
    def done(self) -> bool:
        return self.found and self.result_i != IN_PROGRESS


def parse_bulk(payload: Any, asked: Sequence[str]) -> dict[str, HashItem]:
    """Map every asked hash (lowercase) to its item; hashes the answer omits count as not found."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise ProtocolError("bulk hash lookup: answer has no 'data' list")
    out: dict[str, HashItem] = {}
    for entry in payload["data"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("hash"), str):
            continue
        h = entry["hash"].lower()
        details = entry.get("scan_details")
        if details is None and isinstance(entry.get("scan_results"), dict):
            details = entry["scan_results"].get("scan_details")
        data_id = entry.get("data_id")
        out[h] = HashItem(
            hash=h,
            data_id=data_id if isinstance(data_id, str) and data_id else None,
            result_i=_int(entry.get("scan_result_i", entry.get("scan_all_result_i"))),
            threats=_threats(details),
        )
    for h in asked:
        out.setdefault(h.lower(), HashItem(h.lower(), None, NOT_FOUND))
    return out


def map_result(
    code: int | None, threats: Sequence[Finding] = ()
) -> tuple[Status, tuple[Finding, ...], ErrorInfo | None]:
    """``scan_all_result_i`` -> (status, findings, error), as issue 4 specifies.

    0, 7 clean; 1, 4, 6, 8 infected; 2 suspicious; 9, 10, 12-15 unscannable; 3, 11 error (11
    retryable). Infected and suspicious verdicts always carry at least one finding.
    """
    name = _NAMES.get(code if code is not None else -1, f"code {code}")
    if code in _CLEAN:
        return Status.CLEAN, (), None
    if code in _INFECTED or code in _SUSPICIOUS:
        status = Status.INFECTED if code in _INFECTED else Status.SUSPICIOUS
        findings = tuple(threats) or (Finding(name=name),)
        return status, findings, None
    if code in _UNSCANNABLE:
        return Status.UNSCANNABLE, (), ErrorInfo(name, code=f"md_{code}")
    if code in _ERROR:
        return (
            Status.ERROR,
            (),
            ErrorInfo(f"MetaDefender: {name}", code=f"md_{code}", retryable=code in _RETRYABLE),
        )
    return Status.ERROR, (), ErrorInfo(f"MetaDefender: unexpected result code {code}", code="protocol")
