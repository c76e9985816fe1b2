"""Public in-memory fakes for tests, benchmarks and anyone building on scanner.

* :class:`MemorySource` yields targets from a list or a count, lazily, and serves bodies from memory;
  it records how far it has been pulled (for backpressure tests).
* :class:`ScriptedEngine` answers from a function, optionally after a delay, and counts calls.
* :class:`MemorySink` keeps verdicts (or only counts them).
* :func:`eicar` builds the EICAR test string at run time, so no file in a checkout holds it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, Self

import anyio

from .model import Kind, Outcome, Status, Target, Verdict
from .sources._base import Body, LocalPath

__all__ = ("BatchScriptedEngine", "MemoryBody", "MemorySink", "MemorySource", "ScriptedEngine", "eicar")


def eicar() -> bytes:
    """The 68-byte EICAR anti-malware test string, assembled so it never sits whole in a source file."""
    return b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-" + b"ANTIVIRUS-TEST-FILE!$H+H*"


class MemoryBody:
    def __init__(self, data: bytes) -> None:
        self._data = data

    @property
    def size(self) -> int:
        return len(self._data)

    @property
    def path(self) -> None:
        return None

    async def chunks(self, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        for i in range(0, len(self._data), chunk_size):
            yield self._data[i : i + chunk_size]


class MemorySource:
    """Targets ``mem://0 .. mem://count-1`` (or the given targets), with optional bodies."""

    def __init__(
        self,
        targets: Iterable[Target] | None = None,
        *,
        count: int = 0,
        kind: Kind = Kind.FILE,
        bodies: Mapping[str, bytes] | None = None,
    ) -> None:
        self._targets = targets
        self._count = count
        self._kind = kind
        self.kinds = frozenset({kind}) if targets is None else frozenset(Kind)
        self._bodies = dict(bodies or {})
        self.pulled = 0

    async def targets(self) -> AsyncIterator[Target]:
        if self._targets is not None:
            for t in self._targets:
                self.pulled += 1
                yield t
            return
        kind = self._kind
        for i in range(self._count):
            self.pulled += 1
            yield Target(kind, f"mem://{i}")

    def open(self, target: Target, /) -> AbstractAsyncContextManager[Body]:
        @asynccontextmanager
        async def opened() -> AsyncIterator[Body]:
            yield MemoryBody(self._bodies.get(target.target, b""))

        return opened()

    def local_path(self, target: Target, /) -> LocalPath | None:
        return None

    async def aclose(self) -> None:
        return None


Script = Callable[[Target], Outcome | Awaitable[Outcome]]


def _clean(_: Target) -> Outcome:
    return Outcome(Status.CLEAN)


class ScriptedEngine:
    """An engine whose answers come from ``script`` (sync or async); ``delay`` seconds per scan."""

    def __init__(
        self,
        script: Script = _clean,
        *,
        name: str = "scripted",
        accepts: frozenset[Kind] = frozenset(Kind),
        max_size: int | None = None,
        delay: float = 0.0,
        default_jobs: int = 16,
    ) -> None:
        self._script = script
        self.name = name
        self.accepts = accepts
        self.max_size = max_size
        self.default_jobs = default_jobs
        self._delay = delay
        self.calls = 0
        self.in_flight = 0
        self.peak_in_flight = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def scan(self, target: Target, source: Any, /) -> Outcome:
        self.calls += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self._delay:
                await anyio.sleep(self._delay)
            result = self._script(target)
            if isinstance(result, Outcome):
                return result
            return await result
        finally:
            self.in_flight -= 1

    def statistics(self) -> Mapping[str, Any]:
        return {"calls": self.calls, "in_flight": self.in_flight}


class BatchScriptedEngine(ScriptedEngine):
    """A :class:`ScriptedEngine` with the batch lane: ``scan_batch`` runs the script on each target.

    ``batches`` records the size of every call; ``fail_batch`` makes a call raise as a whole.
    """

    def __init__(self, script: Script = _clean, *, batch_size: int = 8, **kwargs: Any) -> None:
        super().__init__(script, **kwargs)
        self.batch_size = batch_size
        self.batches: list[int] = []
        self.fail_batch: Exception | None = None

    async def scan_batch(self, items: Sequence[tuple[Target, Any]], /) -> list[Outcome | Exception]:
        self.batches.append(len(items))
        if self.fail_batch is not None:
            raise self.fail_batch
        out: list[Outcome | Exception] = []
        for target, source in items:
            try:
                out.append(await self.scan(target, source))
            except Exception as exc:
                out.append(exc)
        return out


class MemorySink:
    """Keeps verdicts in order (``keep=False`` only counts them, for benchmarks)."""

    name = "memory"
    durable_lines = True

    def __init__(self, *, keep: bool = True, delay: float = 0.0) -> None:
        self.verdicts: list[Verdict] = []
        self.count = 0
        self._keep = keep
        self._delay = delay
        self.closed = False

    async def write(self, verdicts: Sequence[Verdict], /) -> None:
        if self._delay:
            await anyio.sleep(self._delay)
        self.count += len(verdicts)
        if self._keep:
            self.verdicts.extend(verdicts)

    async def aclose(self) -> None:
        self.closed = True

    async def abort(self) -> None:
        self.closed = True
