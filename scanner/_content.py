"""Bodies: the bytes of a target, streamed in chunks, hashed on the way."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from ._versions import file_version
from .errors import TargetError

__all__ = ("CHUNK", "Hashing", "LocalBody", "open_local", "open_regular_fd")

#: read size for streamed bodies: >= 1 MiB keeps uploads and hashing near their ceilings
CHUNK = 1 << 20


class Hashing:
    """Wraps a chunk iterator; computes sha256 and counts bytes as the chunks pass (no second pass).

    ``expected`` is the size the source promised: a mismatch at the end raises TargetError, so a
    truncated read is never scanned as if whole.
    """

    __slots__ = ("_chunks", "_h", "expected", "size")

    def __init__(self, chunks: AsyncIterator[bytes], expected: int | None = None) -> None:
        self._chunks = chunks
        self._h = hashlib.sha256()
        self.size = 0
        self.expected = expected

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            self._h.update(chunk)
            self.size += len(chunk)
            if self.expected is not None and self.size > self.expected:
                raise TargetError(f"body larger than promised ({self.expected} bytes)", code="size_mismatch")
            yield chunk
        if self.expected is not None and self.size != self.expected:
            raise TargetError(
                f"body shorter than promised ({self.size} of {self.expected} bytes)",
                code="size_mismatch",
            )

    @property
    def sha256(self) -> str:
        return self._h.hexdigest()


def open_regular_fd(
    path: str, *, follow_symlinks: bool = False, dir_fd: int | None = None
) -> tuple[int, os.stat_result]:
    """Open a regular file for reading without ever blocking on a fifo or following a swapped-in link.

    ``O_NONBLOCK`` makes opening a fifo return at once; ``fstat`` then refuses anything but a regular
    file. Raises TargetError with a stable code. Blocking: call it from a worker thread. With
    ``dir_fd``, ``path`` is a name in that directory.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise TargetError("file vanished before it could be read", code="vanished") from None
    except PermissionError:
        raise TargetError("permission denied", code="unreadable") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TargetError("is a symbolic link (not followed)", code="not_regular") from None
        raise TargetError(f"cannot open: {exc.strerror}", code="unreadable") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise TargetError("not a regular file", code="not_regular")
    return fd, st


@dataclass(slots=True)
class LocalBody:
    """A local regular file, already open; ``path`` lets engines scan it by path. ``size`` and
    ``version`` are from the ``fstat`` of ``fd``: the content version of the file as opened."""

    fd: int
    path: str
    size: int
    version: str | None = None

    async def chunks(self, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        read = 0
        while True:
            chunk = await anyio.to_thread.run_sync(_read, self.fd, chunk_size)
            if not chunk:
                break
            read += len(chunk)
            yield chunk
        if read != self.size:
            raise TargetError(
                f"file changed while read ({read} bytes read, {self.size} expected)", code="changed"
            )


def _read(fd: int, n: int) -> bytes:
    try:
        return os.read(fd, n)
    except OSError as exc:
        raise TargetError(f"read failed: {exc.strerror}", code="unreadable") from None


@asynccontextmanager
async def open_local(path: str, *, follow_symlinks: bool = False) -> AsyncIterator[LocalBody]:
    fd, st = await anyio.to_thread.run_sync(lambda: open_regular_fd(path, follow_symlinks=follow_symlinks))
    try:
        yield LocalBody(fd, path, st.st_size, file_version(st))
    finally:
        os.close(fd)
