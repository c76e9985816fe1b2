"""MetaDefender Cloud (API v4): hash first, upload only misses, poll for the verdict.

For each target: stage the body (sha256 in a worker thread; non-local bodies spooled to a temporary
file), look the hash up with the bulk endpoint (``POST /v4/hash``; concurrent jobs share one request
per ``hash_linger`` window, up to ``hash_batch`` hashes), and if MetaDefender already knows the
content take its verdict. Otherwise upload it (``POST /v4/file``, streamed from disk, ``filename``
header) and poll ``GET /v4/file/{data_id}`` every ``poll_initial`` seconds growing by
``poll_factor`` up to ``poll_max``, until ``progress_percentage`` is 100. A job sleeping between polls
holds no connection and no rate token, and has already released its body. Identical content within a
run is resolved once (one lookup, at most one upload) and its outcome shared.

Limits: every request goes through :mod:`scanner._http` with a route (``apikey``, ``hash``, ``upload``,
``poll``) whose family the server names in ``X-RateLimit-For``; uploads and bulk lookups are paced by
``requests_per_second`` (the vendor throttles those). The engine raises, from :meth:`scan`:
:class:`~scanner.errors.AuthError` (401/403, never retried; a bad key fails ``__aenter__`` after one
request), :class:`~scanner.errors.QuotaExhausted` (a family's quota resets later than
``max_quota_wait``), and per-target engine errors after bounded retries.

Assumptions where the documents are silent:

* ``GET /v4/apikey`` answers with ``max_upload_file_size`` in MB; a key without it has no limit here.
* ``GET /v4/file/{data_id}`` costs no quota (polls pass the family gate at cost 0); a bulk lookup is
  charged per *found* hash, so a batch reserves its size and the answer's ``Remaining`` settles it.
* With ``includescandetails: 1`` a bulk item carries ``scan_details`` (threat names); without them an
  infected hit gets a finding named after the result code.
* A hit still in progress (code 255) is polled by its ``data_id``, not uploaded again.
* Code 11 ("aborted") is an ``error`` marked retryable; the engine does not re-upload by itself.
* An upload whose answer is lost (reset, timeout after sending) may have been charged: the engine
  looks the hash up before uploading again, and uploads at most twice.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Annotated as A
from typing import Any, Self
from urllib.parse import quote

from msgspec import Meta as M
from msgspec import structs

from .._content import LocalBody
from .._http import Body as RequestBody
from .._http import RetryPolicy, Timeouts, VendorClient, count_tries
from ..config import EngineConfig, HttpUrl, Secret
from ..errors import EngineError, ProtocolError, ScannerError, ServerError, TransportError
from ..model import ErrorInfo, Finding, Kind, Outcome, Status, Target
from ..ratelimit import Clock, MonotonicClock, RateLimits
from ..sources._base import Source
from ..state import StateStore
from . import _metadefender_wire as wire
from ._batching import Batcher, Singleflight
from ._staging import Staged, stage

__all__ = ("Config", "MetaDefenderEngine", "create")

log = logging.getLogger("scanner.engines.metadefender")

#: the families the documents name for uploads and hash lookups; the answers' X-RateLimit-For rules
_PREVENTION, _REPUTATION = "prevention_api", "reputation_api"
#: uploads of one content: a lost answer is followed by a hash check, then one more upload at most
_UPLOAD_TRIES = 2
_DEFAULT_URL = HttpUrl("https://api.metadefender.com")


class Config(EngineConfig, frozen=True, kw_only=True):
    """``[engines.metadefender]``"""

    base_url: A[HttpUrl, M(description="the adapter appends /v4/... (http or https)")] = _DEFAULT_URL
    api_key: A[Secret, M(description="MetaDefender Cloud API key (use ${METADEFENDER_API_KEY})")]
    ca_file: A[str | None, M(description="PEM bundle to trust instead of the system store")] = None
    connections: A[int, M(ge=1, le=1024, description="HTTP connections (pool size)")] = 16
    jobs: A[int, M(ge=1, le=10_000, description="default jobs in flight for this engine")] = 32
    connect_timeout: A[float, M(gt=0, le=300, description="seconds to connect")] = 10.0
    read_timeout: A[float, M(gt=0, le=3600, description="seconds between bytes of an answer")] = 120.0
    retry_attempts: A[int, M(ge=1, le=20, description="tries per request on timeouts/5xx")] = 5
    throttle_retries: A[int, M(ge=0, le=50, description="extra tries per request on throttling")] = 10
    retry_base: A[float, M(gt=0, le=60, description="first backoff ceiling (s), doubled per retry")] = 1.0
    retry_cap: A[float, M(gt=0, le=3600, description="largest single backoff (s)")] = 60.0
    retry_max_wait: A[float, M(ge=0, le=86400, description="total backoff per request (s)")] = 300.0
    requests_per_second: A[float, M(gt=0, le=10_000, description="pace of uploads and lookups")] | None = None
    burst: A[int, M(ge=1, le=1000, description="paced requests allowed at once")] = 1
    max_concurrency: A[int, M(ge=1, le=1024, description="requests in flight at once")] | None = None
    max_quota_wait: A[float, M(ge=0, le=86400, description="wait this long for a quota reset, else stop")] = (
        600.0
    )
    hash_lookup: A[bool, M(description="look hashes up before uploading")] = True
    hash_batch: A[int, M(ge=1, le=1000, description="hashes per bulk lookup")] = 1000
    hash_linger: A[float, M(ge=0, le=10, description="seconds a bulk lookup waits for company")] = 0.05
    poll_initial: A[float, M(ge=0, le=3600, description="first wait before polling (s)")] = 3.0
    poll_factor: A[float, M(ge=1.0, le=10, description="growth of the poll interval")] = 1.2
    poll_max: A[float, M(gt=0, le=3600, description="largest poll interval (s)")] = 300.0
    poll_timeout: A[float, M(gt=0, le=7 * 86400, description="give up polling after this long (s)")] = 3600.0
    rule: A[str | None, M(description="workflow rule header, e.g. 'unarchive'")] = None
    spool_dir: A[str | None, M(description="where non-local bodies are spooled")] = None
    dedupe_cache: A[int, M(ge=0, le=10_000_000, description="outcomes remembered by sha256 in a run")] = (
        100_000
    )


def create(config: Config, *, clock: Clock | None = None) -> MetaDefenderEngine:
    return MetaDefenderEngine(config, clock=clock)


class MetaDefenderEngine:
    """The ``metadefender`` engine. See the module docstring for its contract."""

    name = "metadefender"
    accepts = frozenset({Kind.FILE, Kind.S3})

    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or MonotonicClock()
        self.default_jobs = config.jobs
        #: learnt from GET /v4/apikey in __aenter__
        self.max_size: int | None = None
        key = config.api_key.get_secret_value()
        self.limits = RateLimits(
            self.clock,
            max_wait=config.max_quota_wait,
            requests_per_second=config.requests_per_second,
            burst=config.burst,
            max_concurrency=config.max_concurrency,
        )
        self.http = VendorClient(
            self.name,
            config.base_url,
            headers={"apikey": key, "Accept": "application/json"},
            secrets=[key],
            limits=self.limits,
            hints=wire.parse_hint,
            connections=config.connections,
            timeouts=Timeouts(connect=config.connect_timeout, read=config.read_timeout),
            retry=RetryPolicy(
                attempts=config.retry_attempts,
                throttle_attempts=config.throttle_retries,
                base=config.retry_base,
                cap=config.retry_cap,
                max_wait=config.retry_max_wait,
            ),
            ca_file=config.ca_file,
        )
        self._hashes: Batcher[str, wire.HashItem] = Batcher(
            self._lookup, linger=config.hash_linger, max_size=self._batch_size, clock=self.clock
        )
        self._flights: Singleflight[str, Outcome] = Singleflight(config.dedupe_cache)
        self._store: StateStore | None = None
        self._cache_age = 0.0
        self.counts = {
            "hash_hits": 0,
            "hash_misses": 0,
            "uploads": 0,
            "polls": 0,
            "too_large": 0,
            "cached": 0,
            "resumed": 0,
        }

    def __repr__(self) -> str:
        return f"<MetaDefenderEngine {self.http!r} {self.limits!r}>"

    async def __aenter__(self) -> Self:
        """Open the session and check the key (one ``GET /v4/apikey``). Raises AuthError on 401/403."""
        await self.http.__aenter__()
        try:
            resp = await self.http.request("GET", "/v4/apikey", route="apikey", cost=0)
            if resp.status != 200:
                raise self._unexpected("key check", resp.status, resp.body)
            info = wire.parse_apikey(resp.json())
        except BaseException:
            await self.http.__aexit__(None, None, None)
            raise
        self.max_size = info.max_upload_bytes
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.http.__aexit__(exc_type, exc, tb)

    def attach_state(self, store: StateStore, cache_age: float) -> None:
        """Use the run's state store: verdicts cached by content for ``cache_age`` seconds are not
        asked again, and an upload a killed run left in flight is polled by its data_id, not re-sent."""
        self._store = store
        self._cache_age = cache_age

    def statistics(self) -> Mapping[str, Any]:
        return {
            "http": self.http.statistics(),
            "rate": self.limits.statistics(),
            "hash_batches": self._hashes.batches,
            "deduplicated": self._flights.shared,
            **self.counts,
        }

    async def scan(self, target: Target, source: Source, /) -> Outcome:
        """Scan one target (see the module docstring). The body is released before polling. Its
        ``attempts`` count every retry of a request made for it, as does an error it ends in."""
        with count_tries() as tries:
            try:
                outcome = await self._scan(target, source)
            except ScannerError as exc:
                exc.attempts = tries[0]  # retries that ended in this error
                raise
        return outcome if tries[0] == 1 else structs.replace(outcome, attempts=tries[0])

    async def _scan(self, target: Target, source: Source) -> Outcome:
        # a job counts as one that may still join a bulk lookup until its scan ends, or until it
        # waits for a twin's: a batch that every such job is in goes without waiting out the linger
        member = self._hashes.member()
        try:
            async with AsyncExitStack() as stack:
                body = await stack.enter_async_context(source.open(target))
                # the version of a local file as opened, for the state store (a twin's shared
                # outcome must carry this file's, so it is added here, not in _resolve)
                opened = (
                    (body.size, body.version)
                    if isinstance(body, LocalBody) and body.version is not None
                    else None
                )
                staged = await stack.enter_async_context(stage(body, spool_dir=self.config.spool_dir))
                if self._flights.running(staged.sha256):
                    member.leave()
                outcome, shared = await self._flights.run(
                    staged.sha256, lambda: self._resolve(target, staged, stack.aclose)
                )
        finally:
            member.leave()
        if shared:
            vendor = dict(outcome.vendor or {})
            vendor["deduplicated"] = True
            outcome = structs.replace(outcome, vendor=vendor)
        if opened is not None and outcome.size == opened[0]:
            outcome = structs.replace(outcome, version=opened[1])
        return outcome

    async def _resolve(
        self, target: Target, staged: Staged, release: Callable[[], Awaitable[None]]
    ) -> Outcome:
        sha = staged.sha256
        if self._store is not None:
            known = await self._from_state(target, staged, release)
            if known is not None:
                return known
        item = await self._hashes.get(sha) if self.config.hash_lookup else None
        if item is not None and item.found:
            self.counts["hash_hits"] += 1
            await release()
            assert item.data_id is not None
            if item.done:
                return self._outcome(item.result_i, item.threats, item.data_id, staged, "hash")
            report = await self._poll(item.data_id)
            return self._outcome(report.result_i, report.threats, item.data_id, staged, "hash")
        self.counts["hash_misses"] += 1
        if self.max_size is not None and staged.size > self.max_size:
            self.counts["too_large"] += 1
            return self._too_large(staged, self.max_size)
        data_id = await self._upload(target, staged)
        await release()
        if data_id is None:
            return self._too_large(staged, self.max_size)
        if self._store is not None:
            self._store.submitted(self.name, target, {"data_id": data_id, "sha256": sha})
        report = await self._poll(data_id)
        return self._outcome(report.result_i, report.threats, data_id, staged, "upload")

    async def _from_state(
        self, target: Target, staged: Staged, release: Callable[[], Awaitable[None]]
    ) -> Outcome | None:
        """A verdict without an upload: this content's cached verdict, or the report of the upload a
        killed run left in flight for this very target and content."""
        assert self._store is not None
        sha = staged.sha256
        cached = await self._store.cached(self.name, sha, self._cache_age)
        if cached is not None:
            self.counts["cached"] += 1
            await release()
            vendor = {"sha256": sha, "via": "cache"}
            return structs.replace(cached, size=staged.size, vendor=vendor)
        pending = await self._store.pending(self.name, target)
        if pending is None or pending.get("sha256") != sha or not pending.get("data_id"):
            return None
        data_id = str(pending["data_id"])
        try:
            report = await self._poll(data_id)
        except ProtocolError:
            return None  # the vendor forgot it (404): scan the content afresh, body still staged
        await release()
        self.counts["resumed"] += 1
        return self._outcome(report.result_i, report.threats, data_id, staged, "resumed")

    def _batch_size(self) -> int:
        budget = self.limits.available("hash")
        return self.config.hash_batch if budget is None else max(1, min(self.config.hash_batch, budget))

    async def _lookup(self, hashes: Sequence[str]) -> Mapping[str, wire.HashItem]:
        resp = await self.http.request(
            "POST",
            "/v4/hash",
            route="hash",
            cost=len(hashes),
            paced=True,
            family=_REPUTATION,
            headers={"includescandetails": "1"},
            json={"hash": list(hashes)},
        )
        if resp.status != 200:
            raise self._unexpected("bulk hash lookup", resp.status, resp.body)
        return wire.parse_bulk(resp.json(), hashes)

    async def _upload(self, target: Target, staged: Staged) -> str | None:
        """Upload the staged bytes; the data_id, or None when the vendor says the file is too large."""
        name = posixpath.basename(target.key or target.target) or os.path.basename(target.target)
        headers = {
            "filename": quote(name, safe=""),
            "Content-Type": "application/octet-stream",
            "Content-Length": str(staged.size),
        }
        if self.config.rule:
            headers["rule"] = self.config.rule
        # a small body held in memory goes as bytes, written with the headers; a file is streamed
        data: RequestBody = staged.data if staged.data is not None else staged.chunks
        for attempt in range(_UPLOAD_TRIES):
            try:
                resp = await self.http.request(
                    "POST",
                    "/v4/file",
                    route="upload",
                    cost=1,
                    paced=True,
                    family=_PREVENTION,
                    headers=headers,
                    data=data,
                    replay_safe=False,
                )
                break
            except TransportError as exc:
                if exc.code != "transport_unconfirmed" or attempt + 1 == _UPLOAD_TRIES:
                    raise
                # the upload may have landed (and been charged): ask before sending it again
                log.info("%s; checking whether it arrived before uploading again", exc)
                item = await self._hashes.get(staged.sha256)
                if item.found:
                    return item.data_id
        self.counts["uploads"] += 1
        if resp.status == 400:
            err = wire.parse_error(resp.body)
            if err is not None and err.code == 400144:
                return None
        if resp.status != 200:
            raise self._unexpected("upload", resp.status, resp.body)
        return wire.parse_upload(resp.json())

    async def _poll(self, data_id: str) -> wire.FileReport:
        """Poll until done, sleeping between polls with nothing held. Raises EngineError on timeout."""
        c = self.config
        delay, waited = c.poll_initial, 0.0
        while True:
            await self.clock.sleep(delay)
            waited += delay
            self.counts["polls"] += 1
            resp = await self.http.request(
                "GET", f"/v4/file/{quote(data_id, safe='')}", route="poll", cost=0, family=_PREVENTION
            )
            if resp.status != 200:
                raise self._unexpected(f"report {data_id}", resp.status, resp.body)
            report = wire.parse_report(resp.json())
            if report.done:
                return report
            delay = min(c.poll_max, max(delay, 0.1) * c.poll_factor)
            if waited + delay > c.poll_timeout:
                error = EngineError(
                    f"metadefender: {data_id} still in progress after {waited:.0f} s", code="poll_timeout"
                )
                error.retryable = True
                raise error

    def _outcome(
        self, code: int | None, threats: Sequence[Finding], data_id: str, staged: Staged, via: str
    ) -> Outcome:
        status, findings, error = wire.map_result(code, threats)
        vendor = {"data_id": data_id, "sha256": staged.sha256, "scan_all_result_i": code, "via": via}
        return Outcome(status, findings, error, sha256=staged.sha256, size=staged.size, vendor=vendor)

    def _too_large(self, staged: Staged, limit: int | None) -> Outcome:
        mb = "" if limit is None else f" ({limit // (1024 * 1024)} MB)"
        error = ErrorInfo(f"larger than this key's upload limit{mb}", code="too_large")
        return Outcome(
            Status.UNSCANNABLE,
            error=error,
            sha256=staged.sha256,
            size=staged.size,
            vendor={"sha256": staged.sha256},
        )

    def _unexpected(self, what: str, status: int, body: bytes) -> EngineError:
        err = wire.parse_error(body)
        detail = "" if err is None else f": {self.http.redact.text(err.message)}"
        if status >= 500:
            return ServerError(f"metadefender: {what}: HTTP {status}{detail}")
        return ProtocolError(f"metadefender: {what}: unexpected HTTP {status}{detail}")
