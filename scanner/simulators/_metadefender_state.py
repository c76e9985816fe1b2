"""The MetaDefender simulator's state: per-key windows, scanned files, counters, and wire shapes."""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

__all__ = (
    "EICAR",
    "PREVENTION",
    "REPUTATION",
    "STATE",
    "Digester",
    "Digests",
    "SimState",
    "error",
    "json_response",
    "report_json",
    "verdict_of",
)

# assembled, so no file in a checkout holds the whole test string (scanners on dev machines flag it)
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-" + b"ANTIVIRUS-TEST-FILE!$H+H*"
_MARKER = re.compile(rb"MD-RESULT-(\d{1,3})")
#: bytes kept from one chunk to the next, so a marker split across chunks is still found
_TAIL = 96


PREVENTION, REPUTATION = "prevention_api", "reputation_api"
IN_PROGRESS = 255


@dataclass(slots=True)
class _Window:
    start: float
    used: int = 0


@dataclass(slots=True)
class _Report:
    data_id: str
    sha256: str
    sha1: str
    md5: str
    size: int
    code: int
    threat: str | None
    ready_at: float
    name: str
    #: wall-clock upload time, RFC 3339 (reports show it as start_time and upload_timestamp)
    received: str
    #: the state clock's reading at upload (total_time counts from it)
    created: float


@dataclass(slots=True)
class SimState:
    """Live state and counters; tests read them through ``app[STATE]``."""

    options: dict[str, Any]
    clock: Callable[[], float] = time.monotonic
    windows: dict[tuple[str, str], _Window] = field(default_factory=dict)
    #: used units of each closed window, per family (for quota-efficiency benchmarks)
    closed: dict[str, list[int]] = field(default_factory=dict)
    throttle: dict[str, deque[float]] = field(default_factory=dict)
    bad_keys: dict[str, int] = field(default_factory=dict)
    blocked_until: dict[str, float] = field(default_factory=dict)
    reports: dict[str, _Report] = field(default_factory=dict)
    by_hash: dict[str, str] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=itertools.count)
    requests: int = 0
    uploads: int = 0
    upload_bytes: int = 0
    hash_requests: int = 0
    hashes_looked_up: int = 0
    polls: int = 0
    apikey_requests: int = 0
    failed_uploads: int = 0
    dropped_uploads: int = 0
    unauthorized: int = 0
    forbidden: int = 0
    quota_429: int = 0
    throttle_429: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    seen_keys: set[str] = field(default_factory=set)

    def window(self, key: str, family: str) -> _Window:
        now = self.clock()
        w = self.windows.get((key, family))
        if w is None or now >= w.start + self.options["interval"]:
            if w is not None:
                self.closed.setdefault(family, []).append(w.used)
            w = self.windows[(key, family)] = _Window(now)
        return w

    def limit(self, family: str) -> int:
        return int(self.options["prevention_limit" if family == PREVENTION else "reputation_limit"])

    def headers(self, key: str, family: str) -> dict[str, str]:
        w = self.window(key, family)
        limit = self.limit(family)
        reset = max(0, math.ceil(w.start + self.options["interval"] - self.clock()))
        return {
            "X-Authenticated": "by apikey",
            "X-RateLimit-For": family,
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - w.used)),
            "X-RateLimit-Used": str(w.used),
            "X-RateLimit-Interval": str(int(self.options["interval"])),
            "X-RateLimit-Reset-In": f"{reset}s",
        }

    def peek(self, key: str, family: str) -> int:
        """Units used in the key's current window of ``family``, without opening one."""
        w = self.windows.get((key, family))
        return w.used if w is not None and self.clock() < w.start + self.options["interval"] else 0

    def add(self, digests: Digests, code: int, threat: str | None, name: str = "") -> _Report:
        """Register a scanned file under its MD5, SHA-1 and SHA-256 (tests preload known hashes so)."""
        data_id = f"sim{next(self.ids):08d}{digests.sha256[:12]}"
        now = self.clock()
        rep = _Report(
            data_id,
            digests.sha256,
            digests.sha1,
            digests.md5,
            size=digests.size,
            code=code,
            threat=threat,
            ready_at=now + self.options["scan_seconds"],
            name=name,
            received=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            created=now,
        )
        self.reports[data_id] = rep
        # one index for all three: their lengths (32, 40, 64 hex digits) never collide
        for h in (digests.md5, digests.sha1, digests.sha256):
            self.by_hash[h] = data_id
        return rep

    def preload(self, content: bytes, name: str = "") -> _Report:
        """Make ``content`` known to hash lookups, as if someone had uploaded it before."""
        code, threat = verdict_of([content])
        digester = Digester()
        digester.update(content)
        rep = self.add(digester.digests(), code, threat, name)
        rep.ready_at = 0.0
        return rep


STATE = web.AppKey("metadefender_sim", SimState)


@dataclass(frozen=True, slots=True)
class Digests:
    """A file's size and hashes, lowercase hex (the index's spelling; answers show them uppercase)."""

    size: int
    md5: str
    sha1: str
    sha256: str


class Digester:
    """Hashes and sizes a file as its bytes stream past, and finds its verdict across chunk edges."""

    __slots__ = ("_md5", "_sha1", "_sha256", "code", "size", "tail", "threat")

    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha1 = hashlib.sha1(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self.size, self.tail, self.code = 0, b"", 0
        self.threat: str | None = None

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        for h in (self._md5, self._sha1, self._sha256):
            h.update(chunk)
        code, threat = verdict_of([self.tail, chunk])
        if code and not self.code:
            self.code, self.threat = code, threat
        self.tail = (self.tail + chunk)[-_TAIL:]

    def digests(self) -> Digests:
        return Digests(self.size, self._md5.hexdigest(), self._sha1.hexdigest(), self._sha256.hexdigest())


def verdict_of(chunks: list[bytes]) -> tuple[int, str | None]:
    blob = b"".join(chunks)
    if EICAR in blob:
        return 1, "EICAR-Test-File (not a virus)"
    m = _MARKER.search(blob)
    if m:
        code = int(m.group(1))
        return code, f"Sim.Threat.{code}" if code in (1, 2, 4, 6, 8) else None
    return 0, None


def error(status: int, code: int, messages: Any, reason: str | None = None, **headers: str) -> web.Response:
    body = orjson.dumps({"error": {"code": code, "messages": messages}})
    return web.Response(
        status=status, reason=reason, body=body, content_type="application/json", headers=headers
    )


def json_response(payload: Any, headers: dict[str, str]) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json", headers=headers)


#: scan_all_result_a for the codes the simulator gives (Core's strings; Cloud's may differ, s.3.4)
_RESULT_A = {
    0: "No Threat Detected",
    1: "Infected",
    2: "Suspicious",
    3: "Failed",
    4: "Cleaned / Deleted",
    7: "Scan Skipped - Whitelisted",
    8: "Scan Skipped - Blacklisted",
    9: "Exceeded Archive Depth",
    10: "Not Scanned",
    11: "Aborted",
    12: "Encrypted Archive",
    13: "Exceeded Archive Size",
    14: "Exceeded Archive File Number",
    15: "Password Protected Document",
    IN_PROGRESS: "In Progress",
}


def report_json(rep: _Report, now: float) -> dict[str, Any]:
    """The data_id / hash report, with every field OPSWAT's SDK models require of a found hash.

    While in progress: ``status: inqueue``, code 255 and progress 50, no engine results yet.
    """
    done = now >= rep.ready_at
    code = rep.code if done else IN_PROGRESS
    details = (
        {
            "SimAV": _engine(rep.code, rep.threat),
            "SimAV2": _engine(0, None),
        }
        if done
        else {}
    )
    results: dict[str, Any] = {
        "data_id": rep.data_id,
        "scan_details": details,
        "scan_all_result_i": code,
        "scan_all_result_a": _RESULT_A.get(code, f"code {code}"),
        "progress_percentage": 100 if done else 50,
        "start_time": rep.received,
        "total_time": round(1000 * max(0.0, min(now, rep.ready_at) - rep.created)),
        "total_avs": 2,
        "total_detected_avs": 1 if done and rep.threat else 0,
    }
    name = rep.name or rep.sha256
    payload: dict[str, Any] = {
        "data_id": rep.data_id,
        "file_id": rep.data_id,
        "scan_result_history_length": 1,
        "scan_results": results,
        "file_info": {
            "file_size": rep.size,
            "upload_timestamp": rep.received,
            "md5": rep.md5.upper(),
            "sha1": rep.sha1.upper(),
            "sha256": rep.sha256.upper(),
            "file_type_category": "O",
            "file_type_description": "Simulated file",
            "file_type_extension": name.rpartition(".")[2].lower() if "." in name else "",
            "display_name": rep.name,
        },
        "process_info": {
            "progress_percentage": 100 if done else 50,
            "result": ("Blocked" if rep.threat else "Allowed") if done else "",
            "blocked_reason": "Infected" if done and rep.threat else "",
            "file_type_skipped_scan": False,
            "profile": "multiscan",
        },
        "share_file": 1,
        "private_processing": 0,
        "rest_version": "4",
        "additional_info": [],
        "stored": True,
    }
    if not done:
        payload.update(status="inqueue", in_queue=1)
    return payload


def _engine(code: int, threat: str | None) -> dict[str, Any]:
    return {
        "scan_time": 1,
        "def_time": "2026-01-01T00:00:00.000Z",
        "scan_result_i": code,
        "threat_found": threat or "",
    }
