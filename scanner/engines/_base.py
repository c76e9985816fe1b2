"""The engine seam.

An engine turns one target into an :class:`~scanner.model.Outcome`. Whether the vendor answers at
once (Cloud Storage Security), after polling (MetaDefender, VAddy, Virusdie) or by callback (bucketAV)
stays inside :meth:`Engine.scan`: the pipeline only awaits it. Rate tokens and connections are taken
per request inside the engine, never for the whole job, so a job sleeping between polls holds neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from ..model import Kind, Outcome, Target
from ..sources._base import Source

__all__ = ("BatchEngine", "Engine")


@runtime_checkable
class Engine(Protocol):
    """A scanning engine, used as an async context manager around the whole run.

    ``__aenter__`` opens sessions, process pools or callback listeners and should check credentials,
    so a bad key fails the run before the first target (raising :class:`~scanner.errors.AuthError`).

    :meth:`scan` returns an Outcome for every target it is given. It raises a per-target
    :class:`~scanner.errors.ScannerError` (the pipeline writes an ``error`` line), or one whose
    ``halts_run`` is true (bad credentials, quota spent). Cancellation abandons the target; an
    engine that can cancel vendor-side work does so in a shielded, time-bounded cleanup.
    """

    #: the name written to every verdict line
    name: str
    #: target kinds this engine can scan; others get a ``skipped`` line
    accepts: frozenset[Kind]
    #: largest body it will take, in bytes; larger targets get ``unscannable`` without a request
    max_size: int | None
    #: a sensible number of jobs in flight when the user does not say (``--jobs``)
    default_jobs: int

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def scan(self, target: Target, source: Source, /) -> Outcome: ...

    def statistics(self) -> Mapping[str, Any]:
        """A snapshot of live state (connections, rate budget, queue) for progress and benchmarks."""
        ...


@runtime_checkable
class BatchEngine(Engine, Protocol):
    """An engine that also takes many targets in one call: the pipeline's batch lane.

    For engines whose cost per target is mostly overhead around a fast scan (the embedded YARA engine
    on small files), one call per batch replaces one coroutine per target. The pipeline then hands
    over up to ``batch_size`` targets at once, as many as are waiting, never waiting for a batch to
    fill. Each target still gets its own result: an Outcome, or the per-target exception
    :meth:`Engine.scan` would have raised, in the same place. An exception raised by the call itself
    counts for every target of the batch.
    """

    #: most targets per :meth:`scan_batch` call
    batch_size: int

    async def scan_batch(self, items: Sequence[tuple[Target, Source]], /) -> list[Outcome | Exception]: ...
