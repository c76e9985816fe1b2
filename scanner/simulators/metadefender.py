"""A MetaDefender Cloud v4 simulator, faithful to the public documents (``shared/notes/vendors.md`` s.3).

What it does, per key:

* ``apikey`` header on every request. An unknown key gets ``401 Invalid API key`` with an error body;
  after ``bad_key_limit`` bad-key requests from one IP, that IP gets ``403`` on everything for
  ``block_seconds``. Keys in ``forbidden_keys`` get ``403``.
* Families with windows that start at their first request and last ``interval`` seconds:
  ``prevention_api`` (uploads, 1 unit each), ``reputation_api`` (hash lookups, 1 unit per *found*
  hash). ``GET /v4/file/{data_id}`` and ``GET /v4/apikey`` are free (an assumption: the documents are
  silent) and report ``prevention_api`` and ``reputation_api`` respectively. Every authenticated
  answer carries ``X-RateLimit-For/Limit/Remaining/Used/Interval/Reset-In`` (Reset-In rounded up).
* A spent quota answers ``429`` with ``Remaining: 0`` and an error body (code 429000, assumed); the
  throttle (``throttle_limit`` requests per ``throttle_window`` seconds on uploads and bulk lookups)
  answers ``429`` with the documented ``429001`` body, whose ``messages`` is a string.
* ``POST /v4/file`` streams the body (octet-stream), enforces ``max_upload_mb`` (400 with code
  400144), decides the verdict from content: the EICAR string is infected (code 1), a marker
  ``MD-RESULT-<n>`` gives code ``n``; anything else is clean. Reports stay in progress (code 255,
  progress < 100) for ``scan_seconds``.
* ``POST /v4/hash``: 1..1000 hashes, the documented 400 texts otherwise; misses are code 5 with a null
  data_id and ``total_detected_avs: -1``; ``includescandetails: 1`` adds ``scan_details``.
* ``GET /_sim/stats`` (simulator only, no key) returns the counters as JSON.
* ``latency`` seconds are added to every answer; ``fail_uploads`` answers the first uploads with 500;
  ``drop_uploads`` accepts the first uploads and drops the connection without an answer.
  :class:`SimState` counts what tests and benchmarks assert on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import anyio
import orjson
from aiohttp import web

from ._metadefender_options import OPTIONS
from ._metadefender_state import (
    PREVENTION,
    REPUTATION,
    STATE,
    SimState,
    error,
    json_response,
    report_json,
)
from ._metadefender_upload import BadBody, TooLarge, receive

__all__ = ("OPTIONS", "STATE", "SimState", "make_app")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(**options: Any) -> web.Application:
    """Build the simulator; ``options`` override :data:`OPTIONS` defaults (unknown names raise)."""
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ValueError(f"unknown simulator option(s): {', '.join(sorted(unknown))}")
    opts = {name: options.get(name, default) for name, (_, default, _h) in OPTIONS.items()}
    state = SimState(opts)
    keys = {k for k in str(opts["api_keys"]).split(",") if k}
    forbidden = {k for k in str(opts["forbidden_keys"]).split(",") if k}

    @web.middleware
    async def gatekeeper(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/_sim/stats":
            return await handler(request)
        state.requests += 1
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            if opts["latency"]:
                await anyio.sleep(opts["latency"])
            ip = request.remote or "?"
            now = state.clock()
            if state.blocked_until.get(ip, 0.0) > now:
                state.forbidden += 1
                return error(403, 403004, ["Your IP is blocked because of abuse"], "Forbidden")
            key = request.headers.get("apikey", "")
            state.seen_keys.add(key)
            if key in forbidden:
                state.forbidden += 1
                return error(403, 403001, ["Access denied for this apikey"], "Forbidden")
            if key not in keys:
                state.unauthorized += 1
                state.bad_keys[ip] = state.bad_keys.get(ip, 0) + 1
                if state.bad_keys[ip] >= opts["bad_key_limit"]:
                    state.blocked_until[ip] = now + opts["block_seconds"]
                return error(401, 401006, ["Invalid apikey"], "Invalid API key")
            return await handler(request)
        finally:
            state.in_flight -= 1

    def throttled(key: str) -> bool:
        if opts["throttle_limit"] <= 0:
            return False
        now = state.clock()
        q = state.throttle.setdefault(key, deque())
        while q and q[0] <= now - opts["throttle_window"]:
            q.popleft()
        if len(q) >= opts["throttle_limit"]:
            return True
        q.append(now)
        return False

    def too_many(key: str, family: str, msg: str) -> web.Response:
        state.throttle_429 += 1
        body = {
            "name": "ClientError",
            "messages": msg,
            "code": 429001,
            "status": 429,
        }
        return web.Response(
            status=429,
            body=orjson.dumps({"error": body}),
            content_type="application/json",
            headers=state.headers(key, family),
        )

    def quota(key: str, family: str) -> web.Response:
        state.quota_429 += 1
        h = state.headers(key, family)
        secs = int(h["X-RateLimit-Reset-In"][:-1])
        text = (
            "Rate limit exceeded, retry after the limit is reset. The limit will be reset in "
            f"{secs // 3600} hours {secs % 3600 // 60} minutes {secs % 60} seconds."
        )
        return error(429, 429000, [text], "Too Many Requests", **h)

    async def apikey(request: web.Request) -> web.Response:
        state.apikey_requests += 1
        key = request.headers["apikey"]
        interval = float(opts["interval"])
        return json_response(
            {
                "max_upload_file_size": opts["max_upload_mb"],
                "max_file_download": opts["max_upload_mb"],
                "max_archive_file_size": opts["max_upload_mb"],
                "max_archive_file_number": 1000,
                "max_archive_file_depth": 5,
                "limit_prevention": opts["prevention_limit"],
                "limit_reputation": opts["reputation_limit"],
                "throttling_limit": opts["throttle_limit"],
                "time_interval": "daily" if interval == 86400 else f"{interval:g}s",
                "qos_scan": "normal",
                "paid_user": 0,
                "nickname": "simulator",
            },
            state.headers(key, REPUTATION),
        )

    async def limits(request: web.Request, *, remaining: bool) -> web.Response:
        """``/v4/apikey/limits``: units used per family; ``.../limits/status``: units left. Free."""
        state.apikey_requests += 1
        key = request.headers["apikey"]
        body: dict[str, int] = {}
        for family in (PREVENTION, REPUTATION):
            used = state.peek(key, family)
            body[family] = max(0, state.limit(family) - used) if remaining else used
        if remaining:
            body["throttling_limit"] = opts["throttle_limit"]
        return json_response(body, state.headers(key, REPUTATION))

    async def upload(request: web.Request) -> web.Response:
        key = request.headers["apikey"]
        w = state.window(key, PREVENTION)
        if state.failed_uploads < opts["fail_uploads"]:
            state.failed_uploads += 1
            return error(500, 500000, ["Internal server error"], **state.headers(key, PREVENTION))
        if throttled(key):
            return too_many(
                key, PREVENTION, "Your request has been throttled, maximum requests per minute exceeded"
            )
        if w.used >= state.limit(PREVENTION):
            return quota(key, PREVENTION)
        try:
            got = await receive(request, int(opts["max_upload_mb"]) * 1024 * 1024)
        except TooLarge:
            return error(400, 400144, ["file size limit exceeded"], **state.headers(key, PREVENTION))
        except BadBody as exc:  # code assumed: the documents show none for a malformed upload
            return error(400, 400140, [str(exc)], **state.headers(key, PREVENTION))
        d = got.digester
        w.used += 1
        state.uploads += 1
        state.upload_bytes += d.size
        # the filename header wins (documented); a multipart part's own filename is the fallback
        name = unquote(request.headers.get("filename", "")) or got.part_filename or ""
        rep = state.add(d.digests(), d.code, d.threat, name)
        if state.dropped_uploads < opts["drop_uploads"]:
            # accepted and charged, but the answer is lost: the client cannot know it landed
            state.dropped_uploads += 1
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        return json_response(
            {
                "data_id": rep.data_id,
                "status": "inqueue",
                "in_queue": 1,
                "queue_priority": "normal",
                "sha1": rep.sha1.upper(),
                "sha256": rep.sha256.upper(),
            },
            state.headers(key, PREVENTION),
        )

    async def report(request: web.Request, data_id: str) -> web.Response:
        state.polls += 1
        key = request.headers["apikey"]
        rep = state.reports.get(data_id)
        if rep is None:
            return error(404, 404003, ["The data_id was not found"], **state.headers(key, PREVENTION))
        return json_response(report_json(rep, state.clock()), state.headers(key, PREVENTION))

    async def bulk(request: web.Request) -> web.Response:
        state.hash_requests += 1
        key = request.headers["apikey"]
        w = state.window(key, REPUTATION)
        if throttled(key):
            return too_many(
                key, REPUTATION, "Your request has been throttled, maximum requests per minute exceeded"
            )
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return error(400, 400064, ["Could not parse body content."], **state.headers(key, REPUTATION))
        hashes = payload.get("hash") if isinstance(payload, dict) else None
        if not isinstance(hashes, list) or not hashes:
            return error(
                400, 400064, ["hashes in body content is null or empty"], **state.headers(key, REPUTATION)
            )
        if len(hashes) > 1000:
            return error(
                400,
                400065,
                ["Exceeded maximum allowed. Allow maximum 1000 hashes"],
                **state.headers(key, REPUTATION),
            )
        found = [
            state.reports[state.by_hash[str(h).lower()]] for h in hashes if str(h).lower() in state.by_hash
        ]
        if w.used + len(found) > state.limit(REPUTATION):
            return quota(key, REPUTATION)
        w.used += len(found)
        state.hashes_looked_up += len(hashes)
        details = request.headers.get("includescandetails") == "1"
        now = state.clock()
        data = []
        for h in hashes:
            data_id = state.by_hash.get(str(h).lower())
            if data_id is None:
                data.append({"data_id": None, "hash": h, "scan_result_i": 5, "total_detected_avs": -1})
                continue
            rep = state.reports[data_id]
            full = report_json(rep, now)["scan_results"]
            item: dict[str, Any] = {
                "data_id": data_id,
                "hash": h,
                "scan_result_i": full["scan_all_result_i"],
                "total_detected_avs": full.get("total_detected_avs", 0),
            }
            if details and "scan_details" in full:
                item["scan_details"] = full["scan_details"]
            data.append(item)
        return json_response({"data": data}, state.headers(key, REPUTATION))

    async def single(request: web.Request, digest: str) -> web.Response:
        """``GET /v4/hash/{md5|sha1|sha256}``, either case."""
        key = request.headers["apikey"]
        data_id = state.by_hash.get(digest.lower())
        if data_id is None:
            return error(404, 404003, ["The hash was not found"], **state.headers(key, REPUTATION))
        w = state.window(key, REPUTATION)
        if w.used >= state.limit(REPUTATION):
            return quota(key, REPUTATION)
        w.used += 1
        return json_response(
            report_json(state.reports[data_id], state.clock()), state.headers(key, REPUTATION)
        )

    async def stats(request: web.Request) -> web.Response:
        """Simulator only (not MetaDefender's): the counters, for tests and benchmarks in another process."""
        names = (
            *("requests", "uploads", "upload_bytes", "hash_requests", "hashes_looked_up", "polls"),
            *("apikey_requests", "unauthorized", "forbidden", "quota_429", "throttle_429"),
            *("failed_uploads", "max_in_flight"),
        )
        counters: dict[str, Any] = {n: getattr(state, n) for n in names}
        counters["closed"] = state.closed
        return web.Response(body=orjson.dumps(counters), content_type="application/json")

    async def dispatch(request: web.Request) -> web.StreamResponse:
        """Every API path, compared by its non-empty segments: ``/v4//file`` and ``/v4/apikey/`` reach
        their endpoints, as clients send both (MetaDefender-api joins ``.../v4/`` with ``/file``; OPSWAT's
        SDK asks for ``/apikey/``)."""
        parts = tuple(p for p in request.path.split("/") if p)
        match request.method, parts:
            case "GET", ("v4", "apikey"):
                return await apikey(request)
            case "GET", ("v4", "apikey", "limits"):
                return await limits(request, remaining=False)
            case "GET", ("v4", "apikey", "limits", "status"):
                return await limits(request, remaining=True)
            case "POST", ("v4", "file"):
                return await upload(request)
            case "GET", ("v4", "file", data_id):
                return await report(request, data_id)
            case "POST", ("v4", "hash"):
                return await bulk(request)
            case "GET", ("v4", "hash", digest):
                return await single(request, digest)
        if parts and parts[0] in ("v1", "v2", "v3"):  # documented: old versions answer 404 with this text
            return error(404, 404000, ["This API version is no longer maintained. Please use V4 API"])
        known = {("v4", "apikey"), ("v4", "file"), ("v4", "hash")}
        if parts[:2] in known and len(parts) <= 4:
            return error(405, 405000, [f"Method {request.method} is not allowed here"])
        return error(404, 404000, [f"Endpoint {request.path} not found"])  # code assumed

    app = web.Application(middlewares=[gatekeeper], client_max_size=1024**2)
    app.router.add_get("/_sim/stats", stats)
    app.router.add_route("*", "/{path:.*}", dispatch)
    app[STATE] = state
    return app
