"""The engine seam.

An engine turns one target into an :class:`~scanner.model.Outcome`. Whether the vendor answers at
once (Cloud Storage Security), after polling (MetaDefender, VAddy, Virusdie) or by callback (bucketAV)
stays inside :meth:`Engine.scan`: the pipeline only awaits it. Rate tokens and connections are taken
per request inside the engine, never for the whole job, so a job sleeping between polls holds neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from ..model import Kind, Outcome, Target
from ..sources._base import Source

__all__ = ("Engine",)


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
