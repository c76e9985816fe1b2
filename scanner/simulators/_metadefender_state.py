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
from typing import Any

import orjson
from aiohttp import web

__all__ = (
    "EICAR",
    "PREVENTION",
    "REPUTATION",
    "STATE",
    "SimState",
    "error",
    "json_response",
    "report_json",
    "verdict_of",
)

# assembled, so no file in a checkout holds the whole test string (scanners on dev machines flag it)
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-" + b"ANTIVIRUS-TEST-FILE!$H+H*"
_MARKER = re.compile(rb"MD-RESULT-(\d{1,3})")


PREVENTION, REPUTATION = "prevention_api", "reputation_api"


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

    def add(self, content_sha256: str, code: int, threat: str | None, size: int, name: str = "") -> _Report:
        """Register a scanned file (also used by tests to preload known hashes)."""
        data_id = f"sim{next(self.ids):08d}{content_sha256[:12]}"
        rep = _Report(
            data_id,
            content_sha256,
            sha1="",
            md5="",
            size=size,
            code=code,
            threat=threat,
            ready_at=self.clock() + self.options["scan_seconds"],
            name=name,
        )
        self.reports[data_id] = rep
        self.by_hash[content_sha256] = data_id
        return rep

    def preload(self, content: bytes, name: str = "") -> _Report:
        """Make ``content`` known to hash lookups, as if someone had uploaded it before."""
        code, threat = verdict_of([content])
        rep = self.add(hashlib.sha256(content).hexdigest(), code, threat, len(content), name)
        rep.ready_at = 0.0
        return rep


STATE = web.AppKey("metadefender_sim", SimState)


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


def report_json(rep: _Report, now: float) -> dict[str, Any]:
    if now < rep.ready_at:
        return {
            "data_id": rep.data_id,
            "status": "inqueue",
            "in_queue": 1,
            "scan_results": {
                "progress_percentage": 50,
                "scan_all_result_i": 255,
                "scan_all_result_a": "In Progress",
            },
        }
    details = {
        "SimAV": {
            "scan_time": 1,
            "def_time": "2026-01-01T00:00:00.000Z",
            "scan_result_i": rep.code,
            "threat_found": rep.threat or "",
        },
        "SimAV2": {
            "scan_time": 1,
            "def_time": "2026-01-01T00:00:00.000Z",
            "scan_result_i": 0,
            "threat_found": "",
        },
    }
    return {
        "data_id": rep.data_id,
        "file_id": rep.data_id,
        "scan_result_history_length": 1,
        "scan_results": {
            "scan_details": details,
            "scan_all_result_i": rep.code,
            "scan_all_result_a": "Infected"
            if rep.code == 1
            else "No Threat Detected"
            if rep.code == 0
            else f"code {rep.code}",
            "progress_percentage": 100,
            "total_avs": 2,
            "total_detected_avs": 1 if rep.threat else 0,
        },
        "file_info": {"sha256": rep.sha256.upper(), "file_size": rep.size, "display_name": rep.name},
        "process_info": {"progress_percentage": 100, "result": "Blocked" if rep.threat else "Allowed"},
    }
