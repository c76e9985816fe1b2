"""The MetaDefender simulator's options, importable without aiohttp so ``scanner --help`` stays cheap.

:data:`OPTIONS` is the one table: ``make_app`` takes its names as keyword arguments, ``scanner
simulate metadefender --set NAME=VALUE`` parses values with its types, and ``scanner simulate --help``
and the README list it (a test keeps the README in step).
"""

from __future__ import annotations

from typing import Any

__all__ = ("NOTES", "OPTIONS")

OPTIONS: dict[str, tuple[type, Any, str]] = {
    "api_keys": (str, "test-key", "comma-separated valid API keys"),
    "forbidden_keys": (str, "", "comma-separated keys that get 403"),
    "prevention_limit": (int, 100, "uploads per key per window (prevention_api quota)"),
    "reputation_limit": (int, 4000, "found hashes per key per window (reputation_api quota)"),
    "interval": (float, 86400.0, "quota window in seconds, from the family's first request (a day)"),
    "throttle_limit": (int, 0, "requests per throttle_window on uploads and bulk lookups (0: off)"),
    "throttle_window": (float, 60.0, "throttle window in seconds"),
    "scan_seconds": (float, 0.0, "how long a new upload stays in progress (code 255)"),
    "latency": (float, 0.0, "seconds added to every answer"),
    "max_upload_mb": (int, 140, "max_upload_file_size of every key, in MB (larger: 400144)"),
    "bad_key_limit": (int, 3, "bad-key requests from one IP before it is blocked"),
    "block_seconds": (float, 3600.0, "how long a blocked IP gets 403"),
    "fail_uploads": (int, 0, "answer the first N uploads with HTTP 500 (fault injection)"),
    "drop_uploads": (int, 0, "accept the first N uploads, then drop the connection unanswered"),
}

NOTES = (
    "Daily quota: each key gets prevention_limit uploads and reputation_limit found hashes per "
    "window of `interval` seconds (86400, a day, by default) that starts at the family's first "
    "request, as MetaDefender's daily limits do; a spent quota answers 429 with "
    "X-RateLimit-Remaining: 0 until the window ends. Polls, apikey queries and misses are free. "
    "Content decides the verdict: the EICAR string is infected (1), a marker MD-RESULT-<n> gives "
    "code n, anything else is clean (0)."
)
