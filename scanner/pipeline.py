"""The pipeline: sources -> bounded job pool -> engine -> one writer.

::

    producer ──(targets, buffer N)──► max_at_once workers ──(verdicts)──► writer ──► sink
    (pulls sources lazily)            (one job = one target)               (batches whole lines)

An engine with a batch lane (:class:`~scanner.engines._base.BatchEngine`, the embedded YARA engine)
gets ``max_at_once / batch_size`` workers instead, each taking as many waiting targets as it can (up
to ``batch_size``, never waiting for more) and handing them to the engine in one call: the per-target
coroutine, future and stream hops cost more than scanning a small file does. Only when every source
lists files: a batch ends with its slowest target, and a slow download in it would hold back the rest.

Three limits keep a run polite and its memory flat, and each has statistics:

* **jobs in flight** (``max_at_once`` workers here): bounds memory; a job waiting on a vendor poll
  costs one coroutine, nothing more;
* **connections per engine** and **rate per vendor family** live inside the engine's HTTP layer, taken
  per request, so a job sleeping between polls holds neither (see :mod:`scanner._http`).

The source can never run ahead of the pool by more than the target buffer: the producer blocks on a
full stream, and sources are pulled, never drained into a list.

Failures: a per-target error becomes an ``error`` line and the run goes on. An error whose
``halts_run`` is true stops the run: :class:`~scanner.errors.QuotaExhausted` keeps draining the source
and writes a ``skipped`` line (``error.code = "quota_exhausted"``) for every remaining target, so the
report names them all; any other halting error (bad credentials, a dead sink) cancels the run at once
and :meth:`Pipeline.run` raises it (a dead sink's error with how many lines reached it, and how many
targets got none). A source that fails mid-listing stops listing; the jobs already
started finish and the summary records the failure (exit 2).

Shutdown: :meth:`stop` stops taking targets and lets jobs in flight finish for up to ``drain_timeout``
seconds, then cancels them; :meth:`abort` cancels at once. Either way the writer only ever hands
whole lines to the sink, so a killed run leaves a clean file.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, cast

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .engines._base import BatchEngine, Engine
from .errors import QuotaExhausted, ScannerError, SinkError, SourceError
from .model import ErrorInfo, Kind, Outcome, Status, Target, Verdict, error_info, utcnow
from .sinks._base import Sink
from .sources._base import BatchSource, Source

__all__ = ("Pipeline", "PipelineStatistics", "Summary", "check_kinds")

log = logging.getLogger("scanner.pipeline")
_FILE_ONLY = frozenset({Kind.FILE})

_WRITE_BATCH = 1024
_T = TypeVar("_T")
#: a listed target on its way to a worker, with the outcome admission already decided, if any
_Job = tuple[Target, Source, Outcome | None]

#: the admission step between the sources and the pool (resume, incremental rescans). Given a batch of
#: listed targets it returns those to go on, each with an Outcome when it is answered without a scan,
#: and how many it dropped by reason. One call per batch: a state store answers a batch in one query.
Admit = Callable[[Sequence[Target]], Awaitable[tuple[list[tuple[Target, Outcome | None]], Mapping[str, int]]]]
_ADMIT_BATCH = 512
#: called by the writer after each batch of lines reached the sink (the state store's commit point)
OnWritten = Callable[[Sequence[Verdict]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PipelineStatistics:
    """A snapshot of live state, cheap to take; progress and benchmarks read it."""

    listed: int
    in_flight: int
    written: int
    max_at_once: int
    listing_done: bool
    elapsed: float
    by_status: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Summary:
    """How a run ended; decides the exit status."""

    listed: int
    written: int
    elapsed: float
    by_status: Mapping[str, int]
    errors_by_code: Mapping[str, int]
    #: targets listed but given no line, by reason (already done in a resumed run, unchanged)
    dropped: Mapping[str, int] = field(default_factory=dict)
    interrupted: bool = False
    halted: ErrorInfo | None = None
    source_errors: tuple[str, ...] = field(default_factory=tuple)
    #: lines an earlier, interrupted attempt of the same run wrote to the same report, by status;
    #: a resumed run's exit status speaks for the whole report, not only for its own part of it
    carried: Mapping[str, int] = field(default_factory=dict)
    #: targets found infected, suspicious or vulnerable by an earlier run and skipped now as
    #: unchanged (``--skip-unchanged``), by status: not rescanned, so not in ``by_status`` nor in
    #: the exit status, but still there
    unchanged_findings: Mapping[str, int] = field(default_factory=dict)

    @property
    def findings(self) -> int:
        statuses = (*self.by_status.items(), *self.carried.items())
        return sum(n for s, n in statuses if Status(s).is_finding)

    @property
    def incomplete(self) -> bool:
        return (
            self.interrupted
            or self.halted is not None
            or bool(self.source_errors)
            or self.by_status.get(Status.ERROR, 0) > 0
            or self.carried.get(Status.ERROR, 0) > 0
        )

    @property
    def exit_code(self) -> int:
        """0 all scanned and clean; 1 something found (never masked); 2 errors or incomplete."""
        if self.findings:
            return 1
        return 2 if self.incomplete else 0


def check_kinds(sources: Sequence[Source], engine: Engine) -> None:
    """Reject a run that can never work before it starts (no source kind the engine accepts)."""
    for source in sources:
        if not source.kinds & engine.accepts:
            kinds = ", ".join(sorted(k.value for k in source.kinds))
            accepts = ", ".join(sorted(k.value for k in engine.accepts))
            raise SourceError(f"engine {engine.name} cannot scan {kinds} targets (it accepts {accepts})")


class Pipeline:
    """One run: pull targets from ``sources``, scan each with ``engine``, write verdicts to ``sink``.

    The engine must already be entered (``async with engine``); the pipeline does not own it, nor the
    sink's final :meth:`~scanner.sinks._base.Sink.aclose`.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        engine: Engine,
        sink: Sink,
        *,
        max_at_once: int,
        buffer: int | None = None,
        admit: Admit | None = None,
        on_written: OnWritten | None = None,
        drain_timeout: float = 30.0,
    ) -> None:
        if max_at_once < 1:
            raise ValueError("max_at_once must be >= 1")
        self._sources = tuple(sources)
        self._engine = engine
        self._sink = sink
        self._max_at_once = max_at_once
        # A target buffer as deep as the pool lets one producer turn feed every idle worker; memory
        # stays O(max_at_once) either way.
        self._buffer = max_at_once if buffer is None else buffer
        self._admit = admit
        self._on_written = on_written
        self._drain_timeout = drain_timeout
        self._listed = 0
        self._in_flight = 0
        self._written = 0
        self._dropped: Counter[str] = Counter()
        self._listing_done = False
        self._by_status: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._halt: ErrorInfo | None = None
        self._fatal: ScannerError | None = None
        self._source_errors: list[str] = []
        self._stopping = False
        self._interrupted = False
        self._started = time.monotonic()
        self._produce_scope: anyio.CancelScope | None = None
        self._jobs_scope: anyio.CancelScope | None = None
        self._run_scope: anyio.CancelScope | None = None

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<Pipeline [{s.listed} listed, {s.in_flight}/{s.max_at_once} in flight, "
            f"{s.written} written{', listing done' if s.listing_done else ''}]>"
        )

    @property
    def drain_timeout(self) -> float:
        """Seconds jobs in flight get to finish after :meth:`stop`."""
        return self._drain_timeout

    def statistics(self) -> PipelineStatistics:
        return PipelineStatistics(
            listed=self._listed,
            in_flight=self._in_flight,
            written=self._written,
            max_at_once=self._max_at_once,
            listing_done=self._listing_done,
            elapsed=time.monotonic() - self._started,
            by_status=dict(self._by_status),
        )

    def check(self) -> None:
        """Reject a run that can never work before it starts (no source kind the engine accepts)."""
        check_kinds(self._sources, self._engine)

    # Control, callable from any task (signal handlers).

    def stop(self) -> None:
        """Stop taking targets; jobs in flight get ``drain_timeout`` seconds to finish."""
        if self._stopping:
            return
        self._stopping = True
        self._interrupted = True
        if self._produce_scope is not None:
            self._produce_scope.cancel()
        if self._jobs_scope is not None:
            self._jobs_scope.deadline = anyio.current_time() + self._drain_timeout

    def abort(self) -> None:
        """Cancel everything now. Lines already handed to the sink stay whole."""
        self._stopping = True
        self._interrupted = True
        if self._run_scope is not None:
            self._run_scope.cancel()

    def _halt_now(self, exc: ScannerError) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._stopping = True
        if self._run_scope is not None:
            self._run_scope.cancel()

    # The run.

    async def run(self) -> Summary:
        """Run to the end of every source (or a stop). Raises a halting ScannerError other than quota."""
        self._started = time.monotonic()
        targets_send, targets_recv = anyio.create_memory_object_stream[_Job](self._buffer)
        # The batch lane only for sources of files, which a batch engine reads by path at once: a
        # batch waits for its slowest target, and one slow download (a URL, an S3 object) in it
        # would hold back every line of the batch. Other sources get one coroutine per target.
        files_only = all(source.kinds <= _FILE_ONLY for source in self._sources)
        batch = self._engine.batch_size if isinstance(self._engine, BatchEngine) and files_only else 0
        # Batch workers split max_at_once between them (the last may take a smaller batch), so
        # jobs in flight never exceed the bound, whatever --jobs and the batch size are.
        sizes = [1] * self._max_at_once
        if batch:
            full, rest = divmod(self._max_at_once, batch)
            sizes = [batch] * full + ([rest] if rest else [])
        workers = len(sizes)
        # Workers hand over lists of verdicts (one per target, or one per batch). As deep as a write
        # batch: with few jobs in flight a shallow stream made the writer hop to its thread once
        # every handful of lines.
        verdicts_send, verdicts_recv = anyio.create_memory_object_stream[list[Verdict]](
            max(workers, _WRITE_BATCH // max(batch, 1))
        )
        with anyio.CancelScope() as self._run_scope:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._write, verdicts_recv)
                async with verdicts_send, anyio.create_task_group() as jobs:
                    self._jobs_scope = jobs.cancel_scope
                    if self._stopping:
                        jobs.cancel_scope.deadline = anyio.current_time() + self._drain_timeout
                    jobs.start_soon(self._produce, targets_send)
                    async with targets_recv:
                        for size in sizes:
                            if batch:
                                jobs.start_soon(
                                    self._work_batches, targets_recv.clone(), verdicts_send.clone(), size
                                )
                            else:
                                jobs.start_soon(self._work, targets_recv.clone(), verdicts_send.clone())
        if isinstance(self._fatal, SinkError):
            raise SinkError(f"{self._fatal.message}; {self._lost()}") from None
        if self._fatal is not None:
            raise self._fatal
        return Summary(
            listed=self._listed,
            written=self._written,
            elapsed=time.monotonic() - self._started,
            by_status=dict(self._by_status),
            errors_by_code=dict(self._errors),
            dropped=dict(self._dropped),
            interrupted=self._interrupted,
            halted=self._halt,
            source_errors=tuple(self._source_errors),
        )

    def _lost(self) -> str:
        """What a dead sink cost: the lines it took (whole: a sink never keeps a torn one) and the
        targets that got none, for the one line a SinkError ends the run with."""
        missing = self._listed - self._written - sum(self._dropped.values())
        rest = "" if self._listing_done else ", and the rest of the source was not read"
        return (
            f"{self._written:,} verdict lines reached {self._sink.name} before it failed; "
            f"{missing:,} targets listed got none{rest}"
        )

    async def _produce(self, send: MemoryObjectSendStream[_Job]) -> None:
        async with send:
            with anyio.CancelScope() as self._produce_scope:
                if self._stopping:
                    return
                for source in self._sources:
                    try:
                        if isinstance(source, BatchSource):
                            await self._produce_batches(source, send)
                        elif self._admit is None:
                            async for target in source.targets():
                                # Fast path without a trip round the event loop; wait only when full.
                                job = (target, source, None)
                                try:
                                    send.send_nowait(job)
                                except anyio.WouldBlock:
                                    await send.send(job)
                                self._listed += 1
                        else:
                            await self._produce_admitted(source, send)
                    except SourceError as exc:
                        self._source_failed(exc)
                        return
                    except anyio.BrokenResourceError:
                        return  # every worker has gone: the run is being torn down
                    if self._source_errors:
                        return
                self._listing_done = True

    async def _produce_batches(self, source: BatchSource, send: MemoryObjectSendStream[_Job]) -> None:
        # The source hands over lists, admitted a slice at a time. With an admission step (a
        # state store lookup) a reader task walks the next list while this one is admitted: the
        # two run in threads and overlap, where one after the other they made a rerun's pace.
        if self._admit is None:
            async for listed in source.batches():
                await self._enqueue(source, listed, send)
            return
        listed_send, listed_recv = anyio.create_memory_object_stream[list[Target]](1)
        async with anyio.create_task_group() as tg, listed_recv:
            tg.start_soon(self._pump, source.batches(), listed_send)
            async for listed in listed_recv:
                await self._enqueue(source, listed, send)

    async def _enqueue(
        self, source: Source, listed: list[Target], send: MemoryObjectSendStream[_Job]
    ) -> None:
        admit = self._admit
        for start in range(0, len(listed), _ADMIT_BATCH):
            chunk = listed[start : start + _ADMIT_BATCH]
            jobs: list[_Job]
            if admit is None:
                jobs = [(target, source, None) for target in chunk]
            else:
                kept, dropped = await admit(chunk)
                self._dropped.update(dropped)
                jobs = [(target, source, decided) for target, decided in kept]
            self._listed += len(chunk)
            for job in jobs:
                try:
                    send.send_nowait(job)
                except anyio.WouldBlock:
                    await send.send(job)

    def _source_failed(self, exc: SourceError) -> None:
        log.error("%s", exc)
        self._source_errors.append(str(exc))

    async def _produce_admitted(self, source: Source, send: MemoryObjectSendStream[_Job]) -> None:
        # A reader task keeps a small buffer of listed targets, so each admission call gets every
        # target that has arrived (up to a batch) without ever waiting for a batch to fill.
        listed_send, listed_recv = anyio.create_memory_object_stream[Target](_ADMIT_BATCH)
        async with anyio.create_task_group() as tg, listed_recv:
            tg.start_soon(self._pump, source.targets(), listed_send)
            while (listed := await _take(listed_recv, _ADMIT_BATCH)) is not None:
                await self._enqueue(source, listed, send)

    async def _pump(self, items: AsyncIterator[_T], send: MemoryObjectSendStream[_T]) -> None:
        """A source's reader task: pass what it lists on; a listing failure ends the stream."""
        async with send:
            try:
                async for item in items:
                    try:
                        send.send_nowait(item)
                    except anyio.WouldBlock:
                        await send.send(item)
            except SourceError as exc:
                self._source_failed(exc)

    async def _work(
        self,
        recv: MemoryObjectReceiveStream[_Job],
        send: MemoryObjectSendStream[list[Verdict]],
    ) -> None:
        # One job is one target. The hand-offs take the no-wait path when they can: a checkpoint
        # per target costs more than a no-op engine does. (The receive is spelt out rather than
        # _take(recv, 1): the call and the list measured 6 % of a no-op run.) Every loop still
        # waits somewhere once a buffer runs dry or full, and real engines await I/O, so no worker
        # can hog the loop for long.
        async with recv, send:
            while not self._stopping:
                try:
                    target, source, decided = recv.receive_nowait()
                except anyio.WouldBlock:
                    try:
                        target, source, decided = await recv.receive()
                    except anyio.EndOfStream:
                        return
                except anyio.EndOfStream:
                    return
                if self._stopping:
                    return
                self._in_flight += 1
                try:
                    verdict = await self._job(target, source, decided)
                finally:
                    self._in_flight -= 1
                if verdict is not None and not await _hand_over(send, [verdict]):
                    return

    async def _work_batches(
        self,
        recv: MemoryObjectReceiveStream[_Job],
        send: MemoryObjectSendStream[list[Verdict]],
        size: int,
    ) -> None:
        # The batch lane: take what is waiting, up to a batch, and never wait for a batch to fill.
        async with recv, send:
            while not self._stopping:
                jobs = await _take(recv, size)
                if jobs is None or self._stopping:
                    return
                n = len(jobs)
                self._in_flight += n
                try:
                    verdicts = await self._batch_job(jobs)
                finally:
                    self._in_flight -= n
                if verdicts and not await _hand_over(send, verdicts):
                    return

    async def _batch_job(self, jobs: list[_Job]) -> list[Verdict]:
        engine = cast(BatchEngine, self._engine)  # chosen in run(); isinstance here costs 2 us a batch
        started = utcnow()
        outcomes: list[Outcome | None] = []
        scan: list[int] = []
        for i, (target, _source, decided) in enumerate(jobs):
            outcome = decided if decided is not None else self._precheck(target)
            if outcome is None:
                scan.append(i)
            outcomes.append(outcome)
        if scan:
            items = [(jobs[i][0], jobs[i][1]) for i in scan]
            results: list[Outcome | Exception]
            try:
                results = await engine.scan_batch(items)
                if len(results) != len(items):
                    raise RuntimeError(f"scan_batch gave {len(results)} results for {len(items)} targets")
            except Exception as exc:
                results = [exc] * len(items)
            for i, result in zip(scan, results, strict=True):
                outcomes[i] = result if isinstance(result, Outcome) else self._failed(jobs[i][0], result)
        finished = utcnow()
        name = engine.name
        return [
            Verdict.of(job[0], name, outcome, started_at=started, finished_at=finished)
            for job, outcome in zip(jobs, outcomes, strict=True)
            if outcome is not None
        ]

    async def _job(self, target: Target, source: Source, decided: Outcome | None) -> Verdict | None:
        started = utcnow()
        outcome = decided if decided is not None else await self._decide(target, source)
        if outcome is None:
            return None
        return Verdict.of(target, self._engine.name, outcome, started_at=started, finished_at=utcnow())

    async def _decide(self, target: Target, source: Source) -> Outcome | None:
        outcome = self._precheck(target)
        if outcome is not None:
            return outcome
        try:
            return await self._engine.scan(target, source)
        except Exception as exc:
            return self._failed(target, exc)

    def _precheck(self, target: Target) -> Outcome | None:
        """The outcome of a target decided without the engine, or None to scan it."""
        engine = self._engine
        if target.error is not None:
            return Outcome(Status.ERROR, error=target.error)
        if self._halt is not None:
            return Outcome(Status.SKIPPED, error=self._halt)
        if target.kind not in engine.accepts:
            return Outcome(
                Status.SKIPPED,
                error=ErrorInfo(
                    f"engine {engine.name} does not scan {target.kind} targets", "unsupported_kind"
                ),
            )
        if engine.max_size is not None and target.size is not None and target.size > engine.max_size:
            return _too_large(engine, target.size)
        return None

    def _failed(self, target: Target, exc: Exception) -> Outcome | None:
        """The line for a target whose scan raised; None when the error halts the run."""
        if isinstance(exc, QuotaExhausted):
            if self._halt is None:
                log.error("%s: remaining targets are skipped", exc)
                self._halt = error_info(exc)
            return Outcome(Status.SKIPPED, error=self._halt)
        if isinstance(exc, ScannerError):
            if not exc.halts_run:
                return Outcome(Status.ERROR, error=error_info(exc), attempts=exc.attempts)
            self._halt_now(exc)
            return None
        # A bug in one adapter must cost one line, not the run; the traceback goes to the log.
        log.error("internal error scanning %s", target.target, exc_info=exc)
        return Outcome(Status.ERROR, error=error_info(exc, code="internal"))

    async def _write(self, recv: MemoryObjectReceiveStream[list[Verdict]]) -> None:
        async with recv:
            batch: list[Verdict] = []
            async for first in recv:
                batch.extend(first)
                while len(batch) < _WRITE_BATCH:
                    try:
                        batch.extend(recv.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                try:
                    await self._sink.write(batch)
                except ScannerError as exc:
                    self._halt_now(exc)
                    return
                self._written += len(batch)
                for v in batch:
                    self._by_status[v.status] += 1
                    if v.error is not None and v.status is not Status.CLEAN:
                        self._errors[v.error.code] += 1
                if self._on_written is not None:
                    await self._on_written(batch)
                batch = []


async def _take(recv: MemoryObjectReceiveStream[_T], most: int) -> list[_T] | None:
    """The next item (waiting for it) and whatever else is ready, up to ``most``; None at the end."""
    try:
        items = [recv.receive_nowait()]
    except anyio.WouldBlock:
        try:
            items = [await recv.receive()]
        except anyio.EndOfStream:
            return None
    except anyio.EndOfStream:
        return None
    while len(items) < most:
        try:
            items.append(recv.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
    return items


async def _hand_over(send: MemoryObjectSendStream[list[Verdict]], verdicts: list[Verdict]) -> bool:
    """Pass finished lines to the writer; False when the writer has gone."""
    try:
        try:
            send.send_nowait(verdicts)
        except anyio.WouldBlock:
            await send.send(verdicts)
    except anyio.BrokenResourceError:
        # The writer has gone (a dead sink halted the run). A job that finished before the
        # cancellation reached it has nowhere to put its line.
        return False
    return True


def _too_large(engine: Engine, size: int) -> Outcome:
    return Outcome(
        Status.UNSCANNABLE,
        error=ErrorInfo(
            f"{size} bytes is over engine {engine.name}'s limit of {engine.max_size} bytes", "too_large"
        ),
    )
