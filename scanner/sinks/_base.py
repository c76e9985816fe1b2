"""The sink seam: where verdict lines go. One writer task calls it; it need not be task-safe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..model import Verdict

__all__ = ("Sink",)


@runtime_checkable
class Sink(Protocol):
    #: True when each line :meth:`write` hands over is kept where the report lives (a file, a pipe),
    #: so a line counts as done once written; False when the report exists only once
    #: :meth:`aclose` completes it (an S3 object), so nothing counts as done before
    durable_lines: bool

    @property
    def name(self) -> str:
        """Where the lines go, for messages (``stdout``, a path, an S3 URI)."""
        ...

    async def write(self, verdicts: Sequence[Verdict], /) -> None:
        """Append whole lines, in order. When it returns, the lines are handed to the OS (or the
        upload buffer); a crash afterwards cannot tear them. Raises :class:`~scanner.errors.SinkError`."""
        ...

    async def aclose(self) -> None:
        """Flush and finish (complete an upload). Called once, shielded from cancellation."""
        ...

    async def abort(self) -> None:
        """Give up without pretending the output is complete (abort a multipart upload)."""
        ...
