"""The source seam: a lazy stream of targets, and a way to open one target's bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import NamedTuple, Protocol, runtime_checkable

from ..model import Kind, Target

__all__ = ("BatchSource", "Body", "LocalPath", "Source")


class LocalPath(NamedTuple):
    """Where a target's bytes sit on the local disk, and whether a symlink there may be followed."""

    path: str
    follow_symlinks: bool


@runtime_checkable
class Body(Protocol):
    """The bytes of one target, opened for reading once.

    ``path`` is set when the bytes already sit in a local regular file, so an engine may scan by path
    (memory-mapped, fd passing) instead of streaming. ``size`` is the size the source promises; a
    body that delivers more or fewer bytes raises :class:`~scanner.errors.TargetError` at the end of
    :meth:`chunks` rather than passing truncated content off as whole.
    """

    @property
    def size(self) -> int | None: ...

    @property
    def path(self) -> str | None: ...

    def chunks(self, chunk_size: int = ..., /) -> AsyncIterator[bytes]:
        """Yield the content in order; raises TargetError if it cannot be read to the end."""
        ...


@runtime_checkable
class Source(Protocol):
    """Where targets come from.

    ``targets()`` is lazy and paginated: it never materialises a listing, and the pipeline pulls from it
    only as fast as jobs finish. A failure that concerns one entry is yielded as a target carrying
    ``error``; a failure that makes listing impossible (missing bucket, missing directory) raises
    :class:`~scanner.errors.SourceError`.
    """

    #: the kinds of target this source yields; checked against the engine before the run starts
    kinds: frozenset[Kind]

    def targets(self) -> AsyncIterator[Target]: ...

    # A source may also offer ``batches() -> AsyncIterator[list[Target]]``: the same targets, in
    # lists of what it has at hand. The pipeline prefers it (one await per list, not per target);
    # see :class:`BatchSource`.

    def open(self, target: Target, /) -> AbstractAsyncContextManager[Body]:
        """Open one target's content; raises TargetError (vanished, unreadable, not a regular file)."""
        ...

    def local_path(self, target: Target, /) -> LocalPath | None:
        """The target's local file, when its bytes already sit on this machine, else None.

        Lets an engine read the file itself (in a worker process, by fd passing) instead of streaming
        it; the engine must then apply the same checks as :meth:`open` (regular file, no fifo).
        """
        ...

    async def aclose(self) -> None:
        """Release clients and threads; idempotent."""
        ...


@runtime_checkable
class BatchSource(Source, Protocol):
    """A source that can also hand its targets over in lists (the local walk: a thread hop's worth)."""

    def batches(self) -> AsyncIterator[list[Target]]: ...
